/*
 * srv_gen.c — /v1/chat/completions and /v1/completions: request -> prompt ids -> scheduler ->
 * events -> one JSON response or an SSE stream. The connection's thread waits on the request's
 * events in 100 ms slices and polls its socket for hang-up between them, so a client that leaves
 * is cancelled within a second (see server.h).
 */
#include <math.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "server/srv_int.h"

#define WAIT_SLICE_MS 100

/* One generation request being answered. */
typedef struct srv_job {
    srv *s;
    srv_conn *c;      /* touched only on the connection's thread, before it completes */
    sched_request *r; /* the scheduler's handle (owned) */
    int fd;           /* the client's socket, polled for hang-up */
    int chat;         /* 1: chat.completion shapes, 0: text_completion */
    int stream, include_usage, logprobs, n;
    api_meta meta;
    chat_reader rd[API_MAX_N]; /* chat: reasoning / content / tool calls per choice */
    size_t sent[API_MAX_N];    /* completions stream: text bytes sent per choice (offsets) */
    api_choice ch[API_MAX_N];  /* non-streamed: accumulated choices */
    int finished;              /* DONE or ERROR seen: no more events */
    int failed;                /* ERROR seen: err says why */
    int cancelled;             /* we asked the scheduler to cancel */
    api_error err;
    api_usage usage;
    int seen_tokens; /* tokens of choice 0 so far (for TTFT / ITL) */
    double t_last;   /* time of choice 0's previous token */
    api_buf out;     /* SSE bytes not yet handed to libmicrohttpd */
    size_t out_pos;  /* bytes of out already handed over */
    double t_out;    /* when bytes were last handed over (heartbeats) */
    char *echo;      /* completions with echo: the prompt text (owned) */
} srv_job;

/* ---------------------------------------------------------------- prompt -> scheduler */

static int check_model(srv *s, const api_gen *g, api_error *err) {
    if (!g->model || !g->model[0] || !strcmp(g->model, s->model_name)) return 0; /* "" = default */
    return api_errorf(err, 404, "invalid_request_error", "model", "model_not_found",
                      "The model '%.200s' does not exist (this server serves '%.200s')", g->model,
                      s->model_name);
}

static uint64_t fresh_seed(srv *s) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t x = (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 30) ^
                 ((uint64_t)atomic_fetch_add(&s->next_id, 1) * 0x9E3779B97F4A7C15ull);
    x ^= x >> 31;
    return x * 0xBF58476D1CE4E5B9ull;
}

static float or_default(float v, float dflt) {
    return isnan(v) ? dflt : v;
}

/* Request fields + the model's generation_config defaults -> scheduler parameters. The bias array
 * is malloc'd into *bias (the scheduler copies it at submit). */
static int make_params(srv *s, const api_gen *g, sched_params *p, eng_logit_bias **bias,
                       api_error *err) {
    const eng_gen_defaults *d = &s->model.defaults;
    memset(p, 0, sizeof *p);
    *bias = NULL;
    p->sampling.temperature = or_default(g->temperature, d->temperature);
    p->sampling.top_p = or_default(g->top_p, d->top_p);
    p->sampling.top_k = g->top_k == -2 ? d->top_k : g->top_k < 0 ? 0 : g->top_k;
    p->sampling.min_p = or_default(g->min_p, d->min_p);
    p->sampling.repetition_penalty = or_default(g->repetition_penalty, d->repetition_penalty);
    p->sampling.presence_penalty = g->presence_penalty;
    p->sampling.frequency_penalty = g->frequency_penalty;
    p->sampling.seed = g->has_seed ? g->seed : fresh_seed(s);
    if (g->n_bias) {
        *bias = malloc((size_t)g->n_bias * sizeof **bias);
        if (!*bias) return api_errorf(err, 500, "server_error", NULL, NULL, "out of memory");
        for (int i = 0; i < g->n_bias; i++) {
            if (g->bias[i].token >= s->model.vocab_size)
                return api_errorf(err, 400, "invalid_request_error", "logit_bias", "invalid_value",
                                  "logit_bias token %d is out of range (vocabulary: %d)",
                                  g->bias[i].token, s->model.vocab_size);
            (*bias)[i].token = g->bias[i].token;
            (*bias)[i].bias = g->bias[i].bias;
        }
        p->sampling.bias = *bias;
        p->sampling.n_bias = g->n_bias;
    }
    p->max_tokens = g->max_tokens > 0 ? g->max_tokens : s->cfg.default_max_tokens;
    p->n = g->n;
    p->ignore_eos = g->ignore_eos;
    for (int i = 0; i < g->n_stop && i < SCHED_MAX_STOP; i++) p->stop[p->n_stop++] = g->stop[i];
    p->logprobs = g->logprobs;
    p->top_logprobs = g->top_logprobs;
    p->cache_salt = g->cache_salt;
    return 0;
}

static int submit(srv_job *j, const api_gen *g, const rs_ivec *ids, const char *param,
                  api_error *err) {
    srv *s = j->s;
    if (ids->n == 0)
        return api_errorf(err, 400, "invalid_request_error", param, "invalid_value",
                          "The prompt is empty (it encodes to no tokens)");
    if (ids->n >= s->model.ctx_size)
        return api_errorf(err, 400, "invalid_request_error", param, "context_length_exceeded",
                          "The prompt has %d tokens; this server's context is %d tokens "
                          "(--ctx-size), so a prompt must be shorter than that",
                          ids->n, s->model.ctx_size);
    sched_params p;
    eng_logit_bias *bias;
    rs_err e = {0};
    if (make_params(s, g, &p, &bias, err)) {
        free(bias);
        return RS_EINVAL;
    }
    int rc = s->be.submit(s->be.ctx, ids->v, ids->n, &p, &j->r, &e);
    free(bias);
    if (rc == RS_EFULL)
        return api_errorf(err, 503, "server_error", NULL, "queue_full",
                          "The server is busy (request queue full); retry later");
    if (rc == RS_ETOOBIG) /* the prompt length was checked above: this is n, or the KV pool */
        return api_errorf(err, 400, "invalid_request_error", NULL, "request_too_large", "%s",
                          e.msg);
    if (rc == RS_EINVAL)
        return api_errorf(err, 400, "invalid_request_error", NULL, NULL, "%s", e.msg);
    if (rc) return api_errorf(err, 500, "server_error", NULL, NULL, "%s", e.msg);
    j->c->prompt_tokens = ids->n;
    atomic_fetch_add(&s->active, 1);
    return 0;
}

static srv_job *job_new(srv_conn *c, struct MHD_Connection *conn, int chat, const api_gen *g) {
    srv_job *j = calloc(1, sizeof *j);
    if (!j) return NULL;
    srv *s = c->s;
    j->s = s;
    j->c = c;
    j->chat = chat;
    j->stream = g->stream;
    j->include_usage = g->include_usage;
    j->logprobs = g->logprobs;
    j->n = g->n;
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
    j->fd = ci ? ci->connect_fd : -1;
    snprintf(j->meta.id, sizeof j->meta.id, "%s-%llx%08llx", chat ? "chatcmpl" : "cmpl",
             (unsigned long long)time(NULL), (unsigned long long)atomic_fetch_add(&s->next_id, 1));
    j->meta.model = s->model_name;
    j->meta.created = (long long)time(NULL);
    j->meta.fingerprint = s->fingerprint;
    j->t_out = rs_now();
    return j;
}

static void job_free(srv_job *j) {
    if (!j) return;
    if (j->r) {
        j->s->be.request_free(j->r); /* cancels it if still running */
        atomic_fetch_sub(&j->s->active, 1);
    }
    for (int i = 0; i < API_MAX_N; i++) {
        chat_reader_free(&j->rd[i]);
        api_choice_free(&j->ch[i]);
    }
    api_buf_free(&j->out);
    free(j->echo);
    free(j);
}

/* ---------------------------------------------------------------- events -> output */

static void sse(srv_job *j, char *json) {
    if (!json) return;
    api_buf_puts(&j->out, "data: ");
    api_buf_puts(&j->out, json);
    api_buf_puts(&j->out, "\n\n");
    free(json);
}

/* A token's text as it reads inside a sequence: SentencePiece-style decoders drop the leading
 * space of the first token decoded, so decode (id, id) and keep what the second id adds. */
static char *token_text(srv *s, int32_t id) {
    char *one = NULL, *two = NULL;
    int32_t pair[2] = {id, id};
    rs_err e;
    if (s->be.decode(s->be.ctx, &id, 1, 0, &one, &e) ||
        s->be.decode(s->be.ctx, pair, 2, 0, &two, &e)) {
        free(one);
        return strdup("");
    }
    size_t n1 = strlen(one), n2 = strlen(two);
    if (n2 >= n1 && !memcmp(two, one, n1))
        memmove(two, two + n1, n2 - n1 + 1);
    else {
        free(two);
        two = one, one = NULL;
    }
    free(one);
    return two;
}

static void make_lp(srv *s, const sched_event *ev, api_lp *lp) {
    memset(lp, 0, sizeof *lp);
    lp->token = token_text(s, ev->token);
    lp->logprob = ev->logprob;
    for (int k = 0; k < ev->n_top && k < API_MAX_TOP_LOGPROBS; k++) {
        lp->top[k].token = token_text(s, ev->top[k].token);
        lp->top[k].logprob = ev->top[k].logprob;
        lp->n_top++;
    }
}

/* Non-streamed: keep the choice's new pieces. */
static void keep(api_choice *ch, const api_buf *r, const api_buf *c, cJSON *calls, api_lp *lp) {
    api_buf_append(&ch->reasoning, api_buf_str(r), r->n);
    api_buf_append(&ch->content, api_buf_str(c), c->n);
    if (lp && lp->token) api_choice_add_lp(ch, lp);
    if (cJSON_GetArraySize(calls) == 0) return;
    if (!ch->tool_calls) ch->tool_calls = cJSON_CreateArray();
    while (calls->child) cJSON_AddItemToArray(ch->tool_calls, cJSON_DetachItemFromArray(calls, 0));
}

/* Each completed call as OpenAI streams one: a first fragment with its index, id, type and
 * name (arguments ""), then its arguments appended in a second. */
static void stream_calls(srv_job *j, int idx, const cJSON *calls, int first_index) {
    const cJSON *call;
    int k = first_index;
    cJSON_ArrayForEach(call, calls) {
        sse(j, api_chat_tool_chunk(&j->meta, idx, call, k, 1, j->include_usage));
        sse(j, api_chat_tool_chunk(&j->meta, idx, call, k, 0, j->include_usage));
        k++;
    }
}

/* New text (and maybe a token's logprobs, maybe the end) of choice idx. */
static void job_text(srv_job *j, int idx, const char *text, api_lp *lp, const char *finish) {
    api_choice *ch = &j->ch[idx];
    api_buf r = {0}, c = {0};
    cJSON *calls = cJSON_CreateArray();
    if (j->chat)
        chat_reader_feed(&j->rd[idx], text, finish != NULL, &r, &c, calls);
    else
        api_buf_puts(&c, text);
    /* A turn that ends after calling tools ends for them (OpenAI's "tool_calls"). */
    if (finish && j->chat && chat_reader_n_calls(&j->rd[idx]) && !strcmp(finish, "stop"))
        finish = "tool_calls";
    int n_calls = cJSON_GetArraySize(calls);
    if (!j->stream) {
        keep(ch, &r, &c, calls, lp);
        if (finish) ch->finish_reason = finish;
    } else {
        int n_lp = lp && lp->token ? 1 : 0;
        if (j->chat && (r.n || c.n || n_lp))
            sse(j, api_chat_chunk(&j->meta, idx, NULL, c.n || !r.n ? api_buf_str(&c) : NULL,
                                  r.n ? api_buf_str(&r) : NULL, lp, n_lp, NULL, j->include_usage));
        if (n_calls) stream_calls(j, idx, calls, chat_reader_n_calls(&j->rd[idx]) - n_calls);
        if (!j->chat && (c.n || n_lp))
            sse(j, api_completion_chunk(&j->meta, idx, api_buf_str(&c), lp, n_lp, j->sent[idx],
                                        NULL, j->include_usage));
        if (!j->chat) j->sent[idx] += c.n;
        if (finish)
            sse(j, j->chat ? api_chat_chunk(&j->meta, idx, NULL, NULL, NULL, NULL, 0, finish,
                                            j->include_usage)
                           : api_completion_chunk(&j->meta, idx, "", NULL, 0, j->sent[idx], finish,
                                                  j->include_usage));
    }
    if (lp) api_lp_free(lp);
    cJSON_Delete(calls);
    api_buf_free(&r);
    api_buf_free(&c);
}

static void job_token_timing(srv_job *j, const sched_event *ev) {
    if (ev->index != 0) return;
    double now = rs_now();
    if (j->seen_tokens++ == 0)
        srv_metrics_observe(&j->s->metrics, &j->s->metrics.ttft, now - j->c->t0);
    else
        srv_metrics_observe(&j->s->metrics, &j->s->metrics.itl, now - j->t_last);
    j->t_last = now;
}

static void job_done(srv_job *j, const sched_event *ev) {
    j->usage.prompt_tokens = ev->prompt_tokens;
    j->usage.cached_tokens = ev->cached_tokens;
    j->usage.completion_tokens = ev->completion_tokens;
    j->c->prompt_tokens = ev->prompt_tokens;
    j->c->cached_tokens = ev->cached_tokens;
    j->c->completion_tokens = ev->completion_tokens;
    if (j->stream) {
        if (j->include_usage) sse(j, api_usage_chunk(&j->meta, j->chat, &j->usage));
        api_buf_puts(&j->out, "data: [DONE]\n\n");
    }
}

static void job_error(srv_job *j, const sched_event *ev) {
    j->failed = 1;
    if (j->cancelled && atomic_load(&j->s->stopping))
        api_errorf(&j->err, 503, "server_error", NULL, "shutting_down",
                   "The server is shutting down");
    else
        api_errorf(&j->err, 500, "server_error", NULL, NULL, "%s", ev->message);
    if (j->stream) {
        sse(j, api_error_json(&j->err));
        api_buf_puts(&j->out, "data: [DONE]\n\n");
    }
}

static void job_event(srv_job *j, const sched_event *ev) {
    api_lp lp;
    int idx = ev->index >= 0 && ev->index < j->n ? ev->index : 0;
    switch (ev->type) {
    case SCHED_EV_TOKEN:
        job_token_timing(j, ev);
        if (j->logprobs) make_lp(j->s, ev, &lp);
        job_text(j, idx, ev->text ? ev->text : "", j->logprobs ? &lp : NULL, NULL);
        break;
    case SCHED_EV_FINISH:
        job_text(j, idx, ev->text ? ev->text : "", NULL,
                 ev->finish_reason ? ev->finish_reason : "stop");
        break;
    case SCHED_EV_DONE:
        job_done(j, ev);
        j->finished = 1;
        break;
    case SCHED_EV_ERROR:
        job_error(j, ev);
        j->finished = 1;
        break;
    }
}

static int client_gone(int fd) {
    if (fd < 0) return 0;
    struct pollfd p = {.fd = fd, .events = POLLRDHUP};
    return poll(&p, 1, 0) > 0 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR | POLLNVAL));
}

/* Wait one slice for an event. -1: the client left (the request is cancelled). */
static int job_wait(srv_job *j) {
    srv *s = j->s;
    if (client_gone(j->fd)) {
        s->be.cancel(j->r);
        j->c->status = 499;
        return -1;
    }
    if (!j->cancelled && atomic_load(&s->stopping)) {
        s->be.cancel(j->r);
        j->cancelled = 1;
    }
    sched_event ev;
    /* Take whatever else is already queued too, so a busy stream goes out in fewer writes. */
    for (int k = 0; k < 64 && !j->finished; k++) {
        if (s->be.next_event(j->r, &ev, k ? 0 : WAIT_SLICE_MS) != 1) break;
        job_event(j, &ev);
        s->be.event_free(&ev);
    }
    return 0;
}

/* ---------------------------------------------------------------- answering */

static enum MHD_Result answer_whole(srv_job *j, struct MHD_Connection *conn) {
    srv_conn *c = j->c;
    while (!j->finished)
        if (job_wait(j) < 0) {
            job_free(j);
            return MHD_NO; /* close the connection: nobody is listening */
        }
    if (j->failed) {
        enum MHD_Result r = srv_reply_error(c, conn, &j->err);
        job_free(j);
        return r;
    }
    if (j->echo)
        for (int i = 0; i < j->n; i++) {
            api_buf b = {0};
            api_buf_puts(&b, j->echo);
            j->ch[i].text_offset = strlen(j->echo);
            api_buf_append(&b, api_buf_str(&j->ch[i].content), j->ch[i].content.n);
            api_buf_free(&j->ch[i].content);
            j->ch[i].content = b;
        }
    char *body = j->chat ? api_chat_response(&j->meta, j->ch, j->n, j->logprobs, &j->usage)
                         : api_completion_response(&j->meta, j->ch, j->n, j->logprobs, &j->usage);
    job_free(j);
    return srv_reply(c, conn, 200, body, NULL);
}

static ssize_t stream_read(void *cls, uint64_t pos, char *buf, size_t max) {
    srv_job *j = cls;
    (void)pos;
    while (j->out.n == j->out_pos) {
        if (j->finished) return MHD_CONTENT_READER_END_OF_STREAM;
        if (job_wait(j) < 0) return MHD_CONTENT_READER_END_WITH_ERROR;
        /* An SSE comment keeps proxies and clients from timing out while a prompt prefills. */
        if (j->out.n == j->out_pos && rs_now() - j->t_out > j->s->cfg.heartbeat_ms / 1e3)
            api_buf_puts(&j->out, ": keep-alive\n\n");
    }
    size_t n = j->out.n - j->out_pos < max ? j->out.n - j->out_pos : max;
    memcpy(buf, j->out.s + j->out_pos, n);
    j->out_pos += n;
    if (j->out_pos == j->out.n) j->out.n = j->out_pos = 0;
    j->t_out = rs_now();
    return (ssize_t)n;
}

static void stream_free(void *cls) {
    job_free(cls);
}

static enum MHD_Result answer_stream(srv_job *j, struct MHD_Connection *conn) {
    for (int i = 0; i < j->n; i++) {
        if (j->chat)
            sse(j, api_chat_chunk(&j->meta, i, "assistant", "", NULL, NULL, 0, NULL,
                                  j->include_usage));
        else if (j->echo) {
            sse(j, api_completion_chunk(&j->meta, i, j->echo, NULL, 0, 0, NULL, j->include_usage));
            j->sent[i] = strlen(j->echo);
        }
    }
    struct MHD_Response *r =
        MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 16384, stream_read, j, stream_free);
    if (!r) {
        job_free(j);
        return MHD_NO;
    }
    MHD_add_response_header(r, "Content-Type", "text/event-stream");
    MHD_add_response_header(r, "Cache-Control", "no-cache");
    MHD_add_response_header(r, "X-Accel-Buffering", "no");
    srv_add_common_headers(j->s, r);
    j->c->status = 200;
    enum MHD_Result ret = MHD_queue_response(conn, 200, r);
    MHD_destroy_response(r);
    return ret;
}

static enum MHD_Result run(srv_job *j, struct MHD_Connection *conn, const api_gen *g,
                           const rs_ivec *ids, const char *param) {
    api_error err = {0};
    srv_conn *c = j->c;
    if (submit(j, g, ids, param, &err)) {
        job_free(j);
        return srv_reply_error(c, conn, &err);
    }
    return j->stream ? answer_stream(j, conn) : answer_whole(j, conn);
}

/* ---------------------------------------------------------------- routes */

static enum MHD_Result fail(srv_conn *c, struct MHD_Connection *conn, const api_error *err,
                            srv_job *j, rs_ivec *ids) {
    job_free(j);
    rs_ivec_free(ids);
    return srv_reply_error(c, conn, err);
}

enum MHD_Result srv_chat(srv_conn *c, struct MHD_Connection *conn) {
    srv *s = c->s;
    api_chat_request req;
    api_error err = {0};
    rs_err e = {0};
    rs_ivec ids = {0};
    char *text = NULL;
    if (api_parse_chat(api_buf_str(&c->body), c->body.n, &req, &err) ||
        check_model(s, &req.gen, &err)) {
        api_chat_request_free(&req); /* a failed parse leaves it empty: freeing is safe */
        return srv_reply_error(c, conn, &err);
    }
    srv_job *j = job_new(c, conn, 1, &req.gen);
    int rc = j ? chat_format_render(s->model.chat, req.tpl, &text, NULL, &e) : RS_ENOMEM;
    if (!rc) rc = s->be.encode(s->be.ctx, text, strlen(text), 0, &ids, &e);
    if (rc) {
        api_errorf(&err, rc == RS_ENOMEM ? 500 : 400, "invalid_request_error", "messages", NULL,
                   "%s", e.msg);
        free(text);
        api_chat_request_free(&req);
        return fail(c, conn, &err, j, &ids);
    }
    for (int i = 0; i < j->n; i++) {
        char base[64];
        snprintf(base, sizeof base, "%s_%d", strchr(j->meta.id, '-') + 1, i);
        chat_reader_init(&j->rd[i], s->model.chat, req.tpl, text, base);
    }
    free(text);
    enum MHD_Result ret = run(j, conn, &req.gen, &ids, "messages");
    rs_ivec_free(&ids);
    api_chat_request_free(&req);
    return ret;
}

static int completion_ids(srv *s, api_completion_request *req, rs_ivec *ids, char **echo,
                          api_error *err) {
    rs_err e = {0};
    if (req->prompt_ids) {
        for (int i = 0; i < req->n_prompt_ids; i++)
            if (req->prompt_ids[i] >= s->model.vocab_size)
                return api_errorf(err, 400, "invalid_request_error", "prompt", "invalid_value",
                                  "prompt token %d is out of range (vocabulary: %d)",
                                  req->prompt_ids[i], s->model.vocab_size);
        if (rs_ivec_append(ids, req->prompt_ids, req->n_prompt_ids))
            return api_errorf(err, 500, "server_error", NULL, NULL, "out of memory");
        if (req->echo && s->be.decode(s->be.ctx, ids->v, ids->n, 1, echo, &e))
            return api_errorf(err, 400, "invalid_request_error", "prompt", NULL, "%s", e.msg);
        return 0;
    }
    if (s->be.encode(s->be.ctx, req->prompt, strlen(req->prompt), TOK_ADD_SPECIAL, ids, &e))
        return api_errorf(err, 400, "invalid_request_error", "prompt", NULL, "%s", e.msg);
    if (req->echo && !(*echo = strdup(req->prompt)))
        return api_errorf(err, 500, "server_error", NULL, NULL, "out of memory");
    return 0;
}

enum MHD_Result srv_completions(srv_conn *c, struct MHD_Connection *conn) {
    srv *s = c->s;
    api_completion_request req;
    api_error err = {0};
    rs_ivec ids = {0};
    if (api_parse_completion(api_buf_str(&c->body), c->body.n, &req, &err))
        return srv_reply_error(c, conn, &err);
    srv_job *j = NULL;
    if (check_model(s, &req.gen, &err) || !(j = job_new(c, conn, 0, &req.gen)) ||
        completion_ids(s, &req, &ids, &j->echo, &err)) {
        if (!j && !err.status) api_errorf(&err, 500, "server_error", NULL, NULL, "out of memory");
        api_completion_request_free(&req);
        return fail(c, conn, &err, j, &ids);
    }
    enum MHD_Result ret = run(j, conn, &req.gen, &ids, "prompt");
    rs_ivec_free(&ids);
    api_completion_request_free(&req);
    return ret;
}
