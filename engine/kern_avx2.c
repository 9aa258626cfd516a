/*
 * kern_avx2.c — the AVX2 + FMA kernel table.
 *
 * One dot-product scheme for every weight product: element y[m][n] accumulates x[m][k] * W[n][k]
 * with FMA into 8 lanes (k goes to lane k % 8, each lane in k order, the K tail zero-padded into
 * one last FMA), then one fixed horizontal reduction. Weights are widened in registers (BF16 by
 * a 16-bit shift, F16 by F16C), never copied. The register tiles below run up to 4 activation
 * rows against up to 8 weight rows side by side, but each element's instruction sequence is the
 * same in every tile shape, so M = 1 (decode GEMV) and M = 512 (prefill GEMM) rows are bit for
 * bit equal, whatever the column split between threads.
 */
#include <immintrin.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "engine/kern_x86.h"

#define AVX2_INLINE static inline __attribute__((always_inline))

enum {
    AVX2_LANES = 8,   /* floats per register */
    AVX2_MAX_NR = 8,  /* widest tile in weight rows */
    AVX2_SCHUNK = 64, /* attention scores computed before one softmax rescale */
    AVX2_SGROUP = 8,  /* attention scores computed side by side */
    AVX2_VGROUP = 4,  /* groups of 8 output columns accumulated side by side */
    AVX2_ROWS = 64,   /* query rows sharing one walk over the KV blocks */
};

AVX2_INLINE size_t elem_size(eng_dtype t) {
    return t == ENG_F32 ? 4 : 2;
}

/* 8 consecutive elements of a row of type t, widened to F32. */
AVX2_INLINE __m256 load8(const void *row, eng_dtype t, int k) {
    if (t == ENG_F32) return _mm256_loadu_ps((const float *)row + k);
    __m128i h = _mm_loadu_si128((const __m128i *)((const uint16_t *)row + k));
    if (t == ENG_F16) return _mm256_cvtph_ps(h);
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}

/* The last n < 8 elements of a row from k, zero-padded to 8 lanes. */
AVX2_INLINE __m256 load_tail(const void *row, eng_dtype t, int k, int n) {
    unsigned char buf[AVX2_LANES * 4] = {0};
    size_t es = elem_size(t);
    memcpy(buf, (const unsigned char *)row + (size_t)k * es, (size_t)n * es);
    return load8(buf, t, 0);
}

/* The fixed horizontal reduction: ((l0+l4)+(l2+l6)) + ((l1+l5)+(l3+l7)). */
AVX2_INLINE float hsum8(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
    return _mm_cvtss_f32(s);
}

/* acc[i][j] += x row i . W row j over the 8 elements from k (or the zero-padded tail of n < 8). */
AVX2_INLINE void tile_step(__m256 acc[ENG_TILE_MR][AVX2_MAX_NR], const float *x, int K,
                           const char *w0, size_t rb, eng_dtype t, int k, int n, int MR, int NR) {
    __m256 w[AVX2_MAX_NR];
#pragma GCC unroll 8
    for (int j = 0; j < NR; j++)
        w[j] = n == AVX2_LANES ? load8(w0 + (size_t)j * rb, t, k)
                               : load_tail(w0 + (size_t)j * rb, t, k, n);
#pragma GCC unroll 4
    for (int i = 0; i < MR; i++) {
        const float *xi = x + (size_t)i * (size_t)K;
        __m256 xv = n == AVX2_LANES ? _mm256_loadu_ps(xi + k) : load_tail(xi, ENG_F32, k, n);
#pragma GCC unroll 8
        for (int j = 0; j < NR; j++) acc[i][j] = _mm256_fmadd_ps(xv, w[j], acc[i][j]);
    }
}

/*
 * A tile of MR activation rows by NR weight rows; MR and NR are constants at every call. The k
 * loop walks one cache line of each weight row per iteration. When weights stream (decode), it
 * prefetches the same line of the next tile's rows, one whole tile ahead: on Zen 3 this read
 * the LM head at ~80% of a plain streaming read per thread, against ~60% when each row was
 * prefetched 512 bytes ahead (the rows are short, 2 KB, so a per-row stream never got going).
 * Into L2 (_MM_HINT_T1), not L1: on a Zen 4 running this table, M = 1 over Qwen3-0.6B's
 * products read 21.8-22.1 GB/s with the L1 hint and 28.7-41.5 with L2's (bench_kernels, three
 * alternating runs; Zen 3 not measured again). Prefetches past the matrix's end are harmless
 * (they never fault). The steps inside are the same 8-element steps in the same order whatever
 * is prefetched.
 */
AVX2_INLINE void tile_gen(const eng_tile_args *a, eng_dtype t, int n, int MR, int NR) {
    float *y = a->y;
    const float *x = a->x;
    int K = a->K, ldy = a->ldy, line = 64 / (int)elem_size(t);
    size_t rb = (size_t)K * elem_size(t);
    const char *w0 = (const char *)a->W + (size_t)n * rb;
    __m256 acc[ENG_TILE_MR][AVX2_MAX_NR];
#pragma GCC unroll 8
    for (int i = 0; i < MR; i++)
#pragma GCC unroll 8
        for (int j = 0; j < NR; j++) acc[i][j] = _mm256_setzero_ps();
    int k = 0;
    for (; k + line <= K; k += line) {
        if (a->stream)
#pragma GCC unroll 8
            for (int j = 0; j < NR; j++)
                _mm_prefetch(w0 + (size_t)(j + NR) * rb + (size_t)k * elem_size(t), _MM_HINT_T1);
#pragma GCC unroll 4
        for (int s = 0; s < line; s += AVX2_LANES)
            tile_step(acc, x, K, w0, rb, t, k + s, AVX2_LANES, MR, NR);
    }
    for (; k + AVX2_LANES <= K; k += AVX2_LANES)
        tile_step(acc, x, K, w0, rb, t, k, AVX2_LANES, MR, NR);
    if (k < K) tile_step(acc, x, K, w0, rb, t, k, K - k, MR, NR);
#pragma GCC unroll 4
    for (int i = 0; i < MR; i++)
#pragma GCC unroll 8
        for (int j = 0; j < NR; j++)
            y[(size_t)i * (size_t)ldy + (size_t)(n + j)] = hsum8(acc[i][j]);
}

/* Weight rows per tile for 1..4 activation rows: about 12 of the 16 registers accumulate.
 * Column blocks of 1 MB of weights: on Zen 3 (512 KB L2) this beat 256 and 512 KB by 5-15% of
 * CPU time for 512 x 3072 x 1024 and 512 x 1024 x 3072, since it re-reads the activations fewer
 * times. */
ENG_DEFINE_MATMUL(avx2_direct, 8, 6, 4, 3, 1024 * 1024)

/* ---------------------------------------------------------------- packed GEMM (prefill) */

/*
 * With many activation rows, widening BF16/F16 in registers costs a shuffle and a shift per
 * weight vector, on the same ports as the FMAs, again for every 4-row tile. The packed path
 * widens a column block of weight rows once into a per-call F32 buffer laid out in the order
 * the tile reads it (panels of PACK_NR rows: step s of 8 elements, then row j), and runs every
 * row tile over it. Each element still accumulates fma(x[k..k+8), w[k..k+8), acc) in k order
 * from zero, the K tail zero-padded on both sides, then hsum8: the direct path's sequence, so
 * the two paths give the same bits (the kernel test checks M = 1 against M = 512).
 */
enum {
    PACK_NR = 3,             /* weight rows per panel and per tile */
    PACK_MIN_M = 16,         /* fewer rows: the direct path (widening once per row tile is cheap) */
    PACK_BYTES = 256 * 1024, /* F32 panel bytes per column block, kept in L2 */
};

/* Steps of 8 elements covering K (the last one zero-padded). */
AVX2_INLINE int steps_of(int K) {
    return (K + AVX2_LANES - 1) / AVX2_LANES;
}

/* Widen weight rows [n, n + nr) into one panel: dst[(s * nr + j) * 8 + l] = W[n + j][8s + l]. */
static void pack_panel(float *dst, const void *W, eng_dtype t, int K, int n, int nr) {
    size_t rb = (size_t)K * elem_size(t);
    int S = steps_of(K), full = K / AVX2_LANES;
    for (int j = 0; j < nr; j++) {
        const char *row = (const char *)W + (size_t)(n + j) * rb;
        float *d = dst + (size_t)j * AVX2_LANES;
        for (int s = 0; s < full; s++)
            _mm256_store_ps(d + (size_t)s * nr * AVX2_LANES, load8(row, t, s * AVX2_LANES));
        if (full < S)
            _mm256_store_ps(d + (size_t)full * nr * AVX2_LANES,
                            load_tail(row, t, full * AVX2_LANES, K - full * AVX2_LANES));
    }
}

/* Step s of a packed tile: acc[i][j] += x row i . panel row j over 8 elements (n < 8: the
 * zero-padded tail; the panel is zero-padded already). */
AVX2_INLINE void packed_step(__m256 acc[ENG_TILE_MR][PACK_NR], const float *x, int K,
                             const float *panel, int s, int n, int MR, int NR) {
    __m256 w[PACK_NR];
#pragma GCC unroll 3
    for (int j = 0; j < NR; j++) w[j] = _mm256_load_ps(panel + (size_t)(s * NR + j) * AVX2_LANES);
#pragma GCC unroll 4
    for (int i = 0; i < MR; i++) {
        const float *xi = x + (size_t)i * (size_t)K;
        __m256 xv = n == AVX2_LANES ? _mm256_loadu_ps(xi + s * AVX2_LANES)
                                    : load_tail(xi, ENG_F32, s * AVX2_LANES, n);
#pragma GCC unroll 3
        for (int j = 0; j < NR; j++) acc[i][j] = _mm256_fmadd_ps(xv, w[j], acc[i][j]);
    }
}

/* The tile of MR activation rows (x, rows K apart) by the NR weight rows of a packed panel that
 * start at column n, into y. MR, NR constants at every call. */
AVX2_INLINE void packed_tile(float *y, int ldy, const float *x, int K, const float *panel, int n,
                             int MR, int NR) {
    __m256 acc[ENG_TILE_MR][PACK_NR];
#pragma GCC unroll 4
    for (int i = 0; i < MR; i++)
#pragma GCC unroll 3
        for (int j = 0; j < NR; j++) acc[i][j] = _mm256_setzero_ps();
    int full = K / AVX2_LANES, s = 0;
#pragma GCC unroll 4
    for (; s < full; s++) packed_step(acc, x, K, panel, s, AVX2_LANES, MR, NR);
    if (s * AVX2_LANES < K) packed_step(acc, x, K, panel, s, K - s * AVX2_LANES, MR, NR);
#pragma GCC unroll 4
    for (int i = 0; i < MR; i++)
#pragma GCC unroll 3
        for (int j = 0; j < NR; j++)
            y[(size_t)i * (size_t)ldy + (size_t)(n + j)] = hsum8(acc[i][j]);
}

/* The tile for mr rows (1..4) and NR weight rows, with constant shapes. */
AVX2_INLINE void packed_rows(float *y, int ldy, const float *x, int K, const float *panel, int n,
                             int mr, int NR) {
    switch (mr) {
    case 1:
        packed_tile(y, ldy, x, K, panel, n, 1, NR);
        break;
    case 2:
        packed_tile(y, ldy, x, K, panel, n, 2, NR);
        break;
    case 3:
        packed_tile(y, ldy, x, K, panel, n, 3, NR);
        break;
    default:
        packed_tile(y, ldy, x, K, panel, n, 4, NR);
        break;
    }
}

/* One tile of mr activation rows against the panel of nr weight rows starting at column n. */
static void packed_dispatch(float *y, int ldy, const float *x, int K, const float *panel, int n,
                            int mr, int nr) {
    if (nr == 3)
        packed_rows(y, ldy, x, K, panel, n, mr, 3);
    else if (nr == 2)
        packed_rows(y, ldy, x, K, panel, n, mr, 2);
    else
        packed_rows(y, ldy, x, K, panel, n, mr, 1);
}

/* Columns [n0, n1) in blocks of nc rows: pack the block, then every row tile passes over it
 * (the tile's activations stay in L1 for K up to ~1024, the block's panels in L2). */
static void packed_matmul(float *buf, int nc, float *y, int ldy, const float *x, int M,
                          const void *W, eng_dtype wdt, int K, int n0, int n1) {
    size_t panel_floats = (size_t)PACK_NR * (size_t)steps_of(K) * AVX2_LANES;
    for (int c0 = n0; c0 < n1; c0 += nc) {
        int c1 = n1 - c0 < nc ? n1 : c0 + nc;
        for (int n = c0; n < c1; n += PACK_NR)
            pack_panel(buf + (size_t)(n - c0) / PACK_NR * panel_floats, W, wdt, K, n,
                       c1 - n < PACK_NR ? c1 - n : PACK_NR);
        for (int m0 = 0; m0 < M; m0 += ENG_TILE_MR) {
            int mr = M - m0 < ENG_TILE_MR ? M - m0 : ENG_TILE_MR;
            for (int n = c0; n < c1; n += PACK_NR)
                packed_dispatch(y + (size_t)m0 * (size_t)ldy, ldy, x + (size_t)m0 * (size_t)K, K,
                                buf + (size_t)(n - c0) / PACK_NR * panel_floats, n, mr,
                                c1 - n < PACK_NR ? c1 - n : PACK_NR);
        }
    }
}

/* The table's matmul: packed for prefill-sized M (if the buffer can be had), else direct. */
static void avx2_matmul(float *y, int ldy, const float *x, int M, const void *W, eng_dtype wdt,
                        int K, int n0, int n1) {
    size_t panel_bytes = (size_t)PACK_NR * (size_t)steps_of(K) * AVX2_LANES * sizeof(float);
    int nc = (int)(PACK_BYTES / panel_bytes) * PACK_NR;
    if (nc < PACK_NR) nc = PACK_NR;
    if (nc > n1 - n0) nc = n1 - n0;
    float *buf = NULL;
    if (M >= PACK_MIN_M && n1 > n0)
        buf = aligned_alloc(32, (size_t)(nc + PACK_NR - 1) / PACK_NR * panel_bytes);
    if (!buf) {
        avx2_direct(y, ldy, x, M, W, wdt, K, n0, n1);
        return;
    }
    packed_matmul(buf, nc, y, ldy, x, M, W, wdt, K, n0, n1);
    free(buf);
}

/* ---------------------------------------------------------------- attention */

/* s[g] = scale * (q . row slot + g of a K tile) for g < G, the matmul's dot-product scheme. */
AVX2_INLINE void scores(float *s, const float *q, const void *tile, eng_dtype t, int slot, int d,
                        float scale, int G) {
    __m256 acc[AVX2_SGROUP];
    const char *r0 = (const char *)tile + (size_t)slot * (size_t)d * elem_size(t);
    size_t rb = (size_t)d * elem_size(t);
#pragma GCC unroll 8
    for (int g = 0; g < G; g++) acc[g] = _mm256_setzero_ps();
    int k = 0;
    for (; k + AVX2_LANES <= d; k += AVX2_LANES) {
        __m256 qv = _mm256_loadu_ps(q + k);
#pragma GCC unroll 8
        for (int g = 0; g < G; g++)
            acc[g] = _mm256_fmadd_ps(qv, load8(r0 + (size_t)g * rb, t, k), acc[g]);
    }
    if (k < d) {
        __m256 qv = load_tail(q, ENG_F32, k, d - k);
#pragma GCC unroll 8
        for (int g = 0; g < G; g++)
            acc[g] = _mm256_fmadd_ps(qv, load_tail(r0 + (size_t)g * rb, t, k, d - k), acc[g]);
    }
#pragma GCC unroll 8
    for (int g = 0; g < G; g++) s[g] = scale * hsum8(acc[g]);
}

/* s[0..n) for consecutive slots from slot0; grouping is for speed, each score is computed alone. */
AVX2_INLINE void chunk_scores(float *s, const float *q, const void *tile, eng_dtype t, int slot0,
                              int n, int d, float scale) {
    int i = 0;
    for (; i + AVX2_SGROUP <= n; i += AVX2_SGROUP)
        scores(s + i, q, tile, t, slot0 + i, d, scale, AVX2_SGROUP);
    for (; i + AVX2_SGROUP / 2 <= n; i += AVX2_SGROUP / 2)
        scores(s + i, q, tile, t, slot0 + i, d, scale, AVX2_SGROUP / 2);
    for (; i < n; i++) scores(s + i, q, tile, t, slot0 + i, d, scale, 1);
}

/* Columns [k, k + 8G) of rescale_add, G groups of 8 side by side (independent FMA chains). */
AVX2_INLINE void rescale_groups(float *out, __m256 cv, const float *p, const char *r0, size_t rb,
                                eng_dtype t, int k, int n, int G) {
    __m256 o[AVX2_VGROUP];
#pragma GCC unroll 4
    for (int g = 0; g < G; g++) o[g] = _mm256_mul_ps(_mm256_loadu_ps(out + k + g * AVX2_LANES), cv);
    for (int i = 0; i < n; i++) {
        __m256 pv = _mm256_set1_ps(p[i]);
        const char *r = r0 + (size_t)i * rb;
#pragma GCC unroll 4
        for (int g = 0; g < G; g++)
            o[g] = _mm256_fmadd_ps(pv, load8(r, t, k + g * AVX2_LANES), o[g]);
    }
#pragma GCC unroll 4
    for (int g = 0; g < G; g++) _mm256_storeu_ps(out + k + g * AVX2_LANES, o[g]);
}

/* out[0..d) = out * corr + sum_i p[i] * (V row slot0 + i), rows added in slot order. */
AVX2_INLINE void rescale_add(float *out, float corr, const float *p, const void *tile, eng_dtype t,
                             int slot0, int n, int d) {
    const char *r0 = (const char *)tile + (size_t)slot0 * (size_t)d * elem_size(t);
    size_t rb = (size_t)d * elem_size(t);
    __m256 cv = _mm256_set1_ps(corr);
    int k = 0;
    for (; k + AVX2_VGROUP * AVX2_LANES <= d; k += AVX2_VGROUP * AVX2_LANES)
        rescale_groups(out, cv, p, r0, rb, t, k, n, AVX2_VGROUP);
    for (; k + AVX2_LANES <= d; k += AVX2_LANES) rescale_groups(out, cv, p, r0, rb, t, k, n, 1);
    if (k < d) {
        float tmp[AVX2_LANES] = {0};
        memcpy(tmp, out + k, (size_t)(d - k) * sizeof *tmp);
        __m256 o = _mm256_mul_ps(_mm256_loadu_ps(tmp), cv);
        for (int i = 0; i < n; i++)
            o = _mm256_fmadd_ps(_mm256_set1_ps(p[i]), load_tail(r0 + (size_t)i * rb, t, k, d - k),
                                o);
        _mm256_storeu_ps(tmp, o);
        memcpy(out + k, tmp, (size_t)(d - k) * sizeof *tmp);
    }
}

/*
 * e^x in 8 lanes: range reduction by ln 2 (in two parts) and a degree-6 polynomial, within
 * about 2 ulp of expf; x below -87.3 (including -inf) gives 0. Used for every softmax weight,
 * so decode and prefill share it.
 */
AVX2_INLINE __m256 exp8(__m256 x) {
    const __m256 lo = _mm256_set1_ps(ENG_EXP_LO), hi = _mm256_set1_ps(ENG_EXP_HI);
    __m256 under = _mm256_cmp_ps(x, lo, _CMP_LT_OQ);
    x = _mm256_min_ps(_mm256_max_ps(x, lo), hi);
    __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(ENG_EXP_L2E)),
                               _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(ENG_EXP_LN1), x);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(ENG_EXP_LN2), r);
    __m256 y = _mm256_set1_ps(ENG_EXP_P0);
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(ENG_EXP_P1));
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(ENG_EXP_P2));
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(ENG_EXP_P3));
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(ENG_EXP_P4));
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(ENG_EXP_P5));
    y = _mm256_add_ps(_mm256_fmadd_ps(y, _mm256_mul_ps(r, r), r), _mm256_set1_ps(1.0f));
    __m256i e =
        _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_andnot_ps(under, _mm256_mul_ps(y, _mm256_castsi256_ps(e)));
}

/* s[i] = e^(s[i] - m) for i < n. */
AVX2_INLINE void exp_shifted(float *s, int n, float m) {
    __m256 mv = _mm256_set1_ps(m);
    int i = 0;
    for (; i + AVX2_LANES <= n; i += AVX2_LANES)
        _mm256_storeu_ps(s + i, exp8(_mm256_sub_ps(_mm256_loadu_ps(s + i), mv)));
    if (i < n) {
        float tmp[AVX2_LANES] = {0};
        memcpy(tmp, s + i, (size_t)(n - i) * sizeof *tmp);
        _mm256_storeu_ps(tmp, exp8(_mm256_sub_ps(_mm256_loadu_ps(tmp), mv)));
        memcpy(s + i, tmp, (size_t)(n - i) * sizeof *tmp);
    }
}

/* One chunk of positions (inside one block) folded into the running softmax state. */
AVX2_INLINE void attend_chunk(float *out, float *mx, float *l, const float *q, const void *kt,
                              const void *vt, eng_dtype t, int slot0, int n, int d, float scale) {
    float s[AVX2_SCHUNK];
    chunk_scores(s, q, kt, t, slot0, n, d, scale);
    float cmax = -INFINITY;
    for (int i = 0; i < n; i++) cmax = s[i] > cmax ? s[i] : cmax;
    float nmx = cmax > *mx ? cmax : *mx;
    /* 0 on the first chunk (mx = -inf) */
    float corr = _mm256_cvtss_f32(exp8(_mm256_set1_ps(*mx - nmx)));
    exp_shifted(s, n, nmx);
    float sum = 0.0f;
    for (int i = 0; i < n; i++) sum += s[i];
    *l = *l * corr + sum;
    *mx = nmx;
    rescale_add(out, corr, s, vt, t, slot0, n, d);
}

/* One query row's online-softmax state. */
typedef struct att_row {
    float *out;            /* head_dim floats: the running weighted sum of V, then the result */
    const float *q;        /* head_dim floats */
    const int32_t *blocks; /* its block table */
    int n_pos;             /* positions this row attends to */
    float mx, l;           /* running max score and running sum of exp(score - mx) */
} att_row;

/* Positions in the chunk that starts at p0: up to the block's end, at most AVX2_SCHUNK. Chunk
 * starts depend only on positions, so every row (prefill or decode) sees the same chunks. */
static int chunk_len(int p0, int bs) {
    int n = bs - p0 % bs;
    return n > AVX2_SCHUNK ? AVX2_SCHUNK : n;
}

/* The K and V rows of one chunk as the rows read them. */
typedef struct att_chunk {
    const void *kt, *vt; /* K and V tiles (or their F32 widening) */
    eng_dtype t;         /* element type of kt / vt */
    int slot0;           /* first row of the chunk in kt / vt */
    int n;               /* positions in the chunk */
} att_chunk;

/* Fold chunk c into row r (which attends past its start), stopping at the row's n_pos. */
static void row_chunk(att_row *r, const att_chunk *c, int p0, int d, float scale) {
    int n = c->n < r->n_pos - p0 ? c->n : r->n_pos - p0;
    if (c->t == ENG_BF16)
        attend_chunk(r->out, &r->mx, &r->l, r->q, c->kt, c->vt, ENG_BF16, c->slot0, n, d, scale);
    else
        attend_chunk(r->out, &r->mx, &r->l, r->q, c->kt, c->vt, ENG_F32, c->slot0, n, d, scale);
}

/* n rows of d BF16 values from row slot0 of a tile, widened (exactly) to F32. */
static void widen_rows(float *dst, const void *tile, int slot0, int n, int d) {
    const uint16_t *src = (const uint16_t *)tile + (size_t)slot0 * (size_t)d;
    size_t total = (size_t)n * (size_t)d, i = 0;
    for (; i + AVX2_LANES <= total; i += AVX2_LANES)
        _mm256_storeu_ps(dst + i, load8(src, ENG_BF16, (int)i));
    for (; i < total; i++) {
        uint32_t u = (uint32_t)src[i] << 16;
        memcpy(dst + i, &u, sizeof u);
    }
}

/* The n positions of block blk from position p0, as stored, or widened into `wide` (K, then V
 * AVX2_SCHUNK rows later) when it is given: exact, so rows see the same values either way. */
static att_chunk chunk_at(const kv_pool *kv, int32_t blk, int layer, int kv_head, int p0, int n,
                          float *wide) {
    int d = kv->head_dim;
    att_chunk c = {kv_tile(kv, blk, layer, 0, kv_head), kv_tile(kv, blk, layer, 1, kv_head),
                   kv->dtype == KV_BF16 ? ENG_BF16 : ENG_F32, p0 % kv->block_size, n};
    if (!wide) return c;
    float *wv = wide + (size_t)AVX2_SCHUNK * (size_t)d;
    widen_rows(wide, c.kt, c.slot0, n, d);
    widen_rows(wv, c.vt, c.slot0, n, d);
    return (att_chunk){wide, wv, ENG_F32, 0, n};
}

/* Does a row after r that still attends at p0 read block blk there too? */
static int read_again(const att_row *rows, int r, int nr, int p0, int bs, int32_t blk) {
    for (int i = r + 1; i < nr; i++)
        if (p0 < rows[i].n_pos && rows[i].blocks[p0 / bs] == blk) return 1;
    return 0;
}

/* Rows [0, nr) walk positions together: each chunk is folded into every row that reaches it
 * while its K/V are in L1, taken from the rows' own blocks. A BF16 chunk more than one row reads
 * is widened to F32 once (`wide`, NULL for F32 pages); one read by a single row widens in
 * registers. Either way a row's arithmetic is that of attending alone. */
static void attend_group(att_row *rows, int nr, const kv_pool *kv, int layer, int kv_head,
                         float scale, float *wide) {
    int d = kv->head_dim, bs = kv->block_size, reach = 0;
    for (int r = 0; r < nr; r++) {
        for (int i = 0; i < d; i++) rows[r].out[i] = 0.0f;
        if (rows[r].n_pos > reach) reach = rows[r].n_pos;
    }
    for (int p0 = 0; p0 < reach; p0 += chunk_len(p0, bs)) {
        int n = chunk_len(p0, bs) < reach - p0 ? chunk_len(p0, bs) : reach - p0;
        int32_t cur = -1;
        att_chunk c = {0};
        for (int r = 0; r < nr; r++) {
            if (p0 >= rows[r].n_pos) continue;
            int32_t blk = rows[r].blocks[p0 / bs];
            if (blk != cur) {
                int again = wide && read_again(rows, r, nr, p0, bs, blk);
                c = chunk_at(kv, blk, layer, kv_head, p0, n, again ? wide : NULL);
                cur = blk;
            }
            row_chunk(&rows[r], &c, p0, d, scale);
        }
    }
    for (int r = 0; r < nr; r++) {
        if (!(rows[r].l > 0.0f)) continue;
        float inv = 1.0f / rows[r].l;
        for (int i = 0; i < d; i++) rows[r].out[i] *= inv;
    }
}

void eng_attend_rows_avx2(const eng_att_row *in, int R, const kv_pool *kv, int layer, int kv_head,
                          float scale) {
    float *wide = NULL; /* K then V of one chunk in F32; NULL: widen in registers */
    if (R > 1 && kv->dtype == KV_BF16)
        wide = malloc(sizeof *wide * 2 * AVX2_SCHUNK * (size_t)kv->head_dim);
    for (int g0 = 0; g0 < R; g0 += AVX2_ROWS) {
        att_row rows[AVX2_ROWS];
        int nr = R - g0 < AVX2_ROWS ? R - g0 : AVX2_ROWS;
        for (int r = 0; r < nr; r++) {
            const eng_att_row *a = &in[g0 + r];
            rows[r] = (att_row){a->out, a->q, a->blocks, a->n_pos, -INFINITY, 0};
        }
        attend_group(rows, nr, kv, layer, kv_head, scale, wide);
    }
    free(wide);
}

void eng_attend_avx2(float *out, const float *q, const kv_pool *kv, const int32_t *blocks,
                     int layer, int kv_head, int n_pos, float scale) {
    eng_att_row row = {out, q, blocks, n_pos};
    eng_attend_rows_avx2(&row, 1, kv, layer, kv_head, scale);
}

/* ---------------------------------------------------------------- SwiGLU */

AVX2_INLINE __m256 silu_mul8(__m256 g, __m256 u) {
    __m256 e = exp8(_mm256_sub_ps(_mm256_setzero_ps(), g));
    return _mm256_mul_ps(_mm256_div_ps(g, _mm256_add_ps(_mm256_set1_ps(1.0f), e)), u);
}

/* SwiGLU with exp8 (about 2 ulp of expf); the tail goes through the same vector code. */
void eng_silu_mul_avx2(float *g, const float *u, size_t n) {
    size_t i = 0;
    for (; i + AVX2_LANES <= n; i += AVX2_LANES)
        _mm256_storeu_ps(g + i, silu_mul8(_mm256_loadu_ps(g + i), _mm256_loadu_ps(u + i)));
    if (i < n) {
        float tg[AVX2_LANES] = {0}, tu[AVX2_LANES] = {0};
        memcpy(tg, g + i, (n - i) * sizeof *tg);
        memcpy(tu, u + i, (n - i) * sizeof *tu);
        _mm256_storeu_ps(tg, silu_mul8(_mm256_loadu_ps(tg), _mm256_loadu_ps(tu)));
        memcpy(g + i, tg, (n - i) * sizeof *tg);
    }
}

const eng_kernels eng_kernels_avx2 = {
    .name = "avx2",
    .matmul = avx2_matmul,
    .qmatmul = eng_qmatmul_avx2,
    .attend = eng_attend_avx2,
    .attend_rows = eng_attend_rows_avx2,
    .silu_mul = eng_silu_mul_avx2,
};
