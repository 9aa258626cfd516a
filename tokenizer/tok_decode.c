/* tok_decode.c — ids to text through the declared decoder chain, whole and incremental.
 *
 * The incremental decoder (tok_stream) re-decodes only a small window: the ids from
 * prefix_off (the start of the previously emitted step) to the end. The text of
 * [prefix_off, read_off) was already emitted, so the new text is what the window adds beyond it.
 * New text is held while the byte-level text ends inside a UTF-8 sequence (at most 3 bytes) or
 * a byte-fallback run is still open. Because the window always starts at a character boundary
 * and after a complete byte-fallback
 * group, decoding it gives the same bytes as decoding everything; the one decoder that depends
 * on the position in the whole text (a Strip / Metaspace acting on the text start) is turned off
 * inside windows and applied by the stream itself to the start of its output. */
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "tokenizer/tok_internal.h"

static int oom(rs_err *e) {
    return rs_errf(e, RS_ENOMEM, "tokenizer: out of memory");
}

static int dec_bytelevel(const tok_tokenizer *t, const tok_list *in, tok_list *out,
                         int *truncated) {
    tok_bytes raw = {0};
    int rc = 0;
    for (int i = 0; i < in->n && !rc; i++) {
        const char *s = tl_ptr(in, i);
        size_t n = in->s[i].len, mark = raw.n;
        for (size_t k = 0; k < n && !rc;) {
            utf8proc_int32_t cp;
            utf8proc_ssize_t l =
                utf8proc_iterate((const utf8proc_uint8_t *)s + k, (utf8proc_ssize_t)(n - k), &cp);
            if (l <= 0 || cp >= 324 || t->bl_byte[cp] < 0) { /* not byte-level text (an added
                                                              token): its own bytes */
                raw.n = mark;
                rc = tb_put(&raw, s, n);
                break;
            }
            unsigned char b = (unsigned char)t->bl_byte[cp];
            rc = tb_put(&raw, &b, 1);
            k += (size_t)l;
        }
    }
    tok_bytes txt = {0};
    if (!rc) rc = tok_utf8_lossy(&txt, raw.p ? raw.p : "", raw.n, truncated);
    if (!rc) rc = tl_push(out, txt.p ? txt.p : "", txt.n);
    tb_free(&raw);
    tb_free(&txt);
    return rc;
}

static int dec_replace(const tok_dec *d, const tok_list *in, tok_list *out) {
    tok_bytes b = {0};
    int rc = 0;
    for (int i = 0; i < in->n && !rc; i++) {
        b.n = 0;
        rc = tb_put(&b, tl_ptr(in, i), in->s[i].len);
        if (!rc) rc = tok_replace(d->a, d->b, &b);
        if (!rc) rc = tl_push(out, b.p, b.n);
    }
    tb_free(&b);
    return rc;
}

static int byte_token(const char *s, size_t n) {
    if (n != 6 || memcmp(s, "<0x", 3) || s[5] != '>') return -1;
    int v = 0;
    for (int k = 3; k < 5; k++) {
        char c = s[k];
        int h = c >= '0' && c <= '9'   ? c - '0'
                : c >= 'a' && c <= 'f' ? c - 'a' + 10
                : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                       : -1;
        if (h < 0) return -1;
        v = v * 16 + h;
    }
    return v;
}

/* A run of <0xNN> tokens becomes its text if valid UTF-8, else one U+FFFD per byte. */
static int flush_bytes(tok_bytes *run, tok_list *out) {
    int rc = 0;
    if (!run->n) return 0;
    if (tok_utf8_valid(run->p, run->n))
        rc = tl_push(out, run->p, run->n);
    else
        for (size_t k = 0; k < run->n && !rc; k++) rc = tl_push(out, "\xEF\xBF\xBD", 3);
    run->n = 0;
    return rc;
}

static int dec_bytefallback(const tok_list *in, tok_list *out) {
    tok_bytes run = {0};
    int rc = 0;
    for (int i = 0; i < in->n && !rc; i++) {
        int b = byte_token(tl_ptr(in, i), in->s[i].len);
        if (b >= 0) {
            unsigned char c = (unsigned char)b;
            rc = tb_put(&run, &c, 1);
            continue;
        }
        rc = flush_bytes(&run, out);
        if (!rc) rc = tl_push(out, tl_ptr(in, i), in->s[i].len);
    }
    if (!rc) rc = flush_bytes(&run, out);
    tb_free(&run);
    return rc;
}

static int dec_fuse(const tok_list *in, tok_list *out) {
    int rc = tl_push(out, "", 0);
    for (int i = 0; i < in->n && !rc; i++) rc = tl_extend(out, tl_ptr(in, i), in->s[i].len);
    return rc;
}

static int dec_strip(const tok_dec *d, const tok_list *in, tok_list *out, int cont) {
    size_t cl = strlen(d->a);
    int rc = 0;
    for (int i = 0; i < in->n && !rc; i++) {
        const char *s = tl_ptr(in, i);
        size_t a = 0, b = in->s[i].len;
        for (int k = 0; k < d->start && !(d->global && cont); k++)
            if (b - a >= cl && !memcmp(s + a, d->a, cl)) a += cl;
        for (int k = 0; k < d->stop; k++)
            if (b - a >= cl && !memcmp(s + b - cl, d->a, cl)) b -= cl;
        rc = tl_push(out, s + a, b - a);
    }
    return rc;
}

static int dec_metaspace(const tok_dec *d, const tok_list *in, tok_list *out, int cont) {
    tok_bytes b = {0};
    int rc = 0;
    for (int i = 0; i < in->n && !rc; i++) {
        b.n = 0;
        rc = tb_put(&b, tl_ptr(in, i), in->s[i].len);
        if (!rc) rc = tok_replace(d->a, " ", &b);
        size_t skip = i == 0 && d->prefix && !cont && b.n && b.p[0] == ' ';
        if (!rc) rc = tl_push(out, b.p + skip, b.n - skip);
    }
    tb_free(&b);
    return rc;
}

static int dec_step(const tok_tokenizer *t, const tok_dec *d, const tok_list *in, tok_list *out,
                    tok_dec_mode *m) {
    int cont = m->cont;
    switch (d->kind) {
    case DEC_BYTELEVEL:
        return dec_bytelevel(t, in, out, &m->truncated);
    case DEC_REPLACE:
        return dec_replace(d, in, out);
    case DEC_BYTEFALLBACK:
        return dec_bytefallback(in, out);
    case DEC_FUSE:
        return dec_fuse(in, out);
    case DEC_STRIP:
        return dec_strip(d, in, out, cont);
    case DEC_METASPACE:
        return dec_metaspace(d, in, out, cont);
    }
    return RS_EINVAL;
}

static int check_ids(const tok_tokenizer *t, const int32_t *ids, int n, rs_err *e) {
    for (int i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= t->n_ids || !t->id_str[ids[i]])
            return rs_errf(e, RS_EINVAL, "token id %d is out of range (vocabulary size %d)", ids[i],
                           t->n_ids);
    return 0;
}

int tok_decode_into(const tok_tokenizer *t, const int32_t *ids, int n, tok_dec_mode *m,
                    tok_bytes *out, rs_err *e) {
    int rc = check_ids(t, ids, n, e);
    if (rc) return rc;
    tok_list cur = {0}, nxt = {0};
    for (int i = 0; i < n && !rc; i++) {
        if (m->skip_special && (t->id_flags[ids[i]] & TOKF_SPECIAL)) continue;
        if (t->n_dec == 0 && cur.n) rc = tl_push(&cur, " ", 1); /* no decoder: join with spaces */
        if (!rc) rc = tl_push(&cur, t->id_str[ids[i]], (size_t)t->id_len[ids[i]]);
    }
    for (int k = 0; k < t->n_dec && !rc; k++) {
        tl_clear(&nxt);
        rc = dec_step(t, &t->dec[k], &cur, &nxt, m);
        tok_list tmp = cur;
        cur = nxt, nxt = tmp;
    }
    for (int i = 0; i < cur.n && !rc; i++) rc = tb_put(out, tl_ptr(&cur, i), cur.s[i].len);
    tl_free(&cur);
    tl_free(&nxt);
    return rc ? oom(e) : 0;
}

static int hand_out(tok_bytes *b, char **out, rs_err *e) {
    if (tb_cstr(b)) {
        tb_free(b);
        return oom(e);
    }
    *out = b->p;
    return 0;
}

int tok_decode(const tok_tokenizer *t, const int32_t *ids, int n, int skip_special, char **out,
               rs_err *e) {
    tok_bytes b = {0};
    *out = NULL;
    tok_dec_mode m = {skip_special, 0, 0};
    int rc = tok_decode_into(t, ids, n, &m, &b, e);
    if (rc) {
        tb_free(&b);
        return rc;
    }
    return hand_out(&b, out, e);
}

/* ---- streaming ------------------------------------------------------------------------------ */

void tok_stream_init(tok_stream *s, const tok_tokenizer *t, int skip_special) {
    memset(s, 0, sizeof *s);
    s->t = t;
    s->skip_special = skip_special;
    s->strip_left = t->strip_start;
}

void tok_stream_free(tok_stream *s) {
    rs_ivec_free(&s->ids);
}

/* Remove the part of the text start a global Strip / Metaspace decoder would remove. */
static size_t strip_start(tok_stream *s, const char *p, size_t n) {
    size_t cl = strlen(s->t->strip_char), a = 0;
    while (s->strip_left > 0 && n - a >= cl && cl && !memcmp(p + a, s->t->strip_char, cl))
        a += cl, s->strip_left--;
    if (a < n) s->strip_left = 0;
    return a;
}

static int stream_step(tok_stream *s, int final, char **out, rs_err *e) {
    tok_bytes pre = {0}, all = {0}, piece = {0};
    const int32_t *w = s->ids.v ? s->ids.v + s->prefix_off : NULL; /* no ids pushed yet */
    tok_dec_mode mp = {s->skip_special, 1, 0}, ma = mp;
    int rc = tok_decode_into(s->t, w, s->read_off - s->prefix_off, &mp, &pre, e);
    if (!rc) rc = tok_decode_into(s->t, w, s->ids.n - s->prefix_off, &ma, &all, e);
    int grew = !rc && all.n > pre.n && (!pre.n || !memcmp(all.p, pre.p, pre.n));
    if (grew && (final || !ma.truncated)) {
        size_t skip = strip_start(s, all.p + pre.n, all.n - pre.n);
        rc = tb_put(&piece, all.p + pre.n + skip, all.n - pre.n - skip) ? oom(e) : 0;
        s->prefix_off = s->read_off;
        s->read_off = s->ids.n;
        s->emitted += piece.n;
    }
    if (final) s->prefix_off = s->read_off = s->ids.n;
    tb_free(&pre);
    tb_free(&all);
    if (rc) {
        tb_free(&piece);
        return rc;
    }
    return hand_out(&piece, out, e);
}

static int has_bytefallback(const tok_tokenizer *t) {
    for (int i = 0; i < t->n_dec; i++)
        if (t->dec[i].kind == DEC_BYTEFALLBACK) return 1;
    return 0;
}

/* A byte-fallback run is only decided when it ends (valid UTF-8 or one U+FFFD per byte), so
 * hold while the last visible token is a byte token; a skipped special token does not end a
 * run, since the whole decode drops it before ByteFallback sees the tokens. */
static int holds_byte_run(const tok_stream *s) {
    if (!has_bytefallback(s->t)) return 0;
    for (int i = s->ids.n - 1; i >= 0; i--) {
        unsigned char f = s->t->id_flags[s->ids.v[i]];
        if (!(s->skip_special && (f & TOKF_SPECIAL))) return (f & TOKF_BYTE) != 0;
    }
    return 0;
}

int tok_stream_push(tok_stream *s, int32_t id, char **out, rs_err *e) {
    *out = NULL;
    int rc = check_ids(s->t, &id, 1, e);
    if (rc) return rc;
    if (rs_ivec_push(&s->ids, id)) return oom(e);
    if (holds_byte_run(s)) {
        *out = calloc(1, 1);
        return *out ? 0 : oom(e);
    }
    return stream_step(s, 0, out, e);
}

int tok_stream_flush(tok_stream *s, char **out, rs_err *e) {
    *out = NULL;
    return stream_step(s, 1, out, e);
}

/* ---- one token's bytes (for constrained decoding) ------------------------------------------ */

/* Byte-level text back to raw bytes, without the UTF-8 repair decoding does: a token may hold
 * part of a character. Text that is not byte-level (an added token) stays as written. */
static int bytelevel_raw(const tok_tokenizer *t, const char *s, size_t n, tok_bytes *out) {
    size_t mark = out->n;
    for (size_t k = 0; k < n;) {
        utf8proc_int32_t cp;
        utf8proc_ssize_t l =
            utf8proc_iterate((const utf8proc_uint8_t *)s + k, (utf8proc_ssize_t)(n - k), &cp);
        if (l <= 0 || cp >= 324 || t->bl_byte[cp] < 0) {
            out->n = mark;
            return tb_put(out, s, n);
        }
        unsigned char b = (unsigned char)t->bl_byte[cp];
        if (tb_put(out, &b, 1)) return RS_ENOMEM;
        k += (size_t)l;
    }
    return 0;
}

int tok_token_bytes(const tok_tokenizer *t, int32_t id, char **out, size_t *n, rs_err *e) {
    *out = NULL;
    *n = 0;
    int rc = check_ids(t, &id, 1, e);
    if (rc) return rc;
    if (t->id_flags[id] & TOKF_SPECIAL) return 1;
    int bv = (t->id_flags[id] & TOKF_BYTE) && has_bytefallback(t)
                 ? byte_token(t->id_str[id], (size_t)t->id_len[id])
                 : -1;
    tok_list cur = {0}, nxt = {0};
    tok_bytes b = {0};
    tok_dec_mode m = {0, 1, 0}; /* inside a text: nothing acts on the text start */
    if (bv >= 0) {
        unsigned char c = (unsigned char)bv;
        rc = tb_put(&b, &c, 1);
    } else {
        rc = tl_push(&cur, t->id_str[id], (size_t)t->id_len[id]);
        for (int k = 0; k < t->n_dec && !rc; k++) {
            tl_clear(&nxt);
            if (t->dec[k].kind == DEC_BYTELEVEL) {
                tok_bytes raw = {0};
                rc = bytelevel_raw(t, tl_ptr(&cur, 0), cur.s[0].len, &raw);
                if (!rc) rc = tl_push(&nxt, raw.p ? raw.p : "", raw.n);
                tb_free(&raw);
            } else {
                rc = dec_step(t, &t->dec[k], &cur, &nxt, &m);
            }
            tok_list tmp = cur;
            cur = nxt, nxt = tmp;
        }
        for (int i = 0; i < cur.n && !rc; i++) rc = tb_put(&b, tl_ptr(&cur, i), cur.s[i].len);
    }
    tl_free(&cur);
    tl_free(&nxt);
    if (rc || tb_cstr(&b)) {
        tb_free(&b);
        return oom(e);
    }
    *out = b.p ? b.p : strdup("");
    *n = b.n;
    return *out ? 0 : oom(e);
}
