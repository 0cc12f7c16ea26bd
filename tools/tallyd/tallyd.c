/*
 * tallyd — takes appends over nanomsg and publishes every committed record
 * (docs/FORMAT.md §10 is the wire protocol; the README says how to run it).
 *
 * Threads and what each owns:
 *   main       options, the journal handle, signals, the orderly shutdown
 *   receiver   the REP socket (raw, so that many requests are in flight at
 *              once) and the PULL socket; parses every message, answers
 *              status at once, queues appends and range/epoch requests
 *   committers group commit (4 threads): each takes every queued append,
 *              writes them with one tally_append_batch and acknowledges them
 *              once durable; with several at once the library overlaps one
 *              group's write with the previous group's sync
 *   publisher  reads committed records back from the files in seq order, up
 *              to the durable seq only, and publishes them (and a tick a
 *              second, so that idle followers learn the head)
 *   ranger     answers range and epoch requests from a reader of the files
 *   checkpointer  (anchor options) anchors the head every --checkpoint-every
 *              seconds on the same writer handle (checkpoint/checkpoint.h);
 *              main reports its rounds in the log and status replies carry
 *              its figures
 *
 * Publications come from the files rather than from the requests in memory
 * so that what is published is exactly what is stored, with the link the
 * chain gives it, and only once it is durable.
 *
 * Exactly-once appends (FORMAT.md §10.6): an APPEND may carry a request id.
 * The receiver looks it up in the window of recent ids (reqlog.h): a resend
 * of a request still queued takes over its reply; a resend of a committed
 * one is answered from the window; a resend of one the previous run took
 * is checked against the journal by a committer before it is appended.
 * Committers log each id (DIR/tallyd.requests) before the group's write.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <nanomsg/nn.h>
#include <nanomsg/pipeline.h>
#include <nanomsg/pubsub.h>
#include <nanomsg/reqrep.h>
#include <sodium.h>

#include "anchor-opts.h" /* tools/tally: the CLI's anchor options */
#include "checkpoint.h"
#include "common.h"      /* tools/tally: the CLI's key loader */
#include "reqlog.h"
#include "tally-client.h"
#include "tally-internal.h"
#include "tally.h"
#include "wire.h"

#define QUEUE_MAX_BYTES   (64u << 20) /* receiver waits beyond this */
#define COMMIT_MAX_RECS   8192u        /* per group commit */
#define COMMIT_MAX_BYTES  (32u << 20)
#define COMMITTERS        4u
#define TICK_MS           1000u
#define POLL_MS           100
#define DRAIN_FLUSH_MS    500u         /* nanomsg has no linger: let sends go */
#define REQUEST_WINDOW    65536u       /* request ids remembered (default) */
#define CHECKPOINT_EVERY  60u          /* s, with anchor options (default) */
#define REPORT_MS         200          /* main looks at the checkpointer */

typedef struct req {
    struct req *next;
    void *msg;      /* nanomsg chunk */
    size_t len;
    void *ctl;      /* REP: the backtrace to reply with; PULL: NULL. While
                       the request id's entry is RQ_QUEUED the receiver may
                       swap in a resend's backtrace: read it under mu. */
    wire_request w;
    /* exactly-once (REP requests with an id, a window in use) */
    bool tracked;        /* has an entry in the window */
    uint8_t prev_state;  /* RQ_PREV_*: a resend to check against the journal */
    uint64_t prev_seq, prev_upto;
    /* set by the committer */
    bool dup;            /* committed before, at dup_first */
    uint64_t dup_first;
    int fail;            /* <0: answered with this error, not appended */
    void *out_ctl;       /* the backtrace to reply with, taken under mu */
} req;

typedef struct queue {
    req *head, *tail;
    uint64_t bytes;
} queue;

typedef struct tallyd {
    /* options */
    const char *dir;
    char append_url[WIRE_MAX_URL + 1];
    char pull_url[WIRE_MAX_URL + 1];
    char publish_url[WIRE_MAX_URL + 1];
    tally_sync_policy sync;
    uint32_t sync_interval_ms;
    uint8_t form; /* WIRE_FORM_PLAIN or _STORED */
    bool verbose;

    uint8_t *key; /* sodium_malloc'd, read-only after load */
    tally *t;
    int dirfd;    /* the journal directory (the request log lives there) */

    /* exactly-once: recent request ids (NULL: --request-window 0) */
    rq_window *rq;
    uint64_t start_head; /* head at startup: older runs' records end here */
    pthread_mutex_t resolve_mu; /* one resend checked at a time, so that
                                   each sees the places others found */
    uint64_t dups;       /* resends answered without a write (under mu) */

    /* anchoring (anchor options): the target, the startup verdict and the
     * checkpointer on our writer handle; NULL cp: none */
    struct anchor anc;
    tally_checkpointer *cp;
    tally_freshness fr;
    uint32_t every_ms;
    uint8_t jid[TALLY_ID_BYTES];
    uint8_t cipher;
    int rep, pull, pub;

    pthread_mutex_t mu;
    pthread_cond_t commit_cv; /* repq/pullq non-empty or rx_done */
    pthread_cond_t space_cv;  /* repq/pullq shrank */
    pthread_cond_t pub_cv;    /* something committed, or commit_done */
    pthread_cond_t range_cv;  /* rangeq non-empty or rx_done */
    /* Appends wait here for a committer. Several committers call
     * tally_append_batch at once, so that the library overlaps one group's
     * write with the previous group's sync; pull batches go to committer 0
     * alone, which keeps them in the order they arrived (a REQ producer has
     * one request in flight, so its order holds anyway). */
    queue repq, pullq, rangeq;
    bool rx_done, commit_done;
    atomic_int stopping;
    atomic_int fatal;
    pthread_t main_thread;

    /* counters (under mu) */
    uint64_t appended;
    uint64_t published_seq;
    uint64_t start_ns;

    /* publisher state */
    uint64_t *last_of_type; /* 65536 entries: seq of the last published */
    uint8_t pub_link[TALLY_HASH_BYTES];
} tallyd;

/* ---- logging: one line per event, "tallyd LEVEL EVENT key=value ..." ----- */

static void logline(const char *level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void logline(const char *level, const char *fmt, ...)
{
    char line[1024], ts[40];
    struct timespec now;
    struct tm tm;
    va_list ap;
    int n;

    clock_gettime(CLOCK_REALTIME, &now);
    gmtime_r(&now.tv_sec, &tm);
    strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%S", &tm);
    n = snprintf(line, sizeof line, "%s.%03ldZ tallyd[%ld] %s ", ts,
                 now.tv_nsec / 1000000, (long)getpid(), level);
    if (n < 0 || (size_t)n >= sizeof line)
        return;
    va_start(ap, fmt);
    vsnprintf(line + n, sizeof line - (size_t)n, fmt, ap);
    va_end(ap);
    /* one write per line so that lines from threads never interleave */
    fprintf(stderr, "%s\n", line);
}

#define LOG_INFO(...)  logline("info", __VA_ARGS__)
#define LOG_WARN(...)  logline("warn", __VA_ARGS__)
#define LOG_ERROR(...) logline("error", __VA_ARGS__)
#define LOG_DEBUG(d, ...)                \
    do {                                 \
        if ((d)->verbose)                \
            logline("debug", __VA_ARGS__); \
    } while (0)

static uint64_t now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void fatal_stop(tallyd *d)
{
    atomic_store(&d->fatal, 1);
    /* wakes main's sigwait */
    pthread_kill(d->main_thread, SIGUSR1);
}

/* ---- queues --------------------------------------------------------------- */

static void q_push(queue *q, req *r)
{
    r->next = NULL;
    if (q->tail)
        q->tail->next = r;
    else
        q->head = r;
    q->tail = r;
    q->bytes += r->len;
}

static req *q_pop(queue *q)
{
    req *r = q->head;

    if (r) {
        q->head = r->next;
        if (!q->head)
            q->tail = NULL;
        q->bytes -= r->len;
    }
    return r;
}

static void req_free(req *r)
{
    if (!r)
        return;
    if (r->msg)
        nn_freemsg(r->msg);
    if (r->ctl)
        nn_freemsg(r->ctl);
    if (r->out_ctl)
        nn_freemsg(r->out_ctl);
    free(r);
}

/* ---- replies -------------------------------------------------------------- */

/* Sends b as the reply to the request whose backtrace is *ctl (consumed). */
static void send_reply(tallyd *d, void **ctl, const wire_buf *b)
{
    struct nn_msghdr h;
    struct nn_iovec iov;

    if (b->err) {
        LOG_ERROR("reply-dropped err=\"out of memory\"");
        return;
    }
    iov.iov_base = b->p;
    iov.iov_len = b->len;
    memset(&h, 0, sizeof h);
    h.msg_iov = &iov;
    h.msg_iovlen = 1;
    h.msg_control = ctl;
    h.msg_controllen = NN_MSG;
    if (nn_sendmsg(d->rep, &h, 0) < 0) {
        /* nanomsg keeps ownership of the backtrace either way; only
         * shutdown makes this fail. */
        LOG_WARN("reply-failed err=\"%s\"", nn_strerror(nn_errno()));
    }
    *ctl = NULL;
}

/* An error reply in the request's wire version. */
static void reply_error(tallyd *d, void **ctl, uint8_t version, uint8_t op,
                        int err, const char *msg)
{
    wire_buf b = { 0 };

    wire_reply_error_v(&b, version, op, err, msg);
    send_reply(d, ctl, &b);
    wire_buf_free(&b);
}

/* ---- status --------------------------------------------------------------- */

static uint64_t real_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* The anchoring figures of a status reply: the checkpointer's, and for an
 * anchor it did not make itself (one found at startup) what the startup
 * verdict and the journal's CHECKPOINT record say of it. */
static void anchor_status(tallyd *d, wire_status *s)
{
    tally_checkpoint_status cs;
    const tally_freshness *fr = &d->fr;
    uint64_t at = 0;

    s->anchor_seq = 0;
    s->anchor_age_ms = UINT64_MAX;
    if (!d->cp)
        return;
    tally_checkpointer_status(d->cp, &cs);
    s->anchoring = WIRE_ANCHORING_RUNNING;
    s->backend = d->anc.eth ? TALLY_BACKEND_ETH : TALLY_BACKEND_FILE;
    s->last_error = cs.last_error;
    snprintf(s->last_errmsg, sizeof s->last_errmsg, "%s", cs.last_errmsg);
    s->lag_records = cs.lag_records;
    s->lag_ms = cs.lag_ms;
    s->rounds = cs.rounds;
    s->anchors = cs.anchors;
    s->failures = cs.failures;
    s->consecutive_failures = cs.consecutive_failures;
    if (cs.has_last && cs.last.seq >= cs.anchored_seq) {
        s->anchor_seq = cs.last.seq;
        memcpy(s->anchor_head, cs.last.head, 32);
        s->anchor_block = cs.last.block_number;
        memcpy(s->anchor_tx, cs.last.tx_hash, 32);
        at = cs.last.anchored_ns;
    } else if (fr->anchored_seq && fr->anchored_seq >= cs.anchored_seq) {
        s->anchor_seq = fr->anchored_seq;
        memcpy(s->anchor_head, fr->anchored_head, 32);
        s->anchor_block = fr->anchored_block;
        if (fr->has_checkpoint && fr->checkpoint.seq == fr->anchored_seq) {
            memcpy(s->anchor_tx, fr->checkpoint.tx_hash, 32);
            at = fr->checkpoint.anchored_ns;
        }
    } else if (cs.anchored_seq) {
        /* found on the target by a round (another writer process made it):
         * known since then */
        s->anchor_seq = cs.anchored_seq;
        at = cs.anchored_at_ns;
    }
    if (s->anchor_seq) {
        uint64_t now = real_ns();

        s->anchored_at_ns = at;
        if (at)
            s->anchor_age_ms = now > at ? (now - at) / 1000000u : 0;
    }
}

static void answer_status(tallyd *d, void **ctl, uint8_t version)
{
    tally_head_info h;
    wire_status s;
    wire_buf b = { 0 };
    int rc;

    rc = tally_head(d->t, &h);
    if (rc < 0) {
        reply_error(d, ctl, version, WIRE_OP_STATUS, rc, tally_strerror(rc));
        return;
    }
    memset(&s, 0, sizeof s);
    s.head_seq = h.seq;
    memcpy(s.head_link, h.link, TALLY_HASH_BYTES);
    s.durable_seq = h.durable_seq;
    pthread_mutex_lock(&d->mu);
    s.published_seq = d->published_seq;
    s.appended = d->appended;
    s.uptime_ms = (now_ns() - d->start_ns) / 1000000u;
    pthread_mutex_unlock(&d->mu);
    anchor_status(d, &s);
    memcpy(s.journal_id, d->jid, TALLY_ID_BYTES);
    s.cipher = d->cipher;
    s.sync = (uint8_t)d->sync;
    s.form = d->form;
    snprintf(s.publish_url, sizeof s.publish_url, "%s", d->publish_url);
    snprintf(s.pull_url, sizeof s.pull_url, "%s", d->pull_url);
    wire_reply_header_v(&b, version, WIRE_OP_STATUS, 0, 0);
    wire_encode_status_body_v(&b, version, &s);
    send_reply(d, ctl, &b);
    wire_buf_free(&b);
}

/* ---- receiver ------------------------------------------------------------- */

static const char *sock_name(const tallyd *d, int s)
{
    return s == d->rep ? "append" : "pull";
}

/* Replies to an APPEND that was committed before under its request id. */
static void reply_duplicate(tallyd *d, void **ctl, uint8_t version,
                            uint64_t first, uint32_t count)
{
    tally_head_info h;
    wire_ack a;
    wire_buf b = { 0 };
    int rc = tally_head(d->t, &h);

    if (rc < 0) {
        reply_error(d, ctl, version, WIRE_OP_APPEND, rc, tally_strerror(rc));
        return;
    }
    a.first_seq = first;
    a.count = count;
    a.head_seq = h.seq;
    memcpy(a.head_link, h.link, TALLY_HASH_BYTES);
    a.durable_seq = h.durable_seq;
    wire_reply_header_v(&b, version, WIRE_OP_APPEND, 0, WIRE_REPLY_DUPLICATE);
    wire_encode_ack(&b, &a);
    send_reply(d, ctl, &b);
    wire_buf_free(&b);
}

static void id_hex(const uint8_t id[RQ_ID_BYTES], char out[17])
{
    /* half the id is enough to follow a request through the log */
    sodium_bin2hex(out, 17, id, 8);
}

/* Queues an APPEND (consumes r). A request id on the append socket is
 * looked up first (FORMAT.md §10.6): a resend of a request still queued
 * takes over its reply, one already committed is answered at once, one the
 * previous run took goes to a committer to be checked against the journal. */
static void queue_append(tallyd *d, req *r, bool is_rep)
{
    bool track = is_rep && r->w.has_id && d->rq;
    uint8_t hash[RQ_HASH_BYTES];
    uint64_t dup_first = 0;
    uint32_t dup_count = 0;
    int refuse = 0;
    char hex[17];

    if (track)
        crypto_generichash(hash, sizeof hash, r->w.records, r->w.records_len,
                           NULL, 0);
    pthread_mutex_lock(&d->mu);
    /* backpressure: producers wait in nanomsg's buffers meanwhile */
    while (d->repq.bytes + d->pullq.bytes > QUEUE_MAX_BYTES &&
           !atomic_load(&d->fatal))
        pthread_cond_wait(&d->space_cv, &d->mu);
    if (track) {
        rq_entry *e = rq_find(d->rq, r->w.id);

        if (e && (e->count != r->w.count ||
                  (e->has_hash && memcmp(e->hash, hash, sizeof hash) != 0))) {
            refuse = -EEXIST;
        } else if (e && e->state == RQ_QUEUED) {
            req *o = e->owner;

            /* the reply goes to the newest backtrace: the connection the
             * first one came on may be gone */
            if (o->ctl)
                nn_freemsg(o->ctl);
            o->ctl = r->ctl;
            r->ctl = NULL;
            d->dups++;
            pthread_mutex_unlock(&d->mu);
            id_hex(r->w.id, hex);
            LOG_INFO("duplicate request=%s records=%u state=queued",
                     hex, r->w.count);
            req_free(r);
            return;
        } else if (e && e->state == RQ_DONE) {
            dup_first = e->seq;
            dup_count = e->count;
            d->dups++;
        } else {
            if (e) {
                /* taken by a previous run: check the journal first */
                r->prev_state = e->state;
                r->prev_seq = e->seq;
                r->prev_upto = e->upto;
                e->prev_state = e->state;
            } else {
                e = rq_add(d->rq, r->w.id);
                e->count = r->w.count;
            }
            e->state = RQ_QUEUED;
            e->owner = r;
            e->logged = 0;
            e->found = 0;
            memcpy(e->hash, hash, sizeof hash);
            e->has_hash = 1;
            r->tracked = true;
        }
    }
    if (!refuse && !dup_count) {
        q_push(is_rep ? &d->repq : &d->pullq, r);
        pthread_cond_broadcast(&d->commit_cv);
        pthread_mutex_unlock(&d->mu);
        return;
    }
    pthread_mutex_unlock(&d->mu);
    id_hex(r->w.id, hex);
    if (refuse) {
        LOG_WARN("request-id-reused request=%s records=%u", hex, r->w.count);
        reply_error(d, &r->ctl, r->w.version, WIRE_OP_APPEND, refuse,
                    "request id already used for other records");
    } else {
        LOG_INFO("duplicate request=%s first=%" PRIu64 " records=%u "
                 "state=committed", hex, dup_first, dup_count);
        reply_duplicate(d, &r->ctl, r->w.version, dup_first, dup_count);
    }
    req_free(r);
}

/* Takes one message from socket s; 0 when there was none. */
static int receive_one(tallyd *d, int s)
{
    struct nn_msghdr h;
    struct nn_iovec iov;
    void *body = NULL, *ctl = NULL;
    const char *why = NULL;
    wire_request w;
    req *r;
    int n, rc;
    bool is_rep = s == d->rep;

    iov.iov_base = &body;
    iov.iov_len = NN_MSG;
    memset(&h, 0, sizeof h);
    h.msg_iov = &iov;
    h.msg_iovlen = 1;
    if (is_rep) {
        h.msg_control = &ctl;
        h.msg_controllen = NN_MSG;
    }
    n = nn_recvmsg(s, &h, NN_DONTWAIT);
    if (n < 0) {
        if (nn_errno() != EAGAIN && nn_errno() != EINTR)
            LOG_WARN("receive-failed socket=%s err=\"%s\"", sock_name(d, s),
                     nn_strerror(nn_errno()));
        return 0;
    }
    rc = wire_parse_request(body, (size_t)n, &w, &why);
    if (rc == 0 && !is_rep && w.op != WIRE_OP_APPEND) {
        rc = -EOPNOTSUPP;
        why = "only append is accepted on the pull socket";
    }
    if (rc < 0) {
        const uint8_t *m = body;
        uint8_t op = n >= 2 ? m[1] : 0;
        /* answered in the request's version when it has one we speak */
        uint8_t ver = n >= 1 && m[0] >= WIRE_VERSION_MIN &&
                              m[0] <= WIRE_VERSION ? m[0] : WIRE_VERSION;

        LOG_WARN("bad-message socket=%s bytes=%d err=%d why=\"%s\"",
                 sock_name(d, s), n, rc, why);
        if (is_rep)
            reply_error(d, &ctl, ver, (uint8_t)(op & ~WIRE_REPLY), rc, why);
        nn_freemsg(body);
        if (ctl)
            nn_freemsg(ctl);
        return 1;
    }
    if (w.op == WIRE_OP_STATUS) {
        answer_status(d, &ctl, w.version);
        nn_freemsg(body);
        return 1;
    }
    r = calloc(1, sizeof *r);
    if (!r) {
        LOG_ERROR("out-of-memory socket=%s", sock_name(d, s));
        if (is_rep)
            reply_error(d, &ctl, w.version, w.op, -ENOMEM,
                        "daemon out of memory");
        nn_freemsg(body);
        if (ctl)
            nn_freemsg(ctl);
        return 1;
    }
    r->msg = body;
    r->len = (size_t)n;
    r->ctl = ctl;
    r->w = w;
    if (w.op == WIRE_OP_APPEND) {
        queue_append(d, r, is_rep);
        return 1;
    }
    pthread_mutex_lock(&d->mu);
    q_push(&d->rangeq, r);
    pthread_cond_signal(&d->range_cv);
    pthread_mutex_unlock(&d->mu);
    return 1;
}

static void *receiver_main(void *arg)
{
    tallyd *d = arg;
    struct nn_pollfd pfd[2];

    pfd[0].fd = d->rep;
    pfd[0].events = NN_POLLIN;
    pfd[1].fd = d->pull;
    pfd[1].events = NN_POLLIN;
    while (!atomic_load(&d->stopping)) {
        int rc = nn_poll(pfd, 2, POLL_MS);

        if (rc < 0) {
            if (nn_errno() == EINTR)
                continue;
            LOG_ERROR("poll-failed err=\"%s\"", nn_strerror(nn_errno()));
            fatal_stop(d);
            break;
        }
        /* drain what is there before polling again */
        if (pfd[0].revents & NN_POLLIN)
            while (receive_one(d, d->rep) && !atomic_load(&d->stopping))
                ;
        if (pfd[1].revents & NN_POLLIN)
            while (receive_one(d, d->pull) && !atomic_load(&d->stopping))
                ;
    }
    return NULL;
}

/* ---- committer ------------------------------------------------------------ */

typedef struct committer {
    tallyd *d;
    unsigned idx;
} committer;

/* Moves queued requests from q to the batch while the group is under its
 * limits. */
static void take(queue *q, req ***tail, size_t *n, size_t *nreq,
                 uint64_t *bytes)
{
    while (q->head &&
           (*n == 0 || (*n + q->head->w.count <= COMMIT_MAX_RECS &&
                        *bytes + q->head->len <= COMMIT_MAX_BYTES))) {
        req *r = q_pop(q);

        *n += r->w.count;
        *bytes += r->len;
        (*nreq)++;
        r->next = NULL;
        **tail = r;
        *tail = &r->next;
    }
}

/* ---- resends of requests a previous run took ------------------------------ */

/* Seq ranges that other request ids are known to hold, which a resend's
 * records cannot be (FORMAT.md §10.6: identical requests are told apart by
 * their place). */
typedef struct claims {
    uint64_t (*r)[2];
    size_t n, cap;
    const uint8_t *self;
    uint64_t lo, hi, start_head;
} claims;

static void claim_one(void *ctx, const rq_entry *e)
{
    claims *c = ctx;
    uint64_t last;

    if (memcmp(e->id, c->self, RQ_ID_BYTES) == 0 || e->count == 0)
        return;
    if (e->state != RQ_PREV_DONE && !(e->state == RQ_QUEUED && e->found) &&
        !(e->state == RQ_DONE && e->seq + e->count - 1 <= c->start_head))
        return;
    last = e->seq + e->count - 1;
    if (last < c->lo || e->seq > c->hi)
        return;
    if (c->n == c->cap) {
        size_t cap = c->cap ? 2 * c->cap : 16;
        uint64_t (*p)[2] = realloc(c->r, cap * sizeof *p);

        if (!p)
            return;
        c->r = p;
        c->cap = cap;
    }
    c->r[c->n][0] = e->seq;
    c->r[c->n][1] = last;
    c->n++;
}

static bool is_claimed(const claims *c, uint64_t first, uint64_t last)
{
    for (size_t i = 0; i < c->n; i++)
        if (first <= c->r[i][1] && last >= c->r[i][0])
            return true;
    return false;
}

static bool same_record(const tally_record *a, const tally_record_in *b)
{
    return a->decrypted && a->type == b->type && a->key_len == b->key_len &&
           a->payload_len == b->payload_len &&
           (b->key_len == 0 || memcmp(a->key, b->key, b->key_len) == 0) &&
           (b->payload_len == 0 ||
            memcmp(a->payload, b->payload, b->payload_len) == 0);
}

/* Whether the records of r, a resend of a request a previous run took,
 * are in the journal: 1 (*ret_first: where), 0 (not there: append them),
 * or <0 (the journal could not be read: cannot tell). A request the
 * previous run logged as committed ('D') is looked for at that seq; one it
 * was committing ('P') among the records that run may have written, as n
 * consecutive records equal to the request's, not at a place another id
 * is known to hold. */
static int find_committed(tallyd *d, req *r, uint64_t *ret_first)
{
    uint32_t n = r->w.count, ncand = 0;
    bool at_seq = r->prev_state == RQ_PREV_DONE;
    tally_record_in *want;
    uint64_t *cand, lo, hi, found = 0;
    claims cl;
    tally_iter *it = NULL;
    tally_record rec;
    int rc;

    if (at_seq) {
        lo = r->prev_seq;
        hi = lo + n - 1;
    } else {
        lo = r->prev_seq + 1;
        hi = r->prev_upto && r->prev_upto < d->start_head ? r->prev_upto
                                                          : d->start_head;
    }
    if (lo == 0 || hi > d->start_head || hi < lo || hi - lo + 1 < n)
        return 0;
    memset(&cl, 0, sizeof cl);
    cl.self = r->w.id;
    cl.lo = lo;
    cl.hi = hi;
    cl.start_head = d->start_head;
    if (!at_seq) {
        pthread_mutex_lock(&d->mu);
        rq_each(d->rq, claim_one, &cl);
        pthread_mutex_unlock(&d->mu);
    }
    want = calloc(n, sizeof *want);
    cand = calloc(n, sizeof *cand);
    if (!want || !cand) {
        rc = -ENOMEM;
        goto out;
    }
    wire_append_records(&r->w, want);
    rc = tally_iter_open(&it, d->dir, d->key, lo, TALLY_ITER_TOLERATE_TAIL);
    if (rc < 0) {
        it = NULL;
        goto out;
    }
    while ((rc = tally_iter_next(it, &rec)) == 1 && rec.seq <= hi) {
        uint32_t k = 0;

        if (rec.seq < lo)
            continue;
        /* each candidate start expects want[seq - start] here */
        for (uint32_t i = 0; i < ncand; i++) {
            uint64_t j = rec.seq - cand[i];

            if (!same_record(&rec, &want[j]))
                continue;
            if (j == n - 1) {
                if (!is_claimed(&cl, cand[i], rec.seq)) {
                    found = cand[i];
                    break;
                }
                continue;
            }
            cand[k++] = cand[i];
        }
        if (found)
            break;
        ncand = k;
        if ((!at_seq || rec.seq == lo) && same_record(&rec, &want[0])) {
            if (n == 1) {
                if (!is_claimed(&cl, rec.seq, rec.seq)) {
                    found = rec.seq;
                    break;
                }
            } else {
                cand[ncand++] = rec.seq;
            }
        }
        if (at_seq && ncand == 0)
            break;
    }
    if (rc < 0)
        LOG_ERROR("request-check-failed from=%" PRIu64 " err=%d msg=\"%s\"",
                  lo, rc, tally_iter_errmsg(it));
    else
        rc = found ? 1 : 0;
out:
    if (it)
        tally_iter_free(it);
    free(want);
    free(cand);
    free(cl.r);
    if (rc == 1)
        *ret_first = found;
    return rc;
}

/* Decides the resends of the batch that a previous run took. */
static void resolve_resends(tallyd *d, req *batch)
{
    for (req *r = batch; r; r = r->next) {
        uint64_t first = 0;
        char hex[17];
        int rc;

        if (!r->prev_state)
            continue;
        /* committers check one resend at a time, and a place found is
         * marked before the next looks: two requests with the same records
         * never both claim one copy */
        pthread_mutex_lock(&d->resolve_mu);
        rc = find_committed(d, r, &first);
        if (rc == 1) {
            rq_entry *e;

            pthread_mutex_lock(&d->mu);
            e = rq_find(d->rq, r->w.id);
            if (e && e->owner == r) {
                e->found = 1;
                e->seq = first;
            }
            d->dups++;
            pthread_mutex_unlock(&d->mu);
        }
        pthread_mutex_unlock(&d->resolve_mu);
        id_hex(r->w.id, hex);
        if (rc == 1) {
            r->dup = true;
            r->dup_first = first;
            LOG_INFO("duplicate request=%s first=%" PRIu64 " records=%u "
                     "state=journal", hex, first, r->w.count);
        } else if (rc == 0) {
            LOG_INFO("resend request=%s records=%u state=not-in-journal",
                     hex, r->w.count);
        } else {
            r->fail = rc;
        }
    }
}

/* Logs the intent of the batch's tracked requests before their write: a
 * lower bound of their seqs (the head now). */
static void log_intents(tallyd *d, req *batch)
{
    tally_head_info h;
    uint8_t *buf;
    size_t cnt = 0, len = 0;
    int rc;

    for (req *r = batch; r; r = r->next)
        cnt += r->tracked && !r->dup && !r->fail;
    if (cnt == 0)
        return;
    buf = malloc(cnt * RQ_ENTRY_BYTES);
    rc = buf ? tally_head(d->t, &h) : -ENOMEM;
    if (rc < 0) {
        free(buf);
        LOG_WARN("request-log-failed err=%d msg=\"%s\"", rc,
                 tally_strerror(rc));
        return;
    }
    pthread_mutex_lock(&d->mu);
    for (req *r = batch; r; r = r->next) {
        rq_entry *e;

        if (!r->tracked || r->dup || r->fail)
            continue;
        e = rq_find(d->rq, r->w.id);
        if (!e || e->owner != r)
            continue; /* forgotten: the window moved past it */
        e->seq = h.seq;
        e->upto = 0;
        e->logged = 1;
        rq_encode(buf + len, 'P', r->w.id, r->w.count, h.seq, 0);
        len += RQ_ENTRY_BYTES;
    }
    pthread_mutex_unlock(&d->mu);
    rc = rq_log_append(d->rq, buf, len, &d->mu);
    if (rc < 0)
        LOG_WARN("request-log-failed err=%d msg=\"%s\"", rc, strerror(-rc));
    free(buf);
}

/* After the batch's commit (rc: its result; first: its first seq): settles
 * each request's window entry, logs what was committed, and takes the
 * backtraces to reply with (under mu: the receiver swaps in a resend's). */
static void settle(tallyd *d, req *batch, int rc, uint64_t first)
{
    uint8_t *buf = NULL;
    size_t cnt = 0, len = 0;
    uint64_t seq = first;

    if (d->rq && rc == 0) {
        for (req *r = batch; r; r = r->next)
            cnt += r->tracked && !r->fail;
        if (cnt)
            buf = malloc(cnt * RQ_ENTRY_BYTES);
    }
    pthread_mutex_lock(&d->mu);
    for (req *r = batch; r; r = r->next) {
        rq_entry *e = r->tracked ? rq_find(d->rq, r->w.id) : NULL;
        uint64_t at = 0;

        if (rc == 0 && !r->fail) {
            if (r->dup) {
                at = r->dup_first;
            } else {
                at = seq;
                seq += r->w.count;
            }
            r->dup_first = at;
        }
        if (e && e->owner == r) {
            e->owner = NULL;
            e->logged = 0;
            e->found = 0;
            if (rc == 0 && !r->fail) {
                e->state = RQ_DONE;
                e->seq = at;
                e->prev_state = 0;
                if (buf) {
                    rq_encode(buf + len, 'D', r->w.id, r->w.count, at, 0);
                    len += RQ_ENTRY_BYTES;
                }
            } else if (r->prev_state) {
                /* undecided still: a retry checks the journal again */
                e->state = r->prev_state;
                e->seq = r->prev_seq;
                e->upto = r->prev_upto;
                e->prev_state = 0;
            } else {
                e->state = RQ_FREE;
            }
        }
        r->out_ctl = r->ctl;
        r->ctl = NULL;
    }
    pthread_mutex_unlock(&d->mu);
    if (len) {
        int lrc = rq_log_append(d->rq, buf, len, &d->mu);

        if (lrc < 0)
            LOG_WARN("request-log-failed err=%d msg=\"%s\"", lrc,
                     strerror(-lrc));
    }
    free(buf);
}

static void *committer_main(void *arg)
{
    committer *self = arg;
    tallyd *d = self->d;
    bool pulls = self->idx == 0;
    tally_record_in *recs = NULL;
    size_t cap = 0;

    for (;;) {
        req *batch = NULL, **tail = &batch, *r;
        size_t n = 0, nreq = 0;
        uint64_t bytes = 0, first = 0;
        tally_head_info h;
        int rc;

        pthread_mutex_lock(&d->mu);
        while (!d->repq.head && !(pulls && d->pullq.head) && !d->rx_done)
            pthread_cond_wait(&d->commit_cv, &d->mu);
        if (!d->repq.head && !(pulls && d->pullq.head)) {
            pthread_mutex_unlock(&d->mu);
            break;
        }
        /* everything queued while the last sync ran: that is the group */
        if (pulls)
            take(&d->pullq, &tail, &n, &nreq, &bytes);
        take(&d->repq, &tail, &n, &nreq, &bytes);
        pthread_cond_broadcast(&d->space_cv);
        pthread_mutex_unlock(&d->mu);

        if (d->rq)
            resolve_resends(d, batch);
        if (n > cap) {
            tally_record_in *p = realloc(recs, n * sizeof *recs);

            if (!p) {
                rc = -ENOMEM;
                goto failed;
            }
            recs = p;
            cap = n;
        }
        n = 0;
        for (r = batch; r; r = r->next) {
            if (r->dup || r->fail)
                continue;
            wire_append_records(&r->w, recs + n);
            n += r->w.count;
        }
        if (n > 0) {
            /* the ids reach the log before the records reach the journal:
             * a restarted daemon knows every request it may have stored */
            if (d->rq)
                log_intents(d, batch);
            rc = tally_append_batch(d->t, recs, n, &first);
        } else {
            rc = 0;
        }
        if (rc == 0)
            rc = tally_head(d->t, &h);
    failed:
        settle(d, batch, rc, first);
        if (rc < 0) {
            LOG_ERROR("append-failed records=%zu requests=%zu err=%d "
                      "msg=\"%s\" detail=\"%s\"", n, nreq, rc,
                      tally_strerror(rc), tally_errmsg(d->t));
            for (r = batch; r; r = r->next)
                if (r->out_ctl)
                    reply_error(d, &r->out_ctl, r->w.version, WIRE_OP_APPEND,
                                rc, tally_strerror(rc));
            /* A failed write or sync poisons the handle (FORMAT.md §6):
             * stop, and let a restart recover. */
            if (rc != -ENOMEM)
                fatal_stop(d);
        } else {
            for (r = batch; r; r = r->next) {
                wire_ack a;
                wire_buf b = { 0 };

                if (!r->out_ctl)
                    continue;
                if (r->fail) {
                    reply_error(d, &r->out_ctl, r->w.version, WIRE_OP_APPEND,
                                r->fail, "cannot tell whether the previous "
                                "run committed this request: retry");
                    continue;
                }
                a.first_seq = r->dup_first;
                a.count = r->w.count;
                a.head_seq = h.seq;
                memcpy(a.head_link, h.link, TALLY_HASH_BYTES);
                a.durable_seq = h.durable_seq;
                wire_reply_header_v(&b, r->w.version, WIRE_OP_APPEND, 0,
                                    r->dup ? WIRE_REPLY_DUPLICATE : 0);
                wire_encode_ack(&b, &a);
                send_reply(d, &r->out_ctl, &b);
                wire_buf_free(&b);
            }
            if (n > 0)
                LOG_DEBUG(d, "commit first=%" PRIu64 " records=%zu "
                          "requests=%zu bytes=%" PRIu64, first, n, nreq,
                          bytes);
            pthread_mutex_lock(&d->mu);
            d->appended += n;
            pthread_cond_signal(&d->pub_cv);
            pthread_mutex_unlock(&d->mu);
        }
        while (batch) {
            r = batch;
            batch = r->next;
            req_free(r);
        }
    }
    free(recs);
    return NULL;
}

/* ---- reading records back as publications --------------------------------- */

/* The segment file of the record being read, kept open between records. */
typedef struct segcache {
    int dirfd;
    int fd;
    char name[64];
    ti_seg_hdr hdr;
    uint8_t *frame;
    size_t cap;
} segcache;

static void segcache_close(segcache *c)
{
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
    c->name[0] = '\0';
}

/* Reads the stored frame of rec and the header of its segment. Segment
 * files written by the journal hold one segment; a file merged by the
 * compactor holds several, and the right header is the last one before
 * the frame, found by walking frame lengths from the start of the file. */
static int segcache_load(segcache *c, const tally_record *rec,
                         const char **why)
{
    uint8_t hb[TF_SEG_HEADER_BYTES];
    uint64_t flen = (uint64_t)TF_FRAME_OVERHEAD + rec->body_len;
    ssize_t got;

    if (strcmp(c->name, rec->segment) != 0 || rec->seq < c->hdr.first_seq) {
        uint64_t pos = 0;

        segcache_close(c);
        c->fd = openat(c->dirfd, rec->segment, O_RDONLY | O_CLOEXEC);
        if (c->fd < 0) {
            *why = "cannot open the segment file";
            return -errno;
        }
        snprintf(c->name, sizeof c->name, "%s", rec->segment);
        for (;;) {
            uint8_t fh[TF_FRAME_HEADER_BYTES];

            got = ti_pread_full(c->fd, hb, sizeof hb, pos);
            if (got != (ssize_t)sizeof hb ||
                ti_seg_header_parse(hb, &c->hdr, why) < 0) {
                *why = "no valid segment header before the frame";
                segcache_close(c);
                return TALLY_EINTEGRITY;
            }
            pos += TF_SEG_HEADER_BYTES;
            /* skip this segment's frames up to the record or the next
             * header */
            while (pos < rec->offset) {
                got = ti_pread_full(c->fd, fh, sizeof fh, pos);
                if (got != (ssize_t)sizeof fh)
                    break;
                if (memcmp(fh, TF_SEG_MAGIC, 4) == 0)
                    break;
                pos += (uint64_t)TF_FRAME_OVERHEAD + le32_get(fh + 24);
            }
            if (pos >= rec->offset)
                break;
        }
    }
    if (flen > c->cap) {
        uint8_t *p = realloc(c->frame, (size_t)flen);

        if (!p) {
            *why = "out of memory";
            return -ENOMEM;
        }
        c->frame = p;
        c->cap = (size_t)flen;
    }
    got = ti_pread_full(c->fd, c->frame, (size_t)flen, rec->offset);
    if (got != (ssize_t)flen) {
        *why = "the frame is not whole in its file";
        return got < 0 ? (int)got : TALLY_EINTEGRITY;
    }
    if (le64_get(c->frame + 8) != rec->seq ||
        memcmp(c->frame + 32 + rec->body_len, rec->link, 32) != 0) {
        *why = "the stored frame disagrees with the reader";
        return TALLY_EINTEGRITY;
    }
    return 0;
}

/* Encodes rec as a publication into b. prev_link is the link before it. */
static int encode_pub(tallyd *d, segcache *c, wire_buf *b,
                      const tally_record *rec, const uint8_t prev_link[32],
                      uint64_t prev_same_type, const char **why)
{
    /* A pruned record has no plaintext left: it goes out as stored. */
    bool stored = d->form == WIRE_FORM_STORED || !rec->decrypted;

    wire_pub_header(b, rec->type, stored ? WIRE_FORM_STORED : WIRE_FORM_PLAIN,
                    rec->seq, rec->ts_ns, prev_same_type, rec->record_hash,
                    rec->link);
    if (!stored) {
        wire_buf_put16(b, (uint16_t)rec->key_len);
        wire_buf_put32(b, (uint32_t)rec->payload_len);
        wire_buf_putmem(b, rec->key, rec->key_len);
        wire_buf_putmem(b, rec->payload, rec->payload_len);
    } else {
        int rc = segcache_load(c, rec, why);

        if (rc < 0)
            return rc;
        wire_buf_put32(b, c->hdr.epoch);
        wire_buf_put64(b, c->hdr.segment_no);
        wire_buf_putmem(b, c->hdr.salt, 16);
        wire_buf_putmem(b, prev_link, 32);
        wire_buf_put32(b, (uint32_t)(TF_FRAME_OVERHEAD + rec->body_len));
        wire_buf_putmem(b, c->frame, TF_FRAME_OVERHEAD + rec->body_len);
    }
    if (b->err) {
        *why = "out of memory";
        return b->err;
    }
    return 0;
}

/* ---- publisher ------------------------------------------------------------ */

typedef struct publisher {
    tallyd *d;
    tally_iter *it;
    segcache sc;
    wire_buf pending;     /* an encoded record not yet durable */
    uint64_t pending_seq; /* 0: none */
    uint16_t pending_type;
    uint8_t pending_link[32];
    uint64_t published;
    unsigned empty_reads;
    uint64_t last_tick_ns;
} publisher;

static void publish_tick(publisher *p)
{
    wire_buf b = { 0 };
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    wire_pub_header(&b, WIRE_TICK_TYPE, WIRE_FORM_TICK, p->published,
                    (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec,
                    0, NULL, p->d->pub_link);
    if (!b.err)
        (void)nn_send(p->d->pub, b.p, b.len, NN_DONTWAIT);
    wire_buf_free(&b);
    p->last_tick_ns = now_ns();
}

/* Reads the next record (seq published + 1) into p->pending. 1 got it,
 * 0 not readable yet, <0 error. */
static int read_next(publisher *p)
{
    tallyd *d = p->d;
    tally_record rec;
    const char *why = NULL;
    int rc;

    if (!p->it) {
        rc = tally_iter_open(&p->it, d->dir, d->key, p->published + 1,
                             TALLY_ITER_TOLERATE_TAIL);
        if (rc < 0) {
            LOG_ERROR("publish-read-failed seq=%" PRIu64 " err=%d msg=\"%s\"",
                      p->published + 1, rc, tally_strerror(rc));
            p->it = NULL;
            return rc;
        }
    }
    rc = tally_iter_next(p->it, &rec);
    if (rc == 0) {
        /* The reader stopped at the end it saw; after a few tries, reopen
         * it in case it does not look past a segment it finished. */
        if (++p->empty_reads >= 3) {
            tally_iter_free(p->it);
            p->it = NULL;
            p->empty_reads = 0;
        }
        return 0;
    }
    if (rc < 0) {
        LOG_ERROR("publish-read-failed seq=%" PRIu64 " err=%d msg=\"%s\"",
                  p->published + 1, rc, tally_iter_errmsg(p->it));
        tally_iter_free(p->it);
        p->it = NULL;
        return rc;
    }
    p->empty_reads = 0;
    if (rec.seq != p->published + 1) {
        LOG_ERROR("publish-read-failed seq=%" PRIu64 " got=%" PRIu64
                  " msg=\"reader out of step\"", p->published + 1, rec.seq);
        tally_iter_free(p->it);
        p->it = NULL;
        return TALLY_EINTEGRITY;
    }
    p->pending.len = 0;
    p->pending.err = 0;
    rc = encode_pub(d, &p->sc, &p->pending, &rec, d->pub_link,
                    d->last_of_type[rec.type], &why);
    if (rc < 0) {
        LOG_ERROR("publish-encode-failed seq=%" PRIu64 " err=%d why=\"%s\"",
                  rec.seq, rc, why);
        return rc;
    }
    p->pending_seq = rec.seq;
    p->pending_type = rec.type;
    memcpy(p->pending_link, rec.link, 32);
    return 1;
}

/* Publishes records up to durable; returns how many. */
static uint64_t publish_upto(publisher *p, uint64_t durable)
{
    tallyd *d = p->d;
    uint64_t n = 0;
    int errors = 0;

    while (p->published < durable) {
        if (!p->pending_seq) {
            int rc = read_next(p);

            if (rc == 0) {
                struct timespec ts = { 0, 1000000 };

                nanosleep(&ts, NULL);
                continue;
            }
            if (rc < 0) {
                struct timespec ts = { 0, 50000000 };

                /* keep trying (a reader error may be transient); a
                 * journal that stays unreadable stops the tallyd */
                if (++errors >= 100) {
                    fatal_stop(d);
                    return n;
                }
                nanosleep(&ts, NULL);
                continue;
            }
        }
        if (p->pending_seq > durable)
            break;
        if (nn_send(d->pub, p->pending.p, p->pending.len, NN_DONTWAIT) < 0 &&
            nn_errno() != EAGAIN)
            LOG_WARN("publish-failed seq=%" PRIu64 " err=\"%s\"",
                     p->pending_seq, nn_strerror(nn_errno()));
        d->last_of_type[p->pending_type] = p->pending_seq;
        memcpy(d->pub_link, p->pending_link, 32);
        p->published = p->pending_seq;
        p->pending_seq = 0;
        n++;
    }
    if (n) {
        pthread_mutex_lock(&d->mu);
        d->published_seq = p->published;
        pthread_mutex_unlock(&d->mu);
    }
    return n;
}

static void *publisher_main(void *arg)
{
    publisher *p = arg;
    tallyd *d = p->d;
    uint64_t last_sync_ns = now_ns();

    for (;;) {
        tally_head_info h;
        bool done;
        struct timespec until;
        uint64_t wait_ms;

        if (tally_head(d->t, &h) < 0)
            h.durable_seq = p->published;
        if (h.durable_seq > p->published) {
            uint64_t n = publish_upto(p, h.durable_seq);

            if (n && now_ns() - p->last_tick_ns >= 100000000u)
                publish_tick(p);
            if (atomic_load(&d->fatal))
                break;
            continue;
        }
        pthread_mutex_lock(&d->mu);
        done = d->commit_done;
        pthread_mutex_unlock(&d->mu);
        if (done && h.durable_seq <= p->published)
            break;
        /* Under `none` nothing is durable until a sync: make one a second
         * so that publications are not held back without bound. */
        if (d->sync == TALLY_SYNC_NONE && h.seq > h.durable_seq &&
            now_ns() - last_sync_ns >= 1000000000u) {
            (void)tally_sync(d->t, 0);
            last_sync_ns = now_ns();
            continue;
        }
        if (now_ns() - p->last_tick_ns >= (uint64_t)TICK_MS * 1000000u)
            publish_tick(p);
        /* ALWAYS/BATCH: woken by the committer; INTERVAL/NONE: durability
         * advances in the background, so poll. */
        wait_ms = (d->sync == TALLY_SYNC_ALWAYS || d->sync == TALLY_SYNC_BATCH)
                      ? 200 : 5;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_nsec += (long)(wait_ms * 1000000u);
        until.tv_sec += until.tv_nsec / 1000000000L;
        until.tv_nsec %= 1000000000L;
        pthread_mutex_lock(&d->mu);
        if (!d->commit_done)
            pthread_cond_timedwait(&d->pub_cv, &d->mu, &until);
        pthread_mutex_unlock(&d->mu);
    }
    publish_tick(p);
    return NULL;
}

/* ---- ranger --------------------------------------------------------------- */

typedef struct ranger {
    tallyd *d;
    tally_iter *it;  /* kept between requests: catch-up asks in order */
    uint64_t it_next;
    uint8_t it_prev_link[32];
    segcache sc;
} ranger;

static bool prefix_match(const wire_request *w, uint16_t type)
{
    uint8_t t[2];

    wire_put16(t, type);
    return memcmp(t, w->prefix, w->prefix_len) == 0;
}

static void answer_range(ranger *g, req *r)
{
    tallyd *d = g->d;
    const wire_request *w = &r->w;
    tally_head_info h;
    wire_buf b = { 0 }, one = { 0 };
    uint64_t to, scanned, limit;
    uint32_t count = 0, scans = 0;
    size_t count_at;
    int rc;

    rc = tally_head(d->t, &h);
    if (rc < 0) {
        reply_error(d, &r->ctl, r->w.version, WIRE_OP_RANGE, rc,
                    tally_strerror(rc));
        return;
    }
    /* only durable records, as on the publish socket */
    to = w->to < h.durable_seq ? w->to : h.durable_seq;
    limit = w->max && w->max < WIRE_RANGE_MAX_RECORDS ? w->max
                                                      : WIRE_RANGE_MAX_RECORDS;
    scanned = w->from - 1;
    wire_reply_header_v(&b, r->w.version, WIRE_OP_RANGE, 0, 0);
    count_at = b.len + 8;
    wire_buf_put64(&b, 0);
    wire_buf_put32(&b, 0);
    if (w->from <= to) {
        if (g->it && g->it_next != w->from) {
            tally_iter_free(g->it);
            g->it = NULL;
        }
        if (!g->it) {
            /* start one record early: a stored publication carries the
             * link before its record, which the AEAD authenticates */
            rc = tally_iter_open(&g->it, d->dir, d->key,
                                 w->from > 1 ? w->from - 1 : 1,
                                 TALLY_ITER_TOLERATE_TAIL);
            if (rc < 0) {
                g->it = NULL;
                goto fail;
            }
            if (w->from > 1) {
                tally_record prev;

                rc = tally_iter_next(g->it, &prev);
                if (rc <= 0 || prev.seq != w->from - 1) {
                    LOG_ERROR("range-read-failed seq=%" PRIu64 " err=%d "
                              "msg=\"%s\"", w->from - 1, rc,
                              tally_iter_errmsg(g->it));
                    tally_iter_free(g->it);
                    g->it = NULL;
                    if (rc >= 0)
                        rc = TALLY_EINTEGRITY;
                    goto fail;
                }
                memcpy(g->it_prev_link, prev.link, 32);
            } else {
                ti_genesis(g->it_prev_link, d->jid);
            }
            g->it_next = w->from;
        }
        while (scanned < to && count < limit && b.len < WIRE_RANGE_MAX_BYTES &&
               scans < WIRE_RANGE_MAX_SCAN) {
            tally_record rec;
            const char *why = NULL;

            rc = tally_iter_next(g->it, &rec);
            if (rc == 0)
                break;
            if (rc < 0 || rec.seq != scanned + 1) {
                LOG_ERROR("range-read-failed seq=%" PRIu64 " err=%d msg=\"%s\"",
                          scanned + 1, rc, tally_iter_errmsg(g->it));
                tally_iter_free(g->it);
                g->it = NULL;
                if (rc >= 0)
                    rc = TALLY_EINTEGRITY;
                goto fail;
            }
            scans++;
            scanned = rec.seq;
            g->it_next = rec.seq + 1;
            if (prefix_match(w, rec.type)) {
                one.len = 0;
                one.err = 0;
                rc = encode_pub(d, &g->sc, &one, &rec, g->it_prev_link, 0,
                                &why);
                if (rc < 0) {
                    LOG_ERROR("range-encode-failed seq=%" PRIu64 " why=\"%s\"",
                              rec.seq, why);
                    goto fail;
                }
                wire_buf_put32(&b, (uint32_t)one.len);
                wire_buf_putmem(&b, one.p, one.len);
                count++;
            }
            memcpy(g->it_prev_link, rec.link, 32);
        }
    }
    if (b.err) {
        rc = b.err;
        goto fail;
    }
    wire_put64(b.p + count_at - 8, scanned);
    wire_put32(b.p + count_at, count);
    LOG_DEBUG(d, "range from=%" PRIu64 " to=%" PRIu64 " scanned_to=%" PRIu64
              " records=%u", w->from, w->to, scanned, count);
    send_reply(d, &r->ctl, &b);
    wire_buf_free(&b);
    wire_buf_free(&one);
    return;
fail:
    wire_buf_free(&b);
    wire_buf_free(&one);
    reply_error(d, &r->ctl, r->w.version, WIRE_OP_RANGE, rc,
                    tally_strerror(rc));
}

static void answer_epoch(ranger *g, req *r)
{
    tallyd *d = g->d;
    ti_meta m;
    const ti_epoch *e;
    char err[256];
    int dirfd, rc;
    wire_buf b = { 0 };
    uint8_t *p;

    dirfd = open(d->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dirfd < 0) {
        rc = -errno;
        reply_error(d, &r->ctl, r->w.version, WIRE_OP_EPOCH, rc,
                    "cannot open the journal");
        return;
    }
    rc = ti_meta_read(dirfd, NULL, &m, err, sizeof err);
    close(dirfd);
    if (rc < 0) {
        LOG_ERROR("epoch-read-failed err=%d msg=\"%s\"", rc, err);
        reply_error(d, &r->ctl, r->w.version, WIRE_OP_EPOCH, rc,
                    tally_strerror(rc));
        return;
    }
    e = ti_meta_epoch(&m, r->w.epoch);
    if (!e) {
        ti_meta_free(&m);
        reply_error(d, &r->ctl, r->w.version, WIRE_OP_EPOCH, -ENOENT,
                    "no such epoch");
        return;
    }
    /* the entry exactly as FORMAT.md §3.2 lays it out */
    wire_reply_header_v(&b, r->w.version, WIRE_OP_EPOCH, 0, 0);
    p = wire_buf_add(&b, WIRE_EPOCH_ENTRY);
    if (p) {
        memset(p, 0, WIRE_EPOCH_ENTRY);
        le32_put(p, e->epoch);
        le32_put(p + 4, e->flags);
        le64_put(p + 8, e->first_segment);
        memcpy(p + 16, e->nonce, 24);
        memcpy(p + 40, e->wrapped, 48);
    }
    ti_meta_free(&m);
    send_reply(d, &r->ctl, &b);
    wire_buf_free(&b);
}

static void *ranger_main(void *arg)
{
    ranger *g = arg;
    tallyd *d = g->d;

    for (;;) {
        req *r;

        pthread_mutex_lock(&d->mu);
        while (!d->rangeq.head && !d->rx_done)
            pthread_cond_wait(&d->range_cv, &d->mu);
        r = q_pop(&d->rangeq);
        pthread_mutex_unlock(&d->mu);
        if (!r)
            break;
        if (r->w.op == WIRE_OP_RANGE)
            answer_range(g, r);
        else
            answer_epoch(g, r);
        req_free(r);
    }
    if (g->it)
        tally_iter_free(g->it);
    return NULL;
}

/* ---- setup ---------------------------------------------------------------- */

/* The help, in parts: together they pass the 4095 bytes a C99 string
 * literal may hold. */
static const char usage_text[] =
    "Usage: tallyd DIR (--key-file FILE | --key-source SPEC) [options]\n"
    "              [anchor options [--checkpoint-every SECONDS]]\n"
    "\n"
    "Takes appends over nanomsg and publishes every committed record\n"
    "(wire protocol: docs/FORMAT.md section 10; README \"tallyd\").\n"
    "\n"
    "Options:\n"
    "  --key-file FILE       master key file\n"
    "  --key-source SPEC     or a key source: file:PATH, env:NAME,\n"
    "                        dstack:[PATH] (default $TALLY_KEY_SOURCE,\n"
    "                        $TALLY_KEY_FILE; README \"Keys\")\n"
    "  --append URL          REP socket for appends and requests\n"
    "  --pull URL            PULL socket for fire-and-forget batches\n"
    "  --publish URL         PUB socket for committed records\n"
    "                        (defaults: ipc:// sockets beside DIR, named\n"
    "                        DIR.append, DIR.pull, DIR.publish, or in\n"
    "                        $XDG_RUNTIME_DIR or /tmp when too long)\n"
    "  --publish-plaintext   publish plaintext over tcp:// as well (default:\n"
    "                        records as stored, encrypted; ipc:// publishes\n"
    "                        plaintext)\n"
    "  --sync POLICY         always | batch | interval | none (default batch)\n"
    "  --sync-interval MS    period of the interval policy (default 100)\n"
    "  --flush-interval MS   batched flushes (FORMAT.md 6.1): commits reach\n"
    "                        the file only every MS ms, in whole blocks, so\n"
    "                        its growth does not follow the producers; a\n"
    "                        reply (always, batch) waits for that flush\n"
    "  --flush-block BYTES   writes end on multiples of BYTES (512-16777216;\n"
    "                        default 4096 with --flush-interval), filled\n"
    "                        with a PAD record\n"
    "  --request-window N    request ids remembered for exactly-once appends\n"
    "                        (default 65536; 0: none, at least once), kept\n"
    "                        across restarts in DIR/tallyd.requests\n"
    "  --create              create the journal in DIR if there is none\n"
    "  --verbose             log every commit and range request\n"
    "  --help                this text\n"
    "\n";

static const char usage_anchor[] =
    "With anchor options the journal must be fresh against its anchor target\n"
    "at startup: any other verdict (rolled_back, forked, deleted,\n"
    "stale_anchor) is refused with exit status 4, as 'tally append' does.\n"
    "The checkpointer then runs inside the daemon on its writer handle:\n"
    "  --checkpoint-every SECONDS\n"
    "                        anchor the head every SECONDS (default 60); a\n"
    "                        failing anchor target is retried with backoff\n"
    "                        and never holds up appends. Status replies\n"
    "                        carry the last anchor and the anchor lag.\n"
    "\n";

static const char usage_tail[] =
    "\n"
    "Signals: SIGTERM/SIGINT stop taking requests, commit and publish what\n"
    "was taken, stop the checkpointer (the round in flight finishes), and\n"
    "exit 0.\n"
    "Exit status: 0 stopped cleanly, 1 operational error, 2 usage, 3 the\n"
    "journal failed an integrity check, 4 refused: not fresh against its\n"
    "anchor, 5 key unavailable or wrong.\n";

static void print_usage(FILE *f)
{
    fputs(usage_text, f);
    fputs(usage_anchor, f);
    fputs(ANCHOR_OPTS_HELP, f);
    fputs(usage_tail, f);
}

/* tallyd's row for the CLI helpers it shares (anchor options, key loader):
 * no run function, so that their messages say "tallyd: ..." */
static const struct cli_cmd tallyd_cmd = { "tallyd", NULL, NULL, usage_text };

static int parse_sync(const char *s, tally_sync_policy *ret)
{
    static const struct {
        const char *name;
        tally_sync_policy p;
    } names[] = {
        { "always", TALLY_SYNC_ALWAYS },
        { "batch", TALLY_SYNC_BATCH },
        { "interval", TALLY_SYNC_INTERVAL },
        { "none", TALLY_SYNC_NONE },
    };
    size_t i;

    for (i = 0; i < sizeof names / sizeof names[0]; i++)
        if (strcmp(s, names[i].name) == 0) {
            *ret = names[i].p;
            return 0;
        }
    return -1;
}

static int make_socket(tallyd *d, int domain, int proto, const char *url,
                       const char *what)
{
    int s, max = (int)WIRE_MAX_MESSAGE;

    s = nn_socket(domain, proto);
    if (s < 0) {
        LOG_ERROR("socket-failed socket=%s err=\"%s\"", what,
                  nn_strerror(nn_errno()));
        return -1;
    }
    if (proto != NN_PUB &&
        nn_setsockopt(s, NN_SOL_SOCKET, NN_RCVMAXSIZE, &max, sizeof max) < 0) {
        LOG_ERROR("socket-failed socket=%s err=\"%s\"", what,
                  nn_strerror(nn_errno()));
        nn_close(s);
        return -1;
    }
    if (proto == NN_PUB) {
        /* a large send buffer: slow subscribers fall behind before nanomsg
         * drops for them (they then catch up with range requests) */
        int sz = 16 << 20;

        (void)nn_setsockopt(s, NN_SOL_SOCKET, NN_SNDBUF, &sz, sizeof sz);
    }
    if (nn_bind(s, url) < 0) {
        LOG_ERROR("bind-failed socket=%s url=%s err=\"%s\"", what, url,
                  nn_strerror(nn_errno()));
        nn_close(s);
        return -1;
    }
    (void)d;
    return s;
}

static bool is_tcp(const char *url)
{
    return strncmp(url, "tcp://", 6) == 0 || strncmp(url, "ws://", 5) == 0;
}

/* What main last reported of the checkpointer. */
typedef struct reported {
    uint64_t rounds, anchors, failures;
    bool failing;
} reported;

/* Logs the checkpointer's rounds since the last look: an anchor, a failure
 * (once per failed round), the target reachable again. */
static void report_checkpointer(tallyd *d, reported *seen)
{
    tally_checkpoint_status s;
    char tx[65];

    tally_checkpointer_status(d->cp, &s);
    if (s.rounds == seen->rounds)
        return;
    seen->rounds = s.rounds;
    if (s.consecutive_failures > 0) {
        if (s.failures != seen->failures)
            LOG_WARN("anchor-failed streak=%" PRIu64 " err=%d anchored=%"
                     PRIu64 " head=%" PRIu64 " lag_records=%" PRIu64
                     " lag_s=%.1f msg=\"%.*s\"", s.consecutive_failures,
                     s.last_error, s.anchored_seq, s.head_seq, s.lag_records,
                     (double)s.lag_ms / 1000.0,
                     (int)strnlen(s.last_errmsg, sizeof s.last_errmsg),
                     s.last_errmsg);
        seen->failures = s.failures;
        seen->failing = true;
        return;
    }
    if (s.anchors != seen->anchors && s.has_last) {
        seen->anchors = s.anchors;
        sodium_bin2hex(tx, sizeof tx, s.last.tx_hash, 32);
        if (s.last.backend == TALLY_BACKEND_ETH)
            LOG_INFO("anchored seq=%" PRIu64 " block=%" PRIu64 " tx=0x%s "
                     "head=%" PRIu64 " lag_records=%" PRIu64, s.last.seq,
                     s.last.block_number, tx, s.head_seq, s.lag_records);
        else
            LOG_INFO("anchored seq=%" PRIu64 " backend=file head=%" PRIu64
                     " lag_records=%" PRIu64, s.last.seq, s.head_seq,
                     s.lag_records);
    } else if (seen->failing) {
        LOG_INFO("anchor-target-back anchored=%" PRIu64 " head=%" PRIu64
                 " lag_records=%" PRIu64, s.anchored_seq, s.head_seq,
                 s.lag_records);
    } else {
        LOG_DEBUG(d, "anchor-round nothing-new anchored=%" PRIu64 " head=%"
                  PRIu64, s.anchored_seq, s.head_seq);
    }
    seen->failing = false;
}

/* Everything main does but the cleanup: returns the exit status, leaving
 * what it set up in d (main releases it). */
static int run(tallyd *d, struct anchor_opts *aop, int argc, char **argv)
{
    enum { OPT_KEY = 256, OPT_APPEND, OPT_PULL, OPT_PUBLISH, OPT_PLAIN, OPT_SYNC,
           OPT_INTERVAL, OPT_CREATE, OPT_VERBOSE, OPT_HELP, OPT_FLUSH_MS,
           OPT_FLUSH_BLOCK, OPT_EVERY, OPT_WINDOW };
    static const struct option longopts[] = {
        { "key-file", required_argument, NULL, OPT_KEY },
        { "key-source", required_argument, NULL, OPT_KEY },
        { "checkpoint-every", required_argument, NULL, OPT_EVERY },
        { "request-window", required_argument, NULL, OPT_WINDOW },
        { "append", required_argument, NULL, OPT_APPEND },
        { "pull", required_argument, NULL, OPT_PULL },
        { "publish", required_argument, NULL, OPT_PUBLISH },
        { "publish-plaintext", no_argument, NULL, OPT_PLAIN },
        { "sync", required_argument, NULL, OPT_SYNC },
        { "sync-interval", required_argument, NULL, OPT_INTERVAL },
        { "flush-interval", required_argument, NULL, OPT_FLUSH_MS },
        { "flush-block", required_argument, NULL, OPT_FLUSH_BLOCK },
        { "create", no_argument, NULL, OPT_CREATE },
        { "verbose", no_argument, NULL, OPT_VERBOSE },
        { "help", no_argument, NULL, OPT_HELP },
        ANCHOR_LONG_OPTIONS,
        { NULL, 0, NULL, 0 },
    };
    const char *key_file = NULL;
    uint64_t every = 0, window = REQUEST_WINDOW;
    reported seen = { 0, 0, 0, false };
    const char *append_url = NULL, *pull_url = NULL, *publish_url = NULL;
    bool plaintext = false, create = false;
    uint32_t flush_ms = 0, flush_block = 0;
    tally_options opt;
    tally_recovery rec;
    tally_head_info h;
    sigset_t sigs;
    pthread_t rx, cm[COMMITTERS], pb, rg;
    committer cms[COMMITTERS];
    publisher pubst;
    ranger rgst;
    int c, rc, sig, status = 0;

    cli_getopt_reset();
    while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        switch (c) {
        case OPT_KEY: key_file = optarg; break;
        case OPT_APPEND: append_url = optarg; break;
        case OPT_PULL: pull_url = optarg; break;
        case OPT_PUBLISH: publish_url = optarg; break;
        case OPT_PLAIN: plaintext = true; break;
        case OPT_SYNC:
            if (parse_sync(optarg, &d->sync) < 0) {
                fprintf(stderr, "tallyd: unknown sync policy '%s'\n%s",
                        optarg, usage_text);
                return 2;
            }
            break;
        case OPT_INTERVAL: {
            char *end;
            unsigned long v = strtoul(optarg, &end, 10);

            if (*end || v == 0 || v > 60000) {
                fprintf(stderr, "tallyd: bad --sync-interval '%s'\n", optarg);
                return 2;
            }
            d->sync_interval_ms = (uint32_t)v;
            break;
        }
        case OPT_FLUSH_MS:
        case OPT_FLUSH_BLOCK: {
            char *end;
            unsigned long v = strtoul(optarg, &end, 10);
            bool ms = c == OPT_FLUSH_MS;

            if (*end || (ms ? v == 0 || v > 3600000
                            : v < TALLY_FLUSH_MIN_BLOCK ||
                                  v > TALLY_FLUSH_MAX_BLOCK)) {
                fprintf(stderr, "tallyd: bad --%s '%s'\n",
                        ms ? "flush-interval" : "flush-block", optarg);
                return 2;
            }
            *(ms ? &flush_ms : &flush_block) = (uint32_t)v;
            break;
        }
        case OPT_EVERY:
            if (cli_parse_u64(optarg, &every) < 0 || every == 0 ||
                every > 86400)
                return cli_usage_error(&tallyd_cmd, "--checkpoint-every must "
                                       "be 1-86400 seconds");
            break;
        case OPT_WINDOW:
            if (cli_parse_u64(optarg, &window) < 0 || window > (1u << 24) ||
                (window > 0 && window < 16))
                return cli_usage_error(&tallyd_cmd, "--request-window must "
                                       "be 0 or 16-16777216");
            break;
        case OPT_CREATE: create = true; break;
        case OPT_VERBOSE: d->verbose = true; break;
        case OPT_HELP: print_usage(stdout); return 0;
        default:
            rc = anchor_opt(&tallyd_cmd, aop, c, optarg);
            if (rc == ANCHOR_OPT_NONE)
                return cli_usage_error(&tallyd_cmd, NULL);
            if (rc != EXIT_OK)
                return rc;
        }
    }
    if (optind != argc - 1)
        return cli_usage_error(&tallyd_cmd, "give one journal directory");
    /* --key-file/--key-source, else $TALLY_KEY_SOURCE, $TALLY_KEY_FILE */
    key_file = cli_key_path(key_file);
    if (!key_file)
        return cli_usage_error(&tallyd_cmd, "a key is needed: --key-file "
                               "FILE or --key-source SPEC (or "
                               "TALLY_KEY_SOURCE, TALLY_KEY_FILE)");
    /* the anchor options, checked and opened as every tally command does */
    rc = anchor_opts_finish(&tallyd_cmd, aop,
                            ANCHOR_NEED_CONTRACT | ANCHOR_NEED_SENDER);
    if (rc == EXIT_OK && every && !anchor_opts_configured(aop))
        rc = cli_usage_error(&tallyd_cmd, "--checkpoint-every needs an anchor "
                             "target: --rpc URL (or TALLY_RPC_URL) or "
                             "--anchor-file PATH");
    if (rc == EXIT_OK && anchor_opts_configured(aop)) {
        rc = anchor_open(&tallyd_cmd, aop, 0, &d->anc);
        if (!every)
            every = CHECKPOINT_EVERY;
    }
    if (rc != EXIT_OK)
        return rc;
    d->every_ms = (uint32_t)(every * 1000);
    d->dir = argv[optind];
    {
        tally_client_urls u;

        rc = tally_client_default_urls(d->dir, &u);
        if (rc < 0 && (!append_url || !pull_url || !publish_url)) {
            LOG_ERROR("start-failed dir=%s msg=\"cannot derive default "
                      "socket paths: %s\"", d->dir, tally_strerror(rc));
            return 1;
        }
        snprintf(d->append_url, sizeof d->append_url, "%s",
                 append_url ? append_url : u.append_url);
        snprintf(d->pull_url, sizeof d->pull_url, "%s",
                 pull_url ? pull_url : u.pull_url);
        snprintf(d->publish_url, sizeof d->publish_url, "%s",
                 publish_url ? publish_url : u.publish_url);
    }
    d->form = is_tcp(d->publish_url) && !plaintext ? WIRE_FORM_STORED
                                                   : WIRE_FORM_PLAIN;

    d->last_of_type = calloc(65536, sizeof *d->last_of_type);
    if (!d->last_of_type) {
        LOG_ERROR("start-failed msg=\"out of memory\"");
        return 1;
    }
    /* the CLI's one key loader: key files and key sources alike, in locked
     * memory; it reports a failure on stderr, never with key bytes */
    rc = cli_key_load(&tallyd_cmd, key_file, &d->key);
    if (rc != EXIT_OK) {
        /* the path or source spec is fine to log; the key never is */
        LOG_ERROR("start-failed key=%s exit=%d msg=\"key not loaded\"",
                  key_file, rc);
        return rc;
    }
    sodium_mprotect_readonly(d->key);

    memset(&opt, 0, sizeof opt);
    opt.master_key = d->key;
    opt.sync = d->sync;
    opt.sync_interval_ms = d->sync_interval_ms;
    opt.flush_interval_ms = flush_ms;
    opt.flush_block = flush_block;
    memset(&rec, 0, sizeof rec);
    rc = tally_open(&d->t, d->dir, &opt, &rec);
    if (rc == TALLY_ENOJOURNAL && create) {
        rc = tally_init(d->dir, &opt);
        if (rc == 0) {
            LOG_INFO("created dir=%s", d->dir);
            rc = tally_open(&d->t, d->dir, &opt, &rec);
        }
    }
    if (rc < 0) {
        LOG_ERROR("start-failed dir=%s err=%d msg=\"%s\"", d->dir, rc,
                  rec.message[0] ? rec.message : tally_strerror(rc));
        return tally_exit_code(rc);
    }
    if (rec.cut_bytes)
        LOG_WARN("recovered dir=%s cut_bytes=%" PRIu64 " first_lost_seq=%"
                 PRIu64 " segment=%s", d->dir, rec.cut_bytes,
                 rec.cut_first_seq, rec.segment);
    tally_id(d->t, d->jid);
    if (d->anc.target) {
        /* the startup verdict, judged under the writer lock before anything
         * is appended, as 'tally append' judges it; the key authenticates
         * the CHECKPOINT records read */
        rc = anchor_check(&tallyd_cmd, &d->anc, d->dir, d->jid, d->key,
                          &d->fr);
        if (rc < 0) {
            LOG_ERROR("refused dir=%s verdict=%s local_seq=%" PRIu64
                      " anchored_seq=%" PRIu64 " anchored_block=%" PRIu64
                      " exit=%d", d->dir, rc == TALLY_EROLLBACK ||
                      rc == TALLY_EFORK || rc == TALLY_EDELETED ||
                      rc == TALLY_ESTALE ? tally_verdict_name(d->fr.verdict)
                                         : "unknown",
                      d->fr.local_seq, d->fr.anchored_seq,
                      d->fr.anchored_block, tally_exit_code(rc));
            return tally_exit_code(rc);
        }
        LOG_INFO("fresh dir=%s local_seq=%" PRIu64 " anchored_seq=%" PRIu64
                 " anchored_block=%" PRIu64 " unanchored_tail=%" PRIu64,
                 d->dir, d->fr.local_seq, d->fr.anchored_seq,
                 d->fr.anchored_block, d->fr.unanchored_tail);
    }
    d->dirfd = open(d->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (d->dirfd >= 0) {
        ti_meta m;
        char err[256];

        if (ti_meta_read(d->dirfd, NULL, &m, err, sizeof err) == 0) {
            d->cipher = m.cipher;
            ti_meta_free(&m);
        }
    }
    rc = tally_head(d->t, &h);
    if (rc < 0 || d->dirfd < 0) {
        LOG_ERROR("start-failed err=%d msg=\"%s\"", rc,
                  rc < 0 ? tally_strerror(rc) : "cannot open the directory");
        return 1;
    }
    d->start_head = h.seq;
    if (window > 0) {
        uint32_t loaded = 0;
        char err[256];

        rc = rq_open(&d->rq, d->dirfd, (uint32_t)window, h.seq, &loaded, err,
                     sizeof err);
        if (rc < 0) {
            LOG_ERROR("start-failed dir=%s err=%d msg=\"request log: %s\"",
                      d->dir, rc, err);
            return 1;
        }
        if (err[0])
            LOG_WARN("request-log dir=%s msg=\"%s\"", d->dir, err);
        LOG_INFO("request-window size=%" PRIu64 " loaded=%u", window, loaded);
    }

    d->rep = make_socket(d, AF_SP_RAW, NN_REP, d->append_url, "append");
    d->pull = d->rep < 0 ? -1
                         : make_socket(d, AF_SP, NN_PULL, d->pull_url, "pull");
    d->pub = d->pull < 0 ? -1
                         : make_socket(d, AF_SP, NN_PUB, d->publish_url,
                                       "publish");
    if (d->pub < 0) {
        if (d->rep >= 0)
            nn_close(d->rep);
        if (d->pull >= 0)
            nn_close(d->pull);
        return 1;
    }

    pthread_mutex_init(&d->mu, NULL);
    pthread_mutex_init(&d->resolve_mu, NULL);
    pthread_cond_init(&d->commit_cv, NULL);
    pthread_cond_init(&d->space_cv, NULL);
    pthread_cond_init(&d->pub_cv, NULL);
    pthread_cond_init(&d->range_cv, NULL);
    d->start_ns = now_ns();
    d->published_seq = h.seq;
    memcpy(d->pub_link, h.link, 32);
    d->main_thread = pthread_self();

    /* Signals are taken by main alone, with sigwait; the other threads
     * inherit the mask. */
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGUSR1);
    sigaddset(&sigs, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);

    memset(&pubst, 0, sizeof pubst);
    pubst.d = d;
    pubst.published = h.seq;
    pubst.sc.fd = -1;
    memset(&rgst, 0, sizeof rgst);
    rgst.d = d;
    rgst.sc.fd = -1;
    pubst.sc.dirfd = open(d->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    rgst.sc.dirfd = open(d->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (pubst.sc.dirfd < 0 || rgst.sc.dirfd < 0) {
        LOG_ERROR("start-failed dir=%s msg=\"cannot open the directory\"",
                  d->dir);
        return 1;
    }

    if (d->anc.target) {
        /* on our writer handle, beside the committers: its CHECKPOINT
         * records are published like any record */
        tally_checkpointer_options copt;

        anchor_checkpointer_options(d->every_ms, &copt);
        rc = tally_checkpointer_start(&d->cp, d->t, d->dir, d->anc.target,
                                      &copt);
        if (rc < 0) {
            LOG_ERROR("start-failed err=%d msg=\"cannot start the "
                      "checkpointer: %s\"", rc, tally_strerror(rc));
            return 1;
        }
        LOG_INFO("checkpointer every_s=%" PRIu64 " backend=%s", every,
                 d->anc.eth ? "ethereum" : "file");
    }
    for (unsigned i = 0; i < COMMITTERS; i++) {
        cms[i].d = d;
        cms[i].idx = i;
        if (pthread_create(&cm[i], NULL, committer_main, &cms[i])) {
            LOG_ERROR("start-failed msg=\"cannot start threads\"");
            exit(1); /* threads may run: no cleanup */
        }
    }
    if (pthread_create(&pb, NULL, publisher_main, &pubst) ||
        pthread_create(&rg, NULL, ranger_main, &rgst)) {
        LOG_ERROR("start-failed msg=\"cannot start threads\"");
        exit(1); /* threads may run: no cleanup */
    }
    if (pthread_create(&rx, NULL, receiver_main, d)) {
        LOG_ERROR("start-failed msg=\"cannot start threads\"");
        exit(1); /* threads may run: no cleanup */
    }
    LOG_INFO("ready dir=%s head=%" PRIu64 " append=%s pull=%s publish=%s "
             "form=%s sync=%d", d->dir, h.seq, d->append_url, d->pull_url,
             d->publish_url, d->form == WIRE_FORM_PLAIN ? "plain" : "stored",
             (int)d->sync);

    for (;;) {
        struct timespec wait = { 0, REPORT_MS * 1000000L };

        sig = sigtimedwait(&sigs, NULL, &wait);
        if (sig < 0) {
            /* no signal: time to look at the checkpointer */
            if (d->cp)
                report_checkpointer(d, &seen);
            continue;
        }
        if (sig == SIGTERM || sig == SIGINT) {
            LOG_INFO("stopping signal=%s", sig == SIGTERM ? "TERM" : "INT");
            break;
        }
        if (sig == SIGUSR1 && atomic_load(&d->fatal)) {
            LOG_ERROR("stopping msg=\"fatal error, see above\"");
            status = 1;
            break;
        }
    }

    /* Drain: stop taking requests, commit what was taken, sync, publish
     * it, answer outstanding range requests, close. */
    atomic_store(&d->stopping, 1);
    pthread_join(rx, NULL);
    pthread_mutex_lock(&d->mu);
    d->rx_done = true;
    pthread_cond_broadcast(&d->commit_cv);
    pthread_cond_broadcast(&d->range_cv);
    pthread_mutex_unlock(&d->mu);
    for (unsigned i = 0; i < COMMITTERS; i++)
        pthread_join(cm[i], NULL);
    if (d->cp) {
        /* no new round; the one in flight finishes (RPC timeouts bound it)
         * and its CHECKPOINT record is synced and published below */
        tally_checkpointer *cp = d->cp;

        report_checkpointer(d, &seen);
        d->cp = NULL; /* the receiver is gone: no status reply reads it */
        rc = tally_checkpointer_stop(cp);
        /* what a round in flight added is in the journal as a CHECKPOINT
         * record; the figures here are those of the last round seen */
        LOG_INFO("checkpointer-stopped rounds=%" PRIu64 " anchors=%" PRIu64
                 " failing=%s", seen.rounds, seen.anchors,
                 rc < 0 ? "yes" : "no");
    }
    rc = tally_sync(d->t, 0);
    if (rc < 0) {
        LOG_ERROR("sync-failed err=%d msg=\"%s\"", rc, tally_strerror(rc));
        status = 1;
    }
    pthread_mutex_lock(&d->mu);
    d->commit_done = true;
    pthread_cond_broadcast(&d->pub_cv);
    pthread_mutex_unlock(&d->mu);
    pthread_join(pb, NULL);
    pthread_join(rg, NULL);
    {
        struct timespec ts = { 0, (long)DRAIN_FLUSH_MS * 1000000L };

        nanosleep(&ts, NULL);
    }
    nn_close(d->rep);
    nn_close(d->pull);
    nn_close(d->pub);
    if (pubst.it)
        tally_iter_free(pubst.it);
    segcache_close(&pubst.sc);
    segcache_close(&rgst.sc);
    close(pubst.sc.dirfd);
    close(rgst.sc.dirfd);
    free(pubst.sc.frame);
    free(rgst.sc.frame);
    wire_buf_free(&pubst.pending);
    rc = tally_head(d->t, &h);
    rc = tally_close(d->t);
    d->t = NULL;
    if (rc < 0) {
        LOG_ERROR("close-failed err=%d msg=\"%s\"", rc, tally_strerror(rc));
        status = 1;
    }
    LOG_INFO("stopped head=%" PRIu64 " published=%" PRIu64 " appended=%"
             PRIu64 " status=%d", h.seq, d->published_seq, d->appended,
             status);
    pthread_mutex_destroy(&d->mu);
    pthread_mutex_destroy(&d->resolve_mu);
    return status;
}

int main(int argc, char **argv)
{
    struct anchor_opts ao;
    tallyd *d;
    int status;

    if (sodium_init() < 0) {
        LOG_ERROR("start-failed msg=\"libsodium did not initialise\"");
        return 1;
    }
    d = calloc(1, sizeof *d);
    if (!d)
        return 1;
    d->sync = TALLY_SYNC_BATCH;
    d->rep = d->pull = d->pub = -1;
    d->dirfd = -1;
    anchor_opts_init(&ao);
    status = run(d, &ao, argc, argv);
    /* what run set up and, returning early, did not release */
    if (d->t)
        (void)tally_close(d->t);
    rq_close(d->rq);
    if (d->dirfd >= 0)
        close(d->dirfd);
    anchor_close(&d->anc);
    anchor_opts_free(&ao);
    cli_key_free(d->key);
    free(d->last_of_type);
    free(d);
    return status;
}
