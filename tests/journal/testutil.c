/*
 * testutil.c — see testutil.h. Test support only: every failure here is a
 * test failure (cmocka's fail_msg), never a silent skip.
 */
#include "testutil.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* The directories made by tu_mkdtemp and not yet removed (tests only). */
static char *made[64];

char *tu_mkdtemp(const char *tag)
{
    const char *base = getenv("TMPDIR");
    char buf[PATH_MAX];
    if (!base || !*base)
        base = "/tmp";
    snprintf(buf, sizeof buf, "%s/tally-%s-XXXXXX", base, tag);
    if (!mkdtemp(buf))
        fail_msg("mkdtemp %s: %s", buf, strerror(errno));
    char *s = strdup(buf);
    assert_non_null(s);
    for (size_t i = 0; i < sizeof made / sizeof made[0]; i++)
        if (!made[i]) {
            made[i] = strdup(buf);
            break;
        }
    return s;
}

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st; (void)flag; (void)ftw;
    if (remove(path) != 0 && errno != ENOENT)
        fail_msg("remove %s: %s", path, strerror(errno));
    return 0;
}

void tu_rmrf(const char *dir)
{
    if (!dir)
        return;
    (void)nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
    for (size_t i = 0; i < sizeof made / sizeof made[0]; i++)
        if (made[i] && !strcmp(made[i], dir)) {
            free(made[i]);
            made[i] = NULL;
        }
}

int tu_cleanup(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof made / sizeof made[0]; i++)
        if (made[i]) {
            char *d = made[i];
            (void)nftw(d, rm_one, 16, FTW_DEPTH | FTW_PHYS);
            made[i] = NULL;
            free(d);
        }
    return 0;
}

void tu_path(char *out, size_t outsz, const char *dir, const char *name)
{
    int n = snprintf(out, outsz, "%s/%s", dir, name);
    assert_true(n > 0 && (size_t)n < outsz);
}

void tu_key(uint8_t key[TALLY_KEY_BYTES], uint8_t seed)
{
    for (unsigned i = 0; i < TALLY_KEY_BYTES; i++)
        key[i] = (uint8_t)(seed + i);
}

tally_options tu_opts(const uint8_t *key)
{
    tally_options o;
    memset(&o, 0, sizeof o);
    o.master_key = key;
    return o;
}

uint8_t *tu_read(const char *path, size_t *ret_len)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return NULL;
    struct stat st;
    assert_int_equal(fstat(fd, &st), 0);
    size_t len = (size_t)st.st_size;
    uint8_t *buf = malloc(len ? len : 1);
    assert_non_null(buf);
    size_t got = 0;
    while (got < len) {
        ssize_t r = read(fd, buf + got, len - got);
        if (r <= 0)
            fail_msg("read %s: %s", path, r < 0 ? strerror(errno) : "short");
        got += (size_t)r;
    }
    close(fd);
    *ret_len = len;
    return buf;
}

void tu_write(const char *path, const void *buf, size_t len)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0)
        fail_msg("open %s: %s", path, strerror(errno));
    size_t done = 0;
    while (done < len) {
        ssize_t w = write(fd, (const uint8_t *)buf + done, len - done);
        if (w <= 0)
            fail_msg("write %s: %s", path, strerror(errno));
        done += (size_t)w;
    }
    close(fd);
}

uint64_t tu_file_size(const char *path)
{
    struct stat st;
    if (stat(path, &st) != 0)
        fail_msg("stat %s: %s", path, strerror(errno));
    return (uint64_t)st.st_size;
}

void tu_truncate(const char *path, uint64_t len)
{
    if (truncate(path, (off_t)len) != 0)
        fail_msg("truncate %s: %s", path, strerror(errno));
}

void tu_flip_bit(const char *path, uint64_t bit)
{
    int fd = open(path, O_RDWR | O_CLOEXEC);
    if (fd < 0)
        fail_msg("open %s: %s", path, strerror(errno));
    uint8_t b;
    assert_int_equal(pread(fd, &b, 1, (off_t)(bit / 8)), 1);
    b ^= (uint8_t)(1u << (bit % 8));
    assert_int_equal(pwrite(fd, &b, 1, (off_t)(bit / 8)), 1);
    close(fd);
}

static int is_seg_name(const char *n)
{
    size_t len = strlen(n);
    if (len != 20 || strcmp(n + 16, ".seg") != 0)
        return 0;
    for (int i = 0; i < 16; i++)
        if (!((n[i] >= '0' && n[i] <= '9') || (n[i] >= 'a' && n[i] <= 'f')))
            return 0;
    return 1;
}

/* Copies a name known to fit (checked), without snprintf's truncation
 * warnings at -O0. */
static void copy_name(char *dst, size_t dstsz, const char *src)
{
    size_t n = strlen(src);
    assert_true(n < dstsz);
    memcpy(dst, src, n + 1);
}

static int cmp_name(const void *a, const void *b)
{
    return strcmp((const char *)a, (const char *)b);
}

int tu_list_segs(const char *dir, char names[][32], int max)
{
    DIR *d = opendir(dir);
    if (!d)
        fail_msg("opendir %s: %s", dir, strerror(errno));
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (!is_seg_name(e->d_name))
            continue;
        assert_true(n < max);
        copy_name(names[n++], 32, e->d_name);
    }
    closedir(d);
    qsort(names, (size_t)n, 32, cmp_name);
    return n;
}

tu_snap *tu_snap_take(const char *dir)
{
    tu_snap *s = calloc(1, sizeof *s);
    assert_non_null(s);
    DIR *d = opendir(dir);
    if (!d)
        fail_msg("opendir %s: %s", dir, strerror(errno));
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        char p[PATH_MAX];
        struct stat st;
        tu_path(p, sizeof p, dir, e->d_name);
        if (lstat(p, &st) != 0 || !S_ISREG(st.st_mode))
            continue;
        assert_true(s->n < TU_MAX_FILES);
        copy_name(s->name[s->n], sizeof s->name[0], e->d_name);
        s->data[s->n] = tu_read(p, &s->len[s->n]);
        assert_non_null(s->data[s->n]);
        s->n++;
    }
    closedir(d);
    return s;
}

void tu_snap_restore(const tu_snap *s, const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        fail_msg("opendir %s: %s", dir, strerror(errno));
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
            continue;
        int keep = 0;
        for (int i = 0; i < s->n; i++)
            keep |= !strcmp(s->name[i], e->d_name);
        if (!keep) {
            char p[PATH_MAX];
            tu_path(p, sizeof p, dir, e->d_name);
            if (unlink(p) != 0)
                fail_msg("unlink %s: %s", p, strerror(errno));
        }
    }
    closedir(d);
    for (int i = 0; i < s->n; i++) {
        char p[PATH_MAX];
        tu_path(p, sizeof p, dir, s->name[i]);
        tu_write(p, s->data[i], s->len[i]);
    }
}

void tu_snap_free(tu_snap *s)
{
    if (!s)
        return;
    for (int i = 0; i < s->n; i++)
        free(s->data[i]);
    free(s);
}

uint64_t tu_append_text(tally *t, uint16_t type, const char *key, const char *text)
{
    tally_record_in r;
    memset(&r, 0, sizeof r);
    r.type = type;
    r.key = key;
    r.key_len = key ? strlen(key) : 0;
    r.payload = text;
    r.payload_len = text ? strlen(text) : 0;
    uint64_t seq = 0;
    int rc = tally_append(t, &r, &seq);
    if (rc != 0)
        fail_msg("tally_append: %s (%s)", tally_strerror(rc), tally_errmsg(t));
    return seq;
}

int64_t tu_count_records(const char *dir, const uint8_t *key)
{
    tally_iter *it = NULL;
    int rc = tally_iter_open(&it, dir, key, 1, 0);
    if (rc < 0)
        return rc;
    tally_record r;
    int64_t n = 0;
    while ((rc = tally_iter_next(it, &r)) == 1) {
        assert_int_equal(r.seq, (uint64_t)n + 1);
        n++;
    }
    tally_iter_free(it);
    return rc < 0 ? rc : n;
}

void tu_hex(char *out, const uint8_t *in, size_t n)
{
    static const char d[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = d[in[i] >> 4];
        out[2 * i + 1] = d[in[i] & 15];
    }
    out[2 * n] = 0;
}

static int nib(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

int tu_unhex(uint8_t *out, size_t outsz, const char *hex)
{
    size_t n = strlen(hex);
    if (n % 2 || n / 2 > outsz)
        return -1;
    for (size_t i = 0; i < n / 2; i++) {
        int a = nib(hex[2 * i]), b = nib(hex[2 * i + 1]);
        if (a < 0 || b < 0)
            return -1;
        out[i] = (uint8_t)(a << 4 | b);
    }
    return (int)(n / 2);
}
