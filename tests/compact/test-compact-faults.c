/*
 * test-compact-faults.c — crash safety of compaction: a failure is injected
 * at every step of every file replacement in turn (create, each write,
 * fsync, rename, directory fsync, unlink), once as an error the compactor
 * sees and cleans up after, once as a crash (nothing more is done). After
 * each: the journal verifies with and without the key, every record that
 * was not meant to be pruned is there and intact, every link is unchanged;
 * the writer reopens (recovery) and a new compaction reaches exactly the
 * state a clean run gives, removing the leftovers of an interrupted merge.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctu.h"

static uint8_t key[TALLY_KEY_BYTES];

typedef struct fault {
    int target;   /* the step that fails (0-based), -1: none */
    int count;    /* steps seen */
    int crash;    /* 1: TALLY_COMPACT_CRASH, 0: -EIO */
    tally_compact_step hit;
    unsigned seen; /* bit per step kind seen at the target */
} fault;

static int hook(void *ctx, tally_compact_step s, const char *file)
{
    fault *f = ctx;
    (void)file;
    if (f->count++ != f->target)
        return 0;
    f->hit = s;
    return f->crash ? TALLY_COMPACT_CRASH : -EIO;
}

static tally_compact_options opts_for(fault *f)
{
    tally_compact_options o;
    memset(&o, 0, sizeof o);
    o.target_size = 12 * 1024;
    o.fault = hook;
    o.fault_ctx = f;
    return o;
}

static void every_step(void **state)
{
    (void)state;
    const uint64_t snaps[] = { 60, 0 };
    ctu_work w;
    ctu_generate(&w, 260, 20, 17, snaps);
    char *dir = ctu_init("cfault", key, 4096);
    tally *t = ctu_open(dir, key);
    ctu_append(t, &w, 1, w.n);
    assert_int_equal(tally_close(t), 0);
    t = ctu_open(dir, key); /* every record sealed */
    assert_int_equal(tally_close(t), 0);
    tu_snap *tmpl = tu_snap_take(dir);
    ctu_expect ex;
    ctu_model(&w, w.n, 0, 0, &ex);
    ctu_pic before;
    ctu_picture(dir, key, &before);

    /* How many steps a clean run takes. */
    fault f = { -1, 0, 0, 0, 0 };
    tally_compact_options o = opts_for(&f);
    tally_compact_report rep;
    t = ctu_open(dir, key);
    assert_int_equal(tally_compact(t, &o, &rep), 0);
    assert_int_equal(tally_close(t), 0);
    int total = f.count;
    assert_true(total > 20);
    assert_true(rep.segments_merged > 0);
    uint64_t clean_files = rep.files_after;
    print_message("clean run: %d steps, %llu -> %llu files\n", total,
                  (unsigned long long)rep.files_before,
                  (unsigned long long)rep.files_after);

    unsigned seen = 0;
    uint64_t leftovers = 0, partials = 0;
    for (int crash = 0; crash <= 1; crash++) {
        for (int k = 0; k < total; k++) {
            tu_snap_restore(tmpl, dir);
            fault g = { k, 0, crash, 0, 0 };
            o = opts_for(&g);
            t = ctu_open(dir, key);
            int rc = tally_compact(t, &o, &rep);
            if (rc == 0)
                fail_msg("step %d (%s): no failure", k,
                         crash ? "crash" : "error");
            assert_int_equal(rc, crash ? -ECANCELED : -EIO);
            seen |= 1u << g.hit;
            if (!crash) {
                /* The writer handle is still good. */
                tu_append_text(t, 5, NULL, "after a failed compaction");
                if (rep.compaction_seq)
                    assert_int_equal(rep.compaction_seq, w.n + 1);
            }
            assert_int_equal(tally_close(t), 0);

            /* As it is: readers see a whole journal. */
            ctu_verify_both(dir, key);
            ctu_pic mid;
            ctu_picture(dir, key, &mid);
            ctu_compare(&before, &mid, NULL, ex.pruned);
            if (!crash && rep.compaction_seq) {
                /* A run stopped after replacing some files says so, and
                 * names exactly the records it pruned. */
                const ctu_entry *ce = &mid.e[rep.compaction_seq];
                tally_compaction_info ci;
                assert_int_equal(ce->type, TALLY_TYPE_COMPACTION);
                assert_int_equal(tally_compaction_decode(ce->payload,
                                                         ce->payload_len,
                                                         &ci), 0);
                assert_true(ci.flags & TALLY_COMPACTION_PARTIAL);
                uint64_t in_ranges = 0, pruned_now = 0;
                for (uint32_t r = 0; r < ci.range_count; r++)
                    for (uint64_t q = ci.ranges[r].first_seq;
                         q <= ci.ranges[r].last_seq; q++) {
                        assert_int_equal(mid.e[q].kind, 3);
                        in_ranges++;
                    }
                for (uint64_t q = 1; q <= w.n; q++)
                    pruned_now += mid.e[q].kind == 3;
                assert_int_equal(in_ranges, ci.records_pruned);
                assert_int_equal(pruned_now, ci.records_pruned);
                assert_true(ci.file_count > 0);
                partials++;
                tally_compaction_info_free(&ci);
            }
            ctu_pic_free(&mid);

            /* Reopened (recovery), then compacted again: the clean state. */
            t = ctu_open(dir, key);
            assert_int_equal(tally_close(t), 0);
            ctu_verify_both(dir, key);
            fault none = { -1, 0, 0, 0, 0 };
            o = opts_for(&none);
            t = ctu_open(dir, key);
            rc = tally_compact(t, &o, &rep);
            if (rc != 0)
                fail_msg("step %d: second compaction: %s", k, rep.message);
            leftovers += rep.leftovers_removed;
            assert_int_equal(tally_close(t), 0);
            ctu_pic fin;
            ctu_picture(dir, key, &fin);
            ctu_compare(&before, &fin, ex.pruned, NULL);
            ctu_pic_free(&fin);
            assert_true(ctu_verify_both(dir, key) == ex.count);
            (void)clean_files;
        }
    }
    /* Every kind of step was failed at least once; some interrupted merges
     * left duplicates that the next compaction removed. */
    for (int s = TALLY_COMPACT_CREATE; s <= TALLY_COMPACT_UNLINK; s++)
        if (!(seen & (1u << s)))
            fail_msg("step kind %d never failed", s);
    assert_true(leftovers > 0);
    assert_true(partials > 0);

    ctu_pic_free(&before);
    ctu_expect_free(&ex);
    tu_snap_free(tmpl);
    ctu_work_free(&w);
    tu_rmrf(dir);
    free(dir);
}

/* A merge interrupted between the rename and the removal of the merged
 * files: readers skip the duplicates, recovery accepts them, the next
 * compaction checks that they are copies and removes them. */
static void leftovers_of_a_merge(void **state)
{
    (void)state;
    ctu_work w;
    ctu_generate(&w, 200, 200, 23, NULL); /* few overwrites */
    ctu_expect ex;
    ctu_model(&w, w.n, 0, 0, &ex);
    char *dir = ctu_init("cleft", key, 4096);
    tally *t = ctu_open(dir, key);
    ctu_append(t, &w, 1, w.n);
    assert_int_equal(tally_close(t), 0);
    ctu_pic before;
    ctu_picture(dir, key, &before);
    int files0 = ctu_count_files(dir);

    /* A crash at the first unlink: find that step by crashing at each
     * step in turn on a copy until it is one. */
    tally_compact_options o;
    tally_compact_report r;
    int first_unlink = -1;
    for (int k = 0; k < 64 && first_unlink < 0; k++) {
        tu_snap *s = tu_snap_take(dir);
        fault g = { k, 0, 1, 0, 0 };
        o = opts_for(&g);
        t = ctu_open(dir, key);
        assert_int_equal(tally_compact(t, &o, &r), -ECANCELED);
        assert_int_equal(tally_close(t), 0);
        if (g.hit == TALLY_COMPACT_UNLINK)
            first_unlink = k;
        else
            tu_snap_restore(s, dir);
        tu_snap_free(s);
    }
    assert_true(first_unlink > 0);
    /* Now the merged file and its duplicates are both there. */
    assert_int_equal(ctu_count_files(dir), files0); /* the empty active one went at close */
    ctu_verify_both(dir, key);
    ctu_pic mid;
    ctu_picture(dir, key, &mid);
    ctu_compare(&before, &mid, NULL, ex.pruned);
    ctu_pic_free(&mid);
    tally_head_info h;
    assert_int_equal(tally_read_head(dir, &h), 0);
    assert_memory_equal(h.link, before.e[before.n].link, 32);

    fault none = { -1, 0, 0, 0, 0 };
    o = opts_for(&none);
    t = ctu_open(dir, key);
    tally_compact_report rep;
    assert_int_equal(tally_compact(t, &o, &rep), 0);
    assert_true(rep.leftovers_removed > 0);
    assert_int_equal(tally_close(t), 0);
    assert_true(ctu_count_files(dir) < files0);
    ctu_verify_both(dir, key);
    ctu_pic fin;
    ctu_picture(dir, key, &fin);
    ctu_compare(&before, &fin, ex.pruned, NULL);
    ctu_pic_free(&fin);
    ctu_pic_free(&before);
    ctu_expect_free(&ex);
    ctu_work_free(&w);
    tu_rmrf(dir);
    free(dir);
}

int main(void)
{
    tu_key(key, 7);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(every_step),
        cmocka_unit_test(leftovers_of_a_merge),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
