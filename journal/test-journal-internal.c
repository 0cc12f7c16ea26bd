/*
 * test-journal-internal.c — checks of the journal core that need its
 * internals (tally-internal.h) or states only another module or a crash
 * produces: PRUNED frames (written by the compactor), files merged by the
 * compactor with their leftovers, a torn segment followed by a header-only
 * one (a crash during a background seal), a failed background seal, and a
 * live reader that follows a writer across segments. The public API is
 * tested in tests/journal/.
 */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "tally-internal.h"

static uint8_t key[TALLY_KEY_BYTES];

static char *mkdir_tmp(void)
{
    const char *base = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
    size_t n = strlen(base) + 32;
    char *p = malloc(n);
    if (!p)
        abort();
    snprintf(p, n, "%s/tally-int-XXXXXX", base);
    assert_non_null(mkdtemp(p));
    strcat(p, "/j");
    return p;
}

static void rm_rf(char *dir)
{
    char cmd[600];
    char *slash = strrchr(dir, '/');
    *slash = 0; /* the mkdtemp parent */
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    assert_int_equal(system(cmd), 0);
    free(dir);
}

static void path_of(char *out, const char *dir, const char *name)
{
    snprintf(out, 512, "%s/%s", dir, name);
}

static uint8_t *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    assert_int_equal(fseek(f, 0, SEEK_END), 0);
    long n = ftell(f);
    assert_true(n >= 0);
    rewind(f);
    uint8_t *b = malloc((size_t)n + 1);
    assert_non_null(b);
    assert_int_equal(fread(b, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    *len = (size_t)n;
    return b;
}

static void spit(const char *path, const void *b, size_t n)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(b, 1, n, f), n);
    fclose(f);
}

static tally_options opts(tally_sync_policy sync, uint64_t segsize)
{
    tally_options o;
    memset(&o, 0, sizeof o);
    o.master_key = key;
    o.sync = sync;
    o.segment_size = segsize;
    return o;
}

/* A journal of n records "record i" over segments of segsize bytes. */
static char *make_journal(int n, uint64_t segsize)
{
    char *dir = mkdir_tmp();
    tally_options o = opts(TALLY_SYNC_NONE, segsize);
    assert_int_equal(tally_init(dir, &o), 0);
    tally *t;
    assert_int_equal(tally_open(&t, dir, &o, NULL), 0);
    for (int i = 1; i <= n; i++) {
        char buf[64];
        int len = snprintf(buf, sizeof buf, "record %d", i);
        tally_record_in r = { .type = 7, .payload = buf,
                              .payload_len = (size_t)len };
        uint64_t seq;
        assert_int_equal(tally_append(t, &r, &seq), 0);
        assert_int_equal(seq, (uint64_t)i);
    }
    assert_int_equal(tally_close(t), 0);
    return dir;
}

static int nsegfiles(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY);
    assert_true(fd >= 0);
    char **names;
    size_t n;
    assert_int_equal(ti_seg_list(fd, &names, &n), 0);
    ti_seg_list_free(names, n);
    close(fd);
    return (int)n;
}

/* Replaces the frame of seq 2 in the first file by its PRUNED form
 * (FORMAT.md §4.2): every link still verifies, with and without the key. */
static void pruned_frame(void **state)
{
    (void)state;
    char *dir = make_journal(4, 0);
    char p[512];
    path_of(p, dir, "0000000000000001.seg");
    size_t len;
    uint8_t *d = slurp(p, &len);
    const char *why;
    ti_frame_hdr h;
    uint64_t off = TF_SEG_HEADER_BYTES;
    assert_int_equal(ti_frame_header_parse(d + off, 1, &h, &why), 0);
    off += ti_frame_len(&h);
    assert_int_equal(ti_frame_header_parse(d + off, 2, &h, &why), 0);
    uint8_t rh[32];
    assert_int_equal(ti_frame_record_hash(d + off, &h, rh, &why), 0);
    uint8_t nf[TF_FRAME_OVERHEAD + TF_PRUNED_BODY];
    ti_frame_hdr ph = h;
    ph.kind = TF_KIND_PRUNED;
    ph.flags = 0;
    ph.body_len = TF_PRUNED_BODY;
    ti_frame_header_encode(nf, &ph);
    memcpy(nf + 32, d + off, 32);
    memcpy(nf + 64, rh, 32);
    memcpy(nf + 96, d + off + ti_frame_len(&h) - 32, 32);
    uint8_t *out = malloc(len + sizeof nf);
    assert_non_null(out);
    size_t o = 0;
    memcpy(out, d, off);
    o += off;
    memcpy(out + o, nf, sizeof nf);
    o += sizeof nf;
    size_t rest = len - off - ti_frame_len(&h);
    memcpy(out + o, d + off + ti_frame_len(&h), rest);
    o += rest;
    spit(p, out, o);

    tally_iter *it;
    tally_record r;
    assert_int_equal(tally_iter_open(&it, dir, key, 0, 0), 0);
    for (uint64_t s = 1; s <= 4; s++) {
        assert_int_equal(tally_iter_next(it, &r), 1);
        assert_int_equal(r.seq, s);
        assert_int_equal(r.kind, s == 2 ? TF_KIND_PRUNED : TF_KIND_SEALED);
        assert_int_equal(r.decrypted, s == 2 ? 0 : 1);
        if (s == 2)
            assert_memory_equal(r.record_hash, rh, 32);
    }
    assert_int_equal(tally_iter_next(it, &r), 0);
    tally_iter_free(it);
    tally_verify_report vr;
    assert_int_equal(tally_verify(dir, key, &vr), 0);
    assert_int_equal(vr.pruned, 1);
    assert_int_equal(vr.records, 4);
    assert_int_equal(tally_verify(dir, NULL, &vr), 0);

    /* The original header inside must match the outer one. */
    nf[32 + 16] ^= 1; /* its ts_ns */
    memcpy(out + off, nf, sizeof nf);
    spit(p, out, o);
    assert_int_equal(tally_verify(dir, NULL, &vr), TALLY_EINTEGRITY);
    assert_int_equal(vr.seq, 2);
    free(out);
    free(d);
    rm_rf(dir);
}

/* Segments 1 and 2 merged into file 1 by a compaction that stopped before
 * it removed file 2: readers skip the leftover, the writer carries on. */
static void merged_file_with_leftover(void **state)
{
    (void)state;
    char *dir = make_journal(150, 4096);
    assert_true(nsegfiles(dir) >= 3);
    char p1[512], p2[512];
    path_of(p1, dir, "0000000000000001.seg");
    path_of(p2, dir, "0000000000000002.seg");
    size_t l1, l2;
    uint8_t *a = slurp(p1, &l1), *b = slurp(p2, &l2);
    uint8_t *m = malloc(l1 + l2);
    assert_non_null(m);
    memcpy(m, a, l1);
    memcpy(m + l1, b, l2);
    spit(p1, m, l1 + l2);
    tally_verify_report vr;
    assert_int_equal(tally_verify(dir, key, &vr), 0);
    assert_int_equal(vr.records, 150);
    tally_options o = opts(TALLY_SYNC_ALWAYS, 4096);
    tally *t;
    assert_int_equal(tally_open(&t, dir, &o, NULL), 0);
    tally_record_in r = { .type = 1, .payload = "after", .payload_len = 5 };
    uint64_t seq;
    assert_int_equal(tally_append(t, &r, &seq), 0);
    assert_int_equal(seq, 151);
    assert_int_equal(tally_close(t), 0);
    assert_int_equal(tally_verify(dir, key, &vr), 0);
    assert_int_equal(vr.records, 151);
    free(a);
    free(b);
    free(m);
    rm_rf(dir);
}

/* A crash while a full segment was being sealed in the background: the
 * next segment's file exists with its header only, the sealed one is torn.
 * Recovery removes the empty one and cuts the torn tail (FORMAT.md §6). */
static void torn_segment_before_empty_one(void **state)
{
    (void)state;
    char *dir = make_journal(100, 4096);
    int files = nsegfiles(dir);
    tally_verify_report vr;
    assert_int_equal(tally_verify(dir, key, &vr), 0);
    char last[32], next[32], p[512];
    uint64_t last_no = (uint64_t)files;
    ti_seg_name(last, last_no);
    ti_seg_name(next, last_no + 1);

    int dfd = open(dir, O_RDONLY | O_DIRECTORY);
    assert_true(dfd >= 0);
    ti_meta m;
    assert_int_equal(ti_meta_read(dfd, key, &m, NULL, 0), 0);
    close(dfd);
    ti_seg_hdr h;
    memset(&h, 0, sizeof h);
    h.cipher = m.cipher;
    h.epoch = 1;
    h.segment_no = last_no + 1;
    h.first_seq = vr.last_seq + 1;
    memcpy(h.jid, m.jid, 32);
    memcpy(h.prev_link, vr.head, 32);
    ti_meta_free(&m);
    uint8_t hdr[TF_SEG_HEADER_BYTES];
    ti_seg_header_encode(hdr, &h);
    path_of(p, dir, next);
    spit(p, hdr, sizeof hdr);
    path_of(p, dir, last);
    struct stat st;
    assert_int_equal(stat(p, &st), 0);
    assert_int_equal(truncate(p, st.st_size - 5), 0);

    tally_options o = opts(TALLY_SYNC_NONE, 4096);
    tally *t;
    tally_recovery rec;
    assert_int_equal(tally_open(&t, dir, &o, &rec), 0);
    assert_int_equal(rec.cut_first_seq, vr.last_seq);
    assert_string_equal(rec.segment, last);
    tally_head_info hi;
    assert_int_equal(tally_head(t, &hi), 0);
    assert_int_equal(hi.seq, vr.last_seq - 1);
    assert_int_equal(tally_close(t), 0);
    assert_int_equal(tally_verify(dir, key, &vr), 0);
    assert_int_equal(vr.records, 99);
    rm_rf(dir);
}

/* A failed fdatasync of a background seal poisons the handle. */
static void background_seal_failure_poisons(void **state)
{
    (void)state;
    char *dir = mkdir_tmp();
    tally_options o = opts(TALLY_SYNC_NONE, 4096);
    assert_int_equal(tally_init(dir, &o), 0);
    tally *t;
    assert_int_equal(tally_open(&t, dir, &o, NULL), 0);
    tally_debug_fail(t, TALLY_DEBUG_FSYNC, 0, EIO);
    char buf[200];
    memset(buf, 'x', sizeof buf);
    tally_record_in r = { .type = 1, .payload = buf, .payload_len = sizeof buf };
    int rc = 0;
    for (int i = 0; i < 200 && rc == 0; i++)
        rc = tally_append(t, &r, NULL);
    if (rc == 0)
        rc = tally_sync(t, 0);
    assert_true(rc == -EIO || rc == TALLY_EPOISONED);
    assert_int_equal(tally_append(t, &r, NULL), TALLY_EPOISONED);
    assert_int_equal(tally_sync(t, 0), TALLY_EPOISONED);
    assert_int_equal(tally_close(t), TALLY_EPOISONED);
    /* Reopening recovers whatever reached the disk. */
    assert_int_equal(tally_open(&t, dir, &o, NULL), 0);
    assert_int_equal(tally_close(t), 0);
    tally_verify_report vr;
    assert_int_equal(tally_verify(dir, key, &vr), 0);
    rm_rf(dir);
}

/* A live reader (TOLERATE_TAIL) gets 0 at the end and, asked again, the
 * records appended since, also across new segment files. */
static void live_reader_follows(void **state)
{
    (void)state;
    char *dir = mkdir_tmp();
    tally_options o = opts(TALLY_SYNC_ALWAYS, 4096);
    assert_int_equal(tally_init(dir, &o), 0);
    tally *t;
    assert_int_equal(tally_open(&t, dir, &o, NULL), 0);
    tally_iter *it;
    assert_int_equal(tally_iter_open(&it, dir, key, 0, TALLY_ITER_TOLERATE_TAIL),
                     0);
    tally_record rec;
    assert_int_equal(tally_iter_next(it, &rec), 0);
    uint64_t seen = 0;
    char buf[300];
    memset(buf, 'y', sizeof buf);
    for (int round = 0; round < 5; round++) {
        for (int i = 0; i < 20; i++) {
            tally_record_in r = { .type = 3, .payload = buf,
                                  .payload_len = sizeof buf };
            assert_int_equal(tally_append(t, &r, NULL), 0);
        }
        int rc;
        while ((rc = tally_iter_next(it, &rec)) == 1) {
            assert_int_equal(rec.seq, seen + 1);
            assert_int_equal(rec.decrypted, 1);
            assert_int_equal(rec.payload_len, sizeof buf);
            seen++;
        }
        assert_int_equal(rc, 0);
        assert_int_equal(seen, (uint64_t)(round + 1) * 20);
    }
    tally_iter_free(it);
    assert_int_equal(tally_close(t), 0);
    assert_true(nsegfiles(dir) > 5);
    rm_rf(dir);
}

/* The last file of a writer that crashed ends in the zero bytes it had
 * reserved (FORMAT.md §4): not a torn tail, and not counted in a cut. */
static void reserved_zero_tail(void **state)
{
    (void)state;
    char *dir = make_journal(10, 0);
    char p[512];
    path_of(p, dir, "0000000000000001.seg");
    size_t len;
    uint8_t *d = slurp(p, &len);
    uint8_t *z = calloc(1, len + 65536);
    assert_non_null(z);
    memcpy(z, d, len);
    spit(p, z, len + 65536);
    tally_verify_report vr;
    assert_int_equal(tally_verify(dir, key, &vr), 0);
    assert_int_equal(vr.records, 10);
    assert_int_equal(vr.bytes, len);
    tally_head_info hi;
    assert_int_equal(tally_read_head(dir, &hi), 0);
    assert_int_equal(hi.seq, 10);

    /* The last frame half written: its second half still zero. */
    memset(z + len - 40, 0, 40);
    spit(p, z, len + 65536);
    assert_true(tally_verify(dir, key, &vr) < 0);
    assert_int_equal(tally_read_head(dir, &hi), 0);
    assert_int_equal(hi.seq, 9);
    tally_options o = opts(TALLY_SYNC_ALWAYS, 0);
    tally *t;
    tally_recovery rec;
    assert_int_equal(tally_open(&t, dir, &o, &rec), 0);
    assert_int_equal(rec.cut_first_seq, 10);
    assert_true(rec.cut_bytes > 0 && rec.cut_bytes <= 4096); /* not the 64 KiB */
    assert_int_equal(tally_close(t), 0);
    assert_int_equal(tally_verify(dir, key, &vr), 0);
    assert_int_equal(vr.records, 9);

    /* Only zeros after the last frame: nothing is cut, the tail goes. */
    spit(p, z, len + 65536);
    memcpy(z, d, len);
    spit(p, z, len + 65536);
    assert_int_equal(tally_open(&t, dir, &o, &rec), 0);
    assert_int_equal(rec.cut_bytes, 0);
    assert_int_equal(rec.cut_first_seq, 0);
    assert_int_equal(tally_close(t), 0);
    struct stat st;
    assert_int_equal(stat(p, &st), 0);
    assert_int_equal((size_t)st.st_size, len);
    free(z);
    free(d);
    rm_rf(dir);
}

int main(void)
{
    for (int i = 0; i < (int)sizeof key; i++)
        key[i] = (uint8_t)(0x40 + i);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(pruned_frame),
        cmocka_unit_test(merged_file_with_leftover),
        cmocka_unit_test(torn_segment_before_empty_one),
        cmocka_unit_test(background_seal_failure_poisons),
        cmocka_unit_test(live_reader_follows),
        cmocka_unit_test(reserved_zero_tail),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
