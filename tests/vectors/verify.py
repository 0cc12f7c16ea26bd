#!/usr/bin/env python3
"""An independent second verifier of tally journals, written from
docs/FORMAT.md alone (not from the C sources), so that the C library and this
script can only agree if both follow the document.

Primitives: BLAKE2b from Python's hashlib (its own implementation, not
libsodium), AES-256-GCM and ChaCha20-Poly1305 from python3-cryptography
(OpenSSL); XChaCha20-Poly1305 is built here from HChaCha20 + the IETF
ChaCha20-Poly1305, as libsodium defines it.

    verify.py DIR [--key-file F] [--dump OUT.json] [--compare IN.json
                  [--key-from-json]] [--json]

Without a key: the checks of FORMAT.md section 7, and the envelope of CLEAR
records with the CHECKPOINT payload rules of section 9.2 (its head must be the
local link at its seq, 9.3). With a key: also the KCV, the metadata MAC, the
epoch key unwrap and every record's AEAD tag and envelope. Exit status as the tally CLI: 0 ok, 1 operational, 2 usage,
3 integrity (incl. a torn tail), 5 key.

--dump writes a known-answer description of the journal (keys, salts, every
record's header fields, envelope, ciphertext, record_hash and link).
--compare checks this verifier's view against a JSON description (the same
schema; fields that are absent are not compared), e.g. one written by the C
library's reader, or the committed vectors.
"""

import argparse
import hashlib
import json
import os
import re
import struct
import sys
import zlib

EXIT_OK, EXIT_OP, EXIT_USAGE, EXIT_INTEGRITY, EXIT_KEY = 0, 1, 2, 3, 5

META_MAGIC = b"TALLYMTA"
SEG_MAGIC = b"TALLYSEG"
FRAME_MAGIC = b"TFRM"
META_FIXED = 112
EPOCH_LEN = 96
SEG_HDR_LEN = 160
FRAME_HDR_LEN = 32
LINK_LEN = 32
TAG_LEN = 16
ENV_HDR_LEN = 16
MAX_PAYLOAD = 16 * 1024 * 1024
MAX_BODY = MAX_PAYLOAD + 64 * 1024
MAX_RKEY = 1024
KIND_SEALED, KIND_CLEAR, KIND_PRUNED = 1, 2, 3
CIPHER_AES, CIPHER_XCHACHA = 1, 2
TYPE_RESERVED = 0xFF00
TYPE_CHECKPOINT = 0xFF02
CHECKPOINT_BYTES = 176
SEG_NAME = re.compile(r"^[0-9a-f]{16}\.seg$")


class Fail(Exception):
    """A verification failure: code is the exit status."""

    def __init__(self, code, msg, where=None):
        super().__init__(msg)
        self.code = code
        self.where = where or {}

    def __str__(self):
        w = self.where
        place = ""
        if w:
            place = " (" + ", ".join(f"{k} {w[k]}" for k in ("file", "offset", "seq") if k in w) + ")"
        return super().__str__() + place


def integrity(msg, **where):
    return Fail(EXIT_INTEGRITY, msg, where)


# ---- primitives (FORMAT.md preamble) --------------------------------------

def H(m):
    return hashlib.blake2b(m, digest_size=32).digest()


def Hk(k, m):
    assert len(k) == 32
    return hashlib.blake2b(m, digest_size=32, key=k).digest()


def le16(x):
    return struct.pack("<H", x)


def le32(x):
    return struct.pack("<I", x)


def le64(x):
    return struct.pack("<Q", x)


def _rotl(v, c):
    return ((v << c) & 0xFFFFFFFF) | (v >> (32 - c))


def hchacha20(key, nonce16):
    """HChaCha20 (draft-irtf-cfrg-xchacha section 2.2)."""
    s = list(struct.unpack("<4I", b"expand 32-byte k")) + list(struct.unpack("<8I", key)) \
        + list(struct.unpack("<4I", nonce16))

    def qr(a, b, c, d):
        s[a] = (s[a] + s[b]) & 0xFFFFFFFF; s[d] = _rotl(s[d] ^ s[a], 16)
        s[c] = (s[c] + s[d]) & 0xFFFFFFFF; s[b] = _rotl(s[b] ^ s[c], 12)
        s[a] = (s[a] + s[b]) & 0xFFFFFFFF; s[d] = _rotl(s[d] ^ s[a], 8)
        s[c] = (s[c] + s[d]) & 0xFFFFFFFF; s[b] = _rotl(s[b] ^ s[c], 7)

    for _ in range(10):
        qr(0, 4, 8, 12); qr(1, 5, 9, 13); qr(2, 6, 10, 14); qr(3, 7, 11, 15)
        qr(0, 5, 10, 15); qr(1, 6, 11, 12); qr(2, 7, 8, 13); qr(3, 4, 9, 14)
    return struct.pack("<8I", *(s[0:4] + s[12:16]))


def _selftest_hchacha20():
    # draft-irtf-cfrg-xchacha-03, 2.2.1
    key = bytes(range(32))
    nonce = bytes.fromhex("000000090000004a0000000031415927")
    want = bytes.fromhex("82413b4227b27bfed30e42508a877d73a0f9e4d58a74a853c12ec41326d3ecdc")
    if hchacha20(key, nonce) != want:
        raise Fail(EXIT_OP, "HChaCha20 self-test failed")


def _crypto():
    try:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305
        from cryptography.exceptions import InvalidTag
    except ImportError as e:  # pragma: no cover
        raise Fail(EXIT_OP, f"python3-cryptography is needed with a key: {e}")
    return AESGCM, ChaCha20Poly1305, InvalidTag


def xchacha_decrypt(key, nonce24, ct_tag, ad):
    """XChaCha20-Poly1305-IETF open; None if the tag fails."""
    _, ChaCha20Poly1305, InvalidTag = _crypto()
    sub = hchacha20(key, nonce24[:16])
    try:
        return ChaCha20Poly1305(sub).decrypt(b"\0" * 4 + nonce24[16:], ct_tag, ad)
    except InvalidTag:
        return None


def aead_open(cipher, sk, seq, ct_tag, ad):
    """FORMAT.md 4.3; None if the tag fails."""
    AESGCM, _, InvalidTag = _crypto()
    if cipher == CIPHER_AES:
        try:
            return AESGCM(sk).decrypt(le64(seq) + b"\0" * 4, ct_tag, ad)
        except InvalidTag:
            return None
    return xchacha_decrypt(sk, le64(seq) + b"\0" * 16, ct_tag, ad)


# ---- keys (FORMAT.md 2) -----------------------------------------------------

def journal_id(mk, name):
    return Hk(mk, b"tally/v1/id" + name)


def kcv_of(mk, jid):
    return Hk(mk, b"tally/v1/kcv" + jid)


def genesis(jid):
    return H(b"tally/v1/genesis" + jid)


def segment_key(dk, jid, segment_no, salt):
    return Hk(dk, b"tally/v1/segment" + jid + le64(segment_no) + salt)


# ---- metadata (FORMAT.md 3) ---------------------------------------------------

def parse_meta(path, mk):
    try:
        with open(path, "rb") as f:
            b = f.read()
    except FileNotFoundError:
        raise Fail(EXIT_OP, f"{path}: no journal here (tally.meta missing)")
    name = "tally.meta"
    if len(b) < META_FIXED + EPOCH_LEN + 64:
        raise integrity("metadata too short", file=name)
    (magic, version, res0, flags, cipher, res1, cur_epoch, seg_size, generation) = \
        struct.unpack_from("<8sHHIB3sIQQ", b, 0)
    jid = b[40:72]
    kcv = b[72:104]
    name_len, epoch_count, ext_len = struct.unpack_from("<HHI", b, 104)
    if magic != META_MAGIC:
        raise integrity("metadata: bad magic", file=name, offset=0)
    total = META_FIXED + name_len + EPOCH_LEN * epoch_count + ext_len + 64
    if len(b) != total:
        raise integrity(f"metadata: length {len(b)} != {total}", file=name)
    body_end = total - 64
    if H(b[:total - 32]) != b[total - 32:]:
        raise integrity("metadata: checksum mismatch", file=name, offset=total - 32)
    if version != 1:
        raise integrity(f"metadata: unknown version {version}", file=name, offset=8)
    if res0 != 0 or res1 != b"\0\0\0":
        raise integrity("metadata: reserved field not zero", file=name)
    if flags & ~1:
        raise integrity(f"metadata: unknown flags {flags:#x}", file=name, offset=12)
    if cipher not in (CIPHER_AES, CIPHER_XCHACHA):
        raise integrity(f"metadata: unknown cipher {cipher}", file=name, offset=16)
    if name_len > 255 or epoch_count < 1:
        raise integrity("metadata: bad name_len/epoch_count", file=name, offset=104)
    jname = b[112:112 + name_len]
    epochs = []
    off = 112 + name_len
    prev = 0
    for i in range(epoch_count):
        e = b[off:off + EPOCH_LEN]
        ep, eflags, first_seg = struct.unpack_from("<IIQ", e, 0)
        nonce, wrapped, res = e[16:40], e[40:88], e[88:96]
        if ep <= prev:
            raise integrity("metadata: epochs not increasing", file=name, offset=off)
        if eflags & ~1 or res != b"\0" * 8:
            raise integrity("metadata: epoch flags/reserved", file=name, offset=off)
        if eflags & 1 and (nonce != b"\0" * 24 or wrapped != b"\0" * 48):
            raise integrity("metadata: forgotten epoch keeps key bytes", file=name, offset=off)
        epochs.append({"epoch": ep, "flags": eflags, "first_segment": first_seg,
                       "nonce": nonce, "wrapped": wrapped, "offset": off})
        prev = ep
        off += EPOCH_LEN
    ext = b[off:off + ext_len]
    p = 0
    while p < len(ext):
        if p + 4 > len(ext):
            raise integrity("metadata: truncated extension", file=name, offset=off + p)
        _tag, ln = struct.unpack_from("<HH", ext, p)
        if p + 4 + ln > len(ext):
            raise integrity("metadata: extension overruns", file=name, offset=off + p)
        p += 4 + ln
    if not any(e["epoch"] == cur_epoch for e in epochs):
        raise integrity(f"metadata: current epoch {cur_epoch} not listed", file=name, offset=20)
    if seg_size == 0:
        raise integrity("metadata: segment_size 0", file=name, offset=24)
    meta = {"raw": b, "flags": flags, "cipher": cipher, "current_epoch": cur_epoch,
            "segment_size": seg_size, "generation": generation, "jid": jid, "kcv": kcv,
            "name": jname, "epochs": epochs, "mac": b[body_end:body_end + 32],
            "checksum": b[total - 32:], "dk": {}}
    if mk is not None:
        if kcv_of(mk, jid) != kcv:
            raise Fail(EXIT_KEY, "wrong master key (KCV mismatch)", {"file": name})
        kmeta = Hk(mk, b"tally/v1/meta" + jid)
        if Hk(kmeta, b[:body_end]) != meta["mac"]:
            raise integrity("metadata: MAC mismatch", file=name, offset=body_end)
        kwrap = Hk(mk, b"tally/v1/wrap" + jid)
        for e in epochs:
            if e["flags"] & 1:
                continue
            dk = xchacha_decrypt(kwrap, e["nonce"], e["wrapped"],
                                 b"tally/v1/epoch" + jid + le32(e["epoch"]))
            if dk is None:
                raise integrity(f"metadata: epoch {e['epoch']} key does not unwrap",
                                file=name, offset=e["offset"])
            meta["dk"][e["epoch"]] = dk
    return meta


# ---- segments (FORMAT.md 4) -------------------------------------------------

def check_envelope(env, vtype, flags, where):
    if len(env) < ENV_HDR_LEN:
        raise integrity("envelope shorter than its header", **where)
    rtype, key_len, data_len, raw_len, res = struct.unpack_from("<HHIII", env, 0)
    if res != 0:
        raise integrity("envelope reserved field not zero", **where)
    if key_len > MAX_RKEY:
        raise integrity("envelope key_len over 1024", **where)
    end = ENV_HDR_LEN + key_len + data_len
    if end > len(env):
        raise integrity("envelope fields overrun it", **where)
    if any(env[end:]):
        raise integrity("envelope padding not zero", **where)
    if vtype != 0 and rtype != vtype:
        raise integrity("envelope type disagrees with vtype", **where)
    if rtype < TYPE_RESERVED and vtype != 0:
        raise integrity("application type with nonzero vtype", **where)
    if rtype >= TYPE_RESERVED and vtype == 0:
        # FORMAT.md 4.2 defines vtype as "the type itself for a reserved
        # type": a writer that leaves it 0 violates the format.
        raise integrity("reserved type with vtype 0 (writer violates 4.2)", **where)
    if raw_len > MAX_PAYLOAD or data_len > MAX_PAYLOAD:
        raise integrity("payload over 16 MiB", **where)
    key = env[ENV_HDR_LEN:ENV_HDR_LEN + key_len]
    data = env[ENV_HDR_LEN + key_len:end]
    if flags & 1:
        try:
            d = zlib.decompressobj()
            payload = d.decompress(data, MAX_PAYLOAD + 1)
            if not d.eof or d.unused_data or d.unconsumed_tail:
                raise zlib.error("stream not exactly one zlib stream")
        except zlib.error as e:
            raise integrity(f"bad zlib payload: {e}", **where)
        if len(payload) != raw_len:
            raise integrity("raw_len disagrees with the decompressed payload", **where)
    else:
        if raw_len != data_len:
            raise integrity("raw_len != data_len without COMPRESSED", **where)
        payload = data
    return {"type": rtype, "key": key, "data_len": data_len, "raw_len": raw_len,
            "payload": payload}


class Verifier:
    def __init__(self, d, mk):
        self.dir = d
        self.mk = mk
        self.meta = None
        self.segments = []  # dicts
        self.records = []   # dicts
        self.head_seq = 0
        self.head_link = None

    def run(self):
        self.meta = parse_meta(os.path.join(self.dir, "tally.meta"), self.mk)
        jid = self.meta["jid"]
        self.head_link = genesis(jid)
        files = sorted(f for f in os.listdir(self.dir) if SEG_NAME.match(f))
        seg_no_expect = None
        for fi, fname in enumerate(files):
            with open(os.path.join(self.dir, fname), "rb") as f:
                b = f.read()
            last_file = fi == len(files) - 1
            off = 0
            first_in_file = True
            while True:
                if off == len(b):
                    if first_in_file:
                        raise integrity("empty segment file", file=fname, offset=0)
                    break
                seg = self.header(b, off, fname)
                if first_in_file and fname != f"{seg['segment_no']:016x}.seg":
                    raise integrity("file name is not its first segment's number",
                                    file=fname, offset=off)
                if seg_no_expect is None:
                    if seg["segment_no"] != 1:
                        raise integrity("first segment is not number 1", file=fname, offset=off)
                elif seg["segment_no"] != seg_no_expect:
                    raise integrity(f"segment number {seg['segment_no']} where "
                                    f"{seg_no_expect} was expected", file=fname, offset=off)
                seg_no_expect = seg["segment_no"] + 1
                if seg["first_seq"] != self.head_seq + 1:
                    raise integrity(f"segment starts at seq {seg['first_seq']}, "
                                    f"expected {self.head_seq + 1}", file=fname, offset=off)
                if seg["prev_link"] != self.head_link:
                    raise integrity("segment prev_link does not continue the chain",
                                    file=fname, offset=off + 96)
                self.segments.append(seg)
                first_in_file = False
                off = self.frames(b, off + SEG_HDR_LEN, fname, seg, last_file)
        return self

    def header(self, b, off, fname):
        if off + SEG_HDR_LEN > len(b):
            raise integrity("segment header incomplete", file=fname, offset=off)
        h = b[off:off + SEG_HDR_LEN]
        (magic, version, hlen, cipher, flags, res0, epoch, res1, seg_no, first_seq,
         res2) = struct.unpack_from("<8sHHBBHIIQQQ", h, 0)
        salt, jid, prev_link, hh = h[48:64], h[64:96], h[96:128], h[128:160]
        w = {"file": fname, "offset": off}
        if magic != SEG_MAGIC:
            raise integrity("segment header: bad magic", **w)
        if H(h[:128]) != hh:
            raise integrity("segment header: header_hash mismatch", **w)
        if version != 1 or hlen != SEG_HDR_LEN:
            raise integrity("segment header: version/header_len", **w)
        if cipher != self.meta["cipher"]:
            raise integrity("segment header: cipher differs from the metadata", **w)
        if flags or res0 or res1 or res2:
            raise integrity("segment header: reserved not zero", **w)
        if jid != self.meta["jid"]:
            raise integrity("segment header: journal id differs (segment of another journal?)", **w)
        if first_seq < 1:
            raise integrity("segment header: first_seq 0", **w)
        seg = {"file": fname, "offset": off, "epoch": epoch, "segment_no": seg_no,
               "first_seq": first_seq, "salt": salt, "prev_link": prev_link,
               "header_hash": hh, "sk": None}
        if self.mk is not None:
            if not any(e["epoch"] == epoch for e in self.meta["epochs"]):
                raise integrity(f"segment header: unknown epoch {epoch}", **w)
            dk = self.meta["dk"].get(epoch)
            if dk is not None:
                seg["sk"] = segment_key(dk, self.meta["jid"], seg_no, salt)
                seg["dk"] = dk
        return seg

    def frames(self, b, off, fname, seg, last_file):
        """Walks the frames of one segment; returns the offset of the next
        segment header (or len(b))."""
        while off < len(b):
            if b[off:off + 8] == SEG_MAGIC:
                return off
            seq_expect = self.head_seq + 1
            w = {"file": fname, "offset": off, "seq": seq_expect}
            if off + FRAME_HDR_LEN > len(b):
                raise self.tail("frame header incomplete", last_file, w)
            fh = b[off:off + FRAME_HDR_LEN]
            # offset 28: unsynced_depth (FORMAT.md 4.2), any value: what the
            # writer knew was durable, read only by recovery (6)
            magic, kind, flags, vtype, seq, ts, body_len, _unsynced_depth = \
                struct.unpack_from("<4sBBHQQII", fh, 0)
            if magic != FRAME_MAGIC:
                raise integrity("frame: bad magic", **w)
            if kind not in (KIND_SEALED, KIND_CLEAR, KIND_PRUNED):
                raise integrity(f"frame: unknown kind {kind}", **w)
            if flags & ~1 or (flags and kind != KIND_SEALED):
                raise integrity(f"frame: bad flags {flags:#x}", **w)
            if vtype != 0 and vtype < TYPE_RESERVED:
                raise integrity(f"frame: vtype {vtype:#x} below 0xFF00", **w)
            if kind == KIND_CLEAR and vtype < TYPE_RESERVED:
                raise integrity("frame: CLEAR frame of a non-reserved vtype", **w)
            if seq != seq_expect:
                raise integrity(f"frame: seq {seq}, expected {seq_expect}", **w)
            if body_len > MAX_BODY:
                raise integrity("frame: body_len over the maximum", **w)
            if kind == KIND_PRUNED and body_len != 64:
                raise integrity("frame: PRUNED body_len != 64", **w)
            if kind != KIND_PRUNED and body_len < ENV_HDR_LEN + TAG_LEN:
                raise integrity("frame: body shorter than envelope header + tag", **w)
            end = off + FRAME_HDR_LEN + body_len + LINK_LEN
            if end > len(b):
                raise self.tail("frame runs past the end of the file", last_file, w)
            body = b[off + FRAME_HDR_LEN:off + FRAME_HDR_LEN + body_len]
            link = b[end - LINK_LEN:end]
            if kind == KIND_PRUNED:
                orig, rh = body[:32], body[32:64]
                om, okind, oflags, ovtype, oseq, ots, _obl, _odepth = \
                    struct.unpack_from("<4sBBHQQII", orig, 0)
                if (om != FRAME_MAGIC or okind not in (KIND_SEALED, KIND_CLEAR)
                        or ovtype != vtype or oseq != seq or ots != ts):
                    raise integrity("PRUNED frame: original header disagrees", **w)
            else:
                rh = H(fh + body)
            want = H(self.head_link + rh)
            if link != want:
                if last_file and self.is_tail(b, end, link):
                    raise self.tail("last frame's link does not verify", True, w)
                raise integrity("frame: link does not verify", **w)
            rec = {"seq": seq, "ts_ns": ts, "kind": kind, "flags": flags, "vtype": vtype,
                   "body_len": body_len, "file": fname, "offset": off,
                   "segment_no": seg["segment_no"], "frame_header": fh,
                   "record_hash": rh, "link": link, "prev_link": self.head_link}
            if self.mk is not None and kind != KIND_PRUNED:
                self.open_record(rec, seg, fh, body, w)
            elif kind == KIND_CLEAR:
                # readable without the key (4.2); its tag needs the key
                rec.update(check_envelope(body[:-TAG_LEN], vtype, flags, w))
            if kind == KIND_CLEAR and rec["type"] == TYPE_CHECKPOINT:
                self.check_checkpoint(rec, w)
            self.records.append(rec)
            self.head_seq = seq
            self.head_link = link
            off = end
        return off

    def check_checkpoint(self, rec, w):
        """FORMAT.md 9.2: the CHECKPOINT payload, and 9.3: its head is the
        local link at its seq."""
        p = rec["payload"]
        if rec["key"]:
            raise integrity("CHECKPOINT record with a record key", **w)
        if len(p) != CHECKPOINT_BYTES or p[:4] != b"TCKP":
            raise integrity("CHECKPOINT payload: not 176 bytes starting TCKP", **w)
        version, backend, res, seq = struct.unpack_from("<BBHQ", p, 4)
        if version != 1:
            raise integrity(f"CHECKPOINT payload: unknown version {version}", **w)
        if backend not in (1, 2) or res != 0:
            raise integrity("CHECKPOINT payload: backend/reserved", **w)
        if not 1 <= seq < rec["seq"]:
            raise integrity(f"CHECKPOINT payload: anchored seq {seq} not below "
                            f"its own seq {rec['seq']}", **w)
        head = p[16:48]
        anchored = self.records[seq - self.records[0]["seq"]]["link"] \
            if self.records and seq >= self.records[0]["seq"] else None
        if anchored is None or anchored != head:
            raise integrity(f"CHECKPOINT payload: head is not the link of seq {seq}", **w)
        chain_id, = struct.unpack_from("<Q", p, 48)
        block_number, = struct.unpack_from("<Q", p, 96)
        if backend == 2 and (chain_id or any(p[56:96]) or block_number):
            raise integrity("CHECKPOINT payload: chain fields set for an anchor file", **w)

    @staticmethod
    def is_tail(b, end, _link):
        # FORMAT.md 6: a bad last frame with nothing after it is a torn tail.
        return end == len(b)

    @staticmethod
    def tail(msg, last_file, w):
        if last_file:
            return Fail(EXIT_INTEGRITY, "torn tail: " + msg, w)
        return integrity(msg, **w)

    def open_record(self, rec, seg, fh, body, w):
        if seg["sk"] is None:
            rec["decrypted"] = False  # epoch key forgotten
            return
        ad = self.meta["jid"] + fh + self.head_link
        if rec["kind"] == KIND_SEALED:
            env = aead_open(self.meta["cipher"], seg["sk"], rec["seq"], body, ad)
            if env is None:
                raise integrity("record does not authenticate (AEAD tag)", **w)
            rec["ciphertext"] = body[:-TAG_LEN]
        else:
            env = body[:-TAG_LEN]
            if aead_open(self.meta["cipher"], seg["sk"], rec["seq"], body[-TAG_LEN:],
                         ad + env) is None:
                raise integrity("CLEAR record does not authenticate (AEAD tag)", **w)
        rec["tag"] = body[-TAG_LEN:]
        rec["envelope"] = env
        rec.update(check_envelope(env, rec["vtype"], rec["flags"], w))
        rec["decrypted"] = True


# ---- known-answer description ------------------------------------------------

def describe(v, mk):
    m = v.meta
    hx = bytes.hex
    out = {
        "format": "tally journal v1 known-answer description (docs/FORMAT.md)",
        "journal_id": hx(m["jid"]),
        "name": m["name"].decode("utf-8", "replace"),
        "name_hex": hx(m["name"]),
        "kcv": hx(m["kcv"]),
        "genesis": hx(genesis(m["jid"])),
        "cipher": m["cipher"],
        "compress": m["flags"] & 1,
        "segment_size": m["segment_size"],
        "generation": m["generation"],
        "current_epoch": m["current_epoch"],
        "meta_mac": hx(m["mac"]),
        "meta_checksum": hx(m["checksum"]),
        "epochs": [{"epoch": e["epoch"], "flags": e["flags"],
                    "first_segment": e["first_segment"], "nonce": hx(e["nonce"]),
                    "wrapped": hx(e["wrapped"]),
                    **({"data_key": hx(m["dk"][e["epoch"]])} if e["epoch"] in m["dk"] else {})}
                   for e in m["epochs"]],
        "segments": [],
        "records": [],
        "head": {"seq": v.head_seq, "link": hx(v.head_link)},
    }
    if mk is not None:
        jid = m["jid"]
        out["master_key"] = hx(mk)
        out["k_wrap"] = hx(Hk(mk, b"tally/v1/wrap" + jid))
        out["k_meta"] = hx(Hk(mk, b"tally/v1/meta" + jid))
    for s in v.segments:
        d = {"file": s["file"], "offset": s["offset"], "segment_no": s["segment_no"],
             "epoch": s["epoch"], "first_seq": s["first_seq"], "salt": hx(s["salt"]),
             "prev_link": hx(s["prev_link"]), "header_hash": hx(s["header_hash"])}
        if s.get("sk") is not None:
            d["segment_key"] = hx(s["sk"])
        out["segments"].append(d)
    for r in v.records:
        d = {"seq": r["seq"], "ts_ns": r["ts_ns"], "kind": r["kind"], "flags": r["flags"],
             "vtype": r["vtype"], "body_len": r["body_len"], "file": r["file"],
             "offset": r["offset"], "frame_header": hx(r["frame_header"]),
             "prev_link": hx(r["prev_link"]), "record_hash": hx(r["record_hash"]),
             "link": hx(r["link"])}
        if r.get("decrypted"):
            nonce = le64(r["seq"]) + b"\0" * (4 if m["cipher"] == CIPHER_AES else 16)
            d.update({"nonce": hx(nonce),
                      "ad": hx(m["jid"] + r["frame_header"] + r["prev_link"]),
                      "envelope": hx(r["envelope"]), "tag": hx(r["tag"]),
                      "type": r["type"], "key": hx(r["key"]), "payload": hx(r["payload"]),
                      "data_len": r["data_len"], "raw_len": r["raw_len"]})
            if "ciphertext" in r:
                d["ciphertext"] = hx(r["ciphertext"])
        out["records"].append(d)
    return out


def compare(v, mk, want):
    """Compares this verifier's view with a JSON description; returns a list
    of differences (empty: agreement)."""
    have = describe(v, mk)
    diffs = []
    for k in ("journal_id", "kcv", "cipher", "compress", "name"):
        if k in want and want[k] != have[k]:
            diffs.append(f"{k}: expected {want[k]!r}, verify.py has {have[k]!r}")
    if "head" in want:
        for k in ("seq", "link"):
            if want["head"].get(k) != have["head"][k]:
                diffs.append(f"head.{k}: expected {want['head'].get(k)!r}, "
                             f"verify.py has {have['head'][k]!r}")
    if "segments" in want:
        if len(want["segments"]) != len(have["segments"]):
            diffs.append(f"{len(want['segments'])} segments expected, "
                         f"verify.py has {len(have['segments'])}")
        for ws, hs in zip(want["segments"], have["segments"]):
            for k, val in ws.items():
                if k in hs and hs[k] != val:
                    diffs.append(f"segment {ws.get('segment_no')}.{k}: expected {val!r}, "
                                 f"verify.py has {hs[k]!r}")
    if "records" in want:
        if len(want["records"]) != len(have["records"]):
            diffs.append(f"{len(want['records'])} records expected, "
                         f"verify.py has {len(have['records'])}")
        for wr, hr in zip(want["records"], have["records"]):
            for k, val in wr.items():
                if k not in hr:
                    if mk is not None or k in ("seq", "record_hash", "link"):
                        diffs.append(f"record {wr.get('seq')}.{k}: missing in verify.py")
                elif hr[k] != val:
                    diffs.append(f"record {wr.get('seq')}.{k}: expected {val!r}, "
                                 f"verify.py has {hr[k]!r}")
    return diffs


def verify_dir(d, mk):
    """Returns the Verifier on success; raises Fail."""
    _selftest_hchacha20()
    return Verifier(d, mk).run()


def load_key(path):
    st = os.stat(path)
    if st.st_mode & 0o077:
        raise Fail(EXIT_KEY, f"{path}: key file readable by group or others")
    with open(path, "rb") as f:
        b = f.read()
    if len(b) == 32:
        return b
    s = b.decode("ascii", "replace").rstrip("\n")
    if len(s) == 64 and all(c in "0123456789abcdefABCDEF" for c in s):
        return bytes.fromhex(s)
    raise Fail(EXIT_KEY, f"{path}: not a 32-byte or 64-hex-digit key")


def main(argv=None):
    ap = argparse.ArgumentParser(description="independent tally journal verifier (FORMAT.md v1)")
    ap.add_argument("dir")
    ap.add_argument("--key-file")
    ap.add_argument("--dump", help="write a known-answer description (JSON) here")
    ap.add_argument("--compare", help="check against this JSON description")
    ap.add_argument("--key-from-json", action="store_true",
                    help="take the master key from the --compare file (committed vectors)")
    ap.add_argument("--json", action="store_true", help="print the result as JSON")
    a = ap.parse_args(argv)
    want = None
    if a.compare:
        with open(a.compare) as f:
            want = json.load(f)
    try:
        kf = a.key_file or os.environ.get("TALLY_KEY_FILE")
        mk = load_key(kf) if kf else None
        if a.key_from_json:
            if want is None or "master_key" not in want:
                print("verify.py: --key-from-json needs --compare with a master_key", file=sys.stderr)
                return EXIT_USAGE
            mk = bytes.fromhex(want["master_key"])
        v = verify_dir(a.dir, mk)
    except Fail as e:
        if a.json:
            print(json.dumps({"ok": False, "exit": e.code, "error": str(e), **e.where}))
        else:
            print(f"verify.py: {a.dir}: {e}", file=sys.stderr)
        return e.code
    except OSError as e:
        print(f"verify.py: {a.dir}: {e}", file=sys.stderr)
        return EXIT_OP
    if a.dump:
        with open(a.dump, "w") as f:
            json.dump(describe(v, mk), f, indent=1)
            f.write("\n")
    if want is not None:
        diffs = compare(v, mk, want)
        if diffs:
            for x in diffs:
                print(f"verify.py: disagreement with {a.compare}: {x}", file=sys.stderr)
            return EXIT_INTEGRITY
    res = {"ok": True, "segments": len(v.segments), "records": len(v.records),
           "head_seq": v.head_seq, "head": v.head_link.hex(), "keyed": mk is not None,
           "journal_id": v.meta["jid"].hex()}
    if a.json:
        print(json.dumps(res))
    else:
        print(f"verify.py: ok: {res['records']} records in {res['segments']} segments, "
              f"head {v.head_seq} {res['head']}{' (keyed)' if mk is not None else ''}")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
