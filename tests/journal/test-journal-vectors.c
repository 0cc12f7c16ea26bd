/*
 * test-journal-vectors.c — known-answer vectors (issue 2, FORMAT.md).
 *
 * tests/vectors/<name>/ is a tiny journal written once by the library and
 * committed; tests/vectors/<name>.json describes it (master key, name, jid,
 * KCV, epoch data key, segment salts and keys, every record's frame header,
 * envelope, ciphertext, tag, record_hash and link, and the head), as derived
 * by the independent verifier tests/vectors/verify.py from FORMAT.md.
 *
 * This test checks, for each committed vector journal:
 *  1. the formulas of FORMAT.md §2–§4 recomputed here with libsodium
 *     directly (jid, KCV, K_wrap, K_meta, MAC, checksum, genesis, epoch key
 *     unwrap, header_hash, segment key, AEAD nonce/AD/decryption,
 *     record_hash, link) against the JSON and the committed bytes;
 *  2. the library's reader, verify and read_head against the JSON.
 * Run with the vectors directory as argv[1].
 */
#include "testutil.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <sodium.h>

static const char *vec_dir;

typedef struct vec {
    char dir[PATH_MAX];
    cJSON *root;
    uint8_t mk[32], jid[32];
} vec;

static const char *jstr(const cJSON *o, const char *k)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    if (!cJSON_IsString(v))
        fail_msg("vector JSON: string field %s missing", k);
    return v->valuestring;
}

static uint64_t jnum(const cJSON *o, const char *k)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    if (!cJSON_IsNumber(v))
        fail_msg("vector JSON: number field %s missing", k);
    /* cJSON holds numbers as doubles: exact only below 2^53 */
    if (v->valuedouble < 0 || v->valuedouble >= 9007199254740992.0)
        fail_msg("vector JSON: %s is not exact as a double; read it from the bytes", k);
    return (uint64_t)v->valuedouble;
}

/* ts_ns (about 1.7e18, beyond a double's precision) from the record's
 * frame_header hex, bytes 16..23 (FORMAT.md §4.2). */
static uint64_t jts(const cJSON *rec)
{
    uint8_t fh[32];
    assert_int_equal(tu_unhex(fh, sizeof fh, jstr(rec, "frame_header")), 32);
    uint64_t ts = 0;
    for (int i = 7; i >= 0; i--)
        ts = ts << 8 | fh[16 + i];
    return ts;
}

/* Hex field into a malloc'd buffer (length in *n). */
static uint8_t *jhex(const cJSON *o, const char *k, size_t *n)
{
    const char *s = jstr(o, k);
    size_t len = strlen(s) / 2;
    uint8_t *b = malloc(len + 1);
    assert_non_null(b);
    assert_int_equal(tu_unhex(b, len, s), (int)len);
    *n = len;
    return b;
}

static void jhex32(const cJSON *o, const char *k, uint8_t out[32])
{
    assert_int_equal(strlen(jstr(o, k)), 64);
    assert_int_equal(tu_unhex(out, 32, jstr(o, k)), 32);
}

static void le64put(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

/* H_k(label || a || b || c) per FORMAT.md's preamble; k = NULL: unkeyed. */
static void h(uint8_t out[32], const uint8_t *k, const char *label, const uint8_t *a,
              size_t alen, const uint8_t *b, size_t blen, const uint8_t *c, size_t clen)
{
    crypto_generichash_state st;
    crypto_generichash_init(&st, k, k ? 32 : 0, 32);
    if (label)
        crypto_generichash_update(&st, (const uint8_t *)label, strlen(label));
    if (alen)
        crypto_generichash_update(&st, a, alen);
    if (blen)
        crypto_generichash_update(&st, b, blen);
    if (clen)
        crypto_generichash_update(&st, c, clen);
    crypto_generichash_final(&st, out, 32);
}

static int load(vec *v, const char *name)
{
    char p[PATH_MAX];
    snprintf(v->dir, sizeof v->dir, "%s/%s", vec_dir, name);
    snprintf(p, sizeof p, "%s/%s.json", vec_dir, name);
    size_t len;
    uint8_t *txt = tu_read(p, &len);
    if (!txt)
        fail_msg("%s: missing (tests/vectors are committed)", p);
    v->root = cJSON_ParseWithLength((const char *)txt, len);
    free(txt);
    assert_non_null(v->root);
    jhex32(v->root, "master_key", v->mk);
    jhex32(v->root, "journal_id", v->jid);
    return 0;
}

static uint8_t *read_file(const vec *v, const char *name, size_t *len)
{
    char p[PATH_MAX];
    tu_path(p, sizeof p, v->dir, name);
    uint8_t *b = tu_read(p, len);
    if (!b)
        fail_msg("%s: missing", p);
    return b;
}

/* 1. FORMAT.md formulas against the JSON and the committed bytes. */
static void check_formulas(const vec *v)
{
    const cJSON *r = v->root;
    uint8_t x[32], y[32];
    const char *name = jstr(r, "name");

    /* §2 jid = H_MK("tally/v1/id" || name) */
    h(x, v->mk, "tally/v1/id", (const uint8_t *)name, strlen(name), NULL, 0, NULL, 0);
    assert_memory_equal(x, v->jid, 32);
    h(x, v->mk, "tally/v1/kcv", v->jid, 32, NULL, 0, NULL, 0);
    jhex32(r, "kcv", y);
    assert_memory_equal(x, y, 32);
    uint8_t kwrap[32], kmeta[32];
    h(kwrap, v->mk, "tally/v1/wrap", v->jid, 32, NULL, 0, NULL, 0);
    jhex32(r, "k_wrap", y);
    assert_memory_equal(kwrap, y, 32);
    h(kmeta, v->mk, "tally/v1/meta", v->jid, 32, NULL, 0, NULL, 0);
    jhex32(r, "k_meta", y);
    assert_memory_equal(kmeta, y, 32);
    uint8_t gen[32];
    h(gen, NULL, "tally/v1/genesis", v->jid, 32, NULL, 0, NULL, 0);
    jhex32(r, "genesis", y);
    assert_memory_equal(gen, y, 32);

    /* §3.1 metadata bytes */
    size_t mlen;
    uint8_t *m = read_file(v, "tally.meta", &mlen);
    assert_true(mlen > 112 + 96 + 64);
    assert_memory_equal(m, "TALLYMTA", 8);
    assert_int_equal(m[16], jnum(r, "cipher"));
    assert_int_equal(m[12] & 1, jnum(r, "compress"));
    assert_memory_equal(m + 40, v->jid, 32);
    jhex32(r, "kcv", y);
    assert_memory_equal(m + 72, y, 32);
    h(x, kmeta, NULL, m, mlen - 64, NULL, 0, NULL, 0);
    assert_memory_equal(x, m + mlen - 64, 32);
    jhex32(r, "meta_mac", y);
    assert_memory_equal(x, y, 32);
    h(x, NULL, NULL, m, mlen - 32, NULL, 0, NULL, 0);
    assert_memory_equal(x, m + mlen - 32, 32);

    /* §3.2 the epoch key unwraps to the data key of the JSON */
    const cJSON *epochs = cJSON_GetObjectItemCaseSensitive(r, "epochs");
    assert_true(cJSON_GetArraySize(epochs) >= 1);
    const cJSON *e = cJSON_GetArrayItem(epochs, 0);
    size_t nl, wl;
    uint8_t *nonce = jhex(e, "nonce", &nl), *wrapped = jhex(e, "wrapped", &wl);
    assert_int_equal(nl, 24);
    assert_int_equal(wl, 48);
    uint8_t ad[14 + 32 + 4], dk[32], dk_json[32];
    memcpy(ad, "tally/v1/epoch", 14);
    memcpy(ad + 14, v->jid, 32);
    uint32_t ep = (uint32_t)jnum(e, "epoch");
    for (int i = 0; i < 4; i++)
        ad[46 + i] = (uint8_t)(ep >> (8 * i));
    unsigned long long dl = 0;
    assert_int_equal(crypto_aead_xchacha20poly1305_ietf_decrypt(dk, &dl, NULL, wrapped, 48,
                                                                ad, sizeof ad, nonce, kwrap), 0);
    assert_int_equal(dl, 32);
    jhex32(e, "data_key", dk_json);
    assert_memory_equal(dk, dk_json, 32);
    /* the metadata's epoch entry holds these bytes */
    size_t name_len = (size_t)(m[104] | m[105] << 8);
    assert_memory_equal(m + 112 + name_len + 16, nonce, 24);
    assert_memory_equal(m + 112 + name_len + 40, wrapped, 48);
    free(nonce);
    free(wrapped);
    free(m);

    /* §4.1 segment headers and keys */
    const cJSON *segs = cJSON_GetObjectItemCaseSensitive(r, "segments");
    int nseg = cJSON_GetArraySize(segs);
    assert_true(nseg >= 2);
    uint8_t sk[8][32];
    assert_true(nseg <= 8);
    for (int i = 0; i < nseg; i++) {
        const cJSON *s = cJSON_GetArrayItem(segs, i);
        size_t flen;
        uint8_t *f = read_file(v, jstr(s, "file"), &flen);
        uint64_t off = jnum(s, "offset");
        assert_true(off + 160 <= flen);
        const uint8_t *hd = f + off;
        assert_memory_equal(hd, "TALLYSEG", 8);
        h(x, NULL, NULL, hd, 128, NULL, 0, NULL, 0);
        assert_memory_equal(x, hd + 128, 32);
        jhex32(s, "header_hash", y);
        assert_memory_equal(x, y, 32);
        size_t saltl;
        uint8_t *salt = jhex(s, "salt", &saltl);
        assert_int_equal(saltl, 16);
        assert_memory_equal(hd + 48, salt, 16);
        free(salt);
        jhex32(s, "prev_link", y);
        assert_memory_equal(hd + 96, y, 32);
        if (i == 0)
            assert_memory_equal(y, gen, 32);
        assert_memory_equal(hd + 64, v->jid, 32);
        uint8_t no[8];
        le64put(no, jnum(s, "segment_no"));
        assert_memory_equal(hd + 24, no, 8);
        h(sk[i], dk, "tally/v1/segment", v->jid, 32, no, 8, hd + 48, 16);
        jhex32(s, "segment_key", y);
        assert_memory_equal(sk[i], y, 32);
        free(f);
    }

    /* §4.2–4.4 every record */
    const cJSON *recs = cJSON_GetObjectItemCaseSensitive(r, "records");
    uint8_t link[32];
    memcpy(link, gen, 32);
    int cipher = (int)jnum(r, "cipher");
    int nclear = 0;
    for (int i = 0; i < cJSON_GetArraySize(recs); i++) {
        const cJSON *rec = cJSON_GetArrayItem(recs, i);
        size_t flen;
        uint8_t *f = read_file(v, jstr(rec, "file"), &flen);
        uint64_t off = jnum(rec, "offset");
        uint32_t body_len = (uint32_t)jnum(rec, "body_len");
        assert_true(off + 64 + body_len <= flen);
        const uint8_t *fh = f + off, *body = fh + 32;
        size_t hl;
        uint8_t *fh_json = jhex(rec, "frame_header", &hl);
        assert_int_equal(hl, 32);
        assert_memory_equal(fh, fh_json, 32);
        free(fh_json);
        assert_memory_equal(fh, "TFRM", 4);
        uint8_t seq8[8];
        le64put(seq8, jnum(rec, "seq"));
        assert_memory_equal(fh + 8, seq8, 8);
        /* record_hash and link */
        uint8_t rh[32];
        h(rh, NULL, NULL, fh, 32 + body_len, NULL, 0, NULL, 0);
        jhex32(rec, "record_hash", y);
        assert_memory_equal(rh, y, 32);
        jhex32(rec, "prev_link", y);
        assert_memory_equal(link, y, 32);
        h(link, NULL, NULL, link, 32, rh, 32, NULL, 0);
        jhex32(rec, "link", y);
        assert_memory_equal(link, y, 32);
        assert_memory_equal(body + body_len, link, 32);
        /* AEAD: nonce = le64(seq) || zeros, AD = jid || frame header || prev */
        int segi = -1;
        for (int s = 0; s < nseg; s++)
            if (!strcmp(jstr(cJSON_GetArrayItem(segs, s), "file"), jstr(rec, "file")) &&
                jnum(cJSON_GetArrayItem(segs, s), "offset") < off)
                segi = s;
        assert_true(segi >= 0);
        uint8_t aead_ad[96], np[24] = { 0 };
        memcpy(aead_ad, v->jid, 32);
        memcpy(aead_ad + 32, fh, 32);
        jhex32(rec, "prev_link", aead_ad + 64);
        size_t adl, nlen;
        uint8_t *ad_json = jhex(rec, "ad", &adl), *n_json = jhex(rec, "nonce", &nlen);
        assert_int_equal(adl, 96);
        assert_memory_equal(aead_ad, ad_json, 96);
        memcpy(np, seq8, 8);
        assert_int_equal(nlen, cipher == 1 ? 12 : 24);
        assert_memory_equal(np, n_json, nlen);
        free(ad_json);
        free(n_json);
        size_t envl;
        uint8_t *env_json = jhex(rec, "envelope", &envl);
        uint8_t *env = malloc(body_len + 1);
        assert_non_null(env);
        unsigned long long ml = 0;
        int rc;
        if (fh[4] == 1) { /* SEALED */
            size_t cl;
            uint8_t *ct = jhex(rec, "ciphertext", &cl);
            assert_int_equal(cl + 16, body_len);
            assert_memory_equal(body, ct, cl);
            free(ct);
            if (cipher == 1) {
                if (!crypto_aead_aes256gcm_is_available())
                    skip();
                rc = crypto_aead_aes256gcm_decrypt(env, &ml, NULL, body, body_len, aead_ad,
                                                   96, np, sk[segi]);
            } else {
                rc = crypto_aead_xchacha20poly1305_ietf_decrypt(env, &ml, NULL, body, body_len,
                                                                aead_ad, 96, np, sk[segi]);
            }
            assert_int_equal(rc, 0);
            assert_int_equal(ml, envl);
            assert_memory_equal(env, env_json, envl);
        } else {
            /* CLEAR: body = envelope || tag, the tag sealing the empty
             * message with AD || envelope */
            assert_int_equal(fh[4], 2);
            assert_int_equal(envl + 16, body_len);
            assert_memory_equal(body, env_json, envl);
            uint8_t *ad2 = malloc(96 + envl);
            assert_non_null(ad2);
            memcpy(ad2, aead_ad, 96);
            memcpy(ad2 + 96, body, envl);
            if (cipher == 1) {
                if (!crypto_aead_aes256gcm_is_available())
                    skip();
                rc = crypto_aead_aes256gcm_decrypt(env, &ml, NULL, body + envl, 16, ad2,
                                                   96 + envl, np, sk[segi]);
            } else {
                rc = crypto_aead_xchacha20poly1305_ietf_decrypt(env, &ml, NULL, body + envl, 16,
                                                                ad2, 96 + envl, np, sk[segi]);
            }
            free(ad2);
            assert_int_equal(rc, 0);
            assert_int_equal(ml, 0);
            nclear++;
        }
        /* the envelope's payload is the JSON's (uncompressed) */
        uint16_t type = (uint16_t)(env_json[0] | env_json[1] << 8);
        assert_int_equal(type, jnum(rec, "type"));
        free(env);
        free(env_json);
        free(f);
    }
    assert_int_equal(nclear, 1); /* the vectors hold one CHECKPOINT */
    jhex32(cJSON_GetObjectItemCaseSensitive(r, "head"), "link", y);
    assert_memory_equal(link, y, 32);
}

/* 2. The library reads the committed journal as the JSON says. */
static void check_library(const vec *v)
{
    const cJSON *r = v->root;
    const cJSON *recs = cJSON_GetObjectItemCaseSensitive(r, "records");
    const cJSON *head = cJSON_GetObjectItemCaseSensitive(r, "head");
    uint8_t x[32], y[32];
    assert_int_equal(tally_journal_id(v->mk, jstr(r, "name"), x), 0);
    assert_memory_equal(x, v->jid, 32);

    for (int keyed = 1; keyed >= 0; keyed--) {
        tally_iter *it = NULL;
        tally_record rd;
        assert_int_equal(tally_iter_open(&it, v->dir, keyed ? v->mk : NULL, 1, 0), 0);
        tally_iter_id(it, x);
        assert_memory_equal(x, v->jid, 32);
        for (int i = 0; i < cJSON_GetArraySize(recs); i++) {
            const cJSON *rec = cJSON_GetArrayItem(recs, i);
            int rc = tally_iter_next(it, &rd);
            if (rc != 1)
                fail_msg("%s: record %d: %s: %s", v->dir, i + 1, tally_strerror(rc),
                         tally_iter_errmsg(it));
            assert_int_equal(rd.seq, jnum(rec, "seq"));
            assert_int_equal(rd.ts_ns, jts(rec));
            assert_int_equal(rd.kind, jnum(rec, "kind"));
            assert_int_equal(rd.body_len, jnum(rec, "body_len"));
            assert_string_equal(rd.segment, jstr(rec, "file"));
            assert_int_equal(rd.offset, jnum(rec, "offset"));
            jhex32(rec, "record_hash", y);
            assert_memory_equal(rd.record_hash, y, 32);
            jhex32(rec, "link", y);
            assert_memory_equal(rd.link, y, 32);
            if (!keyed)
                continue;
            assert_int_equal(rd.decrypted, 1);
            assert_int_equal(rd.type, jnum(rec, "type"));
            size_t kl, pl;
            uint8_t *k = jhex(rec, "key", &kl), *p = jhex(rec, "payload", &pl);
            assert_int_equal(rd.key_len, kl);
            assert_int_equal(rd.payload_len, pl);
            if (kl)
                assert_memory_equal(rd.key, k, kl);
            if (pl)
                assert_memory_equal(rd.payload, p, pl);
            free(k);
            free(p);
        }
        assert_int_equal(tally_iter_next(it, &rd), 0);
        tally_iter_free(it);
    }

    jhex32(head, "link", y);
    tally_verify_report vr;
    for (int keyed = 0; keyed < 2; keyed++) {
        int rc = tally_verify(v->dir, keyed ? v->mk : NULL, &vr);
        if (rc)
            fail_msg("%s: verify: %s: %s", v->dir, tally_strerror(rc), vr.message);
        assert_int_equal(vr.records, (uint64_t)cJSON_GetArraySize(recs));
        assert_int_equal(vr.last_seq, jnum(head, "seq"));
        assert_memory_equal(vr.head, y, 32);
        assert_memory_equal(vr.journal_id, v->jid, 32);
        assert_int_equal(vr.cipher, (int)jnum(r, "cipher"));
    }
    tally_head_info hi;
    assert_int_equal(tally_read_head(v->dir, &hi), 0);
    assert_int_equal(hi.seq, jnum(head, "seq"));
    assert_memory_equal(hi.link, y, 32);

    /* a wrong key is refused before any record: the KCV (§2) */
    uint8_t wrong[32];
    memcpy(wrong, v->mk, 32);
    wrong[0] ^= 1;
    assert_int_equal(tally_verify(v->dir, wrong, &vr), TALLY_EKEY);
}

static void vectors(void **state)
{
    const char *name = *state;
    vec v;
    memset(&v, 0, sizeof v);
    load(&v, name);
    check_formulas(&v);
    check_library(&v);
    cJSON_Delete(v.root);
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s VECTORS_DIR\n", argv[0]);
        return 2;
    }
    vec_dir = argv[1];
    if (sodium_init() < 0)
        return 1;
    static char aes[] = "journal-v1", xc[] = "journal-v1-xchacha";
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_prestate(vectors, aes),
        cmocka_unit_test_prestate(vectors, xc),
    };
    return cmocka_run_group_tests(tests, NULL, tu_cleanup);
}
