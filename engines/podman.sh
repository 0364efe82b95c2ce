# podman: every path (storage, run dir, volumes, networks, events) goes under $T/podman.
podman_env() {
  local P=$T/podman
  [ -f "$P/containers.conf" ] && return 0
  if [ -n "${DEFAULTS:-}" ]; then
    # The host's own configuration (cgroup_manager systemd on a systemd host): only the image.
    [ -f "$P/imported" ] && return 0
    mkdir -p "$P"
    CLEANUPS+=("podman rm -af -t 0; podman rmi -f $IMG localhost/pause:latest")
    podman import -q --change 'CMD ["/bin/sh"]' --change 'ENV PATH=/bin' "$T/rootfs.tar" "$IMG" >/dev/null && touch "$P/imported"
    return
  fi
  mkdir -p "$P"
  cat > "$P/containers.conf" <<C
[containers]
default_ulimits = ["nofile=20000:20000","nproc=32768:32768"]
log_driver = "k8s-file"
[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = "$P/events.log"
tmp_dir = "$P/tmp"
volume_path = "$P/volumes"
[network]
network_config_dir = "$P/net"
C
  printf '[storage]\ndriver = "vfs"\ngraphroot = "%s/graph"\nrunroot = "%s/run"\n' "$P" "$P" > "$P/storage.conf"
  echo 'unqualified-search-registries = []' > "$P/registries.conf"
  export CONTAINERS_CONF=$P/containers.conf CONTAINERS_STORAGE_CONF=$P/storage.conf CONTAINERS_REGISTRIES_CONF=$P/registries.conf
  CLEANUPS+=("podman rm -af -t 0; podman volume prune -f; podman system reset -f; umount -R $P/run/netns 2>/dev/null")
  podman import --change 'CMD ["/bin/sh"]' --change 'ENV PATH=/bin' "$T/rootfs.tar" "$IMG" >/dev/null
}
# The image as a docker-archive tar, for docker load and ctr image import.
ensure_image_tar() {
  [ -f "$T/image.tar" ] && return 0
  command -v podman >/dev/null || { apt-get install -y -qq podman >/dev/null || return 1; }
  podman_env && podman save --format docker-archive -o "$T/image.tar" "$IMG" >/dev/null 2>&1
}
engine_podman() {
  podman_env || return 1
  matrix podman
  # podman passes --log-format=json --log FILE only to runtimes it knows by name (runc, crun...):
  # berth run under the name "runc" gets them, and must work that way too.
  mkdir -p "$T/as-runc"; ln -sf "$BERTH" "$T/as-runc/runc"
  CS="podman --runtime $RUNC"; cell podman runc json_log
  CS="podman --runtime $T/as-runc/runc"; cell podman berth json_log
}
f_json_log() { f_run_rm_exit && f_exec && f_detach_ps_logs_stop; }
select_runtime_podman() { local path=$RUNC; [ "$1" = berth ] && path=$BERTH; CS="podman --runtime $path"; RUNOPT=; }
