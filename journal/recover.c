/*
 * recover.c — what the writer does at open before it appends (FORMAT.md §6):
 * check every segment header, walk the last file, cut a torn tail back to the
 * last whole record (reporting the cut), refuse damage, remove a trailing
 * segment without records and leftover *.tmp files.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tally-internal.h"

static int remove_tmp_files(int dirfd)
{
    int fd = openat(dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    DIR *d = fdopendir(fd);
    if (!d) {
        int rc = -errno;
        close(fd);
        return rc;
    }
    int removed = 0, rc = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        size_t l = strlen(de->d_name);
        if (l > 4 && strcmp(de->d_name + l - 4, ".tmp") == 0) {
            if (unlinkat(dirfd, de->d_name, 0) < 0 && errno != ENOENT) {
                rc = -errno;
                break;
            }
            removed = 1;
        }
    }
    closedir(d);
    if (rc == 0 && removed)
        rc = ti_fsync_dir(dirfd);
    return rc;
}

static int read_header_at(int fd, uint64_t off, ti_seg_hdr *h, const char **why)
{
    uint8_t b[TF_SEG_HEADER_BYTES];
    ssize_t n = ti_pread_full(fd, b, sizeof b, off);
    if (n < 0)
        return (int)n;
    if ((size_t)n != sizeof b) {
        *why = "segment header incomplete";
        return TALLY_EINTEGRITY;
    }
    return ti_seg_header_parse(b, h, why);
}

static int check_header(const ti_meta *m, const ti_seg_hdr *h, uint64_t name_no,
                        const char **why)
{
    if (memcmp(h->jid, m->jid, 32) != 0) {
        *why = "segment belongs to another journal (jid)";
        return TALLY_EINTEGRITY;
    }
    if (h->cipher != m->cipher) {
        *why = "segment cipher differs from the metadata";
        return TALLY_EINTEGRITY;
    }
    if (h->segment_no != name_no) {
        *why = "segment number differs from the file name";
        return TALLY_EINTEGRITY;
    }
    if (!ti_meta_epoch(m, h->epoch)) {
        *why = "segment epoch unknown to the metadata";
        return TALLY_EINTEGRITY;
    }
    return 0;
}

/* The head a file ends with, cheaply: a file that ends with a segment header
 * (no frame after it) ends at that header's (first_seq - 1, prev_link);
 * otherwise its last 32 bytes are the last frame's link. ret_seq is 0 when
 * only the link is known. */
static int file_tail(int dirfd, const char *name, uint8_t link[32],
                     uint64_t *ret_seq, uint64_t *ret_first_seq)
{
    int fd = openat(dirfd, name, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    struct stat st;
    int rc = 0;
    if (fstat(fd, &st) < 0) {
        rc = -errno;
        goto out;
    }
    *ret_seq = 0;
    *ret_first_seq = 0;
    if ((uint64_t)st.st_size >= TF_SEG_HEADER_BYTES) {
        ti_seg_hdr h;
        const char *why;
        if (read_header_at(fd, (uint64_t)st.st_size - TF_SEG_HEADER_BYTES, &h,
                           &why) == 0) {
            memcpy(link, h.prev_link, 32);
            *ret_seq = h.first_seq - 1;
            *ret_first_seq = h.first_seq;
            goto out;
        }
    }
    if (st.st_size < (off_t)(TF_SEG_HEADER_BYTES + TF_FRAME_OVERHEAD)) {
        rc = TALLY_EINTEGRITY;
        goto out;
    }
    ssize_t n = ti_pread_full(fd, link, 32, (uint64_t)st.st_size - 32);
    if (n != 32)
        rc = n < 0 ? (int)n : TALLY_EINTEGRITY;
out:
    close(fd);
    return rc;
}

/* Is there evidence of a whole record after the bad frame at w->frame_off
 * (whose header is intact)? FORMAT.md §6: the next frame, found by body_len,
 * is whole and its link verifies from the bad frame's stored link or from
 * the link recomputed over the bad frame (when only the stored link rotted);
 * or a valid segment header follows. */
static int later_record(ti_walk *w)
{
    uint64_t bad_len = ti_frame_len(&w->fh);
    const uint8_t *p;
    int r = ti_rfile_get(&w->rf, w->frame_off, (size_t)bad_len, &p);
    if (r <= 0)
        return r;
    const char *why;
    uint8_t from[2][32], rh[32], l[32];
    memcpy(from[0], p + bad_len - 32, 32);
    int nfrom = 1;
    if (ti_frame_record_hash(p, &w->fh, rh, &why) == 0) {
        ti_link(from[1], w->link, rh);
        nfrom = 2;
    }
    uint64_t next = w->frame_off + bad_len;
    r = ti_rfile_get(&w->rf, next, TF_FRAME_HEADER_BYTES, &p);
    if (r <= 0)
        return r;
    if (memcmp(p, TF_SEG_MAGIC, 8) == 0) {
        r = ti_rfile_get(&w->rf, next, TF_SEG_HEADER_BYTES, &p);
        if (r <= 0)
            return r;
        ti_seg_hdr h;
        return ti_seg_header_parse(p, &h, &why) == 0;
    }
    ti_frame_hdr h;
    if (ti_frame_header_parse(p, w->fh.seq + 1, &h, &why) < 0)
        return 0;
    r = ti_rfile_get(&w->rf, next, (size_t)ti_frame_len(&h), &p);
    if (r <= 0)
        return r;
    if (ti_frame_record_hash(p, &h, rh, &why) < 0)
        return 0;
    for (int i = 0; i < nfrom; i++) {
        ti_link(l, from[i], rh);
        if (memcmp(l, p + ti_frame_len(&h) - 32, 32) == 0)
            return 1;
    }
    return 0;
}

/* The same evidence when the bad frame's own header (its magic, its
 * body_len, ...) is what was damaged, so the next frame cannot be found by
 * body_len: a frame with the next seq anywhere further on in the file that
 * is whole and whose link verifies from the 32 bytes before it (the bad
 * frame's stored link). A torn tail holds no such frame. */
#define SCAN_MAX (256u << 20)
static int later_record_scan(int fd, uint64_t bad_off, uint64_t size,
                             uint64_t bad_seq)
{
    if (size <= bad_off + 64)
        return 0;
    if (size - bad_off > SCAN_MAX)
        return 1; /* far more than a writer ever leaves unsynced */
    size_t n = (size_t)(size - bad_off);
    uint8_t *b = malloc(n);
    if (!b)
        return -ENOMEM;
    ssize_t got = ti_pread_full(fd, b, n, bad_off);
    int found = 0;
    if (got < 0) {
        found = (int)got;
        goto out;
    }
    n = (size_t)got;
    for (size_t q = 64; q + TF_FRAME_OVERHEAD <= n && !found; q++) {
        const uint8_t *hit = memmem(b + q, n - q, TF_FRAME_MAGIC, 4);
        if (!hit)
            break;
        q = (size_t)(hit - b);
        ti_frame_hdr h;
        const char *why;
        uint8_t rh[32], l[32];
        if (q + TF_FRAME_HEADER_BYTES > n ||
            ti_frame_header_parse(b + q, bad_seq + 1, &h, &why) < 0 ||
            q + ti_frame_len(&h) > n ||
            ti_frame_record_hash(b + q, &h, rh, &why) < 0)
            continue;
        ti_link(l, b + q - 32, rh);
        found = memcmp(l, b + q + ti_frame_len(&h) - 32, 32) == 0;
    }
out:
    free(b);
    return found;
}

/* Authenticates one whole frame with the key of its segment. 1 valid, 0 the
 * tag fails, <0 error (a forgotten epoch counts as valid: nothing to check). */
static int frame_authentic(int fd, const ti_meta *m, const uint8_t *mk,
                           const ti_seg_hdr *seg, uint64_t off,
                           const ti_frame_hdr *h, const uint8_t prev[32])
{
    const ti_epoch *e = ti_meta_epoch(m, seg->epoch);
    if (!e || (e->flags & TF_EPOCH_FORGOTTEN))
        return 1;
    uint8_t *dk = sodium_malloc(64);
    if (!dk)
        return -ENOMEM;
    int rc = ti_epoch_unwrap(e, mk, m->jid, dk);
    if (rc < 0) {
        sodium_free(dk);
        return rc;
    }
    ti_derive_segment_key(dk + 32, dk, m->jid, seg->segment_no, seg->salt);
    ti_aead a;
    rc = ti_aead_alloc(&a, m->cipher);
    if (rc < 0) {
        sodium_free(dk);
        return rc;
    }
    ti_aead_setkey(&a, dk + 32);
    sodium_free(dk);
    size_t flen = (size_t)ti_frame_len(h);
    uint8_t *f = malloc(flen);
    uint8_t *work = malloc(TF_AD_BYTES + h->body_len);
    if (!f || !work) {
        rc = -ENOMEM;
        goto out;
    }
    ssize_t n = ti_pread_full(fd, f, flen, off);
    if (n < 0 || (size_t)n != flen) {
        rc = n < 0 ? (int)n : -EIO;
        goto out;
    }
    const uint8_t *env;
    size_t env_len;
    rc = ti_frame_open(&a, m->jid, prev, f, h, work, &env, &env_len) == 0;
    if (rc == 1) {
        ti_env ev;
        const char *why;
        rc = ti_env_parse(env, env_len, h, &ev, &why) == 0;
    }
    sodium_memzero(work, TF_AD_BYTES + h->body_len);
out:
    free(f);
    free(work);
    ti_aead_free(&a);
    return rc;
}

static void add_cut(tally_recovery *rep, const char *name, uint64_t bytes,
                    uint64_t first_seq)
{
    rep->cut_bytes += bytes;
    if (first_seq && (!rep->cut_first_seq || first_seq < rep->cut_first_seq)) {
        rep->cut_first_seq = first_seq;
        ti_msg(rep->segment, sizeof rep->segment, "%s", name);
    }
    if (!rep->segment[0])
        ti_msg(rep->segment, sizeof rep->segment, "%s", name);
}

static int remove_file(int dirfd, const char *name, char *err, size_t errlen)
{
    if (unlinkat(dirfd, name, 0) < 0 || ti_fsync_dir(dirfd) < 0) {
        int rc = -errno;
        ti_msg(err, errlen, "%s: cannot remove", name);
        return rc;
    }
    return 0;
}

/* Where the bytes of a file stop being zero: a writer's file may end in
 * space it reserved (FORMAT.md §4), which is not counted in a cut. */
static uint64_t data_end(int fd, uint64_t size)
{
    enum { CHUNK = 64 * 1024 };
    uint8_t *b = malloc(CHUNK);
    if (!b)
        return size;
    uint64_t end = size;
    while (end > 0) {
        size_t n = end < CHUNK ? (size_t)end : CHUNK;
        if (ti_pread_full(fd, b, n, end - n) != (ssize_t)n)
            break;
        size_t i = n;
        while (i > 0 && b[i - 1] == 0)
            i--;
        if (i > 0) {
            end = end - n + i;
            break;
        }
        end -= n;
    }
    free(b);
    return end;
}

/* Recovers the last file, names[n - 1]: 1 if it held no record and was
 * removed (the caller goes on with the file before it), 0 when the head is
 * in *ret, <0 on error. */
static int recover_last(int dirfd, const ti_meta *m, const uint8_t *mk,
                        char **names, size_t n, tally_recovery *rep,
                        ti_recovered *ret, char *err, size_t errlen)
{
    const char *name = names[n - 1];
    const char *why = NULL;
    uint64_t name_no;
    (void)ti_seg_parse_name(name, &name_no);
    ti_walk w;
    ti_walk_init(&w, m->jid, m->cipher);
    int rc;
    int wfd = openat(dirfd, name, O_RDWR | O_CLOEXEC);
    if (wfd < 0) {
        rc = -errno;
        ti_msg(err, errlen, "%s: cannot open", name);
        return rc;
    }
    struct stat st;
    if (fstat(wfd, &st) < 0) {
        rc = -errno;
        goto out;
    }
    uint64_t size = (uint64_t)st.st_size;

    /* Shorter than a header, or a header of zeros: a segment whose creation
     * was cut short. It never held a record. */
    int stub = size < TF_SEG_HEADER_BYTES;
    if (size == TF_SEG_HEADER_BYTES) {
        uint8_t b[TF_SEG_HEADER_BYTES];
        static const uint8_t zero[TF_SEG_HEADER_BYTES];
        if (ti_pread_full(wfd, b, sizeof b, 0) == (ssize_t)sizeof b &&
            memcmp(b, zero, sizeof b) == 0)
            stub = 1;
    }
    if (stub) {
        rc = remove_file(dirfd, name, err, errlen);
        if (rc == 0)
            rc = 1;
        goto out;
    }

    rc = ti_walk_open_file(&w, dirfd, name);
    if (rc < 0) {
        ti_msg(err, errlen, "%s: cannot open", name);
        goto out;
    }
    w.started = false;
    ti_seg_hdr first, last_seg;
    memset(&first, 0, sizeof first);
    memset(&last_seg, 0, sizeof last_seg);
    uint64_t seg_count = 0, seg_frames = 0;
    uint64_t last_off = 0;         /* offset of the last whole frame */
    ti_frame_hdr last_fh = { 0 };
    uint8_t last_prev[32];         /* link before it */
    uint64_t cut_at = 0, cut_seq = 0;
    for (;;) {
        int ev = ti_walk_next(&w);
        if (ev < 0) {
            rc = ev;
            ti_msg(err, errlen, "%s: read error", name);
            goto out;
        }
        if (ev == TI_EV_SEGMENT) {
            rc = check_header(m, &w.seg, seg_count ? w.seg.segment_no : name_no,
                              &why);
            if (rc == 0 && n == 1 && seg_count == 0 &&
                (w.seg.segment_no != 1 || w.seg.first_seq != 1)) {
                rc = TALLY_EINTEGRITY;
                why = "first segment does not start the journal";
            }
            if (rc < 0) {
                ti_msg(err, errlen, "%s: offset %" PRIu64 ", seq %" PRIu64
                       ": %s", name, w.frame_off, w.seg.first_seq, why);
                goto out;
            }
            if (seg_count == 0)
                first = w.seg;
            last_seg = w.seg;
            seg_count++;
            seg_frames = 0;
            continue;
        }
        if (ev == TI_EV_FRAME) {
            seg_frames++;
            last_off = w.frame_off;
            last_fh = w.fh;
            memcpy(last_prev, w.prev_link, 32);
            continue;
        }
        if (ev == TI_EV_EOF)
            break;
        /* Zero bytes to the end: the space the writer reserved (§4), not a
         * record. Cut off without being reported. */
        int zt = ti_rfile_zero_from(&w.rf, w.pos);
        if (zt < 0) {
            rc = zt;
            ti_msg(err, errlen, "%s: read error", name);
            goto out;
        }
        if (zt && seg_count > 0) {
            if (ftruncate(wfd, (off_t)w.pos) < 0 || fsync(wfd) < 0) {
                rc = -errno;
                ti_msg(err, errlen, "%s: cannot trim its reserved tail", name);
                goto out;
            }
            size = w.pos;
            break;
        }
        /* TORN or BAD: a torn tail unless a whole record follows (§6). */
        if (seg_count == 0) {
            rc = TALLY_EINTEGRITY;
            ti_msg(err, errlen, "%s: offset 0, seq 0: %s", name, w.why);
            goto out;
        }
        if (ev == TI_EV_BAD) {
            const uint8_t *p;
            if (w.header_bad && ti_rfile_get(&w.rf, w.frame_off, 8, &p) == 1 &&
                memcmp(p, TF_SEG_MAGIC, 8) == 0) {
                rc = TALLY_EINTEGRITY;
                ti_msg(err, errlen, "%s: offset %" PRIu64 ", seq %" PRIu64
                       ": %s", name, w.frame_off, w.next_seq, w.why);
                goto out;
            }
        }
        int lr = ev == TI_EV_BAD && !w.header_bad ? later_record(&w) : 0;
        if (lr == 0)
            lr = later_record_scan(wfd, w.frame_off, size, w.next_seq);
        if (lr < 0) {
            rc = lr;
            goto out;
        }
        if (lr) {
            rc = TALLY_EINTEGRITY;
            ti_msg(err, errlen, "%s: offset %" PRIu64 ", seq %" PRIu64
                   ": %s (a whole record follows: damage, not a torn tail)",
                   name, w.frame_off, w.next_seq, w.why);
            goto out;
        }
        cut_at = w.frame_off;
        cut_seq = w.next_seq;
        break;
    }

    /* A final record whose tag fails is cut like a torn one (§6). */
    uint64_t head_seq = w.next_seq - 1;
    uint8_t head_link[32];
    memcpy(head_link, w.link, 32);
    if (cut_at == 0 && seg_frames > 0 && mk && last_fh.kind != TF_KIND_PRUNED) {
        int ok = frame_authentic(wfd, m, mk, &last_seg, last_off, &last_fh,
                                 last_prev);
        if (ok < 0) {
            rc = ok;
            ti_msg(err, errlen, "%s: cannot authenticate the last record",
                   name);
            goto out;
        }
        if (!ok) {
            cut_at = last_off;
            cut_seq = last_fh.seq;
            seg_frames--;
            head_seq = last_fh.seq - 1;
            memcpy(head_link, last_prev, 32);
        }
    }
    if (!cut_at)
        (void)ftruncate(wfd, (off_t)size); /* blocks reserved past the end */
    if (cut_at) {
        /* Whole pages of zeros at the end are reserved space never written
         * (or written too late); zero bytes within the last written page
         * are counted. */
        uint64_t end = (data_end(wfd, size) + 4095) & ~(uint64_t)4095;
        if (end > size)
            end = size;
        add_cut(rep, name, end > cut_at ? end - cut_at : 0, cut_seq);
        if (ftruncate(wfd, (off_t)cut_at) < 0 || fsync(wfd) < 0) {
            rc = -errno;
            ti_msg(err, errlen, "%s: cannot cut the torn tail", name);
            goto out;
        }
    }

    if (seg_count == 1 && seg_frames == 0) {
        /* A segment without records: remove it, and recover the file
         * before it (a writer under none/interval syncs a full segment in
         * the background and writes no record to the next one before that
         * sync is done, so the previous one may be the torn one). Its
         * number is used again, with a fresh salt (FORMAT.md §5). */
        rc = remove_file(dirfd, name, err, errlen);
        if (rc == 0) {
            ret->seq = first.first_seq - 1;
            memcpy(ret->link, first.prev_link, 32);
            ret->last_segment = first.segment_no - 1;
            rc = 1;
        }
        goto out;
    }

    /* This file's first prev_link must continue the previous file. */
    if (n >= 2) {
        uint8_t link[32];
        uint64_t pseq, pfirst;
        rc = file_tail(dirfd, names[n - 2], link, &pseq, &pfirst);
        if (rc == 0 && (memcmp(link, first.prev_link, 32) != 0 ||
                        (pseq && pseq != first.first_seq - 1)))
            rc = TALLY_EINTEGRITY;
        if (rc < 0) {
            if (rc == TALLY_EINTEGRITY)
                ti_msg(err, errlen, "%s: offset 96, seq %" PRIu64
                       ": prev_link does not continue %s", name,
                       first.first_seq, names[n - 2]);
            else
                ti_msg(err, errlen, "%s: cannot read its tail", names[n - 2]);
            goto out;
        }
    }
    ret->seq = head_seq;
    memcpy(ret->link, head_link, 32);
    ret->last_segment = w.segment_no;
    rc = 0;
out:
    close(wfd);
    ti_walk_free(&w);
    return rc;
}

int ti_recover(int dirfd, const ti_meta *m, const uint8_t *mk,
               tally_recovery *rep, ti_recovered *ret, char *err,
               size_t errlen)
{
    char **names = NULL;
    size_t n = 0;
    int rc = remove_tmp_files(dirfd);
    if (rc < 0) {
        ti_msg(err, errlen, "cannot remove temporary files");
        return rc;
    }
    rc = ti_seg_list(dirfd, &names, &n);
    if (rc < 0) {
        ti_msg(err, errlen, "cannot list segment files");
        return rc;
    }
    memset(rep, 0, sizeof rep->cut_bytes + sizeof rep->cut_first_seq +
                       sizeof rep->segment);
    const char *why = NULL;

    /* Every header but the last file's (walked below). */
    uint64_t prev_first_seq = 0;
    for (size_t i = 0; i + 1 < n; i++) {
        uint64_t no;
        (void)ti_seg_parse_name(names[i], &no);
        int fd = openat(dirfd, names[i], O_RDONLY | O_CLOEXEC);
        if (fd < 0) {
            rc = -errno;
            ti_msg(err, errlen, "%s: cannot open", names[i]);
            goto out;
        }
        ti_seg_hdr h;
        memset(&h, 0, sizeof h);
        rc = read_header_at(fd, 0, &h, &why);
        close(fd);
        if (rc == 0)
            rc = check_header(m, &h, no, &why);
        if (rc == 0 && i == 0 && (h.segment_no != 1 || h.first_seq != 1)) {
            rc = TALLY_EINTEGRITY;
            why = "first segment does not start the journal";
        }
        if (rc == 0 && h.first_seq < prev_first_seq) {
            rc = TALLY_EINTEGRITY;
            why = "segment first_seq goes backwards";
        }
        if (rc < 0) {
            if (rc > -1000)
                ti_msg(err, errlen, "%s: cannot read header", names[i]);
            else
                ti_msg(err, errlen, "%s: offset 0, seq %" PRIu64 ": %s",
                       names[i], h.first_seq, why);
            goto out;
        }
        prev_first_seq = h.first_seq;
    }

    ret->seq = 0;
    ti_genesis(ret->link, m->jid);
    ret->last_segment = 0;
    while (n > 0) {
        rc = recover_last(dirfd, m, mk, names, n, rep, ret, err, errlen);
        if (rc <= 0)
            break;
        free(names[--n]);
    }
    if (n == 0) {
        ret->seq = 0;
        ti_genesis(ret->link, m->jid);
        ret->last_segment = 0;
    }
out:
    ti_seg_list_free(names, n);
    return rc < 0 ? rc : 0;
}
