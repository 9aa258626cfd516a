/*
 * pool.c — the engine's worker pool: a parallel-for over index ranges. Each call hands every
 * thread one contiguous range, the calling thread included, so a pool of 1 is a plain loop.
 *
 * A decode step hands off ~140 jobs (5 per layer and the LM head), each a few hundred
 * microseconds: a condition-variable wake-up (~15 us here) per hand-off would cost ~10% of a
 * token. So between jobs a worker first spins briefly on the job counter, and the caller spins
 * on the finished count, before either sleeps on its condition variable; a pool left idle
 * costs ~POOL_SPIN pause instructions per thread, then nothing.
 */
#include "engine/internal.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>

enum { POOL_SPIN = 4000 }; /* polls (with a pause hint) before sleeping: tens of microseconds */

struct eng_pool {
    int n_threads;               /* workers + the caller */
    pthread_t *threads;          /* the n_threads - 1 workers */
    int n_started;               /* workers actually started (for teardown after a failed init) */
    pthread_mutex_t mu;          /* guards the sleeping: waits and wake-ups of go / done */
    pthread_cond_t go;           /* a new job (or shutdown) was posted */
    pthread_cond_t done;         /* the last worker finished its range */
    _Atomic uint64_t generation; /* bumped per job (release: fn/arg/n are set before) */
    atomic_int pending;          /* workers still running the current job */
    atomic_int stop;             /* set at eng_pool_free */
    eng_task_fn fn;              /* the current job: written only while no worker runs one */
    void *arg;
    int n; /* items of the current job */
};

/* A hint to the CPU that this is a spin-wait (frees the core's shared resources). */
static inline void spin_pause(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

/* Thread t's range of [0, n) out of k threads: sizes differ by at most one. */
static void range_of(int n, int k, int t, int *i0, int *i1) {
    *i0 = (int)((int64_t)n * t / k);
    *i1 = (int)((int64_t)n * (t + 1) / k);
}

typedef struct worker_arg {
    eng_pool *p; /* the pool */
    int t;       /* this worker's thread index, 1 .. n_threads - 1 */
} worker_arg;

/* Wait for a job newer than `seen` (or shutdown): spin, then sleep. Returns the generation. */
static uint64_t wait_job(eng_pool *p, uint64_t seen) {
    for (int i = 0; i < POOL_SPIN; i++) {
        uint64_t g = atomic_load_explicit(&p->generation, memory_order_acquire);
        if (g != seen || atomic_load(&p->stop)) return g;
        spin_pause();
    }
    pthread_mutex_lock(&p->mu);
    while (!atomic_load(&p->stop) && atomic_load(&p->generation) == seen)
        pthread_cond_wait(&p->go, &p->mu);
    pthread_mutex_unlock(&p->mu);
    return atomic_load_explicit(&p->generation, memory_order_acquire);
}

static void *worker_main(void *va) {
    worker_arg *wa = va;
    eng_pool *p = wa->p;
    int t = wa->t;
    free(wa);
    uint64_t seen = 0;
    for (;;) {
        seen = wait_job(p, seen);
        if (atomic_load(&p->stop)) break;
        int i0, i1;
        range_of(p->n, p->n_threads, t, &i0, &i1);
        if (i1 > i0) p->fn(p->arg, i0, i1);
        if (atomic_fetch_sub(&p->pending, 1) == 1) {
            /* under the mutex, so a caller about to sleep cannot miss it */
            pthread_mutex_lock(&p->mu);
            pthread_cond_signal(&p->done);
            pthread_mutex_unlock(&p->mu);
        }
    }
    return NULL;
}

int eng_pool_init(eng_pool **out, int n_threads, rs_err *e) {
    *out = NULL;
    if (n_threads < 1 || n_threads > 1024)
        return rs_errf(e, RS_EINVAL, "threads = %d out of range (1..1024)", n_threads);
    eng_pool *p = calloc(1, sizeof *p);
    if (!p) return rs_errf(e, RS_ENOMEM, "out of memory");
    p->n_threads = n_threads;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->go, NULL);
    pthread_cond_init(&p->done, NULL);
    p->threads = calloc((size_t)n_threads, sizeof *p->threads);
    if (!p->threads) {
        eng_pool_free(p);
        return rs_errf(e, RS_ENOMEM, "out of memory");
    }
    for (int t = 1; t < n_threads; t++) {
        worker_arg *wa = malloc(sizeof *wa);
        if (wa) *wa = (worker_arg){p, t};
        if (!wa || pthread_create(&p->threads[p->n_started], NULL, worker_main, wa) != 0) {
            free(wa);
            eng_pool_free(p);
            return rs_errf(e, RS_ENOMEM, "cannot start worker thread %d", t);
        }
        p->n_started++;
    }
    *out = p;
    return 0;
}

void eng_pool_free(eng_pool *p) {
    if (!p) return;
    pthread_mutex_lock(&p->mu);
    atomic_store(&p->stop, 1);
    pthread_cond_broadcast(&p->go);
    pthread_mutex_unlock(&p->mu);
    for (int i = 0; i < p->n_started; i++) pthread_join(p->threads[i], NULL);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->go);
    pthread_cond_destroy(&p->done);
    free(p->threads);
    free(p);
}

int eng_pool_threads(const eng_pool *p) {
    return p->n_threads;
}

void eng_pool_run(eng_pool *p, int n, eng_task_fn fn, void *arg) {
    if (n <= 0) return;
    /* Too little work to share (or no workers): the caller does it all, same numbers. */
    if (p->n_threads == 1 || n == 1) {
        fn(arg, 0, n);
        return;
    }
    p->fn = fn; /* no worker reads these until the generation moves */
    p->arg = arg;
    p->n = n;
    atomic_store(&p->pending, p->n_threads - 1);
    pthread_mutex_lock(&p->mu);
    atomic_fetch_add_explicit(&p->generation, 1, memory_order_release);
    pthread_cond_broadcast(&p->go);
    pthread_mutex_unlock(&p->mu);
    int i0, i1;
    range_of(n, p->n_threads, 0, &i0, &i1);
    if (i1 > i0) fn(arg, i0, i1);
    for (int i = 0; i < POOL_SPIN && atomic_load(&p->pending) > 0; i++) spin_pause();
    if (atomic_load(&p->pending) == 0) return;
    pthread_mutex_lock(&p->mu);
    while (atomic_load(&p->pending) > 0) pthread_cond_wait(&p->done, &p->mu);
    pthread_mutex_unlock(&p->mu);
}
