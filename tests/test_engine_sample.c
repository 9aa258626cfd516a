/*
 * test_engine_sample.c — the sampler: greedy ties, temperature, top_k / top_p / min_p, seeded
 * reproducibility, the frequencies of a known distribution, HF repetition penalty, OpenAI
 * presence/frequency penalties, logit_bias, logprobs and eng_top_k / eng_top_logprobs.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "engine/engine.h"
#include "tests/tap.h"

#define V 8

static int32_t draw(const eng_sampling *s, eng_rng *r, const float *l, float *lp) {
    float w[V];
    memcpy(w, l, sizeof w);
    return eng_sample(s, r, w, V, NULL, 0, NULL, 0, lp);
}

/* Counts of n draws (one rng stream). */
static void histogram(const eng_sampling *s, const float *l, int n, int *cnt) {
    eng_rng r;
    eng_rng_seed(&r, s->seed);
    memset(cnt, 0, V * sizeof *cnt);
    for (int i = 0; i < n; i++) cnt[draw(s, &r, l, NULL)]++;
}

static void check_greedy(void) {
    float l[V] = {1, 5, 3, 5, -2, 5, 0, 4};
    eng_sampling s = {.temperature = 0, .top_p = 1};
    eng_rng r;
    eng_rng_seed(&r, 1);
    float lp;
    TAP_OK(draw(&s, &r, l, &lp) == 1, "greedy: argmax, lowest id among ties");
    double z = 0;
    for (int i = 0; i < V; i++) z += exp(l[i]);
    TAP_OK(fabs(lp - (5 - log(z))) < 1e-5, "greedy logprob is log-softmax (%g)", (double)lp);
    float n[V] = {NAN, 1, 2, NAN, 2, 0, 0, 0};
    TAP_OK(draw(&s, &r, n, NULL) == 2, "NaN logits never win");
}

static void check_distribution(void) {
    float l[V];
    double p[V] = {0.4, 0.25, 0.15, 0.1, 0.05, 0.03, 0.015, 0.005};
    for (int i = 0; i < V; i++) l[i] = (float)log(p[i]);
    eng_sampling s = {.temperature = 1, .top_p = 1, .seed = 42};
    int cnt[V], n = 40000;
    histogram(&s, l, n, cnt);
    double worst = 0;
    for (int i = 0; i < V; i++) worst = fmax(worst, fabs(cnt[i] / (double)n - p[i]));
    TAP_OK(worst < 0.01, "temperature 1 samples the softmax (worst frequency error %.4f)", worst);
    s.temperature = 0.5f; /* p^2 renormalised */
    histogram(&s, l, n, cnt);
    double z = 0;
    for (int i = 0; i < V; i++) z += p[i] * p[i];
    TAP_OK(fabs(cnt[0] / (double)n - p[0] * p[0] / z) < 0.01,
           "temperature 0.5 sharpens (token 0: %.3f, expected %.3f)", cnt[0] / (double)n,
           p[0] * p[0] / z);
    s.temperature = 1;
    s.top_k = 2;
    histogram(&s, l, n, cnt);
    TAP_OK(cnt[0] + cnt[1] == n && fabs(cnt[0] / (double)n - 0.4 / 0.65) < 0.01,
           "top_k 2: only the two best, renormalised (%d, %d)", cnt[0], cnt[1]);
    s.top_k = 0;
    s.top_p = 0.7f; /* 0.4 + 0.25 = 0.65 < 0.7: three tokens needed */
    histogram(&s, l, n, cnt);
    TAP_OK(cnt[0] + cnt[1] + cnt[2] == n && cnt[2] > 0,
           "top_p 0.7: the smallest set reaching 0.7 (3 tokens)");
    s.top_p = 0.3f;
    histogram(&s, l, 1000, cnt);
    TAP_OK(cnt[0] == 1000, "top_p 0.3: only the best");
    s.top_p = 1;
    s.min_p = 0.3f; /* keeps p >= 0.12: tokens 0, 1, 2 */
    histogram(&s, l, n, cnt);
    TAP_OK(cnt[0] + cnt[1] + cnt[2] == n && cnt[2] > 0, "min_p 0.3: tokens with p >= 0.3 * p_max");
    s.min_p = 0;
    s.top_k = 1;
    histogram(&s, l, 1000, cnt);
    TAP_OK(cnt[0] == 1000, "top_k 1 is greedy whatever the seed");
}

static void check_seed(void) {
    float l[V] = {0, 0.1f, 0.2f, 0.3f, 0.4f, 0.5f, 0.6f, 0.7f};
    eng_sampling s = {.temperature = 1, .top_p = 1, .seed = 7};
    int32_t a[64], b[64], c[64];
    eng_rng r;
    eng_rng_seed(&r, 7);
    for (int i = 0; i < 64; i++) a[i] = draw(&s, &r, l, NULL);
    eng_rng_seed(&r, 7);
    for (int i = 0; i < 64; i++) b[i] = draw(&s, &r, l, NULL);
    eng_rng_seed(&r, 8);
    for (int i = 0; i < 64; i++) c[i] = draw(&s, &r, l, NULL);
    TAP_OK(!memcmp(a, b, sizeof a), "same seed, same logits -> same tokens");
    TAP_OK(memcmp(a, c, sizeof a) != 0, "another seed -> another sequence");
    s.top_p = 0.9f; /* the sorted path too */
    eng_rng_seed(&r, 7);
    for (int i = 0; i < 64; i++) a[i] = draw(&s, &r, l, NULL);
    eng_rng_seed(&r, 7);
    for (int i = 0; i < 64; i++) b[i] = draw(&s, &r, l, NULL);
    TAP_OK(!memcmp(a, b, sizeof a), "reproducible with top_p too");
}

static void check_penalties(void) {
    float l[V] = {2, -2, 1, 3, 0.5f, 0, 0, 0};
    int32_t prompt[3] = {0, 1, 1}, gen[4] = {2, 2, 2, 4};
    eng_sampling s = {.temperature = 0, .top_p = 1, .repetition_penalty = 2};
    eng_rng r;
    eng_rng_seed(&r, 0);
    float w[V];
    memcpy(w, l, sizeof w);
    eng_sample(&s, &r, w, V, prompt, 3, gen, 4, NULL);
    TAP_OK(w[0] == 1 && w[1] == -4 && w[2] == 0.5f && w[4] == 0.25f && w[3] == 3,
           "repetition penalty: positive / 2, negative * 2, once per distinct token of prompt + "
           "generated, others untouched (%g %g %g %g %g)",
           (double)w[0], (double)w[1], (double)w[2], (double)w[4], (double)w[3]);
    s = (eng_sampling){.temperature = 0,
                       .top_p = 1,
                       .repetition_penalty = 1,
                       .presence_penalty = 0.5f,
                       .frequency_penalty = 0.25f};
    memcpy(w, l, sizeof w);
    eng_sample(&s, &r, w, V, prompt, 3, gen, 4, NULL);
    TAP_OK(w[2] == 1 - 0.5f - 3 * 0.25f && w[4] == 0.5f - 0.5f - 0.25f && w[0] == 2 && w[1] == -2,
           "presence (once) and frequency (per occurrence) over generated tokens only");
    eng_logit_bias b[2] = {{3, -100}, {6, 4}};
    s = (eng_sampling){
        .temperature = 0, .top_p = 1, .repetition_penalty = 1, .bias = b, .n_bias = 2};
    memcpy(w, l, sizeof w);
    TAP_OK(eng_sample(&s, &r, w, V, NULL, 0, NULL, 0, NULL) == 6,
           "logit_bias bans token 3 and lifts token 6 to the top");
    s.temperature = 1;
    s.seed = 3;
    b[1].bias = 100;
    int hits = 0;
    eng_rng_seed(&r, 3);
    for (int i = 0; i < 200; i++) {
        memcpy(w, l, sizeof w);
        hits += eng_sample(&s, &r, w, V, NULL, 0, NULL, 0, NULL) == 6;
    }
    TAP_OK(hits == 200, "logit_bias +100 forces a token when sampling (%d/200)", hits);
}

static void check_top(void) {
    float l[V] = {1, 7, 3, 7, -1, 2, 9, 0};
    int32_t ids[V];
    float lp[V];
    int n = eng_top_k(l, V, 4, ids);
    TAP_OK(n == 4 && ids[0] == 6 && ids[1] == 1 && ids[2] == 3 && ids[3] == 2,
           "eng_top_k: largest first, lowest id first among ties");
    TAP_OK(eng_top_k(l, V, 20, ids) == V, "eng_top_k caps k at the vocabulary");
    n = eng_top_logprobs(l, V, 3, ids, lp);
    double z = 0;
    for (int i = 0; i < V; i++) z += exp(l[i]);
    TAP_OK(n == 3 && ids[0] == 6 && fabs(lp[0] - (9 - log(z))) < 1e-5 && lp[1] == lp[2] &&
               lp[0] > lp[1],
           "eng_top_logprobs: log-softmax values of the best tokens");
    eng_sampling s = {.temperature = 1, .top_p = 1, .seed = 9};
    eng_rng r;
    eng_rng_seed(&r, 9);
    float got;
    int32_t t = draw(&s, &r, l, &got);
    TAP_OK(fabs(got - (l[t] - log(z))) < 1e-5, "sampled logprob is log p of the chosen token");
}

/* A large vocabulary with a near-flat distribution (a random model): still samples. */
static void check_large(void) {
    int n = 151936;
    float *l = malloc((size_t)n * sizeof *l), *w = malloc((size_t)n * sizeof *w);
    for (int i = 0; i < n; i++) l[i] = (float)((i * 2654435761u) % 1000) / 500.0f;
    eng_sampling s = {.temperature = 0.7f, .top_p = 0.9f, .top_k = 0, .seed = 5};
    eng_rng r;
    eng_rng_seed(&r, 5);
    int ok = 1;
    for (int i = 0; i < 3; i++) {
        memcpy(w, l, (size_t)n * sizeof *w);
        int32_t t = eng_sample(&s, &r, w, n, NULL, 0, NULL, 0, NULL);
        ok &= t >= 0 && t < n;
    }
    TAP_OK(ok, "top_p sampling over a 151,936-token flat distribution");
    free(l);
    free(w);
}

int main(void) {
    check_greedy();
    check_distribution();
    check_seed();
    check_penalties();
    check_top();
    check_large();
    return tap_done();
}
