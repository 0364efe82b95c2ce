#!/usr/bin/env bash
# The whole test suite, as root, on a fresh Debian 12 machine:
#   ./scripts/test.sh             install what the tests need (if missing), build the static VM
#                                 guest agent, and run `cargo test --workspace`
#   ./scripts/test.sh --install   only install what the tests need
# Extra arguments after the options go to `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."
need=()
command -v busybox >/dev/null || need+=(busybox-static)
command -v cc >/dev/null || need+=(build-essential)
command -v pkg-config >/dev/null || need+=(pkg-config)
[ -e /usr/include/seccomp.h ] || need+=(libseccomp-dev)
# Terminal tests (tmux) and rootless/user-namespace tests (newuidmap).
command -v tmux >/dev/null || need+=(tmux)
command -v newuidmap >/dev/null || need+=(uidmap)
# The pure cgroup v2 run (tests/cgroups_v2_vm.rs) and VM containers (tests/vm.rs) boot this kernel
# under qemu; virtiofsd (built with cargo) needs libcap-ng.
command -v qemu-system-x86_64 >/dev/null || need+=(qemu-system-x86)
command -v cpio >/dev/null || need+=(cpio)
ls /boot/vmlinuz-*-cloud-amd64 >/dev/null 2>&1 || need+=(linux-image-cloud-amd64)
dpkg -s libcap-ng-dev >/dev/null 2>&1 || need+=(libcap-ng-dev)
# vm.image tests: an ext4 image from a rootfs (mkfs.ext4 -d, debugfs) converted to qcow2 (qemu-img).
command -v qemu-img >/dev/null || need+=(qemu-utils)
command -v debugfs >/dev/null || need+=(e2fsprogs)
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
command -v virtiofsd >/dev/null || cargo install --quiet --root /usr/local virtiofsd
[ "${1:-}" = --install ] && exit 0
# The VM guest agent, static (Berth finds it under target/x86_64-unknown-linux-gnu/release/).
LIBSECCOMP_LINK_TYPE=static LIBSECCOMP_LIB_PATH=/usr/lib/x86_64-linux-gnu RUSTFLAGS='-C target-feature=+crt-static' cargo build --quiet --release -p berth-guest --target x86_64-unknown-linux-gnu
exec cargo test --workspace "$@"
