/*
 * test-checkpoint-fresh.c — the checkpointer and the startup freshness
 * verdict on real journals (libtally) against a real local node (ganache,
 * TALLY_TEST_RPC from with-ganache.sh) and against the file backend:
 * fresh, rolled_back (an old copy put back), forked (same id, other
 * history), deleted (directory gone or empty), stale_anchor (the chain was
 * reverted under a CHECKPOINT record), a configuration mismatch, the check
 * of every CHECKPOINT record against the chain's events, a checkpointer
 * thread whose node goes away and comes back (a TCP proxy in this process
 * is switched off and on), and anchored appends sharing transactions.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <cjson/cJSON.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "checkpoint-internal.h"
#include "testutil.h"

static const char *rpc;
static uint8_t acct0[20], key0[32], contract[20];

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static cJSON *raw_call(const char *url, const char *method, const char *params)
{
    cp_rpc *r = NULL;
    assert_int_equal(cp_rpc_new(&r, url, 10000, 3000), 0);
    cJSON *res = NULL;
    char msg[512];
    int rc = cp_rpc_call(r, method, params, &res, NULL, msg, sizeof msg);
    if (rc != 0)
        fail_msg("%s", msg);
    cp_rpc_free(r);
    return res;
}

static tally_eth *open_eth(const char *url)
{
    const char *u[1] = {url};
    tally_eth_options o = {.rpc_urls = u, .rpc_count = 1, .chain_id = 1337,
                           .from = acct0, .timeout_ms = 3000,
                           .connect_timeout_ms = 1000, .poll_ms = 20,
                           .receipt_timeout_ms = 10000};
    tally_eth *e = NULL;
    assert_int_equal(tally_eth_open(&e, &o), 0);
    return e;
}

/* A journal with n text records; the handle stays open (*ret_t) or is
 * closed (ret_t NULL). */
static void make_journal(const char *dir, const uint8_t *key, const char *name,
                         int n, const char *text, tally **ret_t)
{
    tally_options o = tu_opts(key);
    o.name = name;
    assert_int_equal(tally_init(dir, &o), 0);
    tally *t = NULL;
    assert_int_equal(tally_open(&t, dir, &o, NULL), 0);
    for (int i = 0; i < n; i++)
        tu_append_text(t, 1, NULL, text);
    if (ret_t)
        *ret_t = t;
    else
        assert_int_equal(tally_close(t), 0);
}

static tally *reopen(const char *dir, const uint8_t *key)
{
    tally_options o = tu_opts(key);
    tally *t = NULL;
    assert_int_equal(tally_open(&t, dir, &o, NULL), 0);
    return t;
}

static int setup(void **state)
{
    (void)state;
    rpc = getenv("TALLY_TEST_RPC");
    if (!rpc) {
        fprintf(stderr, "TALLY_TEST_RPC not set: run through "
                        "tests/checkpoint/with-ganache.sh\n");
        exit(77);
    }
    if (cp_hex_data("0x4f3edf983ac636a65a842ce7c78d9aa706d3b113bce9c46f30d7d21715b23b1d",
                    key0, 32) != 0 ||
        cp_eth_address(key0, acct0) != 0)
        return -1;
    tally_eth *e = open_eth(rpc);
    tally_eth_receipt r;
    int rc = tally_anchor_deploy(e, &r);
    tally_eth_close(e);
    if (rc != 0)
        return -1;
    memcpy(contract, r.contract, 20);
    return 0;
}

static void test_record_codec(void **state)
{
    (void)state;
    tally_checkpoint_info c, d;
    memset(&c, 0, sizeof c);
    c.backend = TALLY_BACKEND_ETH;
    c.seq = 0x0102030405060708ull;
    memset(c.head, 0xaa, 32);
    c.chain_id = 1337;
    memset(c.contract, 0xcc, 20);
    memset(c.writer, 0xdd, 20);
    c.block_number = 77;
    memset(c.block_hash, 0xbb, 32);
    memset(c.tx_hash, 0xee, 32);
    c.anchored_ns = 1234567890123456789ull;
    uint8_t p[TALLY_CHECKPOINT_BYTES];
    tally_checkpoint_encode(&c, p);
    assert_memory_equal(p, "TCKP\x01\x01\x00\x00\x08\x07\x06\x05\x04\x03\x02\x01", 16);
    assert_int_equal(p[48], 0x39); /* 1337 = 0x539, little-endian */
    assert_int_equal(p[49], 0x05);
    assert_int_equal(tally_checkpoint_decode(p, sizeof p, &d), 0);
    assert_memory_equal(&c.head, &d.head, 32);
    assert_true(d.seq == c.seq && d.chain_id == 1337 && d.block_number == 77 &&
                d.anchored_ns == c.anchored_ns && d.backend == 1);
    assert_memory_equal(d.tx_hash, c.tx_hash, 32);
    assert_int_equal(tally_checkpoint_decode(p, sizeof p - 1, &d), TALLY_EINTEGRITY);
    p[4] = 2;
    assert_int_equal(tally_checkpoint_decode(p, sizeof p, &d), TALLY_EFORMAT);
    p[4] = 1;
    p[5] = 9;
    assert_int_equal(tally_checkpoint_decode(p, sizeof p, &d), TALLY_EINTEGRITY);
}

static void test_verdicts_eth(void **state)
{
    (void)state;
    uint8_t key[32];
    tu_key(key, 7);
    char *dir = tu_mkdtemp("ckfresh");
    tally *t = NULL;
    make_journal(dir, key, "ledger", 5, "first", &t);

    tally_eth *e = open_eth(rpc);
    tally_anchor_target *tg = NULL;
    assert_int_equal(tally_anchor_target_eth(&tg, e, contract, NULL), 0);

    tally_freshness f;
    assert_int_equal(tally_freshness_check(tg, dir, NULL, NULL, &f), 0);
    assert_int_equal(f.verdict, TALLY_VERDICT_FRESH);
    assert_int_equal(f.anchored_seq, 0);
    assert_int_equal(f.unanchored_tail, 5);

    tally_checkpoint_info info;
    char err[512];
    int rc = tally_checkpoint_once(t, dir, tg, &info, err, sizeof err);
    if (rc != 1)
        fail_msg("checkpoint: %d %s", rc, err);
    assert_int_equal(info.seq, 5);
    assert_int_equal(info.chain_id, 1337);
    assert_memory_equal(info.contract, contract, 20);
    assert_memory_equal(info.writer, acct0, 20);
    /* Nothing new but our own CHECKPOINT record: no second transaction. */
    assert_int_equal(tally_checkpoint_once(t, dir, tg, &info, err, sizeof err), 0);

    assert_int_equal(tally_freshness_check(tg, dir, NULL, NULL, &f), 0);
    print_message("%s\n", f.message);
    assert_int_equal(f.anchored_seq, 5);
    assert_int_equal(f.local_seq, 6);
    assert_int_equal(f.unanchored_tail, 1);
    assert_int_equal(f.checkpoints, 1);
    assert_int_equal(f.has_checkpoint, 1);
    assert_int_equal(f.checkpoint_record_seq, 6);

    tu_snap *old = tu_snap_take(dir); /* seq 1..6 */
    for (int i = 0; i < 3; i++)
        tu_append_text(t, 1, NULL, "second");
    rc = tally_checkpoint_once(t, dir, tg, &info, err, sizeof err);
    if (rc != 1)
        fail_msg("checkpoint: %d %s", rc, err);
    assert_int_equal(info.seq, 9);
    assert_int_equal(tally_close(t), 0);

    assert_int_equal(tally_freshness_check(tg, dir, NULL, key, &f), 0);
    tally_checkpoint_report rep;
    rc = tally_checkpoint_verify(tg, dir, NULL, &rep);
    if (rc != 0)
        fail_msg("verify: %d %s", rc, rep.message);
    assert_int_equal(rep.checked, 2);
    assert_int_equal(rep.records, 2);

    /* Another contract: the journal's CHECKPOINT records name this one. */
    tally_eth_receipt r2;
    assert_int_equal(tally_anchor_deploy(e, &r2), 0);
    tally_anchor_target *tg2 = NULL;
    assert_int_equal(tally_anchor_target_eth(&tg2, e, r2.contract, NULL), 0);
    assert_int_equal(tally_freshness_check(tg2, dir, NULL, NULL, &f), TALLY_ECHAIN);
    print_message("%s\n", f.message);
    assert_non_null(strstr(f.message, "mismatch"));
    tally_anchor_target_free(tg2);

    /* The old copy put back: behind the anchor. */
    tu_snap_restore(old, dir);
    tu_snap_free(old);
    assert_int_equal(tally_freshness_check(tg, dir, NULL, NULL, &f), TALLY_EROLLBACK);
    print_message("%s\n", f.message);
    assert_int_equal(f.verdict, TALLY_VERDICT_ROLLED_BACK);
    assert_int_equal(f.local_seq, 6);
    assert_int_equal(f.anchored_seq, 9);
    assert_int_equal(f.behind, 3);
    assert_non_null(strstr(f.message, "rolled_back"));
    /* ... and the checkpointer refuses to anchor over it. */
    t = reopen(dir, key);
    tu_append_text(t, 1, NULL, "more");
    tu_append_text(t, 1, NULL, "more");
    tu_append_text(t, 1, NULL, "more");
    tu_append_text(t, 1, NULL, "more"); /* head 10 > anchored 9, still forked */
    rc = tally_checkpoint_once(t, dir, tg, &info, err, sizeof err);
    assert_int_equal(rc, TALLY_EFORK);
    print_message("%s\n", err);
    assert_int_equal(tally_close(t), 0);

    /* Same key and name (same id), another history. */
    tu_rmrf(dir);
    make_journal(dir, key, "ledger", 12, "other", NULL);
    assert_int_equal(tally_freshness_check(tg, dir, NULL, NULL, &f), TALLY_EFORK);
    print_message("%s\n", f.message);
    assert_int_equal(f.verdict, TALLY_VERDICT_FORKED);
    assert_int_equal(f.has_local_link, 1);
    assert_memory_not_equal(f.local_link_at_anchor, f.anchored_head, 32);

    /* Gone: judged by the id from key and name. */
    uint8_t jid[32];
    assert_int_equal(tally_journal_id(key, "ledger", jid), 0);
    tu_rmrf(dir);
    assert_int_equal(tally_freshness_check(tg, dir, jid, NULL, &f), TALLY_EDELETED);
    print_message("%s\n", f.message);
    assert_int_equal(f.verdict, TALLY_VERDICT_DELETED);
    assert_int_equal(f.anchored_seq, 9);
    assert_int_equal(tally_freshness_check(tg, dir, NULL, NULL, &f), TALLY_ENOJOURNAL);
    assert_int_equal(mkdir(dir, 0700), 0); /* empty counts as gone */
    assert_int_equal(tally_freshness_check(tg, dir, jid, NULL, &f), TALLY_EDELETED);
    /* A name never anchored: nothing to say. */
    uint8_t jid2[32];
    assert_int_equal(tally_journal_id(key, "never", jid2), 0);
    assert_int_equal(tally_freshness_check(tg, dir, jid2, NULL, &f), TALLY_ENOJOURNAL);

    tally_anchor_target_free(tg);
    tally_eth_close(e);
    tu_rmrf(dir);
    free(dir);
}

static void test_stale_anchor(void **state)
{
    (void)state;
    uint8_t key[32];
    tu_key(key, 9);
    char *dir = tu_mkdtemp("ckstale");
    tally *t = NULL;
    make_journal(dir, key, "stale", 3, "a", &t);
    tally_eth *e = open_eth(rpc);
    tally_anchor_target *tg = NULL;
    assert_int_equal(tally_anchor_target_eth(&tg, e, contract, NULL), 0);
    char err[512];
    tally_checkpoint_info info;
    assert_int_equal(tally_checkpoint_once(t, dir, tg, &info, err, sizeof err), 1);

    cJSON *snap = raw_call(rpc, "evm_snapshot", "[]");
    char p[64];
    snprintf(p, sizeof p, "[\"%s\"]", snap->valuestring);
    cJSON_Delete(snap);
    tu_append_text(t, 1, NULL, "b");
    tu_append_text(t, 1, NULL, "c");
    assert_int_equal(tally_checkpoint_once(t, dir, tg, &info, err, sizeof err), 1);
    assert_int_equal(info.seq, 6); /* 3 + CHECKPOINT + 2 */
    assert_int_equal(tally_close(t), 0);

    tally_freshness f;
    assert_int_equal(tally_freshness_check(tg, dir, NULL, NULL, &f), 0);
    cJSON_Delete(raw_call(rpc, "evm_revert", p));
    /* The node now says seq 3: the journal's own record says 6. */
    assert_int_equal(tally_freshness_check(tg, dir, NULL, NULL, &f), TALLY_ESTALE);
    print_message("%s\n", f.message);
    assert_int_equal(f.verdict, TALLY_VERDICT_STALE_ANCHOR);
    assert_int_equal(f.anchored_seq, 3);
    assert_int_equal(f.checkpoint.seq, 6);

    tally_checkpoint_report rep;
    assert_int_equal(tally_checkpoint_verify(tg, dir, NULL, &rep), TALLY_ESTALE);
    print_message("%s\n", rep.message);
    assert_int_equal(rep.bad_record_seq, 7);

    tally_anchor_target_free(tg);
    tally_eth_close(e);
    tu_rmrf(dir);
    free(dir);
}

static void test_file_backend(void **state)
{
    (void)state;
    uint8_t key[32];
    tu_key(key, 11);
    char *dir = tu_mkdtemp("ckfile");
    char *adir = tu_mkdtemp("ckfile-anchor");
    char apath[512];
    snprintf(apath, sizeof apath, "%s/anchors", adir);
    tally *t = NULL;
    make_journal(dir, key, "filed", 4, "x", &t);
    tally_anchor_target *tg = NULL;
    assert_int_equal(tally_anchor_target_file(&tg, apath), 0);
    char err[512];
    tally_checkpoint_info info;
    assert_int_equal(tally_checkpoint_once(t, dir, tg, &info, err, sizeof err), 1);
    assert_int_equal(info.backend, TALLY_BACKEND_FILE);
    assert_int_equal(info.seq, 4);
    tu_snap *old = tu_snap_take(dir);
    tu_append_text(t, 1, NULL, "y");
    assert_int_equal(tally_checkpoint_once(t, dir, tg, &info, err, sizeof err), 1);
    assert_int_equal(info.seq, 6);
    assert_int_equal(tally_close(t), 0);

    tally_freshness f;
    assert_int_equal(tally_freshness_check(tg, dir, NULL, NULL, &f), 0);
    tally_checkpoint_report rep;
    assert_int_equal(tally_checkpoint_verify(tg, dir, NULL, &rep), 0);
    assert_int_equal(rep.checked, 2);

    /* The file is monotonic too. */
    uint8_t jid[32], h[32] = {0};
    assert_int_equal(tally_journal_id(key, "filed", jid), 0);
    assert_int_equal(tally_anchor_target_submit(tg, jid, 6, h, &info), TALLY_EROLLBACK);
    assert_non_null(strstr(tally_anchor_target_errmsg(tg), "seq 6 is not greater than 6"));

    tu_snap_restore(old, dir);
    tu_snap_free(old);
    assert_int_equal(tally_freshness_check(tg, dir, NULL, NULL, &f), TALLY_EROLLBACK);
    assert_int_equal(f.behind, 1);

    tally_anchor_target_free(tg);
    tu_rmrf(dir);
    tu_rmrf(adir);
    free(dir);
    free(adir);
}

/* ---- a TCP proxy that can be switched off ------------------------------------ */

typedef struct proxy {
    int port, up_port;
    int lfd;
    volatile int down, quit;
    pthread_t th;
    pthread_mutex_t mu;
    int active;
} proxy;

typedef struct pconn {
    proxy *p;
    int a, b;
} pconn;

static void *pconn_main(void *arg)
{
    pconn *c = arg;
    char buf[16384];
    struct pollfd fds[2] = {{c->a, POLLIN, 0}, {c->b, POLLIN, 0}};
    while (!c->p->down && !c->p->quit) {
        int n = poll(fds, 2, 50);
        if (n <= 0)
            continue;
        int done = 0;
        for (int i = 0; i < 2 && !done; i++) {
            if (!(fds[i].revents & (POLLIN | POLLHUP | POLLERR)))
                continue;
            ssize_t r = read(fds[i].fd, buf, sizeof buf);
            if (r <= 0 || write(fds[1 - i].fd, buf, (size_t)r) != r)
                done = 1;
        }
        if (done)
            break;
    }
    close(c->a);
    close(c->b);
    pthread_mutex_lock(&c->p->mu);
    c->p->active--;
    pthread_mutex_unlock(&c->p->mu);
    free(c);
    return NULL;
}

static int listen_on(int port)
{
    int s = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_port = htons((uint16_t)port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (bind(s, (struct sockaddr *)&a, sizeof a) != 0 || listen(s, 16) != 0) {
        close(s);
        return -1;
    }
    return s;
}

static void *proxy_main(void *arg)
{
    proxy *p = arg;
    while (!p->quit) {
        if (p->down || p->lfd < 0) {
            usleep(20000);
            continue;
        }
        struct pollfd pf = {p->lfd, POLLIN, 0};
        if (poll(&pf, 1, 50) <= 0)
            continue;
        int a = accept(p->lfd, NULL, NULL);
        if (a < 0)
            continue;
        int b = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in up = {.sin_family = AF_INET,
                                 .sin_port = htons((uint16_t)p->up_port),
                                 .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        if (connect(b, (struct sockaddr *)&up, sizeof up) != 0) {
            close(a);
            close(b);
            continue;
        }
        pconn *c = malloc(sizeof *c);
        c->p = p;
        c->a = a;
        c->b = b;
        pthread_mutex_lock(&p->mu);
        p->active++;
        pthread_mutex_unlock(&p->mu);
        pthread_t th;
        pthread_create(&th, NULL, pconn_main, c);
        pthread_detach(th);
    }
    return NULL;
}

static void proxy_start(proxy *p, const char *upstream_url)
{
    memset(p, 0, sizeof *p);
    const char *colon = strrchr(upstream_url, ':');
    p->up_port = atoi(colon + 1);
    p->lfd = listen_on(0);
    assert_true(p->lfd >= 0);
    struct sockaddr_in a;
    socklen_t al = sizeof a;
    getsockname(p->lfd, (struct sockaddr *)&a, &al);
    p->port = ntohs(a.sin_port);
    pthread_mutex_init(&p->mu, NULL);
    pthread_create(&p->th, NULL, proxy_main, p);
}

static void wait_idle(proxy *p)
{
    for (int i = 0; i < 200; i++) {
        pthread_mutex_lock(&p->mu);
        int n = p->active;
        pthread_mutex_unlock(&p->mu);
        if (n == 0)
            return;
        usleep(10000);
    }
    fail_msg("proxy connections do not close");
}

/* Down: nothing listens (connection refused) and live connections drop. */
static void proxy_down(proxy *p)
{
    p->down = 1;
    usleep(100000); /* the accept loop leaves poll() */
    close(p->lfd);
    p->lfd = -1;
    wait_idle(p);
}

static void proxy_up(proxy *p)
{
    int s = listen_on(p->port);
    assert_true(s >= 0);
    p->lfd = s;
    p->down = 0;
}

static void proxy_stop(proxy *p)
{
    p->quit = 1;
    pthread_join(p->th, NULL);
    wait_idle(p);
    if (p->lfd >= 0)
        close(p->lfd);
    pthread_mutex_destroy(&p->mu);
}

static void test_checkpointer_node_down(void **state)
{
    (void)state;
    proxy px;
    proxy_start(&px, rpc);
    char url[64];
    snprintf(url, sizeof url, "http://127.0.0.1:%d", px.port);

    uint8_t key[32];
    tu_key(key, 13);
    char *dir = tu_mkdtemp("ckthread");
    tally *t = NULL;
    make_journal(dir, key, "thread", 0, "", &t);
    tally_eth *e = open_eth(url);
    tally_anchor_target *tg = NULL;
    assert_int_equal(tally_anchor_target_eth(&tg, e, contract, NULL), 0);
    tally_checkpointer *c = NULL;
    tally_checkpointer_options co = {.every_ms = 200, .backoff_min_ms = 100,
                                     .backoff_max_ms = 400};
    assert_int_equal(tally_checkpointer_start(&c, t, dir, tg, &co), 0);

    for (int i = 0; i < 10; i++)
        tu_append_text(t, 1, NULL, "up");
    assert_int_equal(tally_checkpointer_wait(c, 10, 10000), 0);
    tally_checkpoint_status s;
    tally_checkpointer_status(c, &s);
    assert_true(s.anchored_seq >= 10);
    assert_int_equal(s.consecutive_failures, 0);
    uint64_t anchored_before = s.anchored_seq;

    proxy_down(&px);
    uint64_t worst = 0;
    for (int i = 0; i < 10; i++) {
        uint64_t t0 = now_ms();
        tu_append_text(t, 1, NULL, "down");
        uint64_t d = now_ms() - t0;
        if (d > worst)
            worst = d;
        usleep(50000);
    }
    usleep(600000);
    tally_checkpointer_status(c, &s);
    print_message("node down: appends took at most %llu ms; lag %llu records, "
                  "%llu ms; %llu failures: %s\n",
                  (unsigned long long)worst, (unsigned long long)s.lag_records,
                  (unsigned long long)s.lag_ms,
                  (unsigned long long)s.consecutive_failures, s.last_errmsg);
    assert_true(worst < 500); /* appends never wait for the node */
    assert_int_equal(s.anchored_seq, anchored_before);
    assert_true(s.consecutive_failures >= 2);
    assert_true(s.lag_records >= 10);
    assert_true(s.lag_ms >= 500);
    assert_int_equal(s.last_error, -ECONNREFUSED);
    assert_non_null(strstr(s.last_errmsg, "connection refused"));
    tally_head_info h;
    assert_int_equal(tally_head(t, &h), 0);
    assert_int_equal(tally_checkpointer_wait(c, h.seq, 300), -ETIMEDOUT);

    proxy_up(&px);
    int rc = tally_checkpointer_wait(c, h.seq, 10000);
    tally_checkpointer_status(c, &s);
    if (rc != 0)
        fail_msg("anchoring did not resume: %d %s", rc, s.last_errmsg);
    assert_int_equal(s.consecutive_failures, 0);
    assert_true(s.anchored_seq >= h.seq);
    assert_int_equal(tally_checkpointer_stop(c), 0);
    assert_int_equal(tally_close(t), 0);

    tally_freshness f;
    assert_int_equal(tally_freshness_check(tg, dir, NULL, NULL, &f), 0);
    tally_checkpoint_report rep;
    rc = tally_checkpoint_verify(tg, dir, NULL, &rep);
    if (rc != 0)
        fail_msg("verify: %s", rep.message);
    tally_anchor_target_free(tg);
    tally_eth_close(e);
    proxy_stop(&px);
    tu_rmrf(dir);
    free(dir);
}

/* ---- anchored appends ----------------------------------------------------------- */

typedef struct appender {
    tally *t;
    tally_checkpointer *c;
    int n, failures;
} appender;

static void *append_main(void *arg)
{
    appender *a = arg;
    for (int i = 0; i < a->n; i++) {
        tally_record_in r = {.type = 1, .payload = "anchored", .payload_len = 8};
        uint64_t seq = 0;
        if (tally_append_anchored(a->t, a->c, &r, 20000, &seq) != 0)
            a->failures++;
    }
    return NULL;
}

static void test_anchored_appends(void **state)
{
    (void)state;
    uint8_t key[32];
    tu_key(key, 17);
    char *dir = tu_mkdtemp("ckanch");
    tally_options o = tu_opts(key);
    o.name = "anchored";
    o.sync = TALLY_SYNC_BATCH;
    assert_int_equal(tally_init(dir, &o), 0);
    tally *t = NULL;
    assert_int_equal(tally_open(&t, dir, &o, NULL), 0);
    tally_eth *e = open_eth(rpc);
    tally_anchor_target *tg = NULL;
    assert_int_equal(tally_anchor_target_eth(&tg, e, contract, NULL), 0);
    tally_checkpointer *c = NULL;
    assert_int_equal(tally_checkpointer_start(&c, t, dir, tg, NULL), 0);

    enum { THREADS = 16, EACH = 4 };
    pthread_t th[THREADS];
    appender ap[THREADS];
    uint64_t t0 = now_ms();
    for (int i = 0; i < THREADS; i++) {
        ap[i] = (appender){.t = t, .c = c, .n = EACH};
        pthread_create(&th[i], NULL, append_main, &ap[i]);
    }
    int failures = 0;
    for (int i = 0; i < THREADS; i++) {
        pthread_join(th[i], NULL);
        failures += ap[i].failures;
    }
    uint64_t took = now_ms() - t0;
    tally_checkpoint_status s;
    tally_checkpointer_status(c, &s);
    print_message("%d anchored appends from %d threads: %llu ms, %llu "
                  "transactions\n", THREADS * EACH, THREADS,
                  (unsigned long long)took, (unsigned long long)s.anchors);
    assert_int_equal(failures, 0);
    /* Waiting appenders share rounds: far fewer transactions than records. */
    assert_true(s.anchors >= 1);
    assert_true(s.anchors < THREADS * EACH / 2);
    assert_true(s.anchored_seq >= THREADS * EACH);
    assert_int_equal(tally_checkpointer_stop(c), 0);
    assert_int_equal(tally_close(t), 0);
    tally_freshness f;
    assert_int_equal(tally_freshness_check(tg, dir, NULL, NULL, &f), 0);
    tally_anchor_target_free(tg);
    tally_eth_close(e);
    tu_rmrf(dir);
    free(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_record_codec),
        cmocka_unit_test(test_verdicts_eth),
        cmocka_unit_test(test_stale_anchor),
        cmocka_unit_test(test_file_backend),
        cmocka_unit_test(test_checkpointer_node_down),
        cmocka_unit_test(test_anchored_appends),
    };
    return cmocka_run_group_tests(tests, setup, NULL);
}
