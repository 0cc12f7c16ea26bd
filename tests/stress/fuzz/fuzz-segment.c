/*
 * fuzz-segment.c — the segment and frame reader: one fuzzed segment file
 * beside the fixture metadata, read by tally_verify (with and without the
 * key), the iterator (with and without the key) and tally_read_head, and
 * the header and envelope parsers called directly on the bytes.
 *
 * Input: one mode byte, then the file. Mode bit 0: fuzz_rechain the file
 * first (header hashes and links made right, so mutations reach the frame
 * and envelope checks instead of stopping at the first hash).
 *
 * Contradictions that abort: a journal that verifies with the key but not
 * without it; a verified journal that the iterator cannot read to the end,
 * or reads a different number of records, or whose head differs.
 */
#include "fuzz.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tally-internal.h"

static uint64_t iterate(const char *dir, const uint8_t *key, unsigned flags,
                        int *ret_rc)
{
    tally_iter *it = NULL;
    tally_record r;
    uint64_t n = 0;
    volatile uint8_t sink = 0;
    int rc = tally_iter_open(&it, dir, key, 1, flags);
    if (rc < 0) {
        *ret_rc = rc;
        return 0;
    }
    while ((rc = tally_iter_next(it, &r)) == 1) {
        n++;
        /* touch what the reader hands out: a bad pointer shows up here */
        for (size_t i = 0; i < r.payload_len; i++)
            sink ^= r.payload[i];
        for (size_t i = 0; i < r.key_len; i++)
            sink ^= r.key[i];
    }
    (void)sink;
    (void)tally_iter_errmsg(it);
    tally_iter_free(it);
    *ret_rc = rc;
    return n;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1 || size > (4u << 20))
        return 0;
    uint8_t mode = data[0];
    size_t len = size - 1;
    uint8_t *seg = malloc(len ? len : 1);
    if (!seg)
        return 0;
    memcpy(seg, data + 1, len);
    if (mode & 1)
        fuzz_rechain(seg, len);

    /* the parsers on their own */
    const char *why;
    if (len >= TF_SEG_HEADER_BYTES) {
        ti_seg_hdr h;
        (void)ti_seg_header_parse(seg, &h, &why);
    }
    if (len >= TF_FRAME_HEADER_BYTES) {
        ti_frame_hdr fh;
        if (ti_frame_header_parse(seg, 1, &fh, &why) == 0) {
            ti_env env;
            size_t rest = len - TF_FRAME_HEADER_BYTES;
            (void)ti_env_parse(seg + TF_FRAME_HEADER_BYTES,
                               rest < fh.body_len ? rest : fh.body_len, &fh,
                               &env, &why);
        }
    }

    const char *dir = fuzz_reset_dir(1);
    fuzz_put("0000000000000001.seg", seg, len);
    free(seg);

    tally_verify_report vk, vn;
    int rk = tally_verify(dir, fuzz_key, &vk);
    int rn = tally_verify(dir, NULL, &vn);
    if (rk == 0 && rn != 0)
        fuzz_fail("verify passes with the key, fails without it: %s (%s)",
                  tally_strerror(rn), vn.message);
    if (rn == 0 && rk == 0 && vn.records != vk.records)
        fuzz_fail("verify counts %llu records with the key, %llu without",
                  (unsigned long long)vk.records,
                  (unsigned long long)vn.records);

    int ri, rt;
    uint64_t nk = iterate(dir, fuzz_key, 0, &ri);
    (void)iterate(dir, NULL, TALLY_ITER_TOLERATE_TAIL, &rt);
    if (rk == 0 && (ri != 0 || nk != vk.records))
        fuzz_fail("verify passes (%llu records) but the reader %s after %llu",
                  (unsigned long long)vk.records,
                  ri ? tally_strerror(ri) : "ends", (unsigned long long)nk);

    tally_head_info h;
    int rh = tally_read_head(dir, &h);
    if (rk == 0 && vk.records > 0 &&
        (rh != 0 || h.seq != vk.last_seq || memcmp(h.link, vk.head, 32) != 0))
        fuzz_fail("verify ends at seq %llu, tally_read_head says %s seq %llu",
                  (unsigned long long)vk.last_seq,
                  rh ? tally_strerror(rh) : "", (unsigned long long)h.seq);
    return 0;
}
