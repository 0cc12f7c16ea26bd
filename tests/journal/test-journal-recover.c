/*
 * test-journal-recover.c — recovery at open (FORMAT.md §6) on real files.
 *
 * - The last record is truncated at every byte offset: open cuts back to the
 *   previous record and reports the cut (bytes, first lost seq, file); every
 *   record before it is kept; the journal then continues and verifies.
 * - Every byte of the last frame damaged (one bit each): the same cut.
 * - Damage in the middle of the last segment with whole frames after it:
 *   TALLY_EINTEGRITY at open, nothing cut.
 * - Damage in an earlier segment: an integrity error naming the file, offset
 *   and seq; never cut.
 */
#include "testutil.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define NREC 7 /* seqs 1..3 in segment 1, 4..7 in segment 2 */

typedef struct fixture {
    char *dir;
    uint8_t key[TALLY_KEY_BYTES];
    tu_snap *snap;
    char seg[2][32];
    uint64_t off[NREC + 1];  /* frame offset of seq i in its file */
    uint64_t end[NREC + 1];  /* end of frame i (offset of the next) */
    uint8_t link[NREC + 1][TALLY_HASH_BYTES];
    uint64_t seg2_size;
} fixture;

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    assert_non_null(f);
    tu_key(f->key, 50);
    f->dir = tu_mkdtemp("recover");
    tally_options o = tu_opts(f->key);
    assert_int_equal(tally_init(f->dir, &o), 0);
    o.sync = TALLY_SYNC_ALWAYS;
    tally *t = NULL;
    char buf[64];
    for (int open_no = 0; open_no < 2; open_no++) {
        assert_int_equal(tally_open(&t, f->dir, &o, NULL), 0);
        for (int i = 0; i < (open_no ? 4 : 3); i++) {
            snprintf(buf, sizeof buf, "record payload number %d", open_no * 3 + i + 1);
            tu_append_text(t, 1, "rk", buf);
        }
        assert_int_equal(tally_close(t), 0);
    }
    char names[8][32];
    assert_int_equal(tu_list_segs(f->dir, names, 8), 2);
    memcpy(f->seg, names, sizeof f->seg);

    tally_iter *it = NULL;
    tally_record r;
    assert_int_equal(tally_iter_open(&it, f->dir, f->key, 1, 0), 0);
    for (int i = 1; i <= NREC; i++) {
        assert_int_equal(tally_iter_next(it, &r), 1);
        assert_string_equal(r.segment, f->seg[i <= 3 ? 0 : 1]);
        f->off[i] = r.offset;
        f->end[i] = r.offset + 32 + r.body_len + 32;
        memcpy(f->link[i], r.link, TALLY_HASH_BYTES);
    }
    assert_int_equal(tally_iter_next(it, &r), 0);
    tally_iter_free(it);
    for (int i = 1; i < NREC; i++)
        if (i != 3)
            assert_int_equal(f->end[i], f->off[i + 1]);
    char p[PATH_MAX];
    tu_path(p, sizeof p, f->dir, f->seg[1]);
    f->seg2_size = tu_file_size(p);
    assert_int_equal(f->seg2_size, f->end[NREC]);
    f->snap = tu_snap_take(f->dir);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    tu_snap_free(f->snap);
    tu_rmrf(f->dir);
    free(f->dir);
    free(f);
    return 0;
}

/* After a cut of the last record: seqs 1..6 unchanged, the journal continues
 * at seq 7 and verifies with the key. */
static void check_continues(fixture *f, const char *what)
{
    tally_options o = tu_opts(f->key);
    o.sync = TALLY_SYNC_NONE;
    tally *t = NULL;
    tally_head_info h;
    int rc = tally_open(&t, f->dir, &o, NULL);
    if (rc)
        fail_msg("%s: second open: %s", what, tally_strerror(rc));
    assert_int_equal(tally_head(t, &h), 0);
    assert_int_equal(h.seq, NREC - 1);
    assert_memory_equal(h.link, f->link[NREC - 1], TALLY_HASH_BYTES);
    assert_int_equal(tu_append_text(t, 2, NULL, "after the cut"), NREC);
    assert_int_equal(tally_close(t), 0);

    tally_iter *it = NULL;
    tally_record r;
    assert_int_equal(tally_iter_open(&it, f->dir, f->key, 1, 0), 0);
    for (int i = 1; i <= NREC; i++) {
        rc = tally_iter_next(it, &r);
        if (rc != 1)
            fail_msg("%s: seq %d: %d %s", what, i, rc, tally_iter_errmsg(it));
        assert_int_equal(r.seq, (uint64_t)i);
        if (i < NREC) {
            assert_memory_equal(r.link, f->link[i], TALLY_HASH_BYTES);
        } else {
            assert_int_equal(r.type, 2);
            assert_memory_equal(r.payload, "after the cut", 13);
        }
    }
    assert_int_equal(tally_iter_next(it, &r), 0);
    tally_iter_free(it);
    tally_verify_report vr;
    rc = tally_verify(f->dir, f->key, &vr);
    if (rc)
        fail_msg("%s: verify after recovery: %s: %s", what, tally_strerror(rc), vr.message);
}

static void recover_expect_cut(fixture *f, uint64_t want_cut, const char *what)
{
    tally_options o = tu_opts(f->key);
    o.sync = TALLY_SYNC_NONE;
    tally *t = NULL;
    tally_recovery rec;
    memset(&rec, 0x5A, sizeof rec);
    int rc = tally_open(&t, f->dir, &o, &rec);
    if (rc)
        fail_msg("%s: open: %s (%s)", what, tally_strerror(rc), t ? tally_errmsg(t) : "");
    if (rec.cut_bytes != want_cut)
        fail_msg("%s: cut %llu bytes, expected %llu", what,
                 (unsigned long long)rec.cut_bytes, (unsigned long long)want_cut);
    if (want_cut) {
        assert_int_equal(rec.cut_first_seq, NREC);
        assert_string_equal(rec.segment, f->seg[1]);
    } else {
        assert_int_equal(rec.cut_first_seq, 0);
    }
    tally_head_info h;
    assert_int_equal(tally_head(t, &h), 0);
    assert_int_equal(h.seq, NREC - 1);
    assert_int_equal(tally_close(t), 0);
    /* the cut is made on disk: the file ends after the last whole frame */
    char p[PATH_MAX];
    tu_path(p, sizeof p, f->dir, f->seg[1]);
    assert_int_equal(tu_file_size(p), f->end[NREC - 1]);
    check_continues(f, what);
}

static void truncate_every_offset(void **state)
{
    fixture *f = *state;
    char p[PATH_MAX], what[96];
    tu_path(p, sizeof p, f->dir, f->seg[1]);
    for (uint64_t len = f->off[NREC]; len < f->seg2_size; len++) {
        tu_snap_restore(f->snap, f->dir);
        tu_truncate(p, len);
        snprintf(what, sizeof what, "truncated to %llu", (unsigned long long)len);
        /* verify is stricter than recovery: a torn tail fails it */
        tally_verify_report vr;
        int rc = tally_verify(f->dir, NULL, &vr);
        if (len == f->off[NREC]) {
            assert_int_equal(rc, 0);
            assert_int_equal(vr.records, NREC - 1);
        } else if (rc != TALLY_ETORN) {
            fail_msg("%s: verify gave %d (%s), expected TALLY_ETORN", what, rc, vr.message);
        }
        recover_expect_cut(f, len - f->off[NREC], what);
    }
}

static void expect_refused(fixture *f, const char *what);

/* One bit flipped in each byte of the last frame, which ends the (closed)
 * file: FORMAT.md §6. Where the flip leaves its header a valid header of
 * the same length (timestamp, unsynced_depth, body, tag, link), the frame
 * is whole and ends the file, which the writer cuts only once every frame
 * is durable: damage, refused. Where it breaks the magic, seq or body_len,
 * nothing shows a record there: a torn tail, cut. Verify reports the same
 * (TALLY_ETORN for a cut, TALLY_EINTEGRITY for a refusal). */
static void damage_last_frame(void **state)
{
    fixture *f = *state;
    char p[PATH_MAX], what[96];
    tu_path(p, sizeof p, f->dir, f->seg[1]);
    for (uint64_t pos = f->off[NREC]; pos < f->seg2_size; pos++) {
        tu_snap_restore(f->snap, f->dir);
        tu_flip_bit(p, pos * 8 + pos % 8);
        snprintf(what, sizeof what, "last frame, byte %llu flipped", (unsigned long long)pos);
        uint64_t rel = pos - f->off[NREC];
        /* 0: cut, 1: refused, -1: either (kind, flags, vtype: whether the
         * header stays valid depends on the bit), verify agreeing */
        int want = rel < 4 || (rel >= 8 && rel < 16) || (rel >= 24 && rel < 28) ? 0
                 : rel < 8 ? -1 : 1;
        tally_verify_report vr;
        int rc = tally_verify(f->dir, NULL, &vr);
        if (!(rc == TALLY_ETORN && want != 1) &&
            !(rc == TALLY_EINTEGRITY && want != 0))
            fail_msg("%s: verify gave %s (%s), expected %s", what, tally_strerror(rc),
                     vr.message, want == 0 ? "a torn tail" : "damage");
        assert_int_equal(vr.seq, NREC);
        assert_int_equal(vr.offset, f->off[NREC]);
        if (rc == TALLY_ETORN)
            recover_expect_cut(f, f->seg2_size - f->off[NREC], what);
        else
            expect_refused(f, what);
    }
}

static void expect_refused(fixture *f, const char *what)
{
    uint64_t before[2];
    char p[2][PATH_MAX];
    for (int s = 0; s < 2; s++) {
        tu_path(p[s], sizeof p[s], f->dir, f->seg[s]);
        before[s] = tu_file_size(p[s]);
    }
    tally_options o = tu_opts(f->key);
    tally *t = NULL;
    tally_recovery rec;
    memset(&rec, 0, sizeof rec);
    int rc = tally_open(&t, f->dir, &o, &rec);
    if (rc == 0) {
        tally_close(t);
        fail_msg("%s: open succeeded (cut %llu bytes from seq %llu), expected TALLY_EINTEGRITY",
                 what, (unsigned long long)rec.cut_bytes, (unsigned long long)rec.cut_first_seq);
    }
    if (rc != TALLY_EINTEGRITY)
        fail_msg("%s: open gave %s, expected TALLY_EINTEGRITY", what, tally_strerror(rc));
    /* nothing was cut */
    for (int s = 0; s < 2; s++)
        assert_int_equal(tu_file_size(p[s]), before[s]);
}

/* Damage to record 5 of segment 2 (records 6, 7 follow): refused. */
static void damage_middle_of_last_segment(void **state)
{
    fixture *f = *state;
    char p[PATH_MAX], what[128];
    tu_path(p, sizeof p, f->dir, f->seg[1]);
    struct { const char *name; uint64_t pos; } cases[] = {
        { "ts_ns", f->off[5] + 16 },
        { "body (ciphertext)", f->off[5] + 32 + 5 },
        { "body (tag)", f->end[5] - 32 - 3 },
        { "stored link", f->end[5] - 1 },
        { "record 6 body", f->off[6] + 40 },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        tu_snap_restore(f->snap, f->dir);
        tu_flip_bit(p, cases[i].pos * 8 + 2);
        snprintf(what, sizeof what, "damage to %s at byte %llu of %s", cases[i].name,
                 (unsigned long long)cases[i].pos, f->seg[1]);
        expect_refused(f, what);
        /* verify names the place */
        tally_verify_report vr;
        assert_int_equal(tally_verify(f->dir, NULL, &vr), TALLY_EINTEGRITY);
        assert_string_equal(vr.segment, f->seg[1]);
        uint64_t bad = i == 4 ? 6 : 5;
        assert_int_equal(vr.seq, bad);
        assert_int_equal(vr.offset, f->off[bad]);
    }
}

/* Damage in segment 1 (not the last): an integrity error naming the file;
 * recovery never cuts it. */
static void damage_earlier_segment(void **state)
{
    fixture *f = *state;
    char p[PATH_MAX];
    tu_path(p, sizeof p, f->dir, f->seg[0]);

    /* a frame body: found by verify (open walks only the last segment) */
    tu_snap_restore(f->snap, f->dir);
    tu_flip_bit(p, (f->off[2] + 40) * 8);
    tally_verify_report vr;
    assert_int_equal(tally_verify(f->dir, NULL, &vr), TALLY_EINTEGRITY);
    assert_string_equal(vr.segment, f->seg[0]);
    assert_int_equal(vr.seq, 2);
    assert_int_equal(vr.offset, f->off[2]);
    assert_int_equal(tally_verify(f->dir, f->key, &vr), TALLY_EINTEGRITY);
    assert_string_equal(vr.segment, f->seg[0]);
    tally_options o = tu_opts(f->key);
    tally *t = NULL;
    int rc = tally_open(&t, f->dir, &o, NULL);
    assert_true(rc == 0 || rc == TALLY_EINTEGRITY);
    if (rc == 0)
        assert_int_equal(tally_close(t), 0);
    assert_int_equal(tu_file_size(p), f->end[3]);
    /* the iterator stops with the error at the damaged record */
    tally_iter *it = NULL;
    tally_record r;
    assert_int_equal(tally_iter_open(&it, f->dir, f->key, 1, 0), 0);
    assert_int_equal(tally_iter_next(it, &r), 1);
    assert_int_equal(tally_iter_next(it, &r), TALLY_EINTEGRITY);
    assert_non_null(strstr(tally_iter_errmsg(it), f->seg[0]));
    tally_iter_free(it);

    /* the last frame of an earlier segment is not a tail: never cut */
    tu_snap_restore(f->snap, f->dir);
    tu_truncate(p, f->end[3] - 10);
    assert_int_equal(tally_verify(f->dir, NULL, &vr), TALLY_EINTEGRITY);
    assert_string_equal(vr.segment, f->seg[0]);
    /* open walks only the last segment, so it may not see this; it must
     * not cut it either way */
    rc = tally_open(&t, f->dir, &o, NULL);
    assert_true(rc == 0 || rc == TALLY_EINTEGRITY);
    if (rc == 0)
        assert_int_equal(tally_close(t), 0);
    assert_int_equal(tu_file_size(p), f->end[3] - 10);

    /* a segment header: refused at open, naming the file */
    tu_snap_restore(f->snap, f->dir);
    tu_path(p, sizeof p, f->dir, f->seg[0]);
    for (uint64_t pos = 0; pos < 160; pos += 23) {
        tu_snap_restore(f->snap, f->dir);
        tu_flip_bit(p, pos * 8 + 1);
        rc = tally_open(&t, f->dir, &o, NULL);
        if (rc == 0) {
            tally_close(t);
            fail_msg("segment 1 header byte %llu flipped: open succeeded",
                     (unsigned long long)pos);
        }
        assert_int_equal(rc, TALLY_EINTEGRITY);
        assert_int_equal(tally_verify(f->dir, NULL, &vr), TALLY_EINTEGRITY);
        assert_string_equal(vr.segment, f->seg[0]);
    }
}

/* ---- torn tail or damage: what the frames say was durable (§4.2, §6) ---- */

#define JMAX 32

/* A journal written by the tests below, mapped by the reader. */
typedef struct jr {
    char *dir;
    uint8_t key[TALLY_KEY_BYTES];
    tally *t;                    /* open writer, or NULL */
    uint64_t n;                  /* records */
    char file[JMAX + 1][32];     /* file of seq i */
    uint64_t off[JMAX + 1], end[JMAX + 1];
} jr;

static void jr_init(jr *j, const char *tag)
{
    memset(j, 0, sizeof *j);
    tu_key(j->key, 61);
    j->dir = tu_mkdtemp(tag);
    tally_options o = tu_opts(j->key);
    assert_int_equal(tally_init(j->dir, &o), 0);
}

static void jr_open(jr *j, tally_sync_policy pol)
{
    tally_options o = tu_opts(j->key);
    o.sync = pol;
    assert_int_equal(tally_open(&j->t, j->dir, &o, NULL), 0);
}

static void jr_append(jr *j, int n)
{
    char buf[64];
    for (int i = 0; i < n; i++) {
        snprintf(buf, sizeof buf, "payload of record %llu", (unsigned long long)j->n + 1);
        assert_int_equal(tu_append_text(j->t, 1, "k", buf), ++j->n);
    }
}

static void jr_close(jr *j)
{
    assert_int_equal(tally_close(j->t), 0);
    j->t = NULL;
    tally_iter *it = NULL;
    tally_record r;
    assert_int_equal(tally_iter_open(&it, j->dir, j->key, 1, 0), 0);
    for (uint64_t i = 1; i <= j->n; i++) {
        assert_int_equal(tally_iter_next(it, &r), 1);
        snprintf(j->file[i], sizeof j->file[i], "%s", r.segment);
        j->off[i] = r.offset;
        j->end[i] = r.offset + 64 + r.body_len;
    }
    assert_int_equal(tally_iter_next(it, &r), 0);
    tally_iter_free(it);
}

static void jr_free(jr *j)
{
    tu_rmrf(j->dir);
    free(j->dir);
}

static void jr_path(const jr *j, uint64_t seq, char *out, size_t n)
{
    tu_path(out, n, j->dir, j->file[seq]);
}

/* unsynced_depth, the frame header's u32 at offset 28 (§4.2) */
static uint32_t jr_depth(const jr *j, uint64_t seq)
{
    char p[PATH_MAX];
    jr_path(j, seq, p, sizeof p);
    size_t len;
    uint8_t *b = tu_read(p, &len);
    assert_non_null(b);
    const uint8_t *d = b + j->off[seq] + 28;
    uint32_t v = (uint32_t)d[0] | (uint32_t)d[1] << 8 | (uint32_t)d[2] << 16 |
                 (uint32_t)d[3] << 24;
    free(b);
    return v;
}

/* Zeros bytes [from, to) of the file; tail > 0 appends that many zero bytes
 * (the space a writer reserves in the file it is writing, §4: what a crash
 * leaves). */
static void zero_bytes(const char *path, uint64_t from, uint64_t to, size_t tail)
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

/* The writer's open must refuse (TALLY_EINTEGRITY naming the file, offset
 * and seq, nothing cut) and verify must report damage at the same place. */
static void jr_expect_refused(jr *j, uint64_t seq, const char *what)
{
    char p[PATH_MAX];
    jr_path(j, seq, p, sizeof p);
    uint64_t before = tu_file_size(p);
    tally_verify_report vr;
    int rc = tally_verify(j->dir, NULL, &vr);
    if (rc != TALLY_EINTEGRITY)
        fail_msg("%s: verify gave %s (%s), expected damage", what, tally_strerror(rc),
                 vr.message);
    assert_string_equal(vr.segment, j->file[seq]);
    assert_int_equal(vr.offset, j->off[seq]);
    assert_int_equal(vr.seq, seq);
    tally_options o = tu_opts(j->key);
    tally *t = NULL;
    tally_recovery rec;
    memset(&rec, 0, sizeof rec);
    rc = tally_open(&t, j->dir, &o, &rec);
    if (rc == 0) {
        tally_close(t);
        fail_msg("%s: open succeeded (cut %llu bytes from seq %llu), expected "
                 "TALLY_EINTEGRITY", what, (unsigned long long)rec.cut_bytes,
                 (unsigned long long)rec.cut_first_seq);
    }
    assert_int_equal(rc, TALLY_EINTEGRITY);
    char place[96];
    snprintf(place, sizeof place, "%s: offset %llu, seq %llu", j->file[seq],
             (unsigned long long)j->off[seq], (unsigned long long)seq);
    if (!strstr(rec.message, place))
        fail_msg("%s: the refusal does not name %s: %s", what, place, rec.message);
    assert_int_equal(tu_file_size(p), before);
}

/* Verify must report a torn tail at seq; the writer's open cuts from it and
 * reports the cut; the journal then continues and verifies. */
static void jr_expect_cut(jr *j, uint64_t seq, const char *what)
{
    tally_verify_report vr;
    int rc = tally_verify(j->dir, NULL, &vr);
    if (rc != TALLY_ETORN)
        fail_msg("%s: verify gave %s (%s), expected a torn tail", what,
                 tally_strerror(rc), vr.message);
    assert_int_equal(vr.offset, j->off[seq]);
    assert_int_equal(vr.seq, seq);
    tally_options o = tu_opts(j->key);
    tally *t = NULL;
    tally_recovery rec;
    memset(&rec, 0, sizeof rec);
    rc = tally_open(&t, j->dir, &o, &rec);
    if (rc)
        fail_msg("%s: open: %s: %s", what, tally_strerror(rc), rec.message);
    assert_int_equal(rec.cut_first_seq, seq);
    assert_true(rec.cut_bytes > 0);
    assert_string_equal(rec.segment, j->file[seq]);
    tally_head_info h;
    assert_int_equal(tally_head(t, &h), 0);
    assert_int_equal(h.seq, seq - 1);
    assert_int_equal(tu_append_text(t, 2, NULL, "after the cut"), seq);
    assert_int_equal(tally_close(t), 0);
    char p[PATH_MAX];
    jr_path(j, seq, p, sizeof p);
    rc = tally_verify(j->dir, j->key, &vr);
    if (rc)
        fail_msg("%s: verify after the cut: %s", what, vr.message);
    assert_int_equal(vr.last_seq, seq);
}

/* Synced records, then a run of them zeroed (a rotted page) with whole
 * records after it: the frames after the hole say that the zeroed seqs
 * were durable when they were encoded (unsynced_depth), so the hole is
 * damage, also in a file that still has its reserved zero tail (a crash
 * while it was written); in a closed file (no tail), its end says so too. */
static void zeroed_run_of_synced_frames_refused(void **state)
{
    (void)state;
    jr j;
    jr_init(&j, "rot");
    jr_open(&j, TALLY_SYNC_ALWAYS);
    jr_append(&j, 8);
    jr_close(&j);
    for (uint64_t s = 1; s <= j.n; s++)
        assert_int_equal(jr_depth(&j, s), 1); /* every earlier one durable */
    tu_snap *snap = tu_snap_take(j.dir);
    char p[PATH_MAX];
    jr_path(&j, 4, p, sizeof p);
    for (int live = 0; live < 2; live++) {
        tu_snap_restore(snap, j.dir);
        zero_bytes(p, j.off[4], j.end[5], live ? 4096 : 0);
        jr_expect_refused(&j, 4, live ? "seqs 4-5 zeroed, reserved tail"
                                      : "seqs 4-5 zeroed, closed file");
    }
    /* one frame's header zeroed, and one whose body_len runs past the end
     * of the file with whole records after it: damage all the same */
    tu_snap_restore(snap, j.dir);
    zero_bytes(p, j.off[5], j.off[5] + 32, 4096);
    jr_expect_refused(&j, 5, "seq 5's header zeroed, reserved tail");
    tu_snap_restore(snap, j.dir);
    {
        size_t len;
        uint8_t *b = tu_read(p, &len);
        b[j.off[5] + 24] = 0x00; /* body_len = 1 MiB, past the end */
        b[j.off[5] + 25] = 0x00;
        b[j.off[5] + 26] = 0x10;
        b[j.off[5] + 27] = 0x00;
        tu_write(p, b, len);
        free(b);
    }
    jr_expect_refused(&j, 5, "seq 5's body_len past the end of the file");
    tu_snap_free(snap);
    jr_free(&j);
}

/* Records written and never synced (policy none; what a power cut leaves
 * when a later write reached the disk and an earlier one did not): a zero
 * hole followed by frames, in a file with its reserved tail. No frame after
 * the hole says its seqs were durable: a torn tail, cut and reported. Once
 * a sync has covered them, the frames encoded after it say so: damage. */
static void zero_hole_in_unsynced_records_cut(void **state)
{
    (void)state;
    jr j;
    jr_init(&j, "hole");
    jr_open(&j, TALLY_SYNC_ALWAYS);
    jr_append(&j, 3);
    jr_close(&j);
    jr_open(&j, TALLY_SYNC_NONE);
    jr_append(&j, 4);                      /* 4..7: never synced yet */
    assert_int_equal(tally_sync(j.t, 0), 0);
    jr_append(&j, 4);                      /* 8..11: 4..7 durable */
    jr_close(&j);
    for (uint64_t s = 4; s <= 7; s++)
        assert_int_equal(jr_depth(&j, s), s - 3);
    for (uint64_t s = 8; s <= 11; s++)
        assert_int_equal(jr_depth(&j, s), s - 7);
    assert_string_equal(j.file[4], j.file[11]);
    tu_snap *snap = tu_snap_take(j.dir);
    char p[PATH_MAX];
    jr_path(&j, 4, p, sizeof p);

    /* a hole in 9..10 (after the sync), 11 written: never durable, cut */
    zero_bytes(p, j.off[9], j.end[10], 4096);
    jr_expect_cut(&j, 9, "seqs 9-10 zeroed, 11 after them, reserved tail");
    /* the same hole in a closed file: the writer cut the file there only
     * once all of it was durable */
    tu_snap_restore(snap, j.dir);
    zero_bytes(p, j.off[9], j.end[10], 0);
    jr_expect_refused(&j, 9, "seqs 9-10 zeroed, closed file");
    /* a hole in 5..6 before the sync: 8..11 say 4..7 were durable */
    tu_snap_restore(snap, j.dir);
    zero_bytes(p, j.off[5], j.end[6], 4096);
    jr_expect_refused(&j, 5, "seqs 5-6 zeroed, synced, reserved tail");
    /* a hole in 5..6 with only 7 after it (8..11 never reached the
     * disk): cut */
    tu_snap_restore(snap, j.dir);
    zero_bytes(p, j.off[5], j.end[6], 0);
    tu_truncate(p, j.end[7]);
    zero_bytes(p, 0, 0, 4096);
    jr_expect_cut(&j, 5, "seqs 5-6 zeroed, only 7 after them, reserved tail");
    tu_snap_free(snap);
    jr_free(&j);
}

/* A write cut short at a page boundary inside the reserved zero tail: the
 * last frame whole in length but its last bytes zero. Verify calls it a
 * torn tail, as recovery does (the same decision), and recovery cuts it. */
static void torn_frame_in_reserved_tail(void **state)
{
    (void)state;
    jr j;
    jr_init(&j, "torn");
    jr_open(&j, TALLY_SYNC_ALWAYS);
    jr_append(&j, 5);
    jr_close(&j);
    char p[PATH_MAX];
    jr_path(&j, 5, p, sizeof p);
    tu_snap *snap = tu_snap_take(j.dir);
    for (uint64_t keep = 3; keep <= 40; keep += 37) {
        tu_snap_restore(snap, j.dir);
        zero_bytes(p, j.end[5] - keep, j.end[5], 4096);
        jr_expect_cut(&j, 5, "the last frame torn in the reserved tail");
    }
    tu_snap_free(snap);
    jr_free(&j);
}

/* FORMAT.md §1: a file is named after its first segment; recovery and the
 * reader apply the same rule. A leftover of an interrupted merge (a copy of
 * a segment the merged file holds, under its own name) is passed over; a
 * file holding a later segment under an earlier name is damage. */
static void merged_file_names(void **state)
{
    (void)state;
    jr j;
    jr_init(&j, "names");
    for (int s = 0; s < 3; s++) {
        jr_open(&j, TALLY_SYNC_ALWAYS);
        jr_append(&j, 2);
        jr_close(&j);
    }
    char f[3][PATH_MAX];
    uint8_t *b[3];
    size_t len[3];
    for (int i = 0; i < 3; i++) {
        jr_path(&j, 1 + 2 * (uint64_t)i, f[i], sizeof f[i]);
        b[i] = tu_read(f[i], &len[i]);
        assert_non_null(b[i]);
    }
    uint8_t *m = malloc(len[0] + len[1]);
    assert_non_null(m);
    memcpy(m, b[0], len[0]);
    memcpy(m + len[0], b[1], len[1]);
    tu_write(f[0], m, len[0] + len[1]); /* segments 1-2 in file 1 */

    /* file 2 left over (a copy of segment 2), file 3 after it */
    tally_verify_report vr;
    int rc = tally_verify(j.dir, j.key, &vr);
    if (rc)
        fail_msg("merged file with a leftover: verify: %s", vr.message);
    assert_int_equal(vr.records, 6);
    tally_options o = tu_opts(j.key);
    tally *t = NULL;
    tally_recovery rec;
    assert_int_equal(tally_open(&t, j.dir, &o, &rec), 0);
    assert_int_equal(rec.cut_bytes, 0);
    assert_int_equal(tally_close(t), 0);

    /* segment 3 under the name of file 2, after the merged file */
    char names[8][32];
    int n = tu_list_segs(j.dir, names, 8);
    for (int i = 1; i < n; i++) {
        char q[PATH_MAX];
        tu_path(q, sizeof q, j.dir, names[i]);
        assert_int_equal(unlink(q), 0);
    }
    tu_write(f[1], b[2], len[2]);
    rc = tally_verify(j.dir, NULL, &vr);
    if (rc != TALLY_EINTEGRITY)
        fail_msg("segment 3 named as file 2: verify gave %s", tally_strerror(rc));
    assert_string_equal(vr.segment, j.file[3]);
    assert_int_equal(vr.offset, 0);
    assert_non_null(strstr(vr.message, "file name"));
    memset(&rec, 0, sizeof rec);
    assert_int_equal(tally_open(&t, j.dir, &o, &rec), TALLY_EINTEGRITY);
    assert_non_null(strstr(rec.message, j.file[3]));
    for (int i = 0; i < 3; i++)
        free(b[i]);
    free(m);
    jr_free(&j);
}

/* The writer keeps a file it is writing ending in reserved zero bytes
 * (§4), also when a record runs past the space reserved at its creation,
 * and cuts it to its last frame at close. */
static void writer_keeps_a_reserved_tail(void **state)
{
    (void)state;
    jr j;
    memset(&j, 0, sizeof j);
    tu_key(j.key, 62);
    j.dir = tu_mkdtemp("reserve");
    tally_options o = tu_opts(j.key);
    o.segment_size = 4096;
    assert_int_equal(tally_init(j.dir, &o), 0);
    o.sync = TALLY_SYNC_ALWAYS;
    assert_int_equal(tally_open(&j.t, j.dir, &o, NULL), 0);
    size_t big = 200u << 10; /* past segment_size + 64 KiB */
    uint8_t *payload = malloc(big);
    assert_non_null(payload);
    uint32_t x = 2463534242u; /* incompressible (xorshift) */
    for (size_t i = 0; i < big; i++) {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        payload[i] = (uint8_t)x;
    }
    tally_record_in r = { .type = 1, .payload = payload, .payload_len = big };
    uint64_t seq = 0;
    assert_int_equal(tally_append(j.t, &r, &seq), 0);
    char names[4][32];
    assert_int_equal(tu_list_segs(j.dir, names, 4), 1);
    char p[PATH_MAX];
    tu_path(p, sizeof p, j.dir, names[0]);
    uint64_t frames_end = 160 + 64 + 16 + 16 + big;
    assert_true(tu_file_size(p) > frames_end);
    assert_int_equal(tally_close(j.t), 0);
    assert_int_equal(tu_file_size(p), frames_end);
    free(payload);
    jr_free(&j);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(truncate_every_offset),
        cmocka_unit_test(damage_last_frame),
        cmocka_unit_test(damage_middle_of_last_segment),
        cmocka_unit_test(damage_earlier_segment),
        cmocka_unit_test(zeroed_run_of_synced_frames_refused),
        cmocka_unit_test(zero_hole_in_unsynced_records_cut),
        cmocka_unit_test(torn_frame_in_reserved_tail),
        cmocka_unit_test(merged_file_names),
        cmocka_unit_test(writer_keeps_a_reserved_tail),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
