/*
 * cache.h — the door of the cache room: the paged KV block pool (kv_), and the radix-tree
 * prefix cache with LRU eviction (rt_) built on it.
 *
 * The pool knows memory, never requests: it hands out fixed-size blocks of KV storage, each
 * holding `block_size` consecutive token positions of K and V for every layer and KV head, and
 * counts references to them. A sequence's block table (an array of block ids) maps position p
 * to block table[p / block_size], slot p % block_size.
 *
 * The radix tree knows token ids and block ids, never tensors. Only the scheduler thread calls
 * the functions here (mutation and eviction); other threads read kv_stats / rt_stats snapshots.
 *
 * Reference counting: every holder of a block id owns one reference — a running sequence's
 * block table, a radix-tree node. kv_release of the last reference returns the block to the
 * free list. A block referenced by the tree is "cached"; one referenced only by sequences is
 * "private". Nothing else frees blocks.
 */
#ifndef RADIXSERVE_CACHE_H
#define RADIXSERVE_CACHE_H

#include <stddef.h>
#include <stdint.h>

#include "util/util.h"

/* ---------------------------------------------------------------- KV block pool (kv_) */

typedef enum kv_dtype { KV_F32 = 0, KV_BF16 = 1 } kv_dtype;

typedef struct kv_pool_config {
    int n_layers;        /* transformer layers */
    int n_kv_heads;      /* key/value heads per layer */
    int head_dim;        /* elements per head vector */
    int block_size;      /* token positions per block (default 16) */
    kv_dtype dtype;      /* element type of stored K and V */
    size_t budget_bytes; /* memory for all blocks; n_blocks = budget / block_bytes */
} kv_pool_config;

/*
 * Block layout, chosen for attention: for block b, layer l, K or V (kv = 0 or 1), head h, the
 * `block_size x head_dim` tile of that head is contiguous, so an attention kernel walking one
 * head's positions in order reads memory sequentially:
 *     block b = [layer][kv][head][slot][dim]
 */
typedef struct kv_pool {
    int n_layers, n_kv_heads, head_dim, block_size; /* geometry, from the config */
    kv_dtype dtype;                                 /* element type */
    size_t elem_size;                               /* bytes per element (4 or 2) */
    size_t tile_bytes;                              /* bytes of one [slot][dim] tile */
    size_t block_bytes;                             /* bytes of one whole block */
    int32_t n_blocks;                               /* blocks in the pool */
    uint8_t *mem;                                   /* n_blocks * block_bytes, owned (mmap) */
    size_t mem_bytes;                               /* size of the mapping */
    int32_t *ref;                                   /* reference count per block */
    int32_t *free_stack;                            /* ids of free blocks */
    int32_t n_free;                                 /* entries in free_stack */
} kv_pool;

/* Size the pool from the budget (at least one block, else RS_EINVAL) and map its memory. */
int kv_pool_init(kv_pool *p, const kv_pool_config *c, rs_err *e);
void kv_pool_free(kv_pool *p);

/* Bytes of one block for a geometry (for sizing and for stats). */
size_t kv_block_bytes(const kv_pool_config *c);

/* Take a free block with reference count 1; -1 when the pool has none free (the caller evicts
 * from the radix tree or reports exhaustion; the pool itself never fails silently). */
int32_t kv_alloc(kv_pool *p);

/* Add / drop one reference. Dropping the last returns the block to the free list. */
void kv_retain(kv_pool *p, int32_t block);
void kv_release(kv_pool *p, int32_t block);

/* Pointer to the [block_size][head_dim] tile of (block, layer, K=0/V=1, head). */
static inline void *kv_tile(const kv_pool *p, int32_t block, int layer, int kv, int head) {
    size_t idx = (((size_t)layer * 2 + (size_t)kv) * (size_t)p->n_kv_heads + (size_t)head);
    return p->mem + (size_t)block * p->block_bytes + idx * p->tile_bytes;
}

static inline int32_t kv_n_used(const kv_pool *p) {
    return p->n_blocks - p->n_free;
}

/* Copy block src's K/V (every layer, head and slot) into block dst: copy-on-write of a block
 * whose first slots a sequence shares but must not write. */
void kv_copy(kv_pool *p, int32_t dst, int32_t src);

/* Reference many blocks at once (a block table); the same contract as kv_retain/kv_release. */
void kv_retain_n(kv_pool *p, const int32_t *blocks, int n);
void kv_release_n(kv_pool *p, const int32_t *blocks, int n);

/* ---------------------------------------------------------------- radix tree (rt_) */

/*
 * A radix tree over token ids (SGLang's RadixAttention), keyed by (namespace, tokens), whose
 * edges carry runs of blocks: an edge of t tokens owns one reference to each of its
 * ceil(t / block_size) blocks. Edges start at block boundaries and are whole blocks, except
 * that a leaf may end with a partial block (a sequence's tail, cached with RT_TAIL). Matching
 * is token-granular: whole blocks along the path, then the leading tokens shared with the next
 * block (of an edge, or of the best child). A cached block is never written: a match that ends
 * inside a block hands back that block, and the caller copies it into a private one
 * (copy-on-write; docs/arch-cache.md).
 * Namespaces (the scheduler hashes cache_salt; 0 = shared) are separate subtrees: tenants never
 * share a node or a block.
 *
 * Shape changes only in rt_insert (splits where sequences diverge, at block boundaries; never
 * re-merged) and eviction. rt_match is read-only on the shape: a match may end inside an edge.
 *
 * Pinning: a running request pins the deepest node of its matched/inserted path; a pinned node
 * and all its ancestors cannot be evicted, and a pinned node pointer stays valid (a split keeps
 * the node as the lower half and puts a new node above it). An unpinned node pointer may die at
 * the next rt_evict / rt_alloc_blocks. Eviction takes least-recently-used unpinned leaves first
 * (a parent that becomes a leaf becomes a candidate), O(log n) per node, by a logical clock that
 * advances once per rt_match / rt_insert (deterministic; no wall time).
 */
typedef struct rt_tree rt_tree; /* opaque */
typedef struct rt_node rt_node; /* opaque */

/* The tree uses pool's block size; pool must outlive the tree. */
int rt_init(rt_tree **out, kv_pool *pool, rs_err *e);
void rt_free(rt_tree *t); /* releases every block the tree holds; NULL is a no-op */

/* Longest cached prefix of tokens[0, n) in namespace ns, token-granular. Appends the block ids
 * holding it to blocks_out (no reference taken: pin first, then kv_retain what the sequence
 * keeps), sets *node_out to the deepest node touched by its whole blocks (NULL when no whole
 * block matched) and returns the matched token count m (<= n), or a negative RS_E* code
 * (RS_EINVAL for n < 0 or tokens NULL with n > 0, RS_ENOMEM growing blocks_out). When m is not
 * a multiple of block_size, the last block id holds the match's last m % block_size tokens in
 * its first slots and is NOT the caller's to write: copy it into a block of its own (the other
 * slots hold other tokens' K/V, overwritten as the caller computes them). The match may end
 * inside *node_out's edge (no split here). Nodes whose whole edge matched get a fresh
 * last-access time. A fully cached prompt must still compute its last token: ask for n - 1. */
int rt_match(rt_tree *t, uint64_t ns, const int32_t *tokens, int n, rs_ivec *blocks_out,
             rt_node **node_out);

/* rt_match with flags (RT_COLD: a warming lookup, neither counted nor refreshing LRU). */
int rt_match_ex(rt_tree *t, uint64_t ns, const int32_t *tokens, int n, int flags,
                rs_ivec *blocks_out, rt_node **node_out);

/* The token count rt_match would return, without touching anything: no last-access refresh,
 * no statistics. For ranking waiting requests every step without skewing LRU order or the hit
 * ratio; RS_EINVAL on bad arguments. */
int rt_peek(const rt_tree *t, uint64_t ns, const int32_t *tokens, int n);

/* Pin / unpin a node and (implicitly) its ancestors. Pins nest (counted). NULL is a no-op. */
void rt_pin(rt_tree *t, rt_node *node);
void rt_unpin(rt_tree *t, rt_node *node);

/* Insert tokens[0, n) with their blocks (blocks[i] holds positions [i*bs, (i+1)*bs)); only the
 * first n / block_size whole blocks are used. Blocks of the newly added part get one reference
 * taken by the tree; where the prefix is already cached, the tree keeps its own blocks and the
 * caller's duplicates are left untouched (the caller still releases its own references).
 * Splits edges where the sequence diverges and refreshes the path's last-access time.
 * *node_out (may be NULL) receives the deepest node of the inserted path (NULL when n <
 * block_size); its edge ends exactly at the last whole block. Errors, all before any change:
 * RS_EINVAL (bad arguments, a new-part block id out of range, not referenced by the caller, or
 * already on some edge: a block is never shared between two edges), RS_ENOMEM. */
int rt_insert(rt_tree *t, uint64_t ns, const int32_t *tokens, int n, const int32_t *blocks,
              rt_node **node_out, rs_err *e);

/* Flags of rt_insert_ex. */
enum {
    RT_TAIL = 1, /* also cache the partial last block (tokens n / bs * bs .. n): it becomes (or
                    grows) a leaf ending mid-block; blocks[n / bs] must be a block the caller
                    will not write again at slots < n % bs (it is released, or done) */
    RT_COLD = 2, /* warming, not a use: an insert's new nodes get last access 0 (evicted first
                    under pressure) and nothing on the path is refreshed; its new blocks are
                    marked warm (the first live match through them counts them in
                    warm_hit_tokens). A match with RT_COLD counts nothing and refreshes nothing
                    (rt_match_ex) */
};

/* rt_insert with flags. With RT_TAIL an edge grows in place where its partial last block is a
 * proper prefix of the new tokens (the caller's block replaces it; the tree's old one is
 * released), and *node_out is the deepest node of the path, which may end mid-block. */
int rt_insert_ex(rt_tree *t, uint64_t ns, const int32_t *tokens, int n, const int32_t *blocks,
                 int flags, rt_node **node_out, rs_err *e);

/* Evict least-recently-used unpinned leaves until at least n_blocks blocks have returned to the
 * pool's free list or nothing evictable remains; returns how many were freed. */
int rt_evict(rt_tree *t, int n_blocks);

/* Take n fresh blocks (reference count 1 each, owned by the caller) into out[0, n), evicting
 * LRU leaves when the pool has too few free. All or nothing: RS_ETOOBIG when n exceeds the
 * whole pool, RS_EFULL when even evicting every unpinned node cannot make room (checked first,
 * so then nothing is evicted; only when cached blocks are also held by sequences that did not
 * pin them can eviction run and still fall short). Nothing is allocated on failure; the
 * scheduler waits or preempts. */
int rt_alloc_blocks(rt_tree *t, int n, int32_t *out, rs_err *e);

typedef struct rt_stats {
    int64_t lookups;         /* rt_match calls */
    int64_t hit_tokens;      /* tokens served from the cache */
    int64_t miss_tokens;     /* tokens asked for but not cached */
    int64_t evicted_blocks;  /* blocks freed by eviction */
    int64_t nodes;           /* token nodes in the tree (root and namespace nodes excluded) */
    int32_t cached_blocks;   /* blocks referenced by the tree */
    int32_t pinned_blocks;   /* blocks on pinned paths */
    int64_t evicted_nodes;   /* nodes removed by eviction */
    int64_t inserted_blocks; /* blocks adopted by rt_insert */
    int32_t namespaces;      /* namespaces with at least one cached block */
    int32_t pool_blocks;     /* blocks in the pool */
    int32_t free_blocks;     /* blocks on the pool's free list */
    int32_t used_blocks;     /* pool_blocks - free_blocks (cached + private) */
    int64_t warm_hit_tokens; /* tokens live matches took from blocks warming put (RT_COLD), each
                                block counted once (a copied partial block's matched part) */
} rt_stats;

void rt_get_stats(const rt_tree *t, rt_stats *out);

/* 1 when block is on a tree edge (the tree then holds exactly one reference to it), else 0. */
int rt_holds(const rt_tree *t, int32_t block);

/* Pins held on the tree now (rt_pin calls not yet undone by rt_unpin). O(namespaces). */
int64_t rt_pins(const rt_tree *t);

/* Walk the whole tree and check its invariants (cache/rt_internal.h lists them): for debug
 * builds' per-step checks and tests, O(tree). 0, or RS_EINVAL naming the first violation. */
int rt_check(const rt_tree *t, rs_err *e);

/* Bytes the tree itself allocates (nodes, token copies, block ids, child arrays, heap; not
 * the KV blocks). Walks the whole tree: for benchmarks and debug views, not per step. */
size_t rt_mem_bytes(const rt_tree *t);

/* A read-only copy of the tree for a debug endpoint (GET /v1/cache) and tests: nodes in
 * pre-order (a parent before its children, children in the tree's sorted order). Only the
 * scheduler thread takes it; the copy is then free to hand to any thread. */
typedef struct rt_snap_node {
    uint64_t id;           /* node id, stable for the node's life */
    uint64_t parent;       /* parent's id; 0 for the namespace nodes at the top */
    uint64_t ns;           /* namespace */
    int depth;             /* 0 for namespace nodes, 1 for their children, ... */
    int n_tokens;          /* tokens on the edge (0 for namespace nodes; a leaf's last block may
                              be partial) */
    int n_blocks;          /* blocks on the edge */
    int32_t pin;           /* pins on the node and its descendants */
    uint64_t last_access;  /* logical clock of the last use */
    int64_t hits;          /* rt_match calls that reused blocks of the edge (see rt_internal.h) */
    const int32_t *tokens; /* the first min(n_tokens, max_tokens) tokens (snapshot's arena) */
    int n_copied;          /* how many tokens were copied */
    const int32_t *blocks; /* all n_blocks block ids of the edge (snapshot's block arena) */
} rt_snap_node;

typedef struct rt_snapshot {
    rt_snap_node *nodes;  /* n entries, owned */
    int n;                /* nodes, namespace nodes included */
    int32_t *arena;       /* copied tokens, owned */
    int32_t *block_arena; /* copied block ids, owned */
    uint64_t clock;       /* the tree's logical clock when taken */
    rt_stats stats;       /* statistics at the same moment */
} rt_snapshot;

/* Copy the tree, keeping up to max_tokens tokens per edge (max_tokens >= 0). */
int rt_snapshot_take(const rt_tree *t, int max_tokens, rt_snapshot *out, rs_err *e);
void rt_snapshot_free(rt_snapshot *s);
/* The snapshot as JSON: {"clock":..,"stats":{..},"nodes":[{"id":..,"parent":..,...,"hits":..,
 * "tokens":[first tokens]}]}; *out is malloc'd, NUL-terminated, the caller frees it. */
int rt_snapshot_json(const rt_snapshot *s, char **out, rs_err *e);

#endif
