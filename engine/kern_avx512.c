/*
 * kern_avx512.c — the AVX-512 kernel table (needs AVX512F/BW/VL/DQ, AVX512-BF16 and
 * AVX512-VNNI, which every AVX512-BF16 CPU has; the quantized products: kern_q_avx512.c). The
 * weight products, then the attention over BF16 pages (both with VDPBF16PS).
 *
 * BF16 weights: _mm512_dpbf16_ps multiplies pairs of BF16 values and adds both products into an
 * F32 lane, so the activations are rounded to BF16 (round to nearest even, by
 * _mm512_cvtne2ps_pbh) — the same bits for a GEMV and a GEMM, since rounding depends only on the
 * value. Element y[m][n] accumulates 16 lanes, lane j taking the pair (k, k+1) with
 * k % 32 = 2j, in k order; the K tail is zero-masked into one last step; then one fixed
 * horizontal reduction. F32 and F16 weights: F32 activations, FMA into 16 lanes (k % 16). As in
 * the AVX2 table, tile shapes never change an element's instruction sequence.
 */
#include <immintrin.h>
#include <math.h>
#include <stdlib.h>

#include "engine/kern_x86.h"

#define AVX512_INLINE static inline __attribute__((always_inline))

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

/* Mask of the first n (< 32) elements. */
AVX512_INLINE __mmask32 first_n(int n) {
    return (__mmask32)((1u << n) - 1u);
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

/* One step's worth of activations from element k, in the form the weight type's product takes:
 * BF16 pairs (rounded to nearest even) for BF16 weights, F32 otherwise. */
AVX512_INLINE __m512 load_x(const float *x, eng_dtype t, int k, int n, int full) {
    if (t != ENG_BF16)
        return full ? _mm512_loadu_ps(x + k) : _mm512_maskz_loadu_ps((__mmask16)first_n(n), x + k);
    __m512 lo, hi;
    if (full) {
        lo = _mm512_loadu_ps(x + k);
        hi = _mm512_loadu_ps(x + k + 16);
    } else {
        int nlo = n < 16 ? n : 16;
        lo = _mm512_maskz_loadu_ps((__mmask16)first_n(nlo), x + k);
        hi = _mm512_maskz_loadu_ps((__mmask16)first_n(n - nlo), x + k + 16);
    }
    return _mm512_castsi512_ps((__m512i)_mm512_cvtne2ps_pbh(hi, lo));
}

/* acc += x * w for one step, in the weight type's product. */
AVX512_INLINE __m512 step(__m512 acc, __m512 xv, __m512 wv, eng_dtype t) {
    if (t == ENG_BF16)
        return _mm512_dpbf16_ps(acc, (__m512bh)_mm512_castps_si512(xv),
                                (__m512bh)_mm512_castps_si512(wv));
    return _mm512_fmadd_ps(xv, wv, acc);
}

/* The fixed horizontal reduction: 16 -> 8 (low + high halves) -> 4 -> 2 -> 1. */
AVX512_INLINE float hsum16(__m512 v) {
    __m256 h = _mm256_add_ps(_mm512_castps512_ps256(v),
                             _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)));
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
    return _mm_cvtss_f32(s);
}

/* One step (full or tail) of an MR x NR tile. */
AVX512_INLINE void tile_step(__m512 acc[ENG_TILE_MR][AVX512_MAX_NR], const float *x, int K,
                             const char *w0, size_t rb, eng_dtype t, int k, int n, int full, int pf,
                             int MR, int NR) {
    __m512 w[AVX512_MAX_NR];
#pragma GCC unroll 8
    for (int j = 0; j < NR; j++) {
        const char *r = w0 + (size_t)j * rb;
        /* the same line of the next tile's row: see tile_gen in kern_avx2.c */
        if (full && pf) _mm_prefetch(r + (size_t)NR * rb + (size_t)k * elem_size(t), _MM_HINT_T0);
        w[j] = load_w(r, t, k, n, full);
    }
#pragma GCC unroll 4
    for (int i = 0; i < MR; i++) {
        __m512 xv = load_x(x + (size_t)i * (size_t)K, t, k, n, full);
#pragma GCC unroll 8
        for (int j = 0; j < NR; j++) acc[i][j] = step(acc[i][j], xv, w[j], t);
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
 * products: every tile re-reads and re-rounds its rows to BF16 (two loads and a conversion per
 * 32 elements), and four rows by four weight rows leave half the registers idle. The GEMM
 * path rounds each activation row to BF16 once per call into a buffer (the same rounding of
 * the same values, so the same pairs reach _mm512_dpbf16_ps), then runs tiles of GEMM_MR rows
 * by GEMM_NR weight rows (24 accumulators) over column blocks of weights kept in L2. An element
 * still takes, from zero, one dpbf16 per 32 elements in k order (the tail zero-masked on the
 * weight side and zero in the padded buffer on the activation side, as load_w/load_x give the
 * direct tile), then hsum16: the direct path's sequence, so M = 1 and M = 512 agree bit for bit
 * (tests/test_engine_kernels.c checks). Measured on a 2-vCPU Xeon (Emerald Rapids, AVX512-BF16,
 * one thread, 512 x 3072 x 1024): 8 x 3 tiles ~61 GFLOPS, 4 x 6 ~44, 4 x 4 ~44, against a
 * register-only dpbf16 loop's 60 on the same core: the product units are the limit.
 */
enum {
    GEMM_MR = 8,          /* activation rows per tile */
    GEMM_NR = 3,          /* weight rows per tile */
    GEMM_MIN_M = 16,      /* fewer rows: the direct tiles */
    GEMM_L2 = 512 * 1024, /* weight bytes per column block (half of Zen 4's L2) */
};

/* Activation row x (K floats) rounded to BF16 pairs into dst (kp = K rounded up to 32; the
 * pad is zero), as load_x rounds it step by step. */
static void round_row(uint16_t *dst, const float *x, int K, int kp) {
    for (int k = 0; k < kp; k += 32) {
        int n = K - k < 32 ? K - k : 32;
        _mm512_storeu_ps(dst + k, load_x(x, ENG_BF16, k, n, n == 32));
    }
}

/*
 * hsum16 of eight vectors at once, into y[i * ldy] for i < 8: the same additions in the same
 * pairs (lanes i + i+8, then i + i+4, i + i+2, 0 + 1), so each sum is hsum16's bit for bit,
 * but the shuffles serve two or four vectors each (16 shuffles for 8 sums instead of 32).
 */
AVX512_INLINE __m512 hsum16_x8_lanes(const __m512 a[8]) {
    __m512 c[4], d[2];
#pragma GCC unroll 4
    for (int p = 0; p < 4; p++) /* quads 0-1: a[2p]'s lanes i + i+8; quads 2-3: a[2p+1]'s */
        c[p] = _mm512_add_ps(_mm512_shuffle_f32x4(a[2 * p], a[2 * p + 1], _MM_SHUFFLE(1, 0, 1, 0)),
                             _mm512_shuffle_f32x4(a[2 * p], a[2 * p + 1], _MM_SHUFFLE(3, 2, 3, 2)));
#pragma GCC unroll 2
    for (int p = 0; p < 2; p++) /* quad q: a[4p + q]'s lanes i + i+4 */
        d[p] = _mm512_add_ps(_mm512_shuffle_f32x4(c[2 * p], c[2 * p + 1], _MM_SHUFFLE(2, 0, 2, 0)),
                             _mm512_shuffle_f32x4(c[2 * p], c[2 * p + 1], _MM_SHUFFLE(3, 1, 3, 1)));
    /* quad q: a[q]'s lanes i + i+2 (i < 2), then a[q + 4]'s */
    __m512 e = _mm512_add_ps(
        _mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(d[0]), _mm512_castps_pd(d[1]))),
        _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(d[0]), _mm512_castps_pd(d[1]))));
    /* quad q: lane 0 = a[q]'s sum, lane 1 = a[q + 4]'s */
    return _mm512_add_ps(_mm512_shuffle_ps(e, e, _MM_SHUFFLE(0, 0, 2, 0)),
                         _mm512_shuffle_ps(e, e, _MM_SHUFFLE(0, 0, 3, 1)));
}

/* Lane q of hsum16_x8_lanes's result holding a[q]'s sum (a[q - 4]'s in the high half of a pair). */
#define HSUM16_X8_LANE(q) ((q) < 4 ? 4 * (q) : 4 * ((q)-4) + 1)

AVX512_INLINE void hsum16_x8(float *y, size_t ldy, const __m512 a[8]) {
    float t[16];
    _mm512_storeu_ps(t, hsum16_x8_lanes(a));
#pragma GCC unroll 8
    for (int q = 0; q < 8; q++) y[(size_t)q * ldy] = t[HSUM16_X8_LANE(q)];
}

/* One step of 32 elements from k (n < 32: the zero-masked tail) of a GEMM tile; pf prefetches
 * the same line of the next tile's weight rows. */
AVX512_INLINE void gemm_step(__m512 acc[GEMM_MR][GEMM_NR], const uint16_t *xb, int kp,
                             const uint16_t *w0, int K, int k, int n, int pf, int MR, int NR) {
    __m512 w[GEMM_NR];
#pragma GCC unroll 3
    for (int j = 0; j < NR; j++) {
        const uint16_t *r = w0 + (size_t)j * (size_t)K;
        if (pf) _mm_prefetch((const char *)(r + (size_t)NR * (size_t)K + k), _MM_HINT_T0);
        w[j] = load_w(r, ENG_BF16, k, n, n == 32);
    }
#pragma GCC unroll 8
    for (int i = 0; i < MR; i++) {
        __m512 xv = _mm512_loadu_ps(xb + (size_t)i * (size_t)kp + k);
#pragma GCC unroll 3
        for (int j = 0; j < NR; j++) acc[i][j] = step(acc[i][j], xv, w[j], ENG_BF16);
    }
}

/* One GEMM tile: y[i][n + j] for i < MR, j < NR from the rounded rows xb (kp apart). */
AVX512_INLINE void gemm_tile(float *y, int ldy, const uint16_t *xb, int kp, const uint16_t *W,
                             int K, int n, int pf, int MR, int NR) {
    __m512 acc[GEMM_MR][GEMM_NR];
#pragma GCC unroll 8
    for (int i = 0; i < MR; i++)
#pragma GCC unroll 3
        for (int j = 0; j < NR; j++) acc[i][j] = _mm512_setzero_ps();
    const uint16_t *w0 = W + (size_t)n * (size_t)K;
    int k = 0;
    if (pf)
        for (; k + 32 <= K; k += 32) gemm_step(acc, xb, kp, w0, K, k, 32, 1, MR, NR);
    else
        for (; k + 32 <= K; k += 32) gemm_step(acc, xb, kp, w0, K, k, 32, 0, MR, NR);
    if (k < K) gemm_step(acc, xb, kp, w0, K, k, K - k, 0, MR, NR);
    if (MR == GEMM_MR) {
#pragma GCC unroll 3
        for (int j = 0; j < NR; j++) {
            __m512 col[GEMM_MR];
#pragma GCC unroll 8
            for (int i = 0; i < GEMM_MR; i++) col[i] = acc[i][j];
            hsum16_x8(y + n + j, (size_t)ldy, col);
        }
        return;
    }
#pragma GCC unroll 8
    for (int i = 0; i < MR; i++)
#pragma GCC unroll 3
        for (int j = 0; j < NR; j++)
            y[(size_t)i * (size_t)ldy + (size_t)(n + j)] = hsum16(acc[i][j]);
}

/* The tile for mr (1..8) rows and NR weight rows, with constant shapes. */
#define GEMM_ROWS(NR)                                                                              \
    AVX512_INLINE void gemm_rows_##NR(float *y, int ldy, const uint16_t *xb, int kp,               \
                                      const uint16_t *W, int K, int n, int pf, int mr) {           \
        switch (mr) {                                                                              \
        case 1:                                                                                    \
            gemm_tile(y, ldy, xb, kp, W, K, n, pf, 1, NR);                                         \
            break;                                                                                 \
        case 2:                                                                                    \
            gemm_tile(y, ldy, xb, kp, W, K, n, pf, 2, NR);                                         \
            break;                                                                                 \
        case 3:                                                                                    \
            gemm_tile(y, ldy, xb, kp, W, K, n, pf, 3, NR);                                         \
            break;                                                                                 \
        case 4:                                                                                    \
            gemm_tile(y, ldy, xb, kp, W, K, n, pf, 4, NR);                                         \
            break;                                                                                 \
        case 5:                                                                                    \
            gemm_tile(y, ldy, xb, kp, W, K, n, pf, 5, NR);                                         \
            break;                                                                                 \
        case 6:                                                                                    \
            gemm_tile(y, ldy, xb, kp, W, K, n, pf, 6, NR);                                         \
            break;                                                                                 \
        case 7:                                                                                    \
            gemm_tile(y, ldy, xb, kp, W, K, n, pf, 7, NR);                                         \
            break;                                                                                 \
        default:                                                                                   \
            gemm_tile(y, ldy, xb, kp, W, K, n, pf, 8, NR);                                         \
            break;                                                                                 \
        }                                                                                          \
    }
GEMM_ROWS(1)
GEMM_ROWS(2)
GEMM_ROWS(3)

/*
 * Columns [n0, n1) of y = x W^T from the rounded rows xb: weight column blocks of GEMM_L2
 * bytes stay in L2 while every row tile passes over them. K is not cut into chunks: for
 * down_proj (K = 3072, 8 rounded rows = 48 KB, all of a Golden Cove's L1) chunks of 1,024 with
 * the accumulators parked in memory between them measured no faster on the Xeon (one thread,
 * three interleaved pairs: 65-69 vs 66-76 GFLOPS), its L2 feeding the tiles fast enough.
 */
static void gemm_blocks(float *y, int ldy, const uint16_t *xb, int kp, int M, const uint16_t *W,
                        int K, int n0, int n1) {
    int nc = (int)(GEMM_L2 / ((size_t)K * 2)) / GEMM_NR * GEMM_NR;
    if (nc < GEMM_NR) nc = GEMM_NR;
    for (int c0 = n0; c0 < n1; c0 += nc) {
        int c1 = n1 - c0 < nc ? n1 : c0 + nc;
        for (int m0 = 0; m0 < M; m0 += GEMM_MR) {
            int mr = M - m0 < GEMM_MR ? M - m0 : GEMM_MR;
            float *ym = y + (size_t)m0 * (size_t)ldy;
            const uint16_t *xm = xb + (size_t)m0 * (size_t)kp;
            int n = c0, pf = m0 == 0; /* the first row tile reads the block from memory */
            for (; n + GEMM_NR <= c1; n += GEMM_NR) gemm_rows_3(ym, ldy, xm, kp, W, K, n, pf, mr);
            if (c1 - n == 2) gemm_rows_2(ym, ldy, xm, kp, W, K, n, pf, mr);
            if (c1 - n == 1) gemm_rows_1(ym, ldy, xm, kp, W, K, n, pf, mr);
        }
    }
}

/* The table's matmul: the BF16 GEMM for prefill-sized M (if its buffer can be had), else the
 * direct tiles. The buffer is per call (a few hundred KB to a few MB; malloc is noise beside
 * M x N x K products). */
static void avx512_matmul(float *y, int ldy, const float *x, int M, const void *W, eng_dtype wdt,
                          int K, int n0, int n1) {
    int kp = (K + 31) / 32 * 32;
    uint16_t *xb = NULL;
    if (wdt == ENG_BF16 && M >= GEMM_MIN_M && n1 > n0)
        xb = aligned_alloc(64, (size_t)M * (size_t)kp * sizeof *xb);
    if (!xb) {
        avx512_direct(y, ldy, x, M, W, wdt, K, n0, n1);
        return;
    }
    for (int m = 0; m < M; m++)
        round_row(xb + (size_t)m * (size_t)kp, x + (size_t)m * (size_t)K, K, kp);
    gemm_blocks(y, ldy, xb, kp, M, (const uint16_t *)W, K, n0, n1);
    free(xb);
}

/* ---------------------------------------------------------------- attention (BF16 pages) */

/*
 * With BF16 pages the AVX2 attention widens K and V to F32 and spends 8-lane FMAs on both
 * products, which measured ~14% of a 512-token prefill of Qwen3-0.6B shapes. Here both products
 * take VDPBF16PS, as the weight products do: the query is rounded to BF16 once per call (as
 * load_x rounds activations), each score is a GEMV-style dot (32 elements per step, zero-masked
 * tail, hsum16), and the softmax weights of a chunk are rounded to BF16 and multiply V two
 * positions at a time from a copy of the chunk's V interleaved in position pairs. The running
 * sum l adds the rounded weights, so the weights that multiply V are the ones that normalise.
 * Chunks are at most 16 positions (one vector of scores) and end at block ends, so they depend
 * only on positions; every row (decode or prefill, alone or in a group) runs the same sequence.
 * F32 pages keep the AVX2 attention (eng_attend_avx2): only BF16 pages are rounded further.
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

/* One query row's state (as the AVX2 attention's att_row) and its BF16-rounded query. */
typedef struct att512_row {
    float *out;            /* head_dim floats: the running weighted sum of V, then the result */
    const uint16_t *qb;    /* the query rounded to BF16, zero-padded to a multiple of 32 */
    const int32_t *blocks; /* its block table */
    int n_pos;             /* positions this row attends to */
    float mx, l;           /* running max score and running sum of the rounded weights */
} att512_row;

/* One chunk's K rows (as stored) and V interleaved in pairs: vp[t * dp + e] holds V[2t][e] in its
 * low half and V[2t + 1][e] in its high half (zero past the chunk). */
typedef struct att512_chunk {
    const uint16_t *k; /* K of the chunk's first position; rows d apart */
    const uint32_t *vp;
    int n; /* positions built */
} att512_chunk;

/* Builds vp for n positions of the V rows v (d apart); dp = d rounded up to 16. */
static void att512_pairs(uint32_t *vp, const uint16_t *v, int n, int d, int dp) {
    for (int t = 0; 2 * t < n; t++) {
        const uint16_t *a = v + (size_t)(2 * t) * (size_t)d, *b = a + d;
        int has_b = 2 * t + 1 < n;
        for (int e = 0; e < dp; e += 16) {
            __mmask16 m = (__mmask16)(d - e >= 16 ? 0xffff : (1u << (d - e)) - 1u);
            __m512i lo = _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, a + e));
            __m512i hi = has_b ? _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, b + e))
                               : _mm512_setzero_si512();
            _mm512_storeu_si512(vp + (size_t)t * (size_t)dp + e,
                                _mm512_or_si512(lo, _mm512_slli_epi32(hi, 16)));
        }
    }
}

/* The G (a constant) dots of qb with K rows k, k + d, ..., each a GEMV dot of its own: 32
 * elements per step, the zero-masked tail, then (G = 8) hsum16_x8_lanes, whose lanes hold
 * exactly hsum16 of each. */
AVX512_INLINE void att512_dots(__m512 acc[8], const uint16_t *qb, const uint16_t *k, int d, int G) {
#pragma GCC unroll 8
    for (int j = 0; j < G; j++) acc[j] = _mm512_setzero_ps();
    int e = 0;
    for (; e + 32 <= d; e += 32) {
        __m512 qv = _mm512_loadu_ps(qb + e);
#pragma GCC unroll 8
        for (int j = 0; j < G; j++)
            acc[j] =
                step(acc[j], qv, load_w(k + (size_t)j * (size_t)d, ENG_BF16, e, 32, 1), ENG_BF16);
    }
    if (e < d) {
        __m512 qv = _mm512_loadu_ps(qb + e);
#pragma GCC unroll 8
        for (int j = 0; j < G; j++)
            acc[j] = step(acc[j], qv, load_w(k + (size_t)j * (size_t)d, ENG_BF16, e, d - e, 0),
                          ENG_BF16);
    }
}

/* Lane i = scale * (qb . K row i) for i < n, zero beyond. A whole chunk of 16 stays in registers
 * (two hsum16_x8_lanes gathered into place); shorter ones go through memory. */
AVX512_INLINE __m512 att512_scores(const uint16_t *qb, const uint16_t *k, int n, int d,
                                   float scale) {
    __m512 acc[8];
    if (n == ATT_CHUNK) {
        att512_dots(acc, qb, k, d, 8);
        __m512 lo = hsum16_x8_lanes(acc);
        att512_dots(acc, qb, k + (size_t)8 * (size_t)d, d, 8);
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
        att512_dots(acc, qb, k + (size_t)i * (size_t)d, d, 8);
        hsum16_x8(s + i, 1, acc);
    }
    for (; i < n; i++) {
        att512_dots(acc, qb, k + (size_t)i * (size_t)d, d, 1);
        s[i] = hsum16(acc[0]);
    }
    return _mm512_mul_ps(_mm512_loadu_ps(s), _mm512_set1_ps(scale));
}

/* The weight pair t of a row's n rounded weights and the V pairs it multiplies: the last pair of
 * an odd n keeps only its first position (the second is not this row's). */
AVX512_INLINE __m512i att512_w(const uint32_t *pairs, int t, int n) {
    uint32_t w = pairs[t];
    return _mm512_set1_epi32((int)(2 * t + 1 < n ? w : w & 0xffffu));
}
AVX512_INLINE __m512i att512_v(const uint32_t *vp, int t, int n) {
    __m512i v = _mm512_loadu_si512(vp);
    return 2 * t + 1 < n ? v : _mm512_and_si512(v, _mm512_set1_epi32(0xffff));
}

/* out = out * corr + the pairs' products, NV (a constant) vectors of 16 outputs in registers;
 * each lane's sequence (scale, then one VDPBF16PS per pair in order) is the generic loop's. */
AVX512_INLINE void att512_pv_regs(float *out, __m512 cv, const uint32_t *pairs, const uint32_t *vp,
                                  int n, int d, int dp, int NV) {
    __m512 o[8];
#pragma GCC unroll 8
    for (int j = 0; j < NV; j++) {
        int e = 16 * j;
        __mmask16 me = (__mmask16)(d - e >= 16 ? 0xffff : (1u << (d - e)) - 1u);
        o[j] = _mm512_mul_ps(_mm512_maskz_loadu_ps(me, out + e), cv);
    }
    for (int t = 0; 2 * t < n; t++) {
        __m512bh w = (__m512bh)att512_w(pairs, t, n);
#pragma GCC unroll 8
        for (int j = 0; j < NV; j++)
            o[j] = _mm512_dpbf16_ps(o[j], w,
                                    (__m512bh)att512_v(vp + (size_t)t * (size_t)dp + 16 * j, t, n));
    }
#pragma GCC unroll 8
    for (int j = 0; j < NV; j++) {
        int e = 16 * j;
        __mmask16 me = (__mmask16)(d - e >= 16 ? 0xffff : (1u << (d - e)) - 1u);
        _mm512_mask_storeu_ps(out + e, me, o[j]);
    }
}

/* The same for any head_dim, one vector of outputs at a time. */
static void att512_pv_any(float *out, __m512 cv, const uint32_t *pairs, const uint32_t *vp, int n,
                          int d, int dp) {
    for (int e = 0; e < dp; e += 16) {
        __mmask16 me = (__mmask16)(d - e >= 16 ? 0xffff : (1u << (d - e)) - 1u);
        __m512 o = _mm512_mul_ps(_mm512_maskz_loadu_ps(me, out + e), cv);
        for (int t = 0; 2 * t < n; t++)
            o = _mm512_dpbf16_ps(o, (__m512bh)att512_w(pairs, t, n),
                                 (__m512bh)att512_v(vp + (size_t)t * (size_t)dp + e, t, n));
        _mm512_mask_storeu_ps(out + e, me, o);
    }
}

/* Folds the first n positions of chunk c into row r. */
static void att512_fold(att512_row *r, const att512_chunk *c, int n, int d, int dp, float scale) {
    __mmask16 m = (__mmask16)((1u << n) - 1u);
    __m512 sv = att512_scores(r->qb, c->k, n, d, scale);
    float cmax = _mm512_mask_reduce_max_ps(m, sv);
    float nmx = cmax > r->mx ? cmax : r->mx;
    /* 0 on the first chunk (mx = -inf) */
    float corr = _mm512_cvtss_f32(exp16(_mm512_set1_ps(r->mx - nmx)));
    __m256bh pb =
        _mm512_cvtneps_pbh(_mm512_maskz_mov_ps(m, exp16(_mm512_sub_ps(sv, _mm512_set1_ps(nmx)))));
    __m512 pw = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32((__m256i)pb), 16));
    r->l = r->l * corr + _mm512_reduce_add_ps(pw);
    r->mx = nmx;
    uint32_t pairs[ATT_CHUNK / 2];
    _mm256_storeu_si256((__m256i *)pairs, (__m256i)pb);
    __m512 cv = _mm512_set1_ps(corr);
    switch (dp / 16) {
    case 8:
        att512_pv_regs(r->out, cv, pairs, c->vp, n, d, dp, 8);
        break;
    case 4:
        att512_pv_regs(r->out, cv, pairs, c->vp, n, d, dp, 4);
        break;
    default:
        att512_pv_any(r->out, cv, pairs, c->vp, n, d, dp);
        break;
    }
}

/* Positions in the chunk that starts at p0: up to the block's end, at most ATT_CHUNK. */
static int att512_chunk_len(int p0, int bs) {
    int n = bs - p0 % bs;
    return n > ATT_CHUNK ? ATT_CHUNK : n;
}

/* Rows [0, nr) walk positions together (as the AVX2 attend_group): a chunk's V pairs are built
 * once for every consecutive row that reads the same block there. */
static void att512_group(att512_row *rows, int nr, const kv_pool *kv, int layer, int kv_head,
                         float scale, uint32_t *vp) {
    int d = kv->head_dim, dp = (d + 15) / 16 * 16, bs = kv->block_size, reach = 0;
    for (int r = 0; r < nr; r++) {
        for (int i = 0; i < d; i++) rows[r].out[i] = 0.0f;
        if (rows[r].n_pos > reach) reach = rows[r].n_pos;
    }
    for (int p0 = 0; p0 < reach; p0 += att512_chunk_len(p0, bs)) {
        int len = att512_chunk_len(p0, bs);
        int32_t cur = -1;
        att512_chunk c = {0};
        for (int r = 0; r < nr; r++) {
            if (p0 >= rows[r].n_pos) continue;
            int n = len < rows[r].n_pos - p0 ? len : rows[r].n_pos - p0;
            int32_t blk = rows[r].blocks[p0 / bs];
            if (blk != cur || n > c.n) {
                int built = len < reach - p0 ? len : reach - p0;
                const uint16_t *kt = kv_tile(kv, blk, layer, 0, kv_head);
                const uint16_t *vt = kv_tile(kv, blk, layer, 1, kv_head);
                size_t off = (size_t)(p0 % bs) * (size_t)d;
                /* a block only this row reads here: just its own positions */
                if (!(r + 1 < nr && rows[r + 1].blocks[p0 / bs] == blk)) built = n;
                att512_pairs(vp, vt + off, built, d, dp);
                c = (att512_chunk){kt + off, vp, built};
                cur = blk;
            }
            att512_fold(&rows[r], &c, n, d, dp, scale);
        }
    }
    for (int r = 0; r < nr; r++) {
        if (!(rows[r].l > 0.0f)) continue;
        float inv = 1.0f / rows[r].l;
        for (int i = 0; i < d; i++) rows[r].out[i] *= inv;
    }
}

static void avx512_attend_rows(const eng_att_row *in, int R, const kv_pool *kv, int layer,
                               int kv_head, float scale) {
    int d = kv->head_dim, kp = (d + 31) / 32 * 32, dp = (d + 15) / 16 * 16;
    uint16_t *qb = NULL;
    uint32_t *vp = NULL;
    if (kv->dtype == KV_BF16) {
        qb = aligned_alloc(64, sizeof *qb * (size_t)ATT_ROWS * (size_t)kp);
        vp = aligned_alloc(64, sizeof *vp * (size_t)(ATT_CHUNK / 2) * (size_t)dp);
    }
    if (!qb || !vp) { /* F32 pages, or no scratch: the AVX2 attention */
        free(qb);
        free(vp);
        eng_attend_rows_avx2(in, R, kv, layer, kv_head, scale);
        return;
    }
    for (int g0 = 0; g0 < R; g0 += ATT_ROWS) {
        att512_row rows[ATT_ROWS];
        int nr = R - g0 < ATT_ROWS ? R - g0 : ATT_ROWS;
        for (int r = 0; r < nr; r++) {
            const eng_att_row *a = &in[g0 + r];
            uint16_t *q = qb + (size_t)r * (size_t)kp;
            round_row(q, a->q, d, kp);
            rows[r] = (att512_row){a->out, q, a->blocks, a->n_pos, -INFINITY, 0};
        }
        att512_group(rows, nr, kv, layer, kv_head, scale, vp);
    }
    free(qb);
    free(vp);
}

static void avx512_attend(float *out, const float *q, const kv_pool *kv, const int32_t *blocks,
                          int layer, int kv_head, int n_pos, float scale) {
    eng_att_row row = {out, q, blocks, n_pos};
    avx512_attend_rows(&row, 1, kv, layer, kv_head, scale);
}

const eng_kernels eng_kernels_avx512 = {
    .name = "avx512",
    .matmul = avx512_matmul,
    .qmatmul = eng_qmatmul_avx512,
    .attend = avx512_attend,
    .attend_rows = avx512_attend_rows,
    .silu_mul = eng_silu_mul_avx2,
};
