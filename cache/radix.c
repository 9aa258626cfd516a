/* radix.c — the radix tree over whole token blocks: match, insert (with splits), pin, evict,
 * allocate-with-eviction. See cache.h for the contract and rt_internal.h for the layout. */
#include "cache/rt_internal.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------ nodes and child arrays */

static void node_destroy(rt_node *n) {
    free(n->tokens);
    free(n->blocks);
    free(n->child);
    free(n);
}

static int blocks_for(const rt_tree *t, int n_tokens) {
    return (n_tokens + t->bs - 1) / t->bs;
}

/* A detached node with room for n_tokens tokens (and their blocks) and cap_child children. */
static rt_node *node_new(rt_tree *t, int n_tokens, int cap_child) {
    rt_node *n = calloc(1, sizeof *n);
    if (!n) return NULL;
    n->heap_idx = -1;
    n->id = t->next_id++;
    size_t nt = (size_t)n_tokens;
    int n_blocks = blocks_for(t, n_tokens);
    if (n_blocks > 0) {
        n->tokens = malloc(nt * sizeof *n->tokens);
        n->blocks = malloc((size_t)n_blocks * sizeof *n->blocks);
    }
    if (cap_child > 0) n->child = malloc((size_t)cap_child * sizeof *n->child);
    n->cap_child = cap_child;
    if ((n_blocks > 0 && (!n->tokens || !n->blocks)) || (cap_child > 0 && !n->child)) {
        node_destroy(n);
        return NULL;
    }
    return n;
}

static int child_reserve(rt_node *n, int cap) {
    return rt_grow_ptrs(&n->child, &n->cap_child, cap);
}

/* Tokens of c's first block (block_size, or fewer for a leaf holding one partial block). */
static int first_len(const rt_tree *t, const rt_node *c) {
    return c->n_tokens < t->bs ? c->n_tokens : t->bs;
}

static int lcp(const int32_t *a, const int32_t *b, int n) {
    int i = 0;
    while (i < n && a[i] == b[i]) i++;
    return i;
}

/* Order of a child against a key: namespace ids under the root, first blocks elsewhere
 * (lexicographic over block[0, len), a proper prefix first). */
static int key_cmp(const rt_tree *t, const rt_node *parent, const rt_node *c, uint64_t ns,
                   const int32_t *block, int len) {
    if (parent == &t->root) return c->ns < ns ? -1 : c->ns > ns;
    int cl = first_len(t, c), m = cl < len ? cl : len;
    for (int i = 0; i < m; i++)
        if (c->tokens[i] != block[i]) return c->tokens[i] < block[i] ? -1 : 1;
    return cl < len ? -1 : cl > len;
}

/* Binary search: index of the child with this key (*found = 1) or where it would go. */
static int child_pos(const rt_tree *t, const rt_node *n, uint64_t ns, const int32_t *block, int len,
                     int *found) {
    int lo = 0, hi = n->n_child;
    while (lo < hi) {
        int mid = lo + (hi - lo) / 2;
        int c = key_cmp(t, n, n->child[mid], ns, block, len);
        if (c == 0) {
            *found = 1;
            return mid;
        }
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    *found = 0;
    return lo;
}

/* The child whose first block is exactly this whole block (or this namespace under the root). */
static rt_node *find_child(const rt_tree *t, const rt_node *n, uint64_t ns, const int32_t *block) {
    int found;
    int i = child_pos(t, n, ns, block, t->bs, &found);
    return found ? n->child[i] : NULL;
}

/* Link c under parent at its sorted place; capacity was reserved beforehand. */
static void attach(rt_tree *t, rt_node *parent, rt_node *c) {
    int found;
    int i = child_pos(t, parent, c->ns, c->tokens, first_len(t, c), &found);
    assert(!found && parent->n_child < parent->cap_child);
    memmove(parent->child + i + 1, parent->child + i,
            (size_t)(parent->n_child - i) * sizeof *parent->child);
    parent->child[i] = c;
    parent->n_child++;
    c->parent = parent;
}

static void detach(rt_tree *t, rt_node *parent, rt_node *c) {
    int found;
    int i = child_pos(t, parent, c->ns, c->tokens, first_len(t, c), &found);
    assert(found && parent->child[i] == c);
    parent->n_child--;
    memmove(parent->child + i, parent->child + i + 1,
            (size_t)(parent->n_child - i) * sizeof *parent->child);
}

/* ------------------------------------------------------------------ init / free */

int rt_init(rt_tree **out, kv_pool *pool, rs_err *e) {
    *out = NULL;
    if (!pool || pool->n_blocks <= 0 || pool->block_size <= 0)
        return rs_errf(e, RS_EINVAL, "radix tree: needs an initialised block pool");
    rt_tree *t = calloc(1, sizeof *t);
    if (!t) return rs_errf(e, RS_ENOMEM, "radix tree: out of memory");
    t->in_tree = calloc((size_t)pool->n_blocks, 1);
    t->cold = calloc((size_t)pool->n_blocks, 1);
    if (!t->in_tree || !t->cold) {
        free(t->in_tree);
        free(t->cold);
        free(t);
        return rs_errf(e, RS_ENOMEM, "radix tree: out of memory for %d blocks", pool->n_blocks);
    }
    t->pool = pool;
    t->bs = pool->block_size;
    t->root.heap_idx = -1;
    t->next_id = 1; /* 0 stands for "no parent" in snapshots */
    *out = t;
    return 0;
}

static void release_edge(rt_tree *t, rt_node *n) {
    for (int i = 0; i < n->n_blocks; i++) {
        t->in_tree[n->blocks[i]] = 0;
        t->cold[n->blocks[i]] = 0;
        kv_release(t->pool, n->blocks[i]);
    }
    t->cached_blocks -= n->n_blocks;
}

void rt_free(rt_tree *t) {
    if (!t) return;
    /* Post-order without recursion (paths can be thousands of nodes deep): descend to a leaf,
     * free it, climb to its parent, repeat. */
    rt_node *n = &t->root;
    while (n) {
        if (n->n_child > 0) {
            n = n->child[n->n_child - 1];
            continue;
        }
        rt_node *parent = n->parent;
        if (parent) {
            release_edge(t, n);
            parent->n_child--;
            node_destroy(n);
        }
        n = parent;
    }
    free(t->root.child);
    rt_lru_free(&t->lru);
    free(t->in_tree);
    free(t->cold);
    free(t);
}

/* ------------------------------------------------------------------ walking and touching */

/* Where a query of nb whole blocks leaves the tree: `node` is the deepest node whose whole
 * edge matched (the namespace node, or NULL when the namespace is absent); `partial` is its
 * child whose edge matched only k_part > 0 leading whole blocks (the query diverged or ended
 * there, or the edge's next block is a partial one). */
typedef struct rt_walk {
    rt_node *node;    /* deepest fully matched node */
    rt_node *partial; /* child of node matched partly, or NULL */
    int k_part;       /* blocks of partial's edge matched */
    int matched;      /* whole blocks matched in total */
} rt_walk;

static int walk_path(const rt_tree *t, rt_node *top, const int32_t *tokens, int nb, rt_walk *w,
                     rs_ivec *blocks) {
    *w = (rt_walk){.node = top};
    if (!top) return 0;
    size_t bs = (size_t)t->bs;
    while (w->matched < nb) {
        const int32_t *q = tokens + (size_t)w->matched * bs;
        rt_node *c = find_child(t, w->node, 0, q);
        if (!c) break;
        int full = c->n_tokens / t->bs; /* >= 1: find_child matched a whole first block */
        int lim = full < nb - w->matched ? full : nb - w->matched;
        int k = 1; /* the lookup compared the first block */
        while (k < lim && !memcmp(c->tokens + k * bs, q + k * bs, bs * sizeof *q)) k++;
        if (blocks && rs_ivec_append(blocks, c->blocks, k)) return RS_ENOMEM;
        w->matched += k;
        if (k < c->n_blocks) {
            w->partial = c;
            w->k_part = k;
            break;
        }
        w->node = c;
    }
    return 0;
}

/* Stamp n and its ancestors with the clock: they are the most recently used now. */
static void touch_path(rt_tree *t, rt_node *n, uint64_t stamp) {
    for (; n && n != &t->root; n = n->parent) {
        n->last_access = stamp;
        rt_lru_sync(&t->lru, n);
    }
}

/* Count a reuse on every node whose blocks a match served: the fully matched path and the edge
 * it ended inside. */
static void count_hits(rt_tree *t, const rt_walk *w) {
    if (w->partial) w->partial->hits++;
    for (rt_node *n = w->node; n && n != &t->root && n->n_blocks > 0; n = n->parent) n->hits++;
}

static rt_node *find_ns(const rt_tree *t, uint64_t ns) {
    return find_child(t, &t->root, ns, NULL);
}

/* The edge block that continues a walk's path at token granularity: the partial edge's next
 * block, or else the child of w->node sharing the longest prefix with r[0, rl) (rl <= block
 * size; in sorted order that child is a neighbour of r's place). l = tokens shared. */
typedef struct rt_next {
    rt_node *node; /* the node whose edge holds the block, or NULL */
    int block;     /* the block's index on that edge */
    int valid;     /* tokens the block holds on the edge (block_size unless a partial one) */
    int l;         /* leading tokens of r it shares, < block_size */
} rt_next;

static rt_next next_block(const rt_tree *t, const rt_walk *w, const int32_t *r, int rl) {
    rt_next x = {0};
    if (rl <= 0) return x;
    if (w->partial) {
        rt_node *c = w->partial;
        int off = w->k_part * t->bs, v = c->n_tokens - off < t->bs ? c->n_tokens - off : t->bs;
        return (rt_next){c, w->k_part, v, lcp(c->tokens + off, r, v < rl ? v : rl)};
    }
    if (!w->node) return x;
    int found, pos = child_pos(t, w->node, 0, r, rl, &found);
    for (int i = pos - 1; i <= pos; i++) {
        if (i < 0 || i >= w->node->n_child) continue;
        rt_node *c = w->node->child[i];
        int v = first_len(t, c), l = lcp(c->tokens, r, v < rl ? v : rl);
        if (l > x.l) x = (rt_next){c, 0, v, l};
    }
    return x;
}

/* Whole blocks, then tokens of the next block: the full match of tokens[0, n). */
static int walk_tokens(const rt_tree *t, uint64_t ns, const int32_t *tokens, int n, rt_walk *w,
                       rt_next *x, rs_ivec *blocks) {
    if (walk_path(t, find_ns(t, ns), tokens, n / t->bs, w, blocks)) return RS_ENOMEM;
    int done = w->matched * t->bs, rl = n - done < t->bs ? n - done : t->bs;
    *x = next_block(t, w, tokens + done, rl);
    assert(x->l < t->bs); /* a whole block shared would have been walked */
    return 0;
}

/* ------------------------------------------------------------------ match / pin */

/* A warm-put block handed to a live match counts its matched tokens once as a warm hit. */
static void count_warm_hits(rt_tree *t, const int32_t *b, int n_blocks, int last_tokens) {
    for (int i = 0; i < n_blocks; i++) {
        if (!t->cold[b[i]]) continue;
        t->warm_hit_tokens += i == n_blocks - 1 ? last_tokens : t->bs;
        t->cold[b[i]] = 0;
    }
}

int rt_match(rt_tree *t, uint64_t ns, const int32_t *tokens, int n, rs_ivec *blocks_out,
             rt_node **node_out) {
    return rt_match_ex(t, ns, tokens, n, 0, blocks_out, node_out);
}

int rt_match_ex(rt_tree *t, uint64_t ns, const int32_t *tokens, int n, int flags,
                rs_ivec *blocks_out, rt_node **node_out) {
    if (node_out) *node_out = NULL;
    if (n < 0 || (n > 0 && !tokens)) return RS_EINVAL;
    int had = blocks_out ? blocks_out->n : 0;
    rt_walk w;
    rt_next x;
    if (walk_tokens(t, ns, tokens, n, &w, &x, blocks_out) ||
        (x.l > 0 && blocks_out && rs_ivec_push(blocks_out, x.node->blocks[x.block]))) {
        blocks_out->n = had;
        return RS_ENOMEM;
    }
    int hit = w.matched * t->bs + x.l;
    if (node_out && w.matched > 0) *node_out = w.partial ? w.partial : w.node;
    if (flags & RT_COLD) return hit;
    t->lookups++;
    t->hit_tokens += hit;
    t->miss_tokens += n - hit;
    touch_path(t, w.node, ++t->clock);
    if (blocks_out && blocks_out->n > had)
        count_warm_hits(t, blocks_out->v + had, blocks_out->n - had, x.l ? x.l : t->bs);
    count_hits(t, &w);
    return hit;
}

int rt_peek(const rt_tree *t, uint64_t ns, const int32_t *tokens, int n) {
    if (n < 0 || (n > 0 && !tokens)) return RS_EINVAL;
    rt_walk w;
    rt_next x;
    walk_tokens(t, ns, tokens, n, &w, &x, NULL);
    return w.matched * t->bs + x.l;
}

void rt_pin(rt_tree *t, rt_node *node) {
    for (rt_node *n = node; n && n != &t->root; n = n->parent) {
        if (n->pin++ == 0) {
            t->pinned_blocks += n->n_blocks;
            rt_lru_remove(&t->lru, n);
        }
    }
}

void rt_unpin(rt_tree *t, rt_node *node) {
    for (rt_node *n = node; n && n != &t->root; n = n->parent) {
        assert(n->pin > 0); /* unbalanced unpin: a scheduler bug */
        if (n->pin > 0 && --n->pin == 0) {
            t->pinned_blocks -= n->n_blocks;
            rt_lru_sync(&t->lru, n);
        }
    }
}

/* ------------------------------------------------------------------ insert */

/* Blocks the tree would adopt must be live (the caller holds them), distinct, and on no edge
 * yet: one block on two edges would be freed twice by eviction. */
static int check_new_blocks(rt_tree *t, const int32_t *b, int n, rs_err *e) {
    int rc = 0, i;
    for (i = 0; i < n && !rc; i++) {
        int32_t id = b[i];
        if (id < 0 || id >= t->pool->n_blocks)
            rc = rs_errf(e, RS_EINVAL, "radix insert: block id %d out of range [0, %d)", id,
                         t->pool->n_blocks);
        else if (t->pool->ref[id] <= 0)
            rc = rs_errf(e, RS_EINVAL, "radix insert: block %d is free (no caller reference)", id);
        else if (t->in_tree[id])
            rc = rs_errf(e, RS_EINVAL, "radix insert: block %d is already cached%s", id,
                         t->in_tree[id] == 2 ? " (twice in this insert)" : " on another edge");
        else
            t->in_tree[id] = 2; /* seen in this call */
    }
    for (int j = 0; j < i; j++)
        if (t->in_tree[b[j]] == 2) t->in_tree[b[j]] = 0;
    return rc;
}

/* What an insert does beyond the walk, decided before anything changes. */
typedef struct rt_plan {
    rt_walk w;        /* where the whole-block walk left the tree */
    rt_next x;        /* the block continuing the path at token granularity */
    const int32_t *r; /* the tokens beyond the walk */
    int rlen;         /* how many (whole blocks left, plus the tail when caching it) */
    int grow;         /* x is a leaf's partial last block and a proper prefix of r: grow it */
    int add;          /* r gets a new leaf (neither grown into x nor already there) */
    int n_new;        /* blocks the tree adopts from the caller */
} rt_plan;

/* Everything an insert allocates, obtained before anything changes (all or nothing). */
typedef struct rt_prep {
    rt_node *ns_node; /* new namespace node, or NULL */
    rt_node *split;   /* new upper half of a split edge, or NULL */
    rt_node *leaf;    /* new leaf for the uncached rest, or NULL */
} rt_prep;

static void prep_drop(rt_prep *p) {
    if (p->ns_node) node_destroy(p->ns_node);
    if (p->split) node_destroy(p->split);
    if (p->leaf) node_destroy(p->leaf);
}

/* Room for a grown leaf's tokens and blocks (growing buffers early is harmless on failure). */
static int grow_reserve(rt_tree *t, rt_node *x, int kb, int rlen) {
    size_t nt = (size_t)kb * (size_t)t->bs + (size_t)rlen, nbk = (size_t)(kb + blocks_for(t, rlen));
    int32_t *tk = realloc(x->tokens, nt * sizeof *tk);
    if (!tk) return RS_ENOMEM;
    x->tokens = tk;
    int32_t *bk = realloc(x->blocks, nbk * sizeof *bk);
    if (!bk) return RS_ENOMEM;
    x->blocks = bk;
    return 0;
}

static int prepare(rt_tree *t, const rt_plan *pl, rt_prep *p, rs_err *e) {
    const rt_walk *w = &pl->w;
    *p = (rt_prep){0};
    int ok = 1;
    rt_node *parent = w->node; /* where the leaf will hang, unless a split or a new namespace */
    if (!w->node) {
        p->ns_node = node_new(t, 0, pl->add ? 1 : 0);
        ok = p->ns_node && !child_reserve(&t->root, t->root.n_child + 1);
    }
    if (ok && w->partial && !pl->grow) {
        p->split = node_new(t, w->k_part * t->bs, pl->add ? 2 : 1);
        ok = p->split != NULL;
    }
    if (ok && pl->add) {
        p->leaf = node_new(t, pl->rlen, 0);
        ok = p->leaf && (p->ns_node || p->split || !child_reserve(parent, parent->n_child + 1));
    }
    if (ok && pl->grow) ok = !grow_reserve(t, pl->x.node, pl->x.block, pl->rlen);
    ok = ok && !rt_lru_reserve(&t->lru, t->nodes + 2);
    if (ok) return 0;
    prep_drop(p);
    return rs_errf(e, RS_ENOMEM, "radix insert: out of memory");
}

/* Cut x after k blocks: the new node up (from prep) takes the first k and x's place under the
 * parent; x keeps the rest and its identity (pins and pointers held by requests stay valid). */
static rt_node *split_edge(rt_tree *t, rt_node *x, int k, rt_node *up) {
    size_t bs = (size_t)t->bs;
    rt_node *parent = x->parent;
    int found;
    int i = child_pos(t, parent, x->ns, x->tokens, first_len(t, x), &found);
    assert(found && parent->child[i] == x);
    up->ns = x->ns;
    up->n_blocks = k;
    up->n_tokens = k * t->bs;
    up->pin = x->pin;
    up->last_access = x->last_access;
    up->hits = x->hits;
    memcpy(up->tokens, x->tokens, (size_t)k * bs * sizeof *x->tokens);
    memcpy(up->blocks, x->blocks, (size_t)k * sizeof *x->blocks);
    parent->child[i] = up; /* same first block, so the same sorted place */
    up->parent = parent;
    x->n_blocks -= k;
    x->n_tokens -= k * t->bs;
    memmove(x->tokens, x->tokens + (size_t)k * bs, (size_t)x->n_tokens * sizeof *x->tokens);
    memmove(x->blocks, x->blocks + k, (size_t)x->n_blocks * sizeof *x->blocks);
    /* Give the cut-off head back; keeping the old buffer is fine when shrinking fails. */
    int32_t *nt = realloc(x->tokens, (size_t)x->n_tokens * sizeof *nt);
    int32_t *nbk = realloc(x->blocks, (size_t)x->n_blocks * sizeof *nbk);
    if (nt) x->tokens = nt;
    if (nbk) x->blocks = nbk;
    attach(t, up, x);
    t->nodes++;
    return up;
}

/* The tree adopts the caller's blocks b[0, n) (one reference each); cold: put by warming. */
static void adopt(rt_tree *t, int32_t *dst, const int32_t *b, int n, int cold) {
    for (int i = 0; i < n; i++) {
        dst[i] = b[i];
        kv_retain(t->pool, b[i]);
        t->in_tree[b[i]] = 1;
        t->cold[b[i]] = (uint8_t)cold;
    }
    t->cached_blocks += n;
    t->inserted_blocks += n;
}

/* x's partial last block (index kb) is a proper prefix of r: x grows in place to end with r,
 * the caller's blocks replacing the partial one. x stays a leaf and keeps its sorted place
 * (its first-block key only got longer, and no sibling shared the old one as a prefix). */
static void grow_leaf(rt_tree *t, rt_node *x, int kb, const rt_plan *pl, const int32_t *b,
                      int cold) {
    int32_t old = x->blocks[kb];
    t->in_tree[old] = 0;
    t->cold[old] = 0;
    kv_release(t->pool, old);
    t->cached_blocks--;
    memcpy(x->tokens + (size_t)kb * t->bs, pl->r, (size_t)pl->rlen * sizeof *pl->r);
    adopt(t, x->blocks + kb, b, pl->n_new, cold);
    if (x->pin > 0) t->pinned_blocks += pl->n_new - 1;
    x->n_tokens = kb * t->bs + pl->rlen;
    x->n_blocks = kb + pl->n_new;
}

/* Walk, then decide: grow a partial leaf, add a leaf, or nothing (the tokens are there). */
static void plan_insert(const rt_tree *t, uint64_t ns, const int32_t *tokens, int nb, int tail,
                        rt_plan *pl) {
    *pl = (rt_plan){0};
    walk_path(t, find_ns(t, ns), tokens, nb, &pl->w, NULL);
    int done = pl->w.matched * t->bs;
    pl->r = tokens + done;
    pl->rlen = nb * t->bs + tail - done;
    pl->x = next_block(t, &pl->w, pl->r, pl->rlen < t->bs ? pl->rlen : t->bs);
    const rt_next *x = &pl->x;
    pl->grow = x->node && x->valid < t->bs && x->l == x->valid && pl->rlen > x->valid;
    pl->add = pl->rlen > 0 && !pl->grow && !(x->node && x->l == pl->rlen);
    pl->n_new = pl->grow || pl->add ? blocks_for(t, pl->rlen) : 0;
}

int rt_insert(rt_tree *t, uint64_t ns, const int32_t *tokens, int n, const int32_t *blocks,
              rt_node **node_out, rs_err *e) {
    return rt_insert_ex(t, ns, tokens, n, blocks, 0, node_out, e);
}

int rt_insert_ex(rt_tree *t, uint64_t ns, const int32_t *tokens, int n, const int32_t *blocks,
                 int flags, rt_node **node_out, rs_err *e) {
    if (node_out) *node_out = NULL;
    if (n < 0 || (n > 0 && (!tokens || !blocks)))
        return rs_errf(e, RS_EINVAL, "radix insert: bad arguments (n = %d)", n);
    int nb = n / t->bs, tail = flags & RT_TAIL ? n % t->bs : 0, cold = (flags & RT_COLD) != 0;
    if (nb == 0 && tail == 0) return 0;
    rt_plan pl;
    plan_insert(t, ns, tokens, nb, tail, &pl);
    const int32_t *fresh = blocks + pl.w.matched; /* the caller's blocks beyond the walk */
    int rc = check_new_blocks(t, fresh, pl.n_new, e);
    rt_prep p;
    if (rc || (rc = prepare(t, &pl, &p, e))) return rc;

    rt_node *at = pl.w.node;
    if (p.ns_node) {
        at = p.ns_node;
        at->ns = ns;
        attach(t, &t->root, at);
        t->n_ns++;
    }
    if (p.split) at = split_edge(t, pl.w.partial, pl.w.k_part, p.split);
    if (pl.grow) {
        grow_leaf(t, pl.x.node, pl.x.block, &pl, fresh, cold);
        at = pl.x.node;
    }
    if (p.leaf) {
        rt_node *leaf = p.leaf;
        leaf->ns = ns;
        leaf->n_tokens = pl.rlen;
        leaf->n_blocks = pl.n_new;
        memcpy(leaf->tokens, pl.r, (size_t)pl.rlen * sizeof *tokens);
        adopt(t, leaf->blocks, fresh, pl.n_new, cold);
        attach(t, at, leaf);
        rt_lru_sync(&t->lru, at); /* at has a child now: no longer a leaf */
        t->nodes++;
        at = leaf;
    }
    if (!cold)
        touch_path(t, at, ++t->clock);
    else if (at)
        rt_lru_sync(&t->lru, at); /* a new leaf keeps last access 0: the first to go */
    if (node_out) *node_out = at;
    return 0;
}

/* ------------------------------------------------------------------ eviction and allocation */

/* Drop an unpinned leaf (already out of the heap); its parent may become a candidate, and a
 * namespace left empty disappears. Returns the blocks that went back to the free list. */
static int evict_node(rt_tree *t, rt_node *x) {
    assert(rt_is_evictable(x));
    int32_t before = t->pool->n_free;
    release_edge(t, x);
    int freed = t->pool->n_free - before;
    t->evicted_blocks += freed;
    t->evicted_nodes++;
    t->nodes--;
    rt_node *parent = x->parent;
    detach(t, parent, x);
    node_destroy(x);
    if (parent->n_blocks == 0 && parent->n_child == 0) {
        detach(t, &t->root, parent);
        node_destroy(parent);
        t->n_ns--;
    } else {
        rt_lru_sync(&t->lru, parent);
    }
    return freed;
}

int rt_evict(rt_tree *t, int n_blocks) {
    int freed = 0;
    while (freed < n_blocks) {
        rt_node *x = rt_lru_pop(&t->lru);
        if (!x) break;
        freed += evict_node(t, x);
    }
    return freed;
}

int rt_alloc_blocks(rt_tree *t, int n, int32_t *out, rs_err *e) {
    kv_pool *p = t->pool;
    if (n < 0 || (n > 0 && !out))
        return rs_errf(e, RS_EINVAL, "block allocation: bad arguments (n = %d)", n);
    if (n > p->n_blocks)
        return rs_errf(e, RS_ETOOBIG, "block allocation: %d blocks asked, the pool has %d", n,
                       p->n_blocks);
    int missing = n - p->n_free;
    if (missing > 0) {
        /* Every unpinned node can be evicted (its subtree is unpinned too), so this bounds what
         * eviction could free; checking first avoids emptying the cache for nothing. */
        int evictable = t->cached_blocks - t->pinned_blocks;
        if (missing > evictable)
            return rs_errf(e, RS_EFULL,
                           "block allocation: %d blocks asked, %d free, at most %d evictable", n,
                           p->n_free, evictable);
        rt_evict(t, missing);
        if (p->n_free < n)
            return rs_errf(e, RS_EFULL,
                           "block allocation: %d blocks asked, only %d free after eviction "
                           "(cached blocks also held by requests)",
                           n, p->n_free);
    }
    for (int i = 0; i < n; i++) out[i] = kv_alloc(p);
    return 0;
}

/* ------------------------------------------------------------------ statistics */

static size_t node_bytes(const rt_tree *t, const rt_node *n) {
    (void)t;
    return sizeof *n + ((size_t)n->n_tokens + (size_t)n->n_blocks) * sizeof(int32_t) +
           (size_t)n->cap_child * sizeof(rt_node *);
}

size_t rt_mem_bytes(const rt_tree *t) {
    size_t total = sizeof *t + (size_t)t->pool->n_blocks + (size_t)t->lru.cap * sizeof(rt_node *) +
                   (size_t)t->root.cap_child * sizeof(rt_node *);
    /* Pre-order by parent pointers (no stack): after a subtree, resume at the next sibling. */
    const rt_node *n = &t->root;
    int next = 0;
    for (;;) {
        if (next < n->n_child) {
            n = n->child[next];
            next = 0;
            total += node_bytes(t, n);
            continue;
        }
        if (n == &t->root) break;
        int found;
        next = child_pos(t, n->parent, n->ns, n->tokens, first_len(t, n), &found) + 1;
        n = n->parent;
    }
    return total;
}

void rt_get_stats(const rt_tree *t, rt_stats *s) {
    *s = (rt_stats){
        .lookups = t->lookups,
        .hit_tokens = t->hit_tokens,
        .miss_tokens = t->miss_tokens,
        .evicted_blocks = t->evicted_blocks,
        .nodes = t->nodes,
        .cached_blocks = t->cached_blocks,
        .pinned_blocks = t->pinned_blocks,
        .evicted_nodes = t->evicted_nodes,
        .inserted_blocks = t->inserted_blocks,
        .namespaces = t->n_ns,
        .pool_blocks = t->pool->n_blocks,
        .free_blocks = t->pool->n_free,
        .used_blocks = kv_n_used(t->pool),
        .warm_hit_tokens = t->warm_hit_tokens,
    };
}

/* ------------------------------------------------------------------ invariants */

static int is_root_child(const rt_tree *t, const rt_node *n) {
    return n->parent == &t->root;
}

int rt_holds(const rt_tree *t, int32_t block) {
    return block >= 0 && block < t->pool->n_blocks && t->in_tree[block] == 1;
}

int64_t rt_pins(const rt_tree *t) {
    int64_t n = 0;
    for (int i = 0; i < t->root.n_child; i++) n += t->root.child[i]->pin;
    return n;
}

/* One node's own checks (T1, T3 for its edge, T4 against its children, T5). */
static int check_node(const rt_tree *t, const rt_node *n, int64_t *blocks, int64_t *pinned,
                      rs_err *e) {
    int is_ns = n->parent == &t->root;
    if (is_ns ? (n->n_blocks != 0 || n->n_child == 0) : n->n_blocks <= 0)
        return rs_errf(e, RS_EINVAL, "T1: node %llu has %d blocks and %d children",
                       (unsigned long long)n->id, n->n_blocks, n->n_child);
    if (n->n_blocks != blocks_for(t, n->n_tokens) || (n->n_tokens % t->bs && n->n_child))
        return rs_errf(e, RS_EINVAL, "T6: node %llu has %d tokens in %d blocks and %d children",
                       (unsigned long long)n->id, n->n_tokens, n->n_blocks, n->n_child);
    if (!is_ns && n->ns != n->parent->ns)
        return rs_errf(e, RS_EINVAL, "T1: node %llu is in another namespace than its parent",
                       (unsigned long long)n->id);
    int64_t child_pins = 0;
    for (int i = 0; i < n->n_child; i++) {
        const rt_node *c = n->child[i];
        if (c->parent != n)
            return rs_errf(e, RS_EINVAL, "T1: node %llu's child %d points elsewhere",
                           (unsigned long long)n->id, i);
        if (i > 0 && key_cmp(t, n, n->child[i - 1], c->ns, c->tokens, first_len(t, c)) >= 0)
            return rs_errf(e, RS_EINVAL, "T2: children of node %llu are not sorted at %d",
                           (unsigned long long)n->id, i);
        if (i > 0 && !is_root_child(t, c) &&
            lcp(n->child[i - 1]->tokens, c->tokens, first_len(t, n->child[i - 1])) ==
                first_len(t, n->child[i - 1]))
            return rs_errf(e, RS_EINVAL, "T6: a child of node %llu is a prefix of its sibling",
                           (unsigned long long)n->id);
        child_pins += c->pin;
    }
    if (n->pin < child_pins)
        return rs_errf(e, RS_EINVAL, "T4: node %llu has pin %d below its children's %lld",
                       (unsigned long long)n->id, n->pin, (long long)child_pins);
    for (int i = 0; i < n->n_blocks; i++) {
        int32_t b = n->blocks[i];
        if (b < 0 || b >= t->pool->n_blocks || t->pool->ref[b] <= 0 || t->in_tree[b] != 1)
            return rs_errf(e, RS_EINVAL, "T3: node %llu holds block %d badly",
                           (unsigned long long)n->id, b);
    }
    *blocks += n->n_blocks;
    if (n->pin > 0) *pinned += n->n_blocks;
    int in_heap = n->heap_idx >= 0 && n->heap_idx < t->lru.n && t->lru.a[n->heap_idx] == n;
    if (in_heap != rt_is_evictable(n))
        return rs_errf(e, RS_EINVAL, "T5: node %llu is %sin the LRU heap",
                       (unsigned long long)n->id, in_heap ? "" : "not ");
    return 0;
}

int rt_check(const rt_tree *t, rs_err *e) {
    int64_t blocks = 0, pinned = 0, nodes = 0, flagged = 0;
    for (int i = 1; i < t->root.n_child; i++)
        if (key_cmp(t, &t->root, t->root.child[i - 1], t->root.child[i]->ns, NULL, 0) >= 0)
            return rs_errf(e, RS_EINVAL, "T2: namespaces are not sorted");
    /* Pre-order by parent pointers, as rt_mem_bytes walks. */
    const rt_node *n = &t->root;
    int next = 0, rc;
    for (;;) {
        if (next < n->n_child) {
            n = n->child[next];
            next = 0;
            if (n->parent != &t->root) nodes++;
            if ((rc = check_node(t, n, &blocks, &pinned, e))) return rc;
            continue;
        }
        if (n == &t->root) break;
        int found;
        next = child_pos(t, n->parent, n->ns, n->tokens, first_len(t, n), &found) + 1;
        n = n->parent;
    }
    for (int32_t b = 0; b < t->pool->n_blocks; b++) flagged += t->in_tree[b] != 0;
    if (blocks != t->cached_blocks || flagged != blocks)
        return rs_errf(e, RS_EINVAL, "T3: %lld blocks on edges, %lld flagged, %d counted",
                       (long long)blocks, (long long)flagged, t->cached_blocks);
    if (pinned != t->pinned_blocks)
        return rs_errf(e, RS_EINVAL, "T4: %lld blocks on pinned edges, %d counted",
                       (long long)pinned, t->pinned_blocks);
    if (nodes != t->nodes || t->root.n_child != t->n_ns)
        return rs_errf(e, RS_EINVAL, "T5: %lld token nodes (%lld counted), %d namespaces (%d)",
                       (long long)nodes, (long long)t->nodes, t->root.n_child, t->n_ns);
    return 0;
}
