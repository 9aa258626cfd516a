/*
 * srv_int.h — internals shared by the server room's files (not a door: nothing outside server/
 * includes it).
 */
#ifndef RADIXSERVE_SRV_INT_H
#define RADIXSERVE_SRV_INT_H

#include <microhttpd.h>
#include <pthread.h>
#include <stdatomic.h>

#include "server/server.h"

/* ---------------------------------------------------------------- metrics */

#define SRV_HIST_MAX 16

typedef struct srv_hist {
    int n_bounds;                     /* finite upper bounds in use */
    double bounds[SRV_HIST_MAX];      /* "le" bounds in seconds, ascending */
    int64_t counts[SRV_HIST_MAX + 1]; /* per bucket (last: +Inf), not cumulative */
    double sum;                       /* sum of observations */
    int64_t count;                    /* observations */
} srv_hist;

typedef struct srv_metrics {
    pthread_mutex_t mu;        /* guards everything below (short critical sections) */
    int64_t by_status[600];    /* finished requests per HTTP status (499: client left) */
    int64_t prompt_tokens;     /* prompt tokens of finished generations */
    int64_t cached_tokens;     /* of which served from the prefix cache */
    int64_t completion_tokens; /* generated tokens */
    srv_hist ttft;             /* request arrival -> first generated token */
    srv_hist itl;              /* between consecutive tokens of one request */
} srv_metrics;

void srv_metrics_init(srv_metrics *m);
void srv_metrics_free(srv_metrics *m);
void srv_metrics_request(srv_metrics *m, int status, int prompt, int cached, int completion);
void srv_metrics_observe(srv_metrics *m, srv_hist *h, double seconds);
/* Prometheus text exposition (malloc'd). st NULL: the model is not loaded yet. */
char *srv_metrics_text(srv_metrics *m, const sched_stats *st);

/* ---------------------------------------------------------------- the Responses store */

#define SRV_STORE_MAX   256        /* stored responses at most (the oldest go first) */
#define SRV_STORE_BYTES (64 << 20) /* and their conversations' JSON at most, in bytes */

typedef struct srv_store_entry {
    char *id;   /* response id (owned) */
    char *json; /* its conversation: chat messages, input and output (owned) */
} srv_store_entry;

/* previous_response_id's memory: a ring of the newest responses (store: true), bounded in count
 * and bytes. Any connection thread reads and writes it under mu. */
typedef struct srv_store {
    pthread_mutex_t mu;
    srv_store_entry e[SRV_STORE_MAX]; /* mu: ring, oldest at head */
    int head, n;                      /* mu */
    size_t bytes;                     /* mu: JSON bytes held */
} srv_store;

void srv_store_init(srv_store *st);
void srv_store_free(srv_store *st);

/* A /v1/responses request as the chat path runs it (srv_responses.c). */
typedef struct srv_resp {
    api_rstream st;      /* the Responses output being built */
    cJSON *echo;         /* owned until srv_run_chat hands it to st */
    cJSON *conversation; /* owned: stored with the output at the end; NULL: store false */
    int store;           /* the request's "store" */
    const char *finish;  /* the chat finish_reason, once known (static string) */
} srv_resp;

/* The generation finished: store its conversation + output (when asked). */
void srv_resp_finished(srv *s, srv_resp *r);
void srv_resp_free(srv_resp *r);

/* ---------------------------------------------------------------- the server */

/* One TCP connection (MHD's socket context), from MHD's STARTED to its CLOSED notification,
 * which MHD sends before it closes the socket: so the watchdog, holding conns_mu, never shuts a
 * descriptor that was closed and reused. */
typedef struct srv_sock {
    struct srv_sock *prev, *next; /* in srv.conns (under conns_mu) */
    int fd;                       /* the connection's socket */
    int reserve;                  /* accepted beyond max_conns: answered fast, then closed */
    double deadline;              /* the request being read is complete by then, or the
                                     watchdog shuts the socket; 0: none (under conns_mu) */
} srv_sock;

struct srv {
    srv_config cfg; /* configuration (strings below are owned copies) */
    char *host, *api_key, *cors_origin, *model_name;
    char **names; /* served model names: model_name split at commas (owned) */
    int n_names;  /* >= 1 */
    struct MHD_Daemon *daemon;
    atomic_int ready;     /* 1 once be/model are set (release store, acquire load) */
    srv_backend be;       /* generation backend, valid when ready */
    srv_model model;      /* served model, valid when ready */
    atomic_int stopping;  /* shutdown began: cancel and refuse */
    atomic_int active;    /* generation requests being answered */
    atomic_llong next_id; /* request id counter */
    char fingerprint[32]; /* system_fingerprint of this process */
    srv_metrics metrics;
    srv_store store;          /* stored Responses conversations (previous_response_id) */
    pthread_mutex_t conns_mu; /* guards conns, n_conns and every srv_sock.deadline */
    srv_sock *conns;          /* open connections */
    int n_conns;
    pthread_t watchdog;      /* shuts connections past their request deadline */
    int watchdog_started;    /* 1: joined by srv_stop */
    atomic_int watchdog_end; /* srv_stop asks it to return */
};

/* Per-connection state (MHD's con_cls), alive from the first call of the access handler to the
 * request-completed notification. A streaming job writes its status and usage here from the
 * content-reader callback, which runs on the connection's own thread before that notification. */
typedef struct srv_conn {
    srv *s;
    srv_sock *sock; /* the connection this request came on (NULL if its STARTED failed) */
    int close;      /* answer with Connection: close (reserve connections) */
    double t0;      /* arrival time */
    api_buf body;   /* upload collected so far */
    int too_big;    /* the body exceeded max_body_bytes: answer 413 */
    int status;     /* status answered (for the log line and metrics) */
    int prompt_tokens, cached_tokens, completion_tokens; /* usage, for the log line */
    char method[8];                                      /* for the log line */
    char path[96];                                       /* for the log line */
} srv_conn;

/* Queue a JSON (or text) response with the CORS headers. Takes ownership of body. */
enum MHD_Result srv_reply(srv_conn *c, struct MHD_Connection *conn, int status, char *body,
                          const char *content_type);
/* Queue an OpenAI error object. */
enum MHD_Result srv_reply_error(srv_conn *c, struct MHD_Connection *conn, const api_error *err);
void srv_add_common_headers(srv *s, struct MHD_Response *r);

/* The served name a request asked for (the first one when absent or unknown). */
const char *srv_model_name(const srv *s, const char *asked);
/* The model a request names: a loaded LoRA adapter (*lora gets a reference the caller
 * releases, eng_lora_release), or the base model (*lora NULL) when `asked` is absent, "", a
 * served name, or anything under any_model_name; else a 404 model_not_found (as OpenAI
 * answers; also for an adapter being unloaded). */
int srv_resolve_model(const srv *s, const char *asked, const eng_lora **lora, api_error *err);
/* POST /v1/load_lora_adapter and /v1/unload_lora_adapter (srv_lora.c). */
enum MHD_Result srv_lora_load(srv_conn *c, struct MHD_Connection *conn);
enum MHD_Result srv_lora_unload(srv_conn *c, struct MHD_Connection *conn);
/* A token's text as it reads inside a sequence (malloc'd; "" when it cannot be decoded). */
char *srv_token_text(srv *s, int32_t id);

/* Shared by the generation routes (srv_gen.c). */
/* The 4xx/5xx answer to a refused sched_submit (503 queue full, 400 too big or invalid). */
int srv_submit_error(int rc, const rs_err *e, api_error *err);
/* A prompt of n tokens may be submitted: not empty, shorter than the context (else a 400). */
int srv_check_prompt(const srv *s, int n, const char *param, api_error *err);
/* One prompt's ids: text encoded with the model's special tokens, or ids range-checked; with
 * echo, its text too (malloc'd). */
int srv_prompt_ids(srv *s, const api_prompt *p, const char *param, rs_ivec *ids, char **echo,
                   api_error *err);
/* The client's socket hung up (POLLRDHUP); fd < 0: never. */
int srv_client_gone(int fd);

/* Turn-aware warming (srv_warm.c): render the request's conversation with the answer as an
 * assistant message, as the next request will render it, tokenize it and hand it to the
 * backend's warm (errors are dropped: warming is best effort). tpl_req is the template input
 * the request was rendered from (api_chat_request.tpl). */
void srv_warm_next_turn(srv *s, const cJSON *tpl_req, const char *answer, const char *cache_salt,
                        const eng_lora *lora);

/* Generation routes (srv_gen.c, srv_embed.c). */
enum MHD_Result srv_chat(srv_conn *c, struct MHD_Connection *conn);
enum MHD_Result srv_completions(srv_conn *c, struct MHD_Connection *conn);
enum MHD_Result srv_embeddings(srv_conn *c, struct MHD_Connection *conn);
enum MHD_Result srv_responses(srv_conn *c, struct MHD_Connection *conn);
/* Render, tokenize, submit and answer a parsed chat request (req stays the caller's). resp NULL:
 * Chat Completions shapes; else Responses shapes (resp is taken, freed with the job). */
enum MHD_Result srv_run_chat(srv_conn *c, struct MHD_Connection *conn, api_chat_request *req,
                             srv_resp *resp);

/* ---------------------------------------------------------------- the web UI (srv_static.c) */

/* One file of webui/, embedded at build time (scripts/embed-webui.sh writes the table into
 * $(BUILD)/gen/webui.c). */
typedef struct srv_asset {
    const char *name;          /* path below webui/, e.g. "chat.js", "vendor/purify.min.js" */
    const unsigned char *data; /* its bytes */
    size_t size;               /* their count */
} srv_asset;

extern const srv_asset SRV_ASSETS[];
extern const int SRV_N_ASSETS;

/* GET / and /index.html (the chat), /cache (the tree view), /webui/NAME (their files): public,
 * under a strict Content-Security-Policy; 404 when the server runs with --no-webui. */
enum MHD_Result srv_static(srv_conn *c, struct MHD_Connection *conn);

#endif
