/*
 * bench-anchor.c — anchored appends (issue 3, checkpoint.h
 * tally_append_anchored) against a real local node with a 1-second block
 * time, next to plain `batch` appends of the same thread counts.
 *
 * Starts ganache through tests/chain/ganache.sh (always stopped at exit, on
 * errors and on SIGINT/SIGTERM too), deploys JournalAnchor from the node's
 * unlocked deterministic account 0, and for 1, 16 and 64 appender threads
 * runs, each case on a fresh journal (sync batch) for --seconds:
 *   anchored  every append returns only once a confirmed anchor covers it;
 *             waiters share one round (one transaction), so the number of
 *             transactions and records per transaction are reported;
 *   batch     tally_append alone (group-committed fdatasync): the reference.
 * The node's measured block interval is the floor of anchored latency. After
 * each anchored case the chain must hold an anchor at or past the highest
 * seq any appender was told was anchored, or the run fails.
 *
 * Not a test: bench/run.sh anchor builds it in release mode and runs it.
 * Progress on stderr, the table (markdown) on stdout.
 */
#include <errno.h>
#include <ftw.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <sodium.h>

#include "checkpoint.h"
#include "tally.h"

#ifndef GANACHE_SH
#define GANACHE_SH "tests/chain/ganache.sh"
#endif
/* ganache --wallet.deterministic account 0, unlocked on the node */
#define DEV_ACCOUNT "0x90F8bf6A479f320ead074411a4B0e7944Ea8c9C1"
#define PAYLOAD_BYTES 256

static char tmp[4096];
static char url[64];
static long node_pid = 0;
static volatile sig_atomic_t got_signal = 0;
static double seconds = 8.0;
static uint32_t poll_ms = 0; /* 0: the library's default, as the CLI uses */
static uint8_t key[TALLY_KEY_BYTES];
static uint8_t contract[TALLY_ADDRESS_BYTES];
static uint8_t account[TALLY_ADDRESS_BYTES];

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

/* Runs at every exit path: the node must never outlive the benchmark. */
static void cleanup(void)
{
    if (node_pid > 0) {
        char cmd[4300];
        snprintf(cmd, sizeof cmd, "'%s' stop %ld", GANACHE_SH, node_pid);
        node_pid = 0;
        int st = system(cmd);
        if (st != 0)
            fprintf(stderr, "bench-anchor: stopping the node failed (%d)\n", st);
    }
    if (tmp[0])
        (void)nftw(tmp, rm_one, 16, FTW_DEPTH | FTW_PHYS);
    tmp[0] = 0;
    sodium_memzero(key, sizeof key);
}

static void die(const char *what, const char *msg)
{
    fprintf(stderr, "bench-anchor: %s: %s\n", what, msg);
    exit(1); /* cleanup() via atexit */
}

static void on_signal(int sig) { got_signal = sig; }

/* Once the node runs, SIGINT/SIGTERM are blocked everywhere and taken
 * here, so the cleanup runs in a normal thread (system() and nftw are not
 * async-signal-safe). */
static void *signal_thread(void *arg)
{
    sigset_t *set = arg;
    int sig = 0;
    sigwait(set, &sig);
    /* A terminal's Ctrl-C also reaches our process group: ignored from
     * now on, also by the `ganache.sh stop` that system() runs. */
    signal(SIGINT, SIG_IGN);
    signal(SIGTERM, SIG_IGN);
    fprintf(stderr, "bench-anchor: signal %d, stopping the node\n", sig);
    cleanup();
    _exit(128 + sig);
}

static void start_node(void)
{
    char cmd[8400];
    snprintf(cmd, sizeof cmd, "'%s' start --block-time 1 --log '%s/node.log'",
             GANACHE_SH, tmp);
    FILE *p = popen(cmd, "r");
    if (!p)
        die("popen", strerror(errno));
    int port = 0;
    if (fscanf(p, "%d %ld", &port, &node_pid) != 2)
        node_pid = 0;
    int st = pclose(p);
    if (WIFEXITED(st) && WEXITSTATUS(st) == 77) {
        fprintf(stderr, "bench-anchor: ganache not installed (scripts/setup.sh)\n");
        exit(77);
    }
    if (got_signal)
        exit(128 + got_signal); /* cleanup() stops a node that started */
    if (node_pid <= 0 || port <= 0)
        die("ganache.sh start", "the node did not come up");
    snprintf(url, sizeof url, "http://127.0.0.1:%d", port);
}

static tally_eth *eth_open(void)
{
    const char *urls[1] = {url};
    tally_eth_options eo = {.rpc_urls = urls, .rpc_count = 1,
                            .chain_id = 1337, .from = account,
                            .poll_ms = poll_ms};
    tally_eth *e = NULL;
    int rc = tally_eth_open(&e, &eo);
    if (rc < 0)
        die("tally_eth_open", tally_strerror(rc));
    return e;
}

struct lat { uint32_t *us; size_t n, cap; };

struct run {
    tally *t;
    tally_checkpointer *cp; /* NULL: plain batch appends */
    double until;
    struct lat *lat;        /* one per thread */
    uint64_t max_seq;       /* highest seq reported anchored */
    pthread_mutex_t mu;
    int err;
};

struct worker { struct run *r; unsigned id; };

static void *appender(void *arg)
{
    struct worker *w = arg;
    struct run *r = w->r;
    struct lat *l = &r->lat[w->id];
    uint8_t payload[PAYLOAD_BYTES];
    randombytes_buf(payload, sizeof payload);
    tally_record_in rec = {.type = 1, .payload = payload,
                           .payload_len = sizeof payload};
    uint64_t top = 0;
    while (now_s() < r->until) {
        uint64_t seq = 0;
        double t0 = now_s();
        int rc = r->cp ? tally_append_anchored(r->t, r->cp, &rec, 60000, &seq)
                       : tally_append(r->t, &rec, &seq);
        double dt = now_s() - t0;
        if (rc < 0) {
            pthread_mutex_lock(&r->mu);
            r->err = rc;
            pthread_mutex_unlock(&r->mu);
            break;
        }
        if (l->n == l->cap) {
            l->cap = l->cap ? l->cap * 2 : 1024;
            l->us = realloc(l->us, l->cap * sizeof *l->us);
            if (!l->us)
                die("realloc", strerror(ENOMEM));
        }
        l->us[l->n++] = (uint32_t)(dt * 1e6);
        if (seq > top)
            top = seq;
    }
    pthread_mutex_lock(&r->mu);
    if (top > r->max_seq)
        r->max_seq = top;
    pthread_mutex_unlock(&r->mu);
    return NULL;
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return (x > y) - (x < y);
}

struct result {
    double rate, p50, p99, max; /* appends/s, ms */
    uint64_t n, txs;
};

/* One case on a fresh journal: threads appenders for `seconds`, anchored or
 * not; the elapsed time includes the rounds still in flight at the end. */
static void run_case(unsigned threads, int anchored, struct result *res)
{
    char dir[4200];
    snprintf(dir, sizeof dir, "%s/%s-%u", tmp, anchored ? "anch" : "batch",
             threads);
    tally_options o = {.master_key = key, .name = dir + strlen(tmp) + 1,
                       .sync = TALLY_SYNC_BATCH};
    int rc = tally_init(dir, &o);
    tally *t = NULL;
    if (rc < 0 || (rc = tally_open(&t, dir, &o, NULL)) < 0)
        die("journal", tally_strerror(rc));

    struct run r = {.t = t, .mu = PTHREAD_MUTEX_INITIALIZER};
    tally_eth *eth = NULL;
    tally_anchor_target *target = NULL;
    uint64_t anchors0 = 0;
    if (anchored) {
        eth = eth_open();
        if ((rc = tally_anchor_target_eth(&target, eth, contract, NULL)) < 0)
            die("anchor target", tally_strerror(rc));
        tally_checkpointer_options co = {0}; /* rounds only when asked */
        if ((rc = tally_checkpointer_start(&r.cp, t, dir, target, &co)) < 0)
            die("checkpointer", tally_strerror(rc));
        /* A warm-up append, not timed: the first round also checks the
         * contract's code and the journal's freshness. */
        uint8_t b = 0;
        tally_record_in w = {.type = 1, .payload = &b, .payload_len = 1};
        if ((rc = tally_append_anchored(t, r.cp, &w, 60000, NULL)) < 0)
            die("warm-up anchored append", tally_strerror(rc));
        tally_checkpoint_status s;
        tally_checkpointer_status(r.cp, &s);
        anchors0 = s.anchors;
    }

    r.lat = calloc(threads, sizeof *r.lat);
    pthread_t *th = calloc(threads, sizeof *th);
    struct worker *ws = calloc(threads, sizeof *ws);
    if (!r.lat || !th || !ws)
        die("calloc", strerror(ENOMEM));
    double t0 = now_s();
    r.until = t0 + seconds;
    for (unsigned i = 0; i < threads; i++) {
        ws[i] = (struct worker){&r, i};
        if (pthread_create(&th[i], NULL, appender, &ws[i]) != 0)
            die("pthread_create", strerror(errno));
    }
    for (unsigned i = 0; i < threads; i++)
        pthread_join(th[i], NULL);
    double elapsed = now_s() - t0;

    memset(res, 0, sizeof *res);
    if (anchored) {
        tally_checkpoint_status s;
        tally_checkpointer_status(r.cp, &s);
        res->txs = s.anchors - anchors0;
        if (r.err)
            die("anchored append", s.last_errmsg[0] ? s.last_errmsg
                                                    : tally_strerror(r.err));
        (void)tally_checkpointer_stop(r.cp);
        /* What the appenders were told must be on the chain. */
        uint8_t jid[TALLY_ID_BYTES];
        tally_anchor an;
        tally_id(t, jid);
        if ((rc = tally_anchor_target_latest(target, jid, &an)) < 0)
            die("anchor latest", tally_anchor_target_errmsg(target));
        if (an.seq < r.max_seq) {
            fprintf(stderr, "bench-anchor: chain holds seq %" PRIu64
                    ", appenders were told %" PRIu64 "\n", an.seq, r.max_seq);
            exit(1);
        }
        tally_anchor_target_free(target);
        tally_eth_close(eth);
    } else if (r.err) {
        die("append", tally_strerror(r.err));
    }
    if ((rc = tally_close(t)) < 0)
        die("close", tally_strerror(rc));
    (void)nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);

    size_t n = 0;
    for (unsigned i = 0; i < threads; i++)
        n += r.lat[i].n;
    uint32_t *all = malloc((n ? n : 1) * sizeof *all);
    if (!all)
        die("malloc", strerror(ENOMEM));
    n = 0;
    for (unsigned i = 0; i < threads; i++) {
        memcpy(all + n, r.lat[i].us, r.lat[i].n * sizeof *all);
        n += r.lat[i].n;
        free(r.lat[i].us);
    }
    qsort(all, n, sizeof *all, cmp_u32);
    res->n = n;
    res->rate = (double)n / elapsed;
    if (n) {
        res->p50 = all[(n - 1) / 2] / 1e3;
        res->p99 = all[(size_t)((double)(n - 1) * 0.99)] / 1e3;
        res->max = all[n - 1] / 1e3;
    }
    free(all);
    free(r.lat);
    free(th);
    free(ws);
}

static void usage(void)
{
    fprintf(stderr, "usage: bench-anchor [--seconds S] [--poll-ms MS] "
            "[--dir DIR]\n");
    exit(2);
}

int main(int argc, char **argv)
{
    const char *base = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
    for (int i = 1; i < argc; i++) {
        if (i + 1 < argc && !strcmp(argv[i], "--seconds"))
            seconds = atof(argv[++i]);
        else if (i + 1 < argc && !strcmp(argv[i], "--poll-ms"))
            poll_ms = (uint32_t)atoi(argv[++i]);
        else if (i + 1 < argc && !strcmp(argv[i], "--dir"))
            base = argv[++i];
        else
            usage();
    }
    if (seconds <= 0)
        usage();
    if (sodium_init() < 0)
        die("sodium_init", "failed");
    snprintf(tmp, sizeof tmp, "%s/bench-anchor-XXXXXX", base);
    if (!mkdtemp(tmp))
        die("mkdtemp", strerror(errno));
    atexit(cleanup);

    /* Until the node's PID is known a signal only sets a flag; ganache.sh
     * and the node get default dispositions (a blocked mask would be
     * inherited and make the node deaf to `ganache.sh stop`'s TERM). */
    struct sigaction sa = {.sa_handler = on_signal};
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    fprintf(stderr, "bench-anchor: starting ganache (block time 1 s)\n");
    start_node();
    static sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    if (got_signal)
        exit(128 + got_signal);
    pthread_t sth;
    if (pthread_create(&sth, NULL, signal_thread, &set) != 0)
        die("pthread_create", strerror(errno));

    if (tally_eth_address_parse(DEV_ACCOUNT, account) < 0)
        die("address", DEV_ACCOUNT);
    randombytes_buf(key, sizeof key);
    tally_eth *eth = eth_open();
    tally_eth_receipt rcpt;
    int rc = tally_anchor_deploy(eth, &rcpt);
    if (rc < 0)
        die("deploy", tally_eth_errmsg(eth));
    memcpy(contract, rcpt.contract, sizeof contract);
    char caddr[TALLY_ADDRESS_STRLEN];
    tally_eth_address_format(contract, caddr);
    fprintf(stderr, "bench-anchor: JournalAnchor at %s (%s)\n", caddr, url);

    double load0[3] = {0}, load1[3] = {0};
    (void)getloadavg(load0, 3);
    uint64_t b0 = 0, b1 = 0;
    double tb0 = now_s();
    if ((rc = tally_eth_block_number(eth, &b0)) < 0)
        die("block number", tally_eth_errmsg(eth));

    static const unsigned counts[] = {1, 16, 64};
    struct result res[3][2];
    for (unsigned c = 0; c < 3; c++)
        for (int a = 1; a >= 0; a--) {
            fprintf(stderr, "bench-anchor: %s, %u appender(s), %.0f s\n",
                    a ? "anchored" : "batch", counts[c], seconds);
            run_case(counts[c], a, &res[c][a]);
        }
    if ((rc = tally_eth_block_number(eth, &b1)) < 0)
        die("block number", tally_eth_errmsg(eth));
    double block_s = b1 > b0 ? (now_s() - tb0) / (double)(b1 - b0) : 0;
    (void)getloadavg(load1, 3);
    tally_eth_close(eth);

    printf("| mode | appenders | appends/s | p50 ms | p99 ms | max ms "
           "| anchor txs | records/tx |\n");
    printf("|---|---:|---:|---:|---:|---:|---:|---:|\n");
    for (unsigned c = 0; c < 3; c++)
        for (int a = 1; a >= 0; a--) {
            const struct result *r = &res[c][a];
            printf("| %s | %u | %.1f | %.1f | %.1f | %.1f | ",
                   a ? "anchored" : "batch (no anchor)", counts[c], r->rate,
                   r->p50, r->p99, r->max);
            if (a)
                printf("%" PRIu64 " | %.1f |\n", r->txs,
                       r->txs ? (double)r->n / (double)r->txs : 0.0);
            else
                printf("- | - |\n");
        }
    printf("| node block time (latency floor) | - | - | %.0f | - | - | - "
           "| - |\n\n", block_s * 1e3);
    printf("%.0f s per case, %d-byte payloads, sync batch, confirmations 1, "
           "receipt poll %u ms%s; block time measured over %" PRIu64
           " blocks (configured 1 s)\n", seconds, PAYLOAD_BYTES,
           poll_ms ? poll_ms : 250u, poll_ms ? "" : " (default)", b1 - b0);
    printf("machine: nproc %ld, load average %.2f %.2f %.2f at start, "
           "%.2f %.2f %.2f at end; journals under %s\n",
           sysconf(_SC_NPROCESSORS_ONLN), load0[0], load0[1], load0[2],
           load1[0], load1[1], load1[2], base);
    fflush(stdout);
    return 0; /* cleanup() stops the node */
}
