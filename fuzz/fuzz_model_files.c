/*
 * fuzz_model_files.c — the model readers through their door, eng_model_load, on a scratch
 * directory: byte 0 even, the rest is model.safetensors (its 8-byte length, JSON header and
 * data offsets) beside models/stories260K's config.json; odd, the rest is config.json beside
 * stories260K's model.safetensors (so a config that fits the weights loads completely). A
 * failure must say why; a success must be freed cleanly.
 */
#include <limits.h>
#include <stdlib.h>
#include <unistd.h>

#include "engine/engine.h"
#include "fuzz/fuzz.h"

static char g_dir[2][256]; /* [0]: weights fuzzed, [1]: config fuzzed */

static void put(const char *dir, const char *name, const void *p, size_t n) {
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    FUZZ_CHECK(f && fwrite(p, 1, n, f) == n && fclose(f) == 0, "scratch file written");
}

/* dir/name -> the committed stories260K file of that name. */
static void link_real(const char *dir, const char *name) {
    char real[1024], rel[256], path[512];
    snprintf(rel, sizeof rel, "models/stories260K/%s", name);
    fuzz_path(real, sizeof real, rel);
    char *abs = realpath(real, NULL);
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FUZZ_CHECK(abs && symlink(abs, path) == 0, "link to stories260K");
    free(abs);
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc, (void)argv;
    const char *tmp = getenv("TMPDIR");
    for (int i = 0; i < 2; i++) {
        snprintf(g_dir[i], sizeof g_dir[i], "%s/rs_fuzz_model_XXXXXX",
                 tmp && tmp[0] ? tmp : "/tmp");
        FUZZ_CHECK(mkdtemp(g_dir[i]) != NULL, "scratch directory");
    }
    link_real(g_dir[0], "config.json");
    link_real(g_dir[1], "model.safetensors");
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    int config = data[0] & 1;
    put(g_dir[config], config ? "config.json" : "model.safetensors", data + 1, size - 1);
    eng_model *m = NULL;
    rs_err e = {0};
    if (eng_model_load(&m, g_dir[config], &e) == 0)
        eng_model_free(m);
    else
        FUZZ_CHECK(e.msg[0], "a failed load says why");
    return 0;
}
