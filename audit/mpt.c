/*
 * mpt.c — Ethereum's Merkle-Patricia trie, as far as an evidence bundle
 * needs it: building the trie of a block's transactions or receipts (to get
 * its root and the proof of one of them, when exporting) and verifying a
 * proof against a root (offline, and for eth_getProof's account and
 * storage proofs).
 *
 * Nodes (Yellow Paper, appendix D): a leaf [hp(path, leaf), value], an
 * extension [hp(path), child], a branch [16 children, value]. A child
 * whose encoding is shorter than 32 bytes is embedded in its parent,
 * otherwise referenced by its keccak-256; the root is always hashed. A
 * proof is the list of hashed nodes on the key's path, root first.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "audit-internal.h"
#include "checkpoint-internal.h"

#define MAX_NIBBLES 128 /* keys of up to 64 bytes */

static size_t to_nibbles(const uint8_t *key, size_t len, uint8_t *out)
{
    for (size_t i = 0; i < len; i++) {
        out[2 * i] = key[i] >> 4;
        out[2 * i + 1] = key[i] & 15;
    }
    return 2 * len;
}

/* Hex-prefix decoding: *ret_leaf, the nibbles into out. */
static int hp_decode(const ta_rlp_item *it, uint8_t *out, size_t *ret_n,
                     bool *ret_leaf)
{
    if (it->list || it->len == 0 || it->len > MAX_NIBBLES / 2)
        return -EINVAL;
    uint8_t flag = it->p[0] >> 4;
    if (flag > 3)
        return -EINVAL;
    size_t n = 0;
    if (flag & 1)
        out[n++] = it->p[0] & 15;
    else if (it->p[0] & 15)
        return -EINVAL;
    for (size_t i = 1; i < it->len; i++) {
        out[n++] = it->p[i] >> 4;
        out[n++] = it->p[i] & 15;
    }
    *ret_n = n;
    *ret_leaf = (flag & 2) != 0;
    return 0;
}

int ta_mpt_verify(const uint8_t root[32], const uint8_t *key, size_t key_len,
                  const uint8_t *const *nodes, const size_t *node_lens,
                  size_t n_nodes, const uint8_t **ret_value, size_t *ret_len,
                  const char **why)
{
    uint8_t nib[MAX_NIBBLES], path[MAX_NIBBLES];
    if (key_len > MAX_NIBBLES / 2) {
        *why = "key too long";
        return -EINVAL;
    }
    size_t nlen = to_nibbles(key, key_len, nib), pos = 0, idx = 0;
    const uint8_t *want = root;
    ta_rlp_item node;
    bool inline_node = false;
    for (;;) {
        if (!inline_node) {
            uint8_t h[32];
            if (idx >= n_nodes) {
                *why = "the proof ends before the key's node";
                return -EINVAL;
            }
            cp_keccak256(nodes[idx], node_lens[idx], h);
            if (memcmp(h, want, 32) != 0) {
                *why = idx == 0 ? "the proof's first node is not the root"
                                : "a proof node does not hash to its "
                                  "parent's reference";
                return -EINVAL;
            }
            if (ta_rlp_decode(nodes[idx], node_lens[idx], &node) < 0 ||
                !node.list) {
                *why = "a proof node is not an RLP list";
                return -EINVAL;
            }
            idx++;
        }
        ta_rlp_item it[17], child;
        int k = ta_rlp_list(&node, it, 17);
        if (k == 17) {
            if (pos == nlen) {
                if (it[16].list) {
                    *why = "a branch value is a list";
                    return -EINVAL;
                }
                *ret_value = it[16].p;
                *ret_len = it[16].len;
                break;
            }
            child = it[nib[pos++]];
        } else if (k == 2) {
            size_t plen;
            bool leaf;
            if (hp_decode(&it[0], path, &plen, &leaf) < 0) {
                *why = "bad hex-prefix path in a proof node";
                return -EINVAL;
            }
            if (leaf) {
                if (it[1].list) {
                    *why = "a leaf value is a list";
                    return -EINVAL;
                }
                if (plen == nlen - pos && memcmp(path, nib + pos, plen) == 0) {
                    *ret_value = it[1].p;
                    *ret_len = it[1].len;
                } else {
                    *ret_value = NULL; /* another key's leaf: absent */
                    *ret_len = 0;
                }
                break;
            }
            if (plen == 0 || plen > nlen - pos ||
                memcmp(path, nib + pos, plen) != 0) {
                *ret_value = NULL;
                *ret_len = 0;
                break;
            }
            pos += plen;
            child = it[1];
        } else {
            *why = "a proof node is neither a branch nor a leaf/extension";
            return -EINVAL;
        }
        if (child.list) {
            node = child; /* embedded: shorter than 32 bytes */
            inline_node = true;
            if (child.raw_len >= 32) {
                *why = "an embedded node of 32 bytes or more";
                return -EINVAL;
            }
        } else if (child.len == 0) {
            *ret_value = NULL;
            *ret_len = 0;
            break;
        } else if (child.len == 32) {
            want = child.p;
            inline_node = false;
        } else {
            *why = "a child reference that is neither a hash nor a node";
            return -EINVAL;
        }
    }
    if (idx != n_nodes) {
        *why = "the proof has nodes past the key's";
        return -EINVAL;
    }
    return 0;
}

/* ---- building ------------------------------------------------------------------ */

typedef struct ent {
    uint8_t nib[MAX_NIBBLES];
    size_t n;
    const uint8_t *val;
    size_t vlen;
} ent;

static int cmp_ent(const void *x, const void *y)
{
    const ent *a = x, *b = y;
    size_t m = a->n < b->n ? a->n : b->n;
    int c = memcmp(a->nib, b->nib, m);
    if (c)
        return c;
    return a->n < b->n ? -1 : a->n > b->n;
}

/* Appends raw bytes (an embedded node) to an encoder. */
static void rlp_raw(cp_rlp *r, const uint8_t *d, size_t n)
{
    if (r->err)
        return;
    if (r->len + n > r->cap) {
        size_t cap = r->cap ? r->cap : 64;
        while (cap < r->len + n)
            cap *= 2;
        uint8_t *p = realloc(r->p, cap);
        if (!p) {
            r->err = -ENOMEM;
            return;
        }
        r->p = p;
        r->cap = cap;
    }
    memcpy(r->p + r->len, d, n);
    r->len += n;
}

static void hp_encode(cp_rlp *r, const uint8_t *nib, size_t n, bool leaf)
{
    uint8_t b[MAX_NIBBLES / 2 + 1];
    size_t k = 0;
    uint8_t flag = (uint8_t)((leaf ? 2 : 0) | (n & 1));
    size_t i = 0;
    if (n & 1)
        b[k++] = (uint8_t)(flag << 4 | nib[i++]);
    else
        b[k++] = (uint8_t)(flag << 4);
    for (; i < n; i += 2)
        b[k++] = (uint8_t)(nib[i] << 4 | nib[i + 1]);
    cp_rlp_bytes(r, b, k);
}

typedef struct builder {
    ent *e;
    size_t want;    /* index of the key to prove, or (size_t)-1 */
    ta_proof *pf;   /* hashed nodes on its path, deepest first */
    int err;
} builder;

static void proof_add(builder *b, const uint8_t *node, size_t len)
{
    if (!b->pf || b->err)
        return;
    uint8_t *c = malloc(len);
    uint8_t **nn = realloc(b->pf->nodes, (b->pf->n + 1) * sizeof *nn);
    if (nn)
        b->pf->nodes = nn;
    size_t *nl = realloc(b->pf->lens, (b->pf->n + 1) * sizeof *nl);
    if (nl)
        b->pf->lens = nl;
    if (!c || !nn || !nl) {
        free(c);
        b->err = -ENOMEM;
        return;
    }
    memcpy(c, node, len);
    b->pf->nodes[b->pf->n] = c;
    b->pf->lens[b->pf->n] = len;
    b->pf->n++;
}

static void build(builder *b, size_t lo, size_t hi, size_t d, cp_rlp *out);

/* Encodes the subtrie [lo, hi) at depth d as a child reference in out. */
static void child_ref(builder *b, size_t lo, size_t hi, size_t d, cp_rlp *out)
{
    cp_rlp sub;
    cp_rlp_init(&sub);
    build(b, lo, hi, d, &sub);
    if (sub.err) {
        b->err = sub.err;
    } else if (sub.len < 32) {
        rlp_raw(out, sub.p, sub.len);
    } else {
        uint8_t h[32];
        cp_keccak256(sub.p, sub.len, h);
        cp_rlp_bytes(out, h, 32);
        if (b->want >= lo && b->want < hi)
            proof_add(b, sub.p, sub.len);
    }
    cp_rlp_free(&sub);
}

static void build(builder *b, size_t lo, size_t hi, size_t d, cp_rlp *out)
{
    ent *e = b->e;
    size_t start = cp_rlp_begin_list(out);
    if (hi - lo == 1) {
        hp_encode(out, e[lo].nib + d, e[lo].n - d, true);
        cp_rlp_bytes(out, e[lo].val, e[lo].vlen);
        cp_rlp_end_list(out, start);
        return;
    }
    /* Common prefix of the (sorted) range: that of its first and last,
     * never past the end of the shortest (first) key. */
    size_t c = 0;
    while (d + c < e[lo].n && d + c < e[hi - 1].n &&
           e[lo].nib[d + c] == e[hi - 1].nib[d + c])
        c++;
    if (c > 0) {
        hp_encode(out, e[lo].nib + d, c, false);
        child_ref(b, lo, hi, d + c, out);
        cp_rlp_end_list(out, start);
        return;
    }
    size_t i = lo;
    const ent *value = NULL;
    if (e[i].n == d)
        value = &e[i++]; /* a key that ends here: the branch's value */
    for (uint8_t v = 0; v < 16; v++) {
        size_t j = i;
        while (j < hi && e[j].nib[d] == v)
            j++;
        if (j == i)
            cp_rlp_bytes(out, NULL, 0);
        else
            child_ref(b, i, j, d + 1, out);
        i = j;
    }
    if (value)
        cp_rlp_bytes(out, value->val, value->vlen);
    else
        cp_rlp_bytes(out, NULL, 0);
    cp_rlp_end_list(out, start);
}

void ta_proof_free(ta_proof *p)
{
    if (!p)
        return;
    for (size_t i = 0; i < p->n; i++)
        free(p->nodes[i]);
    free(p->nodes);
    free(p->lens);
    memset(p, 0, sizeof *p);
}

int ta_mpt_build(const uint8_t *const *keys, const size_t *key_lens,
                 const uint8_t *const *vals, const size_t *val_lens, size_t n,
                 const uint8_t *want_key, size_t want_len, uint8_t root[32],
                 ta_proof *ret_proof)
{
    if (n == 0) {
        static const uint8_t empty = 0x80; /* rlp("") */
        cp_keccak256(&empty, 1, root);
        if (ret_proof)
            memset(ret_proof, 0, sizeof *ret_proof);
        return want_key ? -EINVAL : 0;
    }
    ent *e = calloc(n, sizeof *e);
    if (!e)
        return -ENOMEM;
    for (size_t i = 0; i < n; i++) {
        if (key_lens[i] > MAX_NIBBLES / 2) {
            free(e);
            return -EINVAL;
        }
        e[i].n = to_nibbles(keys[i], key_lens[i], e[i].nib);
        e[i].val = vals[i];
        e[i].vlen = val_lens[i];
    }
    qsort(e, n, sizeof *e, cmp_ent);
    ta_proof pf;
    memset(&pf, 0, sizeof pf);
    builder b = { .e = e, .want = (size_t)-1, .pf = ret_proof ? &pf : NULL };
    for (size_t i = 0; i < n; i++) {
        if (i > 0 && cmp_ent(&e[i - 1], &e[i]) == 0)
            b.err = -EINVAL; /* duplicate key */
        if (want_key && e[i].n == 2 * want_len) {
            uint8_t wn[MAX_NIBBLES];
            to_nibbles(want_key, want_len, wn);
            if (memcmp(wn, e[i].nib, e[i].n) == 0)
                b.want = i;
        }
    }
    if (want_key && b.want == (size_t)-1)
        b.err = -EINVAL;
    cp_rlp r;
    cp_rlp_init(&r);
    if (!b.err)
        build(&b, 0, n, 0, &r);
    int rc = b.err ? b.err : r.err;
    if (rc == 0) {
        cp_keccak256(r.p, r.len, root);
        if (ret_proof) {
            proof_add(&b, r.p, r.len); /* the root is always a node */
            rc = b.err;
        }
    }
    cp_rlp_free(&r);
    free(e);
    if (rc < 0) {
        ta_proof_free(&pf);
        return rc;
    }
    if (ret_proof) {
        /* Collected deepest first: the proof goes root first. */
        for (size_t i = 0; i < pf.n / 2; i++) {
            uint8_t *t = pf.nodes[i];
            size_t l = pf.lens[i];
            pf.nodes[i] = pf.nodes[pf.n - 1 - i];
            pf.lens[i] = pf.lens[pf.n - 1 - i];
            pf.nodes[pf.n - 1 - i] = t;
            pf.lens[pf.n - 1 - i] = l;
        }
        *ret_proof = pf;
    }
    return 0;
}
