/*
 * kern_portable.c — the portable C kernel table: the reference every faster table is compared
 * with, and the table used on CPUs without AVX2.
 *
 * Batch invariance by construction: an output element y[m][n] is one dot product of x row m and
 * W row n, accumulated in 8 lanes (element k goes to lane k % 8, each lane summed in k order)
 * and reduced as ((l0+l1)+(l2+l3))+((l4+l5)+(l6+l7)). Nothing in that depends on M, on the
 * column range [n0, n1) or on the blocking below, which only decides how often a weight row is
 * widened to F32. The file is compiled without FMA (plain -O2, ISO C, so no contraction), which
 * keeps the arithmetic identical on every x86-64.
 *
 * Speed without intrinsics: the weight product holds each row's 8 lanes in two GCC vectors of
 * 4 floats (SSE2 registers on any x86-64; GCC lowers them to scalar code elsewhere) for 4
 * activation rows at once, and widens BF16 four values at a time. Vector + and * are the same
 * element-wise IEEE operations as the scalar lane code, so the results are the scalar loop's
 * bits (GCC's own -O2 vectoriser left these loops scalar or spilled its accumulators).
 */
#include "engine/internal.h"
#include "engine/kernels.h"

#include <math.h>

enum {
    PORT_LANES = 8,    /* partial sums per dot product */
    PORT_KCHUNK = 512, /* weights widened per step (a multiple of PORT_LANES) */
    PORT_MBLOCK = 16,  /* activation rows sharing one widened weight chunk */
    PORT_MR = 4,       /* activation rows whose lanes are accumulated side by side */
    PORT_SCHUNK = 64,  /* attention scores computed before one softmax rescale */
};

/* Add x[0..n) * w[0..n) into the lanes; x and w start on a lane boundary (k % 8 == 0). */
static void lanes_add(float lane[PORT_LANES], const float *x, const float *w, int n) {
    int k = 0;
    for (; k + PORT_LANES <= n; k += PORT_LANES)
        for (int j = 0; j < PORT_LANES; j++) lane[j] += x[k + j] * w[k + j];
    for (int j = 0; k + j < n; j++) lane[j] += x[k + j] * w[k + j];
}

/* Four lanes as one GCC vector (an SSE2 register on plain x86-64, scalar code where there is
 * no SIMD); element-wise + and * round exactly as the scalar lane code does. 16 bytes, since
 * GCC spills wider vectors that the target has no registers for. */
typedef float port_v4 __attribute__((vector_size(4 * sizeof(float))));

/* BF16 bit patterns, and the same widened to the top half of F32 bit patterns. */
typedef uint16_t port_u16x4 __attribute__((vector_size(4 * sizeof(uint16_t))));
typedef uint32_t port_u32x4 __attribute__((vector_size(4 * sizeof(uint32_t))));

/* Vectors are loaded by memcpy (any alignment) and never passed by value. */
#define LOAD_V4(v, p) memcpy(&(v), (p), sizeof(port_v4))

/*
 * lanes_add for MR activation rows (ldx apart) against one weight chunk, MR a constant at each
 * call: the 8 lanes of each row are two vectors held in registers, and every lane still gets
 * lane += x * w, one rounding each, in k order (the file is compiled without FMA contraction).
 */
static inline void rows_add(float lane[][PORT_LANES], const float *x, size_t ldx, const float *w,
                            int n, int MR) {
    port_v4 lo[PORT_MR], hi[PORT_MR];
#pragma GCC unroll 4
    for (int i = 0; i < MR; i++) {
        LOAD_V4(lo[i], lane[i]);
        LOAD_V4(hi[i], lane[i] + 4);
    }
    int k = 0;
    for (; k + PORT_LANES <= n; k += PORT_LANES) {
        port_v4 wl, wh, xl, xh;
        LOAD_V4(wl, w + k);
        LOAD_V4(wh, w + k + 4);
#pragma GCC unroll 4
        for (int i = 0; i < MR; i++) {
            LOAD_V4(xl, x + (size_t)i * ldx + k);
            LOAD_V4(xh, x + (size_t)i * ldx + k + 4);
            lo[i] += xl * wl;
            hi[i] += xh * wh;
        }
    }
#pragma GCC unroll 4
    for (int i = 0; i < MR; i++) {
        memcpy(lane[i], &lo[i], sizeof lo[i]);
        memcpy(lane[i] + 4, &hi[i], sizeof hi[i]);
        for (int j = 0; k + j < n; j++) lane[i][j] += x[(size_t)i * ldx + k + j] * w[k + j];
    }
}

/* rows_add for mr (1..PORT_MR) rows, each count its own constant instance. */
static void rows_add_mr(float lane[][PORT_LANES], const float *x, size_t ldx, const float *w, int n,
                        int mr) {
    switch (mr) {
    case 1:
        rows_add(lane, x, ldx, w, n, 1);
        break;
    case 2:
        rows_add(lane, x, ldx, w, n, 2);
        break;
    case 3:
        rows_add(lane, x, ldx, w, n, 3);
        break;
    default:
        rows_add(lane, x, ldx, w, n, PORT_MR);
        break;
    }
}

static float lanes_sum(const float l[PORT_LANES]) {
    return ((l[0] + l[1]) + (l[2] + l[3])) + ((l[4] + l[5]) + (l[6] + l[7]));
}

/* Widen n weights of type t starting at element i0 of row w into out. */
static void widen(float *out, const void *w, eng_dtype t, size_t i0, int n) {
    if (t == ENG_BF16) {
        const uint16_t *p = (const uint16_t *)w + i0;
        int i = 0;
        for (; i + 4 <= n; i += 4) { /* four at a time: GCC's -O2 leaves the scalar loop alone */
            port_u16x4 h;
            memcpy(&h, p + i, sizeof h);
            port_u32x4 u = __builtin_convertvector(h, port_u32x4) << 16;
            memcpy(out + i, &u, sizeof u);
        }
        for (; i < n; i++) out[i] = eng_bf16_to_f32(p[i]);
    } else if (t == ENG_F16) {
        const uint16_t *p = (const uint16_t *)w + i0;
        for (int i = 0; i < n; i++) out[i] = eng_f16_to_f32(p[i]);
    } else {
        memcpy(out, (const float *)w + i0, (size_t)n * sizeof *out);
    }
}

static void port_matmul(float *y, int ldy, const float *x, int M, const void *W, eng_dtype wdt,
                        int K, int n0, int n1) {
    float wbuf[PORT_KCHUNK];
    float lane[PORT_MBLOCK][PORT_LANES];
    for (int m0 = 0; m0 < M; m0 += PORT_MBLOCK) {
        int mb = M - m0 < PORT_MBLOCK ? M - m0 : PORT_MBLOCK;
        for (int n = n0; n < n1; n++) {
            memset(lane, 0, sizeof lane);
            for (int k0 = 0; k0 < K; k0 += PORT_KCHUNK) {
                int kl = K - k0 < PORT_KCHUNK ? K - k0 : PORT_KCHUNK;
                const float *w = wbuf;
                if (wdt == ENG_F32)
                    w = (const float *)W + (size_t)n * (size_t)K + (size_t)k0;
                else
                    widen(wbuf, W, wdt, (size_t)n * (size_t)K + (size_t)k0, kl);
                for (int i = 0; i < mb; i += PORT_MR)
                    rows_add_mr(lane + i, x + (size_t)(m0 + i) * (size_t)K + (size_t)k0, (size_t)K,
                                w, kl, mb - i < PORT_MR ? mb - i : PORT_MR);
            }
            for (int i = 0; i < mb; i++)
                y[(size_t)(m0 + i) * (size_t)ldy + (size_t)n] = lanes_sum(lane[i]);
        }
    }
}

/* q . (row of a K tile), with the matmul's lane scheme. */
static float dot_row(const float *q, const void *tile, kv_dtype t, int slot, int d) {
    float lane[PORT_LANES] = {0};
    if (t == KV_F32) {
        lanes_add(lane, q, (const float *)tile + (size_t)slot * (size_t)d, d);
    } else {
        const uint16_t *p = (const uint16_t *)tile + (size_t)slot * (size_t)d;
        int k = 0;
        for (; k + PORT_LANES <= d; k += PORT_LANES)
            for (int j = 0; j < PORT_LANES; j++) lane[j] += q[k + j] * eng_bf16_to_f32(p[k + j]);
        for (int j = 0; k + j < d; j++) lane[j] += q[k + j] * eng_bf16_to_f32(p[k + j]);
    }
    return lanes_sum(lane);
}

/* acc[0..d) += p * (row `slot` of a V tile). */
static void axpy_row(float *acc, float p, const void *tile, kv_dtype t, int slot, int d) {
    if (t == KV_F32) {
        const float *v = (const float *)tile + (size_t)slot * (size_t)d;
        for (int i = 0; i < d; i++) acc[i] += p * v[i];
    } else {
        const uint16_t *v = (const uint16_t *)tile + (size_t)slot * (size_t)d;
        for (int i = 0; i < d; i++) acc[i] += p * eng_bf16_to_f32(v[i]);
    }
}

/*
 * Online softmax over positions in order, in chunks of at most PORT_SCHUNK positions that never
 * cross a block: chunk boundaries depend only on positions, so a query sees the same chunks
 * whether it runs in a prefill of 500 rows or alone in a decode step.
 */
static void port_attend(float *out, const float *q, const kv_pool *kv, const int32_t *blocks,
                        int layer, int kv_head, int n_pos, float scale) {
    int d = kv->head_dim, bs = kv->block_size;
    float s[PORT_SCHUNK];
    float mx = -INFINITY, l = 0.0f;
    for (int i = 0; i < d; i++) out[i] = 0.0f;
    for (int p0 = 0; p0 < n_pos;) {
        int blk = p0 / bs, slot0 = p0 % bs;
        int n = bs - slot0;
        if (n > PORT_SCHUNK) n = PORT_SCHUNK;
        if (n > n_pos - p0) n = n_pos - p0;
        const void *kt = kv_tile(kv, blocks[blk], layer, 0, kv_head);
        const void *vt = kv_tile(kv, blocks[blk], layer, 1, kv_head);
        float cmax = -INFINITY;
        for (int i = 0; i < n; i++) {
            s[i] = scale * dot_row(q, kt, kv->dtype, slot0 + i, d);
            if (s[i] > cmax) cmax = s[i];
        }
        float nmx = cmax > mx ? cmax : mx;
        float corr = expf(mx - nmx); /* 0 on the first chunk (mx = -inf) */
        l *= corr;
        for (int i = 0; i < d; i++) out[i] *= corr;
        for (int i = 0; i < n; i++) {
            float p = expf(s[i] - nmx);
            l += p;
            axpy_row(out, p, vt, kv->dtype, slot0 + i, d);
        }
        mx = nmx;
        p0 += n;
    }
    if (l > 0.0f)
        for (int i = 0; i < d; i++) out[i] /= l;
}

/* Quantized weights: eng_qdot_ref per element, the scalar specification itself. */
static void port_qmatmul(float *y, int ldy, const eng_qact *x, int M, const void *W, eng_dtype wdt,
                         int n0, int n1) {
    size_t rb = eng_row_bytes(wdt, (size_t)x->K);
    for (int n = n0; n < n1; n++)
        for (int m = 0; m < M; m++)
            y[(size_t)m * (size_t)ldy + (size_t)n] =
                eng_qdot_ref(wdt, (const char *)W + (size_t)n * rb, x, m);
}

/* SwiGLU with libm's expf. */
static void port_silu_mul(float *g, const float *u, size_t n) {
    for (size_t i = 0; i < n; i++) g[i] = g[i] / (1.0f + expf(-g[i])) * u[i];
}

const eng_kernels eng_kernels_portable = {
    .name = "portable",
    .matmul = port_matmul,
    .qmatmul = port_qmatmul,
    .attend = port_attend,
    .silu_mul = port_silu_mul,
    .attend_rows = NULL, /* the forward pass loops over rows */
};
