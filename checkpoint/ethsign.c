/*
 * ethsign.c — local signing of legacy (type 0) Ethereum transactions with
 * EIP-155 replay protection, for nodes that hold no unlocked account
 * (--signer-key-file). libsecp256k1 signs with RFC 6979 nonces and always
 * returns low-S signatures, so the same inputs give the same raw bytes as
 * every other conforming signer (the known-answer tests rely on that).
 *
 * The private key stays in the caller's (sodium_malloc'd) buffer; nothing
 * here copies it except libsecp256k1's own stack frames.
 */
#include "checkpoint-internal.h"

#include <errno.h>
#include <secp256k1.h>
#include <secp256k1_recovery.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>

/* A context randomized against side channels (libsecp256k1 recommends this
 * before signing); one per call keeps the module free of global state, and
 * in libsecp256k1 0.2 a context is cheap (no precomputed tables). */
static secp256k1_context *new_context(void)
{
    secp256k1_context *ctx = secp256k1_context_create(SECP256K1_CONTEXT_NONE);
    if (!ctx)
        return NULL;
    uint8_t seed[32];
    randombytes_buf(seed, sizeof seed);
    if (!secp256k1_context_randomize(ctx, seed)) {
        secp256k1_context_destroy(ctx);
        ctx = NULL;
    }
    sodium_memzero(seed, sizeof seed);
    return ctx;
}

/* address = the last 20 bytes of keccak256(uncompressed pubkey without its
 * 0x04 prefix). */
static void pubkey_address(const secp256k1_context *ctx,
                           const secp256k1_pubkey *pk, uint8_t addr[20])
{
    uint8_t ser[65], h[32];
    size_t n = sizeof ser;
    (void)secp256k1_ec_pubkey_serialize(ctx, ser, &n, pk,
                                        SECP256K1_EC_UNCOMPRESSED);
    cp_keccak256(ser + 1, 64, h);
    memcpy(addr, h + 12, 20);
}

int cp_eth_address(const uint8_t key[static 32], uint8_t ret_addr[static 20])
{
    secp256k1_context *ctx = new_context();
    if (!ctx)
        return -ENOMEM;
    secp256k1_pubkey pk;
    int rc = 0;
    if (!secp256k1_ec_seckey_verify(ctx, key) ||
        !secp256k1_ec_pubkey_create(ctx, &pk, key))
        rc = -EINVAL;
    else
        pubkey_address(ctx, &pk, ret_addr);
    secp256k1_context_destroy(ctx);
    return rc;
}

/* rlp([nonce, gasPrice, gasLimit, to, value, data, a, b, c]) where the last
 * three are (chainId, 0, 0) for the signing hash (EIP-155) and (v, r, s) in
 * the signed transaction. */
static void encode_tx(cp_rlp *r, const cp_legacy_tx *tx, uint64_t a,
                      const uint8_t *b, size_t blen, const uint8_t *c,
                      size_t clen)
{
    size_t list = cp_rlp_begin_list(r);
    cp_rlp_uint(r, tx->nonce);
    cp_rlp_uint(r, tx->gas_price);
    cp_rlp_uint(r, tx->gas_limit);
    cp_rlp_bytes(r, tx->has_to ? tx->to : NULL, tx->has_to ? 20 : 0);
    cp_rlp_uint(r, tx->value);
    cp_rlp_bytes(r, tx->data, tx->data_len);
    cp_rlp_uint(r, a);
    cp_rlp_uint_be(r, b, blen);
    cp_rlp_uint_be(r, c, clen);
    cp_rlp_end_list(r, list);
}

int cp_eth_sign_legacy(const uint8_t key[static 32], const cp_legacy_tx *tx,
                       uint8_t **ret_raw, size_t *ret_len,
                       uint8_t ret_hash[static 32])
{
    if (tx->chain_id == 0 || tx->chain_id > (UINT64_MAX - 36) / 2)
        return -EINVAL;

    secp256k1_context *ctx = new_context();
    if (!ctx)
        return -ENOMEM;

    int rc = 0;
    cp_rlp r;
    cp_rlp_init(&r);
    secp256k1_ecdsa_recoverable_signature sig;
    secp256k1_pubkey pk, rec;
    uint8_t sighash[32], rs[64], want[20], got[20];
    int recid = -1;

    if (!secp256k1_ec_seckey_verify(ctx, key) ||
        !secp256k1_ec_pubkey_create(ctx, &pk, key)) {
        rc = -EINVAL;
        goto out;
    }

    encode_tx(&r, tx, tx->chain_id, NULL, 0, NULL, 0);
    if (r.err) {
        rc = r.err;
        goto out;
    }
    cp_keccak256(r.p, r.len, sighash);
    r.len = 0;

    /* NULL nonce function = RFC 6979 (deterministic). */
    if (!secp256k1_ecdsa_sign_recoverable(ctx, &sig, sighash, key, NULL,
                                          NULL)) {
        rc = -EINVAL;
        goto out;
    }
    (void)secp256k1_ecdsa_recoverable_signature_serialize_compact(ctx, rs,
                                                                  &recid, &sig);

    /* Recover the signer from what we are about to send: a signature that
     * does not name our address would be mined for someone else's account
     * (or refused) — fail here instead, with a clear cause. */
    pubkey_address(ctx, &pk, want);
    if (!secp256k1_ecdsa_recover(ctx, &rec, &sig, sighash)) {
        rc = -EPROTO;
        goto out;
    }
    pubkey_address(ctx, &rec, got);
    if (memcmp(want, got, 20) != 0 || recid < 0 || recid > 1) {
        rc = -EPROTO;
        goto out;
    }

    encode_tx(&r, tx, (uint64_t)recid + tx->chain_id * 2 + 35, rs, 32,
              rs + 32, 32);
    if (r.err) {
        rc = r.err;
        goto out;
    }
    cp_keccak256(r.p, r.len, ret_hash);
    *ret_raw = r.p;
    *ret_len = r.len;
    r.p = NULL;
out:
    cp_rlp_free(&r);
    secp256k1_context_destroy(ctx);
    return rc;
}

/* ---- hex addresses (EIP-55) ------------------------------------------- */

static const char hexdig[] = "0123456789abcdef";

void cp_eth_address_format(const uint8_t addr[static 20], char out[static 43])
{
    char lower[40];
    uint8_t h[32];
    for (unsigned i = 0; i < 20; i++) {
        lower[2 * i] = hexdig[addr[i] >> 4];
        lower[2 * i + 1] = hexdig[addr[i] & 15];
    }
    /* EIP-55: upper-case a letter when the matching nibble of
     * keccak256(lower-case hex) is >= 8. */
    cp_keccak256(lower, sizeof lower, h);
    out[0] = '0';
    out[1] = 'x';
    for (unsigned i = 0; i < 40; i++) {
        unsigned nib = (i % 2 == 0) ? (h[i / 2] >> 4) : (h[i / 2] & 15);
        char c = lower[i];
        out[2 + i] = (c >= 'a' && nib >= 8) ? (char)(c - 'a' + 'A') : c;
    }
    out[42] = '\0';
}

static int hexval(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

int cp_eth_address_parse(const char *s, uint8_t ret_addr[static 20])
{
    if (s[0] == '0' && (s[1] == 'x' || s[1] == 'X'))
        s += 2;
    if (strlen(s) != 40)
        return -EINVAL;
    uint8_t a[20];
    int upper = 0, lowerc = 0;
    for (unsigned i = 0; i < 40; i++) {
        int v = hexval((unsigned char)s[i]);
        if (v < 0)
            return -EINVAL;
        if (s[i] >= 'A' && s[i] <= 'F')
            upper = 1;
        if (s[i] >= 'a' && s[i] <= 'f')
            lowerc = 1;
        if (i % 2 == 0)
            a[i / 2] = (uint8_t)(v << 4);
        else
            a[i / 2] |= (uint8_t)v;
    }
    /* Mixed case claims an EIP-55 checksum: a typo must not silently name
     * another contract or writer. All-lower or all-upper carries none. */
    if (upper && lowerc) {
        char chk[43];
        cp_eth_address_format(a, chk);
        if (strcmp(chk + 2, s) != 0)
            return -EINVAL;
    }
    memcpy(ret_addr, a, 20);
    return 0;
}
