/*
 * wire.c — encoding and checked parsing of the tallyd wire protocol
 * (docs/FORMAT.md §10). The parsers are the daemon's whole attack surface
 * on its sockets: they read nothing before checking that it is there, and
 * refuse trailing bytes, nonzero reserved fields and unknown versions, so
 * that a message has exactly one meaning. fuzz/fuzz-wire.c drives them.
 */
#include "wire.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* ---- buffer ------------------------------------------------------------- */

uint8_t *wire_buf_add(wire_buf *b, size_t n)
{
    uint8_t *at;

    if (b->err)
        return NULL;
    if (n > SIZE_MAX / 2 - b->len) {
        b->err = -ENOMEM;
        return NULL;
    }
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        uint8_t *p;

        while (cap < b->len + n)
            cap *= 2;
        p = realloc(b->p, cap);
        if (!p) {
            b->err = -ENOMEM;
            return NULL;
        }
        b->p = p;
        b->cap = cap;
    }
    at = b->p + b->len;
    b->len += n;
    return at;
}

void wire_buf_put16(wire_buf *b, uint16_t v)
{
    uint8_t *p = wire_buf_add(b, 2);

    if (p)
        wire_put16(p, v);
}

void wire_buf_put32(wire_buf *b, uint32_t v)
{
    uint8_t *p = wire_buf_add(b, 4);

    if (p)
        wire_put32(p, v);
}

void wire_buf_put64(wire_buf *b, uint64_t v)
{
    uint8_t *p = wire_buf_add(b, 8);

    if (p)
        wire_put64(p, v);
}

void wire_buf_putmem(wire_buf *b, const void *src, size_t n)
{
    uint8_t *p = wire_buf_add(b, n);

    if (p && n)
        memcpy(p, src, n);
}

void wire_buf_free(wire_buf *b)
{
    free(b->p);
    b->p = NULL;
    b->len = b->cap = 0;
    b->err = 0;
}

/* ---- requests ------------------------------------------------------------ */

int wire_type_allowed(uint16_t type)
{
    return type < TALLY_TYPE_RESERVED || type == TALLY_TYPE_SNAPSHOT;
}

#define FAIL(code, msg)        \
    do {                       \
        *ret_why = (msg);      \
        return (code);         \
    } while (0)

static int parse_append(const uint8_t *p, size_t len, wire_request *r,
                        const char **ret_why)
{
    uint32_t i, count;
    size_t pos = 4;
    uint64_t bytes = 0;

    if (len < 4)
        FAIL(-EPROTO, "append: truncated count");
    count = wire_get32(p);
    if (count == 0)
        FAIL(-EINVAL, "append: zero records");
    if (count > WIRE_MAX_BATCH)
        FAIL(TALLY_ETOOBIG, "append: more records than the batch limit");
    for (i = 0; i < count; i++) {
        uint16_t type, key_len;
        uint32_t payload_len;

        if (len - pos < WIRE_RECORD_HEADER)
            FAIL(-EPROTO, "append: truncated record header");
        type = wire_get16(p + pos);
        key_len = wire_get16(p + pos + 2);
        payload_len = wire_get32(p + pos + 4);
        pos += WIRE_RECORD_HEADER;
        if (!wire_type_allowed(type))
            FAIL(-EINVAL, "append: reserved record type");
        if (key_len > TALLY_MAX_RKEY)
            FAIL(TALLY_ETOOBIG, "append: record key over 1024 bytes");
        if (payload_len > TALLY_MAX_PAYLOAD)
            FAIL(TALLY_ETOOBIG, "append: payload over 16 MiB");
        if (len - pos < key_len)
            FAIL(-EPROTO, "append: truncated record key");
        pos += key_len;
        if (len - pos < payload_len)
            FAIL(-EPROTO, "append: truncated payload");
        pos += payload_len;
        bytes += payload_len;
    }
    if (pos != len)
        FAIL(-EPROTO, "append: trailing bytes after the last record");
    r->count = count;
    r->records = p + 4;
    r->records_len = len - 4;
    r->payload_bytes = bytes;
    return 0;
}

int wire_parse_request(const void *msg, size_t len, wire_request *ret,
                       const char **ret_why)
{
    const uint8_t *p = msg;
    wire_request r;
    int rc;

    uint16_t flags;

    memset(&r, 0, sizeof r);
    if (len > WIRE_MAX_REQUEST)
        FAIL(TALLY_ETOOBIG, "request over the size limit");
    if (len < WIRE_REQ_HEADER)
        FAIL(-EPROTO, "truncated request header");
    if (p[0] < WIRE_VERSION_MIN || p[0] > WIRE_VERSION)
        FAIL(TALLY_EFORMAT, "unsupported wire version");
    r.version = p[0];
    flags = wire_get16(p + 2);
    /* version 1 has no flags; version 2 knows one */
    if (flags & ~(r.version >= 2 ? WIRE_REQ_ID : 0u))
        FAIL(TALLY_EFORMAT, "unknown request flags");
    r.op = p[1];
    p += WIRE_REQ_HEADER;
    len -= WIRE_REQ_HEADER;
    if (flags & WIRE_REQ_ID) {
        if (r.op != WIRE_OP_APPEND)
            FAIL(-EPROTO, "a request id on a request other than APPEND");
        if (len < WIRE_REQ_ID_BYTES)
            FAIL(-EPROTO, "truncated request id");
        r.has_id = 1;
        memcpy(r.id, p, WIRE_REQ_ID_BYTES);
        p += WIRE_REQ_ID_BYTES;
        len -= WIRE_REQ_ID_BYTES;
    }
    switch (r.op) {
    case WIRE_OP_APPEND:
        rc = parse_append(p, len, &r, ret_why);
        if (rc < 0)
            return rc;
        break;
    case WIRE_OP_STATUS:
        if (len != 0)
            FAIL(-EPROTO, "status: unexpected body");
        break;
    case WIRE_OP_RANGE:
        if (len != WIRE_RANGE_BODY)
            FAIL(-EPROTO, "range: body is not 24 bytes");
        r.from = wire_get64(p);
        r.to = wire_get64(p + 8);
        r.max = wire_get32(p + 16);
        r.prefix_len = p[20];
        if (p[21] != 0)
            FAIL(-EPROTO, "range: reserved byte not zero");
        if (r.prefix_len > 2)
            FAIL(-EINVAL, "range: type prefix longer than 2 bytes");
        memcpy(r.prefix, p + 22, 2);
        if ((r.prefix_len < 2 && r.prefix[1] != 0) ||
            (r.prefix_len < 1 && r.prefix[0] != 0))
            FAIL(-EPROTO, "range: unused prefix bytes not zero");
        if (r.from == 0)
            FAIL(-EINVAL, "range: from is 0 (seqs start at 1)");
        if (r.to < r.from)
            FAIL(-EINVAL, "range: to is below from");
        break;
    case WIRE_OP_EPOCH:
        if (len != 4)
            FAIL(-EPROTO, "epoch: body is not 4 bytes");
        r.epoch = wire_get32(p);
        if (r.epoch == 0)
            FAIL(-EINVAL, "epoch: epochs start at 1");
        break;
    default:
        FAIL(-EOPNOTSUPP, "unknown request op");
    }
    *ret = r;
    return 0;
}

void wire_append_records(const wire_request *req, tally_record_in *recs)
{
    const uint8_t *p = req->records;
    uint32_t i;

    for (i = 0; i < req->count; i++) {
        tally_record_in *r = &recs[i];

        r->type = wire_get16(p);
        r->key_len = wire_get16(p + 2);
        r->payload_len = wire_get32(p + 4);
        p += WIRE_RECORD_HEADER;
        r->key = r->key_len ? p : NULL;
        p += r->key_len;
        r->payload = p;
        p += r->payload_len;
        r->ts_ns = 0;
    }
}

static void req_header(wire_buf *b, uint8_t op, uint16_t flags)
{
    uint8_t *p = wire_buf_add(b, WIRE_REQ_HEADER);

    if (p) {
        p[0] = WIRE_VERSION;
        p[1] = op;
        wire_put16(p + 2, flags);
    }
}

int wire_encode_append(wire_buf *b, const tally_record_in *recs, size_t n)
{
    return wire_encode_append_id(b, NULL, recs, n);
}

int wire_encode_append_id(wire_buf *b, const uint8_t *id,
                          const tally_record_in *recs, size_t n)
{
    size_t i, total = WIRE_REQ_HEADER + 4 + (id ? WIRE_REQ_ID_BYTES : 0);

    if (n == 0)
        return -EINVAL;
    if (n > WIRE_MAX_BATCH)
        return TALLY_ETOOBIG;
    for (i = 0; i < n; i++) {
        if (!wire_type_allowed(recs[i].type))
            return -EINVAL;
        if (recs[i].key_len > TALLY_MAX_RKEY ||
            recs[i].payload_len > TALLY_MAX_PAYLOAD)
            return TALLY_ETOOBIG;
        total += WIRE_RECORD_HEADER + recs[i].key_len + recs[i].payload_len;
        if (total > WIRE_MAX_REQUEST)
            return TALLY_ETOOBIG;
    }
    req_header(b, WIRE_OP_APPEND, id ? WIRE_REQ_ID : 0);
    if (id)
        wire_buf_putmem(b, id, WIRE_REQ_ID_BYTES);
    wire_buf_put32(b, (uint32_t)n);
    for (i = 0; i < n; i++) {
        wire_buf_put16(b, recs[i].type);
        wire_buf_put16(b, (uint16_t)recs[i].key_len);
        wire_buf_put32(b, (uint32_t)recs[i].payload_len);
        wire_buf_putmem(b, recs[i].key, recs[i].key_len);
        wire_buf_putmem(b, recs[i].payload, recs[i].payload_len);
    }
    return b->err;
}

int wire_encode_status(wire_buf *b)
{
    req_header(b, WIRE_OP_STATUS, 0);
    return b->err;
}

int wire_encode_range(wire_buf *b, uint64_t from, uint64_t to, uint32_t max,
                      const uint8_t *prefix, uint8_t prefix_len)
{
    uint8_t *p;

    if (from == 0 || to < from || prefix_len > 2)
        return -EINVAL;
    req_header(b, WIRE_OP_RANGE, 0);
    p = wire_buf_add(b, WIRE_RANGE_BODY);
    if (p) {
        memset(p, 0, WIRE_RANGE_BODY);
        wire_put64(p, from);
        wire_put64(p + 8, to);
        wire_put32(p + 16, max);
        p[20] = prefix_len;
        if (prefix_len)
            memcpy(p + 22, prefix, prefix_len);
    }
    return b->err;
}

int wire_encode_epoch(wire_buf *b, uint32_t epoch)
{
    if (epoch == 0)
        return -EINVAL;
    req_header(b, WIRE_OP_EPOCH, 0);
    wire_buf_put32(b, epoch);
    return b->err;
}

/* ---- replies ------------------------------------------------------------- */

void wire_reply_header_v(wire_buf *b, uint8_t version, uint8_t op,
                         int32_t status, uint16_t flags)
{
    uint8_t *p = wire_buf_add(b, WIRE_REPLY_HEADER);

    if (p) {
        p[0] = version;
        p[1] = (uint8_t)(op | WIRE_REPLY);
        wire_put16(p + 2, version >= 2 ? flags : 0);
        wire_put32(p + 4, (uint32_t)status);
    }
}

void wire_reply_header(wire_buf *b, uint8_t op, int32_t status)
{
    wire_reply_header_v(b, WIRE_VERSION, op, status, 0);
}

void wire_reply_error_v(wire_buf *b, uint8_t version, uint8_t op,
                        int32_t status, const char *msg)
{
    size_t n = msg ? strlen(msg) : 0;

    if (n > WIRE_MAX_ERRMSG)
        n = WIRE_MAX_ERRMSG;
    wire_reply_header_v(b, version, op, status, 0);
    wire_buf_put16(b, (uint16_t)n);
    wire_buf_putmem(b, msg, n);
}

void wire_reply_error(wire_buf *b, uint8_t op, int32_t status, const char *msg)
{
    wire_reply_error_v(b, WIRE_VERSION, op, status, msg);
}

int wire_parse_reply(const void *msg, size_t len, wire_reply *ret,
                     const char **ret_why)
{
    const uint8_t *p = msg;
    wire_reply r;

    memset(&r, 0, sizeof r);
    if (len < WIRE_REPLY_HEADER)
        FAIL(-EPROTO, "truncated reply header");
    if (p[0] < WIRE_VERSION_MIN || p[0] > WIRE_VERSION)
        FAIL(TALLY_EFORMAT, "unsupported wire version in reply");
    if (!(p[1] & WIRE_REPLY))
        FAIL(-EPROTO, "reply op without the reply bit");
    r.version = p[0];
    r.flags = wire_get16(p + 2);
    if (r.flags & ~(r.version >= 2 ? WIRE_REPLY_DUPLICATE : 0u))
        FAIL(TALLY_EFORMAT, "unknown reply flags");
    r.op = (uint8_t)(p[1] & ~WIRE_REPLY);
    r.status = (int32_t)wire_get32(p + 4);
    if (r.status > 0)
        FAIL(-EPROTO, "positive reply status");
    if ((r.flags & WIRE_REPLY_DUPLICATE) &&
        (r.op != WIRE_OP_APPEND || r.status != 0))
        FAIL(-EPROTO, "duplicate flag on a reply other than an APPEND ack");
    r.body = p + WIRE_REPLY_HEADER;
    r.body_len = len - WIRE_REPLY_HEADER;
    if (r.status < 0) {
        if (r.body_len < 2)
            FAIL(-EPROTO, "error reply: truncated message length");
        r.errmsg_len = wire_get16(r.body);
        if (r.errmsg_len > WIRE_MAX_ERRMSG ||
            r.body_len != 2u + r.errmsg_len)
            FAIL(-EPROTO, "error reply: bad message length");
        r.errmsg = (const char *)r.body + 2;
    }
    *ret = r;
    return 0;
}

void wire_encode_ack(wire_buf *b, const wire_ack *a)
{
    wire_buf_put64(b, a->first_seq);
    wire_buf_put32(b, a->count);
    wire_buf_put64(b, a->head_seq);
    wire_buf_putmem(b, a->head_link, TALLY_HASH_BYTES);
    wire_buf_put64(b, a->durable_seq);
}

int wire_parse_ack(const wire_reply *r, wire_ack *ret, const char **ret_why)
{
    const uint8_t *p = r->body;
    wire_ack a;

    if (r->op != WIRE_OP_APPEND || r->status != 0)
        FAIL(-EPROTO, "not an append acknowledgement");
    if (r->body_len != WIRE_ACK_BYTES)
        FAIL(-EPROTO, "append reply: wrong body length");
    a.first_seq = wire_get64(p);
    a.count = wire_get32(p + 8);
    a.head_seq = wire_get64(p + 12);
    memcpy(a.head_link, p + 20, TALLY_HASH_BYTES);
    a.durable_seq = wire_get64(p + 52);
    /* the records acknowledged lie at or below the head */
    if (a.first_seq == 0 || a.count == 0 || a.head_seq < a.count ||
        a.first_seq > a.head_seq - a.count + 1)
        FAIL(-EPROTO, "append reply: inconsistent seqs");
    *ret = a;
    return 0;
}

static void put_str(wire_buf *b, const char *s)
{
    size_t n = strlen(s);

    if (n > WIRE_MAX_URL)
        n = WIRE_MAX_URL;
    wire_buf_put16(b, (uint16_t)n);
    wire_buf_putmem(b, s, n);
}

#define STATUS_FIXED (8u + 32u + 6u * 8u + 32u + 4u) /* 124 */
/* version 2: the anchoring, after the URLs (FORMAT.md §10.3) */
#define STATUS_ANCHOR_FIXED 136u

void wire_encode_status_body(wire_buf *b, const wire_status *s)
{
    wire_encode_status_body_v(b, WIRE_VERSION, s);
}

void wire_encode_status_body_v(wire_buf *b, uint8_t version,
                               const wire_status *s)
{
    uint8_t *p;
    size_t n;

    wire_buf_put64(b, s->head_seq);
    wire_buf_putmem(b, s->head_link, TALLY_HASH_BYTES);
    wire_buf_put64(b, s->durable_seq);
    wire_buf_put64(b, s->published_seq);
    wire_buf_put64(b, s->appended);
    wire_buf_put64(b, s->uptime_ms);
    wire_buf_put64(b, s->anchor_seq);
    wire_buf_put64(b, s->anchor_age_ms);
    wire_buf_putmem(b, s->journal_id, TALLY_ID_BYTES);
    p = wire_buf_add(b, 4);
    if (p) {
        p[0] = s->cipher;
        p[1] = s->sync;
        p[2] = s->form;
        p[3] = 0;
    }
    put_str(b, s->publish_url);
    put_str(b, s->pull_url);
    if (version < 2)
        return;
    p = wire_buf_add(b, STATUS_ANCHOR_FIXED);
    if (p) {
        p[0] = s->anchoring;
        p[1] = s->backend;
        wire_put16(p + 2, 0);
        wire_put32(p + 4, (uint32_t)s->last_error);
        wire_put64(p + 8, s->anchor_block);
        memcpy(p + 16, s->anchor_head, 32);
        memcpy(p + 48, s->anchor_tx, 32);
        wire_put64(p + 80, s->anchored_at_ns);
        wire_put64(p + 88, s->lag_records);
        wire_put64(p + 96, s->lag_ms);
        wire_put64(p + 104, s->rounds);
        wire_put64(p + 112, s->anchors);
        wire_put64(p + 120, s->failures);
        wire_put64(p + 128, s->consecutive_failures);
    }
    n = strnlen(s->last_errmsg, sizeof s->last_errmsg);
    if (n > WIRE_MAX_ERRMSG)
        n = WIRE_MAX_ERRMSG;
    wire_buf_put16(b, (uint16_t)n);
    wire_buf_putmem(b, s->last_errmsg, n);
}

static int get_str(const uint8_t **p, size_t *left, char *out)
{
    uint16_t n;

    if (*left < 2)
        return -1;
    n = wire_get16(*p);
    if (n > WIRE_MAX_URL || *left - 2 < n)
        return -1;
    memcpy(out, *p + 2, n);
    out[n] = '\0';
    if (memchr(out, '\0', n))
        return -1;
    *p += 2u + n;
    *left -= 2u + n;
    return 0;
}

int wire_parse_status(const wire_reply *r, wire_status *ret,
                      const char **ret_why)
{
    const uint8_t *p = r->body;
    size_t left;
    wire_status s;

    if (r->op != WIRE_OP_STATUS || r->status != 0)
        FAIL(-EPROTO, "not a status reply");
    if (r->body_len < STATUS_FIXED)
        FAIL(-EPROTO, "status reply: truncated");
    memset(&s, 0, sizeof s);
    s.head_seq = wire_get64(p);
    memcpy(s.head_link, p + 8, 32);
    s.durable_seq = wire_get64(p + 40);
    s.published_seq = wire_get64(p + 48);
    s.appended = wire_get64(p + 56);
    s.uptime_ms = wire_get64(p + 64);
    s.anchor_seq = wire_get64(p + 72);
    s.anchor_age_ms = wire_get64(p + 80);
    memcpy(s.journal_id, p + 88, 32);
    s.cipher = p[120];
    s.sync = p[121];
    s.form = p[122];
    if (p[123] != 0)
        FAIL(-EPROTO, "status reply: reserved byte not zero");
    p += STATUS_FIXED;
    left = r->body_len - STATUS_FIXED;
    if (get_str(&p, &left, s.publish_url) < 0 ||
        get_str(&p, &left, s.pull_url) < 0)
        FAIL(-EPROTO, "status reply: bad URL field");
    if (r->version >= 2) {
        uint16_t n;

        if (left < STATUS_ANCHOR_FIXED + 2u)
            FAIL(-EPROTO, "status reply: truncated anchoring fields");
        s.has_anchoring = 1;
        s.anchoring = p[0];
        s.backend = p[1];
        if (s.anchoring > WIRE_ANCHORING_RUNNING || s.backend > 2 ||
            wire_get16(p + 2) != 0)
            FAIL(-EPROTO, "status reply: bad anchoring state");
        s.last_error = (int32_t)wire_get32(p + 4);
        if (s.last_error > 0)
            FAIL(-EPROTO, "status reply: positive error code");
        s.anchor_block = wire_get64(p + 8);
        memcpy(s.anchor_head, p + 16, 32);
        memcpy(s.anchor_tx, p + 48, 32);
        s.anchored_at_ns = wire_get64(p + 80);
        s.lag_records = wire_get64(p + 88);
        s.lag_ms = wire_get64(p + 96);
        s.rounds = wire_get64(p + 104);
        s.anchors = wire_get64(p + 112);
        s.failures = wire_get64(p + 120);
        s.consecutive_failures = wire_get64(p + 128);
        n = wire_get16(p + STATUS_ANCHOR_FIXED);
        p += STATUS_ANCHOR_FIXED + 2u;
        left -= STATUS_ANCHOR_FIXED + 2u;
        if (n > WIRE_MAX_ERRMSG || left != n)
            FAIL(-EPROTO, "status reply: bad error message length");
        memcpy(s.last_errmsg, p, n);
        s.last_errmsg[n] = '\0';
        left = 0;
    }
    if (left != 0)
        FAIL(-EPROTO, "status reply: trailing bytes");
    *ret = s;
    return 0;
}

int wire_parse_range(const wire_reply *r, wire_range *ret,
                     const char **ret_why)
{
    wire_range g;

    if (r->op != WIRE_OP_RANGE || r->status != 0)
        FAIL(-EPROTO, "not a range reply");
    if (r->body_len < 12)
        FAIL(-EPROTO, "range reply: truncated");
    memset(&g, 0, sizeof g);
    g.scanned_to = wire_get64(r->body);
    g.count = wire_get32(r->body + 8);
    g.p = r->body + 12;
    g.left = r->body_len - 12;
    if (g.count > WIRE_RANGE_MAX_RECORDS)
        FAIL(-EPROTO, "range reply: too many records");
    *ret = g;
    return 0;
}

int wire_range_next(wire_range *r, const uint8_t **ret_pub, size_t *ret_len,
                    const char **ret_why)
{
    uint32_t n;

    if (r->seen == r->count) {
        if (r->left != 0)
            FAIL(-EPROTO, "range reply: trailing bytes");
        return 0;
    }
    if (r->left < 4)
        FAIL(-EPROTO, "range reply: truncated length");
    n = wire_get32(r->p);
    if (r->left - 4 < n)
        FAIL(-EPROTO, "range reply: truncated publication");
    *ret_pub = r->p + 4;
    *ret_len = n;
    r->p += 4u + n;
    r->left -= 4u + n;
    r->seen++;
    return 1;
}

/* ---- publications -------------------------------------------------------- */

void wire_pub_header(wire_buf *b, uint16_t type, uint8_t form, uint64_t seq,
                     uint64_t ts_ns, uint64_t prev_same_type,
                     const uint8_t record_hash[32], const uint8_t link[32])
{
    uint8_t *p = wire_buf_add(b, WIRE_PUB_HEADER);

    if (!p)
        return;
    wire_put16(p, type);
    p[2] = WIRE_PUB_VERSION;
    p[3] = form;
    wire_put64(p + 4, seq);
    wire_put64(p + 12, ts_ns);
    wire_put64(p + 20, prev_same_type);
    if (record_hash)
        memcpy(p + 28, record_hash, 32);
    else
        memset(p + 28, 0, 32);
    memcpy(p + 60, link, 32);
}

int wire_parse_pub(const void *msg, size_t len, wire_pub *ret,
                   const char **ret_why)
{
    const uint8_t *p = msg;
    wire_pub u;
    size_t left;

    memset(&u, 0, sizeof u);
    if (len < WIRE_PUB_HEADER)
        FAIL(-EPROTO, "publication: truncated header");
    if (p[2] != WIRE_PUB_VERSION)
        FAIL(TALLY_EFORMAT, "publication: unsupported wire version");
    u.type = wire_get16(p);
    u.form = p[3];
    u.seq = wire_get64(p + 4);
    u.ts_ns = wire_get64(p + 12);
    u.prev_same_type = wire_get64(p + 20);
    u.record_hash = p + 28;
    u.link = p + 60;
    p += WIRE_PUB_HEADER;
    left = len - WIRE_PUB_HEADER;
    switch (u.form) {
    case WIRE_FORM_PLAIN:
        if (u.type == WIRE_TICK_TYPE)
            FAIL(-EPROTO, "publication: record with the tick type");
        if (u.seq == 0)
            FAIL(-EPROTO, "publication: seq 0");
        if (u.prev_same_type >= u.seq)
            FAIL(-EPROTO, "publication: previous seq not below seq");
        if (left < 6)
            FAIL(-EPROTO, "publication: truncated key/payload lengths");
        u.key_len = wire_get16(p);
        u.payload_len = wire_get32(p + 2);
        if (u.key_len > TALLY_MAX_RKEY || u.payload_len > TALLY_MAX_PAYLOAD)
            FAIL(TALLY_ETOOBIG, "publication: key or payload over the limit");
        if (left - 6 != (size_t)u.key_len + u.payload_len)
            FAIL(-EPROTO, "publication: lengths disagree with the size");
        u.key = p + 6;
        u.payload = p + 6 + u.key_len;
        break;
    case WIRE_FORM_STORED:
        if (u.type == WIRE_TICK_TYPE)
            FAIL(-EPROTO, "publication: record with the tick type");
        if (u.seq == 0)
            FAIL(-EPROTO, "publication: seq 0");
        if (u.prev_same_type >= u.seq)
            FAIL(-EPROTO, "publication: previous seq not below seq");
        if (left < WIRE_STORED_CTX)
            FAIL(-EPROTO, "publication: truncated stored context");
        u.epoch = wire_get32(p);
        u.segment_no = wire_get64(p + 4);
        u.salt = p + 12;
        u.prev_link = p + 28;
        u.frame_len = wire_get32(p + 60);
        if (u.frame_len < WIRE_MIN_FRAME || u.frame_len > WIRE_MAX_FRAME)
            FAIL(-EPROTO, "publication: frame length out of range");
        if (left - WIRE_STORED_CTX != u.frame_len)
            FAIL(-EPROTO, "publication: frame length disagrees with the size");
        u.frame = p + WIRE_STORED_CTX;
        break;
    case WIRE_FORM_TICK:
        if (u.type != WIRE_TICK_TYPE)
            FAIL(-EPROTO, "tick: wrong type");
        if (left != 0)
            FAIL(-EPROTO, "tick: trailing bytes");
        break;
    default:
        FAIL(-EPROTO, "publication: unknown form");
    }
    *ret = u;
    return 0;
}
