#!/usr/bin/env bash
# Configures (once) and builds tally in ./build. Extra arguments go to
# `meson setup` on the first configure.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -f build/build.ninja ]; then
  meson setup build "$@"
fi
ninja -C build -j "$(nproc)"
