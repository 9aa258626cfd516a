/* rt_snapshot.c — read-only copies of the radix tree (for GET /v1/cache and tests) and their
 * JSON form. The copy owns all its memory, so the scheduler can hand it to another thread. */
#include "cache/rt_internal.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void rt_snapshot_free(rt_snapshot *s) {
    free(s->nodes);
    free(s->arena);
    free(s->block_arena);
    *s = (rt_snapshot){0};
}

typedef struct snap_frame {
    const rt_node *n; /* node to copy */
    int depth;        /* its depth below the root's children */
} snap_frame;

static void copy_node(const rt_tree *t, rt_snapshot *s, snap_frame f, int max_tokens,
                      size_t *arena_used, size_t *blocks_used) {
    const rt_node *n = f.n;
    rt_snap_node *o = &s->nodes[s->n++];
    int n_tokens = n->n_tokens;
    int k = n_tokens < max_tokens ? n_tokens : max_tokens;
    *o = (rt_snap_node){
        .id = n->id,
        .parent = n->parent == &t->root ? 0 : n->parent->id,
        .ns = n->ns,
        .depth = f.depth,
        .n_tokens = n_tokens,
        .n_blocks = n->n_blocks,
        .pin = n->pin,
        .last_access = n->last_access,
        .hits = n->hits,
        .tokens = s->arena + *arena_used,
        .n_copied = k,
        .blocks = s->block_arena + *blocks_used,
    };
    if (n->n_blocks > 0)
        memcpy(s->block_arena + *blocks_used, n->blocks, (size_t)n->n_blocks * sizeof *n->blocks);
    *blocks_used += (size_t)n->n_blocks;
    if (k > 0) memcpy(s->arena + *arena_used, n->tokens, (size_t)k * sizeof *n->tokens);
    *arena_used += (size_t)k;
}

int rt_snapshot_take(const rt_tree *t, int max_tokens, rt_snapshot *out, rs_err *e) {
    *out = (rt_snapshot){0};
    if (max_tokens < 0) return rs_errf(e, RS_EINVAL, "snapshot: max_tokens %d < 0", max_tokens);
    size_t count = (size_t)t->nodes + (size_t)t->n_ns;
    size_t arena = (size_t)t->cached_blocks * (size_t)t->bs;
    if (arena > count * (size_t)max_tokens) arena = count * (size_t)max_tokens;
    out->nodes = malloc((count ? count : 1) * sizeof *out->nodes);
    out->arena = malloc((arena ? arena : 1) * sizeof *out->arena);
    out->block_arena = malloc(((size_t)t->cached_blocks + 1) * sizeof *out->block_arena);
    snap_frame *stack = malloc((count ? count : 1) * sizeof *stack);
    if (!out->nodes || !out->arena || !out->block_arena || !stack) {
        free(stack);
        rt_snapshot_free(out);
        return rs_errf(e, RS_ENOMEM, "snapshot: out of memory for %zu nodes", count);
    }
    /* Pre-order without recursion: children are pushed last-first so they pop in order. */
    int sp = 0;
    size_t used = 0, used_blocks = 0;
    for (int i = t->root.n_child - 1; i >= 0; i--) stack[sp++] = (snap_frame){t->root.child[i], 0};
    while (sp > 0) {
        snap_frame f = stack[--sp];
        copy_node(t, out, f, max_tokens, &used, &used_blocks);
        for (int i = f.n->n_child - 1; i >= 0; i--)
            stack[sp++] = (snap_frame){f.n->child[i], f.depth + 1};
    }
    free(stack);
    out->clock = t->clock;
    rt_get_stats(t, &out->stats);
    return 0;
}

static void json_stats(FILE *f, const rt_stats *s) {
    fprintf(f,
            "{\"lookups\":%" PRId64 ",\"hit_tokens\":%" PRId64 ",\"miss_tokens\":%" PRId64
            ",\"evicted_blocks\":%" PRId64 ",\"evicted_nodes\":%" PRId64
            ",\"inserted_blocks\":%" PRId64 ",\"nodes\":%" PRId64 ",\"namespaces\":%d"
            ",\"cached_blocks\":%d,\"pinned_blocks\":%d,\"pool_blocks\":%d,\"free_blocks\":%d"
            ",\"used_blocks\":%d}",
            s->lookups, s->hit_tokens, s->miss_tokens, s->evicted_blocks, s->evicted_nodes,
            s->inserted_blocks, s->nodes, s->namespaces, s->cached_blocks, s->pinned_blocks,
            s->pool_blocks, s->free_blocks, s->used_blocks);
}

/* Namespaces are 64-bit hashes: written as strings, since JSON readers lose integers > 2^53. */
static void json_node(FILE *f, const rt_snap_node *n) {
    fprintf(f,
            "{\"id\":%" PRIu64 ",\"parent\":%" PRIu64 ",\"ns\":\"%" PRIu64 "\",\"depth\":%d"
            ",\"n_tokens\":%d,\"n_blocks\":%d,\"pin\":%d,\"last_access\":%" PRIu64
            ",\"hits\":%" PRId64 ",\"tokens\":[",
            n->id, n->parent, n->ns, n->depth, n->n_tokens, n->n_blocks, n->pin, n->last_access,
            n->hits);
    for (int i = 0; i < n->n_copied; i++) fprintf(f, "%s%d", i ? "," : "", n->tokens[i]);
    fputs("],\"blocks\":[", f);
    for (int i = 0; i < n->n_blocks; i++) fprintf(f, "%s%d", i ? "," : "", n->blocks[i]);
    fputs("]}", f);
}

int rt_snapshot_json(const rt_snapshot *s, char **out, rs_err *e) {
    *out = NULL;
    size_t len = 0;
    FILE *f = open_memstream(out, &len);
    if (!f) return rs_errf(e, RS_ENOMEM, "snapshot json: out of memory");
    fprintf(f, "{\"clock\":%" PRIu64 ",\"stats\":", s->clock);
    json_stats(f, &s->stats);
    fputs(",\"nodes\":[", f);
    for (int i = 0; i < s->n; i++) {
        if (i) fputc(',', f);
        json_node(f, &s->nodes[i]);
    }
    fputs("]}", f);
    if (fclose(f) != 0 || !*out) {
        free(*out);
        *out = NULL;
        return rs_errf(e, RS_ENOMEM, "snapshot json: out of memory");
    }
    return 0;
}
