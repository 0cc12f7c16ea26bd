/*
 * format.h — the on-disk layouts of docs/FORMAT.md (version 1) as packed
 * structs, plus little-endian load/store helpers.
 *
 * The structs document the byte tables and let the compiler check offsets;
 * code encodes and decodes fields with the le*_get/le*_put helpers at the
 * offsetof() positions, so nothing depends on the host's byte order.
 * FORMAT.md is normative: when this file and the document disagree, this file
 * is wrong.
 */
#ifndef TALLY_FORMAT_H
#define TALLY_FORMAT_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define TF_VERSION 1u

/* ---- §3 metadata ------------------------------------------------------- */

#define TF_META_MAGIC "TALLYMTA"
#define TF_META_FILE "tally.meta"
#define TF_LOCK_FILE "LOCK"
#define TF_META_COMPRESS 0x1u      /* §3.1 flags bit 0 */
#define TF_META_KNOWN_FLAGS TF_META_COMPRESS
#define TF_EPOCH_FORGOTTEN 0x1u    /* §3.2 flags bit 0 */
#define TF_META_MAX_EXT (1u << 20) /* sanity bound on ext_len when reading */

/* §3.3 extension tags */
#define TF_EXT_PADDING 0x0001u     /* padding policy of new segments */
#define TF_EXT_PADDING_LEN 8u      /* kind (1), reserved (3), le32 block */
#define TF_PAD_MIN_BLOCK 16u       /* block:N bounds (§3.3) */
#define TF_PAD_MAX_BLOCK (16u << 20)

/* §3.1: the fixed part; name, epochs, extensions, mac, checksum follow. */
struct tf_meta_fixed {
    uint8_t magic[8];
    uint16_t version;
    uint16_t reserved0;
    uint32_t flags;
    uint8_t cipher;
    uint8_t reserved1[3];
    uint32_t current_epoch;
    uint64_t segment_size;
    uint64_t generation;
    uint8_t jid[32];
    uint8_t kcv[32];
    uint16_t name_len;
    uint16_t epoch_count;
    uint32_t ext_len;
} __attribute__((packed));
_Static_assert(sizeof(struct tf_meta_fixed) == 112, "FORMAT.md §3.1");
_Static_assert(offsetof(struct tf_meta_fixed, cipher) == 16, "§3.1");
_Static_assert(offsetof(struct tf_meta_fixed, current_epoch) == 20, "§3.1");
_Static_assert(offsetof(struct tf_meta_fixed, generation) == 32, "§3.1");
_Static_assert(offsetof(struct tf_meta_fixed, jid) == 40, "§3.1");
_Static_assert(offsetof(struct tf_meta_fixed, kcv) == 72, "§3.1");
_Static_assert(offsetof(struct tf_meta_fixed, name_len) == 104, "§3.1");
_Static_assert(offsetof(struct tf_meta_fixed, ext_len) == 108, "§3.1");
#define TF_META_FIXED_BYTES 112u
#define TF_META_TRAILER_BYTES 64u /* mac || checksum */

/* §3.2 */
struct tf_epoch {
    uint32_t epoch;
    uint32_t flags;
    uint64_t first_segment;
    uint8_t nonce[24];
    uint8_t wrapped[48];
    uint64_t reserved;
} __attribute__((packed));
_Static_assert(sizeof(struct tf_epoch) == 96, "FORMAT.md §3.2");
_Static_assert(offsetof(struct tf_epoch, nonce) == 16, "§3.2");
_Static_assert(offsetof(struct tf_epoch, wrapped) == 40, "§3.2");
_Static_assert(offsetof(struct tf_epoch, reserved) == 88, "§3.2");
#define TF_EPOCH_BYTES 96u

/* ---- §4 segment files --------------------------------------------------- */

#define TF_SEG_MAGIC "TALLYSEG"
#define TF_SEG_SUFFIX ".seg"
#define TF_SEG_NAME_LEN 20 /* 16 hex digits + ".seg" */

/* §4.1 */
struct tf_seg_header {
    uint8_t magic[8];
    uint16_t version;
    uint16_t header_len;
    uint8_t cipher;
    uint8_t flags;
    uint16_t reserved0;
    uint32_t epoch;
    uint32_t reserved1;
    uint64_t segment_no;
    uint64_t first_seq;
    uint64_t reserved2;
    uint8_t salt[16];
    uint8_t jid[32];
    uint8_t prev_link[32];
    uint8_t header_hash[32];
} __attribute__((packed));
_Static_assert(sizeof(struct tf_seg_header) == 160, "FORMAT.md §4.1");
_Static_assert(offsetof(struct tf_seg_header, epoch) == 16, "§4.1");
_Static_assert(offsetof(struct tf_seg_header, segment_no) == 24, "§4.1");
_Static_assert(offsetof(struct tf_seg_header, first_seq) == 32, "§4.1");
_Static_assert(offsetof(struct tf_seg_header, salt) == 48, "§4.1");
_Static_assert(offsetof(struct tf_seg_header, jid) == 64, "§4.1");
_Static_assert(offsetof(struct tf_seg_header, prev_link) == 96, "§4.1");
_Static_assert(offsetof(struct tf_seg_header, header_hash) == 128, "§4.1");
#define TF_SEG_HEADER_BYTES 160u
#define TF_SEG_HASHED_BYTES 128u

/* §4.2 frame header */
#define TF_FRAME_MAGIC "TFRM"
struct tf_frame_header {
    uint8_t magic[4];
    uint8_t kind;
    uint8_t flags;
    uint16_t vtype;
    uint64_t seq;
    uint64_t ts_ns;
    uint32_t body_len;
    uint32_t unsynced_depth; /* seq - the highest seq durable at encoding */
} __attribute__((packed));
_Static_assert(sizeof(struct tf_frame_header) == 32, "FORMAT.md §4.2");
_Static_assert(offsetof(struct tf_frame_header, seq) == 8, "§4.2");
_Static_assert(offsetof(struct tf_frame_header, ts_ns) == 16, "§4.2");
_Static_assert(offsetof(struct tf_frame_header, body_len) == 24, "§4.2");
_Static_assert(offsetof(struct tf_frame_header, unsynced_depth) == 28, "§4.2");
/* §4.2: unsynced_depth saturates here. */
#define TF_DEPTH_MAX 0xFFFFFFFFu
#define TF_FRAME_HEADER_BYTES 32u
#define TF_LINK_BYTES 32u
#define TF_TAG_BYTES 16u
/* A frame is header || body || link. */
#define TF_FRAME_OVERHEAD (TF_FRAME_HEADER_BYTES + TF_LINK_BYTES)

#define TF_KIND_SEALED 1u
#define TF_KIND_CLEAR 2u
#define TF_KIND_PRUNED 3u
#define TF_FRAME_COMPRESSED 0x1u
#define TF_MAX_BODY (16u * 1024u * 1024u + 64u * 1024u)
/* §4.2 padding buckets: envelopes of 64 B, 128 B, ... 16 MiB, and the
 * largest envelope a body may hold. */
#define TF_BUCKET_MIN 64u
#define TF_BUCKET_MAX_POW2 (16u * 1024u * 1024u)
#define TF_MAX_ENV (TF_MAX_BODY - 16u)
#define TF_PRUNED_BODY 64u

/* §4.2 envelope header */
struct tf_envelope {
    uint16_t type;
    uint16_t key_len;
    uint32_t data_len;
    uint32_t raw_len;
    uint32_t reserved;
} __attribute__((packed));
_Static_assert(sizeof(struct tf_envelope) == 16, "FORMAT.md §4.2 envelope");
#define TF_ENV_HEADER_BYTES 16u
/* Smallest SEALED/CLEAR body: an empty envelope and the tag. */
#define TF_MIN_BODY (TF_ENV_HEADER_BYTES + TF_TAG_BYTES)
/* §6.1: the smallest PAD record, so the smallest gap one can fill. */
#define TF_PAD_FRAME_MIN (TF_FRAME_OVERHEAD + TF_MIN_BODY)

/* §4.3: AD = jid || frame header || prev_link */
#define TF_AD_BYTES (32u + TF_FRAME_HEADER_BYTES + 32u)

/* ---- little-endian helpers ---------------------------------------------- */

static inline uint16_t le16_get(const uint8_t *p)
{
    return (uint16_t)(p[0] | (uint16_t)p[1] << 8);
}
static inline uint32_t le32_get(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
           (uint32_t)p[3] << 24;
}
static inline uint64_t le64_get(const uint8_t *p)
{
    return (uint64_t)le32_get(p) | (uint64_t)le32_get(p + 4) << 32;
}
static inline void le16_put(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}
static inline void le32_put(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
    p[3] = (uint8_t)(v >> 24);
}
static inline void le64_put(uint8_t *p, uint64_t v)
{
    le32_put(p, (uint32_t)v);
    le32_put(p + 4, (uint32_t)(v >> 32));
}

/* Field accessors: FIELD(struct, name) is the byte offset. */
#define TF_OFF(type, field) offsetof(struct type, field)

#endif
