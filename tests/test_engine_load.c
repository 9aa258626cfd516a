/*
 * test_engine_load.c — model loading: config and generation_config parsing, parameter counts,
 * F16 weights, sharded indexes, and every kind of broken input (truncated file, corrupt header,
 * bad offsets, missing tensor, wrong shape, unknown architecture) giving RS_EINVAL (or RS_EIO for
 * a missing file) with a message naming the file and the tensor. Broken copies are written into
 * $RADIXSERVE_TMP.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "engine/engine.h"
#include "tests/tap.h"
#include "tests/test_engine_model.h"

static int contains(const char *s, const char *sub) {
    return strstr(s, sub) != NULL;
}

/* Load dir; expect failure code `code` and a message containing both needles. */
static void expect_fail(const char *dir, int code, const char *n1, const char *n2,
                        const char *what) {
    eng_model *m = NULL;
    rs_err e = {0};
    int rc = eng_model_load(&m, dir, &e);
    TAP_OK(rc == code && m == NULL && contains(e.msg, n1) && contains(e.msg, n2),
           "%s -> %d with a message naming '%s' and '%s': %s", what, rc, n1, n2, e.msg);
    eng_model_free(m);
}

static void write_text(const char *dir, const char *name, const char *text) {
    char p[1200];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    FILE *f = fopen(p, "w");
    fputs(text, f);
    fclose(f);
}

/* A fresh model dir `name` from spec; returns its path in out. */
static int fresh(char *out, size_t n, const char *name, const tm_spec *s) {
    tm_tmpdir(out, n, name);
    return tm_write(s, out);
}

/* Overwrite bytes at offset of dir/model.safetensors. */
static void patch(const char *dir, long off, const void *bytes, size_t len) {
    char p[1200];
    snprintf(p, sizeof p, "%s/model.safetensors", dir);
    FILE *f = fopen(p, "r+b");
    fseek(f, off, SEEK_SET);
    fwrite(bytes, 1, len, f);
    fclose(f);
}

static long file_size(const char *dir) {
    char p[1200];
    snprintf(p, sizeof p, "%s/model.safetensors", dir);
    FILE *f = fopen(p, "rb");
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fclose(f);
    return n;
}

static void truncate_to(const char *dir, long n) {
    char p[1200];
    snprintf(p, sizeof p, "%s/model.safetensors", dir);
    if (truncate(p, n)) TAP_DIAG("truncate failed");
}

static int64_t expected_params(const tm_spec *s) {
    int64_t h = s->hidden, qd = (int64_t)s->heads * s->head_dim,
            kvd = (int64_t)s->kv_heads * s->head_dim;
    int64_t layer = 2 * h + qd * h + 2 * kvd * h + h * qd + 3 * h * s->inter;
    if (!strcmp(s->arch, "qwen3")) layer += 2 * s->head_dim;
    if (!strcmp(s->arch, "qwen2")) layer += qd + 2 * kvd;
    return (int64_t)s->vocab * h * (s->tie ? 1 : 2) + layer * s->layers + h;
}

static void check_good(void) {
    char dir[1024];
    tm_spec s = tm_default();
    fresh(dir, sizeof dir, "load_good", &s);
    write_text(dir, "generation_config.json",
               "{\"do_sample\": true, \"temperature\": 0.6, \"top_p\": 0.95, \"top_k\": 20, "
               "\"min_p\": 0.05, \"eos_token_id\": [7, 8, 9], \"bos_token_id\": 4}");
    eng_model *m;
    rs_err e = {0};
    if (!TAP_OK(eng_model_load(&m, dir, &e) == 0, "tiny qwen3 loads: %s", e.msg)) return;
    const eng_config *c = eng_model_config(m);
    TAP_OK(!strcmp(c->arch, "qwen3") && c->qk_norm && !c->qkv_bias && c->head_dim == 16 &&
               c->n_kv_heads == 2 && c->hidden == 48 && c->dtype == ENG_BF16 &&
               !c->tie_embeddings && fabsf(c->rope_theta - 500000.0f) < 1,
           "config parsed (arch, qk_norm, head_dim != hidden/heads, GQA, dtype, theta)");
    TAP_OK(c->n_eos == 3 && c->eos_ids[0] == 7 && c->eos_ids[2] == 9 && c->bos_id == 4,
           "generation_config's eos list and bos override config.json's");
    const eng_gen_defaults *g = eng_model_gen_defaults(m);
    TAP_OK(fabsf(g->temperature - 0.6f) < 1e-6 && fabsf(g->top_p - 0.95f) < 1e-6 &&
               g->top_k == 20 && fabsf(g->min_p - 0.05f) < 1e-6 && g->repetition_penalty == 1.0f,
           "sampling defaults from generation_config.json");
    TAP_OK(eng_model_n_params(m) == expected_params(&s), "parameter count %lld (expected %lld)",
           (long long)eng_model_n_params(m), (long long)expected_params(&s));
    kv_pool_config kc = eng_kv_config(m, 16, -1, 1 << 20);
    TAP_OK(kc.dtype == KV_BF16 && kc.n_layers == 2 && kc.head_dim == 16 && kc.n_kv_heads == 2,
           "KV geometry from the model, BF16 pages for a BF16 model");
    TAP_OK(eng_kv_config(m, 16, KV_F32, 1 << 20).dtype == KV_F32, "kv dtype can be forced");
    eng_model_free(m);
    write_text(dir, "generation_config.json", "{\"top_p\": 1.5}");
    expect_fail(dir, RS_EINVAL, "generation_config.json", "top_p",
                "top_p 1.5 in generation_config");
    write_text(dir, "generation_config.json", "{\"do_sample\": false, \"temperature\": 0.7}");
    if (eng_model_load(&m, dir, &e) == 0) {
        TAP_OK(eng_model_gen_defaults(m)->temperature == 0.0f,
               "do_sample false means greedy (temperature 0)");
        eng_model_free(m);
    }
}

static void check_stories(void) {
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/models/stories260K", tm_root());
    eng_model *m;
    rs_err e = {0};
    if (!TAP_OK(eng_model_load(&m, dir, &e) == 0, "stories260K loads: %s", e.msg)) return;
    const eng_config *c = eng_model_config(m);
    tm_spec s = tm_default(); /* stories260K's shape, for the parameter count */
    s.arch = "llama";
    s.vocab = 512;
    s.hidden = 64;
    s.inter = 172;
    s.layers = 5;
    s.heads = 8;
    s.kv_heads = 4;
    s.head_dim = 8;
    s.tie = 1;
    TAP_OK(!strcmp(c->arch, "llama") && !c->qk_norm && !c->qkv_bias && c->tie_embeddings &&
               c->dtype == ENG_F32 && c->n_eos == 1 && c->eos_ids[0] == 2 && c->bos_id == 1,
           "stories260K config: llama, tied, F32, bos 1, eos 2");
    TAP_OK(eng_model_n_params(m) == expected_params(&s), "stories260K has %lld parameters",
           (long long)eng_model_n_params(m));
    const eng_gen_defaults *g = eng_model_gen_defaults(m);
    TAP_OK(fabsf(g->temperature - 0.8f) < 1e-6 && fabsf(g->top_p - 0.9f) < 1e-6,
           "stories260K sampling defaults (temperature 0.8, top_p 0.9)");
    eng_model_free(m);
}

/* Last-token logits of a short prompt. */
static int logits_of(const char *dir, float *out) {
    eng_model *m;
    eng_ctx *c;
    kv_pool kv;
    rs_err e = {0};
    if (eng_model_load(&m, dir, &e)) return TAP_DIAG("%s", e.msg), -1;
    kv_pool_config kc = eng_kv_config(m, 16, KV_F32, 0);
    kc.budget_bytes = kv_block_bytes(&kc);
    kv_pool_init(&kv, &kc, &e);
    eng_ctx_init(&c, m, 8, 1, &e);
    int32_t tok[5] = {5, 17, 250, 3, 99}, blk = kv_alloc(&kv);
    eng_seq q = {tok, 5, 0, &blk, 1, out, NULL, NULL};
    int rc = eng_forward(c, &kv, &q, 1, &e);
    eng_ctx_free(c);
    kv_pool_free(&kv);
    eng_model_free(m);
    return rc;
}

static void check_f16(void) {
    char d32[1024], d16[1024];
    tm_spec s = tm_default();
    s.dtype = ENG_F32;
    fresh(d32, sizeof d32, "load_f32", &s);
    s.dtype = ENG_F16;
    fresh(d16, sizeof d16, "load_f16", &s);
    float a[300], b[300];
    int rc = logits_of(d32, a) | logits_of(d16, b);
    float md = 0, mx = 0;
    for (int i = 0; i < 300; i++) {
        md = fmaxf(md, fabsf(a[i] - b[i]));
        mx = fmaxf(mx, fabsf(a[i]));
    }
    TAP_OK(
        !rc && md < 0.02f && mx > 0.5f,
        "F16 weights give the F32 model's logits up to F16 rounding (max diff %g, max |logit| %g)",
        (double)md, (double)mx);
}

/* Rewrite dir/model.safetensors with `extra` spaces appended to the header, so every tensor's
 * data moves by `extra` bytes (misaligned for F32 when extra % 4 != 0). */
static int pad_header(const char *dir, int extra) {
    char p[1200];
    snprintf(p, sizeof p, "%s/model.safetensors", dir);
    FILE *f = fopen(p, "rb");
    if (!f) return -1;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)n);
    size_t got = fread(buf, 1, (size_t)n, f);
    fclose(f);
    uint64_t hl;
    memcpy(&hl, buf, 8);
    uint64_t nhl = hl + (uint64_t)extra;
    f = fopen(p, "wb");
    fwrite(&nhl, 8, 1, f);
    fwrite(buf + 8, 1, hl, f);
    for (int i = 0; i < extra; i++) fputc(' ', f);
    fwrite(buf + 8 + hl, 1, got - 8 - hl, f);
    free(buf);
    return fclose(f);
}

static void check_misaligned(void) {
    char a[1024], b[1024];
    tm_spec s = tm_default();
    s.dtype = ENG_F32;
    fresh(a, sizeof a, "load_aligned", &s);
    fresh(b, sizeof b, "load_misaligned", &s);
    pad_header(b, 2);
    float la[300], lb[300];
    int rc = logits_of(a, la) | logits_of(b, lb);
    TAP_OK(!rc && !memcmp(la, lb, sizeof la),
           "F32 data at offsets not a multiple of 4 loads (copied) and gives the same logits");
}

static void check_index(void) {
    char dir[1024];
    tm_spec s = tm_default();
    fresh(dir, sizeof dir, "load_index", &s);
    char *p = malloc(64 * 1024);
    int n = snprintf(p, 64 * 1024, "{\"metadata\": {}, \"weight_map\": {");
    tm_tensor *t = calloc(64, sizeof *t);
    int nt = tm_list(&s, t);
    for (int i = 0; i < nt; i++)
        n += snprintf(p + n, (size_t)(64 * 1024 - n),
                      "%s\"%s\": \"model-00001-of-00001.safetensors\"", i ? ", " : "", t[i].name);
    snprintf(p + n, (size_t)(64 * 1024 - n), "}}");
    /* Move the file to a shard name: only the index can find it now. */
    char a[1200], b[1200];
    snprintf(a, sizeof a, "%s/model.safetensors", dir);
    snprintf(b, sizeof b, "%s/model-00001-of-00001.safetensors", dir);
    rename(a, b);
    write_text(dir, "model.safetensors.index.json", p);
    eng_model *m;
    rs_err e = {0};
    TAP_OK(eng_model_load(&m, dir, &e) == 0, "loads through model.safetensors.index.json: %s",
           e.msg);
    if (!e.code) eng_model_free(m);
    write_text(dir, "model.safetensors.index.json",
               "{\"weight_map\": {\"model.norm.weight\": \"model-00002-of-00002.safetensors\"}}");
    expect_fail(dir, RS_EIO, "model-00002-of-00002.safetensors", "",
                "index naming a missing shard");
    write_text(dir, "model.safetensors.index.json",
               "{\"weight_map\": {\"model.nope.weight\": \"model-00001-of-00001.safetensors\"}}");
    expect_fail(dir, RS_EINVAL, "model.nope.weight", "index.json", "index naming an absent tensor");
    write_text(dir, "model.safetensors.index.json", "{\"weight_map\": 3}");
    expect_fail(dir, RS_EINVAL, "index.json", "weight_map", "index without a weight_map");
    free(p);
    free(t);
}

static void check_broken_files(void) {
    char dir[1024];
    tm_spec s = tm_default();
    fresh(dir, sizeof dir, "load_trunc", &s);
    truncate_to(dir, file_size(dir) / 2);
    expect_fail(dir, RS_EINVAL, "model.safetensors", "tensor model.", "file truncated to half");
    truncate_to(dir, 5);
    expect_fail(dir, RS_EINVAL, "model.safetensors", "truncated", "file truncated to 5 bytes");

    fresh(dir, sizeof dir, "load_hdr", &s);
    patch(dir, 8, "X", 1);
    expect_fail(dir, RS_EINVAL, "model.safetensors", "header", "header that is not JSON");
    fresh(dir, sizeof dir, "load_hlen", &s);
    uint64_t big = 1ull << 40;
    patch(dir, 0, &big, 8);
    expect_fail(dir, RS_EINVAL, "model.safetensors", "header length", "header length past the end");

    fresh(dir, sizeof dir, "load_raw", &s);
    const char *hdr = "{\"model.norm.weight\": {\"dtype\": \"F32\", \"shape\": [4], "
                      "\"data_offsets\": [0, 12]}}";
    char raw[256];
    uint64_t hl = strlen(hdr);
    memcpy(raw, &hl, 8);
    memcpy(raw + 8, hdr, hl);
    char p[1200];
    snprintf(p, sizeof p, "%s/model.safetensors", dir);
    FILE *f = fopen(p, "wb");
    fwrite(raw, 1, 8 + hl, f);
    fwrite(raw, 1, 16, f);
    fclose(f);
    expect_fail(dir, RS_EINVAL, "model.norm.weight", "bytes for",
                "data_offsets disagreeing with the shape");
    unlink(p);
    expect_fail(dir, RS_EIO, "model.safetensors", "cannot open", "no weights file");

    s.omit = "model.layers.1.mlp.up_proj.weight";
    fresh(dir, sizeof dir, "load_missing", &s);
    expect_fail(dir, RS_EINVAL, "model.layers.1.mlp.up_proj.weight", "missing", "a missing tensor");
    s.omit = "lm_head.weight";
    fresh(dir, sizeof dir, "load_nohead", &s);
    expect_fail(dir, RS_EINVAL, "lm_head.weight", "missing", "untied model without lm_head");
    s.omit = NULL;
    s.bad = "model.layers.0.self_attn.k_proj.weight";
    fresh(dir, sizeof dir, "load_shape", &s);
    expect_fail(dir, RS_EINVAL, "model.layers.0.self_attn.k_proj.weight",
                "shape [33, 48], expected [32, 48]", "a wrongly shaped tensor");
}

static void check_bad_config(void) {
    char dir[1024];
    tm_spec s = tm_default();
    s.arch = "mamba";
    fresh(dir, sizeof dir, "load_arch", &s);
    expect_fail(dir, RS_EINVAL, "config.json", "\"mamba\"", "unknown architecture");
    write_text(dir, "config.json", "{\"model_type\": \"llama\", ");
    expect_fail(dir, RS_EINVAL, "config.json", "JSON", "config.json cut short");
    write_text(dir, "config.json", "{\"model_type\": \"llama\", \"vocab_size\": 300}");
    expect_fail(dir, RS_EINVAL, "config.json", "hidden_size", "config.json without hidden_size");
    write_text(dir, "config.json",
               "{\"model_type\": \"qwen3\", \"vocab_size\": 300, \"hidden_size\": 48, "
               "\"intermediate_size\": 80, \"num_hidden_layers\": 2, \"num_attention_heads\": 4, "
               "\"num_key_value_heads\": 3, \"head_dim\": 16}");
    expect_fail(dir, RS_EINVAL, "config.json", "num_key_value_heads",
                "heads not a multiple of kv heads");
    write_text(dir, "config.json", "{\"model_type\": \"llama\", \"vocab_size\": \"big\"}");
    expect_fail(dir, RS_EINVAL, "config.json", "vocab_size", "a string where a number belongs");
    write_text(dir, "config.json",
               "{\"model_type\": \"llama\", \"rope_scaling\": {\"type\": \"yarn\"}}");
    expect_fail(dir, RS_EINVAL, "config.json", "rope_scaling", "unsupported rope_scaling");
    write_text(dir, "config.json", "{\"model_type\": \"qwen2\", \"use_sliding_window\": true}");
    expect_fail(dir, RS_EINVAL, "config.json", "use_sliding_window", "sliding-window attention");
    tm_tmpdir(dir, sizeof dir, "load_empty_dir");
    char p[1200];
    snprintf(p, sizeof p, "%s/config.json", dir);
    unlink(p);
    expect_fail(dir, RS_EIO, "config.json", "cannot open", "a directory without config.json");
}

/* Random single-byte corruptions of the header: each load succeeds or fails cleanly. */
static void check_header_fuzz(void) {
    char dir[1024];
    tm_spec s = tm_default();
    s.layers = 1;
    uint32_t st = 12345;
    int clean = 0, rounds = 60;
    for (int i = 0; i < rounds; i++) {
        fresh(dir, sizeof dir, "load_fuzz", &s);
        uint64_t hl;
        char p[1200];
        snprintf(p, sizeof p, "%s/model.safetensors", dir);
        FILE *f = fopen(p, "rb");
        if (fread(&hl, 8, 1, f) != 1) hl = 0;
        fclose(f);
        long off = 8 + (long)(tm_rand(&st) % hl);
        char c = "0123456789\"{}[],: x-e."[tm_rand(&st) % 22];
        patch(dir, off, &c, 1);
        eng_model *m = NULL;
        rs_err e = {0};
        int rc = eng_model_load(&m, dir, &e);
        clean += rc ? rc == RS_EINVAL && e.msg[0] : 1;
        eng_model_free(m);
    }
    TAP_OK(clean == rounds, "%d random header corruptions: each loads or fails with a message",
           rounds);
}

int main(void) {
    check_good();
    check_stories();
    check_f16();
    check_index();
    check_misaligned();
    check_broken_files();
    check_bad_config();
    check_header_fuzz();
    return tap_done();
}
