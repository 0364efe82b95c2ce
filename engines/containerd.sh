# containerd: its own root, state dir and socket under $T/containerd (the runc shim still puts its
# sockets in /run/containerd/s, and removes them when it exits). Driven with ctr --runc-binary.

# The part of a private containerd's config.toml that keeps everything under directory $1;
# $2: more top-level keys. engines/cri.sh appends its CRI plugin tables.
containerd_base_config() {
  cat <<C
version = 2
root = "$1/root"
state = "$1/state"
$2
[grpc]
  address = "$1/sock"
[ttrpc]
  address = "$1/sock.ttrpc"
[debug]
  address = "$1/debug.sock"
[metrics]
  address = ""
C
}

engine_containerd() {
  local D=$T/containerd
  mkdir -p "$D"
  if [ -n "${DEFAULTS:-}" ]; then
    # The host's containerd with its own configuration.
    systemctl start containerd || return 1
    CTR="ctr -n berth-engines"
    CLEANUPS+=("$CTR t ls -q | xargs -r -n1 $CTR t kill -s SIGKILL; sleep 1; $CTR c ls -q | xargs -r -n1 $CTR t rm -f; $CTR c ls -q | xargs -r $CTR c rm; $CTR image ls -q | xargs -r $CTR image rm")
  else
    containerd_base_config "$D" 'disabled_plugins = ["io.containerd.grpc.v1.cri"]' > "$D/config.toml"
    containerd --config "$D/config.toml" > "$D/log" 2>&1 &
    local pid=$!
    CLEANUPS+=("ctr -a $D/sock -n berth-engines t ls -q | xargs -r -n1 ctr -a $D/sock -n berth-engines t kill -s SIGKILL; sleep 1; ctr -a $D/sock -n berth-engines c ls -q | xargs -r -n1 ctr -a $D/sock -n berth-engines t rm -f; ctr -a $D/sock -n berth-engines c ls -q | xargs -r ctr -a $D/sock -n berth-engines c rm; kill $pid; wait $pid")
    local i; for i in $(seq 50); do [ -S "$D/sock" ] && break; sleep 0.2; done
    CTR="ctr -a $D/sock -n berth-engines"
  fi
  ensure_image_tar || return 1
  $CTR image import --base-name localhost/bb "$T/image.tar" >/dev/null || return 1
  $CTR image ls -q | grep -q . || return 1
  export CTR
  for f in ${ONLY_CTR:-ctr_run_exit ctr_tty ctr_env ctr_mount_ro ctr_exec ctr_exec_tty ctr_kill ctr_tasks_ps ctr_pause_resume ctr_memory_limit}; do
    for rt in runc berth; do
      local bin=$RUNC; [ $rt = berth ] && bin=$BERTH
      CS="$CTR"; RUNOPT="--runc-binary $bin --runc-root $D/$rt-root"
      cell containerd "$rt" "$f"
    done
  done
}
# ctr flavours of R: "R ID args..." runs IMG as container ID with the runtime under test.
f_ctr_run_exit() { $CS run --rm $RUNOPT "$IMG" c$RANDOM sh -c 'echo out; exit 3' > out; [ $? = 3 ] && [ "$(cat out)" = out ]; }
f_ctr_tty() { pty "$CS run --rm -t $RUNOPT $IMG c$RANDOM sh -c 'tty'" | has /dev/pts/; }
f_ctr_env() { [ "$($CS run --rm $RUNOPT --env FOO=bar "$IMG" c$RANDOM sh -c 'echo $FOO')" = bar ]; }
f_ctr_mount_ro() {
  mkdir -p "$W/b"; echo inside > "$W/b/f"
  [ "$($CS run --rm $RUNOPT --mount "type=bind,src=$W/b,dst=/data,options=rbind:ro" "$IMG" c$RANDOM sh -c 'cat /data/f; touch /data/g 2>/dev/null && echo writable')" = inside ]
}
ctr_bg() { $CS run -d $RUNOPT "$IMG" "$1" sleep 1000 > /dev/null; }
ctr_rm() { $CS task kill -s SIGKILL "$1" >/dev/null 2>&1; sleep 0.3; $CS task rm -f "$1" >/dev/null 2>&1; $CS container rm "$1" >/dev/null 2>&1; true; }
f_ctr_exec() {
  local id=c$RANDOM ok=0; ctr_bg $id || return 1
  [ "$($CS task exec --exec-id e1 $id echo hi)" = hi ] || ok=1
  $CS task exec --exec-id e2 $id sh -c 'exit 4'; [ $? = 4 ] || ok=1
  ctr_rm $id; return $ok
}
f_ctr_exec_tty() { local id=c$RANDOM ok=0; ctr_bg $id || return 1; pty "$CS task exec -t --exec-id e1 $id tty" | has /dev/pts/ || ok=1; ctr_rm $id; return $ok; }
f_ctr_kill() {
  local id=c$RANDOM ok=1 i; ctr_bg $id || return 1
  $CS task kill -s SIGKILL $id || { ctr_rm $id; return 1; }
  for i in $(seq 50); do $CS task ls | grep -q "^$id .*STOPPED" && { ok=0; break; }; sleep 0.2; done
  ctr_rm $id; return $ok
}
f_ctr_tasks_ps() { local id=c$RANDOM ok=0; ctr_bg $id || return 1; [ "$($CS task ps $id | tail -n +2 | wc -l)" = 1 ] || ok=1; ctr_rm $id; return $ok; }
f_ctr_pause_resume() {
  local id=c$RANDOM ok=0; ctr_bg $id || return 1
  $CS task pause $id && $CS task ls | grep -q "^$id .*PAUSED" || ok=1
  $CS task resume $id && $CS task ls | grep -q "^$id .*RUNNING" || ok=1
  ctr_rm $id; return $ok
}
f_ctr_memory_limit() {
  local id=c$RANDOM ok=0; $CS run -d $RUNOPT --memory-limit 67108864 "$IMG" $id sleep 1000 >/dev/null || return 1
  # the task's cgroup as the host sees it (inside, a cgroup namespace may show "/")
  local pid cg; pid=$($CS task ls | awk -v id=$id '$1==id{print $2}')
  cg=$(grep ':memory:' /proc/$pid/cgroup | cut -d: -f3)
  if [ -n "$cg" ]; then cg=/sys/fs/cgroup/memory$cg/memory.limit_in_bytes; else cg=/sys/fs/cgroup$(grep '^0::' /proc/$pid/cgroup | cut -d: -f3)/memory.max; fi
  [ "$(cat "$cg")" = 67108864 ] || ok=1
  ctr_rm $id; return $ok
}
