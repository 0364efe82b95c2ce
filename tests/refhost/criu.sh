#!/bin/bash
# Checkpoint/restore on the reference host (issue 18): `scripts/refhost.sh run tests/refhost/criu.sh`.
# Every case runs against Berth ($BERTH) and runc (the host's, Debian's 1.1.5), the same way:
#   PASS <case>/<runtime>            it works
#   FAIL <case>/<runtime>: <reason>  it does not (exit status 1 when Berth fails a case)
# and a last line `MATRIX <case> berth=PASS|FAIL runc=PASS|FAIL` per case. A case in CRIU_KNOWN
# (default: none) also prints KNOWN-FAIL when Berth fails it, without failing the script.
# CRIU_CASES (space separated) picks cases; CRIU_RUNTIMES picks runtimes (default: berth runc).
set -u
BERTH=${BERTH:?BERTH: the berth binary to test}
RUNC=$(command -v runc || echo /usr/sbin/runc)
CASES=${CRIU_CASES:-counter leave-running pre-dump terminal tcp new-id podman podman-export}
# Cases that fail for runc too on this host, for a reason outside the runtime (docs/CHECKPOINT.md):
# Berth's failure there prints KNOWN-FAIL and does not fail the script. None today.
KNOWN=${CRIU_KNOWN:-}
RUNTIMES=${CRIU_RUNTIMES:-berth runc}
step_timeout=120
declare -A result
berth_failed=0

echo "FACT criu: $(criu --version 2>&1 | head -n1), kernel $(uname -r)"
echo "FACT criu-check: $(criu check 2>&1 | tail -n1)"
echo "FACT runc: $($RUNC --version 2>&1 | head -n1)"
echo "FACT berth: $($BERTH --version 2>&1 | head -n1)"

rt_bin() { if [ "$1" = berth ]; then echo "$BERTH"; else echo "$RUNC"; fi; }

work=$(mktemp -d /root/criu.XXXXXX)
# The busybox rootfs every bundle copies.
mkdir -p "$work/base/bin" "$work/base/tmp"
cp /bin/busybox "$work/base/bin/busybox"
for applet in $("$work/base/bin/busybox" --list); do
  [ "$applet" = busybox ] || ln -s busybox "$work/base/bin/$applet"
done

# bundle DIR TERMINAL SCRIPT [NETNS-PATH]: a bundle running `sh -c SCRIPT` with a writable root and
# a cgroup namespace, a masked file (/proc/kcore) and a bind mount (/data).
bundle() {
  local dir=$1 term=$2 script=$3 netns=${4:-}
  mkdir -p "$dir/data"
  cp -a "$work/base" "$dir/rootfs"
  (cd "$dir" && "$BERTH" spec)
  python3 - "$dir/config.json" "$term" "$script" "$netns" "$dir/data" <<'EOF'
import json, sys
path, term, script, netns, data = sys.argv[1:]
c = json.load(open(path))
c["process"]["terminal"] = term == "true"
c["process"]["args"] = ["sh", "-c", script]
c["root"]["readonly"] = False
ns = c["linux"]["namespaces"]
if not any(n["type"] == "cgroup" for n in ns):
    ns.append({"type": "cgroup"})
if netns:
    for n in ns:
        if n["type"] == "network":
            n["path"] = netns
c["mounts"].append({"destination": "/data", "type": "bind", "source": data, "options": ["rbind", "rw"]})
json.dump(c, open(path, "w"), indent=1)
EOF
}

# Each value is written beside and renamed into place: a dump between the truncation and the write
# would leave the file empty.
COUNTER='i=0; while :; do i=$((i+1)); echo $i > /count.new; mv /count.new /count; echo $i > /data/count; sleep 0.2; done'

# wait_for SECONDS COMMAND...: until the command succeeds.
wait_for() {
  local n=$(($1 * 10))
  shift
  while [ $n -gt 0 ]; do
    "$@" 2>/dev/null && return 0
    sleep 0.1
    n=$((n - 1))
  done
  return 1
}
count_at_least() { [ "$(cat "$1" 2>/dev/null || echo 0)" -ge "$2" ] 2>/dev/null; }
status_of() { "$(rt_bin "$1")" state "$2" 2>/dev/null | sed -n 's/.*"status": "\([a-z]*\)".*/\1/p'; }

# start RT ID BUNDLE: a detached container whose stdio are pipes (as an engine gives them).
start() {
  local rt=$1 id=$2 b=$3
  timeout "$step_timeout" "$(rt_bin "$rt")" run -d --bundle "$b" "$id" \
    0< <(exec sleep 900) 1> >(exec cat >>"$b/out") 2>&1
}
# restore RT ID BUNDLE IMAGES [FLAGS...]: restore detached with pipes.
restore() {
  local rt=$1 id=$2 b=$3 img=$4
  shift 4
  timeout "$step_timeout" "$(rt_bin "$rt")" restore -d --bundle "$b" --image-path "$img" \
    --pid-file "$b/restored.pid" "$@" "$id" 0< <(exec sleep 900) 1> >(exec cat >>"$b/out") 2>&1
}
cleanup() { "$(rt_bin "$1")" delete -f "$2" >/dev/null 2>&1; }

# The counter goes on from where it was (its value lives only in the shell's memory).
counted_on() {
  local file=$1 before=$2
  wait_for 30 count_at_least "$file" $((before + 3)) || { echo "counter did not go on after restore ($(cat "$file"))"; return 1; }
  local now
  now=$(cat "$file")
  [ "$now" -lt $((before + 200)) ] || { echo "counter $now: restarted or skipped"; return 1; }
}

case_counter() {
  local rt=$1 b=$work/$1-counter id=cr-counter-$1
  bundle "$b" false "$COUNTER"
  start "$rt" "$id" "$b" || { echo "run failed: $(tail -n3 "$b/out")"; return 1; }
  wait_for 30 count_at_least "$b/rootfs/count" 5 || { echo "counter never reached 5"; return 1; }
  timeout "$step_timeout" "$(rt_bin "$rt")" checkpoint --image-path "$b/img" "$id" || return 1
  local at
  at=$(cat "$b/rootfs/count")
  [ -z "$(status_of "$rt" "$id")" ] || { echo "container still there after checkpoint: $(status_of "$rt" "$id")"; return 1; }
  sleep 1
  [ "$(cat "$b/rootfs/count")" = "$at" ] || { echo "counter moved while checkpointed"; return 1; }
  restore "$rt" "$id" "$b" "$b/img" || { echo "restore failed: $(tail -n5 "$b/out")"; return 1; }
  [ "$(status_of "$rt" "$id")" = running ] || { echo "status after restore: $(status_of "$rt" "$id")"; return 1; }
  local pid
  pid=$("$(rt_bin "$rt")" state "$id" | sed -n 's/.*"pid": \([0-9]*\).*/\1/p')
  [ "$pid" = "$(cat "$b/restored.pid")" ] || { echo "pid file $(cat "$b/restored.pid") != state pid $pid"; return 1; }
  counted_on "$b/rootfs/count" "$at" || return 1
  [ "$(cat "$b/data/count")" -ge "$at" ] || { echo "bind mount /data not written after restore"; return 1; }
  cleanup "$rt" "$id"
  echo "counter $at at checkpoint, $(cat "$b/rootfs/count") after restore; pid $pid"
}

case_leave_running() {
  local rt=$1 b=$work/$1-leave id=cr-leave-$1
  bundle "$b" false "$COUNTER"
  start "$rt" "$id" "$b" || return 1
  wait_for 30 count_at_least "$b/rootfs/count" 3 || return 1
  timeout "$step_timeout" "$(rt_bin "$rt")" checkpoint --leave-running --image-path "$b/img" "$id" || return 1
  [ "$(status_of "$rt" "$id")" = running ] || { echo "status after --leave-running: $(status_of "$rt" "$id")"; return 1; }
  local at
  at=$(cat "$b/rootfs/count")
  wait_for 30 count_at_least "$b/rootfs/count" $((at + 3)) || { echo "container stopped counting"; return 1; }
  [ -s "$b/img/inventory.img" ] || { echo "no images"; return 1; }
  cleanup "$rt" "$id"
  echo "still running, counted on from $at; images: $(ls "$b/img" | wc -l) files"
}

case_pre_dump() {
  local rt=$1 b=$work/$1-pre id=cr-pre-$1
  bundle "$b" false "$COUNTER"
  start "$rt" "$id" "$b" || return 1
  wait_for 30 count_at_least "$b/rootfs/count" 3 || return 1
  mkdir -p "$b/cp"
  timeout "$step_timeout" "$(rt_bin "$rt")" checkpoint --pre-dump --image-path "$b/cp/pre" "$id" || return 1
  [ "$(status_of "$rt" "$id")" = running ] || { echo "status after --pre-dump: $(status_of "$rt" "$id")"; return 1; }
  timeout "$step_timeout" "$(rt_bin "$rt")" checkpoint --parent-path ../pre --image-path "$b/cp/final" "$id" || return 1
  local at
  at=$(cat "$b/rootfs/count")
  [ -L "$b/cp/final/parent" ] || { echo "final dump has no parent link"; return 1; }
  restore "$rt" "$id" "$b" "$b/cp/final" || { echo "restore failed: $(tail -n5 "$b/out")"; return 1; }
  counted_on "$b/rootfs/count" "$at" || return 1
  cleanup "$rt" "$id"
  echo "pre-dump $(du -sk "$b/cp/pre" | cut -f1) KiB, final $(du -sk "$b/cp/final" | cut -f1) KiB"
}

# A console socket: accepts connections, keeps each pty master it gets and logs what it reads.
console_server() {
  python3 - "$1" "$2" <<'EOF' &
import array, os, select, socket, sys
path, log = sys.argv[1:]
srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
srv.bind(path); srv.listen(4)
masters = []
out = open(log, "a", buffering=1)
while True:
    r, _, _ = select.select([srv] + masters, [], [], 600)
    if not r:
        break
    for f in r:
        if f is srv:
            c, _ = srv.accept()
            msg, fds, _, _ = socket.recv_fds(c, 4096, 1)
            masters.append(fds[0])
            out.write("MASTER %d %s\n" % (len(masters), msg.decode()))
            c.close()
        else:
            try:
                data = os.read(f, 4096)
            except OSError:
                data = b""
            if not data:
                masters.remove(f)
                continue
            out.write("DATA %d %s\n" % (masters.index(f) + 1, data.decode(errors="replace").strip().replace("\n", " ")[-40:]))
EOF
}

case_terminal() {
  local rt=$1 b=$work/$1-tty id=cr-tty-$1
  bundle "$b" true 'i=0; while :; do i=$((i+1)); echo $i > /count.new; mv /count.new /count; echo tick-$i; sleep 0.2; done'
  console_server "$b/console.sock" "$b/console.log"
  local srv=$!
  wait_for 20 test -S "$b/console.sock" || return 1
  timeout "$step_timeout" "$(rt_bin "$rt")" run -d --console-socket "$b/console.sock" --bundle "$b" "$id" </dev/null >"$b/out" 2>&1 \
    || { echo "run failed: $(cat "$b/out")"; kill $srv; return 1; }
  wait_for 30 count_at_least "$b/rootfs/count" 3 || { kill $srv; return 1; }
  timeout "$step_timeout" "$(rt_bin "$rt")" checkpoint --image-path "$b/img" "$id" >>"$b/out" 2>&1 \
    || { echo "checkpoint failed: $(tail -n5 "$b/out")"; kill $srv; return 1; }
  local at
  at=$(cat "$b/rootfs/count")
  sleep 1
  [ "$(cat "$b/rootfs/count")" = "$at" ] || { echo "counter moved while checkpointed"; kill $srv; return 1; }
  timeout "$step_timeout" "$(rt_bin "$rt")" --debug --log "$b/rt.log" restore -d --console-socket "$b/console.sock" --bundle "$b" --image-path "$b/img" "$id" </dev/null >>"$b/out" 2>&1 \
    || { echo "restore failed: $(tail -n5 "$b/out")"; kill $srv; return 1; }
  counted_on "$b/rootfs/count" "$at" || { kill $srv; return 1; }
  # The restored process's terminal output reaches the console socket's side: a tick after the
  # checkpoint's count, on the master received at create (CRIU kept the pty) or on a new one
  # (CRIU's orphan-pts-master, sent by the runtime at restore).
  after_tick() { grep -oE '^DATA [0-9]+ .*tick-[0-9]+' "$b/console.log" | sed 's/.*tick-//' | sort -n | tail -n1 | awk -v a="$at" '$1 > a + 2 {ok=1} END {exit !ok}'; }
  wait_for 20 after_tick || {
    grep -v '^DATA 1' "$b/console.log"
    grep -i -E 'notify|pts|tty|console' "$b/rt.log" | tail -n 8
    grep -i -E 'orphan|pts|tty' "$b/img/restore.log" | tail -n 12
    ls -l /proc/"$(cat "$b/rootfs/../restored.pid" 2>/dev/null || "$(rt_bin "$rt")" state "$id" | sed -n 's/.*"pid": \([0-9]*\).*/\1/p')"/fd 2>&1 | tail -n 4
    echo "no output on the restored terminal: $(tail -n3 "$b/console.log")"; kill $srv; return 1; }
  cleanup "$rt" "$id"
  kill $srv 2>/dev/null
  echo "$(grep -c ^MASTER "$b/console.log") master(s) received; count $at at checkpoint; last output: $(grep '^DATA' "$b/console.log" | tail -n1)"
}

# tcp: a TCP server in the container, its network namespace joined by path (as an engine gives
# it), and a client in another namespace on a veth pair keeping an established connection. The
# steps around the runtime are an engine's (podman's): `checkpoint --tcp-established` leaves the
# dumped namespace locked by CRIU (all packets dropped), so the engine removes that namespace
# and makes a new one with the same addresses for `restore --tcp-established`, where CRIU locks it
# again, restores the socket and unlocks it. Restoring into the namespace the dump locked fails
# with CRIU 3.17 and iptables-nft (docs/CHECKPOINT.md, "TCP connections").
tcp_net() { # tcp_net NETNS CLIENT-NETNS: the container's namespace, a veth to the client's
  ip netns add "$1" && ip -n "$1" link set lo up \
    && ip -n "$2" link add crv0 address 02:00:0a:c7:00:01 type veth peer name crv1 address 02:00:0a:c7:00:02 netns "$1" \
    && ip -n "$2" addr add 10.199.0.1/24 dev crv0 && ip -n "$1" addr add 10.199.0.2/24 dev crv1 \
    && ip -n "$2" link set crv0 up && ip -n "$1" link set crv1 up
}
# tcp_locked CLIENT-NETNS: the container's address drops packets (CRIU's lock, iptables or
# nftables alike): a connection to a closed port times out instead of being refused.
tcp_locked() {
  ip netns exec "$1" python3 -c '
import socket, sys
try:
    socket.create_connection(("10.199.0.2", 5556), timeout=2)
except socket.timeout:
    sys.exit(0)
except OSError:
    pass
sys.exit(1)'
}
case_tcp() {
  local rt=$1 b=$work/$1-tcp id=cr-tcp-$1 ns=crtcp-$1 cns=crtcpc-$1 client=
  tcp_down() { [ -z "$client" ] || kill "$client" 2>/dev/null; cleanup "$rt" "$id"; ip netns del "$ns" 2>/dev/null; ip netns del "$cns"; }
  ip netns add "$cns" && ip -n "$cns" link set lo up && tcp_net "$ns" "$cns" || { echo "network setup failed"; tcp_down; return 1; }
  bundle "$b" false 'nc -l -p 5555 > /tcp.out' "/var/run/netns/$ns"
  start "$rt" "$id" "$b" || { echo "run failed: $(tail -n3 "$b/out")"; tcp_down; return 1; }
  ip netns exec "$cns" python3 - "$b" <<'EOF' &
import os, socket, sys, time
b = sys.argv[1]
for _ in range(300):
    try:
        s = socket.create_connection(("10.199.0.2", 5555), timeout=60); break
    except OSError:
        time.sleep(0.1)
s.sendall(b"before\n")
while not os.path.exists(b + "/go"):
    time.sleep(0.1)
s.sendall(b"after\n")
time.sleep(1)
s.close()
open(b + "/client-done", "w").close()
EOF
  client=$!
  wait_for 30 grep -q before "$b/rootfs/tcp.out" || { echo "no connection"; tcp_down; return 1; }
  timeout "$step_timeout" "$(rt_bin "$rt")" checkpoint --tcp-established --image-path "$b/img" "$id" >>"$b/out" 2>&1 \
    || { echo "checkpoint failed: $(tail -n5 "$b/out")"; tcp_down; return 1; }
  [ -z "$(status_of "$rt" "$id")" ] || { echo "container still there after checkpoint"; tcp_down; return 1; }
  tcp_locked "$cns" || { echo "the dumped namespace is not locked"; tcp_down; return 1; }
  # The engine's part: the dumped namespace goes, a new one with the same addresses comes.
  ip netns del "$ns" && tcp_net "$ns" "$cns" || { echo "new network namespace failed"; tcp_down; return 1; }
  restore "$rt" "$id" "$b" "$b/img" --tcp-established || { echo "restore failed: $(tail -n5 "$b/out")"; tcp_down; return 1; }
  ! tcp_locked "$cns" || { echo "namespace still locked after restore"; tcp_down; return 1; }
  touch "$b/go"
  local ok=0 out
  wait_for 30 grep -q after "$b/rootfs/tcp.out" && ok=1
  wait_for 10 test -e "$b/client-done" || ok=0
  out=$(tr '\n' ' ' <"$b/rootfs/tcp.out")
  tcp_down
  [ $ok = 1 ] || { echo "the connection did not survive: tcp.out=$out"; return 1; }
  [ "$out" = "before after " ] || { echo "tcp.out: $out"; return 1; }
  echo "tcp.out: $out(one connection, into a new network namespace)"
}

case_new_id() {
  local rt=$1 b=$work/$1-newid id=cr-old-$1 id2=cr-new-$1
  bundle "$b" false "$COUNTER"
  start "$rt" "$id" "$b" || return 1
  wait_for 30 count_at_least "$b/rootfs/count" 3 || return 1
  timeout "$step_timeout" "$(rt_bin "$rt")" checkpoint --image-path "$b/img" "$id" || return 1
  local at
  at=$(cat "$b/rootfs/count")
  restore "$rt" "$id2" "$b" "$b/img" || { echo "restore failed: $(tail -n5 "$b/out")"; return 1; }
  [ "$(status_of "$rt" "$id2")" = running ] || { echo "new ID status: $(status_of "$rt" "$id2")"; return 1; }
  [ -z "$(status_of "$rt" "$id")" ] || { echo "old ID still there"; return 1; }
  counted_on "$b/rootfs/count" "$at" || return 1
  cleanup "$rt" "$id2"
  echo "restored as $id2, counter $at -> $(cat "$b/rootfs/count")"
}

podman_image() {
  [ -n "${podman_img:-}" ] && return 0
  tar -C "$work/base" -cf "$work/busybox.tar" . || return 1
  podman import -q "$work/busybox.tar" localhost/criu-busybox:latest >/dev/null || return 1
  podman_img=localhost/criu-busybox:latest
}
podman_count() { podman --runtime "$(rt_bin "$1")" exec "$2" cat /count 2>/dev/null; }
podman_count_at_least() { [ "$(podman_count "$1" "$2")" -ge "$3" ] 2>/dev/null; }

case_podman() {
  local rt=$1 name=crpod-$1 p="podman --runtime $(rt_bin "$1")"
  podman_image || { echo "podman import failed"; return 1; }
  timeout "$step_timeout" $p run -d --name "$name" "$podman_img" sh -c "$COUNTER" >/dev/null || return 1
  wait_for 60 podman_count_at_least "$rt" "$name" 3 || { echo "counter never started"; $p rm -f "$name" >/dev/null 2>&1; return 1; }
  timeout "$step_timeout" $p container checkpoint "$name" >/dev/null || { $p rm -f "$name" >/dev/null 2>&1; return 1; }
  [ "$($p inspect -f '{{.State.Status}}' "$name")" = exited ] || { echo "state after checkpoint: $($p inspect -f '{{.State.Status}}' "$name")"; return 1; }
  timeout "$step_timeout" $p container restore "$name" >/dev/null || { $p rm -f "$name" >/dev/null 2>&1; return 1; }
  local at
  at=$(podman_count "$rt" "$name")
  [ "$($p inspect -f '{{.State.Status}}' "$name")" = running ] || { echo "state after restore"; return 1; }
  [ "$at" -ge 3 ] 2>/dev/null || { echo "counter restarted: $at"; $p rm -f "$name" >/dev/null 2>&1; return 1; }
  $p rm -f "$name" >/dev/null 2>&1
  echo "podman restore: counter $at right after restore"
}

case_podman_export() {
  local rt=$1 name=crexp-$1 p="podman --runtime $(rt_bin "$1")"
  podman_image || return 1
  timeout "$step_timeout" $p run -d --name "$name" "$podman_img" sh -c "$COUNTER" >/dev/null || return 1
  wait_for 60 podman_count_at_least "$rt" "$name" 5 || { $p rm -f "$name" >/dev/null 2>&1; return 1; }
  timeout "$step_timeout" $p container checkpoint --export "$work/$name.tar.gz" "$name" >/dev/null || { $p rm -f "$name" >/dev/null 2>&1; return 1; }
  $p rm -f "$name" >/dev/null
  timeout "$step_timeout" $p container restore --import "$work/$name.tar.gz" --name "$name-2" >/dev/null || return 1
  local at
  at=$(podman_count "$rt" "$name-2")
  [ "$at" -ge 5 ] 2>/dev/null || { echo "counter after import: $at"; $p rm -f "$name-2" >/dev/null 2>&1; return 1; }
  $p rm -f "$name-2" >/dev/null 2>&1
  echo "exported $(du -k "$work/$name.tar.gz" | cut -f1) KiB, imported as $name-2 with counter $at"
}

for c in $CASES; do
  for rt in $RUNTIMES; do
    log=$(mktemp)
    t0=$(date +%s.%N)
    if "case_${c//-/_}" "$rt" >"$log" 2>&1; then
      r=PASS
      echo "PASS $c/$rt ($(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f s", b-a}')): $(tail -n1 "$log")"
    else
      r=FAIL
      echo "FAIL $c/$rt: $(tail -n4 "$log" | tr '\n' ' ' | cut -c1-600)"
      sed 's/^/    | /' "$log" | tail -n 30
      for f in "$work/$rt"-*/img/*.log "$work/$rt"-*/cp/final/*.log; do
        [ -f "$f" ] && grep -n Error "$f" | tail -n 5 | sed "s#^#    | $f: #"
      done
      if [ "$rt" = berth ]; then
        if [[ " $KNOWN " == *" $c "* ]]; then
          echo "KNOWN-FAIL $c/$rt: fails for runc too on this host (docs/CHECKPOINT.md)"
        else
          berth_failed=$((berth_failed + 1))
        fi
      fi
    fi
    result[$c/$rt]=$r
    rm -f "$log"
  done
done
for c in $CASES; do
  line="MATRIX $c"
  for rt in $RUNTIMES; do line="$line $rt=${result[$c/$rt]:-skip}"; done
  echo "$line"
done
echo "CRIU berth-failed=$berth_failed"
[ $berth_failed = 0 ]
