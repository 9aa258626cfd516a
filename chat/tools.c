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

/* ---------------------------------------------------------------- forced tool calls */

static int tool_err(api_error *err, const char *param, const char *fmt, const char *what) {
    return api_errorf(err, 400, "invalid_request_error", param, "invalid_value", fmt, what);
}

/* The tools' names and parameters (only `only` when it is not NULL). */
static int collect_tools(const cJSON *tools, const char *only, gr_tool *out, int *n,
                         api_error *err) {
    const cJSON *t;
    int i = 0;
    *n = 0;
    cJSON_ArrayForEach(t, tools) {
        char param[64];
        snprintf(param, sizeof param, "tools[%d].function", i++);
        const cJSON *fn = cJSON_GetObjectItemCaseSensitive(t, "function");
        const cJSON *name = cJSON_GetObjectItemCaseSensitive(fn, "name");
        const cJSON *par = cJSON_GetObjectItemCaseSensitive(fn, "parameters");
        if (!cJSON_IsObject(fn) || !cJSON_IsString(name))
            return tool_err(err, param, "'%s' must be an object with a string 'name'", param);
        if (par && !cJSON_IsNull(par) && !cJSON_IsObject(par))
            return tool_err(err, param, "'%s.parameters' must be an object", param);
        if (only && strcmp(only, name->valuestring)) continue;
        out[(*n)++] = (gr_tool){name->valuestring, cJSON_IsObject(par) ? par : NULL};
    }
    return 0;
}

int chat_tool_grammar(const chat_format *f, api_chat_request *r, api_error *err) {
    const char *open = f ? f->tool.open : NULL, *close = f ? f->tool.close : NULL;
    const cJSON *par = cJSON_GetObjectItemCaseSensitive(r->tpl, "parallel_tool_calls");
    const cJSON *tc = cJSON_GetObjectItemCaseSensitive(r->tpl, "tool_choice");
    const cJSON *tools = cJSON_GetObjectItemCaseSensitive(r->tpl, "tools");
    const char *only = NULL;
    if (!tc || cJSON_IsNull(tc)) return 0;
    if (cJSON_IsString(tc)) {
        if (!strcmp(tc->valuestring, "auto") || !strcmp(tc->valuestring, "none")) return 0;
        if (strcmp(tc->valuestring, "required"))
            return tool_err(err, "tool_choice",
                            "tool_choice '%.40s' is not one of 'none', 'auto', 'required'",
                            tc->valuestring);
    } else {
        const cJSON *fn = cJSON_GetObjectItemCaseSensitive(tc, "function");
        const cJSON *name = cJSON_GetObjectItemCaseSensitive(fn, "name");
        if (!cJSON_IsString(name))
            return tool_err(err, "tool_choice.function.name", "'%s' must be a string",
                            "tool_choice.function.name");
        only = name->valuestring;
    }
    int n = cJSON_GetArraySize(tools);
    if (n == 0) return tool_err(err, "tool_choice", "'%s' needs 'tools'", "tool_choice");
    if (r->gen.grammar)
        return tool_err(err, "tool_choice", "a forced tool call cannot be combined with %s",
                        "response_format");
    if (!open || !close)
        return tool_err(err, "tool_choice", "this model's chat format has no tool-call %s",
                        "markers");
    gr_tool *list = calloc((size_t)n, sizeof *list);
    if (!list) return api_errorf(err, 500, "server_error", NULL, NULL, "out of memory");
    int m = 0, rc = collect_tools(tools, only, list, &m, err);
    if (!rc && m == 0)
        rc = tool_err(err, "tool_choice.function.name", "no tool is named '%.64s'", only);
    rs_err e = {0};
    if (!rc && (rc = gr_compile_tools(&r->gen.grammar, list, m, open, close,
                                      !cJSON_IsFalse(par) && !only, &e)))
        rc = rc == RS_ENOMEM ? api_errorf(err, 500, "server_error", NULL, NULL, "out of memory")
                             : tool_err(err, "tools", "%s", e.msg);
    free(list);
    return rc ? RS_EINVAL : 0;
}
