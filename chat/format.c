/*
 * format.c — the chat format of a model (built once at load: template, markers, capabilities)
 * and the reader that splits one choice's output into reasoning, content and tool calls.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chat/chat.h"

/* Probe requests: their prompts tell what the template does (rendered once, at init). */
static const char PROBE_TOOLS[] =
    "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"add_generation_prompt\":true,"
    "\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"chat_probe_fn\","
    "\"description\":\"d\",\"parameters\":{\"type\":\"object\",\"properties\":{}}}}]}";
static const char PROBE_THINK_ON[] =
    "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"add_generation_prompt\":true,"
    "\"chat_template_kwargs\":{\"enable_thinking\":true}}";
static const char PROBE_THINK_OFF[] =
    "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"add_generation_prompt\":true,"
    "\"chat_template_kwargs\":{\"enable_thinking\":false}}";
static const char PROBE_REASONING[] =
    "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"},{\"role\":\"assistant\","
    "\"content\":\"a\",\"reasoning_content\":\"chat_probe_reasoning\"}]}";

enum { P_TOOLS, P_THINK_ON, P_THINK_OFF, P_REASONING, N_PROBES };

/* A probe's prompt, or NULL when the template refuses it (a probe never fails init). */
static char *probe(const chat_tpl *t, const char *json) {
    cJSON *req = cJSON_Parse(json);
    char *out = NULL;
    rs_err ignore = {0};
    if (req && chat_tpl_render(t, req, &out, NULL, &ignore)) out = NULL;
    cJSON_Delete(req);
    return out;
}

static int any_contains(char *const *prompts, const char *s) {
    for (int i = 0; i < N_PROBES; i++)
        if (prompts[i] && strstr(prompts[i], s)) return 1;
    return 0;
}

/* The marker pair, when a probe's prompt shows it and the tokenizer has both as added tokens. */
static void find_marker(chat_marker *m, char *const *prompts, const tok_tokenizer *tok,
                        const char *open, const char *close) {
    m->open = m->close = NULL;
    m->open_id = m->close_id = -1;
    if (!any_contains(prompts, open)) return;
    int32_t oid = tok ? tok_special_id(tok, open) : -1, cid = tok ? tok_special_id(tok, close) : -1;
    if (tok && (oid < 0 || cid < 0)) return;
    m->open = open, m->close = close;
    m->open_id = oid, m->close_id = cid;
}

static unsigned find_caps(char *const *p) {
    unsigned caps = 0;
    if (p[P_TOOLS] && strstr(p[P_TOOLS], "chat_probe_fn")) caps |= CHAT_CAN_TOOLS;
    if (p[P_THINK_ON] && p[P_THINK_OFF] && strcmp(p[P_THINK_ON], p[P_THINK_OFF]))
        caps |= CHAT_CAN_THINKING;
    if (p[P_REASONING] && strstr(p[P_REASONING], "chat_probe_reasoning"))
        caps |= CHAT_CAN_REASONING;
    return caps;
}

int chat_format_init(chat_format *f, const tok_config *c, const tok_tokenizer *tok, rs_err *e) {
    memset(f, 0, sizeof *f);
    f->think.open_id = f->think.close_id = f->tool.open_id = f->tool.close_id = -1;
    int rc = chat_tpl_init(&f->tpl, c, e);
    if (rc || !chat_tpl_has_template(&f->tpl)) return rc;
    static const char *const json[N_PROBES] = {PROBE_TOOLS, PROBE_THINK_ON, PROBE_THINK_OFF,
                                               PROBE_REASONING};
    char *prompts[N_PROBES];
    for (int i = 0; i < N_PROBES; i++) prompts[i] = probe(&f->tpl, json[i]);
    f->caps = find_caps(prompts);
    find_marker(&f->think, prompts, tok, CHAT_THINK_OPEN, CHAT_THINK_CLOSE);
    find_marker(&f->tool, prompts, tok, CHAT_TOOL_OPEN, CHAT_TOOL_CLOSE);
    for (int i = 0; i < N_PROBES; i++) free(prompts[i]);
    return 0;
}

void chat_format_free(chat_format *f) {
    if (!f) return;
    chat_tpl_free(&f->tpl);
    memset(f, 0, sizeof *f);
}

int chat_format_render(const chat_format *f, const cJSON *request, char **out, size_t *out_len,
                       rs_err *e) {
    return chat_tpl_render(&f->tpl, request, out, out_len, e);
}

/* ---------------------------------------------------------------- reading a choice */

/* The rendered prompt ends inside an opened <think> (templates that start the reasoning). */
static int ends_with_open(const char *p, const char *open) {
    size_t n = strlen(p), k = strlen(open);
    while (n && strchr(" \t\r\n", p[n - 1])) n--;
    return n >= k && !memcmp(p + n - k, open, k);
}

static int wants_tools(const cJSON *req) {
    const cJSON *tc = cJSON_GetObjectItemCaseSensitive(req, "tool_choice");
    return cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(req, "tools")) > 0 &&
           !(cJSON_IsString(tc) && !strcmp(tc->valuestring, "none"));
}

void chat_reader_init(chat_reader *r, const chat_format *f, const cJSON *request,
                      const char *prompt, const char *id_base) {
    const cJSON *kw = cJSON_GetObjectItemCaseSensitive(request, "chat_template_kwargs");
    const cJSON *et = cJSON_GetObjectItemCaseSensitive(kw, "enable_thinking");
    const cJSON *par = cJSON_GetObjectItemCaseSensitive(request, "parallel_tool_calls");
    int thinking = f->think.open && !cJSON_IsFalse(et);
    memset(r, 0, sizeof *r);
    chat_think_init(&r->think, thinking, thinking && ends_with_open(prompt, f->think.open));
    r->use_tools = f->tool.open && wants_tools(request);
    chat_tools_init(&r->tools, id_base, cJSON_IsFalse(par) ? 1 : 0);
}

int chat_reader_feed(chat_reader *r, const char *text, int final, api_buf *reasoning,
                     api_buf *content, cJSON *calls) {
    if (!r->use_tools) {
        int rc = chat_think_feed(&r->think, text, reasoning, content);
        return rc || !final ? rc : chat_think_flush(&r->think, reasoning, content);
    }
    api_buf raw = {0};
    int rc = chat_think_feed(&r->think, text, reasoning, &raw);
    if (!rc && final) rc = chat_think_flush(&r->think, reasoning, &raw);
    if (!rc) rc = chat_tools_feed(&r->tools, api_buf_str(&raw), content, calls);
    if (!rc && final) rc = chat_tools_flush(&r->tools, content);
    api_buf_free(&raw);
    return rc;
}

int chat_reader_n_calls(const chat_reader *r) {
    return r->tools.n_calls;
}

void chat_reader_free(chat_reader *r) {
    chat_think_free(&r->think);
    chat_tools_free(&r->tools);
}
