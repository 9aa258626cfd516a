/*
 * srv_metrics.c — counters and histograms kept by the HTTP layer, and the Prometheus text page
 * that joins them with the scheduler's statistics. Names follow Prometheus conventions with the
 * radixserve_ prefix (base units, _total counters, _seconds histograms); a few of the
 * scheduler's figures are repeated under vLLM's names for gateways (put_gateway).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server/srv_int.h"

static void hist_init(srv_hist *h, const double *bounds, int n) {
    memset(h, 0, sizeof *h);
    h->n_bounds = n;
    memcpy(h->bounds, bounds, (size_t)n * sizeof *bounds);
}

void srv_metrics_init(srv_metrics *m) {
    static const double ttft[] = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60};
    static const double itl[] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5};
    memset(m, 0, sizeof *m);
    pthread_mutex_init(&m->mu, NULL);
    hist_init(&m->ttft, ttft, (int)(sizeof ttft / sizeof ttft[0]));
    hist_init(&m->itl, itl, (int)(sizeof itl / sizeof itl[0]));
}

void srv_metrics_free(srv_metrics *m) {
    pthread_mutex_destroy(&m->mu);
}

void srv_metrics_request(srv_metrics *m, int status, int prompt, int cached, int completion) {
    pthread_mutex_lock(&m->mu);
    if (status >= 100 && status < 600) m->by_status[status]++;
    m->prompt_tokens += prompt;
    m->cached_tokens += cached;
    m->completion_tokens += completion;
    pthread_mutex_unlock(&m->mu);
}

void srv_metrics_observe(srv_metrics *m, srv_hist *h, double seconds) {
    int b = 0;
    while (b < h->n_bounds && seconds > h->bounds[b]) b++;
    pthread_mutex_lock(&m->mu);
    h->counts[b]++;
    h->sum += seconds;
    h->count++;
    pthread_mutex_unlock(&m->mu);
}

static void put_hist(api_buf *o, const char *name, const char *help, const srv_hist *h) {
    char line[256];
    int64_t cum = 0;
    snprintf(line, sizeof line, "# HELP %s %s\n# TYPE %s histogram\n", name, help, name);
    api_buf_puts(o, line);
    for (int b = 0; b <= h->n_bounds; b++) {
        cum += h->counts[b];
        if (b < h->n_bounds)
            snprintf(line, sizeof line, "%s_bucket{le=\"%g\"} %lld\n", name, h->bounds[b],
                     (long long)cum);
        else
            snprintf(line, sizeof line, "%s_bucket{le=\"+Inf\"} %lld\n", name, (long long)cum);
        api_buf_puts(o, line);
    }
    snprintf(line, sizeof line, "%s_sum %.6f\n%s_count %lld\n", name, h->sum, name,
             (long long)h->count);
    api_buf_puts(o, line);
}

static void put_metric(api_buf *o, const char *name, const char *type, const char *help, double v) {
    char line[320];
    snprintf(line, sizeof line, "# HELP %s %s\n# TYPE %s %s\n%s %.17g\n", name, help, name, type,
             name, v);
    api_buf_puts(o, line);
}

static void put_sched(api_buf *o, const sched_stats *st) {
    char line[256];
    api_buf_puts(o, "# HELP radixserve_kv_blocks KV cache blocks by state (used = cached + "
                    "private; pinned: on a running request's path)\n"
                    "# TYPE radixserve_kv_blocks gauge\n");
    snprintf(line, sizeof line,
             "radixserve_kv_blocks{state=\"used\"} %d\nradixserve_kv_blocks{state=\"cached\"} "
             "%d\nradixserve_kv_blocks{state=\"free\"} %d\nradixserve_kv_blocks{state=\"pinned\"}"
             " %d\nradixserve_kv_blocks{state=\"total\"} %d\n",
             st->kv_blocks_used, st->kv_blocks_cached, st->kv_blocks_free, st->kv_blocks_pinned,
             st->kv_blocks_total);
    api_buf_puts(o, line);
    put_metric(o, "radixserve_queue_depth", "gauge", "Requests waiting for admission", st->waiting);
    put_metric(o, "radixserve_running_sequences", "gauge", "Sequences in the running batch",
               st->running);
    put_metric(o, "radixserve_steps_total", "counter", "Forward steps", (double)st->steps);
    put_metric(o, "radixserve_cache_lookups_total", "counter", "Prefix-cache lookups",
               (double)st->cache_lookups);
    put_metric(o, "radixserve_cache_hit_tokens_total", "counter",
               "Prompt tokens found in the prefix cache", (double)st->cache_hit_tokens);
    put_metric(o, "radixserve_cache_miss_tokens_total", "counter",
               "Prompt tokens not found in the prefix cache", (double)st->cache_miss_tokens);
    int64_t asked = st->cache_hit_tokens + st->cache_miss_tokens;
    put_metric(o, "radixserve_cache_hit_ratio", "gauge",
               "Prefix-cache hit tokens / looked-up tokens since start",
               asked ? (double)st->cache_hit_tokens / (double)asked : 0.0);
    put_metric(o, "radixserve_cache_evicted_blocks_total", "counter", "Blocks evicted (LRU)",
               (double)st->cache_evicted_blocks);
    put_metric(o, "radixserve_cache_nodes", "gauge", "Radix-tree nodes", (double)st->cache_nodes);
    put_metric(o, "radixserve_preemptions_total", "counter", "Sequences preempted for memory",
               (double)st->preemptions);
    put_metric(o, "radixserve_warm_tokens_computed_total", "counter",
               "Positions prefilled by next-turn warming (spare capacity only)",
               (double)st->warm_tokens);
    put_metric(o, "radixserve_warm_tokens_hit_total", "counter",
               "Prompt tokens later served from blocks warming computed",
               (double)st->warm_hit_tokens);
    put_metric(o, "radixserve_warm_steps_total", "counter",
               "Steps that ran a warming chunk (never beside a request)", (double)st->warm_steps);
    put_metric(o, "radixserve_warm_yields_total", "counter",
               "Times warming was parked for an arriving request", (double)st->warm_parks);
    put_metric(o, "radixserve_warm_dropped_total", "counter",
               "Warming jobs dropped because the KV pool was short", (double)st->warm_dropped);
    put_metric(o, "radixserve_warm_queue", "gauge", "Warming jobs pending", st->warm_queued);
}

/* The names the Gateway API Inference Extension's endpoint picker and llm-d read (its model
 * server protocol; vLLM's names and units), computed from the same statistics snapshot as the
 * radixserve_ series above, never counted apart (docs/deploy.md). KV usage is the fraction of
 * blocks running requests hold (pinned tree blocks and private ones), as vLLM counts a cached
 * block nobody references as free: evictable cache is not memory pressure. */
static void put_gateway(api_buf *o, const sched_stats *st) {
    char line[256];
    double kv = st->kv_blocks_total
                    ? (double)(st->kv_blocks_pinned + st->kv_blocks_private) / st->kv_blocks_total
                    : 0.0;
    put_metric(o, "vllm:num_requests_waiting", "gauge",
               "Requests waiting for admission (radixserve_queue_depth)", st->waiting);
    put_metric(o, "vllm:num_requests_running", "gauge",
               "Sequences in the running batch (radixserve_running_sequences)", st->running);
    put_metric(o, "vllm:kv_cache_usage_perc", "gauge",
               "Fraction of KV blocks held by running requests, 0 to 1", kv);
    put_metric(o, "vllm:gpu_cache_usage_perc", "gauge",
               "vllm:kv_cache_usage_perc under its older name", kv);
    put_metric(o, "vllm:prefix_cache_queries_total", "counter",
               "Prompt tokens looked up in the prefix cache (hit + miss tokens)",
               (double)(st->cache_hit_tokens + st->cache_miss_tokens));
    put_metric(o, "vllm:prefix_cache_hits_total", "counter",
               "Prompt tokens found in the prefix cache (radixserve_cache_hit_tokens_total)",
               (double)st->cache_hit_tokens);
    snprintf(line, sizeof line,
             "# HELP vllm:cache_config_info KV cache shape (labels)\n"
             "# TYPE vllm:cache_config_info gauge\n"
             "vllm:cache_config_info{block_size=\"%d\",num_gpu_blocks=\"%d\"} 1\n",
             st->block_size, st->kv_blocks_total);
    api_buf_puts(o, line);
}

char *srv_metrics_text(srv_metrics *m, const sched_stats *st) {
    api_buf o = {0};
    char line[128];
    pthread_mutex_lock(&m->mu);
    srv_metrics snap = *m; /* copy under the lock, format outside it */
    pthread_mutex_unlock(&m->mu);
    api_buf_puts(&o, "# HELP radixserve_requests_total HTTP requests answered, by status "
                     "(499: the client left first)\n# TYPE radixserve_requests_total counter\n");
    for (int i = 100; i < 600; i++)
        if (snap.by_status[i]) {
            snprintf(line, sizeof line, "radixserve_requests_total{status=\"%d\"} %lld\n", i,
                     (long long)snap.by_status[i]);
            api_buf_puts(&o, line);
        }
    put_metric(&o, "radixserve_prompt_tokens_total", "counter", "Prompt tokens processed",
               (double)snap.prompt_tokens);
    put_metric(&o, "radixserve_cached_tokens_total", "counter",
               "Prompt tokens served from the prefix cache", (double)snap.cached_tokens);
    put_metric(&o, "radixserve_completion_tokens_total", "counter", "Tokens generated",
               (double)snap.completion_tokens);
    put_metric(&o, "radixserve_prompt_cache_hit_ratio", "gauge",
               "cached_tokens_total / prompt_tokens_total",
               snap.prompt_tokens ? (double)snap.cached_tokens / (double)snap.prompt_tokens : 0.0);
    put_hist(&o, "radixserve_time_to_first_token_seconds",
             "From request arrival to its first generated token", &snap.ttft);
    put_hist(&o, "radixserve_inter_token_latency_seconds",
             "Between consecutive generated tokens of one request", &snap.itl);
    put_metric(&o, "radixserve_model_loaded", "gauge", "1 once the model is ready", st ? 1 : 0);
    if (st) {
        put_sched(&o, st);
        put_gateway(&o, st);
    }
    return o.s; /* NULL only if nothing could be allocated */
}
