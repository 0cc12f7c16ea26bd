/*
 * freescan.c — a test hook, loaded with LD_PRELOAD into a `tally` process:
 * every heap block handed to free() or realloc() is searched for one key
 * (FREESCAN_KEY_HEX: its 32 raw bytes, and its 64 hex digits in lower and
 * upper case) before glibc gets it back. A block that still holds the key
 * was released without being wiped, so the key would linger in freed
 * memory (and in a core dump). Each hit and, at exit, the count are
 * written to FREESCAN_OUT (default stderr). keys-e2e.sh runs the key
 * sources, rekey and forget under it and expects 0 hits.
 *
 * Memory from sodium_malloc is not seen here (it is mmap'd and wiped by
 * sodium_free), which is the point: keys belong there.
 */
#include <fcntl.h>
#include <malloc.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

void __libc_free(void *p);
void *__libc_realloc(void *p, size_t n);

static uint8_t raw[32];
static char hex_lo[64], hex_up[64];
static int armed, out_fd = 2;
static unsigned long hits;

static int nib(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

__attribute__((constructor)) static void freescan_init(void)
{
    const char *h = getenv("FREESCAN_KEY_HEX");
    if (!h || strlen(h) != 64)
        return;
    static const char lo[] = "0123456789abcdef", up[] = "0123456789ABCDEF";
    for (int i = 0; i < 32; i++) {
        int a = nib(h[2 * i]), b = nib(h[2 * i + 1]);
        if (a < 0 || b < 0)
            return;
        raw[i] = (uint8_t)(a << 4 | b);
        hex_lo[2 * i] = lo[a];
        hex_lo[2 * i + 1] = lo[b];
        hex_up[2 * i] = up[a];
        hex_up[2 * i + 1] = up[b];
    }
    const char *o = getenv("FREESCAN_OUT");
    if (o && *o) {
        int fd = open(o, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
        if (fd >= 0)
            out_fd = fd;
    }
    armed = 1;
}

static void report(const char *line)
{
    (void)!write(out_fd, line, strlen(line));
}

static void scan(void *p, const char *op)
{
    size_t n = malloc_usable_size(p);
    const char *what = NULL;
    if (memmem(p, n, raw, sizeof raw))
        what = "raw bytes";
    else if (memmem(p, n, hex_lo, sizeof hex_lo))
        what = "hex";
    else if (memmem(p, n, hex_up, sizeof hex_up))
        what = "HEX";
    if (!what)
        return;
    hits++;
    char line[160];
    snprintf(line, sizeof line,
             "freescan: %s of a %zu-byte block that holds the key (%s)\n", op,
             n, what);
    report(line);
}

void free(void *p)
{
    if (p && armed)
        scan(p, "free");
    __libc_free(p);
}

void *realloc(void *p, size_t n)
{
    if (p && armed)
        scan(p, "realloc");
    return __libc_realloc(p, n);
}

__attribute__((destructor)) static void freescan_fini(void)
{
    if (!armed)
        return;
    char line[64];
    snprintf(line, sizeof line, "freescan: %lu hits\n", hits);
    report(line);
}
