/*
 * model.c — eng_model_load: config.json and generation_config.json into eng_config and
 * eng_gen_defaults, then every tensor the architecture needs bound by its Hugging Face name with
 * its shape checked. Norm and bias vectors are widened to F32 copies at load (small, read often);
 * weight matrices stay in the mapping in their stored type.
 */
#include "engine/gguf.h"
#include "engine/internal.h"

#include <cjson/cJSON.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Bounds that keep every size product far from overflow and every stack buffer safe. */
#define CFG_MAX_DIM      (1 << 20)
#define CFG_MAX_HEAD_DIM 1024

/* ---------------------------------------------------------------- JSON helpers */

/* An integer field; *out untouched when absent. */
static int json_int(const cJSON *o, const char *key, int *out, const char *file, rs_err *e) {
    const cJSON *j = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!j || cJSON_IsNull(j)) return 0;
    double v = cJSON_IsNumber(j) ? j->valuedouble : 0.5;
    if (!(v >= INT_MIN && v <= INT_MAX) || v != (double)(int)v) /* range first: no UB cast */
        return rs_errf(e, RS_EINVAL, "%s: %s is not an integer", file, key);
    *out = (int)j->valuedouble;
    return 0;
}

static int json_float(const cJSON *o, const char *key, float *out, const char *file, rs_err *e) {
    const cJSON *j = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!j || cJSON_IsNull(j)) return 0;
    if (!cJSON_IsNumber(j)) return rs_errf(e, RS_EINVAL, "%s: %s is not a number", file, key);
    *out = (float)j->valuedouble;
    return 0;
}

static int json_bool(const cJSON *o, const char *key, int *out, const char *file, rs_err *e) {
    const cJSON *j = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!j || cJSON_IsNull(j)) return 0;
    if (!cJSON_IsBool(j)) return rs_errf(e, RS_EINVAL, "%s: %s is not true/false", file, key);
    *out = cJSON_IsTrue(j);
    return 0;
}

/* A key and where its value goes: kind 'i' int, 'f' float, 'b' bool (as int). */
typedef struct json_field {
    const char *key;
    char kind;
    void *dst;
} json_field;

/* Every field present in o, type-checked; absent or null fields keep their defaults. */
static int read_fields(const cJSON *o, const json_field *f, size_t n, const char *file, rs_err *e) {
    int rc = 0;
    for (size_t i = 0; i < n && !rc; i++) {
        if (f[i].kind == 'i')
            rc = json_int(o, f[i].key, f[i].dst, file, e);
        else if (f[i].kind == 'f')
            rc = json_float(o, f[i].key, f[i].dst, file, e);
        else
            rc = json_bool(o, f[i].key, f[i].dst, file, e);
    }
    return rc;
}

/* eos_token_id: an integer or a list of integers. */
static int json_eos(const cJSON *o, eng_config *c, const char *file, rs_err *e) {
    const cJSON *j = cJSON_GetObjectItemCaseSensitive(o, "eos_token_id");
    if (!j || cJSON_IsNull(j)) return 0;
    if (cJSON_IsNumber(j)) {
        c->eos_ids[0] = j->valueint;
        c->n_eos = 1;
        return 0;
    }
    if (!cJSON_IsArray(j) || cJSON_GetArraySize(j) > ENG_MAX_EOS)
        return rs_errf(e, RS_EINVAL, "%s: eos_token_id is not an integer or a list of at most %d",
                       file, ENG_MAX_EOS);
    c->n_eos = 0;
    for (const cJSON *x = j->child; x; x = x->next) {
        if (!cJSON_IsNumber(x))
            return rs_errf(e, RS_EINVAL, "%s: eos_token_id: not an integer", file);
        c->eos_ids[c->n_eos++] = x->valueint;
    }
    return 0;
}

static int parse_json_file(const char *dir, const char *name, int optional, cJSON **out, char *path,
                           size_t path_n, rs_err *e) {
    *out = NULL;
    int rc = rs_path_join(path, path_n, dir, name, e);
    if (rc) return rc;
    char *text;
    size_t len;
    FILE *f = fopen(path, "rb");
    if (!f) return optional ? 0 : rs_errf(e, RS_EIO, "%s: cannot open", path);
    fclose(f);
    if ((rc = rs_read_file(path, &text, &len, e))) return rc;
    *out = cJSON_ParseWithLength(text, len);
    free(text);
    if (!cJSON_IsObject(*out)) {
        cJSON_Delete(*out);
        *out = NULL;
        return rs_errf(e, RS_EINVAL, "%s: not a JSON object", path);
    }
    return 0;
}

/* ---------------------------------------------------------------- config.json */

/* The defaults of every field a model file may leave out (one owner for both formats). */
static eng_config config_defaults(void) {
    return (eng_config){.rms_eps = 1e-6f,
                        .rope_theta = 10000.0f,
                        .bos_id = -1,
                        .head_dim = -1,
                        .n_kv_heads = -1,
                        .max_pos = 32768,
                        .pooling = ENG_POOL_MEAN, /* embeddings without a modules.json */
                        .pool_normalize = 1};
}

/* The architecture name (config.json model_type, GGUF general.architecture) -> its flags. */
static int arch_flags(eng_config *c, const char *arch, const char *path, rs_err *e) {
    if (!strcmp(arch, "qwen3"))
        c->qk_norm = 1;
    else if (!strcmp(arch, "qwen2"))
        c->qkv_bias = 1;
    else if (strcmp(arch, "llama"))
        return rs_errf(e, RS_EINVAL,
                       "%s: unknown architecture \"%s\" (supported: qwen3, qwen2, llama)", path,
                       arch);
    snprintf(c->arch, sizeof c->arch, "%s", arch);
    return 0;
}

static int set_arch(eng_config *c, const cJSON *j, const char *path, rs_err *e) {
    const cJSON *mt = cJSON_GetObjectItemCaseSensitive(j, "model_type");
    if (!cJSON_IsString(mt)) return rs_errf(e, RS_EINVAL, "%s: model_type missing", path);
    int rc = arch_flags(c, mt->valuestring, path, e);
    if (rc) return rc;
    const cJSON *act = cJSON_GetObjectItemCaseSensitive(j, "hidden_act");
    if (act && !(cJSON_IsString(act) && !strcmp(act->valuestring, "silu")))
        return rs_errf(e, RS_EINVAL, "%s: hidden_act must be \"silu\"", path);
    const cJSON *rs = cJSON_GetObjectItemCaseSensitive(j, "rope_scaling");
    if (rs && !cJSON_IsNull(rs))
        return rs_errf(e, RS_EINVAL, "%s: rope_scaling is not supported", path);
    int bias = 0, sliding = 0;
    rc = json_bool(j, "attention_bias", &bias, path, e);
    if (!rc) rc = json_bool(j, "use_sliding_window", &sliding, path, e);
    if (rc) return rc;
    if (sliding) return rs_errf(e, RS_EINVAL, "%s: use_sliding_window is not supported", path);
    if (bias && !c->qkv_bias)
        return rs_errf(e, RS_EINVAL, "%s: attention_bias is not supported for %s", path, c->arch);
    return 0;
}

/* Derived defaults (KV heads = heads, head_dim = hidden / heads), then every bound checked:
 * the last step of reading a config, whatever file it came from. */
static int finish_config(eng_config *c, const char *path, rs_err *e) {
    if (c->n_kv_heads == -1) c->n_kv_heads = c->n_heads;
    if (c->head_dim == -1 && c->n_heads > 0) c->head_dim = c->hidden / c->n_heads;
    const struct {
        const char *name;
        int v;
    } d[] = {{"vocab_size", c->vocab_size},          {"hidden_size", c->hidden},
             {"intermediate_size", c->intermediate}, {"num_hidden_layers", c->n_layers},
             {"num_attention_heads", c->n_heads},    {"num_key_value_heads", c->n_kv_heads},
             {"max_position_embeddings", c->max_pos}};
    for (size_t i = 0; i < sizeof d / sizeof d[0]; i++)
        if (d[i].v <= 0 || d[i].v > CFG_MAX_DIM)
            return rs_errf(e, RS_EINVAL, "%s: %s = %d out of range (1..%d)", path, d[i].name,
                           d[i].v, CFG_MAX_DIM);
    if (c->head_dim <= 0 || c->head_dim > CFG_MAX_HEAD_DIM || c->head_dim % 2)
        return rs_errf(e, RS_EINVAL, "%s: head_dim = %d (must be even, 2..%d)", path, c->head_dim,
                       CFG_MAX_HEAD_DIM);
    if (c->n_heads % c->n_kv_heads)
        return rs_errf(e, RS_EINVAL,
                       "%s: num_attention_heads %d not a multiple of "
                       "num_key_value_heads %d",
                       path, c->n_heads, c->n_kv_heads);
    if ((int64_t)c->n_heads * c->head_dim > CFG_MAX_DIM)
        return rs_errf(e, RS_EINVAL, "%s: heads x head_dim too large", path);
    if (!(c->rms_eps > 0) || !(c->rope_theta > 0))
        return rs_errf(e, RS_EINVAL, "%s: rms_norm_eps and rope_theta must be positive", path);
    return 0;
}

static int load_config(eng_config *c, const char *dir, rs_err *e) {
    char path[4096];
    cJSON *j;
    int rc = parse_json_file(dir, "config.json", 0, &j, path, sizeof path, e);
    if (rc) return rc;
    *c = config_defaults();
    const json_field f[] = {{"vocab_size", 'i', &c->vocab_size},
                            {"hidden_size", 'i', &c->hidden},
                            {"intermediate_size", 'i', &c->intermediate},
                            {"num_hidden_layers", 'i', &c->n_layers},
                            {"num_attention_heads", 'i', &c->n_heads},
                            {"num_key_value_heads", 'i', &c->n_kv_heads},
                            {"head_dim", 'i', &c->head_dim},
                            {"max_position_embeddings", 'i', &c->max_pos},
                            {"rms_norm_eps", 'f', &c->rms_eps},
                            {"rope_theta", 'f', &c->rope_theta},
                            {"tie_word_embeddings", 'b', &c->tie_embeddings},
                            {"bos_token_id", 'i', &c->bos_id}};
    rc = set_arch(c, j, path, e);
    if (!rc) rc = read_fields(j, f, sizeof f / sizeof f[0], path, e);
    if (!rc) rc = json_eos(j, c, path, e);
    cJSON_Delete(j);
    if (rc) return rc;
    return finish_config(c, path, e);
}

/* generation_config.json (optional): EOS/BOS override config.json's; sampling defaults.
 * do_sample: false means greedy, whatever temperature says (as transformers does). */
static int load_gen_config(eng_model *m, const char *dir, rs_err *e) {
    char path[4096];
    cJSON *j;
    m->gen = (eng_gen_defaults){.temperature = 1.0f, .top_p = 1.0f, .repetition_penalty = 1.0f};
    int rc = parse_json_file(dir, "generation_config.json", 1, &j, path, sizeof path, e);
    if (rc || !j) return rc;
    int do_sample = 1;
    const json_field f[] = {{"temperature", 'f', &m->gen.temperature},
                            {"top_p", 'f', &m->gen.top_p},
                            {"top_k", 'i', &m->gen.top_k},
                            {"min_p", 'f', &m->gen.min_p},
                            {"repetition_penalty", 'f', &m->gen.repetition_penalty},
                            {"do_sample", 'b', &do_sample},
                            {"bos_token_id", 'i', &m->cfg.bos_id}};
    rc = read_fields(j, f, sizeof f / sizeof f[0], path, e);
    if (!rc) rc = json_eos(j, &m->cfg, path, e);
    cJSON_Delete(j);
    if (rc) return rc;
    if (!do_sample) m->gen.temperature = 0.0f;
    const eng_gen_defaults *g = &m->gen;
    if (!(g->temperature >= 0) || !(g->top_p > 0 && g->top_p <= 1) || g->top_k < 0 ||
        !(g->min_p >= 0 && g->min_p <= 1) || !(g->repetition_penalty > 0))
        return rs_errf(e, RS_EINVAL,
                       "%s: sampling value out of range (temperature >= 0, 0 < top_p <= 1, "
                       "top_k >= 0, 0 <= min_p <= 1, repetition_penalty > 0)",
                       path);
    return 0;
}

/* ---------------------------------------------------------------- embeddings' pooling */

/* A Pooling module's config.json: which pooling_mode_* is on. */
static int read_pooling_mode(const char *dir, const char *sub, eng_config *c, rs_err *e) {
    char pdir[4096], path[4096];
    cJSON *j;
    int rc = rs_path_join(pdir, sizeof pdir, dir, sub, e);
    if (!rc) rc = parse_json_file(pdir, "config.json", 1, &j, path, sizeof path, e);
    if (rc || !j) return rc;
    static const struct {
        const char *key;
        eng_pooling mode;
    } modes[] = {{"pooling_mode_lasttoken", ENG_POOL_LAST},
                 {"pooling_mode_cls_token", ENG_POOL_CLS},
                 {"pooling_mode_mean_tokens", ENG_POOL_MEAN}};
    c->pooling = ENG_POOL_UNSUPPORTED;
    for (size_t i = 0; i < sizeof modes / sizeof modes[0]; i++)
        if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(j, modes[i].key))) {
            c->pooling = modes[i].mode;
            break;
        }
    cJSON_Delete(j);
    return 0;
}

/* sentence-transformers' modules.json (optional): the Pooling module's mode and whether a
 * Normalize module follows. Without it: mean pooling, normalised. */
static int load_pooling(eng_config *c, const char *dir, rs_err *e) {
    char path[4096];
    cJSON *j, *m;
    int rc = rs_path_join(path, sizeof path, dir, "modules.json", e);
    FILE *f = rc ? NULL : fopen(path, "rb");
    if (!f) return rc;
    fclose(f);
    char *text;
    size_t len;
    if ((rc = rs_read_file(path, &text, &len, e))) return rc;
    j = cJSON_ParseWithLength(text, len);
    free(text);
    if (!cJSON_IsArray(j)) {
        cJSON_Delete(j);
        return rs_errf(e, RS_EINVAL, "%s: not a JSON array of modules", path);
    }
    c->pool_normalize = 0;
    cJSON_ArrayForEach(m, j) {
        const cJSON *type = cJSON_GetObjectItemCaseSensitive(m, "type");
        const cJSON *sub = cJSON_GetObjectItemCaseSensitive(m, "path");
        if (!cJSON_IsString(type)) continue;
        if (strstr(type->valuestring, "Normalize")) c->pool_normalize = 1;
        if (strstr(type->valuestring, "Pooling") && !rc)
            rc = read_pooling_mode(dir, cJSON_IsString(sub) ? sub->valuestring : "1_Pooling", c, e);
    }
    cJSON_Delete(j);
    return rc;
}

/* ---------------------------------------------------------------- GGUF metadata */

/* A key "<arch>.<name>" read by fn (an eng_gguf_int / eng_gguf_float style reader). */
#define ARCH_KEY(fn, g, c, name, dst)                                                              \
    (snprintf(key, sizeof key, "%s." name, (c)->arch), fn(g, key, dst, e))

/* Keys that describe what the forward pass does not do: refused, naming the key. */
static int gguf_refuse(const eng_gguf *g, const eng_config *c, rs_err *e) {
    char key[160], sv[64] = "";
    int experts = 0, rc = ARCH_KEY(eng_gguf_int, g, c, "expert_count", &experts);
    snprintf(key, sizeof key, "%s.rope.scaling.type", c->arch);
    if (!rc) rc = eng_gguf_str(g, key, sv, sizeof sv, e);
    const char *path = g->st.files[0].path;
    if (!rc && experts > 0)
        rc = rs_errf(e, RS_EINVAL,
                     "%s: %s.expert_count = %d: mixture-of-experts models are not "
                     "supported",
                     path, c->arch, experts);
    if (!rc && sv[0] && strcmp(sv, "none"))
        rc = rs_errf(e, RS_EINVAL, "%s: %s.rope.scaling.type \"%s\" is not supported", path,
                     c->arch, sv);
    return rc;
}

/* llama.cpp's llama_ftype (general.file_type) as llama-quantize names it; NULL for values it no
 * longer writes or that name a type radixserve cannot load anyway. */
static const char *gguf_file_type_name(int ft) {
    static const struct {
        int ft;
        const char *name;
    } names[] = {{0, "f32"},     {1, "f16"},     {2, "q4_0"},    {3, "q4_1"},    {7, "q8_0"},
                 {8, "q5_0"},    {9, "q5_1"},    {10, "q2_k"},   {11, "q3_k_s"}, {12, "q3_k_m"},
                 {13, "q3_k_l"}, {14, "q4_k_s"}, {15, "q4_k_m"}, {16, "q5_k_s"}, {17, "q5_k_m"},
                 {18, "q6_k"},   {32, "bf16"}};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (names[i].ft == ft) return names[i].name;
    return NULL;
}

/* The same fields config.json gives, from GGUF keys (llama.cpp's names). Vocabulary size: the
 * token list's length, else the embedding's rows; tied when output.weight is absent. */
static int gguf_config(eng_config *c, const eng_gguf *g, rs_err *e) {
    const char *path = g->st.files[0].path;
    char arch[64] = "", key[160];
    *c = config_defaults();
    int rc = eng_gguf_str(g, "general.architecture", arch, sizeof arch, e);
    if (!rc && !arch[0]) rc = rs_errf(e, RS_EINVAL, "%s: general.architecture missing", path);
    if (!rc) rc = arch_flags(c, arch, path, e);
    int rope_dims = -1, vlen = -1, nvocab = (int)eng_gguf_array_len(g, "tokenizer.ggml.tokens");
    c->vocab_size = nvocab;
    if (!rc) rc = ARCH_KEY(eng_gguf_int, g, c, "vocab_size", &c->vocab_size);
    if (!rc) rc = ARCH_KEY(eng_gguf_int, g, c, "block_count", &c->n_layers);
    if (!rc) rc = ARCH_KEY(eng_gguf_int, g, c, "embedding_length", &c->hidden);
    if (!rc) rc = ARCH_KEY(eng_gguf_int, g, c, "feed_forward_length", &c->intermediate);
    if (!rc) rc = ARCH_KEY(eng_gguf_int, g, c, "attention.head_count", &c->n_heads);
    if (!rc) rc = ARCH_KEY(eng_gguf_int, g, c, "attention.head_count_kv", &c->n_kv_heads);
    if (!rc) rc = ARCH_KEY(eng_gguf_int, g, c, "attention.key_length", &c->head_dim);
    if (!rc) rc = ARCH_KEY(eng_gguf_int, g, c, "attention.value_length", &vlen);
    if (!rc) rc = ARCH_KEY(eng_gguf_int, g, c, "rope.dimension_count", &rope_dims);
    if (!rc) rc = ARCH_KEY(eng_gguf_int, g, c, "context_length", &c->max_pos);
    if (!rc) rc = ARCH_KEY(eng_gguf_float, g, c, "rope.freq_base", &c->rope_theta);
    if (!rc) rc = ARCH_KEY(eng_gguf_float, g, c, "attention.layer_norm_rms_epsilon", &c->rms_eps);
    if (!rc) rc = gguf_refuse(g, c, e);
    static const char *const required[] = {"block_count", "embedding_length", "feed_forward_length",
                                           "attention.head_count"};
    for (size_t i = 0; i < sizeof required / sizeof required[0] && !rc; i++) {
        snprintf(key, sizeof key, "%s.%s", c->arch, required[i]);
        if (!eng_gguf_find(g, key))
            rc = rs_errf(e, RS_EINVAL, "%s: metadata %s missing", path, key);
    }
    int ft = -1;
    if (!rc) rc = eng_gguf_int(g, "general.file_type", &ft, e);
    if (!rc) c->file_type = gguf_file_type_name(ft);
    if (!rc) rc = eng_gguf_int(g, "tokenizer.ggml.bos_token_id", &c->bos_id, e);
    /* EOS: the end-of-sequence, end-of-turn and end-of-message ids, each once */
    static const char *const eos_keys[] = {"tokenizer.ggml.eos_token_id",
                                           "tokenizer.ggml.eot_token_id",
                                           "tokenizer.ggml.eom_token_id"};
    for (size_t i = 0; i < sizeof eos_keys / sizeof eos_keys[0] && !rc; i++) {
        int id = -1, seen = 0;
        rc = eng_gguf_int(g, eos_keys[i], &id, e);
        for (int k = 0; k < c->n_eos; k++) seen |= c->eos_ids[k] == id;
        if (!rc && id >= 0 && !seen) c->eos_ids[c->n_eos++] = id;
    }
    const eng_tensor *emb = eng_st_find(&g->st, "token_embd.weight");
    if (!rc && c->vocab_size < 0 && emb && emb->ndim == 2) c->vocab_size = (int)emb->shape[0];
    c->tie_embeddings = !eng_st_find(&g->st, "output.weight");
    if (!rc) rc = finish_config(c, path, e);
    if (!rc && ((vlen >= 0 && vlen != c->head_dim) || (rope_dims >= 0 && rope_dims != c->head_dim)))
        rc = rs_errf(e, RS_EINVAL,
                     "%s: %s.attention.value_length / rope.dimension_count differ from the "
                     "head size %d (not supported)",
                     path, c->arch, c->head_dim);
    return rc;
}
#undef ARCH_KEY

/* ---------------------------------------------------------------- tensor binding */

/* The tensors a model binds, by role: Hugging Face's name, then GGUF's (llama.cpp's). Layer
 * names are prefixed "model.layers.N." / "blk.N.". */
enum {
    T_ATTN_NORM,
    T_MLP_NORM,
    T_Q,
    T_K,
    T_V,
    T_O,
    T_GATE,
    T_UP,
    T_DOWN,
    T_Q_NORM,
    T_K_NORM,
    T_Q_BIAS,
    T_K_BIAS,
    T_V_BIAS,
    T_EMBED,
    T_FINAL_NORM,
    T_LM_HEAD,
};
static const char *const TENSOR_NAMES[][2] = {
    [T_ATTN_NORM] = {"input_layernorm.weight", "attn_norm.weight"},
    [T_MLP_NORM] = {"post_attention_layernorm.weight", "ffn_norm.weight"},
    [T_Q] = {"self_attn.q_proj.weight", "attn_q.weight"},
    [T_K] = {"self_attn.k_proj.weight", "attn_k.weight"},
    [T_V] = {"self_attn.v_proj.weight", "attn_v.weight"},
    [T_O] = {"self_attn.o_proj.weight", "attn_output.weight"},
    [T_GATE] = {"mlp.gate_proj.weight", "ffn_gate.weight"},
    [T_UP] = {"mlp.up_proj.weight", "ffn_up.weight"},
    [T_DOWN] = {"mlp.down_proj.weight", "ffn_down.weight"},
    [T_Q_NORM] = {"self_attn.q_norm.weight", "attn_q_norm.weight"},
    [T_K_NORM] = {"self_attn.k_norm.weight", "attn_k_norm.weight"},
    [T_Q_BIAS] = {"self_attn.q_proj.bias", "attn_q.bias"},
    [T_K_BIAS] = {"self_attn.k_proj.bias", "attn_k.bias"},
    [T_V_BIAS] = {"self_attn.v_proj.bias", "attn_v.bias"},
    [T_EMBED] = {"model.embed_tokens.weight", "token_embd.weight"},
    [T_FINAL_NORM] = {"model.norm.weight", "output_norm.weight"},
    [T_LM_HEAD] = {"lm_head.weight", "output.weight"},
};

/* The name of a role in this model's file (layer < 0: a whole-model tensor). */
static const char *tensor_name(const eng_model *m, int role, int layer, char *buf, size_t n) {
    const char *base = TENSOR_NAMES[role][m->gguf];
    if (layer < 0) return base;
    snprintf(buf, n, m->gguf ? "blk.%d.%s" : "model.layers.%d.%s", layer, base);
    return buf;
}

static const char *file_of(const eng_model *m, const eng_tensor *t) {
    return m->st.files[t->file].path;
}

/* Find name with shape [d0] (d1 < 0) or [d0, d1] and a dtype the kernels read. */
static int find_shaped(const eng_model *m, const char *name, int64_t d0, int64_t d1,
                       const eng_tensor **out, rs_err *e) {
    const eng_tensor *t = eng_st_find(&m->st, name);
    const char *where = m->st.n_files ? m->st.files[0].path : "model";
    if (!t) return rs_errf(e, RS_EINVAL, "%s: missing tensor %s", where, name);
    int nd = d1 < 0 ? 1 : 2;
    if (t->ndim != nd || t->shape[0] != d0 || (nd == 2 && t->shape[1] != d1)) {
        char got[96] = "";
        for (int i = 0, o = 0; i < t->ndim && o < (int)sizeof got - 24; i++)
            o += snprintf(got + o, sizeof got - (size_t)o, "%s%lld", i ? ", " : "",
                          (long long)t->shape[i]);
        if (nd == 1)
            return rs_errf(e, RS_EINVAL, "%s: tensor %s has shape [%s], expected [%lld]",
                           file_of(m, t), name, got, (long long)d0);
        return rs_errf(e, RS_EINVAL, "%s: tensor %s has shape [%s], expected [%lld, %lld]",
                       file_of(m, t), name, got, (long long)d0, (long long)d1);
    }
    if (t->dtype < 0)
        return rs_errf(e, RS_EINVAL, "%s: tensor %s: dtype not F32, BF16 or F16", file_of(m, t),
                       name);
    *out = t;
    return 0;
}

static int bind_mat(eng_model *m, eng_mat *out, const char *name, int64_t rows, int64_t cols,
                    rs_err *e) {
    const eng_tensor *t;
    int rc = find_shaped(m, name, rows, cols, &t, e);
    if (rc) return rc;
    out->data = t->data;
    out->dtype = (eng_dtype)t->dtype;
    m->n_params += rows * cols;
    return 0;
}

static int bind_vec(eng_model *m, const float **out, const char *name, int64_t n, rs_err *e) {
    const eng_tensor *t;
    int rc = find_shaped(m, name, n, -1, &t, e);
    if (rc) return rc;
    if (t->dtype > ENG_F16)
        return rs_errf(e, RS_EINVAL, "%s: tensor %s is %s: a vector must be F32, F16 or BF16",
                       file_of(m, t), name, eng_dtype_name((eng_dtype)t->dtype));
    float **v = realloc(m->vecs, (size_t)(m->n_vecs + 1) * sizeof *v);
    if (!v) return rs_errf(e, RS_ENOMEM, "out of memory");
    m->vecs = v;
    float *f = malloc((size_t)n * sizeof *f);
    if (!f) return rs_errf(e, RS_ENOMEM, "out of memory");
    for (int64_t i = 0; i < n; i++) f[i] = eng_load_elem(t->data, (eng_dtype)t->dtype, (size_t)i);
    m->vecs[m->n_vecs++] = f;
    m->n_params += n;
    *out = f;
    return 0;
}

/*
 * llama.cpp's converter permutes the rows of the llama architecture's Q and K projections
 * within each head, so that ggml's interleaved RoPE (rotating pairs (2j, 2j + 1)) computes what
 * Hugging Face's "rotate half" (pairs (j, j + D/2)) does: its row h*D + 2j + s holds the Hugging
 * Face row h*D + s*D/2 + j. The forward pass rotates halves, so the rows are put back into
 * Hugging Face's order in an owned copy. Rows are independent (a quantized row is whole blocks),
 * so this moves bytes of any storage type. Qwen2/Qwen3 files are written unpermuted (NEOX RoPE).
 */
static int unpermute_rows(eng_model *m, eng_mat *w, const char *name, int n_head, int head_dim,
                          rs_err *e) {
    const eng_tensor *t = eng_st_find(&m->st, name);
    size_t rows = (size_t)n_head * (size_t)head_dim, row = t->nbytes / rows,
           half = (size_t)head_dim / 2;
    void **c = realloc(m->st.copies, (size_t)(m->st.n_copies + 1) * sizeof *c);
    if (!c) return rs_errf(e, RS_ENOMEM, "out of memory");
    m->st.copies = c;
    uint8_t *dst = malloc(t->nbytes ? t->nbytes : 1);
    if (!dst) return rs_errf(e, RS_ENOMEM, "out of memory");
    m->st.copies[m->st.n_copies++] = dst;
    const uint8_t *src = t->data;
    for (size_t h = 0; h < (size_t)n_head; h++)
        for (size_t s = 0; s < 2; s++)
            for (size_t j = 0; j < half; j++)
                memcpy(dst + (h * (size_t)head_dim + s * half + j) * row,
                       src + (h * (size_t)head_dim + 2 * j + s) * row, row);
    w->data = dst;
    return 0;
}

static int bind_layer(eng_model *m, int i, rs_err *e) {
    const eng_config *c = &m->cfg;
    eng_layer *L = &m->layers[i];
    int64_t h = c->hidden, qd = (int64_t)c->n_heads * c->head_dim;
    int64_t kvd = (int64_t)c->n_kv_heads * c->head_dim, f = c->intermediate;
    char n[160];
    int rc = 0;
#define NAME(r) tensor_name(m, r, i, n, sizeof n)
    if (!rc) rc = bind_vec(m, &L->attn_norm, NAME(T_ATTN_NORM), h, e);
    if (!rc) rc = bind_vec(m, &L->mlp_norm, NAME(T_MLP_NORM), h, e);
    if (!rc) rc = bind_mat(m, &L->q, NAME(T_Q), qd, h, e);
    if (!rc && m->gguf && !strcmp(c->arch, "llama"))
        rc = unpermute_rows(m, &L->q, NAME(T_Q), c->n_heads, c->head_dim, e);
    if (!rc) rc = bind_mat(m, &L->k, NAME(T_K), kvd, h, e);
    if (!rc && m->gguf && !strcmp(c->arch, "llama"))
        rc = unpermute_rows(m, &L->k, NAME(T_K), c->n_kv_heads, c->head_dim, e);
    if (!rc) rc = bind_mat(m, &L->v, NAME(T_V), kvd, h, e);
    if (!rc) rc = bind_mat(m, &L->o, NAME(T_O), h, qd, e);
    if (!rc) rc = bind_mat(m, &L->gate, NAME(T_GATE), f, h, e);
    if (!rc) rc = bind_mat(m, &L->up, NAME(T_UP), f, h, e);
    if (!rc) rc = bind_mat(m, &L->down, NAME(T_DOWN), h, f, e);
    if (!rc && c->qk_norm) {
        rc = bind_vec(m, &L->q_norm, NAME(T_Q_NORM), c->head_dim, e);
        if (!rc) rc = bind_vec(m, &L->k_norm, NAME(T_K_NORM), c->head_dim, e);
    }
    if (!rc && c->qkv_bias) {
        rc = bind_vec(m, &L->q_bias, NAME(T_Q_BIAS), qd, e);
        if (!rc) rc = bind_vec(m, &L->k_bias, NAME(T_K_BIAS), kvd, e);
        if (!rc) rc = bind_vec(m, &L->v_bias, NAME(T_V_BIAS), kvd, e);
    }
#undef NAME
    return rc;
}

static int bind_all(eng_model *m, rs_err *e) {
    const eng_config *c = &m->cfg;
    int rc =
        bind_mat(m, &m->embed, tensor_name(m, T_EMBED, -1, NULL, 0), c->vocab_size, c->hidden, e);
    if (rc) return rc;
    m->cfg.dtype = m->embed.dtype;
    m->layers = calloc((size_t)c->n_layers, sizeof *m->layers);
    if (!m->layers) return rs_errf(e, RS_ENOMEM, "out of memory");
    for (int i = 0; i < c->n_layers && !rc; i++) rc = bind_layer(m, i, e);
    if (!rc)
        rc = bind_vec(m, &m->final_norm, tensor_name(m, T_FINAL_NORM, -1, NULL, 0), c->hidden, e);
    if (!rc && c->tie_embeddings)
        m->lm_head = m->embed;
    else if (!rc)
        rc = bind_mat(m, &m->lm_head, tensor_name(m, T_LM_HEAD, -1, NULL, 0), c->vocab_size,
                      c->hidden, e);
    return rc;
}

/* A Hugging Face directory: config.json, generation_config.json, safetensors. */
static int load_dir(eng_model *m, const char *dir, rs_err *e) {
    int rc = load_config(&m->cfg, dir, e);
    if (!rc) rc = load_gen_config(m, dir, e);
    if (!rc) rc = load_pooling(&m->cfg, dir, e);
    if (!rc) rc = eng_st_open(&m->st, dir, e);
    return rc;
}

/* A GGUF file: config from its metadata, sampling defaults neutral (GGUF has none). The model
 * takes over the file's tensor set; the metadata is not kept. */
static int load_gguf(eng_model *m, const char *path, rs_err *e) {
    eng_gguf g;
    int rc = eng_gguf_open(&g, path, 1, e);
    if (rc) return rc;
    m->gguf = 1;
    m->gen = (eng_gen_defaults){.temperature = 1.0f, .top_p = 1.0f, .repetition_penalty = 1.0f};
    rc = gguf_config(&m->cfg, &g, e);
    m->st = g.st;
    g.st = (eng_st_set){0};
    eng_gguf_close(&g);
    return rc;
}

int eng_model_load(eng_model **out, const char *path, rs_err *e) {
    *out = NULL;
    eng_model *m = calloc(1, sizeof *m);
    if (!m) return rs_errf(e, RS_ENOMEM, "out of memory");
    int rc = eng_is_gguf(path) ? load_gguf(m, path, e) : load_dir(m, path, e);
    if (!rc) rc = bind_all(m, e);
    for (int i = 0; !rc && i < m->cfg.n_eos; i++)
        if (m->cfg.eos_ids[i] < 0 || m->cfg.eos_ids[i] >= m->cfg.vocab_size)
            rc = rs_errf(e, RS_EINVAL, "%s: eos_token_id %d outside the vocabulary", path,
                         m->cfg.eos_ids[i]);
    if (rc) {
        eng_model_free(m);
        return rc;
    }
    *out = m;
    return 0;
}

void eng_model_free(eng_model *m) {
    if (!m) return;
    for (int i = 0; i < m->n_vecs; i++) free(m->vecs[i]);
    free(m->vecs);
    free(m->layers);
    for (int i = 0; i < m->n_owned; i++) free(m->owned[i]);
    free(m->owned);
    eng_st_close(&m->st);
    free(m);
}

const eng_config *eng_model_config(const eng_model *m) {
    return &m->cfg;
}
const eng_gen_defaults *eng_model_gen_defaults(const eng_model *m) {
    return &m->gen;
}
int64_t eng_model_n_params(const eng_model *m) {
    return m->n_params;
}
const char *eng_model_format(const eng_model *m) {
    return m->gguf ? "gguf" : "safetensors";
}

kv_pool_config eng_kv_config(const eng_model *m, int block_size, int force_dtype,
                             size_t budget_bytes) {
    kv_pool_config k = {
        .n_layers = m->cfg.n_layers,
        .n_kv_heads = m->cfg.n_kv_heads,
        .head_dim = m->cfg.head_dim,
        .block_size = block_size > 0 ? block_size : 16,
        .dtype = m->cfg.dtype == ENG_F32 ? KV_F32 : KV_BF16,
        .budget_bytes = budget_bytes,
    };
    if (force_dtype >= 0) k.dtype = force_dtype == KV_BF16 ? KV_BF16 : KV_F32;
    return k;
}
