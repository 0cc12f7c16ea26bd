/*
 * test-journal-bitflip.c — flip every bit of every file of a small journal,
 * one at a time (systemd's test-journal-verify does the same):
 *
 * - tally_verify with the key must fail for every flipped bit;
 * - tally_verify without the key must fail for every flipped bit in a byte
 *   that FORMAT.md §7 says the keyless check covers. By §7 that is every byte
 *   of tally.meta (checksum) and every byte of a segment file (header_hash
 *   for the segment header, record_hash and link for the frames; the tag and
 *   ciphertext are inside record_hash). The only bytes §7 leaves to the key
 *   are the meaning of a ciphertext and its tag — which the chain still
 *   covers against accidental flips — and the original header inside a
 *   PRUNED body (no pruned frame in this journal). Files other than
 *   tally.meta and *.seg are ignored by readers (§1): not covered.
 *
 * Each flipped bit is restored before the next. The undetected bits are
 * counted per region and printed; the test fails if one is in a covered
 * byte.
 */
#include "testutil.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { R_META, R_SEGHDR, R_FRAME, R_OTHER, R_N };
static const char *region_name[R_N] = { "tally.meta", "segment header", "frames",
                                        "other files" };

static int region_of(const char *file, uint64_t off)
{
    if (!strcmp(file, "tally.meta"))
        return R_META;
    size_t n = strlen(file);
    if (n > 4 && !strcmp(file + n - 4, ".seg"))
        return off < 160 ? R_SEGHDR : R_FRAME;
    return R_OTHER;
}

static int covered_without_key(int region)
{
    return region != R_OTHER;
}

static void flip_all(tally_cipher cipher)
{
    uint8_t key[TALLY_KEY_BYTES];
    tu_key(key, 60);
    char *dir = tu_mkdtemp("bitflip");
    tally_options o = tu_opts(key);
    o.cipher = cipher;
    o.name = "flip";
    assert_int_equal(tally_init(dir, &o), 0);
    o.sync = TALLY_SYNC_NONE;
    tally *t = NULL;
    /* two opens: two segments, so a segment's prev_link is covered too */
    assert_int_equal(tally_open(&t, dir, &o, NULL), 0);
    tu_append_text(t, 1, "k", "a");
    tu_append_text(t, 2, NULL, "bb");
    assert_int_equal(tally_close(t), 0);
    assert_int_equal(tally_open(&t, dir, &o, NULL), 0);
    tu_append_text(t, 3, NULL, "");
    assert_int_equal(tally_close(t), 0);

    tally_verify_report vr;
    assert_int_equal(tally_verify(dir, key, &vr), 0);
    assert_int_equal(vr.records, 3);
    tu_snap *snap = tu_snap_take(dir);

    uint64_t bits[R_N] = { 0 }, missed_keyless[R_N] = { 0 }, missed_keyed = 0;
    char first_miss[256] = "";
    for (int fi = 0; fi < snap->n; fi++) {
        char p[PATH_MAX];
        tu_path(p, sizeof p, dir, snap->name[fi]);
        for (uint64_t bit = 0; bit < (uint64_t)snap->len[fi] * 8; bit++) {
            int reg = region_of(snap->name[fi], bit / 8);
            bits[reg]++;
            tu_flip_bit(p, bit);
            int rk = tally_verify(dir, key, &vr);
            int rn = tally_verify(dir, NULL, &vr);
            tu_flip_bit(p, bit);
            if (rk >= 0) {
                if (!missed_keyed)
                    snprintf(first_miss, sizeof first_miss,
                             "keyed verify passed with bit %llu of %s flipped",
                             (unsigned long long)bit, snap->name[fi]);
                missed_keyed++;
            }
            if (rn >= 0) {
                if (covered_without_key(reg) && !first_miss[0])
                    snprintf(first_miss, sizeof first_miss,
                             "keyless verify passed with bit %llu (byte %llu) of %s flipped",
                             (unsigned long long)bit, (unsigned long long)(bit / 8),
                             snap->name[fi]);
                missed_keyless[reg]++;
            }
        }
    }
    uint64_t total = 0, bad = 0;
    for (int r = 0; r < R_N; r++) {
        print_message("  %-15s %6llu bits, keyless misses %llu%s\n", region_name[r],
                      (unsigned long long)bits[r], (unsigned long long)missed_keyless[r],
                      covered_without_key(r) ? "" : " (not covered, FORMAT.md §1)");
        total += bits[r];
        if (covered_without_key(r))
            bad += missed_keyless[r];
    }
    print_message("  %llu bits flipped, keyed misses %llu\n", (unsigned long long)total,
                  (unsigned long long)missed_keyed);
    assert_true(bits[R_META] > 0 && bits[R_SEGHDR] > 0 && bits[R_FRAME] > 0);
    if (missed_keyed || bad)
        fail_msg("%s (keyed misses %llu, keyless misses in covered bytes %llu)", first_miss,
                 (unsigned long long)missed_keyed, (unsigned long long)bad);

    /* everything restored: verifies again */
    assert_int_equal(tally_verify(dir, key, &vr), 0);
    tu_snap_free(snap);
    tu_rmrf(dir);
    free(dir);
}

static void bitflip_aes(void **state) { (void)state; flip_all(TALLY_CIPHER_AES256GCM); }
static void bitflip_xchacha(void **state) { (void)state; flip_all(TALLY_CIPHER_XCHACHA20POLY1305); }

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(bitflip_aes),
        cmocka_unit_test(bitflip_xchacha),
    };
    return cmocka_run_group_tests(tests, NULL, tu_cleanup);
}
