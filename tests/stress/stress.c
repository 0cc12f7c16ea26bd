/*
 * stress.c — helpers of the tests/stress programs (stress.h).
 */
#include "stress.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

const char *st_prog = "stress";

void st_fail(const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "%s: FAIL: ", st_prog);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    exit(1);
}

void st_note(const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "%s: ", st_prog);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

/* ---- random: splitmix64 (small, good enough for picking test moments) --- */

void st_rng_seed(st_rng *r, uint64_t seed)
{
    r->s = seed;
}

uint64_t st_rng_next(st_rng *r)
{
    uint64_t z = (r->s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

uint64_t st_rng_below(st_rng *r, uint64_t n)
{
    return st_rng_next(r) % n;
}

uint64_t st_seed_default(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return ((uint64_t)ts.tv_nsec << 20) ^ (uint64_t)ts.tv_sec ^
           ((uint64_t)getpid() << 40);
}

/* ---- payloads -------------------------------------------------------------- */

size_t st_payload(uint64_t seq, char out[static ST_PAYLOAD_MAX])
{
    int n = snprintf(out, ST_PAYLOAD_MAX, "seq=%" PRIu64 ";", seq);
    /* Lengths vary so frames straddle 4 KiB pages and segment ends at
     * different places; a few are long (compressible runs). */
    size_t fill = (size_t)((seq * 7919u) % 97u);
    if (seq % 13 == 0)
        fill += 200;
    for (size_t j = 0; j < fill; j++)
        out[(size_t)n + j] = (char)('a' + (seq + j * (seq % 5 + 1)) % 26);
    return (size_t)n + fill;
}

int st_payload_ok(uint64_t seq, const void *p, size_t len)
{
    char want[ST_PAYLOAD_MAX];
    size_t n = st_payload(seq, want);
    return n == len && memcmp(want, p, n) == 0;
}

/* ---- time ---------------------------------------------------------------- */

uint64_t st_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

void st_sleep_ms(unsigned ms)
{
    struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L };
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

/* ---- processes ----------------------------------------------------------- */

pid_t st_spawn(char *const argv[], int in_fd, int out_fd, int err_fd)
{
    pid_t pid = fork();
    if (pid < 0)
        st_fail("fork: %s", strerror(errno));
    if (pid == 0) {
        int null = open("/dev/null", O_RDWR);
        int fds[3] = { in_fd, out_fd, err_fd };
        for (int i = 0; i < 3; i++) {
            int src = fds[i] >= 0 ? fds[i] : null;
            if (src != i && dup2(src, i) < 0)
                _exit(126);
        }
        /* Only 0, 1, 2: a pipe end kept open here would hide the EOF the
         * parent waits for. */
        long max = sysconf(_SC_OPEN_MAX);
        for (long fd = 3; fd < (max > 0 && max < 65536 ? max : 1024); fd++)
            close((int)fd);
        signal(SIGPIPE, SIG_DFL);
        execv(argv[0], argv);
        _exit(127);
    }
    return pid;
}

int st_wait(pid_t pid)
{
    int status;
    while (waitpid(pid, &status, 0) < 0) {
        if (errno != EINTR)
            st_fail("waitpid: %s", strerror(errno));
    }
    if (WIFEXITED(status))
        return WEXITSTATUS(status);
    if (WIFSIGNALED(status))
        return 128 + WTERMSIG(status);
    return 255;
}

struct capture {
    int fd;
    char *p;
    size_t len, cap;
};

static void capture_read(struct capture *c)
{
    char buf[8192];
    ssize_t n = read(c->fd, buf, sizeof buf);
    if (n <= 0) {
        if (n < 0 && errno == EINTR)
            return;
        close(c->fd);
        c->fd = -1;
        return;
    }
    if (c->len + (size_t)n + 1 > c->cap) {
        size_t cap = c->cap ? c->cap * 2 : 16384;
        while (cap < c->len + (size_t)n + 1)
            cap *= 2;
        c->p = realloc(c->p, cap);
        if (!c->p)
            st_fail("out of memory");
        c->cap = cap;
    }
    memcpy(c->p + c->len, buf, (size_t)n);
    c->len += (size_t)n;
    c->p[c->len] = '\0';
}

int st_run(char *const argv[], char **ret_out, char **ret_err,
           unsigned timeout_ms)
{
    int po[2], pe[2];
    if (pipe2(po, O_CLOEXEC) < 0 || pipe2(pe, O_CLOEXEC) < 0)
        st_fail("pipe: %s", strerror(errno));
    pid_t pid = st_spawn(argv, -1, po[1], pe[1]);
    close(po[1]);
    close(pe[1]);
    struct capture c[2] = { { .fd = po[0] }, { .fd = pe[0] } };
    uint64_t deadline = st_now_ms() + timeout_ms;
    while (c[0].fd >= 0 || c[1].fd >= 0) {
        struct pollfd p[2];
        int np = 0;
        for (int i = 0; i < 2; i++)
            if (c[i].fd >= 0)
                p[np++] = (struct pollfd){ .fd = c[i].fd, .events = POLLIN };
        uint64_t now = st_now_ms();
        if (now >= deadline) {
            kill(pid, SIGKILL);
            st_wait(pid);
            st_fail("%s %s: no exit within %u ms", argv[0],
                    argv[1] ? argv[1] : "", timeout_ms);
        }
        int n = poll(p, (nfds_t)np, (int)(deadline - now));
        if (n < 0 && errno != EINTR)
            st_fail("poll: %s", strerror(errno));
        for (int k = 0; k < np; k++) {
            if (!p[k].revents)
                continue;
            for (int i = 0; i < 2; i++)
                if (c[i].fd == p[k].fd)
                    capture_read(&c[i]);
        }
    }
    int status = st_wait(pid);
    for (int i = 0; i < 2; i++) {
        char **dst = i == 0 ? ret_out : ret_err;
        if (!c[i].p)
            c[i].p = strdup("");
        if (dst)
            *dst = c[i].p;
        else
            free(c[i].p);
    }
    return status;
}

/* ---- files ------------------------------------------------------------------- */

uint8_t *st_read_file(const char *path, size_t *ret_len)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT)
            return NULL;
        st_fail("open %s: %s", path, strerror(errno));
    }
    struct stat sb;
    if (fstat(fd, &sb) < 0)
        st_fail("stat %s: %s", path, strerror(errno));
    size_t len = (size_t)sb.st_size;
    uint8_t *p = malloc(len ? len : 1);
    if (!p)
        st_fail("out of memory");
    size_t got = 0;
    while (got < len) {
        ssize_t n = read(fd, p + got, len - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            st_fail("read %s: %s", path, n < 0 ? strerror(errno) : "short");
        got += (size_t)n;
    }
    close(fd);
    *ret_len = len;
    return p;
}

void st_write_file(const char *path, const void *p, size_t len)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0)
        st_fail("create %s: %s", path, strerror(errno));
    const uint8_t *b = p;
    while (len > 0) {
        ssize_t n = write(fd, b, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            st_fail("write %s: %s", path, strerror(errno));
        b += n;
        len -= (size_t)n;
    }
    if (close(fd) < 0)
        st_fail("close %s: %s", path, strerror(errno));
}

void st_rmrf(const char *path)
{
    DIR *d = opendir(path);
    if (!d) {
        (void)unlink(path);
        return;
    }
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        char p[4096];
        snprintf(p, sizeof p, "%s/%s", path, e->d_name);
        struct stat sb;
        if (lstat(p, &sb) == 0 && S_ISDIR(sb.st_mode))
            st_rmrf(p);
        else
            (void)unlink(p);
    }
    closedir(d);
    (void)rmdir(path);
}

char *st_mkdtemp(const char *base, const char *tag)
{
    if (!base)
        base = getenv("TMPDIR");
    if (!base || !*base)
        base = "/tmp";
    char *p = NULL;
    if (asprintf(&p, "%s/tally-%s-XXXXXX", base, tag) < 0)
        st_fail("out of memory");
    if (!mkdtemp(p))
        st_fail("mkdtemp %s: %s", p, strerror(errno));
    return p;
}

void st_copy_dir(const char *src, const char *dst)
{
    if (mkdir(dst, 0700) < 0 && errno != EEXIST)
        st_fail("mkdir %s: %s", dst, strerror(errno));
    DIR *d = opendir(src);
    if (!d)
        st_fail("opendir %s: %s", src, strerror(errno));
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        char sp[4096], dp[4096];
        snprintf(sp, sizeof sp, "%s/%s", src, e->d_name);
        snprintf(dp, sizeof dp, "%s/%s", dst, e->d_name);
        struct stat sb;
        if (lstat(sp, &sb) < 0 || !S_ISREG(sb.st_mode))
            continue;
        size_t len;
        uint8_t *p = st_read_file(sp, &len);
        if (p) {
            st_write_file(dp, p, len);
            free(p);
        }
    }
    closedir(d);
}

void st_load_key(const char *path, uint8_t out[static TALLY_KEY_BYTES])
{
    int rc = tally_key_load(path, out);
    if (rc < 0)
        st_fail("loading key %s: %s", path, tally_strerror(rc));
}

/* ---- checking a journal --------------------------------------------------------- */

int st_check_journal(const char *dir, const uint8_t *key, unsigned flags,
                     uint64_t payload_from,
                     uint8_t (*links)[TALLY_HASH_BYTES], uint64_t nlinks,
                     st_journal_check *ret, char *err, size_t errlen)
{
    tally_iter *it = NULL;
    tally_record r;
    uint64_t expect = 1;
    int rc = tally_iter_open(&it, dir, key, 1, flags);
    if (rc < 0) {
        snprintf(err, errlen, "opening a reader on %s: %s", dir,
                 tally_strerror(rc));
        return -1;
    }
    memset(ret, 0, sizeof *ret);
    while ((rc = tally_iter_next(it, &r)) == 1) {
        if (r.seq != expect) {
            snprintf(err, errlen, "%s: seq %" PRIu64 " where %" PRIu64
                     " was expected (%s offset %" PRIu64 ")", dir, r.seq,
                     expect, r.segment, r.offset);
            tally_iter_free(it);
            return -1;
        }
        if (r.seq >= payload_from && r.kind == 1 &&
            (!r.decrypted || !st_payload_ok(r.seq, r.payload, r.payload_len))) {
            snprintf(err, errlen, "%s: seq %" PRIu64 " holds %zu bytes "
                     "\"%.*s\" that are not its payload (%s offset %" PRIu64
                     ")", dir, r.seq, r.payload_len,
                     r.payload ? (int)(r.payload_len < 40 ? r.payload_len : 40) : 15,
                     r.payload ? (const char *)r.payload : "(not decrypted)",
                     r.segment, r.offset);
            tally_iter_free(it);
            return -1;
        }
        if (links && r.seq <= nlinks)
            memcpy(links[r.seq - 1], r.link, TALLY_HASH_BYTES);
        memcpy(ret->head, r.link, TALLY_HASH_BYTES);
        ret->head_seq = r.seq;
        expect++;
    }
    if (rc < 0) {
        snprintf(err, errlen, "reading %s: %s: %s", dir, tally_strerror(rc),
                 tally_iter_errmsg(it));
        tally_iter_free(it);
        return -1;
    }
    tally_iter_free(it);
    ret->records = expect - 1;
    return 0;
}
