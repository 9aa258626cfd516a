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

/* ---------------------------------------------------------------- the server */

struct srv {
    srv_config cfg; /* configuration (strings below are owned copies) */
    char *host, *api_key, *cors_origin, *model_name;
    struct MHD_Daemon *daemon;
    atomic_int ready;     /* 1 once be/model are set (release store, acquire load) */
    srv_backend be;       /* generation backend, valid when ready */
    srv_model model;      /* served model, valid when ready */
    atomic_int stopping;  /* shutdown began: cancel and refuse */
    atomic_int active;    /* generation requests being answered */
    atomic_llong next_id; /* request id counter */
    char fingerprint[32]; /* system_fingerprint of this process */
    srv_metrics metrics;
};

/* Per-connection state (MHD's con_cls), alive from the first call of the access handler to the
 * request-completed notification. A streaming job writes its status and usage here from the
 * content-reader callback, which runs on the connection's own thread before that notification. */
typedef struct srv_conn {
    srv *s;
    double t0;    /* arrival time */
    api_buf body; /* upload collected so far */
    int too_big;  /* the body exceeded max_body_bytes: answer 413 */
    int status;   /* status answered (for the log line and metrics) */
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

/* Generation routes (srv_gen.c). */
enum MHD_Result srv_chat(srv_conn *c, struct MHD_Connection *conn);
enum MHD_Result srv_completions(srv_conn *c, struct MHD_Connection *conn);

#endif
