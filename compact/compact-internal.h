/*
 * compact-internal.h — what the compactor's files share (and its tests
 * use): the table of record keys and the COMPACTION record encoder. Not
 * installed; names start with tc_.
 */
#ifndef TALLY_COMPACT_INTERNAL_H
#define TALLY_COMPACT_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "compact.h"

/* ---- record keys ------------------------------------------------------------ */

/* The newest record seen so far for one record key. The key itself is not
 * kept, only a 128-bit keyed BLAKE2b of it (tc_keymap.salt is drawn per
 * compaction, so nobody can choose keys that collide), which bounds the
 * memory by the number of distinct keys whatever their length. */
typedef struct tc_kent {
    uint8_t h[16];
    uint64_t seq;
    uint64_t ts_ns;
    uint32_t file;   /* index of the file that holds the record */
    uint32_t saving; /* bytes its pruning saves (frame length - 128) */
    uint8_t used, tomb;
} tc_kent;

typedef struct tc_keymap {
    tc_kent *t;
    size_t cap, n;
    uint8_t salt[16];
} tc_keymap;

/* Draws the salt; no allocation yet. */
void tc_keymap_init(tc_keymap *m);
void tc_keymap_free(tc_keymap *m);
/* The 128-bit keyed hash the table stores for key (thread-safe). */
void tc_keymap_hash(const tc_keymap *m, const uint8_t *key, size_t key_len,
                    uint8_t h[16]);
/* The entry of a key by its hash: 1 found, 0 added (zeroed but for h;
 * used = 1), -ENOMEM. The pointer is valid until the next call. */
int tc_keymap_get(tc_keymap *m, const uint8_t h[16], tc_kent **ret);

/* ---- helper threads ---------------------------------------------------------- */

typedef struct tc_pool tc_pool;
/* Runs on thread tid of n (the caller is tid 0). */
typedef void (*tc_task_fn)(void *ctx, unsigned tid, unsigned n);
/* nthreads counts the caller; fewer may start (tc_pool_threads). */
int tc_pool_start(tc_pool **ret, unsigned nthreads);
/* fn on every thread; returns when all have returned. */
void tc_pool_run(tc_pool *p, tc_task_fn fn, void *ctx);
unsigned tc_pool_threads(const tc_pool *p);
void tc_pool_stop(tc_pool *p); /* NULL: no-op */

/* ---- the COMPACTION record (FORMAT.md §11.5) -------------------------------- */

/* Encodes info (ranges and files included) into a malloc'd payload. 0 or
 * -ENOMEM / TALLY_ETOOBIG. */
int tc_compaction_encode(const tally_compaction_info *info, uint8_t **ret,
                         size_t *ret_len);

#endif
