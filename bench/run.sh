#!/bin/sh
# Builds the journal benchmark in release mode in its own build dir
# (build-bench/, so it never disturbs anyone's debug build) and runs it.
# Arguments go to bench-journal: --quick, --dir DIR, --big-mb N,
# --threads N, --only CASE,...  (see bench-journal --help).
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
build="$root/build-bench"

if [ ! -f "$build/build.ninja" ]; then
  meson setup "$build" "$root" --buildtype=release -Dtests=false >/dev/null
else
  meson configure "$build" -Dbuildtype=release -Dtests=false >/dev/null
fi
# bench/run.sh audit [ARGS]: the audit benchmark instead (bench-audit
# --help: --mb N, --payload BYTES, --rounds N, --dir DIR, --keep).
if [ "${1:-}" = audit ]; then
  shift
  ninja -C "$build" -j2 bench/bench-audit >/dev/null
  exec "$build/bench/bench-audit" "$@"
fi
# `run.sh compact [ARGS]` runs the compactor's benchmark (bench-compact
# --help) instead; `run.sh leakage [ARGS]` the cost of padding policies and
# batched flushes (bench-leakage --help: --quick, --records N, --rounds R,
# --seconds S, --dir DIR); `run.sh anchor [ARGS]` anchored appends against a
# local ganache with a 1-second block time (bench-anchor: --seconds S,
# --poll-ms MS, --dir DIR).
bench=bench-journal
if [ "${1:-}" = compact ]; then bench=bench-compact; shift; fi
if [ "${1:-}" = leakage ]; then bench=bench-leakage; shift; fi
if [ "${1:-}" = anchor ]; then bench=bench-anchor; shift; fi
ninja -C "$build" -j2 "bench/$bench" >/dev/null
exec "$build/bench/$bench" "$@"
