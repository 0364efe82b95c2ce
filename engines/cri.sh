# The Kubernetes CRI path (sourced by engines/run.sh): containerd with its CRI plugin on, runtime
# handlers `runc` and `berth` (both the runc shim, io.containerd.runc.v2, with BinaryName and Root),
# and engines/cri-client driving one pod per handler the way the kubelet does: a sandbox (pause)
# container plus a workload container, through Version, RunPodSandbox, ImageStatus, CreateContainer,
# StartContainer, ContainerStatus, ExecSync, ContainerStats, UpdateContainerResources,
# StopContainer, RemoveContainer, StopPodSandbox and RemovePodSandbox (and a second container, and
# what the pod's containers share: the kernel's boot id, localhost, the pod IP from the host).
# Each step is a row (cri_<step>) of the matrix. No registry: local images, the pause image built
# here. Pod network: a CNI bridge (Debian's containernetworking-plugins) with host-local addresses,
# all state in the temp dir; without the plugins, pods use the host network.

# Builds the CRI client (its own cargo project; needs protoc for the k8s-cri bindings), unless
# CRI_CLIENT names a built one.
cri_client() {
  if [ -n "${CRI_CLIENT:-}" ]; then [ -x "$CRI_CLIENT" ]; return; fi
  command -v protoc >/dev/null || apt-get install -y -qq protobuf-compiler >/dev/null || return 1
  local t0=$SECONDS
  cargo build -q --manifest-path "$HERE/cri-client/Cargo.toml" --target-dir "$REPO/target/cri-client" || return 1
  echo "  (cri-client built in $((SECONDS - t0)) s)"
  CRI_CLIENT=$REPO/target/cri-client/debug/cri-client
}

# Stops what the pods left (tasks, containers), the daemon and its shims; unmounts the sandboxes'
# /dev/shm; removes the pods' cgroups.
cri_cleanup() {
  local D=$1 pid=$2 ctr="ctr -a $1/sock -n k8s.io" c p
  if [ -S "$D/sock" ]; then
    for c in $($ctr t ls -q 2>/dev/null); do $ctr t kill -s SIGKILL "$c"; done
    sleep 0.5
    for c in $($ctr c ls -q 2>/dev/null); do $ctr t rm -f "$c"; $ctr c rm "$c"; done
  fi
  kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null
  # shims of this daemon only (their command line names its socket)
  for p in /proc/[0-9]*; do
    case "$(tr '\0' ' ' < "$p/cmdline" 2>/dev/null)" in *" -address $D/sock "*) kill -9 "${p#/proc/}" ;; esac
  done
  grep " $D" /proc/mounts | awk '{print $2}' | sort -r | while read -r m; do umount -l "$m"; done
  find /sys/fs/cgroup -maxdepth 2 -type d -name "$CRI_CGROUP" -exec find {} -depth -type d -exec rmdir {} + \; 2>/dev/null
  # libcni's cache of this network's results (its dirs go only if empty)
  rm -f /var/lib/cni/results/berth-cri-*; rmdir /var/lib/cni/results /var/lib/cni 2>/dev/null
  true
}

engine_cri() {
  local D=$T/cri
  mkdir -p "$D/logs"
  cri_client || return 1
  # The images: the busybox image, and a pause image (the same rootfs, sleeping forever).
  ensure_image_tar || return 1
  if [ ! -f "$T/pause.tar" ]; then
    podman import --change 'ENTRYPOINT ["/bin/sleep","infinity"]' "$T/rootfs.tar" localhost/pause:latest >/dev/null 2>&1 &&
      podman save --format docker-archive -o "$T/pause.tar" localhost/pause:latest >/dev/null 2>&1 || return 1
  fi
  if [ -n "${DEFAULTS:-}" ]; then engine_cri_default; return; fi
  CRI_CGROUP=berth-cri-$$
  # The pod network: a bridge of its own, addresses from a /24 no one here uses, no masquerading.
  local CNI_BIN=/usr/lib/cni net=()
  mkdir -p "$D/cni/conf"
  if [ -x $CNI_BIN/bridge ] && [ -x $CNI_BIN/host-local ] && [ -x $CNI_BIN/loopback ]; then
    cat > "$D/cni/conf/10-berth-cri.conflist" <<J
{"cniVersion": "1.0.0", "name": "berth-cri", "plugins": [
  {"type": "bridge", "bridge": "berthcri0", "isGateway": true, "ipMasq": false,
   "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.213.77.0/24"}]], "dataDir": "$D/cni/ipam"}}]}
J
    net=(--pod-gateway 10.213.77.1)
  else
    echo "  (no CNI plugins in $CNI_BIN: pods use the host network)"
  fi
  local h handlers=""
  # berth-vm: Berth run through a link named berth-vm (VM containers by default: the Kubernetes
  # RuntimeClass way, stock containerd configuration): the pod runs in one VM on the pod's network,
  # booted by the sandbox, its workload containers joining it (docs/VM.md, "Kubernetes", "Pods in
  # one VM"). Only where VM containers can run (qemu, the guest
  # kernel); not compared with runc. (`CRI_VM_BY_ANNOTATION=1`: Berth's own name, and the pod
  # annotation run.berth.isolation=vm passed through by containerd instead.)
  local cri_handlers="runc berth"
  if [ -z "${CRI_NO_VM:-}" ] && command -v qemu-system-x86_64 >/dev/null && ls /boot/vmlinuz-*-cloud-amd64 >/dev/null 2>&1; then
    cri_handlers+=" berth-vm"
  fi
  # CRI_HANDLERS="berth-vm" (say): only those handlers' columns (all stay configured).
  local run_handlers=${CRI_HANDLERS:-$cri_handlers}
  for h in $cri_handlers; do
    local bin=$RUNC pa=""; [ $h = berth ] && bin=$BERTH
    if [ $h = berth-vm ]; then
      if [ -n "${CRI_VM_BY_ANNOTATION:-}" ]; then
        bin=$BERTH pa="
  pod_annotations = [\"run.berth.isolation\"]"
      else
        ln -sf "$BERTH" "$D/berth-vm" && bin=$D/berth-vm
      fi
    fi
    handlers+="
[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.$h]
  runtime_type = \"io.containerd.runc.v2\"$pa
  [plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.$h.options]
    BinaryName = \"$bin\"
    Root = \"$D/$h-root\"
    SystemdCgroup = false"
  done
  containerd_base_config "$D" "" > "$D/config.toml"
  cat >> "$D/config.toml" <<C
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "localhost/pause:latest"
  restrict_oom_score_adj = true
  systemd_cgroup = false
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  netns_mounts_under_state_dir = true
[plugins."io.containerd.grpc.v1.cri".cni]
  bin_dir = "$CNI_BIN"
  conf_dir = "$D/cni/conf"
[plugins."io.containerd.grpc.v1.cri".containerd]
  default_runtime_name = "runc"
$handlers
C
  containerd --config "$D/config.toml" > "$D/log" 2>&1 &
  local pid=$!
  CLEANUPS+=("cri_cleanup $D $pid")
  local i; for i in $(seq 50); do [ -S "$D/sock" ] && break; sleep 0.2; done
  local ctr="ctr -a $D/sock -n k8s.io"
  $ctr image import "$T/image.tar" >/dev/null && $ctr image import "$T/pause.tar" >/dev/null || return 1
  for h in $run_handlers; do
    local t0=$SECONDS extra=()
    [ $h = berth-vm ] && [ -n "${CRI_VM_BY_ANNOTATION:-}" ] && extra=(--pod-annotation run.berth.isolation=vm)
    mkdir -p "$D/logs/$h"
    timeout 300 "$CRI_CLIENT" --socket "$D/sock" --handler $h --image "$IMG" --cgroup-parent "/$CRI_CGROUP" \
      --log-dir "$D/logs/$h" --runtime-root "$D/$h-root" "${net[@]}" "${extra[@]}" > "$D/$h.out" 2> "$D/$h.err"
    [ -s "$D/$h.out" ] || echo "cri_version fail no output: $(tail -3 "$D/$h.err")" > "$D/$h.out"
    local step r detail
    while read -r step r detail; do
      echo "cri $step $h $r" >> "$RESULTS"
      printf '  %-10s %-22s %-6s %-4s %s\n' cri "$step" "$h" "$r" "$detail"
    done < "$D/$h.out"
    echo "  (cri/$h: $((SECONDS - t0)) s)"
  done
  [ -n "${VERBOSE:-}" ] && grep -i "level=error" "$D/log" | tail -20
  return 0
}

# The host's containerd with the CRI plugin configured as kubeadm's guide does it: `containerd config
# default`, then `SystemdCgroup = true` for the runc handler; Berth is a second handler `berth` with
# the same options (BinaryName, Root /run/berth) as docs/ENGINES.md shows. The pause image is
# imported under the name the default config pulls (no registry). The pods' parent is
# kubepods.slice, as the kubelet's systemd driver gives it. /etc/containerd/config.toml is restored
# afterwards.
engine_cri_default() {
  local D=$T/cri sock=/run/containerd/containerd.sock
  [ -e /etc/containerd/config.toml ] && cp /etc/containerd/config.toml "$D/config.toml.before"
  containerd config default | sed 's/SystemdCgroup = false/SystemdCgroup = true/' > "$D/config.toml"
  grep -q 'SystemdCgroup = true' "$D/config.toml" || { echo "  (no SystemdCgroup in containerd's default config)"; return 1; }
  cat >> "$D/config.toml" <<C

[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.berth]
  runtime_type = "io.containerd.runc.v2"
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.berth.options]
    BinaryName = "$BERTH"
    Root = "/run/berth"
    SystemdCgroup = true
C
  local pause
  pause=$(sed -n 's/^ *sandbox_image = "\(.*\)"/\1/p' "$D/config.toml")
  mkdir -p /etc/containerd
  cp "$D/config.toml" /etc/containerd/config.toml
  CLEANUPS+=("cri_cleanup_default $D")
  systemctl restart containerd || return 1
  local i; for i in $(seq 50); do [ -S $sock ] && ctr version >/dev/null 2>&1 && break; sleep 0.2; done
  local ctr="ctr -n k8s.io"
  $ctr image import "$T/image.tar" >/dev/null && $ctr image import "$T/pause.tar" >/dev/null || return 1
  $ctr image tag localhost/pause:latest "$pause" >/dev/null || return 1
  echo "  (containerd $(containerd --version | awk '{print $3}'): SystemdCgroup = true, sandbox image $pause)"
  local h root
  for h in runc berth; do
    local t0=$SECONDS
    root=/run/containerd/runc; [ $h = berth ] && root=/run/berth
    mkdir -p "$D/logs/$h"
    timeout 180 "$CRI_CLIENT" --socket $sock --handler $h --image "$IMG" --cgroup-parent kubepods.slice \
      --log-dir "$D/logs/$h" --runtime-root $root > "$D/$h.out" 2> "$D/$h.err"
    [ -s "$D/$h.out" ] || echo "cri_version fail no output: $(tail -3 "$D/$h.err")" > "$D/$h.out"
    local step r detail
    while read -r step r detail; do
      echo "cri $step $h $r" >> "$RESULTS"
      printf '  %-10s %-22s %-6s %-4s %s\n' cri "$step" "$h" "$r" "$detail"
    done < "$D/$h.out"
    echo "  (cri/$h: $((SECONDS - t0)) s)"
  done
  [ -n "${VERBOSE:-}" ] && journalctl -u containerd --no-pager | grep -i "level=error" | tail -20
  return 0
}
cri_cleanup_default() {
  local D=$1 ctr="ctr -n k8s.io" c
  for c in $($ctr t ls -q 2>/dev/null); do $ctr t kill -s SIGKILL "$c"; done
  sleep 0.5
  for c in $($ctr c ls -q 2>/dev/null); do $ctr t rm -f "$c"; $ctr c rm "$c"; done
  $ctr image ls -q | xargs -r $ctr image rm
  if [ -e "$D/config.toml.before" ]; then cp "$D/config.toml.before" /etc/containerd/config.toml; else rm -f /etc/containerd/config.toml; fi
  systemctl restart containerd
  true
}
