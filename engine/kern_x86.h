/*
 * kern_x86.h — what the SIMD kernel tables (kern_avx2.c, kern_avx512.c) share: the cache
 * blocking of the weight product, which only decides in which order tiles are computed and so
 * never changes a number. Private to those files and kernels.c.
 */
#ifndef RADIXSERVE_ENGINE_KERN_X86_H
#define RADIXSERVE_ENGINE_KERN_X86_H

#include "engine/kernels.h"

/* e^x's constants, one owner for the AVX2 exp8 and the AVX-512 exp16 (the same reduction and
 * polynomial in 8 or 16 lanes): clamp range, log2(e), ln 2 in two parts, degree-6 coefficients. */
#define ENG_EXP_LO  (-87.3365447505531f)
#define ENG_EXP_HI  88.0f
#define ENG_EXP_L2E 1.44269504088896341f
#define ENG_EXP_LN1 0.693359375f
#define ENG_EXP_LN2 (-2.12194440e-4f)
#define ENG_EXP_P0  1.9875691500e-4f
#define ENG_EXP_P1  1.3981999507e-3f
#define ENG_EXP_P2  8.3334519073e-3f
#define ENG_EXP_P3  4.1665795894e-2f
#define ENG_EXP_P4  1.6666665459e-1f
#define ENG_EXP_P5  5.0000001201e-1f

/* Largest activation-row count of one tile. */
#define ENG_TILE_MR 4

/* What every tile of one matmul call shares. */
typedef struct eng_tile_args {
    float *y;       /* output, pointing at the tile's first row */
    int ldy;        /* row stride of y */
    const float *x; /* activations, pointing at the tile's first row; rows are K apart */
    int K;          /* reduction length */
    const void *W;  /* all N weight rows */
    eng_dtype wdt;  /* their type */
    int stream;     /* few activation rows (decode): prefetching weight rows pays off */
} eng_tile_args;

/*
 * One register tile: y[i * ldy + n + j] = x row i . W row n + j for i < mr, j < nr. Every
 * element is computed by the same instruction sequence whatever mr, nr and stream are; they only
 * decide how many elements run side by side and what is prefetched.
 */
typedef void (*eng_tile_fn)(const eng_tile_args *a, int n, int mr, int nr);

typedef struct eng_tiling {
    eng_tile_fn tile;        /* the ISA's register tile */
    int nr[ENG_TILE_MR + 1]; /* weight rows per tile for mr rows (index mr; [0] unused);
                                besides these, the tile must accept nr = 1 for tails */
    int l2_weight_bytes;     /* weight bytes kept hot while all row tiles pass over them */
} eng_tiling;

/* The matmul of kernels.h (y = x W^T for columns [n0, n1)), cut into tiles. */
void eng_matmul_tiled(const eng_tiling *t, float *y, int ldy, const float *x, int M, const void *W,
                      eng_dtype wdt, int K, int n0, int n1);

/*
 * Defines, in a kernel file that has `tile_gen(const eng_tile_args *a, eng_dtype t, int n,
 * int MR, int NR)` (always inlined, so each constant MR, NR and t gets its own code), the
 * matmul of kernels.h named NAME: a tile function that picks the instantiation for (wdt, mr,
 * nr), and its tiling with NR1..NR4 weight rows for 1..4 activation rows and L2 bytes of weights
 * per column block.
 */
#define ENG_TILE_SHAPE(a, t, n, MR, NR, nr)                                                        \
    ((nr) != 1 ? tile_gen(a, t, n, MR, NR) : tile_gen(a, t, n, MR, 1))
#define ENG_DEFINE_MATMUL(NAME, NR1, NR2, NR3, NR4, L2)                                            \
    static inline __attribute__((always_inline)) void NAME##_shapes(                               \
        const eng_tile_args *a, eng_dtype t, int n, int mr, int nr) {                              \
        switch (mr) {                                                                              \
        case 1:                                                                                    \
            ENG_TILE_SHAPE(a, t, n, 1, NR1, nr);                                                   \
            break;                                                                                 \
        case 2:                                                                                    \
            ENG_TILE_SHAPE(a, t, n, 2, NR2, nr);                                                   \
            break;                                                                                 \
        case 3:                                                                                    \
            ENG_TILE_SHAPE(a, t, n, 3, NR3, nr);                                                   \
            break;                                                                                 \
        default:                                                                                   \
            ENG_TILE_SHAPE(a, t, n, 4, NR4, nr);                                                   \
            break;                                                                                 \
        }                                                                                          \
    }                                                                                              \
    static void NAME##_tile(const eng_tile_args *a, int n, int mr, int nr) {                       \
        if (a->wdt == ENG_BF16)                                                                    \
            NAME##_shapes(a, ENG_BF16, n, mr, nr);                                                 \
        else if (a->wdt == ENG_F16)                                                                \
            NAME##_shapes(a, ENG_F16, n, mr, nr);                                                  \
        else                                                                                       \
            NAME##_shapes(a, ENG_F32, n, mr, nr);                                                  \
    }                                                                                              \
    static const eng_tiling NAME##_tiling = {                                                      \
        .tile = NAME##_tile, .nr = {0, NR1, NR2, NR3, NR4}, .l2_weight_bytes = (L2)};              \
    static void NAME(float *y, int ldy, const float *x, int M, const void *W, eng_dtype wdt,       \
                     int K, int n0, int n1) {                                                      \
        eng_matmul_tiled(&NAME##_tiling, y, ldy, x, M, W, wdt, K, n0, n1);                         \
    }

/* ---------------------------------------------------------------- quantized weights */

/* What every tile of one qmatmul call shares. */
typedef struct eng_qtile_args {
    float *y;          /* output, pointing at row m0 */
    int ldy;           /* row stride of y */
    const eng_qact *x; /* all activation rows */
    int m0;            /* the tile's first activation row */
    const char *W;     /* all weight rows */
    size_t rb;         /* bytes per weight row */
    int stream;        /* few activation rows (decode): prefetch the next tile's rows */
} eng_qtile_args;

/* One register tile of mr activation rows by weight rows n .. n + nr - 1 of type t; as for
 * eng_tile_fn, mr, nr and stream never change an element's instruction sequence. */
typedef void (*eng_qtile_fn)(const eng_qtile_args *a, eng_dtype t, int n, int mr, int nr);

typedef struct eng_qtiling {
    eng_qtile_fn tile;       /* the ISA's quantized tile (accepts nr = 1 too) */
    int nr[ENG_TILE_MR + 1]; /* weight rows per tile for mr rows (index mr) */
    int l2_weight_bytes;     /* weight bytes kept hot while all row tiles pass over them */
} eng_qtiling;

/* The qmatmul of kernels.h, cut into column blocks and tiles as eng_matmul_tiled does. */
void eng_qmatmul_tiled(const eng_qtiling *t, float *y, int ldy, const eng_qact *x, int M,
                       const void *W, eng_dtype wdt, int n0, int n1);

/*
 * Defines, in a kernel file with always-inlined tiles `q8_0_tile`, `q4_0_tile`, `q4_K_tile`,
 * `q6_K_tile` (const eng_qtile_args *a, int n, int MR, int NR), the qmatmul named NAME with
 * NR1..NR4 weight rows for 1..4 activation rows and L2 bytes of weights per column block.
 */
#define ENG_QTILE_SHAPE(fn, a, n, MR, NR, nr) ((nr) != 1 ? fn(a, n, MR, NR) : fn(a, n, MR, 1))
#define ENG_QTILE_MR(fn, a, n, mr, nr, NR1, NR2, NR3, NR4)                                         \
    switch (mr) {                                                                                  \
    case 1:                                                                                        \
        ENG_QTILE_SHAPE(fn, a, n, 1, NR1, nr);                                                     \
        break;                                                                                     \
    case 2:                                                                                        \
        ENG_QTILE_SHAPE(fn, a, n, 2, NR2, nr);                                                     \
        break;                                                                                     \
    case 3:                                                                                        \
        ENG_QTILE_SHAPE(fn, a, n, 3, NR3, nr);                                                     \
        break;                                                                                     \
    default:                                                                                       \
        ENG_QTILE_SHAPE(fn, a, n, 4, NR4, nr);                                                     \
        break;                                                                                     \
    }
#define ENG_DEFINE_QMATMUL(NAME, NR1, NR2, NR3, NR4, L2)                                           \
    static void NAME##_tile(const eng_qtile_args *a, eng_dtype t, int n, int mr, int nr) {         \
        if (t == ENG_Q8_0) {                                                                       \
            ENG_QTILE_MR(q8_0_tile, a, n, mr, nr, NR1, NR2, NR3, NR4)                              \
        } else if (t == ENG_Q4_0) {                                                                \
            ENG_QTILE_MR(q4_0_tile, a, n, mr, nr, NR1, NR2, NR3, NR4)                              \
        } else if (t == ENG_Q4_K) {                                                                \
            ENG_QTILE_MR(q4_K_tile, a, n, mr, nr, NR1, NR2, NR3, NR4)                              \
        } else {                                                                                   \
            ENG_QTILE_MR(q6_K_tile, a, n, mr, nr, NR1, NR2, NR3, NR4)                              \
        }                                                                                          \
    }                                                                                              \
    static const eng_qtiling NAME##_tiling = {                                                     \
        .tile = NAME##_tile, .nr = {0, NR1, NR2, NR3, NR4}, .l2_weight_bytes = (L2)};              \
    void NAME(float *y, int ldy, const eng_qact *x, int M, const void *W, eng_dtype wdt, int n0,   \
              int n1) {                                                                            \
        eng_qmatmul_tiled(&NAME##_tiling, y, ldy, x, M, W, wdt, n0, n1);                           \
    }

/* The quantized products of the AVX2 and AVX-512 tables (kern_q_avx2.c, kern_q_avx512.c). */
void eng_qmatmul_avx2(float *y, int ldy, const eng_qact *x, int M, const void *W, eng_dtype wdt,
                      int n0, int n1);
void eng_qmatmul_avx512(float *y, int ldy, const eng_qact *x, int M, const void *W, eng_dtype wdt,
                        int n0, int n1);

/* The AVX2 attention (kern_avx2.c), also the AVX-512 tables' over F32 pages (over BF16 pages they
 * widen K and V for 16-lane FMAs: eng_attend_rows_avx512). */
void eng_attend_avx2(float *out, const float *q, const kv_pool *kv, const int32_t *blocks,
                     int layer, int kv_head, int n_pos, float scale);

/*
 * attend_rows of the AVX2 and AVX-512 tables (the contract is in kernels.h): rows are taken in
 * groups that walk positions together, so a block shared by several rows of a group (all of a
 * prefill's, a common prefix's) is read and widened once for the group; every row's result is
 * bit for bit what eng_attend_avx2 gives it alone.
 */
void eng_attend_rows_avx2(const eng_att_row *rows, int R, const kv_pool *kv, int layer, int kv_head,
                          float scale);

/* What the AVX-512 tables share (kern_avx512.c): the matmul whose BF16 products widen the weights
 * for FMAs (the avx512bf16 table takes it for F32 and F16 weights), and the attention over BF16
 * pages (kernels.h's attend and attend_rows). */
void eng_matmul_avx512(float *y, int ldy, const float *x, int M, const void *W, eng_dtype wdt,
                       int K, int n0, int n1);
void eng_attend_avx512(float *out, const float *q, const kv_pool *kv, const int32_t *blocks,
                       int layer, int kv_head, int n_pos, float scale);
void eng_attend_rows_avx512(const eng_att_row *rows, int R, const kv_pool *kv, int layer,
                            int kv_head, float scale);

/* silu_mul of the AVX2 and AVX-512 tables (kern_avx2.c): the attention's exp8 in 8 lanes. */
void eng_silu_mul_avx2(float *g, const float *u, size_t n);

#endif
