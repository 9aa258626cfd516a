/*
 * fuzz_template.c — the chat template renderer (chat/chat.h). First byte even: the input
 * after it is a template source (up to a NUL; what follows is a chat body, or a fixed one),
 * compiled and rendered: arbitrary Jinja through the lexer, parser and evaluator with their
 * resource limits. Odd: the input is a chat request body rendered by models/qwen3-tokenizer's
 * real template. A render of valid UTF-8 input must be valid UTF-8.
 */
#include "api/api.h"
#include "chat/chat.h"
#include "fuzz/fuzz.h"

static chat_tpl g_qwen;
static int g_qwen_ok;

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc, (void)argv;
    char dir[1024];
    rs_err e;
    fuzz_path(dir, sizeof dir, "models/qwen3-tokenizer");
    g_qwen_ok = chat_tpl_load(&g_qwen, dir, &e) == 0;
    if (!g_qwen_ok) fprintf(stderr, "fuzz_template: %s\n", e.msg);
    return 0;
}

static const char *FIXED =
    "{\"messages\":[{\"role\":\"system\",\"content\":\"be brief\"},{\"role\":\"user\","
    "\"content\":\"hi\"},{\"role\":\"assistant\",\"content\":\"<think>x</think>ok\"}],"
    "\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"f\",\"parameters\":{}}}]}";

static void render(const chat_tpl *t, const char *body, size_t len) {
    api_chat_request r;
    api_error err;
    if (api_parse_chat(body, len, &r, &err)) return;
    char *out = NULL;
    rs_err e;
    if (chat_tpl_render(t, r.tpl, &out, NULL, &e) == 0)
        FUZZ_CHECK(fuzz_utf8(out), "a render of valid UTF-8 is valid UTF-8");
    else
        FUZZ_CHECK(e.msg[0], "a failed render says why");
    free(out);
    api_chat_request_free(&r);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    if (data[0] & 1) {
        if (g_qwen_ok) render(&g_qwen, (const char *)data + 1, size - 1);
        return 0;
    }
    char *src = malloc(size);
    if (!src) return 0;
    memcpy(src, data + 1, size - 1);
    src[size - 1] = 0;
    size_t slen = strlen(src);
    const char *body = slen + 1 < size - 1 ? src + slen + 1 : FIXED;
    size_t blen = slen + 1 < size - 1 ? size - 1 - slen - 1 : strlen(FIXED);
    chat_tpl t;
    rs_err e;
    if (fuzz_utf8(src) && chat_tpl_init_string(&t, src, "<s>", "</s>", &e) == 0) {
        render(&t, body, blen);
        chat_tpl_free(&t);
    }
    free(src);
    return 0;
}
