/*
 * checkpoint.h — the public API of tally's checkpoint module: anchoring a
 * journal's head (seq, link) on an Ethereum chain, so that an operator who
 * puts back an old copy of the journal directory is caught (the chain's
 * monotonic counter is ahead of the restored copy).
 *
 * Three layers:
 *   - the Ethereum backend: a handle on one or more JSON-RPC endpoints
 *     (tally_eth), the JournalAnchor contract (checkpoint/contracts/,
 *     bytecode built into the library): deploy, anchor, latest, events;
 *   - anchor targets (the contract, or a development file) and the startup
 *     freshness verdict of a journal directory against its target;
 *   - the checkpointer: anchors the head once or from a thread, appends a
 *     CHECKPOINT record per confirmed anchor, and serves anchored appends.
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

/* ---- anchor targets --------------------------------------------------------
 *
 * Where a journal's anchors live: the JournalAnchor contract (through a
 * tally_eth handle the caller keeps open and closes after the target), or,
 * for development only, a file outside the journal directory. The file is
 * NOT rollback-proof on its own: whoever can put back an old journal can
 * usually put back an old anchor file too. The configuration always comes
 * from the caller (flags, environment), never from the journal directory.
 */
typedef struct tally_anchor_target tally_anchor_target;

#define TALLY_BACKEND_ETH  1u
#define TALLY_BACKEND_FILE 2u

/* writer: whose anchors to read (NULL: the handle's sender). Submitting
 * needs the handle to send as that writer. The contract's code is checked
 * on first use. */
int tally_anchor_target_eth(tally_anchor_target **ret, tally_eth *eth,
                            const uint8_t contract[static TALLY_ADDRESS_BYTES],
                            const uint8_t *writer);
int tally_anchor_target_file(tally_anchor_target **ret, const char *path);
void tally_anchor_target_free(tally_anchor_target *t);
const char *tally_anchor_target_errmsg(const tally_anchor_target *t);

/* What a CHECKPOINT record holds (docs/FORMAT.md §9): one confirmed anchor
 * and where it was made. For the file backend the chain fields are zero. */
typedef struct tally_checkpoint_info {
    uint8_t backend; /* TALLY_BACKEND_* */
    uint64_t seq;    /* the anchored seq ... */
    uint8_t head[TALLY_HASH_BYTES]; /* ... and its link */
    uint64_t chain_id;
    uint8_t contract[TALLY_ADDRESS_BYTES];
    uint8_t writer[TALLY_ADDRESS_BYTES];
    uint64_t block_number;
    uint8_t block_hash[TALLY_ETH_HASH_BYTES];
    uint8_t tx_hash[TALLY_ETH_HASH_BYTES];
    uint64_t anchored_ns; /* wall clock at confirmation */
} tally_checkpoint_info;

#define TALLY_CHECKPOINT_BYTES 176u

void tally_checkpoint_encode(const tally_checkpoint_info *in,
                             uint8_t out[static TALLY_CHECKPOINT_BYTES]);
int tally_checkpoint_decode(const uint8_t *p, size_t len,
                            tally_checkpoint_info *ret);

/* The target's identity (backend, chain id, contract, writer; seq 0). */
int tally_anchor_target_describe(tally_anchor_target *t,
                                 tally_checkpoint_info *ret);
/* The latest anchor of journal jid (seq 0: none). */
int tally_anchor_target_latest(tally_anchor_target *t,
                               const uint8_t jid[static TALLY_ID_BYTES],
                               tally_anchor *ret);
/* Anchors (seq, head) and waits for confirmation; *ret is what the
 * CHECKPOINT record of it holds. */
int tally_anchor_target_submit(tally_anchor_target *t,
                               const uint8_t jid[static TALLY_ID_BYTES],
                               uint64_t seq,
                               const uint8_t head[static TALLY_HASH_BYTES],
                               tally_checkpoint_info *ret);
/* Every Anchored event of jid for the target's writer (eth only;
 * -EOPNOTSUPP for a file). Returns the count; free(*ret). */
int tally_anchor_target_events(tally_anchor_target *t,
                               const uint8_t jid[static TALLY_ID_BYTES],
                               tally_anchor_event **ret);

/* ---- the freshness verdict ------------------------------------------------- */

typedef enum tally_verdict {
    TALLY_VERDICT_FRESH = 0,    /* holds the anchored (seq, head), maybe more */
    TALLY_VERDICT_ROLLED_BACK,  /* local head behind the anchored seq */
    TALLY_VERDICT_FORKED,       /* local link at the anchored seq differs */
    TALLY_VERDICT_DELETED,      /* no journal, but anchors for its id */
    TALLY_VERDICT_STALE_ANCHOR, /* a CHECKPOINT record newer than the target */
} tally_verdict;

/* "fresh", "rolled_back", "forked", "deleted", "stale_anchor". */
const char *tally_verdict_name(tally_verdict v);

typedef struct tally_freshness {
    tally_verdict verdict;
    uint8_t journal_id[TALLY_ID_BYTES];
    int journal_present;
    uint64_t local_seq;                     /* local head */
    uint8_t local_head[TALLY_HASH_BYTES];
    uint64_t anchored_seq;                  /* the target's latest (0: none) */
    uint8_t anchored_head[TALLY_HASH_BYTES];
    uint64_t anchored_block;
    int has_local_link;                     /* fresh/forked: the local link */
    uint8_t local_link_at_anchor[TALLY_HASH_BYTES]; /* at anchored_seq */
    uint64_t unanchored_tail;               /* fresh: records after it */
    uint64_t behind;                        /* rolled_back: records missing */
    uint64_t checkpoints;                   /* CHECKPOINT records seen */
    int has_checkpoint;                     /* newest one for this target: */
    tally_checkpoint_info checkpoint;
    uint64_t checkpoint_record_seq;         /* its own seq in the journal */
    char message[640];                      /* names both sides */
} tally_freshness;

/* Compares the journal in dir with its anchor target. journal_id may be
 * NULL when dir holds a journal; with it, a missing or empty dir can be
 * judged `deleted` (derive the id with tally_journal_id from key and name).
 * master_key (may be NULL) also authenticates the CHECKPOINT records read.
 * Returns 0 for fresh; TALLY_EROLLBACK, TALLY_EFORK, TALLY_EDELETED or
 * TALLY_ESTALE for the other verdicts; TALLY_ECHAIN when the journal's last
 * CHECKPOINT names another anchor configuration than the caller's;
 * TALLY_ENOJOURNAL when there is neither a journal nor an anchor; or
 * another error. *ret (with its message) is filled in every case. */
int tally_freshness_check(tally_anchor_target *t, const char *dir,
                          const uint8_t *journal_id, const uint8_t *master_key,
                          tally_freshness *ret);

typedef struct tally_checkpoint_report {
    uint64_t records;        /* CHECKPOINT records in the journal */
    uint64_t checked;        /* of them, for this target, verified */
    uint64_t foreign;        /* made through another anchor configuration */
    uint64_t bad_record_seq; /* on failure: the record's seq */
    char message[512];
} tally_checkpoint_report;

/* tally verify's anchor part: every CHECKPOINT record of this target must
 * name the journal's own link at its seq (else TALLY_EFORK) and match an
 * Anchored event on the chain: seq, head, block number and hash, tx hash
 * (else TALLY_ESTALE). *ret is filled in every case. */
int tally_checkpoint_verify(tally_anchor_target *t, const char *dir,
                            const uint8_t *master_key,
                            tally_checkpoint_report *ret);

/* ---- the checkpointer -------------------------------------------------------- */

/* One round on an open journal (dir is its directory): checks freshness,
 * makes the head durable, anchors it and appends its CHECKPOINT record.
 * Returns 1 (anchored, *ret filled), 0 (nothing new since the last anchor)
 * or an error, described in err (may be NULL). */
int tally_checkpoint_once(tally *t, const char *dir,
                          tally_anchor_target *target,
                          tally_checkpoint_info *ret, char *err, size_t errsz);

typedef struct tally_checkpointer tally_checkpointer;

typedef struct tally_checkpointer_options {
    /* A round every every_ms (0: only when an anchored append asks). */
    uint32_t every_ms;
    /* After a failure, retry after backoff_min_ms, doubling up to
     * backoff_max_ms (0: 500 ms and 30 s). */
    uint32_t backoff_min_ms;
    uint32_t backoff_max_ms;
    /* The gather window of anchored appends. Before a round takes the head
     * it waits until the waiters the last round released have left, no
     * anchored append is between its tally_append and its wait, and none
     * has arrived for gather_quiet_ms (0: 1 ms); at most gather_ms (0:
     * 10 ms) and at most a tenth of the last anchoring round. Without it a
     * round that starts the instant the previous one ends misses the
     * records the appenders it released are about to write, and they wait
     * a second round (two blocks instead of one). It costs nothing while no
     * anchored append is in flight, and never delays plain tally_append.
     * TALLY_CHECKPOINTER_NO_GATHER: take the head at once. */
    uint32_t gather_ms;
    uint32_t gather_quiet_ms;
} tally_checkpointer_options;

#define TALLY_CHECKPOINTER_NO_GATHER UINT32_MAX

/* Starts the background thread. t, dir and target must outlive it; the
 * target's tally_eth handle is used by this thread only until stop. */
int tally_checkpointer_start(tally_checkpointer **ret, tally *t,
                             const char *dir, tally_anchor_target *target,
                             const tally_checkpointer_options *opt);

/* Asks for a round now (unless it is backing off after a failure). */
void tally_checkpointer_kick(tally_checkpointer *c);

/* Waits until seq is covered by a confirmed anchor: 0, -ETIMEDOUT, or
 * -ECANCELED when the checkpointer stops. */
int tally_checkpointer_wait(tally_checkpointer *c, uint64_t seq,
                            uint32_t timeout_ms);

/* An anchored append: tally_append, then wait until the record is covered
 * by a confirmed anchor. Appenders waiting at the same time share one
 * round (one transaction). *ret_seq is set as soon as the record is
 * appended, so after -ETIMEDOUT the caller knows which record is in the
 * journal but not yet anchored. */
int tally_append_anchored(tally *t, tally_checkpointer *c,
                          const tally_record_in *rec, uint32_t timeout_ms,
                          uint64_t *ret_seq);

typedef struct tally_checkpoint_status {
    uint64_t anchored_seq;   /* last confirmed anchor (0: none yet) */
    uint64_t anchored_at_ns; /* wall clock of its confirmation */
    uint64_t head_seq;
    uint64_t lag_records;    /* records not covered by a confirmed anchor */
    uint64_t lag_ms;         /* since the last confirmed anchor (or start) */
    uint64_t rounds, anchors, failures, consecutive_failures;
    int last_error;          /* of the current failure streak (0: none) */
    char last_errmsg[512];
    int has_last;
    tally_checkpoint_info last; /* the last anchor this checkpointer made */
} tally_checkpoint_status;

void tally_checkpointer_status(tally_checkpointer *c,
                               tally_checkpoint_status *ret);

/* Finishes the round in flight (RPC timeouts bound it), stops the thread
 * and frees it. Returns the error of a failure streak still running, or 0. */
int tally_checkpointer_stop(tally_checkpointer *c);

#ifdef __cplusplus
}
#endif
#endif
