/*
 * test_chat.c — the chat room's format and readers: the chat_format built at load for the Qwen3
 * tokenizer (markers as strings and token ids, capabilities) and for stories260K (none), the
 * <think> splitter and the <tool_call> extractor at every cut point, a chat_reader fed random
 * deltas against the same text fed whole (valid, malformed and several calls; tool_choice none;
 * parallel_tool_calls false), and the OpenAI tool-call stream fragments.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chat/chat.h"
#include "tests/tap.h"

static char root[1024];

static const char *model(const char *name) {
    static char path[1200];
    snprintf(path, sizeof path, "%s/models/%s", root, name);
    return path;
}

/* Feed `text` to the splitter cut at position `cut` and check the two outputs. */
static int split_ok(const char *text, size_t cut, int inside, const char *want_r,
                    const char *want_c) {
    chat_think t;
    api_buf r = {0}, c = {0};
    char a[256];
    chat_think_init(&t, 1, inside);
    snprintf(a, sizeof a, "%.*s", (int)cut, text);
    chat_think_feed(&t, a, &r, &c);
    chat_think_feed(&t, text + cut, &r, &c);
    chat_think_flush(&t, &r, &c);
    int ok = !strcmp(api_buf_str(&r), want_r) && !strcmp(api_buf_str(&c), want_c);
    if (!ok)
        TAP_DIAG("cut %zu: reasoning '%s' content '%s'", cut, api_buf_str(&r), api_buf_str(&c));
    chat_think_free(&t);
    api_buf_free(&r);
    api_buf_free(&c);
    return ok;
}

static void test_think(void) {
    const char *t1 = "<think>\nI ponder.\n</think>\n\nThe answer.";
    int all = 1;
    for (size_t cut = 0; cut <= strlen(t1); cut++)
        all &= split_ok(t1, cut, 0, "I ponder.\n", "The answer.");
    TAP_OK(all, "think split at every cut");
    const char *t2 = "No tags < here </thin";
    all = 1;
    for (size_t cut = 0; cut <= strlen(t2); cut++) all &= split_ok(t2, cut, 0, "", t2);
    TAP_OK(all, "text without <think> is all content");
    const char *t3 = "still thinking</think>done";
    all = 1;
    for (size_t cut = 0; cut <= strlen(t3); cut++)
        all &= split_ok(t3, cut, 1, "still thinking", "done");
    TAP_OK(all, "prompt that opened <think>: text up to </think> is reasoning");
    TAP_OK(split_ok("<think>unfinished", 3, 0, "unfinished", ""), "unterminated reasoning");
}

/* Feed `text` to a tool-call extractor cut at `cut`; return the content, count the calls. */
static int tools_ok(const char *text, size_t cut, const char *want_content, int want_calls,
                    const char *want_args) {
    chat_tools t;
    api_buf c = {0};
    cJSON *calls = cJSON_CreateArray();
    char a[512];
    chat_tools_init(&t, "x", 0);
    snprintf(a, sizeof a, "%.*s", (int)cut, text);
    chat_tools_feed(&t, a, &c, calls);
    chat_tools_feed(&t, text + cut, &c, calls);
    chat_tools_flush(&t, &c);
    int ok = !strcmp(api_buf_str(&c), want_content) && cJSON_GetArraySize(calls) == want_calls;
    if (ok && want_args) {
        const cJSON *fn = cJSON_GetObjectItem(cJSON_GetArrayItem(calls, 0), "function");
        ok = !strcmp(cJSON_GetObjectItem(fn, "arguments")->valuestring, want_args) &&
             !strcmp(cJSON_GetObjectItem(fn, "name")->valuestring, "f") &&
             !strcmp(cJSON_GetObjectItem(cJSON_GetArrayItem(calls, 0), "id")->valuestring,
                     "call_x_0");
    }
    if (!ok)
        TAP_DIAG("cut %zu: content '%s', %d calls", cut, api_buf_str(&c),
                 cJSON_GetArraySize(calls));
    cJSON_Delete(calls);
    api_buf_free(&c);
    chat_tools_free(&t);
    return ok;
}

static void test_tools(void) {
    const char *t1 = "Sure.<tool_call>\n{\"name\": \"f\", \"arguments\": {\"a\": 1}}\n</tool_call>"
                     "<tool_call>{\"name\":\"f\",\"arguments\":\"{}\"}</tool_call>";
    int all = 1;
    for (size_t cut = 0; cut <= strlen(t1); cut++)
        all &= tools_ok(t1, cut, "Sure.", 2, "{\"a\":1}");
    TAP_OK(all, "two tool calls extracted at every cut, text kept");
    const char *t2 = "a <tool_call>not json</tool_call> b <tool_c";
    all = 1;
    for (size_t cut = 0; cut <= strlen(t2); cut++) all &= tools_ok(t2, cut, t2, 0, NULL);
    TAP_OK(all, "a block that is not a call, and a cut tag, stay text");
    TAP_OK(tools_ok("x<tool_call>{\"name\":", 5, "x<tool_call>{\"name\":", 0, NULL),
           "an unterminated block is returned as text");
}

static void test_tools_limits(void) {
    const char *two = "<tool_call>{\"name\":\"f\",\"arguments\":{\"a\":1}}</tool_call>"
                      "<tool_call>{\"name\":\"g\",\"arguments\":{}}</tool_call>";
    chat_tools t;
    api_buf c = {0};
    cJSON *calls = cJSON_CreateArray();
    chat_tools_init(&t, "x", 1);
    chat_tools_feed(&t, two, &c, calls);
    chat_tools_flush(&t, &c);
    const cJSON *fn = cJSON_GetObjectItem(cJSON_GetArrayItem(calls, 0), "function");
    TAP_OK(cJSON_GetArraySize(calls) == 1 && t.n_calls == 1 && !c.n &&
               !strcmp(cJSON_GetObjectItem(fn, "name")->valuestring, "f"),
           "max_calls 1 (parallel_tool_calls false): the first call only, the second dropped");
    cJSON_Delete(calls);
    api_buf_free(&c);
    chat_tools_free(&t);
    /* malformed bodies: each stays text, exactly as written */
    static const char *bad[] = {
        "<tool_call>{\"arguments\":{}}</tool_call>",                 /* no name */
        "<tool_call>{\"name\":\"\",\"arguments\":{}}</tool_call>",   /* empty name */
        "<tool_call>{\"name\":5}</tool_call>",                       /* name not a string */
        "<tool_call>{\"name\":\"f\",\"arguments\":[1]}</tool_call>", /* arguments an array */
        "<tool_call>[\"f\"]</tool_call>",                            /* not an object */
        "<tool_call>{\"name\":\"f\"</tool_call>",                    /* cut JSON */
    };
    int all = 1;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        all &= tools_ok(bad[i], strlen(bad[i]) / 2, bad[i], 0, NULL);
    TAP_OK(all, "malformed calls (no/empty/non-string name, array arguments, cut JSON) stay text");
}

/* ---------------------------------------------------------------- chat_format */

static int token_of(const tok_tokenizer *tok, const char *s) {
    rs_ivec v = {0};
    rs_err e = {0};
    int id = -2;
    if (!tok_encode(tok, s, strlen(s), 0, &v, &e) && v.n == 1) id = v.v[0];
    rs_ivec_free(&v);
    return id;
}

static void test_format_qwen(chat_format *f, const tok_tokenizer *tok) {
    TAP_OK(f->think.open && !strcmp(f->think.open, "<think>") &&
               !strcmp(f->think.close, "</think>"),
           "qwen3: think markers");
    TAP_OK(f->tool.open && !strcmp(f->tool.open, "<tool_call>") &&
               !strcmp(f->tool.close, "</tool_call>"),
           "qwen3: tool-call markers");
    /* the ids must be what the tokenizer encodes each marker's text to (one token each) */
    TAP_OK(f->think.open_id >= 0 && f->think.open_id == token_of(tok, "<think>") &&
               f->think.close_id == token_of(tok, "</think>") &&
               f->tool.open_id == token_of(tok, "<tool_call>") &&
               f->tool.close_id == token_of(tok, "</tool_call>") &&
               f->tool.open_id != f->tool.close_id,
           "qwen3: marker ids are the tokens they encode to (%d %d %d %d)", f->think.open_id,
           f->think.close_id, f->tool.open_id, f->tool.close_id);
    TAP_OK(f->caps == (CHAT_CAN_TOOLS | CHAT_CAN_THINKING | CHAT_CAN_REASONING),
           "qwen3: the template renders tools, enable_thinking and reasoning_content (caps %u)",
           f->caps);
}

static void test_format_stories(void) {
    tok_tokenizer *tok = NULL;
    chat_format f;
    rs_err e = {0};
    int rc = tok_load(&tok, model("stories260K"), &e);
    if (!rc) rc = chat_format_init(&f, tok_get_config(tok), tok, &e);
    TAP_OK(!rc && !chat_tpl_has_template(&f.tpl) && !f.think.open && !f.tool.open &&
               f.think.open_id == -1 && f.tool.close_id == -1 && f.caps == 0,
           "stories260K: plain rendering, no markers, no capabilities (%s)", rc ? e.msg : "ok");
    if (!rc) chat_format_free(&f);
    tok_free(tok);
}

/* A ChatML template that ignores tools and has no thinking, over the Qwen3 tokenizer (which has
 * the marker tokens): the format must not claim what the template does not do. */
static void test_format_chatml(const tok_tokenizer *tok) {
    tok_config c = {0};
    c.chat_template = "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}"
                      "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>"
                      "assistant\n{% endif %}";
    chat_format f;
    rs_err e = {0};
    int rc = chat_format_init(&f, &c, tok, &e);
    TAP_OK(!rc && !f.think.open && !f.tool.open && f.caps == 0,
           "a ChatML template without tools or thinking: no markers, no capabilities");
    if (!rc) chat_format_free(&f);
    c.chat_template = "{{ raise_exception('no') }}";
    rc = chat_format_init(&f, &c, tok, &e);
    TAP_OK(!rc && f.caps == 0 && !f.tool.open, "a template refusing every probe still loads");
    if (!rc) chat_format_free(&f);
}

/* ---------------------------------------------------------------- chat_reader */

static unsigned long long rng = 88172645463325252ull;
static unsigned next_rand(void) {
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return (unsigned)(rng >> 11);
}

typedef struct read_out {
    api_buf r, c;
    cJSON *calls;
} read_out;

/* Feed text to a reader for (format, request JSON, prompt) in deltas of random sizes (whole:
 * one delta). */
static void read_all(const chat_format *f, const char *req_json, const char *prompt,
                     const char *text, int whole, read_out *o) {
    cJSON *req = cJSON_Parse(req_json);
    chat_reader rd;
    memset(o, 0, sizeof *o);
    o->calls = cJSON_CreateArray();
    chat_reader_init(&rd, f, req, prompt, "t");
    size_t n = strlen(text), at = 0;
    char piece[64];
    while (at < n) {
        size_t k = whole ? n - at : 1 + next_rand() % 12;
        if (k > n - at) k = n - at;
        if (k >= sizeof piece) k = sizeof piece - 1;
        memcpy(piece, text + at, k);
        piece[k] = 0;
        at += k;
        chat_reader_feed(&rd, piece, 0, &o->r, &o->c, o->calls);
    }
    chat_reader_feed(&rd, "", 1, &o->r, &o->c, o->calls);
    chat_reader_free(&rd);
    cJSON_Delete(req);
}

static void read_free(read_out *o) {
    api_buf_free(&o->r);
    api_buf_free(&o->c);
    cJSON_Delete(o->calls);
}

static int same(const read_out *a, const read_out *b) {
    char *ja = cJSON_PrintUnformatted(a->calls), *jb = cJSON_PrintUnformatted(b->calls);
    int ok = !strcmp(api_buf_str(&a->r), api_buf_str(&b->r)) &&
             !strcmp(api_buf_str(&a->c), api_buf_str(&b->c)) && ja && jb && !strcmp(ja, jb);
    free(ja);
    free(jb);
    return ok;
}

#define TOOLS_REQ "\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"get_weather\"}}]"
#define MSGS      "\"messages\":[{\"role\":\"user\",\"content\":\"q\"}]"

static const char *const OUTPUTS[] = {
    "<think>\nplan\n</think>\n\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": "
    "{\"city\": \"Paris\"}}\n</tool_call>",
    "<think>\nx\n</think>\n\nBoth:\n<tool_call>\n{\"name\": \"a\", \"arguments\": {}}\n"
    "</tool_call>\n<tool_call>\n{\"name\": \"b\", \"arguments\": {\"k\": [1, 2]}}\n</tool_call>",
    "<think>\nx\n</think>\n\n<tool_call>\n{\"name\": \"a\", \"arguments\": {\"k\": \n</tool_call>"
    " after",
    "<think>\nunfinished <tool_call>",
    "plain answer, no think",
    "<tool_call>{\"name\": \"a\", \"arguments\": \"{\\\"s\\\": 1}\"}</tool_call><tool_call>{\"na",
};

static void test_reader_random(const chat_format *f) {
    static const char *const reqs[] = {
        "{" MSGS "," TOOLS_REQ "}",
        "{" MSGS "," TOOLS_REQ ",\"parallel_tool_calls\":false}",
        "{" MSGS "," TOOLS_REQ ",\"tool_choice\":\"none\"}",
        "{" MSGS ",\"chat_template_kwargs\":{\"enable_thinking\":false}}",
        "{" MSGS "}",
    };
    int all = 1, cases = 0;
    for (size_t q = 0; q < sizeof reqs / sizeof reqs[0]; q++)
        for (size_t t = 0; t < sizeof OUTPUTS / sizeof OUTPUTS[0]; t++)
            for (int rep = 0; rep < 40; rep++, cases++) {
                read_out a, b;
                read_all(f, reqs[q], "p", OUTPUTS[t], 1, &a);
                read_all(f, reqs[q], "p", OUTPUTS[t], 0, &b);
                if (!same(&a, &b)) {
                    all = 0;
                    TAP_DIAG("request %zu output %zu: deltas differ from whole", q, t);
                }
                read_free(&a);
                read_free(&b);
            }
    TAP_OK(all, "%d random delta splits read exactly as the whole text", cases);
}

static int n_calls(const read_out *o) {
    return cJSON_GetArraySize(o->calls);
}

static const char *call_field(const read_out *o, int i, const char *k) {
    const cJSON *fn = cJSON_GetObjectItem(cJSON_GetArrayItem(o->calls, i), "function");
    const cJSON *v = cJSON_GetObjectItem(fn, k);
    return cJSON_IsString(v) ? v->valuestring : "";
}

static void test_reader_cases(const chat_format *f) {
    read_out o;
    read_all(f, "{" MSGS "," TOOLS_REQ "}", "p", OUTPUTS[0], 0, &o);
    TAP_OK(n_calls(&o) == 1 && !strcmp(call_field(&o, 0, "name"), "get_weather") &&
               !strcmp(call_field(&o, 0, "arguments"), "{\"city\":\"Paris\"}") &&
               !strcmp(api_buf_str(&o.r), "plan\n") && !o.c.n,
           "reasoning split off, one call (arguments a JSON string), no content left");
    read_free(&o);
    read_all(f, "{" MSGS "," TOOLS_REQ "}", "p", OUTPUTS[1], 0, &o);
    cJSON *args = cJSON_Parse(call_field(&o, 1, "arguments"));
    TAP_OK(n_calls(&o) == 2 && !strcmp(call_field(&o, 0, "name"), "a") &&
               cJSON_GetArraySize(cJSON_GetObjectItem(args, "k")) == 2 &&
               !strcmp(cJSON_GetObjectItem(cJSON_GetArrayItem(o.calls, 1), "id")->valuestring,
                       "call_t_1"),
           "several calls: both, in order, numbered ids");
    cJSON_Delete(args);
    read_free(&o);
    read_all(f, "{" MSGS "," TOOLS_REQ ",\"parallel_tool_calls\":false}", "p", OUTPUTS[1], 0, &o);
    TAP_OK(n_calls(&o) == 1 && !strcmp(call_field(&o, 0, "name"), "a"),
           "parallel_tool_calls false: the first call only");
    read_free(&o);
    read_all(f, "{" MSGS "," TOOLS_REQ "}", "p", OUTPUTS[2], 0, &o);
    TAP_OK(n_calls(&o) == 0 && strstr(api_buf_str(&o.c), "<tool_call>\n{\"name\": \"a\"") &&
               strstr(api_buf_str(&o.c), "</tool_call> after"),
           "a malformed call degrades to content as written");
    read_free(&o);
    read_all(f, "{" MSGS "," TOOLS_REQ ",\"tool_choice\":\"none\"}", "p", OUTPUTS[0], 0, &o);
    TAP_OK(n_calls(&o) == 0 && strstr(api_buf_str(&o.c), "<tool_call>"),
           "tool_choice none: blocks stay content");
    read_free(&o);
    read_all(f, "{" MSGS "}", "p", OUTPUTS[0], 0, &o);
    TAP_OK(n_calls(&o) == 0 && strstr(api_buf_str(&o.c), "<tool_call>"),
           "no tools offered: blocks stay content");
    read_free(&o);
    read_all(f, "{" MSGS ",\"chat_template_kwargs\":{\"enable_thinking\":false}}", "p", OUTPUTS[0],
             0, &o);
    TAP_OK(!o.r.n && strstr(api_buf_str(&o.c), "<think>"),
           "enable_thinking false: no reasoning split");
    read_free(&o);
    read_all(f, "{" MSGS "}", "<|im_start|>assistant\n<think>\n", "r</think>\n\nanswer", 0, &o);
    TAP_OK(!strcmp(api_buf_str(&o.r), "r") && !strcmp(api_buf_str(&o.c), "answer"),
           "a prompt ending in an open <think> starts inside the reasoning");
    read_free(&o);
}

/* choices[0].delta.tool_calls[0] of a chunk. */
static const cJSON *fragment(const cJSON *chunk) {
    const cJSON *ch = cJSON_GetArrayItem(cJSON_GetObjectItem(chunk, "choices"), 0);
    return cJSON_GetArrayItem(cJSON_GetObjectItem(cJSON_GetObjectItem(ch, "delta"), "tool_calls"),
                              0);
}

/* Streamed fragments of one call: the first has index, id, type and name with arguments "",
 * the second only index and the arguments; appended together they give the call. */
static void test_tool_chunks(void) {
    api_meta m = {.id = "chatcmpl-x", .model = "m", .created = 1, .fingerprint = "fp"};
    cJSON *call = cJSON_Parse("{\"id\":\"call_1\",\"type\":\"function\",\"function\":{\"name\":"
                              "\"f\",\"arguments\":\"{\\\"a\\\":1}\"}}");
    char *s1 = api_chat_tool_chunk(&m, 0, call, 3, 1, 0);
    char *s2 = api_chat_tool_chunk(&m, 0, call, 3, 0, 0);
    cJSON *c1 = cJSON_Parse(s1), *c2 = cJSON_Parse(s2);
    const cJSON *d1 = fragment(c1), *d2 = fragment(c2);
    const cJSON *f1 = cJSON_GetObjectItem(d1, "function"),
                *f2 = cJSON_GetObjectItem(d2, "function");
    TAP_OK(cJSON_GetObjectItem(d1, "index")->valueint == 3 &&
               !strcmp(cJSON_GetObjectItem(d1, "id")->valuestring, "call_1") &&
               !strcmp(cJSON_GetObjectItem(d1, "type")->valuestring, "function") &&
               !strcmp(cJSON_GetObjectItem(f1, "name")->valuestring, "f") &&
               !strcmp(cJSON_GetObjectItem(f1, "arguments")->valuestring, ""),
           "first fragment: index, id, type, name, empty arguments");
    TAP_OK(cJSON_GetObjectItem(d2, "index")->valueint == 3 && !cJSON_GetObjectItem(d2, "id") &&
               !cJSON_GetObjectItem(d2, "type") && !cJSON_GetObjectItem(f2, "name") &&
               !strcmp(cJSON_GetObjectItem(f2, "arguments")->valuestring, "{\"a\":1}"),
           "second fragment: index and the arguments only");
    cJSON_Delete(c1);
    cJSON_Delete(c2);
    free(s1);
    free(s2);
    cJSON_Delete(call);
}

int main(void) {
    const char *r = getenv("RADIXSERVE_ROOT");
    snprintf(root, sizeof root, "%s", r ? r : ".");
    test_think();
    test_tools();
    test_tools_limits();
    test_tool_chunks();
    tok_tokenizer *tok = NULL;
    chat_format f;
    rs_err e = {0};
    int rc = tok_load(&tok, model("qwen3-tokenizer"), &e);
    if (!rc) rc = chat_format_init(&f, tok_get_config(tok), tok, &e);
    TAP_OK(rc == 0, "qwen3-tokenizer: chat format built (%s)", rc ? e.msg : "ok");
    if (!rc) {
        test_format_qwen(&f, tok);
        test_reader_cases(&f);
        test_reader_random(&f);
        test_format_chatml(tok);
        chat_format_free(&f);
    }
    tok_free(tok);
    test_format_stories();
    return tap_done();
}
