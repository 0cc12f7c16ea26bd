/*
 * mkjournal.c — writes a small journal with fixed records through the
 * library and prints the C reader's view of it as JSON (the schema of
 * verify.py's --compare), so that the independent Python verifier can check
 * the C library and the C library can be checked against committed vectors.
 *
 *   tally-mkjournal DIR KEYFILE [--cipher aes256gcm|xchacha20poly1305]
 *                   [--compress] [--name N] [--extra N] [--json OUT]
 *   tally-mkjournal --verify DIR [KEYFILE]
 *
 * The fixed records have fixed timestamps (the known-answer vectors are made
 * with it once; salts and data keys are random, so the journal directory,
 * not this program, is the vector). --extra N appends N more records in a
 * third open with a tiny segment size, to cover rollover. --json OUT (or
 * "-") writes the view read back with tally_iter. A test helper: it prints
 * errors and exits with tally_exit_code().
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "tally.h"

#define TS0 1700000000000000000ull

static void die(const char *what, int rc)
{
    fprintf(stderr, "tally-mkjournal: %s: %s\n", what, tally_strerror(rc));
    exit(tally_exit_code(rc) ? tally_exit_code(rc) : 1);
}

static void hexout(FILE *f, const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        fprintf(f, "%02x", p[i]);
}

static void append(tally *t, uint16_t type, const char *key, const void *p, size_t n,
                   uint64_t ts)
{
    tally_record_in r = { .type = type, .key = key, .key_len = key ? strlen(key) : 0,
                          .payload = p, .payload_len = n, .ts_ns = ts };
    int rc = tally_append(t, &r, NULL);
    if (rc)
        die("append", rc);
}

/* --verify DIR [KEYFILE]: the C library's verdict, as an exit status. */
static int verify_only(const char *dir, const char *keyfile)
{
    uint8_t *mk = NULL;
    int rc;
    if (keyfile) {
        mk = sodium_malloc(TALLY_KEY_BYTES);
        if (!mk)
            return 1;
        if ((rc = tally_key_load(keyfile, mk)))
            die("key file", rc);
    }
    tally_verify_report vr;
    rc = tally_verify(dir, mk, &vr);
    if (mk)
        sodium_free(mk);
    if (rc) {
        fprintf(stderr, "tally-mkjournal: verify: %s: %s\n", tally_strerror(rc), vr.message);
        return tally_exit_code(rc) ? tally_exit_code(rc) : 1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    if (argc >= 3 && !strcmp(argv[1], "--verify")) {
        if (sodium_init() < 0)
            return 1;
        return verify_only(argv[2], argc > 3 ? argv[3] : NULL);
    }
    if (argc < 3) {
        fprintf(stderr, "usage: tally-mkjournal DIR KEYFILE [--cipher C] [--compress] "
                        "[--name N] [--extra N] [--json OUT]\n");
        return 2;
    }
    const char *dir = argv[1], *keyfile = argv[2], *json = NULL, *name = NULL;
    tally_cipher cipher = TALLY_CIPHER_AES256GCM;
    int compress = 0, extra = 0;
    for (int i = 3; i < argc; i++) {
        if (!strcmp(argv[i], "--compress"))
            compress = 1;
        else if (!strcmp(argv[i], "--cipher") && i + 1 < argc) {
            i++;
            if (!strcmp(argv[i], "aes256gcm"))
                cipher = TALLY_CIPHER_AES256GCM;
            else if (!strcmp(argv[i], "xchacha20poly1305"))
                cipher = TALLY_CIPHER_XCHACHA20POLY1305;
            else
                return 2;
        } else if (!strcmp(argv[i], "--name") && i + 1 < argc)
            name = argv[++i];
        else if (!strcmp(argv[i], "--extra") && i + 1 < argc)
            extra = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--json") && i + 1 < argc)
            json = argv[++i];
        else {
            fprintf(stderr, "tally-mkjournal: unknown argument %s\n", argv[i]);
            return 2;
        }
    }
    if (sodium_init() < 0)
        return 1;
    uint8_t *mk = sodium_malloc(TALLY_KEY_BYTES);
    if (!mk)
        return 1;
    int rc = tally_key_load(keyfile, mk);
    if (rc)
        die("key file", rc);

    tally_options o;
    memset(&o, 0, sizeof o);
    o.master_key = mk;
    o.name = name;
    o.cipher = cipher;
    o.compress = compress;
    if (extra)
        o.segment_size = 4096;
    if ((rc = tally_init(dir, &o)))
        die("init", rc);
    o.sync = TALLY_SYNC_NONE;

    tally *t = NULL;
    /* first open: segment 1 */
    if ((rc = tally_open(&t, dir, &o, NULL)))
        die("open", rc);
    append(t, 1, NULL, "hello, tally", 12, TS0 + 1);
    append(t, 2, "account/7", "{\"deposit\":100}", 15, TS0 + 2);
    append(t, 0, NULL, "", 0, TS0 + 3);
    append(t, TALLY_TYPE_SNAPSHOT, "state", "snapshot of the state", 21, TS0 + 4);
    char rep[600];
    for (int i = 0; i < 200; i++)
        memcpy(rep + 3 * i, "abc", 3);
    append(t, 4, "compressible", rep, 600, TS0 + 5);
    if ((rc = tally_close(t)))
        die("close", rc);
    /* second open: segment 2 continues the chain */
    if ((rc = tally_open(&t, dir, &o, NULL)))
        die("open", rc);
    uint8_t bin[32];
    for (int i = 0; i < 32; i++)
        bin[i] = (uint8_t)(i * 37 + 1);
    append(t, 3, NULL, bin, sizeof bin, TS0 + 6);
    /* a CHECKPOINT of seq 6 as FORMAT.md §9.2 lays it out (anchor file
     * backend: chain fields zero) */
    tally_head_info h6;
    if ((rc = tally_head(t, &h6)))
        die("head", rc);
    uint8_t ckp[176] = { 'T', 'C', 'K', 'P', 1, 2 };
    for (int i = 0; i < 8; i++) {
        ckp[8 + i] = (uint8_t)(h6.seq >> (8 * i));
        ckp[168 + i] = (uint8_t)((TS0 + 7) >> (8 * i));
    }
    memcpy(ckp + 16, h6.link, 32);
    append(t, TALLY_TYPE_CHECKPOINT, NULL, ckp, sizeof ckp, TS0 + 7);
    append(t, 0xFEFF, "k", "last", 4, TS0 + 8);
    if ((rc = tally_close(t)))
        die("close", rc);
    if (extra) {
        if ((rc = tally_open(&t, dir, &o, NULL)))
            die("open", rc);
        char buf[200];
        for (int i = 0; i < extra; i++) {
            int n = snprintf(buf, sizeof buf, "extra record %d %0*d", i, 20 + i % 100, i);
            append(t, (uint16_t)(10 + i % 5), i % 3 ? "x" : NULL, buf, (size_t)n,
                   TS0 + 100 + (uint64_t)i);
        }
        if ((rc = tally_close(t)))
            die("close", rc);
    }

    if (json) {
        FILE *f = strcmp(json, "-") ? fopen(json, "w") : stdout;
        if (!f) {
            perror(json);
            return 1;
        }
        tally_iter *it = NULL;
        if ((rc = tally_iter_open(&it, dir, mk, 1, 0)))
            die("iter_open", rc);
        uint8_t jid[TALLY_ID_BYTES];
        tally_iter_id(it, jid);
        fprintf(f, "{\n \"journal_id\": \"");
        hexout(f, jid, sizeof jid);
        fprintf(f, "\",\n \"cipher\": %d,\n \"compress\": %d,\n \"records\": [", (int)cipher,
                compress);
        tally_record r;
        uint64_t last = 0;
        uint8_t link[TALLY_HASH_BYTES] = { 0 };
        int first = 1;
        while ((rc = tally_iter_next(it, &r)) == 1) {
            fprintf(f, "%s\n  {\"seq\": %llu, \"ts_ns\": %llu, \"kind\": %u, \"body_len\": %u, "
                       "\"file\": \"%s\", \"offset\": %llu, \"type\": %u, \"key\": \"",
                    first ? "" : ",", (unsigned long long)r.seq, (unsigned long long)r.ts_ns,
                    r.kind, r.body_len, r.segment, (unsigned long long)r.offset, r.type);
            hexout(f, r.key, r.key_len);
            fprintf(f, "\", \"payload\": \"");
            hexout(f, r.payload, r.payload_len);
            fprintf(f, "\", \"record_hash\": \"");
            hexout(f, r.record_hash, sizeof r.record_hash);
            fprintf(f, "\", \"link\": \"");
            hexout(f, r.link, sizeof r.link);
            fprintf(f, "\"}");
            first = 0;
            last = r.seq;
            memcpy(link, r.link, sizeof link);
        }
        if (rc < 0) {
            fprintf(stderr, "tally-mkjournal: %s\n", tally_iter_errmsg(it));
            die("iter_next", rc);
        }
        tally_iter_free(it);
        tally_head_info h;
        if ((rc = tally_read_head(dir, &h)))
            die("read_head", rc);
        if (h.seq != last || memcmp(h.link, link, sizeof link)) {
            fprintf(stderr, "tally-mkjournal: tally_read_head disagrees with the iterator\n");
            return 3;
        }
        fprintf(f, "\n ],\n \"head\": {\"seq\": %llu, \"link\": \"", (unsigned long long)last);
        hexout(f, link, sizeof link);
        fprintf(f, "\"}\n}\n");
        if (f != stdout)
            fclose(f);
    }
    sodium_free(mk);
    return 0;
}
