/*
 * bench_tokenizer.c — encode / decode throughput of the tokenizer on one core.
 *
 * Usage: bench_tokenizer [MB] [ROOT] [MODEL]   (default 8 MB of text; ROOT = repository root;
 *        MODEL = only this model directory under models/)
 * Prints one line per case: MB/s of UTF-8 input encoded (or output decoded) per CPU second of
 * the encoding thread (so a busy machine does not distort it much). The text is
 * generated mixed English / Chinese prose (seeded, so every run measures the same input): the
 * first pass starts with an empty pre-token cache, the second reuses it.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "tokenizer/tokenizer.h"

/* CPU seconds of this thread: the figure is per core even on a busy machine. */
static double cpu_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static const char *const EN[] = {
    "the",        "model",   "server", "cache", "prefix", "token", "request",
    "batch",      "and",     "of",     "Once",  "upon",   "a",     "time",
    "little",     "girl",    "named",  "Lily",  "don't",  "it's",  "performance",
    "throughput", "latency", "GPU",    "2024",  "42",     "3.14",  "internationalization",
};
static const char *const ZH[] = {
    "明月几时有",   "把酒问青天",     "人工智能",     "机器学习", "我们今天去公园",
    "数据库",       "服务器",         "缓存",         "前缀",     "模型推理",
    "这是一个测试", "中华人民共和国", "深度学习框架",
};
static const char *const SEP[] = {" ", " ", " ", ", ", ". ", "，", "。", "\n", "\n\n", "! "};

static char *make_text(size_t bytes) {
    char *s = malloc(bytes + 64);
    size_t n = 0;
    unsigned x = 7;
    while (s && n < bytes) {
        x = x * 1103515245u + 12345u;
        const char *w = (x >> 16) % 3 ? EN[(x >> 8) % (sizeof EN / sizeof *EN)]
                                      : ZH[(x >> 8) % (sizeof ZH / sizeof *ZH)];
        const char *sep = SEP[(x >> 20) % (sizeof SEP / sizeof *SEP)];
        size_t a = strlen(w), b = strlen(sep);
        if (n + a + b >= bytes) break;
        memcpy(s + n, w, a);
        memcpy(s + n + a, sep, b);
        n += a + b;
    }
    if (s) s[n] = 0;
    return s;
}

/* Encode the text in 4 KB chunks (prompt-sized, cut at a newline or space). */
static double encode_mbps(const tok_tokenizer *t, const char *text, rs_ivec *ids) {
    size_t n = strlen(text), pos = 0;
    ids->n = 0;
    double t0 = cpu_now();
    while (pos < n) {
        size_t end = pos + 4096 < n ? pos + 4096 : n;
        while (end < n && text[end] != ' ' && text[end] != '\n') end++;
        rs_err e = {0};
        if (tok_encode(t, text + pos, end - pos, 0, ids, &e)) {
            fprintf(stderr, "encode failed: %s\n", e.msg);
            return 0;
        }
        pos = end;
    }
    return (double)n / 1e6 / (cpu_now() - t0);
}

static double decode_mbps(const tok_tokenizer *t, const rs_ivec *ids) {
    double t0 = cpu_now();
    size_t bytes = 0;
    for (int i = 0; i < ids->n; i += 1024) {
        int k = ids->n - i < 1024 ? ids->n - i : 1024;
        char *s = NULL;
        rs_err e = {0};
        if (tok_decode(t, ids->v + i, k, 0, &s, &e)) return 0;
        bytes += strlen(s);
        free(s);
    }
    return (double)bytes / 1e6 / (cpu_now() - t0);
}

static int bench(const char *root, const char *model, const char *text) {
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/models/%s", root, model);
    tok_tokenizer *t;
    rs_err e = {0};
    if (tok_load(&t, dir, &e)) {
        fprintf(stderr, "bench_tokenizer: %s\n", e.msg);
        return 1;
    }
    rs_ivec ids = {0};
    double cold = encode_mbps(t, text, &ids), warm = encode_mbps(t, text, &ids);
    double d = decode_mbps(t, &ids);
    printf("tokenizer %-16s encode %7.1f MB/s (cold cache) %7.1f MB/s (warm)  decode %7.1f MB/s"
           "  (%.1f MB, %d tokens)\n",
           model, cold, warm, d, (double)strlen(text) / 1e6, ids.n);
    rs_ivec_free(&ids);
    tok_free(t);
    return 0;
}

int main(int argc, char **argv) {
    double mb = argc > 1 ? atof(argv[1]) : 8;
    const char *root = argc > 2 ? argv[2] : getenv("RADIXSERVE_ROOT");
    if (!root) root = ".";
    char *text = make_text((size_t)(mb * 1e6));
    if (!text || mb <= 0) return 2;
    int rc = argc > 3 ? bench(root, argv[3], text)
                      : bench(root, "qwen3-tokenizer", text) || bench(root, "stories260K", text);
    free(text);
    return rc;
}
