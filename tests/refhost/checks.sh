#!/bin/bash
# The check helpers of the reference host scripts install.sh and apparmor.sh (sourced; smoke.sh has
# its own). Each check prints one line: `PASS <name>` or `FAIL <name>: <reason>` (with what the
# command printed above it, indented); `summary` prints the counts and returns non-zero on a failure.
passed=${passed:-0} failed=${failed:-0}
step_timeout=${step_timeout:-180}

fact() { echo "FACT $1: $2"; }
pass() { echo "PASS $1"; passed=$((passed + 1)); }
fail() { echo "FAIL $1: $2"; failed=$((failed + 1)); }
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
