/*
 * test-compact-threads.c — compaction next to readers and appenders:
 *   - a reader stopped in the middle of a file while that file and the
 *     following ones are merged carries on in the merged file and sees
 *     every record once (the reader re-lists when a listed file vanished);
 *   - readers replaying in a loop while an appender thread writes through
 *     the same handle and compactions run over and over (the fault hook
 *     pauses at renames and removals to widen the windows) see dense seqs,
 *     every record intact, every record that is never pruned decrypted.
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "ctu.h"

static uint8_t key[TALLY_KEY_BYTES];

static void check_rec(const ctu_work *w, const ctu_expect *ex,
                      const tally_record *r)
{
    const ctu_rec *g = &w->r[r->seq - 1];
    if (r->kind == 3) {
        if (!ex->pruned[r->seq])
            fail_msg("seq %llu pruned, expected kept",
                     (unsigned long long)r->seq);
        return;
    }
    assert_int_equal(r->decrypted, 1);
    assert_int_equal(r->type, g->type);
    assert_int_equal(r->key_len, strlen(g->key));
    assert_memory_equal(r->key, g->key, r->key_len);
    assert_int_equal(r->payload_len, g->payload_len);
    assert_memory_equal(r->payload, g->payload, g->payload_len);
}

/* The reader is inside file number `at` (1-based in the listing) when the
 * files are merged. */
static void reader_across_merge(int at)
{
    ctu_work w;
    ctu_generate(&w, 300, 100, 31 + (uint32_t)at, NULL);
    ctu_expect ex;
    ctu_model(&w, w.n, 0, 0, &ex);
    char *dir = ctu_init("cvanish", key, 4096);
    tally *t = ctu_open(dir, key);
    ctu_append(t, &w, 1, w.n);
    assert_int_equal(tally_close(t), 0);
    char names[TU_MAX_FILES][32];
    int n = tu_list_segs(dir, names, TU_MAX_FILES);
    assert_true(n > at + 3);

    tally_iter *it;
    tally_record r;
    assert_int_equal(tally_iter_open(&it, dir, key, 0, 0), 0);
    uint64_t seq = 0;
    for (;;) {
        assert_int_equal(tally_iter_next(it, &r), 1);
        assert_int_equal(r.seq, ++seq);
        check_rec(&w, &ex, &r);
        if (strcmp(r.segment, names[at - 1]) == 0)
            break;
    }
    t = ctu_open(dir, key);
    tally_compact_options o;
    memset(&o, 0, sizeof o);
    o.target_size = 24 * 1024;
    tally_compact_report rep;
    assert_int_equal(tally_compact(t, &o, &rep), 0);
    assert_true(rep.segments_merged > 2);
    assert_true(ctu_count_files(dir) < n);
    assert_int_equal(tally_close(t), 0);

    int rc;
    bool via_merged = false;
    char prev_name[32];
    snprintf(prev_name, sizeof prev_name, "%s", r.segment);
    uint64_t prev_off = r.offset;
    while ((rc = tally_iter_next(it, &r)) == 1) {
        /* Back to an earlier file name, or the same name from a smaller
         * offset: the reader's next file had vanished and it found the
         * segment in the merged file. */
        int c = strcmp(r.segment, prev_name);
        if (c < 0 || (c == 0 && r.offset < prev_off))
            via_merged = true;
        snprintf(prev_name, sizeof prev_name, "%s", r.segment);
        prev_off = r.offset;
        if (r.seq != seq + 1)
            fail_msg("after seq %llu came %llu", (unsigned long long)seq,
                     (unsigned long long)r.seq);
        seq = r.seq;
        if (seq <= w.n)
            check_rec(&w, &ex, &r);
        else
            assert_int_equal(r.type, TALLY_TYPE_COMPACTION);
    }
    if (rc < 0)
        fail_msg("reader: %s", tally_iter_errmsg(it));
    assert_int_equal(seq, w.n + 1);
    assert_true(via_merged);
    tally_iter_free(it);
    ctu_verify_both(dir, key);
    ctu_expect_free(&ex);
    ctu_work_free(&w);
    tu_rmrf(dir);
    free(dir);
}

static void reader_in_first_file(void **state)
{
    (void)state;
    reader_across_merge(1);
}

static void reader_in_second_file(void **state)
{
    (void)state;
    reader_across_merge(2);
}

static void reader_in_fifth_file(void **state)
{
    (void)state;
    reader_across_merge(5);
}

/* ---- concurrent ----------------------------------------------------------- */

typedef struct shared {
    const char *dir;
    tally *t;
    atomic_int stop;
    atomic_ullong passes, records_seen;
    atomic_ullong appended;
    char failure[256];
    pthread_mutex_t mu;
} shared;

static void set_failure(shared *s, const char *fmt, unsigned long long a,
                        unsigned long long b)
    __attribute__((format(printf, 2, 0)));
static void set_failure(shared *s, const char *fmt, unsigned long long a,
                        unsigned long long b)
{
    pthread_mutex_lock(&s->mu);
    if (!s->failure[0])
        snprintf(s->failure, sizeof s->failure, fmt, a, b);
    pthread_mutex_unlock(&s->mu);
}

/* Record n of the appender: keyed ("k<n % 25>") unless n % 4 == 0
 * (keyless, never pruned: no snapshot in this test). */
static size_t payload_of(uint64_t n, char *buf, size_t cap)
{
    int len = snprintf(buf, cap, "n=%llu;", (unsigned long long)n);
    size_t pad = 40 + n % 200;
    for (size_t j = 0; j < pad && (size_t)len + j < cap; j++)
        buf[len + (int)j] = (char)('a' + (n + j) % 26);
    return (size_t)len + pad;
}

static void *appender(void *arg)
{
    shared *s = arg;
    uint64_t n = 0;
    while (!atomic_load(&s->stop)) {
        n++;
        char buf[320], k[16];
        tally_record_in in;
        memset(&in, 0, sizeof in);
        in.payload_len = payload_of(n, buf, sizeof buf);
        in.payload = buf;
        in.type = n % 4 == 0 ? 5 : 1;
        if (n % 4) {
            snprintf(k, sizeof k, "k%llu", (unsigned long long)(n % 25));
            in.key = k;
            in.key_len = strlen(k);
        }
        int rc = tally_append(s->t, &in, NULL);
        if (rc != 0) {
            set_failure(s, "append %llu: %lld", n, (unsigned long long)rc);
            break;
        }
        atomic_store(&s->appended, n);
        if (n % 64 == 0)
            usleep(500);
    }
    return NULL;
}

static void *reader(void *arg)
{
    shared *s = arg;
    while (!atomic_load(&s->stop)) {
        tally_iter *it;
        int rc = tally_iter_open(&it, s->dir, key, 0,
                                 TALLY_ITER_TOLERATE_TAIL);
        if (rc < 0) {
            set_failure(s, "iter_open: %llu %llu", (unsigned long long)-rc, 0);
            return NULL;
        }
        tally_record r;
        uint64_t seq = 0;
        while ((rc = tally_iter_next(it, &r)) == 1) {
            if (r.seq != seq + 1) {
                set_failure(s, "after seq %llu came %llu", seq, r.seq);
                break;
            }
            seq = r.seq;
            if (r.kind == 3) {
                continue; /* a keyed record superseded by a later one */
            }
            if (!r.decrypted) {
                set_failure(s, "seq %llu not decrypted %llu", seq, 0);
                break;
            }
            if (r.type == TALLY_TYPE_COMPACTION)
                continue;
            unsigned long long n;
            char buf[320];
            if (r.payload_len < 3 ||
                sscanf((const char *)r.payload, "n=%llu;", &n) != 1 ||
                payload_of(n, buf, sizeof buf) != r.payload_len ||
                memcmp(buf, r.payload, r.payload_len) != 0 ||
                r.type != (n % 4 == 0 ? 5 : 1) ||
                (r.key_len == 0) != (n % 4 == 0)) {
                set_failure(s, "seq %llu: record %llu not intact", seq, n);
                break;
            }
        }
        if (rc < 0) {
            char m[200];
            snprintf(m, sizeof m, "reader at seq %%llu: error %%llu: %s",
                     tally_iter_errmsg(it));
            set_failure(s, m, seq, (unsigned long long)-rc);
        }
        tally_iter_free(it);
        atomic_fetch_add(&s->passes, 1);
        atomic_fetch_add(&s->records_seen, seq);
        if (s->failure[0])
            return NULL;
    }
    return NULL;
}

static int pause_hook(void *ctx, tally_compact_step st, const char *file)
{
    (void)ctx;
    (void)file;
    if (st == TALLY_COMPACT_RENAME || st == TALLY_COMPACT_UNLINK)
        usleep(3000);
    return 0;
}

static void readers_and_appends_during_compaction(void **state)
{
    (void)state;
    shared s;
    memset(&s, 0, sizeof s);
    pthread_mutex_init(&s.mu, NULL);
    char *dir = ctu_init("cconc", key, 8192);
    s.dir = dir;
    s.t = ctu_open(dir, key);
    pthread_t ta, tr[2];
    assert_int_equal(pthread_create(&ta, NULL, appender, &s), 0);
    for (int i = 0; i < 2; i++)
        assert_int_equal(pthread_create(&tr[i], NULL, reader, &s), 0);
    uint64_t pruned = 0, merged = 0, runs = 0;
    for (int round = 0; round < 8 && !s.failure[0]; round++) {
        usleep(150 * 1000);
        tally_compact_options o;
        memset(&o, 0, sizeof o);
        o.target_size = 32 * 1024;
        o.fault = pause_hook;
        tally_compact_report rep;
        int rc = tally_compact(s.t, &o, &rep);
        if (rc != 0)
            fail_msg("compaction %d: %s", round, rep.message);
        pruned += rep.records_pruned;
        merged += rep.segments_merged;
        runs += rep.files_rewritten > 0;
    }
    atomic_store(&s.stop, 1);
    pthread_join(ta, NULL);
    for (int i = 0; i < 2; i++)
        pthread_join(tr[i], NULL);
    if (s.failure[0])
        fail_msg("%s", s.failure);
    print_message("appended %llu, %llu reader passes over %llu records, "
                  "%llu pruned, %llu segments merged in %llu runs\n",
                  (unsigned long long)atomic_load(&s.appended),
                  (unsigned long long)atomic_load(&s.passes),
                  (unsigned long long)atomic_load(&s.records_seen),
                  (unsigned long long)pruned, (unsigned long long)merged,
                  (unsigned long long)runs);
    assert_true(atomic_load(&s.passes) >= 4);
    assert_true(pruned > 0 && merged > 0);
    assert_int_equal(tally_close(s.t), 0);
    ctu_verify_both(dir, key);
    pthread_mutex_destroy(&s.mu);
    tu_rmrf(dir);
    free(dir);
}

int main(void)
{
    tu_key(key, 99);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(reader_in_first_file),
        cmocka_unit_test(reader_in_second_file),
        cmocka_unit_test(reader_in_fifth_file),
        cmocka_unit_test(readers_and_appends_during_compaction),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
