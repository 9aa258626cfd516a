/*
 * kern_q_x86.h — what the AVX2 and AVX-512 quantized products (kern_q_avx2.c, kern_q_avx512.c)
 * share: access to a tile's activation rows, the next-tile prefetch, Q4_K's scale decoding and
 * the shape of a tile (accumulate over K units, then reduce). Included only by those two files,
 * which are both compiled with AVX2 or more.
 */
#ifndef RADIXSERVE_ENGINE_KERN_Q_X86_H
#define RADIXSERVE_ENGINE_KERN_Q_X86_H

#include <immintrin.h>
#include <string.h>

#include "engine/kern_x86.h"

#define QI static inline __attribute__((always_inline))

enum { QMAX_NR = 4 }; /* widest quantized tile in weight rows */

/* Row i of the tile's activations: int8 values, block scales, scale x block sums. */
QI const int8_t *xq_row(const eng_qtile_args *a, int i) {
    return a->x->qs + (size_t)(a->m0 + i) * (size_t)a->x->K;
}
QI const float *xd_row(const eng_qtile_args *a, int i) {
    return a->x->d + (size_t)(a->m0 + i) * (size_t)(a->x->K / ENG_QA);
}
QI const float *xs_row(const eng_qtile_args *a, int i) {
    return a->x->dsum + (size_t)(a->m0 + i) * (size_t)(a->x->K / ENG_QA);
}

/* Prefetch byte off of the next tile's row j (decode: weights stream). */
QI void pf_next(const eng_qtile_args *a, const char *w0, int j, int NR, size_t off) {
    if (a->stream) _mm_prefetch(w0 + (size_t)(j + NR) * a->rb + off, _MM_HINT_T0);
}

/* The 8 sub-block scales and mins of a Q4_K block as int32 lanes, decoded in 32-bit words
 * (u0, u1, u2 = bytes 0-3, 4-7, 8-11): scales 0-3 are the low 6 bits of u0, mins 0-3 of u1;
 * scales 4-7 take their low 4 bits from u2's low nibbles and their top 2 from u0's top bits,
 * mins 4-7 from u2's high nibbles and u1's top bits. */
QI void q4k_scales8(const uint8_t *q, __m256i *sc, __m256i *mn) {
    uint32_t u[3];
    memcpy(u, q, sizeof u);
    uint32_t s03 = u[0] & 0x3f3f3f3fu, m03 = u[1] & 0x3f3f3f3fu;
    uint32_t s47 = (u[2] & 0x0f0f0f0fu) | (((u[0] >> 6) & 0x03030303u) << 4);
    uint32_t m47 = ((u[2] >> 4) & 0x0f0f0f0fu) | (((u[1] >> 6) & 0x03030303u) << 4);
    __m128i v = _mm_set_epi32((int)m47, (int)m03, (int)s47, (int)s03);
    *sc = _mm256_cvtepu8_epi32(v);
    *mn = _mm256_cvtepu8_epi32(_mm_srli_si128(v, 8));
}

/*
 * Defines the tile NAME(a, n, MR, NR) of a file with VEC accumulators, zero_tile and store_tile:
 * accumulators zeroed, STEP(a, w0, u, rest, acc, MR, NR) called for u = 0, UNIT, 2 UNIT, ...
 * over the row's K / BLOCK blocks (rest: blocks left, so a step may take fewer than UNIT), then
 * reduced into y. Every element runs the same steps whatever MR, NR and the tile's place.
 */
#define Q_DEFINE_TILE(NAME, VEC, BLOCK, UNIT, STEP)                                                \
    QI void NAME(const eng_qtile_args *a, int n, int MR, int NR) {                                 \
        int nb = a->x->K / (BLOCK);                                                                \
        const char *w0 = a->W + (size_t)n * a->rb;                                                 \
        VEC acc[ENG_TILE_MR][QMAX_NR];                                                             \
        zero_tile(acc, MR, NR);                                                                    \
        for (int u = 0; u < nb; u += (UNIT)) STEP(a, w0, u, nb - u, acc, MR, NR);                  \
        store_tile(a, n, acc, MR, NR);                                                             \
    }

#endif
