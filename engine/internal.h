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
#include "engine/quant.h"

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

/* ---------------------------------------------------------------- safetensors (safetensors.c) */

#define ENG_MAX_DIMS 4

/* One tensor of a safetensors file, validated at open: its bytes lie inside the file. */
typedef struct eng_tensor {
    char *name;                  /* HF tensor name, owned */
    int file;                    /* index into eng_st_set.files */
    int dtype;                   /* an eng_dtype, or -1 for a type the engine does not read */
    int ndim;                    /* dimensions used in shape */
    int64_t shape[ENG_MAX_DIMS]; /* extents, outermost first */
    const void *data;            /* the bytes (in the mapping, or an aligned owned copy) */
    size_t nbytes;               /* size of data */
} eng_tensor;

/* A memory-mapped safetensors file. */
typedef struct eng_st_file {
    char *path;  /* path as opened, owned (for error messages) */
    void *map;   /* the read-only mapping */
    size_t size; /* bytes mapped (the file size) */
} eng_st_file;

/* Every tensor of a model directory (one file or an index and its shards). */
typedef struct eng_st_set {
    eng_st_file *files; /* owned */
    int n_files;
    eng_tensor *tensors; /* owned */
    int n_tensors;
    void **copies; /* aligned copies of misaligned tensors, owned */
    int n_copies;
} eng_st_set;

/* Open model.safetensors or model.safetensors.index.json + shards in dir. */
int eng_st_open(eng_st_set *s, const char *dir, rs_err *e);
/* Open one safetensors file (a LoRA adapter's). */
int eng_st_open_file(eng_st_set *s, const char *path, rs_err *e);
void eng_st_close(eng_st_set *s);
const eng_tensor *eng_st_find(const eng_st_set *s, const char *name);

/* Map a model file read-only into f (weights: a file of 64 MB or more is read into anonymous
 * memory advised to huge pages instead; 0: always a lazy mapping). Files shorter than 8 bytes
 * are RS_EINVAL. */
int eng_st_map(eng_st_file *f, const char *path, int weights, rs_err *e);
/* Append t to s (RS_ENOMEM on failure; t's name then stays the caller's). */
int eng_st_push(eng_st_set *s, const eng_tensor *t);
/* Point t->data at its bytes p (t->nbytes of them), copying them into an owned buffer when p is
 * not aligned to `align` bytes. RS_ENOMEM on failure. */
int eng_st_place(eng_st_set *s, eng_tensor *t, const uint8_t *p, size_t align);

/* ---------------------------------------------------------------- the model (model.c) */

/* A weight matrix [rows][cols] in its stored type, read in place. */
typedef struct eng_mat {
    const void *data; /* row-major rows x cols elements */
    eng_dtype dtype;  /* element type */
} eng_mat;

/* One transformer layer's weights; vectors are F32 copies owned by the model. */
typedef struct eng_layer {
    const float *attn_norm;                /* [hidden] input_layernorm */
    const float *mlp_norm;                 /* [hidden] post_attention_layernorm */
    const float *q_norm, *k_norm;          /* [head_dim] per-head RMSNorm (qk_norm), else NULL */
    const float *q_bias, *k_bias, *v_bias; /* projection biases (qkv_bias), else NULL */
    eng_mat q, k, v;  /* [heads * head_dim][hidden], [kv_heads * head_dim][hidden] x2 */
    eng_mat o;        /* [hidden][heads * head_dim] */
    eng_mat gate, up; /* [intermediate][hidden] */
    eng_mat down;     /* [hidden][intermediate] */
} eng_layer;

struct eng_model {
    eng_config cfg;          /* architecture */
    eng_gen_defaults gen;    /* sampling defaults */
    eng_st_set st;           /* the mapped files (weights point into them) */
    eng_mat embed;           /* [vocab][hidden] */
    eng_mat lm_head;         /* [vocab][hidden]; the embedding when tied */
    const float *final_norm; /* [hidden] */
    eng_layer *layers;       /* n_layers, owned */
    float **vecs;            /* F32 copies of norms and biases, owned */
    int n_vecs;
    int64_t n_params; /* parameters of the bound tensors (a tied matrix once) */
    void **owned;     /* matrices quantized or copied at load (eng_model_quantize), owned */
    int n_owned;
    int gguf; /* loaded from a GGUF file (tensor names are llama.cpp's) */
};

/* Whether any matrix is block-quantized (then eng_ctx keeps quantized-activation scratch). */
int eng_model_has_quant(const eng_model *m);

/* ---------------------------------------------------------------- LoRA (lora.c) */

/* The linear layers an adapter may target, in the order of the forward pass. */
typedef enum eng_lora_module {
    ENG_LORA_Q = 0,
    ENG_LORA_K,
    ENG_LORA_V,
    ENG_LORA_O,
    ENG_LORA_GATE,
    ENG_LORA_UP,
    ENG_LORA_DOWN,
    ENG_LORA_N_MODULES
} eng_lora_module;

struct eng_kernels;
typedef struct eng_pool eng_pool;

/* A forward context's LoRA scratch, grown on demand (eng_lora_prepare), owned by the context. */
typedef struct eng_lora_scratch {
    float *gx;  /* [rows][max in] the gathered input rows of one adapter */
    float *t;   /* [rows][rank] A x */
    float *u;   /* [rows][max out] B (A x) */
    int *rows;  /* [rows] batch rows of the adapter being applied */
    size_t n_x; /* floats gx and u hold */
    size_t n_t; /* floats t holds */
    int n_rows; /* ints rows holds */
    int any;    /* this step has a row with an adapter */
} eng_lora_scratch;

/* Before a step: RS_EINVAL if a sequence's adapter was loaded for another model; grows s for
 * T rows and the batch's largest rank (RS_ENOMEM; nothing else changes then). */
int eng_lora_prepare(eng_lora_scratch *s, const eng_model *m, const eng_seq *seqs, int n_seqs,
                     int T, rs_err *e);
/* y[T][N] += scale * B (A x[T][K]) of module `mod` of `layer`, for each adapter of the batch
 * over its own rows only (sequences in batch order, rows consecutive). Each adapter's rows are
 * gathered and multiplied by the kernel table's matmul (per-element arithmetic independent of
 * the rows and the column split), then added once per element: a row's result depends only on
 * that row. */
void eng_lora_apply(eng_lora_scratch *s, const struct eng_kernels *k, eng_pool *p,
                    const eng_seq *seqs, int n_seqs, int layer, eng_lora_module mod, const float *x,
                    int K, float *y, int N);
void eng_lora_scratch_free(eng_lora_scratch *s);

/* ---------------------------------------------------------------- worker pool (pool.c) */

/* A piece of a parallel loop: handle items [i0, i1) of the job described by arg. */
typedef void (*eng_task_fn)(void *arg, int i0, int i1);

/* opaque: n_threads - 1 workers plus the calling thread (declared above, defined in pool.c) */

/* Start n_threads - 1 workers (n_threads >= 1; 1 starts none). */
int eng_pool_init(eng_pool **out, int n_threads, rs_err *e);
void eng_pool_free(eng_pool *p);
int eng_pool_threads(const eng_pool *p);

/* Run fn over [0, n) split into contiguous ranges, one per thread (the caller takes the first),
 * and return when all are done. The split decides only who computes an item, never how. */
void eng_pool_run(eng_pool *p, int n, eng_task_fn fn, void *arg);

#endif
