/*
 * iolog.c — an LD_PRELOAD shim that logs every write, pwrite, ftruncate,
 * fallocate, fsync, fdatasync, rename and unlink a process makes in one
 * directory,
 * with the data, for the power-loss replayer (powerloss.c, iolog.h).
 *
 *   IOLOG_FILE=log IOLOG_DIR=journal LD_PRELOAD=iolog.so tally append ...
 *
 * Each call is passed to the real libc function first; only what succeeded
 * is logged, in the order the calls completed (one mutex). An fsync records
 * which events it covers: those logged before it was called, so that a
 * write racing with a sync on another thread is never counted as synced.
 * Writes to stdout (fd 1) are logged as acknowledgements before they are
 * made. The log is written with raw syscalls, so logging never recurses.
 */
/* Both open and open64 (etc.) are defined here: with 64-bit file offsets
 * the headers would rename the first into the second. */
#undef _FILE_OFFSET_BITS
#include "iolog.h"

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <unistd.h>

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static int log_fd = -1;
static char dir[PATH_MAX];
static size_t dir_len;
static uint64_t next_index;

#define REAL(ret, name, ...)                                                  \
    static ret (*real_##name)(__VA_ARGS__);                                   \
    static ret (*get_##name(void))(__VA_ARGS__)                               \
    {                                                                         \
        if (!real_##name)                                                     \
            *(void **)&real_##name = dlsym(RTLD_NEXT, #name);                 \
        return real_##name;                                                   \
    }

REAL(ssize_t, write, int, const void *, size_t)
REAL(ssize_t, pwrite, int, const void *, size_t, off_t)
REAL(ssize_t, pwrite64, int, const void *, size_t, off_t)
REAL(int, ftruncate, int, off_t)
REAL(int, ftruncate64, int, off_t)
REAL(int, fallocate, int, int, off_t, off_t)
REAL(int, fallocate64, int, int, off_t, off_t)
REAL(int, posix_fallocate, int, off_t, off_t)
REAL(int, posix_fallocate64, int, off_t, off_t)
REAL(int, fsync, int)
REAL(int, fdatasync, int)
REAL(int, rename, const char *, const char *)
REAL(int, renameat, int, const char *, int, const char *)
REAL(int, renameat2, int, const char *, int, const char *, unsigned)
REAL(int, unlink, const char *)
REAL(int, unlinkat, int, const char *, int)
REAL(int, open, const char *, int, ...)
REAL(int, open64, const char *, int, ...)
REAL(int, openat, int, const char *, int, ...)
REAL(int, openat64, int, const char *, int, ...)

__attribute__((constructor)) static void iolog_init(void)
{
    const char *f = getenv("IOLOG_FILE"), *d = getenv("IOLOG_DIR");
    if (!f || !d)
        return;
    if (!realpath(d, dir))
        return;
    dir_len = strlen(dir);
    log_fd = (int)syscall(SYS_openat, AT_FDCWD, f,
                          O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
}

static void raw_write_all(const void *p, size_t n)
{
    const char *b = p;
    while (n > 0) {
        long w = syscall(SYS_write, log_fd, b, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            abort(); /* a log with a hole would make every replay a lie */
        b += w;
        n -= (size_t)w;
    }
}

/* With mu held. */
static void emit_flags(uint32_t op, uint64_t ino, uint64_t off, uint64_t aux,
                       const char *name, size_t name_len, const void *data,
                       uint64_t len, uint32_t flags)
{
    struct iolog_ev ev = {
        .magic = IOLOG_MAGIC, .op = op, .index = next_index++, .ino = ino,
        .off = off, .len = len, .aux = aux, .name_len = (uint32_t)name_len,
        .flags = flags,
    };
    raw_write_all(&ev, sizeof ev);
    if (name_len)
        raw_write_all(name, name_len);
    if (len)
        raw_write_all(data, (size_t)len);
}

static void emit(uint32_t op, uint64_t ino, uint64_t off, uint64_t aux,
                 const char *name, size_t name_len, const void *data,
                 uint64_t len)
{
    emit_flags(op, ino, off, aux, name, name_len, data, len, 0);
}

/* The path of an fd (from /proc); 0 or -1. */
static int fd_path(int fd, char out[PATH_MAX])
{
    char link[64];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    int saved = errno;
    ssize_t n = readlink(link, out, PATH_MAX - 1);
    errno = saved;
    if (n < 0)
        return -1;
    out[n] = '\0';
    return 0;
}

/* 1 if fd is a file directly inside dir (*ret_name its name), 2 if it is
 * dir itself, 0 otherwise. */
static int fd_where(int fd, const char **ret_name, char buf[PATH_MAX])
{
    if (log_fd < 0 || fd < 0 || fd_path(fd, buf) < 0)
        return 0;
    if (strcmp(buf, dir) == 0)
        return 2;
    if (strncmp(buf, dir, dir_len) == 0 && buf[dir_len] == '/' &&
        !strchr(buf + dir_len + 1, '/')) {
        *ret_name = buf + dir_len + 1;
        return 1;
    }
    return 0;
}

static uint64_t fd_ino(int fd)
{
    struct stat sb;
    int saved = errno;
    uint64_t ino = fstat(fd, &sb) == 0 ? (uint64_t)sb.st_ino : 0;
    errno = saved;
    return ino;
}

/* The name inside dir that (dirfd, path) denotes, or NULL. */
static const char *at_name(int dirfd, const char *path, char buf[PATH_MAX])
{
    if (log_fd < 0 || !path)
        return NULL;
    char base[PATH_MAX];
    if (path[0] == '/') {
        if (snprintf(buf, PATH_MAX, "%s", path) >= PATH_MAX)
            return NULL;
    } else {
        if (dirfd == AT_FDCWD) {
            if (!getcwd(base, sizeof base))
                return NULL;
        } else if (fd_path(dirfd, base) < 0) {
            return NULL;
        }
        if (snprintf(buf, PATH_MAX, "%s/%s", base, path) >= PATH_MAX)
            return NULL;
    }
    char *slash = strrchr(buf, '/');
    if (!slash)
        return NULL;
    *slash = '\0';
    char parent[PATH_MAX];
    int saved = errno;
    char *rp = realpath(buf, parent);
    errno = saved;
    *slash = '/';
    if (!rp || strcmp(parent, dir) != 0)
        return NULL;
    return slash + 1;
}

static void log_open(int fd, int flags)
{
    char buf[PATH_MAX];
    const char *name;
    if (fd < 0 || fd_where(fd, &name, buf) != 1)
        return;
    uint64_t ino = fd_ino(fd);
    pthread_mutex_lock(&mu);
    emit(IOLOG_OPEN, ino, 0, (uint64_t)flags, name, strlen(name), NULL, 0);
    pthread_mutex_unlock(&mu);
}

/* positional: 0 write, 1 pwrite, 2 pwrite64 */
static ssize_t do_write(int fd, const void *p, size_t n, off_t pos, int positional)
{
    char buf[PATH_MAX];
    const char *name;
    if (log_fd >= 0 && fd == 1 && n > 0) {
        pthread_mutex_lock(&mu);
        emit(IOLOG_ACK, 0, 0, 0, NULL, 0, p, n);
        pthread_mutex_unlock(&mu);
    }
    int where = fd_where(fd, &name, buf);
    uint64_t off = 0;
    if (where == 1) {
        if (positional) {
            off = (uint64_t)pos;
        } else {
            int saved = errno;
            int fl = fcntl(fd, F_GETFL);
            struct stat sb;
            if (fl >= 0 && (fl & O_APPEND) && fstat(fd, &sb) == 0)
                off = (uint64_t)sb.st_size;
            else
                off = (uint64_t)lseek(fd, 0, SEEK_CUR);
            errno = saved;
        }
    }
    ssize_t w = positional == 2 ? get_pwrite64()(fd, p, n, pos)
              : positional ? get_pwrite()(fd, p, n, pos)
                           : get_write()(fd, p, n);
    if (where == 1 && w > 0) {
        uint64_t ino = fd_ino(fd);
        pthread_mutex_lock(&mu);
        emit(IOLOG_WRITE, ino, off, 0, NULL, 0, p, (uint64_t)w);
        pthread_mutex_unlock(&mu);
    }
    return w;
}

ssize_t write(int fd, const void *p, size_t n)
{
    return do_write(fd, p, n, 0, 0);
}

ssize_t pwrite(int fd, const void *p, size_t n, off_t off)
{
    return do_write(fd, p, n, off, 1);
}

ssize_t pwrite64(int fd, const void *p, size_t n, off_t off)
{
    return do_write(fd, p, n, off, 2);
}

static int do_truncate(int fd, off_t len, int is64)
{
    int rc = is64 ? get_ftruncate64()(fd, len) : get_ftruncate()(fd, len);
    char buf[PATH_MAX];
    const char *name;
    if (rc == 0 && fd_where(fd, &name, buf) == 1) {
        uint64_t ino = fd_ino(fd);
        pthread_mutex_lock(&mu);
        emit(IOLOG_TRUNC, ino, (uint64_t)len, 0, NULL, 0, NULL, 0);
        pthread_mutex_unlock(&mu);
    }
    return rc;
}

int ftruncate(int fd, off_t len)
{
    return do_truncate(fd, len, 0);
}

int ftruncate64(int fd, off_t len)
{
    return do_truncate(fd, len, 1);
}

/* which: 0 fallocate, 1 fallocate64, 2 posix_fallocate, 3 its 64 */
static int do_falloc(int which, int fd, int mode, off_t off, off_t len)
{
    int rc;
    switch (which) {
    case 0: rc = get_fallocate()(fd, mode, off, len); break;
    case 1: rc = get_fallocate64()(fd, mode, off, len); break;
    case 2: rc = get_posix_fallocate()(fd, off, len); break;
    default: rc = get_posix_fallocate64()(fd, off, len); break;
    }
    char buf[PATH_MAX];
    const char *name;
    if (rc == 0 && fd_where(fd, &name, buf) == 1) {
        uint64_t ino = fd_ino(fd);
        pthread_mutex_lock(&mu);
        emit_flags(IOLOG_FALLOC, ino, (uint64_t)off, (uint64_t)len, NULL, 0,
                   NULL, 0, (uint32_t)mode);
        pthread_mutex_unlock(&mu);
    }
    return rc;
}

int fallocate(int fd, int mode, off_t off, off_t len)
{
    return do_falloc(0, fd, mode, off, len);
}

int fallocate64(int fd, int mode, off_t off, off_t len)
{
    return do_falloc(1, fd, mode, off, len);
}

int posix_fallocate(int fd, off_t off, off_t len)
{
    return do_falloc(2, fd, 0, off, len);
}

int posix_fallocate64(int fd, off_t off, off_t len)
{
    return do_falloc(3, fd, 0, off, len);
}

static int do_sync(int fd, int data_only)
{
    char buf[PATH_MAX];
    const char *name;
    int where = fd_where(fd, &name, buf);
    pthread_mutex_lock(&mu);
    uint64_t covers = next_index;
    pthread_mutex_unlock(&mu);
    int rc = data_only ? get_fdatasync()(fd) : get_fsync()(fd);
    if (rc == 0 && where != 0) {
        uint64_t ino = fd_ino(fd);
        pthread_mutex_lock(&mu);
        emit(IOLOG_FSYNC, ino, (uint64_t)data_only, covers, NULL, 0, NULL, 0);
        pthread_mutex_unlock(&mu);
    }
    return rc;
}

int fsync(int fd)
{
    return do_sync(fd, 0);
}

int fdatasync(int fd)
{
    return do_sync(fd, 1);
}

static int log_rename(int rc, int ofd, const char *old, int nfd,
                      const char *new, unsigned flags)
{
    char b1[PATH_MAX], b2[PATH_MAX];
    if (rc != 0)
        return rc;
    int saved = errno;
    const char *o = at_name(ofd, old, b1), *n = at_name(nfd, new, b2);
    if (o && n) {
        char names[2 * NAME_MAX + 2];
        size_t ol = strlen(o), nl = strlen(n);
        if (ol <= NAME_MAX && nl <= NAME_MAX) {
            memcpy(names, o, ol + 1);
            memcpy(names + ol + 1, n, nl);
            pthread_mutex_lock(&mu);
            emit(IOLOG_RENAME, 0, 0, flags, names, ol + 1 + nl, NULL, 0);
            pthread_mutex_unlock(&mu);
        }
    }
    errno = saved;
    return rc;
}

int rename(const char *old, const char *new)
{
    return log_rename(get_rename()(old, new), AT_FDCWD, old, AT_FDCWD, new, 0);
}

int renameat(int ofd, const char *old, int nfd, const char *new)
{
    return log_rename(get_renameat()(ofd, old, nfd, new), ofd, old, nfd, new, 0);
}

int renameat2(int ofd, const char *old, int nfd, const char *new,
              unsigned flags)
{
    return log_rename(get_renameat2()(ofd, old, nfd, new, flags), ofd, old,
                      nfd, new, flags);
}

static int log_unlink(int rc, int dfd, const char *path)
{
    char b[PATH_MAX];
    if (rc != 0)
        return rc;
    int saved = errno;
    /* The parent still exists after the unlink: resolvable. */
    const char *n = at_name(dfd, path, b);
    if (n) {
        pthread_mutex_lock(&mu);
        emit(IOLOG_UNLINK, 0, 0, 0, n, strlen(n), NULL, 0);
        pthread_mutex_unlock(&mu);
    }
    errno = saved;
    return rc;
}

int unlink(const char *path)
{
    return log_unlink(get_unlink()(path), AT_FDCWD, path);
}

int unlinkat(int dfd, const char *path, int flags)
{
    int rc = get_unlinkat()(dfd, path, flags);
    if (flags & AT_REMOVEDIR)
        return rc;
    return log_unlink(rc, dfd, path);
}

#define OPEN_BODY(call)                                                       \
    mode_t mode = 0;                                                          \
    if (flags & (O_CREAT | __O_TMPFILE)) {                                    \
        va_list ap;                                                           \
        va_start(ap, flags);                                                  \
        mode = (mode_t)va_arg(ap, int);                                       \
        va_end(ap);                                                           \
    }                                                                         \
    int fd = call;                                                            \
    if (fd >= 0) {                                                            \
        int saved = errno;                                                    \
        log_open(fd, flags);                                                  \
        errno = saved;                                                        \
    }                                                                         \
    return fd;

int open(const char *path, int flags, ...)
{
    OPEN_BODY(get_open()(path, flags, mode))
}

int open64(const char *path, int flags, ...)
{
    OPEN_BODY(get_open64()(path, flags, mode))
}

int openat(int dfd, const char *path, int flags, ...)
{
    OPEN_BODY(get_openat()(dfd, path, flags, mode))
}

int openat64(int dfd, const char *path, int flags, ...)
{
    OPEN_BODY(get_openat64()(dfd, path, flags, mode))
}
