# shellcheck shell=bash
# The check helpers of every reference host script (sourced): one line per check,
#   PASS <name> | FAIL <name>: <reason> | KNOWN-FAIL <name>: <reason> (<issue>)
# (a failure with what the command printed above it, indented) and the counters `passed`, `failed`,
# `known`, kept when a script sources another that sources this too (install.sh, apparmor.sh);
# `summary` prints the counts and returns non-zero on a failure.
passed=${passed:-0} failed=${failed:-0} known=${known:-0}
step_timeout=${step_timeout:-180}

fact() { echo "FACT $1: $2"; }
pass() { echo "PASS $1"; passed=$((passed + 1)); }
fail() { echo "FAIL $1: $2"; failed=$((failed + 1)); }
# What a failed command printed, on one line: its error lines when it has some, else all.
reason() {
  { grep -E '^Error' "$1" || grep -E '^berth:' "$1" || cat "$1"; } | tr '\n' ' ' | sed 's/  */ /g; s/ $//' | cut -c1-500
}
# check NAME EXPECTED-PATTERN COMMAND...: the command succeeds and its output matches the pattern.
check() {
  local name=$1 want=$2
  shift 2
  local log
  log=$(mktemp)
  if timeout "$step_timeout" "$@" >"$log" 2>&1 && grep -qE -- "$want" "$log"; then
    pass "$name"
  else
    sed 's/^/    | /' "$log"
    fail "$name" "$(reason "$log")"
  fi
  rm -f "$log"
}
# known NAME ISSUE EXPECTED-PATTERN COMMAND...: as check, but a failure is a known one.
known() {
  local name=$1 issue=$2 want=$3
  shift 3
  local log
  log=$(mktemp)
  if timeout "$step_timeout" "$@" >"$log" 2>&1 && grep -qE -- "$want" "$log"; then
    pass "$name"
  else
    echo "KNOWN-FAIL $name: $(reason "$log") ($issue)"
    known=$((known + 1))
  fi
  rm -f "$log"
}
# A busybox rootfs tarball (for `podman import`, no registry) at $1.
busybox_tar() {
  local r
  r=$(mktemp -d)
  mkdir -p "$r"/{bin,etc,tmp,proc,sys,dev,root}
  cp /bin/busybox "$r/bin/busybox"
  local a
  for a in $("$r/bin/busybox" --list); do [ -e "$r/bin/$a" ] || ln -s busybox "$r/bin/$a"; done
  printf 'root:x:0:0:root:/root:/bin/sh\n' >"$r/etc/passwd"
  printf 'root:x:0:\n' >"$r/etc/group"
  chmod 1777 "$r/tmp"
  tar -C "$r" -cf "$1" .
  rm -rf "$r"
}

# refuse NAME EXPECTED-PATTERN COMMAND...: the command fails and its output matches the pattern.
refuse() {
  local name=$1 want=$2
  shift 2
  local log
  log=$(mktemp)
  if ! timeout "$step_timeout" "$@" >"$log" 2>&1 && grep -qE -- "$want" "$log"; then
    pass "$name"
  else
    sed 's/^/    | /' "$log"
    fail "$name" "expected a failure matching /$want/: $(reason "$log")"
  fi
  rm -f "$log"
}

# A busybox bundle in DIR (rootfs and `berth spec`, no terminal), for `$BERTH`.
busybox_bundle() {
  local dir=$1 applet
  mkdir -p "$dir/rootfs/bin"
  cp /bin/busybox "$dir/rootfs/bin/busybox"
  for applet in $("$dir/rootfs/bin/busybox" --list); do
    [ "$applet" = busybox ] || ln -s busybox "$dir/rootfs/bin/$applet"
  done
  (cd "$dir" && "$BERTH" spec)
  sed -i 's/"terminal": true/"terminal": false/' "$dir/config.json"
}

# set_json FILE PYTHON-EXPRESSION: edit a JSON file (`c` is the document), e.g.
#   set_json config.json 'c["process"]["args"] = ["true"]'
set_json() {
  python3 - "$1" "$2" <<'PY'
import json, sys
path, expr = sys.argv[1], sys.argv[2]
with open(path) as f:
    c = json.load(f)
exec(expr)
with open(path, "w") as f:
    json.dump(c, f, indent=2)
PY
}

summary() {
  echo "$1 passed=$passed failed=$failed"
  [ "$failed" = 0 ]
}
