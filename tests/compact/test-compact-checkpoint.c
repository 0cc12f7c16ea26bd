/*
 * test-compact-checkpoint.c — anchored checkpoints still verify after
 * compaction: a journal anchored several times (CHECKPOINT records through
 * the checkpoint module) is compacted down to its last snapshot; every
 * CHECKPOINT record is kept, names the local link at its seq, and matches
 * its anchor; the freshness verdict stays "fresh", and anchoring carries
 * on. Against the anchor file backend always, and against the JournalAnchor
 * contract on a real local node when TALLY_TEST_RPC is set (meson runs it
 * under tests/checkpoint/with-ganache.sh).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "checkpoint.h"
#include "ctu.h"

static uint8_t key[TALLY_KEY_BYTES];

static void fill(tally *t, int round, int n)
{
    for (int i = 0; i < n; i++) {
        char k[16], v[160];
        snprintf(k, sizeof k, "acct%d", i % 12);
        snprintf(v, sizeof v, "round %d entry %d: balance %d, some padding "
                 "so that bodies are worth pruning", round, i, i * 7 + round);
        tu_append_text(t, 1, k, v);
    }
}

static void anchor_once(tally *t, const char *dir, tally_anchor_target *tg)
{
    tally_checkpoint_info info;
    char err[512];
    int rc = tally_checkpoint_once(t, dir, tg, &info, err, sizeof err);
    if (rc != 1)
        fail_msg("checkpoint: %d %s", rc, err);
}

static void check_anchors(tally_anchor_target *tg, const char *dir,
                          uint64_t expect)
{
    tally_checkpoint_report rep;
    int rc = tally_checkpoint_verify(tg, dir, key, &rep);
    if (rc != 0)
        fail_msg("checkpoint verify (key): %s: %s", tally_strerror(rc),
                 rep.message);
    assert_int_equal(rep.checked, expect);
    rc = tally_checkpoint_verify(tg, dir, NULL, &rep);
    if (rc != 0)
        fail_msg("checkpoint verify (no key): %s: %s", tally_strerror(rc),
                 rep.message);
    assert_int_equal(rep.checked, expect);
    tally_freshness f;
    rc = tally_freshness_check(tg, dir, NULL, key, &f);
    if (rc != 0)
        fail_msg("freshness: %s: %s", tally_strerror(rc), f.message);
    assert_int_equal(f.verdict, TALLY_VERDICT_FRESH);
}

static void anchored_then_compacted(tally_anchor_target *tg, const char *tag)
{
    char *dir = ctu_init(tag, key, 4096);
    tally *t = ctu_open(dir, key);
    for (int round = 0; round < 4; round++) {
        fill(t, round, 40);
        anchor_once(t, dir, tg);
    }
    tu_append_text(t, TALLY_TYPE_SNAPSHOT, NULL, "every balance");
    fill(t, 9, 20);
    assert_int_equal(tally_close(t), 0);
    check_anchors(tg, dir, 4);
    ctu_pic before;
    ctu_picture(dir, key, &before);

    t = ctu_open(dir, key);
    tally_compact_options co;
    memset(&co, 0, sizeof co);
    co.target_size = 16384;
    tally_compact_report rep;
    int rc = tally_compact(t, &co, &rep);
    if (rc != 0)
        fail_msg("compact: %s", rep.message);
    assert_true(rep.records_pruned >= 160);
    assert_true(rep.snapshot_seq > 0);
    assert_true(rep.files_after < rep.files_before);
    ctu_pic after;
    ctu_picture(dir, key, &after);
    uint64_t kept = 0;
    for (uint64_t s = 1; s <= before.n; s++) {
        assert_memory_equal(before.e[s].link, after.e[s].link, 32);
        if (before.e[s].type == TALLY_TYPE_CHECKPOINT) {
            assert_int_equal(after.e[s].kind, 2);
            kept++;
        }
    }
    assert_int_equal(kept, 4);
    check_anchors(tg, dir, 4);
    /* Anchoring carries on over the compacted journal. */
    fill(t, 10, 5);
    anchor_once(t, dir, tg);
    assert_int_equal(tally_close(t), 0);
    check_anchors(tg, dir, 5);
    ctu_verify_both(dir, key);
    ctu_pic_free(&before);
    ctu_pic_free(&after);
    tu_rmrf(dir);
    free(dir);
}

static void file_backend(void **state)
{
    (void)state;
    char *adir = tu_mkdtemp("cckfile-anchor");
    char apath[4096];
    snprintf(apath, sizeof apath, "%s/anchors", adir);
    tally_anchor_target *tg = NULL;
    assert_int_equal(tally_anchor_target_file(&tg, apath), 0);
    anchored_then_compacted(tg, "cckfile");
    tally_anchor_target_free(tg);
    tu_rmrf(adir);
    free(adir);
}

static void eth_backend(void **state)
{
    (void)state;
    const char *rpc = getenv("TALLY_TEST_RPC");
    if (!rpc) {
        print_message("TALLY_TEST_RPC not set: the chain case is run by "
                      "meson under with-ganache.sh\n");
        skip();
    }
    /* ganache's first deterministic account */
    uint8_t k0[32], a0[20];
    assert_int_equal(tu_unhex(k0, sizeof k0, "4f3edf983ac636a65a842ce7c78d9a"
                              "a706d3b113bce9c46f30d7d21715b23b1d"), 32);
    assert_int_equal(tally_eth_key_address(k0, a0), 0);
    const char *u[1] = { rpc };
    tally_eth_options o;
    memset(&o, 0, sizeof o);
    o.rpc_urls = u;
    o.rpc_count = 1;
    o.chain_id = 1337;
    o.from = a0;
    o.timeout_ms = 5000;
    o.connect_timeout_ms = 2000;
    o.poll_ms = 20;
    o.receipt_timeout_ms = 20000;
    tally_eth *e = NULL;
    assert_int_equal(tally_eth_open(&e, &o), 0);
    tally_eth_receipt r;
    int rc = tally_anchor_deploy(e, &r);
    if (rc != 0)
        fail_msg("deploy: %s", tally_eth_errmsg(e));
    tally_anchor_target *tg = NULL;
    assert_int_equal(tally_anchor_target_eth(&tg, e, r.contract, NULL), 0);
    anchored_then_compacted(tg, "ccketh");
    tally_anchor_target_free(tg);
    tally_eth_close(e);
}

int main(void)
{
    tu_key(key, 55);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(file_backend),
        cmocka_unit_test(eth_backend),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
