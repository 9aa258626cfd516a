/* events.c — a request's event queue and lifetime, shared by its submitter and the scheduler.
 *
 * The scheduler pushes and never waits for the reader (the queue is unbounded); the reader
 * waits on the request's own condition variable. The request is freed by whichever of the two
 * sides drops the last reference. Lock order: a request's mu before the scheduler's mu. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "sched/sched_int.h"

sched_request *sched_request_new(void) {
    sched_request *r = calloc(1, sizeof *r);
    if (!r) return NULL;
    if (pthread_mutex_init(&r->mu, NULL)) {
        free(r);
        return NULL;
    }
    if (pthread_cond_init(&r->cv, NULL)) {
        pthread_mutex_destroy(&r->mu);
        free(r);
        return NULL;
    }
    r->refs = 2;
    atomic_init(&r->cancel, 0);
    return r;
}

static void request_destroy(sched_request *r) {
    for (sched_evnode *n = r->head, *next; n; n = next) {
        next = n->next;
        sched_event_free(&n->ev);
        free(n);
    }
    for (int i = 0; i < SCHED_MAX_STOP; i++) free(r->stop_copy[i]);
    free(r->bias);
    gr_free(r->p.grammar);
    eng_lora_release(r->p.lora);
    free(r->prompt);
    pthread_cond_destroy(&r->cv);
    pthread_mutex_destroy(&r->mu);
    free(r);
}

void sched_request_unref(sched_request *r) {
    pthread_mutex_lock(&r->mu);
    int left = --r->refs;
    pthread_mutex_unlock(&r->mu);
    if (left == 0) request_destroy(r);
}

int sched_request_push(sched_request *r, const sched_event *ev) {
    sched_evnode *n = malloc(sizeof *n);
    if (!n) {
        free(ev->text);
        return RS_ENOMEM;
    }
    n->ev = *ev;
    n->next = NULL;
    pthread_mutex_lock(&r->mu);
    if (r->tail)
        r->tail->next = n;
    else
        r->head = n;
    r->tail = n;
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
    return 0;
}

void sched_event_free(sched_event *ev) {
    free(ev->text);
    ev->text = NULL;
    free(ev->embedding);
    ev->embedding = NULL;
}

/* Absolute CLOCK_REALTIME deadline timeout_ms from now (pthread_cond_timedwait's clock). */
static struct timespec deadline_after(int timeout_ms) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += timeout_ms / 1000;
    ts.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    return ts;
}

int sched_next_event(sched_request *r, sched_event *ev, int timeout_ms) {
    struct timespec dl = deadline_after(timeout_ms > 0 ? timeout_ms : 0);
    pthread_mutex_lock(&r->mu);
    while (!r->head && timeout_ms != 0) {
        if (timeout_ms < 0) {
            pthread_cond_wait(&r->cv, &r->mu);
        } else if (pthread_cond_timedwait(&r->cv, &r->mu, &dl) == ETIMEDOUT) {
            break;
        }
    }
    sched_evnode *n = r->head;
    if (n) {
        r->head = n->next;
        if (!r->head) r->tail = NULL;
    }
    pthread_mutex_unlock(&r->mu);
    if (!n) return 0;
    *ev = n->ev;
    free(n);
    return 1;
}

void sched_cancel(sched_request *r) {
    atomic_store(&r->cancel, 1);
    pthread_mutex_lock(&r->mu);
    if (r->s) {
        pthread_mutex_lock(&r->s->mu);
        r->s->wake = 1;
        pthread_cond_signal(&r->s->cv);
        pthread_mutex_unlock(&r->s->mu);
    }
    pthread_mutex_unlock(&r->mu);
}

void sched_request_free(sched_request *r) {
    if (!r) return;
    sched_cancel(r);
    sched_request_unref(r);
}

/* ---------------------------------------------------------------- sequence vectors */

int sched_seqvec_insert(sched_seqvec *a, int at, sched_seq *q) {
    if (a->n == a->cap) {
        int cap = a->cap ? a->cap * 2 : 16;
        sched_seq **v = realloc(a->v, (size_t)cap * sizeof *v);
        if (!v) return RS_ENOMEM;
        a->v = v;
        a->cap = cap;
    }
    memmove(a->v + at + 1, a->v + at, (size_t)(a->n - at) * sizeof *a->v);
    a->v[at] = q;
    a->n++;
    return 0;
}

int sched_seqvec_push(sched_seqvec *a, sched_seq *q) {
    return sched_seqvec_insert(a, a->n, q);
}

void sched_seqvec_remove(sched_seqvec *a, int at) {
    memmove(a->v + at, a->v + at + 1, (size_t)(a->n - at - 1) * sizeof *a->v);
    a->n--;
}

void sched_seqvec_free(sched_seqvec *a) {
    free(a->v);
    *a = (sched_seqvec){0};
}
