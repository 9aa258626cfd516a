/*
 * test_engine_pool.c — the engine's worker pool: every index of a parallel-for runs exactly once,
 * for any item count and thread count, across many consecutive jobs; bad thread counts are errors.
 */
#include <stdatomic.h>
#include <stdlib.h>

#include "engine/internal.h"
#include "tests/tap.h"

typedef struct count_job {
    atomic_int *hits; /* one counter per index */
    atomic_int calls; /* pieces run */
} count_job;

static void count_piece(void *a, int i0, int i1) {
    count_job *j = a;
    atomic_fetch_add(&j->calls, 1);
    for (int i = i0; i < i1; i++) atomic_fetch_add(&j->hits[i], 1);
}

/* Run `rounds` jobs of n items; 1 if every index ran exactly once per job. */
static int exact_cover(eng_pool *p, int n, int rounds) {
    atomic_int *hits = calloc((size_t)n + 1, sizeof *hits);
    count_job j = {hits, 0};
    for (int r = 0; r < rounds; r++) eng_pool_run(p, n, count_piece, &j);
    int ok = 1;
    for (int i = 0; i < n; i++) ok &= atomic_load(&hits[i]) == rounds;
    ok &= atomic_load(&j.calls) <= rounds * eng_pool_threads(p);
    free(hits);
    return ok;
}

int main(void) {
    rs_err e = {0};
    for (int t = 1; t <= 4; t++) {
        eng_pool *p;
        if (!TAP_OK(eng_pool_init(&p, t, &e) == 0, "pool of %d threads starts: %s", t, e.msg))
            continue;
        int ok = 1;
        int sizes[] = {0, 1, 2, 3, 5, 17, 1000};
        for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++)
            ok &= exact_cover(p, sizes[i], 50);
        TAP_OK(ok, "%d threads: each index exactly once per job (n = 0..1000, 50 jobs each)", t);
        eng_pool_free(p);
    }
    eng_pool *p = NULL;
    TAP_OK(eng_pool_init(&p, 0, &e) == RS_EINVAL && !p, "0 threads is an error: %s", e.msg);
    eng_pool_free(NULL);
    return tap_done();
}
