/*
 * checkpoint.h — the public API of tally's checkpoint module: anchoring a
 * journal's head (seq, link) on an Ethereum chain, so that an operator who
 * puts back an old copy of the journal directory is caught (the chain's
 * monotonic counter is ahead of the restored copy).
 *
 * This part is the Ethereum backend: a handle on one or more JSON-RPC
 * endpoints (tally_eth), the JournalAnchor contract (checkpoint/contracts/,
 * creation bytecode built into the library) and its three operations:
 * deploy, anchor, and read the latest anchor back.
 *
 * Conventions are the journal's (journal/tally.h): 0 or a count on success,
 * a negative -errno or TALLY_E* code on failure, ret_* never written on
 * failure, no printing; the text of the last error is tally_eth_errmsg().
 * Codes a caller sees here:
 *   -ECONNREFUSED, -ETIMEDOUT, -EHOSTUNREACH, -EIO  the node is not reachable
 *   -EPROTO         the node answered something that is not valid JSON-RPC
 *                   or an error object that is not a revert
 *   TALLY_EREVERTED the contract refused (decoded reason in the message), or
 *                   a transaction was mined with status 0
 *   TALLY_EROLLBACK anchor(): the chain already holds a seq >= the given one
 *                   ("seq 7 is not greater than 9")
 *   TALLY_ECHAIN    endpoints disagree on a read, or the chain id is not the
 *                   configured one
 *
 * A tally_eth handle is used by one thread at a time.
 */
#ifndef TALLY_CHECKPOINT_H
#define TALLY_CHECKPOINT_H

#include <stddef.h>
#include <stdint.h>

#include "tally.h"

#ifdef __cplusplus
extern "C" {
#endif

#define TALLY_ADDRESS_BYTES   20u /* Ethereum account / contract address */
#define TALLY_ETH_HASH_BYTES  32u /* transaction and block hashes */
#define TALLY_ETH_KEY_BYTES   32u /* secp256k1 private key */
#define TALLY_ETH_MAX_RPC     8u  /* endpoints per handle */
#define TALLY_ADDRESS_STRLEN  43u /* "0x" + 40 hex digits + NUL */

typedef struct tally_eth_options {
    /* JSON-RPC endpoints, http:// or https:// (1..TALLY_ETH_MAX_RPC).
     * Transactions go to the first endpoint that accepts connections; every
     * read goes to all of them and must agree (see quorum). */
    const char *const *rpc_urls;
    size_t rpc_count;
    /* Reads: 0 = every endpoint must answer, with the same value; k = at
     * least k endpoints must give the same value, with 2k > rpc_count (a
     * majority). Any disagreement, even one outvoted, is reported by
     * tally_eth_disagreement(). */
    unsigned quorum;
    /* The chain id the caller expects; 0 = whatever the endpoints agree on.
     * A mismatch is TALLY_ECHAIN before anything is sent. */
    uint64_t chain_id;
    /* The sender, exactly one of:
     *   from        20 bytes: an account the node keeps unlocked (dev nodes;
     *               eth_sendTransaction);
     *   signer_key  32 bytes: a secp256k1 private key; transactions are
     *               signed here (legacy, EIP-155) and sent raw. The key is
     *               copied into locked memory and wiped at close.
     * Neither: the handle can only read. */
    const uint8_t *from;
    const uint8_t *signer_key;
    /* Blocks a transaction's block must have, itself included, before it
     * counts (0 and 1: mined is enough). */
    unsigned confirmations;
    /* Per HTTP request, whole request (0 = 10000 ms) and connect phase
     * (0 = 3000 ms). Every call has both. */
    uint32_t timeout_ms;
    uint32_t connect_timeout_ms;
    /* Receipt polling interval (0 = 250 ms) and how long to wait for a
     * transaction to be mined and confirmed (0 = 120000 ms). */
    uint32_t poll_ms;
    uint32_t receipt_timeout_ms;
} tally_eth_options;

typedef struct tally_eth tally_eth;

/* Creates the handle; no network traffic yet (the chain id is checked on
 * first use). */
int tally_eth_open(tally_eth **ret, const tally_eth_options *opt);

/* Wipes the signer key and frees the handle. NULL is a no-op. */
void tally_eth_close(tally_eth *e);

/* The last error on this handle, naming the endpoint (without any path or
 * credentials in its URL) and what was attempted. */
const char *tally_eth_errmsg(const tally_eth *e);

/* The disagreement seen by the last read, or NULL if every endpoint agreed.
 * With a quorum a read can succeed and still have this set: the outvoted
 * endpoint is reported, not ignored. */
const char *tally_eth_disagreement(const tally_eth *e);

/* The chain id the endpoints agree on (checked against opt->chain_id). */
int tally_eth_chain_id(tally_eth *e, uint64_t *ret_chain_id);

/* The lowest latest-block number among the endpoints that answered (heads
 * legitimately differ by a block or two); needs the quorum to answer. */
int tally_eth_block_number(tally_eth *e, uint64_t *ret_block);

/* The sending account (from, or the signer key's address); -ENOKEY for a
 * read-only handle. */
int tally_eth_sender(const tally_eth *e,
                     uint8_t ret_addr[static TALLY_ADDRESS_BYTES]);

/* A mined, confirmed transaction. The block hash was checked against
 * eth_getBlockByNumber on every endpoint. */
typedef struct tally_eth_receipt {
    uint8_t tx_hash[TALLY_ETH_HASH_BYTES];
    uint8_t block_hash[TALLY_ETH_HASH_BYTES];
    uint64_t block_number;
    uint64_t gas_used;
    uint8_t contract[TALLY_ADDRESS_BYTES]; /* deploy: the new contract */
} tally_eth_receipt;

/* ---- the JournalAnchor contract ------------------------------------------ */

/* Deploys the contract (bytecode built into the library) and checks the
 * code at the new address; the address is in ret->contract. */
int tally_anchor_deploy(tally_eth *e, tally_eth_receipt *ret);

/* Checks that contract holds JournalAnchor's runtime code: a caller-given
 * address that points at anything else is refused (TALLY_ECHAIN). */
int tally_anchor_check_code(tally_eth *e,
                            const uint8_t contract[static TALLY_ADDRESS_BYTES]);

/* Anchors (seq, head) for journal under the sender's address: simulated
 * first (eth_call; a refusal is decoded), then sent, mined and confirmed,
 * and the receipt must carry the matching Anchored event. */
int tally_anchor_submit(tally_eth *e,
                        const uint8_t contract[static TALLY_ADDRESS_BYTES],
                        const uint8_t journal[static TALLY_ID_BYTES],
                        uint64_t seq,
                        const uint8_t head[static TALLY_HASH_BYTES],
                        tally_eth_receipt *ret);

/* The latest anchor of (journal, writer); seq 0 (and zeros) if never
 * anchored. Read from every endpoint at their latest block. */
typedef struct tally_anchor {
    uint64_t seq;
    uint8_t head[TALLY_HASH_BYTES];
    uint64_t block_number; /* block the anchor transaction was mined in */
} tally_anchor;

int tally_anchor_latest(tally_eth *e,
                        const uint8_t contract[static TALLY_ADDRESS_BYTES],
                        const uint8_t journal[static TALLY_ID_BYTES],
                        const uint8_t writer[static TALLY_ADDRESS_BYTES],
                        tally_anchor *ret);

/* One Anchored event, from eth_getLogs. */
typedef struct tally_anchor_event {
    uint64_t seq;
    uint8_t head[TALLY_HASH_BYTES];
    uint64_t block_number;
    uint8_t block_hash[TALLY_ETH_HASH_BYTES];
    uint8_t tx_hash[TALLY_ETH_HASH_BYTES];
    uint64_t log_index;
} tally_anchor_event;

/* Every Anchored event of (journal, writer) from from_block to the latest
 * block, in chain order. *ret is malloc'd (free() it); NULL when there are
 * none. Returns the count. */
int tally_anchor_events(tally_eth *e,
                        const uint8_t contract[static TALLY_ADDRESS_BYTES],
                        const uint8_t journal[static TALLY_ID_BYTES],
                        const uint8_t writer[static TALLY_ADDRESS_BYTES],
                        uint64_t from_block, tally_anchor_event **ret);

/* ---- keys and addresses ------------------------------------------------ */

/* Reads a signer key file: 64 hex digits with an optional 0x and newline,
 * or 32 raw bytes. As with tally_key_load, a file readable or writable by
 * group or others is refused (TALLY_EKEYPERM) and a malformed one, or one
 * that is not a valid secp256k1 key, gives TALLY_EKEY. out is wiped on
 * failure. */
int tally_eth_key_load(const char *path,
                       uint8_t out[static TALLY_ETH_KEY_BYTES]);

/* The address of a private key. */
int tally_eth_key_address(const uint8_t key[static TALLY_ETH_KEY_BYTES],
                          uint8_t ret_addr[static TALLY_ADDRESS_BYTES]);

/* "0x" + EIP-55 mixed-case checksum hex. */
void tally_eth_address_format(const uint8_t addr[static TALLY_ADDRESS_BYTES],
                              char out[static TALLY_ADDRESS_STRLEN]);

/* Parses 40 hex digits with an optional 0x; mixed case must carry a valid
 * EIP-55 checksum (-EINVAL otherwise). */
int tally_eth_address_parse(const char *s,
                            uint8_t ret_addr[static TALLY_ADDRESS_BYTES]);

#ifdef __cplusplus
}
#endif
#endif
