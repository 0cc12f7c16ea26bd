/*
 * rlp.c — the minimal RLP encoder a legacy Ethereum transaction needs
 * (byte strings, unsigned integers, lists). Only encoding: tally never
 * parses RLP from the network (receipts and blocks arrive as JSON).
 *
 * A list is built by appending its items to the same buffer and then
 * calling cp_rlp_end_list(), which inserts the list header in front of them;
 * lists nest. An allocation failure is remembered in the buffer (err) so a
 * caller can encode a whole transaction and check once.
 */
#include "checkpoint-internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

void cp_rlp_init(cp_rlp *r)
{
    memset(r, 0, sizeof *r);
}

void cp_rlp_free(cp_rlp *r)
{
    free(r->p);
    memset(r, 0, sizeof *r);
}

static int reserve(cp_rlp *r, size_t more)
{
    if (r->err)
        return r->err;
    if (more > SIZE_MAX - r->len) {
        r->err = -ENOMEM;
        return r->err;
    }
    if (r->len + more <= r->cap)
        return 0;
    size_t cap = r->cap ? r->cap : 64;
    while (cap < r->len + more)
        cap *= 2;
    uint8_t *p = realloc(r->p, cap);
    if (!p) {
        r->err = -ENOMEM;
        return r->err;
    }
    r->p = p;
    r->cap = cap;
    return 0;
}

/* Length prefix: short form (offset + len) below 56, else offset + 55 + the
 * number of bytes of the big-endian length, then the length itself. */
static size_t header(uint8_t out[9], uint8_t offset, size_t len)
{
    if (len < 56) {
        out[0] = (uint8_t)(offset + len);
        return 1;
    }
    uint8_t be[8];
    size_t n = 0;
    for (size_t v = len; v; v >>= 8)
        n++;
    for (size_t i = 0; i < n; i++)
        be[i] = (uint8_t)(len >> (8 * (n - 1 - i)));
    out[0] = (uint8_t)(offset + 55 + n);
    memcpy(out + 1, be, n);
    return 1 + n;
}

void cp_rlp_bytes(cp_rlp *r, const void *data, size_t len)
{
    const uint8_t *d = data;
    if (len == 1 && d[0] < 0x80) { /* a single low byte is its own encoding */
        if (reserve(r, 1) == 0)
            r->p[r->len++] = d[0];
        return;
    }
    uint8_t h[9];
    size_t hl = header(h, 0x80, len);
    if (reserve(r, hl + len) != 0)
        return;
    memcpy(r->p + r->len, h, hl);
    if (len)
        memcpy(r->p + r->len + hl, d, len);
    r->len += hl + len;
}

void cp_rlp_uint_be(cp_rlp *r, const uint8_t *be, size_t len)
{
    /* Integers are minimal big-endian byte strings: no leading zeros, and
     * zero is the empty string. */
    while (len > 0 && be[0] == 0) {
        be++;
        len--;
    }
    cp_rlp_bytes(r, be, len);
}

void cp_rlp_uint(cp_rlp *r, uint64_t v)
{
    uint8_t be[8];
    for (unsigned i = 0; i < 8; i++)
        be[i] = (uint8_t)(v >> (8 * (7 - i)));
    cp_rlp_uint_be(r, be, sizeof be);
}

size_t cp_rlp_begin_list(const cp_rlp *r)
{
    return r->len;
}

void cp_rlp_end_list(cp_rlp *r, size_t start)
{
    if (r->err)
        return;
    uint8_t h[9];
    size_t payload = r->len - start;
    size_t hl = header(h, 0xc0, payload);
    if (reserve(r, hl) != 0)
        return;
    memmove(r->p + start + hl, r->p + start, payload);
    memcpy(r->p + start, h, hl);
    r->len += hl;
}
