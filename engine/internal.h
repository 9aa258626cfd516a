/*
 * internal.h — declarations shared by the engine room's own files (not a door): number format
 * conversions, the worker pool, and the model struct the loader fills and the forward pass reads.
 */
#ifndef RADIXSERVE_ENGINE_INTERNAL_H
#define RADIXSERVE_ENGINE_INTERNAL_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "engine/engine.h"

/* ---------------------------------------------------------------- number formats */

/* BF16 is the top half of an F32: widening is exact. */
static inline float eng_bf16_to_f32(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* F32 -> BF16 with round-to-nearest-even; NaN stays a (quiet) NaN. */
static inline uint16_t eng_f32_to_bf16(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40u);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

/* IEEE half -> F32, exact (subnormals, infinities and NaN included), without F16C. */
static inline float eng_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu;
    uint32_t man = h & 0x3ffu;
    uint32_t u;
    if (exp == 0x1f) {
        u = sign | 0x7f800000u | (man << 13);
    } else if (exp != 0) {
        u = sign | ((exp + 112u) << 23) | (man << 13);
    } else if (man == 0) {
        u = sign;
    } else {
        /* Subnormal half: normalise the mantissa into an F32 exponent. */
        int e = -1;
        do {
            man <<= 1;
            e++;
        } while (!(man & 0x400u));
        u = sign | ((uint32_t)(112 - e) << 23) | ((man & 0x3ffu) << 13);
    }
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* Element i of a weight array of type t, widened to F32. */
static inline float eng_load_elem(const void *w, eng_dtype t, size_t i) {
    switch (t) {
    case ENG_BF16:
        return eng_bf16_to_f32(((const uint16_t *)w)[i]);
    case ENG_F16:
        return eng_f16_to_f32(((const uint16_t *)w)[i]);
    default:
        return ((const float *)w)[i];
    }
}

static inline size_t eng_dtype_size(eng_dtype t) {
    return t == ENG_F32 ? 4 : 2;
}

#endif
