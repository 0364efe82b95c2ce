#!/usr/bin/env bash
# Times `exec ID /bin/true` into a running busybox container for several OCI runtimes side by side,
# in one run, so that their ratios can be compared on a noisy machine.
#
#   bench/exec.sh [RUNTIME_PATH ...]      default: target/release/berth runc crun
#
# Needs: root, hyperfine and busybox-static. Each runtime runs its own container (`sleep` as
# init, pid/ipc/uts/mount/network/cgroup namespaces) and hyperfine times `R exec ID /bin/true`.
# crun refuses this machine's hybrid cgroup layout, so everything (create and exec, for every
# runtime) runs in one private mount namespace where /sys/fs/cgroup/unified is unmounted: all
# runtimes see the same pure cgroup v1 hierarchy there.
set -euo pipefail
[ "$(id -u)" = 0 ] || { echo "exec.sh: needs root" >&2; exit 2; }
command -v hyperfine >/dev/null || { echo "exec.sh: needs hyperfine" >&2; exit 2; }
[ -x /bin/busybox ] || { echo "exec.sh: needs busybox-static" >&2; exit 2; }
runs=${RUNS:-200}
if [ $# -eq 0 ]; then set -- "$(pwd)/target/release/berth" runc crun; fi
work=$(mktemp -d /tmp/execbench.XXXXXX)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/bundle/rootfs/bin"
cp /bin/busybox "$work/bundle/rootfs/bin/"
for c in sh true echo sleep cat; do ln -s busybox "$work/bundle/rootfs/bin/$c"; done
cat > "$work/bundle/config.json" <<'JSON'
{"ociVersion":"1.0.2","root":{"path":"rootfs","readonly":true},
 "process":{"terminal":false,"user":{"uid":0,"gid":0},"args":["sleep","3600"],
  "env":["PATH=/bin"],"cwd":"/","noNewPrivileges":true,
  "capabilities":{"bounding":["CAP_KILL"],"effective":["CAP_KILL"],"permitted":["CAP_KILL"]},
  "rlimits":[{"type":"RLIMIT_NOFILE","hard":1024,"soft":1024}]},
 "hostname":"bench",
 "mounts":[{"destination":"/proc","type":"proc","source":"proc"},
  {"destination":"/dev","type":"tmpfs","source":"tmpfs","options":["nosuid","strictatime","mode=755","size=65536k"]}],
 "linux":{"namespaces":[{"type":"pid"},{"type":"ipc"},{"type":"uts"},{"type":"mount"},{"type":"network"},{"type":"cgroup"}],
  "maskedPaths":["/proc/kcore"],"readonlyPaths":["/proc/sys"]}}
JSON
setup="" cmds=() teardown=""
for r in "$@"; do
  b=$(command -v "$r" || true); [ -n "$b" ] || { echo "exec.sh: no runtime $r" >&2; exit 2; }
  n=$(basename "$b")
  st="$work/state-$n"
  setup+="$b --root $st run -d --bundle $work/bundle ex-$n </dev/null >/dev/null 2>&1 || { echo 'exec.sh: $n cannot run the container' >&2; exit 1; }
"
  cmds+=(-n "$n exec" "$b --root $st exec ex-$n /bin/true")
  teardown+="$b --root $st delete --force ex-$n >/dev/null 2>&1 || true
"
done
unshare -m --propagation private bash -c "
  umount /sys/fs/cgroup/unified 2>/dev/null || true
  $setup
  trap '$teardown' EXIT
  hyperfine -N -w 20 -r $runs --export-json $work/exec.json ${cmds[*]@Q}
"
