/*
 * e2e.c — end-to-end tests of tallyd: the real daemon binary ($TALLYD) in a
 * child process, real nanomsg sockets, producer and subscriber threads
 * using the client library, the tally-client binary ($TALLY_CLIENT) as a
 * late follower, kill -9 and SIGTERM. One scenario per run:
 *
 *   e2e stress       8 producers (REP and PULL) x N records; 3 subscribers,
 *                    one joining late with --from 1, one filtered by type;
 *                    every record once, dense seqs, the chain verifies
 *   e2e kill9        kill -9 mid-stream and restart: every acknowledged
 *                    record present, a subscriber resumes without a gap
 *   e2e garbage      garbage, truncated and oversized messages on every
 *                    socket: error replies, log lines, no write, still serving
 *   e2e sigterm      SIGTERM under load: exit 0, everything taken committed
 *                    and published
 *   e2e stored       tcp:// publishes records as stored; a follower with the
 *                    key decrypts them, one without checks the chain
 *   e2e ids          request ids: a repeat is answered from the window, and
 *                    after a restart from the request log and the journal;
 *                    a crash between the write and its 'D' entry (made by
 *                    hand) is resolved by comparing records; reuse refused
 *
 * N = 2000 by default, 10000 with TALLY_TEST_LONG=1.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <nanomsg/nn.h>
#include <nanomsg/pipeline.h>
#include <nanomsg/reqrep.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <sodium.h>

#include "reqlog.h"
#include "tally-client.h"
#include "tally.h"
#include "wire.h"

#define NPROD 8
#define PULL_BATCH 50

static int failures;

#define CHECK(cond, ...)                                              \
    do {                                                              \
        if (!(cond)) {                                                \
            fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__,   \
                    #cond);                                           \
            fprintf(stderr, __VA_ARGS__);                             \
            fputc('\n', stderr);                                      \
            failures++;                                               \
        }                                                             \
    } while (0)

#define REQUIRE(cond, ...)                                            \
    do {                                                              \
        if (!(cond)) {                                                \
            fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__,   \
                    #cond);                                           \
            fprintf(stderr, __VA_ARGS__);                             \
            fputc('\n', stderr);                                      \
            exit(1);                                                  \
        }                                                             \
    } while (0)

static void note(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void note(const char *fmt, ...)
{
    va_list ap;

    fputs("# ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

static void msleep(unsigned ms)
{
    struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };

    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

static uint64_t now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* ---- the environment of one scenario ---------------------------------------- */

typedef struct env {
    char tmp[256];
    char dir[300];
    char key[300];
    char log[300];
    tally_client_urls urls;
    const char *tallyd;
    const char *client;
    uint8_t *mk;
    pid_t pid;
    uint32_t per_producer;
} env;

static void env_init(env *e, const char *name)
{
    const char *base = getenv("TMPDIR");

    memset(e, 0, sizeof e[0]);
    e->tallyd = getenv("TALLYD");
    e->client = getenv("TALLY_CLIENT");
    REQUIRE(e->tallyd && e->client, "set TALLYD and TALLY_CLIENT");
    snprintf(e->tmp, sizeof e->tmp, "%s/tallyd-%s-XXXXXX",
             base && *base ? base : "/tmp", name);
    REQUIRE(mkdtemp(e->tmp), "mkdtemp: %s", strerror(errno));
    snprintf(e->dir, sizeof e->dir, "%s/j", e->tmp);
    snprintf(e->key, sizeof e->key, "%s/key", e->tmp);
    snprintf(e->log, sizeof e->log, "%s/tallyd.log", e->tmp);
    REQUIRE(tally_keygen(e->key) == 0, "keygen");
    e->mk = sodium_malloc(TALLY_KEY_BYTES);
    REQUIRE(e->mk && tally_key_load(e->key, e->mk) == 0, "key load");
    REQUIRE(tally_client_default_urls(e->dir, &e->urls) == 0, "urls");
    e->per_producer = getenv("TALLY_TEST_LONG") ? 10000 : 2000;
    note("scenario %s in %s", name, e->tmp);
}

static void env_done(env *e)
{
    char cmd[600];

    sodium_free(e->mk);
    if (failures == 0) {
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", e->tmp);
        if (system(cmd) != 0)
            note("could not remove %s", e->tmp);
    } else {
        note("kept %s (daemon log: %s)", e->tmp, e->log);
    }
}

/* Creates the journal with small segments, so that a run crosses many
 * segment files (the publisher and range readers must follow them). */
static void init_small_segments(env *e)
{
    tally_options o;

    memset(&o, 0, sizeof o);
    o.master_key = e->mk;
    o.segment_size = 128 * 1024;
    REQUIRE(tally_init(e->dir, &o) == 0, "init");
}

/* Starts tallyd with extra arguments (NULL-terminated). */
static pid_t start_daemon(env *e, ...)
{
    const char *argv[32];
    int argc = 0, fd;
    va_list ap;
    pid_t pid;
    const char *a;

    argv[argc++] = e->tallyd;
    argv[argc++] = e->dir;
    argv[argc++] = "--key-file";
    argv[argc++] = e->key;
    argv[argc++] = "--create";
    va_start(ap, e);
    while ((a = va_arg(ap, const char *)) && argc < 30)
        argv[argc++] = a;
    va_end(ap);
    argv[argc] = NULL;
    pid = fork();
    REQUIRE(pid >= 0, "fork");
    if (pid == 0) {
        fd = open(e->log, O_WRONLY | O_CREAT | O_APPEND, 0600);
        if (fd >= 0) {
            dup2(fd, 2);
            close(fd);
        }
        execv(e->tallyd, (char *const *)argv);
        _exit(127);
    }
    e->pid = pid;
    return pid;
}

static int wait_ready(const char *url, int timeout_ms)
{
    tally_client_options o = { .timeout_ms = 300 };
    uint64_t until = now_ms() + (uint64_t)timeout_ms;

    while (now_ms() < until) {
        tally_client *c;
        tally_client_status st;
        int rc = tally_client_connect(&c, url, &o);

        if (rc == 0) {
            rc = tally_client_status_get(c, &st);
            tally_client_close(c);
            if (rc == 0)
                return 0;
        }
        msleep(50);
    }
    return -ETIMEDOUT;
}

/* Sends sig and waits for the exit; returns the exit status (or 128+sig). */
static int stop_daemon(env *e, int sig, int timeout_ms)
{
    uint64_t until = now_ms() + (uint64_t)timeout_ms;
    int st;

    kill(e->pid, sig);
    while (now_ms() < until) {
        pid_t r = waitpid(e->pid, &st, WNOHANG);

        if (r == e->pid) {
            e->pid = 0;
            return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
        }
        msleep(20);
    }
    kill(e->pid, SIGKILL);
    waitpid(e->pid, &st, 0);
    e->pid = 0;
    return -1;
}

static int count_in_log(const env *e, const char *needle)
{
    FILE *f = fopen(e->log, "r");
    char line[2048];
    int n = 0;

    if (!f)
        return 0;
    while (fgets(line, sizeof line, f))
        if (strstr(line, needle))
            n++;
    fclose(f);
    return n;
}

static uint64_t status_head(const env *e)
{
    tally_client *c;
    tally_client_status st;
    uint64_t head = UINT64_MAX;

    if (tally_client_connect(&c, e->urls.append_url, NULL) == 0) {
        if (tally_client_status_get(c, &st) == 0)
            head = st.head_seq;
        tally_client_close(c);
    }
    return head;
}

/* ---- producers ------------------------------------------------------------- */

typedef struct producer {
    env *e;
    unsigned id;
    uint32_t n;
    int timeout_ms;
    bool retry;          /* keep retrying through a daemon restart */
    atomic_int *stop;
    /* results */
    uint8_t *acked;      /* acked[i] = 1 once record i was acknowledged */
    uint32_t sent_rep, sent_pull, errors, dups;
    atomic_uint progress;
} producer;

static void payload_of(unsigned p, uint32_t i, char *buf, size_t len)
{
    snprintf(buf, len, "P%02u-%06u-%s", p, i,
             i % 7 == 0 ? "a longer payload with some bytes in it" : "x");
}

static uint16_t type_of(unsigned p, uint32_t i)
{
    return (uint16_t)((p + i) % 3);
}

/* Even records go through REP one by one (acknowledged), odd ones in
 * batches through PULL. */
static void *producer_main(void *arg)
{
    producer *pr = arg;
    tally_client *c;
    tally_client_options o = { .timeout_ms = pr->timeout_ms };
    static char keybuf[NPROD][8];
    tally_record_in batch[PULL_BATCH];
    char bpay[PULL_BATCH][96];
    size_t nb = 0;
    char pay[96];
    uint32_t i;

    snprintf(keybuf[pr->id], sizeof keybuf[pr->id], "p%u", pr->id);
    if (tally_client_connect(&c, pr->e->urls.append_url, &o) < 0) {
        pr->errors++;
        return NULL;
    }
    for (i = 0; i < pr->n && !(pr->stop && atomic_load(pr->stop)); i++) {
        tally_record_in r = {
            .type = type_of(pr->id, i),
            .key = keybuf[pr->id],
            .key_len = strlen(keybuf[pr->id]),
        };

        if (i % 2 == 0) {
            tally_client_ack ack;
            uint8_t rid[TALLY_CLIENT_ID_BYTES];
            int rc;

            payload_of(pr->id, i, pay, sizeof pay);
            r.payload = pay;
            r.payload_len = strlen(pay);
            /* one request id per record, kept across retries: the daemon
             * stores it once however often it arrives */
            randombytes_buf(rid, sizeof rid);
            for (;;) {
                rc = tally_client_append_id(c, rid, &r, 1, &ack);
                if (rc == 0 || !pr->retry ||
                    (pr->stop && atomic_load(pr->stop)))
                    break;
                /* the daemon is restarting: the same request again */
                msleep(20);
            }
            if (rc == 0) {
                pr->acked[i] = 1;
                pr->sent_rep++;
                pr->dups += ack.duplicate != 0;
            } else {
                pr->errors++;
                break;
            }
        } else {
            payload_of(pr->id, i, bpay[nb], sizeof bpay[nb]);
            r.payload = bpay[nb];
            r.payload_len = strlen(bpay[nb]);
            batch[nb++] = r;
            if (nb == PULL_BATCH) {
                if (tally_client_push(c, batch, nb) == 0)
                    pr->sent_pull += (uint32_t)nb;
                else
                    pr->errors++;
                nb = 0;
            }
        }
        atomic_store(&pr->progress, i + 1);
    }
    if (nb && tally_client_push(c, batch, nb) == 0)
        pr->sent_pull += (uint32_t)nb;
    /* nanomsg sends pushes in the background */
    msleep(300);
    tally_client_close(c);
    return NULL;
}

static void producers_start(env *e, producer *ps, pthread_t *th, int timeout,
                            bool retry, atomic_int *stop)
{
    unsigned p;

    for (p = 0; p < NPROD; p++) {
        memset(&ps[p], 0, sizeof ps[p]);
        ps[p].e = e;
        ps[p].id = p;
        ps[p].n = e->per_producer;
        ps[p].timeout_ms = timeout;
        ps[p].retry = retry;
        ps[p].stop = stop;
        ps[p].acked = calloc(e->per_producer, 1);
        REQUIRE(ps[p].acked, "oom");
        REQUIRE(pthread_create(&th[p], NULL, producer_main, &ps[p]) == 0,
                "thread");
    }
}

static uint64_t producers_progress(producer *ps)
{
    uint64_t n = 0;

    for (unsigned p = 0; p < NPROD; p++)
        n += atomic_load(&ps[p].progress);
    return n;
}

/* ---- subscribers ---------------------------------------------------------- */

typedef struct subscriber {
    env *e;
    uint64_t from;
    bool filter;
    uint16_t type;
    uint64_t until;     /* stop once this seq is delivered (0: by stop) */
    volatile int stop;
    /* results */
    uint64_t count, last_seq, bad_order;
    uint64_t *seqs;     /* seqs[i]: the i-th seq delivered */
    size_t cap;
    int rc;
    char err[512];
} subscriber;

static int sub_record(void *ctx, const tally_client_record *r)
{
    subscriber *s = ctx;

    if (r->seq <= s->last_seq)
        s->bad_order++;
    if (s->filter && r->type != s->type)
        s->bad_order++;
    if (!r->decrypted)
        s->bad_order++;
    if (s->count == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 4096;
        uint64_t *p = realloc(s->seqs, cap * sizeof *p);

        if (!p)
            return -ENOMEM;
        s->seqs = p;
        s->cap = cap;
    }
    s->seqs[s->count++] = r->seq;
    s->last_seq = r->seq;
    return 0;
}

static void *subscriber_main(void *arg)
{
    subscriber *s = arg;
    tally_client *c;
    tally_client_options o = { .timeout_ms = 30000, .master_key = s->e->mk };
    tally_client_follow_options fo;

    s->rc = tally_client_connect(&c, s->e->urls.append_url, &o);
    if (s->rc < 0)
        return NULL;
    memset(&fo, 0, sizeof fo);
    fo.from_seq = s->from;
    fo.filter_type = s->filter;
    fo.type = s->type;
    fo.on_record = sub_record;
    fo.ctx = s;
    fo.until_seq = s->until;
    fo.stop = &s->stop;
    s->rc = tally_client_follow(c, &fo);
    snprintf(s->err, sizeof s->err, "%s", tally_client_errmsg(c));
    tally_client_close(c);
    return NULL;
}

/* ---- checking the journal --------------------------------------------------- */

typedef struct contents {
    uint64_t records;
    uint64_t dense_errors;
    uint64_t unknown;
    uint32_t *seen[NPROD]; /* how often each (producer, i) is stored */
    uint16_t *types;       /* type by seq (1-based) */
    uint64_t cap;
} contents;

static void read_journal(env *e, contents *ct)
{
    tally_iter *it;
    tally_record r;
    tally_verify_report rep;
    uint64_t expect = 1;
    int rc;

    memset(ct, 0, sizeof *ct);
    for (unsigned p = 0; p < NPROD; p++)
        ct->seen[p] = calloc(e->per_producer, sizeof(uint32_t));
    ct->cap = (uint64_t)NPROD * e->per_producer * 2 + 16;
    ct->types = calloc(ct->cap + 1, sizeof(uint16_t));
    rc = tally_verify(e->dir, e->mk, &rep);
    CHECK(rc == 0, "verify: %s (%s at %s+%" PRIu64 ")", tally_strerror(rc),
          rep.message, rep.segment, rep.offset);
    REQUIRE(tally_iter_open(&it, e->dir, e->mk, 1, 0) == 0, "iter");
    while ((rc = tally_iter_next(it, &r)) == 1) {
        unsigned p;
        uint32_t i;

        if (r.seq != expect++)
            ct->dense_errors++;
        ct->records++;
        if (r.seq <= ct->cap)
            ct->types[r.seq] = r.type;
        if (r.payload_len >= 10 &&
            sscanf((const char *)r.payload, "P%02u-%06u", &p, &i) == 2 &&
            p < NPROD && i < e->per_producer && type_of(p, i) == r.type)
            ct->seen[p][i]++;
        else
            ct->unknown++;
    }
    CHECK(rc == 0, "iter: %s", tally_iter_errmsg(it));
    tally_iter_free(it);
}

static void contents_free(contents *ct)
{
    for (unsigned p = 0; p < NPROD; p++)
        free(ct->seen[p]);
    free(ct->types);
}

/* A subscriber saw seqs lo..hi each once, in order (filtered: exactly the
 * seqs of its type). */
static void check_subscriber(const char *name, subscriber *s,
                             const contents *ct, uint64_t hi)
{
    uint64_t want = 0, k = 0;

    CHECK(s->rc == 0, "%s: follow returned %d (%s)", name, s->rc, s->err);
    CHECK(s->bad_order == 0, "%s: %" PRIu64 " records out of order/type",
          name, s->bad_order);
    for (uint64_t seq = s->from ? s->from : 1; seq <= hi; seq++) {
        if (s->filter && ct->types[seq] != s->type)
            continue;
        want++;
        if (k < s->count && s->seqs[k] == seq)
            k++;
    }
    CHECK(k == want && s->count == want,
          "%s: saw %" PRIu64 " records, %" PRIu64 " matched, %" PRIu64
          " expected", name, s->count, k, want);
    note("%s: %" PRIu64 " records in order", name, s->count);
}

/* ---- scenarios ------------------------------------------------------------ */

static int run_stress(void)
{
    env e;
    producer ps[NPROD];
    pthread_t th[NPROD], ta, tb;
    subscriber sa, sb;
    contents ct;
    uint64_t total, t0;
    pid_t late;
    char until[32], outpath[400];
    int st;

    env_init(&e, "stress");
    total = (uint64_t)NPROD * e.per_producer;
    init_small_segments(&e);
    start_daemon(&e, NULL);
    REQUIRE(wait_ready(e.urls.append_url, 10000) == 0, "daemon not ready");

    memset(&sa, 0, sizeof sa);
    sa.e = &e;
    sa.from = 1;
    sa.until = total;
    memset(&sb, 0, sizeof sb);
    sb.e = &e;
    sb.from = 1;
    sb.filter = true;
    sb.type = 1;
    pthread_create(&ta, NULL, subscriber_main, &sa);
    pthread_create(&tb, NULL, subscriber_main, &sb);
    msleep(200);

    t0 = now_ms();
    producers_start(&e, ps, th, 30000, false, NULL);
    /* the late follower: the CLI, from seq 1, once half is in */
    while (producers_progress(ps) < total / 2)
        msleep(10);
    snprintf(until, sizeof until, "%" PRIu64, total);
    snprintf(outpath, sizeof outpath, "%s/late.jsonl", e.tmp);
    late = fork();
    REQUIRE(late >= 0, "fork");
    if (late == 0) {
        int fd = open(outpath, O_WRONLY | O_CREAT | O_TRUNC, 0600);

        dup2(fd, 1);
        close(fd);
        execl(e.client, e.client, "follow", "--connect", e.urls.append_url,
              "--from", "1", "--until", until, "--json", (char *)NULL);
        _exit(127);
    }
    for (unsigned p = 0; p < NPROD; p++)
        pthread_join(th[p], NULL);
    note("producers done: %" PRIu64 " records in %" PRIu64 " ms", total,
         now_ms() - t0);
    for (unsigned p = 0; p < NPROD; p++) {
        CHECK(ps[p].errors == 0, "producer %u: %u errors", p, ps[p].errors);
        CHECK(ps[p].sent_rep + ps[p].sent_pull == e.per_producer,
              "producer %u sent %u+%u", p, ps[p].sent_rep, ps[p].sent_pull);
    }
    /* the pushed batches are committed in the background: wait for all */
    t0 = now_ms();
    while (status_head(&e) < total && now_ms() - t0 < 60000)
        msleep(50);
    CHECK(status_head(&e) == total, "head %" PRIu64 ", want %" PRIu64,
          status_head(&e), total);
    pthread_join(ta, NULL);
    {
        /* the filtered subscriber: stop once it has been quiet a second */
        uint64_t last = 0;

        t0 = now_ms();
        do {
            last = sb.last_seq;
            msleep(1000);
        } while (sb.last_seq != last && now_ms() - t0 < 30000);
        sb.stop = 1;
        pthread_join(tb, NULL);
    }
    if (waitpid(late, &st, 0) == late)
        CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "late follower: status "
              "%d", st);
    CHECK(stop_daemon(&e, SIGTERM, 20000) == 0, "daemon exit status");

    read_journal(&e, &ct);
    CHECK(ct.records == total, "journal holds %" PRIu64 " records, want %"
          PRIu64, ct.records, total);
    CHECK(ct.dense_errors == 0 && ct.unknown == 0, "dense %" PRIu64
          " unknown %" PRIu64, ct.dense_errors, ct.unknown);
    for (unsigned p = 0; p < NPROD; p++)
        for (uint32_t i = 0; i < e.per_producer; i++)
            if (ct.seen[p][i] != 1) {
                CHECK(0, "record P%02u-%06u stored %u times", p, i,
                      ct.seen[p][i]);
                p = NPROD;
                break;
            }
    check_subscriber("subscriber A (early)", &sa, &ct, total);
    check_subscriber("subscriber B (type 1)", &sb, &ct, total);
    {
        /* the late CLI follower: every seq once, in order */
        FILE *f = fopen(outpath, "r");
        char line[4096];
        uint64_t expect = 1, n = 0, bad = 0;

        REQUIRE(f, "late output");
        while (fgets(line, sizeof line, f)) {
            unsigned long long seq;

            if (sscanf(line, "{\"seq\":%llu,", &seq) != 1 || seq != expect)
                bad++;
            expect++;
            n++;
        }
        fclose(f);
        CHECK(n == total && bad == 0, "late CLI follower: %" PRIu64
              " lines, %" PRIu64 " out of place", n, bad);
        note("subscriber C (late CLI, --from 1): %" PRIu64 " records", n);
    }
    CHECK(count_in_log(&e, " error ") == 0, "errors in the daemon log");
    {
        /* the run crossed segment files */
        char cmd[400];
        FILE *f;
        int nseg = 0;

        snprintf(cmd, sizeof cmd, "ls '%s' | grep -c '\\.seg$'", e.dir);
        f = popen(cmd, "r");
        if (f) {
            if (fscanf(f, "%d", &nseg) != 1)
                nseg = 0;
            pclose(f);
        }
        CHECK(nseg > 3, "only %d segment files", nseg);
        note("%d segment files", nseg);
    }
    contents_free(&ct);
    for (unsigned p = 0; p < NPROD; p++)
        free(ps[p].acked);
    free(sa.seqs);
    free(sb.seqs);
    env_done(&e);
    return failures ? 1 : 0;
}

static int run_kill9(void)
{
    env e;
    producer ps[NPROD];
    pthread_t th[NPROD], ta;
    subscriber sa;
    contents ct;
    uint64_t total, head, t0, acked = 0, missing = 0;
    int rc;

    env_init(&e, "kill9");
    total = (uint64_t)NPROD * e.per_producer;
    init_small_segments(&e);
    start_daemon(&e, NULL);
    REQUIRE(wait_ready(e.urls.append_url, 10000) == 0, "daemon not ready");
    memset(&sa, 0, sizeof sa);
    sa.e = &e;
    sa.from = 1;
    pthread_create(&ta, NULL, subscriber_main, &sa);
    msleep(200);
    producers_start(&e, ps, th, 30000, true, NULL);
    while (producers_progress(ps) < total / 3)
        msleep(5);
    rc = stop_daemon(&e, SIGKILL, 5000);
    CHECK(rc == 128 + SIGKILL, "kill -9: status %d", rc);
    note("killed at about %" PRIu64 " records sent", producers_progress(ps));
    msleep(300);
    start_daemon(&e, NULL);
    REQUIRE(wait_ready(e.urls.append_url, 10000) == 0, "restart not ready");
    for (unsigned p = 0; p < NPROD; p++)
        pthread_join(th[p], NULL);
    /* pushes in flight at the kill are lost (never acknowledged); wait until
     * the head stops moving */
    t0 = now_ms();
    head = 0;
    for (;;) {
        uint64_t h;

        msleep(500);
        h = status_head(&e);
        if (h == head || now_ms() - t0 > 60000)
            break;
        head = h;
    }
    /* the subscriber must reach the head without a gap */
    t0 = now_ms();
    while (sa.last_seq < head && now_ms() - t0 < 30000)
        msleep(20);
    sa.stop = 1;
    pthread_join(ta, NULL);
    CHECK(stop_daemon(&e, SIGTERM, 20000) == 0, "daemon exit status");
    CHECK(count_in_log(&e, " recovered ") <= 1, "recovery lines");

    read_journal(&e, &ct);
    CHECK(ct.dense_errors == 0 && ct.unknown == 0, "dense %" PRIu64
          " unknown %" PRIu64, ct.dense_errors, ct.unknown);
    CHECK(ct.records == head, "journal %" PRIu64 " records, head was %"
          PRIu64, ct.records, head);
    for (unsigned p = 0; p < NPROD; p++)
        for (uint32_t i = 0; i < e.per_producer; i++)
            if (ps[p].acked[i]) {
                acked++;
                if (ct.seen[p][i] == 0)
                    missing++;
            }
    CHECK(missing == 0, "%" PRIu64 " acknowledged records missing", missing);
    note("%" PRIu64 " acknowledged, all present; journal %" PRIu64
         " records", acked, ct.records);
    {
        /* exactly once: resends after the restart (nanomsg's, and the
         * producers' retries with the same request id) stored nothing new */
        uint64_t twice = 0, dups = 0;

        for (unsigned p = 0; p < NPROD; p++) {
            dups += ps[p].dups;
            for (uint32_t i = 0; i < e.per_producer; i++)
                twice += ct.seen[p][i] > 1;
        }
        CHECK(twice == 0, "%" PRIu64 " records stored more than once", twice);
        note("%" PRIu64 " resends answered as duplicates (daemon log: %d "
             "found in the journal, %d in the window, %d not in the journal "
             "and appended); no record stored twice", dups,
             count_in_log(&e, "state=journal"),
             count_in_log(&e, "state=committed") +
                 count_in_log(&e, "state=queued"),
             count_in_log(&e, "state=not-in-journal"));
    }
    check_subscriber("subscriber across kill -9", &sa, &ct, head);
    contents_free(&ct);
    for (unsigned p = 0; p < NPROD; p++)
        free(ps[p].acked);
    free(sa.seqs);
    env_done(&e);
    return failures ? 1 : 0;
}

/* Sends msg on a fresh REQ socket to url; returns the reply status (<0 an
 * error reply), 1 for a reply that is not an error, or -ETIMEDOUT. */
static int raw_request(const char *url, const void *msg, size_t len,
                       int timeout_ms)
{
    int s = nn_socket(AF_SP, NN_REQ), n, rc;
    void *buf = NULL;
    wire_reply r;
    const char *why;

    REQUIRE(s >= 0, "socket");
    nn_setsockopt(s, NN_SOL_SOCKET, NN_RCVTIMEO, &timeout_ms, sizeof(int));
    nn_connect(s, url);
    if (nn_send(s, msg, len, 0) < 0) {
        nn_close(s);
        return -nn_errno();
    }
    n = nn_recv(s, &buf, NN_MSG, 0);
    if (n < 0) {
        rc = -nn_errno();
        nn_close(s);
        return rc;
    }
    rc = wire_parse_reply(buf, (size_t)n, &r, &why);
    CHECK(rc == 0, "daemon sent a malformed reply: %s", why);
    nn_freemsg(buf);
    nn_close(s);
    return rc < 0 ? rc : (r.status < 0 ? r.status : 1);
}

/* Pushes msg to url; want_sent: whether nanomsg must take it (a PUSH at
 * a REP socket never gets through the SP handshake). */
static void raw_push_to(const char *url, const void *msg, size_t len,
                        bool want_sent)
{
    int s = nn_socket(AF_SP, NN_PUSH), to = 2000, rc;

    nn_setsockopt(s, NN_SOL_SOCKET, NN_SNDTIMEO, &to, sizeof to);
    nn_connect(s, url);
    rc = nn_send(s, msg, len, 0);
    CHECK((rc >= 0) == want_sent, "push: %d %s", rc,
          nn_strerror(nn_errno()));
    /* nn_close drops what is not sent yet: give a big message time */
    msleep(50 + (unsigned)(len / 10000));
    nn_close(s);
}

static void raw_push(const char *url, const void *msg, size_t len)
{
    raw_push_to(url, msg, len, true);
}

/* Writes bytes that are not the SP protocol straight to a socket. */
static void raw_stream_garbage(const char *url)
{
    struct sockaddr_un un;
    uint8_t junk[4096];
    int fd;

    if (strncmp(url, "ipc://", 6) != 0)
        return;
    memset(&un, 0, sizeof un);
    un.sun_family = AF_UNIX;
    snprintf(un.sun_path, sizeof un.sun_path, "%s", url + 6);
    fd = socket(AF_UNIX, SOCK_STREAM, 0);
    REQUIRE(fd >= 0, "socket");
    if (connect(fd, (struct sockaddr *)&un, sizeof un) == 0) {
        randombytes_buf(junk, sizeof junk);
        (void)!write(fd, junk, sizeof junk);
        /* a valid SP header then an absurd message length */
        memcpy(junk, "\0SP\0\0\x10\0\0\xff\xff\xff\xff\xff\xff\xff\xff", 16);
        (void)!write(fd, junk, 16);
        msleep(50);
    }
    close(fd);
}

static int run_garbage(void)
{
    env e;
    uint8_t small[64], *big;
    wire_buf b = { 0 };
    tally_record_in rec = { .type = 5, .key = "k", .key_len = 1,
                            .payload = "hello", .payload_len = 5 };
    int rc, errors = 0;
    uint64_t head0;

    env_init(&e, "garbage");
    start_daemon(&e, NULL);
    REQUIRE(wait_ready(e.urls.append_url, 10000) == 0, "daemon not ready");
    head0 = status_head(&e);
    CHECK(head0 == 0, "fresh journal head %" PRIu64, head0);

    /* REP: nothing, a byte, random bytes */
    CHECK(raw_request(e.urls.append_url, "", 0, 5000) < 0, "empty");
    CHECK(raw_request(e.urls.append_url, "\x01", 1, 5000) < 0, "one byte");
    for (int k = 0; k < 50; k++) {
        size_t n = 1 + randombytes_uniform(sizeof small);

        randombytes_buf(small, n);
        if (n >= 2 && small[0] >= WIRE_VERSION_MIN &&
            small[0] <= WIRE_VERSION && small[1] == WIRE_OP_STATUS)
            small[1] = 0x7f;
        rc = raw_request(e.urls.append_url, small, n, 5000);
        CHECK(rc < 0 && rc != -ETIMEDOUT, "random %zu bytes: %d", n, rc);
        errors++;
    }
    /* a valid append cut at every length */
    REQUIRE(wire_encode_append(&b, &rec, 1) == 0, "encode");
    for (size_t n = 0; n < b.len; n++) {
        rc = raw_request(e.urls.append_url, b.p, n, 5000);
        CHECK(rc < 0 && rc != -ETIMEDOUT, "append cut at %zu: %d", n, rc);
        errors++;
    }
    /* one trailing byte, an unknown version, flags, op, a reserved type */
    {
        uint8_t m[128];

        memcpy(m, b.p, b.len);
        m[b.len] = 0;
        CHECK(raw_request(e.urls.append_url, m, b.len + 1, 5000) == -EPROTO,
              "trailing byte");
        m[0] = WIRE_VERSION + 1;
        CHECK(raw_request(e.urls.append_url, m, b.len, 5000) ==
              TALLY_EFORMAT, "version 3");
        m[0] = 1;
        m[3] = 1; /* version 1 has no flags */
        CHECK(raw_request(e.urls.append_url, m, b.len, 5000) ==
              TALLY_EFORMAT, "flags");
        m[3] = 0;
        m[1] = 99;
        CHECK(raw_request(e.urls.append_url, m, b.len, 5000) == -EOPNOTSUPP,
              "op 99");
        m[1] = WIRE_OP_APPEND;
        wire_put16(m + 8, TALLY_TYPE_CHECKPOINT);
        CHECK(raw_request(e.urls.append_url, m, b.len, 5000) == -EINVAL,
              "checkpoint type");
        errors += 5;
    }
    /* oversized: over the request limit but under nanomsg's: an error */
    big = calloc(1, WIRE_MAX_REQUEST + 1);
    REQUIRE(big, "oom");
    memcpy(big, b.p, 8);
    CHECK(raw_request(e.urls.append_url, big, WIRE_MAX_REQUEST + 1, 20000) ==
          TALLY_ETOOBIG, "oversized");
    errors++;
    /* a declared payload length beyond the message */
    wire_put32(big + 4, 1);
    wire_put16(big + 8, 1);
    wire_put16(big + 10, 0);
    wire_put32(big + 12, TALLY_MAX_PAYLOAD);
    CHECK(raw_request(e.urls.append_url, big, 64, 5000) == -EPROTO,
          "payload length beyond the message");
    errors++;
    CHECK(count_in_log(&e, "bad-message socket=append") >= errors,
          "log lines: %d of %d", count_in_log(&e, "bad-message socket=append"),
          errors);

    /* PULL: the same kinds of garbage, which can only be logged */
    raw_push(e.urls.pull_url, "", 0);
    raw_push(e.urls.pull_url, "\x01\x01", 2);
    raw_push(e.urls.pull_url, b.p, b.len - 1);
    randombytes_buf(small, sizeof small);
    raw_push(e.urls.pull_url, small, sizeof small);
    raw_push(e.urls.pull_url, big, WIRE_MAX_REQUEST + 1);
    {
        /* status on the pull socket is refused too */
        uint8_t m[4] = { WIRE_VERSION, WIRE_OP_STATUS, 0, 0 };

        raw_push(e.urls.pull_url, m, 4);
    }
    for (int k = 0; k < 100 && count_in_log(&e, "bad-message socket=pull") < 6;
         k++)
        msleep(100);
    CHECK(count_in_log(&e, "bad-message socket=pull") >= 6,
          "pull log lines: %d", count_in_log(&e, "bad-message socket=pull"));

    /* bytes that are not the SP protocol at every socket */
    raw_stream_garbage(e.urls.append_url);
    raw_stream_garbage(e.urls.pull_url);
    raw_stream_garbage(e.urls.publish_url);
    /* a PUSH socket at the REP socket: the SP handshake refuses it */
    raw_push_to(e.urls.append_url, b.p, b.len, false);

    /* nothing was written, and the daemon still serves */
    CHECK(status_head(&e) == 0, "head moved to %" PRIu64, status_head(&e));
    CHECK(raw_request(e.urls.append_url, b.p, b.len, 5000) == 1,
          "valid append after the garbage");
    raw_push(e.urls.pull_url, b.p, b.len);
    msleep(300);
    CHECK(status_head(&e) == 2, "head %" PRIu64 " after two valid appends",
          status_head(&e));
    {
        /* over nanomsg's own limit: the connection is dropped, nothing
         * else happens */
        size_t n = (size_t)WIRE_MAX_MESSAGE + 1024;
        uint8_t *huge = calloc(1, n);

        REQUIRE(huge, "oom");
        memcpy(huge, b.p, 8);
        rc = raw_request(e.urls.append_url, huge, n, 2000);
        CHECK(rc == -ETIMEDOUT || rc == TALLY_ETOOBIG, "huge: %d", rc);
        free(huge);
    }
    CHECK(status_head(&e) == 2, "head after the huge message");
    CHECK(stop_daemon(&e, SIGTERM, 20000) == 0, "daemon exit status");
    CHECK(count_in_log(&e, " error ") == 0, "errors in the daemon log");
    note("%d malformed requests answered with errors", errors);
    free(big);
    wire_buf_free(&b);
    env_done(&e);
    return failures ? 1 : 0;
}

static int run_sigterm(void)
{
    env e;
    producer ps[NPROD];
    pthread_t th[NPROD], ta;
    subscriber sa;
    contents ct;
    atomic_int stop = 0;
    uint64_t missing = 0, stopped_head = 0;
    int rc;

    env_init(&e, "sigterm");
    start_daemon(&e, NULL);
    REQUIRE(wait_ready(e.urls.append_url, 10000) == 0, "daemon not ready");
    memset(&sa, 0, sizeof sa);
    sa.e = &e;
    sa.from = 1;
    pthread_create(&ta, NULL, subscriber_main, &sa);
    msleep(200);
    producers_start(&e, ps, th, 3000, false, &stop);
    while (producers_progress(ps) < (uint64_t)NPROD * e.per_producer / 4)
        msleep(5);
    rc = stop_daemon(&e, SIGTERM, 20000);
    CHECK(rc == 0, "SIGTERM under load: exit status %d", rc);
    atomic_store(&stop, 1);
    for (unsigned p = 0; p < NPROD; p++)
        pthread_join(th[p], NULL);
    {
        FILE *f = fopen(e.log, "r");
        char line[2048];

        while (f && fgets(line, sizeof line, f)) {
            char *h = strstr(line, " stopped head=");
            char *pub = strstr(line, " published=");

            if (h)
                stopped_head = strtoull(h + 14, NULL, 10);
            /* everything committed was published before the exit */
            if (h && pub)
                CHECK(strtoull(pub + 11, NULL, 10) == stopped_head,
                      "published %s", pub);
        }
        if (f)
            fclose(f);
    }
    /* everything committed was published before the sockets closed */
    msleep(500);
    sa.stop = 1;
    pthread_join(ta, NULL);
    read_journal(&e, &ct);
    CHECK(ct.records == stopped_head && stopped_head > 0,
          "journal %" PRIu64 " records, daemon said %" PRIu64, ct.records,
          stopped_head);
    CHECK(ct.dense_errors == 0 && ct.unknown == 0, "dense/unknown");
    for (unsigned p = 0; p < NPROD; p++)
        for (uint32_t i = 0; i < e.per_producer; i++)
            if (ps[p].acked[i] && ct.seen[p][i] != 1)
                missing++;
    CHECK(missing == 0, "%" PRIu64 " acknowledged records missing", missing);
    CHECK(sa.last_seq == stopped_head && sa.count == stopped_head,
          "subscriber saw %" PRIu64 " records up to %" PRIu64 ", head %"
          PRIu64, sa.count, sa.last_seq, stopped_head);
    CHECK(sa.bad_order == 0, "subscriber order");
    note("drained: %" PRIu64 " records committed and published",
         stopped_head);
    contents_free(&ct);
    for (unsigned p = 0; p < NPROD; p++)
        free(ps[p].acked);
    free(sa.seqs);
    env_done(&e);
    return failures ? 1 : 0;
}

static int run_stored(void)
{
    env e;
    char a[64], p[64], u[64];
    unsigned port = 20000 + (unsigned)(getpid() % 20000);
    tally_record_in recs[100];
    char pays[100][32];
    tally_client *c;
    tally_client_ack ack;
    subscriber skey, snokey;
    pthread_t t1;
    tally_client_status st;

    env_init(&e, "stored");
    snprintf(a, sizeof a, "tcp://127.0.0.1:%u", port);
    snprintf(p, sizeof p, "tcp://127.0.0.1:%u", port + 1);
    snprintf(u, sizeof u, "tcp://127.0.0.1:%u", port + 2);
    snprintf(e.urls.append_url, sizeof e.urls.append_url, "%s", a);
    snprintf(e.urls.pull_url, sizeof e.urls.pull_url, "%s", p);
    snprintf(e.urls.publish_url, sizeof e.urls.publish_url, "%s", u);
    start_daemon(&e, "--append", a, "--pull", p, "--publish", u, NULL);
    REQUIRE(wait_ready(a, 10000) == 0, "daemon not ready");
    REQUIRE(tally_client_connect(&c, a, NULL) == 0, "connect");
    REQUIRE(tally_client_status_get(c, &st) == 0, "status");
    CHECK(st.stored == 1, "tcp publishes records as stored");
    for (int i = 0; i < 100; i++) {
        snprintf(pays[i], sizeof pays[i], "stored-%d", i);
        recs[i] = (tally_record_in){ .type = (uint16_t)(i % 2),
                                     .payload = pays[i],
                                     .payload_len = strlen(pays[i]) };
    }
    REQUIRE(tally_client_append(c, recs, 50, &ack) == 0, "append: %s",
            tally_client_errmsg(c));
    memset(&skey, 0, sizeof skey);
    skey.e = &e;
    skey.from = 1;
    skey.until = 100;
    pthread_create(&t1, NULL, subscriber_main, &skey);
    msleep(300);
    REQUIRE(tally_client_append(c, recs + 50, 50, &ack) == 0, "append");
    pthread_join(t1, NULL);
    CHECK(skey.rc == 0 && skey.count == 100 && skey.bad_order == 0,
          "keyed follower over tcp: rc %d (%s) count %" PRIu64, skey.rc,
          skey.err, skey.count);
    {
        /* without the key: records arrive undecrypted, chain checked */
        tally_client *nk;
        tally_client_follow_options fo;
        uint64_t n = 0;

        memset(&snokey, 0, sizeof snokey);
        REQUIRE(tally_client_connect(&nk, a, NULL) == 0, "connect");
        memset(&fo, 0, sizeof fo);
        fo.from_seq = 1;
        fo.until_seq = 100;
        fo.on_record = sub_record;
        fo.ctx = &snokey;
        CHECK(tally_client_follow(nk, &fo) == 0, "keyless follow: %s",
              tally_client_errmsg(nk));
        n = snokey.count;
        CHECK(n == 100 && snokey.bad_order == 100,
              "keyless: %" PRIu64 " records, %" PRIu64 " undecrypted", n,
              snokey.bad_order);
        tally_client_close(nk);
        free(snokey.seqs);
    }
    tally_client_close(c);
    CHECK(stop_daemon(&e, SIGTERM, 20000) == 0, "daemon exit status");
    free(skey.seqs);
    env_done(&e);
    return failures ? 1 : 0;
}

/* Appends records to the journal directly (the daemon stopped), as the
 * previous run would have before it crashed. */
static void append_direct(env *e, const tally_record_in *recs, size_t n)
{
    tally_options o;
    tally *t;

    memset(&o, 0, sizeof o);
    o.master_key = e->mk;
    REQUIRE(tally_open(&t, e->dir, &o, NULL) == 0, "open");
    REQUIRE(tally_append_batch(t, recs, n, NULL) == 0, "append");
    REQUIRE(tally_close(t) == 0, "close");
}

/* Appends 'P' entries (intent: records above seq) to the request log. */
static void log_intent(env *e, const uint8_t id[16], uint32_t count,
                       uint64_t seq)
{
    char path[400];
    uint8_t ent[RQ_ENTRY_BYTES];
    int fd;

    snprintf(path, sizeof path, "%s/%s", e->dir, RQ_FILE);
    fd = open(path, O_WRONLY | O_APPEND);
    REQUIRE(fd >= 0, "open %s: %s", path, strerror(errno));
    rq_encode(ent, 'P', id, count, seq, 0);
    REQUIRE(write(fd, ent, sizeof ent) == (ssize_t)sizeof ent, "write");
    close(fd);
}

static int run_ids(void)
{
    env e;
    tally_client *c;
    tally_client_ack a, b;
    uint8_t id[7][TALLY_CLIENT_ID_BYTES];
    tally_record_in one = { .type = 1, .key = "k", .key_len = 1,
                            .payload = "one", .payload_len = 3 };
    tally_record_in other = { .type = 1, .key = "k", .key_len = 1,
                              .payload = "other", .payload_len = 5 };
    tally_record_in two[2] = { one, other };
    tally_record_in same = { .type = 2, .payload = "same", .payload_len = 4 };
    wire_buf m = { 0 };
    int rc;

    env_init(&e, "ids");
    for (unsigned i = 0; i < 7; i++)
        randombytes_buf(id[i], sizeof id[i]);
    start_daemon(&e, NULL);
    REQUIRE(wait_ready(e.urls.append_url, 10000) == 0, "daemon not ready");
    REQUIRE(tally_client_connect(&c, e.urls.append_url, NULL) == 0, "connect");

    /* within one run: the window */
    rc = tally_client_append_id(c, id[0], &one, 1, &a);
    CHECK(rc == 0 && !a.duplicate && a.first_seq == 1, "first: %d", rc);
    rc = tally_client_append_id(c, id[0], &one, 1, &b);
    CHECK(rc == 0 && b.duplicate && b.first_seq == 1 && b.head_seq == 1,
          "repeat: rc %d dup %d first %" PRIu64 " head %" PRIu64, rc,
          b.duplicate, b.first_seq, b.head_seq);
    rc = tally_client_append_id(c, id[0], &other, 1, &b);
    CHECK(rc == -EEXIST, "id reused for other records: %d", rc);
    rc = tally_client_append_id(c, id[1], two, 2, &a);
    CHECK(rc == 0 && !a.duplicate && a.first_seq == 2 && a.count == 2,
          "two records: %d first %" PRIu64, rc, a.first_seq);
    /* a version 1 request: no id, still served */
    REQUIRE(wire_encode_append(&m, &other, 1) == 0, "encode");
    m.p[0] = 1;
    CHECK(raw_request(e.urls.append_url, m.p, m.len, 5000) == 1,
          "version 1 append");
    wire_buf_free(&m);
    CHECK(status_head(&e) == 4, "head %" PRIu64, status_head(&e));
    tally_client_close(c);
    CHECK(stop_daemon(&e, SIGTERM, 20000) == 0, "daemon exit status");

    /* a crash by hand: intents logged ('P', records above seq 4), and of
     * their records only some reached the journal: id 2's record; one
     * copy of the content that ids 3 and 4 share; nothing of id 5 */
    log_intent(&e, id[2], 1, 4);
    log_intent(&e, id[3], 1, 4);
    log_intent(&e, id[4], 1, 4);
    log_intent(&e, id[5], 1, 4);
    {
        tally_record_in recs[2] = { other, same };

        append_direct(&e, recs, 2); /* seq 5 (id 2), seq 6 (ids 3, 4) */
    }

    /* the next run answers from the log and the journal */
    start_daemon(&e, NULL);
    REQUIRE(wait_ready(e.urls.append_url, 10000) == 0, "restart not ready");
    REQUIRE(tally_client_connect(&c, e.urls.append_url, NULL) == 0, "connect");
    rc = tally_client_append_id(c, id[0], &one, 1, &a);
    CHECK(rc == 0 && a.duplicate && a.first_seq == 1,
          "after restart, committed ('D'): rc %d dup %d first %" PRIu64, rc,
          a.duplicate, a.first_seq);
    rc = tally_client_append_id(c, id[1], two, 2, &a);
    CHECK(rc == 0 && a.duplicate && a.first_seq == 2, "two records again");
    rc = tally_client_append_id(c, id[2], &other, 1, &a);
    CHECK(rc == 0 && a.duplicate && a.first_seq == 5,
          "intent, record in the journal: rc %d dup %d first %" PRIu64, rc,
          a.duplicate, a.first_seq);
    rc = tally_client_append_id(c, id[3], &same, 1, &a);
    CHECK(rc == 0 && a.duplicate && a.first_seq == 6,
          "shared content, first id: rc %d dup %d first %" PRIu64, rc,
          a.duplicate, a.first_seq);
    rc = tally_client_append_id(c, id[4], &same, 1, &a);
    CHECK(rc == 0 && !a.duplicate && a.first_seq == 7,
          "shared content, second id (its copy was never stored): rc %d "
          "dup %d first %" PRIu64, rc, a.duplicate, a.first_seq);
    rc = tally_client_append_id(c, id[5], &one, 1, &a);
    CHECK(rc == 0 && !a.duplicate && a.first_seq == 8,
          "intent, nothing stored: rc %d dup %d first %" PRIu64, rc,
          a.duplicate, a.first_seq);
    rc = tally_client_append_id(c, id[5], &one, 1, &a);
    CHECK(rc == 0 && a.duplicate && a.first_seq == 8, "and once only");
    rc = tally_client_append_id(c, id[6], &one, 1, &a);
    CHECK(rc == 0 && !a.duplicate && a.first_seq == 9, "a new id");
    CHECK(status_head(&e) == 9, "head %" PRIu64, status_head(&e));
    tally_client_close(c);
    CHECK(count_in_log(&e, "state=journal") == 4, "%d found in the journal",
          count_in_log(&e, "state=journal"));
    CHECK(count_in_log(&e, "state=not-in-journal") == 2,
          "%d not in the journal", count_in_log(&e, "state=not-in-journal"));
    CHECK(count_in_log(&e, "request-window size=65536 loaded=") == 2,
          "window lines");
    note("9 records for 11 requests and 8 repeats: repeats answered from "
         "the window, the log and the journal; none stored twice");
    CHECK(stop_daemon(&e, SIGTERM, 20000) == 0, "daemon exit status");
    CHECK(count_in_log(&e, " error ") == 0, "errors in the daemon log");
    env_done(&e);
    return failures ? 1 : 0;
}

int main(int argc, char **argv)
{
    signal(SIGPIPE, SIG_IGN);
    if (sodium_init() < 0)
        return 1;
    if (argc != 2) {
        fputs("usage: e2e stress|kill9|garbage|sigterm|stored|ids\n", stderr);
        return 2;
    }
    if (strcmp(argv[1], "stress") == 0)
        return run_stress();
    if (strcmp(argv[1], "kill9") == 0)
        return run_kill9();
    if (strcmp(argv[1], "garbage") == 0)
        return run_garbage();
    if (strcmp(argv[1], "sigterm") == 0)
        return run_sigterm();
    if (strcmp(argv[1], "stored") == 0)
        return run_stored();
    if (strcmp(argv[1], "ids") == 0)
        return run_ids();
    return 2;
}
