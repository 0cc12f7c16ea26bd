/*
 * test-keys-epochs.c — key epochs on real journals (FORMAT.md §3.2, §3.4):
 * rekey then replay across epochs (each segment header names its epoch,
 * every record decrypts); master-key rotation (every epoch re-wrapped, the
 * new key opens, the old key gets TALLY_EKEY, the id, the segment files
 * and the head unchanged); forget (the chosen epochs' entries flagged and
 * zeroed, verify with and without the key passes, the iterator returns
 * those records undecrypted and the rest decrypted, the writer continues,
 * the current epoch and an epoch with a later record are kept); and the
 * lock: none of them runs beside a writer.
 */
#include "testutil.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "format.h"

/* Opens dir, appends texts "r<seq>" until the head is `to`, closes. */
static void append_to(const char *dir, const uint8_t *key, uint64_t to)
{
    tally_options o = tu_opts(key);
    tally *t = NULL;
    int rc = tally_open(&t, dir, &o, NULL);
    if (rc != 0)
        fail_msg("open: %s", tally_strerror(rc));
    tally_head_info h;
    assert_int_equal(tally_head(t, &h), 0);
    for (uint64_t s = h.seq + 1; s <= to; s++) {
        char text[32];
        snprintf(text, sizeof text, "r%llu", (unsigned long long)s);
        assert_int_equal(tu_append_text(t, 1, NULL, text), s);
    }
    assert_int_equal(tally_close(t), 0);
}

static char *new_journal(const uint8_t *key)
{
    char *dir = tu_mkdtemp("epochs");
    tally_options o = tu_opts(key);
    assert_int_equal(tally_init(dir, &o), 0);
    return dir;
}

/* Every record of dir with key: 1..n in order; those of seq <= forgotten
 * sealed and undecrypted, the others decrypted with text "r<seq>". */
static void check_records(const char *dir, const uint8_t *key, uint64_t n,
                          uint64_t forgotten)
{
    tally_iter *it = NULL;
    int rc = tally_iter_open(&it, dir, key, 0, 0);
    if (rc != 0)
        fail_msg("iter_open: %s", tally_strerror(rc));
    tally_record r;
    uint64_t seq = 0;
    while ((rc = tally_iter_next(it, &r)) == 1) {
        seq++;
        assert_int_equal(r.seq, seq);
        assert_int_equal(r.kind, 1);
        if (seq <= forgotten) {
            assert_int_equal(r.decrypted, 0);
            assert_null(r.payload);
            continue;
        }
        assert_int_equal(r.decrypted, 1);
        char text[32];
        int l = snprintf(text, sizeof text, "r%llu", (unsigned long long)seq);
        assert_int_equal(r.payload_len, (size_t)l);
        assert_memory_equal(r.payload, text, (size_t)l);
    }
    if (rc != 0)
        fail_msg("iter_next at %llu: %s (%s)", (unsigned long long)seq,
                 tally_strerror(rc), tally_iter_errmsg(it));
    assert_int_equal(seq, n);
    tally_iter_free(it);
}

/* The epoch each segment file's (first) header names, in file order. */
static int seg_epochs(const char *dir, uint32_t *out, int max)
{
    char names[64][32];
    int n = tu_list_segs(dir, names, 64);
    assert_true(n <= max);
    for (int i = 0; i < n; i++) {
        char p[PATH_MAX];
        tu_path(p, sizeof p, dir, names[i]);
        size_t len;
        uint8_t *b = tu_read(p, &len);
        assert_true(len >= TF_SEG_HEADER_BYTES);
        out[i] = le32_get(b + 16);
        free(b);
    }
    return n;
}

static void verify_ok(const char *dir, const uint8_t *key, uint64_t n)
{
    tally_verify_report rep;
    int rc = tally_verify(dir, key, &rep);
    if (rc != 0)
        fail_msg("verify (%s key): %s: %s", key ? "with" : "without",
                 tally_strerror(rc), rep.message);
    assert_int_equal(rep.records, n);
}

/* The metadata file's epoch entries, parsed from the bytes. */
typedef struct raw_epoch {
    uint32_t epoch, flags;
    uint8_t nonce[24], wrapped[48];
} raw_epoch;

static int raw_epochs(const char *dir, raw_epoch *out, int max,
                      uint32_t *ret_current)
{
    char p[PATH_MAX];
    tu_path(p, sizeof p, dir, "tally.meta");
    size_t len;
    uint8_t *b = tu_read(p, &len);
    assert_non_null(b);
    uint16_t name_len = le16_get(b + 104), n = le16_get(b + 106);
    assert_true(n <= max);
    *ret_current = le32_get(b + 20);
    const uint8_t *e = b + 112 + name_len;
    for (int i = 0; i < n; i++, e += 96) {
        out[i].epoch = le32_get(e);
        out[i].flags = le32_get(e + 4);
        memcpy(out[i].nonce, e + 16, 24);
        memcpy(out[i].wrapped, e + 40, 48);
    }
    free(b);
    return n;
}

static bool all_zero(const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i])
            return false;
    return true;
}

static void test_rekey_replay(void **state)
{
    (void)state;
    uint8_t key[32];
    tu_key(key, 1);
    char *dir = new_journal(key);
    tally_epoch_report rep;
    append_to(dir, key, 4);
    assert_int_equal(tally_rekey(dir, key, &rep), 0);
    assert_int_equal(rep.epoch, 2);
    append_to(dir, key, 9);
    assert_int_equal(tally_rekey(dir, key, &rep), 0);
    assert_int_equal(tally_rekey(dir, key, &rep), 0); /* an empty epoch */
    assert_int_equal(rep.epoch, 4);
    append_to(dir, key, 12);
    append_to(dir, key, 15); /* another segment of epoch 4 */

    uint32_t ep[64];
    int n = seg_epochs(dir, ep, 64);
    assert_int_equal(n, 4);
    assert_int_equal(ep[0], 1);
    assert_int_equal(ep[1], 2);
    assert_int_equal(ep[2], 4);
    assert_int_equal(ep[3], 4);
    raw_epoch re[8];
    uint32_t cur;
    assert_int_equal(raw_epochs(dir, re, 8, &cur), 4);
    assert_int_equal(cur, 4);
    for (int i = 0; i < 4; i++) {
        assert_int_equal(re[i].epoch, (uint32_t)i + 1);
        assert_int_equal(re[i].flags, 0);
    }
    check_records(dir, key, 15, 0);
    verify_ok(dir, key, 15);
    verify_ok(dir, NULL, 15);
    /* A wrong key is refused before anything is touched. */
    uint8_t other[32];
    tu_key(other, 2);
    assert_int_equal(tally_rekey(dir, other, &rep), TALLY_EKEY);
    assert_int_equal(raw_epochs(dir, re, 8, &cur), 4);
    tu_rmrf(dir);
    free(dir);
}

static void test_locked(void **state)
{
    (void)state;
    uint8_t key[32], k2[32];
    tu_key(key, 1);
    tu_key(k2, 2);
    char *dir = new_journal(key);
    append_to(dir, key, 3);
    tally_options o = tu_opts(key);
    tally *t = NULL;
    assert_int_equal(tally_open(&t, dir, &o, NULL), 0);
    tally_epoch_report rep;
    assert_int_equal(tally_rekey(dir, key, &rep), -EBUSY);
    assert_non_null(strstr(rep.message, "lock"));
    assert_int_equal(tally_rewrap(dir, key, k2, &rep), -EBUSY);
    assert_int_equal(tally_forget(dir, key, 100, &rep), -EBUSY);
    assert_int_equal(tally_close(t), 0);
    assert_int_equal(tally_rekey(dir, key, &rep), 0);
    char *none = tu_mkdtemp("epochs-none");
    assert_int_equal(tally_rekey(none, key, &rep), TALLY_ENOJOURNAL);
    tu_rmrf(none);
    free(none);
    tu_rmrf(dir);
    free(dir);
}

static void test_rewrap(void **state)
{
    (void)state;
    uint8_t oldk[32], newk[32];
    tu_key(oldk, 10);
    tu_key(newk, 20);
    char *dir = new_journal(oldk);
    tally_epoch_report rep;
    append_to(dir, oldk, 5);
    assert_int_equal(tally_rekey(dir, oldk, &rep), 0);
    append_to(dir, oldk, 8);
    tally_head_info h0, h1;
    assert_int_equal(tally_read_head(dir, &h0), 0);
    tu_snap *before = tu_snap_take(dir);

    /* A wrong old key changes nothing. */
    assert_int_equal(tally_rewrap(dir, newk, oldk, &rep), TALLY_EKEY);
    assert_int_equal(tally_rewrap(dir, oldk, newk, &rep), 0);
    assert_int_equal(rep.epochs, 2);

    tu_snap *after = tu_snap_take(dir);
    assert_int_equal(before->n, after->n);
    for (int i = 0; i < before->n; i++) {
        assert_string_equal(before->name[i], after->name[i]);
        if (strcmp(before->name[i], "tally.meta") == 0) {
            /* Same jid (offset 40), new KCV (offset 72). */
            assert_memory_equal(before->data[i] + 40, after->data[i] + 40, 32);
            assert_memory_not_equal(before->data[i] + 72, after->data[i] + 72,
                                    32);
            continue;
        }
        assert_int_equal(before->len[i], after->len[i]);
        assert_memory_equal(before->data[i], after->data[i], before->len[i]);
    }
    tu_snap_free(before);
    tu_snap_free(after);
    assert_int_equal(tally_read_head(dir, &h1), 0);
    assert_int_equal(h0.seq, h1.seq);
    assert_memory_equal(h0.link, h1.link, 32);

    /* The new key opens and reads every epoch; the old one is refused. */
    check_records(dir, newk, 8, 0);
    verify_ok(dir, newk, 8);
    tally_iter *it = NULL;
    assert_int_equal(tally_iter_open(&it, dir, oldk, 0, 0), TALLY_EKEY);
    tally_options o = tu_opts(oldk);
    tally *t = NULL;
    assert_int_equal(tally_open(&t, dir, &o, NULL), TALLY_EKEY);
    tally_verify_report vr;
    assert_int_equal(tally_verify(dir, oldk, &vr), TALLY_EKEY);
    /* The writer continues under the new key, in the current epoch. */
    append_to(dir, newk, 11);
    check_records(dir, newk, 11, 0);
    uint8_t id[32], derived[32];
    assert_int_equal(tally_iter_open(&it, dir, newk, 0, 0), 0);
    tally_iter_id(it, id);
    tally_iter_free(it);
    assert_int_equal(tally_journal_id(oldk, "default", derived), 0);
    assert_memory_equal(id, derived, 32); /* still the id of the old key */
    tu_rmrf(dir);
    free(dir);
}

static void test_forget(void **state)
{
    (void)state;
    uint8_t key[32];
    tu_key(key, 30);
    char *dir = new_journal(key);
    tally_epoch_report rep;
    append_to(dir, key, 5);                        /* epoch 1: 1..5 */
    assert_int_equal(tally_rekey(dir, key, &rep), 0);
    append_to(dir, key, 10);                       /* epoch 2: 6..10 */
    assert_int_equal(tally_rekey(dir, key, &rep), 0);
    append_to(dir, key, 15);                       /* epoch 3: 11..15 */
    tally_head_info h0, h1;
    assert_int_equal(tally_read_head(dir, &h0), 0);

    /* Epoch 2 holds seq 8..10: only epoch 1 goes. */
    assert_int_equal(tally_forget(dir, key, 8, &rep), 0);
    assert_int_equal(rep.epochs, 1);
    assert_int_equal(rep.forgotten_through, 5);
    assert_int_equal(rep.kept_epoch, 2);
    assert_int_equal(rep.kept_first_seq, 6);
    raw_epoch re[8];
    uint32_t cur;
    assert_int_equal(raw_epochs(dir, re, 8, &cur), 3);
    assert_int_equal(re[0].flags, 1);
    assert_true(all_zero(re[0].nonce, 24) && all_zero(re[0].wrapped, 48));
    assert_int_equal(re[1].flags, 0);
    assert_false(all_zero(re[1].wrapped, 48));

    verify_ok(dir, NULL, 15);
    verify_ok(dir, key, 15);
    check_records(dir, key, 15, 5);
    assert_int_equal(tally_read_head(dir, &h1), 0);
    assert_int_equal(h0.seq, h1.seq);
    assert_memory_equal(h0.link, h1.link, 32);

    /* Again: nothing more before 8. */
    assert_int_equal(tally_forget(dir, key, 8, &rep), 0);
    assert_int_equal(rep.epochs, 0);
    assert_int_equal(rep.forgotten_through, 5);

    /* Before 1000: epoch 2 goes, epoch 3 is current and stays. */
    assert_int_equal(tally_forget(dir, key, 1000, &rep), 0);
    assert_int_equal(rep.epochs, 1);
    assert_int_equal(rep.forgotten_through, 10);
    assert_int_equal(rep.kept_epoch, 3);
    assert_int_equal(rep.epoch, 3);
    check_records(dir, key, 15, 10);

    /* The writer continues; a rotation keeps forgotten epochs forgotten. */
    append_to(dir, key, 18);
    uint8_t k2[32];
    tu_key(k2, 31);
    assert_int_equal(tally_rewrap(dir, key, k2, &rep), 0);
    assert_int_equal(rep.epochs, 1);
    assert_int_equal(raw_epochs(dir, re, 8, &cur), 3);
    assert_int_equal(re[0].flags, 1);
    assert_int_equal(re[1].flags, 1);
    assert_true(all_zero(re[1].wrapped, 48));
    check_records(dir, k2, 18, 10);
    verify_ok(dir, k2, 18);
    verify_ok(dir, NULL, 18);
    tu_rmrf(dir);
    free(dir);
}

/* A crash leaves the last file with a torn frame: forget reads the epochs'
 * records up to the last whole one and leaves the cut to recovery. */
static void test_forget_torn_tail(void **state)
{
    (void)state;
    uint8_t key[32];
    tu_key(key, 40);
    char *dir = new_journal(key);
    tally_epoch_report rep;
    append_to(dir, key, 3);
    assert_int_equal(tally_rekey(dir, key, &rep), 0);
    append_to(dir, key, 6);
    char names[8][32], p[PATH_MAX];
    int n = tu_list_segs(dir, names, 8);
    tu_path(p, sizeof p, dir, names[n - 1]);
    tu_truncate(p, tu_file_size(p) - 10);
    assert_int_equal(tally_forget(dir, key, 4, &rep), 0);
    assert_int_equal(rep.epochs, 1);
    assert_int_equal(rep.forgotten_through, 3);
    assert_int_equal(rep.kept_first_seq, 4);
    /* Damage in an earlier file is not guessed around. */
    char *d2 = new_journal(key);
    append_to(d2, key, 3);
    assert_int_equal(tally_rekey(d2, key, &rep), 0);
    append_to(d2, key, 6);
    n = tu_list_segs(d2, names, 8);
    tu_path(p, sizeof p, d2, names[0]);
    tu_truncate(p, tu_file_size(p) - 10);
    assert_int_equal(tally_forget(d2, key, 4, &rep), TALLY_EINTEGRITY);
    assert_non_null(strstr(rep.message, names[0]));
    uint32_t cur;
    raw_epoch re[4];
    assert_int_equal(raw_epochs(d2, re, 4, &cur), 2);
    assert_int_equal(re[0].flags, 0);
    tu_rmrf(d2);
    free(d2);
    tu_rmrf(dir);
    free(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rekey_replay),
        cmocka_unit_test(test_locked),
        cmocka_unit_test(test_rewrap),
        cmocka_unit_test(test_forget),
        cmocka_unit_test(test_forget_torn_tail),
    };
    return cmocka_run_group_tests(tests, NULL, tu_cleanup);
}
