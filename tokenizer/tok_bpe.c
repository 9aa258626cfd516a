/* tok_bpe.c — the BPE model: one pre-token to ids, with O(n log n) merging (a binary heap of
 * candidate pairs ordered by merge rank, then position, exactly Hugging Face's order) and a
 * sharded, lock-protected cache of recent pre-token results. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tokenizer/tok_internal.h"

typedef struct sym {
    int32_t id; /* current token id of this symbol */
    int prev;   /* index of the previous live symbol, -1 at the start */
    int next;   /* index of the next live symbol, -1 at the end */
    int alive;  /* 0 once merged into its left neighbour */
    int unk;    /* produced as an unknown (for fuse_unk) */
} sym;

typedef struct cand {
    int32_t rank; /* merge rank of the pair (lower merges first) */
    int pos;      /* index of the pair's left symbol (ties: leftmost first) */
    int32_t id;   /* the merged id, to detect that the pair changed since it was pushed */
} cand;

enum { BPE_INLINE = 64 }; /* symbols / candidates kept on the stack for a typical word */

typedef struct bpe_work {
    sym *s;                    /* symbols (s_inline or malloc'd) */
    int ns;                    /* symbols used */
    int cap_s;                 /* symbols allocated */
    cand *h;                   /* binary min-heap of candidate merges (h_inline or malloc'd) */
    int nh;                    /* heap size */
    int cap_h;                 /* heap allocated */
    sym s_inline[BPE_INLINE];  /* first symbols, no malloc for short words */
    cand h_inline[BPE_INLINE]; /* first candidates */
} bpe_work;

/* Grow an array that may still be the inline buffer. */
static void *grow(void *p, const void *inl, int *cap, size_t elem) {
    int ncap = *cap * 2;
    void *q = p == inl ? malloc((size_t)ncap * elem) : realloc(p, (size_t)ncap * elem);
    if (!q) return NULL;
    if (p == inl) memcpy(q, p, (size_t)*cap * elem);
    *cap = ncap;
    return q;
}

static int cand_less(cand a, cand b) {
    return a.rank != b.rank ? a.rank < b.rank : a.pos < b.pos;
}

static int heap_push(bpe_work *w, cand c) {
    if (w->nh == w->cap_h) {
        cand *h = grow(w->h, w->h_inline, &w->cap_h, sizeof *h);
        if (!h) return RS_ENOMEM;
        w->h = h;
    }
    int i = w->nh++;
    while (i > 0 && cand_less(c, w->h[(i - 1) / 2])) {
        w->h[i] = w->h[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    w->h[i] = c;
    return 0;
}

static cand heap_pop(bpe_work *w) {
    cand top = w->h[0], last = w->h[--w->nh];
    int i = 0;
    for (;;) {
        int c = 2 * i + 1;
        if (c >= w->nh) break;
        if (c + 1 < w->nh && cand_less(w->h[c + 1], w->h[c])) c++;
        if (!cand_less(w->h[c], last)) break;
        w->h[i] = w->h[c];
        i = c;
    }
    if (w->nh) w->h[i] = last;
    return top;
}

static int sym_push(bpe_work *w, int32_t id, int unk) {
    if (w->ns == w->cap_s) {
        sym *s = grow(w->s, w->s_inline, &w->cap_s, sizeof *s);
        if (!s) return RS_ENOMEM;
        w->s = s;
    }
    int i = w->ns++;
    w->s[i] = (sym){id, i - 1, -1, 1, unk};
    if (i > 0) w->s[i - 1].next = i;
    return 0;
}

/* One character (with continuing prefix / end-of-word suffix applied) to symbols. */
static int add_char(const tok_tokenizer *t, bpe_work *w, const char *c, size_t n, int first,
                    int last, rs_err *e) {
    char buf[128];
    size_t pl = first ? 0 : t->cont_prefix_len, sl = last ? t->eow_suffix_len : 0;
    int32_t id = -1;
    unsigned char c0 = (unsigned char)c[0];
    if (!pl && !sl && n <= 2 && (n == 1 || (c0 & 0xE0) == 0xC0)) /* code point < 0x800 */
        id = t->small_cp_id[n == 1 ? c0 : (c0 & 0x1F) << 6 | ((unsigned char)c[1] & 0x3F)];
    else if (pl + n + sl <= sizeof buf) {
        memcpy(buf, t->cont_prefix, pl);
        memcpy(buf + pl, c, n);
        memcpy(buf + pl + n, t->eow_suffix, sl);
        id = tok_strmap_get(&t->vocab, buf, pl + n + sl);
    }
    if (id >= 0) return sym_push(w, id, 0);
    if (t->byte_fallback) {
        size_t k = 0;
        while (k < n && t->byte_id[(unsigned char)c[k]] >= 0) k++;
        if (k == n) {
            for (k = 0; k < n; k++)
                if (sym_push(w, t->byte_id[(unsigned char)c[k]], 0)) return RS_ENOMEM;
            return 0;
        }
    }
    if (t->unk_id < 0)
        return rs_errf(e, RS_EINVAL,
                       "tokenizer: character '%.*s' is not in the vocabulary and "
                       "the model has no unk_token",
                       (int)n, c);
    if (t->fuse_unk && w->ns > 0 && w->s[w->ns - 1].unk) return 0;
    return sym_push(w, t->unk_id, 1);
}

static int push_pair(const tok_tokenizer *t, bpe_work *w, int pos) {
    if (pos < 0 || w->s[pos].next < 0) return 0;
    const tok_merge *m = tok_mergemap_get(&t->merges, w->s[pos].id, w->s[w->s[pos].next].id);
    return m ? heap_push(w, (cand){m->rank, pos, m->id}) : 0;
}

static int merge_all(const tok_tokenizer *t, bpe_work *w) {
    for (int i = 0; i + 1 < w->ns; i++)
        if (push_pair(t, w, i)) return RS_ENOMEM;
    while (w->nh) {
        cand c = heap_pop(w);
        sym *l = &w->s[c.pos];
        if (!l->alive || l->next < 0) continue;
        sym *r = &w->s[l->next];
        const tok_merge *m = tok_mergemap_get(&t->merges, l->id, r->id);
        if (!m || m->id != c.id) continue; /* the pair changed since it was pushed */
        l->id = c.id;
        l->unk = 0;
        r->alive = 0;
        l->next = r->next;
        if (r->next >= 0) w->s[r->next].prev = c.pos;
        if (push_pair(t, w, l->prev) || push_pair(t, w, c.pos)) return RS_ENOMEM;
    }
    return 0;
}

static int bpe_compute(const tok_tokenizer *t, const char *word, size_t n, rs_ivec *out,
                       rs_err *e) {
    if (t->ignore_merges) {
        int32_t id = tok_strmap_get(&t->vocab, word, n);
        if (id >= 0) return rs_ivec_push(out, id);
    }
    bpe_work w;
    w.s = w.s_inline, w.h = w.h_inline, w.ns = w.nh = 0, w.cap_s = w.cap_h = BPE_INLINE;
    int rc = 0;
    for (size_t i = 0; i < n && !rc;) {
        int k = tok_utf8_len((const unsigned char *)word + i, n - i);
        if (!k) k = 1; /* cannot happen: the text was validated; stay safe anyway */
        rc = add_char(t, &w, word + i, (size_t)k, i == 0, i + (size_t)k == n, e);
        i += (size_t)k;
    }
    if (!rc) rc = merge_all(t, &w);
    for (int i = 0; !rc && w.ns && i >= 0; i = w.s[i].next) rc = rs_ivec_push(out, w.s[i].id);
    if (rc == RS_ENOMEM) rs_errf(e, rc, "tokenizer: out of memory in BPE");
    if (w.s != w.s_inline) free(w.s);
    if (w.h != w.h_inline) free(w.h);
    return rc;
}

/* ---- cache ------------------------------------------------------------------------------
 * Shared by every thread using the tokenizer: 64 shards, each an open-addressing table behind
 * its own mutex, picked by the key's hash, so concurrent encodes rarely meet on a lock. A
 * shard is emptied when half full (no LRU bookkeeping: a hot pre-token is back after one
 * miss). Only short pre-tokens are cached; long ones are rare and cheap to recompute
 * relative to their length. */

typedef struct tok_cache_ent {
    uint64_t h;    /* hash of the key, 0 for an empty slot */
    char *data;    /* key bytes followed by the ids (int32, aligned copy), owned */
    uint32_t klen; /* key length */
    uint32_t nids; /* number of ids */
} tok_cache_ent;

void tok_cache_init(tok_tokenizer *t) {
    for (int i = 0; i < TOK_CACHE_SHARDS; i++) {
        pthread_mutex_init(&t->cache[i].mu, NULL);
        t->cache[i].ent = NULL;
        t->cache[i].used = 0;
    }
}

static void shard_clear(tok_cache_shard *s) {
    if (!s->ent) return;
    for (int i = 0; i < TOK_CACHE_SLOTS; i++) free(s->ent[i].data);
    memset(s->ent, 0, TOK_CACHE_SLOTS * sizeof *s->ent);
    s->used = 0;
}

void tok_cache_free(tok_tokenizer *t) {
    for (int i = 0; i < TOK_CACHE_SHARDS; i++) {
        shard_clear(&t->cache[i]);
        free(t->cache[i].ent);
        pthread_mutex_destroy(&t->cache[i].mu);
    }
}

static int cache_get(tok_cache_shard *s, uint64_t h, const char *w, size_t n, rs_ivec *out,
                     int *hit) {
    *hit = 0;
    if (!s->ent) return 0;
    for (uint32_t i = (uint32_t)h & (TOK_CACHE_SLOTS - 1); s->ent[i].h;
         i = (i + 1) & (TOK_CACHE_SLOTS - 1)) {
        tok_cache_ent *c = &s->ent[i];
        if (c->h == h && c->klen == n && !memcmp(c->data, w, n)) {
            int32_t ids[TOK_CACHE_MAXKEY];
            memcpy(ids, c->data + n, c->nids * sizeof(int32_t));
            *hit = 1;
            return rs_ivec_append(out, ids, (int)c->nids);
        }
    }
    return 0;
}

static void cache_put(tok_cache_shard *s, uint64_t h, const char *w, size_t n, const int32_t *ids,
                      int nids) {
    if (!s->ent && !(s->ent = calloc(TOK_CACHE_SLOTS, sizeof *s->ent))) return;
    if (s->used >= TOK_CACHE_SLOTS / 2) shard_clear(s);
    char *d = malloc(n + (size_t)nids * sizeof(int32_t));
    if (!d) return; /* a cache that cannot grow is only slower */
    memcpy(d, w, n);
    memcpy(d + n, ids, (size_t)nids * sizeof(int32_t));
    uint32_t i = (uint32_t)h & (TOK_CACHE_SLOTS - 1);
    while (s->ent[i].h) i = (i + 1) & (TOK_CACHE_SLOTS - 1);
    s->ent[i] = (tok_cache_ent){h, d, (uint32_t)n, (uint32_t)nids};
    s->used++;
}

int tok_bpe_word(const tok_tokenizer *t, const char *w, size_t n, rs_ivec *out, rs_err *e) {
    if (n == 0) return 0;
    if (n > TOK_CACHE_MAXKEY) return bpe_compute(t, w, n, out, e);
    uint64_t h = tok_hash(w, n) | 1; /* never 0: 0 marks an empty slot */
    /* the cache is the one mutable part of a shared tokenizer; the const is about the
     * observable behaviour, which the cache never changes */
    tok_cache_shard *s = (tok_cache_shard *)&t->cache[(h >> 40) % TOK_CACHE_SHARDS];
    int hit, rc;
    pthread_mutex_lock(&s->mu);
    rc = cache_get(s, h, w, n, out, &hit);
    pthread_mutex_unlock(&s->mu);
    if (rc || hit) return rc ? rs_errf(e, rc, "tokenizer: out of memory") : 0;
    int start = out->n;
    if ((rc = bpe_compute(t, w, n, out, e))) return rc;
    pthread_mutex_lock(&s->mu);
    cache_put(s, h, w, n, out->v + start, out->n - start);
    pthread_mutex_unlock(&s->mu);
    return 0;
}
