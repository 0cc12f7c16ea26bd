/*
 * ctu.h — helpers of the compactor's tests: a generated workload of keyed
 * records (overwrites, tombstones, snapshots, protected records) with the
 * model of what compaction must prune, and a record-by-record picture of a
 * journal to compare before and after.
 */
#ifndef TALLY_CTU_H
#define TALLY_CTU_H

#include <stdbool.h>
#include <stdint.h>

#include "compact.h"
#include "testutil.h"

#define CTU_TS0 1700000000000000000ull /* ts_ns of record 1 */
#define CTU_TS_STEP 1000000000ull      /* one second per record */

/* One generated record. */
typedef struct ctu_rec {
    uint16_t type;
    char key[16];      /* "" for none */
    bool tomb;         /* key with an empty payload */
    uint64_t ts_ns;
    char payload[400];
    size_t payload_len;
} ctu_rec;

typedef struct ctu_work {
    ctu_rec *r;        /* r[seq - 1] */
    uint64_t n;
} ctu_work;

/* n records over nkeys keys (seed makes it reproducible); snapshot records
 * at the given seqs (0-terminated list, may be NULL); a CHECKPOINT-typed and
 * a COMPACTION-typed record now and then (protected from pruning). */
void ctu_generate(ctu_work *w, uint64_t n, unsigned nkeys, uint32_t seed,
                  const uint64_t *snapshots);
void ctu_work_free(ctu_work *w);
/* Appends w->r[from - 1 .. to - 1]; checks the seqs. */
void ctu_append(tally *t, const ctu_work *w, uint64_t from, uint64_t to);

/* What compaction must prune when the records 1..upto are sealed. */
typedef struct ctu_expect {
    bool *pruned;      /* [seq] */
    uint64_t count, by_snapshot, superseded, tombstones;
    uint64_t snapshot;
} ctu_expect;
void ctu_model(const ctu_work *w, uint64_t upto, uint64_t retention_ns,
               uint64_t now_ns, ctu_expect *ret);
void ctu_expect_free(ctu_expect *e);

/* A journal, record by record (index seq). */
typedef struct ctu_entry {
    uint8_t kind, decrypted;
    uint16_t type;
    uint64_t ts_ns;
    uint8_t link[32], record_hash[32];
    uint8_t *key, *payload;
    size_t key_len, payload_len;
} ctu_entry;
typedef struct ctu_pic {
    ctu_entry *e;      /* e[seq], e[0] unused */
    uint64_t n;        /* last seq */
} ctu_pic;
/* Reads dir with the iterator (key may be NULL); fails the test on error
 * or a seq gap. */
void ctu_picture(const char *dir, const uint8_t *key, ctu_pic *ret);
void ctu_pic_free(ctu_pic *p);

/* Every seq of a (up to a->n) has the same link and record_hash in b; a
 * record is pruned in b iff must[seq] (if may is NULL) — with may, a record
 * flagged in may may be pruned or not; every record not pruned in b has
 * the same type, key and payload as in a. */
void ctu_compare(const ctu_pic *a, const ctu_pic *b, const bool *must,
                 const bool *may);

/* Both verifications pass; returns the keyed report's pruned count. */
uint64_t ctu_verify_both(const char *dir, const uint8_t *key);

/* Opens with the test key and NONE sync, segments of segsize. */
tally *ctu_open(const char *dir, const uint8_t *key);
char *ctu_init(const char *tag, const uint8_t *key, uint64_t segsize);

int ctu_count_files(const char *dir);
uint64_t ctu_dir_bytes(const char *dir);

#endif
