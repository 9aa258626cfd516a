/*
 * fuzz_api_parse.c — the request parsers (api/api.h): the first byte picks chat, completions,
 * tokenize or detokenize, the rest is the body. Every rejection's error JSON must be valid
 * UTF-8 with a 4xx/5xx status; every accepted string field must be valid UTF-8.
 */
#include "api/api.h"
#include "fuzz/fuzz.h"

static void check_error(int rc, const api_error *err) {
    if (!rc) return;
    FUZZ_CHECK(err->status >= 400 && err->status < 600, "error status");
    char *j = api_error_json(err);
    FUZZ_CHECK(j && fuzz_utf8(j), "error JSON is valid UTF-8");
    free(j);
}

static void check_gen(const api_gen *g) {
    for (int i = 0; i < g->n_stop; i++) FUZZ_CHECK(fuzz_utf8(g->stop[i]), "stop is valid UTF-8");
    FUZZ_CHECK(!g->model || fuzz_utf8(g->model), "model is valid UTF-8");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    const char *body = (const char *)data + 1;
    size_t len = size - 1;
    api_error err = {0};
    int rc;
    switch (data[0] % 4) {
    case 0: {
        api_chat_request r;
        rc = api_parse_chat(body, len, &r, &err);
        if (!rc) {
            check_gen(&r.gen);
            api_chat_request_free(&r);
        }
        break;
    }
    case 1: {
        api_completion_request r;
        rc = api_parse_completion(body, len, &r, &err);
        if (!rc) {
            check_gen(&r.gen);
            for (int i = 0; i < r.n_prompts; i++)
                FUZZ_CHECK(!r.prompts[i].text || fuzz_utf8(r.prompts[i].text),
                           "prompt is valid UTF-8");
            api_completion_request_free(&r);
        }
        break;
    }
    case 2: {
        api_tokenize_request r;
        rc = api_parse_tokenize(body, len, &r, &err);
        if (!rc) api_tokenize_request_free(&r);
        break;
    }
    default: {
        int32_t *ids = NULL;
        int n = 0;
        rc = api_parse_detokenize(body, len, &ids, &n, &err);
        free(ids);
    }
    }
    check_error(rc, &err);
    return 0;
}
