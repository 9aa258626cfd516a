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

#include "grammar/grammar.h"
#include "tokenizer/tokenizer.h"
#include "util/util.h"

#define API_MAX_STOP         4  /* stop strings per request (OpenAI's limit) */
#define API_MAX_TOP_LOGPROBS 20 /* alternatives per token at most */
#define API_MAX_N            16 /* choices per prompt at most */
#define API_MAX_CHOICES      64 /* choices per request at most: prompts x n */

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
    int stream;          /* SSE streaming */
    int include_usage;   /* stream_options.include_usage */
    int ignore_eos;      /* keep generating past EOS */
    char *cache_salt;    /* prefix-cache namespace (owned), NULL: shared */
    gr_grammar *grammar; /* response_format (or a forced tool call) compiled (owned; the server
                            hands it to the scheduler), NULL: free text */
} api_gen;

/* A parsed /v1/chat/completions request. */
typedef struct api_chat_request {
    api_gen gen; /* sampling and output options */
    cJSON *tpl;  /* owned: the template's input object: "messages" (text parts joined into
                    strings), "tools", "tool_choice", "parallel_tool_calls",
                    "add_generation_prompt", "chat_template_kwargs" (enable_thinking checked
                    to be a boolean) — exactly what chat/chat.h renders and reads back */
} api_chat_request;

/* One prompt of a completion: text or token ids (exactly one is set). */
typedef struct api_prompt {
    char *text;   /* prompt text (owned) or NULL */
    int32_t *ids; /* prompt token ids (owned) or NULL */
    int n_ids;
} api_prompt;

/* A parsed /v1/completions request: one prompt, or a batch of them ("prompt": a string, an id
 * array, or an array of either). Choice i * gen.n + k is sample k of prompt i (OpenAI's index);
 * n_prompts * gen.n <= API_MAX_CHOICES. */
typedef struct api_completion_request {
    api_gen gen;         /* sampling and output options (logprobs: the int form, 0..20) */
    api_prompt *prompts; /* n_prompts >= 1 prompts (owned) */
    int n_prompts;
    int echo; /* prepend the prompt to the returned text */
} api_completion_request;

/* A body that must be one JSON object (len bytes, need not be NUL-terminated): *root (caller
 * deletes), or a 400 invalid_json. */
int api_parse_object(const char *body, size_t len, cJSON **root, api_error *err);
/* A prompt field `name` (NULL: missing, a 400): a string, an id array, or an array of either;
 * at most max / per of them. *out (n entries) is freed with api_prompts_free, also on failure. */
int api_parse_prompts(const cJSON *p, const char *name, int per, int max, api_prompt **out, int *n,
                      api_error *err);
void api_prompts_free(api_prompt *p, int n);

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

/* POST /tokenize: {"prompt" (vLLM) or "content" (llama.cpp): text, "add_special_tokens": bool,
 * "with_pieces": bool} or {"messages": [...]} (chat, rendered through the template by the
 * server). */
typedef struct api_tokenize_request {
    char *prompt;    /* text (owned) or NULL when messages are given */
    cJSON *tpl;      /* like api_chat_request.tpl when "messages" is given, else NULL */
    int add_special; /* add_special_tokens (default: 1 for text, 0 for messages) */
    int with_pieces; /* answer tokens as {"id", "piece"} objects (llama.cpp) */
} api_tokenize_request;

int api_parse_tokenize(const char *body, size_t len, api_tokenize_request *out, api_error *err);
void api_tokenize_request_free(api_tokenize_request *r);

/* POST /detokenize: {"tokens": [ids]}. *ids is malloc'd (caller frees). */
int api_parse_detokenize(const char *body, size_t len, int32_t **ids, int *n, api_error *err);

/* POST /v1/load_lora_adapter {"lora_name", "lora_path"} and /v1/unload_lora_adapter
 * {"lora_name"} (vLLM's routes and bodies). lora_name is required; lora_path too when
 * need_path. Strings owned (api_lora_request_free). */
typedef struct api_lora_request {
    char *name; /* lora_name */
    char *path; /* lora_path (NULL when not needed and absent) */
} api_lora_request;

int api_parse_lora(const char *body, size_t len, int need_path, api_lora_request *out,
                   api_error *err);
void api_lora_request_free(api_lora_request *r);

/* ---------------------------------------------------------------- embeddings */

/* Inputs per /v1/embeddings request at most (each is a scheduler request). */
#define API_MAX_EMBED_INPUTS 128

/* A parsed /v1/embeddings request. */
typedef struct api_embed_request {
    char *model;        /* requested model name or NULL (owned) */
    api_prompt *inputs; /* n_inputs >= 1 texts or id arrays (owned); no empty string */
    int n_inputs;
    int base64;     /* encoding_format "base64" (else "float") */
    int dimensions; /* 0: the model's size; else truncate to this many (checked by the
                       server against the model's hidden size) */
} api_embed_request;

int api_parse_embeddings(const char *body, size_t len, api_embed_request *out, api_error *err);
void api_embed_request_free(api_embed_request *r);
/* Finish a pooled vector v of n floats in place: keep the first `dims` (0: all), then divide by
 * its L2 norm when `normalize` (as OpenAI and Qwen3-Embedding do for shortened vectors, and
 * sentence-transformers' Normalize module). Returns the length kept. */
int api_embed_finish(float *v, int n, int dims, int normalize);
/* {"object": "list", "data": [{"object": "embedding", "index", "embedding"}], "model",
 * "usage": {prompt_tokens, total_tokens, prompt_tokens_details.cached_tokens}}; vector i has
 * dims[i] floats, sent as numbers or (b64) base64 of little-endian float32. */
char *api_embeddings_response(const char *model, float *const *vecs, const int *dims, int n,
                              int b64, int prompt_tokens, int cached_tokens);

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
    int timed;             /* 1: add llama-server's "timings" object (the fields below) */
    double prompt_ms;      /* submission -> first generated token (the prefill) */
    double predicted_ms;   /* first generated token -> the end (the decode) */
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
/* llama-server's "timings": prompt_n (tokens computed), cache_n (from the cache), predicted_n,
 * prompt_ms, predicted_ms, their per-token ms and per-second rates (0 when a time is 0). */
cJSON *api_timings_json(const api_usage *u);
/* A chunk (a JSON object text, consumed) with "timings" added: the last chunk of a stream. */
char *api_add_timings(char *chunk, const api_usage *u);
char *api_print(cJSON *j); /* unformatted print, then cJSON_Delete(j); NULL-safe */

/* ---------------------------------------------------------------- Responses API */

/* previous_response_id: a copy of the stored conversation (chat messages, caller deletes), or
 * NULL when the id is unknown. */
typedef cJSON *(*api_prev_lookup)(void *ctx, const char *id);

/* A parsed /v1/responses request, converted to a chat request: input items become messages
 * (function_call items join an assistant message's tool_calls, function_call_output items are
 * tool messages), instructions a leading system message (not stored: a continuation does not
 * inherit them, as OpenAI's), function tools chat tools, max_output_tokens
 * max_completion_tokens; every other check is api_parse_chat's (a field it names is renamed
 * back: max_output_tokens, input). */
typedef struct api_responses_request {
    api_chat_request chat; /* what the chat path renders and runs */
    cJSON *conversation;   /* owned: the previous response's stored conversation + this input,
                              as chat messages (without the instructions) */
    int store;             /* "store" (default true): keep conversation + output for a
                              continuation */
    cJSON *echo;           /* owned: the request fields the response object repeats */
} api_responses_request;

/* 0, or an error: 400 naming the field, 404 previous_response_not_found. */
int api_parse_responses(const char *body, size_t len, api_prev_lookup lookup, void *ctx,
                        api_responses_request *out, api_error *err);
void api_responses_request_free(api_responses_request *r);

/*
 * The Responses output of one generation, fed the chat path's split text. Items: a "reasoning"
 * item (Qwen3 thinking), a "message" item (output_text), a "function_call" item per tool call,
 * in the order the model wrote them. With an SSE buffer each call appends the events
 * (response.created, response.in_progress, response.output_item.added,
 * response.content_part.added, response.output_text.delta / response.reasoning_text.delta,
 * response.function_call_arguments.delta/.done, response.output_text.done,
 * response.content_part.done, response.output_item.done, response.completed or
 * response.incomplete when max_output_tokens ended it); with NULL it only accumulates.
 */
typedef struct api_rstream {
    char id[64];           /* "resp_..." */
    long long created;     /* created_at */
    const char *model;     /* served model name (borrowed) */
    cJSON *echo;           /* owned: request fields repeated in the response object */
    int store;             /* reported as "store" */
    int seq;               /* next sequence_number */
    int n_out;             /* output items closed so far (the open one's output_index) */
    int open;              /* 0: no item open, 1: reasoning, 2: message */
    char item_id[96];      /* the open (or last) item's id */
    api_buf text;          /* the open item's text */
    cJSON *output;         /* owned: the closed output items */
    api_buf all_text;      /* every output_text, for the stored assistant message */
    api_buf all_reasoning; /* every reasoning text */
    cJSON *calls;          /* owned: the tool calls in chat form */
} api_rstream;

void api_rs_init(api_rstream *rs, const char *id, long long created, const char *model,
                 cJSON *echo /* taken */);
void api_rs_free(api_rstream *rs);
void api_rs_start(api_rstream *rs, api_buf *sse);
void api_rs_feed(api_rstream *rs, const char *reasoning, const char *content, const cJSON *calls,
                 api_buf *sse);
/* finish: the chat finish_reason ("length": status incomplete). */
void api_rs_end(api_rstream *rs, const char *finish, const api_usage *u, api_buf *sse);
char *api_rs_response(const api_rstream *rs, const char *finish, const api_usage *u);
void api_rs_error(api_rstream *rs, const api_error *e, api_buf *sse); /* an "error" event */
/* The output as one chat assistant message (content, reasoning_content, tool_calls). */
cJSON *api_rs_assistant(const api_rstream *rs);

#endif
