#!/usr/bin/env bash
# The one place that installs what tally needs on a fresh Debian 12 machine
# (run as root). Idempotent: a second run only checks.
#
#   scripts/setup.sh            apt packages + npm packages (local chain tools)
#   scripts/setup.sh --no-npm   apt packages only
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)

APT_PKGS=(
  build-essential pkg-config meson ninja-build clang
  libsodium-dev zlib1g-dev libcurl4-openssl-dev libcjson-dev
  libnanomsg-dev libcmocka-dev libsecp256k1-dev nettle-dev
  libsqlite3-dev sqlite3
  curl jq python3 python3-cryptography util-linux valgrind
)
# Node.js: the machine may already carry a newer one (with npm bundled) that
# conflicts with Debian's npm package; install Debian's only when none is there.
command -v node >/dev/null 2>&1 || APT_PKGS+=(nodejs)
command -v npm >/dev/null 2>&1 || APT_PKGS+=(npm)

missing=()
for p in "${APT_PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

if [ "${1:-}" != "--no-npm" ] && [ -f "$here/tests/chain/package.json" ]; then
  if [ ! -x "$here/tests/chain/node_modules/.bin/ganache" ]; then
    echo "setup: npm ci in tests/chain"
    (cd "$here/tests/chain" && npm ci --no-audit --no-fund --loglevel=error)
  fi
fi
echo "setup: ok"
