/*
 * tally.h — the public API of the tally journal: an append-only, encrypted,
 * hash-chained log in a directory of segment files.
 *
 * The on-disk format is specified in docs/FORMAT.md; this header only names
 * what a caller needs. Conventions (LMDB/libsodium style):
 *   - every function returns 0 (or a count / 1 for "got one") on success and
 *     a negative value on failure: -errno where errno says it, or one of the
 *     TALLY_E* codes below; tally_strerror() describes any of them;
 *   - output parameters are named ret_* and are not written on failure;
 *   - the library never prints and never exits; where an error has a place
 *     (segment file, byte offset, seq) it is kept in the handle and returned
 *     by tally_errmsg() / tally_iter_errmsg();
 *   - keys are copied into sodium_malloc'd memory and wiped on close; the
 *     caller wipes its own copy.
 */
#ifndef TALLY_H
#define TALLY_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define TALLY_VERSION_STRING "0.1.0"

#define TALLY_KEY_BYTES   32u /* master key */
#define TALLY_HASH_BYTES  32u /* BLAKE2b-256: links, record hashes */
#define TALLY_ID_BYTES    32u /* journal id */
#define TALLY_MAX_PAYLOAD (16u * 1024u * 1024u)
#define TALLY_MAX_RKEY    1024u /* record key bytes */
#define TALLY_MAX_NAME    255u
#define TALLY_DEFAULT_SEGMENT_SIZE (64ull * 1024 * 1024)

/* Reserved record types (FORMAT.md §4.2). Application types are 0..0xFEFF. */
#define TALLY_TYPE_RESERVED   0xFF00u
#define TALLY_TYPE_SNAPSHOT   0xFF01u
#define TALLY_TYPE_CHECKPOINT 0xFF02u
#define TALLY_TYPE_COMPACTION 0xFF03u
/* Written by the library under batched flushes to fill a file block
 * (FORMAT.md §6.1): CLEAR, empty, zero padding. Readers return it like any
 * record; an application skips it by its type. */
#define TALLY_TYPE_PAD        0xFF04u

/* Error codes beyond errno. */
#define TALLY_EINTEGRITY (-1001) /* tampered, corrupt, truncated in the middle */
#define TALLY_EKEY       (-1002) /* wrong or unusable key */
#define TALLY_EROLLBACK  (-1003) /* local journal behind its anchor */
#define TALLY_EFORK      (-1004) /* local journal differs from its anchor */
#define TALLY_ESTALE     (-1005) /* anchor source older than the journal */
#define TALLY_EDELETED   (-1006) /* journal gone but anchored */
#define TALLY_EPOISONED  (-1007) /* an earlier write/fsync failed; reopen */
#define TALLY_ETOOBIG    (-1008) /* payload or key over the limit */
#define TALLY_EFORMAT    (-1009) /* unknown version or incompatible flag */
#define TALLY_ECIPHER    (-1010) /* cipher not available on this CPU */
#define TALLY_ENOJOURNAL (-1011) /* directory holds no journal */
#define TALLY_EEXIST     (-1012) /* a journal already exists there */
#define TALLY_ETORN      (-1013) /* verify: the tail is torn (recovery would cut it) */
#define TALLY_EPRUNED    (-1014) /* record body removed by compaction or forgotten key */
#define TALLY_EKEYPERM   (-1015) /* key file readable by group or others */
/* Checkpoint module (checkpoint/checkpoint.h), numbered from -1100 down. */
#define TALLY_ECHAIN     (-1100) /* RPC endpoints disagree, or the chain is not the configured one */
#define TALLY_EREVERTED  (-1101) /* the anchor contract refused the call, or a tx was mined with status 0 */

const char *tally_strerror(int err);

/* Maps an error to the CLI exit status documented in the README:
 * 1 operational, 3 integrity, 4 freshness, 5 key. */
int tally_exit_code(int err);

typedef enum tally_cipher {
    TALLY_CIPHER_AES256GCM = 1,
    TALLY_CIPHER_XCHACHA20POLY1305 = 2,
} tally_cipher;

/* What is lost on power failure under each policy:
 *   ALWAYS    nothing that tally_append returned for: each append is written
 *             and fdatasync'd before it returns (one sync per record).
 *   BATCH     nothing that tally_append returned for: concurrent appenders
 *             share one fdatasync (group commit); each returns once its own
 *             record is durable. Same guarantee as ALWAYS, higher throughput
 *             under concurrency.
 *   INTERVAL  up to sync_interval_ms of appends: a background thread writes
 *             and syncs every interval; tally_append returns at once.
 *   NONE      everything since the last tally_sync/close, and on a process
 *             crash too: records are buffered in memory (1 MiB) and reach
 *             the OS when the buffer fills or at tally_sync/tally_close.
 */
typedef enum tally_sync_policy {
    TALLY_SYNC_ALWAYS = 0,
    TALLY_SYNC_BATCH = 1,
    TALLY_SYNC_INTERVAL = 2,
    TALLY_SYNC_NONE = 3,
} tally_sync_policy;

/* Padding of record plaintext before encryption (FORMAT.md §4.2), so that
 * a frame's body_len reveals only the padded size:
 *   NONE     no padding: body_len gives the exact envelope length
 *   BLOCK    the envelope is padded to a multiple of block bytes
 *            (16 .. 16 MiB)
 *   BUCKETS  the envelope is padded to the next power of two from 64 B to
 *            16 MiB, or to the largest envelope for the few records above
 *            16 MiB: TALLY_PAD_BUCKET_COUNT sizes in all
 * A padded size never exceeds the largest body (TF_MAX_BODY, 16 MiB +
 * 64 KiB): a record whose rounded size would is padded to exactly that. */
typedef enum tally_padding_kind {
    TALLY_PAD_NONE = 0,
    TALLY_PAD_BLOCK = 1,
    TALLY_PAD_BUCKETS = 2,
} tally_padding_kind;
#define TALLY_PAD_BUCKET_COUNT 20u

typedef struct tally_padding {
    tally_padding_kind kind;
    uint32_t block; /* BLOCK: the multiple; otherwise 0 */
} tally_padding;

typedef struct tally_options {
    /* 32-byte master key, or NULL (open for reading without the key only). */
    const uint8_t *master_key;
    /* init: journal name the id derives from (default "default"). */
    const char *name;
    /* init: explicit journal id (32 bytes) instead of deriving it; NULL. */
    const uint8_t *journal_id;
    /* init: cipher (0 = AES-256-GCM). */
    tally_cipher cipher;
    /* init: compress payloads with zlib when it makes them smaller. */
    int compress;
    /* init: target segment size in bytes (0 = 64 MiB; minimum 4 KiB). */
    uint64_t segment_size;
    /* open: sync policy and the INTERVAL period (0 = 100 ms). */
    tally_sync_policy sync;
    uint32_t sync_interval_ms;
    /* init: padding policy recorded in the metadata (zero = NONE); change
     * it later with tally_set_padding. */
    tally_padding padding;
    /* open: batched flushes (FORMAT.md §6.1), so that the file grows in
     * steps that do not follow the application's timing. Both 0: off.
     *   flush_interval_ms  records reach the file only at the ticks of a
     *       fixed clock of this period; frame timestamps the writer takes
     *       are rounded down to it; appenders that wait for durability
     *       (ALWAYS, BATCH, tally_sync) wait for the next tick.
     *   flush_block  each write ends on a multiple of this many bytes of
     *       the file (512 .. 16 MiB; default 4096 with an interval), the
     *       last block filled with a PAD record. Without an interval,
     *       blocks are written when full, and at once where durability is
     *       asked for (ALWAYS, BATCH, tally_sync). */
    uint32_t flush_interval_ms;
    uint32_t flush_block;
} tally_options;

#define TALLY_FLUSH_MIN_BLOCK 512u
#define TALLY_FLUSH_MAX_BLOCK (16u * 1024u * 1024u)
#define TALLY_FLUSH_DEFAULT_BLOCK 4096u

/* One record to append. ts_ns = 0 takes the current time. */
typedef struct tally_record_in {
    uint16_t type;
    const void *key;
    size_t key_len;
    const void *payload;
    size_t payload_len;
    uint64_t ts_ns;
} tally_record_in;

/* The head of a journal: its last record's seq and link ((0, G) if empty). */
typedef struct tally_head_info {
    uint64_t seq;
    uint8_t link[TALLY_HASH_BYTES];
    uint64_t durable_seq; /* writer only: highest seq known durable */
} tally_head_info;

/* What recovery at open did. */
typedef struct tally_recovery {
    uint64_t cut_bytes;     /* bytes removed from the tail (0: none) */
    uint64_t cut_first_seq; /* first seq that was lost with them (0: none) */
    char segment[32];       /* file name of the segment that was cut */
    /* When tally_open fails, the only field it sets: what failed and where
     * (segment file, byte offset, seq), since no handle is returned. */
    char message[256];
} tally_recovery;

/* Creates a journal in dir (created if missing; must not hold one).
 * Needs opt->master_key. */
int tally_init(const char *dir, const tally_options *opt);

/* Derives the journal id of (master key, name), FORMAT.md §2. */
int tally_journal_id(const uint8_t master_key[static TALLY_KEY_BYTES],
                     const char *name, uint8_t ret_id[static TALLY_ID_BYTES]);

/* The opaque writer handle. One per directory (a second gets -EBUSY). */
typedef struct tally tally;

/* Opens dir for appending: takes the lock, checks the key, recovers the
 * tail (what was cut is reported in *ret_recovery, which may be NULL) and
 * starts a new segment. */
int tally_open(tally **ret, const char *dir, const tally_options *opt,
               tally_recovery *ret_recovery);

/* Appends one record; thread-safe. Returns once the record is as durable as
 * the sync policy promises; *ret_seq (may be NULL) gets its seq. */
int tally_append(tally *t, const tally_record_in *rec, uint64_t *ret_seq);

/* Appends n records with consecutive seqs as one write (and one sync).
 * *ret_first_seq gets the first. */
int tally_append_batch(tally *t, const tally_record_in *recs, size_t n,
                       uint64_t *ret_first_seq);

/* Makes every record up to seq durable (seq = 0: everything appended). */
int tally_sync(tally *t, uint64_t seq);

int tally_head(tally *t, tally_head_info *ret);

/* The journal id of an open journal. */
void tally_id(const tally *t, uint8_t ret_id[static TALLY_ID_BYTES]);

/* The message of the last error on this handle, with its place. */
const char *tally_errmsg(const tally *t);

/* Syncs, closes and wipes the key. Returns the first sync error, if any;
 * the handle is freed either way. NULL is a no-op. */
int tally_close(tally *t);

/* ---- reading ---------------------------------------------------------- */

/* One record as read. Pointers stay valid until the next tally_iter_next. */
typedef struct tally_record {
    uint64_t seq;
    uint64_t ts_ns;
    uint16_t type;       /* 0 with payload NULL when not decrypted */
    uint8_t kind;        /* 1 sealed, 2 clear, 3 pruned */
    uint8_t decrypted;   /* 1 if key/payload below are valid */
    const uint8_t *key;
    size_t key_len;
    const uint8_t *payload;
    size_t payload_len;
    uint32_t body_len;   /* bytes of the stored body */
    uint8_t record_hash[TALLY_HASH_BYTES];
    uint8_t link[TALLY_HASH_BYTES];
    const char *segment; /* file name */
    uint64_t offset;     /* byte offset of the frame in that file */
} tally_record;

typedef struct tally_iter tally_iter;

enum {
    /* Stop at a torn or growing tail quietly (a live reader), instead of
     * reporting TALLY_ETORN: a frame of the last file that cannot be read
     * yet is taken for one being written, and read again by a later call.
     * Use tally_verify (or no flag) for a strict check. */
    TALLY_ITER_TOLERATE_TAIL = 1u << 0,
    /* Do not decrypt even if a key is given (chain only). */
    TALLY_ITER_NO_DECRYPT = 1u << 1,
    /* Start at the newest SNAPSHOT record (FORMAT.md §11.6): the files are
     * scanned from the last one back for it (frame headers only: its type
     * is visible), and decryption and the chain check start there, from
     * its stored prev link. Records before it are not read, so startup
     * costs what happened since the snapshot. No snapshot: from seq 1.
     * from_seq still applies on top. */
    TALLY_ITER_FROM_SNAPSHOT = 1u << 2,
};

/* Opens a reader on dir. master_key may be NULL: then records are checked
 * (structure and chain) but not decrypted. Records before from_seq are
 * chain-checked and skipped. Takes no lock; sees a consistent prefix of a
 * journal that a writer is appending to. */
int tally_iter_open(tally_iter **ret, const char *dir,
                    const uint8_t *master_key, uint64_t from_seq,
                    unsigned flags);

/* 1: *ret holds the next record; 0: end of the journal; <0: error (the
 * place is in tally_iter_errmsg). A pruned record is returned with kind 3
 * and decrypted = 0. A CLEAR record (kind 2: CHECKPOINT, COMPACTION) has
 * type, key and payload filled in even without the key; decrypted says
 * whether its tag was checked. After 0, calling again picks up records a
 * live writer appended since (also in segment files created since). */
int tally_iter_next(tally_iter *it, tally_record *ret);

const char *tally_iter_errmsg(const tally_iter *it);
void tally_iter_id(const tally_iter *it, uint8_t ret_id[static TALLY_ID_BYTES]);
void tally_iter_free(tally_iter *it);

/* Summary of a full verification. */
typedef struct tally_verify_report {
    uint64_t segments;
    uint64_t records;
    uint64_t pruned;
    uint64_t first_seq, last_seq;
    uint64_t bytes;
    uint64_t first_ts_ns, last_ts_ns;
    uint8_t head[TALLY_HASH_BYTES];
    uint8_t journal_id[TALLY_ID_BYTES];
    int cipher;
    int keyed;            /* 1 if records were decrypted and authenticated */
    /* on failure: where */
    char segment[32];
    uint64_t offset;
    uint64_t seq;
    char message[256];
} tally_verify_report;

/* Verifies the whole journal: without a key structure and chain, with a key
 * also every record's authenticity. A torn tail is a failure (TALLY_ETORN).
 * *ret is filled in on success and on failure. */
int tally_verify(const char *dir, const uint8_t *master_key,
                 tally_verify_report *ret);

/* The head from the files alone (no key, no lock): the link stored after
 * the last whole frame. */
int tally_read_head(const char *dir, tally_head_info *ret);

/* ---- keys --------------------------------------------------------------- */

/* Reads a key file: 32 raw bytes, or 64 hex digits with an optional
 * newline. The file must not be readable by group or others
 * (TALLY_EKEYPERM); a malformed one gives TALLY_EKEY. out must be
 * TALLY_KEY_BYTES (ideally sodium_malloc'd); it is wiped on failure. */
int tally_key_load(const char *path, uint8_t out[static TALLY_KEY_BYTES]);

/* Writes 32 random bytes to a new file (O_EXCL, mode 0600) and fsyncs it. */
int tally_keygen(const char *path);

/* ---- padding policy (FORMAT.md §3.3, §4.2; journal/meta.c) -------------- */

/* Parses "none", "buckets" or "block:N" (N with an optional K or M suffix,
 * powers of 1024). 0 or -EINVAL. */
int tally_padding_parse(const char *s, tally_padding *ret);
/* Writes the form tally_padding_parse reads ("block:4096"); returns what
 * snprintf returns. */
int tally_padding_format(const tally_padding *p, char *buf, size_t len);
/* The envelope length a record of env_len plaintext bytes (16 + key +
 * stored data) is padded to; env_len itself when it is out of range. */
size_t tally_padded_len(const tally_padding *p, size_t env_len);

/* The policy recorded in dir's metadata (none when absent). No key and no
 * lock: the metadata checksum is checked, not its MAC. TALLY_EFORMAT for a
 * policy this version does not know. */
int tally_get_padding(const char *dir, tally_padding *ret);

/* Records a new policy: takes the writer's lock (-EBUSY while a writer is
 * open) and replaces the metadata atomically. Segments started from then
 * on (the next tally_open) are padded under it; records already written
 * keep their sizes. */
int tally_set_padding(const char *dir,
                      const uint8_t master_key[static TALLY_KEY_BYTES],
                      const tally_padding *p);

/* ---- key epochs (FORMAT.md §3.2, §3.4; journal/epochs.c) ---------------- */

/* What tally_rekey / tally_rewrap / tally_forget did; filled in on success
 * and on failure (then message says what failed, and where). */
typedef struct tally_epoch_report {
    uint32_t epoch;            /* the current epoch afterwards */
    uint32_t epochs;           /* epochs started / re-wrapped / forgotten */
    /* forget: the highest seq of a record whose epoch is forgotten (by this
     * call or before; 0: none), and the oldest epoch kept with its first
     * record's seq (0: it holds none yet). It is kept because it holds a
     * record at or after before_seq, or because it is the current epoch. */
    uint64_t forgotten_through;
    uint32_t kept_epoch;
    uint64_t kept_first_seq;
    char message[256];
} tally_epoch_report;

/* Each takes the writer's lock (-EBUSY while a writer is open) and replaces
 * the metadata atomically; no segment is touched. */

/* Starts a new key epoch: a new random data key wrapped under master_key
 * becomes the current epoch, which the next tally_open writes its segments
 * under. Records of older epochs stay readable. */
int tally_rekey(const char *dir, const uint8_t master_key[static TALLY_KEY_BYTES],
                tally_epoch_report *ret);

/* Master-key rotation: re-wraps the data key of every epoch under new_key
 * (old_key must open the journal, else TALLY_EKEY). The journal id stays;
 * the key check value and MAC follow new_key, so old_key no longer opens
 * the journal. Forgotten epochs stay forgotten. */
int tally_rewrap(const char *dir, const uint8_t old_key[static TALLY_KEY_BYTES],
                 const uint8_t new_key[static TALLY_KEY_BYTES],
                 tally_epoch_report *ret);

/* Crypto-erasure: destroys the wrapped data keys of the oldest epochs all
 * of whose records have a seq below before_seq (never the current epoch),
 * so those records can no longer be decrypted by anyone who holds only the
 * master key and this directory (FORMAT.md §3.4 says what an older copy of
 * the metadata still gives). The chain, the anchors and keyless
 * verification are unchanged; readers return those records with
 * decrypted = 0. */
int tally_forget(const char *dir, const uint8_t master_key[static TALLY_KEY_BYTES],
                 uint64_t before_seq, tally_epoch_report *ret);

#ifdef __cplusplus
}
#endif
#endif
