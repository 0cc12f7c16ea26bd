/*
 * audit-internal.h — what the audit module's files share (and its tests
 * use): a strict RLP decoder, Merkle-Patricia trie roots and proofs, the
 * Ethereum encodings a bundle is checked with, and the loaded evidence
 * bundle. Not installed; names start with ta_.
 */
#ifndef TALLY_AUDIT_INTERNAL_H
#define TALLY_AUDIT_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "audit.h"

/* ---- rlp.c: decoding (the encoder is the checkpoint module's cp_rlp) ------- */

typedef struct ta_rlp_item {
    bool list;
    const uint8_t *p;   /* payload */
    size_t len;         /* payload length */
    const uint8_t *raw; /* the whole item, prefix included */
    size_t raw_len;
} ta_rlp_item;

/* Decodes the item at p (at most n bytes); canonical form only (no
 * leading zeros in lengths, no long form for short payloads, a single byte
 * below 0x80 never wrapped). 0 or -EINVAL. */
int ta_rlp_item_at(const uint8_t *p, size_t n, ta_rlp_item *ret);
/* The whole of p..p+n must be exactly one item. */
int ta_rlp_decode(const uint8_t *p, size_t n, ta_rlp_item *ret);
/* The items of a list, up to max; returns the count or -EINVAL. */
int ta_rlp_list(const ta_rlp_item *list, ta_rlp_item *items, size_t max);
/* A string item as an unsigned integer (big-endian, no leading zero, at
 * most 8 bytes). */
int ta_rlp_u64(const ta_rlp_item *it, uint64_t *ret);

/* ---- mpt.c: Merkle-Patricia tries (Ethereum's "modified" trie) ------------- */

/* Verifies a proof (the RLP nodes from the root down, as eth_getProof gives
 * them) that key maps to a value under root. *ret_value / *ret_len point
 * into the proof (len 0: the key is proven absent). 0 or -EINVAL with why. */
int ta_mpt_verify(const uint8_t root[32], const uint8_t *key, size_t key_len,
                  const uint8_t *const *nodes, const size_t *node_lens,
                  size_t n_nodes, const uint8_t **ret_value, size_t *ret_len,
                  const char **why);

/* Builds the trie of n (key, value) pairs (distinct keys), returns its root
 * and, when want_key is not NULL, the proof of that key: *ret_nodes is a
 * malloc'd array of malloc'd node encodings (free with ta_proof_free).
 * 0 or -ENOMEM / -EINVAL. */
typedef struct ta_proof {
    uint8_t **nodes;
    size_t *lens;
    size_t n;
} ta_proof;
int ta_mpt_build(const uint8_t *const *keys, const size_t *key_lens,
                 const uint8_t *const *vals, const size_t *val_lens, size_t n,
                 const uint8_t *want_key, size_t want_len, uint8_t root[32],
                 ta_proof *ret_proof);
void ta_proof_free(ta_proof *p);

/* rlp(i): the key of transaction / receipt i in its block's tries. */
size_t ta_index_key(uint64_t i, uint8_t out[9]);

/* ---- the loaded bundle (evidence.c) ------------------------------------------ */

/* One proven anchor: an Anchored event and where it is on the chain. */
typedef struct ta_anchor {
    uint64_t seq;
    uint8_t head[32];
    uint64_t block_number;
    uint8_t block_hash[32];
    uint8_t tx_hash[32];
    uint64_t tx_index, log_index;
    uint64_t block_time;    /* header timestamp (s) */
} ta_anchor;

struct tally_evidence {
    tally_evidence_info info;
    ta_anchor *anchors;     /* sorted by seq, strictly increasing */
    size_t n;
};

/* The storage slots of (journal, writer) in JournalAnchor (FORMAT.md §9.1):
 * slot0 holds (blockNumber << 64) | seq, slot0 + 1 the head. */
void ta_anchor_slots(const uint8_t jid[32], const uint8_t writer[20],
                     uint8_t slot0[32], uint8_t slot1[32]);

/* The ABI of JournalAnchor (anchor.c keeps its own copy private). */
#define TA_SIG_ANCHOR   "anchor(bytes32,uint64,bytes32)"
#define TA_SIG_ANCHORED "Anchored(bytes32,address,uint64,bytes32)"

#endif
