/*
 * kern_q_avx512.c — the AVX-512 table's products with block-quantized weights (AVX512-VNNI):
 * Q8_0, Q4_0, Q4_K and Q6_K, every element bit for bit the scalar reference eng_qdot_ref.
 *
 * Each lane of a vector is one weight row (16 rows side by side), not 4 elements of one row, so
 * the float work is done once per (row, block) and not once per 4 elements. The integer part:
 * _mm512_dpbusd_epi32 multiplies unsigned by signed bytes and adds each group of four products
 * into an int32 lane; the weights go in as the unsigned operand, their values + 128 (Q4_K its
 * 4-bit values as they are), the activations' int8 values as the signed one, and the lane starts
 * at qneg = -128 x (sum of the activation values) to take the offset out again (Q4_K at 0): each
 * block's (Q6_K: each 16's) sum of w_int x q is exact. The float part, per (row, block) in block
 * order, is the reference's own expression without FMA: acc + (float)isum x (dw x dx) (Q4_K:
 * minus dmin x dsum; Q6_K: one step per 16 with its own scale), the scales being the
 * reference's F32 products (D x sc for the K-quants). So the result is eng_qdot_ref's, whatever
 * M, the path, the tile or the column split: batch invariance by construction.
 *
 * Two paths compute those same sums:
 *   - packed (4 or more activation rows: prefill, batched decode): a thread packs 16 weight
 *     rows (a panel) x QP_KC blocks into qp_blocks, per block the 16 rows' F32 scales and their
 *     values + 128 as dword g of lane j = values 4g .. 4g + 3 of row j (a 16 x 16 dword
 *     transpose per two blocks). One dpbusd per 4 values then adds into lane j with the
 *     activation's 4 values broadcast, 8 of them make a block's sum, and a register tile of up
 *     to 4 activation rows x 2 panels reuses every packed vector 4 times and every broadcast
 *     twice: ~12 instructions per 512 multiply-adds. K is cut into chunks of QP_KC blocks only
 *     to bound the panel; the running sum waits in y between chunks, exactly.
 *   - unpacked (1 to 3 rows, qr_max: decode): the pack's transpose and stores cost more than
 *     they save when each packed vector serves one row, so dpbusd runs on a weight row's own 64
 *     values (two blocks) against the activation's and a transposing reduction (reduce16) adds
 *     each row's lanes per block into lane j of one vector per block. It prefetches the next 16
 *     rows' line into L2, not L1: on a Zen 4, Q8_0 decode went from 27 to 42-46 tokens/s
 *     (bench/pairs.sh, 2026-12-04) with that one change.
 * Scales come in by gathers across the 16 rows (Q8_0, Q4_0 the F16 d; Q4_K the 12 packed scale
 * bytes decoded lane-wise; Q6_K the int8 scales).
 */
#include <stddef.h>

#include "engine/kern_q_x86.h"

enum {
    QP_ROWS = 16, /* weight rows per panel (lanes) */
    QP_NV = 2,    /* panels per register tile */
    QP_KC = 48,   /* blocks per K chunk: the tile's packed weights, 61 KB, stay in L2 */
};
_Static_assert(QP_KC % 8 == 0, "a K chunk is whole Q4_K / Q6_K super-blocks");

typedef struct qp_block {
    float d[QP_ROWS];          /* row j's scale (Q4_K: D x sc; Q6_K: of the first 16) */
    float m[QP_ROWS];          /* Q4_K: row j's min Dmin x mn; Q6_K: the second 16's scale */
    uint8_t q[8][4 * QP_ROWS]; /* [g][4 j + e]: row j's value 4 g + e, + 128 */
} qp_block;

/* The 16 x 16 dword transpose: r[j] dword k -> o[k] dword j. */
QI void transpose16(__m512i r[16], __m512i o[16]) {
    __m512i t[16], u[16];
    for (int p = 0; p < 16; p += 2) {
        t[p] = _mm512_unpacklo_epi32(r[p], r[p + 1]);
        t[p + 1] = _mm512_unpackhi_epi32(r[p], r[p + 1]);
    }
    for (int p = 0; p < 16; p += 4) { /* u[p + c]: column c of each 128-bit lane, rows p..p+3 */
        u[p] = _mm512_unpacklo_epi64(t[p], t[p + 2]);
        u[p + 1] = _mm512_unpackhi_epi64(t[p], t[p + 2]);
        u[p + 2] = _mm512_unpacklo_epi64(t[p + 1], t[p + 3]);
        u[p + 3] = _mm512_unpackhi_epi64(t[p + 1], t[p + 3]);
    }
    for (int c = 0; c < 4; c++) {
        __m512i v0 = _mm512_shuffle_i32x4(u[c], u[4 + c], 0x88),
                v1 = _mm512_shuffle_i32x4(u[c], u[4 + c], 0xdd),
                w0 = _mm512_shuffle_i32x4(u[8 + c], u[12 + c], 0x88),
                w1 = _mm512_shuffle_i32x4(u[8 + c], u[12 + c], 0xdd);
        o[c] = _mm512_shuffle_i32x4(v0, w0, 0x88);
        o[8 + c] = _mm512_shuffle_i32x4(v0, w0, 0xdd);
        o[4 + c] = _mm512_shuffle_i32x4(v1, w1, 0x88);
        o[12 + c] = _mm512_shuffle_i32x4(v1, w1, 0xdd);
    }
}

/* Byte offset in a row of t of the data of 32-block b (Q4_K, Q6_K: of its super-block). */
QI size_t qp_off(eng_dtype t, int b) {
    return t == ENG_Q8_0   ? (size_t)b * sizeof(eng_block_q8_0)
           : t == ENG_Q4_0 ? (size_t)b * sizeof(eng_block_q4_0)
           : t == ENG_Q4_K ? (size_t)(b / 8) * sizeof(eng_block_q4_K)
                           : (size_t)(b / 8) * sizeof(eng_block_q6_K);
}

/* Q4_K: the F32 scales D x sc and mins Dmin x mn (the reference's own products) of super-block
 * sb's 8 sub-blocks, lane j for row j of the panel at w (rows outside `live` 0), into
 * p[s * stride].d and .m: the 12 packed bytes of 16 rows gathered as three dwords and decoded
 * lane-wise as q4k_scales8 does for one row. */
QI void q4k_pack_scales(const char *w, __m512i idx, __mmask16 live, int sb, qp_block *p,
                        size_t stride) {
    const char *base = w + (size_t)sb * sizeof(eng_block_q4_K);
    const __m512i z = _mm512_setzero_si512(), m6 = _mm512_set1_epi32(0x3f3f3f3f),
                  m4 = _mm512_set1_epi32(0x0f0f0f0f), m2 = _mm512_set1_epi32(0x03030303),
                  byte = _mm512_set1_epi32(0xff);
    __m512i hd = _mm512_mask_i32gather_epi32(z, live, idx, base, 1); /* d, dmin */
    __m512i u0 = _mm512_mask_i32gather_epi32(z, live, idx, base + 4, 1);
    __m512i u1 = _mm512_mask_i32gather_epi32(z, live, idx, base + 8, 1);
    __m512i u2 = _mm512_mask_i32gather_epi32(z, live, idx, base + 12, 1);
    __m512 D = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(hd)),
           Dm = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(_mm512_srli_epi32(hd, 16)));
    __m512i sc[2] = {
        _mm512_and_si512(u0, m6),
        _mm512_or_si512(_mm512_and_si512(u2, m4),
                        _mm512_slli_epi32(_mm512_and_si512(_mm512_srli_epi32(u0, 6), m2), 4))};
    __m512i mn[2] = {
        _mm512_and_si512(u1, m6),
        _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi32(u2, 4), m4),
                        _mm512_slli_epi32(_mm512_and_si512(_mm512_srli_epi32(u1, 6), m2), 4))};
    for (int k = 0; k < 8; k++) { /* byte k % 4 of word k / 4 */
        unsigned sh = 8u * (unsigned)(k % 4);
        __m512i sk = _mm512_and_si512(_mm512_srli_epi32(sc[k / 4], sh), byte);
        __m512i mk = _mm512_and_si512(_mm512_srli_epi32(mn[k / 4], sh), byte);
        _mm512_store_ps(p[(size_t)k * stride].d, _mm512_mul_ps(D, _mm512_cvtepi32_ps(sk)));
        _mm512_store_ps(p[(size_t)k * stride].m, _mm512_mul_ps(Dm, _mm512_cvtepi32_ps(mk)));
    }
}

/* Q6_K: the F32 scales D x sc of super-block sb's 16 sub-blocks of 16, lane j for row j (rows
 * outside `live` 0), sub-blocks 2k and 2k + 1 into p[k * stride].d and .m: the int8 scales of
 * 16 rows gathered as 4 dwords, d as the high half of the dword before it (in the block). */
QI void q6k_pack_scales(const char *w, __m512i idx, __mmask16 live, int sb, qp_block *p,
                        size_t stride) {
    const char *base = w + (size_t)sb * sizeof(eng_block_q6_K);
    const __m512i z = _mm512_setzero_si512();
    __m512i hd =
        _mm512_mask_i32gather_epi32(z, live, idx, base + offsetof(eng_block_q6_K, d) - 2, 1);
    __m512 D = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(_mm512_srli_epi32(hd, 16)));
    for (int q = 0; q < 4; q++) {
        __m512i s4 = _mm512_mask_i32gather_epi32(
            z, live, idx, base + offsetof(eng_block_q6_K, scales) + 4 * q, 1);
        for (int e = 0; e < 4; e++) { /* sub-block 4q + e: byte e, sign-extended */
            __m512i v = _mm512_srai_epi32(_mm512_slli_epi32(s4, 24 - 8 * (unsigned)e), 24);
            __m512 f = _mm512_mul_ps(D, _mm512_cvtepi32_ps(v));
            qp_block *pk = p + (size_t)((4 * q + e) / 2) * stride;
            _mm512_store_ps(e % 2 ? pk->m : pk->d, f);
        }
    }
}

/* Scales of block b of rows [0, rows) of the panel at w (row stride rb), as F32 lanes. */
QI __m512 qp_scales(eng_dtype t, const char *w, __m512i idx, __mmask16 live, int b) {
    __m512i h = _mm512_mask_i32gather_epi32(_mm512_setzero_si512(), live, idx, w + qp_off(t, b), 1);
    return _mm512_cvtph_ps(_mm512_cvtepi32_epi16(h)); /* d is a block's first 2 bytes */
}

/* Lane j of the result: byte offset j x rb (the panel's rows). */
QI __m512i qp_rows_idx(size_t rb) {
    return _mm512_mullo_epi32(
        _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0),
        _mm512_set1_epi32((int)rb));
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

/* The values + 128 (Q4_K: its 4-bit values, unsigned already) of blocks b and b + 1 of a row
 * (two) or of b alone (the rest zero), in element order: bytes [0, 32) block b, [32, 64) block b
 * + 1. Loads are masked broadcasts from memory, not inserts: the load unit's work, off the shuffle
 * port. */
QI __m512i qp_u8(eng_dtype t, const char *row, int b, int two) {
    if (t == ENG_Q8_0) {
        const eng_block_q8_0 *wb = (const eng_block_q8_0 *)row + b;
        __m256i lo = _mm256_loadu_si256((const __m256i *)wb[0].qs);
        __m512i v = two ? _mm512_mask_broadcast_i64x4(_mm512_castsi256_si512(lo), (__mmask8)0xf0,
                                                      _mm256_loadu_si256((const __m256i *)wb[1].qs))
                        : _mm512_zextsi256_si512(lo);
        return _mm512_xor_si512(v, _mm512_set1_epi8((char)0x80));
    }
    if (t == ENG_Q6_K) /* 6-bit value + 96 = value + 128 */
        return _mm512_add_epi8(q6k_chunk((const eng_block_q6_K *)row + b / 8, (b % 8) / 2),
                               _mm512_set1_epi8(96));
    if (t == ENG_Q4_K) { /* sub-blocks b, b + 1 (b even): low then high nibbles of 32 bytes */
        const eng_block_q4_K *blk = (const eng_block_q4_K *)row + b / 8;
        __m512i v =
            _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)(blk->qs + 16 * (b % 8))));
        const __m512i cnt = _mm512_set_epi32(4, 4, 4, 4, 4, 4, 4, 4, 0, 0, 0, 0, 0, 0, 0, 0);
        __m512i nib = _mm512_and_si512(_mm512_srlv_epi32(v, cnt), _mm512_set1_epi8(0x0f));
        return nib; /* unsigned already: no offset to take out */
    }
    /* Q4_0: 128-bit lanes [qs_b, qs_b, qs_b1, qs_b1], lanes 1 and 3 shifted by 4: the low
     * nibbles (elements 0-15) then the high (16-31) of each block; nibble + 120 = value + 128 */
    const eng_block_q4_0 *wb = (const eng_block_q4_0 *)row + b;
    __m512i v = _mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *)wb[0].qs));
    v = two ? _mm512_mask_broadcast_i32x4(v, (__mmask16)0xff00,
                                          _mm_loadu_si128((const __m128i *)wb[1].qs))
            : _mm512_maskz_mov_epi32((__mmask16)0x00ff, v);
    const __m512i cnt = _mm512_set_epi32(4, 4, 4, 4, 0, 0, 0, 0, 4, 4, 4, 4, 0, 0, 0, 0);
    __m512i nib = _mm512_and_si512(_mm512_srlv_epi32(v, cnt), _mm512_set1_epi8(0x0f));
    if (!two) nib = _mm512_maskz_mov_epi32((__mmask16)0x00ff, nib);
    return _mm512_add_epi8(nib, _mm512_set1_epi8(120));
}

/* What takes qp_u8's offset back out of the integer sum of 32-block b (Q6_K: of its half h)
 * of an activation row whose qneg (per 16 values) is qn: -128 x the sum of its q; Q4_K none. */
QI __m512i qp_corr(eng_dtype t, const int32_t *qn, int b, int h) {
    if (t == ENG_Q4_K) return _mm512_setzero_si512();
    if (t == ENG_Q6_K) return _mm512_set1_epi32(qn[2 * b + h]);
    return _mm512_set1_epi32(qn[2 * b] + qn[2 * b + 1]);
}

/* Q4_K and Q6_K: scales per super-block (decoded by q4k/q6k_pack_scales), not per block. */
QI int qp_super(eng_dtype t) {
    return t == ENG_Q4_K || t == ENG_Q6_K;
}

/* Decode the scales of super-block sb of a panel (Q4_K or Q6_K) into p[0], p[stride], ... */
QI void qp_super_scales(eng_dtype t, const char *w, __m512i idx, __mmask16 live, int sb,
                        qp_block *p, size_t stride) {
    if (t == ENG_Q4_K)
        q4k_pack_scales(w, idx, live, sb, p, stride);
    else
        q6k_pack_scales(w, idx, live, sb, p, stride);
}

/* acc + (float)isum x (dw x dx), Q4_K: acc + ((float)isum x (dw x dx) - dm x dsum): the float
 * step of both paths, the reference's own. */
QI __m512 qp_step(eng_dtype t, __m512 acc, __m512i isum, __m512 dw, __m512 dm, float dx,
                  float dsum) {
    __m512 sc = _mm512_mul_ps(dw, _mm512_set1_ps(dx));
    __m512 v = _mm512_mul_ps(_mm512_cvtepi32_ps(isum), sc);
    if (t == ENG_Q4_K) v = _mm512_sub_ps(v, _mm512_mul_ps(dm, _mm512_set1_ps(dsum)));
    return _mm512_add_ps(acc, v);
}

/* Blocks [b0, b0 + kc) of weight rows [0, rows) (rows <= 16) at w into p[0], p[QP_NV], ... */
QI void qp_pack(eng_dtype t, const char *w, size_t rb, int rows, int b0, int kc, qp_block *p,
                int stream) {
    __m512i idx = qp_rows_idx(rb);
    __mmask16 live = (__mmask16)((1u << rows) - 1u);
    for (int k = 0; k < kc; k += 2) {
        int b = b0 + k, two = kc - k >= 2;
        __m512i r[16], o[16];
        for (int j = 0; j < 16; j++) {
            const char *row = w + (size_t)j * rb;
            if (j >= rows) {
                r[j] = _mm512_setzero_si512();
                continue;
            }
            if (stream) _mm_prefetch(row + QP_NV * QP_ROWS * rb + qp_off(t, b), _MM_HINT_T1);
            r[j] = qp_u8(t, row, b, two);
        }
        transpose16(r, o);
        qp_block *p0 = p + (size_t)k * QP_NV, *p1 = p0 + QP_NV;
        if (qp_super(t) && b % 8 == 0) qp_super_scales(t, w, idx, live, b / 8, p0, QP_NV);
        if (!qp_super(t)) _mm512_store_ps(p0->d, qp_scales(t, w, idx, live, b));
        for (int g = 0; g < 8; g++) _mm512_store_si512(p0->q[g], o[g]);
        if (!two) break;
        if (!qp_super(t)) _mm512_store_ps(p1->d, qp_scales(t, w, idx, live, b + 1));
        for (int g = 0; g < 8; g++) _mm512_store_si512(p1->q[g], o[8 + g]);
    }
}

/* Activation rows m0 .. m0 + MR - 1 x the NV packed panels p (blocks [b0, b0 + kc)) into y
 * (columns n .. n + 16 NV - 1, the last panel's lanes past `last` not stored); first: the
 * chunk starts the sum, else it continues the one in y. */
QI void qp_tile(eng_dtype t, const eng_qact *x, int m0, const qp_block *p, int b0, int kc, float *y,
                int ldy, int n, __mmask16 last, int first, int MR, int NV) {
    int nb = x->K / ENG_QA;
    __m512 acc[ENG_TILE_MR][QP_NV];
#pragma GCC unroll 4
    for (int i = 0; i < MR; i++)
#pragma GCC unroll 2
        for (int v = 0; v < NV; v++) {
            __mmask16 mk = v == NV - 1 ? last : (__mmask16)0xffff;
            float *yr = y + (size_t)(m0 + i) * (size_t)ldy + n + QP_ROWS * v;
            acc[i][v] = first ? _mm512_setzero_ps() : _mm512_maskz_loadu_ps(mk, yr);
        }
    for (int k = 0; k < kc; k++) {
        int b = b0 + k;
        const qp_block *pb = p + (size_t)k * QP_NV;
        __m512i s[ENG_TILE_MR][QP_NV];
#pragma GCC unroll 4
        for (int i = 0; i < MR; i++) {
            __m512i q0 = qp_corr(t, x->qneg + (size_t)(m0 + i) * (size_t)nb * 2, b, 0);
#pragma GCC unroll 2
            for (int v = 0; v < NV; v++) s[i][v] = q0;
        }
#pragma GCC unroll 8
        for (int g = 0; g < 8; g++) {
            __m512i w[QP_NV];
#pragma GCC unroll 2
            for (int v = 0; v < NV; v++) w[v] = _mm512_load_si512(pb[v].q[g]);
#pragma GCC unroll 4
            for (int i = 0; i < MR; i++) {
                int32_t xv;
                memcpy(&xv, x->qs + (size_t)(m0 + i) * (size_t)x->K + (size_t)b * ENG_QA + 4 * g,
                       sizeof xv);
                __m512i xb = _mm512_set1_epi32(xv);
#pragma GCC unroll 2
                for (int v = 0; v < NV; v++) s[i][v] = _mm512_dpbusd_epi32(s[i][v], w[v], xb);
            }
            if (t == ENG_Q6_K && g == 3) /* the first 16 done: its own scale, in .d */
#pragma GCC unroll 4
                for (int i = 0; i < MR; i++) {
                    size_t at = (size_t)(m0 + i) * (size_t)nb + (size_t)b;
                    __m512i q1 = qp_corr(t, x->qneg + (size_t)(m0 + i) * (size_t)nb * 2, b, 1);
#pragma GCC unroll 2
                    for (int v = 0; v < NV; v++) {
                        acc[i][v] = qp_step(t, acc[i][v], s[i][v], _mm512_load_ps(pb[v].d),
                                            _mm512_setzero_ps(), x->d[at], 0.0f);
                        s[i][v] = q1;
                    }
                }
        }
#pragma GCC unroll 4
        for (int i = 0; i < MR; i++) {
            size_t at = (size_t)(m0 + i) * (size_t)nb + (size_t)b;
#pragma GCC unroll 2
            for (int v = 0; v < NV; v++) /* Q6_K: the second 16, its scale in .m */
                acc[i][v] = t == ENG_Q6_K ? qp_step(t, acc[i][v], s[i][v], _mm512_load_ps(pb[v].m),
                                                    _mm512_setzero_ps(), x->d[at], 0.0f)
                                          : qp_step(t, acc[i][v], s[i][v], _mm512_load_ps(pb[v].d),
                                                    _mm512_load_ps(pb[v].m), x->d[at], x->dsum[at]);
        }
    }
#pragma GCC unroll 4
    for (int i = 0; i < MR; i++)
#pragma GCC unroll 2
        for (int v = 0; v < NV; v++) {
            __mmask16 mk = v == NV - 1 ? last : (__mmask16)0xffff;
            _mm512_mask_storeu_ps(y + (size_t)(m0 + i) * (size_t)ldy + n + QP_ROWS * v, mk,
                                  acc[i][v]);
        }
}

QI void qp_tile_nv(eng_dtype t, const eng_qact *x, int m0, const qp_block *p, int b0, int kc,
                   float *y, int ldy, int n, __mmask16 last, int first, int MR, int nv) {
    if (nv == 2)
        qp_tile(t, x, m0, p, b0, kc, y, ldy, n, last, first, MR, 2);
    else
        qp_tile(t, x, m0, p, b0, kc, y, ldy, n, last, first, MR, 1);
}

/*
 * Up to QR_MAX activation rows (decode) skip the pack: its transpose and stores cost more than
 * the arithmetic they save when each packed vector serves a single row. Here dpbusd runs on a
 * weight row's own 64 values (two blocks, + 128) against the activation's, lane l holding 4 of
 * them, and a transposing reduction adds each row's 8 lanes per block into lane j of one
 * vector per block: the same exact integer sums as the packed path (the offset again taken
 * out with qneg), then the same float steps, so the two paths give the same bits.
 */

/* p[j] lanes 0-7 and 8-15: partial sums of blocks b and b + 1 of row j. Out: lane j of *lo =
 * row j's block b sum, of *hi its block b + 1 sum (integer adds, so their order is free). */
QI void reduce16_lanes(const __m512i p[16], __m512i u[4]) {
    __m512i t[8];
    for (int q = 0; q < 8; q++) /* per 128-bit lane: [a0+a2, b0+b2, a1+a3, b1+b3] */
        t[q] = _mm512_add_epi32(_mm512_unpacklo_epi32(p[2 * q], p[2 * q + 1]),
                                _mm512_unpackhi_epi32(p[2 * q], p[2 * q + 1]));
    for (int q = 0; q < 4; q++) /* lane L: rows 4q .. 4q + 3 over dwords 4L .. 4L + 3 */
        u[q] = _mm512_add_epi32(_mm512_unpacklo_epi64(t[2 * q], t[2 * q + 1]),
                                _mm512_unpackhi_epi64(t[2 * q], t[2 * q + 1]));
}

/* The same by 16 values: lane j of o[h] = row j's sum over values 16h .. 16h + 15 of p[j]. */
QI void reduce16_halves(const __m512i p[16], __m512i o[4]) {
    __m512i u[4];
    reduce16_lanes(p, u);
    __m512i t0 = _mm512_shuffle_i32x4(u[0], u[1], 0x44),
            t1 = _mm512_shuffle_i32x4(u[0], u[1], 0xee),
            t2 = _mm512_shuffle_i32x4(u[2], u[3], 0x44),
            t3 = _mm512_shuffle_i32x4(u[2], u[3], 0xee);
    o[0] = _mm512_shuffle_i32x4(t0, t2, 0x88);
    o[1] = _mm512_shuffle_i32x4(t0, t2, 0xdd);
    o[2] = _mm512_shuffle_i32x4(t1, t3, 0x88);
    o[3] = _mm512_shuffle_i32x4(t1, t3, 0xdd);
}

QI void reduce16(const __m512i p[16], __m512i *lo, __m512i *hi) {
    __m512i u[4];
    reduce16_lanes(p, u);
    /* [rows 0-3 b, rows 0-3 b+1, rows 4-7 b, rows 4-7 b+1], and rows 8-15 likewise */
    __m512i s0 = _mm512_add_epi32(_mm512_shuffle_i32x4(u[0], u[1], 0x88),
                                  _mm512_shuffle_i32x4(u[0], u[1], 0xdd));
    __m512i s1 = _mm512_add_epi32(_mm512_shuffle_i32x4(u[2], u[3], 0x88),
                                  _mm512_shuffle_i32x4(u[2], u[3], 0xdd));
    *lo = _mm512_shuffle_i32x4(s0, s1, 0x88);
    *hi = _mm512_shuffle_i32x4(s0, s1, 0xdd);
}

/* Activation rows up to which the unpacked path costs less than the pack (measured at K = 1024,
 * N = 16384 on one thread): Q4_0 widens its nibbles again for every activation row. */
enum { QR_MAX = 3 };
QI int qr_max(eng_dtype t) {
    return t == ENG_Q8_0 ? QR_MAX : 2;
}

/* Activation rows [0, MR) x weight rows [n, n + rows), rows <= 16. */
QI void qp_rows16(eng_dtype t, float *y, int ldy, const eng_qact *x, const char *W, size_t rb,
                  int n, int rows, int MR) {
    int K = x->K, nb = K / ENG_QA;
    const char *w = W + (size_t)n * rb;
    const __m512i zero = _mm512_setzero_si512();
    __m512i idx = qp_rows_idx(rb);
    __mmask16 live = (__mmask16)((1u << rows) - 1u);
    __m512 acc[QR_MAX] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps()};
    _Alignas(64) qp_block sc[8]; /* Q4_K, Q6_K: the super-block's scales (only d, m used) */
    for (int b = 0; b < nb; b += 2) {
        int two = nb - b >= 2;
        __m512 dlo, dhi, mlo = _mm512_setzero_ps(), mhi = mlo;
        if (qp_super(t)) {
            if (b % 8 == 0) qp_super_scales(t, w, idx, live, b / 8, sc, 1);
            dlo = _mm512_load_ps(sc[b % 8].d), dhi = _mm512_load_ps(sc[b % 8 + 1].d);
            mlo = _mm512_load_ps(sc[b % 8].m), mhi = _mm512_load_ps(sc[b % 8 + 1].m);
        } else {
            dlo = qp_scales(t, w, idx, live, b);
            dhi = two ? qp_scales(t, w, idx, live, b + 1) : _mm512_setzero_ps();
        }
#pragma GCC unroll 3
        for (int i = 0; i < MR; i++) {
            const int8_t *q = x->qs + (size_t)i * (size_t)K + (size_t)b * ENG_QA;
            const int32_t *qn = x->qneg + (size_t)i * (size_t)nb * 2;
            const float *d = x->d + (size_t)i * (size_t)nb + b,
                        *ds = x->dsum + (size_t)i * (size_t)nb + b;
            __m512i xv = two ? _mm512_loadu_si512(q)
                             : _mm512_zextsi256_si512(_mm256_loadu_si256((const __m256i *)q));
            __m512i p[16], lo, hi;
#pragma GCC unroll 16
            for (int j = 0; j < 16; j++) {
                const char *row = w + (size_t)j * rb;
                if (j >= rows) {
                    p[j] = zero;
                    continue;
                }
                if (i == 0) _mm_prefetch(row + QP_ROWS * rb + qp_off(t, b), _MM_HINT_T1);
                p[j] = _mm512_dpbusd_epi32(zero, qp_u8(t, row, b, two), xv);
            }
            if (t == ENG_Q6_K) { /* by 16: scales in .d (first 16) and .m (second) */
                __m512i o[4];
                reduce16_halves(p, o);
                const __m512 no = _mm512_setzero_ps();
                for (int h = 0; h < 4; h++)
                    acc[i] =
                        qp_step(t, acc[i], _mm512_add_epi32(o[h], qp_corr(t, qn, b + h / 2, h % 2)),
                                h == 0   ? dlo
                                : h == 1 ? mlo
                                : h == 2 ? dhi
                                         : mhi,
                                no, d[h / 2], 0.0f);
                continue;
            }
            reduce16(p, &lo, &hi);
            acc[i] = qp_step(t, acc[i], _mm512_add_epi32(lo, qp_corr(t, qn, b, 0)), dlo, mlo, d[0],
                             ds[0]);
            if (two)
                acc[i] = qp_step(t, acc[i], _mm512_add_epi32(hi, qp_corr(t, qn, b + 1, 0)), dhi,
                                 mhi, d[1], ds[1]);
        }
    }
    for (int i = 0; i < MR; i++)
        _mm512_mask_storeu_ps(y + (size_t)i * (size_t)ldy + n, live, acc[i]);
}

QI void qp_matmul(eng_dtype t, float *y, int ldy, const eng_qact *x, int M, const char *W, int n0,
                  int n1) {
    int nb = x->K / ENG_QA, stream = M < 4 * ENG_TILE_MR;
    size_t rb = eng_row_bytes(t, (size_t)x->K);
    if (M <= qr_max(t)) {
        for (int n = n0; n < n1; n += QP_ROWS) {
            int rows = n1 - n < QP_ROWS ? n1 - n : QP_ROWS;
            if (M == 1)
                qp_rows16(t, y, ldy, x, W, rb, n, rows, 1);
            else if (M == 2)
                qp_rows16(t, y, ldy, x, W, rb, n, rows, 2);
            else
                qp_rows16(t, y, ldy, x, W, rb, n, rows, 3);
        }
        return;
    }
    _Alignas(64) qp_block buf[QP_KC * QP_NV];
    for (int n = n0; n < n1; n += QP_NV * QP_ROWS) {
        int rows = n1 - n < QP_NV * QP_ROWS ? n1 - n : QP_NV * QP_ROWS;
        int nv = (rows + QP_ROWS - 1) / QP_ROWS, tail = rows - (nv - 1) * QP_ROWS;
        __mmask16 last = (__mmask16)((1u << tail) - 1u);
        for (int b0 = 0; b0 < nb; b0 += QP_KC) {
            int kc = nb - b0 < QP_KC ? nb - b0 : QP_KC;
            for (int v = 0; v < nv; v++)
                qp_pack(t, W + (size_t)(n + QP_ROWS * v) * rb, rb, v < nv - 1 ? QP_ROWS : tail, b0,
                        kc, buf + v, stream);
            for (int m0 = 0; m0 < M; m0 += ENG_TILE_MR) {
                int mr = M - m0 < ENG_TILE_MR ? M - m0 : ENG_TILE_MR;
                switch (mr) {
                case 1:
                    qp_tile_nv(t, x, m0, buf, b0, kc, y, ldy, n, last, b0 == 0, 1, nv);
                    break;
                case 2:
                    qp_tile_nv(t, x, m0, buf, b0, kc, y, ldy, n, last, b0 == 0, 2, nv);
                    break;
                case 3:
                    qp_tile_nv(t, x, m0, buf, b0, kc, y, ldy, n, last, b0 == 0, 3, nv);
                    break;
                default:
                    qp_tile_nv(t, x, m0, buf, b0, kc, y, ldy, n, last, b0 == 0, 4, nv);
                    break;
                }
            }
        }
    }
}

/* One instantiation of qp_matmul per format (t a constant in each). */
void eng_qmatmul_avx512(float *y, int ldy, const eng_qact *x, int M, const void *W, eng_dtype wdt,
                        int n0, int n1) {
    switch (wdt) {
    case ENG_Q8_0:
        qp_matmul(ENG_Q8_0, y, ldy, x, M, W, n0, n1);
        break;
    case ENG_Q4_0:
        qp_matmul(ENG_Q4_0, y, ldy, x, M, W, n0, n1);
        break;
    case ENG_Q4_K:
        qp_matmul(ENG_Q4_K, y, ldy, x, M, W, n0, n1);
        break;
    default:
        qp_matmul(ENG_Q6_K, y, ldy, x, M, W, n0, n1);
        break;
    }
}
