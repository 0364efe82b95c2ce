#!/usr/bin/env bash
# Berth's guest kernel (docs/VM.md, "The guest kernel"): built from Debian's linux-source-6.1 with
# the patches in vm/kernel/patches/ (each says why) and the config fragment
# vm/kernel/berth-guest.config on top of `make tinyconfig`, and cached on this machine, keyed by
# the source package's version, the fragment and the patches (with this recipe's version).
#
#   scripts/guest-kernel.sh install   install the source package and the build dependencies (apt)
#   scripts/guest-kernel.sh build     build it unless the cache has it; prints the bzImage's path
#   scripts/guest-kernel.sh path      the cached bzImage's path (exit 1 if not built)
#   scripts/guest-kernel.sh key       the cache key: <source version>-<config hash>
#
# The cache: $BERTH_KERNEL_CACHE (default /var/cache/berth/kernel)/<key>/{bzImage,vmlinux,config,release}
# and a link `current` to the newest key, which is where Berth looks (vm/image.rs). `vmlinux` is the
# same kernel uncompressed (the ELF the bzImage carries, without symbols): under TCG Berth boots it
# through its PVH entry, which skips the decompressor. The build
# runs under a lock, in a scratch directory removed on success, failure or interrupt, at
# `nice -n 10 make -j$(nproc)` (the machine is shared), with the build's timestamp, user and host fixed
# so that the same source and config give the same kernel.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
fragment=$repo/vm/kernel/berth-guest.config
patches=$repo/vm/kernel/patches
tarball=/usr/src/linux-source-6.1.tar.xz
cache=${BERTH_KERNEL_CACHE:-/var/cache/berth/kernel}
# Bump when the steps below change what is built.
recipe=4
deps=(linux-source-6.1 bc bison flex libelf-dev libssl-dev make gcc binutils patch cpio xz-utils lz4 kmod)

die() { echo "guest-kernel: $*" >&2; exit 1; }

key() {
  local ver hash
  ver=$(dpkg-query -W -f='${Version}' linux-source-6.1 2>/dev/null) || die "linux-source-6.1 is not installed (scripts/guest-kernel.sh install)"
  hash=$( { echo "recipe $recipe"; cat "$fragment" "$patches"/*.patch; } | sha256sum | cut -c1-16)
  echo "$ver-$hash"
}

install_deps() {
  local missing=()
  for p in "${deps[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
}

build() {
  local k out scratch start
  k=$(key)
  out=$cache/$k
  mkdir -p "$cache"
  exec 9>"$cache/.lock"
  # Another build of the same machine holds it for at most the length of a build.
  flock -w 3600 9 || die "timed out waiting for $cache/.lock"
  if [ -f "$out/bzImage" ]; then
    ln -sfn "$k" "$cache/.current.tmp" && mv -T "$cache/.current.tmp" "$cache/current"
    echo "$out/bzImage"
    return 0
  fi
  [ -f "$tarball" ] || die "$tarball missing (scripts/guest-kernel.sh install)"
  scratch=$(mktemp -d "$cache/.build.XXXXXX")
  # shellcheck disable=SC2064
  trap "rm -rf '$scratch'" EXIT
  trap 'exit 130' INT TERM
  start=$(date +%s)
  echo "guest-kernel: building $k in $scratch (nice -n 10 make -j$(nproc))" >&2
  # Not the other architectures' sources nor the documentation's subdirectories (their Kconfig
  # files stay: crypto/Kconfig reads arch/*/crypto/Kconfig, the top Kconfig Documentation/Kconfig):
  # less to write. The xz stream must be read whole either way (one block: no parallel xz).
  local excl=(--exclude='linux-source-6.1/Documentation/*/*')
  local a
  for a in alpha arc arm arm64 csky hexagon ia64 loongarch m68k microblaze mips nios2 openrisc parisc powerpc riscv s390 sh sparc um xtensa; do
    excl+=(--exclude="linux-source-6.1/arch/$a/*.[chS]" --exclude="linux-source-6.1/arch/$a/*.dts*")
  done
  tar -xf "$tarball" -C "$scratch" --strip-components=1 "${excl[@]}"
  local src=$scratch p
  for p in "$patches"/*.patch; do
    patch -d "$src" -p1 --forward --batch --quiet <"$p" || die "$p does not apply to $(basename "$tarball")"
  done
  # The source tarball's date (dpkg sets it from the package), so the banner is the same on every
  # machine for one source version.
  KBUILD_BUILD_TIMESTAMP=$(date -u -d "@$(stat -c %Y "$tarball")" '+%Y-%m-%d %H:%M:%S UTC')
  export KBUILD_BUILD_TIMESTAMP KBUILD_BUILD_USER=berth KBUILD_BUILD_HOST=berth KBUILD_BUILD_VERSION=1
  local mk=(nice -n 10 make -C "$src" -s ARCH=x86_64 -j"$(nproc)")
  "${mk[@]}" tinyconfig >/dev/null
  (cd "$src" && KCONFIG_CONFIG=.config scripts/kconfig/merge_config.sh -m .config "$fragment" >/dev/null)
  "${mk[@]}" olddefconfig >/dev/null
  # Every line of the fragment must hold in the result (a symbol whose dependencies are missing
  # is dropped silently by Kconfig): the fragment's comments say what the kernel has.
  local bad=0 line sym
  while IFS= read -r line; do
    case $line in
      CONFIG_*=*) grep -qxF "$line" "$src/.config" || { echo "guest-kernel: $line did not hold: $(grep -E "^(# )?${line%%=*}[= ]" "$src/.config" || echo unset)" >&2; bad=1; } ;;
      "# CONFIG_"*" is not set") sym=${line#\# }; sym=${sym%% *}; grep -q "^$sym=" "$src/.config" && { echo "guest-kernel: $sym is set" >&2; bad=1; } ;;
    esac
  done <"$fragment"
  [ $bad -eq 0 ] || die "the config fragment does not hold (see above)"
  "${mk[@]}" bzImage
  mkdir -p "$scratch/out"
  cp "$src/arch/x86/boot/bzImage" "$scratch/out/bzImage"
  # What the bzImage compresses (arch/x86/boot/compressed/Makefile: vmlinux.bin), as a file:
  # the ELF with its PVH note, no symbols.
  objcopy -R .comment -S "$src/vmlinux" "$scratch/out/vmlinux"
  cp "$src/.config" "$scratch/out/config"
  "${mk[@]}" kernelrelease >"$scratch/out/release"
  echo "$(($(date +%s) - start))" >"$scratch/out/build-seconds"
  rm -rf "$out"
  mv -T "$scratch/out" "$out"
  ln -sfn "$k" "$cache/.current.tmp" && mv -T "$cache/.current.tmp" "$cache/current"
  echo "guest-kernel: built $(cat "$out/release") in $(cat "$out/build-seconds")s" >&2
  echo "$out/bzImage"
}

case ${1:-} in
  install) install_deps ;;
  build) build ;;
  path) k=$(key); [ -f "$cache/$k/bzImage" ] || die "not built (scripts/guest-kernel.sh build)"; echo "$cache/$k/bzImage" ;;
  key) key ;;
  *) echo "usage: $0 install|build|path|key" >&2; exit 2 ;;
esac
