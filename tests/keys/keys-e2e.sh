#!/usr/bin/env bash
# keys-e2e.sh — key sources, epochs and crypto-erasure through the tally
# binary: --key-source file:/env:/dstack: and TALLY_KEY_SOURCE, the dstack
# agent stand-in (tests only) and its failures (exit 5, the socket and the
# agent's message named, no key printed), rekey then replay across epochs,
# master-key rotation (new key opens, old key exit 5, id unchanged), forget
# then verify (passes with and without the key), cat (forgotten records
# reported as such) and status against an anchor file (still fresh); keys
# never in argv or /proc/PID/environ of a running tally, and never in a
# freed heap block (LD_PRELOAD freescan hook).
#
# Environment: TALLY (the binary), STANDIN (dstack-standin.py), FREESCAN
# (the hook's .so), PYTHON (python3).
set -euo pipefail

: "${TALLY:?TALLY must name the tally binary}"
: "${STANDIN:?STANDIN must name dstack-standin.py}"
# FREESCAN is empty in a sanitizer build: ASan must be the first library
# loaded and intercepts free() itself, so the hook cannot run beside it
# (the plain build runs this part).
FREESCAN=${FREESCAN-}
PYTHON=${PYTHON:-python3}

W=$(mktemp -d "${TMPDIR:-/tmp}/tally-keys-e2e-XXXXXX")
AGENT_PIDS=()
cleanup() {
    local p
    for p in "${AGENT_PIDS[@]}"; do
        kill "$p" 2>/dev/null || true
        wait "$p" 2>/dev/null || true
    done
    rm -rf "$W"
}
trap cleanup EXIT

fail() { echo "FAIL: $*" >&2; exit 1; }
step() { echo "# $*"; }

# run RC CMD...: runs CMD with stdout in $W/out, stderr in $W/err and
# expects exit status RC.
run() {
    local want=$1 rc=0
    shift
    "$@" >"$W/out" 2>"$W/err" </dev/null || rc=$?
    if [ "$rc" != "$want" ]; then
        echo "--- stdout"; cat "$W/out"; echo "--- stderr"; cat "$W/err"
        fail "exit $rc, expected $want: $*"
    fi
}
has() { grep -qF -- "$2" "$1" || { cat "$1" >&2; fail "$1 lacks: $2"; }; }
hasnt() { ! grep -qaF -- "$2" "$1" || { cat "$1" >&2; fail "$1 has: $2"; }; }

# start_agent NAME MODE: a stand-in on $W/NAME.sock, ready when it returns.
start_agent() {
    local name=$1 mode=$2
    mkfifo "$W/$name.in"
    "$PYTHON" "$STANDIN" --socket "$W/$name.sock" --mode "$mode" \
        --log "$W/$name.log" <"$W/$name.in" >"$W/$name.ready" 2>&1 &
    AGENT_PIDS+=($!)
    exec {fd}>"$W/$name.in" # keeps its stdin open until we exit
    for _ in $(seq 100); do
        grep -q ready "$W/$name.ready" 2>/dev/null && return 0
        sleep 0.1
    done
    fail "stand-in $name did not start"
}

# wait_lock PID DIR: until process PID holds DIR's lock file open (it
# has its key and opened the journal), without touching the lock.
wait_lock() {
    for _ in $(seq 200); do
        ls -l "/proc/$1/fd" 2>/dev/null | grep -q "$2/LOCK" && return 0
        sleep 0.05
    done
    fail "process $1 never opened $2"
}

hexof() { od -An -tx1 -v "$1" | tr -d ' \n'; }
seg_epoch() { od -An -tu4 -j16 -N4 "$1" | tr -d ' '; }

cd "$W"
run 0 "$TALLY" keygen k
KHEX=$(hexof k)

step "file: and env: sources, TALLY_KEY_SOURCE"
run 0 "$TALLY" init j1 --key-source "file:$W/k"
printf 'a\nb\nc\n' | "$TALLY" append j1 --key-file k >/dev/null
run 0 "$TALLY" cat j1 --key-file k
cp out cat-file
TK=$KHEX run 0 "$TALLY" cat j1 --key-source env:TK
cmp -s out cat-file || fail "env: cat differs"
TALLY_KEY_SOURCE="file:$W/k" run 0 "$TALLY" cat j1
cmp -s out cat-file || fail "TALLY_KEY_SOURCE cat differs"
TALLY_KEY_SOURCE="file:$W/k" TALLY_KEY_FILE=/nonexistent run 0 "$TALLY" cat j1
TK=00$KHEX run 5 "$TALLY" cat j1 --key-source env:TK
has err "env:TK"
hasnt err "$KHEX"
run 5 "$TALLY" cat j1 --key-source env:NOT_SET_HERE
run 2 "$TALLY" cat j1 --key-source env:

step "dstack: through the stand-in"
start_agent ok ok
start_agent refuse 400
start_agent garbage garbage
start_agent short short
start_agent slow hang
DKEY=$("$PYTHON" "$STANDIN" --derive /tally/journal)
DKEY2=$("$PYTHON" "$STANDIN" --derive /tally/journal-v2)
[ "$("$PYTHON" "$STANDIN" --derive /encryption/db)" = \
  ce74bf621800ada4674765daccaf3a8b444d3212dbe97eecb220fed46f116424 ] ||
    fail "stand-in derivation"
export DSTACK_SIMULATOR_ENDPOINT=$W/ok.sock
run 0 "$TALLY" init j2 --key-source dstack:
printf 'x\ny\n' | "$TALLY" append j2 --key-source dstack:/tally/journal >/dev/null
run 0 "$TALLY" cat j2 --key-source dstack:
has out " x"
has out " y"
# The agent's key is the master key: the same bytes from a file open it.
printf '%s\n' "$DKEY" >dkey && chmod 600 dkey
run 0 "$TALLY" cat j2 --key-file dkey
run 5 "$TALLY" cat j2 --key-file k
run 5 "$TALLY" cat j2 --key-source dstack:/some/other/path

: >errs
for agent in refuse garbage short; do
    DSTACK_SIMULATOR_ENDPOINT=$W/$agent.sock run 5 "$TALLY" cat j2 --key-source dstack:
    has err "$W/$agent.sock"
    cat err >>errs
done
DSTACK_SIMULATOR_ENDPOINT=$W/refuse.sock run 5 "$TALLY" cat j2 --key-source dstack:
has err "stand-in refusal"
DSTACK_SIMULATOR_ENDPOINT=$W/slow.sock TALLY_KEYSOURCE_TIMEOUT_MS=500 \
    run 5 "$TALLY" cat j2 --key-source dstack:
has err "did not answer within 500 ms"
cat err >>errs
DSTACK_SIMULATOR_ENDPOINT=$W/nobody.sock run 5 "$TALLY" cat j2 --key-source dstack:
has err "$W/nobody.sock"
cat err >>errs
if ! [ -e /var/run/dstack.sock ] && ! [ -e /run/dstack.sock ] &&
   ! [ -e /var/run/dstack/dstack.sock ] && ! [ -e /run/dstack/dstack.sock ]; then
    env -u DSTACK_SIMULATOR_ENDPOINT "$TALLY" cat j2 --key-source dstack: \
        >out 2>err && fail "no agent: cat succeeded" || [ $? = 5 ] ||
        fail "no agent: exit is not 5"
    has err "/var/run/dstack.sock"
fi
hasnt errs "$DKEY"
hasnt errs "${DKEY:0:40}"

step "the anchor signer's key from the agent: dstack: is dstack:/tally/anchor"
# No node listens on port 9: the key loads, then the RPC call fails (1).
: >"$W/ok.log"
run 1 "$TALLY" anchor-deploy --rpc http://127.0.0.1:9 --signer-key-source dstack:
has "$W/ok.log" '\"path\":\"/tally/anchor\"'
DSTACK_SIMULATOR_ENDPOINT=$W/refuse.sock \
    run 5 "$TALLY" anchor-deploy --rpc http://127.0.0.1:9 --signer-key-source dstack:
has err "loading signer key from dstack:/tally/anchor"
has err "stand-in refusal"

step "rekey, then replay across epochs"
run 0 "$TALLY" rekey j1 --key-file k
has out "epoch 2 started"
printf 'd\ne\n' | "$TALLY" append j1 --key-source "file:$W/k" >/dev/null
run 0 "$TALLY" cat j1 --key-file k
[ "$(wc -l <out)" = 5 ] || fail "cat after rekey: $(cat out)"
has out " e"
[ "$(seg_epoch j1/0000000000000001.seg)" = 1 ] || fail "segment 1 epoch"
[ "$(seg_epoch j1/0000000000000002.seg)" = 2 ] || fail "segment 2 epoch"
run 0 "$TALLY" verify j1 --key-file k
run 0 "$TALLY" verify j1 --no-key

step "master-key rotation: file key to the dstack KMS"
run 0 "$TALLY" verify j1 --no-key --json
ID=$(grep -o '"journal_id":"[0-9a-f]*"' out | cut -d'"' -f4)
[ ${#ID} = 64 ] || fail "journal id: $(cat out)"
run 0 "$TALLY" rekey j1 --from-key-file k --key-source dstack:/tally/journal-v2
has out "2 epoch keys are now wrapped"
has out "$ID"
run 0 "$TALLY" cat j1 --key-source dstack:/tally/journal-v2
cmp -s <(head -3 out) cat-file || fail "rotated cat differs"
run 5 "$TALLY" cat j1 --key-file k
run 5 "$TALLY" verify j1 --key-file k
run 0 "$TALLY" verify j1 --no-key --json
has out "\"journal_id\":\"$ID\""
run 2 "$TALLY" rekey j1 --from-key-file k

step "forget, then verify, cat and status"
run 0 "$TALLY" init j3 --key-file k
printf 'old1\nold2\nold3\n' | "$TALLY" append j3 --key-file k >/dev/null
run 0 "$TALLY" checkpoint j3 --key-file k --anchor-file "$W/anchors"
run 0 "$TALLY" rekey j3 --key-file k
printf 'new5\nnew6\n' | "$TALLY" append j3 --key-file k >/dev/null
run 0 "$TALLY" checkpoint j3 --key-file k --anchor-file "$W/anchors"
run 0 "$TALLY" head j3
cp out head-before
run 0 "$TALLY" forget j3 --before 5 --key-file k
has out "forgot the data keys of 1 epoch"
has out "records up to seq 4"
has out "epoch 2 is kept"
run 0 "$TALLY" head j3
cmp -s out head-before || fail "head changed by forget"
run 0 "$TALLY" verify j3 --no-key
run 0 "$TALLY" verify j3 --key-file k
run 0 "$TALLY" cat j3 --key-file k
has err "not shown: their key epoch was forgotten"
hasnt out "old1"
has out " new5"
run 0 "$TALLY" cat j3 --key-file k --all
# seq 1-3 and the CHECKPOINT record 4, which can no longer be authenticated
[ "$(grep -c ' forgotten$' out)" = 4 ] || fail "cat --all: $(cat out)"
run 0 "$TALLY" cat j3 --key-file k --all --json
[ "$(grep -c '"forgotten":true' out)" = 4 ] || fail "cat --json: $(cat out)"
run 0 "$TALLY" status j3 --anchor-file "$W/anchors"
has out "fresh"
run 0 "$TALLY" status j3 --anchor-file "$W/anchors" --key-file k
has out "fresh"
run 0 "$TALLY" forget j3 --before 100 --key-file k
has out "epoch 2 is kept: it is the current epoch"
run 2 "$TALLY" forget j3 --key-file k
# A running writer holds the lock: forget and rekey refuse.
mkfifo hold.in
"$TALLY" append j3 --key-file k <hold.in >/dev/null 2>&1 &
APP=$!
exec {hold}>hold.in
wait_lock "$APP" j3
run 1 "$TALLY" forget j3 --before 5 --key-file k
has err "lock"
run 1 "$TALLY" rekey j3 --key-file k
exec {hold}>&-
wait "$APP"

step "keys never in argv or the environment of a running tally"
mkfifo app.in
TK=$KHEX "$TALLY" append j1 --key-source dstack:/tally/journal-v2 <app.in \
    >/dev/null 2>"$W/app.err" &
APP=$!
exec {w}>app.in
wait_lock "$APP" j1
tr '\0' '\n' </proc/$APP/cmdline >cmdline
tr '\0' '\n' </proc/$APP/environ >environ
hasnt cmdline "$DKEY2"
hasnt environ "$DKEY2"
exec {w}>&-
wait "$APP"
# env: is scrubbed in place once read.
TK=$KHEX "$TALLY" append j3 --key-source env:TK <app.in >/dev/null 2>&1 &
APP=$!
exec {w}>app.in
wait_lock "$APP" j3
tr '\0' '\n' </proc/$APP/environ >environ
tr '\0' '\n' </proc/$APP/cmdline >cmdline
hasnt environ "$KHEX"
hasnt environ "${KHEX:0:32}"
hasnt cmdline "$KHEX"
echo late >&$w
exec {w}>&-
wait "$APP"
run 0 "$TALLY" cat j3 --key-file k
has out " late"

if [ -n "$FREESCAN" ]; then
step "no key left in freed heap blocks (LD_PRELOAD $FREESCAN)"
scan() { # scan KEYHEX CMD...: runs CMD under the hook, expects 0 hits
    local key=$1
    shift
    rm -f fs.log
    LD_PRELOAD=$FREESCAN FREESCAN_KEY_HEX=$key FREESCAN_OUT=$W/fs.log \
        "$@" >/dev/null 2>"$W/scan.err" </dev/null ||
        { cat scan.err; fail "under freescan: $*"; }
    has fs.log "freescan: 0 hits"
    hasnt fs.log "holds the key"
}
scan "$KHEX" "$TALLY" cat j3 --key-file k
scan "$KHEX" "$TALLY" cat j3 --key-source "file:$W/k"
scan "$KHEX" env TK=$KHEX "$TALLY" cat j3 --key-source env:TK
scan "$DKEY" "$TALLY" cat j2 --key-source dstack:
scan "$DKEY2" "$TALLY" verify j1 --key-source dstack:/tally/journal-v2
scan "$DKEY2" "$TALLY" rekey j1 --key-source dstack:/tally/journal-v2
scan "$KHEX" "$TALLY" forget j3 --before 1 --key-file k
# The hook itself finds a key that is freed unwiped: Python on libc's
# malloc reads the key file and frees the bytes and their hex.
rm -f fs.log
PYTHONMALLOC=malloc LD_PRELOAD=$FREESCAN FREESCAN_KEY_HEX=$KHEX \
    FREESCAN_OUT=$W/fs.log "$PYTHON" -c "import sys; d=open('k','rb').read(); d.hex(); del d" ||
    true
grep -q "holds the key" fs.log || fail "the freescan hook found nothing"

else
    echo "skip: freed-heap scan (sanitizer build: the plain build runs it)"
fi

echo "ok: keys-e2e"
