/*
 * jinja_int.h — what the files of the Jinja interpreter share (chat/jinja_*.c only).
 *
 * Memory: the AST lives in the compiled template's arena; every value made while rendering lives
 * in the render's arena. Values are never freed one by one, so sharing a list between two
 * variables is free and there is no reference counting. The arena has a byte limit so a
 * runaway template ends with an error, not with the machine's memory.
 */
#ifndef RADIXSERVE_CHAT_JINJA_INT_H
#define RADIXSERVE_CHAT_JINJA_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "chat/jinja.h"

/* ---- limits: a template or request can make us work hard, never forever ---- */
#define JJ_MAX_DEPTH  200          /* nesting of expressions / statements / macro calls */
#define JJ_MAX_STEPS  20000000L    /* loop iterations + macro calls per render */
#define JJ_MAX_ARENA  (128u << 20) /* bytes of values per render */
#define JJ_MAX_OUTPUT (64u << 20)  /* bytes of rendered text */
#define JJ_MAX_RANGE  10000000L    /* elements of range() */

/* ---- arena ---- */
typedef struct jj_chunk jj_chunk;
typedef struct jj_arena {
    jj_chunk *head; /* the chunk being filled; older chunks follow its next link */
    size_t total;   /* bytes reserved so far (for the limit) */
    size_t limit;   /* 0 = unlimited */
} jj_arena;
void *jj_alloc(jj_arena *a, size_t n); /* zeroed; NULL when out of memory or over the limit */
char *jj_strdup(jj_arena *a, const char *s, size_t n); /* NUL-terminated copy */
void jj_arena_free(jj_arena *a);

/* ---- growable byte buffer (malloc'd; the output and temporary strings) ---- */
typedef struct jj_buf {
    char *p;    /* bytes, NUL-terminated when non-NULL */
    size_t n;   /* length */
    size_t cap; /* allocated size */
    bool oom;   /* an append failed (allocation or JJ_MAX_OUTPUT); contents incomplete */
} jj_buf;
void jj_put(jj_buf *b, const char *s, size_t n);
void jj_puts(jj_buf *b, const char *s);
void jj_putc(jj_buf *b, char c);
void jj_buf_free(jj_buf *b);

/* ---- values ---- */
typedef enum {
    JV_UNDEF, /* jinja2's Undefined: prints "", falsy, an error when operated on */
    JV_NONE,
    JV_BOOL,
    JV_INT,
    JV_FLOAT,
    JV_STR,
    JV_LIST, /* a list or a tuple (jj_list.tuple) */
    JV_DICT, /* a dict or a namespace() object (jj_dict.ns) */
    JV_LOOP, /* the `loop` variable of a for loop */
    JV_FUNC, /* a global function, a macro, or a bound method */
} jv_type;

typedef struct jv jv;
typedef struct jj_list jj_list;
typedef struct jj_dict jj_dict;
typedef struct jj_loop jj_loop;
typedef struct jj_func jj_func;

struct jv {
    jv_type t;   /* which member of u is valid */
    bool markup; /* JV_STR is a markupsafe.Markup (from |safe, |escape): + escapes the other side */
    union {
        bool b;    /* JV_BOOL */
        int64_t i; /* JV_INT */
        double f;  /* JV_FLOAT */
        struct {
            const char *p; /* JV_STR: UTF-8 bytes (arena or AST); JV_UNDEF: the error message
                              using it would raise ("'x' is undefined"), may be NULL */
            size_t n;      /* length in bytes */
        } s;
        jj_list *l;
        jj_dict *d;
        jj_loop *lp;
        jj_func *fn;
    } u;
};

struct jj_list {
    jv *v;      /* elements */
    int n;      /* count */
    int cap;    /* allocated */
    bool tuple; /* printed as (a, b) and not equal to a list, as in Python */
};

struct jj_dict {
    jv *k;   /* keys, insertion order (what Python and json.dumps keep) */
    jv *v;   /* values */
    int n;   /* count */
    int cap; /* allocated */
    bool ns; /* a namespace(): attributes settable with {% set ns.x = ... %} */
};

struct jj_loop {
    const jv *items; /* the (filtered) sequence being iterated */
    int64_t n;       /* its length */
    int64_t i;       /* the current 0-based index */
    int depth;       /* 1 for the outermost loop */
};

struct jnode;
struct jj_func {
    int kind;                  /* JJ_FN_* */
    const char *name;          /* the global's or the method's name */
    jv self;                   /* JJ_FN_METHOD: the object the method was taken from */
    const struct jnode *macro; /* JJ_FN_MACRO: the macro definition */
};
enum { JJ_FN_GLOBAL, JJ_FN_METHOD, JJ_FN_MACRO };

static inline jv jv_undef(const char *why) {
    jv v = {.t = JV_UNDEF};
    v.u.s.p = why;
    return v;
}
static inline jv jv_none(void) {
    return (jv){.t = JV_NONE};
}
static inline jv jv_bool(bool b) {
    return (jv){.t = JV_BOOL, .u.b = b};
}
static inline jv jv_int(int64_t i) {
    return (jv){.t = JV_INT, .u.i = i};
}
static inline jv jv_float(double f) {
    return (jv){.t = JV_FLOAT, .u.f = f};
}
static inline jv jv_str(const char *p, size_t n) {
    jv v = {.t = JV_STR};
    v.u.s.p = p;
    v.u.s.n = n;
    return v;
}
static inline bool jv_isnum(jv v) {
    return v.t == JV_INT || v.t == JV_FLOAT || v.t == JV_BOOL;
}

/* ---- AST ---- */
enum {
    /* statements */
    JN_BODY,
    JN_TEXT,
    JN_OUTPUT,
    JN_IF,
    JN_FOR,
    JN_SET,
    JN_SETBLOCK,
    JN_MACRO,
    JN_BREAK,
    JN_CONTINUE,
    JN_FILTERBLOCK,
    /* expressions */
    JN_LIT,
    JN_NAME,
    JN_ATTR,
    JN_ITEM,
    JN_SLICE,
    JN_CALL,
    JN_KWARG,
    JN_FILTER,
    JN_TEST,
    JN_NEG,
    JN_POS,
    JN_NOT,
    JN_AND,
    JN_OR,
    JN_BINOP,
    JN_COMPARE,
    JN_COND,
    JN_LIST,
    JN_TUPLE,
    JN_DICT,
    JN_PAIR,
};
/* operators of JN_BINOP / JN_COMPARE operands */
enum {
    JO_ADD = 1,
    JO_SUB,
    JO_MUL,
    JO_DIV,
    JO_FLOORDIV,
    JO_MOD,
    JO_POW,
    JO_CONCAT,
    JO_EQ,
    JO_NE,
    JO_LT,
    JO_LE,
    JO_GT,
    JO_GE,
    JO_IN,
    JO_NOTIN,
};

typedef struct jnode {
    int kind;                /* JN_* */
    int op;                  /* JO_* for JN_BINOP and each JN_COMPARE operand */
    int line;                /* 1-based template line, for error messages */
    bool neg;                /* JN_TEST: "is not"; JN_SET: target is ns.attr */
    struct jnode *a, *b, *c; /* children; meaning per kind (see jinja_parse.c) */
    struct jnode *d, *e;
    struct jnode **kids; /* a list of children (body statements, arguments, items) */
    int nkids;           /* its length */
    const char *name;    /* names: variable, attribute, filter, test, macro, kwarg */
    jv lit;              /* JN_LIT / JN_TEXT: the value */
} jnode;

struct chat_jinja {
    jj_arena arena; /* owns every node and literal */
    jnode *root;    /* JN_BODY */
};

/* ---- across files ---- */
/* Parse (lexer + parser); on error fills e with "line N: ...". */
int jj_parse(const char *src, size_t len, jj_arena *a, jnode **root, rs_err *e);

/* The render state the builtins need. */
typedef struct jj_ctx jj_ctx;
int jj_fail(jj_ctx *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
jj_arena *jj_ctx_arena(jj_ctx *c);

/* value helpers (jinja_value.c) */
const char *jv_typename(jv v); /* Python's name: 'str', 'int', 'dict', ... */
bool jv_truthy(jv v);
bool jv_equal(jv a, jv b);
int jv_compare(jj_ctx *c, jv a, jv b, int *cmp); /* <0,0,>0 or an error for unorderable types */
void jv_to_str(jv v, jj_buf *b);                 /* Python str(): what {{ v }} prints */
void jv_repr(jv v, jj_buf *b);                   /* Python repr() */
int jv_tostr(jj_ctx *c, jv v, jv *out);          /* str() as a JV_STR value (arena) */
void jj_float_repr(double f, jj_buf *b);
void jj_html_escape(const char *s, size_t n, jj_buf *b); /* markupsafe.escape */
jj_list *jj_list_new(jj_ctx *c, int cap);
int jj_list_push(jj_ctx *c, jj_list *l, jv v);
jj_dict *jj_dict_new(jj_ctx *c, int cap);
int jj_dict_set(jj_ctx *c, jj_dict *d, jv k, jv v);
const jv *jj_dict_get(const jj_dict *d, jv k);
const jv *jj_dict_getstr(const jj_dict *d, const char *key);
jv jv_cstr(jj_ctx *c, const char *s);            /* arena copy of a C string */
jv jv_buf(jj_ctx *c, const jj_buf *b);           /* arena copy of a buffer */
int jj_buf_value(jj_ctx *c, jj_buf *b, jv *out); /* arena string from b, frees b */
int jv_from_json(jj_ctx *c, const cJSON *j, jv *out);
/* json.dumps(v, ensure_ascii=False, indent, separators, sort_keys) as transformers' tojson */
typedef struct jj_json_opts {
    const char *indent;   /* NULL = single line; else the indent unit */
    const char *item_sep; /* ", " by default, "," with an indent */
    const char *key_sep;  /* ": " */
    bool sort_keys;       /* sort object members by key */
    bool ensure_ascii;    /* escape non-ASCII as \\uXXXX (transformers' default is off) */
} jj_json_opts;
int jv_to_json(jj_ctx *c, jv v, const jj_json_opts *o, jj_buf *b);

/* UTF-8 helpers */
int jj_utf8_next(const char *p, size_t n, uint32_t *cp); /* bytes of the code point at p */
size_t jj_utf8_len(const char *p, size_t n);             /* code points */
bool jj_py_isspace(uint32_t cp);                         /* Python's str.isspace() */

/* builtins (jinja_builtins.c) */
int jj_call_filter(jj_ctx *c, const jnode *n, jv v, jv *args, int nargs, const char **kwn, jv *kwv,
                   int nkw, jv *out);
bool jj_filter_exists(const char *name);
int jj_call_test(jj_ctx *c, const char *name, jv v, jv *args, int nargs, bool *out);
bool jj_test_exists(const char *name);
int jj_getattr(jj_ctx *c, jv obj, const char *name, size_t n, jv *out);
int jj_getitem(jj_ctx *c, jv obj, jv key, jv *out);
int jj_call_builtin(jj_ctx *c, const jj_func *fn, jv *args, int nargs, const char **kwn, jv *kwv,
                    int nkw, jv *out);
bool jj_global_get(jj_ctx *c, const char *name, jv *out); /* range, namespace, ... */
int jj_slice(jj_ctx *c, jv obj, jv start, jv stop, jv step, jv *out);
/* Python's "fmt" % args for %s %r %d %i %f %x %% with flags/width/precision */
int jj_str_format(jj_ctx *c, jv fmt, jv args, jv *out);

/* evaluator services the builtins need (jinja_eval.c) */
int jj_call_value(jj_ctx *c, jv callee, jv *args, int nargs, const char **kwn, jv *kwv, int nkw,
                  jv *out);
int jj_iterate(jj_ctx *c, jv v, jv **items, int64_t *n); /* list of elements of an iterable */

#endif
