#!/bin/bash
# AppArmor with Berth on the reference host (issue 15 part 4): `process.apparmorProfile` applied and
# enforced, an unloaded profile refused naming the field, `features` truthful, podman's default
# profile on a container Berth runs. Run alone (`scripts/refhost.sh run tests/refhost/apparmor.sh`)
# or sourced by install.sh (then with the installed berth). Prints PASS/FAIL lines (lib.sh).
set -u
BERTH=${BERTH:?BERTH: the berth binary to test}
here=${REFHOST_SHARE:-$(dirname "${BASH_SOURCE[0]}")/..}/refhost
# shellcheck source=tests/refhost/lib.sh
. "$here/lib.sh"
standalone=0
[ "${BASH_SOURCE[0]}" != "$0" ] || standalone=1

fact apparmor "enabled=$(cat /sys/module/apparmor/parameters/enabled 2>/dev/null), $(apparmor_parser --version 2>&1 | head -n1)"
check berth-features-apparmor '^true$' python3 -c '
import json, subprocess, sys
f = json.loads(subprocess.run([sys.argv[1], "features"], capture_output=True, check=True).stdout)
print(str(f["linux"]["apparmor"]["enabled"]).lower())' "$BERTH"

# A profile that allows everything but reading /secret (audited, so the denial is in the kernel log).
aa_dir=$(mktemp -d /root/apparmor.XXXXXX)
cat >"$aa_dir/berth-test-deny" <<'PROFILE'
abi <abi/3.0>,
#include <tunables/global>
profile berth-test-deny flags=(attach_disconnected,mediate_deleted) {
  #include <abstractions/base>
  file,
  capability,
  network,
  signal,
  unix,
  mount,
  umount,
  pivot_root,
  ptrace,
  audit deny /secret r,
}
PROFILE
check apparmor-load-test-profile '^loaded$' sh -c "apparmor_parser -r '$aa_dir/berth-test-deny' && echo loaded"

aab=$aa_dir/bundle
busybox_bundle "$aab"
echo top-secret >"$aab/rootfs/secret"
read_secret='echo label=$(cat /proc/self/attr/current); cat /secret 2>&1 || echo read-failed'
set_json "$aab/config.json" "c['process']['args'] = ['sh', '-c', '''$read_secret''']"

# Without a profile the container reads /secret ...
check apparmor-without-profile-reads 'top-secret' "$BERTH" run --bundle "$aab" aa-none
"$BERTH" delete --force aa-none >/dev/null 2>&1
# ... with the profile it runs confined by it (enforce) and the read is denied, by AppArmor.
set_json "$aab/config.json" "c['process']['apparmorProfile'] = 'berth-test-deny'"
log=$(mktemp)
timeout "$step_timeout" "$BERTH" run --bundle "$aab" aa-deny >"$log" 2>&1
sed 's/^/    | /' "$log"
if grep -q '^label=berth-test-deny (enforce)$' "$log" && grep -q 'Permission denied' "$log" \
  && grep -q read-failed "$log" && ! grep -q top-secret "$log"; then
  pass apparmor-profile-denies
else
  fail apparmor-profile-denies "the profile berth-test-deny did not confine the container or deny /secret"
fi
"$BERTH" delete --force aa-deny >/dev/null 2>&1
check apparmor-denial-logged 'apparmor="DENIED".*profile="berth-test-deny".*name="/secret"' \
  sh -c 'journalctl -k -q --no-pager 2>/dev/null | grep -a berth-test-deny || dmesg | grep -a berth-test-deny'

# exec into a confined container: the process gets the container's profile (as runc), or the one
# --apparmor names.
set_json "$aab/config.json" "c['process']['args'] = ['sleep', '300']"
if "$BERTH" run -d --bundle "$aab" aa-exec >/dev/null 2>&1; then
  pid=$("$BERTH" state aa-exec | python3 -c 'import json,sys; print(json.load(sys.stdin)["pid"])')
  check apparmor-init-label '^berth-test-deny \(enforce\)$' cat "/proc/$pid/attr/current"
  check apparmor-exec-inherits 'read-failed' "$BERTH" exec aa-exec sh -c "$read_secret"
  check apparmor-exec-flag 'label=unconfined' "$BERTH" exec --apparmor unconfined aa-exec sh -c 'echo label=$(cat /proc/self/attr/current)'
else
  fail apparmor-init-label "berth run -d of the confined container failed"
fi
"$BERTH" delete --force aa-exec >/dev/null 2>&1

# A profile that is not loaded: create fails naming the field, nothing is left.
set_json "$aab/config.json" "c['process']['apparmorProfile'] = 'berth-no-such-profile'; c['process']['args'] = ['true']"
refuse apparmor-missing-profile 'process.apparmorProfile.*berth-no-such-profile' "$BERTH" create --bundle "$aab" aa-missing
check apparmor-missing-profile-nothing-left '^gone$' sh -c "'$BERTH' state aa-missing >/dev/null 2>&1 && echo left || echo gone"
"$BERTH" delete --force aa-missing >/dev/null 2>&1

# podman with its default configuration and Berth as the runtime: podman's default profile (when
# sourced by install.sh, checked there with the runtime chosen by name).
if [ "$standalone" = 1 ] || ! podman image exists localhost/refhost-busybox:latest 2>/dev/null; then
  tar -C "$aab/rootfs" -cf "$aa_dir/busybox.tar" .
  podman import -q "$aa_dir/busybox.tar" localhost/refhost-busybox:latest >/dev/null 2>&1
fi
if [ "$standalone" = 0 ]; then
  :
elif cid=$(timeout "$step_timeout" podman --runtime "$BERTH" run -d localhost/refhost-busybox:latest sleep 300 2>&1); then
  pid=$(podman inspect --format '{{.State.Pid}}' "$cid")
  check podman-default-apparmor-profile '^containers-default-[0-9.]+ \(enforce\)$' cat "/proc/$pid/attr/current"
  podman rm -f -t 0 "$cid" >/dev/null 2>&1
else
  echo "    | $cid"
  fail podman-default-apparmor-profile "podman --runtime $BERTH run -d failed"
fi

apparmor_parser -R "$aa_dir/berth-test-deny" >/dev/null 2>&1
rm -rf "$aa_dir"
if [ "$standalone" = 1 ]; then summary APPARMOR; exit $?; fi
