#!/usr/bin/env bash
# The engines suite: real engines (podman, containerd's ctr, dockerd) drive Berth and runc through the
# same feature matrix in the same run, and containerd's CRI plugin runs a Kubernetes pod on each
# (engines/cri.sh). Usage: engines/run.sh [podman|containerd|docker|cri ...]
# Env: BERTH=<path to berth> (default: target/release/berth, built if missing), ONLY=<feature ...>.
# All engine state lives in a temp dir that is removed afterwards, with any bridge, iptables chain,
# cgroup or mount the engines left. Exit status: non-zero when Berth fails a feature runc passes.
# ENGINES_CONFIG=default (for a disposable host such as the reference host, docs/REFHOST.md): the
# engines installed on the host run as its services with their default configuration (podman's
# containers.conf, the system containerd and dockerd, the CRI plugin as kubeadm sets it), only the
# runtime path given as a user would; nothing is installed (CRI_CLIENT=<path> for a prebuilt
# engines/cri-client). This mode changes the host's engine configuration: never on a shared host.
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(dirname "$HERE")
ENGINES=${*:-podman containerd docker cri}

need=()
for e in $ENGINES; do
  case $e in
    podman) command -v podman >/dev/null || need+=(podman) ;;
    containerd) command -v ctr >/dev/null || need+=(containerd) ;;
    cri) command -v ctr >/dev/null || need+=(containerd)
      [ -n "${CRI_CLIENT:-}" ] || command -v protoc >/dev/null || need+=(protobuf-compiler)
      # optional where the host's engines are used as they are (pods then use the host network)
      [ -x /usr/lib/cni/bridge ] || [ "${ENGINES_CONFIG:-}" = default ] || need+=(containernetworking-plugins) ;;
    docker) command -v dockerd >/dev/null || need+=(docker.io) ;;
  esac
done
command -v script >/dev/null || need+=(bsdutils)
command -v iptables-save >/dev/null || need+=(iptables)
DEFAULTS=
[ "${ENGINES_CONFIG:-}" = default ] && DEFAULTS=1
if [ ${#need[@]} -gt 0 ] && [ -n "$DEFAULTS" ]; then
  echo "engines: missing on this host: ${need[*]} (ENGINES_CONFIG=default installs nothing)" >&2; exit 1
fi
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
RUNC=$(command -v runc) || { echo "engines: runc is needed as the reference runtime" >&2; exit 1; }
BERTH=${BERTH:-$REPO/target/release/berth}
[ -x "$BERTH" ] || (cd "$REPO" && cargo build --release -q) || exit 1

T=$(mktemp -d /tmp/berth-engines.XXXXXX)
RESULTS=$T/results
: > "$RESULTS"
# Snapshots of host state the engines may touch, restored by cleanup.
iptables-save > "$T/iptables.before" 2>/dev/null || true
ls /sys/class/net > "$T/links.before"
find /sys/fs/cgroup -mindepth 1 -maxdepth 3 -type d 2>/dev/null | sort > "$T/cgroups.before"
CLEANUPS=()
cleanup() {
  local c
  for c in "${CLEANUPS[@]}"; do eval "$c" >/dev/null 2>&1 || true; done
  # links the engines created (podman0, docker0, veths, cni0)
  for l in $(ls /sys/class/net); do grep -qx "$l" "$T/links.before" || ip link del "$l" 2>/dev/null || true; done
  [ -s "$T/iptables.before" ] && iptables-restore < "$T/iptables.before" 2>/dev/null
  # cgroups the engines created (deepest first; only empty ones can go)
  # (a monitor such as conmon may take a moment to leave its cgroup)
  local i new
  for i in $(seq 20); do
    new=$(find /sys/fs/cgroup -mindepth 1 -maxdepth 3 -type d 2>/dev/null | sort | comm -13 "$T/cgroups.before" -)
    [ -z "$new" ] && break
    for d in $new; do [ -d "$d" ] && find "$d" -depth -type d -exec rmdir {} + 2>/dev/null; done
    sleep 0.5
  done
  [ -n "$new" ] && echo "engines: cgroups left behind: $new" >&2
  grep " $T" /proc/mounts | awk '{print $2}' | sort -r | while read -r m; do umount -l "$m" 2>/dev/null; done
  rm -rf "$T"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The image: a busybox rootfs with a uid 1000 user.
mkdir -p "$T/rootfs"/{bin,etc,tmp,proc,sys,dev,root,home/user,mnt}
cp "$(command -v busybox)" "$T/rootfs/bin/busybox"
for a in $("$T/rootfs/bin/busybox" --list); do [ -e "$T/rootfs/bin/$a" ] || ln -s busybox "$T/rootfs/bin/$a"; done
printf 'root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000:user:/home/user:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/sh\n' > "$T/rootfs/etc/passwd"
printf 'root:x:0:\nuser:x:1000:\nnobody:x:65534:\n' > "$T/rootfs/etc/group"
chmod 1777 "$T/rootfs/tmp"
tar -C "$T/rootfs" -cf "$T/rootfs.tar" .
IMG=localhost/bb:latest

source "$HERE/features.sh"

# cell ENGINE RUNTIME FEATURE: run f_FEATURE with R/C already set; records pass/fail/skip.
cell() {
  local engine=$1 rt=$2 f=$3 rc
  W=$T/w/$engine-$rt-$f; mkdir -p "$W"
  cd "$W" || return 0
  export W ENGINE=$engine IMG CS RUNOPT=${RUNOPT:-}
  timeout 120 bash -c "for s in features podman containerd docker; do source \"$HERE/\$s.sh\"; done; R() { \$CS run \$RUNOPT \"\$@\"; }; C() { \$CS \"\$@\"; }; f_$f" > "$W/log" 2>&1 < /dev/null
  rc=$?
  case $rc in 0) r=pass ;; 2) r=skip ;; *) r=fail ;; esac
  echo "$engine $f $rt $r" >> "$RESULTS"
  printf '  %-10s %-22s %-6s %s\n' "$engine" "$f" "$rt" "$r"
  [ $r = fail ] && [ -n "${VERBOSE:-}" ] && sed 's/^/      | /' "$W/log" | tail -15
  return 0
}
matrix() {
  local engine=$1 f
  for f in ${ONLY:-$FEATURES}; do
    for rt in runc berth; do
      "select_runtime_$engine" "$rt"
      cell "$engine" "$rt" "$f"
    done
  done
}

source "$HERE/podman.sh"
source "$HERE/containerd.sh"
source "$HERE/docker.sh"
source "$HERE/cri.sh"
for e in $ENGINES; do
  echo "== $e"
  "engine_$e" || echo "$e setup-failed runc fail" >> "$RESULTS"
done

# The table: feature x engine x {runc, berth}; Berth failing where runc passes fails the suite.
echo
# (and cri/berth-vm, VM containers through the berth-vm handler, when that column ran: not compared)
vm=$(awk '$3=="berth-vm"{print $1; exit}' "$RESULTS")
printf '%-22s' feature; for e in $ENGINES; do printf ' %-13s %-13s' "$e/runc" "$e/berth"; done
[ -n "$vm" ] && printf ' %-13s' "$vm/berth-vm"
echo
bad=0
for f in $(awk '{print $2}' "$RESULTS" | awk '!s[$0]++'); do
  printf '%-22s' "$f"
  for e in $ENGINES; do
    a=$(awk -v e="$e" -v f="$f" '$1==e && $2==f && $3=="runc"{print $4}' "$RESULTS"); b=$(awk -v e="$e" -v f="$f" '$1==e && $2==f && $3=="berth"{print $4}' "$RESULTS")
    printf ' %-13s %-13s' "${a:--}" "${b:--}"
    if [ "$a" = pass ] && [ "$b" != pass ]; then bad=$((bad + 1)); fi
  done
  [ -n "$vm" ] && printf ' %-13s' "$(awk -v e="$vm" -v f="$f" '$1==e && $2==f && $3=="berth-vm"{print $4}' "$RESULTS")"
  echo
done
echo "berth fails $bad cell(s) that runc passes"
[ $bad = 0 ]
