/*
 * audit.h — the public API of tally's audit module: a complete, read-only
 * audit of a journal directory, possibly without the key and without any
 * network, with a report that says exactly what it proves and, on failure,
 * the first bad place.
 *
 * One pass over the segment files (constant memory whatever the journal
 * size) checks what FORMAT.md §7 says a keyless check covers — metadata
 * checksum, every segment header, frame header, seq density, the hash chain
 * and the continuity between segments, pruned records included — and every
 * CHECKPOINT and COMPACTION record (well-formed, and the head or last link
 * they name is the journal's own link at that seq). With the master key it
 * also checks the key check value and metadata MAC and decrypts and
 * authenticates every record (tag, envelope, record key and type rules,
 * compressed payloads inflate).
 *
 * Anchors (FORMAT.md §9) are checked either online, against the anchor
 * target (the checkpoint module's tally_checkpoint_verify and
 * tally_freshness_check), or offline, against an evidence bundle (FORMAT.md
 * §12) that tally_evidence_export wrote while online: per anchor the
 * transaction, its receipt and the block header, with Merkle-Patricia
 * proofs that bind them to the block hash, and the contract's latest state
 * with its storage proof.
 *
 * A live journal is safe to audit: the head is read first
 * (tally_read_head) and the audit stops there; what a writer appends
 * meanwhile is noticed and reported, never read as part of the audit.
 *
 * Conventions are the journal's (journal/tally.h): 0 on success, a negative
 * -errno or TALLY_E* code on failure (tally_exit_code maps it to 0/3/4/5),
 * ret_* filled as documented, no printing, no global state.
 */
#ifndef TALLY_AUDIT_H
#define TALLY_AUDIT_H

#include <stddef.h>
#include <stdint.h>

#include "checkpoint.h"
#include "tally.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- evidence bundles (FORMAT.md §12) ------------------------------------- */

typedef struct tally_evidence tally_evidence;

/* What a bundle says at its top level. */
typedef struct tally_evidence_info {
    uint8_t journal_id[TALLY_ID_BYTES];
    uint64_t chain_id;
    uint8_t contract[TALLY_ADDRESS_BYTES];
    uint8_t writer[TALLY_ADDRESS_BYTES];
    uint64_t created_ns;       /* when it was exported (the exporter's clock) */
    size_t anchors;            /* Anchored events it holds, with proofs */
    /* The contract's latest(journal, writer) at block as_of_block. */
    uint64_t as_of_block;
    uint8_t as_of_hash[TALLY_ETH_HASH_BYTES];
    uint64_t as_of_time;       /* that block's timestamp (s) */
    tally_anchor latest;
} tally_evidence_info;

/* Reads and checks a bundle without any network: every header hashes to
 * its block hash (keccak of its RLP), every receipt and transaction is in
 * its block (Merkle-Patricia proofs against receiptsRoot and
 * transactionsRoot), every receipt carries the Anchored log it claims and
 * the transaction calls anchor() with the same arguments, and the latest
 * state is proven against the state root of its block (account and storage
 * proofs; the contract's code hash is JournalAnchor's). Any failure is
 * TALLY_EINTEGRITY with the anchor it is about in err; a file that is not a
 * bundle of this version is TALLY_EFORMAT. What remains trusted is only
 * that the block hashes are those of the chain (see FORMAT.md §12.3). */
int tally_evidence_load(tally_evidence **ret, const char *path, char *err,
                        size_t errsz);
void tally_evidence_free(tally_evidence *ev);
void tally_evidence_get_info(const tally_evidence *ev, tally_evidence_info *ret);

typedef struct tally_evidence_export_report {
    size_t anchors;
    uint64_t as_of_block;
    uint64_t bytes;            /* size of the file written */
    char message[512];         /* on failure: what and where */
} tally_evidence_export_report;

/* Fetches from the chain everything a bundle needs for the journal with id
 * jid anchored by writer on contract (every Anchored event of (jid, writer),
 * its transaction, receipt, block header and the proofs; the latest state at
 * the latest block the endpoints agree on, less confirmations - 1) and
 * writes it to path (temp file, fsync, rename). Every part is checked as
 * tally_evidence_load checks it before anything is written. *ret (may be
 * NULL) is filled in on success and failure. */
int tally_evidence_export(tally_eth *eth,
                          const uint8_t contract[static TALLY_ADDRESS_BYTES],
                          const uint8_t writer[static TALLY_ADDRESS_BYTES],
                          const uint8_t jid[static TALLY_ID_BYTES],
                          const char *path,
                          tally_evidence_export_report *ret);

/* ---- the audit ----------------------------------------------------------------- */

/* Where the first failure is. */
typedef enum tally_audit_where {
    TALLY_AUDIT_NOWHERE = 0,
    TALLY_AUDIT_METADATA,       /* tally.meta */
    TALLY_AUDIT_SEGMENT_HEADER, /* a segment header, or continuity between segments */
    TALLY_AUDIT_FRAME,          /* a frame's header fields, or its bytes vs the chain */
    TALLY_AUDIT_RECORD,         /* with the key: tag, envelope, payload */
    TALLY_AUDIT_CHECKPOINT,     /* a CHECKPOINT record's content vs the journal */
    TALLY_AUDIT_COMPACTION,     /* a COMPACTION record's content vs the journal */
    TALLY_AUDIT_TAIL,           /* the end of the journal: torn (FORMAT.md §6: recovery
                                   would cut it, verify says TALLY_ETORN), or ending
                                   before the head read at the start */
    TALLY_AUDIT_ANCHOR,         /* the anchor target or bundle vs the journal */
    TALLY_AUDIT_EVIDENCE,       /* the bundle itself does not verify */
    TALLY_AUDIT_IO,             /* a file could not be read */
} tally_audit_where;

/* "metadata", "segment_header", "frame", "record", "checkpoint",
 * "compaction", "tail", "anchor", "evidence", "io" ("" for NOWHERE). */
const char *tally_audit_where_name(tally_audit_where w);

typedef struct tally_audit_progress {
    uint64_t bytes_done, bytes_total; /* segment file bytes, up to the head */
    uint64_t records;
    uint64_t seq, stop_seq;           /* last seq read, and where it stops */
    uint64_t elapsed_ns;
} tally_audit_progress;

typedef void (*tally_audit_progress_fn)(void *ctx,
                                        const tally_audit_progress *p);

typedef struct tally_audit_options {
    /* The master key (32 bytes), or NULL for a keyless audit. */
    const uint8_t *master_key;
    /* Records from from_seq to to_seq (0: from 1, to the head at start).
     * With from_seq > 1 the reading starts at the segment that holds it and
     * the link before from_seq is taken as stored: the chain before it is
     * not checked (the report says partial). */
    uint64_t from_seq, to_seq;
    /* At most one of: the anchor target to check every CHECKPOINT record
     * and the freshness against (online), or a loaded evidence bundle
     * (offline). Neither: anchors are reported from the CHECKPOINT records
     * the journal holds, not checked against a chain. */
    tally_anchor_target *target;
    const tally_evidence *evidence;
    /* Called about every progress_ms (0: 100 ms) from the auditing thread,
     * and once at the end with bytes_done = bytes_total. NULL: none. */
    tally_audit_progress_fn progress;
    void *progress_ctx;
    uint32_t progress_ms;
    /* How long a torn tail right after the head may take to become whole
     * (a writer in the middle of a write) before it is reported: 0 = 1000
     * ms. */
    uint32_t tail_wait_ms;
} tally_audit_options;

#define TALLY_AUDIT_ANCHORS_NONE     0 /* not checked against a chain */
#define TALLY_AUDIT_ANCHORS_TARGET   1 /* online, against the anchor target */
#define TALLY_AUDIT_ANCHORS_EVIDENCE 2 /* offline, against a bundle */

typedef struct tally_audit_report {
    /* the journal */
    uint8_t journal_id[TALLY_ID_BYTES];
    char name[TALLY_MAX_NAME + 1];
    int cipher;                 /* TALLY_CIPHER_* */
    int compress;
    uint64_t segment_size;
    uint32_t epochs, epochs_forgotten;
    uint64_t meta_generation;
    int keyed;                  /* records decrypted and authenticated */

    /* what was read */
    uint64_t files, segments;
    uint64_t bytes;             /* segment file bytes read */
    uint64_t records;           /* frames in the audited range */
    uint64_t sealed, clear, pruned;
    uint64_t snapshots;         /* SNAPSHOT records (visible type) */
    uint64_t unreadable;        /* keyed: records of a forgotten epoch */
    uint64_t first_seq, last_seq;
    uint64_t first_ts_ns, last_ts_ns;
    uint64_t head_seq;          /* the audited head: (last_seq, its link) */
    uint8_t head[TALLY_HASH_BYTES];

    /* range and liveness */
    int partial;                /* from_seq > 1 or to_seq below the head */
    uint64_t from_seq, to_seq;
    uint64_t start_head_seq;    /* tally_read_head before reading */
    int live;                   /* a writer appended during the audit */
    uint64_t end_head_seq;      /* the head seen at the end (live) */
    uint64_t tail_bytes;        /* a torn tail: its bytes, to the end of the file */

    /* anchors recorded in the journal (CHECKPOINT records) */
    uint64_t checkpoints;
    uint64_t checkpoint_links;  /* of them, head checked against the link */
    int has_checkpoint;         /* the newest one (highest anchored seq): */
    tally_checkpoint_info checkpoint;
    uint64_t checkpoint_record_seq;
    uint64_t unanchored_tail;   /* head - anchored seq (target's when checked) */

    /* compactions (COMPACTION records) */
    uint64_t compactions;
    uint64_t compaction_links;  /* last_link checked against the journal */
    uint64_t compaction_pruned; /* sum of their records_pruned */
    uint64_t last_compaction_seq;
    uint64_t last_compaction_ns;/* its finished_ns */

    /* the anchor check */
    int anchor_mode;            /* TALLY_AUDIT_ANCHORS_* */
    uint64_t anchors_checked;   /* CHECKPOINT records matched to the chain */
    uint64_t anchors_foreign;   /* made through another configuration */
    uint64_t anchors_known;     /* target: events; evidence: anchors */
    int has_freshness;
    tally_freshness freshness;  /* verdict; for evidence as of as_of_block */
    int has_evidence;
    tally_evidence_info evidence;

    /* the first failure */
    int rc;                     /* 0 or the error */
    tally_audit_where where;
    char file[32];              /* segment file (or "tally.meta") */
    uint64_t offset;            /* byte offset in it */
    uint64_t seq;
    char message[640];          /* what is wrong there */
    char note[256];             /* on success: what else was noticed */

    uint64_t elapsed_ns;
} tally_audit_report;

/* Audits the journal in dir. Returns 0 when everything checked verifies,
 * otherwise the first failure's code (TALLY_EINTEGRITY, TALLY_ETORN,
 * TALLY_EKEY, TALLY_EFORK, TALLY_EROLLBACK, TALLY_ESTALE, TALLY_ECHAIN, an
 * -errno, ...). *ret is filled in every case (NULL allowed). */
int tally_audit(const char *dir, const tally_audit_options *opt,
                tally_audit_report *ret);

#ifdef __cplusplus
}
#endif
#endif
