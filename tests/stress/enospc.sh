#!/usr/bin/env bash
# Full disk: a journal on a small tmpfs (2 MiB) filled up while appending.
#
#   TALLY=... STRESS_TOOL=... enospc.sh [RUNS]
#
# Each run (the sync policies in turn, a filler file of varying size taking
# part of the space) appends self-describing records (stress-tool payloads)
# with `tally append --ack` until the file system is full, then checks:
#   - the writer fails with a clear error: exit 1, "No space left on device";
#   - while still full, verify passes (or reports only a torn tail) and every
#     acknowledged record is there; a reopen either works or fails with the
#     same clear error, never damages anything;
#   - once the filler is removed, a reopen appends again (acks continue from
#     the head), verify passes, nothing acknowledged was lost.
# Exit 77 (skipped) when tmpfs cannot be mounted (not root, no CAP_SYS_ADMIN).
# Prints one line of figures.
set -uo pipefail
: "${TALLY:?}" "${STRESS_TOOL:?}"
runs=${1:-4}

work=$(mktemp -d "${TMPDIR:-/tmp}/tally-enospc.XXXXXX")
mnt="$work/mnt"
mkdir -p "$mnt"
cleanup() {
  mountpoint -q "$mnt" 2>/dev/null && umount "$mnt"
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

if ! mount -t tmpfs -o size=2m,mode=0700 tmpfs "$mnt" 2>"$work/mount.err"; then
  echo "enospc: SKIP: cannot mount a tmpfs ($(cat "$work/mount.err"))" >&2
  exit 77
fi

fail() { echo "enospc: FAIL: run $run ($policy): $*" >&2; exit 1; }

key="$work/key"   # outside the small file system
"$TALLY" keygen "$key" || fail "keygen"
policies=(batch always interval none)
enospc_errors=0 torn=0 reopen_full_ok=0 reopen_full_enospc=0 acked_total=0

for run in $(seq 1 "$runs"); do
  policy=${policies[$(( (run - 1) % 4 ))]}
  rm -rf "${mnt:?}"/*
  j="$mnt/j"
  "$TALLY" init "$j" --key-file "$key" --segment-size 64K >/dev/null || fail "init"
  # a filler of 256..768 KiB: freeing it later makes room again
  filler_kb=$(( 256 + (run * 131) % 512 ))
  head -c $((filler_kb * 1024)) /dev/urandom >"$mnt/filler"

  extra=()
  [ "$policy" = interval ] && extra=(--interval-ms 5)
  "$STRESS_TOOL" payloads 1 0 200 |
    "$TALLY" append "$j" --key-file "$key" --sync "$policy" "${extra[@]}" --ack \
      >"$work/acks" 2>"$work/err"
  rc=${PIPESTATUS[1]}
  [ "$rc" = 1 ] || fail "append on a full disk: exit $rc, expected 1: $(cat "$work/err")"
  grep -q "No space left on device" "$work/err" ||
    fail "append on a full disk: no clear ENOSPC message: $(cat "$work/err")"
  enospc_errors=$((enospc_errors + 1))
  acked=$(tail -n 1 "$work/acks")
  acked=${acked:-0}
  [ "$acked" -gt 0 ] || fail "nothing was acknowledged before the disk filled"
  # acks are whole lines, consecutive from 1
  [ "$(wc -l <"$work/acks")" = "$acked" ] || fail "acks are not 1..$acked"

  # still full: verify (a torn tail at most), every ack present
  "$TALLY" verify "$j" --key-file "$key" --json >"$work/v.out" 2>"$work/v.err"
  vrc=$?
  if [ $vrc = 3 ]; then
    grep -q '"error":"the tail of the journal is torn' "$work/v.out" ||
      fail "verify while full: $(cat "$work/v.out")"
    torn=$((torn + 1))
  elif [ $vrc != 0 ]; then
    fail "verify while full: exit $vrc: $(cat "$work/v.err")"
  fi
  "$STRESS_TOOL" check "$j" "$key" "$acked" --tolerate-tail >/dev/null 2>"$work/c.err" ||
    fail "while full: $(cat "$work/c.err")"

  # a reopen while full: works, or fails clearly; loses nothing either way
  "$STRESS_TOOL" payloads $((acked + 1)) 1 >"$work/one"
  if "$TALLY" append "$j" --key-file "$key" --sync always <"$work/one" 2>"$work/r.err"; then
    reopen_full_ok=$((reopen_full_ok + 1))
  else
    grep -q "No space left on device" "$work/r.err" ||
      fail "reopen while full: unclear error: $(cat "$work/r.err")"
    reopen_full_enospc=$((reopen_full_enospc + 1))
  fi
  have=$("$STRESS_TOOL" check "$j" "$key" "$acked" --tolerate-tail 2>"$work/c.err") ||
    fail "after the reopen while full: $(cat "$work/c.err")"

  # room again: reopen, append 200 more (acks continue from the head)
  rm -f "$mnt/filler"
  "$STRESS_TOOL" payloads $((have + 1)) 200 |
    "$TALLY" append "$j" --key-file "$key" --sync "$policy" "${extra[@]}" --ack \
      >"$work/acks2" 2>"$work/err2" ||
    fail "append after space was freed: $(cat "$work/err2")"
  [ "$(head -n 1 "$work/acks2")" = $((have + 1)) ] ||
    fail "acks after the reopen do not continue from seq $((have + 1))"
  [ "$(tail -n 1 "$work/acks2")" = $((have + 200)) ] ||
    fail "the 200 records appended after freeing space were not all acknowledged"
  "$TALLY" verify "$j" --key-file "$key" >/dev/null 2>"$work/v.err" ||
    fail "verify after space was freed: $(cat "$work/v.err")"
  "$STRESS_TOOL" check "$j" "$key" $((have + 200)) >/dev/null 2>"$work/c.err" ||
    fail "after space was freed: $(cat "$work/c.err")"
  acked_total=$((acked_total + acked))
done

echo "enospc runs=$runs enospc_errors=$enospc_errors torn_while_full=$torn" \
     "reopen_while_full_ok=$reopen_full_ok" \
     "reopen_while_full_enospc=$reopen_full_enospc acked=$acked_total lost=0"
