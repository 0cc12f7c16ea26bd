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

/* One bit flipped in each byte of the last frame: it no longer verifies and
 * nothing follows it, so it is a torn tail: cut. */
static void damage_last_frame(void **state)
{
    fixture *f = *state;
    char p[PATH_MAX], what[96];
    tu_path(p, sizeof p, f->dir, f->seg[1]);
    for (uint64_t pos = f->off[NREC]; pos < f->seg2_size; pos++) {
        tu_snap_restore(f->snap, f->dir);
        tu_flip_bit(p, pos * 8 + pos % 8);
        snprintf(what, sizeof what, "last frame, byte %llu flipped", (unsigned long long)pos);
        recover_expect_cut(f, f->seg2_size - f->off[NREC], what);
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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(truncate_every_offset),
        cmocka_unit_test(damage_last_frame),
        cmocka_unit_test(damage_middle_of_last_segment),
        cmocka_unit_test(damage_earlier_segment),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
