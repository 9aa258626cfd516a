/*
 * chat_tools.c — Hermes / Qwen "<tool_call>{json}</tool_call>" blocks out of generated text into
 * OpenAI tool calls, fed delta by delta (a tag or a block cut across deltas is held back).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chat/chat.h"

static const char OPEN[] = CHAT_TOOL_OPEN, CLOSE[] = CHAT_TOOL_CLOSE;

void chat_tools_init(chat_tools *t, const char *id_base, int max_calls) {
    memset(t, 0, sizeof *t);
    t->max_calls = max_calls;
    snprintf(t->id_base, sizeof t->id_base, "%s", id_base ? id_base : "0");
}

void chat_tools_free(chat_tools *t) {
    api_buf_free(&t->held);
}

/* Length of the longest suffix of s[0,n) that is a proper prefix of tag. */
static size_t partial(const char *s, size_t n, const char *tag) {
    for (size_t k = strlen(tag) - 1; k > 0; k--)
        if (k <= n && !memcmp(s + n - k, tag, k)) return k;
    return 0;
}

/* One block body -> a call object, or NULL when it is not {"name": non-empty string,
 * "arguments": object or string (absent: {})}. */
static cJSON *make_call(chat_tools *t, const char *body, size_t n) {
    cJSON *j = cJSON_ParseWithLength(body, n);
    const cJSON *name = cJSON_GetObjectItemCaseSensitive(j, "name");
    const cJSON *args = cJSON_GetObjectItemCaseSensitive(j, "arguments");
    if (!cJSON_IsObject(j) || !cJSON_IsString(name) || !name->valuestring[0] ||
        (args && !cJSON_IsObject(args) && !cJSON_IsString(args))) {
        cJSON_Delete(j);
        return NULL;
    }
    char id[96], *arg_text = NULL;
    snprintf(id, sizeof id, "call_%s_%d", t->id_base, t->n_calls);
    if (cJSON_IsString(args))
        arg_text = strdup(args->valuestring);
    else
        arg_text = args ? cJSON_PrintUnformatted(args) : strdup("{}");
    cJSON *call = cJSON_CreateObject(), *fn = NULL;
    /* all or nothing: a call that could not be built whole is not returned */
    int ok = arg_text && cJSON_AddStringToObject(call, "id", id) &&
             cJSON_AddStringToObject(call, "type", "function") &&
             (fn = cJSON_AddObjectToObject(call, "function")) &&
             cJSON_AddStringToObject(fn, "name", name->valuestring) &&
             cJSON_AddStringToObject(fn, "arguments", arg_text);
    free(arg_text);
    cJSON_Delete(j);
    if (!ok) {
        cJSON_Delete(call);
        return NULL;
    }
    return call;
}

/* Decide as much of the held text as possible; returns how many bytes were consumed. */
static size_t run(chat_tools *t, api_buf *content, cJSON *calls, int *rc) {
    const char *s = api_buf_str(&t->held);
    size_t n = t->held.n, done = 0;
    while (done < n && !*rc) {
        const char *p = s + done;
        size_t left = n - done;
        if (!t->inside) {
            const char *open = memmem(p, left, OPEN, sizeof OPEN - 1);
            size_t text = open ? (size_t)(open - p) : left - partial(p, left, OPEN);
            *rc = api_buf_append(content, p, text);
            done += text;
            if (!open) break;
            t->inside = 1;
            done += sizeof OPEN - 1;
        } else {
            const char *close = memmem(p, left, CLOSE, sizeof CLOSE - 1);
            if (!close) break;
            cJSON *call = make_call(t, p, (size_t)(close - p));
            if (call && t->max_calls && t->n_calls >= t->max_calls) {
                cJSON_Delete(call); /* beyond parallel_tool_calls' limit: dropped */
            } else if (call) {
                cJSON_AddItemToArray(calls, call);
                t->n_calls++;
            } else { /* not a call after all: give the block back as text */
                *rc = api_buf_puts(content, OPEN);
                if (!*rc) *rc = api_buf_append(content, p, (size_t)(close - p) + sizeof CLOSE - 1);
            }
            t->inside = 0;
            done += (size_t)(close - p) + sizeof CLOSE - 1;
        }
    }
    return done;
}

int chat_tools_feed(chat_tools *t, const char *delta, api_buf *content, cJSON *calls) {
    int rc = api_buf_puts(&t->held, delta);
    if (rc) return rc;
    size_t done = run(t, content, calls, &rc);
    memmove(t->held.s, t->held.s + done, t->held.n - done + 1);
    t->held.n -= done;
    return rc;
}

int chat_tools_flush(chat_tools *t, api_buf *content) {
    int rc = 0;
    if (t->inside) rc = api_buf_puts(content, OPEN);
    if (!rc && t->held.n) rc = api_buf_append(content, t->held.s, t->held.n);
    t->held.n = 0;
    t->inside = 0;
    return rc;
}
