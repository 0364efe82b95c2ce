#!/usr/bin/env bash
# Install Berth as a user installs it (as root):
#
#   scripts/install.sh [OPTIONS]              build (release, static) and install
#   scripts/install.sh --uninstall [OPTIONS]  remove exactly what an install put there
#
# What goes where (PREFIX /usr/local by default; DESTDIR, if given, is put in front of every path,
# for packaging or a test into a scratch tree):
#   PREFIX/bin/berth                                     the runtime (static, as cargo builds it here)
#   PREFIX/lib/berth/berth-guest                         the static VM guest agent (berth finds it
#                                                        there: ../lib/berth/ of its own binary)
#   PREFIX/share/man/man8/berth.8, berth-COMMAND.8       manual pages   } generated from the CLI at
#   PREFIX/share/bash-completion/completions/berth       bash           } install time by the
#   PREFIX/share/zsh/site-functions/_berth               zsh            } installed berth itself
#   PREFIX/share/fish/vendor_completions.d/berth.fish    fish           } (`berth generate`)
#   PREFIX/lib/berth/install-manifest                    what this script installed or changed
# and, only when asked, engine registrations that leave each engine's own configuration alone:
#   --podman       /etc/containers/containers.conf.d/berth.conf: [engine.runtimes] berth = [...]
#                  (`podman --runtime berth`); --podman-default also makes it podman's runtime
#   --docker       /etc/docker/daemon.json: "runtimes": {"berth": {"path": ...}} merged into the
#                  file (every other key kept; `docker run --runtime berth`); --docker-default also
#                  sets "default-runtime". dockerd reads it on `systemctl reload docker`.
#   --containerd   /etc/containerd/conf.d/berth.toml: the CRI runtime handler `berth` (runc shim,
#                  BinaryName = berth, SystemdCgroup = true). containerd 1.6 reads it only when its
#                  config.toml imports it: --containerd-imports adds that one line
#                  (`imports = ["/etc/containerd/conf.d/*.toml"]`) when config.toml has no
#                  `imports` yet; otherwise the script prints what to add.
#
# Options:
#   --prefix DIR     default /usr/local (also: PREFIX=...)
#   --destdir DIR    staging root (also: DESTDIR=...)
#   --from DIR       install DIR/berth and DIR/berth-guest as they are: no build (a host without
#                    cargo, e.g. the reference host, installs the binaries built here)
#   --agent FILE     the berth-guest to install (default: DIR/berth-guest with --from, else built)
#   --no-agent       do not build or install berth-guest (no VM containers)
#   --uninstall      remove what the manifest lists; an engine key is removed only if it still has
#                    the value the install wrote, a line only if it is still there
# Nothing is restarted: the script says which engine needs a reload.
set -euo pipefail
ROOT_DIR=$(cd "$(dirname "$0")/.." && pwd)
PREFIX=${PREFIX:-/usr/local}
DESTDIR=${DESTDIR:-}
from='' agent_file='' uninstall=0 agent=1
podman=0 podman_default=0 docker=0 docker_default=0 containerd=0 containerd_imports=0
die() { echo "install.sh: $*" >&2; exit 2; }
while [ $# -gt 0 ]; do
  case "$1" in
    --prefix) PREFIX=${2:?--prefix DIR}; shift ;;
    --prefix=*) PREFIX=${1#*=} ;;
    --destdir) DESTDIR=${2:?--destdir DIR}; shift ;;
    --destdir=*) DESTDIR=${1#*=} ;;
    --from) from=${2:?--from DIR}; shift ;;
    --from=*) from=${1#*=} ;;
    --agent) agent_file=${2:?--agent FILE}; shift ;;
    --agent=*) agent_file=${1#*=} ;;
    --no-agent) agent=0 ;;
    --uninstall) uninstall=1 ;;
    --podman) podman=1 ;;
    --podman-default) podman=1 podman_default=1 ;;
    --docker) docker=1 ;;
    --docker-default) docker=1 docker_default=1 ;;
    --containerd) containerd=1 ;;
    --containerd-imports) containerd=1 containerd_imports=1 ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
  shift
done
case "$PREFIX" in /*) ;; *) die "--prefix must be an absolute path: $PREFIX" ;; esac
PREFIX=${PREFIX%/}
[ -z "$DESTDIR" ] || DESTDIR=$(realpath -m "$DESTDIR")
D=$DESTDIR
BIN=$PREFIX/bin/berth
AGENT=$PREFIX/lib/berth/berth-guest
MANIFEST=$PREFIX/lib/berth/install-manifest
CONTAINERD_DROPIN=/etc/containerd/conf.d/berth.toml
CONTAINERD_IMPORTS='imports = ["/etc/containerd/conf.d/*.toml"]'

# ---- uninstall ----
# The manifest's lines: `file PATH`, `dir PATH` (made by the install: removed when empty),
# `json PATH KEY VALUE` (a key the install set in a JSON object file; VALUE as JSON),
# `json-file PATH` (the install made the file: removed when nothing else is left in it),
# `line PATH TEXT` (a line the install added to a file). Paths are without DESTDIR.
json_unset() { # FILE KEY VALUE: remove KEY (a.b = nested) if it still has VALUE; drop emptied parents
  python3 - "$1" "$2" "$3" <<'EOF'
import json, sys
path, key, value = sys.argv[1], sys.argv[2].split("."), json.loads(sys.argv[3])
with open(path) as f:
    doc = json.load(f)
chain = [doc]
for k in key[:-1]:
    nxt = chain[-1].get(k) if isinstance(chain[-1], dict) else None
    if not isinstance(nxt, dict):
        sys.exit(0)
    chain.append(nxt)
if chain[-1].get(key[-1]) != value:
    print(f"install.sh: {path}: {'.'.join(key)} was changed since the install: left as it is", file=sys.stderr)
    sys.exit(0)
del chain[-1][key[-1]]
for i in range(len(chain) - 1, 0, -1):
    if not chain[i]:
        del chain[i - 1][key[i - 1]]
tmp = path + ".berth-tmp"
with open(tmp, "w") as f:
    json.dump(doc, f, indent=2)
    f.write("\n")
import os, shutil
shutil.copymode(path, tmp)
os.replace(tmp, path)
EOF
}

if [ "$uninstall" = 1 ]; then
  [ -f "$D$MANIFEST" ] || die "no install manifest at $D$MANIFEST (was Berth installed with --prefix $PREFIX${DESTDIR:+ --destdir $DESTDIR}?)"
  dirs=() json_files=()
  while IFS= read -r line; do
    kind=${line%% *} rest=${line#* }
    case "$kind" in
      file) rm -f "$D$rest" && echo "removed $rest" ;;
      dir) dirs+=("$rest") ;;
      json)
        read -r path key value <<<"$rest"
        if [ -f "$D$path" ]; then json_unset "$D$path" "$key" "$value" && echo "removed $key from $path"; fi ;;
      json-file) json_files+=("$rest") ;;
      line)
        path=${rest%% *} text=${rest#* }
        if [ -f "$D$path" ] && grep -qxF -- "$text" "$D$path"; then
          tmp=$(mktemp "$D$path.berth-tmp.XXXXXX")
          grep -vxF -- "$text" "$D$path" >"$tmp" || true
          chmod --reference="$D$path" "$tmp" && mv "$tmp" "$D$path" && echo "removed the line '$text' from $path"
        fi ;;
    esac
  done <"$D$MANIFEST"
  # A JSON file the install made goes when the keys it set were all it held.
  for f in "${json_files[@]}"; do
    if [ -f "$D$f" ] && python3 -c 'import json,sys; sys.exit(0 if json.load(open(sys.argv[1])) == {} else 1)' "$D$f"; then
      rm -f "$D$f" && echo "removed $f"
    fi
  done
  rm -f "$D$MANIFEST"
  # Deepest first; only what the install made, and only when empty.
  for ((i = ${#dirs[@]} - 1; i >= 0; i--)); do rmdir "$D${dirs[i]}" 2>/dev/null || true; done
  echo "Berth uninstalled from ${DESTDIR:+$DESTDIR}$PREFIX (reload the engines it was registered with)"
  exit 0
fi

# ---- install ----
[ "$agent" = 1 ] || [ ! -e "$D$AGENT" ] || echo "install.sh: note: $AGENT from an earlier install is left in place" >&2
if [ -n "$from" ]; then
  src_berth=$from/berth src_agent=${agent_file:-$from/berth-guest}
  [ -x "$src_berth" ] || die "$src_berth missing"
  [ "$agent" = 0 ] || [ -x "$src_agent" ] || { echo "install.sh: no $src_agent: installing without the VM guest agent" >&2; agent=0; }
else
  command -v cargo >/dev/null || die "needs a Rust toolchain (cargo) to build; or --from DIR with built binaries"
  (cd "$ROOT_DIR" && cargo build --release --quiet --bin berth)
  src_berth=$ROOT_DIR/target/release/berth
  src_agent=${agent_file:-$ROOT_DIR/target/x86_64-unknown-linux-gnu/release/berth-guest}
  if [ "$agent" = 1 ] && [ -z "$agent_file" ]; then
    # As scripts/test.sh builds it: static, libseccomp inside.
    (cd "$ROOT_DIR" && LIBSECCOMP_LINK_TYPE=static LIBSECCOMP_LIB_PATH=/usr/lib/x86_64-linux-gnu \
      RUSTFLAGS='-C target-feature=+crt-static' cargo build --release --quiet -p berth-guest --target x86_64-unknown-linux-gnu)
  fi
fi

declare -a manifest=()
[ ! -f "$D$MANIFEST" ] || mapfile -t manifest <"$D$MANIFEST"
record() { # add a manifest line once
  local l
  for l in "${manifest[@]}"; do [ "$l" != "$1" ] || return 0; done
  manifest+=("$1")
}
mkdirs() { # make DIR and its missing parents, recording each one made
  local d=$1 missing=()
  while [ ! -d "$D$d" ]; do missing=("$d" "${missing[@]}"); d=$(dirname "$d"); done
  for d in "${missing[@]}"; do mkdir -m 0755 "$D$d" && record "dir $d"; done
}
put() { # MODE SOURCE DEST
  mkdirs "$(dirname "$3")"
  install -m "$1" "$2" "$D$3"
  record "file $3"
  echo "installed $3"
}

# Written on every exit, also a failed one: what was put in place is always listed for --uninstall.
save_manifest() {
  [ ${#manifest[@]} -gt 0 ] || return 0
  mkdirs "$(dirname "$MANIFEST")"
  printf '%s\n' "${manifest[@]}" >"$D$MANIFEST"
  chmod 0644 "$D$MANIFEST"
}
trap save_manifest EXIT

put 0755 "$src_berth" "$BIN"
[ "$agent" = 0 ] || put 0755 "$src_agent" "$AGENT"

# Manual pages and completions, from the CLI of the berth just installed.
gen=$(mktemp -d)
trap 'save_manifest; rm -rf "$gen"' EXIT
"$src_berth" generate man "$gen" >/dev/null
for page in "$gen"/*.8; do put 0644 "$page" "$PREFIX/share/man/man8/$(basename "$page")"; done
"$src_berth" generate bash >"$gen/berth.bash"
"$src_berth" generate zsh >"$gen/_berth"
"$src_berth" generate fish >"$gen/berth.fish"
put 0644 "$gen/berth.bash" "$PREFIX/share/bash-completion/completions/berth"
put 0644 "$gen/_berth" "$PREFIX/share/zsh/site-functions/_berth"
put 0644 "$gen/berth.fish" "$PREFIX/share/fish/vendor_completions.d/berth.fish"

reload=()
if [ "$podman" = 1 ]; then
  {
    echo "# Berth as a podman runtime (scripts/install.sh): podman --runtime berth ..."
    if [ "$podman_default" = 1 ]; then printf '[engine]\nruntime = "berth"\n\n'; fi
    printf '[engine.runtimes]\nberth = ["%s"]\n' "$BIN"
  } >"$gen/berth.conf"
  put 0644 "$gen/berth.conf" /etc/containers/containers.conf.d/berth.conf
fi

if [ "$docker" = 1 ]; then
  command -v python3 >/dev/null || die "--docker merges /etc/docker/daemon.json with python3, which is missing"
  mkdirs /etc/docker
  if [ ! -e "$D/etc/docker/daemon.json" ]; then
    echo '{}' >"$D/etc/docker/daemon.json"
    record "json-file /etc/docker/daemon.json"
  fi
  set_json() { # KEY VALUE(JSON): refuse to replace another value of the same key
    python3 - "$D/etc/docker/daemon.json" "$1" "$2" <<'EOF'
import json, os, shutil, sys
path, key, value = sys.argv[1], sys.argv[2].split("."), json.loads(sys.argv[3])
with open(path) as f:
    doc = json.load(f)
node = doc
for k in key[:-1]:
    node = node.setdefault(k, {})
    if not isinstance(node, dict):
        sys.exit(f"install.sh: {path}: {k} is not an object")
if key[-1] in node and node[key[-1]] != value:
    sys.exit(f"install.sh: {path}: {'.'.join(key)} is already set to {json.dumps(node[key[-1]])}: not replaced")
node[key[-1]] = value
tmp = path + ".berth-tmp"
with open(tmp, "w") as f:
    json.dump(doc, f, indent=2)
    f.write("\n")
shutil.copymode(path, tmp)
os.replace(tmp, path)
EOF
  }
  set_json runtimes.berth "{\"path\": \"$BIN\"}"
  record "json /etc/docker/daemon.json runtimes.berth {\"path\": \"$BIN\"}"
  echo "registered berth in /etc/docker/daemon.json (runtimes.berth)"
  if [ "$docker_default" = 1 ]; then
    set_json default-runtime '"berth"'
    record 'json /etc/docker/daemon.json default-runtime "berth"'
  fi
  reload+=("docker: systemctl reload docker (docker run --runtime berth ...)")
fi

if [ "$containerd" = 1 ]; then
  cat >"$gen/berth.toml" <<EOF
# Berth as a CRI runtime handler of containerd (scripts/install.sh). containerd reads this file
# when /etc/containerd/config.toml has: $CONTAINERD_IMPORTS
version = 2

[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.berth]
  runtime_type = "io.containerd.runc.v2"

[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.berth.options]
  BinaryName = "$BIN"
  SystemdCgroup = true
EOF
  put 0644 "$gen/berth.toml" "$CONTAINERD_DROPIN"
  cfg=/etc/containerd/config.toml
  if [ -f "$D$cfg" ] && grep -qE '^[[:space:]]*imports[[:space:]]*=' "$D$cfg"; then
    if grep -qF '/etc/containerd/conf.d/' "$D$cfg"; then
      echo "$cfg already imports /etc/containerd/conf.d/"
    else
      echo "install.sh: $cfg has its own imports: add \"$CONTAINERD_DROPIN\" to that list" >&2
    fi
  elif [ "$containerd_imports" = 1 ]; then
    mkdirs /etc/containerd
    # A top-level key must come before the first table: right after `version = N`, or first.
    if [ -f "$D$cfg" ] && grep -qE '^version[[:space:]]*=' "$D$cfg"; then
      tmp=$(mktemp "$D$cfg.berth-tmp.XXXXXX")
      awk -v line="$CONTAINERD_IMPORTS" '{ print } !done && /^version[[:space:]]*=/ { print line; done = 1 }' "$D$cfg" >"$tmp"
      chmod --reference="$D$cfg" "$tmp" && mv "$tmp" "$D$cfg"
    elif [ -f "$D$cfg" ]; then
      tmp=$(mktemp "$D$cfg.berth-tmp.XXXXXX")
      { echo "$CONTAINERD_IMPORTS"; cat "$D$cfg"; } >"$tmp"
      chmod --reference="$D$cfg" "$tmp" && mv "$tmp" "$D$cfg"
    else
      printf 'version = 2\n%s\n' "$CONTAINERD_IMPORTS" >"$D$cfg"
      record "file $cfg"
    fi
    record "line $cfg $CONTAINERD_IMPORTS"
    echo "added to $cfg: $CONTAINERD_IMPORTS"
  else
    echo "install.sh: containerd reads $CONTAINERD_DROPIN only when $cfg has (near its top, before any [table]):" >&2
    echo "  $CONTAINERD_IMPORTS" >&2
    echo "  (or run again with --containerd-imports to add that line)" >&2
  fi
  reload+=("containerd: systemctl restart containerd (CRI handler \"berth\"; ctr run --runc-binary $BIN)")
fi

save_manifest
echo "Berth installed in ${DESTDIR:+$DESTDIR}$PREFIX (manifest: $MANIFEST; remove with: $0 --uninstall${PREFIX:+ --prefix $PREFIX}${DESTDIR:+ --destdir $DESTDIR})"
for r in "${reload[@]}"; do echo "  then $r"; done
