/*
 * kern_avx512.c — the AVX-512 kernel table (needs AVX512F/BW/VL/DQ and AVX512-BF16).
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
 * 1 MB weight column blocks as in the AVX2 table, where they measured best (not yet measured on
 * an AVX-512 machine). */
ENG_DEFINE_MATMUL(avx512_matmul, 8, 8, 6, 4, 1024 * 1024)

const eng_kernels eng_kernels_avx512 = {
    .name = "avx512",
    .matmul = avx512_matmul,
    .attend = eng_attend_avx2,
    .attend_rows = eng_attend_rows_avx2,
};
