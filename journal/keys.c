/*
 * keys.c — master key files: loading (32 raw bytes, or 64 hex digits and an
 * optional newline, from a file nobody else can read) and generating.
 */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tally-internal.h"

int tally_key_load(const char *path, uint8_t out[static TALLY_KEY_BYTES])
{
    if (!path)
        return -EINVAL;
    if (sodium_init() < 0)
        return -EIO;
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0) {
        int rc = -errno;
        sodium_memzero(out, TALLY_KEY_BYTES);
        return rc;
    }
    struct stat st;
    int rc = 0;
    uint8_t buf[72]; /* 64 hex + "\r\n" fits; one more byte tells "too long" */
    ssize_t n = 0;
    if (fstat(fd, &st) < 0) {
        rc = -errno;
        goto out;
    }
    if (!S_ISREG(st.st_mode)) {
        rc = TALLY_EKEY;
        goto out;
    }
    /* A key readable by others is already compromised: refuse to use it so
     * the mistake is noticed (as ssh does with private keys). */
    if (st.st_mode & (S_IRWXG | S_IRWXO)) {
        rc = TALLY_EKEYPERM;
        goto out;
    }
    n = ti_pread_full(fd, buf, sizeof buf, 0);
    if (n < 0) {
        rc = (int)n;
        goto out;
    }
    if (n == TALLY_KEY_BYTES) {
        memcpy(out, buf, TALLY_KEY_BYTES);
        goto out;
    }
    size_t len = (size_t)n;
    if (len > 0 && buf[len - 1] == '\n')
        len--;
    if (len > 0 && buf[len - 1] == '\r')
        len--;
    size_t got = 0;
    const char *end = NULL;
    if (len != 2 * TALLY_KEY_BYTES ||
        sodium_hex2bin(out, TALLY_KEY_BYTES, (const char *)buf, len, NULL,
                       &got, &end) != 0 ||
        got != TALLY_KEY_BYTES || end != (const char *)buf + len)
        rc = TALLY_EKEY;
out:
    sodium_memzero(buf, sizeof buf);
    if (rc < 0)
        sodium_memzero(out, TALLY_KEY_BYTES);
    close(fd);
    return rc;
}

int tally_keygen(const char *path)
{
    if (!path)
        return -EINVAL;
    if (sodium_init() < 0)
        return -EIO;
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW,
                  0600);
    if (fd < 0)
        return -errno;
    uint8_t k[TALLY_KEY_BYTES];
    randombytes_buf(k, sizeof k);
    int rc = ti_write_all(fd, k, sizeof k);
    sodium_memzero(k, sizeof k);
    if (rc == 0 && fsync(fd) < 0)
        rc = -errno;
    if (close(fd) < 0 && rc == 0)
        rc = -errno;
    if (rc < 0) {
        (void)unlink(path);
        return rc;
    }
    /* Make the new name durable too. */
    char *copy = strdup(path);
    if (!copy)
        return 0;
    int dfd = open(dirname(copy), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    free(copy);
    if (dfd >= 0) {
        (void)fsync(dfd);
        close(dfd);
    }
    return 0;
}
