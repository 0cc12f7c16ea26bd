/*
 * test-journal-threads.c — 4 threads x 10,000 appends on one handle (sync
 * NONE and BATCH): seqs are dense 1..40000, every thread's records are all
 * there with the seqs tally_append returned, in each thread's order, and the
 * chain verifies with and without the key. A reader iterates concurrently
 * and must always see a dense, verifying prefix (FORMAT.md §1: readers take
 * no lock).
 */
#include "testutil.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum { NTHREADS = 4, PER_THREAD = 10000, TOTAL = NTHREADS * PER_THREAD };

typedef struct worker {
    tally *t;
    int id;
    int use_batch_api;
    uint64_t *seqs; /* [PER_THREAD] */
    int rc;
} worker;

static void *work(void *arg)
{
    worker *w = arg;
    char buf[64], key[16];
    snprintf(key, sizeof key, "thread-%d", w->id);
    for (int i = 0; i < PER_THREAD;) {
        if (w->use_batch_api && i + 4 <= PER_THREAD) {
            /* a few batches mixed in: consecutive seqs for one call */
            char bufs[4][64];
            tally_record_in recs[4];
            for (int k = 0; k < 4; k++) {
                snprintf(bufs[k], sizeof bufs[k], "%d:%d", w->id, i + k);
                recs[k] = (tally_record_in){ .type = (uint16_t)(100 + w->id), .key = key,
                                             .key_len = strlen(key), .payload = bufs[k],
                                             .payload_len = strlen(bufs[k]) };
            }
            uint64_t first = 0;
            int rc = tally_append_batch(w->t, recs, 4, &first);
            if (rc != 0) {
                w->rc = rc;
                return NULL;
            }
            for (int k = 0; k < 4; k++)
                w->seqs[i + k] = first + (uint64_t)k;
            i += 4;
            continue;
        }
        snprintf(buf, sizeof buf, "%d:%d", w->id, i);
        tally_record_in r = { .type = (uint16_t)(100 + w->id), .key = key,
                              .key_len = strlen(key), .payload = buf,
                              .payload_len = strlen(buf) };
        int rc = tally_append(w->t, &r, &w->seqs[i]);
        if (rc != 0) {
            w->rc = rc;
            return NULL;
        }
        i++;
    }
    return NULL;
}

typedef struct reader {
    const char *dir;
    atomic_int stop;
    int passes;
    uint64_t max_seen;
    int rc;
    char err[256];
} reader;

static void *read_loop(void *arg)
{
    reader *rd = arg;
    do { /* at least one pass, also after the writer closed */
        tally_iter *it = NULL;
        int rc = tally_iter_open(&it, rd->dir, NULL, 1, TALLY_ITER_TOLERATE_TAIL);
        if (rc < 0) {
            rd->rc = rc;
            snprintf(rd->err, sizeof rd->err, "iter_open: %s", tally_strerror(rc));
            return NULL;
        }
        tally_record r;
        uint64_t want = 1;
        while ((rc = tally_iter_next(it, &r)) == 1) {
            if (r.seq != want) {
                rd->rc = -1;
                snprintf(rd->err, sizeof rd->err, "seq %llu where %llu expected",
                         (unsigned long long)r.seq, (unsigned long long)want);
                break;
            }
            want++;
        }
        if (rc < 0) {
            rd->rc = rc;
            snprintf(rd->err, sizeof rd->err, "iter_next: %s: %s", tally_strerror(rc),
                     tally_iter_errmsg(it));
        }
        tally_iter_free(it);
        if (rd->rc)
            return NULL;
        /* a prefix never shrinks */
        if (want - 1 < rd->max_seen) {
            rd->rc = -2;
            snprintf(rd->err, sizeof rd->err, "saw %llu records after %llu",
                     (unsigned long long)(want - 1), (unsigned long long)rd->max_seen);
            return NULL;
        }
        rd->max_seen = want - 1;
        rd->passes++;
    } while (!atomic_load(&rd->stop));
    return NULL;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void run(tally_sync_policy pol, int use_batch_api)
{
    double t0 = now_s();
    uint8_t key[TALLY_KEY_BYTES];
    tu_key(key, 40);
    char *dir = tu_mkdtemp("threads");
    tally_options o = tu_opts(key);
    o.segment_size = 256 * 1024; /* a few rollovers under contention */
    assert_int_equal(tally_init(dir, &o), 0);
    o.sync = pol;
    tally *t = NULL;
    assert_int_equal(tally_open(&t, dir, &o, NULL), 0);

    worker w[NTHREADS];
    pthread_t th[NTHREADS], rth;
    reader rd;
    memset(&rd, 0, sizeof rd);
    rd.dir = dir;
    assert_int_equal(pthread_create(&rth, NULL, read_loop, &rd), 0);
    for (int i = 0; i < NTHREADS; i++) {
        w[i] = (worker){ .t = t, .id = i, .use_batch_api = use_batch_api && i == 0,
                         .seqs = calloc(PER_THREAD, sizeof(uint64_t)) };
        assert_non_null(w[i].seqs);
        assert_int_equal(pthread_create(&th[i], NULL, work, &w[i]), 0);
    }
    for (int i = 0; i < NTHREADS; i++) {
        assert_int_equal(pthread_join(th[i], NULL), 0);
        if (w[i].rc)
            fail_msg("thread %d: %s (%s)", i, tally_strerror(w[i].rc), tally_errmsg(t));
    }
    tally_head_info h;
    assert_int_equal(tally_head(t, &h), 0);
    assert_int_equal(h.seq, TOTAL);
    if (pol == TALLY_SYNC_BATCH)
        assert_int_equal(h.durable_seq, TOTAL); /* every append returned durable */
    assert_int_equal(tally_close(t), 0);
    double t1 = now_s();
    atomic_store(&rd.stop, 1);
    assert_int_equal(pthread_join(rth, NULL), 0);
    if (rd.rc)
        fail_msg("concurrent reader: %s", rd.err);
    assert_true(rd.passes >= 1);

    /* every seq 1..TOTAL returned exactly once */
    uint8_t *seen = calloc(TOTAL + 1, 1);
    assert_non_null(seen);
    for (int i = 0; i < NTHREADS; i++)
        for (int k = 0; k < PER_THREAD; k++) {
            uint64_t s = w[i].seqs[k];
            assert_true(s >= 1 && s <= TOTAL);
            assert_int_equal(seen[s], 0);
            seen[s] = 1;
            if (k)
                assert_true(s > w[i].seqs[k - 1]);
        }

    /* replay: each record is the one its thread was told it got */
    tally_iter *it = NULL;
    tally_record r;
    int count[NTHREADS] = { 0 };
    assert_int_equal(tally_iter_open(&it, dir, key, 1, 0), 0);
    for (uint64_t s = 1; s <= TOTAL; s++) {
        assert_int_equal(tally_iter_next(it, &r), 1);
        assert_int_equal(r.seq, s);
        int tid, idx;
        char buf[64];
        assert_true(r.payload_len < sizeof buf);
        memcpy(buf, r.payload, r.payload_len);
        buf[r.payload_len] = 0;
        assert_int_equal(sscanf(buf, "%d:%d", &tid, &idx), 2);
        assert_true(tid >= 0 && tid < NTHREADS && idx >= 0 && idx < PER_THREAD);
        assert_int_equal(r.type, 100 + tid);
        assert_int_equal(w[tid].seqs[idx], s);
        count[tid]++;
    }
    assert_int_equal(tally_iter_next(it, &r), 0);
    tally_iter_free(it);
    for (int i = 0; i < NTHREADS; i++)
        assert_int_equal(count[i], PER_THREAD);

    tally_verify_report vr;
    int rc = tally_verify(dir, NULL, &vr);
    if (rc)
        fail_msg("verify: %s: %s", tally_strerror(rc), vr.message);
    assert_int_equal(vr.records, TOTAL);
    rc = tally_verify(dir, key, &vr);
    if (rc)
        fail_msg("verify keyed: %s: %s", tally_strerror(rc), vr.message);
    assert_memory_equal(vr.head, h.link, 32);

    print_message("  %d appends in %.2f s, %d reader passes; checks %.2f s\n", TOTAL, t1 - t0,
                  rd.passes, now_s() - t1);
    for (int i = 0; i < NTHREADS; i++)
        free(w[i].seqs);
    free(seen);
    tu_rmrf(dir);
    free(dir);
}

static void threads_none(void **state) { (void)state; run(TALLY_SYNC_NONE, 0); }
static void threads_batch(void **state) { (void)state; run(TALLY_SYNC_BATCH, 0); }
/* thread 0 appends with tally_append_batch (4 at a time) among the others */
static void threads_batch_api(void **state) { (void)state; run(TALLY_SYNC_NONE, 1); }

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(threads_none),
        cmocka_unit_test(threads_batch),
        cmocka_unit_test(threads_batch_api),
    };
    return cmocka_run_group_tests(tests, NULL, tu_cleanup);
}
