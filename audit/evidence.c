/*
 * evidence.c — evidence bundles (FORMAT.md §12): everything an offline
 * auditor needs to re-check a journal's anchors without a node.
 *
 * Export (online, through the checkpoint module's tally_eth handle, every
 * read agreed on by the endpoints): the Anchored events of (journal,
 * writer); for each, its block header, transaction and receipt, and
 * Merkle-Patricia proofs of the transaction and receipt against the
 * header's roots (built here from all of the block's transactions and
 * receipts); and the contract's latest state at one block, with the
 * account and storage proofs of eth_getProof.
 *
 * Load (offline): every hash and proof is recomputed; the values the audit
 * uses (seq, head, block number and hash, transaction hash) are only ever
 * taken from proven bytes, the bundle's plain fields must merely agree with
 * them. What stays trusted is that the block hashes are the chain's
 * (§12.3).
 */
#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "audit-internal.h"
#include "checkpoint-internal.h"
#include "tally-internal.h"

#define EVIDENCE_FORMAT "tally-evidence"
#define EVIDENCE_VERSION 1
#define MAX_PROOF_NODES 64

static void put_u64_word(uint8_t w[32], uint64_t v)
{
    memset(w, 0, 32);
    for (unsigned i = 0; i < 8; i++)
        w[31 - i] = (uint8_t)(v >> (8 * i));
}

void ta_anchor_slots(const uint8_t jid[32], const uint8_t writer[20],
                     uint8_t slot0[32], uint8_t slot1[32])
{
    /* cps is slot 0: cps[J] at keccak(J || pad32(0)), cps[J][W] at
     * keccak(pad32(W) || that) (FORMAT.md §9.1). */
    uint8_t b[64], inner[32];
    memcpy(b, jid, 32);
    memset(b + 32, 0, 32);
    cp_keccak256(b, 64, inner);
    memset(b, 0, 12);
    memcpy(b + 12, writer, 20);
    memcpy(b + 32, inner, 32);
    cp_keccak256(b, 64, slot0);
    memcpy(slot1, slot0, 32);
    for (int i = 31; i >= 0; i--)
        if (++slot1[i] != 0)
            break;
}

/* The calldata of anchor(jid, seq, head), and the Anchored log's topics
 * and data: what a proven transaction and receipt must carry. */
static void anchor_calldata(const uint8_t jid[32], uint64_t seq,
                            const uint8_t head[32], uint8_t out[100])
{
    uint8_t h[32];
    cp_keccak256(TA_SIG_ANCHOR, strlen(TA_SIG_ANCHOR), h);
    memcpy(out, h, 4);
    memcpy(out + 4, jid, 32);
    put_u64_word(out + 36, seq);
    memcpy(out + 68, head, 32);
}

/* ---- error reporting ---------------------------------------------------------- */

static int efail(char *err, size_t errsz, int rc, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int efail(char *err, size_t errsz, int rc, const char *fmt, ...)
{
    if (err && errsz) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errsz, fmt, ap);
        va_end(ap);
    }
    return rc;
}

/* ---- proven structures ---------------------------------------------------------- */

typedef struct header_info {
    uint8_t hash[32];
    uint64_t number, timestamp;
    uint8_t state_root[32], tx_root[32], receipt_root[32];
} header_info;

/* Hashes and decodes a block header's RLP (FORMAT.md §12.2: the fields
 * every header since the genesis has, in their order). */
static int header_parse(const uint8_t *p, size_t n, header_info *h,
                        const char **why)
{
    ta_rlp_item list, it[24];
    cp_keccak256(p, n, h->hash);
    int k;
    if (ta_rlp_decode(p, n, &list) < 0 || (k = ta_rlp_list(&list, it, 24)) < 15) {
        *why = "the header is not an RLP list of at least 15 fields";
        return -EINVAL;
    }
    if (it[3].len != 32 || it[4].len != 32 || it[5].len != 32 ||
        ta_rlp_u64(&it[8], &h->number) < 0 ||
        ta_rlp_u64(&it[11], &h->timestamp) < 0) {
        *why = "the header's roots, number or timestamp are malformed";
        return -EINVAL;
    }
    memcpy(h->state_root, it[3].p, 32);
    memcpy(h->tx_root, it[4].p, 32);
    memcpy(h->receipt_root, it[5].p, 32);
    return 0;
}

typedef struct tx_info {
    uint8_t type;
    bool has_chain_id;
    uint64_t chain_id;
    bool has_to;
    uint8_t to[20];
    const uint8_t *input;
    size_t input_len;
} tx_info;

/* Decodes a signed transaction (legacy or EIP-2718 typed 1..4) far enough
 * to read its destination, input and chain id. */
static int tx_parse(const uint8_t *p, size_t n, tx_info *t, const char **why)
{
    memset(t, 0, sizeof *t);
    ta_rlp_item list, it[16];
    int k;
    size_t to_i, in_i;
    if (n > 0 && p[0] < 0x7f) {
        t->type = p[0];
        p++;
        n--;
    }
    if (ta_rlp_decode(p, n, &list) < 0 || (k = ta_rlp_list(&list, it, 16)) < 0) {
        *why = "the transaction is not RLP";
        return -EINVAL;
    }
    switch (t->type) {
    case 0: /* [nonce, gasPrice, gas, to, value, data, v, r, s] */
        if (k != 9)
            goto bad;
        to_i = 3;
        in_i = 5;
        {
            uint64_t v;
            if (ta_rlp_u64(&it[6], &v) < 0)
                goto bad;
            if (v >= 35) { /* EIP-155: v = 2 * chain_id + 35 + parity */
                t->has_chain_id = true;
                t->chain_id = (v - 35) / 2;
            }
        }
        break;
    case 1: /* [chainId, nonce, gasPrice, gas, to, value, data, ...] */
        if (k != 11)
            goto bad;
        to_i = 4;
        in_i = 6;
        break;
    case 2: /* [chainId, nonce, tip, maxFee, gas, to, value, data, ...] */
    case 3:
    case 4:
        if (k < 12)
            goto bad;
        to_i = 5;
        in_i = 7;
        break;
    default:
        *why = "unknown transaction type";
        return -EINVAL;
    }
    if (t->type != 0) {
        if (ta_rlp_u64(&it[0], &t->chain_id) < 0)
            goto bad;
        t->has_chain_id = true;
    }
    if (it[to_i].list || (it[to_i].len != 0 && it[to_i].len != 20) ||
        it[in_i].list)
        goto bad;
    if (it[to_i].len == 20) {
        t->has_to = true;
        memcpy(t->to, it[to_i].p, 20);
    }
    t->input = it[in_i].p;
    t->input_len = it[in_i].len;
    return 0;
bad:
    *why = "the transaction's fields are malformed";
    return -EINVAL;
}

/* Whether a receipt (typed or legacy) succeeded and carries the Anchored
 * log of (contract, jid, writer, seq, head). */
static int receipt_check(const uint8_t *p, size_t n, uint8_t tx_type,
                         const uint8_t contract[20], const uint8_t jid[32],
                         const uint8_t writer[20], uint64_t seq,
                         const uint8_t head[32], const char **why)
{
    uint8_t type = 0;
    if (n > 0 && p[0] < 0x7f) {
        type = p[0];
        p++;
        n--;
    }
    ta_rlp_item list, it[4], logs[64], lf[3], topics[4];
    uint64_t status;
    if (type != tx_type) {
        *why = "the receipt's type differs from its transaction's";
        return -EINVAL;
    }
    if (ta_rlp_decode(p, n, &list) < 0 || ta_rlp_list(&list, it, 4) != 4) {
        *why = "the receipt is not an RLP list of 4 fields";
        return -EINVAL;
    }
    if (ta_rlp_u64(&it[0], &status) < 0 || status != 1) {
        *why = "the receipt's status is not success";
        return -EINVAL;
    }
    int nl = ta_rlp_list(&it[3], logs, 64);
    if (nl < 0) {
        *why = "the receipt's logs are malformed";
        return -EINVAL;
    }
    uint8_t sig[32], wtopic[32], data[64];
    cp_keccak256(TA_SIG_ANCHORED, strlen(TA_SIG_ANCHORED), sig);
    memset(wtopic, 0, 12);
    memcpy(wtopic + 12, writer, 20);
    put_u64_word(data, seq);
    memcpy(data + 32, head, 32);
    for (int i = 0; i < nl; i++) {
        if (ta_rlp_list(&logs[i], lf, 3) != 3 || ta_rlp_list(&lf[1], topics, 4) != 3)
            continue;
        if (lf[0].len == 20 && memcmp(lf[0].p, contract, 20) == 0 &&
            topics[0].len == 32 && memcmp(topics[0].p, sig, 32) == 0 &&
            topics[1].len == 32 && memcmp(topics[1].p, jid, 32) == 0 &&
            topics[2].len == 32 && memcmp(topics[2].p, wtopic, 32) == 0 &&
            !lf[2].list && lf[2].len == 64 && memcmp(lf[2].p, data, 64) == 0)
            return 0;
    }
    *why = "the receipt holds no Anchored log of this journal, writer, seq "
           "and head from the contract";
    return -EINVAL;
}

/* ---- JSON helpers ---------------------------------------------------------------- */

static const char *jstr(const cJSON *o, const char *name)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, name);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

/* A decimal u64 string (the bundle writes 64-bit values as strings: JSON
 * numbers are doubles). */
static int ju64(const cJSON *o, const char *name, uint64_t *ret)
{
    const char *s = jstr(o, name);
    if (!s || !*s || strlen(s) > 20)
        return -EINVAL;
    uint64_t v = 0;
    for (const char *c = s; *c; c++) {
        if (*c < '0' || *c > '9' || (c == s && *c == '0' && c[1]))
            return -EINVAL;
        uint64_t d = (uint64_t)(*c - '0');
        if (v > (UINT64_MAX - d) / 10)
            return -EINVAL;
        v = v * 10 + d;
    }
    *ret = v;
    return 0;
}

static int jhex(const cJSON *o, const char *name, uint8_t *out, size_t len)
{
    const char *s = jstr(o, name);
    return s && cp_hex_data(s, out, len) == 0 ? 0 : -EINVAL;
}

static int jhex_alloc(const cJSON *o, const char *name, uint8_t **ret,
                      size_t *ret_len)
{
    const char *s = jstr(o, name);
    if (!s)
        return -EINVAL;
    int rc = cp_hex_data_alloc(s, ret, ret_len);
    return rc == -ENOMEM ? rc : rc < 0 ? -EINVAL : 0;
}

typedef struct proof_buf {
    uint8_t *nodes[MAX_PROOF_NODES];
    size_t lens[MAX_PROOF_NODES];
    size_t n;
} proof_buf;

static void proof_buf_free(proof_buf *p)
{
    for (size_t i = 0; i < p->n; i++)
        free(p->nodes[i]);
    p->n = 0;
}

static int jproof(const cJSON *arr, proof_buf *p)
{
    p->n = 0;
    if (!cJSON_IsArray(arr) || cJSON_GetArraySize(arr) > MAX_PROOF_NODES)
        return -EINVAL;
    const cJSON *x;
    cJSON_ArrayForEach(x, arr)
    {
        if (!cJSON_IsString(x) ||
            cp_hex_data_alloc(x->valuestring, &p->nodes[p->n], &p->lens[p->n]) < 0)
            return -EINVAL;
        p->n++;
    }
    return 0;
}

static int verify_proof(const uint8_t root[32], const uint8_t *key,
                        size_t key_len, const proof_buf *p,
                        const uint8_t **ret_value, size_t *ret_len,
                        const char **why)
{
    return ta_mpt_verify(root, key, key_len,
                         (const uint8_t *const *)p->nodes, p->lens, p->n,
                         ret_value, ret_len, why);
}

/* ---- loading ------------------------------------------------------------------------ */

void tally_evidence_free(tally_evidence *ev)
{
    if (!ev)
        return;
    free(ev->anchors);
    free(ev);
}

void tally_evidence_get_info(const tally_evidence *ev, tally_evidence_info *ret)
{
    *ret = ev->info;
}

/* One anchor of the bundle: everything recomputed from its proven bytes. */
static int load_anchor(const cJSON *o, const tally_evidence_info *top,
                       ta_anchor *ret, char *err, size_t errsz, size_t i)
{
    uint8_t *hdr = NULL, *tx = NULL, *rc_ = NULL;
    size_t hdr_len = 0, tx_len = 0, rc_len = 0;
    proof_buf txp = { .n = 0 }, rcp = { .n = 0 };
    const char *why = NULL;
    int rc = -EINVAL;
    ta_anchor a;
    memset(&a, 0, sizeof a);
    uint8_t claimed_bh[32], claimed_tx[32], claimed_head[32];
    uint64_t claimed_seq, claimed_bn;

    if (!cJSON_IsObject(o) || ju64(o, "seq", &claimed_seq) < 0 ||
        jhex(o, "head", claimed_head, 32) < 0 ||
        ju64(o, "block_number", &claimed_bn) < 0 ||
        jhex(o, "block_hash", claimed_bh, 32) < 0 ||
        jhex(o, "tx_hash", claimed_tx, 32) < 0 ||
        ju64(o, "tx_index", &a.tx_index) < 0 ||
        ju64(o, "log_index", &a.log_index) < 0 ||
        jhex_alloc(o, "header", &hdr, &hdr_len) < 0 ||
        jhex_alloc(o, "tx", &tx, &tx_len) < 0 ||
        jhex_alloc(o, "receipt", &rc_, &rc_len) < 0 ||
        jproof(cJSON_GetObjectItemCaseSensitive(o, "tx_proof"), &txp) < 0 ||
        jproof(cJSON_GetObjectItemCaseSensitive(o, "receipt_proof"), &rcp) < 0) {
        rc = efail(err, errsz, TALLY_EFORMAT,
                   "anchor %zu: a field is missing or malformed", i);
        goto out;
    }
    rc = TALLY_EINTEGRITY;
    header_info h;
    if (header_parse(hdr, hdr_len, &h, &why) < 0) {
        efail(err, errsz, rc, "anchor %zu (seq %" PRIu64 "): %s", i,
              claimed_seq, why);
        goto out;
    }
    if (memcmp(h.hash, claimed_bh, 32) != 0 || h.number != claimed_bn) {
        efail(err, errsz, rc, "anchor %zu (seq %" PRIu64 "): the header does "
              "not hash to block %" PRIu64 "'s hash (keccak of its RLP)", i,
              claimed_seq, claimed_bn);
        goto out;
    }
    memcpy(a.block_hash, h.hash, 32);
    a.block_number = h.number;
    a.block_time = h.timestamp;

    uint8_t key[9];
    size_t key_len = ta_index_key(a.tx_index, key);
    const uint8_t *val;
    size_t vlen;
    cp_keccak256(tx, tx_len, a.tx_hash);
    if (memcmp(a.tx_hash, claimed_tx, 32) != 0) {
        efail(err, errsz, rc, "anchor %zu (seq %" PRIu64 "): the transaction "
              "does not hash to its tx_hash", i, claimed_seq);
        goto out;
    }
    if (verify_proof(h.tx_root, key, key_len, &txp, &val, &vlen, &why) < 0 ||
        vlen != tx_len || memcmp(val, tx, tx_len) != 0) {
        efail(err, errsz, rc, "anchor %zu (seq %" PRIu64 "): the transaction "
              "is not proven in block %" PRIu64 " at index %" PRIu64 " (%s)",
              i, claimed_seq, a.block_number, a.tx_index,
              why ? why : "the proof leads to another value");
        goto out;
    }
    tx_info t;
    uint8_t cd[100];
    if (tx_parse(tx, tx_len, &t, &why) < 0) {
        efail(err, errsz, rc, "anchor %zu: %s", i, why);
        goto out;
    }
    /* The calldata names (jid, seq, head): the seq and head come from it. */
    if (!t.has_to || memcmp(t.to, top->contract, 20) != 0 ||
        t.input_len != 100) {
        efail(err, errsz, rc, "anchor %zu (seq %" PRIu64 "): the transaction "
              "is not a call of anchor() on the contract", i, claimed_seq);
        goto out;
    }
    a.seq = 0;
    for (int k = 0; k < 8; k++)
        a.seq = a.seq << 8 | t.input[36 + 24 + k];
    memcpy(a.head, t.input + 68, 32);
    anchor_calldata(top->journal_id, a.seq, a.head, cd);
    if (memcmp(cd, t.input, 100) != 0) {
        efail(err, errsz, rc, "anchor %zu (seq %" PRIu64 "): the transaction "
              "anchors another journal or is not anchor(bytes32,uint64,"
              "bytes32)", i, claimed_seq);
        goto out;
    }
    if (t.has_chain_id && t.chain_id != top->chain_id) {
        efail(err, errsz, rc, "anchor %zu: the transaction is for chain %"
              PRIu64 ", the bundle for chain %" PRIu64, i, t.chain_id,
              top->chain_id);
        goto out;
    }
    if (verify_proof(h.receipt_root, key, key_len, &rcp, &val, &vlen, &why) < 0 ||
        vlen != rc_len || memcmp(val, rc_, rc_len) != 0) {
        efail(err, errsz, rc, "anchor %zu (seq %" PRIu64 "): the receipt is "
              "not proven in block %" PRIu64 " at index %" PRIu64 " (%s)", i,
              claimed_seq, a.block_number, a.tx_index,
              why ? why : "the proof leads to another value");
        goto out;
    }
    if (receipt_check(rc_, rc_len, t.type, top->contract, top->journal_id,
                      top->writer, a.seq, a.head, &why) < 0) {
        efail(err, errsz, rc, "anchor %zu (seq %" PRIu64 "): %s", i,
              claimed_seq, why);
        goto out;
    }
    if (a.seq != claimed_seq || memcmp(a.head, claimed_head, 32) != 0) {
        efail(err, errsz, rc, "anchor %zu: the bundle's seq %" PRIu64
              " and head differ from the proven transaction's and log's "
              "(seq %" PRIu64 ")", i, claimed_seq, a.seq);
        goto out;
    }
    *ret = a;
    rc = 0;
out:
    free(hdr);
    free(tx);
    free(rc_);
    proof_buf_free(&txp);
    proof_buf_free(&rcp);
    return rc;
}

/* A storage value from its proof: absent is zero; present, a minimal
 * big-endian integer of at most 32 bytes, RLP-wrapped. */
static int slot_value(const uint8_t storage_root[32], const uint8_t slot[32],
                      const proof_buf *p, uint8_t out[32], const char **why)
{
    uint8_t key[32];
    const uint8_t *val;
    size_t vlen;
    cp_keccak256(slot, 32, key);
    if (verify_proof(storage_root, key, 32, p, &val, &vlen, why) < 0)
        return -EINVAL;
    memset(out, 0, 32);
    if (vlen == 0)
        return 0;
    ta_rlp_item it;
    if (ta_rlp_decode(val, vlen, &it) < 0 || it.list || it.len == 0 ||
        it.len > 32 || it.p[0] == 0) {
        *why = "the storage value is not a minimal integer";
        return -EINVAL;
    }
    memcpy(out + 32 - it.len, it.p, it.len);
    return 0;
}

/* The contract's latest(jid, writer) at one block, from the state root. */
static int load_latest(const cJSON *o, tally_evidence_info *top, char *err,
                       size_t errsz)
{
    uint8_t *hdr = NULL;
    size_t hdr_len = 0;
    proof_buf acc = { .n = 0 }, s0 = { .n = 0 }, s1 = { .n = 0 };
    const char *why = NULL;
    int rc;
    uint8_t claimed_hash[32], claimed_head[32];
    uint64_t claimed_bn, claimed_seq, claimed_ab;
    const cJSON *sp = cJSON_GetObjectItemCaseSensitive(o, "slot_proofs");
    if (!cJSON_IsObject(o) || ju64(o, "block_number", &claimed_bn) < 0 ||
        jhex(o, "block_hash", claimed_hash, 32) < 0 ||
        ju64(o, "seq", &claimed_seq) < 0 || jhex(o, "head", claimed_head, 32) < 0 ||
        ju64(o, "anchor_block", &claimed_ab) < 0 ||
        jhex_alloc(o, "header", &hdr, &hdr_len) < 0 ||
        jproof(cJSON_GetObjectItemCaseSensitive(o, "account_proof"), &acc) < 0 ||
        !cJSON_IsArray(sp) || cJSON_GetArraySize(sp) != 2 ||
        jproof(cJSON_GetArrayItem(sp, 0), &s0) < 0 ||
        jproof(cJSON_GetArrayItem(sp, 1), &s1) < 0) {
        rc = efail(err, errsz, TALLY_EFORMAT,
                   "latest: a field is missing or malformed");
        goto out;
    }
    rc = TALLY_EINTEGRITY;
    header_info h;
    if (header_parse(hdr, hdr_len, &h, &why) < 0) {
        efail(err, errsz, rc, "latest: %s", why);
        goto out;
    }
    if (memcmp(h.hash, claimed_hash, 32) != 0 || h.number != claimed_bn) {
        efail(err, errsz, rc, "latest: the header does not hash to block %"
              PRIu64 "'s hash", claimed_bn);
        goto out;
    }
    uint8_t key[32], code_hash[32];
    const uint8_t *val;
    size_t vlen;
    cp_keccak256(top->contract, 20, key);
    ta_rlp_item list, it[4];
    if (verify_proof(h.state_root, key, 32, &acc, &val, &vlen, &why) < 0 ||
        vlen == 0 || ta_rlp_decode(val, vlen, &list) < 0 ||
        ta_rlp_list(&list, it, 4) != 4 || it[2].len != 32 || it[3].len != 32) {
        efail(err, errsz, rc, "latest: the contract's account is not proven "
              "under block %" PRIu64 "'s state root (%s)", h.number,
              why ? why : "no account there");
        goto out;
    }
    cp_keccak256(cp_anchor_runtime, cp_anchor_runtime_len, code_hash);
    if (memcmp(it[3].p, code_hash, 32) != 0) {
        efail(err, errsz, rc, "latest: the contract's code is not "
              "JournalAnchor's (code hash differs)");
        goto out;
    }
    uint8_t storage_root[32], slot0[32], slot1[32], v0[32], v1[32];
    memcpy(storage_root, it[2].p, 32);
    ta_anchor_slots(top->journal_id, top->writer, slot0, slot1);
    if (slot_value(storage_root, slot0, &s0, v0, &why) < 0 ||
        slot_value(storage_root, slot1, &s1, v1, &why) < 0) {
        efail(err, errsz, rc, "latest: the anchor's storage is not proven "
              "(%s)", why);
        goto out;
    }
    /* slot0 = (blockNumber << 64) | seq, both uint64 (FORMAT.md §9.1). */
    for (int i = 0; i < 16; i++)
        if (v0[i]) {
            efail(err, errsz, rc, "latest: the proven slot holds more than "
                  "(blockNumber, seq)");
            goto out;
        }
    tally_anchor A;
    A.seq = 0;
    A.block_number = 0;
    for (int i = 16; i < 24; i++)
        A.block_number = A.block_number << 8 | v0[i];
    for (int i = 24; i < 32; i++)
        A.seq = A.seq << 8 | v0[i];
    memcpy(A.head, v1, 32);
    if (A.seq != claimed_seq || A.block_number != claimed_ab ||
        memcmp(A.head, claimed_head, 32) != 0) {
        efail(err, errsz, rc, "latest: the bundle's seq %" PRIu64 ", block %"
              PRIu64 " and head differ from the proven storage's (seq %" PRIu64
              ", block %" PRIu64 ")", claimed_seq, claimed_ab, A.seq,
              A.block_number);
        goto out;
    }
    top->as_of_block = h.number;
    memcpy(top->as_of_hash, h.hash, 32);
    top->as_of_time = h.timestamp;
    top->latest = A;
    rc = 0;
out:
    free(hdr);
    proof_buf_free(&acc);
    proof_buf_free(&s0);
    proof_buf_free(&s1);
    return rc;
}

static int load_json(cJSON *root, tally_evidence **ret, char *err, size_t errsz)
{
    const cJSON *fmt = cJSON_GetObjectItemCaseSensitive(root, "format");
    const cJSON *ver = cJSON_GetObjectItemCaseSensitive(root, "version");
    if (!cJSON_IsString(fmt) || strcmp(fmt->valuestring, EVIDENCE_FORMAT) != 0)
        return efail(err, errsz, TALLY_EFORMAT, "not a tally evidence bundle");
    if (!cJSON_IsNumber(ver) || ver->valuedouble != EVIDENCE_VERSION)
        return efail(err, errsz, TALLY_EFORMAT, "evidence bundle version is "
                     "not %d", EVIDENCE_VERSION);
    tally_evidence *ev = calloc(1, sizeof *ev);
    if (!ev)
        return -ENOMEM;
    tally_evidence_info *top = &ev->info;
    const char *jid = jstr(root, "journal_id");
    const cJSON *anchors = cJSON_GetObjectItemCaseSensitive(root, "anchors");
    int rc;
    if (!jid || strlen(jid) != 64 || ju64(root, "chain_id", &top->chain_id) < 0 ||
        ju64(root, "created_ns", &top->created_ns) < 0 ||
        jhex(root, "contract", top->contract, 20) < 0 ||
        jhex(root, "writer", top->writer, 20) < 0 || !cJSON_IsArray(anchors)) {
        rc = efail(err, errsz, TALLY_EFORMAT, "the bundle's top-level fields "
                   "are missing or malformed");
        goto fail;
    }
    {
        char buf[67] = "0x";
        memcpy(buf + 2, jid, 65);
        if (cp_hex_data(buf, top->journal_id, 32) < 0) {
            rc = efail(err, errsz, TALLY_EFORMAT, "bad journal_id");
            goto fail;
        }
    }
    size_t n = (size_t)cJSON_GetArraySize(anchors);
    if (n) {
        ev->anchors = calloc(n, sizeof *ev->anchors);
        if (!ev->anchors) {
            rc = -ENOMEM;
            goto fail;
        }
    }
    const cJSON *o;
    size_t i = 0;
    cJSON_ArrayForEach(o, anchors)
    {
        rc = load_anchor(o, top, &ev->anchors[i], err, errsz, i);
        if (rc < 0)
            goto fail;
        if (i > 0 && (ev->anchors[i].seq <= ev->anchors[i - 1].seq ||
                      ev->anchors[i].block_number < ev->anchors[i - 1].block_number)) {
            rc = efail(err, errsz, TALLY_EINTEGRITY, "anchor %zu: seq %" PRIu64
                       " does not follow seq %" PRIu64 " (the contract only "
                       "takes increasing seqs)", i, ev->anchors[i].seq,
                       ev->anchors[i - 1].seq);
            goto fail;
        }
        i++;
    }
    ev->n = n;
    top->anchors = n;
    rc = load_latest(cJSON_GetObjectItemCaseSensitive(root, "latest"), top,
                     err, errsz);
    if (rc < 0)
        goto fail;
    /* The latest state is the last anchor, and no anchor is after it. */
    const tally_anchor *A = &top->latest;
    const ta_anchor *last = n ? &ev->anchors[n - 1] : NULL;
    if (A->seq == 0 ? n != 0
                    : !last || last->seq != A->seq ||
                          memcmp(last->head, A->head, 32) != 0 ||
                          last->block_number != A->block_number ||
                          last->block_number > top->as_of_block) {
        rc = efail(err, errsz, TALLY_EINTEGRITY,
                   "the latest state (seq %" PRIu64 ", block %" PRIu64
                   ") is not the bundle's last anchor (seq %" PRIu64 ")",
                   A->seq, A->block_number, last ? last->seq : 0);
        goto fail;
    }
    *ret = ev;
    return 0;
fail:
    tally_evidence_free(ev);
    return rc;
}

int tally_evidence_load(tally_evidence **ret, const char *path, char *err,
                        size_t errsz)
{
    if (!ret || !path)
        return -EINVAL;
    if (err && errsz)
        err[0] = '\0';
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return efail(err, errsz, -errno, "%s: cannot open", path);
    struct stat st;
    if (fstat(fd, &st) < 0 || st.st_size > (off_t)1 << 30) {
        close(fd);
        return efail(err, errsz, -EFBIG, "%s: not a file of at most 1 GiB",
                     path);
    }
    char *text = malloc((size_t)st.st_size + 1);
    if (!text) {
        close(fd);
        return -ENOMEM;
    }
    ssize_t n = ti_pread_full(fd, text, (size_t)st.st_size, 0);
    close(fd);
    if (n != st.st_size) {
        free(text);
        return efail(err, errsz, n < 0 ? (int)n : -EIO, "%s: cannot read",
                     path);
    }
    text[n] = '\0';
    cJSON *root = cJSON_Parse(text);
    free(text);
    if (!root)
        return efail(err, errsz, TALLY_EFORMAT, "%s: not JSON", path);
    int rc = load_json(root, ret, err, errsz);
    cJSON_Delete(root);
    return rc;
}

/* ---- export: reading the chain -------------------------------------------------------- */

typedef struct sbuf {
    char *p;
    size_t len, cap;
    int err;
} sbuf;

static void sb_put(sbuf *b, const char *s, size_t n)
{
    if (b->err)
        return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) {
            b->err = -ENOMEM;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static int cmp_str(const void *x, const void *y)
{
    const cJSON *a = *(const cJSON *const *)x, *b = *(const cJSON *const *)y;
    return strcmp(a->string, b->string);
}

/* Canonical JSON (keys sorted, hex in lower case) so that two endpoints
 * agree on a value whatever their key order or hex case. */
static void canon(sbuf *b, const cJSON *v)
{
    if (cJSON_IsObject(v) || cJSON_IsArray(v)) {
        size_t n = (size_t)cJSON_GetArraySize(v), i = 0;
        const cJSON **kids = n ? malloc(n * sizeof *kids) : NULL;
        if (n && !kids) {
            b->err = -ENOMEM;
            return;
        }
        const cJSON *c;
        cJSON_ArrayForEach(c, v) kids[i++] = c;
        bool obj = cJSON_IsObject(v);
        if (obj)
            qsort(kids, n, sizeof *kids, cmp_str);
        sb_put(b, obj ? "{" : "[", 1);
        for (i = 0; i < n; i++) {
            if (i)
                sb_put(b, ",", 1);
            if (obj) {
                cJSON *k = cJSON_CreateString(kids[i]->string);
                char *ks = k ? cJSON_PrintUnformatted(k) : NULL;
                if (ks)
                    sb_put(b, ks, strlen(ks));
                else
                    b->err = -ENOMEM;
                free(ks);
                cJSON_Delete(k);
                sb_put(b, ":", 1);
            }
            canon(b, kids[i]);
        }
        sb_put(b, obj ? "}" : "]", 1);
        free(kids);
        return;
    }
    if (cJSON_IsString(v) && v->valuestring[0] == '0' &&
        (v->valuestring[1] == 'x' || v->valuestring[1] == 'X')) {
        char *s = strdup(v->valuestring);
        if (!s) {
            b->err = -ENOMEM;
            return;
        }
        for (char *c = s; *c; c++)
            if (*c >= 'A' && *c <= 'Z')
                *c = (char)(*c - 'A' + 'a');
        sb_put(b, "\"", 1);
        sb_put(b, s, strlen(s));
        sb_put(b, "\"", 1);
        free(s);
        return;
    }
    char *s = cJSON_PrintUnformatted(v);
    if (!s) {
        b->err = -ENOMEM;
        return;
    }
    sb_put(b, s, strlen(s));
    free(s);
}

static int norm_canon(const cJSON *res, void *ctx, char **ret, char *why,
                      size_t whysz)
{
    (void)ctx;
    if (cJSON_IsNull(res)) {
        snprintf(why, whysz, "the node does not know it (null)");
        return -ENOENT;
    }
    sbuf b = { 0 };
    canon(&b, res);
    if (b.err) {
        free(b.p);
        return b.err;
    }
    *ret = b.p;
    return 0;
}

/* An agreed read, parsed. */
static int rpc_json(tally_eth *e, const char *what, const char *method,
                    const char *params, cJSON **ret)
{
    char *s = NULL;
    int rc = cp_eth_read(e, what, method, params, norm_canon, NULL, &s);
    if (rc < 0)
        return rc;
    cJSON *j = cJSON_Parse(s);
    free(s);
    if (!j)
        return -ENOMEM;
    *ret = j;
    return 0;
}

/* ---- export: the Ethereum encodings -------------------------------------------------------- */

/* A hex quantity of any size as minimal big-endian bytes into the encoder. */
static int rlp_quantity(cp_rlp *r, const cJSON *o, const char *name)
{
    const char *s = jstr(o, name);
    if (!s || s[0] != '0' || (s[1] != 'x' && s[1] != 'X'))
        return -EPROTO;
    s += 2;
    size_t n = strlen(s);
    if (n == 0 || n > 64)
        return -EPROTO;
    uint8_t be[32];
    memset(be, 0, sizeof be);
    for (size_t i = 0; i < n; i++) {
        char c = s[n - 1 - i];
        int v = c >= '0' && c <= '9'   ? c - '0'
                : c >= 'a' && c <= 'f' ? c - 'a' + 10
                : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                       : -1;
        if (v < 0)
            return -EPROTO;
        be[31 - i / 2] |= (uint8_t)(i % 2 ? v << 4 : v);
    }
    cp_rlp_uint_be(r, be, 32);
    return 0;
}

static int rlp_data(cp_rlp *r, const cJSON *o, const char *name, size_t want)
{
    uint8_t *d = NULL;
    size_t n = 0;
    const char *s = jstr(o, name);
    if (!s && want == 20 && cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(o, name))) {
        cp_rlp_bytes(r, NULL, 0); /* "to": null, a contract creation */
        return 0;
    }
    if (!s || cp_hex_data_alloc(s, &d, &n) < 0)
        return -EPROTO;
    if (want && n != want) {
        free(d);
        return -EPROTO;
    }
    cp_rlp_bytes(r, d, n);
    free(d);
    return 0;
}

/* The header's RLP from eth_getBlockBy*'s fields: the 15 of every header,
 * then those later forks added, in their order, as far as present. */
static int header_rlp(const cJSON *b, cp_rlp *r)
{
    static const struct {
        const char *name;
        int kind; /* 0 quantity, >0 fixed bytes, -1 any bytes */
    } f[] = {
        { "parentHash", 32 }, { "sha3Uncles", 32 }, { "miner", 20 },
        { "stateRoot", 32 }, { "transactionsRoot", 32 },
        { "receiptsRoot", 32 }, { "logsBloom", 256 }, { "difficulty", 0 },
        { "number", 0 }, { "gasLimit", 0 }, { "gasUsed", 0 },
        { "timestamp", 0 }, { "extraData", -1 }, { "mixHash", 32 },
        { "nonce", 8 },
        /* London, Shanghai, Cancun, Prague */
        { "baseFeePerGas", 0 }, { "withdrawalsRoot", 32 },
        { "blobGasUsed", 0 }, { "excessBlobGas", 0 },
        { "parentBeaconBlockRoot", 32 }, { "requestsHash", 32 },
    };
    size_t start = cp_rlp_begin_list(r);
    for (size_t i = 0; i < sizeof f / sizeof f[0]; i++) {
        if (i >= 15 && !jstr(b, f[i].name))
            break;
        int rc = f[i].kind == 0 ? rlp_quantity(r, b, f[i].name)
                                : rlp_data(r, b, f[i].name,
                                           f[i].kind > 0 ? (size_t)f[i].kind : 0);
        if (rc < 0)
            return rc;
    }
    cp_rlp_end_list(r, start);
    return r->err;
}

static int access_list(cp_rlp *r, const cJSON *tx)
{
    const cJSON *al = cJSON_GetObjectItemCaseSensitive(tx, "accessList");
    size_t start = cp_rlp_begin_list(r);
    if (al && !cJSON_IsArray(al))
        return -EPROTO;
    const cJSON *e;
    cJSON_ArrayForEach(e, al)
    {
        size_t s2 = cp_rlp_begin_list(r);
        if (rlp_data(r, e, "address", 20) < 0)
            return -EPROTO;
        size_t s3 = cp_rlp_begin_list(r);
        const cJSON *keys = cJSON_GetObjectItemCaseSensitive(e, "storageKeys");
        const cJSON *k;
        cJSON_ArrayForEach(k, keys)
        {
            uint8_t kb[32];
            if (!cJSON_IsString(k) || cp_hex_data(k->valuestring, kb, 32) < 0)
                return -EPROTO;
            cp_rlp_bytes(r, kb, 32);
        }
        cp_rlp_end_list(r, s3);
        cp_rlp_end_list(r, s2);
    }
    cp_rlp_end_list(r, start);
    return 0;
}

/* An EIP-2718 envelope: the type byte (none for 0) and the RLP list, as one
 * malloc'd buffer. */
static int typed(uint64_t type, cp_rlp *list, uint8_t **ret, size_t *ret_len)
{
    if (list->err)
        return list->err;
    size_t pre = type ? 1 : 0;
    uint8_t *p = malloc(list->len + pre);
    if (!p)
        return -ENOMEM;
    if (pre)
        p[0] = (uint8_t)type;
    memcpy(p + pre, list->p, list->len);
    *ret = p;
    *ret_len = list->len + pre;
    return 0;
}

/* The signed transaction's bytes from its JSON fields (types 0, 1, 2;
 * -EOPNOTSUPP for others, which the node must give raw). */
static int tx_raw(const cJSON *tx, uint8_t **ret, size_t *ret_len)
{
    uint64_t type = 0;
    const char *ts = jstr(tx, "type");
    if (ts && cp_hex_quantity(ts, &type) < 0)
        return -EPROTO;
    if (type > 2)
        return -EOPNOTSUPP;
    cp_rlp r;
    cp_rlp_init(&r);
    size_t start = cp_rlp_begin_list(&r);
    int rc = 0;
    if (type == 0) {
        rc |= rlp_quantity(&r, tx, "nonce");
        rc |= rlp_quantity(&r, tx, "gasPrice");
        rc |= rlp_quantity(&r, tx, "gas");
        rc |= rlp_data(&r, tx, "to", 20);
        rc |= rlp_quantity(&r, tx, "value");
        rc |= rlp_data(&r, tx, "input", 0);
        rc |= rlp_quantity(&r, tx, "v");
    } else {
        rc |= rlp_quantity(&r, tx, "chainId");
        rc |= rlp_quantity(&r, tx, "nonce");
        if (type == 1) {
            rc |= rlp_quantity(&r, tx, "gasPrice");
        } else {
            rc |= rlp_quantity(&r, tx, "maxPriorityFeePerGas");
            rc |= rlp_quantity(&r, tx, "maxFeePerGas");
        }
        rc |= rlp_quantity(&r, tx, "gas");
        rc |= rlp_data(&r, tx, "to", 20);
        rc |= rlp_quantity(&r, tx, "value");
        rc |= rlp_data(&r, tx, "input", 0);
        rc |= access_list(&r, tx);
        rc |= rlp_quantity(&r, tx, jstr(tx, "yParity") ? "yParity" : "v");
    }
    rc |= rlp_quantity(&r, tx, "r");
    rc |= rlp_quantity(&r, tx, "s");
    cp_rlp_end_list(&r, start);
    if (rc == 0)
        rc = typed(type, &r, ret, ret_len);
    else
        rc = -EPROTO;
    cp_rlp_free(&r);
    return rc;
}

/* A receipt's consensus encoding from eth_getTransactionReceipt. */
static int receipt_raw(const cJSON *rc_, uint8_t **ret, size_t *ret_len)
{
    uint64_t type = 0, status;
    const char *ts = jstr(rc_, "type");
    if (ts && cp_hex_quantity(ts, &type) < 0)
        return -EPROTO;
    const cJSON *logs = cJSON_GetObjectItemCaseSensitive(rc_, "logs"), *l;
    if (type > 0x7e || !cJSON_IsArray(logs))
        return -EPROTO;
    cp_rlp r;
    cp_rlp_init(&r);
    size_t start = cp_rlp_begin_list(&r);
    int rc = 0;
    const char *st = jstr(rc_, "status");
    if (st) {
        if (cp_hex_quantity(st, &status) < 0)
            rc = -EPROTO;
        cp_rlp_uint(&r, status);
    } else {
        rc |= rlp_data(&r, rc_, "root", 32); /* before Byzantium */
    }
    rc |= rlp_quantity(&r, rc_, "cumulativeGasUsed");
    rc |= rlp_data(&r, rc_, "logsBloom", 256);
    size_t ls = cp_rlp_begin_list(&r);
    cJSON_ArrayForEach(l, logs)
    {
        size_t s1 = cp_rlp_begin_list(&r);
        rc |= rlp_data(&r, l, "address", 20);
        size_t s2 = cp_rlp_begin_list(&r);
        const cJSON *topics = cJSON_GetObjectItemCaseSensitive(l, "topics"), *t;
        if (!cJSON_IsArray(topics))
            rc = -EPROTO;
        cJSON_ArrayForEach(t, topics)
        {
            uint8_t tb[32];
            if (!cJSON_IsString(t) || cp_hex_data(t->valuestring, tb, 32) < 0)
                rc = -EPROTO;
            else
                cp_rlp_bytes(&r, tb, 32);
        }
        cp_rlp_end_list(&r, s2);
        rc |= rlp_data(&r, l, "data", 0);
        cp_rlp_end_list(&r, s1);
    }
    cp_rlp_end_list(&r, ls);
    cp_rlp_end_list(&r, start);
    if (rc == 0)
        rc = typed(type, &r, ret, ret_len);
    else
        rc = -EPROTO;
    cp_rlp_free(&r);
    return rc;
}

/* ---- export ----------------------------------------------------------------------------- */

/* One block: its header and, for an anchor's block, every transaction and
 * receipt encoded (the tries need them all). */
typedef struct block_data {
    uint8_t *header;
    size_t header_len;
    header_info h;
    size_t n;
    uint8_t **txs, **rcs;
    size_t *tx_lens, *rc_lens;
    uint8_t (*tx_hashes)[32];
    uint8_t (*keys)[9];
    const uint8_t **keyp; /* pointers to keys[i], as the trie takes them */
    size_t *key_lens;
} block_data;

static void block_free(block_data *b)
{
    free(b->header);
    for (size_t i = 0; i < b->n; i++) {
        if (b->txs)
            free(b->txs[i]);
        if (b->rcs)
            free(b->rcs[i]);
    }
    free(b->txs);
    free(b->rcs);
    free(b->tx_lens);
    free(b->rc_lens);
    free(b->tx_hashes);
    free(b->keys);
    free(b->keyp);
    free(b->key_lens);
    memset(b, 0, sizeof *b);
}

static int raw_tx_from_node(tally_eth *e, const uint8_t hash[32], uint8_t **ret,
                            size_t *ret_len)
{
    char h[67], params[96];
    cp_hex_encode(hash, 32, h);
    snprintf(params, sizeof params, "[\"%s\"]", h);
    cJSON *j = NULL;
    int rc = rpc_json(e, "raw transaction", "eth_getRawTransactionByHash",
                      params, &j);
    if (rc < 0)
        return rc;
    rc = cJSON_IsString(j) ? cp_hex_data_alloc(j->valuestring, ret, ret_len)
                           : -EPROTO;
    cJSON_Delete(j);
    return rc;
}

static int fetch_block(tally_eth *e, const char *method, const char *which,
                       bool full, block_data *bd, char *err, size_t errsz)
{
    char params[128];
    snprintf(params, sizeof params, "[\"%s\",%s]", which, full ? "true" : "false");
    cJSON *b = NULL, *rj = NULL;
    cp_rlp r;
    cp_rlp_init(&r);
    const char *why = NULL;
    int rc = rpc_json(e, "block", method, params, &b);
    if (rc < 0) {
        efail(err, errsz, rc, "block %s: %s", which, tally_eth_errmsg(e));
        goto out;
    }
    uint8_t hash[32];
    if (jhex(b, "hash", hash, 32) < 0 || header_rlp(b, &r) < 0) {
        rc = efail(err, errsz, -EPROTO, "block %s: the header's fields are "
                   "missing or malformed", which);
        goto out;
    }
    bd->header = malloc(r.len);
    if (!bd->header) {
        rc = -ENOMEM;
        goto out;
    }
    memcpy(bd->header, r.p, r.len);
    bd->header_len = r.len;
    if (header_parse(bd->header, bd->header_len, &bd->h, &why) < 0 ||
        memcmp(bd->h.hash, hash, 32) != 0) {
        rc = efail(err, errsz, -EPROTO, "block %s: keccak of the header's RLP "
                   "is not the block hash the node gives (a header layout "
                   "this version does not know?)", which);
        goto out;
    }
    if (!full)
        goto out;
    const cJSON *txs = cJSON_GetObjectItemCaseSensitive(b, "transactions");
    if (!cJSON_IsArray(txs)) {
        rc = efail(err, errsz, -EPROTO, "block %s: no transaction list", which);
        goto out;
    }
    size_t n = (size_t)cJSON_GetArraySize(txs);
    bd->txs = calloc(n ? n : 1, sizeof *bd->txs);
    bd->rcs = calloc(n ? n : 1, sizeof *bd->rcs);
    bd->tx_lens = calloc(n ? n : 1, sizeof *bd->tx_lens);
    bd->rc_lens = calloc(n ? n : 1, sizeof *bd->rc_lens);
    bd->tx_hashes = calloc(n ? n : 1, sizeof *bd->tx_hashes);
    bd->keys = calloc(n ? n : 1, sizeof *bd->keys);
    bd->keyp = calloc(n ? n : 1, sizeof *bd->keyp);
    bd->key_lens = calloc(n ? n : 1, sizeof *bd->key_lens);
    if (!bd->txs || !bd->rcs || !bd->tx_lens || !bd->rc_lens ||
        !bd->tx_hashes || !bd->keys || !bd->keyp || !bd->key_lens) {
        rc = -ENOMEM;
        goto out;
    }
    bd->n = n;
    size_t i = 0;
    const cJSON *tx;
    cJSON_ArrayForEach(tx, txs)
    {
        uint8_t th[32];
        if (jhex(tx, "hash", bd->tx_hashes[i], 32) < 0) {
            rc = efail(err, errsz, -EPROTO, "block %s: transaction %zu has no "
                       "hash", which, i);
            goto out;
        }
        bd->key_lens[i] = ta_index_key(i, bd->keys[i]);
        bd->keyp[i] = bd->keys[i];
        rc = tx_raw(tx, &bd->txs[i], &bd->tx_lens[i]);
        if (rc == 0) {
            cp_keccak256(bd->txs[i], bd->tx_lens[i], th);
            if (memcmp(th, bd->tx_hashes[i], 32) != 0) {
                free(bd->txs[i]);
                bd->txs[i] = NULL;
                rc = -EOPNOTSUPP;
            }
        }
        if (rc < 0 && rc != -ENOMEM)
            rc = raw_tx_from_node(e, bd->tx_hashes[i], &bd->txs[i],
                                  &bd->tx_lens[i]);
        if (rc == 0) {
            cp_keccak256(bd->txs[i], bd->tx_lens[i], th);
            if (memcmp(th, bd->tx_hashes[i], 32) != 0)
                rc = -EPROTO;
        }
        if (rc < 0) {
            efail(err, errsz, rc, "block %s: cannot reproduce the bytes of "
                  "transaction %zu (its hash)", which, i);
            goto out;
        }
        char h[67], p2[96];
        cp_hex_encode(bd->tx_hashes[i], 32, h);
        snprintf(p2, sizeof p2, "[\"%s\"]", h);
        rc = rpc_json(e, "receipt", "eth_getTransactionReceipt", p2, &rj);
        if (rc < 0) {
            efail(err, errsz, rc, "receipt of %s: %s", h, tally_eth_errmsg(e));
            goto out;
        }
        rc = receipt_raw(rj, &bd->rcs[i], &bd->rc_lens[i]);
        cJSON_Delete(rj);
        rj = NULL;
        if (rc < 0) {
            efail(err, errsz, rc, "receipt of %s: malformed", h);
            goto out;
        }
        i++;
    }
    /* The tries must give the header's roots, or the encodings are wrong. */
    uint8_t root[32];
    rc = ta_mpt_build(bd->keyp, bd->key_lens,
                      (const uint8_t *const *)bd->txs, bd->tx_lens, n, NULL, 0,
                      root, NULL);
    if (rc == 0 && memcmp(root, bd->h.tx_root, 32) != 0)
        rc = efail(err, errsz, -EPROTO, "block %s: the transactions do not "
                   "give its transactionsRoot", which);
    if (rc == 0) {
        rc = ta_mpt_build(bd->keyp, bd->key_lens,
                          (const uint8_t *const *)bd->rcs, bd->rc_lens, n,
                          NULL, 0, root, NULL);
        if (rc == 0 && memcmp(root, bd->h.receipt_root, 32) != 0)
            rc = efail(err, errsz, -EPROTO, "block %s: the receipts do not "
                       "give its receiptsRoot", which);
    }
out:
    cJSON_Delete(b);
    cJSON_Delete(rj);
    cp_rlp_free(&r);
    return rc;
}

static cJSON *hex_json(const uint8_t *d, size_t n)
{
    char *s = malloc(2 * n + 3);
    if (!s)
        return NULL;
    cp_hex_encode(d, n, s);
    cJSON *j = cJSON_CreateString(s);
    free(s);
    return j;
}

static cJSON *u64_json(uint64_t v)
{
    char s[24];
    snprintf(s, sizeof s, "%" PRIu64, v);
    return cJSON_CreateString(s);
}

static cJSON *proof_json(uint8_t *const *nodes, const size_t *lens, size_t n)
{
    cJSON *a = cJSON_CreateArray();
    for (size_t i = 0; a && i < n; i++)
        if (!cJSON_AddItemToArray(a, hex_json(nodes[i], lens[i]))) {
            cJSON_Delete(a);
            return NULL;
        }
    return a;
}

/* Adds name = v to o; false (v freed) when v is NULL or adding fails. */
static bool put(cJSON *o, const char *name, cJSON *v)
{
    if (!v)
        return false;
    if (!cJSON_AddItemToObject(o, name, v)) {
        cJSON_Delete(v);
        return false;
    }
    return true;
}

static int anchor_json(const tally_anchor_event *ev, const block_data *bd,
                       cJSON **ret, char *err, size_t errsz)
{
    size_t idx = 0;
    while (idx < bd->n && memcmp(bd->tx_hashes[idx], ev->tx_hash, 32) != 0)
        idx++;
    if (idx == bd->n)
        return efail(err, errsz, -EPROTO, "the anchor of seq %" PRIu64
                     ": its transaction is not in block %" PRIu64,
                     ev->seq, ev->block_number);
    ta_proof tp, rp;
    memset(&tp, 0, sizeof tp);
    memset(&rp, 0, sizeof rp);
    uint8_t root[32];
    int rc = ta_mpt_build(bd->keyp, bd->key_lens,
                          (const uint8_t *const *)bd->txs, bd->tx_lens, bd->n,
                          bd->keys[idx], bd->key_lens[idx], root, &tp);
    if (rc == 0)
        rc = ta_mpt_build(bd->keyp, bd->key_lens,
                          (const uint8_t *const *)bd->rcs, bd->rc_lens, bd->n,
                          bd->keys[idx], bd->key_lens[idx], root, &rp);
    cJSON *o = rc == 0 ? cJSON_CreateObject() : NULL;
    bool ok = o && put(o, "seq", u64_json(ev->seq)) &&
              put(o, "head", hex_json(ev->head, 32)) &&
              put(o, "block_number", u64_json(ev->block_number)) &&
              put(o, "block_hash", hex_json(ev->block_hash, 32)) &&
              put(o, "tx_hash", hex_json(ev->tx_hash, 32)) &&
              put(o, "tx_index", u64_json(idx)) &&
              put(o, "log_index", u64_json(ev->log_index)) &&
              put(o, "header", hex_json(bd->header, bd->header_len)) &&
              put(o, "tx", hex_json(bd->txs[idx], bd->tx_lens[idx])) &&
              put(o, "tx_proof", proof_json(tp.nodes, tp.lens, tp.n)) &&
              put(o, "receipt", hex_json(bd->rcs[idx], bd->rc_lens[idx])) &&
              put(o, "receipt_proof", proof_json(rp.nodes, rp.lens, rp.n));
    ta_proof_free(&tp);
    ta_proof_free(&rp);
    if (!ok) {
        cJSON_Delete(o);
        return rc < 0 ? rc : -ENOMEM;
    }
    *ret = o;
    return 0;
}

/* eth_getProof of the anchor's two slots at block B, checked, as the
 * bundle's "latest". */
static int latest_json(tally_eth *e, const uint8_t contract[20],
                       const uint8_t jid[32], const uint8_t writer[20],
                       const block_data *bd, cJSON **ret, char *err,
                       size_t errsz)
{
    uint8_t slot0[32], slot1[32];
    ta_anchor_slots(jid, writer, slot0, slot1);
    char a[43], s0[67], s1[67], params[256];
    cp_hex_encode(contract, 20, a);
    cp_hex_encode(slot0, 32, s0);
    cp_hex_encode(slot1, 32, s1);
    snprintf(params, sizeof params, "[\"%s\",[\"%s\",\"%s\"],\"0x%" PRIx64 "\"]",
             a, s0, s1, bd->h.number);
    cJSON *res = NULL, *o = NULL;
    int rc = rpc_json(e, "state proof", "eth_getProof", params, &res);
    if (rc < 0)
        return efail(err, errsz, rc, "eth_getProof at block %" PRIu64 ": %s",
                     bd->h.number, tally_eth_errmsg(e));
    const cJSON *acc = cJSON_GetObjectItemCaseSensitive(res, "accountProof");
    const cJSON *sp = cJSON_GetObjectItemCaseSensitive(res, "storageProof");
    const cJSON *p0 = cJSON_GetArrayItem(sp, 0), *p1 = cJSON_GetArrayItem(sp, 1);
    proof_buf pa = { .n = 0 }, pb0 = { .n = 0 }, pb1 = { .n = 0 };
    rc = -EPROTO;
    if (!cJSON_IsArray(sp) || cJSON_GetArraySize(sp) != 2 || jproof(acc, &pa) < 0 ||
        jproof(cJSON_GetObjectItemCaseSensitive(p0, "proof"), &pb0) < 0 ||
        jproof(cJSON_GetObjectItemCaseSensitive(p1, "proof"), &pb1) < 0) {
        efail(err, errsz, rc, "eth_getProof: malformed answer");
        goto out;
    }
    /* The values, from the proofs (checked again at load). */
    uint8_t key[32], v0[32], v1[32];
    const uint8_t *val;
    size_t vlen;
    const char *why = "no account";
    ta_rlp_item list, it[4];
    cp_keccak256(contract, 20, key);
    if (verify_proof(bd->h.state_root, key, 32, &pa, &val, &vlen, &why) < 0 ||
        vlen == 0 || ta_rlp_decode(val, vlen, &list) < 0 ||
        ta_rlp_list(&list, it, 4) != 4 || it[2].len != 32 ||
        slot_value(it[2].p, slot0, &pb0, v0, &why) < 0 ||
        slot_value(it[2].p, slot1, &pb1, v1, &why) < 0) {
        efail(err, errsz, rc, "eth_getProof at block %" PRIu64 ": the proofs "
              "do not verify against its state root (%s)", bd->h.number, why);
        goto out;
    }
    uint64_t seq = 0, ab = 0;
    for (int i = 16; i < 24; i++)
        ab = ab << 8 | v0[i];
    for (int i = 24; i < 32; i++)
        seq = seq << 8 | v0[i];
    o = cJSON_CreateObject();
    cJSON *slots = cJSON_CreateArray();
    bool ok = o && slots && put(o, "block_number", u64_json(bd->h.number)) &&
              put(o, "block_hash", hex_json(bd->h.hash, 32)) &&
              put(o, "header", hex_json(bd->header, bd->header_len)) &&
              put(o, "seq", u64_json(seq)) && put(o, "head", hex_json(v1, 32)) &&
              put(o, "anchor_block", u64_json(ab)) &&
              put(o, "account_proof", proof_json(pa.nodes, pa.lens, pa.n)) &&
              cJSON_AddItemToArray(slots, proof_json(pb0.nodes, pb0.lens, pb0.n)) &&
              cJSON_AddItemToArray(slots, proof_json(pb1.nodes, pb1.lens, pb1.n)) &&
              put(o, "slot_proofs", slots);
    if (!ok) {
        if (!o || !cJSON_GetObjectItemCaseSensitive(o, "slot_proofs"))
            cJSON_Delete(slots);
        cJSON_Delete(o);
        o = NULL;
        rc = -ENOMEM;
        goto out;
    }
    *ret = o;
    rc = 0;
out:
    proof_buf_free(&pa);
    proof_buf_free(&pb0);
    proof_buf_free(&pb1);
    cJSON_Delete(res);
    return rc;
}

/* Writes text to path: temp file beside it, fsync, rename, fsync the
 * directory (FORMAT.md §1's replace). */
static int write_atomic(const char *path, const char *text, size_t len)
{
    char tmp[4096], dir[4096];
    if (snprintf(tmp, sizeof tmp, "%s.%ld.tmp", path, (long)getpid()) >=
        (int)sizeof tmp)
        return -ENAMETOOLONG;
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    if (!slash)
        snprintf(dir, sizeof dir, ".");
    else if (slash == dir)
        dir[1] = '\0';
    else
        *slash = '\0';
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0)
        return -errno;
    int rc = ti_write_all(fd, text, len);
    if (rc == 0 && fsync(fd) < 0)
        rc = -errno;
    if (close(fd) < 0 && rc == 0)
        rc = -errno;
    if (rc == 0 && rename(tmp, path) < 0)
        rc = -errno;
    if (rc < 0) {
        unlink(tmp);
        return rc;
    }
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0)
        return -errno;
    rc = ti_fsync_dir(dfd);
    close(dfd);
    return rc;
}

static uint64_t realtime_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

int tally_evidence_export(tally_eth *eth,
                          const uint8_t contract[static TALLY_ADDRESS_BYTES],
                          const uint8_t writer[static TALLY_ADDRESS_BYTES],
                          const uint8_t jid[static TALLY_ID_BYTES],
                          const char *path, tally_evidence_export_report *ret)
{
    tally_evidence_export_report rep;
    memset(&rep, 0, sizeof rep);
    char *err = rep.message;
    size_t errsz = sizeof rep.message;
    tally_anchor_event *evs = NULL;
    block_data latest, cur;
    memset(&latest, 0, sizeof latest);
    memset(&cur, 0, sizeof cur);
    bool have_cur = false;
    uint8_t cur_hash[32];
    cJSON *doc = NULL, *anchors = NULL, *lj = NULL;
    char *text = NULL;
    int n = 0, rc;

    rc = cp_eth_ensure_chain(eth);
    if (rc < 0) {
        efail(err, errsz, rc, "%s", tally_eth_errmsg(eth));
        goto out;
    }
    rc = tally_anchor_check_code(eth, contract);
    if (rc < 0) {
        efail(err, errsz, rc, "%s", tally_eth_errmsg(eth));
        goto out;
    }
    /* The state block first, the events after: an anchor mined in between
     * is after the state block and left out. */
    uint64_t head_block, B;
    rc = tally_eth_block_number(eth, &head_block);
    if (rc < 0) {
        efail(err, errsz, rc, "%s", tally_eth_errmsg(eth));
        goto out;
    }
    unsigned conf = eth->confirmations > 1 ? eth->confirmations - 1 : 0;
    B = head_block > conf ? head_block - conf : 0;
    char which[32];
    snprintf(which, sizeof which, "0x%" PRIx64, B);
    rc = fetch_block(eth, "eth_getBlockByNumber", which, false, &latest, err,
                     errsz);
    if (rc < 0)
        goto out;
    n = tally_anchor_events(eth, contract, jid, writer, 0, &evs);
    if (n < 0) {
        rc = n;
        efail(err, errsz, rc, "%s", tally_eth_errmsg(eth));
        goto out;
    }
    doc = cJSON_CreateObject();
    anchors = cJSON_CreateArray();
    if (!doc || !anchors) {
        rc = -ENOMEM;
        goto out;
    }
    char jhexs[67];
    cp_hex_encode(jid, 32, jhexs);
    bool ok = cJSON_AddStringToObject(doc, "format", EVIDENCE_FORMAT) &&
              cJSON_AddNumberToObject(doc, "version", EVIDENCE_VERSION) &&
              put(doc, "created_ns", u64_json(realtime_ns())) &&
              cJSON_AddStringToObject(doc, "journal_id", jhexs + 2) &&
              put(doc, "chain_id", u64_json(eth->chain_id)) &&
              put(doc, "contract", hex_json(contract, 20)) &&
              put(doc, "writer", hex_json(writer, 20));
    if (!ok || !cJSON_AddItemToObject(doc, "anchors", anchors)) {
        if (ok)
            cJSON_Delete(anchors);
        rc = -ENOMEM;
        goto out;
    }
    for (int i = 0; i < n; i++) {
        const tally_anchor_event *ev = &evs[i];
        if (ev->block_number > B)
            continue;
        if (!have_cur || memcmp(cur_hash, ev->block_hash, 32) != 0) {
            block_free(&cur);
            char bh[67];
            cp_hex_encode(ev->block_hash, 32, bh);
            rc = fetch_block(eth, "eth_getBlockByHash", bh, true, &cur, err,
                             errsz);
            if (rc < 0)
                goto out;
            memcpy(cur_hash, ev->block_hash, 32);
            have_cur = true;
        }
        cJSON *aj = NULL;
        rc = anchor_json(ev, &cur, &aj, err, errsz);
        if (rc < 0)
            goto out;
        if (!cJSON_AddItemToArray(anchors, aj)) {
            cJSON_Delete(aj);
            rc = -ENOMEM;
            goto out;
        }
        rep.anchors++;
    }
    rc = latest_json(eth, contract, jid, writer, &latest, &lj, err, errsz);
    if (rc < 0)
        goto out;
    if (!cJSON_AddItemToObject(doc, "latest", lj)) {
        cJSON_Delete(lj);
        rc = -ENOMEM;
        goto out;
    }
    /* Check it all the way the auditor will, before it is written. */
    tally_evidence *check = NULL;
    char why[400];
    rc = load_json(doc, &check, why, sizeof why);
    if (rc < 0) {
        efail(err, errsz, rc == -ENOMEM ? rc : -EPROTO,
              "the bundle does not verify: %s", why);
        rc = rc == -ENOMEM ? rc : -EPROTO;
        goto out;
    }
    tally_evidence_free(check);
    text = cJSON_Print(doc);
    if (!text) {
        rc = -ENOMEM;
        goto out;
    }
    size_t len = strlen(text);
    text[len++] = '\n'; /* over the NUL: only len bytes are written */
    rc = write_atomic(path, text, len);
    if (rc < 0) {
        efail(err, errsz, rc, "%s: cannot write", path);
        goto out;
    }
    rep.as_of_block = B;
    rep.bytes = len;
    snprintf(rep.message, sizeof rep.message, "%zu anchors, latest state at "
             "block %" PRIu64, rep.anchors, B);
out:
    free(text);
    cJSON_Delete(doc);
    free(evs);
    block_free(&latest);
    block_free(&cur);
    if (ret)
        *ret = rep;
    return rc;
}
