#!/usr/bin/env bash
# Boot-time benchmark for VM containers (TCG): a bare qemu boot of Berth's own kernel+initramfs to
# the agent's marker (probe mode: marker on the exit port, then power-off) against
# `berth run` of /bin/true in a VM container, N times each, interleaved.
# Usage: scripts/vm-boot-bench.sh [BERTH_BINARY] [N]   (as root; needs what docs/VM.md lists)
set -euo pipefail
B=${1:-$(dirname "$0")/../target/debug/berth}
N=${2:-5}
K=$(ls /boot/vmlinuz-*-cloud-amd64 | tail -1)
W=$(mktemp -d /tmp/berth-vm-bench.XXXXXX)
trap 'rm -rf "$W"' EXIT
mkdir -p "$W/b/rootfs/bin" && cp /bin/busybox "$W/b/rootfs/bin/" && ln -s busybox "$W/b/rootfs/bin/true"
"$B" spec --bundle "$W/b"
python3 - "$W/b/config.json" <<'P'
import json, sys
p = sys.argv[1]; c = json.load(open(p))
c['process']['terminal'] = False; c['process']['args'] = ['/bin/true']
c['annotations'] = {'run.berth.isolation': 'vm'}
json.dump(c, open(p, 'w'))
P
"$B" --root "$W/root" run --bundle "$W/b" warm </dev/null >/dev/null 2>&1   # builds/caches the initramfs
I=$(ls -t /var/cache/berth/initramfs-* "${XDG_CACHE_HOME:-$HOME/.cache}"/berth/initramfs-* 2>/dev/null | head -1 || true)
now() { date +%s.%N; }
bare() {
  qemu-system-x86_64 -nodefaults -no-user-config -nographic -no-reboot -M microvm,pit=off,pic=off \
    -accel tcg -cpu max -m 256M -smp 1 -kernel "$K" -initrd "$I" -device virtio-serial-device \
    -chardev "file,id=ex,path=$W/marker" -device virtserialport,chardev=ex,name=berth.exit \
    -append "console=hvc0 quiet panic=-1 rdinit=/init tsc_early_khz=2600000 lpj=10400000 berth.probe" \
    </dev/null >/dev/null 2>&1
}
tb=0; tr=0
for i in $(seq "$N"); do
  s=$(now); bare; e=$(now); grep -q berth-guest-probe-ok "$W/marker" || { echo "bare boot: no marker"; exit 1; }
  s2=$(now); "$B" --root "$W/root" run --bundle "$W/b" "r$i" </dev/null >/dev/null 2>&1; e2=$(now)
  b=$(echo "$e - $s" | bc); r=$(echo "$e2 - $s2" | bc); tb=$(echo "$tb + $b" | bc); tr=$(echo "$tr + $r" | bc)
  printf 'run %d: bare boot %.2f s   berth run /bin/true %.2f s\n' "$i" "$b" "$r"
done
printf 'mean: bare %.2f s, berth %.2f s, overhead %+.0f%%\n' "$(echo "$tb / $N" | bc -l)" "$(echo "$tr / $N" | bc -l)" \
  "$(echo "($tr - $tb) * 100 / $tb" | bc -l)"
