/*
 * ctu.c — see ctu.h.
 */
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "ctu.h"

static uint32_t rnd(uint32_t *s)
{
    /* xorshift32: reproducible across platforms */
    uint32_t x = *s;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    return *s = x;
}

void ctu_generate(ctu_work *w, uint64_t n, unsigned nkeys, uint32_t seed,
                  const uint64_t *snapshots)
{
    w->r = calloc(n, sizeof *w->r);
    assert_non_null(w->r);
    w->n = n;
    uint32_t s = seed ? seed : 1;
    for (uint64_t i = 1; i <= n; i++) {
        ctu_rec *r = &w->r[i - 1];
        r->ts_ns = CTU_TS0 + i * CTU_TS_STEP;
        bool snap = false;
        for (const uint64_t *p = snapshots; p && *p; p++)
            snap |= *p == i;
        uint32_t x = rnd(&s) % 100;
        if (snap) {
            r->type = TALLY_TYPE_SNAPSHOT;
            r->payload_len = (size_t)snprintf(r->payload, sizeof r->payload,
                                              "state at %llu",
                                              (unsigned long long)i);
        } else if (x < 3) {
            r->type = x < 2 ? TALLY_TYPE_CHECKPOINT : TALLY_TYPE_COMPACTION;
            r->payload_len = (size_t)snprintf(r->payload, sizeof r->payload,
                                              "protected %llu",
                                              (unsigned long long)i);
        } else if (x < 12) {
            r->type = 5; /* keyless */
            r->payload_len = (size_t)snprintf(r->payload, sizeof r->payload,
                                              "event %llu",
                                              (unsigned long long)i);
        } else if (x < 20) {
            r->type = 2;
            snprintf(r->key, sizeof r->key, "k%u", rnd(&s) % nkeys);
            r->tomb = true;
        } else {
            r->type = 1;
            snprintf(r->key, sizeof r->key, "k%u", rnd(&s) % nkeys);
            int len = snprintf(r->payload, sizeof r->payload,
                               "%s=%llu;", r->key, (unsigned long long)i);
            size_t pad = 20 + rnd(&s) % 300;
            for (size_t j = 0; j < pad && (size_t)len + j < sizeof r->payload;
                 j++)
                r->payload[len + (int)j] = (char)('a' + (i + j) % 26);
            r->payload_len = (size_t)len + pad;
            if (r->payload_len > sizeof r->payload)
                r->payload_len = sizeof r->payload;
        }
    }
}

void ctu_work_free(ctu_work *w)
{
    free(w->r);
    w->r = NULL;
}

void ctu_append(tally *t, const ctu_work *w, uint64_t from, uint64_t to)
{
    for (uint64_t i = from; i <= to; i++) {
        const ctu_rec *r = &w->r[i - 1];
        tally_record_in in;
        memset(&in, 0, sizeof in);
        in.type = r->type;
        in.key = r->key[0] ? r->key : NULL;
        in.key_len = strlen(r->key);
        in.payload = r->payload_len ? r->payload : NULL;
        in.payload_len = r->payload_len;
        in.ts_ns = r->ts_ns;
        uint64_t seq = 0;
        int rc = tally_append(t, &in, &seq);
        if (rc != 0)
            fail_msg("append %llu: %s", (unsigned long long)i,
                     tally_strerror(rc));
        assert_int_equal(seq, i);
    }
}

static bool protected_type(uint16_t type)
{
    return type == TALLY_TYPE_CHECKPOINT || type == TALLY_TYPE_COMPACTION;
}

void ctu_model(const ctu_work *w, uint64_t upto, uint64_t retention_ns,
               uint64_t now_ns, ctu_expect *e)
{
    memset(e, 0, sizeof *e);
    e->pruned = calloc(upto + 2, sizeof *e->pruned);
    assert_non_null(e->pruned);
    for (uint64_t i = 1; i <= upto; i++)
        if (w->r[i - 1].type == TALLY_TYPE_SNAPSHOT)
            e->snapshot = i;
    for (uint64_t i = 1; i <= upto; i++) {
        const ctu_rec *r = &w->r[i - 1];
        if (protected_type(r->type))
            continue;
        if (i < e->snapshot) {
            e->pruned[i] = true;
            e->by_snapshot++;
            continue;
        }
        if (i == e->snapshot || !r->key[0] || r->type == TALLY_TYPE_SNAPSHOT)
            continue;
        bool later = false;
        for (uint64_t j = i + 1; j <= upto && !later; j++) {
            const ctu_rec *q = &w->r[j - 1];
            later = !protected_type(q->type) &&
                    q->type != TALLY_TYPE_SNAPSHOT &&
                    strcmp(q->key, r->key) == 0;
        }
        if (later) {
            e->pruned[i] = true;
            e->superseded++;
        } else if (r->tomb && retention_ns && now_ns > r->ts_ns &&
                   now_ns - r->ts_ns > retention_ns) {
            e->pruned[i] = true;
            e->tombstones++;
        }
    }
    e->count = e->by_snapshot + e->superseded + e->tombstones;
}

void ctu_expect_free(ctu_expect *e)
{
    free(e->pruned);
    e->pruned = NULL;
}

static uint8_t *dup_bytes(const uint8_t *p, size_t n)
{
    uint8_t *d = malloc(n ? n : 1);
    assert_non_null(d);
    if (n)
        memcpy(d, p, n);
    return d;
}

void ctu_picture(const char *dir, const uint8_t *key, ctu_pic *ret)
{
    tally_iter *it = NULL;
    int rc = tally_iter_open(&it, dir, key, 0, 0);
    if (rc < 0)
        fail_msg("iter_open %s: %s", dir, tally_strerror(rc));
    size_t cap = 256;
    ctu_pic p = { calloc(cap, sizeof(ctu_entry)), 0 };
    assert_non_null(p.e);
    tally_record r;
    while ((rc = tally_iter_next(it, &r)) == 1) {
        assert_int_equal(r.seq, p.n + 1);
        if (r.seq >= cap) {
            cap *= 2;
            p.e = realloc(p.e, cap * sizeof(ctu_entry));
            assert_non_null(p.e);
        }
        ctu_entry *e = &p.e[r.seq];
        memset(e, 0, sizeof *e);
        e->kind = r.kind;
        e->decrypted = r.decrypted;
        e->type = r.type;
        e->ts_ns = r.ts_ns;
        memcpy(e->link, r.link, 32);
        memcpy(e->record_hash, r.record_hash, 32);
        e->key = dup_bytes(r.key, r.key_len);
        e->key_len = r.key_len;
        e->payload = dup_bytes(r.payload, r.payload_len);
        e->payload_len = r.payload_len;
        p.n = r.seq;
    }
    if (rc < 0)
        fail_msg("iter_next %s: %s (%s)", dir, tally_strerror(rc),
                 tally_iter_errmsg(it));
    tally_iter_free(it);
    *ret = p;
}

void ctu_pic_free(ctu_pic *p)
{
    for (uint64_t i = 1; i <= p->n; i++) {
        free(p->e[i].key);
        free(p->e[i].payload);
    }
    free(p->e);
    p->e = NULL;
    p->n = 0;
}

void ctu_compare(const ctu_pic *a, const ctu_pic *b, const bool *must,
                 const bool *may)
{
    assert_true(b->n >= a->n);
    for (uint64_t s = 1; s <= a->n; s++) {
        const ctu_entry *x = &a->e[s], *y = &b->e[s];
        if (memcmp(x->link, y->link, 32) != 0)
            fail_msg("seq %llu: link changed", (unsigned long long)s);
        if (memcmp(x->record_hash, y->record_hash, 32) != 0)
            fail_msg("seq %llu: record_hash changed", (unsigned long long)s);
        assert_int_equal(x->ts_ns, y->ts_ns);
        bool pr = y->kind == 3;
        if (may && may[s]) {
            /* either way */
        } else if (pr != (must && must[s])) {
            fail_msg("seq %llu: %s, expected %s", (unsigned long long)s,
                     pr ? "pruned" : "kept",
                     (must && must[s]) ? "pruned" : "kept");
        }
        if (!pr && x->kind != 3) {
            assert_int_equal(x->kind, y->kind);
            assert_int_equal(x->decrypted, y->decrypted);
            assert_int_equal(x->type, y->type);
            assert_int_equal(x->key_len, y->key_len);
            assert_int_equal(x->payload_len, y->payload_len);
            assert_memory_equal(x->key, y->key, x->key_len);
            assert_memory_equal(x->payload, y->payload, x->payload_len);
        }
    }
}

uint64_t ctu_verify_both(const char *dir, const uint8_t *key)
{
    tally_verify_report a, b;
    int rc = tally_verify(dir, key, &a);
    if (rc != 0)
        fail_msg("verify with key: %s: %s", tally_strerror(rc), a.message);
    rc = tally_verify(dir, NULL, &b);
    if (rc != 0)
        fail_msg("verify without key: %s: %s", tally_strerror(rc), b.message);
    assert_int_equal(a.records, b.records);
    assert_int_equal(a.pruned, b.pruned);
    assert_memory_equal(a.head, b.head, 32);
    return a.pruned;
}

tally *ctu_open(const char *dir, const uint8_t *key)
{
    tally_options o = tu_opts(key);
    o.sync = TALLY_SYNC_NONE;
    tally *t = NULL;
    tally_recovery rec;
    int rc = tally_open(&t, dir, &o, &rec);
    if (rc != 0)
        fail_msg("open %s: %s: %s", dir, tally_strerror(rc), rec.message);
    return t;
}

char *ctu_init(const char *tag, const uint8_t *key, uint64_t segsize)
{
    char *dir = tu_mkdtemp(tag);
    tally_options o = tu_opts(key);
    o.segment_size = segsize;
    int rc = tally_init(dir, &o);
    if (rc != 0)
        fail_msg("init %s: %s", dir, tally_strerror(rc));
    return dir;
}

int ctu_count_files(const char *dir)
{
    char names[TU_MAX_FILES][32];
    return tu_list_segs(dir, names, TU_MAX_FILES);
}

uint64_t ctu_dir_bytes(const char *dir)
{
    char names[TU_MAX_FILES][32];
    int n = tu_list_segs(dir, names, TU_MAX_FILES);
    uint64_t sum = 0;
    for (int i = 0; i < n; i++) {
        char p[PATH_MAX];
        tu_path(p, sizeof p, dir, names[i]);
        sum += tu_file_size(p);
    }
    return sum;
}
