/*
 * jinja_lex.h — tokens of the Jinja lexer (chat/jinja_lex.c -> chat/jinja_parse.c only).
 */
#ifndef RADIXSERVE_CHAT_JINJA_LEX_H
#define RADIXSERVE_CHAT_JINJA_LEX_H

#include "chat/jinja_int.h"

enum {
    JJ_TK_DATA,        /* template text (val: the string, after whitespace control) */
    JJ_TK_VAR_BEGIN,   /* {{ */
    JJ_TK_VAR_END,     /* }} */
    JJ_TK_BLOCK_BEGIN, /* {% */
    JJ_TK_BLOCK_END,   /* %} */
    JJ_TK_NAME,        /* identifier (val: NUL-terminated copy) */
    JJ_TK_STRING,      /* string literal (val: the unescaped string) */
    JJ_TK_INT,         /* integer literal (val) */
    JJ_TK_FLOAT,       /* float literal (val) */
    JJ_TK_OP,          /* operator or punctuation (p, n) */
    JJ_TK_EOF,
};

typedef struct jj_token {
    int type;      /* JJ_TK_* */
    int line;      /* 1-based line in the normalised source */
    const char *p; /* the token's text in the normalised source */
    size_t n;      /* its length */
    size_t pos;    /* its byte offset */
    jv val;        /* the literal value, see the types */
} jj_token;

typedef struct jj_tokens {
    jj_token *v; /* tokens, malloc'd (the caller frees v) */
    int n;       /* count, the last one JJ_TK_EOF */
    int cap;     /* allocated */
} jj_tokens;

/* Tokenise src; strings are allocated in a (they live as long as the AST). */
int jj_lex(const char *src, size_t len, jj_arena *a, jj_tokens *out, rs_err *e);

#endif
