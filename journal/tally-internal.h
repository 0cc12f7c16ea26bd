/*
 * tally-internal.h — what the journal library shares between its files and
 * with the in-tree modules built on it (compact/, checkpoint/, tests).
 * Not installed. Names start with ti_ so that the shared library's export
 * list (tally_*) leaves them out.
 *
 * Everything here follows docs/FORMAT.md; section numbers are cited.
 */
#ifndef TALLY_INTERNAL_H
#define TALLY_INTERNAL_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#include <sodium.h>

#include "format.h"
#include "tally.h"

/* ---- test hook ---------------------------------------------------------- */

#define TALLY_DEBUG_WRITE 1
#define TALLY_DEBUG_FSYNC 2
/* Makes a write()/fsync of this writer handle fail with err (errno value,
 * sign ignored): after_n more calls of that kind succeed, the next one fails
 * (after_n = 0: the very next one). One-shot. Used by tests to check that a
 * failed write or fsync poisons the handle. */
void tally_debug_fail(tally *t, int op, unsigned after_n, int err);

/* ---- small utilities ------------------------------------------------------ */

/* A growable byte buffer; never shrinks. */
typedef struct ti_buf {
    uint8_t *p;
    size_t len, cap;
} ti_buf;
int ti_buf_reserve(ti_buf *b, size_t need); /* cap >= need; 0 or -ENOMEM */
void ti_buf_free(ti_buf *b);

/* Writes all of buf (loops over short writes, retries EINTR). */
int ti_write_all(int fd, const void *buf, size_t len);
int ti_pwrite_all(int fd, const void *buf, size_t len, uint64_t off);
/* pread that loops until len bytes or end of file; returns bytes read or
 * -errno. */
ssize_t ti_pread_full(int fd, void *buf, size_t len, uint64_t off);
int ti_fsync_dir(int dirfd);
/* "write temp, fsync, rename, fsync directory" (FORMAT.md §1). */
int ti_replace_file(int dirfd, const char *name, const void *data, size_t len,
                    int mode);

/* snprintf into a fixed buffer, truncating quietly. */
void ti_msg(char *buf, size_t len, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

uint64_t ti_now_ns(void);

/* ---- hashes and key derivation (FORMAT.md §2) ----------------------------- */

/* H over the concatenation of the n pieces, keyed with key (32 bytes) or
 * unkeyed (key = NULL). */
void ti_hashv(uint8_t out[32], const uint8_t *key, const struct iovec *v,
              int n);
void ti_hash(uint8_t out[32], const void *m, size_t len);
/* H_key(label || jid) for the labels "tally/v1/kcv", "/wrap", "/meta". */
void ti_derive(uint8_t out[32], const uint8_t key[32], const char *label,
               const uint8_t jid[32]);
void ti_derive_jid(uint8_t out[32], const uint8_t mk[32], const char *name,
                   size_t name_len);
void ti_derive_segment_key(uint8_t out[32], const uint8_t dk[32],
                           const uint8_t jid[32], uint64_t segment_no,
                           const uint8_t salt[16]);
void ti_genesis(uint8_t out[32], const uint8_t jid[32]);
/* link_n = H(link_{n-1} || record_hash_n) (§4.4) */
void ti_link(uint8_t out[32], const uint8_t prev[32], const uint8_t rh[32]);

/* ---- AEAD (FORMAT.md §4.3) ------------------------------------------------ */

typedef struct ti_aead {
    int cipher;                        /* TALLY_CIPHER_* */
    crypto_aead_aes256gcm_state *gcm;  /* sodium_malloc'd, AES only */
    uint8_t *xkey;                     /* sodium_malloc'd 32 B, XChaCha only */
    bool keyed;
} ti_aead;

/* 0, or TALLY_ECIPHER when AES-GCM is asked for and the CPU lacks it. */
int ti_cipher_check(int cipher);
int ti_aead_alloc(ti_aead *a, int cipher);
/* Installs a segment key (the caller wipes sk). */
void ti_aead_setkey(ti_aead *a, const uint8_t sk[32]);
void ti_aead_free(ti_aead *a); /* wipes */
void ti_aead_seal(const ti_aead *a, uint64_t seq, uint8_t *c,
                  uint8_t tag[TF_TAG_BYTES], const uint8_t *m, size_t mlen,
                  const uint8_t *ad, size_t adlen);
/* 0 or -1 (tag does not verify). */
int ti_aead_open(const ti_aead *a, uint64_t seq, uint8_t *m, const uint8_t *c,
                 size_t clen, const uint8_t tag[TF_TAG_BYTES],
                 const uint8_t *ad, size_t adlen);

/* ---- metadata (FORMAT.md §3) ---------------------------------------------- */

typedef struct ti_epoch {
    uint32_t epoch;
    uint32_t flags;
    uint64_t first_segment;
    uint8_t nonce[24];
    uint8_t wrapped[48];
} ti_epoch;

typedef struct ti_meta {
    uint32_t flags;
    uint8_t cipher;
    uint32_t current_epoch;
    uint64_t segment_size;
    uint64_t generation;
    uint8_t jid[32];
    uint8_t kcv[32];
    uint16_t name_len;
    char name[TALLY_MAX_NAME + 1];
    uint16_t epoch_count;
    ti_epoch *epochs;
    uint32_t ext_len;
    uint8_t *ext;
} ti_meta;

/* Reads DIR/tally.meta. Checks length and checksum always; with mk also the
 * KCV (TALLY_EKEY) and the MAC (TALLY_EINTEGRITY). -ENOENT mapped to
 * TALLY_ENOJOURNAL. err gets a message on failure. */
int ti_meta_read(int dirfd, const uint8_t *mk, ti_meta *ret, char *err,
                 size_t errlen);
/* Increments generation, computes mac and checksum with mk and replaces the
 * file atomically. */
int ti_meta_write(int dirfd, ti_meta *m, const uint8_t mk[32]);
void ti_meta_free(ti_meta *m);
const ti_epoch *ti_meta_epoch(const ti_meta *m, uint32_t epoch);
/* The padding policy in m's extensions (§3.3): NONE when absent;
 * TALLY_EFORMAT for a kind this version does not know, TALLY_EINTEGRITY
 * for a malformed extension area or value. */
int ti_meta_padding(const ti_meta *m, tally_padding *ret);
/* Replaces m's padding extension (removed for NONE; other tags kept).
 * 0, -EINVAL (invalid policy) or -ENOMEM. */
int ti_meta_set_padding(ti_meta *m, const tally_padding *p);
/* 0 if p is a policy this version writes, else -EINVAL. */
int ti_padding_check(const tally_padding *p);
/* Wraps dk into e (fresh random nonce) / unwraps it (TALLY_EKEY when the tag
 * fails, TALLY_EPRUNED when the epoch was forgotten). */
void ti_epoch_wrap(ti_epoch *e, const uint8_t mk[32], const uint8_t jid[32],
                   const uint8_t dk[32]);
int ti_epoch_unwrap(const ti_epoch *e, const uint8_t mk[32],
                    const uint8_t jid[32], uint8_t dk[32]);

/* ---- segment files (FORMAT.md §4) ----------------------------------------- */

void ti_seg_name(char out[TF_SEG_NAME_LEN + 1], uint64_t segment_no);
/* 1 and *ret_no if name is exactly NNNNNNNNNNNNNNNN.seg, else 0. */
int ti_seg_parse_name(const char *name, uint64_t *ret_no);
/* Sorted list of segment file names in dirfd (caller frees with
 * ti_seg_list_free). */
int ti_seg_list(int dirfd, char ***ret_names, size_t *ret_n);
void ti_seg_list_free(char **names, size_t n);

typedef struct ti_seg_hdr {
    uint8_t cipher;
    uint32_t epoch;
    uint64_t segment_no;
    uint64_t first_seq;
    uint8_t salt[16];
    uint8_t jid[32];
    uint8_t prev_link[32];
} ti_seg_hdr;

void ti_seg_header_encode(uint8_t out[TF_SEG_HEADER_BYTES],
                          const ti_seg_hdr *h);
/* Checks magic, version, header_len, reserved fields and header_hash;
 * returns 0 or TALLY_EINTEGRITY/TALLY_EFORMAT with *why set. */
int ti_seg_header_parse(const uint8_t in[TF_SEG_HEADER_BYTES], ti_seg_hdr *ret,
                        const char **why);

/* The rule for the first segment header of a file (FORMAT.md §1, §4.1),
 * the same for the writer's recovery and for every reader: it belongs to
 * this journal (jid), has the metadata's cipher and a known epoch, and its
 * segment number is the number in the file's name. 0, or TALLY_EINTEGRITY
 * with *why set. */
int ti_seg_file_check(const ti_meta *m, const ti_seg_hdr *first,
                      const char *name, const char **why);

/* ---- frames (FORMAT.md §4.2) ---------------------------------------------- */

typedef struct ti_frame_hdr {
    uint8_t kind, flags;
    uint16_t vtype;
    uint64_t seq;
    uint64_t ts_ns;
    uint32_t body_len;
    uint32_t unsynced_depth; /* §4.2: seq - highest seq durable at encoding */
} ti_frame_hdr;

static inline uint64_t ti_frame_len(const ti_frame_hdr *h)
{
    return (uint64_t)TF_FRAME_OVERHEAD + h->body_len;
}

/* Checks the fields of a frame header (magic, kind, flags, vtype, body_len)
 * and that its seq is expect_seq. 0 or TALLY_EINTEGRITY. */
int ti_frame_header_parse(const uint8_t in[TF_FRAME_HEADER_BYTES],
                          uint64_t expect_seq, ti_frame_hdr *ret,
                          const char **why);
void ti_frame_header_encode(uint8_t out[TF_FRAME_HEADER_BYTES],
                            const ti_frame_hdr *h);
/* record_hash of a whole frame (header at f, body after it). For PRUNED
 * also checks the embedded original header. 0 or TALLY_EINTEGRITY. */
int ti_frame_record_hash(const uint8_t *f, const ti_frame_hdr *h,
                         uint8_t rh[32], const char **why);

/* A parsed envelope (§4.2); key and data point into the envelope. */
typedef struct ti_env {
    uint16_t type;
    uint16_t key_len;
    uint32_t data_len, raw_len;
    const uint8_t *key, *data;
} ti_env;
/* Applies every reader rule of §4.2. 0 or TALLY_EINTEGRITY. */
int ti_env_parse(const uint8_t *env, size_t len, const ti_frame_hdr *h,
                 ti_env *ret, const char **why);

/* Authenticates (CLEAR) or decrypts (SEALED) the frame at f. work must hold
 * TF_AD_BYTES + body_len bytes; *ret_env and *ret_env_len get the envelope
 * (inside work for SEALED, inside f for CLEAR). 0 or TALLY_EINTEGRITY. */
int ti_frame_open(const ti_aead *a, const uint8_t jid[32],
                  const uint8_t prev_link[32], const uint8_t *f,
                  const ti_frame_hdr *h, uint8_t *work,
                  const uint8_t **ret_env, size_t *ret_env_len);

/* Encodes one SEALED or CLEAR frame at out (112 + key_len + data_len +
 * pad_len bytes, see ti_frame_size), encrypting in place, and fills in the
 * link after it. pad_len zero bytes follow the data inside the envelope
 * (FORMAT.md §4.2 padding).
 * clear_work must hold TF_AD_BYTES + envelope bytes for CLEAR (unused for
 * SEALED). link is read as prev_link and overwritten with the new link. */
typedef struct ti_frame_in {
    uint8_t kind;      /* SEALED or CLEAR */
    uint8_t flags;     /* TF_FRAME_COMPRESSED */
    uint16_t vtype;
    uint16_t type;
    uint64_t seq, ts_ns;
    uint32_t unsynced_depth; /* §4.2 */
    const void *key;
    size_t key_len;
    const void *data;
    size_t data_len;
    size_t raw_len;
    size_t pad_len;    /* zero bytes after the data (§4.2) */
} ti_frame_in;
static inline size_t ti_frame_size(size_t key_len, size_t data_len)
{
    return TF_FRAME_OVERHEAD + TF_ENV_HEADER_BYTES + key_len + data_len +
           TF_TAG_BYTES;
}
void ti_frame_encode(const ti_aead *a, const uint8_t jid[32], uint8_t *out,
                     const ti_frame_in *in, uint8_t *clear_work,
                     uint8_t link[32]);

/* ---- buffered reading of one segment file --------------------------------- */

typedef struct ti_rfile {
    int fd;
    uint8_t *buf;
    size_t cap, len;
    uint64_t off; /* file offset of buf[0] */
} ti_rfile;

#define TI_RFILE_CHUNK (1u << 20)
int ti_rfile_open(ti_rfile *f, int dirfd, const char *name);
void ti_rfile_close(ti_rfile *f); /* keeps buf for the next file */
void ti_rfile_free(ti_rfile *f);
/* Makes [pos, pos + n) readable at *ret: 1 done, 0 the file ends before
 * (a live writer may still extend it: asking again re-reads), <0 error. */
int ti_rfile_get(ti_rfile *f, uint64_t pos, size_t n, const uint8_t **ret);
/* 1 if the file holds at least one byte from pos on and all of them are
 * zero (the space a writer reserved in the segment it is writing, FORMAT.md
 * §4), 0 if not, <0 error. Reads the file, not the buffer. */
int ti_rfile_zero_from(ti_rfile *f, uint64_t pos);
/* Forgets the buffered bytes, so that the next get reads the file again. */
static inline void ti_rfile_drop(ti_rfile *f)
{
    f->len = 0;
}

/* ---- walking segments and frames ------------------------------------------ */

/* The walker checks structure and chain of consecutive segment files: the
 * shared core of the iterator, verify, read_head and recovery. */
enum {
    TI_EV_SEGMENT = 1, /* a segment header was accepted (w->seg) */
    TI_EV_FRAME,       /* a whole frame that verifies (w->frame, w->fh) */
    TI_EV_EOF,         /* the file ends at a frame or header boundary */
    TI_EV_TORN,        /* the file ends inside a frame or header */
    TI_EV_BAD,         /* invalid bytes at w->pos (w->why) */
};

typedef struct ti_walk {
    /* set by the caller */
    uint8_t jid[32];
    uint8_t cipher;
    bool nohash;  /* structure only: links are taken as stored */
    /* chain state */
    bool started;         /* false: the next header is trusted as start */
    uint64_t next_seq;    /* seq the next frame must carry */
    uint8_t link[32];     /* link of next_seq - 1 */
    uint64_t segment_no;  /* last segment number accepted (0: none) */
    /* current file */
    ti_rfile rf;
    bool file_open;
    bool in_segment;      /* a header of this file was accepted */
    uint64_t pos;         /* offset of the next thing to read */
    /* last event */
    ti_seg_hdr seg;
    ti_frame_hdr fh;
    const uint8_t *frame; /* whole frame, valid until the next call */
    uint8_t prev_link[32];/* link before this frame */
    uint8_t record_hash[32];
    uint64_t frame_off;
    const char *why;
    bool header_bad;      /* BAD: the frame header itself was invalid */
} ti_walk;

void ti_walk_init(ti_walk *w, const uint8_t jid[32], uint8_t cipher);
int ti_walk_open_file(ti_walk *w, int dirfd, const char *name);
void ti_walk_free(ti_walk *w);
/* Returns a TI_EV_* (>0) or a negative errno on an I/O error. */
int ti_walk_next(ti_walk *w);
/* For a file that holds several segments (merged by the compactor,
 * FORMAT.md §11): moves w, just opened on it, to the header of segment
 * segment_no, passing the frames before it by their lengths without
 * checking them (the caller read those segments from another file). The
 * next ti_walk_next checks that header against the chain as usual.
 * 1 positioned, 0 the file does not hold that segment, <0 I/O error. */
int ti_walk_skip_to_segment(ti_walk *w, uint64_t segment_no);

/* What the end of the last file of a journal is, at the first thing in it
 * that is not whole (the walker w returned TI_EV_TORN or TI_EV_BAD there):
 * the one decision of FORMAT.md §6, taken by recovery (which cuts a torn
 * tail and refuses damage) and by every reader (verify reports a torn tail
 * as TALLY_ETORN, damage as TALLY_EINTEGRITY), so that they always agree.
 * Returns a TI_TAIL_* (*why says why, for DAMAGE) or <0 on an I/O error.
 * Reads the file through w->rf.fd; the walker's buffer is left alone. */
enum {
    TI_TAIL_END = 1, /* zero bytes to the end (§4 reserved tail), or a file
                      * whose creation was cut short: the journal ends */
    TI_TAIL_TORN,    /* no evidence of a durable record after it: cut */
    TI_TAIL_DAMAGE,  /* records that were durable follow it: refuse */
};
int ti_tail_decide(ti_walk *w, const char **why);

/* ---- going through a journal's files without the lock (reader.c) ---------
 * What the iterator (and verify) and the audit share, so that they read
 * the same files the same way while a writer rolls over and a compactor
 * merges files (FORMAT.md §1, §11.4). */

/* The segment files a reader goes through, in name order (ti_seg_list). */
typedef struct ti_files {
    char **names;
    size_t n;
    size_t idx; /* the next one to open */
} ti_files;

/* Picks up the files created since the listing (names after the last one
 * listed: a live writer rolled over) and keeps only those; idx restarts at
 * them. 1 there are new ones, 0 none, <0 error. */
int ti_files_more(ti_files *f, int dirfd);

/* A listed file vanished when the walker came to open it: an empty last
 * segment removed by the writer, or a file the compactor merged into an
 * earlier one (§11.4), whose segments now sit in the file named by the
 * first segment of the merged run. Lists the directory again (into f) and
 * opens the file that holds segment w->segment_no + 1: the greatest file
 * number <= it, or, while the leftovers of an interrupted merge are being
 * removed, an earlier one. 1: w is open on it, positioned at that header,
 * and cur holds its name; 0: no file holds it, carry on with f->idx; <0
 * error (-EAGAIN: the directory kept changing). */
int ti_walk_reopen_vanished(ti_walk *w, int dirfd, ti_files *f,
                            char cur[TF_SEG_NAME_LEN + 1]);

/* The file-name rule (ti_seg_file_check) for a segment header met at
 * offset off of file name: the first header of a file (off 0) is checked
 * against the name, a later one (a merged file, §11.3) against all but
 * the name. 0, or TALLY_EINTEGRITY with *why set. */
int ti_seg_header_check(const ti_meta *m, const ti_seg_hdr *h,
                        const char *name, uint64_t off, const char **why);

/* A file passed over as a leftover of an interrupted merge (its number is
 * not above the last segment read, §11.4): its first segment header must
 * pass ti_seg_file_check like any file's, so that a file that holds later
 * segments under an earlier name is not passed over. 0 (also when it was
 * removed meanwhile); TALLY_EINTEGRITY with *why and *ret_seq (the
 * header's first_seq, 0 if incomplete); or -errno with *why. */
int ti_seg_leftover_check(int dirfd, const ti_meta *m, const char *name,
                          uint64_t *ret_seq, const char **why);

/* ---- a reader's keys and payloads (reader.c) -------------------------------
 * What the iterator and the audit share to open the records they walk. */

/* The data keys of a journal's epochs, unwrapped once with the master key
 * (FORMAT.md §3.2); each segment's key is derived from them (§2) when its
 * header is met. A zeroed ti_dkeys holds no key. */
typedef struct ti_dkeys {
    uint8_t *dk; /* sodium_malloc'd: 32 bytes per epoch entry of the meta */
    bool *ok;    /* per entry: unwrapped (false: the epoch was forgotten) */
} ti_dkeys;

/* Unwraps the data key of every epoch of m; a forgotten epoch is passed
 * over (its records stay sealed). 0, -ENOMEM, or the error of
 * ti_epoch_unwrap (TALLY_EKEY) with *ret_epoch the epoch that failed. The
 * caller frees k with ti_dkeys_free in every case. */
int ti_dkeys_unwrap(ti_dkeys *k, const ti_meta *m, const uint8_t mk[32],
                    uint32_t *ret_epoch);
void ti_dkeys_free(ti_dkeys *k); /* wipes */
/* Installs into a the key of the segment whose header is seg: 1 done, 0
 * its epoch's key is not known (no key, forgotten, or not in m), -ENOMEM. */
int ti_dkeys_segment(const ti_dkeys *k, const ti_meta *m, ti_aead *a,
                     const ti_seg_hdr *seg);

/* Inflates the data of a COMPRESSED record's envelope into raw (§4.2: all
 * of data_len gives exactly raw_len bytes). 0, -ENOMEM or
 * TALLY_EINTEGRITY. */
int ti_env_inflate(const ti_env *e, ti_buf *raw);

/* ---- the compactor's view of a writer handle (compact/, FORMAT.md §11) ---- */

/* What the compactor needs from an open writer: a dup of its directory fd
 * (*ret_dirfd, the caller closes it), the master key (copied into mk, which
 * the caller allocates with sodium_malloc and frees) and the highest
 * segment number that is sealed (*ret_sealed: synced and never appended to
 * again; 0 if none). The active segment, and one being sealed in the
 * background, are above it. TALLY_EPOISONED on a poisoned handle. */
int ti_writer_compact_view(tally *t, int *ret_dirfd, uint8_t mk[32],
                           uint64_t *ret_sealed);

/* ---- recovery (FORMAT.md §6) ---------------------------------------------- */

typedef struct ti_recovered {
    uint64_t seq;          /* head after recovery */
    uint8_t link[32];
    uint64_t last_segment; /* number of the last remaining segment (0: none) */
} ti_recovered;

/* Checks every segment header, walks the last file, cuts a torn tail,
 * removes a trailing empty segment and *.tmp files. The writer calls it
 * with the lock held. With mk (may be NULL) the last record's tag is
 * checked too. rep is zeroed, then describes the cut. */
int ti_recover(int dirfd, const ti_meta *m, const uint8_t *mk,
               tally_recovery *rep, ti_recovered *ret, char *err,
               size_t errlen);

#endif
