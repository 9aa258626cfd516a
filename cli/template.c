/*
 * template.c — `radixserve template --model DIR|FILE.gguf`: render chat requests with the
 * model's chat template, one per line, reading only DIR/tokenizer_config.json and
 * DIR/chat_template.jinja if present, or a GGUF file's metadata (no weights needed). Content parts
 * are joined as the server joins them (api_join_content), then the request is rendered
 * (chat_tpl_render).
 *
 * stdin: one JSON object per line {messages, tools, add_generation_prompt, chat_template_kwargs};
 * blank lines are skipped. stdout: for each request, the rendered prompt as one JSON string line;
 * for a bad request (invalid UTF-8, bad JSON, a template error) the line is instead
 * {"error": "message"}, the remaining lines are still processed, and the exit status is 1.
 * Exit 2 on bad arguments, 1 when the template cannot be loaded or any line failed, else 0.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <utf8proc.h>

#include "chat/chat.h"
#include "cli/cli.h"

static void usage(FILE *f) {
    fprintf(f, "usage: radixserve template --model DIR|FILE.gguf\n"
               "  reads one JSON chat request per line on stdin (messages, tools,\n"
               "  add_generation_prompt, chat_template_kwargs) and prints each rendered prompt\n"
               "  as a JSON string line; a bad line prints {\"error\": \"...\"} and the exit\n"
               "  status becomes 1.\n");
}

static bool valid_utf8(const char *s, size_t n) {
    utf8proc_int32_t cp;
    for (size_t i = 0; i < n;) {
        utf8proc_ssize_t k =
            utf8proc_iterate((const utf8proc_uint8_t *)s + i, (utf8proc_ssize_t)(n - i), &cp);
        if (k <= 0) return false;
        i += (size_t)k;
    }
    return true;
}

static void print_json_string(const char *key, const char *s) {
    cJSON *v = cJSON_CreateString(s);
    cJSON *obj = key ? cJSON_CreateObject() : v;
    if (key && obj) cJSON_AddItemToObject(obj, key, v);
    char *text = obj ? cJSON_PrintUnformatted(obj) : NULL;
    if (text)
        printf("%s\n", text);
    else
        printf("{\"error\":\"out of memory\"}\n");
    free(text);
    cJSON_Delete(obj);
}

/* One request line: 0 ok (prompt printed), 1 failed (error printed). */
static int render_line(const chat_tpl *t, const char *line, size_t n) {
    rs_err e = {0};
    if (!valid_utf8(line, n)) {
        print_json_string("error", "input line is not valid UTF-8");
        return 1;
    }
    cJSON *req = cJSON_ParseWithLength(line, n);
    if (!req) {
        print_json_string("error", "input line is not valid JSON");
        return 1;
    }
    char *out = NULL;
    api_error err = {0};
    cJSON *msgs = cJSON_GetObjectItemCaseSensitive(req, "messages");
    /* OpenAI content parts are joined as the server joins them (api/) */
    int rc = cJSON_IsArray(msgs) && api_join_content(msgs, &err)
                 ? rs_errf(&e, RS_EINVAL, "%s", err.message)
                 : chat_tpl_render(t, req, &out, NULL, &e);
    cJSON_Delete(req);
    print_json_string(rc ? "error" : NULL, rc ? e.msg : out);
    free(out);
    return rc ? 1 : 0;
}

int cli_template(int argc, char **argv) {
    const char *model = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--model") && i + 1 < argc)
            model = argv[++i];
        else if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            usage(stdout);
            return 0;
        } else {
            usage(stderr);
            return 2;
        }
    }
    if (!model) {
        usage(stderr);
        return 2;
    }
    chat_tpl t;
    rs_err e = {0};
    if (cli_load_template(&t, model, &e)) {
        fprintf(stderr, "radixserve template: %s\n", e.msg);
        return 1;
    }
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    int failed = 0;
    while ((n = getline(&line, &cap, stdin)) >= 0) {
        while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r')) n--;
        if (!n) continue;
        failed |= render_line(&t, line, (size_t)n);
        fflush(stdout);
    }
    free(line);
    chat_tpl_free(&t);
    return failed ? 1 : 0;
}
