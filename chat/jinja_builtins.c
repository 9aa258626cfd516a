/*
 * jinja_builtins.c — what templates call: attribute and item access, Python string and dict
 * methods, jinja2's filters and tests, the globals transformers provides (range, namespace,
 * dict, raise_exception, strftime_now), slicing.
 *
 * Each behaves as its Python/jinja2 counterpart on the inputs chat templates give it (strings,
 * numbers, lists, dicts from JSON); where we stop short of Python (Unicode case mapping is
 * utf8proc's simple mapping), docs/arch-chat.md says so.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <utf8proc.h>

#include "chat/jinja_int.h"

typedef struct fargs {
    jv *v;           /* positional arguments */
    int n;           /* their count */
    const char **kn; /* keyword names */
    jv *kv;          /* keyword values */
    int nk;          /* their count */
} fargs;

/* Argument i by position, or by keyword name, or dflt. */
static jv farg(const fargs *a, int i, const char *name, jv dflt) {
    for (int k = 0; k < a->nk; k++)
        if (name && !strcmp(a->kn[k], name)) return a->kv[k];
    return i >= 0 && i < a->n ? a->v[i] : dflt;
}

static int oom(jj_ctx *c) {
    return jj_fail(c, "template ran out of memory");
}

static jv mklist(jj_list *l) {
    return (jv){.t = JV_LIST, .u.l = l};
}

static int need_str(jj_ctx *c, jv v, const char *what) {
    if (v.t == JV_STR) return 0;
    if (v.t == JV_UNDEF) return jj_fail(c, "%s", v.u.s.p ? v.u.s.p : "undefined value");
    return jj_fail(c, "%s expects a string, got '%s'", what, jv_typename(v));
}

static int need_int(jj_ctx *c, jv v, const char *what, int64_t *out) {
    if (v.t == JV_INT || v.t == JV_BOOL) {
        *out = v.t == JV_BOOL ? v.u.b : v.u.i;
        return 0;
    }
    return jj_fail(c, "%s expects an integer, got '%s'", what, jv_typename(v));
}

/* ---------------- strings ---------------- */

/* Code point i (of n) starts at byte offs[i]; offs[n] = length. */
static size_t *utf8_offsets(jj_ctx *c, jv s, size_t *n) {
    size_t len = jj_utf8_len(s.u.s.p, s.u.s.n), k = 0;
    size_t *offs = jj_alloc(jj_ctx_arena(c), sizeof(size_t) * (len + 1));
    if (!offs) return NULL;
    uint32_t cp;
    for (size_t i = 0; i < s.u.s.n; k++) {
        offs[k] = i;
        i += (size_t)jj_utf8_next(s.u.s.p + i, s.u.s.n - i, &cp);
    }
    offs[len] = s.u.s.n;
    *n = len;
    return offs;
}

static bool in_chars(uint32_t cp, jv chars) {
    if (chars.t != JV_STR) return jj_py_isspace(cp);
    uint32_t x;
    for (size_t i = 0; i < chars.u.s.n;) {
        i += (size_t)jj_utf8_next(chars.u.s.p + i, chars.u.s.n - i, &x);
        if (x == cp) return true;
    }
    return false;
}

/* Python's str.strip/lstrip/rstrip(chars): chars None = whitespace. */
static jv strip(jv s, jv chars, bool left, bool right) {
    size_t b = 0, e = s.u.s.n;
    uint32_t cp;
    while (left && b < e) {
        int w = jj_utf8_next(s.u.s.p + b, e - b, &cp);
        if (!in_chars(cp, chars)) break;
        b += (size_t)w;
    }
    while (right && e > b) {
        size_t p = e - 1;
        while (p > b && ((unsigned char)s.u.s.p[p] & 0xC0) == 0x80) p--;
        jj_utf8_next(s.u.s.p + p, e - p, &cp);
        if (!in_chars(cp, chars)) break;
        e = p;
    }
    return jv_str(s.u.s.p + b, e - b);
}

typedef enum { CASE_UPPER, CASE_LOWER, CASE_TITLE, CASE_CAPITALIZE } case_mode;
static const char *const CASE_NAMES[] = {"upper", "lower", "title", "capitalize", NULL};

static int case_mode_of(const char *name) {
    for (int i = 0; CASE_NAMES[i]; i++)
        if (!strcmp(CASE_NAMES[i], name)) return i;
    return -1;
}

static int change_case(jj_ctx *c, jv s, case_mode mode, jv *out) {
    jj_buf b = {0};
    bool prev_cased = false, first = true;
    uint32_t cp;
    for (size_t i = 0; i < s.u.s.n;) {
        int w = jj_utf8_next(s.u.s.p + i, s.u.s.n - i, &cp);
        utf8proc_int32_t x = (utf8proc_int32_t)cp;
        bool upper = mode == CASE_UPPER || (mode == CASE_TITLE && !prev_cased) ||
                     (mode == CASE_CAPITALIZE && first);
        utf8proc_int32_t y = upper ? utf8proc_toupper(x) : utf8proc_tolower(x);
        utf8proc_category_t cat = utf8proc_category(x);
        prev_cased = cat == UTF8PROC_CATEGORY_LU || cat == UTF8PROC_CATEGORY_LL ||
                     cat == UTF8PROC_CATEGORY_LT;
        first = false;
        if (y == x)
            jj_put(&b, s.u.s.p + i, (size_t)w);
        else {
            utf8proc_uint8_t enc[4];
            jj_put(&b, (const char *)enc, (size_t)utf8proc_encode_char(y, enc));
        }
        i += (size_t)w;
    }
    return jj_buf_value(c, &b, out);
}

static const char *find_sub(jv hay, size_t from, jv needle) {
    if (from > hay.u.s.n) return NULL;
    if (!needle.u.s.n) return hay.u.s.p + from;
    return memmem(hay.u.s.p + from, hay.u.s.n - from, needle.u.s.p, needle.u.s.n);
}

static int str_split(jj_ctx *c, jv s, jv sep, int64_t maxsplit, jv *out) {
    jj_list *l = jj_list_new(c, 0);
    if (!l) return oom(c);
    *out = mklist(l);
    if (sep.t == JV_STR) {
        if (!sep.u.s.n) return jj_fail(c, "empty separator");
        size_t from = 0;
        for (const char *hit;
             (maxsplit < 0 || l->n < maxsplit) && (hit = find_sub(s, from, sep));) {
            if (jj_list_push(c, l, jv_str(s.u.s.p + from, (size_t)(hit - s.u.s.p) - from)))
                return -1;
            from = (size_t)(hit - s.u.s.p) + sep.u.s.n;
        }
        return jj_list_push(c, l, jv_str(s.u.s.p + from, s.u.s.n - from));
    }
    /* whitespace split: runs of whitespace separate, no empty strings */
    size_t i = 0;
    uint32_t cp;
    for (;;) {
        while (i < s.u.s.n) {
            int w = jj_utf8_next(s.u.s.p + i, s.u.s.n - i, &cp);
            if (!jj_py_isspace(cp)) break;
            i += (size_t)w;
        }
        if (i >= s.u.s.n) return 0;
        if (maxsplit >= 0 && l->n >= maxsplit) {
            jv rest = strip(jv_str(s.u.s.p + i, s.u.s.n - i), jv_none(), false, true);
            return jj_list_push(c, l, rest);
        }
        size_t start = i;
        while (i < s.u.s.n) {
            int w = jj_utf8_next(s.u.s.p + i, s.u.s.n - i, &cp);
            if (jj_py_isspace(cp)) break;
            i += (size_t)w;
        }
        if (jj_list_push(c, l, jv_str(s.u.s.p + start, i - start))) return -1;
    }
}

static int str_replace(jj_ctx *c, jv s, jv old, jv new_, int64_t count, jv *out) {
    if (need_str(c, old, "replace") || need_str(c, new_, "replace")) return -1;
    jj_buf b = {0};
    size_t from = 0;
    int64_t done = 0;
    if (!old.u.s.n) { /* Python inserts new between every character */
        uint32_t cp;
        while ((count < 0 || done < count) && from <= s.u.s.n) {
            jj_put(&b, new_.u.s.p, new_.u.s.n), done++;
            if (from == s.u.s.n) {
                from++;
                break;
            }
            int w = jj_utf8_next(s.u.s.p + from, s.u.s.n - from, &cp);
            jj_put(&b, s.u.s.p + from, (size_t)w);
            from += (size_t)w;
        }
        if (from < s.u.s.n) jj_put(&b, s.u.s.p + from, s.u.s.n - from);
    } else {
        for (const char *hit; (count < 0 || done < count) && (hit = find_sub(s, from, old));
             done++) {
            jj_put(&b, s.u.s.p + from, (size_t)(hit - s.u.s.p) - from);
            jj_put(&b, new_.u.s.p, new_.u.s.n);
            from = (size_t)(hit - s.u.s.p) + old.u.s.n;
        }
        jj_put(&b, s.u.s.p + from, s.u.s.n - from);
    }
    return jj_buf_value(c, &b, out);
}

static bool has_affix(jv s, jv affix, bool end) {
    if (affix.t != JV_STR || affix.u.s.n > s.u.s.n) return false;
    const char *p = end ? s.u.s.p + s.u.s.n - affix.u.s.n : s.u.s.p;
    return !memcmp(p, affix.u.s.p, affix.u.s.n);
}

static int affix_method(jj_ctx *c, jv s, jv arg, bool end, jv *out) {
    if (arg.t == JV_LIST && arg.u.l->tuple) {
        bool any = false;
        for (int i = 0; i < arg.u.l->n; i++) {
            if (need_str(c, arg.u.l->v[i], end ? "endswith" : "startswith")) return -1;
            any |= has_affix(s, arg.u.l->v[i], end);
        }
        *out = jv_bool(any);
        return 0;
    }
    if (need_str(c, arg, end ? "endswith" : "startswith")) return -1;
    *out = jv_bool(has_affix(s, arg, end));
    return 0;
}

static int join_items(jj_ctx *c, jv seq, jv sep, jv attribute, jv *out);

/* The replacement field {name!conv} of str.format: its value. Format specs are not supported. */
static int format_field(jj_ctx *c, const char *f, size_t n, const fargs *a, int *auto_idx, jv *v,
                        bool *repr) {
    const char *bang = memchr(f, '!', n), *colon = memchr(f, ':', n);
    if (colon) return jj_fail(c, "str.format: format specs are not supported");
    *repr = bang && bang + 1 < f + n && bang[1] == 'r';
    size_t name_len = bang ? (size_t)(bang - f) : n;
    char name[64];
    snprintf(name, sizeof name, "%.*s", (int)(name_len < 63 ? name_len : 63), f);
    if (!name_len || (name[0] >= '0' && name[0] <= '9')) {
        int i = name_len ? atoi(name) : (*auto_idx)++;
        if (i >= a->n) return jj_fail(c, "Replacement index %d out of range", i);
        *v = a->v[i];
        return 0;
    }
    for (int k = 0; k < a->nk; k++)
        if (!strcmp(a->kn[k], name)) {
            *v = a->kv[k];
            return 0;
        }
    return jj_fail(c, "str.format: no argument named '%s'", name);
}

static int str_format_method(jj_ctx *c, jv s, const fargs *a, jv *out) {
    jj_buf b = {0};
    int auto_idx = 0;
    for (size_t i = 0; i < s.u.s.n; i++) {
        char ch = s.u.s.p[i];
        if ((ch == '{' || ch == '}') && i + 1 < s.u.s.n && s.u.s.p[i + 1] == ch) {
            jj_putc(&b, ch), i++; /* {{ and }} are literal braces */
            continue;
        }
        if (ch != '{') {
            jj_putc(&b, ch);
            continue;
        }
        const char *end = memchr(s.u.s.p + i, '}', s.u.s.n - i);
        jv v;
        bool repr = false;
        if (!end || format_field(c, s.u.s.p + i + 1, (size_t)(end - s.u.s.p) - i - 1, a, &auto_idx,
                                 &v, &repr)) {
            jj_buf_free(&b);
            return end ? -1 : jj_fail(c, "Single '{' encountered in format string");
        }
        if (repr)
            jv_repr(v, &b);
        else
            jv_to_str(v, &b);
        i = (size_t)(end - s.u.s.p);
    }
    return jj_buf_value(c, &b, out);
}

static int str_method(jj_ctx *c, jv s, const char *m, const fargs *a, jv *out) {
    jv none = jv_none();
    if (!strcmp(m, "startswith") || !strcmp(m, "endswith"))
        return affix_method(c, s, farg(a, 0, NULL, none), m[0] == 'e', out);
    if (!strcmp(m, "strip") || !strcmp(m, "lstrip") || !strcmp(m, "rstrip")) {
        jv chars = farg(a, 0, "chars", none);
        if (chars.t != JV_NONE && need_str(c, chars, m)) return -1;
        *out = strip(s, chars, m[0] != 'r', m[0] != 'l');
        return 0;
    }
    if (!strcmp(m, "split")) {
        int64_t maxsplit = -1;
        jv ms = farg(a, 1, "maxsplit", jv_int(-1)), sep = farg(a, 0, "sep", none);
        if (need_int(c, ms, "split", &maxsplit)) return -1;
        if (sep.t != JV_NONE && need_str(c, sep, "split")) return -1;
        return str_split(c, s, sep, maxsplit, out);
    }
    if (case_mode_of(m) >= 0) return change_case(c, s, (case_mode)case_mode_of(m), out);
    if (!strcmp(m, "replace")) {
        int64_t count = -1;
        if (need_int(c, farg(a, 2, "count", jv_int(-1)), "replace", &count)) return -1;
        return str_replace(c, s, farg(a, 0, NULL, none), farg(a, 1, NULL, none), count, out);
    }
    if (!strcmp(m, "find") || !strcmp(m, "count")) {
        jv sub = farg(a, 0, NULL, none);
        if (need_str(c, sub, m)) return -1;
        const char *hit = find_sub(s, 0, sub);
        if (m[0] == 'f') {
            *out = jv_int(hit ? (int64_t)jj_utf8_len(s.u.s.p, (size_t)(hit - s.u.s.p)) : -1);
            return 0;
        }
        int64_t n = 0;
        for (size_t from = 0; sub.u.s.n && (hit = find_sub(s, from, sub)); n++)
            from = (size_t)(hit - s.u.s.p) + sub.u.s.n;
        *out = jv_int(sub.u.s.n ? n : (int64_t)jj_utf8_len(s.u.s.p, s.u.s.n) + 1);
        return 0;
    }
    if (!strcmp(m, "join")) return join_items(c, farg(a, 0, NULL, none), s, none, out);
    if (!strcmp(m, "format")) return str_format_method(c, s, a, out);
    return jj_fail(c, "'str' object has no method '%s' (not supported)", m);
}

/* ---------------- attribute / item access ---------------- */

static const char *const STR_METHODS[] = {
    "format", "startswith", "endswith",   "strip",   "lstrip", "rstrip", "split", "upper",
    "lower",  "title",      "capitalize", "replace", "find",   "count",  "join",  NULL};
static const char *const DICT_METHODS[] = {"items", "keys", "values", "get", NULL};

static bool in_list(const char *const *names, const char *name, size_t n) {
    for (int i = 0; names[i]; i++)
        if (strlen(names[i]) == n && !memcmp(names[i], name, n)) return true;
    return false;
}

static int bound_method(jj_ctx *c, jv self, const char *name, size_t n, jv *out) {
    jj_func *fn = jj_alloc(jj_ctx_arena(c), sizeof *fn);
    char *nm = jj_strdup(jj_ctx_arena(c), name, n);
    if (!fn || !nm) return oom(c);
    fn->kind = JJ_FN_METHOD, fn->name = nm, fn->self = self;
    *out = (jv){.t = JV_FUNC, .u.fn = fn};
    return 0;
}

static int no_attr(jj_ctx *c, jv obj, const char *name, size_t n, jv *out) {
    char *msg = jj_alloc(jj_ctx_arena(c), n + 64);
    if (!msg) return oom(c);
    if (obj.t == JV_NONE)
        sprintf(msg, "'None' has no attribute '%.*s'", (int)n, name);
    else
        sprintf(msg, "'%s object' has no attribute '%.*s'", jv_typename(obj), (int)n, name);
    *out = jv_undef(msg);
    return 0;
}

static int loop_attr(jj_ctx *c, const jj_loop *lp, const char *name, jv *out) {
    static const char *const names[] = {"index0", "index",  "revindex0", "revindex", "first",
                                        "last",   "length", "depth",     "depth0",   NULL};
    const int64_t vals[] = {lp->i,         lp->i + 1,  lp->n - lp->i - 1,
                            lp->n - lp->i, lp->i == 0, lp->i == lp->n - 1,
                            lp->n,         lp->depth,  lp->depth - 1};
    for (int i = 0; names[i]; i++)
        if (!strcmp(names[i], name)) {
            *out = i == 4 || i == 5 ? jv_bool(vals[i]) : jv_int(vals[i]);
            return 0;
        }
    if (!strcmp(name, "previtem") || !strcmp(name, "nextitem")) {
        int64_t j = lp->i + (name[0] == 'n' ? 1 : -1);
        *out = j >= 0 && j < lp->n ? lp->items[j] : jv_undef("there is no previous/next item");
        return 0;
    }
    if (!strcmp(name, "cycle"))
        return bound_method(c, (jv){.t = JV_LOOP, .u.lp = (jj_loop *)lp}, name, 5, out);
    return no_attr(c, (jv){.t = JV_LOOP, .u.lp = (jj_loop *)lp}, name, strlen(name), out);
}

int jj_getattr(jj_ctx *c, jv obj, const char *name, size_t n, jv *out) {
    switch (obj.t) {
    case JV_UNDEF:
        return jj_fail(c, "%s", obj.u.s.p ? obj.u.s.p : "undefined value");
    case JV_DICT:
        if (!obj.u.d->ns && in_list(DICT_METHODS, name, n))
            return bound_method(c, obj, name, n, out);
        const jv *v = jj_dict_get(obj.u.d, jv_str(name, n));
        if (v) {
            *out = *v;
            return 0;
        }
        break;
    case JV_STR:
        if (in_list(STR_METHODS, name, n)) return bound_method(c, obj, name, n, out);
        break;
    case JV_LOOP: {
        char tmp[32];
        snprintf(tmp, sizeof tmp, "%.*s", (int)(n < 31 ? n : 31), name);
        return loop_attr(c, obj.u.lp, tmp, out);
    }
    default:
        break;
    }
    return no_attr(c, obj, name, n, out);
}

int jj_getitem(jj_ctx *c, jv obj, jv key, jv *out) {
    if (obj.t == JV_UNDEF) return jj_fail(c, "%s", obj.u.s.p ? obj.u.s.p : "undefined value");
    if (obj.t == JV_DICT && !obj.u.d->ns) {
        const jv *v = jj_dict_get(obj.u.d, key);
        if (v) {
            *out = *v;
            return 0;
        }
    } else if ((obj.t == JV_LIST || obj.t == JV_STR) && (key.t == JV_INT || key.t == JV_BOOL)) {
        int64_t i = key.t == JV_BOOL ? key.u.b : key.u.i;
        size_t len = 0, *offs = NULL;
        if (obj.t == JV_STR && !(offs = utf8_offsets(c, obj, &len))) return oom(c);
        int64_t n = obj.t == JV_LIST ? obj.u.l->n : (int64_t)len;
        if (i < 0) i += n;
        if (i >= 0 && i < n) {
            *out = obj.t == JV_LIST ? obj.u.l->v[i]
                                    : jv_str(obj.u.s.p + offs[i], offs[i + 1] - offs[i]);
            return 0;
        }
        *out = jv_undef(obj.t == JV_LIST ? "list index out of range" : "string index out of range");
        return 0;
    }
    if (key.t == JV_STR) return jj_getattr(c, obj, key.u.s.p, key.u.s.n, out);
    *out = jv_undef("no such item");
    return 0;
}

/* Python slice semantics on lists, tuples and strings (by code point). */
int jj_slice(jj_ctx *c, jv obj, jv start, jv stop, jv step, jv *out) {
    if (obj.t == JV_UNDEF) return jj_fail(c, "%s", obj.u.s.p ? obj.u.s.p : "undefined value");
    if (obj.t != JV_LIST && obj.t != JV_STR)
        return jj_fail(c, "'%s' object is not subscriptable", jv_typename(obj));
    int64_t st = 1, b, e;
    size_t len = 0, *offs = NULL;
    if (step.t != JV_NONE && need_int(c, step, "slice", &st)) return -1;
    if (!st) return jj_fail(c, "slice step cannot be zero");
    if (obj.t == JV_STR && !(offs = utf8_offsets(c, obj, &len))) return oom(c);
    int64_t n = obj.t == JV_LIST ? obj.u.l->n : (int64_t)len;
    const jv ends[2] = {start, stop};
    int64_t *bounds[2] = {&b, &e};
    for (int k = 0; k < 2; k++) {
        int64_t x = 0;
        if (ends[k].t == JV_NONE)
            x = k == 0 ? (st > 0 ? 0 : n - 1) : (st > 0 ? n : -1);
        else {
            if (need_int(c, ends[k], "slice", &x)) return -1;
            if (x < 0) x += n;
            if (x < 0) x = st < 0 ? -1 : 0;
            if (x >= n) x = st < 0 ? n - 1 : n;
        }
        *bounds[k] = x;
    }
    if (obj.t == JV_LIST) {
        jj_list *l = jj_list_new(c, 0);
        if (!l) return oom(c);
        l->tuple = obj.u.l->tuple;
        for (int64_t i = b; st > 0 ? i < e : i > e; i += st)
            if (jj_list_push(c, l, obj.u.l->v[i])) return -1;
        *out = mklist(l);
        return 0;
    }
    jj_buf buf = {0};
    for (int64_t i = b; st > 0 ? i < e : i > e; i += st)
        jj_put(&buf, obj.u.s.p + offs[i], offs[i + 1] - offs[i]);
    return jj_buf_value(c, &buf, out);
}

/* One printf-style conversion spec (flags, width, precision, type) applied to v. */
static int format_one(jj_ctx *c, const char *spec, size_t n, char type, jv v, jj_buf *b) {
    char f[40], tmp[512];
    if (type == 's' || type == 'r') {
        jj_buf s = {0};
        if (type == 's')
            jv_to_str(v, &s);
        else
            jv_repr(v, &s);
        snprintf(f, sizeof f, "%%%.*ss", (int)(n < 30 ? n : 30), spec);
        if (n == 0)
            jj_put(b, s.p ? s.p : "", s.n);
        else if (s.n < 256) {
            snprintf(tmp, sizeof tmp, f, s.p ? s.p : ""); /* width/precision as Python's */
            jj_puts(b, tmp);
        } else
            jj_put(b, s.p, s.n);
        jj_buf_free(&s);
        return 0;
    }
    if (!jv_isnum(v))
        return jj_fail(c, "%%%c format: a number is required, not %s", type, jv_typename(v));
    double x = v.t == JV_FLOAT ? v.u.f : (double)(v.t == JV_BOOL ? v.u.b : v.u.i);
    if (type == 'f' || type == 'e' || type == 'g') {
        snprintf(f, sizeof f, "%%%.*s%c", (int)(n < 30 ? n : 30), spec, type);
        snprintf(tmp, sizeof tmp, f, x);
    } else {
        snprintf(f, sizeof f, "%%%.*sll%c", (int)(n < 30 ? n : 30), spec, type == 'i' ? 'd' : type);
        snprintf(tmp, sizeof tmp, f,
                 (long long)(v.t == JV_FLOAT  ? (int64_t)x
                             : v.t == JV_BOOL ? v.u.b
                                              : v.u.i));
    }
    jj_puts(b, tmp);
    return 0;
}

int jj_str_format(jj_ctx *c, jv fmt, jv args, jv *out) {
    bool tuple = args.t == JV_LIST && args.u.l->tuple;
    int nargs = tuple ? args.u.l->n : 1, used = 0;
    jj_buf b = {0};
    for (size_t i = 0; i < fmt.u.s.n; i++) {
        if (fmt.u.s.p[i] != '%') {
            jj_putc(&b, fmt.u.s.p[i]);
            continue;
        }
        size_t start = ++i;
        while (i < fmt.u.s.n && strchr("-+ #0123456789.", fmt.u.s.p[i])) i++;
        char type = i < fmt.u.s.n ? fmt.u.s.p[i] : 0;
        if (type == '%') {
            jj_putc(&b, '%');
            continue;
        }
        if (!type || !strchr("srdifegx", type) || used >= nargs) {
            jj_buf_free(&b);
            return jj_fail(c, type && used >= nargs ? "not enough arguments for format string"
                                                    : "unsupported format character");
        }
        jv v = tuple ? args.u.l->v[used] : args;
        used++;
        if (format_one(c, fmt.u.s.p + start, i - start, type, v, &b)) {
            jj_buf_free(&b);
            return -1;
        }
    }
    if (used < nargs) {
        jj_buf_free(&b);
        return jj_fail(c, "not all arguments converted during string formatting");
    }
    return jj_buf_value(c, &b, out);
}

/* ---------------- dict methods ---------------- */

static int dict_items(jj_ctx *c, const jj_dict *d, int which, jv *out) {
    jj_list *l = jj_list_new(c, d->n);
    if (!l) return oom(c);
    for (int i = 0; i < d->n; i++) {
        if (which == 0) {
            jj_list *pair = jj_list_new(c, 2);
            if (!pair) return oom(c);
            pair->tuple = true;
            pair->v[0] = d->k[i], pair->v[1] = d->v[i], pair->n = 2;
            l->v[l->n++] = mklist(pair);
        } else
            l->v[l->n++] = which == 1 ? d->k[i] : d->v[i];
    }
    *out = mklist(l);
    return 0;
}

static int dict_method(jj_ctx *c, jv self, const char *m, const fargs *a, jv *out) {
    if (!strcmp(m, "items")) return dict_items(c, self.u.d, 0, out);
    if (!strcmp(m, "keys")) return dict_items(c, self.u.d, 1, out);
    if (!strcmp(m, "values")) return dict_items(c, self.u.d, 2, out);
    const jv *v = jj_dict_get(self.u.d, farg(a, 0, NULL, jv_none()));
    *out = v ? *v : farg(a, 1, "default", jv_none());
    return 0;
}

/* ---------------- globals ---------------- */

static int g_range(jj_ctx *c, const fargs *a, jv *out) {
    int64_t lo = 0, hi = 0, st = 1;
    if (a->n < 1 || a->n > 3) return jj_fail(c, "range expected 1 to 3 arguments, got %d", a->n);
    if (need_int(c, a->v[a->n == 1 ? 0 : 1], "range", &hi)) return -1;
    if (a->n > 1 && need_int(c, a->v[0], "range", &lo)) return -1;
    if (a->n > 2 && need_int(c, a->v[2], "range", &st)) return -1;
    if (!st) return jj_fail(c, "range() arg 3 must not be zero");
    double count = ceil(((double)hi - (double)lo) / (double)st);
    if (count > JJ_MAX_RANGE) return jj_fail(c, "range too big (limit %ld)", JJ_MAX_RANGE);
    jj_list *l = jj_list_new(c, count > 0 ? (int)count : 0);
    if (!l) return oom(c);
    for (int64_t i = lo; st > 0 ? i < hi : i > hi; i += st) l->v[l->n++] = jv_int(i);
    *out = mklist(l);
    return 0;
}

static int g_dict(jj_ctx *c, const fargs *a, bool ns, jv *out) {
    jj_dict *d = jj_dict_new(c, 0);
    if (!d) return oom(c);
    d->ns = ns;
    if (a->n > 1)
        return jj_fail(c, "%s takes at most one positional argument", ns ? "namespace" : "dict");
    if (a->n == 1) {
        if (a->v[0].t != JV_DICT)
            return jj_fail(c, "%s() argument must be a mapping", ns ? "namespace" : "dict");
        for (int i = 0; i < a->v[0].u.d->n; i++)
            if (jj_dict_set(c, d, a->v[0].u.d->k[i], a->v[0].u.d->v[i])) return -1;
    }
    for (int k = 0; k < a->nk; k++)
        if (jj_dict_set(c, d, jv_cstr(c, a->kn[k]), a->kv[k])) return -1;
    *out = (jv){.t = JV_DICT, .u.d = d};
    return 0;
}

static int g_strftime(jj_ctx *c, const fargs *a, jv *out) {
    jv fmt = farg(a, 0, NULL, jv_none());
    if (need_str(c, fmt, "strftime_now")) return -1;
    char f[256], res[512];
    snprintf(f, sizeof f, "%.*s", (int)(fmt.u.s.n < 255 ? fmt.u.s.n : 255), fmt.u.s.p);
    time_t now = time(NULL);
    struct tm tm;
    localtime_r(&now, &tm);
    size_t n = strftime(res, sizeof res, f, &tm);
    *out = jv_cstr(c, n ? res : "");
    return out->t == JV_STR ? 0 : oom(c);
}

static const char *const GLOBALS[] = {"range",           "namespace",    "dict",
                                      "raise_exception", "strftime_now", NULL};

bool jj_global_get(jj_ctx *c, const char *name, jv *out) {
    for (int i = 0; GLOBALS[i]; i++)
        if (!strcmp(GLOBALS[i], name)) {
            jj_func *fn = jj_alloc(jj_ctx_arena(c), sizeof *fn);
            if (!fn) return false;
            fn->kind = JJ_FN_GLOBAL, fn->name = GLOBALS[i];
            *out = (jv){.t = JV_FUNC, .u.fn = fn};
            return true;
        }
    return false;
}

int jj_call_builtin(jj_ctx *c, const jj_func *fn, jv *args, int nargs, const char **kwn, jv *kwv,
                    int nkw, jv *out) {
    fargs a = {args, nargs, kwn, kwv, nkw};
    const char *m = fn->name;
    if (fn->kind == JJ_FN_METHOD) {
        if (fn->self.t == JV_STR) return str_method(c, fn->self, m, &a, out);
        if (fn->self.t == JV_DICT) return dict_method(c, fn->self, m, &a, out);
        if (fn->self.t == JV_LOOP) { /* loop.cycle(a, b, ...) */
            if (!nargs) return jj_fail(c, "no items for cycling given");
            *out = args[fn->self.u.lp->i % nargs];
            return 0;
        }
        return jj_fail(c, "unsupported method '%s'", m);
    }
    if (!strcmp(m, "range")) return g_range(c, &a, out);
    if (!strcmp(m, "namespace") || !strcmp(m, "dict")) return g_dict(c, &a, m[0] == 'n', out);
    if (!strcmp(m, "strftime_now")) return g_strftime(c, &a, out);
    /* raise_exception(message): the template's own error, reported verbatim */
    jv msg;
    if (jv_tostr(c, farg(&a, 0, NULL, jv_str("", 0)), &msg)) return -1;
    return jj_fail(c, "%.*s", (int)(msg.u.s.n < 350 ? msg.u.s.n : 350), msg.u.s.p);
}

/* ---------------- tests ---------------- */

static const char *const TESTS[] = {
    "defined",     "undefined", "none",        "boolean", "true",     "false",    "integer",
    "float",       "number",    "string",      "mapping", "iterable", "sequence", "callable",
    "odd",         "even",      "divisibleby", "eq",      "equalto",  "==",       "ne",
    "!=",          "lt",        "lessthan",    "<",       "le",       "<=",       "gt",
    "greaterthan", ">",         "ge",          ">=",      "in",       "lower",    "upper",
    "sameas",      "escaped",   NULL};

bool jj_test_exists(const char *name) {
    return in_list(TESTS, name, strlen(name));
}

static int test_compare(jj_ctx *c, const char *name, jv v, jv arg, bool *out) {
    int cmp = 0;
    if (!strcmp(name, "eq") || !strcmp(name, "equalto") || !strcmp(name, "=="))
        *out = jv_equal(v, arg);
    else if (!strcmp(name, "ne") || !strcmp(name, "!="))
        *out = !jv_equal(v, arg);
    else if (!strcmp(name, "sameas"))
        *out =
            v.t == arg.t && (jv_equal(v, arg) && (v.t == JV_NONE || v.t == JV_BOOL ||
                                                  v.t == JV_UNDEF || !memcmp(&v, &arg, sizeof v)));
    else if (!strcmp(name, "in")) {
        *out = false;
        if (arg.t == JV_STR && v.t == JV_STR)
            *out = find_sub(arg, 0, v) != NULL;
        else if (arg.t == JV_LIST)
            for (int i = 0; i < arg.u.l->n && !*out; i++) *out = jv_equal(v, arg.u.l->v[i]);
        else if (arg.t == JV_DICT)
            *out = jj_dict_get(arg.u.d, v) != NULL;
        else
            return jj_fail(c, "argument of type '%s' is not iterable", jv_typename(arg));
    } else {
        if (jv_compare(c, v, arg, &cmp)) return -1;
        bool lt = name[0] == 'l' || name[0] == '<', eq = strchr(name, 'e') || strchr(name, '=');
        if (!strcmp(name, "lessthan") || !strcmp(name, "greaterthan")) eq = false;
        *out = lt ? (eq ? cmp <= 0 : cmp < 0) : (eq ? cmp >= 0 : cmp > 0);
    }
    return 0;
}

int jj_call_test(jj_ctx *c, const char *name, jv v, jv *args, int nargs, bool *out) {
    jv arg = nargs ? args[0] : jv_undef("test argument missing");
    jv_type t = v.t;
    if (!strcmp(name, "defined"))
        *out = t != JV_UNDEF;
    else if (!strcmp(name, "undefined"))
        *out = t == JV_UNDEF;
    else if (!strcmp(name, "none"))
        *out = t == JV_NONE;
    else if (!strcmp(name, "boolean"))
        *out = t == JV_BOOL;
    else if (!strcmp(name, "true"))
        *out = t == JV_BOOL && v.u.b;
    else if (!strcmp(name, "false"))
        *out = t == JV_BOOL && !v.u.b;
    else if (!strcmp(name, "integer"))
        *out = t == JV_INT;
    else if (!strcmp(name, "float"))
        *out = t == JV_FLOAT;
    else if (!strcmp(name, "number"))
        *out = jv_isnum(v);
    else if (!strcmp(name, "string"))
        *out = t == JV_STR;
    else if (!strcmp(name, "mapping"))
        *out = t == JV_DICT && !v.u.d->ns;
    else if (!strcmp(name, "iterable"))
        *out = t == JV_STR || t == JV_LIST || t == JV_UNDEF || (t == JV_DICT && !v.u.d->ns);
    else if (!strcmp(name, "sequence"))
        *out = t == JV_STR || t == JV_LIST || t == JV_UNDEF || (t == JV_DICT && !v.u.d->ns);
    else if (!strcmp(name, "callable"))
        *out = t == JV_FUNC || t == JV_UNDEF;
    else if (!strcmp(name, "escaped"))
        *out = false;
    else if (!strcmp(name, "odd") || !strcmp(name, "even") || !strcmp(name, "divisibleby")) {
        int64_t x = 0, d = 2;
        if (need_int(c, v, name, &x)) return -1;
        if (name[0] == 'd' && need_int(c, arg, name, &d)) return -1;
        if (!d) return jj_fail(c, "integer division or modulo by zero");
        int64_t r = ((x % d) + d) % d;
        *out = name[0] == 'o' ? r == 1 : r == 0;
    } else if (!strcmp(name, "lower") || !strcmp(name, "upper")) {
        jv s, conv;
        if (jv_tostr(c, v, &s) ||
            change_case(c, s, name[0] == 'l' ? CASE_LOWER : CASE_UPPER, &conv))
            return -1;
        *out = jv_equal(s, conv);
    } else if (jj_test_exists(name)) {
        return test_compare(c, name, v, arg, out);
    } else
        return jj_fail(c, "No test named '%s'.", name);
    return 0;
}

/* ---------------- filters ---------------- */

static int join_items(jj_ctx *c, jv seq, jv sep, jv attribute, jv *out) {
    jv *items;
    int64_t n;
    if (jj_iterate(c, seq, &items, &n)) return -1;
    jj_buf b = {0};
    for (int64_t i = 0; i < n; i++) {
        jv x = items[i];
        if (i) jv_to_str(sep, &b);
        if (attribute.t == JV_STR && jj_getitem(c, x, attribute, &x)) {
            jj_buf_free(&b);
            return -1;
        }
        jv_to_str(x, &b);
    }
    return jj_buf_value(c, &b, out);
}

static int f_tojson(jj_ctx *c, jv v, const fargs *a, jv *out) {
    jv indent = farg(a, 0, "indent", jv_none()), seps = farg(a, -1, "separators", jv_none());
    jj_json_opts o = {NULL, ", ", ": ", jv_truthy(farg(a, -1, "sort_keys", jv_bool(false))),
                      jv_truthy(farg(a, -1, "ensure_ascii", jv_bool(false)))};
    char ind[64];
    if (indent.t == JV_INT) {
        int64_t k = indent.u.i < 0 ? 0 : indent.u.i > 60 ? 60 : indent.u.i;
        memset(ind, ' ', (size_t)k);
        ind[k] = 0;
        o.indent = ind, o.item_sep = ",";
    } else if (indent.t == JV_STR) {
        o.indent = jj_strdup(jj_ctx_arena(c), indent.u.s.p, indent.u.s.n);
        o.item_sep = ",";
    } else if (indent.t != JV_NONE)
        return jj_fail(c, "tojson: indent must be an int or a string");
    if (seps.t == JV_LIST && seps.u.l->n == 2 && seps.u.l->v[0].t == JV_STR &&
        seps.u.l->v[1].t == JV_STR) {
        o.item_sep = jj_strdup(jj_ctx_arena(c), seps.u.l->v[0].u.s.p, seps.u.l->v[0].u.s.n);
        o.key_sep = jj_strdup(jj_ctx_arena(c), seps.u.l->v[1].u.s.p, seps.u.l->v[1].u.s.n);
    } else if (seps.t != JV_NONE)
        return jj_fail(c, "tojson: separators must be a pair of strings");
    if (!o.indent && indent.t == JV_STR) return oom(c);
    if (!o.item_sep || !o.key_sep) return oom(c);
    jj_buf b = {0};
    if (jv_to_json(c, v, &o, &b)) {
        jj_buf_free(&b);
        return -1;
    }
    return jj_buf_value(c, &b, out);
}

static int f_indent(jj_ctx *c, jv v, const fargs *a, jv *out) {
    jv width = farg(a, 0, "width", jv_int(4)), s;
    bool first = jv_truthy(farg(a, 1, "first", jv_bool(false)));
    bool blank = jv_truthy(farg(a, 2, "blank", jv_bool(false)));
    jj_buf ind = {0}, b = {0};
    if (width.t == JV_STR)
        jj_put(&ind, width.u.s.p, width.u.s.n);
    else
        for (int64_t i = 0; width.t == JV_INT && i < width.u.i && i < 256; i++) jj_putc(&ind, ' ');
    if (jv_tostr(c, v, &s)) return jj_buf_free(&ind), -1;
    if (first) jj_put(&b, ind.p, ind.n);
    for (size_t i = 0; i < s.u.s.n; i++) {
        jj_putc(&b, s.u.s.p[i]);
        if (s.u.s.p[i] != '\n' || i + 1 == s.u.s.n) continue;
        bool empty = s.u.s.p[i + 1] == '\n';
        if (blank || !empty) jj_put(&b, ind.p, ind.n);
    }
    jj_buf_free(&ind);
    return jj_buf_value(c, &b, out);
}

/* An attribute path "a.b.0" as jinja2's make_attrgetter walks it. */
static int attr_path(jj_ctx *c, jv x, jv path, jv *out) {
    if (path.t != JV_STR) return jj_getitem(c, x, path, out);
    size_t s = 0;
    for (size_t i = 0; i <= path.u.s.n; i++) {
        if (i < path.u.s.n && path.u.s.p[i] != '.') continue;
        jv key = jv_str(path.u.s.p + s, i - s);
        char *end;
        char tmp[32];
        snprintf(tmp, sizeof tmp, "%.*s", (int)(i - s < 31 ? i - s : 31), path.u.s.p + s);
        long long k = strtoll(tmp, &end, 10);
        if (i > s && !*end) key = jv_int(k);
        if (jj_getitem(c, x, key, &x)) return -1;
        s = i + 1;
    }
    *out = x;
    return 0;
}

static int call_filter_named(jj_ctx *c, const char *name, jv v, const fargs *a, jv *out);

/* select / reject / selectattr / rejectattr / map */
static int f_select(jj_ctx *c, const char *name, jv v, const fargs *a, jv *out) {
    bool attr = strstr(name, "attr") != NULL, keep = name[0] == 's';
    jv *items = NULL;
    int64_t n = 0;
    if (jv_truthy(v) && jj_iterate(c, v, &items, &n)) return -1; /* jinja2: "if value:" */
    jj_list *l = jj_list_new(c, (int)n);
    if (!l) return oom(c);
    int first = attr ? 1 : 0;
    for (int64_t i = 0; i < n; i++) {
        jv x = items[i], y;
        if (attr && attr_path(c, x, farg(a, 0, NULL, jv_none()), &x)) return -1;
        bool ok;
        if (!strcmp(name, "map")) {
            jv an = farg(a, -1, "attribute", jv_none());
            if (an.t != JV_NONE) {
                if (attr_path(c, x, an, &y)) return -1;
                if (y.t == JV_UNDEF) y = farg(a, -1, "default", y);
            } else {
                jv fname = farg(a, 0, NULL, jv_none());
                if (need_str(c, fname, "map")) return -1;
                fargs rest = {a->v + 1, a->n - 1, a->kn, a->kv, a->nk};
                if (call_filter_named(c, fname.u.s.p, x, &rest, &y)) return -1;
            }
            l->v[l->n++] = y;
            continue;
        }
        if (a->n > first) {
            jv tname = a->v[first];
            if (need_str(c, tname, name)) return -1;
            if (jj_call_test(c, tname.u.s.p, x, a->v + first + 1, a->n - first - 1, &ok)) return -1;
        } else
            ok = jv_truthy(x);
        if (ok == keep) l->v[l->n++] = items[i];
    }
    *out = mklist(l);
    return 0;
}

/* sort / dictsort / unique: a stable insertion sort on keys (lists in templates are short) */
static int sort_key(jj_ctx *c, jv x, jv attribute, bool case_sensitive, jv *key) {
    if (attribute.t != JV_NONE && attr_path(c, x, attribute, &x)) return -1;
    if (!case_sensitive && x.t == JV_STR) return change_case(c, x, CASE_LOWER, key);
    *key = x;
    return 0;
}

static int f_sort(jj_ctx *c, jv v, const fargs *a, bool dictsort, jv *out) {
    bool reverse = jv_truthy(farg(a, dictsort ? 2 : 0, "reverse", jv_bool(false)));
    bool cs = jv_truthy(farg(a, dictsort ? 0 : 1, "case_sensitive", jv_bool(false)));
    jv attribute = dictsort ? jv_int(0) : farg(a, 2, "attribute", jv_none());
    if (dictsort) {
        jv by = farg(a, 1, "by", jv_str("key", 3));
        if (v.t != JV_DICT) return jj_fail(c, "dictsort expects a dict");
        if (by.t == JV_STR && by.u.s.n == 5 && !memcmp(by.u.s.p, "value", 5)) attribute = jv_int(1);
        if (dict_items(c, v.u.d, 0, &v)) return -1;
    }
    jv *items;
    int64_t n;
    if (jj_iterate(c, v, &items, &n)) return -1;
    jj_list *l = jj_list_new(c, (int)n);
    jv *keys = jj_alloc(jj_ctx_arena(c), sizeof(jv) * (size_t)(n + 1));
    if (!l || !keys) return oom(c);
    for (int64_t i = 0; i < n; i++) {
        jv k;
        if (sort_key(c, items[i], attribute, cs, &k)) return -1;
        int64_t j = i;
        for (int cmp; j > 0; j--) {
            if (jv_compare(c, keys[j - 1], k, &cmp)) return -1;
            if (reverse ? cmp >= 0 : cmp <= 0) break;
            keys[j] = keys[j - 1], l->v[j] = l->v[j - 1];
        }
        keys[j] = k, l->v[j] = items[i];
        l->n++;
    }
    *out = mklist(l);
    return 0;
}

/* min / max (case_sensitive=False, attribute=None): the first extreme element. */
static int f_extreme(jj_ctx *c, jv v, const fargs *a, bool want_max, jv *out) {
    bool cs = jv_truthy(farg(a, 0, "case_sensitive", jv_bool(false)));
    jv attribute = farg(a, 1, "attribute", jv_none()), *items, best_key = jv_none();
    int64_t n;
    if (jj_iterate(c, v, &items, &n)) return -1;
    *out = jv_undef("No aggregated item, sequence was empty.");
    for (int64_t i = 0; i < n; i++) {
        jv k;
        int cmp = 0;
        if (sort_key(c, items[i], attribute, cs, &k)) return -1;
        if (i && jv_compare(c, k, best_key, &cmp)) return -1;
        if (!i || (want_max ? cmp > 0 : cmp < 0)) *out = items[i], best_key = k;
    }
    return 0;
}

static int f_unique(jj_ctx *c, jv v, const fargs *a, jv *out) {
    bool cs = jv_truthy(farg(a, 0, "case_sensitive", jv_bool(false)));
    jv attribute = farg(a, 1, "attribute", jv_none()), *items;
    int64_t n;
    if (jj_iterate(c, v, &items, &n)) return -1;
    jj_list *l = jj_list_new(c, (int)n), *seen = jj_list_new(c, (int)n);
    if (!l || !seen) return oom(c);
    for (int64_t i = 0; i < n; i++) {
        jv k;
        bool dup = false;
        if (sort_key(c, items[i], attribute, cs, &k)) return -1;
        for (int j = 0; j < seen->n && !dup; j++) dup = jv_equal(seen->v[j], k);
        if (!dup) seen->v[seen->n++] = k, l->v[l->n++] = items[i];
    }
    *out = mklist(l);
    return 0;
}

static int f_number(jj_ctx *c, const char *name, jv v, const fargs *a, jv *out) {
    if (!strcmp(name, "abs")) {
        if (!jv_isnum(v)) return jj_fail(c, "bad operand type for abs(): '%s'", jv_typename(v));
        *out =
            v.t == JV_FLOAT ? jv_float(fabs(v.u.f)) : jv_int(llabs(v.t == JV_BOOL ? v.u.b : v.u.i));
        return 0;
    }
    if (!strcmp(name, "round")) {
        int64_t prec = 0;
        if (need_int(c, farg(a, 0, "precision", jv_int(0)), "round", &prec)) return -1;
        jv method = farg(a, 1, "method", jv_str("common", 6));
        double x = v.t == JV_FLOAT ? v.u.f
                   : jv_isnum(v)   ? (double)(v.t == JV_BOOL ? v.u.b : v.u.i)
                                   : NAN;
        if (isnan(x) && !jv_isnum(v)) return jj_fail(c, "round expects a number");
        double m = pow(10, (double)prec), y = x * m;
        y = method.t == JV_STR && method.u.s.p[0] == 'f'                             ? floor(y)
            : method.t == JV_STR && method.u.s.p[0] == 'c' && method.u.s.p[1] == 'e' ? ceil(y)
                                                                                     : round(y);
        *out = jv_float(y / m);
        return 0;
    }
    bool to_int = !strcmp(name, "int");
    jv dflt = farg(a, 0, "default", to_int ? jv_int(0) : jv_float(0));
    if (jv_isnum(v)) {
        double x = v.t == JV_FLOAT ? v.u.f : (double)(v.t == JV_BOOL ? v.u.b : v.u.i);
        *out = to_int ? (v.t == JV_FLOAT ? jv_int((int64_t)x) : jv_int((int64_t)x)) : jv_float(x);
        if (to_int && v.t != JV_FLOAT) *out = jv_int(v.t == JV_BOOL ? v.u.b : v.u.i);
        return 0;
    }
    if (v.t == JV_STR) {
        char tmp[64], *end;
        snprintf(tmp, sizeof tmp, "%.*s", (int)(v.u.s.n < 63 ? v.u.s.n : 63), v.u.s.p);
        double x = strtod(tmp, &end);
        if (end != tmp && !*end) {
            *out = to_int ? jv_int((int64_t)x) : jv_float(x);
            return 0;
        }
    }
    *out = dflt;
    return 0;
}

static int f_seq(jj_ctx *c, const char *name, jv v, jv *out) {
    jv *items;
    int64_t n;
    if (!strcmp(name, "items")) {
        if (v.t == JV_UNDEF) return dict_items(c, &(jj_dict){0}, 0, out);
        if (v.t != JV_DICT)
            return jj_fail(c, "items filter expects a mapping, got '%s'", jv_typename(v));
        return dict_items(c, v.u.d, 0, out);
    }
    if (!strcmp(name, "reverse") && v.t == JV_STR)
        return jj_slice(c, v, jv_none(), jv_none(), jv_int(-1), out);
    if (jj_iterate(c, v, &items, &n)) return -1;
    if (!strcmp(name, "first") || !strcmp(name, "last")) {
        *out = n ? items[name[0] == 'f' ? 0 : n - 1] : jv_undef("the sequence is empty");
        return 0;
    }
    jj_list *l = jj_list_new(c, (int)n);
    if (!l) return oom(c);
    for (int64_t i = 0; i < n; i++) l->v[l->n++] = items[!strcmp(name, "reverse") ? n - 1 - i : i];
    *out = mklist(l);
    return 0;
}

static int f_string(jj_ctx *c, const char *name, jv v, const fargs *a, jv *out) {
    jv s;
    if (jv_tostr(c, v, &s)) return -1;
    if (!strcmp(name, "string") || !strcmp(name, "safe")) {
        *out = v.t == JV_STR ? v : s;
        out->markup |= name[1] == 'a';
        return 0;
    }
    if (!strcmp(name, "trim")) {
        jv chars = farg(a, 0, "chars", jv_none());
        *out = strip(s, chars, true, true);
        return 0;
    }
    if (case_mode_of(name) >= 0) return change_case(c, s, (case_mode)case_mode_of(name), out);
    if (!strcmp(name, "replace")) {
        int64_t count = -1;
        jv cnt = farg(a, 2, "count", jv_none());
        if (cnt.t != JV_NONE && need_int(c, cnt, "replace", &count)) return -1;
        return str_replace(c, s, farg(a, 0, "old", jv_none()), farg(a, 1, "new", jv_none()), count,
                           out);
    }
    if (!strcmp(name, "indent")) return f_indent(c, s, a, out);
    /* e / escape: HTML escaping as markupsafe does it; a Markup is already escaped */
    if (v.t == JV_STR && v.markup) {
        *out = v;
        return 0;
    }
    jj_buf b = {0};
    jj_html_escape(s.u.s.p, s.u.s.n, &b);
    if (jj_buf_value(c, &b, out)) return -1;
    out->markup = true;
    return 0;
}

static const char *const FILTERS[] = {
    "length", "count",      "tojson",     "default",  "d",     "join",       "first",   "last",
    "list",   "reverse",    "items",      "dictsort", "sort",  "unique",     "map",     "select",
    "reject", "selectattr", "rejectattr", "int",      "float", "abs",        "round",   "string",
    "safe",   "trim",       "upper",      "lower",    "title", "capitalize", "replace", "indent",
    "e",      "escape",     "sum",        "min",      "max",   "format",     NULL};

bool jj_filter_exists(const char *name) {
    return in_list(FILTERS, name, strlen(name));
}

static int call_filter_named(jj_ctx *c, const char *name, jv v, const fargs *a, jv *out) {
    if (!strcmp(name, "length") || !strcmp(name, "count")) {
        if (v.t == JV_STR)
            *out = jv_int((int64_t)jj_utf8_len(v.u.s.p, v.u.s.n));
        else if (v.t == JV_LIST)
            *out = jv_int(v.u.l->n);
        else if (v.t == JV_DICT && !v.u.d->ns)
            *out = jv_int(v.u.d->n);
        else if (v.t == JV_UNDEF)
            *out = jv_int(0);
        else
            return jj_fail(c, "object of type '%s' has no len()", jv_typename(v));
        return 0;
    }
    if (!strcmp(name, "tojson")) return f_tojson(c, v, a, out);
    if (!strcmp(name, "default") || !strcmp(name, "d")) {
        bool boolean = jv_truthy(farg(a, 1, "boolean", jv_bool(false)));
        bool use = v.t == JV_UNDEF || (boolean && !jv_truthy(v));
        *out = use ? farg(a, 0, "default_value", jv_str("", 0)) : v;
        return 0;
    }
    if (!strcmp(name, "join"))
        return join_items(c, v, farg(a, 0, "d", jv_str("", 0)), farg(a, 1, "attribute", jv_none()),
                          out);
    if (!strcmp(name, "first") || !strcmp(name, "last") || !strcmp(name, "list") ||
        !strcmp(name, "reverse") || !strcmp(name, "items"))
        return f_seq(c, name, v, out);
    if (!strcmp(name, "dictsort") || !strcmp(name, "sort"))
        return f_sort(c, v, a, name[0] == 'd', out);
    if (!strcmp(name, "unique")) return f_unique(c, v, a, out);
    if (!strcmp(name, "format")) { /* "%s-%s"|format(a, b) is "%s-%s" % (a, b) */
        jj_list *t = jj_list_new(c, a->n);
        jv fmt;
        if (!t || jv_tostr(c, v, &fmt)) return t ? -1 : oom(c);
        t->tuple = true;
        for (int i = 0; i < a->n; i++) t->v[t->n++] = a->v[i];
        return jj_str_format(c, fmt, mklist(t), out);
    }
    if (!strcmp(name, "min") || !strcmp(name, "max"))
        return f_extreme(c, v, a, name[1] == 'a', out);
    if (!strcmp(name, "map") || strstr(name, "select") || strstr(name, "reject"))
        return f_select(c, name, v, a, out);
    if (!strcmp(name, "int") || !strcmp(name, "float") || !strcmp(name, "abs") ||
        !strcmp(name, "round"))
        return f_number(c, name, v, a, out);
    if (!strcmp(name, "sum")) {
        jv acc = farg(a, 1, "start", jv_int(0)), attribute = farg(a, 0, "attribute", jv_none()),
           *items;
        int64_t n;
        if (jj_iterate(c, v, &items, &n)) return -1;
        for (int64_t i = 0; i < n; i++) {
            jv x = items[i];
            if (attribute.t != JV_NONE && attr_path(c, x, attribute, &x)) return -1;
            if (!jv_isnum(x) || !jv_isnum(acc)) return jj_fail(c, "sum expects numbers");
            acc =
                acc.t == JV_FLOAT || x.t == JV_FLOAT
                    ? jv_float((acc.t == JV_FLOAT ? acc.u.f : (double)acc.u.i) +
                               (x.t == JV_FLOAT ? x.u.f : (double)(x.t == JV_BOOL ? x.u.b : x.u.i)))
                    : jv_int(acc.u.i + (x.t == JV_BOOL ? x.u.b : x.u.i));
        }
        *out = acc;
        return 0;
    }
    if (jj_filter_exists(name)) return f_string(c, name, v, a, out);
    return jj_fail(c, "No filter named '%s'.", name);
}

int jj_call_filter(jj_ctx *c, const jnode *n, jv v, jv *args, int nargs, const char **kwn, jv *kwv,
                   int nkw, jv *out) {
    fargs a = {args, nargs, kwn, kwv, nkw};
    return call_filter_named(c, n->name, v, &a, out);
}
