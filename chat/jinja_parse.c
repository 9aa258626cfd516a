/*
 * jinja_parse.c — the Jinja parser: tokens to an AST, following jinja2 3.1's parser.py rule for
 * rule (operator precedence, where filters and tests bind, tuples, slices, call arguments), so
 * that every template jinja2 accepts parses the same way here.
 *
 * Node fields per kind (jnode in jinja_int.h):
 *   BODY kids=statements          TEXT lit              OUTPUT a=expr
 *   IF a=test b=body c=else(BODY or IF for elif)       FOR a=target b=iter c=filter d=body e=else
 *   SET a=target (NAME, TUPLE of NAMEs, or ATTR for {% set ns.x = ... %}) b=value
 *   SETBLOCK a=target b=filter chain (or NULL) d=body  MACRO name kids=params(NAME, a=default)
 * d=body FILTERBLOCK b=filter chain d=body                  BREAK / CONTINUE LIT lit  NAME name
 * ATTR a.name  ITEM a[b]  SLICE a[b:c:d]  CALL a(kids: exprs / KWARG) KWARG name=a  FILTER
 * a|name(kids)  TEST a is [not] name(kids)  NEG/POS/NOT a AND/OR a b  BINOP op a b  COMPARE a
 * kids=operands(op, a)  COND b if a else c LIST/TUPLE kids  DICT kids=PAIR(a: b)
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chat/jinja_lex.h"

typedef struct parser {
    jj_token *t; /* tokens */
    int i;       /* the current token */
    jj_arena *a; /* nodes go here */
    rs_err *e;   /* the first error */
    bool failed; /* an error was reported: unwind */
    int depth;   /* recursion depth of expressions and statements */
} parser;

static jnode *fail(parser *P, const char *fmt, const char *arg) {
    if (!P->failed) {
        char msg[256];
        snprintf(msg, sizeof msg, fmt, arg);
        rs_errf(P->e, RS_EINVAL, "template syntax error, line %d: %s", P->t[P->i].line, msg);
    }
    P->failed = true;
    return NULL;
}

static jj_token *cur(parser *P) {
    return &P->t[P->i];
}
static jj_token *peek(parser *P) {
    return &P->t[P->i + (P->t[P->i].type != JJ_TK_EOF)];
}
static void advance(parser *P) {
    if (P->t[P->i].type != JJ_TK_EOF) P->i++;
}

static bool tok_is_op(const jj_token *t, const char *op) {
    return t->type == JJ_TK_OP && t->n == strlen(op) && !memcmp(t->p, op, t->n);
}
static bool tok_is_name(const jj_token *t, const char *name) {
    return t->type == JJ_TK_NAME && !strcmp(t->val.u.s.p, name);
}
static bool is_op(parser *P, const char *op) {
    return tok_is_op(cur(P), op);
}
static bool is_name(parser *P, const char *name) {
    return tok_is_name(cur(P), name);
}
static bool accept_op(parser *P, const char *op) {
    if (!is_op(P, op)) return false;
    advance(P);
    return true;
}
static bool accept_name(parser *P, const char *name) {
    if (!is_name(P, name)) return false;
    advance(P);
    return true;
}

static const char *describe(parser *P) {
    jj_token *t = cur(P);
    switch (t->type) {
    case JJ_TK_EOF:
        return "end of template";
    case JJ_TK_VAR_END:
        return "end of print statement";
    case JJ_TK_BLOCK_END:
        return "end of statement block";
    case JJ_TK_DATA:
        return "template data";
    default:
        break;
    }
    static _Thread_local char buf[64];
    snprintf(buf, sizeof buf, "%.*s", (int)(t->n < 40 ? t->n : 40), t->p);
    return buf;
}

static bool expect_op(parser *P, const char *op) {
    if (accept_op(P, op)) return true;
    char msg[96];
    snprintf(msg, sizeof msg, "expected '%s', got '%%s'", op);
    fail(P, msg, describe(P));
    return false;
}

static bool expect_block_end(parser *P) {
    if (cur(P)->type == JJ_TK_BLOCK_END) {
        advance(P);
        return true;
    }
    fail(P, "expected end of statement block, got '%s'", describe(P));
    return false;
}

static const char *expect_ident(parser *P) {
    if (cur(P)->type != JJ_TK_NAME) return fail(P, "expected a name, got '%s'", describe(P)), NULL;
    const char *s = cur(P)->val.u.s.p;
    advance(P);
    return s;
}

static jnode *mk(parser *P, int kind) {
    jnode *n = jj_alloc(P->a, sizeof *n);
    if (!n) return fail(P, "%s", "out of memory parsing the template");
    n->kind = kind;
    n->line = cur(P)->line;
    return n;
}

static jnode *mk1(parser *P, int kind, jnode *a) {
    if (!a) return NULL;
    jnode *n = mk(P, kind);
    if (n) n->a = a;
    return n;
}

static jnode *mk2(parser *P, int kind, jnode *a, jnode *b) {
    if (!a || !b) return NULL;
    jnode *n = mk(P, kind);
    if (n) n->a = a, n->b = b;
    return n;
}

static bool add_kid(parser *P, jnode *n, jnode *kid) {
    if (!kid) return false;
    if ((n->nkids & (n->nkids - 1)) == 0) { /* grow at powers of two */
        int cap = n->nkids ? n->nkids * 2 : 1;
        jnode **nv = jj_alloc(P->a, sizeof *nv * (size_t)cap);
        if (!nv) return fail(P, "%s", "out of memory parsing the template"), false;
        if (n->nkids) memcpy(nv, n->kids, sizeof *nv * (size_t)n->nkids);
        n->kids = nv;
    }
    n->kids[n->nkids++] = kid;
    return true;
}

static bool enter(parser *P) {
    if (++P->depth > JJ_MAX_DEPTH) return fail(P, "%s", "template nested too deeply"), false;
    return true;
}

/* ---------------- expressions ---------------- */

static jnode *parse_expression(parser *P, bool with_condexpr);
static jnode *parse_tuple(parser *P, bool simplified, bool with_condexpr, const char *extra_end,
                          bool explicit_parens);
static jnode *parse_unary(parser *P, bool with_filter);
static jnode *parse_primary(parser *P);
static jnode *parse_postfix(parser *P, jnode *node);

static bool parse_call_args(parser *P, jnode *call) {
    if (!expect_op(P, "(")) return false;
    bool need_comma = false, seen_kw = false;
    while (!is_op(P, ")")) {
        if (P->failed) return false;
        if (need_comma) {
            if (!expect_op(P, ",")) return false;
            if (is_op(P, ")")) break;
        }
        if (is_op(P, "*") || is_op(P, "**"))
            return fail(P, "%s", "*args / **kwargs in calls are not supported"), false;
        if (cur(P)->type == JJ_TK_NAME && tok_is_op(peek(P), "=")) {
            jnode *kw = mk(P, JN_KWARG);
            if (!kw) return false;
            kw->name = expect_ident(P);
            advance(P);
            kw->a = parse_expression(P, true);
            if (!add_kid(P, call, kw->a ? kw : NULL)) return false;
            seen_kw = true;
        } else {
            if (seen_kw) return fail(P, "%s", "invalid syntax for function call expression"), false;
            if (!add_kid(P, call, parse_expression(P, true))) return false;
        }
        need_comma = true;
    }
    return expect_op(P, ")");
}

static jnode *parse_call(parser *P, jnode *callee) {
    jnode *call = mk(P, JN_CALL);
    if (!call) return NULL;
    call->a = callee;
    return parse_call_args(P, call) ? call : NULL;
}

static jnode *parse_filter(parser *P, jnode *node, bool start_inline) {
    while (is_op(P, "|") || start_inline) {
        if (!start_inline) advance(P);
        start_inline = false;
        jnode *f = mk(P, JN_FILTER);
        if (!f || !(f->name = expect_ident(P))) return NULL;
        f->a = node;
        if (is_op(P, "(") && !parse_call_args(P, f)) return NULL;
        node = f;
    }
    return node;
}

static jnode *parse_test(parser *P, jnode *node) {
    advance(P); /* is */
    jnode *t = mk(P, JN_TEST);
    if (!t) return NULL;
    t->neg = accept_name(P, "not");
    if (!(t->name = expect_ident(P))) return NULL;
    t->a = node;
    jj_token *c = cur(P);
    if (is_op(P, "(")) {
        if (!parse_call_args(P, t)) return NULL;
    } else if ((c->type == JJ_TK_NAME || c->type == JJ_TK_STRING || c->type == JJ_TK_INT ||
                c->type == JJ_TK_FLOAT || is_op(P, "[") || is_op(P, "{")) &&
               !is_name(P, "else") && !is_name(P, "or") && !is_name(P, "and")) {
        if (is_name(P, "is")) return fail(P, "%s", "You cannot chain multiple tests with is");
        if (!add_kid(P, t, parse_postfix(P, parse_primary(P)))) return NULL;
    }
    return t;
}

static jnode *parse_filter_expr(parser *P, jnode *node) {
    while (node && !P->failed) {
        if (is_op(P, "|"))
            node = parse_filter(P, node, false);
        else if (is_name(P, "is"))
            node = parse_test(P, node);
        else if (is_op(P, "("))
            node = parse_call(P, node);
        else
            break;
    }
    return node;
}

/* One subscript: an expression or a slice [a:b:c]. */
static jnode *parse_subscribed(parser *P) {
    jnode *first = NULL;
    if (!is_op(P, ":")) {
        first = parse_expression(P, true);
        if (!first || !is_op(P, ":")) return first;
    }
    jnode *s = mk(P, JN_SLICE);
    if (!s) return NULL;
    advance(P); /* : */
    s->b = first;
    if (!is_op(P, ":") && !is_op(P, "]") && !is_op(P, ",") && !(s->c = parse_expression(P, true)))
        return NULL;
    if (accept_op(P, ":") && !is_op(P, "]") && !is_op(P, ",") &&
        !(s->d = parse_expression(P, true)))
        return NULL;
    return s;
}

static jnode *parse_subscript(parser *P, jnode *node) {
    if (accept_op(P, ".")) {
        jj_token *t = cur(P);
        if (t->type == JJ_TK_NAME) {
            jnode *n = mk(P, JN_ATTR);
            if (!n) return NULL;
            n->a = node, n->name = t->val.u.s.p;
            advance(P);
            return n;
        }
        if (t->type != JJ_TK_INT) return fail(P, "expected name or number, got '%s'", describe(P));
        jnode *k = mk(P, JN_LIT);
        if (!k) return NULL;
        k->lit = t->val;
        advance(P);
        return mk2(P, JN_ITEM, node, k);
    }
    advance(P); /* [ */
    jnode *tuple = mk(P, JN_TUPLE);
    if (!tuple) return NULL;
    while (!is_op(P, "]")) {
        if (P->failed) return NULL;
        if (tuple->nkids && !expect_op(P, ",")) return NULL;
        if (!add_kid(P, tuple, parse_subscribed(P))) return NULL;
    }
    if (!expect_op(P, "]")) return NULL;
    if (!tuple->nkids) return fail(P, "%s", "expected an expression inside []");
    jnode *key = tuple->nkids == 1 ? tuple->kids[0] : tuple;
    if (key->kind == JN_SLICE) {
        key->a = node;
        return key;
    }
    return mk2(P, JN_ITEM, node, key);
}

static jnode *parse_postfix(parser *P, jnode *node) {
    while (node && !P->failed) {
        if (is_op(P, ".") || is_op(P, "["))
            node = parse_subscript(P, node);
        else if (is_op(P, "("))
            node = parse_call(P, node);
        else
            break;
    }
    return node;
}

static jnode *parse_list_or_dict(parser *P, bool dict) {
    jnode *n = mk(P, dict ? JN_DICT : JN_LIST);
    if (!n) return NULL;
    advance(P); /* [ or { */
    const char *close = dict ? "}" : "]";
    while (!is_op(P, close)) {
        if (P->failed) return NULL;
        if (n->nkids) {
            if (!expect_op(P, ",")) return NULL;
            if (is_op(P, close)) break;
        }
        jnode *item = parse_expression(P, true);
        if (dict) {
            if (!item || !expect_op(P, ":")) return NULL;
            item = mk2(P, JN_PAIR, item, parse_expression(P, true));
        }
        if (!add_kid(P, n, item)) return NULL;
    }
    return expect_op(P, close) ? n : NULL;
}

static jnode *parse_primary(parser *P) {
    jj_token *t = cur(P);
    jnode *n;
    if (t->type == JJ_TK_NAME) {
        const char *s = t->val.u.s.p;
        if (!strcmp(s, "true") || !strcmp(s, "True") || !strcmp(s, "false") ||
            !strcmp(s, "False")) {
            if ((n = mk(P, JN_LIT))) n->lit = jv_bool(s[0] == 't' || s[0] == 'T');
        } else if (!strcmp(s, "none") || !strcmp(s, "None")) {
            if ((n = mk(P, JN_LIT))) n->lit = jv_none();
        } else if ((n = mk(P, JN_NAME)))
            n->name = s;
        advance(P);
        return n;
    }
    if (t->type == JJ_TK_STRING) { /* adjacent literals concatenate: "a" "b" */
        if (!(n = mk(P, JN_LIT))) return NULL;
        n->lit = t->val;
        for (advance(P); cur(P)->type == JJ_TK_STRING; advance(P)) {
            jv b = cur(P)->val;
            char *s = jj_alloc(P->a, n->lit.u.s.n + b.u.s.n + 1);
            if (!s) return fail(P, "%s", "out of memory parsing the template");
            memcpy(s, n->lit.u.s.p, n->lit.u.s.n);
            memcpy(s + n->lit.u.s.n, b.u.s.p, b.u.s.n);
            n->lit = jv_str(s, n->lit.u.s.n + b.u.s.n);
        }
        return n;
    }
    if (t->type == JJ_TK_INT || t->type == JJ_TK_FLOAT) {
        if ((n = mk(P, JN_LIT))) n->lit = t->val;
        advance(P);
        return n;
    }
    if (accept_op(P, "(")) {
        n = parse_tuple(P, false, true, NULL, true);
        return n && expect_op(P, ")") ? n : NULL;
    }
    if (is_op(P, "[")) return parse_list_or_dict(P, false);
    if (is_op(P, "{")) return parse_list_or_dict(P, true);
    return fail(P, "unexpected '%s'", describe(P));
}

static jnode *parse_unary(parser *P, bool with_filter) {
    if (!enter(P)) return NULL;
    jnode *node;
    if (is_op(P, "-") || is_op(P, "+")) {
        int kind = is_op(P, "-") ? JN_NEG : JN_POS;
        advance(P);
        node = mk1(P, kind, parse_unary(P, false));
    } else
        node = parse_primary(P);
    node = parse_postfix(P, node);
    if (with_filter) node = parse_filter_expr(P, node);
    P->depth--;
    return node;
}

static int binop_of(parser *P, const char *const *ops, const int *codes, int n) {
    for (int i = 0; i < n && ops[i]; i++)
        if (is_op(P, ops[i])) return codes[i];
    return 0;
}

/* jinja2's parse_math1 / parse_concat / parse_math2 / parse_pow: left-associative levels from
 * the loosest; below the last comes parse_unary. */
static const struct {
    const char *ops[4]; /* operator tokens of the level */
    int codes[4];       /* their JO_* codes */
} LEVELS[] = {
    {{"+", "-"}, {JO_ADD, JO_SUB}},
    {{"~"}, {JO_CONCAT}},
    {{"*", "/", "//", "%"}, {JO_MUL, JO_DIV, JO_FLOORDIV, JO_MOD}},
    {{"**"}, {JO_POW}},
};

static jnode *parse_binary(parser *P, int level) {
    if (level == (int)(sizeof LEVELS / sizeof LEVELS[0])) return parse_unary(P, true);
    jnode *left = parse_binary(P, level + 1);
    for (int op; left && (op = binop_of(P, LEVELS[level].ops, LEVELS[level].codes, 4));) {
        advance(P);
        if ((left = mk2(P, JN_BINOP, left, parse_binary(P, level + 1)))) left->op = op;
    }
    return left;
}

static jnode *parse_compare(parser *P) {
    static const char *const ops[] = {"==", "!=", "<", "<=", ">", ">="};
    static const int codes[] = {JO_EQ, JO_NE, JO_LT, JO_LE, JO_GT, JO_GE};
    jnode *expr = parse_binary(P, 0), *cmp = NULL;
    while (expr && !P->failed) {
        int op = binop_of(P, ops, codes, 6);
        if (op)
            advance(P);
        else if (accept_name(P, "in"))
            op = JO_IN;
        else if (is_name(P, "not") && tok_is_name(peek(P), "in")) {
            advance(P), advance(P);
            op = JO_NOTIN;
        } else
            break;
        if (!cmp && !(cmp = mk1(P, JN_COMPARE, expr))) return NULL;
        jnode *operand = mk(P, JN_BINOP);
        if (!operand) return NULL;
        operand->op = op;
        if (!add_kid(P, cmp, (operand->a = parse_binary(P, 0)) ? operand : NULL)) return NULL;
    }
    return cmp ? cmp : expr;
}

static jnode *parse_not(parser *P) {
    if (!is_name(P, "not")) return parse_compare(P);
    advance(P);
    if (!enter(P)) return NULL;
    jnode *n = mk1(P, JN_NOT, parse_not(P));
    P->depth--;
    return n;
}

static jnode *parse_and(parser *P) {
    jnode *left = parse_not(P);
    while (left && accept_name(P, "and")) left = mk2(P, JN_AND, left, parse_not(P));
    return left;
}

static jnode *parse_or(parser *P) {
    jnode *left = parse_and(P);
    while (left && accept_name(P, "or")) left = mk2(P, JN_OR, left, parse_and(P));
    return left;
}

static jnode *parse_condexpr(parser *P) {
    if (!enter(P)) return NULL;
    jnode *expr = parse_or(P);
    while (expr && accept_name(P, "if")) {
        jnode *c = mk(P, JN_COND);
        if (!c) return NULL;
        c->b = expr;
        if (!(c->a = parse_or(P))) return NULL;
        if (accept_name(P, "else") && !(c->c = parse_condexpr(P))) return NULL;
        expr = c;
    }
    P->depth--;
    return expr;
}

static jnode *parse_expression(parser *P, bool with_condexpr) {
    return with_condexpr ? parse_condexpr(P) : parse_or(P);
}

static bool tuple_end(parser *P, const char *extra_end) {
    int ty = cur(P)->type;
    return ty == JJ_TK_VAR_END || ty == JJ_TK_BLOCK_END || ty == JJ_TK_EOF || is_op(P, ")") ||
           (extra_end && is_name(P, extra_end));
}

static jnode *parse_tuple(parser *P, bool simplified, bool with_condexpr, const char *extra_end,
                          bool explicit_parens) {
    jnode *tuple = mk(P, JN_TUPLE);
    if (!tuple) return NULL;
    bool is_tuple = false;
    for (;;) {
        if (tuple->nkids && !expect_op(P, ",")) return NULL;
        if (tuple_end(P, extra_end)) break;
        jnode *item = simplified ? parse_primary(P) : parse_expression(P, with_condexpr);
        if (!add_kid(P, tuple, item)) return NULL;
        if (!is_op(P, ",")) break;
        is_tuple = true;
    }
    if (is_tuple) return tuple;
    if (tuple->nkids) return tuple->kids[0];
    if (!explicit_parens) return fail(P, "Expected an expression, got '%s'", describe(P));
    return tuple;
}

/* ---------------- statements ---------------- */

static jnode *subparse(parser *P, const char *const *end_names);

/* Expect %}, parse a body up to {% one-of-end_names, leave the end name current. */
static jnode *parse_statements(parser *P, const char *const *end_names, bool drop_needle) {
    if (!expect_block_end(P)) return NULL;
    jnode *body = subparse(P, end_names);
    if (body && cur(P)->type == JJ_TK_EOF) {
        char msg[128];
        snprintf(msg, sizeof msg, "Unexpected end of template. Expected '%s'.", end_names[0]);
        return fail(P, "%s", msg);
    }
    if (body && drop_needle) advance(P);
    return body;
}

static bool valid_target(jnode *t) {
    if (t->kind == JN_NAME) return true;
    if (t->kind != JN_TUPLE) return false;
    for (int i = 0; i < t->nkids; i++)
        if (t->kids[i]->kind != JN_NAME) return false;
    return true;
}

static jnode *parse_target(parser *P, const char *extra_end, bool with_namespace) {
    jnode *t;
    if (with_namespace && cur(P)->type == JJ_TK_NAME && tok_is_op(peek(P), ".")) {
        if (!(t = mk(P, JN_ATTR))) return NULL;
        jnode *ns = mk(P, JN_NAME);
        if (!ns || !(ns->name = expect_ident(P))) return NULL;
        advance(P); /* . */
        t->a = ns;
        if (!(t->name = expect_ident(P))) return NULL;
        return t;
    }
    if (!(t = parse_tuple(P, true, false, extra_end, false))) return NULL;
    if (!valid_target(t)) return fail(P, "%s", "can't assign to this expression");
    return t;
}

static jnode *parse_for(parser *P) {
    static const char *const ends1[] = {"endfor", "else", NULL}, *const ends2[] = {"endfor", NULL};
    jnode *n = mk(P, JN_FOR);
    if (!n || !(n->a = parse_target(P, "in", false))) return NULL;
    if (!accept_name(P, "in")) return fail(P, "expected 'in', got '%s'", describe(P));
    if (!(n->b = parse_tuple(P, false, false, "recursive", false))) return NULL;
    if (accept_name(P, "if") && !(n->c = parse_expression(P, true))) return NULL;
    if (is_name(P, "recursive")) return fail(P, "%s", "recursive loops are not supported");
    if (!(n->d = parse_statements(P, ends1, false))) return NULL;
    bool has_else = is_name(P, "else");
    advance(P);
    if (has_else && !(n->e = parse_statements(P, ends2, true))) return NULL;
    return n;
}

static jnode *parse_if(parser *P) {
    static const char *const ends1[] = {"endif", "elif", "else", NULL};
    static const char *const ends2[] = {"endif", NULL};
    jnode *n = mk(P, JN_IF);
    if (!n || !(n->a = parse_tuple(P, false, false, NULL, false))) return NULL;
    if (!(n->b = parse_statements(P, ends1, false))) return NULL;
    if (accept_name(P, "elif")) {
        if (!enter(P)) return NULL;
        n->c = parse_if(P); /* the elif chain ends on the same endif */
        P->depth--;
        return n->c ? n : NULL;
    }
    if (accept_name(P, "else")) {
        if (!(n->c = parse_statements(P, ends2, true))) return NULL;
    } else
        advance(P); /* endif */
    return n;
}

static jnode *parse_set(parser *P) {
    static const char *const ends[] = {"endset", NULL};
    jnode *target = parse_target(P, NULL, true);
    if (!target) return NULL;
    if (accept_op(P, "=")) {
        jnode *n = mk2(P, JN_SET, target, parse_tuple(P, false, true, NULL, false));
        return n;
    }
    jnode *n = mk(P, JN_SETBLOCK);
    if (!n) return NULL;
    n->a = target;
    if (is_op(P, "|") && !(n->b = parse_filter(P, NULL, false))) return NULL;
    return (n->d = parse_statements(P, ends, true)) ? n : NULL;
}

static jnode *parse_macro(parser *P) {
    static const char *const ends[] = {"endmacro", NULL};
    jnode *n = mk(P, JN_MACRO);
    if (!n || !(n->name = expect_ident(P)) || !expect_op(P, "(")) return NULL;
    while (!is_op(P, ")")) {
        if (n->nkids && !expect_op(P, ",")) return NULL;
        jnode *param = mk(P, JN_NAME);
        if (!param || !(param->name = expect_ident(P))) return NULL;
        if (accept_op(P, "=") && !(param->a = parse_expression(P, true))) return NULL;
        if (!add_kid(P, n, param)) return NULL;
    }
    advance(P);
    return (n->d = parse_statements(P, ends, true)) ? n : NULL;
}

static jnode *parse_statement(parser *P) {
    static const char *const end_gen[] = {"endgeneration", NULL};
    static const char *const end_filter[] = {"endfilter", NULL};
    if (cur(P)->type != JJ_TK_NAME) return fail(P, "%s", "tag name expected");
    const char *kw = cur(P)->val.u.s.p;
    advance(P);
    if (!strcmp(kw, "for")) return parse_for(P);
    if (!strcmp(kw, "if")) return parse_if(P);
    if (!strcmp(kw, "set")) return parse_set(P);
    if (!strcmp(kw, "macro")) return parse_macro(P);
    if (!strcmp(kw, "break")) return mk(P, JN_BREAK);
    if (!strcmp(kw, "continue")) return mk(P, JN_CONTINUE);
    if (!strcmp(kw, "print")) return mk1(P, JN_OUTPUT, parse_tuple(P, false, true, NULL, false));
    if (!strcmp(kw, "generation")) return parse_statements(P, end_gen, true); /* transformers' */
    if (!strcmp(kw, "filter")) {
        jnode *n = mk(P, JN_FILTERBLOCK);
        if (!n || !(n->b = parse_filter(P, NULL, true))) return NULL;
        return (n->d = parse_statements(P, end_filter, true)) ? n : NULL;
    }
    P->i--;
    return fail(P, "Encountered unknown or unsupported tag '%s'.", kw);
}

static jnode *subparse(parser *P, const char *const *end_names) {
    if (!enter(P)) return NULL;
    jnode *body = mk(P, JN_BODY);
    while (body && !P->failed && cur(P)->type != JJ_TK_EOF) {
        jj_token *t = cur(P);
        if (t->type == JJ_TK_DATA) {
            jnode *n = mk(P, JN_TEXT);
            if (n) n->lit = t->val;
            advance(P);
            add_kid(P, body, n);
        } else if (t->type == JJ_TK_VAR_BEGIN) {
            advance(P);
            jnode *n = mk1(P, JN_OUTPUT, parse_tuple(P, false, true, NULL, false));
            if (!add_kid(P, body, n)) break;
            if (cur(P)->type != JJ_TK_VAR_END) {
                fail(P, "expected end of print statement, got '%s'", describe(P));
                break;
            }
            advance(P);
        } else if (t->type == JJ_TK_BLOCK_BEGIN) {
            advance(P);
            for (int i = 0; end_names && end_names[i]; i++)
                if (is_name(P, end_names[i])) {
                    P->depth--;
                    return body;
                }
            if (!add_kid(P, body, parse_statement(P)) || !expect_block_end(P)) break;
        } else {
            fail(P, "unexpected '%s'", describe(P));
        }
    }
    P->depth--;
    if (P->failed) return NULL;
    if (end_names && cur(P)->type == JJ_TK_EOF) return body; /* caller reports the missing end */
    return body;
}

int jj_parse(const char *src, size_t len, jj_arena *a, jnode **root, rs_err *e) {
    jj_tokens toks = {0};
    int rc = jj_lex(src, len, a, &toks, e);
    if (rc) {
        free(toks.v);
        return rc < 0 ? rc : RS_EINVAL;
    }
    parser P = {.t = toks.v, .a = a, .e = e};
    jnode *body = subparse(&P, NULL);
    if (body && cur(&P)->type != JJ_TK_EOF) body = fail(&P, "unexpected '%s'", describe(&P));
    free(toks.v);
    if (!body) {
        if (!P.failed) rs_errf(e, RS_ENOMEM, "out of memory parsing the template");
        return e ? (e->code ? e->code : RS_EINVAL) : RS_EINVAL;
    }
    *root = body;
    return 0;
}
