/*
 * test_cache_nine.c — the nine-step RadixAttention example (SGLang's figure, issue 11) run as
 * requests through the tree, asserting the tree after every step.
 *
 * Segments are runs of whole blocks (block size 4). Sizes in blocks and the budget are chosen
 * so that exactly the figure's evictions happen and no others:
 *     SP 2, U1 1, A1 1, U2 6, A2 4, U3 3, A3 3, U4 5, A4 5, FS 2, Q1..Q3 1, R1..R3 1, U5 1,
 *     A5 1, the four step-9 samples S1..S4 2 each; budget 28 blocks.
 * Each request runs as the scheduler does (tc_request): match all but the last prompt token,
 * pin, allocate the rest (evicting LRU leaves), insert prompt + output, unpin, release.
 * Working through the budget: step 5 needs 10 blocks with 8 free and evicts [U2 A2] (10);
 * steps 6 and 7 fill the pool to exactly 28; step 8 recomputes [U2 A2 U5 A5] (12 blocks) and
 * evicts chat B's [U4 A4] (10) then [U3 A3] (6), the least recently used; step 9's samples
 * need 3 blocks each (the prompt's last block is recomputed privately, plus a 2-block answer):
 * the first fits, the second evicts the split-off [R1], the third [Q2 R2], the fourth [Q3 R3].
 */
#include <string.h>

#include "cache/cache.h"
#include "tests/tap.h"
#include "tests/test_cache_util.h"

enum { BS = 4, BUDGET = 28 };

enum seg { SP = 1, U1, A1, U2, A2, U3, A3, U4, A4, FS, Q1, R1, Q2, R2, Q3, R3, U5, A5, S1, N_SEG };
static const char *names[N_SEG + 4] = {"?",  "SP", "U1", "A1", "U2", "A2", "U3", "A3",
                                       "U4", "A4", "FS", "Q1", "R1", "Q2", "R2", "Q3",
                                       "R3", "U5", "A5", "S1", "S2", "S3", "S4"};
static const int blocks_of[N_SEG + 4] = {0, 2, 1, 1, 6, 4, 3, 3, 5, 5, 2, 1,
                                         1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2};

static const char *seg_name(int s) {
    return s >= 0 && s < N_SEG + 3 ? names[s] : "?";
}

/* A request: prompt segments, then output segments (0-terminated lists). */
typedef struct req {
    int prompt[8]; /* segment ids of the prompt */
    int output[2]; /* segment ids of the generated answer */
} req;

static int append(int32_t *toks, int n, int seg) {
    for (int i = 0; i < blocks_of[seg] * BS; i++) toks[n++] = seg * 1000 + i;
    return n;
}

/* Run one request; returns the matched tokens (negative on failure). */
static int run(rt_tree *t, kv_pool *p, const req *r) {
    int32_t toks[256];
    int n = 0;
    for (int i = 0; r->prompt[i]; i++) n = append(toks, n, r->prompt[i]);
    int n_prompt = n;
    for (int i = 0; r->output[i]; i++) n = append(toks, n, r->output[i]);
    return tc_request(t, p, 0, toks, n_prompt, n);
}

/* Check the shape and how many nodes/blocks the step evicted. */
static void check(rt_tree *t, int step, const char *want, int64_t *ev_nodes, int ev_want,
                  int64_t *ev_blocks, int evb_want) {
    char got[512];
    tc_render(t, 0, seg_name, got, sizeof got);
    TAP_OK(!strcmp(got, want), "step %d: %s (got %s)", step, want, got);
    rt_stats s;
    rt_get_stats(t, &s);
    TAP_OK(s.evicted_nodes - *ev_nodes == ev_want && s.evicted_blocks - *ev_blocks == evb_want,
           "step %d evicted %d nodes / %d blocks (got %lld / %lld)", step, ev_want, evb_want,
           (long long)(s.evicted_nodes - *ev_nodes), (long long)(s.evicted_blocks - *ev_blocks));
    TAP_OK(s.pinned_blocks == 0 && s.used_blocks == s.cached_blocks,
           "step %d: nothing pinned, the tree holds every used block (%d used, %d cached)", step,
           s.used_blocks, s.cached_blocks);
    *ev_nodes = s.evicted_nodes;
    *ev_blocks = s.evicted_blocks;
}

int main(void) {
    kv_pool p;
    rt_tree *t;
    TAP_OK(tc_pool(&p, BS, BUDGET) == 0 && p.n_blocks == BUDGET, "pool of %d blocks", BUDGET);
    TAP_OK(rt_init(&t, &p, NULL) == 0, "tree");
    int64_t en = 0, eb = 0;
    check(t, 1, "root", &en, 0, &eb, 0);

    TAP_OK(run(t, &p, &(req){{SP, U1}, {A1}}) == 0, "step 2: chat A turn 1, cold");
    check(t, 2, "root-[SP U1 A1]", &en, 0, &eb, 0);

    TAP_OK(run(t, &p, &(req){{SP, U1, A1, U2}, {A2}}) == 4 * BS, "step 3: turn 1 reused");
    check(t, 3, "root-[SP U1 A1]-[U2 A2]", &en, 0, &eb, 0);

    TAP_OK(run(t, &p, &(req){{SP, U3}, {A3}}) == 2 * BS, "step 4: chat B reuses SP");
    check(t, 4, "root-[SP]-{[U1 A1]-[U2 A2],[U3 A3]}", &en, 0, &eb, 0);

    TAP_OK(run(t, &p, &(req){{SP, U3, A3, U4}, {A4}}) == 8 * BS, "step 5: chat B continues");
    check(t, 5, "root-[SP]-{[U1 A1],[U3 A3]-[U4 A4]}", &en, 1, &eb, 10);

    TAP_OK(run(t, &p, &(req){{FS, Q1}, {R1}}) == 0, "step 6: few-shot request, cold");
    check(t, 6, "root-{[SP]-{[U1 A1],[U3 A3]-[U4 A4]},[FS Q1 R1]}", &en, 0, &eb, 0);

    TAP_OK(run(t, &p, &(req){{FS, Q2}, {R2}}) == 2 * BS, "step 7a: reuses FS");
    TAP_OK(run(t, &p, &(req){{FS, Q3}, {R3}}) == 2 * BS, "step 7b: reuses FS");
    check(t, 7, "root-{[SP]-{[U1 A1],[U3 A3]-[U4 A4]},[FS]-{[Q1 R1],[Q2 R2],[Q3 R3]}}", &en, 0, &eb,
          0);

    TAP_OK(run(t, &p, &(req){{SP, U1, A1, U2, A2, U5}, {A5}}) == 4 * BS,
           "step 8: chat A continues; its evicted turn is recomputed");
    check(t, 8, "root-{[SP]-[U1 A1]-[U2 A2 U5 A5],[FS]-{[Q1 R1],[Q2 R2],[Q3 R3]}}", &en, 2, &eb,
          16);

    /* The samples one by one: which leaf each one's allocation evicted. */
    static const char *after[4] = {
        "root-{[SP]-[U1 A1]-[U2 A2 U5 A5],[FS]-{[Q1]-{[R1],[S1]},[Q2 R2],[Q3 R3]}}",
        "root-{[SP]-[U1 A1]-[U2 A2 U5 A5],[FS]-{[Q1]-{[S1],[S2]},[Q2 R2],[Q3 R3]}}",
        "root-{[SP]-[U1 A1]-[U2 A2 U5 A5],[FS]-{[Q1]-{[S1],[S2],[S3]},[Q3 R3]}}",
        "root-{[SP]-[U1 A1]-[U2 A2 U5 A5],[FS]-[Q1]-{[S1],[S2],[S3],[S4]}}",
    };
    for (int k = 0; k < 4; k++) {
        TAP_OK(run(t, &p, &(req){{FS, Q1}, {S1 + k}}) == 3 * BS - 1,
               "step 9: sample %d of the step-6 request reuses FS and Q1 but its last token "
               "(Q1's block copied)",
               k + 1);
        char got[512];
        tc_render(t, 0, seg_name, got, sizeof got);
        TAP_OK(!strcmp(got, after[k]), "step 9 after sample %d: %s", k + 1, got);
    }
    check(t, 9, "root-{[SP]-[U1 A1]-[U2 A2 U5 A5],[FS]-[Q1]-{[S1],[S2],[S3],[S4]}}", &en, 3, &eb,
          5);

    rt_free(t);
    TAP_OK(p.n_free == p.n_blocks, "every block back in the pool");
    kv_pool_free(&p);
    return tap_done();
}
