/*
 * meta.c — the metadata file tally.meta (FORMAT.md §3): reading with its
 * checks (length, checksum, KCV, MAC), writing by atomic replace, and the
 * wrapping of epoch data keys (§3.2), and the padding policy kept in its
 * extension area (§3.3, §4.2).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tally-internal.h"

#define OFF(f) TF_OFF(tf_meta_fixed, f)

void ti_meta_free(ti_meta *m)
{
    free(m->epochs);
    free(m->ext);
    m->epochs = NULL;
    m->ext = NULL;
}

const ti_epoch *ti_meta_epoch(const ti_meta *m, uint32_t epoch)
{
    for (uint16_t i = 0; i < m->epoch_count; i++)
        if (m->epochs[i].epoch == epoch)
            return &m->epochs[i];
    return NULL;
}

static void epoch_ad(uint8_t ad[14 + 32 + 4], const uint8_t jid[32],
                     uint32_t epoch)
{
    memcpy(ad, "tally/v1/epoch", 14);
    memcpy(ad + 14, jid, 32);
    le32_put(ad + 46, epoch);
}

void ti_epoch_wrap(ti_epoch *e, const uint8_t mk[32], const uint8_t jid[32],
                   const uint8_t dk[32])
{
    uint8_t kw[32], ad[50];
    ti_derive(kw, mk, "tally/v1/wrap", jid);
    epoch_ad(ad, jid, e->epoch);
    randombytes_buf(e->nonce, sizeof e->nonce);
    (void)crypto_aead_xchacha20poly1305_ietf_encrypt(
        e->wrapped, NULL, dk, 32, ad, sizeof ad, NULL, e->nonce, kw);
    e->flags &= ~TF_EPOCH_FORGOTTEN;
    sodium_memzero(kw, sizeof kw);
}

int ti_epoch_unwrap(const ti_epoch *e, const uint8_t mk[32],
                    const uint8_t jid[32], uint8_t dk[32])
{
    if (e->flags & TF_EPOCH_FORGOTTEN)
        return TALLY_EPRUNED;
    uint8_t kw[32], ad[50];
    ti_derive(kw, mk, "tally/v1/wrap", jid);
    epoch_ad(ad, jid, e->epoch);
    int rc = crypto_aead_xchacha20poly1305_ietf_decrypt(
        dk, NULL, NULL, e->wrapped, sizeof e->wrapped, ad, sizeof ad,
        e->nonce, kw);
    sodium_memzero(kw, sizeof kw);
    if (rc != 0) {
        sodium_memzero(dk, 32);
        return TALLY_EKEY;
    }
    return 0;
}

static size_t meta_size(const ti_meta *m)
{
    return TF_META_FIXED_BYTES + m->name_len +
           (size_t)TF_EPOCH_BYTES * m->epoch_count + m->ext_len +
           TF_META_TRAILER_BYTES;
}

int ti_meta_read(int dirfd, const uint8_t *mk, ti_meta *ret, char *err,
                 size_t errlen)
{
    ti_meta m;
    memset(&m, 0, sizeof m);
    uint8_t *buf = NULL;
    int rc;

    int fd = openat(dirfd, TF_META_FILE, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        rc = errno == ENOENT ? TALLY_ENOJOURNAL : -errno;
        ti_msg(err, errlen, "%s: cannot open", TF_META_FILE);
        return rc;
    }
    struct stat st;
    if (fstat(fd, &st) < 0) {
        rc = -errno;
        goto out;
    }
    size_t max = TF_META_FIXED_BYTES + TALLY_MAX_NAME +
                 (size_t)TF_EPOCH_BYTES * 65535u + TF_META_MAX_EXT +
                 TF_META_TRAILER_BYTES;
    if (st.st_size < (off_t)(TF_META_FIXED_BYTES + TF_META_TRAILER_BYTES) ||
        (uint64_t)st.st_size > max) {
        rc = TALLY_EINTEGRITY;
        ti_msg(err, errlen, "%s: bad length %lld", TF_META_FILE,
               (long long)st.st_size);
        goto out;
    }
    size_t len = (size_t)st.st_size;
    buf = malloc(len);
    if (!buf) {
        rc = -ENOMEM;
        goto out;
    }
    ssize_t n = ti_pread_full(fd, buf, len, 0);
    if (n < 0) {
        rc = (int)n;
        goto out;
    }
    if ((size_t)n != len) {
        rc = TALLY_EINTEGRITY;
        ti_msg(err, errlen, "%s: shorter than its size", TF_META_FILE);
        goto out;
    }
    if (memcmp(buf, TF_META_MAGIC, 8) != 0) {
        rc = TALLY_EINTEGRITY;
        ti_msg(err, errlen, "%s: bad magic", TF_META_FILE);
        goto out;
    }
    m.name_len = le16_get(buf + OFF(name_len));
    m.epoch_count = le16_get(buf + OFF(epoch_count));
    m.ext_len = le32_get(buf + OFF(ext_len));
    if (m.ext_len > TF_META_MAX_EXT || meta_size(&m) != len) {
        rc = TALLY_EINTEGRITY;
        ti_msg(err, errlen, "%s: length %zu does not match its fields",
               TF_META_FILE, len);
        goto out;
    }
    /* Checksum first: it tells accidental damage without the key. */
    uint8_t h[32];
    ti_hash(h, buf, len - 32);
    if (sodium_memcmp(h, buf + len - 32, 32) != 0) {
        rc = TALLY_EINTEGRITY;
        ti_msg(err, errlen, "%s: checksum does not verify", TF_META_FILE);
        goto out;
    }
    uint16_t version = le16_get(buf + OFF(version));
    m.flags = le32_get(buf + OFF(flags));
    if (version != TF_VERSION || (m.flags & ~TF_META_KNOWN_FLAGS)) {
        rc = TALLY_EFORMAT;
        ti_msg(err, errlen, "%s: version %u flags %#x not supported",
               TF_META_FILE, version, m.flags);
        goto out;
    }
    if (le16_get(buf + OFF(reserved0)) != 0 || buf[17] || buf[18] ||
        buf[19]) {
        rc = TALLY_EINTEGRITY;
        ti_msg(err, errlen, "%s: reserved bytes not zero", TF_META_FILE);
        goto out;
    }
    m.cipher = buf[OFF(cipher)];
    m.current_epoch = le32_get(buf + OFF(current_epoch));
    m.segment_size = le64_get(buf + OFF(segment_size));
    m.generation = le64_get(buf + OFF(generation));
    memcpy(m.jid, buf + OFF(jid), 32);
    memcpy(m.kcv, buf + OFF(kcv), 32);
    if (m.cipher != TALLY_CIPHER_AES256GCM &&
        m.cipher != TALLY_CIPHER_XCHACHA20POLY1305) {
        rc = TALLY_EFORMAT;
        ti_msg(err, errlen, "%s: unknown cipher %u", TF_META_FILE, m.cipher);
        goto out;
    }
    if (m.epoch_count == 0 || m.name_len > TALLY_MAX_NAME ||
        m.segment_size < 4096) {
        rc = TALLY_EINTEGRITY;
        ti_msg(err, errlen, "%s: invalid field values", TF_META_FILE);
        goto out;
    }
    const uint8_t *p = buf + TF_META_FIXED_BYTES;
    memcpy(m.name, p, m.name_len);
    m.name[m.name_len] = 0;
    p += m.name_len;
    m.epochs = calloc(m.epoch_count, sizeof *m.epochs);
    if (!m.epochs) {
        rc = -ENOMEM;
        goto out;
    }
    for (uint16_t i = 0; i < m.epoch_count; i++, p += TF_EPOCH_BYTES) {
        ti_epoch *e = &m.epochs[i];
        e->epoch = le32_get(p + TF_OFF(tf_epoch, epoch));
        e->flags = le32_get(p + TF_OFF(tf_epoch, flags));
        e->first_segment = le64_get(p + TF_OFF(tf_epoch, first_segment));
        memcpy(e->nonce, p + TF_OFF(tf_epoch, nonce), 24);
        memcpy(e->wrapped, p + TF_OFF(tf_epoch, wrapped), 48);
        if (le64_get(p + TF_OFF(tf_epoch, reserved)) != 0 ||
            (e->flags & ~TF_EPOCH_FORGOTTEN) || e->epoch == 0 ||
            (i > 0 && e->epoch <= m.epochs[i - 1].epoch)) {
            rc = TALLY_EINTEGRITY;
            ti_msg(err, errlen, "%s: invalid epoch entry %u", TF_META_FILE,
                   (unsigned)i);
            goto out;
        }
    }
    if (!ti_meta_epoch(&m, m.current_epoch)) {
        rc = TALLY_EINTEGRITY;
        ti_msg(err, errlen, "%s: current epoch %u has no entry", TF_META_FILE,
               m.current_epoch);
        goto out;
    }
    if (m.ext_len) {
        m.ext = malloc(m.ext_len);
        if (!m.ext) {
            rc = -ENOMEM;
            goto out;
        }
        memcpy(m.ext, p, m.ext_len);
    }
    if (mk) {
        uint8_t k[32];
        ti_derive(k, mk, "tally/v1/kcv", m.jid);
        int bad = sodium_memcmp(k, m.kcv, 32);
        sodium_memzero(k, sizeof k);
        if (bad) {
            rc = TALLY_EKEY;
            ti_msg(err, errlen, "wrong key: key check value does not match");
            goto out;
        }
        ti_derive(k, mk, "tally/v1/meta", m.jid);
        (void)crypto_generichash(h, 32, buf, len - 64, k, 32);
        sodium_memzero(k, sizeof k);
        if (sodium_memcmp(h, buf + len - 64, 32) != 0) {
            rc = TALLY_EINTEGRITY;
            ti_msg(err, errlen, "%s: mac does not verify", TF_META_FILE);
            goto out;
        }
    }
    *ret = m;
    memset(&m, 0, sizeof m);
    rc = 0;
out:
    ti_meta_free(&m);
    free(buf);
    close(fd);
    return rc;
}

int ti_meta_write(int dirfd, ti_meta *m, const uint8_t mk[32])
{
    size_t len = meta_size(m);
    uint8_t *buf = calloc(1, len);
    if (!buf)
        return -ENOMEM;
    m->generation++;
    memcpy(buf, TF_META_MAGIC, 8);
    le16_put(buf + OFF(version), TF_VERSION);
    le32_put(buf + OFF(flags), m->flags);
    buf[OFF(cipher)] = m->cipher;
    le32_put(buf + OFF(current_epoch), m->current_epoch);
    le64_put(buf + OFF(segment_size), m->segment_size);
    le64_put(buf + OFF(generation), m->generation);
    memcpy(buf + OFF(jid), m->jid, 32);
    ti_derive(m->kcv, mk, "tally/v1/kcv", m->jid);
    memcpy(buf + OFF(kcv), m->kcv, 32);
    le16_put(buf + OFF(name_len), m->name_len);
    le16_put(buf + OFF(epoch_count), m->epoch_count);
    le32_put(buf + OFF(ext_len), m->ext_len);
    uint8_t *p = buf + TF_META_FIXED_BYTES;
    memcpy(p, m->name, m->name_len);
    p += m->name_len;
    for (uint16_t i = 0; i < m->epoch_count; i++, p += TF_EPOCH_BYTES) {
        const ti_epoch *e = &m->epochs[i];
        le32_put(p + TF_OFF(tf_epoch, epoch), e->epoch);
        le32_put(p + TF_OFF(tf_epoch, flags), e->flags);
        le64_put(p + TF_OFF(tf_epoch, first_segment), e->first_segment);
        memcpy(p + TF_OFF(tf_epoch, nonce), e->nonce, 24);
        memcpy(p + TF_OFF(tf_epoch, wrapped), e->wrapped, 48);
    }
    if (m->ext_len)
        memcpy(p, m->ext, m->ext_len);
    uint8_t k[32];
    ti_derive(k, mk, "tally/v1/meta", m->jid);
    (void)crypto_generichash(buf + len - 64, 32, buf, len - 64, k, 32);
    sodium_memzero(k, sizeof k);
    ti_hash(buf + len - 32, buf, len - 32);
    int rc = ti_replace_file(dirfd, TF_META_FILE, buf, len, 0600);
    free(buf);
    if (rc < 0)
        m->generation--;
    return rc;
}

/* ---- the padding policy (§3.3 extension PADDING, §4.2) -------------------- */

int ti_padding_check(const tally_padding *p)
{
    if (!p)
        return -EINVAL;
    switch (p->kind) {
    case TALLY_PAD_NONE:
    case TALLY_PAD_BUCKETS:
        return p->block == 0 ? 0 : -EINVAL;
    case TALLY_PAD_BLOCK:
        return p->block >= TF_PAD_MIN_BLOCK && p->block <= TF_PAD_MAX_BLOCK
                   ? 0
                   : -EINVAL;
    default:
        return -EINVAL;
    }
}

size_t tally_padded_len(const tally_padding *p, size_t env_len)
{
    if (!p || ti_padding_check(p) < 0 || env_len > TF_MAX_ENV)
        return env_len;
    size_t to = env_len;
    if (p->kind == TALLY_PAD_BLOCK) {
        to = (env_len + p->block - 1) / p->block * p->block;
    } else if (p->kind == TALLY_PAD_BUCKETS) {
        to = TF_BUCKET_MIN;
        while (to < env_len && to < TF_BUCKET_MAX_POW2)
            to <<= 1;
        if (to < env_len)
            to = TF_MAX_ENV;
    }
    /* Never past the largest body: a record that would round beyond it is
     * padded to exactly that, one more fixed size (§4.2). */
    return to > TF_MAX_ENV ? TF_MAX_ENV : to;
}

/* Finds the first entry with tag among the TLVs of an extension area,
 * checking that every entry lies inside it: 1 found (*ret_val, *ret_len),
 * 0 not, or TALLY_EINTEGRITY when an entry overruns the area. */
static int ext_find(const uint8_t *ext, uint32_t ext_len, uint16_t tag,
                    const uint8_t **ret_val, uint16_t *ret_len)
{
    uint32_t off = 0;
    int found = 0;
    while (off < ext_len) {
        if (ext_len - off < 4)
            return TALLY_EINTEGRITY;
        uint16_t t = le16_get(ext + off), l = le16_get(ext + off + 2);
        if (ext_len - off - 4 < l)
            return TALLY_EINTEGRITY;
        if (t == tag && !found) {
            *ret_val = ext + off + 4;
            *ret_len = l;
            found = 1;
        }
        off += 4u + l;
    }
    return found;
}

int ti_meta_padding(const ti_meta *m, tally_padding *ret)
{
    const uint8_t *v = NULL;
    uint16_t l = 0;
    int rc = ext_find(m->ext, m->ext_len, TF_EXT_PADDING, &v, &l);
    if (rc < 0)
        return rc;
    tally_padding p = { TALLY_PAD_NONE, 0 };
    if (rc == 1) {
        if (l != TF_EXT_PADDING_LEN || v[1] || v[2] || v[3])
            return TALLY_EINTEGRITY;
        if (v[0] > TALLY_PAD_BUCKETS)
            return TALLY_EFORMAT; /* a later policy: this writer cannot honour it */
        p.kind = (tally_padding_kind)v[0];
        p.block = le32_get(v + 4);
        if (ti_padding_check(&p) < 0)
            return TALLY_EINTEGRITY;
    }
    *ret = p;
    return 0;
}

int ti_meta_set_padding(ti_meta *m, const tally_padding *p)
{
    if (ti_padding_check(p) < 0)
        return -EINVAL;
    /* The other entries are kept as they are, in their order. */
    uint8_t *out = malloc((size_t)m->ext_len + 4 + TF_EXT_PADDING_LEN);
    if (!out)
        return -ENOMEM;
    uint32_t off = 0, n = 0;
    while (off + 4 <= m->ext_len) {
        uint16_t t = le16_get(m->ext + off), l = le16_get(m->ext + off + 2);
        if (m->ext_len - off - 4 < l)
            break; /* malformed tail: dropped (ti_meta_padding refused it) */
        if (t != TF_EXT_PADDING) {
            memcpy(out + n, m->ext + off, 4u + l);
            n += 4u + l;
        }
        off += 4u + l;
    }
    if (p->kind != TALLY_PAD_NONE) {
        le16_put(out + n, TF_EXT_PADDING);
        le16_put(out + n + 2, TF_EXT_PADDING_LEN);
        out[n + 4] = (uint8_t)p->kind;
        out[n + 5] = out[n + 6] = out[n + 7] = 0;
        le32_put(out + n + 8, p->block);
        n += 4 + TF_EXT_PADDING_LEN;
    }
    free(m->ext);
    m->ext = n ? out : NULL;
    m->ext_len = n;
    if (!n)
        free(out);
    return 0;
}

int tally_padding_parse(const char *s, tally_padding *ret)
{
    if (!s || !ret)
        return -EINVAL;
    tally_padding p = { TALLY_PAD_NONE, 0 };
    if (strcmp(s, "none") == 0) {
        /* as initialised */
    } else if (strcmp(s, "buckets") == 0) {
        p.kind = TALLY_PAD_BUCKETS;
    } else if (strncmp(s, "block:", 6) == 0) {
        const char *d = s + 6;
        uint64_t v = 0;
        if (*d < '0' || *d > '9')
            return -EINVAL;
        for (; *d >= '0' && *d <= '9'; d++) {
            v = v * 10 + (uint64_t)(*d - '0');
            if (v > TF_PAD_MAX_BLOCK)
                return -EINVAL;
        }
        if (*d == 'K' || *d == 'k')
            v <<= 10, d++;
        else if (*d == 'M' || *d == 'm')
            v <<= 20, d++;
        if (*d != 0 || v > TF_PAD_MAX_BLOCK)
            return -EINVAL;
        p.kind = TALLY_PAD_BLOCK;
        p.block = (uint32_t)v;
    } else {
        return -EINVAL;
    }
    if (ti_padding_check(&p) < 0)
        return -EINVAL;
    *ret = p;
    return 0;
}

int tally_padding_format(const tally_padding *p, char *buf, size_t len)
{
    if (!p)
        return snprintf(buf, len, "?");
    switch (p->kind) {
    case TALLY_PAD_NONE:
        return snprintf(buf, len, "none");
    case TALLY_PAD_BUCKETS:
        return snprintf(buf, len, "buckets");
    case TALLY_PAD_BLOCK:
        return snprintf(buf, len, "block:%u", (unsigned)p->block);
    default:
        return snprintf(buf, len, "?");
    }
}

int tally_get_padding(const char *dir, tally_padding *ret)
{
    if (!dir || !ret)
        return -EINVAL;
    if (sodium_init() < 0)
        return -EIO;
    int dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dirfd < 0)
        return errno == ENOENT ? TALLY_ENOJOURNAL : -errno;
    ti_meta m;
    int rc = ti_meta_read(dirfd, NULL, &m, NULL, 0);
    close(dirfd);
    if (rc < 0)
        return rc;
    tally_padding p;
    rc = ti_meta_padding(&m, &p);
    ti_meta_free(&m);
    if (rc == 0)
        *ret = p;
    return rc;
}

int tally_set_padding(const char *dir,
                      const uint8_t master_key[static TALLY_KEY_BYTES],
                      const tally_padding *p)
{
    if (!dir || !master_key || ti_padding_check(p) < 0)
        return -EINVAL;
    if (sodium_init() < 0)
        return -EIO;
    int dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dirfd < 0)
        return errno == ENOENT ? TALLY_ENOJOURNAL : -errno;
    int lockfd = -1, rc;
    ti_meta m;
    bool have = false;
    if (faccessat(dirfd, TF_META_FILE, F_OK, 0) < 0) {
        rc = errno == ENOENT ? TALLY_ENOJOURNAL : -errno;
        goto out;
    }
    /* The writer's lock (§1): a writer reads the policy at open, so the
     * change takes effect with the next open and never under a writer. */
    lockfd = openat(dirfd, TF_LOCK_FILE, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (lockfd < 0) {
        rc = -errno;
        goto out;
    }
    if (flock(lockfd, LOCK_EX | LOCK_NB) < 0) {
        rc = errno == EWOULDBLOCK ? -EBUSY : -errno;
        goto out;
    }
    rc = ti_meta_read(dirfd, master_key, &m, NULL, 0);
    if (rc < 0)
        goto out;
    have = true;
    /* A malformed or unknown policy entry is replaced, not carried on. */
    rc = ti_meta_set_padding(&m, p);
    if (rc == 0)
        rc = ti_meta_write(dirfd, &m, master_key);
out:
    if (have)
        ti_meta_free(&m);
    if (lockfd >= 0)
        close(lockfd);
    close(dirfd);
    return rc;
}
