/*
 * fuzz-common.c — the shared part of the harnesses (fuzz.h).
 */
#include "fuzz.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tally-internal.h"

#ifndef STRESS_FUZZ_FIXTURE
#error "STRESS_FUZZ_FIXTURE (the fixture directory) must be defined"
#endif

const uint8_t fuzz_key[TALLY_KEY_BYTES] = {
    0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07,
    0x08, 0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x0e, 0x0f,
    0x10, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17,
    0x18, 0x19, 0x1a, 0x1b, 0x1c, 0x1d, 0x1e, 0x1f,
};

static char work[4096];
static pid_t work_owner; /* only the process that made it removes it */
static char jdir[4200];
static uint8_t *meta;
static size_t meta_len;

void fuzz_fail(const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "fuzz: CONTRADICTION: ");
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    abort();
}

static void rm_tree(const char *path)
{
    DIR *d = opendir(path);
    if (!d) {
        (void)unlink(path);
        return;
    }
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
            continue;
        char p[8400];
        snprintf(p, sizeof p, "%s/%s", path, e->d_name);
        struct stat sb;
        if (lstat(p, &sb) == 0 && S_ISDIR(sb.st_mode))
            rm_tree(p);
        else
            (void)unlink(p);
    }
    closedir(d);
    (void)rmdir(path);
}

static void cleanup(void)
{
    if (work[0] && getpid() == work_owner)
        rm_tree(work);
}

const char *fuzz_workdir(void)
{
    if (work[0])
        return work;
    /* STRESS_FUZZ_TMP: where the run script wants it (it removes that
     * directory at the end, also what an aborted input left behind) */
    const char *base = getenv("STRESS_FUZZ_TMP");
    if (!base || !*base)
        base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : getenv("TMPDIR");
    if (!base || !*base)
        base = "/tmp";
    snprintf(work, sizeof work, "%s/tally-fuzz-XXXXXX", base);
    if (!mkdtemp(work)) {
        perror("fuzz: mkdtemp");
        abort();
    }
    snprintf(jdir, sizeof jdir, "%s/j", work);
    work_owner = getpid();
    atexit(cleanup);
    return work;
}

static void write_file(const char *path, const void *p, size_t len)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) {
        fprintf(stderr, "fuzz: create %s: %s\n", path, strerror(errno));
        abort();
    }
    const uint8_t *b = p;
    while (len > 0) {
        ssize_t n = write(fd, b, len);
        if (n <= 0) {
            fprintf(stderr, "fuzz: write %s: %s\n", path, strerror(errno));
            abort();
        }
        b += n;
        len -= (size_t)n;
    }
    close(fd);
}

const uint8_t *fuzz_fixture_meta(size_t *ret_len)
{
    if (!meta) {
        const char *path = STRESS_FUZZ_FIXTURE "/tally.meta";
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        struct stat sb;
        if (fd < 0 || fstat(fd, &sb) < 0) {
            fprintf(stderr, "fuzz: %s: %s\n", path, strerror(errno));
            abort();
        }
        meta_len = (size_t)sb.st_size;
        meta = malloc(meta_len);
        if (!meta || read(fd, meta, meta_len) != (ssize_t)meta_len) {
            fprintf(stderr, "fuzz: reading %s failed\n", path);
            abort();
        }
        close(fd);
    }
    *ret_len = meta_len;
    return meta;
}

const char *fuzz_reset_dir(int with_meta)
{
    fuzz_workdir();
    rm_tree(jdir);
    if (mkdir(jdir, 0700) < 0) {
        fprintf(stderr, "fuzz: mkdir %s: %s\n", jdir, strerror(errno));
        abort();
    }
    if (with_meta) {
        size_t n;
        const uint8_t *m = fuzz_fixture_meta(&n);
        fuzz_put("tally.meta", m, n);
    }
    return jdir;
}

void fuzz_put(const char *name, const void *p, size_t len)
{
    char path[8400];
    snprintf(path, sizeof path, "%s/%s", jdir, name);
    write_file(path, p, len);
}

static uint32_t le32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
           (uint32_t)p[3] << 24;
}

void fuzz_rechain(uint8_t *p, size_t len)
{
    size_t pos = 0;
    uint8_t link[32];
    int have_link = 0;
    while (pos < len) {
        if (len - pos >= TF_SEG_HEADER_BYTES &&
            memcmp(p + pos, TF_SEG_MAGIC, 8) == 0) {
            ti_hash(p + pos + 128, p + pos, 128);          /* header_hash */
            memcpy(link, p + pos + 96, 32);                /* prev_link */
            have_link = 1;
            pos += TF_SEG_HEADER_BYTES;
            continue;
        }
        if (!have_link || len - pos < TF_FRAME_OVERHEAD)
            return;
        uint64_t body = le32(p + pos + 24);
        if (body > len - pos - TF_FRAME_OVERHEAD)
            return;
        uint8_t rh[32];
        if (p[pos + 4] == TF_KIND_PRUNED && body >= 64)
            memcpy(rh, p + pos + TF_FRAME_HEADER_BYTES + 32, 32);
        else
            ti_hash(rh, p + pos, TF_FRAME_HEADER_BYTES + (size_t)body);
        ti_link(link, link, rh);
        memcpy(p + pos + TF_FRAME_HEADER_BYTES + body, link, 32);
        pos += TF_FRAME_OVERHEAD + (size_t)body;
    }
}
