/*
 * jinja_eval.c — the tree-walking evaluator: scopes, statements, operators, macro calls.
 *
 * Scoping follows jinja2: a for loop gives each iteration a fresh scope (a {% set %} inside the
 * loop body is gone in the next iteration and after the loop), if-blocks share their enclosing
 * scope, a macro call gets a scope whose parent is the template's top level.
 */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chat/jinja_int.h"

enum { JJ_BREAK = 1, JJ_CONTINUE = 2 }; /* statement results besides 0 and errors */

typedef struct frame {
    jj_dict *vars;              /* the names set in this scope */
    const struct frame *parent; /* the enclosing scope, NULL at the top level */
} frame;

struct jj_ctx {
    jj_arena arena; /* every value of this render */
    rs_err *e;      /* the first error */
    bool failed;    /* an error was reported */
    int line;       /* the template line being evaluated (for messages) */
    jj_buf *out;    /* where output goes (a temporary buffer inside macros / set blocks) */
    frame *root;    /* the template's top-level scope */
    long steps;     /* loop iterations and calls so far (JJ_MAX_STEPS) */
    int depth;      /* recursion depth of evaluation */
    int loop_depth; /* enclosing for loops in the current macro / template */
};

int jj_fail(jj_ctx *c, const char *fmt, ...) {
    if (!c->failed) {
        char msg[400];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(msg, sizeof msg, fmt, ap);
        va_end(ap);
        rs_errf(c->e, RS_EINVAL, "chat template error (line %d): %s", c->line, msg);
        c->failed = true;
    }
    return RS_EINVAL;
}

jj_arena *jj_ctx_arena(jj_ctx *c) {
    return &c->arena;
}

static int oom(jj_ctx *c) {
    return jj_fail(c, "template ran out of memory");
}

static int undefined_error(jj_ctx *c, jv u) {
    return jj_fail(c, "%s", u.u.s.p ? u.u.s.p : "undefined value used");
}

static int eval(jj_ctx *c, const frame *f, const jnode *n, jv *out);
static int exec(jj_ctx *c, frame *f, const jnode *n);

/* ---------------- names ---------------- */

static const jv *frame_get(const frame *f, const char *name) {
    jv key = jv_str(name, strlen(name));
    for (; f; f = f->parent) {
        const jv *v = jj_dict_get(f->vars, key);
        if (v) return v;
    }
    return NULL;
}

static int frame_set(jj_ctx *c, frame *f, const char *name, jv v) {
    return jj_dict_set(c, f->vars, jv_str(name, strlen(name)), v);
}

static frame *frame_new(jj_ctx *c, const frame *parent) {
    frame *f = jj_alloc(&c->arena, sizeof *f);
    if (!f || !(f->vars = jj_dict_new(c, 0))) return NULL;
    f->parent = parent;
    return f;
}

static int lookup(jj_ctx *c, const frame *f, const char *name, jv *out) {
    const jv *v = frame_get(f, name);
    if (v) {
        *out = *v;
        return 0;
    }
    if (jj_global_get(c, name, out)) return 0;
    char *msg = jj_alloc(&c->arena, strlen(name) + 20);
    if (!msg) return oom(c);
    sprintf(msg, "'%s' is undefined", name);
    *out = jv_undef(msg);
    return 0;
}

/* ---------------- operators ---------------- */

static int type_error(jj_ctx *c, const char *op, jv a, jv b) {
    return jj_fail(c, "unsupported operand type(s) for %s: '%s' and '%s'", op, jv_typename(a),
                   jv_typename(b));
}

static int64_t as_i(jv v) {
    return v.t == JV_BOOL ? v.u.b : v.u.i;
}
static double as_f(jv v) {
    return v.t == JV_FLOAT ? v.u.f : (double)as_i(v);
}

static int repeat(jj_ctx *c, jv seq, int64_t times, jv *out) {
    if (times < 0) times = 0;
    if (seq.t == JV_STR) {
        if (seq.u.s.n && (uint64_t)times > JJ_MAX_OUTPUT / seq.u.s.n)
            return jj_fail(c, "string repetition too large");
        size_t n = seq.u.s.n * (size_t)times;
        char *p = jj_alloc(&c->arena, n + 1);
        if (!p) return oom(c);
        for (int64_t i = 0; i < times; i++) memcpy(p + (size_t)i * seq.u.s.n, seq.u.s.p, seq.u.s.n);
        *out = jv_str(p, n);
        return 0;
    }
    if (seq.u.l->n && times > JJ_MAX_RANGE / seq.u.l->n)
        return jj_fail(c, "list repetition too large");
    jj_list *l = jj_list_new(c, (int)(seq.u.l->n * times));
    if (!l) return oom(c);
    for (int64_t i = 0; i < times; i++)
        for (int k = 0; k < seq.u.l->n; k++) l->v[l->n++] = seq.u.l->v[k];
    l->tuple = seq.u.l->tuple;
    *out = (jv){.t = JV_LIST, .u.l = l};
    return 0;
}

static int concat_seq(jj_ctx *c, jv a, jv b, jv *out) {
    if (a.t == JV_STR) {
        char *p = jj_alloc(&c->arena, a.u.s.n + b.u.s.n + 1);
        if (!p) return oom(c);
        memcpy(p, a.u.s.p, a.u.s.n);
        memcpy(p + a.u.s.n, b.u.s.p, b.u.s.n);
        *out = jv_str(p, a.u.s.n + b.u.s.n);
        return 0;
    }
    jj_list *l = jj_list_new(c, a.u.l->n + b.u.l->n);
    if (!l) return oom(c);
    for (int k = 0; k < a.u.l->n; k++) l->v[l->n++] = a.u.l->v[k];
    for (int k = 0; k < b.u.l->n; k++) l->v[l->n++] = b.u.l->v[k];
    l->tuple = a.u.l->tuple;
    *out = (jv){.t = JV_LIST, .u.l = l};
    return 0;
}

/* Markup + str: markupsafe escapes the plain side and the result stays Markup. */
static int markup_add(jj_ctx *c, jv a, jv b, jv *out) {
    jj_buf buf = {0};
    if (a.markup)
        jj_put(&buf, a.u.s.p, a.u.s.n);
    else
        jj_html_escape(a.u.s.p, a.u.s.n, &buf);
    if (b.markup)
        jj_put(&buf, b.u.s.p, b.u.s.n);
    else
        jj_html_escape(b.u.s.p, b.u.s.n, &buf);
    if (jj_buf_value(c, &buf, out)) return -1;
    out->markup = true;
    return 0;
}

static int arith_int(jj_ctx *c, int op, int64_t x, int64_t y, jv *out) {
    int64_t r = 0;
    bool ovf = false;
    switch (op) {
    case JO_ADD:
        ovf = __builtin_add_overflow(x, y, &r);
        break;
    case JO_SUB:
        ovf = __builtin_sub_overflow(x, y, &r);
        break;
    case JO_MUL:
        ovf = __builtin_mul_overflow(x, y, &r);
        break;
    case JO_FLOORDIV:
    case JO_MOD:
        if (!y) return jj_fail(c, "integer division or modulo by zero");
        if (x == INT64_MIN && y == -1) return jj_fail(c, "integer overflow");
        r = op == JO_MOD ? x % y : x / y;
        if (op == JO_MOD && r && ((r < 0) != (y < 0))) r += y;
        if (op == JO_FLOORDIV && (x % y) && ((x < 0) != (y < 0))) r -= 1;
        break;
    case JO_POW:
        if (y < 0) {
            *out = jv_float(pow((double)x, (double)y));
            return 0;
        }
        r = 1;
        for (int64_t k = 0; k < y && !ovf; k++) ovf = __builtin_mul_overflow(r, x, &r);
        break;
    }
    if (ovf) return jj_fail(c, "integer overflow in the template");
    *out = jv_int(r);
    return 0;
}

static int arith_float(jj_ctx *c, int op, double x, double y, jv *out) {
    double r = 0;
    switch (op) {
    case JO_ADD:
        r = x + y;
        break;
    case JO_SUB:
        r = x - y;
        break;
    case JO_MUL:
        r = x * y;
        break;
    case JO_DIV:
        if (y == 0) return jj_fail(c, "division by zero");
        r = x / y;
        break;
    case JO_FLOORDIV:
    case JO_MOD:
        if (y == 0) return jj_fail(c, "float modulo or division by zero");
        r = op == JO_MOD ? fmod(x, y) : floor(x / y);
        if (op == JO_MOD && r != 0 && ((r < 0) != (y < 0))) r += y;
        break;
    case JO_POW:
        r = pow(x, y);
        break;
    }
    *out = jv_float(r);
    return 0;
}

static const char *op_name(int op) {
    static const char *const names[] = {"",   "+",  "-", "*",  "/", "//", "%",  "**",    "~",
                                        "==", "!=", "<", "<=", ">", ">=", "in", "not in"};
    return op > 0 && op <= JO_NOTIN ? names[op] : "?";
}

static int binop(jj_ctx *c, int op, jv a, jv b, jv *out) {
    if (op == JO_CONCAT) {
        jj_buf buf = {0};
        jv_to_str(a, &buf);
        jv_to_str(b, &buf);
        return jj_buf_value(c, &buf, out);
    }
    if (a.t == JV_UNDEF) return undefined_error(c, a);
    if (b.t == JV_UNDEF) return undefined_error(c, b);
    if (jv_isnum(a) && jv_isnum(b)) {
        if (op == JO_DIV || a.t == JV_FLOAT || b.t == JV_FLOAT)
            return arith_float(c, op, as_f(a), as_f(b), out);
        return arith_int(c, op, as_i(a), as_i(b), out);
    }
    bool seq_a = a.t == JV_STR || a.t == JV_LIST;
    if (op == JO_ADD && a.t == JV_STR && b.t == JV_STR && (a.markup || b.markup))
        return markup_add(c, a, b, out);
    if (op == JO_ADD && seq_a && a.t == b.t && (a.t == JV_STR || a.u.l->tuple == b.u.l->tuple))
        return concat_seq(c, a, b, out);
    if (op == JO_MOD && a.t == JV_STR) return jj_str_format(c, a, b, out);
    if (op == JO_MUL && seq_a && (b.t == JV_INT || b.t == JV_BOOL))
        return repeat(c, a, as_i(b), out);
    if (op == JO_MUL && (a.t == JV_INT || a.t == JV_BOOL) && (b.t == JV_STR || b.t == JV_LIST))
        return repeat(c, b, as_i(a), out);
    return type_error(c, op_name(op), a, b);
}

static int contains(jj_ctx *c, jv needle, jv hay, bool *out) {
    *out = false;
    switch (hay.t) {
    case JV_STR:
        if (needle.t != JV_STR)
            return jj_fail(c, "'in <string>' requires string as left operand, not %s",
                           jv_typename(needle));
        *out = !needle.u.s.n || (hay.u.s.n >= needle.u.s.n &&
                                 memmem(hay.u.s.p, hay.u.s.n, needle.u.s.p, needle.u.s.n));
        return 0;
    case JV_LIST:
        for (int i = 0; i < hay.u.l->n && !*out; i++) *out = jv_equal(needle, hay.u.l->v[i]);
        return 0;
    case JV_DICT:
        *out = jj_dict_get(hay.u.d, needle) != NULL;
        return 0;
    case JV_UNDEF:
        return 0; /* Undefined iterates as empty */
    default:
        return jj_fail(c, "argument of type '%s' is not iterable", jv_typename(hay));
    }
}

static int compare(jj_ctx *c, int op, jv a, jv b, bool *out) {
    int cmp = 0;
    switch (op) {
    case JO_EQ:
        *out = jv_equal(a, b);
        return 0;
    case JO_NE:
        *out = !jv_equal(a, b);
        return 0;
    case JO_IN:
        return contains(c, a, b, out);
    case JO_NOTIN:
        if (contains(c, a, b, out)) return -1;
        *out = !*out;
        return 0;
    }
    if (jv_compare(c, a, b, &cmp)) return -1;
    *out = op == JO_LT ? cmp < 0 : op == JO_LE ? cmp <= 0 : op == JO_GT ? cmp > 0 : cmp >= 0;
    return 0;
}

/* ---------------- calls ---------------- */

typedef struct args {
    jv v[32];           /* positional values */
    int n;              /* their count */
    const char *kn[16]; /* keyword names */
    jv kv[16];          /* keyword values */
    int nk;             /* their count */
} args;

static int eval_args(jj_ctx *c, const frame *f, const jnode *n, args *a) {
    a->n = a->nk = 0;
    for (int i = 0; i < n->nkids; i++) {
        const jnode *k = n->kids[i];
        if (k->kind == JN_KWARG) {
            if (a->nk == 16) return jj_fail(c, "too many keyword arguments");
            a->kn[a->nk] = k->name;
            if (eval(c, f, k->a, &a->kv[a->nk++])) return -1;
        } else {
            if (a->n == 32) return jj_fail(c, "too many arguments");
            if (eval(c, f, k, &a->v[a->n++])) return -1;
        }
    }
    return 0;
}

/* Run body with output captured into a string value. */
static int capture(jj_ctx *c, frame *f, const jnode *body, jv *out) {
    jj_buf buf = {0}, *saved = c->out;
    c->out = &buf;
    int rc = exec(c, f, body);
    c->out = saved;
    if (rc >= 0 && buf.oom) rc = jj_fail(c, "template output too large");
    if (rc >= 0) *out = jv_buf(c, &buf);
    jj_buf_free(&buf);
    if (rc >= 0 && out->t != JV_STR) return oom(c);
    return rc < 0 ? rc : 0;
}

static int call_macro(jj_ctx *c, const jnode *m, args *a, jv *out) {
    if (a->n > m->nkids)
        return jj_fail(c, "macro '%s' takes not more than %d argument(s)", m->name, m->nkids);
    frame *f = frame_new(c, c->root);
    if (!f) return oom(c);
    for (int i = 0; i < m->nkids; i++) {
        const jnode *p = m->kids[i];
        jv v = jv_undef("macro parameter was not provided");
        bool given = i < a->n;
        if (given) v = a->v[i];
        for (int k = 0; k < a->nk; k++)
            if (!strcmp(a->kn[k], p->name)) v = a->kv[k], given = true;
        if (!given && p->a && eval(c, f, p->a, &v)) return -1;
        if (frame_set(c, f, p->name, v)) return -1;
    }
    for (int k = 0; k < a->nk; k++) {
        bool known = false;
        for (int i = 0; i < m->nkids; i++) known |= !strcmp(a->kn[k], m->kids[i]->name);
        if (!known)
            return jj_fail(c, "macro '%s' takes no keyword argument '%s'", m->name, a->kn[k]);
    }
    int saved_loops = c->loop_depth;
    c->loop_depth = 0;
    int rc = capture(c, f, m->d, out);
    c->loop_depth = saved_loops;
    return rc;
}

int jj_call_value(jj_ctx *c, jv callee, jv *av, int nargs, const char **kwn, jv *kwv, int nkw,
                  jv *out) {
    if (callee.t == JV_UNDEF) return undefined_error(c, callee);
    if (callee.t != JV_FUNC) return jj_fail(c, "'%s' object is not callable", jv_typename(callee));
    if (++c->steps > JJ_MAX_STEPS) return jj_fail(c, "template ran too long");
    if (callee.u.fn->kind != JJ_FN_MACRO)
        return jj_call_builtin(c, callee.u.fn, av, nargs, kwn, kwv, nkw, out);
    if (nargs > 32 || nkw > 16) return jj_fail(c, "too many arguments");
    args a = {.n = nargs, .nk = nkw};
    memcpy(a.v, av, sizeof(jv) * (size_t)nargs);
    memcpy(a.kn, kwn, sizeof(char *) * (size_t)nkw);
    memcpy(a.kv, kwv, sizeof(jv) * (size_t)nkw);
    return call_macro(c, callee.u.fn->macro, &a, out);
}

int jj_iterate(jj_ctx *c, jv v, jv **items, int64_t *n) {
    switch (v.t) {
    case JV_LIST:
        *items = v.u.l->v, *n = v.u.l->n;
        return 0;
    case JV_DICT:
        if (v.u.d->ns) break;
        *items = v.u.d->k, *n = v.u.d->n;
        return 0;
    case JV_UNDEF:
        *items = NULL, *n = 0;
        return 0;
    case JV_STR: {
        size_t len = jj_utf8_len(v.u.s.p, v.u.s.n);
        jv *chars = jj_alloc(&c->arena, sizeof(jv) * (len + 1));
        if (!chars) return oom(c);
        size_t k = 0;
        uint32_t cp;
        for (size_t i = 0; i < v.u.s.n; k++) {
            int w = jj_utf8_next(v.u.s.p + i, v.u.s.n - i, &cp);
            chars[k] = jv_str(v.u.s.p + i, (size_t)w);
            i += (size_t)w;
        }
        *items = chars, *n = (int64_t)len;
        return 0;
    }
    default:
        break;
    }
    return jj_fail(c, "'%s' object is not iterable", jv_typename(v));
}

/* ---------------- expressions ---------------- */

static int eval_filter_chain(jj_ctx *c, const frame *f, const jnode *n, jv base, jv *out) {
    jv v = base;
    if (n->a && eval(c, f, n->a, &v)) return -1;
    args a;
    if (eval_args(c, f, n, &a)) return -1;
    return jj_call_filter(c, n, v, a.v, a.n, a.kn, a.kv, a.nk, out);
}

static int eval_collection(jj_ctx *c, const frame *f, const jnode *n, jv *out) {
    if (n->kind == JN_DICT) {
        jj_dict *d = jj_dict_new(c, n->nkids);
        if (!d) return oom(c);
        for (int i = 0; i < n->nkids; i++) {
            jv k, v;
            if (eval(c, f, n->kids[i]->a, &k) || eval(c, f, n->kids[i]->b, &v) ||
                jj_dict_set(c, d, k, v))
                return -1;
        }
        *out = (jv){.t = JV_DICT, .u.d = d};
        return 0;
    }
    jj_list *l = jj_list_new(c, n->nkids);
    if (!l) return oom(c);
    l->tuple = n->kind == JN_TUPLE;
    for (int i = 0; i < n->nkids; i++)
        if (eval(c, f, n->kids[i], &l->v[l->n++])) return -1;
    *out = (jv){.t = JV_LIST, .u.l = l};
    return 0;
}

static int eval_compare(jj_ctx *c, const frame *f, const jnode *n, jv *out) {
    jv left;
    if (eval(c, f, n->a, &left)) return -1;
    bool r = true;
    for (int i = 0; i < n->nkids && r; i++) {
        jv right;
        if (eval(c, f, n->kids[i]->a, &right) || compare(c, n->kids[i]->op, left, right, &r))
            return -1;
        left = right;
    }
    *out = jv_bool(r);
    return 0;
}

static int eval_inner(jj_ctx *c, const frame *f, const jnode *n, jv *out) {
    jv a, b, s[3];
    args av;
    bool t;
    switch (n->kind) {
    case JN_LIT:
        *out = n->lit;
        return 0;
    case JN_NAME:
        return lookup(c, f, n->name, out);
    case JN_ATTR:
        return eval(c, f, n->a, &a) || jj_getattr(c, a, n->name, strlen(n->name), out) ? -1 : 0;
    case JN_ITEM:
        return eval(c, f, n->a, &a) || eval(c, f, n->b, &b) || jj_getitem(c, a, b, out);
    case JN_SLICE: {
        const jnode *parts[3] = {n->b, n->c, n->d};
        /* a slice inside a tuple subscript (x[1:2, 3]) has no object of its own; jinja2 fails
         * there too (a tuple of slices is no valid index for a string, list or dict) */
        if (!n->a) return jj_fail(c, "a slice inside a tuple is not a valid subscript");
        if (eval(c, f, n->a, &a)) return -1;
        for (int i = 0; i < 3; i++) {
            s[i] = jv_none();
            if (parts[i] && eval(c, f, parts[i], &s[i])) return -1;
        }
        return jj_slice(c, a, s[0], s[1], s[2], out);
    }
    case JN_CALL:
        if (eval(c, f, n->a, &a) || eval_args(c, f, n, &av)) return -1;
        return jj_call_value(c, a, av.v, av.n, av.kn, av.kv, av.nk, out);
    case JN_FILTER:
        return eval_filter_chain(c, f, n, jv_undef("no value to filter"), out);
    case JN_TEST:
        if (eval(c, f, n->a, &a) || eval_args(c, f, n, &av) ||
            jj_call_test(c, n->name, a, av.v, av.n, &t))
            return -1;
        *out = jv_bool(t != n->neg);
        return 0;
    case JN_NEG:
    case JN_POS:
        if (eval(c, f, n->a, &a)) return -1;
        if (a.t == JV_UNDEF) return undefined_error(c, a);
        if (!jv_isnum(a)) return jj_fail(c, "bad operand type for unary -: '%s'", jv_typename(a));
        if (n->kind == JN_POS)
            *out = a.t == JV_BOOL ? jv_int(a.u.b) : a;
        else
            *out = a.t == JV_FLOAT ? jv_float(-a.u.f) : jv_int(-as_i(a));
        return 0;
    case JN_NOT:
        if (eval(c, f, n->a, &a)) return -1;
        *out = jv_bool(!jv_truthy(a));
        return 0;
    case JN_AND:
    case JN_OR:
        if (eval(c, f, n->a, &a)) return -1;
        if (jv_truthy(a) == (n->kind == JN_OR)) {
            *out = a;
            return 0;
        }
        return eval(c, f, n->b, out);
    case JN_BINOP:
        return eval(c, f, n->a, &a) || eval(c, f, n->b, &b) || binop(c, n->op, a, b, out);
    case JN_COMPARE:
        return eval_compare(c, f, n, out);
    case JN_COND:
        if (eval(c, f, n->a, &a)) return -1;
        if (jv_truthy(a)) return eval(c, f, n->b, out);
        if (n->c) return eval(c, f, n->c, out);
        *out = jv_undef("the inline if expression evaluated to false and had no else clause");
        return 0;
    case JN_LIST:
    case JN_TUPLE:
    case JN_DICT:
        return eval_collection(c, f, n, out);
    default:
        return jj_fail(c, "unexpected node in an expression");
    }
}

static int eval(jj_ctx *c, const frame *f, const jnode *n, jv *out) {
    if (c->failed) return -1;
    if (++c->depth > JJ_MAX_DEPTH) {
        c->depth--;
        return jj_fail(c, "template recursion too deep");
    }
    int saved_line = c->line;
    c->line = n->line;
    int rc = eval_inner(c, f, n, out);
    c->depth--;
    if (!rc) c->line = saved_line;
    return rc ? -1 : 0;
}

/* ---------------- statements ---------------- */

static int assign(jj_ctx *c, frame *f, const jnode *target, jv v) {
    if (target->kind == JN_NAME) return frame_set(c, f, target->name, v);
    if (target->kind == JN_ATTR) { /* {% set ns.attr = v %} */
        jv ns;
        if (lookup(c, f, target->a->name, &ns)) return -1;
        if (ns.t != JV_DICT || !ns.u.d->ns)
            return jj_fail(c, "cannot assign attribute on non-namespace object");
        return jj_dict_set(c, ns.u.d, jv_str(target->name, strlen(target->name)), v);
    }
    jv *items;
    int64_t n;
    if (v.t == JV_UNDEF) return undefined_error(c, v);
    if (jj_iterate(c, v, &items, &n)) return -1;
    if (n != target->nkids)
        return jj_fail(c, "cannot unpack %lld values into %d names", (long long)n, target->nkids);
    for (int i = 0; i < target->nkids; i++)
        if (frame_set(c, f, target->kids[i]->name, items[i])) return -1;
    return 0;
}

static int exec_for(jj_ctx *c, frame *f, const jnode *n) {
    jv seq, *items;
    int64_t count;
    if (eval(c, f, n->b, &seq) || jj_iterate(c, seq, &items, &count)) return -1;
    if (n->c) { /* {% for x in xs if cond %}: filter first, loop.length counts what is kept */
        jv *kept = jj_alloc(&c->arena, sizeof(jv) * (size_t)(count + 1));
        int64_t k = 0;
        if (!kept) return oom(c);
        for (int64_t i = 0; i < count; i++) {
            frame *g = frame_new(c, f);
            jv keep;
            if (!g || assign(c, g, n->a, items[i]) || eval(c, g, n->c, &keep)) return -1;
            if (jv_truthy(keep)) kept[k++] = items[i];
        }
        items = kept, count = k;
    }
    if (!count) {
        frame *g = n->e ? frame_new(c, f) : NULL;
        if (n->e && !g) return oom(c);
        return n->e ? exec(c, g, n->e) : 0;
    }
    jj_loop *lp = jj_alloc(&c->arena, sizeof *lp);
    if (!lp) return oom(c);
    lp->items = items, lp->n = count;
    lp->depth = 1; /* jinja2: only recursive loops (unsupported) go deeper */
    c->loop_depth++;
    int rc = 0;
    for (int64_t i = 0; i < count; i++) {
        if (++c->steps > JJ_MAX_STEPS) {
            rc = jj_fail(c, "template ran too long");
            break;
        }
        lp->i = i;
        frame *g = frame_new(c, f);
        if (!g || assign(c, g, n->a, items[i]) ||
            frame_set(c, g, "loop", (jv){.t = JV_LOOP, .u.lp = lp})) {
            rc = c->failed ? -1 : oom(c);
            break;
        }
        rc = exec(c, g, n->d);
        if (rc < 0 || rc == JJ_BREAK) break;
        rc = 0;
    }
    c->loop_depth--;
    return rc < 0 ? rc : 0;
}

static int exec_inner(jj_ctx *c, frame *f, const jnode *n) {
    jv v;
    switch (n->kind) {
    case JN_BODY:
        for (int i = 0; i < n->nkids; i++) {
            int rc = exec(c, f, n->kids[i]);
            if (rc) return rc;
        }
        return 0;
    case JN_TEXT:
        jj_put(c->out, n->lit.u.s.p, n->lit.u.s.n);
        return 0;
    case JN_OUTPUT:
        if (eval(c, f, n->a, &v)) return -1;
        jv_to_str(v, c->out);
        return 0;
    case JN_IF:
        if (eval(c, f, n->a, &v)) return -1;
        if (jv_truthy(v)) return exec(c, f, n->b);
        return n->c ? exec(c, f, n->c) : 0;
    case JN_FOR:
        return exec_for(c, f, n);
    case JN_SET:
        return eval(c, f, n->b, &v) || assign(c, f, n->a, v) ? -1 : 0;
    case JN_SETBLOCK:
    case JN_FILTERBLOCK:
        if (capture(c, f, n->d, &v)) return -1;
        if (n->b && eval_filter_chain(c, f, n->b, v, &v)) return -1;
        if (n->kind == JN_SETBLOCK) return assign(c, f, n->a, v);
        jv_to_str(v, c->out);
        return 0;
    case JN_MACRO: {
        jj_func *fn = jj_alloc(&c->arena, sizeof *fn);
        if (!fn) return oom(c);
        fn->kind = JJ_FN_MACRO, fn->name = n->name, fn->macro = n;
        return frame_set(c, f, n->name, (jv){.t = JV_FUNC, .u.fn = fn});
    }
    case JN_BREAK:
    case JN_CONTINUE:
        if (!c->loop_depth)
            return jj_fail(c, "'%s' outside of a loop", n->kind == JN_BREAK ? "break" : "continue");
        return n->kind == JN_BREAK ? JJ_BREAK : JJ_CONTINUE;
    default:
        return jj_fail(c, "unexpected node in a statement");
    }
}

static int exec(jj_ctx *c, frame *f, const jnode *n) {
    if (c->failed) return -1;
    if (c->out->oom) return jj_fail(c, "template output too large");
    if (++c->depth > JJ_MAX_DEPTH) {
        c->depth--;
        return jj_fail(c, "template recursion too deep");
    }
    c->line = n->line;
    int rc = exec_inner(c, f, n);
    c->depth--;
    return rc;
}

/* ---------------- entry points ---------------- */

int chat_jinja_compile(const char *src, size_t len, chat_jinja **out, rs_err *e) {
    *out = NULL;
    chat_jinja *t = calloc(1, sizeof *t);
    if (!t) return rs_errf(e, RS_ENOMEM, "out of memory compiling the template");
    int rc = jj_parse(src, len, &t->arena, &t->root, e);
    if (rc) {
        chat_jinja_free(t);
        return rc;
    }
    *out = t;
    return 0;
}

void chat_jinja_free(chat_jinja *t) {
    if (!t) return;
    jj_arena_free(&t->arena);
    free(t);
}

int chat_jinja_render(const chat_jinja *t, const cJSON *vars, char **out, size_t *out_len,
                      rs_err *e) {
    jj_buf buf = {0};
    jj_ctx c = {.arena = {.limit = JJ_MAX_ARENA}, .e = e, .out = &buf, .line = 1};
    int rc = 0;
    *out = NULL;
    if (!(c.root = frame_new(&c, NULL))) rc = oom(&c);
    for (const cJSON *v = vars ? vars->child : NULL; v && !rc; v = v->next) {
        jv val;
        rc = jv_from_json(&c, v, &val) || frame_set(&c, c.root, v->string ? v->string : "", val);
    }
    if (!rc) rc = exec(&c, c.root, t->root) < 0;
    if (!rc && buf.oom) rc = jj_fail(&c, "template output too large");
    jj_arena_free(&c.arena);
    if (rc) {
        jj_buf_free(&buf);
        return e && e->code ? e->code : RS_EINVAL;
    }
    jj_put(&buf, "", 0);
    if (buf.oom || !buf.p) {
        jj_buf_free(&buf);
        return rs_errf(e, RS_ENOMEM, "out of memory rendering the template");
    }
    *out = buf.p;
    if (out_len) *out_len = buf.n;
    return 0;
}
