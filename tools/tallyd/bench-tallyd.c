/*
 * bench-tallyd.c — end-to-end appends/s and p50/p99 latency through tallyd
 * over ipc:// with 1, 8 and 64 producers, side by side with direct library
 * appends (tally_append from as many threads) under the same sync policy in
 * the same run, and the publish-to-subscriber latency (record timestamp to
 * delivery in a live follower).
 *
 *   bench-tallyd TALLYD_BINARY [--records N] [--sync POLICY] [--size BYTES]
 *                [--request-window N]
 *
 * --request-window is passed to tallyd (0: no request ids, at least once),
 * to measure what exactly-once costs.
 * Run it on the disk you care about (TMPDIR). Not a test.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <sodium.h>

#include "tally-client.h"
#include "tally.h"

typedef struct run {
    const char *dir;
    tally *t;                 /* direct */
    const char *url;          /* tallyd */
    unsigned producers;
    uint64_t per_producer;
    size_t size;
    uint64_t *lat;            /* ns, per_producer per thread */
    atomic_int errors;
} run;

typedef struct worker {
    run *r;
    unsigned id;
} worker;

static uint64_t mono_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static uint64_t real_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void *worker_main(void *arg)
{
    worker *w = arg;
    run *r = w->r;
    uint8_t *payload = malloc(r->size ? r->size : 1);
    tally_client *c = NULL;
    uint64_t i;

    memset(payload, 'x', r->size);
    if (r->url && tally_client_connect(&c, r->url, NULL) < 0) {
        atomic_fetch_add(&r->errors, 1);
        free(payload);
        return NULL;
    }
    for (i = 0; i < r->per_producer; i++) {
        tally_record_in rec = { .type = 1, .payload = payload,
                                .payload_len = r->size };
        uint64_t t0 = mono_ns();
        int rc = c ? tally_client_append(c, &rec, 1, NULL)
                   : tally_append(r->t, &rec, NULL);

        if (rc < 0)
            atomic_fetch_add(&r->errors, 1);
        r->lat[w->id * r->per_producer + i] = mono_ns() - t0;
    }
    tally_client_close(c);
    free(payload);
    return NULL;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

    return x < y ? -1 : x > y;
}

/* Runs one configuration; returns appends/s, fills p50/p99 in us. */
static double measure(run *r, double *p50, double *p99)
{
    pthread_t th[64];
    worker w[64];
    uint64_t n = r->producers * r->per_producer, t0, t1;

    r->lat = calloc(n, sizeof *r->lat);
    t0 = mono_ns();
    for (unsigned i = 0; i < r->producers; i++) {
        w[i].r = r;
        w[i].id = i;
        pthread_create(&th[i], NULL, worker_main, &w[i]);
    }
    for (unsigned i = 0; i < r->producers; i++)
        pthread_join(th[i], NULL);
    t1 = mono_ns();
    qsort(r->lat, n, sizeof *r->lat, cmp_u64);
    *p50 = (double)r->lat[n / 2] / 1000.0;
    *p99 = (double)r->lat[n * 99 / 100] / 1000.0;
    free(r->lat);
    return (double)n * 1e9 / (double)(t1 - t0);
}

typedef struct sub {
    const char *url;
    volatile int stop;
    uint64_t *lat;
    size_t n, cap;
} sub;

static int sub_record(void *ctx, const tally_client_record *rec)
{
    sub *s = ctx;

    if (s->n < s->cap)
        s->lat[s->n++] = real_ns() - rec->ts_ns;
    return 0;
}

static void *sub_main(void *arg)
{
    sub *s = arg;
    tally_client *c;
    tally_client_follow_options fo;

    if (tally_client_connect(&c, s->url, NULL) < 0)
        return NULL;
    memset(&fo, 0, sizeof fo);
    fo.on_record = sub_record;
    fo.ctx = s;
    fo.stop = &s->stop;
    (void)tally_client_follow(c, &fo);
    tally_client_close(c);
    return NULL;
}

int main(int argc, char **argv)
{
    const char *tallyd, *sync = "batch", *base = getenv("TMPDIR");
    const char *window = "65536";
    uint64_t records = 20000;
    size_t size = 100;
    unsigned counts[3] = { 1, 8, 64 };
    char tmp[256], key[300];
    uint8_t *mk;
    tally_sync_policy pol = TALLY_SYNC_BATCH;

    if (argc < 2) {
        fputs("usage: bench-tallyd TALLYD [--records N] [--sync POLICY] "
              "[--size BYTES] [--request-window N]\n", stderr);
        return 2;
    }
    tallyd = argv[1];
    for (int i = 2; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--records") == 0)
            records = strtoull(argv[i + 1], NULL, 10);
        else if (strcmp(argv[i], "--sync") == 0)
            sync = argv[i + 1];
        else if (strcmp(argv[i], "--size") == 0)
            size = strtoul(argv[i + 1], NULL, 10);
        else if (strcmp(argv[i], "--request-window") == 0)
            window = argv[i + 1];
    }
    if (strcmp(sync, "always") == 0)
        pol = TALLY_SYNC_ALWAYS;
    else if (strcmp(sync, "interval") == 0)
        pol = TALLY_SYNC_INTERVAL;
    else if (strcmp(sync, "none") == 0)
        pol = TALLY_SYNC_NONE;
    if (sodium_init() < 0)
        return 1;
    snprintf(tmp, sizeof tmp, "%s/bench-tallyd-XXXXXX",
             base && *base ? base : "/tmp");
    if (!mkdtemp(tmp))
        return 1;
    snprintf(key, sizeof key, "%s/key", tmp);
    mk = sodium_malloc(TALLY_KEY_BYTES);
    if (tally_keygen(key) < 0 || tally_key_load(key, mk) < 0)
        return 1;
    signal(SIGPIPE, SIG_IGN);

    printf("tallyd over ipc:// vs direct tally_append, sync=%s, %zu-byte "
           "payloads, %" PRIu64 " records per row, request window %s\n\n",
           sync, size, records, window);
    printf("%-9s | %12s %9s %9s | %12s %9s %9s | %6s | %9s %9s\n",
           "producers", "direct/s", "p50 us", "p99 us", "tallyd/s",
           "p50 us", "p99 us", "ratio", "pub p50", "pub p99");
    for (unsigned k = 0; k < 3; k++) {
        char ddir[320], tdir[320];
        tally_options o;
        run r;
        double d_rate, d50, d99, t_rate, t50, t99, s50 = 0, s99 = 0;
        tally_client_urls u;
        pid_t pid;
        pthread_t st;
        sub s;

        memset(&o, 0, sizeof o);
        o.master_key = mk;
        o.sync = pol;
        snprintf(ddir, sizeof ddir, "%s/direct-%u", tmp, counts[k]);
        snprintf(tdir, sizeof tdir, "%s/tallyd-%u", tmp, counts[k]);
        memset(&r, 0, sizeof r);
        r.producers = counts[k];
        r.per_producer = records / counts[k];
        r.size = size;
        if (tally_init(ddir, &o) < 0 || tally_open(&r.t, ddir, &o, NULL) < 0)
            return 1;
        d_rate = measure(&r, &d50, &d99);
        tally_close(r.t);
        r.t = NULL;

        if (tally_init(tdir, &o) < 0 ||
            tally_client_default_urls(tdir, &u) < 0)
            return 1;
        pid = fork();
        if (pid == 0) {
            int fd = open("/dev/null", O_WRONLY);

            dup2(fd, 2);
            execl(tallyd, tallyd, tdir, "--key-file", key, "--sync", sync,
                  "--request-window", window, (char *)NULL);
            _exit(127);
        }
        for (int tries = 0; tries < 100; tries++) {
            tally_client *c;
            tally_client_status ss;
            tally_client_options co = { .timeout_ms = 200 };
            int ok = tally_client_connect(&c, u.append_url, &co) == 0 &&
                     tally_client_status_get(c, &ss) == 0;

            tally_client_close(c);
            if (ok)
                break;
            usleep(50000);
        }
        memset(&s, 0, sizeof s);
        s.url = u.append_url;
        s.cap = records + 16;
        s.lat = calloc(s.cap, sizeof *s.lat);
        pthread_create(&st, NULL, sub_main, &s);
        usleep(300000);
        r.url = u.append_url;
        t_rate = measure(&r, &t50, &t99);
        usleep(500000);
        s.stop = 1;
        pthread_join(st, NULL);
        if (s.n) {
            qsort(s.lat, s.n, sizeof *s.lat, cmp_u64);
            s50 = (double)s.lat[s.n / 2] / 1000.0;
            s99 = (double)s.lat[s.n * 99 / 100] / 1000.0;
        }
        free(s.lat);
        kill(pid, SIGTERM);
        waitpid(pid, NULL, 0);
        printf("%-9u | %12.0f %9.1f %9.1f | %12.0f %9.1f %9.1f | %5.2fx | "
               "%9.1f %9.1f%s\n", counts[k], d_rate, d50, d99, t_rate, t50,
               t99, t_rate / d_rate, s50, s99,
               atomic_load(&r.errors) ? "  (errors!)" : "");
        fflush(stdout);
    }
    printf("\npub: record timestamp (set at commit) to delivery in a live "
           "follower, us\n");
    {
        char cmd[300];

        snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp);
        if (system(cmd) != 0)
            fprintf(stderr, "could not remove %s\n", tmp);
    }
    sodium_free(mk);
    return 0;
}
