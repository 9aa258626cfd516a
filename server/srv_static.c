/*
 * srv_static.c — the web UI: the files of webui/ (a chat page and a live view of the radix
 * tree), embedded in the binary at build time, served from memory.
 *
 * They are public (no API key: the pages ask the user for one when the API answers 401) and go
 * out under a Content-Security-Policy that allows scripts, styles and fetches from this server
 * only, and nothing inline: model output, which the chat renders as Markdown, can never run
 * code even if the sanitiser let something through. --no-webui answers 404 here instead.
 */
#include <stdio.h>
#include <string.h>

#include "server/srv_int.h"

#define WEBUI_PREFIX "/webui/"

static const char CSP[] = "default-src 'none'; script-src 'self'; style-src 'self'; "
                          "connect-src 'self'; img-src 'self'; base-uri 'none'; "
                          "form-action 'none'; frame-ancestors 'none'";

/* The pages' own addresses and the file each shows. */
static const struct {
    const char *path, *file;
} PAGES[] = {{"/", "index.html"}, {"/index.html", "index.html"}, {"/cache", "cache.html"}};

static const struct {
    const char *ext, *type;
} TYPES[] = {
    {".html", "text/html; charset=utf-8"},
    {".js", "text/javascript; charset=utf-8"},
    {".css", "text/css; charset=utf-8"},
    {".svg", "image/svg+xml"},
    {".png", "image/png"},
    {".txt", "text/plain; charset=utf-8"},
};

static const char *content_type(const char *name) {
    size_t n = strlen(name);
    for (size_t i = 0; i < sizeof TYPES / sizeof TYPES[0]; i++) {
        size_t k = strlen(TYPES[i].ext);
        if (n > k && !strcmp(name + n - k, TYPES[i].ext)) return TYPES[i].type;
    }
    return "application/octet-stream";
}

static const srv_asset *find_asset(const char *name) {
    for (int i = 0; i < SRV_N_ASSETS; i++)
        if (!strcmp(SRV_ASSETS[i].name, name)) return &SRV_ASSETS[i];
    return NULL;
}

/* The file a request path names, or NULL. c->path holds the URL (cut to its buffer: a URL that
 * filled it is longer than any file name, so it names nothing). */
static const srv_asset *lookup(const srv_conn *c) {
    const char *url = c->path;
    if (strlen(url) + 1 >= sizeof c->path) return NULL;
    for (size_t i = 0; i < sizeof PAGES / sizeof PAGES[0]; i++)
        if (!strcmp(url, PAGES[i].path)) return find_asset(PAGES[i].file);
    if (!strncmp(url, WEBUI_PREFIX, strlen(WEBUI_PREFIX)))
        return find_asset(url + strlen(WEBUI_PREFIX));
    return NULL;
}

static enum MHD_Result not_found(srv_conn *c, struct MHD_Connection *conn, const char *why) {
    api_error err;
    api_errorf(&err, 404, "invalid_request_error", NULL, "not_found", "%s", why);
    return srv_reply_error(c, conn, &err);
}

enum MHD_Result srv_static(srv_conn *c, struct MHD_Connection *conn) {
    if (c->s->cfg.no_webui)
        return not_found(c, conn, "The web UI is turned off on this server (--no-webui)");
    const srv_asset *a = lookup(c);
    if (!a) return not_found(c, conn, "No such file in the web UI");
    /* The bytes are static: libmicrohttpd reads them in place. */
    struct MHD_Response *r =
        MHD_create_response_from_buffer(a->size, (void *)a->data, MHD_RESPMEM_PERSISTENT);
    if (!r) return MHD_NO;
    MHD_add_response_header(r, "Content-Type", content_type(a->name));
    MHD_add_response_header(r, "Content-Security-Policy", CSP);
    MHD_add_response_header(r, "X-Content-Type-Options", "nosniff");
    MHD_add_response_header(r, "Referrer-Policy", "no-referrer");
    MHD_add_response_header(r, "Cache-Control", "no-cache");
    c->status = 200;
    enum MHD_Result ret = MHD_queue_response(conn, 200, r);
    MHD_destroy_response(r);
    return ret;
}
