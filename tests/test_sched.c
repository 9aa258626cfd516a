/* test_sched.c — the scheduler end to end on the real stories260K model: batched == alone,
 * cache on == cache off, shared-prefix reuse, preemption under a tiny pool, cancellation
 * mid-prefill and mid-decode, a full queue, requests too big, seeded determinism; after each,
 * nothing pinned and the block accounting consistent (used == cached + private). */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "sched/sched.h"
#include "tests/tap.h"

#define MAXT       160 /* generated tokens per choice at most in these tests */
#define NCHOICE    2   /* choices per request at most */
#define TIMEOUT_MS 60000

typedef struct result {
    int32_t tok[NCHOICE][MAXT]; /* generated ids per choice */
    float lp[NCHOICE][MAXT];    /* their logprobs */
    int n[NCHOICE];             /* ids per choice */
    char text[NCHOICE][4096];   /* text per choice (TOKEN deltas + FINISH tail) */
    const char *reason[NCHOICE];
    int prompt, cached, completion; /* usage from DONE */
    int done, error, code;          /* how it ended */
    int64_t first_step, last_step;  /* scheduler steps of the first and the last event */
    char message[256];
} result;

static eng_model *g_model;
static tok_tokenizer *g_tok;
static double g_max_wait_s; /* sched_config.max_wait_s of the schedulers start() makes */
static int g_threads = 1;   /* their worker threads (2 where the engine's pool should run too;
                               1 elsewhere keeps the sanitizer runs short) */

/* Drain every event of r into out; returns 1 when a DONE or ERROR arrived. */
static int collect(sched_request *r, result *out) {
    memset(out, 0, sizeof *out);
    sched_event ev;
    out->first_step = -1;
    while (sched_next_event(r, &ev, TIMEOUT_MS) == 1) {
        int c = ev.index;
        if (out->first_step < 0) out->first_step = ev.step;
        out->last_step = ev.step;
        if (ev.type == SCHED_EV_TOKEN && c < NCHOICE && out->n[c] < MAXT) {
            out->tok[c][out->n[c]] = ev.token;
            out->lp[c][out->n[c]++] = ev.logprob;
        }
        if ((ev.type == SCHED_EV_TOKEN || ev.type == SCHED_EV_FINISH) && c < NCHOICE && ev.text &&
            strlen(out->text[c]) + strlen(ev.text) < sizeof out->text[c])
            strcat(out->text[c], ev.text);
        if (ev.type == SCHED_EV_FINISH && c < NCHOICE) out->reason[c] = ev.finish_reason;
        if (ev.type == SCHED_EV_DONE) {
            out->done = 1;
            out->prompt = ev.prompt_tokens;
            out->cached = ev.cached_tokens;
            out->completion = ev.completion_tokens;
        }
        if (ev.type == SCHED_EV_ERROR) {
            out->error = 1;
            out->code = ev.code;
            snprintf(out->message, sizeof out->message, "%s", ev.message);
        }
        int last = ev.type == SCHED_EV_DONE || ev.type == SCHED_EV_ERROR;
        sched_event_free(&ev);
        if (last) return 1;
    }
    return 0;
}

static int same_result(const result *a, const result *b, int n_choices) {
    if (!a->done || !b->done || a->prompt != b->prompt || a->completion != b->completion) return 0;
    for (int c = 0; c < n_choices; c++) {
        if (a->n[c] != b->n[c] || strcmp(a->text[c], b->text[c]) != 0) return 0;
        if (!a->reason[c] || !b->reason[c] || strcmp(a->reason[c], b->reason[c]) != 0) return 0;
        if (memcmp(a->tok[c], b->tok[c], (size_t)a->n[c] * sizeof(int32_t)) != 0) return 0;
        if (memcmp(a->lp[c], b->lp[c], (size_t)a->n[c] * sizeof(float)) != 0) return 0;
    }
    return 1;
}

static sched *start(int kv_bytes, int max_batch, int max_queue, int budget, int cache) {
    sched_config c = {.n_threads = g_threads,
                      .kv_cache_bytes = (size_t)kv_bytes,
                      .block_size = 16,
                      .kv_dtype = -1,
                      .max_batch = max_batch,
                      .max_queue = max_queue,
                      .token_budget = budget,
                      .prefix_cache = cache,
                      .max_wait_s = g_max_wait_s};
    sched *s = NULL;
    rs_err e = {0};
    if (sched_start(&s, g_model, g_tok, &c, &e)) TAP_DIAG("sched_start: %s", e.msg);
    return s;
}

/* Wait until nothing runs or waits, then check the accounting: nothing pinned, no private
 * block left, every used block cached. */
static void check_idle(sched *s, const char *what) {
    sched_stats st = {0};
    for (int i = 0; i < 2000; i++) {
        sched_get_stats(s, &st);
        if (st.running == 0 && st.waiting == 0) break;
        nanosleep(&(struct timespec){0, 1000000}, NULL);
    }
    TAP_OK(st.running == 0 && st.waiting == 0 && st.kv_blocks_pinned == 0 &&
               st.kv_blocks_private == 0 && st.kv_blocks_used == st.kv_blocks_cached &&
               st.kv_blocks_used + st.kv_blocks_free == st.kv_blocks_total,
           "%s: idle with nothing pinned, used %d == cached %d, private %d, free %d of %d", what,
           st.kv_blocks_used, st.kv_blocks_cached, st.kv_blocks_private, st.kv_blocks_free,
           st.kv_blocks_total);
}

/* While requests run: every published snapshot has used == cached + private (no leaked block,
 * none counted twice). Samples every millisecond until `want` snapshots showed running
 * sequences, or the work ended after some did (at most 20 s: sanitizers are slow). */
static void check_live(sched *s, int want, const char *what) {
    int bad = 0, samples = 0, busy = 0;
    sched_stats st;
    for (int i = 0; i < 20000 && busy < want; i++) {
        sched_get_stats(s, &st);
        samples++;
        busy += st.running > 0;
        if (st.kv_blocks_used != st.kv_blocks_cached + st.kv_blocks_private) {
            if (!bad)
                TAP_DIAG("used %d cached %d private %d", st.kv_blocks_used, st.kv_blocks_cached,
                         st.kv_blocks_private);
            bad++;
        }
        if (busy > 0 && st.running == 0 && st.waiting == 0) break;
        nanosleep(&(struct timespec){0, 1000000}, NULL);
    }
    TAP_OK(bad == 0 && busy > 0, "%s: used == cached + private in %d snapshots (%d while running)",
           what, samples, busy);
}

static uint64_t g_rand = 88172645463325252ull;
static int rnd(int n) {
    g_rand ^= g_rand << 13, g_rand ^= g_rand >> 7, g_rand ^= g_rand << 17;
    return (int)(g_rand % (uint64_t)n);
}

/* A prompt: BOS, then `shared` tokens of a fixed prefix (seeded by prefix_id), then unique. */
static int make_prompt(int32_t *out, int prefix_id, int shared, int unique) {
    int n = 0;
    out[n++] = 1;
    uint64_t h = 0x1234567ull * (uint64_t)(prefix_id + 1);
    for (int i = 0; i < shared; i++) {
        h = h * 6364136223846793005ull + 1442695040888963407ull;
        out[n++] = 3 + (int32_t)((h >> 33) % 500);
    }
    for (int i = 0; i < unique; i++) out[n++] = 3 + rnd(500);
    return n;
}

static sched_params greedy(int max_tokens) {
    sched_params p = {.max_tokens = max_tokens, .n = 1, .logprobs = 1};
    p.sampling = (eng_sampling){.temperature = 0, .top_p = 1, .repetition_penalty = 1};
    return p;
}

/* ---------------------------------------------------------------- 32 concurrent == alone */

#define NREQ 32

typedef struct spec {
    int32_t prompt[300];
    int n_prompt;
    sched_params p;
} spec;

static void make_specs(spec *sp) {
    for (int i = 0; i < NREQ; i++) {
        int shared = i % 4 == 0 ? 0 : (i % 3 == 0 ? 70 : 40);
        sp[i].n_prompt = make_prompt(sp[i].prompt, i % 3, shared, 1 + rnd(i % 5 == 0 ? 200 : 30));
        sp[i].p = greedy(8 + rnd(60));
        if (i % 4 == 1) sp[i].p.n = 2;
        if (i % 6 == 2) sp[i].p.top_logprobs = 3;
        if (i % 5 == 3) {
            sp[i].p.stop[0] = "the";
            sp[i].p.stop[1] = ".";
            sp[i].p.n_stop = 2;
        }
        if (i % 7 == 4) sp[i].p.ignore_eos = 1;
    }
}

static void test_batched_equals_alone(void) {
    static spec sp[NREQ];
    static result alone[NREQ], batched[NREQ];
    make_specs(sp);
    sched *s1 = start(8 << 20, 16, 64, 512, 0);
    g_threads = 2;
    sched *s2 = start(8 << 20, 12, 64, 64, 1); /* small budget: chunked prefill, queueing */
    g_threads = 1;
    if (!TAP_OK(s1 && s2, "two schedulers started")) return;
    int ok = 1;
    double t0 = rs_now();
    for (int i = 0; i < NREQ; i++) {
        sched_request *r;
        rs_err e = {0};
        if (sched_submit(s1, sp[i].prompt, sp[i].n_prompt, &sp[i].p, &r, &e)) {
            TAP_DIAG("submit %d: %s", i, e.msg);
            ok = 0;
            continue;
        }
        ok &= collect(r, &alone[i]) && alone[i].done;
        sched_request_free(r);
    }
    TAP_OK(ok, "%d requests one at a time (cache off) all finished", NREQ);
    double t1 = rs_now();
    sched_request *rq[NREQ] = {0};
    for (int i = 0; i < NREQ; i++) {
        rs_err e = {0};
        if (sched_submit(s2, sp[i].prompt, sp[i].n_prompt, &sp[i].p, &rq[i], &e))
            TAP_DIAG("submit %d: %s", i, e.msg);
    }
    check_live(s2, 30, "32 concurrent");
    int same = 0, hits = 0, stops = 0, n2 = 0;
    for (int i = 0; i < NREQ; i++) {
        if (!rq[i]) continue;
        collect(rq[i], &batched[i]);
        sched_request_free(rq[i]);
        if (same_result(&alone[i], &batched[i], sp[i].p.n))
            same++;
        else
            TAP_DIAG("request %d differs: alone '%s' (%d) vs batched '%s' (%d) %s", i,
                     alone[i].text[0], alone[i].n[0], batched[i].text[0], batched[i].n[0],
                     batched[i].message);
        hits += batched[i].cached > 0;
        stops += alone[i].reason[0] && strcmp(alone[i].reason[0], "stop") == 0;
        n2 += sp[i].p.n == 2 && alone[i].n[1] > 0;
    }
    TAP_OK(same == NREQ,
           "32 concurrent (cache on, budget 64, batch 12) == one at a time: %d/%d "
           "identical tokens, logprobs, text, finish reasons",
           same, NREQ);
    TAP_DIAG("one at a time %.3f s, 32 concurrent %.3f s", t1 - t0, rs_now() - t1);
    sched_stats st;
    sched_get_stats(s2, &st);
    int gen = 0;
    for (int i = 0; i < NREQ; i++) gen += batched[i].completion;
    TAP_OK(st.steps > 0 && st.steps < gen / 3,
           "the batch really ran concurrently: %lld steps for %d generated tokens",
           (long long)st.steps, gen);
    TAP_OK(hits > 0 && stops > 0 && n2 > 0,
           "the mix exercised cache hits (%d), stop finishes (%d) and n=2 (%d)", hits, stops, n2);
    check_idle(s1, "after one at a time");
    check_idle(s2, "after 32 concurrent");
    sched_stop(s1);
    sched_stop(s2);
}

/* ---------------------------------------------------------------- cache on == cache off */

static void test_cache_on_off(void) {
    sched *on = start(4 << 20, 8, 16, 128, 1), *off = start(4 << 20, 8, 16, 128, 0);
    if (!TAP_OK(on && off, "cache-on and cache-off schedulers")) return;
    int32_t base[200], ext[260], more[60];
    int nb = make_prompt(base, 7, 100, 0);
    make_prompt(more, 8, 40, 0);
    memcpy(ext, base, sizeof(int32_t) * (size_t)nb);
    memcpy(ext + nb, more + 1, sizeof(int32_t) * 40); /* base + 40 more tokens */
    int ne = nb + 40;
    const int32_t *prompts[] = {base, base, ext, base};
    int lens[] = {nb, nb, ne, 48};
    const char *names[] = {"cold", "full hit", "partial hit (prefix + 40)", "prompt inside cache"};
    for (int k = 0; k < 4; k++) {
        result a, b;
        sched_params p = greedy(30);
        p.top_logprobs = 2;
        sched_request *ra, *rb;
        rs_err e;
        sched_submit(on, prompts[k], lens[k], &p, &ra, &e);
        collect(ra, &a);
        sched_request_free(ra);
        sched_submit(off, prompts[k], lens[k], &p, &rb, &e);
        collect(rb, &b);
        sched_request_free(rb);
        int want_hit = k > 0;
        TAP_OK(same_result(&a, &b, 1) && (want_hit ? a.cached > 0 : a.cached == 0) &&
                   b.cached == 0 && a.cached < lens[k],
               "%s: cache on == cache off (%d tokens), cached_tokens %d of %d", names[k], a.n[0],
               a.cached, lens[k]);
    }
    check_idle(on, "cache on");
    char *json = NULL;
    rs_err e = {0};
    int rc = sched_cache_json(on, 4, &json, &e);
    sched_stats st;
    sched_get_stats(on, &st);
    char want[64];
    snprintf(want, sizeof want, "%d", base[1]); /* the cached prompt's first token after BOS */
    TAP_OK(rc == 0 && json && strstr(json, "\"nodes\"") && strstr(json, want) && st.cache_nodes > 0,
           "sched_cache_json: the tree as JSON (%zu bytes, %lld nodes)", json ? strlen(json) : 0,
           (long long)st.cache_nodes);
    free(json);
    sched_stop(on);
    sched_stop(off);
}

/* A prompt sent twice caches all but its last token, whatever its length: the first run's
 * partial last block goes into the tree at its end, the second copies it (copy-on-write) and
 * computes only the last token. Outputs equal a cache-off scheduler's, bit for bit (logprobs
 * included), so the copied slots hold exactly the K/V a cold prefill computes. */
static void test_sent_twice(void) {
    sched *on = start(4 << 20, 4, 16, 64, 1), *off = start(4 << 20, 4, 16, 64, 0);
    if (!TAP_OK(on && off, "sent twice: cache-on and cache-off schedulers")) return;
    int all = 1, same = 1, worst = 0;
    for (int len = 1; len <= 40; len++) {
        int32_t prompt[48];
        prompt[0] = 1;
        for (int i = 1; i < len; i++) prompt[i] = 3 + (int32_t)((len * 131 + i * 17) % 390);
        if (len > 1) prompt[1] = 400 + len; /* lengths share nothing but the BOS */
        result r[3];
        sched_params p = greedy(6);
        p.top_logprobs = 2;
        for (int k = 0; k < 3; k++) {
            sched_request *q;
            rs_err e;
            sched_submit(k < 2 ? on : off, prompt, len, &p, &q, &e);
            collect(q, &r[k]);
            sched_request_free(q);
        }
        if (r[1].cached != len - 1) {
            all = 0;
            if (!worst) TAP_DIAG("length %d: second run cached %d", len, r[1].cached);
            worst = 1;
        }
        same &= same_result(&r[0], &r[2], 1) && same_result(&r[1], &r[2], 1);
    }
    TAP_OK(all, "a prompt sent twice caches all but its last token, lengths 1..40");
    TAP_OK(same, "sent twice: first and second run == cache off, bit for bit (logprobs too)");
    check_idle(on, "sent twice");
    sched_stop(on);
    sched_stop(off);
}

/* ---------------------------------------------------------------- warming (sched_warm) */

/* Wait up to ~20 s for every warming job to end; returns the last statistics. */
static sched_stats warm_idle(sched *s) {
    sched_stats st = {0};
    for (int i = 0; i < 4000; i++) {
        sched_get_stats(s, &st);
        if (st.warm_queued == 0 && st.running == 0 && st.waiting == 0) break;
        nanosleep(&(struct timespec){0, 5000000}, NULL);
    }
    return st;
}

/* One event-draining pass of collect() that also samples the statistics after every event: for
 * checking from the published figures what ran while the request was alive. */
typedef struct snap {
    int64_t steps, warm_steps;
} snap;

static int collect_sampling(sched *s, sched_request *r, result *out, snap *sn, int max, int *n) {
    memset(out, 0, sizeof *out);
    out->first_step = -1;
    *n = 0;
    sched_event ev;
    for (double t0 = rs_now(); rs_now() - t0 < TIMEOUT_MS / 1e3;) {
        sched_stats st;
        sched_get_stats(s, &st);
        if (*n < max) sn[(*n)++] = (snap){st.steps, st.warm_steps};
        if (sched_next_event(r, &ev, 2) != 1) continue;
        if (out->first_step < 0) out->first_step = ev.step;
        out->last_step = ev.step;
        if (ev.type == SCHED_EV_TOKEN && out->n[0] < MAXT) out->tok[0][out->n[0]++] = ev.token;
        int last = ev.type == SCHED_EV_DONE || ev.type == SCHED_EV_ERROR;
        out->done |= ev.type == SCHED_EV_DONE;
        sched_event_free(&ev);
        if (last) return 1;
    }
    return 0;
}

/* A warmed history is served from the cache to the next turn, bit-identically to a cold run;
 * and warming yields: in no step while a request is alive does a warming chunk run (checked
 * on the published statistics: warm_steps is flat over every snapshot taken between the
 * request's first and last step), it resumes afterwards, and its tokens count as warm hits. */
static void test_warm(void) {
    sched_config c = {.n_threads = g_threads,
                      .kv_cache_bytes = 4 << 20,
                      .block_size = 16,
                      .kv_dtype = -1,
                      .max_batch = 4,
                      .token_budget = 64,
                      .mixed_prefill = 16,
                      .prefix_cache = 1,
                      .step_delay_ms = 8};
    sched *s = NULL, *off = start(4 << 20, 4, 16, 64, 0);
    rs_err e = {0};
    if (!TAP_OK(sched_start(&s, g_model, g_tok, &c, &e) == 0 && off, "warming: schedulers")) return;
    int32_t hist[260], next[300];
    int nh = make_prompt(hist, 90, 200, 37); /* 238 tokens: 14 whole blocks and 14 more */
    memcpy(next, hist, sizeof *hist * (size_t)nh);
    int nn = nh + make_prompt(next + nh, 91, 0, 29) - 1; /* + 29 new tokens (no BOS) */
    memmove(next + nh, next + nh + 1, sizeof *next * 29);
    TAP_OK(sched_warm(s, hist, nh, NULL, NULL, &e) == 0, "sched_warm queues a job");
    sched_stats st = warm_idle(s);
    TAP_OK(st.warm_tokens == nh && st.warm_steps >= nh / 16,
           "warming computed the whole history: %lld tokens in %lld steps (chunks <= 16)",
           (long long)st.warm_tokens, (long long)st.warm_steps);
    result on_r, off_r;
    sched_params p = greedy(12);
    p.top_logprobs = 2;
    sched_request *r;
    sched_submit(s, next, nn, &p, &r, &e);
    collect(r, &on_r);
    sched_request_free(r);
    sched_submit(off, next, nn, &p, &r, &e);
    collect(r, &off_r);
    sched_request_free(r);
    sched_get_stats(s, &st);
    TAP_OK(on_r.done && on_r.cached == nh && same_result(&on_r, &off_r, 1) &&
               st.warm_hit_tokens == nh,
           "the next turn hits the warmed history: cached %d of %d (history %d), warm hits %lld, "
           "output == cache off",
           on_r.cached, nn, nh, (long long)st.warm_hit_tokens);

    /* Yielding: three long jobs, then a request arrives while they run. */
    int32_t job[3][420];
    int jobs_ok = 1;
    for (int k = 0; k < 3; k++)
        jobs_ok &= sched_warm(s, job[k], make_prompt(job[k], 100 + k, 400, 0), NULL, NULL, &e) == 0;
    for (int i = 0; i < 2000; i++) { /* until warming is under way */
        sched_get_stats(s, &st);
        if (st.warm_tokens > nh + 32) break;
        nanosleep(&(struct timespec){0, 2000000}, NULL);
    }
    int64_t warm_before = st.warm_tokens;
    int32_t live[40];
    int nl = make_prompt(live, 92, 0, 30);
    sched_params pl = greedy(12);
    pl.ignore_eos = 1;
    static snap sn[20000];
    int n_sn = 0;
    sched_submit(s, live, nl, &pl, &r, &e);
    collect_sampling(s, r, &on_r, sn, 20000, &n_sn);
    sched_request_free(r);
    int in_range = 0, flat = 1;
    int64_t ws = -1;
    for (int i = 0; i < n_sn; i++) {
        if (sn[i].steps < on_r.first_step || sn[i].steps > on_r.last_step) continue;
        if (ws < 0) ws = sn[i].warm_steps;
        flat &= sn[i].warm_steps == ws;
        in_range++;
    }
    st = warm_idle(s);
    TAP_OK(jobs_ok && on_r.done && warm_before < nh + 1200 && in_range >= 3 && flat &&
               st.warm_parks >= 1 && st.warm_tokens >= nh + 1200 - 16 * 3,
           "warming yields: %d snapshots while the request ran (steps %lld..%lld), warm steps "
           "flat at %lld; %lld parks; warming resumed and finished (%lld tokens)",
           in_range, (long long)on_r.first_step, (long long)on_r.last_step, (long long)ws,
           (long long)st.warm_parks, (long long)st.warm_tokens);
    sched_submit(off, live, nl, &pl, &r, &e);
    collect(r, &off_r);
    sched_request_free(r);
    TAP_OK(on_r.n[0] == off_r.n[0] &&
               !memcmp(on_r.tok[0], off_r.tok[0], sizeof(int32_t) * (size_t)on_r.n[0]),
           "the request that interrupted warming == cache off");
    TAP_OK(sched_warm(s, hist, 0, NULL, NULL, &e) == RS_EINVAL &&
               sched_warm(s, job[0], 600, NULL, NULL, &e) == RS_ETOOBIG,
           "sched_warm refuses an empty or too long text");
    check_idle(s, "warming");
    sched_stop(s);
    sched_stop(off);
}

/* Two requests with a common 64-token prefix submitted together: the second waits for the
 * first's prefill and reuses it instead of computing it twice. */
static void test_shared_prefill(void) {
    sched *s = start(4 << 20, 8, 16, 512, 1);
    if (!s) return;
    int32_t a[120], b[120];
    int na = make_prompt(a, 11, 80, 5), nb = make_prompt(b, 11, 80, 9);
    sched_params p = greedy(4);
    sched_request *ra, *rb;
    rs_err e;
    sched_submit(s, a, na, &p, &ra, &e);
    sched_submit(s, b, nb, &p, &rb, &e);
    result x, y;
    collect(ra, &x);
    collect(rb, &y);
    TAP_OK(x.done && y.done && x.cached + y.cached >= 64,
           "concurrent shared prefix computed once: cached tokens %d + %d (>= 64)", x.cached,
           y.cached);
    sched_request_free(ra);
    sched_request_free(rb);
    check_idle(s, "shared prefill");
    sched_stop(s);
}

/* ---------------------------------------------------------------- admission order */

/* One batch slot and a long blocker; an uncached request A and a cached one B wait behind or
 * beside it. B (the longer cached prefix) runs before A; with an age bound already passed, A
 * (the older) runs before B. */
/* The tree's own count of rt_match calls (from its JSON snapshot); -1 if it cannot be read. */
static long long tree_lookups(sched *s) {
    char *json = NULL;
    rs_err e;
    if (sched_cache_json(s, 0, &json, &e)) return -1;
    const char *p = strstr(json, "\"lookups\":");
    long long n = p ? atoll(p + strlen("\"lookups\":")) : -1;
    free(json);
    return n;
}

static void test_admission_order(void) {
    const char *names[] = {"longest cached prefix first", "past the age bound, oldest first"};
    for (int aged = 0; aged < 2; aged++) {
        g_max_wait_s = aged ? 1e-6 : 100;
        sched *s = start(4 << 20, 1, 8, 64, 1);
        g_max_wait_s = 0;
        if (!s) return;
        int32_t warm[100], blocker[320], a[80], b[100];
        int nw = make_prompt(warm, 70, 80, 0), nx = make_prompt(blocker, 71, 0, 300);
        int na = make_prompt(a, 72, 0, 60), nb = make_prompt(b, 70, 80, 10);
        sched_params p = greedy(5), pl = greedy(100);
        pl.ignore_eos = 1;
        sched_request *rw, *rx, *ra, *rb;
        rs_err e;
        result rs_w, rs_x, rs_a, rs_b;
        sched_submit(s, warm, nw, &p, &rw, &e);
        collect(rw, &rs_w);
        sched_submit(s, blocker, nx, &pl, &rx, &e);
        sched_submit(s, a, na, &p, &ra, &e);
        sched_submit(s, b, nb, &p, &rb, &e);
        collect(rx, &rs_x);
        collect(ra, &rs_a);
        collect(rb, &rs_b);
        /* A shares only the BOS with anything cached (matches are token-granular). */
        int ok = rs_a.done && rs_b.done && rs_b.cached >= 64 && rs_a.cached <= 1;
        ok &= aged ? rs_a.last_step < rs_b.first_step : rs_b.last_step < rs_a.first_step;
        TAP_OK(ok, "%s: A steps %lld..%lld, B (cached %d) steps %lld..%lld", names[aged],
               (long long)rs_a.first_step, (long long)rs_a.last_step, rs_b.cached,
               (long long)rs_b.first_step, (long long)rs_b.last_step);
        /* A and B were ranked every step while the blocker ran (~100 steps); ranking peeks, so
         * the tree counts one lookup per admission only and its LRU clock is not inflated. */
        sched_stats st;
        sched_get_stats(s, &st);
        long long looked = tree_lookups(s);
        TAP_OK(looked == 4 && st.cache_lookups == 4,
               "%s: ranking does not touch the tree: %lld tree lookups for 4 admissions "
               "(scheduler counts %lld)",
               names[aged], looked, (long long)st.cache_lookups);
        sched_request_free(rw);
        sched_request_free(rx);
        sched_request_free(ra);
        sched_request_free(rb);
        sched_stop(s);
    }
}

/* step_delay_ms (tests only) slows every step that ran the model, and only those. */
static void test_step_delay(void) {
    sched_config c = {
        .n_threads = g_threads, .max_batch = 2, .prefix_cache = 1, .step_delay_ms = 40};
    sched *s = NULL;
    rs_err e = {0};
    if (!TAP_OK(sched_start(&s, g_model, g_tok, &c, &e) == 0, "start with step_delay_ms")) return;
    int32_t prompt[24]; /* BOS and 20 tokens */
    int n = make_prompt(prompt, 73, 0, 20);
    sched_params p = greedy(5);
    p.ignore_eos = 1;
    sched_request *r;
    result res;
    double t0 = rs_now();
    sched_submit(s, prompt, n, &p, &r, &e);
    collect(r, &res);
    double took = rs_now() - t0;
    /* Five tokens, one per step; DONE comes out of the fifth step, after four pauses. */
    TAP_OK(res.done && res.first_step == 1 && res.last_step == 5 && took >= 0.16,
           "step_delay_ms 40: tokens of steps %lld..%lld took %.3f s (>= 4 pauses)",
           (long long)res.first_step, (long long)res.last_step, took);
    sched_request_free(r);
    sched_stop(s);
}

/* While a stream decodes, a 400-token prompt prefills in mixed_prefill-sized chunks beside it
 * (steps are slowed to 15 ms so that submitting between two steps is exact): at 64, at least
 * 7 steps pass before its first token; at 512 (= the token budget), one or two. The stream
 * never stalls: one token per step throughout. */
static void test_mixed_prefill(void) {
    const int mixed[2] = {64, 512};
    for (int k = 0; k < 2; k++) {
        sched_config c = {.n_threads = g_threads,
                          .max_batch = 4,
                          .token_budget = 512,
                          .mixed_prefill = mixed[k],
                          .prefix_cache = 1,
                          .step_delay_ms = 15};
        sched *s = NULL;
        rs_err e = {0};
        if (!TAP_OK(sched_start(&s, g_model, g_tok, &c, &e) == 0, "start: %s", e.msg)) return;
        int32_t a[24], b[420];
        int na = make_prompt(a, 80, 0, 20), nb = make_prompt(b, 81, 0, 400);
        sched_params pa = greedy(20), pb = greedy(2);
        pa.ignore_eos = pb.ignore_eos = 1;
        sched_request *ra, *rb;
        sched_event ev;
        sched_submit(s, a, na, &pa, &ra, &e);
        int got = sched_next_event(ra, &ev, TIMEOUT_MS);
        int64_t a_first = got == 1 ? ev.step : -1;
        if (got == 1) sched_event_free(&ev);
        sched_submit(s, b, nb, &pb, &rb, &e);
        result x, y;
        collect(rb, &y);
        collect(ra, &x);
        int64_t wait = y.first_step - a_first;
        int ok = x.done && y.done && x.n[0] == 19 && x.last_step - x.first_step == 18;
        ok &= k == 0 ? wait >= 7 : wait <= 2;
        TAP_OK(ok,
               "mixed_prefill %d: 400-token prompt's first token %lld steps after the stream's "
               "(%s); the stream kept one token per step (%d tokens over steps %lld..%lld)",
               mixed[k], (long long)wait, k == 0 ? ">= 7" : "<= 2", x.n[0], (long long)x.first_step,
               (long long)x.last_step);
        sched_request_free(ra);
        sched_request_free(rb);
        check_idle(s, "mixed prefill");
        sched_stop(s);
    }
}

/* ---------------------------------------------------------------- preemption */

static void test_preemption(void) {
    /* 14 blocks of 16 tokens (20 KiB each): six requests of ~30 + 60 tokens cannot all fit. */
    sched *big = start(8 << 20, 8, 16, 512, 0), *tiny = start(14 * 20480, 8, 16, 64, 1);
    if (!TAP_OK(big && tiny, "a tiny pool of 14 blocks")) return;
    int32_t pr[6][64];
    int np[6];
    result alone[6], pressed[6];
    sched_request *rq[6];
    sched_params p = greedy(60);
    p.ignore_eos = 1;
    for (int i = 0; i < 6; i++) {
        np[i] = make_prompt(pr[i], 20 + i % 2, 20, 10);
        rs_err e;
        sched_submit(big, pr[i], np[i], &p, &rq[i], &e);
        collect(rq[i], &alone[i]);
        sched_request_free(rq[i]);
    }
    for (int i = 0; i < 6; i++) {
        rs_err e;
        if (sched_submit(tiny, pr[i], np[i], &p, &rq[i], &e)) TAP_DIAG("%s", e.msg);
    }
    check_live(tiny, 15, "tiny pool under pressure");
    int same = 0;
    for (int i = 0; i < 6; i++) {
        collect(rq[i], &pressed[i]);
        same += same_result(&alone[i], &pressed[i], 1);
        sched_request_free(rq[i]);
    }
    sched_stats st;
    sched_get_stats(tiny, &st);
    TAP_OK(st.preemptions > 0 && same == 6,
           "tiny pool: %lld preemptions, %d/6 outputs identical to an ample pool",
           (long long)st.preemptions, same);
    check_idle(tiny, "after preemption");
    /* One request that needs the whole pool alone (ctx is lowered to the pool) still runs. */
    sched_config c;
    sched_get_config(tiny, &c);
    int32_t longp[300];
    int nl = make_prompt(longp, 30, 0, 150);
    sched_params pl = greedy(c.ctx_size);
    pl.ignore_eos = 1;
    sched_request *r;
    rs_err e;
    result res;
    sched_submit(tiny, longp, nl, &pl, &r, &e);
    collect(r, &res);
    sched_request_free(r);
    TAP_OK(res.done && res.reason[0] && strcmp(res.reason[0], "length") == 0 &&
               nl + res.n[0] == c.ctx_size,
           "one request filling the whole pool (ctx %d) finishes with length after %d tokens",
           c.ctx_size, res.n[0]);
    check_idle(tiny, "after whole-pool request");

    /* The pool is all one cached edge; a request matching its first blocks pins that edge, then
     * needs the whole pool: its pin on the rest must not make it fail (its own references keep
     * its blocks; the pin only protects sharing). */
    int32_t edge[240];
    int ne = make_prompt(edge, 31, 0, c.ctx_size - 20);
    sched_params p1 = greedy(1);
    sched_submit(tiny, edge, ne, &p1, &r, &e);
    collect(r, &res);
    sched_request_free(r);
    sched_submit(tiny, edge, 41, &pl, &r, &e);
    collect(r, &res);
    sched_request_free(r);
    TAP_OK(res.done && res.cached == 40 && res.reason[0] && strcmp(res.reason[0], "length") == 0 &&
               41 + res.completion == c.ctx_size,
           "prefix of a pool-sized cached edge, then the whole pool: %s (%d tokens, cached %d)",
           res.done ? "finished" : res.message, res.completion, res.cached);
    check_idle(tiny, "after the pool-sized edge");
    sched_stop(big);
    sched_stop(tiny);
}

/* Constrained choices under preemption: each keeps its matcher while requeued, so a tiny pool
 * gives the outputs of an ample one, and every finished value parses as JSON. */
static gr_grammar *schema_grammar(void) {
    cJSON *j = cJSON_Parse("{\"type\":\"object\",\"properties\":{\"s\":{\"type\":\"string\","
                           "\"maxLength\":10},\"n\":{\"type\":\"array\",\"items\":{\"type\":"
                           "\"integer\"},\"maxItems\":2}},\"required\":[\"s\",\"n\"],"
                           "\"additionalProperties\":false}");
    gr_grammar *g = NULL;
    rs_err e;
    if (gr_compile_schema(&g, j, &e)) g = NULL;
    cJSON_Delete(j);
    return g;
}

static void test_grammar_preemption(void) {
    sched *big = start(8 << 20, 8, 16, 512, 0), *tiny = start(14 * 20480, 8, 16, 64, 1);
    if (!TAP_OK(big && tiny, "constrained: a tiny pool of 14 blocks")) return;
    int32_t pr[6][64];
    int np[6];
    result alone[6], pressed[6];
    sched_request *rq[6];
    for (int pass = 0; pass < 2; pass++)
        for (int i = 0; i < 6; i++) {
            sched_params p = greedy(MAXT);
            if (i % 2) p.sampling.temperature = 0.9f, p.sampling.seed = (uint64_t)i;
            p.grammar = i == 5 ? NULL : schema_grammar(); /* one free request among them */
            p.logprobs = 1;
            if (pass == 0) np[i] = make_prompt(pr[i], 20 + i % 2, 20, 10);
            rs_err e;
            if (sched_submit(pass ? tiny : big, pr[i], np[i], &p, &rq[i], &e))
                TAP_DIAG("%s", e.msg);
            if (pass == 0) {
                collect(rq[i], &alone[i]);
                sched_request_free(rq[i]);
            }
        }
    int same = 0, parsed = 0;
    for (int i = 0; i < 6; i++) {
        collect(rq[i], &pressed[i]);
        same += same_result(&alone[i], &pressed[i], 1);
        cJSON *j = cJSON_Parse(alone[i].text[0]);
        parsed += i == 5 || (j && alone[i].reason[0] && !strcmp(alone[i].reason[0], "stop"));
        if (i < 5 && !j) TAP_DIAG("not JSON (%s after %d ids)", alone[i].reason[0], alone[i].n[0]);
        cJSON_Delete(j);
        sched_request_free(rq[i]);
    }
    sched_stats st;
    sched_get_stats(tiny, &st);
    TAP_OK(st.preemptions > 0 && same == 6,
           "constrained under a tiny pool: %lld preemptions, %d/6 outputs (text, ids, logprobs) "
           "identical to an ample pool",
           (long long)st.preemptions, same);
    TAP_OK(parsed == 6, "constrained outputs end with \"stop\" and parse as JSON (%d/5 + 1 free)",
           parsed - 1);
    check_idle(tiny, "after constrained preemption");
    sched_stop(big);
    sched_stop(tiny);
}

/* ---------------------------------------------------------------- cancellation */

static void wait_steps(sched *s, int64_t more) {
    sched_stats st;
    sched_get_stats(s, &st);
    int64_t target = st.steps + more;
    for (int i = 0; i < 5000 && st.steps < target; i++) {
        nanosleep(&(struct timespec){0, 200000}, NULL);
        sched_get_stats(s, &st);
    }
}

static void test_cancel(void) {
    sched *s = start(4 << 20, 4, 8, 16, 1); /* budget 16: a 400-token prompt prefills slowly */
    if (!s) return;
    int32_t pr[420];
    int n = make_prompt(pr, 40, 0, 400);
    sched_params p = greedy(50);
    sched_request *r;
    rs_err e;
    sched_submit(s, pr, n, &p, &r, &e);
    wait_steps(s, 3);
    sched_event ev;
    int early = sched_next_event(r, &ev, 0);
    if (early) sched_event_free(&ev);
    sched_cancel(r);
    result res;
    collect(r, &res);
    TAP_OK(!early && res.error && res.code == RS_ECANCELED && res.n[0] == 0,
           "cancel mid-prefill: ERROR %d (%s), no token", res.code, res.message);
    sched_request_free(r);
    check_idle(s, "after cancel mid-prefill");

    n = make_prompt(pr, 41, 0, 20);
    p = greedy(400);
    p.ignore_eos = 1;
    sched_submit(s, pr, n, &p, &r, &e);
    int got = 0;
    while (got < 3 && sched_next_event(r, &ev, TIMEOUT_MS) == 1) {
        got += ev.type == SCHED_EV_TOKEN;
        sched_event_free(&ev);
    }
    sched_cancel(r);
    collect(r, &res);
    TAP_OK(res.error && res.code == RS_ECANCELED && got + res.n[0] < 400,
           "cancel mid-decode after %d tokens: ERROR (%s)", got + res.n[0], res.message);
    sched_request_free(r);
    check_idle(s, "after cancel mid-decode");

    /* Dropping handles of running and waiting requests without reading them. */
    for (int i = 0; i < 6; i++) {
        sched_submit(s, pr, n, &p, &r, &e);
        sched_request_free(r);
    }
    check_idle(s, "after dropping six unread handles");

    /* Stopping with requests running and waiting: each gets an ERROR, and its handle stays
     * valid (readable, cancellable, freeable) after the scheduler is gone. */
    sched_request *live[3];
    for (int i = 0; i < 3; i++) sched_submit(s, pr, n, &p, &live[i], &e);
    wait_steps(s, 2);
    sched_stop(s);
    int stopped = 0;
    for (int i = 0; i < 3; i++) {
        collect(live[i], &res);
        stopped += res.error && res.code == RS_ECANCELED;
        sched_cancel(live[i]);
        sched_request_free(live[i]);
    }
    TAP_OK(stopped == 3, "sched_stop ends 3 running/waiting requests with an ERROR (%d)", stopped);
}

/* ---------------------------------------------------------------- limits */

static void test_limits(void) {
    sched *s = start(1 << 20, 1, 2, 32, 1);
    if (!s) return;
    sched_config c;
    sched_get_config(s, &c);
    int32_t pr[600];
    int n = make_prompt(pr, 50, 0, 30);
    sched_params p = greedy(300);
    p.ignore_eos = 1;
    sched_request *rq[8] = {0};
    int full = -1;
    for (int i = 0; i < 8 && full < 0; i++) {
        rs_err e = {0};
        int rc = sched_submit(s, pr, n, &p, &rq[i], &e);
        if (rc == RS_EFULL) full = i;
        if (rc == RS_EFULL) TAP_DIAG("%s", e.msg);
    }
    TAP_OK(full >= 2 && full <= 3, "max_queue 2, max_batch 1: submission %d is RS_EFULL", full);
    for (int i = 0; i < 8; i++) sched_request_free(rq[i]);
    check_idle(s, "after a full queue");

    rs_err e = {0};
    sched_request *r = NULL;
    int nbig = make_prompt(pr, 51, 0, c.ctx_size);
    sched_params one = greedy(1);
    int rc = sched_submit(s, pr, nbig, &one, &r, &e);
    TAP_OK(rc == RS_ETOOBIG && !r && strstr(e.msg, "context"),
           "a prompt of %d tokens (ctx %d) is RS_ETOOBIG: %s", nbig, c.ctx_size, e.msg);
    sched_params p2 = greedy(4);
    p2.n = 2;
    rc = sched_submit(s, pr, 10, &p2, &r, &e);
    TAP_OK(rc == RS_ETOOBIG, "n = 2 over max_batch 1 is RS_ETOOBIG: %s", e.msg);
    pr[3] = 100000;
    rc = sched_submit(s, pr, 10, &p, &r, &e);
    TAP_OK(rc == RS_EINVAL && strstr(e.msg, "vocabulary"), "an id outside the vocabulary: %s",
           e.msg);
    rc = sched_submit(s, pr, 0, &p, &r, &e);
    TAP_OK(rc == RS_EINVAL, "an empty prompt: %s", e.msg);
    check_idle(s, "after refused requests");
    sched_stop(s);
}

/* ---------------------------------------------------------------- determinism */

static void test_seeded(void) {
    sched *s = start(4 << 20, 8, 16, 64, 1);
    if (!s) return;
    int32_t pr[64];
    int n = make_prompt(pr, 60, 20, 5);
    sched_params p = greedy(40);
    p.sampling.temperature = 0.9f;
    p.sampling.top_p = 0.95f;
    p.sampling.seed = 1234;
    p.n = 2;
    result alone, batched, other;
    sched_request *r, *noise[5];
    rs_err e;
    sched_submit(s, pr, n, &p, &r, &e);
    collect(r, &alone);
    sched_request_free(r);
    sched_params q = p;
    q.sampling.seed = 99;
    for (int i = 0; i < 5; i++) sched_submit(s, pr, n - i, &q, &noise[i], &e);
    sched_submit(s, pr, n, &p, &r, &e);
    collect(r, &batched);
    sched_request_free(r);
    collect(noise[0], &other);
    for (int i = 0; i < 5; i++) sched_request_free(noise[i]);
    TAP_OK(same_result(&alone, &batched, 2), "seeded sampling (n=2): alone == in a batch ('%s')",
           alone.text[0]);
    /* Choice 0 of n = 2 is the n = 1 request: forking shares the prompt's whole blocks and
     * copies its partial last block, so the choices never see each other's KV. */
    result single;
    sched_params p1 = p;
    p1.n = 1;
    sched_submit(s, pr, n, &p1, &r, &e);
    collect(r, &single);
    sched_request_free(r);
    TAP_OK(single.done && single.n[0] == alone.n[0] &&
               memcmp(single.tok[0], alone.tok[0], sizeof(int32_t) * (size_t)single.n[0]) == 0,
           "seeded n=1 == choice 0 of n=2 (prompt of %d tokens: a partial last block)", n);
    TAP_OK(strcmp(alone.text[0], alone.text[1]) != 0 || strcmp(alone.text[0], other.text[0]),
           "choices and seeds differ ('%s' / '%s' / '%s')", alone.text[0], alone.text[1],
           other.text[0]);
    check_idle(s, "after seeded sampling");
    sched_stop(s);
}

/* ---------------------------------------------------------------- stress */

#define NSTRESS 60

typedef struct stress_req {
    int32_t prompt[120];
    int n_prompt;
    sched_params p;
    sched_request *r; /* live handle, or NULL */
    int cancelled;    /* cancelled or dropped: its output is not compared */
    result res;       /* what came out */
    int ended;        /* a DONE or ERROR arrived */
} stress_req;

static void stress_drain(stress_req *q, int *bad) {
    if (!q->r) return;
    q->ended = collect(q->r, &q->res);
    *bad += !q->ended || (q->res.error && q->res.code != RS_ECANCELED) ||
            (q->res.error && !q->cancelled);
    sched_request_free(q->r);
    q->r = NULL;
}

/* Random requests (n up to 3, shared prefixes, stop strings, sampling) on a 10-block pool with
 * a small queue, some cancelled or dropped at random moments: every request ends with exactly
 * one DONE or ERROR, the accounting is clean, and every request left alone produced exactly
 * what it produces alone on an ample pool (through preemptions, forks and cache hits). */
static void test_stress(void) {
    static stress_req q[NSTRESS];
    sched *s = start(10 * 20480, 6, 8, 32, 1), *ref = start(8 << 20, 4, 8, 512, 0);
    if (!s || !ref) return;
    int refused = 0, bad = 0, ended = 0, same = 0, compared = 0;
    for (int i = 0; i < NSTRESS; i++) {
        stress_req *x = &q[i];
        /* prompt + max_tokens < 160, the tiny pool's context: no "length" the reference lacks */
        x->n_prompt = make_prompt(x->prompt, i % 3, rnd(2) ? 40 : 0, 1 + rnd(50));
        x->p = greedy(1 + rnd(60));
        x->p.n = 1 + rnd(2);
        x->p.sampling.temperature = rnd(2) ? 0.8f : 0;
        x->p.sampling.seed = (uint64_t)i;
        x->p.top_logprobs = rnd(3);
        if (rnd(3) == 0) x->p.stop[x->p.n_stop++] = "the";
        rs_err e;
        int rc = sched_submit(s, x->prompt, x->n_prompt, &x->p, &x->r, &e);
        if (rc) {
            refused += rc == RS_EFULL;
            bad += rc != RS_EFULL;
            x->cancelled = 1;
            continue;
        }
        if (rnd(6) == 0) sched_cancel(x->r), x->cancelled = 1;
        if (rnd(10) == 0) {
            sched_request_free(x->r); /* dropped unread */
            x->r = NULL;
            x->cancelled = 1;
        }
        if (i % 8 == 7) /* let the queue drain now and then */
            for (int j = 0; j <= i; j++) stress_drain(&q[j], &bad);
    }
    for (int j = 0; j < NSTRESS; j++) stress_drain(&q[j], &bad);
    for (int j = 0; j < NSTRESS; j++) {
        ended += q[j].ended;
        if (q[j].cancelled) continue;
        sched_request *r;
        rs_err e;
        result alone;
        sched_submit(ref, q[j].prompt, q[j].n_prompt, &q[j].p, &r, &e);
        collect(r, &alone);
        sched_request_free(r);
        compared++;
        same += same_result(&alone, &q[j].res, q[j].p.n);
    }
    sched_stats st;
    sched_get_stats(s, &st);
    TAP_OK(bad == 0 && ended + refused >= compared && compared > NSTRESS / 2,
           "stress: %d ended, %d refused (queue full), %d unexpected, %lld preemptions", ended,
           refused, bad, (long long)st.preemptions);
    TAP_OK(same == compared && st.preemptions > 0,
           "stress: %d/%d uncancelled outputs identical to the same request alone", same, compared);
    check_idle(s, "after the stress run");
    sched_stop(s);
    sched_stop(ref);
}

int main(void) {
    const char *root = getenv("RADIXSERVE_ROOT");
    char dir[PATH_MAX];
    snprintf(dir, sizeof dir, "%s/models/stories260K", root ? root : ".");
    rs_err e = {0};
    if (eng_model_load(&g_model, dir, &e) || tok_load(&g_tok, dir, &e)) {
        TAP_OK(0, "load %s: %s", dir, e.msg);
        return tap_done();
    }
    test_limits();
    test_cancel();
    test_cache_on_off();
    test_sent_twice();
    test_warm();
    test_shared_prefill();
    test_seeded();
    test_admission_order();
    test_step_delay();
    test_mixed_prefill();
    test_preemption();
    test_grammar_preemption();
    test_batched_equals_alone();
    test_stress();
    tok_free(g_tok);
    eng_model_free(g_model);
    return tap_done();
}
