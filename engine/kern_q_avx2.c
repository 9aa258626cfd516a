/*
 * kern_q_avx2.c — the AVX2 table's products with block-quantized weights.
 *
 * Integer part: _mm256_maddubs_epi16 (unsigned x signed bytes, adjacent pairs summed to int16)
 * then _mm256_madd_epi16 by ones, so each int32 lane holds, exactly, the sum over 4 consecutive
 * elements of w_int * q_act. The pairs never saturate: Q8_0 takes |q_act| (<= 127) against the
 * weight with q_act's sign (2 x 127 x 127 < 32767); the unsigned nibbles / 6-bit values of Q4_0,
 * Q4_K and Q6_K go in as they are (2 x 63 x 127 < 32767) and Q4_0/Q6_K subtract 8 / 32 x (the
 * lane's activation sum) afterwards. Float part: each activation block of 32 converts its 8
 * lanes to float and adds them, times (weight scale x activation scale) per lane, into 8 F32
 * accumulators by FMA; Q4_K's min term is subtracted by FMA once per super-block; one fixed
 * horizontal reduction. Nothing depends on M, the tile shape or the column split.
 */
#include "engine/internal.h"
#include "engine/kern_q_x86.h"

/* Lanes of 4-element sums of u * s (u unsigned, s signed bytes; pairs must not saturate). */
QI __m256i dot4(__m256i u, __m256i s) {
    return _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1));
}

/* ((l0+l4)+(l2+l6)) + ((l1+l5)+(l3+l7)), as the AVX2 float path. */
QI float qhsum8(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
    return _mm_cvtss_f32(s);
}

QI float h2f(uint16_t h) {
    return _cvtsh_ss(h);
}

QI void zero_tile(__m256 acc[ENG_TILE_MR][QMAX_NR], int MR, int NR) {
#pragma GCC unroll 4
    for (int i = 0; i < MR; i++)
#pragma GCC unroll 4
        for (int j = 0; j < NR; j++) acc[i][j] = _mm256_setzero_ps();
}

QI void store_tile(const eng_qtile_args *a, int n, __m256 acc[ENG_TILE_MR][QMAX_NR], int MR,
                   int NR) {
#pragma GCC unroll 4
    for (int i = 0; i < MR; i++)
#pragma GCC unroll 4
        for (int j = 0; j < NR; j++)
            a->y[(size_t)i * (size_t)a->ldy + (size_t)(n + j)] = qhsum8(acc[i][j]);
}

/* ---------------------------------------------------------------- Q8_0, Q4_0 */

QI void q8_0_step(const eng_qtile_args *a, const char *w0, int b, int rest,
                  __m256 acc[ENG_TILE_MR][QMAX_NR], int MR, int NR) {
    (void)rest;
    __m256i w[QMAX_NR];
    float dw[QMAX_NR];
#pragma GCC unroll 4
    for (int j = 0; j < NR; j++) {
        const eng_block_q8_0 *wb = (const eng_block_q8_0 *)(w0 + (size_t)j * a->rb) + b;
        if (b % 2 == 0) pf_next(a, w0, j, NR, (size_t)b * sizeof *wb);
        w[j] = _mm256_loadu_si256((const __m256i *)wb->qs);
        dw[j] = h2f(wb->d);
    }
#pragma GCC unroll 4
    for (int i = 0; i < MR; i++) {
        __m256i xv = _mm256_loadu_si256((const __m256i *)(xq_row(a, i) + (size_t)b * ENG_QA));
        __m256i ax = _mm256_sign_epi8(xv, xv);
        float dx = xd_row(a, i)[b];
#pragma GCC unroll 4
        for (int j = 0; j < NR; j++) {
            __m256i p = dot4(ax, _mm256_sign_epi8(w[j], xv));
            acc[i][j] =
                _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), _mm256_set1_ps(dw[j] * dx), acc[i][j]);
        }
    }
}

Q_DEFINE_TILE(q8_0_tile, __m256, ENG_QA, 1, q8_0_step)

QI void q4_0_step(const eng_qtile_args *a, const char *w0, int b, int rest,
                  __m256 acc[ENG_TILE_MR][QMAX_NR], int MR, int NR) {
    (void)rest;
    const __m128i m4 = _mm_set1_epi8(0x0f);
    const __m256i eight = _mm256_set1_epi8(8);
    __m256i w[QMAX_NR];
    float dw[QMAX_NR];
#pragma GCC unroll 4
    for (int j = 0; j < NR; j++) {
        const eng_block_q4_0 *wb = (const eng_block_q4_0 *)(w0 + (size_t)j * a->rb) + b;
        if (b % 4 == 0) pf_next(a, w0, j, NR, (size_t)b * sizeof *wb);
        __m128i v = _mm_loadu_si128((const __m128i *)wb->qs);
        w[j] = _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(v, 4), m4), _mm_and_si128(v, m4));
        dw[j] = h2f(wb->d);
    }
#pragma GCC unroll 4
    for (int i = 0; i < MR; i++) {
        __m256i xv = _mm256_loadu_si256((const __m256i *)(xq_row(a, i) + (size_t)b * ENG_QA));
        __m256i corr = dot4(eight, xv);
        float dx = xd_row(a, i)[b];
#pragma GCC unroll 4
        for (int j = 0; j < NR; j++) {
            __m256i p = _mm256_sub_epi32(dot4(w[j], xv), corr);
            acc[i][j] =
                _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), _mm256_set1_ps(dw[j] * dx), acc[i][j]);
        }
    }
}

Q_DEFINE_TILE(q4_0_tile, __m256, ENG_QA, 1, q4_0_step)

/* ---------------------------------------------------------------- Q4_K */

QI void q4_K_super(const eng_qtile_args *a, const char *w0, int sb, int rest,
                   __m256 acc[ENG_TILE_MR][QMAX_NR], int MR, int NR) {
    (void)rest;
    const __m256i m4 = _mm256_set1_epi8(0x0f);
    const eng_block_q4_K *blk[QMAX_NR];
    float scd[QMAX_NR][8];
#pragma GCC unroll 4
    for (int j = 0; j < NR; j++) {
        blk[j] = (const eng_block_q4_K *)(w0 + (size_t)j * a->rb) + sb;
        __m256i s, m;
        q4k_scales8(blk[j]->scales, &s, &m);
        float D = h2f(blk[j]->d), Dm = h2f(blk[j]->dmin);
        _mm256_storeu_ps(scd[j], _mm256_mul_ps(_mm256_set1_ps(D), _mm256_cvtepi32_ps(s)));
        __m256 mnf = _mm256_mul_ps(_mm256_set1_ps(Dm), _mm256_cvtepi32_ps(m));
#pragma GCC unroll 4
        for (int i = 0; i < MR; i++)
            acc[i][j] =
                _mm256_fnmadd_ps(mnf, _mm256_loadu_ps(xs_row(a, i) + (size_t)sb * 8), acc[i][j]);
    }
    for (int g = 0; g < 4; g++) {
        __m256i w[QMAX_NR][2];
#pragma GCC unroll 4
        for (int j = 0; j < NR; j++) {
            pf_next(a, w0, j, NR, (size_t)sb * sizeof(eng_block_q4_K) + 32 * (size_t)g);
            __m256i v = _mm256_loadu_si256((const __m256i *)(blk[j]->qs + 32 * g));
            w[j][0] = _mm256_and_si256(v, m4);
            w[j][1] = _mm256_and_si256(_mm256_srli_epi16(v, 4), m4);
        }
#pragma GCC unroll 2
        for (int h = 0; h < 2; h++) {
            int s = 2 * g + h;
#pragma GCC unroll 4
            for (int i = 0; i < MR; i++) {
                __m256i xv = _mm256_loadu_si256(
                    (const __m256i *)(xq_row(a, i) + (size_t)sb * ENG_QK_K + 32 * (size_t)s));
                float dx = xd_row(a, i)[(size_t)sb * 8 + (size_t)s];
#pragma GCC unroll 4
                for (int j = 0; j < NR; j++) {
                    __m256i p = dot4(w[j][h], xv);
                    acc[i][j] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p),
                                                _mm256_set1_ps(scd[j][s] * dx), acc[i][j]);
                }
            }
        }
    }
}

Q_DEFINE_TILE(q4_K_tile, __m256, ENG_QK_K, 1, q4_K_super)

/* ---------------------------------------------------------------- Q6_K */

/* The 32 six-bit values of quarter q (elements 32q .. 32q + 31) of half h of a Q6_K block. */
QI __m256i q6k_quarter(const eng_block_q6_K *b, int h, int q) {
    const __m256i m4 = _mm256_set1_epi8(0x0f), m2 = _mm256_set1_epi8(3);
    __m256i ql = _mm256_loadu_si256((const __m256i *)(b->ql + 64 * h + 32 * (q & 1)));
    __m256i qh = _mm256_loadu_si256((const __m256i *)(b->qh + 32 * h));
    __m256i lo4 = _mm256_and_si256(q < 2 ? ql : _mm256_srli_epi16(ql, 4), m4);
    __m256i hi2 = _mm256_and_si256(_mm256_srli_epi16(qh, 2 * q), m2);
    return _mm256_or_si256(lo4, _mm256_slli_epi16(hi2, 4));
}

QI void q6_K_super(const eng_qtile_args *a, const char *w0, int sb, int rest,
                   __m256 acc[ENG_TILE_MR][QMAX_NR], int MR, int NR) {
    (void)rest;
    const __m256i k32 = _mm256_set1_epi8(32);
    const eng_block_q6_K *blk[QMAX_NR];
    float D[QMAX_NR];
#pragma GCC unroll 4
    for (int j = 0; j < NR; j++) {
        blk[j] = (const eng_block_q6_K *)(w0 + (size_t)j * a->rb) + sb;
        D[j] = h2f(blk[j]->d);
    }
    for (int c = 0; c < 8; c++) { /* activation block sb * 8 + c: half c / 4, quarter c % 4 */
        int h = c / 4, q = c % 4, s0 = 8 * h + 2 * q;
        __m256i w[QMAX_NR];
        __m128 s_lo[QMAX_NR], s_hi[QMAX_NR];
#pragma GCC unroll 4
        for (int j = 0; j < NR; j++) {
            pf_next(a, w0, j, NR, (size_t)sb * sizeof(eng_block_q6_K) + 32 * (size_t)c);
            w[j] = q6k_quarter(blk[j], h, q);
            s_lo[j] = _mm_set1_ps(D[j] * blk[j]->scales[s0]);
            s_hi[j] = _mm_set1_ps(D[j] * blk[j]->scales[s0 + 1]);
        }
#pragma GCC unroll 4
        for (int i = 0; i < MR; i++) {
            __m256i xv = _mm256_loadu_si256(
                (const __m256i *)(xq_row(a, i) + (size_t)sb * ENG_QK_K + 32 * (size_t)c));
            __m256i corr = dot4(k32, xv);
            __m256 dx = _mm256_set1_ps(xd_row(a, i)[(size_t)sb * 8 + (size_t)c]);
#pragma GCC unroll 4
            for (int j = 0; j < NR; j++) {
                __m256i p = _mm256_sub_epi32(dot4(w[j], xv), corr);
                __m256 sc = _mm256_mul_ps(_mm256_set_m128(s_hi[j], s_lo[j]), dx);
                acc[i][j] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), sc, acc[i][j]);
            }
        }
    }
}

Q_DEFINE_TILE(q6_K_tile, __m256, ENG_QK_K, 1, q6_K_super)

/* Weight rows per tile for 1..4 activation rows (16 registers: 4 to 8 accumulate). */
ENG_DEFINE_QMATMUL(eng_qmatmul_avx2, 4, 4, 2, 2, 1024 * 1024)
