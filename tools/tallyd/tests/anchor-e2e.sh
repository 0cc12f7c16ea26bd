#!/usr/bin/env bash
# anchor-e2e.sh — tallyd with anchor options against a real local Ethereum
# node (ganache from tests/chain, started here and always stopped):
#   usage errors; tallyd --checkpoint-every 1 anchors while producers send
#   (tally send), status replies show the anchor seq advancing, its block and
#   transaction, and the anchor lag; every record stored once; the node
#   stopped: appends go on, status reports the failures and a growing lag,
#   anchoring resumes when the node is back; SIGTERM stops the checkpointer
#   and exits 0; tally status says fresh, tally verify checks the CHECKPOINT
#   records against the chain; an old copy of the directory put back makes
#   tallyd refuse to start with exit 4, naming both sides.
# Needs $TALLY, $TALLYD, $TALLY_CLIENT (set by meson). Exit 77 (skip) when
# ganache is not installed (scripts/setup.sh).
set -u
TALLY=${TALLY:?set TALLY} TALLYD=${TALLYD:?set TALLYD}
TALLY_CLIENT=${TALLY_CLIENT:?set TALLY_CLIENT}
here=$(cd "$(dirname "$0")" && pwd)
ganache="$here/../../../tests/chain/ganache.sh"
[ -x "$here/../../../tests/chain/node_modules/.bin/ganache" ] || {
  echo "anchor-e2e: ganache not installed (run scripts/setup.sh): skipped"; exit 77; }

work=$(mktemp -d "${TMPDIR:-/tmp}/tallyd-anchor-e2e.XXXXXX")
node_pid="" daemon_pid="" bg_pids=()
cleanup() {
  local p
  for p in "${bg_pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  [ -n "$daemon_pid" ] && kill -9 "$daemon_pid" 2>/dev/null
  [ -n "$node_pid" ] && "$ganache" stop "$node_pid" >/dev/null 2>&1
  if [ "${fails:-1}" -eq 0 ]; then rm -rf "$work"; else echo "# kept $work"; fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
cd "$work"
exec </dev/null
unset TALLY_KEY_FILE TALLY_KEY_SOURCE TALLY_RPC_URL TALLY_CONTRACT TALLY_SIGNER_KEY_FILE

n=0 fails=0
ok()     { n=$((n + 1)); echo "ok $n - $*"; }
not_ok() { n=$((n + 1)); fails=$((fails + 1)); echo "not ok $n - $*"; }
check()  { local d=$1; shift; if "$@"; then ok "$d"; else not_ok "$d"; fi; }
wait_for() {  # PATTERN FILE SECONDS: a line of FILE matches
  local i
  for i in $(seq 1 $(($3 * 10))); do
    grep -q -- "$1" "$2" 2>/dev/null && return 0
    sleep 0.1
  done
  return 1
}
count() { grep -c -- "$1" "$2" 2>/dev/null || true; }
wait_count() {  # PATTERN FILE N SECONDS: more than N lines match
  local i
  for i in $(seq 1 $(($4 * 10))); do
    [ "$(count "$1" "$2")" -gt "$3" ] && return 0
    sleep 0.1
  done
  return 1
}
# status FIELD: the value after FIELD in `tally-client status` (first word)
status() { "$TALLY_CLIENT" status --connect "$URL" >st 2>&1 || return 1
           awk -v f="$1" '$1 == f { print $2; exit }' st; }
start_daemon() {  # LOG KEYSPEC ARGS...: tallyd j with the anchor options
  local log=$1 spec=$2; shift 2
  "$TALLYD" j --key-source "$spec" "${A[@]}" "$@" 2>>"$log" &
  daemon_pid=$!
  wait_for " info ready " "$log" 15
}
stop_daemon() {  # -> the exit status
  kill -TERM "$daemon_pid"; wait "$daemon_pid"; local rc=$?; daemon_pid=""
  return $rc
}
# producer NAME COUNT: COUNT lines, one every 50 ms (one request each)
producer() { for i in $(seq 1 "$2"); do echo "$1-$i"; sleep 0.05; done |
             "$TALLY" send --dir j 2>"send-$1.err"; }

"$ganache" start --db "$work/chain" --log "$work/node.log" >node 2>node.err ||
  { cat node.err; echo "anchor-e2e: the node did not start"; exit 1; }
read -r port node_pid <node
R=http://127.0.0.1:$port
A0=0x90F8bf6A479f320ead074411a4B0e7944Ea8c9C1  # ganache's account #0
echo "# node on port $port"

"$TALLY" keygen k >/dev/null 2>&1
C=$("$TALLY" anchor-deploy --rpc "$R" --from "$A0" 2>deploy.err)
check "anchor-deploy" grep -Eqx '0x[0-9a-fA-F]{40}' <<<"$C"
"$TALLY" init j --key-file k >/dev/null 2>&1
A=(--rpc "$R" --contract "$C" --from "$A0")
URL=ipc://$work/j.append

# ---- usage -----------------------------------------------------------------
"$TALLYD" j --key-file k --checkpoint-every 1 2>err; rc=$?
check "--checkpoint-every without an anchor target: exit 2 ($rc)" test $rc -eq 2
"$TALLYD" j --key-file k --rpc "$R" --from "$A0" 2>err; rc=$?
check "anchor options without a contract: exit 2 ($rc)" test $rc -eq 2
check "the message says so, under tallyd's name" grep -q "^tallyd: the anchor contract is needed" err
"$TALLYD" j --key-source env:TALLYD_E2E_UNSET "${A[@]}" 2>err; rc=$?
check "a key source that has no key: exit 5 ($rc)" test $rc -eq 5
check "the message names the source" grep -q "^tallyd: loading key from env:TALLYD_E2E_UNSET" err

# ---- anchoring while producers send ----------------------------------------
start_daemon d1.log "file:$work/k" --checkpoint-every 1
check "tallyd starts: fresh, checkpointer every 1 s" \
  grep -q " info checkpointer every_s=1 backend=ethereum" d1.log
check "the startup verdict is logged" grep -q " info fresh dir=j local_seq=0 anchored_seq=0" d1.log
producer a 60 & bg_pids+=($!)
producer b 60 & bg_pids+=($!)
s1=0 s2=0 lag1=""
for i in $(seq 1 100); do          # the first anchor while they send
  s1=$(status anchor); [ "${s1:-none}" != none ] && [ "$s1" -gt 0 ] && break
  sleep 0.1
done
lag1=$(status anchor_lag_records)
for i in $(seq 1 100); do          # and a later one
  s2=$(status anchor); [ "${s2:-0}" -gt "${s1:-0}" ] 2>/dev/null && break
  sleep 0.1
done
blk=$(status anchor_block)
tx=$(status anchor_tx)
check "status while sending: anchor seq advances ($s1 -> $s2)" \
  test "${s1:-0}" -gt 0 -a "${s2:-0}" -gt "${s1:-0}"
check "status: the anchor's block ($blk) and transaction" \
  test "${blk:-0}" -gt 0 -a "${#tx}" -eq 66
check "status: anchor lag in records ($lag1) and ms" \
  test -n "$lag1" -a -n "$(status anchor_lag_ms)"
check "status: anchoring via ethereum" test "$(status anchoring)" = ethereum
wait "${bg_pids[@]}"; bg_pids=()
check "producer a was acknowledged" grep -q "^tally send: 60 records" send-a.err
check "producer b was acknowledged" grep -q "^tally send: 60 records" send-b.err
# the last round covers the last record: no lag left
for i in $(seq 1 50); do
  [ "$(status anchor_lag_records)" = 0 ] && break; sleep 0.1
done
head=$(status head); anc=$(status anchor)
check "caught up: anchor $anc, head $head (its CHECKPOINT record on top), lag 0" \
  test "$(status anchor_lag_records)" = 0 -a "${anc:-0}" -ge 120 -a "${head:-0}" -gt "${anc:-0}"
check "anchored lines in the log (seq, block, tx)" \
  test "$(count ' info anchored seq=[0-9]* block=[0-9]* tx=0x[0-9a-f]\{64\}' d1.log)" -ge 2

# ---- the node stopped: appends go on, anchoring resumes ---------------------
"$ganache" stop "$node_pid" >/dev/null 2>&1; node_pid=""
seq 1 5 | sed 's/^/down-/' | timeout 10 "$TALLY" send --dir j 2>send-down.err
check "appends while the node is down are acknowledged" grep -q "^tally send: 5 records" send-down.err
check "the failing rounds are logged with the lag" \
  wait_for " warn anchor-failed streak=[0-9]* .* lag_records=[1-9]" d1.log 15
status head >/dev/null
check "status reports the failure streak" grep -Eq '^checkpoint_failing [1-9]' st
check "status reports the lag" grep -Eq '^anchor_lag_records [1-9]' st
anchored=$(count " info anchored seq=" d1.log)
"$ganache" start --db "$work/chain" --port "$port" --log "$work/node.log" >node 2>node.err &&
  read -r _ node_pid <node
check "the node is back on its port" test -n "$node_pid"
check "anchoring resumes" wait_count " info anchored seq=" d1.log "$anchored" 30
for i in $(seq 1 100); do
  [ "$(status anchor_lag_records)" = 0 ] && break; sleep 0.2
done
check "the records appended while it was down are anchored" test "$(status anchor_lag_records)" = 0

# ---- SIGTERM ------------------------------------------------------------------
stop_daemon; rc=$?
check "SIGTERM: exit 0 ($rc)" test $rc -eq 0
check "the checkpointer stopped cleanly" grep -q " info checkpointer-stopped .* failing=no" d1.log
check "no errors in the log" test "$(count ' error ' d1.log)" -eq 0
"$TALLY" status j "${A[@]}" --json >status.json 2>err; rc=$?
check "tally status: fresh (exit $rc)" test $rc -eq 0 -a "$(jq -r .verdict status.json)" = fresh
"$TALLY" verify j --key-file k "${A[@]}" --json >verify.json 2>err; rc=$?
check "tally verify checks the CHECKPOINT records against the chain (exit $rc)" \
  test $rc -eq 0 -a "$(jq -r '.anchor.checked > 1 and .anchor.checked == .anchor.checkpoints' verify.json)" = true
"$TALLY" cat j --key-file k >cat.out 2>err
check "every record stored once (125 lines of the producers)" \
  test "$(grep -Ec ' (a|b|down)-[0-9]+$' cat.out)" -eq 125 -a \
       "$(grep -Eo ' (a|b|down)-[0-9]+$' cat.out | sort | uniq -d | wc -l)" -eq 0

# ---- an old copy put back: tallyd refuses to start -------------------------------
cp -a j j.old
# this time the key comes from the environment (env: source), which tallyd
# scrubs once read
key_hex=$(od -An -tx1 -v k | tr -d ' \n')
TALLYD_E2E_KEY=$key_hex start_daemon d2.log env:TALLYD_E2E_KEY --checkpoint-every 1
check "env: key source: tallyd runs" test -n "$(status head)"
check "env: key source: the key is not in the daemon's environment" \
  test "$(tr '\0' '\n' </proc/$daemon_pid/environ | grep -c "$key_hex")" -eq 0
seq 1 3 | sed 's/^/late-/' | "$TALLY" send --dir j 2>/dev/null
for i in $(seq 1 50); do
  [ "$(status anchor_lag_records)" = 0 ] && break; sleep 0.1
done
late=$(status anchor)
stop_daemon
rm -rf j && mv j.old j
"$TALLYD" j --key-file k "${A[@]}" 2>d3.log; rc=$?
check "a rolled-back directory: tallyd refuses with exit 4 ($rc)" test $rc -eq 4
check "the message names both sides (local seq, anchored seq $late and its block)" \
  grep -Eq "^tallyd: j: rolled_back: the local journal ends at seq [0-9]+ .*seq $late .* anchored in block [0-9]+" d3.log
check "and the refusal is logged" grep -q " error refused dir=j verdict=rolled_back .* exit=4" d3.log

echo "1..$n"
[ "$fails" -eq 0 ]
