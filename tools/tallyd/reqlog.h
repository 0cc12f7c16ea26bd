/*
 * reqlog.h — tallyd's window of recent request ids and the request log
 * that carries it across a restart (docs/FORMAT.md §10.6).
 *
 * A producer puts a random 128-bit id in each APPEND request; nanomsg
 * resends a request whose reply did not come (after a reconnect, e.g. to a
 * restarted daemon), with the same bytes, so the same id. The daemon
 * remembers the last N ids in memory and commits each once. The log, a
 * file in the journal directory written before each group commit, lets a
 * restarted daemon answer the resends of requests the previous run took:
 * it holds ids, record counts and seqs, never record contents; whether a
 * request whose commit was cut short made it into the journal is decided
 * by comparing the resent records with the journal's (tallyd.c).
 *
 * The window itself is not locked here: the daemon calls rq_find/rq_add
 * and changes entries under its own mutex, and passes that mutex to
 * rq_log_append, which takes it (after its own file lock) to snapshot the
 * window when the log is rewritten.
 */
#ifndef TALLYD_REQLOG_H
#define TALLYD_REQLOG_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#define RQ_ID_BYTES    16u
#define RQ_HASH_BYTES  16u
#define RQ_ENTRY_BYTES 48u
#define RQ_HEADER_BYTES 16u
#define RQ_FILE        "tallyd.requests"

enum rq_state {
    RQ_FREE = 0,     /* a slot no id holds (or one given up) */
    RQ_QUEUED,       /* taken by this run, not yet committed */
    RQ_DONE,         /* committed: seq is its first seq */
    RQ_PREV_PENDING, /* a previous run was committing it: its records, if
                        they were stored, lie in (seq, upto] */
    RQ_PREV_DONE,    /* the previous run committed it at seq */
};

typedef struct rq_entry {
    uint8_t id[RQ_ID_BYTES];
    uint8_t hash[RQ_HASH_BYTES]; /* of the records, when has_hash */
    uint8_t state;
    uint8_t has_hash;            /* this run saw the records */
    uint8_t logged;              /* QUEUED: its intent is in the log */
    uint8_t prev_state;          /* QUEUED: RQ_PREV_* it came from, or 0 */
    uint8_t found;               /* QUEUED: found in the journal at seq */
    uint32_t count;
    uint64_t seq;
    uint64_t upto;               /* RQ_PREV_PENDING: see above */
    void *owner;                 /* QUEUED: the daemon's request */
} rq_entry;

typedef struct rq_window rq_window;

/* Opens the log in the directory dirfd (kept open by the caller), loads
 * the last `capacity` ids it holds as RQ_PREV_* entries, and rewrites it
 * (a torn last entry, left by a crash, is dropped). head is the journal's
 * head now, after recovery: a commit the previous run had in flight lies
 * at or below it, which bounds the search for it (upto). *ret_loaded:
 * entries loaded. 0 or a negative errno code with err filled; err also
 * says why an unreadable log was set aside (rc 0). */
int rq_open(rq_window **ret, int dirfd, uint32_t capacity, uint64_t head,
            uint32_t *ret_loaded, char *err, size_t errsz);
void rq_close(rq_window *w);

/* The live entry of id, or NULL. The pointer is valid until the next
 * rq_add or the window mutex is released. */
rq_entry *rq_find(rq_window *w, const uint8_t id[RQ_ID_BYTES]);

/* A new entry for id (RQ_FREE, zeroed, id set), in the slot of the oldest
 * entry, which is forgotten (whatever its state: a request still queued
 * simply loses its protection against resends). */
rq_entry *rq_add(rq_window *w, const uint8_t id[RQ_ID_BYTES]);

/* Calls fn for every live entry (oldest first); for the daemon's checks
 * that look at the previous run's entries. */
void rq_each(rq_window *w, void (*fn)(void *ctx, const rq_entry *e),
             void *ctx);

/* One log entry: kind 'P' (intent: seq is a lower bound, written before
 * the commit) or 'D' (done: seq is the first seq). */
void rq_encode(uint8_t out[RQ_ENTRY_BYTES], char kind,
               const uint8_t id[RQ_ID_BYTES], uint32_t count, uint64_t seq,
               uint64_t upto);

/* Appends encoded entries to the log with one write (several committers
 * append at once; O_APPEND keeps each write whole). When the log has grown
 * past four windows it is first rewritten from the window (snapshot under
 * window_mu). Not synced: the entries reach the page cache before the
 * journal's write, which is what a crash of the daemon process needs
 * (FORMAT.md §10.6 says what a power loss can do). 0 or -errno. */
int rq_log_append(rq_window *w, const uint8_t *buf, size_t len,
                  pthread_mutex_t *window_mu);

#endif
