#!/usr/bin/env bash
# demo.sh — the README's main job: a journal is created, written to, its
# writer crashed with kill -9 mid-stream, recovered, replayed and verified;
# then one flipped byte is caught with its place. Then a local Ethereum node
# is started (tests/chain/ganache.sh), the anchor contract deployed, a
# writer anchors its journal as it appends, and a rollback attack (an old
# copy of the directory put back) is refused with exit 4. Builds nothing:
# run scripts/build.sh first (the README command does; scripts/setup.sh
# installs the node). Uses $TALLY, else build/tools/tally. Exits non-zero if
# any expectation fails.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
TALLY=${TALLY:-$root/build/tools/tally}
if [ ! -x "$TALLY" ]; then
  echo "demo: no tally binary at $TALLY (run: bash scripts/build.sh)" >&2
  exit 1
fi
command -v jq >/dev/null || { echo "demo: jq is needed (bash scripts/setup.sh)" >&2; exit 1; }

work=$(mktemp -d "${TMPDIR:-/tmp}/tally-demo.XXXXXX")
pids=()
node_pid=""
cleanup() {
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  if [ -n "$node_pid" ]; then "$root/tests/chain/ganache.sh" stop "$node_pid" || true; fi
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
cd "$work"
unset TALLY_KEY_FILE TALLY_RPC_URL TALLY_CONTRACT TALLY_SIGNER_KEY_FILE

if [ -t 1 ]; then B=$'\033[1m' D=$'\033[2m' G=$'\033[32m' R=$'\033[31m' N=$'\033[0m'
else B='' D='' G='' R='' N=''; fi
tally() { "$TALLY" "$@"; }
step() { printf '\n%s== %s%s\n' "$B" "$*" "$N"; }
say()  { printf '   %s\n' "$*"; }
cmd()  { printf '%s$ %s%s\n' "$D" "$*" "$N"; }   # the command shown, then run
expect_ok() { printf '   %sok%s %s\n' "$G" "$N" "$*"; }
die()  { printf '\n%sdemo: FAILED: %s%s\n' "$R" "$*" "$N" >&2; exit 1; }

step "A fresh directory: $work"

step "1. A master key and a journal"
cmd "tally keygen demo.key"
tally keygen demo.key
cmd "ls -l demo.key"
ls -l demo.key | sed 's/^/   /'
[ "$(stat -c %a demo.key)" = 600 ] || die "the key file is not mode 0600"
cmd "tally init journal --key-file demo.key --name demo"
tally init journal --key-file demo.key --name demo

step "2. Append three records (each stdin line is one record)"
cmd "printf 'alice paid 10\nbob paid 5\ncarol paid 7\n' | tally append journal --key-file demo.key --type 1 --ack"
acks=$(printf 'alice paid 10\nbob paid 5\ncarol paid 7\n' | tally append journal --key-file demo.key --type 1 --ack)
echo "$acks" | sed 's/^/   ack /'
[ "$(echo $acks)" = "1 2 3" ] || die "expected acks 1 2 3, got: $acks"
expect_ok "acknowledged seqs 1 2 3: each printed once its record was fsynced"

step "3. A writer streams events with --sync batch --ack ... and is killed with kill -9"
say "a shell loop feeds 'event N' lines; the writer prints each seq once it is durable"
cmd "(while :; do echo \"event \$i\"; ...; done) | tally append journal --key-file demo.key --sync batch --ack > acks.txt &"
mkfifo feed
( i=0; while :; do for _ in 1 2 3 4 5 6 7 8 9 10; do i=$((i + 1)); echo "event $i"; done; sleep 0.005; done ) >feed &
feeder=$!; pids+=("$feeder")
# "$TALLY" itself (not the tally function): $! must be the writer process.
"$TALLY" append journal --key-file demo.key --sync batch --ack <feed >acks.txt 2>writer.err &
writer=$!; pids+=("$writer")
sleep 1.5
[ "$(readlink -f /proc/$writer/exe)" = "$(readlink -f "$TALLY")" ] || die "pid $writer is not the tally writer"
cmd "kill -9 $writer   # mid-stream"
kill -9 "$writer"
wait "$writer" 2>/dev/null || true
kill "$feeder" 2>/dev/null || true
wait "$feeder" 2>/dev/null || true
n_acked=$(grep -c . acks.txt || true)
[ "$n_acked" -gt 0 ] || die "the writer acknowledged nothing before it was killed"
say "the writer had acknowledged $n_acked more records: seq $(head -n 1 acks.txt)..$(tail -n 1 acks.txt)"

step "4. The crash left the files as they were; verify looks at the tail"
cmd "tally verify journal      # no key: structure and hash chain"
if tally verify journal >verify.out 2>verify.err; then
  sed 's/^/   /' verify.out | head -n 1
  say "kill -9 stops a process between system calls, so every frame it wrote is whole."
else
  rc=$?
  sed 's/^/   /' verify.err
  [ "$rc" -eq 3 ] || die "verify after the crash: exit $rc"
  say "the writer was killed inside a write: the tail is torn (exit 3); the next open cuts it."
fi
say "A power cut in the middle of a write would leave half a frame at the end of the"
say "last segment. We imitate one: 24 bytes of a frame that never got finished."
last_seg=$(ls journal/*.seg | tail -n 1)
cmd "{ printf 'TFRM'; head -c 20 /dev/urandom; } >> $last_seg"
{ printf 'TFRM'; head -c 20 /dev/urandom; } >>"$last_seg"
cmd "tally verify journal"
set +e; tally verify journal >/dev/null 2>verify.err; rc=$?; set -e
sed 's/^/   /' verify.err
[ "$rc" -eq 3 ] || die "verify of a torn tail: exit $rc, want 3"
expect_ok "verify refuses to call a torn journal clean (exit 3)"

step "5. Reopen: recovery cuts the torn tail and reports it"
cmd "tally append journal --key-file demo.key < /dev/null"
tally append journal --key-file demo.key </dev/null 2>reopen.err
sed 's/^/   /' reopen.err
grep -q "recovered: cut .* bytes from $(basename "$last_seg")" reopen.err \
  || die "the reopen did not report the cut"
expect_ok "the half frame is gone; nothing that was synced was touched"

step "6. Every acknowledged seq is in the journal"
cmd "tally cat journal --key-file demo.key --json | jq .seq"
tally cat journal --key-file demo.key --json >all.json
jq -r .seq all.json >present.txt
n_present=$(wc -l <present.txt)
missing=$(comm -23 <(sort acks.txt) <(sort present.txt) | wc -l)
[ "$missing" -eq 0 ] || die "$missing acknowledged records are missing"
[ "$(tr '\n' ' ' <present.txt)" = "$(seq 1 "$n_present" | tr '\n' ' ')" ] \
  || die "the seqs in the journal are not dense 1..$n_present"
expect_ok "all $n_acked acknowledged seqs present; the journal holds seq 1..$n_present"
extra=$((n_present - 3 - n_acked))
if [ "$extra" -gt 0 ]; then
  say "($extra records after the last ack were written but not yet acknowledged when"
  say " the writer died: they survived too, but nobody had been promised them)"
fi

step "7. Replay"
cmd "tally cat journal --key-file demo.key --to 5"
tally cat journal --key-file demo.key --to 5 | sed 's/^/   /'
cmd "tally cat journal --key-file demo.key --json --from $((n_present - 1))"
tally cat journal --key-file demo.key --json --from $((n_present - 1)) | sed 's/^/   /'
[ "$(jq -r 'select(.seq==2).payload' all.json)" = "bob paid 5" ] || die "seq 2 does not read 'bob paid 5'"
expect_ok "records decrypt to what was appended"

step "8. Verify with and without the key, and the head"
cmd "tally verify journal --key-file demo.key"
tally verify journal --key-file demo.key | sed 's/^/   /'
cmd "tally verify journal"
tally verify journal | sed 's/^/   /'
cmd "tally head journal"
tally head journal | sed 's/^/   /'
[ "$(tally head journal --json | jq .seq)" -eq "$n_present" ] || die "head is not seq $n_present"
expect_ok "the chain verifies; the head is seq $n_present"

step "9. Someone flips one byte in the first segment"
first_seg=$(ls journal/*.seg | head -n 1)
off=200   # inside the first record's ciphertext (header 160 + frame header 32)
b=$(od -An -tu1 -j $off -N1 "$first_seg" | tr -d ' ')
cmd "flip byte $off of $first_seg ($(printf '0x%02x' "$b") -> $(printf '0x%02x' $((b ^ 1))))"
printf "\\x$(printf %02x $((b ^ 1)))" | dd of="$first_seg" bs=1 seek=$off conv=notrunc status=none
for k in "" "--key-file demo.key"; do
  cmd "tally verify journal $k"
  set +e; tally verify journal $k >/dev/null 2>verify.err; rc=$?; set -e
  sed 's/^/   /' verify.err
  say "exit status $rc"
  [ "$rc" -eq 3 ] || die "verify $k after a flipped byte: exit $rc, want 3"
  grep -Eq "$(basename "$first_seg").*offset [0-9]+.*seq [0-9]+" verify.err \
    || die "verify $k did not name the segment, offset and seq"
done
expect_ok "tampering is caught, with and without the key, and its place is named"

step "10. A local Ethereum node and the anchor contract"
say "Nothing above stops the operator of the directory from putting back an old copy:"
say "every old copy is a valid journal. The anchor on a chain does."
cmd "tests/chain/ganache.sh start --db chain      # a local node, its chain kept in ./chain"
set +e; node=$("$root/tests/chain/ganache.sh" start --db "$work/chain" --log "$work/node.log"); rc=$?; set -e
[ "$rc" -eq 0 ] || die "the local node did not start (exit $rc; run bash scripts/setup.sh)"
read -r port node_pid <<<"$node"
export TALLY_RPC_URL="http://127.0.0.1:$port"
say "node on $TALLY_RPC_URL (pid $node_pid)"
say "the writer signs its anchor transactions itself with a key of its own (here the"
say "node's public test account #1), kept in a 0600 file like the master key:"
cmd "echo 0x6cbe...a2a1 > writer.key; chmod 600 writer.key"
( umask 077; echo 0x6cbed15c793ce57650b9877cf6fa156fbef513c4e6134f022a85b1ffdd59b2a1 >writer.key )
export TALLY_SIGNER_KEY_FILE=writer.key
cmd "export TALLY_RPC_URL=$TALLY_RPC_URL TALLY_SIGNER_KEY_FILE=writer.key"
cmd "tally anchor-deploy"
contract=$(tally anchor-deploy)
say "$contract"
[[ "$contract" =~ ^0x[0-9a-fA-F]{40}$ ]] || die "anchor-deploy printed no address: $contract"
export TALLY_CONTRACT=$contract
cmd "export TALLY_CONTRACT=$contract"
expect_ok "the JournalAnchor contract is deployed; one contract serves every journal"

step "11. A writer that anchors as it goes"
cmd "tally init ledger --key-file demo.key --name ledger"
tally init ledger --key-file demo.key --name ledger | sed 's/^/   /'
cmd "(payments, one every 40 ms) | tally append ledger --key-file demo.key --ack --checkpoint-every 1"
( for i in $(seq 1 60); do echo "payment $i"; sleep 0.04; done ) \
  | tally append ledger --key-file demo.key --ack --checkpoint-every 1 >ledger.acks 2>anchor.log \
  || { sed 's/^/   /' anchor.log; die "the anchored writer failed"; }
sed 's/^/   /' anchor.log
[ "$(wc -l <ledger.acks)" -eq 60 ] || die "expected 60 acks"
grep -q 'checkpoint: anchored seq' anchor.log || die "the writer anchored nothing"
say "(each round anchored the head and appended a CHECKPOINT record naming the block)"
cmd "tally checkpoint ledger --key-file demo.key      # anchor the tail once"
tally checkpoint ledger --key-file demo.key | sed 's/^/   /'
cmd "tally status ledger"
tally status ledger | sed 's/^/   /'
[ "$(tally status ledger --json | jq -r .verdict)" = fresh ] || die "the ledger is not fresh"
anchored=$(tally status ledger --json | jq .anchored.seq)
expect_ok "fresh: the local journal holds what the chain says was anchored (seq $anchored)"

step "12. The rollback attack: an old copy of the directory is put back"
cmd "cp -a ledger ledger.saved                         # the operator keeps a copy"
cp -a ledger ledger.saved
cmd "printf 'refund 1\nrefund 2\nrefund 3\n' | tally append ledger --key-file demo.key"
printf 'refund 1\nrefund 2\nrefund 3\n' | tally append ledger --key-file demo.key
cmd "tally checkpoint ledger --key-file demo.key"
tally checkpoint ledger --key-file demo.key | sed 's/^/   /'
cmd "rm -rf ledger && mv ledger.saved ledger          # ... and puts the old copy back"
rm -rf ledger && mv ledger.saved ledger
cmd "TALLY_RPC_URL= tally verify ledger --key-file demo.key     # without the anchor"
TALLY_RPC_URL='' tally verify ledger --key-file demo.key | head -n 1 | sed 's/^/   /'
say "the copy is a perfectly valid journal: encryption and the hash chain cannot tell."
cmd "tally status ledger"
set +e; tally status ledger >status.out 2>&1; rc=$?; set -e
sed 's/^/   /' status.out
say "exit status $rc"
[ "$rc" -eq 4 ] || die "status of the old copy: exit $rc, want 4"
grep -q '^ledger: rolled_back' status.out || die "status did not say rolled_back"
cmd "echo 'refund 4' | tally append ledger --key-file demo.key"
set +e; echo 'refund 4' | tally append ledger --key-file demo.key >/dev/null 2>append.err; rc=$?; set -e
sed 's/^/   /' append.err
say "exit status $rc"
[ "$rc" -eq 4 ] || die "append to the old copy: exit $rc, want 4"
grep -Eq 'local journal ends at seq [0-9]+ .*but seq [0-9]+ \(head 0x[0-9a-f]+\.\.\.\) is anchored in block [0-9]+' append.err \
  || die "the refusal does not name both sides"
expect_ok "the rollback is refused (exit 4); the message names the local head and the anchor"

step "13. Stop the node"
cmd "tests/chain/ganache.sh stop $node_pid"
"$root/tests/chain/ganache.sh" stop "$node_pid"
node_pid=""

printf '\n%sdemo: all expectations held%s\n' "$B" "$N"
