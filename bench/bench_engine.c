/*
 * bench_engine.c — the whole forward pass end to end (issue 9's engine figures, the ones
 * llama-bench's pp512 / tg128 compare with): prefill tokens/s of one 512-token prompt in one
 * eng_forward call, and decode tokens/s with 1 and 8 sequences generating 128 tokens each from
 * an empty context, greedy, the next token fed back. Weights, attention, norms, the LM head and
 * the argmax are all in the figure; no scheduler, tokenizer or HTTP.
 *
 * The decode figure is also given as GB/s of weights streamed (bytes as held of every matrix a
 * token reads, the LM head included; the embedding row lookup is negligible), to set beside
 * bench_kernels' streaming-read bandwidth: that ratio is issue 9's "% of the limit".
 *
 * With --context C, the prompt and the decode steps come after C positions already in the KV
 * pages (filled with a constant: their values do not change the work), as in a server where a
 * chunk of a long prompt or a reply to a long conversation attends over everything before it;
 * --shared gives every decoding sequence the same first C positions (the same blocks, as
 * requests behind one cached system prompt have), whose KV the engine reads once per step.
 *
 * Usage: bench_engine [MODEL_DIR] [--threads T] [--prompt N] [--gen N] [--batch LIST]
 *                     [--context C] [--shared] [--reps R] [--quick] [--json FILE]
 *   MODEL_DIR  default build/bench/qwen3-0.6b (written by bench/model.sh when absent; run from
 *              the repository root)
 *   --threads  workers (2, as llama-bench -t 2); --prompt: prefill tokens (512); --gen: decode
 *              steps (128); --batch: decode batch sizes, comma-separated (1,8); --reps: prefill
 *              repetitions, best reported (3; --quick: 1, and --gen 16)
 *   --weights  quantize the weights at load (as serve --weights); the table then also gives
 *              the weight memory: the matrices' bytes and the RSS right after load
 *   --lora DIR every sequence (prefill and decode) runs under the PEFT adapter in DIR (bench/
 *              make_lora.py writes one), to set beside the same run without it
 *   --json     append one JSON line with every figure
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bench/bench_util.h"
#ifdef ENG_PROFILE
#include "engine/internal.h"
#include "engine/profile.h"
#endif

#define BS        16 /* KV block size: serve's default */
#define MAX_BATCH 64

typedef struct opts {
    const char *model; /* model directory */
    int threads;       /* forward-pass workers */
    int prompt;        /* prefill tokens */
    int gen;           /* decode steps per sequence */
    int batch[8];      /* decode batch sizes */
    int n_batch;       /* entries in batch */
    int reps;          /* prefill repetitions (best counts) */
    const char *json;  /* JSON lines file, or NULL */
    int context;       /* positions already cached before the prompt / the decode steps */
    int shared;        /* 1: decoding sequences share the context's blocks */
    int weights;       /* --weights: an eng_weights (quantized at load) */
    const char *lora;  /* --lora DIR: the adapter every sequence uses, or NULL */
} opts;

typedef struct eb {
    eng_model *m;         /* the model */
    eng_ctx *ctx;         /* scratch and workers, for max(prompt, largest batch) tokens */
    kv_pool pool;         /* blocks for the prompt or for every decoding sequence */
    int pool_ok;          /* pool initialised */
    int vocab;            /* logits per row */
    int32_t *blocks;      /* block ids: one table per sequence, each `per_seq` long */
    int per_seq;          /* blocks in one table */
    float *logits;        /* one row of logits per sequence */
    int32_t *tokens;      /* the prompt; also each sequence's current token in decode */
    eng_lora_reg *loras;  /* --lora: the registry of its one adapter */
    const eng_lora *lora; /* --lora: the adapter (a held reference), else NULL */
} eb;

typedef struct figures {
    double prefill_s;         /* best prefill time */
    double decode_s[8];       /* decode time per batch size */
    double weight_bytes;      /* bytes of weights one token streams */
    double tensor_bytes;      /* bytes of every weight matrix as held */
    double rss_load;          /* resident memory right after load (and quantization) */
    const char *quantization; /* the model's weight types (eng_model_quantization) */
    int rank;                 /* --lora: the adapter's r */
#ifdef ENG_PROFILE
    double phase_s[8][ENG_PH_N];      /* per decode batch: seconds in each phase (all steps) */
    double sample_s[8];               /* per decode batch: seconds in the greedy pick (all steps) */
    double prefill_phase_s[ENG_PH_N]; /* prefill: seconds in each phase, over all reps */
#endif
} figures;

/* Resident memory of the process now, from /proc/self/statm (0 when unreadable). */
static double rss_bytes(void) {
    long pages_total = 0, pages_rss = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    if (!f) return 0;
    int ok = fscanf(f, "%ld %ld", &pages_total, &pages_rss) == 2;
    fclose(f);
    return ok ? (double)pages_rss * (double)sysconf(_SC_PAGESIZE) : 0;
}

static int eb_init(eb *b, const opts *o, figures *f, rs_err *e) {
    memset(b, 0, sizeof *b);
    int rc, max_b = 1;
    for (int i = 0; i < o->n_batch; i++)
        if (o->batch[i] > max_b) max_b = o->batch[i];
    if ((rc = bu_ensure_model(o->model, e)) || (rc = eng_model_load(&b->m, o->model, e)) ||
        (rc = eng_model_quantize(b->m, (eng_weights)o->weights, o->threads, NULL, NULL, e)))
        return rc;
    if (o->lora && ((rc = eng_lora_reg_init(&b->loras, b->m, e)) ||
                    (rc = eng_lora_load(b->loras, "bench", o->lora, e)) ||
                    (rc = eng_lora_acquire(b->loras, "bench", &b->lora, e))))
        return rc;
    f->rss_load = rss_bytes();
    f->rank = b->lora ? eng_lora_rank(b->lora) : 0;
    f->tensor_bytes = eng_model_weight_bytes(b->m, 0);
    f->quantization = eng_model_quantization(b->m);
    f->weight_bytes = eng_model_weight_bytes(b->m, 1);
    b->vocab = eng_model_config(b->m)->vocab_size;
    int longest = o->context + (o->prompt > o->gen ? o->prompt : o->gen);
    b->per_seq = (longest + BS - 1) / BS;
    if ((rc = bu_pool(&b->pool, b->m, BS, b->per_seq * max_b, e))) return rc;
    b->pool_ok = 1;
    int max_tokens = o->prompt > max_b ? o->prompt : max_b;
    if ((rc = eng_ctx_init(&b->ctx, b->m, max_tokens, o->threads, e))) return rc;
    b->blocks = malloc(sizeof *b->blocks * (size_t)(b->per_seq * max_b));
    b->logits = malloc(sizeof *b->logits * (size_t)b->vocab * (size_t)max_b);
    b->tokens = malloc(sizeof *b->tokens * (size_t)max_tokens);
    if (!b->blocks || !b->logits || !b->tokens) return rs_errf(e, RS_ENOMEM, "out of memory");
    /* Every block is taken once and reused by each measurement (positions are rewritten). */
    for (int i = 0; i < b->per_seq * max_b; i++) b->blocks[i] = kv_alloc(&b->pool);
    /* The context's KV: written once (an untouched page would read as the one shared zero page,
     * from L1), and with --shared one prefix's blocks in every table. */
    for (int s = 0; s < max_b; s++)
        for (int i = 0; i < b->per_seq; i++) {
            int32_t *id = &b->blocks[(size_t)s * b->per_seq + i];
            if (o->shared && s > 0 && (i + 1) * BS <= o->context)
                *id = b->blocks[i]; /* sequence 0's, written already */
            else if (i * BS < o->context)
                memset(b->pool.mem + (size_t)*id * b->pool.block_bytes, 0x3c, b->pool.block_bytes);
        }
    return 0;
}

static void eb_free(eb *b) {
    free(b->blocks);
    free(b->logits);
    free(b->tokens);
    eng_ctx_free(b->ctx);
    if (b->pool_ok) kv_pool_free(&b->pool);
    eng_lora_release(b->lora);
    eng_lora_reg_free(b->loras);
    eng_model_free(b->m);
}

/* The prompt in one forward call (as llama-bench's pp: one batch), best of reps. */
static int run_prefill(eb *b, const opts *o, figures *f, rs_err *e) {
    bu_tokens(b->tokens, o->prompt, b->vocab, 1);
    eng_seq q = {b->tokens, o->prompt, o->context, b->blocks, b->per_seq, b->logits, NULL, b->lora};
    /* One untimed token first: it faults the memory-mapped weights in, which is load time. */
    eng_seq warm = {b->tokens, 1, o->context, b->blocks, b->per_seq, NULL, NULL, b->lora};
    int rc = eng_forward(b->ctx, &b->pool, &warm, 1, e);
    if (rc) return rc;
#ifdef ENG_PROFILE
    memset(&eng_prof, 0, sizeof eng_prof);
#endif
    for (int r = 0; r < o->reps; r++) {
        double t0 = rs_now();
        if ((rc = eng_forward(b->ctx, &b->pool, &q, 1, e))) return rc;
        double t = rs_now() - t0;
        if (r == 0 || t < f->prefill_s) f->prefill_s = t;
    }
#ifdef ENG_PROFILE
    memcpy(f->prefill_phase_s, eng_prof.sec, sizeof eng_prof.sec);
#endif
    return 0;
}

/* n sequences, each from position 0, o->gen steps of one token; the greedy next token of each
 * row is fed back, so the work is what a real decode does. Returns seconds via *secs. */
static int run_decode(eb *b, const opts *o, int n, double *secs, double *phase_s, double *sample_s,
                      rs_err *e) {
    eng_seq q[MAX_BATCH];
    bu_tokens(b->tokens, n, b->vocab, 2 + (uint64_t)n);
    for (int s = 0; s < n; s++)
        q[s] = (eng_seq){b->tokens + s, 1,
                         o->context,    b->blocks + (size_t)s * b->per_seq,
                         b->per_seq,    b->logits + (size_t)s * b->vocab,
                         NULL,          b->lora};
#ifdef ENG_PROFILE
    memset(&eng_prof, 0, sizeof eng_prof);
#endif
    double t0 = rs_now(), picking = 0;
    for (int step = 0; step < o->gen; step++) {
        int rc = eng_forward(b->ctx, &b->pool, q, n, e);
        if (rc) return rc;
        double t1 = rs_now();
        for (int s = 0; s < n; s++) {
            eng_top_k(q[s].logits, b->vocab, 1, b->tokens + s);
            q[s].pos0 = o->context + step + 1;
        }
        picking += rs_now() - t1;
    }
    *secs = rs_now() - t0;
#ifdef ENG_PROFILE
    memcpy(phase_s, eng_prof.sec, sizeof eng_prof.sec);
#else
    (void)phase_s;
#endif
    *sample_s = picking;
    return 0;
}

/* ---------------------------------------------------------------- report */

static void print_table(const opts *o, const figures *f) {
    printf("bench_engine: %s, isa %s, %d threads, weights %s, %.3f GB of weights per token\n",
           o->model, eng_isa_name(), o->threads, f->quantization, f->weight_bytes / 1e9);
    if (o->lora) printf("every sequence under the LoRA adapter %s (r = %d)\n", o->lora, f->rank);
    printf("weight memory: %.3f GB of tensors, RSS after load %.3f GB (%.1f%% of the tensors)\n",
           f->tensor_bytes / 1e9, f->rss_load / 1e9, 100.0 * f->rss_load / f->tensor_bytes);
    printf("| %-34s | %10s | %12s | %14s |\n", "measure", "tokens/s", "ms per call",
           "weights GB/s");
    printf("|------------------------------------|------------|--------------|----------------|\n");
    if (o->context)
        printf("after %d cached positions (%s)\n", o->context,
               o->shared ? "decode: one shared prefix" : "decode: a prefix per sequence");
    printf("| prefill, prompt %-18d | %10.1f | %12.1f | %14s |\n", o->prompt,
           o->prompt / f->prefill_s, f->prefill_s * 1e3, "");
    for (int i = 0; i < o->n_batch; i++) {
        int n = o->batch[i];
        double steps = o->gen / f->decode_s[i];
        char what[64];
        snprintf(what, sizeof what, "decode, batch %d, %d steps", n, o->gen);
        printf("| %-34s | %10.1f | %12.1f | %14.2f |\n", what, n * steps, 1e3 / steps,
               steps * f->weight_bytes / 1e9);
    }
}

#ifdef ENG_PROFILE
/* A no-op job on a pool like the engine's: what one hand-off costs when the work is nil. */
static void nop_piece(void *arg, int i0, int i1) {
    (void)arg;
    (void)i0;
    (void)i1;
}

static double handoff_us(int threads) {
    eng_pool *p;
    rs_err e = {0};
    if (eng_pool_init(&p, threads, &e)) return -1;
    enum { N = 20000 };
    for (int i = 0; i < N / 10; i++) eng_pool_run(p, threads, nop_piece, NULL); /* warm */
    double t0 = rs_now();
    for (int i = 0; i < N; i++) eng_pool_run(p, threads, nop_piece, NULL);
    double us = (rs_now() - t0) / N * 1e6;
    eng_pool_free(p);
    return us;
}

static const char *const phase_names[ENG_PH_N] = {
    "embedding, positions",
    "residual adds + RMSNorm",
    "q/k/v projections",
    "biases, q/k norm, RoPE, K/V",
    "attention",
    "o_proj",
    "gate/up projections",
    "SiLU * up",
    "down_proj",
    "final norm + LM head",
};

/* Where a decode step's time went, per batch size: the forward pass's phases (each pool job's
 * wait for its slowest worker included), the greedy pick, and what hand-offs alone cost. */
static void print_prefill_profile(const opts *o, const figures *f) {
    double sum = 0;
    for (int p = 0; p < ENG_PH_N; p++) sum += f->prefill_phase_s[p];
    printf(
        "prefill profile, prompt %d: %.1f ms per call (mean of %d; calling thread's wall time)\n",
        o->prompt, sum / o->reps * 1e3, o->reps);
    printf("| %-28s | %9s | %6s |\n", "phase", "ms/call", "%");
    printf("|------------------------------|-----------|--------|\n");
    for (int p = 0; p < ENG_PH_N; p++)
        printf("| %-28s | %9.2f | %6.1f |\n", phase_names[p], f->prefill_phase_s[p] / o->reps * 1e3,
               100 * f->prefill_phase_s[p] / sum);
}

static void print_profile(const opts *o, const eng_model *m, const figures *f) {
    print_prefill_profile(o, f);
    int L = eng_model_config(m)->n_layers;
    int handoffs = 5 * L + 1; /* q/k/v, attention, o, gate/up, down per layer; the LM head */
    double hus = handoff_us(o->threads);
    for (int i = 0; i < o->n_batch; i++) {
        double step = f->decode_s[i] / o->gen * 1e3, sum = 0;
        printf("decode profile, batch %d: %.2f ms per step (calling thread's wall time)\n",
               o->batch[i], step);
        printf("| %-28s | %9s | %6s |\n", "phase", "ms/step", "%");
        printf("|------------------------------|-----------|--------|\n");
        for (int p = 0; p < ENG_PH_N; p++) {
            double ms = f->phase_s[i][p] / o->gen * 1e3;
            sum += ms;
            printf("| %-28s | %9.3f | %6.1f |\n", phase_names[p], ms, 100 * ms / step);
        }
        double pick = f->sample_s[i] / o->gen * 1e3;
        printf("| %-28s | %9.3f | %6.1f |\n", "greedy pick (argmax)", pick, 100 * pick / step);
        double rest = step - sum - pick;
        printf("| %-28s | %9.3f | %6.1f |\n", "rest (bench loop)", rest, 100 * rest / step);
        printf("pool: %d hand-offs per step at %.2f us each when empty = %.3f ms (%.1f%%), inside "
               "the pooled phases above\n",
               handoffs, hus, handoffs * hus / 1e3, 100 * handoffs * hus / 1e3 / step);
    }
}
#endif

static int append_json(const opts *o, const figures *f, rs_err *e) {
    FILE *fp = fopen(o->json, "a");
    if (!fp) return rs_errf(e, RS_EIO, "cannot append to %s", o->json);
    bu_json_head(fp, "engine");
    fprintf(fp,
            ",\"model\":\"%s\",\"threads\":%d,\"weight_bytes_per_token\":%.0f,"
            "\"prefill_tokens\":%d,\"prefill_tok_s\":%.2f,\"decode_steps\":%d,\"context\":%d,"
            "\"shared\":%d",
            o->model, o->threads, f->weight_bytes, o->prompt, o->prompt / f->prefill_s, o->gen,
            o->context, o->shared);
    for (int i = 0; i < o->n_batch; i++) {
        double steps = o->gen / f->decode_s[i];
        fprintf(fp, ",\"decode_b%d_tok_s\":%.2f,\"decode_b%d_weights_gb_s\":%.3f", o->batch[i],
                o->batch[i] * steps, o->batch[i], steps * f->weight_bytes / 1e9);
    }
    fprintf(fp, ",\"lora\":\"%s\",\"lora_rank\":%d", o->lora ? o->lora : "", f->rank);
    fprintf(fp, ",\"weights\":\"%s\",\"tensor_bytes\":%.0f,\"rss_after_load\":%.0f}\n",
            f->quantization, f->tensor_bytes, f->rss_load);
    return fclose(fp) ? rs_errf(e, RS_EIO, "cannot write %s", o->json) : 0;
}

/* ---------------------------------------------------------------- main */

static int parse_batches(opts *o, const char *v) {
    o->n_batch = 0;
    char buf[128];
    snprintf(buf, sizeof buf, "%s", v);
    for (char *save = NULL, *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save))
        if (o->n_batch == 8 || bu_int_arg(t, 1, MAX_BATCH, &o->batch[o->n_batch++])) return -1;
    return o->n_batch ? 0 : -1;
}

static int parse(opts *o, int argc, char **argv) {
    *o = (opts){BU_DEFAULT_MODEL, 2, 512, 128, {1, 8}, 2, 3, NULL, 0, 0, ENG_WEIGHTS_SOURCE, NULL};
    int quick = 0, gen_set = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        int bad = 0;
        if (!strcmp(a, "--quick")) {
            quick = 1;
            continue;
        }
        if (!strcmp(a, "--shared")) {
            o->shared = 1;
            continue;
        }
        if (a[0] != '-') {
            o->model = a;
            continue;
        }
        if (!v) return -1;
        i++;
        if (!strcmp(a, "--json"))
            o->json = v;
        else if (!strcmp(a, "--threads"))
            bad = bu_int_arg(v, 1, 256, &o->threads);
        else if (!strcmp(a, "--prompt"))
            bad = bu_int_arg(v, 1, 1 << 16, &o->prompt);
        else if (!strcmp(a, "--gen") && (gen_set = 1))
            bad = bu_int_arg(v, 1, 1 << 16, &o->gen);
        else if (!strcmp(a, "--batch"))
            bad = parse_batches(o, v);
        else if (!strcmp(a, "--context"))
            bad = bu_int_arg(v, 0, 1 << 16, &o->context);
        else if (!strcmp(a, "--weights"))
            bad = (o->weights = eng_weights_parse(v)) < 0;
        else if (!strcmp(a, "--reps"))
            bad = bu_int_arg(v, 1, 1000, &o->reps);
        else if (!strcmp(a, "--lora"))
            o->lora = v;
        else
            return -1;
        if (bad) return -1;
    }
    if (quick) {
        o->reps = 1;
        if (!gen_set) o->gen = 16;
    }
    return 0;
}

int main(int argc, char **argv) {
    opts o;
    if (parse(&o, argc, argv)) {
        fprintf(stderr,
                "usage: %s [MODEL_DIR (%s)] [--threads T (2)] [--prompt N (512)] [--gen N (128)] "
                "[--batch LIST (1,8; each <= %d)] [--context C (0)] [--shared] [--reps R (3)] "
                "[--weights q8_0|q4_k_m|q4_0] [--lora DIR] [--quick] [--json FILE]\n",
                argv[0], BU_DEFAULT_MODEL, MAX_BATCH);
        return 2;
    }
    eb b;
    figures f = {0};
    rs_err e = {0};
    int rc = eb_init(&b, &o, &f, &e);
    if (!rc) rc = run_prefill(&b, &o, &f, &e);
    for (int i = 0; !rc && i < o.n_batch; i++)
#ifdef ENG_PROFILE
        rc = run_decode(&b, &o, o.batch[i], &f.decode_s[i], f.phase_s[i], &f.sample_s[i], &e);
#else
    {
        double sample_s;
        rc = run_decode(&b, &o, o.batch[i], &f.decode_s[i], NULL, &sample_s, &e);
    }
#endif
    if (!rc) print_table(&o, &f);
#ifdef ENG_PROFILE
    if (!rc) print_profile(&o, b.m, &f);
#endif
    if (!rc && o.json) rc = append_json(&o, &f, &e);
    eb_free(&b);
    if (rc) fprintf(stderr, "bench_engine: %s\n", e.msg[0] ? e.msg : "failed");
    return rc != 0;
}
