#!/usr/bin/env bash
# Regenerates the committed known-answer vectors (run once, by hand, when the
# format version changes; never in CI):
#
#   tests/vectors/make-vectors.sh BUILD_DIR
#
# For each cipher it writes a tiny journal with tally-mkjournal (fixed master
# key 00 01 .. 1f, fixed records and timestamps; salts and the epoch data key
# are random, which is why the directory itself is committed), checks that
# the independent verifier (verify.py) agrees with the C reader's view, and
# writes the known-answer description <name>.json from verify.py's --dump.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
build=${1:?usage: make-vectors.sh BUILD_DIR}
helper="$build/tests/journal/tally-mkjournal"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 - "$tmp/key" <<'PY'
import os, sys
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
os.write(fd, bytes(range(32)))
os.close(fd)
PY
make_one() {   # name, helper args...
  local name=$1; shift
  rm -rf "${here:?}/$name" "$here/$name.json"
  "$helper" "$tmp/$name" "$tmp/key" --name vectors --json "$tmp/$name.c.json" "$@"
  python3 "$here/verify.py" "$tmp/$name" --key-file "$tmp/key" \
    --compare "$tmp/$name.c.json" --dump "$here/$name.json"
  mkdir "$here/$name"
  cp "$tmp/$name/tally.meta" "$tmp/$name/"*.seg "$here/$name/"
}
make_one journal-v1 --cipher aes256gcm --compress
make_one journal-v1-xchacha --cipher xchacha20poly1305
echo "make-vectors: wrote $here/journal-v1{,-xchacha}{,.json}"
