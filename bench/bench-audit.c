/*
 * bench-audit.c — the audit benchmark (issue 6, "Benchmark").
 *
 * Builds a large journal (1 GiB by default, --mb to change it) and measures
 * in the same run, over the same segment file bytes (read from the page
 * cache with 1 MiB preads, as the audit reads them):
 *
 *   raw BLAKE2b            the record hash of every frame (header || body)
 *                          and nothing else;
 *   raw chain              the record hash and the link H(prev || record
 *                          hash) compared with the stored one: the least
 *                          a keyless audit does (FORMAT.md §4.4);
 *   audit, no key          tally_audit without the key (structure, chain,
 *                          CHECKPOINT/COMPACTION records);
 *   raw AES-GCM + BLAKE2b  per frame: AES-256-GCM decryption with the real
 *                          segment key (precomputed state, AD = jid ||
 *                          header || prev link) and the record hash: the
 *                          least a keyed audit does;
 *   audit, key             tally_audit with the key (every record opened).
 *
 * Rounds are interleaved and the median of each case is reported, with the
 * ratio audit / raw (target >= 0.7x) and the peak RSS of each audit in a
 * fresh process (its VmHWM), on this journal and, for comparison, on one 16
 * times smaller: constant memory shows as the same RSS.
 *
 * Not a test: bench/run.sh audit [ARGS] builds it in release mode and runs
 * it. Progress goes to stderr, the table to stdout.
 */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <sodium.h>

#include "audit.h"
#include "tally-internal.h"

#define CHUNK (1u << 20)

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void die(const char *what, int rc)
{
    fprintf(stderr, "bench-audit: %s: %s\n", what, tally_strerror(rc));
    exit(1);
}

/* ---- the journal ------------------------------------------------------------ */

static uint64_t build(const char *dir, const uint8_t *key, uint64_t bytes,
                      size_t payload)
{
    tally_options o;
    memset(&o, 0, sizeof o);
    o.master_key = key;
    o.sync = TALLY_SYNC_NONE;
    int rc = tally_init(dir, &o);
    if (rc < 0)
        die("init", rc);
    tally *t;
    rc = tally_open(&t, dir, &o, NULL);
    if (rc < 0)
        die("open", rc);
    enum { B = 256 };
    size_t pool_len = CHUNK + payload;
    uint8_t *pool = malloc(pool_len);
    if (!pool)
        die("malloc", -ENOMEM);
    randombytes_buf(pool, pool_len);
    tally_record_in recs[B];
    memset(recs, 0, sizeof recs);
    uint64_t done = 0, n = 0, frame = payload + 16 + 16 + 64;
    while (done < bytes) {
        for (int i = 0; i < B; i++) {
            recs[i].type = 1;
            recs[i].payload = pool + (size_t)((n + (uint64_t)i) * 977u) % CHUNK;
            recs[i].payload_len = payload;
        }
        rc = tally_append_batch(t, recs, B, NULL);
        if (rc < 0)
            die("append", rc);
        n += B;
        done += B * frame;
    }
    rc = tally_close(t);
    if (rc < 0)
        die("close", rc);
    free(pool);
    return n;
}

/* ---- the raw loops ------------------------------------------------------------------ */

typedef struct raw {
    const uint8_t *key; /* NULL: hash only */
    int chain;          /* also the link H(prev || record hash), compared */
    int dirfd;
    ti_meta meta;
    uint8_t dk[32];
    crypto_aead_aes256gcm_state *gcm;
    uint8_t *buf, *plain;
    uint64_t frames, bytes;
} raw;

/* Reads every segment file of dir in 1 MiB preads and, per frame, hashes
 * header || body (and with the key decrypts the body first). */
static void raw_pass(raw *r)
{
    char **names;
    size_t n;
    if (ti_seg_list(r->dirfd, &names, &n) < 0)
        die("list", -EIO);
    uint8_t link[32], rh[32], ad[96], nonce[12];
    r->frames = r->bytes = 0;
    for (size_t f = 0; f < n; f++) {
        int fd = openat(r->dirfd, names[f], O_RDONLY | O_CLOEXEC);
        if (fd < 0)
            die(names[f], -errno);
        uint64_t off = 0;  /* file offset of buf[0] */
        size_t len = 0, pos = 0;
        for (;;) {
            /* Make [pos, pos + 32) and then the whole frame available. */
            size_t need = 32;
            for (int pass = 0; pass < 2; pass++) {
                if (pos + need > len) {
                    memmove(r->buf, r->buf + pos, len - pos);
                    off += pos;
                    len -= pos;
                    pos = 0;
                    ssize_t got = ti_pread_full(fd, r->buf + len,
                                                CHUNK + TF_MAX_BODY + 64 - len,
                                                off + len);
                    if (got < 0)
                        die("read", (int)got);
                    len += (size_t)got;
                }
                if (pos + need > len)
                    break;
                if (pass == 0) {
                    if (memcmp(r->buf + pos, TF_SEG_MAGIC, 8) == 0)
                        need = TF_SEG_HEADER_BYTES;
                    else
                        need = 64 + le32_get(r->buf + pos + 24);
                }
            }
            if (pos + need > len)
                break; /* end of file */
            const uint8_t *p = r->buf + pos;
            if (memcmp(p, TF_SEG_MAGIC, 8) == 0) {
                memcpy(link, p + 96, 32);
                if (r->key) {
                    uint8_t sk[32];
                    ti_derive_segment_key(sk, r->dk, r->meta.jid,
                                          le64_get(p + 24), p + 48);
                    crypto_aead_aes256gcm_beforenm(r->gcm, sk);
                    sodium_memzero(sk, sizeof sk);
                }
                pos += TF_SEG_HEADER_BYTES;
                continue;
            }
            uint32_t bl = le32_get(p + 24);
            if (r->key && p[4] == TF_KIND_SEALED) {
                memcpy(ad, r->meta.jid, 32);
                memcpy(ad + 32, p, 32);
                memcpy(ad + 64, link, 32);
                memcpy(nonce, p + 8, 8);
                memset(nonce + 8, 0, 4);
                if (crypto_aead_aes256gcm_decrypt_detached_afternm(
                        r->plain, NULL, p + 32, bl - 16, p + 32 + bl - 16, ad,
                        sizeof ad, nonce, r->gcm) != 0)
                    die("raw decrypt", TALLY_EINTEGRITY);
            }
            crypto_generichash(rh, 32, p, 32 + (size_t)bl, NULL, 0);
            if (r->chain) {
                uint8_t m[64], l[32];
                memcpy(m, link, 32);
                memcpy(m + 32, rh, 32);
                crypto_generichash(l, 32, m, 64, NULL, 0);
                if (memcmp(l, p + 32 + bl, 32) != 0)
                    die("raw chain", TALLY_EINTEGRITY);
            }
            memcpy(link, p + 32 + bl, 32);
            r->frames++;
            pos += need;
        }
        r->bytes += off + pos;
        close(fd);
    }
    ti_seg_list_free(names, n);
    if (rh[0] == 0 && rh[1] == 0 && rh[2] == 0 && rh[3] == 0)
        fputc(' ', stderr); /* keeps the hash live */
}

static void raw_open(raw *r, const char *dir, const uint8_t *key)
{
    memset(r, 0, sizeof *r);
    r->key = key;
    r->dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (r->dirfd < 0)
        die(dir, -errno);
    int rc = ti_meta_read(r->dirfd, key, &r->meta, NULL, 0);
    if (rc < 0)
        die("meta", rc);
    if (key) {
        rc = ti_epoch_unwrap(&r->meta.epochs[0], key, r->meta.jid, r->dk);
        if (rc < 0)
            die("unwrap", rc);
    }
    r->gcm = sodium_malloc(sizeof *r->gcm);
    r->buf = malloc(CHUNK + TF_MAX_BODY + 64);
    r->plain = malloc(TF_MAX_BODY);
    if (!r->gcm || !r->buf || !r->plain)
        die("malloc", -ENOMEM);
}

static void raw_close(raw *r)
{
    close(r->dirfd);
    ti_meta_free(&r->meta);
    sodium_memzero(r->dk, sizeof r->dk);
    sodium_free(r->gcm);
    free(r->buf);
    free(r->plain);
}

/* ---- measuring ------------------------------------------------------------------------ */

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static uint64_t median(uint64_t *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmp_u64);
    return v[n / 2];
}

static uint64_t time_audit(const char *dir, const uint8_t *key,
                           uint64_t *ret_records, uint64_t *ret_bytes)
{
    tally_audit_options o;
    memset(&o, 0, sizeof o);
    o.master_key = key;
    tally_audit_report *r = calloc(1, sizeof *r);
    uint64_t t0 = now_ns();
    int rc = tally_audit(dir, &o, r);
    uint64_t t = now_ns() - t0;
    if (rc < 0) {
        fprintf(stderr, "bench-audit: audit: %s\n", r->message);
        exit(1);
    }
    *ret_records = r->records;
    *ret_bytes = r->bytes;
    free(r);
    return t;
}

/* Peak RSS (KiB) of one audit in a fresh process: this program run again
 * with --rss-child (the key through a pipe on fd 3, never in argv), which
 * reports the VmHWM of its own image on fd 4. (wait4's ru_maxrss would
 * count the pages it shared with this process before exec.) */
static long audit_rss(const char *dir, const uint8_t *key)
{
    int kp[2], rp[2];
    if (pipe(kp) < 0 || pipe(rp) < 0)
        die("pipe", -errno);
    pid_t pid = fork();
    if (pid < 0)
        die("fork", -errno);
    if (pid == 0) {
        close(kp[1]);
        close(rp[0]);
        if (dup2(kp[0], 3) < 0 || dup2(rp[1], 4) < 0)
            _exit(126);
        execl("/proc/self/exe", "bench-audit", "--rss-child", dir,
              key ? "key" : "nokey", (char *)NULL);
        _exit(127);
    }
    close(kp[0]);
    close(rp[1]);
    if (key && write(kp[1], key, TALLY_KEY_BYTES) != TALLY_KEY_BYTES)
        die("pipe write", -errno);
    close(kp[1]);
    char buf[64] = "";
    ssize_t n = read(rp[0], buf, sizeof buf - 1);
    close(rp[0]);
    int st;
    if (waitpid(pid, &st, 0) < 0 || !WIFEXITED(st) || WEXITSTATUS(st) != 0 ||
        n <= 0)
        die("audit child", -EIO);
    return strtol(buf, NULL, 10);
}

static int rss_child(const char *dir, const char *mode)
{
    if (sodium_init() < 0)
        return 1;
    uint8_t *key = NULL;
    if (strcmp(mode, "key") == 0) {
        key = sodium_malloc(TALLY_KEY_BYTES);
        if (!key || read(3, key, TALLY_KEY_BYTES) != TALLY_KEY_BYTES)
            return 1;
    }
    tally_audit_options o;
    memset(&o, 0, sizeof o);
    o.master_key = key;
    tally_audit_report r;
    int rc = tally_audit(dir, &o, &r);
    if (key)
        sodium_free(key);
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long hwm = -1;
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "VmHWM: %ld kB", &hwm) == 1)
            break;
    if (f)
        fclose(f);
    dprintf(4, "%ld\n", hwm);
    return rc == 0 && hwm > 0 ? 0 : 1;
}

static int rm_one(const char *p, const struct stat *s, int f, struct FTW *w)
{
    (void)s;
    (void)f;
    (void)w;
    return remove(p);
}

static void usage(FILE *f)
{
    fputs("Usage: bench-audit [--mb N] [--payload BYTES] [--rounds N] "
          "[--dir DIR] [--keep]\n"
          "  --mb N           journal size in MiB (default 1024)\n"
          "  --payload BYTES  payload of each record (default 1024)\n"
          "  --rounds N       interleaved rounds, median reported (default 3)\n"
          "  --dir DIR        where to build it (default $TMPDIR or /tmp)\n"
          "  --keep           leave the journals there\n", f);
}

int main(int argc, char **argv)
{
    uint64_t mb = 1024;
    size_t payload = 1024;
    int rounds = 3, keep = 0;
    const char *base = getenv("TMPDIR");
    if (!base || !*base)
        base = "/tmp";
    if (argc == 4 && !strcmp(argv[1], "--rss-child"))
        return rss_child(argv[2], argv[3]);
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--mb") && i + 1 < argc)
            mb = strtoull(argv[++i], NULL, 10);
        else if (!strcmp(argv[i], "--payload") && i + 1 < argc)
            payload = strtoul(argv[++i], NULL, 10);
        else if (!strcmp(argv[i], "--rounds") && i + 1 < argc)
            rounds = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--dir") && i + 1 < argc)
            base = argv[++i];
        else if (!strcmp(argv[i], "--keep"))
            keep = 1;
        else if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            usage(stdout);
            return 0;
        } else {
            usage(stderr);
            return 2;
        }
    }
    if (mb == 0 || payload == 0 || payload > TALLY_MAX_PAYLOAD || rounds < 1 ||
        rounds > 50) {
        usage(stderr);
        return 2;
    }
    if (sodium_init() < 0 || !crypto_aead_aes256gcm_is_available()) {
        fputs("bench-audit: AES-256-GCM is not available on this CPU\n", stderr);
        return 1;
    }
    uint8_t *key = sodium_malloc(TALLY_KEY_BYTES);
    randombytes_buf(key, TALLY_KEY_BYTES);

    char tmpl[4096];
    snprintf(tmpl, sizeof tmpl, "%s/tally-bench-audit-XXXXXX", base);
    if (!mkdtemp(tmpl))
        die(tmpl, -errno);
    char big[4200], small[4200];
    snprintf(big, sizeof big, "%s/big", tmpl);
    snprintf(small, sizeof small, "%s/small", tmpl);
    fprintf(stderr, "building a %" PRIu64 " MiB journal (%zu-byte payloads) "
            "in %s ...\n", mb, payload, big);
    uint64_t t0 = now_ns();
    uint64_t nrec = build(big, key, mb << 20, payload);
    fprintf(stderr, "  %" PRIu64 " records in %.1f s\n", nrec,
            (double)(now_ns() - t0) / 1e9);
    build(small, key, (mb << 20) / 16, payload);

    raw rb, rc, rk;
    raw_open(&rb, big, NULL);
    raw_open(&rc, big, NULL);
    rc.chain = 1;
    raw_open(&rk, big, key);
    raw_pass(&rb); /* warm the page cache */

    uint64_t *t_rc = calloc((size_t)rounds, 8);
    uint64_t *t_rb = calloc((size_t)rounds, 8), *t_an = calloc((size_t)rounds, 8),
             *t_rk = calloc((size_t)rounds, 8), *t_ak = calloc((size_t)rounds, 8);
    uint64_t recs = 0, bytes = 0, r2, b2;
    for (int i = 0; i < rounds; i++) {
        fprintf(stderr, "round %d/%d\n", i + 1, rounds);
        uint64_t s = now_ns();
        raw_pass(&rb);
        t_rb[i] = now_ns() - s;
        s = now_ns();
        raw_pass(&rc);
        t_rc[i] = now_ns() - s;
        t_an[i] = time_audit(big, NULL, &recs, &bytes);
        s = now_ns();
        raw_pass(&rk);
        t_rk[i] = now_ns() - s;
        t_ak[i] = time_audit(big, key, &r2, &b2);
        if (rb.frames != recs || rk.frames != recs || r2 != recs ||
            rb.bytes != bytes) {
            fprintf(stderr, "bench-audit: the loops saw different journals "
                    "(%" PRIu64 "/%" PRIu64 " frames, %" PRIu64 "/%" PRIu64
                    " bytes)\n", rb.frames, recs, rb.bytes, bytes);
            return 1;
        }
    }
    long rss_nk = audit_rss(big, NULL), rss_k = audit_rss(big, key);
    long rss_nk_s = audit_rss(small, NULL), rss_k_s = audit_rss(small, key);

    uint64_t m_rc = median(t_rc, rounds);
    uint64_t m_rb = median(t_rb, rounds), m_an = median(t_an, rounds),
             m_rk = median(t_rk, rounds), m_ak = median(t_ak, rounds);
    double mbytes = (double)bytes / 1e6;
#define MBS(t) (mbytes / ((double)(t) / 1e9))
#define RPS(t) ((double)recs / ((double)(t) / 1e9))
    printf("bench-audit: %" PRIu64 " records of %zu bytes, %.1f MB of segment "
           "files (page cache), %d interleaved rounds, median; libsodium %s\n\n",
           recs, payload, mbytes, rounds, sodium_version_string());
    printf("| case | MB/s | records/s | audit / raw | target | peak RSS |\n");
    printf("| --- | ---: | ---: | ---: | --- | ---: |\n");
    printf("| raw BLAKE2b (record hash per frame) | %.0f | %.0f | | | |\n",
           MBS(m_rb), RPS(m_rb));
    printf("| raw chain (record hash + link, §4.4) | %.0f | %.0f | | | |\n",
           MBS(m_rc), RPS(m_rc));
    double q1 = (double)m_rb / (double)m_an, q2 = (double)m_rk / (double)m_ak;
    printf("| audit, no key | %.0f | %.0f | %.2fx | >= 0.7x %s | %.1f MiB "
           "(%.1f MiB at 1/16 the size) |\n",
           MBS(m_an), RPS(m_an), q1, q1 >= 0.7 ? "met" : "MISSED",
           rss_nk / 1024.0, rss_nk_s / 1024.0);
    printf("| raw AES-256-GCM decrypt + BLAKE2b | %.0f | %.0f | | | |\n",
           MBS(m_rk), RPS(m_rk));
    printf("| audit, key | %.0f | %.0f | %.2fx | >= 0.7x %s | %.1f MiB "
           "(%.1f MiB at 1/16 the size) |\n",
           MBS(m_ak), RPS(m_ak), q2, q2 >= 0.7 ? "met" : "MISSED",
           rss_k / 1024.0, rss_k_s / 1024.0);

    raw_close(&rb);
    raw_close(&rc);
    raw_close(&rk);
    free(t_rb);
    free(t_rc);
    free(t_an);
    free(t_rk);
    free(t_ak);
    sodium_free(key);
    if (!keep)
        nftw(tmpl, rm_one, 16, FTW_DEPTH | FTW_PHYS);
    else
        fprintf(stderr, "kept %s\n", tmpl);
    return q1 >= 0.7 && q2 >= 0.7 ? 0 : 3;
}
