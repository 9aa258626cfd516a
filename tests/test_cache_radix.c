/* test_cache_radix.c — unit tests of the radix tree: match, insert, split, pin, evict,
 * allocation with eviction, namespaces, bad input, statistics and the snapshot. */
#include <string.h>

#include "cache/cache.h"
#include "tests/tap.h"
#include "tests/test_cache_util.h"

enum { BS = 4 };

static const char *seg_name(int seg) {
    static const char *names[] = {"X", "A", "B", "C", "D", "E", "F", "G"};
    return seg >= 0 && seg < 8 ? names[seg] : "?";
}

/* toks[i] = seg * 1000 + i for n tokens, so rendering shows the segment name. */
static void fill(int32_t *toks, int seg, int n) {
    for (int i = 0; i < n; i++) toks[i] = seg * 1000 + i;
}

static void render(rt_tree *t, uint64_t ns, char *out) {
    tc_render(t, ns, seg_name, out, 512);
}

static void test_empty(void) {
    kv_pool p;
    rt_tree *t;
    tc_setup(&p, &t, BS, 8);
    int32_t a[16];
    fill(a, 1, 16);
    rs_ivec b = {0};
    rt_node *node = (rt_node *)&b;
    TAP_OK(rt_match(t, 0, a, 16, &b, &node) == 0 && !node && b.n == 0, "empty tree: no match");
    TAP_OK(rt_match(t, 0, a, 0, &b, &node) == 0 && !node, "empty prompt: matches nothing");
    TAP_OK(rt_match(t, 0, NULL, 0, &b, &node) == 0, "empty prompt with NULL tokens is fine");
    TAP_OK(rt_match(t, 0, a, -1, &b, &node) == RS_EINVAL, "negative length is an error");
    TAP_OK(rt_insert(t, 0, a, 0, NULL, &node, NULL) == 0 && !node, "empty insert: nothing");
    int32_t blk = kv_alloc(&p);
    TAP_OK(rt_insert(t, 0, a, BS - 1, &blk, &node, NULL) == 0 && !node,
           "insert shorter than a block caches nothing (the partial block stays private)");
    kv_release(&p, blk);
    rt_stats s;
    rt_get_stats(t, &s);
    TAP_OK(s.nodes == 0 && s.cached_blocks == 0 && s.namespaces == 0 && s.free_blocks == 8,
           "still empty: %lld nodes, %d cached, %d namespaces", (long long)s.nodes, s.cached_blocks,
           s.namespaces);
    rt_free(t);
    rt_free(NULL);
    kv_pool_free(&p);
}

static void test_match_insert_split(void) {
    kv_pool p;
    rt_tree *t;
    tc_setup(&p, &t, BS, 16);
    int32_t a[12], c[20];
    fill(a, 1, 12);
    rt_node *leaf;
    TAP_OK(tc_insert(t, &p, 0, a, 12, &leaf) == 0 && leaf, "insert 3 blocks");
    rt_stats s;
    rt_get_stats(t, &s);
    TAP_OK(s.nodes == 1 && s.cached_blocks == 3 && s.used_blocks == 3,
           "one node, 3 cached blocks, the tree alone holds them");
    rs_ivec b = {0};
    rt_node *node;
    TAP_OK(rt_match(t, 0, a, 12, &b, &node) == 12 && node == leaf && b.n == 3 && b.v[0] == 0 &&
               b.v[2] == 2,
           "full match returns all blocks in order");
    b.n = 0;
    TAP_OK(rt_match(t, 0, a, 11, &b, &node) == 11 && node == leaf && b.n == 3 && b.v[2] == 2,
           "fully cached prompt asked as n-1: 11 tokens, the last block's 3 to copy");
    rt_get_stats(t, &s);
    TAP_OK(s.nodes == 1, "a match ending inside an edge does not split it");
    b.n = 0;
    TAP_OK(rt_match(t, 0, a, 7, &b, &node) == 7 && node == leaf && b.n == 2,
           "a prompt that is a prefix of a cached one matches every token (mid-block)");
    memcpy(c, a, sizeof a);
    fill(c + 12, 2, 8);
    b.n = 0;
    TAP_OK(rt_match(t, 0, c, 20, &b, &node) == 12 && node == leaf,
           "a longer prompt matches the cached sequence");
    c[6] = 1500; /* diverge inside block 1 */
    b.n = 0;
    TAP_OK(rt_match(t, 0, c, 20, &b, &node) == 6 && b.n == 2,
           "divergence mid-block: the whole block, then 2 tokens of the next");
    char r[512];
    TAP_OK(tc_insert(t, &p, 0, c, 20, &node) == 0, "insert a sequence diverging in block 1");
    render(t, 0, r);
    TAP_OK(!strcmp(r, "root-[A]-{[A],[A B]}"), "split at the block boundary: %s", r);
    rt_get_stats(t, &s);
    TAP_OK(s.nodes == 3 && s.cached_blocks == 3 + 4, "3 nodes, 7 blocks (got %lld, %d)",
           (long long)s.nodes, s.cached_blocks);
    /* Insert an already-cached prefix with the caller's own (recomputed) blocks. */
    int32_t mine[2];
    TAP_OK(rt_alloc_blocks(t, 2, mine, NULL) == 0, "allocate 2 private blocks");
    TAP_OK(rt_insert(t, 0, a, 8, mine, &node, NULL) == 0 && node, "insert a cached prefix");
    TAP_OK(p.ref[mine[0]] == 1 && p.ref[mine[1]] == 1,
           "the caller's duplicate blocks are left alone (refcount 1 each)");
    rt_get_stats(t, &s);
    TAP_OK(s.cached_blocks == 7 && s.nodes == 4,
           "the tree keeps its own blocks; the edge split where the insert ended (%d, %lld)",
           s.cached_blocks, (long long)s.nodes);
    render(t, 0, r);
    TAP_OK(!strcmp(r, "root-[A]-{[A]-[A],[A B]}"), "tree after the prefix insert: %s", r);
    kv_release_n(&p, mine, 2);
    b.n = 0;
    TAP_OK(rt_match(t, 0, a, 12, &b, &node) == 12 && b.v[0] == 0 && b.v[1] == 1 && b.v[2] == 2,
           "the original blocks are still the ones served");
    rs_ivec_free(&b);
    rt_free(t);
    TAP_OK(p.n_free == p.n_blocks, "rt_free released every block");
    kv_pool_free(&p);
}

static void test_pin_and_evict(void) {
    kv_pool p;
    rt_tree *t;
    tc_setup(&p, &t, BS, 16);
    int32_t x[8], y[8], z[8];
    fill(x, 1, 8);
    fill(y, 1, 8);
    fill(y + 4, 2, 4); /* y = [A][B]: shares x's first block */
    fill(z, 3, 8);
    rt_node *nx, *ny, *nz;
    tc_insert(t, &p, 0, x, 8, &nx);
    tc_insert(t, &p, 0, y, 8, &ny);
    tc_insert(t, &p, 0, z, 8, &nz);
    char r[512];
    render(t, 0, r);
    TAP_OK(!strcmp(r, "root-{[A]-{[A],[B]},[C]}"), "tree: %s", r);
    /* LRU: x is the oldest leaf; touching it makes y the oldest. */
    rs_ivec b = {0};
    rt_node *node;
    rt_match(t, 0, x, 8, &b, &node);
    TAP_OK(node == nx, "match returns x's leaf");
    TAP_OK(rt_evict(t, 1) == 1, "evict one block");
    render(t, 0, r);
    TAP_OK(!strcmp(r, "root-{[A]-[A],[C]}"), "the least recently used leaf (y's [B]) went: %s", r);
    /* Eviction beside a pinned node: pin x's leaf; its parent [A] is protected too. */
    rt_pin(t, nx);
    rt_stats s;
    rt_get_stats(t, &s);
    TAP_OK(s.pinned_blocks == 2, "pinning a leaf pins its path (2 blocks, got %d)",
           s.pinned_blocks);
    TAP_OK(rt_evict(t, 100) == 2, "evict everything evictable: only z's 2 blocks");
    render(t, 0, r);
    TAP_OK(!strcmp(r, "root-[A]-[A]"), "the pinned path survives: %s", r);
    int32_t got[16];
    TAP_OK(rt_alloc_blocks(t, 15, got, NULL) == RS_EFULL, "15 blocks cannot be made free");
    rt_get_stats(t, &s);
    TAP_OK(s.cached_blocks == 2 && s.free_blocks == 14, "a failed allocation evicts nothing");
    TAP_OK(rt_alloc_blocks(t, 17, got, NULL) == RS_ETOOBIG, "more than the pool: too big");
    rt_pin(t, nx); /* pins nest */
    rt_unpin(t, nx);
    TAP_OK(rt_evict(t, 1) == 0, "still pinned once: nothing evictable");
    rt_unpin(t, nx);
    TAP_OK(rt_alloc_blocks(t, 15, got, NULL) == 0, "after unpinning, eviction makes room");
    rt_get_stats(t, &s);
    TAP_OK(s.nodes == 1 && s.cached_blocks == 1 && s.free_blocks == 0,
           "the leaf went first, then just enough (its parent stays): %lld nodes, %d cached",
           (long long)s.nodes, s.cached_blocks);
    TAP_OK(s.evicted_blocks == 4 && s.evicted_nodes == 3, "evictions counted (%lld blocks)",
           (long long)s.evicted_blocks);
    kv_release_n(&p, got, 15);
    rs_ivec_free(&b);
    tc_teardown(&p, t);
}

static void test_budget_of_one(void) {
    kv_pool p;
    rt_tree *t;
    tc_setup(&p, &t, BS, 1);
    int32_t a[8], b[8];
    fill(a, 1, 8);
    fill(b, 2, 8);
    TAP_OK(tc_request(t, &p, 0, a, 3, 4) == 0, "one-block request fits");
    TAP_OK(tc_request(t, &p, 0, b, 3, 4) == 0, "the next one evicts it");
    char r[512];
    render(t, 0, r);
    TAP_OK(!strcmp(r, "root-[B]"), "only the newest is cached: %s", r);
    TAP_OK(tc_request(t, &p, 0, a, 5, 8) == RS_ETOOBIG, "a two-block request can never fit");
    rt_node *n;
    rs_ivec v = {0};
    rt_match(t, 0, b, 4, &v, &n);
    rt_pin(t, n);
    int32_t got;
    TAP_OK(rt_alloc_blocks(t, 1, &got, NULL) == RS_EFULL, "pinned: the pool is full, said so");
    rt_unpin(t, n);
    TAP_OK(rt_alloc_blocks(t, 1, &got, NULL) == 0 && got == 0, "unpinned: evicted and reused");
    kv_release(&p, got);
    rs_ivec_free(&v);
    tc_teardown(&p, t);
}

static void test_namespaces(void) {
    kv_pool p;
    rt_tree *t;
    tc_setup(&p, &t, BS, 16);
    int32_t a[8];
    fill(a, 1, 8);
    rt_node *n1, *n0;
    tc_insert(t, &p, 7, a, 8, &n1);
    rs_ivec b = {0};
    rt_node *node;
    TAP_OK(rt_match(t, 0, a, 8, &b, &node) == 0 && !node, "tenant 7's prefix is invisible to 0");
    TAP_OK(rt_match(t, 7, a, 8, &b, &node) == 8 && node == n1, "and visible to tenant 7");
    tc_insert(t, &p, 0, a, 8, &n0);
    rt_stats s;
    rt_get_stats(t, &s);
    TAP_OK(n0 != n1 && s.cached_blocks == 4 && s.namespaces == 2,
           "the same tokens in two namespaces are two nodes with their own blocks");
    b.n = 0;
    rt_match(t, 0, a, 8, &b, &node);
    TAP_OK(b.n == 2 && b.v[0] == 2, "namespace 0 serves its own blocks");
    rt_evict(t, 100);
    rt_get_stats(t, &s);
    TAP_OK(s.namespaces == 0 && s.nodes == 0 && s.free_blocks == 16,
           "evicting everything drops the empty namespaces too");
    rs_ivec_free(&b);
    tc_teardown(&p, t);
}

static void test_bad_input(void) {
    kv_pool p;
    rt_tree *t;
    rs_err e = {0};
    tc_pool(&p, BS, 8);
    TAP_OK(rt_init(&t, NULL, &e) == RS_EINVAL, "init without a pool: %s", e.msg);
    rt_init(&t, &p, NULL);
    int32_t a[8], c[8];
    fill(a, 1, 8);
    fill(c, 2, 8);
    int32_t blk[2] = {0, 99};
    TAP_OK(rt_insert(t, 0, a, 8, blk, NULL, &e) == RS_EINVAL, "block out of range: %s", e.msg);
    blk[1] = 1;
    TAP_OK(rt_insert(t, 0, a, 8, blk, NULL, &e) == RS_EINVAL, "free block: %s", e.msg);
    rt_alloc_blocks(t, 2, blk, NULL);
    int32_t dup[2] = {blk[0], blk[0]};
    TAP_OK(rt_insert(t, 0, a, 8, dup, NULL, &e) == RS_EINVAL, "same block twice: %s", e.msg);
    TAP_OK(rt_insert(t, 0, a, 8, blk, NULL, &e) == 0, "a good insert");
    TAP_OK(rt_insert(t, 0, c, 8, blk, NULL, &e) == RS_EINVAL,
           "another sequence reusing cached blocks is refused: %s", e.msg);
    TAP_OK(rt_insert(t, 0, a, 8, NULL, NULL, &e) == RS_EINVAL, "NULL blocks: %s", e.msg);
    rt_stats s;
    rt_get_stats(t, &s);
    TAP_OK(s.nodes == 1 && s.cached_blocks == 2 && p.ref[blk[0]] == 2,
           "failed inserts changed nothing");
    int32_t out[2];
    TAP_OK(rt_alloc_blocks(t, -1, out, &e) == RS_EINVAL, "negative allocation: %s", e.msg);
    TAP_OK(rt_alloc_blocks(t, 0, NULL, &e) == 0, "allocating nothing is fine");
    TAP_OK(rt_snapshot_take(t, -1, &(rt_snapshot){0}, &e) == RS_EINVAL, "bad snapshot arg");
    kv_release_n(&p, blk, 2);
    tc_teardown(&p, t);
}

static void test_stats_and_snapshot(void) {
    kv_pool p;
    rt_tree *t;
    tc_setup(&p, &t, BS, 8);
    int32_t a[12];
    fill(a, 1, 12);
    TAP_OK(tc_request(t, &p, 0, a, 10, 12) == 0, "cold request");
    TAP_OK(tc_request(t, &p, 0, a, 12, 12) == 11, "warm: all 11 asked tokens hit");
    rt_stats s;
    rt_get_stats(t, &s);
    TAP_OK(s.lookups == 2 && s.hit_tokens == 11 && s.miss_tokens == 9,
           "lookups 2, hit 11, miss 9 (got %lld %lld %lld)", (long long)s.lookups,
           (long long)s.hit_tokens, (long long)s.miss_tokens);
    TAP_OK(s.used_blocks == 3 && s.pinned_blocks == 0, "after both requests only the tree holds");
    TAP_OK(rt_peek(t, 0, a, 12) == 12 && rt_peek(t, 0, a, 7) == 7 && rt_peek(t, 1, a, 12) == 0 &&
               rt_peek(t, 0, a, -1) == RS_EINVAL,
           "peek gives match lengths");
    rt_stats s2;
    rt_get_stats(t, &s2);
    TAP_OK(s2.lookups == 2 && s2.hit_tokens == 11, "peek counts no lookups and no hits");
    rt_node *n;
    rs_ivec b = {0};
    rt_match(t, 0, a, 12, &b, &n);
    rt_pin(t, n);
    rt_snapshot snap;
    TAP_OK(rt_snapshot_take(t, 2, &snap, NULL) == 0 && snap.n == 2, "snapshot: ns + 1 node");
    TAP_OK(snap.nodes[1].n_tokens == 12 && snap.nodes[1].n_copied == 2 &&
               snap.nodes[1].tokens[1] == 1001 && snap.nodes[1].pin == 1 &&
               snap.nodes[1].parent == snap.nodes[0].id && snap.nodes[0].parent == 0,
           "snapshot node: tokens, first tokens, pin, parent");
    TAP_OK(snap.nodes[1].hits == 2 && snap.nodes[0].hits == 0,
           "hits: the warm match ending inside the edge and the full one (got %lld)",
           (long long)snap.nodes[1].hits);
    char *js = NULL;
    TAP_OK(rt_snapshot_json(&snap, &js, NULL) == 0 && js, "json");
    TAP_OK(js && strstr(js, "\"n_tokens\":12") && strstr(js, "\"tokens\":[1000,1001]") &&
               strstr(js, "\"pin\":1") && strstr(js, "\"cached_blocks\":3") &&
               strstr(js, "\"ns\":\"0\"") && strstr(js, "\"hits\":2"),
           "json has the fields: %.200s", js ? js : "");
    free(js);
    rt_snapshot_free(&snap);
    rt_unpin(t, n);
    rs_ivec_free(&b);
    tc_teardown(&p, t);
}

/* Children found by binary search: many siblings under one node all resolve. */
static void test_many_children(void) {
    kv_pool p;
    rt_tree *t;
    tc_setup(&p, &t, BS, 2048);
    int32_t s[8];
    int ok = 1;
    for (int i = 0; i < 1000; i++) {
        fill(s, 1, 4);
        for (int j = 0; j < 4; j++) s[4 + j] = (i * 7919) % 1000 * 10 + j; /* shuffled order */
        ok &= tc_insert(t, &p, 0, s, 8, NULL) == 0;
    }
    rs_ivec b = {0};
    rt_node *n;
    for (int i = 0; i < 1000 && ok; i++) {
        fill(s, 1, 4);
        for (int j = 0; j < 4; j++) s[4 + j] = i * 10 + j;
        b.n = 0;
        ok &= rt_match(t, 0, s, 8, &b, &n) == 8;
    }
    rt_stats st;
    rt_get_stats(t, &st);
    TAP_OK(ok && st.nodes == 1001 && st.cached_blocks == 1001,
           "1000 siblings under one node, each found (%lld nodes)", (long long)st.nodes);
    size_t mem = rt_mem_bytes(t), per_tok = mem / (1001 * BS);
    TAP_OK(mem > 1001 * BS * sizeof(int32_t) && per_tok < 64,
           "tree memory counts every edge's tokens, modest per token (%zu bytes, %zu/token)", mem,
           per_tok);
    rs_ivec_free(&b);
    tc_teardown(&p, t);
}

/* Warming's cold inserts: new leaves are evicted before everything else, a cold match counts
 * nothing, and a live match through warm blocks counts them once as warm hits. */
static void test_cold(void) {
    kv_pool p;
    rt_tree *t;
    tc_setup(&p, &t, BS, 16);
    int32_t a[8], b[8], c[8];
    fill(a, 1, 8);
    fill(b, 2, 8);
    fill(c, 3, 8);
    rt_node *n;
    TAP_OK(tc_insert(t, &p, 0, a, 8, &n) == 0, "cold: insert A (live)");
    int32_t blk[2];
    rs_err e = {0};
    rt_alloc_blocks(t, 2, blk, NULL);
    TAP_OK(rt_insert_ex(t, 0, b, 8, blk, RT_COLD, NULL, &e) == 0, "cold: insert B (warming)");
    kv_release_n(&p, blk, 2);
    TAP_OK(tc_insert(t, &p, 0, c, 8, &n) == 0, "cold: insert C (live, after B)");
    rs_ivec got = {0};
    rt_stats s0, s1;
    rt_get_stats(t, &s0);
    TAP_OK(rt_match_ex(t, 0, b, 7, RT_COLD, &got, &n) == 7, "cold match sees B");
    rt_get_stats(t, &s1);
    TAP_OK(s1.lookups == s0.lookups && s1.hit_tokens == s0.hit_tokens && s1.warm_hit_tokens == 0,
           "a cold match counts nothing");
    TAP_OK(rt_evict(t, 1) == 2 && rt_peek(t, 0, b, 8) == 0 && rt_peek(t, 0, a, 8) == 8,
           "B (cold) is evicted first although A is older");
    rt_alloc_blocks(t, 2, blk, NULL);
    rt_insert_ex(t, 0, b, 8, blk, RT_COLD, NULL, &e);
    kv_release_n(&p, blk, 2);
    got.n = 0;
    TAP_OK(rt_match(t, 0, b, 7, &got, &n) == 7, "a live match through warmed B");
    got.n = 0;
    rt_match(t, 0, b, 7, &got, &n);
    rt_get_stats(t, &s1);
    TAP_OK(s1.warm_hit_tokens == 7, "warm hits counted once: %lld", (long long)s1.warm_hit_tokens);
    TAP_OK(rt_check(t, &e) == 0, "tree invariants: %s", e.msg);
    rs_ivec_free(&got);
    tc_teardown(&p, t);
}

int main(void) {
    test_cold();
    test_empty();
    test_match_insert_split();
    test_pin_and_evict();
    test_budget_of_one();
    test_namespaces();
    test_bad_input();
    test_stats_and_snapshot();
    test_many_children();
    return tap_done();
}
