/*
 * load.c — the model loading `serve` and `generate` share: the model directory, then
 * quantization at load (--weights) with its progress on stderr.
 */
#include <stdio.h>

#include "cli/cli.h"

/* One line rewritten in place while matrices convert, ended when the last is done. */
static void show_progress(void *arg, int done, int total) {
    const char *name = arg;
    fprintf(stderr, "\rradixserve: quantizing weights to %s: %d/%d matrices", name, done, total);
    if (done == total) fputc('\n', stderr);
    fflush(stderr);
}

int cli_load_model(eng_model **out, const char *dir, eng_weights w, int threads, rs_err *e) {
    int rc = eng_model_load(out, dir, e);
    if (rc || w == ENG_WEIGHTS_SOURCE) return rc;
    rc = eng_model_quantize(*out, w, threads > 0 ? threads : 1, show_progress,
                            (void *)eng_weights_name(w), e);
    if (rc) {
        eng_model_free(*out);
        *out = NULL;
    }
    return rc;
}
