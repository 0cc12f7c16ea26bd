/*
 * compact.c — tally_compact (FORMAT.md §11): three passes over the sealed
 * segment files of an open journal.
 *
 *   A  structure: every sealed file is walked (segment and frame headers,
 *      links as stored): seq ranges, sizes, leftovers of an interrupted
 *      merge, the newest SNAPSHOT, and per file what the snapshot rule
 *      prunes;
 *   B  keys: from the file of that snapshot on, the snapshot is
 *      authenticated and each application record after it decrypted to
 *      learn its record key; a newer record with the same key marks the
 *      older one in a bitmap (one bit per seq after the snapshot);
 *      tombstones past the retention are marked last;
 *   C  rewrite: small files are grouped up to the target size (§11.3); each
 *      group that prunes or merges anything is written to a temporary file
 *      (the record_hash of every frame to prune recomputed and its link
 *      checked), fsynced, renamed over the group's first file, the
 *      directory fsynced, and the group's other files removed in ascending
 *      order (so that a reader looking for segment s always finds it in the
 *      greatest file number <= s, §11.4).
 * The decryption of B and the hashing of C run on helper threads, over
 * batches of frames copied out of the walker's buffer.
 *
 * Memory: the walker's and the output's 1 MiB buffers, a 4 MiB batch, the
 * largest frame per thread, the key table (about 100 bytes per distinct
 * record key after the snapshot, at its load factor) and the bitmap (one
 * bit per record after the snapshot): nothing grows with what the snapshot
 * covers, nor with the size of the records.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "compact-internal.h"
#include "tally-internal.h"

/* A PRUNED frame: header, original header || record_hash, link. */
#define PRUNED_FRAME ((int64_t)TF_FRAME_OVERHEAD + TF_PRUNED_BODY)
#define OUT_CAP (1u << 20)
#define RANGE_CAP 4096u /* ranges in a COMPACTION record */

typedef struct cfile {
    char name[TF_SEG_NAME_LEN + 1];
    uint64_t no, last_no;          /* first and last segment in it */
    uint64_t first_seq, last_seq;
    uint64_t size;
    bool leftover;                 /* duplicate of an interrupted merge */
    /* pass A: every frame the snapshot rule could prune ... */
    int64_t prunable_bytes;
    uint64_t prunable_count;
    /* ... and those before the last live SNAPSHOT in this file */
    uint64_t snap_seq;
    int64_t snap_bytes;
    uint64_t snap_count;
    /* pass B: marked in the bitmap (superseded, expired tombstones) */
    int64_t sup_bytes;
    uint64_t sup_count;
    /* the plan */
    int64_t save_bytes;
    uint64_t save_count;
} cfile;

typedef struct group {
    size_t a, b;         /* file indices, inclusive; leftovers inside skipped */
    uint32_t nfiles;
    uint64_t in_bytes, out_bytes, prune_count;
} group;

/* One segment of the previous file, to recognise a leftover. */
typedef struct segmark {
    uint64_t no;
    uint8_t hdr[TF_SEG_HEADER_BYTES];
    uint8_t end_link[32];
} segmark;

/* One frame of a batch, and what a helper thread found about it. */
typedef struct fjob {
    size_t off;           /* its bytes at batch.buf.p + off */
    ti_frame_hdr h;
    uint8_t prev[32];     /* the stored link before it */
    uint64_t frame_off;   /* in its file, for messages */
    uint32_t fi;          /* index of its file */
    bool prune;           /* pass C: to be pruned */
    bool snapshot;        /* pass B: the snapshot, authenticated only */
    /* results */
    int rc;               /* 0, TALLY_EINTEGRITY (why) or -ENOMEM */
    const char *why;
    bool has_key, tomb;   /* pass B */
    uint8_t out[32];      /* pass B: key hash (16 bytes); C: record_hash */
} fjob;

/* Frames copied out of the walker's buffer so that helper threads can
 * decrypt or hash them while the walker moves on; processed in order. */
typedef struct batch {
    ti_buf buf;
    fjob *j;
    size_t n, cap;
    size_t nprune;
} batch;

#define BATCH_BYTES (4u << 20)
#define MAX_THREADS 4u

typedef struct ranges {
    tally_compaction_range *r;
    uint32_t n;
    bool coalesced;
} ranges;

typedef struct compactor {
    tally *t;
    tally_compact_options opt;
    tally_compact_report rep;
    uint64_t t0;
    uint64_t started_ns;
    int dirfd, lockfd, outfd;
    uint8_t *mk;                 /* sodium_malloc'd */
    ti_meta meta;
    bool have_meta;
    ti_dkeys keys;               /* the epochs' data keys (reader.c) */
    ti_aead aead;
    bool seg_key;
    uint64_t target;
    cfile *f;
    size_t nf;
    uint64_t snap;               /* newest live SNAPSHOT seq, 0: none */
    size_t snap_file;
    uint8_t last_link[32];       /* link of rep.last_seq */
    segmark *marks;              /* segments of the last file (pass A) */
    size_t nmarks, capmarks;
    tc_keymap km;
    uint8_t *bits;               /* seq snap + 1 + i is bit i */
    uint64_t nbits;
    group *g;
    size_t ng;
    ti_walk w;
    tc_pool *pool;
    batch b;
    ti_buf tw[MAX_THREADS];      /* per thread: AD + plaintext */
    ti_buf out;
    uint64_t out_written;
    char tmp[48];
    ranges grp, all;
    tally_compaction_file *done;
    uint32_t ndone;
    uint64_t done_pruned;
    bool crashed;
} compactor;

static int cfail(compactor *c, int rc, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int cfail(compactor *c, int rc, const char *fmt, ...)
{
    if (!c->rep.message[0]) {
        va_list ap;
        va_start(ap, fmt);
        (void)vsnprintf(c->rep.message, sizeof c->rep.message, fmt, ap);
        va_end(ap);
    }
    return rc;
}

static uint64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* The fault hook (tests): 0, a negative errno, or -ECANCELED after
 * TALLY_COMPACT_CRASH (then nothing more is done, not even clean-up). */
static int step(compactor *c, tally_compact_step s, const char *file)
{
    if (!c->opt.fault)
        return 0;
    int r = c->opt.fault(c->opt.fault_ctx, s, file);
    if (r == TALLY_COMPACT_CRASH) {
        c->crashed = true;
        return -ECANCELED;
    }
    return r < 0 ? r : 0;
}

static const char *step_name(tally_compact_step s)
{
    switch (s) {
    case TALLY_COMPACT_CREATE: return "create";
    case TALLY_COMPACT_WRITE: return "write";
    case TALLY_COMPACT_FSYNC: return "fsync";
    case TALLY_COMPACT_RENAME: return "rename";
    case TALLY_COMPACT_FSYNC_DIR: return "directory fsync";
    case TALLY_COMPACT_UNLINK: return "unlink";
    }
    return "?";
}

static int io_fail(compactor *c, int rc, tally_compact_step s,
                   const char *file)
{
    if (c->crashed)
        return cfail(c, rc, "%s: stopped before %s (fault hook)", file,
                     step_name(s));
    return cfail(c, rc, "%s: %s failed: %s", file, step_name(s),
                 tally_strerror(rc));
}

/* ---- set-up ------------------------------------------------------------------ */

/* One compaction per journal at a time: an open-file-description lock on
 * byte 0 of LOCK (independent of the writer's flock on the same file). */
static int take_lock(compactor *c)
{
    int fd = openat(c->dirfd, TF_LOCK_FILE, O_RDWR | O_CLOEXEC);
    if (fd < 0)
        return cfail(c, -errno, "%s: cannot open", TF_LOCK_FILE);
    struct flock fl;
    memset(&fl, 0, sizeof fl);
    fl.l_type = F_WRLCK;
    fl.l_whence = SEEK_SET;
    fl.l_start = 0;
    fl.l_len = 1;
    if (fcntl(fd, F_OFD_SETLK, &fl) < 0) {
        int e = errno;
        close(fd);
        if (e == EAGAIN || e == EACCES)
            return cfail(c, -EBUSY, "another compaction runs on this "
                         "journal");
        return cfail(c, -e, "%s: cannot lock", TF_LOCK_FILE);
    }
    c->lockfd = fd;
    return 0;
}

static int keys_setup(compactor *c)
{
    int rc = ti_aead_alloc(&c->aead, c->meta.cipher);
    if (rc < 0)
        return cfail(c, rc, "cannot set up the cipher");
    /* The reader's key set: a forgotten epoch is passed over, so its
     * records keep their bodies. */
    uint32_t bad = 0;
    rc = ti_dkeys_unwrap(&c->keys, &c->meta, c->mk, &bad);
    if (rc == -ENOMEM)
        return rc;
    if (rc < 0)
        return cfail(c, rc, "cannot unwrap the data key of epoch %u", bad);
    return 0;
}

static int install_key(compactor *c, const ti_seg_hdr *h)
{
    int rc = ti_dkeys_segment(&c->keys, &c->meta, &c->aead, h);
    c->seg_key = rc == 1;
    return rc < 0 ? rc : 0;
}

/* The sealed files: a prefix of the sorted listing (a file holds segments
 * of one run of numbers starting at its name, and the active segment is
 * alone in the last file). */
static int list_files(compactor *c, uint64_t sealed)
{
    char **names;
    size_t n;
    int rc = ti_seg_list(c->dirfd, &names, &n);
    if (rc < 0)
        return cfail(c, rc, "cannot list segment files");
    c->f = calloc(n ? n : 1, sizeof *c->f);
    if (!c->f) {
        ti_seg_list_free(names, n);
        return -ENOMEM;
    }
    for (size_t i = 0; i < n; i++) {
        uint64_t no;
        (void)ti_seg_parse_name(names[i], &no);
        if (no > sealed)
            break;
        cfile *f = &c->f[c->nf++];
        memcpy(f->name, names[i], TF_SEG_NAME_LEN + 1);
        f->no = no;
    }
    ti_seg_list_free(names, n);
    return 0;
}

/* ---- pass A: structure ------------------------------------------------------- */

static int walk_bad(compactor *c, const char *name, int ev)
{
    if (ev < 0)
        return cfail(c, ev, "%s: read error", name);
    return cfail(c, TALLY_EINTEGRITY, "%s: offset %" PRIu64 ", seq %" PRIu64
                 ": %s", name, c->w.frame_off, c->w.next_seq,
                 c->w.why ? c->w.why : "damaged");
}

static int add_mark(compactor *c, const ti_seg_hdr *h)
{
    if (c->nmarks == c->capmarks) {
        size_t cap = c->capmarks ? c->capmarks * 2 : 16;
        segmark *m = realloc(c->marks, cap * sizeof *m);
        if (!m)
            return -ENOMEM;
        c->marks = m;
        c->capmarks = cap;
    }
    segmark *m = &c->marks[c->nmarks++];
    m->no = h->segment_no;
    ti_seg_header_encode(m->hdr, h);
    memcpy(m->end_link, h->prev_link, 32);
    return 0;
}

/* A file whose first segment was already read is a leftover of a merge
 * that stopped before removing it (FORMAT.md §11.4) only if every segment
 * header in it, and the link it ends with, are those of the same segments
 * in the file before it: then it is a duplicate, safe to remove. Anything
 * else is damage. */
static int check_leftover(compactor *c, cfile *f)
{
    ti_walk lw;
    ti_walk_init(&lw, c->meta.jid, c->meta.cipher);
    lw.nohash = true;
    lw.started = false;
    int rc = ti_walk_open_file(&lw, c->dirfd, f->name);
    if (rc < 0) {
        ti_walk_free(&lw);
        return cfail(c, rc, "%s: cannot open", f->name);
    }
    const segmark *cur = NULL;
    bool ok = true;
    for (;;) {
        int ev = ti_walk_next(&lw);
        if (ev == TI_EV_SEGMENT) {
            uint8_t hdr[TF_SEG_HEADER_BYTES];
            ti_seg_header_encode(hdr, &lw.seg);
            cur = NULL;
            for (size_t i = 0; i < c->nmarks; i++)
                if (c->marks[i].no == lw.seg.segment_no)
                    cur = &c->marks[i];
            if (!cur || memcmp(cur->hdr, hdr, sizeof hdr) != 0) {
                ok = false;
                break;
            }
            f->last_no = lw.seg.segment_no;
            continue;
        }
        if (ev == TI_EV_FRAME)
            continue;
        if (ev == TI_EV_EOF && cur && memcmp(cur->end_link, lw.link, 32) == 0)
            break;
        ok = false;
        if (ev < 0)
            rc = ev;
        break;
    }
    c->rep.bytes_read += lw.pos;
    ti_walk_free(&lw);
    if (rc < 0)
        return cfail(c, rc, "%s: read error", f->name);
    if (!ok)
        return cfail(c, TALLY_EINTEGRITY, "%s: offset 0: segment %" PRIu64
                     " was already read from an earlier file, and this file "
                     "is not a copy of it", f->name, f->no);
    return 0;
}

static int pass_structure(compactor *c)
{
    ti_walk *w = &c->w;
    ti_walk_init(w, c->meta.jid, c->meta.cipher);
    w->nohash = true;
    bool any = false;
    for (size_t i = 0; i < c->nf; i++) {
        cfile *f = &c->f[i];
        c->rep.files_before++;
        int rc = ti_walk_open_file(w, c->dirfd, f->name);
        if (rc < 0)
            return cfail(c, rc, "%s: cannot open", f->name);
        struct stat st;
        if (fstat(w->rf.fd, &st) < 0)
            return cfail(c, -errno, "%s: cannot stat", f->name);
        f->size = (uint64_t)st.st_size;
        c->rep.bytes_before += f->size;
        if (w->segment_no > 0 && f->no <= w->segment_no) {
            ti_rfile_close(&w->rf);
            w->file_open = false;
            f->leftover = true;
            rc = check_leftover(c, f);
            if (rc < 0)
                return rc;
            continue;
        }
        c->nmarks = 0;
        f->first_seq = w->next_seq;
        bool first = true;
        for (;;) {
            int ev = ti_walk_next(w);
            if (ev == TI_EV_EOF)
                break;
            if (ev == TI_EV_SEGMENT) {
                if (first && w->seg.segment_no != f->no)
                    return cfail(c, TALLY_EINTEGRITY, "%s: offset 0, seq %"
                                 PRIu64 ": segment number differs from the "
                                 "file name", f->name, w->seg.first_seq);
                if (!ti_meta_epoch(&c->meta, w->seg.epoch))
                    return cfail(c, TALLY_EINTEGRITY, "%s: offset %" PRIu64
                                 ": segment epoch unknown to the metadata",
                                 f->name, w->frame_off);
                first = false;
                rc = add_mark(c, &w->seg);
                if (rc < 0)
                    return rc;
                continue;
            }
            if (ev != TI_EV_FRAME)
                return walk_bad(c, f->name, ev);
            const ti_frame_hdr *h = &w->fh;
            memcpy(c->marks[c->nmarks - 1].end_link, w->link, 32);
            c->rep.records++;
            if (h->kind == TF_KIND_PRUNED) {
                c->rep.already_pruned++;
                continue;
            }
            if (h->vtype == TALLY_TYPE_SNAPSHOT) {
                f->snap_seq = h->seq;
                f->snap_bytes = f->prunable_bytes;
                f->snap_count = f->prunable_count;
            }
            if (h->vtype == TALLY_TYPE_CHECKPOINT ||
                h->vtype == TALLY_TYPE_COMPACTION)
                continue; /* never pruned (§11.1) */
            f->prunable_bytes += (int64_t)ti_frame_len(h) - PRUNED_FRAME;
            f->prunable_count++;
        }
        f->last_seq = w->next_seq - 1;
        f->last_no = w->segment_no;
        c->rep.bytes_read += w->pos;
        ti_rfile_close(&w->rf);
        w->file_open = false;
        if (f->snap_seq) {
            c->snap = f->snap_seq;
            c->snap_file = i;
        }
        if (!any && f->last_seq >= f->first_seq) {
            c->rep.first_seq = f->first_seq;
            any = true;
        }
    }
    if (any)
        c->rep.last_seq = w->next_seq - 1;
    memcpy(c->last_link, w->link, 32);
    c->rep.snapshot_seq = c->snap;
    ti_walk_free(w);
    return 0;
}

/* ---- batches ---------------------------------------------------------------- */

static int batch_add(compactor *c, size_t fi, bool prune)
{
    ti_walk *w = &c->w;
    batch *b = &c->b;
    size_t flen = (size_t)ti_frame_len(&w->fh);
    if (ti_buf_reserve(&b->buf, b->buf.len + flen) < 0)
        return -ENOMEM;
    if (b->n == b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 4096;
        fjob *nj = realloc(b->j, cap * sizeof *nj);
        if (!nj)
            return -ENOMEM;
        b->j = nj;
        b->cap = cap;
    }
    fjob *j = &b->j[b->n++];
    memset(j, 0, sizeof *j);
    j->off = b->buf.len;
    j->h = w->fh;
    memcpy(j->prev, w->prev_link, 32);
    j->frame_off = w->frame_off;
    j->fi = (uint32_t)fi;
    j->prune = prune;
    b->nprune += prune;
    memcpy(b->buf.p + b->buf.len, w->frame, flen);
    b->buf.len += flen;
    return 0;
}

static void batch_clear(batch *b)
{
    b->n = 0;
    b->nprune = 0;
    b->buf.len = 0;
}

/* Jobs are dealt out in runs of 8 so that each thread reads its own
 * stretch of the buffer. */
static bool mine(size_t i, unsigned tid, unsigned n)
{
    return (i / 8) % n == tid;
}

static int job_fail(compactor *c, const fjob *j)
{
    if (j->rc == -ENOMEM)
        return cfail(c, -ENOMEM, "out of memory");
    return cfail(c, TALLY_EINTEGRITY, "%s: offset %" PRIu64 ", seq %" PRIu64
                 ": %s", c->f[j->fi].name, j->frame_off, j->h.seq, j->why);
}

/* Pass B's work: authenticate and decrypt, parse the envelope, hash the
 * record key. The segment key is shared read-only (a batch never spans
 * segments). */
static void decrypt_task(void *ctx, unsigned tid, unsigned n)
{
    compactor *c = ctx;
    batch *b = &c->b;
    ti_buf *work = &c->tw[tid];
    for (size_t i = 0; i < b->n; i++) {
        if (!mine(i, tid, n))
            continue;
        fjob *j = &b->j[i];
        if (ti_buf_reserve(work, TF_AD_BYTES + j->h.body_len) < 0) {
            j->rc = -ENOMEM;
            continue;
        }
        const uint8_t *env;
        size_t env_len;
        ti_env e;
        if (ti_frame_open(&c->aead, c->meta.jid, j->prev, b->buf.p + j->off,
                          &j->h, work->p, &env, &env_len) < 0) {
            j->rc = TALLY_EINTEGRITY;
            j->why = "record does not authenticate (tag)";
            continue;
        }
        if (ti_env_parse(env, env_len, &j->h, &e, &j->why) < 0) {
            j->rc = TALLY_EINTEGRITY;
            continue;
        }
        if (j->snapshot)
            continue;
        j->has_key = e.key_len > 0;
        j->tomb = e.raw_len == 0;
        if (j->has_key)
            tc_keymap_hash(&c->km, e.key, e.key_len, j->out);
    }
}

/* Pass C's work: the record_hash of each frame to prune, and its link
 * checked from the stored link before it, so that a damaged body is never
 * baked into a PRUNED frame. Kept frames are copied as they are. */
static void hash_task(void *ctx, unsigned tid, unsigned n)
{
    compactor *c = ctx;
    batch *b = &c->b;
    for (size_t i = 0; i < b->n; i++) {
        fjob *j = &b->j[i];
        if (!j->prune || !mine(i, tid, n))
            continue;
        const uint8_t *f = b->buf.p + j->off;
        if (ti_frame_record_hash(f, &j->h, j->out, &j->why) < 0) {
            j->rc = TALLY_EINTEGRITY;
            continue;
        }
        uint8_t l[32];
        ti_link(l, j->prev, j->out);
        if (memcmp(l, f + ti_frame_len(&j->h) - 32, 32) != 0) {
            j->rc = TALLY_EINTEGRITY;
            j->why = "link does not verify";
        }
    }
}

/* ---- pass B: record keys ----------------------------------------------------- */

static void mark(compactor *c, uint64_t seq, uint32_t file, int32_t saving)
{
    uint64_t b = seq - c->snap - 1;
    c->bits[b >> 3] |= (uint8_t)(1u << (b & 7));
    c->f[file].sup_bytes += saving;
    c->f[file].sup_count++;
}

static bool marked(const compactor *c, uint64_t seq)
{
    if (seq <= c->snap || seq - c->snap > c->nbits)
        return false;
    uint64_t b = seq - c->snap - 1;
    return (c->bits[b >> 3] >> (b & 7)) & 1u;
}

/* Decrypts the batch (helper threads), then, in seq order, marks what each
 * record key supersedes. */
static int flush_keys(compactor *c)
{
    batch *b = &c->b;
    if (b->n == 0)
        return 0;
    tc_pool_run(c->pool, decrypt_task, c);
    for (size_t i = 0; i < b->n; i++) {
        const fjob *j = &b->j[i];
        if (j->rc < 0)
            return job_fail(c, j);
        if (!j->has_key || j->snapshot)
            continue;
        tc_kent *k;
        int rc = tc_keymap_get(&c->km, j->out, &k);
        if (rc < 0)
            return rc;
        if (rc == 1) {
            mark(c, k->seq, k->file, k->saving);
            c->rep.pruned_superseded++;
        }
        k->seq = j->h.seq;
        k->ts_ns = j->h.ts_ns;
        k->file = j->fi;
        k->saving = (int32_t)((int64_t)ti_frame_len(&j->h) - PRUNED_FRAME);
        k->tomb = j->tomb;
    }
    batch_clear(b);
    return 0;
}

/* 0, <0, or 1: the snapshot cannot be authenticated (its key epoch was
 * forgotten), so it is not used; the caller runs this again without it. */
static int pass_keys(compactor *c)
{
    c->nbits = c->rep.last_seq > c->snap ? c->rep.last_seq - c->snap : 0;
    free(c->bits);
    c->bits = calloc((size_t)(c->nbits / 8 + 1), 1);
    if (!c->bits)
        return -ENOMEM;
    tc_keymap_free(&c->km);
    tc_keymap_init(&c->km);
    for (size_t i = 0; i < c->nf; i++) {
        c->f[i].sup_bytes = 0;
        c->f[i].sup_count = 0;
    }
    c->rep.pruned_superseded = c->rep.pruned_tombstones = 0;
    batch_clear(&c->b);
    ti_walk *w = &c->w;
    ti_walk_free(w);
    ti_walk_init(w, c->meta.jid, c->meta.cipher);
    w->nohash = true;   /* pass A checked the structure; AEAD the rest */
    w->started = false;
    for (size_t i = c->snap ? c->snap_file : 0; i < c->nf; i++) {
        cfile *f = &c->f[i];
        if (f->leftover)
            continue;
        int rc = ti_walk_open_file(w, c->dirfd, f->name);
        if (rc < 0)
            return cfail(c, rc, "%s: cannot open", f->name);
        for (;;) {
            int ev = ti_walk_next(w);
            if (ev == TI_EV_EOF)
                break;
            if (ev == TI_EV_SEGMENT) {
                rc = flush_keys(c); /* the batch's key is this one's */
                if (rc == 0)
                    rc = install_key(c, &w->seg);
                if (rc < 0)
                    return rc;
                continue;
            }
            if (ev != TI_EV_FRAME)
                return walk_bad(c, f->name, ev);
            const ti_frame_hdr *h = &w->fh;
            if (h->seq == c->snap) {
                /* The snapshot rule trusts this record's visible type: it
                 * must authenticate (the frame header is in the AD), or a
                 * storage attacker could make any record a snapshot. */
                if (h->kind != TF_KIND_SEALED)
                    return cfail(c, TALLY_EINTEGRITY, "%s: offset %" PRIu64
                                 ", seq %" PRIu64 ": a SNAPSHOT record must "
                                 "be sealed", f->name, w->frame_off, h->seq);
                if (!c->seg_key)
                    return 1; /* its epoch was forgotten: not usable */
                rc = batch_add(c, i, false);
                if (rc == 0)
                    c->b.j[c->b.n - 1].snapshot = true;
                if (rc < 0)
                    return rc;
                continue;
            }
            if (h->seq <= c->snap || h->kind != TF_KIND_SEALED ||
                h->vtype != 0 || !c->seg_key)
                continue; /* only application records have keys */
            rc = batch_add(c, i, false);
            if (rc == 0 && c->b.buf.len >= BATCH_BYTES)
                rc = flush_keys(c);
            if (rc < 0)
                return rc;
        }
        c->rep.bytes_read += w->pos;
        ti_rfile_close(&w->rf);
        w->file_open = false;
    }
    int rc = flush_keys(c);
    if (rc < 0)
        return rc;
    ti_walk_free(w);
    if (c->opt.tombstone_retention_ns) {
        uint64_t now = c->opt.now_ns ? c->opt.now_ns : ti_now_ns();
        for (size_t i = 0; i < c->km.cap; i++) {
            const tc_kent *k = &c->km.t[i];
            if (k->used && k->tomb && now > k->ts_ns &&
                now - k->ts_ns > c->opt.tombstone_retention_ns) {
                mark(c, k->seq, k->file, k->saving);
                c->rep.pruned_tombstones++;
            }
        }
    }
    return 0;
}

/* ---- the plan ------------------------------------------------------------------ */

/* A run of files becomes one merged file when that is worth rewriting it:
 * four files or more, or a result of at least half the target (so that a
 * run which keeps growing by one small file per compaction — each run's
 * COMPACTION record starts one — is not rewritten every time). Otherwise
 * each of its files that has something to prune is rewritten alone. */
static void add_group(compactor *c, const group *g)
{
    if (g->nfiles >= 4 || (g->nfiles >= 2 && g->out_bytes >= c->target / 2)) {
        c->g[c->ng++] = *g;
        return;
    }
    for (size_t i = g->a; i <= g->b; i++) {
        const cfile *f = &c->f[i];
        if (f->leftover || f->save_count == 0)
            continue;
        group one;
        memset(&one, 0, sizeof one);
        one.a = one.b = i;
        one.nfiles = 1;
        one.in_bytes = f->size;
        one.out_bytes = (uint64_t)((int64_t)f->size - f->save_bytes);
        one.prune_count = f->save_count;
        c->g[c->ng++] = one;
    }
}

static int plan(compactor *c)
{
    for (size_t i = 0; i < c->nf; i++) {
        cfile *f = &c->f[i];
        if (f->leftover) {
            c->rep.leftovers_removed++;
            continue;
        }
        if (c->snap && i < c->snap_file) {
            f->save_bytes = f->prunable_bytes;
            f->save_count = f->prunable_count;
            c->rep.pruned_by_snapshot += f->prunable_count;
        } else if (c->snap && i == c->snap_file) {
            f->save_bytes = f->snap_bytes + f->sup_bytes;
            f->save_count = f->snap_count + f->sup_count;
            c->rep.pruned_by_snapshot += f->snap_count;
        } else {
            f->save_bytes = f->sup_bytes;
            f->save_count = f->sup_count;
        }
        c->rep.records_pruned += f->save_count;
    }
    c->g = calloc(c->nf ? c->nf : 1, sizeof *c->g);
    if (!c->g)
        return -ENOMEM;
    /* Which files may be merged (FORMAT.md §11.3): those whose size after
     * pruning is under half the target ("small"; a bigger one is near the
     * target already), except the last sealed file: when the writer closes
     * with an empty active segment it becomes the last file of the
     * journal, and a leftover there (a crash before its removal) would not
     * continue the file before it, which recovery checks (§6, §11.4). */
    size_t last = c->nf;
    for (size_t i = 0; i < c->nf; i++)
        if (!c->f[i].leftover)
            last = i;
    group cur;
    memset(&cur, 0, sizeof cur);
    bool open = false;
    for (size_t i = 0; i <= c->nf; i++) {
        const cfile *f = i < c->nf ? &c->f[i] : NULL;
        if (f && f->leftover)
            continue;
        uint64_t out = f ? (uint64_t)((int64_t)f->size - f->save_bytes) : 0;
        bool small = f && !c->opt.no_merge && i != last &&
                     out < c->target / 2;
        if (small && open && cur.out_bytes + out <= c->target) {
            cur.b = i;
            cur.nfiles++;
            cur.in_bytes += f->size;
            cur.out_bytes += out;
            cur.prune_count += f->save_count;
            continue;
        }
        if (open)
            add_group(c, &cur);
        open = false;
        if (!f)
            break;
        cur.a = cur.b = i;
        cur.nfiles = 1;
        cur.in_bytes = f->size;
        cur.out_bytes = out;
        cur.prune_count = f->save_count;
        if (small) {
            open = true;
        } else {
            add_group(c, &cur);
        }
    }
    /* What the directory will hold. */
    c->rep.files_after = c->rep.files_before - c->rep.leftovers_removed;
    c->rep.bytes_after = 0;
    for (size_t i = 0; i < c->nf; i++)
        if (!c->f[i].leftover)
            c->rep.bytes_after += (uint64_t)((int64_t)c->f[i].size -
                                             c->f[i].save_bytes);
    for (size_t k = 0; k < c->ng; k++) {
        const group *g = &c->g[k];
        c->rep.files_after -= g->nfiles - 1;
        c->rep.files_rewritten++;
        for (size_t i = g->a + 1; i <= g->b; i++)
            if (!c->f[i].leftover)
                c->rep.segments_merged += c->f[i].last_no - c->f[i].no + 1;
    }
    return 0;
}

/* ---- pass C: rewriting ----------------------------------------------------- */

static void ranges_coalesce(ranges *r)
{
    uint32_t n = (r->n + 1) / 2;
    for (uint32_t i = 0; i < n; i++) {
        uint32_t j = 2 * i + 1 < r->n ? 2 * i + 1 : 2 * i;
        r->r[i].first_seq = r->r[2 * i].first_seq;
        r->r[i].last_seq = r->r[j].last_seq;
    }
    r->n = n;
    r->coalesced = true;
}

/* Adds [first, last] (after every range there); at 2 * RANGE_CAP the list
 * is halved by joining neighbours, so it stays bounded. */
static void ranges_add(ranges *r, uint64_t first, uint64_t last)
{
    if (r->n && r->r[r->n - 1].last_seq + 1 == first) {
        r->r[r->n - 1].last_seq = last;
        return;
    }
    if (r->n == 2 * RANGE_CAP)
        ranges_coalesce(r);
    r->r[r->n].first_seq = first;
    r->r[r->n].last_seq = last;
    r->n++;
}

static int out_write(compactor *c, const uint8_t *p, size_t n)
{
    int rc = step(c, TALLY_COMPACT_WRITE, c->tmp);
    if (rc == 0)
        rc = ti_write_all(c->outfd, p, n);
    if (rc < 0)
        return io_fail(c, rc, TALLY_COMPACT_WRITE, c->tmp);
    c->out_written += n;
    c->rep.bytes_written += n;
    return 0;
}

static int out_flush(compactor *c)
{
    if (c->out.len == 0)
        return 0;
    int rc = out_write(c, c->out.p, c->out.len);
    c->out.len = 0;
    return rc;
}

static int out_put(compactor *c, const uint8_t *p, size_t n)
{
    if (c->out.len + n > OUT_CAP) {
        int rc = out_flush(c);
        if (rc < 0)
            return rc;
        if (n > OUT_CAP)
            return out_write(c, p, n);
    }
    memcpy(c->out.p + c->out.len, p, n);
    c->out.len += n;
    return 0;
}

static bool prune_it(const compactor *c, const ti_frame_hdr *h)
{
    if (h->kind == TF_KIND_PRUNED || h->vtype == TALLY_TYPE_CHECKPOINT ||
        h->vtype == TALLY_TYPE_COMPACTION)
        return false;
    return h->seq < c->snap || marked(c, h->seq);
}

/* Hashes the frames of the batch to prune (helper threads), then writes
 * the batch out in order: PRUNED forms and kept frames as they are. */
static int flush_copy(compactor *c, uint64_t *pruned)
{
    batch *b = &c->b;
    if (b->nprune)
        tc_pool_run(c->pool, hash_task, c);
    for (size_t i = 0; i < b->n; i++) {
        const fjob *j = &b->j[i];
        const uint8_t *f = b->buf.p + j->off;
        size_t flen = (size_t)ti_frame_len(&j->h);
        int rc;
        if (j->rc < 0)
            return job_fail(c, j);
        if (j->prune) {
            /* FORMAT.md §4.2: header, original header || record_hash, the
             * same link. */
            uint8_t pf[TF_FRAME_OVERHEAD + TF_PRUNED_BODY];
            ti_frame_hdr ph = j->h;
            ph.kind = TF_KIND_PRUNED;
            ph.flags = 0;
            ph.body_len = TF_PRUNED_BODY;
            ti_frame_header_encode(pf, &ph);
            memcpy(pf + 32, f, 32);
            memcpy(pf + 64, j->out, 32);
            memcpy(pf + 96, f + flen - 32, 32);
            rc = out_put(c, pf, sizeof pf);
            ranges_add(&c->grp, j->h.seq, j->h.seq);
            (*pruned)++;
        } else {
            rc = out_put(c, f, flen);
        }
        if (rc < 0)
            return rc;
    }
    batch_clear(b);
    return 0;
}

/* Copies the files of g into the temporary file, pruning as planned. The
 * structure and the stored links are walked from the group's first segment
 * header on. */
static int copy_group(compactor *c, const group *g, uint64_t *ret_pruned)
{
    ti_walk *w = &c->w;
    ti_walk_free(w);
    ti_walk_init(w, c->meta.jid, c->meta.cipher);
    w->started = false;
    w->nohash = true; /* the frames to prune are hashed in flush_copy */
    batch_clear(&c->b);
    uint64_t pruned = 0;
    for (size_t i = g->a; i <= g->b; i++) {
        const cfile *f = &c->f[i];
        if (f->leftover)
            continue;
        int rc = ti_walk_open_file(w, c->dirfd, f->name);
        if (rc < 0)
            return cfail(c, rc, "%s: cannot open", f->name);
        for (;;) {
            int ev = ti_walk_next(w);
            if (ev == TI_EV_EOF)
                break;
            if (ev == TI_EV_SEGMENT) {
                uint8_t hdr[TF_SEG_HEADER_BYTES];
                ti_seg_header_encode(hdr, &w->seg);
                rc = flush_copy(c, &pruned);
                if (rc == 0)
                    rc = out_put(c, hdr, sizeof hdr);
            } else if (ev == TI_EV_FRAME) {
                rc = batch_add(c, i, prune_it(c, &w->fh));
                if (rc == 0 && c->b.buf.len >= BATCH_BYTES)
                    rc = flush_copy(c, &pruned);
            } else {
                rc = walk_bad(c, f->name, ev);
            }
            if (rc < 0)
                return rc;
        }
        c->rep.bytes_read += w->pos;
        ti_rfile_close(&w->rf);
        w->file_open = false;
    }
    int rc = flush_copy(c, &pruned);
    if (rc < 0)
        return rc;
    ti_walk_free(w);
    *ret_pruned = pruned;
    return out_flush(c);
}

static int write_group(compactor *c, const group *g)
{
    const cfile *first = &c->f[g->a];
    (void)snprintf(c->tmp, sizeof c->tmp, "compact-%016" PRIx64 ".tmp",
                   first->no);
    c->grp.n = 0;
    c->grp.coalesced = false;
    c->out.len = 0;
    c->out_written = 0;
    int rc = step(c, TALLY_COMPACT_CREATE, c->tmp);
    if (rc == 0) {
        c->outfd = openat(c->dirfd, c->tmp,
                          O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
        if (c->outfd < 0)
            rc = -errno;
    }
    if (rc < 0)
        return io_fail(c, rc, TALLY_COMPACT_CREATE, c->tmp);
    uint64_t pruned = 0;
    rc = copy_group(c, g, &pruned);
    if (rc == 0 && (pruned != g->prune_count || c->out_written != g->out_bytes))
        rc = cfail(c, -EIO, "%s: the files changed during the compaction "
                   "(planned %" PRIu64 " pruned records in %" PRIu64
                   " bytes, found %" PRIu64 " in %" PRIu64 ")", first->name,
                   g->prune_count, g->out_bytes, pruned, c->out_written);
    if (rc == 0) {
        rc = step(c, TALLY_COMPACT_FSYNC, c->tmp);
        if (rc == 0 && fsync(c->outfd) < 0)
            rc = -errno;
        if (rc < 0)
            rc = io_fail(c, rc, TALLY_COMPACT_FSYNC, c->tmp);
    }
    if (c->crashed)
        return rc; /* as if the process died: the fd goes with it */
    close(c->outfd);
    c->outfd = -1;
    if (rc == 0) {
        rc = step(c, TALLY_COMPACT_RENAME, first->name);
        if (rc == 0 && renameat(c->dirfd, c->tmp, c->dirfd, first->name) < 0)
            rc = -errno;
        if (rc < 0)
            rc = io_fail(c, rc, TALLY_COMPACT_RENAME, first->name);
    }
    if (rc < 0) {
        if (!c->crashed)
            (void)unlinkat(c->dirfd, c->tmp, 0);
        return rc;
    }
    /* The rename is done: the group's content is in place, whatever
     * happens next (a failed directory fsync may still lose the rename in a
     * crash, which leaves the old files: also a whole journal). */
    tally_compaction_file *d = &c->done[c->ndone++];
    d->first_segment = first->no;
    d->last_segment = c->f[g->b].last_no;
    d->files_replaced = g->nfiles;
    d->bytes_before = g->in_bytes;
    d->bytes_after = c->out_written;
    c->done_pruned += pruned;
    for (uint32_t i = 0; i < c->grp.n; i++)
        ranges_add(&c->all, c->grp.r[i].first_seq, c->grp.r[i].last_seq);
    if (c->grp.coalesced)
        c->all.coalesced = true;

    rc = step(c, TALLY_COMPACT_FSYNC_DIR, ".");
    if (rc == 0)
        rc = ti_fsync_dir(c->dirfd);
    if (rc < 0)
        return io_fail(c, rc, TALLY_COMPACT_FSYNC_DIR, ".");
    /* Ascending: a reader that misses segment s finds it in the greatest
     * file number <= s (FORMAT.md §11.4). */
    for (size_t i = g->a + 1; i <= g->b; i++) {
        const cfile *f = &c->f[i];
        if (f->leftover)
            continue;
        rc = step(c, TALLY_COMPACT_UNLINK, f->name);
        if (rc == 0 && unlinkat(c->dirfd, f->name, 0) < 0 && errno != ENOENT)
            rc = -errno;
        if (rc < 0)
            return io_fail(c, rc, TALLY_COMPACT_UNLINK, f->name);
    }
    if (g->nfiles > 1) {
        rc = step(c, TALLY_COMPACT_FSYNC_DIR, ".");
        if (rc == 0)
            rc = ti_fsync_dir(c->dirfd);
        if (rc < 0)
            return io_fail(c, rc, TALLY_COMPACT_FSYNC_DIR, ".");
    }
    return 0;
}

static int remove_leftovers(compactor *c)
{
    if (c->rep.leftovers_removed == 0)
        return 0;
    for (size_t i = 0; i < c->nf; i++) {
        const cfile *f = &c->f[i];
        if (!f->leftover)
            continue;
        int rc = step(c, TALLY_COMPACT_UNLINK, f->name);
        if (rc == 0 && unlinkat(c->dirfd, f->name, 0) < 0 && errno != ENOENT)
            rc = -errno;
        if (rc < 0)
            return io_fail(c, rc, TALLY_COMPACT_UNLINK, f->name);
    }
    int rc = step(c, TALLY_COMPACT_FSYNC_DIR, ".");
    if (rc == 0)
        rc = ti_fsync_dir(c->dirfd);
    if (rc < 0)
        return io_fail(c, rc, TALLY_COMPACT_FSYNC_DIR, ".");
    return 0;
}

/* The COMPACTION record (§11.5) of what was done; partial after an error. */
static int append_record(compactor *c, bool partial)
{
    while (c->all.n > RANGE_CAP)
        ranges_coalesce(&c->all);
    tally_compaction_info in;
    memset(&in, 0, sizeof in);
    in.flags = (uint8_t)((c->all.coalesced ? TALLY_COMPACTION_COALESCED : 0) |
                         (partial ? TALLY_COMPACTION_PARTIAL : 0));
    in.started_ns = c->started_ns;
    in.finished_ns = ti_now_ns();
    in.first_seq = c->rep.first_seq;
    in.last_seq = c->rep.last_seq;
    memcpy(in.last_link, c->last_link, 32);
    in.snapshot_seq = c->snap;
    in.tombstone_retention_ns = c->opt.tombstone_retention_ns;
    in.records_pruned = c->done_pruned;
    if (!partial) {
        in.pruned_by_snapshot = c->rep.pruned_by_snapshot;
        in.pruned_superseded = c->rep.pruned_superseded;
        in.pruned_tombstones = c->rep.pruned_tombstones;
    }
    for (uint32_t i = 0; i < c->ndone; i++) {
        in.bytes_before += c->done[i].bytes_before;
        in.bytes_after += c->done[i].bytes_after;
    }
    in.range_count = c->all.n;
    in.ranges = c->all.r;
    in.file_count = c->ndone;
    in.files = c->done;
    uint8_t *p;
    size_t len;
    int rc = tc_compaction_encode(&in, &p, &len);
    if (rc < 0)
        return cfail(c, rc, "cannot encode the COMPACTION record");
    tally_record_in r;
    memset(&r, 0, sizeof r);
    r.type = TALLY_TYPE_COMPACTION;
    r.payload = p;
    r.payload_len = len;
    uint64_t seq = 0;
    rc = tally_append(c->t, &r, &seq);
    if (rc == 0)
        rc = tally_sync(c->t, seq);
    free(p);
    if (rc < 0)
        return cfail(c, rc, "appending the COMPACTION record: %s",
                     tally_errmsg(c->t)[0] ? tally_errmsg(c->t)
                                           : tally_strerror(rc));
    c->rep.compaction_seq = seq;
    return 0;
}

static int execute(compactor *c)
{
    c->done = calloc(c->ng ? c->ng : 1, sizeof *c->done);
    c->grp.r = calloc(2 * RANGE_CAP, sizeof *c->grp.r);
    c->all.r = calloc(2 * RANGE_CAP, sizeof *c->all.r);
    if (!c->done || !c->grp.r || !c->all.r ||
        ti_buf_reserve(&c->out, OUT_CAP) < 0)
        return -ENOMEM;
    int rc = remove_leftovers(c);
    for (size_t k = 0; rc == 0 && k < c->ng; k++)
        rc = write_group(c, &c->g[k]);
    if (c->crashed)
        return rc;
    if (c->ndone > 0) {
        int rr = append_record(c, rc < 0);
        if (rc == 0)
            rc = rr;
    }
    return rc;
}

/* ---- the entry point ----------------------------------------------------------- */

static void compactor_free(compactor *c)
{
    if (c->outfd >= 0)
        close(c->outfd);
    if (c->lockfd >= 0)
        close(c->lockfd);
    if (c->dirfd >= 0)
        close(c->dirfd);
    if (c->mk)
        sodium_free(c->mk);
    ti_dkeys_free(&c->keys); /* wipes */
    ti_aead_free(&c->aead);
    if (c->have_meta)
        ti_meta_free(&c->meta);
    tc_pool_stop(c->pool);
    ti_walk_free(&c->w);
    for (unsigned i = 0; i < MAX_THREADS; i++) {
        if (c->tw[i].p) /* plaintext was there */
            sodium_memzero(c->tw[i].p, c->tw[i].cap);
        ti_buf_free(&c->tw[i]);
    }
    ti_buf_free(&c->b.buf);
    free(c->b.j);
    ti_buf_free(&c->out);
    tc_keymap_free(&c->km);
    free(c->bits);
    free(c->f);
    free(c->g);
    free(c->marks);
    free(c->grp.r);
    free(c->all.r);
    free(c->done);
    free(c);
}

int tally_compact(tally *t, const tally_compact_options *opt,
                  tally_compact_report *ret)
{
    if (!t)
        return -EINVAL;
    compactor *c = calloc(1, sizeof *c);
    if (!c)
        return -ENOMEM;
    c->t = t;
    c->dirfd = c->lockfd = c->outfd = -1;
    c->w.rf.fd = -1;
    if (opt)
        c->opt = *opt;
    c->rep.dry_run = c->opt.dry_run ? 1 : 0;
    c->t0 = mono_ns();
    c->started_ns = ti_now_ns();
    uint64_t sealed = 0;
    int rc = 0;
    c->mk = sodium_malloc(32);
    if (!c->mk)
        rc = -ENOMEM;
    if (rc == 0) {
        rc = ti_writer_compact_view(t, &c->dirfd, c->mk, &sealed);
        if (rc < 0)
            cfail(c, rc, "the writer handle: %s", tally_strerror(rc));
    }
    if (rc == 0)
        rc = take_lock(c);
    if (rc == 0) {
        char msg[256] = "";
        rc = ti_meta_read(c->dirfd, c->mk, &c->meta, msg, sizeof msg);
        if (rc < 0)
            cfail(c, rc, "%s", msg[0] ? msg : "cannot read the metadata");
        else
            c->have_meta = true;
    }
    if (rc == 0) {
        c->target = c->opt.target_size ? c->opt.target_size
                                       : c->meta.segment_size;
        rc = keys_setup(c);
    }
    if (rc == 0) {
        unsigned n = c->opt.threads;
        if (n == 0) {
            long cpus = sysconf(_SC_NPROCESSORS_ONLN);
            n = cpus > 0 ? (unsigned)cpus : 1;
        }
        rc = tc_pool_start(&c->pool, n < MAX_THREADS ? n : MAX_THREADS);
    }
    if (rc == 0)
        rc = list_files(c, sealed);
    if (rc == 0)
        rc = pass_structure(c);
    if (rc == 0)
        rc = pass_keys(c);
    if (rc == 1) {
        c->snap = 0;
        c->rep.snapshot_seq = 0;
        rc = pass_keys(c);
    }
    if (rc == 0)
        rc = plan(c);
    if (rc == 0 && !c->opt.dry_run)
        rc = execute(c);
    if (rc == -ENOMEM)
        cfail(c, rc, "out of memory");
    c->rep.elapsed_ns = mono_ns() - c->t0;
    if (ret)
        *ret = c->rep;
    compactor_free(c);
    return rc;
}
