/*
 * test_engine_model.h — for the engine's C tests: write a small deterministic random-weight model
 * directory (config.json + model.safetensors, Hugging Face names) from C, and run sequences
 * through the engine with their own block tables.
 */
#ifndef RADIXSERVE_TESTS_ENGINE_MODEL_H
#define RADIXSERVE_TESTS_ENGINE_MODEL_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "engine/engine.h"
#include "tests/tap.h"

/* The shape of a test model. */
typedef struct tm_spec {
    const char *arch; /* model_type: qwen3, qwen2, llama */
    int vocab, hidden, inter, layers, heads, kv_heads, head_dim;
    int tie;          /* tie_word_embeddings */
    eng_dtype dtype;  /* stored type of every tensor */
    uint32_t seed;    /* weights differ per seed */
    const char *omit; /* a tensor name to leave out (NULL: none) */
    const char *bad;  /* a tensor name to write with a wrong first dimension (NULL: none) */
    float theta;      /* rope_theta */
} tm_spec;

static inline tm_spec tm_default(void) {
    return (tm_spec){.arch = "qwen3",
                     .vocab = 300,
                     .hidden = 48,
                     .inter = 80,
                     .layers = 2,
                     .heads = 4,
                     .kv_heads = 2,
                     .head_dim = 16,
                     .tie = 0,
                     .dtype = ENG_BF16,
                     .seed = 1,
                     .theta = 500000.0f};
}

/* One tensor to write: name, shape, scale of its uniform values, offset added to each. */
typedef struct tm_tensor {
    char name[96];
    int64_t rows, cols; /* cols 0: a vector */
    float scale, offset;
} tm_tensor;

static inline uint32_t tm_rand(uint32_t *s) {
    *s ^= *s << 13;
    *s ^= *s >> 17;
    *s ^= *s << 5;
    return *s;
}

static inline uint16_t tm_to_half(float f) {
    /* Test weights are small normal numbers: no subnormal/overflow handling needed. */
    uint32_t u;
    memcpy(&u, &f, 4);
    uint32_t sign = (u >> 16) & 0x8000u;
    int exp = (int)((u >> 23) & 0xff) - 127 + 15;
    if (exp <= 0) return (uint16_t)sign;
    uint32_t man = u & 0x7fffffu, r = man >> 13;
    if ((man & 0x1fffu) > 0x1000u || ((man & 0x1fffu) == 0x1000u && (r & 1))) r++;
    return (uint16_t)(sign + ((uint32_t)exp << 10) + r);
}

static inline int tm_list(const tm_spec *s, tm_tensor *t) {
    int n = 0;
    int64_t h = s->hidden, qd = (int64_t)s->heads * s->head_dim,
            kvd = (int64_t)s->kv_heads * s->head_dim;
    float emb = 2.0f * sqrtf(3.0f / (float)h);
#define TM_ADD(nm, r, c, sc, off)                                                                  \
    (t[n++] = (tm_tensor){"", r, c, sc, off}, snprintf(t[n - 1].name, 96, "%s", nm))
    char nm[96];
    TM_ADD("model.embed_tokens.weight", s->vocab, h, emb, 0);
    for (int l = 0; l < s->layers; l++) {
#define TM_L(x) (snprintf(nm, sizeof nm, "model.layers.%d.%s", l, x), nm)
        TM_ADD(TM_L("input_layernorm.weight"), h, 0, 0.2f, 1);
        TM_ADD(TM_L("post_attention_layernorm.weight"), h, 0, 0.2f, 1);
        TM_ADD(TM_L("self_attn.q_proj.weight"), qd, h, sqrtf(3.0f / (float)h), 0);
        TM_ADD(TM_L("self_attn.k_proj.weight"), kvd, h, sqrtf(3.0f / (float)h), 0);
        TM_ADD(TM_L("self_attn.v_proj.weight"), kvd, h, sqrtf(3.0f / (float)h), 0);
        TM_ADD(TM_L("self_attn.o_proj.weight"), h, qd, sqrtf(3.0f / (float)qd), 0);
        TM_ADD(TM_L("mlp.gate_proj.weight"), s->inter, h, sqrtf(3.0f / (float)h), 0);
        TM_ADD(TM_L("mlp.up_proj.weight"), s->inter, h, sqrtf(3.0f / (float)h), 0);
        TM_ADD(TM_L("mlp.down_proj.weight"), h, s->inter, sqrtf(3.0f / (float)s->inter), 0);
        if (!strcmp(s->arch, "qwen3")) {
            TM_ADD(TM_L("self_attn.q_norm.weight"), s->head_dim, 0, 0.2f, 1);
            TM_ADD(TM_L("self_attn.k_norm.weight"), s->head_dim, 0, 0.2f, 1);
        }
        if (!strcmp(s->arch, "qwen2")) {
            TM_ADD(TM_L("self_attn.q_proj.bias"), qd, 0, 0.2f, 0);
            TM_ADD(TM_L("self_attn.k_proj.bias"), kvd, 0, 0.2f, 0);
            TM_ADD(TM_L("self_attn.v_proj.bias"), kvd, 0, 0.2f, 0);
        }
#undef TM_L
    }
    TM_ADD("model.norm.weight", h, 0, 0.2f, 1);
    if (!s->tie) TM_ADD("lm_head.weight", s->vocab, h, emb, 0);
#undef TM_ADD
    return n;
}

static inline int tm_write_config(const tm_spec *s, const char *dir) {
    char path[1024];
    snprintf(path, sizeof path, "%s/config.json", dir);
    FILE *f = fopen(path, "w");
    if (!f) return -1;
    fprintf(f,
            "{\"model_type\": \"%s\", \"vocab_size\": %d, \"hidden_size\": %d, "
            "\"intermediate_size\": %d, \"num_hidden_layers\": %d, \"num_attention_heads\": %d, "
            "\"num_key_value_heads\": %d, \"head_dim\": %d, \"max_position_embeddings\": 4096, "
            "\"rms_norm_eps\": 1e-6, \"rope_theta\": %.1f, \"tie_word_embeddings\": %s, "
            "\"hidden_act\": \"silu\", \"bos_token_id\": 1, \"eos_token_id\": [2, 3]}\n",
            s->arch, s->vocab, s->hidden, s->inter, s->layers, s->heads, s->kv_heads, s->head_dim,
            (double)s->theta, s->tie ? "true" : "false");
    return fclose(f);
}

/* Write dir/config.json and dir/model.safetensors (dir is created). */
static inline int tm_write(const tm_spec *s, const char *dir) {
    mkdir(dir, 0777);
    if (tm_write_config(s, dir)) return -1;
    tm_tensor *t = calloc(16 + (size_t)s->layers * 16, sizeof *t);
    int n = tm_list(s, t);
    size_t es = s->dtype == ENG_F32 ? 4 : 2, hcap = 256 + (size_t)n * 160, hl = 0, off = 0;
    const char *dn = s->dtype == ENG_F32 ? "F32" : s->dtype == ENG_BF16 ? "BF16" : "F16";
    char *hdr = malloc(hcap);
    hl += (size_t)snprintf(hdr + hl, hcap - hl, "{\"__metadata__\": {\"format\": \"pt\"}");
    for (int i = 0; i < n; i++) {
        if (s->omit && !strcmp(s->omit, t[i].name)) continue;
        int64_t r = t[i].rows + (s->bad && !strcmp(s->bad, t[i].name));
        size_t nb = (size_t)r * (size_t)(t[i].cols ? t[i].cols : 1) * es;
        if (t[i].cols)
            hl +=
                (size_t)snprintf(hdr + hl, hcap - hl,
                                 ", \"%s\": {\"dtype\": \"%s\", \"shape\": [%lld, %lld], "
                                 "\"data_offsets\": [%zu, %zu]}",
                                 t[i].name, dn, (long long)r, (long long)t[i].cols, off, off + nb);
        else
            hl += (size_t)snprintf(hdr + hl, hcap - hl,
                                   ", \"%s\": {\"dtype\": \"%s\", \"shape\": [%lld], "
                                   "\"data_offsets\": [%zu, %zu]}",
                                   t[i].name, dn, (long long)r, off, off + nb);
        off += nb;
    }
    hl += (size_t)snprintf(hdr + hl, hcap - hl, "}");
    while (hl % 8) hdr[hl++] = ' ';
    char path[1024];
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    FILE *f = fopen(path, "wb");
    uint64_t hl64 = hl;
    fwrite(&hl64, 8, 1, f);
    fwrite(hdr, 1, hl, f);
    for (int i = 0; i < n; i++) {
        if (s->omit && !strcmp(s->omit, t[i].name)) continue;
        int64_t r = t[i].rows + (s->bad && !strcmp(s->bad, t[i].name));
        size_t cnt = (size_t)r * (size_t)(t[i].cols ? t[i].cols : 1);
        uint32_t st = s->seed * 2654435761u + (uint32_t)i * 40503u + 1u;
        for (size_t k = 0; k < cnt; k++) {
            float u = (float)(tm_rand(&st) >> 8) * (1.0f / 16777216.0f) * 2.0f - 1.0f;
            float v = t[i].offset + t[i].scale * u;
            if (s->dtype == ENG_F32) {
                fwrite(&v, 4, 1, f);
            } else {
                uint16_t hv;
                if (s->dtype == ENG_F16) {
                    hv = tm_to_half(v);
                } else {
                    uint32_t b;
                    memcpy(&b, &v, 4);
                    hv = (uint16_t)((b + 0x7fffu + ((b >> 16) & 1u)) >> 16);
                }
                fwrite(&hv, 2, 1, f);
            }
        }
    }
    free(hdr);
    free(t);
    return fclose(f);
}

/* Force kernel table `isa` (RADIXSERVE_ISA) for the contexts made next: 1 if this CPU runs it,
 * else 0 after a SKIP line naming why. */
static inline int tm_force_isa(const eng_model *m, const char *isa) {
    setenv("RADIXSERVE_ISA", isa, 1);
    eng_ctx *c;
    rs_err e = {0};
    if (eng_ctx_init(&c, m, 1, 1, &e)) {
        char why[600];
        snprintf(why, sizeof why, "kernel table %s: %s", isa, e.msg);
        tap_skip(why);
        return 0;
    }
    eng_ctx_free(c);
    return 1;
}

/* Scratch directory for a test's files. */
static inline void tm_tmpdir(char *out, size_t n, const char *name) {
    const char *t = getenv("RADIXSERVE_TMP");
    snprintf(out, n, "%s/%s", t && *t ? t : "/tmp", name);
    mkdir(out, 0777);
}

/* The repository root (RADIXSERVE_ROOT, else the current directory). */
static inline const char *tm_root(void) {
    const char *r = getenv("RADIXSERVE_ROOT");
    return r && *r ? r : ".";
}

#endif
