/*
 * test-journal-roundtrip.c — append/replay round trip over real files:
 * every field of a record comes back as appended (types, record keys, empty,
 * binary and maximum payloads), with both ciphers and compression on and off;
 * limits give TALLY_ETOOBIG; tiny segments roll over with dense seqs; a
 * reopen continues the chain (FORMAT.md §4.1 prev_link); the iterator starts
 * at from_seq; tally_read_head agrees with the writer.
 */
#include "testutil.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct combo {
    tally_cipher cipher;
    int compress;
} combo;

typedef struct want_rec {
    uint16_t type;
    uint8_t *key;
    size_t key_len;
    uint8_t *payload;
    size_t payload_len;
    uint64_t ts_ns; /* 0: not checked */
} want_rec;

static void fill_random(uint8_t *p, size_t n, uint64_t seed)
{
    uint64_t x = seed | 1;
    for (size_t i = 0; i < n; i++) {
        x ^= x << 13; x ^= x >> 7; x ^= x << 17;
        p[i] = (uint8_t)(x >> 24);
    }
}

static uint8_t *dup_bytes(const void *p, size_t n)
{
    uint8_t *d = malloc(n ? n : 1);
    assert_non_null(d);
    if (n)
        memcpy(d, p, n);
    return d;
}

static uint64_t append_rec(tally *t, const want_rec *w)
{
    tally_record_in r = {
        .type = w->type, .key = w->key, .key_len = w->key_len,
        .payload = w->payload, .payload_len = w->payload_len, .ts_ns = w->ts_ns,
    };
    uint64_t seq = 0;
    int rc = tally_append(t, &r, &seq);
    if (rc != 0)
        fail_msg("append type %u: %s (%s)", w->type, tally_strerror(rc), tally_errmsg(t));
    return seq;
}

/* The records of one round trip. */
#define NREC 9
static void make_records(want_rec w[NREC])
{
    memset(w, 0, sizeof(want_rec) * NREC);
    w[0].type = 0; w[0].payload = dup_bytes("hello", 5); w[0].payload_len = 5;
    w[1].type = 1; w[1].key = dup_bytes("user/42", 7); w[1].key_len = 7;
    w[1].payload = dup_bytes("{\"balance\":10}", 14); w[1].payload_len = 14;
    w[1].ts_ns = 1700000000123456789ull;
    /* maximum record key, binary payload with every byte value */
    w[2].type = 0xFEFF;
    w[2].key_len = TALLY_MAX_RKEY;
    w[2].key = malloc(TALLY_MAX_RKEY);
    assert_non_null(w[2].key);
    fill_random(w[2].key, TALLY_MAX_RKEY, 7);
    w[2].payload_len = 1024;
    w[2].payload = malloc(1024);
    assert_non_null(w[2].payload);
    for (int i = 0; i < 1024; i++)
        w[2].payload[i] = (uint8_t)i;
    /* empty payload and empty key */
    w[3].type = 7; w[3].payload = dup_bytes("", 0); w[3].payload_len = 0;
    w[3].ts_ns = 1;
    /* a reserved type the application may write */
    w[4].type = TALLY_TYPE_SNAPSHOT;
    w[4].payload = dup_bytes("full state", 10); w[4].payload_len = 10;
    /* compressible: stored deflated when compression is on */
    w[5].type = 2; w[5].payload_len = 65536;
    w[5].payload = malloc(65536);
    assert_non_null(w[5].payload);
    memset(w[5].payload, 'a', 65536);
    /* incompressible: stored raw even with compression on */
    w[6].type = 3; w[6].payload_len = 4096;
    w[6].payload = malloc(4096);
    assert_non_null(w[6].payload);
    fill_random(w[6].payload, 4096, 99);
    /* a key and an empty payload */
    w[7].type = 0; w[7].key = dup_bytes("k", 1); w[7].key_len = 1;
    w[7].payload = dup_bytes("", 0); w[7].payload_len = 0;
    /* CHECKPOINT: a CLEAR record (FORMAT.md §4.2), readable without the key
     * and never compressed (COMPRESSED is for SEALED only) */
    w[8].type = TALLY_TYPE_CHECKPOINT;
    w[8].payload_len = 176; /* FORMAT.md §9.2; filled in at append time */
    w[8].payload = calloc(1, 176);
    assert_non_null(w[8].payload);
}

/* A CHECKPOINT payload (§9.2, anchor-file backend) of the current head. */
static void fill_checkpoint(tally *t, uint8_t p[176])
{
    tally_head_info h;
    assert_int_equal(tally_head(t, &h), 0);
    memset(p, 0, 176);
    memcpy(p, "TCKP\x01\x02", 6);
    for (int i = 0; i < 8; i++)
        p[8 + i] = (uint8_t)(h.seq >> (8 * i));
    memcpy(p + 16, h.link, 32);
    p[168] = 1;
}

static void free_records(want_rec *w, int n)
{
    for (int i = 0; i < n; i++) {
        free(w[i].key);
        free(w[i].payload);
    }
}

static void check_rec(const tally_record *r, const want_rec *w, uint64_t seq, int keyed)
{
    assert_int_equal(r->seq, seq);
    if (w->ts_ns)
        assert_int_equal(r->ts_ns, w->ts_ns);
    else
        assert_true(r->ts_ns > 1600000000ull * 1000000000ull);
    assert_non_null(r->segment);
    int clear = w->type == TALLY_TYPE_CHECKPOINT || w->type == TALLY_TYPE_COMPACTION;
    assert_int_equal(r->kind, clear ? 2 : 1);
    if (!keyed) {
        assert_int_equal(r->decrypted, 0);
        if (!clear) {
            assert_null(r->payload);
            return;
        }
    } else {
        assert_int_equal(r->decrypted, 1);
    }
    assert_int_equal(r->type, w->type);
    assert_int_equal(r->key_len, w->key_len);
    if (w->key_len)
        assert_memory_equal(r->key, w->key, w->key_len);
    assert_int_equal(r->payload_len, w->payload_len);
    if (w->payload_len)
        assert_memory_equal(r->payload, w->payload, w->payload_len);
}

static void roundtrip(void **state)
{
    const combo *c = *state;
    uint8_t key[TALLY_KEY_BYTES];
    tu_key(key, 1);
    char *dir = tu_mkdtemp("rt");
    tally_options o = tu_opts(key);
    o.cipher = c->cipher;
    o.compress = c->compress;
    assert_int_equal(tally_init(dir, &o), 0);

    o.sync = TALLY_SYNC_NONE;
    tally *t = NULL;
    tally_recovery rec;
    assert_int_equal(tally_open(&t, dir, &o, &rec), 0);
    assert_int_equal(rec.cut_bytes, 0);
    assert_int_equal(rec.cut_first_seq, 0);

    want_rec w[NREC];
    make_records(w);
    for (int i = 0; i < NREC; i++) {
        if (w[i].type == TALLY_TYPE_CHECKPOINT)
            fill_checkpoint(t, w[i].payload);
        assert_int_equal(append_rec(t, &w[i]), (uint64_t)i + 1);
    }
    tally_head_info head;
    assert_int_equal(tally_sync(t, 0), 0);
    assert_int_equal(tally_head(t, &head), 0);
    assert_int_equal(head.seq, NREC);
    assert_int_equal(head.durable_seq, NREC);
    assert_int_equal(tally_close(t), 0);

    /* keyed replay: every field back */
    uint8_t hashes[NREC][TALLY_HASH_BYTES], links[NREC][TALLY_HASH_BYTES];
    uint32_t body_lens[NREC];
    tally_iter *it = NULL;
    tally_record r;
    assert_int_equal(tally_iter_open(&it, dir, key, 1, 0), 0);
    for (int i = 0; i < NREC; i++) {
        assert_int_equal(tally_iter_next(it, &r), 1);
        check_rec(&r, &w[i], (uint64_t)i + 1, 1);
        memcpy(hashes[i], r.record_hash, TALLY_HASH_BYTES);
        memcpy(links[i], r.link, TALLY_HASH_BYTES);
        body_lens[i] = r.body_len;
    }
    assert_int_equal(tally_iter_next(it, &r), 0);
    tally_iter_free(it);
    assert_memory_equal(links[NREC - 1], head.link, TALLY_HASH_BYTES);

    /* FORMAT.md §4.2: body = envelope (16 + key + data) + tag (16) */
    for (int i = 0; i < NREC; i++) {
        uint32_t plain = (uint32_t)(16 + w[i].key_len + w[i].payload_len + 16);
        if (c->compress && i == 5)
            assert_true(body_lens[i] < plain / 4);
        else if (c->compress && i == 2) /* a repeating byte pattern deflates */
            assert_true(body_lens[i] < plain - 512);
        else
            assert_int_equal(body_lens[i], plain);
    }

    /* keyless replay: same chain, nothing decrypted */
    assert_int_equal(tally_iter_open(&it, dir, NULL, 1, 0), 0);
    for (int i = 0; i < NREC; i++) {
        assert_int_equal(tally_iter_next(it, &r), 1);
        check_rec(&r, &w[i], (uint64_t)i + 1, 0);
        assert_memory_equal(r.record_hash, hashes[i], TALLY_HASH_BYTES);
        assert_memory_equal(r.link, links[i], TALLY_HASH_BYTES);
    }
    assert_int_equal(tally_iter_next(it, &r), 0);
    tally_iter_free(it);

    /* NO_DECRYPT with a key: chain only */
    assert_int_equal(tally_iter_open(&it, dir, key, 1, TALLY_ITER_NO_DECRYPT), 0);
    assert_int_equal(tally_iter_next(it, &r), 1);
    assert_int_equal(r.decrypted, 0);
    tally_iter_free(it);

    tally_verify_report vr;
    assert_int_equal(tally_verify(dir, key, &vr), 0);
    assert_int_equal(vr.records, NREC);
    assert_int_equal(vr.first_seq, 1);
    assert_int_equal(vr.last_seq, NREC);
    assert_int_equal(vr.keyed, 1);
    assert_int_equal(vr.cipher, (int)c->cipher);
    assert_memory_equal(vr.head, head.link, TALLY_HASH_BYTES);
    assert_int_equal(tally_verify(dir, NULL, &vr), 0);
    assert_int_equal(vr.keyed, 0);
    assert_int_equal(vr.records, NREC);

    tally_head_info rh;
    assert_int_equal(tally_read_head(dir, &rh), 0);
    assert_int_equal(rh.seq, NREC);
    assert_memory_equal(rh.link, head.link, TALLY_HASH_BYTES);

    free_records(w, NREC);
    tu_rmrf(dir);
    free(dir);
}

static void limits(void **state)
{
    (void)state;
    uint8_t key[TALLY_KEY_BYTES];
    tu_key(key, 2);
    char *dir = tu_mkdtemp("limits");
    tally_options o = tu_opts(key);
    o.compress = 1; /* the harder path: deflate tried, raw kept */
    assert_int_equal(tally_init(dir, &o), 0);
    o.sync = TALLY_SYNC_NONE;
    tally *t = NULL;
    assert_int_equal(tally_open(&t, dir, &o, NULL), 0);

    size_t big = TALLY_MAX_PAYLOAD + 1;
    uint8_t *p = malloc(big);
    uint8_t *rkey = malloc(TALLY_MAX_RKEY + 1);
    assert_non_null(p);
    assert_non_null(rkey);
    fill_random(p, big, 12345);
    memset(rkey, 'k', TALLY_MAX_RKEY + 1);

    tally_record_in r = { .type = 5, .payload = p, .payload_len = TALLY_MAX_PAYLOAD };
    uint64_t seq = 0;
    assert_int_equal(tally_append(t, &r, &seq), 0);
    assert_int_equal(seq, 1);

    uint64_t untouched = 777;
    r.payload_len = big;
    assert_int_equal(tally_append(t, &r, &untouched), TALLY_ETOOBIG);
    assert_int_equal(untouched, 777); /* ret_* not written on failure */
    r.payload_len = 3;
    r.key = rkey;
    r.key_len = TALLY_MAX_RKEY + 1;
    assert_int_equal(tally_append(t, &r, &untouched), TALLY_ETOOBIG);
    assert_int_equal(untouched, 777);
    /* reserved types other than the defined ones are refused */
    r.key_len = 0;
    r.type = TALLY_TYPE_RESERVED;
    assert_true(tally_append(t, &r, NULL) < 0);
    r.type = 0xFF10;
    assert_true(tally_append(t, &r, NULL) < 0);
    r.type = 0xFFFF;
    assert_true(tally_append(t, &r, NULL) < 0);
    /* a refused record is not a failed write: the handle goes on and the
     * refused records took no seq */
    r.type = 6;
    r.key_len = TALLY_MAX_RKEY;
    assert_int_equal(tally_append(t, &r, &seq), 0);
    assert_int_equal(seq, 2);
    /* a batch with one oversized record is refused as a whole */
    tally_record_in batch[2] = {
        { .type = 1, .payload = "ok", .payload_len = 2 },
        { .type = 1, .payload = p, .payload_len = big },
    };
    assert_int_equal(tally_append_batch(t, batch, 2, &untouched), TALLY_ETOOBIG);
    assert_int_equal(untouched, 777);
    batch[1].payload_len = 3;
    assert_int_equal(tally_append_batch(t, batch, 2, &seq), 0);
    assert_int_equal(seq, 3);
    assert_int_equal(tally_close(t), 0);

    tally_iter *it = NULL;
    tally_record rd;
    assert_int_equal(tally_iter_open(&it, dir, key, 1, 0), 0);
    assert_int_equal(tally_iter_next(it, &rd), 1);
    assert_int_equal(rd.seq, 1);
    assert_int_equal(rd.payload_len, TALLY_MAX_PAYLOAD);
    assert_true(memcmp(rd.payload, p, TALLY_MAX_PAYLOAD) == 0);
    assert_int_equal(tally_iter_next(it, &rd), 1);
    assert_int_equal(rd.seq, 2);
    assert_int_equal(rd.key_len, TALLY_MAX_RKEY);
    assert_memory_equal(rd.payload, p, 3);
    assert_int_equal(tally_iter_next(it, &rd), 1);
    assert_int_equal(rd.seq, 3);
    assert_memory_equal(rd.payload, "ok", 2);
    assert_int_equal(tally_iter_next(it, &rd), 1);
    assert_int_equal(rd.seq, 4);
    assert_int_equal(rd.payload_len, 3);
    assert_int_equal(tally_iter_next(it, &rd), 0);
    tally_iter_free(it);
    tally_verify_report vr;
    assert_int_equal(tally_verify(dir, key, &vr), 0);
    assert_int_equal(vr.records, 4);

    free(p);
    free(rkey);
    tu_rmrf(dir);
    free(dir);
}

/* Tiny segments: many files, seqs dense across them, each file named by its
 * segment number (FORMAT.md §1), the chain continuous. */
static void rollover(void **state)
{
    const combo *c = *state;
    uint8_t key[TALLY_KEY_BYTES];
    tu_key(key, 3);
    char *dir = tu_mkdtemp("roll");
    tally_options o = tu_opts(key);
    o.cipher = c->cipher;
    o.compress = c->compress;
    o.segment_size = 4096;
    assert_int_equal(tally_init(dir, &o), 0);
    o.sync = TALLY_SYNC_NONE;
    tally *t = NULL;
    assert_int_equal(tally_open(&t, dir, &o, NULL), 0);
    enum { N = 600 };
    char buf[128];
    for (int i = 1; i <= N; i++) {
        snprintf(buf, sizeof buf, "record %04d ......................................................"
                 "..................", i);
        assert_int_equal(tu_append_text(t, 9, NULL, buf), (uint64_t)i);
    }
    assert_int_equal(tally_close(t), 0);

    static char names[TU_MAX_FILES][32];
    int nseg = tu_list_segs(dir, names, TU_MAX_FILES);
    assert_true(nseg >= 10);
    for (int i = 0; i < nseg; i++) {
        char want[32];
        snprintf(want, sizeof want, "%016x.seg", i + 1);
        assert_string_equal(names[i], want);
    }

    tally_iter *it = NULL;
    tally_record r;
    assert_int_equal(tally_iter_open(&it, dir, key, 1, 0), 0);
    int seg_idx = 0;
    for (int i = 1; i <= N; i++) {
        assert_int_equal(tally_iter_next(it, &r), 1);
        assert_int_equal(r.seq, (uint64_t)i);
        snprintf(buf, sizeof buf, "record %04d", i);
        assert_memory_equal(r.payload, buf, strlen(buf));
        /* files are visited in order, each one once */
        if (strcmp(r.segment, names[seg_idx]) != 0) {
            seg_idx++;
            assert_true(seg_idx < nseg);
            assert_string_equal(r.segment, names[seg_idx]);
            assert_int_equal(r.offset, 160); /* first frame after the header */
        }
    }
    assert_int_equal(tally_iter_next(it, &r), 0);
    tally_iter_free(it);
    /* the last file may hold no record (started when the previous filled) */
    assert_true(seg_idx >= nseg - 2);

    tally_verify_report vr;
    int rc = tally_verify(dir, key, &vr);
    if (rc != 0)
        fail_msg("verify: %s: %s", tally_strerror(rc), vr.message);
    assert_int_equal(vr.records, N);
    assert_int_equal(vr.segments, (uint64_t)nseg);
    tu_rmrf(dir);
    free(dir);
}

static void read_seg_header(const char *dir, const char *name, uint64_t *first_seq,
                            uint8_t prev_link[32], uint8_t jid[32])
{
    char p[PATH_MAX];
    size_t len;
    tu_path(p, sizeof p, dir, name);
    uint8_t *b = tu_read(p, &len);
    assert_non_null(b);
    assert_true(len >= 160);
    assert_memory_equal(b, "TALLYSEG", 8);
    uint64_t s = 0;
    for (int i = 7; i >= 0; i--)
        s = s << 8 | b[32 + i];
    *first_seq = s;
    memcpy(prev_link, b + 96, 32);
    memcpy(jid, b + 64, 32);
    free(b);
}

/* A reopen continues the chain: the new segment's prev_link is the head
 * before close, its first_seq the next seq; an open without appends leaves
 * nothing that breaks the chain. */
static void reopen_chain(void **state)
{
    const combo *c = *state;
    uint8_t key[TALLY_KEY_BYTES];
    tu_key(key, 4);
    char *dir = tu_mkdtemp("reopen");
    tally_options o = tu_opts(key);
    o.cipher = c->cipher;
    o.compress = c->compress;
    assert_int_equal(tally_init(dir, &o), 0);
    uint8_t jid[32], gen_jid[32];
    assert_int_equal(tally_journal_id(key, "default", gen_jid), 0);

    o.sync = TALLY_SYNC_ALWAYS;
    tally *t = NULL;
    tally_head_info h1, h2, rh;
    assert_int_equal(tally_open(&t, dir, &o, NULL), 0);
    tally_id(t, jid);
    assert_memory_equal(jid, gen_jid, 32);
    /* empty journal: head (0, G) */
    assert_int_equal(tally_head(t, &h1), 0);
    assert_int_equal(h1.seq, 0);
    for (int i = 0; i < 3; i++)
        tu_append_text(t, 1, "a", "first open");
    assert_int_equal(tally_head(t, &h1), 0);
    assert_int_equal(h1.seq, 3);
    assert_int_equal(h1.durable_seq, 3);
    assert_int_equal(tally_read_head(dir, &rh), 0);
    assert_int_equal(rh.seq, 3);
    assert_memory_equal(rh.link, h1.link, 32);
    assert_int_equal(tally_close(t), 0);

    /* open, nothing appended, close: the chain must stay whole */
    assert_int_equal(tally_open(&t, dir, &o, NULL), 0);
    assert_int_equal(tally_head(t, &h2), 0);
    assert_int_equal(h2.seq, 3);
    assert_memory_equal(h2.link, h1.link, 32);
    assert_int_equal(tally_close(t), 0);
    assert_int_equal(tu_count_records(dir, key), 3);

    assert_int_equal(tally_open(&t, dir, &o, NULL), 0);
    static char names[TU_MAX_FILES][32];
    int nseg = tu_list_segs(dir, names, TU_MAX_FILES);
    assert_true(nseg >= 2);
    uint64_t fs;
    uint8_t prev[32], sjid[32];
    read_seg_header(dir, names[nseg - 1], &fs, prev, sjid);
    assert_int_equal(fs, 4);
    assert_memory_equal(prev, h1.link, 32);
    assert_memory_equal(sjid, jid, 32);
    assert_int_equal(tu_append_text(t, 2, NULL, "second open"), 4);
    assert_int_equal(tu_append_text(t, 2, NULL, "second open"), 5);
    assert_int_equal(tally_head(t, &h2), 0);
    assert_int_equal(tally_read_head(dir, &rh), 0);
    assert_int_equal(rh.seq, 5);
    assert_memory_equal(rh.link, h2.link, 32);
    assert_int_equal(tally_close(t), 0);

    /* iterate across the segments, check the chain by hand */
    tally_iter *it = NULL;
    tally_record r;
    uint8_t id2[32];
    assert_int_equal(tally_iter_open(&it, dir, key, 1, 0), 0);
    tally_iter_id(it, id2);
    assert_memory_equal(id2, jid, 32);
    for (int i = 1; i <= 5; i++) {
        assert_int_equal(tally_iter_next(it, &r), 1);
        assert_int_equal(r.seq, (uint64_t)i);
        assert_int_equal(r.type, i <= 3 ? 1 : 2);
        if (i == 3)
            assert_memory_equal(r.link, h1.link, 32);
        if (i == 4)
            assert_string_not_equal(r.segment, names[0]);
    }
    assert_memory_equal(r.link, h2.link, 32);
    assert_int_equal(tally_iter_next(it, &r), 0);
    tally_iter_free(it);

    tally_verify_report vr;
    assert_int_equal(tally_verify(dir, NULL, &vr), 0);
    assert_int_equal(vr.records, 5);
    assert_memory_equal(vr.head, h2.link, 32);
    assert_memory_equal(vr.journal_id, jid, 32);
    tu_rmrf(dir);
    free(dir);
}

static void iter_from_seq(void **state)
{
    (void)state;
    uint8_t key[TALLY_KEY_BYTES];
    tu_key(key, 5);
    char *dir = tu_mkdtemp("from");
    tally_options o = tu_opts(key);
    o.segment_size = 4096;
    assert_int_equal(tally_init(dir, &o), 0);
    o.sync = TALLY_SYNC_NONE;
    tally *t = NULL;
    assert_int_equal(tally_open(&t, dir, &o, NULL), 0);
    char buf[300];
    enum { N = 60 };
    for (int i = 1; i <= N; i++) {
        snprintf(buf, sizeof buf, "%d:%0250d", i, i);
        tu_append_text(t, 1, NULL, buf);
    }
    assert_int_equal(tally_close(t), 0);

    const uint64_t froms[] = { 0, 1, 2, 17, 30, N - 1, N };
    for (size_t k = 0; k < sizeof froms / sizeof froms[0]; k++) {
        for (int keyed = 0; keyed < 2; keyed++) {
            tally_iter *it = NULL;
            tally_record r;
            assert_int_equal(tally_iter_open(&it, dir, keyed ? key : NULL, froms[k], 0), 0);
            uint64_t want = froms[k] ? froms[k] : 1;
            int rc;
            while ((rc = tally_iter_next(it, &r)) == 1) {
                assert_int_equal(r.seq, want);
                if (keyed) {
                    snprintf(buf, sizeof buf, "%d:", (int)want);
                    assert_memory_equal(r.payload, buf, strlen(buf));
                }
                want++;
            }
            assert_int_equal(rc, 0);
            assert_int_equal(want, N + 1);
            tally_iter_free(it);
        }
    }
    /* past the end: nothing, no error */
    tally_iter *it = NULL;
    tally_record r;
    assert_int_equal(tally_iter_open(&it, dir, key, N + 1, 0), 0);
    assert_int_equal(tally_iter_next(it, &r), 0);
    tally_iter_free(it);
    tu_rmrf(dir);
    free(dir);
}

/* FORMAT.md §2: the id derives from (key, name) unless given. */
static void identity(void **state)
{
    (void)state;
    uint8_t key[TALLY_KEY_BYTES], id_def[32], id_named[32], id[32], given[32];
    tu_key(key, 6);
    assert_int_equal(tally_journal_id(key, "default", id_def), 0);
    assert_int_equal(tally_journal_id(key, "orders", id_named), 0);
    assert_memory_not_equal(id_def, id_named, 32);
    memset(given, 0xA5, sizeof given);

    char *dir = tu_mkdtemp("id");
    char sub[PATH_MAX];
    const char *names[] = { NULL, "orders", "explicit" };
    for (int k = 0; k < 3; k++) {
        snprintf(sub, sizeof sub, "%s/j%d", dir, k);
        tally_options o = tu_opts(key);
        o.name = names[k];
        if (k == 2)
            o.journal_id = given;
        assert_int_equal(tally_init(sub, &o), 0);
        tally *t = NULL;
        assert_int_equal(tally_open(&t, sub, &o, NULL), 0);
        tally_id(t, id);
        assert_memory_equal(id, k == 0 ? id_def : k == 1 ? id_named : given, 32);
        assert_int_equal(tally_close(t), 0);
    }
    tu_rmrf(dir);
    free(dir);
}

static combo c_aes = { TALLY_CIPHER_AES256GCM, 0 };
static combo c_aes_z = { TALLY_CIPHER_AES256GCM, 1 };
static combo c_xc = { TALLY_CIPHER_XCHACHA20POLY1305, 0 };
static combo c_xc_z = { TALLY_CIPHER_XCHACHA20POLY1305, 1 };

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_prestate(roundtrip, &c_aes),
        cmocka_unit_test_prestate(roundtrip, &c_aes_z),
        cmocka_unit_test_prestate(roundtrip, &c_xc),
        cmocka_unit_test_prestate(roundtrip, &c_xc_z),
        cmocka_unit_test(limits),
        cmocka_unit_test_prestate(rollover, &c_aes),
        cmocka_unit_test_prestate(rollover, &c_xc_z),
        cmocka_unit_test_prestate(reopen_chain, &c_aes),
        cmocka_unit_test_prestate(reopen_chain, &c_xc_z),
        cmocka_unit_test(iter_from_seq),
        cmocka_unit_test(identity),
    };
    return cmocka_run_group_tests(tests, NULL, tu_cleanup);
}
