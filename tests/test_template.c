/*
 * test_template.c — the chat template API (chat/chat.h) from C: loading, rendering the real
 * Qwen3 template, content-part normalisation, the plain fallback, errors with messages, many
 * threads rendering one template, and a mutation fuzz of the Qwen3 template (any outcome but a
 * crash, hang or leak is fine; run it under `make test-asan`).
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "chat/chat.h"
#include "tests/tap.h"

static char root[1024];

static const char *model(const char *name) {
    static char path[1200];
    snprintf(path, sizeof path, "%s/models/%s", root, name);
    return path;
}

/* Render a JSON request; returns the prompt (malloc'd) or NULL with e filled. */
static char *render_json(const chat_tpl *t, const char *json, rs_err *e) {
    cJSON *req = cJSON_Parse(json);
    char *out = NULL;
    if (!req) {
        rs_errf(e, RS_EINVAL, "test JSON does not parse");
        return NULL;
    }
    api_error err = {0};
    cJSON *msgs = cJSON_GetObjectItemCaseSensitive(req, "messages");
    if (cJSON_IsArray(msgs) && api_join_content(msgs, &err))
        rs_errf(e, RS_EINVAL, "%s", err.message);
    else if (chat_tpl_render(t, req, &out, NULL, e))
        out = NULL;
    cJSON_Delete(req);
    return out;
}

static void test_qwen(chat_tpl *t) {
    rs_err e = {0};
    char *p = render_json(t,
                          "{\"messages\":[{\"role\":\"system\",\"content\":\"S\"},"
                          "{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"a\"},"
                          "{\"type\":\"text\",\"text\":\"b\"}]},"
                          "{\"role\":\"assistant\",\"content\":\"<think>\\nr\\n</think>\\n\\nA\"},"
                          "{\"role\":\"user\",\"content\":\"Q\"}],"
                          "\"add_generation_prompt\":true,"
                          "\"chat_template_kwargs\":{\"enable_thinking\":false}}",
                          &e);
    const char *want = "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\na\nb<|im_end|>\n"
                       "<|im_start|>assistant\nA<|im_end|>\n<|im_start|>user\nQ<|im_end|>\n"
                       "<|im_start|>assistant\n<think>\n\n</think>\n\n";
    TAP_OK(p && !strcmp(p, want), "Qwen3: parts joined, history think stripped, thinking off (%s)",
           p ? "rendered" : e.msg);
    free(p);

    p = render_json(
        t,
        "{\"messages\":[{\"role\":\"user\",\"content\":\"w?\"},{\"role\":\"assistant\","
        "\"content\":\"\",\"tool_calls\":[{\"type\":\"function\",\"function\":{\"name\":"
        "\"f\",\"arguments\":{\"x\":1.5,\"y\":\"é\"}}}]},{\"role\":\"tool\",\"content\":"
        "\"r\"}],\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"f\"}}]}",
        &e);
    TAP_OK(p && strstr(p, "{\"type\": \"function\", \"function\": {\"name\": \"f\"}}") &&
               strstr(p, "<tool_call>\n{\"name\": \"f\", \"arguments\": {\"x\": 1.5, \"y\": "
                         "\"é\"}}\n</tool_call><|im_end|>\n<|im_start|>user\n<tool_response>\nr\n"
                         "</tool_response><|im_end|>\n"),
           "Qwen3: tools and tool calls rendered with tojson (ensure_ascii off)");
    free(p);
}

static void test_errors(void) {
    chat_tpl t;
    rs_err e = {0};
    int rc = chat_tpl_init_string(&t, "ok\n{% if x %}\n{{ 1 + }}\n{% endif %}", NULL, NULL, &e);
    TAP_OK(rc == RS_EINVAL && strstr(e.msg, "line 3"), "syntax error names line 3: %s", e.msg);
    chat_tpl_free(&t);

    rc = chat_tpl_init_string(&t, "{{ raise_exception('roles must alternate') }}", NULL, NULL, &e);
    char *p = rc ? NULL : render_json(&t, "{\"messages\":[{\"role\":\"user\"}]}", &e);
    TAP_OK(!rc && !p && e.code == RS_EINVAL && strstr(e.msg, "roles must alternate"),
           "raise_exception surfaces its message: %s", e.msg);
    free(p);
    chat_tpl_free(&t);

    const char *bad_requests[] = {
        "{\"messages\":[]}",
        "{\"messages\":{}}",
        "[]",
        "{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"image_url\"}]}]}",
        "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"add_generation_prompt\":1}",
        "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"chat_template_kwargs\":[]}",
        "{\"messages\":[5]}",
    };
    chat_tpl_init_string(&t, "{{ messages[0].content }}", NULL, NULL, &e);
    int rejected = 0;
    for (size_t i = 0; i < sizeof bad_requests / sizeof bad_requests[0]; i++) {
        rs_err e2 = {0};
        char *q = render_json(&t, bad_requests[i], &e2);
        rejected += !q && e2.code == RS_EINVAL && e2.msg[0];
        free(q);
    }
    TAP_OK(rejected == (int)(sizeof bad_requests / sizeof bad_requests[0]),
           "malformed requests are RS_EINVAL with a message (%d)", rejected);
    chat_tpl_free(&t);

    rc = chat_tpl_load(&t, "/nonexistent-model-dir", &e);
    TAP_OK(rc != 0 && strstr(e.msg, "tokenizer_config.json"), "missing config: %s", e.msg);
    chat_tpl_free(&t);
}

static void test_plain(void) {
    chat_tpl t;
    rs_err e = {0};
    int rc = chat_tpl_load(&t, model("stories260K"), &e);
    TAP_OK(!rc && !chat_tpl_has_template(&t), "stories260K loads with the plain rendering");
    char *p = rc ? NULL
                 : render_json(&t,
                               "{\"messages\":[{\"role\":\"system\",\"content\":\"s\"},{\"role\":"
                               "\"user\",\"content\":\"Once upon a time\"}],"
                               "\"add_generation_prompt\":true}",
                               &e);
    TAP_OK(p && !strcmp(p, "<s>s\nOnce upon a time"), "plain: BOS + contents joined by \\n (%s)",
           p ? "rendered" : e.msg);
    free(p);
    chat_tpl_free(&t);
}

/* chat_template.jinja beside tokenizer_config.json replaces the config's template. */
static void test_jinja_file(void) {
    const char *tmp = getenv("RADIXSERVE_TMP");
    char dir[1200], path[1300];
    snprintf(dir, sizeof dir, "%s/template-jinja-file", tmp ? tmp : "/tmp");
    mkdir(dir, 0755);
    snprintf(path, sizeof path, "%s/tokenizer_config.json", dir);
    FILE *f = fopen(path, "w");
    if (f) fputs("{\"bos_token\": \"<s>\", \"chat_template\": \"{{ broken\"}", f), fclose(f);
    snprintf(path, sizeof path, "%s/chat_template.jinja", dir);
    f = fopen(path, "w");
    if (f) fputs("{{ bos_token }}J:{{ messages[0].content }}\n", f), fclose(f);
    chat_tpl t;
    rs_err e = {0};
    int rc = chat_tpl_load(&t, dir, &e);
    char *p =
        rc ? NULL : render_json(&t, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}", &e);
    TAP_OK(p && !strcmp(p, "<s>J:x"), "chat_template.jinja overrides the config's template (%s)",
           p ? "rendered" : e.msg);
    free(p);
    chat_tpl_free(&t);
    f = fopen(path, "w");
    if (f) fputs("{% if %}", f), fclose(f);
    rc = chat_tpl_load(&t, dir, &e);
    TAP_OK(rc == RS_EINVAL && strstr(e.msg, "chat_template.jinja"), "its syntax error names it: %s",
           e.msg);
    chat_tpl_free(&t);
}

typedef struct job {
    const chat_tpl *t; /* shared template */
    const char *want;  /* expected prompt */
    int mismatches;    /* renders that differed */
} job;

static void *render_many(void *arg) {
    job *j = arg;
    for (int i = 0; i < 200; i++) {
        rs_err e = {0};
        char *p = render_json(j->t,
                              "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"},{\"role\":"
                              "\"assistant\",\"content\":\"<think>x</think>yo\"}],"
                              "\"add_generation_prompt\":false}",
                              &e);
        j->mismatches += !p || strcmp(p, j->want);
        free(p);
    }
    return NULL;
}

static void test_threads(const chat_tpl *t) {
    const char *want = "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n<think>\nx\n"
                       "</think>\n\nyo<|im_end|>\n";
    pthread_t th[4];
    job jobs[4];
    for (int i = 0; i < 4; i++) {
        jobs[i] = (job){t, want, 0};
        pthread_create(&th[i], NULL, render_many, &jobs[i]);
    }
    int bad = 0;
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        bad += jobs[i].mismatches;
    }
    TAP_OK(bad == 0, "4 threads x 200 renders of one template agree (%d mismatches)", bad);
}

/* Mutations of the real template: delete, duplicate or replace a random byte with a Jinja
 * metacharacter. Whatever compiles is rendered; nothing may crash. */
static void test_fuzz(const chat_tpl *qwen) {
    const char *src = qwen->source;
    size_t n = strlen(src);
    char *buf = malloc(n + 8);
    static const char meta[] = "{}%#-+()[]|.'\"~ \n";
    unsigned seed = 12345;
    int compiled = 0, rendered = 0, iters = 1500;
    for (int it = 0; it < iters; it++) {
        memcpy(buf, src, n + 1);
        size_t len = n;
        for (int k = 0; k < 3; k++) {
            seed = seed * 1103515245u + 12345u;
            size_t pos = (seed >> 8) % len;
            int op = (int)((seed >> 4) % 3);
            if (op == 0)
                memmove(buf + pos, buf + pos + 1, len-- - pos);
            else if (op == 1)
                buf[pos] = meta[(seed >> 16) % (sizeof meta - 1)];
            else if (len + 1 < n + 8) {
                memmove(buf + pos + 1, buf + pos, len++ - pos + 1);
                buf[pos] = meta[(seed >> 20) % (sizeof meta - 1)];
            }
        }
        chat_tpl t;
        rs_err e = {0};
        if (chat_tpl_init_string(&t, buf, NULL, NULL, &e)) continue;
        compiled++;
        char *p = render_json(&t,
                              "{\"messages\":[{\"role\":\"system\",\"content\":\"s\"},{\"role\":"
                              "\"user\",\"content\":\"u\"},{\"role\":\"assistant\",\"content\":"
                              "\"<think>t</think>a\",\"tool_calls\":[{\"function\":{\"name\":\"f\","
                              "\"arguments\":{}}}]},{\"role\":\"tool\",\"content\":\"r\"}],"
                              "\"tools\":[{\"name\":\"f\"}],\"add_generation_prompt\":true}",
                              &e);
        rendered += p != NULL;
        free(p);
        chat_tpl_free(&t);
    }
    free(buf);
    TAP_OK(compiled > 0, "fuzz: %d mutated templates, %d compiled, %d rendered, no crash", iters,
           compiled, rendered);
}

int main(void) {
    const char *r = getenv("RADIXSERVE_ROOT");
    snprintf(root, sizeof root, "%s", r ? r : ".");
    chat_tpl qwen;
    rs_err e = {0};
    int rc = chat_tpl_load(&qwen, model("qwen3-tokenizer"), &e);
    TAP_OK(rc == 0 && chat_tpl_has_template(&qwen), "Qwen3 template loads (%s)", rc ? e.msg : "ok");
    if (rc) return tap_done();
    test_qwen(&qwen);
    test_errors();
    test_plain();
    test_jinja_file();
    test_threads(&qwen);
    test_fuzz(&qwen);
    chat_tpl_free(&qwen);
    return tap_done();
}
