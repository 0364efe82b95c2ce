#!/usr/bin/env bash
# Quick start on a fresh Debian 12 machine (as root): install what Berth needs (busybox, a C
# toolchain, pkg-config and libseccomp-dev), build it, make a
# busybox bundle and run a container in it that prints a greeting.
#   ./scripts/quickstart.sh
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v busybox >/dev/null || ! command -v cc >/dev/null || ! command -v pkg-config >/dev/null \
  || [ ! -e /usr/include/seccomp.h ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq busybox-static build-essential pkg-config libseccomp-dev >/dev/null
fi
if ! command -v cargo >/dev/null; then
  echo "quickstart: needs a Rust toolchain (cargo): install it with rustup or 'apt-get install cargo'" >&2
  exit 2
fi
cargo build --release -q
berth=$(pwd)/target/release/berth
bundle=$(mktemp -d /tmp/berth-quickstart.XXXXXX)
trap 'rm -rf "$bundle"' EXIT
mkdir -p "$bundle/rootfs/bin"
cp "$(command -v busybox)" "$bundle/rootfs/bin/busybox"
for applet in $("$bundle/rootfs/bin/busybox" --list); do
  [ "$applet" = busybox ] || ln -s busybox "$bundle/rootfs/bin/$applet"
done
cd "$bundle"
"$berth" spec
# `berth spec` makes an interactive shell; for this demo: no terminal, print and leave.
sed -i 's/"terminal": true/"terminal": false/; s|^\( *\)"sh"$|\1"sh", "-c", "echo Hello from a Berth container: host $(hostname), pid $$; id"|' config.json
"$berth" run "quickstart-$$"
