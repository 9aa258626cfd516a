/*
 * rt_internal.h — the radix tree's private layout, shared by radix.c (shape), lru.c (eviction
 * order) and rt_snapshot.c (read-only views). Nothing outside cache/ includes it.
 *
 * Shape: one root; its children are namespace nodes (no tokens, one per namespace in use,
 * sorted by namespace id); below them, token nodes whose edge is a run of blocks starting at a
 * block boundary: whole blocks, except that a leaf's last block may be partial (its first
 * n_tokens % block_size slots hold the edge's last tokens; a prompt's tail that ended there).
 * A token node's children are sorted by their first block (lexicographic over the first
 * min(block_size, n_tokens) tokens, a proper prefix first): siblings always differ within the
 * tokens their first blocks both have, because edges split only at block boundaries and an
 * insert that extends a partial leaf's tokens grows that leaf instead of adding a sibling, so a
 * binary search over the first block finds the one child to follow.
 *
 * Invariants (rt_check verifies them all):
 *  T1. Every token node has n_blocks > 0, its parent's pointer to it, and its parent's ns;
 *      namespace nodes (children of the root) have no tokens and at least one child.
 *  T2. Siblings are strictly sorted by key (namespace id, or first block).
 *  T3. Every block on an edge is in range, referenced (ref > 0) and flagged in in_tree; no
 *      block is on two edges; cached_blocks counts them and in_tree flags nothing else.
 *  T4. pin of a node >= the sum of its children's pins (the difference is the pins taken on
 *      the node itself); pinned_blocks == blocks on edges with pin > 0.
 *  T5. A node is in the LRU heap exactly when it is evictable (an unpinned token leaf), at
 *      the index it records; nodes and n_ns count the token and namespace nodes.
 *  T6. n_blocks == ceil(n_tokens / block_size); only a leaf has a partial last block; no
 *      sibling's first-block tokens are a prefix of another's.
 */
#ifndef RADIXSERVE_RT_INTERNAL_H
#define RADIXSERVE_RT_INTERNAL_H

#include "cache/cache.h"

struct rt_node {
    rt_node *parent;      /* NULL for the root */
    rt_node **child;      /* children, sorted (by namespace under the root, else first block) */
    int n_child;          /* used entries of child */
    int cap_child;        /* allocated entries of child */
    int32_t *tokens;      /* n_tokens token ids of this edge, owned */
    int32_t *blocks;      /* n_blocks block ids; the tree holds one kv reference to each */
    int n_tokens;         /* tokens on this edge; a multiple of block_size unless a leaf */
    int n_blocks;         /* blocks on this edge (the last may be partial, at a leaf only); 0
                             only for the root and namespace nodes */
    int32_t pin;          /* pins on this node plus pins on all its descendants */
    int32_t heap_idx;     /* position in the LRU heap, -1 when not evictable right now */
    uint64_t last_access; /* logical clock value of the last match/insert that used the edge */
    int64_t hits;         /* rt_match calls that reused at least one block of this edge (a split
                             gives both halves the count so far: an upper bound for the lower) */
    uint64_t id;          /* creation number: unique, stable, the LRU tie-break */
    uint64_t ns;          /* namespace this node belongs to */
};

/* A binary min-heap of evictable nodes (unpinned token leaves), ordered by (last_access, id),
 * so the least recently used comes first and ties go to the older node. */
typedef struct rt_heap {
    rt_node **a; /* heap array; a[i]->heap_idx == i */
    int n;       /* entries in use */
    int cap;     /* allocated entries */
} rt_heap;

struct rt_tree {
    kv_pool *pool;           /* the block pool the edges' blocks live in (not owned) */
    int bs;                  /* block size in tokens, copied from the pool */
    rt_node root;            /* the root (no tokens); children are namespace nodes */
    rt_heap lru;             /* evictable nodes */
    uint64_t clock;          /* logical clock: +1 per match / insert, never wall time */
    uint64_t next_id;        /* id for the next node created */
    uint8_t *in_tree;        /* per pool block: 1 while an edge references it (catches sharing) */
    uint8_t *cold;           /* per pool block: 1 while on an edge, put there by a cold (warming)
                                insert and not yet handed to a live match */
    int64_t warm_hit_tokens; /* tokens of cold blocks that live matches used (once per block) */
    int64_t lookups;         /* rt_match calls */
    int64_t hit_tokens;      /* tokens served by rt_match */
    int64_t miss_tokens;     /* tokens asked of rt_match and not cached */
    int64_t evicted_blocks;  /* blocks returned to the pool by eviction */
    int64_t evicted_nodes;   /* nodes evicted */
    int64_t inserted_blocks; /* blocks adopted by rt_insert */
    int64_t nodes;           /* token nodes (root and namespace nodes excluded) */
    int32_t n_ns;            /* namespace nodes */
    int32_t cached_blocks;   /* blocks referenced by edges */
    int32_t pinned_blocks;   /* blocks on edges with pin > 0 */
};

/* Grow a pointer array (*a, *cap) to hold at least need entries, doubling; RS_ENOMEM. */
int rt_grow_ptrs(rt_node ***a, int *cap, int64_t need);

/* A node is evictable when it is an unpinned token leaf; these keep the heap in step. Capacity
 * is reserved whenever a node is created (one slot per token node), so syncing never fails. */
int rt_lru_reserve(rt_heap *h, int64_t n); /* room for n entries; RS_ENOMEM */
void rt_lru_sync(rt_heap *h, rt_node *n);  /* add / remove / reposition n as its state says */
void rt_lru_remove(rt_heap *h, rt_node *n);
rt_node *rt_lru_pop(rt_heap *h); /* least recently used evictable node, or NULL */
void rt_lru_free(rt_heap *h);

static inline int rt_is_evictable(const rt_node *n) {
    return n->n_blocks > 0 && n->n_child == 0 && n->pin == 0;
}

#endif
