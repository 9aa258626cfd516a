/*
 * kern_q_avx512.c — the AVX-512 table's products with block-quantized weights (AVX512-VNNI).
 *
 * Integer part: _mm512_dpbusd_epi32 multiplies unsigned by signed bytes and adds each group of
 * four products into an int32 lane. Every lane thus holds, exactly, the sum over 4 consecutive
 * elements of w_int * q_act (w_int the format's signed value): for signed Q8_0 weights the
 * activations are offset by +128 and the lane starts at -128 * (sum of the 4 weights); for the
 * unsigned nibbles/6-bit values of Q4_0 and Q6_K the lane starts at -8 or -32 * (sum of the 4
 * activations). Float part: each step converts the 16 lanes (64 elements) to float and adds
 * them, times (weight scale x activation scale) per lane, into 16 F32 accumulators by FMA;
 * Q4_K's min term is subtracted by FMA in the low 8 lanes once per super-block; one fixed
 * horizontal reduction at the end. Nothing depends on M, the tile shape or the column split.
 */
#include "engine/kern_q_x86.h"

/* Row i of the tile's activations. */

/* 16 -> 8 -> 4 -> 2 -> 1, the AVX-512 table's fixed reduction. */
QI float qhsum16(__m512 v) {
    __m256 h = _mm256_add_ps(_mm512_castps512_ps256(v), _mm512_extractf32x8_ps(v, 1));
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
    return _mm_cvtss_f32(s);
}

QI void store_tile(const eng_qtile_args *a, int n, __m512 acc[ENG_TILE_MR][QMAX_NR], int MR,
                   int NR) {
#pragma GCC unroll 4
    for (int i = 0; i < MR; i++)
#pragma GCC unroll 4
        for (int j = 0; j < NR; j++)
            a->y[(size_t)i * (size_t)a->ldy + (size_t)(n + j)] = qhsum16(acc[i][j]);
}

QI void zero_tile(__m512 acc[ENG_TILE_MR][QMAX_NR], int MR, int NR) {
#pragma GCC unroll 4
    for (int i = 0; i < MR; i++)
#pragma GCC unroll 4
        for (int j = 0; j < NR; j++) acc[i][j] = _mm512_setzero_ps();
}

/* Two F32 values, each in 8 lanes: [lo x 8, hi x 8]. */
QI __m512 pair8(float lo, float hi) {
    return _mm512_insertf32x8(_mm512_castps256_ps512(_mm256_set1_ps(lo)), _mm256_set1_ps(hi), 1);
}

/* ---------------------------------------------------------------- Q8_0 */

/* Blocks b and b + 1 (b alone when it is the last) of MR x NR elements. */
QI void q8_0_step(const eng_qtile_args *a, const char *w0, int b, int rest,
                  __m512 acc[ENG_TILE_MR][QMAX_NR], int MR, int NR) {
    int two = rest >= 2; /* blocks b and b + 1, or b alone (the rest zero) */
    const __m512i off = _mm512_set1_epi8((char)0x80), zero = _mm512_setzero_si512();
    __m512i w[QMAX_NR], neg[QMAX_NR];
    __m512 dw[QMAX_NR];
#pragma GCC unroll 4
    for (int j = 0; j < NR; j++) {
        const eng_block_q8_0 *wb = (const eng_block_q8_0 *)(w0 + (size_t)j * a->rb) + b;
        pf_next(a, w0, j, NR, (size_t)b * sizeof *wb);
        pf_next(a, w0, j, NR, (size_t)b * sizeof *wb + 64);
        __m256i lo = _mm256_loadu_si256((const __m256i *)wb[0].qs);
        __m256i hi = two ? _mm256_loadu_si256((const __m256i *)wb[1].qs) : _mm256_setzero_si256();
        w[j] = _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1);
        neg[j] = _mm512_sub_epi32(zero, _mm512_dpbusd_epi32(zero, off, w[j]));
        __m128i dlo = _mm_set1_epi16((short)wb[0].d);
        __m128i dhi = two ? _mm_set1_epi16((short)wb[1].d) : _mm_setzero_si128();
        dw[j] = _mm512_cvtph_ps(_mm256_set_m128i(dhi, dlo));
    }
#pragma GCC unroll 4
    for (int i = 0; i < MR; i++) {
        const int8_t *q = xq_row(a, i) + (size_t)b * ENG_QA;
        const float *d = xd_row(a, i) + b;
        __m512i xv = two ? _mm512_loadu_si512(q)
                         : _mm512_zextsi256_si512(_mm256_loadu_si256((const __m256i *)q));
        __m512i xu = _mm512_xor_si512(xv, off);
        __m512 dx = pair8(d[0], two ? d[1] : 0.0f);
#pragma GCC unroll 4
        for (int j = 0; j < NR; j++) {
            __m512i p = _mm512_dpbusd_epi32(neg[j], xu, w[j]);
            acc[i][j] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(p), _mm512_mul_ps(dw[j], dx), acc[i][j]);
        }
    }
}

Q_DEFINE_TILE(q8_0_tile, __m512, ENG_QA, 2, q8_0_step)

/* ---------------------------------------------------------------- Q4_0 */

/* Lanes of blocks b, b + 1 as the nibbles come: [b 0..15, b+1 0..15, b 16..31, b+1 16..31]. */
QI __m512 quad4(float lo, float hi) {
    __m256 h = _mm256_set_m128(_mm_set1_ps(hi), _mm_set1_ps(lo));
    return _mm512_insertf32x8(_mm512_castps256_ps512(h), h, 1);
}

QI void q4_0_step(const eng_qtile_args *a, const char *w0, int b, int rest,
                  __m512 acc[ENG_TILE_MR][QMAX_NR], int MR, int NR) {
    int two = rest >= 2; /* blocks b and b + 1, or b alone (the rest zero) */
    const __m512i zero = _mm512_setzero_si512(), eight = _mm512_set1_epi8(8);
    const __m256i m4 = _mm256_set1_epi8(0x0f);
    __m512i w[QMAX_NR];
    __m512 dw[QMAX_NR];
#pragma GCC unroll 4
    for (int j = 0; j < NR; j++) {
        const eng_block_q4_0 *wb = (const eng_block_q4_0 *)(w0 + (size_t)j * a->rb) + b;
        pf_next(a, w0, j, NR, (size_t)b * sizeof *wb);
        __m128i lo = _mm_loadu_si128((const __m128i *)wb[0].qs);
        __m128i hi = two ? _mm_loadu_si128((const __m128i *)wb[1].qs) : _mm_setzero_si128();
        __m256i v = _mm256_set_m128i(hi, lo);
        __m256i n_lo = _mm256_and_si256(v, m4),
                n_hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), m4);
        w[j] = _mm512_inserti64x4(_mm512_castsi256_si512(n_lo), n_hi, 1);
        __m128i h = _mm_unpacklo_epi64(_mm_set1_epi16((short)wb[0].d),
                                       two ? _mm_set1_epi16((short)wb[1].d) : _mm_setzero_si128());
        __m256 d8 = _mm256_cvtph_ps(h);
        dw[j] = _mm512_insertf32x8(_mm512_castps256_ps512(d8), d8, 1);
    }
#pragma GCC unroll 4
    for (int i = 0; i < MR; i++) {
        const int8_t *q = xq_row(a, i) + (size_t)b * ENG_QA;
        const float *d = xd_row(a, i) + b;
        __m512i xv = two ? _mm512_loadu_si512(q)
                         : _mm512_zextsi256_si512(_mm256_loadu_si256((const __m256i *)q));
        __m512i xp = _mm512_shuffle_i64x2(xv, xv, _MM_SHUFFLE(3, 1, 2, 0));
        __m512i neg = _mm512_sub_epi32(zero, _mm512_dpbusd_epi32(zero, eight, xp));
        __m512 dx = quad4(d[0], two ? d[1] : 0.0f);
#pragma GCC unroll 4
        for (int j = 0; j < NR; j++) {
            __m512i p = _mm512_dpbusd_epi32(neg, w[j], xp);
            acc[i][j] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(p), _mm512_mul_ps(dw[j], dx), acc[i][j]);
        }
    }
}

Q_DEFINE_TILE(q4_0_tile, __m512, ENG_QA, 2, q4_0_step)

/* ---------------------------------------------------------------- Q4_K */

/* Lane l of idx: element 2g + l / 8 (sub-blocks 2g and 2g + 1 of a super-block). */
QI __m512i pair_idx(int g) {
    return _mm512_add_epi32(
        _mm512_set1_epi32(2 * g),
        _mm512_srli_epi32(_mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0),
                          3));
}

QI void q4_K_super(const eng_qtile_args *a, const char *w0, int sb, int rest,
                   __m512 acc[ENG_TILE_MR][QMAX_NR], int MR, int NR) {
    (void)rest;
    const __m256i m4 = _mm256_set1_epi8(0x0f);
    const __m512i zero = _mm512_setzero_si512();
    const eng_block_q4_K *blk[QMAX_NR];
    __m512 scf[QMAX_NR];
#pragma GCC unroll 4
    for (int j = 0; j < NR; j++) {
        blk[j] = (const eng_block_q4_K *)(w0 + (size_t)j * a->rb) + sb;
        __m256i sc, mn;
        q4k_scales8(blk[j]->scales, &sc, &mn);
        float D = _cvtsh_ss(blk[j]->d), Dm = _cvtsh_ss(blk[j]->dmin);
        scf[j] = _mm512_zextps256_ps512(_mm256_mul_ps(_mm256_set1_ps(D), _mm256_cvtepi32_ps(sc)));
        __m512 mnf =
            _mm512_zextps256_ps512(_mm256_mul_ps(_mm256_set1_ps(Dm), _mm256_cvtepi32_ps(mn)));
#pragma GCC unroll 4
        for (int i = 0; i < MR; i++) {
            __m512 ds = _mm512_zextps256_ps512(_mm256_loadu_ps(xs_row(a, i) + (size_t)sb * 8));
            acc[i][j] = _mm512_fnmadd_ps(mnf, ds, acc[i][j]);
        }
    }
#pragma GCC unroll 4
    for (int g = 0; g < 4; g++) {
        __m512i idx = pair_idx(g), w[QMAX_NR];
        __m512 sg[QMAX_NR];
#pragma GCC unroll 4
        for (int j = 0; j < NR; j++) {
            pf_next(a, w0, j, NR, (size_t)sb * sizeof(eng_block_q4_K) + 32 * (size_t)g);
            __m256i v = _mm256_loadu_si256((const __m256i *)(blk[j]->qs + 32 * g));
            w[j] = _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_and_si256(v, m4)),
                                      _mm256_and_si256(_mm256_srli_epi16(v, 4), m4), 1);
            sg[j] = _mm512_permutexvar_ps(idx, scf[j]);
        }
#pragma GCC unroll 4
        for (int i = 0; i < MR; i++) {
            __m512i xv = _mm512_loadu_si512(xq_row(a, i) + (size_t)sb * ENG_QK_K + 64 * g);
            __m512 dx = _mm512_permutexvar_ps(
                idx, _mm512_zextps256_ps512(_mm256_loadu_ps(xd_row(a, i) + (size_t)sb * 8)));
#pragma GCC unroll 4
            for (int j = 0; j < NR; j++) {
                __m512i p = _mm512_dpbusd_epi32(zero, w[j], xv);
                acc[i][j] =
                    _mm512_fmadd_ps(_mm512_cvtepi32_ps(p), _mm512_mul_ps(sg[j], dx), acc[i][j]);
            }
        }
    }
}

Q_DEFINE_TILE(q4_K_tile, __m512, ENG_QK_K, 1, q4_K_super)

/* ---------------------------------------------------------------- Q6_K */

/* Lane l of idx: base + l / div. */
QI __m512i div_idx(int base, int shift) {
    return _mm512_add_epi32(
        _mm512_set1_epi32(base),
        _mm512_srli_epi32(_mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0),
                          (unsigned)shift));
}

/* The 64 six-bit values of chunk c (elements 64c .. 64c + 63) of a Q6_K block. */
QI __m512i q6k_chunk(const eng_block_q6_K *b, int c) {
    const __m512i m4 = _mm512_set1_epi8(0x0f), m2 = _mm512_set1_epi8(3);
    int h = c / 2, hi = c % 2;
    __m512i ql = _mm512_loadu_si512(b->ql + 64 * h);
    __m512i qh = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)(b->qh + 32 * h)));
    /* low half of the chunk takes qh bits (4 hi + 0), the high half bits (4 hi + 2) */
    __m512i cnt = _mm512_inserti64x4(_mm512_set1_epi16((short)(4 * hi)),
                                     _mm256_set1_epi16((short)(4 * hi + 2)), 1);
    __m512i lo4 = _mm512_and_si512(hi ? _mm512_srli_epi16(ql, 4) : ql, m4);
    __m512i hi2 = _mm512_and_si512(_mm512_srlv_epi16(qh, cnt), m2);
    return _mm512_or_si512(lo4, _mm512_slli_epi16(hi2, 4));
}

QI void q6_K_super(const eng_qtile_args *a, const char *w0, int sb, int rest,
                   __m512 acc[ENG_TILE_MR][QMAX_NR], int MR, int NR) {
    (void)rest;
    const __m512i zero = _mm512_setzero_si512(), k32 = _mm512_set1_epi8(32);
    const eng_block_q6_K *blk[QMAX_NR];
    __m512 scf[QMAX_NR];
#pragma GCC unroll 4
    for (int j = 0; j < NR; j++) {
        blk[j] = (const eng_block_q6_K *)(w0 + (size_t)j * a->rb) + sb;
        __m512 s = _mm512_cvtepi32_ps(
            _mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)blk[j]->scales)));
        scf[j] = _mm512_mul_ps(_mm512_set1_ps(_cvtsh_ss(blk[j]->d)), s);
    }
#pragma GCC unroll 4
    for (int c = 0; c < 4; c++) {
        __m512i w[QMAX_NR];
        __m512 sg[QMAX_NR];
        __m512i sidx = div_idx(4 * c, 2), xidx = div_idx(2 * c, 3);
#pragma GCC unroll 4
        for (int j = 0; j < NR; j++) {
            pf_next(a, w0, j, NR, (size_t)sb * sizeof(eng_block_q6_K) + 64 * (size_t)c);
            w[j] = q6k_chunk(blk[j], c);
            sg[j] = _mm512_permutexvar_ps(sidx, scf[j]);
        }
#pragma GCC unroll 4
        for (int i = 0; i < MR; i++) {
            __m512i xv = _mm512_loadu_si512(xq_row(a, i) + (size_t)sb * ENG_QK_K + 64 * c);
            __m512i neg = _mm512_sub_epi32(zero, _mm512_dpbusd_epi32(zero, k32, xv));
            __m512 dx = _mm512_permutexvar_ps(
                xidx, _mm512_zextps256_ps512(_mm256_loadu_ps(xd_row(a, i) + (size_t)sb * 8)));
#pragma GCC unroll 4
            for (int j = 0; j < NR; j++) {
                __m512i p = _mm512_dpbusd_epi32(neg, w[j], xv);
                acc[i][j] =
                    _mm512_fmadd_ps(_mm512_cvtepi32_ps(p), _mm512_mul_ps(sg[j], dx), acc[i][j]);
            }
        }
    }
}

Q_DEFINE_TILE(q6_K_tile, __m512, ENG_QK_K, 1, q6_K_super)

/* Weight rows per tile for 1..4 activation rows; 1 MB column blocks as the BF16 path. */
ENG_DEFINE_QMATMUL(eng_qmatmul_avx512, 4, 4, 3, 2, 1024 * 1024)
