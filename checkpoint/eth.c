/*
 * eth.c — the tally_eth handle: a set of JSON-RPC endpoints that must agree
 * on what they read, and one sender (an unlocked account or a local signer
 * key) whose transactions are followed until they are mined, confirmed and
 * seen in the same block by every endpoint.
 *
 * Why reads ask every endpoint: the freshness verdict is only as good as the
 * chain data behind it, and a single RPC node can be stale, on another chain
 * or lying. A second, independent endpoint turns that into a reported
 * disagreement (TALLY_ECHAIN) instead of a silently wrong answer.
 *
 * Transactions go to one endpoint (the first that accepts connections). The
 * nonce of a locally signed transaction is read from that endpoint
 * ("pending") before every send, so after a failed send the next one never
 * reuses a stale nonce.
 */
#include "checkpoint-internal.h"

#include <cjson/cJSON.h>
#include <curl/curl.h>
#include <errno.h>
#include <inttypes.h>
#include <sodium.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define DEFAULT_TIMEOUT_MS 10000u
#define DEFAULT_CONNECT_MS 3000u
#define DEFAULT_POLL_MS 250u
#define DEFAULT_RECEIPT_MS 120000u
#define READ_RETRIES 2

int cp_eth_fail(tally_eth *e, int rc, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->errmsg, sizeof e->errmsg, fmt, ap);
    va_end(ap);
    return rc;
}

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void sleep_ms(uint32_t ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

int tally_eth_open(tally_eth **ret, const tally_eth_options *opt)
{
    if (!opt || !opt->rpc_urls || opt->rpc_count == 0 ||
        opt->rpc_count > TALLY_ETH_MAX_RPC || (opt->from && opt->signer_key))
        return -EINVAL;
    if (opt->quorum != 0 &&
        (opt->quorum > opt->rpc_count || 2 * (size_t)opt->quorum <= opt->rpc_count))
        return -EINVAL;
    if (sodium_init() < 0)
        return -EIO;
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
        return -EIO;

    tally_eth *e = calloc(1, sizeof *e);
    if (!e) {
        curl_global_cleanup();
        return -ENOMEM;
    }
    int rc = 0;
    uint32_t to = opt->timeout_ms ? opt->timeout_ms : DEFAULT_TIMEOUT_MS;
    uint32_t co = opt->connect_timeout_ms ? opt->connect_timeout_ms
                                          : DEFAULT_CONNECT_MS;
    for (size_t i = 0; i < opt->rpc_count; i++) {
        if (!opt->rpc_urls[i]) {
            rc = -EINVAL;
            goto fail;
        }
        rc = cp_rpc_new(&e->ep[i], opt->rpc_urls[i], to, co);
        if (rc < 0)
            goto fail;
        e->n++;
    }
    e->quorum = opt->quorum;
    e->want_chain_id = opt->chain_id;
    e->confirmations = opt->confirmations;
    e->poll_ms = opt->poll_ms ? opt->poll_ms : DEFAULT_POLL_MS;
    e->receipt_timeout_ms =
        opt->receipt_timeout_ms ? opt->receipt_timeout_ms : DEFAULT_RECEIPT_MS;
    if (opt->from) {
        memcpy(e->sender, opt->from, 20);
        e->has_sender = 1;
    } else if (opt->signer_key) {
        e->key = sodium_malloc(32);
        if (!e->key) {
            rc = -ENOMEM;
            goto fail;
        }
        memcpy(e->key, opt->signer_key, 32);
        rc = cp_eth_address(e->key, e->sender);
        if (rc < 0)
            goto fail;
        e->has_sender = 1;
    }
    *ret = e;
    return 0;
fail:
    tally_eth_close(e);
    return rc;
}

void tally_eth_close(tally_eth *e)
{
    if (!e)
        return;
    for (size_t i = 0; i < e->n; i++)
        cp_rpc_free(e->ep[i]);
    if (e->key) {
        sodium_memzero(e->key, 32);
        sodium_free(e->key);
    }
    free(e);
    curl_global_cleanup();
}

const char *tally_eth_errmsg(const tally_eth *e)
{
    return e->errmsg;
}

const char *tally_eth_disagreement(const tally_eth *e)
{
    return e->disagree[0] ? e->disagree : NULL;
}

int tally_eth_sender(const tally_eth *e, uint8_t ret_addr[static 20])
{
    if (!e->has_sender)
        return -ENOKEY;
    memcpy(ret_addr, e->sender, 20);
    return 0;
}

/* ---- reads with agreement ------------------------------------------------ */

int cp_norm_data(const cJSON *res, void *ctx, char **ret, char *why,
                 size_t whysz)
{
    (void)ctx;
    uint8_t *d = NULL;
    size_t n = 0;
    if (!cJSON_IsString(res) || cp_hex_data_alloc(res->valuestring, &d, &n) < 0) {
        snprintf(why, whysz, "result is not hex data");
        return -EPROTO;
    }
    char *s = malloc(2 * n + 3);
    if (!s) {
        free(d);
        return -ENOMEM;
    }
    cp_hex_encode(d, n, s); /* lower-cased: "0xAB" and "0xab" agree */
    free(d);
    *ret = s;
    return 0;
}

static int norm_quantity(const cJSON *res, void *ctx, char **ret, char *why,
                         size_t whysz)
{
    (void)ctx;
    uint64_t v;
    if (!cJSON_IsString(res) || cp_hex_quantity(res->valuestring, &v) < 0) {
        snprintf(why, whysz, "result is not a quantity");
        return -EPROTO;
    }
    if (asprintf(ret, "%" PRIu64, v) < 0)
        return -ENOMEM;
    return 0;
}

/* How a value is shown in a disagreement report: long values are cut. */
static void append_value(char *out, size_t outsz, const char *name,
                         const char *val)
{
    size_t len = strlen(out);
    if (len >= outsz - 1)
        return;
    size_t vl = strlen(val);
    if (vl > 70)
        snprintf(out + len, outsz - len, "%s%s says %.32s...%.32s",
                 len ? "; " : "", name, val, val + vl - 32);
    else
        snprintf(out + len, outsz - len, "%s%s says %s", len ? "; " : "",
                 name, val);
}

int cp_eth_read(tally_eth *e, const char *what, const char *method,
                const char *params, cp_norm_fn norm, void *ctx, char **ret)
{
    char *val[TALLY_ETH_MAX_RPC];
    int rcs[TALLY_ETH_MAX_RPC];
    char msg[TALLY_ETH_MAX_RPC][384];
    int rc = 0;

    e->disagree[0] = '\0';
    for (int attempt = 0;; attempt++) {
        size_t n_ok = 0, best = 0, best_count = 0, distinct = 0;
        for (size_t i = 0; i < e->n; i++) {
            cJSON *res = NULL;
            val[i] = NULL;
            msg[i][0] = '\0';
            rcs[i] = cp_rpc_call(e->ep[i], method, params, &res, NULL, msg[i],
                                 sizeof msg[i]);
            if (rcs[i] == CP_RPC_EREMOTE)
                rcs[i] = -EPROTO; /* a read has no business reverting */
            if (rcs[i] == 0) {
                char why[128] = "";
                rcs[i] = norm(res, ctx, &val[i], why, sizeof why);
                if (rcs[i] < 0)
                    snprintf(msg[i], sizeof msg[i], "%s: %s: %s",
                             cp_rpc_name(e->ep[i]), method, why);
            }
            cJSON_Delete(res);
            if (rcs[i] == 0)
                n_ok++;
        }
        /* Count each distinct value once, at its first occurrence. */
        for (size_t i = 0; i < e->n; i++) {
            if (rcs[i] != 0)
                continue;
            size_t count = 0, first = 1;
            for (size_t j = 0; j < e->n; j++) {
                if (rcs[j] == 0 && strcmp(val[i], val[j]) == 0) {
                    count++;
                    if (j < i)
                        first = 0;
                }
            }
            if (first)
                distinct++;
            if (count > best_count) {
                best_count = count;
                best = i;
            }
        }
        size_t need = e->quorum ? e->quorum : e->n;
        int unanimous = n_ok == e->n && distinct == 1;
        int ok = best_count >= need && (e->quorum || unanimous);

        if (!unanimous && e->n > 1) {
            char rep[sizeof e->disagree - 128] = ""; /* room for what */
            for (size_t i = 0; i < e->n; i++) {
                if (rcs[i] == 0)
                    append_value(rep, sizeof rep, cp_rpc_name(e->ep[i]), val[i]);
                else {
                    char no[96];
                    snprintf(no, sizeof no, "nothing (%s)",
                             strerror(-rcs[i] > 0 && -rcs[i] < 200 ? -rcs[i]
                                                                   : EPROTO));
                    append_value(rep, sizeof rep, cp_rpc_name(e->ep[i]), no);
                }
            }
            snprintf(e->disagree, sizeof e->disagree, "%.100s: %s", what, rep);
        }

        if (ok) {
            *ret = val[best];
            val[best] = NULL;
            rc = 0;
        } else if (distinct >= 2) {
            rc = cp_eth_fail(e, TALLY_ECHAIN,
                             "RPC endpoints disagree on %s (%zu of %zu agree, "
                             "%zu needed): %s",
                             what, best_count, e->n, need, e->disagree + strlen(what) + 2);
        } else {
            /* Not enough answers: report the first failure (with one
             * endpoint, exactly its error). */
            size_t f = 0;
            while (f < e->n && rcs[f] == 0)
                f++;
            rc = rcs[f];
            if (e->n == 1)
                cp_eth_fail(e, rc, "%s", msg[f]);
            else
                cp_eth_fail(e, rc, "%s: %zu of %zu endpoints answered, %zu needed; %s",
                            what, n_ok, e->n, need, msg[f]);
        }
        for (size_t i = 0; i < e->n; i++)
            free(val[i]);
        if (rc != TALLY_ECHAIN || attempt >= READ_RETRIES)
            return rc;
        sleep_ms(e->poll_ms);
    }
}

int cp_eth_ensure_chain(tally_eth *e)
{
    if (e->chain_checked)
        return 0;
    char *v = NULL;
    int rc = cp_eth_read(e, "chain id", "eth_chainId", "[]", norm_quantity,
                         NULL, &v);
    if (rc < 0)
        return rc;
    uint64_t id = strtoull(v, NULL, 10);
    free(v);
    if (e->want_chain_id && id != e->want_chain_id)
        return cp_eth_fail(e, TALLY_ECHAIN,
                           "chain id: the caller expects %" PRIu64
                           ", the RPC endpoints are on %" PRIu64,
                           e->want_chain_id, id);
    e->chain_id = id;
    e->chain_checked = 1;
    return 0;
}

int tally_eth_chain_id(tally_eth *e, uint64_t *ret_chain_id)
{
    int rc = cp_eth_ensure_chain(e);
    if (rc < 0)
        return rc;
    *ret_chain_id = e->chain_id;
    return 0;
}

/* Block numbers differ between healthy endpoints, so they are not compared:
 * each answering endpoint's number is collected and the lowest returned. */
static int norm_any_quantity(const cJSON *res, void *ctx, char **ret,
                             char *why, size_t whysz)
{
    uint64_t *low = ctx;
    uint64_t v;
    if (!cJSON_IsString(res) || cp_hex_quantity(res->valuestring, &v) < 0) {
        snprintf(why, whysz, "result is not a quantity");
        return -EPROTO;
    }
    if (v < *low)
        *low = v;
    *ret = strdup("any");
    return *ret ? 0 : -ENOMEM;
}

int tally_eth_block_number(tally_eth *e, uint64_t *ret_block)
{
    int rc = cp_eth_ensure_chain(e);
    if (rc < 0)
        return rc;
    uint64_t low = UINT64_MAX;
    char *v = NULL;
    rc = cp_eth_read(e, "block number", "eth_blockNumber", "[]",
                     norm_any_quantity, &low, &v);
    if (rc < 0)
        return rc;
    free(v);
    *ret_block = low;
    return 0;
}

/* ---- one endpoint: the writer ------------------------------------------- */

static int is_unreachable(int rc)
{
    return rc == -ECONNREFUSED || rc == -EHOSTUNREACH || rc == -ENETUNREACH;
}

static int writer_call(tally_eth *e, const char *method, const char *params,
                       cJSON **ret, cp_rpc_error *err)
{
    char msg[512];
    int rc = cp_rpc_call(e->ep[e->writer], method, params, ret, err, msg,
                         sizeof msg);
    if (rc < 0)
        cp_eth_fail(e, rc, "%s", msg);
    return rc;
}

static int writer_quantity(tally_eth *e, const char *method,
                           const char *params, uint64_t *ret)
{
    cJSON *res = NULL;
    int rc = writer_call(e, method, params, &res, NULL);
    if (rc == CP_RPC_EREMOTE)
        rc = -EPROTO;
    if (rc < 0)
        return rc;
    uint64_t v;
    if (!cJSON_IsString(res) || cp_hex_quantity(res->valuestring, &v) < 0)
        rc = cp_eth_fail(e, -EPROTO, "%s: %s: result is not a quantity",
                         cp_rpc_name(e->ep[e->writer]), method);
    else
        *ret = v;
    cJSON_Delete(res);
    return rc;
}

/* The writer is the first endpoint that accepts a connection, starting from
 * the current one; asked with a cheap call before each transaction. */
static int pick_writer(tally_eth *e)
{
    int rc = 0;
    for (size_t k = 0; k < e->n; k++) {
        size_t i = (e->writer + k) % e->n;
        size_t saved = e->writer;
        e->writer = i;
        uint64_t bn;
        rc = writer_quantity(e, "eth_blockNumber", "[]", &bn);
        if (!is_unreachable(rc))
            return rc;
        e->writer = saved;
    }
    return rc;
}

/* Builds the call object {"from","to","data"[,"gas"]} of a transaction. */
static char *call_object(const tally_eth *e, const uint8_t *to,
                         const uint8_t *data, size_t len, uint64_t gas,
                         int with_from)
{
    char fromf[64] = "", tof[64] = "", gasf[40] = "", a[43];
    char *hex = malloc(2 * len + 3);
    char *out = NULL;
    if (!hex)
        return NULL;
    cp_hex_encode(data, len, hex);
    if (with_from) {
        cp_hex_encode(e->sender, 20, a);
        snprintf(fromf, sizeof fromf, "\"from\":\"%s\",", a);
    }
    if (to) {
        cp_hex_encode(to, 20, a);
        snprintf(tof, sizeof tof, "\"to\":\"%s\",", a);
    }
    if (gas)
        snprintf(gasf, sizeof gasf, ",\"gas\":\"0x%" PRIx64 "\"", gas);
    if (asprintf(&out, "{%s%s\"data\":\"%s\"%s}", fromf, tof, hex, gasf) < 0)
        out = NULL;
    free(hex);
    return out;
}

int cp_eth_preflight(tally_eth *e, const char *what, const uint8_t *to,
                     const uint8_t *data, size_t len)
{
    if (!e->has_sender)
        return cp_eth_fail(e, -ENOKEY, "%s: no sender (--from or a signer key)",
                           what);
    int rc = cp_eth_ensure_chain(e);
    if (rc < 0)
        return rc;
    rc = pick_writer(e);
    if (rc < 0)
        return rc;
    char *obj = call_object(e, to, data, len, 0, 1);
    char *params = NULL;
    if (!obj || asprintf(&params, "[%s,\"latest\"]", obj) < 0) {
        free(obj);
        return -ENOMEM;
    }
    free(obj);
    cJSON *res = NULL;
    cp_rpc_error err;
    rc = writer_call(e, "eth_call", params, &res, &err);
    free(params);
    cJSON_Delete(res);
    if (rc == CP_RPC_EREMOTE) {
        char reason[256];
        if (err.has_data) {
            rc = cp_anchor_decode_revert(err.data, err.data_len, reason,
                                         sizeof reason);
            cp_eth_fail(e, rc, "%s refused by the contract: %s", what, reason);
        } else if (strstr(err.message, "revert")) {
            rc = cp_eth_fail(e, TALLY_EREVERTED, "%s refused: %s", what,
                             err.message);
        } else {
            rc = -EPROTO; /* errmsg already names the node's error */
        }
        cp_rpc_error_clear(&err);
    }
    return rc;
}

/* ---- transactions ------------------------------------------------------- */

static int estimate_gas(tally_eth *e, const char *what, const uint8_t *to,
                        const uint8_t *data, size_t len, uint64_t *ret)
{
    char *obj = call_object(e, to, data, len, 0, 1);
    char *params = NULL;
    if (!obj || asprintf(&params, "[%s]", obj) < 0) {
        free(obj);
        return -ENOMEM;
    }
    free(obj);
    cJSON *res = NULL;
    cp_rpc_error err;
    int rc = writer_call(e, "eth_estimateGas", params, &res, &err);
    free(params);
    if (rc == CP_RPC_EREMOTE) {
        char reason[256];
        if (err.has_data) {
            rc = cp_anchor_decode_revert(err.data, err.data_len, reason,
                                         sizeof reason);
            cp_eth_fail(e, rc, "%s refused by the contract: %s", what, reason);
        } else {
            rc = -EPROTO;
        }
        cp_rpc_error_clear(&err);
        return rc;
    }
    if (rc < 0)
        return rc;
    uint64_t g;
    if (!cJSON_IsString(res) || cp_hex_quantity(res->valuestring, &g) < 0 ||
        g > UINT64_MAX / 2)
        rc = cp_eth_fail(e, -EPROTO, "%s: eth_estimateGas: bad result",
                         cp_rpc_name(e->ep[e->writer]));
    else
        *ret = g + g / 4 + 10000; /* headroom: state may change before mining */
    cJSON_Delete(res);
    return rc;
}

static int send_tx(tally_eth *e, const char *what, const uint8_t *to,
                   const uint8_t *data, size_t len, uint64_t gas,
                   uint8_t ret_hash[static 32])
{
    char *params = NULL;
    const char *method;
    uint8_t mine[32];
    int signed_locally = e->key != NULL;
    int rc;

    if (signed_locally) {
        char addr[43];
        cp_hex_encode(e->sender, 20, addr);
        char p[80];
        snprintf(p, sizeof p, "[\"%s\",\"pending\"]", addr);
        cp_legacy_tx tx = {0};
        rc = writer_quantity(e, "eth_getTransactionCount", p, &tx.nonce);
        if (rc < 0)
            return rc;
        rc = writer_quantity(e, "eth_gasPrice", "[]", &tx.gas_price);
        if (rc < 0)
            return rc;
        tx.gas_limit = gas;
        tx.has_to = to != NULL;
        if (to)
            memcpy(tx.to, to, 20);
        tx.data = data;
        tx.data_len = len;
        tx.chain_id = e->chain_id;
        uint8_t *raw = NULL;
        size_t rawlen = 0;
        rc = cp_eth_sign_legacy(e->key, &tx, &raw, &rawlen, mine);
        if (rc < 0)
            return cp_eth_fail(e, rc, "%s: signing the transaction failed", what);
        char *hex = malloc(2 * rawlen + 3);
        if (hex) {
            cp_hex_encode(raw, rawlen, hex);
            if (asprintf(&params, "[\"%s\"]", hex) < 0)
                params = NULL;
        }
        free(hex);
        free(raw);
        method = "eth_sendRawTransaction";
    } else {
        char *obj = call_object(e, to, data, len, gas, 1);
        if (obj && asprintf(&params, "[%s]", obj) < 0)
            params = NULL;
        free(obj);
        method = "eth_sendTransaction";
    }
    if (!params)
        return -ENOMEM;

    cJSON *res = NULL;
    cp_rpc_error err;
    rc = writer_call(e, method, params, &res, &err);
    free(params);
    if (rc == CP_RPC_EREMOTE) {
        /* Some nodes answer a reverting transaction with an error and still
         * mine it; either way the caller re-reads the nonce (we always do). */
        char reason[256];
        if (err.has_data) {
            rc = cp_anchor_decode_revert(err.data, err.data_len, reason,
                                         sizeof reason);
            cp_eth_fail(e, rc, "%s: %s: %s (node: %s)", what, method, reason,
                        err.message);
        } else {
            rc = cp_eth_fail(e, -EPROTO, "%s: %s: %s: node error %ld: %s",
                             what, cp_rpc_name(e->ep[e->writer]), method,
                             err.code, err.message);
        }
        cp_rpc_error_clear(&err);
        return rc;
    }
    if (rc < 0)
        return rc;
    uint8_t h[32];
    if (!cJSON_IsString(res) || cp_hex_data(res->valuestring, h, 32) < 0)
        rc = cp_eth_fail(e, -EPROTO, "%s: %s: result is not a tx hash",
                         cp_rpc_name(e->ep[e->writer]), method);
    else if (signed_locally && memcmp(h, mine, 32) != 0)
        rc = cp_eth_fail(e, -EPROTO,
                         "%s: %s: the node names another hash than the "
                         "transaction we signed",
                         cp_rpc_name(e->ep[e->writer]), method);
    else
        memcpy(ret_hash, h, 32);
    cJSON_Delete(res);
    return rc;
}

static int norm_block_hash(const cJSON *res, void *ctx, char **ret, char *why,
                           size_t whysz)
{
    (void)ctx;
    if (cJSON_IsNull(res)) { /* that endpoint does not have the block (yet) */
        *ret = strdup("no such block");
        return *ret ? 0 : -ENOMEM;
    }
    const cJSON *h = cJSON_GetObjectItemCaseSensitive(res, "hash");
    uint8_t b[32];
    if (!cJSON_IsString(h) || cp_hex_data(h->valuestring, b, 32) < 0) {
        snprintf(why, whysz, "block has no valid hash");
        return -EPROTO;
    }
    *ret = malloc(67);
    if (!*ret)
        return -ENOMEM;
    cp_hex_encode(b, 32, *ret);
    return 0;
}

/* Parses a receipt; 0 with *mined = 0 while it is null. */
static int parse_receipt(tally_eth *e, cJSON *res, int *mined, uint64_t *status,
                         cp_receipt *r)
{
    *mined = 0;
    if (cJSON_IsNull(res))
        return 0;
    const cJSON *bn = cJSON_GetObjectItemCaseSensitive(res, "blockNumber");
    const cJSON *bh = cJSON_GetObjectItemCaseSensitive(res, "blockHash");
    const cJSON *st = cJSON_GetObjectItemCaseSensitive(res, "status");
    const cJSON *gu = cJSON_GetObjectItemCaseSensitive(res, "gasUsed");
    const cJSON *ca = cJSON_GetObjectItemCaseSensitive(res, "contractAddress");
    if (cJSON_IsNull(bn) || !bn) /* some nodes return pending receipts */
        return 0;
    if (!cJSON_IsString(bn) ||
        cp_hex_quantity(bn->valuestring, &r->r.block_number) < 0 ||
        !cJSON_IsString(bh) || cp_hex_data(bh->valuestring, r->r.block_hash, 32) < 0 ||
        !cJSON_IsString(st) || cp_hex_quantity(st->valuestring, status) < 0 ||
        !cJSON_IsString(gu) || cp_hex_quantity(gu->valuestring, &r->r.gas_used) < 0)
        return cp_eth_fail(e, -EPROTO, "%s: eth_getTransactionReceipt: "
                           "malformed receipt", cp_rpc_name(e->ep[e->writer]));
    r->has_contract = 0;
    if (cJSON_IsString(ca)) {
        if (cp_hex_data(ca->valuestring, r->r.contract, 20) < 0)
            return cp_eth_fail(e, -EPROTO, "%s: malformed contractAddress",
                               cp_rpc_name(e->ep[e->writer]));
        r->has_contract = 1;
    }
    *mined = 1;
    return 0;
}

static int wait_receipt(tally_eth *e, const char *what,
                        const uint8_t hash[static 32], cp_receipt *out)
{
    char hx[67], p[80];
    cp_hex_encode(hash, 32, hx);
    snprintf(p, sizeof p, "[\"%s\"]", hx);
    uint64_t deadline = now_ms() + e->receipt_timeout_ms;
    unsigned need = e->confirmations ? e->confirmations : 1;
    char last[sizeof e->errmsg] = "not mined yet";
    int last_rc = -ETIMEDOUT;

    for (;;) {
        cJSON *res = NULL;
        cp_receipt r;
        memset(&r, 0, sizeof r);
        int mined = 0;
        uint64_t status = 0;
        int rc = writer_call(e, "eth_getTransactionReceipt", p, &res, NULL);
        if (rc == 0)
            rc = parse_receipt(e, res, &mined, &status, &r);
        if (rc < 0) {
            /* A node that hiccups while we wait is not a verdict on the
             * transaction: keep polling until the deadline. */
            snprintf(last, sizeof last, "%s", e->errmsg);
            last_rc = rc == CP_RPC_EREMOTE ? -EPROTO : rc;
        } else if (mined && status != 1) {
            cJSON_Delete(res);
            return cp_eth_fail(e, TALLY_EREVERTED,
                               "%s: transaction %s was mined in block %" PRIu64
                               " with status %" PRIu64 " (reverted)",
                               what, hx, r.r.block_number, status);
        } else if (mined) {
            uint64_t head = 0;
            rc = writer_quantity(e, "eth_blockNumber", "[]", &head);
            if (rc < 0) {
                snprintf(last, sizeof last, "%s", e->errmsg);
                last_rc = rc;
            } else if (head + 1 < r.r.block_number + need) {
                snprintf(last, sizeof last,
                         "mined in block %" PRIu64 ", %" PRIu64
                         " of %u confirmations",
                         r.r.block_number, head + 1 - r.r.block_number, need);
                last_rc = -ETIMEDOUT;
            } else {
                char bp[64], *agreed = NULL;
                snprintf(bp, sizeof bp, "[\"0x%" PRIx64 "\",false]",
                         r.r.block_number);
                rc = cp_eth_read(e, "the receipt's block hash",
                                 "eth_getBlockByNumber", bp, norm_block_hash,
                                 NULL, &agreed);
                if (rc < 0) {
                    snprintf(last, sizeof last, "%s", e->errmsg);
                    last_rc = rc;
                } else {
                    char want[67];
                    cp_hex_encode(r.r.block_hash, 32, want);
                    int same = strcmp(agreed, want) == 0;
                    if (!same) {
                        snprintf(last, sizeof last,
                                 "receipt names block %" PRIu64 " %s, the "
                                 "chain has %s there (reorg?)",
                                 r.r.block_number, want, agreed);
                        last_rc = TALLY_ECHAIN;
                    }
                    free(agreed);
                    if (same) {
                        memcpy(r.r.tx_hash, hash, 32);
                        r.logs = cJSON_DetachItemFromObjectCaseSensitive(res, "logs");
                        cJSON_Delete(res);
                        *out = r;
                        return 0;
                    }
                }
            }
        }
        cJSON_Delete(res);
        if (now_ms() + e->poll_ms > deadline)
            return cp_eth_fail(e, last_rc,
                               "%s: transaction %s not confirmed within %u ms: %s",
                               what, hx, e->receipt_timeout_ms, last);
        sleep_ms(e->poll_ms);
    }
}

int cp_eth_transact(tally_eth *e, const char *what, const uint8_t *to,
                    const uint8_t *data, size_t len, uint64_t gas,
                    cp_receipt *ret)
{
    if (!e->has_sender)
        return cp_eth_fail(e, -ENOKEY, "%s: no sender (--from or a signer key)",
                           what);
    int rc = cp_eth_ensure_chain(e);
    if (rc < 0)
        return rc;
    rc = pick_writer(e);
    if (rc < 0)
        return rc;
    if (gas == 0) {
        rc = estimate_gas(e, what, to, data, len, &gas);
        if (rc < 0)
            return rc;
    }
    uint8_t hash[32];
    rc = send_tx(e, what, to, data, len, gas, hash);
    if (rc < 0)
        return rc;
    return wait_receipt(e, what, hash, ret);
}
