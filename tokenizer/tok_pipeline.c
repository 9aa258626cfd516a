/* tok_pipeline.c — normalizers and pre-tokenizers: the stages between the raw text of one
 * segment (the text between two added tokens) and the pre-tokens the BPE model sees. */
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "tokenizer/tok_internal.h"

/* ---- normalizers ------------------------------------------------------------------------- */

static int is_ascii(const char *p, size_t n) {
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)p[i] >= 0x80) return 0;
    return 1;
}

static int set_bytes(tok_bytes *s, const char *p, size_t n) {
    s->n = 0;
    return tb_put(s, p, n);
}

/* NFC quick check: true when no character can change under NFC — each is a starter (combining
 * class 0) without a canonical decomposition (compatibility ones are NFKC's business) that
 * never composes with what precedes it (utf8proc marks
 * such "second" characters in comb_index; the Hangul jamo compose algorithmically, so the jamo
 * block is never stable). Anything else goes through utf8proc_map. */
static int nfc_stable(const char *p, size_t n) {
    for (size_t i = 0; i < n;) {
        if ((unsigned char)p[i] < 0x80) {
            i++;
            continue;
        }
        utf8proc_int32_t cp;
        utf8proc_ssize_t l =
            utf8proc_iterate((const utf8proc_uint8_t *)p + i, (utf8proc_ssize_t)(n - i), &cp);
        if (l <= 0 || (cp >= 0x1100 && cp <= 0x11FF)) return 0;
        const utf8proc_property_t *pr = utf8proc_get_property(cp);
        int second = pr->comb_index != UINT16_MAX && pr->comb_index >= 0x8000;
        int canonical = pr->decomp_seqindex != UINT16_MAX && pr->decomp_type == 0;
        if (pr->combining_class || canonical || second) return 0;
        i += (size_t)l;
    }
    return 1;
}

static int norm_unicode(tok_norm_kind k, tok_bytes *s, rs_err *e) {
    if (is_ascii(s->p, s->n) && k != NORM_LOWERCASE) return 0; /* every form of ASCII is itself */
    if (k == NORM_NFC && nfc_stable(s->p, s->n)) return 0;
    utf8proc_option_t o = UTF8PROC_STABLE;
    if (k == NORM_NFC || k == NORM_NFKC) o |= UTF8PROC_COMPOSE;
    if (k == NORM_NFD || k == NORM_NFKD) o |= UTF8PROC_DECOMPOSE;
    if (k == NORM_NFKC || k == NORM_NFKD) o |= UTF8PROC_COMPAT;
    if (k == NORM_LOWERCASE)
        o = UTF8PROC_CASEFOLD; /* full case folding (utf8proc has no
                                 full lowercase mapping) */
    utf8proc_uint8_t *dst = NULL;
    utf8proc_ssize_t r =
        utf8proc_map((const utf8proc_uint8_t *)s->p, (utf8proc_ssize_t)s->n, &dst, o);
    if (r < 0)
        return rs_errf(e, RS_EINVAL, "tokenizer: normalization failed: %s", utf8proc_errmsg(r));
    int rc = set_bytes(s, (const char *)dst, (size_t)r);
    free(dst);
    return rc;
}

int tok_replace(const char *a, const char *b, tok_bytes *s) {
    size_t al = strlen(a), bl = strlen(b);
    if (!al) return 0;
    tok_bytes o = {0};
    size_t i = 0, run = 0;
    int rc = 0;
    while (i + al <= s->n && !rc) {
        if (memcmp(s->p + i, a, al)) {
            i++;
            continue;
        }
        rc = tb_put(&o, s->p + run, i - run) || tb_put(&o, b, bl) ? RS_ENOMEM : 0;
        i += al;
        run = i;
    }
    if (!rc && !o.p) return 0; /* nothing replaced */
    if (!rc && tb_put(&o, s->p + run, s->n - run)) rc = RS_ENOMEM;
    if (!rc)
        tb_free(s), *s = o;
    else
        tb_free(&o);
    return rc;
}

int tok_normalize(const tok_norm *n, tok_bytes *s, rs_err *e) {
    int rc = 0;
    switch (n->kind) {
    case NORM_PREPEND: {
        if (!s->n) return 0;
        tok_bytes o = {0};
        if (tb_put(&o, n->a, strlen(n->a)) || tb_put(&o, s->p, s->n)) rc = RS_ENOMEM;
        if (!rc)
            tb_free(s), *s = o;
        else
            tb_free(&o);
        break;
    }
    case NORM_REPLACE:
        rc = tok_replace(n->a, n->b, s);
        break;
    case NORM_SEQUENCE:
        for (int i = 0; i < n->nsub && !rc; i++) rc = tok_normalize(&n->sub[i], s, e);
        return rc;
    default:
        return norm_unicode(n->kind, s, e);
    }
    return rc ? rs_errf(e, rc, "tokenizer: out of memory while normalizing") : 0;
}

/* ---- pre-tokenizers ------------------------------------------------------------------------ */

/* Split one piece p[0..n) by the regex into out, as Hugging Face's Split does. */
static int split_piece(const tok_pre *p, pcre2_match_data *md, const char *s, size_t n,
                       tok_list *out) {
    size_t pos = 0, gap = 0;
    int rc = 0, pending_next = 0,
        first = out->n; /* MergedWithNext: the last piece is open to the right */
    while (pos <= n && !rc) {
        int m = pcre2_match(p->re, (PCRE2_SPTR)s, n, pos, PCRE2_NO_UTF_CHECK, md, NULL);
        if (m < 0) break;
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
        size_t a = ov[0], b = ov[1];
        if (b == a) { /* an empty match: step over one character and look again */
            if (a >= n) break;
            int k = tok_utf8_len((const unsigned char *)s + a, n - a);
            pos = a + (size_t)(k ? k : 1);
            continue;
        }
        if (a > gap) {
            rc = pending_next ? tl_extend(out, s + gap, a - gap) : tl_push(out, s + gap, a - gap);
            pending_next = 0;
        }
        if (rc) break;
        switch (p->mode) {
        case SPLIT_ISOLATED:
            rc = tl_push(out, s + a, b - a);
            break;
        case SPLIT_REMOVED:
            break;
        case SPLIT_MERGED_PREV:
            rc = out->n > first ? tl_extend(out, s + a, b - a) : tl_push(out, s + a, b - a);
            break;
        case SPLIT_MERGED_NEXT:
            rc = tl_push(out, s + a, b - a);
            pending_next = 1;
            break;
        }
        pos = gap = b;
    }
    if (!rc && gap < n)
        rc = pending_next ? tl_extend(out, s + gap, n - gap) : tl_push(out, s + gap, n - gap);
    return rc;
}

static int pre_split(const tok_pre *p, tok_list *io, rs_err *e) {
    pcre2_match_data *md = pcre2_match_data_create_from_pattern(p->re, NULL);
    if (!md) return rs_errf(e, RS_ENOMEM, "tokenizer: out of memory");
    tok_list out = {0};
    int rc = 0;
    for (int i = 0; i < io->n && !rc; i++)
        rc = split_piece(p, md, tl_ptr(io, i), io->s[i].len, &out);
    pcre2_match_data_free(md);
    if (rc) {
        tl_free(&out);
        return rs_errf(e, rc, "tokenizer: out of memory while splitting");
    }
    tl_free(io);
    *io = out;
    return 0;
}

static int bytelevel_map(const tok_tokenizer *t, tok_list *io) {
    tok_list out = {0};
    if (tb_reserve(&out.b, io->b.n * 2)) return RS_ENOMEM; /* a stand-in is at most 2 bytes */
    for (int i = 0; i < io->n; i++) {
        const unsigned char *s = (const unsigned char *)tl_ptr(io, i);
        if (tl_push(&out, "", 0)) {
            tl_free(&out);
            return RS_ENOMEM;
        }
        char *w = out.b.p + out.b.n;
        for (size_t k = 0; k < io->s[i].len; k++) {
            const unsigned char *c = t->bl_char[s[k]];
            *w++ = (char)c[1];
            if (c[0] == 2) *w++ = (char)c[2];
        }
        size_t len = (size_t)(w - (out.b.p + out.b.n));
        out.b.n += len;
        out.s[out.n - 1].len = len;
    }
    tl_free(io);
    *io = out;
    return 0;
}

/* Prepend `c` to the first piece (ByteLevel add_prefix_space, Metaspace prepend). */
static int prepend_first(tok_list *io, const char *c, size_t n) {
    tok_list out = {0};
    for (int i = 0; i < io->n; i++)
        if (tl_push(&out, i ? "" : c, i ? 0 : n) || tl_extend(&out, tl_ptr(io, i), io->s[i].len)) {
            tl_free(&out);
            return RS_ENOMEM;
        }
    tl_free(io);
    *io = out;
    return 0;
}

static int pre_bytelevel(const tok_tokenizer *t, const tok_pre *p, tok_list *io, rs_err *e) {
    int rc = 0;
    if (p->add_prefix_space && io->n && (io->s[0].len == 0 || tl_ptr(io, 0)[0] != ' '))
        rc = prepend_first(io, " ", 1);
    if (!rc && p->re && (rc = pre_split(p, io, e))) return rc;
    if (!rc) rc = bytelevel_map(t, io);
    return rc ? rs_errf(e, rc, "tokenizer: out of memory") : 0;
}

static int pre_metaspace(const tok_pre *p, tok_list *io, int first_segment, rs_err *e) {
    size_t rl = strlen(p->repl);
    tok_list out = {0};
    int rc = 0;
    for (int i = 0; i < io->n && !rc; i++) {
        const char *s = tl_ptr(io, i);
        size_t n = io->s[i].len;
        int pre = p->ps == PREPEND_ALWAYS || (p->ps == PREPEND_FIRST && first_segment && i == 0);
        if (pre && n && (s[0] == ' ' || (n >= rl && !memcmp(s, p->repl, rl)))) pre = 0;
        rc = tl_push(&out, p->repl, pre ? rl : 0);
        for (size_t k = 0; k < n && !rc; k++) {
            int cut = p->split && (s[k] == ' ' || (k + rl <= n && !memcmp(s + k, p->repl, rl)));
            if (cut && out.s[out.n - 1].len) rc = tl_push(&out, "", 0);
            if (rc) break;
            if (s[k] == ' ')
                rc = tl_extend(&out, p->repl, rl);
            else
                rc = tl_extend(&out, s + k, 1);
        }
        if (!rc && out.n && out.s[out.n - 1].len == 0) out.n--;
    }
    if (rc) {
        tl_free(&out);
        return rs_errf(e, rc, "tokenizer: out of memory");
    }
    tl_free(io);
    *io = out;
    return 0;
}

int tok_pretokenize(const tok_tokenizer *t, const tok_pre *p, tok_list *io, int first_segment,
                    rs_err *e) {
    int rc = 0;
    switch (p->kind) {
    case PRE_SPLIT:
        return pre_split(p, io, e);
    case PRE_BYTELEVEL:
        return pre_bytelevel(t, p, io, e);
    case PRE_METASPACE:
        return pre_metaspace(p, io, first_segment, e);
    case PRE_SEQUENCE:
        for (int i = 0; i < p->nsub && !rc; i++)
            rc = tok_pretokenize(t, &p->sub[i], io, first_segment, e);
        return rc;
    }
    return rs_errf(e, RS_EINVAL, "tokenizer: bad pre-tokenizer");
}

/* Hugging Face's regexes run on Oniguruma, where \s is the White_Space property; PCRE2's \s
 * also matches U+180E, so \s and \S are spelled as the property (PCRE2's own table). */
int tok_regex_rewrite(const char *pat, tok_bytes *out) {
    for (const char *c = pat; *c; c++) {
        int rc;
        if (c[0] == '\\' && (c[1] == 's' || c[1] == 'S'))
            rc = tb_put(out, c[1] == 's' ? "\\p{White_Space}" : "\\P{White_Space}", 15), c++;
        else if (c[0] == '\\' && c[1])
            rc = tb_put(out, c, 2), c++;
        else
            rc = tb_put(out, c, 1);
        if (rc) return RS_ENOMEM;
    }
    return tb_cstr(out);
}
