#!/usr/bin/env bash
# checkpoint-e2e.sh — end-to-end test of anchoring with the real `tally`
# binary ($TALLY, set by meson) against real local Ethereum nodes (ganache
# from tests/chain, started here and always stopped on exit):
#   deploy, checkpoint, status fresh; an old copy of the directory put back
#   -> rolled_back (exit 4); the directory deleted -> deleted, and init
#   refuses without --accept-history-loss; a new history under the same id
#   -> forked; the chain reverted (evm_snapshot/evm_revert) -> stale_anchor;
#   a locally signed writer (--signer-key-file); a non-monotonic anchor
#   refused by the contract with the decoded error; endpoints that disagree;
#   anchored appends; the node stopped during `append --checkpoint-every`:
#   appends go on, anchoring resumes once the node is back on its port.
# Exit 77 (skip) when ganache is not installed (scripts/setup.sh).
set -u
TALLY=${TALLY:?set TALLY to the tally binary}
here=$(cd "$(dirname "$0")" && pwd)
ganache="$here/../../tests/chain/ganache.sh"
command -v jq >/dev/null || { echo "checkpoint-e2e: jq is needed (scripts/setup.sh installs it)"; exit 1; }
[ -x "$here/../../tests/chain/node_modules/.bin/ganache" ] || {
  echo "checkpoint-e2e: ganache not installed (run scripts/setup.sh): skipped"; exit 77; }

work=$(mktemp -d "${TMPDIR:-/tmp}/tally-ckpt-e2e.XXXXXX")
node_pids=() bg_pids=()
cleanup() {
  local p
  for p in "${bg_pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  for p in "${node_pids[@]}"; do "$ganache" stop "$p" >/dev/null 2>&1 || true; done
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
cd "$work"
exec </dev/null
unset TALLY_KEY_FILE TALLY_RPC_URL TALLY_CONTRACT TALLY_SIGNER_KEY_FILE

n=0 fails=0
ok()     { n=$((n + 1)); echo "ok $n - $*"; }
not_ok() { n=$((n + 1)); fails=$((fails + 1)); echo "not ok $n - $*"; }
check()  { local d=$1; shift; if "$@"; then ok "$d"; else not_ok "$d"; sed 's/^/#   /' err 2>/dev/null | head -5; fi; }
run() { "$@" >out 2>err; rc=$?; }
tally() { "$TALLY" "$@"; }
expect() {
  local want=$1 d=$2; shift 2
  run "$@"
  if [ "$rc" -eq "$want" ]; then ok "$d (exit $want)"
  else not_ok "$d: exit $rc, want $want"; sed 's/^/#   /' err | head -5; fi
}
jq1() { local f=$1 file=$2; shift 2; jq -s -e "$@" "length==1 and (.[0] | $f)" "$file" >/dev/null; }
rpc() {  # URL METHOD PARAMS -> the result, as JSON
  curl -s -m 10 -H 'Content-Type: application/json' \
    -d "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"$2\",\"params\":${3:-[]}}" "$1" | jq -c .result
}
wait_for() {  # PATTERN FILE SECONDS [SKIP_LINES]: a line after the first SKIP_LINES matches
  local i
  for i in $(seq 1 $(($3 * 10))); do
    tail -n +$((${4:-0} + 1)) "$2" 2>/dev/null | grep -q -- "$1" && return 0
    sleep 0.1
  done
  return 1
}

# ---- three local nodes: N1 keeps its chain in a directory (restarted later
# on the same port), N2 and N3 are in memory --------------------------------
"$ganache" start --db "$work/chain1" --log "$work/node1.log" >node1 2>node1.err & s1=$!
"$ganache" start --log "$work/node2.log" >node2 2>node2.err & s2=$!
"$ganache" start --log "$work/node3.log" >node3 2>node3.err & s3=$!
started=1
for i in 1 2 3; do
  eval "wait \$s$i" || started=0
  read -r port pid <node$i 2>/dev/null && node_pids+=("$pid") && eval "P$i=$port N$i=$pid"
done
if [ "$started" -ne 1 ]; then cat node*.err; echo "checkpoint-e2e: a node did not start"; exit 1; fi
R1=http://127.0.0.1:$P1 R2=http://127.0.0.1:$P2 R3=http://127.0.0.1:$P3
# ganache's deterministic accounts #0 and #1 (public test keys).
A0=0x90F8bf6A479f320ead074411a4B0e7944Ea8c9C1
A1=0xFFcf8FDEE72ac11b5c542428B35EEF5769C409f0
( umask 077; echo 0x6cbed15c793ce57650b9877cf6fa156fbef513c4e6134f022a85b1ffdd59b2a1 >signer.key )
echo "# nodes on ports $P1 $P2 $P3"

expect 0 "keygen" tally keygen k

# ---- anchor-deploy ------------------------------------------------------------
expect 2 "anchor-deploy without an endpoint" tally anchor-deploy --from $A0
expect 2 "anchor-deploy with --from and --signer-key-file" tally anchor-deploy --rpc $R1 --from $A0 --signer-key-file signer.key
expect 2 "anchor-deploy with a bad address" tally anchor-deploy --rpc $R1 --from 0x1234
expect 0 "anchor-deploy on N1" tally anchor-deploy --rpc $R1 --from $A0
C=$(cat out)
check "anchor-deploy prints one checksummed address" grep -Eqx '0x[0-9a-fA-F]{40}' out
expect 0 "anchor-deploy --json on N2" tally anchor-deploy --rpc $R2 --from $A0 --json
check "same deployer and nonce -> same address on N2" jq1 '.contract==$c and .chain_id==1337 and .block>=1 and (.tx|test("^0x[0-9a-f]{64}$"))' out --arg c "$C"
expect 0 "anchor-deploy on N3" tally anchor-deploy --rpc $R3 --from $A0
check "same address on N3" test "$(cat out)" = "$C"
A=(--rpc "$R1" --contract "$C" --from "$A0")

# ---- help of the anchoring commands tells the truth ------------------------------
for c in status checkpoint anchor-deploy; do
  expect 0 "tally $c --help" tally $c --help
  cp out help1
  check "$c --help starts with its usage" grep -q "^Usage: tally $c" help1
  check "tally --help lists $c" bash -c "'$TALLY' --help | grep -q '^  $c '"
  bad=""
  # (flags of other commands it refers to, "tally append --...", aside)
  for f in $(grep -v "tally append" help1 | grep -o -- '--[a-z][a-z0-9-]*' | sort -u); do
    run tally $c "$f"
    grep -q "unrecognized option" err && bad="$bad $f"
  done
  check "$c accepts every flag its help names${bad:+ (not:$bad)}" test -z "$bad"
done

# ---- usage -----------------------------------------------------------------------
expect 2 "status without an anchor target" tally status j
expect 2 "status without a contract" tally status j --rpc $R1 --from $A0
expect 2 "status without a writer" tally status j --rpc $R1 --contract $C
expect 2 "--rpc that is not http(s)" tally status j --rpc ftp://x --contract $C --from $A0
expect 2 "--rpc-quorum 1 of 2 is not a majority" tally status j --rpc $R1 --rpc $R2 --rpc-quorum 1 --contract $C --from $A0
expect 2 "--anchor-file with --rpc" tally status j --anchor-file af --rpc $R1
expect 2 "append --anchored without a target" tally append j --key-file k --anchored
expect 2 "checkpoint without a key" tally checkpoint j "${A[@]}"

# ---- fresh -------------------------------------------------------------------------
expect 0 "init with anchor options (nothing anchored yet)" tally init j --key-file k --name e2e "${A[@]}"
seq 1 5 | sed 's/^/first /' >in
expect 0 "append 5 with anchor options" tally append j --key-file k --ack "${A[@]}" <in
check "acks 1..5" test "$(tr '\n' ' ' <out)" = "1 2 3 4 5 "
expect 0 "status before any anchor" tally status j "${A[@]}" --json
check "fresh, never anchored" jq1 '.verdict=="fresh" and .anchored.seq==0 and .local.seq==5 and .unanchored_tail==5' out
expect 0 "checkpoint" tally checkpoint j --key-file k "${A[@]}"
check "checkpoint names seq, block, tx and the CHECKPOINT record" grep -Eq '^anchored j: seq 5 \(head [0-9a-f]{64}\) in block [0-9]+, tx 0x[0-9a-f]{64}; CHECKPOINT record seq 6$' out
expect 0 "status fresh" tally status j "${A[@]}" --json
check "fresh: anchored seq 5, its CHECKPOINT record is seq 6" jq1 '.verdict=="fresh" and .exit==0 and .anchored.seq==5 and .local.seq==6 and .unanchored_tail==1 and .checkpoint.seq==5 and .checkpoint.record_seq==6' out
block5=$(jq -r .anchored.block out)
expect 0 "status (text)" tally status j "${A[@]}"
check "text status: first line is 'j: fresh'" test "$(head -n 1 out)" = "j: fresh"
expect 0 "checkpoint again: nothing new" tally checkpoint j --key-file k "${A[@]}"
check "nothing new is said" grep -q '^nothing new in j' out
expect 0 "verify with anchor options" tally verify j --key-file k "${A[@]}" --json
check "verify checks the CHECKPOINT record against the chain's events" jq1 '.ok and .anchor.verdict=="fresh" and .anchor.checkpoints==1 and .anchor.checked==1' out
expect 0 "status from the environment (TALLY_RPC_URL, TALLY_CONTRACT)" env TALLY_RPC_URL="$R1" TALLY_CONTRACT="$C" "$TALLY" status j --from $A0
expect 0 "cat with anchor options (--writer; --from is the seq)" tally cat j --key-file k --rpc $R1 --contract $C --writer $A0 --from 2 --to 3
check "cat printed seq 2..3" test "$(cut -d' ' -f1 out | tr '\n' ' ')" = "2 3 "

# ---- rolled back: an old copy of the directory is put back -----------------
cp -a j j.saved
seq 1 3 | sed 's/^/second /' >in
expect 0 "append 3 more" tally append j --key-file k "${A[@]}" <in
expect 0 "checkpoint seq 9" tally checkpoint j --key-file k "${A[@]}"
check "anchored seq 9" grep -q '^anchored j: seq 9 .*CHECKPOINT record seq 10$' out
rm -rf j && mv j.saved j
expect 4 "status of the old copy" tally status j "${A[@]}" --json
check "rolled_back by 3, both sides named" jq1 '.verdict=="rolled_back" and .exit==4 and .local.seq==6 and .anchored.seq==9 and .behind==3 and (.message|test("ends at seq 6.*seq 9 .*block [0-9]+"))' out
expect 4 "status (text) of the old copy" tally status j "${A[@]}"
check "text: 'j: rolled_back'" test "$(head -n 1 out)" = "j: rolled_back"
expect 4 "append refuses the old copy" tally append j --key-file k "${A[@]}" <in
check "append names the verdict" grep -q 'refusing j: verdict rolled_back (exit 4)' err
check "append message names both sides" grep -q 'local journal ends at seq 6.*seq 9 (head 0x[0-9a-f]*\.\.\.) is anchored in block' err
check "nothing was appended" test "$("$TALLY" head j --json | jq .seq)" = 6
expect 4 "cat refuses the old copy" tally cat j --key-file k --rpc $R1 --contract $C --writer $A0
check "cat printed nothing" test ! -s out
expect 4 "verify refuses the old copy" tally verify j --key-file k "${A[@]}"
expect 4 "checkpoint refuses to anchor over it" tally checkpoint j --key-file k "${A[@]}"
expect 0 "without anchor options the old copy verifies (the chain is what catches it)" tally verify j --key-file k

# ---- deleted, then a new history under the same id: forked -----------------
rm -rf j
expect 1 "status of a missing directory without the key (no id to look up)" tally status j "${A[@]}"
expect 4 "status of the deleted journal (id from key and name)" tally status j "${A[@]}" --key-file k --name e2e --json
check "deleted, anchored up to seq 9" jq1 '.verdict=="deleted" and .journal_present==false and .anchored.seq==9' out
expect 4 "init refuses to start over the anchored history" tally init j --key-file k --name e2e "${A[@]}"
check "init says why" grep -q 'refusing to start a new journal over an anchored history' err
check "init created nothing" bash -c "! '$TALLY' head j >/dev/null 2>&1"
expect 0 "init --accept-history-loss" tally init j --key-file k --name e2e "${A[@]}" --accept-history-loss
check "init warns about the loss" grep -q 'accept-history-loss: starting a new history' err
expect 4 "the new, empty journal is behind the anchor" tally status j "${A[@]}" --json
check "rolled_back by 9" jq1 '.verdict=="rolled_back" and .behind==9' out
seq 1 12 | sed 's/^/other history /' >in
expect 0 "append another history (no anchor options)" tally append j --key-file k <in
expect 4 "status of the other history" tally status j "${A[@]}" --json
check "forked at seq 9, both links named" jq1 '.verdict=="forked" and .local.seq==12 and .anchored.seq==9 and (.message|test("at seq 9 the local link is 0x[0-9a-f]+\\.\\.\\., the anchored head is 0x[0-9a-f]+\\.\\.\\. \\(block"))' out

# ---- stale anchor: the node's chain goes back (evm_snapshot / evm_revert) ----
expect 0 "init j2" tally init j2 --key-file k --name stale
seq 1 3 >in
expect 0 "append 3 to j2" tally append j2 --key-file k <in
expect 0 "checkpoint j2 at seq 3" tally checkpoint j2 --key-file k "${A[@]}"
snap=$(rpc "$R1" evm_snapshot)
check "evm_snapshot" test -n "$snap" -a "$snap" != null
expect 0 "append 2 more to j2" tally append j2 --key-file k <in
expect 0 "checkpoint j2 at seq 7" tally checkpoint j2 --key-file k "${A[@]}"
check "anchored seq 7" grep -q '^anchored j2: seq 7 ' out
check "evm_revert" test "$(rpc "$R1" evm_revert "[$snap]")" = true
expect 4 "status after the chain went back" tally status j2 "${A[@]}" --json
check "stale_anchor: the journal's CHECKPOINT says seq 7, the node seq 3" jq1 '.verdict=="stale_anchor" and .anchored.seq==3 and .checkpoint.seq==7 and (.message|test("seq 7 was anchored in block [0-9]+.*says seq 3"))' out
expect 4 "verify refuses it too" tally verify j2 --key-file k "${A[@]}"
expect 4 "append refuses it too" tally append j2 --key-file k "${A[@]}" <in

# ---- a locally signed writer (--signer-key-file, deterministic key #1) -----
expect 0 "init j3" tally init j3 --key-file k --name signed
printf 'signed 1\nsigned 2\n' >in
expect 0 "append 2 to j3" tally append j3 --key-file k <in
S=(--rpc "$R1" --contract "$C" --signer-key-file signer.key)
expect 0 "checkpoint signed locally" tally checkpoint j3 --key-file k "${S[@]}"
check "anchored seq 2 through eth_sendRawTransaction" grep -q '^anchored j3: seq 2 ' out
expect 0 "status with the signer key" tally status j3 "${S[@]}" --json
check "fresh under writer #1" jq1 '.verdict=="fresh" and .anchored.seq==2' out
expect 0 "status with --writer (no key needed to read)" tally status j3 --rpc $R1 --contract $C --writer $A1
expect 0 "TALLY_SIGNER_KEY_FILE" env TALLY_SIGNER_KEY_FILE=signer.key "$TALLY" checkpoint j3 --key-file k --rpc $R1 --contract $C
check "nothing new" grep -q '^nothing new in j3' out
expect 1 "status under another writer: configuration mismatch" tally status j3 "${A[@]}"
check "the mismatch names the journal's writer" grep -qi "anchor configuration mismatch.*writer $A1" err
chmod 644 signer.key
expect 5 "a signer key file readable by others is refused" tally checkpoint j3 --key-file k "${S[@]}"
check "the key is not printed" bash -c "! grep -qi 6cbed15c793ce576 err out"
chmod 600 signer.key

# ---- non-monotonic: a majority of nodes that never saw the anchor --------------
# m1 is anchored at seq 5 on N1 only. m2 has the same id (same key and name)
# and 3 records. N2 and N3 outvote N1 (--rpc-quorum 2), so m2 looks fresh,
# but the transaction goes to N1, whose contract refuses to go back.
expect 0 "init m1" tally init m1 --key-file k --name mono
seq 1 5 >in
expect 0 "append 5 to m1" tally append m1 --key-file k <in
expect 0 "checkpoint m1 on N1" tally checkpoint m1 --key-file k "${A[@]}"
expect 0 "init m2 (same id)" tally init m2 --key-file k --name mono
seq 1 3 >in
expect 0 "append 3 to m2" tally append m2 --key-file k <in
expect 4 "checkpoint m2 through N1,N2,N3 with quorum 2" tally checkpoint m2 --key-file k --rpc $R1 --rpc $R2 --rpc $R3 --rpc-quorum 2 --contract $C --from $A0
check "the contract's refusal is decoded" grep -q 'refused by the contract: seq 3 is not greater than 5' err
check "the outvoted endpoint is reported" grep -q "warning: RPC endpoints disagree: .*:$P1 says seq 5" err
check "m2 got no CHECKPOINT record" test "$("$TALLY" head m2 --json | jq .seq)" = 3

# ---- two endpoints that disagree ---------------------------------------------
expect 1 "status of m1 through N1 and N2 (all must agree)" tally status m1 --rpc $R1 --rpc $R2 --contract $C --from $A0
check "the disagreement names both endpoints and answers" grep -q "disagree.*$P1 says seq 5.*$P2 says seq 0\|disagree.*$P2 says seq 0.*$P1 says seq 5" err
expect 1 "verify through disagreeing endpoints" tally verify m1 --rpc $R1 --rpc $R2 --contract $C --from $A0

# ---- anchored appends ------------------------------------------------------------
expect 0 "init j5" tally init j5 --key-file k --name anchored
seq 1 4 >in
expect 0 "append --anchored --ack" tally append j5 --key-file k --anchored --ack "${A[@]}" <in
check "acks 1..4 (each covered by a confirmed anchor)" test "$(tr '\n' ' ' <out)" = "1 2 3 4 "
expect 0 "status j5" tally status j5 "${A[@]}" --json
check "the 4 records waiting together shared one anchor" jq1 '.verdict=="fresh" and .anchored.seq==4 and .checkpoints==1' out

# ---- the file backend (development) --------------------------------------------
expect 0 "init j8" tally init j8 --key-file k --name file
expect 0 "append to j8" tally append j8 --key-file k <in
expect 0 "checkpoint j8 into an anchor file" tally checkpoint j8 --key-file k --anchor-file "$work/anchors"
check "anchored in the anchor file" grep -q '^anchored j8: seq 4 .* in the anchor file; CHECKPOINT record seq 5$' out
check "the anchor file has its header and one journal" test "$(head -n 1 anchors)" = "tally-anchor-file 1" -a "$(wc -l <anchors)" -eq 2
expect 0 "status against the anchor file" tally status j8 --anchor-file "$work/anchors"
expect 1 "the chain target refuses a journal anchored through another configuration" tally status j8 "${A[@]}"
check "the mismatch is named" grep -q 'anchor configuration mismatch.*anchor file' err

# ---- tally checkpoint --every, and a writer beside it ------------------------
expect 0 "init j7" tally init j7 --key-file k --name every
expect 0 "append to j7" tally append j7 --key-file k <in
"$TALLY" checkpoint j7 --key-file k "${A[@]}" --every 1 >every.out 2>every.err & cp_pid=$!
bg_pids+=("$cp_pid")
check "checkpoint --every anchors" wait_for 'anchored seq 4' every.err 10
expect 1 "a writer beside 'tally checkpoint --every' is refused" tally append j7 --key-file k <in
check "it says another writer holds the journal" grep -q 'another writer holds it' err
kill -TERM "$cp_pid"; wait "$cp_pid"; rc=$?
check "SIGTERM ends checkpoint --every cleanly (exit 0)" test "$rc" -eq 0
check "it reports how it stopped" grep -q 'stopped by SIGTERM' every.err

# ---- the node goes away during append --checkpoint-every, and comes back ------
expect 0 "init j6" tally init j6 --key-file k --name outage
mkfifo feed
( i=0; while :; do i=$((i + 1)); echo "event $i"; sleep 0.02; done ) >feed & feeder=$!
bg_pids+=("$feeder")
"$TALLY" append j6 --key-file k --ack --checkpoint-every 1 "${A[@]}" <feed >acks 2>append.err & app=$!
bg_pids+=("$app")
check "the appender anchors" wait_for 'checkpoint: anchored seq' append.err 10
"$ganache" stop "$N1"
before=$(wc -l <acks)
check "anchoring fails while the node is down" wait_for 'checkpoint: anchoring failed' append.err 10
sleep 1.5
during=$(wc -l <acks)
check "appends go on while the node is down ($before -> $during acks)" test "$during" -gt $((before + 20))
lines=$(wc -l <append.err)
"$ganache" start --db "$work/chain1" --log "$work/node1.log" --port "$P1" >node1 2>node1.err
old_n1=$N1
read -r port N1 <node1
for i in "${!node_pids[@]}"; do [ "${node_pids[$i]}" = "$old_n1" ] && node_pids[$i]=$N1; done
check "N1 back on port $P1 with its chain" test "${port:-}" = "$P1" -a "$(rpc "$R1" eth_getCode "[\"$C\",\"latest\"]" | tr -d '"' | wc -c)" -gt 100
check "anchoring resumes once the node is back" wait_for 'checkpoint: anchored seq' append.err 20 "$lines"
kill "$feeder"; wait "$app"; rc=$?
check "the appender exits 0 at the end of its input" test "$rc" -eq 0
expect 0 "cat j6" tally cat j6 --key-file k --json
jq -r 'select(.type==65282).seq' out | sort >ckpt.seqs
jq -r 'select(.type==0).seq' out | sort >own.seqs
check "the checkpointer appended CHECKPOINT records between the appends" test "$(wc -l <ckpt.seqs)" -ge 2
check "--ack acknowledged exactly the appender's own records, not the CHECKPOINT seqs" cmp -s own.seqs <(sort acks)
expect 0 "status j6" tally status j6 "${A[@]}" --json
check "fresh, anchored past what was appended during the outage" jq1 '.verdict=="fresh" and .anchored.seq>=($d|tonumber)' out --arg d "$during"
check "lag grew while the node was down" bash -c "grep 'anchoring failed' append.err | tail -n 1 | grep -Eq 'lag ([2-9][0-9]|[0-9]{3,}) records'"
expect 0 "j3 (signed writer) is still fresh on the restarted chain" tally status j3 "${S[@]}"

echo "1..$n"
if [ "$fails" -gt 0 ]; then echo "checkpoint-e2e: $fails of $n checks failed"; exit 1; fi
echo "checkpoint-e2e: all $n checks passed"
