/*
 * gr_int.h — the grammar room's private shapes, shared by its files (not a door).
 *
 * A compiled grammar is an array of nodes; node 0 is the root. A value being matched is a stack
 * of frames, one per open node (an object, the string inside it, ...). Frames are immutable
 * once made and link to their parent, so a step that changes the top makes one new frame and
 * shares the rest: the mask walk steps thousands of trie edges from the same state, and each
 * step costs a frame or two from an arena, never a copy of the stack. A state is a set of such
 * stacks (anyOf keeps each live alternative); a NULL top is a finished value.
 */
#ifndef RADIXSERVE_GR_INT_H
#define RADIXSERVE_GR_INT_H

#include "grammar/grammar.h"

typedef enum gr_kind {
    GK_OBJ,  /* '{' members '}' */
    GK_ARR,  /* '[' items ']' */
    GK_STR,  /* a string, length bounds */
    GK_NUM,  /* a number */
    GK_INT,  /* an integer */
    GK_LIT,  /* one of a few literal texts (enum, const, true, false, null, tool markers) */
    GK_ALT,  /* one of kids (anyOf); expanded when pushed, never a frame */
    GK_SEQ,  /* kids one after the other */
    GK_REP,  /* item (sep item)*, between lo and hi times */
    GK_NONE, /* placeholder of a $ref target being compiled */
} gr_kind;

typedef struct gr_prop {
    char *key;    /* the key as written in JSON (escaped, without quotes), owned */
    int klen;     /* its length */
    int node;     /* its value's schema */
    int required; /* must appear */
} gr_prop;

typedef struct gr_node {
    gr_kind kind;
    int lo, hi;     /* STR: min/max length; ARR, REP: min/max count (hi -1: unbounded) */
    int item;       /* ARR: items beyond the prefix (-1: none allowed); REP: the item */
    int sep;        /* REP: the separator node */
    int *kids;      /* ALT alternatives; SEQ parts; ARR prefixItems (owned) */
    int n_kids;     /* their count */
    gr_prop *props; /* OBJ: declared properties (owned) */
    int n_props;    /* their count */
    int extra;      /* OBJ: schema of other keys, -1: no other keys */
    uint64_t need;  /* OBJ: bit set of required properties */
    char **lits;    /* LIT: the alternatives' texts (owned) */
    int *lit_len;   /* LIT: their lengths */
    int n_lits;     /* LIT: their count (<= GR_MAX_ENUM) */
} gr_node;

struct gr_grammar {
    gr_node *nodes; /* nodes[0] is the root (owned) */
    int n, cap;     /* nodes used, allocated */
};

/* Append a node (zeroed but kind, item = sep = extra = -1, hi = -1); its index or RS_ENOMEM. */
int gr_node_add(gr_grammar *g, gr_kind kind);
/* A literal node with the given texts; its index or RS_ENOMEM. */
int gr_node_lit(gr_grammar *g, const char *const *texts, const int *lens, int n);

/* ---------------------------------------------------------------- frames and states */

typedef struct gr_frame {
    const struct gr_frame *up; /* parent frame (NULL: the root's) */
    uint64_t hash;             /* of this frame and everything below it (dedupe, cache key) */
    uint64_t bits;             /* OBJ: keys seen; LIT: live alternatives */
    uint64_t alive;            /* OBJ in a key: declared keys still matching the key so far */
    int32_t n;                 /* STR: code points; ARR, REP: items; LIT, OBJ key: position;
                                  OBJ after a key: the property (-1: an extra key); NUM: digits */
    uint16_t node;             /* the node it matches */
    uint16_t depth;            /* frames below it (bounded by GR_MAX_DEPTH) */
    uint8_t phase;             /* where inside the node */
    uint8_t ws;                /* whitespace bytes in the current gap */
    uint8_t esc;               /* STR, OBJ key: escape state (0: none) */
    uint8_t u8;                /* STR, OBJ key: UTF-8 continuation state (0: none) */
} gr_frame;
_Static_assert(GR_MAX_PROPS <= 64 && GR_MAX_ENUM <= 64,
               "bit sets of keys and literals are 64 bits");

/* A bump allocator of frames in chunks; `reset` frees everything after a mark (marks are used
 * last-in first-out: resetting to a mark invalidates the marks taken after it). */
typedef struct gr_arena {
    struct gr_chunk *head;  /* current chunk (a list of chunks, newest first) */
    size_t used;            /* frames used in head */
    struct gr_chunk *spare; /* chunks a reset gave back, reused before any malloc */
} gr_arena;

typedef struct gr_mark {
    struct gr_chunk *head;
    size_t used;
} gr_mark;

gr_frame *gr_arena_frame(gr_arena *a); /* NULL on out-of-memory */
gr_mark gr_arena_mark(const gr_arena *a);
void gr_arena_reset(gr_arena *a, gr_mark m);
void gr_arena_free(gr_arena *a);

/* A set of stacks, each given by its top frame (NULL: a finished value). */
typedef struct gr_state {
    const gr_frame *top[GR_MAX_STACKS];
    int n;
    int oom; /* an allocation failed while stepping */
} gr_state;

/* Every stack of the state at the start (the root pushed). 0 or RS_ENOMEM. */
int gr_state_start(const gr_grammar *g, gr_arena *a, gr_state *out);
/* out = the stacks of `in` after byte c (deduplicated; empty: c is not allowed). */
void gr_state_step(const gr_grammar *g, gr_arena *a, const gr_state *in, unsigned char c,
                   gr_state *out);
int gr_state_can_end(const gr_grammar *g, gr_arena *a, const gr_state *s);
/* Budget of plain string characters: when s is one stack inside a string (or a free object
 * key) with no escape or UTF-8 sequence open, the number of further code points it takes
 * (INT32_MAX: unbounded) of bytes other than '"', '\\' and controls; else -1. */
int32_t gr_state_plain(const gr_grammar *g, const gr_state *s);
/* Order-independent hash of the set (a cache key). */
uint64_t gr_state_hash(const gr_state *s);
/* Copy the frames of s into arena a (so an older arena can be dropped). */
int gr_state_copy(gr_arena *a, const gr_state *in, gr_state *out);

#endif
