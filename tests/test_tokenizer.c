/*
 * test_tokenizer.c — the tokenizer room's C unit tests: known vectors, added/special tokens,
 * TOK_NO_SPECIAL, the post-processor's BOS, incremental decoding (" time", never half a
 * character, concatenation == whole decode), bad ids, invalid UTF-8, unknown component types,
 * the vocab.json + merges.txt path and concurrent use of one tokenizer.
 */
#include <cjson/cJSON.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "tap.h"
#include "tokenizer/tokenizer.h"

static char root[1024], tmp[1024];

static tok_tokenizer *load(const char *model) {
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/models/%s", root, model);
    tok_tokenizer *t = NULL;
    rs_err e = {0};
    if (!TAP_OK(tok_load(&t, dir, &e) == 0, "load %s (%s)", model, e.msg)) return NULL;
    return t;
}

static int ids_equal(const rs_ivec *a, const int32_t *b, int n) {
    return a->n == n && !memcmp(a->v, b, (size_t)n * sizeof *b);
}

static int contains(const rs_ivec *a, int32_t id) {
    for (int i = 0; i < a->n; i++)
        if (a->v[i] == id) return 1;
    return 0;
}

static rs_ivec enc(const tok_tokenizer *t, const char *s, int flags) {
    rs_ivec v = {0};
    rs_err e = {0};
    if (tok_encode(t, s, strlen(s), flags, &v, &e)) TAP_DIAG("encode failed: %s", e.msg);
    return v;
}

static char *dec(const tok_tokenizer *t, const rs_ivec *v, int skip) {
    char *s = NULL;
    rs_err e = {0};
    if (tok_decode(t, v->v, v->n, skip, &s, &e)) TAP_DIAG("decode failed: %s", e.msg);
    return s;
}

static int utf8_ok(const char *s) {
    const unsigned char *u = (const unsigned char *)s;
    while (*u) {
        int n = *u < 0x80             ? 1
                : (*u & 0xE0) == 0xC0 ? 2
                : (*u & 0xF0) == 0xE0 ? 3
                : (*u & 0xF8) == 0xF0 ? 4
                                      : 0;
        if (!n) return 0;
        for (int k = 1; k < n; k++)
            if ((u[k] & 0xC0) != 0x80) return 0;
        u += n;
    }
    return 1;
}

/* Stream ids one by one; returns the concatenation (malloc'd) and checks every piece is whole
 * UTF-8. pieces (optional) receives the pieces joined by '|'. */
static char *stream_all(const tok_tokenizer *t, const rs_ivec *v, int skip, int *bad_piece,
                        char *pieces, size_t cap) {
    tok_stream s;
    tok_stream_init(&s, t, skip);
    size_t n = 0, pn = 0;
    char *all = calloc(1, 1);
    *bad_piece = 0;
    if (pieces) pieces[0] = 0;
    for (int i = 0; i <= v->n; i++) {
        char *p = NULL;
        rs_err e = {0};
        int rc = i < v->n ? tok_stream_push(&s, v->v[i], &p, &e) : tok_stream_flush(&s, &p, &e);
        if (rc) {
            TAP_DIAG("stream failed: %s", e.msg);
            *bad_piece = 1;
            break;
        }
        if (!utf8_ok(p)) *bad_piece = 1;
        size_t l = strlen(p);
        all = realloc(all, n + l + 1);
        memcpy(all + n, p, l + 1);
        n += l;
        if (pieces && *p && pn + l + 2 < cap)
            pn += (size_t)snprintf(pieces + pn, cap - pn, "%s|", p);
        free(p);
    }
    tok_stream_free(&s);
    return all;
}

static void test_qwen(const tok_tokenizer *t) {
    static const int32_t article[] = {30858, 9754, 99195, 13343, 18830, 3837, 99360, 99525, 56007};
    rs_ivec v = enc(t, "明月几时有，把酒问", TOK_ADD_SPECIAL);
    TAP_OK(ids_equal(&v, article, 9), "qwen3: 明月几时有，把酒问 -> the article's 9 ids");
    rs_ivec_free(&v);

    TAP_OK(tok_special_id(t, "<|im_start|>") == 151644 &&
               tok_special_id(t, "<|im_end|>") == 151645 &&
               tok_special_id(t, "<think>") == 151667 && tok_special_id(t, "<nope>") == -1,
           "qwen3: tok_special_id finds <|im_start|> 151644, <|im_end|> 151645, <think> 151667");
    const char *chat = "<|im_start|>user\nhi<|im_end|>\n<think>\n\n</think>";
    v = enc(t, chat, TOK_ADD_SPECIAL);
    TAP_OK(v.n > 3 && v.v[0] == 151644 && contains(&v, 151645) && contains(&v, 151667) &&
               contains(&v, 151668),
           "qwen3: special and added tokens are matched in the text (%d ids)", v.n);
    char *s = dec(t, &v, 0);
    TAP_OK(s && !strcmp(s, chat), "qwen3: decode gives the text back with the special tokens");
    free(s);
    s = dec(t, &v, 1);
    TAP_OK(s && !strcmp(s, "user\nhi\n<think>\n\n</think>"),
           "qwen3: skip_special drops <|im_start|>/<|im_end|> but keeps non-special <think>");
    free(s);
    rs_ivec_free(&v);

    v = enc(t, chat, TOK_NO_SPECIAL);
    TAP_OK(!contains(&v, 151644) && !contains(&v, 151645) && !contains(&v, 151667),
           "qwen3: TOK_NO_SPECIAL encodes <|im_start|> etc. as plain text");
    s = dec(t, &v, 1);
    TAP_OK(s && !strcmp(s, chat), "qwen3: ... and that text decodes back unchanged");
    free(s);
    rs_ivec_free(&v);

    v = enc(t, "", TOK_ADD_SPECIAL);
    TAP_OK(v.n == 0, "qwen3: the post-processor adds nothing (ByteLevel), empty text -> no ids");
    rs_ivec_free(&v);
    const tok_config *c = tok_get_config(t);
    TAP_OK(c->chat_template && strstr(c->chat_template, "im_start") && c->named[TOK_EOS] &&
               !strcmp(c->named[TOK_EOS], "<|im_end|>") && !c->named[TOK_BOS] &&
               c->named[TOK_PAD] && !strcmp(c->named[TOK_PAD], "<|endoftext|>") && c->n_extra > 0 &&
               !strcmp(c->extra[0], "<|im_start|>"),
           "qwen3: chat template and eos token come from tokenizer_config.json");
}

static void test_stories(const tok_tokenizer *t) {
    rs_ivec v = enc(t, "Once upon a time", TOK_ADD_SPECIAL);
    TAP_OK(v.n == 5 && v.v[0] == 1, "stories: TOK_ADD_SPECIAL puts BOS (1) first (%d ids)", v.n);
    rs_ivec w = enc(t, "Once upon a time", 0);
    TAP_OK(w.n == 4 && !memcmp(w.v, v.v + 1, 4 * sizeof *w.v), "stories: without it, no BOS");
    rs_ivec_free(&w);

    char pieces[256];
    int bad;
    char *all = stream_all(t, &v, 1, &bad, pieces, sizeof pieces);
    TAP_OK(!bad && !strcmp(pieces, "Once| upon| a| time|"),
           "stories: streaming keeps the leading space of continuations (%s)", pieces);
    TAP_OK(!strcmp(all, "Once upon a time"), "stories: streamed text == decode");
    free(all);
    rs_ivec_free(&v);

    /* byte fallback: 你 is three <0xNN> tokens, held until the character is complete */
    v = enc(t, "a 你好 b", 0);
    all = stream_all(t, &v, 0, &bad, pieces, sizeof pieces);
    char *whole = dec(t, &v, 0);
    TAP_OK(!bad && whole && !strcmp(all, whole) && !strcmp(whole, "a 你好 b"),
           "stories: byte-fallback text streams in whole characters (%s)", pieces);
    free(all);
    free(whole);
    rs_ivec_free(&v);
    const tok_config *c = tok_get_config(t);
    TAP_OK(c->named[TOK_BOS] && !strcmp(c->named[TOK_BOS], "<s>") && !c->chat_template,
           "stories: bos <s>, no chat template");
}

static void test_bad_input(const tok_tokenizer *t) {
    static const char *bad[] = {"\xff", "a\xc0\xaf", "\xed\xa0\x80", "\xe4\xbd",
                                "\xf4\x90\x80\x80"};
    int all_rejected = 1;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        rs_ivec v = {0};
        rs_err e = {0};
        if (tok_encode(t, bad[i], strlen(bad[i]), 0, &v, &e) != RS_EINVAL || v.n) all_rejected = 0;
        rs_ivec_free(&v);
    }
    TAP_OK(all_rejected, "invalid UTF-8 (stray byte, overlong, surrogate, truncated, > U+10FFFF) "
                         "is RS_EINVAL and appends nothing");
    int32_t ids[] = {1, -1}, big[] = {tok_vocab_size(t)};
    char *s = NULL;
    rs_err e = {0};
    TAP_OK(tok_decode(t, ids, 2, 0, &s, &e) == RS_EINVAL && !s && strstr(e.msg, "-1"),
           "decode of id -1 is RS_EINVAL (%s)", e.msg);
    TAP_OK(tok_decode(t, big, 1, 0, &s, &e) == RS_EINVAL, "decode of id vocab_size is RS_EINVAL");
    tok_stream st;
    tok_stream_init(&st, t, 0);
    TAP_OK(tok_stream_push(&st, big[0], &s, &e) == RS_EINVAL && !s,
           "stream push of an out-of-range id is RS_EINVAL");
    tok_stream_free(&st);
}

/* Write a copy of stories' tokenizer.json with one component replaced, into tmp/name/. */
static int write_modified(const char *name, const char *field, const char *json) {
    char path[4096], dir[2048];
    snprintf(path, sizeof path, "%s/models/stories260K/tokenizer.json", root);
    char *data;
    size_t n;
    if (rs_read_file(path, &data, &n, NULL)) return -1;
    cJSON *j = cJSON_Parse(data);
    free(data);
    cJSON_ReplaceItemInObject(j, field, cJSON_Parse(json));
    snprintf(dir, sizeof dir, "%s/%s", tmp, name);
    mkdir(dir, 0755);
    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    FILE *f = fopen(path, "w");
    char *out = cJSON_PrintUnformatted(j);
    int rc = f && out && fputs(out, f) >= 0 ? 0 : -1;
    if (f) fclose(f);
    free(out);
    cJSON_Delete(j);
    return rc;
}

static void test_unknown_components(void) {
    static const struct {
        const char *field, *json, *needle;
    } cases[] = {
        {"decoder", "{\"type\":\"Bogus\"}", "Bogus"},
        {"normalizer", "{\"type\":\"Sequence\",\"normalizers\":[{\"type\":\"Wobble\"}]}", "Wobble"},
        {"pre_tokenizer", "{\"type\":\"Frobnicate\"}", "Frobnicate"},
        {"post_processor", "{\"type\":\"Sprinkle\"}", "Sprinkle"},
        {"model", "{\"type\":\"Unigram\",\"vocab\":[]}", "Unigram"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char name[64], dir[2048];
        snprintf(name, sizeof name, "tok-unknown-%zu", i);
        snprintf(dir, sizeof dir, "%s/%s", tmp, name);
        if (write_modified(name, cases[i].field, cases[i].json)) {
            TAP_OK(0, "write a modified tokenizer.json into %s", tmp);
            continue;
        }
        tok_tokenizer *t = NULL;
        rs_err e = {0};
        int rc = tok_load(&t, dir, &e);
        TAP_OK(rc == RS_EINVAL && !t && strstr(e.msg, cases[i].needle),
               "an unknown %s type is a load-time RS_EINVAL naming it (%s)", cases[i].field, e.msg);
        tok_free(t);
    }
    tok_tokenizer *t = NULL;
    rs_err e = {0};
    TAP_OK(tok_load(&t, "/nonexistent/model/dir", &e) == RS_ENOTFOUND && !t,
           "a directory without tokenizer files is RS_ENOTFOUND (%s)", e.msg);
}

/* single_word and normalized added tokens (transformers.js implements neither, so these are
 * checked against Hugging Face's documented behaviour here rather than a golden). */
static void test_added_flags(void) {
    const char *added =
        "[{\"id\":0,\"content\":\"<unk>\",\"special\":true,\"normalized\":false},"
        "{\"id\":1,\"content\":\"<s>\",\"special\":true,\"normalized\":false},"
        "{\"id\":2,\"content\":\"</s>\",\"special\":true,\"normalized\":false},"
        "{\"id\":512,\"content\":\"hello\",\"single_word\":true,\"normalized\":false},"
        "{\"id\":513,\"content\":\"\u2581world\",\"normalized\":true}]";
    char dir[2048];
    snprintf(dir, sizeof dir, "%s/tok-added-flags", tmp);
    tok_tokenizer *t = NULL;
    rs_err e = {0};
    if (!TAP_OK(!write_modified("tok-added-flags", "added_tokens", added) &&
                    tok_load(&t, dir, &e) == 0,
                "load a tokenizer with single_word / normalized added tokens (%s)", e.msg))
        return;
    rs_ivec a = enc(t, "say hello there", 0), b = enc(t, "sayhello there", 0);
    rs_ivec c = enc(t, "a world", 0), d = enc(t, "a world", TOK_NO_SPECIAL);
    TAP_OK(contains(&a, 512) && !contains(&b, 512),
           "single_word: 'hello' matches as a word, not inside 'sayhello'");
    TAP_OK(contains(&c, 513) && !contains(&d, 513),
           "normalized: '\u2581world' matches the normalized text (' world' -> '\u2581world')");
    rs_ivec_free(&a), rs_ivec_free(&b), rs_ivec_free(&c), rs_ivec_free(&d);
    tok_free(t);
}

static int copy_file(const char *from, const char *to) {
    char *data;
    size_t n;
    if (rs_read_file(from, &data, &n, NULL)) return -1;
    FILE *f = fopen(to, "wb");
    int rc = f && fwrite(data, 1, n, f) == n ? 0 : -1;
    if (f) fclose(f);
    free(data);
    return rc;
}

static void test_legacy_files(const tok_tokenizer *q) {
    char dir[2048], a[4096], b[4096];
    snprintf(dir, sizeof dir, "%s/tok-legacy", tmp);
    mkdir(dir, 0755);
    int rc = 0;
    for (int i = 0; i < 2 && !rc; i++) {
        const char *f = i ? "merges.txt" : "vocab.json";
        snprintf(a, sizeof a, "%s/models/qwen3-tokenizer/%s", root, f);
        snprintf(b, sizeof b, "%s/%s", dir, f);
        rc = copy_file(a, b);
    }
    tok_tokenizer *t = NULL;
    rs_err e = {0};
    if (!TAP_OK(!rc && tok_load(&t, dir, &e) == 0, "vocab.json + merges.txt load (%s)", e.msg))
        return;
    const char *text = "Hello world, this is a test of 42 things.";
    rs_ivec x = enc(t, text, 0), y = enc(q, text, 0);
    TAP_OK(x.n > 0 && x.n == y.n && !memcmp(x.v, y.v, (size_t)x.n * sizeof *x.v),
           "vocab.json + merges.txt encode plain English as tokenizer.json does (%d ids)", x.n);
    rs_ivec_free(&x);
    rs_ivec_free(&y);
    tok_free(t);
}

static const char *const TEXTS[] = {
    "Hello, world! 你好，世界。", "  leading and trailing  ",
    "tabs\tand\nnewlines\n\n",    "emoji 👨‍👩‍👧 and flags 🇯🇵",
    "数字 12345 and café",        "<|im_start|>system\nYou are<|im_end|>",
    "I'm sure they've 'LL go",    "def f(x):\n    return x",
    "ｶﾀｶﾅ 한국어 Привет",         "a",
};
enum { NTEXTS = sizeof TEXTS / sizeof TEXTS[0] };

static void test_stream_roundtrip(const tok_tokenizer *t, const char *name) {
    int bad = 0;
    for (int i = 0; i < NTEXTS; i++)
        for (int skip = 0; skip < 2; skip++) {
            rs_ivec v = enc(t, TEXTS[i], TOK_ADD_SPECIAL);
            int half;
            char *all = stream_all(t, &v, skip, &half, NULL, 0), *whole = dec(t, &v, skip);
            if (half || !whole || strcmp(all, whole)) {
                bad++;
                TAP_DIAG("%s: stream '%s' != decode '%s'", name, all, whole ? whole : "");
            }
            free(all);
            free(whole);
            rs_ivec_free(&v);
        }
    TAP_OK(bad == 0, "%s: streamed pieces are whole UTF-8 and concatenate to decode (%d texts)",
           name, NTEXTS);
}

/* Random id sequences (byte tokens, specials, broken UTF-8 included): the stream must still
 * concatenate to the whole decode. */
static void test_stream_random(const tok_tokenizer *t, const char *name) {
    unsigned x = 12345;
    int bad = 0, n_vocab = tok_vocab_size(t);
    for (int round = 0; round < 400; round++) {
        rs_ivec v = {0};
        int len = 1 + (int)((x = x * 1103515245u + 12345u) >> 16) % 24;
        for (int i = 0; i < len; i++) {
            x = x * 1103515245u + 12345u;
            int32_t id = (int32_t)((x >> 8) % (unsigned)n_vocab);
            if ((x >> 4) % 3 == 0) id = (int32_t)((x >> 10) % 300); /* bytes and specials */
            char *probe = NULL;
            rs_err e = {0};
            /* a token holding byte 0 would end the C string early: left out */
            if (tok_decode(t, &id, 1, 0, &probe, &e) == 0 && *probe) rs_ivec_push(&v, id);
            free(probe);
        }
        int skip = round & 1, half;
        char *all = stream_all(t, &v, skip, &half, NULL, 0), *whole = dec(t, &v, skip);
        if (!whole || strcmp(all, whole)) {
            if (++bad <= 3) {
                TAP_DIAG("stream \"%s\" != decode \"%s\" (skip %d, ids:", all, whole ? whole : "",
                         skip);
                for (int i = 0; i < v.n; i++) printf(" %d", v.v[i]);
                printf(")\n");
            }
        }
        free(all);
        free(whole);
        rs_ivec_free(&v);
    }
    TAP_OK(bad == 0, "%s: 400 random id sequences stream to exactly their decode (%d differ)", name,
           bad);
}

/* A lone byte that can never become a character (0x80, 0xFF) streams out as U+FFFD at once; a
 * lead byte (0xE6) is held until more bytes or the flush. */
static void test_stream_fffd(const tok_tokenizer *t) {
    int held = 0, emitted = 0, flushed_ok = 1;
    for (int32_t id = 0; id < 400; id++) {
        char *one = NULL, *p = NULL, *f = NULL;
        rs_err e = {0};
        if (tok_decode(t, &id, 1, 0, &one, &e) || strcmp(one, "\xEF\xBF\xBD")) {
            free(one);
            continue;
        }
        tok_stream s;
        tok_stream_init(&s, t, 0);
        if (!tok_stream_push(&s, id, &p, &e) && !tok_stream_flush(&s, &f, &e)) {
            held += !*p, emitted += !strcmp(p, one);
            flushed_ok &= !strcmp(*p ? f : one, *p ? "" : f);
        }
        tok_stream_free(&s);
        free(one), free(p), free(f);
    }
    TAP_OK(held > 0 && emitted > 0 && flushed_ok,
           "qwen3: an invalid byte streams U+FFFD at once (%d), a lead byte is held to the "
           "flush (%d)",
           emitted, held);
}

typedef struct job {
    const tok_tokenizer *t; /* shared tokenizer */
    int mismatches;         /* encodings that differ from the expected ids */
    rs_ivec *want;          /* expected ids per text */
} job;

static void *worker(void *arg) {
    job *j = arg;
    for (int round = 0; round < 200; round++)
        for (int i = 0; i < NTEXTS; i++) {
            rs_ivec v = enc(j->t, TEXTS[i], 0);
            if (!ids_equal(&v, j->want[i].v, j->want[i].n)) j->mismatches++;
            rs_ivec_free(&v);
        }
    return NULL;
}

static void test_threads(const tok_tokenizer *t) {
    rs_ivec want[NTEXTS];
    for (int i = 0; i < NTEXTS; i++) want[i] = enc(t, TEXTS[i], 0);
    pthread_t th[4];
    job jobs[4];
    for (int k = 0; k < 4; k++) {
        jobs[k] = (job){t, 0, want};
        pthread_create(&th[k], NULL, worker, &jobs[k]);
    }
    int bad = 0;
    for (int k = 0; k < 4; k++) pthread_join(th[k], NULL), bad += jobs[k].mismatches;
    TAP_OK(bad == 0, "4 threads sharing one tokenizer (and its cache) get identical ids");
    for (int i = 0; i < NTEXTS; i++) rs_ivec_free(&want[i]);
}

int main(void) {
    const char *r = getenv("RADIXSERVE_ROOT"), *tp = getenv("RADIXSERVE_TMP");
    snprintf(root, sizeof root, "%s", r ? r : ".");
    snprintf(tmp, sizeof tmp, "%s", tp ? tp : "/tmp");
    tok_tokenizer *q = load("qwen3-tokenizer"), *s = load("stories260K");
    if (q) {
        test_qwen(q);
        test_bad_input(q);
        test_stream_roundtrip(q, "qwen3");
        test_stream_random(q, "qwen3");
        test_stream_fffd(q);
        test_legacy_files(q);
        test_threads(q);
    }
    if (s) {
        test_stories(s);
        test_stream_roundtrip(s, "stories");
        test_stream_random(s, "stories");
    }
    test_unknown_components();
    test_added_flags();
    tok_free(q);
    tok_free(s);
    return tap_done();
}
