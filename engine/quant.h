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

#include <stdint.h>

enum {
    ENG_QK8_0 = 32,  /* elements per Q8_0 block */
    ENG_QK4_0 = 32,  /* elements per Q4_0 block */
    ENG_QK_K = 256,  /* elements per K-quant super-block */
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
    uint16_t d;                  /* IEEE half scale */
    uint8_t qs[ENG_QK4_0 / 2];   /* element i in low nibble of qs[i], element i + 16 in high */
} eng_block_q4_0;

typedef struct eng_block_q4_K {
    uint16_t d;                        /* IEEE half: super-block scale for the scales */
    uint16_t dmin;                     /* IEEE half: super-block scale for the mins */
    uint8_t scales[ENG_K_SCALE_SIZE];  /* 8 scales and 8 mins, 6 bits each */
    uint8_t qs[ENG_QK_K / 2];          /* 4-bit quants */
} eng_block_q4_K;

typedef struct eng_block_q6_K {
    uint8_t ql[ENG_QK_K / 2];      /* low 4 bits */
    uint8_t qh[ENG_QK_K / 4];      /* high 2 bits */
    int8_t scales[ENG_QK_K / 16];  /* 8-bit sub-block scales */
    uint16_t d;                    /* IEEE half super-block scale */
} eng_block_q6_K;

/* The sizes GGUF files carry; a mismatch would misread every file. */
_Static_assert(sizeof(eng_block_q8_0) == 34, "Q8_0 block is 34 bytes in GGUF");
_Static_assert(sizeof(eng_block_q4_0) == 18, "Q4_0 block is 18 bytes in GGUF");
_Static_assert(sizeof(eng_block_q4_K) == 144, "Q4_K block is 144 bytes in GGUF");
_Static_assert(sizeof(eng_block_q6_K) == 210, "Q6_K block is 210 bytes in GGUF");

#endif
