/*
 * util.c — the small pieces every part of the journal uses: buffers, careful
 * I/O (short writes, EINTR, atomic replace), hashes and key derivation
 * (FORMAT.md §2) and the AEAD wrapper (§4.3).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "tally-internal.h"

int ti_buf_reserve(ti_buf *b, size_t need)
{
    if (need <= b->cap)
        return 0;
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < need)
        cap *= 2;
    uint8_t *p = realloc(b->p, cap);
    if (!p)
        return -ENOMEM;
    b->p = p;
    b->cap = cap;
    return 0;
}

void ti_buf_free(ti_buf *b)
{
    free(b->p);
    b->p = NULL;
    b->len = b->cap = 0;
}

int ti_write_all(int fd, const void *buf, size_t len)
{
    const uint8_t *p = buf;
    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        if (n == 0)
            return -EIO;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

int ti_pwrite_all(int fd, const void *buf, size_t len, uint64_t off)
{
    const uint8_t *p = buf;
    while (len > 0) {
        ssize_t n = pwrite(fd, p, len, (off_t)off);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        if (n == 0)
            return -EIO;
        p += n;
        len -= (size_t)n;
        off += (uint64_t)n;
    }
    return 0;
}

ssize_t ti_pread_full(int fd, void *buf, size_t len, uint64_t off)
{
    uint8_t *p = buf;
    size_t got = 0;
    while (got < len) {
        ssize_t n = pread(fd, p + got, len - got, (off_t)(off + got));
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        if (n == 0)
            break;
        got += (size_t)n;
    }
    return (ssize_t)got;
}

int ti_fsync_dir(int dirfd)
{
    if (fsync(dirfd) < 0)
        return -errno;
    return 0;
}

int ti_replace_file(int dirfd, const char *name, const void *data, size_t len,
                    int mode)
{
    char tmp[300];
    int n = snprintf(tmp, sizeof tmp, "%s.tmp", name);
    if (n < 0 || (size_t)n >= sizeof tmp)
        return -ENAMETOOLONG;
    int fd = openat(dirfd, tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
    if (fd < 0)
        return -errno;
    int rc = ti_write_all(fd, data, len);
    if (rc == 0 && fsync(fd) < 0)
        rc = -errno;
    if (close(fd) < 0 && rc == 0)
        rc = -errno;
    if (rc == 0 && renameat(dirfd, tmp, dirfd, name) < 0)
        rc = -errno;
    if (rc < 0) {
        (void)unlinkat(dirfd, tmp, 0);
        return rc;
    }
    return ti_fsync_dir(dirfd);
}

void ti_msg(char *buf, size_t len, const char *fmt, ...)
{
    if (!buf || len == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    (void)vsnprintf(buf, len, fmt, ap);
    va_end(ap);
}

uint64_t ti_now_ns(void)
{
    struct timespec ts;
    (void)clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* ---- hashes (FORMAT.md §2) ------------------------------------------------ */

void ti_hashv(uint8_t out[32], const uint8_t *key, const struct iovec *v, int n)
{
    crypto_generichash_state st;
    (void)crypto_generichash_init(&st, key, key ? 32 : 0, 32);
    for (int i = 0; i < n; i++)
        (void)crypto_generichash_update(&st, v[i].iov_base, v[i].iov_len);
    (void)crypto_generichash_final(&st, out, 32);
    sodium_memzero(&st, sizeof st);
}

void ti_hash(uint8_t out[32], const void *m, size_t len)
{
    (void)crypto_generichash(out, 32, m, len, NULL, 0);
}

void ti_derive(uint8_t out[32], const uint8_t key[32], const char *label,
               const uint8_t jid[32])
{
    struct iovec v[2] = {
        { (void *)label, strlen(label) },
        { (void *)jid, 32 },
    };
    ti_hashv(out, key, v, 2);
}

void ti_derive_jid(uint8_t out[32], const uint8_t mk[32], const char *name,
                   size_t name_len)
{
    static const char label[] = "tally/v1/id";
    struct iovec v[2] = {
        { (void *)label, sizeof label - 1 },
        { (void *)name, name_len },
    };
    ti_hashv(out, mk, v, 2);
}

void ti_derive_segment_key(uint8_t out[32], const uint8_t dk[32],
                           const uint8_t jid[32], uint64_t segment_no,
                           const uint8_t salt[16])
{
    static const char label[] = "tally/v1/segment";
    uint8_t no[8];
    le64_put(no, segment_no);
    struct iovec v[4] = {
        { (void *)label, sizeof label - 1 },
        { (void *)jid, 32 },
        { no, 8 },
        { (void *)salt, 16 },
    };
    ti_hashv(out, dk, v, 4);
}

void ti_genesis(uint8_t out[32], const uint8_t jid[32])
{
    static const char label[] = "tally/v1/genesis";
    struct iovec v[2] = {
        { (void *)label, sizeof label - 1 },
        { (void *)jid, 32 },
    };
    ti_hashv(out, NULL, v, 2);
}

void ti_link(uint8_t out[32], const uint8_t prev[32], const uint8_t rh[32])
{
    uint8_t m[64];
    memcpy(m, prev, 32);
    memcpy(m + 32, rh, 32);
    (void)crypto_generichash(out, 32, m, 64, NULL, 0);
}

/* ---- AEAD (FORMAT.md §4.3) ------------------------------------------------ */

int ti_cipher_check(int cipher)
{
    if (cipher == TALLY_CIPHER_AES256GCM) {
        if (!crypto_aead_aes256gcm_is_available())
            return TALLY_ECIPHER;
        return 0;
    }
    if (cipher == TALLY_CIPHER_XCHACHA20POLY1305)
        return 0;
    return TALLY_EFORMAT;
}

int ti_aead_alloc(ti_aead *a, int cipher)
{
    memset(a, 0, sizeof *a);
    int rc = ti_cipher_check(cipher);
    if (rc < 0)
        return rc;
    a->cipher = cipher;
    if (cipher == TALLY_CIPHER_AES256GCM) {
        /* 512 bytes, a multiple of 16, so sodium_malloc's pointer is aligned
         * as the precomputed state requires. */
        a->gcm = sodium_malloc(sizeof *a->gcm);
        if (!a->gcm)
            return -ENOMEM;
    } else {
        a->xkey = sodium_malloc(32);
        if (!a->xkey)
            return -ENOMEM;
    }
    return 0;
}

void ti_aead_setkey(ti_aead *a, const uint8_t sk[32])
{
    if (a->cipher == TALLY_CIPHER_AES256GCM)
        (void)crypto_aead_aes256gcm_beforenm(a->gcm, sk);
    else
        memcpy(a->xkey, sk, 32);
    a->keyed = true;
}

void ti_aead_free(ti_aead *a)
{
    sodium_free(a->gcm); /* sodium_free wipes */
    sodium_free(a->xkey);
    a->gcm = NULL;
    a->xkey = NULL;
    a->keyed = false;
}

void ti_aead_seal(const ti_aead *a, uint64_t seq, uint8_t *c,
                  uint8_t tag[TF_TAG_BYTES], const uint8_t *m, size_t mlen,
                  const uint8_t *ad, size_t adlen)
{
    uint8_t nonce[24] = { 0 };
    le64_put(nonce, seq);
    if (a->cipher == TALLY_CIPHER_AES256GCM)
        (void)crypto_aead_aes256gcm_encrypt_detached_afternm(
            c, tag, NULL, m, mlen, ad, adlen, NULL, nonce, a->gcm);
    else
        (void)crypto_aead_xchacha20poly1305_ietf_encrypt_detached(
            c, tag, NULL, m, mlen, ad, adlen, NULL, nonce, a->xkey);
}

int ti_aead_open(const ti_aead *a, uint64_t seq, uint8_t *m, const uint8_t *c,
                 size_t clen, const uint8_t tag[TF_TAG_BYTES],
                 const uint8_t *ad, size_t adlen)
{
    uint8_t nonce[24] = { 0 };
    le64_put(nonce, seq);
    int rc;
    if (a->cipher == TALLY_CIPHER_AES256GCM)
        rc = crypto_aead_aes256gcm_decrypt_detached_afternm(
            m, NULL, c, clen, tag, ad, adlen, nonce, a->gcm);
    else
        rc = crypto_aead_xchacha20poly1305_ietf_decrypt_detached(
            m, NULL, c, clen, tag, ad, adlen, nonce, a->xkey);
    return rc == 0 ? 0 : -1;
}
