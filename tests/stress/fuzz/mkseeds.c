/*
 * mkseeds.c — writes the fixture and the seed corpora of the journal
 * harnesses (run by hand when the format changes; the results are
 * committed):
 *
 *   stress-fuzz-mkseeds tests/stress/fuzz
 *
 * fixture/      tally.meta of a journal made with FUZZ_KEY (4 KiB segments,
 *               compression on) and its first segment file
 * corpus/segment  single segment files of journals sharing that metadata:
 *               small, large, compressed, keyed, SNAPSHOT, CHECKPOINT
 *               (CLEAR), compacted (PRUNED frames, COMPACTION record, merged
 *               files), empty; each raw (mode 0) and re-chained (mode 1)
 * corpus/recover  whole directories (files joined by FUZZ_FILE_SEP), clean,
 *               torn at several places, with a zero tail, with garbage after
 * corpus/meta   the fixture metadata raw and with its hashes left to the
 *               harness; after rekeys, after a forget; other names, cipher,
 *               explicit journal id
 *
 * Every journal here shares the fixture's data key, so the harnesses, which
 * only know FUZZ_KEY and the fixture metadata, can decrypt them.
 */
#include "fuzz.h"

#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "checkpoint.h"
#include "compact.h"
#include "stress.h"
#include "tally-internal.h"

static const char *out;
static char tmp[4096];
static unsigned nseed[3];
static const char *corpus[3] = { "segment", "recover", "meta" };

static void put_seed(int which, const char *tag, uint8_t mode,
                     const uint8_t *p, size_t len)
{
    char path[8192];
    snprintf(path, sizeof path, "%s/corpus/%s/%03u-%s-m%u", out,
             corpus[which], nseed[which]++, tag, mode);
    uint8_t *b = malloc(len + 1);
    if (!b)
        st_fail("out of memory");
    b[0] = mode;
    memcpy(b + 1, p, len);
    st_write_file(path, b, len + 1);
    free(b);
}

static tally *open_j(const char *dir)
{
    tally_options o;
    memset(&o, 0, sizeof o);
    o.master_key = fuzz_key;
    o.sync = TALLY_SYNC_NONE;
    tally *t;
    tally_recovery rep;
    int rc = tally_open(&t, dir, &o, &rep);
    if (rc < 0)
        st_fail("open %s: %s: %s", dir, tally_strerror(rc), rep.message);
    return t;
}

static void add(tally *t, uint16_t type, const char *key, const void *p,
                size_t len)
{
    tally_record_in r = { .type = type, .key = key,
                          .key_len = key ? strlen(key) : 0, .payload = p,
                          .payload_len = len };
    int rc = tally_append(t, &r, NULL);
    if (rc < 0)
        st_fail("append: %s", tally_strerror(rc));
}

static void close_j(tally *t)
{
    int rc = tally_close(t);
    if (rc < 0)
        st_fail("close: %s", tally_strerror(rc));
}

/* A new journal directory sharing the fixture's metadata. */
static char *fresh(const char *name)
{
    char *d;
    if (asprintf(&d, "%s/%s", tmp, name) < 0)
        st_fail("out of memory");
    st_rmrf(d);
    char meta[8192];
    snprintf(meta, sizeof meta, "%s/fixture/tally.meta", out);
    if (mkdir(d, 0700) < 0)
        st_fail("mkdir %s: %s", d, strerror(errno));
    size_t n;
    uint8_t *m = st_read_file(meta, &n);
    char p[8192];
    snprintf(p, sizeof p, "%s/tally.meta", d);
    st_write_file(p, m, n);
    free(m);
    return d;
}

static int list_segs(const char *dir, char names[][32], int max)
{
    struct dirent **e;
    int n = scandir(dir, &e, NULL, alphasort), k = 0;
    for (int i = 0; i < n; i++) {
        uint64_t no;
        if (k < max && ti_seg_parse_name(e[i]->d_name, &no))
            snprintf(names[k++], 32, "%.31s", e[i]->d_name);
        free(e[i]);
    }
    free(e);
    return k;
}

/* Every segment file of dir as a segment seed (modes 0 and 1), and the
 * directory as recovery seeds (clean and damaged). */
static void harvest(const char *dir, const char *tag)
{
    char names[64][32];
    int n = list_segs(dir, names, 64);
    uint8_t *all = NULL;
    size_t all_len = 0;
    size_t sep = strlen(FUZZ_FILE_SEP);
    size_t last_start = 0;
    for (int i = 0; i < n && i < 4; i++) {
        char p[8192];
        snprintf(p, sizeof p, "%s/%s", dir, names[i]);
        size_t len;
        uint8_t *b = st_read_file(p, &len);
        char t[128];
        snprintf(t, sizeof t, "%s-%d", tag, i + 1);
        put_seed(0, t, 0, b, len);
        put_seed(0, t, 1, b, len);
        all = realloc(all, all_len + sep + len);
        if (!all)
            st_fail("out of memory");
        if (i > 0) {
            memcpy(all + all_len, FUZZ_FILE_SEP, sep);
            all_len += sep;
        }
        last_start = all_len;
        memcpy(all + all_len, b, len);
        all_len += len;
        free(b);
    }
    if (!all)
        return;
    put_seed(1, tag, 0, all, all_len);
    /* torn at a few places of the last file */
    size_t last_len = all_len - last_start;
    for (int k = 1; k <= 3 && last_len > 200; k++) {
        size_t cut = last_start + 160 + (last_len - 160) * (size_t)k / 4;
        char t[128];
        snprintf(t, sizeof t, "%s-torn%d", tag, k);
        put_seed(1, t, 0, all, cut);
    }
    /* a zero tail (a reserved segment after a crash) and garbage after */
    uint8_t *z = calloc(all_len + 4096, 1);
    memcpy(z, all, all_len);
    char t[128];
    snprintf(t, sizeof t, "%s-zerotail", tag);
    put_seed(1, t, 0, z, all_len + 4096);
    memset(z + all_len, 0x5a, 100);
    snprintf(t, sizeof t, "%s-garbage", tag);
    put_seed(1, t, 0, z, all_len + 100);
    free(z);
    free(all);
}

static void payload(char *buf, size_t len, int compressible, unsigned seed)
{
    for (size_t i = 0; i < len; i++)
        buf[i] = compressible ? (char)('a' + (i / 64) % 3)
                              : (char)(((i * 2654435761u) >> 13) ^ seed);
}

int main(int argc, char **argv)
{
    st_prog = "stress-fuzz-mkseeds";
    if (argc != 2) {
        fprintf(stderr, "usage: stress-fuzz-mkseeds DIR (tests/stress/fuzz)\n");
        return 2;
    }
    out = argv[1];
    if (sodium_init() < 0)
        st_fail("sodium_init failed");
    char *w = st_mkdtemp(NULL, "mkseeds");
    snprintf(tmp, sizeof tmp, "%s", w);
    char p[8192];
    for (int i = 0; i < 3; i++) {
        snprintf(p, sizeof p, "%s/corpus/%s", out, corpus[i]);
        st_rmrf(p);
        snprintf(p, sizeof p, "%s/corpus", out);
        mkdir(p, 0755);
        snprintf(p, sizeof p, "%s/corpus/%s", out, corpus[i]);
        if (mkdir(p, 0755) < 0)
            st_fail("mkdir %s: %s", p, strerror(errno));
    }

    /* the fixture */
    char *fx;
    if (asprintf(&fx, "%s/fixture", tmp) < 0)
        st_fail("out of memory");
    tally_options o;
    memset(&o, 0, sizeof o);
    o.master_key = fuzz_key;
    o.name = "fuzz";
    o.compress = 1;
    o.segment_size = 4096;
    int rc = tally_init(fx, &o);
    if (rc < 0)
        st_fail("init: %s", tally_strerror(rc));
    tally *t = open_j(fx);
    char buf[8192];
    for (int i = 0; i < 6; i++) {
        payload(buf, 40 + 30 * (size_t)i, i % 2, (unsigned)i);
        add(t, (uint16_t)i, i % 3 ? "k" : NULL, buf, 40 + 30 * (size_t)i);
    }
    close_j(t);
    snprintf(p, sizeof p, "%s/fixture", out);
    st_rmrf(p);
    mkdir(p, 0755);
    char src[8192], dst[8192];
    snprintf(src, sizeof src, "%s/tally.meta", fx);
    snprintf(dst, sizeof dst, "%s/fixture/tally.meta", out);
    size_t n;
    uint8_t *b = st_read_file(src, &n);
    st_write_file(dst, b, n);
    /* meta seeds: raw, and with the hashes left to the harness */
    put_seed(2, "fixture", 0, b, n);
    put_seed(2, "fixture", 1, b, n - 32);
    put_seed(2, "fixture", 2, b, n - 64);
    free(b);
    char names[8][32];
    if (list_segs(fx, names, 8) < 1)
        st_fail("the fixture journal has no segment");
    snprintf(src, sizeof src, "%s/%s", fx, names[0]);
    snprintf(dst, sizeof dst, "%s/fixture/0000000000000001.seg", out);
    b = st_read_file(src, &n);
    st_write_file(dst, b, n);
    free(b);
    harvest(fx, "fixture");

    /* journals sharing the metadata */
    char *d = fresh("empty");
    close_j(open_j(d));
    harvest(d, "empty");

    d = fresh("small");
    t = open_j(d);
    add(t, 0, NULL, "", 0);
    add(t, 7, "key", "x", 1);
    add(t, 0xfeff, NULL, "last app type", 13);
    add(t, TALLY_TYPE_SNAPSHOT, NULL, "state", 5);
    close_j(t);
    t = open_j(d); /* a second session: a second file */
    add(t, 1, "k2", "second session", 14);
    close_j(t);
    harvest(d, "small");

    d = fresh("large");
    t = open_j(d);
    payload(buf, 6000, 0, 7);
    add(t, 3, NULL, buf, 6000);
    payload(buf, 6000, 1, 7);
    add(t, 3, "compressible", buf, 6000);
    for (int i = 0; i < 20; i++) {
        payload(buf, 300, i % 2, (unsigned)i);
        add(t, 2, NULL, buf, 300);
    }
    close_j(t);
    harvest(d, "large");

    /* CHECKPOINT records (CLEAR frames) through the anchor file backend */
    d = fresh("checkpoint");
    t = open_j(d);
    tally_anchor_target *tgt;
    char anchor[8192];
    snprintf(anchor, sizeof anchor, "%s/anchor", tmp);
    rc = tally_anchor_target_file(&tgt, anchor);
    if (rc < 0)
        st_fail("anchor target: %s", tally_strerror(rc));
    for (int i = 0; i < 3; i++) {
        add(t, 1, NULL, "before the anchor", 17);
        tally_checkpoint_info ci;
        char err[256];
        rc = tally_checkpoint_once(t, d, tgt, &ci, err, sizeof err);
        if (rc < 0)
            st_fail("checkpoint: %s: %s", tally_strerror(rc), err);
    }
    close_j(t);
    tally_anchor_target_free(tgt);
    harvest(d, "checkpoint");

    /* compaction: PRUNED frames, a COMPACTION record, merged files */
    d = fresh("compacted");
    for (int s = 0; s < 4; s++) {
        t = open_j(d);
        for (int i = 0; i < 12; i++) {
            char key[16];
            snprintf(key, sizeof key, "key%d", i % 4);
            payload(buf, 120, 0, (unsigned)(s * 16 + i));
            add(t, 5, key, buf, 120);
        }
        close_j(t);
    }
    t = open_j(d);
    tally_compact_report cr;
    rc = tally_compact(t, NULL, &cr);
    if (rc < 0)
        st_fail("compact: %s: %s", tally_strerror(rc), cr.message);
    add(t, 5, "key0", "after compaction", 16);
    close_j(t);
    harvest(d, "compacted");

    /* metadata variants made with the fixture key */
    tally_epoch_report er;
    d = fresh("rekeyed");
    char seg[8192];
    snprintf(seg, sizeof seg, "%s/fixture/0000000000000001.seg", out);
    for (int i = 0; i < 2; i++) {
        rc = tally_rekey(d, fuzz_key, &er);
        if (rc < 0)
            st_fail("rekey: %s: %s", tally_strerror(rc), er.message);
        t = open_j(d);
        add(t, 1, NULL, "epoch", 5);
        close_j(t);
    }
    snprintf(p, sizeof p, "%s/tally.meta", d);
    b = st_read_file(p, &n);
    put_seed(2, "rekeyed", 0, b, n);
    put_seed(2, "rekeyed", 2, b, n - 64);
    free(b);
    rc = tally_forget(d, fuzz_key, 2, &er);
    if (rc < 0)
        st_fail("forget: %s: %s", tally_strerror(rc), er.message);
    b = st_read_file(p, &n);
    put_seed(2, "forgotten", 0, b, n);
    put_seed(2, "forgotten", 2, b, n - 64);
    free(b);

    struct { const char *tag; const char *name; int cipher; int id; } v[] = {
        { "xchacha", "fuzz", TALLY_CIPHER_XCHACHA20POLY1305, 0 },
        { "longname", "a journal name that is rather long, to reach the "
          "length checks of the name field: 0123456789abcdef", 0, 0 },
        { "explicit-id", "fuzz", 0, 1 },
    };
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
        char *dd;
        if (asprintf(&dd, "%s/meta-%s", tmp, v[i].tag) < 0)
            st_fail("out of memory");
        memset(&o, 0, sizeof o);
        o.master_key = fuzz_key;
        o.name = v[i].name;
        o.cipher = (tally_cipher)v[i].cipher;
        uint8_t id[32];
        memset(id, 0x42, sizeof id);
        if (v[i].id)
            o.journal_id = id;
        rc = tally_init(dd, &o);
        if (rc < 0)
            st_fail("init %s: %s", v[i].tag, tally_strerror(rc));
        snprintf(p, sizeof p, "%s/tally.meta", dd);
        b = st_read_file(p, &n);
        put_seed(2, v[i].tag, 0, b, n);
        put_seed(2, v[i].tag, 2, b, n - 64);
        free(b);
        free(dd);
    }

    st_rmrf(tmp);
    printf("seeds: %u segment, %u recover, %u meta\n", nseed[0], nseed[1],
           nseed[2]);
    return 0;
}
