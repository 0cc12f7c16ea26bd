/*
 * keymap.c — the compactor's table of record keys: for each key, the newest
 * record seen so far (open addressing, linear probing, doubled at 70 %).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "compact-internal.h"

void tc_keymap_init(tc_keymap *m)
{
    memset(m, 0, sizeof *m);
    randombytes_buf(m->salt, sizeof m->salt);
}

void tc_keymap_free(tc_keymap *m)
{
    free(m->t);
    m->t = NULL;
    m->cap = m->n = 0;
}

static size_t slot_of(const uint8_t h[16], size_t cap)
{
    uint64_t v;
    memcpy(&v, h, sizeof v);
    return (size_t)(v & (cap - 1));
}

static int grow(tc_keymap *m)
{
    size_t cap = m->cap ? m->cap * 2 : 1024;
    tc_kent *t = calloc(cap, sizeof *t);
    if (!t)
        return -ENOMEM;
    for (size_t i = 0; i < m->cap; i++) {
        if (!m->t[i].used)
            continue;
        size_t s = slot_of(m->t[i].h, cap);
        while (t[s].used)
            s = (s + 1) & (cap - 1);
        t[s] = m->t[i];
    }
    free(m->t);
    m->t = t;
    m->cap = cap;
    return 0;
}

void tc_keymap_hash(const tc_keymap *m, const uint8_t *key, size_t key_len,
                    uint8_t h[16])
{
    crypto_generichash(h, 16, key, key_len, m->salt, sizeof m->salt);
}

int tc_keymap_get(tc_keymap *m, const uint8_t h[16], tc_kent **ret)
{
    if ((m->n + 1) * 10 >= m->cap * 7) {
        int rc = grow(m);
        if (rc < 0)
            return rc;
    }
    size_t s = slot_of(h, m->cap);
    while (m->t[s].used) {
        if (memcmp(m->t[s].h, h, 16) == 0) {
            *ret = &m->t[s];
            return 1;
        }
        s = (s + 1) & (m->cap - 1);
    }
    memset(&m->t[s], 0, sizeof m->t[s]);
    memcpy(m->t[s].h, h, 16);
    m->t[s].used = 1;
    m->n++;
    *ret = &m->t[s];
    return 0;
}
