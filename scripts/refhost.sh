#!/usr/bin/env bash
# SC2016: the guest files and mmdebstrap's hooks are single-quoted on purpose ($1 is the hook's
# root). SC2012: /boot holds plain Debian kernel names.
# shellcheck disable=SC2016,SC2012
# The reference host (issue 15): a stock Debian 12 (bookworm) machine — systemd on a pure cgroup v2
# hierarchy, AppArmor enabled, podman/containerd/docker with their default configuration — built
# from Debian packages with mmdebstrap, cached on this machine and booted under qemu to run a test
# script against this checkout's Berth.
#
#   scripts/refhost.sh build          build the image unless it is cached (~600 MB–1 GB; minutes)
#   scripts/refhost.sh run SCRIPT     boot it, run SCRIPT (bash) inside as root once systemd is
#                                     up, print its output; exit with SCRIPT's status
#   scripts/refhost.sh path           print the cached image's directory (exit 1 if not built)
#   scripts/refhost.sh clean          remove every cached image
#
# Inside the guest SCRIPT runs with its working directory a scratch directory under /root and:
#   BERTH=/mnt/share/bin/berth     this checkout's release binary (BERTH_BIN to choose another)
#   REFHOST_SHARE=/mnt/share       the read-only share: bin/ (berth, berth-guest), refhost/
#                                  (tests/refhost), engines/, install.sh (scripts/install.sh), script
# The share is a second, read-only virtio disk (ext4 made with `mkfs.ext4 -d`: no host mount and no
# daemon; the cloud kernel has no 9p); the output comes back on the second serial port (ttyS1),
# ending with `REFHOST-EXIT rc=N`. The root disk is opened with snapshot=on: a run never changes
# the cached image, and qemu's overlay is unlinked as soon as it is made.
#
# Environment: REFHOST_CACHE (default /var/cache/berth/refhost), REFHOST_MIRROR (default: the
# Debian mirror of /etc/apt/sources.list*), REFHOST_TIMEOUT (whole boot+run, seconds, default
# 900), REFHOST_MEM (MiB, default 3072), REFHOST_ACCEL (kvm|tcg; default: a cached probe),
# BERTH_BIN (default target/release/berth; berth-guest next to it is shared too when present),
# REFHOST_SHARE_BIN (more files for the share's bin/, space-separated PATH or PATH=NAME: test
# binaries, tools).
# The share also carries engines/*.sh (the engines suite) as $REFHOST_SHARE/engines.
set -euo pipefail

REFHOST_FORMAT=1 # bump to force a rebuild (the key also covers the packages and build steps)
ROOT_DIR=$(cd "$(dirname "$0")/.." && pwd)
work='' qpid='' tpid=
CACHE=${REFHOST_CACHE:-/var/cache/berth/refhost}
TIMEOUT=${REFHOST_TIMEOUT:-900}
MEM=${REFHOST_MEM:-3072}

# What a user installs on a stock Debian 12 container host, plus what the harness needs.
PACKAGES=(
  systemd systemd-sysv dbus dbus-user-session libpam-systemd udev kmod
  podman crun netavark aardvark-dns slirp4netns uidmap fuse-overlayfs catatonit
  containerd docker.io criu apparmor
  linux-image-cloud-amd64 busybox-static
  procps iproute2 iptables e2fsprogs ca-certificates zstd
)

die() { echo "refhost: $*" >&2; exit 2; }

# The unit and the runner the image carries: they wait for systemd to reach `running`, mount the
# share, run the script, report on ttyS1 and power off. Only with `refhost.run` on the kernel
# command line (a plain boot of the image is a normal host).
GUEST_UNIT='[Unit]
Description=Berth reference host: run the test script from the share disk
ConditionKernelCommandLine=refhost.run
After=multi-user.target

[Service]
# simple, not oneshot: the system must be able to reach `running` while the script runs.
Type=simple
ExecStart=/usr/local/sbin/refhost-run
StandardInput=null
StandardOutput=journal+console
StandardError=journal+console

[Install]
WantedBy=multi-user.target
'
GUEST_RUNNER='#!/bin/bash
# Runs the reference host script (see scripts/refhost.sh in the Berth repository).
out=/dev/ttyS1
stty -F "$out" raw -echo 115200 2>/dev/null
exec >"$out" 2>&1
finish() { echo "REFHOST-EXIT rc=$1"; sync; systemctl poweroff --force --force >/dev/null 2>&1; sleep 60; }
state=$(systemctl is-system-running --wait 2>/dev/null)
read -r up _ </proc/uptime
echo "REFHOST-BOOT state=$state uptime=${up}s kernel=$(uname -r)"
[ "$state" = running ] || systemctl --failed --no-legend --plain
systemd-analyze time 2>/dev/null | sed "s/^/REFHOST-BOOT /"
mkdir -p /mnt/share
mount -o ro,noload /dev/vdb /mnt/share || { echo "refhost-run: cannot mount the share disk"; finish 125; }
limit=$(sed -n "s/.*refhost.timeout=\([0-9]*\).*/\1/p" /proc/cmdline)
work=$(mktemp -d /root/refhost.XXXXXX)
cd "$work"
BERTH=/mnt/share/bin/berth REFHOST_SHARE=/mnt/share HOME=/root \
  PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
  timeout --kill-after=5 "${limit:-600}" bash /mnt/share/script </dev/null
finish $?
'


# The Debian mirror this machine's apt uses (only Debian's mirror is reachable here).
mirror() {
  if [ -n "${REFHOST_MIRROR:-}" ]; then echo "$REFHOST_MIRROR"; return; fi
  local m
  m=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.sources /etc/apt/sources.list.d/*.list 2>/dev/null \
    | grep -oE 'https?://[^ ]*/debian/?( |$)' | grep -v security | head -n1 | tr -d ' ' || true)
  echo "${m:-http://deb.debian.org/debian}"
}

build() {
  if [ -e "$IMAGE_DIR/done" ]; then echo "refhost: image cached in $IMAGE_DIR"; return 0; fi
  command -v mmdebstrap >/dev/null || die "mmdebstrap missing (apt-get install mmdebstrap)"
  command -v mkfs.ext4 >/dev/null || die "mkfs.ext4 missing (apt-get install e2fsprogs)"
  [ "$(id -u)" = 0 ] || die "build needs root (mmdebstrap's root mode, ownership in the image)"
  mkdir -p "$CACHE"
  exec 9>"$CACHE/.lock"
  flock 9 # one build at a time; a concurrent caller then finds the image done
  if [ -e "$IMAGE_DIR/done" ]; then echo "refhost: image cached in $IMAGE_DIR"; return 0; fi
  local start tmp m
  start=$(date +%s)
  tmp=$(mktemp -d "$CACHE/.build.XXXXXX")
  # --one-file-system: should mmdebstrap die with its chroot's /proc, /sys or /dev still mounted, the
  # cleanup must not walk into them (a bind of the host's /dev would lose its nodes).
  # shellcheck disable=SC2064 # expand $tmp now
  trap "rm -rf --one-file-system '$tmp'" EXIT
  m=$(mirror)
  m=${m%/}
  echo "refhost: building Debian 12 from $m into $IMAGE_DIR (a few minutes)"
  local pkgs
  pkgs=$(IFS=,; echo "${PACKAGES[*]}")
  printf '%s' "$GUEST_UNIT" >"$tmp/refhost-run.service"
  printf '%s' "$GUEST_RUNNER" >"$tmp/refhost-run"
  # In the background, so that INT/TERM reach it and are waited for: mmdebstrap unmounts its
  # chroot's /proc, /sys and /dev before the scratch directory is removed.
  mmdebstrap --quiet --variant=apt --include="$pkgs" \
    --aptopt='Acquire::Retries "3"' \
    --essential-hook='mkdir -p "$1/etc/initramfs-tools/conf.d"; printf "MODULES=list\nCOMPRESS=zstd\n" >"$1/etc/initramfs-tools/conf.d/refhost"; mkdir -p "$1/etc/initramfs-tools"; printf "virtio_pci\nvirtio_blk\n" >"$1/etc/initramfs-tools/modules.refhost"' \
    --customize-hook='echo refhost >"$1/etc/hostname"; printf "127.0.0.1 localhost\n127.0.1.1 refhost\n" >"$1/etc/hosts"' \
    --customize-hook='printf "/dev/vda / ext4 rw,discard 0 1\n" >"$1/etc/fstab"' \
    --customize-hook='chroot "$1" systemd-machine-id-setup >/dev/null; chroot "$1" passwd -d root >/dev/null' \
    --customize-hook="install -m 0644 '$tmp/refhost-run.service' \"\$1/etc/systemd/system/refhost-run.service\"; install -m 0755 '$tmp/refhost-run' \"\$1/usr/local/sbin/refhost-run\"; chroot \"\$1\" systemctl enable refhost-run.service >/dev/null 2>&1" \
    --customize-hook='cat "$1/etc/initramfs-tools/modules.refhost" >>"$1/etc/initramfs-tools/modules"; rm "$1/etc/initramfs-tools/modules.refhost"; chroot "$1" update-initramfs -u -k all >/dev/null' \
    --customize-hook='for u in docker.service containerd.service podman-auto-update.timer podman-auto-update.service apt-daily.timer apt-daily-upgrade.timer man-db.timer e2scrub_all.timer e2scrub_reap.service fstrim.timer; do chroot "$1" systemctl disable "$u" >/dev/null 2>&1 || true; done' \
    --customize-hook='rm -rf "$1"/var/cache/apt/archives/*.deb "$1"/var/lib/apt/lists/*_Packages' \
    --customize-hook='chroot "$1" dpkg-query -W -f "\${Package} \${Version}\n" >"$1/root/refhost-packages.txt"' \
    --customize-hook='touch "$1/etc/.updated" "$1/var/.updated"' \
    bookworm "$tmp/root" \
    "deb $m bookworm main" "deb $m bookworm-updates main" "deb ${m%/debian}/debian-security bookworm-security main" &
  mmdebstrap_pid=$!
  trap 'kill -TERM "$mmdebstrap_pid" 2>/dev/null; wait "$mmdebstrap_pid"; exit 130' INT TERM
  wait "$mmdebstrap_pid"
  trap - INT TERM
  local kernel initrd used size
  kernel=$(ls "$tmp"/root/boot/vmlinuz-* | sort -V | tail -n1)
  initrd=$(ls "$tmp"/root/boot/initrd.img-* | sort -V | tail -n1)
  cp "$kernel" "$tmp/vmlinuz"
  cp "$initrd" "$tmp/initrd.img"
  cp "$tmp/root/root/refhost-packages.txt" "$tmp/packages.txt"
  # Room for images and containers: the tree plus 2 GiB (the file is sparse).
  used=$(du -sm "$tmp/root" | cut -f1)
  size=$((used + used / 4 + 2048))
  mkfs.ext4 -q -F -L refhost -d "$tmp/root" "$tmp/root.img" "${size}M" >/dev/null
  rm -rf --one-file-system "$tmp/root"
  basename "$kernel" >"$tmp/kernel-version"
  echo "$(($(date +%s) - start))" >"$tmp/build-seconds"
  rm -rf "$IMAGE_DIR"
  mkdir -p "$IMAGE_DIR"
  mv "$tmp/vmlinuz" "$tmp/initrd.img" "$tmp/root.img" "$tmp/packages.txt" "$tmp/kernel-version" \
    "$tmp/build-seconds" "$IMAGE_DIR/"
  touch "$IMAGE_DIR/done"
  # Older keys are stale images of an earlier package list or format.
  for old in "$CACHE"/bookworm-*; do [ "$old" = "$IMAGE_DIR" ] || rm -rf "$old"; done
  rm -rf --one-file-system "$tmp"
  trap - EXIT
  echo "refhost: built in $(cat "$IMAGE_DIR/build-seconds") s: $(du -sh --apparent-size "$IMAGE_DIR/root.img" | cut -f1) image ($(du -sh "$IMAGE_DIR/root.img" | cut -f1) used), $(cat "$IMAGE_DIR/kernel-version")"
}

# The image is keyed by what makes it: the format, the package list, the guest-side files and the
# build steps themselves (a change to any of them builds a new image; the old one is removed).
cache_key() {
  { printf '%s\n' "$REFHOST_FORMAT" "${PACKAGES[@]}" "$GUEST_UNIT" "$GUEST_RUNNER"; declare -f build; } \
    | sha256sum | cut -c1-16
}
IMAGE_DIR=$CACHE/bookworm-$(cache_key)

# KVM only where it boots this kernel (here /dev/kvm is PVM and cannot): a kernel with no root
# disk panics at once under KVM, printing "Kernel panic"; probed once per kernel and cached.
accel() {
  if [ -n "${REFHOST_ACCEL:-}" ]; then echo "$REFHOST_ACCEL"; return; fi
  local probe=$IMAGE_DIR/accel
  if [ ! -e "$probe" ]; then
    local a=tcg log
    if [ -r /dev/kvm ] && [ -w /dev/kvm ]; then
      log=$(mktemp /tmp/refhost-probe.XXXXXX)
      timeout -k 2 10 qemu-system-x86_64 -nodefaults -no-user-config -display none -no-reboot \
        -M microvm -accel kvm -cpu host -m 256 -kernel "$IMAGE_DIR/vmlinuz" \
        -append "console=ttyS0 panic=-1" -serial "file:$log" >/dev/null 2>&1 || true
      grep -q 'Kernel panic' "$log" && a=kvm
      rm -f "$log"
    fi
    # Not cached where the cache is not writable (a run as another user): probed again next time.
    echo "$a" >"$probe" 2>/dev/null || { echo "$a"; return; }
  fi
  cat "$probe"
}

# Kills what run() started (timeout passes the TERM on to qemu) and removes its scratch directory.
cleanup_run() {
  set +e
  [ -z "$tpid" ] || kill "$tpid" 2>/dev/null
  if [ -n "$qpid" ]; then
    kill "$qpid" 2>/dev/null
    wait "$qpid" 2>/dev/null
  fi
  [ -z "$work" ] || rm -rf "$work"
}

run() {
  local script=${1:-}
  if [ -z "$script" ] || [ ! -f "$script" ]; then
    die "usage: refhost.sh run SCRIPT (a bash script to run inside)"
  fi
  [ -e "$IMAGE_DIR/done" ] || die "no image in $IMAGE_DIR: run 'scripts/refhost.sh build' first"
  command -v qemu-system-x86_64 >/dev/null || die "qemu-system-x86_64 missing (apt-get install qemu-system-x86)"
  local berth=${BERTH_BIN:-$ROOT_DIR/target/release/berth}
  [ -x "$berth" ] || die "$berth missing: cargo build --release (or set BERTH_BIN)"
  # Globals: the EXIT trap reads them after run() returns.
  work=$(mktemp -d /tmp/refhost-run.XXXXXX)
  qpid='' tpid=''
  trap cleanup_run EXIT
  trap 'exit 130' INT TERM
  mkdir -p "$work/share/bin" "$work/share/refhost"
  cp "$berth" "$work/share/bin/berth"
  # The VM agent: beside the binary, else this checkout's static build (tests/refhost/install.sh
  # installs it); and the installer itself, for tests/refhost/install.sh.
  local agent
  agent=$(dirname "$berth")/berth-guest
  [ -x "$agent" ] || agent=$ROOT_DIR/target/x86_64-unknown-linux-gnu/release/berth-guest
  [ ! -x "$agent" ] || cp "$agent" "$work/share/bin/berth-guest"
  cp "$ROOT_DIR/scripts/install.sh" "$work/share/install.sh"
  cp -r "$ROOT_DIR/tests/refhost/." "$work/share/refhost/" 2>/dev/null || true
  # The engines suite's scripts (engines/run.sh and the files it sources).
  mkdir -p "$work/share/engines"
  cp "$ROOT_DIR"/engines/*.sh "$work/share/engines/"
  # More binaries for the script, in bin/ (REFHOST_SHARE_BIN: PATH or PATH=NAME entries).
  local extra
  for extra in ${REFHOST_SHARE_BIN:-}; do
    [ -f "${extra%%=*}" ] || die "REFHOST_SHARE_BIN: ${extra%%=*} is not a file"
    if [ "${extra#*=}" != "$extra" ]; then cp "${extra%%=*}" "$work/share/bin/${extra#*=}"; else cp "$extra" "$work/share/bin/"; fi
  done
  cp "$script" "$work/share/script"
  local size
  size=$(($(du -sm "$work/share" | cut -f1) * 2 + 16))
  mkfs.ext4 -q -F -L refhost-share -d "$work/share" "$work/share.img" "${size}M" >/dev/null
  rm -rf "$work/share"
  : >"$work/out"
  local a
  a=$(accel)
  local cpu=max
  [ "$a" = tcg ] || cpu=host
  local start=$SECONDS
  # The script's own limit leaves the guest time to report and power off within ours.
  local inner=$((TIMEOUT > 120 ? TIMEOUT - 60 : TIMEOUT / 2))
  timeout -k 5 "$TIMEOUT" qemu-system-x86_64 -nodefaults -no-user-config -display none -no-reboot \
    -M q35 -accel "$a" -cpu "$cpu" -smp 2 -m "$MEM" \
    -kernel "$IMAGE_DIR/vmlinuz" -initrd "$IMAGE_DIR/initrd.img" \
    -append "root=/dev/vda rw console=ttyS0 quiet systemd.show_status=error fsck.mode=skip apparmor=1 security=apparmor refhost.run refhost.timeout=$inner panic=-1" \
    -drive "file=$IMAGE_DIR/root.img,format=raw,if=virtio,snapshot=on,cache=unsafe,discard=unmap" \
    -drive "file=$work/share.img,format=raw,if=virtio,readonly=on" \
    -serial "file:$work/console" -serial "file:$work/out" \
    </dev/null >"$work/qemu.log" 2>&1 &
  qpid=$!
  # Stream the script's output as it comes; tail leaves when qemu does. Both in the background:
  # `wait` returns at once on INT/TERM (a foreground child would hold the trap until qemu exits).
  tail -n +1 -F --pid="$qpid" "$work/out" 2>/dev/null &
  tpid=$!
  local qrc=0
  wait "$qpid" || qrc=$?
  qpid=''
  wait "$tpid" || true
  tpid=''
  local rc
  rc=$(sed -n 's/.*REFHOST-EXIT rc=\([0-9]*\).*/\1/p' "$work/out" | tail -n1)
  if [ -z "$rc" ]; then
    echo "refhost: the guest did not report a result (qemu status $qrc after $((SECONDS - start)) s; timeout ${TIMEOUT} s); its console ends:" >&2
    tail -n 40 "$work/console" >&2 || true
    cat "$work/qemu.log" >&2 || true
    return 3
  fi
  echo "refhost: guest done in $((SECONDS - start)) s (accel $a), script status $rc" >&2
  return "$rc"
}

case "${1:-}" in
  build) build ;;
  run) shift; run "$@" ;;
  path) [ -e "$IMAGE_DIR/done" ] && echo "$IMAGE_DIR" ;;
  clean) rm -rf --one-file-system "$CACHE"/bookworm-* "$CACHE"/.build.* ;;
  *) die "usage: refhost.sh build | run SCRIPT | path | clean" ;;
esac
