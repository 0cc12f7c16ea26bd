/*
 * checkpoint-internal.h — what the files of checkpoint/ share with each
 * other and with the module's tests; not installed, not for callers.
 * Everything here is prefixed cp_.
 */
#ifndef TALLY_CHECKPOINT_INTERNAL_H
#define TALLY_CHECKPOINT_INTERNAL_H

#include <errno.h>
#include <stddef.h>
#include <stdint.h>

#include "checkpoint.h"

struct cJSON;

/* ---- keccak.c ---------------------------------------------------------- */

/* Keccak-256 with the original 0x01 padding (Ethereum's, not SHA3-256). */
void cp_keccak256(const void *data, size_t len, uint8_t out[static 32]);

/* ---- rlp.c ------------------------------------------------------------- */

typedef struct cp_rlp {
    uint8_t *p;
    size_t len, cap;
    int err; /* first failure (-ENOMEM); later calls do nothing */
} cp_rlp;

void cp_rlp_init(cp_rlp *r);
void cp_rlp_free(cp_rlp *r);
void cp_rlp_bytes(cp_rlp *r, const void *data, size_t len);
void cp_rlp_uint(cp_rlp *r, uint64_t v);
void cp_rlp_uint_be(cp_rlp *r, const uint8_t *be, size_t len);
size_t cp_rlp_begin_list(const cp_rlp *r);
void cp_rlp_end_list(cp_rlp *r, size_t start);

/* ---- ethsign.c --------------------------------------------------------- */

typedef struct cp_legacy_tx {
    uint64_t nonce;
    uint64_t gas_price; /* wei */
    uint64_t gas_limit;
    int has_to;         /* 0: contract creation */
    uint8_t to[20];
    uint64_t value;     /* wei */
    const uint8_t *data;
    size_t data_len;
    uint64_t chain_id;  /* EIP-155 */
} cp_legacy_tx;

int cp_eth_address(const uint8_t key[static 32], uint8_t ret_addr[static 20]);

/* Signs tx; *ret_raw (malloc'd) is the RLP of the signed transaction,
 * ret_hash its keccak (the transaction hash). */
int cp_eth_sign_legacy(const uint8_t key[static 32], const cp_legacy_tx *tx,
                       uint8_t **ret_raw, size_t *ret_len,
                       uint8_t ret_hash[static 32]);

void cp_eth_address_format(const uint8_t addr[static 20], char out[static 43]);
int cp_eth_address_parse(const char *s, uint8_t ret_addr[static 20]);

/* ---- rpc.c ------------------------------------------------------------- */

/* Returned by cp_rpc_call when the node answered with a JSON-RPC error
 * object (details in cp_rpc_error). */
#define CP_RPC_EREMOTE (-EREMOTEIO)

typedef struct cp_rpc_error {
    long code;
    char message[256];
    int has_data;  /* revert data found (possibly empty) */
    uint8_t *data; /* malloc'd; free with cp_rpc_error_clear */
    size_t data_len;
} cp_rpc_error;

void cp_rpc_error_clear(cp_rpc_error *err);

typedef struct cp_rpc cp_rpc;

int cp_rpc_new(cp_rpc **ret, const char *url, uint32_t timeout_ms,
               uint32_t connect_timeout_ms);
void cp_rpc_free(cp_rpc *r);

/* scheme://host[:port] of the URL: what error messages show (a path or
 * user info may carry an API key). */
const char *cp_rpc_name(const cp_rpc *r);

/* Calls method with params (a JSON array text). On success *ret_result is
 * the "result" member (detached; cJSON_Delete it; may be a JSON null). On
 * failure msg holds "<endpoint>: <method>: <what>" and, for CP_RPC_EREMOTE,
 * err (may be NULL) the error object. */
int cp_rpc_call(cp_rpc *r, const char *method, const char *params,
                struct cJSON **ret_result, cp_rpc_error *err, char *msg,
                size_t msgsz);

/* ---- hex (rpc.c) --------------------------------------------------------- */

/* A quantity: "0x" + minimal hex, at most 64 bits. */
int cp_hex_quantity(const char *s, uint64_t *ret);
/* Data of exactly len bytes ("0x" + 2·len hex digits). */
int cp_hex_data(const char *s, uint8_t *out, size_t len);
/* Data of any length; *ret malloc'd (NULL for "0x"). */
int cp_hex_data_alloc(const char *s, uint8_t **ret, size_t *ret_len);
/* "0x" + 2·len lower-case hex digits + NUL into out (2·len + 3 bytes). */
void cp_hex_encode(const uint8_t *data, size_t len, char *out);

/* ---- anchor-bytecode.c (generated from contracts/JournalAnchor*.bin) ---- */

extern const uint8_t cp_anchor_creation[];
extern const size_t cp_anchor_creation_len;
extern const uint8_t cp_anchor_runtime[];
extern const size_t cp_anchor_runtime_len;

/* ---- anchor.c: the contract's ABI ---------------------------------------- */

/* Decodes revert data of JournalAnchor (NotMonotonic), Error(string) and
 * Panic(uint256) into text; returns TALLY_EROLLBACK for NotMonotonic and
 * TALLY_EREVERTED for anything else. */
int cp_anchor_decode_revert(const uint8_t *data, size_t len, char *out,
                            size_t outsz);

/* ---- target.c ------------------------------------------------------------- */

int cp_target_same(const tally_checkpoint_info *a,
                   const tally_checkpoint_info *b);
void cp_target_name(const tally_checkpoint_info *c, char *out, size_t outsz);

/* ---- eth.c: the handle ---------------------------------------------------- */

struct tally_eth {
    cp_rpc *ep[TALLY_ETH_MAX_RPC];
    size_t n;
    unsigned quorum;           /* 0 = all */
    uint64_t want_chain_id;    /* 0 = any */
    uint64_t chain_id;         /* once checked */
    int chain_checked;
    int has_sender;
    uint8_t sender[20];
    uint8_t *key;              /* sodium_malloc'd signer key, or NULL */
    unsigned confirmations;
    uint32_t poll_ms, receipt_timeout_ms;
    size_t writer;             /* endpoint that takes transactions */
    char errmsg[1024];
    char disagree[1024];
};

/* Sets e->errmsg and returns rc. */
int cp_eth_fail(tally_eth *e, int rc, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Turns a JSON result into a canonical string that two endpoints must
 * produce identically to agree; -EPROTO (with why) for a malformed result. */
typedef int (*cp_norm_fn)(const struct cJSON *res, void *ctx, char **ret,
                          char *why, size_t whysz);

/* Asks every endpoint, applies the quorum, returns the agreed canonical
 * string (malloc'd). Retries twice after poll_ms when endpoints disagree
 * (one may be a block behind) before reporting TALLY_ECHAIN. */
int cp_eth_read(tally_eth *e, const char *what, const char *method,
                const char *params, cp_norm_fn norm, void *ctx, char **ret);

int cp_norm_data(const struct cJSON *res, void *ctx, char **ret, char *why,
                 size_t whysz);

/* Checks the chain id once per handle. */
int cp_eth_ensure_chain(tally_eth *e);

/* eth_call on the writer endpoint from the sender: the preflight of a
 * transaction. *ret_data (malloc'd) is the return data. A revert comes back
 * decoded as TALLY_EROLLBACK / TALLY_EREVERTED with the reason in errmsg,
 * prefixed by what. */
int cp_eth_preflight(tally_eth *e, const char *what, const uint8_t *to,
                     const uint8_t *data, size_t len);

/* A parsed, confirmed receipt. logs is the receipt's "logs" array (owned;
 * cJSON_Delete it). */
typedef struct cp_receipt {
    tally_eth_receipt r;
    int has_contract;
    struct cJSON *logs;
} cp_receipt;

/* Sends a transaction (to = NULL: contract creation) from the sender with
 * the given gas limit (0: estimated, with headroom), waits until it is mined
 * with status 1, has the configured confirmations and its block hash agrees
 * with eth_getBlockByNumber on the endpoints. */
int cp_eth_transact(tally_eth *e, const char *what, const uint8_t *to,
                    const uint8_t *data, size_t len, uint64_t gas,
                    cp_receipt *ret);

#endif
