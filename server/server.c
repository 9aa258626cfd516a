/*
 * server.c — the libmicrohttpd daemon: body collection with a size limit, routing, API key,
 * CORS, the small routes (/health, /v1/models, /metrics, /v1/cache, /tokenize, /detokenize), the
 * per-request log line, and shutdown. Generation routes live in srv_gen.c.
 */
#include <arpa/inet.h>
#include <math.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "server/srv_int.h"

/* ---------------------------------------------------------------- replies */

void srv_add_common_headers(srv *s, struct MHD_Response *r) {
    MHD_add_response_header(r, "Access-Control-Allow-Origin", s->cors_origin);
    if (strcmp(s->cors_origin, "*") != 0) MHD_add_response_header(r, "Vary", "Origin");
}

enum MHD_Result srv_reply(srv_conn *c, struct MHD_Connection *conn, int status, char *body,
                          const char *content_type) {
    if (!body) {
        status = 500;
        body = strdup("{\"error\":{\"message\":\"out of memory\",\"type\":\"server_error\","
                      "\"param\":null,\"code\":null}}");
        if (!body) return MHD_NO;
    }
    struct MHD_Response *r =
        MHD_create_response_from_buffer(strlen(body), body, MHD_RESPMEM_MUST_FREE);
    if (!r) {
        free(body);
        return MHD_NO;
    }
    MHD_add_response_header(r, "Content-Type", content_type ? content_type : "application/json");
    srv_add_common_headers(c->s, r);
    if (c->close) MHD_add_response_header(r, "Connection", "close");
    if (status == 503) {
        char ra[16];
        snprintf(ra, sizeof ra, "%d", c->s->cfg.retry_after_s);
        MHD_add_response_header(r, "Retry-After", ra);
    }
    c->status = status;
    enum MHD_Result ret = MHD_queue_response(conn, (unsigned)status, r);
    MHD_destroy_response(r);
    return ret;
}

enum MHD_Result srv_reply_error(srv_conn *c, struct MHD_Connection *conn, const api_error *err) {
    return srv_reply(c, conn, err->status, api_error_json(err), NULL);
}

static enum MHD_Result reply_json(srv_conn *c, struct MHD_Connection *conn, cJSON *j) {
    return srv_reply(c, conn, 200, api_print(j), NULL);
}

/* ---------------------------------------------------------------- auth */

/* Constant time in the length of the expected key: every byte is compared whatever the input. */
static int key_matches(const char *expected, const char *given) {
    size_t n = strlen(expected), m = strlen(given);
    unsigned diff = (unsigned)(n ^ m);
    for (size_t i = 0; i < n; i++)
        diff |= (unsigned char)expected[i] ^ (unsigned char)given[i < m ? i : 0];
    return diff == 0;
}

static int authorized(srv *s, struct MHD_Connection *conn) {
    if (!s->api_key[0]) return 1;
    const char *h = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Authorization");
    if (!h || strncasecmp(h, "Bearer ", 7) != 0) return 0;
    h += 7;
    while (*h == ' ') h++;
    return key_matches(s->api_key, h);
}

/* ---------------------------------------------------------------- served names */

/* Split the comma list into names (spaces around each trimmed, empty ones skipped). */
static int split_names(srv *s, const char *list) {
    size_t n = strlen(list);
    s->names = calloc(n / 2 + 2, sizeof *s->names);
    if (!s->names) return RS_ENOMEM;
    for (const char *p = list; *p;) {
        const char *end = strchr(p, ',');
        if (!end) end = p + strlen(p);
        const char *a = p, *b = end;
        while (a < b && *a == ' ') a++;
        while (b > a && b[-1] == ' ') b--;
        if (b > a && !(s->names[s->n_names++] = strndup(a, (size_t)(b - a)))) return RS_ENOMEM;
        p = *end ? end + 1 : end;
    }
    if (s->n_names == 0 && !(s->names[s->n_names++] = strdup("model"))) return RS_ENOMEM;
    return 0;
}

const char *srv_model_name(const srv *s, const char *asked) {
    for (int i = 0; asked && i < s->n_names; i++)
        if (!strcmp(asked, s->names[i])) return s->names[i];
    return s->names[0];
}

int srv_resolve_model(const srv *s, const char *asked, const eng_lora **lora, api_error *err) {
    *lora = NULL;
    if (!asked || !asked[0]) return 0; /* "" = the default */
    for (int i = 0; i < s->n_names; i++)
        if (!strcmp(asked, s->names[i])) return 0;
    if (s->be.lora_acquire && !s->be.lora_acquire(s->be.ctx, asked, lora, NULL)) return 0;
    if (s->cfg.any_model_name) return 0;
    return api_errorf(err, 404, "invalid_request_error", "model", "model_not_found",
                      "The model '%s' does not exist (this server serves '%s')",
                      RS_CLIP(asked, 200), RS_CLIP(s->model_name, 200));
}

/* ---------------------------------------------------------------- small routes */

static enum MHD_Result route_health(srv_conn *c, struct MHD_Connection *conn) {
    int ready = atomic_load_explicit(&c->s->ready, memory_order_acquire);
    return srv_reply(c, conn, ready ? 200 : 503,
                     strdup(ready ? "{\"status\":\"ok\"}" : "{\"status\":\"loading\"}"), NULL);
}

static cJSON *model_json(srv *s, const char *name) {
    cJSON *m = cJSON_CreateObject();
    cJSON_AddStringToObject(m, "id", name);
    cJSON_AddStringToObject(m, "object", "model");
    cJSON_AddNumberToObject(m, "created", 0);
    cJSON_AddStringToObject(m, "owned_by", "radixserve");
    cJSON_AddNumberToObject(m, "max_model_len", s->model.ctx_size);
    if (s->model.quantization) cJSON_AddStringToObject(m, "quantization", s->model.quantization);
    if (s->model.format) cJSON_AddStringToObject(m, "format", s->model.format);
    return m;
}

/* A LoRA adapter's entry: the base model's, with its own id and `parent` the base model's. */
static cJSON *adapter_json(srv *s, const char *name) {
    cJSON *m = model_json(s, name);
    cJSON_AddStringToObject(m, "parent", s->names[0]);
    return m;
}

static enum MHD_Result route_models(srv_conn *c, struct MHD_Connection *conn, const char *url) {
    srv *s = c->s;
    if (!strcmp(url, "/v1/models")) {
        cJSON *o = cJSON_CreateObject(), *data = cJSON_AddArrayToObject(o, "data");
        cJSON_AddStringToObject(o, "object", "list");
        for (int i = 0; i < s->n_names; i++) cJSON_AddItemToArray(data, model_json(s, s->names[i]));
        char list[ENG_LORA_MAX][ENG_LORA_NAME_MAX]; /* 8 KB on the connection's stack */
        int n = s->be.lora_names ? s->be.lora_names(s->be.ctx, list, ENG_LORA_MAX) : 0;
        for (int i = 0; i < n; i++) cJSON_AddItemToArray(data, adapter_json(s, list[i]));
        return reply_json(c, conn, o);
    }
    const char *name = url + strlen("/v1/models/");
    api_error err;
    const eng_lora *lora;
    if (srv_resolve_model(s, name, &lora, &err)) return srv_reply_error(c, conn, &err);
    cJSON *m = lora ? adapter_json(s, eng_lora_name(lora)) : model_json(s, srv_model_name(s, name));
    eng_lora_release(lora);
    return reply_json(c, conn, m);
}

static enum MHD_Result route_metrics(srv_conn *c, struct MHD_Connection *conn) {
    srv *s = c->s;
    sched_stats st;
    int ready = atomic_load_explicit(&s->ready, memory_order_acquire);
    if (ready) s->be.get_stats(s->be.ctx, &st);
    return srv_reply(c, conn, 200, srv_metrics_text(&s->metrics, ready ? &st : NULL),
                     "text/plain; version=0.0.4");
}

/* The cache's counters (the scheduler's statistics snapshot). */
static cJSON *cache_summary(srv *s) {
    sched_stats st;
    s->be.get_stats(s->be.ctx, &st);
    cJSON *o = cJSON_CreateObject(), *b = cJSON_AddObjectToObject(o, "blocks");
    cJSON_AddBoolToObject(o, "prefix_cache", s->model.prefix_cache);
    cJSON_AddNumberToObject(o, "block_size", st.block_size);
    cJSON_AddNumberToObject(b, "total", st.kv_blocks_total);
    cJSON_AddNumberToObject(b, "used", st.kv_blocks_used);
    cJSON_AddNumberToObject(b, "cached", st.kv_blocks_cached);
    cJSON_AddNumberToObject(b, "free", st.kv_blocks_free);
    cJSON_AddNumberToObject(b, "pinned", st.kv_blocks_pinned);
    cJSON_AddNumberToObject(o, "nodes", (double)st.cache_nodes);
    cJSON_AddNumberToObject(o, "lookups", (double)st.cache_lookups);
    cJSON_AddNumberToObject(o, "hit_tokens", (double)st.cache_hit_tokens);
    cJSON_AddNumberToObject(o, "miss_tokens", (double)st.cache_miss_tokens);
    int64_t asked = st.cache_hit_tokens + st.cache_miss_tokens;
    cJSON_AddNumberToObject(o, "hit_ratio", asked ? (double)st.cache_hit_tokens / asked : 0.0);
    cJSON_AddNumberToObject(o, "evicted_blocks", (double)st.cache_evicted_blocks);
    cJSON_AddNumberToObject(o, "running", st.running);
    cJSON_AddNumberToObject(o, "waiting", st.waiting);
    return o;
}

#define CACHE_TOKENS_DEFAULT 16   /* tokens shown per edge unless ?tokens=N says otherwise */
#define CACHE_TOKENS_MAX     4096 /* a debug view, not a dump of every prompt */

/* ?tokens=N: how many tokens of each edge to show; -1 when malformed or out of range. */
static int cache_tokens_arg(struct MHD_Connection *conn) {
    const char *v = MHD_lookup_connection_value(conn, MHD_GET_ARGUMENT_KIND, "tokens");
    if (!v) return CACHE_TOKENS_DEFAULT;
    char *end;
    long x = strtol(v, &end, 10);
    return *v && !*end && x >= 0 && x <= CACHE_TOKENS_MAX ? (int)x : -1;
}

/* Each node's shown tokens as text too: the view is read by people. */
static void add_node_text(srv *s, cJSON *nodes) {
    cJSON *n, *t;
    cJSON_ArrayForEach(n, nodes) {
        cJSON *toks = cJSON_GetObjectItemCaseSensitive(n, "tokens");
        int k = 0, len = cJSON_GetArraySize(toks);
        int32_t *ids = len ? malloc((size_t)len * sizeof *ids) : NULL;
        if (!ids) continue;
        cJSON_ArrayForEach(t, toks) ids[k++] = (int32_t)t->valuedouble;
        char *text = NULL;
        rs_err e;
        if (s->be.decode(s->be.ctx, ids, k, 0, &text, &e) == 0)
            cJSON_AddStringToObject(n, "text", text);
        free(text);
        free(ids);
    }
}

/* The radix tree as the scheduler sees it between two steps (NULL with *err set on failure). */
static cJSON *cache_tree(srv *s, int max_tokens, api_error *err) {
    char *json = NULL;
    rs_err e = {0};
    int rc = s->be.cache_json(s->be.ctx, max_tokens, &json, &e);
    if (rc) {
        if (rc == RS_ECANCELED)
            api_errorf(err, 503, "server_error", NULL, "shutting_down", "%s", e.msg);
        else
            api_errorf(err, 500, "server_error", NULL, NULL, "%s", e.msg);
        return NULL;
    }
    cJSON *tree = cJSON_Parse(json);
    free(json);
    if (!tree) {
        api_errorf(err, 500, "server_error", NULL, NULL, "the cache snapshot is not valid JSON");
        return NULL;
    }
    add_node_text(s, cJSON_GetObjectItemCaseSensitive(tree, "nodes"));
    return tree;
}

/* GET /v1/cache[?tokens=N]: the counters, and the tree itself (nodes in pre-order with their
 * token counts, pins, last access and first N tokens) when the backend has one. */
static enum MHD_Result route_cache(srv_conn *c, struct MHD_Connection *conn) {
    srv *s = c->s;
    api_error err;
    int max_tokens = cache_tokens_arg(conn);
    if (max_tokens < 0) {
        api_errorf(&err, 400, "invalid_request_error", "tokens", "invalid_value",
                   "tokens must be an integer from 0 to %d", CACHE_TOKENS_MAX);
        return srv_reply_error(c, conn, &err);
    }
    cJSON *tree = NULL;
    if (s->be.cache_json && !(tree = cache_tree(s, max_tokens, &err)))
        return srv_reply_error(c, conn, &err);
    cJSON *o = cache_summary(s);
    if (tree) cJSON_AddItemToObject(o, "tree", tree);
    return reply_json(c, conn, o);
}

static enum MHD_Result route_tokenize(srv_conn *c, struct MHD_Connection *conn) {
    srv *s = c->s;
    api_tokenize_request t;
    api_error err;
    rs_err e = {0};
    char *text = NULL;
    rs_ivec ids = {0};
    if (api_parse_tokenize(api_buf_str(&c->body), c->body.n, &t, &err))
        return srv_reply_error(c, conn, &err);
    const char *param = t.tpl ? "messages" : "prompt";
    int rc = t.tpl ? chat_format_render(s->model.chat, t.tpl, &text, NULL, &e) : 0;
    const char *src = t.tpl ? text : t.prompt;
    if (!rc)
        rc = s->be.encode(s->be.ctx, src, strlen(src), t.add_special ? TOK_ADD_SPECIAL : 0, &ids,
                          &e);
    free(text);
    if (rc) {
        api_tokenize_request_free(&t);
        rs_ivec_free(&ids);
        api_errorf(&err, 400, "invalid_request_error", param, NULL, "%s", e.msg);
        return srv_reply_error(c, conn, &err);
    }
    cJSON *o = cJSON_CreateObject(), *arr = cJSON_AddArrayToObject(o, "tokens");
    for (int i = 0; i < ids.n; i++) {
        if (!t.with_pieces) {
            cJSON_AddItemToArray(arr, cJSON_CreateNumber(ids.v[i]));
            continue;
        }
        cJSON *tk = cJSON_CreateObject();
        char *piece = srv_token_text(s, ids.v[i]);
        cJSON_AddNumberToObject(tk, "id", ids.v[i]);
        cJSON_AddStringToObject(tk, "piece", piece ? piece : "");
        free(piece);
        cJSON_AddItemToArray(arr, tk);
    }
    cJSON_AddNumberToObject(o, "count", ids.n);
    cJSON_AddNumberToObject(o, "max_model_len", s->model.ctx_size);
    rs_ivec_free(&ids);
    api_tokenize_request_free(&t);
    return reply_json(c, conn, o);
}

static enum MHD_Result route_detokenize(srv_conn *c, struct MHD_Connection *conn) {
    srv *s = c->s;
    api_error err;
    rs_err e = {0};
    int32_t *ids;
    int n;
    char *text = NULL;
    if (api_parse_detokenize(api_buf_str(&c->body), c->body.n, &ids, &n, &err))
        return srv_reply_error(c, conn, &err);
    int rc = 0;
    for (int i = 0; i < n && !rc; i++)
        if (ids[i] >= s->model.vocab_size)
            rc = rs_errf(&e, RS_EINVAL, "token id %d is out of range (vocabulary: %d)", ids[i],
                         s->model.vocab_size);
    if (!rc) rc = s->be.decode(s->be.ctx, ids, n, 0, &text, &e);
    free(ids);
    if (rc) {
        api_errorf(&err, 400, "invalid_request_error", "tokens", NULL, "%s", e.msg);
        return srv_reply_error(c, conn, &err);
    }
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "prompt", text);  /* vLLM's name */
    cJSON_AddStringToObject(o, "content", text); /* llama.cpp's */
    free(text);
    return reply_json(c, conn, o);
}

/* ---------------------------------------------------------------- routing */

typedef enum MHD_Result (*route_fn)(srv_conn *c, struct MHD_Connection *conn);

typedef struct route {
    const char *path; /* exact path, or a prefix when it ends with '/' (but "/" is exact) */
    const char *method;
    route_fn fn;     /* NULL: the models route (takes the url) */
    int needs_model; /* 503 while loading */
    int public;      /* no API key needed */
    int alias;       /* also answered without its "/v1" (clients whose base URL lacks it) */
} route;

static const route ROUTES[] = {
    {"/health", "GET", route_health, 0, 1, 0},
    {"/metrics", "GET", route_metrics, 0, 0, 0},
    {"/v1/models", "GET", NULL, 1, 0, 1},
    {"/v1/models/", "GET", NULL, 1, 0, 1},
    {"/v1/cache", "GET", route_cache, 1, 0, 0},
    {"/v1/chat/completions", "POST", srv_chat, 1, 0, 1},
    {"/v1/completions", "POST", srv_completions, 1, 0, 1},
    {"/v1/embeddings", "POST", srv_embeddings, 1, 0, 1},
    {"/v1/responses", "POST", srv_responses, 1, 0, 1},
    {"/v1/load_lora_adapter", "POST", srv_lora_load, 1, 0, 1},
    {"/v1/unload_lora_adapter", "POST", srv_lora_unload, 1, 0, 1},
    {"/tokenize", "POST", route_tokenize, 1, 0, 0},
    {"/detokenize", "POST", route_detokenize, 1, 0, 0},
    /* the web UI (srv_static.c): pages and their files, public */
    {"/", "GET", srv_static, 0, 1, 0},
    {"/index.html", "GET", srv_static, 0, 1, 0},
    {"/cache", "GET", srv_static, 0, 1, 0},
    {"/webui/", "GET", srv_static, 0, 1, 0},
};

static int path_matches(const char *p, const char *url) {
    size_t n = strlen(p);
    return n > 1 && p[n - 1] == '/' ? (!strncmp(url, p, n) && url[n]) : !strcmp(url, p);
}

/* The route of url; *canon is url with "/v1" put back when an alias was used. */
static const route *find_route(const char *url, char *canon, size_t cap) {
    for (size_t i = 0; i < sizeof ROUTES / sizeof ROUTES[0]; i++) {
        const route *rt = &ROUTES[i];
        if (path_matches(rt->path, url) || (rt->alias && path_matches(rt->path + 3, url))) {
            snprintf(canon, cap, "%s%s", path_matches(rt->path, url) ? "" : "/v1", url);
            return rt;
        }
    }
    return NULL;
}

static enum MHD_Result preflight(srv_conn *c, struct MHD_Connection *conn) {
    struct MHD_Response *r = MHD_create_response_from_buffer(0, NULL, MHD_RESPMEM_PERSISTENT);
    if (!r) return MHD_NO;
    srv_add_common_headers(c->s, r);
    MHD_add_response_header(r, "Access-Control-Allow-Methods", "GET, POST, OPTIONS");
    const char *want =
        MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Access-Control-Request-Headers");
    MHD_add_response_header(r, "Access-Control-Allow-Headers",
                            want ? want : "Authorization, Content-Type");
    MHD_add_response_header(r, "Access-Control-Max-Age", "86400");
    c->status = 204;
    enum MHD_Result ret = MHD_queue_response(conn, 204, r);
    MHD_destroy_response(r);
    return ret;
}

static enum MHD_Result dispatch(srv_conn *c, struct MHD_Connection *conn, const char *url,
                                const char *method) {
    srv *s = c->s;
    api_error err;
    if (c->sock && c->sock->reserve) { /* beyond max_conns: a fast answer, then close */
        c->close = 1;
        if (!strcmp(url, "/health")) return route_health(c, conn);
        api_errorf(&err, 503, "server_error", NULL, "too_many_connections",
                   "The server is at its limit of %d connections; retry shortly", s->cfg.max_conns);
        return srv_reply_error(c, conn, &err);
    }
    char canon[256];
    if (!strcmp(method, "OPTIONS")) return preflight(c, conn);
    const route *rt = strlen(url) < sizeof canon - 3 ? find_route(url, canon, sizeof canon) : NULL;
    if (!rt) {
        api_errorf(&err, 404, "invalid_request_error", NULL, "not_found", "Unknown route %s %s",
                   RS_CLIP(method, 16), RS_CLIP(url, 200));
        return srv_reply_error(c, conn, &err);
    }
    if (!rt->public && !authorized(s, conn)) {
        api_errorf(&err, 401, "authentication_error", NULL, "invalid_api_key",
                   "Missing or invalid API key (send 'Authorization: Bearer KEY')");
        return srv_reply_error(c, conn, &err);
    }
    if (strcmp(method, rt->method) != 0 && !(strcmp(method, "HEAD") == 0 && rt->method[0] == 'G')) {
        api_errorf(&err, 405, "invalid_request_error", NULL, "method_not_allowed",
                   "%s is not allowed on %s (use %s)", RS_CLIP(method, 16), RS_CLIP(url, 200),
                   rt->method);
        return srv_reply_error(c, conn, &err);
    }
    if (c->too_big) {
        api_errorf(&err, 413, "invalid_request_error", NULL, "request_too_large",
                   "The request body is larger than the limit of %zu bytes", s->cfg.max_body_bytes);
        return srv_reply_error(c, conn, &err);
    }
    if (atomic_load(&s->stopping)) {
        api_errorf(&err, 503, "server_error", NULL, "shutting_down", "The server is shutting down");
        return srv_reply_error(c, conn, &err);
    }
    if (rt->needs_model && !atomic_load_explicit(&s->ready, memory_order_acquire)) {
        api_errorf(&err, 503, "server_error", NULL, "model_loading", "The model is still loading");
        return srv_reply_error(c, conn, &err);
    }
    return rt->fn ? rt->fn(c, conn) : route_models(c, conn, canon);
}

/* The body limit is checked on Content-Length before reading (answered at once), and on the bytes
 * actually received (chunked uploads). */
static int declared_too_big(srv *s, struct MHD_Connection *conn) {
    const char *cl = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Content-Length");
    return cl && strtoull(cl, NULL, 10) > s->cfg.max_body_bytes;
}

/* ---------------------------------------------------------------- connection limits */

static int idle_timeout_of(const srv *s, const srv_sock *k) {
    return k && k->reserve ? SRV_RESERVE_TIMEOUT_S : s->cfg.idle_timeout_s;
}

/* The connection is ready for a request (accepted, or the last answer finished): it must be
 * read completely within the request timeout. */
static void arm_deadline(srv *s, srv_sock *k) {
    if (!k) return;
    int secs = k->reserve ? SRV_RESERVE_TIMEOUT_S : s->cfg.request_timeout_s;
    pthread_mutex_lock(&s->conns_mu);
    k->deadline = rs_now() + secs;
    pthread_mutex_unlock(&s->conns_mu);
}

static void disarm_deadline(srv *s, srv_sock *k) {
    if (!k) return;
    pthread_mutex_lock(&s->conns_mu);
    k->deadline = 0;
    pthread_mutex_unlock(&s->conns_mu);
}

static void on_connection(void *cls, struct MHD_Connection *conn, void **socket_context,
                          enum MHD_ConnectionNotificationCode code) {
    srv *s = cls;
    srv_sock *k = *socket_context;
    if (code == MHD_CONNECTION_NOTIFY_CLOSED) {
        if (!k) return;
        pthread_mutex_lock(&s->conns_mu);
        if (k->prev)
            k->prev->next = k->next;
        else
            s->conns = k->next;
        if (k->next) k->next->prev = k->prev;
        s->n_conns--;
        pthread_mutex_unlock(&s->conns_mu);
        free(k);
        *socket_context = NULL;
        return;
    }
    const union MHD_ConnectionInfo *fd =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
    if (!fd || !(k = calloc(1, sizeof *k))) return; /* served without the watchdog */
    k->fd = fd->connect_fd;
    pthread_mutex_lock(&s->conns_mu);
    k->reserve = ++s->n_conns > s->cfg.max_conns;
    k->next = s->conns;
    if (s->conns) s->conns->prev = k;
    s->conns = k;
    pthread_mutex_unlock(&s->conns_mu);
    *socket_context = k;
    arm_deadline(s, k);
    if (k->reserve)
        MHD_set_connection_option(conn, MHD_CONNECTION_OPTION_TIMEOUT,
                                  (unsigned)SRV_RESERVE_TIMEOUT_S);
}

/* Shuts (without closing: the descriptor stays MHD's) every connection past its deadline; its
 * thread then reads end-of-file and MHD closes it. Scans every 100 ms. */
static void *watchdog_main(void *arg) {
    srv *s = arg;
    while (!atomic_load(&s->watchdog_end)) {
        usleep(100 * 1000);
        double now = rs_now();
        pthread_mutex_lock(&s->conns_mu);
        for (srv_sock *k = s->conns; k; k = k->next)
            if (k->deadline > 0 && now > k->deadline) {
                shutdown(k->fd, SHUT_RDWR);
                k->deadline = 0;
            }
        pthread_mutex_unlock(&s->conns_mu);
    }
    return NULL;
}

/* The request is read: answer it with MHD's idle timeout off (the thread blocks in the handler
 * for a whole generation, and MHD would otherwise cut the answer it queues after that), then
 * back on for sending the answer (a stream writes at least every heartbeat) and the keep-alive
 * wait (setting it restarts MHD's idle clock). */
static enum MHD_Result answer(srv_conn *c, struct MHD_Connection *conn, const char *url,
                              const char *method) {
    disarm_deadline(c->s, c->sock);
    MHD_set_connection_option(conn, MHD_CONNECTION_OPTION_TIMEOUT, 0u);
    enum MHD_Result r = dispatch(c, conn, url, method);
    MHD_set_connection_option(conn, MHD_CONNECTION_OPTION_TIMEOUT,
                              (unsigned)idle_timeout_of(c->s, c->sock));
    return r;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_data_size, void **con_cls) {
    srv *s = cls;
    srv_conn *c = *con_cls;
    (void)version;
    if (!c) {
        c = calloc(1, sizeof *c);
        if (!c) return MHD_NO;
        c->s = s;
        const union MHD_ConnectionInfo *sc =
            MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
        c->sock = sc ? sc->socket_context : NULL;
        c->t0 = rs_now();
        snprintf(c->method, sizeof c->method, "%s", method);
        snprintf(c->path, sizeof c->path, "%s", url);
        *con_cls = c;
        if (declared_too_big(s, conn)) {
            c->too_big = 1;
            return answer(c, conn, url, method);
        }
        return MHD_YES;
    }
    if (*upload_data_size) {
        if (!c->too_big && c->body.n + *upload_data_size > s->cfg.max_body_bytes) c->too_big = 1;
        if (!c->too_big && api_buf_append(&c->body, upload_data, *upload_data_size)) return MHD_NO;
        *upload_data_size = 0;
        return MHD_YES;
    }
    if (c->status) return MHD_YES; /* already answered (413 on Content-Length) */
    return answer(c, conn, url, method);
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe) {
    srv *s = cls;
    srv_conn *c = *con_cls;
    if (!c) return;
    (void)conn;
    arm_deadline(s, c->sock); /* the connection now waits for its next request */
    if (toe != MHD_REQUEST_TERMINATED_COMPLETED_OK && (c->status == 0 || c->status == 200))
        c->status = 499; /* the client left before the answer was complete */
    srv_metrics_request(&s->metrics, c->status, c->prompt_tokens, c->cached_tokens,
                        c->completion_tokens);
    if (s->cfg.log_requests)
        fprintf(stderr, "%s %s %d prompt=%d cached=%d completion=%d %.1fms\n", c->method, c->path,
                c->status, c->prompt_tokens, c->cached_tokens, c->completion_tokens,
                (rs_now() - c->t0) * 1e3);
    api_buf_free(&c->body);
    free(c);
    *con_cls = NULL;
}

/* ---------------------------------------------------------------- lifecycle */

static int parse_addr(const char *host, int port, struct sockaddr_storage *ss, int *v6, rs_err *e) {
    memset(ss, 0, sizeof *ss);
    if (!strcmp(host, "localhost")) host = "127.0.0.1";
    struct sockaddr_in *a4 = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)ss;
    if (inet_pton(AF_INET, host, &a4->sin_addr) == 1) {
        a4->sin_family = AF_INET;
        a4->sin_port = htons((uint16_t)port);
        *v6 = 0;
        return 0;
    }
    if (inet_pton(AF_INET6, host, &a6->sin6_addr) == 1) {
        a6->sin6_family = AF_INET6;
        a6->sin6_port = htons((uint16_t)port);
        *v6 = 1;
        return 0;
    }
    return rs_errf(e, RS_EINVAL, "--host '%s' is not an IPv4 or IPv6 address", host);
}

static char *dup_or(const char *s, const char *dflt) {
    return strdup(s && s[0] ? s : dflt);
}

void srv_config_default(srv_config *c) {
    memset(c, 0, sizeof *c);
    c->port = 8080;
    c->max_body_bytes = 16u << 20;
    c->default_max_tokens = 2048;
    c->retry_after_s = 1;
    c->heartbeat_ms = 1000;
    c->idle_timeout_s = 10;
    c->request_timeout_s = 30;
    c->max_conns = 512;
    c->conn_reserve = 16;
    c->max_conns_per_client = 64;
}

/* Zero numeric fields take srv_config_default's values (port 0 stays: any free port). */
static void fill_defaults(srv_config *c) {
    srv_config d;
    srv_config_default(&d);
#define FILL(f)                                                                                    \
    if (!c->f) c->f = d.f
    FILL(max_body_bytes);
    FILL(default_max_tokens);
    FILL(retry_after_s);
    FILL(heartbeat_ms);
    FILL(idle_timeout_s);
    FILL(request_timeout_s);
    FILL(max_conns);
    FILL(conn_reserve);
    FILL(max_conns_per_client);
#undef FILL
}

static int check_limits(const srv_config *c, rs_err *e) {
    if (c->idle_timeout_s < 0 || c->request_timeout_s < 0 || c->max_conns < 0 ||
        c->conn_reserve < 0 || c->max_conns_per_client < 0 || c->max_conns > (1 << 20) ||
        c->conn_reserve > (1 << 20))
        return rs_errf(e, RS_EINVAL, "connection limits must be positive");
    if (c->idle_timeout_s && (long)c->idle_timeout_s * 1000 < 2L * c->heartbeat_ms)
        return rs_errf(e, RS_EINVAL,
                       "--idle-timeout %d s is shorter than two stream heartbeats (%d ms): "
                       "streams would be cut",
                       c->idle_timeout_s, c->heartbeat_ms);
    return 0;
}

int srv_start(srv **out, const srv_config *c, rs_err *e) {
    struct sockaddr_storage ss;
    int v6 = 0;
    *out = NULL;
    if (c->port < 0 || c->port > 65535)
        return rs_errf(e, RS_EINVAL, "--port %d is out of range", c->port);
    if (parse_addr(c->host ? c->host : "127.0.0.1", c->port, &ss, &v6, e)) return RS_EINVAL;
    srv_config cfg = *c;
    fill_defaults(&cfg);
    if (check_limits(&cfg, e)) return RS_EINVAL;
    srv *s = calloc(1, sizeof *s);
    if (!s) return rs_errf(e, RS_ENOMEM, "out of memory");
    pthread_mutex_init(&s->conns_mu, NULL);
    s->cfg = cfg;
    srv_metrics_init(&s->metrics); /* first: srv_stop frees them on every path below */
    srv_store_init(&s->store);
    s->host = dup_or(c->host, "127.0.0.1");
    s->api_key = dup_or(c->api_key, "");
    s->cors_origin = dup_or(c->cors_origin, "*");
    s->model_name = dup_or(c->model_name, "model");
    if (!s->host || !s->api_key || !s->cors_origin || !s->model_name ||
        split_names(s, s->model_name)) {
        srv_stop(s);
        return rs_errf(e, RS_ENOMEM, "out of memory");
    }
    snprintf(s->fingerprint, sizeof s->fingerprint, "fp_rs%08lx", (unsigned long)time(NULL));
    unsigned flags = MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ITC |
                     MHD_USE_POLL | (v6 ? MHD_USE_IPv6 : 0);
    s->daemon = MHD_start_daemon(
        flags, (uint16_t)c->port, NULL, NULL, on_request, s, MHD_OPTION_SOCK_ADDR,
        (struct sockaddr *)&ss, MHD_OPTION_NOTIFY_COMPLETED, on_completed, s,
        MHD_OPTION_NOTIFY_CONNECTION, on_connection, s, MHD_OPTION_CONNECTION_LIMIT,
        (unsigned)(s->cfg.max_conns + s->cfg.conn_reserve), MHD_OPTION_PER_IP_CONNECTION_LIMIT,
        (unsigned)s->cfg.max_conns_per_client, MHD_OPTION_CONNECTION_MEMORY_LIMIT,
        (size_t)(128 * 1024), MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)s->cfg.idle_timeout_s,
        MHD_OPTION_LISTENING_ADDRESS_REUSE, 1u, MHD_OPTION_END);
    if (!s->daemon) {
        rs_errf(e, RS_EIO, "cannot listen on %s:%d (address in use or not allowed)", s->host,
                c->port);
        srv_stop(s);
        return RS_EIO;
    }
    if (pthread_create(&s->watchdog, NULL, watchdog_main, s)) {
        srv_stop(s);
        return rs_errf(e, RS_ENOMEM, "cannot start the connection watchdog thread");
    }
    s->watchdog_started = 1;
    *out = s;
    return 0;
}

int srv_port(const srv *s) {
    const union MHD_DaemonInfo *i = MHD_get_daemon_info(s->daemon, MHD_DAEMON_INFO_BIND_PORT);
    return i ? i->port : s->cfg.port;
}

void srv_set_ready(srv *s, const srv_backend *be, const srv_model *m) {
    s->be = *be;
    s->model = *m;
    atomic_store_explicit(&s->ready, 1, memory_order_release);
}

void srv_shutdown(srv *s) {
    atomic_store(&s->stopping, 1);
    if (!s->daemon) return;
    MHD_socket fd = MHD_quiesce_daemon(s->daemon); /* the listening socket is now ours to close */
    if (fd != MHD_INVALID_SOCKET) close(fd);
}

int srv_active(const srv *s) {
    return atomic_load(&s->active);
}

void srv_stop(srv *s) {
    if (!s) return;
    atomic_store(&s->stopping, 1);
    if (s->watchdog_started) {
        atomic_store(&s->watchdog_end, 1);
        pthread_join(s->watchdog, NULL);
    }
    if (s->daemon) MHD_stop_daemon(s->daemon);
    pthread_mutex_destroy(&s->conns_mu);
    srv_metrics_free(&s->metrics);
    srv_store_free(&s->store);
    for (int i = 0; s->names && i < s->n_names; i++) free(s->names[i]);
    free(s->names);
    free(s->host);
    free(s->api_key);
    free(s->cors_origin);
    free(s->model_name);
    free(s);
}
