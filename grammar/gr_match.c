/* gr_match.c — the byte-level pushdown automaton: one byte at a time over a set of stacks.
 *
 * Each frame consumes a byte itself, or, when its node may end here (a number's digits, a
 * literal that is complete), pops and lets its parent take the byte: both can happen, so one
 * byte can leave several stacks (an enum value that is a prefix of another). Pushing an anyOf
 * node pushes each alternative, one stack each. A node that ends on its own closing byte ('}',
 * ']', '"', the last byte of the only live literal) pops at once, so a finished top-level value
 * is a NULL top and gr_matcher_done can end generation right there. */
#include <stdlib.h>
#include <string.h>

#include "grammar/gr_int.h"

enum { O_OPEN, O_FIRST, O_KEY, O_COLON, O_VALUE, O_INVAL, O_AFTER, O_NEXT };
enum { A_OPEN, A_FIRST, A_INVAL, A_AFTER, A_NEXT };
enum { S_OPEN, S_IN };
enum { N_START, N_SIGN, N_ZERO, N_INT, N_DOT, N_FRAC, N_EXP0, N_EXPS, N_EXP };
enum { R_ITEM, R_SEP, R_AFTER };
enum { SEQ_IN };

#define NUM_INT_DIGITS  15
#define NUM_FRAC_DIGITS 15
#define NUM_EXP_DIGITS  2
#define MAX_EXPAND      64 /* nested anyOf / $ref expansions in one push (a loop guard) */

/* ---------------------------------------------------------------- arena */

#define CHUNK_FRAMES 256

typedef struct gr_chunk {
    struct gr_chunk *next; /* older chunk */
    gr_frame f[CHUNK_FRAMES];
} gr_chunk;

gr_frame *gr_arena_frame(gr_arena *a) {
    if (!a->head || a->used == CHUNK_FRAMES) {
        gr_chunk *c = a->spare;
        if (c)
            a->spare = c->next;
        else if (!(c = malloc(sizeof *c)))
            return NULL;
        c->next = a->head;
        a->head = c;
        a->used = 0;
    }
    return &a->head->f[a->used++];
}

gr_mark gr_arena_mark(const gr_arena *a) {
    return (gr_mark){a->head, a->used};
}

void gr_arena_reset(gr_arena *a, gr_mark m) {
    while (a->head != m.head) {
        gr_chunk *c = a->head;
        a->head = c->next;
        c->next = a->spare;
        a->spare = c;
    }
    a->used = m.used;
}

void gr_arena_free(gr_arena *a) {
    gr_arena_reset(a, (gr_mark){NULL, 0});
    while (a->spare) {
        gr_chunk *c = a->spare;
        a->spare = c->next;
        free(c);
    }
}

/* ---------------------------------------------------------------- frames */

typedef struct ctx {
    const gr_grammar *g;
    gr_arena *a;
    gr_state *out;
    int guard; /* expansion depth of the current push */
} ctx;

static uint64_t mix(uint64_t h, uint64_t x) {
    h ^= x + 0x9E3779B97F4A7C15ull + (h << 6) + (h >> 2);
    h *= 0xBF58476D1CE4E5B9ull;
    return h ^ (h >> 31);
}

static uint64_t frame_hash(const gr_frame *f) {
    uint64_t h = f->up ? f->up->hash : 0x51ED27ull;
    h = mix(h, f->bits);
    h = mix(h, f->alive);
    h = mix(h, (uint64_t)(uint32_t)f->n | (uint64_t)f->node << 32 | (uint64_t)f->phase << 48 |
                   (uint64_t)f->ws << 56);
    return mix(h, (uint64_t)f->esc << 8 | f->u8);
}

static int same_fields(const gr_frame *a, const gr_frame *b) {
    return a->hash == b->hash && a->bits == b->bits && a->alive == b->alive && a->n == b->n &&
           a->node == b->node && a->phase == b->phase && a->ws == b->ws && a->esc == b->esc &&
           a->u8 == b->u8;
}

static int same_stack(const gr_frame *a, const gr_frame *b) {
    while (a && b && a != b) {
        if (!same_fields(a, b)) return 0;
        a = a->up, b = b->up;
    }
    return a == b;
}

/* A new frame with t's fields (hash and depth computed). NULL on out-of-memory. */
static const gr_frame *make(ctx *c, const gr_frame *t) {
    gr_frame *f = gr_arena_frame(c->a);
    if (!f) {
        c->out->oom = 1;
        return NULL;
    }
    *f = *t;
    f->depth = t->up ? (uint16_t)(t->up->depth + 1) : 0;
    f->hash = frame_hash(f);
    return f;
}

/* Add a stack to the output set (deduplicated; beyond GR_MAX_STACKS it is dropped, which can
 * only narrow what is accepted). */
static void emit_top(ctx *c, const gr_frame *top) {
    gr_state *o = c->out;
    for (int i = 0; i < o->n; i++)
        if (same_stack(o->top[i], top)) return;
    if (o->n < GR_MAX_STACKS) o->top[o->n++] = top;
}

static void emit(ctx *c, const gr_frame *t) {
    const gr_frame *f = make(c, t);
    if (f) emit_top(c, f);
}

static int is_ws(int c) {
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

static uint64_t all_bits(int n) {
    return n >= 64 ? ~0ull : (1ull << n) - 1;
}

/* ---------------------------------------------------------------- string lexing */

/* One byte of string content. Returns -1 (not allowed), 0 (inside a character), 1 (a code
 * point starts here). u8: remaining continuation bytes << 4 | range of the next one. */
static int lex(uint8_t *esc, uint8_t *u8, int c) {
    static const uint8_t lo_[5] = {0x80, 0xA0, 0x80, 0x90, 0x80};
    static const uint8_t hi_[5] = {0xBF, 0xBF, 0x9F, 0xBF, 0x8F};
    if (*u8) {
        int r = *u8 & 15, left = *u8 >> 4;
        if (c < lo_[r] || c > hi_[r]) return -1;
        *u8 = left > 1 ? (uint8_t)((left - 1) << 4) : 0;
        return 0;
    }
    int hex = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
    switch (*esc) {
    case 0:
        break;
    case 1:
        if (c == 'u')
            *esc = 2;
        else if (c && strchr("\"\\/bfnrt", c))
            *esc = 0;
        else
            return -1;
        return 0;
    case 2: /* first hex digit: 'd' opens the surrogate range, which needs 0-7 next */
        if (!hex) return -1;
        *esc = c == 'd' || c == 'D' ? 6 : 3;
        return 0;
    case 6:
        if (c < '0' || c > '7') return -1;
        *esc = 4;
        return 0;
    default: /* 3, 4, 5: second to fourth hex digit */
        if (!hex) return -1;
        *esc = *esc == 5 ? 0 : (uint8_t)(*esc + 1);
        return 0;
    }
    if (c < 0x20) return -1;
    if (c == '\\') {
        *esc = 1;
        return 1;
    }
    if (c < 0x80) return 1;
    if (c >= 0xC2 && c <= 0xDF)
        *u8 = 1 << 4;
    else if (c == 0xE0)
        *u8 = 2 << 4 | 1;
    else if (c == 0xED)
        *u8 = 2 << 4 | 2;
    else if (c >= 0xE1 && c <= 0xEF)
        *u8 = 2 << 4;
    else if (c == 0xF0)
        *u8 = 3 << 4 | 3;
    else if (c >= 0xF1 && c <= 0xF3)
        *u8 = 3 << 4;
    else if (c == 0xF4)
        *u8 = 3 << 4 | 4;
    else
        return -1;
    return 1;
}

/* ---------------------------------------------------------------- push, finish, consume */

static void consume(ctx *c, const gr_frame *f, int b);
static void finish(ctx *c, const gr_frame *f, int b);

/* Push node onto up; b >= 0: the new frame must take byte b, else the stack is emitted. */
static void push(ctx *c, const gr_frame *up, int node, int b) {
    const gr_node *nd = &c->g->nodes[node];
    if (c->guard >= MAX_EXPAND || (up && up->depth + 1 >= GR_MAX_DEPTH)) return;
    c->guard++;
    if (nd->kind == GK_ALT) {
        for (int i = 0; i < nd->n_kids; i++) push(c, up, nd->kids[i], b);
    } else if (nd->kind != GK_NONE) {
        gr_frame t = {.up = up, .node = (uint16_t)node};
        if (nd->kind == GK_LIT) t.bits = all_bits(nd->n_lits);
        const gr_frame *f = make(c, &t);
        if (f && (nd->kind == GK_SEQ || nd->kind == GK_REP)) {
            if (nd->kind == GK_SEQ)
                push(c, f, nd->kids[0], b);
            else
                push(c, f, nd->item, b);
        } else if (f) {
            if (b >= 0)
                consume(c, f, b);
            else
                emit_top(c, f);
        }
    }
    c->guard--;
}

/* Parent p after its child ended; b as in push. */
static void after_child(ctx *c, const gr_frame *p, int b) {
    const gr_node *nd = &c->g->nodes[p->node];
    gr_frame t = *p;
    t.ws = 0;
    switch (nd->kind) {
    case GK_OBJ:
        t.phase = O_AFTER;
        if (p->n >= 0) t.bits |= 1ull << p->n;
        break;
    case GK_ARR:
        t.phase = A_AFTER;
        t.n++;
        break;
    case GK_SEQ: {
        t.n++;
        const gr_frame *f = make(c, &t);
        if (!f) return;
        if (t.n == nd->n_kids)
            finish(c, f, b);
        else
            push(c, f, nd->kids[t.n], b);
        return;
    }
    case GK_REP:
        if (p->phase == R_SEP) {
            t.phase = R_ITEM;
            const gr_frame *f = make(c, &t);
            if (f) push(c, f, nd->item, b);
            return;
        }
        t.phase = R_AFTER;
        t.n++;
        if (nd->hi >= 0 && t.n >= nd->hi) {
            const gr_frame *f = make(c, &t);
            if (f) finish(c, f, b);
            return;
        }
        break;
    default:
        return;
    }
    const gr_frame *f = make(c, &t);
    if (!f) return;
    if (b >= 0)
        consume(c, f, b);
    else
        emit_top(c, f);
}

/* f's value is complete: pop it. b >= 0: the parent takes b (a finished root takes nothing). */
static void finish(ctx *c, const gr_frame *f, int b) {
    if (f->up)
        after_child(c, f->up, b);
    else if (b < 0)
        emit_top(c, NULL);
}

static int lit_may_end(const gr_node *nd, const gr_frame *f) {
    for (int i = 0; i < nd->n_lits; i++)
        if ((f->bits >> i & 1) && nd->lit_len[i] == f->n) return 1;
    return 0;
}

static int may_end(const gr_grammar *g, const gr_frame *f) {
    const gr_node *nd = &g->nodes[f->node];
    switch (nd->kind) {
    case GK_NUM:
    case GK_INT:
        return f->phase == N_ZERO || f->phase == N_INT || f->phase == N_FRAC || f->phase == N_EXP;
    case GK_LIT:
        return f->n > 0 && lit_may_end(nd, f);
    case GK_REP:
        return f->phase == R_AFTER && f->n >= nd->lo;
    default:
        return 0;
    }
}

/* A whitespace byte in a gap: one more, up to the limit. */
static void gap(ctx *c, const gr_frame *f) {
    if (f->ws >= GR_MAX_WS) return;
    gr_frame t = *f;
    t.ws++;
    emit(c, &t);
}

static void to_phase(ctx *c, const gr_frame *f, int phase) {
    gr_frame t = *f;
    t.phase = (uint8_t)phase;
    t.ws = 0;
    emit(c, &t);
}

static void close_node(ctx *c, const gr_frame *f) {
    gr_frame t = *f;
    const gr_frame *g = make(c, &t);
    if (g) finish(c, g, -1);
}

/* A byte of an object key: declared keys are matched as written, other keys (when allowed) are
 * any string. At the closing quote the key is decided: a repeated key is refused. */
static void key_byte(ctx *c, const gr_frame *f, int b) {
    const gr_node *nd = &c->g->nodes[f->node];
    gr_frame t = *f;
    if (b == '"' && !f->esc && !f->u8) {
        int m = -1;
        for (int i = 0; i < nd->n_props; i++)
            if ((f->alive >> i & 1) && nd->props[i].klen == f->n) m = i;
        if (m >= 0 && (f->bits >> m & 1)) return;
        if (m < 0 && nd->extra < 0) return;
        t.phase = O_COLON;
        t.n = m;
        t.alive = 0;
        t.ws = 0;
        emit(c, &t);
        return;
    }
    if (lex(&t.esc, &t.u8, b) < 0) return;
    uint64_t alive = 0;
    for (int i = 0; i < nd->n_props; i++)
        if ((f->alive >> i & 1) && nd->props[i].klen > f->n &&
            (unsigned char)nd->props[i].key[f->n] == b)
            alive |= 1ull << i;
    if (!alive && nd->extra < 0) return;
    t.alive = alive;
    t.n++;
    emit(c, &t);
}

static void key_start(ctx *c, const gr_frame *f) {
    const gr_node *nd = &c->g->nodes[f->node];
    gr_frame t = *f;
    uint64_t all = all_bits(nd->n_props);
    t.alive = nd->extra >= 0 ? all : all & ~f->bits;
    if (!t.alive && nd->extra < 0) return;
    t.phase = O_KEY;
    t.n = 0;
    t.ws = 0;
    t.esc = t.u8 = 0;
    emit(c, &t);
}

static void obj_byte(ctx *c, const gr_frame *f, int b) {
    const gr_node *nd = &c->g->nodes[f->node];
    int closable = (nd->need & ~f->bits) == 0;
    if (f->phase != O_OPEN && f->phase != O_KEY && is_ws(b)) {
        gap(c, f);
        return;
    }
    switch (f->phase) {
    case O_OPEN:
        if (b == '{') to_phase(c, f, O_FIRST);
        return;
    case O_FIRST:
    case O_NEXT:
        if (b == '"')
            key_start(c, f);
        else if (b == '}' && f->phase == O_FIRST && closable)
            close_node(c, f);
        return;
    case O_KEY:
        key_byte(c, f, b);
        return;
    case O_COLON:
        if (b == ':') to_phase(c, f, O_VALUE);
        return;
    case O_VALUE: {
        gr_frame t = *f;
        t.phase = O_INVAL;
        t.ws = 0;
        const gr_frame *p = make(c, &t);
        if (p) push(c, p, f->n >= 0 ? nd->props[f->n].node : nd->extra, b);
        return;
    }
    case O_AFTER:
        if (b == ',' && (nd->extra >= 0 || (all_bits(nd->n_props) & ~f->bits)))
            to_phase(c, f, O_NEXT);
        else if (b == '}' && closable)
            close_node(c, f);
        return;
    }
}

static int arr_item(const gr_node *nd, int i) {
    if (nd->hi >= 0 && i >= nd->hi) return -1;
    return i < nd->n_kids ? nd->kids[i] : nd->item;
}

static void arr_byte(ctx *c, const gr_frame *f, int b) {
    const gr_node *nd = &c->g->nodes[f->node];
    if (f->phase == A_OPEN) {
        if (b == '[') to_phase(c, f, A_FIRST);
        return;
    }
    if (is_ws(b)) {
        gap(c, f);
        return;
    }
    if (b == ']' && (f->phase == A_FIRST || f->phase == A_AFTER) && f->n >= nd->lo) {
        close_node(c, f);
        return;
    }
    if (f->phase == A_AFTER) {
        if (b == ',' && arr_item(nd, f->n) >= 0) to_phase(c, f, A_NEXT);
        return;
    }
    int item = arr_item(nd, f->n); /* A_FIRST, A_NEXT: a value starts */
    if (item < 0) return;
    gr_frame t = *f;
    t.phase = A_INVAL;
    t.ws = 0;
    const gr_frame *p = make(c, &t);
    if (p) push(c, p, item, b);
}

static void str_byte(ctx *c, const gr_frame *f, int b) {
    const gr_node *nd = &c->g->nodes[f->node];
    if (f->phase == S_OPEN) {
        if (b == '"') to_phase(c, f, S_IN);
        return;
    }
    if (b == '"' && !f->esc && !f->u8) {
        if (f->n >= nd->lo) close_node(c, f);
        return;
    }
    gr_frame t = *f;
    int r = lex(&t.esc, &t.u8, b);
    if (r < 0 || (r == 1 && nd->hi >= 0 && f->n >= nd->hi)) return;
    t.n += r;
    emit(c, &t);
}

static void num_to(ctx *c, const gr_frame *f, int phase, int n) {
    gr_frame t = *f;
    t.phase = (uint8_t)phase;
    t.n = n;
    emit(c, &t);
}

static void num_byte(ctx *c, const gr_frame *f, int b) {
    int digit = b >= '0' && b <= '9', real = c->g->nodes[f->node].kind == GK_NUM;
    int dot = real && b == '.', e = real && (b == 'e' || b == 'E');
    switch (f->phase) {
    case N_START:
        if (b == '-') num_to(c, f, N_SIGN, 0);
        /* fall through */
    case N_SIGN:
        if (b == '0')
            num_to(c, f, N_ZERO, 1);
        else if (digit)
            num_to(c, f, N_INT, 1);
        return;
    case N_ZERO:
    case N_INT:
        if (digit && f->phase == N_INT && f->n < NUM_INT_DIGITS)
            num_to(c, f, N_INT, f->n + 1);
        else if (dot)
            num_to(c, f, N_DOT, 0);
        else if (e)
            num_to(c, f, N_EXP0, 0);
        return;
    case N_DOT:
    case N_FRAC:
        if (digit && f->n < NUM_FRAC_DIGITS)
            num_to(c, f, N_FRAC, f->n + 1);
        else if (e && f->phase == N_FRAC)
            num_to(c, f, N_EXP0, 0);
        return;
    case N_EXP0:
        if (b == '+' || b == '-') {
            num_to(c, f, N_EXPS, 0);
            return;
        }
        /* fall through */
    case N_EXPS:
    case N_EXP:
        if (digit && f->n < NUM_EXP_DIGITS) num_to(c, f, N_EXP, f->n + 1);
        return;
    }
}

static void lit_byte(ctx *c, const gr_frame *f, int b) {
    const gr_node *nd = &c->g->nodes[f->node];
    uint64_t alive = 0;
    int longer = 0;
    for (int i = 0; i < nd->n_lits; i++)
        if ((f->bits >> i & 1) && nd->lit_len[i] > f->n && (unsigned char)nd->lits[i][f->n] == b) {
            alive |= 1ull << i;
            longer |= nd->lit_len[i] > f->n + 1;
        }
    if (!alive) return;
    gr_frame t = *f;
    t.bits = alive;
    t.n++;
    if (longer) {
        emit(c, &t);
        return;
    }
    const gr_frame *g = make(c, &t);
    if (g) finish(c, g, -1);
}

static void rep_byte(ctx *c, const gr_frame *f, int b) {
    const gr_node *nd = &c->g->nodes[f->node];
    if (f->phase != R_AFTER || (nd->hi >= 0 && f->n >= nd->hi)) return;
    gr_frame t = *f;
    t.phase = R_SEP;
    const gr_frame *p = make(c, &t);
    if (p) push(c, p, nd->sep, b);
}

/* Byte b on the stack topped by f: f takes it, and/or f ends and its parent takes it. */
static void consume(ctx *c, const gr_frame *f, int b) {
    if (may_end(c->g, f)) finish(c, f, b);
    switch (c->g->nodes[f->node].kind) {
    case GK_OBJ:
        obj_byte(c, f, b);
        return;
    case GK_ARR:
        arr_byte(c, f, b);
        return;
    case GK_STR:
        str_byte(c, f, b);
        return;
    case GK_NUM:
    case GK_INT:
        num_byte(c, f, b);
        return;
    case GK_LIT:
        lit_byte(c, f, b);
        return;
    case GK_REP:
        rep_byte(c, f, b);
        return;
    default:
        return;
    }
}

/* ---------------------------------------------------------------- states */

int gr_state_start(const gr_grammar *g, gr_arena *a, gr_state *out) {
    out->n = 0;
    out->oom = 0;
    ctx c = {g, a, out, 0};
    push(&c, NULL, 0, -1);
    return out->oom ? RS_ENOMEM : 0;
}

void gr_state_step(const gr_grammar *g, gr_arena *a, const gr_state *in, unsigned char b,
                   gr_state *out) {
    out->n = 0;
    out->oom = 0;
    ctx c = {g, a, out, 0};
    for (int i = 0; i < in->n; i++)
        if (in->top[i]) consume(&c, in->top[i], b);
}

/* The stack can end here: finished, or its top may end and so may what is below it. */
static int stack_ends(const gr_grammar *g, gr_arena *a, const gr_frame *f) {
    if (!f) return 1;
    if (!may_end(g, f)) return 0;
    gr_state tmp = {.n = 0};
    ctx c = {g, a, &tmp, 0};
    finish(&c, f, -1);
    for (int i = 0; i < tmp.n; i++)
        if (stack_ends(g, a, tmp.top[i])) return 1;
    return 0;
}

int gr_state_can_end(const gr_grammar *g, gr_arena *a, const gr_state *s) {
    for (int i = 0; i < s->n; i++)
        if (stack_ends(g, a, s->top[i])) return 1;
    return 0;
}

int32_t gr_state_plain(const gr_grammar *g, const gr_state *s) {
    if (s->n != 1 || !s->top[0]) return -1;
    const gr_frame *f = s->top[0];
    const gr_node *nd = &g->nodes[f->node];
    if (f->esc || f->u8) return -1;
    if (nd->kind == GK_STR && f->phase == S_IN) return nd->hi < 0 ? INT32_MAX : nd->hi - f->n;
    if (nd->kind == GK_OBJ && f->phase == O_KEY && !f->alive && nd->extra >= 0) return INT32_MAX;
    return -1;
}

uint64_t gr_state_hash(const gr_state *s) {
    uint64_t h = 0x9AE16A3B2F90404Full ^ (uint64_t)s->n;
    for (int i = 0; i < s->n; i++) h += mix(0x1234567ull, s->top[i] ? s->top[i]->hash : 1);
    return mix(h, (uint64_t)s->n);
}

static const gr_frame *copy_stack(gr_arena *a, const gr_frame *f, int *oom) {
    if (!f || *oom) return NULL;
    const gr_frame *up = copy_stack(a, f->up, oom);
    gr_frame *n = gr_arena_frame(a);
    if (!n || (f->up && !up)) {
        *oom = 1;
        return NULL;
    }
    *n = *f;
    n->up = up;
    return n;
}

int gr_state_copy(gr_arena *a, const gr_state *in, gr_state *out) {
    int oom = 0;
    out->n = in->n;
    out->oom = 0;
    for (int i = 0; i < in->n; i++) out->top[i] = copy_stack(a, in->top[i], &oom);
    return oom ? RS_ENOMEM : 0;
}
