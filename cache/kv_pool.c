/* kv_pool.c — the paged KV block pool; see cache.h for the contract. */
#include "cache/cache.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

size_t kv_block_bytes(const kv_pool_config *c) {
    size_t elem = c->dtype == KV_BF16 ? 2 : 4;
    return (size_t)c->n_layers * 2 * (size_t)c->n_kv_heads * (size_t)c->block_size *
           (size_t)c->head_dim * elem;
}

int kv_pool_init(kv_pool *p, const kv_pool_config *c, rs_err *e) {
    *p = (kv_pool){0};
    if (c->n_layers <= 0 || c->n_kv_heads <= 0 || c->head_dim <= 0 || c->block_size <= 0)
        return rs_errf(e, RS_EINVAL,
                       "kv pool: bad geometry (layers %d, kv heads %d, head dim %d, "
                       "block size %d)",
                       c->n_layers, c->n_kv_heads, c->head_dim, c->block_size);
    size_t bb = kv_block_bytes(c);
    size_t nb = c->budget_bytes / bb;
    if (nb < 1)
        return rs_errf(e, RS_EINVAL, "kv pool: budget of %zu bytes holds no block of %zu bytes",
                       c->budget_bytes, bb);
    if (nb > INT32_MAX / 2) nb = INT32_MAX / 2;
    p->n_layers = c->n_layers;
    p->n_kv_heads = c->n_kv_heads;
    p->head_dim = c->head_dim;
    p->block_size = c->block_size;
    p->dtype = c->dtype;
    p->elem_size = c->dtype == KV_BF16 ? 2 : 4;
    p->tile_bytes = (size_t)c->block_size * (size_t)c->head_dim * p->elem_size;
    p->block_bytes = bb;
    p->n_blocks = (int32_t)nb;
    p->mem_bytes = nb * bb;
    /* Anonymous mapping: pages are committed only when first written, so a large budget costs
     * nothing until the cache fills. */
    void *m = mmap(NULL, p->mem_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED) {
        *p = (kv_pool){0};
        return rs_errf(e, RS_ENOMEM, "kv pool: cannot map %zu bytes", nb * bb);
    }
    /* A block's tiles for one (layer, head) are 4 KB apart from the next block's by a whole
     * block (~1.8 MB for Qwen3-0.6B), so a walk over a sequence's KV touches a new 4 KB page at
     * every tile: 2 MB pages turn most of those TLB misses into hits. Advice only: refused
     * (THP off) it changes nothing. */
    madvise(m, p->mem_bytes, MADV_HUGEPAGE);
    p->mem = m;
    p->ref = calloc(nb, sizeof *p->ref);
    p->free_stack = malloc(nb * sizeof *p->free_stack);
    if (!p->ref || !p->free_stack) {
        kv_pool_free(p);
        return rs_errf(e, RS_ENOMEM, "kv pool: out of memory for %zu blocks", nb);
    }
    /* Lowest ids on top, so a fresh pool hands out 0, 1, 2, ... (readable in tests). */
    for (int32_t i = 0; i < (int32_t)nb; i++) p->free_stack[i] = (int32_t)nb - 1 - i;
    p->n_free = (int32_t)nb;
    return 0;
}

void kv_pool_free(kv_pool *p) {
    if (p->mem) munmap(p->mem, p->mem_bytes);
    free(p->ref);
    free(p->free_stack);
    *p = (kv_pool){0};
}

int32_t kv_alloc(kv_pool *p) {
    if (p->n_free == 0) return -1;
    int32_t b = p->free_stack[--p->n_free];
    assert(p->ref[b] == 0);
    p->ref[b] = 1;
    return b;
}

void kv_retain(kv_pool *p, int32_t b) {
    assert(b >= 0 && b < p->n_blocks && p->ref[b] > 0);
    p->ref[b]++;
}

void kv_release(kv_pool *p, int32_t b) {
    assert(b >= 0 && b < p->n_blocks && p->ref[b] > 0);
    if (--p->ref[b] == 0) p->free_stack[p->n_free++] = b;
}

void kv_copy(kv_pool *p, int32_t dst, int32_t src) {
    assert(dst >= 0 && dst < p->n_blocks && src >= 0 && src < p->n_blocks);
    memcpy(p->mem + (size_t)dst * p->block_bytes, p->mem + (size_t)src * p->block_bytes,
           p->block_bytes);
}

void kv_retain_n(kv_pool *p, const int32_t *blocks, int n) {
    for (int i = 0; i < n; i++) kv_retain(p, blocks[i]);
}

void kv_release_n(kv_pool *p, const int32_t *blocks, int n) {
    for (int i = 0; i < n; i++) kv_release(p, blocks[i]);
}
