/*
 * srv_sched.c — the production backend: srv_backend's functions forwarding to the scheduler and
 * the tokenizer. Kept apart so the HTTP layer (and its tests) link without a model.
 */
#include "server/server.h"

static int b_submit(void *ctx, const int32_t *prompt, int n_prompt, const sched_params *p,
                    sched_request **out, rs_err *e) {
    return sched_submit(((srv_sched_ctx *)ctx)->s, prompt, n_prompt, p, out, e);
}

static void b_stats(void *ctx, sched_stats *out) {
    sched_get_stats(((srv_sched_ctx *)ctx)->s, out);
}

static int b_encode(void *ctx, const char *text, size_t len, int flags, rs_ivec *out, rs_err *e) {
    return tok_encode(((srv_sched_ctx *)ctx)->tok, text, len, flags, out, e);
}

static int b_decode(void *ctx, const int32_t *ids, int n, int skip_special, char **out, rs_err *e) {
    return tok_decode(((srv_sched_ctx *)ctx)->tok, ids, n, skip_special, out, e);
}

static int b_cache_json(void *ctx, int max_tokens, char **out, rs_err *e) {
    return sched_cache_json(((srv_sched_ctx *)ctx)->s, max_tokens, out, e);
}

static int b_warm(void *ctx, const int32_t *ids, int n, const char *cache_salt,
                  const eng_lora *lora, rs_err *e) {
    return sched_warm(((srv_sched_ctx *)ctx)->s, ids, n, cache_salt, lora, e);
}

static int b_lora_acquire(void *ctx, const char *name, const eng_lora **out, rs_err *e) {
    return eng_lora_acquire(((srv_sched_ctx *)ctx)->loras, name, out, e);
}

static int b_lora_load(void *ctx, const char *name, const char *path, rs_err *e) {
    return eng_lora_load(((srv_sched_ctx *)ctx)->loras, name, path, e);
}

static int b_lora_unload(void *ctx, const char *name, rs_err *e) {
    return eng_lora_unload(((srv_sched_ctx *)ctx)->loras, name, e);
}

static int b_lora_names(void *ctx, char (*names)[ENG_LORA_NAME_MAX], int max) {
    return eng_lora_names(((srv_sched_ctx *)ctx)->loras, names, max);
}

void srv_backend_sched(srv_backend *be, srv_sched_ctx *ctx) {
    be->ctx = ctx;
    be->submit = b_submit;
    be->next_event = sched_next_event;
    be->cancel = sched_cancel;
    be->request_free = sched_request_free;
    be->event_free = sched_event_free;
    be->get_stats = b_stats;
    be->encode = b_encode;
    be->decode = b_decode;
    be->cache_json = b_cache_json;
    be->warm = b_warm;
    be->lora_acquire = b_lora_acquire;
    be->lora_load = b_lora_load;
    be->lora_unload = b_lora_unload;
    be->lora_names = b_lora_names;
}
