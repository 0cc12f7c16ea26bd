/*
 * reqlog.c — the window of recent request ids and the request log
 * (reqlog.h; layout in docs/FORMAT.md §10.6).
 *
 * The window is a ring of `capacity` entries in arrival order (the oldest
 * is forgotten first) with an open-addressing index keyed by SipHash of
 * the id under a random key, so that chosen ids cannot pile up in one
 * probe run. Evicted entries leave stale index slots behind; lookups
 * compare ids, and the index is rebuilt from the ring when it is 3/4 full.
 *
 * The log is little-endian like the journal's files: a 16-byte header
 * ("TALLYDRQ", version 1, entry size 48), then 48-byte entries, each with
 * a check over its first 40 bytes so that a torn last entry is recognised.
 */
#include "reqlog.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sodium.h>

#include "tally-internal.h"

#define RQ_MAGIC       "TALLYDRQ"
#define RQ_VERSION     1u
#define RQ_TMP         RQ_FILE ".tmp"
/* an old log bigger than this is set aside rather than read */
#define RQ_MAX_LOAD    (256u << 20)

struct rq_window {
    rq_entry *ring;
    uint32_t cap, next, n;
    uint32_t *tab; /* ring index + 1; 0: empty */
    uint32_t mask, used;
    uint8_t hkey[crypto_shorthash_KEYBYTES];
    int dirfd, fd;
    pthread_mutex_t fmu;  /* the log file: appends and rewrites */
    uint64_t file_entries;
};

/* ---- the index ------------------------------------------------------------ */

static uint32_t slot_of(const rq_window *w, const uint8_t id[RQ_ID_BYTES])
{
    uint8_t h[crypto_shorthash_BYTES];

    crypto_shorthash(h, id, RQ_ID_BYTES, w->hkey);
    return (uint32_t)le64_get(h) & w->mask;
}

static void index_put(rq_window *w, uint32_t ring_idx)
{
    uint32_t h = slot_of(w, w->ring[ring_idx].id);

    while (w->tab[h] != 0)
        h = (h + 1) & w->mask;
    w->tab[h] = ring_idx + 1;
    w->used++;
}

static void index_rebuild(rq_window *w)
{
    memset(w->tab, 0, ((size_t)w->mask + 1) * sizeof *w->tab);
    w->used = 0;
    for (uint32_t i = 0; i < w->n; i++)
        if (w->ring[i].state != RQ_FREE)
            index_put(w, i);
}

rq_entry *rq_find(rq_window *w, const uint8_t id[RQ_ID_BYTES])
{
    uint32_t h = slot_of(w, id);

    for (;;) {
        uint32_t v = w->tab[h];
        rq_entry *e;

        if (v == 0)
            return NULL;
        e = &w->ring[v - 1];
        if (e->state != RQ_FREE && memcmp(e->id, id, RQ_ID_BYTES) == 0)
            return e;
        h = (h + 1) & w->mask;
    }
}

rq_entry *rq_add(rq_window *w, const uint8_t id[RQ_ID_BYTES])
{
    uint32_t i = w->next;
    rq_entry *e = &w->ring[i];

    /* the oldest entry's index slot goes stale: lookups compare ids */
    memset(e, 0, sizeof *e);
    memcpy(e->id, id, RQ_ID_BYTES);
    w->next = (i + 1) % w->cap;
    if (w->n < w->cap)
        w->n++;
    if (w->used + 1 > (w->mask + 1) / 4 * 3)
        index_rebuild(w);
    index_put(w, i);
    return e;
}

void rq_each(rq_window *w, void (*fn)(void *ctx, const rq_entry *e),
             void *ctx)
{
    uint32_t start = w->n < w->cap ? 0 : w->next;

    for (uint32_t k = 0; k < w->n; k++) {
        const rq_entry *e = &w->ring[(start + k) % w->cap];

        if (e->state != RQ_FREE)
            fn(ctx, e);
    }
}

/* ---- the log -------------------------------------------------------------- */

static void entry_check(const uint8_t *p, uint8_t out[8])
{
    uint8_t h[16];

    crypto_generichash(h, sizeof h, p, RQ_ENTRY_BYTES - 8, NULL, 0);
    memcpy(out, h, 8);
}

void rq_encode(uint8_t out[RQ_ENTRY_BYTES], char kind,
               const uint8_t id[RQ_ID_BYTES], uint32_t count, uint64_t seq,
               uint64_t upto)
{
    memset(out, 0, RQ_ENTRY_BYTES);
    out[0] = (uint8_t)kind;
    le32_put(out + 4, count);
    memcpy(out + 8, id, RQ_ID_BYTES);
    le64_put(out + 24, seq);
    le64_put(out + 32, upto);
    entry_check(out, out + 40);
}

static void header(uint8_t out[RQ_HEADER_BYTES])
{
    memcpy(out, RQ_MAGIC, 8);
    le32_put(out + 8, RQ_VERSION);
    le32_put(out + 12, RQ_ENTRY_BYTES);
}

static int write_all(int fd, const uint8_t *p, size_t len)
{
    while (len > 0) {
        ssize_t n = write(fd, p, len);

        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

/* The window as log entries, oldest first. */
typedef struct snap {
    uint8_t *p;
    size_t len;
} snap;

static void snap_one(void *ctx, const rq_entry *e)
{
    snap *s = ctx;
    uint8_t *at = s->p + s->len;

    switch (e->state) {
    case RQ_DONE:
    case RQ_PREV_DONE:
        rq_encode(at, 'D', e->id, e->count, e->seq, 0);
        break;
    case RQ_PREV_PENDING:
        rq_encode(at, 'P', e->id, e->count, e->seq, e->upto);
        break;
    case RQ_QUEUED:
        if (e->found) {
            rq_encode(at, 'D', e->id, e->count, e->seq, 0);
            break;
        }
        if (e->logged) {
            rq_encode(at, 'P', e->id, e->count, e->seq, 0);
            break;
        }
        if (e->prev_state == RQ_PREV_PENDING) {
            /* a resend being resolved: still undecided */
            rq_encode(at, 'P', e->id, e->count, e->seq, e->upto);
            break;
        }
        if (e->prev_state == RQ_PREV_DONE) {
            rq_encode(at, 'D', e->id, e->count, e->seq, 0);
            break;
        }
        return;
    default:
        return;
    }
    s->len += RQ_ENTRY_BYTES;
}

/* Replaces the log by the window (write temp, fsync, rename, fsync the
 * directory, as every file of the directory is replaced: FORMAT.md §1).
 * Holds fmu; takes window_mu (may be NULL at open) for the snapshot. */
static int rewrite(rq_window *w, pthread_mutex_t *window_mu)
{
    snap s;
    int fd, rc;

    s.p = malloc(RQ_HEADER_BYTES + (size_t)w->cap * RQ_ENTRY_BYTES);
    if (!s.p)
        return -ENOMEM;
    header(s.p);
    s.len = RQ_HEADER_BYTES;
    if (window_mu)
        pthread_mutex_lock(window_mu);
    rq_each(w, snap_one, &s);
    if (window_mu)
        pthread_mutex_unlock(window_mu);
    fd = openat(w->dirfd, RQ_TMP, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC,
                0600);
    if (fd < 0) {
        rc = -errno;
        free(s.p);
        return rc;
    }
    rc = write_all(fd, s.p, s.len);
    if (rc == 0 && fsync(fd) < 0)
        rc = -errno;
    close(fd);
    if (rc == 0 && renameat(w->dirfd, RQ_TMP, w->dirfd, RQ_FILE) < 0)
        rc = -errno;
    if (rc == 0 && fsync(w->dirfd) < 0)
        rc = -errno;
    if (rc < 0) {
        (void)unlinkat(w->dirfd, RQ_TMP, 0);
        free(s.p);
        return rc;
    }
    fd = openat(w->dirfd, RQ_FILE, O_WRONLY | O_APPEND | O_CLOEXEC);
    if (fd < 0) {
        rc = -errno;
        free(s.p);
        return rc;
    }
    if (w->fd >= 0)
        close(w->fd);
    w->fd = fd;
    w->file_entries = (s.len - RQ_HEADER_BYTES) / RQ_ENTRY_BYTES;
    free(s.p);
    return 0;
}

int rq_log_append(rq_window *w, const uint8_t *buf, size_t len,
                  pthread_mutex_t *window_mu)
{
    int rc = 0;

    if (len == 0)
        return 0;
    pthread_mutex_lock(&w->fmu);
    if (w->file_entries > 4u * (uint64_t)w->cap)
        rc = rewrite(w, window_mu);
    if (rc == 0 && w->fd < 0)
        rc = -EBADF;
    if (rc == 0)
        rc = write_all(w->fd, buf, len);
    if (rc == 0)
        w->file_entries += len / RQ_ENTRY_BYTES;
    pthread_mutex_unlock(&w->fmu);
    return rc;
}

/* Reads the old log into the window. Returns 0 (err says why a log was
 * set aside) or -errno for a log that exists and cannot be read. */
static int load(rq_window *w, uint64_t head, uint32_t *ret_loaded, char *err,
                size_t errsz)
{
    struct stat st;
    uint8_t *buf;
    size_t off;
    uint32_t loaded = 0;
    int fd, rc = 0;

    fd = openat(w->dirfd, RQ_FILE, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return errno == ENOENT ? 0 : -errno;
    if (fstat(fd, &st) < 0) {
        rc = -errno;
        close(fd);
        return rc;
    }
    if (st.st_size > (off_t)RQ_MAX_LOAD) {
        close(fd);
        snprintf(err, errsz, "%s is over %u MiB: set aside", RQ_FILE,
                 RQ_MAX_LOAD >> 20);
        return 0;
    }
    buf = malloc(st.st_size > 0 ? (size_t)st.st_size : 1);
    if (!buf) {
        close(fd);
        return -ENOMEM;
    }
    if (ti_pread_full(fd, buf, (size_t)st.st_size, 0) != (ssize_t)st.st_size) {
        rc = -EIO;
        goto out;
    }
    if ((size_t)st.st_size < RQ_HEADER_BYTES ||
        memcmp(buf, RQ_MAGIC, 8) != 0 || le32_get(buf + 8) != RQ_VERSION ||
        le32_get(buf + 12) != RQ_ENTRY_BYTES) {
        snprintf(err, errsz, "%s has no valid header: set aside", RQ_FILE);
        goto out;
    }
    for (off = RQ_HEADER_BYTES; off + RQ_ENTRY_BYTES <= (size_t)st.st_size;
         off += RQ_ENTRY_BYTES) {
        const uint8_t *p = buf + off;
        uint8_t check[8];
        rq_entry *e;
        char kind = (char)p[0];

        entry_check(p, check);
        /* a torn or foreign entry: the rest was never completely written */
        if (memcmp(check, p + 40, 8) != 0 || (kind != 'P' && kind != 'D') ||
            p[1] || p[2] || p[3] || le32_get(p + 4) == 0)
            break;
        e = rq_find(w, p + 8);
        if (!e)
            e = rq_add(w, p + 8);
        e->count = le32_get(p + 4);
        e->seq = le64_get(p + 24);
        if (kind == 'D') {
            e->state = RQ_PREV_DONE;
            e->upto = 0;
        } else {
            e->state = RQ_PREV_PENDING;
            /* written by a run that stopped before its commit was known:
             * whatever it stored is at or below today's head */
            e->upto = le64_get(p + 32) ? le64_get(p + 32) : head;
        }
        loaded++;
    }
    *ret_loaded = loaded;
out:
    free(buf);
    close(fd);
    return rc;
}

int rq_open(rq_window **ret, int dirfd, uint32_t capacity, uint64_t head,
            uint32_t *ret_loaded, char *err, size_t errsz)
{
    rq_window *w;
    uint32_t tsize = 16, loaded = 0;
    int rc;

    err[0] = '\0';
    if (capacity == 0 || capacity > (1u << 24))
        return -EINVAL;
    while (tsize < 4u * capacity)
        tsize *= 2;
    w = calloc(1, sizeof *w);
    if (!w)
        return -ENOMEM;
    w->ring = calloc(capacity, sizeof *w->ring);
    w->tab = calloc(tsize, sizeof *w->tab);
    if (!w->ring || !w->tab) {
        free(w->ring);
        free(w->tab);
        free(w);
        return -ENOMEM;
    }
    w->cap = capacity;
    w->mask = tsize - 1;
    w->dirfd = dirfd;
    w->fd = -1;
    randombytes_buf(w->hkey, sizeof w->hkey);
    pthread_mutex_init(&w->fmu, NULL);
    rc = load(w, head, &loaded, err, errsz);
    if (rc == 0)
        rc = rewrite(w, NULL);
    if (rc < 0) {
        snprintf(err, errsz, "%s: %s", RQ_FILE, strerror(-rc));
        rq_close(w);
        return rc;
    }
    *ret_loaded = loaded;
    *ret = w;
    return 0;
}

void rq_close(rq_window *w)
{
    if (!w)
        return;
    if (w->fd >= 0)
        close(w->fd);
    pthread_mutex_destroy(&w->fmu);
    free(w->ring);
    free(w->tab);
    free(w);
}
