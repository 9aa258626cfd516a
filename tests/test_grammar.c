/*
 * test_grammar.c — the grammar room's C unit tests: strings each schema must accept whole,
 * accept as a prefix only, or reject; compile errors naming the keyword; random documents
 * walked byte by byte through the automaton parse as JSON (cJSON, independent of it); and the
 * token mask over the real Qwen3 vocabulary equals stepping every token's bytes one by one
 * (the trie walk and the plain-string shortcut against the plain definition).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "grammar/gr_int.h"
#include "tap.h"
#include "tokenizer/tokenizer.h"

enum { REJECT, PREFIX, WHOLE };

static gr_grammar *compile(const char *schema, rs_err *e) {
    gr_grammar *g = NULL;
    cJSON *j = cJSON_Parse(schema);
    if (!j) return NULL;
    if (gr_compile_schema(&g, j, e)) g = NULL;
    cJSON_Delete(j);
    return g;
}

/* REJECT, PREFIX (accepted, not complete), WHOLE (accepted and complete). */
static int judge(const gr_grammar *g, const char *text) {
    gr_matcher *m = NULL;
    rs_err e = {0};
    if (gr_matcher_new(&m, g, &e)) return -1;
    int r = gr_matcher_accept_bytes(m, text, strlen(text));
    int out = r != 1 ? REJECT : gr_matcher_can_end(m) ? WHOLE : PREFIX;
    gr_matcher_free(m);
    return out;
}

typedef struct vec {
    const char *text;
    int want;
} vec;

static void check_schema(const char *schema, const vec *v) {
    rs_err e = {0};
    gr_grammar *g = compile(schema, &e);
    if (!TAP_OK(g, "compile %s (%s)", schema, e.msg)) return;
    static const char *const names[] = {"reject", "prefix", "whole"};
    for (; v->text; v++) {
        int got = judge(g, v->text);
        TAP_OK(got == v->want, "%s: '%s' -> %s (got %s)", schema, v->text, names[v->want],
               got >= 0 ? names[got] : "error");
    }
    gr_free(g);
}

static void test_vectors(void) {
    check_schema(
        "{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"integer\"},\"b\":{\"type\":"
        "\"string\",\"maxLength\":3}},\"required\":[\"a\"],\"additionalProperties\":false}",
        (vec[]){{"{\"a\":1}", WHOLE},
                {"{\"a\": 12, \"b\": \"xyz\"}", WHOLE},
                {"{\"b\":\"x\",\"a\":-3}", WHOLE},
                {"{\"b\":\"x\"}", REJECT},
                {"{\"b\":\"x\"", PREFIX},
                {"{\"a\":1,\"a\":2}", REJECT},
                {"{\"c\":1}", REJECT},
                {"{\"a\":1.5}", REJECT},
                {"{\"a\":01}", REJECT},
                {"{\"a\":1,\"b\":\"wxyz\"}", REJECT},
                {"{\"a\":1,\"b\":\"\\u00e9\\n\"}", WHOLE},
                {"{\"a\":1,\"b\":\"\\ud800\"}", REJECT},
                {"{\"a\":1,\"b\":\"\xc3\xa9\xe2\x82\xac\"}", WHOLE},
                {"{\"a\":1,\"b\":\"\xc3\"}", REJECT},
                {"{\"a\":1,\"b\":\"\xed\xa0\x80\"}", REJECT},
                {"{\"a\":1,\"b\":\"\x01\"}", REJECT},
                {" {\"a\":1}", REJECT},
                {"{\"a\":1} ", REJECT},
                {"{        \"a\":1}", WHOLE},
                {"{         \"a\":1}", REJECT},
                {"{\n  \"a\": 1\n}", WHOLE},
                {"{}", REJECT},
                {"{\"a\":1,}", REJECT},
                {NULL, 0}});
    check_schema(
        "{\"type\":\"array\",\"items\":{\"type\":\"number\"},\"minItems\":1,\"maxItems\":3}",
        (vec[]){{"[1]", WHOLE},
                {"[1, -2.5e+10, 0.25]", WHOLE},
                {"[]", REJECT},
                {"[1,2,3,4]", REJECT},
                {"[1,2", PREFIX},
                {"[1.]", REJECT},
                {"[1e]", REJECT},
                {"[1e123]", REJECT},
                {"[-]", REJECT},
                {NULL, 0}});
    check_schema("{\"enum\":[\"red\",\"green\",1,10,null]}", (vec[]){{"\"red\"", WHOLE},
                                                                     {"\"gr", PREFIX},
                                                                     {"\"blue\"", REJECT},
                                                                     {"1", WHOLE},
                                                                     {"10", WHOLE},
                                                                     {"100", REJECT},
                                                                     {"null", WHOLE},
                                                                     {NULL, 0}});
    check_schema(
        "{\"anyOf\":[{\"type\":\"string\",\"minLength\":2},{\"type\":\"object\",\"properties\":"
        "{\"k\":{\"const\":true}},\"required\":[\"k\"],\"additionalProperties\":false}]}",
        (vec[]){{"\"ab\"", WHOLE},
                {"\"a\"", REJECT},
                {"{\"k\":true}", WHOLE},
                {"{\"k\":false}", REJECT},
                {"true", REJECT},
                {NULL, 0}});
    check_schema(
        "{\"$defs\":{\"node\":{\"type\":\"object\",\"properties\":{\"v\":{\"type\":"
        "\"integer\"},\"next\":{\"anyOf\":[{\"$ref\":\"#/$defs/node\"},{\"type\":\"null\"}]}},"
        "\"required\":[\"v\",\"next\"],\"additionalProperties\":false}},\"$ref\":\"#/$defs/node\"}",
        (vec[]){{"{\"v\":1,\"next\":null}", WHOLE},
                {"{\"v\":1,\"next\":{\"v\":2,\"next\":null}}", WHOLE},
                {"{\"v\":1,\"next\":{\"v\":2}}", REJECT},
                {NULL, 0}});
    check_schema("{\"type\":\"array\",\"prefixItems\":[{\"type\":\"boolean\"},{\"type\":\"null\"}],"
                 "\"items\":false}",
                 (vec[]){{"[true,null]", WHOLE},
                         {"[false]", WHOLE},
                         {"[true,null,1]", REJECT},
                         {"[null]", REJECT},
                         {NULL, 0}});
    check_schema(
        "{\"type\":[\"integer\",\"null\"]}",
        (vec[]){{"-0", WHOLE}, {"12", WHOLE}, {"1.5", REJECT}, {"null", WHOLE}, {NULL, 0}});
    check_schema("{\"type\":\"object\",\"additionalProperties\":{\"type\":\"boolean\"}}",
                 (vec[]){{"{}", WHOLE},
                         {"{\"x\\\"y\":true,\"z\":false}", WHOLE},
                         {"{\"x\":1}", REJECT},
                         {NULL, 0}});
    gr_grammar *g = NULL;
    rs_err e = {0};
    TAP_OK(gr_compile_json_object(&g, &e) == 0, "json_object compiles");
    TAP_OK(judge(g, "{\"a\":[1,{\"b\":null}],\"c\":\"d\"}") == WHOLE, "json_object: nested value");
    TAP_OK(judge(g, "[1]") == REJECT, "json_object: an array is refused");
    gr_free(g);
}

static void test_errors(void) {
    static const char *const bad[][2] = {
        {"{\"type\":\"string\",\"pattern\":\"a+\"}", "'pattern'"},
        {"{\"type\":\"object\",\"properties\":{\"a\":{\"minimum\":1}}}", "#/properties/a"},
        {"{\"type\":\"string\",\"minLength\":3,\"maxLength\":2}", "maxLength"},
        {"{\"$ref\":\"#/$defs/missing\"}", "#/$defs/missing"},
        {"{\"oneOf\":[{\"type\":\"string\"},{\"type\":\"string\"}]}", "oneOf"},
        {"{\"enum\":[]}", "enum"},
        {"{\"type\":\"strin\"}", "strin"},
        {"{\"type\":\"object\",\"required\":[\"x\"],\"properties\":{}}", "'x'"},
        {"false", "false"},
        {"{\"type\":\"object\",\"properties\":{\"v\":{\"$ref\":\"#/$defs/a\"}},\"$defs\":{\"a\":"
         "{\"$ref\":\"#/$defs/a\"}}}",
         "refers to itself"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        rs_err e = {0};
        gr_grammar *g = compile(bad[i][0], &e);
        TAP_OK(!g && e.code == RS_EINVAL && strstr(e.msg, bad[i][1]), "%s refused naming %s (%s)",
               bad[i][0], bad[i][1], e.msg);
        gr_free(g);
    }
}

/* xorshift64* */
static uint64_t rnd(uint64_t *s) {
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return *s * 2685821657736338717ull;
}

/* The bytes p[0, n) then q[0, k) are accepted from the start. */
static int takes(const gr_grammar *g, const char *p, size_t n, const char *q, size_t k) {
    gr_matcher *m = NULL;
    rs_err e = {0};
    if (gr_matcher_new(&m, g, &e)) return 0;
    int ok = gr_matcher_accept_bytes(m, p, n) == 1 && gr_matcher_accept_bytes(m, q, k) == 1;
    gr_matcher_free(m);
    return ok;
}

/* Random documents: from each state pick a random allowed byte (preferring to end once
 * complete); every finished document must parse as JSON. */
static void test_random_walk(void) {
    const char *schemas[] = {
        "{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"array\",\"items\":{\"type\":"
        "\"string\","
        "\"maxLength\":4},\"maxItems\":3},\"b\":{\"enum\":[1,2,\"x\"]},\"c\":{\"type\":\"number\"}}"
        ","
        "\"required\":[\"a\",\"b\",\"c\"],\"additionalProperties\":false}",
        "{\"anyOf\":[{\"type\":\"integer\"},{\"type\":\"array\",\"items\":{\"type\":\"boolean\"},"
        "\"maxItems\":2}]}",
    };
    uint64_t seed = 0x1234567;
    int parsed = 0, total = 0;
    for (size_t si = 0; si < sizeof schemas / sizeof *schemas; si++) {
        rs_err e = {0};
        gr_grammar *g = compile(schemas[si], &e);
        if (!TAP_OK(g, "compile walk schema %zu (%s)", si, e.msg)) continue;
        for (int doc = 0; doc < 100; doc++) {
            gr_matcher *m = NULL;
            gr_matcher_new(&m, g, &e);
            char buf[2048];
            size_t n = 0;
            while (n < sizeof buf - 1 && !gr_matcher_done(m)) {
                if (gr_matcher_can_end(m) && rnd(&seed) % 4 == 0) break;
                unsigned char ok[256];
                int k = 0;
                for (int b = 1; b < 256; b++) {
                    char c = (char)b;
                    if (takes(g, buf, n, &c, 1)) ok[k++] = (unsigned char)b;
                }
                if (!k) break;
                /* prefer structure over whitespace so documents stay short */
                unsigned char c = ok[rnd(&seed) % (uint64_t)k];
                if ((c == ' ' || c == '\n' || c == '\t' || c == '\r') && rnd(&seed) % 4)
                    c = ok[rnd(&seed) % (uint64_t)k];
                buf[n++] = (char)c;
                gr_matcher_accept_bytes(m, (char *)&c, 1);
            }
            buf[n] = 0;
            int complete = gr_matcher_can_end(m);
            cJSON *j = complete ? cJSON_Parse(buf) : NULL;
            total++;
            parsed += j != NULL;
            if (!j) TAP_DIAG("not parsed (complete %d): %s", complete, buf);
            cJSON_Delete(j);
            gr_matcher_free(m);
        }
        gr_free(g);
    }
    TAP_OK(parsed == total, "random walks: %d of %d documents complete and parse as JSON", parsed,
           total);
}

/* The mask over the real vocabulary equals stepping each token's bytes through the state. */
static void test_mask_qwen(const char *root) {
    char dir[2048];
    snprintf(dir, sizeof dir, "%s/models/qwen3-tokenizer", root);
    tok_tokenizer *tok = NULL;
    rs_err e = {0};
    if (tok_load(&tok, dir, &e)) {
        tap_skip("models/qwen3-tokenizer not loadable");
        return;
    }
    int n = tok_vocab_size(tok);
    char **bytes = calloc((size_t)n, sizeof *bytes);
    int *lens = calloc((size_t)n, sizeof *lens);
    for (int i = 0; i < n; i++) {
        size_t l = 0;
        if (tok_token_bytes(tok, i, &bytes[i], &l, &e) == 0) lens[i] = (int)l;
    }
    int32_t eos = tok_special_id(tok, "<|im_end|>");
    gr_vocab *v = NULL;
    TAP_OK(gr_vocab_from_tokenizer(&v, tok, n, &eos, 1, &e) == 0, "Qwen3 vocabulary trie (%s)",
           e.msg);
    TAP_OK(lens[tok_special_id(tok, "<tool_call>")] == 11, "<tool_call> is its 11 bytes");
    const char *schema =
        "{\"type\":\"object\",\"properties\":{\"name\":{\"type\":\"string\",\"maxLength\":5},"
        "\"tags\":{\"type\":\"array\",\"items\":{\"enum\":[\"a\",\"bc\"]}},\"n\":{\"type\":"
        "\"number\"}},"
        "\"required\":[\"name\"],\"additionalProperties\":false}";
    gr_grammar *g = compile(schema, &e);
    const char *prefixes[] = {"",
                              "{",
                              "{\"na",
                              "{\"name\":",
                              "{\"name\":\"ab",
                              "{\"name\":\"abcd",
                              "{\"name\":\"a\",\"tags\":[",
                              "{\"name\":\"a\",\"n\":1",
                              "{\"name\":\"a\"}"};
    uint32_t *mask = calloc((size_t)(n + 31) / 32, 4);
    for (size_t p = 0; g && v && p < sizeof prefixes / sizeof *prefixes; p++) {
        gr_matcher *m = NULL;
        gr_matcher_new(&m, g, &e);
        gr_matcher_accept_bytes(m, prefixes[p], strlen(prefixes[p]));
        int count = gr_matcher_mask(m, v, mask), bad = 0, want_n = 0;
        int can_end = gr_matcher_can_end(m);
        gr_arena a = {0};
        gr_state st, nx;
        gr_state_start(g, &a, &st);
        for (const char *q = prefixes[p]; *q; q++) {
            gr_state_step(g, &a, &st, (unsigned char)*q, &nx);
            st = nx;
        }
        for (int t = 0; t < n; t++) {
            int want;
            if (t == eos) {
                want = can_end;
            } else if (!bytes[t] || lens[t] == 0) {
                want = 0;
            } else {
                gr_mark mk = gr_arena_mark(&a);
                gr_state x = st, y;
                for (int b = 0; b < lens[t] && x.n; b++) {
                    gr_state_step(g, &a, &x, (unsigned char)bytes[t][b], &y);
                    x = y;
                }
                want = x.n > 0;
                gr_arena_reset(&a, mk);
            }
            want_n += want;
            if (want != (int)(mask[t >> 5] >> (t & 31) & 1) && bad++ < 3)
                TAP_DIAG("token %d '%s': want %d", t, bytes[t] ? bytes[t] : "(special)", want);
        }
        TAP_OK(bad == 0 && count == want_n,
               "mask after '%s': %d tokens, equal to stepping each (%d differ)", prefixes[p], count,
               bad);
        gr_matcher_free(m);
        gr_arena_free(&a);
    }
    free(mask);
    gr_free(g);
    gr_vocab_free(v);
    for (int i = 0; i < n; i++) free(bytes[i]);
    free(bytes);
    free(lens);
    tok_free(tok);
}

/* Tool calls: the markers around {"name", "arguments"}; one call unless parallel. */
static void test_tools(void) {
    cJSON *par = cJSON_Parse("{\"type\":\"object\",\"properties\":{\"c\":{\"type\":"
                             "\"string\",\"maxLength\":3}},\"required\":[\"c\"],"
                             "\"additionalProperties\":false}");
    gr_tool tools[] = {{"get_w", par}, {"now", NULL}};
    for (int parallel = 0; parallel < 2; parallel++) {
        gr_grammar *g = NULL;
        rs_err e = {0};
        if (!TAP_OK(gr_compile_tools(&g, tools, 2, "<tool_call>", "</tool_call>", parallel, &e) ==
                        0,
                    "tool grammar compiles (%s)", e.msg))
            continue;
        const char *one = "<tool_call>\n{\"name\": \"get_w\", \"arguments\": {\"c\": \"ab\"}}\n"
                          "</tool_call>";
        char two[512];
        snprintf(two, sizeof two, "%s\n%s", one,
                 "<tool_call>\n{\"arguments\":{\"x\":[1]},\"name\":\"now\"}\n</tool_call>");
        TAP_OK(judge(g, one) == WHOLE, "parallel %d: one call", parallel);
        TAP_OK(judge(g, two) == (parallel ? WHOLE : REJECT), "parallel %d: two calls %s", parallel,
               parallel ? "accepted" : "refused");
        TAP_OK(judge(g, "<tool_call>\n{\"name\": \"get_w\", \"arguments\": {\"c\": 1}}") == REJECT,
               "parallel %d: arguments must match the tool's parameters", parallel);
        TAP_OK(judge(g, "<tool_call>\n{\"name\": \"other\"") == REJECT,
               "parallel %d: an unknown name is refused", parallel);
        TAP_OK(judge(g, "hello") == REJECT, "parallel %d: text before the call is refused",
               parallel);
        gr_free(g);
    }
    cJSON_Delete(par);
}

int main(void) {
    const char *root = getenv("RADIXSERVE_ROOT");
    test_vectors();
    test_errors();
    test_tools();
    test_random_walk();
    test_mask_qwen(root ? root : ".");
    return tap_done();
}
