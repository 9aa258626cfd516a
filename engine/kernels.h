/*
 * kernels.h — the engine's inner loops, one table per instruction set, chosen at run time.
 * Internal to the engine room (not a door).
 *
 * Batch invariance is a property of each table: within one table, every output element is
 * computed by the same sequence of floating-point operations whatever M, the row range, the
 * thread split or the other rows are. Different tables may round differently (the avx512bf16 table
 * rounds activations to BF16 for _mm512_dpbf16_ps; the others do not), so a process uses one
 * table for everything.
 */
#ifndef RADIXSERVE_ENGINE_KERNELS_H
#define RADIXSERVE_ENGINE_KERNELS_H

#include <stdint.h>

#include "cache/cache.h"
#include "engine/engine.h"
#include "engine/quant.h"

/* One query row of attend_rows. */
typedef struct eng_att_row {
    float *out;            /* head_dim floats: the result */
    const float *q;        /* head_dim floats: the query */
    const int32_t *blocks; /* the row's sequence's block table */
    int n_pos;             /* positions attended: [0, n_pos) */
} eng_att_row;

typedef struct eng_kernels {
    const char *name; /* "portable", "avx2", "avx512", "avx512bf16" */

    /*
     * Weight product for output columns [n0, n1):
     *     y[m * ldy + n] = sum_k x[m * K + k] * W[n * K + k]     for m < M, n0 <= n < n1
     * x: M rows of K float activations; W: N rows of K weights of type wdt (row-major, as
     * stored in safetensors: [out_features][in_features]). y[m][n] must depend only on row m
     * of x and row n of W: the same lane split over K and the same horizontal reduction for
     * M = 1 (decode GEMV) and M = 512 (prefill GEMM), for any n0/n1 (the worker split).
     */
    void (*matmul)(float *y, int ldy, const float *x, int M, const void *W, eng_dtype wdt, int K,
                   int n0, int n1);

    /*
     * The weight product for block-quantized weights (wdt Q8_0, Q4_0, Q4_K or Q6_K; K = x->K a
     * multiple of the format's block), over activations quantized by eng_quant_act_rows:
     *     y[m * ldy + n] = W row n . activation row m      for m < M, n0 <= n < n1
     * Each element's integer block sums are exact; they are scaled and added in one fixed order
     * per table (eng_qdot_ref's order in the portable table, SIMD lanes in the others), the
     * same for every M, row range and column split, as for matmul.
     */
    void (*qmatmul)(float *y, int ldy, const eng_qact *x, int M, const void *W, eng_dtype wdt,
                    int n0, int n1);

    /*
     * Attention of one query vector for one (layer, query head) over positions [0, n_pos):
     *     out = sum_p softmax_p(scale * q . K_p) V_p
     * K_p/V_p read from the pool pages of `blocks` (KV head kv_head), walked in position order
     * one block at a time with an online softmax. The same routine serves prefill (each query
     * row calls it with its own n_pos) and decode, so a row's result never depends on how many
     * other rows there are.
     */
    void (*attend)(float *out, const float *q, const kv_pool *kv, const int32_t *blocks, int layer,
                   int kv_head, int n_pos, float scale);

    /*
     * Optional (NULL: the forward pass calls `attend` per row). Attention of R query rows of one
     * (layer, KV head) in one walk over positions: rows[r] attends over [0, rows[r].n_pos) of
     * its own block table. Rows may come from different sequences; where their tables hold the
     * same block at a position, its K/V are read once for all of them (a prefill's rows share
     * every block, decode rows of requests with a common cached prefix share the prefix's).
     * Each row's result is bit for bit what `attend` gives it alone, so using it never changes
     * a number, only how often K/V are read. Rows sharing blocks should be adjacent (speed only).
     */
    void (*attend_rows)(const eng_att_row *rows, int R, const kv_pool *kv, int layer, int kv_head,
                        float scale);

    /*
     * SwiGLU's element-wise step: g[i] = g[i] / (1 + e^-g[i]) * u[i] for i < n. Each element's
     * arithmetic is its own and the same wherever it falls in [0, n) (no tail path of another
     * kind), so any split over rows or threads gives the same numbers.
     */
    void (*silu_mul)(float *g, const float *u, size_t n);
} eng_kernels;

extern const eng_kernels eng_kernels_portable;
extern const eng_kernels eng_kernels_avx2;
extern const eng_kernels eng_kernels_avx512;
extern const eng_kernels eng_kernels_avx512bf16;

/* The table for this CPU, or the one RADIXSERVE_ISA forces (RS_EINVAL if the CPU lacks it or
 * the name is unknown). */
int eng_kernels_select(const eng_kernels **out, rs_err *e);

#endif
