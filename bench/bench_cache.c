/*
 * bench_cache.c — the radix tree's own costs (no model involved):
 *   1. insert and match throughput with ~1M cached tokens (block size 16), shared system
 *      prompts plus long per-request tails, the shape of a chat server's cache;
 *   2. memory the tree needs per cached token (rt_mem_bytes / cached tokens), beside the KV
 *      bytes per token it indexes;
 *   3. what 16-token blocks still cost in hit rate now that tails are cached and matches are
 *      token-granular (issue 21; before, whole blocks only cost ~8 tokens a request): multi-turn
 *      chats replayed with block size 16 against block size 1 (the best any cache could do), in two
 *      shapes: "append" (the next prompt extends prompt + answer) and "qwen3" (the template
 *      drops the think block of the previous answer, so prompts diverge after the assistant
 *      header; see issue 11).
 *
 * Usage: bench_cache [cached_tokens]   (default 1000000; give e.g. 100000 for a smoke run)
 * Output: one "name value unit" line per figure, easy to grep and to compare between runs.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cache/cache.h"
#include "tests/test_cache_util.h"

static uint64_t rng = 0x9E3779B97F4A7C15ull; /* one deterministic stream per run */
static uint32_t rnd(uint32_t n) {
    return tc_rnd(&rng, n);
}
static int between(int lo, int hi) {
    return lo + (int)rnd((uint32_t)(hi - lo + 1));
}
static void random_tokens(int32_t *t, int n) {
    for (int i = 0; i < n; i++) t[i] = (int32_t)rnd(151000);
}

static void die(const char *what) {
    fprintf(stderr, "bench_cache: %s\n", what);
    exit(1);
}

/* ------------------------------------------------------------------ 1 + 2: throughput, memory */

enum { BS = 16, N_SYS = 64, MAX_SEQ = 4096 };

static void bench_throughput(long target_tokens) {
    kv_pool pool;
    rt_tree *t;
    int n_blocks = (int)(target_tokens / BS) + 2 * MAX_SEQ / BS + 16;
    if (tc_setup(&pool, &t, BS, n_blocks)) die("pool/tree init");
    static int32_t sys[N_SYS][1024];
    int sys_n[N_SYS];
    for (int i = 0; i < N_SYS; i++) {
        sys_n[i] = between(256, 1024);
        random_tokens(sys[i], sys_n[i]);
    }
    /* Sequences: a system prompt + a random tail of 256..3072 tokens, kept for the matches. */
    int cap = 1024, n_seq = 0;
    int32_t **seqs = malloc(sizeof *seqs * (size_t)cap);
    int *seq_n = malloc(sizeof *seq_n * (size_t)cap);
    int32_t *blocks = malloc(sizeof *blocks * (MAX_SEQ / BS + 1));
    double t_insert = 0;
    long inserted_tokens = 0;
    rt_stats s;
    rt_get_stats(t, &s);
    while ((long)s.cached_blocks * BS < target_tokens) {
        if (n_seq == cap) {
            cap *= 2;
            seqs = realloc(seqs, sizeof *seqs * (size_t)cap);
            seq_n = realloc(seq_n, sizeof *seq_n * (size_t)cap);
        }
        int k = (int)rnd(N_SYS), n = sys_n[k] + between(256, 3072);
        int32_t *q = malloc(sizeof *q * (size_t)n);
        memcpy(q, sys[k], sizeof *q * (size_t)sys_n[k]);
        random_tokens(q + sys_n[k], n - sys_n[k]);
        if (rt_alloc_blocks(t, n / BS, blocks, NULL)) die("pool too small");
        double t0 = rs_now();
        if (rt_insert(t, 0, q, n, blocks, NULL, NULL)) die("insert failed");
        t_insert += rs_now() - t0;
        kv_release_n(&pool, blocks, n / BS);
        inserted_tokens += n;
        seqs[n_seq] = q;
        seq_n[n_seq++] = n;
        rt_get_stats(t, &s);
    }
    printf("cached_tokens %ld tokens\n", (long)s.cached_blocks * BS);
    printf("tree_nodes %lld nodes\n", (long long)s.nodes);
    printf("insert_rate %.0f inserts/s\n", n_seq / t_insert);
    printf("insert_token_rate %.3g tokens/s\n", inserted_tokens / t_insert);

    enum { N_MATCH = 20000 };
    rs_ivec got = {0};
    long matched = 0;
    double t0 = rs_now();
    for (int i = 0; i < N_MATCH; i++) {
        int k = (int)rnd((uint32_t)n_seq);
        got.n = 0;
        rt_node *node;
        int m = rt_match(t, 0, seqs[k], seq_n[k], &got, &node);
        if (m < 0) die("match failed");
        matched += m;
    }
    double t_match = rs_now() - t0;
    printf("match_rate %.0f matches/s\n", N_MATCH / t_match);
    printf("match_token_rate %.3g tokens/s\n", matched / t_match);
    printf("match_mean_tokens %.0f tokens\n", (double)matched / N_MATCH);

    size_t bytes = rt_mem_bytes(t);
    kv_pool_config qwen = {
        .n_layers = 28, .n_kv_heads = 8, .head_dim = 128, .block_size = 1, .dtype = KV_BF16};
    printf("tree_bytes %zu bytes\n", bytes);
    printf("tree_bytes_per_cached_token %.2f bytes\n",
           (double)bytes / ((double)s.cached_blocks * BS));
    printf("kv_bytes_per_token_qwen3_0.6b_bf16 %zu bytes\n", kv_block_bytes(&qwen));

    double t1 = rs_now();
    int freed = rt_evict(t, n_blocks);
    double t_evict = rs_now() - t1;
    rt_get_stats(t, &s);
    printf("evict_rate %.0f nodes/s\n", s.evicted_nodes / t_evict);
    if (freed <= 0 || s.cached_blocks != 0) die("eviction did not empty the tree");

    for (int i = 0; i < n_seq; i++) free(seqs[i]);
    free(seqs);
    free(seq_n);
    free(blocks);
    rs_ivec_free(&got);
    tc_teardown(&pool, t);
}

/* ------------------------------------------------------------------ 3: partial blocks */

enum { N_CHAT = 200, TURNS = 8, SYS_LEN = 300, HDR = 3, THINK = 4, MAX_CHAT = 16384 };

typedef struct chat {
    int32_t tok[MAX_CHAT]; /* the conversation so far, as the next prompt will contain it */
    int n;                 /* tokens */
} chat;

/* Replay the same chats with block size bs; returns hit tokens / prompt tokens. */
static double replay(int bs, int qwen3, uint64_t seed, long *prompt_tokens, long *hit_tokens) {
    kv_pool pool;
    rt_tree *t;
    if (tc_setup(&pool, &t, bs, N_CHAT * MAX_CHAT / bs)) die("init");
    rng = seed;
    static chat chats[N_CHAT];
    int32_t sys[4][SYS_LEN], hdr[HDR] = {1, 2, 3}, think[THINK] = {4, 5, 6, 7};
    for (int i = 0; i < 4; i++) random_tokens(sys[i], SYS_LEN);
    for (int c = 0; c < N_CHAT; c++) {
        memcpy(chats[c].tok, sys[c % 4], sizeof sys[0]);
        chats[c].n = SYS_LEN;
    }
    static int32_t gen[MAX_CHAT];
    *prompt_tokens = *hit_tokens = 0;
    for (int turn = 0; turn < TURNS; turn++) {
        for (int c = 0; c < N_CHAT; c++) {
            chat *h = &chats[c];
            /* The prompt: history + user message + assistant header. */
            int user = between(20, 200), answer = between(20, 400);
            random_tokens(h->tok + h->n, user);
            h->n += user;
            memcpy(h->tok + h->n, hdr, sizeof hdr);
            h->n += HDR;
            int n_prompt = h->n;
            /* What the model generates: in qwen3 mode an empty think block, then the answer;
             * the next prompt's history keeps only the answer. */
            memcpy(gen, h->tok, sizeof *gen * (size_t)n_prompt);
            int n = n_prompt;
            if (qwen3) {
                memcpy(gen + n, think, sizeof think);
                n += THINK;
            }
            random_tokens(gen + n, answer);
            memcpy(h->tok + h->n, gen + n, sizeof *gen * (size_t)answer);
            n += answer;
            h->n += answer;
            int hit = tc_request(t, &pool, 0, gen, n_prompt, n);
            if (hit < 0) die("replay pool too small");
            *prompt_tokens += n_prompt;
            *hit_tokens += hit;
        }
    }
    tc_teardown(&pool, t);
    return (double)*hit_tokens / (double)*prompt_tokens;
}

static void bench_partial_blocks(void) {
    for (int qwen3 = 0; qwen3 <= 1; qwen3++) {
        long p1, h1, p16, h16;
        double r1 = replay(1, qwen3, 42, &p1, &h1);
        double r16 = replay(16, qwen3, 42, &p16, &h16);
        const char *w = qwen3 ? "qwen3" : "append";
        printf("hit_ratio_%s_token_level %.4f\n", w, r1);
        printf("hit_ratio_%s_block16 %.4f\n", w, r16);
        printf("partial_block_cost_%s %.2f tokens/request (%.2f%% of prompt tokens)\n", w,
               (double)(h1 - h16) / (N_CHAT * TURNS), 100.0 * (double)(h1 - h16) / (double)p1);
    }
}

int main(int argc, char **argv) {
    long target = argc > 1 ? atol(argv[1]) : 1000000;
    if (target < BS) die("usage: bench_cache [cached_tokens >= 16]");
    bench_throughput(target);
    bench_partial_blocks();
    return 0;
}
