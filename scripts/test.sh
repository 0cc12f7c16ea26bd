#!/usr/bin/env bash
# The test command (README, .ci/run): sets up a fresh Debian 12 machine
# (apt + npm packages), builds, runs every test, then builds again with
# AddressSanitizer + UndefinedBehaviorSanitizer and runs every test again.
#
#   scripts/test.sh            default run (~minutes on 2 cores)
#   TALLY_TEST_LONG=1 scripts/test.sh   also the long stress/fuzz runs
#   TALLY_TEST_NO_SAN=1 scripts/test.sh skip the sanitizer pass (local use)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

bash scripts/setup.sh

run_suite() {   # $1 = build dir, rest = meson setup args
  local dir=$1; shift
  if [ ! -f "$dir/build.ninja" ]; then
    meson setup "$dir" "$@"
  fi
  ninja -C "$dir" -j "$(nproc)"
  local rc=0
  meson test -C "$dir" --print-errorlogs --num-processes 2 || rc=$?
  python3 - "$dir/meson-logs/testlog.json" "$dir" <<'PY'
import json, sys
ok = fail = skip = 0
for line in open(sys.argv[1]):
    r = json.loads(line)
    res = r.get("result")
    if res in ("OK", "EXPECTEDFAIL"): ok += 1
    elif res == "SKIP": skip += 1
    else: fail += 1
print(f"{sys.argv[2]}: {ok} passed, {fail} failed, {skip} skipped")
PY
  return $rc
}

status=0
run_suite build || status=1

if [ -z "${TALLY_TEST_NO_SAN:-}" ]; then
  export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:halt_on_error=1
  export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
  run_suite build-san -Dbuildtype=debug -Db_sanitize=address,undefined -Db_lundef=false || status=1
fi

if [ $status -eq 0 ]; then echo "scripts/test.sh: all suites passed"; else echo "scripts/test.sh: FAILURES"; fi
exit $status
