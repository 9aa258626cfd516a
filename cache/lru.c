/* lru.c — the eviction order: a binary min-heap of unpinned leaves keyed on (last access, id).
 * Each node remembers its heap position, so removal and re-keying are O(log n) without search. */
#include "cache/rt_internal.h"

#include <assert.h>
#include <stdint.h>
#include <stdlib.h>

static int older(const rt_node *a, const rt_node *b) {
    if (a->last_access != b->last_access) return a->last_access < b->last_access;
    return a->id < b->id;
}

static void place(rt_heap *h, int i, rt_node *n) {
    h->a[i] = n;
    n->heap_idx = i;
}

static void sift_up(rt_heap *h, int i) {
    rt_node *n = h->a[i];
    while (i > 0) {
        int p = (i - 1) / 2;
        if (!older(n, h->a[p])) break;
        place(h, i, h->a[p]);
        i = p;
    }
    place(h, i, n);
}

static void sift_down(rt_heap *h, int i) {
    rt_node *n = h->a[i];
    for (;;) {
        int c = 2 * i + 1;
        if (c >= h->n) break;
        if (c + 1 < h->n && older(h->a[c + 1], h->a[c])) c++;
        if (!older(h->a[c], n)) break;
        place(h, i, h->a[c]);
        i = c;
    }
    place(h, i, n);
}

void rt_lru_remove(rt_heap *h, rt_node *n) {
    int i = n->heap_idx;
    if (i < 0) return;
    n->heap_idx = -1;
    rt_node *last = h->a[--h->n];
    if (i == h->n) return;
    place(h, i, last);
    sift_up(h, i);
    sift_down(h, last->heap_idx);
}

int rt_grow_ptrs(rt_node ***a, int *cap, int64_t need) {
    if (need <= *cap) return 0;
    if (need > INT32_MAX / 2) return RS_ENOMEM;
    int nc = *cap ? *cap : 4;
    while (nc < need) nc *= 2;
    rt_node **na = realloc(*a, (size_t)nc * sizeof *na);
    if (!na) return RS_ENOMEM;
    *a = na;
    *cap = nc;
    return 0;
}

int rt_lru_reserve(rt_heap *h, int64_t n) {
    return rt_grow_ptrs(&h->a, &h->cap, n);
}

void rt_lru_sync(rt_heap *h, rt_node *n) {
    if (!rt_is_evictable(n)) {
        rt_lru_remove(h, n);
    } else if (n->heap_idx >= 0) { /* re-keyed: the access time only grows, but stay general */
        sift_up(h, n->heap_idx);
        sift_down(h, n->heap_idx);
    } else {
        assert(h->n < h->cap); /* rt_lru_reserve ran when the node was created */
        place(h, h->n++, n);
        sift_up(h, h->n - 1);
    }
}

rt_node *rt_lru_pop(rt_heap *h) {
    if (h->n == 0) return NULL;
    rt_node *n = h->a[0];
    rt_lru_remove(h, n);
    return n;
}

void rt_lru_free(rt_heap *h) {
    free(h->a);
    *h = (rt_heap){0};
}
