/*
 * server.h — the door of the server room: the OpenAI-compatible HTTP front end (libmicrohttpd)
 * over the scheduler.
 *
 * Threads: libmicrohttpd runs one thread per connection (MHD_USE_THREAD_PER_CONNECTION). A
 * connection's thread parses and validates the body, renders the template, tokenizes, submits to
 * the scheduler, then blocks on that request's events — in the access handler for a plain
 * response, in the content-reader callback for SSE. Blocking is what makes this simple: each
 * waiting client costs one parked thread, and while it waits the thread polls its own socket for
 * hang-up (POLLRDHUP) every 100 ms, so a client that leaves is cancelled within a second whether
 * it was streaming or not, in prefill or in decode. No thread but the scheduler's touches the
 * model, the tree or the pool.
 *
 * Connection limits (srv_config; README "Connection limits"): MHD closes a connection idle for
 * idle_timeout_s, except while a request is being answered (the thread blocks in the handler
 * then; a stream writes at least a heartbeat per heartbeat_ms, so a stream whose client reads is
 * never idle). A watchdog thread shuts the socket of a connection whose request (headers and
 * body) is not complete request_timeout_s after the connection became ready for it (accepted,
 * or the previous answer finished): trickling bytes does not defeat it. MHD refuses connections
 * beyond max_conns_per_client from one address, and beyond max_conns + conn_reserve in all; a
 * connection accepted beyond max_conns is a reserve one: /health is answered, everything else a
 * 503 + Retry-After, then it is closed (and it gets SRV_RESERVE_TIMEOUT_S for idle and request
 * deadlines), so a fresh client always gets an answer while idle ones hold the limit.
 *
 * The server starts listening before the model is loaded: /health answers 503 {"status":
 * "loading"} (and model routes 503 + Retry-After) until srv_set_ready hands it the backend.
 *
 * The backend is a table of functions (the scheduler and tokenizer in production, a scripted
 * fake in tests/test_server.c), so the HTTP layer is tested without a model.
 */
#ifndef RADIXSERVE_SERVER_H
#define RADIXSERVE_SERVER_H

#include <stddef.h>
#include <stdint.h>

#include "api/api.h"
#include "chat/chat.h"
#include "sched/sched.h"

typedef struct srv_config {
    const char *host;        /* bind address (IPv4 or IPv6 literal, or "localhost") */
    int port;                /* 0: any free port (srv_port tells which) */
    const char *api_key;     /* NULL/"": no authentication; else Bearer KEY on every route
                                but /health and CORS preflights */
    const char *cors_origin; /* Access-Control-Allow-Origin value (NULL: "*") */
    const char *model_name;  /* served model ids, comma-separated (/v1/models lists each; the
                                first is the default and what responses name otherwise) */
    int any_model_name;      /* 1: any "model" is accepted (served as the first name); 0: an
                                unknown one is a 404 model_not_found, as OpenAI answers */
    size_t max_body_bytes;   /* request bodies above this: 413 */
    int default_max_tokens;  /* max_tokens when a request omits it */
    int retry_after_s;       /* Retry-After seconds on 503 */
    int heartbeat_ms;        /* SSE comment heartbeat while a stream has nothing to send */
    int log_requests;        /* 1: one line per request on stderr */
    int idle_timeout_s;    /* a connection with no I/O for this long is closed (>= 2 heartbeats) */
    int request_timeout_s; /* headers + body must arrive within this (see the header comment) */
    int max_conns;         /* connections served normally, in all */
    int conn_reserve;      /* connections beyond max_conns answered fast (/health or 503) */
    int max_conns_per_client; /* connections from one client address (more are refused) */
    int warm_next_turn;       /* 1: after a chat completion, prefill the conversation as its next
                                 request will send it (srv_warm.c), from spare capacity */
    int no_webui;             /* 1: no chat page (/) and no cache view (/cache) */
} srv_config;

/* The one owner of every default: a zero field of a srv_config given to srv_start takes the
 * value srv_config_default gives it, and the CLI's flags and configs/default.json start from
 * it too. Strings are left NULL (srv_start's defaults: 127.0.0.1, no key, "*", "model"). */
void srv_config_default(srv_config *c);

#define SRV_RESERVE_TIMEOUT_S 2 /* idle and request deadline of a reserve connection */

/* The generation side, as function pointers (see the header comment). */
typedef struct srv_backend {
    void *ctx; /* passed to submit / get_stats / encode / decode */
    int (*submit)(void *ctx, const int32_t *prompt, int n_prompt, const sched_params *p,
                  sched_request **out, rs_err *e);
    int (*next_event)(sched_request *r, sched_event *ev, int timeout_ms);
    void (*cancel)(sched_request *r);
    void (*request_free)(sched_request *r);
    void (*event_free)(sched_event *ev);
    void (*get_stats)(void *ctx, sched_stats *out);
    /* tok_encode / tok_decode of the served model's tokenizer */
    int (*encode)(void *ctx, const char *text, size_t len, int flags, rs_ivec *out, rs_err *e);
    int (*decode)(void *ctx, const int32_t *ids, int n, int skip_special, char **out, rs_err *e);
    /* sched_cache_json: the radix tree as JSON (*out malloc'd) for GET /v1/cache; NULL: the
     * backend has no tree to show (the answer then carries the summary only) */
    int (*cache_json)(void *ctx, int max_tokens, char **out, rs_err *e);
    /* sched_warm: prefill ids into the prefix cache as low-priority work; NULL: no warming */
    int (*warm)(void *ctx, const int32_t *ids, int n, const char *cache_salt, const eng_lora *lora,
                rs_err *e);
    /* LoRA adapters (eng_lora_acquire / _load / _unload / _names of the served registry); NULL:
     * the backend serves none (requests naming one get 404, the load routes 404) */
    int (*lora_acquire)(void *ctx, const char *name, const eng_lora **out, rs_err *e);
    int (*lora_load)(void *ctx, const char *name, const char *path, rs_err *e);
    int (*lora_unload)(void *ctx, const char *name, rs_err *e);
    int (*lora_names)(void *ctx, char (*names)[ENG_LORA_NAME_MAX], int max);
} srv_backend;

/* What the server knows of the served model. */
typedef struct srv_model {
    const chat_format *chat;   /* chat format: template (plain rendering when it has none),
                                  think and tool-call markers, built at model load */
    eng_gen_defaults defaults; /* sampling defaults from generation_config.json */
    int ctx_size;              /* context per sequence: prompts of this many tokens are 400s */
    int vocab_size;            /* ids are 0 .. vocab_size - 1 */
    int prefix_cache;          /* reported by /v1/cache */
    int embed_dim;             /* embeddings' length (the hidden size); 0: none served */
    int embed_normalize;       /* embeddings are L2-normalised (eng_config.pool_normalize) */
    const char *quantization;  /* weight format for /v1/models ("q8_0", "bf16"...), static */
    const char *format;        /* the weights' file format ("gguf", "safetensors"), in /v1/models */
} srv_model;

/* The production backend: the scheduler and the tokenizer. ctx is caller-owned and, like what
 * it points to, must outlive the server. */
typedef struct srv_sched_ctx {
    sched *s;                 /* the running scheduler */
    const tok_tokenizer *tok; /* the served model's tokenizer */
    eng_lora_reg *loras;      /* the model's LoRA adapters (--lora and the load routes) */
} srv_sched_ctx;

void srv_backend_sched(srv_backend *be, srv_sched_ctx *ctx);

typedef struct srv srv; /* opaque */

/* Listen on host:port (strings in c are copied). */
int srv_start(srv **out, const srv_config *c, rs_err *e);
int srv_port(const srv *s);
/* The model is loaded: start serving it. be and m are copied; what they point to must outlive
 * the server. */
void srv_set_ready(srv *s, const srv_backend *be, const srv_model *m);
/* Graceful shutdown, step 1: stop accepting connections and cancel every running request.
 * Returns at once; srv_active tells how many requests are still being answered. */
void srv_shutdown(srv *s);
int srv_active(const srv *s);
/* Step 2: close everything, join libmicrohttpd's threads, free. */
void srv_stop(srv *s);

#endif
