/*
 * kern_avx512.c — the AVX-512 kernel table (needs AVX512F/BW/VL/DQ and AVX512-VNNI: Cascade Lake,
 * Ice Lake and every later Xeon, Zen 4 and later; the quantized products, which take VNNI:
 * kern_q_avx512.c). The weight products, then the attention over BF16 pages.
 *
 * BF16 weights are widened exactly to F32 (a BF16 value is the high half of an F32) and multiply
 * the F32 activations with FMAs, not VDPBF16PS: on the Xeon of docs/performance.md a
 * register-only loop of 16-lane FMAs runs about twice the FLOPs of one of VDPBF16PS
 * (bench_kernels, "AVX512-BF16 limits"), the activations keep all their bits, and CPUs with
 * AVX-512 but without AVX512-BF16 (Cascade Lake, Ice Lake) run the same table. Element y[m][n]
 * accumulates 16 lanes over steps of 32 elements from k = 0: lane j takes x[k + 2j] * w[k + 2j],
 * then x[k + 2j + 1] * w[k + 2j + 1] (two FMAs, each one rounding), the K tail zero-masked into one
 * last step; then one fixed horizontal reduction. (A 512-bit load of 32 BF16 values gives the
 * even elements by one shift and the odd ones by one mask; the activations are split to match.)
 * F32 and F16 weights: FMA into 16 lanes (k % 16). As in the AVX2 table, tile shapes never
 * change an element's instruction sequence.
 */
#include <immintrin.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "engine/kern_avx512_inl.h"

enum {
    AVX512_MAX_NR = 8, /* widest tile in weight rows */
};

AVX512_INLINE size_t elem_size(eng_dtype t) {
    return t == ENG_F32 ? 4 : 2;
}

/* Elements consumed per step: 32 BF16 pairs-of-16, or 16 widened F32/F16 values. */
AVX512_INLINE int step_of(eng_dtype t) {
    return t == ENG_BF16 ? 32 : 16;
}

/*
 * One step's worth of a weight row from element k: for BF16 the raw 32 values (as a vector of
 * BF16 pairs), otherwise 16 values widened to F32. n < step zero-masks the tail.
 */
AVX512_INLINE __m512 load_w(const void *row, eng_dtype t, int k, int n, int full) {
    if (t == ENG_F32) {
        const float *p = (const float *)row + k;
        return full ? _mm512_loadu_ps(p) : _mm512_maskz_loadu_ps((__mmask16)first_n(n), p);
    }
    const uint16_t *p = (const uint16_t *)row + k;
    if (t == ENG_BF16)
        return _mm512_castsi512_ps(full ? _mm512_loadu_si512(p)
                                        : _mm512_maskz_loadu_epi16(first_n(n), p));
    __m256i h = full ? _mm256_loadu_si256((const __m256i *)p)
                     : _mm256_maskz_loadu_epi16((__mmask16)first_n(n), p);
    return _mm512_cvtph_ps(h);
}

/* Two loads of x[k .. k + n) (n <= 32, zero beyond): elements k .. k + 15 and k + 16 .. k + 31. */
AVX512_INLINE void load_x32(const float *x, int k, int n, int full, __m512 *lo, __m512 *hi) {
    if (full) {
        *lo = _mm512_loadu_ps(x + k);
        *hi = _mm512_loadu_ps(x + k + 16);
    } else {
        int nlo = n < 16 ? n : 16;
        *lo = _mm512_maskz_loadu_ps((__mmask16)first_n(nlo), x + k);
        *hi = _mm512_maskz_loadu_ps((__mmask16)first_n(n - nlo), x + k + 16);
    }
}

/* One step's worth of activations from element k for F32/F16 weights: 16 values, n < 16
 * zero-masked. */
AVX512_INLINE __m512 load_x(const float *x, int k, int n, int full) {
    return full ? _mm512_loadu_ps(x + k) : _mm512_maskz_loadu_ps((__mmask16)first_n(n), x + k);
}

/* x[k .. k + n) split for the BF16 weight product: lane j of *xe is x[k + 2j], of *xo
 * x[k + 2j + 1]. */
AVX512_INLINE void load_x_eo(const float *x, int k, int n, int full, __m512 *xe, __m512 *xo) {
    __m512 lo, hi;
    load_x32(x, k, n, full, &lo, &hi);
    const __m512i ie = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    const __m512i io = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
    *xe = _mm512_permutex2var_ps(lo, ie, hi);
    *xo = _mm512_permutex2var_ps(lo, io, hi);
}

/* 32 raw BF16 weights (load_w) widened exactly: lane j of *we is w[k + 2j], of *wo w[k + 2j + 1]
 * (little-endian: the even element is a 32-bit lane's low half). */
AVX512_INLINE void widen_w_eo(__m512 raw, __m512 *we, __m512 *wo) {
    __m512i r = _mm512_castps_si512(raw);
    *we = _mm512_castsi512_ps(_mm512_slli_epi32(r, 16));
    *wo = _mm512_castsi512_ps(_mm512_and_si512(r, _mm512_set1_epi32((int)0xffff0000u)));
}

/* acc plus one BF16-weight step's products: the even elements', then the odd elements'. */
AVX512_INLINE __m512 step_eo(__m512 acc, __m512 xe, __m512 xo, __m512 we, __m512 wo) {
    return _mm512_fmadd_ps(xo, wo, _mm512_fmadd_ps(xe, we, acc));
}

/* acc += x * w for one step of F32/F16 weights. */
AVX512_INLINE __m512 step(__m512 acc, __m512 xv, __m512 wv) {
    return _mm512_fmadd_ps(xv, wv, acc);
}

/* One step (full or tail) of an MR x NR tile. */
AVX512_INLINE void tile_step(__m512 acc[ENG_TILE_MR][AVX512_MAX_NR], const float *x, int K,
                             const char *w0, size_t rb, eng_dtype t, int k, int n, int full, int pf,
                             int MR, int NR) {
    if (t == ENG_BF16) { /* the activations split once, each weight row widened once */
        __m512 xe[ENG_TILE_MR], xo[ENG_TILE_MR];
#pragma GCC unroll 4
        for (int i = 0; i < MR; i++)
            load_x_eo(x + (size_t)i * (size_t)K, k, n, full, &xe[i], &xo[i]);
#pragma GCC unroll 8
        for (int j = 0; j < NR; j++) {
            const char *r = w0 + (size_t)j * rb;
            /* the same line of the next tile's row: see tile_gen in kern_avx2.c */
            if (full && pf) _mm_prefetch(r + (size_t)NR * rb + (size_t)k * 2, _MM_HINT_T1);
            __m512 we, wo;
            widen_w_eo(load_w(r, t, k, n, full), &we, &wo);
#pragma GCC unroll 4
            for (int i = 0; i < MR; i++) acc[i][j] = step_eo(acc[i][j], xe[i], xo[i], we, wo);
        }
        return;
    }
    __m512 w[AVX512_MAX_NR];
#pragma GCC unroll 8
    for (int j = 0; j < NR; j++) {
        const char *r = w0 + (size_t)j * rb;
        if (full && pf) _mm_prefetch(r + (size_t)NR * rb + (size_t)k * elem_size(t), _MM_HINT_T1);
        w[j] = load_w(r, t, k, n, full);
    }
#pragma GCC unroll 4
    for (int i = 0; i < MR; i++) {
        __m512 xv = load_x(x + (size_t)i * (size_t)K, k, n, full);
#pragma GCC unroll 8
        for (int j = 0; j < NR; j++) acc[i][j] = step(acc[i][j], xv, w[j]);
    }
}

/* A tile of MR activation rows by NR weight rows; MR and NR are constants at every call. */
AVX512_INLINE void tile_gen(const eng_tile_args *a, eng_dtype t, int n, int MR, int NR) {
    float *y = a->y;
    const float *x = a->x;
    int K = a->K, ldy = a->ldy;
    size_t rb = (size_t)K * elem_size(t);
    const char *w0 = (const char *)a->W + (size_t)n * rb;
    int st = step_of(t);
    __m512 acc[ENG_TILE_MR][AVX512_MAX_NR];
#pragma GCC unroll 4
    for (int i = 0; i < MR; i++)
#pragma GCC unroll 8
        for (int j = 0; j < NR; j++) acc[i][j] = _mm512_setzero_ps();
    int k = 0;
    for (; k + st <= K; k += st) tile_step(acc, x, K, w0, rb, t, k, st, 1, a->stream, MR, NR);
    if (k < K) tile_step(acc, x, K, w0, rb, t, k, K - k, 0, 0, MR, NR);
#pragma GCC unroll 4
    for (int i = 0; i < MR; i++)
#pragma GCC unroll 8
        for (int j = 0; j < NR; j++)
            y[(size_t)i * (size_t)ldy + (size_t)(n + j)] = hsum16(acc[i][j]);
}

/* Weight rows per tile for 1..4 activation rows: 8 to 16 of the 32 registers accumulate.
 * 1 MB weight column blocks as in the AVX2 table (decode streams each row once, so the block
 * size matters only for the F32/F16 prefill, which takes this path). */
ENG_DEFINE_MATMUL(avx512_direct, 8, 8, 6, 4, 1024 * 1024)

/* ---------------------------------------------------------------- BF16 GEMM (prefill) */

/*
 * With many activation rows the direct tiles spend as much on the activations as on the
 * products: every tile re-loads and re-splits its rows (two loads and two permutes per 32
 * elements), and four rows leave registers idle. The GEMM path splits each activation row once
 * per call into a buffer (per 32 elements: the 16 even ones, then the 16 odd ones, the pad zero:
 * what load_x_eo gives the direct tile), then runs tiles of GEMM_MR rows by GEMM_NR weight rows
 * (24 accumulators) over column blocks of weights kept in L2, each weight step widened once per
 * tile. An element still takes, from zero, step_eo per 32 elements in k order (the tail
 * zero-masked on the weight side, zero in the buffer), then hsum16: the direct path's sequence,
 * so M = 1 and M = 512 agree bit for bit (tests/test_engine_kernels.c checks). Measured on the
 * 2-vCPU Xeon (Emerald Rapids class, one thread, 512 x 3072 x 1024, a prototype of these
 * tiles in one run): 6 x 4 tiles 74-88 GFLOPS, 8 x 4 78-85, 4 x 4 76-83, against 45-54 for the
 * VDPBF16PS 8 x 3 tiles this path replaced (activations rounded to BF16).
 */
enum {
    GEMM_MR = 6,          /* activation rows per tile */
    GEMM_NR = 4,          /* weight rows per tile */
    GEMM_MIN_M = 16,      /* fewer rows: the direct tiles */
    GEMM_L2 = 512 * 1024, /* weight bytes per column block (half of Zen 4's L2) */
};

/* Activation row x (K floats) split into dst as load_x_eo splits it step by step (kp = K
 * rounded up to 32; the pad is zero). */
static void split_row(float *dst, const float *x, int K, int kp) {
    for (int k = 0; k < kp; k += 32) {
        int n = K - k < 32 ? K - k : 32;
        __m512 xe, xo;
        load_x_eo(x, k, n, n == 32, &xe, &xo);
        _mm512_storeu_ps(dst + k, xe);
        _mm512_storeu_ps(dst + k + 16, xo);
    }
}

AVX512_INLINE void hsum16_x8(float *y, size_t ldy, const __m512 a[8]) {
    float t[16];
    _mm512_storeu_ps(t, hsum16_x8_lanes(a));
#pragma GCC unroll 8
    for (int q = 0; q < 8; q++) y[(size_t)q * ldy] = t[HSUM16_X8_LANE(q)];
}

/* One step of 32 elements from k (n < 32: the zero-masked tail) of a GEMM tile over the split
 * rows xs (kp apart); pf prefetches the same line of the next tile's weight rows. */
AVX512_INLINE void gemm_step(__m512 acc[GEMM_MR][GEMM_NR], const float *xs, int kp,
                             const uint16_t *w0, int K, int k, int n, int pf, int MR, int NR) {
    __m512 we[GEMM_NR], wo[GEMM_NR];
#pragma GCC unroll 4
    for (int j = 0; j < NR; j++) {
        const uint16_t *r = w0 + (size_t)j * (size_t)K;
        if (pf) _mm_prefetch((const char *)(r + (size_t)NR * (size_t)K + k), _MM_HINT_T0);
        widen_w_eo(load_w(r, ENG_BF16, k, n, n == 32), &we[j], &wo[j]);
    }
#pragma GCC unroll 6
    for (int i = 0; i < MR; i++) {
        const float *xr = xs + (size_t)i * (size_t)kp + k;
        __m512 xe = _mm512_loadu_ps(xr), xo = _mm512_loadu_ps(xr + 16);
#pragma GCC unroll 4
        for (int j = 0; j < NR; j++) acc[i][j] = step_eo(acc[i][j], xe, xo, we[j], wo[j]);
    }
}

/* One GEMM tile: y[i][n + j] for i < MR, j < NR from the split rows xs (kp apart). */
AVX512_INLINE void gemm_tile(float *y, int ldy, const float *xs, int kp, const uint16_t *W, int K,
                             int n, int pf, int MR, int NR) {
    __m512 acc[GEMM_MR][GEMM_NR];
#pragma GCC unroll 6
    for (int i = 0; i < MR; i++)
#pragma GCC unroll 4
        for (int j = 0; j < NR; j++) acc[i][j] = _mm512_setzero_ps();
    const uint16_t *w0 = W + (size_t)n * (size_t)K;
    int k = 0;
    if (pf)
        for (; k + 32 <= K; k += 32) gemm_step(acc, xs, kp, w0, K, k, 32, 1, MR, NR);
    else
        for (; k + 32 <= K; k += 32) gemm_step(acc, xs, kp, w0, K, k, 32, 0, MR, NR);
    if (k < K) gemm_step(acc, xs, kp, w0, K, k, K - k, 0, MR, NR);
    hsum16_store(y, ldy, &acc[0][0], GEMM_NR, n, MR, NR);
}

/* The tile for mr (1..6) rows and NR weight rows, with constant shapes. */
#define GEMM_ROWS(NR)                                                                              \
    AVX512_INLINE void gemm_rows_##NR(float *y, int ldy, const float *xs, int kp,                  \
                                      const uint16_t *W, int K, int n, int pf, int mr) {           \
        switch (mr) {                                                                              \
        case 1:                                                                                    \
            gemm_tile(y, ldy, xs, kp, W, K, n, pf, 1, NR);                                         \
            break;                                                                                 \
        case 2:                                                                                    \
            gemm_tile(y, ldy, xs, kp, W, K, n, pf, 2, NR);                                         \
            break;                                                                                 \
        case 3:                                                                                    \
            gemm_tile(y, ldy, xs, kp, W, K, n, pf, 3, NR);                                         \
            break;                                                                                 \
        case 4:                                                                                    \
            gemm_tile(y, ldy, xs, kp, W, K, n, pf, 4, NR);                                         \
            break;                                                                                 \
        case 5:                                                                                    \
            gemm_tile(y, ldy, xs, kp, W, K, n, pf, 5, NR);                                         \
            break;                                                                                 \
        default:                                                                                   \
            gemm_tile(y, ldy, xs, kp, W, K, n, pf, 6, NR);                                         \
            break;                                                                                 \
        }                                                                                          \
    }
GEMM_ROWS(1)
GEMM_ROWS(2)
GEMM_ROWS(3)
GEMM_ROWS(4)

/*
 * Columns [n0, n1) of y = x W^T from the split rows xs: weight column blocks of GEMM_L2 bytes
 * stay in L2 while every row tile passes over them. K is not cut into chunks (for the old
 * VDPBF16PS tiles, chunks of 1,024 for down_proj's K = 3072 measured no faster on the Xeon).
 */
static void gemm_blocks(float *y, int ldy, const float *xs, int kp, int M, const uint16_t *W, int K,
                        int n0, int n1) {
    int nc = (int)(GEMM_L2 / ((size_t)K * 2)) / GEMM_NR * GEMM_NR;
    if (nc < GEMM_NR) nc = GEMM_NR;
    for (int c0 = n0; c0 < n1; c0 += nc) {
        int c1 = n1 - c0 < nc ? n1 : c0 + nc;
        for (int m0 = 0; m0 < M; m0 += GEMM_MR) {
            int mr = M - m0 < GEMM_MR ? M - m0 : GEMM_MR;
            float *ym = y + (size_t)m0 * (size_t)ldy;
            const float *xm = xs + (size_t)m0 * (size_t)kp;
            int n = c0, pf = m0 == 0; /* the first row tile reads the block from memory */
            for (; n + GEMM_NR <= c1; n += GEMM_NR) gemm_rows_4(ym, ldy, xm, kp, W, K, n, pf, mr);
            if (c1 - n == 3) gemm_rows_3(ym, ldy, xm, kp, W, K, n, pf, mr);
            if (c1 - n == 2) gemm_rows_2(ym, ldy, xm, kp, W, K, n, pf, mr);
            if (c1 - n == 1) gemm_rows_1(ym, ldy, xm, kp, W, K, n, pf, mr);
        }
    }
}

/* The table's matmul: the BF16 GEMM for prefill-sized M (if its buffer can be had), else the
 * direct tiles. The buffer is per call and per thread (M x K floats: 2 MB for 512 x 1024; each
 * thread splits every row, a few percent of its products' time). */
void eng_matmul_avx512(float *y, int ldy, const float *x, int M, const void *W, eng_dtype wdt,
                       int K, int n0, int n1) {
    int kp = (K + 31) / 32 * 32;
    float *xs = NULL;
    if (wdt == ENG_BF16 && M >= GEMM_MIN_M && n1 > n0)
        xs = aligned_alloc(64, (size_t)M * (size_t)kp * sizeof *xs);
    if (!xs) {
        avx512_direct(y, ldy, x, M, W, wdt, K, n0, n1);
        return;
    }
    for (int m = 0; m < M; m++)
        split_row(xs + (size_t)m * (size_t)kp, x + (size_t)m * (size_t)K, K, kp);
    gemm_blocks(y, ldy, xs, kp, M, (const uint16_t *)W, K, n0, n1);
    free(xs);
}

/* ---------------------------------------------------------------- attention (BF16 pages) */

/*
 * With BF16 pages the AVX2 attention widens K and V to F32 and multiplies with 8-lane FMAs. Here
 * the same exact widening feeds 16-lane FMAs, with the weight products' lane scheme: every 32
 * elements of a head vector are split into their 16 even and 16 odd ones (the query once per
 * call, a chunk's K and V rows once for every row of a group that reads the block, or per row
 * when one row reads it). A score is lane-wise fma(q even, k even) then fma(q odd, k odd) over
 * the head's 32-element steps, then hsum16 (a chunk of 16 scores gathered into one vector); the
 * softmax weights come from a 16-lane exp in F32; each output lane accumulates p * v in
 * position order, the output kept split until the row's end. Chunks are at most 16 positions
 * inside one block, so every row (decode or prefill, alone or in a group) runs the same
 * sequence. F32 pages keep the AVX2 attention (eng_attend_avx2).
 */
enum {
    ATT_CHUNK = 16, /* positions per chunk: one vector of scores */
    ATT_ROWS = 64,  /* query rows sharing one walk over the blocks */
};

/* e^x in 16 lanes: exp8's range reduction and polynomial (kern_avx2.c); below -87.3 gives 0. */
AVX512_INLINE __m512 exp16(__m512 x) {
    const __m512 lo = _mm512_set1_ps(ENG_EXP_LO), hi = _mm512_set1_ps(ENG_EXP_HI);
    __mmask16 under = _mm512_cmp_ps_mask(x, lo, _CMP_LT_OQ);
    x = _mm512_min_ps(_mm512_max_ps(x, lo), hi);
    __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(ENG_EXP_L2E)),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(ENG_EXP_LN1), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(ENG_EXP_LN2), r);
    __m512 y = _mm512_set1_ps(ENG_EXP_P0);
    y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(ENG_EXP_P1));
    y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(ENG_EXP_P2));
    y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(ENG_EXP_P3));
    y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(ENG_EXP_P4));
    y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(ENG_EXP_P5));
    y = _mm512_add_ps(_mm512_fmadd_ps(y, _mm512_mul_ps(r, r), r), _mm512_set1_ps(1.0f));
    __m512i e =
        _mm512_slli_epi32(_mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127)), 23);
    return _mm512_maskz_mul_ps((__mmask16)~under, y, _mm512_castsi512_ps(e));
}

/* One query row's state (as the AVX2 attention's att_row). */
typedef struct att512_row {
    float *out;            /* head_dim floats: the result */
    float *acc;            /* kp floats: the running weighted sum of V, split as split_row does */
    const float *qs;       /* kp floats: the query, split */
    const int32_t *blocks; /* its block table */
    int n_pos;             /* positions this row attends to */
    float mx, l;           /* running max score and running sum of exp(score - mx) */
} att512_row;

/* One chunk's K and V rows widened and split (row i at i * kp), zero past d. */
typedef struct att512_chunk {
    const float *k, *v;
    int n; /* positions built */
} att512_chunk;

/* n rows of d BF16 values (d apart) widened exactly and split into dst (rows kp apart). */
static void att512_widen(float *dst, const uint16_t *src, int n, int d, int kp) {
    for (int i = 0; i < n; i++) {
        const uint16_t *r = src + (size_t)i * (size_t)d;
        float *o = dst + (size_t)i * (size_t)kp;
        for (int e = 0; e < kp; e += 32) {
            int m = d - e < 32 ? d - e : 32;
            __m512 we, wo;
            widen_w_eo(load_w(r, ENG_BF16, e, m, m == 32), &we, &wo);
            _mm512_storeu_ps(o + e, we);
            _mm512_storeu_ps(o + e + 16, wo);
        }
    }
}

/* The G (a constant) dots of the split query with split K rows k, k + kp, ..., each a dot of
 * its own (step_eo per 32 elements in order); G = 8 sums through hsum16_x8_lanes, whose lanes
 * hold exactly hsum16 of each. */
AVX512_INLINE void att512_dots(__m512 acc[8], const float *qs, const float *k, int kp, int G) {
#pragma GCC unroll 8
    for (int j = 0; j < G; j++) acc[j] = _mm512_setzero_ps();
    for (int e = 0; e < kp; e += 32) {
        __m512 qe = _mm512_loadu_ps(qs + e), qo = _mm512_loadu_ps(qs + e + 16);
#pragma GCC unroll 8
        for (int j = 0; j < G; j++) {
            const float *r = k + (size_t)j * (size_t)kp + e;
            acc[j] = step_eo(acc[j], qe, qo, _mm512_loadu_ps(r), _mm512_loadu_ps(r + 16));
        }
    }
}

/* Lane i = scale * (q . K row i) for i < n, zero beyond. A whole chunk of 16 stays in registers
 * (two hsum16_x8_lanes gathered into place); shorter ones go through memory. */
AVX512_INLINE __m512 att512_scores(const float *qs, const float *k, int n, int kp, float scale) {
    __m512 acc[8];
    if (n == ATT_CHUNK) {
        att512_dots(acc, qs, k, kp, 8);
        __m512 lo = hsum16_x8_lanes(acc);
        att512_dots(acc, qs, k + (size_t)8 * (size_t)kp, kp, 8);
        __m512 hi = hsum16_x8_lanes(acc);
        const __m512i idx = _mm512_setr_epi32(
            HSUM16_X8_LANE(0), HSUM16_X8_LANE(1), HSUM16_X8_LANE(2), HSUM16_X8_LANE(3),
            HSUM16_X8_LANE(4), HSUM16_X8_LANE(5), HSUM16_X8_LANE(6), HSUM16_X8_LANE(7),
            16 + HSUM16_X8_LANE(0), 16 + HSUM16_X8_LANE(1), 16 + HSUM16_X8_LANE(2),
            16 + HSUM16_X8_LANE(3), 16 + HSUM16_X8_LANE(4), 16 + HSUM16_X8_LANE(5),
            16 + HSUM16_X8_LANE(6), 16 + HSUM16_X8_LANE(7));
        return _mm512_mul_ps(_mm512_permutex2var_ps(lo, idx, hi), _mm512_set1_ps(scale));
    }
    float s[ATT_CHUNK] = {0};
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        att512_dots(acc, qs, k + (size_t)i * (size_t)kp, kp, 8);
        hsum16_x8(s + i, 1, acc);
    }
    for (; i < n; i++) {
        att512_dots(acc, qs, k + (size_t)i * (size_t)kp, kp, 1);
        s[i] = hsum16(acc[0]);
    }
    return _mm512_mul_ps(_mm512_loadu_ps(s), _mm512_set1_ps(scale));
}

/* acc = acc * corr + sum_i p[i] * V row i, NV (a constant) vectors in registers; each lane's
 * sequence (the scaling, then one FMA per position in order) is the generic loop's. */
AVX512_INLINE void att512_pv_regs(float *acc, __m512 cv, const float *p, const float *v, int n,
                                  int kp, int NV) {
    __m512 o[8];
#pragma GCC unroll 8
    for (int j = 0; j < NV; j++) o[j] = _mm512_mul_ps(_mm512_loadu_ps(acc + 16 * j), cv);
    for (int i = 0; i < n; i++) {
        __m512 pv = _mm512_set1_ps(p[i]);
        const float *r = v + (size_t)i * (size_t)kp;
#pragma GCC unroll 8
        for (int j = 0; j < NV; j++) o[j] = _mm512_fmadd_ps(pv, _mm512_loadu_ps(r + 16 * j), o[j]);
    }
#pragma GCC unroll 8
    for (int j = 0; j < NV; j++) _mm512_storeu_ps(acc + 16 * j, o[j]);
}

/* The same for any head_dim, one vector at a time. */
static void att512_pv_any(float *acc, __m512 cv, const float *p, const float *v, int n, int kp) {
    for (int e = 0; e < kp; e += 16) {
        __m512 o = _mm512_mul_ps(_mm512_loadu_ps(acc + e), cv);
        for (int i = 0; i < n; i++)
            o = _mm512_fmadd_ps(_mm512_set1_ps(p[i]),
                                _mm512_loadu_ps(v + (size_t)i * (size_t)kp + e), o);
        _mm512_storeu_ps(acc + e, o);
    }
}

/* Folds the first n positions of chunk c into row r. */
static void att512_fold(att512_row *r, const att512_chunk *c, int n, int kp, float scale) {
    __mmask16 m = (__mmask16)((1u << n) - 1u);
    __m512 sv = att512_scores(r->qs, c->k, n, kp, scale);
    float cmax = _mm512_mask_reduce_max_ps(m, sv);
    float nmx = cmax > r->mx ? cmax : r->mx;
    /* 0 on the first chunk (mx = -inf) */
    float corr = _mm512_cvtss_f32(exp16(_mm512_set1_ps(r->mx - nmx)));
    __m512 pw = _mm512_maskz_mov_ps(m, exp16(_mm512_sub_ps(sv, _mm512_set1_ps(nmx))));
    r->l = r->l * corr + _mm512_reduce_add_ps(pw);
    r->mx = nmx;
    float p[ATT_CHUNK];
    _mm512_storeu_ps(p, pw);
    __m512 cv = _mm512_set1_ps(corr);
    switch (kp / 16) {
    case 8:
        att512_pv_regs(r->acc, cv, p, c->v, n, kp, 8);
        break;
    case 4:
        att512_pv_regs(r->acc, cv, p, c->v, n, kp, 4);
        break;
    default:
        att512_pv_any(r->acc, cv, p, c->v, n, kp);
        break;
    }
}

/* Positions in the chunk that starts at p0: up to the block's end, at most ATT_CHUNK. */
static int att512_chunk_len(int p0, int bs) {
    int n = bs - p0 % bs;
    return n > ATT_CHUNK ? ATT_CHUNK : n;
}

/* Rows [0, nr) walk positions together (as the AVX2 attend_group): a chunk's K and V are widened
 * once for every consecutive row that reads the same block there (wide: K then V, ATT_CHUNK rows
 * of kp floats each). */
static void att512_group(att512_row *rows, int nr, const kv_pool *kv, int layer, int kv_head,
                         float scale, float *wide) {
    int d = kv->head_dim, kp = (d + 31) / 32 * 32, bs = kv->block_size, reach = 0;
    for (int r = 0; r < nr; r++) {
        memset(rows[r].acc, 0, sizeof *rows[r].acc * (size_t)kp);
        if (rows[r].n_pos > reach) reach = rows[r].n_pos;
    }
    float *wk = wide, *wv = wide + (size_t)ATT_CHUNK * (size_t)kp;
    for (int p0 = 0; p0 < reach; p0 += att512_chunk_len(p0, bs)) {
        int len = att512_chunk_len(p0, bs);
        int32_t cur = -1;
        att512_chunk c = {0};
        for (int r = 0; r < nr; r++) {
            if (p0 >= rows[r].n_pos) continue;
            int n = len < rows[r].n_pos - p0 ? len : rows[r].n_pos - p0;
            int32_t blk = rows[r].blocks[p0 / bs];
            if (blk != cur || n > c.n) {
                /* as far as the rows that read this block here reach (widening is exact, so a
                 * row reads the same values whoever widened them) */
                int built = n;
                for (int q = r + 1; q < nr && rows[q].blocks[p0 / bs] == blk; q++) {
                    int nq = len < rows[q].n_pos - p0 ? len : rows[q].n_pos - p0;
                    if (nq > built) built = nq;
                }
                size_t off = (size_t)(p0 % bs) * (size_t)d;
                att512_widen(wk, (const uint16_t *)kv_tile(kv, blk, layer, 0, kv_head) + off, built,
                             d, kp);
                att512_widen(wv, (const uint16_t *)kv_tile(kv, blk, layer, 1, kv_head) + off, built,
                             d, kp);
                c = (att512_chunk){wk, wv, built};
                cur = blk;
            }
            att512_fold(&rows[r], &c, n, kp, scale);
        }
    }
    const __m512i ie = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
    const __m512i io =
        _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
    for (int r = 0; r < nr; r++) { /* the split sums back in element order, then 1 / l */
        float inv = rows[r].l > 0.0f ? 1.0f / rows[r].l : 1.0f;
        for (int e = 0; e < kp; e += 32) {
            __m512 a = _mm512_loadu_ps(rows[r].acc + e), b = _mm512_loadu_ps(rows[r].acc + e + 16);
            _mm512_storeu_ps(rows[r].acc + e, _mm512_permutex2var_ps(a, ie, b));
            _mm512_storeu_ps(rows[r].acc + e + 16, _mm512_permutex2var_ps(a, io, b));
        }
        for (int i = 0; i < d; i++)
            rows[r].out[i] = rows[r].l > 0.0f ? rows[r].acc[i] * inv : rows[r].acc[i];
    }
}

void eng_attend_rows_avx512(const eng_att_row *in, int R, const kv_pool *kv, int layer, int kv_head,
                            float scale) {
    int d = kv->head_dim, kp = (d + 31) / 32 * 32;
    float *buf = NULL; /* per group row: split query, then running sums; then the wide chunk */
    if (kv->dtype == KV_BF16)
        buf = aligned_alloc(64, sizeof *buf * (size_t)kp * (2 * ATT_ROWS + 2 * ATT_CHUNK));
    if (!buf) { /* F32 pages, or no scratch: the AVX2 attention */
        eng_attend_rows_avx2(in, R, kv, layer, kv_head, scale);
        return;
    }
    float *wide = buf + (size_t)kp * 2 * ATT_ROWS;
    for (int g0 = 0; g0 < R; g0 += ATT_ROWS) {
        att512_row rows[ATT_ROWS];
        int nr = R - g0 < ATT_ROWS ? R - g0 : ATT_ROWS;
        for (int r = 0; r < nr; r++) {
            const eng_att_row *a = &in[g0 + r];
            float *qs = buf + (size_t)(2 * r) * (size_t)kp;
            split_row(qs, a->q, d, kp);
            rows[r] = (att512_row){a->out, qs + kp, qs, a->blocks, a->n_pos, -INFINITY, 0};
        }
        att512_group(rows, nr, kv, layer, kv_head, scale, wide);
    }
    free(buf);
}

void eng_attend_avx512(float *out, const float *q, const kv_pool *kv, const int32_t *blocks,
                       int layer, int kv_head, int n_pos, float scale) {
    eng_att_row row = {out, q, blocks, n_pos};
    eng_attend_rows_avx512(&row, 1, kv, layer, kv_head, scale);
}

const eng_kernels eng_kernels_avx512 = {
    .name = "avx512",
    .matmul = eng_matmul_avx512,
    .qmatmul = eng_qmatmul_avx512,
    .attend = eng_attend_avx512,
    .attend_rows = eng_attend_rows_avx512,
    .silu_mul = eng_silu_mul_avx2,
};
