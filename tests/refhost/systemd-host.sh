#!/bin/bash
# Berth on the reference host as its users run it (issue 15 parts 3 and 4), run inside it by
# `scripts/refhost.sh run tests/refhost/systemd-host.sh` (tests/refhost.rs does, in CI):
#   - rootless podman with its default configuration (the systemd cgroup manager through the
#     user's bus), as an unprivileged user with a systemd user session (loginctl enable-linger):
#     run, --memory, --pids-limit, exec, stats, pause/unpause, rm;
#   - dockerd on its defaults (the systemd cgroup driver) with Berth added in daemon.json, and
#     containerd's CRI plugin with SystemdCgroup = true (kubeadm's setting) with a `berth` handler
#     (when the share carries engines/cri-client as bin/cri-client): a container with a memory limit,
#     exec, stop and rm, each against Berth;
#   - tests/cgroups.rs under both drivers when the share carries its test binary as bin/cgroups
#     (CGROUPS_FILTER: the tests to run, libtest's filter; default: all).
# Output lines as smoke.sh's (tests/refhost/lib.sh); exit 1 when a must fails.
set -u
BERTH=${BERTH:?BERTH: the berth binary to test}
share=${REFHOST_SHARE:-/mnt/share}
# shellcheck source=tests/refhost/lib.sh
. "$share/refhost/lib.sh"
work=$(pwd)
# (readable by the rootless user: the working directory is root's)
tarball=$(mktemp /tmp/busybox.XXXXXX.tar)
busybox_tar "$tarball"
chmod 0644 "$tarball"

# ---- Rootless podman (the user's systemd manager, cgroup v2 delegation). ----
user=berthrl
useradd -m -s /bin/bash "$user"
uid=$(id -u "$user")
loginctl enable-linger "$user"
for _ in $(seq 120); do [ -S "/run/user/$uid/bus" ] && systemctl is-active -q "user@$uid.service" && break; sleep 0.5; done
fact rootless "user $user uid $uid, $(grep "^$user:" /etc/subuid), user@$uid.service $(systemctl is-active "user@$uid.service"), delegated: $(cat "/sys/fs/cgroup/user.slice/user-$uid.slice/user@$uid.service/cgroup.controllers" 2>/dev/null)"
# U COMMAND...: as the user in a session, with the environment a login gives (pam_systemd sets
# both). A script, not a function: `check` runs it under timeout(1).
cat >/usr/local/bin/U <<W
#!/bin/sh
cd /home/$user && exec runuser -u $user -- env XDG_RUNTIME_DIR=/run/user/$uid DBUS_SESSION_BUS_ADDRESS=unix:path=/run/user/$uid/bus "\$@"
W
chmod 755 /usr/local/bin/U
fact rootless-podman "$(U podman info -f 'cgroup manager {{.Host.CgroupManager}}, cgroups {{.Host.CgroupsVersion}}, rootless {{.Host.Security.Rootless}}' 2>&1)"
check rootless-podman-default-cgroup-manager '^cgroup manager systemd' U podman info -f 'cgroup manager {{.Host.CgroupManager}}'
check rootless-podman-import '^sha256:|^[0-9a-f]{64}$' U podman import -q "$tarball" localhost/rl-busybox:latest
img=localhost/rl-busybox:latest
out=$(mktemp)
# shellcheck disable=SC2016 # expanded inside the container
timeout "$step_timeout" U podman --runtime "$BERTH" run --rm --memory 64m --pids-limit 50 "$img" \
  sh -c 'echo rootless-ok; echo "memory.max $(cat /sys/fs/cgroup/memory.max)"; echo "pids.max $(cat /sys/fs/cgroup/pids.max)"; echo "uid_map $(cat /proc/self/uid_map)"' >"$out" 2>&1
status=$?
sed 's/^/    | /' "$out"
check rootless-podman-run '^rootless-ok$' sh -c "[ $status = 0 ] && cat '$out'"
check rootless-podman-memory '^memory.max 67108864$' cat "$out"
check rootless-podman-pids '^pids.max 50$' cat "$out"
rm -f "$out"
cid=$(timeout "$step_timeout" U podman --runtime "$BERTH" run -d --memory 64m --pids-limit 50 "$img" sleep 600 2>&1)
echo "$cid" | sed 's/^/    | /'
echo "$cid" | grep -qxE '[0-9a-f]{64}' || cid=none
mgr=/user.slice/user-$uid.slice/user@$uid.service
check rootless-podman-unit "^active yes 67108864 50 $mgr/user.slice/libpod-[0-9a-f]{64}.scope\$" \
  sh -c "u=libpod-$cid.scope; echo \$(U systemctl --user show -P ActiveState \$u) \$(U systemctl --user show -P Delegate \$u) \$(U systemctl --user show -P MemoryMax \$u) \$(U systemctl --user show -P TasksMax \$u) \$(U systemctl --user show -P ControlGroup \$u)"
check rootless-podman-files '^67108864 50$' sh -c "echo \$(cat /sys/fs/cgroup$mgr/user.slice/libpod-$cid.scope/memory.max) \$(cat /sys/fs/cgroup$mgr/user.slice/libpod-$cid.scope/pids.max)"
check rootless-podman-exec '^exec-ok$' U podman exec "$cid" echo exec-ok
check rootless-podman-stats ' / 67\.[0-9]+MB$' U podman stats --no-stream --format '{{.MemUsage}}' "$cid"
check rootless-podman-pause '^paused running$' sh -c "U podman pause $cid >/dev/null && s1=\$(U podman inspect -f '{{.State.Status}}' $cid) && U podman unpause $cid >/dev/null && echo \$s1 \$(U podman inspect -f '{{.State.Status}}' $cid)"
timeout "$step_timeout" U podman rm -f -t 0 "$cid" >/dev/null 2>&1
check rootless-podman-unit-gone '^not-found$' U systemctl --user show -P LoadState "libpod-$cid.scope"
U podman rmi -f "$img" >/dev/null 2>&1
loginctl disable-linger "$user"

# ---- dockerd with its defaults (systemd cgroup driver), Berth added in daemon.json. ----
# The image for docker and containerd: podman's docker-archive of the busybox rootfs.
podman import -q "$tarball" localhost/bb:latest >/dev/null && podman save -q --format docker-archive -o "$work/image.tar" localhost/bb:latest
mkdir -p /etc/docker
printf '{\n  "runtimes": { "berth": { "path": "%s" } }\n}\n' "$BERTH" >/etc/docker/daemon.json
t0=$SECONDS
if timeout "$step_timeout" systemctl restart docker && docker load -q -i "$work/image.tar" >/dev/null; then
  fact docker "$(docker info -f 'cgroup driver {{.CgroupDriver}}, cgroup v{{.CgroupVersion}}') (started in $((SECONDS - t0)) s)"
  dcid=$(timeout "$step_timeout" docker run -d --runtime berth --memory 64m localhost/bb:latest sleep 600 2>&1)
  echo "$dcid" | sed 's/^/    | /'
  check docker-default-memory '^67108864 system.slice/docker-[0-9a-f]{64}.scope$' \
    sh -c "d=system.slice/docker-$dcid.scope; echo \$(cat /sys/fs/cgroup/\$d/memory.max) \$d"
  check docker-default-exec '^exec-ok$' docker exec "$dcid" echo exec-ok
  check docker-default-stop '^137$|^143$' sh -c "docker stop -t 1 $dcid >/dev/null && docker inspect -f '{{.State.ExitCode}}' $dcid"
  check docker-default-rm '^gone$' sh -c "docker rm $dcid >/dev/null && ! systemctl is-active -q docker-$dcid.scope && [ ! -e /sys/fs/cgroup/system.slice/docker-$dcid.scope ] && echo gone"
else
  fail docker-default-start "dockerd did not start or load the image"
fi
systemctl stop docker docker.socket >/dev/null 2>&1

# ---- containerd's CRI plugin as kubeadm configures it (SystemdCgroup = true), a berth handler. ----
if [ -x "$share/bin/cri-client" ]; then
  containerd config default | sed 's/SystemdCgroup = false/SystemdCgroup = true/' >/etc/containerd/config.toml
  cat >>/etc/containerd/config.toml <<C

[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.berth]
  runtime_type = "io.containerd.runc.v2"
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.berth.options]
    BinaryName = "$BERTH"
    Root = "/run/berth"
    SystemdCgroup = true
C
  pause=$(sed -n 's/^ *sandbox_image = "\(.*\)"/\1/p' /etc/containerd/config.toml)
  podman import -q --change 'ENTRYPOINT ["/bin/sleep","infinity"]' "$tarball" localhost/pause:latest >/dev/null &&
    podman save -q --format docker-archive -o "$work/pause.tar" localhost/pause:latest
  systemctl restart containerd
  for _ in $(seq 50); do ctr version >/dev/null 2>&1 && break; sleep 0.2; done
  ctr -n k8s.io image import "$work/image.tar" >/dev/null && ctr -n k8s.io image import "$work/pause.tar" >/dev/null &&
    ctr -n k8s.io image tag localhost/pause:latest "$pause" >/dev/null
  mkdir -p "$work/cri-logs"
  t0=$SECONDS
  timeout 300 "$share/bin/cri-client" --socket /run/containerd/containerd.sock --handler berth --image localhost/bb:latest \
    --cgroup-parent kubepods.slice --log-dir "$work/cri-logs" --runtime-root /run/berth >"$work/cri.out" 2>"$work/cri.err"
  sed 's/^/    | /' "$work/cri.out"
  tail -n 3 "$work/cri.err" | sed 's/^/    | /'
  fact cri "containerd $(containerd --version | awk '{print $3}') SystemdCgroup = true, handler berth: $((SECONDS - t0)) s"
  for step in run_pod_sandbox start_container container_stats update_resources stop_container remove_container remove_pod_sandbox; do
    check "cri-systemd-$step" "^cri_$step pass" grep "^cri_$step " "$work/cri.out"
  done
else
  echo "SKIP cri: no bin/cri-client in the share (build engines/cri-client; REFHOST_SHARE_BIN)"
fi

# ---- tests/cgroups.rs with each driver. ----
if [ -x "$share/bin/cgroups" ]; then
  for driver in cgroupfs systemd; do
    sd=0; [ $driver = systemd ] && sd=1
    t0=$SECONDS
    # shellcheck disable=SC2086 # the filter is a list of libtest arguments
    BERTH_TEST_RUNTIME=$BERTH BERTH_TEST_SYSTEMD_CGROUP=$sd timeout 600 "$share/bin/cgroups" --test-threads 2 ${CGROUPS_FILTER:-} >"$work/cg-$driver.out" 2>&1
    st=$?
    grep -E -A4 '^test .* FAILED$|^SKIP|panicked|^test result' "$work/cg-$driver.out" | sed 's/^/    | /'
    fact "cgroups-$driver" "$(grep '^test result' "$work/cg-$driver.out") in $((SECONDS - t0)) s"
    check "cgroups-tests-$driver" '^test result: ok' sh -c "[ $st = 0 ] && cat '$work/cg-$driver.out'"
  done
else
  echo "SKIP cgroups: no bin/cgroups in the share (cargo test --release --test cgroups --no-run; REFHOST_SHARE_BIN)"
fi

rm -f "$tarball"
echo "SYSTEMD-HOST passed=$passed failed=$failed known-failures=$known"
[ "$failed" = 0 ]
