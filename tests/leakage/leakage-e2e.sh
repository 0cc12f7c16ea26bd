#!/bin/bash
# leakage-e2e.sh — the tally binary end to end on padding and batched
# flushes (FORMAT.md §3.3, §4.2, §6.1, §13): init --padding, set-padding
# (show, change, refused under a writer and with a wrong key), append
# --flush-interval / --flush-block (file sizes in whole blocks, records
# intact), and stat --leakage in text and JSON, comparing policies on the
# same data. Needs $TALLY and python3 (for the JSON).
set -euo pipefail

T=${TALLY:?set TALLY to the tally binary}
W=$(mktemp -d "${TMPDIR:-/tmp}/tally-leak-e2e-XXXXXX")
trap 'rm -rf "$W"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
expect_status() { # want cmd...
    local want=$1; shift
    set +e; "$@" >"$W/out" 2>"$W/err"; local got=$?; set -e
    [ "$got" = "$want" ] || { cat "$W/err" >&2; fail "$* exited $got, want $want"; }
}
json() { python3 -c "import json,sys; d=json.load(open('$1')); print($2)"; }

"$T" keygen "$W/key" >/dev/null
"$T" keygen "$W/other" >/dev/null

# The same 400 records of 400 distinct sizes under each policy.
python3 - "$W/lines" <<'EOF'
import sys
with open(sys.argv[1], "w") as f:
    for i in range(400):
        f.write("e%03d:" % i + "z" * (i * 5) + "\n")
EOF

for pol in none block:512 buckets; do
    d="$W/j-${pol/:/-}"
    "$T" init "$d" --key-file "$W/key" --padding "$pol" >"$W/out"
    if [ "$pol" = none ]; then
        grep -q "padding" "$W/out" && fail "init prints a padding for none"
    else
        grep -q "padding $pol" "$W/out" || fail "init does not say padding $pol"
    fi
    [ "$("$T" set-padding "$d")" = "$pol" ] || fail "set-padding shows $("$T" set-padding "$d"), want $pol"
    "$T" append "$d" --key-file "$W/key" --sync none <"$W/lines"
    "$T" stat "$d" --leakage --json >"$W/$pol.json"
    [ "$(json "$W/$pol.json" "d['padding']")" = "$pol" ] || fail "stat padding"
    [ "$(json "$W/$pol.json" "d['records']['sealed']")" = 400 ] || fail "stat sealed count"
    # replay gives back exactly the input (PAD records skipped by type)
    "$T" cat "$d" --key-file "$W/key" --json | python3 -c '
import json, sys
for l in sys.stdin:
    r = json.loads(l)
    if r["type"] != 0xFF04:
        sys.stdout.write(r["payload"] + "\n")' >"$W/back"
    cmp -s "$W/back" "$W/lines" || fail "$pol: replay differs from the input"
done
n_none=$(json "$W/none.json" "d['leakage']['frame_sizes']['distinct']")
n_blk=$(json "$W/block:512.json" "d['leakage']['frame_sizes']['distinct']")
n_bkt=$(json "$W/buckets.json" "d['leakage']['frame_sizes']['distinct']")
echo "distinct on-disk sizes of 400 records: none $n_none, block:512 $n_blk, buckets $n_bkt"
[ "$n_none" = 400 ] || fail "none: $n_none distinct sizes, want 400"
[ "$n_blk" -le 5 ] || fail "block:512: $n_blk distinct sizes"
[ "$n_bkt" -le 20 ] && [ "$n_bkt" -ge 2 ] || fail "buckets: $n_bkt distinct sizes"
python3 - "$W/none.json" "$W/buckets.json" <<'EOF'
import json, sys
a, b = (json.load(open(p))["leakage"]["frame_sizes"] for p in sys.argv[1:])
assert b["entropy_bits"] < a["entropy_bits"] - 4, (a["entropy_bits"], b["entropy_bits"])
assert sum(e["count"] for e in b["histogram"]) == 400
EOF

# The text report names the histograms.
"$T" stat "$W/j-buckets" --leakage >"$W/out"
for w in "distinct sizes" "bits per record" "gaps between consecutive records" \
         "records over time" "segment files"; do
    grep -q "$w" "$W/out" || fail "stat --leakage text lacks '$w'"
done
"$T" stat "$W/j-buckets" >"$W/out"
grep -q "bits per record" "$W/out" && fail "stat without --leakage prints the histograms"

# set-padding: usage, wrong key, busy, change applies to new segments.
d="$W/j-none"
expect_status 2 "$T" set-padding "$d" block:7 --key-file "$W/key"
expect_status 2 "$T" set-padding "$d" fancy --key-file "$W/key"
expect_status 5 "$T" set-padding "$d" buckets --key-file "$W/other"
mkfifo "$W/fifo"
"$T" append "$d" --key-file "$W/key" <"$W/fifo" &
writer=$!
exec 9>"$W/fifo"
sleep 0.3
expect_status 1 "$T" set-padding "$d" buckets --key-file "$W/key"
grep -q "LOCK" "$W/err" || fail "set-padding under a writer does not name the lock"
exec 9>&-
wait "$writer"
"$T" set-padding "$d" buckets --key-file "$W/key" >"$W/out"
grep -q "padding buckets (was none)" "$W/out" || fail "set-padding message: $(cat "$W/out")"
echo short >"$W/one"
"$T" append "$d" --key-file "$W/key" <"$W/one"
"$T" stat "$d" --leakage --json >"$W/after.json"
python3 - "$W/after.json" <<'EOF'
import json, sys
h = json.load(open(sys.argv[1]))["leakage"]["frame_sizes"]["histogram"]
# the new record (6 bytes: envelope 22 -> 64) is stored as 64 + 64 + 16
assert any(e["size"] == 144 and e["count"] >= 1 for e in h), h
EOF

# Batched flushes: every file size is a whole number of blocks, watched
# while records arrive slowly; the records are intact; PAD records show.
d="$W/j-flush"
"$T" init "$d" --key-file "$W/key" --segment-size 64K >/dev/null
(for i in $(seq 1 60); do echo "tick $i $(printf '%*s' $((i * 13)) '')"; sleep 0.005; done) |
    "$T" append "$d" --key-file "$W/key" --sync batch --flush-interval 20 --flush-block 2K --ack >"$W/acks" &
app=$!
bad=0
while kill -0 "$app" 2>/dev/null; do
    for f in "$d"/*.seg; do
        [ -e "$f" ] || continue
        s=$(stat -c %s "$f" 2>/dev/null || echo 0)
        [ $((s % 2048)) = 0 ] || { bad=1; echo "size $s of $f" >&2; }
    done
    sleep 0.01
done
wait "$app"
[ "$bad" = 0 ] || fail "a segment file had a size that is not a whole 2 KiB block"
[ "$(wc -l <"$W/acks")" = 60 ] || fail "acknowledged $(wc -l <"$W/acks") records, want 60"
for f in "$d"/*.seg; do
    [ $(( $(stat -c %s "$f") % 2048 )) = 0 ] || fail "closed $f is not whole blocks"
done
"$T" verify "$d" --key-file "$W/key" >/dev/null
"$T" stat "$d" --leakage --json >"$W/flush.json"
python3 - "$W/flush.json" <<'EOF'
import json, sys
d = json.load(open(sys.argv[1]))
assert d["records"]["sealed"] == 60, d["records"]
assert d["records"]["pad"] >= 1, d["records"]
w = d["leakage"]["write_times"]
assert w["resolution_ns"] % 20000000 == 0, w["resolution_ns"]
assert w["distinct_timestamps"] < 60, w
EOF
# The independent verifier (tests/vectors/verify.py, written from FORMAT.md
# alone) accepts padded records and PAD records, with and without the key.
vpy="$(dirname "$0")/../vectors/verify.py"
if python3 -c 'import cryptography' 2>/dev/null; then
    for j in "$d" "$W/j-buckets" "$W/j-block-512"; do
        python3 "$vpy" "$j" --key-file "$W/key" >/dev/null || fail "verify.py (keyed) refuses $j"
        python3 "$vpy" "$j" >/dev/null || fail "verify.py (keyless) refuses $j"
    done
else
    echo "leakage-e2e: python3-cryptography missing, verify.py cross-check skipped"
fi
expect_status 2 "$T" append "$d" --key-file "$W/key" --flush-block 100
expect_status 2 "$T" append "$d" --key-file "$W/key" --flush-interval 0
echo "leakage-e2e: ok"
