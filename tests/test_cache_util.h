/*
 * test_cache_util.h — small helpers shared by the cache tests: a tiny pool, a request's life
 * (match, pin, allocate, insert, unpin, release) as the scheduler runs it, and a rendering of
 * the tree as a string such as "root-[SP]-{[U1 A1],[U3 A3]-[U4 A4]}".
 */
#ifndef RADIXSERVE_TEST_CACHE_UTIL_H
#define RADIXSERVE_TEST_CACHE_UTIL_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cache/cache.h"

/* A pool of exactly n_blocks blocks of bs tokens, with the smallest geometry. */
static inline int tc_pool(kv_pool *p, int bs, int n_blocks) {
    kv_pool_config c = {
        .n_layers = 1, .n_kv_heads = 1, .head_dim = 1, .block_size = bs, .dtype = KV_F32};
    c.budget_bytes = kv_block_bytes(&c) * (size_t)n_blocks;
    rs_err e = {0};
    return kv_pool_init(p, &c, &e);
}

/* A pool of n_blocks blocks and a tree on it (for tests that start from scratch). */
static inline int tc_setup(kv_pool *p, rt_tree **t, int bs, int n_blocks) {
    int rc = tc_pool(p, bs, n_blocks);
    return rc ? rc : rt_init(t, p, NULL);
}

static inline void tc_teardown(kv_pool *p, rt_tree *t) {
    rt_free(t);
    kv_pool_free(p);
}

/* xorshift64: a deterministic stream for randomized tests and benches; 0 <= result < n. */
static inline uint32_t tc_rnd(uint64_t *state, uint32_t n) {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    return (uint32_t)(*state % n);
}

/* Copy-on-write of a match that ended mid-block: the last block of the table (held, one
 * reference) is the tree's; replace it by a fresh private copy (allocating, maybe evicting: the
 * reference held keeps the source alive). Returns 0 or rt_alloc_blocks' status (the table is
 * then left as it was). */
static inline int tc_copy_last(rt_tree *t, kv_pool *p, rs_ivec *table) {
    int32_t src = table->v[table->n - 1], dst;
    int rc = rt_alloc_blocks(t, 1, &dst, NULL);
    if (rc) return rc;
    kv_copy(p, dst, src);
    kv_release(p, src);
    table->v[table->n - 1] = dst;
    return 0;
}

/* One request as the scheduler runs it: match all but the last prompt token (a fully cached
 * prompt recomputes its last token privately), pin, hold the matched blocks (copying a partial
 * last one), allocate the rest
 * (evicting), "compute", insert prompt + output, unpin, release. Returns the matched token
 * count, or a negative RS_E* code when allocation failed (nothing held then). */
static inline int tc_request(rt_tree *t, kv_pool *p, uint64_t ns, const int32_t *toks, int n_prompt,
                             int n_total) {
    int bs = p->block_size;
    rs_ivec blocks = {0};
    rt_node *node = NULL;
    int hit = rt_match(t, ns, toks, n_prompt > 0 ? n_prompt - 1 : 0, &blocks, &node);
    if (hit < 0) return hit;
    rt_pin(t, node);
    kv_retain_n(p, blocks.v, blocks.n);
    int rc = hit % bs ? tc_copy_last(t, p, &blocks) : 0;
    int need = (n_total + bs - 1) / bs - blocks.n;
    if (!rc) rc = rs_ivec_reserve(&blocks, blocks.n + need);
    if (!rc) rc = rt_alloc_blocks(t, need, blocks.v + blocks.n, NULL);
    if (!rc) {
        blocks.n += need;
        rc = rt_insert_ex(t, ns, toks, n_total, blocks.v, RT_TAIL, NULL, NULL);
    }
    rt_unpin(t, node);
    kv_release_n(p, blocks.v, blocks.n);
    rs_ivec_free(&blocks);
    return rc ? rc : hit;
}

/* Insert toks[0, n) with fresh blocks and release the caller's references: the tree alone
 * holds the blocks afterwards. Returns rt_insert's status (or the allocation's). */
static inline int tc_insert(rt_tree *t, kv_pool *p, uint64_t ns, const int32_t *toks, int n,
                            rt_node **node) {
    int nb = n / p->block_size;
    int32_t *b = malloc(sizeof *b * (size_t)(nb ? nb : 1));
    int rc = rt_alloc_blocks(t, nb, b, NULL);
    if (!rc) {
        rc = rt_insert(t, ns, toks, n, b, node, NULL);
        kv_release_n(p, b, nb);
    }
    free(b);
    return rc;
}

/* Segment names for rendering: token value = segment * 1000 + offset. */
typedef const char *(*tc_namer)(int segment);

/* Render one node's edge as "[A B C]": a name for every segment that starts or continues on it. */
static inline void tc_edge(char *out, size_t cap, const rt_snap_node *n, tc_namer name) {
    size_t len = strlen(out);
    int last = -1;
    len += (size_t)snprintf(out + len, cap - len, "[");
    for (int i = 0; i < n->n_copied && len < cap; i++) {
        int seg = n->tokens[i] / 1000;
        if (seg == last) continue;
        len += (size_t)snprintf(out + len, cap - len, "%s%s", last < 0 ? "" : " ", name(seg));
        last = seg;
    }
    if (len < cap) snprintf(out + len, cap - len, "]");
}

/* Render the subtree below snapshot node i (its children), pre-order layout. */
static inline int tc_render_children(char *out, size_t cap, const rt_snapshot *s, int i,
                                     tc_namer name) {
    int kids[64], nk = 0, depth = i < 0 ? -1 : s->nodes[i].depth;
    uint64_t id = i < 0 ? 0 : s->nodes[i].id;
    for (int j = i + 1; j < s->n && s->nodes[j].depth > depth; j++)
        if (s->nodes[j].parent == id && s->nodes[j].depth == depth + 1 && nk < 64) kids[nk++] = j;
    if (nk == 0) return 0;
    size_t len = strlen(out);
    snprintf(out + len, cap - len, nk > 1 ? "-{" : "-");
    for (int k = 0; k < nk; k++) {
        if (k) strncat(out, ",", cap - strlen(out) - 1);
        tc_edge(out, cap, &s->nodes[kids[k]], name);
        tc_render_children(out, cap, s, kids[k], name);
    }
    if (nk > 1) strncat(out, "}", cap - strlen(out) - 1);
    return nk;
}

/* "root-..." for the namespace ns (its namespace node stands for the root). */
static inline void tc_render(const rt_tree *t, uint64_t ns, tc_namer name, char *out, size_t cap) {
    rt_snapshot s;
    snprintf(out, cap, "root");
    if (rt_snapshot_take(t, 1 << 20, &s, NULL)) return;
    for (int i = 0; i < s.n; i++)
        if (s.nodes[i].depth == 0 && s.nodes[i].ns == ns) tc_render_children(out, cap, &s, i, name);
    rt_snapshot_free(&s);
}

#endif
