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
 * transaction, not N.
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

static uint64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
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
};

static void timespec_at(struct timespec *ts, uint64_t at_mono_ms)
{
    ts->tv_sec = (time_t)(at_mono_ms / 1000);
    ts->tv_nsec = (long)(at_mono_ms % 1000) * 1000000L;
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
        c->kick = 0;
        pthread_mutex_unlock(&c->mu);

        tally_checkpoint_info info;
        char err[sizeof c->last_errmsg] = "";
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

int tally_checkpointer_wait(tally_checkpointer *c, uint64_t seq,
                            uint32_t timeout_ms)
{
    uint64_t deadline = mono_ms() + timeout_ms;
    int rc = 0;
    pthread_mutex_lock(&c->mu);
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
    pthread_mutex_unlock(&c->mu);
    return rc;
}

int tally_append_anchored(tally *t, tally_checkpointer *c,
                          const tally_record_in *rec, uint32_t timeout_ms,
                          uint64_t *ret_seq)
{
    uint64_t seq = 0;
    int rc = tally_append(t, rec, &seq);
    if (rc < 0)
        return rc;
    if (ret_seq)
        *ret_seq = seq;
    return tally_checkpointer_wait(c, seq, timeout_ms);
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
