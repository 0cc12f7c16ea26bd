/*
 * epochs.c — key epochs after init (FORMAT.md §3.2, §3.4): starting a new
 * epoch (rekey), re-wrapping every epoch under a new master key (rewrap)
 * and destroying the wrapped keys of old epochs (forget).
 *
 * Each is one atomic replace of tally.meta (ti_meta_write) under the
 * writer's lock, so it never runs beside a writer (-EBUSY), and a reader
 * sees the old metadata or the new one, never a mix. No segment file is
 * touched: the chain, the anchors and keyless verification are unchanged.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

#include "tally-internal.h"

typedef struct ep_ctx {
    int dirfd, lockfd;
    ti_meta meta;
    bool have_meta;
} ep_ctx;

static void ep_close(ep_ctx *c)
{
    if (c->have_meta)
        ti_meta_free(&c->meta);
    if (c->lockfd >= 0)
        close(c->lockfd);
    if (c->dirfd >= 0)
        close(c->dirfd);
}

/* Opens dir, takes the writer's lock (FORMAT.md §1) and reads the
 * metadata with mk (KCV and MAC checked). */
static int ep_open(ep_ctx *c, const char *dir, const uint8_t mk[32],
                   tally_epoch_report *rep)
{
    memset(c, 0, sizeof *c);
    c->dirfd = c->lockfd = -1;
    c->dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (c->dirfd < 0) {
        int rc = errno == ENOENT ? TALLY_ENOJOURNAL : -errno;
        ti_msg(rep->message, sizeof rep->message, "%s: cannot open directory",
               dir);
        return rc;
    }
    if (faccessat(c->dirfd, TF_META_FILE, F_OK, 0) < 0) {
        int rc = errno == ENOENT ? TALLY_ENOJOURNAL : -errno;
        ti_msg(rep->message, sizeof rep->message, "%s: no %s", dir,
               TF_META_FILE);
        return rc;
    }
    c->lockfd = openat(c->dirfd, TF_LOCK_FILE, O_RDWR | O_CREAT | O_CLOEXEC,
                       0600);
    if (c->lockfd < 0)
        return -errno;
    if (flock(c->lockfd, LOCK_EX | LOCK_NB) < 0) {
        int rc = errno == EWOULDBLOCK ? -EBUSY : -errno;
        ti_msg(rep->message, sizeof rep->message, "%s: %s", dir,
               rc == -EBUSY ? "a writer holds the lock (close it first)"
                            : "cannot take the lock");
        return rc;
    }
    int rc = ti_meta_read(c->dirfd, mk, &c->meta, rep->message,
                          sizeof rep->message);
    if (rc < 0)
        return rc;
    c->have_meta = true;
    return 0;
}

/* ---- rekey ------------------------------------------------------------------ */

/* The number the writer will give its next segment (§6): one past the last
 * segment, or the last one itself when it is alone in the last file and
 * holds no record (recovery removes it and uses its number again). Only
 * the last file is read: first_segment is informational, the segment
 * header's epoch is what readers use. */
static uint64_t next_segment_no(int dirfd, const ti_meta *m)
{
    char **names = NULL;
    size_t n = 0;
    uint64_t next = 1;
    if (ti_seg_list(dirfd, &names, &n) < 0 || n == 0)
        goto out;
    uint64_t no = 0;
    (void)ti_seg_parse_name(names[n - 1], &no);
    next = no;
    ti_walk w;
    ti_walk_init(&w, m->jid, m->cipher);
    w.nohash = true;
    w.started = false;
    if (ti_walk_open_file(&w, dirfd, names[n - 1]) == 0) {
        unsigned segs = 0;
        uint64_t frames = 0, last_no = no;
        for (;;) {
            int ev = ti_walk_next(&w);
            if (ev == TI_EV_SEGMENT) {
                segs++;
                last_no = w.seg.segment_no;
                frames = 0;
            } else if (ev == TI_EV_FRAME) {
                frames++;
            } else {
                break;
            }
        }
        if (segs > 0)
            next = (segs == 1 && frames == 0) ? last_no : last_no + 1;
    }
    ti_walk_free(&w);
out:
    ti_seg_list_free(names, n);
    return next;
}

int tally_rekey(const char *dir, const uint8_t master_key[static TALLY_KEY_BYTES],
                tally_epoch_report *ret)
{
    tally_epoch_report rep;
    memset(&rep, 0, sizeof rep);
    if (!dir || !master_key)
        return -EINVAL;
    if (sodium_init() < 0)
        return -EIO;
    ep_ctx c;
    uint8_t *dk = NULL;
    int rc = ep_open(&c, dir, master_key, &rep);
    if (rc < 0)
        goto out;
    ti_meta *m = &c.meta;
    uint32_t last = m->epochs[m->epoch_count - 1].epoch;
    if (m->epoch_count == UINT16_MAX || last == UINT32_MAX) {
        rc = -EOVERFLOW;
        ti_msg(rep.message, sizeof rep.message, "%s: no room for another "
               "epoch", TF_META_FILE);
        goto out;
    }
    ti_epoch *ne = realloc(m->epochs, (m->epoch_count + 1u) * sizeof *ne);
    dk = sodium_malloc(32);
    if (!ne || !dk) {
        if (ne)
            m->epochs = ne;
        rc = -ENOMEM;
        goto out;
    }
    m->epochs = ne;
    ti_epoch *e = &m->epochs[m->epoch_count];
    memset(e, 0, sizeof *e);
    e->epoch = last + 1;
    e->first_segment = next_segment_no(c.dirfd, m);
    randombytes_buf(dk, 32);
    ti_epoch_wrap(e, master_key, m->jid, dk);
    m->epoch_count++;
    m->current_epoch = e->epoch;
    rc = ti_meta_write(c.dirfd, m, master_key);
    if (rc < 0) {
        ti_msg(rep.message, sizeof rep.message, "%s: cannot replace",
               TF_META_FILE);
        goto out;
    }
    rep.epoch = e->epoch;
    rep.epochs = 1;
out:
    if (dk)
        sodium_free(dk);
    ep_close(&c);
    if (ret)
        *ret = rep;
    return rc;
}

/* ---- rewrap ----------------------------------------------------------------- */

int tally_rewrap(const char *dir, const uint8_t old_key[static TALLY_KEY_BYTES],
                 const uint8_t new_key[static TALLY_KEY_BYTES],
                 tally_epoch_report *ret)
{
    tally_epoch_report rep;
    memset(&rep, 0, sizeof rep);
    if (!dir || !old_key || !new_key)
        return -EINVAL;
    if (sodium_init() < 0)
        return -EIO;
    ep_ctx c;
    uint8_t *dk = NULL;
    int rc = ep_open(&c, dir, old_key, &rep);
    if (rc < 0)
        goto out;
    ti_meta *m = &c.meta;
    dk = sodium_malloc(32);
    if (!dk) {
        rc = -ENOMEM;
        goto out;
    }
    /* All in memory first: the file is replaced once, with every epoch
     * under the new key, or not at all. */
    uint32_t n = 0;
    for (uint16_t i = 0; i < m->epoch_count; i++) {
        ti_epoch *e = &m->epochs[i];
        if (e->flags & TF_EPOCH_FORGOTTEN)
            continue; /* stays destroyed (zero nonce and bytes) */
        rc = ti_epoch_unwrap(e, old_key, m->jid, dk);
        if (rc < 0) {
            ti_msg(rep.message, sizeof rep.message, "cannot unwrap the data "
                   "key of epoch %u", e->epoch);
            goto out;
        }
        ti_epoch_wrap(e, new_key, m->jid, dk);
        n++;
    }
    /* The journal id stays (segment headers and anchors name it); the KCV
     * and MAC follow the new key. */
    rc = ti_meta_write(c.dirfd, m, new_key);
    if (rc < 0) {
        ti_msg(rep.message, sizeof rep.message, "%s: cannot replace",
               TF_META_FILE);
        goto out;
    }
    rep.epoch = m->current_epoch;
    rep.epochs = n;
out:
    if (dk)
        sodium_free(dk);
    ep_close(&c);
    if (ret)
        *ret = rep;
    return rc;
}

/* ---- forget ----------------------------------------------------------------- */

/* What one epoch covers: the seqs of the records in its segments. */
typedef struct cover {
    uint64_t first_seq, last_seq; /* 0, 0: no record */
} cover;

/* A file passed over as a leftover of an interrupted merge must still be
 * named after its first segment (ti_seg_file_check, the rule of recovery
 * and of every reader): one that holds later segments under an earlier
 * name would otherwise hide their records from the cover. */
static int check_leftover(int dirfd, const ti_meta *m, const char *name,
                          tally_epoch_report *rep)
{
    int fd = openat(dirfd, name, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        int rc = -errno;
        ti_msg(rep->message, sizeof rep->message, "%s: cannot open", name);
        return rc;
    }
    uint8_t b[TF_SEG_HEADER_BYTES];
    ssize_t n = ti_pread_full(fd, b, sizeof b, 0);
    close(fd);
    ti_seg_hdr h;
    const char *why = "segment header incomplete";
    if (n < 0) {
        ti_msg(rep->message, sizeof rep->message, "%s: read error", name);
        return (int)n;
    }
    if ((size_t)n != sizeof b || ti_seg_header_parse(b, &h, &why) < 0 ||
        ti_seg_file_check(m, &h, name, &why) < 0) {
        ti_msg(rep->message, sizeof rep->message, "%s: offset 0: %s", name,
               why);
        return TALLY_EINTEGRITY;
    }
    return 0;
}

/* Walks every segment (structure only, as the iterator does, skipping the
 * leftovers of an interrupted compaction merge) and records which seqs each
 * epoch's segments hold. A torn tail ends the walk (recovery will cut it);
 * anything else that is not whole is an error: which records an epoch
 * covers must not be guessed. */
static int scan_cover(int dirfd, const ti_meta *m, cover *cv,
                      tally_epoch_report *rep)
{
    char **names = NULL;
    size_t n = 0;
    int rc = ti_seg_list(dirfd, &names, &n);
    if (rc < 0) {
        ti_msg(rep->message, sizeof rep->message, "cannot list segment files");
        return rc;
    }
    ti_walk w;
    ti_walk_init(&w, m->jid, m->cipher);
    w.nohash = true;
    int idx = -1;
    for (size_t i = 0; i < n && rc == 0; i++) {
        uint64_t no = 0;
        (void)ti_seg_parse_name(names[i], &no);
        if (w.segment_no > 0 && no <= w.segment_no) {
            rc = check_leftover(dirfd, m, names[i], rep);
            continue;
        }
        rc = ti_walk_open_file(&w, dirfd, names[i]);
        if (rc < 0) {
            ti_msg(rep->message, sizeof rep->message, "%s: cannot open",
                   names[i]);
            break;
        }
        for (;;) {
            int ev = ti_walk_next(&w);
            const char *why = NULL;
            if (ev == TI_EV_SEGMENT && w.frame_off == 0 &&
                ti_seg_file_check(m, &w.seg, names[i], &why) < 0) {
                rc = TALLY_EINTEGRITY;
                ti_msg(rep->message, sizeof rep->message, "%s: offset 0: %s",
                       names[i], why);
                break;
            }
            int d = 0;
            if (ev == TI_EV_SEGMENT) {
                idx = -1;
                for (uint16_t k = 0; k < m->epoch_count; k++)
                    if (m->epochs[k].epoch == w.seg.epoch)
                        idx = k;
                if (idx < 0) {
                    rc = TALLY_EINTEGRITY;
                    ti_msg(rep->message, sizeof rep->message,
                           "%s: segment %llu names epoch %u, unknown to the "
                           "metadata", names[i],
                           (unsigned long long)w.seg.segment_no, w.seg.epoch);
                    break;
                }
            } else if (ev == TI_EV_FRAME) {
                if (cv[idx].first_seq == 0)
                    cv[idx].first_seq = w.fh.seq;
                cv[idx].last_seq = w.fh.seq;
            } else if (ev == TI_EV_EOF) {
                break;
            } else if (i + 1 == n && ev > 0 &&
                       ((d = ti_tail_decide(&w, &why)) == TI_TAIL_END ||
                        d == TI_TAIL_TORN)) {
                /* The tail of the last file: zero bytes the writer
                 * reserved, or a torn tail; recovery cuts both at the next
                 * open (the same decision, FORMAT.md §6). */
                break;
            } else {
                rc = ev < 0 ? ev : d < 0 ? d : TALLY_EINTEGRITY;
                ti_msg(rep->message, sizeof rep->message,
                       "%s: offset %llu: %s%s%s%s", names[i],
                       (unsigned long long)w.frame_off,
                       w.why ? w.why : "read error", why ? " (" : "",
                       why ? why : "", why ? ")" : "");
                break;
            }
        }
    }
    ti_walk_free(&w);
    ti_seg_list_free(names, n);
    return rc;
}

int tally_forget(const char *dir, const uint8_t master_key[static TALLY_KEY_BYTES],
                 uint64_t before_seq, tally_epoch_report *ret)
{
    tally_epoch_report rep;
    memset(&rep, 0, sizeof rep);
    if (!dir || !master_key || before_seq == 0)
        return -EINVAL;
    if (sodium_init() < 0)
        return -EIO;
    ep_ctx c;
    cover *cv = NULL;
    int rc = ep_open(&c, dir, master_key, &rep);
    if (rc < 0)
        goto out;
    ti_meta *m = &c.meta;
    cv = calloc(m->epoch_count, sizeof *cv);
    if (!cv) {
        rc = -ENOMEM;
        goto out;
    }
    rc = scan_cover(c.dirfd, m, cv, &rep);
    if (rc < 0)
        goto out;
    /* Epochs are forgotten oldest first and only while every record of
     * theirs is before before_seq; the current epoch never (the writer
     * encrypts with it). The first epoch kept is reported, with why. */
    uint32_t n = 0;
    for (uint16_t i = 0; i < m->epoch_count; i++) {
        ti_epoch *e = &m->epochs[i];
        if (e->flags & TF_EPOCH_FORGOTTEN) {
            if (cv[i].last_seq > rep.forgotten_through)
                rep.forgotten_through = cv[i].last_seq;
            continue;
        }
        if (e->epoch == m->current_epoch || cv[i].last_seq >= before_seq) {
            if (rep.kept_epoch == 0) {
                rep.kept_epoch = e->epoch;
                rep.kept_first_seq = cv[i].first_seq;
            }
            continue;
        }
        if (rep.kept_epoch != 0)
            continue; /* an older epoch is kept: keep the order of erasure */
        e->flags |= TF_EPOCH_FORGOTTEN;
        sodium_memzero(e->nonce, sizeof e->nonce);
        sodium_memzero(e->wrapped, sizeof e->wrapped);
        if (cv[i].last_seq > rep.forgotten_through)
            rep.forgotten_through = cv[i].last_seq;
        n++;
    }
    rep.epoch = m->current_epoch;
    if (n > 0) {
        rc = ti_meta_write(c.dirfd, m, master_key);
        if (rc < 0) {
            ti_msg(rep.message, sizeof rep.message, "%s: cannot replace",
                   TF_META_FILE);
            goto out;
        }
    }
    rep.epochs = n;
out:
    free(cv);
    ep_close(&c);
    if (ret)
        *ret = rep;
    return rc;
}
