/*
 * test_cache_random.c — 100,000+ random operations on the radix tree checked against a naive
 * model after every one.
 *
 * The model is a flat list of cached blocks, each keyed by (namespace, the whole token prefix
 * it ends), with its block id, last access, pin count and whether a node starts there — no
 * tree, only linear scans. Node boundaries follow the contract (a new run starts a node; an
 * insert that diverges or ends inside a node starts a node at the next cached block; nothing is
 * ever merged); eviction picks the least recently used unpinned leaf node. After every
 * operation the test compares the tree (through its snapshot) entry by entry — prefix, block
 * id, last access, pin, node boundaries — and every pool reference count with the model's
 * (cache + blocks held by the test's running "sequences"), so a block freed while pinned or
 * shared by two edges shows up at once. The workload runs requests the way the scheduler
 * does: match all but the last token, pin, hold, grow, allocate (evicting), insert, re-pin,
 * finish; plus bare lookups and explicit evictions, across three namespaces, in a pool small
 * enough that allocation often has to evict or fails with RS_EFULL.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cache/cache.h"
#include "tests/tap.h"
#include "tests/test_cache_util.h"

enum {
    BS = 2,       /* block size: small, so splits and mid-block divergence are common */
    POOL = 20,    /* blocks in the pool */
    MAXT = 16,    /* tokens per sequence at most */
    LIVE = 3,     /* sequences running at once */
    HIST = 16,    /* past sequences that new prompts borrow prefixes from */
    OPS = 120000, /* operations */
};

/* One cached block in the model. */
typedef struct ment {
    uint64_t ns;          /* namespace */
    int k;                /* blocks in the prefix this block ends (depth, >= 1) */
    int32_t tok[MAXT];    /* the prefix's k * BS tokens */
    int32_t block;        /* pool block id */
    uint64_t last_access; /* clock of the last use */
    int pin;              /* pins covering this block */
    int start;            /* 1 if a tree node starts at this block */
    int64_t hits;         /* matches that reused this block; a block that starts a node by a
                             split takes the hits of the node's old first block (the tree's rule) */
} ment;

typedef struct model {
    ment e[POOL];   /* cached blocks */
    int n;          /* entries used */
    int ref[POOL];  /* expected pool reference count per block */
    uint64_t clock; /* expected logical clock */
} model;

/* A running request in the test (and its pinned path, in both worlds). */
typedef struct seq {
    int used;              /* slot in use */
    uint64_t ns;           /* namespace */
    int32_t tok[MAXT];     /* tokens so far */
    int n;                 /* token count */
    rs_ivec table;         /* block table; one reference per entry */
    rt_node *node;         /* pinned tree node or NULL */
    int pin_k;             /* the model's pinned prefix (blocks), 0 for none */
    int32_t pin_tok[MAXT]; /* that prefix's tokens (may run past tok: a node ending later) */
} seq;

static uint64_t rng = 88172645463325252ull;
static uint32_t rnd(uint32_t n) {
    return tc_rnd(&rng, n);
}

static int fails; /* model mismatches so far (each reported once per op) */

/* ------------------------------------------------------------------ model */

static int m_find(const model *m, uint64_t ns, const int32_t *tok, int k) {
    for (int i = 0; i < m->n; i++)
        if (m->e[i].ns == ns && m->e[i].k == k && !memcmp(m->e[i].tok, tok, sizeof *tok * k * BS))
            return i;
    return -1;
}

/* The cached block continuing entry i's node (a child that does not start a node), or -1. */
static int m_cont(const model *m, int i) {
    for (int j = 0; j < m->n; j++)
        if (!m->e[j].start && m->e[j].k == m->e[i].k + 1 && m->e[j].ns == m->e[i].ns &&
            !memcmp(m->e[j].tok, m->e[i].tok, sizeof(int32_t) * m->e[i].k * BS))
            return j;
    return -1;
}

static int m_has_child(const model *m, int i) {
    for (int j = 0; j < m->n; j++)
        if (m->e[j].k == m->e[i].k + 1 && m->e[j].ns == m->e[i].ns &&
            !memcmp(m->e[j].tok, m->e[i].tok, sizeof(int32_t) * m->e[i].k * BS))
            return 1;
    return 0;
}

static int m_matched(const model *m, uint64_t ns, const int32_t *tok, int nb) {
    int k = 0;
    while (k < nb && m_find(m, ns, tok, k + 1) >= 0) k++;
    return k;
}

/* Depth (blocks) where the node holding block k of this prefix starts (1-based blocks). */
static int m_node_start(const model *m, uint64_t ns, const int32_t *tok, int k) {
    while (k > 1 && !m->e[m_find(m, ns, tok, k)].start) k--;
    return k;
}

/* Depth where the node holding block k of this prefix ends. */
static int m_node_end(const model *m, uint64_t ns, const int32_t *tok, int k, int32_t *full) {
    int i = m_find(m, ns, tok, k);
    memcpy(full, tok, sizeof *tok * k * BS);
    for (int j; (j = m_cont(m, i)) >= 0; i = j) {
        memcpy(full, m->e[j].tok, sizeof *tok * m->e[j].k * BS);
        k = m->e[j].k;
    }
    return k;
}

static void m_touch(model *m, uint64_t ns, const int32_t *tok, int upto) {
    for (int k = 1; k <= upto; k++) m->e[m_find(m, ns, tok, k)].last_access = m->clock;
}

static void m_pin(model *m, uint64_t ns, const int32_t *tok, int k, int d) {
    for (int j = 1; j <= k; j++) m->e[m_find(m, ns, tok, j)].pin += d;
}

/* Tokens of the block after the k matched whole ones that the query tok[k*BS, n) shares at
 * most: the longest common prefix with any cached block continuing that path (< BS). */
static int m_partial(const model *m, uint64_t ns, const int32_t *tok, int k, int n) {
    int best = 0, rl = n - k * BS < BS ? n - k * BS : BS;
    for (int i = 0; i < m->n; i++) {
        const ment *e = &m->e[i];
        if (e->ns != ns || e->k != k + 1 || memcmp(e->tok, tok, sizeof *tok * k * BS)) continue;
        int l = 0;
        while (l < rl && e->tok[k * BS + l] == tok[k * BS + l]) l++;
        if (l > best) best = l;
    }
    return best;
}

/* rt_match's expected result (whole blocks; the partial rest is m_partial, checked apart);
 * *end_k / end_tok name the node to pin (0 on a miss). */
static int m_match(model *m, uint64_t ns, const int32_t *tok, int n, int32_t *blocks, int *end_k,
                   int32_t *end_tok) {
    int k = m_matched(m, ns, tok, n / BS);
    m->clock++;
    *end_k = 0;
    if (k == 0) return 0;
    for (int j = 1; j <= k; j++) {
        ment *e = &m->e[m_find(m, ns, tok, j)];
        blocks[j - 1] = e->block;
        e->hits++;
    }
    int whole = m_cont(m, m_find(m, ns, tok, k)) < 0;
    m_touch(m, ns, tok, whole ? k : m_node_start(m, ns, tok, k) - 1);
    *end_k = m_node_end(m, ns, tok, k, end_tok);
    return k * BS;
}

static void m_insert(model *m, uint64_t ns, const int32_t *tok, int n, const int32_t *blocks) {
    int nb = n / BS;
    if (nb == 0) return;
    int k = m_matched(m, ns, tok, nb);
    if (k > 0) {
        int c = m_cont(m, m_find(m, ns, tok, k));
        if (c >= 0) { /* the insert diverged or ended inside that node: split it */
            m->e[c].start = 1;
            m->e[c].hits = m->e[m_find(m, ns, tok, m_node_start(m, ns, tok, k))].hits;
        }
    }
    for (int j = k; j < nb; j++) {
        ment *e = &m->e[m->n++];
        *e = (ment){.ns = ns, .k = j + 1, .block = blocks[j], .start = j == k};
        memcpy(e->tok, tok, sizeof *tok * (j + 1) * BS);
        m->ref[blocks[j]]++;
    }
    m->clock++;
    m_touch(m, ns, tok, nb);
}

/* Evict the least recently used unpinned leaf node; returns blocks freed, -1 if none. */
static int m_evict_one(model *m) {
    int best = -1;
    for (int i = 0; i < m->n; i++) {
        if (m->e[i].pin || m_has_child(m, i)) continue;
        if (best < 0 || m->e[i].last_access < m->e[best].last_access) best = i;
    }
    if (best < 0) return -1;
    ment leaf = m->e[best];
    int from = m_node_start(m, leaf.ns, leaf.tok, leaf.k), freed = 0;
    for (int k = leaf.k; k >= from; k--) {
        int i = m_find(m, leaf.ns, leaf.tok, k);
        freed += --m->ref[m->e[i].block] == 0;
        m->e[i] = m->e[--m->n];
    }
    return freed;
}

static int m_evict(model *m, int n) {
    int freed = 0, f;
    while (freed < n && (f = m_evict_one(m)) >= 0) freed += f;
    return freed;
}

static int m_free(const model *m) {
    int f = 0;
    for (int b = 0; b < POOL; b++) f += m->ref[b] == 0;
    return f;
}

/* Expected status of rt_alloc_blocks(n) (evicting in the model as the tree should). */
static int m_alloc(model *m, int n) {
    int missing = n - m_free(m);
    if (missing <= 0) return 0;
    int pinned = 0;
    for (int i = 0; i < m->n; i++) pinned += m->e[i].pin > 0;
    if (missing > m->n - pinned) return RS_EFULL;
    m_evict(m, missing);
    return m_free(m) < n ? RS_EFULL : 0;
}

/* The partial block a match handed back really holds the matched tokens: a cached block of
 * the same path whose first l tokens are the query's. */
static int m_partial_ok(const model *m, uint64_t ns, const int32_t *tok, int k, int l,
                        int32_t block) {
    for (int i = 0; i < m->n; i++) {
        const ment *e = &m->e[i];
        if (e->block == block && e->ns == ns && e->k == k + 1 &&
            !memcmp(e->tok, tok, sizeof *tok * (size_t)(k * BS + l)))
            return 1;
    }
    return 0;
}

/* ------------------------------------------------------------------ comparison */

static int expect(int cond, long op, const char *what) {
    if (!cond && fails++ < 5) TAP_DIAG("op %ld: %s", op, what);
    return cond;
}

/* The whole tree against the model, and every pool reference count. */
static void compare(const rt_tree *t, const kv_pool *p, const model *m, long op) {
    rt_snapshot s;
    if (!expect(rt_snapshot_take(t, MAXT, &s, NULL) == 0, op, "snapshot")) return;
    int32_t prefix[64][MAXT]; /* prefix per depth along the current pre-order path */
    int plen[64] = {0}, seen = 0, pinned = 0, ok = 1;
    for (int i = 0; i < s.n && ok; i++) {
        const rt_snap_node *n = &s.nodes[i];
        if (n->depth == 0) continue;
        int base = plen[n->depth - 1];
        ok &= expect(base + n->n_tokens <= MAXT && n->depth < 64, op, "node too deep");
        if (!ok) break;
        memcpy(prefix[n->depth], prefix[n->depth - 1], sizeof(int32_t) * base);
        memcpy(prefix[n->depth] + base, n->tokens, sizeof(int32_t) * n->n_tokens);
        plen[n->depth] = base + n->n_tokens;
        for (int b = 0; b < n->n_blocks && ok; b++) {
            int j = m_find(m, n->ns, prefix[n->depth], base / BS + b + 1);
            ok &= expect(j >= 0, op, "tree caches a block the model does not");
            if (!ok) break;
            const ment *e = &m->e[j];
            ok &= expect(e->block == n->blocks[b], op, "block id differs");
            ok &= expect(e->last_access == n->last_access, op, "last access differs");
            ok &= expect(e->pin == n->pin, op, "pin count differs");
            ok &= expect(e->start == (b == 0), op, "node boundary differs");
            ok &= expect(b > 0 || e->hits == n->hits, op, "hit count differs");
            seen++;
            pinned += n->pin > 0;
        }
    }
    ok &= expect(seen == m->n, op, "model caches blocks the tree does not");
    ok &= expect(s.stats.cached_blocks == m->n && s.stats.pinned_blocks == pinned, op,
                 "cached/pinned block stats");
    ok &= expect(s.clock == m->clock, op, "clock");
    rs_err e = {0};
    ok &= expect(rt_check(t, &e) == 0, op, e.msg);
    for (int b = 0; b < POOL && ok; b++)
        ok &= expect(p->ref[b] == m->ref[b], op, "pool refcount != cache + sequences");
    rt_snapshot_free(&s);
}

/* ------------------------------------------------------------------ the workload */

static int32_t hist[HIST][MAXT];
static int hist_n[HIST];

static void gen_prompt(seq *q) {
    q->n = 0;
    if (rnd(10) < 7) { /* borrow a prefix of an earlier sequence */
        int h = (int)rnd(HIST);
        q->n = hist_n[h] ? (int)rnd((uint32_t)hist_n[h] + 1) : 0;
        memcpy(q->tok, hist[h], sizeof(int32_t) * q->n);
    }
    int target = q->n + (int)rnd(MAXT - q->n + 1);
    while (q->n < target) q->tok[q->n++] = (int32_t)rnd(3);
}

static void op_start(rt_tree *t, kv_pool *p, model *m, seq *q, long op) {
    q->used = 1;
    q->ns = rnd(5) < 3 ? 0 : rnd(3);
    gen_prompt(q);
    int ask = q->n > 0 ? q->n - 1 : 0; /* the last prompt token is always recomputed */
    int32_t want[MAXT];
    int end_k;
    int hit = m_match(m, q->ns, q->tok, ask, want, &end_k, q->pin_tok);
    int part = m_partial(m, q->ns, q->tok, hit / BS, ask);
    q->table.n = 0;
    int got = rt_match(t, q->ns, q->tok, ask, &q->table, &q->node);
    expect(got == hit + part && q->table.n == hit / BS + (part > 0) &&
               (hit == 0 || !memcmp(q->table.v, want, sizeof *want * (size_t)(hit / BS))) &&
               (part == 0 ||
                m_partial_ok(m, q->ns, q->tok, hit / BS, part, q->table.v[q->table.n - 1])) &&
               (q->node != NULL) == (end_k > 0),
           op, "match result");
    rt_pin(t, q->node);
    q->pin_k = end_k;
    if (end_k) m_pin(m, q->ns, q->pin_tok, end_k, +1);
    kv_retain_n(p, q->table.v, q->table.n);
    for (int i = 0; i < q->table.n; i++) m->ref[q->table.v[i]]++;
    if (part == 0) return;
    /* Copy-on-write of the partial block, as the scheduler does (the model evicts alike). */
    int32_t src = q->table.v[q->table.n - 1];
    int want_rc = m_alloc(m, 1);
    int rc = tc_copy_last(t, p, &q->table);
    expect(rc == want_rc, op, "copy-on-write allocation status");
    m->ref[src]--;
    if (rc) { /* no block for the copy: the match ends at its whole blocks */
        kv_release(p, src);
        q->table.n--;
        return;
    }
    m->ref[q->table.v[q->table.n - 1]] = 1;
}

/* Decode a few tokens, allocate the blocks they need, insert, move the pin to the new end. */
static void op_grow(rt_tree *t, model *m, seq *q, long op) {
    int add = (int)rnd(4);
    while (add-- > 0 && q->n < MAXT) q->tok[q->n++] = (int32_t)rnd(3);
    int need = (q->n + BS - 1) / BS - q->table.n;
    rs_ivec_reserve(&q->table, q->table.n + need + 1);
    int want = m_alloc(m, need);
    int rc = rt_alloc_blocks(t, need, q->table.v + q->table.n, NULL);
    if (!expect(rc == want, op, "allocation status") || rc) return;
    for (int i = 0; i < need; i++) {
        int32_t b = q->table.v[q->table.n + i];
        expect(m->ref[b] == 0, op, "allocated a block the model holds");
        m->ref[b] = 1;
    }
    q->table.n += need;
    m_insert(m, q->ns, q->tok, q->n, q->table.v);
    rt_node *node;
    expect(rt_insert(t, q->ns, q->tok, q->n, q->table.v, &node, NULL) == 0, op, "insert");
    rt_pin(t, node);
    rt_unpin(t, q->node);
    q->node = node;
    if (q->n >= BS) m_pin(m, q->ns, q->tok, q->n / BS, +1);
    if (q->pin_k) m_pin(m, q->ns, q->pin_tok, q->pin_k, -1);
    q->pin_k = q->n / BS;
    memcpy(q->pin_tok, q->tok, sizeof(int32_t) * q->n);
}

static void op_finish(rt_tree *t, kv_pool *p, model *m, seq *q) {
    rt_unpin(t, q->node);
    if (q->pin_k) m_pin(m, q->ns, q->pin_tok, q->pin_k, -1);
    kv_release_n(p, q->table.v, q->table.n);
    for (int i = 0; i < q->table.n; i++) m->ref[q->table.v[i]]--;
    int h = (int)rnd(HIST);
    memcpy(hist[h], q->tok, sizeof(int32_t) * q->n);
    hist_n[h] = q->n;
    q->used = 0;
    q->node = NULL;
    q->pin_k = 0;
}

static void op_lookup(rt_tree *t, model *m, long op) {
    seq q = {0};
    gen_prompt(&q);
    uint64_t ns = rnd(3);
    int32_t want[MAXT], end_tok[MAXT];
    int end_k;
    int hit = m_match(m, ns, q.tok, q.n, want, &end_k, end_tok);
    int part = m_partial(m, ns, q.tok, hit / BS, q.n);
    rt_node *node;
    int peek = rt_peek(t, ns, q.tok, q.n);
    int got = rt_match(t, ns, q.tok, q.n, &q.table, &node);
    expect(got == hit + part && peek == got &&
               (hit == 0 || !memcmp(q.table.v, want, sizeof *want * (size_t)(hit / BS))) &&
               (part == 0 || m_partial_ok(m, ns, q.tok, hit / BS, part, q.table.v[hit / BS])),
           op, "lookup result");
    rs_ivec_free(&q.table);
}

/* ------------------------------------------------------------------ token-granular tails */

/* A second workload for partial blocks (RT_TAIL inserts, mid-block matches, leaves that grow):
 * the model is the set of inserted token sequences, and a match must return the longest
 * common prefix with any of them, token for token. Every position's K slot is written with a
 * hash of the prefix it ends, so a returned block (shared or copied) is checked to hold the
 * query's own prefix at every matched slot. The pool is cleared (everything evicted) when it
 * runs low, and the model with it. */
enum { TBS = 4, TPOOL = 400, TMAXT = 26, TSEQ = 64, TOPS = 20000 };

static float prefix_hash(const int32_t *tok, int p) {
    uint32_t h = 2166136261u;
    for (int i = 0; i <= p; i++) h = (h ^ (uint32_t)tok[i]) * 16777619u;
    return (float)(h & 0xFFFFF); /* exact in a float */
}

static float *slot(kv_pool *p, int32_t block, int j) {
    return (float *)kv_tile(p, block, 0, 0, 0) + j;
}

typedef struct tseq {
    uint64_t ns;
    int32_t tok[TMAXT];
    int n;
} tseq;

static int t_lcp_max(const tseq *set, int n_set, uint64_t ns, const int32_t *q, int n) {
    int best = 0;
    for (int i = 0; i < n_set; i++) {
        if (set[i].ns != ns) continue;
        int l = 0;
        while (l < n && l < set[i].n && set[i].tok[l] == q[l]) l++;
        if (l > best) best = l;
    }
    return best;
}

/* Match as the scheduler does (copying a partial block), compute the rest, insert (with the
 * tail or not), release. Checks the match against the model and the slots it handed back. */
static int t_request(rt_tree *t, kv_pool *p, tseq *set, int *n_set, const tseq *q, int flags) {
    rs_ivec table = {0};
    rt_node *node = NULL;
    int ok = 1;
    int m = rt_match(t, q->ns, q->tok, q->n, &table, &node);
    ok &= m == t_lcp_max(set, *n_set, q->ns, q->tok, q->n) && rt_peek(t, q->ns, q->tok, q->n) == m;
    for (int i = 0; i < m && ok; i++)
        ok &= *slot(p, table.v[i / TBS], i % TBS) == prefix_hash(q->tok, i);
    rt_pin(t, node);
    kv_retain_n(p, table.v, table.n);
    int need = (q->n + TBS - 1) / TBS - table.n;
    ok &= rs_ivec_reserve(&table, table.n + need + 1) == 0;
    if (ok && m % TBS) ok &= tc_copy_last(t, p, &table) == 0;
    ok &= ok && rt_alloc_blocks(t, need, table.v + table.n, NULL) == 0;
    if (ok) {
        table.n += need;
        for (int i = m; i < q->n; i++) *slot(p, table.v[i / TBS], i % TBS) = prefix_hash(q->tok, i);
        rs_err e = {0};
        ok &= rt_insert_ex(t, q->ns, q->tok, q->n, table.v, flags, NULL, &e) == 0;
        int kept = flags & RT_TAIL ? q->n : q->n / TBS * TBS;
        if (kept > 0 && *n_set < TOPS) {
            set[*n_set] = *q;
            set[(*n_set)++].n = kept;
        }
    }
    rt_unpin(t, node);
    kv_release_n(p, table.v, table.n);
    rs_ivec_free(&table);
    return ok;
}

static void test_tails(void) {
    kv_pool p;
    rt_tree *t;
    TAP_OK(tc_setup(&p, &t, TBS, TPOOL) == 0, "tails: pool and tree");
    tseq *set = calloc(TOPS, sizeof *set), recent[TSEQ] = {{0}};
    int n_set = 0, ok = 1, mid = 0, clears = 0;
    for (long op = 0; op < TOPS && ok; op++) {
        tseq q = {.ns = rnd(4) == 0};
        const tseq *b = &recent[rnd(TSEQ)];
        if (rnd(10) < 8 && b->n) { /* a prefix of a recent one, then new tokens */
            q.ns = b->ns;
            q.n = (int)rnd((uint32_t)b->n + 1);
            memcpy(q.tok, b->tok, sizeof *q.tok * (size_t)q.n);
        }
        int target = q.n + (int)rnd(TMAXT - q.n + 1);
        while (q.n < target) q.tok[q.n++] = (int32_t)rnd(3);
        if (q.n == 0) continue;
        int lcp = t_lcp_max(set, n_set, q.ns, q.tok, q.n);
        mid += lcp % TBS != 0;
        ok &= t_request(t, &p, set, &n_set, &q, (rnd(4) ? RT_TAIL : 0) | (rnd(3) ? 0 : RT_COLD));
        recent[rnd(TSEQ)] = q;
        rs_err e = {0};
        if (!(ok &= rt_check(t, &e) == 0)) TAP_DIAG("op %ld: %s", op, e.msg);
        rt_stats s;
        rt_get_stats(t, &s);
        ok &= s.used_blocks == s.cached_blocks && s.pinned_blocks == 0;
        if (s.free_blocks < 16) {
            rt_evict(t, TPOOL);
            n_set = 0;
            clears++;
            ok &= p.n_free == TPOOL;
        }
        if (!ok) TAP_DIAG("op %ld failed (%d cached sequences)", op, n_set);
    }
    TAP_OK(ok,
           "tails: %d requests, each match == the longest common prefix with what was "
           "inserted, every matched slot holds its own prefix's K, tree invariants hold",
           TOPS);
    TAP_OK(mid > 1000 && clears > 3, "tails: %d matches ended mid-block, %d pool clears", mid,
           clears);
    free(set);
    tc_teardown(&p, t);
}

int main(void) {
    test_tails();
    kv_pool p;
    rt_tree *t;
    TAP_OK(tc_setup(&p, &t, BS, POOL) == 0, "pool and tree");
    model *m = calloc(1, sizeof *m);
    seq live[LIVE] = {0};
    long evictions = 0, efull = 0, hits = 0;
    for (long op = 0; op < OPS && fails == 0; op++) {
        seq *q = &live[rnd(LIVE)];
        uint32_t r = rnd(100);
        rt_stats before;
        rt_get_stats(t, &before);
        if (r < 8) {
            op_lookup(t, m, op);
        } else if (r < 12) {
            int n = 1 + (int)rnd(4);
            expect(rt_evict(t, n) == m_evict(m, n), op, "explicit eviction");
        } else if (!q->used) {
            op_start(t, &p, m, q, op);
        } else if (r < 70) {
            op_grow(t, m, q, op);
        } else {
            op_finish(t, &p, m, q);
        }
        rt_stats after;
        rt_get_stats(t, &after);
        evictions += after.evicted_nodes - before.evicted_nodes;
        hits += after.hit_tokens - before.hit_tokens;
        efull += after.free_blocks == 0;
        compare(t, &p, m, op);
    }
    TAP_OK(fails == 0,
           "%d operations: tree == model after each (matches, splits, LRU order, "
           "pins, refcounts)",
           OPS);
    TAP_OK(evictions > 1000 && hits > 10000 && efull > 1000,
           "the workload exercised eviction (%ld nodes), hits (%ld tokens), a full pool (%ld)",
           evictions, hits, efull);
    for (int i = 0; i < LIVE; i++) {
        if (live[i].used) op_finish(t, &p, m, &live[i]);
        rs_ivec_free(&live[i].table);
    }
    rt_stats s;
    rt_get_stats(t, &s);
    TAP_OK(s.pinned_blocks == 0 && s.used_blocks == s.cached_blocks,
           "after all sequences end: nothing pinned, used == cached (%d)", s.cached_blocks);
    rt_free(t);
    TAP_OK(p.n_free == POOL, "rt_free returns every block");
    free(m);
    kv_pool_free(&p);
    return tap_done();
}
