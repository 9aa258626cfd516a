/* tok_load.c — tokenizer.json (or vocab.json + merges.txt) and tokenizer_config.json to a
 * tok_tokenizer. Every component type is checked here, so an unsupported pipeline fails at
 * load time with its type named, never later while encoding. */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tokenizer/tok_internal.h"

enum { MAX_IDS = 1 << 24 }; /* no real vocabulary comes near; bounds a malformed file */

static char *dupstr(const char *s) {
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d) memcpy(d, s, n);
    return d;
}

static const char *jstr(const cJSON *o, const char *k) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

static int jbool(const cJSON *o, const char *k, int dflt) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsBool(v) ? cJSON_IsTrue(v) : dflt;
}

static const char *jtype(const cJSON *o) {
    const char *t = jstr(o, "type");
    return t ? t : "(no type)";
}

static int compile_re(const char *pat, int literal, pcre2_code **out, rs_err *e) {
    tok_bytes b = {0};
    int rc = 0;
    if (literal) { /* escape every ASCII punctuation byte; the rest stands for itself */
        for (const char *c = pat; *c && !rc; c++) {
            int esc =
                (unsigned char)*c < 0x80 &&
                !((*c >= '0' && *c <= '9') || (*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z'));
            rc = (esc && tb_put(&b, "\\", 1)) || tb_put(&b, c, 1);
        }
        rc = rc || tb_cstr(&b);
    } else {
        rc = tok_regex_rewrite(pat, &b);
    }
    if (rc) {
        tb_free(&b);
        return rs_errf(e, RS_ENOMEM, "tokenizer: out of memory");
    }
    int ec;
    PCRE2_SIZE eo;
    *out = pcre2_compile((PCRE2_SPTR)b.p, PCRE2_ZERO_TERMINATED, PCRE2_UTF | PCRE2_UCP, &ec, &eo,
                         NULL);
    tb_free(&b);
    if (!*out) {
        PCRE2_UCHAR msg[160];
        pcre2_get_error_message(ec, msg, sizeof msg);
        return rs_errf(e, RS_EINVAL, "tokenizer: bad regex '%s' at %zu: %s", pat, (size_t)eo,
                       (char *)msg);
    }
    pcre2_jit_compile(*out, PCRE2_JIT_COMPLETE); /* falls back to the interpreter if no JIT */
    return 0;
}

/* A {"String": s} or {"Regex": r} pattern object. */
static int compile_pattern(const cJSON *pat, pcre2_code **out, rs_err *e) {
    const char *s = jstr(pat, "String"), *r = jstr(pat, "Regex");
    if (!s && !r) return rs_errf(e, RS_EINVAL, "tokenizer: pattern without String or Regex");
    return compile_re(s ? s : r, s != NULL, out, e);
}

/* A Sequence's children: an array of elem-sized structs, each filled by fn. */
typedef int (*parse_fn)(const cJSON *j, void *out, rs_err *e);

static int parse_children(const cJSON *arr, size_t elem, parse_fn fn, void **sub, int *n,
                          rs_err *e) {
    int k = cJSON_GetArraySize(arr);
    if (k && !(*sub = calloc((size_t)k, elem)))
        return rs_errf(e, RS_ENOMEM, "tokenizer: out of memory");
    const cJSON *it;
    cJSON_ArrayForEach(it, arr) {
        int rc = fn(it, (char *)*sub + (size_t)(*n)++ * elem, e);
        if (rc) return rc;
    }
    return 0;
}

/* ---- normalizers ---------------------------------------------------------------------------- */

static void norm_free(tok_norm *n) {
    for (int i = 0; i < n->nsub; i++) norm_free(&n->sub[i]);
    free(n->sub);
    free(n->a);
    free(n->b);
}

static int parse_norm_v(const cJSON *j, void *out, rs_err *e);

static int parse_norm(const cJSON *j, tok_norm *n, rs_err *e) {
    static const struct {
        const char *name;
        tok_norm_kind kind;
    } simple[] = {{"NFC", NORM_NFC},
                  {"NFD", NORM_NFD},
                  {"NFKC", NORM_NFKC},
                  {"NFKD", NORM_NFKD},
                  {"Lowercase", NORM_LOWERCASE}};
    const char *ty = jtype(j);
    memset(n, 0, sizeof *n);
    for (size_t i = 0; i < sizeof simple / sizeof simple[0]; i++)
        if (!strcmp(ty, simple[i].name)) return n->kind = simple[i].kind, 0;
    if (!strcmp(ty, "Prepend")) {
        n->kind = NORM_PREPEND;
        const char *p = jstr(j, "prepend");
        if (!p) return rs_errf(e, RS_EINVAL, "tokenizer: Prepend normalizer without 'prepend'");
        return (n->a = dupstr(p)) ? 0 : rs_errf(e, RS_ENOMEM, "tokenizer: out of memory");
    }
    if (!strcmp(ty, "Replace")) {
        n->kind = NORM_REPLACE;
        const cJSON *pat = cJSON_GetObjectItemCaseSensitive(j, "pattern");
        const char *s = jstr(pat, "String"), *c = jstr(j, "content");
        if (!s || !c)
            return rs_errf(e, RS_EINVAL,
                           "tokenizer: Replace normalizer needs a String pattern and content "
                           "(Regex patterns are not supported)");
        n->a = dupstr(s), n->b = dupstr(c);
        return n->a && n->b ? 0 : rs_errf(e, RS_ENOMEM, "tokenizer: out of memory");
    }
    if (!strcmp(ty, "Sequence")) {
        n->kind = NORM_SEQUENCE;
        return parse_children(cJSON_GetObjectItemCaseSensitive(j, "normalizers"), sizeof *n->sub,
                              parse_norm_v, (void **)&n->sub, &n->nsub, e);
    }
    return rs_errf(e, RS_EINVAL, "tokenizer: unsupported normalizer type '%s'", ty);
}

static int parse_norm_v(const cJSON *j, void *out, rs_err *e) {
    return parse_norm(j, out, e);
}

/* ---- pre-tokenizers -------------------------------------------------------------------------- */

static void pre_free(tok_pre *p) {
    for (int i = 0; i < p->nsub; i++) pre_free(&p->sub[i]);
    free(p->sub);
    if (p->re) pcre2_code_free(p->re);
}

static const char GPT2_PATTERN[] =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

static int parse_split_mode(const cJSON *j, tok_pre *p, rs_err *e) {
    static const struct {
        const char *name;
        tok_split_mode mode;
    } modes[] = {{"Isolated", SPLIT_ISOLATED},
                 {"Removed", SPLIT_REMOVED},
                 {"MergedWithPrevious", SPLIT_MERGED_PREV},
                 {"MergedWithNext", SPLIT_MERGED_NEXT}};
    const char *b = jstr(j, "behavior");
    if (jbool(j, "invert", 0))
        return rs_errf(e, RS_EINVAL, "tokenizer: Split with invert=true is not supported");
    for (size_t i = 0; b && i < sizeof modes / sizeof modes[0]; i++)
        if (!strcmp(b, modes[i].name)) return p->mode = modes[i].mode, 0;
    return rs_errf(e, RS_EINVAL, "tokenizer: unsupported Split behavior '%s'", b ? b : "(none)");
}

static int parse_metaspace(const cJSON *j, tok_pre *p, rs_err *e) {
    const char *r = jstr(j, "replacement"), *ps = jstr(j, "prepend_scheme");
    if (!r || strlen(r) >= sizeof p->repl)
        return rs_errf(e, RS_EINVAL, "tokenizer: Metaspace needs a one-character replacement");
    strcpy(p->repl, r);
    p->split = jbool(j, "split", 1);
    if (!ps)
        p->ps = jbool(j, "add_prefix_space", 1) ? PREPEND_ALWAYS : PREPEND_NEVER;
    else if (!strcmp(ps, "always"))
        p->ps = PREPEND_ALWAYS;
    else if (!strcmp(ps, "first"))
        p->ps = PREPEND_FIRST;
    else if (!strcmp(ps, "never"))
        p->ps = PREPEND_NEVER;
    else
        return rs_errf(e, RS_EINVAL, "tokenizer: unknown Metaspace prepend_scheme '%s'", ps);
    return 0;
}

static int parse_pre_v(const cJSON *j, void *out, rs_err *e);

static int parse_pre(const cJSON *j, tok_pre *p, rs_err *e) {
    const char *ty = jtype(j);
    memset(p, 0, sizeof *p);
    if (!strcmp(ty, "Split")) {
        p->kind = PRE_SPLIT;
        int rc = parse_split_mode(j, p, e);
        return rc ? rc : compile_pattern(cJSON_GetObjectItemCaseSensitive(j, "pattern"), &p->re, e);
    }
    if (!strcmp(ty, "ByteLevel")) {
        p->kind = PRE_BYTELEVEL;
        p->add_prefix_space = jbool(j, "add_prefix_space", 1);
        p->mode = SPLIT_ISOLATED;
        return jbool(j, "use_regex", 1) ? compile_re(GPT2_PATTERN, 0, &p->re, e) : 0;
    }
    if (!strcmp(ty, "Metaspace")) {
        p->kind = PRE_METASPACE;
        return parse_metaspace(j, p, e);
    }
    if (!strcmp(ty, "Sequence")) {
        p->kind = PRE_SEQUENCE;
        return parse_children(cJSON_GetObjectItemCaseSensitive(j, "pretokenizers"), sizeof *p->sub,
                              parse_pre_v, (void **)&p->sub, &p->nsub, e);
    }
    return rs_errf(e, RS_EINVAL, "tokenizer: unsupported pre_tokenizer type '%s'", ty);
}

static int parse_pre_v(const cJSON *j, void *out, rs_err *e) {
    return parse_pre(j, out, e);
}

/* ---- decoders (a Sequence is flattened) -------------------------------------------------------
 */

static int add_dec(tok_tokenizer *t, tok_dec d, rs_err *e) {
    tok_dec *v = realloc(t->dec, (size_t)(t->n_dec + 1) * sizeof *v);
    if (!v) return rs_errf(e, RS_ENOMEM, "tokenizer: out of memory");
    t->dec = v;
    t->dec[t->n_dec++] = d;
    return 0;
}

/* Does the chain so far end in one token (after Fuse or ByteLevel)? Then a Strip acts on the
 * start of the whole text. */
static int chain_fused(const tok_tokenizer *t) {
    for (int i = t->n_dec - 1; i >= 0; i--)
        if (t->dec[i].kind == DEC_FUSE || t->dec[i].kind == DEC_BYTELEVEL) return 1;
    return 0;
}

static int set_global_strip(tok_tokenizer *t, tok_dec *d, const char *c, int n, rs_err *e) {
    if (t->strip_start)
        return rs_errf(e, RS_EINVAL, "tokenizer: more than one decoder strips the text start");
    if (strlen(c) >= sizeof t->strip_char)
        return rs_errf(e, RS_EINVAL, "tokenizer: strip content must be one character");
    d->global = 1;
    t->strip_start = n;
    strcpy(t->strip_char, c);
    return 0;
}

static int parse_strip(tok_tokenizer *t, const cJSON *j, tok_dec *d, rs_err *e) {
    const char *c = jstr(j, "content");
    const cJSON *st = cJSON_GetObjectItemCaseSensitive(j, "start");
    const cJSON *sp = cJSON_GetObjectItemCaseSensitive(j, "stop");
    if (!c || !cJSON_IsNumber(st) || !cJSON_IsNumber(sp) || st->valueint < 0 || sp->valueint < 0)
        return rs_errf(e, RS_EINVAL, "tokenizer: Strip decoder needs content, start and stop");
    if (!(d->a = dupstr(c))) return rs_errf(e, RS_ENOMEM, "tokenizer: out of memory");
    d->start = st->valueint, d->stop = sp->valueint;
    if (d->stop && chain_fused(t))
        return rs_errf(e, RS_EINVAL,
                       "tokenizer: a Strip decoder with stop > 0 on the whole text "
                       "is not supported (it would hold streamed text back)");
    return d->start && chain_fused(t) ? set_global_strip(t, d, c, d->start, e) : 0;
}

static int parse_dec(tok_tokenizer *t, const cJSON *j, rs_err *e) {
    const char *ty = jtype(j);
    tok_dec d = {0};
    int rc = 0;
    if (!strcmp(ty, "Sequence")) {
        const cJSON *it;
        cJSON_ArrayForEach(it, cJSON_GetObjectItemCaseSensitive(j, "decoders")) {
            if ((rc = parse_dec(t, it, e))) return rc;
        }
        return 0;
    }
    if (!strcmp(ty, "ByteLevel"))
        d.kind = DEC_BYTELEVEL;
    else if (!strcmp(ty, "ByteFallback"))
        d.kind = DEC_BYTEFALLBACK;
    else if (!strcmp(ty, "Fuse"))
        d.kind = DEC_FUSE;
    else if (!strcmp(ty, "Strip"))
        d.kind = DEC_STRIP, rc = parse_strip(t, j, &d, e);
    else if (!strcmp(ty, "Replace")) {
        const char *s = jstr(cJSON_GetObjectItemCaseSensitive(j, "pattern"), "String");
        const char *c = jstr(j, "content");
        if (!s || !c)
            return rs_errf(e, RS_EINVAL, "tokenizer: Replace decoder needs a String pattern");
        d.kind = DEC_REPLACE, d.a = dupstr(s), d.b = dupstr(c);
        if (!d.a || !d.b) rc = rs_errf(e, RS_ENOMEM, "tokenizer: out of memory");
    } else if (!strcmp(ty, "Metaspace")) {
        tok_pre m;
        if ((rc = parse_metaspace(j, &m, e))) return rc;
        d.kind = DEC_METASPACE, d.a = dupstr(m.repl), d.prefix = m.ps != PREPEND_NEVER;
        if (!d.a) return rs_errf(e, RS_ENOMEM, "tokenizer: out of memory");
        if (d.prefix) rc = set_global_strip(t, &d, " ", 1, e);
    } else {
        return rs_errf(e, RS_EINVAL, "tokenizer: unsupported decoder type '%s'", ty);
    }
    if (!rc) rc = add_dec(t, d, e);
    if (rc) free(d.a), free(d.b);
    return rc;
}

/* ---- post-processor: reduced to the ids put before and after the sequence ------------------- */

static int special_ids(const cJSON *specials, const char *name, rs_ivec *out, rs_err *e) {
    const cJSON *ids =
        cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(specials, name), "ids");
    if (!cJSON_IsArray(ids))
        return rs_errf(e, RS_EINVAL, "tokenizer: TemplateProcessing: no ids for '%s'", name);
    const cJSON *it;
    cJSON_ArrayForEach(it, ids) {
        if (!cJSON_IsNumber(it) || rs_ivec_push(out, it->valueint))
            return rs_errf(e, RS_EINVAL, "tokenizer: TemplateProcessing: bad id for '%s'", name);
    }
    return 0;
}

static int parse_template(tok_tokenizer *t, const cJSON *j, rs_err *e) {
    const cJSON *single = cJSON_GetObjectItemCaseSensitive(j, "single"), *it;
    const cJSON *specials = cJSON_GetObjectItemCaseSensitive(j, "special_tokens");
    int seen_seq = 0;
    cJSON_ArrayForEach(it, single) {
        const cJSON *sp = cJSON_GetObjectItemCaseSensitive(it, "SpecialToken");
        if (cJSON_GetObjectItemCaseSensitive(it, "Sequence")) {
            seen_seq = 1;
            continue;
        }
        const char *name = jstr(sp, "id");
        if (!name) return rs_errf(e, RS_EINVAL, "tokenizer: TemplateProcessing: bad item");
        int rc = special_ids(specials, name, seen_seq ? &t->post_post : &t->post_pre, e);
        if (rc) return rc;
    }
    return 0;
}

static int parse_post(tok_tokenizer *t, const cJSON *j, rs_err *e) {
    const char *ty = jtype(j);
    if (!strcmp(ty, "ByteLevel")) return 0; /* only trims offsets, which we do not report */
    if (!strcmp(ty, "TemplateProcessing")) return parse_template(t, j, e);
    if (!strcmp(ty, "Sequence")) {
        const cJSON *it;
        cJSON_ArrayForEach(it, cJSON_GetObjectItemCaseSensitive(j, "processors")) {
            int rc = parse_post(t, it, e);
            if (rc) return rc;
        }
        return 0;
    }
    return rs_errf(e, RS_EINVAL, "tokenizer: unsupported post_processor type '%s'", ty);
}

/* ---- vocabulary, merges, added tokens ---------------------------------------------------------
 */

static int set_token(tok_tokenizer *t, int id, const char *s, rs_err *e) {
    if (id < 0 || id >= t->n_ids) return rs_errf(e, RS_EINVAL, "tokenizer: bad token id %d", id);
    free(t->id_str[id]);
    if (!(t->id_str[id] = dupstr(s))) return rs_errf(e, RS_ENOMEM, "tokenizer: out of memory");
    t->id_len[id] = (int)strlen(s);
    return 0;
}

static int max_id(const cJSON *vocab, const cJSON *added, const cJSON *added_dec) {
    int m = -1;
    const cJSON *it;
    cJSON_ArrayForEach(it, vocab) {
        if (cJSON_IsNumber(it) && it->valueint > m) m = it->valueint;
    }
    cJSON_ArrayForEach(it, added) {
        const cJSON *id = cJSON_GetObjectItemCaseSensitive(it, "id");
        if (cJSON_IsNumber(id) && id->valueint > m) m = id->valueint;
    }
    cJSON_ArrayForEach(it, added_dec) {
        int id = atoi(it->string);
        if (id > m) m = id;
    }
    return m;
}

static int load_vocab(tok_tokenizer *t, const cJSON *vocab, rs_err *e) {
    if (!cJSON_IsObject(vocab)) return rs_errf(e, RS_EINVAL, "tokenizer: model.vocab is missing");
    const cJSON *it;
    cJSON_ArrayForEach(it, vocab) {
        if (!cJSON_IsNumber(it) || it->valueint < 0)
            return rs_errf(e, RS_EINVAL, "tokenizer: bad id for vocab entry '%s'", it->string);
        int rc = set_token(t, it->valueint, it->string, e);
        if (rc) return rc;
    }
    t->vocab.strs = t->id_str;
    t->vocab.lens = t->id_len;
    if (tok_strmap_init(&t->vocab, cJSON_GetArraySize(vocab)))
        return rs_errf(e, RS_ENOMEM, "tokenizer: out of memory");
    cJSON_ArrayForEach(it, vocab) tok_strmap_put(&t->vocab, it->valueint);
    return 0;
}

static int add_merge(tok_tokenizer *t, const char *a, size_t al, const char *b, size_t bl, int rank,
                     rs_err *e) {
    int32_t ia = tok_strmap_get(&t->vocab, a, al), ib = tok_strmap_get(&t->vocab, b, bl);
    size_t pl = strlen(t->cont_prefix);
    if (pl && bl >= pl && !memcmp(b, t->cont_prefix, pl)) b += pl, bl -= pl;
    char *m = malloc(al + bl + 1);
    if (!m) return rs_errf(e, RS_ENOMEM, "tokenizer: out of memory");
    memcpy(m, a, al);
    memcpy(m + al, b, bl);
    int32_t im = tok_strmap_get(&t->vocab, m, al + bl);
    free(m);
    if (ia < 0 || ib < 0 || im < 0)
        return rs_errf(e, RS_EINVAL,
                       "tokenizer: merge %d ('%.*s' '%.*s') uses a token not in the "
                       "vocabulary",
                       rank, (int)al, a, (int)bl, b);
    tok_mergemap_put(&t->merges, ia, ib, rank, im);
    return 0;
}

/* One merge: "a b" (older files, merges.txt) or ["a", "b"]. */
static int add_merge_json(tok_tokenizer *t, const cJSON *m, int rank, rs_err *e) {
    if (cJSON_IsString(m)) {
        const char *s = m->valuestring, *sp = strchr(s + (s[0] == ' '), ' ');
        if (!sp) return rs_errf(e, RS_EINVAL, "tokenizer: merge %d '%s' has no space", rank, s);
        return add_merge(t, s, (size_t)(sp - s), sp + 1, strlen(sp + 1), rank, e);
    }
    const cJSON *a = cJSON_GetArrayItem(m, 0), *b = cJSON_GetArrayItem(m, 1);
    if (!cJSON_IsString(a) || !cJSON_IsString(b))
        return rs_errf(e, RS_EINVAL, "tokenizer: merge %d is not a pair of strings", rank);
    return add_merge(t, a->valuestring, strlen(a->valuestring), b->valuestring,
                     strlen(b->valuestring), rank, e);
}

static int load_merges(tok_tokenizer *t, const cJSON *merges, rs_err *e) {
    if (tok_mergemap_init(&t->merges, cJSON_GetArraySize(merges) + 1))
        return rs_errf(e, RS_ENOMEM, "tokenizer: out of memory");
    int rank = 0;
    const cJSON *it;
    cJSON_ArrayForEach(it, merges) {
        int rc = add_merge_json(t, it, rank++, e);
        if (rc) return rc;
    }
    return 0;
}

static int added_cmp(const void *a, const void *b) {
    const tok_added *x = a, *y = b;
    return x->len != y->len ? (x->len < y->len ? 1 : -1) : (x->id > y->id) - (x->id < y->id);
}

/* One added token from tokenizer.json's added_tokens or tokenizer_config.json's
 * added_tokens_decoder (the first definition of an id wins). */
static int add_added(tok_tokenizer *t, int id, const cJSON *j, rs_err *e) {
    const char *c = jstr(j, "content");
    if (!c || !*c) return rs_errf(e, RS_EINVAL, "tokenizer: added token %d has no content", id);
    for (int i = 0; i < t->n_added; i++)
        if (t->added[i].id == id) return 0;
    tok_added *v = realloc(t->added, (size_t)(t->n_added + 1) * sizeof *v);
    if (!v) return rs_errf(e, RS_ENOMEM, "tokenizer: out of memory");
    t->added = v;
    tok_added *a = &t->added[t->n_added];
    *a = (tok_added){dupstr(c),
                     strlen(c),
                     id,
                     jbool(j, "special", 0),
                     jbool(j, "lstrip", 0),
                     jbool(j, "rstrip", 0),
                     jbool(j, "single_word", 0),
                     jbool(j, "normalized", !jbool(j, "special", 0))};
    if (!a->content) return rs_errf(e, RS_ENOMEM, "tokenizer: out of memory");
    t->n_added++;
    t->any_norm_added |= a->normalized;
    t->added_first[(unsigned char)c[0]] |= (unsigned char)(1 << a->normalized);
    t->id_flags[id] |= TOKF_ADDED | (a->special ? TOKF_SPECIAL : 0);
    return set_token(t, id, c, e);
}

static int load_added(tok_tokenizer *t, const cJSON *added, const cJSON *added_dec, rs_err *e) {
    const cJSON *it;
    cJSON_ArrayForEach(it, added) {
        const cJSON *id = cJSON_GetObjectItemCaseSensitive(it, "id");
        if (!cJSON_IsNumber(id)) return rs_errf(e, RS_EINVAL, "tokenizer: added token without id");
        int rc = add_added(t, id->valueint, it, e);
        if (rc) return rc;
    }
    cJSON_ArrayForEach(it, added_dec) {
        int rc = add_added(t, atoi(it->string), it, e);
        if (rc) return rc;
    }
    if (t->n_added) qsort(t->added, (size_t)t->n_added, sizeof *t->added, added_cmp);
    return 0;
}

static int load_model_opts(tok_tokenizer *t, const cJSON *model, rs_err *e) {
    const char *ty = jstr(model, "type");
    if (ty && strcmp(ty, "BPE"))
        return rs_errf(e, RS_EINVAL, "tokenizer: unsupported model type '%s' (only BPE)", ty);
    const cJSON *dr = cJSON_GetObjectItemCaseSensitive(model, "dropout");
    if (cJSON_IsNumber(dr) && dr->valuedouble > 0)
        return rs_errf(e, RS_EINVAL, "tokenizer: BPE dropout is not supported");
    t->byte_fallback = jbool(model, "byte_fallback", 0);
    t->fuse_unk = jbool(model, "fuse_unk", 0);
    t->ignore_merges = jbool(model, "ignore_merges", 0);
    const char *cp = jstr(model, "continuing_subword_prefix");
    const char *ew = jstr(model, "end_of_word_suffix");
    t->cont_prefix = dupstr(cp ? cp : "");
    t->eow_suffix = dupstr(ew ? ew : "");
    if (!t->cont_prefix || !t->eow_suffix) return rs_errf(e, RS_ENOMEM, "tokenizer: out of memory");
    t->cont_prefix_len = strlen(t->cont_prefix);
    t->eow_suffix_len = strlen(t->eow_suffix);
    return 0;
}

static int alloc_ids(tok_tokenizer *t, int n, rs_err *e) {
    if (n <= 0 || n > MAX_IDS)
        return rs_errf(e, RS_EINVAL, "tokenizer: vocabulary size %d is out of range", n);
    t->n_ids = n;
    t->id_str = calloc((size_t)n, sizeof *t->id_str);
    t->id_len = calloc((size_t)n, sizeof *t->id_len);
    t->id_flags = calloc((size_t)n, 1);
    if (!t->id_str || !t->id_len || !t->id_flags)
        return rs_errf(e, RS_ENOMEM, "tokenizer: out of memory");
    return 0;
}

static void find_small_chars(tok_tokenizer *t) {
    for (int32_t cp = 0; cp < 0x800; cp++) {
        tok_bytes b = {0};
        t->small_cp_id[cp] = -1;
        if (!tok_utf8_put(&b, cp)) t->small_cp_id[cp] = tok_strmap_get(&t->vocab, b.p, b.n);
        tb_free(&b);
    }
}

static void find_byte_tokens(tok_tokenizer *t) {
    for (int b = 0; b < 256; b++) {
        char s[8];
        snprintf(s, sizeof s, "<0x%02X>", b);
        t->byte_id[b] = tok_strmap_get(&t->vocab, s, 6);
        if (t->byte_id[b] >= 0) t->id_flags[t->byte_id[b]] |= TOKF_BYTE;
    }
}

/* Without a post_processor, transformers' add_bos_token / add_eos_token decide. */
static int default_post(tok_tokenizer *t, rs_err *e) {
    int rc = 0;
    const tok_config *c = &t->config;
    if (c->add_bos && c->named[TOK_BOS]) {
        int32_t id = tok_special_id(t, c->named[TOK_BOS]);
        if (id >= 0) rc = rs_ivec_push(&t->post_pre, id);
    }
    if (!rc && c->add_eos && c->named[TOK_EOS]) {
        int32_t id = tok_special_id(t, c->named[TOK_EOS]);
        if (id >= 0) rc = rs_ivec_push(&t->post_post, id);
    }
    return rc ? rs_errf(e, rc, "tokenizer: out of memory") : 0;
}

static int load_components(tok_tokenizer *t, const cJSON *root, rs_err *e) {
    const cJSON *n = cJSON_GetObjectItemCaseSensitive(root, "normalizer");
    const cJSON *p = cJSON_GetObjectItemCaseSensitive(root, "pre_tokenizer");
    const cJSON *pp = cJSON_GetObjectItemCaseSensitive(root, "post_processor");
    const cJSON *d = cJSON_GetObjectItemCaseSensitive(root, "decoder");
    int rc = 0;
    if (cJSON_IsObject(n) && !rc) {
        if (!(t->norm = calloc(1, sizeof *t->norm))) return RS_ENOMEM;
        rc = parse_norm(n, t->norm, e);
    }
    if (cJSON_IsObject(p) && !rc) {
        if (!(t->pre = calloc(1, sizeof *t->pre))) return RS_ENOMEM;
        rc = parse_pre(p, t->pre, e);
    }
    if (!rc && cJSON_IsObject(pp))
        rc = parse_post(t, pp, e);
    else if (!rc)
        rc = default_post(t, e);
    if (cJSON_IsObject(d) && !rc) rc = parse_dec(t, d, e);
    return rc;
}

int tok_load_json(tok_tokenizer *t, const cJSON *root, const cJSON *cfg, rs_err *e) {
    int rc = 0;
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(root, "model");
    const cJSON *vocab = cJSON_GetObjectItemCaseSensitive(model, "vocab");
    const cJSON *added = cJSON_GetObjectItemCaseSensitive(root, "added_tokens");
    const cJSON *added_dec = cJSON_GetObjectItemCaseSensitive(cfg, "added_tokens_decoder");
    if (!rc) rc = load_model_opts(t, model, e);
    if (!rc) rc = alloc_ids(t, max_id(vocab, added, added_dec) + 1, e);
    if (!rc) rc = load_vocab(t, vocab, e);
    if (!rc) rc = load_merges(t, cJSON_GetObjectItemCaseSensitive(model, "merges"), e);
    if (!rc) rc = load_added(t, added, added_dec, e);
    const char *unk = jstr(model, "unk_token");
    t->unk_id = unk ? tok_strmap_get(&t->vocab, unk, strlen(unk)) : -1;
    if (!rc) find_byte_tokens(t), find_small_chars(t);
    if (!rc) rc = load_components(t, root, e);
    if (rc == RS_ENOMEM) rs_errf(e, rc, "tokenizer: out of memory");
    return rc;
}

void tok_components_free(tok_tokenizer *t) {
    if (t->norm) norm_free(t->norm);
    if (t->pre) pre_free(t->pre);
    free(t->norm);
    free(t->pre);
    for (int i = 0; i < t->n_dec; i++) free(t->dec[i].a), free(t->dec[i].b);
    free(t->dec);
    for (int i = 0; i < t->n_added; i++) free(t->added[i].content);
    free(t->added);
    for (int i = 0; i < t->n_ids; i++) free(t->id_str[i]);
    free(t->id_str);
    free(t->id_len);
    free(t->id_flags);
    tok_strmap_free(&t->vocab);
    tok_mergemap_free(&t->merges);
    rs_ivec_free(&t->post_pre);
    rs_ivec_free(&t->post_post);
    free(t->cont_prefix);
    free(t->eow_suffix);
    tok_config_free(&t->config);
}
