/*
 * test_engine_lora.c — LoRA adapters in a batch, bit for bit, and the registry's contract.
 *
 * Batch invariance: sequences under two adapters and the base model (the same adapter twice,
 * not adjacent, so its rows are gathered from apart) batched in one forward pass — prefills
 * of different lengths, then decode rows beside a prefill chunk — give every sequence exactly
 * the logits it gets alone, on 3 threads against 1, on every kernel table the CPU runs. The
 * values themselves are checked against PyTorch by tests/test_engine_lora.py.
 * Registry: duplicate names and bad names refused, acquire of an absent name RS_ENOTFOUND,
 * unload hides the name at once and waits for the last reference, a reload gets a new id, an
 * adapter of another model is refused by eng_forward.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "engine/engine.h"
#include "tests/tap.h"
#include "tests/test_engine_model.h"

#define MAX_SEQ 64
#define BS      4

static const char *const MODS[7] = {"q_proj",    "k_proj",  "v_proj",   "o_proj",
                                    "gate_proj", "up_proj", "down_proj"};

/* Write a random F32 adapter of rank r for spec sp into dir, targeting the modules in mask. */
static int write_adapter(const tm_spec *sp, const char *dir, int r, double alpha, int rslora,
                         unsigned mask, uint32_t seed) {
    mkdir(dir, 0777);
    char path[1024];
    snprintf(path, sizeof path, "%s/adapter_config.json", dir);
    FILE *f = fopen(path, "w");
    if (!f) return -1;
    fprintf(f,
            "{\"peft_type\": \"LORA\", \"r\": %d, \"lora_alpha\": %g, \"use_rslora\": %s, "
            "\"bias\": \"none\", \"target_modules\": [",
            r, alpha, rslora ? "true" : "false");
    for (int m = 0, k = 0; m < 7; m++)
        if (mask & (1u << m)) fprintf(f, "%s\"%s\"", k++ ? ", " : "", MODS[m]);
    fprintf(f, "]}\n");
    fclose(f);
    int qd = sp->heads * sp->head_dim, kvd = sp->kv_heads * sp->head_dim;
    int in[7] = {sp->hidden, sp->hidden, sp->hidden, qd, sp->hidden, sp->hidden, sp->inter};
    int out[7] = {qd, kvd, kvd, sp->hidden, sp->inter, sp->inter, sp->hidden};
    size_t cap = 1 << 16, hl = 0, off = 0;
    char *hdr = malloc(cap);
    hl += (size_t)snprintf(hdr, cap, "{");
    for (int l = 0; l < sp->layers; l++)
        for (int m = 0; m < 7; m++)
            for (int w = 0; mask & (1u << m) && w < 2; w++) {
                int rows = w ? out[m] : r, cols = w ? r : in[m];
                size_t nb = (size_t)rows * (size_t)cols * 4;
                hl += (size_t)snprintf(
                    hdr + hl, cap - hl,
                    "%s\"base_model.model.model.layers.%d.%s.%s.lora_%c.weight\": {\"dtype\": "
                    "\"F32\", \"shape\": [%d, %d], \"data_offsets\": [%zu, %zu]}",
                    hl > 1 ? ", " : "", l, m < 4 ? "self_attn" : "mlp", MODS[m], w ? 'B' : 'A',
                    rows, cols, off, off + nb);
                off += nb;
            }
    hl += (size_t)snprintf(hdr + hl, cap - hl, "}");
    while (hl % 8) hdr[hl++] = ' ';
    snprintf(path, sizeof path, "%s/adapter_model.safetensors", dir);
    f = fopen(path, "wb");
    if (!f) return free(hdr), -1;
    uint64_t h64 = hl;
    fwrite(&h64, 8, 1, f);
    fwrite(hdr, 1, hl, f);
    free(hdr);
    uint32_t st = seed * 2654435761u + 1u;
    for (int l = 0; l < sp->layers; l++)
        for (int m = 0; m < 7; m++)
            for (int w = 0; mask & (1u << m) && w < 2; w++) {
                int rows = w ? out[m] : r, cols = w ? r : in[m];
                float sc = w ? 0.1f : 1.0f / sqrtf((float)cols);
                for (long k = 0; k < (long)rows * cols; k++) {
                    float v = sc * ((float)(tm_rand(&st) >> 8) * (2.0f / 16777216.0f) - 1.0f);
                    fwrite(&v, 4, 1, f);
                }
            }
    return fclose(f);
}

/* ---------------------------------------------------------------- batch invariance */

typedef struct runner {
    eng_ctx *c;
    kv_pool kv;
} runner;

static int runner_init(runner *r, eng_model *m, int threads) {
    rs_err e = {0};
    kv_pool_config kc = eng_kv_config(m, BS, KV_F32, 0);
    kc.budget_bytes = kv_block_bytes(&kc) * 8 * (size_t)(MAX_SEQ / BS);
    if (kv_pool_init(&r->kv, &kc, &e)) return TAP_DIAG("kv: %s", e.msg), -1;
    if (eng_ctx_init(&r->c, m, 128, threads, &e)) {
        kv_pool_free(&r->kv);
        return TAP_DIAG("ctx: %s", e.msg), -1;
    }
    return 0;
}

static void runner_free(runner *r) {
    eng_ctx_free(r->c);
    kv_pool_free(&r->kv);
}

enum { NSEQ = 4, STEPS = 4 };

/* One test sequence: its tokens (prompt then fixed "generated" ids), adapter and table. */
typedef struct tseq {
    int32_t tok[MAX_SEQ];
    int n_prompt;
    const eng_lora *lora;
    int32_t blocks[MAX_SEQ / BS];
} tseq;

static void tables(runner *r, tseq *s, int n) {
    for (int i = 0; i < n; i++)
        for (int b = 0; b < MAX_SEQ / BS; b++) s[i].blocks[b] = kv_alloc(&r->kv);
}

/* Step k of sequence i: step 0 its whole prompt (sequence 3: its first 7 tokens, then the
 * rest at step 1, a prefill chunk beside decode rows), later one decode token. */
static eng_seq step_of(tseq *s, int i, int k, float *logits) {
    int chunked = i == 3, p0, n;
    if (k == 0)
        p0 = 0, n = chunked ? 7 : s->n_prompt;
    else if (chunked && k == 1)
        p0 = 7, n = s->n_prompt - 7;
    else
        p0 = s->n_prompt + k - 1 - chunked, n = 1;
    return (eng_seq){s->tok + p0, n, p0, s->blocks, MAX_SEQ / BS, logits, NULL, s->lora};
}

static void check_mixed(eng_model *m, const eng_lora *a, const eng_lora *b, const char *isa) {
    runner one, all;
    if (runner_init(&one, m, 1) || runner_init(&all, m, 3)) return;
    int vocab = eng_model_config(m)->vocab_size;
    tseq s[NSEQ];
    const eng_lora *which[NSEQ] = {a, NULL, b, a};
    int lens[NSEQ] = {13, 9, 17, 11};
    for (int i = 0; i < NSEQ; i++) {
        uint32_t st = 77u + (uint32_t)i;
        for (int t = 0; t < MAX_SEQ; t++) s[i].tok[t] = (int32_t)(tm_rand(&st) % (uint32_t)vocab);
        s[i].n_prompt = lens[i];
        s[i].lora = which[i];
    }
    size_t vb = (size_t)vocab * sizeof(float);
    float *alone = malloc(vb * NSEQ * STEPS), *mixed = malloc(vb * NSEQ * STEPS);
    int rc = 0;
    rs_err e = {0};
    tables(&one, s, NSEQ);
    for (int i = 0; i < NSEQ; i++) /* each alone, 1 thread */
        for (int k = 0; k < STEPS; k++) {
            eng_seq q = step_of(&s[i], i, k, alone + (size_t)(i * STEPS + k) * vocab);
            rc |= eng_forward(one.c, &one.kv, &q, 1, &e);
        }
    tables(&all, s, NSEQ);
    for (int k = 0; k < STEPS; k++) { /* all in one batch per step, 3 threads */
        eng_seq q[NSEQ];
        for (int i = 0; i < NSEQ; i++)
            q[i] = step_of(&s[i], i, k, mixed + (size_t)(i * STEPS + k) * vocab);
        rc |= eng_forward(all.c, &all.kv, q, NSEQ, &e);
    }
    if (rc) TAP_DIAG("forward: %s", e.msg);
    int bad = -1;
    for (int i = 0; i < NSEQ * STEPS && bad < 0; i++)
        if (memcmp(alone + (size_t)i * vocab, mixed + (size_t)i * vocab, vb)) bad = i;
    TAP_OK(!rc && bad < 0,
           "%s: sequences under A, the base, %s, A batched (prefills, a chunk beside decode rows; "
           "3 threads) "
           "== each alone (1 thread), logits of %d steps bit for bit (first differing: %d)",
           isa, b ? "B" : "the base", STEPS, bad);
    /* and the adapter matters: sequence 0's prompt under the base model gives other logits */
    s[0].lora = NULL;
    eng_seq q = step_of(&s[0], 0, 0, mixed);
    rc = eng_forward(one.c, &one.kv, &q, 1, &e);
    TAP_OK(!rc && memcmp(mixed, alone, vb), "%s: adapter A changes its sequence's logits", isa);
    runner_free(&one);
    runner_free(&all);
    free(alone);
    free(mixed);
}

/* ---------------------------------------------------------------- the registry */

typedef struct unload_arg {
    eng_lora_reg *reg;
    atomic_int done;
    int rc;
} unload_arg;

static void *unload_thread(void *p) {
    unload_arg *u = p;
    rs_err e = {0};
    u->rc = eng_lora_unload(u->reg, "a", &e);
    atomic_store(&u->done, 1);
    return NULL;
}

static void sleep_ms(int ms) {
    struct timespec ts = {0, ms * 1000000L};
    nanosleep(&ts, NULL);
}

static void check_registry(eng_model *m, eng_model *other, const char *dir_a, const char *dir_b) {
    eng_lora_reg *reg;
    rs_err e = {0};
    TAP_OK(eng_lora_reg_init(&reg, m, &e) == 0, "registry init");
    TAP_OK(eng_lora_load(reg, "a", dir_a, &e) == 0, "load a: %s", e.msg);
    TAP_OK(eng_lora_load(reg, "a", dir_b, &e) == RS_EINVAL && strstr(e.msg, "already"),
           "a second adapter named a is refused: %s", e.msg);
    TAP_OK(eng_lora_load(reg, "bad name", dir_b, &e) == RS_EINVAL,
           "a name with a space is refused");
    TAP_OK(eng_lora_load(reg, "b", "/nonexistent/dir", &e) < 0, "a missing directory is refused");
    const eng_lora *h = NULL, *h2 = NULL;
    TAP_OK(eng_lora_acquire(reg, "zzz", &h, &e) == RS_ENOTFOUND && !h, "acquire of zzz: not found");
    TAP_OK(eng_lora_acquire(reg, "a", &h, &e) == 0 && h && !strcmp(eng_lora_name(h), "a"),
           "acquire a");
    uint64_t id0 = h ? eng_lora_id(h) : 0;
    char names[4][ENG_LORA_NAME_MAX];
    TAP_OK(eng_lora_names(reg, names, 4) == 1 && !strcmp(names[0], "a"), "names: [a]");
    unload_arg u = {reg, 0, -99};
    pthread_t t;
    pthread_create(&t, NULL, unload_thread, &u);
    int hidden = 0;
    for (int i = 0; i < 200 && !hidden; i++, sleep_ms(5)) {
        hidden = eng_lora_acquire(reg, "a", &h2, &e) == RS_ENOTFOUND;
        eng_lora_release(h2); /* got one before the unload began: give it back */
        h2 = NULL;
    }
    TAP_OK(hidden, "once unloading starts, acquire of a is RS_ENOTFOUND");
    TAP_OK(h && eng_lora_retain(h) == RS_ENOTFOUND, "and retain is refused");
    TAP_OK(eng_lora_names(reg, names, 4) == 0, "names: [] while a unloads");
    sleep_ms(50);
    TAP_OK(!atomic_load(&u.done), "unload waits while a reference is held");
    eng_lora_release(h);
    pthread_join(t, NULL);
    TAP_OK(u.rc == 0, "unload returns once the reference is released");
    TAP_OK(eng_lora_unload(reg, "a", &e) == RS_ENOTFOUND, "unloading it again: not found");
    h = NULL;
    int rc = eng_lora_load(reg, "a", dir_a, &e);
    if (!rc) rc = eng_lora_acquire(reg, "a", &h, &e);
    uint64_t id1 = h ? eng_lora_id(h) : 0;
    TAP_OK(!rc && id1 != id0, "a reloaded adapter gets a new id (%llu, was %llu)",
           (unsigned long long)id1, (unsigned long long)id0);
    /* an adapter of this model in a forward pass of another model is refused */
    runner r;
    if (!runner_init(&r, other, 1)) {
        int32_t blocks[4] = {kv_alloc(&r.kv), kv_alloc(&r.kv), kv_alloc(&r.kv), kv_alloc(&r.kv)};
        int32_t tok[2] = {1, 2};
        eng_seq q = {tok, 2, 0, blocks, 4, NULL, NULL, h};
        rc = eng_forward(r.c, &r.kv, &q, 1, &e);
        TAP_OK(rc == RS_EINVAL && strstr(e.msg, "another model"),
               "forward refuses an adapter of another model: %s", e.msg);
        runner_free(&r);
    }
    eng_lora_release(h);
    eng_lora_reg_free(reg);
}

int main(void) {
    char dir[1024], dir2[1024], la[1024], lb[1024];
    tm_tmpdir(dir, sizeof dir, "engine_lora_model");
    tm_tmpdir(dir2, sizeof dir2, "engine_lora_model2");
    tm_tmpdir(la, sizeof la, "engine_lora_a");
    tm_tmpdir(lb, sizeof lb, "engine_lora_b");
    tm_spec sp = tm_default();
    rs_err e = {0};
    eng_model *m = NULL, *m2 = NULL;
    if (!TAP_OK(tm_write(&sp, dir) == 0 && eng_model_load(&m, dir, &e) == 0,
                "tiny qwen3 BF16 model: %s", e.msg) ||
        !TAP_OK(tm_write(&sp, dir2) == 0 && eng_model_load(&m2, dir2, &e) == 0, "a second one") ||
        !TAP_OK(write_adapter(&sp, la, 8, 16, 0, 0x7f, 5) == 0 &&
                    write_adapter(&sp, lb, 4, 8, 1, 0x45, 6) == 0,
                "write adapters A (all seven, r 8) and B (q, v, down; r 4, rslora)"))
        return tap_done();
    eng_lora_reg *reg;
    const eng_lora *a = NULL, *b = NULL;
    if (!TAP_OK(eng_lora_reg_init(&reg, m, &e) == 0 && eng_lora_load(reg, "A", la, &e) == 0 &&
                    eng_lora_load(reg, "B", lb, &e) == 0 &&
                    eng_lora_acquire(reg, "A", &a, &e) == 0 &&
                    eng_lora_acquire(reg, "B", &b, &e) == 0,
                "load and acquire A and B: %s", e.msg))
        return tap_done();
    /* A wider model and rank 64: the batched step's low-rank products are big enough to be
     * split over the pool's threads, while each sequence alone stays on the calling thread. */
    tm_spec wide = sp;
    wide.hidden = 256, wide.inter = 512, wide.head_dim = 64, wide.layers = 1, wide.seed = 3;
    char dw[1024], lw[1024];
    tm_tmpdir(dw, sizeof dw, "engine_lora_wide");
    tm_tmpdir(lw, sizeof lw, "engine_lora_wide_a");
    eng_model *mw = NULL;
    eng_lora_reg *regw = NULL;
    const eng_lora *aw = NULL;
    TAP_OK(tm_write(&wide, dw) == 0 && eng_model_load(&mw, dw, &e) == 0 &&
               write_adapter(&wide, lw, 64, 32, 0, 0x7f, 8) == 0 &&
               eng_lora_reg_init(&regw, mw, &e) == 0 && eng_lora_load(regw, "W", lw, &e) == 0 &&
               eng_lora_acquire(regw, "W", &aw, &e) == 0,
           "wide model (hidden 256) and a rank-64 adapter on all seven: %s", e.msg);
    const char *isas[] = {"portable", "avx2", "avx512"};
    for (int i = 0; i < 3; i++) {
        if (!tm_force_isa(m, isas[i])) continue;
        check_mixed(m, a, b, isas[i]);
        char what[64];
        snprintf(what, sizeof what, "%s, wide, pool-split products", isas[i]);
        if (aw) check_mixed(mw, aw, NULL, what);
    }
    unsetenv("RADIXSERVE_ISA");
    eng_lora_release(a);
    eng_lora_release(b);
    eng_lora_reg_free(reg);
    eng_lora_release(aw);
    eng_lora_reg_free(regw);
    eng_model_free(mw);
    check_registry(m, m2, la, lb);
    eng_model_free(m);
    eng_model_free(m2);
    return tap_done();
}
