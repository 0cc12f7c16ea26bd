#!/usr/bin/env bash
# Runs stress-faultnode against a real local node (ganache, tests/chain)
# behind the misbehaving proxy faultnode.py; always stops both.
#
#   STRESS_FAULTNODE=path/to/stress-faultnode faultnode.sh
#
# Exit 77 (skipped) when ganache is not installed (scripts/setup.sh).
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
: "${STRESS_FAULTNODE:?}"
ganache="$here/../chain/ganache.sh"
work=$(mktemp -d "${TMPDIR:-/tmp}/tally-faultnode.XXXXXX")
gpid="" ppid=""
cleanup() {
  [ -n "$ppid" ] && kill "$ppid" 2>/dev/null && wait "$ppid" 2>/dev/null
  [ -n "$gpid" ] && "$ganache" stop "$gpid"
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

"$ganache" start --log "$work/node.log" >"$work/node.out" 2>"$work/node.err"
rc=$?
if [ $rc -ne 0 ]; then
  cat "$work/node.err" >&2
  exit $rc   # 77: ganache not installed
fi
read -r port gpid <"$work/node.out"
python3 "$here/faultnode.py" "$work/mode" "http://127.0.0.1:$port/" >"$work/proxy.port" &
ppid=$!
for _ in $(seq 1 100); do
  [ -s "$work/proxy.port" ] && break
  sleep 0.05
done
[ -s "$work/proxy.port" ] || { echo "faultnode.sh: the proxy did not start" >&2; exit 1; }
pport=$(cat "$work/proxy.port")
"$STRESS_FAULTNODE" --node "http://127.0.0.1:$port/" \
  --proxy "http://127.0.0.1:$pport/" --control "$work/mode"
