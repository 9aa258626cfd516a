/*
 * api_parse.c — OpenAI request bodies into typed structs. Every rejection names the field in the
 * message and in `param`, so a client sees exactly what to fix.
 */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/api.h"

#define INVALID "invalid_request_error"

int api_errorf(api_error *err, int status, const char *type, const char *param, const char *code,
               const char *fmt, ...) {
    va_list ap;
    char msg[2 * sizeof err->message];
    if (!err) return status >= 500 ? RS_EIO : RS_EINVAL;
    err->status = status;
    snprintf(err->type, sizeof err->type, "%s", type ? type : INVALID);
    snprintf(err->code, sizeof err->code, "%s", code ? code : "");
    /* The message and param may carry client text (a model name, a role, a URL, a JSON key):
     * both end up valid UTF-8, cut on a character boundary, whatever was passed in. */
    rs_utf8_clip(err->param, sizeof err->param, param ? param : "");
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    rs_utf8_clip(err->message, sizeof err->message, msg);
    return status >= 500 ? RS_EIO : RS_EINVAL;
}

/* ---------------------------------------------------------------- field readers */

/* A present, non-null field, or NULL. */
static const cJSON *field(const cJSON *obj, const char *name) {
    const cJSON *f = cJSON_GetObjectItemCaseSensitive(obj, name);
    return (f && !cJSON_IsNull(f)) ? f : NULL;
}

static int bad_type(api_error *err, const char *name, const char *what) {
    return api_errorf(err, 400, INVALID, name, "invalid_type", "'%s' must be %s", name, what);
}

/* A number as people write it: whole values as integers (2147483647, not "2.14748e+09"). */
static void fmt_num(char *out, size_t n, double v) {
    if (v == floor(v) && fabs(v) < 1e18)
        snprintf(out, n, "%.0f", v);
    else
        snprintf(out, n, "%.9g", v);
}

static int out_of_range(api_error *err, const char *name, double v, double lo, double hi) {
    char a[32], b[32], c[32];
    fmt_num(a, sizeof a, lo);
    fmt_num(b, sizeof b, hi);
    fmt_num(c, sizeof c, v);
    return api_errorf(err, 400, INVALID, name, "invalid_value",
                      "'%s' must be between %s and %s (got %s)", name, a, b, c);
}

static int is_integer(const cJSON *f) {
    return cJSON_IsNumber(f) && f->valuedouble == floor(f->valuedouble) &&
           fabs(f->valuedouble) < 9.2e18;
}

/* The number `name` if present, checked to be within [lo, hi] (and whole when `integer`).
 * Returns the field, or NULL when it is absent or wrong (then *rc says which). */
static const cJSON *ranged(const cJSON *obj, const char *name, double lo, double hi, int integer,
                           int *rc, api_error *err) {
    const cJSON *f = field(obj, name);
    *rc = 0;
    if (!f) return NULL;
    if (integer ? !is_integer(f) : !cJSON_IsNumber(f))
        *rc = bad_type(err, name, integer ? "an integer" : "a number");
    else if (!(f->valuedouble >= lo && f->valuedouble <= hi))
        *rc = out_of_range(err, name, f->valuedouble, lo, hi);
    return *rc ? NULL : f;
}

static int get_num(const cJSON *obj, const char *name, double lo, double hi, float *out,
                   api_error *err) {
    int rc;
    const cJSON *f = ranged(obj, name, lo, hi, 0, &rc, err);
    if (f) *out = (float)f->valuedouble;
    return rc;
}

static int get_int(const cJSON *obj, const char *name, double lo, double hi, int *out,
                   api_error *err) {
    int rc;
    const cJSON *f = ranged(obj, name, lo, hi, 1, &rc, err);
    if (f) *out = (int)f->valuedouble;
    return rc;
}

static int get_bool(const cJSON *obj, const char *name, int *out, api_error *err) {
    const cJSON *f = field(obj, name);
    if (!f) return 0;
    if (!cJSON_IsBool(f)) return bad_type(err, name, "a boolean");
    *out = cJSON_IsTrue(f);
    return 0;
}

static int oom(api_error *err) {
    return api_errorf(err, 500, "server_error", NULL, NULL, "out of memory");
}

static int dup_str(const char *s, char **out, api_error *err) {
    *out = strdup(s);
    if (!*out) return oom(err);
    return 0;
}

static int get_str(const cJSON *obj, const char *name, char **out, api_error *err) {
    const cJSON *f = field(obj, name);
    if (!f) return 0;
    if (!cJSON_IsString(f)) return bad_type(err, name, "a string");
    return dup_str(f->valuestring, out, err);
}

/* ---------------------------------------------------------------- shared generation fields */

static int parse_stop(const cJSON *root, api_gen *g, api_error *err) {
    const cJSON *f = field(root, "stop"), *it;
    if (!f) return 0;
    if (cJSON_IsString(f)) {
        if (!f->valuestring[0]) return 0; /* "" stops nothing */
        g->n_stop = 1;
        return dup_str(f->valuestring, &g->stop[0], err);
    }
    if (!cJSON_IsArray(f)) return bad_type(err, "stop", "a string or an array of strings");
    if (cJSON_GetArraySize(f) > API_MAX_STOP)
        return api_errorf(err, 400, INVALID, "stop", "invalid_value",
                          "'stop' may hold at most %d strings", API_MAX_STOP);
    cJSON_ArrayForEach(it, f) {
        if (!cJSON_IsString(it)) return bad_type(err, "stop", "a string or an array of strings");
        if (!it->valuestring[0]) continue;
        if (dup_str(it->valuestring, &g->stop[g->n_stop], err)) return RS_EINVAL;
        g->n_stop++;
    }
    return 0;
}

static int parse_logit_bias(const cJSON *root, api_gen *g, api_error *err) {
    const cJSON *f = field(root, "logit_bias"), *it;
    if (!f) return 0;
    if (!cJSON_IsObject(f)) return bad_type(err, "logit_bias", "an object of token id -> bias");
    int n = cJSON_GetArraySize(f);
    if (n == 0) return 0;
    g->bias = calloc((size_t)n, sizeof *g->bias);
    if (!g->bias) return oom(err);
    cJSON_ArrayForEach(it, f) {
        char *end;
        long id = strtol(it->string, &end, 10);
        if (!it->string[0] || *end || id < 0 || id > INT32_MAX)
            return api_errorf(err, 400, INVALID, "logit_bias", "invalid_value",
                              "'logit_bias' keys must be token ids (got \"%s\")",
                              RS_CLIP(it->string, 48));
        if (!cJSON_IsNumber(it)) return bad_type(err, "logit_bias", "an object of numbers");
        if (!(it->valuedouble >= -100 && it->valuedouble <= 100))
            return out_of_range(err, "logit_bias", it->valuedouble, -100, 100);
        g->bias[g->n_bias].token = (int32_t)id;
        g->bias[g->n_bias].bias = (float)it->valuedouble;
        g->n_bias++;
    }
    return 0;
}

static int parse_seed(const cJSON *root, api_gen *g, api_error *err) {
    const cJSON *f = field(root, "seed");
    if (!f) return 0;
    if (!is_integer(f)) return bad_type(err, "seed", "an integer");
    g->has_seed = 1;
    g->seed = (uint64_t)(int64_t)f->valuedouble;
    return 0;
}

static int parse_stream(const cJSON *root, api_gen *g, api_error *err) {
    const cJSON *so = field(root, "stream_options");
    if (get_bool(root, "stream", &g->stream, err)) return RS_EINVAL;
    if (!so) return 0;
    if (!cJSON_IsObject(so)) return bad_type(err, "stream_options", "an object");
    const cJSON *iu = field(so, "include_usage");
    if (iu && !cJSON_IsBool(iu)) return bad_type(err, "stream_options.include_usage", "a boolean");
    g->include_usage = cJSON_IsTrue(iu);
    return 0;
}

/* A schema compiled for response_format; a refused keyword is a 400 naming it. */
static int compile_format(const cJSON *schema, const char *param, api_gen *g, api_error *err) {
    rs_err e = {0};
    int rc = schema ? gr_compile_schema(&g->grammar, schema, &e)
                    : gr_compile_json_object(&g->grammar, &e);
    if (rc == RS_ENOMEM) return oom(err);
    if (rc) return api_errorf(err, 400, INVALID, param, "invalid_schema", "%s: %s", param, e.msg);
    return 0;
}

/* response_format: {"type":"text"} (none), {"type":"json_object"} (any object; llama.cpp's
 * "schema" beside it is a schema), {"type":"json_schema","json_schema":{"name","schema",
 * "strict"}}. */
static int parse_response_format(const cJSON *root, api_gen *g, api_error *err) {
    const cJSON *f = field(root, "response_format");
    if (!f) return 0;
    if (!cJSON_IsObject(f)) return bad_type(err, "response_format", "an object");
    const cJSON *t = field(f, "type");
    if (!cJSON_IsString(t)) return bad_type(err, "response_format.type", "a string");
    if (!strcmp(t->valuestring, "text")) return 0;
    if (!strcmp(t->valuestring, "json_object")) {
        const cJSON *sch = field(f, "schema");
        if (sch && !cJSON_IsObject(sch) && !cJSON_IsBool(sch))
            return bad_type(err, "response_format.schema", "an object");
        return compile_format(sch, "response_format.schema", g, err);
    }
    if (strcmp(t->valuestring, "json_schema"))
        return api_errorf(err, 400, INVALID, "response_format.type", "invalid_value",
                          "response_format type '%s' is not one of 'text', 'json_object', "
                          "'json_schema'",
                          RS_CLIP(t->valuestring, 40));
    const cJSON *js = field(f, "json_schema");
    if (!cJSON_IsObject(js)) return bad_type(err, "response_format.json_schema", "an object");
    const cJSON *name = field(js, "name"), *strict = field(js, "strict"),
                *sch = field(js, "schema");
    if (name && !cJSON_IsString(name))
        return bad_type(err, "response_format.json_schema.name", "a string");
    if (strict && !cJSON_IsBool(strict))
        return bad_type(err, "response_format.json_schema.strict", "a boolean");
    if (!sch)
        return api_errorf(err, 400, INVALID, "response_format.json_schema.schema", "missing_field",
                          "'response_format.json_schema.schema' is required");
    if (!cJSON_IsObject(sch) && !cJSON_IsBool(sch))
        return bad_type(err, "response_format.json_schema.schema", "an object");
    return compile_format(sch, "response_format.json_schema.schema", g, err);
}

/* Completion tokens asked for: max_completion_tokens wins over the older max_tokens. */
static int parse_max_tokens(const cJSON *root, api_gen *g, api_error *err) {
    if (get_int(root, "max_tokens", 1, INT32_MAX, &g->max_tokens, err)) return RS_EINVAL;
    return get_int(root, "max_completion_tokens", 1, INT32_MAX, &g->max_tokens, err);
}

static int parse_gen(const cJSON *root, api_gen *g, int chat, api_error *err) {
    memset(g, 0, sizeof *g);
    g->max_tokens = -1;
    g->temperature = g->top_p = g->min_p = g->repetition_penalty = NAN;
    g->top_k = -2;
    g->n = 1;
    if (get_str(root, "model", &g->model, err) || parse_max_tokens(root, g, err) ||
        get_num(root, "temperature", 0, 2, &g->temperature, err) ||
        get_num(root, "top_p", 1e-9, 1, &g->top_p, err) ||
        get_int(root, "top_k", -1, INT32_MAX, &g->top_k, err) ||
        get_num(root, "min_p", 0, 1, &g->min_p, err) ||
        get_num(root, "repetition_penalty", 1e-6, 2, &g->repetition_penalty, err) ||
        get_num(root, "presence_penalty", -2, 2, &g->presence_penalty, err) ||
        get_num(root, "frequency_penalty", -2, 2, &g->frequency_penalty, err) ||
        parse_seed(root, g, err) || parse_stop(root, g, err) ||
        get_int(root, "n", 1, API_MAX_N, &g->n, err) || parse_logit_bias(root, g, err) ||
        parse_stream(root, g, err) || get_bool(root, "ignore_eos", &g->ignore_eos, err) ||
        get_str(root, "cache_salt", &g->cache_salt, err) || parse_response_format(root, g, err))
        return RS_EINVAL;
    /* user and prompt_cache_key (OpenAI's routing hint) are checked and not kept: this server
     * holds one cache, so neither changes what is cached or found (cache_salt does); a balancer
     * in front may route on prompt_cache_key (deploy/haproxy/). */
    const cJSON *user = field(root, "user"), *pck = field(root, "prompt_cache_key");
    if (user && !cJSON_IsString(user)) return bad_type(err, "user", "a string");
    if (pck && !cJSON_IsString(pck)) return bad_type(err, "prompt_cache_key", "a string");
    if (chat) {
        if (get_bool(root, "logprobs", &g->logprobs, err) ||
            get_int(root, "top_logprobs", 0, API_MAX_TOP_LOGPROBS, &g->top_logprobs, err))
            return RS_EINVAL;
        if (g->top_logprobs > 0 && !g->logprobs)
            return api_errorf(err, 400, INVALID, "top_logprobs", "invalid_value",
                              "'top_logprobs' needs 'logprobs': true");
    } else {
        /* The legacy completions API: logprobs is the number of alternatives (0 included). */
        const cJSON *lp = field(root, "logprobs");
        if (lp) {
            if (get_int(root, "logprobs", 0, API_MAX_TOP_LOGPROBS, &g->top_logprobs, err))
                return RS_EINVAL;
            g->logprobs = 1;
        }
    }
    return 0;
}

static void gen_free(api_gen *g) {
    free(g->model);
    for (int i = 0; i < g->n_stop; i++) free(g->stop[i]);
    free(g->bias);
    free(g->cache_salt);
    gr_free(g->grammar);
    memset(g, 0, sizeof *g);
}

/* ---------------------------------------------------------------- messages and template input */

/* Content as a string (c is an array): an array of {"type":"text","text":...} parts joined by "\n".
 * Other part types (images, audio) are rejected: this server reads text only. */
static int content_string(const cJSON *c, const char *name, api_buf *out, api_error *err) {
    const cJSON *part;
    int first = 1;
    cJSON_ArrayForEach(part, c) {
        const cJSON *type = cJSON_IsObject(part) ? field(part, "type") : NULL;
        const cJSON *text = cJSON_IsObject(part) ? field(part, "text") : NULL;
        if (!cJSON_IsString(type) || strcmp(type->valuestring, "text") != 0 ||
            !cJSON_IsString(text))
            return api_errorf(err, 400, INVALID, name, "invalid_value",
                              "'%s' parts must be {\"type\": \"text\", \"text\": string}%s%s%s",
                              name, cJSON_IsString(type) ? " (got \"" : "",
                              RS_CLIP(cJSON_IsString(type) ? type->valuestring : "", 48),
                              cJSON_IsString(type) ? "\")" : "");
        if ((!first && api_buf_puts(out, "\n")) || api_buf_puts(out, text->valuestring))
            return oom(err);
        first = 0;
    }
    return 0;
}

/* Message i's content, when an array of parts, replaced by the joined string. */
static int join_content(cJSON *m, int i, api_error *err) {
    char name[48];
    const cJSON *content = field(m, "content");
    if (!cJSON_IsArray(content)) return 0;
    snprintf(name, sizeof name, "messages[%d].content", i);
    api_buf joined = {0};
    int rc = content_string(content, name, &joined, err);
    if (!rc && !cJSON_ReplaceItemInObjectCaseSensitive(m, "content",
                                                       cJSON_CreateString(api_buf_str(&joined))))
        rc = oom(err);
    api_buf_free(&joined);
    return rc;
}

int api_join_content(cJSON *messages, api_error *err) {
    int i = 0;
    cJSON *m;
    if (!cJSON_IsArray(messages)) return bad_type(err, "messages", "an array");
    cJSON_ArrayForEach(m, messages) {
        if (cJSON_IsObject(m) && join_content(m, i, err)) return RS_EINVAL;
        i++;
    }
    return 0;
}

static int valid_role(const char *r) {
    static const char *roles[] = {"system", "developer", "user", "assistant", "tool", "function"};
    for (size_t i = 0; i < sizeof roles / sizeof roles[0]; i++)
        if (!strcmp(r, roles[i])) return 1;
    return 0;
}

/* A copy of message i with its content as a plain string. */
static int normalize_message(const cJSON *m, int i, cJSON **out, api_error *err) {
    char name[48];
    snprintf(name, sizeof name, "messages[%d]", i);
    if (!cJSON_IsObject(m)) return bad_type(err, name, "an object");
    const cJSON *role = field(m, "role");
    snprintf(name, sizeof name, "messages[%d].role", i);
    if (!cJSON_IsString(role)) return bad_type(err, name, "a string");
    if (!valid_role(role->valuestring))
        return api_errorf(err, 400, INVALID, name, "invalid_value",
                          "'%s' must be system, developer, user, assistant or tool (got "
                          "'%s')",
                          name, RS_CLIP(role->valuestring, 40));
    const cJSON *content = field(m, "content");
    snprintf(name, sizeof name, "messages[%d].content", i);
    if (content && !cJSON_IsString(content) && !cJSON_IsArray(content))
        return bad_type(err, name, "a string or an array of text parts");
    cJSON *copy = cJSON_Duplicate(m, 1);
    if (!copy) return oom(err);
    if (join_content(copy, i, err)) {
        cJSON_Delete(copy);
        return RS_EINVAL;
    }
    *out = copy;
    return 0;
}

/* Copy `name` from root into tpl when present, checking its JSON type. */
static int copy_typed(const cJSON *root, cJSON *tpl, const char *name, int (*is)(const cJSON *),
                      const char *what, api_error *err) {
    const cJSON *f = field(root, name);
    if (!f) return 0;
    if (!is(f)) return bad_type(err, name, what);
    cJSON *d = cJSON_Duplicate(f, 1);
    if (!d || !cJSON_AddItemToObject(tpl, name, d)) {
        cJSON_Delete(d);
        return oom(err);
    }
    return 0;
}

static int is_array(const cJSON *f) {
    return cJSON_IsArray(f);
}
static int is_object(const cJSON *f) {
    return cJSON_IsObject(f);
}
static int is_bool(const cJSON *f) {
    return cJSON_IsBool(f);
}
static int is_choice(const cJSON *f) {
    return cJSON_IsString(f) || cJSON_IsObject(f);
}

/* Build the template input {messages, tools, tool_choice, parallel_tool_calls,
 * add_generation_prompt, chat_template_kwargs} from a request holding "messages". */
static int build_tpl(const cJSON *root, cJSON **out, api_error *err) {
    const cJSON *msgs = field(root, "messages"), *m;
    if (!msgs)
        return api_errorf(err, 400, INVALID, "messages", "missing_field", "'messages' is required");
    if (!cJSON_IsArray(msgs)) return bad_type(err, "messages", "an array");
    if (cJSON_GetArraySize(msgs) == 0)
        return api_errorf(err, 400, INVALID, "messages", "invalid_value",
                          "'messages' must not be empty");
    cJSON *tpl = cJSON_CreateObject(), *arr = cJSON_AddArrayToObject(tpl, "messages");
    if (!tpl || !arr) goto nomem;
    int i = 0, rc = 0;
    cJSON_ArrayForEach(m, msgs) {
        cJSON *copy = NULL;
        if ((rc = normalize_message(m, i++, &copy, err))) goto fail;
        cJSON_AddItemToArray(arr, copy);
    }
    int add_gen = 1;
    if ((rc = get_bool(root, "add_generation_prompt", &add_gen, err))) goto fail;
    if (!cJSON_AddBoolToObject(tpl, "add_generation_prompt", add_gen)) goto nomem;
    if ((rc = copy_typed(root, tpl, "tools", is_array, "an array", err)) ||
        (rc = copy_typed(root, tpl, "tool_choice", is_choice, "a string or an object", err)) ||
        (rc = copy_typed(root, tpl, "parallel_tool_calls", is_bool, "a boolean", err)) ||
        (rc = copy_typed(root, tpl, "chat_template_kwargs", is_object, "an object", err)))
        goto fail;
    int thinking;
    const cJSON *kw = field(tpl, "chat_template_kwargs");
    if (kw && (rc = get_bool(kw, "enable_thinking", &thinking, err))) {
        snprintf(err->param, sizeof err->param, "chat_template_kwargs.enable_thinking");
        goto fail;
    }
    *out = tpl;
    return 0;
nomem:
    rc = oom(err);
fail:
    cJSON_Delete(tpl);
    return rc;
}

/* ---------------------------------------------------------------- entry points */

#define UTF8_PATH_MAX 128 /* a field's path in an error ("messages[3].content"), cut beyond */

static int bad_utf8(api_error *err, const char *path, int key, size_t at) {
    if (!key)
        return api_errorf(err, 400, INVALID, path, "invalid_encoding",
                          "'%s' is not valid UTF-8 (byte %zu)", path, at);
    return api_errorf(err, 400, INVALID, path[0] ? path : NULL, "invalid_encoding",
                      "%s%s%s has a key that is not valid UTF-8 (byte %zu)", path[0] ? "'" : "",
                      path[0] ? path : "the body", path[0] ? "'" : "", at);
}

/* Every string of the body, values and keys, is UTF-8: checked once here for all fields, so
 * nothing parsed later (a stop string, a prompt, a model name echoed in an error) can put an
 * invalid byte into an answer. path[0..at) names v ("" for the root); depth is bounded by
 * cJSON's nesting limit. */
static int utf8_walk(const cJSON *v, char *path, size_t at, api_error *err) {
    const cJSON *c;
    int i = 0;
    if (cJSON_IsString(v)) {
        size_t n = strlen(v->valuestring), bad = rs_utf8_check(v->valuestring, n);
        if (bad != n) return bad_utf8(err, path, 0, bad);
    }
    cJSON_ArrayForEach(c, v) {
        int w;
        if (cJSON_IsObject(v)) {
            size_t n = strlen(c->string), bad = rs_utf8_check(c->string, n);
            if (bad != n) return bad_utf8(err, path, 1, bad);
            w = snprintf(path + at, UTF8_PATH_MAX - at, "%s%s", at ? "." : "", c->string);
        } else {
            w = snprintf(path + at, UTF8_PATH_MAX - at, "[%d]", i++);
        }
        size_t next = at + (size_t)w < UTF8_PATH_MAX ? at + (size_t)w : UTF8_PATH_MAX - 1;
        if (utf8_walk(c, path, next, err)) return RS_EINVAL;
        path[at] = 0;
    }
    return 0;
}

int api_parse_object(const char *body, size_t len, cJSON **root, api_error *err) {
    const char *end = NULL;
    *root = cJSON_ParseWithLengthOpts(body, len, &end, 0);
    if (!*root) {
        size_t at = end && end >= body ? (size_t)(end - body) : 0;
        return api_errorf(err, 400, INVALID, NULL, "invalid_json",
                          "the body is not valid JSON (error near byte %zu)", at);
    }
    while (end && end < body + len && strchr(" \t\r\n", *end) && *end) end++;
    if (end && end < body + len) {
        cJSON_Delete(*root);
        *root = NULL;
        return api_errorf(err, 400, INVALID, NULL, "invalid_json",
                          "the body has text after the JSON value (at byte %zu)",
                          (size_t)(end - body));
    }
    char path[UTF8_PATH_MAX] = "";
    if (!cJSON_IsObject(*root) || utf8_walk(*root, path, 0, err)) {
        if (!cJSON_IsObject(*root))
            api_errorf(err, 400, INVALID, NULL, "invalid_json", "the body must be a JSON object");
        cJSON_Delete(*root);
        *root = NULL;
        return RS_EINVAL;
    }
    return 0;
}

int api_parse_chat(const char *body, size_t len, api_chat_request *out, api_error *err) {
    cJSON *root;
    memset(out, 0, sizeof *out);
    if (api_parse_object(body, len, &root, err)) return RS_EINVAL;
    int rc = parse_gen(root, &out->gen, 1, err);
    if (!rc) rc = build_tpl(root, &out->tpl, err);
    cJSON_Delete(root);
    if (rc) api_chat_request_free(out);
    return rc ? RS_EINVAL : 0;
}

void api_chat_request_free(api_chat_request *r) {
    gen_free(&r->gen);
    cJSON_Delete(r->tpl);
    memset(r, 0, sizeof *r);
}

/* A token-id array: every element an integer id >= 0. */
static int parse_ids(const cJSON *arr, const char *name, int32_t **ids, int *n, api_error *err) {
    const cJSON *it;
    int count = cJSON_GetArraySize(arr), i = 0;
    if (count == 0)
        return api_errorf(err, 400, INVALID, name, "invalid_value", "'%s' must not be empty", name);
    *ids = malloc((size_t)count * sizeof **ids);
    if (!*ids) return oom(err);
    cJSON_ArrayForEach(it, arr) {
        if (!is_integer(it) || it->valuedouble < 0 || it->valuedouble > INT32_MAX) {
            free(*ids);
            *ids = NULL;
            return api_errorf(err, 400, INVALID, name, "invalid_value",
                              "'%s' must be an array of token ids (non-negative integers)", name);
        }
        (*ids)[i++] = (int32_t)it->valuedouble;
    }
    *n = count;
    return 0;
}

/* One prompt: a string or a token-id array. */
static int parse_one_prompt(const cJSON *p, const char *name, api_prompt *out, api_error *err) {
    if (cJSON_IsString(p)) return dup_str(p->valuestring, &out->text, err);
    if (!cJSON_IsArray(p) || cJSON_IsArray(p->child) || cJSON_IsString(p->child))
        return bad_type(err, name,
                        "a string, an array of token ids, or an array of strings or id arrays");
    return parse_ids(p, name, &out->ids, &out->n_ids, err);
}

int api_parse_prompts(const cJSON *p, const char *name, int per, int max, api_prompt **out, int *n,
                      api_error *err) {
    const cJSON *it;
    *out = NULL;
    *n = 0;
    if (!p) return api_errorf(err, 400, INVALID, name, "missing_field", "'%s' is required", name);
    int batch = cJSON_IsArray(p) && (cJSON_IsString(p->child) || cJSON_IsArray(p->child));
    int count = batch ? cJSON_GetArraySize(p) : 1;
    if (count * per > max && per > 1)
        return api_errorf(err, 400, INVALID, name, "invalid_value",
                          "%d prompts x n = %d gives %d choices; at most %d per request", count,
                          per, count * per, max);
    if (count > max)
        return api_errorf(err, 400, INVALID, name, "invalid_value",
                          "'%s' has %d entries; at most %d per request", name, count, max);
    if (!(*out = calloc((size_t)count, sizeof **out))) return oom(err);
    if (!batch) return *n = 1, parse_one_prompt(p, name, &(*out)[0], err);
    cJSON_ArrayForEach(it, p) {
        if (parse_one_prompt(it, name, &(*out)[(*n)++], err)) return RS_EINVAL;
    }
    return 0;
}

void api_prompts_free(api_prompt *p, int n) {
    for (int i = 0; i < n; i++) {
        free(p[i].text);
        free(p[i].ids);
    }
    free(p);
}

/* prompt: a string, a token-id array, or a batch: an array of strings or of id arrays. */
static int parse_prompt(const cJSON *root, api_completion_request *r, api_error *err) {
    return api_parse_prompts(field(root, "prompt"), "prompt", r->gen.n, API_MAX_CHOICES,
                             &r->prompts, &r->n_prompts, err);
}

int api_parse_completion(const char *body, size_t len, api_completion_request *out,
                         api_error *err) {
    cJSON *root;
    memset(out, 0, sizeof *out);
    if (api_parse_object(body, len, &root, err)) return RS_EINVAL;
    int rc = parse_gen(root, &out->gen, 0, err);
    if (!rc) rc = parse_prompt(root, out, err);
    if (!rc) rc = get_bool(root, "echo", &out->echo, err);
    if (!rc && field(root, "suffix"))
        rc = api_errorf(err, 400, INVALID, "suffix", "unsupported_value",
                        "'suffix' is not supported");
    cJSON_Delete(root);
    if (rc) api_completion_request_free(out);
    return rc ? RS_EINVAL : 0;
}

void api_completion_request_free(api_completion_request *r) {
    gen_free(&r->gen);
    api_prompts_free(r->prompts, r->n_prompts);
    memset(r, 0, sizeof *r);
}

int api_parse_tokenize(const char *body, size_t len, api_tokenize_request *out, api_error *err) {
    cJSON *root;
    int rc = 0;
    memset(out, 0, sizeof *out);
    if (api_parse_object(body, len, &root, err)) return RS_EINVAL;
    if (field(root, "messages")) {
        rc = build_tpl(root, &out->tpl, err);
        out->add_special = 0;
    } else if (field(root, "prompt") || field(root, "content")) {
        /* vLLM names the text "prompt", llama.cpp "content". */
        rc = get_str(root, field(root, "prompt") ? "prompt" : "content", &out->prompt, err);
        out->add_special = 1;
    } else {
        rc = api_errorf(err, 400, INVALID, "prompt", "missing_field",
                        "'prompt' or 'content' (text), or 'messages', is required");
    }
    if (!rc) rc = get_bool(root, "add_special_tokens", &out->add_special, err);
    if (!rc) rc = get_bool(root, "with_pieces", &out->with_pieces, err);
    cJSON_Delete(root);
    if (rc) api_tokenize_request_free(out);
    return rc ? RS_EINVAL : 0;
}

void api_tokenize_request_free(api_tokenize_request *r) {
    free(r->prompt);
    cJSON_Delete(r->tpl);
    memset(r, 0, sizeof *r);
}

int api_parse_detokenize(const char *body, size_t len, int32_t **ids, int *n, api_error *err) {
    cJSON *root;
    *ids = NULL;
    *n = 0;
    if (api_parse_object(body, len, &root, err)) return RS_EINVAL;
    const cJSON *t = field(root, "tokens");
    int rc;
    if (!t)
        rc = api_errorf(err, 400, INVALID, "tokens", "missing_field", "'tokens' is required");
    else if (!cJSON_IsArray(t))
        rc = bad_type(err, "tokens", "an array of token ids");
    else
        rc = parse_ids(t, "tokens", ids, n, err);
    cJSON_Delete(root);
    return rc ? RS_EINVAL : 0;
}

/* ---------------------------------------------------------------- LoRA adapter routes */

/* A required, non-empty string field into *out (owned). */
static int need_str(const cJSON *root, const char *name, char **out, api_error *err) {
    if (get_str(root, name, out, err)) return RS_EINVAL;
    if (!*out || !**out)
        return api_errorf(err, 400, INVALID, name, "missing_field",
                          "'%s' is required (a non-empty string)", name);
    return 0;
}

int api_parse_lora(const char *body, size_t len, int need_path, api_lora_request *out,
                   api_error *err) {
    cJSON *root;
    *out = (api_lora_request){0};
    if (api_parse_object(body, len, &root, err)) return RS_EINVAL;
    int rc = need_str(root, "lora_name", &out->name, err);
    if (!rc)
        rc = need_path ? need_str(root, "lora_path", &out->path, err)
                       : get_str(root, "lora_path", &out->path, err);
    cJSON_Delete(root);
    if (rc) api_lora_request_free(out);
    return rc ? RS_EINVAL : 0;
}

void api_lora_request_free(api_lora_request *r) {
    free(r->name);
    free(r->path);
    *r = (api_lora_request){0};
}
