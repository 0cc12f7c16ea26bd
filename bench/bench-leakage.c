/*
 * bench-leakage.c — the cost of hiding record sizes and write timing
 * (issue 9, FORMAT.md §4.2, §6.1, §13), each policy next to `none` in the
 * same run.
 *
 *   table 1  padding policies and batched flushes on one workload (payloads
 *            log-uniform from 16 B to 16 KiB, a fixed seed, sync none, one
 *            appender): appends/s, bytes on disk per record and the
 *            overhead against none, replay with the key (records/s and
 *            payload MB/s), and how many distinct frame sizes the operator
 *            sees among the records;
 *   table 2  the latency cost of batched flushes: producers that wait for
 *            durability (sync batch, 4 threads, 256-byte records, a random
 *            pause of 0-4 ms between appends) without batching and with a
 *            flush clock of 1, 10 and 100 ms: append latency p50/p99/max,
 *            appends/s, and bytes on disk per record (PAD blocks).
 *
 * The rounds of table 1 are interleaved (each case once per round, the
 * median reported), so that a drift of a shared machine hits every case
 * alike. Not a test: bench/run.sh leakage builds it in release mode and
 * runs it. Progress on stderr, the tables (markdown) on stdout.
 */
#include <errno.h>
#include <ftw.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <sodium.h>

#include "tally.h"

#define MAX_ROUNDS 9

struct cfg {
    const char *name;
    const char *padding;
    uint32_t flush_ms, flush_block;
};

static const struct cfg cases[] = {
    { "none", "none", 0, 0 },
    { "block:64", "block:64", 0, 0 },
    { "block:512", "block:512", 0, 0 },
    { "block:4096", "block:4096", 0, 0 },
    { "buckets", "buckets", 0, 0 },
    { "none + flush blocks 4K", "none", 0, 4096 },
    { "none + flush clock 10 ms", "none", 10, 0 },
    { "buckets + flush clock 10 ms", "buckets", 10, 0 },
};
#define N_CASES (sizeof cases / sizeof cases[0])

struct result {
    double appends_s, replay_s, replay_mb_s, bytes_per_rec;
    uint64_t distinct;
};

static uint8_t key[TALLY_KEY_BYTES];
static const char *base = NULL;
static size_t *sizes;
static size_t n_records = 20000;
static uint8_t *payload;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int rm_one(const char *p, const struct stat *st, int flag,
                  struct FTW *ftw)
{
    (void)st; (void)flag; (void)ftw;
    return remove(p);
}

static void rmrf(const char *dir)
{
    (void)nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

static char *mkdir_tmp(const char *tag)
{
    char *p = malloc(4096);
    if (!p)
        exit(1);
    snprintf(p, 4096, "%s/bench-leak-%s-XXXXXX", base, tag);
    if (!mkdtemp(p)) {
        perror("mkdtemp");
        exit(1);
    }
    return p;
}

static void die(const char *what, int rc)
{
    fprintf(stderr, "bench-leakage: %s: %s\n", what, tally_strerror(rc));
    exit(1);
}

static uint64_t dir_seg_bytes(const char *dir)
{
    char cmd[4200];
    uint64_t total = 0;
    snprintf(cmd, sizeof cmd, "%s/j", dir);
    for (uint64_t no = 1; no < 100000; no++) {
        char p[4300];
        struct stat st;
        snprintf(p, sizeof p, "%s/%016" PRIx64 ".seg", cmd, no);
        if (stat(p, &st) < 0)
            break;
        total += (uint64_t)st.st_size;
    }
    return total;
}

/* A journal under one case: appends (timed through close), bytes on disk,
 * replay with the key (timed), distinct frame sizes of the records. */
static void run_case(const struct cfg *c, struct result *r)
{
    char *dir = mkdir_tmp("t");
    char jdir[4200];
    snprintf(jdir, sizeof jdir, "%s/j", dir);
    tally_options o;
    memset(&o, 0, sizeof o);
    o.master_key = key;
    if (tally_padding_parse(c->padding, &o.padding) < 0)
        die("padding", -EINVAL);
    int rc = tally_init(jdir, &o);
    if (rc < 0)
        die("init", rc);
    o.sync = TALLY_SYNC_NONE;
    o.flush_interval_ms = c->flush_ms;
    o.flush_block = c->flush_block;
    tally *t;
    double t0 = now_s();
    rc = tally_open(&t, jdir, &o, NULL);
    if (rc < 0)
        die("open", rc);
    for (size_t i = 0; i < n_records; i++) {
        tally_record_in in = { .type = 1, .payload = payload,
                               .payload_len = sizes[i] };
        rc = tally_append(t, &in, NULL);
        if (rc < 0)
            die("append", rc);
    }
    rc = tally_close(t);
    if (rc < 0)
        die("close", rc);
    r->appends_s = (double)n_records / (now_s() - t0);
    r->bytes_per_rec = (double)dir_seg_bytes(dir) / (double)n_records;

    tally_iter *it;
    t0 = now_s();
    rc = tally_iter_open(&it, jdir, key, 0, 0);
    if (rc < 0)
        die("iter", rc);
    tally_record rec;
    uint64_t bytes = 0, n = 0;
    uint32_t *seen = NULL;
    size_t nseen = 0;
    while ((rc = tally_iter_next(it, &rec)) == 1) {
        if (rec.type == TALLY_TYPE_PAD)
            continue;
        n++;
        bytes += rec.payload_len;
        size_t j = 0;
        while (j < nseen && seen[j] != rec.body_len)
            j++;
        if (j == nseen && nseen < 100000) {
            uint32_t *s = realloc(seen, (nseen + 1) * sizeof *s);
            if (!s)
                exit(1);
            seen = s;
            seen[nseen++] = rec.body_len;
        }
    }
    double dt = now_s() - t0;
    if (rc < 0)
        die(tally_iter_errmsg(it), rc);
    tally_iter_free(it);
    if (n != n_records) {
        fprintf(stderr, "bench-leakage: replay gave %" PRIu64 " records\n", n);
        exit(1);
    }
    r->replay_s = (double)n / dt;
    r->replay_mb_s = (double)bytes / dt / 1e6;
    r->distinct = nseen;
    free(seen);
    rmrf(dir);
    free(dir);
}

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmp_d);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

/* ---- latency --------------------------------------------------------------- */

#define PRODUCERS 4

struct lat_run {
    tally *t;
    double until;
    double *lat; /* ms */
    size_t n, cap;
    unsigned seed;
};

static void *producer(void *arg)
{
    struct lat_run *l = arg;
    uint8_t buf[256];
    memset(buf, 0x5a, sizeof buf);
    while (now_s() < l->until) {
        tally_record_in in = { .type = 2, .payload = buf,
                               .payload_len = sizeof buf };
        double t0 = now_s();
        int rc = tally_append(l->t, &in, NULL);
        if (rc < 0)
            die("append (latency)", rc);
        if (l->n == l->cap) {
            l->cap = l->cap ? 2 * l->cap : 1024;
            l->lat = realloc(l->lat, l->cap * sizeof *l->lat);
            if (!l->lat)
                exit(1);
        }
        l->lat[l->n++] = (now_s() - t0) * 1e3;
        usleep((useconds_t)(rand_r(&l->seed) % 4000));
    }
    return NULL;
}

static void run_latency(uint32_t flush_ms, double seconds)
{
    char *dir = mkdir_tmp("l");
    char jdir[4200];
    snprintf(jdir, sizeof jdir, "%s/j", dir);
    tally_options o;
    memset(&o, 0, sizeof o);
    o.master_key = key;
    int rc = tally_init(jdir, &o);
    if (rc < 0)
        die("init", rc);
    o.sync = TALLY_SYNC_BATCH;
    o.flush_interval_ms = flush_ms;
    tally *t;
    rc = tally_open(&t, jdir, &o, NULL);
    if (rc < 0)
        die("open", rc);
    struct lat_run l[PRODUCERS];
    pthread_t th[PRODUCERS];
    double t0 = now_s();
    for (int i = 0; i < PRODUCERS; i++) {
        memset(&l[i], 0, sizeof l[i]);
        l[i].t = t;
        l[i].until = t0 + seconds;
        l[i].seed = (unsigned)(i + 1) * 7919u;
        pthread_create(&th[i], NULL, producer, &l[i]);
    }
    size_t total = 0;
    for (int i = 0; i < PRODUCERS; i++) {
        pthread_join(th[i], NULL);
        total += l[i].n;
    }
    double wall = now_s() - t0;
    rc = tally_close(t);
    if (rc < 0)
        die("close", rc);
    double *all = malloc((total ? total : 1) * sizeof *all);
    size_t k = 0;
    for (int i = 0; i < PRODUCERS; i++) {
        memcpy(all + k, l[i].lat, l[i].n * sizeof *all);
        k += l[i].n;
        free(l[i].lat);
    }
    qsort(all, total, sizeof *all, cmp_d);
    char name[64];
    if (flush_ms)
        snprintf(name, sizeof name, "flush clock %u ms", flush_ms);
    else
        snprintf(name, sizeof name, "no batching");
    printf("| %s | %.2f | %.2f | %.2f | %.0f | %.0f |\n", name,
           total ? all[total / 2] : 0.0,
           total ? all[(size_t)((double)total * 0.99)] : 0.0,
           total ? all[total - 1] : 0.0, (double)total / wall,
           total ? (double)dir_seg_bytes(dir) / (double)total : 0.0);
    fflush(stdout);
    free(all);
    rmrf(dir);
    free(dir);
}

static void usage(FILE *f)
{
    fputs("Usage: bench-leakage [--quick] [--records N] [--rounds R] "
          "[--seconds S] [--dir DIR]\n"
          "  --records N  records per journal in table 1 (default 20000)\n"
          "  --rounds R   interleaved rounds of table 1, median (default 3)\n"
          "  --seconds S  duration of each latency case (default 3)\n"
          "  --dir DIR    where the journals go (default $TMPDIR or /tmp)\n"
          "  --quick      4000 records, 1 round, 1 s latency cases\n", f);
}

int main(int argc, char **argv)
{
    int rounds = 3;
    double seconds = 3;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--quick") == 0) {
            n_records = 4000;
            rounds = 1;
            seconds = 1;
        } else if (strcmp(argv[i], "--records") == 0 && i + 1 < argc) {
            n_records = strtoul(argv[++i], NULL, 10);
        } else if (strcmp(argv[i], "--rounds") == 0 && i + 1 < argc) {
            rounds = atoi(argv[++i]);
        } else if (strcmp(argv[i], "--seconds") == 0 && i + 1 < argc) {
            seconds = atof(argv[++i]);
        } else if (strcmp(argv[i], "--dir") == 0 && i + 1 < argc) {
            base = argv[++i];
        } else if (strcmp(argv[i], "--help") == 0) {
            usage(stdout);
            return 0;
        } else {
            usage(stderr);
            return 2;
        }
    }
    if (n_records == 0 || rounds < 1 || rounds > MAX_ROUNDS || seconds <= 0) {
        usage(stderr);
        return 2;
    }
    if (!base)
        base = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
    if (sodium_init() < 0)
        return 1;
    randombytes_buf(key, sizeof key);

    /* log-uniform payload sizes, 16 B .. 16 KiB, fixed seed */
    sizes = malloc(n_records * sizeof *sizes);
    payload = malloc(16384);
    if (!sizes || !payload)
        return 1;
    randombytes_buf(payload, 16384);
    unsigned seed = 12345;
    uint64_t sum = 0;
    for (size_t i = 0; i < n_records; i++) {
        /* 16 << k, k uniform in 0..9, times 1 + f: near log-uniform */
        double u = (double)rand_r(&seed) / ((double)RAND_MAX + 1) * 10.0;
        int k = (int)u;
        sizes[i] = (size_t)((double)(16u << k) * (1.0 + (u - k)));
        sum += sizes[i];
    }

    printf("## bench-leakage: padding policies and batched flushes\n\n");
    printf("%zu records per journal, payloads log-uniform 16 B - 16 KiB "
           "(mean %.0f B), one appender, sync none; median of %d "
           "interleaved rounds. Bytes on disk include frame headers, links, "
           "tags, padding and PAD records.\n\n", n_records,
           (double)sum / (double)n_records, rounds);
    struct result res[N_CASES][MAX_ROUNDS];
    for (int r = 0; r < rounds; r++)
        for (size_t c = 0; c < N_CASES; c++) {
            fprintf(stderr, "round %d/%d: %s\n", r + 1, rounds, cases[c].name);
            run_case(&cases[c], &res[c][r]);
        }
    double base_bytes = 0, base_app = 0, base_rep = 0;
    printf("| case | appends/s | vs none | bytes on disk / record | vs none "
           "| replay records/s | replay MB/s | distinct frame sizes |\n");
    printf("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n");
    for (size_t c = 0; c < N_CASES; c++) {
        double a[MAX_ROUNDS], b[MAX_ROUNDS], rp[MAX_ROUNDS], mb[MAX_ROUNDS];
        for (int r = 0; r < rounds; r++) {
            a[r] = res[c][r].appends_s;
            b[r] = res[c][r].bytes_per_rec;
            rp[r] = res[c][r].replay_s;
            mb[r] = res[c][r].replay_mb_s;
        }
        double ma = median(a, rounds), mbpr = median(b, rounds),
               mr = median(rp, rounds), mm = median(mb, rounds);
        if (c == 0) {
            base_app = ma;
            base_bytes = mbpr;
            base_rep = mr;
        }
        printf("| %s | %.0f | %.2fx | %.0f | %+.0f%% | %.0f (%.2fx) | %.0f | "
               "%" PRIu64 " |\n", cases[c].name, ma, ma / base_app, mbpr,
               (mbpr / base_bytes - 1) * 100, mr, mr / base_rep, mm,
               res[c][0].distinct);
        fflush(stdout);
    }

    printf("\nLatency of durable appends (sync batch: an append returns once "
           "its record is synced), %d producers of 256-byte records with a "
           "random pause of 0-4 ms, %.0f s per case:\n\n", PRODUCERS, seconds);
    printf("| case | p50 ms | p99 ms | max ms | appends/s | bytes on disk / "
           "record |\n");
    printf("| --- | ---: | ---: | ---: | ---: | ---: |\n");
    uint32_t clocks[] = { 0, 1, 10, 100 };
    for (size_t i = 0; i < sizeof clocks / sizeof clocks[0]; i++) {
        fprintf(stderr, "latency: flush clock %u ms\n", clocks[i]);
        run_latency(clocks[i], seconds);
    }
    free(sizes);
    free(payload);
    return 0;
}
