/* test_kv_pool.c — the KV block pool: sizing, allocation order, reference counting, layout. */
#include <string.h>

#include "cache/cache.h"
#include "tests/tap.h"

int main(void) {
    rs_err e = {0};
    kv_pool p;
    kv_pool_config c = {
        .n_layers = 2, .n_kv_heads = 3, .head_dim = 4, .block_size = 16, .dtype = KV_F32};
    c.budget_bytes = kv_block_bytes(&c) * 5 + 7;
    TAP_OK(kv_block_bytes(&c) == 2 * 2 * 3 * 16 * 4 * 4, "block bytes = layers*2*heads*bs*dim*4");
    TAP_OK(kv_pool_init(&p, &c, &e) == 0, "init: %s", e.msg);
    TAP_OK(p.n_blocks == 5 && p.n_free == 5, "budget for 5 blocks and a bit gives 5 blocks");
    int32_t b[6];
    for (int i = 0; i < 5; i++) b[i] = kv_alloc(&p);
    TAP_OK(b[0] == 0 && b[4] == 4, "a fresh pool hands out ids in order");
    TAP_OK(kv_alloc(&p) == -1, "a full pool says so (-1), it does not fail silently");
    kv_retain(&p, b[2]);
    kv_release(&p, b[2]);
    TAP_OK(p.n_free == 0 && p.ref[2] == 1, "retain+release keeps the block");
    kv_release(&p, b[2]);
    TAP_OK(p.n_free == 1 && kv_n_used(&p) == 4, "releasing the last reference frees it");
    TAP_OK(kv_alloc(&p) == 2, "the freed block is reused");
    /* Tiles of one block do not overlap and stay inside the block. */
    char *t0 = kv_tile(&p, 1, 0, 0, 0), *t1 = kv_tile(&p, 1, 0, 0, 1);
    char *tl = kv_tile(&p, 1, 1, 1, 2);
    TAP_OK(t1 - t0 == (long)p.tile_bytes, "heads are consecutive tiles");
    TAP_OK(tl + p.tile_bytes == (char *)p.mem + 2 * p.block_bytes, "last tile ends the block");
    memset(kv_tile(&p, 4, 1, 1, 2), 0xab, p.tile_bytes); /* writable to the very end */
    kv_pool_free(&p);
    c.budget_bytes = 10;
    TAP_OK(kv_pool_init(&p, &c, &e) == RS_EINVAL, "a budget below one block is an error: %s",
           e.msg);
    c.block_size = 0;
    c.budget_bytes = 1 << 20;
    TAP_OK(kv_pool_init(&p, &c, &e) == RS_EINVAL, "a zero block size is an error: %s", e.msg);
    return tap_done();
}
