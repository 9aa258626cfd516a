/* tok_util.c — byte strings, piece lists, UTF-8 helpers, hash tables and the byte-level
 * alphabet used by the rest of the tokenizer room. */
#include <stdlib.h>
#include <string.h>

#include "tokenizer/tok_internal.h"

int tb_reserve(tok_bytes *b, size_t n) {
    return rs_grow_bytes(&b->p, &b->cap, b->n + n + 1);
}

int tb_put(tok_bytes *b, const void *p, size_t n) {
    if (tb_reserve(b, n)) return RS_ENOMEM;
    if (n) memcpy(b->p + b->n, p, n);
    b->n += n;
    return 0;
}

int tb_cstr(tok_bytes *b) {
    if (tb_put(b, "", 0)) return RS_ENOMEM; /* tb_put always keeps one spare byte */
    b->p[b->n] = 0;
    return 0;
}

void tb_free(tok_bytes *b) {
    free(b->p);
    memset(b, 0, sizeof *b);
}

int tl_push(tok_list *l, const char *p, size_t n) {
    if (l->n == l->cap) {
        int cap = l->cap ? l->cap * 2 : 16;
        tok_span *s = realloc(l->s, (size_t)cap * sizeof *s);
        if (!s) return RS_ENOMEM;
        l->s = s;
        l->cap = cap;
    }
    size_t off = l->b.n;
    if (tb_put(&l->b, p, n)) return RS_ENOMEM;
    l->s[l->n++] = (tok_span){off, n};
    return 0;
}

int tl_extend(tok_list *l, const char *p, size_t n) {
    if (l->n == 0) return tl_push(l, p, n);
    if (tb_put(&l->b, p, n)) return RS_ENOMEM;
    l->s[l->n - 1].len += n; /* the last piece always ends at the end of the buffer */
    return 0;
}

void tl_clear(tok_list *l) {
    l->n = 0;
    l->b.n = 0;
}

void tl_free(tok_list *l) {
    tb_free(&l->b);
    free(l->s);
    memset(l, 0, sizeof *l);
}

/* ---- UTF-8 ------------------------------------------------------------------------------ */

/* The sequences themselves are util's (rs_utf8_prefix): one decoder for the whole program. */

int tok_utf8_len(const unsigned char *p, size_t n) {
    int whole;
    int k = rs_utf8_prefix(p, n, &whole);
    return whole ? k : 0;
}

int tok_utf8_valid(const char *p, size_t n) {
    return rs_utf8_check(p, n) == n;
}

int tok_utf8_put(tok_bytes *b, int32_t cp) {
    char s[4];
    int n;
    if (cp < 0x80)
        s[0] = (char)cp, n = 1;
    else if (cp < 0x800)
        s[0] = (char)(0xC0 | cp >> 6), s[1] = (char)(0x80 | (cp & 63)), n = 2;
    else if (cp < 0x10000)
        s[0] = (char)(0xE0 | cp >> 12), s[1] = (char)(0x80 | (cp >> 6 & 63)),
        s[2] = (char)(0x80 | (cp & 63)), n = 3;
    else
        s[0] = (char)(0xF0 | cp >> 18), s[1] = (char)(0x80 | (cp >> 12 & 63)),
        s[2] = (char)(0x80 | (cp >> 6 & 63)), s[3] = (char)(0x80 | (cp & 63)), n = 4;
    return tb_put(b, s, (size_t)n);
}

int tok_utf8_lossy(tok_bytes *out, const char *p, size_t n, int *truncated) {
    const unsigned char *u = (const unsigned char *)p;
    size_t i = 0, run = 0; /* run: start of the pending valid stretch */
    if (truncated) *truncated = 0;
    while (i < n) {
        int whole;
        int k = u[i] < 0x80 ? (whole = 1) : rs_utf8_prefix(u + i, n - i, &whole);
        if (whole) {
            i += (size_t)k;
            continue;
        }
        if (truncated) /* a valid start (a lead byte C2..F4) cut by the end, not a bad byte */
            *truncated = u[i] >= 0xC2 && u[i] <= 0xF4 && i + (size_t)k == n;
        if (tb_put(out, p + run, i - run) || tb_put(out, "\xEF\xBF\xBD", 3)) return RS_ENOMEM;
        i += (size_t)k;
        run = i;
    }
    return tb_put(out, p + run, n - run);
}

/* ---- hashing ----------------------------------------------------------------------------- */

uint64_t tok_hash(const void *p, size_t n) {
    const unsigned char *u = p;
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (size_t i = 0; i < n; i++) h = (h ^ u[i]) * 1099511628211ull;
    return h ^ (h >> 29);
}

static uint32_t pow2_slots(int expected) {
    uint32_t s = 16;
    while (s < (uint32_t)expected * 2u) s *= 2;
    return s;
}

int tok_strmap_init(tok_strmap *m, int expected) {
    uint32_t s = pow2_slots(expected);
    m->slot = malloc(s * sizeof *m->slot);
    if (!m->slot) return RS_ENOMEM;
    memset(m->slot, 0xff, s * sizeof *m->slot);
    m->mask = s - 1;
    return 0;
}

void tok_strmap_free(tok_strmap *m) {
    free(m->slot);
    m->slot = NULL;
}

void tok_strmap_put(tok_strmap *m, int32_t id) {
    uint32_t i = (uint32_t)tok_hash(m->strs[id], (size_t)m->lens[id]) & m->mask;
    while (m->slot[i] >= 0) {
        int32_t o = m->slot[i];
        if (m->lens[o] == m->lens[id] && !memcmp(m->strs[o], m->strs[id], (size_t)m->lens[id])) {
            m->slot[i] = id; /* a later duplicate wins, as in a JSON object */
            return;
        }
        i = (i + 1) & m->mask;
    }
    m->slot[i] = id;
}

int32_t tok_strmap_get(const tok_strmap *m, const char *s, size_t n) {
    uint32_t i = (uint32_t)tok_hash(s, n) & m->mask;
    for (int32_t id; (id = m->slot[i]) >= 0; i = (i + 1) & m->mask)
        if ((size_t)m->lens[id] == n && !memcmp(m->strs[id], s, n)) return id;
    return -1;
}

int tok_mergemap_init(tok_mergemap *m, int expected) {
    uint32_t s = pow2_slots(expected);
    m->slot = malloc(s * sizeof *m->slot);
    if (!m->slot) return RS_ENOMEM;
    for (uint32_t i = 0; i < s; i++) m->slot[i].key = UINT64_MAX;
    m->mask = s - 1;
    return 0;
}

void tok_mergemap_free(tok_mergemap *m) {
    free(m->slot);
    m->slot = NULL;
}

static uint32_t pair_hash(uint64_t k) {
    k ^= k >> 33;
    k *= 0xff51afd7ed558ccdull;
    k ^= k >> 33;
    return (uint32_t)k;
}

void tok_mergemap_put(tok_mergemap *m, int32_t a, int32_t b, int32_t rank, int32_t id) {
    uint64_t k = (uint64_t)(uint32_t)a << 32 | (uint32_t)b;
    uint32_t i = pair_hash(k) & m->mask;
    while (m->slot[i].key != UINT64_MAX && m->slot[i].key != k) i = (i + 1) & m->mask;
    if (m->slot[i].key == k) return; /* the first (best-ranked) occurrence of a pair wins */
    m->slot[i] = (tok_merge){k, rank, id};
}

const tok_merge *tok_mergemap_get(const tok_mergemap *m, int32_t a, int32_t b) {
    uint64_t k = (uint64_t)(uint32_t)a << 32 | (uint32_t)b;
    for (uint32_t i = pair_hash(k) & m->mask; m->slot[i].key != UINT64_MAX; i = (i + 1) & m->mask)
        if (m->slot[i].key == k) return &m->slot[i];
    return NULL;
}

/* ---- byte-level alphabet -------------------------------------------------------------------
 * GPT-2's reversible map: printable Latin-1 bytes stand for themselves, the other 68 bytes are
 * given code points 256, 257, ... in byte order. Computed, so there is no table to get wrong. */

static int bytelevel_is_self(int b) {
    return (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
}

void tok_bytelevel_init(tok_tokenizer *t) {
    int k = 0;
    for (int i = 0; i < 324; i++) t->bl_byte[i] = -1;
    for (int b = 0; b < 256; b++) {
        int32_t cp = bytelevel_is_self(b) ? b : 256 + k++;
        t->bl_byte[cp] = (int16_t)b;
        unsigned char *c = t->bl_char[b];
        if (cp < 0x80)
            c[0] = 1, c[1] = (unsigned char)cp;
        else
            c[0] = 2, c[1] = (unsigned char)(0xC0 | cp >> 6),
            c[2] = (unsigned char)(0x80 | (cp & 63));
    }
}
