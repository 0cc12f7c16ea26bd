/*
 * record.c — the payload of a CHECKPOINT record (type 0xFF02, CLEAR), the
 * journal's own copy of each confirmed anchor: docs/FORMAT.md §9 gives the
 * layout. Little-endian like the rest of the format; fixed size so that a
 * reader can refuse anything else.
 */
#include "checkpoint-internal.h"

#include <errno.h>
#include <string.h>

static void le64_put(uint8_t *p, uint64_t v)
{
    for (unsigned i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static uint64_t le64_get(const uint8_t *p)
{
    uint64_t v = 0;
    for (unsigned i = 8; i-- > 0;)
        v = (v << 8) | p[i];
    return v;
}

void tally_checkpoint_encode(const tally_checkpoint_info *in,
                             uint8_t out[static TALLY_CHECKPOINT_BYTES])
{
    memset(out, 0, TALLY_CHECKPOINT_BYTES);
    memcpy(out, "TCKP", 4);
    out[4] = 1; /* version */
    out[5] = in->backend;
    le64_put(out + 8, in->seq);
    memcpy(out + 16, in->head, 32);
    le64_put(out + 48, in->chain_id);
    memcpy(out + 56, in->contract, 20);
    memcpy(out + 76, in->writer, 20);
    le64_put(out + 96, in->block_number);
    memcpy(out + 104, in->block_hash, 32);
    memcpy(out + 136, in->tx_hash, 32);
    le64_put(out + 168, in->anchored_ns);
}

int tally_checkpoint_decode(const uint8_t *p, size_t len,
                            tally_checkpoint_info *ret)
{
    if (len != TALLY_CHECKPOINT_BYTES || memcmp(p, "TCKP", 4) != 0)
        return TALLY_EINTEGRITY;
    if (p[4] != 1)
        return TALLY_EFORMAT;
    if ((p[5] != TALLY_BACKEND_ETH && p[5] != TALLY_BACKEND_FILE) || p[6] ||
        p[7])
        return TALLY_EINTEGRITY;
    tally_checkpoint_info c;
    memset(&c, 0, sizeof c);
    c.backend = p[5];
    c.seq = le64_get(p + 8);
    memcpy(c.head, p + 16, 32);
    c.chain_id = le64_get(p + 48);
    memcpy(c.contract, p + 56, 20);
    memcpy(c.writer, p + 76, 20);
    c.block_number = le64_get(p + 96);
    memcpy(c.block_hash, p + 104, 32);
    memcpy(c.tx_hash, p + 136, 32);
    c.anchored_ns = le64_get(p + 168);
    if (c.seq == 0)
        return TALLY_EINTEGRITY; /* seq 0 is "never anchored" */
    *ret = c;
    return 0;
}
