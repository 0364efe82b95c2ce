#!/bin/bash
# The engines suite (engines/run.sh) on the reference host, every engine with its default
# configuration (ENGINES_CONFIG=default: podman's cgroup_manager systemd, the system dockerd on its
# systemd cgroup driver, the system containerd, the CRI plugin with SystemdCgroup = true), runc
# and Berth side by side. Run by hand (it takes long under TCG; docs/REFHOST.md):
#   cargo build --release
#   cargo build --manifest-path engines/cri-client/Cargo.toml --target-dir target/cri-client
#   REFHOST_TIMEOUT=5400 REFHOST_SHARE_BIN=target/cri-client/debug/cri-client \
#     scripts/refhost.sh run tests/refhost/engines.sh
# ENGINES (default: podman containerd docker cri) and ONLY may be set by a wrapper script that
# sources this one. Exit status: engines/run.sh's (non-zero when Berth fails a cell runc passes).
set -u
share=${REFHOST_SHARE:-/mnt/share}
# run.sh finds its files beside itself; the share is read-only, which is all it needs.
export ENGINES_CONFIG=default BERTH
[ -x "$share/bin/cri-client" ] && export CRI_CLIENT=$share/bin/cri-client
echo "FACT engines: podman $(podman version -f '{{.Client.Version}}') ($(podman info -f '{{.Host.CgroupManager}}')), containerd $(containerd --version | awk '{print $3}'), $(docker --version 2>/dev/null), runc $(runc --version | awk 'NR==1{print $3}')"
start=$SECONDS
# shellcheck disable=SC2086 # ENGINES is a list
bash "$share/engines/run.sh" ${ENGINES:-podman containerd docker cri}
rc=$?
echo "ENGINES-TIME $((SECONDS - start)) s"
exit $rc
