#!/usr/bin/env bash
# Runs a command against fresh local Ethereum nodes and always stops them.
#
#   with-ganache.sh [--nodes N] [--block-time S] CMD [ARGS...]
#
# Starts N (default 1) independent ganache nodes (tests/chain/ganache.sh),
# exports TALLY_TEST_RPC=http://127.0.0.1:PORT for the first and
# TALLY_TEST_RPC2, TALLY_TEST_RPC3, ... for the others, runs CMD and returns
# its exit status. The nodes are stopped on every way out (exit, error,
# INT/TERM from a test harness timeout). Exit 77 (skip) when ganache is not
# installed.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
ganache="$here/../chain/ganache.sh"

nodes=1
extra=()
while [ $# -gt 0 ]; do
  case "$1" in
    --nodes) nodes=$2; shift 2 ;;
    --block-time) extra+=(--block-time "$2"); shift 2 ;;
    --) shift; break ;;
    *) break ;;
  esac
done
[ $# -ge 1 ] || { echo "usage: $0 [--nodes N] [--block-time S] CMD [ARGS...]" >&2; exit 2; }

work=$(mktemp -d "${TMPDIR:-/tmp}/tally-chain.XXXXXX")
pids=()
cleanup() {
  local p
  for p in "${pids[@]}"; do "$ganache" stop "$p" || true; done
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Start them side by side (each takes ~1.5 s to answer).
starters=()
for i in $(seq 1 "$nodes"); do
  "$ganache" start "${extra[@]}" --log "$work/node$i.log" >"$work/node$i.out" 2>"$work/node$i.err" &
  starters+=($!)
done
status=0
for i in $(seq 1 "$nodes"); do
  wait "${starters[$((i - 1))]}"
  rc=$?
  if [ $rc -eq 0 ]; then
    read -r port pid <"$work/node$i.out"
    pids+=("$pid")
    if [ "$i" -eq 1 ]; then
      export TALLY_TEST_RPC="http://127.0.0.1:$port"
    else
      export "TALLY_TEST_RPC$i=http://127.0.0.1:$port"
    fi
  else
    cat "$work/node$i.err" >&2
    [ $status -eq 0 ] && status=$rc
  fi
done
if [ $status -ne 0 ]; then
  exit $status   # 77 when ganache is missing: the test is skipped
fi

"$@"
exit $?
