/* tokenizer.c — loading from a model directory, and encoding: added tokens are cut out of the
 * raw text first (as Hugging Face does), then each remaining segment is normalized,
 * pre-tokenized and run through BPE; the post-processor's ids go around the result. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <utf8proc.h>

#include "tokenizer/tok_internal.h"

/* ---- loading ----------------------------------------------------------------------------------
 */

static int read_json(const char *dir, const char *name, cJSON **out, rs_err *e) {
    char path[4096];
    char *data;
    size_t n;
    int rc = rs_path_join(path, sizeof path, dir, name, e);
    if (rc || (rc = rs_read_file(path, &data, &n, e))) return rc;
    *out = cJSON_ParseWithLength(data, n);
    free(data);
    if (!cJSON_IsObject(*out)) {
        cJSON_Delete(*out);
        *out = NULL;
        return rs_errf(e, RS_EINVAL, "%s: not a valid JSON object", path);
    }
    return 0;
}

static int exists(const char *dir, const char *name) {
    char path[4096];
    return !rs_path_join(path, sizeof path, dir, name, NULL) && access(path, R_OK) == 0;
}

/* merges.txt lines ("a b"; a "#version" header and blank lines skipped) as a JSON array. */
static int read_merges_txt(const char *dir, cJSON *arr, rs_err *e) {
    char path[4096];
    char *data;
    int rc = rs_path_join(path, sizeof path, dir, "merges.txt", e);
    if (rc || (rc = rs_read_file(path, &data, NULL, e))) return rc;
    for (char *line = data, *next; line && *line; line = next) {
        next = strchr(line, '\n');
        if (next) *next++ = 0;
        size_t l = strlen(line);
        if (l && line[l - 1] == '\r') line[--l] = 0;
        if (!l || !strncmp(line, "#version", 8)) continue;
        cJSON_AddItemToArray(arr, cJSON_CreateString(line));
    }
    free(data);
    return 0;
}

/* vocab.json + merges.txt: a GPT-2 style byte-level BPE (the pipeline those files imply). */
static int build_legacy(const char *dir, cJSON **out, rs_err *e) {
    cJSON *vocab = NULL, *root = cJSON_CreateObject(), *model = cJSON_CreateObject();
    cJSON *merges = cJSON_CreateArray(), *pre = cJSON_CreateObject(), *dec = cJSON_CreateObject();
    int rc = read_json(dir, "vocab.json", &vocab, e);
    if (!rc) rc = read_merges_txt(dir, merges, e);
    cJSON_AddStringToObject(model, "type", "BPE");
    cJSON_AddItemToObject(model, "vocab", vocab ? vocab : cJSON_CreateObject());
    cJSON_AddItemToObject(model, "merges", merges);
    cJSON_AddItemToObject(root, "model", model);
    cJSON_AddStringToObject(pre, "type", "ByteLevel");
    cJSON_AddFalseToObject(pre, "add_prefix_space");
    cJSON_AddItemToObject(root, "pre_tokenizer", pre);
    cJSON_AddStringToObject(dec, "type", "ByteLevel");
    cJSON_AddItemToObject(root, "decoder", dec);
    *out = root;
    return rc;
}

int tok_load(tok_tokenizer **out, const char *dir, rs_err *e) {
    *out = NULL;
    cJSON *root = NULL, *cfg = NULL;
    int rc;
    if (exists(dir, "tokenizer.json"))
        rc = read_json(dir, "tokenizer.json", &root, e);
    else if (exists(dir, "vocab.json") && exists(dir, "merges.txt"))
        rc = build_legacy(dir, &root, e);
    else
        rc = rs_errf(e, RS_ENOTFOUND, "%s: no tokenizer.json (nor vocab.json + merges.txt)", dir);
    if (!rc && exists(dir, "tokenizer_config.json"))
        rc = read_json(dir, "tokenizer_config.json", &cfg, e);
    char cfg_path[4096];
    if (!rc) rc = rs_path_join(cfg_path, sizeof cfg_path, dir, "tokenizer_config.json", e);
    if (!rc) rc = tok_new_from_json(out, root, cfg, dir, cfg_path, dir, e);
    cJSON_Delete(root);
    cJSON_Delete(cfg);
    return rc;
}

int tok_new_from_json(tok_tokenizer **out, const cJSON *root, const cJSON *cfg, const char *dir,
                      const char *cfg_path, const char *where, rs_err *e) {
    *out = NULL;
    tok_tokenizer *t = calloc(1, sizeof *t);
    if (!t) return rs_errf(e, RS_ENOMEM, "tokenizer: out of memory");
    tok_cache_init(t);
    tok_bytelevel_init(t);
    t->unk_id = -1;
    int rc = tok_config_from_json(&t->config, cfg, dir, cfg_path, e);
    if (!rc) rc = tok_load_json(t, root, cfg, e);
    if (rc) {
        char msg[sizeof e->msg];
        snprintf(msg, sizeof msg, "%s", e ? e->msg : "");
        rs_errf(e, rc, "%s: %s", where, msg);
        tok_free(t);
        return rc;
    }
    *out = t;
    return 0;
}

void tok_free(tok_tokenizer *t) {
    if (!t) return;
    tok_components_free(t);
    tok_cache_free(t);
    free(t);
}

int tok_vocab_size(const tok_tokenizer *t) {
    return t->n_ids;
}
const tok_config *tok_get_config(const tok_tokenizer *t) {
    return &t->config;
}

int32_t tok_special_id(const tok_tokenizer *t, const char *s) {
    for (int i = 0; i < t->n_added; i++)
        if (!strcmp(t->added[i].content, s)) return t->added[i].id;
    return -1;
}

/* ---- added tokens ---------------------------------------------------------------------------- */

static int32_t cp_at(const char *s, size_t n, size_t i) {
    utf8proc_int32_t cp = -1;
    utf8proc_iterate((const utf8proc_uint8_t *)s + i, (utf8proc_ssize_t)(n - i), &cp);
    return cp;
}

/* Start of the character that ends at byte i (i > 0). */
static size_t char_before(const char *s, size_t i) {
    do i--;
    while (i > 0 && ((unsigned char)s[i] & 0xC0) == 0x80);
    return i;
}

static int is_space(int32_t cp) { /* Unicode White_Space, from the general categories */
    utf8proc_category_t c = utf8proc_category(cp);
    return (cp >= 9 && cp <= 13) || cp == 0x85 || c == UTF8PROC_CATEGORY_ZS ||
           c == UTF8PROC_CATEGORY_ZL || c == UTF8PROC_CATEGORY_ZP;
}

static int is_word(int32_t cp) {
    utf8proc_category_t c = utf8proc_category(cp);
    return cp == '_' || (c >= UTF8PROC_CATEGORY_LU && c <= UTF8PROC_CATEGORY_LO) ||
           (c >= UTF8PROC_CATEGORY_ND && c <= UTF8PROC_CATEGORY_NO);
}

typedef struct added_match {
    size_t start, end; /* bytes the match covers (with lstrip / rstrip whitespace) */
    int32_t id;        /* the added token */
} added_match;

static const tok_added *longest_at(const tok_tokenizer *t, const char *s, size_t n, size_t i,
                                   int normalized) {
    for (int k = 0; k < t->n_added; k++) { /* longest first */
        const tok_added *a = &t->added[k];
        if (a->normalized == normalized && a->len <= n - i && !memcmp(s + i, a->content, a->len))
            return a;
    }
    return NULL;
}

/* The next added token (leftmost, then longest) in s[from..n), as Hugging Face's
 * AddedVocabulary finds them; 0 if there is none. */
static int next_added(const tok_tokenizer *t, const char *s, size_t n, size_t from, int normalized,
                      added_match *m) {
    for (size_t i = from; i < n; i++) {
        if (!(t->added_first[(unsigned char)s[i]] & (1 << normalized))) continue;
        const tok_added *a = longest_at(t, s, n, i, normalized);
        if (!a) continue;
        size_t end = i + a->len;
        if (a->single_word && ((i > 0 && is_word(cp_at(s, n, char_before(s, i)))) ||
                               (end < n && is_word(cp_at(s, n, end))))) {
            i = end - 1; /* a rejected match still consumes its text */
            continue;
        }
        m->start = i, m->end = end, m->id = a->id;
        while (a->lstrip && m->start > from && is_space(cp_at(s, n, char_before(s, m->start))))
            m->start = char_before(s, m->start);
        while (a->rstrip && m->end < n && is_space(cp_at(s, n, m->end))) {
            int k = tok_utf8_len((const unsigned char *)s + m->end, n - m->end);
            m->end += (size_t)(k ? k : 1);
        }
        return 1;
    }
    return 0;
}

/* ---- encoding -------------------------------------------------------------------------------- */

typedef struct enc {
    const tok_tokenizer *t; /* the tokenizer */
    int flags;              /* TOK_* encode flags */
    rs_ivec *out;           /* ids are appended here */
    rs_err *e;              /* where failures are described */
} enc;

static int encode_words(enc *c, const char *s, size_t n, int first_segment) {
    if (!n) return 0;
    tok_list l = {0};
    int rc = tl_push(&l, s, n) ? rs_errf(c->e, RS_ENOMEM, "tokenizer: out of memory") : 0;
    if (!rc && c->t->pre) rc = tok_pretokenize(c->t, c->t->pre, &l, first_segment, c->e);
    for (int i = 0; i < l.n && !rc; i++)
        rc = tok_bpe_word(c->t, tl_ptr(&l, i), l.s[i].len, c->out, c->e);
    tl_free(&l);
    return rc;
}

/* Split s by added tokens of one kind; plain stretches go to encode_words or, for raw text,
 * to normalization first. */
static int encode_split(enc *c, const char *s, size_t n, int normalized, int first_segment);

static int encode_segment(enc *c, const char *s, size_t n, int first_segment) {
    if (!n) return 0;
    tok_bytes b = {0};
    int rc = tb_put(&b, s, n) ? rs_errf(c->e, RS_ENOMEM, "tokenizer: out of memory") : 0;
    if (!rc && c->t->norm) rc = tok_normalize(c->t->norm, &b, c->e);
    if (!rc) {
        if (c->t->any_norm_added && !(c->flags & TOK_NO_SPECIAL))
            rc = encode_split(c, b.p, b.n, 1, first_segment);
        else
            rc = encode_words(c, b.p, b.n, first_segment);
    }
    tb_free(&b);
    return rc;
}

static int encode_split(enc *c, const char *s, size_t n, int normalized, int first_segment) {
    size_t pos = 0;
    added_match m;
    while (pos < n && next_added(c->t, s, n, pos, normalized, &m)) {
        int first = first_segment && pos == 0;
        int rc = normalized ? encode_words(c, s + pos, m.start - pos, first)
                            : encode_segment(c, s + pos, m.start - pos, first);
        if (rc) return rc;
        if (rs_ivec_push(c->out, m.id)) return rs_errf(c->e, RS_ENOMEM, "tokenizer: out of memory");
        pos = m.end;
    }
    int first = first_segment && pos == 0;
    return normalized ? encode_words(c, s + pos, n - pos, first)
                      : encode_segment(c, s + pos, n - pos, first);
}

int tok_encode(const tok_tokenizer *t, const char *text, size_t len, int flags, rs_ivec *out,
               rs_err *e) {
    if (!tok_utf8_valid(text, len)) return rs_errf(e, RS_EINVAL, "text is not valid UTF-8");
    enc c = {t, flags, out, e};
    int start = out->n, rc = 0;
    if (flags & TOK_ADD_SPECIAL) rc = rs_ivec_append(out, t->post_pre.v, t->post_pre.n);
    if (!rc)
        rc = flags & TOK_NO_SPECIAL ? encode_segment(&c, text, len, 1)
                                    : encode_split(&c, text, len, 0, 1);
    if (!rc && (flags & TOK_ADD_SPECIAL)) rc = rs_ivec_append(out, t->post_post.v, t->post_post.n);
    if (rc == RS_ENOMEM) rs_errf(e, rc, "tokenizer: out of memory");
    if (rc) out->n = start;
    return rc;
}
