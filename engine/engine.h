/*
 * engine.h — the door of the engine room: load a Hugging Face model directory or a GGUF file, run a
 * batched, batch-invariant forward pass over paged KV, and sample.
 *
 * Contract of the forward pass (what the scheduler and the tests rely on):
 *   - A batch is a list of sequences; each contributes n_tokens new tokens at positions
 *     pos0 .. pos0 + n_tokens - 1. The KV of positions [0, pos0) is already in the pages of its
 *     block table (computed earlier, or shared from the prefix cache). eng_forward writes the new
 *     tokens' K/V into the block table's pages, then attends over [0, pos] reading K/V back from
 *     the pages (never the fresh values), so cached and just-computed KV are the same bits.
 *   - Batch invariance: every number a sequence gets (its logits, the KV it writes) is bit for bit
 *     independent of the other sequences in the batch, of how its prompt was chunked across calls,
 *     and of whether its prefix KV came from the cache. Each weight product element is one dot
 *     product accumulated the same way for 1 row or many; attention walks blocks in position
 *     order with one online-softmax routine for prefill and decode.
 *   - Only the calling thread (the scheduler thread) calls eng_forward on a context; the context's
 *     worker pool splits each operation across threads.
 */
#ifndef RADIXSERVE_ENGINE_H
#define RADIXSERVE_ENGINE_H

#include <stddef.h>
#include <stdint.h>

#include "cache/cache.h"
#include "util/util.h"

/* ---------------------------------------------------------------- model */

/* Weight storage types. The block-quantized ones (layouts in engine/quant.h) are whole blocks
 * per row: a row of K elements takes K / 32 (Q8_0, Q4_0) or K / 256 (Q4_K, Q6_K) blocks. */
typedef enum eng_dtype {
    ENG_F32 = 0,
    ENG_BF16 = 1,
    ENG_F16 = 2,
    ENG_Q8_0 = 3,
    ENG_Q4_0 = 4,
    ENG_Q4_K = 5,
    ENG_Q6_K = 6,
} eng_dtype;

#define ENG_MAX_EOS 8

/* How an embedding pools a sequence's final hidden states (sentence-transformers' Pooling
 * module, 1_Pooling/config.json; mean when the model directory has no modules.json). */
typedef enum eng_pooling {
    ENG_POOL_UNSUPPORTED = -1, /* a mode not served (max, weighted mean, ...): no embeddings */
    ENG_POOL_MEAN = 0,         /* the mean over every token */
    ENG_POOL_LAST = 1,         /* the last token's (Qwen3-Embedding) */
    ENG_POOL_CLS = 2,          /* the first token's */
} eng_pooling;

/* How the weight matrices are stored after load (--weights): as in the files, or quantized at
 * load into llama.cpp's mixes (engine/quant_model.c has the per-tensor rules). */
typedef enum eng_weights {
    ENG_WEIGHTS_SOURCE = 0, /* as stored (F32, BF16, F16) */
    ENG_WEIGHTS_Q8_0,       /* every matrix Q8_0 */
    ENG_WEIGHTS_Q4_K_M,     /* Q4_K, with Q6_K for the LM head and some attn_v / ffn_down */
    ENG_WEIGHTS_Q4_0,       /* Q4_0, with Q6_K for the LM head */
} eng_weights;

/* "source", "q8_0", "q4_k_m", "q4_0" -> the scheme; -1 for anything else. */
int eng_weights_parse(const char *name);
const char *eng_weights_name(eng_weights w);

/* The architecture, read from config.json (and generation_config.json for EOS/BOS). */
typedef struct eng_config {
    char arch[64];            /* "qwen3", "qwen2" or "llama" (config.json model_type) */
    int vocab_size;           /* rows of the embedding / LM head */
    int hidden;               /* hidden_size */
    int intermediate;         /* intermediate_size of the SwiGLU MLP */
    int n_layers;             /* num_hidden_layers */
    int n_heads;              /* num_attention_heads */
    int n_kv_heads;           /* num_key_value_heads (GQA when < n_heads) */
    int head_dim;             /* head_dim (may differ from hidden / n_heads) */
    int max_pos;              /* max_position_embeddings */
    float rms_eps;            /* rms_norm_eps */
    float rope_theta;         /* rope_theta */
    int tie_embeddings;       /* lm_head shares the embedding matrix */
    int qk_norm;              /* per-head RMSNorm of q and k before RoPE (Qwen3) */
    int qkv_bias;             /* q/k/v projections have biases (Qwen2) */
    eng_dtype dtype;          /* storage type of the weight matrices in the files (GGUF: the
                                 embedding's, which a quantized file often keeps at Q6_K) */
    const char *file_type;    /* GGUF general.file_type as llama-quantize names it ("q4_k_m"),
                                 static; NULL for safetensors or a value not known here */
    eng_weights weights;      /* how they are held: as stored, or quantized at load */
    int bos_id;               /* -1 if none */
    int eos_ids[ENG_MAX_EOS]; /* generation_config.json eos_token_id (int or list) */
    int n_eos;
    eng_pooling pooling; /* embeddings: modules.json + its Pooling config (default mean) */
    int pool_normalize;  /* embeddings are L2-normalised: modules.json lists Normalize, or
                            there is no modules.json (as OpenAI's embeddings are) */
} eng_config;

/* Defaults for sampling, from generation_config.json (absent keys: greedy-neutral values;
 * "do_sample": false makes temperature 0, i.e. greedy, as transformers does). */
typedef struct eng_gen_defaults {
    float temperature;        /* 1.0 if absent */
    float top_p;              /* 1.0 if absent */
    int top_k;                /* 0 (off) if absent */
    float min_p;              /* 0 if absent */
    float repetition_penalty; /* 1.0 if absent */
} eng_gen_defaults;

typedef struct eng_model eng_model; /* opaque: weights (memory-mapped) and config */

/* Load a model from `path`: a Hugging Face directory (config.json, generation_config.json if
 * present, model.safetensors or model.safetensors.index.json + shards) or a GGUF file (its
 * metadata gives the config; tensors by GGUF names; llama-architecture Q/K rows un-permuted).
 * Any missing tensor, wrong shape, truncated file, corrupt header, unsupported tensor type or
 * unknown architecture is RS_EINVAL with a message naming the file and tensor (or key). */
int eng_model_load(eng_model **out, const char *path, rs_err *e);
void eng_model_free(eng_model *m);

/* Progress of eng_model_quantize: `done` of `total` matrices converted. */
typedef void (*eng_progress_fn)(void *arg, int done, int total);

/*
 * Quantize a loaded model's matrices (embedding, every linear layer, LM head; norms and biases
 * stay F32) into scheme w, on n_threads threads, calling progress (if non-NULL) after each
 * matrix. A matrix whose columns are not a multiple of its target's block falls back to Q8_0
 * (blocks of 32), or stays as stored when not a multiple of 32 either. The files' memory is
 * released afterwards (matrices that stay as stored are copied first). All or nothing: on
 * error (RS_ENOMEM) the model is as it was. w == ENG_WEIGHTS_SOURCE or a model quantized
 * already: nothing to do (RS_EINVAL if quantized into another scheme).
 */
int eng_model_quantize(eng_model *m, eng_weights w, int n_threads, eng_progress_fn progress,
                       void *arg, rs_err *e);

/* The format the weights are held in, for the start-up line and /v1/models: the scheme's name
 * ("q8_0", "q4_k_m", "q4_0") or the files' dtype ("bf16", "f32", "f16"). */
const char *eng_model_quantization(const eng_model *m);

/* Bytes of the weight matrices as held (a tied LM head once). streamed: only what one decoded
 * token reads (the untied embedding, of which a token reads one row, left out). */
double eng_model_weight_bytes(const eng_model *m, int streamed);
const eng_config *eng_model_config(const eng_model *m);
const eng_gen_defaults *eng_model_gen_defaults(const eng_model *m);
int64_t eng_model_n_params(const eng_model *m);
/* The file format the weights were loaded from, for the start-up line and /v1/models:
 * "safetensors" or "gguf". */
const char *eng_model_format(const eng_model *m);

/* 1 if path is a GGUF file (a regular file starting with the GGUF magic). */
int eng_is_gguf(const char *path);

/* The metadata of a GGUF file as one JSON object, key -> value (integers and floats as numbers,
 * arrays as arrays), for rooms that read model metadata without the weights (the tokenizer's
 * vocabulary and chat template). The file is validated as eng_model_load does; only its metadata
 * pages are read. *out is owned by the caller (cJSON_Delete). */
struct cJSON;
int eng_gguf_meta_json(const char *path, struct cJSON **out, rs_err *e);

/* The KV pool geometry this model needs (dtype: the model's, unless forced by kv_dtype >= 0). */
kv_pool_config eng_kv_config(const eng_model *m, int block_size, int kv_dtype, size_t budget_bytes);

/* ---------------------------------------------------------------- LoRA adapters (lora.c) */

/*
 * LoRA adapters in PEFT's layout, served beside the base model (docs/arch-engine.md, "LoRA").
 *
 * An adapter directory holds adapter_config.json (r, lora_alpha, target_modules among q_proj,
 * k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj; use_rslora) and
 * adapter_model.safetensors (base_model.model.model.layers.{i}.{self_attn|mlp}.{module}.lora_A
 * .weight [r][in] and .lora_B.weight [out][r], F32/BF16/F16). A linear layer's output becomes
 * y = W x + scale * B (A x), scale = alpha / r (alpha / sqrt(r) with use_rslora), for the rows
 * of sequences that name the adapter (eng_seq.lora), computed per row by the kernel table's
 * own product, so a row's numbers do not depend on its neighbours (batch invariance holds).
 * Anything the config or the file asks that is not served (another target module, bias,
 * DoRA, fan_in_fan_out, per-layer patterns, modules_to_save, a missing or misshapen tensor)
 * is RS_EINVAL naming the key or tensor; nothing is loaded then.
 *
 * Ownership and threads: a registry (eng_lora_reg) owns the adapters of one model; every call
 * on it and on an adapter's references is thread-safe (one mutex). An adapter is immutable
 * once loaded; a holder of a reference (eng_lora_acquire / eng_lora_retain) may read it from
 * any thread, the forward pass included, until eng_lora_release. Unloading hides the name at
 * once (acquire and retain then fail with RS_ENOTFOUND) and waits for the last reference to go
 * before freeing. Each load gets an id never reused by the registry (the prefix cache's
 * namespace, so KV of an adapter reloaded under the same name is never shared).
 */
typedef struct eng_lora eng_lora;         /* one loaded adapter (opaque, immutable) */
typedef struct eng_lora_reg eng_lora_reg; /* name -> adapter, reference counted */

#define ENG_LORA_NAME_MAX 128 /* bytes of a name, NUL included */
#define ENG_LORA_MAX      64  /* adapters loaded at once in one registry */
#define ENG_LORA_MAX_RANK 512 /* largest r served */

int eng_lora_reg_init(eng_lora_reg **out, const eng_model *m, rs_err *e);
/* Frees every adapter; no reference may be outstanding (asserted). */
void eng_lora_reg_free(eng_lora_reg *r);

/* Load dir as adapter `name` (1..127 bytes of [A-Za-z0-9._:/+-]). RS_EINVAL: a bad name, a name
 * already loaded (or being unloaded), a file or config not served; RS_EFULL: ENG_LORA_MAX
 * loaded; RS_EIO: a file missing or unreadable. Files are read on the calling thread. */
int eng_lora_load(eng_lora_reg *r, const char *name, const char *dir, rs_err *e);
/* Unload `name`: hidden at once, freed when its last reference is released (this call waits for
 * that). RS_ENOTFOUND when no such adapter is loaded (or it is being unloaded already). */
int eng_lora_unload(eng_lora_reg *r, const char *name, rs_err *e);

/* A reference to adapter `name` into *out. RS_ENOTFOUND when absent or being unloaded. */
int eng_lora_acquire(eng_lora_reg *r, const char *name, const eng_lora **out, rs_err *e);
/* One more reference to a held adapter; RS_ENOTFOUND when it is being unloaded. */
int eng_lora_retain(const eng_lora *a);
/* Drop a reference (NULL: nothing). */
void eng_lora_release(const eng_lora *a);
/* 1 once an unload of a (held) has begun: best-effort holders (warming) let go then. */
int eng_lora_unloading(const eng_lora *a);

/* The loaded adapters' names (not those being unloaded), load order, into names[max]
 * (ENG_LORA_NAME_MAX bytes each). Returns how many were written. */
int eng_lora_names(eng_lora_reg *r, char (*names)[ENG_LORA_NAME_MAX], int max);

const char *eng_lora_name(const eng_lora *a);
uint64_t eng_lora_id(const eng_lora *a); /* >= 1, unique per load within its registry */
int eng_lora_rank(const eng_lora *a);

/* ---------------------------------------------------------------- forward pass */

/* One sequence's part of a batch. */
typedef struct eng_seq {
    const int32_t *tokens; /* n_tokens new token ids */
    int n_tokens;          /* >= 1 */
    int pos0;              /* position of tokens[0]; KV of [0, pos0) is in the pages already */
    const int32_t *blocks; /* block table, covering at least pos0 + n_tokens positions */
    int n_blocks;
    float *logits;        /* out: vocab_size floats for the last new token; NULL: not needed */
    float *hidden;        /* out: [n_tokens][hidden] final-normed hidden states (what the LM head
                             reads) of the new tokens, for embeddings; NULL: not needed */
    const eng_lora *lora; /* the adapter its rows use (a reference the caller holds for the
                             call, loaded for this model); NULL: the base model */
} eng_seq;

typedef struct eng_ctx eng_ctx; /* opaque: scratch buffers and the worker pool */

/* Scratch for batches of up to max_tokens new tokens in total, n_threads workers (>= 1). */
int eng_ctx_init(eng_ctx **out, const eng_model *m, int max_tokens, int n_threads, rs_err *e);
void eng_ctx_free(eng_ctx *c);

/* Run the batch. RS_EINVAL for a malformed batch (too many tokens, a block table too short,
 * an id out of range); nothing is written then. */
int eng_forward(eng_ctx *c, kv_pool *kv, const eng_seq *seqs, int n_seqs, rs_err *e);

/* ---------------------------------------------------------------- kernels */

/* The kernel set in use: "portable", "avx2" or "avx512". Chosen at run time from CPU features,
 * or forced by the environment variable RADIXSERVE_ISA=portable|avx2|avx512 (forcing a set the
 * CPU lacks is an error at eng_ctx_init). */
const char *eng_isa_name(void);

/* ---------------------------------------------------------------- sampling */

typedef struct eng_logit_bias {
    int32_t token;
    float bias;
} eng_logit_bias;

typedef struct eng_sampling {
    float temperature;          /* 0: greedy (argmax, lowest id on ties) */
    float top_p;                /* 1: off */
    int top_k;                  /* 0: off */
    float min_p;                /* 0: off */
    float repetition_penalty;   /* 1: off (HF style: divide positive logits, multiply negative) */
    float presence_penalty;     /* 0: off (OpenAI style, over generated tokens) */
    float frequency_penalty;    /* 0: off */
    uint64_t seed;              /* per-request seed: same seed, same logits -> same choice */
    const eng_logit_bias *bias; /* logit_bias entries, n_bias of them */
    int n_bias;
} eng_sampling;

/* Per-sequence random state (xoshiro-style), seeded from eng_sampling.seed. */
typedef struct eng_rng {
    uint64_t s[4];
} eng_rng;

void eng_rng_seed(eng_rng *r, uint64_t seed);

/* Sample one token from logits (vocab floats, modified in place by penalties, bias and
 * temperature). Order: logit_bias, repetition penalty, presence/frequency penalties, then greedy
 * (temperature 0) or temperature -> top_k -> top_p -> min_p -> one draw from r. Tokens more than
 * 30 scaled logits below the best (p < e^-30 each) are not candidates.
 * `prompt`/`generated` are the sequence's tokens so far (for penalties). If logprob is non-NULL
 * it receives log-softmax of the chosen token under the final (processed) distribution.
 * Returns -1 only for vocab <= 0. */
int32_t eng_sample(const eng_sampling *s, eng_rng *r, float *logits, int vocab,
                   const int32_t *prompt, int n_prompt, const int32_t *generated, int n_generated,
                   float *logprob);

/* The k largest logits (k <= vocab), largest first, lowest id first on ties: ids into ids[k].
 * Returns how many were written (min(k, vocab)). */
int eng_top_k(const float *logits, int vocab, int k, int32_t *ids);

/* The k most likely tokens under log-softmax(logits): ids and their log-probabilities, largest
 * first (for the API's top_logprobs). Returns how many were written. */
int eng_top_logprobs(const float *logits, int vocab, int k, int32_t *ids, float *logprobs);

#endif
