/*
 * jinja_value.c — the value model of the Jinja interpreter: arena, buffers, Python-compatible
 * str()/repr()/==/< and json.dumps, conversion from cJSON.
 */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chat/jinja_int.h"

/* ---------------- arena ---------------- */

struct jj_chunk {
    jj_chunk *next; /* the previously filled chunk */
    size_t used;    /* bytes handed out from data */
    size_t size;    /* bytes in data */
    max_align_t data[];
};

void *jj_alloc(jj_arena *a, size_t n) {
    n = (n + 15) & ~(size_t)15;
    if (!a->head || a->head->size - a->head->used < n) {
        size_t size = n > 65536 ? n : 65536;
        if (a->limit && a->total + size > a->limit) return NULL;
        jj_chunk *ch = malloc(sizeof *ch + size);
        if (!ch) return NULL;
        ch->next = a->head, ch->used = 0, ch->size = size;
        a->head = ch;
        a->total += size;
    }
    void *p = (char *)a->head->data + a->head->used;
    a->head->used += n;
    memset(p, 0, n);
    return p;
}

char *jj_strdup(jj_arena *a, const char *s, size_t n) {
    char *p = jj_alloc(a, n + 1);
    if (!p) return NULL;
    if (n) memcpy(p, s, n);
    p[n] = 0;
    return p;
}

void jj_arena_free(jj_arena *a) {
    while (a->head) {
        jj_chunk *next = a->head->next;
        free(a->head);
        a->head = next;
    }
    a->total = 0;
}

/* ---------------- buffer ---------------- */

void jj_put(jj_buf *b, const char *s, size_t n) {
    if (b->oom) return;
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 256;
        while (cap < b->n + n + 1) cap *= 2;
        char *p = b->n + n + 1 > JJ_MAX_OUTPUT ? NULL : realloc(b->p, cap);
        if (!p) {
            b->oom = true;
            return;
        }
        b->p = p, b->cap = cap;
    }
    if (n) memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
}
void jj_puts(jj_buf *b, const char *s) {
    jj_put(b, s, strlen(s));
}
void jj_putc(jj_buf *b, char c) {
    jj_put(b, &c, 1);
}
void jj_buf_free(jj_buf *b) {
    free(b->p);
    *b = (jj_buf){0};
}

/* ---------------- UTF-8 ---------------- */

int jj_utf8_next(const char *p, size_t n, uint32_t *cp) {
    const unsigned char *s = (const unsigned char *)p;
    int len = s[0] < 0x80 ? 1 : s[0] >= 0xF0 ? 4 : s[0] >= 0xE0 ? 3 : s[0] >= 0xC0 ? 2 : 1;
    if ((size_t)len > n) len = 1;
    for (int i = 1; i < len; i++)
        if ((s[i] & 0xC0) != 0x80) len = 1;
    if (len == 1) {
        *cp = s[0]; /* invalid bytes count as one character each: never loop, never crash */
        return 1;
    }
    uint32_t c = s[0] & (0x7F >> len);
    for (int i = 1; i < len; i++) c = (c << 6) | (s[i] & 0x3F);
    *cp = c;
    return len;
}

size_t jj_utf8_len(const char *p, size_t n) {
    size_t k = 0;
    uint32_t cp;
    for (size_t i = 0; i < n; k++) i += (size_t)jj_utf8_next(p + i, n - i, &cp);
    return k;
}

bool jj_py_isspace(uint32_t c) {
    return (c >= 9 && c <= 13) || (c >= 0x1C && c <= 0x20) || c == 0x85 || c == 0xA0 ||
           c == 0x1680 || (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 ||
           c == 0x202F || c == 0x205F || c == 0x3000;
}

/* ---------------- containers ---------------- */

jj_list *jj_list_new(jj_ctx *c, int cap) {
    jj_list *l = jj_alloc(jj_ctx_arena(c), sizeof *l);
    if (!l) return NULL;
    if (cap > 0 && !(l->v = jj_alloc(jj_ctx_arena(c), sizeof(jv) * (size_t)cap))) return NULL;
    l->cap = cap > 0 ? cap : 0;
    return l;
}

int jj_list_push(jj_ctx *c, jj_list *l, jv v) {
    if (l->n == l->cap) {
        int cap = l->cap ? l->cap * 2 : 8;
        jv *nv = jj_alloc(jj_ctx_arena(c), sizeof(jv) * (size_t)cap);
        if (!nv) return jj_fail(c, "template ran out of memory");
        if (l->n) memcpy(nv, l->v, sizeof(jv) * (size_t)l->n);
        l->v = nv, l->cap = cap;
    }
    l->v[l->n++] = v;
    return 0;
}

jj_dict *jj_dict_new(jj_ctx *c, int cap) {
    jj_dict *d = jj_alloc(jj_ctx_arena(c), sizeof *d);
    if (!d) return NULL;
    if (cap > 0) {
        d->k = jj_alloc(jj_ctx_arena(c), sizeof(jv) * (size_t)cap);
        d->v = jj_alloc(jj_ctx_arena(c), sizeof(jv) * (size_t)cap);
        if (!d->k || !d->v) return NULL;
        d->cap = cap;
    }
    return d;
}

const jv *jj_dict_get(const jj_dict *d, jv k) {
    for (int i = 0; i < d->n; i++)
        if (jv_equal(d->k[i], k)) return &d->v[i];
    return NULL;
}

const jv *jj_dict_getstr(const jj_dict *d, const char *key) {
    return jj_dict_get(d, jv_str(key, strlen(key)));
}

int jj_dict_set(jj_ctx *c, jj_dict *d, jv k, jv v) {
    const jv *old = jj_dict_get(d, k);
    if (old) {
        d->v[old - d->v] = v; /* Python keeps the first position of a key */
        return 0;
    }
    if (d->n == d->cap) {
        int cap = d->cap ? d->cap * 2 : 8;
        jv *nk = jj_alloc(jj_ctx_arena(c), sizeof(jv) * (size_t)cap);
        jv *nv = jj_alloc(jj_ctx_arena(c), sizeof(jv) * (size_t)cap);
        if (!nk || !nv) return jj_fail(c, "template ran out of memory");
        if (d->n) {
            memcpy(nk, d->k, sizeof(jv) * (size_t)d->n);
            memcpy(nv, d->v, sizeof(jv) * (size_t)d->n);
        }
        d->k = nk, d->v = nv, d->cap = cap;
    }
    d->k[d->n] = k;
    d->v[d->n++] = v;
    return 0;
}

jv jv_cstr(jj_ctx *c, const char *s) {
    size_t n = strlen(s);
    char *p = jj_strdup(jj_ctx_arena(c), s, n);
    return p ? jv_str(p, n) : jv_undef("template ran out of memory");
}

jv jv_buf(jj_ctx *c, const jj_buf *b) {
    char *p = jj_strdup(jj_ctx_arena(c), b->n ? b->p : "", b->n);
    return p ? jv_str(p, b->n) : jv_undef("template ran out of memory");
}

/* ---------------- Python semantics ---------------- */

const char *jv_typename(jv v) {
    switch (v.t) {
    case JV_UNDEF:
        return "Undefined";
    case JV_NONE:
        return "NoneType";
    case JV_BOOL:
        return "bool";
    case JV_INT:
        return "int";
    case JV_FLOAT:
        return "float";
    case JV_STR:
        return "str";
    case JV_LIST:
        return v.u.l->tuple ? "tuple" : "list";
    case JV_DICT:
        return v.u.d->ns ? "Namespace" : "dict";
    case JV_LOOP:
        return "LoopContext";
    case JV_FUNC:
        return "function";
    }
    return "object";
}

bool jv_truthy(jv v) {
    switch (v.t) {
    case JV_UNDEF:
    case JV_NONE:
        return false;
    case JV_BOOL:
        return v.u.b;
    case JV_INT:
        return v.u.i != 0;
    case JV_FLOAT:
        return v.u.f != 0;
    case JV_STR:
        return v.u.s.n > 0;
    case JV_LIST:
        return v.u.l->n > 0;
    case JV_DICT:
        return v.u.d->ns || v.u.d->n > 0;
    default:
        return true;
    }
}

static double num_f(jv v) {
    return v.t == JV_FLOAT ? v.u.f : v.t == JV_BOOL ? (double)v.u.b : (double)v.u.i;
}
static int64_t num_i(jv v) {
    return v.t == JV_BOOL ? v.u.b : v.u.i;
}

bool jv_equal(jv a, jv b) {
    if (jv_isnum(a) && jv_isnum(b)) {
        if (a.t == JV_FLOAT || b.t == JV_FLOAT) return num_f(a) == num_f(b);
        return num_i(a) == num_i(b);
    }
    if (a.t != b.t) return false;
    switch (a.t) {
    case JV_UNDEF:
    case JV_NONE:
        return true;
    case JV_STR:
        return a.u.s.n == b.u.s.n && !memcmp(a.u.s.p, b.u.s.p, a.u.s.n);
    case JV_LIST:
        if (a.u.l->tuple != b.u.l->tuple || a.u.l->n != b.u.l->n) return false;
        for (int i = 0; i < a.u.l->n; i++)
            if (!jv_equal(a.u.l->v[i], b.u.l->v[i])) return false;
        return true;
    case JV_DICT:
        if (a.u.d->ns || b.u.d->ns) return a.u.d == b.u.d;
        if (a.u.d->n != b.u.d->n) return false;
        for (int i = 0; i < a.u.d->n; i++) {
            const jv *o = jj_dict_get(b.u.d, a.u.d->k[i]);
            if (!o || !jv_equal(a.u.d->v[i], *o)) return false;
        }
        return true;
    case JV_LOOP:
        return a.u.lp == b.u.lp;
    case JV_FUNC:
        return a.u.fn == b.u.fn;
    default:
        return false;
    }
}

int jv_compare(jj_ctx *c, jv a, jv b, int *cmp) {
    if (jv_isnum(a) && jv_isnum(b)) {
        if (a.t == JV_FLOAT || b.t == JV_FLOAT) {
            double x = num_f(a), y = num_f(b);
            *cmp = x < y ? -1 : x > y ? 1 : 0;
        } else {
            int64_t x = num_i(a), y = num_i(b);
            *cmp = x < y ? -1 : x > y ? 1 : 0;
        }
        return 0;
    }
    if (a.t == JV_STR && b.t == JV_STR) {
        /* UTF-8 byte order is code point order, which is Python's string order */
        size_t n = a.u.s.n < b.u.s.n ? a.u.s.n : b.u.s.n;
        int r = n ? memcmp(a.u.s.p, b.u.s.p, n) : 0;
        *cmp = r ? r : a.u.s.n < b.u.s.n ? -1 : a.u.s.n > b.u.s.n ? 1 : 0;
        return 0;
    }
    if (a.t == JV_LIST && b.t == JV_LIST && a.u.l->tuple == b.u.l->tuple) {
        for (int i = 0; i < a.u.l->n && i < b.u.l->n; i++) {
            if (jv_equal(a.u.l->v[i], b.u.l->v[i])) continue;
            return jv_compare(c, a.u.l->v[i], b.u.l->v[i], cmp);
        }
        *cmp = a.u.l->n < b.u.l->n ? -1 : a.u.l->n > b.u.l->n ? 1 : 0;
        return 0;
    }
    if (a.t == JV_UNDEF || b.t == JV_UNDEF) {
        jv u = a.t == JV_UNDEF ? a : b;
        return jj_fail(c, "%s", u.u.s.p ? u.u.s.p : "undefined value compared");
    }
    return jj_fail(c, "'<' not supported between instances of '%s' and '%s'", jv_typename(a),
                   jv_typename(b));
}

/* Python's repr(float): the shortest digits that round-trip, fixed notation when the decimal
 * exponent is in [-4, 16), else d.ddde+XX. */
void jj_float_repr(double f, jj_buf *b) {
    if (isnan(f)) return jj_puts(b, "nan");
    if (isinf(f)) return jj_puts(b, f < 0 ? "-inf" : "inf");
    char tmp[64];
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(tmp, sizeof tmp, "%.*e", prec - 1, f);
        if (strtod(tmp, NULL) == f) break;
    }
    /* tmp = [-]d[.ddd]e[+-]XX */
    char digits[32];
    int nd = 0;
    const char *p = tmp;
    bool neg = *p == '-';
    if (neg) p++;
    for (; *p && *p != 'e'; p++)
        if (*p != '.') digits[nd++] = *p;
    int exp = atoi(p + 1);
    while (nd > 1 && digits[nd - 1] == '0') nd--;
    if (neg) jj_putc(b, '-');
    if (exp >= -4 && exp < 16) {
        if (exp < 0) {
            jj_puts(b, "0.");
            for (int i = 0; i < -exp - 1; i++) jj_putc(b, '0');
            jj_put(b, digits, (size_t)nd);
        } else {
            for (int i = 0; i <= exp; i++) jj_putc(b, i < nd ? digits[i] : '0');
            jj_putc(b, '.');
            if (nd > exp + 1)
                jj_put(b, digits + exp + 1, (size_t)(nd - exp - 1));
            else
                jj_putc(b, '0');
        }
    } else {
        jj_putc(b, digits[0]);
        if (nd > 1) {
            jj_putc(b, '.');
            jj_put(b, digits + 1, (size_t)(nd - 1));
        }
        snprintf(tmp, sizeof tmp, "e%c%02d", exp < 0 ? '-' : '+', exp < 0 ? -exp : exp);
        jj_puts(b, tmp);
    }
}

void jj_html_escape(const char *s, size_t n, jj_buf *b) {
    for (size_t i = 0; i < n; i++) {
        char ch = s[i];
        const char *rep = ch == '&'    ? "&amp;"
                          : ch == '<'  ? "&lt;"
                          : ch == '>'  ? "&gt;"
                          : ch == '"'  ? "&#34;"
                          : ch == '\'' ? "&#39;"
                                       : NULL;
        if (rep)
            jj_puts(b, rep);
        else
            jj_putc(b, ch);
    }
}

static void repr_str(const char *s, size_t n, jj_buf *b) {
    char q = memchr(s, '\'', n) && !memchr(s, '"', n) ? '"' : '\'';
    jj_putc(b, q);
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        char tmp[8];
        if (ch == (unsigned char)q || ch == '\\') {
            jj_putc(b, '\\');
            jj_putc(b, (char)ch);
        } else if (ch == '\n')
            jj_puts(b, "\\n");
        else if (ch == '\r')
            jj_puts(b, "\\r");
        else if (ch == '\t')
            jj_puts(b, "\\t");
        else if (ch < 0x20 || ch == 0x7F) {
            snprintf(tmp, sizeof tmp, "\\x%02x", ch);
            jj_puts(b, tmp);
        } else
            jj_putc(b, (char)ch);
    }
    jj_putc(b, q);
}

/* Nesting printed before "[...]" stands for the rest: a list or namespace can hold itself
 * (ns.x = ns), and its repr must end, as Python's does, instead of recursing off the stack. */
enum { REPR_DEPTH_MAX = 64 };

static void repr_depth(jv v, jj_buf *b, int depth);
static void to_str_depth(jv v, jj_buf *b, int depth);

static void repr_items(jv v, jj_buf *b, int depth) {
    if (depth > REPR_DEPTH_MAX) {
        jj_puts(b, "[...]");
        return;
    }
    if (v.t == JV_LIST) {
        jj_putc(b, v.u.l->tuple ? '(' : '[');
        for (int i = 0; i < v.u.l->n; i++) {
            if (i) jj_puts(b, ", ");
            repr_depth(v.u.l->v[i], b, depth + 1);
        }
        if (v.u.l->tuple && v.u.l->n == 1) jj_putc(b, ',');
        jj_putc(b, v.u.l->tuple ? ')' : ']');
        return;
    }
    if (v.u.d->ns) jj_puts(b, "<Namespace ");
    jj_putc(b, '{');
    for (int i = 0; i < v.u.d->n; i++) {
        if (i) jj_puts(b, ", ");
        repr_depth(v.u.d->k[i], b, depth + 1);
        jj_puts(b, ": ");
        repr_depth(v.u.d->v[i], b, depth + 1);
    }
    jj_putc(b, '}');
    if (v.u.d->ns) jj_putc(b, '>');
}

static void repr_depth(jv v, jj_buf *b, int depth) {
    if (v.t == JV_STR)
        repr_str(v.u.s.p, v.u.s.n, b);
    else if (v.t == JV_UNDEF)
        jj_puts(b, "Undefined");
    else
        to_str_depth(v, b, depth);
}

void jv_repr(jv v, jj_buf *b) {
    repr_depth(v, b, 0);
}

void jv_to_str(jv v, jj_buf *b) {
    to_str_depth(v, b, 0);
}

static void to_str_depth(jv v, jj_buf *b, int depth) {
    char tmp[64];
    switch (v.t) {
    case JV_UNDEF:
        return;
    case JV_NONE:
        return jj_puts(b, "None");
    case JV_BOOL:
        return jj_puts(b, v.u.b ? "True" : "False");
    case JV_INT:
        snprintf(tmp, sizeof tmp, "%lld", (long long)v.u.i);
        return jj_puts(b, tmp);
    case JV_FLOAT:
        return jj_float_repr(v.u.f, b);
    case JV_STR:
        return jj_put(b, v.u.s.p, v.u.s.n);
    case JV_LIST:
    case JV_DICT:
        return repr_items(v, b, depth);
    case JV_LOOP:
        snprintf(tmp, sizeof tmp, "<LoopContext %lld/%lld>", (long long)v.u.lp->i + 1,
                 (long long)v.u.lp->n);
        return jj_puts(b, tmp);
    case JV_FUNC:
        jj_puts(b, "<function "), jj_puts(b, v.u.fn->name), jj_putc(b, '>');
    }
}

int jj_buf_value(jj_ctx *c, jj_buf *b, jv *out) {
    bool too_big = b->oom;
    if (!too_big) *out = jv_buf(c, b);
    jj_buf_free(b);
    if (too_big) return jj_fail(c, "template string too large");
    return out->t == JV_STR ? 0 : jj_fail(c, "template ran out of memory");
}

int jv_tostr(jj_ctx *c, jv v, jv *out) {
    if (v.t == JV_STR) {
        *out = v;
        return 0;
    }
    jj_buf b = {0};
    jv_to_str(v, &b);
    return jj_buf_value(c, &b, out);
}

/* ---------------- JSON ---------------- */

/* ascii: ensure_ascii=True, every character outside ' '..'~' becomes \\uXXXX (UTF-16). */
static void json_str(const char *s, size_t n, bool ascii, jj_buf *b) {
    jj_putc(b, '"');
    size_t run = 0; /* bytes copied verbatim in one go: most strings have few escapes */
    for (size_t i = 0; i < n;) {
        unsigned char ch = (unsigned char)s[i];
        if (ch >= 0x20 && ch != '"' && ch != '\\' && (!ascii || ch < 0x7F)) {
            i++;
            continue;
        }
        jj_put(b, s + run, i - run);
        uint32_t cp = ch;
        i += ch < 0x80 ? 1 : (size_t)jj_utf8_next(s + i, n - i, &cp);
        run = i;
        static const char short_esc[] = "\"\"\\\\\nn\rr\tt\bb\ff"; /* char, letter pairs */
        const char *hit = cp < 0x80 ? memchr(short_esc, (int)cp, sizeof short_esc - 1) : NULL;
        char tmp[16];
        if (hit && (hit - short_esc) % 2 == 0)
            snprintf(tmp, sizeof tmp, "\\%c", hit[1]);
        else if (cp > 0xFFFF)
            snprintf(tmp, sizeof tmp, "\\u%04x\\u%04x", 0xD800 + ((cp - 0x10000) >> 10),
                     0xDC00 + ((cp - 0x10000) & 0x3FF));
        else
            snprintf(tmp, sizeof tmp, "\\u%04x", cp);
        jj_puts(b, tmp);
    }
    jj_put(b, s + run, n - run);
    jj_putc(b, '"');
}

static void json_newline(const jj_json_opts *o, int level, jj_buf *b) {
    jj_putc(b, '\n');
    for (int i = 0; i < level; i++) jj_puts(b, o->indent);
}

static int json_key(jj_ctx *c, jv k, const jj_json_opts *o, jj_buf *b) {
    /* json.dumps turns str, int, float, bool and None keys into strings */
    if (k.t == JV_STR)
        json_str(k.u.s.p, k.u.s.n, o->ensure_ascii, b);
    else if (k.t == JV_BOOL)
        jj_puts(b, k.u.b ? "\"true\"" : "\"false\"");
    else if (k.t == JV_NONE)
        jj_puts(b, "\"null\"");
    else if (k.t == JV_INT || k.t == JV_FLOAT) {
        jj_putc(b, '"');
        jv_to_str(k, b);
        jj_putc(b, '"');
    } else
        return jj_fail(c, "keys must be str, int, float, bool or None, not %s", jv_typename(k));
    return 0;
}

static int json_value(jj_ctx *c, jv v, const jj_json_opts *o, int level, jj_buf *b);

static int json_dict(jj_ctx *c, const jj_dict *d, const jj_json_opts *o, int level, jj_buf *b) {
    if (!d->n) return jj_puts(b, "{}"), 0;
    int *order = jj_alloc(jj_ctx_arena(c), sizeof(int) * (size_t)d->n);
    if (!order) return jj_fail(c, "template ran out of memory");
    for (int i = 0; i < d->n; i++) order[i] = i;
    for (int i = 1; o->sort_keys && i < d->n; i++) { /* insertion sort: stable, small n */
        int x = order[i], j = i, cmp = 0;
        for (; j > 0; j--) {
            if (jv_compare(c, d->k[order[j - 1]], d->k[x], &cmp)) return -1;
            if (cmp <= 0) break;
            order[j] = order[j - 1];
        }
        order[j] = x;
    }
    jj_putc(b, '{');
    for (int i = 0; i < d->n; i++) {
        if (i) jj_puts(b, o->item_sep);
        if (o->indent) json_newline(o, level + 1, b);
        if (json_key(c, d->k[order[i]], o, b)) return -1;
        jj_puts(b, o->key_sep);
        if (json_value(c, d->v[order[i]], o, level + 1, b)) return -1;
    }
    if (o->indent) json_newline(o, level, b);
    jj_putc(b, '}');
    return 0;
}

static int json_value(jj_ctx *c, jv v, const jj_json_opts *o, int level, jj_buf *b) {
    if (level > JJ_MAX_DEPTH) return jj_fail(c, "tojson: value nested too deeply");
    switch (v.t) {
    case JV_NONE:
        jj_puts(b, "null");
        return 0;
    case JV_BOOL:
        jj_puts(b, v.u.b ? "true" : "false");
        return 0;
    case JV_INT:
        jv_to_str(v, b);
        return 0;
    case JV_FLOAT:
        if (isnan(v.u.f))
            jj_puts(b, "NaN");
        else if (isinf(v.u.f))
            jj_puts(b, v.u.f < 0 ? "-Infinity" : "Infinity");
        else
            jj_float_repr(v.u.f, b);
        return 0;
    case JV_STR:
        json_str(v.u.s.p, v.u.s.n, o->ensure_ascii, b);
        return 0;
    case JV_LIST:
        if (!v.u.l->n) return jj_puts(b, "[]"), 0;
        jj_putc(b, '[');
        for (int i = 0; i < v.u.l->n; i++) {
            if (i) jj_puts(b, o->item_sep);
            if (o->indent) json_newline(o, level + 1, b);
            if (json_value(c, v.u.l->v[i], o, level + 1, b)) return -1;
        }
        if (o->indent) json_newline(o, level, b);
        jj_putc(b, ']');
        return 0;
    case JV_DICT:
        if (!v.u.d->ns) return json_dict(c, v.u.d, o, level, b);
        return jj_fail(c, "Object of type Namespace is not JSON serializable");
    default:
        return jj_fail(c, "Object of type %s is not JSON serializable", jv_typename(v));
    }
}

int jv_to_json(jj_ctx *c, jv v, const jj_json_opts *o, jj_buf *b) {
    return json_value(c, v, o, 0, b);
}

/* ---------------- from cJSON ---------------- */

int jv_from_json(jj_ctx *c, const cJSON *j, jv *out) {
    if (cJSON_IsNull(j))
        *out = jv_none();
    else if (cJSON_IsBool(j))
        *out = jv_bool(cJSON_IsTrue(j));
    else if (cJSON_IsNumber(j)) {
        /* cJSON keeps no int/float distinction: an integral value is an int (so "1.0" in a
           request prints as 1; documented in docs/arch-chat.md) */
        double d = j->valuedouble;
        if (d == floor(d) && fabs(d) < 9.2e18)
            *out = jv_int((int64_t)d);
        else
            *out = jv_float(d);
    } else if (cJSON_IsString(j)) {
        *out = jv_cstr(c, j->valuestring ? j->valuestring : "");
        if (out->t != JV_STR) return jj_fail(c, "template ran out of memory");
    } else if (cJSON_IsArray(j)) {
        jj_list *l = jj_list_new(c, cJSON_GetArraySize(j));
        if (!l) return jj_fail(c, "template ran out of memory");
        for (const cJSON *x = j->child; x; x = x->next)
            if (jv_from_json(c, x, &l->v[l->n++])) return -1;
        *out = (jv){.t = JV_LIST, .u.l = l};
    } else if (cJSON_IsObject(j)) {
        jj_dict *d = jj_dict_new(c, cJSON_GetArraySize(j));
        if (!d) return jj_fail(c, "template ran out of memory");
        for (const cJSON *x = j->child; x; x = x->next) {
            jv k = jv_cstr(c, x->string ? x->string : ""), v;
            if (k.t != JV_STR || jv_from_json(c, x, &v) || jj_dict_set(c, d, k, v)) return -1;
        }
        *out = (jv){.t = JV_DICT, .u.d = d};
    } else
        return jj_fail(c, "unsupported JSON value");
    return 0;
}
