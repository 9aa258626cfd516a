/*
 * test_engine_forward.c — the forward pass, bit for bit: KV-cache decode == recomputing the whole
 * sequence; a batch == each sequence alone; chunked prefill == unchunked; 1 thread == 3 threads;
 * with F32 and BF16 KV pages, on every kernel table this CPU runs. Also: stories260K greedy from
 * BOS gives the ids of the PyTorch reference, and a malformed batch writes nothing.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/engine.h"
#include "tests/tap.h"
#include "tests/test_engine_model.h"

#define MAX_SEQ 160 /* positions a test sequence may reach */
#define BS      4   /* small pages, so sequences cross many block boundaries */

/* A model, a context and a pool; each sequence gets its own blocks from the pool. */
typedef struct runner {
    int bs; /* block size of the pool */
    eng_model *m;
    eng_ctx *c;
    kv_pool kv;
    int vocab;
} runner;

typedef struct tseq {
    int32_t blocks[MAX_SEQ];
    int n_blocks;
} tseq;

static int runner_init_bs(runner *r, eng_model *m, int kvdt, int bs, int threads, int max_tokens) {
    rs_err e = {0};
    r->bs = bs;
    r->m = m;
    r->vocab = eng_model_config(m)->vocab_size;
    kv_pool_config kc = eng_kv_config(m, bs, kvdt, 0);
    kc.budget_bytes = kv_block_bytes(&kc) * 4 * (size_t)((MAX_SEQ + bs - 1) / bs);
    if (kv_pool_init(&r->kv, &kc, &e)) return TAP_DIAG("kv: %s", e.msg), -1;
    if (eng_ctx_init(&r->c, m, max_tokens, threads, &e)) {
        kv_pool_free(&r->kv);
        TAP_DIAG("ctx: %s", e.msg);
        return -1;
    }
    return 0;
}

static int runner_init(runner *r, eng_model *m, int kvdt, int threads, int max_tokens) {
    return runner_init_bs(r, m, kvdt, BS, threads, max_tokens);
}

static void runner_free(runner *r) {
    eng_ctx_free(r->c);
    kv_pool_free(&r->kv);
}

static void seq_alloc(runner *r, tseq *s) {
    s->n_blocks = (MAX_SEQ + r->bs - 1) / r->bs;
    for (int i = 0; i < s->n_blocks; i++) s->blocks[i] = kv_alloc(&r->kv);
}

/* Forward tokens[0, n) of s at pos0; logits of the last into out (may be NULL). */
static int run1(runner *r, tseq *s, const int32_t *tokens, int n, int pos0, float *out) {
    rs_err e = {0};
    eng_seq q = {tokens, n, pos0, s->blocks, s->n_blocks, out, NULL, NULL};
    int rc = eng_forward(r->c, &r->kv, &q, 1, &e);
    if (rc) TAP_DIAG("forward: %s", e.msg);
    return rc;
}

static void make_tokens(int32_t *t, int n, int vocab, uint32_t seed) {
    for (int i = 0; i < n; i++) t[i] = (int32_t)(tm_rand(&seed) % (uint32_t)vocab);
}

/* Bytes of the pool's first nb blocks equal in two pools. */
static int same_pages(const kv_pool *a, const kv_pool *b, int nb) {
    return !memcmp(a->mem, b->mem, (size_t)nb * a->block_bytes);
}

/* Two runners of one model, one sequence and one logits row each: the two ways of computing. */
typedef struct pair {
    runner a, b;
    tseq sa, sb;
    float *la, *lb;
    size_t vbytes; /* bytes of a logits row */
} pair;

static int pair_init(pair *p, eng_model *m, int kvdt, int bs, int threads_b, int max_b, int n) {
    if (runner_init_bs(&p->a, m, kvdt, bs, 2, n)) return -1;
    if (runner_init_bs(&p->b, m, kvdt, bs, threads_b, max_b)) {
        runner_free(&p->a);
        return -1;
    }
    p->vbytes = (size_t)p->a.vocab * sizeof(float);
    p->la = malloc(p->vbytes);
    p->lb = malloc(p->vbytes);
    seq_alloc(&p->a, &p->sa);
    seq_alloc(&p->b, &p->sb);
    return 0;
}

static void pair_free(pair *p) {
    free(p->la);
    free(p->lb);
    runner_free(&p->a);
    runner_free(&p->b);
}

/* Decode token by token == a fresh full-sequence forward at every step (n tokens, block size
 * bs: 4 crosses many pages; 128 puts many attention chunks inside one page). */
static void check_decode(eng_model *m, int kvdt, const char *what, int bs, int N) {
    enum { P = 5 };
    pair q;
    if (pair_init(&q, m, kvdt, bs, 2, N, N)) return;
    int32_t tok[MAX_SEQ];
    make_tokens(tok, N, q.a.vocab, 7);
    int bad = 0, rc = run1(&q.a, &q.sa, tok, P, 0, q.la);
    for (int t = P - 1; t < N && !rc; t++) {
        if (t >= P) rc |= run1(&q.a, &q.sa, tok + t, 1, t, q.la);
        rc |= run1(&q.b, &q.sb, tok, t + 1, 0, q.lb);
        bad += memcmp(q.la, q.lb, q.vbytes) != 0;
    }
    TAP_OK(!rc && !bad,
           "%s: KV-cache decode == full recompute at each of %d steps, block size %d (%d differ)",
           what, N - P + 1, bs, bad);
    pair_free(&q);
}

/* Chunks of 7 on 1 thread == one call on 2 threads: same logits, same KV bytes. */
static void check_chunked(eng_model *m, int kvdt, const char *what) {
    enum { N = 33 };
    pair q;
    if (pair_init(&q, m, kvdt, BS, 1, 7, N)) return;
    int32_t tok[N];
    make_tokens(tok, N, q.a.vocab, 11);
    int rc = run1(&q.a, &q.sa, tok, N, 0, q.la);
    for (int p = 0; p < N && !rc; p += 7) {
        int n = N - p < 7 ? N - p : 7;
        rc = run1(&q.b, &q.sb, tok + p, n, p, p + n == N ? q.lb : NULL);
    }
    TAP_OK(!rc && !memcmp(q.la, q.lb, q.vbytes), "%s: chunked prefill (7) == whole: logits", what);
    TAP_OK(!rc && same_pages(&q.a.kv, &q.b.kv, (N + BS - 1) / BS),
           "%s: chunked prefill: same KV bytes", what);
    pair_free(&q);
}

/*
 * Three sequences in different states (a fresh prefill, a decode step after 20 cached tokens, a
 * chunk after 9 cached tokens), batched with 3 threads vs each alone with 1 thread.
 */
static void check_batch(eng_model *m, int kvdt, const char *what) {
    enum { NA = 13, NB = 21, NC = 15 };
    runner a, b;
    if (runner_init(&a, m, kvdt, 3, 64) || runner_init(&b, m, kvdt, 1, 64)) return;
    int32_t ta[NA], tb[NB], tc[NC];
    make_tokens(ta, NA, a.vocab, 1);
    make_tokens(tb, NB, a.vocab, 2);
    make_tokens(tc, NC, a.vocab, 3);
    size_t vb = (size_t)a.vocab * 4;
    float *l[6];
    for (int i = 0; i < 6; i++) l[i] = malloc(vb);
    tseq s[6];
    for (int i = 0; i < 3; i++) seq_alloc(&a, &s[i]), seq_alloc(&b, &s[3 + i]);
    int rc = 0;
    /* The same prefixes in both pools (same block ids, same calls). */
    rc |= run1(&a, &s[1], tb, NB - 1, 0, NULL) | run1(&b, &s[4], tb, NB - 1, 0, NULL);
    rc |= run1(&a, &s[2], tc, 9, 0, NULL) | run1(&b, &s[5], tc, 9, 0, NULL);
    eng_seq q[3] = {{ta, NA, 0, s[0].blocks, s[0].n_blocks, l[0], NULL, NULL},
                    {tb + NB - 1, 1, NB - 1, s[1].blocks, s[1].n_blocks, l[1], NULL, NULL},
                    {tc + 9, NC - 9, 9, s[2].blocks, s[2].n_blocks, l[2], NULL, NULL}};
    rs_err e = {0};
    rc |= eng_forward(a.c, &a.kv, q, 3, &e);
    rc |= run1(&b, &s[3], ta, NA, 0, l[3]);
    rc |= run1(&b, &s[4], tb + NB - 1, 1, NB - 1, l[4]);
    rc |= run1(&b, &s[5], tc + 9, NC - 9, 9, l[5]);
    int same = !memcmp(l[0], l[3], vb) && !memcmp(l[1], l[4], vb) && !memcmp(l[2], l[5], vb);
    TAP_OK(!rc && same, "%s: batch of 3 (3 threads) == each alone (1 thread): logits", what);
    TAP_OK(!rc && same_pages(&a.kv, &b.kv, a.kv.n_blocks), "%s: batch == alone: KV bytes", what);
    for (int i = 0; i < 6; i++) free(l[i]);
    runner_free(&a);
    runner_free(&b);
}

/*
 * Four sequences whose tables start with the same cached blocks (requests sharing a system
 * prompt) and one that shares nothing, placed between them: a prefill chunk each, then decode
 * steps, batched (the shared rows are grouped to read the prefix once) == each alone.
 */
static void check_shared_prefix(eng_model *m, int kvdt, const char *what) {
    enum { NS = 5, P = 5 * BS, NEW = 3, STEPS = 3, NB = 10, LONE = 2 };
    runner r[2];
    if (runner_init(&r[0], m, kvdt, 2, 64)) return;
    if (runner_init(&r[1], m, kvdt, 1, 64)) {
        runner_free(&r[0]);
        return;
    }
    int32_t pre[P], lone[P], tok[NS][NEW + STEPS];
    make_tokens(pre, P, r[0].vocab, 21);
    make_tokens(lone, P, r[0].vocab, 22);
    for (int i = 0; i < NS; i++) make_tokens(tok[i], NEW + STEPS, r[0].vocab, 30 + (uint32_t)i);
    size_t vb = (size_t)r[0].vocab * sizeof(float);
    float *l[2][NS];
    tseq s[2][NS];
    int rc = 0;
    for (int k = 0; k < 2; k++) { /* the same calls in both pools: the same block ids */
        for (int i = 0; i < NS; i++) {
            l[k][i] = malloc(vb);
            s[k][i].n_blocks = NB;
            for (int b = 0; b < NB; b++)
                s[k][i].blocks[b] =
                    i == LONE || i == 0 || b >= P / BS ? kv_alloc(&r[k].kv) : s[k][0].blocks[b];
        }
        rc |= run1(&r[k], &s[k][0], pre, P, 0, NULL);
        rc |= run1(&r[k], &s[k][LONE], lone, P, 0, NULL);
    }
    int same = 1;
    for (int step = 0; step <= STEPS && !rc; step++) {
        int n = step ? 1 : NEW, pos = step ? P + NEW + step - 1 : P;
        eng_seq q[NS];
        for (int i = 0; i < NS; i++)
            q[i] = (eng_seq){tok[i] + pos - P, n, pos, s[0][i].blocks, NB, l[0][i], NULL, NULL};
        rs_err e = {0};
        rc |= eng_forward(r[0].c, &r[0].kv, q, NS, &e);
        for (int i = 0; i < NS; i++) {
            rc |= run1(&r[1], &s[1][i], tok[i] + pos - P, n, pos, l[1][i]);
            same &= !memcmp(l[0][i], l[1][i], vb);
        }
    }
    TAP_OK(!rc && same, "%s: 4 rows sharing a cached prefix + 1 not, batched == alone: logits",
           what);
    TAP_OK(!rc && same_pages(&r[0].kv, &r[1].kv, r[0].kv.n_blocks),
           "%s: shared prefix batched == alone: KV bytes", what);
    for (int k = 0; k < 2; k++) {
        for (int i = 0; i < NS; i++) free(l[k][i]);
        runner_free(&r[k]);
    }
}

static void check_model(eng_model *m, const char *name) {
    const char *kvn[2] = {"f32", "bf16"};
    for (int kvdt = 0; kvdt < 2; kvdt++) {
        char what[128];
        snprintf(what, sizeof what, "%s [%s, kv %s]", name, eng_isa_name(), kvn[kvdt]);
        check_decode(m, kvdt, what, BS, 30);
        check_decode(m, kvdt, what, 128, 150);
        check_chunked(m, kvdt, what);
        check_batch(m, kvdt, what);
        check_shared_prefix(m, kvdt, what);
    }
}

/* Greedy decode through the engine API. */
static int greedy(eng_model *m, int32_t first, int n, int32_t *out) {
    runner r;
    if (runner_init(&r, m, -1, 2, 1)) return -1;
    tseq s;
    seq_alloc(&r, &s);
    float *l = malloc((size_t)r.vocab * 4);
    eng_sampling sp = {.temperature = 0};
    eng_rng rng;
    eng_rng_seed(&rng, 0);
    int32_t cur = first;
    int rc = 0;
    for (int i = 0; i < n && !rc; i++) {
        rc = run1(&r, &s, &cur, 1, i, l);
        cur = out[i] = eng_sample(&sp, &rng, l, r.vocab, &first, 1, out, i, NULL);
    }
    free(l);
    runner_free(&r);
    return rc;
}

/* stories260K from BOS, greedy: the ids the PyTorch reference (tests/refmodel.py) produces for
 * both the HF safetensors and llama2.c's stories260K.bin ("Once upon a time, there was a little
 * girl named Lily. She loved to play outside in the park. ..."). */
static const int32_t STORY[60] = {403, 407, 261, 378, 432, 383, 286, 261, 376, 298, 315, 421,
                                  395, 317, 426, 338, 401, 396, 267, 337, 410, 408, 419, 292,
                                  411, 322, 265, 282, 295, 433, 426, 385, 328, 432, 358, 394,
                                  261, 370, 432, 352, 266, 268, 388, 426, 338, 391, 266, 267,
                                  337, 335, 312, 432, 398, 312, 286, 267, 414, 270, 333, 415};

static void check_story(const char *sub) {
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/models/stories260K%s", tm_root(), sub);
    eng_model *m;
    rs_err e = {0};
    if (!TAP_OK(eng_model_load(&m, dir, &e) == 0, "load %s: %s", dir, e.msg)) return;
    int32_t ids[60];
    int rc = greedy(m, 1, 60, ids);
    int k = 0;
    while (k < 60 && ids[k] == STORY[k]) k++;
    TAP_OK(!rc && k == 60,
           "stories260K%s [%s] greedy from BOS = reference story (first %d of 60 "
           "ids agree)",
           sub, eng_isa_name(), k);
    eng_model_free(m);
}

/* A malformed batch is RS_EINVAL and leaves the pages untouched. */
static void check_validation(eng_model *m) {
    runner r;
    if (runner_init(&r, m, -1, 1, 8)) return;
    tseq s;
    seq_alloc(&r, &s);
    int32_t ok[4] = {1, 2, 3, 4}, badtok[2] = {1, 1 << 20}, many[9] = {0};
    unsigned char *before = malloc(r.kv.mem_bytes);
    memcpy(before, r.kv.mem, r.kv.mem_bytes);
    rs_err e = {0};
    eng_seq q = {badtok, 2, 0, s.blocks, s.n_blocks, NULL, NULL, NULL};
    TAP_OK(eng_forward(r.c, &r.kv, &q, 1, &e) == RS_EINVAL, "token id out of range: %s", e.msg);
    eng_seq q2[2] = {{ok, 4, 0, s.blocks, s.n_blocks, NULL, NULL, NULL},
                     {ok, 4, 60, s.blocks, 1, NULL, NULL, NULL}};
    TAP_OK(eng_forward(r.c, &r.kv, q2, 2, &e) == RS_EINVAL, "block table too short: %s", e.msg);
    eng_seq q3 = {many, 9, 0, s.blocks, s.n_blocks, NULL, NULL, NULL};
    TAP_OK(eng_forward(r.c, &r.kv, &q3, 1, &e) == RS_EINVAL, "more tokens than max_tokens: %s",
           e.msg);
    int32_t badblk[2] = {0, 99999};
    eng_seq q4 = {ok, 4, 2, badblk, 2, NULL, NULL, NULL};
    TAP_OK(eng_forward(r.c, &r.kv, &q4, 1, &e) == RS_EINVAL, "block id out of range: %s", e.msg);
    eng_seq q5 = {ok, 0, 0, s.blocks, s.n_blocks, NULL, NULL, NULL};
    TAP_OK(eng_forward(r.c, &r.kv, &q5, 1, &e) == RS_EINVAL, "zero tokens: %s", e.msg);
    TAP_OK(!memcmp(before, r.kv.mem, r.kv.mem_bytes), "no page written by a rejected batch");
    free(before);
    runner_free(&r);
}

int main(void) {
    char dir[1024];
    tm_tmpdir(dir, sizeof dir, "engine_forward_qwen3");
    tm_spec sp = tm_default();
    rs_err e = {0};
    eng_model *q3 = NULL, *q2 = NULL;
    if (!TAP_OK(tm_write(&sp, dir) == 0, "write tiny qwen3 BF16 model") ||
        !TAP_OK(eng_model_load(&q3, dir, &e) == 0, "load it: %s", e.msg))
        return tap_done();
    sp.arch = "qwen2";
    sp.dtype = ENG_F32;
    sp.tie = 1;
    tm_tmpdir(dir, sizeof dir, "engine_forward_qwen2");
    if (!TAP_OK(tm_write(&sp, dir) == 0 && eng_model_load(&q2, dir, &e) == 0,
                "tiny qwen2 F32 tied model: %s", e.msg))
        return tap_done();
    const char *isas[] = {"portable", "avx2", "avx512"};
    for (int i = 0; i < 3; i++) {
        if (!tm_force_isa(q3, isas[i])) continue;
        check_model(q3, "qwen3 bf16");
        check_model(q2, "qwen2 f32");
        check_story("");
        check_story("/bf16");
    }
    unsetenv("RADIXSERVE_ISA");
    check_validation(q3);
    eng_model_free(q3);
    eng_model_free(q2);
    return tap_done();
}
