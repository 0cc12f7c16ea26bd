/*
 * bench-journal.c — the journal benchmark (issue 2, "Benchmark").
 *
 * One run measures, side by side and with 256-byte payloads, what bounds
 * the journal and what the journal achieves, and prints one markdown table:
 *
 *   limits   the CPU loop (AES-256-GCM with precomputed state + BLAKE2b
 *            record hash + BLAKE2b link, framed exactly as FORMAT.md §4.2-4.4
 *            into memory), its inverse for replay (hash check + decrypt) and
 *            for a keyless verify (hash check only); the disk (write() +
 *            fdatasync() of one 352-byte frame on a preallocated file);
 *   peer     SQLite, WAL mode, synchronous=FULL, one 256-byte row per
 *            transaction;
 *   tally    append under NONE, ALWAYS and BATCH (64 threads), replay with
 *            the key, verify without it, and the peak RSS of replay and
 *            verify on a small and a large journal (each in a forked child,
 *            read back with wait4()).
 *
 * The machine may be shared, so: the rate cases run in interleaved rounds
 * of short slices (a drift of the disk hits every case alike), CPU-bound
 * cases are rated per second of CPU time they used (wall rates in the
 * notes), and the sync cases also get paired per-round ratios.
 *
 * Not a test: bench/run.sh builds it in release mode and runs it. Progress
 * goes to stderr, the machine description and the table to stdout. Exit
 * status: 0 the run completed (whatever the verdicts), 1 a case failed to
 * run, 2 usage, 130 interrupted.
 */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stddef.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/types.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <sodium.h>
#include <sqlite3.h>

#include "tally.h"

/* Sizes of one record as tally stores it (FORMAT.md §4.2): a 16-byte
 * envelope header before the payload, a 16-byte tag, a 32-byte frame header
 * and the 32-byte link after the body. */
#define PAYLOAD    256u
#define ENV_LEN    (16u + PAYLOAD)              /* 272: plaintext */
#define BODY_LEN   (ENV_LEN + 16u)              /* 288: ciphertext + tag */
#define FHDR_LEN   32u
#define FRAME_LEN  (FHDR_LEN + BODY_LEN + 32u)  /* 352 */
#define AD_LEN     96u                          /* jid || header || prev */

static volatile sig_atomic_t interrupted;

static void on_signal(int sig)
{
    (void)sig;
    interrupted = 1;
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* CPU time of the whole process (every thread, user + system). */
static double cpu_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void put_le32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static void put_le64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static uint32_t get_le32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
           (uint32_t)p[3] << 24;
}

/* ---- configuration and results ----------------------------------------- */

enum {
    C_LIMITS = 1u << 0,
    C_DISK = 1u << 1,
    C_SQLITE = 1u << 2,
    C_NONE = 1u << 3,
    C_ALWAYS = 1u << 4,
    C_BATCH = 1u << 5,
    C_READ = 1u << 6, /* replay, verify and their RSS */
    C_ALL = (1u << 7) - 1,
};

static const struct {
    const char *name;
    unsigned bit;
} case_names[] = {
    { "limits", C_LIMITS }, { "disk", C_DISK },     { "sqlite", C_SQLITE },
    { "none", C_NONE },     { "always", C_ALWAYS }, { "batch", C_BATCH },
    { "read", C_READ },
};

typedef struct cfg {
    char base[1024]; /* the mkdtemp'd work directory */
    int quick;
    unsigned cases;
    int threads;
    uint64_t small_mb, big_mb;
    double cpu_secs;  /* each in-memory loop, all rounds together */
    double sync_secs; /* each case that syncs, all rounds together */
    uint8_t *key;     /* sodium_malloc'd master key */
    uint8_t payload[PAYLOAD];
    pid_t fk_pid;     /* the process the reading children are forked from */
    int fk_req, fk_resp;
} cfg;

#define MAX_SLICES 64

/* One measured figure; rate < 0 means "not run", err != 0 "failed". */
typedef struct fig {
    double rate; /* records (or rows, acked appends) per second */
    uint64_t n;
    double secs;
    double cpu_secs; /* > 0: a CPU-bound case, rate is per CPU second */
    double round_rate[MAX_SLICES]; /* interleaved cases: rate per round */
    int rounds;
    int err;
    char note[512];
} fig;

typedef struct results {
    fig cpu, replay_lim, verify_lim;
    fig disk, disk_grow, disk_zero, group;
    fig sqlite;
    fig none, none_close, always, batch;
    fig replay, verify;
    long rss_replay_small, rss_replay_big; /* KiB; < 0 not measured */
    long rss_verify_small, rss_verify_big;
    long rss_base;                         /* child's RSS before reading */
    double big_mb_real, small_mb_real;
} results;

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* The median over the rounds of a's rate / b's rate in the same round: the
 * two ran a second or less apart, so a burst of load on the disk hits both
 * and cancels out, which the ratio of totals does not. -1 if unknown. */
static double paired_median(const fig *a, const fig *b)
{
    double v[MAX_SLICES];
    int n = 0;

    if (a->err || b->err)
        return -1;
    for (int r = 0; r < a->rounds && r < b->rounds; r++)
        if (a->round_rate[r] > 0 && b->round_rate[r] > 0)
            v[n++] = a->round_rate[r] / b->round_rate[r];
    if (n < 2)
        return -1;
    qsort(v, (size_t)n, sizeof v[0], cmp_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

static void fig_init(fig *f)
{
    memset(f, 0, sizeof *f);
    f->rate = -1;
}

static void fig_done(fig *f, uint64_t n, double secs)
{
    f->n = n;
    f->secs = secs;
    f->rate = secs > 0 ? (double)n / secs : 0;
}

/* A CPU-bound case is rated by the CPU time it used: on a shared machine
 * other processes steal wall time from it, not CPU time, and the ratios of
 * such cases to their limits would otherwise measure the neighbours. The
 * wall-clock rate goes into the note. */
static void fig_done_cpu(fig *f, uint64_t n, double secs, double cpu_secs)
{
    fig_done(f, n, secs);
    if (cpu_secs <= 0)
        return;
    f->cpu_secs = cpu_secs;
    f->rate = (double)n / cpu_secs;
    snprintf(f->note, sizeof f->note,
             "%.0f records/s wall clock, on CPU %.0f%% of the time",
             secs > 0 ? (double)n / secs : 0,
             secs > 0 ? 100.0 * cpu_secs / secs : 0);
}

static void fig_fail(fig *f, int err, const char *what, const char *detail)
{
    f->err = err ? err : -1;
    f->rate = -1;
    snprintf(f->note, sizeof f->note, "%s: %s%s%.200s", what,
             tally_strerror(f->err), detail && *detail ? " — " : "", detail ? detail : "");
}

/* ---- the simulated chain: the CPU and replay limits ---------------------- */

typedef struct chain {
    crypto_aead_aes256gcm_state st; /* aligned by its typedef */
    uint8_t jid[32];
    uint8_t link[32];
} chain;

static void chain_init(chain *c, const uint8_t key[32])
{
    crypto_aead_aes256gcm_beforenm(&c->st, key);
    randombytes_buf(c->jid, sizeof c->jid);
    crypto_generichash(c->link, 32, c->jid, sizeof c->jid, NULL, 0);
}

static void frame_header(uint8_t *h, uint64_t seq)
{
    memcpy(h, "TFRM", 4);
    h[4] = 1; /* SEALED */
    h[5] = 0;
    h[6] = h[7] = 0;
    put_le64(h + 8, seq);
    put_le64(h + 16, 1700000000000000000ull + seq);
    put_le32(h + 24, BODY_LEN);
    put_le32(h + 28, 0);
}

static void make_env(uint8_t env[ENV_LEN], const uint8_t *payload, uint64_t seq)
{
    memset(env, 0, 16);
    env[0] = 1; /* type 1 */
    put_le32(env + 4, PAYLOAD);
    put_le32(env + 8, PAYLOAD);
    memcpy(env + 16, payload, PAYLOAD);
    put_le64(env + 16, seq); /* records differ */
}

/* What tally_append must do per record at the least: frame, encrypt with
 * the FORMAT.md §4.3 nonce and AD, hash, link. */
static void chain_seal(chain *c, uint64_t seq, const uint8_t env[ENV_LEN],
                       uint8_t frame[FRAME_LEN])
{
    uint8_t ad[AD_LEN], nonce[12] = { 0 }, two[64];
    unsigned long long clen;

    frame_header(frame, seq);
    memcpy(ad, c->jid, 32);
    memcpy(ad + 32, frame, FHDR_LEN);
    memcpy(ad + 64, c->link, 32);
    put_le64(nonce, seq);
    crypto_aead_aes256gcm_encrypt_afternm(frame + FHDR_LEN, &clen, env,
                                          ENV_LEN, ad, AD_LEN, NULL, nonce,
                                          &c->st);
    memcpy(two, c->link, 32);
    crypto_generichash(two + 32, 32, frame, FHDR_LEN + BODY_LEN, NULL, 0);
    crypto_generichash(c->link, 32, two, 64, NULL, 0);
    memcpy(frame + FHDR_LEN + BODY_LEN, c->link, 32);
}

/* What replay must do per record at the least: check the header, hash,
 * link, compare, decrypt, read the envelope. decrypt = 0 is a keyless
 * verify. Returns 0, or -1 on a mismatch. */
static int chain_open(chain *c, uint64_t seq, const uint8_t *frame,
                      uint8_t env[ENV_LEN], int decrypt)
{
    uint8_t ad[AD_LEN], nonce[12] = { 0 }, two[64];
    unsigned long long mlen;

    if (memcmp(frame, "TFRM", 4) != 0 || get_le32(frame + 24) != BODY_LEN)
        return -1;
    memcpy(two, c->link, 32);
    crypto_generichash(two + 32, 32, frame, FHDR_LEN + BODY_LEN, NULL, 0);
    if (decrypt) {
        memcpy(ad, c->jid, 32);
        memcpy(ad + 32, frame, FHDR_LEN);
        memcpy(ad + 64, c->link, 32);
    }
    crypto_generichash(c->link, 32, two, 64, NULL, 0);
    if (sodium_memcmp(c->link, frame + FHDR_LEN + BODY_LEN, 32) != 0)
        return -1;
    if (!decrypt)
        return 0;
    put_le64(nonce, seq);
    if (crypto_aead_aes256gcm_decrypt_afternm(env, &mlen, NULL,
                                              frame + FHDR_LEN, BODY_LEN, ad,
                                              AD_LEN, nonce, &c->st) != 0)
        return -1;
    return get_le32(env + 4) == PAYLOAD ? 0 : -1;
}

/* The replay and verify limits: walk an in-memory journal of 32768 frames
 * (11.5 MB, more than the caches hold, as a replay streams) repeatedly. */
static void bench_read_limits(const cfg *cf, results *r)
{
    enum { NFR = 32768 };
    uint8_t *mem = malloc((size_t)NFR * FRAME_LEN), env[ENV_LEN];
    chain *w = sodium_malloc(sizeof *w), *c = sodium_malloc(sizeof *c);
    uint8_t link0[32];

    if (!mem || !w || !c) {
        fig_fail(&r->replay_lim, -ENOMEM, "replay limit", NULL);
        goto out;
    }
    chain_init(w, cf->key);
    memcpy(link0, w->link, 32);
    for (uint64_t i = 0; i < NFR; i++) {
        make_env(env, cf->payload, i + 1);
        chain_seal(w, i + 1, env, mem + i * FRAME_LEN);
    }
    *c = *w;
    for (int decrypt = 1; decrypt >= 0; decrypt--) {
        fig *f = decrypt ? &r->replay_lim : &r->verify_lim;
        uint64_t n = 0;
        double t0 = now(), t1 = t0, end = t0 + cf->cpu_secs, c0 = cpu_now();
        while (t1 < end && !interrupted) {
            memcpy(c->link, link0, 32);
            for (uint64_t i = 0; i < NFR; i++)
                if (chain_open(c, i + 1, mem + i * FRAME_LEN, env, decrypt)) {
                    fig_fail(f, -EBADMSG, "read limit", "frame mismatch");
                    goto out;
                }
            n += NFR;
            t1 = now();
        }
        fig_done_cpu(f, n, t1 - t0, cpu_now() - c0);
    }
out:
    free(mem);
    sodium_free(w);
    sodium_free(c);
}

/* ---- helpers ---------------------------------------------------------------- */

static void path_in(char *out, size_t n, const cfg *cf, const char *name)
{
    snprintf(out, n, "%s/%s", cf->base, name);
}

static int rm_one(const char *p, const struct stat *st, int flag,
                  struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(p) != 0 ? -1 : 0;
}

static void rm_rf(const char *path)
{
    (void)nftw(path, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

static uint64_t dir_bytes(const char *path)
{
    char cmdpath[PATH_MAX + 32];
    uint64_t total = 0;
    FILE *p;

    /* du is enough here and keeps this file short. */
    snprintf(cmdpath, sizeof cmdpath, "du -sb '%s' 2>/dev/null", path);
    p = popen(cmdpath, "r");
    if (p) {
        if (fscanf(p, "%" SCNu64, &total) != 1)
            total = 0;
        pclose(p);
    }
    return total;
}

static int journal_create(const cfg *cf, const char *dir,
                          tally_sync_policy sync, tally **ret, fig *f)
{
    tally_options opt;
    int rc;

    memset(&opt, 0, sizeof opt);
    opt.master_key = cf->key;
    opt.name = "bench";
    opt.cipher = TALLY_CIPHER_AES256GCM;
    opt.sync = sync;
    if ((rc = tally_init(dir, &opt)) < 0) {
        fig_fail(f, rc, "tally_init", dir);
        return rc;
    }
    if ((rc = tally_open(ret, dir, &opt, NULL)) < 0) {
        fig_fail(f, rc, "tally_open", dir);
        return rc;
    }
    return 0;
}

static void rec_fill(tally_record_in *in, uint8_t *payload)
{
    memset(in, 0, sizeof *in);
    in->type = 1;
    in->payload = payload;
    in->payload_len = PAYLOAD;
}

/* ---- the rate cases, run in interleaved rounds ------------------------------
 *
 * The machine is shared and its disk's speed drifts (other work, writeback,
 * the host). Each case therefore runs in several short slices, one case
 * after another, round after round, so a drift hits every case alike and
 * the ratios between them stay fair. A case keeps its state (file, database,
 * open journal) across its slices. */

typedef struct scase scase;

/* Leader/follower group commit state (the group commit limit). */
typedef struct group {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    pthread_barrier_t gate;
    uint8_t *buf[2];
    size_t len;          /* bytes pending in buf[cur] */
    int cur;
    uint64_t next_seq;   /* last seq handed out */
    uint64_t durable;    /* last seq known durable */
    int syncing, failed;
    off_t off;
    uint8_t frame[FRAME_LEN];
    scase *sc;
} group;

enum { K_CPU, K_NONE, K_PREALLOC, K_GROW, K_ZERO, K_GROUP, K_SQLITE,
       K_ALWAYS, K_BATCH };

struct scase {
    int kind;
    const char *label;
    fig *f;
    double slice; /* seconds per round */
    int ready, failed;
    uint64_t n;
    double secs, cpu_secs;
    double slices[MAX_SLICES]; /* the rate of each slice */
    int nslices;
    /* state, by kind */
    char path[PATH_MAX];
    int fd;
    off_t off, size;
    chain *ch;
    uint8_t *buf;
    uint64_t seq;
    sqlite3 *db;
    sqlite3_stmt *ins;
    tally *t;
    group *g;
    const cfg *cf;
    pthread_t *tid;
    atomic_int stop;
    atomic_int err;
    atomic_uint_fast64_t acked;
};

static int sc_fail(scase *s, int err, const char *what, const char *detail)
{
    fig_fail(s->f, err, what, detail);
    s->failed = 1;
    return err ? err : -1;
}

static int disk_setup(const cfg *cf, scase *s)
{
    static const char *names[] = { [K_PREALLOC] = "disk-prealloc",
                                   [K_GROW] = "disk-grow",
                                   [K_ZERO] = "disk-zero",
                                   [K_GROUP] = "disk-group" };
    path_in(s->path, sizeof s->path, cf, names[s->kind]);
    s->fd = open(s->path, O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0600);
    if (s->fd < 0)
        return sc_fail(s, -errno, "open", s->path);
    s->size = 64ll << 20;
    if (s->kind == K_PREALLOC || s->kind == K_GROUP) {
        int rc = posix_fallocate(s->fd, 0, s->size);
        if (rc != 0)
            return sc_fail(s, -rc, "fallocate", s->path);
    } else if (s->kind == K_ZERO) {
        static const uint8_t zero[1 << 16];
        for (off_t o = 0; o < s->size; o += (off_t)sizeof zero)
            if (pwrite(s->fd, zero, sizeof zero, o) != (ssize_t)sizeof zero)
                return sc_fail(s, -errno, "zero-fill", s->path);
    } else {
        s->size = INT64_MAX; /* K_GROW: the file only grows */
    }
    if (fsync(s->fd) != 0)
        return sc_fail(s, -errno, "fsync", s->path);
    return 0;
}

/* write()+fdatasync() of one 352-byte frame per record. */
static int disk_slice(const cfg *cf, scase *s)
{
    uint8_t frame[FRAME_LEN];
    uint64_t n = 0;

    memcpy(frame, cf->payload, sizeof cf->payload);
    memset(frame + PAYLOAD, 0x5a, FRAME_LEN - PAYLOAD);
    double t0 = now(), t1 = t0, end = t0 + s->slice;
    while (t1 < end && !interrupted) {
        if (s->off + (off_t)FRAME_LEN > s->size)
            s->off = 0; /* stay inside the prepared extent */
        if (pwrite(s->fd, frame, FRAME_LEN, s->off) != (ssize_t)FRAME_LEN ||
            fdatasync(s->fd) != 0)
            return sc_fail(s, -errno, "write/fdatasync", s->path);
        s->off += FRAME_LEN;
        n++;
        t1 = now();
    }
    s->n += n;
    s->secs += t1 - t0;
    return 0;
}

static void *group_thread(void *arg)
{
    group *g = arg;
    scase *s = g->sc;
    uint64_t acked = 0;

    pthread_barrier_wait(&g->gate);
    while (!atomic_load(&s->stop)) {
        pthread_mutex_lock(&g->mu);
        uint64_t seq = ++g->next_seq;
        memcpy(g->buf[g->cur] + g->len, g->frame, FRAME_LEN);
        g->len += FRAME_LEN;
        while (g->durable < seq && !g->failed) {
            if (g->syncing) {
                pthread_cond_wait(&g->cv, &g->mu);
                continue;
            }
            /* Leader: take the pending buffer, let others fill the other. */
            uint8_t *mine = g->buf[g->cur];
            size_t len = g->len;
            uint64_t upto = g->next_seq;
            g->cur ^= 1;
            g->len = 0;
            g->syncing = 1;
            if (g->off + (off_t)len > s->size)
                g->off = 0;
            off_t off = g->off;
            g->off += (off_t)len;
            pthread_mutex_unlock(&g->mu);
            int bad = pwrite(s->fd, mine, len, off) != (ssize_t)len ||
                      fdatasync(s->fd) != 0;
            pthread_mutex_lock(&g->mu);
            g->syncing = 0;
            if (bad)
                g->failed = 1;
            else
                g->durable = upto;
            pthread_cond_broadcast(&g->cv);
        }
        int failed = g->failed;
        pthread_mutex_unlock(&g->mu);
        if (failed)
            break;
        acked++;
    }
    atomic_fetch_add(&s->acked, acked);
    return NULL;
}

static int group_setup(const cfg *cf, scase *s)
{
    int rc = disk_setup(cf, s);
    if (rc < 0)
        return rc;
    size_t cap = (size_t)cf->threads * FRAME_LEN; /* one pending each */
    s->g = calloc(1, sizeof *s->g);
    if (!s->g || !(s->g->buf[0] = malloc(cap)) ||
        !(s->g->buf[1] = malloc(cap)))
        return sc_fail(s, -ENOMEM, "group commit", NULL);
    s->g->sc = s;
    memcpy(s->g->frame, cf->payload, sizeof cf->payload);
    pthread_mutex_init(&s->g->mu, NULL);
    pthread_cond_init(&s->g->cv, NULL);
    return 0;
}

/* Runs cf->threads threads of fn for one slice; the count they leave in
 * s->acked is the slice's. */
static int threads_slice(const cfg *cf, scase *s, pthread_barrier_t *gate,
                         void *(*fn)(void *), void *arg)
{
    int started = 0;

    atomic_store(&s->stop, 0);
    atomic_store(&s->acked, 0);
    pthread_barrier_init(gate, NULL, (unsigned)cf->threads + 1);
    for (; started < cf->threads; started++)
        if (pthread_create(&s->tid[started], NULL, fn, arg) != 0)
            break;
    if (started < cf->threads) {
        /* The gate would never open; the started threads wait on it for
         * good, so stop the whole run here. */
        fprintf(stderr, "bench-journal: pthread_create failed after %d "
                        "threads\n", started);
        exit(1);
    }
    pthread_barrier_wait(gate);
    double t0 = now();
    while (now() < t0 + s->slice && !interrupted && !atomic_load(&s->err))
        usleep(5000);
    atomic_store(&s->stop, 1);
    for (int i = 0; i < started; i++)
        pthread_join(s->tid[i], NULL);
    s->secs += now() - t0;
    s->n += atomic_load(&s->acked);
    pthread_barrier_destroy(gate);
    return 0;
}

static int group_slice(const cfg *cf, scase *s)
{
    threads_slice(cf, s, &s->g->gate, group_thread, s->g);
    if (s->g->failed)
        return sc_fail(s, -EIO, "group commit", "write/fdatasync failed");
    return 0;
}

static int sqlite_setup(const cfg *cf, scase *s)
{
    sqlite3_stmt *q = NULL;
    int wal = 0;

    path_in(s->path, sizeof s->path, cf, "peer.sqlite");
    if (sqlite3_open(s->path, &s->db) != SQLITE_OK ||
        sqlite3_exec(s->db,
                     "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;"
                     "CREATE TABLE rec(id INTEGER PRIMARY KEY, v BLOB);",
                     NULL, NULL, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(s->db, "INSERT INTO rec(v) VALUES (?1)", -1,
                           &s->ins, NULL) != SQLITE_OK)
        return sc_fail(s, -EIO, "sqlite",
                       s->db ? sqlite3_errmsg(s->db) : "out of memory");
    /* journal_mode=WAL answers with the mode it got: make sure it is WAL. */
    if (sqlite3_prepare_v2(s->db, "PRAGMA journal_mode", -1, &q, NULL) ==
            SQLITE_OK &&
        sqlite3_step(q) == SQLITE_ROW)
        wal = strcmp((const char *)sqlite3_column_text(q, 0), "wal") == 0;
    sqlite3_finalize(q);
    if (!wal)
        return sc_fail(s, -EIO, "sqlite", "WAL mode refused");
    return 0;
}

static int sqlite_slice(const cfg *cf, scase *s)
{
    uint8_t row[PAYLOAD];
    uint64_t n = 0;

    memcpy(row, cf->payload, PAYLOAD);
    double t0 = now(), t1 = t0, end = t0 + s->slice;
    while (t1 < end && !interrupted) {
        put_le64(row, s->seq++);
        if (sqlite3_bind_blob(s->ins, 1, row, PAYLOAD, SQLITE_STATIC) !=
                SQLITE_OK ||
            sqlite3_step(s->ins) != SQLITE_DONE)
            return sc_fail(s, -EIO, "sqlite insert", sqlite3_errmsg(s->db));
        sqlite3_reset(s->ins);
        n++;
        t1 = now();
    }
    s->n += n;
    s->secs += t1 - t0;
    return 0;
}

static int cpu_setup(const cfg *cf, scase *s)
{
    s->buf = malloc(1u << 20); /* like tally's NONE buffer: 1 MiB */
    s->ch = sodium_malloc(sizeof *s->ch);
    if (!s->buf || !s->ch)
        return sc_fail(s, -ENOMEM, "cpu limit", NULL);
    chain_init(s->ch, cf->key);
    return 0;
}

static int cpu_slice(const cfg *cf, scase *s)
{
    uint8_t env[ENV_LEN];
    uint64_t n = 0;

    double t0 = now(), t1 = t0, end = t0 + s->slice, c0 = cpu_now();
    while (t1 < end && !interrupted) {
        for (int i = 0; i < 256; i++) {
            s->seq++;
            if (s->off + FRAME_LEN > (1u << 20))
                s->off = 0;
            make_env(env, cf->payload, s->seq);
            chain_seal(s->ch, s->seq, env, s->buf + s->off);
            s->off += FRAME_LEN;
        }
        n += 256;
        t1 = now();
    }
    s->n += n;
    s->secs += t1 - t0;
    s->cpu_secs += cpu_now() - c0;
    return 0;
}

static int tally_setup(const cfg *cf, scase *s)
{
    static const char *names[] = { [K_NONE] = "none",
                                   [K_ALWAYS] = "always",
                                   [K_BATCH] = "batch" };
    tally_sync_policy sync = s->kind == K_NONE     ? TALLY_SYNC_NONE
                             : s->kind == K_ALWAYS ? TALLY_SYNC_ALWAYS
                                                   : TALLY_SYNC_BATCH;
    path_in(s->path, sizeof s->path, cf, names[s->kind]);
    int rc = journal_create(cf, s->path, sync, &s->t, s->f);
    if (rc < 0)
        s->failed = 1;
    return rc;
}

/* One thread appending; NONE looks at the clock every 256 appends, ALWAYS
 * (~100 us or more each) every time. */
static int append_slice(const cfg *cf, scase *s)
{
    tally_record_in in;
    uint8_t payload[PAYLOAD];
    unsigned every = s->kind == K_NONE ? 256 : 1;
    uint64_t n = 0;
    int rc;

    memcpy(payload, cf->payload, PAYLOAD);
    rec_fill(&in, payload);
    double t0 = now(), t1 = t0, end = t0 + s->slice, c0 = cpu_now();
    while (t1 < end && !interrupted) {
        for (unsigned i = 0; i < every; i++) {
            put_le64(payload, s->seq++);
            if ((rc = tally_append(s->t, &in, NULL)) < 0)
                return sc_fail(s, rc, "tally_append", tally_errmsg(s->t));
            n++;
        }
        t1 = now();
    }
    s->n += n;
    s->secs += t1 - t0;
    if (s->kind == K_NONE)
        s->cpu_secs += cpu_now() - c0;
    return 0;
}

static void *batch_thread(void *arg)
{
    scase *s = arg;
    tally_record_in in;
    uint8_t payload[PAYLOAD];
    uint64_t acked = 0;

    memcpy(payload, s->cf->payload, PAYLOAD);
    rec_fill(&in, payload);
    pthread_barrier_wait(&s->g->gate);
    while (!atomic_load(&s->stop)) {
        put_le64(payload, acked);
        int rc = tally_append(s->t, &in, NULL);
        if (rc < 0) {
            atomic_store(&s->err, rc);
            break;
        }
        acked++;
    }
    atomic_fetch_add(&s->acked, acked);
    return NULL;
}

static int batch_setup(const cfg *cf, scase *s)
{
    s->g = calloc(1, sizeof *s->g); /* only its gate is used */
    if (!s->g)
        return sc_fail(s, -ENOMEM, "batch", NULL);
    return tally_setup(cf, s);
}

static int batch_slice(const cfg *cf, scase *s)
{
    threads_slice(cf, s, &s->g->gate, batch_thread, s);
    int rc = atomic_load(&s->err);
    if (rc < 0)
        return sc_fail(s, rc, "tally_append (batch)", tally_errmsg(s->t));
    return 0;
}

static int sc_setup(const cfg *cf, scase *s)
{
    s->cf = cf;
    s->fd = -1;
    s->tid = calloc((size_t)cf->threads, sizeof *s->tid);
    if (!s->tid)
        return sc_fail(s, -ENOMEM, "setup", NULL);
    switch (s->kind) {
    case K_CPU: return cpu_setup(cf, s);
    case K_NONE: case K_ALWAYS: return tally_setup(cf, s);
    case K_BATCH: return batch_setup(cf, s);
    case K_GROUP: return group_setup(cf, s);
    case K_SQLITE: return sqlite_setup(cf, s);
    default: return disk_setup(cf, s);
    }
}

static int sc_slice(const cfg *cf, scase *s)
{
    switch (s->kind) {
    case K_CPU: return cpu_slice(cf, s);
    case K_NONE: case K_ALWAYS: return append_slice(cf, s);
    case K_BATCH: return batch_slice(cf, s);
    case K_GROUP: return group_slice(cf, s);
    case K_SQLITE: return sqlite_slice(cf, s);
    default: return disk_slice(cf, s);
    }
}

/* Frees what the case holds; close_fig (may be NULL) gets the time
 * tally_close took. */
static void sc_teardown(scase *s, fig *close_fig)
{
    char side[PATH_MAX + 8];

    if (s->t) {
        double c0 = now();
        int rc = tally_close(s->t);
        if (rc < 0 && !s->failed)
            sc_fail(s, rc, "tally_close", NULL);
        else if (close_fig)
            fig_done(close_fig, 1, now() - c0);
        rm_rf(s->path);
    }
    if (s->db || s->ins) {
        sqlite3_finalize(s->ins);
        sqlite3_close(s->db);
        unlink(s->path);
        snprintf(side, sizeof side, "%s-wal", s->path);
        unlink(side);
        snprintf(side, sizeof side, "%s-shm", s->path);
        unlink(side);
    }
    if (s->fd >= 0) {
        close(s->fd);
        unlink(s->path);
    }
    if (s->g) {
        if (s->kind == K_GROUP) {
            pthread_cond_destroy(&s->g->cv);
            pthread_mutex_destroy(&s->g->mu);
        }
        free(s->g->buf[0]);
        free(s->g->buf[1]);
        free(s->g);
    }
    free(s->buf);
    sodium_free(s->ch);
    free(s->tid);
    if (!s->failed && s->cpu_secs > 0)
        fig_done_cpu(s->f, s->n, s->secs, s->cpu_secs);
    else if (!s->failed) {
        fig_done(s->f, s->n, s->secs);
        if (s->nslices > 1) {
            /* The spread says how steady the disk was during the run. */
            qsort(s->slices, (size_t)s->nslices, sizeof s->slices[0],
                  cmp_double);
            snprintf(s->f->note, sizeof s->f->note,
                     "%d slices of %.2f s: median %.0f/s, range %.0f–%.0f/s",
                     s->nslices, s->slice, s->slices[s->nslices / 2],
                     s->slices[0], s->slices[s->nslices - 1]);
        }
    }
}

/* Sets every case up, runs `rounds` rounds of one slice each, tears down. */
static void run_rounds(const cfg *cf, scase *cs, size_t n, int rounds,
                       fig *close_fig)
{
    for (size_t i = 0; i < n && !interrupted; i++) {
        fprintf(stderr, "bench: set up %s\n", cs[i].label);
        if (sc_setup(cf, &cs[i]) == 0)
            cs[i].ready = 1;
    }
    /* Each round starts one case further on, so that no case always
     * follows the same one (BATCH's burst of 64 threads, say). */
    for (int r = 0; r < rounds && !interrupted; r++) {
        fprintf(stderr, "bench: round %d/%d\n", r + 1, rounds);
        for (size_t j = 0; j < n && !interrupted; j++) {
            scase *c = &cs[(j + (size_t)r) % n];
            if (!c->ready || c->failed)
                continue;
            uint64_t n0 = c->n;
            double s0 = c->secs;
            (void)sc_slice(cf, c);
            if (!c->failed && c->nslices < MAX_SLICES && c->secs > s0) {
                double rate = (double)(c->n - n0) / (c->secs - s0);
                c->slices[c->nslices++] = rate;
                if (r < MAX_SLICES) {
                    c->f->round_rate[r] = rate;
                    c->f->rounds = r + 1;
                }
            }
        }
    }
    for (size_t i = 0; i < n; i++)
        sc_teardown(&cs[i], cs[i].kind == K_NONE ? close_fig : NULL);
}

/* Fills dir with about mb MiB of records (sync NONE, then closed). */
static int journal_fill(const cfg *cf, const char *dir, uint64_t mb, fig *f)
{
    tally *t = NULL;
    tally_record_in in;
    uint8_t payload[PAYLOAD];
    uint64_t n = (mb << 20) / FRAME_LEN;
    int rc;

    if ((rc = journal_create(cf, dir, TALLY_SYNC_NONE, &t, f)) < 0)
        return rc;
    memcpy(payload, cf->payload, PAYLOAD);
    rec_fill(&in, payload);
    for (uint64_t i = 0; i < n && !interrupted; i++) {
        put_le64(payload, i);
        if ((rc = tally_append(t, &in, NULL)) < 0) {
            fig_fail(f, rc, "tally_append", tally_errmsg(t));
            (void)tally_close(t);
            return rc;
        }
    }
    if ((rc = tally_close(t)) < 0)
        fig_fail(f, rc, "tally_close", dir);
    return rc;
}

/* What a reading child reports back through its pipe. */
typedef struct child_out {
    int rc;
    uint64_t records;
    double secs, cpu_secs;
    long base_kb; /* VmRSS when it started reading */
    long hwm_kb;  /* VmHWM at the end, as a cross-check of ru_maxrss */
    char msg[200];
} child_out;

static long status_kb(const char *field)
{
    char line[256];
    long v = -1;
    size_t n = strlen(field);
    FILE *fp = fopen("/proc/self/status", "r");

    if (!fp)
        return -1;
    while (fgets(line, sizeof line, fp))
        if (strncmp(line, field, n) == 0 && line[n] == ':') {
            v = strtol(line + n + 1, NULL, 10);
            break;
        }
    fclose(fp);
    return v;
}

static void child_read(const cfg *cf, const char *dir, int keyed,
                       child_out *o)
{
    /* The child starts with the parent's resident pages; "5" resets the peak
     * RSS to the current one (proc(5), clear_refs), so ru_maxrss measures
     * what the read itself adds. */
    int fd = open("/proc/self/clear_refs", O_WRONLY | O_CLOEXEC);
    if (fd >= 0) {
        (void)!write(fd, "5", 1);
        close(fd);
    }
    o->base_kb = status_kb("VmRSS");
    double t0 = now(), c0 = cpu_now();
    if (keyed) {
        tally_iter *it = NULL;
        tally_record rec;
        int rc = tally_iter_open(&it, dir, cf->key, 1, 0);
        if (rc < 0) {
            o->rc = rc;
            snprintf(o->msg, sizeof o->msg, "tally_iter_open");
            return;
        }
        while ((rc = tally_iter_next(it, &rec)) == 1) {
            if (!rec.decrypted || rec.payload_len != PAYLOAD) {
                rc = TALLY_EINTEGRITY;
                snprintf(o->msg, sizeof o->msg,
                         "seq %" PRIu64 " not decrypted or wrong length",
                         rec.seq);
                break;
            }
            o->records++;
        }
        if (rc < 0 && !o->msg[0])
            snprintf(o->msg, sizeof o->msg, "%s", tally_iter_errmsg(it));
        o->rc = rc < 0 ? rc : 0;
        tally_iter_free(it);
    } else {
        tally_verify_report rep;
        memset(&rep, 0, sizeof rep);
        int rc = tally_verify(dir, NULL, &rep);
        o->rc = rc < 0 ? rc : 0;
        o->records = rep.records;
        if (rc < 0)
            snprintf(o->msg, sizeof o->msg, "%.150s (%.31s, offset %" PRIu64 ")",
                     rep.message, rep.segment, rep.offset);
    }
    o->secs = now() - t0;
    o->cpu_secs = cpu_now() - c0;
    o->hwm_kb = status_kb("VmHWM");
}

/* Reads dir in a forked child; returns its ru_maxrss in KiB, or -1. */
static long fork_reader(const cfg *cf, const char *dir, int keyed,
                          child_out *o)
{
    int p[2];
    struct rusage ru;
    int status;

    memset(o, 0, sizeof *o);
    if (pipe(p) != 0)
        return -1;
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) {
        close(p[0]);
        close(p[1]);
        return -1;
    }
    if (pid == 0) {
        close(p[0]);
        child_out mine;
        memset(&mine, 0, sizeof mine);
        child_read(cf, dir, keyed, &mine);
        (void)!write(p[1], &mine, sizeof mine);
        _exit(mine.rc < 0 ? 1 : 0);
    }
    close(p[1]);
    ssize_t got = read(p[0], o, sizeof *o);
    close(p[0]);
    while (wait4(pid, &status, 0, &ru) < 0 && errno == EINTR)
        ;
    if (got != (ssize_t)sizeof *o) {
        o->rc = -EPIPE;
        snprintf(o->msg, sizeof o->msg, "reader child died");
        return -1;
    }
    return ru.ru_maxrss;
}

/* The reading children are forked from a small process forked at start,
 * before any case has grown this one (cached thread stacks, buffers): their
 * ru_maxrss is then what reading costs, not what the benchmark left behind.
 * It serves one request at a time over two pipes. */
typedef struct read_req {
    int keyed;
    char dir[1200];
} read_req;

typedef struct read_resp {
    child_out o;
    long maxrss;
} read_resp;

static int io_full(int fd, void *buf, size_t n, int writing)
{
    uint8_t *p = buf;
    while (n > 0) {
        ssize_t k = writing ? write(fd, p, n) : read(fd, p, n);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            return -1;
        p += k;
        n -= (size_t)k;
    }
    return 0;
}

static int forker_start(cfg *cf)
{
    int req[2], resp[2];

    if (pipe(req) != 0)
        return -errno;
    if (pipe(resp) != 0) {
        close(req[0]);
        close(req[1]);
        return -errno;
    }
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0)
        return -errno;
    if (pid == 0) {
        read_req q;
        read_resp a;
        close(req[1]);
        close(resp[0]);
        while (io_full(req[0], &q, sizeof q, 0) == 0) {
            memset(&a, 0, sizeof a);
            q.dir[sizeof q.dir - 1] = '\0';
            a.maxrss = fork_reader(cf, q.dir, q.keyed, &a.o);
            if (io_full(resp[1], &a, sizeof a, 1) != 0)
                break;
        }
        _exit(0);
    }
    close(req[0]);
    close(resp[1]);
    cf->fk_pid = pid;
    cf->fk_req = req[1];
    cf->fk_resp = resp[0];
    return 0;
}

static void forker_stop(cfg *cf)
{
    if (cf->fk_pid <= 0)
        return;
    close(cf->fk_req);
    close(cf->fk_resp);
    while (waitpid(cf->fk_pid, NULL, 0) < 0 && errno == EINTR)
        ;
    cf->fk_pid = 0;
}

/* Reads dir in a child of the forker; returns its ru_maxrss in KiB, or -1
 * (then o->rc says why). */
static long read_in_child(const cfg *cf, const char *dir, int keyed,
                          child_out *o)
{
    read_req q;
    read_resp a;

    memset(o, 0, sizeof *o);
    memset(&q, 0, sizeof q);
    q.keyed = keyed;
    snprintf(q.dir, sizeof q.dir, "%s", dir);
    if (cf->fk_pid <= 0 || io_full(cf->fk_req, &q, sizeof q, 1) != 0 ||
        io_full(cf->fk_resp, &a, sizeof a, 0) != 0) {
        o->rc = -EPIPE;
        snprintf(o->msg, sizeof o->msg, "the reader forker is gone");
        return -1;
    }
    *o = a.o;
    return a.maxrss;
}

static void bench_read(const cfg *cf, results *r)
{
    char small[PATH_MAX], big[PATH_MAX];
    child_out o;
    fig scratch;

    fig_init(&scratch);
    path_in(small, sizeof small, cf, "read-small");
    path_in(big, sizeof big, cf, "read-big");
    fprintf(stderr, "  filling a %" PRIu64 " MiB and a %" PRIu64
                    " MiB journal\n", cf->small_mb, cf->big_mb);
    if (journal_fill(cf, small, cf->small_mb, &r->replay) < 0 ||
        journal_fill(cf, big, cf->big_mb, &r->replay) < 0) {
        r->verify = r->replay;
        goto out;
    }
    r->small_mb_real = (double)dir_bytes(small) / (1 << 20);
    r->big_mb_real = (double)dir_bytes(big) / (1 << 20);

    for (int keyed = 1; keyed >= 0 && !interrupted; keyed--) {
        fig *f = keyed ? &r->replay : &r->verify;
        long *rs = keyed ? &r->rss_replay_small : &r->rss_verify_small;
        long *rb = keyed ? &r->rss_replay_big : &r->rss_verify_big;
        const char *what = keyed ? "replay (tally_iter, key)"
                                 : "verify (tally_verify, no key)";

        fprintf(stderr, "  %s, small journal\n", what);
        *rs = read_in_child(cf, small, keyed, &o);
        if (o.rc < 0) {
            fig_fail(f, o.rc, what, o.msg);
            continue;
        }
        r->rss_base = o.base_kb;
        fprintf(stderr, "  %s, big journal\n", what);
        *rb = read_in_child(cf, big, keyed, &o);
        if (o.rc < 0) {
            fig_fail(f, o.rc, what, o.msg);
            continue;
        }
        fig_done_cpu(f, o.records, o.secs, o.cpu_secs);
        uint64_t want = (cf->big_mb << 20) / FRAME_LEN;
        if (o.records != want) {
            size_t l = strlen(f->note);
            snprintf(f->note + l, sizeof f->note - l,
                     "; read %" PRIu64 " records, wrote %" PRIu64, o.records,
                     want);
        }
    }
out:
    rm_rf(small);
    rm_rf(big);
}

/* ---- the machine ------------------------------------------------------------ */

static const char *fs_name(long type)
{
    switch ((unsigned long)type) {
    case 0xEF53: return "ext4 (or ext2/3)";
    case 0x58465342: return "xfs";
    case 0x9123683E: return "btrfs";
    case 0x01021994: return "tmpfs";
    case 0x794c7630: return "overlayfs";
    case 0x2fc12fc1: return "zfs";
    case 0x65735546: return "fuse";
    case 0x6969: return "nfs";
    case 0xF2F52010: return "f2fs";
    default: return "unknown";
    }
}

/* The mount holding path: the longest mount point that prefixes it. */
static void mount_of(const char *path, char *dev, size_t ndev, char *mnt,
                     size_t nmnt)
{
    char real[PATH_MAX], line[4096], d[1024], m[1024], t[256];
    size_t best = 0;
    FILE *fp;

    snprintf(dev, ndev, "?");
    snprintf(mnt, nmnt, "?");
    if (!realpath(path, real) || !(fp = fopen("/proc/self/mounts", "r")))
        return;
    while (fgets(line, sizeof line, fp)) {
        if (sscanf(line, "%1023s %1023s %255s", d, m, t) != 3)
            continue;
        size_t n = strlen(m);
        int under = strcmp(m, "/") == 0 ||
                    (strncmp(real, m, n) == 0 &&
                     (real[n] == '/' || real[n] == '\0'));
        if (under && n >= best) {
            best = n;
            snprintf(dev, ndev, "%s", d);
            snprintf(mnt, nmnt, "%s (%s)", m, t);
        }
    }
    fclose(fp);
}

static void loadavg(char *out, size_t n)
{
    FILE *fp = fopen("/proc/loadavg", "r");
    double a = -1, b = -1, c = -1;

    if (fp) {
        if (fscanf(fp, "%lf %lf %lf", &a, &b, &c) != 3)
            a = b = c = -1;
        fclose(fp);
    }
    snprintf(out, n, "%.2f %.2f %.2f", a, b, c);
}

static int print_machine(const cfg *cf)
{
    char line[512], model[256] = "?", dev[1024], mnt[1100];
    struct utsname u;
    struct statfs sf;
    FILE *fp = fopen("/proc/cpuinfo", "r");
    int tmpfs = 0;

    if (fp) {
        while (fgets(line, sizeof line, fp))
            if (strncmp(line, "model name", 10) == 0) {
                char *c = strchr(line, ':');
                if (c) {
                    snprintf(model, sizeof model, "%s", c + 2);
                    model[strcspn(model, "\n")] = '\0';
                }
                break;
            }
        fclose(fp);
    }
    if (uname(&u) != 0)
        snprintf(u.release, sizeof u.release, "?");
    printf("## tally journal benchmark\n\n");
    printf("- machine: %ld CPUs (nproc), %s, Linux %s\n",
           sysconf(_SC_NPROCESSORS_ONLN), model, u.release);
    if (statfs(cf->base, &sf) == 0) {
        mount_of(cf->base, dev, sizeof dev, mnt, sizeof mnt);
        tmpfs = (unsigned long)sf.f_type == 0x01021994ul;
        printf("- data dir: %s — filesystem %s, mount %s on %s\n", cf->base,
               fs_name(sf.f_type), dev, mnt);
    }
    printf("- libsodium %s (AES-256-GCM %s), SQLite %s, tally %s\n",
           sodium_version_string(),
           crypto_aead_aes256gcm_is_available() ? "hardware" : "UNAVAILABLE",
           sqlite3_libversion(), TALLY_VERSION_STRING);
    loadavg(line, sizeof line);
    printf("- load average at start: %s (the machine may be shared: "
           "cases run in interleaved rounds)\n", line);
    printf("- record: %u-byte payload = %u-byte frame on disk (FORMAT.md "
           "§4.2); %s run; %d appending threads for BATCH\n",
           PAYLOAD, FRAME_LEN, cf->quick ? "quick" : "full", cf->threads);
    if (tmpfs)
        printf("- WARNING: the data dir is on tmpfs: fdatasync does nothing "
               "there, the sync figures say nothing about a disk\n");
    printf("\n");
    return tmpfs;
}

/* ---- the table -------------------------------------------------------------- */

static void fmt_rate(char *out, size_t n, const fig *f)
{
    if (f->err) {
        snprintf(out, n, "error");
        return;
    }
    if (f->rate < 0) {
        snprintf(out, n, "not run");
        return;
    }
    /* Thousands separated by a thin comma, so the column reads at once. */
    char digits[32], grouped[48];
    int len = snprintf(digits, sizeof digits, "%.0f", f->rate), j = 0;
    for (int i = 0; i < len; i++) {
        if (i > 0 && (len - i) % 3 == 0)
            grouped[j++] = ',';
        grouped[j++] = digits[i];
    }
    grouped[j] = '\0';
    snprintf(out, n, "%s%s (%.1f MB/s)", grouped, f->cpu_secs > 0 ? " †" : "",
             f->rate * PAYLOAD / 1e6);
}

static void fmt_ratio(char *out, size_t n, const fig *a, const fig *b)
{
    if (!a || !b || a->err || b->err || a->rate < 0 || b->rate <= 0)
        snprintf(out, n, "—");
    else
        snprintf(out, n, "%.2fx", a->rate / b->rate);
}

static double ratio(const fig *a, const fig *b)
{
    if (a->err || b->err || a->rate < 0 || b->rate <= 0)
        return -1;
    return a->rate / b->rate;
}

/* pass: 1 met, 0 missed, -1 cannot tell */
static const char *verdict(int pass)
{
    return pass > 0 ? "**pass**" : pass == 0 ? "**FAIL**" : "—";
}

static void row(const char *name, const fig *f, const fig *limit,
                const fig *peer, const char *target, int pass)
{
    char rate[64], rl[16], rp[16];

    fmt_rate(rate, sizeof rate, f);
    fmt_ratio(rl, sizeof rl, f, limit);
    fmt_ratio(rp, sizeof rp, f, peer);
    printf("| %s | %s | %s | %s | %s | %s |\n", name, rate, rl, rp,
           target ? target : "—", target ? verdict(pass) : "—");
}

static int rss_ok(long small, long big)
{
    if (small < 0 || big < 0)
        return -1;
    /* "Independent of size": the large journal may cost a little more (a
     * longer file list), never in proportion to its bytes. */
    return big <= small + small / 10 + 2048;
}

static void rss_row(const char *name, long small, long big,
                    const results *r, const cfg *cf)
{
    char v[96];
    if (small < 0 || big < 0)
        snprintf(v, sizeof v, "not measured");
    else
        snprintf(v, sizeof v, "%.1f MB at %.0f MB → %.1f MB at %.0f MB",
                 small / 1024.0, r->small_mb_real, big / 1024.0,
                 r->big_mb_real);
    printf("| %s | %s | — | — | independent of journal size (≤ 1.1x + 2 "
           "MB) | %s |\n",
           name, v, verdict(rss_ok(small, big)));
    (void)cf;
}

static int print_table(const cfg *cf, const results *r)
{
    int fails = 0;
    double x;
    int p;

    printf("| case | records/s (payload MB/s) | ratio to its limit | "
           "ratio to SQLite | target | result |\n");
    printf("| --- | ---: | ---: | ---: | --- | --- |\n");
    row("CPU limit: AES-256-GCM (precomputed) + BLAKE2b hash + link, into "
        "memory", &r->cpu, NULL, &r->sqlite, NULL, 0);
    row("replay limit: BLAKE2b hash + link check + AES-256-GCM decrypt, in "
        "memory", &r->replay_lim, NULL, &r->sqlite, NULL, 0);
    row("verify limit: BLAKE2b hash + link check, in memory", &r->verify_lim,
        NULL, &r->sqlite, NULL, 0);
    row("disk limit: write()+fdatasync() of 352 B, preallocated file",
        &r->disk, NULL, &r->sqlite, NULL, 0);
    row("disk, growing file (reference)", &r->disk_grow, &r->disk,
        &r->sqlite, NULL, 0);
    row("disk, zero-filled file, overwritten (reference)", &r->disk_zero,
        &r->disk, &r->sqlite, NULL, 0);
    char gname[128];
    snprintf(gname, sizeof gname,
             "group commit limit: leader/follower, %d threads, no crypto",
             cf->threads);
    row(gname, &r->group, &r->disk, &r->sqlite, NULL, 0);
    row("SQLite WAL, synchronous=FULL, 1 row per transaction", &r->sqlite,
        &r->disk, NULL, NULL, 0);

    x = ratio(&r->none, &r->cpu);
    p = x < 0 ? -1 : x >= 0.7;
    fails += p == 0;
    row("tally append, sync NONE, 1 thread", &r->none, &r->cpu, &r->sqlite,
        "≥ 0.7x CPU limit", p);

    double xd = ratio(&r->always, &r->disk), xs = ratio(&r->always, &r->sqlite);
    p = xd < 0 || xs < 0 ? -1 : (xd >= 0.9 && xs >= 1.0);
    fails += p == 0;
    row("tally append, sync ALWAYS, 1 thread", &r->always, &r->disk,
        &r->sqlite, "≥ 0.9x disk limit and ≥ 1x SQLite", p);

    char bname[96];
    snprintf(bname, sizeof bname,
             "tally append, sync BATCH, %d threads (acked)", cf->threads);
    x = ratio(&r->batch, &r->sqlite);
    p = x < 0 ? -1 : x >= 8.0;
    fails += p == 0;
    row(bname, &r->batch, &r->group, &r->sqlite, "≥ 8x SQLite", p);

    x = ratio(&r->replay, &r->replay_lim);
    p = x < 0 ? -1 : x >= 0.6;
    fails += p == 0;
    row("tally replay with decryption (tally_iter, key)", &r->replay,
        &r->replay_lim, &r->sqlite, "≥ 0.6x replay limit", p);
    row("tally verify without key (tally_verify, NULL)", &r->verify,
        &r->verify_lim, &r->sqlite, NULL, 0);

    rss_row("tally replay peak RSS (ru_maxrss)", r->rss_replay_small,
            r->rss_replay_big, r, cf);
    rss_row("tally verify peak RSS (ru_maxrss)", r->rss_verify_small,
            r->rss_verify_big, r, cf);
    fails += rss_ok(r->rss_replay_small, r->rss_replay_big) == 0;
    fails += rss_ok(r->rss_verify_small, r->rss_verify_big) == 0;

    printf("\nLimits are ratios' denominators: NONE → CPU limit, ALWAYS → "
           "disk limit, BATCH → group commit limit, replay → replay limit, "
           "verify → verify limit.");
    if (r->big_mb_real > 0)
        printf(" Replay and verify read a %.0f MB journal just written (page "
               "cache warm), each in a child forked from a helper process "
               "started before any case; the child's RSS when it starts "
               "reading is %.1f MB.",
               r->big_mb_real, r->rss_base / 1024.0);
    if (r->none_close.rate >= 0 && !r->none_close.err)
        printf(" tally_close after the NONE run took %.0f ms.",
               r->none_close.secs * 1e3);
    printf("\n");

    {
        double a = paired_median(&r->always, &r->disk),
               b = paired_median(&r->always, &r->sqlite),
               c = paired_median(&r->batch, &r->sqlite),
               d = paired_median(&r->batch, &r->group),
               e = paired_median(&r->disk, &r->disk_grow),
               g = paired_median(&r->always, &r->disk_grow);
        if (a > 0 || c > 0)
            printf("\nPaired per-round ratios (median over rounds; robust to "
                   "bursts of load on a shared disk): ALWAYS/disk limit "
                   "%.2fx, ALWAYS/SQLite %.2fx, BATCH/SQLite %.2fx, "
                   "BATCH/group commit limit %.2fx; ALWAYS/growing file "
                   "%.2fx, preallocated/growing file %.2fx.\n",
                   a, b, c, d, g, e);
    }
    if (r->cpu.cpu_secs > 0 || r->none.cpu_secs > 0 ||
        r->replay.cpu_secs > 0 || r->replay_lim.cpu_secs > 0)
        printf("\n† CPU-bound: rated per second of CPU time used (so that "
               "other load on the machine does not skew the ratios); "
               "wall-clock rates below.\n");
    static const struct {
        const char *label;
        size_t off;
    } notes[] = {
        { "CPU limit", offsetof(results, cpu) },
        { "replay limit", offsetof(results, replay_lim) },
        { "verify limit", offsetof(results, verify_lim) },
        { "disk limit", offsetof(results, disk) },
        { "disk, growing", offsetof(results, disk_grow) },
        { "disk, zero-filled", offsetof(results, disk_zero) },
        { "group commit limit", offsetof(results, group) },
        { "SQLite", offsetof(results, sqlite) },
        { "tally NONE", offsetof(results, none) },
        { "tally close (NONE)", offsetof(results, none_close) },
        { "tally ALWAYS", offsetof(results, always) },
        { "tally BATCH", offsetof(results, batch) },
        { "tally replay", offsetof(results, replay) },
        { "tally verify", offsetof(results, verify) },
    };
    for (size_t i = 0; i < sizeof notes / sizeof notes[0]; i++) {
        const fig *f = (const fig *)((const char *)r + notes[i].off);
        if (f->note[0])
            printf("\n- %s: %s", notes[i].label, f->note);
    }
    printf("\n");
    return fails;
}

/* ---- main ------------------------------------------------------------------- */

static void usage(FILE *to)
{
    fprintf(to,
            "usage: bench-journal [--dir DIR] [--quick] [--big-mb N] "
            "[--threads N] [--only CASE,...]\n"
            "  --dir DIR    work in a new directory under DIR (default "
            "/var/tmp)\n"
            "  --quick      short run (~20 s); the big journal defaults to "
            "256 MB\n"
            "  --big-mb N   size of the large journal for the RSS check "
            "(default 1024)\n"
            "  --threads N  appending threads for BATCH (default 64)\n"
            "  --only LIST  run only these: limits,disk,sqlite,none,always,"
            "batch,read\n");
}

static unsigned parse_cases(const char *s)
{
    unsigned bits = 0;
    char buf[256], *save = NULL;

    snprintf(buf, sizeof buf, "%s", s);
    for (char *tok = strtok_r(buf, ",", &save); tok;
         tok = strtok_r(NULL, ",", &save)) {
        size_t i;
        for (i = 0; i < sizeof case_names / sizeof case_names[0]; i++)
            if (strcmp(tok, case_names[i].name) == 0)
                break;
        if (i == sizeof case_names / sizeof case_names[0])
            return 0;
        bits |= case_names[i].bit;
    }
    return bits;
}

int main(int argc, char **argv)
{
    static cfg cf;
    static results r;
    const char *parent = "/var/tmp";
    long big_mb = -1;

    cf.cases = C_ALL;
    cf.threads = 64;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--quick") == 0)
            cf.quick = 1;
        else if (strcmp(a, "--dir") == 0 && i + 1 < argc)
            parent = argv[++i];
        else if (strcmp(a, "--big-mb") == 0 && i + 1 < argc)
            big_mb = strtol(argv[++i], NULL, 10);
        else if (strcmp(a, "--threads") == 0 && i + 1 < argc)
            cf.threads = (int)strtol(argv[++i], NULL, 10);
        else if (strcmp(a, "--only") == 0 && i + 1 < argc) {
            if (!(cf.cases = parse_cases(argv[++i]))) {
                usage(stderr);
                return 2;
            }
        } else if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage(stdout);
            return 0;
        } else {
            usage(stderr);
            return 2;
        }
    }
    if (cf.threads < 1 || cf.threads > 4096 || big_mb == 0 || big_mb < -1) {
        usage(stderr);
        return 2;
    }
    cf.small_mb = 64;
    cf.big_mb = big_mb > 0 ? (uint64_t)big_mb : cf.quick ? 256 : 1024;
    if (cf.big_mb < cf.small_mb)
        cf.small_mb = cf.big_mb;
    cf.cpu_secs = cf.quick ? 0.4 : 2.0;
    cf.sync_secs = cf.quick ? 0.6 : 4.0;

    if (sodium_init() < 0) {
        fprintf(stderr, "bench-journal: sodium_init failed\n");
        return 1;
    }
    if (!crypto_aead_aes256gcm_is_available()) {
        fprintf(stderr, "bench-journal: AES-256-GCM is not available on this "
                        "CPU; the benchmark measures that cipher\n");
        return 1;
    }
    if (strlen(parent) > sizeof cf.base - 32) {
        fprintf(stderr, "bench-journal: --dir path too long\n");
        return 2;
    }
    snprintf(cf.base, sizeof cf.base, "%s/tally-bench-XXXXXX", parent);
    if (!mkdtemp(cf.base)) {
        fprintf(stderr, "bench-journal: mkdtemp %s: %s\n", cf.base,
                strerror(errno));
        return 1;
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    cf.key = sodium_malloc(TALLY_KEY_BYTES);
    if (!cf.key) {
        rm_rf(cf.base);
        return 1;
    }
    randombytes_buf(cf.key, TALLY_KEY_BYTES);
    randombytes_buf(cf.payload, sizeof cf.payload);

    fig *figs[] = { &r.cpu,    &r.replay_lim, &r.verify_lim, &r.disk,
                    &r.disk_grow, &r.disk_zero, &r.group, &r.sqlite, &r.none,
                    &r.none_close, &r.always, &r.batch,      &r.replay,
                    &r.verify };
    for (size_t i = 0; i < sizeof figs / sizeof figs[0]; i++)
        fig_init(figs[i]);
    r.rss_replay_small = r.rss_replay_big = -1;
    r.rss_verify_small = r.rss_verify_big = -1;

    double t0 = now();
    if (forker_start(&cf) < 0)
        fprintf(stderr, "bench-journal: fork failed; no RSS figures\n");
    print_machine(&cf);
    fflush(stdout);

    scase cpu[2], sync[7];
    size_t ncpu = 0, nsync = 0;
    /* Many short slices: the disk's drift comes in bursts of a second or
     * so, which a few long slices do not average out. */
    int cpu_rounds = cf.quick ? 2 : 4, sync_rounds = cf.quick ? 3 : 20;
    double cpu_slice = cf.cpu_secs / cpu_rounds;
    double sync_slice = cf.sync_secs / sync_rounds;
#define ADD(list, cnt, bit, k, lab, fg, sl)                             \
    do {                                                                \
        if (cf.cases & (bit)) {                                         \
            memset(&list[cnt], 0, sizeof list[cnt]);                    \
            list[cnt].kind = (k);                                       \
            list[cnt].label = (lab);                                    \
            list[cnt].f = (fg);                                         \
            list[cnt].slice = (sl);                                     \
            cnt++;                                                      \
        }                                                               \
    } while (0)
    ADD(cpu, ncpu, C_LIMITS, K_CPU, "CPU limit", &r.cpu, cpu_slice);
    ADD(cpu, ncpu, C_NONE, K_NONE, "tally NONE", &r.none, cpu_slice);
    ADD(sync, nsync, C_DISK, K_PREALLOC, "disk limit (preallocated)",
        &r.disk, sync_slice);
    ADD(sync, nsync, C_DISK, K_GROW, "disk, growing file", &r.disk_grow,
        sync_slice);
    ADD(sync, nsync, C_DISK, K_ZERO, "disk, zero-filled file",
        &r.disk_zero, sync_slice);
    ADD(sync, nsync, C_DISK, K_GROUP, "group commit limit", &r.group,
        sync_slice);
    ADD(sync, nsync, C_SQLITE, K_SQLITE, "SQLite WAL FULL", &r.sqlite,
        sync_slice);
    ADD(sync, nsync, C_ALWAYS, K_ALWAYS, "tally ALWAYS", &r.always,
        sync_slice);
    ADD(sync, nsync, C_BATCH, K_BATCH, "tally BATCH", &r.batch, sync_slice);
#undef ADD

    /* CPU-bound first (NONE's dirty pages are gone with its journal before
     * the sync cases start), then the read limits, the sync cases, and the
     * reads of tally. */
    run_rounds(&cf, cpu, ncpu, cpu_rounds, &r.none_close);
    if ((cf.cases & C_LIMITS) && !interrupted) {
        fprintf(stderr, "bench: replay and verify limits\n");
        bench_read_limits(&cf, &r);
    }
    run_rounds(&cf, sync, nsync, sync_rounds, NULL);
    if ((cf.cases & C_READ) && !interrupted) {
        fprintf(stderr, "bench: tally replay and verify\n");
        bench_read(&cf, &r);
    }

    (void)print_table(&cf, &r);
    char la[64];
    loadavg(la, sizeof la);
    printf("\nRun took %.0f s%s; load average at the end: %s.\n",
           now() - t0, interrupted ? " (interrupted)" : "", la);
    forker_stop(&cf);
    rm_rf(cf.base);
    sodium_free(cf.key);
    int errors = 0;
    for (size_t i = 0; i < sizeof figs / sizeof figs[0]; i++)
        errors += figs[i]->err != 0;
    return interrupted ? 130 : errors ? 1 : 0;
}
