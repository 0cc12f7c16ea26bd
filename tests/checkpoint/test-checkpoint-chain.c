/*
 * test-checkpoint-chain.c — the Ethereum backend against real local nodes
 * (ganache, started by with-ganache.sh: TALLY_TEST_RPC, and TALLY_TEST_RPC2
 * for a second, independent chain). Deploys with an unlocked account and
 * with a locally signed transaction, anchors, reads back, is refused with
 * the decoded reason, follows receipts and confirmations, sees a reverted
 * chain (evm_snapshot/evm_revert), and reports dead, hanging and
 * disagreeing endpoints.
 *
 * The tests share one chain and run in order (each builds on the state the
 * previous ones left); the chain is fresh per run.
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
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "checkpoint-internal.h"

static const char *rpc1, *rpc2;
static uint8_t acct0[20], acct1[20], key0[32], key1[32];
static uint8_t contract[20];     /* deployed by acct0 on rpc1 */
static uint8_t contract_b[20];   /* deployed by acct1 (signed) on rpc1 */
static uint8_t journal[32], journal2[32], head1[32], head5[32];

static void unhex(const char *s, uint8_t *out, size_t len)
{
    assert_int_equal(cp_hex_data(s, out, len), 0);
}

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* A raw JSON-RPC call for what the library does not expose (evm_*,
 * web3_sha3, transactions by hash); fails the test on error. */
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

static uint64_t raw_quantity(const char *url, const char *method,
                             const char *params)
{
    cJSON *res = raw_call(url, method, params);
    uint64_t v = 0;
    assert_true(cJSON_IsString(res));
    assert_int_equal(cp_hex_quantity(res->valuestring, &v), 0);
    cJSON_Delete(res);
    return v;
}

static uint64_t nonce_of(const char *url, const uint8_t addr[20])
{
    char a[43], p[80];
    cp_hex_encode(addr, 20, a);
    snprintf(p, sizeof p, "[\"%s\",\"pending\"]", a);
    return raw_quantity(url, "eth_getTransactionCount", p);
}

static tally_eth *open_eth(const char *const *urls, size_t n, unsigned quorum,
                           const uint8_t *from, const uint8_t *key)
{
    tally_eth_options o = {
        .rpc_urls = urls,
        .rpc_count = n,
        .quorum = quorum,
        .chain_id = 1337,
        .from = from,
        .signer_key = key,
        .timeout_ms = 5000,
        .connect_timeout_ms = 2000,
        .poll_ms = 50,
        .receipt_timeout_ms = 20000,
    };
    tally_eth *e = NULL;
    assert_int_equal(tally_eth_open(&e, &o), 0);
    return e;
}

/* The address a contract created by (sender, nonce) gets:
 * keccak(rlp([sender, nonce]))[12:]. */
static void create_address(const uint8_t sender[20], uint64_t nonce,
                           uint8_t out[20])
{
    cp_rlp r;
    cp_rlp_init(&r);
    size_t l = cp_rlp_begin_list(&r);
    cp_rlp_bytes(&r, sender, 20);
    cp_rlp_uint(&r, nonce);
    cp_rlp_end_list(&r, l);
    uint8_t h[32];
    cp_keccak256(r.p, r.len, h);
    memcpy(out, h + 12, 20);
    cp_rlp_free(&r);
}

/* A TCP port with nothing listening (bound, then closed). */
static int dead_port(void)
{
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t al = sizeof a;
    assert_int_equal(bind(s, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(getsockname(s, (struct sockaddr *)&a, &al), 0);
    close(s);
    return ntohs(a.sin_port);
}

static int setup(void **state)
{
    (void)state;
    rpc1 = getenv("TALLY_TEST_RPC");
    rpc2 = getenv("TALLY_TEST_RPC2");
    if (!rpc1 || (!rpc2 && !getenv("TALLY_TEST_BLOCK_TIME"))) {
        fprintf(stderr, "TALLY_TEST_RPC/TALLY_TEST_RPC2 not set: run through "
                        "tests/checkpoint/with-ganache.sh --nodes 2\n");
        exit(77);
    }
    unhex("0x4f3edf983ac636a65a842ce7c78d9aa706d3b113bce9c46f30d7d21715b23b1d",
          key0, 32);
    unhex("0x6cbed15c793ce57650b9877cf6fa156fbef513c4e6134f022a85b1ffdd59b2a1",
          key1, 32);
    if (cp_eth_address(key0, acct0) != 0 || cp_eth_address(key1, acct1) != 0)
        return -1;
    memset(journal, 0x11, 32);
    memset(journal2, 0x22, 32);
    memset(head1, 0xaa, 32);
    memset(head5, 0xbb, 32);
    return 0;
}

static void test_chain_id(void **state)
{
    (void)state;
    const char *u[1] = {rpc1};
    tally_eth *e = open_eth(u, 1, 0, acct0, NULL);
    uint64_t id = 0, bn = 99;
    assert_int_equal(tally_eth_chain_id(e, &id), 0);
    assert_int_equal(id, 1337);
    assert_int_equal(tally_eth_block_number(e, &bn), 0);
    assert_int_equal(bn, 0); /* fresh chain */
    assert_null(tally_eth_disagreement(e));
    tally_eth_close(e);

    /* The caller's chain id is checked before anything else happens. */
    tally_eth_options o = {.rpc_urls = u, .rpc_count = 1, .chain_id = 1,
                           .from = acct0};
    assert_int_equal(tally_eth_open(&e, &o), 0);
    tally_eth_receipt r;
    assert_int_equal(tally_anchor_deploy(e, &r), TALLY_ECHAIN);
    assert_non_null(strstr(tally_eth_errmsg(e), "expects 1"));
    assert_non_null(strstr(tally_eth_errmsg(e), "on 1337"));
    tally_eth_close(e);
    assert_int_equal(nonce_of(rpc1, acct0), 0); /* nothing was sent */
}

static void test_keccak_matches_node(void **state)
{
    (void)state;
    /* An independent Keccak (ganache's web3_sha3) on lengths around the
     * rate, with pseudo-random bytes. */
    uint8_t data[300];
    unsigned x = 12345;
    for (size_t i = 0; i < sizeof data; i++) {
        x = x * 1103515245u + 12345u;
        data[i] = (uint8_t)(x >> 16);
    }
    size_t lens[] = {0, 1, 31, 32, 135, 136, 137, 271, 272, 273, 300};
    for (size_t k = 0; k < sizeof lens / sizeof lens[0]; k++) {
        char hex[2 * 300 + 3], params[2 * 300 + 16];
        cp_hex_encode(data, lens[k], hex);
        snprintf(params, sizeof params, "[\"%s\"]", hex);
        cJSON *res = raw_call(rpc1, "web3_sha3", params);
        uint8_t want[32], got[32];
        assert_true(cJSON_IsString(res));
        unhex(res->valuestring, want, 32);
        cJSON_Delete(res);
        cp_keccak256(data, lens[k], got);
        assert_memory_equal(got, want, 32);
    }
}

static void test_deploy_unlocked(void **state)
{
    (void)state;
    const char *u[1] = {rpc1};
    tally_eth *e = open_eth(u, 1, 0, acct0, NULL);
    tally_eth_receipt r;
    int rc = tally_anchor_deploy(e, &r);
    if (rc != 0)
        fail_msg("deploy: %d %s", rc, tally_eth_errmsg(e));
    memcpy(contract, r.contract, 20);
    char s[43];
    tally_eth_address_format(contract, s);
    /* account 0, nonce 0: the same address on every fresh ganache */
    assert_string_equal(s, "0xe78A0F7E598Cc8b0Bb87894B0F60dD2a88d6a8Ab");
    assert_int_equal(r.block_number, 1);
    assert_true(r.gas_used > 100000);
    assert_int_equal(tally_anchor_check_code(e, contract), 0);

    /* The block hash in the receipt is the chain's. */
    cJSON *b = raw_call(rpc1, "eth_getBlockByNumber", "[\"0x1\",false]");
    uint8_t h[32];
    unhex(cJSON_GetObjectItem(b, "hash")->valuestring, h, 32);
    assert_memory_equal(h, r.block_hash, 32);
    cJSON_Delete(b);

    /* An account is not a JournalAnchor. */
    assert_int_equal(tally_anchor_check_code(e, acct1), TALLY_ECHAIN);
    assert_non_null(strstr(tally_eth_errmsg(e), "does not hold"));
    tally_eth_close(e);
}

static void test_deploy_signed(void **state)
{
    (void)state;
    const char *u[1] = {rpc1};
    tally_eth *e = open_eth(u, 1, 0, NULL, key1);
    uint8_t sender[20];
    assert_int_equal(tally_eth_sender(e, sender), 0);
    assert_memory_equal(sender, acct1, 20);
    uint64_t nonce = nonce_of(rpc1, acct1);
    tally_eth_receipt r;
    int rc = tally_anchor_deploy(e, &r);
    if (rc != 0)
        fail_msg("deploy: %d %s", rc, tally_eth_errmsg(e));
    uint8_t want[20];
    create_address(acct1, nonce, want);
    assert_memory_equal(r.contract, want, 20);
    memcpy(contract_b, r.contract, 20);

    /* The node saw a legacy transaction from account 1 with an EIP-155 v
     * for chain 1337 (2709 or 2710). */
    char hx[67], p[80];
    cp_hex_encode(r.tx_hash, 32, hx);
    snprintf(p, sizeof p, "[\"%s\"]", hx);
    cJSON *tx = raw_call(rpc1, "eth_getTransactionByHash", p);
    uint8_t from[20];
    unhex(cJSON_GetObjectItem(tx, "from")->valuestring, from, 20);
    assert_memory_equal(from, acct1, 20);
    uint64_t v = 0;
    assert_int_equal(cp_hex_quantity(cJSON_GetObjectItem(tx, "v")->valuestring, &v), 0);
    assert_true(v == 2709 || v == 2710);
    cJSON_Delete(tx);
    tally_eth_close(e);
}

static void test_anchor_and_latest(void **state)
{
    (void)state;
    const char *u[1] = {rpc1};
    tally_eth *e = open_eth(u, 1, 0, acct0, NULL);
    tally_anchor a;
    assert_int_equal(tally_anchor_latest(e, contract, journal, acct0, &a), 0);
    assert_int_equal(a.seq, 0); /* never anchored */
    assert_int_equal(a.block_number, 0);

    tally_eth_receipt r;
    int rc = tally_anchor_submit(e, contract, journal, 1, head1, &r);
    if (rc != 0)
        fail_msg("anchor: %d %s", rc, tally_eth_errmsg(e));
    assert_int_equal(tally_anchor_latest(e, contract, journal, acct0, &a), 0);
    assert_int_equal(a.seq, 1);
    assert_memory_equal(a.head, head1, 32);
    assert_int_equal(a.block_number, r.block_number);

    char p[64];
    snprintf(p, sizeof p, "[\"0x%llx\",false]", (unsigned long long)r.block_number);
    cJSON *b = raw_call(rpc1, "eth_getBlockByNumber", p);
    uint8_t h[32];
    unhex(cJSON_GetObjectItem(b, "hash")->valuestring, h, 32);
    assert_memory_equal(h, r.block_hash, 32);
    cJSON_Delete(b);

    /* Another writer has its own counter for the same journal. */
    assert_int_equal(tally_anchor_latest(e, contract, journal, acct1, &a), 0);
    assert_int_equal(a.seq, 0);

    rc = tally_anchor_submit(e, contract, journal, 5, head5, &r);
    if (rc != 0)
        fail_msg("anchor: %d %s", rc, tally_eth_errmsg(e));
    assert_int_equal(tally_anchor_latest(e, contract, journal, acct0, &a), 0);
    assert_int_equal(a.seq, 5);
    assert_memory_equal(a.head, head5, 32);
    tally_eth_close(e);
}

static void test_not_monotonic(void **state)
{
    (void)state;
    const char *u[1] = {rpc1};
    tally_eth *e = open_eth(u, 1, 0, acct0, NULL);
    uint64_t nonce = nonce_of(rpc1, acct0);
    tally_eth_receipt r;
    assert_int_equal(tally_anchor_submit(e, contract, journal, 3, head1, &r),
                     TALLY_EROLLBACK);
    print_message("refused: %s\n", tally_eth_errmsg(e));
    assert_non_null(strstr(tally_eth_errmsg(e), "seq 3 is not greater than 5"));
    assert_int_equal(tally_anchor_submit(e, contract, journal, 5, head1, &r),
                     TALLY_EROLLBACK);
    assert_non_null(strstr(tally_eth_errmsg(e), "seq 5 is not greater than 5"));
    /* Refused by the preflight: nothing was sent. */
    assert_int_equal(nonce_of(rpc1, acct0), nonce);
    tally_anchor a;
    assert_int_equal(tally_anchor_latest(e, contract, journal, acct0, &a), 0);
    assert_int_equal(a.seq, 5);
    tally_eth_close(e);
}

static void test_signed_anchor_and_status0(void **state)
{
    (void)state;
    const char *u[1] = {rpc1};
    tally_eth *e = open_eth(u, 1, 0, NULL, key1);
    tally_eth_receipt r;
    int rc = tally_anchor_submit(e, contract, journal, 2, head1, &r);
    if (rc != 0)
        fail_msg("anchor: %d %s", rc, tally_eth_errmsg(e));
    tally_anchor a;
    assert_int_equal(tally_anchor_latest(e, contract, journal, acct1, &a), 0);
    assert_int_equal(a.seq, 2);
    assert_int_equal(tally_anchor_latest(e, contract, journal, acct0, &a), 0);
    assert_int_equal(a.seq, 5); /* account 0's anchor untouched */

    /* A transaction that reverts on chain, sent without the preflight and
     * with a fixed gas limit: mined with status 0, which is an error. */
    uint8_t call[100];
    memcpy(call, "\x70\xc1\x27\xc6", 4);
    memcpy(call + 4, journal, 32);
    memset(call + 36, 0, 32);
    call[67] = 1; /* seq 1 <= 2 */
    memcpy(call + 68, head1, 32);
    uint64_t nonce = nonce_of(rpc1, acct1);
    cp_receipt cr;
    rc = cp_eth_transact(e, "anchor seq 1", contract, call, sizeof call, 100000, &cr);
    assert_int_equal(rc, TALLY_EREVERTED);
    print_message("mined, reverted: %s\n", tally_eth_errmsg(e));
    assert_non_null(strstr(tally_eth_errmsg(e), "status 0"));
    assert_int_equal(nonce_of(rpc1, acct1), nonce + 1); /* it was mined */

    /* The next transaction takes the next nonce (re-read, not cached). */
    rc = tally_anchor_submit(e, contract, journal, 3, head5, &r);
    if (rc != 0)
        fail_msg("anchor after a failed send: %d %s", rc, tally_eth_errmsg(e));
    assert_int_equal(nonce_of(rpc1, acct1), nonce + 2);
    tally_eth_close(e);
}

static void test_events(void **state)
{
    (void)state;
    const char *u[1] = {rpc1};
    tally_eth *e = open_eth(u, 1, 0, NULL, NULL);
    tally_anchor_event *ev = NULL;
    int n = tally_anchor_events(e, contract, journal, acct0, 0, &ev);
    assert_int_equal(n, 2);
    assert_int_equal(ev[0].seq, 1);
    assert_memory_equal(ev[0].head, head1, 32);
    assert_int_equal(ev[1].seq, 5);
    assert_memory_equal(ev[1].head, head5, 32);
    assert_true(ev[0].block_number < ev[1].block_number);
    char p[64];
    snprintf(p, sizeof p, "[\"0x%llx\",false]",
             (unsigned long long)ev[1].block_number);
    cJSON *b = raw_call(rpc1, "eth_getBlockByNumber", p);
    uint8_t h[32];
    unhex(cJSON_GetObjectItem(b, "hash")->valuestring, h, 32);
    assert_memory_equal(h, ev[1].block_hash, 32);
    cJSON_Delete(b);
    uint64_t from = ev[1].block_number;
    free(ev);

    /* From a later block only the later event; other writer and journal
     * are separate. */
    ev = NULL;
    assert_int_equal(tally_anchor_events(e, contract, journal, acct0, from, &ev), 1);
    assert_int_equal(ev[0].seq, 5);
    free(ev);
    ev = NULL;
    assert_int_equal(tally_anchor_events(e, contract, journal, acct1, 0, &ev), 2);
    assert_int_equal(ev[0].seq, 2);
    assert_int_equal(ev[1].seq, 3);
    free(ev);
    ev = (tally_anchor_event *)1;
    assert_int_equal(tally_anchor_events(e, contract, journal2, acct0, 0, &ev), 0);
    assert_null(ev);

    /* A read-only handle cannot send. */
    tally_eth_receipt r;
    assert_int_equal(tally_anchor_submit(e, contract, journal, 9, head1, &r), -ENOKEY);
    tally_eth_close(e);
}

static void test_snapshot_revert(void **state)
{
    (void)state;
    const char *u[1] = {rpc1};
    tally_eth *e = open_eth(u, 1, 0, acct0, NULL);
    cJSON *snap = raw_call(rpc1, "evm_snapshot", "[]");
    assert_true(cJSON_IsString(snap));
    char p[64];
    snprintf(p, sizeof p, "[\"%s\"]", snap->valuestring);
    cJSON_Delete(snap);

    tally_eth_receipt r;
    assert_int_equal(tally_anchor_submit(e, contract, journal, 10, head1, &r), 0);
    tally_anchor a;
    assert_int_equal(tally_anchor_latest(e, contract, journal, acct0, &a), 0);
    assert_int_equal(a.seq, 10);

    cJSON *ok = raw_call(rpc1, "evm_revert", p);
    assert_true(cJSON_IsTrue(ok));
    cJSON_Delete(ok);
    /* The chain went back: so does what we read. */
    assert_int_equal(tally_anchor_latest(e, contract, journal, acct0, &a), 0);
    assert_int_equal(a.seq, 5);
    assert_memory_equal(a.head, head5, 32);
    tally_eth_close(e);
}

/* Mines a block every 100 ms until told to stop: instamine makes blocks
 * only for transactions, and confirmations need blocks on top. */
static volatile int miner_stop;
static void *miner(void *arg)
{
    (void)arg;
    while (!miner_stop) {
        struct timespec ts = {0, 100 * 1000000L};
        nanosleep(&ts, NULL);
        if (!miner_stop)
            cJSON_Delete(raw_call(rpc1, "evm_mine", "[]"));
    }
    return NULL;
}

static void test_confirmations(void **state)
{
    (void)state;
    const char *u[1] = {rpc1};
    tally_eth_options o = {.rpc_urls = u, .rpc_count = 1, .chain_id = 1337,
                           .from = acct0, .confirmations = 4, .poll_ms = 50,
                           .receipt_timeout_ms = 20000};
    tally_eth *e = NULL;
    assert_int_equal(tally_eth_open(&e, &o), 0);
    pthread_t t;
    miner_stop = 0;
    assert_int_equal(pthread_create(&t, NULL, miner, NULL), 0);
    tally_eth_receipt r;
    int rc = tally_anchor_submit(e, contract, journal, 6, head1, &r);
    uint64_t head = raw_quantity(rpc1, "eth_blockNumber", "[]");
    miner_stop = 1;
    pthread_join(t, NULL);
    if (rc != 0)
        fail_msg("anchor: %d %s", rc, tally_eth_errmsg(e));
    /* Returned only once the block had 3 more on top. */
    assert_true(head >= r.block_number + 3);
    tally_eth_close(e);

    /* Without blocks coming, the wait ends at its timeout. */
    o.receipt_timeout_ms = 600;
    assert_int_equal(tally_eth_open(&e, &o), 0);
    uint64_t t0 = now_ms();
    rc = tally_anchor_submit(e, contract, journal, 7, head1, &r);
    uint64_t took = now_ms() - t0;
    assert_int_equal(rc, -ETIMEDOUT);
    print_message("unconfirmed: %s\n", tally_eth_errmsg(e));
    assert_non_null(strstr(tally_eth_errmsg(e), "not confirmed within 600 ms"));
    /* (it was mined all the same: latest is 7 from here on) */
    assert_true(took < 3000);
    tally_eth_close(e);
}

static void test_dead_endpoint(void **state)
{
    (void)state;
    char url[64];
    snprintf(url, sizeof url, "http://127.0.0.1:%d", dead_port());
    const char *u[1] = {url};
    tally_eth *e = open_eth(u, 1, 0, acct0, NULL);
    uint64_t t0 = now_ms(), id;
    assert_int_equal(tally_eth_chain_id(e, &id), -ECONNREFUSED);
    assert_true(now_ms() - t0 < 2000);
    print_message("dead: %s\n", tally_eth_errmsg(e));
    assert_non_null(strstr(tally_eth_errmsg(e), "connection refused"));
    assert_non_null(strstr(tally_eth_errmsg(e), url));
    tally_eth_receipt r;
    assert_int_equal(tally_anchor_submit(e, contract, journal, 9, head1, &r),
                     -ECONNREFUSED);
    tally_eth_close(e);

    /* Credentials in the URL stay out of messages. */
    char secret_url[128];
    snprintf(secret_url, sizeof secret_url,
             "http://user:hunter2@127.0.0.1:%d/v3/APIKEY123", dead_port());
    u[0] = secret_url;
    e = open_eth(u, 1, 0, acct0, NULL);
    assert_int_equal(tally_eth_chain_id(e, &id), -ECONNREFUSED);
    assert_null(strstr(tally_eth_errmsg(e), "hunter2"));
    assert_null(strstr(tally_eth_errmsg(e), "APIKEY123"));
    tally_eth_close(e);
}

static void test_hanging_endpoint(void **state)
{
    (void)state;
    /* Accepts connections (the kernel completes the handshake from the
     * backlog) and never answers. */
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t al = sizeof a;
    assert_int_equal(bind(s, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(listen(s, 8), 0);
    assert_int_equal(getsockname(s, (struct sockaddr *)&a, &al), 0);
    char url[64];
    snprintf(url, sizeof url, "http://127.0.0.1:%d", ntohs(a.sin_port));
    const char *u[1] = {url};
    tally_eth_options o = {.rpc_urls = u, .rpc_count = 1, .timeout_ms = 400,
                           .connect_timeout_ms = 200};
    tally_eth *e = NULL;
    assert_int_equal(tally_eth_open(&e, &o), 0);
    uint64_t t0 = now_ms(), id;
    assert_int_equal(tally_eth_chain_id(e, &id), -ETIMEDOUT);
    uint64_t took = now_ms() - t0;
    assert_true(took >= 350 && took < 2000);
    print_message("hanging (%llu ms): %s\n", (unsigned long long)took,
                  tally_eth_errmsg(e));
    assert_non_null(strstr(tally_eth_errmsg(e), "timed out"));
    tally_eth_close(e);
    close(s);
}

static void test_disagreement(void **state)
{
    (void)state;
    /* A second, independent chain where the same account deploys at the
     * same nonce: the contract has the same address there, but none of
     * the anchors made on the first chain. */
    const char *u2[1] = {rpc2};
    tally_eth *e = open_eth(u2, 1, 0, acct0, NULL);
    tally_eth_receipt r;
    int rc = tally_anchor_deploy(e, &r);
    if (rc != 0)
        fail_msg("deploy on node 2: %d %s", rc, tally_eth_errmsg(e));
    assert_memory_equal(r.contract, contract, 20);
    tally_eth_close(e);

    /* All must agree: refused, both sides named. */
    const char *both[2] = {rpc1, rpc2};
    e = open_eth(both, 2, 0, acct0, NULL);
    tally_anchor a = {.seq = 777};
    assert_int_equal(tally_anchor_latest(e, contract, journal, acct0, &a),
                     TALLY_ECHAIN);
    assert_int_equal(a.seq, 777); /* not written on failure */
    const char *m = tally_eth_errmsg(e);
    print_message("disagree: %s\n", m);
    assert_non_null(strstr(m, "disagree on latest anchor"));
    assert_non_null(strstr(m, rpc1 + 7)); /* without the scheme's // part */
    assert_non_null(strstr(m, rpc2 + 7));
    /* The same chain id, so that read agrees. */
    uint64_t id;
    assert_int_equal(tally_eth_chain_id(e, &id), 0);
    tally_eth_close(e);

    /* A majority (2 of 3) carries the read, and the outvoted endpoint is
     * still reported. */
    const char *three[3] = {rpc1, rpc2, rpc1};
    e = open_eth(three, 3, 2, acct0, NULL);
    assert_int_equal(tally_anchor_latest(e, contract, journal, acct0, &a), 0);
    assert_int_equal(a.seq, 7); /* test_confirmations left 7 */
    assert_non_null(tally_eth_disagreement(e));
    print_message("outvoted: %s\n", tally_eth_disagreement(e));
    assert_non_null(strstr(tally_eth_disagreement(e), rpc2 + 7));
    tally_eth_close(e);

    /* 2 of 3 with the majority on the other side wins the other way: the
     * quorum counts, it does not prefer the first URL. */
    const char *three2[3] = {rpc1, rpc2, rpc2};
    e = open_eth(three2, 3, 2, acct0, NULL);
    assert_int_equal(tally_anchor_latest(e, contract, journal, acct0, &a), 0);
    assert_int_equal(a.seq, 0);
    assert_non_null(tally_eth_disagreement(e));
    tally_eth_close(e);

    /* Unanimous: no disagreement recorded. */
    const char *same[2] = {rpc1, rpc1};
    e = open_eth(same, 2, 0, acct0, NULL);
    assert_int_equal(tally_anchor_latest(e, contract, journal, acct0, &a), 0);
    assert_null(tally_eth_disagreement(e));
    tally_eth_close(e);
}

static void test_failover_and_quorum_with_dead(void **state)
{
    (void)state;
    char dead[64];
    snprintf(dead, sizeof dead, "http://127.0.0.1:%d", dead_port());
    const char *u[3] = {dead, rpc1, rpc1};
    tally_eth *e = open_eth(u, 3, 2, acct0, NULL);
    tally_anchor a;
    assert_int_equal(tally_anchor_latest(e, contract, journal, acct0, &a), 0);
    assert_int_equal(a.seq, 7);
    assert_non_null(strstr(tally_eth_disagreement(e), "nothing"));
    /* The transaction goes to the first endpoint that takes connections. */
    tally_eth_receipt r;
    int rc = tally_anchor_submit(e, contract, journal, 8, head5, &r);
    if (rc != 0)
        fail_msg("anchor with a dead first endpoint: %d %s", rc,
                 tally_eth_errmsg(e));
    assert_int_equal(tally_anchor_latest(e, contract, journal, acct0, &a), 0);
    assert_int_equal(a.seq, 8);
    tally_eth_close(e);

    /* Without a quorum the dead endpoint fails the read. */
    const char *u2[2] = {rpc1, dead};
    e = open_eth(u2, 2, 0, acct0, NULL);
    assert_int_equal(tally_anchor_latest(e, contract, journal, acct0, &a),
                     -ECONNREFUSED);
    print_message("one dead: %s\n", tally_eth_errmsg(e));
    assert_non_null(strstr(tally_eth_errmsg(e), "1 of 2 endpoints answered"));
    tally_eth_close(e);
}

static void test_wrong_contract(void **state)
{
    (void)state;
    const char *u[1] = {rpc1};
    tally_eth *e = open_eth(u, 1, 0, acct0, NULL);
    tally_anchor a;
    /* An account without code answers eth_call with empty data. */
    assert_int_equal(tally_anchor_latest(e, acct1, journal, acct0, &a),
                     TALLY_ECHAIN);
    assert_non_null(strstr(tally_eth_errmsg(e), "wrong contract address"));
    tally_eth_close(e);
}

/* With a block every second (with-ganache.sh --block-time 1) the receipt
 * is null for up to a second and confirmations come by themselves: the
 * polling path of a real chain. */
static void test_block_time(void **state)
{
    (void)state;
    const char *u[1] = {rpc1};
    tally_eth_options o = {.rpc_urls = u, .rpc_count = 1, .chain_id = 1337,
                           .signer_key = key1, .confirmations = 2,
                           .poll_ms = 100, .receipt_timeout_ms = 20000};
    tally_eth *e = NULL;
    assert_int_equal(tally_eth_open(&e, &o), 0);
    tally_eth_receipt r;
    int rc = tally_anchor_deploy(e, &r);
    if (rc != 0)
        fail_msg("deploy: %d %s", rc, tally_eth_errmsg(e));
    uint8_t c[20];
    memcpy(c, r.contract, 20);
    uint64_t t0 = now_ms();
    rc = tally_anchor_submit(e, c, journal, 1, head1, &r);
    uint64_t took = now_ms() - t0;
    if (rc != 0)
        fail_msg("anchor: %d %s", rc, tally_eth_errmsg(e));
    print_message("anchor with 2 confirmations at 1 block/s: %llu ms\n",
                  (unsigned long long)took);
    assert_true(took >= 900); /* at least one more block had to come */
    uint64_t head = raw_quantity(rpc1, "eth_blockNumber", "[]");
    assert_true(head >= r.block_number + 1);
    tally_anchor a;
    assert_int_equal(tally_anchor_latest(e, c, journal, acct1, &a), 0);
    assert_int_equal(a.seq, 1);
    assert_int_equal(a.block_number, r.block_number);
    tally_eth_close(e);
}

int main(void)
{
    if (getenv("TALLY_TEST_BLOCK_TIME")) {
        const struct CMUnitTest bt[] = {cmocka_unit_test(test_block_time)};
        return cmocka_run_group_tests(bt, setup, NULL);
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_chain_id),
        cmocka_unit_test(test_keccak_matches_node),
        cmocka_unit_test(test_deploy_unlocked),
        cmocka_unit_test(test_deploy_signed),
        cmocka_unit_test(test_anchor_and_latest),
        cmocka_unit_test(test_not_monotonic),
        cmocka_unit_test(test_signed_anchor_and_status0),
        cmocka_unit_test(test_events),
        cmocka_unit_test(test_snapshot_revert),
        cmocka_unit_test(test_confirmations),
        cmocka_unit_test(test_dead_endpoint),
        cmocka_unit_test(test_hanging_endpoint),
        cmocka_unit_test(test_disagreement),
        cmocka_unit_test(test_failover_and_quorum_with_dead),
        cmocka_unit_test(test_wrong_contract),
    };
    return cmocka_run_group_tests(tests, setup, NULL);
}
