/*
 * sample.c — turning logits into a token: penalties and logit_bias (transformers / OpenAI
 * semantics), then greedy or temperature sampling with top_k, top_p and min_p, from a seeded
 * xoshiro256** stream so a request's choices depend only on its seed and its logits.
 */
#include "engine/internal.h"

#include <math.h>
#include <stdlib.h>

/* Candidates whose scaled logit is this far below the best have probability < e^-30 each; they
 * are left out of the sorted list (the mass lost is below 1e-7 even for 150k tokens). */
#define SAMPLE_LOGIT_WINDOW 30.0f

static uint64_t splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

void eng_rng_seed(eng_rng *r, uint64_t seed) {
    for (int i = 0; i < 4; i++) r->s[i] = splitmix64(&seed);
}

static uint64_t rotl(uint64_t x, int k) {
    return (x << k) | (x >> (64 - k));
}

static uint64_t rng_next(eng_rng *r) {
    uint64_t *s = r->s;
    uint64_t out = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return out;
}

/* Uniform in [0, 1) with 53 random bits. */
static double rng_uniform(eng_rng *r) {
    return (double)(rng_next(r) >> 11) * 0x1p-53;
}

/* a before b: larger logit first, lower id on ties; NaN counts as -inf. */
static int ranks_before(const float *l, int32_t a, int32_t b) {
    float x = isnan(l[a]) ? -INFINITY : l[a], y = isnan(l[b]) ? -INFINITY : l[b];
    return x > y || (x == y && a < b);
}

int eng_top_k(const float *logits, int vocab, int k, int32_t *ids) {
    if (k > vocab) k = vocab;
    if (k <= 0) return 0;
    int n = 0;
    /* Insertion into a sorted list of k: most ids fail the first comparison. */
    for (int32_t t = 0; t < vocab; t++) {
        if (n == k && !ranks_before(logits, t, ids[k - 1])) continue;
        int i = n < k ? n++ : k - 1;
        while (i > 0 && ranks_before(logits, t, ids[i - 1])) {
            ids[i] = ids[i - 1];
            i--;
        }
        ids[i] = t;
    }
    return n;
}

/* log(sum exp(l)) over finite logits, in double. */
static double log_sum_exp(const float *l, int n) {
    float mx = -INFINITY;
    for (int i = 0; i < n; i++)
        if (l[i] > mx) mx = l[i];
    if (mx == -INFINITY) return -INFINITY;
    double s = 0;
    for (int i = 0; i < n; i++)
        if (l[i] > -INFINITY) s += exp((double)l[i] - mx);
    return mx + log(s);
}

int eng_top_logprobs(const float *logits, int vocab, int k, int32_t *ids, float *logprobs) {
    int n = eng_top_k(logits, vocab, k, ids);
    double lse = log_sum_exp(logits, vocab);
    for (int i = 0; i < n; i++) logprobs[i] = (float)((double)logits[ids[i]] - lse);
    return n;
}

/* ---------------------------------------------------------------- logit processors */

static void apply_bias(const eng_sampling *s, float *l, int vocab) {
    for (int i = 0; i < s->n_bias; i++)
        if (s->bias[i].token >= 0 && s->bias[i].token < vocab)
            l[s->bias[i].token] += s->bias[i].bias;
}

/* Mark each id of ids[0, n) once: returns 1 the first time an id is seen. */
static int first_seen(uint8_t *seen, int32_t id) {
    if (seen[id >> 3] & (1u << (id & 7))) return 0;
    seen[id >> 3] |= (uint8_t)(1u << (id & 7));
    return 1;
}

/* transformers' repetition penalty: once per distinct token of prompt + generated. */
static void apply_repetition(float p, float *l, int vocab, uint8_t *seen, const int32_t *ids,
                             int n) {
    for (int i = 0; i < n; i++) {
        int32_t t = ids[i];
        if (t < 0 || t >= vocab || !first_seen(seen, t)) continue;
        l[t] = l[t] > 0 ? l[t] / p : l[t] * p;
    }
}

/* OpenAI presence (once per distinct token) and frequency (per occurrence), generated only. */
static void apply_presence(const eng_sampling *s, float *l, int vocab, uint8_t *seen,
                           const int32_t *ids, int n) {
    for (int i = 0; i < n; i++) {
        int32_t t = ids[i];
        if (t < 0 || t >= vocab) continue;
        l[t] -= s->frequency_penalty;
        if (first_seen(seen, t)) l[t] -= s->presence_penalty;
    }
}

static void apply_penalties(const eng_sampling *s, float *l, int vocab, const int32_t *prompt,
                            int n_prompt, const int32_t *gen, int n_gen) {
    int rep = s->repetition_penalty > 0 && s->repetition_penalty != 1.0f;
    int pres = s->presence_penalty != 0 || s->frequency_penalty != 0;
    if (!rep && !pres) return;
    size_t bytes = (size_t)vocab / 8 + 1;
    uint8_t *seen = calloc(bytes, 1);
    if (!seen) return; /* out of memory: penalties are a preference, the token is still valid */
    if (rep) {
        apply_repetition(s->repetition_penalty, l, vocab, seen, prompt, n_prompt);
        apply_repetition(s->repetition_penalty, l, vocab, seen, gen, n_gen);
        memset(seen, 0, bytes);
    }
    if (pres) apply_presence(s, l, vocab, seen, gen, n_gen);
    free(seen);
}

/* ---------------------------------------------------------------- choosing */

static int32_t argmax(const float *l, int vocab) {
    int32_t best = 0;
    for (int32_t t = 1; t < vocab; t++)
        if (ranks_before(l, t, best)) best = t;
    return best;
}

/* A sampling candidate: its (scaled) logit and id. */
typedef struct cand {
    float l;    /* logit after penalties, bias and temperature */
    int32_t id; /* token id */
} cand;

/* Larger logit first, lower id on ties (NaN never reaches here: it is outside the window). */
static int cmp_cand(const void *a, const void *b) {
    const cand *x = a, *y = b;
    if (x->l != y->l) return x->l > y->l ? -1 : 1;
    return x->id < y->id ? -1 : x->id > y->id;
}

/*
 * The candidate list, best first: the top_k best when top_k is on, else every token within the
 * window of the best. Sorting is skipped when nothing below needs an order (no top_p, no min_p):
 * then candidates stay in id order, which is just as deterministic.
 */
static int gather(const eng_sampling *s, const float *l, int vocab, cand *c) {
    int n = 0;
    if (s->top_k > 0 && s->top_k < vocab) {
        int32_t *ids = malloc((size_t)s->top_k * sizeof *ids);
        if (ids) {
            n = eng_top_k(l, vocab, s->top_k, ids);
            for (int i = 0; i < n; i++) c[i] = (cand){l[ids[i]], ids[i]};
            free(ids);
            return n;
        }
    }
    float mx = l[argmax(l, vocab)];
    for (int32_t t = 0; t < vocab; t++)
        if (l[t] >= mx - SAMPLE_LOGIT_WINDOW) c[n++] = (cand){l[t], t};
    if (n == 0) c[n++] = (cand){0.0f, argmax(l, vocab)}; /* every logit -inf or NaN */
    if (s->top_p < 1.0f || s->min_p > 0.0f) qsort(c, (size_t)n, sizeof *c, cmp_cand);
    return n;
}

/* Probabilities (unnormalised, best = 1 when sorted) into p; returns their sum. */
static double softmax_weights(const cand *c, int n, double *p) {
    float mx = -INFINITY;
    for (int i = 0; i < n; i++)
        if (c[i].l > mx) mx = c[i].l;
    double sum = 0;
    for (int i = 0; i < n; i++) sum += p[i] = mx == -INFINITY ? 1.0 : exp((double)c[i].l - mx);
    return sum;
}

/* top_p then min_p on a sorted list: how many of the best survive (>= 1). */
static int truncate_sorted(const eng_sampling *s, const double *p, double sum, int n) {
    if (s->top_p < 1.0f) {
        double acc = 0;
        int keep = 0;
        while (keep < n && acc < (double)s->top_p * sum) acc += p[keep++];
        n = keep > 0 ? keep : 1;
    }
    if (s->min_p > 0.0f) {
        int keep = 1;
        while (keep < n && p[keep] >= (double)s->min_p * p[0]) keep++;
        n = keep;
    }
    return n;
}

/* Temperature sampling; c has room for vocab candidates. */
static int32_t sample_from(const eng_sampling *s, eng_rng *r, float *l, int vocab, cand *c,
                           double *p, float *logprob) {
    for (int t = 0; t < vocab; t++) l[t] /= s->temperature;
    int n = gather(s, l, vocab, c);
    double sum = softmax_weights(c, n, p);
    n = truncate_sorted(s, p, sum, n);
    sum = 0;
    for (int i = 0; i < n; i++) sum += p[i];
    double u = rng_uniform(r) * sum, acc = 0;
    int pick = n - 1;
    for (int i = 0; i < n; i++) {
        acc += p[i];
        if (u < acc) {
            pick = i;
            break;
        }
    }
    if (logprob) *logprob = (float)log(p[pick] / sum);
    return c[pick].id;
}

int32_t eng_sample(const eng_sampling *s, eng_rng *r, float *logits, int vocab,
                   const int32_t *prompt, int n_prompt, const int32_t *generated, int n_generated,
                   float *logprob) {
    if (vocab <= 0) return -1;
    apply_bias(s, logits, vocab);
    apply_penalties(s, logits, vocab, prompt, n_prompt, generated, n_generated);
    if (s->temperature > 0) {
        cand *c = malloc((size_t)vocab * sizeof *c);
        double *p = malloc((size_t)vocab * sizeof *p);
        if (c && p) {
            int32_t t = sample_from(s, r, logits, vocab, c, p, logprob);
            free(c);
            free(p);
            return t;
        }
        free(c);
        free(p); /* out of memory: fall back to the most likely token */
    }
    int32_t t = argmax(logits, vocab);
    if (logprob) *logprob = (float)((double)logits[t] - log_sum_exp(logits, vocab));
    return t;
}
