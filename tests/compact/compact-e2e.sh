#!/usr/bin/env bash
# compact-e2e.sh — `tally compact` end to end: the real binary ($TALLY) on
# real journals in a temp dir. Dry run writes nothing; a compaction prunes
# superseded records and merges small files; verify (with and without the
# key) and the independent Python verifier (tests/vectors/verify.py) accept
# the result with the same head; cat --all lists pruned records; the JSON
# report parses; a second writer holding DIR makes compact fail (exit 1);
# cat --from-snapshot on a journal without a snapshot starts at seq 1.
set -u
TALLY=${TALLY:?set TALLY to the tally binary}
VERIFY_PY=${VERIFY_PY:-}
command -v jq >/dev/null || { echo "compact-e2e: jq is needed"; exit 1; }

work=$(mktemp -d "${TMPDIR:-/tmp}/tally-compact-e2e.XXXXXX")
bg=""
cleanup() { [ -n "$bg" ] && kill "$bg" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
cd "$work"
exec </dev/null
unset TALLY_KEY_FILE TALLY_KEY_SOURCE

n=0 fails=0
ok()     { n=$((n + 1)); echo "ok $n - $*"; }
not_ok() { n=$((n + 1)); fails=$((fails + 1)); echo "not ok $n - $*"; }
check()  { local d=$1; shift; if "$@"; then ok "$d"; else not_ok "$d"; fi; }
run() { "$@" >out 2>err; rc=$?; }
expect() {
  local want=$1 d=$2; shift 2
  run "$@"
  if [ "$rc" -eq "$want" ]; then ok "$d (exit $want)"
  else not_ok "$d: exit $rc, want $want"; sed 's/^/#   /' err; fi
}
T() { "$TALLY" "$@"; }
jqe() { jq -e "$1" "$2" >/dev/null; }
snap() { (cd "$1" && for f in *.seg; do printf '%s %s\n' "$f" "$(cksum <"$f")"; done); }

T keygen k >/dev/null
T init j --key-file k --segment-size 4096 >/dev/null
# 24 writer sessions (one segment file each), 4 record keys: every key is
# overwritten 6 times, 25 records per session.
for i in $(seq 1 24); do
  seq 1 25 | sed "s/^/session $i line with some padding to make it longer /" |
    T append j --key-file k --key "k$((i % 4))" --sync none >/dev/null
done
T head j >head0
files0=$(ls j/*.seg | wc -l)

expect 0 "compact --help" T compact --help
check "help says a running writer makes it fail" grep -q "another writer" out
check "tally --help lists compact" sh -c "'$TALLY' --help | grep -q '^  compact '"
expect 2 "compact without a key" T compact j
expect 2 "compact with a bad --retention" T compact j --key-file k --retention x

snap j >before
expect 0 "dry run" T compact j --key-file k --dry-run --json
check "dry run: JSON with a plan" jqe '.dry_run and .records_pruned == 596 and .compaction_seq == 0' out
snap j >after_dry
check "dry run writes nothing" cmp -s before after_dry

expect 0 "compact" T compact j --key-file k --target-size 16K --json
cp out report.json
check "report: 596 superseded records pruned (the newest of each key stays)" \
  jqe '.records == 600 and .records_pruned == 596 and .pruned_superseded == 596' report.json
check "report: files merged" jqe '.files_after < .files_before and .segments_merged > 0' report.json
check "report: COMPACTION record at 601" jqe '.compaction_seq == 601' report.json
check "fewer files" [ "$(ls j/*.seg | wc -l)" -lt "$files0" ]

expect 0 "verify with the key" T verify j --key-file k
check "verify counts the pruned records" grep -q "601 (seq 1..601), 596 pruned" out
expect 0 "verify without the key" T verify j
T head j >head1
expect 0 "cat --all" T cat j --key-file k --all
check "cat --all lists 596 pruned records" [ "$(grep -c ' pruned$' out)" -eq 596 ]
expect 0 "cat" T cat j --key-file k
check "cat shows the 4 live records and the COMPACTION record" [ "$(wc -l <out)" -eq 5 ]
check "the live records are the last of each key" \
  [ "$(grep -c -E 'k[0-3] session (21|22|23|24) .* 25$' out)" -eq 4 ]
expect 0 "cat --from-snapshot without a snapshot" T cat j --key-file k --from-snapshot --all
check "... starts at seq 1" sh -c "head -1 out | grep -q '^1 '"

if [ -n "$VERIFY_PY" ] && python3 -c 'import cryptography' 2>/dev/null; then
  expect 0 "independent verifier, keyed" python3 "$VERIFY_PY" j --key-file k
  check "same head" grep -q "head 601 $(awk '{print $2}' head1)" out
  expect 0 "independent verifier, keyless" python3 "$VERIFY_PY" j
else
  ok "# SKIP independent verifier (python3-cryptography missing)"
fi

# A second compaction: nothing left to do, no record.
expect 0 "second compaction" T compact j --key-file k --target-size 16K --json
check "nothing to do" jqe '.records_pruned == 0 and .compaction_seq == 0' out

# A writer holds DIR: compact refuses.
mkfifo hold
nseg=$(ls j/*.seg | wc -l)
T append j --key-file k --key held <hold >/dev/null 2>&1 &
bg=$!
exec 3>hold
# The writer holds DIR once it has started its segment (waiting passively:
# a probe that took the lock could make the writer fail with EBUSY).
for _ in $(seq 1 100); do
  [ "$(ls j/*.seg | wc -l)" -gt "$nseg" ] && break
  sleep 0.05
done
expect 1 "compact while a writer holds DIR" T compact j --key-file k
check "the message says so" grep -q "another writer holds it" err
echo "held record" >&3
exec 3>&-
wait "$bg"; bg=""
expect 0 "compact after the writer closed" T compact j --key-file k --json

echo "1..$n"
[ "$fails" -eq 0 ]
