/*
 * audit.c — tally_audit: one streaming pass over a journal directory that
 * checks everything the files and (optionally) the key can prove, then the
 * anchors, online or from an evidence bundle.
 *
 * The pass reuses the journal core's walker (tally-internal.h), which
 * checks segment headers, frame headers, seq density and the hash chain
 * (FORMAT.md §4, §7) with large buffered reads. On top of it this file
 *   - stops at the head read before the pass (a live writer's appends are
 *     noticed after it, never audited) and looks at what follows it;
 *   - with the key opens every record (tag, envelope, types, inflation);
 *   - decodes every CHECKPOINT and COMPACTION record and checks that the
 *     link it names (the anchored head, the compaction's last link) is the
 *     journal's own link at that seq: from a ring of recent links, or, for
 *     the few older ones, by a second targeted read after the pass;
 *   - pins down the first failure with its file, byte offset and seq, and
 *     says what is wrong there as precisely as the bytes allow.
 * Memory: the walker's buffer (1 MiB, or the largest frame), the ring
 * (4.5 MiB), a few dozen bytes per segment and per deferred link check.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "audit-internal.h"
#include "tally-internal.h"
#ifdef TALLY_AUDIT_WITH_COMPACT
#include "compact.h"
#endif

#define RING_BITS 17u
#define RING_N (1u << RING_BITS)
#define RING_MASK (RING_N - 1u)

const char *tally_audit_where_name(tally_audit_where w)
{
    switch (w) {
    case TALLY_AUDIT_NOWHERE:
        return "";
    case TALLY_AUDIT_METADATA:
        return "metadata";
    case TALLY_AUDIT_SEGMENT_HEADER:
        return "segment_header";
    case TALLY_AUDIT_FRAME:
        return "frame";
    case TALLY_AUDIT_RECORD:
        return "record";
    case TALLY_AUDIT_CHECKPOINT:
        return "checkpoint";
    case TALLY_AUDIT_COMPACTION:
        return "compaction";
    case TALLY_AUDIT_TAIL:
        return "tail";
    case TALLY_AUDIT_ANCHOR:
        return "anchor";
    case TALLY_AUDIT_EVIDENCE:
        return "evidence";
    case TALLY_AUDIT_IO:
        return "io";
    }
    return "";
}

/* A link some record claims for an earlier seq, checked after the pass
 * because that seq had left the ring. */
typedef struct claim {
    uint64_t at_seq;
    uint8_t link[32];
    uint64_t rec_seq;
    uint64_t rec_off;
    char rec_file[TF_SEG_NAME_LEN + 1];
    tally_audit_where kind; /* CHECKPOINT or COMPACTION */
} claim;

/* Where each segment read starts, for the deferred checks. */
typedef struct seg_at {
    uint64_t first_seq;
    uint64_t segment_no;
    uint64_t off;
    char file[TF_SEG_NAME_LEN + 1];
} seg_at;

typedef struct audit {
    const char *dir;
    const tally_audit_options *opt;
    tally_audit_report *rep;
    int dirfd;
    ti_meta meta;
    bool have_meta;
    /* keys */
    bool keyed;
    ti_dkeys keys;
    ti_aead aead;
    bool seg_key;
    /* files */
    ti_files files;
    char cur[TF_SEG_NAME_LEN + 1];
    uint64_t bytes_done_files; /* bytes of the files finished */
    uint64_t bytes_total;
    ti_walk w;
    ti_buf work, raw;
    /* range */
    uint64_t from, stop;
    bool have_before;          /* partial: the stored link before from */
    uint8_t link_before[32];
    /* link checks */
    uint64_t *ring_seq;
    uint8_t (*ring_link)[32];
    claim *claims;
    size_t nclaims, capclaims;
    seg_at *segs;
    size_t nsegs, capsegs;
    /* anchors */
    bool have_ours;
    tally_checkpoint_info ours;
    bool has_last_cp;          /* the last CHECKPOINT record in journal order */
    tally_checkpoint_info last_cp;
    uint64_t last_cp_rec;
    bool has_newest_ours;
    tally_checkpoint_info newest_ours;
    uint64_t newest_ours_rec;
    const tally_evidence *ev;
    size_t ev_next;            /* next bundle anchor to meet by seq */
    bool ev_latest_seen;       /* passed the latest state's seq */
    uint8_t ev_latest_link[32];
    /* progress */
    uint64_t t0, next_tick;
    unsigned tick;
} audit;

static uint64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void hex8(const uint8_t *h, char out[20])
{
    static const char d[] = "0123456789abcdef";
    for (int i = 0; i < 8; i++) {
        out[2 * i] = d[h[i] >> 4];
        out[2 * i + 1] = d[h[i] & 15];
    }
    memcpy(out + 16, "...", 4);
}

/* Records the first failure; later ones are ignored. Returns rc. */
static int fail(audit *a, int rc, tally_audit_where where, const char *file,
                uint64_t off, uint64_t seq, const char *fmt, ...)
    __attribute__((format(printf, 7, 8)));
static int fail(audit *a, int rc, tally_audit_where where, const char *file,
                uint64_t off, uint64_t seq, const char *fmt, ...)
{
    tally_audit_report *r = a->rep;
    if (r->rc != 0)
        return r->rc;
    r->rc = rc;
    r->where = where;
    snprintf(r->file, sizeof r->file, "%s", file ? file : "");
    r->offset = off;
    r->seq = seq;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->message, sizeof r->message, fmt, ap);
    va_end(ap);
    return rc;
}

static void progress(audit *a, bool final)
{
    if (!a->opt->progress)
        return;
    uint64_t now = mono_ns();
    if (!final && now < a->next_tick)
        return;
    uint32_t every = a->opt->progress_ms ? a->opt->progress_ms : 100;
    a->next_tick = now + (uint64_t)every * 1000000u;
    tally_audit_progress p;
    p.bytes_total = a->bytes_total;
    p.bytes_done = a->bytes_done_files + (a->w.file_open ? a->w.pos : 0);
    if (final || p.bytes_done > p.bytes_total)
        p.bytes_done = p.bytes_total;
    p.records = a->rep->records;
    p.seq = a->rep->last_seq;
    p.stop_seq = a->stop;
    p.elapsed_ns = now - a->t0;
    a->opt->progress(a->opt->progress_ctx, &p);
}

/* ---- setup ------------------------------------------------------------------- */

static int open_keys(audit *a, const uint8_t *mk)
{
    int rc = ti_aead_alloc(&a->aead, a->meta.cipher);
    if (rc < 0)
        return fail(a, rc, TALLY_AUDIT_METADATA, TF_META_FILE, 0, 0, "%s",
                    rc == TALLY_ECIPHER ? "AES-256-GCM is not available on "
                                          "this CPU"
                                        : "cannot set up the cipher");
    uint32_t bad = 0;
    rc = ti_dkeys_unwrap(&a->keys, &a->meta, mk, &bad);
    if (rc == -ENOMEM)
        return fail(a, rc, TALLY_AUDIT_IO, NULL, 0, 0, "out of memory");
    if (rc < 0)
        return fail(a, rc, TALLY_AUDIT_METADATA, TF_META_FILE, 0, 0,
                    "the data key of epoch %" PRIu32 " does not unwrap", bad);
    return 0;
}

static int install_segment_key(audit *a)
{
    int rc = ti_dkeys_segment(&a->keys, &a->meta, &a->aead, &a->w.seg);
    a->seg_key = rc == 1;
    return rc < 0 ? rc : 0;
}

/* The first segment header of a file: 1 and *ret, 0 if it has none that
 * parses, <0 error. */
static int first_header(int dirfd, const char *name, ti_seg_hdr *ret)
{
    int fd = openat(dirfd, name, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    uint8_t b[TF_SEG_HEADER_BYTES];
    ssize_t n = ti_pread_full(fd, b, sizeof b, 0);
    close(fd);
    if (n < 0)
        return (int)n;
    const char *why;
    if ((size_t)n < sizeof b || ti_seg_header_parse(b, ret, &why) < 0)
        return 0;
    return 1;
}

/* With from > 1: the index of the file whose first segment starts at or
 * before from, by binary search over the first headers. */
static int find_start_file(audit *a, size_t *ret)
{
    size_t lo = 0, hi = a->files.n; /* answer in [lo, hi) */
    while (hi - lo > 1) {
        size_t mid = lo + (hi - lo) / 2;
        ti_seg_hdr h;
        int rc = first_header(a->dirfd, a->files.names[mid], &h);
        if (rc < 0)
            return rc;
        if (rc == 0 || h.first_seq > a->from)
            hi = mid;
        else
            lo = mid;
    }
    *ret = lo;
    return 0;
}

/* ---- link checks ----------------------------------------------------------- */

static void ring_put(audit *a, uint64_t seq, const uint8_t link[32])
{
    size_t i = seq & RING_MASK;
    a->ring_seq[i] = seq;
    memcpy(a->ring_link[i], link, 32);
}

/* The journal's link at seq if it is still known: 1 and *ret, 0 not known
 * (seq 0, the genesis link, is the caller's). */
static int link_at(const audit *a, uint64_t seq, const uint8_t **ret)
{
    if (seq != 0 && a->ring_seq[seq & RING_MASK] == seq) {
        *ret = a->ring_link[seq & RING_MASK];
        return 1;
    }
    if (a->have_before && seq + 1 == a->from) {
        *ret = a->link_before;
        return 1;
    }
    return 0;
}

static int claim_mismatch(audit *a, const claim *c, const uint8_t *have)
{
    char x[20], y[20];
    hex8(c->link, x);
    hex8(have, y);
    if (c->kind == TALLY_AUDIT_CHECKPOINT)
        return fail(a, TALLY_EFORK, TALLY_AUDIT_CHECKPOINT, c->rec_file,
                    c->rec_off, c->rec_seq,
                    "the CHECKPOINT record says seq %" PRIu64 " was anchored "
                    "with head %s, but the journal's link at seq %" PRIu64
                    " is %s: the records up to it were rewritten after they "
                    "were anchored",
                    c->at_seq, x, c->at_seq, y);
    return fail(a, TALLY_EINTEGRITY, TALLY_AUDIT_COMPACTION, c->rec_file,
                c->rec_off, c->rec_seq,
                "the COMPACTION record says the link at seq %" PRIu64
                " is %s, but the journal's link there is %s",
                c->at_seq, x, y);
}

static void count_claim(audit *a, tally_audit_where kind)
{
    if (kind == TALLY_AUDIT_CHECKPOINT)
        a->rep->checkpoint_links++;
    else
        a->rep->compaction_links++;
}

/* A record at (file, off, rec_seq) claims link at at_seq: checked now if
 * the link is known, else deferred. Returns 0 or the failure. */
static int check_claim(audit *a, tally_audit_where kind, uint64_t at_seq,
                       const uint8_t link[32], uint64_t rec_seq,
                       uint64_t rec_off)
{
    claim c;
    memset(&c, 0, sizeof c);
    c.kind = kind;
    c.at_seq = at_seq;
    memcpy(c.link, link, 32);
    c.rec_seq = rec_seq;
    c.rec_off = rec_off;
    snprintf(c.rec_file, sizeof c.rec_file, "%s", a->cur);
    const uint8_t *have;
    uint8_t g[32];
    if (at_seq == 0) {
        ti_genesis(g, a->meta.jid);
        have = g;
    } else if (!link_at(a, at_seq, &have)) {
        if (at_seq + 1 < a->from)
            return 0; /* before the audited range: not checkable here */
        if (a->nclaims == a->capclaims) {
            size_t cap = a->capclaims ? 2 * a->capclaims : 64;
            claim *p = realloc(a->claims, cap * sizeof *p);
            if (!p)
                return fail(a, -ENOMEM, TALLY_AUDIT_IO, NULL, 0, 0,
                            "out of memory");
            a->claims = p;
            a->capclaims = cap;
        }
        a->claims[a->nclaims++] = c;
        return 0;
    }
    if (memcmp(have, link, 32) != 0)
        return claim_mismatch(a, &c, have);
    count_claim(a, kind);
    return 0;
}

static int cmp_claim(const void *x, const void *y)
{
    const claim *a = x, *b = y;
    return a->at_seq < b->at_seq ? -1 : a->at_seq > b->at_seq;
}

/* The deferred claims: each seq's stored link (verified by the pass) is
 * read again from the segment that holds it, structure only. */
static int resolve_claims(audit *a)
{
    if (a->nclaims == 0)
        return 0;
    qsort(a->claims, a->nclaims, sizeof *a->claims, cmp_claim);
    ti_walk w;
    ti_walk_init(&w, a->meta.jid, a->meta.cipher);
    int rc = 0;
    size_t open_seg = (size_t)-1;
    for (size_t i = 0; i < a->nclaims && rc == 0; i++) {
        claim *c = &a->claims[i];
        /* The segment holding at_seq: the last one starting at or before. */
        size_t lo = 0, hi = a->nsegs;
        while (hi - lo > 1) {
            size_t mid = lo + (hi - lo) / 2;
            if (a->segs[mid].first_seq > c->at_seq)
                hi = mid;
            else
                lo = mid;
        }
        if (a->nsegs == 0 || a->segs[lo].first_seq > c->at_seq + 1) {
            rc = fail(a, -EIO, TALLY_AUDIT_IO, c->rec_file, c->rec_off,
                      c->rec_seq, "cannot find the segment of seq %" PRIu64,
                      c->at_seq);
            break;
        }
        const seg_at *s = &a->segs[lo];
        if (open_seg != lo || w.next_seq > c->at_seq + 1) {
            rc = ti_walk_open_file(&w, a->dirfd, s->file);
            if (rc < 0) {
                rc = fail(a, rc, TALLY_AUDIT_IO, s->file, s->off, c->at_seq,
                          "cannot read the file again (compacted during the "
                          "audit? run it again)");
                break;
            }
            w.pos = s->off;
            w.started = false;
            w.nohash = true;
            open_seg = lo;
        }
        const uint8_t *have = NULL;
        uint8_t got[32];
        while (have == NULL) {
            if (w.in_segment && w.next_seq == c->at_seq + 1) {
                memcpy(got, w.link, 32);
                have = got;
                break;
            }
            int ev = ti_walk_next(&w);
            if (ev != TI_EV_SEGMENT && ev != TI_EV_FRAME) {
                rc = fail(a, ev < 0 ? ev : -EIO, TALLY_AUDIT_IO, s->file,
                          w.frame_off, c->at_seq,
                          "the second read of the segment did not reach seq "
                          "%" PRIu64 " (changed during the audit?)",
                          c->at_seq);
                break;
            }
        }
        if (!have)
            break;
        if (memcmp(have, c->link, 32) != 0) {
            rc = claim_mismatch(a, c, have);
            break;
        }
        count_claim(a, c->kind);
    }
    ti_walk_free(&w);
    return rc;
}

/* ---- the evidence bundle during the pass ------------------------------------ */

/* The bundle's anchors (and its latest state) name links at known seqs:
 * each is compared as the pass goes by. */
static int evidence_frame(audit *a, uint64_t seq, const uint8_t link[32],
                          uint64_t off)
{
    const tally_evidence *ev = a->ev;
    while (a->ev_next < ev->n && ev->anchors[a->ev_next].seq < seq)
        a->ev_next++; /* before the audited range */
    if (ev->info.latest.seq == seq) {
        a->ev_latest_seen = true;
        memcpy(a->ev_latest_link, link, 32);
    }
    if (a->ev_next < ev->n && ev->anchors[a->ev_next].seq == seq) {
        const ta_anchor *an = &ev->anchors[a->ev_next++];
        if (memcmp(an->head, link, 32) != 0) {
            char x[20], y[20];
            hex8(an->head, x);
            hex8(link, y);
            return fail(a, TALLY_EFORK, TALLY_AUDIT_ANCHOR, a->cur, off, seq,
                        "the chain anchored seq %" PRIu64 " with head %s in "
                        "block %" PRIu64 ", but the journal's link at seq %"
                        PRIu64 " is %s: forked",
                        seq, x, an->block_number, seq, y);
        }
    }
    return 0;
}

static const ta_anchor *evidence_find(const tally_evidence *ev, uint64_t seq)
{
    size_t lo = 0, hi = ev->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (ev->anchors[mid].seq < seq)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < ev->n && ev->anchors[lo].seq == seq ? &ev->anchors[lo] : NULL;
}

static int same_target(const tally_checkpoint_info *x,
                       const tally_checkpoint_info *y)
{
    return x->backend == y->backend && x->chain_id == y->chain_id &&
           memcmp(x->contract, y->contract, 20) == 0 &&
           memcmp(x->writer, y->writer, 20) == 0;
}

/* ---- one frame ------------------------------------------------------------ */

static int check_checkpoint(audit *a, const ti_frame_hdr *h, const ti_env *e,
                            uint64_t off)
{
    tally_audit_report *r = a->rep;
    tally_checkpoint_info c;
    if (e->key_len != 0)
        return fail(a, TALLY_EINTEGRITY, TALLY_AUDIT_CHECKPOINT, a->cur, off,
                    h->seq, "CHECKPOINT record with a record key (FORMAT.md "
                    "§9.2: empty)");
    int rc = tally_checkpoint_decode(e->data, e->data_len, &c);
    if (rc < 0)
        return fail(a, rc == TALLY_EFORMAT ? TALLY_EFORMAT : TALLY_EINTEGRITY,
                    TALLY_AUDIT_CHECKPOINT, a->cur, off, h->seq,
                    "malformed CHECKPOINT payload (%" PRIu32 " bytes; "
                    "FORMAT.md §9.2)", e->data_len);
    if (c.seq == 0 || c.seq >= h->seq)
        return fail(a, TALLY_EINTEGRITY, TALLY_AUDIT_CHECKPOINT, a->cur, off,
                    h->seq, "CHECKPOINT record anchors seq %" PRIu64
                    ", not an earlier record", c.seq);
    r->checkpoints++;
    if (!r->has_checkpoint || c.seq > r->checkpoint.seq) {
        r->has_checkpoint = 1;
        r->checkpoint = c;
        r->checkpoint_record_seq = h->seq;
    }
    a->has_last_cp = true;
    a->last_cp = c;
    a->last_cp_rec = h->seq;
    if (a->have_ours && same_target(&c, &a->ours)) {
        if (!a->has_newest_ours || c.seq > a->newest_ours.seq) {
            a->has_newest_ours = true;
            a->newest_ours = c;
            a->newest_ours_rec = h->seq;
        }
        if (a->ev) {
            const ta_anchor *an = evidence_find(a->ev, c.seq);
            char x[20];
            hex8(c.tx_hash, x);
            if (!an)
                return fail(a, TALLY_ESTALE, TALLY_AUDIT_ANCHOR, a->cur, off,
                            h->seq, "the CHECKPOINT record's anchor of seq %"
                            PRIu64 " (block %" PRIu64 ", tx %s) is not in the "
                            "evidence bundle's Anchored events",
                            c.seq, c.block_number, x);
            if (memcmp(an->head, c.head, 32) != 0 ||
                an->block_number != c.block_number ||
                memcmp(an->block_hash, c.block_hash, 32) != 0 ||
                memcmp(an->tx_hash, c.tx_hash, 32) != 0)
                return fail(a, TALLY_ESTALE, TALLY_AUDIT_ANCHOR, a->cur, off,
                            h->seq, "the CHECKPOINT record's anchor of seq %"
                            PRIu64 " (block %" PRIu64 ", tx %s) differs from "
                            "the Anchored event of that seq in the bundle "
                            "(block %" PRIu64 ")",
                            c.seq, c.block_number, x, an->block_number);
            r->anchors_checked++;
        }
    } else if (a->have_ours) {
        r->anchors_foreign++;
    }
    return check_claim(a, TALLY_AUDIT_CHECKPOINT, c.seq, c.head, h->seq, off);
}

static int check_compaction(audit *a, const ti_frame_hdr *h, const ti_env *e,
                            uint64_t off)
{
    tally_audit_report *r = a->rep;
    if (e->key_len != 0)
        return fail(a, TALLY_EINTEGRITY, TALLY_AUDIT_COMPACTION, a->cur, off,
                    h->seq, "COMPACTION record with a record key");
    r->compactions++;
    r->last_compaction_seq = h->seq;
#ifdef TALLY_AUDIT_WITH_COMPACT
    tally_compaction_info c;
    int rc = tally_compaction_decode(e->data, e->data_len, &c);
    if (rc == -ENOMEM)
        return fail(a, rc, TALLY_AUDIT_IO, NULL, 0, 0, "out of memory");
    if (rc < 0)
        return fail(a, rc == TALLY_EFORMAT ? TALLY_EFORMAT : TALLY_EINTEGRITY,
                    TALLY_AUDIT_COMPACTION, a->cur, off, h->seq,
                    "malformed COMPACTION payload (%" PRIu32 " bytes; "
                    "FORMAT.md §11.5)", e->data_len);
    uint64_t last = c.last_seq;
    uint8_t link[32];
    memcpy(link, c.last_link, 32);
    bool bad = c.first_seq > c.last_seq || c.last_seq >= h->seq ||
               c.finished_ns < c.started_ns;
    for (uint32_t i = 0; i < c.range_count && !bad; i++)
        bad = c.ranges[i].first_seq < c.first_seq ||
              c.ranges[i].last_seq > c.last_seq ||
              (i > 0 && c.ranges[i].first_seq <= c.ranges[i - 1].last_seq);
    r->compaction_pruned += c.records_pruned;
    r->last_compaction_ns = c.finished_ns;
    tally_compaction_info_free(&c);
    if (bad)
        return fail(a, TALLY_EINTEGRITY, TALLY_AUDIT_COMPACTION, a->cur, off,
                    h->seq, "COMPACTION record's seq ranges are inconsistent "
                    "(first %" PRIu64 ", last %" PRIu64 ")",
                    c.first_seq, last);
    if (last == 0)
        return 0;
    return check_claim(a, TALLY_AUDIT_COMPACTION, last, link, h->seq, off);
#else
    (void)h;
    (void)off;
    return 0;
#endif
}

static int frame(audit *a)
{
    tally_audit_report *r = a->rep;
    ti_walk *w = &a->w;
    const ti_frame_hdr *h = &w->fh;
    uint64_t off = w->frame_off;
    const uint8_t *stored = w->frame + ti_frame_len(h) - 32;

    if (r->records == 0) {
        r->first_seq = h->seq;
        r->first_ts_ns = r->last_ts_ns = h->ts_ns;
    }
    r->records++;
    r->last_seq = h->seq;
    r->head_seq = h->seq;
    memcpy(r->head, stored, 32);
    if (h->ts_ns < r->first_ts_ns)
        r->first_ts_ns = h->ts_ns;
    if (h->ts_ns > r->last_ts_ns)
        r->last_ts_ns = h->ts_ns;
    ring_put(a, h->seq, stored);
    if (a->ev) {
        int rc = evidence_frame(a, h->seq, stored, off);
        if (rc < 0)
            return rc;
    }
    if (h->vtype == TALLY_TYPE_SNAPSHOT)
        r->snapshots++;
    if (h->kind == TF_KIND_PRUNED) {
        r->pruned++;
        return 0;
    }
    if (h->kind == TF_KIND_CLEAR)
        r->clear++;
    else
        r->sealed++;

    const uint8_t *env = NULL;
    size_t env_len = 0;
    if (a->seg_key) {
        int rc = ti_buf_reserve(&a->work, TF_AD_BYTES + h->body_len);
        if (rc < 0)
            return fail(a, rc, TALLY_AUDIT_IO, NULL, 0, 0, "out of memory");
        if (ti_frame_open(&a->aead, a->meta.jid, w->prev_link, w->frame, h,
                          a->work.p, &env, &env_len) < 0)
            return fail(a, TALLY_EINTEGRITY,
                        h->vtype == TALLY_TYPE_CHECKPOINT ? TALLY_AUDIT_CHECKPOINT
                        : h->vtype == TALLY_TYPE_COMPACTION ? TALLY_AUDIT_COMPACTION
                                                            : TALLY_AUDIT_RECORD,
                        a->cur, off, h->seq,
                        "%s record does not authenticate (AEAD tag, FORMAT.md "
                        "§4.3) although its chain link verifies: the bytes "
                        "were written so, by someone without the key or with "
                        "another key",
                        h->kind == TF_KIND_CLEAR ? "CLEAR" : "SEALED");
    } else if (h->kind == TF_KIND_CLEAR) {
        env = w->frame + TF_FRAME_HEADER_BYTES; /* readable, not authenticated */
        env_len = h->body_len - TF_TAG_BYTES;
    } else {
        if (a->keyed)
            r->unreadable++; /* its epoch's key was forgotten */
        return 0;
    }
    ti_env e;
    const char *why;
    if (ti_env_parse(env, env_len, h, &e, &why) < 0)
        return fail(a, TALLY_EINTEGRITY, TALLY_AUDIT_RECORD, a->cur, off,
                    h->seq, "%s (FORMAT.md §4.2)", why);
    if (h->kind == TF_KIND_CLEAR && e.type != TALLY_TYPE_CHECKPOINT &&
        e.type != TALLY_TYPE_COMPACTION && e.type != TALLY_TYPE_PAD)
        return fail(a, TALLY_EINTEGRITY, TALLY_AUDIT_RECORD, a->cur, off,
                    h->seq, "CLEAR record of type 0x%04x (only CHECKPOINT, "
                    "COMPACTION and PAD are CLEAR)", e.type);
    if (e.type == TALLY_TYPE_PAD &&
        (h->kind != TF_KIND_CLEAR || e.key_len || e.raw_len))
        return fail(a, TALLY_EINTEGRITY, TALLY_AUDIT_RECORD, a->cur, off,
                    h->seq, "PAD record that is not CLEAR and empty "
                    "(FORMAT.md §4.2)");
    if (h->kind == TF_KIND_SEALED && e.type >= TALLY_TYPE_RESERVED &&
        e.type != TALLY_TYPE_SNAPSHOT)
        return fail(a, TALLY_EINTEGRITY, TALLY_AUDIT_RECORD, a->cur, off,
                    h->seq, "SEALED record of reserved type 0x%04x", e.type);
    if (h->flags & TF_FRAME_COMPRESSED) {
        int rc = ti_env_inflate(&e, &a->raw);
        if (rc == -ENOMEM)
            return fail(a, rc, TALLY_AUDIT_IO, NULL, 0, 0, "out of memory");
        if (rc < 0)
            return fail(a, TALLY_EINTEGRITY, TALLY_AUDIT_RECORD, a->cur, off,
                        h->seq, "compressed payload does not inflate to "
                        "raw_len %" PRIu32, e.raw_len);
    }
    if (e.type == TALLY_TYPE_CHECKPOINT)
        return check_checkpoint(a, h, &e, off);
    if (e.type == TALLY_TYPE_COMPACTION)
        return check_compaction(a, h, &e, off);
    return 0;
}

/* ---- failures of the walker, told precisely ----------------------------------- */

/* A whole frame whose link does not verify: which of its parts changed? The
 * stored link is compared with the next frame's chain, and with the key the
 * frame is opened. */
static int bad_link(audit *a)
{
    ti_walk *w = &a->w;
    const ti_frame_hdr h = w->fh;
    uint64_t off = w->frame_off, flen = ti_frame_len(&h);
    tally_audit_where where =
        h.vtype == TALLY_TYPE_CHECKPOINT   ? TALLY_AUDIT_CHECKPOINT
        : h.vtype == TALLY_TYPE_COMPACTION ? TALLY_AUDIT_COMPACTION
                                           : TALLY_AUDIT_FRAME;
    const char *what = h.vtype == TALLY_TYPE_CHECKPOINT   ? "CHECKPOINT record"
                       : h.vtype == TALLY_TYPE_COMPACTION ? "COMPACTION record"
                                                          : "frame";
    const uint8_t *f;
    uint8_t stored[32], rh[32], mine[32];
    if (ti_rfile_get(&w->rf, off, (size_t)flen, &f) != 1)
        goto plain;
    memcpy(stored, f + flen - 32, 32);
    const char *why;
    if (ti_frame_record_hash(f, &h, rh, &why) < 0)
        goto plain;
    ti_link(mine, w->link, rh);

    /* Does the next frame continue from the stored link, or from ours? */
    int next = 0; /* 1 stored link intact, 2 stored link altered */
    const uint8_t *p;
    if (ti_rfile_get(&w->rf, off + flen, TF_FRAME_HEADER_BYTES, &p) == 1) {
        ti_frame_hdr nh;
        if (ti_frame_header_parse(p, h.seq + 1, &nh, &why) == 0 &&
            ti_rfile_get(&w->rf, off + flen, (size_t)ti_frame_len(&nh), &p) == 1) {
            uint8_t nrh[32], l[32];
            if (ti_frame_record_hash(p, &nh, nrh, &why) == 0) {
                const uint8_t *nstored = p + ti_frame_len(&nh) - 32;
                ti_link(l, stored, nrh);
                if (memcmp(l, nstored, 32) == 0)
                    next = 1;
                ti_link(l, mine, nrh);
                if (memcmp(l, nstored, 32) == 0)
                    next = 2;
            }
        }
    }
    int auth = -1; /* with the key: does the frame authenticate? */
    if (a->seg_key && h.kind != TF_KIND_PRUNED &&
        ti_buf_reserve(&a->work, TF_AD_BYTES + h.body_len) == 0) {
        const uint8_t *env;
        size_t env_len;
        auth = ti_frame_open(&a->aead, a->meta.jid, w->link, f, &h, a->work.p,
                             &env, &env_len) == 0;
    }
    if (next == 2 || auth == 1)
        return fail(a, TALLY_EINTEGRITY, where, a->cur, off + flen - 32, h.seq,
                    "the link stored after the %s (32 bytes at offset %" PRIu64
                    ") was altered: the %s itself %s and the next frame "
                    "continues from the link recomputed over it",
                    what, off + flen - 32, what,
                    auth == 1 ? "authenticates" : "is intact");
    return fail(a, TALLY_EINTEGRITY, where, a->cur, off, h.seq,
                "the %s's bytes (header, body%s) were altered: its record hash "
                "no longer gives the link stored after it%s%s (frame of %" PRIu64
                " bytes at offset %" PRIu64 ")",
                what, h.kind == TF_KIND_SEALED ? ": ciphertext or tag" : "",
                next == 1 ? ", which the next frame still continues from" : "",
                auth == 0 ? "; with the key, it does not authenticate either"
                          : "",
                flen, off);
plain:
    return fail(a, TALLY_EINTEGRITY, where, a->cur, off, h.seq, "%s: %s",
                what, w->why ? w->why : "link does not verify");
}

static int bad_event(audit *a, int ev)
{
    ti_walk *w = &a->w;
    if (ev == TI_EV_BAD && !w->header_bad && w->why &&
        strcmp(w->why, "link does not verify") == 0)
        return bad_link(a);
    bool header = w->header_bad && !w->in_segment;
    uint64_t seq = w->next_seq;
    const char *why = w->why ? w->why : "invalid";
    if (header)
        return fail(a, TALLY_EINTEGRITY, TALLY_AUDIT_SEGMENT_HEADER, a->cur,
                    w->frame_off, seq, "segment header: %s (FORMAT.md §4.1)",
                    why);
    if (ev == TI_EV_TORN)
        return fail(a, TALLY_EINTEGRITY, TALLY_AUDIT_FRAME, a->cur,
                    w->frame_off, seq, "%s %s", why,
                    a->files.idx < a->files.n
                        ? "in the middle of the journal (a later file follows)"
                        : "at the end of the journal");
    if (w->header_bad)
        return fail(a, TALLY_EINTEGRITY, TALLY_AUDIT_FRAME, a->cur,
                    w->frame_off, seq, "frame header: %s (FORMAT.md §4.2)",
                    why);
    return fail(a, TALLY_EINTEGRITY, TALLY_AUDIT_FRAME, a->cur, w->frame_off,
                seq, "frame: %s", why);
}

/* ---- the files ------------------------------------------------------------- */

/* Opens the next listed file. 1 open, 0 no more files, <0 failure. */
static int next_file(audit *a)
{
    ti_walk *w = &a->w;
    while (a->files.idx < a->files.n) {
        const char *name = a->files.names[a->files.idx++];
        uint64_t no = 0;
        (void)ti_seg_parse_name(name, &no);
        /* A leftover of an interrupted merge: its segments were already
         * read from the merged file (FORMAT.md §11.4), provided it is
         * named after its first segment, as the iterator checks. */
        if (w->segment_no > 0 && no <= w->segment_no) {
            uint64_t seq = 0;
            const char *why;
            int rc = ti_seg_leftover_check(a->dirfd, &a->meta, name, &seq,
                                           &why);
            if (rc == TALLY_EINTEGRITY)
                return fail(a, rc, TALLY_AUDIT_SEGMENT_HEADER, name, 0, seq,
                            "segment header of a file passed over as a "
                            "leftover of a compaction merge: %s", why);
            if (rc < 0)
                return fail(a, rc, TALLY_AUDIT_IO, name, 0, w->next_seq,
                            "%s: %s", why, tally_strerror(rc));
            continue;
        }
        snprintf(a->cur, sizeof a->cur, "%s", name);
        int rc = ti_walk_open_file(w, a->dirfd, name);
        if (rc == -ENOENT) {
            rc = ti_walk_reopen_vanished(w, a->dirfd, &a->files, a->cur);
            if (rc < 0)
                return fail(a, rc, TALLY_AUDIT_IO, name, 0, w->next_seq,
                            "cannot find the file holding segment %" PRIu64,
                            w->segment_no + 1);
            if (rc == 1) {
                a->rep->files++;
                return 1;
            }
            continue;
        }
        if (rc < 0)
            return fail(a, rc, TALLY_AUDIT_IO, name, 0, w->next_seq,
                        "cannot open: %s", tally_strerror(rc));
        a->rep->files++;
        return 1;
    }
    return 0;
}

static void close_file(audit *a)
{
    a->bytes_done_files += a->w.pos;
    a->rep->bytes += a->w.pos;
    ti_rfile_close(&a->w.rf);
    a->w.file_open = false;
}

static int segment(audit *a)
{
    ti_walk *w = &a->w;
    tally_audit_report *r = a->rep;
    /* The rule recovery and the iterator apply (FORMAT.md §1, §4.1): the
     * first header of a file names it, every header belongs to this
     * journal's cipher and epochs. */
    const char *why;
    if (ti_seg_header_check(&a->meta, &w->seg, a->cur, w->frame_off,
                            &why) < 0)
        return fail(a, TALLY_EINTEGRITY, TALLY_AUDIT_SEGMENT_HEADER, a->cur,
                    w->frame_off, w->seg.first_seq, "segment header: %s "
                    "(segment %" PRIu64 ", epoch %" PRIu32 ")", why,
                    w->seg.segment_no, w->seg.epoch);
    r->segments++;
    if (a->nsegs == a->capsegs) {
        size_t cap = a->capsegs ? 2 * a->capsegs : 64;
        seg_at *p = realloc(a->segs, cap * sizeof *p);
        if (!p)
            return fail(a, -ENOMEM, TALLY_AUDIT_IO, NULL, 0, 0,
                        "out of memory");
        a->segs = p;
        a->capsegs = cap;
    }
    seg_at *s = &a->segs[a->nsegs++];
    s->first_seq = w->seg.first_seq;
    s->segment_no = w->seg.segment_no;
    s->off = w->frame_off;
    snprintf(s->file, sizeof s->file, "%s", a->cur);
    int rc = install_segment_key(a);
    if (rc < 0)
        return fail(a, rc, TALLY_AUDIT_IO, NULL, 0, 0, "out of memory");
    return 0;
}

/* Appends to the message of the failure just recorded. */
static void add_note(audit *a, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void add_note(audit *a, const char *fmt, ...)
{
    tally_audit_report *r = a->rep;
    size_t n = strlen(r->message);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->message + n, sizeof r->message - n, fmt, ap);
    va_end(ap);
}

/* The bytes from the walker's position to the end of its file. */
static uint64_t bytes_to_end(const ti_walk *w)
{
    struct stat st;
    uint64_t size = fstat(w->rf.fd, &st) == 0 ? (uint64_t)st.st_size
                                              : w->frame_off;
    return size > w->frame_off ? size - w->frame_off : 0;
}

/* The walker stopped (TI_EV_TORN or TI_EV_BAD) in the last file of the
 * journal: the one decision of FORMAT.md §6 (ti_tail_decide), which
 * recovery takes to cut or refuse and verify to report TALLY_ETORN or
 * TALLY_EINTEGRITY, so that the three agree on the same bytes. Returns a
 * TI_TAIL_* (*how says why, for DAMAGE), or <0 with an I/O failure
 * recorded. */
static int tail_decide(audit *a, const char **how)
{
    ti_walk *w = &a->w;
    int d = ti_tail_decide(w, how);
    if (d < 0)
        return fail(a, d, TALLY_AUDIT_IO, a->cur, w->frame_off, w->next_seq,
                    "read error at the end of the journal: %s",
                    tally_strerror(d));
    return d;
}

/* Records what tail_decide said (d: TORN or DAMAGE) about the walker's
 * event ev: a torn tail at the place recovery would cut, damage told as
 * precisely as bad_event can. Returns the failure. */
static int tail_fail(audit *a, int ev, int d, const char *how)
{
    ti_walk *w = &a->w;
    tally_audit_report *r = a->rep;
    if (d == TI_TAIL_DAMAGE) {
        int rc = bad_event(a, ev);
        if (how)
            add_note(a, " (%s)", how);
        return rc;
    }
    r->tail_bytes = bytes_to_end(w);
    const char *what =
        w->header_bad && !w->in_segment ? "segment header" : "frame";
    if (w->next_seq > a->stop)
        return fail(a, TALLY_ETORN, TALLY_AUDIT_TAIL, a->cur, w->frame_off,
                    w->next_seq, "the tail after the head (seq %" PRIu64
                    ") is torn: %" PRIu64 " bytes that are not a whole %s "
                    "(%s); recovery at the next open for writing would cut "
                    "them",
                    w->next_seq - 1, r->tail_bytes, what,
                    w->why ? w->why : "incomplete");
    /* Before the head read at the start (which does not check every
     * link): the journal ends here for recovery and verify as well. */
    return fail(a, TALLY_ETORN, TALLY_AUDIT_TAIL, a->cur, w->frame_off,
                w->next_seq, "the journal is torn at seq %" PRIu64 ", before "
                "the head seen when the audit started (seq %" PRIu64 "): %"
                PRIu64 " bytes that are not a whole %s (%s); recovery at the "
                "next open for writing would cut them",
                w->next_seq, r->start_head_seq, r->tail_bytes, what,
                w->why ? w->why : "incomplete");
}

/* What follows the audited head. Segment headers are checked as part of
 * the journal (a writer that opened it starts a segment before its first
 * record); a whole frame means a live writer appended after the head; the
 * end of the last file is what tail_decide says, a torn tail being given
 * time to become whole (a write in progress); anything else is damage
 * after the head. */
static int probe_tail(audit *a)
{
    ti_walk *w = &a->w;
    tally_audit_report *r = a->rep;
    uint32_t wait_ms = a->opt->tail_wait_ms ? a->opt->tail_wait_ms : 1000;
    uint64_t deadline = mono_ns() + (uint64_t)wait_ms * 1000000u;
    w->nohash = false;
    bool relisted = false, reread = false;
    for (;;) {
        if (!w->file_open) {
            int rc = next_file(a);
            if (rc < 0)
                return rc;
            if (rc == 0 && !relisted) {
                /* Files a writer started since the listing. */
                relisted = true;
                rc = ti_files_more(&a->files, a->dirfd);
                if (rc < 0)
                    return fail(a, rc, TALLY_AUDIT_IO, NULL, 0, w->next_seq,
                                "cannot list the segment files");
                if (rc > 0)
                    continue;
            }
            if (rc == 0)
                return 0; /* nothing after the head */
            reread = false;
        }
        uint64_t pos = w->pos;
        int ev = ti_walk_next(w);
        if (ev == TI_EV_SEGMENT) {
            int rc = segment(a);
            if (rc < 0)
                return rc;
            continue;
        }
        if (ev == TI_EV_FRAME) {
            r->live = 1;
            return 0;
        }
        if (ev == TI_EV_EOF) {
            close_file(a);
            continue;
        }
        if (ev < 0)
            return fail(a, ev, TALLY_AUDIT_IO, a->cur, w->frame_off,
                        w->next_seq, "read error after the head: %s",
                        tally_strerror(ev));
        if (a->files.idx >= a->files.n && !reread) {
            /* The last file listed. A writer seals a file before it
             * creates the next one: with a later file listed now, this
             * one is read once more, as the iterator does. */
            int rc = ti_files_more(&a->files, a->dirfd);
            if (rc < 0)
                return fail(a, rc, TALLY_AUDIT_IO, NULL, 0, w->next_seq,
                            "cannot list the segment files");
            if (rc > 0) {
                reread = true;
                w->pos = pos;
                ti_rfile_drop(&w->rf);
                continue;
            }
        }
        int rc;
        if (a->files.idx < a->files.n) {
            /* A later file follows: invalid bytes in the middle of the
             * journal, damage whatever they look like. */
            rc = bad_event(a, ev);
        } else {
            const char *how = NULL;
            int d = tail_decide(a, &how);
            if (d < 0)
                return d;
            if (d == TI_TAIL_END)
                return 0; /* the writer's reserved zero tail, or a file
                           * whose creation was cut short (§4, §6) */
            if (d == TI_TAIL_TORN && mono_ns() < deadline) {
                /* Perhaps a write in progress: read it again shortly. */
                w->pos = pos;
                ti_rfile_drop(&w->rf);
                struct timespec ts = { 0, 50 * 1000000 };
                nanosleep(&ts, NULL);
                continue;
            }
            rc = tail_fail(a, ev, d, how);
            if (d == TI_TAIL_TORN)
                return rc;
        }
        /* Invalid bytes right after the head: damage, not a write in
         * progress (a writer's frames are whole or cut short). */
        add_note(a, " (right after the head, seq %" PRIu64 ")", a->stop);
        return rc;
    }
}

static int walk_all(audit *a)
{
    ti_walk *w = &a->w;
    tally_audit_report *r = a->rep;
    for (;;) {
        if (r->records > 0 && r->last_seq >= a->stop)
            break;
        if (a->stop == 0)
            break;
        if (!w->file_open) {
            int rc = next_file(a);
            if (rc < 0)
                return rc;
            if (rc == 0) {
                return fail(a, TALLY_EINTEGRITY, TALLY_AUDIT_TAIL, a->cur,
                            w->pos, w->next_seq,
                            "the journal ends at seq %" PRIu64 ", before the "
                            "head seen when the audit started (seq %" PRIu64
                            ")", w->next_seq - 1, a->stop);
            }
        }
        if (w->nohash && w->started && w->next_seq >= a->from) {
            w->nohash = false;
            a->have_before = true;
            memcpy(a->link_before, w->link, 32);
        }
        int ev = ti_walk_next(w);
        switch (ev) {
        case TI_EV_SEGMENT: {
            int rc = segment(a);
            if (rc < 0)
                return rc;
            continue;
        }
        case TI_EV_FRAME:
            if (w->fh.seq < a->from)
                continue; /* structure only, before the range */
            {
                int rc = frame(a);
                if (rc < 0)
                    return rc;
            }
            if ((++a->tick & 255u) == 0)
                progress(a, false);
            continue;
        case TI_EV_EOF:
            close_file(a);
            continue;
        case TI_EV_TORN:
        case TI_EV_BAD: {
            if (a->files.idx < a->files.n)
                return bad_event(a, ev);
            /* The last file ends before the head read at the start: cut
             * as recovery would cut it, refused as it would refuse. */
            const char *how = NULL;
            int d = tail_decide(a, &how);
            if (d < 0)
                return d;
            if (d != TI_TAIL_END)
                return tail_fail(a, ev, d, how);
            return fail(a, TALLY_EINTEGRITY, TALLY_AUDIT_TAIL, a->cur,
                        w->frame_off, w->next_seq,
                        "the journal ends at seq %" PRIu64 ", before the "
                        "head seen when the audit started (seq %" PRIu64
                        "): changed during the audit?",
                        w->next_seq - 1, a->rep->start_head_seq);
        }
        default:
            return fail(a, ev, TALLY_AUDIT_IO, a->cur, w->frame_off,
                        w->next_seq, "read error: %s", tally_strerror(ev));
        }
    }
    return 0;
}

/* ---- anchors after the pass --------------------------------------------------- */

static int anchors_online(audit *a)
{
    tally_audit_report *r = a->rep;
    tally_anchor_target *t = a->opt->target;
    tally_checkpoint_report cr;
    r->anchor_mode = TALLY_AUDIT_ANCHORS_TARGET;
    int rc = tally_checkpoint_verify(t, a->dir, NULL, &cr);
    r->anchors_checked = cr.checked;
    r->anchors_foreign = cr.foreign;
    if (rc < 0)
        return fail(a, rc, TALLY_AUDIT_ANCHOR, NULL, 0, cr.bad_record_seq,
                    "%s", cr.message);
    tally_freshness f;
    rc = tally_freshness_check(t, a->dir, NULL, NULL, &f);
    r->has_freshness = rc == 0 || rc == TALLY_EROLLBACK || rc == TALLY_EFORK ||
                       rc == TALLY_ESTALE || rc == TALLY_EDELETED;
    r->freshness = f;
    if (rc < 0)
        return fail(a, rc, TALLY_AUDIT_ANCHOR, NULL, 0, f.anchored_seq, "%s",
                    f.message);
    if (f.anchored_seq <= r->head_seq)
        r->unanchored_tail = r->head_seq - f.anchored_seq;
    return 0;
}

/* The verdict of FORMAT.md §9.3, against the bundle's latest state, with
 * the links met during the pass. */
static int anchors_evidence(audit *a)
{
    tally_audit_report *r = a->rep;
    const tally_evidence *ev = a->ev;
    const tally_anchor *A = &ev->info.latest;
    tally_freshness *f = &r->freshness;
    char x[20], y[20], z[20];
    r->anchor_mode = TALLY_AUDIT_ANCHORS_EVIDENCE;
    r->anchors_known = ev->n;
    memset(f, 0, sizeof *f);
    memcpy(f->journal_id, a->meta.jid, 32);
    f->journal_present = 1;
    f->local_seq = r->head_seq;
    memcpy(f->local_head, r->head, 32);
    f->anchored_seq = A->seq;
    memcpy(f->anchored_head, A->head, 32);
    f->anchored_block = A->block_number;
    f->checkpoints = r->checkpoints;
    if (a->has_newest_ours) {
        f->has_checkpoint = 1;
        f->checkpoint = a->newest_ours;
        f->checkpoint_record_seq = a->newest_ours_rec;
    }
    if (a->has_last_cp && !same_target(&a->last_cp, &a->ours)) {
        snprintf(f->message, sizeof f->message,
                 "anchor configuration mismatch: the journal's last "
                 "CHECKPOINT (seq %" PRIu64 ") was anchored through another "
                 "chain, contract or writer than the bundle's",
                 a->last_cp_rec);
        return fail(a, TALLY_ECHAIN, TALLY_AUDIT_ANCHOR, NULL, 0,
                    a->last_cp_rec, "%s", f->message);
    }
    if (r->partial && a->opt->to_seq && a->opt->to_seq < r->start_head_seq) {
        snprintf(f->message, sizeof f->message,
                 "no verdict: the audit stops at seq %" PRIu64
                 ", before the head", r->last_seq);
        return 0;
    }
    r->has_freshness = 1;
    hex8(A->head, y);
    if (A->seq > 0 && r->head_seq < A->seq) {
        f->verdict = TALLY_VERDICT_ROLLED_BACK;
        f->behind = A->seq - r->head_seq;
        hex8(r->head, x);
        snprintf(f->message, sizeof f->message,
                 "rolled_back: the journal ends at seq %" PRIu64 " (link %s), "
                 "but seq %" PRIu64 " (head %s) was anchored in block %" PRIu64
                 ": %" PRIu64 " records missing",
                 r->head_seq, x, A->seq, y, A->block_number, f->behind);
        return fail(a, TALLY_EROLLBACK, TALLY_AUDIT_ANCHOR, NULL, 0, A->seq,
                    "%s", f->message);
    }
    if (A->seq > 0 && !a->ev_latest_seen) {
        snprintf(f->message, sizeof f->message,
                 "no verdict: the anchored seq %" PRIu64 " is before the "
                 "audited range", A->seq);
        r->has_freshness = 0;
        return 0;
    }
    if (A->seq > 0 && memcmp(a->ev_latest_link, A->head, 32) != 0) {
        f->verdict = TALLY_VERDICT_FORKED;
        f->has_local_link = 1;
        memcpy(f->local_link_at_anchor, a->ev_latest_link, 32);
        hex8(a->ev_latest_link, x);
        snprintf(f->message, sizeof f->message,
                 "forked: at seq %" PRIu64 " the local link is %s, the "
                 "anchored head is %s (block %" PRIu64 ")",
                 A->seq, x, y, A->block_number);
        return fail(a, TALLY_EFORK, TALLY_AUDIT_ANCHOR, NULL, 0, A->seq, "%s",
                    f->message);
    }
    if (a->has_newest_ours && a->newest_ours.seq > A->seq) {
        f->verdict = TALLY_VERDICT_STALE_ANCHOR;
        hex8(a->newest_ours.tx_hash, z);
        snprintf(f->message, sizeof f->message,
                 "stale_anchor: the journal's CHECKPOINT record (seq %" PRIu64
                 ") says seq %" PRIu64 " was anchored in block %" PRIu64
                 " (tx %s), but the bundle's latest state (block %" PRIu64
                 ") says seq %" PRIu64,
                 a->newest_ours_rec, a->newest_ours.seq,
                 a->newest_ours.block_number, z, ev->info.as_of_block, A->seq);
        return fail(a, TALLY_ESTALE, TALLY_AUDIT_ANCHOR, NULL, 0,
                    a->newest_ours_rec, "%s", f->message);
    }
    f->verdict = TALLY_VERDICT_FRESH;
    if (A->seq > 0) {
        f->has_local_link = 1;
        memcpy(f->local_link_at_anchor, a->ev_latest_link, 32);
    }
    f->unanchored_tail = r->head_seq - A->seq;
    r->unanchored_tail = f->unanchored_tail;
    hex8(r->head, x);
    snprintf(f->message, sizeof f->message,
             "fresh as of block %" PRIu64 ": local head seq %" PRIu64
             " (link %s); seq %" PRIu64 " anchored in block %" PRIu64
             " matches; %" PRIu64 " records after the anchor",
             ev->info.as_of_block, r->head_seq, x, A->seq, A->block_number,
             f->unanchored_tail);
    return 0;
}

/* ---- the audit ---------------------------------------------------------------- */

static void audit_free(audit *a)
{
    if (a->dirfd >= 0)
        close(a->dirfd);
    ti_dkeys_free(&a->keys);
    ti_aead_free(&a->aead);
    ti_seg_list_free(a->files.names, a->files.n);
    ti_walk_free(&a->w);
    if (a->work.p)
        sodium_memzero(a->work.p, a->work.cap);
    ti_buf_free(&a->work);
    if (a->raw.p)
        sodium_memzero(a->raw.p, a->raw.cap);
    ti_buf_free(&a->raw);
    free(a->ring_seq);
    free(a->ring_link);
    free(a->claims);
    free(a->segs);
    if (a->have_meta)
        ti_meta_free(&a->meta);
}

static int run(audit *a)
{
    const tally_audit_options *opt = a->opt;
    tally_audit_report *r = a->rep;
    char err[256] = "";

    if (opt->target && opt->evidence)
        return fail(a, -EINVAL, TALLY_AUDIT_NOWHERE, NULL, 0, 0,
                    "an anchor target and an evidence bundle exclude each "
                    "other");
    if (opt->to_seq && opt->from_seq > opt->to_seq)
        return fail(a, -EINVAL, TALLY_AUDIT_NOWHERE, NULL, 0, 0,
                    "--from is above --to");
    a->dirfd = open(a->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (a->dirfd < 0) {
        int rc = errno == ENOENT ? TALLY_ENOJOURNAL : -errno;
        return fail(a, rc, TALLY_AUDIT_IO, NULL, 0, 0, "%s: cannot open the "
                    "directory: %s", a->dir, tally_strerror(rc));
    }
    int rc = ti_meta_read(a->dirfd, opt->master_key, &a->meta, err, sizeof err);
    if (rc == TALLY_ENOJOURNAL)
        return fail(a, rc, TALLY_AUDIT_IO, NULL, 0, 0, "%s holds no journal "
                    "(no %s)", a->dir, TF_META_FILE);
    if (rc < 0)
        return fail(a, rc, TALLY_AUDIT_METADATA, TF_META_FILE, 0, 0, "%s",
                    err[0] ? err : tally_strerror(rc));
    a->have_meta = true;
    memcpy(r->journal_id, a->meta.jid, 32);
    memcpy(r->name, a->meta.name, a->meta.name_len);
    r->name[a->meta.name_len] = '\0';
    r->cipher = a->meta.cipher;
    r->compress = (a->meta.flags & TF_META_COMPRESS) != 0;
    r->segment_size = a->meta.segment_size;
    r->epochs = a->meta.epoch_count;
    for (uint16_t i = 0; i < a->meta.epoch_count; i++)
        if (a->meta.epochs[i].flags & TF_EPOCH_FORGOTTEN)
            r->epochs_forgotten++;
    r->meta_generation = a->meta.generation;
    a->keyed = opt->master_key != NULL;
    r->keyed = a->keyed;
    if (a->keyed && (rc = open_keys(a, opt->master_key)) < 0)
        return rc;

    /* The anchor configuration whose CHECKPOINT records are checked. */
    if (opt->target) {
        rc = tally_anchor_target_describe(opt->target, &a->ours);
        if (rc < 0)
            return fail(a, rc, TALLY_AUDIT_ANCHOR, NULL, 0, 0, "%s",
                        tally_anchor_target_errmsg(opt->target));
        a->have_ours = true;
    } else if (opt->evidence) {
        a->ev = opt->evidence;
        r->has_evidence = 1;
        r->evidence = a->ev->info;
        if (memcmp(a->ev->info.journal_id, a->meta.jid, 32) != 0) {
            char x[20], y[20];
            hex8(a->ev->info.journal_id, x);
            hex8(a->meta.jid, y);
            return fail(a, -EINVAL, TALLY_AUDIT_EVIDENCE, NULL, 0, 0,
                        "the evidence bundle is about journal %s, the "
                        "directory holds journal %s", x, y);
        }
        a->ours.backend = TALLY_BACKEND_ETH;
        a->ours.chain_id = a->ev->info.chain_id;
        memcpy(a->ours.contract, a->ev->info.contract, 20);
        memcpy(a->ours.writer, a->ev->info.writer, 20);
        a->have_ours = true;
    }

    /* The head first: the audit reads up to it and no further. */
    tally_head_info head;
    rc = tally_read_head(a->dir, &head);
    if (rc < 0)
        return fail(a, rc, TALLY_AUDIT_IO, NULL, 0, 0, "cannot read the head: "
                    "%s", tally_strerror(rc));
    r->start_head_seq = head.seq;
    r->end_head_seq = head.seq;
    a->from = opt->from_seq ? opt->from_seq : 1;
    a->stop = head.seq;
    if (opt->to_seq && opt->to_seq < a->stop)
        a->stop = opt->to_seq;
    r->from_seq = a->from;
    r->to_seq = a->stop;
    r->partial = a->from > 1 || a->stop < head.seq;
    if (a->from > a->stop && head.seq > 0)
        return fail(a, -ERANGE, TALLY_AUDIT_NOWHERE, NULL, 0, 0,
                    "--from %" PRIu64 " is after the head (seq %" PRIu64 ")",
                    a->from, head.seq);

    rc = ti_seg_list(a->dirfd, &a->files.names, &a->files.n);
    if (rc < 0)
        return fail(a, rc, TALLY_AUDIT_IO, NULL, 0, 0,
                    "cannot list the segment files");
    for (size_t i = 0; i < a->files.n; i++) {
        struct stat st;
        if (fstatat(a->dirfd, a->files.names[i], &st, 0) == 0)
            a->bytes_total += (uint64_t)st.st_size;
    }
    a->ring_seq = calloc(RING_N, sizeof *a->ring_seq);
    a->ring_link = malloc(RING_N * sizeof *a->ring_link);
    if (!a->ring_seq || !a->ring_link)
        return fail(a, -ENOMEM, TALLY_AUDIT_IO, NULL, 0, 0, "out of memory");
    ti_walk_init(&a->w, a->meta.jid, a->meta.cipher);
    if (a->from > 1) {
        size_t start;
        rc = find_start_file(a, &start);
        if (rc < 0)
            return fail(a, rc, TALLY_AUDIT_IO, NULL, 0, 0,
                        "cannot read the segment headers");
        a->files.idx = start;
        for (size_t i = 0; i < start; i++) {
            struct stat st;
            if (fstatat(a->dirfd, a->files.names[i], &st, 0) == 0)
                a->bytes_total -= (uint64_t)st.st_size;
        }
        a->w.started = false;
        a->w.nohash = true;
    }

    progress(a, false);
    rc = walk_all(a);
    if (rc < 0)
        return rc;
    if (a->stop == head.seq) {
        rc = probe_tail(a);
        if (rc < 0)
            return rc;
    }
    if (a->w.file_open)
        r->bytes += a->w.pos;
    if (r->records == 0) {
        /* An empty journal (or range): the head is the genesis link. */
        r->head_seq = a->from > 1 ? a->from - 1 : 0;
        memcpy(r->head, a->w.link, 32);
    }
    progress(a, true);

    rc = resolve_claims(a);
    if (rc < 0)
        return rc;

    /* Only when the probe saw appends: reading the head again costs a
     * walk of the last file. */
    if (r->live) {
        tally_head_info end;
        if (tally_read_head(a->dir, &end) == 0 && end.seq > r->end_head_seq)
            r->end_head_seq = end.seq;
    }
    if (r->compactions > 0 && r->compaction_pruned < r->pruned && !r->partial)
        snprintf(r->note, sizeof r->note,
                 "%" PRIu64 " pruned records, but the COMPACTION records "
                 "account for %" PRIu64 " (a compaction stopped before its "
                 "record?)", r->pruned, r->compaction_pruned);
    else if (r->compactions == 0 && r->pruned > 0 && !r->partial)
        snprintf(r->note, sizeof r->note,
                 "%" PRIu64 " pruned records and no COMPACTION record",
                 r->pruned);

    if (opt->target)
        return anchors_online(a);
    if (a->ev)
        return anchors_evidence(a);
    return 0;
}

int tally_audit(const char *dir, const tally_audit_options *opt,
                tally_audit_report *ret)
{
    static const tally_audit_options none;
    tally_audit_report *r = calloc(1, sizeof *r);
    if (!r)
        return -ENOMEM;
    if (!dir) {
        free(r);
        return -EINVAL;
    }
    if (sodium_init() < 0) {
        free(r);
        return -EIO;
    }
    audit a;
    memset(&a, 0, sizeof a);
    a.dirfd = -1;
    a.dir = dir;
    a.opt = opt ? opt : &none;
    a.rep = r;
    a.w.rf.fd = -1;
    a.t0 = mono_ns();
    int rc = run(&a);
    if (rc == 0)
        rc = r->rc;
    /* From the CHECKPOINT records unless the target or bundle said. */
    if (!r->has_freshness || r->freshness.verdict != TALLY_VERDICT_FRESH)
        r->unanchored_tail =
            r->has_checkpoint && r->checkpoint.seq <= r->head_seq
                ? r->head_seq - r->checkpoint.seq
                : r->has_checkpoint ? 0 : r->head_seq;
    r->rc = rc;
    r->elapsed_ns = mono_ns() - a.t0;
    audit_free(&a);
    if (ret)
        *ret = *r;
    free(r);
    return rc;
}
