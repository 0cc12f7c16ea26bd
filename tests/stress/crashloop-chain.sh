#!/usr/bin/env bash
# The crash loop with the checkpointer anchoring on a real local chain
# (ganache, tests/chain, 1-second blocks) instead of the anchor file: kills
# land while an anchor transaction waits to be mined, and it may be mined
# after the writer died. Starts the node, deploys the anchor contract, runs
# stress-crashloop-workers --with checkpointer with the chain's options;
# always stops the node.
#
#   STRESS_WORKERS=path/to/stress-crashloop-workers TALLY=path/to/tally \
#     crashloop-chain.sh [stress-crashloop-workers options...]
#
# Exit 77 (skipped) when ganache is not installed (scripts/setup.sh).
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
: "${STRESS_WORKERS:?}" "${TALLY:?}"
ganache="$here/../chain/ganache.sh"
work=$(mktemp -d "${TMPDIR:-/tmp}/tally-crashchain.XXXXXX")
gpid=""
cleanup() {
  [ -n "$gpid" ] && "$ganache" stop "$gpid"
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

"$ganache" start --block-time 1 --log "$work/node.log" >"$work/node.out" 2>"$work/node.err"
rc=$?
if [ $rc -ne 0 ]; then
  cat "$work/node.err" >&2
  exit $rc   # 77: ganache not installed
fi
read -r port gpid <"$work/node.out"
rpc="http://127.0.0.1:$port/"
from=0x90F8bf6A479f320ead074411a4B0e7944Ea8c9C1   # ganache's account #0
contract=$("$TALLY" anchor-deploy --rpc "$rpc" --from "$from" 2>"$work/deploy.err") ||
  { cat "$work/deploy.err" >&2; exit 1; }
"$STRESS_WORKERS" --with checkpointer --tally "$TALLY" \
  --rpc "$rpc" --contract "$contract" --from "$from" "$@"
