/*
 * pool.c — a small fixed set of helper threads for the compactor's CPU
 * work (record hashes, decryption): tc_pool_run runs one function on every
 * thread, the caller's included, and returns when all are done. Batches
 * are large (megabytes of frames), so one mutex and two condition
 * variables are all the synchronisation it needs.
 */
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>

#include "compact-internal.h"

struct tc_pool {
    pthread_mutex_t mu;
    pthread_cond_t go, done;
    unsigned n;              /* threads, the caller included */
    pthread_t *thr;
    unsigned started;
    uint64_t gen;            /* bumped for each run */
    unsigned pending;        /* helpers still running the current one */
    bool stop;
    tc_task_fn fn;
    void *ctx;
};

struct helper_arg {
    tc_pool *p;
    unsigned tid;
};

static void *helper(void *arg)
{
    struct helper_arg *a = arg;
    tc_pool *p = a->p;
    unsigned tid = a->tid;
    free(a);
    uint64_t seen = 0;
    pthread_mutex_lock(&p->mu);
    for (;;) {
        while (!p->stop && p->gen == seen)
            pthread_cond_wait(&p->go, &p->mu);
        if (p->stop)
            break;
        seen = p->gen;
        tc_task_fn fn = p->fn;
        void *ctx = p->ctx;
        pthread_mutex_unlock(&p->mu);
        fn(ctx, tid, p->n);
        pthread_mutex_lock(&p->mu);
        if (--p->pending == 0)
            pthread_cond_signal(&p->done);
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

int tc_pool_start(tc_pool **ret, unsigned nthreads)
{
    tc_pool *p = calloc(1, sizeof *p);
    if (!p)
        return -ENOMEM;
    p->n = nthreads ? nthreads : 1;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->go, NULL);
    pthread_cond_init(&p->done, NULL);
    p->thr = calloc(p->n, sizeof *p->thr);
    if (!p->thr) {
        tc_pool_stop(p);
        return -ENOMEM;
    }
    for (unsigned i = 1; i < p->n; i++) {
        struct helper_arg *a = malloc(sizeof *a);
        if (!a)
            break;
        a->p = p;
        a->tid = i;
        if (pthread_create(&p->thr[i], NULL, helper, a) != 0) {
            free(a);
            break;
        }
        p->started++;
    }
    /* Fewer helpers than asked (no memory or threads): run with those. */
    p->n = p->started + 1;
    *ret = p;
    return 0;
}

void tc_pool_run(tc_pool *p, tc_task_fn fn, void *ctx)
{
    if (p->n == 1) {
        fn(ctx, 0, 1);
        return;
    }
    pthread_mutex_lock(&p->mu);
    p->fn = fn;
    p->ctx = ctx;
    p->pending = p->n - 1;
    p->gen++;
    pthread_cond_broadcast(&p->go);
    pthread_mutex_unlock(&p->mu);
    fn(ctx, 0, p->n);
    pthread_mutex_lock(&p->mu);
    while (p->pending > 0)
        pthread_cond_wait(&p->done, &p->mu);
    pthread_mutex_unlock(&p->mu);
}

unsigned tc_pool_threads(const tc_pool *p)
{
    return p->n;
}

void tc_pool_stop(tc_pool *p)
{
    if (!p)
        return;
    pthread_mutex_lock(&p->mu);
    p->stop = true;
    pthread_cond_broadcast(&p->go);
    pthread_mutex_unlock(&p->mu);
    for (unsigned i = 1; i <= p->started; i++)
        pthread_join(p->thr[i], NULL);
    free(p->thr);
    pthread_cond_destroy(&p->done);
    pthread_cond_destroy(&p->go);
    pthread_mutex_destroy(&p->mu);
    free(p);
}
