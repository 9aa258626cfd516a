/* tok_gguf.c — a tokenizer from GGUF metadata (llama.cpp's tokenizer.ggml.* keys), built as the
 * tokenizer.json that the same vocabulary has on Hugging Face, so that tok_load_json and the one
 * encode/decode path run unchanged:
 *
 *   tokenizer.ggml.model "gpt2": byte-level BPE; tokens of type NORMAL / UNKNOWN / BYTE form the
 *     BPE vocabulary, CONTROL tokens are special added tokens, USER_DEFINED ones plain added
 *     tokens, UNUSED ids are holes; tokenizer.ggml.merges are the merges in rank order;
 *     tokenizer.ggml.pre names the pre-tokenizer (qwen2, llama-bpe, default / gpt-2; any other
 *     name is an error naming it).
 *   tokenizer.ggml.model "llama": SentencePiece-style BPE with byte fallback; every piece is in
 *     the vocabulary (CONTROL and UNKNOWN pieces also special added tokens); the merges are
 *     derived from tokenizer.ggml.scores as Hugging Face's converter derives them from a
 *     SentencePiece model: every split of a piece into two pieces, ordered by the merged piece's
 *     score (highest first), then by the merged piece's id, then by the two parts' ids.
 *
 * bos/eos/unknown ids, add_bos_token / add_eos_token and tokenizer.chat_template take the place
 * of tokenizer_config.json.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tokenizer/tok_internal.h"

enum { TT_NORMAL = 1, TT_UNKNOWN = 2, TT_CONTROL = 3, TT_USER = 4, TT_UNUSED = 5, TT_BYTE = 6 };

/* The split regexes of the pre-tokenizers llama.cpp names (as the models' tokenizer.json). */
static const char QWEN2_RE[] = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| "
                               "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
static const char LLAMA3_RE[] =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| "
    "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

typedef struct gg {
    const cJSON *meta;   /* the GGUF metadata object */
    const char *where;   /* file name for messages */
    const cJSON *tokens; /* tokenizer.ggml.tokens */
    int n;               /* its length */
    const char **str;    /* token strings by id (into tokens), owned array */
    int *type;           /* token types (NORMAL when absent), owned */
    rs_err *e;
} gg;

static const cJSON *key(const gg *g, const char *k) {
    return cJSON_GetObjectItemCaseSensitive(g->meta, k);
}

static int bad(const gg *g, const char *k, const char *what) {
    return rs_errf(g->e, RS_EINVAL, "%s: %s %s", g->where, k, what);
}

/* A token id key: absent -> dflt; present must be an id of the vocabulary. */
static int id_key(const gg *g, const char *k, int dflt, int *out) {
    const cJSON *v = key(g, k);
    *out = dflt;
    if (!v) return 0;
    if (!cJSON_IsNumber(v) || v->valuedouble < 0 || v->valuedouble >= g->n)
        return bad(g, k, "is not a token id of the vocabulary");
    *out = (int)v->valuedouble;
    return 0;
}

static int bool_key(const gg *g, const char *k, int dflt, int *out) {
    const cJSON *v = key(g, k);
    *out = dflt;
    if (!v) return 0;
    if (!cJSON_IsBool(v)) return bad(g, k, "is not a bool");
    *out = cJSON_IsTrue(v);
    return 0;
}

static const char *tok_str(const gg *g, int i) {
    return g->str[i];
}

/* tokens (strings) and token_type (integers 1..6, same length) checked; types filled. */
static int read_tokens(gg *g) {
    g->tokens = key(g, "tokenizer.ggml.tokens");
    if (!cJSON_IsArray(g->tokens) || !(g->n = cJSON_GetArraySize(g->tokens)))
        return bad(g, "tokenizer.ggml.tokens", "is missing or empty (no vocabulary in the file)");
    const cJSON *it, *types = key(g, "tokenizer.ggml.token_type");
    cJSON_ArrayForEach(it, g->tokens) {
        if (!cJSON_IsString(it)) return bad(g, "tokenizer.ggml.tokens", "holds a non-string");
    }
    if (types && (!cJSON_IsArray(types) || cJSON_GetArraySize(types) != g->n))
        return bad(g, "tokenizer.ggml.token_type", "is not an array as long as the tokens");
    g->type = malloc((size_t)g->n * sizeof *g->type);
    g->str = malloc((size_t)g->n * sizeof *g->str);
    if (!g->type || !g->str) return rs_errf(g->e, RS_ENOMEM, "tokenizer: out of memory");
    int i = 0;
    cJSON_ArrayForEach(it, g->tokens) g->str[i++] = it->valuestring;
    i = 0;
    for (it = types ? types->child : NULL; i < g->n; i++, it = it ? it->next : NULL) {
        g->type[i] = it ? it->valueint : TT_NORMAL;
        if (it && (!cJSON_IsNumber(it) || it->valueint < 1 || it->valueint > 6))
            return bad(g, "tokenizer.ggml.token_type", "holds a value outside 1..6");
    }
    return 0;
}

/* ---- building the tokenizer.json object ------------------------------------------------------ */

/* Out of memory while building: every cJSON_Add* result is checked through this. */
#define NEED(x)                                                                                    \
    do {                                                                                           \
        if (!(x)) return rs_errf(g->e, RS_ENOMEM, "tokenizer: out of memory");                     \
    } while (0)

static cJSON *typed(const char *type) {
    cJSON *o = cJSON_CreateObject();
    if (o && !cJSON_AddStringToObject(o, "type", type)) {
        cJSON_Delete(o);
        return NULL;
    }
    return o;
}

static int add_child(cJSON *arr, cJSON *x) {
    if (x && cJSON_AddItemToArray(arr, x)) return 1;
    cJSON_Delete(x);
    return 0;
}

static cJSON *bytelevel(int use_regex) {
    cJSON *b = typed("ByteLevel");
    if (b && (!cJSON_AddFalseToObject(b, "add_prefix_space") ||
              !cJSON_AddBoolToObject(b, "use_regex", use_regex))) {
        cJSON_Delete(b);
        return NULL;
    }
    return b;
}

/* Split(regex, Isolated) then ByteLevel without its own regex. */
static cJSON *split_bytelevel(const char *re) {
    cJSON *seq = typed("Sequence"), *arr = cJSON_AddArrayToObject(seq, "pretokenizers");
    cJSON *sp = typed("Split"), *pat = cJSON_CreateObject();
    int ok = seq && arr && sp && pat && cJSON_AddStringToObject(pat, "Regex", re) &&
             cJSON_AddItemToObject(sp, "pattern", pat);
    if (!ok) cJSON_Delete(pat);
    ok = ok && cJSON_AddStringToObject(sp, "behavior", "Isolated");
    if (!ok || !add_child(arr, sp) || !add_child(arr, bytelevel(0))) {
        if (!ok) cJSON_Delete(sp);
        cJSON_Delete(seq);
        return NULL;
    }
    return seq;
}

/* The gpt2 pipeline tokenizer.ggml.pre names. */
static int gpt2_pipeline(gg *g, cJSON *root, cJSON *model) {
    const cJSON *pre = key(g, "tokenizer.ggml.pre");
    const char *name = cJSON_IsString(pre) ? pre->valuestring : "default";
    cJSON *p;
    if (!strcmp(name, "qwen2")) {
        NEED(cJSON_AddItemToObject(root, "normalizer", typed("NFC")));
        p = split_bytelevel(QWEN2_RE);
    } else if (!strcmp(name, "llama-bpe")) {
        NEED(cJSON_AddTrueToObject(model, "ignore_merges"));
        p = split_bytelevel(LLAMA3_RE);
    } else if (!strcmp(name, "default") || !strcmp(name, "gpt-2")) {
        p = bytelevel(1);
    } else {
        return rs_errf(g->e, RS_EINVAL,
                       "%s: tokenizer.ggml.pre '%s' is not supported (known: qwen2, llama-bpe, "
                       "default, gpt-2)",
                       g->where, name);
    }
    if (!p || !cJSON_AddItemToObject(root, "pre_tokenizer", p)) {
        cJSON_Delete(p);
        return rs_errf(g->e, RS_ENOMEM, "tokenizer: out of memory");
    }
    NEED(cJSON_AddItemToObject(root, "decoder", bytelevel(0)));
    return 0;
}

static int add_replace(cJSON *arr, const char *from, const char *to) {
    cJSON *r = typed("Replace"), *pat = cJSON_CreateObject();
    int ok = r && pat && cJSON_AddStringToObject(pat, "String", from) &&
             cJSON_AddItemToObject(r, "pattern", pat);
    if (!ok) cJSON_Delete(pat);
    ok = ok && cJSON_AddStringToObject(r, "content", to);
    if (!ok || !add_child(arr, r)) {
        if (!ok) cJSON_Delete(r);
        return 0;
    }
    return 1;
}

/* SentencePiece-style: spaces become "▁" (with one in front when add_space_prefix), byte
 * fallback, and the decoder that undoes both. */
static int spm_pipeline(gg *g, cJSON *root, cJSON *model) {
    int prefix;
    int rc = bool_key(g, "tokenizer.ggml.add_space_prefix", 1, &prefix);
    if (rc) return rc;
    cJSON *norm = typed("Sequence"), *dec = typed("Sequence");
    NEED(norm && cJSON_AddItemToObject(root, "normalizer", norm));
    if (!dec || !cJSON_AddItemToObject(root, "decoder", dec)) {
        cJSON_Delete(dec);
        return rs_errf(g->e, RS_ENOMEM, "tokenizer: out of memory");
    }
    cJSON *na = cJSON_AddArrayToObject(norm, "normalizers");
    cJSON *da = cJSON_AddArrayToObject(dec, "decoders");
    NEED(na && da);
    if (prefix) {
        cJSON *p = typed("Prepend");
        NEED(p && cJSON_AddStringToObject(p, "prepend", "\xe2\x96\x81") && add_child(na, p));
    }
    NEED(add_replace(na, " ", "\xe2\x96\x81") && add_replace(da, "\xe2\x96\x81", " "));
    NEED(add_child(da, typed("ByteFallback")) && add_child(da, typed("Fuse")));
    if (prefix) {
        cJSON *s = typed("Strip");
        NEED(s && cJSON_AddStringToObject(s, "content", " ") &&
             cJSON_AddNumberToObject(s, "start", 1) && cJSON_AddNumberToObject(s, "stop", 0) &&
             add_child(da, s));
    }
    NEED(cJSON_AddTrueToObject(model, "byte_fallback") && cJSON_AddTrueToObject(model, "fuse_unk"));
    int unk;
    if ((rc = id_key(g, "tokenizer.ggml.unknown_token_id", 0, &unk))) return rc;
    NEED(cJSON_AddStringToObject(model, "unk_token", tok_str(g, unk)));
    return 0;
}

/* ---- merges ---------------------------------------------------------------------------------- */

typedef struct spm_merge {
    float score;  /* score of the merged piece */
    int32_t id;   /* the merged piece */
    int32_t l, r; /* its two parts */
} spm_merge;

static int merge_cmp(const void *a, const void *b) {
    const spm_merge *x = a, *y = b;
    if (x->score != y->score) return x->score < y->score ? 1 : -1;
    if (x->id != y->id) return x->id < y->id ? -1 : 1;
    if (x->l != y->l) return x->l < y->l ? -1 : 1;
    return (x->r > y->r) - (x->r < y->r);
}

static int push_merge(spm_merge **v, int *n, int *cap, spm_merge m) {
    if (*n == *cap) {
        int c = *cap ? *cap * 2 : 1024;
        spm_merge *p = realloc(*v, (size_t)c * sizeof *p);
        if (!p) return RS_ENOMEM;
        *v = p, *cap = c;
    }
    (*v)[(*n)++] = m;
    return 0;
}

/* Every split of every piece into two pieces of the vocabulary, in rank order. */
static int derive_merges(gg *g, const float *score, spm_merge **out, int *n_out) {
    char **strs = malloc((size_t)g->n * sizeof *strs);
    int *lens = malloc((size_t)g->n * sizeof *lens), n = 0, cap = 0, rc = 0;
    tok_strmap map = {0};
    spm_merge *v = NULL;
    if (!strs || !lens || tok_strmap_init(&map, g->n)) rc = RS_ENOMEM;
    for (int i = 0; !rc && i < g->n; i++)
        strs[i] = (char *)tok_str(g, i), lens[i] = (int)strlen(strs[i]);
    map.strs = strs, map.lens = lens;
    for (int i = 0; !rc && i < g->n; i++) tok_strmap_put(&map, i);
    for (int i = 0; !rc && i < g->n; i++) {
        const unsigned char *s = (const unsigned char *)strs[i];
        for (int k = 1; !rc && k < lens[i]; k++) {
            if ((s[k] & 0xC0) == 0x80) continue; /* split between characters only */
            int32_t l = tok_strmap_get(&map, strs[i], (size_t)k);
            int32_t r = tok_strmap_get(&map, strs[i] + k, (size_t)(lens[i] - k));
            if (l >= 0 && r >= 0) rc = push_merge(&v, &n, &cap, (spm_merge){score[i], i, l, r});
        }
    }
    tok_strmap_free(&map);
    free(strs);
    free(lens);
    if (rc) {
        free(v);
        return rs_errf(g->e, RS_ENOMEM, "tokenizer: out of memory");
    }
    if (n) qsort(v, (size_t)n, sizeof *v, merge_cmp);
    *out = v, *n_out = n;
    return 0;
}

static int spm_merges(gg *g, cJSON *merges) {
    const cJSON *sc = key(g, "tokenizer.ggml.scores"), *it;
    if (!cJSON_IsArray(sc) || cJSON_GetArraySize(sc) != g->n)
        return bad(g, "tokenizer.ggml.scores", "is missing or not as long as the tokens");
    float *score = malloc((size_t)g->n * sizeof *score);
    if (!score) return rs_errf(g->e, RS_ENOMEM, "tokenizer: out of memory");
    int i = 0, n = 0, rc = 0;
    cJSON_ArrayForEach(it, sc) {
        if (!cJSON_IsNumber(it)) rc = bad(g, "tokenizer.ggml.scores", "holds a non-number");
        score[i++] = (float)it->valuedouble;
    }
    spm_merge *v = NULL;
    if (!rc) rc = derive_merges(g, score, &v, &n);
    free(score);
    for (int k = 0; k < n && !rc; k++) {
        cJSON *pair = cJSON_CreateArray();
        if (!add_child(pair, cJSON_CreateString(tok_str(g, v[k].l))) ||
            !add_child(pair, cJSON_CreateString(tok_str(g, v[k].r))) || !add_child(merges, pair)) {
            cJSON_Delete(pair);
            rc = rs_errf(g->e, RS_ENOMEM, "tokenizer: out of memory");
        }
    }
    free(v);
    return rc;
}

static int gpt2_merges(gg *g, cJSON *merges) {
    const cJSON *m = key(g, "tokenizer.ggml.merges"), *it;
    if (!cJSON_IsArray(m)) return bad(g, "tokenizer.ggml.merges", "is missing (a gpt2 model)");
    cJSON_ArrayForEach(it, m) {
        if (!cJSON_IsString(it)) return bad(g, "tokenizer.ggml.merges", "holds a non-string");
        NEED(add_child(merges, cJSON_CreateString(it->valuestring)));
    }
    return 0;
}

/* ---- vocabulary and added tokens ------------------------------------------------------------- */

static int add_added(gg *g, cJSON *added, int id, int special) {
    cJSON *a = cJSON_CreateObject();
    if (!add_child(added, a)) return rs_errf(g->e, RS_ENOMEM, "tokenizer: out of memory");
    NEED(cJSON_AddNumberToObject(a, "id", id) &&
         cJSON_AddStringToObject(a, "content", tok_str(g, id)) &&
         cJSON_AddBoolToObject(a, "special", special) && cJSON_AddFalseToObject(a, "normalized"));
    return 0;
}

static int vocab_and_added(gg *g, int spm, cJSON *vocab, cJSON *added) {
    for (int i = 0; i < g->n; i++) {
        int t = g->type[i], in_vocab = spm || t == TT_NORMAL || t == TT_UNKNOWN || t == TT_BYTE;
        if (!tok_str(g, i)[0]) {
            if (t == TT_UNUSED) continue;
            return rs_errf(g->e, RS_EINVAL, "%s: tokenizer.ggml.tokens[%d] is empty", g->where, i);
        }
        if (in_vocab) NEED(cJSON_AddNumberToObject(vocab, tok_str(g, i), i));
        if (t == TT_CONTROL || t == TT_USER || (spm && t == TT_UNKNOWN)) {
            int rc = add_added(g, added, i, t != TT_USER);
            if (rc) return rc;
        }
    }
    return 0;
}

/* bos/eos strings, add_bos/add_eos, chat_template: the tokenizer_config.json part. */
static int config(gg *g, int spm, cJSON *cfg) {
    int add_bos, add_eos;
    int rc = bool_key(g, "tokenizer.ggml.add_bos_token", spm, &add_bos);
    if (!rc) rc = bool_key(g, "tokenizer.ggml.add_eos_token", 0, &add_eos);
    if (rc) return rc;
    static const char *const named[][2] = {{"tokenizer.ggml.bos_token_id", "bos_token"},
                                           {"tokenizer.ggml.eos_token_id", "eos_token"},
                                           {"tokenizer.ggml.unknown_token_id", "unk_token"},
                                           {"tokenizer.ggml.padding_token_id", "pad_token"}};
    for (size_t i = 0; i < sizeof named / sizeof named[0] && !rc; i++) {
        int id;
        rc = id_key(g, named[i][0], -1, &id);
        if (!rc && id >= 0) NEED(cJSON_AddStringToObject(cfg, named[i][1], tok_str(g, id)));
    }
    if (rc) return rc;
    NEED(cJSON_AddBoolToObject(cfg, "add_bos_token", add_bos) &&
         cJSON_AddBoolToObject(cfg, "add_eos_token", add_eos));
    const cJSON *tpl = key(g, "tokenizer.chat_template");
    if (tpl && !cJSON_IsString(tpl)) return bad(g, "tokenizer.chat_template", "is not a string");
    if (tpl) NEED(cJSON_AddStringToObject(cfg, "chat_template", tpl->valuestring));
    return 0;
}

static int build(gg *g, cJSON *root, cJSON *cfg) {
    const cJSON *mt = key(g, "tokenizer.ggml.model");
    if (!cJSON_IsString(mt)) return bad(g, "tokenizer.ggml.model", "is missing");
    int spm = !strcmp(mt->valuestring, "llama");
    if (!spm && strcmp(mt->valuestring, "gpt2"))
        return rs_errf(g->e, RS_EINVAL,
                       "%s: tokenizer.ggml.model '%s' is not supported (known: gpt2, llama)",
                       g->where, mt->valuestring);
    int rc = read_tokens(g);
    if (rc) return rc;
    cJSON *model = typed("BPE");
    if (!model || !cJSON_AddItemToObject(root, "model", model)) {
        cJSON_Delete(model);
        return rs_errf(g->e, RS_ENOMEM, "tokenizer: out of memory");
    }
    cJSON *vocab = cJSON_AddObjectToObject(model, "vocab");
    cJSON *merges = cJSON_AddArrayToObject(model, "merges");
    cJSON *added = cJSON_AddArrayToObject(root, "added_tokens");
    NEED(vocab && merges && added);
    rc = spm ? spm_pipeline(g, root, model) : gpt2_pipeline(g, root, model);
    if (!rc) rc = vocab_and_added(g, spm, vocab, added);
    if (!rc) rc = spm ? spm_merges(g, merges) : gpt2_merges(g, merges);
    if (!rc) rc = config(g, spm, cfg);
    return rc;
}
#undef NEED

int tok_load_gguf(tok_tokenizer **out, const cJSON *meta, const char *where, rs_err *e) {
    *out = NULL;
    gg g = {.meta = meta, .where = where, .e = e};
    cJSON *root = cJSON_CreateObject(), *cfg = cJSON_CreateObject();
    int rc = root && cfg ? build(&g, root, cfg) : rs_errf(e, RS_ENOMEM, "tokenizer: out of memory");
    free(g.type);
    free(g.str);
    if (!rc) rc = tok_new_from_json(out, root, cfg, NULL, where, where, e);
    cJSON_Delete(root);
    cJSON_Delete(cfg);
    return rc;
}
