/*
 * test_engine_quant.c — block-quantized weights:
 *   - F32 -> F16 rounding: every half round-trips, every midpoint between neighbours rounds to
 *     the even one, overflow and underflow thresholds;
 *   - quantize -> dequantize error bounds per format (Q8_0 / Q4_0 per element from the scale,
 *     Q4_K / Q6_K as RMS error), all-zero and constant blocks;
 *   - qmatmul of every kernel table this CPU runs (forced by RADIXSERVE_ISA) against the scalar
 *     reference eng_qdot_ref, for every format at M = 1, 3, 7, 64, odd N, odd block counts:
 *     the portable and AVX-512 tables bit for bit, the AVX2 table within 2e-6 x
 *     sum|w a| per element (the integer block sums are exact, the float sums add in another
 *     order), and each table bit for bit invariant to M (each row alone) and to column splits;
 *   - eng_model_quantize: the per-tensor types of the q8_0 / q4_k_m / q4_0 mixes (use_more_bits
 *     layers, LM head Q6_K, fallback to Q8_0 for rows not a multiple of 256 and to the stored
 *     type for rows not a multiple of 32) on stories260K and a random model with 256-wide rows,
 *     and the quantized forward pass close to the F32 one;
 *   - stories260K at Q8_0 keeps the F32 greedy story for >= 48 tokens; perplexity of each
 *     format on a story F32 samples (temperature 1) within 2% (Q8_0) / 15% (Q4_K_M) of F32's.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/internal.h"
#include "engine/kernels.h"
#include "tests/tap.h"
#include "tests/test_engine_model.h"

/* ---------------------------------------------------------------- helpers */

static double urand(uint64_t *s) {
    *s = *s * 6364136223846793005ull + 1442695040888963407ull;
    return (double)(*s >> 11) / 9007199254740992.0;
}

/* Roughly normal values (sum of 4 uniforms), with an occasional outlier as real weights have. */
static float nrand(uint64_t *s) {
    double v = urand(s) + urand(s) + urand(s) + urand(s) - 2.0;
    if (urand(s) < 0.01) v *= 8;
    return (float)v;
}

static float *rvec(size_t n, uint64_t seed, float scale) {
    float *v = malloc(n * sizeof *v);
    for (size_t i = 0; i < n; i++) v[i] = scale * nrand(&seed);
    return v;
}

static const eng_dtype qtypes[] = {ENG_Q8_0, ENG_Q4_0, ENG_Q4_K, ENG_Q6_K};

/* ---------------------------------------------------------------- F16 */

static void test_f16(void) {
    int trip = 1, mid = 1;
    for (uint32_t h = 0; h < 0x10000u; h++) {
        float f = eng_f16_to_f32((uint16_t)h);
        if ((h & 0x7c00u) == 0x7c00u && (h & 0x3ffu)) continue; /* NaN */
        if (eng_f32_to_f16(f) != h) trip = 0;
        /* the midpoint towards the next half (same sign, larger magnitude) rounds to even */
        if ((h & 0x7fffu) >= 0x7bffu) continue;
        double next = eng_f16_to_f32((uint16_t)(h + 1));
        float m = (float)(((double)f + next) / 2);
        uint16_t want = (h & 1u) ? (uint16_t)(h + 1) : (uint16_t)h;
        if (eng_f32_to_f16(m) != want) mid = 0;
    }
    TAP_OK(trip, "every non-NaN half round-trips through F32");
    TAP_OK(mid, "every midpoint between neighbouring halves rounds to the even one");
    TAP_OK(eng_f32_to_f16(65519.0f) == 0x7bff && eng_f32_to_f16(65520.0f) == 0x7c00 &&
               eng_f32_to_f16(-1e9f) == 0xfc00 && eng_f32_to_f16(ldexpf(1, -25)) == 0 &&
               eng_f32_to_f16(ldexpf(1.5f, -25)) == 1 && (eng_f32_to_f16(NAN) & 0x7fff) > 0x7c00,
           "overflow to infinity at 65520, underflow ties to zero, NaN stays NaN");
}

/* ---------------------------------------------------------------- quantize / dequantize */

static void test_roundtrip(eng_dtype t) {
    const size_t n = 256 * 64;
    float *x = rvec(n, 77u + (uint64_t)t, 0.05f), *y = malloc(n * sizeof *y);
    void *q = malloc(eng_row_bytes(t, n));
    eng_quantize_row(t, x, q, n);
    eng_dequant_row(t, q, 0, y, n);
    double se = 0, sx = 0, worst = 0; /* worst |err| / the block's step */
    for (size_t b = 0; b < n / 32; b++) {
        float amax = 0;
        for (int j = 0; j < 32; j++) amax = fmaxf(amax, fabsf(x[b * 32 + j]));
        for (int j = 0; j < 32; j++) {
            double err = fabs((double)x[b * 32 + j] - y[b * 32 + j]);
            se += err * err;
            sx += (double)x[b * 32 + j] * x[b * 32 + j];
            double step = t == ENG_Q8_0 ? amax / 127.0 : amax / 8.0;
            if (amax > 0 && err / step > worst) worst = err / step;
        }
    }
    double rel = sqrt(se / sx);
    /* per element: Q8_0 half a step, Q4_0 one step (the value opposite the maximum clamps to
     * 7), both plus the F16 rounding of the scale; K-quants: RMS error bounds measured with
     * margin (ggml's reference quantizers reach about 0.085 and 0.02 on such data) */
    if (t == ENG_Q8_0 || t == ENG_Q4_0)
        TAP_OK(worst <= (t == ENG_Q8_0 ? 0.5 : 1.0) * 1.07,
               "%s: |error| <= %s of the block's step "
               "(worst %.3f, rms %.4f)",
               eng_dtype_name(t), t == ENG_Q8_0 ? "1/2" : "1", worst, rel);
    else
        TAP_OK(rel < (t == ENG_Q4_K ? 0.11 : 0.03), "%s: relative RMS error %.4f",
               eng_dtype_name(t), rel);
    /* an all-zero and a constant super-block dequantize exactly */
    for (size_t i = 0; i < 256; i++) x[i] = 0, x[256 + i] = 0.25f;
    eng_quantize_row(t, x, q, 512);
    eng_dequant_row(t, q, 0, y, 512);
    int exact = 1;
    for (size_t i = 0; i < 512; i++) exact &= fabsf(y[i] - x[i]) <= (i < 256 ? 0 : 0.25f * 0.01f);
    TAP_OK(exact, "%s: zero blocks give zeros, constant blocks their value", eng_dtype_name(t));
    free(x);
    free(y);
    free(q);
}

/* ---------------------------------------------------------------- kernels */

typedef struct qcase {
    eng_dtype t;
    int M, K, N;
    void *W;       /* N rows quantized */
    float *x;      /* M x K activations */
    eng_qact a;    /* x quantized */
    double *bound; /* per element: 2e-6 x sum over k of |w_k| |a_k| (+ Q4_K's min terms) */
} qcase;

static void qcase_make(qcase *c, eng_dtype t, int M, int K, int N, uint64_t seed) {
    *c = (qcase){.t = t, .M = M, .K = K, .N = N};
    float *w = rvec((size_t)N * K, seed, 0.02f), *wd = malloc((size_t)K * sizeof *wd);
    c->x = rvec((size_t)M * K, seed + 1, 1.0f);
    size_t rb = eng_row_bytes(t, (size_t)K);
    c->W = malloc(rb * (size_t)N);
    for (int n = 0; n < N; n++)
        eng_quantize_row(t, w + (size_t)n * K, (char *)c->W + (size_t)n * rb, (size_t)K);
    c->a = (eng_qact){malloc((size_t)M * K), malloc((size_t)M * K / 32 * sizeof(float)),
                      malloc((size_t)M * K / 32 * sizeof(float)),
                      malloc((size_t)M * K / 16 * sizeof(int32_t)), K};
    eng_quant_act_rows(&c->a, c->x, 0, M);
    c->bound = malloc((size_t)M * N * sizeof(double));
    for (int n = 0; n < N; n++) {
        eng_dequant_row(t, c->W, (size_t)n, wd, (size_t)K);
        float wmax = 0; /* Q4_K: the min term is at most the row's largest |value| per element */
        for (int k = 0; k < K; k++) wmax = fmaxf(wmax, fabsf(wd[k]));
        for (int m = 0; m < M; m++) {
            double s = 0;
            for (int k = 0; k < K; k++) {
                double av = (double)c->a.d[(size_t)m * (K / 32) + (size_t)(k / 32)] *
                            abs(c->a.qs[(size_t)m * K + (size_t)k]);
                s += av * (fabs(wd[k]) + (t == ENG_Q4_K ? 2.0 * wmax : 0.0));
            }
            c->bound[(size_t)m * N + (size_t)n] = 2e-6 * s + 1e-30;
        }
    }
    free(w);
    free(wd);
}

static void qcase_free(qcase *c) {
    free(c->W);
    free(c->x);
    free(c->a.qs);
    free(c->a.d);
    free(c->a.dsum);
    free(c->a.qneg);
    free(c->bound);
}

/* The activation rows [m0, m0 + M) of c as their own eng_qact (pointers into c's). */
static eng_qact rows_of(const qcase *c, int m0) {
    int nb = c->K / 32;
    return (eng_qact){c->a.qs + (size_t)m0 * c->K, c->a.d + (size_t)m0 * nb,
                      c->a.dsum + (size_t)m0 * nb, c->a.qneg + (size_t)m0 * nb * 2, c->K};
}

static void test_qshape(const eng_kernels *k, eng_dtype t, int M, int K, int N) {
    qcase c;
    qcase_make(&c, t, M, K, N, 1000u + (uint64_t)(t * 131 + M * 7 + K));
    size_t rb = eng_row_bytes(t, (size_t)K);
    float *y = malloc((size_t)M * N * sizeof *y), *y1 = malloc((size_t)N * sizeof *y1);
    k->qmatmul(y, N, &c.a, M, c.W, t, 0, N);
    double worst = 0;
    int exact = 1, alone = 1, split = 1;
    for (int m = 0; m < M; m++)
        for (int n = 0; n < N; n++) {
            float ref = eng_qdot_ref(t, (const char *)c.W + (size_t)n * rb, &c.a, m);
            float got = y[(size_t)m * N + n];
            exact &= got == ref;
            double r = fabs((double)got - ref) / c.bound[(size_t)m * N + n];
            if (!(r <= worst)) worst = r; /* NaN counts as worst */
        }
    for (int m = 0; m < M; m++) { /* each row alone, and in pieces of columns */
        eng_qact one = rows_of(&c, m);
        k->qmatmul(y1, N, &one, 1, c.W, t, 0, N);
        alone &= !memcmp(y1, y + (size_t)m * N, (size_t)N * sizeof *y1);
        int cut = 1 + (m * 5) % (N - 1);
        k->qmatmul(y1, N, &one, 1, c.W, t, cut, N);
        k->qmatmul(y1, N, &one, 1, c.W, t, 0, cut);
        split &= !memcmp(y1, y + (size_t)m * N, (size_t)N * sizeof *y1);
    }
    const char *tn = eng_dtype_name(t);
    if (!strcmp(k->name, "portable") || !strcmp(k->name, "avx512"))
        TAP_OK(exact, "%s %s M=%d K=%d N=%d: bit for bit the scalar reference", k->name, tn, M, K,
               N);
    else
        TAP_OK(worst <= 1.0,
               "%s %s M=%d K=%d N=%d: within 2e-6 x sum|w a| of the reference "
               "(worst %.3g of the bound)",
               k->name, tn, M, K, N, worst);
    TAP_OK(alone && split, "%s %s M=%d K=%d N=%d: rows alone and column splits bit-identical",
           k->name, tn, M, K, N);
    free(y);
    free(y1);
    qcase_free(&c);
}

static void test_kernels(void) {
    static const char *const isas[] = {"portable", "avx2", "avx512", "avx512bf16"};
    for (int i = 0; i < (int)(sizeof isas / sizeof isas[0]); i++) {
        setenv("RADIXSERVE_ISA", isas[i], 1);
        const eng_kernels *k;
        rs_err e = {0};
        if (eng_kernels_select(&k, &e)) { /* this CPU lacks it */
            tap_skip(e.msg);
            continue;
        }
        for (size_t t = 0; t < sizeof qtypes / sizeof qtypes[0]; t++) {
            int kq = qtypes[t] == ENG_Q4_K || qtypes[t] == ENG_Q6_K;
            /* 96: an odd number of blocks; 2080: 65 blocks, past one K chunk of AVX-512's Q8_0 */
            int Ks[3] = {kq ? 256 : 96, kq ? 768 : 1024, kq ? 2304 : 2080};
            int Ms[4] = {1, 3, 7, 64}; /* 3: AVX-512 Q8_0's unpacked path at its widest */
            for (int a = 0; a < 4; a++)
                for (int b = 0; b < 3; b++) test_qshape(k, qtypes[t], Ms[a], Ks[b], 37);
        }
    }
    unsetenv("RADIXSERVE_ISA");
}

/* ---------------------------------------------------------------- model mixes */

static int load_q(eng_model **m, const char *dir, eng_weights w) {
    rs_err e = {0};
    if (eng_model_load(m, dir, &e)) return TAP_DIAG("load %s: %s", dir, e.msg), -1;
    if (eng_model_quantize(*m, w, 2, NULL, NULL, &e)) {
        TAP_DIAG("quantize: %s", e.msg);
        eng_model_free(*m);
        return -1;
    }
    return 0;
}

static void test_mix_stories(void) {
    char dir[512];
    snprintf(dir, sizeof dir, "%s/models/stories260K", tm_root());
    eng_model *m;
    if (load_q(&m, dir, ENG_WEIGHTS_Q4_K_M)) return;
    /* hidden 64 and intermediate 172: no row is a multiple of 256; 172 not of 32 */
    int ok = m->embed.dtype == ENG_Q8_0 && m->lm_head.data == m->embed.data;
    for (int l = 0; l < m->cfg.n_layers; l++) {
        const eng_layer *L = &m->layers[l];
        ok &= L->q.dtype == ENG_Q8_0 && L->v.dtype == ENG_Q8_0 && L->gate.dtype == ENG_Q8_0 &&
              L->down.dtype == ENG_F32;
    }
    TAP_OK(ok, "stories260K q4_k_m: 64-wide rows fall back to Q8_0, 172-wide ffn_down stays F32, "
               "the tied LM head is the embedding");
    TAP_OK(!strcmp(eng_model_quantization(m), "q4_k_m") && m->st.n_files == 0,
           "the model says q4_k_m and has released its files");
    rs_err e = {0};
    TAP_OK(eng_model_quantize(m, ENG_WEIGHTS_Q8_0, 1, NULL, NULL, &e) == RS_EINVAL &&
               strstr(e.msg, "q4_k_m"),
           "quantizing twice is RS_EINVAL: %s", e.msg);
    eng_model_free(m);
}

/* Greedy-free comparison: logits of one random prompt, quantized vs as stored. */
static double logits_rel_err(eng_model *a, eng_model *b, int n_tok) {
    const eng_model *ms[2] = {a, b};
    const eng_config *c = &a->cfg;
    float *lg[2];
    int32_t *tok = malloc((size_t)n_tok * sizeof *tok);
    uint32_t s = 5;
    for (int i = 0; i < n_tok; i++) tok[i] = (int32_t)(tm_rand(&s) % (uint32_t)c->vocab_size);
    for (int i = 0; i < 2; i++) {
        rs_err e = {0};
        kv_pool_config kc = eng_kv_config(ms[i], 16, KV_F32, 0);
        int nb = (n_tok + 15) / 16;
        kc.budget_bytes = kv_block_bytes(&kc) * (size_t)nb;
        kv_pool kv;
        eng_ctx *ctx;
        int32_t blocks[64];
        lg[i] = malloc((size_t)c->vocab_size * sizeof(float));
        kv_pool_init(&kv, &kc, &e);
        eng_ctx_init(&ctx, ms[i], n_tok, 2, &e);
        for (int j = 0; j < nb; j++) blocks[j] = kv_alloc(&kv);
        eng_seq q = {tok, n_tok, 0, blocks, nb, lg[i], NULL, NULL};
        eng_forward(ctx, &kv, &q, 1, &e);
        eng_ctx_free(ctx);
        kv_pool_free(&kv);
    }
    double se = 0, sr = 0;
    for (int v = 0; v < c->vocab_size; v++) {
        double d = (double)lg[0][v] - lg[1][v];
        se += d * d;
        sr += (double)lg[0][v] * lg[0][v];
    }
    free(lg[0]);
    free(lg[1]);
    free(tok);
    return sqrt(se / sr);
}

/* dst's matrices replaced by F32 copies of q's, dequantized (dst owns them). */
static void dequantized_twin(eng_model *dst, const eng_model *q) {
    eng_mat *d[2 + 7 * 8];
    const eng_mat *s[2 + 7 * 8];
    int n = 0, H = q->cfg.hidden;
    d[n] = &dst->embed, s[n++] = &q->embed;
    d[n] = &dst->lm_head, s[n++] = &q->lm_head;
    for (int l = 0; l < q->cfg.n_layers && l < 8; l++) {
        eng_layer *D = &dst->layers[l];
        const eng_layer *Q = &q->layers[l];
        eng_mat *dd[7] = {&D->q, &D->k, &D->v, &D->o, &D->gate, &D->up, &D->down};
        const eng_mat *ss[7] = {&Q->q, &Q->k, &Q->v, &Q->o, &Q->gate, &Q->up, &Q->down};
        for (int i = 0; i < 7; i++) d[n] = dd[i], s[n++] = ss[i];
    }
    dst->owned = realloc(dst->owned, (size_t)(dst->n_owned + n) * sizeof *dst->owned);
    for (int i = 0; i < n; i++) {
        /* rows x cols from the position: q/k/v/gate/up/embed/lm_head read hidden columns */
        int l = (i - 2) % 7, cols = i < 2 || (l != 3 && l != 6) ? H
                                    : l == 3                    ? q->cfg.n_heads * q->cfg.head_dim
                                                                : q->cfg.intermediate;
        int rows = i < 2              ? q->cfg.vocab_size
                   : l == 0           ? q->cfg.n_heads * q->cfg.head_dim
                   : l <= 2           ? q->cfg.n_kv_heads * q->cfg.head_dim
                   : l == 3 || l == 6 ? H
                                      : q->cfg.intermediate;
        float *f = malloc((size_t)rows * cols * sizeof *f);
        for (int r = 0; r < rows; r++)
            eng_dequant_row(s[i]->dtype, s[i]->data, (size_t)r, f + (size_t)r * cols, (size_t)cols);
        *d[i] = (eng_mat){f, ENG_F32};
        dst->owned[dst->n_owned++] = f;
    }
}

static void test_mix_wide(void) {
    char dir[512];
    tm_tmpdir(dir, sizeof dir, "engine_quant_wide");
    tm_spec sp = tm_default();
    sp.hidden = 256, sp.inter = 512, sp.layers = 8, sp.heads = 4, sp.kv_heads = 2;
    sp.head_dim = 64, sp.vocab = 320, sp.dtype = ENG_BF16;
    if (!TAP_OK(tm_write(&sp, dir) == 0, "write a random qwen3 model with 256-wide rows")) return;
    eng_model *src, *m;
    rs_err e = {0};
    if (!TAP_OK(eng_model_load(&src, dir, &e) == 0, "load it: %s", e.msg)) return;
    static const eng_weights ws[] = {ENG_WEIGHTS_Q8_0, ENG_WEIGHTS_Q4_K_M, ENG_WEIGHTS_Q4_0};
    for (int i = 0; i < 3; i++) {
        if (load_q(&m, dir, ws[i])) continue;
        int ok = 1;
        for (int l = 0; l < 8; l++) {
            const eng_layer *L = &m->layers[l];
            int more = l < 1 || l >= 7 || (l - 1) % 3 == 2; /* use_more_bits(l, 8): 0, 3, 6, 7 */
            eng_dtype base = ws[i] == ENG_WEIGHTS_Q8_0   ? ENG_Q8_0
                             : ws[i] == ENG_WEIGHTS_Q4_0 ? ENG_Q4_0
                                                         : ENG_Q4_K;
            eng_dtype vd = ws[i] == ENG_WEIGHTS_Q4_K_M && more ? ENG_Q6_K : base;
            ok &= L->q.dtype == base && L->k.dtype == base && L->o.dtype == base &&
                  L->gate.dtype == base && L->up.dtype == base && L->v.dtype == vd &&
                  L->down.dtype == vd;
        }
        eng_dtype head = ws[i] == ENG_WEIGHTS_Q8_0 ? ENG_Q8_0 : ENG_Q6_K;
        ok &=
            m->lm_head.dtype == head && m->embed.dtype == (ws[i] == ENG_WEIGHTS_Q8_0   ? ENG_Q8_0
                                                           : ws[i] == ENG_WEIGHTS_Q4_0 ? ENG_Q4_0
                                                                                       : ENG_Q4_K);
        TAP_OK(ok,
               "%s: per-tensor types as llama.cpp's mix (attn_v/ffn_down Q6_K in layers 0, "
               "3, 6, 7 for q4_k_m; LM head %s)",
               eng_weights_name(ws[i]), eng_dtype_name(head));
        eng_model *twin;
        if (eng_model_load(&twin, dir, &e)) continue;
        dequantized_twin(twin, m);
        double r = logits_rel_err(twin, m, 40), r0 = logits_rel_err(src, m, 40);
        TAP_OK(r < 0.05,
               "%s: logits of a 40-token prompt within 5%% relative RMS (activation rounding) of "
               "the same weights "
               "dequantized to F32 (%.4f; %.4f from BF16)",
               eng_weights_name(ws[i]), r, r0);
        eng_model_free(twin);
        eng_model_free(m);
    }
    eng_model_free(src);
}

/* ---------------------------------------------------------------- stories260K */

/* One sequence decoded token by token. */
typedef struct dec {
    eng_ctx *ctx;
    kv_pool kv;
    int32_t blocks[64];
    float *logits;
    int vocab;
} dec;

static int dec_init(dec *d, const eng_model *m, int n_pos) {
    rs_err e = {0};
    kv_pool_config kc = eng_kv_config(m, 16, -1, 0);
    kc.budget_bytes = kv_block_bytes(&kc) * (size_t)((n_pos + 15) / 16);
    d->vocab = m->cfg.vocab_size;
    d->logits = malloc((size_t)d->vocab * sizeof(float));
    if (kv_pool_init(&d->kv, &kc, &e) || eng_ctx_init(&d->ctx, m, 1, 2, &e))
        return TAP_DIAG("%s", e.msg), -1;
    for (int j = 0; j < (n_pos + 15) / 16; j++) d->blocks[j] = kv_alloc(&d->kv);
    return 0;
}

static int dec_step(dec *d, int32_t tok, int pos) {
    rs_err e = {0};
    eng_seq q = {&tok, 1, pos, d->blocks, (pos + 16) / 16, d->logits, NULL, NULL};
    return eng_forward(d->ctx, &d->kv, &q, 1, &e);
}

static void dec_free(dec *d) {
    eng_ctx_free(d->ctx);
    kv_pool_free(&d->kv);
    free(d->logits);
}

static double log_softmax_at(const float *l, int n, int id) {
    double mx = l[0], s = 0;
    for (int i = 1; i < n; i++) mx = l[i] > mx ? l[i] : mx;
    for (int i = 0; i < n; i++) s += exp((double)l[i] - mx);
    return (double)l[id] - mx - log(s);
}

enum { STORY = 200 };

/* The F32 model's greedy story (temperature 0) or a sampled one (seeded), from BOS. */
static int story(const eng_model *m, float temp, int32_t *out) {
    dec d;
    if (dec_init(&d, m, STORY + 1)) return -1;
    eng_sampling s = {.temperature = temp, .top_p = 1, .repetition_penalty = 1, .seed = 42};
    eng_rng r;
    eng_rng_seed(&r, 42);
    out[0] = 1;
    for (int p = 0; p < STORY; p++) {
        if (dec_step(&d, out[p], p)) return dec_free(&d), -1;
        out[p + 1] = eng_sample(&s, &r, d.logits, d.vocab, NULL, 0, NULL, 0, NULL);
    }
    dec_free(&d);
    return 0;
}

/* Perplexity of text[1 .. STORY] under m, teacher-forced. */
static double perplexity(const eng_model *m, const int32_t *text) {
    dec d;
    if (dec_init(&d, m, STORY + 1)) return INFINITY;
    double nll = 0;
    for (int p = 0; p < STORY; p++) {
        if (dec_step(&d, text[p], p)) return dec_free(&d), INFINITY;
        nll -= log_softmax_at(d.logits, d.vocab, text[p + 1]);
    }
    dec_free(&d);
    return exp(nll / STORY);
}

static void test_stories(void) {
    char dir[512];
    snprintf(dir, sizeof dir, "%s/models/stories260K", tm_root());
    eng_model *f32, *q8, *q4;
    rs_err e = {0};
    if (eng_model_load(&f32, dir, &e)) {
        TAP_OK(0, "load stories260K: %s", e.msg);
        return;
    }
    if (load_q(&q8, dir, ENG_WEIGHTS_Q8_0)) return;
    if (load_q(&q4, dir, ENG_WEIGHTS_Q4_K_M)) return;
    int32_t a[STORY + 1], b[STORY + 1], text[STORY + 1];
    if (story(f32, 0, a) || story(q8, 0, b)) return;
    int same = 0;
    while (same < STORY && a[same + 1] == b[same + 1]) same++;
    TAP_OK(same >= 48, "stories260K q8_0 keeps the F32 greedy story for %d tokens (>= 48)", same);
    if (story(f32, 1.0f, text)) return;
    double p32 = perplexity(f32, text), p8 = perplexity(q8, text), p4 = perplexity(q4, text);
    TAP_OK(fabs(p8 / p32 - 1) <= 0.02,
           "perplexity of a sampled F32 story: q8_0 %.4f vs F32 %.4f "
           "(within 2%%)",
           p8, p32);
    TAP_OK(fabs(p4 / p32 - 1) <= 0.15, "q4_k_m %.4f vs F32 %.4f (within 15%%)", p4, p32);
    eng_model_free(f32);
    eng_model_free(q8);
    eng_model_free(q4);
}

int main(void) {
    test_f16();
    for (size_t t = 0; t < sizeof qtypes / sizeof qtypes[0]; t++) test_roundtrip(qtypes[t]);
    test_kernels();
    test_mix_stories();
    test_mix_wide();
    test_stories();
    return tap_done();
}
