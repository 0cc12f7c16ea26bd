#!/usr/bin/env bash
# audit-e2e.sh — end-to-end test of `tally audit` ($TALLY, set by meson) on
# real journals in a temp dir: clean reports (text and JSON), a flipped byte
# in each kind of place (segment header, frame header, ciphertext, tag,
# stored link, CHECKPOINT record, metadata) reported at its file, offset and
# seq with exit 3, a torn tail, a pruned journal (when `tally compact`
# exists), an audit while a writer appends, and — on a real local node
# (tests/chain/ganache.sh; skipped when ganache is not installed) — the
# online anchor check, an exported evidence bundle verified offline inside
# `unshare -n` (no network), altered bundles caught (exit 3), and a rolled
# back copy and a stale bundle caught (exit 4).
set -u
TALLY=${TALLY:?set TALLY to the tally binary}
here=$(cd "$(dirname "$0")" && pwd)
ganache="$here/../chain/ganache.sh"
command -v jq >/dev/null || { echo "audit-e2e: jq is needed (scripts/setup.sh installs it)"; exit 1; }
command -v python3 >/dev/null || { echo "audit-e2e: python3 is needed"; exit 1; }

work=$(mktemp -d "${TMPDIR:-/tmp}/tally-audit-e2e.XXXXXX")
bg_pids=()
node_pid=""
cleanup() {
  for p in "${bg_pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  [ -n "$node_pid" ] && "$ganache" stop "$node_pid" >/dev/null 2>&1
  rm -rf "$work"
}
trap cleanup EXIT
cd "$work"
exec </dev/null
unset TALLY_KEY_FILE TALLY_KEY_SOURCE TALLY_RPC_URL TALLY_CONTRACT TALLY_SIGNER_KEY_FILE

n=0 fails=0
ok()     { n=$((n + 1)); echo "ok $n - $*"; }
not_ok() { n=$((n + 1)); fails=$((fails + 1)); echo "not ok $n - $*"; }
check()  { local d=$1; shift; if "$@"; then ok "$d"; else not_ok "$d"; fi; }
run() { "$@" >out 2>err; rc=$?; }
tally() { "$TALLY" "$@"; }
# jq1 FILTER: out holds exactly one JSON document and FILTER holds on it.
jq1() { jq -s -e "length==1 and (.[0] | $1)" out >/dev/null; }
expect() {
  local want=$1 d=$2; shift 2
  run "$@"
  if [ "$rc" -eq "$want" ]; then ok "$d (exit $want)"
  else not_ok "$d: exit $rc, want $want"; sed 's/^/#   /' err | head -5; tail -3 out | sed 's/^/#   /'; fi
}
flip_byte() {  # FILE OFFSET: xor the byte with 0x01
  python3 - "$1" "$2" <<'EOF'
import sys
p, o = sys.argv[1], int(sys.argv[2])
with open(p, 'r+b') as f:
    f.seek(o); b = f.read(1); f.seek(o); f.write(bytes([b[0] ^ 1]))
EOF
}
# frame DIR SEQ: prints "FILE OFFSET BODY_LEN VTYPE" of the frame of SEQ.
frame() {
  python3 - "$1" "$2" <<'EOF'
import os, struct, sys
d, want = sys.argv[1], int(sys.argv[2])
for name in sorted(n for n in os.listdir(d) if n.endswith('.seg')):
    b = open(os.path.join(d, name), 'rb').read(); p = 0
    while p + 32 <= len(b):
        if b[p:p+8] == b'TALLYSEG': p += 160; continue
        vtype, seq, = struct.unpack_from('<HQ', b, p + 6)
        bl, = struct.unpack_from('<I', b, p + 24)
        if seq == want: print(name, p, bl, vtype); sys.exit(0)
        p += 64 + bl
sys.exit(1)
EOF
}

tally keygen k >/dev/null

# ---- a clean journal: text and JSON ----------------------------------------
tally init j --key-file k --segment-size 4096 >/dev/null
seq 1 150 | sed 's/^/first batch record /' | tally append j --key-file k
tally checkpoint j --key-file k --anchor-file af >/dev/null
seq 1 150 | sed 's/^/second batch record /' | tally append j --key-file k
tally checkpoint j --key-file k --anchor-file af >/dev/null
seq 1 5 | tally append j --key-file k

expect 0 "keyless audit of a clean journal" tally audit j
check "text report names the journal id" grep -q '^  journal id    [0-9a-f]\{64\}$' out
check "text report has a verdict line" grep -q '^verdict: OK: 307 records up to seq 307' out
check "text report counts CHECKPOINT records" grep -q '^  anchors       2 CHECKPOINT records' out
check "no progress bar when stderr is not a terminal" bash -c '! grep -q $'"'"'\r'"'"' err'
expect 0 "keyed audit, JSON" tally audit j --key-file k --json
check "JSON: ok, keyed, counts, head" jq1 '.ok and .keyed and .exit==0 and .records.total==307 and .records.clear==2 and .first_seq==1 and .last_seq==307 and .head.seq==307 and (.head.link|length)==64'
check "JSON: anchors from the CHECKPOINT records" jq1 '.anchors.checkpoints==2 and .anchors.links_checked==2 and .anchors.latest.seq==301 and .anchors.latest.record_seq==302 and .anchors.unanchored_tail==6 and .anchors.latest.backend=="file"'
check "JSON: no failure, not live, not partial" jq1 '.failure==null and (.range.live|not) and (.partial|not)'
check "JSON: timestamps are exact integers" grep -Eq '"first_ts":[0-9]{19},' out
expect 0 "online anchor check (anchor file)" tally audit j --anchor-file af --json
check "JSON: anchor check fresh, 2 matched" jq1 '.anchor_check.mode=="chain" and .anchor_check.checked==2 and .anchor_check.freshness.verdict=="fresh"'
expect 0 "partial audit --from 100 --to 200" tally audit j --from 100 --to 200 --json
check "JSON: partial range" jq1 '.partial and .records.total==101 and .first_seq==100 and .last_seq==200'
expect 2 "--from above --to is a usage error" tally audit j --from 9 --to 3
expect 2 "--evidence and anchor options exclude each other" tally audit j --evidence x --anchor-file af
expect 5 "wrong key" bash -c "'$TALLY' keygen k2 >/dev/null && '$TALLY' audit j --key-file k2"
expect 1 "not a journal" tally audit nowhere

# ---- one flipped byte in each kind of place --------------------------------
cp -a j pristine
# tamper NAME FILE OFFSET WHERE SEQ WANT_OFFSET: flip, audit (keyless and
# keyed, JSON), expect exit 3 and the failure at FILE, WANT_OFFSET, SEQ.
tamper() {
  local name=$1 file=$2 off=$3 where=$4 seq=$5 woff=$6 key
  rm -rf t; cp -a pristine t
  flip_byte "t/$file" "$off"
  for key in "" "--key-file k"; do
    run tally audit t $key --json
    if [ "$rc" -eq 3 ] && jq1 ".ok==false and .exit==3 and .failure.where==\"$where\" and .failure.file==\"$file\" and ($woff < 0 or .failure.offset==$woff) and ($seq < 0 or .failure.seq==$seq)"; then
      ok "$name${key:+ (keyed)}: exit 3 at $file, offset $woff, where $where"
    else
      not_ok "$name${key:+ (keyed)}: exit $rc"; jq -c .failure out | sed 's/^/#   /'
    fi
  done
}
read -r f5 o5 b5 _ < <(frame pristine 5)
read -r f6 o6 b6 _ < <(frame pristine 6)
read -r f7 o7 b7 _ < <(frame pristine 7)
read -r f8 o8 b8 _ < <(frame pristine 8)
read -r fc oc bc vc < <(frame pristine 151)
check "seq 151 is a CHECKPOINT record" test "$vc" = 65282
seg2=$(ls pristine | grep '\.seg$' | sed -n 2p)
tamper "segment header (salt)" "$seg2" 48 segment_header -1 0
tamper "frame header (ts)" "$f5" $((o5 + 16)) frame 5 "$o5"
tamper "ciphertext" "$f6" $((o6 + 40)) frame 6 "$o6"
tamper "tag" "$f7" $((o7 + 32 + b7 - 2)) frame 7 "$o7"
tamper "stored link" "$f8" $((o8 + 32 + b8 + 3)) frame 8 $((o8 + 32 + b8))
tamper "CHECKPOINT record (anchored head)" "$fc" $((oc + 32 + 16 + 20)) checkpoint 151 "$oc"
tamper "metadata" tally.meta 40 metadata -1 -1
run tally audit t
check "the text verdict names the place" grep -q '^verdict: FAILED (integrity, exit 3): tally.meta (metadata)' out
rm -rf t; cp -a pristine t
flip_byte "t/$f6" $((o6 + 40))
run tally audit t
check "text: first bad place with file, offset and seq" grep -q "^verdict: FAILED (integrity, exit 3): $f6, offset $o6, seq 6 (frame): " out
check "stderr: one line with the place" grep -q "^tally audit: t: $f6: offset $o6, seq 6: " err

# A torn tail (half a frame after the last): exit 3, where tail.
rm -rf t; cp -a pristine t
last=$(ls t | grep '\.seg$' | tail -1)
python3 - "t/$last" <<'EOF'
import struct, sys
p = sys.argv[1]; b = open(p, 'rb').read()
frame = b'TFRM' + bytes([1, 0, 0, 0]) + struct.pack('<QQII', 308, 0, 100, 0) + bytes(10)
open(p, 'ab').write(frame)
EOF
run tally audit t --json
check "torn tail: exit 3, where tail, seq 308" bash -c "[ $rc -eq 3 ] && jq -e '.failure.where==\"tail\" and .failure.seq==308 and .records.total==307' out >/dev/null"

# ---- a pruned journal ---------------------------------------------------------
if tally help compact >/dev/null 2>&1; then
  # The same record key 100 times, in sealed segments: 99 superseded.
  tally init p --key-file k --segment-size 4096 >/dev/null
  seq 1 100 | tally append p --key-file k --key same
  seq 1 10 | tally append p --key-file k --key other
  run tally compact p --key-file k
  check "tally compact ran (exit 0)" test "$rc" -eq 0
  expect 0 "audit of a compacted journal" tally audit p --key-file k --json
  check "JSON: pruned records, all accounted for by COMPACTION records" jq1 '.records.pruned > 0 and .records.pruned == .compactions.pruned and .compactions.count >= 1 and .compactions.links_checked == .compactions.count and .note == null'
  expect 0 "keyless audit of the compacted journal" tally audit p --json
else
  ok "# SKIP pruned journal via the CLI: no 'tally compact' command yet (test-audit covers pruned journals through the library)"
fi

# ---- audit while a writer appends -------------------------------------------------
tally init live --key-file k --segment-size 65536 >/dev/null
seq 1 3000 | tally append live --key-file k
"$TALLY" append live --key-file k < <(seq 1 5000000 | sed 's/^/appended while auditing /') &
bg_pids+=($!)
saw_live=0 all_ok=1
for i in $(seq 1 30); do
  run tally audit live --key-file k --json
  [ "$rc" -eq 0 ] || { all_ok=0; jq -c .failure out | sed 's/^/#   /'; }
  if jq1 '.range.live and .range.end_head_seq > .range.start_head_seq and .last_seq == .range.start_head_seq'; then
    saw_live=1; break
  fi
  sleep 0.2
done
check "audits during appends verify (exit 0)" test $all_ok -eq 1
check "the report says the journal grew and where it stopped" test $saw_live -eq 1
saw_line=0
for i in $(seq 1 30); do
  run tally audit live
  if grep -q '^  live          a writer appended during the audit: the journal grew to seq [0-9]*; audited up to seq [0-9]* (the head at start)$' out; then
    saw_line=1; break
  fi
  sleep 0.2
done
check "text: the live line" test $saw_line -eq 1
kill "${bg_pids[@]}" 2>/dev/null; wait "${bg_pids[@]}" 2>/dev/null; bg_pids=()

# ---- anchors on a real local node -----------------------------------------------------
if [ ! -x "$here/../chain/node_modules/.bin/ganache" ]; then
  ok "# SKIP chain part: ganache not installed (scripts/setup.sh)"
  echo "1..$n"
  [ $fails -eq 0 ]; exit
fi
read -r port node_pid < <("$ganache" start --log "$work/ganache.log") || { not_ok "ganache did not start"; echo "1..$n"; exit 1; }
rpc="http://127.0.0.1:$port"
from=$(curl -s -H 'Content-Type: application/json' \
  -d '{"jsonrpc":"2.0","id":1,"method":"eth_accounts","params":[]}' "$rpc" | jq -r '.result[0]')
contract=$(tally anchor-deploy --rpc "$rpc" --from "$from")
check "contract deployed" test -n "$contract"
anchor=(--rpc "$rpc" --contract "$contract" --writer "$from")
tally init c --key-file k --segment-size 4096 --name chained >/dev/null
seq 1 100 | tally append c --key-file k
tally checkpoint c --key-file k --rpc "$rpc" --contract "$contract" --from "$from" >/dev/null
seq 1 100 | tally append c --key-file k
cp -a c c-old                       # a copy that will be behind the chain
tally checkpoint c --key-file k --rpc "$rpc" --contract "$contract" --from "$from" >/dev/null
expect 0 "export an evidence bundle (early)" tally audit c --export-evidence early.json "${anchor[@]}"
seq 1 100 | tally append c --key-file k
tally checkpoint c --key-file k --rpc "$rpc" --contract "$contract" --from "$from" >/dev/null
seq 1 7 | tally append c --key-file k

expect 0 "online audit against the chain" tally audit c "${anchor[@]}" --key-file k --json
check "JSON: 3 CHECKPOINT records match the chain, fresh" jq1 '.anchor_check.mode=="chain" and .anchor_check.checked==3 and .anchor_check.freshness.verdict=="fresh" and .anchor_check.freshness.unanchored_tail==8'
expect 0 "export the evidence bundle" tally audit c --export-evidence ev.json "${anchor[@]}" --json
check "JSON after export: audited against the new bundle" jq1 '.anchor_check.mode=="evidence" and .anchor_check.evidence.anchors==3 and .anchor_check.checked==3'
check "the bundle has proofs for every anchor" jq -e >/dev/null '(.anchors|length)==3 and all(.anchors[]; (.tx_proof|length)>0 and (.receipt_proof|length)>0) and (.latest.account_proof|length)>0' ev.json

# Offline: no network at all inside the namespace.
if unshare -n true 2>/dev/null; then netns=(unshare -n)
elif unshare -rn true 2>/dev/null; then netns=(unshare -rn)
else netns=(); fi
if [ ${#netns[@]} -gt 0 ]; then
  check "no network inside ${netns[*]}" bash -c "! ${netns[*]} curl -s -m 2 $rpc >/dev/null 2>&1"
  expect 0 "offline audit with the bundle inside ${netns[*]}" "${netns[@]}" "$TALLY" audit c --evidence ev.json --key-file k --json
  check "JSON offline: 3 anchors checked, fresh as of the bundle's block" jq1 '.anchor_check.mode=="evidence" and .anchor_check.checked==3 and .anchor_check.freshness.verdict=="fresh" and .anchor_check.evidence.trusted=="block hashes"'
  expect 0 "offline text report" "${netns[@]}" "$TALLY" audit c --evidence ev.json
  check "text: evidence line and fresh verdict" bash -c "grep -q '^  evidence      ev.json: 3 anchors proven' out && grep -q '^verdict: OK: .* anchors match, fresh' out"
else
  not_ok "cannot make a network namespace (unshare -n / -rn): offline audit not run"
fi
[ ${#netns[@]} -gt 0 ] || netns=(env)

# Altered bundles are caught, each with exit 3.
flipjq='def flip(i): .[0:i] + (if .[i:i+1]=="0" then "1" else "0" end) + .[i+1:];'
for alter in '.anchors[1].receipt |= flip(80)' '.anchors[0].header |= flip(300)' \
             '.anchors[2].tx |= flip(90)' '.anchors[1].receipt_proof[0] |= flip(70)' \
             '.latest.slot_proofs[0][-1] |= flip(100)' '.latest.head |= flip(10)' \
             '.anchors[0].seq = "99"' '.writer |= flip(7)'; do
  jq "$flipjq $alter" ev.json > bad.json
  run "${netns[@]}" "$TALLY" audit c --evidence bad.json --json
  if [ "$rc" -eq 3 ] && jq1 '.failure.where=="evidence"'; then ok "altered bundle ($alter): exit 3"
  else not_ok "altered bundle ($alter): exit $rc"; jq -c .failure out | sed 's/^/#   /'; fi
done

# The journal put back to an old copy: behind the chain.
expect 4 "offline: a rolled back copy (exit 4)" "${netns[@]}" "$TALLY" audit c-old --evidence ev.json --json
check "JSON: verdict rolled_back" jq1 '.anchor_check.freshness.verdict=="rolled_back" and .failure.where=="anchor"'
expect 4 "online: the rolled back copy (exit 4)" tally audit c-old "${anchor[@]}"
# A bundle older than the journal's CHECKPOINT records: stale.
expect 4 "offline: a bundle older than the journal's anchors (exit 4)" "${netns[@]}" "$TALLY" audit c --evidence early.json --json
check "JSON: the newer CHECKPOINT record is not in the bundle" jq1 '.failure.where=="anchor" and (.failure.message|test("not in the evidence bundle"))'
# A bundle of another journal.
tally init other --key-file k --name other >/dev/null
expect 1 "a bundle of another journal (exit 1)" "${netns[@]}" "$TALLY" audit other --evidence ev.json

echo "1..$n"
[ $fails -eq 0 ]
