/* check.c — the scheduler's invariants (numbered in sched_int.h), checked between steps.
 * Runs on the scheduler thread; every step in the sanitizer builds (RS_SCHED_CHECK), never in
 * release's hot path. Each check is O(pool + tables + tree). */
#include <stdio.h>

#include "sched/sched_int.h"

/* 1 and 2: each sequence's state agrees with where it is and what it holds. */
static int check_queues(const sched *s, rs_err *e) {
    int bs = s->cfg.block_size;
    for (int i = 0; i < s->running.n; i++) {
        const sched_seq *q = s->running.v[i];
        int rem = q->toks.n - q->n_kv;
        int ok = (q->state == SEQ_DECODE && rem == 1) || (q->state == SEQ_PREFILL && rem > 1);
        if (!ok || q->chunk != 0 || q->table.n * bs < q->n_kv)
            return rs_errf(e, 1,
                           "1: running sequence %d is in state %d with %d to compute, "
                           "chunk %d, %d blocks for %d positions",
                           i, q->state, rem, q->chunk, q->table.n, q->n_kv);
    }
    for (int pass = 0; pass < 2; pass++) {
        const sched_seqvec *a = pass ? &s->warm : &s->waiting;
        for (int i = 0; i < a->n; i++) {
            const sched_seq *q = a->v[i];
            if ((q->state != SEQ_QUEUED && q->state != SEQ_REQUEUED) || q->table.n || q->node ||
                q->n_kv || q->cls != (pass ? SEQ_WARM : SEQ_LIVE))
                return rs_errf(e, 2,
                               "2: %s sequence %d is in state %d (class %d) holding %d blocks",
                               pass ? "warm" : "waiting", i, q->state, q->cls, q->table.n);
        }
    }
    return 0;
}

/* 7: a warming job runs alone, with nothing waiting. */
static int check_warm(const sched *s, rs_err *e) {
    for (int i = 0; i < s->running.n; i++)
        if (s->running.v[i]->cls == SEQ_WARM && (s->running.n > 1 || s->waiting.n > 0))
            return rs_errf(e, 7, "7: a warming job runs beside %d sequences, %d waiting",
                           s->running.n - 1, s->waiting.n);
    return 0;
}

/* 3: pool references == table entries of running sequences + tree edges; free list exact. */
static int check_blocks(sched *s, rs_err *e) {
    int rc = 0;
    for (int i = 0; i < s->running.n; i++) {
        const sched_seq *q = s->running.v[i];
        for (int j = 0; j < q->table.n; j++) s->holders[q->table.v[j]]++;
    }
    int32_t zero = 0;
    for (int32_t b = 0; b < s->pool.n_blocks; b++) {
        int32_t want = s->holders[b] + rt_holds(s->tree, b);
        if (!rc && s->pool.ref[b] != want)
            rc = rs_errf(e, 3, "3: block %d has %d references; sequences hold %d, the tree %d", b,
                         s->pool.ref[b], s->holders[b], rt_holds(s->tree, b));
        zero += s->pool.ref[b] == 0;
        s->holders[b] = 0; /* left clean for count_private */
    }
    if (!rc && zero != s->pool.n_free)
        rc = rs_errf(e, 3, "3: %d blocks unreferenced, %d on the free list", zero, s->pool.n_free);
    return rc;
}

/* 4: every pin on the tree is a running sequence's. */
static int check_pins(const sched *s, rs_err *e) {
    int64_t holders = 0;
    for (int i = 0; i < s->running.n; i++) holders += s->running.v[i]->node != NULL;
    if (rt_pins(s->tree) != holders)
        return rs_errf(e, 4, "4: the tree holds %lld pins, running sequences %lld",
                       (long long)rt_pins(s->tree), (long long)holders);
    return 0;
}

static int live_of(const sched_seqvec *a, const sched_request *r) {
    int n = 0;
    for (int i = 0; i < a->n; i++) n += a->v[i]->req == r;
    return n;
}

/* 5: slots, the queued count shared with submitters, and each request's live choices. */
static int check_counts(sched *s, rs_err *e) {
    int slots = 0, unadmitted = 0;
    for (int i = 0; i < s->running.n; i++) {
        const sched_seq *q = s->running.v[i];
        slots += q->forked ? 1 : q->req->p.n;
        int live =
            live_of(&s->running, q->req) + live_of(&s->waiting, q->req) + live_of(&s->warm, q->req);
        if (live != q->req->n_live)
            return rs_errf(e, 5, "5: a request has %d sequences queued or running, n_live %d", live,
                           q->req->n_live);
    }
    for (int i = 0; i < s->waiting.n; i++) unadmitted += !s->waiting.v[i]->req->admitted;
    if (slots > s->cfg.max_batch)
        return rs_errf(e, 5, "5: %d batch slots used of %d", slots, s->cfg.max_batch);
    pthread_mutex_lock(&s->mu);
    int queued = s->n_queued, inbox = s->inbox.n;
    pthread_mutex_unlock(&s->mu);
    if (queued != inbox + unadmitted)
        return rs_errf(e, 5, "5: n_queued %d, but %d in the inbox and %d waiting unadmitted",
                       queued, inbox, unadmitted);
    return 0;
}

int sched_check(sched *s, rs_err *e) {
    int rc;
    if ((rc = check_queues(s, e)) || (rc = check_blocks(s, e)) || (rc = check_pins(s, e)) ||
        (rc = check_counts(s, e)) || (rc = check_warm(s, e)))
        return rc;
    if (rt_check(s->tree, e)) {
        char msg[sizeof e->msg];
        snprintf(msg, sizeof msg, "%s", e->msg);
        return rs_errf(e, 6, "6: %s", msg);
    }
    return 0;
}
