/*
 * quant.h — block-quantized weight formats, bit-compatible with GGUF/ggml's (internal to the
 * engine room, not a door). One owner for the byte layouts: the quantizers, the kernels and the
 * GGUF reader all take the structs from here.
 *
 * A quantized weight row of K elements is K / block_elems blocks stored back to back; a matrix is
 * its rows back to back (row-major, [out_features][in_features], as the other dtypes). K must be
 * a multiple of the format's block: the loader rejects a matrix whose columns are not.
 *
 * Dequantized value of element i of a block (ggml's definitions):
 *   Q8_0: d * qs[i]
 *   Q4_0: d * ((i < 16 ? qs[i] & 15 : qs[i - 16] >> 4) - 8)
 *   Q4_K: 8 sub-blocks of 32; sub-block s has 6-bit scale sc[s] and min mn[s] packed in
 *         scales[12]; value = d * sc[s] * q - dmin * mn[s], q a 4-bit value from qs
 *   Q6_K: 16 sub-blocks of 16 with int8 scales; value = d * scales[s] * (q - 32), q 6 bits from
 *         ql (low 4) and qh (high 2)
 * (the exact nibble orders are those of ggml's dequantize_row_q4_K / _q6_K; eng_dequant_row in
 * quant.c is the scalar specification every kernel is tested against).
 */
#ifndef RADIXSERVE_ENGINE_QUANT_H
#define RADIXSERVE_ENGINE_QUANT_H

#include <stddef.h>
#include <stdint.h>

#include "engine/engine.h"

enum {
    ENG_QK8_0 = 32, /* elements per Q8_0 block */
    ENG_QK4_0 = 32, /* elements per Q4_0 block */
    ENG_QK_K = 256, /* elements per K-quant super-block */
    ENG_K_SCALE_SIZE = 12,
};

/* ggml's type numbers as written in GGUF tensor infos (ggml.h's enum ggml_type). */
enum eng_ggml_type {
    ENG_GGML_F32 = 0,
    ENG_GGML_F16 = 1,
    ENG_GGML_Q4_0 = 2,
    ENG_GGML_Q8_0 = 8,
    ENG_GGML_Q4_K = 12,
    ENG_GGML_Q6_K = 14,
    ENG_GGML_BF16 = 30,
};

typedef struct eng_block_q8_0 {
    uint16_t d; /* IEEE half scale */
    int8_t qs[ENG_QK8_0];
} eng_block_q8_0;

typedef struct eng_block_q4_0 {
    uint16_t d;                /* IEEE half scale */
    uint8_t qs[ENG_QK4_0 / 2]; /* element i in low nibble of qs[i], element i + 16 in high */
} eng_block_q4_0;

typedef struct eng_block_q4_K {
    uint16_t d;                       /* IEEE half: super-block scale for the scales */
    uint16_t dmin;                    /* IEEE half: super-block scale for the mins */
    uint8_t scales[ENG_K_SCALE_SIZE]; /* 8 scales and 8 mins, 6 bits each */
    uint8_t qs[ENG_QK_K / 2];         /* 4-bit quants */
} eng_block_q4_K;

typedef struct eng_block_q6_K {
    uint8_t ql[ENG_QK_K / 2];     /* low 4 bits */
    uint8_t qh[ENG_QK_K / 4];     /* high 2 bits */
    int8_t scales[ENG_QK_K / 16]; /* 8-bit sub-block scales */
    uint16_t d;                   /* IEEE half super-block scale */
} eng_block_q6_K;

/* The sizes GGUF files carry; a mismatch would misread every file. */
_Static_assert(sizeof(eng_block_q8_0) == 34, "Q8_0 block is 34 bytes in GGUF");
_Static_assert(sizeof(eng_block_q4_0) == 18, "Q4_0 block is 18 bytes in GGUF");
_Static_assert(sizeof(eng_block_q4_K) == 144, "Q4_K block is 144 bytes in GGUF");
_Static_assert(sizeof(eng_block_q6_K) == 210, "Q6_K block is 210 bytes in GGUF");

/* ---------------------------------------------------------------- sizes (one owner) */

/* Elements per block of t: 1 for F32/BF16/F16. */
static inline int eng_dtype_block(eng_dtype t) {
    switch (t) {
    case ENG_Q8_0:
    case ENG_Q4_0:
        return 32;
    case ENG_Q4_K:
    case ENG_Q6_K:
        return ENG_QK_K;
    default:
        return 1;
    }
}

/* Bytes of one block of t (of one element for F32/BF16/F16). */
static inline size_t eng_dtype_block_bytes(eng_dtype t) {
    switch (t) {
    case ENG_F32:
        return 4;
    case ENG_BF16:
    case ENG_F16:
        return 2;
    case ENG_Q8_0:
        return sizeof(eng_block_q8_0);
    case ENG_Q4_0:
        return sizeof(eng_block_q4_0);
    case ENG_Q4_K:
        return sizeof(eng_block_q4_K);
    default:
        return sizeof(eng_block_q6_K);
    }
}

static inline int eng_dtype_is_quant(eng_dtype t) {
    return t >= ENG_Q8_0;
}

/* Bytes of n elements of type t (n a multiple of eng_dtype_block(t)): a row, or a matrix. */
static inline size_t eng_row_bytes(eng_dtype t, size_t n) {
    return n / (size_t)eng_dtype_block(t) * eng_dtype_block_bytes(t);
}

/* The name GGUF and llama.cpp give t ("f32", "bf16", "f16", "q8_0", "q4_0", "q4_K", "q6_K"). */
const char *eng_dtype_name(eng_dtype t);

/* ---------------------------------------------------------------- quantizers (quant.c) */

/* IEEE half from F32, round to nearest even (overflow to infinity, NaN kept), as F16C does. */
uint16_t eng_f32_to_f16(float f);

/* Quantize n floats (a multiple of the block) into blocks of t (a block type):
 *   Q8_0, Q4_0: ggml's reference quantizers (quantize_row_q8_0_ref / q4_0_ref: scale from the
 *               absolute maximum, round to nearest), so the bytes equal llama-quantize's;
 *   Q4_K, Q6_K: ggml's reference scheme without an importance matrix (Q4_K: per 32 a weighted
 *               scale/min search over 20 steps, scales and mins to 6 bits; Q6_K: per 16 an
 *               RMSE-weighted scale search, scales to int8). Same format, comparable error;
 *               not promised byte-identical to llama-quantize. */
void eng_quantize_row(eng_dtype t, const float *x, void *out, size_t n);

/* Row `row` of a [rows][n] matrix of any dtype, widened to n floats: the scalar specification
 * of every format's value (ggml's dequantize_row_* arithmetic, bit for bit). */
void eng_dequant_row(eng_dtype t, const void *mat, size_t row, float *out, size_t n);

/* ---------------------------------------------------------------- activations (quant.c) */

/*
 * Activations for the quantized products: each row of K floats (K a multiple of 32) cut into
 * blocks of 32, each block b stored as int8 q[32] with a float scale d[b], dsum[b] = d[b] *
 * sum(q) (for Q4_K's mins), and per 16 values qneg[h] = -128 * their sum (the AVX-512 products
 * feed weights + 128 to VNNI as the unsigned operand; this takes the 128 * sum(q) back out). d =
 * amax / 127, q = round-half-even(x * (1 / d)): |q| <= 127 always. One routine, eng_quant_act_rows,
 * computes it for every kernel table, so every table sees the same integers; a row's blocks depend
 * on that row alone (batch invariance).
 */
enum { ENG_QA = 32 };

typedef struct eng_qact {
    int8_t *qs;    /* [M][K] */
    float *d;      /* [M][K / 32] block scales */
    float *dsum;   /* [M][K / 32] d * sum of the block's q */
    int32_t *qneg; /* [M][K / 16] -128 * sum of each 16 q */
    int K;         /* row length */
} eng_qact;

/* Rows [r0, r1) of x ([M][K] floats) into a (sized for at least r1 rows of a->K). */
void eng_quant_act_rows(eng_qact *a, const float *x, int r0, int r1);

/*
 * The scalar reference of every quantized product (the portable table's, and what the tests
 * hold the SIMD tables to): W row . activation row m over K, as a sum over 32-element blocks b
 * in order of a float contribution
 *   Q8_0, Q4_0: (dw * d[b]) * isum,   isum = sum of w_int * q (Q4_0: w_int = nibble - 8)
 *   Q4_K:       (D * sc * d[b]) * isum - (Dmin * mn) * dsum[b],   isum = sum of nibble * q
 *   Q6_K:       two sub-blocks of 16: (D * sc * d[b]) * isum16 each, w_int = 6-bit value - 32
 * The integer sums are exact in every table; the SIMD tables add the float contributions in
 * lanes and a different order, so they agree within rounding (kernels.h, tests).
 */
float eng_qdot_ref(eng_dtype t, const void *wrow, const eng_qact *a, int m);

#endif
