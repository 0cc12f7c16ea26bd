/*
 * tally-client.h — the client side of tallyd: append over its REP socket,
 * push fire-and-forget batches to its PULL socket, ask its status, and
 * follow the journal live with a gap-free catch-up (docs/FORMAT.md §10).
 *
 * Conventions as in tally.h: 0 or a count on success, a negative tally or
 * errno code on failure (tally_strerror describes it), ret_* never written
 * on failure, tally_client_errmsg() tells what happened in words. A handle
 * is used by one thread at a time; open one per producer thread.
 */
#ifndef TALLY_CLIENT_H
#define TALLY_CLIENT_H

#include <stddef.h>
#include <stdint.h>

#include "tally.h"

#ifdef __cplusplus
extern "C" {
#endif

#define TALLY_CLIENT_MAX_URL 1024u

typedef struct tally_client_urls {
    char append_url[TALLY_CLIENT_MAX_URL + 1];  /* REP: appends, requests */
    char pull_url[TALLY_CLIENT_MAX_URL + 1];    /* PULL: batches */
    char publish_url[TALLY_CLIENT_MAX_URL + 1]; /* PUB: committed records */
} tally_client_urls;

/* The ipc:// URLs tallyd binds by default for the journal in dir:
 * "ipc://DIR.append", ".pull", ".publish" beside DIR (DIR made absolute),
 * or, when such a path would not fit a Unix socket address,
 * "ipc://$XDG_RUNTIME_DIR/tallyd-HASH.*" ($XDG_RUNTIME_DIR or /tmp) with
 * HASH from the absolute path. */
int tally_client_default_urls(const char *dir, tally_client_urls *ret);

typedef struct tally_client_options {
    /* Where the daemon publishes and pulls. NULL: taken from its status
     * reply (a wildcard host there is replaced by the host of url). */
    const char *publish_url;
    const char *pull_url;
    /* How long one request waits for its reply (0 = 30000 ms). */
    int timeout_ms;
    /* Decrypts publications that carry records as stored (tcp://).
     * NULL: they are delivered undecrypted (chain checked only). The
     * handle keeps a copy in sodium_malloc'd memory. */
    const uint8_t *master_key;
} tally_client_options;

typedef struct tally_client tally_client;

/* Connects to the REP socket at url (a tallyd --append URL). Connecting is
 * asynchronous in nanomsg: this returns at once and the first request
 * waits for the daemon. opt may be NULL. */
int tally_client_connect(tally_client **ret, const char *url,
                         const tally_client_options *opt);
void tally_client_close(tally_client *c);
const char *tally_client_errmsg(const tally_client *c);

/* What the daemon acknowledged: the records got first_seq ..
 * first_seq + count - 1; the head after the group commit that took them
 * was (head_seq, head_link), and durable_seq was durable. */
typedef struct tally_client_ack {
    uint64_t first_seq;
    uint32_t count;
    uint64_t head_seq;
    uint8_t head_link[TALLY_HASH_BYTES];
    uint64_t durable_seq;
    /* 1: the daemon had committed this request id before (a resend, or a
     * retry with the same id): nothing new was stored, and first_seq is
     * where the first commit put the records. */
    int duplicate;
} tally_client_ack;

#define TALLY_CLIENT_ID_BYTES 16u

/* Appends n records (1..4096, one request) and waits for the daemon to
 * acknowledge them as durable under its sync policy. The request carries
 * a fresh random 128-bit request id; nanomsg resends a request whose reply
 * has not come when it reconnects (a daemon restart) or after a minute,
 * and the daemon commits a request id once (docs/FORMAT.md §10.5, README
 * "tallyd": exactly what holds across a crash). After an error (a
 * timeout, say) the request may or may not have been committed: retry
 * with tally_client_append_id and the same id to find out without storing
 * the records twice. */
int tally_client_append(tally_client *c, const tally_record_in *recs,
                        size_t n, tally_client_ack *ret_ack);

/* The same with the caller's request id (16 bytes, unique per request:
 * random, e.g. randombytes_buf, or derived from the application's own
 * idempotency key). Reusing an id for other records is refused (-EEXIST)
 * while the daemon remembers it. */
int tally_client_append_id(tally_client *c,
                           const uint8_t id[TALLY_CLIENT_ID_BYTES],
                           const tally_record_in *recs, size_t n,
                           tally_client_ack *ret_ack);

/* Sends n records to the PULL socket: no acknowledgement, no error from the
 * daemon (a malformed batch is logged there and dropped). */
int tally_client_push(tally_client *c, const tally_record_in *recs,
                      size_t n);

typedef struct tally_client_status {
    uint64_t head_seq;
    uint8_t head_link[TALLY_HASH_BYTES];
    uint64_t durable_seq;
    uint64_t published_seq;
    uint64_t appended;      /* since the daemon started */
    uint64_t uptime_ms;
    uint64_t anchor_seq;    /* 0: no anchor known */
    uint64_t anchor_age_ms; /* UINT64_MAX: no anchor known */
    uint8_t journal_id[TALLY_ID_BYTES];
    int cipher;
    int sync;               /* tally_sync_policy */
    int stored;             /* 1: publications carry records as stored */
    char publish_url[TALLY_CLIENT_MAX_URL + 1];
    char pull_url[TALLY_CLIENT_MAX_URL + 1];
    /* The checkpointer inside the daemon (tallyd with anchor options). */
    int anchoring;          /* 1: it runs; 0: no anchor options */
    int backend;            /* 1 Ethereum, 2 anchor file (checkpoint.h) */
    uint64_t anchor_block;  /* block of the last anchor (0: unknown) */
    uint8_t anchor_head[TALLY_HASH_BYTES]; /* the link anchored */
    uint8_t anchor_tx[32];  /* its transaction (zeros: unknown) */
    uint64_t anchored_at_ns; /* wall clock of its confirmation (0: unknown) */
    uint64_t lag_records;   /* records not covered by a confirmed anchor */
    uint64_t lag_ms;        /* and for how long */
    uint64_t rounds, anchors, failures, consecutive_failures;
    int last_error;         /* of a failure streak running now (0: none) */
    char last_errmsg[513];
} tally_client_status;

int tally_client_status_get(tally_client *c, tally_client_status *ret);

/* One record as a follower sees it; pointers valid during the callback. */
typedef struct tally_client_record {
    uint64_t seq;
    uint64_t ts_ns;
    uint16_t type;
    int decrypted;            /* key/payload are the plaintext */
    const uint8_t *key;
    size_t key_len;
    const uint8_t *payload;
    size_t payload_len;
    const uint8_t *frame;     /* the stored frame, when one came */
    size_t frame_len;
    uint8_t record_hash[TALLY_HASH_BYTES];
    uint8_t link[TALLY_HASH_BYTES];
    int live;                 /* 1: from the subscription; 0: catch-up */
} tally_client_record;

typedef struct tally_client_follow_options {
    /* First seq to deliver; 0: only records committed from now on. */
    uint64_t from_seq;
    /* Deliver only records of this type (NN_SUB prefix filter). */
    int filter_type;
    uint16_t type;
    /* Catch up from the files in this directory instead of range requests
     * (a follower on the daemon's machine). NULL: range requests. */
    const char *dir;
    /* Called for each record in seq order, each seq once. A nonzero return
     * stops following and is returned by tally_client_follow. */
    int (*on_record)(void *ctx, const tally_client_record *rec);
    void *ctx;
    /* Return 0 once no publication came for this long (0: never). */
    int idle_timeout_ms;
    /* Return 0 once this seq has been delivered (0: never). */
    uint64_t until_seq;
    /* Set by another thread (or a signal handler) to stop; may be NULL. */
    volatile int *stop;
} tally_client_follow_options;

/* Follows the journal: subscribes first, catches up from from_seq with
 * range requests (or the files), then joins the live publications on seq,
 * without a gap or a duplicate; gaps in the live stream (a slow follower,
 * a daemon restart) are filled with range requests. As a witness it keeps
 * the last (seq, link) it saw, checks each link against the previous one
 * (TALLY_EINTEGRITY when they do not chain) and fails with TALLY_EROLLBACK
 * when the daemon's head goes back, or TALLY_EFORK when a seq it saw comes
 * back with another link. */
int tally_client_follow(tally_client *c, const tally_client_follow_options *fo);

/* The last (seq, link) a follow delivered or checked; 0 if none. */
uint64_t tally_client_witness(const tally_client *c,
                              uint8_t ret_link[TALLY_HASH_BYTES]);

/* ---- the `tally send` / `tally follow` verbs ------------------------------ */

/* `tally send --connect URL [--type T] [--key K]`: one record per line of
 * stdin (without the newline); prints a summary to stderr. Returns the
 * exit status. argv[0] is the verb. */
int tally_client_cmd_send(int argc, char **argv);

/* `tally follow --connect URL [--from SEQ] [--type T] [--json]`: prints one
 * line per record to stdout until interrupted. Returns the exit status. */
int tally_client_cmd_follow(int argc, char **argv);

extern const char tally_client_send_usage[];
extern const char tally_client_follow_usage[];

#ifdef __cplusplus
}
#endif
#endif
