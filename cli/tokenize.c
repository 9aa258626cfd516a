/*
 * tokenize.c — `radixserve tokenize` and `radixserve detokenize` (the tokenizer room's CLI).
 *
 * Both read one JSON value per line on stdin and write one JSON value per line on stdout. They
 * load only the tokenizer files, so a directory without weights works. On a bad line (invalid
 * JSON, wrong type, invalid UTF-8, an out-of-range id) they print "radixserve tokenize: line N:
 * why" on stderr and exit 1 at once; the lines before it have already been answered.
 */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "tokenizer/tokenizer.h"

typedef struct tok_cli {
    const char *name;  /* "tokenize" or "detokenize", for messages */
    const char *model; /* --model DIR|FILE.gguf */
    int flags;         /* tokenize: TOK_* encode flags */
    int skip_special;  /* detokenize: --skip-special */
    int stream;        /* detokenize: --stream (an array of incremental pieces) */
} tok_cli;

static int usage(const tok_cli *c, FILE *f, int status) {
    if (!strcmp(c->name, "tokenize"))
        fprintf(
            f,
            "usage: radixserve tokenize --model DIR|FILE.gguf [--no-special] [--no-add-special]\n"
            "  reads one JSON string per line on stdin, prints one JSON array of ids per line\n"
            "  --no-special      added/special token spellings in the text are plain text\n"
            "  --add-special     apply the post-processor (e.g. BOS first), the default,\n"
            "                    as Hugging Face's encode(text)\n"
            "  --no-add-special  do not\n");
    else
        fprintf(f,
                "usage: radixserve detokenize --model DIR|FILE.gguf [--skip-special] [--stream]\n"
                "  reads one JSON array of ids per line on stdin, prints one JSON string per line\n"
                "  --skip-special    drop special tokens from the text\n"
                "  --stream          decode id by id; print the JSON array of streamed pieces\n");
    return status;
}

/* 0: parsed; otherwise the exit status to return. */
static int parse_args(tok_cli *c, int argc, char **argv) {
    c->flags = TOK_ADD_SPECIAL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--model") && i + 1 < argc)
            c->model = argv[++i];
        else if (!strcmp(a, "--help") || !strcmp(a, "-h"))
            return usage(c, stdout, 0) - 1;
        else if (!strcmp(a, "--no-special"))
            c->flags |= TOK_NO_SPECIAL;
        else if (!strcmp(a, "--add-special"))
            c->flags |= TOK_ADD_SPECIAL;
        else if (!strcmp(a, "--no-add-special"))
            c->flags &= ~TOK_ADD_SPECIAL;
        else if (!strcmp(a, "--skip-special"))
            c->skip_special = 1;
        else if (!strcmp(a, "--stream"))
            c->stream = 1;
        else {
            fprintf(stderr, "radixserve %s: unknown argument '%s'\n", c->name, a);
            return usage(c, stderr, 2);
        }
    }
    if (!c->model) {
        fprintf(stderr, "radixserve %s: --model DIR|FILE.gguf is required\n", c->name);
        return usage(c, stderr, 2);
    }
    return 0;
}

/* cJSON strings end at a NUL, so a "\u0000" escape would silently cut the text: refuse it. */
static int has_nul_escape(const char *s) {
    for (; *s; s++) {
        if (*s != '\\') continue;
        if (s[1] == 'u' && !strncmp(s + 2, "0000", 4)) return 1;
        if (s[1]) s++;
    }
    return 0;
}

/* Print s[0..n) as a JSON string (cJSON escapes; embedded NULs become \u0000). */
static void print_json_string(const char *s, size_t n, FILE *f) {
    fputc('"', f);
    for (size_t i = 0; i <= n;) {
        size_t l = strnlen(s + i, n - i);
        cJSON *j = cJSON_CreateString(s + i); /* reads up to the NUL at s[i + l] */
        char *p = j ? cJSON_PrintUnformatted(j) : NULL;
        if (p) fwrite(p + 1, 1, strlen(p) - 2, f); /* without the quotes */
        free(p);
        cJSON_Delete(j);
        i += l + 1;
        if (i <= n) fputs("\\u0000", f);
    }
    fputc('"', f);
}

typedef int (*line_fn)(const tok_cli *c, const tok_tokenizer *t, const char *line, rs_err *e);

static int encode_line(const tok_cli *c, const tok_tokenizer *t, const char *line, rs_err *e) {
    cJSON *j = cJSON_Parse(line);
    rs_ivec ids = {0};
    int rc = 0;
    if (!cJSON_IsString(j))
        rc = rs_errf(e, RS_EINVAL, "expected a JSON string");
    else if (has_nul_escape(line))
        rc = rs_errf(e, RS_EINVAL, "\\u0000 in text is not supported");
    else
        rc = tok_encode(t, j->valuestring, strlen(j->valuestring), c->flags, &ids, e);
    if (!rc) {
        putchar('[');
        for (int i = 0; i < ids.n; i++) printf(i ? ",%d" : "%d", ids.v[i]);
        puts("]");
    }
    rs_ivec_free(&ids);
    cJSON_Delete(j);
    return rc;
}

static int read_ids(const char *line, rs_ivec *ids, rs_err *e) {
    cJSON *j = cJSON_Parse(line), *it, *arr = cJSON_IsArray(j) ? j : NULL;
    int rc = arr ? 0 : rs_errf(e, RS_EINVAL, "expected a JSON array of ids");
    cJSON_ArrayForEach(it, arr) {
        double v = cJSON_IsNumber(it) ? it->valuedouble : -1;
        if (rc || v != (double)(int32_t)v || v < 0) {
            rc = rc ? rc : rs_errf(e, RS_EINVAL, "ids must be non-negative integers");
            break;
        }
        if (rs_ivec_push(ids, (int32_t)v)) rc = rs_errf(e, RS_ENOMEM, "out of memory");
    }
    cJSON_Delete(j);
    return rc;
}

/* Decode id by id; print the pieces as one JSON array. */
static int stream_ids(const tok_cli *c, const tok_tokenizer *t, const rs_ivec *ids, rs_err *e) {
    tok_stream s;
    tok_stream_init(&s, t, c->skip_special);
    int rc = 0;
    putchar('[');
    for (int i = 0; i <= ids->n && !rc; i++) {
        char *piece = NULL;
        rc = i < ids->n ? tok_stream_push(&s, ids->v[i], &piece, e)
                        : tok_stream_flush(&s, &piece, e);
        if (!rc) {
            if (i) putchar(',');
            print_json_string(piece, strlen(piece), stdout);
        }
        free(piece);
    }
    puts("]");
    tok_stream_free(&s);
    return rc;
}

static int decode_line(const tok_cli *c, const tok_tokenizer *t, const char *line, rs_err *e) {
    rs_ivec ids = {0};
    char *text = NULL;
    int rc = read_ids(line, &ids, e);
    if (!rc && c->stream)
        rc = stream_ids(c, t, &ids, e);
    else if (!rc)
        rc = tok_decode(t, ids.v, ids.n, c->skip_special, &text, e);
    if (!rc && text) print_json_string(text, strlen(text), stdout), putchar('\n');
    free(text);
    rs_ivec_free(&ids);
    return rc;
}

static int run(tok_cli *c, int argc, char **argv, line_fn fn) {
    int st = parse_args(c, argc, argv);
    if (st) return st < 0 ? 0 : st;
    rs_err e = {0};
    tok_tokenizer *t;
    if (cli_load_tokenizer(&t, c->model, &e)) {
        fprintf(stderr, "radixserve %s: %s\n", c->name, e.msg);
        return 1;
    }
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    long lineno = 0;
    st = 0;
    while (!st && (n = getline(&line, &cap, stdin)) >= 0) {
        lineno++;
        while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r')) line[--n] = 0;
        if (!n) continue;
        if ((size_t)n != strlen(line)) st = rs_errf(&e, RS_EINVAL, "NUL byte in input");
        if (!st) st = fn(c, t, line, &e);
        if (st) fprintf(stderr, "radixserve %s: line %ld: %s\n", c->name, lineno, e.msg);
        fflush(stdout);
    }
    free(line);
    tok_free(t);
    return st ? 1 : 0;
}

int cli_tokenize(int argc, char **argv) {
    tok_cli c = {.name = "tokenize"};
    return run(&c, argc, argv, encode_line);
}

int cli_detokenize(int argc, char **argv) {
    tok_cli c = {.name = "detokenize"};
    return run(&c, argc, argv, decode_line);
}
