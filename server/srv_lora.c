/*
 * srv_lora.c — POST /v1/load_lora_adapter and /v1/unload_lora_adapter, vLLM's run-time adapter
 * routes: {"lora_name", "lora_path"} loads PEFT files from the server's disk (read on this
 * connection's thread, beside running requests), {"lora_name"} unloads. Unloading hides the name
 * at once — a request naming it from then on is a 404 model_not_found — and this thread waits
 * for the requests still running under the adapter before answering (eng_lora_unload). Success
 * is vLLM's plain-text answer; errors are the project's error JSON.
 */
#include <stdio.h>
#include <string.h>

#include "server/srv_int.h"

/* The answer to a refused load or unload. */
static int lora_error(int rc, const rs_err *e, api_error *err) {
    if (rc == RS_ENOTFOUND)
        return api_errorf(err, 404, "invalid_request_error", "lora_name", "model_not_found", "%s",
                          e->msg);
    if (rc == RS_ENOMEM) return api_errorf(err, 500, "server_error", NULL, NULL, "%s", e->msg);
    return api_errorf(err, 400, "invalid_request_error", NULL,
                      rc == RS_EFULL ? "limit_reached" : "invalid_value", "%s", e->msg);
}

static enum MHD_Result lora_route(srv_conn *c, struct MHD_Connection *conn, int load) {
    srv *s = c->s;
    api_lora_request req;
    api_error err = {0};
    if (api_parse_lora(api_buf_str(&c->body), c->body.n, load, &req, &err))
        return srv_reply_error(c, conn, &err);
    rs_err e = {0};
    int rc = 0;
    if (!s->be.lora_load) rc = rs_errf(&e, RS_ENOTFOUND, "this server serves no LoRA adapters");
    for (int i = 0; !rc && load && i < s->n_names; i++)
        if (!strcmp(req.name, s->names[i]))
            rc = rs_errf(&e, RS_EINVAL, "lora_name %s is the base model's name",
                         RS_CLIP(req.name, 200));
    if (!rc)
        rc = load ? s->be.lora_load(s->be.ctx, req.name, req.path, &e)
                  : s->be.lora_unload(s->be.ctx, req.name, &e);
    char msg[256 + ENG_LORA_NAME_MAX];
    if (!rc)
        snprintf(msg, sizeof msg, "Success: LoRA adapter '%s' %s successfully.", req.name,
                 load ? "added" : "removed");
    api_lora_request_free(&req);
    if (rc) {
        lora_error(rc, &e, &err);
        return srv_reply_error(c, conn, &err);
    }
    return srv_reply(c, conn, 200, strdup(msg), "text/plain; charset=utf-8");
}

enum MHD_Result srv_lora_load(srv_conn *c, struct MHD_Connection *conn) {
    return lora_route(c, conn, 1);
}

enum MHD_Result srv_lora_unload(srv_conn *c, struct MHD_Connection *conn) {
    return lora_route(c, conn, 0);
}
