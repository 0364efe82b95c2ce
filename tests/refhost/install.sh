#!/bin/bash
# Berth installed as a user installs it, on the reference host (issue 15 part 5), and AppArmor
# (part 4, apparmor.sh, run here with the installed berth):
#   scripts/refhost.sh run tests/refhost/install.sh
# scripts/install.sh (in the share as install.sh) installs the binaries built on the host (--from
# the share's bin/) into /usr/local with the podman, docker and containerd registrations; the
# engines, in their default configuration otherwise, run containers with the runtime selected by
# name; then --uninstall must leave the host as it was. PASS/FAIL lines (lib.sh); the last line
# is `INSTALL passed=N failed=N`.
# shellcheck disable=SC2016,SC2012,SC2034 # single-quoted scripts for sh -c; BERTH is read by apparmor.sh
set -u
S=${REFHOST_SHARE:?REFHOST_SHARE: the share}
# shellcheck source=tests/refhost/lib.sh
. "$S/refhost/lib.sh"

snapshot() { # what exists of the paths an install touches, with checksums
  for p in /usr/local/bin /usr/local/lib /usr/local/share/man /usr/local/share/bash-completion \
    /usr/local/share/zsh /usr/local/share/fish /etc/containers /etc/docker /etc/containerd; do
    [ -e "$p" ] && find "$p" -xdev \( -type f -printf '%p ' -exec sha256sum {} \; -o -printf '%p %y\n' \) 2>/dev/null
  done | grep -v '^/etc/docker/key.json ' | sort # key.json: dockerd's own, made on its first start
}
before=$(snapshot)
fact share "$(ls "$S/bin" | tr '\n' ' ')"

check install "Berth installed in /usr/local" bash "$S/install.sh" --from "$S/bin" --podman --docker --containerd-imports
check install-path '^/usr/local/bin/berth$' sh -c 'command -v berth'
if [ -e "$S/bin/berth-guest" ]; then
  check install-agent '^/usr/local/lib/berth/berth-guest$' sh -c 'ls /usr/local/lib/berth/berth-guest'
fi
check install-man '\.TH berth-run 8' sh -c 'zcat -f "$(man -w berth-run 2>/dev/null || echo /usr/local/share/man/man8/berth-run.8)"'
check install-bash-completion '^exec$' bash -c '. /usr/local/share/bash-completion/completions/berth; COMP_WORDS=(berth ex); COMP_CWORD=1; _berth berth ex berth; echo "${COMPREPLY[@]}"'
check install-zsh-fish-completion 'complete -c berth' sh -c 'head -n1 /usr/local/share/zsh/site-functions/_berth; grep -m1 "complete -c berth" /usr/local/share/fish/vendor_completions.d/berth.fish'

# AppArmor (part 4) with the installed berth.
BERTH=/usr/local/bin/berth
# shellcheck source=tests/refhost/apparmor.sh
. "$S/refhost/apparmor.sh"
image=localhost/refhost-busybox:latest

# podman, default configuration plus the drop-in: the runtime by name, systemd cgroup manager.
check podman-runtime-by-name '^berth-by-name$' podman --runtime berth run --rm --memory 64m "$image" echo berth-by-name
if cid=$(timeout "$step_timeout" podman --runtime berth run -d --memory 64m "$image" sleep 300 2>&1); then
  check podman-runtime-is-berth '^berth$' podman inspect --format '{{.OCIRuntime}}' "$cid"
  check podman-conmon-runs-berth '-r /usr/local/bin/berth' sh -c "ps -eo args | grep '^/usr/bin/conmon' | grep -- '$cid'"
  pid=$(podman inspect --format '{{.State.Pid}}' "$cid")
  check podman-by-name-apparmor '^containers-default-[0-9.]+ \(enforce\)$' cat "/proc/$pid/attr/current"
  check podman-by-name-memory '^67108864$' sh -c "cat /sys/fs/cgroup\$(cut -d: -f3 /proc/$pid/cgroup)/memory.max"
  podman rm -f -t 0 "$cid" >/dev/null 2>&1
else
  echo "    | $cid"
  fail podman-runtime-is-berth "podman --runtime berth run -d failed"
fi

# docker (docker.socket starts dockerd, which reads the merged daemon.json): docker's default
# AppArmor profile on a container Berth runs.
check docker-runtime-registered '"berth"' docker info --format '{{json .Runtimes}}'
tmpb=$(mktemp -d /root/dbundle.XXXXXX)
busybox_bundle "$tmpb" >/dev/null
tar -C "$tmpb/rootfs" -cf /root/busybox-docker.tar .
rm -rf "$tmpb"
check docker-import '^sha256:' docker import /root/busybox-docker.tar refhost-busybox:latest
if cid=$(timeout "$step_timeout" docker run -d --runtime berth --network none refhost-busybox:latest sleep 300 2>&1); then
  check docker-runtime-is-berth '^berth$' docker inspect --format '{{.HostConfig.Runtime}}' "$cid"
  pid=$(docker inspect --format '{{.State.Pid}}' "$cid")
  check docker-default-apparmor-profile '^docker-default \(enforce\)$' cat "/proc/$pid/attr/current"
  check docker-exec 'docker-exec-ok' docker exec "$cid" echo docker-exec-ok
  docker rm -f "$cid" >/dev/null 2>&1
else
  echo "    | $cid"
  fail docker-runtime-is-berth "docker run --runtime berth failed"
fi

# containerd: the imported drop-in gives the CRI plugin a runtime handler `berth`.
check containerd-handler 'BinaryName = "/usr/local/bin/berth"' sh -c 'containerd config dump 2>/dev/null | grep -A12 "runtimes.berth.options\]"'
check containerd-handler-systemd 'SystemdCgroup = true' sh -c 'containerd config dump 2>/dev/null | grep -A12 "runtimes.berth.options\]"'
check containerd-starts '^active$' sh -c 'systemctl start containerd && systemctl is-active containerd'
docker save refhost-busybox:latest >/root/busybox-image.tar 2>/dev/null
check containerd-ctr-import 'refhost-busybox' ctr -n berth-install images import /root/busybox-image.tar
check containerd-ctr-berth '^ctr-berth-ok$' ctr -n berth-install run --rm --runc-binary /usr/local/bin/berth \
  docker.io/library/refhost-busybox:latest ctr-berth echo ctr-berth-ok
docker rmi -f refhost-busybox:latest >/dev/null 2>&1

# Uninstall: the engines no longer know berth and the host is as it was.
check uninstall 'Berth uninstalled' bash "$S/install.sh" --uninstall
refuse podman-runtime-gone 'berth' podman --runtime berth run --rm "$image" true
after=$(snapshot)
if [ "$before" = "$after" ]; then
  pass uninstall-leaves-host-as-it-was
else
  diff <(echo "$before") <(echo "$after") | sed 's/^/    | /'
  fail uninstall-leaves-host-as-it-was "the host's files differ after --uninstall"
fi
echo "FACT install-checks: $SECONDS s"
summary INSTALL
