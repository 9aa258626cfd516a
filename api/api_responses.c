/*
 * api_responses.c — OpenAI's Responses API over the chat path. A /v1/responses body is
 * converted into a Chat Completions body (input items -> messages, instructions -> a leading
 * system message, function tools -> chat tools, max_output_tokens -> max_completion_tokens) and
 * parsed by api_parse_chat, so every check and the template rendering are the chat path's. The
 * output side, api_rstream, turns the chat path's split text (reasoning, content, tool calls)
 * into Responses output items and, when streaming, the Responses event sequence.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/api.h"

#define INVALID "invalid_request_error"

static const cJSON *present(const cJSON *o, const char *name) {
    const cJSON *f = cJSON_GetObjectItemCaseSensitive(o, name);
    return f && !cJSON_IsNull(f) ? f : NULL;
}

static int oom(api_error *err) {
    return api_errorf(err, 500, "server_error", NULL, NULL, "out of memory");
}

static int unsupported(api_error *err, const char *param, const char *what) {
    return api_errorf(err, 400, INVALID, param, "unsupported_value", "%s is not supported", what);
}

/* ---------------------------------------------------------------- input items -> messages */

/* Content: a string, or parts of type input_text / output_text / text / refusal joined by
 * "\n" (images and files: a 400, this server reads text). */
static int content_text(const cJSON *c, const char *param, api_buf *out, api_error *err) {
    const cJSON *part;
    if (cJSON_IsString(c)) return api_buf_puts(out, c->valuestring) ? oom(err) : 0;
    if (!cJSON_IsArray(c))
        return api_errorf(err, 400, INVALID, param, "invalid_type",
                          "'%s' must be a string or an array of text parts", param);
    int first = 1;
    cJSON_ArrayForEach(part, c) {
        const cJSON *type = present(part, "type"), *text = present(part, "text");
        if (!cJSON_IsString(type)) return unsupported(err, param, "a content part without a type");
        const char *t = type->valuestring;
        if (!strcmp(t, "refusal")) text = present(part, "refusal");
        if (strcmp(t, "input_text") && strcmp(t, "output_text") && strcmp(t, "text") &&
            strcmp(t, "refusal"))
            return api_errorf(err, 400, INVALID, param, "unsupported_value",
                              "content part type '%s' is not supported (text only)",
                              RS_CLIP(t, 48));
        if (!cJSON_IsString(text))
            return api_errorf(err, 400, INVALID, param, "invalid_type",
                              "a '%s' part needs a string 'text'", RS_CLIP(t, 48));
        if ((!first && api_buf_puts(out, "\n")) || api_buf_puts(out, text->valuestring))
            return oom(err);
        first = 0;
    }
    return 0;
}

static int add_message(cJSON *msgs, const char *role, const char *content) {
    cJSON *m = cJSON_CreateObject();
    if (!m || !cJSON_AddStringToObject(m, "role", role) ||
        !cJSON_AddStringToObject(m, "content", content)) {
        cJSON_Delete(m);
        return RS_ENOMEM;
    }
    cJSON_AddItemToArray(msgs, m);
    return 0;
}

static int message_item(const cJSON *it, cJSON *msgs, const char *param, api_error *err) {
    const cJSON *role = present(it, "role");
    if (!cJSON_IsString(role))
        return api_errorf(err, 400, INVALID, param, "invalid_type", "'%s' needs a 'role'", param);
    static const char *roles[] = {"user", "system", "developer", "assistant"};
    int known = 0;
    for (size_t i = 0; i < sizeof roles / sizeof roles[0]; i++)
        known |= !strcmp(role->valuestring, roles[i]);
    if (!known)
        return api_errorf(err, 400, INVALID, param, "invalid_value",
                          "'%s.role' must be user, system, developer or assistant", param);
    api_buf text = {0};
    int rc = content_text(present(it, "content"), param, &text, err);
    if (!rc && add_message(msgs, role->valuestring, api_buf_str(&text))) rc = oom(err);
    api_buf_free(&text);
    return rc;
}

/* A function_call item joins the assistant message just before it (one turn calling several
 * tools), or starts one. */
static int call_item(const cJSON *it, cJSON *msgs, const char *param, api_error *err) {
    const cJSON *id = present(it, "call_id"), *name = present(it, "name");
    const cJSON *args = present(it, "arguments");
    if (!cJSON_IsString(id) || !cJSON_IsString(name) || !cJSON_IsString(args))
        return api_errorf(err, 400, INVALID, param, "invalid_type",
                          "a function_call item needs string 'call_id', 'name' and 'arguments'");
    cJSON *last = cJSON_GetArrayItem(msgs, cJSON_GetArraySize(msgs) - 1);
    const cJSON *lrole = present(last, "role");
    if (!cJSON_IsString(lrole) || strcmp(lrole->valuestring, "assistant")) {
        if (add_message(msgs, "assistant", "")) return oom(err);
        last = cJSON_GetArrayItem(msgs, cJSON_GetArraySize(msgs) - 1);
    }
    cJSON *calls = cJSON_GetObjectItemCaseSensitive(last, "tool_calls");
    if (!calls) calls = cJSON_AddArrayToObject(last, "tool_calls");
    cJSON *c = cJSON_CreateObject(), *f = cJSON_CreateObject();
    if (!calls || !c || !f) {
        cJSON_Delete(c);
        cJSON_Delete(f);
        return oom(err);
    }
    cJSON_AddStringToObject(c, "id", id->valuestring);
    cJSON_AddStringToObject(c, "type", "function");
    cJSON_AddStringToObject(f, "name", name->valuestring);
    cJSON_AddStringToObject(f, "arguments", args->valuestring);
    cJSON_AddItemToObject(c, "function", f);
    cJSON_AddItemToArray(calls, c);
    return 0;
}

static int output_item(const cJSON *it, cJSON *msgs, const char *param, api_error *err) {
    const cJSON *id = present(it, "call_id"), *out = present(it, "output");
    if (!cJSON_IsString(id) || !out)
        return api_errorf(err, 400, INVALID, param, "invalid_type",
                          "a function_call_output item needs a string 'call_id' and an 'output'");
    api_buf text = {0};
    int rc = content_text(out, param, &text, err);
    cJSON *m = rc ? NULL : cJSON_CreateObject();
    if (!rc && (!m || !cJSON_AddStringToObject(m, "role", "tool") ||
                !cJSON_AddStringToObject(m, "tool_call_id", id->valuestring) ||
                !cJSON_AddStringToObject(m, "content", api_buf_str(&text)))) {
        cJSON_Delete(m);
        rc = oom(err);
    } else if (!rc) {
        cJSON_AddItemToArray(msgs, m);
    }
    api_buf_free(&text);
    return rc;
}

/* input: a string (one user message) or an array of items, appended to msgs as chat messages. */
static int input_messages(const cJSON *input, cJSON *msgs, api_error *err) {
    const cJSON *it;
    if (!input)
        return api_errorf(err, 400, INVALID, "input", "missing_field", "'input' is required");
    if (cJSON_IsString(input)) return add_message(msgs, "user", input->valuestring) ? oom(err) : 0;
    if (!cJSON_IsArray(input))
        return api_errorf(err, 400, INVALID, "input", "invalid_type",
                          "'input' must be a string or an array of items");
    int i = 0;
    cJSON_ArrayForEach(it, input) {
        char param[32];
        snprintf(param, sizeof param, "input[%d]", i++);
        const cJSON *type = present(it, "type");
        const char *t = cJSON_IsString(type) ? type->valuestring : "message";
        int rc;
        if (!cJSON_IsObject(it))
            rc = api_errorf(err, 400, INVALID, param, "invalid_type", "'%s' must be an object",
                            param);
        else if (!strcmp(t, "message"))
            rc = message_item(it, msgs, param, err);
        else if (!strcmp(t, "function_call"))
            rc = call_item(it, msgs, param, err);
        else if (!strcmp(t, "function_call_output"))
            rc = output_item(it, msgs, param, err);
        else if (!strcmp(t, "reasoning"))
            rc = 0; /* earlier reasoning: the template drops it from history anyway */
        else
            rc = api_errorf(err, 400, INVALID, param, "unsupported_value",
                            "input item type '%s' is not supported", RS_CLIP(t, 48));
        if (rc) return rc;
    }
    return 0;
}

/* ---------------------------------------------------------------- tools */

/* Responses function tools {type, name, description, parameters} -> chat tools. */
static int convert_tools(const cJSON *tools, cJSON *chat, api_error *err) {
    const cJSON *t;
    if (!tools) return 0;
    if (!cJSON_IsArray(tools))
        return api_errorf(err, 400, INVALID, "tools", "invalid_type", "'tools' must be an array");
    cJSON *out = cJSON_AddArrayToObject(chat, "tools");
    if (!out) return oom(err);
    cJSON_ArrayForEach(t, tools) {
        const cJSON *type = present(t, "type"), *name = present(t, "name");
        if (!cJSON_IsString(type) || strcmp(type->valuestring, "function"))
            return unsupported(err, "tools", "a tool other than {\"type\": \"function\"}");
        if (!cJSON_IsString(name))
            return api_errorf(err, 400, INVALID, "tools", "invalid_type",
                              "a function tool needs a string 'name'");
        cJSON *c = cJSON_CreateObject(), *f = cJSON_AddObjectToObject(c, "function");
        if (!c || !f) {
            cJSON_Delete(c);
            return oom(err);
        }
        cJSON_AddStringToObject(c, "type", "function");
        static const char *keys[] = {"name", "description", "parameters", "strict"};
        for (size_t k = 0; k < sizeof keys / sizeof keys[0]; k++) {
            const cJSON *v = present(t, keys[k]);
            if (v) cJSON_AddItemToObject(f, keys[k], cJSON_Duplicate(v, 1));
        }
        cJSON_AddItemToArray(out, c);
    }
    return 0;
}

/* tool_choice: "auto" / "none" / "required" as is; {"type": "function", "name"} -> chat's. */
static int convert_tool_choice(const cJSON *tc, cJSON *chat, api_error *err) {
    if (!tc) return 0;
    if (cJSON_IsString(tc)) {
        cJSON_AddStringToObject(chat, "tool_choice", tc->valuestring);
        return 0;
    }
    const cJSON *type = present(tc, "type"), *name = present(tc, "name");
    if (!cJSON_IsString(type) || strcmp(type->valuestring, "function") || !cJSON_IsString(name))
        return unsupported(err, "tool_choice", "a tool_choice other than a string or a function");
    cJSON *c = cJSON_AddObjectToObject(chat, "tool_choice");
    cJSON_AddStringToObject(c, "type", "function");
    cJSON_AddStringToObject(cJSON_AddObjectToObject(c, "function"), "name", name->valuestring);
    return 0;
}

/* ---------------------------------------------------------------- the request */

/* Fields that mean the same in both APIs (the sampling extensions included). */
static const char *SAME[] = {"model",
                             "temperature",
                             "top_p",
                             "stream",
                             "user",
                             "seed",
                             "top_k",
                             "min_p",
                             "repetition_penalty",
                             "cache_salt",
                             "prompt_cache_key",
                             "presence_penalty",
                             "frequency_penalty",
                             "ignore_eos",
                             "chat_template_kwargs",
                             "logit_bias",
                             "stop",
                             "parallel_tool_calls"};

/* Fields the response object repeats. */
static const char *ECHO[] = {"instructions",
                             "max_output_tokens",
                             "temperature",
                             "top_p",
                             "tools",
                             "tool_choice",
                             "metadata",
                             "previous_response_id",
                             "parallel_tool_calls",
                             "reasoning",
                             "text",
                             "user"};

static int check_unsupported(const cJSON *root, api_error *err) {
    const cJSON *bg = present(root, "background"), *text = present(root, "text");
    if (cJSON_IsTrue(bg)) return unsupported(err, "background", "'background': true");
    const cJSON *fmt = present(text, "format"), *ft = present(fmt, "type");
    if (fmt && (!cJSON_IsString(ft) || strcmp(ft->valuestring, "text")))
        return api_errorf(err, 400, INVALID, "text.format", "unsupported_value",
                          "text.format other than {\"type\": \"text\"} is not supported yet");
    const cJSON *store = present(root, "store");
    if (store && !cJSON_IsBool(store))
        return api_errorf(err, 400, INVALID, "store", "invalid_type", "'store' must be a boolean");
    return 0;
}

/* The conversation so far: the stored one of previous_response_id, then this input. */
static int conversation(const cJSON *root, api_prev_lookup lookup, void *ctx, cJSON **out,
                        api_error *err) {
    const cJSON *prev = present(root, "previous_response_id");
    *out = NULL;
    if (prev && !cJSON_IsString(prev))
        return api_errorf(err, 400, INVALID, "previous_response_id", "invalid_type",
                          "'previous_response_id' must be a string");
    cJSON *msgs = prev && lookup ? lookup(ctx, prev->valuestring) : NULL;
    if (prev && !msgs)
        return api_errorf(err, 404, INVALID, "previous_response_id", "previous_response_not_found",
                          "Previous response with id '%s' not found (responses are kept in "
                          "memory, a bounded number of them, and only with store: true)",
                          RS_CLIP(prev->valuestring, 104));
    if (!msgs && !(msgs = cJSON_CreateArray())) return oom(err);
    int rc = input_messages(present(root, "input"), msgs, err);
    if (rc) {
        cJSON_Delete(msgs);
        return rc;
    }
    *out = msgs;
    return 0;
}

/* The chat body: same-named fields, max_output_tokens, tools, instructions + conversation. */
static int chat_body(const cJSON *root, const cJSON *conv, cJSON **out, api_error *err) {
    cJSON *chat = cJSON_CreateObject(), *msgs = cJSON_AddArrayToObject(chat, "messages");
    int rc = chat && msgs ? 0 : oom(err);
    const cJSON *instr = present(root, "instructions"), *v, *m;
    for (size_t i = 0; !rc && i < sizeof SAME / sizeof SAME[0]; i++)
        if ((v = present(root, SAME[i])))
            cJSON_AddItemToObject(chat, SAME[i], cJSON_Duplicate(v, 1));
    if (!rc && (v = present(root, "max_output_tokens")))
        cJSON_AddItemToObject(chat, "max_completion_tokens", cJSON_Duplicate(v, 1));
    const cJSON *effort = present(present(root, "reasoning"), "effort");
    if (!rc && cJSON_IsString(effort) && !strcmp(effort->valuestring, "none") &&
        !present(root, "chat_template_kwargs"))
        cJSON_AddBoolToObject(cJSON_AddObjectToObject(chat, "chat_template_kwargs"),
                              "enable_thinking", 0);
    if (!rc && instr && !cJSON_IsString(instr))
        rc = api_errorf(err, 400, INVALID, "instructions", "invalid_type",
                        "'instructions' must be a string");
    if (!rc && instr && add_message(msgs, "system", instr->valuestring)) rc = oom(err);
    cJSON_ArrayForEach(m, conv) {
        if (!rc) cJSON_AddItemToArray(msgs, cJSON_Duplicate(m, 1));
    }
    if (!rc) rc = convert_tools(present(root, "tools"), chat, err);
    if (!rc) rc = convert_tool_choice(present(root, "tool_choice"), chat, err);
    if (rc) {
        cJSON_Delete(chat);
        return rc;
    }
    *out = chat;
    return 0;
}

/* A chat field named in an error, as the Responses request calls it (param and message). */
static void rename_param(api_error *err) {
    static const char FROM[] = "max_completion_tokens", TO[] = "max_output_tokens";
    char *at = strstr(err->message, FROM);
    if (!strcmp(err->param, FROM)) snprintf(err->param, sizeof err->param, "%s", TO);
    if (!strncmp(err->param, "messages", 8)) snprintf(err->param, sizeof err->param, "input");
    if (at) {
        char rest[sizeof err->message];
        snprintf(rest, sizeof rest, "%s", at + strlen(FROM));
        snprintf(at, sizeof err->message - (size_t)(at - err->message), "%s%s", TO, rest);
    }
}

static cJSON *echo_fields(const cJSON *root) {
    cJSON *o = cJSON_CreateObject();
    for (size_t i = 0; o && i < sizeof ECHO / sizeof ECHO[0]; i++) {
        const cJSON *v = present(root, ECHO[i]);
        cJSON_AddItemToObject(o, ECHO[i], v ? cJSON_Duplicate(v, 1) : cJSON_CreateNull());
    }
    return o;
}

int api_parse_responses(const char *body, size_t len, api_prev_lookup lookup, void *ctx,
                        api_responses_request *out, api_error *err) {
    cJSON *root, *chat = NULL;
    memset(out, 0, sizeof *out);
    if (api_parse_object(body, len, &root, err)) return RS_EINVAL;
    int rc = check_unsupported(root, err);
    if (!rc) rc = conversation(root, lookup, ctx, &out->conversation, err);
    if (!rc) rc = chat_body(root, out->conversation, &chat, err);
    char *text = rc ? NULL : cJSON_PrintUnformatted(chat);
    if (!rc && !text) rc = oom(err);
    if (!rc && (rc = api_parse_chat(text, strlen(text), &out->chat, err))) rename_param(err);
    out->store = !cJSON_IsFalse(present(root, "store"));
    if (!rc && !(out->echo = echo_fields(root))) rc = oom(err);
    free(text);
    cJSON_Delete(chat);
    cJSON_Delete(root);
    if (rc) api_responses_request_free(out);
    return rc ? (rc == RS_EIO ? RS_EIO : RS_EINVAL) : 0;
}

void api_responses_request_free(api_responses_request *r) {
    api_chat_request_free(&r->chat);
    cJSON_Delete(r->conversation);
    cJSON_Delete(r->echo);
    memset(r, 0, sizeof *r);
}

/* ---------------------------------------------------------------- the output */

void api_rs_init(api_rstream *rs, const char *id, long long created, const char *model,
                 cJSON *echo) {
    memset(rs, 0, sizeof *rs);
    snprintf(rs->id, sizeof rs->id, "%s", id);
    rs->created = created;
    rs->model = model;
    rs->echo = echo;
    rs->output = cJSON_CreateArray();
    rs->calls = cJSON_CreateArray();
}

void api_rs_free(api_rstream *rs) {
    cJSON_Delete(rs->echo);
    cJSON_Delete(rs->output);
    cJSON_Delete(rs->calls);
    api_buf_free(&rs->text);
    api_buf_free(&rs->all_text);
    api_buf_free(&rs->all_reasoning);
    memset(rs, 0, sizeof *rs);
}

/* One event: "event: TYPE" and "data: {type, sequence_number, ...}" (o is consumed). */
static void event(api_rstream *rs, api_buf *sse, const char *type, cJSON *o) {
    if (!sse || !o) {
        cJSON_Delete(o);
        return;
    }
    cJSON_AddStringToObject(o, "type", type);
    cJSON_AddNumberToObject(o, "sequence_number", rs->seq++);
    char *s = api_print(o);
    if (!s) return;
    api_buf_puts(sse, "event: ");
    api_buf_puts(sse, type);
    api_buf_puts(sse, "\ndata: ");
    api_buf_puts(sse, s);
    api_buf_puts(sse, "\n\n");
    free(s);
}

static cJSON *usage_json(const api_usage *u) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "input_tokens", u->prompt_tokens);
    cJSON_AddNumberToObject(cJSON_AddObjectToObject(o, "input_tokens_details"), "cached_tokens",
                            u->cached_tokens);
    cJSON_AddNumberToObject(o, "output_tokens", u->completion_tokens);
    cJSON_AddNumberToObject(cJSON_AddObjectToObject(o, "output_tokens_details"), "reasoning_tokens",
                            0);
    cJSON_AddNumberToObject(o, "total_tokens", u->prompt_tokens + u->completion_tokens);
    return o;
}

/* The response object; finish NULL: still in progress. */
static cJSON *response_json(const api_rstream *rs, const char *finish, const api_usage *u) {
    cJSON *o = cJSON_CreateObject(), *f;
    int incomplete = finish && !strcmp(finish, "length");
    cJSON_AddStringToObject(o, "id", rs->id);
    cJSON_AddStringToObject(o, "object", "response");
    cJSON_AddNumberToObject(o, "created_at", (double)rs->created);
    cJSON_AddStringToObject(o, "status",
                            !finish      ? "in_progress"
                            : incomplete ? "incomplete"
                                         : "completed");
    cJSON_AddNullToObject(o, "error");
    if (incomplete)
        cJSON_AddStringToObject(cJSON_AddObjectToObject(o, "incomplete_details"), "reason",
                                "max_output_tokens");
    else
        cJSON_AddNullToObject(o, "incomplete_details");
    cJSON_AddStringToObject(o, "model", rs->model);
    cJSON_AddItemToObject(o, "output",
                          finish ? cJSON_Duplicate(rs->output, 1) : cJSON_CreateArray());
    cJSON_ArrayForEach(f, rs->echo) cJSON_AddItemToObject(o, f->string, cJSON_Duplicate(f, 1));
    cJSON_AddBoolToObject(o, "store", rs->store);
    cJSON_AddStringToObject(o, "truncation", "disabled");
    cJSON *tools = cJSON_GetObjectItemCaseSensitive(o, "tools");
    if (cJSON_IsNull(tools)) cJSON_ReplaceItemInObject(o, "tools", cJSON_CreateArray());
    cJSON *tc = cJSON_GetObjectItemCaseSensitive(o, "tool_choice");
    if (cJSON_IsNull(tc)) cJSON_ReplaceItemInObject(o, "tool_choice", cJSON_CreateString("auto"));
    cJSON *text = cJSON_GetObjectItemCaseSensitive(o, "text");
    if (cJSON_IsNull(text)) {
        cJSON *t = cJSON_CreateObject();
        cJSON_AddStringToObject(cJSON_AddObjectToObject(t, "format"), "type", "text");
        cJSON_ReplaceItemInObject(o, "text", t);
    }
    cJSON_AddItemToObject(o, "usage", finish && u ? usage_json(u) : cJSON_CreateNull());
    return o;
}

static cJSON *with_response(const api_rstream *rs, const char *finish, const api_usage *u) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddItemToObject(o, "response", response_json(rs, finish, u));
    return o;
}

void api_rs_start(api_rstream *rs, api_buf *sse) {
    event(rs, sse, "response.created", with_response(rs, NULL, NULL));
    event(rs, sse, "response.in_progress", with_response(rs, NULL, NULL));
}

static cJSON *text_part(const char *type, const char *text) {
    cJSON *p = cJSON_CreateObject();
    cJSON_AddStringToObject(p, "type", type);
    cJSON_AddStringToObject(p, "text", text);
    if (!strcmp(type, "output_text")) cJSON_AddArrayToObject(p, "annotations");
    return p;
}

/* The open item (reasoning or message) as an output item; done: with its text. */
static cJSON *open_item(const api_rstream *rs, int done) {
    cJSON *it = cJSON_CreateObject();
    int msg = rs->open == 2;
    cJSON_AddStringToObject(it, "id", rs->item_id);
    cJSON_AddStringToObject(it, "type", msg ? "message" : "reasoning");
    cJSON_AddStringToObject(it, "status", done ? "completed" : "in_progress");
    if (msg) cJSON_AddStringToObject(it, "role", "assistant");
    if (!msg) cJSON_AddArrayToObject(it, "summary");
    cJSON *content = cJSON_AddArrayToObject(it, "content");
    if (done)
        cJSON_AddItemToArray(
            content, text_part(msg ? "output_text" : "reasoning_text", api_buf_str(&rs->text)));
    return it;
}

static cJSON *item_ref(const api_rstream *rs) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "item_id", rs->item_id);
    cJSON_AddNumberToObject(o, "output_index", rs->n_out);
    return o;
}

static void close_item(api_rstream *rs, api_buf *sse) {
    if (!rs->open) return;
    int msg = rs->open == 2;
    cJSON *d = item_ref(rs);
    cJSON_AddNumberToObject(d, "content_index", 0);
    cJSON_AddStringToObject(d, "text", api_buf_str(&rs->text));
    if (msg) cJSON_AddArrayToObject(d, "logprobs");
    event(rs, sse, msg ? "response.output_text.done" : "response.reasoning_text.done", d);
    if (msg) {
        cJSON *p = item_ref(rs);
        cJSON_AddNumberToObject(p, "content_index", 0);
        cJSON_AddItemToObject(p, "part", text_part("output_text", api_buf_str(&rs->text)));
        event(rs, sse, "response.content_part.done", p);
    }
    cJSON *item = open_item(rs, 1);
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "output_index", rs->n_out);
    cJSON_AddItemToObject(o, "item", cJSON_Duplicate(item, 1));
    event(rs, sse, "response.output_item.done", o);
    cJSON_AddItemToArray(rs->output, item);
    rs->n_out++;
    rs->open = 0;
    rs->text.n = 0;
    if (rs->text.s) rs->text.s[0] = 0;
}

static void open_new(api_rstream *rs, int kind, api_buf *sse) {
    close_item(rs, sse);
    rs->open = kind;
    snprintf(rs->item_id, sizeof rs->item_id, "%s_%s_%d", kind == 2 ? "msg" : "rs",
             rs->id + strlen("resp_"), rs->n_out);
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "output_index", rs->n_out);
    cJSON_AddItemToObject(o, "item", open_item(rs, 0));
    event(rs, sse, "response.output_item.added", o);
    if (kind == 2) {
        cJSON *p = item_ref(rs);
        cJSON_AddNumberToObject(p, "content_index", 0);
        cJSON_AddItemToObject(p, "part", text_part("output_text", ""));
        event(rs, sse, "response.content_part.added", p);
    }
}

static void text_delta(api_rstream *rs, int kind, const char *delta, api_buf *sse) {
    if (!delta[0]) return;
    if (rs->open != kind) open_new(rs, kind, sse);
    api_buf_puts(&rs->text, delta);
    api_buf_puts(kind == 2 ? &rs->all_text : &rs->all_reasoning, delta);
    cJSON *d = item_ref(rs);
    cJSON_AddNumberToObject(d, "content_index", 0);
    cJSON_AddStringToObject(d, "delta", delta);
    if (kind == 2) cJSON_AddArrayToObject(d, "logprobs");
    event(rs, sse, kind == 2 ? "response.output_text.delta" : "response.reasoning_text.delta", d);
}

/* A chat tool call {id, type, function: {name, arguments}} as a function_call item. */
static void call_out(api_rstream *rs, const cJSON *call, api_buf *sse) {
    const cJSON *fn = cJSON_GetObjectItemCaseSensitive(call, "function");
    const char *args = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(fn, "arguments"));
    const char *name = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(fn, "name"));
    const char *cid = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(call, "id"));
    close_item(rs, sse);
    snprintf(rs->item_id, sizeof rs->item_id, "fc_%s_%d", rs->id + strlen("resp_"), rs->n_out);
    cJSON *it = cJSON_CreateObject();
    cJSON_AddStringToObject(it, "id", rs->item_id);
    cJSON_AddStringToObject(it, "type", "function_call");
    cJSON_AddStringToObject(it, "status", "in_progress");
    cJSON_AddStringToObject(it, "call_id", cid ? cid : "");
    cJSON_AddStringToObject(it, "name", name ? name : "");
    cJSON_AddStringToObject(it, "arguments", "");
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "output_index", rs->n_out);
    cJSON_AddItemToObject(o, "item", cJSON_Duplicate(it, 1));
    event(rs, sse, "response.output_item.added", o);
    cJSON *d = item_ref(rs);
    cJSON_AddStringToObject(d, "delta", args ? args : "");
    event(rs, sse, "response.function_call_arguments.delta", d);
    d = item_ref(rs);
    cJSON_AddStringToObject(d, "name", name ? name : "");
    cJSON_AddStringToObject(d, "arguments", args ? args : "");
    event(rs, sse, "response.function_call_arguments.done", d);
    cJSON_ReplaceItemInObject(it, "arguments", cJSON_CreateString(args ? args : ""));
    cJSON_ReplaceItemInObject(it, "status", cJSON_CreateString("completed"));
    o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "output_index", rs->n_out);
    cJSON_AddItemToObject(o, "item", cJSON_Duplicate(it, 1));
    event(rs, sse, "response.output_item.done", o);
    cJSON_AddItemToArray(rs->output, it);
    cJSON_AddItemToArray(rs->calls, cJSON_Duplicate(call, 1));
    rs->n_out++;
}

void api_rs_feed(api_rstream *rs, const char *reasoning, const char *content, const cJSON *calls,
                 api_buf *sse) {
    const cJSON *c;
    text_delta(rs, 1, reasoning ? reasoning : "", sse);
    text_delta(rs, 2, content ? content : "", sse);
    cJSON_ArrayForEach(c, calls) call_out(rs, c, sse);
}

void api_rs_end(api_rstream *rs, const char *finish, const api_usage *u, api_buf *sse) {
    close_item(rs, sse);
    int incomplete = finish && !strcmp(finish, "length");
    event(rs, sse, incomplete ? "response.incomplete" : "response.completed",
          with_response(rs, finish ? finish : "stop", u));
}

char *api_rs_response(const api_rstream *rs, const char *finish, const api_usage *u) {
    return api_print(response_json(rs, finish ? finish : "stop", u));
}

void api_rs_error(api_rstream *rs, const api_error *e, api_buf *sse) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "code", e->code[0] ? e->code : e->type);
    cJSON_AddStringToObject(o, "message", e->message);
    if (e->param[0])
        cJSON_AddStringToObject(o, "param", e->param);
    else
        cJSON_AddNullToObject(o, "param");
    event(rs, sse, "error", o);
}

cJSON *api_rs_assistant(const api_rstream *rs) {
    cJSON *m = cJSON_CreateObject();
    cJSON_AddStringToObject(m, "role", "assistant");
    cJSON_AddStringToObject(m, "content", api_buf_str(&rs->all_text));
    if (rs->all_reasoning.n)
        cJSON_AddStringToObject(m, "reasoning_content", api_buf_str(&rs->all_reasoning));
    if (cJSON_GetArraySize(rs->calls))
        cJSON_AddItemToObject(m, "tool_calls", cJSON_Duplicate(rs->calls, 1));
    return m;
}
