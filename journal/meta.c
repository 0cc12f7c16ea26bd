/*
 * meta.c — the metadata file tally.meta (FORMAT.md §3): reading with its
 * checks (length, checksum, KCV, MAC), writing by atomic replace, and the
 * wrapping of epoch data keys (§3.2).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
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
