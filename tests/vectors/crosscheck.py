#!/usr/bin/env python3
"""Cross-checks the C library against the independent verifier (verify.py)
on freshly written journals.

    crosscheck.py HELPER

HELPER is tally-mkjournal (tests/vectors/mkjournal.c). For each cipher and
compression setting it writes a journal with the C library, reads it back
with the C iterator (JSON), and checks that verify.py, from FORMAT.md alone,
accepts it with and without the key and computes the same record hashes,
links, head, plaintexts and ids. Then it damages the journal at a sample of
bytes and checks that both verifiers refuse each damaged copy with the same
exit status. A
disagreement means one side violates FORMAT.md; the message says which
value differs.
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile

sys.dont_write_bytecode = True  # nothing written into the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import verify  # noqa: E402

CASES = [
    ("aes256gcm", True, 0),
    ("xchacha20poly1305", False, 0),
    ("aes256gcm", False, 300),
    ("xchacha20poly1305", True, 300),
]


def c_verify(helper, d, keyfile):
    args = [helper, "--verify", d] + ([keyfile] if keyfile else [])
    return subprocess.run(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE).returncode


def py_verify(d, mk):
    try:
        verify.verify_dir(d, mk)
        return 0
    except verify.Fail as e:
        return e.code


def main():
    helper = sys.argv[1]
    failures = []
    base = tempfile.mkdtemp(prefix="tally-crosscheck-")
    try:
        for cipher, compress, extra in CASES:
            tag = f"{cipher}{'+z' if compress else ''}{f'+{extra}' if extra else ''}"
            d = os.path.join(base, tag)
            kf = os.path.join(base, tag + ".key")
            mk = os.urandom(32)
            fd = os.open(kf, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            os.write(fd, mk)
            os.close(fd)
            cj = os.path.join(base, tag + ".json")
            args = [helper, d, kf, "--cipher", cipher, "--json", cj]
            if compress:
                args.append("--compress")
            if extra:
                args += ["--extra", str(extra)]
            subprocess.run(args, check=True)
            with open(cj) as f:
                want = json.load(f)
            for key in (mk, None):
                try:
                    v = verify.verify_dir(d, key)
                except verify.Fail as e:
                    failures.append(f"{tag}: verify.py refuses the C library's journal "
                                    f"({'keyed' if key else 'keyless'}): {e}")
                    continue
                for diff in verify.compare(v, key, want):
                    failures.append(f"{tag} ({'keyed' if key else 'keyless'}): {diff}")
            if extra:
                nseg = len([x for x in os.listdir(d) if x.endswith(".seg")])
                if nseg < 5:
                    failures.append(f"{tag}: only {nseg} segment files with a tiny segment size")
            if c_verify(helper, d, kf) != 0:
                failures.append(f"{tag}: the C library's tally_verify refuses its own journal")
            # damaged copies: both must refuse (a sample, both verifiers per copy)
            files = sorted(x for x in os.listdir(d) if x == "tally.meta" or x.endswith(".seg"))
            dd = os.path.join(base, tag + ".damaged")
            checked = 0
            for name in files[:3] + files[-1:]:
                size = os.path.getsize(os.path.join(d, name))
                step = max(1, size // 12)
                for pos in range(0, size, step):
                    shutil.rmtree(dd, ignore_errors=True)
                    shutil.copytree(d, dd)
                    p = os.path.join(dd, name)
                    with open(p, "r+b") as f:
                        f.seek(pos)
                        b = f.read(1)
                        f.seek(pos)
                        f.write(bytes([b[0] ^ (1 << (pos % 8))]))
                    for key, kfile in ((mk, kf), (None, None)):
                        py = py_verify(dd, key)
                        c = c_verify(helper, dd, kfile)
                        checked += 1
                        # both must refuse, with the same exit status
                        # (3 integrity, 5 key: the CLI's classes)
                        if py == 0 or c == 0 or py != c:
                            failures.append(
                                f"{tag}: byte {pos} of {name} flipped "
                                f"({'keyed' if key else 'keyless'}): verify.py exit {py}, "
                                f"C tally_verify exit {c}")
            # a torn tail: both report it as an integrity failure (FORMAT.md 6)
            last = files[-1]
            size = os.path.getsize(os.path.join(d, last))
            for cut in (1, 33, size // 2):
                shutil.rmtree(dd, ignore_errors=True)
                shutil.copytree(d, dd)
                os.truncate(os.path.join(dd, last), size - cut)
                for key, kfile in ((mk, kf), (None, None)):
                    py = py_verify(dd, key)
                    c = c_verify(helper, dd, kfile)
                    checked += 1
                    if py != 3 or c != 3:
                        failures.append(f"{tag}: {last} cut by {cut} bytes: verify.py exit "
                                        f"{py}, C tally_verify exit {c} (3 expected)")
            print(f"crosscheck {tag}: {len(want['records'])} records, "
                  f"{checked} damaged copies checked by both verifiers")
    finally:
        shutil.rmtree(base, ignore_errors=True)
    for x in failures:
        print("DISAGREEMENT:", x, file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
