/*
 * reader.c — reading a journal without the lock: the iterator (replay),
 * tally_verify (a full walk that fills a report) and tally_read_head.
 *
 * The iterator reads segment files in name order through the walker
 * (segment.c), which checks structure and chain with large buffered reads;
 * with a key it also decrypts and authenticates every record. Memory is
 * bounded by the largest frame, whatever the size of the journal.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#include "tally-internal.h"

struct tally_iter {
    int dirfd;
    ti_meta meta;
    unsigned flags;
    uint64_t from_seq;
    bool keyed;          /* a key was given and decryption is on */
    ti_dkeys keys;
    ti_aead aead;
    bool seg_key;        /* the current segment's key is installed */
    bool rechecked;      /* the end of this file was read again */
    bool rechecked_more; /* ... after a listing that showed a later file */
    ti_files files;
    char cur[TF_SEG_NAME_LEN + 1];
    uint64_t cur_no;
    ti_walk w;
    ti_buf work;         /* AD + plaintext */
    ti_buf raw;          /* decompressed payload */
    int err;             /* sticky */
    char errmsg[256];
    char err_seg[32];
    uint64_t err_off, err_seq;
    /* counters for verify */
    uint64_t segments, bytes;
};

static int iter_fail(tally_iter *it, int rc, uint64_t off, uint64_t seq,
                     const char *why)
{
    it->err = rc;
    ti_msg(it->err_seg, sizeof it->err_seg, "%s", it->cur);
    it->err_off = off;
    it->err_seq = seq;
    ti_msg(it->errmsg, sizeof it->errmsg, "%s: offset %" PRIu64
           ", seq %" PRIu64 ": %s", it->cur, off, seq, why);
    return rc;
}

void tally_iter_free(tally_iter *it)
{
    if (!it)
        return;
    if (it->dirfd >= 0)
        close(it->dirfd);
    ti_dkeys_free(&it->keys);
    ti_aead_free(&it->aead);
    ti_seg_list_free(it->files.names, it->files.n);
    ti_walk_free(&it->w);
    if (it->work.p)
        sodium_memzero(it->work.p, it->work.cap);
    ti_buf_free(&it->work);
    if (it->raw.p)
        sodium_memzero(it->raw.p, it->raw.cap);
    ti_buf_free(&it->raw);
    ti_meta_free(&it->meta);
    free(it);
}

static int seek_snapshot(tally_iter *it);
static int install_segment_key(tally_iter *it);

static int iter_open(tally_iter **ret, const char *dir,
                     const uint8_t *master_key, uint64_t from_seq,
                     unsigned flags, char *err, size_t errlen)
{
    if (!ret || !dir)
        return -EINVAL;
    if (sodium_init() < 0)
        return -EIO;
    tally_iter *it = calloc(1, sizeof *it);
    if (!it)
        return -ENOMEM;
    it->dirfd = -1;
    it->w.rf.fd = -1;
    int rc;
    it->dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (it->dirfd < 0) {
        rc = errno == ENOENT ? TALLY_ENOJOURNAL : -errno;
        ti_msg(err, errlen, "%s: cannot open directory", dir);
        goto fail;
    }
    rc = ti_meta_read(it->dirfd, master_key, &it->meta, err, errlen);
    if (rc < 0)
        goto fail;
    it->flags = flags;
    it->from_seq = from_seq;
    it->keyed = master_key && !(flags & TALLY_ITER_NO_DECRYPT);
    if (it->keyed) {
        rc = ti_aead_alloc(&it->aead, it->meta.cipher);
        if (rc < 0) {
            ti_msg(err, errlen, "%s",
                   rc == TALLY_ECIPHER ? "AES-256-GCM is not available on "
                                         "this CPU"
                                       : "cannot set up the cipher");
            goto fail;
        }
        uint32_t bad = 0;
        rc = ti_dkeys_unwrap(&it->keys, &it->meta, master_key, &bad);
        if (rc < 0) {
            if (rc != -ENOMEM)
                ti_msg(err, errlen, "cannot unwrap the data key of epoch %u",
                       bad);
            goto fail;
        }
    }
    rc = ti_seg_list(it->dirfd, &it->files.names, &it->files.n);
    if (rc < 0) {
        ti_msg(err, errlen, "%s: cannot list segment files", dir);
        goto fail;
    }
    ti_walk_init(&it->w, it->meta.jid, it->meta.cipher);
    if (flags & TALLY_ITER_FROM_SNAPSHOT) {
        rc = seek_snapshot(it);
        if (rc < 0) {
            ti_msg(err, errlen, "%s: cannot search for a snapshot", dir);
            goto fail;
        }
        if (rc == 1) {
            it->segments++;
            rc = install_segment_key(it);
            if (rc < 0)
                goto fail;
        }
    }
    *ret = it;
    return 0;
fail:
    tally_iter_free(it);
    return rc;
}

int tally_iter_open(tally_iter **ret, const char *dir,
                    const uint8_t *master_key, uint64_t from_seq,
                    unsigned flags)
{
    return iter_open(ret, dir, master_key, from_seq, flags, NULL, 0);
}

const char *tally_iter_errmsg(const tally_iter *it)
{
    return it ? it->errmsg : "";
}

void tally_iter_id(const tally_iter *it, uint8_t ret_id[static TALLY_ID_BYTES])
{
    memcpy(ret_id, it->meta.jid, TALLY_ID_BYTES);
}

/* Picks up files that appeared since the listing (a live writer rolled
 * over). Returns 1 if there is a next file to read. */
static int more_files(tally_iter *it)
{
    if (it->files.idx < it->files.n)
        return 1;
    return ti_files_more(&it->files, it->dirfd) > 0;
}

/* Shared with the audit (tally-internal.h): one way to follow a writer
 * that rolls over. */
int ti_files_more(ti_files *f, int dirfd)
{
    char **names;
    size_t n;
    int rc = ti_seg_list(dirfd, &names, &n);
    if (rc < 0)
        return rc;
    const char *last = f->n ? f->names[f->n - 1] : "";
    size_t first_new = 0;
    while (first_new < n && strcmp(names[first_new], last) <= 0)
        first_new++;
    if (first_new == n) {
        ti_seg_list_free(names, n);
        return 0;
    }
    ti_seg_list_free(f->names, f->n);
    /* Keep only the new names; idx restarts at them. */
    for (size_t i = 0; i < first_new; i++)
        free(names[i]);
    memmove(names, names + first_new, (n - first_new) * sizeof *names);
    f->names = names;
    f->n = n - first_new;
    f->idx = 0;
    return 1;
}

static uint64_t name_no(const char *name)
{
    uint64_t no = 0;
    (void)ti_seg_parse_name(name, &no);
    return no;
}

/* Shared with the audit (tally-internal.h): one way to find the segments
 * of a file the compactor merged away (FORMAT.md §11.4). */
int ti_walk_reopen_vanished(ti_walk *w, int dirfd, ti_files *f,
                            char cur[TF_SEG_NAME_LEN + 1])
{
    uint64_t want = w->segment_no + 1;
    for (int attempt = 0; attempt < 16; attempt++) {
        char **names;
        size_t n;
        int rc = ti_seg_list(dirfd, &names, &n);
        if (rc < 0)
            return rc;
        ti_seg_list_free(f->names, f->n);
        f->names = names;
        f->n = n;
        size_t k = 0;
        while (k < n && name_no(names[k]) <= want)
            k++;
        f->idx = k; /* files after the holder */
        bool vanished = false;
        for (size_t j = k; j-- > 0;) {
            uint64_t no = name_no(names[j]);
            if (no > w->segment_no) {
                f->idx = j; /* a file not read yet: open it as usual */
                return 0;
            }
            rc = ti_walk_open_file(w, dirfd, names[j]);
            if (rc == -ENOENT) {
                vanished = true;
                break;
            }
            if (rc < 0)
                return rc;
            rc = ti_walk_skip_to_segment(w, want);
            if (rc < 0)
                return rc;
            if (rc == 1) {
                ti_msg(cur, TF_SEG_NAME_LEN + 1, "%s", names[j]);
                f->idx = k;
                return 1;
            }
            ti_rfile_close(&w->rf);
            w->file_open = false;
        }
        if (!vanished)
            return 0;
    }
    return -EAGAIN;
}

/* TALLY_ITER_FROM_SNAPSHOT: finds the newest SNAPSHOT record that is not
 * pruned, scanning the files from the last one back with the structure-only
 * walk (its vtype is visible, FORMAT.md §4.2), and leaves the walker open on
 * that file, positioned at the record, with the chain taken from the stored
 * link before it. The file stays open, so a compactor replacing it meanwhile
 * changes nothing for this reader. 1 found, 0 none (the walker is reset to
 * the start of the journal), <0 error. */
static int seek_snapshot(tally_iter *it)
{
    ti_walk *w = &it->w;
    for (size_t i = it->files.n; i-- > 0;) {
        int rc = ti_walk_open_file(w, it->dirfd, it->files.names[i]);
        if (rc == -ENOENT)
            continue; /* merged away: its records are in an earlier file */
        if (rc < 0)
            return rc;
        w->started = false;
        w->nohash = true;
        bool found = false;
        uint64_t off = 0, seq = 0;
        uint8_t prev[32];
        ti_seg_hdr seg;
        for (;;) {
            int ev = ti_walk_next(w);
            if (ev < 0)
                return ev;
            if (ev != TI_EV_SEGMENT && ev != TI_EV_FRAME)
                break; /* end, or a torn or bad tail: not searched past */
            if (ev == TI_EV_FRAME && w->fh.vtype == TALLY_TYPE_SNAPSHOT &&
                w->fh.kind != TF_KIND_PRUNED) {
                found = true;
                off = w->frame_off;
                seq = w->fh.seq;
                memcpy(prev, w->prev_link, 32);
                seg = w->seg;
            }
        }
        w->nohash = false;
        if (!found)
            continue;
        w->pos = off;
        w->in_segment = true;
        w->started = true;
        w->next_seq = seq;
        memcpy(w->link, prev, 32);
        w->seg = seg;
        w->segment_no = seg.segment_no;
        ti_msg(it->cur, sizeof it->cur, "%s", it->files.names[i]);
        it->cur_no = name_no(it->files.names[i]);
        it->files.idx = i + 1;
        if (it->from_seq < seq)
            it->from_seq = seq;
        return 1;
    }
    /* None: read from the start. */
    ti_walk_free(w);
    ti_walk_init(w, it->meta.jid, it->meta.cipher);
    it->files.idx = 0;
    return 0;
}

static int install_segment_key(tally_iter *it)
{
    int rc = ti_dkeys_segment(&it->keys, &it->meta, &it->aead, &it->w.seg);
    it->seg_key = rc == 1;
    return rc < 0 ? rc : 0;
}

/* Shared with the audit (tally-internal.h). */
int ti_dkeys_unwrap(ti_dkeys *k, const ti_meta *m, const uint8_t mk[32],
                    uint32_t *ret_epoch)
{
    k->dk = sodium_malloc(32u * m->epoch_count);
    k->ok = calloc(m->epoch_count, sizeof *k->ok);
    if (!k->dk || !k->ok)
        return -ENOMEM;
    for (uint16_t i = 0; i < m->epoch_count; i++) {
        int rc = ti_epoch_unwrap(&m->epochs[i], mk, m->jid, k->dk + 32u * i);
        if (rc == TALLY_EPRUNED)
            continue; /* forgotten: its records stay sealed */
        if (rc < 0) {
            *ret_epoch = m->epochs[i].epoch;
            return rc;
        }
        k->ok[i] = true;
    }
    return 0;
}

void ti_dkeys_free(ti_dkeys *k)
{
    if (k->dk)
        sodium_free(k->dk); /* wipes */
    free(k->ok);
    k->dk = NULL;
    k->ok = NULL;
}

int ti_dkeys_segment(const ti_dkeys *k, const ti_meta *m, ti_aead *a,
                     const ti_seg_hdr *seg)
{
    if (!k->ok)
        return 0;
    for (uint16_t i = 0; i < m->epoch_count; i++) {
        if (m->epochs[i].epoch != seg->epoch)
            continue;
        if (!k->ok[i])
            return 0;
        uint8_t *sk = sodium_malloc(32);
        if (!sk)
            return -ENOMEM;
        ti_derive_segment_key(sk, k->dk + 32u * i, m->jid, seg->segment_no,
                              seg->salt);
        ti_aead_setkey(a, sk);
        sodium_free(sk);
        return 1;
    }
    return 0;
}

int ti_env_inflate(const ti_env *e, ti_buf *raw)
{
    int rc = ti_buf_reserve(raw, e->raw_len ? e->raw_len : 1);
    if (rc < 0)
        return rc;
    uLongf out = e->raw_len;
    uLong in = e->data_len;
    if (uncompress2(raw->p, &out, e->data, &in) != Z_OK ||
        out != e->raw_len || in != e->data_len)
        return TALLY_EINTEGRITY;
    return 0;
}

/* Fills ret from the walker's current frame; decrypts when it can. */
static int emit(tally_iter *it, tally_record *ret)
{
    ti_walk *w = &it->w;
    const ti_frame_hdr *h = &w->fh;
    tally_record r;
    memset(&r, 0, sizeof r);
    r.seq = h->seq;
    r.ts_ns = h->ts_ns;
    r.kind = h->kind;
    r.body_len = h->body_len;
    memcpy(r.record_hash, w->record_hash, 32);
    memcpy(r.link, w->frame + ti_frame_len(h) - 32, 32);
    r.segment = it->cur;
    r.offset = w->frame_off;
    if (h->kind == TF_KIND_PRUNED) {
        *ret = r;
        return 1;
    }
    const uint8_t *env = NULL;
    size_t env_len = 0;
    bool auth = it->seg_key;
    if (auth) {
        int rc = ti_buf_reserve(&it->work, TF_AD_BYTES + h->body_len);
        if (rc < 0)
            return iter_fail(it, rc, w->frame_off, h->seq, "out of memory");
        if (ti_frame_open(&it->aead, it->meta.jid, w->prev_link, w->frame, h,
                          it->work.p, &env, &env_len) < 0)
            return iter_fail(it, TALLY_EINTEGRITY, w->frame_off, h->seq,
                             "record does not authenticate (tag)");
    } else if (h->kind == TF_KIND_CLEAR) {
        /* Readable without the key, not authenticated (decrypted = 0). */
        env = w->frame + TF_FRAME_HEADER_BYTES;
        env_len = h->body_len - TF_TAG_BYTES;
    } else {
        *ret = r;
        return 1;
    }
    ti_env e;
    const char *why;
    if (ti_env_parse(env, env_len, h, &e, &why) < 0)
        return iter_fail(it, TALLY_EINTEGRITY, w->frame_off, h->seq, why);
    r.type = e.type;
    r.key = e.key_len ? e.key : NULL;
    r.key_len = e.key_len;
    r.payload = e.data;
    r.payload_len = e.data_len;
    if (h->flags & TF_FRAME_COMPRESSED) {
        int rc = ti_env_inflate(&e, &it->raw);
        if (rc == -ENOMEM)
            return iter_fail(it, rc, w->frame_off, h->seq, "out of memory");
        if (rc < 0)
            return iter_fail(it, TALLY_EINTEGRITY, w->frame_off, h->seq,
                             "compressed payload does not inflate to raw_len");
        r.payload = it->raw.p;
        r.payload_len = e.raw_len;
    }
    r.decrypted = auth ? 1 : 0;
    *ret = r;
    return 1;
}

/* Shared with the audit (tally-internal.h), as the rule recovery applies:
 * the first header of a file against its name, the others against all but
 * the name. */
int ti_seg_header_check(const ti_meta *m, const ti_seg_hdr *h,
                        const char *name, uint64_t off, const char **why)
{
    char later[TF_SEG_NAME_LEN + 1];
    ti_seg_name(later, h->segment_no);
    return ti_seg_file_check(m, h, off == 0 ? name : later, why);
}

int ti_seg_leftover_check(int dirfd, const ti_meta *m, const char *name,
                          uint64_t *ret_seq, const char **why)
{
    int fd = openat(dirfd, name, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT)
            return 0; /* removed meanwhile by the next compaction */
        int rc = -errno;
        *why = "cannot open";
        return rc;
    }
    uint8_t b[TF_SEG_HEADER_BYTES];
    ssize_t n = ti_pread_full(fd, b, sizeof b, 0);
    close(fd);
    if (n < 0) {
        *why = "read error";
        return (int)n;
    }
    ti_seg_hdr h;
    *why = "segment header incomplete";
    if ((size_t)n != sizeof b || ti_seg_header_parse(b, &h, why) < 0 ||
        ti_seg_file_check(m, &h, name, why) < 0) {
        *ret_seq = (size_t)n == sizeof b ? le64_get(b + 32) : 0;
        return TALLY_EINTEGRITY;
    }
    return 0;
}

/* A file skipped as a leftover: 0 or the iterator's error. */
static int check_leftover(tally_iter *it, const char *name)
{
    uint64_t seq = 0;
    const char *why;
    int rc = ti_seg_leftover_check(it->dirfd, &it->meta, name, &seq, &why);
    if (rc < 0)
        return iter_fail(it, rc, 0,
                         rc == TALLY_EINTEGRITY ? seq : it->w.next_seq, why);
    return 0;
}

int tally_iter_next(tally_iter *it, tally_record *ret)
{
    if (!it || !ret)
        return -EINVAL;
    if (it->err)
        return it->err;
    ti_walk *w = &it->w;
    for (;;) {
        if (!w->file_open) {
            if (!more_files(it))
                return 0;
            const char *name = it->files.names[it->files.idx++];
            uint64_t no;
            (void)ti_seg_parse_name(name, &no);
            ti_msg(it->cur, sizeof it->cur, "%s", name);
            it->cur_no = no;
            if (w->segment_no > 0 && no <= w->segment_no) {
                /* A leftover of an interrupted compaction merge: its
                 * segments were already read from the merged file
                 * (FORMAT.md §11.4), provided it is named after its first
                 * segment as every file is (the rule recovery applies). */
                int rc = check_leftover(it, name);
                if (rc < 0)
                    return rc;
                continue;
            }
            int rc = ti_walk_open_file(w, it->dirfd, name);
            if (rc == -ENOENT) {
                /* Removed since the listing: an empty segment, or merged
                 * into an earlier file by the compactor. */
                rc = ti_walk_reopen_vanished(w, it->dirfd, &it->files,
                                             it->cur);
                if (rc < 0)
                    return iter_fail(it, rc, 0, w->next_seq,
                                     "cannot find the file holding the next "
                                     "segment");
                if (rc == 1) {
                    it->cur_no = name_no(it->cur);
                    it->rechecked = false;
                }
                continue;
            }
            if (rc < 0)
                return iter_fail(it, rc, 0, w->next_seq, "cannot open");
            it->rechecked = false;
        }
        int ev = ti_walk_next(w);
        switch (ev) {
        case TI_EV_SEGMENT:
            it->rechecked = it->rechecked_more = false;
            {
                const char *why;
                if (ti_seg_header_check(&it->meta, &w->seg, it->cur,
                                        w->frame_off, &why) < 0)
                    return iter_fail(it, TALLY_EINTEGRITY, w->frame_off,
                                     w->seg.first_seq, why);
            }
            it->segments++;
            {
                int rc = install_segment_key(it);
                if (rc < 0)
                    return iter_fail(it, rc, w->frame_off, w->seg.first_seq,
                                     "out of memory");
            }
            continue;
        case TI_EV_FRAME:
            it->rechecked = it->rechecked_more = false;
            if (w->fh.seq < it->from_seq)
                continue;
            return emit(it, ret);
        case TI_EV_EOF:
        case TI_EV_TORN:
        case TI_EV_BAD: {
            /* List the directory first, then read this file once more
             * from the file itself: a writer seals a segment (its last
             * frames written, its reserved tail cut off) before it creates
             * the next file, and our buffer may predate what it wrote. */
            bool more = more_files(it);
            /* The re-read must come after the listing that showed a later
             * file: one done before it proves nothing (the writer may
             * have finished this file and created the next in between).
             * Without a later file, one re-read still replaces bytes that
             * an earlier read left in the buffer. */
            if (more ? !it->rechecked_more : !it->rechecked) {
                if (more)
                    it->rechecked_more = true;
                it->rechecked = true;
                ti_rfile_drop(&w->rf);
                continue;
            }
            it->rechecked = it->rechecked_more = false;
            if (more) {
                if (ev != TI_EV_EOF)
                    return iter_fail(it, TALLY_EINTEGRITY, w->frame_off,
                                     w->next_seq, w->why);
                it->bytes += w->pos;
                ti_rfile_close(&w->rf);
                w->file_open = false;
                continue;
            }
            /* The end, for now: stay on this file, so that a later call
             * reads again what a live writer appends to it. A live reader
             * takes a frame it cannot read yet for one being written. */
            ti_rfile_drop(&w->rf);
            if (ev == TI_EV_EOF || (it->flags & TALLY_ITER_TOLERATE_TAIL))
                return 0;
            /* The end of the last file: the one decision of FORMAT.md
             * §6 that recovery takes too (the writer's reserved zero
             * tail, a torn tail it would cut, or damage it refuses). */
            const char *how = NULL;
            int d = ti_tail_decide(w, &how);
            if (d < 0)
                return iter_fail(it, d, w->frame_off, w->next_seq,
                                 "read error");
            if (d == TI_TAIL_END)
                return 0;
            if (d == TI_TAIL_TORN)
                return iter_fail(it, TALLY_ETORN, w->frame_off, w->next_seq,
                                 w->why);
            char msg[200];
            ti_msg(msg, sizeof msg, "%s%s%s%s", w->why ? w->why : "damage",
                   how ? " (" : "", how ? how : "", how ? ")" : "");
            return iter_fail(it, TALLY_EINTEGRITY, w->frame_off, w->next_seq,
                             msg);
        }
        default:
            return iter_fail(it, ev, w->frame_off, w->next_seq,
                             "read error");
        }
    }
}

/* ---- verify ---------------------------------------------------------------- */

int tally_verify(const char *dir, const uint8_t *master_key,
                 tally_verify_report *ret)
{
    tally_verify_report rep;
    memset(&rep, 0, sizeof rep);
    tally_iter *it = NULL;
    int rc = iter_open(&it, dir, master_key, 0, 0, rep.message,
                       sizeof rep.message);
    if (rc < 0) {
        if (rc == TALLY_EINTEGRITY || rc == TALLY_EFORMAT)
            ti_msg(rep.segment, sizeof rep.segment, "%s", TF_META_FILE);
        if (ret)
            *ret = rep;
        return rc;
    }
    memcpy(rep.journal_id, it->meta.jid, 32);
    rep.cipher = it->meta.cipher;
    rep.keyed = master_key != NULL;
    tally_record r;
    while ((rc = tally_iter_next(it, &r)) == 1) {
        if (rep.records == 0) {
            rep.first_seq = r.seq;
            rep.first_ts_ns = rep.last_ts_ns = r.ts_ns;
        }
        rep.records++;
        rep.last_seq = r.seq;
        if (r.ts_ns < rep.first_ts_ns)
            rep.first_ts_ns = r.ts_ns;
        if (r.ts_ns > rep.last_ts_ns)
            rep.last_ts_ns = r.ts_ns;
        if (r.kind == TF_KIND_PRUNED)
            rep.pruned++;
    }
    rep.segments = it->segments;
    rep.bytes = it->bytes + (it->w.file_open ? it->w.pos : 0);
    memcpy(rep.head, it->w.link, 32);
    if (rc < 0) {
        ti_msg(rep.segment, sizeof rep.segment, "%s", it->err_seg);
        rep.offset = it->err_off;
        rep.seq = it->err_seq;
        ti_msg(rep.message, sizeof rep.message, "%s", it->errmsg);
    }
    tally_iter_free(it);
    if (ret)
        *ret = rep;
    return rc < 0 ? rc : 0;
}

/* ---- read_head --------------------------------------------------------------- */

/* The head that one file ends with: 1 found, 0 the file holds no valid
 * segment header (look at the previous file), <0 error. Structure only,
 * except that the last frame's link is recomputed: a last frame that does
 * not verify is not part of the head (recovery would cut it). */
static int file_head(int dirfd, const ti_meta *m, const char *name,
                     tally_head_info *h)
{
    ti_walk w;
    ti_walk_init(&w, m->jid, m->cipher);
    w.nohash = true;
    w.started = false;
    int rc = ti_walk_open_file(&w, dirfd, name);
    if (rc < 0)
        goto out;
    bool have = false, have_frame = false;
    uint64_t last_off = 0;
    ti_frame_hdr fh = { 0 };
    uint8_t prev[32];
    for (;;) {
        int ev = ti_walk_next(&w);
        if (ev < 0) {
            rc = ev;
            goto out;
        }
        if (ev == TI_EV_SEGMENT) {
            have = true;
            have_frame = false;
            h->seq = w.seg.first_seq - 1;
            memcpy(h->link, w.seg.prev_link, 32);
        } else if (ev == TI_EV_FRAME) {
            have_frame = true;
            last_off = w.frame_off;
            fh = w.fh;
            memcpy(prev, w.prev_link, 32);
            h->seq = w.fh.seq;
            memcpy(h->link, w.link, 32);
        } else {
            break; /* EOF, or a torn/bad tail: the head is before it */
        }
    }
    if (!have) {
        rc = 0;
        goto out;
    }
    if (have_frame) {
        const uint8_t *f;
        rc = ti_rfile_get(&w.rf, last_off, (size_t)ti_frame_len(&fh), &f);
        if (rc < 0)
            goto out;
        uint8_t rh[32], l[32];
        const char *why;
        if (rc == 0 || ti_frame_record_hash(f, &fh, rh, &why) < 0) {
            rc = TALLY_EINTEGRITY;
            goto out;
        }
        ti_link(l, prev, rh);
        if (memcmp(l, h->link, 32) != 0) {
            h->seq = fh.seq - 1;
            memcpy(h->link, prev, 32);
        }
    }
    rc = 1;
out:
    ti_walk_free(&w);
    return rc;
}

int tally_read_head(const char *dir, tally_head_info *ret)
{
    if (!dir || !ret)
        return -EINVAL;
    if (sodium_init() < 0)
        return -EIO;
    int dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dirfd < 0)
        return errno == ENOENT ? TALLY_ENOJOURNAL : -errno;
    ti_meta m;
    char **names = NULL;
    size_t n = 0;
    int rc = ti_meta_read(dirfd, NULL, &m, NULL, 0);
    if (rc < 0) {
        close(dirfd);
        return rc;
    }
    rc = ti_seg_list(dirfd, &names, &n);
    if (rc < 0)
        goto out;
    tally_head_info h;
    memset(&h, 0, sizeof h);
    ti_genesis(h.link, m.jid);
    for (size_t i = n; i-- > 0;) {
        rc = file_head(dirfd, &m, names[i], &h);
        if (rc == -ENOENT)
            continue;
        if (rc < 0)
            goto out;
        if (rc == 1)
            break;
    }
    h.durable_seq = 0;
    *ret = h;
    rc = 0;
out:
    ti_seg_list_free(names, n);
    ti_meta_free(&m);
    close(dirfd);
    return rc;
}
