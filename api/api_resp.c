/*
 * api_resp.c — OpenAI response, chunk and error shapes, built with cJSON; the growable string.
 */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include "api/api.h"

/* ---------------------------------------------------------------- api_buf */

int api_buf_append(api_buf *b, const char *s, size_t n) {
    if (rs_grow_bytes(&b->s, &b->cap, b->n + n + 1)) return RS_ENOMEM;
    memcpy(b->s + b->n, s, n);
    b->n += n;
    b->s[b->n] = 0;
    return 0;
}

int api_buf_puts(api_buf *b, const char *s) {
    return api_buf_append(b, s, strlen(s));
}
const char *api_buf_str(const api_buf *b) {
    return b->s ? b->s : "";
}

void api_buf_free(api_buf *b) {
    free(b->s);
    memset(b, 0, sizeof *b);
}

char *api_print(cJSON *j) {
    if (!j) return NULL;
    char *s = cJSON_PrintUnformatted(j);
    cJSON_Delete(j);
    return s;
}

/* ---------------------------------------------------------------- errors */

static cJSON *str_or_null(const char *s) {
    return (s && s[0]) ? cJSON_CreateString(s) : cJSON_CreateNull();
}

char *api_error_json(const api_error *err) {
    cJSON *root = cJSON_CreateObject(), *e = cJSON_AddObjectToObject(root, "error");
    if (!e) {
        cJSON_Delete(root);
        return NULL;
    }
    cJSON_AddStringToObject(e, "message", err->message);
    cJSON_AddStringToObject(e, "type", err->type[0] ? err->type : "invalid_request_error");
    cJSON_AddItemToObject(e, "param", str_or_null(err->param));
    cJSON_AddItemToObject(e, "code", str_or_null(err->code));
    return api_print(root);
}

/* ---------------------------------------------------------------- logprobs */

void api_lp_free(api_lp *lp) {
    free(lp->token);
    for (int i = 0; i < lp->n_top; i++) free(lp->top[i].token);
    memset(lp, 0, sizeof *lp);
}

int api_choice_add_lp(api_choice *c, api_lp *lp) {
    if (c->n_lps == c->cap_lps) {
        int cap = c->cap_lps ? c->cap_lps * 2 : 32;
        api_lp *p = realloc(c->lps, (size_t)cap * sizeof *p);
        if (!p) return RS_ENOMEM;
        c->lps = p;
        c->cap_lps = cap;
    }
    c->lps[c->n_lps++] = *lp;
    memset(lp, 0, sizeof *lp);
    return 0;
}

void api_choice_free(api_choice *c) {
    api_buf_free(&c->content);
    api_buf_free(&c->reasoning);
    for (int i = 0; i < c->n_lps; i++) api_lp_free(&c->lps[i]);
    free(c->lps);
    cJSON_Delete(c->tool_calls);
    memset(c, 0, sizeof *c);
}

/* The UTF-8 bytes of a token as a JSON int array (OpenAI's "bytes"). */
static cJSON *bytes_json(const char *s) {
    cJSON *a = cJSON_CreateArray();
    for (const unsigned char *p = (const unsigned char *)s; a && *p; p++)
        cJSON_AddItemToArray(a, cJSON_CreateNumber(*p));
    return a;
}

static cJSON *chat_lp_entry(const char *token, float logprob) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "token", token);
    cJSON_AddNumberToObject(o, "logprob", logprob);
    cJSON_AddItemToObject(o, "bytes", bytes_json(token));
    return o;
}

/* Chat: {"content": [{token, logprob, bytes, top_logprobs: [...]}]}. */
static cJSON *chat_logprobs(const api_lp *lps, int n) {
    cJSON *o = cJSON_CreateObject(), *content = cJSON_AddArrayToObject(o, "content");
    for (int i = 0; i < n; i++) {
        cJSON *e = chat_lp_entry(lps[i].token, lps[i].logprob);
        cJSON *tops = cJSON_AddArrayToObject(e, "top_logprobs");
        for (int k = 0; k < lps[i].n_top; k++)
            cJSON_AddItemToArray(tops, chat_lp_entry(lps[i].top[k].token, lps[i].top[k].logprob));
        cJSON_AddItemToArray(content, e);
    }
    return o;
}

/* Completions: {"tokens", "token_logprobs", "top_logprobs": [{tok: lp}], "text_offset"}. */
static cJSON *completion_logprobs(const api_lp *lps, int n, size_t offset0) {
    cJSON *o = cJSON_CreateObject();
    cJSON *toks = cJSON_AddArrayToObject(o, "tokens");
    cJSON *lpv = cJSON_AddArrayToObject(o, "token_logprobs");
    cJSON *tops = cJSON_AddArrayToObject(o, "top_logprobs");
    cJSON *offs = cJSON_AddArrayToObject(o, "text_offset");
    size_t off = offset0;
    for (int i = 0; i < n; i++) {
        cJSON_AddItemToArray(toks, cJSON_CreateString(lps[i].token));
        cJSON_AddItemToArray(lpv, cJSON_CreateNumber(lps[i].logprob));
        cJSON *t = cJSON_CreateObject();
        for (int k = 0; k < lps[i].n_top; k++)
            if (!cJSON_GetObjectItemCaseSensitive(t, lps[i].top[k].token))
                cJSON_AddNumberToObject(t, lps[i].top[k].token, lps[i].top[k].logprob);
        cJSON_AddItemToArray(tops, t);
        cJSON_AddItemToArray(offs, cJSON_CreateNumber((double)off));
        off += strlen(lps[i].token);
    }
    return o;
}

/* ---------------------------------------------------------------- whole responses */

cJSON *api_usage_json(const api_usage *u) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "prompt_tokens", u->prompt_tokens);
    cJSON_AddNumberToObject(o, "completion_tokens", u->completion_tokens);
    cJSON_AddNumberToObject(o, "total_tokens", u->prompt_tokens + u->completion_tokens);
    cJSON *d = cJSON_AddObjectToObject(o, "prompt_tokens_details");
    cJSON_AddNumberToObject(d, "cached_tokens", u->cached_tokens);
    return o;
}

static double rate(double n, double ms) {
    return ms > 0 ? n * 1e3 / ms : 0;
}

cJSON *api_timings_json(const api_usage *u) {
    cJSON *o = cJSON_CreateObject();
    int prompt_n = u->prompt_tokens - u->cached_tokens;
    cJSON_AddNumberToObject(o, "cache_n", u->cached_tokens);
    cJSON_AddNumberToObject(o, "prompt_n", prompt_n);
    cJSON_AddNumberToObject(o, "prompt_ms", u->prompt_ms);
    cJSON_AddNumberToObject(o, "prompt_per_token_ms", prompt_n ? u->prompt_ms / prompt_n : 0);
    cJSON_AddNumberToObject(o, "prompt_per_second", rate(prompt_n, u->prompt_ms));
    cJSON_AddNumberToObject(o, "predicted_n", u->completion_tokens);
    cJSON_AddNumberToObject(o, "predicted_ms", u->predicted_ms);
    cJSON_AddNumberToObject(o, "predicted_per_token_ms",
                            u->completion_tokens ? u->predicted_ms / u->completion_tokens : 0);
    cJSON_AddNumberToObject(o, "predicted_per_second", rate(u->completion_tokens, u->predicted_ms));
    return o;
}

char *api_add_timings(char *chunk, const api_usage *u) {
    cJSON *o = chunk ? cJSON_Parse(chunk) : NULL;
    free(chunk);
    if (!o) return NULL;
    cJSON_AddItemToObject(o, "timings", api_timings_json(u));
    return api_print(o);
}

static cJSON *envelope(const api_meta *m, const char *object) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "id", m->id);
    cJSON_AddStringToObject(o, "object", object);
    cJSON_AddNumberToObject(o, "created", (double)m->created);
    cJSON_AddStringToObject(o, "model", m->model);
    cJSON_AddStringToObject(o, "system_fingerprint", m->fingerprint ? m->fingerprint : "");
    return o;
}

static cJSON *finish_json(const char *finish) {
    return str_or_null(finish);
}

static int blank(const char *s) {
    while (*s && isspace((unsigned char)*s)) s++;
    return !*s;
}

char *api_chat_response(const api_meta *m, const api_choice *choices, int n, int logprobs,
                        const api_usage *u) {
    cJSON *o = envelope(m, "chat.completion"), *arr = cJSON_AddArrayToObject(o, "choices");
    for (int i = 0; i < n; i++) {
        const api_choice *c = &choices[i];
        cJSON *ch = cJSON_CreateObject(), *msg = cJSON_CreateObject();
        cJSON_AddNumberToObject(ch, "index", i);
        int calls = cJSON_GetArraySize(c->tool_calls) > 0;
        cJSON_AddStringToObject(msg, "role", "assistant");
        /* With tool calls, whitespace around the blocks is not an answer: content is null. */
        if (calls && blank(api_buf_str(&c->content)))
            cJSON_AddNullToObject(msg, "content");
        else
            cJSON_AddStringToObject(msg, "content", api_buf_str(&c->content));
        if (calls) cJSON_AddItemToObject(msg, "tool_calls", cJSON_Duplicate(c->tool_calls, 1));
        if (c->reasoning.n) cJSON_AddStringToObject(msg, "reasoning_content", c->reasoning.s);
        cJSON_AddItemToObject(ch, "message", msg);
        cJSON_AddItemToObject(ch, "logprobs",
                              logprobs ? chat_logprobs(c->lps, c->n_lps) : cJSON_CreateNull());
        cJSON_AddItemToObject(ch, "finish_reason", finish_json(c->finish_reason));
        cJSON_AddItemToArray(arr, ch);
    }
    cJSON_AddItemToObject(o, "usage", api_usage_json(u));
    if (u->timed) cJSON_AddItemToObject(o, "timings", api_timings_json(u));
    return api_print(o);
}

char *api_completion_response(const api_meta *m, const api_choice *choices, int n, int logprobs,
                              const api_usage *u) {
    cJSON *o = envelope(m, "text_completion"), *arr = cJSON_AddArrayToObject(o, "choices");
    for (int i = 0; i < n; i++) {
        const api_choice *c = &choices[i];
        cJSON *ch = cJSON_CreateObject();
        cJSON_AddNumberToObject(ch, "index", i);
        cJSON_AddStringToObject(ch, "text", api_buf_str(&c->content));
        cJSON_AddItemToObject(ch, "logprobs",
                              logprobs ? completion_logprobs(c->lps, c->n_lps, c->text_offset)
                                       : cJSON_CreateNull());
        cJSON_AddItemToObject(ch, "finish_reason", finish_json(c->finish_reason));
        cJSON_AddItemToArray(arr, ch);
    }
    cJSON_AddItemToObject(o, "usage", api_usage_json(u));
    if (u->timed) cJSON_AddItemToObject(o, "timings", api_timings_json(u));
    return api_print(o);
}

/* ---------------------------------------------------------------- streaming chunks */

static cJSON *chunk_envelope(const api_meta *m, const char *object, cJSON **choices,
                             int with_usage_null) {
    cJSON *o = envelope(m, object);
    *choices = cJSON_AddArrayToObject(o, "choices");
    if (with_usage_null) cJSON_AddNullToObject(o, "usage");
    return o;
}

char *api_chat_chunk(const api_meta *m, int index, const char *role, const char *content,
                     const char *reasoning, const api_lp *lps, int n_lps, const char *finish,
                     int with_usage_null) {
    cJSON *arr, *o = chunk_envelope(m, "chat.completion.chunk", &arr, with_usage_null);
    cJSON *ch = cJSON_CreateObject(), *delta = cJSON_AddObjectToObject(ch, "delta");
    cJSON_AddNumberToObject(ch, "index", index);
    if (role) cJSON_AddStringToObject(delta, "role", role);
    if (content) cJSON_AddStringToObject(delta, "content", content);
    if (reasoning) cJSON_AddStringToObject(delta, "reasoning_content", reasoning);
    cJSON_AddItemToObject(ch, "logprobs", n_lps ? chat_logprobs(lps, n_lps) : cJSON_CreateNull());
    cJSON_AddItemToObject(ch, "finish_reason", finish_json(finish));
    cJSON_AddItemToArray(arr, ch);
    return api_print(o);
}

char *api_chat_tool_chunk(const api_meta *m, int index, const cJSON *call, int call_index,
                          int first, int with_usage_null) {
    cJSON *arr, *o = chunk_envelope(m, "chat.completion.chunk", &arr, with_usage_null);
    cJSON *ch = cJSON_CreateObject(), *delta = cJSON_AddObjectToObject(ch, "delta");
    cJSON *tc = cJSON_AddArrayToObject(delta, "tool_calls"), *d = cJSON_CreateObject();
    const cJSON *fn = cJSON_GetObjectItemCaseSensitive(call, "function");
    const cJSON *id = cJSON_GetObjectItemCaseSensitive(call, "id");
    const cJSON *name = cJSON_GetObjectItemCaseSensitive(fn, "name");
    const cJSON *args = cJSON_GetObjectItemCaseSensitive(fn, "arguments");
    cJSON_AddNumberToObject(ch, "index", index);
    cJSON_AddNumberToObject(d, "index", call_index);
    if (first) {
        cJSON_AddStringToObject(d, "id", cJSON_IsString(id) ? id->valuestring : "");
        cJSON_AddStringToObject(d, "type", "function");
    }
    cJSON *dfn = cJSON_AddObjectToObject(d, "function");
    if (first) cJSON_AddStringToObject(dfn, "name", cJSON_IsString(name) ? name->valuestring : "");
    cJSON_AddStringToObject(dfn, "arguments",
                            !first && cJSON_IsString(args) ? args->valuestring : "");
    cJSON_AddItemToArray(tc, d);
    cJSON_AddNullToObject(ch, "logprobs");
    cJSON_AddNullToObject(ch, "finish_reason");
    cJSON_AddItemToArray(arr, ch);
    /* all or nothing: a chunk missing a part is not sent */
    if (!dfn || !cJSON_GetObjectItemCaseSensitive(dfn, "arguments") || !tc ||
        !cJSON_GetObjectItemCaseSensitive(ch, "finish_reason")) {
        cJSON_Delete(o);
        return NULL;
    }
    return api_print(o);
}

char *api_completion_chunk(const api_meta *m, int index, const char *text, const api_lp *lps,
                           int n_lps, size_t offset, const char *finish, int with_usage_null) {
    cJSON *arr, *o = chunk_envelope(m, "text_completion", &arr, with_usage_null);
    cJSON *ch = cJSON_CreateObject();
    cJSON_AddNumberToObject(ch, "index", index);
    cJSON_AddStringToObject(ch, "text", text ? text : "");
    cJSON_AddItemToObject(ch, "logprobs",
                          n_lps ? completion_logprobs(lps, n_lps, offset) : cJSON_CreateNull());
    cJSON_AddItemToObject(ch, "finish_reason", finish_json(finish));
    cJSON_AddItemToArray(arr, ch);
    return api_print(o);
}

char *api_usage_chunk(const api_meta *m, int chat, const api_usage *u) {
    cJSON *arr, *o = chunk_envelope(m, chat ? "chat.completion.chunk" : "text_completion", &arr, 0);
    cJSON_AddItemToObject(o, "usage", api_usage_json(u));
    if (u->timed) cJSON_AddItemToObject(o, "timings", api_timings_json(u));
    return api_print(o);
}
