/*
 * compact.h — the public API of tally's compactor: it shrinks the sealed
 * part of a journal while every guarantee stays checkable, and replays a
 * journal from its newest snapshot.
 *
 * Compaction (docs/FORMAT.md §11) runs on an open writer handle, which holds
 * the directory lock, so no other writer can interfere; appends may go on
 * through the same handle from other threads meanwhile, and readers may
 * replay at the same time. The active segment is never touched. It
 *   - prunes record bodies: a body superseded by a newer record with the
 *     same record key, every body before the newest SNAPSHOT record, and a
 *     tombstone (record key, empty payload) older than the retention. A
 *     pruned frame keeps its header, record_hash and link (FORMAT.md §4.2),
 *     so the chain, the head and every anchored checkpoint verify exactly as
 *     before, with and without the key. CHECKPOINT and COMPACTION records
 *     are never pruned; nothing is re-encrypted;
 *   - merges small sealed segment files into files near a target size;
 *   - authenticates every record a pruning decision rests on, so that
 *     whoever can write the files cannot make it prune a live record;
 *   - replaces every file crash-safely (temp file, fsync, rename, fsync the
 *     directory) and appends a COMPACTION record describing what it did.
 *
 * Conventions are the journal's (journal/tally.h): 0 on success, a negative
 * -errno or TALLY_E* code on failure, no printing, no global state.
 */
#ifndef TALLY_COMPACT_H
#define TALLY_COMPACT_H

#include <stddef.h>
#include <stdint.h>

#include "tally.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The steps of a file replacement, as the fault hook sees them. */
typedef enum tally_compact_step {
    TALLY_COMPACT_CREATE = 1, /* create a temporary file */
    TALLY_COMPACT_WRITE,      /* one write() to it */
    TALLY_COMPACT_FSYNC,      /* fsync of it */
    TALLY_COMPACT_RENAME,     /* rename it over the first file of its run */
    TALLY_COMPACT_FSYNC_DIR,  /* fsync of the directory */
    TALLY_COMPACT_UNLINK,     /* removal of a merged file or a leftover */
} tally_compact_step;

/* A fault hook's answer that makes the compaction stop at this step as if
 * the process had died there: no clean-up, no COMPACTION record;
 * tally_compact then returns -ECANCELED. */
#define TALLY_COMPACT_CRASH 1

/* Called before every step with the file it is about (a temporary or a
 * segment file name). 0: do the step; a negative errno: the step fails with
 * it (the compaction cleans up and returns it); TALLY_COMPACT_CRASH: see
 * above. For tests of crash safety; NULL in normal use. */
typedef int (*tally_compact_fault_fn)(void *ctx, tally_compact_step step,
                                      const char *file);

typedef struct tally_compact_options {
    /* Target size of a merged file in bytes (0: the journal's
     * segment_size). Consecutive sealed files are merged while their
     * size after pruning fits in it. */
    uint64_t target_size;
    /* Tombstones whose ts_ns is older than now - this are pruned too.
     * 0: tombstones are kept (they still prune what they supersede). */
    uint64_t tombstone_retention_ns;
    /* The time the retention is measured from (0: the current time). */
    uint64_t now_ns;
    /* 1: plan and report only; nothing is written. */
    int dry_run;
    /* 1: prune in place, never merge files. */
    int no_merge;
    /* Threads for decryption and hashing, the caller's included (0: one
     * per CPU; at most 4). */
    unsigned threads;
    /* Test hook, see tally_compact_fault_fn. */
    tally_compact_fault_fn fault;
    void *fault_ctx;
} tally_compact_options;

typedef struct tally_compact_report {
    int dry_run;
    uint64_t first_seq, last_seq;  /* the sealed records examined */
    uint64_t records;              /* how many (pruned ones included) */
    uint64_t already_pruned;       /* of them, pruned before this run */
    uint64_t snapshot_seq;         /* newest SNAPSHOT among them (0: none) */
    /* Pruned by this run (with dry_run: would be), and why. A record that
     * several rules prune counts once, under the first that applies in
     * this order. */
    uint64_t records_pruned;
    uint64_t pruned_by_snapshot;
    uint64_t pruned_superseded;
    uint64_t pruned_tombstones;
    uint64_t files_before;         /* sealed segment files examined */
    uint64_t files_after;          /* ... and what is left of them */
    uint64_t files_rewritten;      /* new files written (one per run) */
    uint64_t segments_merged;      /* segments moved into an earlier file */
    uint64_t leftovers_removed;    /* duplicates of an interrupted merge */
    uint64_t bytes_before;         /* sizes of the examined files */
    uint64_t bytes_after;
    uint64_t bytes_read;           /* file bytes read by all passes */
    uint64_t bytes_written;
    uint64_t compaction_seq;       /* seq of the COMPACTION record (0: none) */
    uint64_t elapsed_ns;
    /* On failure: what failed and where (file, offset, seq). */
    char message[256];
} tally_compact_report;

/* Compacts the sealed segments of the journal open in t (FORMAT.md §11).
 * Other threads may append through t meanwhile; t must stay open until
 * this returns. opt may be NULL (defaults: keep tombstones, merge to
 * segment_size).
 * Nothing to do (nothing to prune or merge): returns 0 and appends no
 * record. Otherwise appends and syncs a COMPACTION record. *ret (may be
 * NULL) is filled in on success and on failure (with message).
 * -EBUSY: another compaction runs on this journal. TALLY_EINTEGRITY: a
 * sealed file is damaged (nothing of it is rewritten). After a failure the
 * journal is as before, or as after for the files already replaced; the
 * handle stays usable. */
int tally_compact(tally *t, const tally_compact_options *opt,
                  tally_compact_report *ret);

/* ---- the COMPACTION record (FORMAT.md §11.5) ------------------------------ */

#define TALLY_COMPACTION_MAGIC "TCMP"
#define TALLY_COMPACTION_FIXED_BYTES 144u
#define TALLY_COMPACTION_COALESCED 0x1u /* ranges were merged to fit */
#define TALLY_COMPACTION_PARTIAL   0x2u /* an error stopped the run */

typedef struct tally_compaction_range {
    uint64_t first_seq, last_seq;
} tally_compaction_range;

typedef struct tally_compaction_file {
    uint64_t first_segment, last_segment; /* of the new file */
    uint32_t files_replaced;              /* files it replaced */
    uint64_t bytes_before, bytes_after;
} tally_compaction_file;

typedef struct tally_compaction_info {
    uint8_t flags;
    uint64_t started_ns, finished_ns;
    uint64_t first_seq, last_seq;
    uint8_t last_link[TALLY_HASH_BYTES];
    uint64_t snapshot_seq;
    uint64_t tombstone_retention_ns;
    uint64_t records_pruned;
    uint64_t pruned_by_snapshot, pruned_superseded, pruned_tombstones;
    uint64_t bytes_before, bytes_after;
    uint32_t range_count, file_count;
    tally_compaction_range *ranges; /* malloc'd by decode */
    tally_compaction_file *files;   /* malloc'd by decode */
} tally_compaction_info;

/* Parses a COMPACTION record's payload: 0, TALLY_EFORMAT (another
 * version) or TALLY_EINTEGRITY. Free with tally_compaction_info_free. */
int tally_compaction_decode(const uint8_t *p, size_t len,
                            tally_compaction_info *ret);
void tally_compaction_info_free(tally_compaction_info *info);

/* ---- replay from the newest snapshot -------------------------------------- */

/* Called once per record; a nonzero return stops the replay and is
 * returned by tally_replay. */
typedef int (*tally_replay_fn)(void *ctx, const tally_record *rec);

/* Startup replay: reads dir from its newest SNAPSHOT record on
 * (TALLY_ITER_FROM_SNAPSHOT; from seq 1 when there is none), decrypting and
 * checking every record, and calls fn for the snapshot and every later
 * record that is not pruned. A torn tail ends it quietly. *ret_count (may
 * be NULL) gets the number of calls. */
int tally_replay(const char *dir, const uint8_t *master_key,
                 tally_replay_fn fn, void *ctx, uint64_t *ret_count);

#ifdef __cplusplus
}
#endif
#endif
