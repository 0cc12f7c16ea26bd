/*
 * test-leakage.c — padding policies and batched flushes (FORMAT.md §3.3,
 * §4.2, §6.1, §13) on real files: every policy round-trips record sizes
 * from 0 to the maximum; on-disk body lengths are exactly the padded sizes
 * the policy gives; buckets collapse 1,000 distinct sizes to a handful;
 * with batched flushes every segment file only ever has a whole number of
 * blocks (watched from another thread while records are appended), also
 * across rollovers; padding is verified on read (a changed padding byte is
 * an integrity error, also when the tag and the chain were made to match);
 * the policy lives in the metadata (absence = none, set-padding, lock,
 * unknown kind refused); durable appends wait for the flush clock.
 */
#include "testutil.h"
#include "tally-internal.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define MIB (1024u * 1024u)

static const char *policies[] = { "none", "block:16", "block:4096",
                                  "block:64K", "buckets" };
#define N_POLICIES (sizeof policies / sizeof policies[0])

static tally_padding policy(const char *s)
{
    tally_padding p;
    assert_int_equal(tally_padding_parse(s, &p), 0);
    return p;
}

static void fill(uint8_t *p, size_t n, uint64_t seed)
{
    uint64_t x = seed * 0x9E3779B97F4A7C15ull | 1;
    for (size_t i = 0; i < n; i++) {
        x ^= x << 13; x ^= x >> 7; x ^= x << 17;
        p[i] = (uint8_t)(x >> 24);
    }
}

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static char *new_journal(const char *tag, const uint8_t *key, const char *pad,
                         uint64_t segment_size)
{
    char *dir = tu_mkdtemp(tag);
    tally_options o = tu_opts(key);
    o.padding = policy(pad);
    o.segment_size = segment_size;
    int rc = tally_init(dir, &o);
    if (rc != 0)
        fail_msg("init %s: %s", pad, tally_strerror(rc));
    return dir;
}

/* ---- parsing and the size function ---------------------------------------- */

static void test_parse_and_sizes(void **state)
{
    (void)state;
    tally_padding p;
    char buf[32];
    assert_int_equal(tally_padding_parse("block:4K", &p), 0);
    assert_int_equal(p.kind, TALLY_PAD_BLOCK);
    assert_int_equal(p.block, 4096);
    tally_padding_format(&p, buf, sizeof buf);
    assert_string_equal(buf, "block:4096");
    assert_int_equal(tally_padding_parse("block:16M", &p), 0);
    assert_int_equal(p.block, 16 * MIB);
    const char *bad[] = { "", "block", "block:", "block:15", "block:17M",
                          "block:-1", "block:1x", "bucket", "None",
                          "block:99999999999999999999" };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_int_equal(tally_padding_parse(bad[i], &p), -EINVAL);

    /* buckets: powers of two from 64, then the cap; at most 20 values */
    p = policy("buckets");
    assert_int_equal(tally_padded_len(&p, 16), 64);
    assert_int_equal(tally_padded_len(&p, 64), 64);
    assert_int_equal(tally_padded_len(&p, 65), 128);
    assert_int_equal(tally_padded_len(&p, 16 * MIB), 16 * MIB);
    assert_int_equal(tally_padded_len(&p, 16 * MIB + 1), TF_MAX_ENV);
    size_t maxenv = TF_ENV_HEADER_BYTES + TALLY_MAX_RKEY + TALLY_MAX_PAYLOAD;
    assert_true(maxenv <= TF_MAX_ENV);
    assert_int_equal(tally_padded_len(&p, maxenv), TF_MAX_ENV);
    size_t last = 0, distinct = 0;
    for (size_t e = 16; e <= maxenv; e += e < 4096 ? 1 : e / 64) {
        size_t q = tally_padded_len(&p, e);
        assert_true(q >= e);
        if (q != last)
            distinct++;
        last = q;
    }
    if (tally_padded_len(&p, maxenv) != last)
        distinct++;
    assert_int_equal(distinct, TALLY_PAD_BUCKET_COUNT);

    /* block: a multiple, capped at the largest envelope */
    p = policy("block:1000");
    assert_int_equal(tally_padded_len(&p, 16), 1000);
    assert_int_equal(tally_padded_len(&p, 1000), 1000);
    assert_int_equal(tally_padded_len(&p, 1001), 2000);
    p = policy("block:16M");
    assert_int_equal(tally_padded_len(&p, 16), 16 * MIB);
    assert_int_equal(tally_padded_len(&p, maxenv), TF_MAX_ENV);
    p = policy("none");
    assert_int_equal(tally_padded_len(&p, 12345), 12345);
}

/* ---- round trip ------------------------------------------------------------- */

/* The sampled sizes: every boundary of the small policies, powers of two
 * and their neighbours up to 256 KiB; or (big) the large payloads, up to
 * the largest (with the largest record key), just below and above the
 * 16 MiB bucket. */
static size_t sample_sizes(size_t *out, bool big)
{
    size_t n = 0;
    if (!big) {
        for (size_t s = 0; s <= 40; s++)
            out[n++] = s;
        for (size_t k = 7; k <= 18; k++) {
            out[n++] = ((size_t)1 << k) - 17;
            out[n++] = ((size_t)1 << k) - 16;
            out[n++] = ((size_t)1 << k) - 15;
            out[n++] = ((size_t)1 << k) + 3;
        }
        out[n++] = 4096 * 3 - 16;
        out[n++] = 4096 * 3 - 15;
    } else {
        out[n++] = 0;
        out[n++] = MIB - 15;
        out[n++] = 16 * MIB - 16;      /* envelope exactly 16 MiB */
        out[n++] = 16 * MIB - 15;      /* one byte into the cap */
        out[n++] = TALLY_MAX_PAYLOAD;  /* the maximum */
    }
    return n;
}

struct rt_mode {
    const char *name;
    tally_sync_policy sync;
    uint32_t flush_ms, flush_block;
};

static void roundtrip(const char *pad, const struct rt_mode *m, bool big)
{
    uint8_t key[TALLY_KEY_BYTES];
    tu_key(key, 7);
    char *dir = new_journal("leak-rt", key, pad, 0);
    tally_padding pp = policy(pad);
    size_t sizes[256];
    size_t n = sample_sizes(sizes, big);
    uint8_t *buf = malloc(TALLY_MAX_PAYLOAD);
    uint8_t rkey[TALLY_MAX_RKEY];
    assert_non_null(buf);
    fill(rkey, sizeof rkey, 99);

    tally_options o = tu_opts(key);
    o.sync = m->sync;
    o.flush_interval_ms = m->flush_ms;
    o.flush_block = m->flush_block;
    tally *t;
    int rc = tally_open(&t, dir, &o, NULL);
    if (rc != 0)
        fail_msg("open %s/%s: %s", pad, m->name, tally_strerror(rc));
    uint64_t *seqs = calloc(n + 1, sizeof *seqs);
    size_t *klen = calloc(n + 1, sizeof *klen);
    assert_non_null(seqs);
    assert_non_null(klen);
    for (size_t i = 0; i < n; i++) {
        fill(buf, sizes[i], i + 1);
        /* the largest payload also with the largest key: the maximum
         * envelope; some others with a short key */
        klen[i] = sizes[i] == TALLY_MAX_PAYLOAD ? TALLY_MAX_RKEY
                : big                              ? 0
                                                   : i % 5;
        tally_record_in r = { .type = (uint16_t)(i % 3), .key = rkey,
                              .key_len = klen[i], .payload = buf,
                              .payload_len = sizes[i] };
        rc = tally_append(t, &r, &seqs[i]);
        if (rc != 0)
            fail_msg("append %zu bytes (%s/%s): %s", sizes[i], pad, m->name,
                     tally_strerror(rc));
    }
    assert_int_equal(tally_close(t), 0);

    /* Replay with the key: exactly what was appended, and the body length
     * on disk is exactly the policy's padded size. PAD records (batched
     * flushes) come between them and are skipped by their type. */
    tally_iter *it;
    assert_int_equal(tally_iter_open(&it, dir, key, 0, 0), 0);
    tally_record r;
    size_t i = 0, pads = 0;
    while ((rc = tally_iter_next(it, &r)) == 1) {
        if (r.type == TALLY_TYPE_PAD) {
            assert_int_equal(r.kind, TF_KIND_CLEAR);
            assert_int_equal(r.payload_len, 0);
            assert_int_equal(r.decrypted, 1);
            pads++;
            continue;
        }
        assert_true(i < n);
        assert_int_equal(r.seq, seqs[i]);
        assert_int_equal(r.decrypted, 1);
        assert_int_equal(r.type, i % 3);
        assert_int_equal(r.payload_len, sizes[i]);
        assert_int_equal(r.key_len, klen[i]);
        if (klen[i])
            assert_memory_equal(r.key, rkey, klen[i]);
        fill(buf, sizes[i], i + 1);
        if (sizes[i] && memcmp(r.payload, buf, sizes[i]) != 0)
            fail_msg("payload %zu of %zu bytes differs (%s/%s)", i, sizes[i],
                     pad, m->name);
        size_t env = TF_ENV_HEADER_BYTES + klen[i] + sizes[i];
        if (r.body_len != tally_padded_len(&pp, env) + TF_TAG_BYTES)
            fail_msg("%s/%s: envelope of %zu bytes stored as body %u, want %zu",
                     pad, m->name, env, r.body_len,
                     tally_padded_len(&pp, env) + TF_TAG_BYTES);
        i++;
    }
    if (rc != 0)
        fail_msg("replay %s/%s: %s", pad, m->name, tally_iter_errmsg(it));
    assert_int_equal(i, n);
    if (!m->flush_ms && !m->flush_block)
        assert_int_equal(pads, 0);
    tally_iter_free(it);

    /* and the whole journal verifies, with and without the key (the
     * replay above authenticated the big ones already) */
    tally_verify_report vr;
    if (!big) {
        rc = tally_verify(dir, key, &vr);
        if (rc != 0)
            fail_msg("verify %s/%s: %s", pad, m->name, vr.message);
        assert_int_equal(vr.records, n + pads);
    }
    assert_int_equal(tally_verify(dir, NULL, &vr), 0);
    free(seqs);
    free(klen);
    free(buf);
    tu_rmrf(dir);
    free(dir);
}

static const struct rt_mode modes[] = {
    { "direct", TALLY_SYNC_NONE, 0, 0 },
    { "blocks", TALLY_SYNC_NONE, 0, 4096 },
    { "clock", TALLY_SYNC_INTERVAL, 2, 0 },
    { "clock+blocks", TALLY_SYNC_NONE, 1, 8192 },
};

static void test_roundtrip_every_policy(void **state)
{
    (void)state;
    for (size_t p = 0; p < N_POLICIES; p++)
        for (size_t m = 0; m < sizeof modes / sizeof modes[0]; m++)
            roundtrip(policies[p], &modes[m], false);
}

/* Up to the maximum record: once per policy (16 MiB records are slow to
 * do in every mode), and block:16M, which pads every record to one size. */
static void test_roundtrip_max_sizes(void **state)
{
    (void)state;
    for (size_t p = 0; p < N_POLICIES; p++)
        roundtrip(policies[p], &modes[p % 2], true);
    roundtrip("block:16M", &modes[0], true);
}

/* ---- buckets: what the operator sees ---------------------------------------- */

static size_t distinct_body_lens(const char *dir, size_t *ret_records)
{
    /* keyless: what anyone holding the files reads */
    tally_iter *it;
    assert_int_equal(tally_iter_open(&it, dir, NULL, 0, 0), 0);
    uint32_t *seen = NULL;
    size_t n = 0, records = 0;
    tally_record r;
    int rc;
    while ((rc = tally_iter_next(it, &r)) == 1) {
        records++;
        size_t j = 0;
        while (j < n && seen[j] != r.body_len)
            j++;
        if (j == n) {
            seen = realloc(seen, (n + 1) * sizeof *seen);
            assert_non_null(seen);
            seen[n++] = r.body_len;
        }
    }
    assert_int_equal(rc, 0);
    tally_iter_free(it);
    free(seen);
    *ret_records = records;
    return n;
}

static void test_buckets_thousand_sizes(void **state)
{
    (void)state;
    uint8_t key[TALLY_KEY_BYTES];
    tu_key(key, 3);
    const char *pols[] = { "none", "buckets" };
    size_t distinct[2];
    uint8_t *buf = malloc(70000);
    assert_non_null(buf);
    fill(buf, 70000, 5);
    for (int p = 0; p < 2; p++) {
        char *dir = new_journal("leak-bk", key, pols[p], 0);
        tally_options o = tu_opts(key);
        o.sync = TALLY_SYNC_NONE;
        tally *t;
        assert_int_equal(tally_open(&t, dir, &o, NULL), 0);
        /* 1,000 distinct sizes from 0 to about 63 KiB */
        tally_record_in recs[100];
        for (size_t i = 0; i < 1000; i++) {
            tally_record_in *r = &recs[i % 100];
            memset(r, 0, sizeof *r);
            r->payload = buf;
            r->payload_len = i + i * i / 16;
            if (i % 100 == 99)
                assert_int_equal(tally_append_batch(t, recs, 100, NULL), 0);
        }
        assert_int_equal(tally_close(t), 0);
        size_t records;
        distinct[p] = distinct_body_lens(dir, &records);
        assert_int_equal(records, 1000);
        tu_rmrf(dir);
        free(dir);
    }
    free(buf);
    assert_int_equal(distinct[0], 1000);
    /* envelopes of 16 .. 16 + 999 + 62375 bytes: buckets 64 .. 64 KiB */
    print_message("    1000 distinct sizes: none %zu on disk, buckets %zu\n",
                  distinct[0], distinct[1]);
    assert_true(distinct[1] <= TALLY_PAD_BUCKET_COUNT);
    assert_int_equal(distinct[1], 11);
}

/* ---- batched flushes: the file only ever has whole blocks -------------------- */

struct watch {
    const char *dir;
    uint64_t block;
    volatile int stop;
    uint64_t samples, clean, bad;
    uint64_t max_extent;
    char why[256];
};

/* One look at every segment file: its size, and, when no write is in
 * progress (only zero bytes after the last whole frame), the end of its
 * data. Both must be whole blocks. */
static void watch_once(struct watch *w)
{
    char names[TU_MAX_FILES][32];
    int n = tu_list_segs(w->dir, names, TU_MAX_FILES);
    for (int i = 0; i < n; i++) {
        char path[4096];
        tu_path(path, sizeof path, w->dir, names[i]);
        int fd = open(path, O_RDONLY);
        if (fd < 0)
            continue; /* being created */
        struct stat st;
        if (fstat(fd, &st) == 0) {
            w->samples++;
            if ((uint64_t)st.st_size % w->block != 0 && !w->bad) {
                w->bad++;
                snprintf(w->why, sizeof w->why, "%.32s: size %lld is not a "
                         "multiple of %llu", names[i], (long long)st.st_size,
                         (unsigned long long)w->block);
            }
        }
        size_t len = (size_t)st.st_size;
        uint8_t *b = malloc(len ? len : 1);
        ssize_t got = b ? pread(fd, b, len, 0) : -1;
        close(fd);
        if (got != (ssize_t)len) {
            free(b);
            continue;
        }
        /* Whole frames whose links verify: a frame being copied into
         * the file (even one whose header is half there) does not. */
        uint64_t pos = TF_SEG_HEADER_BYTES;
        bool whole = len >= TF_SEG_HEADER_BYTES;
        uint8_t link[32];
        if (whole)
            memcpy(link, b + 96, 32); /* the segment's prev_link */
        while (whole && pos + TF_FRAME_HEADER_BYTES <= len &&
               memcmp(b + pos, TF_FRAME_MAGIC, 4) == 0) {
            uint32_t body = le32_get(b + pos + 24);
            uint64_t fl = TF_FRAME_OVERHEAD + (uint64_t)body;
            uint8_t rh[32];
            if (body < TF_MIN_BODY || pos + fl > len) {
                whole = false;
                break;
            }
            ti_hash(rh, b + pos, TF_FRAME_HEADER_BYTES + body);
            ti_link(link, link, rh);
            if (memcmp(link, b + pos + fl - 32, 32) != 0) {
                whole = false;
                break;
            }
            pos += fl;
        }
        for (uint64_t k = pos; k < len && whole; k++)
            whole = b[k] == 0;
        free(b);
        if (!whole)
            continue; /* a write in progress: its bytes are arriving */
        w->clean++;
        if (pos > w->max_extent)
            w->max_extent = pos;
        if (pos > TF_SEG_HEADER_BYTES && pos % w->block != 0 && !w->bad) {
            w->bad++;
            snprintf(w->why, sizeof w->why, "%.32s: data ends at %llu, not on "
                     "a block of %llu", names[i], (unsigned long long)pos,
                     (unsigned long long)w->block);
        }
    }
}

static void *watch_main(void *arg)
{
    struct watch *w = arg;
    while (!w->stop) {
        watch_once(w);
        usleep(200);
    }
    return NULL;
}

static void flush_blocks(tally_sync_policy sync, uint32_t flush_ms,
                         uint32_t block, const char *pad, int count)
{
    uint8_t key[TALLY_KEY_BYTES];
    tu_key(key, 11);
    /* small segments: several rollovers, and small files to watch */
    char *dir = new_journal("leak-fl", key, pad, 96 * 1024);
    tally_options o = tu_opts(key);
    o.sync = sync;
    o.flush_interval_ms = flush_ms;
    o.flush_block = block;
    tally *t;
    assert_int_equal(tally_open(&t, dir, &o, NULL), 0);
    struct watch w = { .dir = dir,
                       .block = block ? block : TALLY_FLUSH_DEFAULT_BLOCK };
    pthread_t thr;
    assert_int_equal(pthread_create(&thr, NULL, watch_main, &w), 0);
    uint8_t buf[3000];
    fill(buf, sizeof buf, 1);
    uint64_t seq = 0;
    size_t appended = 0;
    for (int i = 0; i < count; i++) {
        tally_record_in r = { .type = 1, .payload = buf,
                              .payload_len = (size_t)(i * 37) % sizeof buf };
        if (i % 50 == 49) {
            tally_record_in rs[5] = { r, r, r, r, r };
            uint64_t first;
            assert_int_equal(tally_append_batch(t, rs, 5, &first), 0);
            appended += 5;
            seq = first + 4;
        } else {
            assert_int_equal(tally_append(t, &r, &seq), 0);
            appended++;
        }
        if (i % 40 == 0)
            usleep(1000); /* let the watcher see states in between */
        if (i == count / 2)
            assert_int_equal(tally_sync(t, seq), 0);
    }
    assert_int_equal(tally_close(t), 0);
    w.stop = 1;
    pthread_join(thr, NULL);
    watch_once(&w); /* closed: every file cut at its last frame */
    if (w.bad)
        fail_msg("sync %d, clock %u ms, block %u: %s", sync, flush_ms, block,
                 w.why);
    print_message("    sync %d clock %u block %u: %llu looks (%llu between "
                  "writes), all whole blocks\n", sync, flush_ms,
                  w.block == block ? block : (unsigned)w.block,
                  (unsigned long long)w.samples, (unsigned long long)w.clean);
    assert_true(w.clean > 0);
    char names[TU_MAX_FILES][32];
    int nf = tu_list_segs(dir, names, TU_MAX_FILES);
    assert_true(nf >= 2); /* rolled over */
    for (int i = 0; i < nf; i++) {
        char path[4096];
        tu_path(path, sizeof path, dir, names[i]);
        assert_int_equal(tu_file_size(path) % w.block, 0);
    }
    /* The records are all there, in order, among the PAD records. */
    tally_iter *it;
    assert_int_equal(tally_iter_open(&it, dir, key, 0, 0), 0);
    tally_record r;
    size_t got = 0;
    int rc;
    while ((rc = tally_iter_next(it, &r)) == 1)
        if (r.type != TALLY_TYPE_PAD)
            got++;
    assert_int_equal(rc, 0);
    assert_int_equal(got, appended);
    tally_iter_free(it);
    tu_rmrf(dir);
    free(dir);
}

static void test_flush_blocks_no_clock(void **state)
{
    (void)state;
    /* ALWAYS and BATCH sync each append: fewer of them */
    flush_blocks(TALLY_SYNC_NONE, 0, 4096, "none", 600);
    flush_blocks(TALLY_SYNC_ALWAYS, 0, 512, "buckets", 150);
    flush_blocks(TALLY_SYNC_INTERVAL, 0, 8192, "block:100", 600);
}

static void test_flush_blocks_clock(void **state)
{
    (void)state;
    flush_blocks(TALLY_SYNC_NONE, 3, 0, "none", 600);
    flush_blocks(TALLY_SYNC_BATCH, 1, 4096, "buckets", 150);
}

/* A batch is never split by a PAD record: its seqs stay consecutive. */
static void test_flush_batch_consecutive(void **state)
{
    (void)state;
    uint8_t key[TALLY_KEY_BYTES];
    tu_key(key, 12);
    char *dir = new_journal("leak-bt", key, "none", 0);
    tally_options o = tu_opts(key);
    o.sync = TALLY_SYNC_NONE;
    o.flush_block = 512;
    tally *t;
    assert_int_equal(tally_open(&t, dir, &o, NULL), 0);
    uint8_t buf[300];
    fill(buf, sizeof buf, 2);
    tally_record_in recs[9];
    for (int i = 0; i < 9; i++)
        recs[i] = (tally_record_in){ .type = (uint16_t)(100 + i),
                                     .payload = buf, .payload_len = 150 };
    uint64_t firsts[20];
    for (int b = 0; b < 20; b++)
        assert_int_equal(tally_append_batch(t, recs, 9, &firsts[b]), 0);
    assert_int_equal(tally_close(t), 0);
    tally_iter *it;
    for (int b = 0; b < 20; b++) {
        assert_int_equal(tally_iter_open(&it, dir, key, firsts[b], 0), 0);
        tally_record r;
        for (int i = 0; i < 9; i++) {
            assert_int_equal(tally_iter_next(it, &r), 1);
            assert_int_equal(r.seq, firsts[b] + (uint64_t)i);
            assert_int_equal(r.type, 100 + i);
        }
        tally_iter_free(it);
    }
    tu_rmrf(dir);
    free(dir);
}

/* ---- the flush clock and the sync policies --------------------------------- */

static void test_clock_durability(void **state)
{
    (void)state;
    uint8_t key[TALLY_KEY_BYTES];
    tu_key(key, 13);
    char *dir = new_journal("leak-ck", key, "buckets", 0);
    const uint32_t period = 40;
    tally_sync_policy pols[] = { TALLY_SYNC_ALWAYS, TALLY_SYNC_NONE };
    for (int p = 0; p < 2; p++) {
        tally_options o = tu_opts(key);
        o.sync = pols[p];
        o.flush_interval_ms = period;
        tally *t;
        assert_int_equal(tally_open(&t, dir, &o, NULL), 0);
        char names[TU_MAX_FILES][32], path[4096];
        int nf = tu_list_segs(dir, names, TU_MAX_FILES);
        tu_path(path, sizeof path, dir, names[nf - 1]);
        uint64_t max_wait = 0;
        for (int i = 0; i < 6; i++) {
            tally_record_in r = { .type = 2, .payload = "x", .payload_len = 1 };
            uint64_t seq, t0 = now_ms();
            assert_int_equal(tally_append(t, &r, &seq), 0);
            tally_head_info h;
            if (pols[p] == TALLY_SYNC_ALWAYS) {
                /* returned at the tick that wrote and synced it */
                assert_int_equal(tally_head(t, &h), 0);
                assert_true(h.durable_seq >= seq);
            } else {
                /* returned at once; nothing written before the tick */
                assert_int_equal(tally_head(t, &h), 0);
                assert_true(h.durable_seq < seq);
                assert_int_equal(tally_sync(t, seq), 0);
                assert_int_equal(tally_head(t, &h), 0);
                assert_true(h.durable_seq >= seq);
            }
            uint64_t waited = now_ms() - t0;
            if (waited > max_wait)
                max_wait = waited;
            usleep(7000 * (unsigned)i);
        }
        assert_true(max_wait <= period + 200); /* one tick, and some slack */
        assert_int_equal(tally_close(t), 0);
        assert_int_equal(tu_file_size(path) % TALLY_FLUSH_DEFAULT_BLOCK, 0);
    }
    /* The writer's timestamps are multiples of the period. */
    tally_iter *it;
    assert_int_equal(tally_iter_open(&it, dir, key, 0, 0), 0);
    tally_record r;
    int n = 0, rc;
    while ((rc = tally_iter_next(it, &r)) == 1) {
        assert_int_equal(r.ts_ns % ((uint64_t)period * 1000000u), 0);
        n++;
    }
    assert_int_equal(rc, 0);
    assert_true(n >= 12);
    tally_iter_free(it);
    tu_rmrf(dir);
    free(dir);
}

static void test_flush_options_checked(void **state)
{
    (void)state;
    uint8_t key[TALLY_KEY_BYTES];
    tu_key(key, 14);
    char *dir = new_journal("leak-op", key, "none", 0);
    tally_options o = tu_opts(key);
    tally *t;
    o.flush_block = 511;
    assert_int_equal(tally_open(&t, dir, &o, NULL), -EINVAL);
    o.flush_block = TALLY_FLUSH_MAX_BLOCK + 1;
    assert_int_equal(tally_open(&t, dir, &o, NULL), -EINVAL);
    o = tu_opts(key);
    o.padding.kind = TALLY_PAD_BLOCK;
    o.padding.block = 8;
    char *dir2 = tu_mkdtemp("leak-op2");
    assert_int_equal(tally_init(dir2, &o), -EINVAL);
    tu_rmrf(dir2);
    free(dir2);
    tu_rmrf(dir);
    free(dir);
}

/* ---- padding is verified on read -------------------------------------------- */

/* The frame of seq in the last segment file: its offset. */
static uint64_t frame_offset(const char *dir, const uint8_t *key, uint64_t seq,
                             char *ret_name, uint32_t *ret_body)
{
    tally_iter *it;
    assert_int_equal(tally_iter_open(&it, dir, key, seq, 0), 0);
    tally_record r;
    assert_int_equal(tally_iter_next(it, &r), 1);
    assert_int_equal(r.seq, seq);
    strcpy(ret_name, r.segment);
    *ret_body = r.body_len;
    uint64_t off = r.offset;
    tally_iter_free(it);
    return off;
}

static int replay_all(const char *dir, const uint8_t *key)
{
    tally_iter *it;
    int rc = tally_iter_open(&it, dir, key, 0, 0);
    if (rc < 0)
        return rc;
    tally_record r;
    while ((rc = tally_iter_next(it, &r)) == 1)
        ;
    tally_iter_free(it);
    return rc;
}

/* Re-seals the frame at off of segment file path (the last frame of the
 * file) after f(envelope) changed its plaintext, and stores a matching
 * record_hash chain: only the envelope rules can catch the change. */
static void reseal_last(const char *dir, const char *name, uint64_t off,
                        const uint8_t *key, void (*f)(uint8_t *, size_t))
{
    char path[4096];
    tu_path(path, sizeof path, dir, name);
    size_t len;
    uint8_t *file = tu_read(path, &len);
    assert_non_null(file);
    int dirfd = open(dir, O_RDONLY | O_DIRECTORY);
    assert_true(dirfd >= 0);
    ti_meta m;
    assert_int_equal(ti_meta_read(dirfd, key, &m, NULL, 0), 0);
    close(dirfd);
    ti_seg_hdr sh;
    const char *why;
    assert_int_equal(ti_seg_header_parse(file, &sh, &why), 0);
    uint8_t dk[32], sk[32];
    assert_int_equal(ti_epoch_unwrap(ti_meta_epoch(&m, sh.epoch), key, m.jid,
                                     dk), 0);
    ti_derive_segment_key(sk, dk, m.jid, sh.segment_no, sh.salt);
    ti_aead a;
    assert_int_equal(ti_aead_alloc(&a, m.cipher), 0);
    ti_aead_setkey(&a, sk);

    uint8_t *fr = file + off;
    ti_frame_hdr h;
    assert_int_equal(ti_frame_header_parse(fr, le64_get(fr + 8), &h, &why), 0);
    assert_int_equal(off + ti_frame_len(&h), len); /* the last frame */
    uint8_t *prev = fr - 32; /* the link before it */
    size_t env_len = h.body_len - TF_TAG_BYTES;
    uint8_t *work = malloc(TF_AD_BYTES + h.body_len);
    const uint8_t *env;
    size_t el;
    assert_int_equal(ti_frame_open(&a, m.jid, prev, fr, &h, work, &env, &el),
                     0);
    uint8_t *plain = malloc(env_len);
    memcpy(plain, env, env_len);
    f(plain, env_len);
    uint8_t ad[TF_AD_BYTES];
    memcpy(ad, m.jid, 32);
    memcpy(ad + 32, fr, TF_FRAME_HEADER_BYTES);
    memcpy(ad + 64, prev, 32);
    uint8_t *body = fr + TF_FRAME_HEADER_BYTES;
    if (h.kind == TF_KIND_SEALED) {
        ti_aead_seal(&a, h.seq, body, body + env_len, plain, env_len, ad,
                     sizeof ad);
    } else {
        memcpy(body, plain, env_len);
        memcpy(work, ad, sizeof ad);
        memcpy(work + TF_AD_BYTES, plain, env_len);
        ti_aead_seal(&a, h.seq, work, body + env_len, work, 0, work,
                     TF_AD_BYTES + env_len);
    }
    uint8_t rh[32];
    ti_hash(rh, fr, TF_FRAME_HEADER_BYTES + h.body_len);
    ti_link(fr + TF_FRAME_HEADER_BYTES + h.body_len, prev, rh);
    tu_write(path, file, len);
    free(plain);
    free(work);
    free(file);
    ti_aead_free(&a);
    ti_meta_free(&m);
    sodium_memzero(dk, sizeof dk);
    sodium_memzero(sk, sizeof sk);
}

static void set_last_pad_byte(uint8_t *env, size_t len)
{
    env[len - 1] = 0x01;
}

static void test_padding_checked_on_read(void **state)
{
    (void)state;
    uint8_t key[TALLY_KEY_BYTES];
    tu_key(key, 21);
    char *dir = new_journal("leak-pb", key, "buckets", 0);
    tally_options o = tu_opts(key);
    tally *t;
    assert_int_equal(tally_open(&t, dir, &o, NULL), 0);
    uint8_t buf[100];
    fill(buf, sizeof buf, 4);
    tally_record_in r = { .type = 5, .payload = buf, .payload_len = 100 };
    uint64_t s1, s2;
    assert_int_equal(tally_append(t, &r, &s1), 0);
    assert_int_equal(tally_append(t, &r, &s2), 0);
    assert_int_equal(tally_close(t), 0);
    char name[32];
    uint32_t body;
    uint64_t off = frame_offset(dir, key, s2, name, &body);
    assert_int_equal(body, 128 + TF_TAG_BYTES); /* 116 bytes -> 128 */
    tu_snap *snap = tu_snap_take(dir);

    /* 1. A changed byte in the padding of the ciphertext: the tag fails
     * with the key, the chain without it. */
    char path[4096];
    tu_path(path, sizeof path, dir, name);
    uint64_t pad_byte = off + TF_FRAME_HEADER_BYTES + 128 - 1;
    tu_flip_bit(path, pad_byte * 8);
    assert_int_equal(replay_all(dir, key), TALLY_EINTEGRITY);
    assert_int_equal(replay_all(dir, NULL), TALLY_EINTEGRITY);
    tally_verify_report vr;
    assert_int_equal(tally_verify(dir, key, &vr), TALLY_EINTEGRITY);
    assert_int_equal(vr.seq, s2);
    tu_snap_restore(snap, dir);
    assert_int_equal(replay_all(dir, key), 0);

    /* 2. Nonzero padding under a valid tag and chain (re-sealed with the
     * key): the zero check of the envelope catches it. */
    reseal_last(dir, name, off, key, set_last_pad_byte);
    assert_int_equal(replay_all(dir, NULL), 0); /* nothing to see without */
    assert_int_equal(replay_all(dir, key), TALLY_EINTEGRITY);
    assert_int_equal(tally_verify(dir, key, &vr), TALLY_EINTEGRITY);
    assert_non_null(strstr(vr.message, "padding"));
    tu_snap_restore(snap, dir);
    tu_snap_free(snap);
    tu_rmrf(dir);
    free(dir);

    /* 3. A PAD record (CLEAR) with a nonzero padding byte and a matching
     * chain: refused without the key (zero check) and with it (tag). */
    dir = new_journal("leak-pp", key, "none", 0);
    o.flush_block = 4096;
    assert_int_equal(tally_open(&t, dir, &o, NULL), 0);
    assert_int_equal(tally_append(t, &r, &s1), 0);
    assert_int_equal(tally_close(t), 0);
    uint64_t pad_seq = s1 + 1; /* the PAD record that ends the block */
    off = frame_offset(dir, key, pad_seq, name, &body);
    tu_path(path, sizeof path, dir, name);
    size_t flen;
    uint8_t *f = tu_read(path, &flen);
    uint32_t env_len = body - TF_TAG_BYTES;
    uint64_t at = off + TF_FRAME_HEADER_BYTES + env_len - 1;
    assert_int_equal(f[at], 0);
    f[at] = 0x80;
    /* recompute record_hash and the link after it, keylessly */
    uint8_t rh[32];
    ti_hash(rh, f + off, TF_FRAME_HEADER_BYTES + body);
    ti_link(f + off + TF_FRAME_HEADER_BYTES + body, f + off - 32, rh);
    tu_write(path, f, flen);
    free(f);
    int rc = replay_all(dir, NULL);
    assert_int_equal(rc, TALLY_EINTEGRITY);
    assert_int_equal(replay_all(dir, key), TALLY_EINTEGRITY);
    tu_rmrf(dir);
    free(dir);
}

/* ---- the policy in the metadata ----------------------------------------------- */

static void test_set_padding(void **state)
{
    (void)state;
    uint8_t key[TALLY_KEY_BYTES], other[TALLY_KEY_BYTES];
    tu_key(key, 31);
    tu_key(other, 32);
    char *dir = new_journal("leak-sp", key, "none", 0);
    tally_padding p;
    assert_int_equal(tally_get_padding(dir, &p), 0);
    assert_int_equal(p.kind, TALLY_PAD_NONE);
    /* absence = none: a journal made with no policy has no extension */
    char mpath[4096];
    tu_path(mpath, sizeof mpath, dir, "tally.meta");
    size_t mlen;
    uint8_t *mb = tu_read(mpath, &mlen);
    assert_int_equal(le32_get(mb + 108), 0);
    free(mb);

    tally_options o = tu_opts(key);
    tally *t;
    uint8_t buf[40] = { 0 };
    tally_record_in r = { .payload = buf, .payload_len = 40 };
    uint64_t s_old, s_new;
    assert_int_equal(tally_open(&t, dir, &o, NULL), 0);
    assert_int_equal(tally_append(t, &r, &s_old), 0);
    tally_padding b = policy("buckets");
    assert_int_equal(tally_set_padding(dir, key, &b), -EBUSY); /* writer open */
    assert_int_equal(tally_close(t), 0);
    assert_int_equal(tally_set_padding(dir, other, &b), TALLY_EKEY);
    assert_int_equal(tally_set_padding(dir, key, &b), 0);
    assert_int_equal(tally_get_padding(dir, &p), 0);
    assert_int_equal(p.kind, TALLY_PAD_BUCKETS);
    assert_int_equal(tally_open(&t, dir, &o, NULL), 0);
    assert_int_equal(tally_append(t, &r, &s_new), 0);
    assert_int_equal(tally_close(t), 0);
    char name[32];
    uint32_t body;
    (void)frame_offset(dir, key, s_old, name, &body);
    assert_int_equal(body, 16 + 40 + TF_TAG_BYTES); /* written unpadded */
    (void)frame_offset(dir, key, s_new, name, &body);
    assert_int_equal(body, 64 + TF_TAG_BYTES);

    /* back to none, then block:1K */
    tally_padding n0 = policy("none"), k1 = policy("block:1K");
    assert_int_equal(tally_set_padding(dir, key, &n0), 0);
    mb = tu_read(mpath, &mlen);
    assert_int_equal(le32_get(mb + 108), 0);
    free(mb);
    assert_int_equal(tally_set_padding(dir, key, &k1), 0);
    assert_int_equal(tally_get_padding(dir, &p), 0);
    assert_int_equal(p.block, 1024);

    /* a policy of a later version: the writer refuses, readers go on */
    int dirfd = open(dir, O_RDONLY | O_DIRECTORY);
    ti_meta m;
    assert_int_equal(ti_meta_read(dirfd, key, &m, NULL, 0), 0);
    assert_int_equal(m.ext_len, 12);
    m.ext[4] = 9; /* kind 9 */
    assert_int_equal(ti_meta_write(dirfd, &m, key), 0);
    ti_meta_free(&m);
    assert_int_equal(tally_get_padding(dir, &p), TALLY_EFORMAT);
    tally_recovery rec;
    assert_int_equal(tally_open(&t, dir, &o, &rec), TALLY_EFORMAT);
    assert_non_null(strstr(rec.message, "padding"));
    assert_int_equal(replay_all(dir, key), 0);
    /* set-padding repairs it */
    assert_int_equal(tally_set_padding(dir, key, &b), 0);
    assert_int_equal(tally_open(&t, dir, &o, NULL), 0);
    assert_int_equal(tally_close(t), 0);
    /* other extension entries are kept */
    assert_int_equal(ti_meta_read(dirfd, key, &m, NULL, 0), 0);
    uint8_t *ext = malloc(m.ext_len + 7);
    memcpy(ext, "\x34\x12\x03\x00" "abc", 7);
    memcpy(ext + 7, m.ext, m.ext_len);
    free(m.ext);
    m.ext = ext;
    m.ext_len += 7;
    assert_int_equal(ti_meta_write(dirfd, &m, key), 0);
    ti_meta_free(&m);
    assert_int_equal(tally_set_padding(dir, key, &k1), 0);
    assert_int_equal(ti_meta_read(dirfd, key, &m, NULL, 0), 0);
    assert_int_equal(m.ext_len, 7 + 12);
    assert_memory_equal(m.ext, "\x34\x12\x03\x00" "abc", 7);
    ti_meta_free(&m);
    /* the operator cannot turn padding off: the MAC covers the entry */
    mb = tu_read(mpath, &mlen);
    mb[mlen - 64 - 12 + 4] = 0; /* kind: none */
    uint8_t h[32];
    ti_hash(h, mb, mlen - 32);
    memcpy(mb + mlen - 32, h, 32); /* checksum fixed up, MAC cannot be */
    tu_write(mpath, mb, mlen);
    free(mb);
    assert_int_equal(tally_open(&t, dir, &o, NULL), TALLY_EINTEGRITY);
    close(dirfd);
    tu_rmrf(dir);
    free(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_and_sizes),
        cmocka_unit_test(test_roundtrip_every_policy),
        cmocka_unit_test(test_roundtrip_max_sizes),
        cmocka_unit_test(test_buckets_thousand_sizes),
        cmocka_unit_test(test_flush_blocks_no_clock),
        cmocka_unit_test(test_flush_blocks_clock),
        cmocka_unit_test(test_flush_batch_consecutive),
        cmocka_unit_test(test_clock_durability),
        cmocka_unit_test(test_flush_options_checked),
        cmocka_unit_test(test_padding_checked_on_read),
        cmocka_unit_test(test_set_padding),
    };
    return cmocka_run_group_tests_name("leakage", tests, NULL, tu_cleanup);
}
