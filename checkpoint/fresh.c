/*
 * fresh.c — the startup freshness verdict: the local journal directory
 * against what its anchor target (the chain) says, and the check of every
 * CHECKPOINT record against the chain's history.
 *
 * The chain is read first, then the journal is walked once without the key
 * (structure and hash chain are checked; CHECKPOINT records are CLEAR and
 * readable), which gives the local head, the local link at the anchored seq
 * and the newest CHECKPOINT record. Verdicts, in the order they are tested:
 *   deleted       no journal in DIR, but the target holds anchors for its id
 *   rolled_back   the local head is behind the anchored seq
 *   forked        the local link at the anchored seq is not the anchored head
 *   stale_anchor  a CHECKPOINT record in the journal is newer than the target
 *   fresh         otherwise (the journal may be ahead: unanchored_tail)
 */
#include "checkpoint-internal.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *tally_verdict_name(tally_verdict v)
{
    switch (v) {
    case TALLY_VERDICT_FRESH:
        return "fresh";
    case TALLY_VERDICT_ROLLED_BACK:
        return "rolled_back";
    case TALLY_VERDICT_FORKED:
        return "forked";
    case TALLY_VERDICT_DELETED:
        return "deleted";
    case TALLY_VERDICT_STALE_ANCHOR:
        return "stale_anchor";
    }
    return "unknown";
}

/* 0x + the first 16 hex digits: enough to tell two hashes apart in a
 * message, short enough to read. */
static const char *short_hex(const uint8_t h[32], char out[24])
{
    char full[67];
    cp_hex_encode(h, 32, full);
    snprintf(out, 24, "%.18s...", full);
    return out;
}

static void msg(tally_freshness *f, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void msg(tally_freshness *f, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(f->message, sizeof f->message, fmt, ap);
    va_end(ap);
}

/* One keyless (or keyed) walk of the journal. */
typedef struct walk {
    uint8_t jid[32];
    uint64_t head_seq;
    uint8_t head_link[32];
    uint64_t at_seq;        /* in: the seq whose link we want (0: none) */
    int has_link_at;
    uint8_t link_at[32];
    uint64_t checkpoints;   /* CHECKPOINT records seen */
    int has_last;           /* the last CHECKPOINT record (any target) */
    tally_checkpoint_info last;
    uint64_t last_record_seq;
    int has_newest;         /* the highest anchored seq for our target */
    tally_checkpoint_info newest;
    uint64_t newest_record_seq;
    const tally_checkpoint_info *ours; /* in: our target's identity */
    /* verify: every CHECKPOINT record of our target, in journal order */
    int collect;
    tally_checkpoint_info *recs;
    uint64_t *rec_seqs;
    size_t nrecs;
    /* verify, second pass: links at these seqs (sorted ascending) */
    const uint64_t *want;
    size_t nwant;
    uint8_t (*links)[32];
    size_t want_i;
} walk;

static int walk_journal(const char *dir, const uint8_t *master_key, walk *w,
                        char *err, size_t errsz)
{
    tally_iter *it = NULL;
    unsigned flags = TALLY_ITER_TOLERATE_TAIL;
    int rc = tally_iter_open(&it, dir, master_key, 0, flags);
    if (rc < 0) {
        snprintf(err, errsz, "%s: %s", dir, tally_strerror(rc));
        return rc;
    }
    tally_iter_id(it, w->jid);
    tally_record r;
    while ((rc = tally_iter_next(it, &r)) == 1) {
        w->head_seq = r.seq;
        memcpy(w->head_link, r.link, 32);
        if (w->at_seq && r.seq == w->at_seq) {
            w->has_link_at = 1;
            memcpy(w->link_at, r.link, 32);
        }
        while (w->want_i < w->nwant && w->want[w->want_i] <= r.seq) {
            if (w->want[w->want_i] == r.seq)
                memcpy(w->links[w->want_i], r.link, 32);
            else
                memset(w->links[w->want_i], 0, 32);
            w->want_i++;
        }
        if (r.type != TALLY_TYPE_CHECKPOINT || !r.payload)
            continue;
        tally_checkpoint_info c;
        if (tally_checkpoint_decode(r.payload, r.payload_len, &c) < 0) {
            snprintf(err, errsz, "%s: seq %" PRIu64 ": malformed CHECKPOINT "
                     "record", dir, r.seq);
            rc = TALLY_EINTEGRITY;
            break;
        }
        w->checkpoints++;
        w->has_last = 1;
        w->last = c;
        w->last_record_seq = r.seq;
        if (w->ours && cp_target_same(&c, w->ours)) {
            if (!w->has_newest || c.seq > w->newest.seq) {
                w->has_newest = 1;
                w->newest = c;
                w->newest_record_seq = r.seq;
            }
            if (w->collect) {
                tally_checkpoint_info *nr =
                    realloc(w->recs, (w->nrecs + 1) * sizeof *nr);
                uint64_t *ns = realloc(w->rec_seqs, (w->nrecs + 1) * sizeof *ns);
                if (nr)
                    w->recs = nr;
                if (ns)
                    w->rec_seqs = ns;
                if (!nr || !ns) {
                    rc = -ENOMEM;
                    break;
                }
                w->recs[w->nrecs] = c;
                w->rec_seqs[w->nrecs] = r.seq;
                w->nrecs++;
            }
        }
    }
    if (rc < 0 && rc != -ENOMEM && rc != TALLY_EINTEGRITY)
        snprintf(err, errsz, "%s: %s", dir, tally_iter_errmsg(it));
    else if (rc == TALLY_EINTEGRITY && !err[0])
        snprintf(err, errsz, "%s: %s", dir, tally_iter_errmsg(it));
    tally_iter_free(it);
    return rc < 0 ? rc : 0;
}

static int verdict_rc(tally_verdict v)
{
    switch (v) {
    case TALLY_VERDICT_FRESH:
        return 0;
    case TALLY_VERDICT_ROLLED_BACK:
        return TALLY_EROLLBACK;
    case TALLY_VERDICT_FORKED:
        return TALLY_EFORK;
    case TALLY_VERDICT_DELETED:
        return TALLY_EDELETED;
    case TALLY_VERDICT_STALE_ANCHOR:
        return TALLY_ESTALE;
    }
    return -EINVAL;
}

int tally_freshness_check(tally_anchor_target *t, const char *dir,
                          const uint8_t *journal_id, const uint8_t *master_key,
                          tally_freshness *ret)
{
    tally_freshness f;
    memset(&f, 0, sizeof f);
    char a[24], b[24];

    tally_checkpoint_info ours;
    int rc = tally_anchor_target_describe(t, &ours);
    if (rc < 0) {
        msg(&f, "%s", tally_anchor_target_errmsg(t));
        *ret = f;
        return rc;
    }

    /* Which journal: the directory's (its metadata, read by the iterator
     * first), or the caller's when DIR is missing or empty. */
    walk w;
    memset(&w, 0, sizeof w);
    w.ours = &ours;
    char err[512] = "";
    uint8_t jid[32];
    int present = 1;
    tally_iter *it = NULL;
    rc = tally_iter_open(&it, dir, NULL, 0, TALLY_ITER_TOLERATE_TAIL);
    if (rc == TALLY_ENOJOURNAL) {
        present = 0;
    } else if (rc < 0) {
        msg(&f, "%s: %s", dir, tally_strerror(rc));
        *ret = f;
        return rc;
    } else {
        tally_iter_id(it, jid);
        tally_iter_free(it);
    }
    if (!present) {
        if (!journal_id) {
            msg(&f, "%s holds no journal, and no journal id was given to "
                    "look up (derive it from the key and name)", dir);
            *ret = f;
            return TALLY_ENOJOURNAL;
        }
        memcpy(jid, journal_id, 32);
    }
    memcpy(f.journal_id, jid, 32);
    f.journal_present = present;

    tally_anchor an;
    rc = tally_anchor_target_latest(t, jid, &an);
    if (rc < 0) {
        msg(&f, "%s", tally_anchor_target_errmsg(t));
        *ret = f;
        return rc;
    }
    f.anchored_seq = an.seq;
    memcpy(f.anchored_head, an.head, 32);
    f.anchored_block = an.block_number;

    if (!present) {
        if (an.seq == 0) {
            msg(&f, "%s holds no journal and %s has no anchor for journal %s",
                dir, "the anchor target", short_hex(jid, a));
            *ret = f;
            return TALLY_ENOJOURNAL;
        }
        f.verdict = TALLY_VERDICT_DELETED;
        msg(&f, "deleted: %s holds no journal, but journal %s is anchored up "
                "to seq %" PRIu64 " (head %s, block %" PRIu64 ")",
            dir, short_hex(jid, a), an.seq, short_hex(an.head, b),
            an.block_number);
        *ret = f;
        return TALLY_EDELETED;
    }
    if (journal_id && memcmp(journal_id, jid, 32) != 0) {
        f.verdict = TALLY_VERDICT_FORKED;
        msg(&f, "forked: %s holds journal %s, not the expected %s", dir,
            short_hex(jid, a), short_hex(journal_id, b));
        *ret = f;
        return TALLY_EFORK;
    }

    w.at_seq = an.seq;
    rc = walk_journal(dir, master_key, &w, err, sizeof err);
    if (rc < 0) {
        msg(&f, "%s", err);
        *ret = f;
        return rc;
    }
    f.local_seq = w.head_seq;
    memcpy(f.local_head, w.head_link, 32); /* zeros when empty */
    f.checkpoints = w.checkpoints;
    if (w.has_newest) {
        f.has_checkpoint = 1;
        f.checkpoint = w.newest;
        f.checkpoint_record_seq = w.newest_record_seq;
    }

    /* The journal says how it was anchored last; the caller must agree. */
    if (w.has_last && !cp_target_same(&w.last, &ours)) {
        char was[200], now[200];
        cp_target_name(&w.last, was, sizeof was);
        cp_target_name(&ours, now, sizeof now);
        msg(&f, "anchor configuration mismatch: the journal's last CHECKPOINT "
                "(seq %" PRIu64 ") was anchored on %s; the caller gives %s",
            w.last_record_seq, was, now);
        *ret = f;
        return TALLY_ECHAIN;
    }

    if (an.seq > 0 && w.head_seq < an.seq) {
        f.verdict = TALLY_VERDICT_ROLLED_BACK;
        f.behind = an.seq - w.head_seq;
        msg(&f, "rolled_back: the local journal ends at seq %" PRIu64
                " (link %s), but seq %" PRIu64 " (head %s) is anchored in "
                "block %" PRIu64 ": %" PRIu64 " records missing",
            w.head_seq, short_hex(w.head_link, a), an.seq,
            short_hex(an.head, b), an.block_number, f.behind);
    } else if (an.seq > 0 && memcmp(w.link_at, an.head, 32) != 0) {
        f.verdict = TALLY_VERDICT_FORKED;
        f.has_local_link = 1;
        memcpy(f.local_link_at_anchor, w.link_at, 32);
        msg(&f, "forked: at seq %" PRIu64 " the local link is %s, the "
                "anchored head is %s (block %" PRIu64 ")",
            an.seq, short_hex(w.link_at, a), short_hex(an.head, b),
            an.block_number);
    } else if (w.has_newest && w.newest.seq > an.seq) {
        f.verdict = TALLY_VERDICT_STALE_ANCHOR;
        char c[24];
        msg(&f, "stale_anchor: the journal's CHECKPOINT record (seq %" PRIu64
                ") says seq %" PRIu64 " was anchored in block %" PRIu64
                " (tx %s), but the anchor source says seq %" PRIu64
                " (block %" PRIu64 "): a stale or lying RPC node, or a reorg "
                "deeper than the confirmations",
            w.newest_record_seq, w.newest.seq, w.newest.block_number,
            short_hex(w.newest.tx_hash, c), an.seq, an.block_number);
    } else {
        f.verdict = TALLY_VERDICT_FRESH;
        if (an.seq > 0) {
            f.has_local_link = 1;
            memcpy(f.local_link_at_anchor, w.link_at, 32);
        }
        f.unanchored_tail = w.head_seq - an.seq;
        if (an.seq)
            msg(&f, "fresh: local head seq %" PRIu64 " (link %s); seq %" PRIu64
                    " anchored in block %" PRIu64 " matches; %" PRIu64
                    " records after the anchor",
                w.head_seq, short_hex(w.head_link, a), an.seq,
                an.block_number, f.unanchored_tail);
        else
            msg(&f, "fresh: local head seq %" PRIu64 " (link %s); never "
                    "anchored, %" PRIu64 " records unanchored",
                w.head_seq, short_hex(w.head_link, a), f.unanchored_tail);
    }
    *ret = f;
    return verdict_rc(f.verdict);
}

/* ---- every CHECKPOINT record against the chain ------------------------------ */

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

int tally_checkpoint_verify(tally_anchor_target *t, const char *dir,
                            const uint8_t *master_key,
                            tally_checkpoint_report *ret)
{
    tally_checkpoint_report rep;
    memset(&rep, 0, sizeof rep);
    tally_checkpoint_info ours;
    int rc = tally_anchor_target_describe(t, &ours);
    if (rc < 0) {
        snprintf(rep.message, sizeof rep.message, "%s",
                 tally_anchor_target_errmsg(t));
        *ret = rep;
        return rc;
    }
    walk w;
    memset(&w, 0, sizeof w);
    w.ours = &ours;
    w.collect = 1;
    char err[512] = "";
    uint64_t *want = NULL;
    uint8_t(*links)[32] = NULL;
    tally_anchor_event *ev = NULL;
    int nev = 0;

    rc = walk_journal(dir, master_key, &w, err, sizeof err);
    if (rc < 0) {
        snprintf(rep.message, sizeof rep.message, "%s", err);
        goto out;
    }
    rep.records = w.checkpoints;
    rep.foreign = w.checkpoints - w.nrecs;
    if (w.nrecs == 0) {
        snprintf(rep.message, sizeof rep.message,
                 "no CHECKPOINT records for this anchor target");
        goto out;
    }

    /* Second pass: the local links at every anchored seq. */
    want = malloc(w.nrecs * sizeof *want);
    links = calloc(w.nrecs, sizeof *links);
    if (!want || !links) {
        rc = -ENOMEM;
        goto out;
    }
    for (size_t i = 0; i < w.nrecs; i++)
        want[i] = w.recs[i].seq;
    qsort(want, w.nrecs, sizeof *want, cmp_u64);
    walk w2;
    memset(&w2, 0, sizeof w2);
    w2.want = want;
    w2.nwant = w.nrecs;
    w2.links = links;
    rc = walk_journal(dir, master_key, &w2, err, sizeof err);
    if (rc < 0) {
        snprintf(rep.message, sizeof rep.message, "%s", err);
        goto out;
    }

    if (ours.backend == TALLY_BACKEND_ETH) {
        nev = tally_anchor_target_events(t, w.jid, &ev);
        if (nev < 0) {
            rc = nev;
            snprintf(rep.message, sizeof rep.message, "%s",
                     tally_anchor_target_errmsg(t));
            goto out;
        }
    }
    tally_anchor latest = {0};
    if (ours.backend == TALLY_BACKEND_FILE) {
        rc = tally_anchor_target_latest(t, w.jid, &latest);
        if (rc < 0) {
            snprintf(rep.message, sizeof rep.message, "%s",
                     tally_anchor_target_errmsg(t));
            goto out;
        }
    }

    char a[24], b[24];
    for (size_t i = 0; i < w.nrecs; i++) {
        const tally_checkpoint_info *c = &w.recs[i];
        rep.bad_record_seq = w.rec_seqs[i];
        /* The record's head must be the journal's own link at that seq. */
        size_t k = 0;
        while (k < w.nrecs && want[k] != c->seq)
            k++;
        if (c->seq > w2.head_seq || memcmp(links[k], c->head, 32) != 0) {
            rc = TALLY_EFORK;
            snprintf(rep.message, sizeof rep.message,
                     "CHECKPOINT record seq %" PRIu64 " anchors seq %" PRIu64
                     " with head %s, but the journal's link there is %s",
                     w.rec_seqs[i], c->seq, short_hex(c->head, a),
                     c->seq > w2.head_seq ? "missing" : short_hex(links[k], b));
            goto out;
        }
        if (ours.backend == TALLY_BACKEND_ETH) {
            int found = 0;
            for (int j = 0; j < nev && !found; j++)
                found = ev[j].seq == c->seq &&
                        memcmp(ev[j].head, c->head, 32) == 0 &&
                        ev[j].block_number == c->block_number &&
                        memcmp(ev[j].block_hash, c->block_hash, 32) == 0 &&
                        memcmp(ev[j].tx_hash, c->tx_hash, 32) == 0;
            if (!found) {
                rc = TALLY_ESTALE;
                snprintf(rep.message, sizeof rep.message,
                         "CHECKPOINT record seq %" PRIu64 " (anchor of seq %"
                         PRIu64 " in block %" PRIu64 ", tx %s) has no "
                         "matching Anchored event on the chain",
                         w.rec_seqs[i], c->seq, c->block_number,
                         short_hex(c->tx_hash, a));
                goto out;
            }
        } else if (c->seq > latest.seq ||
                   (c->seq == latest.seq && memcmp(c->head, latest.head, 32))) {
            rc = TALLY_ESTALE;
            snprintf(rep.message, sizeof rep.message,
                     "CHECKPOINT record seq %" PRIu64 " anchors seq %" PRIu64
                     ", the anchor file says seq %" PRIu64,
                     w.rec_seqs[i], c->seq, latest.seq);
            goto out;
        }
        rep.checked++;
    }
    rep.bad_record_seq = 0;
    snprintf(rep.message, sizeof rep.message,
             "%" PRIu64 " CHECKPOINT records match the %s", rep.checked,
             ours.backend == TALLY_BACKEND_ETH ? "chain's Anchored events"
                                                : "anchor file");
    rc = 0;
out:
    free(ev);
    free(want);
    free(links);
    free(w.recs);
    free(w.rec_seqs);
    *ret = rep;
    return rc;
}
