/*
 * fuzz-meta.c — the metadata parser: a fuzzed tally.meta read without and
 * with the key (ti_meta_read), then the journal (the fixture's first
 * segment beside it) verified, read and opened for writing.
 *
 * Input: one mode byte, then the file. Mode 1: the harness appends the
 * checksum (FORMAT.md §3.1) to the bytes given; mode 2: the mac (computed
 * with the fixture key for the jid at offset 40) and the checksum. So
 * mutations reach the field checks (flags, epochs, extensions, lengths)
 * behind the hashes.
 *
 * Contradiction that aborts: metadata accepted with the key but refused
 * without it.
 */
#include "fuzz.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tally-internal.h"

#ifndef STRESS_FUZZ_FIXTURE
#error "STRESS_FUZZ_FIXTURE must be defined"
#endif

static uint8_t *seg1;
static size_t seg1_len;

static void load_segment(void)
{
    if (seg1)
        return;
    FILE *f = fopen(STRESS_FUZZ_FIXTURE "/0000000000000001.seg", "rb");
    if (!f)
        abort();
    seg1 = malloc(1u << 20);
    if (!seg1)
        abort();
    seg1_len = fread(seg1, 1, 1u << 20, f);
    fclose(f);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1 || size > (1u << 20))
        return 0;
    uint8_t mode = data[0];
    size_t len = size - 1;
    uint8_t *m = malloc(len + 64);
    if (!m)
        return 0;
    memcpy(m, data + 1, len);
    if (mode == 2 && len >= 72) {
        uint8_t k[32];
        ti_derive(k, fuzz_key, "tally/v1/meta", m + 40);
        crypto_generichash(m + len, 32, m, len, k, 32);
        len += 32;
    }
    if (mode == 1 || mode == 2) {
        ti_hash(m + len, m, len);
        len += 32;
    }
    load_segment();
    const char *dir = fuzz_reset_dir(0);
    fuzz_put("tally.meta", m, len);
    fuzz_put("0000000000000001.seg", seg1, seg1_len);
    free(m);

    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0)
        abort();
    ti_meta mk, mn;
    char err[256];
    memset(&mk, 0, sizeof mk);
    memset(&mn, 0, sizeof mn);
    int rk = ti_meta_read(dfd, fuzz_key, &mk, err, sizeof err);
    int rn = ti_meta_read(dfd, NULL, &mn, err, sizeof err);
    close(dfd);
    if (rk == 0 && rn != 0)
        fuzz_fail("metadata accepted with the key, refused without: %s (%s)",
                  tally_strerror(rn), err);
    if (rk == 0) {
        (void)ti_meta_epoch(&mk, mk.current_epoch);
        ti_meta_free(&mk);
    }
    if (rn == 0)
        ti_meta_free(&mn);

    tally_verify_report v;
    (void)tally_verify(dir, fuzz_key, &v);
    (void)tally_verify(dir, NULL, &v);
    tally_iter *it;
    if (tally_iter_open(&it, dir, fuzz_key, 1, 0) == 0) {
        tally_record r;
        while (tally_iter_next(it, &r) == 1)
            ;
        tally_iter_free(it);
    }
    tally_options opt;
    memset(&opt, 0, sizeof opt);
    opt.master_key = fuzz_key;
    opt.sync = TALLY_SYNC_NONE;
    tally_recovery rep;
    tally *t;
    if (tally_open(&t, dir, &opt, &rep) == 0)
        (void)tally_close(t);
    return 0;
}
