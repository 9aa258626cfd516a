/* step.c — one scheduler step: cancel, admit, plan the batch (allocating KV, evicting and
 * preempting under memory pressure), run the forward pass, then sample and emit. Everything
 * here runs on the scheduler thread only. */
#include <assert.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sched/sched_int.h"

/* Reasons a sequence leaves: each goes through seq_end, the one release path. */
enum { END_FINISHED, END_CANCELED, END_FAILED };

/* ---------------------------------------------------------------- sequences */

/* A well-mixed seed per (request seed, choice index): choices of one request differ, and a
 * choice samples the same whether it runs alone or in a batch. */
static uint64_t choice_seed(uint64_t seed, int index) {
    uint64_t z = seed + 0x9E3779B97F4A7C15ull * (uint64_t)(index + 1);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

sched_seq *sched_seq_new(sched *s, sched_request *r, int index, int forked) {
    sched_seq *q = calloc(1, sizeof *q);
    if (!q) return NULL;
    q->req = r;
    q->index = index;
    q->forked = forked || r->p.n == 1;
    if (rs_ivec_append(&q->toks, r->prompt, r->n_prompt)) {
        free(q);
        return NULL;
    }
    eng_rng_seed(&q->rng, choice_seed(r->p.sampling.seed, index));
    if (s->tok) {
        tok_stream_init(&q->ts, s->tok, 1);
        q->ts_live = 1;
    }
    sched_stopper_init(&q->stopper, r->stop_copy, r->p.n_stop);
    q->t_wait = rs_now();
    rs_err e;
    if (r->p.grammar && gr_matcher_new(&q->gm, r->p.grammar, &e)) {
        sched_seq_free(q);
        return NULL;
    }
    return q;
}

void sched_seq_free(sched_seq *q) {
    if (!q) return;
    rs_ivec_free(&q->toks);
    rs_ivec_free(&q->table);
    if (q->ts_live) tok_stream_free(&q->ts);
    sched_stopper_free(&q->stopper);
    free(q->emb);
    gr_matcher_free(q->gm);
    free(q);
}

/* Which transitions the list in sched_int.h allows (from -> to). */
static int allowed(sched_state from, sched_state to) {
    switch (from) {
    case SEQ_QUEUED:
    case SEQ_REQUEUED:
        return to == SEQ_PREFILL || to == SEQ_DECODE;
    case SEQ_PREFILL:
        return to != SEQ_QUEUED;
    case SEQ_DECODE:
        return to == SEQ_DECODE || to == SEQ_DONE || to == SEQ_REQUEUED;
    case SEQ_DONE:
        return 0;
    }
    return 0;
}

void sched_seq_set_state(sched_seq *q, sched_state to) {
    assert(allowed(q->state, to)); /* a transition sched_int.h does not list: a scheduler bug */
    q->state = to;
}

/* A running sequence's state from what is left to compute: one position is a decode row. */
static void settle(sched_seq *q) {
    sched_seq_set_state(q, q->toks.n - q->n_kv == 1 ? SEQ_DECODE : SEQ_PREFILL);
}

static int seq_slots(const sched_seq *q) {
    return q->forked ? 1 : q->req->p.n;
}

static int running_slots(const sched *s) {
    int n = 0;
    for (int i = 0; i < s->running.n; i++) n += seq_slots(s->running.v[i]);
    return n;
}

static int find(const sched_seqvec *a, const sched_seq *q) {
    for (int i = 0; i < a->n; i++)
        if (a->v[i] == q) return i;
    return -1;
}

/* ---------------------------------------------------------------- events */

static char *dup_str(const char *t) {
    char *d = strdup(t ? t : "");
    return d;
}

static void push_event(sched_request *r, sched_event *ev) {
    /* A reader that dropped its handle reads nothing: do not queue for nobody. */
    if (atomic_load(&r->cancel) && ev->type == SCHED_EV_TOKEN) {
        free(ev->text);
        return;
    }
    sched_request_push(r, ev);
}

/* Copy a message, cut to the destination (messages come from rs_err, which is larger). */
static void copy_msg(char *dst, size_t n, const char *msg) {
    size_t l = strlen(msg);
    if (l >= n) l = n - 1;
    memcpy(dst, msg, l);
    dst[l] = 0;
}

static void fail_request(sched_request *r, int code, const char *msg) {
    if (r->failed) return;
    r->failed = 1;
    r->fail_code = code;
    copy_msg(r->fail_msg, sizeof r->fail_msg, msg);
}

/* The request's last event, then the scheduler's side lets go of it. */
static void request_end(sched *s, sched_request *r) {
    if (r->warm) { /* nobody reads a warming job: it only leaves the count */
        pthread_mutex_lock(&s->mu);
        s->n_warm--;
        pthread_mutex_unlock(&s->mu);
        sched_request_unref(r);
        return;
    }
    sched_event ev = {.step = s->steps};
    if (r->failed || (atomic_load(&r->cancel) && r->n_finished < r->p.n)) {
        ev.type = SCHED_EV_ERROR;
        ev.code = r->failed ? r->fail_code : RS_ECANCELED;
        copy_msg(ev.message, sizeof ev.message,
                 r->failed ? r->fail_msg : "the request was cancelled");
    } else {
        ev.type = SCHED_EV_DONE;
        ev.prompt_tokens = r->n_prompt;
        ev.cached_tokens = r->cached_tokens;
        ev.completion_tokens = r->completion_tokens;
    }
    sched_request_push(r, &ev);
    if (!r->admitted) {
        pthread_mutex_lock(&s->mu);
        s->n_queued--;
        pthread_mutex_unlock(&s->mu);
    }
    pthread_mutex_lock(&r->mu);
    r->s = NULL; /* a later sched_cancel must not wake a scheduler that may be gone */
    pthread_mutex_unlock(&r->mu);
    sched_request_unref(r);
}

/* ---------------------------------------------------------------- KV and the release path */

/* Put the whole blocks of toks[0, n_kv) into the tree (KV computed is KV worth keeping) and
 * move the pin to the deepest inserted node. */
/* How q's KV goes into the tree: a warming job's as cold nodes (evicted first, no LRU use). */
static int insert_flags(const sched_seq *q) {
    return q->cls == SEQ_WARM ? RT_COLD : 0;
}

static void seq_insert(sched *s, sched_seq *q) {
    int bs = s->cfg.block_size;
    if (!s->cfg.prefix_cache || q->n_kv / bs <= q->n_tree) return;
    rt_node *node = NULL;
    rs_err e = {0};
    if (rt_insert_ex(s->tree, q->req->ns, q->toks.v, q->n_kv, q->table.v, insert_flags(q), &node,
                     &e))
        return;
    if (node) rt_pin(s->tree, node);
    if (q->node) rt_unpin(s->tree, q->node);
    q->node = node;
    q->n_tree = q->n_kv / bs;
}

/* Put all of toks[0, n_kv) into the tree, the partial last block too: the sequence is letting
 * go of its blocks, so nothing writes that block again. */
static void seq_keep(sched *s, sched_seq *q) {
    if (!s->cfg.prefix_cache || q->n_kv <= q->n_tree * s->cfg.block_size) return;
    rs_err e = {0};
    rt_insert_ex(s->tree, q->req->ns, q->toks.v, q->n_kv, q->table.v, RT_TAIL | insert_flags(q),
                 NULL, &e);
}

/* Give back everything the sequence holds in the pool and the tree. keep: insert its KV first
 * (not after a failure, whose KV may be incomplete). */
static void seq_release_kv(sched *s, sched_seq *q, int keep) {
    if (keep) seq_keep(s, q);
    if (q->node) rt_unpin(s->tree, q->node);
    q->node = NULL;
    for (int i = 0; i < q->table.n; i++) kv_release(&s->pool, q->table.v[i]);
    q->table.n = 0;
    q->n_kv = 0;
    q->n_tree = 0;
    q->chunk = 0;
}

/* The one exit of a sequence (finish, cancel, error): release, free, and end the request when
 * it was its last live choice. The caller has removed q from its queue. */
static void seq_end(sched *s, sched_seq *q, int how) {
    sched_request *r = q->req;
    seq_release_kv(s, q, how != END_FAILED);
    sched_seq_free(q);
    if (--r->n_live == 0) request_end(s, r);
}

/* Preempt: free the sequence's blocks (its KV goes to the tree, where it is evictable) and
 * requeue it first in line; it recomputes later and, the engine being batch-invariant, goes
 * on exactly as it would have. */
static void preempt(sched *s, sched_seq *q) {
    int i = find(&s->running, q);
    sched_seqvec_remove(&s->running, i);
    seq_release_kv(s, q, 1);
    sched_seq_set_state(q, SEQ_REQUEUED);
    if (sched_seqvec_insert(&s->waiting, 0, q)) {
        fail_request(q->req, RS_ENOMEM, "scheduler: out of memory while preempting");
        seq_end(s, q, END_FAILED);
        return;
    }
    s->preemptions++;
}

/* A free block, evicting unpinned cache if the pool is empty; -1 when nothing is evictable. */
static int32_t alloc_block(sched *s) {
    int32_t b = kv_alloc(&s->pool);
    if (b < 0 && rt_evict(s->tree, 1) > 0) b = kv_alloc(&s->pool);
    return b;
}

/* Grow q's block table to cover `upto` positions. Under pressure, preempt the newest running
 * sequence until it fits. Returns 0, or -1 when q itself had to go (preempted or failed). */
static int ensure_blocks(sched *s, sched_seq *q, int upto) {
    int bs = s->cfg.block_size;
    while (q->table.n * bs < upto) {
        int32_t b = alloc_block(s);
        if (b >= 0) {
            if (rs_ivec_push(&q->table, b) == 0) continue;
            kv_release(&s->pool, b);
            fail_request(q->req, RS_ENOMEM, "scheduler: out of memory for a block table");
            return -1;
        }
        if (q->cls == SEQ_WARM) { /* the pool is short: warming gives up, keeping its KV */
            sched_seqvec_remove(&s->running, find(&s->running, q));
            s->warm_dropped++;
            seq_end(s, q, END_CANCELED);
            return -1;
        }
        sched_seq *victim = s->running.v[s->running.n - 1]; /* the newest admission */
        if (victim == q && s->running.n == 1) {
            /* Alone, q fits the pool (ctx_size <= pool), but its pin may hold more than its
             * blocks: a match can end inside a long cached edge. Its own references keep its
             * KV alive; the pin only protects sharing, so let it go and evict again. */
            if (q->node) {
                rt_unpin(s->tree, q->node);
                q->node = NULL;
                q->n_tree = 0;
                continue;
            }
            fail_request(q->req, RS_EFULL, "the KV pool cannot hold this sequence");
            return -1;
        }
        preempt(s, victim);
        if (victim == q) return -1;
    }
    return 0;
}

/* ---------------------------------------------------------------- admission */

/* Shared-prefix wait: a running prefill in the same namespace that will put at least one more
 * whole block of q's prompt into the tree than the tree holds now; q waits and reuses it. */
static int waits_for_prefill(const sched *s, const sched_seq *q, int matched) {
    int bs = s->cfg.block_size;
    for (int i = 0; i < s->running.n; i++) {
        const sched_seq *o = s->running.v[i];
        if (o->req->ns != q->req->ns || o->state != SEQ_PREFILL) continue;
        int n = q->toks.n - 1 < o->toks.n ? q->toks.n - 1 : o->toks.n, l = 0;
        while (l < n && q->toks.v[l] == o->toks.v[l]) l++;
        int whole = l / bs * bs;
        if (whole > matched && o->n_tree * bs < whole) return 1;
    }
    return 0;
}

/* An embedding pooled over every position (mean, CLS) needs each one computed: no match. */
static int may_match(const sched *s, const sched_seq *q) {
    return s->cfg.prefix_cache && (!q->req->p.embed || s->mc->pooling == ENG_POOL_LAST);
}

/* Cached prefix length of q (at most toks.n - 1: the last token is always computed, into a
 * private block, for its logits). With the cache off: 0. */
static int match_len(sched *s, sched_seq *q, rt_node **node) {
    *node = NULL;
    s->match_blocks.n = 0;
    if (!may_match(s, q)) return 0;
    int m = rt_match(s->tree, q->req->ns, q->toks.v, q->toks.n - 1, &s->match_blocks, node);
    if (m < 0) { /* out of memory for the block list: compute everything */
        *node = NULL;
        s->match_blocks.n = 0;
        return 0;
    }
    return m;
}

#define ADMIT_WINDOW 64 /* waiting sequences ranked per step (bounds the matching cost) */

typedef struct cand {
    sched_seq *q; /* a waiting sequence */
    int matched;  /* its cached prefix length now */
    int order;    /* its place in the waiting queue (older first) */
    int first;    /* goes before everything: preempted, or past the age bound */
} cand;

/* Longest cached prefix first, older first on ties; a preempted sequence or one waiting past
 * the age bound at the head of the queue goes before all (nothing starves). */
static int cand_cmp(const void *x, const void *y) {
    const cand *a = x, *b = y;
    if (a->first != b->first) return b->first - a->first;
    if (a->matched != b->matched) return b->matched - a->matched;
    return a->order - b->order;
}

/* The length match_len would give, without refreshing last-access times or counting a lookup:
 * ranking looks at up to ADMIT_WINDOW waiting sequences every step, and only an admission is a
 * use of the cache. */
static int peek_len(const sched *s, const sched_seq *q) {
    if (!may_match(s, q)) return 0;
    int m = rt_peek(s->tree, q->req->ns, q->toks.v, q->toks.n - 1);
    return m > 0 ? m : 0;
}

/* Rank the head of the waiting queue once per step (one read-only tree walk each). */
static int rank(sched *s, cand *c) {
    double now = rs_now();
    int n = s->waiting.n < ADMIT_WINDOW ? s->waiting.n : ADMIT_WINDOW;
    for (int i = 0; i < n; i++) {
        sched_seq *q = s->waiting.v[i];
        c[i] = (cand){.q = q, .matched = peek_len(s, q), .order = i};
        c[i].first = i == 0 && (q->state == SEQ_REQUEUED || now - q->t_wait > s->cfg.max_wait_s);
    }
    qsort(c, (size_t)n, sizeof *c, cand_cmp);
    return n;
}

/* Blocks the pool can still give without preemption: free plus evictable cache. */
static int64_t available_blocks(const sched *s) {
    rt_stats st;
    rt_get_stats(s->tree, &st);
    return (int64_t)s->pool.n_free + st.cached_blocks - st.pinned_blocks;
}

/* Pin what q holds and no more. A match may end inside a node's edge, and pinning that node
 * would hold the whole edge; inserting the matched prefix (all of it cached: the tree keeps its
 * own blocks) splits the edge there and gives the node that ends exactly at m. */
static rt_node *pin_exact(sched *s, sched_seq *q, int m, rt_node *node) {
    rt_node *exact = NULL;
    rs_err e = {0};
    if (m == 0) return NULL; /* a miss may still name a node it touched: nothing to protect */
    if (node &&
        rt_insert_ex(s->tree, q->req->ns, q->toks.v, m, s->match_blocks.v, insert_flags(q), &exact,
                     &e) == 0 &&
        exact)
        node = exact;
    rt_pin(s->tree, node);
    return node;
}

/* A match that ended mid-block handed back the tree's block, which q must never write: take a
 * private copy of it (copy-on-write; the slots past the match are overwritten as q computes
 * them). The reference q holds keeps the source alive while allocation evicts. Returns 0, or
 * -1 when no block was free (q then drops the partial block and recomputes those tokens). */
static int copy_partial(sched *s, sched_seq *q) {
    int32_t src = q->table.v[q->table.n - 1], b = alloc_block(s);
    if (b >= 0) kv_copy(&s->pool, b, src);
    kv_release(&s->pool, src);
    if (b >= 0)
        q->table.v[q->table.n - 1] = b;
    else
        q->table.n--;
    return b >= 0 ? 0 : -1;
}

/* q takes the m matched tokens (s->match_blocks): pins what it holds, a reference to each
 * block, a private copy of a partial last one; it then has m positions (fewer when no block
 * was free for the copy) and the state for what is left. Returns the positions it has, or -1
 * out of memory (nothing taken). */
static int hold_match(sched *s, sched_seq *q, int m, rt_node *node) {
    int bs = s->cfg.block_size;
    if (rs_ivec_reserve(&q->table, s->match_blocks.n + 1)) return -1;
    q->node = pin_exact(s, q, m / bs * bs, node);
    for (int i = 0; i < s->match_blocks.n; i++) {
        kv_retain(&s->pool, s->match_blocks.v[i]);
        q->table.v[q->table.n++] = s->match_blocks.v[i];
    }
    if (m % bs && copy_partial(s, q)) m = m / bs * bs;
    q->n_kv = m;
    q->n_tree = m / bs;
    settle(q);
    return m;
}

/* Take q from waiting into running with its cached prefix pinned. Returns 0, or 1 when memory
 * is too tight to start it now (it stays waiting). */
static int admit_one(sched *s, int at) {
    sched_seq *q = s->waiting.v[at];
    sched_request *r = q->req;
    int bs = s->cfg.block_size;
    rt_node *node;
    int m = match_len(s, q, &node);
    /* Room for the whole uncached part plus one block of growth per running sequence, so a
     * fresh prompt does not start only to be preempted; with nothing running it always goes
     * (it fits an empty pool by construction). */
    int64_t need = (q->toks.n + bs - 1) / bs - m / bs;
    if (s->running.n > 0 && need + m / bs + s->running.n > available_blocks(s)) return 1;
    if ((m = hold_match(s, q, m, node)) < 0) {
        fail_request(r, RS_ENOMEM, "scheduler: out of memory for a block table");
        sched_seqvec_remove(&s->waiting, at);
        seq_end(s, q, END_FAILED);
        return 0;
    }
    if (!r->admitted) {
        r->admitted = 1;
        r->cached_tokens = m;
        s->lookups++;
        s->hit_tokens += m;
        s->miss_tokens += r->n_prompt - m;
        pthread_mutex_lock(&s->mu);
        s->n_queued--;
        pthread_mutex_unlock(&s->mu);
    }
    q->admit_no = ++s->admit_counter;
    sched_seqvec_remove(&s->waiting, at);
    if (sched_seqvec_push(&s->running, q)) {
        fail_request(r, RS_ENOMEM, "scheduler: out of memory for the running queue");
        seq_end(s, q, END_FAILED);
    }
    return 0;
}

/* Admit in rank order while batch slots and memory allow. A candidate sharing a prefix with
 * a running prefill waits for it; an over-age head that does not fit stops admission so that
 * later arrivals cannot overtake it forever. */
static void admit(sched *s) {
    if (s->waiting.n == 0 || running_slots(s) >= s->cfg.max_batch) return; /* skip the ranking */
    cand c[ADMIT_WINDOW];
    int n = rank(s, c);
    for (int i = 0; i < n; i++) {
        sched_seq *q = c[i].q;
        if (seq_slots(q) > s->cfg.max_batch - running_slots(s)) {
            if (c[i].first) return;
            continue;
        }
        if (may_match(s, q) && waits_for_prefill(s, q, c[i].matched)) continue;
        if (admit_one(s, find(&s->waiting, q))) return;
    }
}

/* ---------------------------------------------------------------- warming */

/* A request is running or waiting: warming must not run this step. */
static int live_present(const sched *s) {
    if (s->waiting.n > 0) return 1;
    for (int i = 0; i < s->running.n; i++)
        if (s->running.v[i]->cls == SEQ_LIVE) return 1;
    return 0;
}

/* Yield: a running warming job goes back to the front of `warm`, its KV into the tree (cold),
 * from where it resumes when the server is idle again. */
static void park_warm(sched *s) {
    for (int i = 0; i < s->running.n;) {
        sched_seq *q = s->running.v[i];
        if (q->cls != SEQ_WARM) {
            i++;
            continue;
        }
        sched_seqvec_remove(&s->running, i);
        seq_release_kv(s, q, 1);
        sched_seq_set_state(q, SEQ_REQUEUED);
        s->warm_parks++;
        if (sched_seqvec_insert(&s->warm, 0, q)) seq_end(s, q, END_FAILED);
    }
}

/* Start the next warming job when nothing live runs or waits: it matches its whole text
 * (no position needs logits) without counting a lookup or refreshing LRU; a job already in
 * the tree ends at once, one whose uncached part the pool cannot give is dropped. */
static void admit_warm(sched *s) {
    int bs = s->cfg.block_size;
    if (s->running.n > 0) return; /* one warming job at a time, and never beside a live one */
    while (s->warm.n > 0) {
        sched_seq *q = s->warm.v[0];
        sched_seqvec_remove(&s->warm, 0);
        rt_node *node = NULL;
        s->match_blocks.n = 0;
        int m = rt_match_ex(s->tree, q->req->ns, q->toks.v, q->toks.n, RT_COLD, &s->match_blocks,
                            &node);
        if (m < 0) m = 0, node = NULL, s->match_blocks.n = 0;
        int64_t need = (q->toks.n + bs - 1) / bs - m / bs;
        int done = m == q->toks.n, fits = need + m / bs <= available_blocks(s);
        if (!done && !fits) s->warm_dropped++;
        if (done || !fits || hold_match(s, q, m, node) < 0) {
            seq_end(s, q, END_FINISHED); /* holds nothing: nothing is inserted */
            continue;
        }
        q->admit_no = ++s->admit_counter;
        if (sched_seqvec_push(&s->running, q)) seq_end(s, q, END_FAILED);
        return;
    }
}

/* ---------------------------------------------------------------- cancellation */

/* Cancelled, failed, or a warming job whose adapter is being unloaded (the unload waits for
 * every reference; warming is best effort and must not hold it up). */
static int doomed(const sched_seq *q) {
    const sched_request *r = q->req;
    return atomic_load(&r->cancel) || r->failed ||
           (r->warm && r->p.lora && eng_lora_unloading(r->p.lora));
}

static void drop_doomed(sched *s, sched_seqvec *a) {
    for (int i = 0; i < a->n;) {
        sched_seq *q = a->v[i];
        if (!doomed(q)) {
            i++;
            continue;
        }
        sched_seqvec_remove(a, i);
        seq_end(s, q, q->req->failed ? END_FAILED : END_CANCELED);
    }
}

void sched_drop_all(sched *s) {
    while (s->warm.n > 0) {
        sched_seq *q = s->warm.v[s->warm.n - 1];
        s->warm.n--;
        seq_end(s, q, END_FAILED);
    }
    for (int pass = 0; pass < 2; pass++) {
        sched_seqvec *a = pass ? &s->waiting : &s->running;
        for (int i = 0; i < a->n; i++)
            fail_request(a->v[i]->req, RS_ECANCELED, "the scheduler stopped");
        drop_doomed(s, a);
    }
}

/* ---------------------------------------------------------------- planning the batch */

static int budget_left(const sched *s) {
    int b = s->cfg.token_budget;
    for (int i = 0; i < s->running.n; i++) b -= s->running.v[i]->chunk;
    return b;
}

/* Prefill tokens the step may still take: the budget left, and while a planned row decodes,
 * no more than mixed_prefill in all. Read from the plan itself, so a preempted sequence's
 * chunk stops counting. */
static int prefill_left(const sched *s) {
    int b = budget_left(s), decoding = 0, prefill = 0;
    for (int i = 0; i < s->running.n; i++) {
        const sched_seq *q = s->running.v[i];
        if (!q->chunk) continue;
        if (q->state == SEQ_DECODE)
            decoding = 1;
        else
            prefill += q->chunk;
    }
    return decoding && b > s->cfg.mixed_prefill - prefill ? s->cfg.mixed_prefill - prefill : b;
}

/* Decode rows first (one token each: running streams never stall), then prefill chunks from
 * the rest of the token budget, oldest admission first; while any row decodes, prefill takes
 * at most mixed_prefill tokens, so the step (every stream's inter-token gap) stays short. Sets
 * q->chunk; allocates KV. A preemption victim is always the newest (the last of `running`), so
 * it is q itself or a sequence after q; a victim already planned gives its budget back. */
static void plan(sched *s) {
    for (int i = 0; i < s->running.n; i++) s->running.v[i]->chunk = 0;
    for (int pass = 0; pass < 2; pass++) {
        for (int i = 0; i < s->running.n;) {
            sched_seq *q = s->running.v[i];
            int rem = q->toks.n - q->n_kv, budget = pass ? prefill_left(s) : budget_left(s);
            if (budget <= 0) return;
            if ((pass == 0) != (q->state == SEQ_DECODE) || q->chunk) {
                i++;
                continue;
            }
            int chunk = rem < budget ? rem : budget;
            if (q->cls == SEQ_WARM && chunk > s->cfg.mixed_prefill) chunk = s->cfg.mixed_prefill;
            if (ensure_blocks(s, q, q->n_kv + chunk) == 0) q->chunk = chunk;
            if (find(&s->running, q) >= 0) i++; /* else preempted: v[i] is the next one */
        }
    }
}

/* ---------------------------------------------------------------- sampling and output */

static int is_eos(const sched *s, int32_t t) {
    for (int i = 0; i < s->mc->n_eos; i++)
        if (s->mc->eos_ids[i] == t) return 1;
    return 0;
}

/* log-sum-exp of a row and its k most likely ids (ties: lower id first). */
static double row_lse_top(const float *x, int n, int k, sched_top *top) {
    float mx = x[0];
    for (int i = 1; i < n; i++)
        if (x[i] > mx) mx = x[i];
    double sum = 0;
    for (int i = 0; i < n; i++) sum += exp((double)x[i] - mx);
    double lse = mx + log(sum);
    int have = 0;
    for (int i = 0; i < n && k > 0; i++) {
        if (have == k && x[i] <= top[k - 1].logprob) continue;
        int j = have < k ? have++ : k - 1;
        while (j > 0 && top[j - 1].logprob < x[i]) {
            top[j] = top[j - 1];
            j--;
        }
        top[j] = (sched_top){i, x[i]};
    }
    for (int i = 0; i < have; i++) top[i].logprob = (float)(top[i].logprob - lse);
    return lse;
}

/* Text of the end of a choice: what the decoder and the stop matcher still hold. */
static char *tail_text(sched_seq *q, int *stopped) {
    char *flushed = NULL, *emit = NULL;
    rs_err e;
    if (!q->ts_live || tok_stream_flush(&q->ts, &flushed, &e)) flushed = NULL;
    int rc = sched_stopper_feed(&q->stopper, flushed ? flushed : "", 1, &emit);
    free(flushed);
    if (rc == 1) *stopped = 1;
    return emit ? emit : dup_str("");
}

/* A constrained choice: every token its matcher cannot take gets -inf (after the logprobs were
 * read from the raw row). 0, or -1 with the request failed. */
static int mask_row(sched *s, sched_seq *q, float *logits) {
    int allowed = gr_matcher_mask(q->gm, s->gv, s->mask);
    if (allowed <= 0) {
        fail_request(q->req, allowed < 0 ? RS_ENOMEM : RS_EINVAL,
                     allowed < 0 ? "scheduler: out of memory for the grammar"
                                 : "grammar: no token can continue the value");
        return -1;
    }
    gr_mask_apply(s->mask, gr_vocab_size(s->gv), logits, s->vocab);
    return 0;
}

/* Sample the next token of q from its logits row and emit it; returns 1 when q finished. */
static int sample_emit(sched *s, sched_seq *q, float *logits) {
    sched_request *r = q->req;
    sched_event ev = {.type = SCHED_EV_TOKEN, .index = q->index, .step = s->steps};
    int want_lp = r->p.logprobs || r->p.top_logprobs > 0;
    double lse = 0;
    if (want_lp) {
        memcpy(s->scratch, logits, (size_t)s->vocab * sizeof *logits);
        lse = row_lse_top(s->scratch, s->vocab, r->p.top_logprobs, ev.top);
        ev.n_top = r->p.top_logprobs;
    }
    if (q->gm && mask_row(s, q, logits)) return 1;
    int n_gen = q->toks.n - r->n_prompt;
    int32_t t = eng_sample(&r->p.sampling, &q->rng, logits, s->vocab, r->prompt, r->n_prompt,
                           q->toks.v + r->n_prompt, n_gen, NULL);
    if (t < 0 || t >= s->vocab || rs_ivec_push(&q->toks, t) ||
        (q->gm && gr_matcher_accept_token(q->gm, s->gv, t) != 1)) {
        fail_request(r, RS_EINVAL, "sampling failed");
        return 1;
    }
    r->completion_tokens++;
    n_gen++;
    ev.token = t;
    if (want_lp) ev.logprob = (float)(s->scratch[t] - lse);
    const char *reason = NULL;
    int stop_string = 0;
    /* a constrained choice ends at EOS even with ignore_eos: its value is complete */
    if ((!r->p.ignore_eos || q->gm) && is_eos(s, t)) {
        reason = "stop";
    } else {
        char *piece = NULL, *emit = NULL;
        rs_err e;
        if (q->ts_live && tok_stream_push(&q->ts, t, &piece, &e)) piece = NULL;
        int rc = sched_stopper_feed(&q->stopper, piece ? piece : "", 0, &emit);
        free(piece);
        if (rc == 1) reason = "stop", stop_string = 1;
        ev.text = emit ? emit : dup_str("");
        push_event(r, &ev);
        if (!reason && q->gm && gr_matcher_done(q->gm)) reason = "stop"; /* nothing can follow */
    }
    if (!reason && (n_gen >= r->p.max_tokens || q->toks.n >= s->cfg.ctx_size)) reason = "length";
    if (!reason) return 0;
    sched_event fin = {
        .type = SCHED_EV_FINISH, .index = q->index, .finish_reason = reason, .step = s->steps};
    int stopped = 0;
    fin.text = stop_string ? dup_str("") : tail_text(q, &stopped);
    if (stopped) fin.finish_reason = "stop";
    push_event(r, &fin);
    r->n_finished++;
    return 1;
}

/* After the prompt of an n > 1 request: choices 1..n-1 share its whole blocks and copy the
 * partial last one (never writing into a shared block), then sample from the same logits. A
 * choice that gets no block now waits and recomputes from the cache. */
static void fork_choices(sched *s, sched_seq *q, const float *logits) {
    sched_request *r = q->req;
    int bs = s->cfg.block_size;
    q->forked = 1;
    for (int c = 1; c < r->p.n; c++) {
        sched_seq *k = sched_seq_new(s, r, c, 1);
        if (!k) {
            fail_request(r, RS_ENOMEM, "scheduler: out of memory forking choices");
            return;
        }
        r->n_live++;
        int whole = q->n_kv / bs, ok = 1;
        for (int i = 0; i < whole && ok; i++) {
            kv_retain(&s->pool, q->table.v[i]);
            if (rs_ivec_push(&k->table, q->table.v[i])) kv_release(&s->pool, q->table.v[i]), ok = 0;
        }
        if (ok && q->n_kv % bs) {
            int32_t b = alloc_block(s);
            if (b >= 0 && rs_ivec_push(&k->table, b) == 0)
                kv_copy(&s->pool, b, q->table.v[whole]);
            else {
                if (b >= 0) kv_release(&s->pool, b);
                ok = 0;
            }
        }
        if (ok) {
            k->n_kv = q->n_kv;
            k->n_tree = q->n_tree;
            k->node = q->node;
            if (k->node) rt_pin(s->tree, k->node);
            memcpy(s->rowcopy, logits, (size_t)s->vocab * sizeof *logits);
            k->admit_no = ++s->admit_counter;
            k->state = SEQ_PREFILL; /* born running at the end of the prompt it shares */
            if (!sample_emit(s, k, s->rowcopy)) {
                settle(k);
                if (sched_seqvec_push(&s->running, k) == 0) continue;
                fail_request(r, RS_ENOMEM, "scheduler: out of memory forking choices");
            }
            seq_end(s, k, r->failed ? END_FAILED : END_FINISHED);
            continue;
        }
        seq_release_kv(s, k, 0);
        k->state = SEQ_REQUEUED; /* born waiting, first in line like a preempted one */
        if (sched_seqvec_insert(&s->waiting, 0, k)) {
            fail_request(r, RS_ENOMEM, "scheduler: out of memory forking choices");
            seq_end(s, k, END_FAILED);
        }
    }
}

/* ---------------------------------------------------------------- the step */

/* Run the planned rows through the engine. Returns the row count (0: nothing ran). An
 * embedding's rows get their final hidden states (hidden_rows, token_budget rows) instead of
 * logits. */
static int forward(sched *s) {
    int n = 0;
    size_t hrow = 0;
    for (int i = 0; i < s->running.n; i++) {
        sched_seq *q = s->running.v[i];
        if (!q->chunk || n == s->cfg.max_batch) continue; /* admission keeps n <= max_batch */
        int last = q->cls == SEQ_LIVE && q->n_kv + q->chunk == q->toks.n, /* wants logits */
            embed = q->req->p.embed;
        s->rows[n] = q;
        s->batch[n] =
            (eng_seq){.tokens = q->toks.v + q->n_kv,
                      .n_tokens = q->chunk,
                      .pos0 = q->n_kv,
                      .blocks = q->table.v,
                      .n_blocks = q->table.n,
                      .logits = last && !embed ? s->logits + (size_t)n * s->vocab : NULL,
                      .hidden = embed ? s->hidden_rows + hrow * (size_t)s->mc->hidden : NULL,
                      .lora = q->req->p.lora};
        if (embed) hrow += (size_t)q->chunk; /* the plan keeps the rows within token_budget */
        n++;
    }
    if (n == 0) return 0;
    rs_err e = {0};
    if (eng_forward(s->ctx, &s->pool, s->batch, n, &e)) {
        for (int i = 0; i < n; i++)
            fail_request(s->rows[i]->req, e.code ? e.code : RS_EINVAL, e.msg);
        return 0;
    }
    s->steps++;
    return n;
}

/* An embedding's rows of this step into its pooled state. A sequence computed again from
 * position 0 (after a preemption) starts over. 0, or RS_ENOMEM. */
static int pool_rows(sched *s, sched_seq *q, const eng_seq *row) {
    int h = s->mc->hidden;
    if (!q->emb && !(q->emb = malloc((size_t)h * sizeof *q->emb))) return RS_ENOMEM;
    if (row->pos0 == 0) memset(q->emb, 0, (size_t)h * sizeof *q->emb);
    for (int t = 0; t < row->n_tokens; t++) {
        const float *x = row->hidden + (size_t)t * h;
        int pos = row->pos0 + t;
        if (s->mc->pooling == ENG_POOL_MEAN)
            for (int k = 0; k < h; k++) q->emb[k] += x[k];
        else if ((s->mc->pooling == ENG_POOL_LAST && pos == q->toks.n - 1) ||
                 (s->mc->pooling == ENG_POOL_CLS && pos == 0))
            for (int k = 0; k < h; k++) q->emb[k] = x[k];
    }
    return 0;
}

/* The embedding is complete: its FINISH carries the pooled vector. */
static void emit_embedding(sched *s, sched_seq *q) {
    sched_request *r = q->req;
    int h = s->mc->hidden;
    double scale = s->mc->pooling == ENG_POOL_MEAN ? 1.0 / q->toks.n : 1.0;
    sched_event fin = {.type = SCHED_EV_FINISH,
                       .index = q->index,
                       .finish_reason = "stop",
                       .step = s->steps,
                       .text = dup_str(""),
                       .embedding = malloc((size_t)h * sizeof(float)),
                       .n_embedding = h};
    if (!fin.embedding || !fin.text) {
        free(fin.embedding);
        free(fin.text);
        fail_request(r, RS_ENOMEM, "scheduler: out of memory for an embedding");
        return;
    }
    for (int k = 0; k < h; k++) fin.embedding[k] = (float)(q->emb[k] * scale);
    push_event(r, &fin);
    r->n_finished++;
}

/* After the forward pass: advance each row, insert finished prefill blocks, sample (or pool,
 * for an embedding). */
static void absorb(sched *s, int n) {
    int warm = 0;
    for (int i = 0; i < n; i++) {
        sched_seq *q = s->rows[i];
        int prefill = q->chunk > 1 || !q->forked || q->cls == SEQ_WARM;
        if (q->cls == SEQ_WARM) s->warm_tokens += q->chunk, warm = 1;
        q->n_kv += q->chunk;
        q->chunk = 0;
        if (prefill) seq_insert(s, q);
        if (q->req->p.embed) {
            if (pool_rows(s, q, &s->batch[i]))
                fail_request(q->req, RS_ENOMEM, "scheduler: out of memory for an embedding");
            else if (q->n_kv == q->toks.n) {
                emit_embedding(s, q);
                sched_seq_set_state(q, SEQ_DONE); /* finished: swept below */
            } else
                settle(q);
            continue;
        }
        if (q->n_kv < q->toks.n) {
            settle(q);
            continue;
        }
        if (q->cls == SEQ_WARM) { /* every position computed: its KV goes to the tree */
            sched_seq_set_state(q, SEQ_DONE);
            continue;
        }
        float *row = (float *)s->batch[i].logits;
        if (!q->forked) fork_choices(s, q, row);
        if (sample_emit(s, q, row))
            sched_seq_set_state(q, SEQ_DONE); /* finished: swept below */
        else
            settle(q);
    }
    for (int i = 0; i < s->running.n;) {
        sched_seq *q = s->running.v[i];
        if (q->state != SEQ_DONE && !q->req->failed) {
            i++;
            continue;
        }
        sched_seqvec_remove(&s->running, i);
        seq_end(s, q, q->req->failed ? END_FAILED : END_FINISHED);
    }
    s->warm_steps += warm;
}

/* The invariants of sched_int.h after every step, in the builds that define RS_SCHED_CHECK
 * (the sanitizer modes); a violation aborts with its number and message. */
static void check_step(sched *s) {
#ifdef RS_SCHED_CHECK
    rs_err e = {0};
    if (sched_check(s, &e)) {
        fprintf(stderr, "scheduler invariant %s (step %lld)\n", e.msg, (long long)s->steps);
        abort();
    }
#else
    (void)s;
#endif
}

void sched_step(sched *s) {
    drop_doomed(s, &s->running);
    drop_doomed(s, &s->waiting);
    drop_doomed(s, &s->warm);
    if (live_present(s)) park_warm(s); /* warming yields at every step */
    admit(s);
    if (!live_present(s)) admit_warm(s);
    plan(s);
    int n = forward(s);
    absorb(s, n);
    drop_doomed(s, &s->running);
    check_step(s);
}

/* ---------------------------------------------------------------- statistics */

/* Blocks held only by sequences: a block whose every reference is a sequence's. Every block in
 * use is then either that or held by the tree (which holds exactly one reference). Costs the
 * total length of the block tables, not the pool size: holders[] is zero again on return. */
static int32_t count_private(sched *s) {
    int32_t n = 0;
    for (int i = 0; i < s->running.n; i++) {
        const sched_seq *q = s->running.v[i];
        for (int j = 0; j < q->table.n; j++) s->holders[q->table.v[j]]++;
    }
    for (int i = 0; i < s->running.n; i++) {
        const sched_seq *q = s->running.v[i];
        for (int j = 0; j < q->table.n; j++) {
            int32_t b = q->table.v[j];
            if (s->holders[b] > 0 && s->pool.ref[b] == s->holders[b]) n++;
            s->holders[b] = 0; /* counted once; left clean for the next call */
        }
    }
    return n;
}

void sched_publish_stats(sched *s) {
    rt_stats rs;
    rt_get_stats(s->tree, &rs);
    sched_stats st = {
        .waiting = s->waiting.n,
        .running = s->running.n,
        .steps = s->steps,
        .kv_blocks_total = s->pool.n_blocks,
        .kv_blocks_used = kv_n_used(&s->pool),
        .kv_blocks_cached = rs.cached_blocks,
        .kv_blocks_free = s->pool.n_free,
        .kv_blocks_pinned = rs.pinned_blocks,
        .block_size = s->cfg.block_size,
        .cache_lookups = s->lookups,
        .cache_hit_tokens = s->hit_tokens,
        .cache_miss_tokens = s->miss_tokens,
        .cache_evicted_blocks = rs.evicted_blocks,
        .cache_nodes = rs.nodes,
        .preemptions = s->preemptions,
        .kv_blocks_private = count_private(s),
        .warm_tokens = s->warm_tokens,
        .warm_hit_tokens = rs.warm_hit_tokens,
        .warm_steps = s->warm_steps,
        .warm_parks = s->warm_parks,
        .warm_dropped = s->warm_dropped,
    };
    pthread_mutex_lock(&s->mu);
    st.warm_queued = s->n_warm;
    s->stats = st;
    pthread_mutex_unlock(&s->mu);
}
