/*
 * jinja_lex.c — the Jinja lexer, a hand translation of jinja2 3.1's regex lexer (lexer.py) for
 * the default delimiters with trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=False.
 * Whitespace control must match byte for byte, so every rule below cites what it mirrors.
 */
#include <stdlib.h>
#include <string.h>

#include "chat/jinja_lex.h"

typedef struct lexer {
    const char *s;      /* the source, newlines normalised to \n, one trailing \n removed */
    size_t n;           /* its length */
    size_t pos;         /* the next byte to read */
    bool line_starting; /* the previous match ended with \n (lexer.py's line_starting) */
    jj_tokens *out;     /* where tokens go */
    jj_arena *a;        /* literal strings are copied here */
    rs_err *e;          /* the error */
} lexer;

static int line_of(const lexer *L, size_t pos) {
    int line = 1;
    for (size_t i = 0; i < pos && i < L->n; i++) line += L->s[i] == '\n';
    return line;
}

static int lex_fail(lexer *L, size_t pos, const char *msg) {
    return rs_errf(L->e, RS_EINVAL, "template syntax error, line %d: %s", line_of(L, pos), msg);
}

static int emit(lexer *L, int type, size_t start, size_t end, jv val) {
    jj_tokens *t = L->out;
    if (t->n == t->cap) {
        int cap = t->cap ? t->cap * 2 : 256;
        jj_token *nv = realloc(t->v, sizeof *nv * (size_t)cap);
        if (!nv) return rs_errf(L->e, RS_ENOMEM, "out of memory lexing the template");
        t->v = nv, t->cap = cap;
    }
    t->v[t->n++] = (jj_token){
        .type = type, .line = 0, .p = L->s + start, .n = end - start, .val = val, .pos = start};
    return 0;
}

/* Python's \s at p (Unicode whitespace): its byte length, or 0. */
static int ws_at(const char *s, size_t n, size_t p) {
    if (p >= n) return 0;
    uint32_t cp;
    int k = jj_utf8_next(s + p, n - p, &cp);
    return jj_py_isspace(cp) ? k : 0;
}

static size_t skip_ws(const lexer *L, size_t p) {
    for (int k; (k = ws_at(L->s, L->n, p)); p += (size_t)k) {
    }
    return p;
}

static bool at(const lexer *L, size_t p, const char *lit) {
    size_t k = strlen(lit);
    return p + k <= L->n && !memcmp(L->s + p, lit, k);
}

/* The end of text [start, end) after whitespace control for a tag with sign ('-', '+' or 0);
 * var: the tag is {{ (lstrip_blocks does not apply to it). Mirrors OptionalLStrip. */
static size_t strip_text(const lexer *L, size_t start, size_t end, char sign, bool var) {
    if (sign == '-') { /* text.rstrip() */
        size_t keep = start;
        for (size_t p = start; p < end;) {
            int k = ws_at(L->s, end, p);
            if (!k) {
                uint32_t cp;
                p += (size_t)jj_utf8_next(L->s + p, end - p, &cp);
                keep = p;
            } else
                p += (size_t)k;
        }
        return keep;
    }
    if (sign == '+' || var) return end;
    size_t l_pos = start;
    for (size_t p = start; p < end; p++)
        if (L->s[p] == '\n') l_pos = p + 1;
    if (l_pos == start && !L->line_starting) return end;
    if (l_pos == end) return end; /* \s+ needs one character */
    for (size_t p = l_pos; p < end;) {
        int k = ws_at(L->s, end, p);
        if (!k) return end;
        p += (size_t)k;
    }
    return l_pos;
}

static int emit_text(lexer *L, size_t start, size_t end) {
    if (end <= start) return 0;
    return emit(L, JJ_TK_DATA, start, end, jv_str(L->s + start, end - start));
}

/* After "%}"-style block ends: "+%}" keeps, "-%}\s*" eats whitespace, "%}\n?" (trim_blocks). */
static size_t block_end_len(const lexer *L, size_t p, const char *close) {
    size_t k = strlen(close);
    if (L->s[p] == '+' && at(L, p + 1, close)) return k + 1;
    if (L->s[p] == '-' && at(L, p + 1, close)) return skip_ws(L, p + 1 + k) - p;
    if (at(L, p, close)) return k + (p + k < L->n && L->s[p + k] == '\n');
    return 0;
}

static int lex_comment(lexer *L, size_t p) {
    if (p >= L->n) { /* "{#" as the last bytes: jinja2's lexer just stops there */
        L->pos = L->n;
        return 0;
    }
    for (; p < L->n; p++) {
        size_t k = block_end_len(L, p, "#}");
        if (k) {
            L->pos = p + k;
            L->line_starting = L->s[L->pos - 1] == '\n';
            return 0;
        }
    }
    return lex_fail(L, L->n, "Missing end of comment tag");
}

/* {% raw %}: p is just after "{%" and its sign; returns the end of the opening tag or 0. */
static size_t raw_open_end(const lexer *L, size_t p) {
    p = skip_ws(L, p);
    if (!at(L, p, "raw")) return 0;
    p = skip_ws(L, p + 3);
    if (L->s[p] == '-' && at(L, p + 1, "%}")) return skip_ws(L, p + 3);
    if (at(L, p, "%}")) return p + 2;
    return 0;
}

static int lex_raw(lexer *L, size_t p) {
    if (p >= L->n) { /* nothing after {% raw %}: jinja2's lexer just stops there */
        L->pos = L->n;
        return 0;
    }
    for (size_t q = p; q + 1 < L->n; q++) {
        if (!at(L, q, "{%")) continue;
        size_t r = q + 2;
        char sign = L->s[r] == '-' || L->s[r] == '+' ? L->s[r++] : 0;
        r = skip_ws(L, r);
        if (!at(L, r, "endraw")) continue;
        r = skip_ws(L, r + 6);
        size_t k = block_end_len(L, r, "%}");
        if (!k) continue;
        if (emit_text(L, p, strip_text(L, p, q, sign, false))) return -1;
        L->pos = r + k;
        L->line_starting = L->s[L->pos - 1] == '\n';
        return 0;
    }
    return lex_fail(L, p, "Missing end of raw directive");
}

static void put_utf8(char **w, uint32_t cp) {
    unsigned char *o = (unsigned char *)*w;
    if (cp < 0x80)
        *o++ = (unsigned char)cp;
    else if (cp < 0x800)
        *o++ = (unsigned char)(0xC0 | cp >> 6), *o++ = 0x80 | (cp & 0x3F);
    else if (cp < 0x10000)
        *o++ = (unsigned char)(0xE0 | cp >> 12), *o++ = 0x80 | ((cp >> 6) & 0x3F),
        *o++ = 0x80 | (cp & 0x3F);
    else
        *o++ = (unsigned char)(0xF0 | cp >> 18), *o++ = 0x80 | ((cp >> 12) & 0x3F),
        *o++ = 0x80 | ((cp >> 6) & 0x3F), *o++ = 0x80 | (cp & 0x3F);
    *w = (char *)o;
}

static int hexval(char c) {
    return c >= '0' && c <= '9'   ? c - '0'
           : c >= 'a' && c <= 'f' ? c - 'a' + 10
           : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                  : -1;
}

/* Python's "unicode-escape" decoding of a string literal body (what jinja2 applies). */
static int unescape(lexer *L, size_t start, size_t end, jv *out) {
    char *buf = jj_alloc(L->a, end - start + 1), *w = buf;
    if (!buf) return rs_errf(L->e, RS_ENOMEM, "out of memory lexing the template");
    for (size_t p = start; p < end; p++) {
        char ch = L->s[p];
        if (ch != '\\' || p + 1 >= end) {
            *w++ = ch;
            continue;
        }
        char x = L->s[++p];
        const char *simple = strchr("\\'\"abfnrtv\n", x);
        if (simple && x) {
            static const char map[] = "\\'\"\a\b\f\n\r\t\v";
            if (x != '\n') *w++ = map[simple - "\\'\"abfnrtv\n"]; /* \<newline> joins lines */
        } else if (x >= '0' && x <= '7') {
            uint32_t cp = 0;
            for (int k = 0; k < 3 && p < end && L->s[p] >= '0' && L->s[p] <= '7'; k++, p++)
                cp = cp * 8 + (uint32_t)(L->s[p] - '0');
            p--;
            put_utf8(&w, cp);
        } else if (x == 'x' || x == 'u' || x == 'U') {
            int digits = x == 'x' ? 2 : x == 'u' ? 4 : 8;
            uint32_t cp = 0;
            for (int k = 0; k < digits; k++) {
                int h = p + 1 < end ? hexval(L->s[p + 1]) : -1;
                if (h < 0) return lex_fail(L, p, "truncated \\x/\\u escape in a string literal");
                cp = cp * 16 + (uint32_t)h, p++;
            }
            if (cp > 0x10FFFF) return lex_fail(L, p, "illegal Unicode escape in a string");
            put_utf8(&w, cp);
        } else {
            *w++ = '\\'; /* unknown escapes stay as written, as in Python */
            *w++ = x;
        }
    }
    *w = 0;
    *out = jv_str(buf, (size_t)(w - buf));
    return 0;
}

/* 0x1F / 0o17 / 0b101 (integer_re's prefixed forms); 0 if p does not start one. */
static int lex_prefixed_int(lexer *L, size_t p, size_t *end) {
    char x = p + 2 < L->n && L->s[p] == '0' ? (char)(L->s[p + 1] | 0x20) : 0;
    int base = x == 'x' ? 16 : x == 'o' ? 8 : x == 'b' ? 2 : 0;
    if (!base) return 0;
    int64_t v = 0;
    size_t q = p + 2;
    for (int d; q < L->n; q++) {
        if (L->s[q] == '_') continue;
        d = hexval(L->s[q]);
        if (d < 0 || d >= base) break;
        /* saturates like strtoll does for decimal literals (no signed overflow) */
        v = v > (INT64_MAX - d) / base ? INT64_MAX : v * base + d;
    }
    if (q == p + 2) return 0;
    *end = q;
    return emit(L, JJ_TK_INT, p, q, jv_int(v)) ? -1 : 1;
}

static int lex_number(lexer *L, size_t p, size_t *end) {
    int pre = lex_prefixed_int(L, p, end);
    if (pre) return pre < 0 ? -1 : 0;
    size_t q = p;
    bool is_float = false;
    while (q < L->n && ((L->s[q] >= '0' && L->s[q] <= '9') || L->s[q] == '_')) q++;
    bool after_dot = p > 0 && L->s[p - 1] == '.'; /* float_re's (?<!\.) */
    if (!after_dot && q + 1 < L->n && L->s[q] == '.' && L->s[q + 1] >= '0' && L->s[q + 1] <= '9') {
        is_float = true;
        for (q++; q < L->n && ((L->s[q] >= '0' && L->s[q] <= '9') || L->s[q] == '_');) q++;
    }
    if (!after_dot && q < L->n && (L->s[q] == 'e' || L->s[q] == 'E')) {
        size_t r = q + 1;
        if (r < L->n && (L->s[r] == '+' || L->s[r] == '-')) r++;
        if (r < L->n && L->s[r] >= '0' && L->s[r] <= '9') {
            is_float = true;
            for (q = r; q < L->n && ((L->s[q] >= '0' && L->s[q] <= '9') || L->s[q] == '_');) q++;
        }
    }
    char tmp[128];
    size_t k = 0;
    for (size_t i = p; i < q && k + 1 < sizeof tmp; i++)
        if (L->s[i] != '_') tmp[k++] = L->s[i];
    tmp[k] = 0;
    *end = q;
    jv v = is_float ? jv_float(strtod(tmp, NULL)) : jv_int(strtoll(tmp, NULL, 10));
    return emit(L, is_float ? JJ_TK_FLOAT : JJ_TK_INT, p, q, v);
}

static const char *const OPS[] = {"//", "**", "==", "!=", ">=", "<=", "+", "-", "/",
                                  "*",  "%",  "~",  "[",  "]",  "(",  ")", "{", "}",
                                  ">",  "<",  "=",  ".",  ":",  "|",  ",", ";"};

/* Inside {% %} or {{ }}: tokens up to the closing delimiter. */
static int lex_tag(lexer *L, bool var) {
    char stack[JJ_MAX_DEPTH];
    int depth = 0;
    const char *close = var ? "}}" : "%}";
    for (;;) {
        size_t p = L->pos;
        if (p >= L->n) return lex_fail(L, p, "unexpected end of template");
        size_t k = depth ? 0 : block_end_len(L, p, close);
        if (k && var && L->s[p] == '+') k = 0; /* no "+}}" form */
        if (k && var && L->s[p] != '-') k = 2; /* trim_blocks does not apply to }} */
        if (k) {
            if (emit(L, var ? JJ_TK_VAR_END : JJ_TK_BLOCK_END, p, p + k, jv_none())) return -1;
            L->pos = p + k;
            L->line_starting = L->s[L->pos - 1] == '\n';
            return 0;
        }
        char ch = L->s[p];
        if ((k = (size_t)ws_at(L->s, L->n, p))) {
            L->pos = skip_ws(L, p);
        } else if (ch >= '0' && ch <= '9') {
            if (lex_number(L, p, &L->pos)) return -1;
        } else if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || ch == '_') {
            size_t q = p;
            while (q < L->n &&
                   (L->s[q] == '_' || (L->s[q] >= 'a' && L->s[q] <= 'z') ||
                    (L->s[q] >= 'A' && L->s[q] <= 'Z') || (L->s[q] >= '0' && L->s[q] <= '9')))
                q++;
            char *name = jj_strdup(L->a, L->s + p, q - p);
            if (!name) return rs_errf(L->e, RS_ENOMEM, "out of memory lexing the template");
            if (emit(L, JJ_TK_NAME, p, q, jv_str(name, q - p))) return -1;
            L->pos = q;
        } else if (ch == '\'' || ch == '"') {
            size_t q = p + 1;
            while (q < L->n && L->s[q] != ch) q += L->s[q] == '\\' ? 2 : 1;
            if (q >= L->n) return lex_fail(L, p, "unexpected end of string literal");
            jv v;
            if (unescape(L, p + 1, q, &v) || emit(L, JJ_TK_STRING, p, q + 1, v)) return -1;
            L->pos = q + 1;
        } else {
            const char *op = NULL;
            for (size_t i = 0; i < sizeof OPS / sizeof OPS[0] && !op; i++)
                if (at(L, p, OPS[i])) op = OPS[i];
            if (!op) return lex_fail(L, p, "unexpected character in a tag");
            if (*op == '(' || *op == '[' || *op == '{') {
                if (depth == JJ_MAX_DEPTH) return lex_fail(L, p, "brackets nested too deeply");
                stack[depth++] = *op == '(' ? ')' : *op == '[' ? ']' : '}';
            } else if (*op == ')' || *op == ']' || *op == '}') {
                if (!depth || stack[depth - 1] != *op)
                    return lex_fail(L, p,
                                    depth ? "unexpected closing bracket (mismatched)"
                                          : "unexpected closing bracket");
                depth--;
            }
            if (emit(L, JJ_TK_OP, p, p + strlen(op), jv_none())) return -1;
            L->pos = p + strlen(op);
        }
    }
}

/* The source with \r\n and \r turned into \n and one trailing newline dropped (lexer.py). */
static char *normalise(const char *src, size_t len, jj_arena *a, size_t *out_len) {
    char *s = jj_alloc(a, len + 1);
    if (!s) return NULL;
    size_t n = 0;
    for (size_t i = 0; i < len; i++) {
        if (src[i] == '\r') {
            s[n++] = '\n';
            if (i + 1 < len && src[i + 1] == '\n') i++;
        } else
            s[n++] = src[i];
    }
    if (n && s[n - 1] == '\n') n--;
    s[n] = 0;
    *out_len = n;
    return s;
}

int jj_lex(const char *src, size_t len, jj_arena *a, jj_tokens *out, rs_err *e) {
    lexer L = {.a = a, .e = e, .out = out, .line_starting = true};
    if (!(L.s = normalise(src, len, a, &L.n)))
        return rs_errf(e, RS_ENOMEM, "out of memory lexing the template");
    while (L.pos < L.n) {
        const char *hit = NULL;
        for (const char *q = memchr(L.s + L.pos, '{', L.n - L.pos); q && !hit;
             q = memchr(q + 1, '{', (size_t)(L.s + L.n - q - 1)))
            if (q + 1 < L.s + L.n && (q[1] == '{' || q[1] == '%' || q[1] == '#')) hit = q;
        if (!hit) {
            if (emit_text(&L, L.pos, L.n)) return -1;
            break;
        }
        size_t start = (size_t)(hit - L.s), p = start + 2;
        char kind = hit[1];
        char sign = p < L.n && (L.s[p] == '-' || L.s[p] == '+') ? L.s[p++] : 0;
        size_t raw_end = kind == '%' ? raw_open_end(&L, p) : 0;
        if (emit_text(&L, L.pos, strip_text(&L, L.pos, start, sign, kind == '{'))) return -1;
        L.line_starting = false;
        if (raw_end) {
            if (lex_raw(&L, raw_end)) return -1;
        } else if (kind == '#') {
            if (lex_comment(&L, p)) return -1;
        } else {
            if (emit(&L, kind == '{' ? JJ_TK_VAR_BEGIN : JJ_TK_BLOCK_BEGIN, start, p, jv_none()))
                return -1;
            L.pos = p;
            if (lex_tag(&L, kind == '{')) return -1;
        }
    }
    if (emit(&L, JJ_TK_EOF, L.n, L.n, jv_none())) return -1;
    /* line numbers in one pass over the source */
    int line = 1;
    size_t scanned = 0;
    for (int i = 0; i < out->n; i++) {
        for (; scanned < out->v[i].pos; scanned++) line += L.s[scanned] == '\n';
        out->v[i].line = line;
    }
    return 0;
}
