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
# shellcheck source=tests/refhost/lib.sh
. "${REFHOST_SHARE:-/mnt/share}/refhost/lib.sh"

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
busybox_bundle "$bundle"
sed -i 's|^\( *\)"sh"$|\1"sh", "-c", "echo berth-ok; cat /proc/self/cgroup"|' "$bundle/config.json"

check berth-run-cgroupfs '^berth-ok$' "$BERTH" run --bundle "$bundle" smoke-cgroupfs
"$BERTH" delete --force smoke-cgroupfs >/dev/null 2>&1
# ---- The systemd driver (issue 15 part 2): a transient scope with the limits as unit properties. ----
check berth-run-systemd-driver '^berth-ok$' \
  "$BERTH" --systemd-cgroup run --bundle "$bundle" smoke-systemd
"$BERTH" --systemd-cgroup delete --force smoke-systemd >/dev/null 2>&1
check berth-systemd-run-gone '^not-found$' systemctl show -P LoadState berth-smoke-systemd.scope

# systemd out of reach (a bus address that leads nowhere): a clear error naming the bus call, and
# nothing left behind.
# shellcheck disable=SC2016 # expanded by the sh -c
check berth-systemd-no-bus '^rc=1 state=none .*StartTransientUnit berth-smoke-nobus.scope: .*system bus' sh -c \
  'out=$(DBUS_SYSTEM_BUS_ADDRESS=unix:path=/nonexistent "$0" --systemd-cgroup run --bundle "$1" smoke-nobus 2>&1); rc=$?
   "$0" state smoke-nobus >/dev/null 2>&1 && st=left || st=none; echo "rc=$rc state=$st $out"' "$BERTH" "$bundle"

# A created container with memory and pids limits: the unit, its properties and its files.
sdb=$(mktemp -d /root/sdbundle.XXXXXX)
cp -a "$bundle/rootfs" "$sdb/rootfs"
python3 - "$bundle/config.json" "$sdb/config.json" <<'PY'
import json, sys
c = json.load(open(sys.argv[1]))
c["process"]["args"] = ["sleep", "600"]
c["linux"]["cgroupsPath"] = "machine-berth.slice:smoke:sd1"
r = c["linux"].setdefault("resources", {})
r["memory"] = {"limit": 67108864}
r["pids"] = {"limit": 77}
r["cpu"] = {"quota": 50000, "period": 100000}
json.dump(c, open(sys.argv[2], "w"))
PY
unit=smoke-sd1.scope
cgdir=/sys/fs/cgroup/machine.slice/machine-berth.slice/$unit
check berth-systemd-create '^created$' sh -c "'$BERTH' --systemd-cgroup create --bundle '$sdb' sd1 && echo created"
pid=$("$BERTH" --systemd-cgroup state sd1 2>/dev/null | sed -n 's/^ *"pid": \([0-9]*\),/\1/p')
# shellcheck disable=SC2016 # expanded by the sh -c
show='for p in ActiveState Delegate MemoryMax TasksMax CPUQuotaPerSecUSec ControlGroup Slice; do printf "%s " "$(systemctl show -P $p '"$unit"')"; done; echo'
check berth-systemd-unit "^active yes 67108864 77 500ms /machine.slice/machine-berth.slice/$unit machine-berth.slice $" sh -c "$show"
check berth-systemd-files '^67108864 77 50000 100000 '"$pid"'$' \
  sh -c "echo \$(cat $cgdir/memory.max $cgdir/pids.max $cgdir/cpu.max $cgdir/cgroup.procs)"
# The device rules as systemd's too (DevicePolicy=strict, DeviceAllow), and the allowed devices work.
check berth-systemd-devices '^strict .*/dev/char/1:3 rwm.* dev-ok$' \
  sh -c "echo \$(systemctl show -P DevicePolicy $unit) \$(systemctl show -P DeviceAllow $unit) \$('$BERTH' --systemd-cgroup exec sd1 sh -c 'echo x >/dev/null && head -c 4 /dev/urandom >/dev/null && echo dev-ok')"
check berth-systemd-update '^MemoryMax=134217728 134217728$' \
  sh -c "'$BERTH' --systemd-cgroup update --memory 128M sd1 && echo \$(systemctl show -p MemoryMax $unit) \$(cat $cgdir/memory.max)"
"$BERTH" --systemd-cgroup start sd1
check berth-systemd-delete '^not-found gone$' \
  sh -c "'$BERTH' --systemd-cgroup delete --force sd1 && echo \$(systemctl show -P LoadState $unit) \$([ -e $cgdir ] && echo left || echo gone)"
# A create killed once its scope is started: delete --force stops what is left.
sed -i 's/smoke:sd1/smoke:sd2/' "$sdb/config.json"
(BERTH_TEST_CRASH_AT=spawned exec "$BERTH" --systemd-cgroup create --bundle "$sdb" sd2 >/dev/null 2>&1)
check berth-systemd-crash-delete '^recorded not-found gone$' \
  sh -c "'$BERTH' --systemd-cgroup state sd2 >/dev/null && echo -n 'recorded ' && '$BERTH' --systemd-cgroup delete --force sd2 && echo \$(systemctl show -P LoadState smoke-sd2.scope) \$([ -e /sys/fs/cgroup/machine.slice/machine-berth.slice/smoke-sd2.scope ] && echo left || echo gone)"
check berth-systemd-features '"systemd": true' "$BERTH" features
rm -rf "$sdb"

# `run` latency and peak RSS (10 runs with each driver; RSS: the largest of berth and its children).
measure() {
  python3 - "$@" <<'PY'
import resource, subprocess, sys, time
walls = []
failed = 0
for i in range(10):
    t = time.monotonic()
    r = subprocess.run(sys.argv[2:] + ["m%d" % i], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    walls.append(time.monotonic() - t)
    failed += r.returncode != 0
walls.sort()
rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
print("MEASURE %s: run median %.0f ms (min %.0f, max %.0f), peak RSS %d KiB, %d of 10 failed" % (sys.argv[1], walls[5] * 1000, walls[0] * 1000, walls[-1] * 1000, rss, failed))
PY
}
"$BERTH" --debug --systemd-cgroup run --bundle "$bundle" smoke-debug 2>&1 | grep -E 'systemd:' | sed 's/^/FACT systemd-driver-debug: /'
measure cgroupfs "$BERTH" run --bundle "$bundle"
measure systemd "$BERTH" --systemd-cgroup run --bundle "$bundle"
measure cgroupfs "$BERTH" run --bundle "$bundle"
measure systemd "$BERTH" --systemd-cgroup run --bundle "$bundle"

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

# podman with its default configuration (the systemd cgroup manager): the container in its scope,
# the memory limit applied, the scope gone after --rm.
out=$(mktemp)
timeout "$step_timeout" podman --runtime "$BERTH" run --rm --memory 64m --name smoke-sd "$image" sh -c "$inside" >"$out" 2>&1
status=$?
sed 's/^/    | /' "$out"
check podman-systemd-driver '^podman-ok$' sh -c "[ $status = 0 ] && cat '$out'"
check podman-systemd-memory-limit '^memory.max 67108864$' cat "$out"
rm -f "$out"
# Detached: the scope crun would make (libpod-<id>.scope in machine.slice, Delegate=yes) with the
# limits as its properties; gone after `podman rm`.
cid=$(timeout "$step_timeout" podman --runtime "$BERTH" run -d --memory 64m --pids-limit 99 "$image" sleep 600 2>&1)
echo "$cid" | sed 's/^/    | /'
check podman-systemd-unit '^active yes 67108864 99 /machine.slice/libpod-[0-9a-f]{64}.scope$' \
  sh -c "echo \$(systemctl show -P ActiveState libpod-$cid.scope) \$(systemctl show -P Delegate libpod-$cid.scope) \$(systemctl show -P MemoryMax libpod-$cid.scope) \$(systemctl show -P TasksMax libpod-$cid.scope) \$(systemctl show -P ControlGroup libpod-$cid.scope)"
check podman-systemd-exec '^exec-ok$' podman exec "$cid" echo exec-ok
check podman-systemd-pause '^paused running$' sh -c "podman pause $cid >/dev/null && s1=\$(podman inspect -f '{{.State.Status}}' $cid) && podman unpause $cid >/dev/null && echo \$s1 \$(podman inspect -f '{{.State.Status}}' $cid)"
check podman-systemd-stats ' / 67\.[0-9]+MB$' podman stats --no-stream --format '{{.MemUsage}}' "$cid"
timeout "$step_timeout" podman rm -f -t 0 "$cid" >/dev/null 2>&1
check podman-systemd-unit-gone '^not-found$' systemctl show -P LoadState "libpod-$cid.scope"
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
