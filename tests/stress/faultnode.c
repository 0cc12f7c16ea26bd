/*
 * faultnode.c — the checkpoint module against a faulty Ethereum node: a real
 * node (ganache) behind faultnode.py, a proxy that misbehaves as told.
 *
 *   stress-faultnode --node URL --proxy URL --control FILE [--slow S]
 *
 * (run by faultnode.sh, which starts the node and the proxy). With a real
 * journal and the JournalAnchor contract deployed on the node:
 *
 *   verdicts  with a healthy node: fresh; a restored old copy of the
 *             journal: rolled_back; another journal under the same id:
 *             forked; no journal but anchors: deleted; the node reverted
 *             to a state before the journal's last CHECKPOINT record
 *             (evm_snapshot / evm_revert: a stale or lying node):
 *             stale_anchor;
 *   faults    down (a closed port), slow (longer than the timeout), JSON-RPC
 *             errors, HTTP 500, garbage, cut-off JSON, a wrong id, a closed
 *             connection, a 33 MiB answer. For each: the freshness check
 *             fails with the documented error (never a verdict, never
 *             "fresh"), within the timeouts; a checkpointer thread keeps
 *             failing and backing off while 100 appends go on, none of them
 *             waiting on the node; the checkpointer stops within the RPC
 *             timeout; once the node is healthy again one round anchors;
 *             nothing acknowledged is lost (every record read back).
 *
 * Prints one line of figures; exit 0 only if every check held.
 */
#include "stress.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <unistd.h>

#include <sodium.h>

#include "checkpoint-internal.h"

/* ganache's first deterministic account (a well-known test key) */
static const uint8_t signer[32] = {
    0x4f, 0x3e, 0xdf, 0x98, 0x3a, 0xc6, 0x36, 0xa6, 0x5a, 0x84, 0x2c, 0xe7,
    0xc7, 0x8d, 0x9a, 0xa7, 0x06, 0xd3, 0xb1, 0x13, 0xbc, 0xe9, 0xc4, 0x6f,
    0x30, 0xd7, 0xd2, 0x17, 0x15, 0xb2, 0x3b, 0x1d,
};

#define RPC_TIMEOUT_MS 1500u

struct ctx {
    const char *node, *proxy, *control;
    unsigned slow_s;
    char *work, *dir;
    uint8_t key[TALLY_KEY_BYTES];
    uint8_t contract[20];
    tally *t;
    uint64_t appended;  /* records appended by us (payload = st_payload) */
    uint64_t checkpoints;
    /* figures */
    unsigned faults, verdicts, rounds_failed;
    uint64_t max_append_ms, max_stop_ms, appends_during_faults;
};

static void set_mode(struct ctx *x, const char *mode)
{
    st_write_file(x->control, mode, strlen(mode));
}

static tally_eth *eth_open(const char *url)
{
    const char *urls[1] = { url };
    tally_eth_options o;
    memset(&o, 0, sizeof o);
    o.rpc_urls = urls;
    o.rpc_count = 1;
    o.chain_id = 1337;
    o.signer_key = signer;
    o.timeout_ms = RPC_TIMEOUT_MS;
    o.connect_timeout_ms = 500;
    o.poll_ms = 50;
    o.receipt_timeout_ms = 20000;
    tally_eth *e;
    int rc = tally_eth_open(&e, &o);
    if (rc < 0)
        st_fail("tally_eth_open %s: %s", url, tally_strerror(rc));
    return e;
}

static tally_anchor_target *target_open(struct ctx *x, tally_eth *e)
{
    tally_anchor_target *t;
    int rc = tally_anchor_target_eth(&t, e, x->contract, NULL);
    if (rc < 0)
        st_fail("anchor target: %s", tally_strerror(rc));
    return t;
}

/* An application record (its payload encodes its seq) or a CHECKPOINT
 * record (appended by the checkpointer): our count follows the head. */
static uint64_t append_some(struct ctx *x, unsigned n, uint64_t *max_ms)
{
    uint64_t first = 0;
    for (unsigned i = 0; i < n; i++) {
        tally_head_info h;
        int rc = tally_head(x->t, &h);
        if (rc < 0)
            st_fail("head: %s", tally_strerror(rc));
        char p[ST_PAYLOAD_MAX];
        size_t len = st_payload(h.seq + 1, p);
        tally_record_in rec = { .type = 1, .payload = p, .payload_len = len };
        uint64_t t0 = st_now_ms(), seq;
        rc = tally_append(x->t, &rec, &seq);
        uint64_t ms = st_now_ms() - t0;
        if (rc < 0)
            st_fail("append: %s", tally_strerror(rc));
        if (max_ms && ms > *max_ms)
            *max_ms = ms;
        if (!first)
            first = seq;
        x->appended++;
    }
    return first;
}

static int once(struct ctx *x, tally_anchor_target *tg, char *err, size_t errsz)
{
    tally_checkpoint_info ci;
    int rc = tally_checkpoint_once(x->t, x->dir, tg, &ci, err, errsz);
    if (rc == 1)
        x->checkpoints++;
    return rc;
}

static void expect_verdict(struct ctx *x, tally_anchor_target *tg,
                           const char *dir, const uint8_t *jid,
                           tally_verdict want, int want_rc, const char *what)
{
    tally_freshness f;
    int rc = tally_freshness_check(tg, dir, jid, x->key, &f);
    if (rc != want_rc || f.verdict != want)
        st_fail("%s: verdict %s (%s), expected %s: %s", what,
                tally_verdict_name(f.verdict), tally_strerror(rc),
                tally_verdict_name(want), f.message);
    x->verdicts++;
}

static const char *const mode_names[] = { "down", "slow", "error", "http500",
                                          "garbage", "badjson", "wrongid",
                                          "refuse", "huge" };

/* the documented errors of a node that is not reachable or not sane */
static int expected_error(const char *mode, int rc)
{
    if (!strcmp(mode, "down"))
        return rc == -ECONNREFUSED;
    if (!strcmp(mode, "slow"))
        return rc == -ETIMEDOUT;
    if (!strcmp(mode, "refuse"))
        return rc == -EIO || rc == -ECONNRESET || rc == -EPROTO;
    if (!strcmp(mode, "huge"))
        return rc == -EMSGSIZE;
    return rc == -EPROTO; /* error, http500, garbage, badjson, wrongid */
}

static void fault(struct ctx *x, const char *mode, int closed_port)
{
    /* the proxy (or, for "down", a port nobody listens on) */
    char url[128];
    if (!strcmp(mode, "down")) {
        snprintf(url, sizeof url, "http://127.0.0.1:%d/", closed_port);
    } else {
        snprintf(url, sizeof url, "%s", x->proxy);
        if (!strcmp(mode, "slow")) {
            char m[32];
            snprintf(m, sizeof m, "slow:%u", x->slow_s);
            set_mode(x, m);
        } else {
            set_mode(x, mode);
        }
    }
    tally_eth *e = eth_open(url);
    tally_anchor_target *tg = target_open(x, e);

    /* 1. the verdict cannot be had: an error, never a verdict */
    tally_freshness f;
    uint64_t t0 = st_now_ms();
    int rc = tally_freshness_check(tg, x->dir, NULL, x->key, &f);
    uint64_t ms = st_now_ms() - t0;
    if (!expected_error(mode, rc))
        st_fail("node %s: freshness check gave %d (%s), verdict %s: %s", mode,
                rc, tally_strerror(rc), tally_verdict_name(f.verdict),
                f.message);
    if (ms > 4 * RPC_TIMEOUT_MS + 2000)
        st_fail("node %s: the freshness check took %" PRIu64 " ms", mode, ms);

    /* 2. a checkpointer fails and backs off; appends do not wait for it */
    tally_checkpointer *c;
    tally_checkpointer_options co = { .every_ms = 20, .backoff_min_ms = 20,
                                      .backoff_max_ms = 200 };
    rc = tally_checkpointer_start(&c, x->t, x->dir, tg, &co);
    if (rc < 0)
        st_fail("checkpointer start: %s", tally_strerror(rc));
    uint64_t deadline = st_now_ms() + 4 * RPC_TIMEOUT_MS + 4000;
    tally_checkpoint_status s;
    unsigned batches = 0;
    do {
        append_some(x, 10, &x->max_append_ms);
        x->appends_during_faults += 10;
        batches++;
        st_sleep_ms(20);
        tally_checkpointer_status(c, &s);
    } while ((s.failures < 2 || batches < 10) && st_now_ms() < deadline);
    if (s.failures < 1)
        st_fail("node %s: the checkpointer reported no failure", mode);
    if (x->max_append_ms > 1000)
        st_fail("node %s: an append took %" PRIu64 " ms while the "
                "checkpointer was failing: appends wait for the node", mode,
                x->max_append_ms);
    if (s.anchors != 0)
        st_fail("node %s: the checkpointer anchored through a broken node", mode);
    if (!expected_error(mode, s.last_error))
        st_fail("node %s: the checkpointer's error is %d (%s): %s", mode,
                s.last_error, tally_strerror(s.last_error), s.last_errmsg);
    x->rounds_failed += (unsigned)s.failures;
    t0 = st_now_ms();
    (void)tally_checkpointer_stop(c);
    ms = st_now_ms() - t0;
    if (ms > x->max_stop_ms)
        x->max_stop_ms = ms;
    if (ms > 2 * RPC_TIMEOUT_MS + 3000)
        st_fail("node %s: stopping the checkpointer took %" PRIu64 " ms", mode,
                ms);
    tally_anchor_target_free(tg);
    tally_eth_close(e);

    /* 3. healthy again: one round anchors */
    set_mode(x, "forward");
    e = eth_open(x->proxy);
    tg = target_open(x, e);
    char err[512];
    rc = once(x, tg, err, sizeof err);
    if (rc != 1)
        st_fail("node %s, then healthy: the round gave %d: %s", mode, rc, err);
    tally_anchor_target_free(tg);
    tally_eth_close(e);
    x->faults++;
}

/* Every record is there: ours with their payloads, CHECKPOINT records
 * (type 0xFF02) in between. */
static void check_all(struct ctx *x)
{
    tally_iter *it;
    int rc = tally_iter_open(&it, x->dir, x->key, 1, TALLY_ITER_TOLERATE_TAIL);
    if (rc < 0)
        st_fail("reader: %s", tally_strerror(rc));
    tally_record r;
    uint64_t ours = 0, cps = 0, expect = 1;
    while ((rc = tally_iter_next(it, &r)) == 1) {
        if (r.seq != expect++)
            st_fail("seq %" PRIu64 " out of order", r.seq);
        if (r.type == TALLY_TYPE_CHECKPOINT) {
            cps++;
            continue;
        }
        if (!st_payload_ok(r.seq, r.payload, r.payload_len))
            st_fail("seq %" PRIu64 ": wrong payload", r.seq);
        ours++;
    }
    if (rc < 0)
        st_fail("reading: %s", tally_iter_errmsg(it));
    tally_iter_free(it);
    if (ours != x->appended)
        st_fail("%" PRIu64 " of our %" PRIu64 " records are there", ours,
                x->appended);
    if (cps < x->checkpoints)
        st_fail("%" PRIu64 " CHECKPOINT records, %" PRIu64 " anchors made", cps,
                x->checkpoints);
}

static void rpc_call(const char *url, const char *method, const char *params,
                     char *out, size_t outsz)
{
    cp_rpc *r;
    int rc = cp_rpc_new(&r, url, 5000, 2000);
    if (rc < 0)
        st_fail("rpc %s: %s", url, tally_strerror(rc));
    cJSON *res = NULL;
    char msg[512];
    rc = cp_rpc_call(r, method, params, &res, NULL, msg, sizeof msg);
    if (rc < 0)
        st_fail("%s", msg);
    char *s = cJSON_PrintUnformatted(res);
    snprintf(out, outsz, "%s", s ? s : "");
    free(s);
    cJSON_Delete(res);
    cp_rpc_free(r);
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        { "node", required_argument, NULL, 'n' },
        { "proxy", required_argument, NULL, 'p' },
        { "control", required_argument, NULL, 'c' },
        { "slow", required_argument, NULL, 's' },
        { NULL, 0, NULL, 0 },
    };
    struct ctx x;
    memset(&x, 0, sizeof x);
    x.slow_s = 4;
    st_prog = "stress-faultnode";
    int c;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'n': x.node = optarg; break;
        case 'p': x.proxy = optarg; break;
        case 'c': x.control = optarg; break;
        case 's': x.slow_s = (unsigned)strtoul(optarg, NULL, 10); break;
        default:
            fprintf(stderr, "usage: stress-faultnode --node URL --proxy URL "
                    "--control FILE [--slow S]\n");
            return 2;
        }
    }
    if (!x.node || !x.proxy || !x.control)
        st_fail("--node, --proxy and --control are required");
    if (sodium_init() < 0)
        st_fail("sodium_init failed");
    set_mode(&x, "forward");
    x.work = st_mkdtemp(NULL, "faultnode");
    if (asprintf(&x.dir, "%s/j", x.work) < 0)
        st_fail("out of memory");
    randombytes_buf(x.key, sizeof x.key);

    /* the contract, deployed directly on the node */
    tally_eth *e0 = eth_open(x.node);
    tally_eth_receipt rcpt;
    int rc = tally_anchor_deploy(e0, &rcpt);
    if (rc < 0)
        st_fail("deploy: %s", tally_eth_errmsg(e0));
    memcpy(x.contract, rcpt.contract, 20);
    tally_eth_close(e0);

    /* the journal */
    tally_options o;
    memset(&o, 0, sizeof o);
    o.master_key = x.key;
    o.name = "faultnode";
    rc = tally_init(x.dir, &o);
    if (rc < 0)
        st_fail("init: %s", tally_strerror(rc));
    o.sync = TALLY_SYNC_BATCH;
    tally_recovery rep;
    rc = tally_open(&x.t, x.dir, &o, &rep);
    if (rc < 0)
        st_fail("open: %s", tally_strerror(rc));
    uint8_t jid[32];
    tally_id(x.t, jid);

    /* verdicts with a healthy node */
    tally_eth *e = eth_open(x.proxy);
    tally_anchor_target *tg = target_open(&x, e);
    char err[512];
    append_some(&x, 5, NULL);
    char old[4200];
    snprintf(old, sizeof old, "%s/old-copy", x.work);
    if ((rc = tally_sync(x.t, 0)) < 0)
        st_fail("sync: %s", tally_strerror(rc));
    st_copy_dir(x.dir, old);                    /* head 5, never anchored */
    if (once(&x, tg, err, sizeof err) != 1)
        st_fail("first anchor: %s", err);
    append_some(&x, 5, NULL);
    if (once(&x, tg, err, sizeof err) != 1)
        st_fail("second anchor: %s", err);
    expect_verdict(&x, tg, x.dir, NULL, TALLY_VERDICT_FRESH, 0, "healthy node");
    expect_verdict(&x, tg, old, NULL, TALLY_VERDICT_ROLLED_BACK,
                   TALLY_EROLLBACK, "an old copy of the journal");
    char forked[4200];
    snprintf(forked, sizeof forked, "%s/forked", x.work);
    rc = tally_init(forked, &o);
    tally *tf;
    if (rc < 0 || (rc = tally_open(&tf, forked, &o, &rep)) < 0)
        st_fail("forked journal: %s", tally_strerror(rc));
    for (int i = 0; i < 30; i++) {
        tally_record_in rec = { .payload = "other", .payload_len = 5 };
        if ((rc = tally_append(tf, &rec, NULL)) < 0)
            st_fail("forked append: %s", tally_strerror(rc));
    }
    tally_close(tf);
    expect_verdict(&x, tg, forked, NULL, TALLY_VERDICT_FORKED, TALLY_EFORK,
                   "another journal under the same id");
    char gone[4200];
    snprintf(gone, sizeof gone, "%s/gone", x.work);
    expect_verdict(&x, tg, gone, jid, TALLY_VERDICT_DELETED, TALLY_EDELETED,
                   "no journal, anchors for its id");
    tally_anchor_target_free(tg);
    tally_eth_close(e);

    /* faults */
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = { .sin_family = AF_INET,
                              .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t sl = sizeof sa;
    if (s < 0 || bind(s, (struct sockaddr *)&sa, sizeof sa) < 0 ||
        getsockname(s, (struct sockaddr *)&sa, &sl) < 0)
        st_fail("socket: %s", strerror(errno));
    int closed_port = ntohs(sa.sin_port);
    close(s); /* nobody listens there now */
    for (size_t i = 0; i < sizeof mode_names / sizeof mode_names[0]; i++)
        fault(&x, mode_names[i], closed_port);

    /* a stale node: reverted to before the journal's last CHECKPOINT */
    char snap[128], ok[128];
    rpc_call(x.node, "evm_snapshot", "[]", snap, sizeof snap);
    e = eth_open(x.proxy);
    tg = target_open(&x, e);
    append_some(&x, 3, NULL);
    if (once(&x, tg, err, sizeof err) != 1)
        st_fail("anchor before the revert: %s", err);
    char params[160];
    snprintf(params, sizeof params, "[%s]", snap);
    rpc_call(x.node, "evm_revert", params, ok, sizeof ok);
    if (strcmp(ok, "true") != 0)
        st_fail("evm_revert answered %s", ok);
    expect_verdict(&x, tg, x.dir, NULL, TALLY_VERDICT_STALE_ANCHOR,
                   TALLY_ESTALE, "a node behind the journal's CHECKPOINT");
    /* the checkpointer refuses to anchor over it; appends go on */
    uint64_t max_ms = 0;
    rc = once(&x, tg, err, sizeof err);
    if (rc != TALLY_ESTALE)
        st_fail("a round against the stale node gave %d (%s): %s", rc,
                tally_strerror(rc), err);
    append_some(&x, 10, &max_ms);
    tally_anchor_target_free(tg);
    tally_eth_close(e);
    x.faults++;

    rc = tally_close(x.t);
    if (rc < 0)
        st_fail("close: %s", tally_strerror(rc));
    check_all(&x);
    tally_verify_report vr;
    rc = tally_verify(x.dir, x.key, &vr);
    if (rc < 0)
        st_fail("verify: %s: %s", tally_strerror(rc), vr.message);

    printf("faultnode faults=%u verdicts=%u rounds_failed=%u appended=%" PRIu64
           " appends_during_faults=%" PRIu64 " max_append_ms=%" PRIu64
           " max_checkpointer_stop_ms=%" PRIu64 " anchors=%" PRIu64 " lost=0\n",
           x.faults, x.verdicts, x.rounds_failed, x.appended,
           x.appends_during_faults, x.max_append_ms, x.max_stop_ms,
           x.checkpoints);
    st_rmrf(x.work);
    free(x.work);
    free(x.dir);
    return 0;
}
