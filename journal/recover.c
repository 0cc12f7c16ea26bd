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

/* A segment header after the first one of a file (a merged file, §11.3):
 * the file-name rule does not apply to it, the rest does. */
static int check_later_header(const ti_meta *m, const ti_seg_hdr *h,
                              const char **why)
{
    char name[TF_SEG_NAME_LEN + 1];
    ti_seg_name(name, h->segment_no);
    return ti_seg_file_check(m, h, name, why);
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

/* ---- torn tail or damage (FORMAT.md §6) ------------------------------------ */

/* Reads the frame whose header is at off and checks it as far as it can be
 * checked on its own: header fields, seq (expect_seq, or any when 0), the
 * whole frame inside the file, its record_hash. 1 and *h, rh, the frame in
 * *buf; 0 when it is not such a frame; <0 on an I/O error. */
static int frame_at(int fd, uint64_t off, uint64_t size, uint64_t expect_seq,
                    ti_buf *buf, ti_frame_hdr *h, uint8_t rh[32])
{
    uint8_t hb[TF_FRAME_HEADER_BYTES];
    const char *why;
    if (off + TF_FRAME_HEADER_BYTES > size)
        return 0;
    ssize_t n = ti_pread_full(fd, hb, sizeof hb, off);
    if (n < 0)
        return (int)n;
    if ((size_t)n != sizeof hb ||
        ti_frame_header_parse(hb, expect_seq ? expect_seq : le64_get(hb + 8),
                              h, &why) < 0 ||
        off + ti_frame_len(h) > size)
        return 0;
    size_t len = (size_t)ti_frame_len(h);
    int rc = ti_buf_reserve(buf, len);
    if (rc < 0)
        return rc;
    n = ti_pread_full(fd, buf->p, len, off);
    if (n < 0)
        return (int)n;
    if ((size_t)n != len || ti_frame_record_hash(buf->p, h, rh, &why) < 0)
        return 0;
    return 1;
}

/* Is the frame at q (seq S, record hash rh, whole in buf) one the writer
 * wrote there, rather than bytes that happen to parse (§6)? Its stored link
 * verifies from the 32 bytes before it, or the frame after it carries
 * S + 1 and chains from its link, or it is the last frame before the end
 * of the file or before the reserved zero tail. 1 yes, 0 no, <0 error. */
static int frame_consistent(int fd, uint64_t q, uint64_t size,
                            const ti_frame_hdr *h, const uint8_t rh[32],
                            ti_buf *buf, ti_buf *buf2)
{
    uint64_t end = q + ti_frame_len(h);
    uint8_t stored[32], before[32], l[32];
    memcpy(stored, buf->p + ti_frame_len(h) - 32, 32);
    ssize_t n = ti_pread_full(fd, before, 32, q - 32);
    if (n < 0)
        return (int)n;
    ti_link(l, before, rh);
    if (n == 32 && memcmp(l, stored, 32) == 0)
        return 1;
    if (end == size)
        return 1;
    ti_frame_hdr nh;
    uint8_t nrh[32];
    int r = frame_at(fd, end, size, h->seq + 1, buf2, &nh, nrh);
    if (r < 0)
        return r;
    if (r == 1) {
        ti_link(l, stored, nrh);
        if (memcmp(l, buf2->p + ti_frame_len(&nh) - 32, 32) == 0)
            return 1;
    }
    ti_rfile zf = { .fd = fd };
    return ti_rfile_zero_from(&zf, end);
}

/* The evidence of §6, looked for from the bad frame at off (seq e) to the
 * end of the file: a frame that the writer wrote (frame_consistent) with a
 * seq S > e and either
 *   - S - unsynced_depth >= e: record e was durable when that frame was
 *     encoded (§4.2), so the bad bytes once held a synced record; or
 *   - ending exactly at the end of the file: the writer cuts a file to its
 *     last frame only once every frame in it is durable (seal, close;
 *     recovery's own cut follows only whole frames), while a file it is
 *     writing always ends in reserved zero bytes (§4);
 * or a valid segment header of this journal starting a later seq (only the
 * compactor writes one after frames, into a file it synced whole). 1
 * found (damage), 0 not (a torn tail), <0 error. */
static int durable_after(const ti_walk *w, int fd, uint64_t off,
                         uint64_t size, uint64_t e)
{
    enum { CHUNK = 1 << 20, KEEP = 7 };
    uint8_t *b = malloc(CHUNK);
    ti_buf fb = { 0 }, fb2 = { 0 };
    if (!b)
        return -ENOMEM;
    int found = 0;
    /* chunks overlap by KEEP bytes, so that a magic across a chunk
     * boundary is seen once, in the later chunk */
    for (uint64_t base = off + 1; base < size && !found;) {
        size_t want = size - base < CHUNK ? (size_t)(size - base) : CHUNK;
        ssize_t got = ti_pread_full(fd, b, want, base);
        if (got < 0) {
            found = (int)got;
            break;
        }
        size_t n = (size_t)got;
        /* the next "TFRM" and "TALL" at or after i, each found once */
        const uint8_t *nf = NULL, *ns = NULL;
        for (size_t i = 0; i + 4 <= n && !found; i++) {
            if (!nf || nf < b + i)
                nf = memmem(b + i, n - i, TF_FRAME_MAGIC, 4);
            if (!ns || ns < b + i)
                ns = memmem(b + i, n - i, "TALL", 4);
            if (!nf)
                nf = b + n; /* none: past the end, not searched again */
            if (!ns)
                ns = b + n;
            const uint8_t *hit = nf < ns ? nf : ns;
            if (hit >= b + n)
                break;
            i = (size_t)(hit - b);
            if (i + KEEP >= n && base + n < size)
                break; /* seen whole in the next chunk */
            uint64_t q = base + i;
            if (hit[0] == 'T' && hit[1] == 'A') {
                uint8_t hb[TF_SEG_HEADER_BYTES];
                ti_seg_hdr sh;
                const char *why;
                if (q + sizeof hb > size)
                    continue;
                ssize_t r = ti_pread_full(fd, hb, sizeof hb, q);
                if (r < 0) {
                    found = (int)r;
                    break;
                }
                found = r == (ssize_t)sizeof hb &&
                        ti_seg_header_parse(hb, &sh, &why) == 0 &&
                        memcmp(sh.jid, w->jid, 32) == 0 && sh.first_seq > e;
                continue;
            }
            /* A seq no more than the frames that fit since off allow. */
            uint8_t hb[TF_FRAME_HEADER_BYTES];
            if (q + sizeof hb > size)
                continue;
            ssize_t r = ti_pread_full(fd, hb, sizeof hb, q);
            if (r < 0) {
                found = (int)r;
                break;
            }
            uint64_t s = le64_get(hb + 8);
            if (r != (ssize_t)sizeof hb || s <= e ||
                s - e > (q - off) / TF_PAD_FRAME_MIN)
                continue;
            uint64_t depth = le32_get(hb + 28);
            uint64_t flen = TF_FRAME_OVERHEAD + (uint64_t)le32_get(hb + 24);
            bool synced_e = depth <= s - e;
            if (!synced_e && q + flen != size)
                continue; /* would prove nothing */
            ti_frame_hdr h;
            uint8_t rh[32];
            int fr = frame_at(fd, q, size, 0, &fb, &h, rh);
            if (fr == 1)
                fr = frame_consistent(fd, q, size, &h, rh, &fb, &fb2);
            if (fr < 0) {
                found = fr;
                break;
            }
            found = fr;
        }
        if (found || base + n >= size || n <= KEEP)
            break;
        base += n - KEEP;
    }
    free(b);
    ti_buf_free(&fb);
    ti_buf_free(&fb2);
    return found;
}

int ti_tail_decide(ti_walk *w, const char **why)
{
    int fd = w->rf.fd;
    struct stat st;
    if (fstat(fd, &st) < 0)
        return -errno;
    uint64_t size = (uint64_t)st.st_size;
    uint64_t off = w->frame_off;
    *why = NULL;
    if (!w->in_segment) {
        /* No header of this file was accepted. A file shorter than one, or
         * one header of zeros, is a segment whose creation was cut short
         * (recovery removes it, §6 step 1); any other is damage. */
        if (size < TF_SEG_HEADER_BYTES || size == TF_SEG_HEADER_BYTES) {
            ti_rfile zf = { .fd = fd };
            int z = ti_rfile_zero_from(&zf, 0);
            if (z < 0)
                return z;
            if (z || size == 0)
                return TI_TAIL_END;
            if (size < TF_SEG_HEADER_BYTES)
                return TI_TAIL_TORN;
        }
        return TI_TAIL_DAMAGE;
    }
    /* Zero bytes to the end: the space the writer reserved (§4). */
    ti_rfile zf = { .fd = fd };
    int z = ti_rfile_zero_from(&zf, off);
    if (z < 0)
        return z;
    if (z)
        return TI_TAIL_END;
    /* A segment header that does not check, after frames: only the
     * compactor writes one there, into a file it synced whole. */
    uint8_t mg[8];
    ssize_t n = ti_pread_full(fd, mg, sizeof mg, off);
    if (n < 0)
        return (int)n;
    if (w->header_bad && n == 8 && memcmp(mg, TF_SEG_MAGIC, 8) == 0) {
        *why = "a segment header after frames: damage, not a torn tail";
        return TI_TAIL_DAMAGE;
    }
    /* A whole frame that ends the file: the writer cuts a file to its last
     * frame only once every frame in it is durable, so this one was synced
     * and its bytes changed since. */
    if (!w->header_bad && off + ti_frame_len(&w->fh) == size) {
        *why = "the file ends with this frame, so it was synced: damage, "
               "not a torn tail";
        return TI_TAIL_DAMAGE;
    }
    int d = durable_after(w, fd, off, size, w->next_seq);
    if (d < 0)
        return d;
    if (d) {
        *why = "a record that was durable follows: damage, not a torn tail";
        return TI_TAIL_DAMAGE;
    }
    return TI_TAIL_TORN;
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
            rc = seg_count ? check_later_header(m, &w.seg, &why)
                           : ti_seg_file_check(m, &w.seg, name, &why);
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
        /* TORN or BAD: the decision of §6, the same as every reader's. */
        const char *how = NULL;
        int d = ti_tail_decide(&w, &how);
        if (d < 0) {
            rc = d;
            ti_msg(err, errlen, "%s: read error", name);
            goto out;
        }
        if (d == TI_TAIL_END && seg_count > 0) {
            /* Zero bytes to the end: the space the writer reserved (§4),
             * not a record. Cut off without being reported, once the
             * frames before it are durable (a file that ends with a frame
             * says so, §6). */
            if (fdatasync(wfd) < 0 || ftruncate(wfd, (off_t)w.pos) < 0 ||
                fsync(wfd) < 0) {
                rc = -errno;
                ti_msg(err, errlen, "%s: cannot trim its reserved tail", name);
                goto out;
            }
            size = w.pos;
            break;
        }
        if (d != TI_TAIL_TORN || seg_count == 0) {
            rc = TALLY_EINTEGRITY;
            ti_msg(err, errlen, "%s: offset %" PRIu64 ", seq %" PRIu64
                   ": %s%s%s%s", name, w.frame_off,
                   seg_count ? w.next_seq : 0, w.why ? w.why : "damage",
                   how ? " (" : "", how ? how : "", how ? ")" : "");
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
    if (!cut_at) {
        (void)ftruncate(wfd, (off_t)size); /* blocks reserved past the end */
        /* The head is taken as durable from here on (the next frames'
         * unsynced_depth counts from it, §4.2): make it so, whoever wrote
         * the file. */
        if (fdatasync(wfd) < 0) {
            rc = -errno;
            ti_msg(err, errlen, "%s: cannot sync", name);
            goto out;
        }
    }
    if (cut_at) {
        /* Whole pages of zeros at the end are reserved space never written
         * (or written too late); zero bytes within the last written page
         * are counted. */
        uint64_t end = (data_end(wfd, size) + 4095) & ~(uint64_t)4095;
        if (end > size)
            end = size;
        add_cut(rep, name, end > cut_at ? end - cut_at : 0, cut_seq);
        /* The frames before the cut are made durable first: a file that
         * ends with a frame says that they are (§6). */
        if (fdatasync(wfd) < 0 || ftruncate(wfd, (off_t)cut_at) < 0 ||
            fsync(wfd) < 0) {
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
            rc = ti_seg_file_check(m, &h, names[i], &why);
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
