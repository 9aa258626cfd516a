/*
 * test_server_http.c — the HTTP layer against a scripted fake backend (no model): routes, status
 * codes, error shapes, auth, CORS, body limit, /health while loading, SSE framing, and
 * disconnects (streaming and not, mid-prefill and mid-decode) cancelling the request within a
 * second. Requests are sent with curl on 127.0.0.1 at a port the server picks.
 *
 * The fake "tokenizer" maps bytes to ids; the fake scheduler answers every prompt with the
 * characters of "Hello world" one token at a time. Words in the prompt script it: SLOW (3 s of
 * "prefill" before the first token), LONG (400 tokens, 10 ms apart), FULL (queue full), THINK
 * (Qwen3-style "<think>...</think>" reasoning before the answer), TOOL (a Hermes-style
 * <tool_call> block).
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "server/server.h"
#include "tests/tap.h"

/* ---------------------------------------------------------------- the fake backend */

#define QCAP 1024

struct sched_request {
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    sched_event q[QCAP]; /* events not yet read */
    int head, tail;
    atomic_int cancel;
    int n_prompt, n, slow, len, think, tool;
    const char *stop0; /* first stop string, applied to "Hello world" */
};

typedef struct fake {
    atomic_int running;   /* requests whose thread has not finished */
    atomic_int cancelled; /* requests that ended by cancellation */
    atomic_int submitted;
    atomic_int cache_max; /* max_tokens of the last cache_json call */
} fake;

static fake F;

static void push(struct sched_request *r, sched_event *ev) {
    pthread_mutex_lock(&r->mu);
    if (r->tail - r->head < QCAP)
        r->q[r->tail++ % QCAP] = *ev;
    else
        free(ev->text);
    pthread_cond_signal(&r->cv);
    pthread_mutex_unlock(&r->mu);
}

static int wait_or_cancel(struct sched_request *r, int ms) {
    for (int t = 0; t < ms; t += 5) {
        if (atomic_load(&r->cancel)) return 1;
        usleep(5000);
    }
    return atomic_load(&r->cancel);
}

static void *fake_run(void *arg) {
    struct sched_request *r = arg;
    static const char *const tool_text[] = {
        "",
        "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n"
        "</tool_call>",
        "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n"
        "</tool_call>\n<tool_call>\n{\"name\": \"get_time\", \"arguments\": {\"tz\": "
        "\"CET\"}}\n</tool_call>",
        "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \n</tool_call>",
    };
    const char *text = r->think  ? "<think>\nhmm\n</think>\n\nanswer"
                       : r->tool ? tool_text[r->tool]
                                 : "Hello world";
    int tokens = 0, stopped = 0;
    sched_event ev;
    if (r->slow && wait_or_cancel(r, 3000)) goto cancelled;
    for (int c = 0; c < r->n; c++) {
        int len = r->len ? r->len : (int)strlen(text);
        if (r->stop0) {
            const char *s = strstr(text, r->stop0);
            if (s) len = (int)(s - text), stopped = 1;
        }
        for (int i = 0; i < len; i++) {
            if (r->len && wait_or_cancel(r, 10)) goto cancelled;
            if (atomic_load(&r->cancel)) goto cancelled;
            memset(&ev, 0, sizeof ev);
            ev.type = SCHED_EV_TOKEN;
            ev.index = c;
            char ch[2] = {r->len ? 'x' : text[i], 0};
            ev.text = strdup(ch);
            ev.token = (unsigned char)ch[0];
            ev.logprob = -0.25f;
            ev.n_top = 1;
            ev.top[0].token = (unsigned char)ch[0];
            ev.top[0].logprob = -0.25f;
            push(r, &ev);
            tokens++;
        }
        memset(&ev, 0, sizeof ev);
        ev.type = SCHED_EV_FINISH;
        ev.index = c;
        ev.text = strdup("");
        ev.finish_reason = r->len || stopped ? (r->len ? "length" : "stop") : "stop";
        push(r, &ev);
    }
    memset(&ev, 0, sizeof ev);
    ev.type = SCHED_EV_DONE;
    ev.prompt_tokens = r->n_prompt;
    ev.cached_tokens = r->n_prompt / 2;
    ev.completion_tokens = tokens;
    push(r, &ev);
    atomic_fetch_sub(&F.running, 1);
    return NULL;
cancelled:
    memset(&ev, 0, sizeof ev);
    ev.type = SCHED_EV_ERROR;
    snprintf(ev.message, sizeof ev.message, "cancelled");
    push(r, &ev);
    atomic_fetch_add(&F.cancelled, 1);
    atomic_fetch_sub(&F.running, 1);
    return NULL;
}

static int has_word(const int32_t *ids, int n, const char *w) {
    size_t wl = strlen(w);
    for (int i = 0; i + (int)wl <= n; i++) {
        size_t k = 0;
        while (k < wl && ids[i + k] == (unsigned char)w[k]) k++;
        if (k == wl) return 1;
    }
    return 0;
}

static int fake_submit(void *ctx, const int32_t *prompt, int n_prompt, const sched_params *p,
                       sched_request **out, rs_err *e) {
    (void)ctx;
    gr_free(p->grammar); /* the backend takes it (the fake never constrains) */
    if (has_word(prompt, n_prompt, "FULL")) return rs_errf(e, RS_EFULL, "queue full");
    struct sched_request *r = calloc(1, sizeof *r);
    pthread_mutex_init(&r->mu, NULL);
    pthread_cond_init(&r->cv, NULL);
    r->n_prompt = n_prompt;
    r->n = p->n;
    r->slow = has_word(prompt, n_prompt, "SLOW");
    r->len = has_word(prompt, n_prompt, "LONG") ? 400 : 0;
    r->think = has_word(prompt, n_prompt, "THINK");
    r->tool = !has_word(prompt, n_prompt, "TOOL")      ? 0
              : has_word(prompt, n_prompt, "TWOTOOLS") ? 2
              : has_word(prompt, n_prompt, "BADTOOL")  ? 3
                                                       : 1;
    r->stop0 = p->n_stop ? strdup(p->stop[0]) : NULL;
    atomic_fetch_add(&F.running, 1);
    atomic_fetch_add(&F.submitted, 1);
    pthread_create(&r->thread, NULL, fake_run, r);
    *out = r;
    return 0;
}

static int fake_next(sched_request *r, sched_event *ev, int timeout_ms) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_nsec += (long)timeout_ms * 1000000L;
    ts.tv_sec += ts.tv_nsec / 1000000000L;
    ts.tv_nsec %= 1000000000L;
    pthread_mutex_lock(&r->mu);
    while (r->head == r->tail)
        if (pthread_cond_timedwait(&r->cv, &r->mu, &ts) == ETIMEDOUT) break;
    int got = r->head < r->tail;
    if (got) *ev = r->q[r->head++ % QCAP];
    pthread_mutex_unlock(&r->mu);
    return got;
}

static void fake_cancel(sched_request *r) {
    atomic_store(&r->cancel, 1);
}

static void fake_free(sched_request *r) {
    atomic_store(&r->cancel, 1);
    pthread_join(r->thread, NULL);
    while (r->head < r->tail) free(r->q[r->head++ % QCAP].text);
    free((char *)r->stop0);
    pthread_mutex_destroy(&r->mu);
    pthread_cond_destroy(&r->cv);
    free(r);
}

static void fake_event_free(sched_event *ev) {
    free(ev->text);
    ev->text = NULL;
}

static void fake_stats(void *ctx, sched_stats *st) {
    (void)ctx;
    memset(st, 0, sizeof *st);
    st->running = atomic_load(&F.running);
    st->kv_blocks_total = 64;
    st->kv_blocks_free = 64;
    st->block_size = 16;
    st->waiting = 3;           /* the gateway names below must repeat these, not count apart */
    st->kv_blocks_pinned = 10; /* (10 + 6) / 64 held by running requests */
    st->kv_blocks_private = 6;
    st->cache_hit_tokens = 30;
    st->cache_miss_tokens = 12;
}

/* A two-node tree: the namespace node and one edge whose first tokens spell "Hi". */
static int fake_cache_json(void *ctx, int max_tokens, char **out, rs_err *e) {
    (void)ctx, (void)e;
    atomic_store(&F.cache_max, max_tokens);
    *out = strdup("{\"clock\":7,\"stats\":{\"nodes\":1},\"nodes\":["
                  "{\"id\":1,\"parent\":0,\"ns\":\"0\",\"depth\":0,\"n_tokens\":0,\"n_blocks\":0,"
                  "\"pin\":0,\"last_access\":7,\"tokens\":[],\"blocks\":[]},"
                  "{\"id\":2,\"parent\":1,\"ns\":\"0\",\"depth\":1,\"n_tokens\":16,\"n_blocks\":1,"
                  "\"pin\":1,\"last_access\":7,\"tokens\":[72,105],\"blocks\":[3]}]}");
    return 0;
}

static int fake_encode(void *ctx, const char *text, size_t len, int flags, rs_ivec *out,
                       rs_err *e) {
    (void)ctx, (void)flags, (void)e;
    for (size_t i = 0; i < len; i++) rs_ivec_push(out, (unsigned char)text[i]);
    return 0;
}

static int fake_decode(void *ctx, const int32_t *ids, int n, int skip, char **out, rs_err *e) {
    (void)ctx, (void)skip;
    *out = malloc((size_t)n + 1);
    for (int i = 0; i < n; i++) {
        if (ids[i] <= 0 || ids[i] > 255) {
            free(*out);
            return rs_errf(e, RS_EINVAL, "token id %d out of range", ids[i]);
        }
        (*out)[i] = (char)ids[i];
    }
    (*out)[n] = 0;
    return 0;
}

/* ---------------------------------------------------------------- curl driver */

static int g_port;
static char g_tmp[512];

typedef struct reply {
    int status;
    char body[65536];
    char headers[4096];
    double secs;
} reply;

static void slurp(const char *path, char *buf, size_t n) {
    FILE *f = fopen(path, "rb");
    size_t k = f ? fread(buf, 1, n - 1, f) : 0;
    buf[k] = 0;
    if (f) fclose(f);
}

/* curl METHOD path with extra curl arguments; body (may be NULL) is sent from a file. */
static void http(reply *r, const char *method, const char *path, const char *body,
                 const char *extra) {
    char cmd[2048], bpath[600], hpath[600], dpath[600];
    snprintf(bpath, sizeof bpath, "%s/srv_body", g_tmp);
    snprintf(hpath, sizeof hpath, "%s/srv_headers", g_tmp);
    snprintf(dpath, sizeof dpath, "%s/srv_data", g_tmp);
    if (body) {
        FILE *f = fopen(dpath, "wb");
        fputs(body, f);
        fclose(f);
    }
    snprintf(cmd, sizeof cmd,
             "curl -s -m 10 -X %s -o %s -D %s -w '%%{http_code}' %s%s "
             "'http://127.0.0.1:%d%s'",
             method, bpath, hpath,
             body ? "-H 'Content-Type: application/json' --data-binary @" : "", body ? dpath : "",
             g_port, path);
    char full[2300];
    snprintf(full, sizeof full, "%s %s", cmd, extra ? extra : "");
    double t0 = rs_now();
    FILE *p = popen(full, "r");
    char code[16] = {0};
    if (p) {
        if (!fgets(code, sizeof code, p)) code[0] = 0;
        pclose(p);
    }
    r->secs = rs_now() - t0;
    r->status = atoi(code);
    slurp(bpath, r->body, sizeof r->body);
    slurp(hpath, r->headers, sizeof r->headers);
}

static const char *CHAT = "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}";

static int wait_running_zero(double limit) {
    double t0 = rs_now();
    while (rs_now() - t0 < limit) {
        if (atomic_load(&F.running) == 0) return 1;
        usleep(20000);
    }
    return atomic_load(&F.running) == 0;
}

/* ---------------------------------------------------------------- tests */

static void test_loading(srv *s) {
    reply r;
    http(&r, "GET", "/health", NULL, NULL);
    TAP_OK(r.status == 503 && strstr(r.body, "\"loading\""), "/health 503 loading before ready");
    http(&r, "POST", "/v1/chat/completions", CHAT, NULL);
    TAP_OK(r.status == 503 && strcasestr(r.headers, "Retry-After:"),
           "chat while loading: 503 + Retry-After (%d)", r.status);
    (void)s;
}

static void test_basic(void) {
    reply r;
    http(&r, "GET", "/health", NULL, NULL);
    TAP_OK(r.status == 200, "/health 200 when ready");
    http(&r, "GET", "/v1/models", NULL, NULL);
    TAP_OK(r.status == 200 && strstr(r.body, "\"id\":\"fake-model\"") &&
               strstr(r.body, "\"object\":\"list\""),
           "/v1/models lists the served model");
    http(&r, "POST", "/v1/chat/completions", CHAT, NULL);
    TAP_OK(r.status == 200 && strstr(r.body, "\"content\":\"Hello world\"") &&
               strstr(r.body, "\"finish_reason\":\"stop\"") &&
               strstr(r.body, "\"cached_tokens\":") && strstr(r.body, "\"chat.completion\"") &&
               strstr(r.body, "\"system_fingerprint\""),
           "chat non-streamed: text, finish_reason, usage.cached_tokens");
    http(&r, "POST", "/v1/chat/completions",
         "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"n\":2,\"stop\":[\" wor\"],"
         "\"logprobs\":true,\"top_logprobs\":1}",
         NULL);
    TAP_OK(r.status == 200 && strstr(r.body, "\"index\":1") &&
               strstr(r.body, "\"content\":\"Hello\"") && strstr(r.body, "\"top_logprobs\":[{"),
           "chat n=2, stop, logprobs");
    http(&r, "POST", "/v1/completions", "{\"prompt\":\"Once\",\"echo\":true,\"logprobs\":1}", NULL);
    TAP_OK(r.status == 200 && strstr(r.body, "\"text\":\"OnceHello world\"") &&
               strstr(r.body, "\"token_logprobs\""),
           "completions with echo and logprobs");
    http(&r, "POST", "/tokenize", "{\"prompt\":\"abc\"}", NULL);
    TAP_OK(r.status == 200 && strstr(r.body, "[97,98,99]") && strstr(r.body, "\"count\":3"),
           "/tokenize");
    http(&r, "POST", "/detokenize", "{\"tokens\":[104,105]}", NULL);
    TAP_OK(r.status == 200 && strstr(r.body, "\"prompt\":\"hi\""), "/detokenize");
    http(&r, "GET", "/v1/cache", NULL, NULL);
    TAP_OK(r.status == 200 && strstr(r.body, "\"blocks\":{") && strstr(r.body, "\"total\":64") &&
               strstr(r.body, "\"tree\":{\"clock\":7") && strstr(r.body, "\"n_tokens\":16") &&
               strstr(r.body, "\"text\":\"Hi\"") && atomic_load(&F.cache_max) == 16,
           "/v1/cache: summary and the tree (16 tokens per edge, shown as text too)");
    http(&r, "GET", "/v1/cache?tokens=3", NULL, NULL);
    TAP_OK(r.status == 200 && atomic_load(&F.cache_max) == 3, "/v1/cache?tokens=3 asks for 3");
    http(&r, "GET", "/v1/cache?tokens=-1", NULL, NULL);
    TAP_OK(r.status == 400 && strstr(r.body, "\"param\":\"tokens\""), "/v1/cache?tokens=-1: 400");
    http(&r, "GET", "/metrics", NULL, NULL);
    TAP_OK(r.status == 200 && strstr(r.body, "radixserve_requests_total{status=\"200\"}") &&
               strstr(r.body, "radixserve_time_to_first_token_seconds_bucket") &&
               strstr(r.body, "radixserve_kv_blocks{state=\"free\"} 64") &&
               strstr(r.body, "radixserve_running_sequences 0"),
           "/metrics Prometheus text");
    TAP_OK(
        strstr(r.body, "\nvllm:num_requests_waiting 3\n") &&
            strstr(r.body, "\nvllm:num_requests_running 0\n") &&
            strstr(r.body, "\nvllm:kv_cache_usage_perc 0.25\n") &&
            strstr(r.body, "\nvllm:gpu_cache_usage_perc 0.25\n") &&
            strstr(r.body, "\nvllm:prefix_cache_queries_total 42\n") &&
            strstr(r.body, "\nvllm:prefix_cache_hits_total 30\n") &&
            strstr(r.body, "# TYPE vllm:prefix_cache_hits_total counter\n") &&
            strstr(r.body, "\nvllm:cache_config_info{block_size=\"16\",num_gpu_blocks=\"64\"} 1\n"),
        "/metrics: the Inference Extension's vLLM names, from the same statistics");
}

static void test_stream(void) {
    reply r;
    http(&r, "POST", "/v1/chat/completions",
         "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"stream\":true,"
         "\"stream_options\":{\"include_usage\":true}}",
         "-N");
    const char *role = strstr(r.body, "\"role\":\"assistant\"");
    const char *h = strstr(r.body, "\"content\":\"H\"");
    const char *fin = strstr(r.body, "\"finish_reason\":\"stop\"");
    const char *usage = strstr(r.body, "\"choices\":[],\"usage\":{");
    const char *done = strstr(r.body, "data: [DONE]\n\n");
    TAP_OK(r.status == 200 && strcasestr(r.headers, "text/event-stream") && role && h && fin &&
               usage && done && role < h && h < fin && fin < usage && usage < done,
           "chat stream: role, deltas, finish_reason, usage chunk, [DONE] in order");
    TAP_OK(strstr(r.body, "\"usage\":null") != NULL, "include_usage: chunks carry usage null");
    http(&r, "POST", "/v1/completions", "{\"prompt\":\"x\",\"stream\":true}", "-N");
    TAP_OK(r.status == 200 && strstr(r.body, "\"text_completion\"") &&
               strstr(r.body, "data: [DONE]") && !strstr(r.body, "\"usage\":{"),
           "completions stream without usage");
}

/* POST base + tail (the closing part of a JSON body) to /v1/chat/completions. */
static void chat_with(reply *r, const char *base, const char *tail, const char *extra) {
    char b[512];
    snprintf(b, sizeof b, "%s%s", base, tail);
    http(r, "POST", "/v1/chat/completions", b, extra);
}

static void test_think(void) {
    reply r;
    const char *think = "{\"messages\":[{\"role\":\"user\",\"content\":\"THINK\"}]";
    chat_with(&r, think, "}", NULL);
    TAP_OK(r.status == 200 && strstr(r.body, "\"content\":\"answer\"") &&
               strstr(r.body, "\"reasoning_content\":\"hmm\\n\""),
           "reasoning split into reasoning_content");
    chat_with(&r, think, ",\"stream\":true}", "-N");
    TAP_OK(strstr(r.body, "\"reasoning_content\":\"h\"") && strstr(r.body, "\"content\":\"a\"") &&
               !strstr(r.body, "think>"),
           "streamed reasoning_content deltas, tags never sent");
    chat_with(&r, think, ",\"chat_template_kwargs\":{\"enable_thinking\":false}}", NULL);
    TAP_OK(strstr(r.body, "<think>") && !strstr(r.body, "reasoning_content"),
           "enable_thinking false: no split");
}

/* The streamed tool calls of an SSE body, accumulated by index as OpenAI clients do. A call's
 * first fragment must carry id, type "function" and name with arguments ""; later ones only
 * index and arguments. Returns the calls (an array of {id, name, arguments}) or NULL when a
 * fragment is misshapen; *finish gets the last finish_reason. */
static cJSON *sse_tool_calls(const char *body, char *finish, size_t fn) {
    cJSON *calls = cJSON_CreateArray();
    int bad = 0;
    finish[0] = 0;
    for (const char *p = strstr(body, "data: {"); p && !bad; p = strstr(p + 1, "data: {")) {
        const char *end = strstr(p, "\n\n");
        cJSON *chunk = cJSON_ParseWithLength(p + 6, end ? (size_t)(end - p - 6) : strlen(p + 6));
        const cJSON *ch = cJSON_GetArrayItem(cJSON_GetObjectItem(chunk, "choices"), 0);
        const cJSON *fr = cJSON_GetObjectItem(ch, "finish_reason"), *d;
        if (cJSON_IsString(fr)) snprintf(finish, fn, "%s", fr->valuestring);
        cJSON_ArrayForEach(d, cJSON_GetObjectItem(cJSON_GetObjectItem(ch, "delta"), "tool_calls")) {
            const cJSON *idx = cJSON_GetObjectItem(d, "index"),
                        *f = cJSON_GetObjectItem(d, "function");
            const cJSON *id = cJSON_GetObjectItem(d, "id"),
                        *args = cJSON_GetObjectItem(f, "arguments");
            int k = cJSON_IsNumber(idx) ? idx->valueint : -1, n = cJSON_GetArraySize(calls);
            if (k == n && cJSON_IsString(id)) { /* a new call: its first fragment */
                const cJSON *type = cJSON_GetObjectItem(d, "type"),
                            *name = cJSON_GetObjectItem(f, "name");
                bad |= !cJSON_IsString(type) || strcmp(type->valuestring, "function") ||
                       !cJSON_IsString(name) || !cJSON_IsString(args) || args->valuestring[0];
                if (bad) break;
                cJSON *c = cJSON_CreateObject();
                cJSON_AddStringToObject(c, "id", id->valuestring);
                cJSON_AddStringToObject(c, "name", name->valuestring);
                cJSON_AddStringToObject(c, "arguments", "");
                cJSON_AddItemToArray(calls, c);
            } else if (k >= 0 && k < n && !id && !cJSON_GetObjectItem(f, "name") &&
                       cJSON_IsString(args)) { /* more arguments of call k */
                cJSON *c = cJSON_GetArrayItem(calls, k);
                char joined[4096];
                snprintf(joined, sizeof joined, "%s%s",
                         cJSON_GetObjectItem(c, "arguments")->valuestring, args->valuestring);
                cJSON_ReplaceItemInObject(c, "arguments", cJSON_CreateString(joined));
            } else {
                bad = 1;
            }
        }
        cJSON_Delete(chunk);
    }
    if (bad) {
        cJSON_Delete(calls);
        return NULL;
    }
    return calls;
}

static const char *sv(const cJSON *o, const char *k);
static const char *call_str(const cJSON *calls, int i, const char *k) {
    return sv(cJSON_GetArrayItem(calls, i), k);
}

/* o[k] when a string, else "". */
static const char *sv(const cJSON *o, const char *k) {
    const cJSON *v = cJSON_GetObjectItem(o, k);
    return cJSON_IsString(v) ? v->valuestring : "";
}

/* The openai SDK (tests/js/sdk_tool_stream.mjs) accumulating the streamed calls: skipped when
 * node or the SDK is missing. */
static void test_tools_sdk(void) {
    const char *rootdir = getenv("RADIXSERVE_ROOT");
    char sdk[1200], cmd[2600], out[8192] = {0};
    snprintf(sdk, sizeof sdk, "%s/tests/js/node_modules/openai/package.json",
             rootdir ? rootdir : ".");
    if (access(sdk, R_OK) || system("node --version >/dev/null 2>&1")) {
        tap_skip("openai SDK streaming tool calls: node or tests/js/node_modules missing");
        return;
    }
    snprintf(cmd, sizeof cmd, "node %s/tests/js/sdk_tool_stream.mjs http://127.0.0.1:%d 2>&1",
             rootdir ? rootdir : ".", g_port);
    FILE *p = popen(cmd, "r");
    size_t n = p ? fread(out, 1, sizeof out - 1, p) : 0;
    if (p) pclose(p);
    out[n] = 0;
    cJSON *j = cJSON_Parse(out);
    int all = j && !cJSON_GetObjectItem(j, "error");
    static const char *const ways[] = {"helper", "manual"};
    for (int w = 0; w < 2 && all; w++) {
        const cJSON *r = cJSON_GetObjectItem(j, ways[w]);
        const cJSON *calls = cJSON_GetObjectItem(r, "calls");
        const cJSON *c0 = cJSON_GetArrayItem(calls, 0), *c1 = cJSON_GetArrayItem(calls, 1);
        const cJSON *a0 = cJSON_GetObjectItem(c0, "arguments"),
                    *a1 = cJSON_GetObjectItem(c1, "arguments");
        all = !strcmp(sv(r, "finish"), "tool_calls") && cJSON_GetArraySize(calls) == 2 &&
              !strcmp(sv(c0, "name"), "get_weather") && !strcmp(sv(c1, "name"), "get_time") &&
              !strcmp(sv(c0, "type"), "function") && !strcmp(sv(a0, "city"), "Paris") &&
              !strcmp(sv(a1, "tz"), "CET") && strcmp(sv(c0, "id"), sv(c1, "id"));
    }
    TAP_OK(all, "openai SDK: streamed tool_calls accumulate into two valid calls (helper and "
                "by hand)");
    if (!all) TAP_DIAG("%.600s", out);
    cJSON_Delete(j);
}

static void test_tools(void) {
    reply r;
    char finish[32];
    const char *req = "{\"messages\":[{\"role\":\"user\",\"content\":\"TOOL\"}],\"tools\":[{"
                      "\"type\":\"function\",\"function\":{\"name\":\"get_weather\"}}]";
    chat_with(&r, req, "}", NULL);
    TAP_OK(r.status == 200 && strstr(r.body, "\"content\":null") &&
               strstr(r.body, "\"tool_calls\":[{\"id\":\"call_") &&
               strstr(r.body, "\"arguments\":\"{\\\"city\\\":\\\"Paris\\\"}\"") &&
               strstr(r.body, "\"finish_reason\":\"tool_calls\""),
           "tool call extracted into message.tool_calls, finish_reason tool_calls");
    chat_with(&r, req, ",\"stream\":true}", "-N");
    cJSON *calls = sse_tool_calls(r.body, finish, sizeof finish);
    TAP_OK(calls && cJSON_GetArraySize(calls) == 1 &&
               !strcmp(call_str(calls, 0, "name"), "get_weather") &&
               !strcmp(call_str(calls, 0, "arguments"), "{\"city\":\"Paris\"}") &&
               !strncmp(call_str(calls, 0, "id"), "call_", 5) && !strcmp(finish, "tool_calls") &&
               !strstr(r.body, "<tool_call>"),
           "streamed: delta.tool_calls fragments (id, type, name first; then arguments)");
    cJSON_Delete(calls);
    const char *two = "{\"messages\":[{\"role\":\"user\",\"content\":\"TWOTOOLS\"}],\"tools\":[{"
                      "\"type\":\"function\",\"function\":{\"name\":\"get_weather\"}}]";
    chat_with(&r, two, ",\"stream\":true}", "-N");
    calls = sse_tool_calls(r.body, finish, sizeof finish);
    TAP_OK(calls && cJSON_GetArraySize(calls) == 2 &&
               !strcmp(call_str(calls, 1, "name"), "get_time") &&
               !strcmp(call_str(calls, 1, "arguments"), "{\"tz\":\"CET\"}") &&
               strcmp(call_str(calls, 0, "id"), call_str(calls, 1, "id")) &&
               !strcmp(finish, "tool_calls"),
           "streamed: two calls at index 0 and 1 with distinct ids");
    cJSON_Delete(calls);
    chat_with(&r, two, ",\"parallel_tool_calls\":false}", NULL);
    TAP_OK(r.status == 200 && strstr(r.body, "get_weather") && !strstr(r.body, "get_time") &&
               strstr(r.body, "\"finish_reason\":\"tool_calls\""),
           "parallel_tool_calls false: one call returned");
    chat_with(&r, two, ",\"parallel_tool_calls\":false,\"stream\":true}", "-N");
    calls = sse_tool_calls(r.body, finish, sizeof finish);
    TAP_OK(calls && cJSON_GetArraySize(calls) == 1 && !strstr(r.body, "get_time"),
           "parallel_tool_calls false, streamed: one call");
    cJSON_Delete(calls);
    const char *bad = "{\"messages\":[{\"role\":\"user\",\"content\":\"BADTOOL\"}],\"tools\":[{"
                      "\"type\":\"function\",\"function\":{\"name\":\"get_weather\"}}]";
    chat_with(&r, bad, "}", NULL);
    TAP_OK(r.status == 200 && strstr(r.body, "\"content\":\"<tool_call>\\n{\\\"name\\\"") &&
               !strstr(r.body, "\"tool_calls\"") && strstr(r.body, "\"finish_reason\":\"stop\""),
           "a malformed call: 200, plain content, finish_reason stop");
    chat_with(&r, bad, ",\"stream\":true}", "-N");
    TAP_OK(strstr(r.body, "\"content\":\"<tool_call>") && !strstr(r.body, "\"tool_calls\"") &&
               strstr(r.body, "\"finish_reason\":\"stop\"") && strstr(r.body, "data: [DONE]"),
           "a malformed call streamed: plain content, finish_reason stop");
    chat_with(&r, req, ",\"tool_choice\":\"none\"}", NULL);
    TAP_OK(strstr(r.body, "<tool_call>") && !strstr(r.body, "\"tool_calls\""),
           "tool_choice none: text left as is");
    test_tools_sdk();
}

/* The position of each needle in the body, in order; 0 when one is missing or out of order. */
static int in_order(const char *body, const char *const *needles, int n) {
    const char *at = body;
    for (int i = 0; i < n; i++)
        if (!(at = strstr(at, needles[i]))) return 0;
    return 1;
}

/* /v1/responses over the chat path: the model's <think> block becomes a reasoning item and its
 * <tool_call> block a function_call item, whole and streamed (the event sequence). */
static void test_responses(void) {
    reply r;
    http(&r, "POST", "/v1/responses", "{\"input\":\"THINK\"}", NULL);
    TAP_OK(r.status == 200 &&
               in_order(r.body,
                        (const char *[]){"\"type\":\"reasoning\"",
                                         "\"reasoning_text\",\"text\":\"hmm\\n\"",
                                         "\"type\":\"message\"", "\"text\":\"answer\"",
                                         "\"usage\":{\"input_tokens\""},
                        5),
           "responses: reasoning item, then the message item");
    http(&r, "POST", "/v1/responses", "{\"input\":\"THINK\",\"stream\":true}", "-N");
    TAP_OK(in_order(r.body,
                    (const char *[]){
                        "event: response.created", "event: response.in_progress",
                        "event: response.output_item.added", "event: response.reasoning_text.delta",
                        "event: response.reasoning_text.done", "event: response.output_item.done",
                        "event: response.output_item.added", "event: response.content_part.added",
                        "event: response.output_text.delta", "event: response.output_text.done",
                        "event: response.content_part.done", "event: response.output_item.done",
                        "event: response.completed"},
                    13) &&
               !strstr(r.body, "think>") && !strstr(r.body, "[DONE]"),
           "responses stream: the Responses event sequence, reasoning first");
    const char *tool = "{\"input\":[{\"role\":\"user\",\"content\":\"TOOL\"}],\"tools\":[{"
                       "\"type\":\"function\",\"name\":\"get_weather\",\"parameters\":{}}]";
    char b[512];
    snprintf(b, sizeof b, "%s}", tool);
    http(&r, "POST", "/v1/responses", b, NULL);
    TAP_OK(r.status == 200 && strstr(r.body, "\"type\":\"function_call\"") &&
               strstr(r.body, "\"call_id\":\"call_") &&
               strstr(r.body, "\"name\":\"get_weather\"") &&
               strstr(r.body, "\"arguments\":\"{\\\"city\\\":\\\"Paris\\\"}\"") &&
               !strstr(r.body, "\"type\":\"message\""),
           "responses: a tool call is a function_call item");
    snprintf(b, sizeof b, "%s,\"stream\":true}", tool);
    http(&r, "POST", "/v1/responses", b, "-N");
    TAP_OK(
        in_order(r.body,
                 (const char *[]){"event: response.output_item.added",
                                  "event: response.function_call_arguments.delta",
                                  "event: response.function_call_arguments.done",
                                  "event: response.output_item.done", "event: response.completed"},
                 5),
        "responses stream: function_call item events");
    http(&r, "POST", "/v1/responses", "{\"input\":[{\"type\":\"web_search_call\"}]}", NULL);
    TAP_OK(r.status == 400 && strstr(r.body, "\"param\":\"input[0]\""),
           "responses: an unsupported item type is a 400 naming it");
    http(&r, "POST", "/v1/responses", "{\"input\":\"x\",\"tools\":[{\"type\":\"web_search\"}]}",
         NULL);
    TAP_OK(r.status == 400 && strstr(r.body, "\"param\":\"tools\""),
           "responses: a non-function tool is a 400");
    http(&r, "POST", "/v1/responses",
         "{\"input\":\"x\",\"text\":{\"format\":{\"type\":\"json_object\"}}}", NULL);
    TAP_OK(r.status == 400 && strstr(r.body, "\"param\":\"text.format\""),
           "responses: text.format other than text is a 400");
}

/* While a streamed prompt prefills, the role chunk goes out at once and comments keep it alive. */
static void test_heartbeat(void) {
    reply r;
    http(&r, "POST", "/v1/chat/completions",
         "{\"messages\":[{\"role\":\"user\",\"content\":\"SLOW\"}],\"stream\":true}", "-N -m 1");
    TAP_OK(strstr(r.body, "\"role\":\"assistant\"") && strstr(r.body, "\n: keep-alive\n\n"),
           "SSE heartbeat comments while prefilling");
    wait_running_zero(1.0);
}

static void test_errors(void) {
    reply r;
    http(&r, "GET", "/nope", NULL, NULL);
    TAP_OK(r.status == 404 && strstr(r.body, "\"error\":{") && strstr(r.body, "\"type\""),
           "404 unknown route, error object");
    http(&r, "POST", "/v1/chat/completions",
         "{\"model\":\"gpt-4\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}", NULL);
    TAP_OK(r.status == 404 && strstr(r.body, "\"code\":\"model_not_found\""),
           "404 model_not_found");
    http(&r, "GET", "/v1/chat/completions", NULL, NULL);
    TAP_OK(r.status == 405, "405 wrong method (%d)", r.status);
    http(&r, "POST", "/v1/chat/completions", "{\"messages\":[", NULL);
    TAP_OK(r.status == 400 && strstr(r.body, "\"code\":\"invalid_json\""), "400 malformed JSON");
    http(&r, "POST", "/v1/chat/completions",
         "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"temperature\":\"hot\"}", NULL);
    TAP_OK(r.status == 400 && strstr(r.body, "\"param\":\"temperature\""),
           "400 wrong type names the field");
    http(&r, "POST", "/v1/chat/completions",
         "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"logit_bias\":{\"300\":1}}",
         NULL);
    TAP_OK(r.status == 400 && strstr(r.body, "\"param\":\"logit_bias\"") &&
               strstr(r.body, "out of range"),
           "400 logit_bias token outside the vocabulary");
    http(&r, "POST", "/v1/chat/completions",
         "{\"messages\":[{\"role\":\"user\",\"content\":\"FULL\"}]}", NULL);
    TAP_OK(r.status == 503 && strcasestr(r.headers, "Retry-After: 1"),
           "503 + Retry-After when the queue is full");
    /* A 300-token prompt against a 256-token context. */
    char big[1024];
    snprintf(big, sizeof big, "{\"prompt\":\"%0300d\"}", 0);
    http(&r, "POST", "/v1/completions", big, NULL);
    TAP_OK(r.status == 400 && strstr(r.body, "context_length_exceeded") && strstr(r.body, "256"),
           "400 prompt >= ctx-size names the limit");
    /* Body over the 64 KiB limit of this test server. */
    char *huge = malloc(100000);
    memset(huge, ' ', 99999);
    huge[0] = '{', huge[99998] = '}', huge[99999] = 0;
    http(&r, "POST", "/v1/chat/completions", huge, NULL);
    free(huge);
    TAP_OK(r.status == 413, "413 body over the limit (%d)", r.status);
    huge = malloc(100000);
    memset(huge, ' ', 99999);
    huge[0] = '{', huge[99998] = '}', huge[99999] = 0;
    http(&r, "POST", "/v1/chat/completions", huge, "-H 'Transfer-Encoding: chunked'");
    free(huge);
    TAP_OK(r.status == 413, "413 for a chunked body that grows over the limit (%d)", r.status);
    http(&r, "OPTIONS", "/v1/chat/completions", NULL,
         "-H 'Origin: http://ui.example' -H 'Access-Control-Request-Method: POST' "
         "-H 'Access-Control-Request-Headers: authorization, content-type'");
    TAP_OK((r.status == 204 || r.status == 200) &&
               strcasestr(r.headers, "Access-Control-Allow-Origin: *") &&
               strcasestr(r.headers, "Access-Control-Allow-Methods") &&
               strcasestr(r.headers, "Access-Control-Allow-Headers: authorization, content-type"),
           "CORS preflight");
}

/* A second server (never made ready) that http() talks to until other_stop; NULL if it failed. */
static int g_saved_port;
static srv *other_start(const srv_config *c, const char *what) {
    srv *s;
    rs_err e;
    if (srv_start(&s, c, &e)) {
        TAP_OK(0, "%s server starts: %s", what, e.msg);
        return NULL;
    }
    g_saved_port = g_port;
    g_port = srv_port(s);
    return s;
}

static void other_stop(srv *s) {
    srv_stop(s);
    g_port = g_saved_port;
}

static void test_auth(void) {
    srv_config c = {.host = "127.0.0.1", .api_key = "sekret", .model_name = "fake-model"};
    srv *s = other_start(&c, "auth");
    if (!s) return;
    reply r;
    http(&r, "GET", "/v1/models", NULL, NULL);
    TAP_OK(r.status == 401 && strstr(r.body, "invalid_api_key"), "401 without a key");
    http(&r, "GET", "/v1/models", NULL, "-H 'Authorization: Bearer wrong'");
    TAP_OK(r.status == 401, "401 with a wrong key");
    http(&r, "GET", "/health", NULL, NULL);
    TAP_OK(r.status == 503, "/health needs no key (503 loading here)");
    http(&r, "GET", "/", NULL, NULL);
    TAP_OK(r.status == 200 && strcasestr(r.headers, "Content-Security-Policy: default-src 'none'"),
           "the chat page needs no key and no model, under a CSP");
    http(&r, "GET", "/webui/chat.js", NULL, NULL);
    TAP_OK(r.status == 200 && strcasestr(r.headers, "Content-Type: text/javascript"),
           "its files need no key");
    other_stop(s);
}

/* The web UI's routes: pages, files, what is not there, and --no-webui. */
static void test_webui(void) {
    reply r;
    http(&r, "GET", "/cache", NULL, NULL);
    TAP_OK(r.status == 200 && strstr(r.body, "cache.js") &&
               strcasestr(r.headers, "Content-Type: text/html"),
           "GET /cache is the tree view");
    http(&r, "GET", "/index.html", NULL, "-I");
    TAP_OK(r.status == 200 && strcasestr(r.headers, "X-Content-Type-Options: nosniff"),
           "HEAD /index.html");
    const char *missing[] = {"/webui/", "/webui/nope.js", "/webui/../server.c", "/index.htm"};
    for (size_t i = 0; i < sizeof missing / sizeof missing[0]; i++) {
        http(&r, "GET", missing[i], NULL, "--path-as-is");
        TAP_OK(r.status == 404 && strstr(r.body, "\"not_found\""), "GET %s: 404", missing[i]);
    }
    http(&r, "POST", "/", "{}", NULL);
    TAP_OK(r.status == 405, "POST / is 405");
    srv_config c = {.host = "127.0.0.1", .model_name = "fake-model", .no_webui = 1};
    srv *s = other_start(&c, "no-webui");
    if (!s) return;
    const char *off[] = {"/", "/index.html", "/cache", "/webui/chat.js"};
    for (size_t i = 0; i < sizeof off / sizeof off[0]; i++) {
        http(&r, "GET", off[i], NULL, NULL);
        TAP_OK(r.status == 404 && strstr(r.body, "--no-webui"), "no_webui: GET %s is 404", off[i]);
    }
    http(&r, "GET", "/nothing", NULL, NULL);
    TAP_OK(r.status == 404 && strstr(r.body, "Unknown route"), "no_webui: other paths as before");
    other_stop(s);
}

/* --served-model-name a,b with --any-model-name: every name listed, any name accepted and an
 * unknown one answered as the first. */
static void test_any_model(const srv_backend *be, const srv_model *m) {
    srv_config c = {.host = "127.0.0.1", .model_name = "first, second", .any_model_name = 1};
    srv *s;
    rs_err e;
    if (srv_start(&s, &c, &e)) {
        TAP_OK(0, "any-model server starts: %s", e.msg);
        return;
    }
    srv_set_ready(s, be, m);
    int saved = g_port;
    g_port = srv_port(s);
    reply r;
    http(&r, "GET", "/models", NULL, NULL);
    TAP_OK(r.status == 200 && strstr(r.body, "\"id\":\"first\"") &&
               strstr(r.body, "\"id\":\"second\""),
           "comma list: every served name in /models");
    http(&r, "POST", "/chat/completions",
         "{\"model\":\"second\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}", NULL);
    TAP_OK(r.status == 200 && strstr(r.body, "\"model\":\"second\""), "a served name is echoed");
    http(&r, "POST", "/v1/completions", "{\"model\":\"whatever\",\"prompt\":\"hi\"}", NULL);
    TAP_OK(r.status == 200 && strstr(r.body, "\"model\":\"first\""),
           "any_model_name: an unknown name is served as the first");
    srv_shutdown(s);
    srv_stop(s);
    g_port = saved;
}

/* With a 2 s idle timeout: a non-streamed answer after 3 s of silent "prefill", and a stream
 * with 3 s of nothing but heartbeats, arrive whole (the idle timeout is off while answering). */
static void test_longer_than_idle(void) {
    reply r;
    http(&r, "POST", "/v1/chat/completions",
         "{\"messages\":[{\"role\":\"user\",\"content\":\"SLOW\"}]}", "-m 60");
    TAP_OK(r.status == 200 && strstr(r.body, "Hello world") && r.secs > 2.5,
           "a non-streamed answer after 3 s of prefill outlives the 2 s idle timeout (%d, %.1f s)",
           r.status, r.secs);
    http(&r, "POST", "/v1/completions", "{\"prompt\":\"SLOW\",\"stream\":true}", "-N -m 60");
    TAP_OK(r.status == 200 && strstr(r.body, "data: [DONE]") && r.secs > 2.5,
           "a stream silent for 3 s of prefill (heartbeats only) outlives the 2 s idle timeout "
           "(%d, %.1f s)",
           r.status, r.secs);
    wait_running_zero(30.0); /* slow sanitizer builds: nothing left for the next test */
}

/* Start a request with curl in the background, kill curl after `after_ms`, and check the fake
 * scheduler saw the cancellation within a second. */
static void test_disconnect(const char *what, const char *body, int after_ms) {
    char dpath[600], cmd[1400];
    snprintf(dpath, sizeof dpath, "%s/srv_disc", g_tmp);
    FILE *f = fopen(dpath, "wb");
    fputs(body, f);
    fclose(f);
    int before = atomic_load(&F.cancelled);
    snprintf(cmd, sizeof cmd,
             "curl -s -N -o /dev/null -m %.2f -H 'Content-Type: application/json' "
             "--data-binary @%s http://127.0.0.1:%d/v1/chat/completions",
             after_ms / 1000.0, dpath, g_port);
    if (system(cmd) == -1) TAP_DIAG("system failed");
    double t0 = rs_now();
    int ok = wait_running_zero(1.0);
    TAP_OK(ok && atomic_load(&F.cancelled) == before + 1,
           "disconnect %s: cancelled, nothing running after %.2fs", what, rs_now() - t0);
}

int main(void) {
    const char *tmp = getenv("RADIXSERVE_TMP");
    snprintf(g_tmp, sizeof g_tmp, "%s", tmp ? tmp : "/tmp");
    srv_config c = {.host = "127.0.0.1",
                    .port = 0,
                    .model_name = "fake-model",
                    .max_body_bytes = 65536,
                    .heartbeat_ms = 200,
                    .idle_timeout_s = 2}; /* answers longer than this must not be cut */
    srv *s;
    rs_err e;
    if (!TAP_OK(srv_start(&s, &c, &e) == 0, "server starts on a free port")) return tap_done();
    g_port = srv_port(s);
    test_loading(s);
    /* A small template that, like Qwen3's, renders tools with the <tool_call> format and
     * enable_thinking false as an empty think block: the chat format finds both markers. */
    tok_config tc = {0};
    tc.chat_template = "{% for m in messages %}{{ m.content }}\n{% endfor %}{% if tools %}"
                       "{% for t in tools %}{{ t.function.name }}\n{% endfor %}<tool_call>"
                       "</tool_call>\n{% endif %}{% if add_generation_prompt and enable_thinking "
                       "is defined and not enable_thinking %}<think>\n\n</think>\n\n{% endif %}";
    chat_format fmt;
    TAP_OK(chat_format_init(&fmt, &tc, NULL, &e) == 0 && fmt.think.open && fmt.tool.open,
           "the fake model's chat format has think and tool-call markers");
    srv_backend be = {
        NULL,       fake_submit, fake_next,   fake_cancel,     fake_free, fake_event_free,
        fake_stats, fake_encode, fake_decode, fake_cache_json, NULL,      NULL,
        NULL,       NULL,        NULL};
    srv_model m = {.chat = &fmt, .ctx_size = 256, .vocab_size = 256, .prefix_cache = 1};
    m.defaults.temperature = 1, m.defaults.top_p = 1, m.defaults.repetition_penalty = 1;
    srv_set_ready(s, &be, &m);
    test_basic();
    test_stream();
    test_think();
    test_tools();
    test_responses();
    test_heartbeat();
    test_errors();
    test_auth();
    test_any_model(&be, &m);
    test_longer_than_idle();
    test_webui();
    test_disconnect("streaming mid-prefill",
                    "{\"messages\":[{\"role\":\"user\",\"content\":\"SLOW\"}],\"stream\":true}",
                    500);
    test_disconnect("non-streaming mid-prefill",
                    "{\"messages\":[{\"role\":\"user\",\"content\":\"SLOW\"}]}", 500);
    test_disconnect("streaming mid-decode",
                    "{\"messages\":[{\"role\":\"user\",\"content\":\"LONG\"}],\"stream\":true}",
                    800);
    test_disconnect("non-streaming mid-decode",
                    "{\"messages\":[{\"role\":\"user\",\"content\":\"LONG\"}]}", 800);
    reply r;
    http(&r, "GET", "/metrics", NULL, NULL);
    TAP_OK(strstr(r.body, "radixserve_requests_total{status=\"499\"} 5") != NULL,
           "/metrics counts the five disconnects as 499");
    srv_shutdown(s);
    srv_stop(s);
    chat_format_free(&fmt);
    TAP_OK(atomic_load(&F.running) == 0, "nothing running after stop");
    return tap_done();
}
