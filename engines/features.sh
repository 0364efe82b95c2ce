# The feature matrix shared by podman and docker (sourced by engines/run.sh).
# Each feature is a function f_<name>; it runs with:
#   R ...   = "<engine> run" with the runtime under test selected,
#   C ...   = the engine's CLI with the runtime under test selected,
#   $IMG    = the local busybox image, $W = a scratch dir for this cell, $ENGINE = podman|docker.
# A feature passes when its function returns 0.

FEATURES="run_rm_exit interactive tty it detach_ps_logs_stop kill_wait exec exec_tty exec_user
pause_unpause top stats update_memory oom_137 pids_limit cpus cpuset user group_add read_only
cap_drop_all cap_add privileged seccomp_default seccomp_unconfined seccomp_custom no_new_privs
hostname env workdir bind bind_ro volume tmpfs pid_host ipc_host uts_host uidmap init device
shm_size sysctl net_none net_bridge net_host restart cp"

# under a pseudo-terminal: script(1) gives the engine a tty on stdin/stdout.
pty() { script -qfec "$*" /dev/null; }
has() { grep -q -- "$1"; }
long() { R -d "$@" "$IMG" sh -c 'trap "exit 7" TERM; echo started; while :; do sleep 0.1; done'; }
rmf() { if [ "$ENGINE" = podman ]; then C rm -f -t 0 "$@"; else C rm -f "$@"; fi >/dev/null 2>&1 || true; }
# the engine's view of a container's exit code
exitcode() { C inspect -f '{{.State.ExitCode}}' "$1"; }

f_run_rm_exit() { [ "$(R --rm "$IMG" sh -c 'echo out; exit 3')" = out ] || return 1; R --rm "$IMG" sh -c 'exit 3'; [ $? = 3 ]; }
f_interactive() { [ "$(echo hello | R --rm -i "$IMG" cat)" = hello ]; }
f_tty() { pty "$CS run $RUNOPT --rm -t $IMG sh -c 'tty; stty size'" | has /dev/pts/; }
f_it() { (sleep 2; echo 'echo out-$((6*7))'; sleep 1; echo 'exit 5') | pty "$CS run $RUNOPT --rm -it $IMG sh" | has out-42; }
f_detach_ps_logs_stop() {
  local id; id=$(long) || return 1
  C ps | has "${id:0:12}" || { rmf "$id"; return 1; }
  sleep 0.5; C logs "$id" | has started || { rmf "$id"; return 1; }
  C stop -t 10 "$id" >/dev/null || { rmf "$id"; return 1; }
  local code; code=$(exitcode "$id"); rmf "$id"; [ "$code" = 7 ]
}
f_kill_wait() {
  local id; id=$(R -d "$IMG" sleep 1000) || return 1
  C kill "$id" >/dev/null || { rmf "$id"; return 1; }
  local code; code=$(C wait "$id"); rmf "$id"; [ "$code" = 137 ]
}
f_exec() {
  local id ok=0; id=$(R -d "$IMG" sleep 1000) || return 1
  [ "$(C exec "$id" echo hi)" = hi ] || ok=1
  C exec "$id" sh -c 'exit 4'; [ $? = 4 ] || ok=1
  [ "$(echo piped | C exec -i "$id" cat)" = piped ] || ok=1
  rmf "$id"; return $ok
}
f_exec_tty() {
  local id ok=0; id=$(R -d "$IMG" sleep 1000) || return 1
  pty "$CS exec -t $id tty" | has /dev/pts/ || ok=1
  rmf "$id"; return $ok
}
f_exec_user() {
  local id ok=0; id=$(R -d "$IMG" sleep 1000) || return 1
  [ "$(C exec --user 1000 "$id" id -u)" = 1000 ] || ok=1
  rmf "$id"; return $ok
}
f_pause_unpause() {
  local id ok=0; id=$(R -d "$IMG" sleep 1000) || return 1
  C pause "$id" >/dev/null || ok=1
  [ "$(C inspect -f '{{.State.Status}}' "$id")" = paused ] || ok=1
  C unpause "$id" >/dev/null || ok=1
  [ "$(C exec "$id" echo alive)" = alive ] || ok=1
  rmf "$id"; return $ok
}
f_top() { local id ok=0; id=$(R -d "$IMG" sleep 1000) || return 1; C top "$id" | has sleep || ok=1; rmf "$id"; return $ok; }
f_stats() {
  local id ok=0; id=$(R -d "$IMG" sleep 1000) || return 1
  C stats --no-stream "$id" | has "${id:0:12}" || ok=1; rmf "$id"; return $ok
}
f_update_memory() {
  local id ok=0; id=$(R -d --memory 256m "$IMG" sleep 1000) || return 1
  C update --memory 128m "$id" >/dev/null || ok=1
  C exec "$id" sh -c 'cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null || cat /sys/fs/cgroup/memory.max' | has '^134217728$' || ok=1
  rmf "$id"; return $ok
}
f_oom_137() { R --rm --memory 64m --memory-swap 64m "$IMG" sh -c 'tail /dev/zero'; [ $? = 137 ]; }
f_pids_limit() {
  # the value in the container's own cgroup, then the limit at work
  R --rm --pids-limit 10 "$IMG" sh -c 'cat /sys/fs/cgroup/pids/pids.max 2>/dev/null || cat /sys/fs/cgroup/pids.max' | has '^10$' || return 1
  R --rm --pids-limit 10 "$IMG" sh -c 'for i in $(seq 20); do sleep 2 & done 2>&1; wait' 2>&1 | grep -qi "fork\|resource"
}
f_cpus() { R --rm --cpus 0.5 "$IMG" sh -c 'cat /sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us 2>/dev/null || cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us 2>/dev/null || cut -d" " -f1 /sys/fs/cgroup/cpu.max' | has '^50000$'; }
f_cpuset() { R --rm --cpuset-cpus 0 "$IMG" grep Cpus_allowed_list /proc/self/status | has '[[:space:]]0$'; }
f_user() { [ "$(R --rm --user 1000 "$IMG" sh -c 'echo $(id -u):$(id -g)')" = 1000:1000 ]; }
f_group_add() { R --rm --group-add 1234 "$IMG" id -G | has '\b1234\b'; }
f_read_only() { [ "$(R --rm --read-only "$IMG" sh -c 'touch /foo 2>/dev/null && echo writable; echo done')" = done ]; }
f_cap_drop_all() { R --rm --cap-drop ALL "$IMG" grep CapEff /proc/self/status | has '0000000000000000'; }
f_cap_add() { R --rm --cap-drop ALL --cap-add NET_ADMIN "$IMG" grep CapEff /proc/self/status | has '0000000000001000'; }
f_privileged() {
  R --rm --privileged "$IMG" sh -c 'mkdir -p /mnt/t && mount -t tmpfs none /mnt/t && test -e /dev/kmsg && grep CapEff /proc/self/status' | has CapEff
}
f_seccomp_default() { R --rm "$IMG" grep Seccomp: /proc/self/status | has '[[:space:]]2$'; }
f_seccomp_unconfined() { R --rm --security-opt seccomp=unconfined "$IMG" grep Seccomp: /proc/self/status | has '[[:space:]]0$'; }
f_seccomp_custom() {
  cat > "$W/seccomp.json" <<'J'
{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["mkdir","mkdirat"],"action":"SCMP_ACT_ERRNO","errnoRet":1}]}
J
  R --rm --security-opt seccomp="$W/seccomp.json" "$IMG" sh -c 'mkdir /x 2>&1; echo ok' | has 'not permitted'
}
f_no_new_privs() { R --rm --security-opt no-new-privileges "$IMG" grep NoNewPrivs /proc/self/status | has '[[:space:]]1$'; }
f_hostname() { [ "$(R --rm --hostname berthbox "$IMG" hostname)" = berthbox ]; }
f_env() { [ "$(R --rm -e FOO=bar "$IMG" sh -c 'echo $FOO')" = bar ]; }
f_workdir() { [ "$(R --rm -w /tmp "$IMG" pwd)" = /tmp ]; }
f_bind() {
  mkdir -p "$W/b"; echo inside > "$W/b/f"
  [ "$(R --rm -v "$W/b:/data" "$IMG" sh -c 'cat /data/f; echo w > /data/g')" = inside ] && [ -f "$W/b/g" ]
}
f_bind_ro() {
  mkdir -p "$W/b"; echo inside > "$W/b/f"
  [ "$(R --rm -v "$W/b:/data:ro" "$IMG" sh -c 'cat /data/f; touch /data/g 2>/dev/null && echo writable')" = inside ]
}
f_volume() {
  local v=vol$RANDOM; C volume create "$v" >/dev/null || return 1
  R --rm -v "$v:/v" "$IMG" sh -c 'echo kept > /v/f' || { C volume rm "$v" >/dev/null; return 1; }
  local out; out=$(R --rm -v "$v:/v" "$IMG" cat /v/f); C volume rm "$v" >/dev/null; [ "$out" = kept ]
}
f_tmpfs() { R --rm --tmpfs /scratch "$IMG" grep ' /scratch ' /proc/mounts | has tmpfs; }
f_pid_host() { [ "$(R --rm --pid host "$IMG" cat /proc/1/comm)" = "$(cat /proc/1/comm)" ]; }
f_ipc_host() { [ "$(R --rm --ipc host "$IMG" readlink /proc/self/ns/ipc)" = "$(readlink /proc/self/ns/ipc)" ]; }
f_uts_host() { [ "$(R --rm --uts host "$IMG" hostname)" = "$(hostname)" ]; }
f_uidmap() {
  if [ "$ENGINE" = docker ]; then return 2; fi
  R --rm --uidmap 0:100000:65536 --gidmap 0:100000:65536 "$IMG" cat /proc/self/uid_map | has '^ *0 *100000 *65536$'
}
f_init() { R --rm --init "$IMG" sh -c 'echo $$; cat /proc/1/comm' | head -1 | grep -vqx 1; }
f_device() { [ "$(R --rm --device /dev/zero:/dev/myzero "$IMG" sh -c 'head -c 4 /dev/myzero | wc -c')" = 4 ]; }
f_shm_size() { R --rm --shm-size 32m "$IMG" grep ' /dev/shm ' /proc/mounts | has 'size=32768k'; }
f_sysctl() { [ "$(R --rm --sysctl kernel.msgmax=12345 "$IMG" cat /proc/sys/kernel/msgmax)" = 12345 ]; }
f_net_none() { [ "$(R --rm --network none "$IMG" ls /sys/class/net)" = lo ]; }
f_net_bridge() { R --rm "$IMG" ip -4 addr show eth0 | has 'inet '; }
f_net_host() { [ "$(R --rm --network host "$IMG" ls /sys/class/net | sort)" = "$(ls /sys/class/net | sort)" ]; }
f_restart() {
  local id n=0 i; id=$(R -d --restart on-failure:2 "$IMG" sh -c 'sleep 0.3; exit 1') || return 1
  for i in $(seq 60); do
    n=$(C inspect -f '{{.RestartCount}}' "$id" 2>/dev/null); [ "$n" = 2 ] && [ "$(C inspect -f '{{.State.Running}}' "$id")" = false ] && break; sleep 0.5
  done
  rmf "$id"; [ "$n" = 2 ]
}
f_cp() {
  local id ok=0; id=$(R -d "$IMG" sleep 1000) || return 1
  echo copied > "$W/in"
  C cp "$W/in" "$id:/tmp/in" || ok=1
  [ "$(C exec "$id" cat /tmp/in)" = copied ] || ok=1
  C cp "$id:/etc/passwd" "$W/out" && grep -q '^user:x:1000' "$W/out" || ok=1
  rmf "$id"; return $ok
}
