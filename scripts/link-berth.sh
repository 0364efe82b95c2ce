#!/bin/sh
# The linker cargo calls for x86_64-unknown-linux-gnu (set in .cargo/config.toml).
# It links the `berth` binary statically — glibc, libseccomp and libgcc_eh inside — and position-
# dependent, so that each create/start/exec (and the sealed re-exec every create, run and exec
# makes, see linux/exeseal.rs) needs no dynamic loader, no relocation pass and maps only the code it
# uses. Measured (berth run of /bin/true, interleaved with crun, 150 rounds; peak RSS of create):
#   dynamic PIE, opt-level 3   4.4 MB
#   static PIE,  opt-level z   7.64 ms  3.26 MB   (10,238 relative relocations applied per exec)
#   static,      opt-level z   7.26 ms  3.12 MB   crun: 9.89 ms, 3.3–3.4 MB
# The price: Berth's own code is at a fixed address (its heap, stack and mappings stay randomized);
# BERTH_PIE=1 links a static PIE instead, BERTH_DYNAMIC=1 the default dynamic PIE.
# rustc does static linking itself only with `--target x86_64-unknown-linux-gnu -C
# target-feature=+crt-static`, which would move the binary out of target/release/ and break
# proc-macros without --target. Every other link (build scripts, proc-macros, tests, the VM agent,
# fuzzers) goes to cc unchanged.
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
    -pie) if [ -n "$BERTH_PIE" ]; then a=-static-pie; else a=-no-pie; fi ;;
    -Wl,-Bdynamic) a=-Wl,-Bstatic ;; # libseccomp.a, libc.a, ... instead of the .so files
    -lgcc_s) a=-lgcc_eh ;;           # the static unwinder (panic=abort: only linked, never run)
    esac
    set -- "$@" "$a"
done
shift "$n"
[ -n "$BERTH_PIE" ] || set -- -static "$@"
exec cc "$@"
