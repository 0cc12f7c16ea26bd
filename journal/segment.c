/*
 * segment.c — segment files and frames (FORMAT.md §4): names and listing,
 * segment headers, frame headers, envelopes, the AEAD framing, and the walker
 * that checks structure and chain over consecutive files with large buffered
 * reads. The iterator, verify, read_head and recovery are all built on it.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tally-internal.h"

/* ---- names ---------------------------------------------------------------- */

void ti_seg_name(char out[TF_SEG_NAME_LEN + 1], uint64_t segment_no)
{
    (void)snprintf(out, TF_SEG_NAME_LEN + 1, "%016" PRIx64 TF_SEG_SUFFIX,
                   segment_no);
}

int ti_seg_parse_name(const char *name, uint64_t *ret_no)
{
    if (strlen(name) != TF_SEG_NAME_LEN ||
        strcmp(name + 16, TF_SEG_SUFFIX) != 0)
        return 0;
    uint64_t v = 0;
    for (int i = 0; i < 16; i++) {
        char c = name[i];
        unsigned d;
        if (c >= '0' && c <= '9')
            d = (unsigned)(c - '0');
        else if (c >= 'a' && c <= 'f')
            d = (unsigned)(c - 'a' + 10);
        else
            return 0;
        v = v << 4 | d;
    }
    if (ret_no)
        *ret_no = v;
    return 1;
}

static int cmp_names(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

void ti_seg_list_free(char **names, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    free(names);
}

int ti_seg_list(int dirfd, char ***ret_names, size_t *ret_n)
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
    char **names = NULL;
    size_t n = 0, cap = 0;
    int rc = 0;
    struct dirent *de;
    errno = 0;
    while ((de = readdir(d)) != NULL) {
        if (!ti_seg_parse_name(de->d_name, NULL))
            continue;
        if (n == cap) {
            size_t nc = cap ? cap * 2 : 16;
            char **nn = realloc(names, nc * sizeof *nn);
            if (!nn) {
                rc = -ENOMEM;
                break;
            }
            names = nn;
            cap = nc;
        }
        names[n] = strdup(de->d_name);
        if (!names[n]) {
            rc = -ENOMEM;
            break;
        }
        n++;
    }
    if (rc == 0 && errno != 0)
        rc = -errno;
    closedir(d);
    if (rc < 0) {
        ti_seg_list_free(names, n);
        return rc;
    }
    if (n > 1)
        qsort(names, n, sizeof *names, cmp_names);
    *ret_names = names;
    *ret_n = n;
    return 0;
}

/* ---- segment header (§4.1) ------------------------------------------------ */

#define SOFF(f) TF_OFF(tf_seg_header, f)

void ti_seg_header_encode(uint8_t out[TF_SEG_HEADER_BYTES], const ti_seg_hdr *h)
{
    memset(out, 0, TF_SEG_HEADER_BYTES);
    memcpy(out, TF_SEG_MAGIC, 8);
    le16_put(out + SOFF(version), TF_VERSION);
    le16_put(out + SOFF(header_len), TF_SEG_HEADER_BYTES);
    out[SOFF(cipher)] = h->cipher;
    le32_put(out + SOFF(epoch), h->epoch);
    le64_put(out + SOFF(segment_no), h->segment_no);
    le64_put(out + SOFF(first_seq), h->first_seq);
    memcpy(out + SOFF(salt), h->salt, 16);
    memcpy(out + SOFF(jid), h->jid, 32);
    memcpy(out + SOFF(prev_link), h->prev_link, 32);
    ti_hash(out + SOFF(header_hash), out, TF_SEG_HASHED_BYTES);
}

static int all_zero(const uint8_t *p, size_t n)
{
    uint8_t acc = 0;
    for (size_t i = 0; i < n; i++)
        acc |= p[i];
    return acc == 0;
}

int ti_seg_header_parse(const uint8_t in[TF_SEG_HEADER_BYTES], ti_seg_hdr *ret,
                        const char **why)
{
    if (memcmp(in, TF_SEG_MAGIC, 8) != 0) {
        *why = "bad segment header magic";
        return TALLY_EINTEGRITY;
    }
    uint8_t h[32];
    ti_hash(h, in, TF_SEG_HASHED_BYTES);
    if (memcmp(h, in + SOFF(header_hash), 32) != 0) {
        *why = "segment header_hash does not verify";
        return TALLY_EINTEGRITY;
    }
    if (le16_get(in + SOFF(version)) != TF_VERSION ||
        le16_get(in + SOFF(header_len)) != TF_SEG_HEADER_BYTES) {
        *why = "unsupported segment version";
        return TALLY_EFORMAT;
    }
    if (in[SOFF(flags)] != 0 || le16_get(in + SOFF(reserved0)) != 0 ||
        le32_get(in + SOFF(reserved1)) != 0 ||
        le64_get(in + SOFF(reserved2)) != 0) {
        *why = "segment header reserved field not zero";
        return TALLY_EINTEGRITY;
    }
    ti_seg_hdr s;
    s.cipher = in[SOFF(cipher)];
    s.epoch = le32_get(in + SOFF(epoch));
    s.segment_no = le64_get(in + SOFF(segment_no));
    s.first_seq = le64_get(in + SOFF(first_seq));
    memcpy(s.salt, in + SOFF(salt), 16);
    memcpy(s.jid, in + SOFF(jid), 32);
    memcpy(s.prev_link, in + SOFF(prev_link), 32);
    if (s.segment_no == 0 || s.first_seq == 0 || s.epoch == 0) {
        *why = "segment header field out of range";
        return TALLY_EINTEGRITY;
    }
    *ret = s;
    return 0;
}

int ti_seg_file_check(const ti_meta *m, const ti_seg_hdr *h, const char *name,
                      const char **why)
{
    uint64_t name_no = 0;
    if (memcmp(h->jid, m->jid, 32) != 0) {
        *why = "segment belongs to another journal (jid)";
        return TALLY_EINTEGRITY;
    }
    if (h->cipher != m->cipher) {
        *why = "segment cipher differs from the metadata";
        return TALLY_EINTEGRITY;
    }
    /* §1: a file is named after the first segment it holds, so that name
     * order is segment order and a reader can tell a leftover of an
     * interrupted merge (§11.4) by its name. */
    if (!ti_seg_parse_name(name, &name_no) || h->segment_no != name_no) {
        *why = "segment number differs from the file name";
        return TALLY_EINTEGRITY;
    }
    if (!ti_meta_epoch(m, h->epoch)) {
        *why = "segment epoch unknown to the metadata";
        return TALLY_EINTEGRITY;
    }
    return 0;
}

/* ---- frame header (§4.2) -------------------------------------------------- */

#define FOFF(f) TF_OFF(tf_frame_header, f)

void ti_frame_header_encode(uint8_t out[TF_FRAME_HEADER_BYTES],
                            const ti_frame_hdr *h)
{
    memcpy(out, TF_FRAME_MAGIC, 4);
    out[FOFF(kind)] = h->kind;
    out[FOFF(flags)] = h->flags;
    le16_put(out + FOFF(vtype), h->vtype);
    le64_put(out + FOFF(seq), h->seq);
    le64_put(out + FOFF(ts_ns), h->ts_ns);
    le32_put(out + FOFF(body_len), h->body_len);
    le32_put(out + FOFF(unsynced_depth), h->unsynced_depth);
}

static int header_fields(const uint8_t *in, ti_frame_hdr *h, const char **why)
{
    if (memcmp(in, TF_FRAME_MAGIC, 4) != 0) {
        *why = "bad frame magic";
        return TALLY_EINTEGRITY;
    }
    h->kind = in[FOFF(kind)];
    h->flags = in[FOFF(flags)];
    h->vtype = le16_get(in + FOFF(vtype));
    h->seq = le64_get(in + FOFF(seq));
    h->ts_ns = le64_get(in + FOFF(ts_ns));
    h->body_len = le32_get(in + FOFF(body_len));
    /* Any value: what the writer knew was durable (§4.2), read only by
     * the decision between a torn tail and damage (§6). */
    h->unsynced_depth = le32_get(in + FOFF(unsynced_depth));
    if (h->kind < TF_KIND_SEALED || h->kind > TF_KIND_PRUNED) {
        *why = "bad frame kind";
        return TALLY_EINTEGRITY;
    }
    uint8_t allowed = h->kind == TF_KIND_SEALED ? TF_FRAME_COMPRESSED : 0;
    if (h->flags & ~allowed) {
        *why = "bad frame flags";
        return TALLY_EINTEGRITY;
    }
    if ((h->vtype != 0 && h->vtype < TALLY_TYPE_RESERVED) ||
        (h->kind == TF_KIND_CLEAR && h->vtype < TALLY_TYPE_RESERVED)) {
        *why = "bad frame vtype";
        return TALLY_EINTEGRITY;
    }
    if (h->kind == TF_KIND_PRUNED ? h->body_len != TF_PRUNED_BODY
                                  : (h->body_len < TF_MIN_BODY ||
                                     h->body_len > TF_MAX_BODY)) {
        *why = "bad frame body_len";
        return TALLY_EINTEGRITY;
    }
    return 0;
}

int ti_frame_header_parse(const uint8_t in[TF_FRAME_HEADER_BYTES],
                          uint64_t expect_seq, ti_frame_hdr *ret,
                          const char **why)
{
    ti_frame_hdr h;
    int rc = header_fields(in, &h, why);
    if (rc < 0)
        return rc;
    if (h.seq != expect_seq) {
        *why = "frame seq out of order";
        return TALLY_EINTEGRITY;
    }
    *ret = h;
    return 0;
}

int ti_frame_record_hash(const uint8_t *f, const ti_frame_hdr *h,
                         uint8_t rh[32], const char **why)
{
    if (h->kind != TF_KIND_PRUNED) {
        ti_hash(rh, f, TF_FRAME_HEADER_BYTES + (size_t)h->body_len);
        return 0;
    }
    /* §4.2: body = original header || record_hash; the original is a
     * SEALED or CLEAR header with the same vtype, seq and ts_ns. */
    ti_frame_hdr o;
    const uint8_t *body = f + TF_FRAME_HEADER_BYTES;
    if (header_fields(body, &o, why) < 0 || o.kind == TF_KIND_PRUNED ||
        o.seq != h->seq || o.vtype != h->vtype || o.ts_ns != h->ts_ns) {
        *why = "pruned frame: original header does not match";
        return TALLY_EINTEGRITY;
    }
    memcpy(rh, body + TF_FRAME_HEADER_BYTES, 32);
    return 0;
}

/* ---- envelope (§4.2) ------------------------------------------------------- */

int ti_env_parse(const uint8_t *env, size_t len, const ti_frame_hdr *h,
                 ti_env *ret, const char **why)
{
    if (len < TF_ENV_HEADER_BYTES) {
        *why = "envelope too short";
        return TALLY_EINTEGRITY;
    }
    ti_env e;
    e.type = le16_get(env + TF_OFF(tf_envelope, type));
    e.key_len = le16_get(env + TF_OFF(tf_envelope, key_len));
    e.data_len = le32_get(env + TF_OFF(tf_envelope, data_len));
    e.raw_len = le32_get(env + TF_OFF(tf_envelope, raw_len));
    if (le32_get(env + TF_OFF(tf_envelope, reserved)) != 0) {
        *why = "envelope reserved field not zero";
        return TALLY_EINTEGRITY;
    }
    if (e.key_len > TALLY_MAX_RKEY) {
        *why = "envelope key_len over the limit";
        return TALLY_EINTEGRITY;
    }
    size_t used = (size_t)TF_ENV_HEADER_BYTES + e.key_len + e.data_len;
    if (used > len) {
        *why = "envelope fields overrun it";
        return TALLY_EINTEGRITY;
    }
    if (!all_zero(env + used, len - used)) {
        *why = "envelope padding not zero";
        return TALLY_EINTEGRITY;
    }
    if (e.raw_len > TALLY_MAX_PAYLOAD ||
        (!(h->flags & TF_FRAME_COMPRESSED) && e.raw_len != e.data_len)) {
        *why = "envelope raw_len invalid";
        return TALLY_EINTEGRITY;
    }
    if (h->vtype != 0 ? e.type != h->vtype : e.type >= TALLY_TYPE_RESERVED) {
        *why = "envelope type disagrees with vtype";
        return TALLY_EINTEGRITY;
    }
    e.key = env + TF_ENV_HEADER_BYTES;
    e.data = e.key + e.key_len;
    *ret = e;
    return 0;
}

/* ---- AEAD framing (§4.2, §4.3) ------------------------------------------- */

static void make_ad(uint8_t ad[TF_AD_BYTES], const uint8_t jid[32],
                    const uint8_t *header, const uint8_t prev[32])
{
    memcpy(ad, jid, 32);
    memcpy(ad + 32, header, TF_FRAME_HEADER_BYTES);
    memcpy(ad + 32 + TF_FRAME_HEADER_BYTES, prev, 32);
}

int ti_frame_open(const ti_aead *a, const uint8_t jid[32],
                  const uint8_t prev_link[32], const uint8_t *f,
                  const ti_frame_hdr *h, uint8_t *work,
                  const uint8_t **ret_env, size_t *ret_env_len)
{
    const uint8_t *body = f + TF_FRAME_HEADER_BYTES;
    size_t env_len = h->body_len - TF_TAG_BYTES;
    const uint8_t *tag = body + env_len;
    make_ad(work, jid, f, prev_link);
    if (h->kind == TF_KIND_SEALED) {
        if (ti_aead_open(a, h->seq, work + TF_AD_BYTES, body, env_len, tag,
                         work, TF_AD_BYTES) < 0)
            return TALLY_EINTEGRITY;
        *ret_env = work + TF_AD_BYTES;
    } else if (h->kind == TF_KIND_CLEAR) {
        memcpy(work + TF_AD_BYTES, body, env_len);
        if (ti_aead_open(a, h->seq, work, body, 0, tag, work,
                         TF_AD_BYTES + env_len) < 0)
            return TALLY_EINTEGRITY;
        *ret_env = body;
    } else {
        return TALLY_EPRUNED;
    }
    *ret_env_len = env_len;
    return 0;
}

void ti_frame_encode(const ti_aead *a, const uint8_t jid[32], uint8_t *out,
                     const ti_frame_in *in, uint8_t *clear_work,
                     uint8_t link[32])
{
    size_t env_len = TF_ENV_HEADER_BYTES + in->key_len + in->data_len +
                     in->pad_len;
    ti_frame_hdr h = {
        .kind = in->kind,
        .flags = in->flags,
        .vtype = in->vtype,
        .seq = in->seq,
        .ts_ns = in->ts_ns,
        .body_len = (uint32_t)(env_len + TF_TAG_BYTES),
        .unsynced_depth = in->unsynced_depth,
    };
    ti_frame_header_encode(out, &h);
    uint8_t *env = out + TF_FRAME_HEADER_BYTES;
    le16_put(env + TF_OFF(tf_envelope, type), in->type);
    le16_put(env + TF_OFF(tf_envelope, key_len), (uint16_t)in->key_len);
    le32_put(env + TF_OFF(tf_envelope, data_len), (uint32_t)in->data_len);
    le32_put(env + TF_OFF(tf_envelope, raw_len), (uint32_t)in->raw_len);
    le32_put(env + TF_OFF(tf_envelope, reserved), 0);
    if (in->key_len)
        memcpy(env + TF_ENV_HEADER_BYTES, in->key, in->key_len);
    if (in->data_len)
        memcpy(env + TF_ENV_HEADER_BYTES + in->key_len, in->data, in->data_len);
    if (in->pad_len)
        memset(env + TF_ENV_HEADER_BYTES + in->key_len + in->data_len, 0,
               in->pad_len);
    uint8_t *tag = env + env_len;
    if (in->kind == TF_KIND_SEALED) {
        uint8_t ad[TF_AD_BYTES];
        make_ad(ad, jid, out, link);
        ti_aead_seal(a, in->seq, env, tag, env, env_len, ad, sizeof ad);
    } else {
        make_ad(clear_work, jid, out, link);
        memcpy(clear_work + TF_AD_BYTES, env, env_len);
        ti_aead_seal(a, in->seq, clear_work, tag, clear_work, 0, clear_work,
                     TF_AD_BYTES + env_len);
    }
    uint8_t rh[32];
    ti_hash(rh, out, TF_FRAME_HEADER_BYTES + (size_t)h.body_len);
    ti_link(link, link, rh);
    memcpy(tag + TF_TAG_BYTES, link, 32);
}

/* ---- buffered reading ------------------------------------------------------ */

int ti_rfile_open(ti_rfile *f, int dirfd, const char *name)
{
    f->fd = openat(dirfd, name, O_RDONLY | O_CLOEXEC);
    if (f->fd < 0)
        return -errno;
    f->len = 0;
    f->off = 0;
    if (!f->buf) {
        f->buf = malloc(TI_RFILE_CHUNK);
        if (!f->buf) {
            close(f->fd);
            f->fd = -1;
            return -ENOMEM;
        }
        f->cap = TI_RFILE_CHUNK;
    }
    (void)posix_fadvise(f->fd, 0, 0, POSIX_FADV_SEQUENTIAL);
    return 0;
}

void ti_rfile_close(ti_rfile *f)
{
    if (f->fd >= 0)
        close(f->fd);
    f->fd = -1;
    f->len = 0;
}

void ti_rfile_free(ti_rfile *f)
{
    ti_rfile_close(f);
    free(f->buf);
    f->buf = NULL;
    f->cap = 0;
}

int ti_rfile_get(ti_rfile *f, uint64_t pos, size_t n, const uint8_t **ret)
{
    if (pos >= f->off && pos + n <= f->off + f->len) {
        *ret = f->buf + (pos - f->off);
        return 1;
    }
    if (n > f->cap) {
        /* Grows only to the largest frame: memory stays bounded by it. */
        size_t cap = f->cap;
        while (cap < n)
            cap *= 2;
        uint8_t *p = realloc(f->buf, cap);
        if (!p)
            return -ENOMEM;
        f->buf = p;
        f->cap = cap;
    }
    /* Keep what is already there from pos on, read the rest. */
    size_t keep = 0;
    if (pos >= f->off && pos < f->off + f->len) {
        keep = (size_t)(f->off + f->len - pos);
        memmove(f->buf, f->buf + (pos - f->off), keep);
    }
    f->off = pos;
    f->len = keep;
    ssize_t r = ti_pread_full(f->fd, f->buf + keep, f->cap - keep, pos + keep);
    if (r < 0)
        return (int)r;
    f->len += (size_t)r;
    if (f->len < n)
        return 0;
    *ret = f->buf;
    return 1;
}

int ti_rfile_zero_from(ti_rfile *f, uint64_t pos)
{
    enum { CHUNK = 64 * 1024 };
    uint8_t *b = malloc(CHUNK);
    if (!b)
        return -ENOMEM;
    int rc = 0;
    for (;;) {
        ssize_t n = ti_pread_full(f->fd, b, CHUNK, pos);
        if (n < 0) {
            rc = (int)n;
            break;
        }
        if (n == 0)
            break;
        if (!all_zero(b, (size_t)n)) {
            rc = 0;
            break;
        }
        rc = 1;
        pos += (uint64_t)n;
    }
    free(b);
    return rc;
}

static size_t rfile_avail(const ti_rfile *f, uint64_t pos)
{
    if (pos < f->off || pos >= f->off + f->len)
        return 0;
    return (size_t)(f->off + f->len - pos);
}

/* ---- walker ---------------------------------------------------------------- */

void ti_walk_init(ti_walk *w, const uint8_t jid[32], uint8_t cipher)
{
    memset(w, 0, sizeof *w);
    w->rf.fd = -1;
    memcpy(w->jid, jid, 32);
    w->cipher = cipher;
    /* From the start of a journal: segment 1, seq 1, link G. A caller that
     * starts mid-journal clears `started` to trust the first header. */
    w->started = true;
    w->next_seq = 1;
    ti_genesis(w->link, jid);
}

int ti_walk_open_file(ti_walk *w, int dirfd, const char *name)
{
    ti_rfile_close(&w->rf);
    w->file_open = false;
    int rc = ti_rfile_open(&w->rf, dirfd, name);
    if (rc < 0)
        return rc;
    w->file_open = true;
    w->in_segment = false;
    w->pos = 0;
    return 0;
}

void ti_walk_free(ti_walk *w)
{
    ti_rfile_free(&w->rf);
    w->file_open = false;
}

static int walk_header(ti_walk *w)
{
    const uint8_t *p;
    int r = ti_rfile_get(&w->rf, w->pos, TF_SEG_HEADER_BYTES, &p);
    if (r < 0)
        return r;
    w->frame_off = w->pos;
    w->header_bad = true;
    if (r == 0) {
        w->why = "segment header incomplete";
        return TI_EV_TORN;
    }
    ti_seg_hdr h;
    if (ti_seg_header_parse(p, &h, &w->why) < 0)
        return TI_EV_BAD;
    if (memcmp(h.jid, w->jid, 32) != 0) {
        w->why = "segment belongs to another journal (jid)";
        return TI_EV_BAD;
    }
    if (h.cipher != w->cipher) {
        w->why = "segment cipher differs from the metadata";
        return TI_EV_BAD;
    }
    if (w->started) {
        if (h.segment_no != w->segment_no + 1) {
            w->why = "segment number out of sequence";
            return TI_EV_BAD;
        }
        if (h.first_seq != w->next_seq) {
            w->why = "segment first_seq does not continue the previous one";
            return TI_EV_BAD;
        }
        if (memcmp(h.prev_link, w->link, 32) != 0) {
            w->why = "segment prev_link does not continue the chain";
            return TI_EV_BAD;
        }
    } else {
        w->started = true;
        w->next_seq = h.first_seq;
        memcpy(w->link, h.prev_link, 32);
    }
    w->segment_no = h.segment_no;
    w->seg = h;
    w->in_segment = true;
    w->pos += TF_SEG_HEADER_BYTES;
    w->header_bad = false;
    return TI_EV_SEGMENT;
}

int ti_walk_next(ti_walk *w)
{
    w->why = NULL;
    w->header_bad = false;
    w->frame = NULL;
    if (!w->in_segment)
        return walk_header(w);

    const uint8_t *p;
    int r = ti_rfile_get(&w->rf, w->pos, TF_FRAME_HEADER_BYTES, &p);
    if (r < 0)
        return r;
    w->frame_off = w->pos;
    if (r == 0) {
        size_t avail = rfile_avail(&w->rf, w->pos);
        if (avail == 0)
            return TI_EV_EOF;
        p = w->rf.buf + (w->pos - w->rf.off);
        size_t m4 = avail < 4 ? avail : 4, m8 = avail < 8 ? avail : 8;
        if (memcmp(p, TF_FRAME_MAGIC, m4) == 0 ||
            memcmp(p, TF_SEG_MAGIC, m8) == 0) {
            w->why = "frame incomplete";
            w->header_bad = true;
            return TI_EV_TORN;
        }
        w->why = "bad frame magic";
        w->header_bad = true;
        return TI_EV_BAD;
    }
    if (memcmp(p, TF_SEG_MAGIC, 8) == 0)
        return walk_header(w);

    ti_frame_hdr h;
    if (ti_frame_header_parse(p, w->next_seq, &h, &w->why) < 0) {
        w->header_bad = true;
        return TI_EV_BAD;
    }
    w->fh = h;
    uint64_t flen = ti_frame_len(&h);
    r = ti_rfile_get(&w->rf, w->pos, (size_t)flen, &p);
    if (r < 0)
        return r;
    if (r == 0) {
        w->why = "frame incomplete";
        return TI_EV_TORN;
    }
    const uint8_t *stored = p + flen - TF_LINK_BYTES;
    if (h.kind == TF_KIND_PRUNED || !w->nohash) {
        if (ti_frame_record_hash(p, &h, w->record_hash, &w->why) < 0)
            return TI_EV_BAD;
    }
    if (!w->nohash) {
        uint8_t l[32];
        ti_link(l, w->link, w->record_hash);
        if (memcmp(l, stored, 32) != 0) {
            w->why = "link does not verify";
            return TI_EV_BAD;
        }
    }
    memcpy(w->prev_link, w->link, 32);
    memcpy(w->link, stored, 32);
    w->frame = p;
    w->next_seq++;
    w->pos += flen;
    return TI_EV_FRAME;
}

int ti_walk_skip_to_segment(ti_walk *w, uint64_t segment_no)
{
    uint64_t pos = 0;
    for (;;) {
        const uint8_t *p;
        int r = ti_rfile_get(&w->rf, pos, 8, &p);
        if (r <= 0)
            return r;
        const char *why;
        if (memcmp(p, TF_SEG_MAGIC, 8) == 0) {
            r = ti_rfile_get(&w->rf, pos, TF_SEG_HEADER_BYTES, &p);
            if (r <= 0)
                return r;
            ti_seg_hdr h;
            if (ti_seg_header_parse(p, &h, &why) < 0 ||
                h.segment_no > segment_no)
                return 0;
            if (h.segment_no == segment_no) {
                w->pos = pos;
                w->in_segment = false;
                return 1;
            }
            pos += TF_SEG_HEADER_BYTES;
            continue;
        }
        r = ti_rfile_get(&w->rf, pos, TF_FRAME_HEADER_BYTES, &p);
        if (r <= 0)
            return r;
        ti_frame_hdr h;
        if (ti_frame_header_parse(p, le64_get(p + FOFF(seq)), &h, &why) < 0)
            return 0;
        pos += ti_frame_len(&h);
    }
}
