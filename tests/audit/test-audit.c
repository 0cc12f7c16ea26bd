/*
 * test-audit.c — the audit library (audit/audit.h) on real journals in
 * mkdtemp directories: clean journals with and without the key, a damaged
 * byte in each kind of place reported at its file, offset and seq with the
 * right code, a rewrite that recomputes the whole chain (caught by the
 * CHECKPOINT records without the key and by the tags with it), COMPACTION
 * records whose link is checked after the pass (more than the ring of
 * recent links back), partial ranges, a torn tail, a live writer, and the
 * RLP and Merkle-Patricia code of evidence bundles.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "testutil.h"

#include "audit-internal.h"
#include "checkpoint-internal.h"
#include "compact.h"
#include "tally-internal.h"

static uint8_t key[TALLY_KEY_BYTES];

static int audit_dir(const char *dir, const uint8_t *k, tally_audit_report *r)
{
    tally_audit_options o;
    memset(&o, 0, sizeof o);
    o.master_key = k;
    o.tail_wait_ms = 100;
    return tally_audit(dir, &o, r);
}

/* ---- building journals ------------------------------------------------------- */

static void append_n(tally *t, uint64_t n, const char *prefix)
{
    char buf[128];
    for (uint64_t i = 0; i < n; i++) {
        snprintf(buf, sizeof buf, "%s %llu: some payload bytes to make the "
                 "frame a little longer", prefix, (unsigned long long)i);
        tu_append_text(t, 7, NULL, buf);
    }
}

/* A journal of several segments with two CHECKPOINT records: base is the
 * temp directory, dir the journal in it, af the anchor file beside it. */
typedef struct fixture {
    char *base;
    char dir[4096];
    char af[4096];
} fixture;

static void anchored_journal(fixture *fx)
{
    fx->base = tu_mkdtemp("audit");
    tu_path(fx->dir, sizeof fx->dir, fx->base, "j");
    tu_path(fx->af, sizeof fx->af, fx->base, "anchors");
    tally_options o = tu_opts(key);
    o.segment_size = 4096;
    assert_int_equal(tally_init(fx->dir, &o), 0);
    tally *t;
    assert_int_equal(tally_open(&t, fx->dir, &o, NULL), 0);
    tally_anchor_target *tg;
    assert_int_equal(tally_anchor_target_file(&tg, fx->af), 0);
    tally_checkpoint_info ci;
    char err[256];
    append_n(t, 40, "first");
    assert_int_equal(tally_checkpoint_once(t, fx->dir, tg, &ci, err, sizeof err), 1);
    append_n(t, 40, "second");
    assert_int_equal(tally_checkpoint_once(t, fx->dir, tg, &ci, err, sizeof err), 1);
    append_n(t, 5, "third");
    tally_anchor_target_free(tg);
    assert_int_equal(tally_close(t), 0);
}

static void fixture_free(fixture *fx)
{
    tu_rmrf(fx->base);
    free(fx->base);
}

/* Where the frame of seq is: file name, offset, body_len, vtype. */
typedef struct frame_at {
    char file[32];
    uint64_t off;
    uint32_t body_len;
    uint16_t vtype;
} frame_at;

static frame_at find_frame(const char *dir, uint64_t seq)
{
    char names[64][32], p[4096];
    int n = tu_list_segs(dir, names, 64);
    for (int i = 0; i < n; i++) {
        tu_path(p, sizeof p, dir, names[i]);
        size_t len;
        uint8_t *d = tu_read(p, &len);
        size_t off = 0;
        while (off + 32 <= len) {
            if (memcmp(d + off, "TALLYSEG", 8) == 0) {
                off += 160;
                continue;
            }
            assert_memory_equal(d + off, "TFRM", 4);
            uint32_t bl = le32_get(d + off + 24);
            if (le64_get(d + off + 8) == seq) {
                frame_at f;
                snprintf(f.file, sizeof f.file, "%.31s", names[i]);
                f.off = off;
                f.body_len = bl;
                f.vtype = le16_get(d + off + 6);
                free(d);
                return f;
            }
            off += 64 + bl;
        }
        free(d);
    }
    fail_msg("seq %llu not found", (unsigned long long)seq);
    frame_at none;
    memset(&none, 0, sizeof none);
    return none;
}

static void flip(const char *dir, const char *file, uint64_t off)
{
    char p[4096];
    tu_path(p, sizeof p, dir, file);
    tu_flip_bit(p, off * 8);
}

/* Recomputes every record hash, link and segment header after a change
 * (what an attacker without the key can do): the chain verifies again. */
static void rechain(const char *dir)
{
    char names[64][32], p[4096];
    int n = tu_list_segs(dir, names, 64);
    uint8_t link[32];
    bool first = true;
    for (int i = 0; i < n; i++) {
        tu_path(p, sizeof p, dir, names[i]);
        size_t len;
        uint8_t *d = tu_read(p, &len);
        size_t off = 0;
        while (off + 32 <= len) {
            if (memcmp(d + off, "TALLYSEG", 8) == 0) {
                if (first)
                    memcpy(link, d + off + 96, 32);
                first = false;
                memcpy(d + off + 96, link, 32);
                ti_hash(d + off + 128, d + off, 128);
                off += 160;
                continue;
            }
            uint32_t bl = le32_get(d + off + 24);
            uint8_t rh[32];
            if (d[off + 4] == TF_KIND_PRUNED)
                memcpy(rh, d + off + 32 + 32, 32);
            else
                ti_hash(rh, d + off, 32 + (size_t)bl);
            ti_link(link, link, rh);
            memcpy(d + off + 32 + bl, link, 32);
            off += 64 + bl;
        }
        tu_write(p, d, len);
        free(d);
    }
}

/* ---- tests ------------------------------------------------------------------------ */

static void test_clean(void **state)
{
    (void)state;
    fixture fx;
    anchored_journal(&fx);
    const char *dir = fx.dir, *af = fx.af;
    tally_head_info h;
    assert_int_equal(tally_read_head(dir, &h), 0);
    for (int keyed = 0; keyed < 2; keyed++) {
        tally_audit_report r;
        assert_int_equal(audit_dir(dir, keyed ? key : NULL, &r), 0);
        assert_int_equal(r.rc, 0);
        assert_int_equal(r.keyed, keyed);
        assert_int_equal(r.records, 87);
        assert_int_equal(r.first_seq, 1);
        assert_int_equal(r.last_seq, 87);
        assert_int_equal(r.head_seq, h.seq);
        assert_memory_equal(r.head, h.link, 32);
        assert_int_equal(r.sealed, 85);
        assert_int_equal(r.clear, 2);
        assert_int_equal(r.pruned, 0);
        assert_true(r.segments >= 3);
        assert_int_equal(r.checkpoints, 2);
        assert_int_equal(r.checkpoint_links, 2);
        assert_true(r.has_checkpoint);
        assert_int_equal(r.checkpoint.seq, 81);       /* 40 + CP + 40 */
        assert_int_equal(r.checkpoint_record_seq, 82);
        assert_int_equal(r.unanchored_tail, 87 - 81);
        assert_false(r.partial);
        assert_false(r.live);
        assert_int_equal(r.where, TALLY_AUDIT_NOWHERE);
    }
    /* Online against the anchor file: every CHECKPOINT record matches. */
    tally_anchor_target *tg;
    assert_int_equal(tally_anchor_target_file(&tg, af), 0);
    tally_audit_options o;
    memset(&o, 0, sizeof o);
    o.target = tg;
    tally_audit_report r;
    assert_int_equal(tally_audit(dir, &o, &r), 0);
    assert_int_equal(r.anchor_mode, TALLY_AUDIT_ANCHORS_TARGET);
    assert_int_equal(r.anchors_checked, 2);
    assert_true(r.has_freshness);
    assert_int_equal(r.freshness.verdict, TALLY_VERDICT_FRESH);
    tally_anchor_target_free(tg);
    fixture_free(&fx);
}

typedef struct tamper_case {
    const char *name;
    uint64_t seq;              /* frame it is in (0: segment header / meta) */
    int part;                  /* 0 header ts, 1 ciphertext, 2 tag, 3 link,
                                  4 CHECKPOINT payload, 5 segment header,
                                  6 metadata */
    tally_audit_where where;
} tamper_case;

static void test_tamper(void **state)
{
    (void)state;
    fixture fx;
    anchored_journal(&fx);
    const char *dir = fx.dir;
    tu_snap *snap = tu_snap_take(dir);
    char names[64][32];
    int nfiles = tu_list_segs(dir, names, 64);
    assert_true(nfiles >= 3);
    static const tamper_case cases[] = {
        { "frame header", 5, 0, TALLY_AUDIT_FRAME },
        { "ciphertext", 6, 1, TALLY_AUDIT_FRAME },
        { "tag", 7, 2, TALLY_AUDIT_FRAME },
        { "stored link", 8, 3, TALLY_AUDIT_FRAME },
        { "CHECKPOINT record", 41, 4, TALLY_AUDIT_CHECKPOINT },
        { "segment header", 0, 5, TALLY_AUDIT_SEGMENT_HEADER },
        { "metadata", 0, 6, TALLY_AUDIT_METADATA },
        { "last frame", 87, 1, TALLY_AUDIT_FRAME },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const tamper_case *c = &cases[i];
        tu_snap_restore(snap, dir);
        frame_at f;
        memset(&f, 0, sizeof f);
        uint64_t at = 0, want_off = 0;
        const char *file = NULL;
        if (c->seq) {
            f = find_frame(dir, c->seq);
            file = f.file;
            want_off = f.off;
        }
        switch (c->part) {
        case 0: at = f.off + 16; break;                       /* ts_ns */
        case 1: at = f.off + 32 + 20; break;
        case 2: at = f.off + 32 + f.body_len - 3; break;
        case 3: at = f.off + 32 + f.body_len + 5;
                want_off = f.off + 32 + f.body_len; break;
        case 4: assert_int_equal(f.vtype, TALLY_TYPE_CHECKPOINT);
                at = f.off + 32 + 16 + 20; break;             /* head */
        case 5: file = names[1]; at = 48; want_off = 0; break; /* salt */
        case 6: file = "tally.meta"; at = 33; break;         /* generation */
        }
        flip(dir, file, at);
        for (int keyed = 0; keyed < 2; keyed++) {
            tally_audit_report r;
            int rc = audit_dir(dir, keyed ? key : NULL, &r);
            if (rc != TALLY_EINTEGRITY || r.where != c->where)
                fail_msg("%s (%s): rc %d where %s: %s", c->name,
                         keyed ? "keyed" : "keyless", rc,
                         tally_audit_where_name(r.where), r.message);
            assert_string_equal(r.file, file);
            if (c->part != 6)
                assert_int_equal(r.offset, want_off);
            if (c->seq)
                assert_int_equal(r.seq, c->seq);
            assert_true(r.message[0] != '\0');
            assert_int_equal(tally_exit_code(rc), 3);
        }
    }
    /* The metadata MAC is checked with the key only: change a field and
     * recompute the keyless checksum. */
    tu_snap_restore(snap, dir);
    char p[4096];
    tu_path(p, sizeof p, dir, "tally.meta");
    size_t len;
    uint8_t *m = tu_read(p, &len);
    m[32] ^= 1; /* generation */
    ti_hash(m + len - 32, m, len - 32);
    tu_write(p, m, len);
    free(m);
    tally_audit_report r;
    assert_int_equal(audit_dir(dir, NULL, &r), 0);
    assert_int_equal(audit_dir(dir, key, &r), TALLY_EINTEGRITY);
    assert_int_equal(r.where, TALLY_AUDIT_METADATA);
    /* A wrong key is a key failure before any record is read. */
    tu_snap_restore(snap, dir);
    uint8_t other[TALLY_KEY_BYTES];
    tu_key(other, 99);
    assert_int_equal(audit_dir(dir, other, &r), TALLY_EKEY);
    assert_int_equal(tally_exit_code(r.rc), 5);
    assert_int_equal(r.records, 0);
    tu_snap_free(snap);
    fixture_free(&fx);
}

/* A record changed and the whole chain recomputed: structure and chain
 * verify, but the CHECKPOINT records name the old links (keyless: fork at
 * the first CHECKPOINT after the change) and the tag fails (keyed). The
 * anchor target says forked. */
static void test_rewrite(void **state)
{
    (void)state;
    fixture fx;
    anchored_journal(&fx);
    const char *dir = fx.dir, *af = fx.af;
    frame_at f = find_frame(dir, 10);
    flip(dir, f.file, f.off + 32 + 4);
    rechain(dir);
    tally_audit_report r;
    assert_int_equal(audit_dir(dir, NULL, &r), TALLY_EFORK);
    assert_int_equal(r.where, TALLY_AUDIT_CHECKPOINT);
    assert_int_equal(r.seq, 41); /* the first CHECKPOINT record */
    assert_int_equal(tally_exit_code(r.rc), 4);
    assert_int_equal(audit_dir(dir, key, &r), TALLY_EINTEGRITY);
    assert_int_equal(r.where, TALLY_AUDIT_RECORD);
    assert_int_equal(r.seq, 10);
    assert_string_equal(r.file, f.file);
    assert_int_equal(r.offset, f.off);

    tally_anchor_target *tg;
    assert_int_equal(tally_anchor_target_file(&tg, af), 0);
    tally_audit_options o;
    memset(&o, 0, sizeof o);
    o.target = tg;
    /* The pass stops at the CHECKPOINT record first. */
    assert_int_equal(tally_audit(dir, &o, &r), TALLY_EFORK);
    tally_anchor_target_free(tg);
    fixture_free(&fx);
}

/* A COMPACTION record names the link of the last sealed record, more than
 * the ring of recent links back: checked after the pass, and a rewrite
 * before it is caught there. */
static void test_compaction_far(void **state)
{
    (void)state;
    char *dir = tu_mkdtemp("audit-far");
    tally_options o = tu_opts(key);
    assert_int_equal(tally_init(dir, &o), 0);
    tally *t;
    assert_int_equal(tally_open(&t, dir, &o, NULL), 0);
    for (int i = 0; i < 10; i++)
        tu_append_text(t, 3, "same-key", "value");
    assert_int_equal(tally_close(t), 0);
    assert_int_equal(tally_open(&t, dir, &o, NULL), 0);
    enum { N = 140000, B = 1000 };
    tally_record_in recs[B];
    memset(recs, 0, sizeof recs);
    for (int i = 0; i < B; i++) {
        recs[i].type = 1;
        recs[i].payload = "x";
        recs[i].payload_len = 1;
    }
    for (int i = 0; i < N / B; i++)
        assert_int_equal(tally_append_batch(t, recs, B, NULL), 0);
    tally_compact_report cr;
    assert_int_equal(tally_compact(t, NULL, &cr), 0);
    assert_int_equal(cr.records_pruned, 9);
    assert_true(cr.compaction_seq > 0);
    assert_int_equal(tally_close(t), 0);

    tally_audit_report r;
    for (int keyed = 0; keyed < 2; keyed++) {
        assert_int_equal(audit_dir(dir, keyed ? key : NULL, &r), 0);
        assert_int_equal(r.records, 10 + N + 1);
        assert_int_equal(r.pruned, 9);
        assert_int_equal(r.compactions, 1);
        assert_int_equal(r.compaction_links, 1);
        assert_int_equal(r.compaction_pruned, 9);
        assert_int_equal(r.last_compaction_seq, cr.compaction_seq);
    }
    /* The pruned record 3 rewritten (its kept record_hash), chain
     * recomputed: only the COMPACTION record's link tells. */
    frame_at f = find_frame(dir, 3);
    flip(dir, f.file, f.off + 32 + 32 + 1);
    rechain(dir);
    assert_int_equal(audit_dir(dir, NULL, &r), TALLY_EINTEGRITY);
    assert_int_equal(r.where, TALLY_AUDIT_COMPACTION);
    assert_int_equal(r.seq, cr.compaction_seq);
    tu_rmrf(dir);
    free(dir);
}

static void test_partial(void **state)
{
    (void)state;
    fixture fx;
    anchored_journal(&fx);
    const char *dir = fx.dir;
    tally_audit_options o;
    memset(&o, 0, sizeof o);
    o.from_seq = 50;
    o.to_seq = 80;
    tally_audit_report r;
    assert_int_equal(tally_audit(dir, &o, &r), 0);
    assert_true(r.partial);
    assert_int_equal(r.first_seq, 50);
    assert_int_equal(r.last_seq, 80);
    assert_int_equal(r.records, 31);
    /* Damage before the range is not read; inside it, it is found. */
    frame_at f = find_frame(dir, 20);
    flip(dir, f.file, f.off + 40);
    assert_int_equal(tally_audit(dir, &o, &r), 0);
    f = find_frame(dir, 60);
    flip(dir, f.file, f.off + 40);
    assert_int_equal(tally_audit(dir, &o, &r), TALLY_EINTEGRITY);
    assert_int_equal(r.seq, 60);
    o.from_seq = 90; /* past the head */
    o.to_seq = 0;
    assert_true(tally_audit(dir, &o, &r) < 0);
    fixture_free(&fx);
}

static void test_torn_tail(void **state)
{
    (void)state;
    fixture fx;
    anchored_journal(&fx);
    const char *dir = fx.dir;
    char names[64][32], p[4096];
    int n = tu_list_segs(dir, names, 64);
    frame_at f = find_frame(dir, 87);
    tu_path(p, sizeof p, dir, f.file);
    size_t len;
    uint8_t *d = tu_read(p, &len);
    /* Half a frame after the last one: what a crash mid-write leaves. */
    uint8_t *d2 = malloc(len + 50);
    memcpy(d2, d, len);
    memcpy(d2 + len, d + f.off, 50);
    le64_put(d2 + len + 8, 88);
    tu_write(p, d2, len + 50);
    tally_audit_report r;
    assert_int_equal(audit_dir(dir, NULL, &r), TALLY_ETORN);
    assert_int_equal(r.where, TALLY_AUDIT_TAIL);
    assert_string_equal(r.file, names[n - 1]);
    assert_int_equal(r.offset, len);
    assert_int_equal(r.seq, 88);
    assert_int_equal(r.tail_bytes, 50);
    assert_int_equal(r.records, 87); /* everything before it verified */
    assert_int_equal(tally_exit_code(r.rc), 3);
    free(d);
    free(d2);
    fixture_free(&fx);
}

/* ---- the same verdict as verify and recovery (FORMAT.md §6) ------------------ */

/* Zeros bytes [from, to) of path and appends tail zero bytes (the space a
 * writer reserves in the file it is writing, FORMAT.md §4: what a crash
 * leaves). */
static void zero_range(const char *path, uint64_t from, uint64_t to,
                       size_t tail)
{
    size_t len;
    uint8_t *b = tu_read(path, &len);
    assert_non_null(b);
    uint8_t *c = calloc(1, len + tail);
    assert_non_null(c);
    memcpy(c, b, len);
    assert_true(from <= to && to <= len);
    memset(c + from, 0, (size_t)(to - from));
    tu_write(path, c, len + tail);
    free(b);
    free(c);
}

/* tally_verify and tally_audit (with and without the key) give want for
 * the bytes in dir, at the same file, offset and seq; recovery (the next
 * open for writing) cuts there for TALLY_ETORN, refuses naming that place
 * for TALLY_EINTEGRITY and cuts nothing for 0. */
static void expect_same(const char *dir, int want, const char *file,
                        uint64_t off, uint64_t seq, const char *what)
{
    for (int keyed = 0; keyed < 2; keyed++) {
        tally_verify_report vr;
        tally_audit_report ar;
        int vrc = tally_verify(dir, keyed ? key : NULL, &vr);
        int arc = audit_dir(dir, keyed ? key : NULL, &ar);
        if (vrc != want || arc != want)
            fail_msg("%s (%s): verify gave %s (%s), audit %s (%s), expected "
                     "%s", what, keyed ? "keyed" : "keyless",
                     tally_strerror(vrc), vr.message, tally_strerror(arc),
                     ar.message, tally_strerror(want));
        if (want == 0)
            continue;
        if (strcmp(vr.segment, file) != 0 || strcmp(ar.file, file) != 0 ||
            vr.offset != off || ar.offset != off || vr.seq != seq ||
            ar.seq != seq)
            fail_msg("%s (%s): verify at %s offset %llu seq %llu, audit at "
                     "%s offset %llu seq %llu, expected %s offset %llu seq "
                     "%llu", what, keyed ? "keyed" : "keyless", vr.segment,
                     (unsigned long long)vr.offset,
                     (unsigned long long)vr.seq, ar.file,
                     (unsigned long long)ar.offset,
                     (unsigned long long)ar.seq, file,
                     (unsigned long long)off, (unsigned long long)seq);
        if (want == TALLY_ETORN)
            assert_int_equal(ar.where, TALLY_AUDIT_TAIL);
        assert_int_equal(tally_exit_code(arc), 3);
    }
    tally_options o = tu_opts(key);
    tally *t = NULL;
    tally_recovery rec;
    memset(&rec, 0, sizeof rec);
    int rc = tally_open(&t, dir, &o, &rec);
    if (want == TALLY_EINTEGRITY) {
        if (rc == 0)
            tally_close(t);
        assert_int_equal(rc, TALLY_EINTEGRITY);
        char place[96];
        snprintf(place, sizeof place, "%s: offset %llu, seq %llu", file,
                 (unsigned long long)off, (unsigned long long)seq);
        if (!strstr(rec.message, place))
            fail_msg("%s: recovery refused elsewhere: %s (expected %s)", what,
                     rec.message, place);
        return;
    }
    if (rc != 0)
        fail_msg("%s: recovery: %s: %s", what, tally_strerror(rc),
                 rec.message);
    if (want == TALLY_ETORN) {
        assert_string_equal(rec.segment, file);
        assert_int_equal(rec.cut_first_seq, seq);
        assert_true(rec.cut_bytes > 0);
    } else {
        assert_int_equal(rec.cut_bytes, 0);
    }
    assert_int_equal(tally_close(t), 0);
}

/* The same damaged or torn journal fed to tally_verify, tally_audit and
 * recovery: the one decision between a torn tail and damage (FORMAT.md §6)
 * and the file-name rule (§1) give one verdict at one place. The journal:
 * synced records in several files, then one file written under policy
 * none: 4 records, a sync, 4 more (the last 4 never synced). */
static void test_same_verdict(void **state)
{
    (void)state;
    char *base = tu_mkdtemp("audit-same");
    char dir[4096];
    tu_path(dir, sizeof dir, base, "j");
    tally_options o = tu_opts(key);
    o.segment_size = 4096;
    o.sync = TALLY_SYNC_ALWAYS;
    assert_int_equal(tally_init(dir, &o), 0);
    tally *t;
    assert_int_equal(tally_open(&t, dir, &o, NULL), 0);
    append_n(t, 60, "synced");
    assert_int_equal(tally_close(t), 0);
    o.sync = TALLY_SYNC_NONE;
    assert_int_equal(tally_open(&t, dir, &o, NULL), 0);
    append_n(t, 4, "a");                 /* 61..64 */
    assert_int_equal(tally_sync(t, 0), 0);
    append_n(t, 4, "b");                 /* 65..68: never synced */
    assert_int_equal(tally_close(t), 0);
    char names[64][32];
    int n = tu_list_segs(dir, names, 64);
    assert_true(n >= 4);
    frame_at f[69];
    for (uint64_t s = 61; s <= 68; s++) {
        f[s] = find_frame(dir, s);
        assert_string_equal(f[s].file, names[n - 1]);
    }
#define END(s) (f[s].off + 64 + f[s].body_len)
    const char *last = names[n - 1];
    char p[4096];
    tu_path(p, sizeof p, dir, last);
    tu_snap *snap = tu_snap_take(dir);

    expect_same(dir, 0, NULL, 0, 0, "clean");
    /* The writer's reserved zero tail after whole records (a crash). */
    zero_range(p, 0, 0, 4096);
    expect_same(dir, 0, NULL, 0, 0, "reserved zero tail");
    /* A zeroed run of frames (a rotted page) in the last file, closed:
     * the file ends with a frame, so all of it was synced. */
    tu_snap_restore(snap, dir);
    zero_range(p, f[62].off, END(63), 0);
    expect_same(dir, TALLY_EINTEGRITY, last, f[62].off, 62,
                "seqs 62-63 zeroed, closed file");
    /* The same run with the reserved tail: 65..68 say (unsynced_depth)
     * that 61..64 were durable. */
    tu_snap_restore(snap, dir);
    zero_range(p, f[62].off, END(63), 4096);
    expect_same(dir, TALLY_EINTEGRITY, last, f[62].off, 62,
                "seqs 62-63 zeroed, reserved tail");
    /* A hole in records never synced, with the reserved tail: nothing
     * says they were durable, a torn tail that recovery cuts. */
    tu_snap_restore(snap, dir);
    zero_range(p, f[66].off, END(67), 4096);
    expect_same(dir, TALLY_ETORN, last, f[66].off, 66,
                "seqs 66-67 zeroed (never synced), reserved tail");
    /* A torn last frame: the file ends inside it. */
    tu_snap_restore(snap, dir);
    tu_truncate(p, f[68].off + 40);
    expect_same(dir, TALLY_ETORN, last, f[68].off, 68, "torn last frame");
    /* A torn last frame in the reserved tail: whole in length, its last
     * bytes zero (a write cut short at a page boundary). */
    tu_snap_restore(snap, dir);
    zero_range(p, END(68) - 40, END(68), 4096);
    expect_same(dir, TALLY_ETORN, last, f[68].off, 68,
                "torn last frame in the reserved tail");
    /* The last file under the name of the next segment (§1). */
    tu_snap_restore(snap, dir);
    {
        uint64_t no = 0;
        assert_true(ti_seg_parse_name(last, &no));
        char other[TF_SEG_NAME_LEN + 1], q[4096];
        ti_seg_name(other, no + 1);
        tu_path(q, sizeof q, dir, other);
        assert_int_equal(rename(p, q), 0);
        expect_same(dir, TALLY_EINTEGRITY, other, 0, 61,
                    "last file misnamed");
        assert_int_equal(rename(q, p), 0);
    }
    /* A merged file (segments k-2 and k-1 in file k-2) with, under the
     * name of file k-1, not the leftover copy of segment k-1 but segment
     * k (§11.4): a file passed over as a leftover is named after its
     * first segment too. */
    tu_snap_restore(snap, dir);
    {
        char a[4096], b[4096];
        tu_path(a, sizeof a, dir, names[n - 3]);
        tu_path(b, sizeof b, dir, names[n - 2]);
        size_t la, lb, lc;
        uint8_t *da = tu_read(a, &la), *db = tu_read(b, &lb),
                *dc = tu_read(p, &lc);
        uint8_t *m = malloc(la + lb);
        assert_non_null(m);
        memcpy(m, da, la);
        memcpy(m + la, db, lb);
        tu_write(a, m, la + lb);
        tu_write(b, dc, lc);
        assert_int_equal(unlink(p), 0);
        expect_same(dir, TALLY_EINTEGRITY, names[n - 2], 0, 61,
                    "segment k under the name of file k-1, after the merged "
                    "file");
        free(da);
        free(db);
        free(dc);
        free(m);
    }
#undef END
    tu_snap_free(snap);
    tu_rmrf(base);
    free(base);
}

typedef struct writer_ctx {
    tally *t;
    volatile int stop;
    uint64_t appended;
} writer_ctx;

static void *writer(void *arg)
{
    writer_ctx *w = arg;
    tally_record_in recs[100];
    memset(recs, 0, sizeof recs);
    for (int i = 0; i < 100; i++) {
        recs[i].type = 2;
        recs[i].payload = "appended while the audit reads";
        recs[i].payload_len = 30;
    }
    while (!w->stop) {
        if (tally_append_batch(w->t, recs, 100, NULL) < 0)
            break;
        w->appended += 100;
    }
    return NULL;
}

static void test_live(void **state)
{
    (void)state;
    char *dir = tu_mkdtemp("audit-live");
    tally_options o = tu_opts(key);
    o.segment_size = 1 << 20;
    o.sync = TALLY_SYNC_NONE;
    assert_int_equal(tally_init(dir, &o), 0);
    tally *t;
    assert_int_equal(tally_open(&t, dir, &o, NULL), 0);
    append_n(t, 20000, "before");
    assert_int_equal(tally_sync(t, 0), 0);
    writer_ctx w = { .t = t };
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, writer, &w), 0);
    int saw_live = 0;
    for (int i = 0; i < 20 && !saw_live; i++) {
        tally_audit_report r;
        int rc = audit_dir(dir, key, &r);
        if (rc != 0)
            fail_msg("audit during appends: %d %s", rc, r.message);
        assert_true(r.records >= 20000);
        assert_int_equal(r.last_seq, r.start_head_seq);
        saw_live = r.live && r.end_head_seq > r.start_head_seq;
    }
    w.stop = 1;
    pthread_join(th, NULL);
    assert_true(saw_live);
    assert_int_equal(tally_close(t), 0);
    tally_audit_report r;
    assert_int_equal(audit_dir(dir, NULL, &r), 0);
    assert_int_equal(r.records, 20000 + w.appended);
    assert_false(r.live);
    tu_rmrf(dir);
    free(dir);
}

/* ---- RLP and Merkle-Patricia tries -------------------------------------------------- */

static void test_rlp(void **state)
{
    (void)state;
    ta_rlp_item it;
    static const uint8_t ok1[] = { 0x05 }, ok2[] = { 0x81, 0x80 },
                         list[] = { 0xc3, 0x01, 0x80, 0x02 };
    static const uint8_t wrapped_low[] = { 0x81, 0x05 },
                         long_short[] = { 0xb8, 0x02, 0xaa, 0xbb },
                         zero_len[] = { 0xb9, 0x00, 0x40 },
                         overrun[] = { 0x83, 0x01 },
                         trailing[] = { 0x01, 0x02 };
    assert_int_equal(ta_rlp_decode(ok1, 1, &it), 0);
    assert_int_equal(it.len, 1);
    assert_int_equal(ta_rlp_decode(ok2, 2, &it), 0);
    assert_int_equal(ta_rlp_decode(list, 4, &it), 0);
    ta_rlp_item items[4];
    assert_int_equal(ta_rlp_list(&it, items, 4), 3);
    uint64_t v;
    assert_int_equal(ta_rlp_u64(&items[0], &v), 0);
    assert_int_equal(v, 1);
    assert_int_equal(ta_rlp_u64(&items[1], &v), 0);
    assert_int_equal(v, 0);
    assert_int_equal(ta_rlp_decode(wrapped_low, 2, &it), -EINVAL);
    assert_int_equal(ta_rlp_decode(long_short, 4, &it), -EINVAL);
    assert_int_equal(ta_rlp_decode(zero_len, 3, &it), -EINVAL);
    assert_int_equal(ta_rlp_decode(overrun, 2, &it), -EINVAL);
    assert_int_equal(ta_rlp_decode(trailing, 2, &it), -EINVAL);
    uint8_t k[9];
    assert_int_equal(ta_index_key(0, k), 1);
    assert_int_equal(k[0], 0x80);
    assert_int_equal(ta_index_key(127, k), 1);
    assert_int_equal(ta_index_key(128, k), 2);
    assert_int_equal(k[0], 0x81);
    assert_int_equal(k[1], 0x80);
}

static void test_mpt(void **state)
{
    (void)state;
    /* The empty trie's root is keccak(rlp("")). */
    uint8_t root[32], want[32];
    assert_int_equal(ta_mpt_build(NULL, NULL, NULL, NULL, 0, NULL, 0, root,
                                  NULL), 0);
    assert_int_equal(tu_unhex(want, 32, "56e81f171bcc55a6ff8345e692c0f86e5b48e0"
                              "1b996cadc001622fb5e363b421"), 32);
    assert_memory_equal(root, want, 32);
    static const size_t sizes[] = { 1, 2, 3, 16, 17, 127, 128, 129, 300 };
    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
        size_t n = sizes[s];
        uint8_t (*keys)[9] = calloc(n, sizeof *keys);
        const uint8_t **kp = calloc(n, sizeof *kp);
        size_t *kl = calloc(n, sizeof *kl);
        uint8_t (*vals)[40] = calloc(n, sizeof *vals);
        const uint8_t **vp = calloc(n, sizeof *vp);
        size_t *vl = calloc(n, sizeof *vl);
        for (size_t i = 0; i < n; i++) {
            kl[i] = ta_index_key(i, keys[i]);
            kp[i] = keys[i];
            /* short values make embedded nodes, long ones hashed ones */
            vl[i] = 1 + (i * 7) % 40;
            memset(vals[i], (int)(i + 1), vl[i]);
            vp[i] = vals[i];
        }
        uint8_t r0[32];
        assert_int_equal(ta_mpt_build(kp, kl, vp, vl, n, NULL, 0, r0, NULL), 0);
        for (size_t i = 0; i < n; i++) {
            ta_proof pf;
            assert_int_equal(ta_mpt_build(kp, kl, vp, vl, n, kp[i], kl[i],
                                          root, &pf), 0);
            assert_memory_equal(root, r0, 32);
            const uint8_t *val;
            size_t len;
            const char *why = NULL;
            if (ta_mpt_verify(root, kp[i], kl[i],
                              (const uint8_t *const *)pf.nodes, pf.lens, pf.n,
                              &val, &len, &why) != 0)
                fail_msg("n %zu key %zu: %s", n, i, why);
            assert_int_equal(len, vl[i]);
            assert_memory_equal(val, vals[i], len);
            /* Any changed byte of any node breaks it. */
            size_t node = i % pf.n;
            pf.nodes[node][pf.lens[node] / 2] ^= 0x10;
            const uint8_t *v2 = NULL;
            size_t l2 = 0;
            int bad = ta_mpt_verify(root, kp[i], kl[i],
                                    (const uint8_t *const *)pf.nodes, pf.lens,
                                    pf.n, &v2, &l2, &why);
            assert_true(bad != 0 || l2 != vl[i] ||
                        memcmp(v2, vals[i], l2) != 0);
            ta_proof_free(&pf);
        }
        /* A value changed gives another root. */
        vals[0][0] ^= 1;
        assert_int_equal(ta_mpt_build(kp, kl, vp, vl, n, NULL, 0, root, NULL), 0);
        assert_memory_not_equal(root, r0, 32);
        free(keys);
        free(kp);
        free(kl);
        free(vals);
        free(vp);
        free(vl);
    }
}

static void test_evidence_format(void **state)
{
    (void)state;
    char *dir = tu_mkdtemp("audit-ev");
    char p[4096], err[256];
    tally_evidence *ev = NULL;
    tu_path(p, sizeof p, dir, "bundle.json");
    tu_write(p, "not json", 8);
    assert_int_equal(tally_evidence_load(&ev, p, err, sizeof err), TALLY_EFORMAT);
    const char *other = "{\"format\":\"something-else\",\"version\":1}";
    tu_write(p, other, strlen(other));
    assert_int_equal(tally_evidence_load(&ev, p, err, sizeof err), TALLY_EFORMAT);
    const char *v2 = "{\"format\":\"tally-evidence\",\"version\":2}";
    tu_write(p, v2, strlen(v2));
    assert_int_equal(tally_evidence_load(&ev, p, err, sizeof err), TALLY_EFORMAT);
    tu_path(p, sizeof p, dir, "missing.json");
    assert_int_equal(tally_evidence_load(&ev, p, err, sizeof err), -ENOENT);
    assert_null(ev);
    tu_rmrf(dir);
    free(dir);
}

int main(void)
{
    tu_key(key, 1);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_clean),
        cmocka_unit_test(test_tamper),
        cmocka_unit_test(test_rewrite),
        cmocka_unit_test(test_compaction_far),
        cmocka_unit_test(test_partial),
        cmocka_unit_test(test_torn_tail),
        cmocka_unit_test(test_same_verdict),
        cmocka_unit_test(test_live),
        cmocka_unit_test(test_rlp),
        cmocka_unit_test(test_mpt),
        cmocka_unit_test(test_evidence_format),
    };
    return cmocka_run_group_tests(tests, NULL, tu_cleanup);
}
