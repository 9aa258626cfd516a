/*
 * srv_responses.c — POST /v1/responses over the chat path, and the bounded in-memory store that
 * makes previous_response_id work. The request is converted to a chat request
 * (api_parse_responses) and run by srv_run_chat exactly as /v1/chat/completions runs one; only
 * the output is shaped differently (api_rstream). With store (the default, as OpenAI's), the
 * conversation — the previous one, this input and this output as chat messages — is kept under
 * the response id, so a continuation re-sends the same messages and the template renders the
 * same prefix again: the prefix cache serves it.
 */
#include <stdlib.h>
#include <string.h>

#include "server/srv_int.h"

/* ---------------------------------------------------------------- the store */

void srv_store_init(srv_store *st) {
    memset(st, 0, sizeof *st);
    pthread_mutex_init(&st->mu, NULL);
}

static void entry_free(srv_store_entry *en) {
    free(en->id);
    free(en->json);
    memset(en, 0, sizeof *en);
}

void srv_store_free(srv_store *st) {
    for (int i = 0; i < SRV_STORE_MAX; i++) entry_free(&st->e[i]);
    pthread_mutex_destroy(&st->mu);
}

/* Keep json (taken) under id; the oldest entries go while the store is over its bounds. */
static void store_put(srv_store *st, const char *id, char *json) {
    size_t n = strlen(json);
    char *key = strdup(id);
    if (!key || n > SRV_STORE_BYTES) {
        free(key);
        free(json);
        return;
    }
    pthread_mutex_lock(&st->mu);
    while (st->n && (st->n == SRV_STORE_MAX || st->bytes + n > SRV_STORE_BYTES)) {
        srv_store_entry *old = &st->e[st->head];
        st->bytes -= strlen(old->json);
        entry_free(old);
        st->head = (st->head + 1) % SRV_STORE_MAX;
        st->n--;
    }
    srv_store_entry *en = &st->e[(st->head + st->n) % SRV_STORE_MAX];
    en->id = key;
    en->json = json;
    st->bytes += n;
    st->n++;
    pthread_mutex_unlock(&st->mu);
}

/* A copy of the conversation stored under id, or NULL (api_prev_lookup). */
static cJSON *store_get(void *ctx, const char *id) {
    srv_store *st = ctx;
    cJSON *j = NULL;
    pthread_mutex_lock(&st->mu);
    for (int i = 0; i < st->n && !j; i++) {
        const srv_store_entry *en = &st->e[(st->head + i) % SRV_STORE_MAX];
        if (!strcmp(en->id, id)) j = cJSON_Parse(en->json);
    }
    pthread_mutex_unlock(&st->mu);
    return j;
}

/* ---------------------------------------------------------------- the route */

void srv_resp_finished(srv *s, srv_resp *r) {
    if (!r->conversation) return; /* store: false */
    cJSON_AddItemToArray(r->conversation, api_rs_assistant(&r->st));
    char *json = cJSON_PrintUnformatted(r->conversation);
    if (json) store_put(&s->store, r->st.id, json);
}

void srv_resp_free(srv_resp *r) {
    if (!r) return;
    api_rs_free(&r->st);
    cJSON_Delete(r->conversation);
    cJSON_Delete(r->echo);
    free(r);
}

enum MHD_Result srv_responses(srv_conn *c, struct MHD_Connection *conn) {
    srv *s = c->s;
    api_responses_request req;
    api_error err = {0};
    if (api_parse_responses(api_buf_str(&c->body), c->body.n, store_get, &s->store, &req, &err))
        return srv_reply_error(c, conn, &err);
    srv_resp *r = calloc(1, sizeof *r);
    if (!r) {
        api_responses_request_free(&req);
        api_errorf(&err, 500, "server_error", NULL, NULL, "out of memory");
        return srv_reply_error(c, conn, &err);
    }
    r->store = req.store;
    r->echo = req.echo;
    req.echo = NULL;
    if (req.store) r->conversation = req.conversation, req.conversation = NULL;
    enum MHD_Result ret = srv_run_chat(c, conn, &req.chat, r); /* takes r */
    api_responses_request_free(&req);
    return ret;
}
