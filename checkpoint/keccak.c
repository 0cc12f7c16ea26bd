/*
 * keccak.c — Keccak-256 as Ethereum uses it (the original Keccak padding
 * 0x01, not FIPS-202 SHA3's 0x06), for transaction hashes, addresses and the
 * contract's selectors and storage slots.
 *
 * Debian 12 has no library that exports Keccak-256 from C with a stable API,
 * but nettle exports the permutation itself (sha3_permute); the sponge on top
 * of it is a few lines: rate 136 bytes, absorb little-endian lanes, pad
 * 0x01 .. 0x80, squeeze 32 bytes.
 */
#include "checkpoint-internal.h"

#include <nettle/sha3.h>
#include <string.h>

#define KECCAK256_RATE 136u

static void absorb_block(struct sha3_state *st, const uint8_t *block)
{
    for (size_t i = 0; i < KECCAK256_RATE / 8; i++) {
        uint64_t lane = 0;
        for (unsigned b = 0; b < 8; b++)
            lane |= (uint64_t)block[8 * i + b] << (8 * b);
        st->a[i] ^= lane;
    }
    sha3_permute(st);
}

void cp_keccak256(const void *data, size_t len, uint8_t out[static 32])
{
    struct sha3_state st;
    uint8_t last[KECCAK256_RATE];
    const uint8_t *p = data;

    memset(&st, 0, sizeof st);
    while (len >= KECCAK256_RATE) {
        absorb_block(&st, p);
        p += KECCAK256_RATE;
        len -= KECCAK256_RATE;
    }
    memset(last, 0, sizeof last);
    if (len > 0)
        memcpy(last, p, len);
    last[len] ^= 0x01;
    last[KECCAK256_RATE - 1] ^= 0x80;
    absorb_block(&st, last);

    for (unsigned i = 0; i < 32; i++)
        out[i] = (uint8_t)(st.a[i / 8] >> (8 * (i % 8)));
}
