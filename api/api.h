/*
 * api.h — the door of the api room: OpenAI JSON in and out. Parsing turns a request body into a
 * typed struct or an api_error that names the offending field (HTTP 400 with `param`); builders
 * turn results into OpenAI's response, chunk and error shapes. Everything here is a pure function
 * over its arguments (no I/O, no threads, no global state), so it is unit-tested without a server.
 *
 * The chat template, and reading the model's chat output back (reasoning, tool calls), live in
 * the chat room (chat/chat.h), which builds on this one.
 *
 * Conventions of parsing:
 *   - JSON null means "absent" for every optional field (SDKs send nulls).
 *   - Unknown fields are ignored; a known field of the wrong type or out of range is a 400 whose
 *     message and `param` name it.
 *   - Absent numeric sampling fields keep a sentinel (NAN, or -1 for ints) so the server can fill
 *     the model's generation_config.json defaults; it never guesses here.
 */
#ifndef RADIXSERVE_API_H
#define RADIXSERVE_API_H

#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "tokenizer/tokenizer.h"
#include "util/util.h"

#define API_MAX_STOP         4  /* stop strings per request (OpenAI's limit) */
#define API_MAX_TOP_LOGPROBS 20 /* alternatives per token at most */
#define API_MAX_N            16 /* choices per request at most */

/* ---------------------------------------------------------------- growable string */

/* A NUL-terminated growable byte string. Zero-initialised is empty and valid. */
typedef struct api_buf {
    char *s;    /* bytes, always NUL-terminated once anything was appended (owned) */
    size_t n;   /* length without the NUL */
    size_t cap; /* allocated bytes */
} api_buf;

int api_buf_append(api_buf *b, const char *s, size_t n); /* RS_ENOMEM on failure */
int api_buf_puts(api_buf *b, const char *s);
const char *api_buf_str(const api_buf *b); /* "" when empty */
void api_buf_free(api_buf *b);

/* ---------------------------------------------------------------- errors */

/* An error the server answers with: status + OpenAI's {"error":{message,type,param,code}}. */
typedef struct api_error {
    int status;        /* HTTP status (400, 401, 404, 405, 413, 500, 503) */
    char type[48];     /* "invalid_request_error", "authentication_error", "server_error", ... */
    char param[64];    /* the offending field ("" -> null) */
    char code[48];     /* machine-readable code ("" -> null), e.g. "model_not_found" */
    char message[512]; /* what a user reads */
} api_error;

/* Fill err and return RS_EINVAL (status >= 500: RS_EIO). param/code may be NULL. */
int api_errorf(api_error *err, int status, const char *type, const char *param, const char *code,
               const char *fmt, ...) __attribute__((format(printf, 6, 7)));

/* {"error":{"message":...,"type":...,"param":...|null,"code":...|null}} as a malloc'd string. */
char *api_error_json(const api_error *err);

/* ---------------------------------------------------------------- requests */

typedef struct api_logit_bias {
    int32_t token; /* token id (range-checked by the server against the vocabulary) */
    float bias;    /* -100 .. 100, added to the logit */
} api_logit_bias;

/* The generation parameters shared by chat and text completions. */
typedef struct api_gen {
    char *model;              /* requested model name, NULL when absent (owned) */
    int max_tokens;           /* max_completion_tokens, else max_tokens; -1 absent */
    float temperature;        /* 0 .. 2; NAN absent */
    float top_p;              /* (0, 1]; NAN absent */
    int top_k;                /* -1 or 0: off; >0 keep k; -2 absent */
    float min_p;              /* 0 .. 1; NAN absent */
    float repetition_penalty; /* (0, 2]; NAN absent */
    float presence_penalty;   /* -2 .. 2; 0 when absent */
    float frequency_penalty;  /* -2 .. 2; 0 when absent */
    int has_seed;             /* seed given */
    uint64_t seed;            /* the seed (negative JSON seeds wrap) */
    char *stop[API_MAX_STOP]; /* stop strings (owned), never emitted */
    int n_stop;
    int n;                /* choices, 1 .. API_MAX_N */
    int logprobs;         /* report chosen tokens' logprobs */
    int top_logprobs;     /* alternatives per token, 0 .. API_MAX_TOP_LOGPROBS */
    api_logit_bias *bias; /* logit_bias entries (owned) */
    int n_bias;
    int stream;        /* SSE streaming */
    int include_usage; /* stream_options.include_usage */
    int ignore_eos;    /* keep generating past EOS */
    char *cache_salt;  /* prefix-cache namespace (owned), NULL: shared */
} api_gen;

/* A parsed /v1/chat/completions request. */
typedef struct api_chat_request {
    api_gen gen; /* sampling and output options */
    cJSON *tpl;  /* owned: the template's input object: "messages" (text parts joined into
                    strings), "tools", "tool_choice", "parallel_tool_calls",
                    "add_generation_prompt", "chat_template_kwargs" (enable_thinking checked
                    to be a boolean) — exactly what chat/chat.h renders and reads back */
} api_chat_request;

/* A parsed /v1/completions request: the prompt is text or token ids (exactly one is set). */
typedef struct api_completion_request {
    api_gen gen;         /* sampling and output options (logprobs: the int form, 0..20) */
    char *prompt;        /* prompt text (owned) or NULL */
    int32_t *prompt_ids; /* prompt token ids (owned) or NULL */
    int n_prompt_ids;
    int echo; /* prepend the prompt to the returned text */
} api_completion_request;

/* Parse a request body (len bytes, need not be NUL-terminated). 0, or RS_EINVAL with err set
 * (status 400) and *out left empty (nothing to free). */
int api_parse_chat(const char *body, size_t len, api_chat_request *out, api_error *err);
void api_chat_request_free(api_chat_request *r);
int api_parse_completion(const char *body, size_t len, api_completion_request *out, api_error *err);
void api_completion_request_free(api_completion_request *r);

/* OpenAI content parts, in place: every message whose content is an array of
 * {"type":"text","text":...} parts gets the texts joined by "\n" as its content (vLLM's rule; the
 * one place parts are joined: api_parse_chat and api_parse_tokenize apply it, and so does
 * `radixserve template`). Another part type is a 400 naming messages[i].content and the type;
 * contents that are not arrays are left as they are. */
int api_join_content(cJSON *messages, api_error *err);

/* POST /tokenize: {"prompt": text, "add_special_tokens": bool} or {"messages": [...]} (chat,
 * rendered through the template by the server). */
typedef struct api_tokenize_request {
    char *prompt;    /* text (owned) or NULL when messages are given */
    cJSON *tpl;      /* like api_chat_request.tpl when "messages" is given, else NULL */
    int add_special; /* add_special_tokens (default: 1 for text, 0 for messages) */
} api_tokenize_request;

int api_parse_tokenize(const char *body, size_t len, api_tokenize_request *out, api_error *err);
void api_tokenize_request_free(api_tokenize_request *r);

/* POST /detokenize: {"tokens": [ids]}. *ids is malloc'd (caller frees). */
int api_parse_detokenize(const char *body, size_t len, int32_t **ids, int *n, api_error *err);

/* ---------------------------------------------------------------- responses */

/* One generated token's log-probability and its alternatives. */
typedef struct api_lp_top {
    char *token;   /* decoded text of the alternative (owned) */
    float logprob; /* its log-probability */
} api_lp_top;

typedef struct api_lp {
    char *token;   /* decoded text of the chosen token (owned) */
    float logprob; /* its log-probability */
    int n_top;     /* alternatives in top */
    api_lp_top top[API_MAX_TOP_LOGPROBS];
} api_lp;

void api_lp_free(api_lp *lp);

/* A choice being accumulated for a non-streamed response. */
typedef struct api_choice {
    api_buf content;   /* answer text */
    api_buf reasoning; /* reasoning_content (chat with thinking), may be empty */
    api_lp *lps;       /* per-token logprobs (owned) when asked, else NULL */
    int n_lps, cap_lps;
    cJSON *tool_calls;         /* chat: extracted tool calls (owned array) or NULL */
    size_t text_offset;        /* completions: where the first logprob token starts in the
                                  returned text (the echoed prompt's length) */
    const char *finish_reason; /* static string: "stop", "length", "tool_calls", ... */
} api_choice;

int api_choice_add_lp(api_choice *c, api_lp *lp); /* takes ownership of lp's strings */
void api_choice_free(api_choice *c);

typedef struct api_usage {
    int prompt_tokens;     /* tokens of the prompt */
    int completion_tokens; /* generated, summed over choices */
    int cached_tokens;     /* prompt tokens served from the prefix cache (0 on a miss) */
} api_usage;

/* What every response and chunk of one request repeats. */
typedef struct api_meta {
    char id[64];             /* "chatcmpl-..." / "cmpl-..." */
    const char *model;       /* served model name */
    long long created;       /* unix seconds */
    const char *fingerprint; /* system_fingerprint */
} api_meta;

/* Whole responses (malloc'd JSON strings; NULL on allocation failure). */
char *api_chat_response(const api_meta *m, const api_choice *choices, int n, int logprobs,
                        const api_usage *u);
char *api_completion_response(const api_meta *m, const api_choice *choices, int n, int logprobs,
                              const api_usage *u);

/* Streaming chunks (the JSON after "data: "). Any of role/content/reasoning/finish may be NULL;
 * lps (n_lps entries, may be 0) adds a logprobs object. with_usage_null: add "usage": null
 * (include_usage asks every chunk to carry the key). */
char *api_chat_chunk(const api_meta *m, int index, const char *role, const char *content,
                     const char *reasoning, const api_lp *lps, int n_lps, const char *finish,
                     int with_usage_null);
/* A chat chunk carrying one fragment of a tool call, as OpenAI streams them: first 1 gives
 * {"index": call_index, "id", "type": "function", "function": {"name", "arguments": ""}}, first 0
 * gives {"index": call_index, "function": {"arguments": the call's arguments}} (call: an OpenAI
 * tool call object, not consumed). */
char *api_chat_tool_chunk(const api_meta *m, int index, const cJSON *call, int call_index,
                          int first, int with_usage_null);
/* offset: where this chunk's text starts in the choice's whole text (for text_offset). */
char *api_completion_chunk(const api_meta *m, int index, const char *text, const api_lp *lps,
                           int n_lps, size_t offset, const char *finish, int with_usage_null);
/* The final usage chunk: "choices": [] and usage. chat 1: chat.completion.chunk, 0: text. */
char *api_usage_chunk(const api_meta *m, int chat, const api_usage *u);

/* cJSON helpers for the server's small JSON answers. */
cJSON *api_usage_json(const api_usage *u);
char *api_print(cJSON *j); /* unformatted print, then cJSON_Delete(j); NULL-safe */

#endif
