/*
 * fuzz-recover.c — recovery: a fuzzed journal directory (the fixture
 * metadata and up to four segment files) opened for writing.
 *
 * Input: one mode byte, then the files separated by FUZZ_FILE_SEP, written
 * as segments 1, 2, 3, 4. Mode bit 0: fuzz_rechain each file.
 *
 * Contradictions that abort (FORMAT.md §6):
 *   - a journal that verifies is opened with nothing cut, at the same head;
 *   - one whose only fault is a torn tail is opened (the tail cut);
 *   - after an open that recovered a journal that verified or was only
 *     torn, one more record can be appended and the journal verifies, at
 *     the recovered head + 1.
 */
#include "fuzz.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tally-internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1 || size > (4u << 20))
        return 0;
    uint8_t mode = data[0];
    const uint8_t *p = data + 1, *end = data + size;
    const char *dir = fuzz_reset_dir(1);
    size_t seplen = strlen(FUZZ_FILE_SEP);
    for (int i = 1; i <= 4 && p <= end; i++) {
        const uint8_t *s = memmem(p, (size_t)(end - p), FUZZ_FILE_SEP, seplen);
        size_t n = s ? (size_t)(s - p) : (size_t)(end - p);
        uint8_t *f = malloc(n ? n : 1);
        if (!f)
            return 0;
        memcpy(f, p, n);
        if (mode & 1)
            fuzz_rechain(f, n);
        char name[32];
        ti_seg_name(name, (uint64_t)i);
        fuzz_put(name, f, n);
        free(f);
        if (!s)
            break;
        p = s + seplen;
    }

    tally_verify_report v;
    int rv = tally_verify(dir, fuzz_key, &v);

    tally_options opt;
    memset(&opt, 0, sizeof opt);
    opt.master_key = fuzz_key;
    opt.sync = TALLY_SYNC_NONE;
    tally_recovery rep;
    tally *t = NULL;
    int ro = tally_open(&t, dir, &opt, &rep);
    if (rv == 0 && ro != 0)
        fuzz_fail("the journal verifies (%llu records) but open refuses it: "
                  "%s: %s", (unsigned long long)v.records, tally_strerror(ro),
                  rep.message);
    if (rv == TALLY_ETORN && ro != 0)
        fuzz_fail("verify finds only a torn tail (%s) but open refuses: %s: %s",
                  v.message, tally_strerror(ro), rep.message);
    if (ro != 0)
        return 0;

    tally_head_info h;
    int rc = tally_head(t, &h);
    if (rc != 0)
        fuzz_fail("head after open: %s", tally_strerror(rc));
    if (rv == 0 && (rep.cut_bytes != 0 || h.seq != v.last_seq))
        fuzz_fail("open of a journal that verifies (head %llu) cut %llu bytes, "
                  "head %llu", (unsigned long long)v.last_seq,
                  (unsigned long long)rep.cut_bytes, (unsigned long long)h.seq);
    static const char payload[] = "after recovery";
    tally_record_in rec = { .payload = payload, .payload_len = sizeof payload - 1 };
    uint64_t seq = 0;
    rc = tally_append(t, &rec, &seq);
    int rcl = tally_close(t);
    if (rv != 0 && rv != TALLY_ETORN)
        return 0; /* damage before the last file may remain: no promise */
    if (rc != 0 || rcl != 0 || seq != h.seq + 1)
        fuzz_fail("append after recovery: %s / close %s (seq %llu, head %llu)",
                  tally_strerror(rc), tally_strerror(rcl),
                  (unsigned long long)seq, (unsigned long long)h.seq);
    tally_verify_report v2;
    int rv2 = tally_verify(dir, fuzz_key, &v2);
    if (rv2 != 0 || v2.last_seq != seq)
        fuzz_fail("after recovery and one append the journal does not verify: "
                  "%s: %s (last seq %llu, expected %llu)", tally_strerror(rv2),
                  v2.message, (unsigned long long)v2.last_seq,
                  (unsigned long long)seq);
    return 0;
}
