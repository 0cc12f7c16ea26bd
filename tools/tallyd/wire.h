/*
 * wire.h — the tallyd wire protocol, version 2 (docs/FORMAT.md §10):
 * encoding and checked parsing of requests, replies and publications.
 * Shared by the daemon, the client library and the fuzz harness; not
 * installed. Every parser checks each length against the bytes it was given
 * before it reads, and never allocates.
 */
#ifndef TALLYD_WIRE_H
#define TALLYD_WIRE_H

#include <stddef.h>
#include <stdint.h>

#include "tally.h"

/* Requests and replies: clients send version 2; the daemon also takes
 * version 1 and answers each request in its own version (§10.2). */
#define WIRE_VERSION     2u
#define WIRE_VERSION_MIN 1u
/* Publications are unchanged since version 1 and still carry 1. */
#define WIRE_PUB_VERSION 1u

/* Request flags (version 2): a 16-byte request id follows the header
 * (APPEND only), so that a resent request is committed once (§10.2). */
#define WIRE_REQ_ID       0x0001u
#define WIRE_REQ_ID_BYTES 16u
/* Reply flags (version 2): the APPEND was committed before, under the same
 * request id; the seqs are those of that commit (§10.3). */
#define WIRE_REPLY_DUPLICATE 0x0001u

/* Requests (§10.2). A reply carries op | WIRE_REPLY. */
#define WIRE_OP_APPEND 1u
#define WIRE_OP_STATUS 2u
#define WIRE_OP_RANGE  3u
#define WIRE_OP_EPOCH  4u
#define WIRE_REPLY     0x80u

/* Publication forms (§10.4). */
#define WIRE_FORM_PLAIN  1u
#define WIRE_FORM_STORED 2u
#define WIRE_FORM_TICK   3u
/* Type of a tick: reserved, never a record's type (FORMAT.md §4.2). */
#define WIRE_TICK_TYPE TALLY_TYPE_RESERVED

/* Limits (§10.1). */
#define WIRE_MAX_BATCH   4096u
#define WIRE_MAX_REQUEST (TALLY_MAX_PAYLOAD + (1u << 20))
/* nanomsg's NN_RCVMAXSIZE on every socket: a message between the two
 * limits is received and refused with an error reply; a bigger one makes
 * nanomsg drop the connection before we see it. */
#define WIRE_MAX_MESSAGE (2u * WIRE_MAX_REQUEST)
#define WIRE_RANGE_MAX_RECORDS 1024u
#define WIRE_RANGE_MAX_BYTES   (8u << 20)
#define WIRE_RANGE_MAX_SCAN    100000u
#define WIRE_MAX_ERRMSG 512u
#define WIRE_MAX_URL    1024u

#define WIRE_REQ_HEADER   4u
#define WIRE_REPLY_HEADER 8u
#define WIRE_RECORD_HEADER 8u
#define WIRE_RANGE_BODY   24u
#define WIRE_PUB_HEADER   92u
#define WIRE_STORED_CTX   (4u + 8u + 16u + 32u + 4u)
#define WIRE_EPOCH_ENTRY  96u
#define WIRE_MIN_FRAME    64u
#define WIRE_MAX_FRAME    (64u + 16u * 1024u * 1024u + 64u * 1024u)

/* ---- big-endian helpers --------------------------------------------------- */

static inline uint16_t wire_get16(const uint8_t *p)
{
    return (uint16_t)((unsigned)p[0] << 8 | p[1]);
}
static inline uint32_t wire_get32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 |
           p[3];
}
static inline uint64_t wire_get64(const uint8_t *p)
{
    return (uint64_t)wire_get32(p) << 32 | wire_get32(p + 4);
}
static inline void wire_put16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}
static inline void wire_put32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}
static inline void wire_put64(uint8_t *p, uint64_t v)
{
    wire_put32(p, (uint32_t)(v >> 32));
    wire_put32(p + 4, (uint32_t)v);
}

/* ---- a growable output buffer --------------------------------------------- */

typedef struct wire_buf {
    uint8_t *p;
    size_t len, cap;
    int err; /* sticky -ENOMEM */
} wire_buf;

/* Appends n bytes at the end and returns where they go (NULL once out of
 * memory; err is then set and later calls do nothing). */
uint8_t *wire_buf_add(wire_buf *b, size_t n);
void wire_buf_put16(wire_buf *b, uint16_t v);
void wire_buf_put32(wire_buf *b, uint32_t v);
void wire_buf_put64(wire_buf *b, uint64_t v);
void wire_buf_putmem(wire_buf *b, const void *p, size_t n);
void wire_buf_free(wire_buf *b);

/* ---- requests (§10.2) ---------------------------------------------------- */

/* Whether a record type may be appended through tallyd: application types
 * and SNAPSHOT; the other reserved types belong to the library. */
int wire_type_allowed(uint16_t type);

typedef struct wire_request {
    uint8_t version; /* 1 or 2: the reply is sent in the same */
    uint8_t op;
    int has_id;      /* APPEND, version 2: id holds the request id */
    uint8_t id[WIRE_REQ_ID_BYTES];
    /* APPEND: count records in [records, records + records_len), checked */
    uint32_t count;
    const uint8_t *records;
    size_t records_len;
    uint64_t payload_bytes;
    /* RANGE */
    uint64_t from, to;
    uint32_t max;
    uint8_t prefix_len;
    uint8_t prefix[2];
    /* EPOCH */
    uint32_t epoch;
} wire_request;

/* Parses and checks a whole request. 0, or a negative code with *ret_why
 * set to a static description: TALLY_ETOOBIG (message or field over a
 * limit), TALLY_EFORMAT (unknown version or flag), -EOPNOTSUPP (unknown
 * op), -EPROTO (malformed), -EINVAL (a value out of range). */
int wire_parse_request(const void *msg, size_t len, wire_request *ret,
                       const char **ret_why);

/* Fills recs[0..req->count) from a parsed APPEND request (pointers into
 * the message; ts_ns = 0). */
void wire_append_records(const wire_request *req, tally_record_in *recs);

/* Encoders (client side). Returns 0 or -ENOMEM / TALLY_ETOOBIG / -EINVAL. */
int wire_encode_append(wire_buf *b, const tally_record_in *recs, size_t n);
/* The same with a request id (id may be NULL: none). */
int wire_encode_append_id(wire_buf *b, const uint8_t *id,
                          const tally_record_in *recs, size_t n);
int wire_encode_status(wire_buf *b);
int wire_encode_range(wire_buf *b, uint64_t from, uint64_t to, uint32_t max,
                      const uint8_t *prefix, uint8_t prefix_len);
int wire_encode_epoch(wire_buf *b, uint32_t epoch);

/* ---- replies (§10.3) ----------------------------------------------------- */

/* A reply header in the current version, flags 0. */
void wire_reply_header(wire_buf *b, uint8_t op, int32_t status);
/* ... in version (1 or 2; version 1 has no flags). */
void wire_reply_header_v(wire_buf *b, uint8_t version, uint8_t op,
                         int32_t status, uint16_t flags);
/* A whole error reply: header and message (truncated to WIRE_MAX_ERRMSG). */
void wire_reply_error(wire_buf *b, uint8_t op, int32_t status,
                      const char *msg);
void wire_reply_error_v(wire_buf *b, uint8_t version, uint8_t op,
                        int32_t status, const char *msg);

typedef struct wire_reply {
    uint8_t version;
    uint16_t flags; /* WIRE_REPLY_DUPLICATE (version 2) */
    uint8_t op; /* without WIRE_REPLY */
    int32_t status;
    const uint8_t *body;
    size_t body_len;
    /* status < 0: the message (not NUL-terminated) */
    const char *errmsg;
    uint16_t errmsg_len;
} wire_reply;

int wire_parse_reply(const void *msg, size_t len, wire_reply *ret,
                     const char **ret_why);

typedef struct wire_ack {
    uint64_t first_seq;
    uint32_t count;
    uint64_t head_seq;
    uint8_t head_link[TALLY_HASH_BYTES];
    uint64_t durable_seq;
} wire_ack;
#define WIRE_ACK_BYTES (8u + 4u + 8u + 32u + 8u)
void wire_encode_ack(wire_buf *b, const wire_ack *a);
int wire_parse_ack(const wire_reply *r, wire_ack *ret, const char **ret_why);

typedef struct wire_status {
    uint64_t head_seq;
    uint8_t head_link[TALLY_HASH_BYTES];
    uint64_t durable_seq;
    uint64_t published_seq;
    uint64_t appended;       /* records appended since the daemon started */
    uint64_t uptime_ms;
    uint64_t anchor_seq;     /* 0: no anchor known */
    uint64_t anchor_age_ms;  /* UINT64_MAX: no anchor known */
    uint8_t journal_id[TALLY_ID_BYTES];
    uint8_t cipher;
    uint8_t sync;
    uint8_t form;            /* what the publish socket carries */
    char publish_url[WIRE_MAX_URL + 1];
    char pull_url[WIRE_MAX_URL + 1];
    /* version 2: the anchoring (§10.3); zero in a version 1 reply */
    int has_anchoring;       /* the reply carried these fields */
    uint8_t anchoring;       /* WIRE_ANCHORING_* */
    uint8_t backend;         /* 0 none, TALLY_BACKEND_ETH, _FILE */
    int32_t last_error;      /* of a failure streak running now, or 0 */
    uint64_t anchor_block;   /* block of the last anchor (0: unknown) */
    uint8_t anchor_head[TALLY_HASH_BYTES]; /* its link at anchor_seq */
    uint8_t anchor_tx[32];   /* its transaction (zero: unknown) */
    uint64_t anchored_at_ns; /* wall clock of its confirmation (0: unknown) */
    uint64_t lag_records;    /* records not covered by a confirmed anchor */
    uint64_t lag_ms;         /* how long they have waited */
    uint64_t rounds, anchors, failures, consecutive_failures;
    char last_errmsg[WIRE_MAX_ERRMSG + 1];
} wire_status;
#define WIRE_ANCHORING_NONE    0u /* no anchor options */
#define WIRE_ANCHORING_RUNNING 1u /* the checkpointer runs in the daemon */
/* The body in the current version. */
void wire_encode_status_body(wire_buf *b, const wire_status *s);
/* ... in version (1: without the anchoring fields). */
void wire_encode_status_body_v(wire_buf *b, uint8_t version,
                               const wire_status *s);
int wire_parse_status(const wire_reply *r, wire_status *ret,
                      const char **ret_why);

/* RANGE reply body: scanned_to, count, then count length-prefixed
 * publications. Iterate with wire_range_next. */
typedef struct wire_range {
    uint64_t scanned_to;
    uint32_t count;
    const uint8_t *p;
    size_t left;
    uint32_t seen;
} wire_range;
int wire_parse_range(const wire_reply *r, wire_range *ret,
                     const char **ret_why);
/* 1: *ret_pub and *ret_len are the next publication; 0: done; <0: malformed. */
int wire_range_next(wire_range *r, const uint8_t **ret_pub, size_t *ret_len,
                    const char **ret_why);

/* EPOCH reply body: the 96-byte epoch entry of tally.meta (FORMAT.md
 * §3.2), public by design (the data key in it is wrapped). */

/* ---- publications (§10.4) ------------------------------------------------- */

typedef struct wire_pub {
    uint16_t type;
    uint8_t form;
    uint64_t seq;
    uint64_t ts_ns;
    uint64_t prev_same_type; /* 0: unknown */
    const uint8_t *record_hash;
    const uint8_t *link;
    /* PLAIN */
    const uint8_t *key;
    uint16_t key_len;
    const uint8_t *payload;
    uint32_t payload_len;
    /* STORED */
    uint32_t epoch;
    uint64_t segment_no;
    const uint8_t *salt;      /* 16 bytes */
    const uint8_t *prev_link; /* 32 bytes */
    const uint8_t *frame;
    uint32_t frame_len;
} wire_pub;

/* Encodes a publication's fixed header (the tail follows). */
void wire_pub_header(wire_buf *b, uint16_t type, uint8_t form, uint64_t seq,
                     uint64_t ts_ns, uint64_t prev_same_type,
                     const uint8_t record_hash[32], const uint8_t link[32]);
int wire_parse_pub(const void *msg, size_t len, wire_pub *ret,
                   const char **ret_why);

#endif
