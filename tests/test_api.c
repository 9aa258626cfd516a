/*
 * test_api.c — the api room's pure functions: request parsing and validation (every field, wrong
 * types and ranges naming the field, a malformed-JSON corpus), response / chunk / error shapes,
 * and the <think> splitter fed in every possible cut.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "api/api.h"
#include "chat/chat.h"
#include "tests/tap.h"

#define TOOLS                                                                                      \
    "[{\"type\":\"function\",\"function\":{\"name\":\"a\",\"parameters\":{\"type\":\"object\"}}}," \
    "{\"type\":\"function\",\"function\":{\"name\":\"b\"}}]"

static int chat(const char *body, api_chat_request *r, api_error *err) {
    return api_parse_chat(body, strlen(body), r, err);
}

/* A chat body that must be rejected with status 400 naming `param`. */
static void rejects(const char *body, const char *param) {
    api_chat_request r;
    api_error err = {0};
    int rc = chat(body, &r, &err);
    TAP_OK(rc != 0 && err.status == 400 && !strcmp(err.param, param),
           "rejects %s -> 400 param=%s (got rc %d status %d param '%s': %s)", body, param, rc,
           err.status, err.param, err.message);
}

static void test_chat_fields(void) {
    api_chat_request r;
    api_error err = {0};
    const char *body =
        "{\"model\":\"m\",\"messages\":[{\"role\":\"system\",\"content\":\"s\"},"
        "{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"a\"},"
        "{\"type\":\"text\",\"text\":\"b\"}]}],\"max_tokens\":5,\"max_completion_tokens\":7,"
        "\"temperature\":0.5,\"top_p\":0.9,\"top_k\":40,\"min_p\":0.05,"
        "\"repetition_penalty\":1.1,\"presence_penalty\":0.5,\"frequency_penalty\":-0.5,"
        "\"seed\":-1,\"stop\":[\"x\",\"yy\"],\"n\":2,\"logprobs\":true,\"top_logprobs\":3,"
        "\"logit_bias\":{\"17\":-100,\"3\":2.5},\"stream\":true,"
        "\"stream_options\":{\"include_usage\":true},\"ignore_eos\":true,\"cache_salt\":\"c\","
        "\"user\":\"u\",\"prompt_cache_key\":\"k\",\"unknown_field\":{\"x\":1},\"response_format\":"
        "{\"type\":\"text\"},"
        "\"chat_template_kwargs\":{\"enable_thinking\":false},\"tools\":[],"
        "\"tool_choice\":\"auto\",\"parallel_tool_calls\":false}";
    int rc = chat(body, &r, &err);
    TAP_OK(rc == 0, "full chat request parses (%s)", err.message);
    if (rc) return;
    api_gen *g = &r.gen;
    TAP_OK(!strcmp(g->model, "m") && g->max_tokens == 7, "model and max_completion_tokens win");
    TAP_OK(g->temperature == 0.5f && g->top_p == 0.9f && g->top_k == 40 && g->min_p == 0.05f,
           "sampling fields");
    TAP_OK(g->repetition_penalty == 1.1f && g->presence_penalty == 0.5f &&
               g->frequency_penalty == -0.5f,
           "penalties");
    TAP_OK(g->has_seed && g->seed == UINT64_MAX, "negative seed wraps");
    TAP_OK(g->n_stop == 2 && !strcmp(g->stop[1], "yy") && g->n == 2, "stop array and n");
    TAP_OK(g->logprobs && g->top_logprobs == 3, "logprobs + top_logprobs");
    TAP_OK(g->n_bias == 2 && g->bias[0].token == 17 && g->bias[0].bias == -100 &&
               g->bias[1].token == 3,
           "logit_bias");
    TAP_OK(g->stream && g->include_usage && g->ignore_eos && !strcmp(g->cache_salt, "c"),
           "stream, include_usage, ignore_eos, cache_salt");
    const cJSON *kw = cJSON_GetObjectItem(r.tpl, "chat_template_kwargs");
    TAP_OK(cJSON_IsFalse(cJSON_GetObjectItem(kw, "enable_thinking")) &&
               cJSON_IsFalse(cJSON_GetObjectItem(r.tpl, "parallel_tool_calls")),
           "enable_thinking false and parallel_tool_calls false reach the template input");
    const cJSON *msgs = cJSON_GetObjectItem(r.tpl, "messages");
    const cJSON *c1 = cJSON_GetObjectItem(cJSON_GetArrayItem(msgs, 1), "content");
    TAP_OK(cJSON_IsString(c1) && !strcmp(c1->valuestring, "a\nb"), "text parts joined by \\n");
    TAP_OK(cJSON_IsTrue(cJSON_GetObjectItem(r.tpl, "add_generation_prompt")) &&
               cJSON_IsArray(cJSON_GetObjectItem(r.tpl, "tools")),
           "template input has add_generation_prompt and tools");
    api_chat_request_free(&r);

    rc = chat("{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"temperature\":null,"
              "\"stop\":\"end\",\"seed\":null}",
              &r, &err);
    TAP_OK(rc == 0 && isnan(r.gen.temperature) && r.gen.max_tokens == -1 && r.gen.n == 1 &&
               r.gen.n_stop == 1 && !r.gen.has_seed &&
               !cJSON_GetObjectItem(r.tpl, "chat_template_kwargs"),
           "nulls are absent, defaults are sentinels, stop as a string");
    if (!rc) api_chat_request_free(&r);
}

static void test_chat_rejects(void) {
    const char *m = "\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]";
    char b[512];
#define REJ(extra, param)                                                                          \
    snprintf(b, sizeof b, "{%s,%s}", m, extra);                                                    \
    rejects(b, param)
    REJ("\"temperature\":\"0.5\"", "temperature");
    REJ("\"temperature\":3", "temperature");
    REJ("\"top_p\":0", "top_p");
    REJ("\"max_tokens\":0", "max_tokens");
    REJ("\"max_tokens\":1.5", "max_tokens");
    REJ("\"max_completion_tokens\":-3", "max_completion_tokens");
    REJ("\"n\":0", "n");
    REJ("\"n\":100", "n");
    REJ("\"stop\":7", "stop");
    REJ("\"stop\":[\"a\",\"b\",\"c\",\"d\",\"e\"]", "stop");
    REJ("\"logit_bias\":{\"abc\":1}", "logit_bias");
    REJ("\"logit_bias\":{\"5\":101}", "logit_bias");
    REJ("\"stream\":\"yes\"", "stream");
    REJ("\"stream_options\":{\"include_usage\":1}", "stream_options.include_usage");
    REJ("\"response_format\":\"json\"", "response_format");
    REJ("\"response_format\":{\"type\":\"xml\"}", "response_format.type");
    REJ("\"response_format\":{\"type\":\"json_schema\"}", "response_format.json_schema");
    REJ("\"response_format\":{\"type\":\"json_schema\",\"json_schema\":{\"name\":\"x\"}}",
        "response_format.json_schema.schema");
    REJ("\"response_format\":{\"type\":\"json_schema\",\"json_schema\":{\"name\":1,"
        "\"schema\":{}}}",
        "response_format.json_schema.name");
    REJ("\"response_format\":{\"type\":\"json_schema\",\"json_schema\":{\"schema\":{"
        "\"type\":\"string\",\"pattern\":\"a\"}}}",
        "response_format.json_schema.schema");
    REJ("\"response_format\":{\"type\":\"json_object\",\"schema\":{\"format\":\"uri\"}}",
        "response_format.schema");
    REJ("\"parallel_tool_calls\":1", "parallel_tool_calls");
    REJ("\"top_logprobs\":2", "top_logprobs");
    REJ("\"logprobs\":true,\"top_logprobs\":21", "top_logprobs");
    REJ("\"seed\":\"1\"", "seed");
    REJ("\"presence_penalty\":-2.5", "presence_penalty");
    REJ("\"chat_template_kwargs\":{\"enable_thinking\":\"no\"}",
        "chat_template_kwargs.enable_thinking");
    REJ("\"tools\":{}", "tools");
    REJ("\"parallel_tool_calls\":1", "parallel_tool_calls");
    REJ("\"model\":5", "model");
    REJ("\"user\":5", "user");
    REJ("\"prompt_cache_key\":[\"k\"]", "prompt_cache_key");
#undef REJ
    rejects("{}", "messages");
    rejects("{\"messages\":[]}", "messages");
    rejects("{\"messages\":\"hi\"}", "messages");
    rejects("{\"messages\":[5]}", "messages[0]");
    rejects("{\"messages\":[{\"content\":\"x\"}]}", "messages[0].role");
    rejects("{\"messages\":[{\"role\":\"wizard\",\"content\":\"x\"}]}", "messages[0].role");
    rejects("{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"image_url\"}]}]}",
            "messages[0].content");
    rejects("{\"messages\":[{\"role\":\"user\",\"content\":5}]}", "messages[0].content");
}

/* Malformed JSON of every kind: 400, no param, never a crash. */
static void test_malformed_corpus(void) {
    static const char *corpus[] = {
        "",
        " ",
        "{",
        "}",
        "[]",
        "null",
        "42",
        "\"str\"",
        "{\"messages\":",
        "{\"messages\":[}",
        "{'messages':[]}",
        "{\"a\":1,}",
        "{\"a\" 1}",
        "{\"a\":tru}",
        "{\"a\":\"\\x\"}",
        "{\"a\":\"unterminated}",
        "\xff\xfe{}",
        "{\"a\":1}{\"b\":2}",
        "{\"a\":NaN}",
        "{\"a\":[1,2,]}",
        "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]} trailing",
    };
    int all = 1;
    for (size_t i = 0; i < sizeof corpus / sizeof corpus[0]; i++) {
        api_chat_request r;
        api_completion_request c;
        api_error e1 = {0}, e2 = {0};
        int rc1 = api_parse_chat(corpus[i], strlen(corpus[i]), &r, &e1);
        int rc2 = api_parse_completion(corpus[i], strlen(corpus[i]), &c, &e2);
        if (!rc1 || !rc2 || e1.status != 400 || e2.status != 400) {
            all = 0;
            TAP_DIAG("corpus entry %zu accepted or wrong status", i);
        }
    }
    TAP_OK(all, "malformed-JSON corpus: every entry is a 400");
    /* Not NUL-terminated: the parser must respect len. */
    char buf[4] = {'{', '}', 'x', 'x'};
    api_completion_request c;
    api_error err = {0};
    TAP_OK(api_parse_completion(buf, 2, &c, &err) != 0 && !strcmp(err.param, "prompt"),
           "length-bounded body parsed as {} (missing prompt)");
}

static void test_completion(void) {
    api_completion_request c;
    api_error err = {0};
    const char *b1 = "{\"prompt\":\"Once upon\",\"echo\":true,\"logprobs\":2,\"max_tokens\":4}";
    int rc = api_parse_completion(b1, strlen(b1), &c, &err);
    TAP_OK(rc == 0 && c.n_prompts == 1 && !strcmp(c.prompts[0].text, "Once upon") && c.echo &&
               c.gen.logprobs && c.gen.top_logprobs == 2 && c.gen.max_tokens == 4,
           "completion: text prompt, echo, int logprobs");
    if (!rc) api_completion_request_free(&c);
    const char *b2 = "{\"prompt\":[[1,2,3]]}";
    rc = api_parse_completion(b2, strlen(b2), &c, &err);
    TAP_OK(rc == 0 && c.n_prompts == 1 && c.prompts[0].n_ids == 3 && c.prompts[0].ids[2] == 3 &&
               !c.prompts[0].text,
           "completion: token-id prompt in a one-element batch");
    if (!rc) api_completion_request_free(&c);
    const char *b3 = "{\"prompt\":[\"a\",\"bc\",\"d\"],\"n\":2}";
    rc = api_parse_completion(b3, strlen(b3), &c, &err);
    TAP_OK(rc == 0 && c.n_prompts == 3 && !strcmp(c.prompts[1].text, "bc") && c.gen.n == 2,
           "completion: a batch of three string prompts");
    if (!rc) api_completion_request_free(&c);
    const char *b4 = "{\"prompt\":[[1,2],[3]]}";
    rc = api_parse_completion(b4, strlen(b4), &c, &err);
    TAP_OK(rc == 0 && c.n_prompts == 2 && c.prompts[1].n_ids == 1 && c.prompts[1].ids[0] == 3,
           "completion: a batch of two id prompts");
    if (!rc) api_completion_request_free(&c);
    const char *bad[][2] = {{"{\"prompt\":[1,-2]}", "prompt"},
                            {"{\"prompt\":[\"a\",5]}", "prompt"},
                            {"{\"prompt\":[[1],\"b\",[[2]]]}", "prompt"},
                            {"{\"prompt\":[\"a\",\"b\",\"c\",\"d\",\"e\"],\"n\":16}", "prompt"},
                            {"{\"prompt\":5}", "prompt"},
                            {"{\"prompt\":\"x\",\"echo\":1}", "echo"},
                            {"{\"prompt\":\"x\",\"logprobs\":true}", "logprobs"},
                            {"{\"prompt\":\"x\",\"suffix\":\"y\"}", "suffix"}};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        rc = api_parse_completion(bad[i][0], strlen(bad[i][0]), &c, &err);
        TAP_OK(rc != 0 && err.status == 400 && !strcmp(err.param, bad[i][1]),
               "completion rejects %s (param %s)", bad[i][0], err.param);
    }
}

static void test_tokenize(void) {
    api_tokenize_request t;
    api_error err = {0};
    const char *b = "{\"prompt\":\"hi\"}";
    int rc = api_parse_tokenize(b, strlen(b), &t, &err);
    TAP_OK(rc == 0 && !strcmp(t.prompt, "hi") && t.add_special == 1, "tokenize: prompt");
    if (!rc) api_tokenize_request_free(&t);
    const char *b2 = "{\"content\":\"yo\",\"with_pieces\":true}";
    rc = api_parse_tokenize(b2, strlen(b2), &t, &err);
    TAP_OK(rc == 0 && !strcmp(t.prompt, "yo") && t.with_pieces == 1,
           "tokenize: content (llama.cpp) and with_pieces");
    if (!rc) api_tokenize_request_free(&t);
    int32_t *ids;
    int n;
    const char *d = "{\"tokens\":[5,6]}";
    rc = api_parse_detokenize(d, strlen(d), &ids, &n, &err);
    TAP_OK(rc == 0 && n == 2 && ids[1] == 6, "detokenize: ids");
    if (!rc) free(ids);
    const char *d2 = "{\"tokens\":\"5\"}";
    TAP_OK(api_parse_detokenize(d2, strlen(d2), &ids, &n, &err) != 0 &&
               !strcmp(err.param, "tokens"),
           "detokenize rejects a string");
}

static void test_builders(void) {
    api_error err;
    api_errorf(&err, 404, "invalid_request_error", "model", "model_not_found", "no model '%s'",
               "x");
    char *s = api_error_json(&err);
    cJSON *j = cJSON_Parse(s);
    cJSON *e = cJSON_GetObjectItem(j, "error");
    TAP_OK(e && !strcmp(cJSON_GetObjectItem(e, "message")->valuestring, "no model 'x'") &&
               !strcmp(cJSON_GetObjectItem(e, "code")->valuestring, "model_not_found") &&
               !strcmp(cJSON_GetObjectItem(e, "param")->valuestring, "model"),
           "error object: message, type, param, code");
    cJSON_Delete(j);
    free(s);
    api_errorf(&err, 400, "invalid_request_error", NULL, NULL, "bad");
    s = api_error_json(&err);
    TAP_OK(strstr(s, "\"param\":null") && strstr(s, "\"code\":null"), "null param and code");
    free(s);

    api_meta m = {"chatcmpl-1", "stories", 1700000000, "fp"};
    api_choice ch[2] = {0};
    api_buf_puts(&ch[0].content, "Hello");
    api_buf_puts(&ch[0].reasoning, "hmm");
    ch[0].finish_reason = "stop";
    ch[1].finish_reason = "length";
    api_lp lp = {strdup("Hel"), -0.5f, 1, {{strdup("He"), -1.0f}}};
    api_choice_add_lp(&ch[0], &lp);
    api_usage u = {.prompt_tokens = 10, .completion_tokens = 4};
    s = api_chat_response(&m, ch, 2, 1, &u);
    j = cJSON_Parse(s);
    cJSON *choices = cJSON_GetObjectItem(j, "choices");
    cJSON *c0 = cJSON_GetArrayItem(choices, 0), *msg = cJSON_GetObjectItem(c0, "message");
    cJSON *usage = cJSON_GetObjectItem(j, "usage");
    TAP_OK(!strcmp(cJSON_GetObjectItem(j, "object")->valuestring, "chat.completion") &&
               cJSON_GetArraySize(choices) == 2 &&
               !strcmp(cJSON_GetObjectItem(msg, "content")->valuestring, "Hello") &&
               !strcmp(cJSON_GetObjectItem(msg, "reasoning_content")->valuestring, "hmm") &&
               !strcmp(cJSON_GetObjectItem(msg, "role")->valuestring, "assistant"),
           "chat response: object, choices, message");
    TAP_OK(cJSON_GetObjectItem(usage, "total_tokens")->valueint == 14 &&
               cJSON_GetObjectItem(cJSON_GetObjectItem(usage, "prompt_tokens_details"),
                                   "cached_tokens")
                       ->valueint == 0,
           "usage with cached_tokens 0 on a miss");
    cJSON *lpc = cJSON_GetObjectItem(cJSON_GetObjectItem(c0, "logprobs"), "content");
    TAP_OK(cJSON_GetArraySize(lpc) == 1 && cJSON_GetArraySize(cJSON_GetObjectItem(
                                               cJSON_GetArrayItem(lpc, 0), "top_logprobs")) == 1,
           "chat logprobs content with top_logprobs");
    cJSON_Delete(j);
    free(s);
    s = api_completion_response(&m, ch, 1, 1, &u);
    TAP_OK(strstr(s, "\"text_completion\"") && strstr(s, "\"token_logprobs\":[-0.5]") &&
               strstr(s, "\"text\":\"Hello\""),
           "completion response with legacy logprobs");
    free(s);
    s = api_chat_chunk(&m, 1, "assistant", "", NULL, NULL, 0, NULL, 1);
    TAP_OK(strstr(s, "\"index\":1") && strstr(s, "\"role\":\"assistant\"") &&
               strstr(s, "\"usage\":null") && strstr(s, "\"finish_reason\":null"),
           "first chat chunk carries role and index");
    free(s);
    s = api_usage_chunk(&m, 1, &u);
    TAP_OK(strstr(s, "\"choices\":[]") && strstr(s, "\"cached_tokens\":0"),
           "usage chunk has empty choices");
    free(s);
    api_choice_free(&ch[0]);
    api_choice_free(&ch[1]);
}

/* Limits and values print as integers, never "2.14748e+09". */
static void test_integer_messages(void) {
    api_completion_request c;
    api_error err = {0};
    const char *b = "{\"prompt\":\"x\",\"max_tokens\":0}";
    int rc = api_parse_completion(b, strlen(b), &c, &err);
    TAP_OK(rc != 0 && strstr(err.message, "between 1 and 2147483647 (got 0)") &&
               !strstr(err.message, "e+"),
           "max_tokens out of range: integers in the message (%s)", err.message);
    const char *b2 = "{\"prompt\":\"x\",\"temperature\":2.5}";
    rc = api_parse_completion(b2, strlen(b2), &c, &err);
    TAP_OK(rc != 0 && strstr(err.message, "between 0 and 2 (got 2.5)"),
           "temperature out of range: a fraction stays a fraction (%s)", err.message);
}

/* previous_response_id's lookup for the test: one stored conversation. */
static cJSON *one_stored(void *ctx, const char *id) {
    (void)ctx;
    return strcmp(id, "resp_1") ? NULL : cJSON_Parse("[{\"role\":\"user\",\"content\":\"A\"}]");
}

static void test_responses_parse(void) {
    api_responses_request q;
    api_error err = {0};
    const char *b =
        "{\"instructions\":\"Be "
        "brief\",\"max_output_tokens\":7,\"previous_response_id\":\"resp_1\","
        "\"input\":[{\"role\":\"user\",\"content\":[{\"type\":\"input_text\",\"text\":\"Hi\"}]},"
        "{\"type\":\"function_call\",\"call_id\":\"c1\",\"name\":\"f\",\"arguments\":\"{}\"},"
        "{\"type\":\"function_call_output\",\"call_id\":\"c1\",\"output\":\"ok\"}],"
        "\"tools\":[{\"type\":\"function\",\"name\":\"f\",\"parameters\":{}}],\"store\":false}";
    int rc = api_parse_responses(b, strlen(b), one_stored, NULL, &q, &err);
    const cJSON *m = rc ? NULL : cJSON_GetObjectItem(q.chat.tpl, "messages");
    char *got = m ? cJSON_PrintUnformatted(m) : NULL;
    const char *want =
        "[{\"role\":\"system\",\"content\":\"Be brief\"},{\"role\":\"user\",\"content\":"
        "\"A\"},{\"role\":\"user\",\"content\":\"Hi\"},{\"role\":\"assistant\",\"content\":"
        "\"\",\"tool_calls\":[{\"id\":\"c1\",\"type\":\"function\",\"function\":{\"name\":"
        "\"f\",\"arguments\":\"{}\"}}]},{\"role\":\"tool\",\"tool_call_id\":\"c1\","
        "\"content\":\"ok\"}]";
    TAP_OK(rc == 0 && got && !strcmp(got, want) && q.chat.gen.max_tokens == 7 && !q.store &&
               cJSON_GetArraySize(q.conversation) == 4,
           "responses -> chat: instructions, stored conversation, items as messages (%s)",
           got ? got : err.message);
    const cJSON *tool = rc ? NULL : cJSON_GetArrayItem(cJSON_GetObjectItem(q.chat.tpl, "tools"), 0);
    TAP_OK(tool && cJSON_GetObjectItem(cJSON_GetObjectItem(tool, "function"), "parameters"),
           "responses -> chat: a function tool in chat form");
    free(got);
    if (!rc) api_responses_request_free(&q);
    const char *bad[][2] = {
        {"{\"input\":\"x\",\"previous_response_id\":\"resp_2\"}", "previous_response_id"},
        {"{\"input\":\"x\",\"max_output_tokens\":0}", "max_output_tokens"},
        {"{\"input\":[{\"role\":\"robot\",\"content\":\"x\"}]}", "input[0]"},
        {"{}", "input"},
        {"{\"input\":\"x\",\"background\":true}", "background"}};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        rc = api_parse_responses(bad[i][0], strlen(bad[i][0]), one_stored, NULL, &q, &err);
        TAP_OK(rc != 0 && !strcmp(err.param, bad[i][1]) && !strstr(err.message, "completion"),
               "responses rejects %s (param %s: %s)", bad[i][0], err.param, err.message);
    }
}

static void test_embed_finish(void) {
    float v[3] = {3, 4, 12};
    int n = api_embed_finish(v, 3, 2, 1);
    TAP_OK(n == 2 && fabsf(v[0] - 0.6f) < 1e-7f && fabsf(v[1] - 0.8f) < 1e-7f,
           "embeddings: dimensions 2 truncates, then renormalises");
    float one = 1.0f, *vec = &one;
    int dims = 1;
    char *s = api_embeddings_response("m", &vec, &dims, 1, 1, 3, 0);
    TAP_OK(s && strstr(s, "\"embedding\":\"AACAPw==\"") && strstr(s, "\"prompt_tokens\":3"),
           "embeddings: base64 of little-endian float32 (1.0 -> AACAPw==)");
    free(s);
}

/* An independent UTF-8 validator (code points decoded and range-checked, not util's table of
 * second-byte ranges): 1 when s[0..n) is valid. */
static int ref_utf8(const unsigned char *s, size_t n) {
    static const uint32_t min_cp[5] = {0, 0, 0x80, 0x800, 0x10000};
    for (size_t i = 0; i < n;) {
        int len = s[i] < 0x80         ? 1
                  : (s[i] >> 5) == 6  ? 2
                  : (s[i] >> 4) == 14 ? 3
                  : (s[i] >> 3) == 30 ? 4
                                      : 0;
        if (!len || i + (size_t)len > n) return 0;
        uint32_t cp = len == 1 ? s[i] : (uint32_t)(s[i] & (0x7F >> len));
        for (int k = 1; k < len; k++) {
            if ((s[i + k] & 0xC0) != 0x80) return 0;
            cp = cp << 6 | (s[i + k] & 0x3F);
        }
        if (cp < min_cp[len] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
        i += (size_t)len;
    }
    return 1;
}

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static unsigned rnd(void) {
    rng_state ^= rng_state << 13, rng_state ^= rng_state >> 7, rng_state ^= rng_state << 17;
    return (unsigned)(rng_state >> 11);
}

/* Random strings biased to UTF-8-ish bytes: valid characters of every length, cut ones, stray
 * continuation bytes, overlongs and surrogates. */
static size_t random_text(unsigned char *b, size_t cap) {
    static const char *pieces[] = {"a",
                                   "\xC3\xA9",
                                   "\xE2\x82\xAC",
                                   "\xF0\x9F\x98\x80",
                                   "\x80",
                                   "\xC3",
                                   "\xE2\x82",
                                   "\xF0\x9F",
                                   "\xC0\xAF",
                                   "\xED\xA0\x80",
                                   "\xF4\x90\x80\x80",
                                   "\xFF",
                                   "\xEF\xBF\xBD",
                                   "\"",
                                   "\\"};
    size_t n = 0, want = rnd() % 40;
    while (n < want) {
        const char *p = rnd() % 4 ? pieces[rnd() % (sizeof pieces / sizeof pieces[0])] : NULL;
        unsigned char one = (unsigned char)(rnd() % 255 + 1);
        size_t len = p ? strlen(p) : 1;
        if (n + len >= cap) break;
        memcpy(b + n, p ? (const unsigned char *)p : &one, len);
        n += len;
    }
    b[n] = 0;
    return n;
}

static void test_utf8(void) {
    unsigned char b[256];
    char out[64];
    int agree = 1, clip_ok = 1, kept_valid = 1;
    for (int t = 0; t < 20000; t++) {
        size_t n = random_text(b, sizeof b);
        int valid = rs_utf8_check((const char *)b, n) == n;
        if (valid != ref_utf8(b, n)) agree = 0;
        size_t cap = 4 + rnd() % 60;
        rs_utf8_clip(out, cap, (const char *)b);
        size_t m = strlen(out);
        if (m >= cap || !ref_utf8((const unsigned char *)out, m)) clip_ok = 0;
        /* valid text that fits comes back unchanged */
        if (valid && n < cap && strcmp(out, (const char *)b) != 0) kept_valid = 0;
    }
    TAP_OK(agree, "rs_utf8_check agrees with an independent decoder on 20000 random strings");
    TAP_OK(clip_ok, "rs_utf8_clip output is always valid UTF-8 within its buffer");
    TAP_OK(kept_valid, "rs_utf8_clip keeps valid text that fits unchanged");
    rs_utf8_clip(out, 12, "\xC3\xA9\xC3\xA9\xC3\xA9\xC3\xA9\xC3\xA9\xC3\xA9");
    TAP_OK(!strcmp(out, "\xC3\xA9\xC3\xA9\xC3\xA9\xC3\xA9..."),
           "a long run of e-acute is cut on a character boundary ('%s')", out);
    rs_utf8_clip(out, sizeof out,
                 "a\xFF\xFE"
                 "b");
    TAP_OK(!strcmp(out, "a\xEF\xBF\xBD\xEF\xBF\xBD"
                        "b"),
           "invalid bytes become U+FFFD");

    /* a role of 60 e-acutes: the message quoting it is valid UTF-8 */
    char body[512] = "{\"messages\":[{\"role\":\"";
    for (int i = 0; i < 60; i++) strcat(body, "\xC3\xA9");
    strcat(body, "\",\"content\":\"x\"}]}");
    api_chat_request r;
    api_error err = {0};
    int rc = chat(body, &r, &err);
    TAP_OK(rc && ref_utf8((const unsigned char *)err.message, strlen(err.message)) &&
               strstr(err.message, "...") && !strcmp(err.param, "messages[0].role"),
           "a long non-ASCII role is quoted cut on a character boundary: %s", err.message);
    rejects("{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"stop\":\"a\xC3\"}", "stop");
    rejects("{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"stop\":[\"ok\",\"\xFF\"]}",
            "stop[1]");
    rejects("{\"messages\":[{\"role\":\"user\",\"content\":\"\xED\xA0\x80\"}]}",
            "messages[0].content");
    rejects("{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":"
            "\"\xC0\xAF\"}]}]}",
            "messages[0].content[0].text");
    rejects("{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"model\":\"\xF4\x90\x80\x80\"}",
            "model");
    rejects("{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"tools\":[{\"\xFF\":1}]}",
            "tools[0]");
    api_completion_request cr;
    const char *cb = "{\"prompt\":\"hi\",\"stop\":\"\xE2\x82\"}";
    rc = api_parse_completion(cb, strlen(cb), &cr, &err);
    TAP_OK(rc && err.status == 400 && !strcmp(err.param, "stop") && strstr(err.message, "UTF-8"),
           "completions: an invalid-UTF-8 stop is a 400 naming stop (%s)", err.message);
    api_tokenize_request tr;
    const char *tb = "{\"prompt\":\"\xFF\"}";
    rc = api_parse_tokenize(tb, strlen(tb), &tr, &err);
    TAP_OK(rc && err.status == 400 && !strcmp(err.param, "prompt"),
           "tokenize: invalid prompt -> 400 (%s)", err.param);
    api_errorf(&err, 404, NULL, "\xFF\xFE", NULL, "echo %s", "\xC3(\x80");
    TAP_OK(ref_utf8((const unsigned char *)err.message, strlen(err.message)) &&
               ref_utf8((const unsigned char *)err.param, strlen(err.param)),
           "api_errorf makes message and param valid whatever it is given");
}

/* response_format and a forced tool_choice compile to a grammar (or a 400 naming the field). */
static void test_formats(void) {
    const chat_format qwen = {.tool = {CHAT_TOOL_OPEN, CHAT_TOOL_CLOSE, -1, -1}};
    static const struct {
        const char *extra; /* fields after "messages" */
        int grammar;       /* 1: a grammar is compiled */
        const char *param; /* NULL: accepted; else the 400's param (chat_tool_grammar) */
    } cases[] = {
        {"\"response_format\":{\"type\":\"text\"}", 0, NULL},
        {"\"response_format\":{\"type\":\"json_object\"}", 1, NULL},
        {"\"response_format\":{\"type\":\"json_object\",\"schema\":{\"type\":\"object\"}}", 1,
         NULL},
        {"\"response_format\":{\"type\":\"json_schema\",\"json_schema\":{\"name\":\"n\","
         "\"strict\":true,\"schema\":{\"type\":\"array\",\"items\":{\"type\":\"null\"}}}}",
         1, NULL},
        {"\"tools\":" TOOLS ",\"tool_choice\":\"none\"", 0, NULL},
        {"\"tools\":" TOOLS ",\"tool_choice\":\"auto\"", 0, NULL},
        {"\"tools\":" TOOLS ",\"tool_choice\":\"required\"", 1, NULL},
        {"\"tools\":" TOOLS ",\"tool_choice\":\"required\",\"parallel_tool_calls\":false", 1, NULL},
        {"\"tools\":" TOOLS ",\"tool_choice\":{\"type\":\"function\",\"function\":{\"name\":"
         "\"b\"}}",
         1, NULL},
        {"\"tools\":" TOOLS ",\"tool_choice\":{\"type\":\"function\",\"function\":{\"name\":"
         "\"zz\"}}",
         0, "tool_choice.function.name"},
        {"\"tool_choice\":\"required\"", 0, "tool_choice"},
        {"\"tools\":" TOOLS ",\"tool_choice\":\"sometimes\"", 0, "tool_choice"},
        {"\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"p\",\"parameters\":{"
         "\"type\":\"object\",\"patternProperties\":{}}}}],\"tool_choice\":\"required\"",
         0, "tools"},
        {"\"tools\":" TOOLS ",\"tool_choice\":\"required\",\"response_format\":{\"type\":"
         "\"json_object\"}",
         0, "tool_choice"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char body[1024];
        snprintf(body, sizeof body, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],%s}",
                 cases[i].extra);
        api_chat_request r;
        api_error err = {0};
        int rc = chat(body, &r, &err);
        if (!rc) rc = chat_tool_grammar(&qwen, &r, &err);
        if (cases[i].param)
            TAP_OK(rc && err.status == 400 && !strcmp(err.param, cases[i].param),
                   "%s -> 400 param %s (got '%s': %s)", cases[i].extra, cases[i].param, err.param,
                   err.message);
        else
            TAP_OK(rc == 0 && (r.gen.grammar != NULL) == cases[i].grammar, "%s -> %s (%s)",
                   cases[i].extra, cases[i].grammar ? "a grammar" : "free text", err.message);
        api_chat_request_free(&r);
    }
    api_chat_request r;
    api_error err = {0};
    chat("{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"tools\":" TOOLS
         ",\"tool_choice\":\"required\"}",
         &r, &err);
    const chat_format plain = {.tool = {NULL, NULL, -1, -1}};
    TAP_OK(chat_tool_grammar(&plain, &r, &err) && !strcmp(err.param, "tool_choice"),
           "a model without tool-call markers: 400 tool_choice (%s)", err.message);
    api_chat_request_free(&r);
}

int main(void) {
    test_utf8();
    test_responses_parse();
    test_embed_finish();
    test_integer_messages();
    test_chat_fields();
    test_formats();
    test_chat_rejects();
    test_malformed_corpus();
    test_completion();
    test_tokenize();
    test_builders();
    return tap_done();
}
