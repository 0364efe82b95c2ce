#!/bin/bash
# Smoke checks on the reference host (run inside it by `scripts/refhost.sh run tests/refhost/smoke.sh`).
# Prints the host's facts, then runs Berth ($BERTH, this checkout's release binary) directly and
# under podman. Each check prints one line:
#   PASS <name>                  it works
#   FAIL <name>: <reason>        it must work now: the script exits 1
#   KNOWN-FAIL <name>: <reason>  known not to work yet (the issue that fixes it is named); not fatal
# A known failure that starts to pass prints PASS: then make it a must (`check`, not `known`).
set -u
BERTH=${BERTH:?BERTH: the berth binary to test}
passed=0 failed=0 known=0
step_timeout=180

fact() { echo "FACT $1: $2"; }
pass() { echo "PASS $1"; passed=$((passed + 1)); }
fail() { echo "FAIL $1: $2"; failed=$((failed + 1)); }
# What a failed command printed, on one line: its error lines when it has some (podman's), else all.
reason() {
  { grep -E '^Error' "$1" || grep -E '^berth:' "$1" || cat "$1"; } | tr '\n' ' ' | sed 's/  */ /g; s/ $//' | cut -c1-500
}

# check NAME EXPECTED-PATTERN COMMAND...: the command succeeds and its output matches the pattern.
check() {
  local name=$1 want=$2
  shift 2
  local log
  log=$(mktemp)
  if timeout "$step_timeout" "$@" >"$log" 2>&1 && grep -qE -- "$want" "$log"; then
    pass "$name"
  else
    sed 's/^/    | /' "$log"
    fail "$name" "$(reason "$log")"
  fi
  rm -f "$log"
}

# known NAME ISSUE EXPECTED-PATTERN COMMAND...: as check, but a failure is a known one.
known() {
  local name=$1 issue=$2 want=$3
  shift 3
  local log
  log=$(mktemp)
  if timeout "$step_timeout" "$@" >"$log" 2>&1 && grep -qE -- "$want" "$log"; then
    pass "$name"
  else
    echo "KNOWN-FAIL $name: $(reason "$log") ($issue)"
    known=$((known + 1))
  fi
  rm -f "$log"
}

# ---- The host's facts: what makes it a stock systemd host. ----
state=$(systemctl is-system-running 2>/dev/null)
fact systemd "$(systemctl --version | head -n1), state $state"
fact kernel "$(uname -r) $(cat /proc/cmdline)"
fact cgroupfs "$(stat -fc %T /sys/fs/cgroup) (controllers: $(cat /sys/fs/cgroup/cgroup.controllers 2>/dev/null))"
fact apparmor "enabled=$(cat /sys/module/apparmor/parameters/enabled 2>/dev/null) profiles=$(wc -l </sys/kernel/security/apparmor/profiles 2>/dev/null)"
fact podman "$(podman --version), cgroup manager $(podman info --format '{{.Host.CgroupManager}}' 2>&1), cgroups $(podman info --format '{{.Host.CgroupsVersion}}' 2>&1), network $(podman info --format '{{.Host.NetworkBackend}}' 2>&1)"
# (docker.socket starts dockerd on first use, 20-30 s under TCG: not for a fact)
fact engines "$(containerd --version 2>&1 | cut -d' ' -f1,3), $(dockerd --version 2>&1 | cut -d, -f1), criu $(criu --version 2>&1 | head -n1 | cut -d' ' -f2)"
fact berth "$($BERTH --version 2>&1 | head -n1)"

check systemd-running '^running$' systemctl is-system-running
[ "$state" = running ] || systemctl --failed --no-legend --plain | sed 's/^/    | /'
check cgroup-v2-pure '^cgroup2fs$' stat -fc %T /sys/fs/cgroup
check apparmor-enabled '^Y$' cat /sys/module/apparmor/parameters/enabled
check podman-default-cgroup-manager '^systemd$' podman info --format '{{.Host.CgroupManager}}'

# ---- Berth directly, a busybox bundle. ----
bundle=$(mktemp -d /root/bundle.XXXXXX)
mkdir -p "$bundle/rootfs/bin"
cp /bin/busybox "$bundle/rootfs/bin/busybox"
for applet in $("$bundle/rootfs/bin/busybox" --list); do
  [ "$applet" = busybox ] || ln -s busybox "$bundle/rootfs/bin/$applet"
done
(cd "$bundle" && "$BERTH" spec)
sed -i 's/"terminal": true/"terminal": false/; s|^\( *\)"sh"$|\1"sh", "-c", "echo berth-ok; cat /proc/self/cgroup"|' "$bundle/config.json"

check berth-run-cgroupfs '^berth-ok$' "$BERTH" run --bundle "$bundle" smoke-cgroupfs
"$BERTH" delete --force smoke-cgroupfs >/dev/null 2>&1
# The systemd driver: issue 15 part 2.
known berth-run-systemd-driver 'issue 15 part 2' '^berth-ok$' \
  "$BERTH" --systemd-cgroup run --bundle "$bundle" smoke-systemd
"$BERTH" --systemd-cgroup delete --force smoke-systemd >/dev/null 2>&1

# ---- podman with its default configuration, Berth as its runtime. ----
# No registry: the image is the busybox rootfs, imported from a tarball.
tar -C "$bundle/rootfs" -cf "$bundle/busybox.tar" .
if timeout "$step_timeout" podman import -q "$bundle/busybox.tar" localhost/refhost-busybox:latest >/dev/null; then
  pass podman-import-busybox
else
  fail podman-import-busybox "podman import of a busybox rootfs failed"
fi
image=localhost/refhost-busybox:latest
# shellcheck disable=SC2016 # expanded inside the container
inside='echo podman-ok; cat /proc/self/cgroup; echo "memory.max $(cat /sys/fs/cgroup/memory.max)"; echo "apparmor $(cat /proc/self/attr/current)"'

known podman-systemd-driver 'issue 15 part 2' '^podman-ok$' \
  podman --runtime "$BERTH" run --rm "$image" sh -c "$inside"
# The same with the cgroupfs driver must work: the container runs, the memory limit is applied and
# podman's AppArmor profile is enforced (one run, three checks).
out=$(mktemp)
timeout "$step_timeout" podman --cgroup-manager=cgroupfs --runtime "$BERTH" run --rm --memory 64m \
  "$image" sh -c "$inside" >"$out" 2>&1
status=$?
sed 's/^/    | /' "$out"
check podman-cgroupfs-driver '^podman-ok$' sh -c "[ $status = 0 ] && cat '$out'"
check podman-cgroupfs-memory-limit '^memory.max 67108864$' cat "$out"
check podman-cgroupfs-apparmor '^apparmor containers-default-[0-9.]+ \(enforce\)$' cat "$out"
rm -f "$out"

rm -rf "$bundle"
echo "SMOKE passed=$passed failed=$failed known-failures=$known"
[ "$failed" = 0 ]
