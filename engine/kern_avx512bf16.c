/*
 * kern_avx512bf16.c — the avx512bf16 kernel table: the AVX-512 table (kern_avx512.c) with its BF16
 * weight product done by VDPBF16PS on activations rounded to BF16, as llama.cpp's BF16 dot does.
 * Needs AVX-512 F/BW/VL/DQ, VNNI and AVX512-BF16; chosen automatically on AMD (Zen 4 and later),
 * forced anywhere that has the instructions with RADIXSERVE_ISA=avx512bf16.
 *
 * Why two AVX-512 tables: the same register-only loops (bench_kernels, "AVX512-BF16 limits")
 * rank the two ways of multiplying BF16 weights oppositely on the two CPUs measured. On the Xeon
 * of docs/performance.md (Emerald Rapids class) 16-lane FMAs ran 170.6 GFLOPS per thread against
 * VDPBF16PS's 79.4, so that table widens the weights; on an AMD EPYC Zen 4 VDPBF16PS ran 234.6
 * against 117.3, and one instruction per 32 weights (instead of a shift, a mask and two FMAs)
 * also leaves the core free to keep more weight loads in flight during decode. The cost admitted:
 * activations lose their low 16 bits before the product (llama.cpp's BF16 path does the same),
 * so this table's logits differ from the FMA table's by the rounding of the inputs: stories260K
 * is held to 0.2 of a reference that rounds them too, where the other tables are held to 0.1.
 *
 * Arithmetic of one element y[m][n] (the spec in tests/test_engine_kernels.c): x row m rounded
 * to BF16 (round to nearest even, VCVTNE2PS2BF16), zero padded to a multiple of 32; 16 lanes from
 * zero, per step of 32 elements from k = 0 one VDPBF16PS (lane j adds x[k + 2j] w[k + 2j] and
 * x[k + 2j + 1] w[k + 2j + 1]), the weight tail zero-masked; then hsum16 (kern_avx512_inl.h).
 * Tile shapes, the column blocks and the worker split only choose which elements run side by
 * side: M = 1 and M = 512 agree bit for bit.
 */
#include <stdlib.h>

#include "engine/kern_avx512_inl.h"

enum {
    DP_MR = 6,              /* activation rows per tile */
    DP_NR_FEW = 8,          /* weight rows per tile with 1 or 2 activation rows (decode) */
    DP_NR_MANY = 4,         /* with 3 to 6 (6 x 4 = 24 accumulators) */
    DP_L2 = 512 * 1024,     /* weight bytes per column block, kept in L2 over the row tiles */
    DP_ROUND_MAX_M = DP_MR, /* up to one row tile: the activations are rounded in the tile */
    DP_PF_MAX_M = 15,       /* fewer rows (decode batches): the first row tile of a column
                               block prefetches it (little compute hides the memory) */
};

/* 32 activations x[k .. k + n) (n <= 32) rounded to BF16 (round to nearest even), zero beyond. */
static inline __attribute__((always_inline)) __m512bh round32(const float *x, int k, int n) {
    int nlo = n < 16 ? n : 16;
    __m512 lo =
        n >= 16 ? _mm512_loadu_ps(x + k) : _mm512_maskz_loadu_ps((__mmask16)first_n(nlo), x + k);
    __m512 hi = n == 32 ? _mm512_loadu_ps(x + k + 16)
                        : _mm512_maskz_loadu_ps((__mmask16)first_n(n - nlo), x + k + 16);
    return _mm512_cvtne2ps_pbh(hi, lo);
}

/* x (K floats) rounded into dst (kp = K rounded up to 32; the pad is zero). */
static void round_row(uint16_t *dst, const float *x, int K, int kp) {
    for (int k = 0; k < kp; k += 32)
        _mm512_storeu_si512(dst + k, (__m512i)round32(x, k, K - k < 32 ? K - k : 32));
}

/* Where a tile's activations come from: rows rounded once per call (xb, kp apart), or the F32
 * rows themselves (x, K apart), rounded at every step (rnd = 1; the same bits). */
typedef struct dp_src {
    const uint16_t *xb;
    const float *x;
    int kp;
} dp_src;

/* One step of 32 elements from k (n < 32: the weight tail zero-masked) of an MR x NR tile; pf
 * prefetches the same line of the next tile's weight rows into L2 (on the Zen 4, M = 1 over
 * Qwen3-0.6B's products, five interleaved runs each: median 80% of bench_kernels' read limit
 * with the L2 hint, 72% with L1's, no better at 512 B to 4 KB ahead in the row or with 16 rows
 * per tile; the host's noise was about as large as these differences). */
static inline __attribute__((always_inline)) void dp_step(__m512 acc[DP_MR][DP_NR_FEW], dp_src s,
                                                          int rnd, const uint16_t *w0, int K, int k,
                                                          int n, int pf, int MR, int NR) {
    __m512i w[DP_NR_FEW];
#pragma GCC unroll 8
    for (int j = 0; j < NR; j++) {
        const uint16_t *r = w0 + (size_t)j * (size_t)K + k;
        if (pf) _mm_prefetch((const char *)(r + (size_t)NR * (size_t)K), _MM_HINT_T1);
        w[j] = n == 32 ? _mm512_loadu_si512(r) : _mm512_maskz_loadu_epi16(first_n(n), r);
    }
#pragma GCC unroll 6
    for (int i = 0; i < MR; i++) {
        __m512bh xv = rnd ? round32(s.x + (size_t)i * (size_t)K, k, n)
                          : (__m512bh)_mm512_loadu_si512(s.xb + (size_t)i * (size_t)s.kp + k);
#pragma GCC unroll 8
        for (int j = 0; j < NR; j++) acc[i][j] = _mm512_dpbf16_ps(acc[i][j], xv, (__m512bh)w[j]);
    }
}

/* y[i][n + j] for i < MR, j < NR: the tile's elements from zero, then hsum16 of each. */
static inline __attribute__((always_inline)) void dp_tile(float *y, int ldy, dp_src s, int rnd,
                                                          const uint16_t *W, int K, int n, int pf,
                                                          int MR, int NR) {
    __m512 acc[DP_MR][DP_NR_FEW];
#pragma GCC unroll 6
    for (int i = 0; i < MR; i++)
#pragma GCC unroll 8
        for (int j = 0; j < NR; j++) acc[i][j] = _mm512_setzero_ps();
    const uint16_t *w0 = W + (size_t)n * (size_t)K;
    int k = 0;
    if (pf)
        for (; k + 32 <= K; k += 32) dp_step(acc, s, rnd, w0, K, k, 32, 1, MR, NR);
    else
        for (; k + 32 <= K; k += 32) dp_step(acc, s, rnd, w0, K, k, 32, 0, MR, NR);
    if (k < K) dp_step(acc, s, rnd, w0, K, k, K - k, 0, MR, NR);
    hsum16_store(y, ldy, &acc[0][0], DP_NR_FEW, n, MR, NR);
}

/* Weight rows [c0, c1) against mr (a constant, 1..6) activation rows: tiles of NR rows, then
 * single rows for the tail. */
#define DP_ROWS(MR, NR)                                                                            \
    static void dp_rows_##MR(float *y, int ldy, dp_src s, const uint16_t *W, int K, int c0,        \
                             int c1, int pf) {                                                     \
        int n = c0;                                                                                \
        if (s.xb) {                                                                                \
            for (; n + (NR) <= c1; n += (NR)) dp_tile(y, ldy, s, 0, W, K, n, pf, MR, NR);          \
            for (; n < c1; n++) dp_tile(y, ldy, s, 0, W, K, n, 0, MR, 1);                          \
        } else {                                                                                   \
            for (; n + (NR) <= c1; n += (NR)) dp_tile(y, ldy, s, 1, W, K, n, pf, MR, NR);          \
            for (; n < c1; n++) dp_tile(y, ldy, s, 1, W, K, n, 0, MR, 1);                          \
        }                                                                                          \
    }
DP_ROWS(1, DP_NR_FEW)
DP_ROWS(2, DP_NR_FEW)
DP_ROWS(3, DP_NR_MANY)
DP_ROWS(4, DP_NR_MANY)
DP_ROWS(5, DP_NR_MANY)
DP_ROWS(6, DP_NR_MANY)

typedef void (*dp_rows_fn)(float *y, int ldy, dp_src s, const uint16_t *W, int K, int c0, int c1,
                           int pf);

/* Columns [n0, n1) from M activation rows: weight column blocks of DP_L2 bytes, every row tile
 * passing over one block before the next (with up to 6 rows the weights stream once). */
static void dp_blocks(float *y, int ldy, dp_src s, int M, const uint16_t *W, int K, int n0,
                      int n1) {
    static const dp_rows_fn rows[DP_MR + 1] = {NULL,      dp_rows_1, dp_rows_2, dp_rows_3,
                                               dp_rows_4, dp_rows_5, dp_rows_6};
    int nc = (int)(DP_L2 / ((size_t)K * 2)) / DP_NR_FEW * DP_NR_FEW;
    if (nc < DP_NR_FEW) nc = DP_NR_FEW;
    int pf = M <= DP_PF_MAX_M;
    for (int c0 = n0; c0 < n1; c0 += nc) {
        int c1 = n1 - c0 < nc ? n1 : c0 + nc;
        for (int m0 = 0; m0 < M; m0 += DP_MR) {
            dp_src t = {s.xb ? s.xb + (size_t)m0 * (size_t)s.kp : NULL,
                        s.x + (size_t)m0 * (size_t)K, s.kp};
            rows[M - m0 < DP_MR ? M - m0 : DP_MR](y + (size_t)m0 * (size_t)ldy, ldy, t, W, K, c0,
                                                  c1, pf && m0 == 0);
        }
    }
}

/* The table's matmul: BF16 weights through VDPBF16PS, F32/F16 weights through the AVX-512 FMA
 * table's. For more rows than one tile the activations are rounded once per call and per thread
 * into a buffer (M x kp BF16 values: 1 MB for 512 x 1024); with fewer, or if the buffer cannot
 * be had, each tile rounds them at every step (the same bits; for prefill that costs a
 * conversion per row per tile, a fallback never timed). */
static void dp_matmul(float *y, int ldy, const float *x, int M, const void *W, eng_dtype wdt, int K,
                      int n0, int n1) {
    if (wdt != ENG_BF16) {
        eng_matmul_avx512(y, ldy, x, M, W, wdt, K, n0, n1);
        return;
    }
    if (M <= 0 || n1 <= n0) return;
    int kp = (K + 31) / 32 * 32;
    dp_src s = {NULL, x, kp};
    uint16_t *xb = NULL;
    if (M > DP_ROUND_MAX_M) xb = aligned_alloc(64, (size_t)M * (size_t)kp * sizeof *xb);
    if (xb) {
        for (int m = 0; m < M; m++)
            round_row(xb + (size_t)m * (size_t)kp, x + (size_t)m * (size_t)K, K, kp);
        s.xb = xb;
    }
    dp_blocks(y, ldy, s, M, (const uint16_t *)W, K, n0, n1);
    free(xb);
}

const eng_kernels eng_kernels_avx512bf16 = {
    .name = "avx512bf16",
    .matmul = dp_matmul,
    .qmatmul = eng_qmatmul_avx512,
    .attend = eng_attend_avx512,
    .attend_rows = eng_attend_rows_avx512,
    .silu_mul = eng_silu_mul_avx2,
};
