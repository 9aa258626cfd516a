/*
 * quant.c — the block formats' arithmetic in plain C: F16 rounding, the weight quantizers (what
 * ggml's reference quantizers compute, rewritten from their description), the dequantization
 * that specifies every format's values, the activation quantizer all kernel tables share, and
 * the scalar reference of the quantized dot products. Layouts and contracts: engine/quant.h.
 */
#include "engine/internal.h"

#include <math.h>

/* Below this a group is all zero (ggml's GROUP_MAX_EPS). */
#define GROUP_EPS 1e-15f

const char *eng_dtype_name(eng_dtype t) {
    static const char *const names[] = {"f32", "bf16", "f16", "q8_0", "q4_0", "q4_K", "q6_K"};
    return (unsigned)t < sizeof names / sizeof names[0] ? names[t] : "?";
}

uint16_t eng_f32_to_f16(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    uint16_t sign = (uint16_t)((u >> 16) & 0x8000u);
    u &= 0x7fffffffu;
    if (u > 0x7f800000u) return (uint16_t)(sign | 0x7e00u | ((u >> 13) & 0x3ffu));
    int e = (int)(u >> 23) - 127;
    uint32_t man = u & 0x7fffffu;
    if (e > 15) return (uint16_t)(sign | 0x7c00u);
    if (e >= -14) { /* normal: drop 13 bits, round half to even; a carry may reach infinity */
        uint32_t h = ((uint32_t)(e + 15) << 10) | (man >> 13), rem = man & 0x1fffu;
        if (rem > 0x1000u || (rem == 0x1000u && (h & 1u))) h++;
        return (uint16_t)(sign | h);
    }
    int s = -(e + 1); /* subnormal: value / 2^-24 = (man | 2^23) >> s */
    if (s > 24) return sign;
    uint32_t m = man | 0x800000u, h = m >> s, rem = m & ((1u << s) - 1u), half = 1u << (s - 1);
    if (rem > half || (rem == half && (h & 1u))) h++;
    return (uint16_t)(sign | h);
}

static int nearest(float f) {
    return (int)nearbyintf(f); /* round half to even, as ggml's nearest_int */
}

static int clampi(int v, int lo, int hi) {
    return v < lo ? lo : v > hi ? hi : v;
}

/* ---------------------------------------------------------------- Q8_0, Q4_0 */

static void quant_q8_0(const float *x, eng_block_q8_0 *y, size_t nb) {
    for (size_t i = 0; i < nb; i++, x += ENG_QK8_0) {
        float amax = 0.0f;
        for (int j = 0; j < ENG_QK8_0; j++) amax = fmaxf(amax, fabsf(x[j]));
        float d = amax / 127.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
        y[i].d = eng_f32_to_f16(d);
        for (int j = 0; j < ENG_QK8_0; j++) y[i].qs[j] = (int8_t)roundf(x[j] * id);
    }
}

static void quant_q4_0(const float *x, eng_block_q4_0 *y, size_t nb) {
    for (size_t i = 0; i < nb; i++, x += ENG_QK4_0) {
        float amax = 0.0f, max = 0.0f; /* the value of largest magnitude, signed */
        for (int j = 0; j < ENG_QK4_0; j++)
            if (amax < fabsf(x[j])) amax = fabsf(x[j]), max = x[j];
        float d = max / -8.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
        y[i].d = eng_f32_to_f16(d);
        for (int j = 0; j < ENG_QK4_0 / 2; j++) {
            int lo = (int8_t)(x[j] * id + 8.5f), hi = (int8_t)(x[j + 16] * id + 8.5f);
            y[i].qs[j] = (uint8_t)((lo < 15 ? lo : 15) | (hi < 15 ? hi : 15) << 4);
        }
    }
}

/* ---------------------------------------------------------------- Q4_K */

/* Error of scale * L + min against x, weighted. */
static float fit_error(const float *x, const float *w, const uint8_t *L, int n, float scale,
                       float min) {
    float err = 0.0f;
    for (int i = 0; i < n; i++) {
        float diff = scale * L[i] + min - x[i];
        err += w[i] * diff * diff;
    }
    return err;
}

/*
 * Scale and min (x ~ scale * L - *neg_min, L in 0..nmax) for n values with weights w: start
 * from the range, then try nstep + 1 stretched grids and keep the least-squares fit of lowest
 * weighted error (ggml's make_qkx2_quants with rmin = -1, rdelta = 0.1, squared error).
 */
static float fit_scale_min(int n, int nmax, const float *x, const float *w, uint8_t *L,
                           float *neg_min, int nstep) {
    float min = x[0], max = x[0], sum_w = w[0], sum_x = w[0] * x[0];
    for (int i = 1; i < n; i++) {
        min = fminf(min, x[i]);
        max = fmaxf(max, x[i]);
        sum_w += w[i];
        sum_x += w[i] * x[i];
    }
    if (min > 0) min = 0;
    if (max == min) {
        memset(L, 0, (size_t)n);
        *neg_min = -min;
        return 0.0f;
    }
    float iscale = nmax / (max - min), scale = 1 / iscale;
    for (int i = 0; i < n; i++) L[i] = (uint8_t)clampi(nearest(iscale * (x[i] - min)), 0, nmax);
    float best = fit_error(x, w, L, n, scale, min);
    uint8_t aux[ENG_QK_K];
    for (int is = 0; is <= nstep; is++) {
        iscale = (-1.0f + 0.1f * is + nmax) / (max - min);
        float sum_l = 0, sum_l2 = 0, sum_xl = 0;
        for (int i = 0; i < n; i++) {
            int l = clampi(nearest(iscale * (x[i] - min)), 0, nmax);
            aux[i] = (uint8_t)l;
            sum_l += w[i] * l;
            sum_l2 += w[i] * l * l;
            sum_xl += w[i] * l * x[i];
        }
        float D = sum_w * sum_l2 - sum_l * sum_l;
        if (!(D > 0)) continue;
        float s = (sum_w * sum_xl - sum_x * sum_l) / D, m = (sum_l2 * sum_x - sum_l * sum_xl) / D;
        if (m > 0) {
            m = 0;
            s = sum_xl / sum_l2;
        }
        float err = fit_error(x, w, aux, n, s, m);
        if (err < best) {
            memcpy(L, aux, (size_t)n);
            best = err;
            scale = s;
            min = m;
        }
    }
    *neg_min = -min;
    return scale;
}

/* Sub-block j's 6-bit scale and min from the 12 packed bytes (ggml's get_scale_min_k4). */
static void q4k_scale_min(const uint8_t *q, int j, int *sc, int *mn) {
    if (j < 4) {
        *sc = q[j] & 63;
        *mn = q[j + 4] & 63;
    } else {
        *sc = (q[j + 4] & 0xf) | ((q[j - 4] >> 6) << 4);
        *mn = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
    }
}

static void q4k_pack_scales(uint8_t *q, int j, int ls, int lm) {
    if (j < 4) {
        q[j] = (uint8_t)ls;
        q[j + 4] = (uint8_t)lm;
    } else {
        q[j + 4] = (uint8_t)((ls & 0xf) | ((lm & 0xf) << 4));
        q[j - 4] |= (uint8_t)((ls >> 4) << 6);
        q[j] |= (uint8_t)((lm >> 4) << 6);
    }
}

/* The 4-bit value of element e (0..255) of a Q4_K block: 64-element groups of 32 bytes, the
 * first 32 elements in low nibbles, the next 32 in high ones. */
static int q4k_nibble(const eng_block_q4_K *b, int e) {
    uint8_t byte = b->qs[(e / 64) * 32 + e % 32];
    return (e % 64) < 32 ? byte & 0xf : byte >> 4;
}

static void quant_q4_K(const float *x, eng_block_q4_K *y, size_t nb) {
    for (size_t i = 0; i < nb; i++, x += ENG_QK_K) {
        uint8_t L[ENG_QK_K];
        float w[32], scales[8], mins[8], max_scale = 0, max_min = 0;
        for (int j = 0; j < 8; j++) {
            const float *xs = x + 32 * j;
            float sum_x2 = 0;
            for (int l = 0; l < 32; l++) sum_x2 += xs[l] * xs[l];
            float av = sqrtf(sum_x2 / 32);
            for (int l = 0; l < 32; l++) w[l] = av + fabsf(xs[l]);
            scales[j] = fit_scale_min(32, 15, xs, w, L + 32 * j, &mins[j], 20);
            max_scale = fmaxf(max_scale, scales[j]);
            max_min = fmaxf(max_min, mins[j]);
        }
        float inv_s = max_scale > 0 ? 63.f / max_scale : 0.f;
        float inv_m = max_min > 0 ? 63.f / max_min : 0.f;
        memset(y[i].scales, 0, sizeof y[i].scales);
        for (int j = 0; j < 8; j++) {
            int ls = nearest(inv_s * scales[j]), lm = nearest(inv_m * mins[j]);
            q4k_pack_scales(y[i].scales, j, ls < 63 ? ls : 63, lm < 63 ? lm : 63);
        }
        y[i].d = eng_f32_to_f16(max_scale / 63.f);
        y[i].dmin = eng_f32_to_f16(max_min / 63.f);
        float D = eng_f16_to_f32(y[i].d), Dm = eng_f16_to_f32(y[i].dmin);
        for (int j = 0; j < 8; j++) { /* requantize against the rounded scales */
            int sc, mn;
            q4k_scale_min(y[i].scales, j, &sc, &mn);
            float d = D * sc, dm = Dm * mn;
            if (d == 0.0f) continue;
            for (int l = 0; l < 32; l++)
                L[32 * j + l] = (uint8_t)clampi(nearest((x[32 * j + l] + dm) / d), 0, 15);
        }
        for (int g = 0; g < 4; g++)
            for (int l = 0; l < 32; l++)
                y[i].qs[32 * g + l] = (uint8_t)(L[64 * g + l] | (L[64 * g + 32 + l] << 4));
    }
}

/* ---------------------------------------------------------------- Q6_K */

/*
 * Symmetric scale for n values, L in 0..2 nmax - 1 (value nmax means 0): from the value of
 * largest magnitude, then 18 nearby grids, keeping the best x^2-weighted least-squares fit
 * (ggml's make_qx_quants with rmse_type 1, no importance).
 */
static float fit_scale_sym(int n, int nmax, const float *x, int8_t *L) {
    float amax = 0, max = 0;
    for (int i = 0; i < n; i++)
        if (fabsf(x[i]) > amax) amax = fabsf(x[i]), max = x[i];
    if (amax < GROUP_EPS) {
        memset(L, 0, (size_t)n);
        return 0.0f;
    }
    float iscale = -nmax / max, sumlx = 0, suml2 = 0;
    for (int i = 0; i < n; i++) {
        int l = clampi(nearest(iscale * x[i]), -nmax, nmax - 1);
        L[i] = (int8_t)(l + nmax);
        float w = x[i] * x[i];
        sumlx += w * x[i] * l;
        suml2 += w * l * l;
    }
    float scale = suml2 ? sumlx / suml2 : 0.0f, best = scale * sumlx;
    for (int is = -9; is <= 9; is++) {
        if (is == 0) continue;
        iscale = -(nmax + 0.1f * is) / max;
        sumlx = suml2 = 0;
        for (int i = 0; i < n; i++) {
            int l = clampi(nearest(iscale * x[i]), -nmax, nmax - 1);
            float w = x[i] * x[i];
            sumlx += w * x[i] * l;
            suml2 += w * l * l;
        }
        if (suml2 > 0 && sumlx * sumlx > best * suml2) {
            for (int i = 0; i < n; i++)
                L[i] = (int8_t)(nmax + clampi(nearest(iscale * x[i]), -nmax, nmax - 1));
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    return scale;
}

/* The 6-bit value (0..63) of element e of a Q6_K block: 128-element halves; in a half, quarter
 * q of 32 takes low (q = 0, 1) or high (q = 2, 3) nibbles of ql[l] (q even) or ql[l + 32], and
 * bits 2q, 2q + 1 of qh[l]. */
static int q6k_value(const eng_block_q6_K *b, int e) {
    int h = e / 128, r = e % 128, q = r / 32, l = r % 32;
    uint8_t ql = b->ql[h * 64 + l + (q & 1) * 32], qh = b->qh[h * 32 + l];
    return ((q < 2 ? ql & 0xf : ql >> 4) | (((qh >> (2 * q)) & 3) << 4));
}

static void quant_q6_K(const float *x, eng_block_q6_K *y, size_t nb) {
    for (size_t i = 0; i < nb; i++, x += ENG_QK_K) {
        int8_t L[ENG_QK_K];
        float scales[16], max_scale = 0, max_abs = 0;
        for (int b = 0; b < 16; b++) {
            scales[b] = fit_scale_sym(16, 32, x + 16 * b, L + 16 * b);
            if (fabsf(scales[b]) > max_abs) max_abs = fabsf(scales[b]), max_scale = scales[b];
        }
        memset(&y[i], 0, sizeof y[i]);
        if (max_abs < GROUP_EPS) continue; /* all zero: d = 0 */
        float iscale = -128.f / max_scale;
        y[i].d = eng_f32_to_f16(1 / iscale);
        for (int b = 0; b < 16; b++) {
            int s = nearest(iscale * scales[b]);
            y[i].scales[b] = (int8_t)(s < 127 ? s : 127);
        }
        for (int b = 0; b < 16; b++) {
            float d = eng_f16_to_f32(y[i].d) * y[i].scales[b];
            if (d == 0.0f) continue;
            for (int l = 0; l < 16; l++)
                L[16 * b + l] = (int8_t)(clampi(nearest(x[16 * b + l] / d), -32, 31) + 32);
        }
        for (int e = 0; e < ENG_QK_K; e++) {
            int h = e / 128, r = e % 128, q = r / 32, l = r % 32, v = L[e];
            uint8_t *ql = &y[i].ql[h * 64 + l + (q & 1) * 32];
            *ql |= (uint8_t)(q < 2 ? (v & 0xf) : (v & 0xf) << 4);
            y[i].qh[h * 32 + l] |= (uint8_t)((v >> 4) << (2 * q));
        }
    }
}

void eng_quantize_row(eng_dtype t, const float *x, void *out, size_t n) {
    size_t nb = n / (size_t)eng_dtype_block(t);
    switch (t) {
    case ENG_Q8_0:
        quant_q8_0(x, out, nb);
        break;
    case ENG_Q4_0:
        quant_q4_0(x, out, nb);
        break;
    case ENG_Q4_K:
        quant_q4_K(x, out, nb);
        break;
    case ENG_Q6_K:
        quant_q6_K(x, out, nb);
        break;
    default:
        break;
    }
}

/* ---------------------------------------------------------------- dequantization */

void eng_dequant_row(eng_dtype t, const void *mat, size_t row, float *y, size_t n) {
    const char *r = (const char *)mat + row * eng_row_bytes(t, n);
    size_t nb = n / (size_t)eng_dtype_block(t);
    if (!eng_dtype_is_quant(t)) {
        for (size_t i = 0; i < n; i++) y[i] = eng_load_elem(r, t, i);
        return;
    }
    for (size_t i = 0; i < nb; i++) {
        if (t == ENG_Q8_0) {
            const eng_block_q8_0 *b = (const eng_block_q8_0 *)r + i;
            float d = eng_f16_to_f32(b->d);
            for (int j = 0; j < 32; j++) *y++ = b->qs[j] * d;
        } else if (t == ENG_Q4_0) {
            const eng_block_q4_0 *b = (const eng_block_q4_0 *)r + i;
            float d = eng_f16_to_f32(b->d);
            for (int j = 0; j < 32; j++)
                *y++ = ((j < 16 ? b->qs[j] & 0xf : b->qs[j - 16] >> 4) - 8) * d;
        } else if (t == ENG_Q4_K) {
            const eng_block_q4_K *b = (const eng_block_q4_K *)r + i;
            float D = eng_f16_to_f32(b->d), Dm = eng_f16_to_f32(b->dmin);
            for (int s = 0; s < 8; s++) {
                int sc, mn;
                q4k_scale_min(b->scales, s, &sc, &mn);
                float d = D * sc, m = Dm * mn;
                for (int l = 0; l < 32; l++) *y++ = d * q4k_nibble(b, 32 * s + l) - m;
            }
        } else {
            const eng_block_q6_K *b = (const eng_block_q6_K *)r + i;
            float D = eng_f16_to_f32(b->d);
            for (int e = 0; e < ENG_QK_K; e++)
                *y++ = D * b->scales[e / 16] * (q6k_value(b, e) - 32);
        }
    }
}

/* ---------------------------------------------------------------- activations */

void eng_quant_act_rows(eng_qact *a, const float *x, int r0, int r1) {
    int K = a->K, nb = K / ENG_QA;
    for (int r = r0; r < r1; r++) {
        const float *xr = x + (size_t)r * (size_t)K;
        int8_t *q = a->qs + (size_t)r * (size_t)K;
        for (int b = 0; b < nb; b++) {
            float amax = 0.0f;
            for (int j = 0; j < ENG_QA; j++) amax = fmaxf(amax, fabsf(xr[b * ENG_QA + j]));
            float d = amax / 127.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
            int half[2] = {0, 0};
            for (int j = 0; j < ENG_QA; j++) {
                int v = (int)nearbyintf(xr[b * ENG_QA + j] * id);
                q[b * ENG_QA + j] = (int8_t)v;
                half[j / 16] += v;
            }
            a->d[(size_t)r * (size_t)nb + (size_t)b] = d;
            a->dsum[(size_t)r * (size_t)nb + (size_t)b] = d * (float)(half[0] + half[1]);
            for (int h = 0; h < 2; h++)
                a->qneg[((size_t)r * (size_t)nb + (size_t)b) * 2 + (size_t)h] = -128 * half[h];
        }
    }
}

/* ---------------------------------------------------------------- the reference product */

float eng_qdot_ref(eng_dtype t, const void *wrow, const eng_qact *a, int m) {
    int K = a->K, nb = K / ENG_QA;
    const int8_t *q = a->qs + (size_t)m * (size_t)K;
    const float *d = a->d + (size_t)m * (size_t)nb, *ds = a->dsum + (size_t)m * (size_t)nb;
    float acc = 0.0f;
    for (int b = 0; b < nb; b++) {
        const int8_t *qb = q + b * ENG_QA;
        int isum = 0;
        if (t == ENG_Q8_0) {
            const eng_block_q8_0 *w = (const eng_block_q8_0 *)wrow + b;
            for (int j = 0; j < 32; j++) isum += w->qs[j] * qb[j];
            acc += (eng_f16_to_f32(w->d) * d[b]) * (float)isum;
        } else if (t == ENG_Q4_0) {
            const eng_block_q4_0 *w = (const eng_block_q4_0 *)wrow + b;
            for (int j = 0; j < 32; j++)
                isum += ((j < 16 ? w->qs[j] & 0xf : w->qs[j - 16] >> 4) - 8) * qb[j];
            acc += (eng_f16_to_f32(w->d) * d[b]) * (float)isum;
        } else if (t == ENG_Q4_K) {
            const eng_block_q4_K *w = (const eng_block_q4_K *)wrow + b / 8;
            int s = b % 8, sc, mn;
            q4k_scale_min(w->scales, s, &sc, &mn);
            for (int j = 0; j < 32; j++) isum += q4k_nibble(w, 32 * s + j) * qb[j];
            acc += (eng_f16_to_f32(w->d) * sc * d[b]) * (float)isum -
                   (eng_f16_to_f32(w->dmin) * mn) * ds[b];
        } else {
            const eng_block_q6_K *w = (const eng_block_q6_K *)wrow + b / 8;
            for (int h = 0; h < 2; h++) {
                int e0 = (b % 8) * 32 + 16 * h, s16 = 0;
                for (int j = 0; j < 16; j++) s16 += (q6k_value(w, e0 + j) - 32) * qb[16 * h + j];
                acc += (eng_f16_to_f32(w->d) * w->scales[e0 / 16] * d[b]) * (float)s16;
            }
        }
    }
    return acc;
}
