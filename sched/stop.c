/* stop.c — stop strings matched on decoded text across token boundaries, never emitted. */
#include <stdlib.h>
#include <string.h>

#include "sched/sched_int.h"

void sched_stopper_init(sched_stopper *m, char *const *stop, int n_stop) {
    *m = (sched_stopper){.stop = stop, .n_stop = n_stop};
}

void sched_stopper_free(sched_stopper *m) {
    free(m->pending);
    *m = (sched_stopper){0};
}

static char *dup_n(const char *s, size_t n) {
    char *d = malloc(n + 1);
    if (!d) return NULL;
    memcpy(d, s, n);
    d[n] = 0;
    return d;
}

/* Earliest occurrence of any stop string in the pending text, or -1. */
static long first_match(const sched_stopper *m) {
    long best = -1;
    for (int i = 0; i < m->n_stop; i++) {
        if (!m->stop[i][0]) continue;
        const char *hit = strstr(m->pending, m->stop[i]);
        if (hit && (best < 0 || hit - m->pending < best)) best = hit - m->pending;
    }
    return best;
}

/* Length of the longest tail of the pending text that is a proper prefix of a stop string:
 * those bytes may still become a stop string, so they wait for more text. A stop string is
 * valid UTF-8, so such a tail starts on a character boundary. */
static size_t held_tail(const sched_stopper *m) {
    size_t hold = 0;
    for (int i = 0; i < m->n_stop; i++) {
        size_t sl = strlen(m->stop[i]);
        size_t k = sl > 0 ? sl - 1 : 0;
        if (k > m->len) k = m->len;
        for (; k > hold; k--)
            if (memcmp(m->pending + m->len - k, m->stop[i], k) == 0) break;
        if (k > hold) hold = k;
    }
    return hold;
}

int sched_stopper_feed(sched_stopper *m, const char *piece, int final, char **emit) {
    *emit = NULL;
    size_t pl = strlen(piece);
    if (rs_grow_bytes(&m->pending, &m->cap, m->len + pl + 1)) return RS_ENOMEM;
    memcpy(m->pending + m->len, piece, pl);
    m->len += pl;
    m->pending[m->len] = 0;
    long hit = first_match(m);
    size_t out = hit >= 0 ? (size_t)hit : final ? m->len : m->len - held_tail(m);
    *emit = dup_n(m->pending, out);
    if (!*emit) return RS_ENOMEM;
    if (hit >= 0) {
        m->len = 0;
    } else {
        memmove(m->pending, m->pending + out, m->len - out);
        m->len -= out;
    }
    m->pending[m->len] = 0;
    return hit >= 0 ? 1 : 0;
}
