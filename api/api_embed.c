/*
 * api_embed.c — POST /v1/embeddings: the request (input as a string, an id array, or an array of
 * either; encoding_format; dimensions), the finishing of a pooled vector (truncated to
 * `dimensions`, then L2-normalised when the model's embeddings are), and the response with each
 * vector as JSON floats or as base64 of little-endian float32 (what the openai SDK decodes).
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "api/api.h"

#define INVALID "invalid_request_error"

static const cJSON *present(const cJSON *o, const char *name) {
    const cJSON *f = cJSON_GetObjectItemCaseSensitive(o, name);
    return f && !cJSON_IsNull(f) ? f : NULL;
}

static int parse_format(const cJSON *root, api_embed_request *r, api_error *err) {
    const cJSON *f = present(root, "encoding_format");
    if (!f) return 0;
    if (cJSON_IsString(f) && !strcmp(f->valuestring, "float")) return 0;
    if (cJSON_IsString(f) && !strcmp(f->valuestring, "base64")) return r->base64 = 1, 0;
    return api_errorf(err, 400, INVALID, "encoding_format", "invalid_value",
                      "'encoding_format' must be \"float\" or \"base64\"");
}

static int parse_dimensions(const cJSON *root, api_embed_request *r, api_error *err) {
    const cJSON *f = present(root, "dimensions");
    if (!f) return 0;
    if (!cJSON_IsNumber(f) || f->valuedouble != floor(f->valuedouble) || f->valuedouble < 1 ||
        f->valuedouble > INT32_MAX)
        return api_errorf(err, 400, INVALID, "dimensions", "invalid_value",
                          "'dimensions' must be a positive integer");
    r->dimensions = (int)f->valuedouble;
    return 0;
}

int api_parse_embeddings(const char *body, size_t len, api_embed_request *out, api_error *err) {
    cJSON *root;
    memset(out, 0, sizeof *out);
    if (api_parse_object(body, len, &root, err)) return RS_EINVAL;
    const cJSON *model = present(root, "model");
    int rc = 0;
    if (model && !cJSON_IsString(model))
        rc = api_errorf(err, 400, INVALID, "model", "invalid_type", "'model' must be a string");
    else if (model && !(out->model = strdup(model->valuestring)))
        rc = api_errorf(err, 500, "server_error", NULL, NULL, "out of memory");
    if (!rc)
        rc = api_parse_prompts(present(root, "input"), "input", 1, API_MAX_EMBED_INPUTS,
                               &out->inputs, &out->n_inputs, err);
    for (int i = 0; !rc && i < out->n_inputs; i++)
        if (out->inputs[i].text && !out->inputs[i].text[0])
            rc = api_errorf(err, 400, INVALID, "input", "invalid_value",
                            "'input' must not contain empty strings");
    if (!rc) rc = parse_format(root, out, err);
    if (!rc) rc = parse_dimensions(root, out, err);
    cJSON_Delete(root);
    if (rc) api_embed_request_free(out);
    return rc ? RS_EINVAL : 0;
}

void api_embed_request_free(api_embed_request *r) {
    free(r->model);
    api_prompts_free(r->inputs, r->n_inputs);
    memset(r, 0, sizeof *r);
}

int api_embed_finish(float *v, int n, int dims, int normalize) {
    if (dims > 0 && dims < n) n = dims;
    if (!normalize) return n;
    double ss = 0;
    for (int i = 0; i < n; i++) ss += (double)v[i] * v[i];
    /* sentence-transformers' Normalize: x / max(||x||, 1e-12) */
    double norm = sqrt(ss) > 1e-12 ? sqrt(ss) : 1e-12;
    for (int i = 0; i < n; i++) v[i] = (float)(v[i] / norm);
    return n;
}

/* Standard base64 (RFC 4648, padded) of n bytes. */
static char *base64(const unsigned char *p, size_t n) {
    static const char A[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    char *out = malloc((n + 2) / 3 * 4 + 1), *o = out;
    if (!out) return NULL;
    for (size_t i = 0; i < n; i += 3) {
        unsigned x = (unsigned)p[i] << 16 | (i + 1 < n ? (unsigned)p[i + 1] << 8 : 0) |
                     (i + 2 < n ? p[i + 2] : 0);
        *o++ = A[x >> 18 & 63];
        *o++ = A[x >> 12 & 63];
        *o++ = i + 1 < n ? A[x >> 6 & 63] : '=';
        *o++ = i + 2 < n ? A[x & 63] : '=';
    }
    *o = 0;
    return out;
}

/* One vector as OpenAI sends it: a float array, or base64 of its float32 bytes (x86-64 is
 * little-endian, the order the SDKs decode). */
static cJSON *vector_json(const float *v, int n, int b64) {
    if (!b64) {
        cJSON *a = cJSON_CreateArray();
        for (int i = 0; a && i < n; i++) cJSON_AddItemToArray(a, cJSON_CreateNumber(v[i]));
        return a;
    }
    char *s = base64((const unsigned char *)v, (size_t)n * sizeof *v);
    cJSON *j = s ? cJSON_CreateString(s) : NULL;
    free(s);
    return j;
}

char *api_embeddings_response(const char *model, float *const *vecs, const int *dims, int n,
                              int b64, int prompt_tokens, int cached_tokens) {
    cJSON *o = cJSON_CreateObject(), *data = cJSON_AddArrayToObject(o, "data");
    cJSON_AddStringToObject(o, "object", "list");
    for (int i = 0; i < n; i++) {
        cJSON *e = cJSON_CreateObject();
        cJSON_AddStringToObject(e, "object", "embedding");
        cJSON_AddNumberToObject(e, "index", i);
        cJSON_AddItemToObject(e, "embedding", vector_json(vecs[i], dims[i], b64));
        cJSON_AddItemToArray(data, e);
    }
    cJSON_AddStringToObject(o, "model", model);
    cJSON *u = cJSON_AddObjectToObject(o, "usage");
    cJSON_AddNumberToObject(u, "prompt_tokens", prompt_tokens);
    cJSON_AddNumberToObject(u, "total_tokens", prompt_tokens);
    cJSON_AddNumberToObject(cJSON_AddObjectToObject(u, "prompt_tokens_details"), "cached_tokens",
                            cached_tokens);
    return api_print(o);
}
