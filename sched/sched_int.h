/*
 * sched_int.h — the scheduler room's private structures, shared by its files (not a door:
 * nothing outside sched/ and tests/test_sched*.c includes it).
 *
 * Threads: everything below marked "scheduler" is touched by the scheduler thread only; the
 * fields marked "mu" are guarded by the named mutex; "atomic" fields are read anywhere.
 */
#ifndef RADIXSERVE_SCHED_INT_H
#define RADIXSERVE_SCHED_INT_H

#include <pthread.h>
#include <stdatomic.h>

#include "sched/sched.h"

/* ---------------------------------------------------------------- stop-string matcher */

/* Holds back decoded text that might still become a stop string, so a stop string is never
 * emitted even when it spans token boundaries. */
typedef struct sched_stopper {
    char *const *stop; /* stop strings (borrowed from the request), n_stop of them */
    int n_stop;
    char *pending;   /* text decoded but not yet emitted (owned, NUL-terminated) */
    size_t len, cap; /* bytes in pending, allocated bytes */
} sched_stopper;

void sched_stopper_init(sched_stopper *m, char *const *stop, int n_stop);
void sched_stopper_free(sched_stopper *m);
/* Add a piece of decoded text. *emit (malloc'd) receives the text that is now safe to emit:
 * everything when `final`, else all but the longest tail that is a proper prefix of a stop
 * string. Returns 1 when a stop string matched (then *emit is the text before it and the rest
 * is dropped), 0 if not, RS_ENOMEM. */
int sched_stopper_feed(sched_stopper *m, const char *piece, int final, char **emit);

/* ---------------------------------------------------------------- request and its events */

typedef struct sched_evnode {
    sched_event ev;            /* the event, owned until popped */
    struct sched_evnode *next; /* later event */
} sched_evnode;

typedef struct sched_seq sched_seq;

struct sched_request {
    /* Shared between the submitter and the scheduler. */
    pthread_mutex_t mu; /* guards the event list, refs and s */
    pthread_cond_t cv;  /* signalled when an event is pushed */
    sched_evnode *head; /* mu: oldest undelivered event */
    sched_evnode *tail; /* mu: newest event */
    int refs;           /* mu: 2 while both the submitter and the scheduler hold it */
    struct sched *s;    /* mu: the scheduler to wake on cancel; NULL once detached */
    atomic_int cancel;  /* set by sched_cancel / sched_request_free, read every step */
    /* Scheduler side (written before the handle is published, then scheduler thread only). */
    int32_t *prompt;                 /* the prompt ids (owned) */
    int n_prompt;                    /* prompt length */
    sched_params p;                  /* copy of the parameters; stop strings, bias and a
                                        reference to p.lora owned */
    char *stop_copy[SCHED_MAX_STOP]; /* owned copies of the stop strings */
    eng_logit_bias *bias;            /* owned copy of the logit bias entries */
    uint64_t ns;                     /* prefix-cache namespace (sched_namespace: cache_salt and
                                        adapter; 0 = shared, base model) */
    double t_submit;                 /* rs_now() at submission */
    int n_live;                      /* scheduler: choices not yet released (before fork: 1) */
    int n_finished;                  /* scheduler: choices that sent FINISH */
    int cached_tokens;               /* scheduler: prompt tokens matched at first admission */
    int completion_tokens;           /* scheduler: generated tokens over all choices */
    int admitted;       /* scheduler: admitted once (usage and queue count are settled) */
    int warm;           /* a warming job (sched_warm): no submitter, no events, refs 1 */
    int failed;         /* scheduler: an error ended it (code below) */
    int fail_code;      /* scheduler: RS_E* of the failure */
    char fail_msg[256]; /* scheduler: message of the failure */
};

/* Allocate a request with refs = 2 (submitter + scheduler). NULL on out-of-memory. */
sched_request *sched_request_new(void);
/* Push an event (takes ownership of ev->text); never blocks on the reader. */
int sched_request_push(sched_request *r, const sched_event *ev);
/* Drop one reference; the last frees the request and its pending events. */
void sched_request_unref(sched_request *r);

/* ---------------------------------------------------------------- sequences and scheduler */

/*
 * Sequence states. A sequence is always in exactly one of them, and the state is stored, never
 * inferred from other fields (seq_set_state checks every transition against the list below).
 *
 *   QUEUED    in `waiting`, never admitted: ranked by cached prefix (and age)
 *   REQUEUED  in `waiting` after a preemption (or a forked choice that found no block): first
 *             in line, recomputes [matched, toks.n) from the cache
 *   PREFILL   in `running`, more than one position left to compute (toks.n - n_kv > 1)
 *   DECODE    in `running`, exactly one position left (toks.n - n_kv == 1): a decode row
 *   DONE      in `running`, finished in this step's absorb (sampled its last token, or a warm
 *             sequence computed all its positions); swept into seq_end in the same step
 *
 * Transitions (and who makes them):
 *   QUEUED | REQUEUED -> PREFILL | DECODE   admit_one (by what is left after the match)
 *   PREFILL -> PREFILL | DECODE | DONE      absorb (a chunk ran; the first token was sampled)
 *   DECODE  -> DECODE | DONE                absorb (a token was sampled)
 *   PREFILL | DECODE -> REQUEUED            preempt; park_warm (a warm one yielding)
 *   (new forked choice) -> DECODE | DONE | REQUEUED   fork_choices
 *   any state -> (freed)                    seq_end, the one exit
 *
 * Classes: a LIVE sequence answers a request; a WARM one (sched_warm) prefills a conversation's
 * next turn into the tree from spare capacity and never samples. A warm sequence waits in
 * `warm` (QUEUED, or REQUEUED once parked) and is in `running` only in steps with no live
 * sequence running or waiting: the first live one parks it (its KV goes to the tree, cold) and
 * it resumes from the tree later. One runs at a time, in chunks of at most mixed_prefill
 * tokens, so a live arrival waits at most one short step. It is ended (its KV kept, cold) when
 * the pool cannot give it a block, and dropped at admission when its uncached part does not
 * fit free + evictable blocks.
 */
typedef enum sched_state {
    SEQ_QUEUED = 0,
    SEQ_REQUEUED,
    SEQ_PREFILL,
    SEQ_DECODE,
    SEQ_DONE,
} sched_state;

typedef enum sched_class { SEQ_LIVE = 0, SEQ_WARM = 1 } sched_class;

/*
 * The scheduler's invariants, checked between steps by sched_check (compiled always, run every
 * step in the sanitizer builds, where the Makefile defines RS_SCHED_CHECK; never in release's
 * hot path). Numbered so a failure names one.
 *
 *  1. Every sequence in `running` is PREFILL or DECODE, with DECODE exactly when
 *     toks.n - n_kv == 1, n_kv < toks.n, no chunk planned (0), and a block table covering
 *     n_kv positions (table.n * block_size >= n_kv).
 *  2. Every sequence in `waiting` and `warm` is QUEUED or REQUEUED and holds nothing: empty
 *     table, no pinned node, n_kv == 0; `waiting` holds only LIVE ones, `warm` only WARM.
 *  3. Every block reference is accounted for: for each pool block b, ref[b] == (occurrences of
 *     b in running sequences' tables) + (1 if b is on a tree edge, else 0); a block with
 *     ref 0 is on the free list and n_free counts exactly those.
 *  4. Pins are held by running sequences: the tree's total pin count equals the number of
 *     running sequences with a node, and each such node is pinned (count > 0).
 *  5. Counts: running slots (a not-yet-forked n > 1 request reserves n) <= max_batch;
 *     n_queued == inbox.n + sequences in `waiting` whose request was never admitted; each
 *     request's n_live == its sequences in `running`, `waiting` and `warm`.
 *  6. The tree's own invariants hold (rt_check: edge structure, sorted siblings, cached /
 *     pinned block counts, pin counts summing up the tree, partial blocks only at leaves).
 *  7. Warming yields: a WARM sequence is in `running` only when it is the only one there and
 *     `waiting` is empty.
 */

/* One choice of a request being generated (before the fork of an n > 1 request: the prompt).
 * Invariant: the KV of toks[0, n_kv) is in the pages of `table`; the positions still to be
 * computed are [n_kv, toks.n), and the logits of the last one give the next token. */
struct sched_seq {
    sched_request *req;    /* the request it belongs to (the scheduler's reference) */
    int index;             /* choice index */
    int forked;            /* 1 once it is a choice (n == 1: from the start) */
    rs_ivec toks;          /* prompt + generated ids */
    rs_ivec table;         /* block ids, one kv reference each */
    int n_kv;              /* positions whose KV is in the pages */
    int n_tree;            /* whole blocks of toks known to be in the tree (inserted/matched) */
    rt_node *node;         /* pinned tree node, or NULL */
    eng_rng rng;           /* per-choice random state, seeded from (seed, index) */
    tok_stream ts;         /* incremental decoder of the generated ids */
    int ts_live;           /* ts initialised */
    sched_stopper stopper; /* stop-string hold-back */
    gr_matcher *gm;        /* constrained decoding state (owned), NULL when unconstrained; it
                              depends only on the generated ids, so preemption keeps it */
    double t_wait;         /* rs_now() when it (re-)entered the waiting queue */
    int64_t admit_no;      /* admission counter value (larger = newer) */
    int chunk;             /* tokens scheduled in the current step (0: not in it) */
    double *emb;           /* embedding: the pooled hidden state so far (hidden floats, owned;
                              mean: the sum over positions [0, n_kv)), NULL until the first row */
    sched_state state;     /* where it is (see the transitions above) */
    sched_class cls;       /* LIVE or WARM */
};

/* A growable array of sequence pointers (the waiting and running queues). */
typedef struct sched_seqvec {
    sched_seq **v; /* elements (borrowed pointers; the queues own the sequences) */
    int n, cap;    /* count, allocated */
} sched_seqvec;

struct sched {
    /* Immutable after start. */
    sched_config cfg;         /* effective configuration (defaults filled in) */
    eng_model *model;         /* borrowed */
    const tok_tokenizer *tok; /* borrowed; may be NULL (no text, no stop strings) */
    const eng_config *mc;     /* the model's configuration */
    int vocab;                /* logits per row */
    double max_wait_s;        /* age bound of cache-aware admission */
    /* Shared with submitters. */
    pthread_mutex_t mu;      /* guards inbox, n_queued, stopping, stats */
    pthread_cond_t cv;       /* wakes the scheduler (submit, cancel, stop) */
    sched_seqvec inbox;      /* mu: submitted, not yet taken by the scheduler */
    sched_seqvec warm_inbox; /* mu: warming jobs submitted, not yet taken */
    int n_warm;              /* mu: warming jobs submitted and not yet ended */
    int n_queued;            /* mu: requests submitted and not yet admitted or dropped */
    int stopping;            /* mu: sched_stop was called */
    int wake;                /* mu: something happened since the scheduler last looked */
    sched_stats stats;       /* mu: the latest snapshot */
    pthread_t thread;        /* the scheduler thread */
    /* A tree snapshot asked for by another thread, taken by the scheduler between steps. */
    pthread_mutex_t snap_mu; /* serialises askers (one exchange at a time) */
    pthread_cond_t snap_cv;  /* signalled when the answer is ready */
    int snap_want;           /* mu: asked, not yet answered */
    int snap_max;            /* mu: tokens per edge to copy */
    int snap_rc;             /* mu: the answer's status */
    char *snap_json;         /* mu: the answer (handed to the asker) */
    rs_err snap_err;         /* mu: the answer's error */
    int exited;              /* mu: the thread has left its loop (nobody answers any more) */
    /* Scheduler thread only. */
    eng_ctx *ctx;         /* forward-pass scratch and workers */
    kv_pool pool;         /* the KV block pool */
    rt_tree *tree;        /* the radix tree */
    sched_seqvec waiting; /* seqs waiting for admission (preempted ones first) */
    sched_seqvec running; /* admitted seqs, oldest admission first */
    sched_seqvec warm;    /* warming jobs waiting for spare capacity (parked ones first) */
    int64_t warm_tokens, warm_steps, warm_parks, warm_dropped; /* warming statistics */
    int64_t admit_counter;                                     /* admissions so far */
    float *logits;                                             /* max_batch rows of vocab floats */
    float *scratch;       /* one row of vocab floats (raw copy for logprobs) */
    float *rowcopy;       /* one row of vocab floats (pristine logits for forked choices) */
    float *hidden_rows;   /* token_budget rows of hidden floats (embeddings' final states) */
    gr_vocab *gv;         /* the vocabulary's byte strings for grammars (NULL without tok) */
    uint32_t *mask;       /* one row's allowed-token bits (vocab bits) */
    eng_seq *batch;       /* the step's rows (max_batch) */
    sched_seq **rows;     /* the sequence of each row */
    rs_ivec match_blocks; /* scratch for rt_match */
    int32_t *holders;     /* per block: references held by sequences (accounting) */
    int64_t steps, preemptions, lookups, hit_tokens, miss_tokens;
};

int sched_seqvec_push(sched_seqvec *a, sched_seq *q);
int sched_seqvec_insert(sched_seqvec *a, int at, sched_seq *q);
void sched_seqvec_remove(sched_seqvec *a, int at);
void sched_seqvec_free(sched_seqvec *a);

/* step.c: what the scheduler thread does. */
sched_seq *sched_seq_new(sched *s, sched_request *r, int index, int forked);
void sched_seq_free(sched_seq *q);
void sched_step(sched *s);          /* cancel, admit, plan, forward, sample, emit */
void sched_drop_all(sched *s);      /* at stop: end every request with an error */
void sched_publish_stats(sched *s); /* snapshot statistics under mu */
/* check.c: the invariants above (scheduler thread, between steps). Returns 0, or the number of
 * the first invariant that fails with a message in *e. */
int sched_check(sched *s, rs_err *e);
/* Move q to state `to`, asserting the transition is one the list above allows. */
void sched_seq_set_state(sched_seq *q, sched_state to);

#endif
