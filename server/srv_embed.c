/*
 * srv_embed.c — POST /v1/embeddings: each input becomes one scheduler request with
 * sched_params.embed set (a prefill-only sequence, batched with chat and completion work in the
 * same steps), whose FINISH carries the pooled final hidden state; the vectors are truncated to
 * `dimensions`, normalised as the model's sentence-transformers config says, and answered in
 * input order. Like the generation routes, the connection's thread waits in 100 ms slices and
 * polls its socket between them, so a client that leaves cancels every input within a second.
 */
#include <stdlib.h>
#include <string.h>

#include "server/srv_int.h"

#define EMBED_SLICE_MS 100

/* One embeddings request being answered. */
typedef struct embed_job {
    srv *s;
    int fd;                                 /* the client's socket */
    sched_request *r[API_MAX_EMBED_INPUTS]; /* one per input (owned) */
    int n_req;                              /* submitted */
    float *vec[API_MAX_EMBED_INPUTS];       /* each input's vector once it came (owned) */
    int dims[API_MAX_EMBED_INPUTS];         /* its length after api_embed_finish */
    int prompt_tokens;                      /* summed over inputs */
    int cached_tokens;                      /* of which served from the prefix cache */
    int cancelled;                          /* shutdown: asked the scheduler to cancel */
    const eng_lora *lora;                   /* the adapter named (held), NULL: base model */
} embed_job;

static void embed_job_free(embed_job *j) {
    for (int i = 0; i < j->n_req; i++) {
        j->s->be.request_free(j->r[i]); /* cancels those still running */
        free(j->vec[i]);
    }
    if (j->n_req) atomic_fetch_sub(&j->s->active, 1);
    eng_lora_release(j->lora);
    free(j);
}

/* Submit input i (already checked and tokenized). */
static int embed_submit(embed_job *j, const rs_ivec *ids, api_error *err) {
    srv *s = j->s;
    sched_params p = {.max_tokens = 1, .n = 1, .embed = 1};
    p.sampling = (eng_sampling){.top_p = 1, .repetition_penalty = 1}; /* nothing is sampled */
    p.lora = j->lora;
    rs_err e = {0};
    if (srv_check_prompt(s, ids->n, "input", err)) return RS_EINVAL;
    int rc = s->be.submit(s->be.ctx, ids->v, ids->n, &p, &j->r[j->n_req], &e);
    if (rc) return srv_submit_error(rc, &e, err);
    if (j->n_req++ == 0) atomic_fetch_add(&s->active, 1);
    return 0;
}

#define CLIENT_GONE 1 /* embed_wait_one: the client left (errors are negative RS_E* codes) */

/* Events of input i until its DONE. 0; CLIENT_GONE; else an error in *err. */
static int embed_wait_one(embed_job *j, int i, api_error *err) {
    srv *s = j->s;
    for (;;) {
        if (srv_client_gone(j->fd)) return CLIENT_GONE;
        if (!j->cancelled && atomic_load(&s->stopping)) {
            for (int k = 0; k < j->n_req; k++) s->be.cancel(j->r[k]);
            j->cancelled = 1;
        }
        sched_event ev;
        if (s->be.next_event(j->r[i], &ev, EMBED_SLICE_MS) != 1) continue;
        int type = ev.type, rc = 0;
        if (type == SCHED_EV_FINISH && ev.embedding && !j->vec[i]) {
            j->vec[i] = ev.embedding;
            j->dims[i] = ev.n_embedding;
            ev.embedding = NULL;
        } else if (type == SCHED_EV_DONE) {
            j->prompt_tokens += ev.prompt_tokens;
            j->cached_tokens += ev.cached_tokens;
            if (!j->vec[i])
                rc = api_errorf(err, 500, "server_error", NULL, NULL,
                                "the scheduler finished input %d without an embedding", i);
        } else if (type == SCHED_EV_ERROR) {
            rc = j->cancelled
                     ? api_errorf(err, 503, "server_error", NULL, "shutting_down",
                                  "The server is shutting down")
                     : api_errorf(err, ev.code == RS_EINVAL ? 400 : 500,
                                  ev.code == RS_EINVAL ? "invalid_request_error" : "server_error",
                                  NULL, NULL, "%s", ev.message);
        }
        s->be.event_free(&ev);
        if (rc) return rc;
        if (type == SCHED_EV_DONE) return 0;
    }
}

/* Parse, check the model and dimensions, tokenize and submit every input. */
static int embed_start(embed_job *j, const api_embed_request *req, api_error *err) {
    srv *s = j->s;
    if (srv_resolve_model(s, req->model, &j->lora, err)) return RS_EINVAL;
    if (s->model.embed_dim <= 0)
        return api_errorf(err, 400, "invalid_request_error", NULL, "unsupported_value",
                          "this model serves no embeddings");
    if (req->dimensions > s->model.embed_dim)
        return api_errorf(err, 400, "invalid_request_error", "dimensions", "invalid_value",
                          "'dimensions' must be between 1 and %d (this model's size), got %d",
                          s->model.embed_dim, req->dimensions);
    for (int i = 0; i < req->n_inputs; i++) {
        rs_ivec ids = {0};
        int rc = srv_prompt_ids(s, &req->inputs[i], "input", &ids, NULL, err);
        if (!rc) rc = embed_submit(j, &ids, err);
        rs_ivec_free(&ids);
        if (rc) return rc;
    }
    return 0;
}

enum MHD_Result srv_embeddings(srv_conn *c, struct MHD_Connection *conn) {
    srv *s = c->s;
    api_embed_request req;
    api_error err = {0};
    if (api_parse_embeddings(api_buf_str(&c->body), c->body.n, &req, &err))
        return srv_reply_error(c, conn, &err);
    embed_job *j = calloc(1, sizeof *j);
    int rc = j ? 0 : api_errorf(&err, 500, "server_error", NULL, NULL, "out of memory");
    if (j) {
        j->s = s;
        const union MHD_ConnectionInfo *ci =
            MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
        j->fd = ci ? ci->connect_fd : -1;
        rc = embed_start(j, &req, &err);
    }
    for (int i = 0; !rc && i < j->n_req; i++) rc = embed_wait_one(j, i, &err);
    if (rc == CLIENT_GONE) { /* nobody to answer */
        c->status = 499;
        api_embed_request_free(&req);
        embed_job_free(j);
        return MHD_NO;
    }
    char *body = NULL;
    if (!rc) {
        for (int i = 0; i < j->n_req; i++)
            j->dims[i] = api_embed_finish(j->vec[i], j->dims[i], req.dimensions,
                                          s->model.embed_normalize || req.dimensions > 0);
        body = api_embeddings_response(
            j->lora ? eng_lora_name(j->lora) : srv_model_name(s, req.model), j->vec, j->dims,
            j->n_req, req.base64, j->prompt_tokens, j->cached_tokens);
        c->prompt_tokens = j->prompt_tokens;
        c->cached_tokens = j->cached_tokens;
    }
    api_embed_request_free(&req);
    if (j) embed_job_free(j);
    return rc ? srv_reply_error(c, conn, &err) : srv_reply(c, conn, 200, body, NULL);
}
