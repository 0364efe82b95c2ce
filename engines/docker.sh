# dockerd: data-root, exec-root, pidfile and socket under $T/docker (its own containerd runs under
# exec-root); Berth is added with --add-runtime and picked per container with run --runtime=berth.
engine_docker() {
  local D=$T/docker
  mkdir -p "$D"
  if [ -n "${DEFAULTS:-}" ]; then engine_docker_default; return; fi
  cat > "$D/daemon.json" <<C
{"default-ulimits": {"nofile": {"Name": "nofile", "Hard": 20000, "Soft": 20000}},
 "deprecated-key-path": "$D/key.json", "exec-opts": ["native.cgroupdriver=cgroupfs"]}
C
  dockerd --config-file "$D/daemon.json" --data-root "$D/data" --exec-root "$D/exec" --pidfile "$D/pid" \
    -H "unix://$D/sock" --add-runtime "berth=$BERTH" > "$D/log" 2>&1 &
  local pid=$!
  DOCKER="$([ -x /usr/bin/docker ] && echo /usr/bin/docker || echo docker) -H unix://$D/sock"
  CLEANUPS+=("$DOCKER ps -aq | xargs -r $DOCKER rm -f; $DOCKER volume prune -f; kill $pid; wait $pid; umount -R $D/exec $D/data")
  local i; for i in $(seq 100); do $DOCKER info >/dev/null 2>&1 && break; sleep 0.2; done
  ensure_image_tar || return 1
  $DOCKER load -i "$T/image.tar" >/dev/null || return 1
  CS=$DOCKER
  matrix docker
}
select_runtime_docker() { RUNOPT="--runtime=$1"; }
# The host's dockerd (docker.socket/docker.service) with its default configuration, Berth added to
# /etc/docker/daemon.json as ENGINES.md says (the file restored afterwards).
engine_docker_default() {
  local D=$T/docker
  [ -e /etc/docker/daemon.json ] && cp /etc/docker/daemon.json "$D/daemon.json.before"
  mkdir -p /etc/docker
  printf '{\n  "runtimes": { "berth": { "path": "%s" } }\n}\n' "$BERTH" > /etc/docker/daemon.json
  CLEANUPS+=("docker ps -aq | xargs -r docker rm -f; docker rmi -f $IMG; if [ -e $D/daemon.json.before ]; then cp $D/daemon.json.before /etc/docker/daemon.json; else rm -f /etc/docker/daemon.json; fi; systemctl restart docker")
  systemctl restart docker || return 1
  DOCKER=docker
  echo "  (dockerd: $(docker info -f 'cgroup driver {{.CgroupDriver}}, cgroup v{{.CgroupVersion}}, runtimes {{range $k, $v := .Runtimes}}{{$k}} {{end}}'))"
  ensure_image_tar || return 1
  $DOCKER load -i "$T/image.tar" >/dev/null || return 1
  CS=$DOCKER
  matrix docker
}
