/*
 * test_engine_kernels.c — every kernel table this CPU runs (the others are skipped, saying so):
 *   - RADIXSERVE_ISA forcing, its errors, and automatic selection;
 *   - matmul against OpenBLAS sgemm on the same rounded inputs (BF16/F16 weights widened to F32;
 *     for the AVX-512 table's BF16 product, the activations rounded to BF16), within
 *     1e-5 x sum|a*w| per element;
 *   - batch invariance bit for bit: M = 1 rows == M = 512 rows, arbitrary n0/n1 splits, odd K
 *     and N (tails), any row count in between;
 *   - attention against a double-precision softmax, and bit-for-bit invariance to where the
 *     blocks are in the pool and to what lies beyond n_pos;
 *   - silu_mul against a double-precision SiLU(g) * u, and bit for bit the same wherever an
 *     element falls in the range (any split, any tail).
 */
#include <cblas.h>
#include <math.h>
#include <immintrin.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/internal.h"
#include "engine/kern_x86.h"
#include "engine/kernels.h"
#include "tests/tap.h"

/* ---------------------------------------------------------------- helpers */

/* Deterministic uniform floats in [-1, 1). */
static float rnd(uint64_t *s) {
    *s = *s * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((double)(*s >> 11) / 9007199254740992.0 * 2.0 - 1.0);
}

/* A random F16 bit pattern with magnitude in [2^-6, 2^4). */
static uint16_t rnd_f16(uint64_t *s) {
    *s = *s * 6364136223846793005ull + 1442695040888963407ull;
    uint32_t r = (uint32_t)(*s >> 33);
    uint32_t sign = r & 1u, exp = 9u + (r >> 1) % 10u, man = (r >> 5) & 0x3ffu;
    return (uint16_t)((sign << 15) | (exp << 10) | man);
}

/* W as stored (wdt) plus its exact F32 widening, for the reference. */
typedef struct weights {
    void *stored;   /* N x K elements of type wdt */
    float *widened; /* N x K floats, the same values */
} weights;

static void weights_make(weights *w, eng_dtype wdt, int N, int K, uint64_t seed) {
    size_t n = (size_t)N * (size_t)K;
    w->stored = malloc(eng_row_bytes(wdt, n));
    w->widened = malloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) {
        if (wdt == ENG_F32)
            ((float *)w->stored)[i] = rnd(&seed);
        else if (wdt == ENG_BF16)
            ((uint16_t *)w->stored)[i] = eng_f32_to_bf16(rnd(&seed));
        else
            ((uint16_t *)w->stored)[i] = rnd_f16(&seed);
        w->widened[i] = eng_load_elem(w->stored, wdt, i);
    }
}

static void weights_free(weights *w) {
    free(w->stored);
    free(w->widened);
}

static float *rnd_vec(size_t n, uint64_t seed) {
    float *v = malloc(n * sizeof *v);
    for (size_t i = 0; i < n; i++) v[i] = rnd(&seed);
    return v;
}

static const char *dtype_name(eng_dtype t) {
    return t == ENG_F32 ? "f32" : t == ENG_BF16 ? "bf16" : "f16";
}

/* ---------------------------------------------------------------- selection */

static int cpu_runs(const char *isa) {
    __builtin_cpu_init();
    int avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
               __builtin_cpu_supports("f16c");
    int avx512 = avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                 __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
                 __builtin_cpu_supports("avx512vnni");
    if (!strcmp(isa, "portable")) return 1;
    if (!strcmp(isa, "avx2")) return avx2;
    if (!strcmp(isa, "avx512")) return avx512;
    return avx512 && __builtin_cpu_supports("avx512bf16");
}

/* The documented policy (engine/kernels.c): AMD CPUs with AVX512-BF16 get avx512bf16. */
static int cpu_is_amd(void) {
    __builtin_cpu_init();
    return __builtin_cpu_is("amd");
}

enum { N_ISAS = 4 };
static const char *const isas[N_ISAS] = {"portable", "avx2", "avx512", "avx512bf16"};

static void test_selection(void) {
    const eng_kernels *k;
    rs_err e = {0};
    unsetenv("RADIXSERVE_ISA");
    const char *best = cpu_runs("avx512bf16") && cpu_is_amd() ? "avx512bf16"
                       : cpu_runs("avx512")                   ? "avx512"
                       : cpu_runs("avx2")                     ? "avx2"
                                                              : "portable";
    int rc = eng_kernels_select(&k, &e);
    TAP_OK(rc == 0 && !strcmp(k->name, best), "automatic selection picks %s (got %s)", best,
           rc == 0 ? k->name : e.msg);
    TAP_OK(!strcmp(eng_isa_name(), best), "eng_isa_name() is %s", eng_isa_name());
    for (int i = 0; i < N_ISAS; i++) {
        setenv("RADIXSERVE_ISA", isas[i], 1);
        e = (rs_err){0};
        rc = eng_kernels_select(&k, &e);
        if (cpu_runs(isas[i]))
            TAP_OK(rc == 0 && !strcmp(k->name, isas[i]) && !strcmp(eng_isa_name(), isas[i]),
                   "RADIXSERVE_ISA=%s forces it", isas[i]);
        else
            TAP_OK(rc == RS_EINVAL && strstr(e.msg, isas[i]) && !strcmp(eng_isa_name(), "invalid"),
                   "RADIXSERVE_ISA=%s on a CPU without it is RS_EINVAL: %s", isas[i], e.msg);
    }
    setenv("RADIXSERVE_ISA", "sse9", 1);
    e = (rs_err){0};
    rc = eng_kernels_select(&k, &e);
    TAP_OK(rc == RS_EINVAL && k == NULL && strstr(e.msg, "sse9"),
           "an unknown RADIXSERVE_ISA is RS_EINVAL naming it: %s", e.msg);
    unsetenv("RADIXSERVE_ISA");
}

/* ---------------------------------------------------------------- matmul */

/* x rounded to BF16 as VCVTNE2PS2BF16 does (nearest even; the test's values are normal). */
static float bf16_round(float x) {
    uint32_t u;
    memcpy(&u, &x, 4);
    u = (u + 0x7fffu + ((u >> 16) & 1u)) & 0xffff0000u;
    memcpy(&x, &u, 4);
    return x;
}

/* The activations the table's product really uses: the avx512bf16 table rounds them to BF16 for
 * BF16 weights; every other table takes them as they are. */
static float *rounded_inputs(const eng_kernels *k, eng_dtype wdt, const float *x, size_t n) {
    float *r = malloc(n * sizeof *r);
    int round = wdt == ENG_BF16 && !strcmp(k->name, "avx512bf16");
    for (size_t i = 0; i < n; i++) r[i] = round ? bf16_round(x[i]) : x[i];
    return r;
}

/* Worst |y - sgemm| / sum|a*w| over all elements. */
static double vs_sgemm(const eng_kernels *k, eng_dtype wdt, const float *x, const weights *w,
                       const float *y, int M, int K, int N, int ldy) {
    float *xr = rounded_inputs(k, wdt, x, (size_t)M * (size_t)K);
    float *ref = malloc((size_t)M * (size_t)N * sizeof *ref);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, N, K, 1.0f, xr, K, w->widened, K, 0.0f,
                ref, N);
    double worst = 0;
    for (int m = 0; m < M; m++)
        for (int n = 0; n < N; n++) {
            double mag = 0;
            for (int i = 0; i < K; i++)
                mag += fabs((double)xr[(size_t)m * K + i] * w->widened[(size_t)n * K + i]);
            double d = fabs((double)y[(size_t)m * ldy + n] - ref[(size_t)m * N + n]);
            double r = mag > 0 ? d / mag : d;
            if (!(r <= worst)) worst = r; /* NaN propagates as a failure */
        }
    free(xr);
    free(ref);
    return worst;
}

/* Rows [m0, m0 + rows) of y computed again with M = rows, compared bit for bit with big. */
static int rows_equal(const eng_kernels *k, const float *x, const weights *w, eng_dtype wdt,
                      const float *big, int ldy, int m0, int rows, int K, int N) {
    float *y = malloc((size_t)rows * (size_t)N * sizeof *y);
    k->matmul(y, N, x + (size_t)m0 * K, rows, w->stored, wdt, K, 0, N);
    int same = 1;
    for (int i = 0; i < rows; i++)
        same &= !memcmp(y + (size_t)i * N, big + (size_t)(m0 + i) * ldy, (size_t)N * sizeof *y);
    free(y);
    return same;
}

/* The whole product again as column pieces [cut[i], cut[i+1]). */
static int split_equal(const eng_kernels *k, const float *x, int M, const weights *w, eng_dtype wdt,
                       const float *big, int ldy, int K, int N, const int *cut, int n_cut) {
    float *y = malloc((size_t)M * (size_t)ldy * sizeof *y);
    for (int i = 0; i + 1 < n_cut; i++)
        k->matmul(y, ldy, x, M, w->stored, wdt, K, cut[i], cut[i + 1]);
    int same = 1;
    for (int m = 0; m < M; m++)
        same &= !memcmp(y + (size_t)m * ldy, big + (size_t)m * ldy, (size_t)N * sizeof *y);
    free(y);
    return same;
}

static void test_matmul_shape(const eng_kernels *k, eng_dtype wdt, int M, int K, int N) {
    weights w;
    weights_make(&w, wdt, N, K, 1000u + (uint64_t)K * 7u + (uint64_t)N);
    float *x = rnd_vec((size_t)M * (size_t)K, 77u + (uint64_t)K);
    int ldy = N + 3; /* rows of y are not packed: the kernel must honour ldy */
    float *big = malloc((size_t)M * (size_t)ldy * sizeof *big);
    k->matmul(big, ldy, x, M, w.stored, wdt, K, 0, N);
    const char *tn = dtype_name(wdt);

    double worst = vs_sgemm(k, wdt, x, &w, big, M, K, N, ldy);
    TAP_OK(worst <= 1e-5, "%s %s M=%d K=%d N=%d: within 1e-5 x sum|a*w| of sgemm (worst %.3g)",
           k->name, tn, M, K, N, worst);

    int ones = 1;
    for (int m = 0; m < M; m++) ones &= rows_equal(k, x, &w, wdt, big, ldy, m, 1, K, N);
    TAP_OK(ones, "%s %s M=%d K=%d N=%d: every row computed alone (M=1) is bit-identical", k->name,
           tn, M, K, N);

    int groups = 1;
    for (int m = 0, rows = 1; m < M; m += rows, rows = rows % 9 + 1) {
        int r = M - m < rows ? M - m : rows;
        groups &= rows_equal(k, x, &w, wdt, big, ldy, m, r, K, N);
    }
    TAP_OK(groups, "%s %s M=%d K=%d N=%d: row groups of 1..9 are bit-identical", k->name, tn, M, K,
           N);

    int cut3[] = {0, N / 3, N / 3 + 1, N};
    int cut_odd[] = {0, 1, 2, 5, 11, N - 1 > 11 ? N - 1 : 11, N};
    int ok = split_equal(k, x, M, &w, wdt, big, ldy, K, N, cut3, 4) &&
             (N < 12 || split_equal(k, x, M, &w, wdt, big, ldy, K, N, cut_odd, 7));
    TAP_OK(ok, "%s %s M=%d K=%d N=%d: column splits n0/n1 are bit-identical", k->name, tn, M, K, N);
    free(big);
    free(x);
    weights_free(&w);
}

/*
 * The AVX2 table's documented arithmetic, in scalar C: lane j (k % 8) accumulates
 * fmaf(x[k], w[k], lane) in k order with the tail zero-padded to a whole step, then
 * ((l0+l4)+(l2+l6)) + ((l1+l5)+(l3+l7)). The kernel must equal it bit for bit, whatever tiles
 * compute it.
 */
static float avx2_spec_dot(const float *x, const float *w, int K) {
    float l[8] = {0};
    int padded = (K + 7) / 8 * 8;
    for (int k = 0; k < padded; k++)
        l[k % 8] = k < K ? fmaf(x[k], w[k], l[k % 8]) : fmaf(0.0f, 0.0f, l[k % 8]);
    return ((l[0] + l[4]) + (l[2] + l[6])) + ((l[1] + l[5]) + (l[3] + l[7]));
}

/* Whether k's matmul of an M x K by N x K product equals `spec` (one element's scalar
 * arithmetic) bit for bit in every element. */
static int matches_spec(const eng_kernels *k, eng_dtype wdt, int M, int K, int N, uint64_t seed,
                        float (*spec)(const float *x, const float *w, int K)) {
    weights w;
    weights_make(&w, wdt, N, K, seed);
    float *x = rnd_vec((size_t)M * K, seed + 1), *y = malloc(sizeof *y * (size_t)M * N);
    k->matmul(y, N, x, M, w.stored, wdt, K, 0, N);
    int same = 1;
    for (int m = 0; m < M; m++)
        for (int n = 0; n < N; n++) {
            float ref = spec(x + (size_t)m * K, w.widened + (size_t)n * K, K);
            same &= !memcmp(&ref, &y[m * N + n], sizeof ref);
        }
    free(x);
    free(y);
    weights_free(&w);
    return same;
}

/* M = 7 takes the AVX2 table's direct path, M = 19 its packed (prefill) path. */
static void test_avx2_spec(const eng_kernels *k, eng_dtype wdt, int M) {
    TAP_OK(matches_spec(k, wdt, M, 203, 13, 4242u, avx2_spec_dot),
           "avx2 %s M=%d matmul equals its scalar specification (8 FMA lanes, fixed tree) bit "
           "for bit",
           dtype_name(wdt), M);
}

/*
 * The AVX-512 table's documented arithmetic for BF16 weights, in scalar C: the weights widened
 * exactly, the activations as they are; over steps of 32 from k = 0, lane j (0..15) takes
 * fma(x[k + 2j], w[k + 2j]) then fma(x[k + 2j + 1], w[k + 2j + 1]), each a single rounding, the
 * K tail zero (fma(0, 0, l) = l); then hsum16's tree: lanes i + i+8, then i + i+4, i + i+2,
 * 0 + 1. Every tile (direct GEMV, prefill GEMM) must give exactly this.
 */
/* Both AVX-512 tables' lane scheme: 16 lanes over steps of 32, lane j taking elements 2j and
 * 2j + 1 of each step as two fmaf (odd_first: element 2j + 1's first), the activations rounded
 * to BF16 first when round_x, the tail zero; then hsum16's tree. */
static float avx512_lanes_spec_dot(const float *x, const float *w, int K, int round_x,
                                   int odd_first) {
    float l[16] = {0};
    int padded = (K + 31) / 32 * 32;
    for (int k = 0; k < padded; k += 2) {
        int j = (k % 32) / 2;
        float xe = k < K ? x[k] : 0, we = k < K ? w[k] : 0;
        float xo = k + 1 < K ? x[k + 1] : 0, wo = k + 1 < K ? w[k + 1] : 0;
        if (round_x) xe = bf16_round(xe), xo = bf16_round(xo);
        if (odd_first) {
            l[j] = fmaf(xo, wo, l[j]);
            l[j] = fmaf(xe, we, l[j]);
        } else {
            l[j] = fmaf(xe, we, l[j]);
            l[j] = fmaf(xo, wo, l[j]);
        }
    }
    float s8[8], s4[4];
    for (int i = 0; i < 8; i++) s8[i] = l[i] + l[i + 8];
    for (int i = 0; i < 4; i++) s4[i] = s8[i] + s8[i + 4];
    return (s4[0] + s4[2]) + (s4[1] + s4[3]);
}

static float avx512_bf16_spec_dot(const float *x, const float *w, int K) {
    return avx512_lanes_spec_dot(x, w, K, 0, 0);
}

/* M = 7 takes the direct tiles, M = 19 and 64 the BF16 GEMM (tails of its 6-row tiles; N = 13
 * leaves a 1-column tail of its 4-column ones). */
static void test_avx512_spec(const eng_kernels *k, int M) {
    TAP_OK(matches_spec(k, ENG_BF16, M, 203, 13, 4545u, avx512_bf16_spec_dot),
           "avx512 bf16 M=%d matmul equals its scalar specification (16 lanes of even-then-odd "
           "FMAs on widened weights, fixed tree) bit for bit",
           M);
}

/*
 * The avx512bf16 table's documented arithmetic for BF16 weights, in scalar C: the activations
 * rounded to BF16 (nearest even); over steps of 32 from k = 0, lane j (0..15) adds
 * x[k + 2j + 1] w[k + 2j + 1], then x[k + 2j] w[k + 2j] (VDPBF16PS's order in Intel's manual:
 * each product is exact in F32, so each addition is one fmaf), the tail zero; then hsum16's
 * tree. Denormal inputs and results are flushed by the instruction; the test's values never
 * make any.
 */
static float avx512bf16_spec_dot(const float *x, const float *w, int K) {
    return avx512_lanes_spec_dot(x, w, K, 1, 1);
}

/* M = 1 and 5 round the activations inside the tiles, M = 7, 19 and 64 into a buffer once (6-row
 * tiles with tails; N = 13 leaves tails of the 8- and 4-column tiles). */
static void test_avx512bf16_spec(const eng_kernels *k, int M) {
    TAP_OK(matches_spec(k, ENG_BF16, M, 203, 13, 4646u, avx512bf16_spec_dot),
           "avx512bf16 bf16 M=%d matmul equals its scalar specification (activations rounded to "
           "BF16, VDPBF16PS lanes odd then even, fixed tree) bit for bit",
           M);
}

/* The portable table's documented arithmetic: lane k % 8 accumulates x[k] * w[k] (a product
 * and a sum, each rounded; this file is ISO C, so no contraction) in k order, then
 * ((l0+l1)+(l2+l3))+((l4+l5)+(l6+l7)). Its vectorised loops must keep these bits. */
static float portable_spec_dot(const float *x, const float *w, int K) {
    float l[8] = {0};
    for (int i = 0; i < K; i++) {
        float p = x[i] * w[i];
        l[i % 8] = l[i % 8] + p;
    }
    return ((l[0] + l[1]) + (l[2] + l[3])) + ((l[4] + l[5]) + (l[6] + l[7]));
}

/* K = 1043: past two of the portable table's widening chunks, with a tail. */
static void test_portable_spec(const eng_kernels *k, eng_dtype wdt, int M) {
    TAP_OK(matches_spec(k, wdt, M, 1043, 11, 4343u, portable_spec_dot),
           "portable %s M=%d matmul equals its scalar specification bit for bit", dtype_name(wdt),
           M);
}

static void test_matmul(const eng_kernels *k) {
    const eng_dtype types[] = {ENG_F32, ENG_BF16, ENG_F16};
    for (int t = 0; t < 3; t++) {
        test_matmul_shape(k, types[t], 512, 203, 37); /* odd K and N: every tail */
        test_matmul_shape(k, types[t], 9, 1, 5);      /* K below one vector */
        test_matmul_shape(k, types[t], 6, 33, 13);    /* K just past one AVX-512 BF16 step */
    }
    test_matmul_shape(k, ENG_BF16, 64, 1024, 48); /* a real hidden size */
    /* prefill-sized M with a long K: several column blocks of the AVX2 packed path, short
     * panels and row tiles at their ends */
    for (int t = 0; t < 3; t++) test_matmul_shape(k, types[t], 21, 3001, 50);
}

/* ---------------------------------------------------------------- attention */

/* A pool holding n_pos positions of random K/V for every (layer, head) in the blocks of
 * `table`; positions at or beyond n_pos in the last block hold `fill`. */
static void fill_kv(kv_pool *p, const int32_t *table, int n_pos, uint64_t seed, float fill) {
    int bs = p->block_size, d = p->head_dim, nb = (n_pos + bs - 1) / bs;
    for (int b = 0; b < nb; b++)
        for (int l = 0; l < p->n_layers; l++)
            for (int kvi = 0; kvi < 2; kvi++)
                for (int h = 0; h < p->n_kv_heads; h++)
                    for (int s = 0; s < bs; s++)
                        for (int i = 0; i < d; i++) {
                            /* the value depends on (position, layer, kv, head, i) only */
                            uint64_t st = seed ^ ((uint64_t)(b * bs + s) * 1000003u +
                                                  (uint64_t)((l * 2 + kvi) * 64 + h) * 7919u +
                                                  (uint64_t)i * 31u);
                            rnd(&st);
                            float v = b * bs + s < n_pos ? 2.0f * rnd(&st) : fill;
                            void *tile = kv_tile(p, table[b], l, kvi, h);
                            if (p->dtype == KV_F32)
                                ((float *)tile)[s * d + i] = v;
                            else
                                ((uint16_t *)tile)[s * d + i] = eng_f32_to_bf16(v);
                        }
}

static float kv_at(const kv_pool *p, const int32_t *table, int layer, int kvi, int head, int pos,
                   int i) {
    const void *tile = kv_tile(p, table[pos / p->block_size], layer, kvi, head);
    size_t at = (size_t)(pos % p->block_size) * (size_t)p->head_dim + (size_t)i;
    return p->dtype == KV_F32 ? ((const float *)tile)[at]
                              : eng_bf16_to_f32(((const uint16_t *)tile)[at]);
}

/* Worst |out - softmax attention in double| for one (layer, head, n_pos). */
static double attend_error(const float *out, const float *q, const kv_pool *p, const int32_t *table,
                           int layer, int head, int n_pos, float scale) {
    int d = p->head_dim;
    double *s = malloc((size_t)n_pos * sizeof *s), mx = -INFINITY, sum = 0, worst = 0;
    for (int t = 0; t < n_pos; t++) {
        double dot = 0;
        for (int i = 0; i < d; i++) dot += (double)q[i] * kv_at(p, table, layer, 0, head, t, i);
        s[t] = dot * scale;
        if (s[t] > mx) mx = s[t];
    }
    for (int t = 0; t < n_pos; t++) sum += (s[t] = exp(s[t] - mx));
    for (int i = 0; i < d; i++) {
        double o = 0;
        for (int t = 0; t < n_pos; t++) o += s[t] / sum * kv_at(p, table, layer, 1, head, t, i);
        double err = fabs(o - out[i]);
        if (!(err <= worst)) worst = err;
    }
    free(s);
    return worst;
}

static void test_attend_geometry(const eng_kernels *k, kv_dtype dt, int head_dim, int bs) {
    kv_pool_config c = {
        .n_layers = 2, .n_kv_heads = 2, .head_dim = head_dim, .block_size = bs, .dtype = dt};
    c.budget_bytes = kv_block_bytes(&c) * 32;
    kv_pool a, b;
    rs_err e = {0};
    if (kv_pool_init(&a, &c, &e) || kv_pool_init(&b, &c, &e)) {
        TAP_OK(0, "kv_pool_init: %s", e.msg);
        return;
    }
    const int n_pos_max = 150;
    int nb = (n_pos_max + bs - 1) / bs;
    int32_t ta[32], tb[32];
    for (int i = 0; i < nb; i++) {
        ta[i] = i;                           /* in order */
        tb[i] = (int32_t)((i * 7 + 3) % 32); /* scattered (7 is coprime with 32) */
    }
    const char *dn = dt == KV_F32 ? "f32" : "bf16";
    float *q = rnd_vec((size_t)head_dim, 5u + (uint64_t)head_dim);
    float *oa = malloc((size_t)head_dim * sizeof *oa), *ob = malloc((size_t)head_dim * sizeof *ob);
    float scale = 1.0f / sqrtf((float)head_dim) * 3.0f; /* peaked enough to test the max shift */
    double worst = 0;
    int same_blocks = 1, same_beyond = 1;
    const int lens[] = {1, 2, bs - 1, bs, bs + 1, 3 * bs + 2, 100, n_pos_max};
    for (int li = 0; li < 8; li++) {
        int n = lens[li];
        if (n < 1 || n > n_pos_max) continue;
        /* a: whatever is beyond n is NaN; b: the same data scattered, zeros beyond n */
        fill_kv(&a, ta, n, 99u, NAN);
        fill_kv(&b, tb, n, 99u, 0.0f);
        for (int layer = 0; layer < 2; layer++)
            for (int h = 0; h < 2; h++) {
                k->attend(oa, q, &a, ta, layer, h, n, scale);
                k->attend(ob, q, &b, tb, layer, h, n, scale);
                double err = attend_error(oa, q, &a, ta, layer, h, n, scale);
                if (!(err <= worst)) worst = err;
                same_blocks &= !memcmp(oa, ob, (size_t)head_dim * sizeof *oa);
            }
        /* beyond n: refill b with other values past n_pos only, same answer */
        fill_kv(&b, tb, n, 99u, 1e30f);
        k->attend(oa, q, &b, tb, 1, 1, n, scale);
        fill_kv(&b, tb, n, 99u, -7.0f);
        k->attend(ob, q, &b, tb, 1, 1, n, scale);
        same_beyond &= !memcmp(oa, ob, (size_t)head_dim * sizeof *oa);
    }
    TAP_OK(worst <= 2e-5, "%s attend kv=%s d=%d bs=%d: within 2e-5 of a double softmax (%.3g)",
           k->name, dn, head_dim, bs, worst);
    TAP_OK(same_blocks, "%s attend kv=%s d=%d bs=%d: bit-identical wherever the blocks sit",
           k->name, dn, head_dim, bs);
    TAP_OK(same_beyond, "%s attend kv=%s d=%d bs=%d: positions >= n_pos are never read", k->name,
           dn, head_dim, bs);
    free(q);
    free(oa);
    free(ob);
    kv_pool_free(&a);
    kv_pool_free(&b);
}

static void test_attend(const eng_kernels *k) {
    test_attend_geometry(k, KV_F32, 128, 16);
    test_attend_geometry(k, KV_BF16, 64, 16);
    test_attend_geometry(k, KV_F32, 20, 5);   /* head_dim tail, small blocks */
    test_attend_geometry(k, KV_BF16, 36, 80); /* a block longer than one score chunk */
}

/* A table's attend_rows (many rows per walk over the blocks) gives each row the bits of the
 * table's attend alone, for rows of mixed lengths and more rows than one group. */
static void test_attend_rows(const eng_kernels *k, kv_dtype dt, int head_dim, int bs) {
    kv_pool_config c = {
        .n_layers = 1, .n_kv_heads = 2, .head_dim = head_dim, .block_size = bs, .dtype = dt};
    c.budget_bytes = kv_block_bytes(&c) * 40;
    kv_pool p;
    rs_err e = {0};
    if (kv_pool_init(&p, &c, &e)) {
        TAP_OK(0, "kv_pool_init: %s", e.msg);
        return;
    }
    enum { ROWS = 75, MAX_POS = 150 };
    int32_t table[40];
    for (int i = 0; i < 40; i++) table[i] = (int32_t)((i * 11 + 5) % 40);
    fill_kv(&p, table, 40 * bs, 3u, NAN); /* every block: the other tables read them all */
    int n_pos[ROWS];
    for (int r = 0; r < ROWS; r++) n_pos[r] = r < 60 ? 91 + r : 1 + (r * 37) % MAX_POS;
    float *q = rnd_vec((size_t)ROWS * (size_t)head_dim, 11u);
    float *many = malloc((size_t)ROWS * (size_t)(head_dim + 1) * sizeof *many);
    float *one = malloc((size_t)head_dim * sizeof *one);
    /* rows 60.. read tables that share the first `shared` blocks of `table`, then diverge
     * (their own blocks, interleaved with rows of other tables), as decode rows of requests
     * with a common cached prefix do */
    enum { NT = 3 };
    int32_t other[NT][40];
    int shared = (MAX_POS / bs) / 2;
    for (int t = 0; t < NT; t++)
        for (int i = 0; i < 40; i++)
            other[t][i] = i < shared ? table[i] : (int32_t)((i * 7 + t) % 40);
    eng_att_row rows[ROWS];
    for (int r = 0; r < ROWS; r++)
        rows[r] = (eng_att_row){many + (size_t)r * (head_dim + 1), q + (size_t)r * head_dim,
                                r < 60 ? table : other[r % NT], n_pos[r]};
    k->attend_rows(rows, ROWS, &p, 0, 1, 0.2f);
    int same = 1;
    for (int r = 0; r < ROWS; r++) {
        k->attend(one, rows[r].q, &p, rows[r].blocks, 0, 1, n_pos[r], 0.2f);
        same &= !memcmp(one, rows[r].out, (size_t)head_dim * sizeof *one);
    }
    TAP_OK(same,
           "%s attend_rows kv=%s d=%d bs=%d: %d rows of mixed n_pos and partly shared block "
           "tables == each row alone",
           k->name, dt == KV_F32 ? "f32" : "bf16", head_dim, bs, ROWS);
    free(q);
    free(many);
    free(one);
    kv_pool_free(&p);
}

/* ---------------------------------------------------------------- SwiGLU */

static void test_silu_mul(const eng_kernels *k) {
    enum { N = 3072 + 5 };
    float *g = rnd_vec(N, 91), *u = rnd_vec(N, 92), *all = malloc(N * sizeof *all),
          *cut = malloc(N * sizeof *cut);
    for (int i = 0; i < N; i++) g[i] *= 40.0f; /* exp's range, both tails */
    g[0] = -100.0f, g[1] = 100.0f, g[2] = 0.0f;
    memcpy(all, g, N * sizeof *all);
    k->silu_mul(all, u, N);
    double worst = 0;
    for (int i = 0; i < N; i++) {
        double want = (double)g[i] / (1.0 + exp(-(double)g[i])) * (double)u[i];
        double err = fabs(all[i] - want) / (fabs(want) + 1e-30);
        if (fabs(want) > 1e-30 && err > worst) worst = err;
    }
    TAP_OK(worst < 1e-6, "%s silu_mul within 1e-6 relative of double (worst %.2g)", k->name, worst);
    int same = 1;
    for (int cut0 = 1; cut0 < 40 && same; cut0 += 3) { /* pieces [0, cut0), [cut0, N) */
        memcpy(cut, g, N * sizeof *cut);
        k->silu_mul(cut, u, (size_t)cut0);
        k->silu_mul(cut + cut0, u + cut0, (size_t)(N - cut0));
        same = !memcmp(cut, all, N * sizeof *cut);
    }
    TAP_OK(same, "%s silu_mul: any split gives the same bits", k->name);
    free(g), free(u), free(all), free(cut);
}

int main(void) {
    openblas_set_num_threads(1);
    test_selection();
    for (int i = 0; i < N_ISAS; i++) {
        const eng_kernels *k;
        rs_err e = {0};
        setenv("RADIXSERVE_ISA", isas[i], 1);
        if (eng_kernels_select(&k, &e) != 0) {
            char why[600];
            snprintf(why, sizeof why, "%s kernels: not run on this CPU (%s)", isas[i], e.msg);
            tap_skip(why);
            continue;
        }
        test_matmul(k);
        test_attend(k);
        test_silu_mul(k);
        if (!strcmp(k->name, "avx2"))
            for (int t = 0; t < 3; t++) {
                test_avx2_spec(k, (eng_dtype)t, 7);
                test_avx2_spec(k, (eng_dtype)t, 19);
            }
        if (!strcmp(k->name, "avx512")) {
            test_avx512_spec(k, 7);
            test_avx512_spec(k, 19);
            test_avx512_spec(k, 64);
        }
        if (!strcmp(k->name, "avx512bf16")) {
            int ms[] = {1, 5, 7, 19, 64};
            for (int j = 0; j < 5; j++) test_avx512bf16_spec(k, ms[j]);
        }
        if (!strcmp(k->name, "portable"))
            for (int t = 0; t < 3; t++) {
                test_portable_spec(k, (eng_dtype)t, 1);
                test_portable_spec(k, (eng_dtype)t, 23);
            }
        if (k->attend_rows) {
            test_attend_rows(k, KV_BF16, 128, 16);
            test_attend_rows(k, KV_BF16, 20, 7);
            test_attend_rows(k, KV_F32, 36, 80);
        }
    }
    unsetenv("RADIXSERVE_ISA");
    return tap_done();
}
