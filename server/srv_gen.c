/*
 * srv_gen.c — /v1/chat/completions, /v1/completions and (through srv_run_chat) /v1/responses:
 * request -> prompt ids -> scheduler ->
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

#define WAIT_SLICE_MS  100
#define MULTI_SLICE_MS 5 /* a batch of prompts: wait on one request this long, then look at all */

_Static_assert(API_MAX_N <= API_MAX_CHOICES, "one prompt's choices fit a request's");

/* One generation request being answered: one scheduler request per prompt (a completions batch
 * has several; chat one), choice p * n + k being sample k of prompt p. */
typedef struct srv_job {
    srv *s;
    srv_conn *c;                       /* touched only on the connection's thread */
    sched_request *r[API_MAX_CHOICES]; /* the scheduler's handles (owned), one per prompt */
    int n_req;                         /* submitted so far */
    int req_done[API_MAX_CHOICES];     /* DONE seen for that prompt */
    int n_req_done;                    /* how many */
    int fd;                            /* the client's socket, polled for hang-up */
    int chat;                          /* 1: chat.completion shapes, 0: text_completion */
    int stream, include_usage, logprobs;
    int n;          /* choices per prompt */
    int n_choices;  /* n_req * n once submitted */
    int n_finished; /* choices that sent FINISH */
    api_meta meta;
    chat_reader rd[API_MAX_CHOICES]; /* chat: reasoning / content / tool calls per choice */
    size_t sent[API_MAX_CHOICES];    /* completions stream: text bytes sent (offsets) */
    api_choice ch[API_MAX_CHOICES];  /* non-streamed: accumulated choices */
    char *last_finish;               /* stream: the last choice's finish chunk, held for the
                                        timings known only at the end (owned) */
    int finished;                    /* every DONE, or an ERROR, seen: no more events */
    int failed;                      /* ERROR seen: err says why */
    int cancelled;                   /* we asked the scheduler to cancel */
    api_error err;
    api_usage usage;             /* summed over prompts */
    double t_first;              /* first generated token of any choice (0: none yet) */
    int seen_tokens;             /* tokens of choice 0 so far (for TTFT / ITL) */
    double t_last;               /* time of choice 0's previous token */
    api_buf out;                 /* SSE bytes not yet handed to libmicrohttpd */
    size_t out_pos;              /* bytes of out already handed over */
    double t_out;                /* when bytes were last handed over (heartbeats) */
    char *echo[API_MAX_CHOICES]; /* completions with echo: each prompt's text (owned) */
    srv_resp *resp;              /* /v1/responses: its output state (owned), else NULL */
    cJSON *warm_req;      /* chat with warming: the template input to render the next turn from
                             (owned; NULL: no warming, e.g. n > 1 or the answer called tools) */
    char *warm_salt;      /* its cache_salt (owned, NULL: shared) */
    const eng_lora *lora; /* the adapter the request named (a reference held for the job's
                             life: submit and warming use it), NULL: the base model */
    api_buf warm_answer;  /* choice 0's content so far, as the client will send it back */
    int done_ok;          /* every DONE arrived: the answer is complete */
} srv_job;

/* ---------------------------------------------------------------- prompt -> scheduler */

static int check_model(srv *s, const api_gen *g, const eng_lora **lora, api_error *err) {
    return srv_resolve_model(s, g->model, lora, err);
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

int srv_submit_error(int rc, const rs_err *e, api_error *err) {
    if (rc == RS_EFULL)
        return api_errorf(err, 503, "server_error", NULL, "queue_full",
                          "The server is busy (request queue full); retry later");
    if (rc == RS_ETOOBIG) /* the prompt length was checked before: this is n, or the KV pool */
        return api_errorf(err, 400, "invalid_request_error", NULL, "request_too_large", "%s",
                          e->msg);
    if (rc == RS_EINVAL)
        return api_errorf(err, 400, "invalid_request_error", NULL, NULL, "%s", e->msg);
    if (rc == RS_ENOTFOUND) /* the adapter began unloading after the request named it */
        return api_errorf(err, 404, "invalid_request_error", "model", "model_not_found", "%s",
                          e->msg);
    return api_errorf(err, 500, "server_error", NULL, NULL, "%s", e->msg);
}

int srv_check_prompt(const srv *s, int n, const char *param, api_error *err) {
    if (n == 0)
        return api_errorf(err, 400, "invalid_request_error", param, "invalid_value",
                          "The prompt is empty (it encodes to no tokens)");
    if (n >= s->model.ctx_size)
        return api_errorf(err, 400, "invalid_request_error", param, "context_length_exceeded",
                          "The prompt has %d tokens; this server's context is %d tokens "
                          "(--ctx-size), so a prompt must be shorter than that",
                          n, s->model.ctx_size);
    return 0;
}

/* The grammar moves from g to the scheduler (which takes it even when it refuses). */
static int submit(srv_job *j, api_gen *g, const rs_ivec *ids, const char *param, api_error *err) {
    srv *s = j->s;
    if (srv_check_prompt(s, ids->n, param, err)) return RS_EINVAL;
    sched_params p;
    eng_logit_bias *bias;
    rs_err e = {0};
    if (make_params(s, g, &p, &bias, err)) {
        free(bias);
        return RS_EINVAL;
    }
    p.grammar = g->grammar;
    g->grammar = NULL;
    p.lora = j->lora;
    int rc = s->be.submit(s->be.ctx, ids->v, ids->n, &p, &j->r[j->n_req], &e);
    free(bias);
    if (rc) return srv_submit_error(rc, &e, err);
    j->c->prompt_tokens += ids->n;
    if (j->n_req++ == 0) atomic_fetch_add(&s->active, 1);
    j->n_choices = j->n_req * j->n;
    return 0;
}

/* prefix: the id's ("chatcmpl", "cmpl", "resp"); anything but "cmpl" answers a chat. The job
 * takes lora (released on failure too). */
static srv_job *job_new(srv_conn *c, struct MHD_Connection *conn, const char *prefix,
                        const api_gen *g, const eng_lora *lora) {
    srv_job *j = calloc(1, sizeof *j);
    if (!j) {
        eng_lora_release(lora);
        return NULL;
    }
    j->lora = lora;
    srv *s = c->s;
    j->s = s;
    j->c = c;
    j->chat = strcmp(prefix, "cmpl") != 0;
    j->stream = g->stream;
    j->include_usage = g->include_usage;
    j->logprobs = g->logprobs;
    j->n = g->n;
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
    j->fd = ci ? ci->connect_fd : -1;
    snprintf(j->meta.id, sizeof j->meta.id, "%s%s%llx%08llx", prefix,
             strcmp(prefix, "resp") ? "-" : "_", (unsigned long long)time(NULL),
             (unsigned long long)atomic_fetch_add(&s->next_id, 1));
    j->meta.model = lora ? eng_lora_name(lora) : srv_model_name(s, g->model);
    j->meta.created = (long long)time(NULL);
    j->meta.fingerprint = s->fingerprint;
    j->t_out = rs_now();
    return j;
}

static void job_free(srv_job *j) {
    if (!j) return;
    if (j->warm_req && j->done_ok)
        srv_warm_next_turn(j->s, j->warm_req, api_buf_str(&j->warm_answer), j->warm_salt, j->lora);
    cJSON_Delete(j->warm_req);
    free(j->warm_salt);
    api_buf_free(&j->warm_answer);
    for (int i = 0; i < j->n_req; i++) j->s->be.request_free(j->r[i]); /* cancels the running */
    if (j->n_req) atomic_fetch_sub(&j->s->active, 1);
    for (int i = 0; i < API_MAX_CHOICES; i++) {
        chat_reader_free(&j->rd[i]);
        api_choice_free(&j->ch[i]);
        free(j->echo[i]);
    }
    api_buf_free(&j->out);
    free(j->last_finish);
    srv_resp_free(j->resp);
    eng_lora_release(j->lora); /* after the requests: the name in meta.model is its */
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
char *srv_token_text(srv *s, int32_t id) {
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
    lp->token = srv_token_text(s, ev->token);
    lp->logprob = ev->logprob;
    for (int k = 0; k < ev->n_top && k < API_MAX_TOP_LOGPROBS; k++) {
        lp->top[k].token = srv_token_text(s, ev->top[k].token);
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
    if (idx == 0 && j->warm_req) {
        if (n_calls || api_buf_append(&j->warm_answer, api_buf_str(&c), c.n)) {
            cJSON_Delete(j->warm_req); /* tool calls render their own way: no guessing */
            j->warm_req = NULL;
        }
    }
    if (j->resp) {
        api_rs_feed(&j->resp->st, api_buf_str(&r), api_buf_str(&c), calls,
                    j->stream ? &j->out : NULL);
        if (finish) j->resp->finish = finish;
    } else if (!j->stream) {
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
        if (finish) {
            char *fin = j->chat ? api_chat_chunk(&j->meta, idx, NULL, NULL, NULL, NULL, 0, finish,
                                                 j->include_usage)
                                : api_completion_chunk(&j->meta, idx, "", NULL, 0, j->sent[idx],
                                                       finish, j->include_usage);
            if (++j->n_finished == j->n_choices)
                j->last_finish = fin; /* sent at the end, with the timings */
            else
                sse(j, fin);
        }
    }
    if (lp) api_lp_free(lp);
    cJSON_Delete(calls);
    api_buf_free(&r);
    api_buf_free(&c);
}

static void job_token_timing(srv_job *j, int choice) {
    double now = rs_now();
    if (!j->t_first) j->t_first = now;
    if (choice != 0) return;
    if (j->seen_tokens++ == 0)
        srv_metrics_observe(&j->s->metrics, &j->s->metrics.ttft, now - j->c->t0);
    else
        srv_metrics_observe(&j->s->metrics, &j->s->metrics.itl, now - j->t_last);
    j->t_last = now;
}

/* One prompt's DONE; after the last, the usage and timings of them all. */
static void job_done(srv_job *j, int ri, const sched_event *ev) {
    j->req_done[ri] = 1;
    j->usage.prompt_tokens += ev->prompt_tokens;
    j->usage.cached_tokens += ev->cached_tokens;
    j->usage.completion_tokens += ev->completion_tokens;
    if (++j->n_req_done < j->n_req) return;
    j->finished = 1;
    j->done_ok = 1;
    double now = rs_now(), first = j->t_first ? j->t_first : now;
    j->usage.timed = 1;
    j->usage.prompt_ms = (first - j->c->t0) * 1e3;
    j->usage.predicted_ms = (now - first) * 1e3;
    j->c->prompt_tokens = j->usage.prompt_tokens;
    j->c->cached_tokens = j->usage.cached_tokens;
    j->c->completion_tokens = j->usage.completion_tokens;
    if (j->resp) {
        api_rs_end(&j->resp->st, j->resp->finish, &j->usage, j->stream ? &j->out : NULL);
        srv_resp_finished(j->s, j->resp);
    } else if (j->stream) {
        if (j->include_usage) {
            sse(j, j->last_finish);
            sse(j, api_usage_chunk(&j->meta, j->chat, &j->usage));
        } else {
            sse(j, api_add_timings(j->last_finish, &j->usage));
        }
        j->last_finish = NULL;
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
    if (j->stream && j->resp) {
        api_rs_error(&j->resp->st, &j->err, &j->out);
    } else if (j->stream) {
        sse(j, api_error_json(&j->err));
        api_buf_puts(&j->out, "data: [DONE]\n\n");
    }
}

/* An event of prompt ri's request. */
static void job_event(srv_job *j, int ri, const sched_event *ev) {
    api_lp lp;
    int idx = ri * j->n + (ev->index >= 0 && ev->index < j->n ? ev->index : 0);
    switch (ev->type) {
    case SCHED_EV_TOKEN:
        job_token_timing(j, idx);
        if (j->logprobs) make_lp(j->s, ev, &lp);
        job_text(j, idx, ev->text ? ev->text : "", j->logprobs ? &lp : NULL, NULL);
        break;
    case SCHED_EV_FINISH:
        job_text(j, idx, ev->text ? ev->text : "", NULL,
                 ev->finish_reason ? ev->finish_reason : "stop");
        break;
    case SCHED_EV_DONE:
        job_done(j, ri, ev);
        break;
    case SCHED_EV_ERROR:
        job_error(j, ev);
        j->finished = 1;
        break;
    }
}

int srv_client_gone(int fd) {
    if (fd < 0) return 0;
    struct pollfd p = {.fd = fd, .events = POLLRDHUP};
    return poll(&p, 1, 0) > 0 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR | POLLNVAL));
}

static void job_cancel(srv_job *j) {
    for (int i = 0; i < j->n_req; i++) j->s->be.cancel(j->r[i]);
}

/* Take the events queued for each unfinished prompt (up to 64 each), waiting up to timeout_ms
 * for the first of them. Returns how many were taken. */
static int job_drain(srv_job *j, int timeout_ms) {
    srv *s = j->s;
    sched_event ev;
    int got = 0;
    for (int i = 0; i < j->n_req && !j->finished; i++) {
        for (int k = 0; k < 64 && !j->finished && !j->req_done[i]; k++) {
            if (s->be.next_event(j->r[i], &ev, got ? 0 : timeout_ms) != 1) break;
            got++;
            job_event(j, i, &ev);
            s->be.event_free(&ev);
        }
        if (!j->req_done[i]) timeout_ms = 0; /* waited on this one: look at the rest at once */
    }
    return got;
}

/* Wait one slice for events. -1: the client left (the request is cancelled). */
static int job_wait(srv_job *j) {
    srv *s = j->s;
    if (srv_client_gone(j->fd)) {
        job_cancel(j);
        j->c->status = 499;
        return -1;
    }
    if (!j->cancelled && atomic_load(&s->stopping)) {
        job_cancel(j);
        j->cancelled = 1;
    }
    /* Several prompts: short waits on one, then a look at all, until the slice is over. */
    double until = rs_now() + WAIT_SLICE_MS / 1e3;
    while (!j->finished && !job_drain(j, j->n_req > 1 ? MULTI_SLICE_MS : WAIT_SLICE_MS) &&
           j->n_req > 1 && rs_now() < until) {
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
    for (int i = 0; i < j->n_choices; i++) {
        const char *echo = j->echo[i / j->n];
        if (!echo) continue;
        api_buf b = {0};
        api_buf_puts(&b, echo);
        j->ch[i].text_offset = strlen(echo);
        api_buf_append(&b, api_buf_str(&j->ch[i].content), j->ch[i].content.n);
        api_buf_free(&j->ch[i].content);
        j->ch[i].content = b;
    }
    char *body =
        j->resp   ? api_rs_response(&j->resp->st, j->resp->finish, &j->usage)
        : j->chat ? api_chat_response(&j->meta, j->ch, j->n_choices, j->logprobs, &j->usage)
                  : api_completion_response(&j->meta, j->ch, j->n_choices, j->logprobs, &j->usage);
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
    if (j->resp) api_rs_start(&j->resp->st, &j->out);
    for (int i = 0; i < j->n_choices && !j->resp; i++) {
        const char *echo = j->echo[i / j->n];
        if (j->chat)
            sse(j, api_chat_chunk(&j->meta, i, "assistant", "", NULL, NULL, 0, NULL,
                                  j->include_usage));
        else if (echo) {
            sse(j, api_completion_chunk(&j->meta, i, echo, NULL, 0, 0, NULL, j->include_usage));
            j->sent[i] = strlen(echo);
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

/* Submit each prompt (all or nothing: a refused one frees those already submitted), then
 * answer. */
static enum MHD_Result run(srv_job *j, struct MHD_Connection *conn, api_gen *g, const rs_ivec *ids,
                           int n_prompts, const char *param) {
    api_error err = {0};
    srv_conn *c = j->c;
    if (g->grammar && n_prompts > 1) { /* one compiled grammar is one sequence's */
        api_errorf(&err, 400, "invalid_request_error", "response_format", "invalid_value",
                   "response_format with %d prompts is not supported (send one prompt per "
                   "request)",
                   n_prompts);
        job_free(j);
        return srv_reply_error(c, conn, &err);
    }
    for (int i = 0; i < n_prompts; i++)
        if (submit(j, g, &ids[i], param, &err)) {
            job_free(j);
            return srv_reply_error(c, conn, &err);
        }
    return j->stream ? answer_stream(j, conn) : answer_whole(j, conn);
}

/* ---------------------------------------------------------------- routes */

static enum MHD_Result fail(srv_conn *c, struct MHD_Connection *conn, const api_error *err,
                            srv_job *j, rs_ivec *ids) {
    job_free(j);
    if (ids) rs_ivec_free(ids);
    return srv_reply_error(c, conn, err);
}

enum MHD_Result srv_run_chat(srv_conn *c, struct MHD_Connection *conn, api_chat_request *req,
                             srv_resp *resp) {
    srv *s = c->s;
    api_error err = {0};
    rs_err e = {0};
    rs_ivec ids = {0};
    char *text = NULL;
    const char *param = resp ? "input" : "messages";
    const eng_lora *lora = NULL;
    if (check_model(s, &req->gen, &lora, &err) || chat_tool_grammar(s->model.chat, req, &err)) {
        eng_lora_release(lora);
        srv_resp_free(resp);
        return srv_reply_error(c, conn, &err);
    }
    srv_job *j = job_new(c, conn, resp ? "resp" : "chatcmpl", &req->gen, lora);
    if (j && resp) {
        j->resp = resp;
        api_rs_init(&resp->st, j->meta.id, j->meta.created, j->meta.model, resp->echo);
        resp->st.store = resp->store;
        resp->echo = NULL;
    } else {
        srv_resp_free(resp); /* j NULL: nobody took it */
    }
    int rc = j ? chat_format_render(s->model.chat, req->tpl, &text, NULL, &e) : RS_ENOMEM;
    if (!rc) rc = s->be.encode(s->be.ctx, text, strlen(text), 0, &ids, &e);
    if (rc) {
        api_errorf(&err, rc == RS_ENOMEM ? 500 : 400, "invalid_request_error", param, NULL, "%s",
                   e.msg);
        free(text);
        return fail(c, conn, &err, j, &ids);
    }
    for (int i = 0; i < j->n; i++) {
        char base[64];
        snprintf(base, sizeof base, "%s_%d", j->meta.id + strlen(resp ? "resp" : "chatcmpl") + 1,
                 i);
        chat_reader_init(&j->rd[i], s->model.chat, req->tpl, text, base);
    }
    free(text);
    if (!resp && s->cfg.warm_next_turn && j->n == 1) { /* best effort: no memory, no warming */
        j->warm_req = cJSON_Duplicate(req->tpl, 1);
        j->warm_salt = req->gen.cache_salt ? strdup(req->gen.cache_salt) : NULL;
    }
    enum MHD_Result ret = run(j, conn, &req->gen, &ids, 1, param);
    rs_ivec_free(&ids);
    return ret;
}

enum MHD_Result srv_chat(srv_conn *c, struct MHD_Connection *conn) {
    api_chat_request req;
    api_error err = {0};
    if (api_parse_chat(api_buf_str(&c->body), c->body.n, &req, &err))
        return srv_reply_error(c, conn, &err); /* a failed parse leaves req empty */
    enum MHD_Result ret = srv_run_chat(c, conn, &req, NULL);
    api_chat_request_free(&req);
    return ret;
}

int srv_prompt_ids(srv *s, const api_prompt *p, const char *param, rs_ivec *ids, char **echo,
                   api_error *err) {
    rs_err e = {0};
    if (p->ids) {
        for (int i = 0; i < p->n_ids; i++)
            if (p->ids[i] >= s->model.vocab_size)
                return api_errorf(err, 400, "invalid_request_error", param, "invalid_value",
                                  "%s token %d is out of range (vocabulary: %d)", param, p->ids[i],
                                  s->model.vocab_size);
        if (rs_ivec_append(ids, p->ids, p->n_ids))
            return api_errorf(err, 500, "server_error", NULL, NULL, "out of memory");
        if (echo && s->be.decode(s->be.ctx, ids->v, ids->n, 1, echo, &e))
            return api_errorf(err, 400, "invalid_request_error", param, NULL, "%s", e.msg);
        return 0;
    }
    if (s->be.encode(s->be.ctx, p->text, strlen(p->text), TOK_ADD_SPECIAL, ids, &e))
        return api_errorf(err, 400, "invalid_request_error", param, NULL, "%s", e.msg);
    if (echo && !(*echo = strdup(p->text)))
        return api_errorf(err, 500, "server_error", NULL, NULL, "out of memory");
    return 0;
}

enum MHD_Result srv_completions(srv_conn *c, struct MHD_Connection *conn) {
    srv *s = c->s;
    api_completion_request req;
    api_error err = {0};
    rs_ivec ids[API_MAX_CHOICES] = {{0}};
    if (api_parse_completion(api_buf_str(&c->body), c->body.n, &req, &err))
        return srv_reply_error(c, conn, &err);
    srv_job *j = NULL;
    const eng_lora *lora = NULL;
    int rc =
        check_model(s, &req.gen, &lora, &err) || !(j = job_new(c, conn, "cmpl", &req.gen, lora));
    for (int i = 0; i < req.n_prompts && !rc; i++)
        rc = srv_prompt_ids(s, &req.prompts[i], "prompt", &ids[i], req.echo ? &j->echo[i] : NULL,
                            &err);
    enum MHD_Result ret;
    if (rc) {
        if (!j && !err.status) api_errorf(&err, 500, "server_error", NULL, NULL, "out of memory");
        ret = fail(c, conn, &err, j, NULL);
    } else {
        ret = run(j, conn, &req.gen, ids, req.n_prompts, "prompt");
    }
    for (int i = 0; i < req.n_prompts; i++) rs_ivec_free(&ids[i]);
    api_completion_request_free(&req);
    return ret;
}
