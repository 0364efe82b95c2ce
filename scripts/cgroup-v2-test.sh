#!/bin/sh
# Run the cgroup integration tests (tests/cgroups.rs) on a pure cgroup v2 host: the Debian cloud
# kernel booted under qemu (software emulation, -accel tcg) with cgroup_no_v1=all, from an
# initramfs holding busybox, ps, the berth binary and the test binary. Prints the test output and
# exits with the tests' status.
#
# Needs: qemu-system-x86 and linux-image-cloud-amd64 (apt), busybox-static, cpio.
set -eu
cd "$(dirname "$0")/.."
KERNEL=${KERNEL:-$(ls /boot/vmlinuz-*-cloud-amd64 2>/dev/null | sort -V | tail -n1)}
[ -n "$KERNEL" ] || { echo "cgroup-v2-test: no /boot/vmlinuz-*-cloud-amd64 (apt-get install linux-image-cloud-amd64)" >&2; exit 2; }
command -v qemu-system-x86_64 >/dev/null || { echo "cgroup-v2-test: qemu-system-x86_64 missing (apt-get install qemu-system-x86)" >&2; exit 2; }

# BERTH_BIN and TEST_BIN may be given (tests/cgroups_v2_vm.rs does, from inside `cargo test`).
if [ -z "${BERTH_BIN:-}" ] || [ -z "${TEST_BIN:-}" ]; then
  cargo build -q
  BERTH_BIN=$(pwd)/target/debug/berth
  TEST_BIN=$(cargo test -q --test cgroups --no-run --message-format=json 2>/dev/null \
    | grep '"kind":\["test"\]' | sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | tail -n1)
fi
[ -x "$TEST_BIN" ] || { echo "cgroup-v2-test: test binary not found" >&2; exit 2; }

WORK=$(mktemp -d /tmp/berth-v2vm.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
R=$WORK/root
mkdir -p "$R/bin" "$R/proc" "$R/sys" "$R/dev" "$R/tmp" "$R/run" "$R/etc"
cp /bin/busybox "$R/bin/busybox"
for a in sh mount mkdir cat echo poweroff sleep cp switch_root insmod; do ln -s busybox "$R/bin/$a"; done
cp "$BERTH_BIN" "$R/berth"
cp "$TEST_BIN" "$R/cgroups-test"
cp /usr/bin/ps "$R/bin/ps"
strip "$R/berth" "$R/cgroups-test" 2>/dev/null || true
# Shared libraries of the dynamic binaries.
for b in "$R/berth" "$R/cgroups-test" "$R/bin/ps"; do
  ldd "$b" 2>/dev/null | grep -o '/[^ ]*' | while read -r lib; do
    mkdir -p "$R$(dirname "$lib")"; cp -L "$lib" "$R$lib"
  done
done
echo "root:x:0:0:root:/:/bin/sh" > "$R/etc/passwd"
# The loop driver gives the guest block devices for the blkio/io throttle test.
KVER=$(basename "$KERNEL" | sed 's/^vmlinuz-//')
LOOP=$(find "/lib/modules/$KVER" -name loop.ko 2>/dev/null | head -n1)
[ -z "$LOOP" ] || cp "$LOOP" "$R/loop.ko"
# pivot_root cannot leave the initramfs: copy it to a tmpfs and switch_root there first.
cat > "$R/init" <<'INIT'
#!/bin/sh
mkdir /newroot
mount -t tmpfs -o size=1200m tmpfs /newroot
for d in /*; do [ "$d" = /newroot ] || [ "$d" = /proc ] || [ "$d" = /sys ] || [ "$d" = /dev ] || cp -a "$d" /newroot/; done
mkdir -p /newroot/proc /newroot/sys /newroot/dev
exec switch_root /newroot /init2
INIT
cat > "$R/init2" <<'INIT'
#!/bin/sh
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /tmp
mount -t tmpfs tmpfs /run
mount -t cgroup2 cgroup2 /sys/fs/cgroup
[ ! -e /loop.ko ] || insmod /loop.ko
echo "BERTH-V2: cgroup.controllers: $(cat /sys/fs/cgroup/cgroup.controllers)"
export PATH=/bin BERTH_TEST_RUNTIME=/berth RUST_BACKTRACE=0
/cgroups-test --test-threads=2 2>&1
echo "BERTH-V2-RESULT rc=$?"
poweroff -f
INIT
chmod +x "$R/init" "$R/init2"
(cd "$R" && find . | cpio -o -H newc --quiet | gzip -1) > "$WORK/initrd.gz"

timeout 600 qemu-system-x86_64 -M microvm,pit=off,pic=off,rtc=on -accel tcg -cpu max -m 1536 -smp 2 \
  -kernel "$KERNEL" -initrd "$WORK/initrd.gz" -nographic -no-reboot \
  -append "console=ttyS0 cgroup_no_v1=all tsc_early_khz=2600000 lpj=10400000 quiet panic=-1 rdinit=/init" \
  | tee "$WORK/out" | grep -v '^\[' || true
rc=$(sed -n 's/.*BERTH-V2-RESULT rc=\([0-9]*\).*/\1/p' "$WORK/out" | tail -n1)
[ -n "$rc" ] || { echo "cgroup-v2-test: the guest did not report a result" >&2; exit 1; }
exit "$rc"
