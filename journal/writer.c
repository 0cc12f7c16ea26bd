/*
 * writer.c — creating a journal and the writer handle (FORMAT.md §5, §6):
 * open (lock, key check, recovery, a new segment), thread-safe appends with
 * the four sync policies, segment rollover, sync, head and close.
 *
 * Concurrency: one mutex guards the chain (seq, link), the pending buffer
 * and the segment. Frames are encrypted and hashed under it so that seq
 * order is chain order; the write() and fdatasync() of a flush run outside
 * it, by one "leader" at a time (flushing = true), while other appenders
 * keep filling the other buffer (group commit). A failed write or sync
 * poisons the handle: it is never retried.
 *
 * Leakage (FORMAT.md §4.2, §6.1): records are padded under the policy the
 * metadata names, and with batched flushes the file is written only in
 * whole blocks (the last one filled with a PAD record), at the ticks of a
 * fixed clock or when a block is full, so that neither sizes nor write
 * times follow the application's records one to one.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <libgen.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

#include "tally-internal.h"

#define NONE_BUFFER (1u << 20)     /* NONE: bytes buffered before a write */
#define INTERVAL_CAP (8u << 20)    /* INTERVAL: write early past this */
#define NONE_CAP (8u << 20)        /* NONE: the appender writes past this */
#define COMPRESS_MIN 64u           /* smaller payloads are not worth trying */
#define SEAL_CAP (64u << 20)       /* buffered while a background seal runs */
#define CLOCK_CAP (64u << 20)      /* flush clock: appenders wait past this */

/* A segment made current under the lock; its file is created by whoever
 * does the I/O (create_segment_file). */
struct newseg {
    uint8_t hdr[TF_SEG_HEADER_BYTES];
    char name[TF_SEG_NAME_LEN + 1];
};

struct dbg_fail {
    bool armed;
    unsigned after;
    int err;
};

struct tally {
    int dirfd, lockfd;
    ti_meta meta;
    uint8_t *mk; /* sodium_malloc'd master key */
    uint8_t *dk; /* sodium_malloc'd data key of the current epoch */
    ti_aead aead;
    tally_sync_policy sync;
    uint32_t interval_ms;
    bool compress;
    tally_padding pad;   /* the metadata's policy at open (§4.2) */

    /* batched flushes (§6.1): block = 0 when off */
    uint64_t block;      /* each write ends on a multiple of this */
    uint32_t flush_ms;   /* writes only at the ticks of this clock (0: when
                          * blocks are full) */
    uint64_t ts_quantum; /* ns the writer's timestamps are rounded down to */
    uint64_t ready_len;  /* no clock: bytes at the head of cur that end on a
                          * block boundary, and the last seq in them */
    uint64_t ready_seq;

    pthread_mutex_t mu;
    pthread_cond_t cv;   /* a flush ended, or the segment changed */
    pthread_cond_t tick; /* wakes the interval thread (monotonic clock) */
    pthread_t thr;
    bool thr_started, stopping, kick;

    /* the current segment */
    int segfd;
    uint64_t segno;
    char segname[TF_SEG_NAME_LEN + 1];
    uint64_t seg_bytes;  /* header + every frame, written or buffered */
    uint64_t file_off;   /* bytes written to segfd (changed by the I/O
                          * thread, under the lock) */
    uint64_t reserved;   /* size of segfd's file: the space reserved for
                          * its frames (§4), changed by the I/O thread */
    uint64_t seg_frames;

    /* the chain */
    uint64_t seq;
    uint8_t link[32];
    uint64_t written_seq, durable_seq;

    ti_buf cur, spare;   /* frames not yet written / being written */
    bool flushing;
    /* a background seal (none/interval): fdatasync of the full segment and
     * creation of the next file; segfd is -1 meanwhile */
    bool sealing, seal_joinable;
    pthread_t seal_thr;
    int seal_oldfd;
    uint64_t seal_upto, seal_len;
    bool seal_synced;    /* every frame of the segment is durable already */
    struct newseg seal_ns;
    int poison;          /* first write/sync error, 0 if none */
    ti_buf clear_work;
    char errmsg[256];
    struct dbg_fail dbg[3];
};

/* ---- the test hook and the I/O it wraps ---------------------------------- */

void tally_debug_fail(tally *t, int op, unsigned after_n, int err)
{
    if (!t || (op != TALLY_DEBUG_WRITE && op != TALLY_DEBUG_FSYNC))
        return;
    pthread_mutex_lock(&t->mu);
    t->dbg[op].armed = true;
    t->dbg[op].after = after_n;
    t->dbg[op].err = err < 0 ? -err : err;
    pthread_mutex_unlock(&t->mu);
}

/* Called only by the one thread doing I/O (a leader, or under the lock with
 * no flush running), so the counters need no further locking. */
static int dbg_hit(tally *t, int op)
{
    struct dbg_fail *d = &t->dbg[op];
    if (!d->armed)
        return 0;
    if (d->after > 0) {
        d->after--;
        return 0;
    }
    d->armed = false;
    return -(d->err ? d->err : EIO);
}

static int w_write(tally *t, int fd, const void *p, size_t n, uint64_t off)
{
    int rc = dbg_hit(t, TALLY_DEBUG_WRITE);
    return rc ? rc : ti_pwrite_all(fd, p, n, off);
}

static int w_sync(tally *t, int fd, bool data_only)
{
    int rc = dbg_hit(t, TALLY_DEBUG_FSYNC);
    if (rc)
        return rc;
    if ((data_only ? fdatasync(fd) : fsync(fd)) < 0)
        return -errno;
    return 0;
}

static void set_poison(tally *t, int rc, const char *what)
{
    if (!t->poison) {
        t->poison = rc;
        ti_msg(t->errmsg, sizeof t->errmsg, "%s: %s failed: %s", t->segname,
               what, tally_strerror(rc));
    }
}

/* ---- segments ---------------------------------------------------------------- */

/* With t->mu held: segment segno + 1 starts at seq + 1, with a fresh salt
 * (FORMAT.md §5.2) and its key installed; new frames are encrypted for it
 * from now on. */
static int prepare_segment(tally *t, struct newseg *ns)
{
    ti_seg_hdr h;
    memset(&h, 0, sizeof h);
    h.cipher = t->meta.cipher;
    h.epoch = t->meta.current_epoch;
    h.segment_no = t->segno + 1;
    h.first_seq = t->seq + 1;
    randombytes_buf(h.salt, sizeof h.salt);
    memcpy(h.jid, t->meta.jid, 32);
    memcpy(h.prev_link, t->link, 32);

    uint8_t *sk = sodium_malloc(32);
    if (!sk)
        return -ENOMEM;
    ti_derive_segment_key(sk, t->dk, t->meta.jid, h.segment_no, h.salt);
    ti_aead_setkey(&t->aead, sk);
    sodium_free(sk);

    ti_seg_header_encode(ns->hdr, &h);
    ti_seg_name(ns->name, h.segment_no);
    memcpy(t->segname, ns->name, sizeof ns->name);
    t->segno = h.segment_no;
    t->seg_bytes = TF_SEG_HEADER_BYTES;
    t->file_off = TF_SEG_HEADER_BYTES;
    t->seg_frames = 0;
    return 0;
}

/* The file of a new segment (FORMAT.md §6): header written, file fsynced,
 * renamed into place, directory fsynced. Built under a .tmp name so that a
 * reader never sees a segment file without its whole header. */
static int create_segment_file(tally *t, const struct newseg *ns, int *ret_fd,
                               uint64_t *ret_reserved, const char **what)
{
    char tmp[TF_SEG_NAME_LEN + 8];
    snprintf(tmp, sizeof tmp, "%s.tmp", ns->name);
    *what = "create";
    int fd = openat(t->dirfd, tmp,
                    O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
    if (fd < 0)
        return -errno;
    *what = "header write";
    uint64_t pre = 0;
    int rc = w_write(t, fd, ns->hdr, sizeof ns->hdr, 0);
    if (rc == 0) {
        /* Reserve the segment's space up front, file size included, so that
         * an fdatasync after an append has no size change to commit: the
         * file ends in zero bytes until the segment is sealed or closed
         * (FORMAT.md §4), whatever a crash leaves of it, since this size
         * is synced before the file gets its name. Where fallocate is not
         * supported the file is extended all the same (sparse). Under
         * batched flushes (§6.1) the size is a whole number of blocks. */
        pre = t->meta.segment_size + (64u << 10);
        if (pre > (1ull << 30))
            pre = 1ull << 30;
        if (t->block)
            pre = (pre + t->block - 1) / t->block * t->block;
        if (fallocate(fd, 0, 0, (off_t)pre) < 0) {
            *what = "ftruncate";
            rc = ftruncate(fd, (off_t)pre) < 0 ? -errno : 0;
        }
    }
    if (rc == 0) {
        *what = "fsync";
        rc = w_sync(t, fd, false);
    }
    if (rc == 0) {
        *what = "rename";
        /* Never replaces a segment file (a sealed one is never rewritten). */
        if (renameat2(t->dirfd, tmp, t->dirfd, ns->name, RENAME_NOREPLACE) < 0)
            rc = -errno;
    }
    if (rc == 0) {
        *what = "directory fsync";
        rc = w_sync(t, t->dirfd, false);
        if (rc < 0)
            (void)unlinkat(t->dirfd, ns->name, 0);
    }
    if (rc < 0) {
        close(fd);
        (void)unlinkat(t->dirfd, tmp, 0);
        return rc;
    }
    *ret_fd = fd;
    *ret_reserved = pre;
    return 0;
}

/* By whoever does the I/O, before frames that end at `end` are written to
 * fd, whose file is *reserved bytes: a segment file being written always
 * ends in reserved zero bytes after its last frame, in every state a crash
 * can leave (FORMAT.md §4), because recovery takes a file that ends exactly
 * with a frame for one the writer cut there after syncing every frame in it
 * (§6). So a write that would reach the end of the reservation (a record or
 * batch past the segment size's slack) first extends it, and syncs the new
 * size before any frame lies beyond the old one. */
static int reserve_for(tally *t, int fd, uint64_t end, uint64_t *reserved)
{
    if (end < *reserved)
        return 0;
    uint64_t step = end / 8 > (64u << 10) ? end / 8 : (64u << 10);
    uint64_t want = end + step;
    if (t->block)
        want = (want + t->block - 1) / t->block * t->block;
    if (fallocate(fd, 0, 0, (off_t)want) < 0 &&
        ftruncate(fd, (off_t)want) < 0)
        return -errno;
    int rc = w_sync(t, fd, true);
    if (rc == 0)
        *reserved = want;
    return rc;
}

/* With t->mu held, at open. */
static int start_segment(tally *t)
{
    struct newseg ns;
    const char *what;
    int rc = prepare_segment(t, &ns);
    if (rc == 0)
        rc = create_segment_file(t, &ns, &t->segfd, &t->reserved, &what);
    if (rc < 0)
        ti_msg(t->errmsg, sizeof t->errmsg, "%s: cannot start segment: %s",
               t->segname, tally_strerror(rc));
    return rc;
}

/* Seals a full segment (fdatasync, close) and creates the next one's file.
 * Records reach the next file only after this, so a torn segment is never
 * followed by one that holds records (recovery relies on it, §6). */
static int seal_io(tally *t, int oldfd, uint64_t len, bool synced,
                   const struct newseg *ns, int *ret_fd,
                   uint64_t *ret_reserved)
{
    /* A sealed segment file ends with its last frame (FORMAT.md §4): the
     * reserved zero tail goes before the next file exists. Only once
     * every frame is durable, though: a file that ends exactly with a
     * frame tells recovery that all of its frames were synced (§6), and a
     * cut that reached the disk before them would say so falsely. */
    int rc = synced ? 0 : w_sync(t, oldfd, true);
    if (rc == 0)
        rc = ftruncate(oldfd, (off_t)len) < 0 ? -errno : 0;
    if (rc == 0)
        rc = w_sync(t, oldfd, true);
    close(oldfd);
    if (rc < 0) {
        ti_msg(t->errmsg, sizeof t->errmsg, "sealing the segment before %s: "
               "fdatasync failed: %s", ns->name, tally_strerror(rc));
        return rc;
    }
    const char *what;
    rc = create_segment_file(t, ns, ret_fd, ret_reserved, &what);
    if (rc < 0)
        ti_msg(t->errmsg, sizeof t->errmsg, "%s: %s failed: %s", ns->name,
               what, tally_strerror(rc));
    return rc;
}

static void seal_done(tally *t, int rc, int fd, uint64_t reserved,
                      uint64_t upto)
{
    if (rc < 0) {
        if (!t->poison)
            t->poison = rc; /* seal_io wrote the message */
    } else {
        t->segfd = fd;
        t->reserved = reserved;
        if (t->durable_seq < upto)
            t->durable_seq = upto;
    }
    pthread_cond_broadcast(&t->cv);
}

/* Under none/interval the seal runs in the background while appenders keep
 * encoding into memory for the next segment. */
static void *seal_main(void *arg)
{
    tally *t = arg;
    int fd = -1;
    uint64_t reserved = 0;
    int rc = seal_io(t, t->seal_oldfd, t->seal_len, t->seal_synced,
                     &t->seal_ns, &fd, &reserved);
    pthread_mutex_lock(&t->mu);
    t->sealing = false;
    seal_done(t, rc, fd, reserved, t->seal_upto);
    pthread_mutex_unlock(&t->mu);
    return NULL;
}

/* ---- flushing ------------------------------------------------------------- */

/* What a flush writes: everything buffered, only the whole blocks at the
 * head of the buffer (batched flushes without a clock), or nothing (an
 * fdatasync of what was written before). */
enum flush_what { FL_ALL, FL_READY, FL_NONE };

static int encode_pad(tally *t, uint64_t gap);

/* With t->mu held, under batched flushes: fills the buffered frames up to
 * the next block boundary of the file with a PAD record (FORMAT.md §6.1),
 * so that the write that takes them ends on it. Nothing to do when the
 * segment holds no frame yet or already ends on a boundary. */
static int pad_to_block(tally *t)
{
    if (!t->block || t->seg_frames == 0 || t->seg_bytes % t->block == 0)
        return 0;
    uint64_t gap = t->block - t->seg_bytes % t->block;
    if (gap < TF_PAD_FRAME_MIN)
        gap += t->block; /* too small for a PAD record: the next boundary */
    return encode_pad(t, gap);
}

/* With t->mu held: writes out what `what` says (and fdatasyncs when sync),
 * as the one leader; returns with t->mu held. */
static int flush_locked(tally *t, enum flush_what what_, bool sync)
{
    while (t->flushing || t->sealing)
        pthread_cond_wait(&t->cv, &t->mu);
    if (t->poison)
        return TALLY_EPOISONED;
    if (what_ == FL_ALL && t->cur.len) {
        int rc = pad_to_block(t);
        if (rc < 0)
            return rc;
    }
    size_t n = what_ == FL_ALL ? t->cur.len
             : what_ == FL_READY ? (size_t)t->ready_len : 0;
    uint64_t upto = what_ == FL_ALL ? t->seq
                  : what_ == FL_READY ? t->ready_seq : t->written_seq;
    if (n == 0 && (!sync || t->durable_seq >= t->written_seq))
        return 0;
    if (n == 0)
        upto = t->written_seq;
    ti_buf out = t->cur;
    if (n) {
        /* The frames after the first n bytes stay buffered. */
        size_t rest = out.len - n;
        if (rest && ti_buf_reserve(&t->spare, rest) < 0)
            return -ENOMEM;
        t->cur = t->spare;
        t->spare = out;
        if (rest)
            memcpy(t->cur.p, out.p + n, rest);
        t->cur.len = rest;
        t->ready_len = 0;
    }
    int fd = t->segfd;
    uint64_t off = t->file_off, reserved = t->reserved;
    t->flushing = true;
    pthread_mutex_unlock(&t->mu);

    int rc = 0;
    const char *what = "reserve";
    if (n)
        rc = reserve_for(t, fd, off + n, &reserved);
    if (rc == 0 && n) {
        what = "write";
        rc = w_write(t, fd, out.p, n, off);
    }
    if (rc == 0 && sync) {
        what = "fdatasync";
        rc = w_sync(t, fd, true);
    } else if (rc == 0 && n) {
        /* Start writeback now (it does not wait), so that the fdatasync at
         * rollover or close finds little left to do. Advisory only: its
         * result changes no promise. */
        (void)sync_file_range(fd, (off64_t)off, (off64_t)n,
                              SYNC_FILE_RANGE_WRITE);
    }

    pthread_mutex_lock(&t->mu);
    t->flushing = false;
    t->reserved = reserved;
    if (n)
        t->spare.len = 0;
    if (rc < 0)
        set_poison(t, rc, what);
    else {
        t->file_off = off + n;
        if (t->written_seq < upto)
            t->written_seq = upto;
        if (sync && t->durable_seq < upto)
            t->durable_seq = upto;
    }
    pthread_cond_broadcast(&t->cv);
    return rc;
}

/* With t->mu held: returns once seq is durable (group commit: whoever finds
 * no flush running leads the next one, the others wait for it). Under a
 * flush clock (§6.1) records reach the file only at its ticks, so the
 * caller waits for the tick that takes seq, unless force (close). */
static int make_durable(tally *t, uint64_t seq, bool force)
{
    while (t->durable_seq < seq) {
        if (t->poison)
            return TALLY_EPOISONED;
        if (t->flushing || t->sealing) {
            pthread_cond_wait(&t->cv, &t->mu);
            continue;
        }
        int rc;
        if (t->flush_ms && !force) {
            /* The clock syncs what it writes, except under NONE: then the
             * waiter syncs once its records are written. */
            if (t->written_seq < seq || t->sync != TALLY_SYNC_NONE) {
                pthread_cond_wait(&t->cv, &t->mu);
                continue;
            }
            rc = flush_locked(t, FL_NONE, true);
        } else {
            rc = flush_locked(t, FL_ALL, true);
        }
        if (rc < 0)
            return rc;
    }
    return 0;
}

/* With t->mu held: a full segment is written, synced and left for good; the
 * next record goes to a new one (FORMAT.md §6). Under a flush clock only
 * the clock's thread (clock = true) does it, at a tick, so that a rollover
 * writes nothing at the application's moment; appenders wait for it. */
static int maybe_rollover(tally *t, bool clock)
{
    while (t->seg_bytes >= t->meta.segment_size && t->seg_frames > 0) {
        if (t->poison)
            return TALLY_EPOISONED;
        if (t->flushing || t->sealing || (t->flush_ms && !clock)) {
            if (t->stopping && t->flush_ms && !clock)
                return 0; /* closing: the segment just grows past its size */
            pthread_cond_wait(&t->cv, &t->mu);
            continue;
        }
        if (t->seal_joinable) {
            pthread_join(t->seal_thr, NULL); /* it has finished */
            t->seal_joinable = false;
        }
        int rc = pad_to_block(t); /* a sealed file ends on a block (§6.1) */
        if (rc < 0)
            return rc;
        if (t->cur.len) {
            rc = reserve_for(t, t->segfd, t->file_off + t->cur.len,
                             &t->reserved);
            if (rc == 0)
                rc = w_write(t, t->segfd, t->cur.p, t->cur.len, t->file_off);
            if (rc < 0) {
                set_poison(t, rc, "write");
                return rc;
            }
            t->file_off += t->cur.len;
            t->cur.len = 0;
            t->ready_len = 0;
            t->written_seq = t->seq;
        }
        int oldfd = t->segfd;
        uint64_t upto = t->seq, len = t->seg_bytes;
        bool synced = t->durable_seq >= upto;
        struct newseg ns;
        rc = prepare_segment(t, &ns);
        if (rc < 0) {
            set_poison(t, rc, "rollover");
            return rc;
        }
        t->segfd = -1;
        if (t->sync == TALLY_SYNC_NONE || t->sync == TALLY_SYNC_INTERVAL) {
            t->seal_oldfd = oldfd;
            t->seal_upto = upto;
            t->seal_len = len;
            t->seal_synced = synced;
            t->seal_ns = ns;
            t->sealing = true;
            if (pthread_create(&t->seal_thr, NULL, seal_main, t) == 0) {
                t->seal_joinable = true;
                continue;
            }
            t->sealing = false; /* no thread: seal right here */
        }
        int fd = -1;
        uint64_t reserved = 0;
        rc = seal_io(t, oldfd, len, synced, &ns, &fd, &reserved);
        seal_done(t, rc, fd, reserved, upto);
        if (rc < 0)
            return rc;
    }
    return 0;
}

/* ---- appending -------------------------------------------------------------- */

static int check_record(const tally_record_in *r)
{
    if (!r)
        return -EINVAL;
    if (r->type >= TALLY_TYPE_RESERVED && r->type != TALLY_TYPE_SNAPSHOT &&
        r->type != TALLY_TYPE_CHECKPOINT && r->type != TALLY_TYPE_COMPACTION)
        return -EINVAL;
    if (r->key_len > TALLY_MAX_RKEY || r->payload_len > TALLY_MAX_PAYLOAD)
        return TALLY_ETOOBIG;
    if ((r->key_len && !r->key) || (r->payload_len && !r->payload))
        return -EINVAL;
    return 0;
}

static bool is_clear(uint16_t type)
{
    return type == TALLY_TYPE_CHECKPOINT || type == TALLY_TYPE_COMPACTION;
}

/* A record prepared outside the lock: timestamp taken, payload compressed
 * if that makes it smaller (FORMAT.md §8 on the length side channel),
 * padding worked out (§4.2). */
struct prep {
    const tally_record_in *r;
    const void *data;
    size_t data_len;
    uint8_t *z; /* owned compressed copy, or NULL */
    uint64_t ts;
    size_t pad; /* zero bytes after the data in the envelope */
};

/* The timestamp a record gets when the caller gives none: under a flush
 * clock rounded down to its period, so that frame headers tell no more of
 * the application's timing than the writes do (§6.1). */
static uint64_t writer_ts(const tally *t)
{
    uint64_t now = ti_now_ns();
    return t->ts_quantum ? now - now % t->ts_quantum : now;
}

/* SEALED records are padded; CLEAR ones hold nothing secret (§4.2). */
static void prep_pad(const tally *t, struct prep *p)
{
    size_t env = TF_ENV_HEADER_BYTES + p->r->key_len + p->data_len;
    p->pad = is_clear(p->r->type) ? 0 : tally_padded_len(&t->pad, env) - env;
}

static void prep_record(const tally *t, const tally_record_in *r,
                        struct prep *p)
{
    p->r = r;
    p->data = r->payload;
    p->data_len = r->payload_len;
    p->z = NULL;
    p->ts = r->ts_ns ? r->ts_ns : writer_ts(t);
    if (!t->compress || is_clear(r->type) || r->payload_len < COMPRESS_MIN) {
        prep_pad(t, p);
        return;
    }
    uLongf zlen = compressBound((uLong)r->payload_len);
    uint8_t *z = malloc(zlen);
    if (z && compress2(z, &zlen, r->payload, (uLong)r->payload_len,
                       Z_DEFAULT_COMPRESSION) == Z_OK &&
        zlen < r->payload_len) {
        p->z = z;
        p->data = z;
        p->data_len = zlen;
    } else {
        free(z); /* stored uncompressed: still correct */
    }
    prep_pad(t, p);
}

static size_t prep_size(const struct prep *p)
{
    return ti_frame_size(p->r->key_len, p->data_len) + p->pad;
}

/* With t->mu held: the unsynced_depth of the next frame (FORMAT.md §4.2):
 * how far back from its seq records were known durable as it is encoded,
 * which tells recovery whether a damaged frame before it held a record
 * that had been synced (damage) or never was (a torn tail, §6). */
static uint32_t unsynced_depth(const tally *t)
{
    uint64_t d = t->seq + 1 - t->durable_seq;
    return d > TF_DEPTH_MAX ? TF_DEPTH_MAX : (uint32_t)d;
}

/* With t->mu held: one frame. Never releases the lock, so that the frames
 * of a batch get consecutive seqs (maybe_rollover, which may wait, is
 * called before). */
static int encode_locked(tally *t, const struct prep *p)
{
    const tally_record_in *r = p->r;
    size_t fsz = prep_size(p);
    int rc = ti_buf_reserve(&t->cur, t->cur.len + fsz);
    if (rc < 0)
        return rc;
    bool clear = is_clear(r->type);
    if (clear) {
        rc = ti_buf_reserve(&t->clear_work, TF_AD_BYTES + fsz);
        if (rc < 0)
            return rc;
    }
    ti_frame_in in = {
        .kind = clear ? TF_KIND_CLEAR : TF_KIND_SEALED,
        .flags = p->z ? TF_FRAME_COMPRESSED : 0,
        .vtype = r->type >= TALLY_TYPE_RESERVED ? r->type : 0,
        .type = r->type,
        .seq = t->seq + 1,
        .ts_ns = p->ts,
        .unsynced_depth = unsynced_depth(t),
        .key = r->key,
        .key_len = r->key_len,
        .data = p->data,
        .data_len = p->data_len,
        .raw_len = r->payload_len,
        .pad_len = p->pad,
    };
    ti_frame_encode(&t->aead, t->meta.jid, t->cur.p + t->cur.len, &in,
                    t->clear_work.p, t->link);
    t->cur.len += fsz;
    t->seq++;
    t->seg_bytes += fsz;
    t->seg_frames++;
    return 0;
}

/* With t->mu held: a PAD record of exactly gap bytes (§6.1): CLEAR, an
 * empty envelope of type PAD and zero bytes up to its end. It takes a seq
 * and a link like any record. */
static int encode_pad(tally *t, uint64_t gap)
{
    size_t env = (size_t)gap - TF_FRAME_OVERHEAD - TF_TAG_BYTES;
    int rc = ti_buf_reserve(&t->cur, t->cur.len + gap);
    if (rc == 0)
        rc = ti_buf_reserve(&t->clear_work, TF_AD_BYTES + env);
    if (rc < 0)
        return rc;
    ti_frame_in in = {
        .kind = TF_KIND_CLEAR,
        .vtype = TALLY_TYPE_PAD,
        .type = TALLY_TYPE_PAD,
        .seq = t->seq + 1,
        .ts_ns = writer_ts(t),
        .unsynced_depth = unsynced_depth(t),
        .pad_len = env - TF_ENV_HEADER_BYTES,
    };
    ti_frame_encode(&t->aead, t->meta.jid, t->cur.p + t->cur.len, &in,
                    t->clear_work.p, t->link);
    t->cur.len += gap;
    t->seq++;
    t->seg_bytes += gap;
    t->seg_frames++;
    return 0;
}

/* With t->mu held, batched flushes without a clock, before `size` bytes of
 * frames are encoded (one record, or a whole batch, whose seqs must stay
 * consecutive): when they do not fit in the open block (leaving either
 * nothing or room for a PAD record), the block is closed with a PAD
 * record first and becomes ready to be written; they then start the next
 * block. */
static int close_block_before(tally *t, size_t size)
{
    if (!t->block || t->flush_ms || t->cur.len <= t->ready_len ||
        t->seg_frames == 0)
        return 0;
    uint64_t r = t->seg_bytes % t->block;
    if (r == 0)
        return 0;
    uint64_t end = t->seg_bytes - r + t->block; /* the open block's end */
    if (end - t->seg_bytes < TF_PAD_FRAME_MIN)
        end += t->block;
    uint64_t after = t->seg_bytes + size;
    if (after == end || (after < end && end - after >= TF_PAD_FRAME_MIN))
        return 0; /* fits */
    int rc = pad_to_block(t);
    if (rc < 0)
        return rc;
    t->ready_len = t->cur.len;
    t->ready_seq = t->seq;
    return 0;
}

/* After frames were encoded without a clock: a block they filled exactly
 * is ready to be written. */
static void note_block_end(tally *t)
{
    if (t->block && !t->flush_ms && t->seg_bytes % t->block == 0) {
        t->ready_len = t->cur.len;
        t->ready_seq = t->seq;
    }
}

/* Bytes an appender may write now: all buffered frames, or under batched
 * flushes without a clock the whole blocks among them. */
static size_t writable(const tally *t)
{
    return t->block ? (size_t)t->ready_len : t->cur.len;
}

/* With t->mu held, after seq was encoded: what the sync policy promises. */
static int after_append(tally *t, uint64_t seq)
{
    if (t->flush_ms) {
        /* A flush clock (§6.1): only its ticks write. Durable appends wait
         * for the tick that takes them; the others return at once, unless
         * the buffer is over its cap (back pressure). */
        if (t->sync == TALLY_SYNC_ALWAYS || t->sync == TALLY_SYNC_BATCH)
            return make_durable(t, seq, false);
        while (!t->poison && !t->stopping && t->cur.len >= CLOCK_CAP)
            pthread_cond_wait(&t->cv, &t->mu);
        return t->poison ? TALLY_EPOISONED : 0;
    }
    enum flush_what fw = t->block ? FL_READY : FL_ALL;
    switch (t->sync) {
    case TALLY_SYNC_ALWAYS:
    case TALLY_SYNC_BATCH:
        return make_durable(t, seq, true);
    case TALLY_SYNC_INTERVAL:
        /* While a seal runs, frames wait in memory up to SEAL_CAP; past
         * that the appender waits for it (back pressure). */
        if (writable(t) >= (t->sealing ? SEAL_CAP : INTERVAL_CAP))
            return flush_locked(t, fw, false);
        return 0;
    case TALLY_SYNC_NONE:
    default:
        if (writable(t) < NONE_BUFFER)
            return 0;
        /* Past the cap the appender writes (or waits) itself. */
        if (writable(t) >= (t->sealing ? SEAL_CAP : NONE_CAP) ||
            !t->thr_started)
            return flush_locked(t, fw, false);
        if (!t->flushing && !t->sealing && !t->kick) {
            t->kick = true;
            pthread_cond_signal(&t->tick);
        }
        return 0;
    }
}

int tally_append(tally *t, const tally_record_in *rec, uint64_t *ret_seq)
{
    if (!t)
        return -EINVAL;
    int rc = check_record(rec);
    if (rc < 0)
        return rc;
    struct prep p;
    prep_record(t, rec, &p);
    pthread_mutex_lock(&t->mu);
    if (t->poison) {
        rc = TALLY_EPOISONED;
        goto out;
    }
    rc = maybe_rollover(t, false);
    if (rc == 0)
        rc = close_block_before(t, prep_size(&p));
    if (rc == 0)
        rc = encode_locked(t, &p);
    if (rc < 0)
        goto out;
    note_block_end(t);
    uint64_t seq = t->seq;
    rc = after_append(t, seq);
    if (rc == 0 && ret_seq)
        *ret_seq = seq;
out:
    pthread_mutex_unlock(&t->mu);
    free(p.z);
    return rc;
}

int tally_append_batch(tally *t, const tally_record_in *recs, size_t n,
                       uint64_t *ret_first_seq)
{
    if (!t || !recs || n == 0)
        return -EINVAL;
    for (size_t i = 0; i < n; i++) {
        int rc = check_record(&recs[i]);
        if (rc < 0)
            return rc;
    }
    struct prep *p = malloc(n * sizeof *p);
    if (!p)
        return -ENOMEM;
    size_t total = 0, clear_max = 0;
    for (size_t i = 0; i < n; i++) {
        prep_record(t, &recs[i], &p[i]);
        total += prep_size(&p[i]);
        if (is_clear(recs[i].type) && prep_size(&p[i]) > clear_max)
            clear_max = prep_size(&p[i]);
    }
    int rc;
    pthread_mutex_lock(&t->mu);
    if (t->poison) {
        rc = TALLY_EPOISONED;
        goto out;
    }
    /* A batch goes to one segment (which may pass its target size by the
     * batch). Room for all of it first, so that nothing stops it halfway. */
    rc = maybe_rollover(t, false);
    if (rc == 0)
        rc = close_block_before(t, total);
    if (rc == 0)
        rc = ti_buf_reserve(&t->cur, t->cur.len + total);
    if (rc == 0 && clear_max)
        rc = ti_buf_reserve(&t->clear_work, TF_AD_BYTES + clear_max);
    if (rc < 0)
        goto out;
    uint64_t first = t->seq + 1;
    for (size_t i = 0; i < n && rc == 0; i++)
        rc = encode_locked(t, &p[i]);
    if (rc < 0)
        goto out;
    note_block_end(t);
    rc = after_append(t, t->seq);
    if (rc == 0 && ret_first_seq)
        *ret_first_seq = first;
out:
    pthread_mutex_unlock(&t->mu);
    for (size_t i = 0; i < n; i++)
        free(p[i].z);
    free(p);
    return rc;
}

int tally_sync(tally *t, uint64_t seq)
{
    if (!t)
        return -EINVAL;
    pthread_mutex_lock(&t->mu);
    int rc;
    if (t->poison)
        rc = TALLY_EPOISONED;
    else
        rc = make_durable(t, seq == 0 || seq > t->seq ? t->seq : seq, false);
    pthread_mutex_unlock(&t->mu);
    return rc;
}

int tally_head(tally *t, tally_head_info *ret)
{
    if (!t || !ret)
        return -EINVAL;
    pthread_mutex_lock(&t->mu);
    int rc = 0;
    if (t->poison)
        rc = TALLY_EPOISONED;
    else {
        ret->seq = t->seq;
        memcpy(ret->link, t->link, 32);
        ret->durable_seq = t->durable_seq;
    }
    pthread_mutex_unlock(&t->mu);
    return rc;
}

void tally_id(const tally *t, uint8_t ret_id[static TALLY_ID_BYTES])
{
    memcpy(ret_id, t->meta.jid, TALLY_ID_BYTES);
}

const char *tally_errmsg(const tally *t)
{
    return t ? t->errmsg : "";
}

/* ---- the compactor's view (compact/, FORMAT.md §11) ------------------------- */

int ti_writer_compact_view(tally *t, int *ret_dirfd, uint8_t mk[32],
                           uint64_t *ret_sealed)
{
    if (!t || !ret_dirfd || !mk || !ret_sealed)
        return -EINVAL;
    pthread_mutex_lock(&t->mu);
    int rc = t->poison ? TALLY_EPOISONED : 0;
    /* segno is the active segment; while a background seal runs, the one
     * before it is still being synced. */
    uint64_t below = t->sealing ? 2 : 1;
    uint64_t sealed = t->segno > below ? t->segno - below : 0;
    pthread_mutex_unlock(&t->mu);
    if (rc < 0)
        return rc;
    int fd = fcntl(t->dirfd, F_DUPFD_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    memcpy(mk, t->mk, 32);
    *ret_dirfd = fd;
    *ret_sealed = sealed;
    return 0;
}

/* ---- the interval thread --------------------------------------------------- */

static void *interval_main(void *arg)
{
    tally *t = arg;
    pthread_mutex_lock(&t->mu);
    while (!t->stopping) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        uint64_t ns = (uint64_t)ts.tv_nsec + (uint64_t)t->interval_ms * 1000000u;
        ts.tv_sec += (time_t)(ns / 1000000000u);
        ts.tv_nsec = (long)(ns % 1000000000u);
        int w = 0;
        while (!t->stopping && w != ETIMEDOUT)
            w = pthread_cond_timedwait(&t->tick, &t->mu, &ts);
        if (t->stopping)
            break;
        /* Under batched flushes only whole blocks are written (§6.1); the
         * rest waits for its block to fill, or for tally_sync. */
        if (!t->poison)
            (void)flush_locked(t, t->block ? FL_READY : FL_ALL, true);
    }
    pthread_mutex_unlock(&t->mu);
    return NULL;
}

/* NONE: writes a full buffer when an appender kicks it, so that the copy
 * into the page cache runs beside the appenders instead of in their way. */
static void *writer_main(void *arg)
{
    tally *t = arg;
    pthread_mutex_lock(&t->mu);
    while (!t->stopping) {
        while (!t->stopping && !t->kick)
            pthread_cond_wait(&t->tick, &t->mu);
        t->kick = false;
        if (t->stopping)
            break;
        if (!t->poison && writable(t))
            (void)flush_locked(t, t->block ? FL_READY : FL_ALL, false);
    }
    pthread_mutex_unlock(&t->mu);
    return NULL;
}

/* A flush clock (§6.1): at every tick of a fixed grid of the monotonic
 * clock, writes what was appended since the last one, filled up to a block
 * boundary with a PAD record (and syncs it, except under NONE), then does
 * a rollover that fell due meanwhile. Nothing is written at a tick that
 * finds nothing appended. */
static void *clock_main(void *arg)
{
    tally *t = arg;
    const uint64_t period = (uint64_t)t->flush_ms * 1000000u;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    uint64_t next = (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
    pthread_mutex_lock(&t->mu);
    while (!t->stopping) {
        clock_gettime(CLOCK_MONOTONIC, &ts);
        uint64_t now = (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
        next += period;
        if (next <= now) /* ticks missed (a long write): the next on the grid */
            next += (now - next) / period * period + period;
        ts.tv_sec = (time_t)(next / 1000000000u);
        ts.tv_nsec = (long)(next % 1000000000u);
        int w = 0;
        while (!t->stopping && w != ETIMEDOUT)
            w = pthread_cond_timedwait(&t->tick, &t->mu, &ts);
        if (t->stopping)
            break;
        if (t->poison)
            continue;
        /* an error poisons the handle; waiters see it */
        (void)flush_locked(t, FL_ALL, t->sync != TALLY_SYNC_NONE);
        (void)maybe_rollover(t, true);
        pthread_cond_broadcast(&t->cv);
    }
    pthread_mutex_unlock(&t->mu);
    return NULL;
}

/* ---- open, close, init ------------------------------------------------------ */

static void free_handle(tally *t)
{
    if (t->segfd >= 0)
        close(t->segfd);
    if (t->lockfd >= 0)
        close(t->lockfd); /* releases the flock */
    if (t->dirfd >= 0)
        close(t->dirfd);
    ti_aead_free(&t->aead);
    sodium_free(t->mk);
    sodium_free(t->dk);
    ti_meta_free(&t->meta);
    ti_buf_free(&t->cur);
    ti_buf_free(&t->spare);
    ti_buf_free(&t->clear_work);
    pthread_cond_destroy(&t->tick);
    pthread_cond_destroy(&t->cv);
    pthread_mutex_destroy(&t->mu);
    free(t);
}

static int open_dir(const char *dir, int *ret_fd)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return errno == ENOENT ? TALLY_ENOJOURNAL : -errno;
    *ret_fd = fd;
    return 0;
}

static int take_lock(int dirfd, int *ret_fd)
{
    int fd = openat(dirfd, TF_LOCK_FILE, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0)
        return -errno;
    if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
        int rc = errno == EWOULDBLOCK ? -EBUSY : -errno;
        close(fd);
        return rc;
    }
    *ret_fd = fd;
    return 0;
}

int tally_open(tally **ret, const char *dir, const tally_options *opt,
               tally_recovery *ret_recovery)
{
    if (!ret || !dir || !opt || !opt->master_key ||
        opt->sync > TALLY_SYNC_NONE)
        return -EINVAL;
    if (opt->flush_block && (opt->flush_block < TALLY_FLUSH_MIN_BLOCK ||
                             opt->flush_block > TALLY_FLUSH_MAX_BLOCK))
        return -EINVAL;
    if (sodium_init() < 0)
        return -EIO;
    tally *t = calloc(1, sizeof *t);
    if (!t)
        return -ENOMEM;
    t->dirfd = t->lockfd = t->segfd = -1;
    pthread_mutex_init(&t->mu, NULL);
    pthread_cond_init(&t->cv, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&t->tick, &ca);
    pthread_condattr_destroy(&ca);
    t->sync = opt->sync;
    t->interval_ms = opt->sync_interval_ms ? opt->sync_interval_ms : 100;
    t->flush_ms = opt->flush_interval_ms;
    t->block = opt->flush_block ? opt->flush_block
             : t->flush_ms      ? TALLY_FLUSH_DEFAULT_BLOCK
                                : 0;
    t->ts_quantum = (uint64_t)t->flush_ms * 1000000u;

    tally_recovery rep;
    memset(&rep, 0, sizeof rep);
    char *msg = t->errmsg;
    size_t msglen = sizeof t->errmsg;
    int rc = open_dir(dir, &t->dirfd);
    if (rc < 0) {
        ti_msg(msg, msglen, "%s: cannot open directory", dir);
        goto fail;
    }
    if (faccessat(t->dirfd, TF_META_FILE, F_OK, 0) < 0) {
        rc = errno == ENOENT ? TALLY_ENOJOURNAL : -errno;
        ti_msg(msg, msglen, "%s: no %s", dir, TF_META_FILE);
        goto fail;
    }
    rc = take_lock(t->dirfd, &t->lockfd);
    if (rc < 0) {
        ti_msg(msg, msglen, "%s: %s", dir,
               rc == -EBUSY ? "another writer holds the lock"
                            : "cannot take the lock");
        goto fail;
    }
    t->mk = sodium_malloc(32);
    t->dk = sodium_malloc(32);
    if (!t->mk || !t->dk) {
        rc = -ENOMEM;
        goto fail;
    }
    memcpy(t->mk, opt->master_key, 32);
    rc = ti_meta_read(t->dirfd, t->mk, &t->meta, msg, msglen);
    if (rc < 0)
        goto fail;
    t->compress = t->meta.flags & TF_META_COMPRESS;
    rc = ti_meta_padding(&t->meta, &t->pad);
    if (rc < 0) {
        ti_msg(msg, msglen, "%s: %s", TF_META_FILE,
               rc == TALLY_EFORMAT ? "padding policy unknown to this version"
                                   : "malformed padding policy");
        goto fail;
    }
    rc = ti_aead_alloc(&t->aead, t->meta.cipher);
    if (rc < 0) {
        ti_msg(msg, msglen, "%s",
               rc == TALLY_ECIPHER
                   ? "AES-256-GCM is not available on this CPU (a journal "
                     "created with --cipher xchacha20poly1305 works here)"
                   : "cannot set up the cipher");
        goto fail;
    }
    rc = ti_epoch_unwrap(ti_meta_epoch(&t->meta, t->meta.current_epoch),
                         t->mk, t->meta.jid, t->dk);
    if (rc < 0) {
        ti_msg(msg, msglen, "cannot unwrap the data key of epoch %u",
               t->meta.current_epoch);
        goto fail;
    }
    ti_recovered rv;
    rc = ti_recover(t->dirfd, &t->meta, t->mk, &rep, &rv, msg, msglen);
    if (rc < 0)
        goto fail;
    t->seq = t->written_seq = t->durable_seq = rv.seq;
    memcpy(t->link, rv.link, 32);
    t->segno = rv.last_segment;
    rc = start_segment(t);
    if (rc < 0)
        goto fail;
    if (ti_buf_reserve(&t->cur, NONE_BUFFER + 64 * 1024) < 0 ||
        ti_buf_reserve(&t->spare, NONE_BUFFER + 64 * 1024) < 0) {
        rc = -ENOMEM;
        goto fail;
    }
    if (t->flush_ms) {
        /* Batched by a clock: its thread does all the writing (§6.1). */
        if (pthread_create(&t->thr, NULL, clock_main, t) != 0) {
            rc = -EAGAIN;
            goto fail;
        }
        t->thr_started = true;
    } else if (t->sync == TALLY_SYNC_INTERVAL || t->sync == TALLY_SYNC_NONE) {
        if (pthread_create(&t->thr, NULL,
                           t->sync == TALLY_SYNC_NONE ? writer_main
                                                      : interval_main,
                           t) == 0)
            t->thr_started = true;
        else if (t->sync == TALLY_SYNC_INTERVAL) {
            rc = -EAGAIN;
            goto fail;
        } /* NONE without its thread: appenders write the buffer themselves */
    }
    t->errmsg[0] = 0;
    if (ret_recovery)
        *ret_recovery = rep;
    *ret = t;
    return 0;
fail:
    if (ret_recovery) {
        memset(ret_recovery, 0, sizeof *ret_recovery);
        ti_msg(ret_recovery->message, sizeof ret_recovery->message, "%s",
               t->errmsg);
    }
    free_handle(t);
    return rc;
}

int tally_close(tally *t)
{
    if (!t)
        return 0;
    pthread_mutex_lock(&t->mu);
    t->stopping = true;
    pthread_cond_broadcast(&t->tick);
    pthread_mutex_unlock(&t->mu);
    if (t->thr_started)
        pthread_join(t->thr, NULL);

    pthread_mutex_lock(&t->mu);
    while (t->sealing)
        pthread_cond_wait(&t->cv, &t->mu);
    int rc = t->poison ? TALLY_EPOISONED : make_durable(t, t->seq, true);
    bool empty = t->seg_frames == 0;
    pthread_mutex_unlock(&t->mu);
    if (t->seal_joinable)
        pthread_join(t->seal_thr, NULL);
    if (rc == 0 && !empty && t->segfd >= 0) {
        /* Leave the file ending with its last frame (the reserved zero tail
         * is only ever in a segment that is being written). */
        if (ftruncate(t->segfd, (off_t)t->seg_bytes) < 0 ||
            fdatasync(t->segfd) < 0)
            rc = -errno;
    }
    if (rc == 0 && empty && t->segfd >= 0) {
        /* A segment that never got a record is left out, as recovery would
         * remove it at the next open (FORMAT.md §6). */
        close(t->segfd);
        t->segfd = -1;
        if (unlinkat(t->dirfd, t->segname, 0) == 0)
            (void)ti_fsync_dir(t->dirfd);
    }
    free_handle(t);
    return rc;
}

/* ---- init ------------------------------------------------------------------ */

static bool valid_utf8(const unsigned char *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        unsigned c = s[i];
        size_t k;
        if (c == 0)
            return false;
        if (c < 0x80)
            k = 0;
        else if ((c & 0xE0) == 0xC0 && c >= 0xC2)
            k = 1;
        else if ((c & 0xF0) == 0xE0)
            k = 2;
        else if ((c & 0xF8) == 0xF0 && c <= 0xF4)
            k = 3;
        else
            return false;
        if (n - i - 1 < k)
            return false;
        for (size_t j = 1; j <= k; j++)
            if ((s[i + j] & 0xC0) != 0x80)
                return false;
        i += k + 1;
    }
    return true;
}

static int check_name(const char *name, size_t *ret_len)
{
    size_t l = strlen(name);
    if (l == 0 || l > TALLY_MAX_NAME ||
        !valid_utf8((const unsigned char *)name, l))
        return -EINVAL;
    *ret_len = l;
    return 0;
}

int tally_journal_id(const uint8_t master_key[static TALLY_KEY_BYTES],
                     const char *name, uint8_t ret_id[static TALLY_ID_BYTES])
{
    if (sodium_init() < 0)
        return -EIO;
    if (!name)
        name = "default";
    size_t l;
    int rc = check_name(name, &l);
    if (rc < 0)
        return rc;
    ti_derive_jid(ret_id, master_key, name, l);
    return 0;
}

int tally_init(const char *dir, const tally_options *opt)
{
    if (!dir || !opt || !opt->master_key)
        return -EINVAL;
    if (sodium_init() < 0)
        return -EIO;
    const char *name = opt->name ? opt->name : "default";
    size_t name_len;
    int rc = check_name(name, &name_len);
    if (rc < 0)
        return rc;
    int cipher = opt->cipher ? (int)opt->cipher : TALLY_CIPHER_AES256GCM;
    rc = ti_cipher_check(cipher);
    if (rc < 0)
        return rc == TALLY_EFORMAT ? -EINVAL : rc;
    uint64_t segsize = opt->segment_size ? opt->segment_size
                                         : TALLY_DEFAULT_SEGMENT_SIZE;
    if (segsize < 4096 || ti_padding_check(&opt->padding) < 0)
        return -EINVAL;

    bool created = mkdir(dir, 0700) == 0;
    if (!created && errno != EEXIST)
        return -errno;
    if (created) {
        /* The new directory's own entry must be durable too. */
        char *copy = strdup(dir);
        if (!copy)
            return -ENOMEM;
        int pfd = open(dirname(copy), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        free(copy);
        if (pfd >= 0) {
            (void)fsync(pfd);
            close(pfd);
        }
    }
    int dirfd = -1, lockfd = -1;
    rc = open_dir(dir, &dirfd);
    if (rc < 0)
        return rc == TALLY_ENOJOURNAL ? -ENOENT : rc;
    ti_meta m;
    memset(&m, 0, sizeof m);
    uint8_t *dk = sodium_malloc(32);
    if (!dk) {
        rc = -ENOMEM;
        goto out;
    }
    rc = take_lock(dirfd, &lockfd);
    if (rc < 0)
        goto out;
    char **names;
    size_t n;
    if (faccessat(dirfd, TF_META_FILE, F_OK, 0) == 0) {
        rc = TALLY_EEXIST;
        goto out;
    }
    rc = ti_seg_list(dirfd, &names, &n);
    if (rc < 0)
        goto out;
    ti_seg_list_free(names, n);
    if (n > 0) {
        rc = TALLY_EEXIST;
        goto out;
    }

    m.flags = opt->compress ? TF_META_COMPRESS : 0;
    m.cipher = (uint8_t)cipher;
    m.current_epoch = 1;
    m.segment_size = segsize;
    m.generation = 0;
    if (opt->journal_id)
        memcpy(m.jid, opt->journal_id, 32);
    else
        ti_derive_jid(m.jid, opt->master_key, name, name_len);
    m.name_len = (uint16_t)name_len;
    memcpy(m.name, name, name_len);
    m.epoch_count = 1;
    m.epochs = calloc(1, sizeof *m.epochs);
    if (!m.epochs) {
        rc = -ENOMEM;
        goto out;
    }
    m.epochs[0].epoch = 1;
    m.epochs[0].first_segment = 1;
    randombytes_buf(dk, 32);
    ti_epoch_wrap(&m.epochs[0], opt->master_key, m.jid, dk);
    rc = ti_meta_set_padding(&m, &opt->padding); /* §3.3; none: no entry */
    if (rc == 0)
        rc = ti_meta_write(dirfd, &m, opt->master_key);
out:
    ti_meta_free(&m);
    sodium_free(dk);
    if (lockfd >= 0)
        close(lockfd);
    if (dirfd >= 0)
        close(dirfd);
    return rc;
}
