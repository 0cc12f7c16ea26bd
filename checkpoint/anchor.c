/*
 * anchor.c — the JournalAnchor contract from C: its ABI (selectors, the
 * Anchored event, the NotMonotonic error), deploy, anchor, latest, the
 * event history, and the check that an address really holds its code.
 *
 * The ABI is computed from the Solidity signatures (keccak of the text)
 * rather than copied as magic numbers; the tests pin the results.
 * Encoding: all arguments are static 32-byte big-endian words.
 */
#include "checkpoint-internal.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define SIG_ANCHOR   "anchor(bytes32,uint64,bytes32)"
#define SIG_LATEST   "latest(bytes32,address)"
#define SIG_ANCHORED "Anchored(bytes32,address,uint64,bytes32)"
#define SIG_NOTMONO  "NotMonotonic(uint64,uint64)"
#define SIG_ERROR    "Error(string)"
#define SIG_PANIC    "Panic(uint256)"

static void selector(const char *sig, uint8_t out[4])
{
    uint8_t h[32];
    cp_keccak256(sig, strlen(sig), h);
    memcpy(out, h, 4);
}

static void put_u64_word(uint8_t w[32], uint64_t v)
{
    memset(w, 0, 32);
    for (unsigned i = 0; i < 8; i++)
        w[31 - i] = (uint8_t)(v >> (8 * i));
}

static void put_address_word(uint8_t w[32], const uint8_t addr[20])
{
    memset(w, 0, 12);
    memcpy(w + 12, addr, 20);
}

/* A uint64 in a 32-byte word; -1 if the upper 24 bytes are not zero. */
static int get_u64_word(const uint8_t w[32], uint64_t *ret)
{
    for (unsigned i = 0; i < 24; i++)
        if (w[i])
            return -1;
    uint64_t v = 0;
    for (unsigned i = 24; i < 32; i++)
        v = (v << 8) | w[i];
    *ret = v;
    return 0;
}

int cp_anchor_decode_revert(const uint8_t *d, size_t n, char *out,
                            size_t outsz)
{
    uint8_t nm[4], er[4], pa[4];
    selector(SIG_NOTMONO, nm);
    selector(SIG_ERROR, er);
    selector(SIG_PANIC, pa);

    if (n == 0) {
        snprintf(out, outsz, "reverted without a reason");
        return TALLY_EREVERTED;
    }
    uint64_t a, b;
    if (n == 4 + 64 && memcmp(d, nm, 4) == 0 && get_u64_word(d + 4, &a) == 0 &&
        get_u64_word(d + 36, &b) == 0) {
        /* NotMonotonic(last, given) */
        snprintf(out, outsz, "seq %" PRIu64 " is not greater than %" PRIu64,
                 b, a);
        return TALLY_EROLLBACK;
    }
    if (n >= 4 + 64 && memcmp(d, er, 4) == 0 && get_u64_word(d + 4, &a) == 0 &&
        a == 32 && get_u64_word(d + 36, &b) == 0 && b <= n - 68) {
        /* Error(string): offset 32, length, bytes. Shown printable only: it
         * is text from the chain and ends up in terminals and logs. */
        size_t len = (size_t)b, o = 0;
        o += (size_t)snprintf(out, outsz, "reverted: ");
        for (size_t i = 0; i < len && o + 1 < outsz; i++) {
            uint8_t c = d[68 + i];
            out[o++] = (c >= 0x20 && c < 0x7f) ? (char)c : '?';
        }
        out[o < outsz ? o : outsz - 1] = '\0';
        return TALLY_EREVERTED;
    }
    if (n == 4 + 32 && memcmp(d, pa, 4) == 0 && get_u64_word(d + 4, &a) == 0) {
        snprintf(out, outsz, "panic 0x%02" PRIx64, a);
        return TALLY_EREVERTED;
    }
    char hex[2 * 36 + 3];
    cp_hex_encode(d, n < 36 ? n : 36, hex);
    snprintf(out, outsz, "reverted with data %s%s", hex, n > 36 ? "..." : "");
    return TALLY_EREVERTED;
}

/* ---- deploy and code check ----------------------------------------------- */

int tally_anchor_check_code(tally_eth *e, const uint8_t contract[static 20])
{
    int rc = cp_eth_ensure_chain(e);
    if (rc < 0)
        return rc;
    char a[43], params[80], *code = NULL;
    cp_hex_encode(contract, 20, a);
    snprintf(params, sizeof params, "[\"%s\",\"latest\"]", a);
    rc = cp_eth_read(e, "contract code", "eth_getCode", params, cp_norm_data,
                     NULL, &code);
    if (rc < 0)
        return rc;
    char *want = malloc(2 * cp_anchor_runtime_len + 3);
    if (!want) {
        free(code);
        return -ENOMEM;
    }
    cp_hex_encode(cp_anchor_runtime, cp_anchor_runtime_len, want);
    if (strcmp(code, want) != 0) {
        char pretty[43];
        cp_eth_address_format(contract, pretty);
        rc = cp_eth_fail(e, TALLY_ECHAIN,
                         "contract %s does not hold JournalAnchor's code "
                         "(%zu bytes there, %zu expected)",
                         pretty, (strlen(code) - 2) / 2, cp_anchor_runtime_len);
    }
    free(want);
    free(code);
    return rc;
}

int tally_anchor_deploy(tally_eth *e, tally_eth_receipt *ret)
{
    cp_receipt r;
    int rc = cp_eth_transact(e, "deploy JournalAnchor", NULL,
                             cp_anchor_creation, cp_anchor_creation_len, 0, &r);
    if (rc < 0)
        return rc;
    cJSON_Delete(r.logs);
    if (!r.has_contract)
        return cp_eth_fail(e, -EPROTO,
                           "deploy JournalAnchor: the receipt names no "
                           "contract address");
    rc = tally_anchor_check_code(e, r.r.contract);
    if (rc < 0)
        return rc;
    *ret = r.r;
    return 0;
}

/* ---- anchor ---------------------------------------------------------------- */

/* The receipt must carry Anchored(journal, sender, seq, head) from the
 * contract: status 1 alone would also be what a different contract at that
 * address, or a proxy that swallowed the call, reports. */
static int has_event(const cJSON *logs, const uint8_t contract[20],
                     const uint8_t topics[3][32], const uint8_t data[64])
{
    const cJSON *log;
    cJSON_ArrayForEach(log, logs)
    {
        const cJSON *a = cJSON_GetObjectItemCaseSensitive(log, "address");
        const cJSON *t = cJSON_GetObjectItemCaseSensitive(log, "topics");
        const cJSON *d = cJSON_GetObjectItemCaseSensitive(log, "data");
        uint8_t addr[20], tb[32], db[64];
        if (!cJSON_IsString(a) || cp_hex_data(a->valuestring, addr, 20) < 0 ||
            memcmp(addr, contract, 20) != 0 || !cJSON_IsArray(t) ||
            cJSON_GetArraySize(t) != 3 || !cJSON_IsString(d) ||
            cp_hex_data(d->valuestring, db, 64) < 0 || memcmp(db, data, 64) != 0)
            continue;
        int match = 1;
        for (int i = 0; i < 3 && match; i++) {
            const cJSON *ti = cJSON_GetArrayItem(t, i);
            match = cJSON_IsString(ti) &&
                    cp_hex_data(ti->valuestring, tb, 32) == 0 &&
                    memcmp(tb, topics[i], 32) == 0;
        }
        if (match)
            return 1;
    }
    return 0;
}

int tally_anchor_submit(tally_eth *e, const uint8_t contract[static 20],
                        const uint8_t journal[static 32], uint64_t seq,
                        const uint8_t head[static 32], tally_eth_receipt *ret)
{
    uint8_t call[4 + 96];
    selector(SIG_ANCHOR, call);
    memcpy(call + 4, journal, 32);
    put_u64_word(call + 36, seq);
    memcpy(call + 68, head, 32);

    char what[64];
    snprintf(what, sizeof what, "anchor seq %" PRIu64, seq);
    int rc = cp_eth_ensure_chain(e);
    if (rc < 0)
        return rc;
    rc = cp_eth_preflight(e, what, contract, call, sizeof call);
    if (rc < 0)
        return rc;
    cp_receipt r;
    rc = cp_eth_transact(e, what, contract, call, sizeof call, 0, &r);
    if (rc < 0)
        return rc;

    uint8_t topics[3][32];
    cp_keccak256(SIG_ANCHORED, strlen(SIG_ANCHORED), topics[0]);
    memcpy(topics[1], journal, 32);
    put_address_word(topics[2], e->sender);
    uint8_t data[64];
    put_u64_word(data, seq);
    memcpy(data + 32, head, 32);
    int found = has_event(r.logs, contract, (const uint8_t(*)[32])topics, data);
    cJSON_Delete(r.logs);
    if (!found) {
        char hx[67];
        cp_hex_encode(r.r.tx_hash, 32, hx);
        return cp_eth_fail(e, -EPROTO,
                           "%s: transaction %s succeeded but its receipt "
                           "lacks the matching Anchored event",
                           what, hx);
    }
    *ret = r.r;
    return 0;
}

/* ---- reads ----------------------------------------------------------------- */

/* latest() canonical: "seq S block B head 0x…", readable in a
 * disagreement report. An answer that is not three words (an address
 * without code answers "0x") is not a JournalAnchor's. */
static int norm_latest(const cJSON *res, void *ctx, char **ret, char *why,
                       size_t whysz)
{
    (void)ctx;
    uint8_t *d = NULL;
    size_t n = 0;
    if (!cJSON_IsString(res) || cp_hex_data_alloc(res->valuestring, &d, &n) < 0) {
        snprintf(why, whysz, "result is not hex data");
        return -EPROTO;
    }
    uint64_t seq, bn;
    if (n != 96 || get_u64_word(d, &seq) < 0 || get_u64_word(d + 64, &bn) < 0) {
        free(d);
        snprintf(why, whysz,
                 "answered %zu bytes, not a JournalAnchor's answer (wrong "
                 "contract address?)", n);
        return TALLY_ECHAIN;
    }
    char head[67];
    cp_hex_encode(d + 32, 32, head);
    free(d);
    if (asprintf(ret, "seq %" PRIu64 " block %" PRIu64 " head %s", seq, bn,
                 head) < 0)
        return -ENOMEM;
    return 0;
}

int tally_anchor_latest(tally_eth *e, const uint8_t contract[static 20],
                        const uint8_t journal[static 32],
                        const uint8_t writer[static 20], tally_anchor *ret)
{
    int rc = cp_eth_ensure_chain(e);
    if (rc < 0)
        return rc;
    uint8_t call[4 + 64];
    selector(SIG_LATEST, call);
    memcpy(call + 4, journal, 32);
    put_address_word(call + 36, writer);
    char a[43], d[2 * sizeof call + 3], params[256], *res = NULL;
    cp_hex_encode(contract, 20, a);
    cp_hex_encode(call, sizeof call, d);
    snprintf(params, sizeof params, "[{\"to\":\"%s\",\"data\":\"%s\"},\"latest\"]",
             a, d);
    rc = cp_eth_read(e, "latest anchor", "eth_call", params, norm_latest, NULL,
                     &res);
    if (rc < 0)
        return rc;
    tally_anchor an;
    char head[67];
    if (sscanf(res, "seq %" SCNu64 " block %" SCNu64 " head %66s", &an.seq,
               &an.block_number, head) != 3 ||
        cp_hex_data(head, an.head, 32) < 0)
        rc = -EPROTO; /* cannot happen: norm_latest wrote it */
    free(res);
    if (rc == 0)
        *ret = an;
    return rc;
}

/* Logs, canonical: one line per Anchored event, in the order the endpoint
 * gave them (chain order), after a summary that a disagreement report
 * shows first. Each log is checked against the filter so that a sloppy or
 * hostile endpoint cannot slip in other contracts' events. */
typedef struct logs_ctx {
    uint8_t contract[20];
    uint8_t topics[3][32];
} logs_ctx;

#define EVENT_FMT "seq %" PRIu64 " block %" PRIu64 " hash %s tx %s log %" PRIu64 " head %s\n"
#define EVENT_SCAN "seq %" SCNu64 " block %" SCNu64 " hash %66s tx %66s log %" SCNu64 " head %66s\n"

static int norm_logs(const cJSON *res, void *vctx, char **ret, char *why,
                     size_t whysz)
{
    const logs_ctx *c = vctx;
    if (!cJSON_IsArray(res)) {
        snprintf(why, whysz, "result is not an array");
        return -EPROTO;
    }
    size_t n = (size_t)cJSON_GetArraySize(res), k = 0;
    size_t cap = 64 + n * 320, len = 0;
    char *body = malloc(cap);
    if (!body)
        return -ENOMEM;
    body[0] = '\0';
    uint64_t last_seq = 0;
    const cJSON *log;
    cJSON_ArrayForEach(log, res)
    {
        const cJSON *rm = cJSON_GetObjectItemCaseSensitive(log, "removed");
        if (cJSON_IsTrue(rm))
            continue; /* reorged away: not part of the chain */
        const cJSON *a = cJSON_GetObjectItemCaseSensitive(log, "address");
        const cJSON *t = cJSON_GetObjectItemCaseSensitive(log, "topics");
        const cJSON *d = cJSON_GetObjectItemCaseSensitive(log, "data");
        const cJSON *bn = cJSON_GetObjectItemCaseSensitive(log, "blockNumber");
        const cJSON *bh = cJSON_GetObjectItemCaseSensitive(log, "blockHash");
        const cJSON *th = cJSON_GetObjectItemCaseSensitive(log, "transactionHash");
        const cJSON *li = cJSON_GetObjectItemCaseSensitive(log, "logIndex");
        uint8_t addr[20], data[64], tb[32], bhash[32], txh[32];
        uint64_t bnum, lidx, seq;
        int ok = cJSON_IsString(a) && cp_hex_data(a->valuestring, addr, 20) == 0 &&
                 memcmp(addr, c->contract, 20) == 0 && cJSON_IsArray(t) &&
                 cJSON_GetArraySize(t) == 3 && cJSON_IsString(d) &&
                 cp_hex_data(d->valuestring, data, 64) == 0 &&
                 get_u64_word(data, &seq) == 0 && cJSON_IsString(bn) &&
                 cp_hex_quantity(bn->valuestring, &bnum) == 0 &&
                 cJSON_IsString(bh) && cp_hex_data(bh->valuestring, bhash, 32) == 0 &&
                 cJSON_IsString(th) && cp_hex_data(th->valuestring, txh, 32) == 0 &&
                 cJSON_IsString(li) && cp_hex_quantity(li->valuestring, &lidx) == 0;
        for (int i = 0; i < 3 && ok; i++) {
            const cJSON *ti = cJSON_GetArrayItem(t, i);
            ok = cJSON_IsString(ti) && cp_hex_data(ti->valuestring, tb, 32) == 0 &&
                 memcmp(tb, c->topics[i], 32) == 0;
        }
        if (!ok) {
            free(body);
            snprintf(why, whysz, "log %zu does not match the filter", k);
            return -EPROTO;
        }
        char hb[67], ht[67], hh[67];
        cp_hex_encode(bhash, 32, hb);
        cp_hex_encode(txh, 32, ht);
        cp_hex_encode(data + 32, 32, hh);
        len += (size_t)snprintf(body + len, cap - len, EVENT_FMT, seq, bnum,
                                hb, ht, lidx, hh);
        last_seq = seq;
        k++;
    }
    int rc = asprintf(ret, "%zu events, last seq %" PRIu64 "\n%s", k,
                      last_seq, body);
    free(body);
    return rc < 0 ? -ENOMEM : 0;
}

int tally_anchor_events(tally_eth *e, const uint8_t contract[static 20],
                        const uint8_t journal[static 32],
                        const uint8_t writer[static 20], uint64_t from_block,
                        tally_anchor_event **ret)
{
    int rc = cp_eth_ensure_chain(e);
    if (rc < 0)
        return rc;
    logs_ctx c;
    memcpy(c.contract, contract, 20);
    cp_keccak256(SIG_ANCHORED, strlen(SIG_ANCHORED), c.topics[0]);
    memcpy(c.topics[1], journal, 32);
    put_address_word(c.topics[2], writer);
    char a[43], t[3][67], params[512], *res = NULL;
    cp_hex_encode(contract, 20, a);
    for (int i = 0; i < 3; i++)
        cp_hex_encode(c.topics[i], 32, t[i]);
    snprintf(params, sizeof params,
             "[{\"address\":\"%s\",\"fromBlock\":\"0x%" PRIx64
             "\",\"toBlock\":\"latest\",\"topics\":[\"%s\",\"%s\",\"%s\"]}]",
             a, from_block, t[0], t[1], t[2]);
    rc = cp_eth_read(e, "anchor events", "eth_getLogs", params, norm_logs, &c,
                     &res);
    if (rc < 0)
        return rc;
    size_t n = 0;
    uint64_t last;
    int off = 0;
    if (sscanf(res, "%zu events, last seq %" SCNu64 "\n%n", &n, &last, &off) != 2 ||
        n > INT32_MAX) {
        free(res);
        return -EPROTO;
    }
    tally_anchor_event *ev = NULL;
    if (n) {
        ev = calloc(n, sizeof *ev);
        if (!ev) {
            free(res);
            return -ENOMEM;
        }
    }
    const char *p = res + off;
    for (size_t i = 0; i < n; i++) {
        char hb[67], ht[67], hh[67];
        int used = 0;
        if (sscanf(p, EVENT_SCAN "%n", &ev[i].seq, &ev[i].block_number, hb, ht,
                   &ev[i].log_index, hh, &used) != 6 ||
            cp_hex_data(hb, ev[i].block_hash, 32) < 0 ||
            cp_hex_data(ht, ev[i].tx_hash, 32) < 0 ||
            cp_hex_data(hh, ev[i].head, 32) < 0) {
            free(ev);
            free(res);
            return -EPROTO; /* cannot happen: norm_logs wrote it */
        }
        p += used;
    }
    free(res);
    *ret = ev;
    return (int)n;
}

/* ---- keys and addresses ------------------------------------------------ */

int tally_eth_key_address(const uint8_t key[static 32],
                          uint8_t ret_addr[static 20])
{
    return cp_eth_address(key, ret_addr);
}

void tally_eth_address_format(const uint8_t addr[static 20],
                              char out[static 43])
{
    cp_eth_address_format(addr, out);
}

int tally_eth_address_parse(const char *s, uint8_t ret_addr[static 20])
{
    return cp_eth_address_parse(s, ret_addr);
}

static int hexnib(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

int tally_eth_key_load(const char *path, uint8_t out[static 32])
{
    uint8_t buf[160];
    uint8_t key[32];
    ssize_t n = 0;
    int rc = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0)
        return -errno;
    struct stat st;
    if (fstat(fd, &st) < 0) {
        rc = -errno;
        goto out;
    }
    if (!S_ISREG(st.st_mode)) {
        rc = -EINVAL;
        goto out;
    }
    /* A signing key readable by others is as good as published. */
    if (st.st_mode & (S_IRWXG | S_IRWXO)) {
        rc = TALLY_EKEYPERM;
        goto out;
    }
    for (;;) {
        ssize_t r = read(fd, buf + n, sizeof buf - (size_t)n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            rc = -errno;
            goto out;
        }
        if (r == 0)
            break;
        n += r;
        if ((size_t)n == sizeof buf) {
            rc = TALLY_EKEY; /* far too long for a key */
            goto out;
        }
    }
    if (n == 32) {
        memcpy(key, buf, 32);
    } else {
        size_t len = (size_t)n, off = 0;
        while (len > 0 && (buf[len - 1] == '\n' || buf[len - 1] == '\r' ||
                           buf[len - 1] == ' '))
            len--;
        if (len >= 2 && buf[0] == '0' && (buf[1] == 'x' || buf[1] == 'X'))
            off = 2;
        if (len - off != 64) {
            rc = TALLY_EKEY;
            goto out;
        }
        for (size_t i = 0; i < 32; i++) {
            int hi = hexnib(buf[off + 2 * i]), lo = hexnib(buf[off + 2 * i + 1]);
            if (hi < 0 || lo < 0) {
                rc = TALLY_EKEY;
                goto out;
            }
            key[i] = (uint8_t)(hi << 4 | lo);
        }
    }
    uint8_t addr[20];
    /* zero or >= the group order: not a key */
    rc = cp_eth_address(key, addr) == 0 ? 0 : TALLY_EKEY;
    if (rc == 0)
        memcpy(out, key, 32);
out:
    if (rc < 0)
        sodium_memzero(out, 32);
    sodium_memzero(key, sizeof key);
    sodium_memzero(buf, sizeof buf);
    close(fd);
    return rc;
}
