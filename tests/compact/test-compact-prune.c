/*
 * test-compact-prune.c — what compaction prunes and keeps, on real journals:
 * a generated workload of keys with overwrites, tombstones, snapshots and
 * protected records gives exactly the pruned set of the model; links,
 * record hashes and the head are unchanged; verify passes with and without
 * the key; small files are merged; the COMPACTION record says what was
 * done; a dry run writes nothing; a damaged file is refused; a second
 * compaction at once is refused; replay starts at the newest snapshot.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ctu.h"
#include "tally-internal.h"

static uint8_t key[TALLY_KEY_BYTES];

/* A journal holding w's records 1..n, all sealed (closed and reopened). */
static char *build(const char *tag, const ctu_work *w, uint64_t segsize)
{
    char *dir = ctu_init(tag, key, segsize);
    tally *t = ctu_open(dir, key);
    ctu_append(t, w, 1, w->n);
    assert_int_equal(tally_close(t), 0);
    return dir;
}

static void check_workload(uint64_t retention_s, const uint64_t *snaps,
                           uint32_t seed)
{
    ctu_work w;
    ctu_generate(&w, 700, 40, seed, snaps);
    char *dir = build("cprune", &w, 4096);
    uint64_t now = CTU_TS0 + (w.n + 1) * CTU_TS_STEP;
    ctu_expect ex;
    ctu_model(&w, w.n, retention_s * CTU_TS_STEP, now, &ex);
    assert_true(ex.count > 0);

    ctu_pic before;
    ctu_picture(dir, key, &before);
    assert_int_equal(before.n, w.n);
    tally_head_info h0;
    assert_int_equal(tally_read_head(dir, &h0), 0);
    int files0 = ctu_count_files(dir);
    uint64_t bytes0 = ctu_dir_bytes(dir);

    tally *t = ctu_open(dir, key);
    tally_compact_options o;
    memset(&o, 0, sizeof o);
    o.tombstone_retention_ns = retention_s * CTU_TS_STEP;
    o.now_ns = now;
    o.target_size = 16384;
    tally_compact_report rep;
    int rc = tally_compact(t, &o, &rep);
    if (rc != 0)
        fail_msg("compact: %s: %s", tally_strerror(rc), rep.message);
    assert_int_equal(rep.records, w.n);
    assert_int_equal(rep.first_seq, 1);
    assert_int_equal(rep.last_seq, w.n);
    assert_int_equal(rep.snapshot_seq, ex.snapshot);
    assert_int_equal(rep.records_pruned, ex.count);
    assert_int_equal(rep.pruned_by_snapshot, ex.by_snapshot);
    assert_int_equal(rep.pruned_superseded, ex.superseded);
    assert_int_equal(rep.pruned_tombstones, ex.tombstones);
    assert_int_equal(rep.already_pruned, 0);
    assert_int_equal(rep.compaction_seq, w.n + 1);
    assert_true(rep.files_after < rep.files_before);
    assert_true(rep.bytes_after < rep.bytes_before);
    assert_true(rep.segments_merged > 0);

    /* A second run finds nothing more to do and writes no record. */
    tally_compact_report rep2;
    assert_int_equal(tally_compact(t, &o, &rep2), 0);
    assert_int_equal(rep2.records_pruned, 0);
    assert_int_equal(rep2.files_rewritten, 0);
    assert_int_equal(rep2.compaction_seq, 0);
    assert_int_equal(rep2.already_pruned, ex.count);
    tally_head_info h1;
    assert_int_equal(tally_head(t, &h1), 0);
    assert_int_equal(h1.seq, w.n + 1);
    assert_int_equal(tally_close(t), 0);

    /* Files: what the report said. The directory also holds the active
     * file with the COMPACTION record. */
    assert_int_equal(ctu_count_files(dir), (int)rep.files_after + 1);
    if (ctu_count_files(dir) >= files0)
        fail_msg("files: %d before, %d after (report %llu -> %llu)", files0, ctu_count_files(dir), (unsigned long long)rep.files_before, (unsigned long long)rep.files_after);
    char names[TU_MAX_FILES][32], p[PATH_MAX];
    int nf = tu_list_segs(dir, names, TU_MAX_FILES);
    tu_path(p, sizeof p, dir, names[nf - 1]);
    assert_int_equal(ctu_dir_bytes(dir) - tu_file_size(p), rep.bytes_after);
    assert_int_equal(bytes0, rep.bytes_before);

    ctu_pic after;
    ctu_picture(dir, key, &after);
    assert_int_equal(after.n, w.n + 1);
    ctu_compare(&before, &after, ex.pruned, NULL);
    assert_int_equal(ctu_verify_both(dir, key), ex.count);
    /* Without the key: the same links, the same pruned frames. */
    ctu_pic keyless;
    ctu_picture(dir, NULL, &keyless);
    for (uint64_t s = 1; s <= w.n; s++) {
        assert_memory_equal(keyless.e[s].link, before.e[s].link, 32);
        assert_int_equal(keyless.e[s].kind == 3, ex.pruned[s]);
    }
    /* The head before is still the link at its seq. */
    assert_memory_equal(after.e[h0.seq].link, h0.link, 32);

    /* The COMPACTION record, readable without the key. */
    const ctu_entry *ce = &keyless.e[w.n + 1];
    assert_int_equal(ce->type, TALLY_TYPE_COMPACTION);
    assert_int_equal(ce->kind, 2);
    tally_compaction_info ci;
    assert_int_equal(tally_compaction_decode(ce->payload, ce->payload_len,
                                             &ci), 0);
    assert_int_equal(ci.flags, 0);
    assert_int_equal(ci.first_seq, 1);
    assert_int_equal(ci.last_seq, w.n);
    assert_memory_equal(ci.last_link, before.e[w.n].link, 32);
    assert_int_equal(ci.snapshot_seq, ex.snapshot);
    assert_int_equal(ci.records_pruned, ex.count);
    assert_int_equal(ci.pruned_by_snapshot, ex.by_snapshot);
    assert_int_equal(ci.pruned_superseded, ex.superseded);
    assert_int_equal(ci.pruned_tombstones, ex.tombstones);
    assert_int_equal(ci.tombstone_retention_ns, o.tombstone_retention_ns);
    assert_int_equal(ci.file_count, rep.files_rewritten);
    /* The ranges cover exactly the pruned seqs. */
    uint64_t covered = 0, prev_last = 0;
    for (uint32_t i = 0; i < ci.range_count; i++) {
        assert_true(ci.ranges[i].first_seq > prev_last);
        for (uint64_t s = ci.ranges[i].first_seq; s <= ci.ranges[i].last_seq;
             s++) {
            assert_true(ex.pruned[s]);
            covered++;
        }
        prev_last = ci.ranges[i].last_seq;
    }
    assert_int_equal(covered, ex.count);
    uint64_t fb = 0, fa = 0, replaced = 0;
    for (uint32_t i = 0; i < ci.file_count; i++) {
        fb += ci.files[i].bytes_before;
        fa += ci.files[i].bytes_after;
        replaced += ci.files[i].files_replaced;
    }
    assert_int_equal(fb, ci.bytes_before);
    assert_int_equal(fa, ci.bytes_after);
    assert_int_equal(ci.bytes_before - ci.bytes_after,
                     rep.bytes_before - rep.bytes_after);
    assert_int_equal(replaced - ci.file_count,
                     rep.files_before - rep.files_after);
    tally_compaction_info_free(&ci);

    ctu_pic_free(&keyless);
    ctu_pic_free(&after);
    ctu_pic_free(&before);
    ctu_expect_free(&ex);
    ctu_work_free(&w);
    tu_rmrf(dir);
    free(dir);
}

static void workload_with_snapshot(void **state)
{
    (void)state;
    const uint64_t snaps[] = { 150, 260, 0 };
    check_workload(100, snaps, 7);
}

static void workload_without_snapshot(void **state)
{
    (void)state;
    check_workload(200, NULL, 11);
}

static void tombstones_kept_without_retention(void **state)
{
    (void)state;
    ctu_work w;
    ctu_generate(&w, 400, 15, 3, NULL);
    ctu_expect ex;
    ctu_model(&w, w.n, 0, 0, &ex);
    assert_int_equal(ex.tombstones, 0);
    char *dir = build("ctomb", &w, 4096);
    tally *t = ctu_open(dir, key);
    tally_compact_report rep;
    assert_int_equal(tally_compact(t, NULL, &rep), 0);
    assert_int_equal(rep.records_pruned, ex.count);
    assert_int_equal(rep.pruned_tombstones, 0);
    /* Later, with a retention every tombstone is past: the newest
     * tombstones go too. */
    ctu_expect ex2;
    uint64_t now = CTU_TS0 + (w.n + 10) * CTU_TS_STEP;
    ctu_model(&w, w.n, 1, now, &ex2);
    assert_true(ex2.tombstones > 0);
    tally_compact_options o;
    memset(&o, 0, sizeof o);
    o.tombstone_retention_ns = 1;
    o.now_ns = now;
    assert_int_equal(tally_compact(t, &o, &rep), 0);
    assert_int_equal(rep.records_pruned, ex2.tombstones);
    assert_int_equal(rep.pruned_tombstones, ex2.tombstones);
    assert_int_equal(rep.already_pruned, ex.count);
    assert_int_equal(tally_close(t), 0);
    assert_int_equal(ctu_verify_both(dir, key), ex2.count);
    ctu_expect_free(&ex2);
    ctu_expect_free(&ex);
    ctu_work_free(&w);
    tu_rmrf(dir);
    free(dir);
}

static void dry_run_writes_nothing(void **state)
{
    (void)state;
    const uint64_t snaps[] = { 90, 0 };
    ctu_work w;
    ctu_generate(&w, 300, 20, 5, snaps);
    char *dir = build("cdry", &w, 4096);
    tally *t = ctu_open(dir, key);
    tu_snap *s0 = tu_snap_take(dir);
    tally_compact_options o;
    memset(&o, 0, sizeof o);
    o.dry_run = 1;
    tally_compact_report dry, real;
    assert_int_equal(tally_compact(t, &o, &dry), 0);
    assert_int_equal(dry.dry_run, 1);
    assert_true(dry.records_pruned > 0);
    assert_int_equal(dry.compaction_seq, 0);
    assert_int_equal(dry.bytes_written, 0);
    tu_snap *s1 = tu_snap_take(dir);
    assert_int_equal(s0->n, s1->n);
    for (int i = 0; i < s0->n; i++) {
        assert_string_equal(s0->name[i], s1->name[i]);
        assert_int_equal(s0->len[i], s1->len[i]);
        assert_memory_equal(s0->data[i], s1->data[i], s0->len[i]);
    }
    o.dry_run = 0;
    assert_int_equal(tally_compact(t, &o, &real), 0);
    assert_int_equal(real.records_pruned, dry.records_pruned);
    assert_int_equal(real.files_after, dry.files_after);
    assert_int_equal(real.bytes_after, dry.bytes_after);
    assert_int_equal(real.segments_merged, dry.segments_merged);
    assert_int_equal(tally_close(t), 0);
    tu_snap_free(s0);
    tu_snap_free(s1);
    ctu_work_free(&w);
    tu_rmrf(dir);
    free(dir);
}

/* Merging alone (nothing to prune), and pruning alone (no_merge). */
static void merge_only_and_prune_only(void **state)
{
    (void)state;
    char *dir = ctu_init("cmerge", key, 4096);
    tally *t = ctu_open(dir, key);
    for (int i = 0; i < 200; i++) {
        char buf[64];
        snprintf(buf, sizeof buf, "event number %d with some padding", i);
        tu_append_text(t, 3, NULL, buf);
    }
    assert_int_equal(tally_close(t), 0);
    ctu_pic before;
    ctu_picture(dir, key, &before);
    int files0 = ctu_count_files(dir);
    assert_true(files0 > 4);
    t = ctu_open(dir, key);
    tally_compact_options o;
    memset(&o, 0, sizeof o);
    o.no_merge = 1;
    tally_compact_report rep;
    assert_int_equal(tally_compact(t, &o, &rep), 0);
    assert_int_equal(rep.files_rewritten, 0); /* nothing to prune */
    assert_int_equal(rep.compaction_seq, 0);
    o.no_merge = 0;
    o.target_size = 3 * 4096;
    assert_int_equal(tally_compact(t, &o, &rep), 0);
    assert_int_equal(rep.records_pruned, 0);
    assert_true(rep.files_rewritten > 0);
    assert_true(rep.files_after < rep.files_before);
    assert_int_equal(rep.compaction_seq, 201);
    assert_int_equal(tally_close(t), 0);
    if (ctu_count_files(dir) >= files0)
        fail_msg("files: %d before, %d after (report %llu -> %llu)", files0, ctu_count_files(dir), (unsigned long long)rep.files_before, (unsigned long long)rep.files_after);
    ctu_pic after;
    ctu_picture(dir, key, &after);
    ctu_compare(&before, &after, NULL, NULL);
    ctu_verify_both(dir, key);
    /* Each merged file is within the target size. */
    char names[TU_MAX_FILES][32], p[PATH_MAX];
    int n = tu_list_segs(dir, names, TU_MAX_FILES);
    for (int i = 0; i < n; i++) {
        tu_path(p, sizeof p, dir, names[i]);
        assert_true(tu_file_size(p) <= 3 * 4096 + 4096);
    }
    ctu_pic_free(&before);
    ctu_pic_free(&after);
    tu_rmrf(dir);
    free(dir);
}

/* Only sealed segments are touched: records in the active segment (and
 * the superseding ones there) do not count. */
static void active_segment_untouched(void **state)
{
    (void)state;
    char *dir = ctu_init("cactive", key, 1u << 20);
    tally *t = ctu_open(dir, key);
    tu_append_text(t, 1, "a", "one");
    tu_append_text(t, 1, "a", "two");
    tally_compact_report rep;
    assert_int_equal(tally_compact(t, NULL, &rep), 0);
    assert_int_equal(rep.records, 0);
    assert_int_equal(rep.files_before, 0);
    assert_int_equal(tally_close(t), 0);
    t = ctu_open(dir, key);
    tu_append_text(t, 1, "a", "three"); /* active: supersedes, not sealed */
    assert_int_equal(tally_compact(t, NULL, &rep), 0);
    assert_int_equal(rep.records, 2);
    assert_int_equal(rep.records_pruned, 1); /* "one", by "two" */
    assert_int_equal(tally_close(t), 0);
    tu_rmrf(dir);
    free(dir);
}

static void damaged_file_refused(void **state)
{
    (void)state;
    ctu_work w;
    ctu_generate(&w, 200, 10, 9, NULL);
    char *dir = build("cdamage", &w, 4096);
    char names[TU_MAX_FILES][32], p[PATH_MAX];
    int n = tu_list_segs(dir, names, TU_MAX_FILES);
    assert_true(n > 3);
    tu_path(p, sizeof p, dir, names[1]);
    tu_flip_bit(p, (TF_SEG_HEADER_BYTES + 8) * 8 + 1); /* a frame's seq */
    tally *t = ctu_open(dir, key);
    tu_snap *s0 = tu_snap_take(dir);
    tally_compact_report rep;
    assert_int_equal(tally_compact(t, NULL, &rep), TALLY_EINTEGRITY);
    assert_non_null(strstr(rep.message, names[1]));
    tu_snap *s1 = tu_snap_take(dir);
    assert_int_equal(s0->n, s1->n);
    for (int i = 0; i < s0->n; i++)
        assert_int_equal(s0->len[i], s1->len[i]);
    /* The handle is still fine. */
    tu_append_text(t, 1, "x", "after");
    assert_int_equal(tally_close(t), 0);
    tu_snap_free(s0);
    tu_snap_free(s1);
    ctu_work_free(&w);
    tu_rmrf(dir);
    free(dir);
}

/* A body that rotted in a record the snapshot rule prunes: its record_hash
 * no longer gives the stored link, so the compactor stops before it would
 * bake the damage into a PRUNED frame, and the file stays as it was. */
static void rotten_body_not_baked_in(void **state)
{
    (void)state;
    const uint64_t snaps[] = { 150, 0 };
    ctu_work w;
    ctu_generate(&w, 200, 10, 13, snaps);
    char *dir = build("crot", &w, 4096);
    char p[PATH_MAX];
    tu_path(p, sizeof p, dir, "0000000000000001.seg");
    size_t len;
    uint8_t *d = tu_read(p, &len);
    uint64_t off = TF_SEG_HEADER_BYTES;
    ti_frame_hdr h;
    const char *why;
    for (uint64_t s = 1; s < 5; s++) {
        assert_int_equal(ti_frame_header_parse(d + off, s, &h, &why), 0);
        off += ti_frame_len(&h);
    }
    assert_int_equal(ti_frame_header_parse(d + off, 5, &h, &why), 0);
    free(d);
    tu_flip_bit(p, (off + TF_FRAME_HEADER_BYTES + 20) * 8); /* seq 5's body */
    uint64_t size0 = tu_file_size(p);
    tally *t = ctu_open(dir, key);
    tally_compact_report rep;
    assert_int_equal(tally_compact(t, NULL, &rep), TALLY_EINTEGRITY);
    assert_non_null(strstr(rep.message, "seq 5"));
    assert_int_equal(rep.compaction_seq, 0);
    assert_int_equal(tally_close(t), 0);
    assert_int_equal(tu_file_size(p), size0);
    tally_verify_report vr;
    assert_int_equal(tally_verify(dir, NULL, &vr), TALLY_EINTEGRITY);
    assert_int_equal(vr.seq, 5);
    ctu_work_free(&w);
    tu_rmrf(dir);
    free(dir);
}

/* A storage attacker turns a late record into a "SNAPSHOT" by its visible
 * type: the compactor authenticates the snapshot it relies on (the frame
 * header is in the AEAD's associated data), so it refuses instead of
 * pruning everything before it. */
static void forged_snapshot_refused(void **state)
{
    (void)state;
    ctu_work w;
    ctu_generate(&w, 200, 50, 19, NULL);
    char *dir = build("cforge", &w, 4096);
    char names[TU_MAX_FILES][32], p[PATH_MAX];
    int nf = tu_list_segs(dir, names, TU_MAX_FILES);
    assert_true(nf > 4);
    tu_path(p, sizeof p, dir, names[nf - 3]); /* sealed, not the last */
    size_t len;
    uint8_t *d = tu_read(p, &len);
    uint64_t off = TF_SEG_HEADER_BYTES, target = 0;
    uint64_t s = le64_get(d + 32); /* first_seq */
    ti_frame_hdr h;
    const char *why;
    while (off < len) {
        assert_int_equal(ti_frame_header_parse(d + off, s, &h, &why), 0);
        if (h.vtype == 0 && h.kind == TF_KIND_SEALED && !target)
            target = off;
        off += ti_frame_len(&h);
        s++;
    }
    assert_true(target > 0);
    uint64_t seq = le64_get(d + target + 8);
    le16_put(d + target + 6, TALLY_TYPE_SNAPSHOT);
    tu_write(p, d, len);
    free(d);
    tally *t = ctu_open(dir, key);
    tally_compact_report rep;
    assert_int_equal(tally_compact(t, NULL, &rep), TALLY_EINTEGRITY);
    char want[32];
    snprintf(want, sizeof want, "seq %llu", (unsigned long long)seq);
    assert_non_null(strstr(rep.message, want));
    assert_int_equal(tally_close(t), 0);
    assert_int_equal(tu_file_size(p), len);
    ctu_work_free(&w);
    tu_rmrf(dir);
    free(dir);
}

/* The newest snapshot sits in a key epoch that was forgotten: it cannot
 * be authenticated, so nothing is pruned for it; records of that epoch
 * cannot be read (their keys are unknown) and stay; the later epoch's
 * superseded records go. */
static void snapshot_in_forgotten_epoch(void **state)
{
    (void)state;
    char *dir = ctu_init("cforget", key, 4096);
    tally *t = ctu_open(dir, key);
    for (int i = 0; i < 30; i++)
        tu_append_text(t, 1, i % 2 ? "a" : "b", "epoch one, some padding");
    tu_append_text(t, TALLY_TYPE_SNAPSHOT, NULL, "state in epoch one");
    tu_append_text(t, 1, "a", "after the snapshot, epoch one");
    assert_int_equal(tally_close(t), 0);
    tally_epoch_report er;
    assert_int_equal(tally_rekey(dir, key, &er), 0);
    t = ctu_open(dir, key);
    uint64_t first2 = tu_append_text(t, 1, "x", "epoch two 1");
    tu_append_text(t, 1, "x", "epoch two 2");
    tu_append_text(t, 1, "y", "epoch two 3");
    tu_append_text(t, 1, "x", "epoch two 4");
    assert_int_equal(tally_close(t), 0);
    assert_int_equal(tally_forget(dir, key, first2, &er), 0);
    t = ctu_open(dir, key);
    tally_compact_report rep;
    int rc = tally_compact(t, NULL, &rep);
    if (rc != 0)
        fail_msg("compact: %s", rep.message);
    assert_int_equal(rep.snapshot_seq, 0);
    assert_int_equal(rep.records_pruned, 2);
    assert_int_equal(rep.pruned_superseded, 2);
    assert_int_equal(tally_close(t), 0);
    ctu_verify_both(dir, key);
    tu_rmrf(dir);
    free(dir);
}

static void second_compaction_busy(void **state)
{
    (void)state;
    char *dir = ctu_init("cbusy", key, 4096);
    tally *t = ctu_open(dir, key);
    char p[PATH_MAX];
    tu_path(p, sizeof p, dir, "LOCK");
    int fd = open(p, O_RDWR);
    assert_true(fd >= 0);
    struct flock fl;
    memset(&fl, 0, sizeof fl);
    fl.l_type = F_WRLCK;
    fl.l_whence = SEEK_SET;
    fl.l_len = 1;
    assert_int_equal(fcntl(fd, F_OFD_SETLK, &fl), 0);
    tally_compact_report rep;
    assert_int_equal(tally_compact(t, NULL, &rep), -EBUSY);
    close(fd);
    assert_int_equal(tally_compact(t, NULL, &rep), 0);
    assert_int_equal(tally_close(t), 0);
    tu_rmrf(dir);
    free(dir);
}

struct replay_ctx {
    uint64_t first, n, last;
};

static int on_record(void *ctx, const tally_record *r)
{
    struct replay_ctx *c = ctx;
    if (c->n == 0)
        c->first = r->seq;
    c->n++;
    c->last = r->seq;
    return 0;
}

static void replay_from_snapshot(void **state)
{
    (void)state;
    char *dir = ctu_init("csnap", key, 4096);
    tally *t = ctu_open(dir, key);
    struct replay_ctx rc0 = { 0, 0, 0 };
    /* No snapshot: from seq 1. */
    for (int i = 0; i < 50; i++)
        tu_append_text(t, 1, NULL, "before any snapshot, padding padding");
    assert_int_equal(tally_sync(t, 0), 0);
    uint64_t cnt = 0;
    assert_int_equal(tally_replay(dir, key, on_record, &rc0, &cnt), 0);
    assert_int_equal(rc0.first, 1);
    assert_int_equal(cnt, 50);
    uint64_t s1 = tu_append_text(t, TALLY_TYPE_SNAPSHOT, NULL, "state 1");
    for (int i = 0; i < 120; i++)
        tu_append_text(t, 1, NULL, "after the first snapshot, padding");
    uint64_t s2 = tu_append_text(t, TALLY_TYPE_SNAPSHOT, NULL, "state 2");
    for (int i = 0; i < 30; i++)
        tu_append_text(t, 1, NULL, "after the second snapshot");
    assert_true(s1 < s2);
    assert_int_equal(tally_sync(t, 0), 0);

    /* The iterator starts at the snapshot, and from_seq still applies. */
    tally_iter *it;
    tally_record r;
    assert_int_equal(tally_iter_open(&it, dir, key, 0,
                                     TALLY_ITER_FROM_SNAPSHOT), 0);
    assert_int_equal(tally_iter_next(it, &r), 1);
    assert_int_equal(r.seq, s2);
    assert_int_equal(r.type, TALLY_TYPE_SNAPSHOT);
    assert_int_equal(r.payload_len, 7);
    assert_memory_equal(r.payload, "state 2", 7);
    uint64_t n = 1;
    while (tally_iter_next(it, &r) == 1)
        n++;
    assert_int_equal(n, 31);
    tally_iter_free(it);
    assert_int_equal(tally_iter_open(&it, dir, NULL, s2 + 10,
                                     TALLY_ITER_FROM_SNAPSHOT), 0);
    assert_int_equal(tally_iter_next(it, &r), 1);
    assert_int_equal(r.seq, s2 + 10);
    tally_iter_free(it);

    struct replay_ctx rc1 = { 0, 0, 0 };
    assert_int_equal(tally_replay(dir, key, on_record, &rc1, &cnt), 0);
    assert_int_equal(rc1.first, s2);
    assert_int_equal(cnt, 31);

    /* After compaction (everything before s2 pruned), the same. */
    assert_int_equal(tally_close(t), 0);
    t = ctu_open(dir, key);
    tally_compact_report rep;
    assert_int_equal(tally_compact(t, NULL, &rep), 0);
    assert_int_equal(rep.snapshot_seq, s2);
    assert_int_equal(rep.records_pruned, s2 - 1);
    struct replay_ctx rc2 = { 0, 0, 0 };
    assert_int_equal(tally_replay(dir, key, on_record, &rc2, &cnt), 0);
    assert_int_equal(rc2.first, s2);
    assert_int_equal(cnt, 32); /* and the COMPACTION record */
    /* A snapshot in the active segment counts for replay. */
    uint64_t s3 = tu_append_text(t, TALLY_TYPE_SNAPSHOT, NULL, "state 3");
    assert_int_equal(tally_sync(t, 0), 0);
    struct replay_ctx rc3 = { 0, 0, 0 };
    assert_int_equal(tally_replay(dir, key, on_record, &rc3, &cnt), 0);
    assert_int_equal(rc3.first, s3);
    assert_int_equal(cnt, 1);
    assert_int_equal(tally_close(t), 0);
    ctu_verify_both(dir, key);
    tu_rmrf(dir);
    free(dir);
}

int main(void)
{
    tu_key(key, 42);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(workload_with_snapshot),
        cmocka_unit_test(workload_without_snapshot),
        cmocka_unit_test(tombstones_kept_without_retention),
        cmocka_unit_test(dry_run_writes_nothing),
        cmocka_unit_test(merge_only_and_prune_only),
        cmocka_unit_test(active_segment_untouched),
        cmocka_unit_test(damaged_file_refused),
        cmocka_unit_test(rotten_body_not_baked_in),
        cmocka_unit_test(forged_snapshot_refused),
        cmocka_unit_test(snapshot_in_forgotten_epoch),
        cmocka_unit_test(second_compaction_busy),
        cmocka_unit_test(replay_from_snapshot),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
