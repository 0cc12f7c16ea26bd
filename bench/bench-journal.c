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
 * Not a test: bench/run.sh builds it in release mode and runs it. Progress
 * goes to stderr, the machine description and the table to stdout.
 */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
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
    double cpu_secs;  /* each in-memory loop */
    double sync_secs; /* each case that syncs */
    double none_secs;
    uint8_t *key;     /* sodium_malloc'd master key */
    uint8_t payload[PAYLOAD];
} cfg;

/* One measured figure; rate < 0 means "not run", err != 0 "failed". */
typedef struct fig {
    double rate; /* records (or rows, acked appends) per second */
    uint64_t n;
    double secs;
    int err;
    char note[160];
} fig;

typedef struct results {
    fig cpu, replay_lim, verify_lim;
    fig disk, disk_grow, group;
    fig sqlite;
    fig none, none_close, always, batch;
    fig replay, verify;
    long rss_replay_small, rss_replay_big; /* KiB; < 0 not measured */
    long rss_verify_small, rss_verify_big;
    long rss_base;                         /* child's RSS before reading */
    double big_mb_real, small_mb_real;
} results;

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

static void fig_fail(fig *f, int err, const char *what, const char *detail)
{
    f->err = err ? err : -1;
    f->rate = -1;
    snprintf(f->note, sizeof f->note, "%s: %s%s%s", what,
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

static void bench_cpu_limit(const cfg *cf, results *r)
{
    enum { BUF = 1u << 20 }; /* like tally's NONE buffer: 1 MiB */
    uint8_t *buf = malloc(BUF), env[ENV_LEN];
    chain *c = sodium_malloc(sizeof *c);
    uint64_t seq = 0;
    size_t pos = 0;

    if (!buf || !c) {
        fig_fail(&r->cpu, -ENOMEM, "cpu limit", NULL);
        goto out;
    }
    chain_init(c, cf->key);
    double t0 = now(), t1 = t0, end = t0 + cf->cpu_secs;
    while (t1 < end && !interrupted) {
        for (int i = 0; i < 1024; i++) {
            seq++;
            if (pos + FRAME_LEN > BUF)
                pos = 0;
            make_env(env, cf->payload, seq);
            chain_seal(c, seq, env, buf + pos);
            pos += FRAME_LEN;
        }
        t1 = now();
    }
    fig_done(&r->cpu, seq, t1 - t0);
out:
    free(buf);
    sodium_free(c);
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
        double t0 = now(), t1 = t0, end = t0 + cf->cpu_secs;
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
        fig_done(f, n, t1 - t0);
    }
out:
    free(mem);
    sodium_free(w);
    sodium_free(c);
}

/* ---- the disk limit ------------------------------------------------------ */

static void path_in(char *out, size_t n, const cfg *cf, const char *name)
{
    snprintf(out, n, "%s/%s", cf->base, name);
}

/* write()+fdatasync() of one 352-byte frame per record. prealloc: on a
 * file fallocate()d (and synced) beforehand, so the size never changes;
 * otherwise on a growing file, as an append-only segment is written. */
static void bench_disk(const cfg *cf, fig *f, int prealloc)
{
    const off_t size = 64ll << 20;
    char path[PATH_MAX];
    uint8_t frame[FRAME_LEN];
    uint64_t n = 0;
    off_t off = 0;

    path_in(path, sizeof path, cf, prealloc ? "disk-prealloc" : "disk-grow");
    int fd = open(path, O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0600);
    if (fd < 0) {
        fig_fail(f, -errno, "open", path);
        return;
    }
    if (prealloc) {
        int rc = posix_fallocate(fd, 0, size);
        if (rc != 0 || fsync(fd) != 0) {
            fig_fail(f, rc ? -rc : -errno, "fallocate", path);
            goto out;
        }
    }
    randombytes_buf(frame, sizeof frame);
    double t0 = now(), t1 = t0, end = t0 + cf->sync_secs;
    while (t1 < end && !interrupted) {
        if (off + (off_t)FRAME_LEN > size)
            off = 0; /* stay inside the preallocated extent */
        if (pwrite(fd, frame, FRAME_LEN, off) != (ssize_t)FRAME_LEN ||
            fdatasync(fd) != 0) {
            fig_fail(f, -errno, "write/fdatasync", path);
            goto out;
        }
        off += FRAME_LEN;
        n++;
        t1 = now();
    }
    fig_done(f, n, t1 - t0);
out:
    close(fd);
    unlink(path);
}

/* A plain leader/follower group commit (no crypto) on a preallocated file:
 * what any BATCH implementation can hope for with this many appenders. */
typedef struct group {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    pthread_barrier_t gate;
    int fd;
    uint8_t *buf[2];
    size_t len;          /* bytes pending in buf[cur] */
    int cur;
    uint64_t next_seq;   /* last seq handed out */
    uint64_t durable;    /* last seq known durable */
    int syncing, failed;
    off_t off, size;
    atomic_int stop;
    atomic_uint_fast64_t acked;
    uint8_t frame[FRAME_LEN];
} group;

static void *group_thread(void *arg)
{
    group *g = arg;
    uint64_t acked = 0;

    pthread_barrier_wait(&g->gate);
    while (!atomic_load(&g->stop)) {
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
            if (g->off + (off_t)len > g->size)
                g->off = 0;
            off_t off = g->off;
            g->off += (off_t)len;
            pthread_mutex_unlock(&g->mu);
            int bad = pwrite(g->fd, mine, len, off) != (ssize_t)len ||
                      fdatasync(g->fd) != 0;
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
    atomic_fetch_add(&g->acked, acked);
    return NULL;
}

static void bench_group(const cfg *cf, fig *f)
{
    char path[PATH_MAX];
    group *g = calloc(1, sizeof *g);
    pthread_t *tid = calloc((size_t)cf->threads, sizeof *tid);
    size_t cap = (size_t)cf->threads * FRAME_LEN;
    int started = 0;

    if (!g || !tid) {
        fig_fail(f, -ENOMEM, "group commit", NULL);
        free(g);
        free(tid);
        return;
    }
    path_in(path, sizeof path, cf, "disk-group");
    g->size = 64ll << 20;
    g->fd = open(path, O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0600);
    g->buf[0] = malloc(cap);
    g->buf[1] = malloc(cap);
    if (g->fd < 0 || !g->buf[0] || !g->buf[1]) {
        fig_fail(f, g->fd < 0 ? -errno : -ENOMEM, "group commit", path);
        goto out;
    }
    int rc = posix_fallocate(g->fd, 0, g->size);
    if (rc != 0 || fsync(g->fd) != 0) {
        fig_fail(f, rc ? -rc : -errno, "fallocate", path);
        goto out;
    }
    randombytes_buf(g->frame, sizeof g->frame);
    pthread_mutex_init(&g->mu, NULL);
    pthread_cond_init(&g->cv, NULL);
    pthread_barrier_init(&g->gate, NULL, (unsigned)cf->threads + 1);
    for (; started < cf->threads; started++)
        if (pthread_create(&tid[started], NULL, group_thread, g) != 0)
            break;
    if (started < cf->threads) {
        /* The barrier would never open: run what started is impossible to
         * do cleanly, so report and leave (the process ends soon after). */
        fig_fail(f, -EAGAIN, "pthread_create", NULL);
        return;
    }
    pthread_barrier_wait(&g->gate);
    double t0 = now();
    while (now() < t0 + cf->sync_secs && !interrupted)
        usleep(10000);
    atomic_store(&g->stop, 1);
    for (int i = 0; i < started; i++)
        pthread_join(tid[i], NULL);
    double t1 = now();
    if (g->failed)
        fig_fail(f, -EIO, "group commit", "write/fdatasync failed");
    else
        fig_done(f, atomic_load(&g->acked), t1 - t0);
    pthread_barrier_destroy(&g->gate);
    pthread_cond_destroy(&g->cv);
    pthread_mutex_destroy(&g->mu);
out:
    if (g->fd >= 0)
        close(g->fd);
    unlink(path);
    free(g->buf[0]);
    free(g->buf[1]);
    free(g);
    free(tid);
}

/* ---- the peer: SQLite ------------------------------------------------------ */

static void bench_sqlite(const cfg *cf, fig *f)
{
    char path[PATH_MAX], side[PATH_MAX + 8];
    sqlite3 *db = NULL;
    sqlite3_stmt *ins = NULL;
    uint64_t n = 0;

    path_in(path, sizeof path, cf, "peer.sqlite");
    if (sqlite3_open(path, &db) != SQLITE_OK ||
        sqlite3_exec(db, "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;"
                         "CREATE TABLE rec(id INTEGER PRIMARY KEY, v BLOB);",
                     NULL, NULL, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(db, "INSERT INTO rec(v) VALUES (?1)", -1, &ins,
                           NULL) != SQLITE_OK) {
        snprintf(f->note, sizeof f->note, "sqlite: %s",
                 db ? sqlite3_errmsg(db) : "out of memory");
        f->err = -1;
        goto out;
    }
    /* journal_mode=WAL answers with the mode it got: make sure it is WAL. */
    {
        sqlite3_stmt *q = NULL;
        int wal = 0;
        if (sqlite3_prepare_v2(db, "PRAGMA journal_mode", -1, &q, NULL) ==
                SQLITE_OK &&
            sqlite3_step(q) == SQLITE_ROW)
            wal = strcmp((const char *)sqlite3_column_text(q, 0), "wal") == 0;
        sqlite3_finalize(q);
        if (!wal) {
            snprintf(f->note, sizeof f->note, "sqlite: WAL mode refused");
            f->err = -1;
            goto out;
        }
    }
    uint8_t row[PAYLOAD];
    memcpy(row, cf->payload, PAYLOAD);
    double t0 = now(), t1 = t0, end = t0 + cf->sync_secs;
    while (t1 < end && !interrupted) {
        put_le64(row, n);
        if (sqlite3_bind_blob(ins, 1, row, PAYLOAD, SQLITE_STATIC) !=
                SQLITE_OK ||
            sqlite3_step(ins) != SQLITE_DONE) {
            snprintf(f->note, sizeof f->note, "sqlite insert: %s",
                     sqlite3_errmsg(db));
            f->err = -1;
            goto out;
        }
        sqlite3_reset(ins);
        n++;
        t1 = now();
    }
    fig_done(f, n, t1 - t0);
out:
    sqlite3_finalize(ins);
    sqlite3_close(db);
    unlink(path);
    snprintf(side, sizeof side, "%s-wal", path);
    unlink(side);
    snprintf(side, sizeof side, "%s-shm", path);
    unlink(side);
}

/* ---- tally ----------------------------------------------------------------- */

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

/* One thread appending for secs under the given policy. */
static void bench_append1(const cfg *cf, tally_sync_policy sync,
                          const char *name, double secs, fig *f,
                          fig *close_fig)
{
    char dir[PATH_MAX];
    tally *t = NULL;
    tally_record_in in;
    uint8_t payload[PAYLOAD];
    uint64_t n = 0;
    int rc;

    path_in(dir, sizeof dir, cf, name);
    if (journal_create(cf, dir, sync, &t, f) < 0)
        goto out;
    memcpy(payload, cf->payload, PAYLOAD);
    rec_fill(&in, payload);
    /* NONE is checked against the clock every 256 appends, the others each
     * time (they take ~100 us or more). */
    unsigned every = sync == TALLY_SYNC_NONE ? 256 : 1;
    double t0 = now(), t1 = t0, end = t0 + secs;
    while (t1 < end && !interrupted) {
        for (unsigned i = 0; i < every; i++) {
            put_le64(payload, n);
            if ((rc = tally_append(t, &in, NULL)) < 0) {
                fig_fail(f, rc, "tally_append", tally_errmsg(t));
                goto out;
            }
            n++;
        }
        t1 = now();
    }
    fig_done(f, n, t1 - t0);
    if (close_fig) {
        double c0 = now();
        rc = tally_close(t);
        t = NULL;
        if (rc < 0)
            fig_fail(close_fig, rc, "tally_close", NULL);
        else
            fig_done(close_fig, 1, now() - c0);
    }
out:
    if (t && (rc = tally_close(t)) < 0 && !f->err)
        fig_fail(f, rc, "tally_close", NULL);
    rm_rf(dir);
}

typedef struct batch_ctx {
    tally *t;
    const cfg *cf;
    pthread_barrier_t gate;
    atomic_int stop;
    atomic_int err;
    atomic_uint_fast64_t acked;
} batch_ctx;

static void *batch_thread(void *arg)
{
    batch_ctx *b = arg;
    tally_record_in in;
    uint8_t payload[PAYLOAD];
    uint64_t acked = 0;

    memcpy(payload, b->cf->payload, PAYLOAD);
    rec_fill(&in, payload);
    pthread_barrier_wait(&b->gate);
    while (!atomic_load(&b->stop)) {
        put_le64(payload, acked);
        int rc = tally_append(b->t, &in, NULL);
        if (rc < 0) {
            atomic_store(&b->err, rc);
            break;
        }
        acked++;
    }
    atomic_fetch_add(&b->acked, acked);
    return NULL;
}

static void bench_batch(const cfg *cf, fig *f)
{
    char dir[PATH_MAX];
    batch_ctx *b = calloc(1, sizeof *b);
    pthread_t *tid = calloc((size_t)cf->threads, sizeof *tid);
    int started = 0, rc;

    path_in(dir, sizeof dir, cf, "batch");
    if (!b || !tid) {
        fig_fail(f, -ENOMEM, "batch", NULL);
        goto out;
    }
    b->cf = cf;
    if (journal_create(cf, dir, TALLY_SYNC_BATCH, &b->t, f) < 0)
        goto out;
    pthread_barrier_init(&b->gate, NULL, (unsigned)cf->threads + 1);
    for (; started < cf->threads; started++)
        if (pthread_create(&tid[started], NULL, batch_thread, b) != 0)
            break;
    if (started < cf->threads) {
        fig_fail(f, -EAGAIN, "pthread_create", NULL);
        return; /* see bench_group */
    }
    pthread_barrier_wait(&b->gate);
    double t0 = now();
    while (now() < t0 + cf->sync_secs && !interrupted && !atomic_load(&b->err))
        usleep(10000);
    atomic_store(&b->stop, 1);
    for (int i = 0; i < started; i++)
        pthread_join(tid[i], NULL);
    double t1 = now();
    pthread_barrier_destroy(&b->gate);
    if ((rc = atomic_load(&b->err)) < 0)
        fig_fail(f, rc, "tally_append (batch)", tally_errmsg(b->t));
    else
        fig_done(f, atomic_load(&b->acked), t1 - t0);
out:
    if (b && b->t && (rc = tally_close(b->t)) < 0 && !f->err)
        fig_fail(f, rc, "tally_close", NULL);
    rm_rf(dir);
    free(b);
    free(tid);
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
    double secs;
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
    double t0 = now();
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
    o->hwm_kb = status_kb("VmHWM");
}

/* Reads dir in a forked child; returns its ru_maxrss in KiB, or -1. */
static long read_in_child(const cfg *cf, const char *dir, int keyed,
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
        fig_done(f, o.records, o.secs);
        uint64_t want = (cf->big_mb << 20) / FRAME_LEN;
        if (o.records != want)
            snprintf(f->note, sizeof f->note,
                     "read %" PRIu64 " records, wrote %" PRIu64, o.records,
                     want);
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
    snprintf(out, n, "%s (%.1f MB/s)", grouped,
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
           "verify → verify limit. Replay and verify read a %.0f MB journal "
           "just written (page cache warm), each in a forked child;",
           r->big_mb_real);
    printf(" the child's RSS when it starts reading is %.1f MB.",
           r->rss_base / 1024.0);
    if (r->none_close.rate >= 0 && !r->none_close.err)
        printf(" tally_close after the NONE run took %.0f ms.",
               r->none_close.secs * 1e3);
    printf("\n");

    const fig *all[] = { &r->cpu,    &r->replay_lim, &r->verify_lim,
                         &r->disk,   &r->disk_grow,  &r->group,
                         &r->sqlite, &r->none,       &r->none_close,
                         &r->always, &r->batch,      &r->replay,
                         &r->verify };
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        if (all[i]->note[0])
            printf("\n- note: %s", all[i]->note);
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
    cf.cpu_secs = cf.quick ? 0.3 : 1.5;
    cf.sync_secs = cf.quick ? 0.7 : 2.5;
    cf.none_secs = cf.quick ? 0.5 : 2.0;

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
                    &r.disk_grow, &r.group,   &r.sqlite,     &r.none,
                    &r.none_close, &r.always, &r.batch,      &r.replay,
                    &r.verify };
    for (size_t i = 0; i < sizeof figs / sizeof figs[0]; i++)
        fig_init(figs[i]);
    r.rss_replay_small = r.rss_replay_big = -1;
    r.rss_verify_small = r.rss_verify_big = -1;

    double t0 = now();
    print_machine(&cf);
    fflush(stdout);

#define STEP(bit, label, call)                                  \
    do {                                                        \
        if ((cf.cases & (bit)) && !interrupted) {               \
            fprintf(stderr, "bench: %s\n", label);              \
            call;                                               \
        }                                                       \
    } while (0)

    STEP(C_LIMITS, "CPU limit", bench_cpu_limit(&cf, &r));
    STEP(C_LIMITS, "replay and verify limits", bench_read_limits(&cf, &r));
    STEP(C_DISK, "disk limit (preallocated)", bench_disk(&cf, &r.disk, 1));
    STEP(C_DISK, "disk, growing file", bench_disk(&cf, &r.disk_grow, 0));
    STEP(C_DISK, "group commit limit", bench_group(&cf, &r.group));
    STEP(C_SQLITE, "SQLite WAL FULL", bench_sqlite(&cf, &r.sqlite));
    STEP(C_NONE, "tally NONE",
         bench_append1(&cf, TALLY_SYNC_NONE, "none", cf.none_secs, &r.none,
                       &r.none_close));
    STEP(C_ALWAYS, "tally ALWAYS",
         bench_append1(&cf, TALLY_SYNC_ALWAYS, "always", cf.sync_secs,
                       &r.always, NULL));
    STEP(C_BATCH, "tally BATCH", bench_batch(&cf, &r.batch));
    STEP(C_READ, "tally replay and verify", bench_read(&cf, &r));
#undef STEP

    (void)print_table(&cf, &r);
    printf("\nRun took %.0f s%s.\n", now() - t0,
           interrupted ? " (interrupted)" : "");
    rm_rf(cf.base);
    sodium_free(cf.key);
    int errors = 0;
    for (size_t i = 0; i < sizeof figs / sizeof figs[0]; i++)
        errors += figs[i]->err != 0;
    return interrupted ? 130 : errors ? 1 : 0;
}
