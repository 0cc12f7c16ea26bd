/*
 * checkpointer.c — anchors a journal's head: once (tally checkpoint DIR), or
 * in a background thread every N seconds and whenever an anchored append
 * waits for it.
 *
 * A round: take the head, make it durable (anchoring a record that a crash
 * could still lose would make the honest journal look rolled back), submit
 * (seq, link) to the target, and once it is confirmed append a CHECKPOINT
 * record with what the chain said (FORMAT.md §9). The first round of a
 * handle checks freshness first, so a journal that is behind, forked or
 * whose anchor source is stale is never anchored over ("laundered").
 *
 * The thread never holds the journal's lock while it talks to the chain: a
 * dead, slow or failing node delays anchoring, never appends. Failures are
 * retried with exponential backoff; the lag (records and seconds since the
 * last confirmed anchor) is in tally_checkpointer_status.
 *
 * Anchored appends share rounds: every appender whose record is not yet
 * covered asks for a round and waits; a round anchors the head, which
 * covers all records appended before it, so N waiting appenders cost one
 * transaction, not N. A round does not take the head the instant the
 * previous one ends: the appenders that round released are about to append
 * their next records, and a head taken before them would leave those
 * records a whole extra round (a block) to wait. So a round first gathers:
 * it waits until every waiter the last round released has left, no
 * anchored append is between tally_append and its wait, and none has
 * arrived for gather_quiet_ms. The wait is bounded by gather_ms
 * and by a tenth of the last anchoring round: gathering pays when a round
 * is a block (a second), not when it is a file's fsync, where taking the
 * head at once and letting the next round take the rest is faster. With
 * no anchored append in flight the round starts at once; plain appends
 * never touch any of this.
 */
#include "checkpoint-internal.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define DEFAULT_BACKOFF_MIN_MS 500u
#define DEFAULT_BACKOFF_MAX_MS 30000u
/* A block is a second or more: 10 ms is 1% of a round, and several times
 * what 64 released appenders on two cores take to append again (1.5-3 ms
 * measured, with their group fdatasync). 1 ms of quiet is far above the gap
 * between one appender's return and its next append, far below a round. */
#define DEFAULT_GATHER_MS       10u
#define DEFAULT_GATHER_QUIET_MS 1u

static uint64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static uint64_t mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static uint64_t real_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* What a round needs to remember between calls. */
typedef struct round_state {
    int verified;         /* freshness checked by this handle */
    uint64_t own_record;  /* seq of the last CHECKPOINT record we appended */
    uint64_t anchored;    /* last seq known anchored */
} round_state;

/* 1: anchored (*ret filled), 0: nothing new, <0: error (err filled). */
static int run_round(tally *t, const char *dir, tally_anchor_target *target,
                     round_state *st, tally_checkpoint_info *ret, char *err,
                     size_t errsz)
{
    uint8_t jid[32];
    tally_id(t, jid);
    if (!st->verified) {
        tally_freshness f;
        int rc = tally_freshness_check(target, dir, jid, NULL, &f);
        if (rc < 0) {
            snprintf(err, errsz, "not anchoring: %.480s", f.message);
            return rc;
        }
        st->verified = 1;
        st->anchored = f.anchored_seq;
        /* The journal ends with our own CHECKPOINT of the anchored seq:
         * nothing new to anchor (else every run would anchor the last
         * run's CHECKPOINT record). */
        if (f.has_checkpoint && f.checkpoint.seq == f.anchored_seq &&
            f.checkpoint_record_seq == f.local_seq)
            st->own_record = f.local_seq;
    }

    tally_head_info h;
    int rc = tally_head(t, &h);
    if (rc < 0) {
        snprintf(err, errsz, "journal head: %s", tally_errmsg(t));
        return rc;
    }
    if (h.seq == 0 || h.seq <= st->anchored ||
        (h.seq == st->own_record && st->own_record == st->anchored + 1))
        return 0;
    rc = tally_sync(t, h.seq);
    if (rc < 0) {
        snprintf(err, errsz, "journal sync: %s", tally_errmsg(t));
        return rc;
    }

    tally_anchor an;
    rc = tally_anchor_target_latest(target, jid, &an);
    if (rc < 0) {
        snprintf(err, errsz, "%s", tally_anchor_target_errmsg(target));
        return rc;
    }
    if (an.seq > h.seq) {
        snprintf(err, errsz,
                 "not anchoring: the anchor target holds seq %" PRIu64
                 ", the journal head is seq %" PRIu64, an.seq, h.seq);
        return TALLY_EROLLBACK;
    }
    if (an.seq == h.seq) {
        if (memcmp(an.head, h.link, 32) != 0) {
            snprintf(err, errsz, "not anchoring: seq %" PRIu64 " is anchored "
                     "with another head", an.seq);
            return TALLY_EFORK;
        }
        st->anchored = an.seq; /* someone (a previous run) did it */
        return 0;
    }

    tally_checkpoint_info info;
    rc = tally_anchor_target_submit(target, jid, h.seq, h.link, &info);
    if (rc < 0) {
        snprintf(err, errsz, "%s", tally_anchor_target_errmsg(target));
        return rc;
    }
    st->anchored = h.seq;

    uint8_t payload[TALLY_CHECKPOINT_BYTES];
    tally_checkpoint_encode(&info, payload);
    tally_record_in rec = {.type = TALLY_TYPE_CHECKPOINT,
                           .payload = payload,
                           .payload_len = sizeof payload};
    uint64_t seq = 0;
    rc = tally_append(t, &rec, &seq);
    if (rc < 0) {
        /* Anchored but not recorded: the chain is the truth, the record is
         * the journal's copy; the next round will not re-anchor (seq is
         * anchored) and the record is simply missing. */
        snprintf(err, errsz, "anchored seq %" PRIu64 " but appending its "
                 "CHECKPOINT record failed: %s", h.seq, tally_errmsg(t));
        return rc;
    }
    st->own_record = seq;
    *ret = info;
    return 1;
}

int tally_checkpoint_once(tally *t, const char *dir,
                          tally_anchor_target *target,
                          tally_checkpoint_info *ret, char *err, size_t errsz)
{
    round_state st = {0};
    char buf[512] = "";
    tally_checkpoint_info info;
    int rc = run_round(t, dir, target, &st, &info, buf, sizeof buf);
    if (err && errsz)
        snprintf(err, errsz, "%s", buf);
    if (rc == 1 && ret)
        *ret = info;
    return rc;
}

/* ---- the thread ------------------------------------------------------------- */

/* A thread in tally_checkpointer_wait (on its stack, linked under mu), so
 * the gather can tell the waiters a round released but that have not yet
 * run from those still waiting. */
typedef struct waiter {
    uint64_t seq;
    struct waiter *prev, *next;
} waiter;

struct tally_checkpointer {
    tally *t;
    char *dir;
    tally_anchor_target *target;
    uint32_t every_ms, backoff_min, backoff_max;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t wake; /* to the thread: a kick or stop */
    pthread_cond_t done; /* to waiters: a round finished */
    int stop, kick;
    round_state st;      /* the thread's only */
    /* under mu: */
    uint64_t anchored_seq, anchored_ns, anchored_ms;
    uint64_t own_record; /* copy of st.own_record for status() */
    tally_checkpoint_info last;
    uint64_t started_ms;
    uint64_t rounds, anchors, failures, consecutive;
    uint64_t retry_at_ms;
    int last_error;
    char last_errmsg[512];
    /* the gather (all under mu) */
    uint64_t gather_us, gather_quiet_us; /* 0: no gather */
    waiter *waiters;     /* threads in tally_checkpointer_wait */
    unsigned appending;  /* tally_append_anchored calls inside tally_append */
    uint64_t activity_us; /* last anchored arrival or waiter leaving */
    uint64_t round_us;   /* how long the last anchoring round took */
};

static void timespec_at(struct timespec *ts, uint64_t at_mono_ms)
{
    ts->tv_sec = (time_t)(at_mono_ms / 1000);
    ts->tv_nsec = (long)(at_mono_ms % 1000) * 1000000L;
}

static void timespec_at_us(struct timespec *ts, uint64_t at_mono_us)
{
    ts->tv_sec = (time_t)(at_mono_us / 1000000u);
    ts->tv_nsec = (long)(at_mono_us % 1000000u) * 1000L;
}

/* A waiter whose seq is covered but which has not run yet: it is about to
 * return to its caller, who may append again at once. */
static int released_pending(const tally_checkpointer *c)
{
    for (const waiter *w = c->waiters; w; w = w->next)
        if (w->seq <= c->anchored_seq)
            return 1;
    return 0;
}

/* Under mu, just before a round takes the head: waits (mu released) until
 * the anchored appenders in motion have appended, bounded by gather_us and
 * a tenth of the last anchoring round. */
static void gather(tally_checkpointer *c)
{
    uint64_t bound = c->gather_us;
    if (c->round_us && c->round_us / 10 < bound)
        bound = c->round_us / 10;
    if (!bound)
        return;
    uint64_t end = mono_us() + bound;
    while (!c->stop) {
        uint64_t now = mono_us();
        if (now >= end)
            return;
        uint64_t until = end;
        if (c->appending == 0 && !released_pending(c)) {
            uint64_t quiet = c->activity_us + c->gather_quiet_us;
            if (now >= quiet)
                return;
            if (quiet < until)
                until = quiet;
        }
        struct timespec ts;
        timespec_at_us(&ts, until);
        pthread_cond_timedwait(&c->wake, &c->mu, &ts);
    }
}

static void *thread_main(void *arg)
{
    tally_checkpointer *c = arg;
    uint64_t next_due = mono_ms(); /* a first round at once */
    pthread_mutex_lock(&c->mu);
    while (!c->stop) {
        uint64_t now = mono_ms();
        int failing = c->consecutive > 0;
        int due = failing ? now >= c->retry_at_ms
                          : (c->kick || (next_due && now >= next_due));
        if (!due) {
            uint64_t until = failing ? c->retry_at_ms : next_due;
            if (until) {
                struct timespec ts;
                timespec_at(&ts, until);
                pthread_cond_timedwait(&c->wake, &c->mu, &ts);
            } else {
                pthread_cond_wait(&c->wake, &c->mu);
            }
            continue;
        }
        gather(c);
        if (c->stop)
            break;
        c->kick = 0;
        pthread_mutex_unlock(&c->mu);

        tally_checkpoint_info info;
        char err[sizeof c->last_errmsg] = "";
        uint64_t round_start = mono_us();
        int rc = run_round(c->t, c->dir, c->target, &c->st, &info, err,
                           sizeof err);

        pthread_mutex_lock(&c->mu);
        c->rounds++;
        c->own_record = c->st.own_record;
        now = mono_ms();
        if (rc >= 0) {
            c->consecutive = 0;
            c->retry_at_ms = 0;
            if (c->st.anchored > c->anchored_seq) {
                c->anchored_seq = c->st.anchored;
                c->anchored_ms = now;
                c->anchored_ns = real_ns();
            }
            if (rc == 1) {
                c->anchors++;
                c->last = info;
                c->round_us = mono_us() - round_start;
            }
            next_due = c->every_ms ? now + c->every_ms : 0;
        } else {
            c->failures++;
            c->consecutive++;
            c->last_error = rc;
            snprintf(c->last_errmsg, sizeof c->last_errmsg, "%s", err);
            uint64_t b = c->backoff_min;
            for (uint64_t i = 1; i < c->consecutive && b < c->backoff_max; i++)
                b *= 2;
            if (b > c->backoff_max)
                b = c->backoff_max;
            c->retry_at_ms = now + b;
        }
        pthread_cond_broadcast(&c->done);
    }
    pthread_cond_broadcast(&c->done);
    pthread_mutex_unlock(&c->mu);
    return NULL;
}

int tally_checkpointer_start(tally_checkpointer **ret, tally *t,
                             const char *dir, tally_anchor_target *target,
                             const tally_checkpointer_options *opt)
{
    if (!ret || !t || !dir || !target)
        return -EINVAL;
    tally_checkpointer *c = calloc(1, sizeof *c);
    if (!c)
        return -ENOMEM;
    c->dir = strdup(dir);
    if (!c->dir) {
        free(c);
        return -ENOMEM;
    }
    c->t = t;
    c->target = target;
    c->every_ms = opt ? opt->every_ms : 0;
    c->backoff_min = opt && opt->backoff_min_ms ? opt->backoff_min_ms
                                                : DEFAULT_BACKOFF_MIN_MS;
    c->backoff_max = opt && opt->backoff_max_ms ? opt->backoff_max_ms
                                                : DEFAULT_BACKOFF_MAX_MS;
    if (c->backoff_max < c->backoff_min)
        c->backoff_max = c->backoff_min;
    uint32_t g = opt && opt->gather_ms ? opt->gather_ms : DEFAULT_GATHER_MS;
    uint32_t q = opt && opt->gather_quiet_ms ? opt->gather_quiet_ms
                                             : DEFAULT_GATHER_QUIET_MS;
    if (g != TALLY_CHECKPOINTER_NO_GATHER) {
        c->gather_us = (uint64_t)g * 1000u;
        c->gather_quiet_us = (uint64_t)(q < g ? q : g) * 1000u;
    }
    c->started_ms = mono_ms();

    pthread_condattr_t ca;
    int rc = -pthread_condattr_init(&ca);
    if (rc == 0)
        rc = -pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    if (rc == 0)
        rc = -pthread_cond_init(&c->wake, &ca);
    if (rc == 0)
        rc = -pthread_cond_init(&c->done, &ca);
    pthread_condattr_destroy(&ca);
    if (rc == 0)
        rc = -pthread_mutex_init(&c->mu, NULL);
    if (rc == 0)
        rc = -pthread_create(&c->thread, NULL, thread_main, c);
    if (rc < 0) {
        free(c->dir);
        free(c);
        return rc;
    }
    *ret = c;
    return 0;
}

int tally_checkpointer_stop(tally_checkpointer *c)
{
    if (!c)
        return 0;
    pthread_mutex_lock(&c->mu);
    c->stop = 1;
    pthread_cond_broadcast(&c->wake);
    pthread_mutex_unlock(&c->mu);
    pthread_join(c->thread, NULL);
    int rc = c->consecutive ? c->last_error : 0;
    pthread_cond_destroy(&c->wake);
    pthread_cond_destroy(&c->done);
    pthread_mutex_destroy(&c->mu);
    free(c->dir);
    free(c);
    return rc;
}

void tally_checkpointer_kick(tally_checkpointer *c)
{
    pthread_mutex_lock(&c->mu);
    c->kick = 1;
    pthread_cond_signal(&c->wake);
    pthread_mutex_unlock(&c->mu);
}

/* appended: called from tally_append_anchored, whose append is counted in
 * c->appending until it is a waiter (one critical section, so the gather
 * never sees it as neither). */
static int wait_for(tally_checkpointer *c, uint64_t seq, uint32_t timeout_ms,
                    int appended)
{
    uint64_t deadline = mono_ms() + timeout_ms;
    int rc = 0;
    waiter self = {.seq = seq, .prev = NULL, .next = NULL};
    pthread_mutex_lock(&c->mu);
    if (appended)
        c->appending--;
    self.next = c->waiters;
    if (self.next)
        self.next->prev = &self;
    c->waiters = &self;
    c->activity_us = mono_us();
    while (c->anchored_seq < seq) {
        if (c->stop) {
            rc = -ECANCELED;
            break;
        }
        if (mono_ms() >= deadline) {
            rc = -ETIMEDOUT;
            break;
        }
        c->kick = 1;
        pthread_cond_signal(&c->wake);
        struct timespec ts;
        timespec_at(&ts, deadline);
        pthread_cond_timedwait(&c->done, &c->mu, &ts);
    }
    if (self.prev)
        self.prev->next = self.next;
    else
        c->waiters = self.next;
    if (self.next)
        self.next->prev = self.prev;
    /* A gather may be waiting for this thread to leave. */
    c->activity_us = mono_us();
    pthread_cond_signal(&c->wake);
    pthread_mutex_unlock(&c->mu);
    return rc;
}

int tally_checkpointer_wait(tally_checkpointer *c, uint64_t seq,
                            uint32_t timeout_ms)
{
    return wait_for(c, seq, timeout_ms, 0);
}

int tally_append_anchored(tally *t, tally_checkpointer *c,
                          const tally_record_in *rec, uint32_t timeout_ms,
                          uint64_t *ret_seq)
{
    /* Counted while it appends, so a round gathering now waits for this
     * record rather than taking the head just before it. */
    pthread_mutex_lock(&c->mu);
    c->appending++;
    c->activity_us = mono_us();
    pthread_mutex_unlock(&c->mu);
    uint64_t seq = 0;
    int rc = tally_append(t, rec, &seq);
    if (rc < 0) {
        pthread_mutex_lock(&c->mu);
        c->appending--;
        c->activity_us = mono_us();
        pthread_cond_signal(&c->wake);
        pthread_mutex_unlock(&c->mu);
        return rc;
    }
    if (ret_seq)
        *ret_seq = seq;
    return wait_for(c, seq, timeout_ms, 1);
}

void tally_checkpointer_status(tally_checkpointer *c,
                               tally_checkpoint_status *ret)
{
    tally_checkpoint_status s;
    memset(&s, 0, sizeof s);
    tally_head_info h;
    int hrc = tally_head(c->t, &h);
    pthread_mutex_lock(&c->mu);
    uint64_t now = mono_ms();
    s.anchored_seq = c->anchored_seq;
    s.anchored_at_ns = c->anchored_ns;
    s.head_seq = hrc == 0 ? h.seq : 0;
    s.lag_records = s.head_seq > s.anchored_seq ? s.head_seq - s.anchored_seq : 0;
    /* our own CHECKPOINT record right after the anchor is not lag */
    if (s.lag_records && c->own_record == s.anchored_seq + 1 &&
        c->own_record <= s.head_seq)
        s.lag_records--;
    uint64_t since = c->anchored_ms ? c->anchored_ms : c->started_ms;
    s.lag_ms = s.lag_records ? now - since : 0;
    s.rounds = c->rounds;
    s.anchors = c->anchors;
    s.failures = c->failures;
    s.consecutive_failures = c->consecutive;
    s.last_error = c->consecutive ? c->last_error : 0;
    snprintf(s.last_errmsg, sizeof s.last_errmsg, "%s",
             c->consecutive ? c->last_errmsg : "");
    s.has_last = c->anchors > 0;
    s.last = c->last;
    pthread_mutex_unlock(&c->mu);
    *ret = s;
}
