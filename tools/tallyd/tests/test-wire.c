/*
 * test-wire.c — the tallyd wire parsers (docs/FORMAT.md §10): round trips,
 * every truncation and every byte flip of valid messages, limits, and a
 * quick random run (the libFuzzer harness in ../fuzz goes further).
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <sodium.h>

#include "wire.h"

static void encode_three(wire_buf *b)
{
    tally_record_in r[3] = {
        { .type = 1, .key = "k1", .key_len = 2, .payload = "one",
          .payload_len = 3 },
        { .type = 0xFEFF, .payload = "", .payload_len = 0 },
        { .type = TALLY_TYPE_SNAPSHOT, .key = "snap", .key_len = 4,
          .payload = "state", .payload_len = 5 },
    };

    assert_int_equal(wire_encode_append(b, r, 3), 0);
}

static void test_append_roundtrip(void **state)
{
    wire_buf b = { 0 };
    wire_request w;
    tally_record_in out[3];
    const char *why = NULL;

    (void)state;
    encode_three(&b);
    /* version, op, flags; then the count, big-endian */
    assert_int_equal(b.p[0], WIRE_VERSION);
    assert_int_equal(b.p[1], WIRE_OP_APPEND);
    assert_int_equal(wire_get32(b.p + 4), 3);
    assert_int_equal(wire_parse_request(b.p, b.len, &w, &why), 0);
    assert_int_equal(w.op, WIRE_OP_APPEND);
    assert_int_equal(w.count, 3);
    assert_int_equal(w.payload_bytes, 8);
    wire_append_records(&w, out);
    assert_int_equal(out[0].type, 1);
    assert_int_equal(out[0].key_len, 2);
    assert_memory_equal(out[0].key, "k1", 2);
    assert_memory_equal(out[0].payload, "one", 3);
    assert_int_equal(out[1].type, 0xFEFF);
    assert_null(out[1].key);
    assert_int_equal(out[1].payload_len, 0);
    assert_int_equal(out[2].type, TALLY_TYPE_SNAPSHOT);
    assert_memory_equal(out[2].payload, "state", 5);
    wire_buf_free(&b);
}

/* Every proper prefix of a valid request is refused, never read past. */
static void test_truncations(void **state)
{
    wire_buf m[5] = { { 0 } };
    tally_record_in one = { .type = 2, .payload = "x", .payload_len = 1 };
    const char *why;
    wire_request w;
    size_t k, n;

    (void)state;
    encode_three(&m[0]);
    assert_int_equal(wire_encode_status(&m[1]), 0);
    assert_int_equal(wire_encode_range(&m[2], 5, 9, 0,
                                       (const uint8_t *)"\x00\x07", 2), 0);
    assert_int_equal(wire_encode_epoch(&m[3], 1), 0);
    assert_int_equal(wire_encode_append_id(&m[4], (const uint8_t *)
                                           "0123456789abcdef", &one, 1), 0);
    for (k = 0; k < 5; k++) {
        assert_int_equal(wire_parse_request(m[k].p, m[k].len, &w, &why), 0);
        for (n = 0; n < m[k].len; n++) {
            /* a copy of exactly n bytes, so ASan sees any overread */
            uint8_t *p = malloc(n ? n : 1);

            memcpy(p, m[k].p, n);
            why = NULL;
            assert_true(wire_parse_request(p, n, &w, &why) < 0);
            assert_non_null(why);
            free(p);
        }
        wire_buf_free(&m[k]);
    }
}

/* Any byte of a valid append changed to any value: refused, or parsed
 * into records that lie inside the message. */
static void test_byte_flips(void **state)
{
    wire_buf b = { 0 };
    size_t i;
    unsigned v;

    (void)state;
    encode_three(&b);
    for (i = 0; i < b.len; i++) {
        for (v = 0; v < 256; v++) {
            uint8_t *p = malloc(b.len);
            wire_request w;
            const char *why;

            memcpy(p, b.p, b.len);
            p[i] = (uint8_t)v;
            if (wire_parse_request(p, b.len, &w, &why) == 0 &&
                w.op == WIRE_OP_APPEND) {
                tally_record_in *r = calloc(w.count, sizeof *r);
                size_t sum = 4;

                wire_append_records(&w, r);
                for (uint32_t k = 0; k < w.count; k++) {
                    assert_true(wire_type_allowed(r[k].type));
                    sum += 8 + r[k].key_len + r[k].payload_len;
                    assert_true((const uint8_t *)r[k].payload >= p &&
                                (const uint8_t *)r[k].payload +
                                        r[k].payload_len <= p + b.len);
                }
                assert_int_equal(sum + WIRE_REQ_HEADER +
                                     (w.has_id ? WIRE_REQ_ID_BYTES : 0),
                                 b.len);
                free(r);
            }
            free(p);
        }
    }
    wire_buf_free(&b);
}

static void test_limits(void **state)
{
    uint8_t m[64];
    wire_request w;
    const char *why;
    tally_record_in r = { .type = 1, .payload = "x", .payload_len = 1 };
    wire_buf b = { 0 };

    (void)state;
    memset(m, 0, sizeof m);
    m[0] = WIRE_VERSION;
    m[1] = WIRE_OP_APPEND;
    /* zero records */
    assert_int_equal(wire_parse_request(m, 8, &w, &why), -EINVAL);
    /* more than the batch limit */
    wire_put32(m + 4, WIRE_MAX_BATCH + 1);
    assert_int_equal(wire_parse_request(m, 8, &w, &why), TALLY_ETOOBIG);
    /* one record whose key is over the limit */
    wire_put32(m + 4, 1);
    wire_put16(m + 8, 1);
    wire_put16(m + 10, TALLY_MAX_RKEY + 1);
    assert_int_equal(wire_parse_request(m, 16, &w, &why), TALLY_ETOOBIG);
    /* a payload over 16 MiB */
    wire_put16(m + 10, 0);
    wire_put32(m + 12, TALLY_MAX_PAYLOAD + 1);
    assert_int_equal(wire_parse_request(m, 16, &w, &why), TALLY_ETOOBIG);
    /* a payload longer than the message */
    wire_put32(m + 12, 100);
    assert_int_equal(wire_parse_request(m, 64, &w, &why), -EPROTO);
    /* reserved types, except SNAPSHOT */
    wire_put32(m + 12, 0);
    wire_put16(m + 8, TALLY_TYPE_CHECKPOINT);
    assert_int_equal(wire_parse_request(m, 16, &w, &why), -EINVAL);
    wire_put16(m + 8, TALLY_TYPE_RESERVED);
    assert_int_equal(wire_parse_request(m, 16, &w, &why), -EINVAL);
    wire_put16(m + 8, TALLY_TYPE_SNAPSHOT);
    assert_int_equal(wire_parse_request(m, 16, &w, &why), 0);
    /* the whole message over the limit, before anything else is read */
    assert_int_equal(wire_parse_request(m, WIRE_MAX_REQUEST + 1, &w, &why),
                     TALLY_ETOOBIG);
    /* version, flags, op */
    m[0] = WIRE_VERSION + 1;
    assert_int_equal(wire_parse_request(m, 16, &w, &why), TALLY_EFORMAT);
    m[0] = 0;
    assert_int_equal(wire_parse_request(m, 16, &w, &why), TALLY_EFORMAT);
    m[0] = WIRE_VERSION;
    m[2] = 1;
    assert_int_equal(wire_parse_request(m, 16, &w, &why), TALLY_EFORMAT);
    m[2] = 0;
    m[1] = 0;
    assert_int_equal(wire_parse_request(m, 16, &w, &why), -EOPNOTSUPP);
    /* range: to below from, from 0, prefix too long, stray prefix byte */
    assert_int_equal(wire_encode_range(&b, 1, 2, 0, NULL, 0), 0);
    wire_put64(b.p + 4 + 8, 0);
    assert_int_equal(wire_parse_request(b.p, b.len, &w, &why), -EINVAL);
    wire_put64(b.p + 4, 0);
    assert_int_equal(wire_parse_request(b.p, b.len, &w, &why), -EINVAL);
    wire_put64(b.p + 4, 1);
    wire_put64(b.p + 12, 1);
    b.p[4 + 20] = 3;
    assert_int_equal(wire_parse_request(b.p, b.len, &w, &why), -EINVAL);
    b.p[4 + 20] = 1;
    b.p[4 + 23] = 9;
    assert_int_equal(wire_parse_request(b.p, b.len, &w, &why), -EPROTO);
    wire_buf_free(&b);
    /* encoders refuse what the parser would */
    r.type = TALLY_TYPE_COMPACTION;
    assert_int_equal(wire_encode_append(&b, &r, 1), -EINVAL);
    r.type = 1;
    r.payload_len = TALLY_MAX_PAYLOAD + 1;
    assert_int_equal(wire_encode_append(&b, &r, 1), TALLY_ETOOBIG);
    assert_int_equal(wire_encode_append(&b, &r, 0), -EINVAL);
    wire_buf_free(&b);
}

static void test_replies(void **state)
{
    wire_buf b = { 0 };
    wire_reply r;
    wire_ack a = { 10, 3, 20, { 0 }, 20 }, a2;
    wire_status s, s2;
    const char *why;

    (void)state;
    wire_reply_error(&b, WIRE_OP_APPEND, TALLY_ETOOBIG, "too big");
    assert_int_equal(wire_parse_reply(b.p, b.len, &r, &why), 0);
    assert_int_equal(r.status, TALLY_ETOOBIG);
    assert_int_equal(r.errmsg_len, 7);
    assert_memory_equal(r.errmsg, "too big", 7);
    /* a message length past the end */
    b.p[9] = 50;
    assert_int_equal(wire_parse_reply(b.p, b.len, &r, &why), -EPROTO);
    b.len = 0;

    memset(a.head_link, 0xAB, 32);
    wire_reply_header(&b, WIRE_OP_APPEND, 0);
    wire_encode_ack(&b, &a);
    assert_int_equal(wire_parse_reply(b.p, b.len, &r, &why), 0);
    assert_int_equal(wire_parse_ack(&r, &a2, &why), 0);
    assert_int_equal(a2.first_seq, 10);
    assert_int_equal(a2.count, 3);
    assert_int_equal(a2.head_seq, 20);
    assert_memory_equal(a2.head_link, a.head_link, 32);
    /* records past the head cannot have been acknowledged */
    wire_put64(b.p + 8, 19);
    assert_int_equal(wire_parse_reply(b.p, b.len, &r, &why), 0);
    assert_int_equal(wire_parse_ack(&r, &a2, &why), -EPROTO);
    b.len = 0;

    memset(&s, 0, sizeof s);
    s.head_seq = 7;
    s.anchor_age_ms = UINT64_MAX;
    s.form = WIRE_FORM_STORED;
    strcpy(s.publish_url, "tcp://*:5556");
    strcpy(s.pull_url, "ipc:///x.pull");
    wire_reply_header(&b, WIRE_OP_STATUS, 0);
    wire_encode_status_body(&b, &s);
    assert_int_equal(wire_parse_reply(b.p, b.len, &r, &why), 0);
    assert_int_equal(wire_parse_status(&r, &s2, &why), 0);
    assert_int_equal(s2.head_seq, 7);
    assert_int_equal(s2.form, WIRE_FORM_STORED);
    assert_string_equal(s2.publish_url, "tcp://*:5556");
    assert_string_equal(s2.pull_url, "ipc:///x.pull");
    for (size_t n = 0; n < b.len; n++) {
        uint8_t *p = malloc(n ? n : 1);

        memcpy(p, b.p, n);
        if (wire_parse_reply(p, n, &r, &why) == 0)
            assert_true(wire_parse_status(&r, &s2, &why) < 0);
        free(p);
    }
    wire_buf_free(&b);
}

static void test_publications(void **state)
{
    wire_buf b = { 0 }, range = { 0 };
    uint8_t rh[32], link[32], frame[100];
    wire_pub u;
    wire_reply r;
    wire_range g;
    const uint8_t *pub;
    size_t len;
    const char *why;

    (void)state;
    memset(rh, 1, 32);
    memset(link, 2, 32);
    wire_pub_header(&b, 0x1234, WIRE_FORM_PLAIN, 9, 99, 4, rh, link);
    wire_buf_put16(&b, 1);
    wire_buf_put32(&b, 2);
    wire_buf_putmem(&b, "kpp", 3);
    /* the type leads, big-endian, for NN_SUB prefix filters */
    assert_int_equal(b.p[0], 0x12);
    assert_int_equal(b.p[1], 0x34);
    assert_int_equal(wire_parse_pub(b.p, b.len, &u, &why), 0);
    assert_int_equal(u.seq, 9);
    assert_int_equal(u.prev_same_type, 4);
    assert_int_equal(u.key_len, 1);
    assert_memory_equal(u.payload, "pp", 2);
    for (size_t n = 0; n < b.len; n++)
        assert_true(wire_parse_pub(b.p, n, &u, &why) < 0);

    /* in a range reply */
    wire_reply_header(&range, WIRE_OP_RANGE, 0);
    wire_buf_put64(&range, 9);
    wire_buf_put32(&range, 1);
    wire_buf_put32(&range, (uint32_t)b.len);
    wire_buf_putmem(&range, b.p, b.len);
    assert_int_equal(wire_parse_reply(range.p, range.len, &r, &why), 0);
    assert_int_equal(wire_parse_range(&r, &g, &why), 0);
    assert_int_equal(wire_range_next(&g, &pub, &len, &why), 1);
    assert_int_equal(len, b.len);
    assert_int_equal(wire_range_next(&g, &pub, &len, &why), 0);
    /* a count that promises more than is there */
    wire_put32(range.p + 16, 2);
    assert_int_equal(wire_parse_reply(range.p, range.len, &r, &why), 0);
    assert_int_equal(wire_parse_range(&r, &g, &why), 0);
    assert_int_equal(wire_range_next(&g, &pub, &len, &why), 1);
    assert_true(wire_range_next(&g, &pub, &len, &why) < 0);

    /* stored: context and a frame of the declared length */
    b.len = 0;
    memset(frame, 0, sizeof frame);
    wire_pub_header(&b, 3, WIRE_FORM_STORED, 9, 99, 0, rh, link);
    wire_buf_put32(&b, 1);
    wire_buf_put64(&b, 2);
    wire_buf_putmem(&b, frame, 16);
    wire_buf_putmem(&b, link, 32);
    wire_buf_put32(&b, sizeof frame);
    wire_buf_putmem(&b, frame, sizeof frame);
    assert_int_equal(wire_parse_pub(b.p, b.len, &u, &why), 0);
    assert_int_equal(u.frame_len, sizeof frame);
    assert_int_equal(u.segment_no, 2);
    assert_true(wire_parse_pub(b.p, b.len - 1, &u, &why) < 0);

    /* a tick has the reserved type and no tail */
    b.len = 0;
    wire_pub_header(&b, WIRE_TICK_TYPE, WIRE_FORM_TICK, 9, 0, 0, NULL, link);
    assert_int_equal(wire_parse_pub(b.p, b.len, &u, &why), 0);
    b.p[1] = 1;
    assert_true(wire_parse_pub(b.p, b.len, &u, &why) < 0);
    wire_buf_free(&b);
    wire_buf_free(&range);
}

/* Random bytes into every parser: no crash, no overread (under ASan). */
static void test_random(void **state)
{
    (void)state;
    for (int k = 0; k < 200000; k++) {
        size_t n = randombytes_uniform(160);
        uint8_t *p = malloc(n ? n : 1);
        wire_request w;
        wire_reply r;
        wire_pub u;
        const char *why;

        randombytes_buf(p, n);
        if (n > 0 && k % 2)
            p[0] = WIRE_VERSION;
        if (n > 2 && k % 4 == 1)
            p[2] = WIRE_PUB_VERSION;
        if (n > 3 && k % 8 == 3) {
            p[0] = WIRE_VERSION;
            p[2] = 0;
            p[3] = 1; /* a request id, or a duplicate ack */
        }
        (void)wire_parse_request(p, n, &w, &why);
        if (wire_parse_reply(p, n, &r, &why) == 0) {
            wire_ack a;
            wire_status s;
            wire_range g;
            const uint8_t *pub;
            size_t len;

            (void)wire_parse_ack(&r, &a, &why);
            (void)wire_parse_status(&r, &s, &why);
            if (wire_parse_range(&r, &g, &why) == 0)
                while (wire_range_next(&g, &pub, &len, &why) == 1)
                    (void)wire_parse_pub(pub, len, &u, &why);
        }
        (void)wire_parse_pub(p, n, &u, &why);
        free(p);
    }
}

/* Version 2: request ids, the duplicate flag, the status anchoring fields;
 * version 1 messages still parse, and get version 1 replies. */
static void test_version2(void **state)
{
    static const uint8_t id[16] = "0123456789abcdef";
    tally_record_in rec = { .type = 7, .key = "k", .key_len = 1,
                            .payload = "p", .payload_len = 1 };
    wire_buf b = { 0 };
    wire_request w;
    wire_reply r;
    wire_ack a = { 10, 1, 12, { 0 }, 12 }, a2;
    wire_status s, s2;
    const char *why;

    (void)state;
    /* an APPEND with an id */
    assert_int_equal(wire_encode_append_id(&b, id, &rec, 1), 0);
    assert_int_equal(b.p[0], 2);
    assert_int_equal(wire_get16(b.p + 2), WIRE_REQ_ID);
    assert_int_equal(wire_parse_request(b.p, b.len, &w, &why), 0);
    assert_int_equal(w.version, 2);
    assert_true(w.has_id);
    assert_memory_equal(w.id, id, 16);
    assert_int_equal(w.count, 1);
    /* the same as version 1 has no flags */
    b.p[0] = 1;
    assert_int_equal(wire_parse_request(b.p, b.len, &w, &why), TALLY_EFORMAT);
    b.len = 0;
    /* version 1 without an id still parses */
    assert_int_equal(wire_encode_append(&b, &rec, 1), 0);
    b.p[0] = 1;
    assert_int_equal(wire_parse_request(b.p, b.len, &w, &why), 0);
    assert_int_equal(w.version, 1);
    assert_false(w.has_id);
    b.len = 0;
    /* an id on another op */
    assert_int_equal(wire_encode_status(&b), 0);
    wire_put16(b.p + 2, WIRE_REQ_ID);
    wire_buf_putmem(&b, id, 16);
    assert_int_equal(wire_parse_request(b.p, b.len, &w, &why), -EPROTO);
    b.len = 0;

    /* a duplicate ack; the flag on anything else is refused */
    wire_reply_header_v(&b, 2, WIRE_OP_APPEND, 0, WIRE_REPLY_DUPLICATE);
    wire_encode_ack(&b, &a);
    assert_int_equal(wire_parse_reply(b.p, b.len, &r, &why), 0);
    assert_int_equal(r.flags, WIRE_REPLY_DUPLICATE);
    assert_int_equal(wire_parse_ack(&r, &a2, &why), 0);
    assert_int_equal(a2.first_seq, 10);
    b.p[0] = 1; /* version 1 replies have no flags */
    assert_int_equal(wire_parse_reply(b.p, b.len, &r, &why), TALLY_EFORMAT);
    b.len = 0;
    wire_reply_header_v(&b, 2, WIRE_OP_STATUS, 0, WIRE_REPLY_DUPLICATE);
    assert_int_equal(wire_parse_reply(b.p, b.len, &r, &why), -EPROTO);
    b.len = 0;
    /* version 1 replies are written without flags, whatever is asked */
    wire_reply_header_v(&b, 1, WIRE_OP_APPEND, 0, WIRE_REPLY_DUPLICATE);
    assert_int_equal(b.p[0], 1);
    assert_int_equal(wire_get16(b.p + 2), 0);
    b.len = 0;

    /* status: version 2 carries the anchoring, version 1 does not */
    memset(&s, 0, sizeof s);
    s.head_seq = 9;
    s.anchor_seq = 5;
    s.anchor_age_ms = 1500;
    s.anchoring = WIRE_ANCHORING_RUNNING;
    s.backend = 1;
    s.anchor_block = 77;
    memset(s.anchor_head, 0xCD, 32);
    memset(s.anchor_tx, 0xEF, 32);
    s.lag_records = 4;
    s.lag_ms = 2500;
    s.rounds = 3;
    s.anchors = 2;
    s.failures = 1;
    s.last_error = -ECONNREFUSED;
    s.consecutive_failures = 1;
    strcpy(s.last_errmsg, "node down");
    strcpy(s.publish_url, "ipc:///p");
    strcpy(s.pull_url, "ipc:///q");
    wire_reply_header_v(&b, 2, WIRE_OP_STATUS, 0, 0);
    wire_encode_status_body_v(&b, 2, &s);
    assert_int_equal(wire_parse_reply(b.p, b.len, &r, &why), 0);
    assert_int_equal(wire_parse_status(&r, &s2, &why), 0);
    assert_true(s2.has_anchoring);
    assert_int_equal(s2.anchor_seq, 5);
    assert_int_equal(s2.anchor_block, 77);
    assert_memory_equal(s2.anchor_head, s.anchor_head, 32);
    assert_memory_equal(s2.anchor_tx, s.anchor_tx, 32);
    assert_int_equal(s2.lag_records, 4);
    assert_int_equal(s2.lag_ms, 2500);
    assert_int_equal(s2.anchors, 2);
    assert_int_equal(s2.last_error, -ECONNREFUSED);
    assert_string_equal(s2.last_errmsg, "node down");
    /* every truncation of it is refused */
    for (size_t n = 0; n < b.len; n++) {
        uint8_t *p = malloc(n ? n : 1);

        memcpy(p, b.p, n);
        if (wire_parse_reply(p, n, &r, &why) == 0)
            assert_true(wire_parse_status(&r, &s2, &why) < 0);
        free(p);
    }
    /* the version 2 body under a version 1 header: trailing bytes */
    b.p[0] = 1;
    assert_int_equal(wire_parse_reply(b.p, b.len, &r, &why), 0);
    assert_int_equal(wire_parse_status(&r, &s2, &why), -EPROTO);
    b.len = 0;
    wire_reply_header_v(&b, 1, WIRE_OP_STATUS, 0, 0);
    wire_encode_status_body_v(&b, 1, &s);
    assert_int_equal(wire_parse_reply(b.p, b.len, &r, &why), 0);
    assert_int_equal(wire_parse_status(&r, &s2, &why), 0);
    assert_false(s2.has_anchoring);
    assert_int_equal(s2.anchor_seq, 5);
    assert_int_equal(s2.lag_records, 0);
    wire_buf_free(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_append_roundtrip),
        cmocka_unit_test(test_truncations),
        cmocka_unit_test(test_byte_flips),
        cmocka_unit_test(test_limits),
        cmocka_unit_test(test_replies),
        cmocka_unit_test(test_publications),
        cmocka_unit_test(test_version2),
        cmocka_unit_test(test_random),
    };

    if (sodium_init() < 0)
        return 1;
    return cmocka_run_group_tests(tests, NULL, NULL);
}
