/*
 * generate.c — `radixserve generate`: load a model, prefill a prompt (optionally in chunks),
 * decode n tokens with the engine's sampler, and print them (or, with --top-logits, one JSON
 * line per step with the step's largest logits; with --logits-out, every step's full logits as
 * little-endian float32). The engine's test harness and the PyTorch reference drive it.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/cli.h"
#include "engine/engine.h"
#include "tokenizer/tokenizer.h"

/* The command line, parsed. */
typedef struct gen_opts {
    const char *model;      /* --model DIR|FILE.gguf */
    const char *prompt_ids; /* --prompt-ids 1,2,3 */
    const char *prompt;     /* --prompt TEXT */
    const char *logits_out; /* --logits-out FILE, or NULL */
    const char *lora;       /* --lora DIR: a PEFT adapter applied to every token, or NULL */
    int n;                  /* -n: tokens to generate */
    int top_logits;         /* --top-logits K (0: print the generation instead) */
    int threads;            /* --threads */
    int chunk;              /* --chunk: prefill chunk size (0: whole prompt at once) */
    int kv_dtype;           /* --kv-dtype: KV_F32/KV_BF16, or -1 for the model's */
    int weights;            /* --weights: an eng_weights */
    int ignore_eos;         /* --ignore-eos: do not stop at an EOS token */
    int print_ids;          /* --print-ids: print ids even when a tokenizer is present */
    eng_sampling s;         /* sampling parameters */
    int set_temp, set_top_p, set_top_k, set_min_p, set_rep; /* given on the command line */
} gen_opts;

static void usage(FILE *f) {
    fprintf(
        f, "usage: radixserve generate --model DIR|FILE.gguf (--prompt TEXT | --prompt-ids 1,2,3) "
           "[-n N]\n"
           "         [--temperature T] [--top-p P] [--top-k K] [--min-p P]\n"
           "         [--repetition-penalty R] [--seed S] [--top-logits K] [--logits-out FILE]\n"
           "         [--kv-dtype f32|bf16] [--weights q8_0|q4_k_m|q4_0] [--threads N]\n"
           "         [--chunk N] [--ignore-eos] [--lora DIR]\n"
           "\n"
           "  -n N              tokens to generate (default 64); stops early at EOS unless\n"
           "                    --ignore-eos\n"
           "  --temperature T   0 = greedy; sampling defaults come from generation_config.json\n"
           "  --top-logits K    one JSON line per step: {\"id\": ID, \"top\": [[id, logit], ...]}\n"
           "                    with the K largest logits before sampling\n"
           "  --logits-out FILE every step's logits, float32 little-endian, vocab_size per step\n"
           "  --chunk N         prefill the prompt N tokens per forward pass\n"
           "  --weights W       quantize the weights at load (default: as stored)\n"
           "  --lora DIR        apply the LoRA adapter in DIR (PEFT's adapter_config.json and\n"
           "                    adapter_model.safetensors)\n");
}

static int parse_int(const char *s, long lo, long hi, int *out) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi) return -1;
    *out = (int)v;
    return 0;
}

static int parse_float(const char *s, double lo, double hi, float *out) {
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !(v >= lo && v <= hi)) return -1;
    *out = (float)v;
    return 0;
}

static int parse_u64(const char *s, uint64_t *out) {
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s || *end || *s == '-') return -1;
    *out = v;
    return 0;
}

/* One option with a value; returns 0 if handled, -1 if bad, 1 if not this kind of option. */
static int parse_valued(gen_opts *o, const char *k, const char *v) {
    if (!strcmp(k, "--model")) return o->model = v, 0;
    if (!strcmp(k, "--prompt-ids")) return o->prompt_ids = v, 0;
    if (!strcmp(k, "--prompt")) return o->prompt = v, 0;
    if (!strcmp(k, "--logits-out")) return o->logits_out = v, 0;
    if (!strcmp(k, "--lora")) return o->lora = v, 0;
    if (!strcmp(k, "-n")) return parse_int(v, 0, 1 << 24, &o->n);
    if (!strcmp(k, "--top-logits")) return parse_int(v, 0, 1 << 20, &o->top_logits);
    if (!strcmp(k, "--threads")) return parse_int(v, 1, 1024, &o->threads);
    if (!strcmp(k, "--chunk")) return parse_int(v, 1, 1 << 20, &o->chunk);
    if (!strcmp(k, "--seed")) return parse_u64(v, &o->s.seed);
    if (!strcmp(k, "--temperature"))
        return o->set_temp = 1, parse_float(v, 0, 1e6, &o->s.temperature);
    if (!strcmp(k, "--top-p")) return o->set_top_p = 1, parse_float(v, 0, 1, &o->s.top_p);
    if (!strcmp(k, "--min-p")) return o->set_min_p = 1, parse_float(v, 0, 1, &o->s.min_p);
    if (!strcmp(k, "--top-k")) return o->set_top_k = 1, parse_int(v, 0, 1 << 30, &o->s.top_k);
    if (!strcmp(k, "--repetition-penalty"))
        return o->set_rep = 1, parse_float(v, 1e-6, 1e6, &o->s.repetition_penalty);
    if (!strcmp(k, "--weights")) return (o->weights = eng_weights_parse(v)) < 0 ? -1 : 0;
    if (!strcmp(k, "--kv-dtype")) {
        o->kv_dtype = !strcmp(v, "f32") ? KV_F32 : !strcmp(v, "bf16") ? KV_BF16 : -2;
        return o->kv_dtype == -2 ? -1 : 0;
    }
    return 1;
}

static int parse_args(gen_opts *o, int argc, char **argv) {
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    *o = (gen_opts){.n = 64, .threads = cpus > 0 && cpus < 64 ? (int)cpus : 1, .kv_dtype = -1};
    for (int i = 1; i < argc; i++) {
        const char *k = argv[i];
        if (!strcmp(k, "--ignore-eos")) {
            o->ignore_eos = 1;
            continue;
        }
        if (!strcmp(k, "--print-ids")) {
            o->print_ids = 1;
            continue;
        }
        if (i + 1 >= argc) return fprintf(stderr, "radixserve generate: %s needs a value\n", k), -1;
        int rc = parse_valued(o, k, argv[++i]);
        if (rc) {
            fprintf(stderr, "radixserve generate: %s '%s'\n",
                    rc < 0 ? "bad value for" : "unknown option", rc < 0 ? k : k);
            return -1;
        }
    }
    if (!o->model || (!o->prompt_ids == !o->prompt)) {
        fprintf(stderr, "radixserve generate: need --model and one of --prompt, --prompt-ids\n");
        return -1;
    }
    return 0;
}

/* "1,2,3" -> ids. */
static int parse_ids(const char *s, rs_ivec *out) {
    while (*s) {
        int v;
        char buf[16];
        size_t n = strcspn(s, ",");
        if (n == 0 || n >= sizeof buf) return -1;
        memcpy(buf, s, n);
        buf[n] = 0;
        if (parse_int(buf, 0, INT32_MAX, &v) || rs_ivec_push(out, v)) return -1;
        s += n;
        if (*s == ',' && !*++s) return -1;
    }
    return out->n > 0 ? 0 : -1;
}

/* Sampling parameters not given on the command line come from generation_config.json. */
static void apply_defaults(gen_opts *o, const eng_gen_defaults *d) {
    if (!o->set_temp) o->s.temperature = d->temperature;
    if (!o->set_top_p) o->s.top_p = d->top_p;
    if (!o->set_top_k) o->s.top_k = d->top_k;
    if (!o->set_min_p) o->s.min_p = d->min_p;
    if (!o->set_rep) o->s.repetition_penalty = d->repetition_penalty;
}

/* ---------------------------------------------------------------- the run */

/* Everything one generation owns. */
typedef struct gen_run {
    eng_model *m;         /* the model */
    eng_lora_reg *loras;  /* --lora: the one adapter's registry, or NULL */
    const eng_lora *lora; /* its reference, or NULL */
    eng_ctx *ctx;         /* scratch and workers */
    kv_pool kv;           /* pages for this one sequence */
    int32_t *blocks;      /* its block table */
    int n_blocks;         /* entries in blocks */
    float *logits;        /* vocab floats of the current step */
    float *work;          /* copy the sampler may modify */
    int32_t *top;         /* --top-logits ids */
    FILE *logits_f;       /* --logits-out, or NULL */
    tok_tokenizer *tok;   /* the model's tokenizer, or NULL (then ids are printed) */
    tok_stream text;      /* incremental decoding of the generated ids (when tok) */
    int as_text;          /* plain output is text (a tokenizer and no --print-ids) */
    int n_printed;        /* ids printed so far (when not as_text) */
} gen_run;

static void run_free(gen_run *r) {
    if (r->tok) tok_stream_free(&r->text);
    tok_free(r->tok);
    if (r->logits_f) fclose(r->logits_f);
    free(r->top);
    free(r->work);
    free(r->logits);
    free(r->blocks);
    kv_pool_free(&r->kv);
    eng_ctx_free(r->ctx);
    eng_lora_release(r->lora);
    eng_lora_reg_free(r->loras);
    eng_model_free(r->m);
}

static int run_init(gen_run *r, const gen_opts *o, int total, int max_tokens, rs_err *e) {
    const eng_config *c = eng_model_config(r->m);
    kv_pool_config kc = eng_kv_config(r->m, 16, o->kv_dtype, 0);
    r->n_blocks = (total + kc.block_size - 1) / kc.block_size;
    kc.budget_bytes = kv_block_bytes(&kc) * (size_t)r->n_blocks;
    int rc = kv_pool_init(&r->kv, &kc, e);
    if (!rc) rc = eng_ctx_init(&r->ctx, r->m, max_tokens, o->threads, e);
    if (rc) return rc;
    r->blocks = malloc((size_t)r->n_blocks * sizeof *r->blocks);
    r->logits = malloc((size_t)c->vocab_size * sizeof *r->logits);
    r->work = malloc((size_t)c->vocab_size * sizeof *r->work);
    r->top = malloc(((size_t)o->top_logits + 1) * sizeof *r->top);
    if (!r->blocks || !r->logits || !r->work || !r->top)
        return rs_errf(e, RS_ENOMEM, "out of memory");
    for (int i = 0; i < r->n_blocks; i++) r->blocks[i] = kv_alloc(&r->kv);
    if (o->logits_out && !(r->logits_f = fopen(o->logits_out, "wb")))
        return rs_errf(e, RS_EIO, "%s: cannot open for writing", o->logits_out);
    return 0;
}

/* Forward ids[0, n) at positions pos0.. ; logits of the last one into r->logits if want. */
static int run_forward(gen_run *r, const int32_t *ids, int n, int pos0, int want, rs_err *e) {
    eng_seq s = {ids, n, pos0, r->blocks, r->n_blocks, want ? r->logits : NULL, NULL, r->lora};
    return eng_forward(r->ctx, &r->kv, &s, 1, e);
}

static int is_eos(const eng_config *c, int32_t id) {
    for (int i = 0; i < c->n_eos; i++)
        if (c->eos_ids[i] == id) return 1;
    return 0;
}

/* Plain output: the text of id as soon as it is final (or the id itself). */
static int print_piece(gen_run *r, int32_t id, rs_err *e) {
    if (!r->as_text) {
        printf("%s%d", r->n_printed++ ? " " : "", id);
        return 0;
    }
    char *piece;
    int rc = tok_stream_push(&r->text, id, &piece, e);
    if (rc) return rc;
    fputs(piece, stdout);
    fflush(stdout);
    free(piece);
    return 0;
}

/* End of plain output: what the stream still holds, and a newline. */
static int finish_text(gen_run *r, rs_err *e) {
    char *piece = NULL;
    int rc = r->as_text ? tok_stream_flush(&r->text, &piece, e) : 0;
    if (piece) fputs(piece, stdout);
    free(piece);
    printf("\n");
    return rc;
}

/* Report one step: --logits-out, then --top-logits or the plain output. */
static int report_step(gen_run *r, const gen_opts *o, int vocab, int32_t id, rs_err *e) {
    if (r->logits_f &&
        fwrite(r->logits, sizeof(float), (size_t)vocab, r->logits_f) != (size_t)vocab)
        return rs_errf(e, RS_EIO, "%s: write failed", o->logits_out);
    if (!o->top_logits) return print_piece(r, id, e);
    int k = eng_top_k(r->logits, vocab, o->top_logits, r->top);
    printf("{\"id\": %d, \"top\": [", id);
    for (int i = 0; i < k; i++)
        printf("%s[%d, %.9g]", i ? ", " : "", r->top[i], (double)r->logits[r->top[i]]);
    printf("]}\n");
    return 0;
}

static int run_generate(gen_run *r, const gen_opts *o, const rs_ivec *prompt, rs_ivec *out,
                        rs_err *e) {
    const eng_config *c = eng_model_config(r->m);
    int chunk = o->chunk ? o->chunk : prompt->n, rc = 0;
    for (int p = 0; p < prompt->n && !rc; p += chunk) {
        int n = prompt->n - p < chunk ? prompt->n - p : chunk;
        rc = run_forward(r, prompt->v + p, n, p, p + n == prompt->n, e);
    }
    eng_rng rng;
    eng_rng_seed(&rng, o->s.seed);
    for (int i = 0; i < o->n && !rc; i++) {
        memcpy(r->work, r->logits, (size_t)c->vocab_size * sizeof(float));
        int32_t id = eng_sample(&o->s, &rng, r->work, c->vocab_size, prompt->v, prompt->n, out->v,
                                out->n, NULL);
        if (rs_ivec_push(out, id)) return rs_errf(e, RS_ENOMEM, "out of memory");
        if ((rc = report_step(r, o, c->vocab_size, id, e))) break;
        if ((is_eos(c, id) && !o->ignore_eos) || i + 1 == o->n) break;
        rc = run_forward(r, &out->v[out->n - 1], 1, prompt->n + i, 1, e);
    }
    return rc;
}

/* The tokenizer when the output is text or the prompt is; encode --prompt. */
static int load_tokenizer(gen_run *r, const gen_opts *o, rs_ivec *prompt, rs_err *e) {
    if (o->print_ids && !o->prompt) return 0;
    if (o->top_logits && !o->prompt) return 0;
    int rc = cli_load_tokenizer(&r->tok, o->model, e);
    if (rc) {
        r->tok = NULL;
        /* Without a tokenizer, ids in give ids out; text in cannot work. */
        return o->prompt ? rc : 0;
    }
    tok_stream_init(&r->text, r->tok, 1);
    r->as_text = !o->print_ids;
    if (!o->prompt) return 0;
    return tok_encode(r->tok, o->prompt, strlen(o->prompt), TOK_ADD_SPECIAL, prompt, e);
}

int cli_generate(int argc, char **argv) {
    gen_opts o;
    if (argc >= 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
        usage(stdout);
        return 0;
    }
    if (parse_args(&o, argc, argv)) {
        usage(stderr);
        return 2;
    }
    rs_ivec prompt = {0}, out = {0};
    if (o.prompt_ids && parse_ids(o.prompt_ids, &prompt)) {
        fprintf(stderr, "radixserve generate: --prompt-ids must be a comma-separated list of "
                        "token ids\n");
        usage(stderr);
        rs_ivec_free(&prompt);
        return 2;
    }
    gen_run r = {0};
    rs_err e = {0};
    int rc = cli_load_model(&r.m, o.model, (eng_weights)o.weights, o.threads, &e);
    if (!rc && o.lora) rc = eng_lora_reg_init(&r.loras, r.m, &e);
    if (!rc && o.lora) rc = eng_lora_load(r.loras, "lora", o.lora, &e);
    if (!rc && o.lora) rc = eng_lora_acquire(r.loras, "lora", &r.lora, &e);
    if (!rc) rc = load_tokenizer(&r, &o, &prompt, &e);
    if (!rc && prompt.n == 0) rc = rs_errf(&e, RS_EINVAL, "the prompt encodes to no tokens");
    if (!rc) {
        apply_defaults(&o, eng_model_gen_defaults(r.m));
        int max_tokens = o.chunk && o.chunk < prompt.n ? o.chunk : prompt.n;
        rc = run_init(&r, &o, prompt.n + o.n, max_tokens, &e);
    }
    if (!rc) rc = run_generate(&r, &o, &prompt, &out, &e);
    if (!rc && !o.top_logits) rc = finish_text(&r, &e);
    if (rc) fprintf(stderr, "radixserve generate: %s\n", e.msg);
    run_free(&r);
    rs_ivec_free(&prompt);
    rs_ivec_free(&out);
    return rc ? 1 : 0;
}
