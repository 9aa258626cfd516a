/*
 * sched.h — the door of the scheduler room: the loop between the HTTP front end and the engine.
 *
 * One scheduler thread owns the model's forward context, the KV pool and the radix tree. Other
 * threads (libmicrohttpd's, a CLI) submit requests and drain each request's event queue; they
 * never touch the model, tree or pool. Every step the scheduler admits waiting requests (longest
 * cached prefix first, with an age bound), builds one batch (a decode token per running sequence
 * plus prefill chunks under a token budget), runs the forward pass on the worker pool, samples,
 * and pushes events. Finishing, cancelling and preempting leave through one release path.
 *
 * Ownership: sched_submit returns a handle the caller owns and must sched_request_free exactly
 * once (after which the scheduler drops its side too; freeing a running request cancels it).
 */
#ifndef RADIXSERVE_SCHED_H
#define RADIXSERVE_SCHED_H

#include <stdint.h>

#include "cache/cache.h"
#include "engine/engine.h"
#include "grammar/grammar.h"
#include "tokenizer/tokenizer.h"
#include "util/util.h"

typedef struct sched_config {
    int n_threads;         /* worker threads for the forward pass (>= 1) */
    size_t kv_cache_bytes; /* KV pool budget (--kv-cache-mb) */
    int block_size;        /* tokens per KV block (default 16) */
    int kv_dtype;          /* -1: the model's dtype; else KV_F32 / KV_BF16 */
    int max_batch;         /* running sequences at most (--max-batch) */
    int max_queue;         /* waiting requests at most (--max-queue); beyond: RS_EFULL */
    int token_budget;      /* new tokens per step (decode rows + prefill chunks) */
    int mixed_prefill;     /* prefill tokens per step while some sequence decodes: a step's
                              time is its inter-token latency, so long prompts prefill in
                              smaller chunks beside running streams (--mixed-prefill) */
    int ctx_size;          /* context length per sequence (prompt + generated) */
    int prefix_cache;      /* 1: radix-tree prefix cache on; 0: off (every prompt computed) */
    double max_wait_s;     /* age bound of cache-aware admission: a request waiting longer is
                              admitted before any better cache hit (<= 0: 2 s) */
    int step_delay_ms;     /* tests only (<= 0: none): sleep this long after every step that ran
                              the model, so a prefill or decode surely outlasts a client's
                              disconnect (serve reads RADIXSERVE_TEST_STEP_DELAY_MS) */
} sched_config;

/* The defaults, one owner for the scheduler and `radixserve serve`'s flags: n_threads 1,
 * kv_cache_bytes 4 GiB (a budget: the pool is sized by it and the model), block_size 16,
 * max_batch 32, max_queue 256, token_budget 512, mixed_prefill 128, ctx_size 0 (the model's),
 * prefix_cache 1, max_wait_s 2, kv_dtype -1 (the model's). Zero or negative fields of a
 * sched_config given to sched_start take these values; then token_budget is raised to max_batch,
 * mixed_prefill lowered to token_budget, and ctx_size to max_position_embeddings and to what the
 * pool holds for one sequence. prefix_cache is taken as given (0 = off). */
void sched_config_default(sched_config *c);

#define SCHED_MAX_STOP         4
#define SCHED_MAX_TOP_LOGPROBS 20

/* What a request asks for, beyond its prompt ids. */
typedef struct sched_params {
    eng_sampling sampling;            /* bias array is copied at submit */
    int max_tokens;                   /* generated tokens at most per choice */
    int n;                            /* choices (samples forked after the prompt), >= 1 */
    int ignore_eos;                   /* do not stop at EOS ids */
    const char *stop[SCHED_MAX_STOP]; /* stop strings (copied at submit), never emitted */
    int n_stop;
    int logprobs;           /* 1: report each token's logprob */
    int top_logprobs;       /* 0..SCHED_MAX_TOP_LOGPROBS alternatives per token */
    const char *cache_salt; /* namespace of the prefix cache; NULL: the shared one */
    const eng_lora *lora;   /* the LoRA adapter every row of the request uses (NULL: the base
                               model), held by the caller across sched_submit, which takes its
                               own reference (RS_ENOTFOUND when the adapter is being unloaded)
                               and drops it when the request is freed. The prefix-cache
                               namespace is (cache_salt, adapter): prefixes are shared only
                               within one adapter */
    int embed;              /* 1: an embedding: the prompt is prefilled and nothing sampled; its
                               FINISH carries the final hidden states pooled as the model says
                               (eng_config.pooling; not normalised). n must be 1. Mean and CLS
                               pooling need every position's state, so they skip the prefix
                               cache's match (their KV is still inserted); last-token pooling
                               uses it like any prompt */
    gr_grammar *grammar;    /* constrained decoding (NULL: free text). sched_submit takes it,
                               also when it fails: the request frees it when it ends. Each
                               choice gets its own matcher; EOS is allowed only when the value
                               is complete, and the choice ends ("stop") as soon as nothing
                               can follow. Logprobs stay those of the raw distribution, before
                               the mask. */
} sched_params;

typedef enum sched_event_type {
    SCHED_EV_TOKEN = 1,  /* one generated token of choice `index` (text may be empty while a
                            UTF-8 character or a possible stop string is pending). An EOS token
                            that ends the choice sends no TOKEN (it has no text) but counts in
                            completion_tokens. Logprobs are of the raw model distribution
                            (log-softmax of the logits before penalties, bias, temperature). */
    SCHED_EV_FINISH = 2, /* choice `index` finished; finish_reason set; text = held-back tail */
    SCHED_EV_DONE = 3,   /* the whole request is finished; usage set; last event */
    SCHED_EV_ERROR = 4,  /* the request failed; message set; last event */
} sched_event_type;

typedef struct sched_top {
    int32_t token;
    float logprob;
} sched_top;

typedef struct sched_event {
    sched_event_type type;
    int index;     /* choice index (0 .. n-1) */
    char *text;    /* owned by the event: UTF-8 delta cut at whole characters */
    int32_t token; /* TOKEN: the id */
    float logprob; /* TOKEN with logprobs */
    int n_top;     /* TOKEN with top_logprobs */
    sched_top top[SCHED_MAX_TOP_LOGPROBS];
    const char *finish_reason; /* FINISH: "stop", "length" (static string) */
    float *embedding;          /* FINISH of an embedding: n_embedding (hidden size) floats,
                                  owned by the event */
    int n_embedding;
    int prompt_tokens;     /* DONE: usage */
    int cached_tokens;     /* DONE: prompt tokens served from the prefix cache */
    int completion_tokens; /* DONE: summed over choices */
    char message[256];     /* ERROR */
    int code;              /* ERROR: the RS_E* code (RS_ECANCELED after a cancel) */
    int64_t step;          /* scheduler steps run when it was produced (orders events of
                              different requests) */
} sched_event;

void sched_event_free(sched_event *ev); /* frees ev->text and ev->embedding */

typedef struct sched sched;                 /* opaque */
typedef struct sched_request sched_request; /* opaque handle, owned by the submitter */

/* Start the scheduler thread (the model and tokenizer stay owned by the caller and must outlive
 * the scheduler). */
int sched_start(sched **out, eng_model *model, const tok_tokenizer *tok, const sched_config *c,
                rs_err *e);
/* Stop: cancel everything running or waiting, join the thread, free all. */
void sched_stop(sched *s);

/* Submit a prompt. RS_EFULL: the waiting queue is full (answer 503 + Retry-After);
 * RS_ENOTFOUND: p->lora is being unloaded;
 * RS_ETOOBIG: the request could never fit (prompt >= ctx_size, which is never more than the
 * pool holds, or n > max_batch); RS_EINVAL: an empty prompt, an id or logit_bias token outside
 * the vocabulary, n < 1, max_tokens < 1, too many stop strings or top_logprobs, a grammar
 * without a tokenizer;
 * RS_ECANCELED: the scheduler is stopping. */
int sched_submit(sched *s, const int32_t *prompt, int n_prompt, const sched_params *p,
                 sched_request **out, rs_err *e);

/* Warm the prefix cache with tokens[0, n) (a conversation rendered as its next turn will
 * send it) in the namespace of cache_salt and lora (NULL: the base model; a reference of its
 * own is taken as sched_submit does, and an adapter being unloaded warms nothing): prefilled as
 * low-priority work, only in steps where no request runs or waits, parked the moment one arrives,
 * dropped when the pool is short; its KV goes into the tree as ordinary cached nodes that are
 * evicted first (RT_COLD). Fire and forget (any thread): 0 when queued or when the prefix cache is
 * off; RS_EINVAL (no tokens, an id outside the vocabulary), RS_ENOTFOUND (the adapter is being
 * unloaded), RS_ETOOBIG (n >= ctx_size), RS_EFULL (SCHED_MAX_WARM jobs pending), RS_ECANCELED
 * (stopping), RS_ENOMEM. */
#define SCHED_MAX_WARM 64
int sched_warm(sched *s, const int32_t *tokens, int n, const char *cache_salt, const eng_lora *lora,
               rs_err *e);

/* Wait up to timeout_ms (0: do not wait; -1: forever) for the next event. Returns 1 with *ev
 * filled (caller frees with sched_event_free), 0 on time-out. */
int sched_next_event(sched_request *r, sched_event *ev, int timeout_ms);

/* Ask the scheduler to cancel (idempotent, any thread). The request leaves the batch at the next
 * step and its blocks are released; a final SCHED_EV_ERROR with RS_ECANCELED-style message or a
 * DONE follows. */
void sched_cancel(sched_request *r);

/* Cancel if still running and drop the caller's handle. */
void sched_request_free(sched_request *r);

/* Statistics for /metrics and /v1/cache (read from any thread). */
typedef struct sched_stats {
    int waiting;   /* requests in the waiting queue */
    int running;   /* sequences in the running batch */
    int64_t steps; /* forward steps so far */
    int32_t kv_blocks_total, kv_blocks_used, kv_blocks_cached, kv_blocks_free, kv_blocks_pinned;
    int block_size;
    int64_t cache_lookups, cache_hit_tokens, cache_miss_tokens, cache_evicted_blocks;
    int64_t cache_nodes;
    int64_t preemptions;
    int32_t kv_blocks_private; /* blocks held only by running sequences (not by the tree);
                                  used == cached + private when the accounting is sound */
    int64_t warm_tokens;       /* positions computed by warming jobs */
    int64_t warm_hit_tokens;   /* prompt tokens live requests took from warmed blocks */
    int64_t warm_steps;        /* steps that ran a warming chunk (never with a live row) */
    int64_t warm_parks;        /* times a warming job yielded to a live request */
    int64_t warm_dropped;      /* warming jobs dropped because the pool was short */
    int warm_queued;           /* warming jobs not yet ended */
} sched_stats;

void sched_get_stats(sched *s, sched_stats *out);

/* The radix tree as JSON (rt_snapshot_json's format: clock, stats, nodes in pre-order with up
 * to max_tokens tokens per edge), for GET /v1/cache and a debug view. Any thread; the scheduler
 * takes the copy between two steps, so this waits at most about one step. *out is malloc'd.
 * RS_ECANCELED once the scheduler is stopping. */
int sched_cache_json(sched *s, int max_tokens, char **out, rs_err *e);

/* The effective configuration (defaults filled in, e.g. the ctx_size in force). */
void sched_get_config(const sched *s, sched_config *out);

#endif
