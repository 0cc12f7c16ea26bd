/*
 * rlp.c — a strict RLP decoder for what an evidence bundle carries (block
 * headers, receipts, transactions, trie nodes). Only canonical encodings
 * are accepted, so that one value has one encoding and a hash over it means
 * one thing. The encoder is the checkpoint module's (cp_rlp).
 */
#include <errno.h>
#include <string.h>

#include "audit-internal.h"

/* A big-endian length of n (1..8) bytes, no leading zero. */
static int be_len(const uint8_t *p, size_t n, size_t *ret)
{
    if (n == 0 || n > 8 || p[0] == 0)
        return -EINVAL;
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++)
        v = (v << 8) | p[i];
    if (v > SIZE_MAX)
        return -EINVAL;
    *ret = (size_t)v;
    return 0;
}

int ta_rlp_item_at(const uint8_t *p, size_t n, ta_rlp_item *ret)
{
    if (n == 0)
        return -EINVAL;
    uint8_t b = p[0];
    size_t hdr, len;
    bool list = false;
    if (b < 0x80) {
        hdr = 0;
        len = 1;
    } else if (b <= 0xb7) {
        hdr = 1;
        len = b - 0x80u;
        if (len == 1 && (n < 2 || p[1] < 0x80))
            return -EINVAL; /* a low byte is its own encoding */
    } else if (b <= 0xbf) {
        size_t ll = b - 0xb7u;
        if (n < 1 + ll || be_len(p + 1, ll, &len) < 0 || len < 56)
            return -EINVAL;
        hdr = 1 + ll;
    } else if (b <= 0xf7) {
        list = true;
        hdr = 1;
        len = b - 0xc0u;
    } else {
        size_t ll = b - 0xf7u;
        list = true;
        if (n < 1 + ll || be_len(p + 1, ll, &len) < 0 || len < 56)
            return -EINVAL;
        hdr = 1 + ll;
    }
    if (len > n - hdr)
        return -EINVAL;
    ret->list = list;
    ret->p = p + hdr;
    ret->len = len;
    ret->raw = p;
    ret->raw_len = hdr + len;
    return 0;
}

int ta_rlp_decode(const uint8_t *p, size_t n, ta_rlp_item *ret)
{
    ta_rlp_item it;
    if (ta_rlp_item_at(p, n, &it) < 0 || it.raw_len != n)
        return -EINVAL;
    *ret = it;
    return 0;
}

int ta_rlp_list(const ta_rlp_item *list, ta_rlp_item *items, size_t max)
{
    if (!list->list)
        return -EINVAL;
    size_t k = 0, off = 0;
    while (off < list->len) {
        ta_rlp_item it;
        if (k == max || ta_rlp_item_at(list->p + off, list->len - off, &it) < 0)
            return -EINVAL;
        items[k++] = it;
        off += it.raw_len;
    }
    return (int)k;
}

int ta_rlp_u64(const ta_rlp_item *it, uint64_t *ret)
{
    if (it->list || it->len > 8 || (it->len > 0 && it->p[0] == 0))
        return -EINVAL;
    uint64_t v = 0;
    for (size_t i = 0; i < it->len; i++)
        v = (v << 8) | it->p[i];
    *ret = v;
    return 0;
}

size_t ta_index_key(uint64_t i, uint8_t out[9])
{
    /* rlp(i): 0 is the empty string (0x80), 1..127 a single byte, larger
     * values a short string of their minimal big-endian bytes. */
    if (i == 0) {
        out[0] = 0x80;
        return 1;
    }
    if (i < 0x80) {
        out[0] = (uint8_t)i;
        return 1;
    }
    size_t n = 0;
    for (uint64_t v = i; v; v >>= 8)
        n++;
    out[0] = (uint8_t)(0x80 + n);
    for (size_t k = 0; k < n; k++)
        out[1 + k] = (uint8_t)(i >> (8 * (n - 1 - k)));
    return 1 + n;
}
