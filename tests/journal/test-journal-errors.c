/*
 * test-journal-errors.c — the error paths of the journal API on real files:
 * wrong key (TALLY_EKEY, exit 5) before any record is touched, a second
 * writer (-EBUSY), a handle poisoned by an injected write or fsync failure
 * (every later call TALLY_EPOISONED; a reopen recovers and loses nothing
 * synced), a directory without a journal, init over a journal, a segment of
 * another journal copied in, bad options, key files.
 */
#include "testutil.h"
#include "tally-internal.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char *make_journal(const char *tag, const uint8_t *key, const char *name, int nrec)
{
    char *dir = tu_mkdtemp(tag);
    tally_options o = tu_opts(key);
    o.name = name;
    assert_int_equal(tally_init(dir, &o), 0);
    tally *t = NULL;
    assert_int_equal(tally_open(&t, dir, &o, NULL), 0);
    char buf[64];
    for (int i = 1; i <= nrec; i++) {
        snprintf(buf, sizeof buf, "%s record %d", tag, i);
        tu_append_text(t, 1, NULL, buf);
    }
    assert_int_equal(tally_close(t), 0);
    return dir;
}

static void wrong_key(void **state)
{
    (void)state;
    uint8_t key[TALLY_KEY_BYTES], other[TALLY_KEY_BYTES];
    tu_key(key, 70);
    tu_key(other, 71);
    char *dir = make_journal("wrongkey", key, NULL, 3);
    tu_snap *before = tu_snap_take(dir);

    tally_options o = tu_opts(other);
    tally *t = (tally *)(uintptr_t)0x1;
    assert_int_equal(tally_open(&t, dir, &o, NULL), TALLY_EKEY);
    assert_ptr_equal(t, (tally *)(uintptr_t)0x1); /* ret_* untouched */
    assert_int_equal(tally_exit_code(TALLY_EKEY), 5);

    tally_verify_report vr;
    assert_int_equal(tally_verify(dir, other, &vr), TALLY_EKEY);
    tally_iter *it = NULL;
    int rc = tally_iter_open(&it, dir, other, 1, 0);
    if (rc == 0) {
        tally_record r;
        rc = tally_iter_next(it, &r);
        tally_iter_free(it);
    }
    assert_int_equal(rc, TALLY_EKEY);

    /* nothing was touched: the same files, byte for byte */
    tu_snap *after = tu_snap_take(dir);
    assert_int_equal(after->n, before->n);
    for (int i = 0; i < before->n; i++) {
        int found = 0;
        for (int k = 0; k < after->n; k++)
            if (!strcmp(before->name[i], after->name[k])) {
                found = 1;
                assert_int_equal(before->len[i], after->len[k]);
                assert_memory_equal(before->data[i], after->data[k], before->len[i]);
            }
        assert_true(found);
    }
    tu_snap_free(before);
    tu_snap_free(after);

    /* the right key still works */
    assert_int_equal(tally_verify(dir, key, &vr), 0);
    assert_int_equal(vr.records, 3);
    tu_rmrf(dir);
    free(dir);
}

static void exit_codes(void **state)
{
    (void)state;
    assert_int_equal(tally_exit_code(0), 0);
    assert_int_equal(tally_exit_code(TALLY_EINTEGRITY), 3);
    assert_int_equal(tally_exit_code(TALLY_ETORN), 3);
    assert_int_equal(tally_exit_code(TALLY_EKEY), 5);
    assert_int_equal(tally_exit_code(TALLY_EROLLBACK), 4);
    assert_int_equal(tally_exit_code(TALLY_EFORK), 4);
    assert_int_equal(tally_exit_code(TALLY_ESTALE), 4);
    assert_int_equal(tally_exit_code(TALLY_EDELETED), 4);
    assert_int_equal(tally_exit_code(-EIO), 1);
    assert_int_equal(tally_exit_code(-EBUSY), 1);
    assert_int_equal(tally_exit_code(TALLY_EPOISONED), 1);
    const int codes[] = { TALLY_EINTEGRITY, TALLY_EKEY, TALLY_EROLLBACK, TALLY_EFORK,
                          TALLY_ESTALE, TALLY_EDELETED, TALLY_EPOISONED, TALLY_ETOOBIG,
                          TALLY_EFORMAT, TALLY_ECIPHER, TALLY_ENOJOURNAL, TALLY_EEXIST,
                          TALLY_ETORN, TALLY_EPRUNED, -EIO, -EBUSY, -ENOENT };
    for (size_t i = 0; i < sizeof codes / sizeof codes[0]; i++) {
        const char *s = tally_strerror(codes[i]);
        assert_non_null(s);
        assert_true(strlen(s) > 3);
        for (size_t k = 0; k < i; k++)
            assert_string_not_equal(s, tally_strerror(codes[k]));
    }
}

static void second_writer(void **state)
{
    (void)state;
    uint8_t key[TALLY_KEY_BYTES];
    tu_key(key, 72);
    char *dir = make_journal("busy", key, NULL, 1);
    tally_options o = tu_opts(key);
    tally *a = NULL, *b = NULL;
    assert_int_equal(tally_open(&a, dir, &o, NULL), 0);
    assert_int_equal(tally_open(&b, dir, &o, NULL), -EBUSY);
    assert_null(b);
    /* the first writer is unharmed, readers take no lock */
    assert_int_equal(tu_append_text(a, 1, NULL, "still writing"), 2);
    assert_int_equal(tu_count_records(dir, key), 2);
    tally_verify_report vr;
    assert_int_equal(tally_verify(dir, NULL, &vr), 0);
    assert_int_equal(tally_close(a), 0);
    assert_int_equal(tally_open(&b, dir, &o, NULL), 0);
    assert_int_equal(tally_close(b), 0);
    tu_rmrf(dir);
    free(dir);
}

/* Injects a failure of `op` into the n-th call after now, then checks the
 * poison and the recovery. */
static void poison(int op, tally_sync_policy pol)
{
    uint8_t key[TALLY_KEY_BYTES];
    tu_key(key, 73);
    char *dir = make_journal("poison", key, NULL, 0);
    tally_options o = tu_opts(key);
    o.sync = pol;
    tally *t = NULL;
    assert_int_equal(tally_open(&t, dir, &o, NULL), 0);
    for (int i = 1; i <= 3; i++)
        tu_append_text(t, 1, NULL, "synced before the failure");
    assert_int_equal(tally_sync(t, 0), 0);

    tally_debug_fail(t, op, 0, -EIO);
    tally_record_in r = { .type = 1, .payload = "fails", .payload_len = 5 };
    uint64_t seq = 999;
    int rc = tally_append(t, &r, &seq);
    if (pol == TALLY_SYNC_NONE) {
        /* buffered: the failure shows at the sync */
        if (rc == 0)
            rc = tally_sync(t, 0);
    }
    assert_int_equal(rc, -EIO);
    if (pol != TALLY_SYNC_NONE)
        assert_int_equal(seq, 999);

    /* every later call fails */
    assert_int_equal(tally_append(t, &r, &seq), TALLY_EPOISONED);
    assert_int_equal(tally_append_batch(t, &r, 1, &seq), TALLY_EPOISONED);
    assert_int_equal(tally_sync(t, 0), TALLY_EPOISONED);
    assert_int_equal(tally_append(t, &r, &seq), TALLY_EPOISONED);
    assert_true(tally_close(t) < 0);

    /* reopen recovers; the three synced records are there */
    tally_recovery rec;
    assert_int_equal(tally_open(&t, dir, &o, &rec), 0);
    tally_head_info h;
    assert_int_equal(tally_head(t, &h), 0);
    assert_true(h.seq >= 3 && h.seq <= 4);
    uint64_t next = tu_append_text(t, 2, NULL, "after reopen");
    assert_int_equal(next, h.seq + 1);
    assert_int_equal(tally_close(t), 0);

    tally_iter *it = NULL;
    tally_record rd;
    assert_int_equal(tally_iter_open(&it, dir, key, 1, 0), 0);
    for (int i = 1; i <= 3; i++) {
        assert_int_equal(tally_iter_next(it, &rd), 1);
        assert_int_equal(rd.seq, (uint64_t)i);
        assert_memory_equal(rd.payload, "synced before the failure", 25);
    }
    tally_iter_free(it);
    assert_int_equal(tu_count_records(dir, key), (int64_t)next);
    tally_verify_report vr;
    rc = tally_verify(dir, key, &vr);
    if (rc)
        fail_msg("verify after poison: %s: %s", tally_strerror(rc), vr.message);
    tu_rmrf(dir);
    free(dir);
}

static void poison_write_always(void **s) { (void)s; poison(TALLY_DEBUG_WRITE, TALLY_SYNC_ALWAYS); }
static void poison_fsync_always(void **s) { (void)s; poison(TALLY_DEBUG_FSYNC, TALLY_SYNC_ALWAYS); }
static void poison_write_batch(void **s) { (void)s; poison(TALLY_DEBUG_WRITE, TALLY_SYNC_BATCH); }
static void poison_fsync_batch(void **s) { (void)s; poison(TALLY_DEBUG_FSYNC, TALLY_SYNC_BATCH); }
static void poison_write_none(void **s) { (void)s; poison(TALLY_DEBUG_WRITE, TALLY_SYNC_NONE); }
static void poison_fsync_none(void **s) { (void)s; poison(TALLY_DEBUG_FSYNC, TALLY_SYNC_NONE); }

static void no_journal(void **state)
{
    (void)state;
    uint8_t key[TALLY_KEY_BYTES];
    tu_key(key, 74);
    char *dir = tu_mkdtemp("nojournal");
    tally_options o = tu_opts(key);
    tally *t = NULL;
    tally_iter *it = NULL;
    tally_verify_report vr;
    tally_head_info h;
    for (int pass = 0; pass < 2; pass++) {
        if (pass == 1) { /* some unrelated files */
            char p[PATH_MAX];
            tu_path(p, sizeof p, dir, "notes.txt");
            tu_write(p, "hello", 5);
            tu_path(p, sizeof p, dir, "0000000000000001.seg.bak");
            tu_write(p, "TALLYSEG", 8);
        }
        assert_int_equal(tally_open(&t, dir, &o, NULL), TALLY_ENOJOURNAL);
        assert_int_equal(tally_iter_open(&it, dir, key, 1, 0), TALLY_ENOJOURNAL);
        assert_int_equal(tally_verify(dir, NULL, &vr), TALLY_ENOJOURNAL);
        assert_int_equal(tally_read_head(dir, &h), TALLY_ENOJOURNAL);
    }
    char missing[PATH_MAX];
    tu_path(missing, sizeof missing, dir, "does-not-exist");
    assert_true(tally_open(&t, missing, &o, NULL) < 0);
    assert_true(tally_verify(missing, NULL, &vr) < 0);
    tu_rmrf(dir);
    free(dir);
}

static void init_twice(void **state)
{
    (void)state;
    uint8_t key[TALLY_KEY_BYTES];
    tu_key(key, 75);
    char *dir = make_journal("exist", key, NULL, 2);
    tu_snap *before = tu_snap_take(dir);
    tally_options o = tu_opts(key);
    assert_int_equal(tally_init(dir, &o), TALLY_EEXIST);
    o.name = "other";
    assert_int_equal(tally_init(dir, &o), TALLY_EEXIST);
    tu_snap *after = tu_snap_take(dir);
    assert_int_equal(before->n, after->n);
    char p[PATH_MAX];
    tu_path(p, sizeof p, dir, "tally.meta");
    size_t len;
    uint8_t *meta = tu_read(p, &len);
    for (int i = 0; i < before->n; i++)
        if (!strcmp(before->name[i], "tally.meta")) {
            assert_int_equal(before->len[i], len);
            assert_memory_equal(before->data[i], meta, len);
        }
    free(meta);
    tu_snap_free(before);
    tu_snap_free(after);
    assert_int_equal(tu_count_records(dir, key), 2);
    tu_rmrf(dir);
    free(dir);
}

/* A segment file of another journal (same key, another name) copied in. */
static void foreign_segment(void **state)
{
    (void)state;
    uint8_t key[TALLY_KEY_BYTES];
    tu_key(key, 76);
    char *a = make_journal("segA", key, "alpha", 2);
    char *b = make_journal("segB", key, "beta", 2);
    char names[8][32];
    assert_int_equal(tu_list_segs(b, names, 8), 1);
    char pb[PATH_MAX], pa[PATH_MAX];
    tu_path(pb, sizeof pb, b, names[0]);
    size_t len;
    uint8_t *seg = tu_read(pb, &len);
    assert_non_null(seg);
    tu_snap *snap = tu_snap_take(a);
    tally_options o = tu_opts(key);
    tally *t = NULL;
    tally_verify_report vr;

    /* as A's next segment */
    tu_path(pa, sizeof pa, a, "0000000000000002.seg");
    tu_write(pa, seg, len);
    assert_int_equal(tally_verify(a, NULL, &vr), TALLY_EINTEGRITY);
    assert_string_equal(vr.segment, "0000000000000002.seg");
    assert_int_equal(tally_verify(a, key, &vr), TALLY_EINTEGRITY);
    assert_string_equal(vr.segment, "0000000000000002.seg");
    assert_int_equal(tally_open(&t, a, &o, NULL), TALLY_EINTEGRITY);
    assert_int_equal(tu_file_size(pa), len); /* not cut, not removed */

    /* in place of A's own segment 1 */
    tu_snap_restore(snap, a);
    tu_path(pa, sizeof pa, a, names[0]);
    tu_write(pa, seg, len);
    assert_int_equal(tally_verify(a, NULL, &vr), TALLY_EINTEGRITY);
    assert_string_equal(vr.segment, names[0]);
    assert_int_equal(tally_open(&t, a, &o, NULL), TALLY_EINTEGRITY);
    tally_iter *it = NULL;
    int rc = tally_iter_open(&it, a, key, 1, 0);
    if (rc == 0) {
        tally_record r;
        rc = tally_iter_next(it, &r);
        if (rc == TALLY_EINTEGRITY)
            assert_non_null(strstr(tally_iter_errmsg(it), names[0]));
        tally_iter_free(it);
    }
    assert_int_equal(rc, TALLY_EINTEGRITY);

    free(seg);
    tu_snap_free(snap);
    tu_rmrf(a);
    tu_rmrf(b);
    free(a);
    free(b);
}

static void bad_options(void **state)
{
    (void)state;
    uint8_t key[TALLY_KEY_BYTES];
    tu_key(key, 77);
    char *dir = tu_mkdtemp("opts");
    char sub[PATH_MAX];
    tally_options o = tu_opts(NULL);
    tu_path(sub, sizeof sub, dir, "a");
    assert_true(tally_init(sub, &o) < 0); /* init needs the key */
    o = tu_opts(key);
    o.segment_size = 4095;
    assert_true(tally_init(sub, &o) < 0);
    o = tu_opts(key);
    char longname[TALLY_MAX_NAME + 2];
    memset(longname, 'n', sizeof longname - 1);
    longname[sizeof longname - 1] = 0;
    o.name = longname;
    assert_true(tally_init(sub, &o) < 0);
    o.name = "";
    assert_true(tally_init(sub, &o) < 0);
    o = tu_opts(key);
    o.cipher = (tally_cipher)3;
    assert_true(tally_init(sub, &o) < 0);
    /* a failed init leaves no journal behind */
    tally *t = NULL;
    o = tu_opts(key);
    assert_true(tally_open(&t, sub, &o, NULL) < 0);
    longname[TALLY_MAX_NAME] = 0; /* exactly 255 bytes is fine */
    o.name = longname;
    assert_int_equal(tally_init(sub, &o), 0);
    o = tu_opts(NULL);
    assert_true(tally_open(&t, sub, &o, NULL) < 0); /* writing needs the key */
    tu_rmrf(dir);
    free(dir);
}

static void key_files(void **state)
{
    (void)state;
    char *dir = tu_mkdtemp("keys");
    char p[PATH_MAX];
    uint8_t k1[TALLY_KEY_BYTES], k2[TALLY_KEY_BYTES];
    tu_path(p, sizeof p, dir, "k");
    assert_int_equal(tally_keygen(p), 0);
    struct stat st;
    assert_int_equal(stat(p, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    assert_int_equal(st.st_size, 32);
    assert_int_equal(tally_keygen(p), -EEXIST); /* O_EXCL */
    assert_int_equal(tally_key_load(p, k1), 0);
    size_t len;
    uint8_t *raw = tu_read(p, &len);
    assert_memory_equal(raw, k1, 32);
    free(raw);

    /* hex with a newline */
    char hex[66];
    tu_hex(hex, k1, 32);
    hex[64] = '\n';
    tu_path(p, sizeof p, dir, "khex");
    tu_write(p, hex, 65);
    assert_int_equal(tally_key_load(p, k2), 0);
    assert_memory_equal(k1, k2, 32);
    /* readable by others: refused */
    assert_int_equal(chmod(p, 0644), 0);
    assert_true(tally_key_load(p, k2) < 0);
    /* wrong length */
    tu_path(p, sizeof p, dir, "kshort");
    tu_write(p, "abc", 3);
    assert_true(tally_key_load(p, k2) < 0);
    tu_rmrf(dir);
    free(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(wrong_key),
        cmocka_unit_test(exit_codes),
        cmocka_unit_test(second_writer),
        cmocka_unit_test(poison_write_always),
        cmocka_unit_test(poison_fsync_always),
        cmocka_unit_test(poison_write_batch),
        cmocka_unit_test(poison_fsync_batch),
        cmocka_unit_test(poison_write_none),
        cmocka_unit_test(poison_fsync_none),
        cmocka_unit_test(no_journal),
        cmocka_unit_test(init_twice),
        cmocka_unit_test(foreign_segment),
        cmocka_unit_test(bad_options),
        cmocka_unit_test(key_files),
    };
    return cmocka_run_group_tests(tests, NULL, tu_cleanup);
}
