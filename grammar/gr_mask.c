/* gr_mask.c — the vocabulary trie, the matcher, and the per-step token mask.
 *
 * The mask walks a trie of the vocabulary's byte strings in pre-order, stepping the automaton
 * state one edge at a time and skipping a whole subtree as soon as the state dies, so each
 * shared prefix is stepped once. Inside a string (most of the tokens of a JSON value), any token
 * made only of plain string characters is allowed as long as its length in code points fits
 * what the string still takes; those tokens are precomputed as one bit set per length, and only
 * the others (with a quote, a backslash, a control byte, a cut UTF-8 sequence) are walked, from
 * a second, much smaller trie. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "grammar/gr_int.h"

#define PLAIN_CAP 32 /* plain tokens longer than this (code points) are walked like the rest */

typedef struct trie {
    int n;           /* nodes, in pre-order */
    uint8_t *byte;   /* edge byte into the node */
    uint16_t *depth; /* 1 for a child of the root */
    int32_t *end;    /* index just after the node's subtree */
    int32_t *tok0;   /* first of its tokens in ids (tokens whose bytes end here) */
    uint16_t *ntok;  /* how many */
    int32_t *ids;    /* token ids sorted by bytes */
    int max_depth;   /* longest token in bytes */
} trie;

struct gr_vocab {
    int n_tokens;
    int words; /* mask words: (n_tokens + 31) / 32 */
    char *bytes;
    int64_t *off; /* token t's bytes are bytes[off[t], off[t + 1]); -1 in has[]: never */
    uint8_t *has; /* token t has bytes the grammar may allow */
    int32_t *eos;
    int n_eos;
    trie all;                       /* every token with bytes */
    trie rest;                      /* tokens that are not plain string text of <= PLAIN_CAP */
    uint32_t *plain[PLAIN_CAP + 1]; /* plain[k]: tokens of plain text of 1..k code points */
};

/* ---------------------------------------------------------------- building */

typedef struct sort_ctx {
    const gr_vocab *v;
} sort_ctx;

static int cmp_tok(const void *x, const void *y, void *arg) {
    const gr_vocab *v = ((const sort_ctx *)arg)->v;
    int32_t a = *(const int32_t *)x, b = *(const int32_t *)y;
    int64_t la = v->off[a + 1] - v->off[a], lb = v->off[b + 1] - v->off[b];
    int r = memcmp(v->bytes + v->off[a], v->bytes + v->off[b], (size_t)(la < lb ? la : lb));
    if (r) return r;
    if (la != lb) return la < lb ? -1 : 1;
    return a < b ? -1 : a > b;
}

static void trie_free(trie *t) {
    free(t->byte);
    free(t->depth);
    free(t->end);
    free(t->tok0);
    free(t->ntok);
    free(t->ids);
    memset(t, 0, sizeof *t);
}

/* Build the pre-order trie of the n token ids (each with at least one byte). */
static int trie_build(trie *t, const gr_vocab *v, int32_t *ids, int n) {
    sort_ctx sc = {v};
    qsort_r(ids, (size_t)n, sizeof *ids, cmp_tok, &sc);
    t->ids = ids;
    int64_t cap = 0;
    for (int i = 0; i < n; i++) cap += v->off[ids[i] + 1] - v->off[ids[i]];
    if (cap > INT32_MAX - 1) return RS_ENOMEM;
    size_t c = (size_t)cap + 1;
    t->byte = malloc(c);
    t->depth = malloc(c * sizeof *t->depth);
    t->end = malloc(c * sizeof *t->end);
    t->tok0 = malloc(c * sizeof *t->tok0);
    t->ntok = malloc(c * sizeof *t->ntok);
    int64_t longest = 0;
    for (int i = 0; i < n; i++)
        if (v->off[ids[i] + 1] - v->off[ids[i]] > longest)
            longest = v->off[ids[i] + 1] - v->off[ids[i]];
    if (longest > 65535) return RS_EINVAL;
    int32_t *path = malloc((size_t)(longest + 1) * sizeof *path);
    if (!t->byte || !t->depth || !t->end || !t->tok0 || !t->ntok || !path) {
        free(path);
        return RS_ENOMEM;
    }
    int plen = 0; /* path[d - 1]: the node at depth d of the previous token */
    const char *prev = NULL;
    int64_t prev_len = 0;
    for (int i = 0; i < n; i++) {
        const char *s = v->bytes + v->off[ids[i]];
        int64_t len = v->off[ids[i] + 1] - v->off[ids[i]], l = 0;
        while (prev && l < len && l < prev_len && s[l] == prev[l]) l++;
        for (; plen > l; plen--) t->end[path[plen - 1]] = t->n;
        for (int64_t d = l; d < len; d++) {
            int k = t->n++;
            t->byte[k] = (uint8_t)s[d];
            t->depth[k] = (uint16_t)(d + 1);
            t->tok0[k] = 0;
            t->ntok[k] = 0;
            path[plen++] = k;
        }
        int leaf = path[len - 1];
        if (t->ntok[leaf] == 0) t->tok0[leaf] = i;
        if (t->ntok[leaf] < UINT16_MAX) t->ntok[leaf]++;
        if (len > t->max_depth) t->max_depth = (int)len;
        prev = s;
        prev_len = len;
    }
    for (; plen > 0; plen--) t->end[path[plen - 1]] = t->n;
    free(path);
    return 0;
}

/* Code points of a token that is plain string text (complete UTF-8 characters, no quote,
 * backslash or control byte), else -1. */
static int plain_len(const unsigned char *p, int64_t n) {
    int cps = 0;
    for (int64_t i = 0; i < n;) {
        unsigned char c = p[i];
        int l = c < 0x80             ? 1
                : (c & 0xE0) == 0xC0 ? 2
                : (c & 0xF0) == 0xE0 ? 3
                : (c & 0xF8) == 0xF0 ? 4
                                     : 0;
        if (c < 0x20 || c == '"' || c == '\\' || !l || i + l > n || (l == 2 && c < 0xC2) ||
            c > 0xF4)
            return -1;
        for (int k = 1; k < l; k++)
            if ((p[i + k] & 0xC0) != 0x80) return -1;
        if ((c == 0xE0 && p[i + 1] < 0xA0) || (c == 0xED && p[i + 1] > 0x9F) ||
            (c == 0xF0 && p[i + 1] < 0x90) || (c == 0xF4 && p[i + 1] > 0x8F))
            return -1;
        i += l;
        cps++;
    }
    return cps;
}

static int vocab_split(gr_vocab *v) {
    int32_t *all = malloc((size_t)v->n_tokens * sizeof *all);
    int32_t *rest = malloc((size_t)v->n_tokens * sizeof *rest);
    int na = 0, nr = 0;
    if (!all || !rest) {
        free(all);
        free(rest);
        return RS_ENOMEM;
    }
    for (int k = 0; k <= PLAIN_CAP; k++)
        if (!(v->plain[k] = calloc((size_t)v->words, 4))) {
            free(all);
            free(rest);
            return RS_ENOMEM;
        }
    for (int t = 0; t < v->n_tokens; t++) {
        if (!v->has[t]) continue;
        all[na++] = t;
        int p = plain_len((const unsigned char *)v->bytes + v->off[t], v->off[t + 1] - v->off[t]);
        if (p < 1 || p > PLAIN_CAP) {
            rest[nr++] = t;
            continue;
        }
        for (int k = p; k <= PLAIN_CAP; k++) v->plain[k][t >> 5] |= 1u << (t & 31);
    }
    int rc = trie_build(&v->all, v, all, na);
    if (rc)
        free(rest);
    else
        rc = trie_build(&v->rest, v, rest, nr);
    return rc;
}

int gr_vocab_new(gr_vocab **out, int n_tokens, const char *const *bytes, const int *lens,
                 const int32_t *eos, int n_eos, rs_err *e) {
    gr_vocab *v = calloc(1, sizeof *v);
    *out = NULL;
    if (!v) return rs_errf(e, RS_ENOMEM, "grammar: out of memory");
    v->n_tokens = n_tokens;
    v->words = (n_tokens + 31) / 32;
    int64_t total = 0;
    for (int t = 0; t < n_tokens; t++) total += bytes[t] ? lens[t] : 0;
    v->bytes = malloc((size_t)total + 1);
    v->off = malloc(((size_t)n_tokens + 1) * sizeof *v->off);
    v->has = calloc((size_t)n_tokens + 1, 1);
    v->eos = malloc((size_t)(n_eos ? n_eos : 1) * sizeof *v->eos);
    int rc = v->bytes && v->off && v->has && v->eos ? 0 : RS_ENOMEM;
    for (int64_t t = 0, at = 0; !rc && t < n_tokens; t++) {
        v->off[t] = at;
        if (bytes[t] && lens[t] > 0) {
            memcpy(v->bytes + at, bytes[t], (size_t)lens[t]);
            at += lens[t];
            v->has[t] = 1;
        }
        v->off[t + 1] = at;
    }
    if (!rc) {
        memcpy(v->eos, eos, (size_t)n_eos * sizeof *eos);
        v->n_eos = n_eos;
        for (int i = 0; i < n_eos; i++)
            if (eos[i] >= 0 && eos[i] < n_tokens) v->has[eos[i]] = 0;
        rc = vocab_split(v);
    }
    if (rc) {
        gr_vocab_free(v);
        return rs_errf(e, rc, "grammar: %s building the vocabulary trie",
                       rc == RS_ENOMEM ? "out of memory" : "a token longer than 65535 bytes");
    }
    *out = v;
    return 0;
}

int gr_vocab_from_tokenizer(gr_vocab **out, const tok_tokenizer *t, int n_tokens,
                            const int32_t *eos, int n_eos, rs_err *e) {
    *out = NULL;
    char **bytes = calloc((size_t)n_tokens + 1, sizeof *bytes);
    int *lens = calloc((size_t)n_tokens + 1, sizeof *lens);
    int rc = bytes && lens ? 0 : rs_errf(e, RS_ENOMEM, "grammar: out of memory");
    int have = t ? tok_vocab_size(t) : 0;
    for (int i = 0; i < n_tokens && i < have && !rc; i++) {
        size_t n = 0;
        int r = tok_token_bytes(t, i, &bytes[i], &n, e);
        if (r < 0 && r != RS_EINVAL) rc = r; /* an id nothing uses stays NULL */
        lens[i] = (int)n;
    }
    if (!rc) rc = gr_vocab_new(out, n_tokens, (const char *const *)bytes, lens, eos, n_eos, e);
    for (int i = 0; bytes && i < n_tokens; i++) free(bytes[i]);
    free(bytes);
    free(lens);
    return rc;
}

void gr_vocab_free(gr_vocab *v) {
    if (!v) return;
    trie_free(&v->all);
    trie_free(&v->rest);
    for (int k = 0; k <= PLAIN_CAP; k++) free(v->plain[k]);
    free(v->bytes);
    free(v->off);
    free(v->has);
    free(v->eos);
    free(v);
}

int gr_vocab_size(const gr_vocab *v) {
    return v->n_tokens;
}

/* ---------------------------------------------------------------- the matcher */

struct gr_matcher {
    const gr_grammar *g;
    gr_arena keep[2]; /* the state's frames live in keep[cur] */
    int cur;
    gr_state st;      /* the current state */
    int ended;        /* an EOS was accepted */
    gr_arena scratch; /* frames of steps in progress (reset after each call) */
    gr_state *walk;   /* per trie depth: the state there (walk_cap entries) */
    gr_mark *marks;   /* per trie depth: the scratch mark after that state */
    int walk_cap;
};

int gr_matcher_new(gr_matcher **out, const gr_grammar *g, rs_err *e) {
    gr_matcher *m = calloc(1, sizeof *m);
    *out = NULL;
    if (!m) return rs_errf(e, RS_ENOMEM, "grammar: out of memory");
    m->g = g;
    if (gr_state_start(g, &m->keep[0], &m->st)) {
        gr_matcher_free(m);
        return rs_errf(e, RS_ENOMEM, "grammar: out of memory");
    }
    *out = m;
    return 0;
}

void gr_matcher_free(gr_matcher *m) {
    if (!m) return;
    gr_arena_free(&m->keep[0]);
    gr_arena_free(&m->keep[1]);
    gr_arena_free(&m->scratch);
    free(m->walk);
    free(m->marks);
    free(m);
}

int gr_matcher_accept_bytes(gr_matcher *m, const char *p, size_t n) {
    if (m->ended) return 0;
    gr_state a = m->st, b;
    int rc = 1;
    for (size_t i = 0; i < n && rc == 1; i++) {
        gr_state_step(m->g, &m->scratch, &a, (unsigned char)p[i], &b);
        if (b.oom)
            rc = RS_ENOMEM;
        else if (b.n == 0)
            rc = 0;
        a = b;
    }
    if (rc == 1) {
        gr_arena *next = &m->keep[1 - m->cur];
        gr_arena_free(next);
        if (gr_state_copy(next, &a, &b)) {
            rc = RS_ENOMEM;
        } else {
            m->st = b;
            gr_arena_free(&m->keep[m->cur]);
            m->cur = 1 - m->cur;
        }
    }
    gr_arena_free(&m->scratch);
    return rc;
}

static int is_eos(const gr_vocab *v, int32_t t) {
    for (int i = 0; i < v->n_eos; i++)
        if (v->eos[i] == t) return 1;
    return 0;
}

int gr_matcher_accept_token(gr_matcher *m, const gr_vocab *v, int32_t t) {
    if (t < 0 || t >= v->n_tokens || m->ended) return 0;
    if (is_eos(v, t)) {
        if (!gr_matcher_can_end(m)) return 0;
        m->ended = 1;
        return 1;
    }
    if (!v->has[t]) return 0;
    return gr_matcher_accept_bytes(m, v->bytes + v->off[t], (size_t)(v->off[t + 1] - v->off[t]));
}

int gr_matcher_can_end(gr_matcher *m) {
    int r = gr_state_can_end(m->g, &m->scratch, &m->st);
    gr_arena_free(&m->scratch);
    return r;
}

int gr_matcher_done(const gr_matcher *m) {
    if (m->ended) return 1;
    for (int i = 0; i < m->st.n; i++)
        if (m->st.top[i]) return 0;
    return m->st.n > 0;
}

/* ---------------------------------------------------------------- the mask */

static int walk_room(gr_matcher *m, int depth) {
    if (depth + 1 <= m->walk_cap) return 0;
    gr_state *w = realloc(m->walk, (size_t)(depth + 1) * sizeof *w);
    if (!w) return RS_ENOMEM;
    m->walk = w;
    gr_mark *k = realloc(m->marks, (size_t)(depth + 1) * sizeof *k);
    if (!k) return RS_ENOMEM;
    m->marks = k;
    m->walk_cap = depth + 1;
    return 0;
}

/* Walk trie t from the current state, setting the bit of every token it can take whole. */
static int walk(gr_matcher *m, const trie *t, uint32_t *mask, int *count) {
    if (walk_room(m, t->max_depth)) return RS_ENOMEM;
    m->walk[0] = m->st;
    m->marks[0] = gr_arena_mark(&m->scratch);
    for (int i = 0; i < t->n;) {
        int d = t->depth[i];
        gr_arena_reset(&m->scratch, m->marks[d - 1]);
        gr_state *s = &m->walk[d];
        gr_state_step(m->g, &m->scratch, &m->walk[d - 1], t->byte[i], s);
        if (s->oom) return RS_ENOMEM;
        if (s->n == 0) {
            i = t->end[i];
            continue;
        }
        m->marks[d] = gr_arena_mark(&m->scratch);
        for (int k = 0; k < t->ntok[i]; k++) {
            int32_t id = t->ids[t->tok0[i] + k];
            uint32_t bit = 1u << (id & 31);
            *count += !(mask[id >> 5] & bit);
            mask[id >> 5] |= bit;
        }
        i++;
    }
    return 0;
}

int gr_matcher_mask(gr_matcher *m, const gr_vocab *v, uint32_t *mask) {
    memset(mask, 0, (size_t)v->words * 4);
    if (m->ended) return 0;
    int count = 0, rc;
    int32_t plain = gr_state_plain(m->g, &m->st);
    if (plain > 0) {
        const uint32_t *p = v->plain[plain < PLAIN_CAP ? plain : PLAIN_CAP];
        for (int w = 0; w < v->words; w++) {
            mask[w] = p[w];
            count += __builtin_popcount(p[w]);
        }
        rc = walk(m, &v->rest, mask, &count);
    } else {
        rc = walk(m, &v->all, mask, &count);
    }
    gr_arena_free(&m->scratch);
    if (rc) return rc;
    if (gr_matcher_can_end(m))
        for (int i = 0; i < v->n_eos; i++) {
            int32_t t = v->eos[i];
            if (t < 0 || t >= v->n_tokens) continue;
            count += !(mask[t >> 5] & (1u << (t & 31)));
            mask[t >> 5] |= 1u << (t & 31);
        }
    return count;
}

void gr_mask_apply(const uint32_t *mask, int mask_tokens, float *logits, int n) {
    int full = (mask_tokens < n ? mask_tokens : n) / 32; /* words wholly inside both */
    for (int w = 0; w < full; w++) {
        uint32_t bits = mask[w];
        if (bits == UINT32_MAX) continue;
        for (int b = 0; b < 32; b++)
            if (!(bits >> b & 1)) logits[w * 32 + b] = -INFINITY;
    }
    for (int t = full * 32; t < n; t++)
        if (t >= mask_tokens || !(mask[t >> 5] >> (t & 31) & 1)) logits[t] = -INFINITY;
}
