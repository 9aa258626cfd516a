/*
 * serve.c — `radixserve serve`: settings from configs/FILE.json and flags (flags win), the HTTP
 * server started first (so /health answers "loading"), then the tokenizer, chat format, model and
 * scheduler, then serving until SIGINT/SIGTERM, then a graceful stop (exit 0).
 */
#include <cjson/cJSON.h>
#include <pthread.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/cli.h"
#include "server/server.h"

/* Every setting; a config file's keys and the long flags are the same names. */
typedef struct serve_opts {
    char *model;             /* --model DIR|FILE.gguf (required) */
    char *host;              /* --host */
    int port;                /* --port */
    int threads;             /* --threads: forward-pass workers (0: all cores) */
    int kv_cache_mb;         /* --kv-cache-mb: KV pool budget */
    int max_batch;           /* --max-batch: running sequences at most */
    int max_queue;           /* --max-queue: waiting requests at most (beyond: 503) */
    char *api_key;           /* --api-key ("" none) */
    char *served_model_name; /* --served-model-name: comma list ("" = model dir's base name) */
    int any_model_name;      /* --any-model-name: accept any "model" in requests */
    int ctx_size;            /* --ctx-size (0 = max_position_embeddings, lowered to the pool) */
    int default_max_tokens;  /* --default-max-tokens */
    char *cors_origin;       /* --cors-origin */
    int no_prefix_cache;     /* --no-prefix-cache */
    int block_size;          /* --block-size: tokens per KV block */
    int token_budget;        /* --token-budget: new tokens per scheduler step */
    int mixed_prefill;       /* --mixed-prefill: prefill tokens per step beside decoding rows */
    int max_body_mb;         /* --max-body-mb: request bodies above this get 413 */
    char *weights;           /* --weights: quantize at load (NULL: as stored) */
    int idle_timeout;        /* --idle-timeout: seconds without I/O before a connection closes */
    int request_timeout;     /* --request-timeout: seconds to send a request's headers + body */
    int max_connections;     /* --max-connections: connections served normally */
    int connection_reserve;  /* --connection-reserve: beyond those, answered fast */
    int max_connections_per_client; /* --max-connections-per-client: per client address */
    int warm_next_turn;             /* --warm-next-turn 0|1: prefill a chat's next turn when idle */
    int no_webui;                   /* --no-webui */
    char *lora[ENG_LORA_MAX];       /* --lora NAME=DIR (repeatable; config key "lora": a list) */
    int n_lora;
} serve_opts;

typedef enum { OPT_STR, OPT_INT, OPT_FLAG } opt_kind;

static const struct opt {
    const char *name;
    opt_kind kind;
    size_t off;
    const char *help;
} OPTS[] = {
    {"model", OPT_STR, offsetof(serve_opts, model), "DIR  Hugging Face model directory"},
    {"host", OPT_STR, offsetof(serve_opts, host), "ADDR  bind address (127.0.0.1)"},
    {"port", OPT_INT, offsetof(serve_opts, port), "N  TCP port"},
    {"threads", OPT_INT, offsetof(serve_opts, threads), "N  forward-pass threads (all cores)"},
    {"kv-cache-mb", OPT_INT, offsetof(serve_opts, kv_cache_mb), "M  KV cache budget"},
    {"max-batch", OPT_INT, offsetof(serve_opts, max_batch), "B  running sequences"},
    {"max-queue", OPT_INT, offsetof(serve_opts, max_queue), "Q  waiting requests"},
    {"api-key", OPT_STR, offsetof(serve_opts, api_key), "KEY  require Bearer KEY"},
    {"served-model-name", OPT_STR, offsetof(serve_opts, served_model_name),
     "A,B,..  model ids, all in /v1/models (model dir's base name)"},
    {"any-model-name", OPT_FLAG, offsetof(serve_opts, any_model_name),
     "  accept any \"model\" (else an unknown name is a 404)"},
    {"ctx-size", OPT_INT, offsetof(serve_opts, ctx_size),
     "N  context per sequence (model max, lowered to the KV pool)"},
    {"default-max-tokens", OPT_INT, offsetof(serve_opts, default_max_tokens),
     "N  max_tokens when omitted"},
    {"cors-origin", OPT_STR, offsetof(serve_opts, cors_origin), "ORIGIN  CORS origin (*)"},
    {"no-prefix-cache", OPT_FLAG, offsetof(serve_opts, no_prefix_cache),
     "  disable the radix-tree prefix cache"},
    {"block-size", OPT_INT, offsetof(serve_opts, block_size), "N  tokens per KV block"},
    {"token-budget", OPT_INT, offsetof(serve_opts, token_budget),
     "N  new tokens per scheduler step"},
    {"mixed-prefill", OPT_INT, offsetof(serve_opts, mixed_prefill),
     "N  prefill tokens per step while streams decode"},
    {"max-body-mb", OPT_INT, offsetof(serve_opts, max_body_mb), "M  request body limit"},
    {"idle-timeout", OPT_INT, offsetof(serve_opts, idle_timeout),
     "S  close a connection after S seconds without I/O, never while answering"},
    {"request-timeout", OPT_INT, offsetof(serve_opts, request_timeout),
     "S  a request's headers and body must arrive within S seconds"},
    {"max-connections", OPT_INT, offsetof(serve_opts, max_connections),
     "N  connections served, in all"},
    {"connection-reserve", OPT_INT, offsetof(serve_opts, connection_reserve),
     "N  connections beyond --max-connections: /health or a 503 at once"},
    {"max-connections-per-client", OPT_INT, offsetof(serve_opts, max_connections_per_client),
     "N  connections from one client address"},
    {"weights", OPT_STR, offsetof(serve_opts, weights),
     "q8_0|q4_k_m|q4_0  quantize the weights at load (as stored)"},
    {"warm-next-turn", OPT_INT, offsetof(serve_opts, warm_next_turn),
     "0|1  after a chat completion, prefill its next turn from spare capacity"},
    {"no-webui", OPT_FLAG, offsetof(serve_opts, no_webui),
     "  no chat page (/) and no cache view (/cache)"},
};
#define N_OPTS (sizeof OPTS / sizeof OPTS[0])

static void opts_defaults(serve_opts *o);
static void opts_free(serve_opts *o);

/* An integer option whose help names no default shows the one in force. */
static void usage(FILE *f) {
    serve_opts d;
    opts_defaults(&d);
    fprintf(f, "usage: radixserve serve --model DIR|FILE.gguf [options]\n\noptions (a --config "
               "FILE.json holds the same keys; flags override it):\n");
    fprintf(f, "  --config FILE  JSON settings file (e.g. configs/default.json)\n");
    fprintf(f, "  --lora NAME=DIR  serve the PEFT LoRA adapter in DIR as model NAME "
               "(repeatable; config key \"lora\": a list)\n");
    for (size_t i = 0; i < N_OPTS; i++) {
        fprintf(f, "  --%s %s", OPTS[i].name, OPTS[i].help);
        if (OPTS[i].kind == OPT_INT && !strchr(OPTS[i].help, '('))
            fprintf(f, " (%d)", *(const int *)((const char *)&d + OPTS[i].off));
        fputc('\n', f);
    }
    opts_free(&d);
}

static void *slot(serve_opts *o, const struct opt *d) {
    return (char *)o + d->off;
}

static const struct opt *find_opt(const char *name) {
    for (size_t i = 0; i < N_OPTS; i++)
        if (!strcmp(OPTS[i].name, name)) return &OPTS[i];
    return NULL;
}

static int set_str(serve_opts *o, const struct opt *d, const char *v) {
    char **p = slot(o, d);
    free(*p);
    *p = strdup(v);
    return *p ? 0 : -1;
}

static int set_int(serve_opts *o, const struct opt *d, const char *v) {
    char *end;
    long x = strtol(v, &end, 10);
    if (!*v || *end || x < 0 || x > 1 << 30) {
        fprintf(stderr, "radixserve serve: --%s needs a non-negative integer (got '%s')\n", d->name,
                v);
        return -1;
    }
    *(int *)slot(o, d) = (int)x;
    return 0;
}

/* One --lora NAME=DIR, kept as given (split at load). */
static int add_lora(serve_opts *o, const char *v) {
    if (!strchr(v, '=') || v[0] == '=' || !strchr(v, '=')[1]) {
        fprintf(stderr, "radixserve serve: --lora needs NAME=DIR (got '%s')\n", v);
        return -1;
    }
    if (o->n_lora == ENG_LORA_MAX) {
        fprintf(stderr, "radixserve serve: at most %d --lora adapters\n", ENG_LORA_MAX);
        return -1;
    }
    return (o->lora[o->n_lora] = strdup(v)) ? (o->n_lora++, 0) : -1;
}

/* The config file's "lora": a list of "NAME=DIR" strings. */
static int apply_lora_json(serve_opts *o, const cJSON *it, const char *path) {
    const cJSON *s;
    if (!cJSON_IsArray(it)) {
        fprintf(stderr, "radixserve serve: %s: 'lora' must be a list of \"NAME=DIR\"\n", path);
        return -1;
    }
    cJSON_ArrayForEach(s, it) if (!cJSON_IsString(s) || add_lora(o, s->valuestring)) {
        fprintf(stderr, "radixserve serve: %s: 'lora' must be a list of \"NAME=DIR\"\n", path);
        return -1;
    }
    return 0;
}

/* One key of the config file, typed like its flag. */
static int apply_json(serve_opts *o, const cJSON *it, const char *path) {
    if (!strcmp(it->string, "lora")) return apply_lora_json(o, it, path);
    const struct opt *d = find_opt(it->string);
    char num[32];
    if (!d) {
        fprintf(stderr, "radixserve serve: %s: unknown key '%s'\n", path, it->string);
        return -1;
    }
    if (d->kind == OPT_STR && cJSON_IsString(it)) return set_str(o, d, it->valuestring);
    if (d->kind == OPT_FLAG && cJSON_IsBool(it)) {
        *(int *)slot(o, d) = cJSON_IsTrue(it);
        return 0;
    }
    if (d->kind == OPT_INT && cJSON_IsNumber(it)) {
        snprintf(num, sizeof num, "%.0f", it->valuedouble);
        return set_int(o, d, num);
    }
    fprintf(stderr, "radixserve serve: %s: '%s' has the wrong type\n", path, it->string);
    return -1;
}

static int load_config(serve_opts *o, const char *path) {
    char *text;
    size_t len;
    rs_err e = {0};
    if (rs_read_file(path, &text, &len, &e)) {
        fprintf(stderr, "radixserve serve: %s\n", e.msg);
        return -1;
    }
    cJSON *root = cJSON_ParseWithLength(text, len), *it;
    free(text);
    if (!cJSON_IsObject(root)) {
        fprintf(stderr, "radixserve serve: %s is not a JSON object\n", path);
        cJSON_Delete(root);
        return -1;
    }
    int rc = 0;
    cJSON_ArrayForEach(it, root) if (!rc) rc = apply_json(o, it, path);
    cJSON_Delete(root);
    return rc;
}

static void opts_defaults(serve_opts *o) {
    memset(o, 0, sizeof *o);
    o->host = strdup("127.0.0.1");
    o->port = 8080;
    sched_config sd; /* the scheduler's settings: sched_config_default owns their defaults */
    sched_config_default(&sd);
    o->kv_cache_mb = (int)(sd.kv_cache_bytes >> 20);
    o->max_batch = sd.max_batch;
    o->max_queue = sd.max_queue;
    o->block_size = sd.block_size;
    o->token_budget = sd.token_budget;
    o->mixed_prefill = sd.mixed_prefill;
    o->api_key = strdup("");
    o->served_model_name = strdup("");
    o->cors_origin = strdup("*");
    srv_config d; /* the server's settings: srv_config_default owns their defaults */
    srv_config_default(&d);
    o->default_max_tokens = d.default_max_tokens;
    o->max_body_mb = (int)(d.max_body_bytes >> 20);
    o->idle_timeout = d.idle_timeout_s;
    o->request_timeout = d.request_timeout_s;
    o->max_connections = d.max_conns;
    o->connection_reserve = d.conn_reserve;
    o->max_connections_per_client = d.max_conns_per_client;
    o->warm_next_turn = 1;
}

static void opts_free(serve_opts *o) {
    for (size_t i = 0; i < N_OPTS; i++)
        if (OPTS[i].kind == OPT_STR) free(*(char **)slot(o, &OPTS[i]));
    for (int i = 0; i < o->n_lora; i++) free(o->lora[i]);
}

/* Settings where 0 means nothing sensible (threads, ctx-size and port take 0 as "choose"). */
static int check_positive(const serve_opts *o) {
    static const char *names[] = {
        "kv-cache-mb",     "max-batch",       "max-queue",          "default-max-tokens",
        "block-size",      "token-budget",    "max-body-mb",        "idle-timeout",
        "request-timeout", "max-connections", "connection-reserve", "max-connections-per-client"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (*(const int *)((const char *)o + find_opt(names[i])->off) < 1) {
            fprintf(stderr, "radixserve serve: --%s must be at least 1\n", names[i]);
            return -1;
        }
    return 0;
}

/* 0 ok, 1: --help shown, -1: bad arguments. */
static int parse_args(serve_opts *o, int argc, char **argv) {
    for (int i = 1; i < argc; i++) /* the config file first: flags override it */
        if (!strcmp(argv[i], "--config") && i + 1 < argc && load_config(o, argv[i + 1])) return -1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) return 1;
        if (!strcmp(a, "--config")) {
            if (++i >= argc) return -1;
            continue;
        }
        if (!strcmp(a, "--lora")) {
            if (++i >= argc || add_lora(o, argv[i])) return -1;
            continue;
        }
        const struct opt *d = strncmp(a, "--", 2) ? NULL : find_opt(a + 2);
        if (!d) {
            fprintf(stderr, "radixserve serve: unknown option '%s'\n", a);
            return -1;
        }
        if (d->kind == OPT_FLAG) {
            *(int *)slot(o, d) = 1;
            continue;
        }
        if (++i >= argc) {
            fprintf(stderr, "radixserve serve: --%s needs a value\n", d->name);
            return -1;
        }
        if ((d->kind == OPT_STR ? set_str : set_int)(o, d, argv[i])) return -1;
    }
    if (!o->model) {
        fprintf(stderr, "radixserve serve: --model DIR|FILE.gguf is required\n");
        return -1;
    }
    if (o->weights && eng_weights_parse(o->weights) < 0) {
        fprintf(stderr,
                "radixserve serve: --weights must be q8_0, q4_k_m, q4_0 or source (got '%s')\n",
                o->weights);
        return -1;
    }
    return check_positive(o);
}

/* ---------------------------------------------------------------- loading */

/* Everything loaded, owned here and freed in reverse order. */
typedef struct served {
    tok_tokenizer *tok;
    chat_format chat;
    int chat_ok;
    eng_model *model;
    eng_lora_reg *loras; /* the model's adapters: --lora, then the run-time routes */
    sched *sched;
    srv_sched_ctx bctx;
} served;

static void step(const char *what, double t0, int done) {
    if (!done)
        fprintf(stderr, "radixserve: loading %s ...%s", what, isatty(2) ? "" : "\n");
    else if (isatty(2))
        fprintf(stderr, " done (%.2f s)\n", rs_now() - t0);
}

static void basename_of(const char *dir, char *out, size_t n) {
    size_t len = strlen(dir);
    while (len > 1 && dir[len - 1] == '/') len--;
    size_t start = len;
    while (start > 0 && dir[start - 1] != '/') start--;
    snprintf(out, n, "%.*s", (int)(len - start), dir + start);
}

/* A non-negative integer from the environment (test knobs), 0 when unset or malformed. */
static int env_ms(const char *name) {
    const char *v = getenv(name);
    int x = v ? atoi(v) : 0;
    return x > 0 ? x : 0;
}

/* The registry with every --lora adapter loaded (NAME=DIR; a NAME also served as the base
 * model's name could never be picked, so it is refused). */
static int load_loras(served *sv, const serve_opts *o, const char *served_names, rs_err *e) {
    int rc = eng_lora_reg_init(&sv->loras, sv->model, e);
    for (int i = 0; !rc && i < o->n_lora; i++) {
        char *eq = strchr(o->lora[i], '=');
        char name[ENG_LORA_NAME_MAX];
        snprintf(name, sizeof name, "%.*s", (int)(eq - o->lora[i]), o->lora[i]);
        for (const char *p = served_names; *p && !rc;) {
            size_t n = strcspn(p, ",");
            if (n == strlen(name) && !strncmp(p, name, n))
                rc = rs_errf(e, RS_EINVAL, "--lora %s: that is the base model's name", name);
            p += n + (p[n] == ',');
        }
        if (!rc) rc = eng_lora_load(sv->loras, name, eq + 1, e);
        if (rc) return rs_errf(e, rc, "--lora %s: %s", o->lora[i], RS_CLIP(e->msg, 400));
        fprintf(stderr, "radixserve: LoRA adapter '%s' from %s\n", name, eq + 1);
    }
    return rc;
}

/* Say when the context in force (the scheduler's: the model's maximum, lowered to what the KV
 * pool holds for one sequence) is not what was asked for. */
static void report_ctx(const serve_opts *o, const eng_model *m, int in_force) {
    long asked = o->ctx_size ? o->ctx_size : eng_model_config(m)->max_pos;
    if (in_force < asked)
        fprintf(stderr,
                "radixserve: context lowered from %ld to %d tokens (the model's maximum and what "
                "%d MB of KV cache holds for one sequence)\n",
                asked, in_force, o->kv_cache_mb);
}

static int load(served *sv, const serve_opts *o, const char *served_names, srv *server, rs_err *e) {
    double t0 = rs_now();
    usleep((useconds_t)env_ms("RADIXSERVE_TEST_LOAD_DELAY_MS") * 1000u); /* /health loading */
    step("tokenizer", t0, 0);
    if (cli_load_tokenizer(&sv->tok, o->model, e)) return -1;
    step("tokenizer", t0, 1);
    if (chat_format_init(&sv->chat, tok_get_config(sv->tok), sv->tok, e)) return -1;
    sv->chat_ok = 1;
    t0 = rs_now();
    step("weights", t0, 0);
    int threads = o->threads > 0 ? o->threads : (int)sysconf(_SC_NPROCESSORS_ONLN);
    eng_weights w = o->weights ? (eng_weights)eng_weights_parse(o->weights) : ENG_WEIGHTS_SOURCE;
    if (cli_load_model(&sv->model, o->model, w, threads, e)) return -1;
    step("weights", t0, 1);
    if (load_loras(sv, o, served_names, e)) return -1;
    sched_config sc = {
        .n_threads = threads,
        .kv_cache_bytes = (size_t)o->kv_cache_mb << 20,
        .block_size = o->block_size,
        .kv_dtype = -1,
        .max_batch = o->max_batch,
        .max_queue = o->max_queue,
        .token_budget = o->token_budget,
        .mixed_prefill = o->mixed_prefill,
        .ctx_size = o->ctx_size,
        .prefix_cache = !o->no_prefix_cache,
        .step_delay_ms = env_ms("RADIXSERVE_TEST_STEP_DELAY_MS"), /* tests: slow steps */
    };
    if (sc.n_threads < 1) sc.n_threads = 1;
    if (sched_start(&sv->sched, sv->model, sv->tok, &sc, e)) return -1;
    sched_get_config(sv->sched, &sc); /* what is in force: ctx_size fitted to the pool */
    report_ctx(o, sv->model, sc.ctx_size);
    sv->bctx.s = sv->sched;
    sv->bctx.tok = sv->tok;
    sv->bctx.loras = sv->loras;
    srv_backend be;
    srv_backend_sched(&be, &sv->bctx);
    srv_model sm = {
        .chat = &sv->chat,
        .defaults = *eng_model_gen_defaults(sv->model),
        .ctx_size = sc.ctx_size,
        .vocab_size = eng_model_config(sv->model)->vocab_size,
        .prefix_cache = sc.prefix_cache,
        .embed_dim = eng_model_config(sv->model)->hidden,
        .embed_normalize = eng_model_config(sv->model)->pool_normalize,
        .quantization = eng_model_quantization(sv->model),
        .format = eng_model_format(sv->model),
    };
    srv_set_ready(server, &be, &sm);
    fprintf(stderr,
            "radixserve: ready: %s (%s, %s, %lld parameters, weights %s), context %d tokens, %d "
            "threads, %s kernels\n",
            o->model, eng_model_config(sv->model)->arch, eng_model_format(sv->model),
            (long long)eng_model_n_params(sv->model), eng_model_quantization(sv->model),
            sc.ctx_size, sc.n_threads, eng_isa_name());
    return 0;
}

static void unload(served *sv) {
    if (sv->sched) sched_stop(sv->sched); /* the requests' adapter references go with it */
    eng_lora_reg_free(sv->loras);
    if (sv->model) eng_model_free(sv->model);
    if (sv->chat_ok) chat_format_free(&sv->chat);
    if (sv->tok) tok_free(sv->tok);
}

/* ---------------------------------------------------------------- main */

static int wait_for_signal(const sigset_t *set) {
    int sig = 0;
    sigwait(set, &sig);
    return sig;
}

static int serve(const serve_opts *o) {
    char name[256];
    rs_err e = {0};
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGPIPE);
    /* Blocked before any thread starts, so every thread inherits the mask and only sigwait below
     * receives them (SIGPIPE from a vanished client is simply ignored). */
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    if (o->served_model_name[0])
        snprintf(name, sizeof name, "%s", o->served_model_name);
    else
        basename_of(o->model, name, sizeof name);
    srv_config c = {.host = o->host,
                    .port = o->port,
                    .api_key = o->api_key,
                    .cors_origin = o->cors_origin,
                    .model_name = name,
                    .any_model_name = o->any_model_name,
                    .max_body_bytes = (size_t)o->max_body_mb << 20,
                    .default_max_tokens = o->default_max_tokens,
                    .log_requests = 1,
                    .idle_timeout_s = o->idle_timeout,
                    .request_timeout_s = o->request_timeout,
                    .max_conns = o->max_connections,
                    .conn_reserve = o->connection_reserve,
                    .max_conns_per_client = o->max_connections_per_client,
                    .warm_next_turn = o->warm_next_turn,
                    .no_webui = o->no_webui};
    srv *server;
    if (srv_start(&server, &c, &e)) {
        fprintf(stderr, "radixserve serve: %s\n", e.msg);
        return 1;
    }
    fprintf(stderr, "radixserve: listening on http://%s:%d (model '%s' loading)\n", o->host,
            srv_port(server), name);
    served sv = {0};
    if (load(&sv, o, name, server, &e)) {
        fprintf(stderr, "\nradixserve serve: %s\n", e.msg);
        srv_stop(server);
        unload(&sv);
        return 1;
    }
    fprintf(stderr,
            "radixserve: try\n  curl http://%s:%d/v1/completions -H 'Content-Type: "
            "application/json' -d '{\"prompt\": \"Once upon a time\", \"max_tokens\": 64, "
            "\"temperature\": 0}'\n",
            o->host, srv_port(server));
    if (!o->no_webui)
        fprintf(stderr, "radixserve: chat in a browser: http://%s:%d/ (the prefix cache: /cache)\n",
                o->host, srv_port(server));
    int sig;
    while ((sig = wait_for_signal(&set)) == SIGPIPE) {
    }
    fprintf(stderr, "radixserve: %s: stopping (cancelling %d running requests)\n",
            sig == SIGINT ? "SIGINT" : "SIGTERM", srv_active(server));
    srv_shutdown(server);
    for (int i = 0; i < 100 && srv_active(server) > 0; i++) usleep(50000);
    srv_stop(server);
    unload(&sv);
    fprintf(stderr, "radixserve: stopped\n");
    return 0;
}

int cli_serve(int argc, char **argv) {
    serve_opts o;
    opts_defaults(&o);
    int rc = parse_args(&o, argc, argv);
    if (rc) {
        usage(rc > 0 ? stdout : stderr);
        opts_free(&o);
        return rc > 0 ? 0 : 2;
    }
    rc = serve(&o);
    opts_free(&o);
    return rc;
}
