/*
 * kern_avx512_inl.h — the inline pieces both AVX-512 tables share (kern_avx512.c, whose BF16
 * products widen weights to F32 for FMAs, and kern_avx512bf16.c, whose BF16 products take
 * VDPBF16PS): tail masks and the one fixed horizontal reduction, so that an element's last
 * additions are the same code in both. Private to those two files.
 */
#ifndef RADIXSERVE_ENGINE_KERN_AVX512_INL_H
#define RADIXSERVE_ENGINE_KERN_AVX512_INL_H

#include <immintrin.h>

#include "engine/kern_x86.h"

#define AVX512_INLINE static inline __attribute__((always_inline))

/* Mask of the first n (< 32) elements. */
AVX512_INLINE __mmask32 first_n(int n) {
    return (__mmask32)((1u << n) - 1u);
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

/* y[i * ldy + n + j] = hsum16(acc[i * stride + j]) for i < MR, j < NR (constants at every call):
 * eight sums at a time through hsum16_x8_lanes where they fill it, the rest one by one (the same
 * bits either way). The tiles of both tables leave through it. */
AVX512_INLINE void hsum16_store(float *y, int ldy, const __m512 *acc, int stride, int n, int MR,
                                int NR) {
    __m512 g[8];
    float *dst[8];
    int c = 0;
#pragma GCC unroll 6
    for (int i = 0; i < MR; i++)
#pragma GCC unroll 8
        for (int j = 0; j < NR; j++) {
            g[c] = acc[i * stride + j];
            dst[c++] = y + (size_t)i * (size_t)ldy + (size_t)(n + j);
            if (c == 8) {
                float t[16];
                _mm512_storeu_ps(t, hsum16_x8_lanes(g));
#pragma GCC unroll 8
                for (int q = 0; q < 8; q++) *dst[q] = t[HSUM16_X8_LANE(q)];
                c = 0;
            }
        }
    for (int q = 0; q < c; q++) *dst[q] = hsum16(g[q]);
}

#endif
