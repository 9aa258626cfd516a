/* sched.c — the scheduler's public face: start / stop, submission, statistics, and the thread
 * that runs steps (step.c) until stopped. */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "sched/sched_int.h"

void sched_config_default(sched_config *c) {
    *c = (sched_config){
        .n_threads = 1,
        .kv_cache_bytes = (size_t)4096 << 20,
        .block_size = 16,
        .kv_dtype = -1,
        .max_batch = 32,
        .max_queue = 256,
        .token_budget = 512,
        .mixed_prefill = 128,
        .ctx_size = 0, /* the model's, fitted to the pool */
        .prefix_cache = 1,
        .max_wait_s = 2.0,
    };
}

/* Zero or negative fields take sched_config_default's values; then the limits that depend on
 * each other and on the model. */
static void fill_defaults(sched_config *c, const eng_config *mc) {
    sched_config d;
    sched_config_default(&d);
    if (c->n_threads <= 0) c->n_threads = d.n_threads;
    if (c->kv_cache_bytes == 0) c->kv_cache_bytes = d.kv_cache_bytes;
    if (c->block_size <= 0) c->block_size = d.block_size;
    if (c->max_batch <= 0) c->max_batch = d.max_batch;
    if (c->max_queue <= 0) c->max_queue = d.max_queue;
    if (c->token_budget <= 0) c->token_budget = d.token_budget;
    if (c->token_budget < c->max_batch) c->token_budget = c->max_batch;
    if (c->mixed_prefill <= 0) c->mixed_prefill = d.mixed_prefill;
    if (c->mixed_prefill > c->token_budget) c->mixed_prefill = c->token_budget;
    if (c->ctx_size <= 0 || c->ctx_size > mc->max_pos) c->ctx_size = mc->max_pos;
    if (c->max_wait_s <= 0) c->max_wait_s = d.max_wait_s;
}

static void sched_destroy(sched *s) {
    if (s->tree) rt_free(s->tree);
    kv_pool_free(&s->pool);
    if (s->ctx) eng_ctx_free(s->ctx);
    free(s->logits);
    free(s->scratch);
    free(s->rowcopy);
    free(s->hidden_rows);
    gr_vocab_free(s->gv);
    free(s->mask);
    free(s->batch);
    free(s->rows);
    free(s->holders);
    rs_ivec_free(&s->match_blocks);
    sched_seqvec_free(&s->inbox);
    sched_seqvec_free(&s->warm_inbox);
    sched_seqvec_free(&s->warm);
    sched_seqvec_free(&s->waiting);
    sched_seqvec_free(&s->running);
    free(s->snap_json);
    pthread_cond_destroy(&s->snap_cv);
    pthread_mutex_destroy(&s->snap_mu);
    pthread_cond_destroy(&s->cv);
    pthread_mutex_destroy(&s->mu);
    free(s);
}

/* The model, pool, tree, context and buffers the thread works with. */
static int sched_alloc(sched *s, rs_err *e) {
    sched_config *c = &s->cfg;
    kv_pool_config pc = eng_kv_config(s->model, c->block_size, c->kv_dtype, c->kv_cache_bytes);
    int rc = kv_pool_init(&s->pool, &pc, e);
    if (rc) return rc;
    /* One sequence can never hold more than the whole pool: the context is lowered to it. */
    int64_t pool_tokens = (int64_t)s->pool.n_blocks * c->block_size;
    if (c->ctx_size > pool_tokens) c->ctx_size = (int)pool_tokens;
    if ((rc = rt_init(&s->tree, &s->pool, e))) return rc;
    if ((rc = eng_ctx_init(&s->ctx, s->model, c->token_budget, c->n_threads, e))) return rc;
    size_t rowb = (size_t)s->vocab * sizeof(float);
    s->logits = malloc(rowb * (size_t)c->max_batch);
    s->scratch = malloc(rowb);
    s->rowcopy = malloc(rowb);
    s->hidden_rows = malloc((size_t)c->token_budget * (size_t)s->mc->hidden * sizeof(float));
    s->batch = calloc((size_t)c->max_batch, sizeof *s->batch);
    s->rows = calloc((size_t)c->max_batch, sizeof *s->rows);
    s->holders = calloc((size_t)s->pool.n_blocks, sizeof *s->holders);
    s->mask = calloc((size_t)(s->vocab + 31) / 32, sizeof *s->mask);
    if (!s->logits || !s->scratch || !s->rowcopy || !s->hidden_rows || !s->batch || !s->rows ||
        !s->holders || !s->mask)
        return rs_errf(e, RS_ENOMEM, "scheduler: out of memory for step buffers");
    if (s->tok)
        return gr_vocab_from_tokenizer(&s->gv, s->tok, s->vocab, s->mc->eos_ids, s->mc->n_eos, e);
    return 0;
}

static void *sched_main(void *arg);

int sched_start(sched **out, eng_model *model, const tok_tokenizer *tok, const sched_config *c,
                rs_err *e) {
    *out = NULL;
    if (!model || !c) return rs_errf(e, RS_EINVAL, "sched_start: no model or config");
    sched *s = calloc(1, sizeof *s);
    if (!s) return rs_errf(e, RS_ENOMEM, "scheduler: out of memory");
    if (pthread_mutex_init(&s->mu, NULL)) {
        free(s);
        return rs_errf(e, RS_ENOMEM, "scheduler: cannot create a mutex");
    }
    if (pthread_cond_init(&s->cv, NULL)) {
        pthread_mutex_destroy(&s->mu);
        free(s);
        return rs_errf(e, RS_ENOMEM, "scheduler: cannot create a condition variable");
    }
    if (pthread_mutex_init(&s->snap_mu, NULL) || pthread_cond_init(&s->snap_cv, NULL)) {
        pthread_cond_destroy(&s->cv);
        pthread_mutex_destroy(&s->mu);
        free(s);
        return rs_errf(e, RS_ENOMEM, "scheduler: cannot create its snapshot lock");
    }
    s->model = model;
    s->tok = tok;
    s->mc = eng_model_config(model);
    s->vocab = s->mc->vocab_size;
    s->cfg = *c;
    fill_defaults(&s->cfg, s->mc);
    int rc = sched_alloc(s, e);
    if (!rc) {
        sched_publish_stats(s);
        if (pthread_create(&s->thread, NULL, sched_main, s))
            rc = rs_errf(e, RS_ENOMEM, "scheduler: cannot start its thread");
    }
    if (rc) {
        sched_destroy(s);
        return rc;
    }
    *out = s;
    return 0;
}

void sched_stop(sched *s) {
    if (!s) return;
    pthread_mutex_lock(&s->mu);
    s->stopping = 1;
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);
    pthread_join(s->thread, NULL);
    sched_destroy(s);
}

/* Move submitted sequences into the waiting queue; wait while there is nothing to do.
 * Returns 1 when the scheduler must stop. */
static int take_inbox(sched *s) {
    pthread_mutex_lock(&s->mu);
    while (!s->stopping && !s->wake && s->inbox.n == 0 && s->waiting.n == 0 && s->running.n == 0 &&
           s->warm_inbox.n == 0 && s->warm.n == 0)
        pthread_cond_wait(&s->cv, &s->mu);
    s->wake = 0;
    int stop = s->stopping;
    int rc = 0;
    for (int i = 0; i < s->inbox.n && !rc; i++) rc = sched_seqvec_push(&s->waiting, s->inbox.v[i]);
    if (!rc) s->inbox.n = 0;
    int taken = 0;
    while (taken < s->warm_inbox.n && !sched_seqvec_push(&s->warm, s->warm_inbox.v[taken])) taken++;
    for (int i = 0; i < taken; i++) sched_seqvec_remove(&s->warm_inbox, 0); /* the rest: later */
    pthread_mutex_unlock(&s->mu);
    return stop;
}

/* Answer a pending snapshot request (scheduler thread: the tree is read between steps). */
static void serve_snapshot(sched *s) {
    pthread_mutex_lock(&s->mu);
    int want = s->snap_want, max = s->snap_max;
    pthread_mutex_unlock(&s->mu);
    if (!want) return;
    rt_snapshot snap;
    rs_err e = {0};
    char *json = NULL;
    int rc = rt_snapshot_take(s->tree, max, &snap, &e);
    if (!rc) {
        rc = rt_snapshot_json(&snap, &json, &e);
        rt_snapshot_free(&snap);
    }
    pthread_mutex_lock(&s->mu);
    s->snap_rc = rc;
    s->snap_json = json;
    s->snap_err = e;
    s->snap_want = 0;
    pthread_cond_broadcast(&s->snap_cv);
    pthread_mutex_unlock(&s->mu);
}

/* The test-only pause after a step that ran the model (sched_config.step_delay_ms). */
static void step_delay(const sched *s, int64_t steps_before) {
    if (s->cfg.step_delay_ms <= 0 || s->steps == steps_before) return;
    struct timespec ts = {s->cfg.step_delay_ms / 1000,
                          (long)(s->cfg.step_delay_ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static void *sched_main(void *arg) {
    sched *s = arg;
    while (!take_inbox(s)) {
        serve_snapshot(s);
        int64_t steps = s->steps;
        sched_step(s);
        sched_publish_stats(s);
        step_delay(s, steps);
    }
    /* Stopping: no submission gets in any more (submit checks `stopping` under mu). */
    take_inbox(s);
    sched_drop_all(s);
    sched_publish_stats(s);
    pthread_mutex_lock(&s->mu);
    s->exited = 1;
    pthread_cond_broadcast(&s->snap_cv); /* an asker still waiting gets an error */
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

int sched_cache_json(sched *s, int max_tokens, char **out, rs_err *e) {
    *out = NULL;
    if (max_tokens < 0) return rs_errf(e, RS_EINVAL, "max_tokens must be >= 0");
    pthread_mutex_lock(&s->snap_mu);
    pthread_mutex_lock(&s->mu);
    s->snap_want = 1;
    s->snap_max = max_tokens;
    s->wake = 1;
    pthread_cond_signal(&s->cv);
    while (s->snap_want && !s->exited && !s->stopping) pthread_cond_wait(&s->snap_cv, &s->mu);
    int rc;
    if (s->snap_want) {
        s->snap_want = 0;
        rc = rs_errf(e, RS_ECANCELED, "the scheduler is shutting down");
    } else {
        rc = s->snap_rc;
        *out = s->snap_json;
        s->snap_json = NULL;
        if (rc && e) *e = s->snap_err;
    }
    pthread_mutex_unlock(&s->mu);
    pthread_mutex_unlock(&s->snap_mu);
    return rc;
}

/* ---------------------------------------------------------------- submission */

/* The one owner of a request's prefix-cache namespace: (cache_salt, adapter). 0 for neither
 * (the shared space of the base model); the salt alone hashes as it always did; an adapter
 * adds its load id (unique per load, so an adapter reloaded under the same name never meets
 * KV of the old weights) after a separator no salt byte can be. */
static uint64_t sched_namespace(const char *salt, const eng_lora *lora) {
    if ((!salt || !*salt) && !lora) return 0;
    uint64_t h = 1469598103934665603ull; /* FNV-1a: stable across runs, cheap */
    for (const unsigned char *p = (const unsigned char *)(salt ? salt : ""); *p; p++)
        h = (h ^ *p) * 1099511628211ull;
    if (lora) {
        uint64_t id = eng_lora_id(lora);
        h = (h ^ 0x100u) * 1099511628211ull;
        for (int i = 0; i < 8; i++) h = (h ^ ((id >> (8 * i)) & 0xffu)) * 1099511628211ull;
    }
    return h ? h : 1;
}

/* A reference of the request's own to the adapter (none for the base model). */
static int take_lora(sched_request *r, const eng_lora *lora, rs_err *e) {
    if (!lora) return 0;
    if (eng_lora_retain(lora))
        return rs_errf(e, RS_ENOTFOUND, "the adapter %s is being unloaded", eng_lora_name(lora));
    r->p.lora = lora;
    return 0;
}

/* An empty prompt, or an id outside the vocabulary: RS_EINVAL. */
static int check_ids(const sched *s, const int32_t *prompt, int n_prompt, rs_err *e) {
    if (!prompt || n_prompt <= 0) return rs_errf(e, RS_EINVAL, "the prompt is empty");
    for (int i = 0; i < n_prompt; i++)
        if (prompt[i] < 0 || prompt[i] >= s->vocab)
            return rs_errf(e, RS_EINVAL, "prompt token %d (id %d) is outside the vocabulary of %d",
                           i, prompt[i], s->vocab);
    return 0;
}

static int check_params(const sched *s, const int32_t *prompt, int n_prompt, const sched_params *p,
                        rs_err *e) {
    int rc = check_ids(s, prompt, n_prompt, e);
    if (rc) return rc;
    if (p->n < 1) return rs_errf(e, RS_EINVAL, "n must be at least 1 (got %d)", p->n);
    if (p->embed && p->n != 1)
        return rs_errf(e, RS_EINVAL, "an embedding has one choice (got n = %d)", p->n);
    if (p->embed && s->mc->pooling == ENG_POOL_UNSUPPORTED)
        return rs_errf(e, RS_EINVAL,
                       "this model's pooling (1_Pooling/config.json) is not served: only mean, "
                       "last-token and CLS pooling are");
    if (p->max_tokens < 1)
        return rs_errf(e, RS_EINVAL, "max_tokens must be at least 1 (got %d)", p->max_tokens);
    if (p->n_stop < 0 || p->n_stop > SCHED_MAX_STOP)
        return rs_errf(e, RS_EINVAL, "at most %d stop strings (got %d)", SCHED_MAX_STOP, p->n_stop);
    for (int i = 0; i < p->n_stop; i++)
        if (!p->stop[i]) return rs_errf(e, RS_EINVAL, "stop string %d is missing", i);
    if (p->top_logprobs < 0 || p->top_logprobs > SCHED_MAX_TOP_LOGPROBS)
        return rs_errf(e, RS_EINVAL, "top_logprobs must be 0..%d (got %d)", SCHED_MAX_TOP_LOGPROBS,
                       p->top_logprobs);
    if (p->sampling.n_bias < 0 || (p->sampling.n_bias > 0 && !p->sampling.bias))
        return rs_errf(e, RS_EINVAL, "logit_bias entries are missing");
    for (int i = 0; i < p->sampling.n_bias; i++)
        if (p->sampling.bias[i].token < 0 || p->sampling.bias[i].token >= s->vocab)
            return rs_errf(e, RS_EINVAL, "logit_bias token %d is outside the vocabulary of %d",
                           p->sampling.bias[i].token, s->vocab);
    if (p->grammar && !s->gv)
        return rs_errf(e, RS_EINVAL, "constrained decoding needs the model's tokenizer");
    if (n_prompt >= s->cfg.ctx_size)
        return rs_errf(e, RS_ETOOBIG,
                       "the prompt has %d tokens; the context holds %d (prompt + completion)",
                       n_prompt, s->cfg.ctx_size);
    if (p->n > s->cfg.max_batch)
        return rs_errf(e, RS_ETOOBIG, "n = %d exceeds the batch limit of %d sequences", p->n,
                       s->cfg.max_batch);
    return 0;
}

/* The request's owned copy of the caller's parameters. */
static int copy_request(sched_request *r, const int32_t *prompt, int n_prompt,
                        const sched_params *p) {
    r->p = *p;
    r->n_prompt = n_prompt;
    r->prompt = malloc((size_t)n_prompt * sizeof *r->prompt);
    if (!r->prompt) return RS_ENOMEM;
    memcpy(r->prompt, prompt, (size_t)n_prompt * sizeof *prompt);
    for (int i = 0; i < p->n_stop; i++) {
        r->stop_copy[i] = strdup(p->stop[i]);
        if (!r->stop_copy[i]) return RS_ENOMEM;
        r->p.stop[i] = r->stop_copy[i];
    }
    if (p->sampling.n_bias > 0) {
        r->bias = malloc((size_t)p->sampling.n_bias * sizeof *r->bias);
        if (!r->bias) return RS_ENOMEM;
        memcpy(r->bias, p->sampling.bias, (size_t)p->sampling.n_bias * sizeof *r->bias);
    }
    r->p.sampling.bias = r->bias;
    r->p.cache_salt = NULL; /* only its hash is kept */
    r->p.lora = NULL;       /* take_lora takes the request's own reference */
    r->t_submit = rs_now();
    return 0;
}

int sched_submit(sched *s, const int32_t *prompt, int n_prompt, const sched_params *p,
                 sched_request **out, rs_err *e) {
    *out = NULL;
    if (!p) return rs_errf(e, RS_EINVAL, "sched_submit: no parameters");
    int rc = check_params(s, prompt, n_prompt, p, e);
    sched_request *r = rc ? NULL : sched_request_new();
    if (!r) {
        gr_free(p->grammar); /* taken even when refused */
        return rc ? rc : rs_errf(e, RS_ENOMEM, "scheduler: out of memory for a request");
    }
    sched_seq *q = NULL;
    if (copy_request(r, prompt, n_prompt, p) || !(q = sched_seq_new(s, r, 0, 0))) {
        r->refs = 1;
        sched_request_unref(r);
        return rs_errf(e, RS_ENOMEM, "scheduler: out of memory for a request");
    }
    if ((rc = take_lora(r, p->lora, e))) {
        sched_seq_free(q);
        r->refs = 1;
        sched_request_unref(r);
        return rc;
    }
    r->ns = sched_namespace(p->cache_salt, r->p.lora);
    r->n_live = 1;
    r->s = s; /* published to the scheduler under s->mu below */
    pthread_mutex_lock(&s->mu);
    if (s->stopping)
        rc = rs_errf(e, RS_ECANCELED, "the scheduler is shutting down");
    else if (s->n_queued >= s->cfg.max_queue)
        rc = rs_errf(e, RS_EFULL, "the waiting queue is full (%d requests); retry later",
                     s->cfg.max_queue);
    else if (sched_seqvec_push(&s->inbox, q))
        rc = rs_errf(e, RS_ENOMEM, "scheduler: out of memory for a request");
    if (!rc) {
        s->n_queued++;
        s->wake = 1;
        pthread_cond_signal(&s->cv);
    }
    pthread_mutex_unlock(&s->mu);
    if (rc) {
        sched_seq_free(q);
        r->refs = 1;
        sched_request_unref(r);
        return rc;
    }
    *out = r;
    return 0;
}

/* A warming job: a request with no submitter (refs 1, never any event) and one WARM sequence;
 * its prompt is the whole text to prefill. */
int sched_warm(sched *s, const int32_t *tokens, int n, const char *cache_salt, const eng_lora *lora,
               rs_err *e) {
    if (!s->cfg.prefix_cache) return 0;
    int rc = check_ids(s, tokens, n, e);
    if (rc) return rc;
    if (n >= s->cfg.ctx_size)
        return rs_errf(e, RS_ETOOBIG, "warming: %d tokens, the context holds %d", n,
                       s->cfg.ctx_size);
    sched_request *r = sched_request_new();
    if (!r) return rs_errf(e, RS_ENOMEM, "scheduler: out of memory for a warming job");
    r->refs = 1;
    r->warm = 1;
    r->admitted = 1; /* never in the request queue's count */
    sched_params p = {.max_tokens = 1, .n = 1};
    sched_seq *q = NULL;
    if (copy_request(r, tokens, n, &p) || !(q = sched_seq_new(s, r, 0, 1))) {
        sched_request_unref(r);
        return rs_errf(e, RS_ENOMEM, "scheduler: out of memory for a warming job");
    }
    if ((rc = take_lora(r, lora, e))) {
        sched_seq_free(q);
        sched_request_unref(r);
        return rc;
    }
    r->ns = sched_namespace(cache_salt, r->p.lora);
    q->cls = SEQ_WARM;
    r->n_live = 1;
    pthread_mutex_lock(&s->mu);
    if (s->stopping)
        rc = rs_errf(e, RS_ECANCELED, "the scheduler is shutting down");
    else if (s->n_warm >= SCHED_MAX_WARM)
        rc = rs_errf(e, RS_EFULL, "%d warming jobs are pending", s->n_warm);
    else if (sched_seqvec_push(&s->warm_inbox, q))
        rc = rs_errf(e, RS_ENOMEM, "scheduler: out of memory for a warming job");
    if (!rc) {
        s->n_warm++;
        s->wake = 1;
        pthread_cond_signal(&s->cv);
    }
    pthread_mutex_unlock(&s->mu);
    if (rc) {
        sched_seq_free(q);
        sched_request_unref(r);
    }
    return rc;
}

/* ---------------------------------------------------------------- statistics */

void sched_get_stats(sched *s, sched_stats *out) {
    pthread_mutex_lock(&s->mu);
    *out = s->stats;
    out->waiting += s->inbox.n;
    out->warm_queued = s->n_warm; /* submitted ones too, not only those the last step saw */
    pthread_mutex_unlock(&s->mu);
}

void sched_get_config(const sched *s, sched_config *out) {
    *out = s->cfg;
}
