#!/usr/bin/env bash
# cli-e2e.sh — end-to-end test of the `tally` CLI: drives the real binary
# ($TALLY, set by meson) on real journals in a temp dir. Covers the exit
# statuses, every command's --help, the JSON outputs (parsed with jq),
# --ack, cat ranges, recovery of a torn tail, kill -9 of a writer, and a
# flipped byte caught by verify with its place.
set -u
TALLY=${TALLY:?set TALLY to the tally binary}
command -v jq >/dev/null || { echo "cli-e2e: jq is needed (scripts/setup.sh installs it)"; exit 1; }

work=$(mktemp -d "${TMPDIR:-/tmp}/tally-cli-e2e.XXXXXX")
bg_pids=()
cleanup() {
  for p in "${bg_pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
cd "$work"
exec </dev/null   # commands read stdin only where a test redirects it
unset TALLY_KEY_FILE

n=0 fails=0
ok()     { n=$((n + 1)); echo "ok $n - $*"; }
not_ok() { n=$((n + 1)); fails=$((fails + 1)); echo "not ok $n - $*"; }
check()  { local d=$1; shift; if "$@"; then ok "$d"; else not_ok "$d"; fi; }
# run CMD...: stdout in out, stderr in err, status in rc.
run() { "$@" >out 2>err; rc=$?; }
tally() { "$TALLY" "$@"; }
# jqs FILTER FILE: true if FILTER holds; the JSON lines of FILE are slurped
# into one array (jq 1.6's -e looks only at the output of the last input).
# jq1 FILTER FILE [JQ ARGS]: FILE holds exactly one JSON value and FILTER
# holds on it.
jqs() { jq -s -e "$1" "$2" >/dev/null; }
jq1() { local f=$1 file=$2; shift 2; jq -s -e "$@" "length==1 and (.[0] | $f)" "$file" >/dev/null; }
# expect STATUS DESCRIPTION CMD...
expect() {
  local want=$1 d=$2; shift 2
  run "$@"
  if [ "$rc" -eq "$want" ]; then ok "$d (exit $want)"
  else not_ok "$d: exit $rc, want $want"; sed 's/^/#   /' err; fi
}
flip_byte() {  # FILE OFFSET: xor the byte with 0x01
  local b; b=$(od -An -tu1 -j "$2" -N1 "$1" | tr -d ' ')
  printf "\\x$(printf %02x $((b ^ 1)))" | dd of="$1" bs=1 seek="$2" conv=notrunc status=none
}

# ---- top level -----------------------------------------------------------
expect 0 "tally --help" tally --help </dev/null
for c in keygen init append cat head verify; do
  check "tally --help lists $c" grep -q "^  $c " out
done
expect 0 "tally --version" tally --version
check "--version prints the version" grep -Eq '^tally [0-9]+\.[0-9]+\.[0-9]+' out
expect 2 "no command" tally
expect 2 "unknown command" tally frobnicate
expect 2 "help for an unknown command" tally help frobnicate

# ---- help of every command tells the truth ---------------------------------
for c in keygen init append cat head verify; do
  expect 0 "tally $c --help" tally $c --help </dev/null
  cp out help1
  check "$c --help starts with its usage" grep -q "^Usage: tally $c" help1
  check "$c --help lists the exit statuses" grep -q "^  5  wrong or unavailable key" help1
  expect 0 "tally help $c" tally help $c
  check "tally help $c = tally $c --help" cmp -s out help1
  expect 0 "tally $c -h" tally $c -h
  # Every flag the help names is one the command accepts.
  for f in $(grep -o -- '--[a-z][a-z0-9-]*' help1 | sort -u); do
    run tally $c "$f" </dev/null
    if grep -q "unrecognized option" err; then not_ok "$c accepts $f named in its help"
    else ok "$c accepts $f named in its help"; fi
  done
  expect 2 "$c with an unknown option" tally $c --no-such-option
done

# ---- keygen ----------------------------------------------------------------
expect 0 "keygen k1" tally keygen k1
expect 0 "keygen k2" tally keygen k2
check "key file has 32 bytes" test "$(stat -c %s k1)" = 32
check "key file has mode 0600" test "$(stat -c %a k1)" = 600
check "two keys differ" bash -c '! cmp -s k1 k2'
expect 1 "keygen over an existing file" tally keygen k1
check "keygen error names the file" grep -q "^tally keygen: writing key file k1: " err
expect 2 "keygen without FILE" tally keygen

# ---- init ------------------------------------------------------------------
expect 2 "init without a key" tally init j
expect 2 "init with an unknown cipher" tally init j --key-file k1 --cipher rot13
expect 2 "init with a segment size below 4K" tally init j --key-file k1 --segment-size 1K
expect 2 "init with a bad journal id" tally init j --key-file k1 --journal-id abc
expect 5 "init with a missing key file" tally init j --key-file nonexistent.key
expect 0 "init j" tally init j --key-file k1
check "init prints the journal id" grep -Eq 'id [0-9a-f]{64}, cipher aes256gcm' out
id_j=$(grep -Eo 'id [0-9a-f]{64}' out)
expect 1 "init over an existing journal" tally init j --key-file k1
check "init error names the directory" grep -q "^tally init: creating journal j: " err
# The id is derived from key and name: the same key and name give the same id.
expect 0 "init j-same (same key and name)" tally init j-same --key-file k1
check "same key + name -> same journal id" grep -q "$id_j" out
expect 0 "init j-other (other name)" tally init j-other --key-file k1 --name other
check "other name -> other journal id" bash -c "! grep -q '$id_j' out"
explicit=$(printf 'ab%.0s' {1..32})
expect 0 "init with --journal-id" tally init j-id --key-file k1 --journal-id "$explicit"
check "--journal-id is used" grep -q "id $explicit" out

# ---- append --ack, dense seqs, every policy --------------------------------
printf 'alpha\nbeta\ngamma\n' >in
expect 0 "append 3 lines --ack (batch)" tally append j --key-file k1 --ack <in
check "acks are 1 2 3" test "$(tr '\n' ' ' <out)" = "1 2 3 "
seq 1 5 | sed 's/^/always /' >in
expect 0 "append --sync always --ack" tally append j --key-file k1 --sync always --ack <in
check "always acks 4..8" test "$(tr '\n' ' ' <out)" = "4 5 6 7 8 "
seq 1 3 | sed 's/^/none /' >in
expect 0 "append --sync none --ack" tally append j --key-file k1 --sync none --ack <in
check "none acks 9..11" test "$(tr '\n' ' ' <out)" = "9 10 11 "
seq 1 3 | sed 's/^/interval /' >in
expect 0 "append --sync interval --ack" tally append j --key-file k1 --sync interval --interval-ms 20 --ack <in
check "interval acks 12..14" test "$(tr '\n' ' ' <out)" = "12 13 14 "
printf 'no ack\n' >in
expect 0 "append without --ack" tally append j --key-file k1 <in
check "append without --ack prints nothing" test ! -s out
printf 'line one\nline two\n' >in
expect 0 "append --whole --type 7 --key user-1" tally append j --key-file k1 --whole --type 7 --key user-1 --ack <in
check "--whole is one record (seq 16)" test "$(cat out)" = 16
printf 'last line without newline' >in
expect 0 "append a last line without newline" env TALLY_KEY_FILE=k1 "$TALLY" append j --ack <in
check "it is a record (seq 17)" test "$(cat out)" = 17
printf '\xff\xfe\x00binary' >in
expect 0 "append a binary payload with a non-UTF-8 key" tally append j --key-file k1 --whole --key $'\xff\x01' --ack <in
check "binary record is seq 18" test "$(cat out)" = 18
expect 2 "append with a reserved --type" tally append j --key-file k1 --type 0xff01
expect 2 "append with an unknown --sync" tally append j --key-file k1 --sync sometimes
expect 2 "append --interval-ms without --sync interval" tally append j --key-file k1 --interval-ms 5
expect 2 "append without a key" tally append j
expect 1 "append to a directory without a journal" tally append nojournal --key-file k1

# ---- cat -------------------------------------------------------------------
expect 0 "cat --json" tally cat j --key-file k1 --json
cp out all.json
check "cat --json parses with jq" jqs 'length==18' all.json
check "cat --json has 18 records" test "$(jq -s length all.json)" = 18
check "cat --json seqs are 1..18" test "$(jq -r .seq all.json | tr '\n' ' ')" = "$(seq 1 18 | tr '\n' ' ')"
check "payload of seq 2 is beta" test "$(jq -r 'select(.seq==2).payload' all.json)" = beta
check "record has ts, type and key" jqs '.[0] | .seq==1 and (.ts|type=="number") and .type==0 and .key==""' all.json
check "--whole record keeps its newlines" jqs '.[15] | .seq==16 and .payload=="line one\nline two\n" and .type==7 and .key=="user-1"' all.json
check "non-UTF-8 payload is payload_b64" test "$(jq -r 'select(.seq==18).payload_b64' all.json | base64 -d | od -An -tx1 | tr -d ' \n')" = fffe0062696e617279
check "non-UTF-8 key is key_b64" test "$(jq -r 'select(.seq==18).key_b64' all.json | base64 -d | od -An -tx1 | tr -d ' \n')" = ff01
check "binary record has no payload field" jqs '.[17] | .seq==18 and (has("payload")|not) and (has("key")|not)' all.json
expect 0 "cat --from 3 --to 5" tally cat j --key-file k1 --json --from 3 --to 5
check "cat --from 3 --to 5 gives 3 4 5" test "$(jq -r .seq out | tr '\n' ' ')" = "3 4 5 "
expect 0 "cat --from 17" tally cat j --key-file k1 --json --from 17
check "cat --from 17 gives 17 18" test "$(jq -r .seq out | tr '\n' ' ')" = "17 18 "
expect 2 "cat --from after --to" tally cat j --key-file k1 --from 5 --to 3
expect 2 "cat --from not a number" tally cat j --key-file k1 --from 3x
expect 0 "cat (text)" tally cat j --key-file k1 --to 2
check "text line: seq ts type key payload" grep -Eq '^2 [0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9:]{8}\.[0-9]{9}Z 0 - beta$' out
expect 0 "cat (text) of the --whole record" tally cat j --key-file k1 --from 16 --to 16
check "text escapes newlines, keeps the key" grep -Fxq "$(sed -n 1p out | cut -d' ' -f1-2) 7 user-1 line one\\nline two\\n" out
expect 0 "cat with TALLY_KEY_FILE" env TALLY_KEY_FILE=k1 "$TALLY" cat j --to 1
expect 2 "cat without a key" tally cat j

# ---- head ------------------------------------------------------------------
expect 0 "head --json (no key)" tally head j --json
check "head --json parses" jq1 '.seq==18 and (.link|test("^[0-9a-f]{64}$"))' out
head_link=$(jq -r .link out)
expect 0 "head (text)" tally head j
check "head text shows seq and link" bash -c "grep -qx 'seq  18' out && grep -qx 'link $head_link' out"
expect 0 "head of an empty journal" tally head j-same --json
check "empty journal: seq 0" jq1 '.seq==0' out
expect 1 "head of a directory without a journal" tally head nojournal

# ---- verify ----------------------------------------------------------------
expect 0 "verify without key" tally verify j --json
check "verify --json (no key) parses: ok, not keyed, 18 records" jq1 '.ok and (.keyed|not) and .records==18 and .last_seq==18' out
check "verify head = head" jq1 '.head.link==$l and .head.seq==18' out --arg l "$head_link"
expect 0 "verify with key" tally verify j --key-file k1 --json
check "verify --json (key) parses: ok, keyed" jq1 '.ok and .keyed and .records==18 and .cipher=="aes256gcm"' out
expect 0 "verify (text)" tally verify j --key-file k1
check "verify text says ok" grep -q '^ok: j verified with the key' out
expect 0 "verify --no-key with TALLY_KEY_FILE set" env TALLY_KEY_FILE=k1 "$TALLY" verify j --no-key --json
check "--no-key verifies without the key" jq1 '.ok and (.keyed|not)' out
expect 2 "verify --no-key with --key-file" tally verify j --no-key --key-file k1

# ---- wrong or unavailable key: exit 5 -----------------------------------------
expect 5 "cat with the wrong key" tally cat j --key-file k2
expect 5 "append with the wrong key" tally append j --key-file k2
expect 5 "verify with the wrong key" tally verify j --key-file k2
expect 5 "cat with a missing key file" tally cat j --key-file missing.key
cp k1 k-open && chmod 644 k-open
expect 5 "cat with a key file readable by others" tally cat j --key-file k-open
check "key errors do not print key bytes" bash -c "! grep -qi \"$(od -An -tx1 k1 | tr -d ' \n' | cut -c1-16)\" err"

# ---- other ciphers and options, several segments ---------------------------
expect 0 "init xchacha, compressed, 4K segments" tally init j2 --key-file k1 --cipher xchacha20poly1305 --compress --segment-size 4K
# One append per record (--sync always), so the writer can start a new
# segment between any two of them.
for i in $(seq 1 200); do echo "record $i: $(printf 'x%.0s' {1..80})"; done >in
expect 0 "append 200 records" tally append j2 --key-file k1 --sync always --ack <in
check "200 dense acks" test "$(tr '\n' ' ' <out)" = "$(seq 1 200 | tr '\n' ' ')"
expect 0 "verify j2" tally verify j2 --key-file k1 --json
check "j2: several segments, xchacha" jq1 '.segments > 2 and .records==200 and .cipher=="xchacha20poly1305"' out
expect 0 "cat j2 across segments" tally cat j2 --key-file k1 --json --from 50 --to 150
check "cat j2 --from 50 --to 150 gives 101 records" test "$(jq -s 'length' out)" = 101
check "cat j2 payload round trip" test "$(jq -r 'select(.seq==100).payload' out)" = "record 100: $(printf 'x%.0s' {1..80})"

# ---- a second writer ---------------------------------------------------------
mkfifo fifo
"$TALLY" append j --key-file k1 --ack <fifo >writer1.acks 2>writer1.err & w1=$!; bg_pids+=("$w1")
exec 3>fifo
# Once the first writer has acknowledged a record, it holds the journal.
echo "from the first writer" >&3
for _ in $(seq 1 100); do [ -s writer1.acks ] && break; sleep 0.05; done
check "the first writer acknowledged its record" test -s writer1.acks
run tally append j --key-file k1
busy=no
if [ "$rc" -eq 1 ] && grep -q "another writer" err; then busy=yes; else sed 's/^/#   /' err; fi
check "a second writer is refused (exit 1, another writer)" test $busy = yes
exec 3>&-
wait "$w1"; w1_rc=$?
check "the first writer finishes (exit 0)" test "$w1_rc" -eq 0

# ---- acks arrive while stdin is still open, under every policy -------------
for pol in always batch interval none; do
  rm -f fifo-ack && mkfifo fifo-ack
  "$TALLY" append j --key-file k1 --sync "$pol" --ack <fifo-ack >live.acks 2>live.err & wl=$!; bg_pids+=("$wl")
  exec 4>fifo-ack
  echo "live $pol" >&4
  for _ in $(seq 1 100); do [ -s live.acks ] && break; sleep 0.05; done
  check "--sync $pol --ack: the ack comes before stdin closes" test -s live.acks
  exec 4>&-
  wait "$wl"; wl_rc=$?
  check "--sync $pol writer exits 0" test "$wl_rc" -eq 0
done

# ---- kill -9 a writer mid-stream: every acknowledged seq is there ------------
expect 0 "init j3" tally init j3 --key-file k1
( i=0; while :; do for _ in 1 2 3 4 5 6 7 8 9 10; do i=$((i + 1)); echo "event $i"; done; sleep 0.005; done ) >fifo & feeder=$!
bg_pids+=("$feeder")
# "$TALLY" itself, not the tally() function: $! must be the writer process,
# not a subshell around it.
"$TALLY" append j3 --key-file k1 --sync batch --ack <fifo >acks 2>writer.err & writer=$!
bg_pids+=("$writer")
sleep 1
check "the process killed is the tally writer" test "$(readlink -f /proc/$writer/exe)" = "$(readlink -f "$TALLY")"
kill -9 "$writer"; wait "$writer" 2>/dev/null
kill "$feeder" 2>/dev/null; wait "$feeder" 2>/dev/null
acked=$(grep -c . acks)
check "the writer acknowledged records before it was killed ($acked)" test "$acked" -gt 0
check "acks are dense from 1" test "$(tr '\n' ' ' <acks)" = "$(seq 1 "$acked" | tr '\n' ' ')"
expect 0 "reopen j3 after kill -9" tally append j3 --key-file k1
expect 0 "cat j3" tally cat j3 --key-file k1 --json
jq -r .seq out >present
check "every acknowledged seq is present" bash -c '[ -z "$(comm -23 <(sort acks) <(sort present))" ]'
check "j3 seqs are dense" test "$(tr '\n' ' ' <present)" = "$(seq 1 "$(wc -l <present)" | tr '\n' ' ')"
expect 0 "verify j3" tally verify j3 --key-file k1

# ---- a torn tail: verify fails, reopening cuts it and says so ---------------
expect 0 "init j4" tally init j4 --key-file k1
printf 'one\ntwo\nthree\n' >in
expect 0 "append 3 records to j4" tally append j4 --key-file k1 <in
last_seg=$(ls j4/*.seg | tail -n 1)
{ printf 'TFRM'; head -c 20 /dev/zero; } >>"$last_seg"   # half a frame
expect 3 "verify a torn tail" tally verify j4
expect 0 "cat stops quietly at a torn tail" tally cat j4 --key-file k1 --json
check "cat shows the 3 whole records" test "$(jq -s length out)" = 3
expect 0 "reopen j4" tally append j4 --key-file k1
check "reopen reports the cut" grep -q "^tally append: recovered: cut 24 bytes from $(basename "$last_seg"), records from seq 4 lost (never synced)$" err
expect 0 "verify j4 after recovery" tally verify j4 --key-file k1

# ---- a flipped byte: exit 3 naming the segment -------------------------------
first_seg=$(ls j/*.seg | head -n 1)
flip_byte "$first_seg" 200     # inside the first record's body
expect 3 "verify (no key) after a flipped byte" tally verify j
check "verify names segment, offset and seq" grep -Eq "$(basename "$first_seg").*offset [0-9]+.*seq [0-9]+" err
expect 3 "verify (key) after a flipped byte" tally verify j --key-file k1 --json
check "verify --json failure parses" jq1 '(.ok|not) and .exit==3 and .segment==$s' out --arg s "$(basename "$first_seg")"
expect 3 "cat after a flipped byte" tally cat j --key-file k1
check "cat names segment, offset and seq" grep -Eq "^tally cat: reading journal j: .*$(basename "$first_seg").*offset [0-9]+.*seq [0-9]+" err

echo "1..$n"
if [ "$fails" -gt 0 ]; then echo "cli-e2e: $fails of $n checks failed"; exit 1; fi
echo "cli-e2e: all $n checks passed"
