#!/bin/sh
# The linker cargo calls for x86_64-unknown-linux-gnu (set in .cargo/config.toml).
# It links the `berth` binary as a static PIE — glibc, libseccomp and libgcc_eh inside, still
# loaded at a random address — so that create/start/exec need no dynamic loader, no symbol
# relocation of shared libraries, and map only the library code they use. Measured on `berth
# create` (bench/bench.py): peak RSS 4.4 MB dynamic → 3.1 MB static; `state` 1.4 → 0.4 ms.
# rustc does this itself only with `--target x86_64-unknown-linux-gnu -C target-feature=+crt-static`,
# which would move the binary out of target/release/ and break proc-macros without --target.
# Every other link (build scripts, proc-macros, tests, the VM agent, fuzzers) goes to cc unchanged.
# BERTH_DYNAMIC=1 links berth dynamically too.
out=
prev=
for a in "$@"; do
    [ "$prev" = -o ] && out=$a
    prev=$a
done
case "$out" in
*/deps/berth-*) [ -z "$BERTH_DYNAMIC" ] || exec cc "$@" ;;
*) exec cc "$@" ;;
esac
n=$#
for a in "$@"; do
    case "$a" in
    -pie) a=-static-pie ;;           # rcrt1.o: the binary relocates itself, no ld.so
    -Wl,-Bdynamic) a=-Wl,-Bstatic ;; # libseccomp.a, libc.a, ... instead of the .so files
    -lgcc_s) a=-lgcc_eh ;;           # the static unwinder (panic=abort: only linked, never run)
    esac
    set -- "$@" "$a"
done
shift "$n"
exec cc "$@"
