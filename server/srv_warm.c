/*
 * srv_warm.c — turn-aware warming. A chat UI re-sends the whole history each turn with the
 * previous answer as an assistant message, and the template renders that history differently
 * from what was generated (Qwen3 drops the think block of earlier turns; in non-thinking mode
 * the generation prompt's empty think block is not part of the history). So when a chat
 * completion finishes, the conversation is rendered as the next request will render it and
 * handed to the scheduler (sched_warm), which prefills what the tree lacks only from spare
 * capacity. Runs on the connection's thread after the response is complete.
 */
#include <stdlib.h>
#include <string.h>

#include "server/srv_int.h"

/* The template input with the answer as an assistant message and then a user message saying
 * `user`, without a generation prompt, rendered. The one place warming calls the template. */
static int render_turn(const srv *s, const cJSON *tpl_req, const char *answer, const char *user,
                       char **out, rs_err *e) {
    cJSON *r = cJSON_Duplicate(tpl_req, 1), *a = cJSON_CreateObject(), *u = cJSON_CreateObject();
    cJSON *msgs = r ? cJSON_GetObjectItemCaseSensitive(r, "messages") : NULL;
    int rc = RS_ENOMEM;
    if (cJSON_IsArray(msgs) && a && u && cJSON_AddStringToObject(a, "role", "assistant") &&
        cJSON_AddStringToObject(a, "content", answer) &&
        cJSON_AddStringToObject(u, "role", "user") && cJSON_AddStringToObject(u, "content", user)) {
        cJSON_AddItemToArray(msgs, a);
        cJSON_AddItemToArray(msgs, u);
        a = u = NULL;
        cJSON_DeleteItemFromObjectCaseSensitive(r, "add_generation_prompt");
        rc = cJSON_AddFalseToObject(r, "add_generation_prompt")
                 ? chat_format_render(s->model.chat, r, out, NULL, e)
                 : RS_ENOMEM;
    }
    cJSON_Delete(a);
    cJSON_Delete(u);
    cJSON_Delete(r);
    return rc;
}

void srv_warm_next_turn(srv *s, const cJSON *tpl_req, const char *answer, const char *cache_salt,
                        const eng_lora *lora) {
    if (!s->cfg.warm_next_turn || !s->be.warm || !s->model.prefix_cache) return;
    char *a = NULL, *b = NULL;
    rs_err e = {0};
    rs_ivec ids = {0};
    /* Two renderings that differ only in the next user message's text: everything before the
     * first difference (the history through the answer's end-of-turn marker and the next
     * user turn's header) is what the next request will start with, whatever it says. */
    if (!render_turn(s, tpl_req, answer, "a", &a, &e) &&
        !render_turn(s, tpl_req, answer, "b", &b, &e)) {
        size_t n = 0;
        while (a[n] && a[n] == b[n]) n++;
        if (n > 0 && !s->be.encode(s->be.ctx, a, n, 0, &ids, &e) && ids.n > 0 &&
            ids.n < s->model.ctx_size)
            s->be.warm(s->be.ctx, ids.v, ids.n, cache_salt, lora, &e); /* best effort */
    }
    free(a);
    free(b);
    rs_ivec_free(&ids);
}
