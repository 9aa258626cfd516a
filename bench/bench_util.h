/*
 * bench_util.h — what the engine benchmarks (bench_prefix, bench_engine) share: the default
 * benchmark model written on first use, deterministic prompts, a KV pool of a given size,
 * argument parsing and the JSON line's time stamp. Header-only: each bench is one program.
 */
#ifndef RADIXSERVE_BENCH_UTIL_H
#define RADIXSERVE_BENCH_UTIL_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "engine/engine.h"

/* Every issue's benchmark model: BF16, Qwen3-0.6B's exact shapes, random weights (1.2 GB). */
#define BU_DEFAULT_MODEL "build/bench/qwen3-0.6b"

static inline int bu_file_exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0;
}

/* A model directory must hold config.json; the default one is written once by bench/model.sh
 * (which needs the repository root as the working directory). */
static inline int bu_ensure_model(const char *dir, rs_err *e) {
    char cfg[4096];
    if (eng_is_gguf(dir))
        return bu_file_exists(dir) ? 0 : rs_errf(e, RS_ENOTFOUND, "%s not found", dir);
    if (rs_path_join(cfg, sizeof cfg, dir, "config.json", e)) return e->code;
    if (bu_file_exists(cfg)) return 0;
    if (strcmp(dir, BU_DEFAULT_MODEL))
        return rs_errf(e, RS_ENOTFOUND, "%s has no config.json (a Hugging Face model directory?)",
                       dir);
    if (!bu_file_exists("bench/model.sh"))
        return rs_errf(e, RS_ENOTFOUND,
                       "run from the repository root (bench/model.sh writes the default model %s)",
                       dir);
    if (system("bash bench/model.sh " BU_DEFAULT_MODEL " qwen3-0.6b") != 0)
        return rs_errf(e, RS_EIO, "bench/model.sh failed to write %s", dir);
    return 0;
}

/* Deterministic ids spread over the whole vocabulary (a random model has no favourite text);
 * different seeds give different prompts. */
static inline void bu_tokens(int32_t *t, int n, int vocab, uint64_t seed) {
    uint64_t s = 0x9E3779B97F4A7C15ull ^ (seed * 0xBF58476D1CE4E5B9ull);
    for (int i = 0; i < n; i++) {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        t[i] = (int32_t)(s % (uint64_t)vocab);
    }
}

/* A pool of exactly n_blocks blocks in the model's KV geometry. */
static inline int bu_pool(kv_pool *p, const eng_model *m, int block_size, int n_blocks, rs_err *e) {
    kv_pool_config kc = eng_kv_config(m, block_size, -1, 0);
    kc.budget_bytes = kv_block_bytes(&kc) * (size_t)n_blocks;
    return kv_pool_init(p, &kc, e);
}

/* A decimal argument in [lo, hi]; -1 when it is not one. */
static inline int bu_int_arg(const char *v, int lo, int hi, int *out) {
    char *end;
    long x = strtol(v, &end, 10);
    if (!*v || *end || x < lo || x > hi) return -1;
    *out = (int)x;
    return 0;
}

/* The UTC time stamp and the commit (RADIXSERVE_COMMIT, set by bench/run.sh) of a JSON line. */
static inline void bu_json_head(FILE *fp, const char *bench) {
    char when[32];
    time_t now = time(NULL);
    strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", gmtime(&now));
    const char *commit = getenv("RADIXSERVE_COMMIT");
    fprintf(fp, "{\"bench\":\"%s\",\"time\":\"%s\",\"commit\":\"%s\",\"isa\":\"%s\"", bench, when,
            commit ? commit : "", eng_isa_name());
}

#endif
