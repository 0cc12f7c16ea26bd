/*
 * corrupt.c — damage copies of a real journal and check that every kind of
 * damage is detected, with the right exit status and the right place.
 *
 *   stress-corrupt --tally PATH [--flips N] [--pages N] [--seed S]
 *                  [--workdir DIR]
 *
 * The journal (several segment files: 4 KiB segments, four writer sessions)
 * is damaged in a fresh copy each time:
 *
 *   bit flip       one random bit of tally.meta or of a segment file
 *   zeroed page    one 4 KiB-aligned page of a segment file set to zeros
 *   shuffle        two segment files' contents swapped
 *   duplicate      a segment file copied over the next, or added again past
 *                  the end
 *   foreign seg    a segment file replaced by the same-numbered one of
 *                  another journal (same key, other name; other key)
 *   foreign meta   tally.meta replaced by another journal's (same key: the
 *                  segments' journal id differs, exit 3; other key: exit 5)
 *   missing seg    a segment file in the middle removed
 *   truncated seg  a segment file in the middle cut short
 *
 * For each: `tally verify --json` with the key and with --no-key must fail
 * with the expected exit status (3 integrity; 5 key) and name the damaged
 * file and the offset of the header or frame that holds the first damaged
 * byte. Then `tally append` (an open for writing: recovery) must refuse
 * (exit 3 or 5), except where FORMAT.md §6 lets it go on: damage inside the
 * frames of a file before the last (the writer checks only their headers),
 * or damage that reaches the end of the last file (indistinguishable from a
 * torn tail), which it may cut — and must report, losing nothing before
 * the damaged frame. One exception, by design (FORMAT.md §4): zero bytes
 * from a frame boundary to the end of the last file are the writer's
 * reserved tail, the end of the journal; such damage (whole synced records
 * zeroed at the very end) cannot be told from it and is counted apart as
 * "undetected by design". Prints one line of figures; any other outcome
 * fails (all failures are listed, then exit 1).
 */
#include "stress.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <getopt.h>
#include <stdarg.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sodium.h>

struct unit {            /* a segment header or a frame */
    char file[32];
    uint64_t off, len;
    uint64_t seq;        /* frames: its seq; headers: 0 */
};

struct ctx {
    const char *tally;
    char *work, *k1, *k2, *a, *b, *c, *w;
    st_rng rng;
    uint64_t seed;
    struct unit *u;
    size_t nu;
    char segs[64][32];
    size_t nsegs;
    uint64_t last_seq;
    unsigned failures, printed;
    /* figures */
    unsigned tried, detected_keyed, detected_keyless, placed_keyed,
        placed_keyless, writer_refused, writer_placed, writer_unplaced,
        writer_cut, writer_not_walked, silent_by_design, writer_reserved_tail;
    unsigned by_kind[16];
};

static void run_ok(char *const argv[])
{
    char *err = NULL;
    int rc = st_run(argv, NULL, &err, 60000);
    if (rc != 0)
        st_fail("%s %s: exit %d: %s", argv[0], argv[1], rc, err);
    free(err);
}

static void append_lines(struct ctx *x, const char *dir, const char *key,
                         uint64_t from, unsigned n)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/lines", x->work);
    FILE *f = fopen(path, "w");
    if (!f)
        st_fail("fopen %s: %s", path, strerror(errno));
    for (unsigned i = 0; i < n; i++) {
        char p[ST_PAYLOAD_MAX];
        size_t len = st_payload(from + i, p);
        fwrite(p, 1, len, f);
        fputc('\n', f);
    }
    fclose(f);
    /* the CLI reads stdin: run it through a shell redirection */
    char cmd[16384];
    snprintf(cmd, sizeof cmd, "exec '%s' append '%s' --key-file '%s' < '%s'",
             x->tally, dir, key, path);
    char *argv[] = { "/bin/sh", "-c", cmd, NULL };
    run_ok(argv);
}

static void make_journal(struct ctx *x, const char *dir, const char *key,
                         const char *name, unsigned sessions)
{
    char *init[] = { (char *)x->tally, "init", (char *)dir, "--key-file",
                     (char *)key, "--name", (char *)name, "--segment-size",
                     "4K", NULL };
    run_ok(init);
    uint64_t seq = 1;
    for (unsigned s = 0; s < sessions; s++) {
        unsigned n = 30 + 15 * s;
        append_lines(x, dir, key, seq, n);
        seq += n;
    }
}

/* The headers and frames of journal a, from the reader. */
static void map_units(struct ctx *x)
{
    uint8_t key[TALLY_KEY_BYTES];
    st_load_key(x->k1, key);
    tally_iter *it;
    int rc = tally_iter_open(&it, x->a, key, 1, 0);
    if (rc < 0)
        st_fail("reader on %s: %s", x->a, tally_strerror(rc));
    tally_record r;
    size_t cap = 0;
    while ((rc = tally_iter_next(it, &r)) == 1) {
        if (x->nu + 2 > cap) {
            cap = cap ? 2 * cap : 256;
            x->u = realloc(x->u, cap * sizeof *x->u);
            if (!x->u)
                st_fail("out of memory");
        }
        if (x->nsegs == 0 || strcmp(x->segs[x->nsegs - 1], r.segment) != 0) {
            if (x->nsegs == 64)
                st_fail("too many segment files");
            snprintf(x->segs[x->nsegs++], 32, "%s", r.segment);
            struct unit *h = &x->u[x->nu++];
            snprintf(h->file, sizeof h->file, "%s", r.segment);
            h->off = 0;
            h->len = 160;
            h->seq = 0;
        }
        struct unit *f = &x->u[x->nu++];
        snprintf(f->file, sizeof f->file, "%s", r.segment);
        f->off = r.offset;
        f->len = 64u + r.body_len;
        f->seq = r.seq;
        x->last_seq = r.seq;
    }
    if (rc < 0)
        st_fail("reading %s: %s", x->a, tally_iter_errmsg(it));
    tally_iter_free(it);
    sodium_memzero(key, sizeof key);
    if (x->nsegs < 4)
        st_fail("the test journal has only %zu segment files", x->nsegs);
    /* every segment file must hold records (else the map is incomplete) */
    DIR *d = opendir(x->a);
    struct dirent *e;
    size_t files = 0;
    while ((e = readdir(d)) != NULL)
        if (strstr(e->d_name, ".seg") && !strstr(e->d_name, ".tmp"))
            files++;
    closedir(d);
    if (files != x->nsegs)
        st_fail("%s holds %zu segment files, %zu with records", x->a, files,
                x->nsegs);
}

static const struct unit *unit_at(const struct ctx *x, const char *file,
                                  uint64_t off)
{
    for (size_t i = 0; i < x->nu; i++)
        if (strcmp(x->u[i].file, file) == 0 && off >= x->u[i].off &&
            off < x->u[i].off + x->u[i].len)
            return &x->u[i];
    return NULL;
}

static void fresh_copy(struct ctx *x)
{
    st_rmrf(x->w);
    st_copy_dir(x->a, x->w);
}

static uint64_t fsize(const char *path)
{
    struct stat sb;
    if (stat(path, &sb) < 0)
        st_fail("stat %s: %s", path, strerror(errno));
    return (uint64_t)sb.st_size;
}

/* ---- the checks ------------------------------------------------------------- */

/* A damage case that was not handled as it must be: reported, counted, and
 * the run goes on (so that one bug does not hide the others); the program
 * exits 1 at the end. */
static void bad(struct ctx *x, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void bad(struct ctx *x, const char *fmt, ...)
{
    x->failures++;
    if (++x->printed > 25)
        return;
    va_list ap;
    fprintf(stderr, "%s: FAIL: ", st_prog);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

struct expect {
    int status;          /* 3 or 5 */
    const char *file;    /* damaged file the report must name (NULL: any) */
    int check_off;       /* 1: the offset must be off */
    uint64_t off;
    int keyless_status;  /* expected without the key (0: same as status) */
    /* the writer: */
    int writer_may_pass; /* damage only in frames of a file before the last */
    uint64_t cut_from;   /* >0: the writer may cut from this seq (damage
                          * reaching the end of the last file) */
    /* zero bytes from a frame boundary to the end of the last file: what
     * the writer's reserved tail looks like (FORMAT.md §4), so the journal
     * may end there without a report; counted apart, not as detected */
    int reserved_tail;
    int want_torn;       /* verify must report TALLY_ETORN (a torn tail) */
};

/* Verify must fail with the expected status (detected) and name the place
 * (file and offset of the first damaged header or frame). */
static void check_verify(struct ctx *x, const char *what, const struct expect *e,
                         int keyed)
{
    const char *how = keyed ? "with the key" : "without the key";
    char *out = NULL, *err = NULL;
    char *argv[] = { (char *)x->tally, "verify", x->w, "--json",
                     keyed ? "--key-file" : "--no-key", keyed ? x->k1 : NULL,
                     NULL };
    int rc = st_run(argv, &out, &err, 60000);
    int want = keyed || !e->keyless_status ? e->status : e->keyless_status;
    cJSON *j = NULL;
    if (rc == 0 && e->reserved_tail) {
        if (keyed)
            x->silent_by_design++;
        goto out;
    }
    if (rc != want) {
        bad(x, "%s: verify %s: exit %d, expected %d: %s%s", what, how, rc,
            want, out, err);
        goto out;
    }
    if (keyed)
        x->detected_keyed++;
    else
        x->detected_keyless++;
    if (e->want_torn &&
        !strstr(out, "\"error\":\"the tail of the journal is torn")) {
        bad(x, "%s: verify %s calls a torn tail damage: %s", what, how, out);
        goto out;
    }
    j = cJSON_Parse(out);
    const cJSON *seg = cJSON_GetObjectItemCaseSensitive(j, "segment");
    const cJSON *off = cJSON_GetObjectItemCaseSensitive(j, "offset");
    const cJSON *msg = cJSON_GetObjectItemCaseSensitive(j, "message");
    if (!cJSON_IsObject(j) || !cJSON_IsString(seg) || !cJSON_IsNumber(off) ||
        !cJSON_IsString(msg)) {
        bad(x, "%s: verify --json %s printed no report: %s", what, how, out);
        goto out;
    }
    if (e->file) {
        int named = strcmp(seg->valuestring, e->file) == 0 ||
                    strstr(msg->valuestring, e->file) != NULL;
        if (!named) {
            bad(x, "%s: verify %s names \"%s\" (%s), not the damaged %s",
                what, how, seg->valuestring, msg->valuestring, e->file);
            goto out;
        }
        if (e->check_off && (uint64_t)off->valuedouble != e->off) {
            bad(x, "%s: verify %s reports offset %.0f in %s (%s); the first "
                "damaged header or frame starts at %" PRIu64, what, how,
                off->valuedouble, e->file, msg->valuestring, e->off);
            goto out;
        }
    }
    if (keyed)
        x->placed_keyed++;
    else
        x->placed_keyless++;
out:
    cJSON_Delete(j);
    free(out);
    free(err);
}

/* The writer's open (recovery) must refuse and name the file, or go on only
 * where FORMAT.md §6 lets it. */
static void check_writer(struct ctx *x, const char *what, const struct expect *e)
{
    char *err = NULL;
    char *argv[] = { (char *)x->tally, "append", x->w, "--key-file", x->k1,
                     NULL };
    int rc = st_run(argv, NULL, &err, 60000);
    const char *cut = strstr(err, "recovered: cut ");
    if (rc == e->status) {
        x->writer_refused++;
        if (e->file && !strstr(err, e->file)) {
            /* one report for them all: the same cause every time */
            if (x->writer_unplaced++ == 0)
                bad(x, "%s: the writer refused (exit %d) without naming %s "
                    "(later cases like this one are only counted): %s", what,
                    rc, e->file, err);
            else
                x->failures++;
        } else {
            x->writer_placed++;
        }
    } else if (rc == 0 && cut && e->cut_from) {
        const char *p = strstr(cut, "records from seq ");
        uint64_t first = p ? strtoull(p + 17, NULL, 10) : 0;
        if (first < e->cut_from)
            bad(x, "%s: the writer cut from seq %" PRIu64 ", but the damage "
                "starts at seq %" PRIu64 ": %s", what, first, e->cut_from, err);
        else
            x->writer_cut++;
    } else if (rc == 0 && !cut && e->writer_may_pass) {
        x->writer_not_walked++;
    } else if (rc == 0 && !cut && e->reserved_tail) {
        x->writer_reserved_tail++;
    } else {
        bad(x, "%s: the writer's open gave exit %d%s (expected exit %d%s%s): "
            "%s", what, rc, cut ? " with a cut" : "", e->status,
            e->cut_from ? " or a reported cut" : "",
            e->writer_may_pass ? " or no check of that file" : "", err);
    }
    free(err);
}

static void check(struct ctx *x, int kind, const char *what,
                  const struct expect *e)
{
    x->tried++;
    x->by_kind[kind]++;
    check_verify(x, what, e, 1);
    check_verify(x, what, e, 0);
    check_writer(x, what, e);
}

/* Expectations for damage starting at (file, off) and ending at end. */
static void expect_range(const struct ctx *x, struct expect *e, const char *file,
                         uint64_t off, uint64_t end)
{
    memset(e, 0, sizeof *e);
    e->status = 3;
    e->file = file;
    const struct unit *u = unit_at(x, file, off);
    if (!u)
        st_fail("no header or frame holds %s offset %" PRIu64, file, off);
    e->check_off = 1;
    e->off = u->off;
    int last_file = strcmp(file, x->segs[x->nsegs - 1]) == 0;
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", x->a, file);
    if (!last_file && u->seq != 0)
        e->writer_may_pass = 1;
    if (last_file && u->seq != 0) {
        const struct unit *lastu = unit_at(x, file, fsize(path) - 1);
        if (u == lastu || end >= fsize(path))
            e->cut_from = u->seq;
    }
}

/* ---- the damage ---------------------------------------------------------------- */

enum { K_FLIP, K_PAGE, K_SHUFFLE, K_DUP, K_FOREIGN_SEG, K_FOREIGN_META,
       K_MISSING, K_TRUNC, K_COUNT };
static const char *kind_name[K_COUNT] = {
    "flip", "page", "shuffle", "dup", "foreign_seg", "foreign_meta",
    "missing", "truncated",
};

static void bit_flip(struct ctx *x)
{
    /* a byte uniformly over every byte of the journal's files */
    uint64_t total = 0, sizes[65];
    char path[4096];
    snprintf(path, sizeof path, "%s/tally.meta", x->a);
    sizes[0] = fsize(path);
    total = sizes[0];
    for (size_t i = 0; i < x->nsegs; i++) {
        snprintf(path, sizeof path, "%s/%s", x->a, x->segs[i]);
        sizes[i + 1] = fsize(path);
        total += sizes[i + 1];
    }
    uint64_t pick = st_rng_below(&x->rng, total);
    size_t fi = 0;
    while (pick >= sizes[fi]) {
        pick -= sizes[fi];
        fi++;
    }
    unsigned bit = (unsigned)st_rng_below(&x->rng, 8);
    const char *file = fi == 0 ? "tally.meta" : x->segs[fi - 1];
    fresh_copy(x);
    snprintf(path, sizeof path, "%s/%s", x->w, file);
    size_t len;
    uint8_t *p = st_read_file(path, &len);
    p[pick] ^= (uint8_t)(1u << bit);
    st_write_file(path, p, len);
    free(p);
    char what[256];
    snprintf(what, sizeof what, "bit %u of byte %" PRIu64 " of %s flipped", bit,
             pick, file);
    struct expect e;
    if (fi == 0) {
        memset(&e, 0, sizeof e);
        e.status = 3;
        e.file = "tally.meta";
    } else {
        expect_range(x, &e, file, pick, pick + 1);
    }
    check(x, K_FLIP, what, &e);
}

static void zero_page(struct ctx *x)
{
    for (int tries = 0; tries < 100; tries++) {
        size_t fi = (size_t)st_rng_below(&x->rng, x->nsegs);
        const char *file = x->segs[fi];
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", x->a, file);
        uint64_t size = fsize(path);
        uint64_t page = st_rng_below(&x->rng, (size + 4095) / 4096) * 4096;
        uint64_t end = page + 4096 < size ? page + 4096 : size;
        fresh_copy(x);
        snprintf(path, sizeof path, "%s/%s", x->w, file);
        size_t len;
        uint8_t *p = st_read_file(path, &len);
        int nonzero = 0;
        for (uint64_t i = page; i < end; i++)
            nonzero |= p[i];
        if (!nonzero) {
            free(p);
            continue;
        }
        /* the first byte that actually changes */
        uint64_t first = page;
        while (p[first] == 0)
            first++;
        memset(p + page, 0, (size_t)(end - page));
        st_write_file(path, p, len);
        struct expect e;
        expect_range(x, &e, file, first, end);
        int tail = fi == x->nsegs - 1;
        for (uint64_t i = e.off; tail && i < len; i++)
            tail = p[i] == 0;
        e.reserved_tail = tail;
        free(p);
        char what[256];
        snprintf(what, sizeof what, "page at %" PRIu64 " (to %" PRIu64 ") of "
                 "%s (%" PRIu64 " bytes) zeroed", page, end, file, size);
        check(x, K_PAGE, what, &e);
        return;
    }
    st_fail("no page with data found to zero");
}

static void copy_file(const char *from, const char *to)
{
    size_t len;
    uint8_t *p = st_read_file(from, &len);
    if (!p)
        st_fail("%s missing", from);
    st_write_file(to, p, len);
    free(p);
}

static void structural(struct ctx *x)
{
    char p1[4096], p2[4096], tmp[4096], what[256];
    struct expect e;
    size_t n = x->nsegs;

    /* shuffle: swap two files' contents (i < j): i is named first */
    for (size_t i = 0; i + 1 < n; i += 2) {
        size_t j = i + 1 + (size_t)st_rng_below(&x->rng, n - i - 1);
        fresh_copy(x);
        snprintf(p1, sizeof p1, "%s/%s", x->w, x->segs[i]);
        snprintf(p2, sizeof p2, "%s/%s", x->w, x->segs[j]);
        snprintf(tmp, sizeof tmp, "%s/swap", x->w);
        if (rename(p1, tmp) < 0 || rename(p2, p1) < 0 || rename(tmp, p2) < 0)
            st_fail("rename: %s", strerror(errno));
        snprintf(what, sizeof what, "%s and %s swapped", x->segs[i], x->segs[j]);
        memset(&e, 0, sizeof e);
        e.status = 3;
        e.file = x->segs[i];
        e.check_off = 1;
        e.off = 0;
        check(x, K_SHUFFLE, what, &e);
    }

    /* duplicate: file i copied over i + 1; the last copied past the end */
    for (size_t i = 0; i + 1 < n; i++) {
        fresh_copy(x);
        snprintf(p1, sizeof p1, "%s/%s", x->w, x->segs[i]);
        snprintf(p2, sizeof p2, "%s/%s", x->w, x->segs[i + 1]);
        copy_file(p1, p2);
        snprintf(what, sizeof what, "%s copied over %s", x->segs[i],
                 x->segs[i + 1]);
        memset(&e, 0, sizeof e);
        e.status = 3;
        e.file = x->segs[i + 1];
        e.check_off = 1;
        e.off = 0;
        check(x, K_DUP, what, &e);
    }
    for (size_t i = 0; i < n; i += n - 1) {
        fresh_copy(x);
        char next[32];
        uint64_t no = strtoull(x->segs[n - 1], NULL, 16) + 1;
        snprintf(next, sizeof next, "%016" PRIx64 ".seg", no);
        snprintf(p1, sizeof p1, "%s/%s", x->w, x->segs[i]);
        snprintf(p2, sizeof p2, "%s/%s", x->w, next);
        copy_file(p1, p2);
        snprintf(what, sizeof what, "%s copied again as %s", x->segs[i], next);
        memset(&e, 0, sizeof e);
        e.status = 3;
        e.file = strdup(next);
        e.check_off = 1;
        e.off = 0;
        check(x, K_DUP, what, &e);
        free((char *)e.file);
        if (n == 1)
            break;
    }

    /* foreign segments: the same-numbered file of journal b (same key,
     * other name) and c (other key, same name) */
    const char *other[2] = { x->b, x->c };
    for (int o = 0; o < 2; o++) {
        for (size_t i = 0; i < n; i++) {
            snprintf(p1, sizeof p1, "%s/%s", other[o], x->segs[i]);
            if (access(p1, F_OK) != 0)
                continue;
            fresh_copy(x);
            snprintf(p2, sizeof p2, "%s/%s", x->w, x->segs[i]);
            copy_file(p1, p2);
            snprintf(what, sizeof what, "%s replaced by the one of journal %s",
                     x->segs[i], o == 0 ? "beta (same key)" : "alpha (other key)");
            memset(&e, 0, sizeof e);
            e.status = 3;
            e.file = x->segs[i];
            e.check_off = 1;
            e.off = 0;
            check(x, K_FOREIGN_SEG, what, &e);
        }
    }

    /* foreign metadata: beta's (same key) -> 3; the other key's -> 5 with
     * the key, 3 without (its jid is not the segments') */
    for (int o = 0; o < 2; o++) {
        fresh_copy(x);
        snprintf(p1, sizeof p1, "%s/tally.meta", other[o]);
        snprintf(p2, sizeof p2, "%s/tally.meta", x->w);
        copy_file(p1, p2);
        snprintf(what, sizeof what, "tally.meta replaced by the one of %s",
                 o == 0 ? "journal beta (same key)" : "a journal of another key");
        memset(&e, 0, sizeof e);
        e.status = o == 0 ? 3 : 5;
        e.keyless_status = 3;
        e.file = o == 0 ? x->segs[0] : NULL;
        check(x, K_FOREIGN_META, what, &e);
    }

    /* a missing segment in the middle: the next one is named */
    for (size_t i = 1; i + 1 < n; i++) {
        fresh_copy(x);
        snprintf(p1, sizeof p1, "%s/%s", x->w, x->segs[i]);
        if (unlink(p1) < 0)
            st_fail("unlink %s: %s", p1, strerror(errno));
        snprintf(what, sizeof what, "%s removed", x->segs[i]);
        memset(&e, 0, sizeof e);
        e.status = 3;
        e.file = x->segs[i + 1];
        e.check_off = 1;
        e.off = 0;
        /* The writer checks each header on its own and the last file's
         * link to the one before it (FORMAT.md §6): a gap further back
         * passes its open; verify must catch it. */
        e.writer_may_pass = i + 2 < n;
        check(x, K_MISSING, what, &e);
    }

    /* Zeroed runs of whole frames in the last file (a lost or zeroed
     * multi-sector write, bit rot of a page): (a) two frames in the middle,
     * whole synced records after them: damage, the writer must refuse;
     * (b) from a frame boundary to the end of the file: indistinguishable
     * from a torn tail, the writer may cut it but must report the cut. */
    {
        const char *last = x->segs[n - 1];
        const struct unit *fr[512];
        size_t nf = 0;
        for (size_t i = 0; i < x->nu && nf < 512; i++)
            if (strcmp(x->u[i].file, last) == 0 && x->u[i].seq)
                fr[nf++] = &x->u[i];
        if (nf < 6)
            st_fail("the last file holds only %zu frames", nf);
        for (int v = 0; v < 2; v++) {
            size_t k = nf / 2;
            uint64_t from = fr[k]->off;
            uint64_t to = v == 0 ? fr[k + 1]->off + fr[k + 1]->len
                                 : fr[nf - 1]->off + fr[nf - 1]->len;
            fresh_copy(x);
            snprintf(p1, sizeof p1, "%s/%s", x->w, last);
            size_t len;
            uint8_t *p = st_read_file(p1, &len);
            memset(p + from, 0, (size_t)(to - from));
            st_write_file(p1, p, len);
            free(p);
            snprintf(what, sizeof what, "seqs %" PRIu64 "..%" PRIu64 " (bytes "
                     "%" PRIu64 "..%" PRIu64 ") of the last file %s zeroed%s",
                     fr[k]->seq, v == 0 ? fr[k + 1]->seq : fr[nf - 1]->seq,
                     from, to, last,
                     v == 0 ? ", whole records after them" : " to its end");
            memset(&e, 0, sizeof e);
            e.status = 3;
            e.file = last;
            e.check_off = 1;
            e.off = from;
            e.cut_from = v == 1 ? fr[k]->seq : 0;
            e.reserved_tail = v == 1;
            check(x, K_PAGE, what, &e);
        }
    }

    /* A torn last frame inside the writer's reserved space, as a kill or a
     * power cut leaves it (the write stopped at a page boundary; the rest
     * of the frame and the space after it read as zeros): a torn tail.
     * verify must say so (TALLY_ETORN, exit 3); the writer cuts it. */
    {
        const char *last = x->segs[n - 1];
        const struct unit *lf = NULL;
        for (size_t i = 0; i < x->nu; i++)
            if (strcmp(x->u[i].file, last) == 0 && x->u[i].seq)
                lf = &x->u[i];
        for (uint64_t keep = 3; keep <= 40; keep += 37) {
            fresh_copy(x);
            snprintf(p1, sizeof p1, "%s/%s", x->w, last);
            size_t len;
            uint8_t *p = st_read_file(p1, &len);
            uint8_t *q = calloc(len + 4096, 1);
            memcpy(q, p, len);
            memset(q + lf->off + lf->len - keep, 0, keep);
            st_write_file(p1, q, len + 4096);
            free(p);
            free(q);
            snprintf(what, sizeof what, "the last frame (seq %" PRIu64 ") of "
                     "%s torn %" PRIu64 " bytes before its end, in a reserved "
                     "zero tail", lf->seq, last, keep);
            memset(&e, 0, sizeof e);
            e.status = 3;
            e.file = last;
            e.check_off = 1;
            e.off = lf->off;
            e.cut_from = lf->seq;
            e.want_torn = 1;
            check(x, K_PAGE, what, &e);
        }
    }

    /* a segment before the last cut short (inside its frames) */
    for (size_t i = 0; i + 1 < n; i++) {
        fresh_copy(x);
        snprintf(p1, sizeof p1, "%s/%s", x->w, x->segs[i]);
        uint64_t size = fsize(p1);
        uint64_t at = 161 + st_rng_below(&x->rng, size - 161);
        if (truncate(p1, (off_t)at) < 0)
            st_fail("truncate: %s", strerror(errno));
        snprintf(what, sizeof what, "%s cut to %" PRIu64 " of %" PRIu64
                 " bytes", x->segs[i], at, size);
        expect_range(x, &e, x->segs[i], at, size);
        /* the writer walks only the last file, and checks that it follows
         * the one before it: that one's cut is refused */
        e.writer_may_pass = i + 2 < n;
        e.cut_from = 0;
        check(x, K_TRUNC, what, &e);
    }
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        { "tally", required_argument, NULL, 't' },
        { "flips", required_argument, NULL, 'f' },
        { "pages", required_argument, NULL, 'p' },
        { "seed", required_argument, NULL, 's' },
        { "workdir", required_argument, NULL, 'w' },
        { NULL, 0, NULL, 0 },
    };
    struct ctx x;
    memset(&x, 0, sizeof x);
    unsigned flips = 50, pages = 20;
    const char *workdir = NULL;
    x.seed = st_seed_default();
    st_prog = "stress-corrupt";
    int c;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 't': x.tally = optarg; break;
        case 'f': flips = (unsigned)strtoul(optarg, NULL, 10); break;
        case 'p': pages = (unsigned)strtoul(optarg, NULL, 10); break;
        case 's': x.seed = strtoull(optarg, NULL, 0); break;
        case 'w': workdir = optarg; break;
        default:
            fprintf(stderr, "usage: stress-corrupt --tally PATH [--flips N] "
                    "[--pages N] [--seed S] [--workdir DIR]\n");
            return 2;
        }
    }
    if (!x.tally)
        st_fail("--tally is required");
    if (sodium_init() < 0)
        st_fail("sodium_init failed");
    st_rng_seed(&x.rng, x.seed);
    x.work = st_mkdtemp(workdir, "corrupt");
    if (asprintf(&x.k1, "%s/k1", x.work) < 0 || asprintf(&x.k2, "%s/k2", x.work) < 0 ||
        asprintf(&x.a, "%s/alpha", x.work) < 0 || asprintf(&x.b, "%s/beta", x.work) < 0 ||
        asprintf(&x.c, "%s/alpha-k2", x.work) < 0 || asprintf(&x.w, "%s/damaged", x.work) < 0)
        st_fail("out of memory");
    char *kg1[] = { (char *)x.tally, "keygen", x.k1, NULL };
    char *kg2[] = { (char *)x.tally, "keygen", x.k2, NULL };
    run_ok(kg1);
    run_ok(kg2);
    make_journal(&x, x.a, x.k1, "alpha", 4);
    make_journal(&x, x.b, x.k1, "beta", 4);
    make_journal(&x, x.c, x.k2, "alpha", 4);
    map_units(&x);

    /* the undamaged copy passes every check */
    fresh_copy(&x);
    char *v1[] = { (char *)x.tally, "verify", x.w, "--key-file", x.k1, NULL };
    char *v2[] = { (char *)x.tally, "verify", x.w, "--no-key", NULL };
    run_ok(v1);
    run_ok(v2);

    structural(&x);
    for (unsigned i = 0; i < flips; i++)
        bit_flip(&x);
    for (unsigned i = 0; i < pages; i++)
        zero_page(&x);

    printf("corrupt tried=%u detected_keyed=%u detected_keyless=%u "
           "placed_keyed=%u placed_keyless=%u writer_refused=%u "
           "writer_refused_placed=%u writer_refused_unplaced=%u "
           "writer_cut_reported=%u "
           "writer_not_walked=%u reserved_tail_undetected=%u "
           "writer_reserved_tail_trimmed=%u failures=%u",
           x.tried, x.detected_keyed, x.detected_keyless, x.placed_keyed,
           x.placed_keyless, x.writer_refused, x.writer_placed,
           x.writer_unplaced, x.writer_cut,
           x.writer_not_walked, x.silent_by_design, x.writer_reserved_tail,
           x.failures);
    for (int k = 0; k < K_COUNT; k++)
        printf(" %s=%u", kind_name[k], x.by_kind[k]);
    printf(" seed=%" PRIu64 "\n", x.seed);
    st_rmrf(x.work);
    free(x.u);
    free(x.work);
    free(x.k1);
    free(x.k2);
    free(x.a);
    free(x.b);
    free(x.c);
    free(x.w);
    if (x.failures)
        fprintf(stderr, "%s: %u damage cases not handled as FORMAT.md says "
                "(first 25 above)\n", st_prog, x.failures);
    return x.failures ? 1 : 0;
}
