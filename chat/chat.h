/*
 * chat.h — the door of the chat room: a model's chat format, built once at model load and used
 * by server/ and cli/ alike. Requests go in through the model's Jinja chat template (rendered
 * exactly as transformers renders it); the model's chat output comes back split into reasoning,
 * content and tool calls. Nothing here looks at the template text per request: what a template
 * supports and which markers the model writes are decided in chat_format_init.
 *
 * State and threads: a chat_format (and its chat_tpl) is immutable after init; any number of
 * threads may render with it at once. A chat_reader is per choice of one request, owned and used
 * by one thread. Failure: every function returns 0 or an RS_E* code with e (or the outputs)
 * filled; bad templates fail at init, bad requests at render (RS_EINVAL, a message to show the
 * client as a 400); a model that writes a malformed tool call gets it back as plain content.
 *
 * Where the facts come from: tokenizer_config.json is read once, by the tokenizer room
 * (tok_config: the template text, the special tokens); this room compiles and runs it. The
 * OpenAI request shape (content parts joined, fields type-checked) is api/'s: the template input
 * object below is what api_parse_chat builds. It builds on api/ (api_buf), grammar/ (a forced tool
 * call's grammar), tokenizer/ and util/.
 *
 * The chat template:
 * We run it with our own Jinja subset interpreter (chat/jinja*.c) and produce exactly the bytes
 * Python jinja2 gives when transformers renders it (ImmutableSandboxedEnvironment(trim_blocks=
 * True, lstrip_blocks=True), loopcontrols, tojson = json.dumps(ensure_ascii=False),
 * raise_exception, strftime_now).
 *
 * The rendered prompt is complete: it already contains any BOS text the template (or the plain
 * rendering) emits, so the caller tokenizes it with special tokens matched and WITHOUT adding
 * another BOS (as transformers' apply_chat_template(tokenize=True) does).
 *
 * Plain rendering (a model whose tokenizer_config.json has no chat_template, e.g.
 * models/stories260K): the prompt is the BOS token text (if the config names one), then every
 * message's content (a missing or null content counts as "") joined by "\n". Roles are ignored;
 * nothing is appended for add_generation_prompt, so the model simply continues the last
 * message's text (what a completion model such as stories260K does well). tools and
 * chat_template_kwargs are ignored by the plain rendering.
 */
#ifndef RADIXSERVE_CHAT_H
#define RADIXSERVE_CHAT_H

#include <stdbool.h>
#include <stddef.h>

#include <cjson/cJSON.h>

#include "api/api.h"
#include "tokenizer/tokenizer.h"
#include "util/util.h"

struct chat_jinja; /* a compiled Jinja template (chat/jinja.h) */

typedef struct chat_tpl {
    struct chat_jinja *jinja; /* the compiled chat template, owned; NULL = plain rendering */
    char *source;             /* the template text, owned; NULL = plain rendering */
    char *bos_token;          /* the BOS token text, owned; "" when the config names none */
    char *eos_token;          /* the EOS token text, owned; "" when the config names none */
    cJSON *special_tokens;    /* other named special tokens (pad_token, unk_token, ...) exposed
                                 to the template as variables, owned; an object, maybe empty */
} chat_tpl;

/* The template of a tokenizer configuration (tok_config: the template text, the special tokens
 * the template sees as variables; absent template -> plain rendering). A template with a syntax
 * error fails with RS_EINVAL and the jinja2-style message (with line number), prefixed by the
 * file it came from. On failure *t is left freed (chat_tpl_free-safe). */
int chat_tpl_init(chat_tpl *t, const tok_config *c, rs_err *e);

/* The same from a model directory's tokenizer_config.json alone (tok_config_load: no
 * tokenizer.json or weights needed; what `radixserve template` uses, which only renders). */
int chat_tpl_load(chat_tpl *t, const char *model_dir, rs_err *e);

/* From a template string directly (source NULL -> plain rendering); bos/eos may be NULL. */
int chat_tpl_init_string(chat_tpl *t, const char *source, const char *bos, const char *eos,
                         rs_err *e);

void chat_tpl_free(chat_tpl *t);

/* true when the model has its own chat template (false: plain rendering). */
bool chat_tpl_has_template(const chat_tpl *t);

/* Render a chat request to a prompt. request is an object with
 *   messages               array of message objects (required, non-empty array); contents are
 *                          passed to the template as they are (join OpenAI content parts first:
 *                          api_join_content)
 *   tools                  array (optional; absent/null -> the template sees none)
 *   add_generation_prompt  bool (optional, default false)
 *   chat_template_kwargs   object (optional) merged into the template's variables, e.g.
 *                          {"enable_thinking": false}
 * The request is not modified. Template variables,
 * as transformers passes them: messages, tools (None when absent), documents (None),
 * add_generation_prompt, the special tokens the config sets (bos_token, eos_token, pad_token,
 * unk_token, ..., additional_special_tokens), then chat_template_kwargs (which win). *out is a
 * malloc'd NUL-terminated string (caller frees), *out_len its length (out_len may be NULL). Errors:
 * RS_EINVAL with the message (a bad request field, raise_exception("...") in the template, an
 * undefined variable used wrongly, a type error, a resource limit hit), RS_ENOMEM. */
int chat_tpl_render(const chat_tpl *t, const cJSON *request, char **out, size_t *out_len,
                    rs_err *e);

/* ---------------------------------------------------------------- markers */

/* The markers a model writes around its reasoning and its tool calls (Qwen3 / Hermes). They are
 * spelled here once; chat_format says whether a model uses them. */
#define CHAT_THINK_OPEN  "<think>"
#define CHAT_THINK_CLOSE "</think>"
#define CHAT_TOOL_OPEN   "<tool_call>"
#define CHAT_TOOL_CLOSE  "</tool_call>"

/* ---------------------------------------------------------------- reasoning split */

/*
 * Qwen3-style thinking: the model writes "<think>\n...\n</think>\n\n" before its answer. The
 * splitter routes text between the tags to reasoning_content and the rest to content, fed in
 * arbitrary deltas (a tag cut across deltas is held back until it is decided). Leading
 * whitespace after each tag is dropped, as the template itself strips it from history.
 */
typedef struct chat_think {
    int state;     /* 0: not yet known, 1: inside <think>, 2: answer (content) */
    api_buf held;  /* text that may be the start of a tag */
    int trim_next; /* drop whitespace at the start of the next part */
} chat_think;

/* enabled 0: everything is content. inside 1: the prompt already opened <think>. */
void chat_think_init(chat_think *t, int enabled, int inside);
int chat_think_feed(chat_think *t, const char *delta, api_buf *reasoning, api_buf *content);
int chat_think_flush(chat_think *t, api_buf *reasoning, api_buf *content);
void chat_think_free(chat_think *t);

/* ---------------------------------------------------------------- tool calls */

/*
 * Tool calls in the Hermes / Qwen format: the model writes
 * "<tool_call>\n{\"name\": ..., \"arguments\": {...}}\n</tool_call>" blocks in its answer. The
 * extractor takes those blocks out of the content (held back while a block is open or a tag is
 * cut across deltas) and turns each into an OpenAI tool call
 * {"id", "type": "function", "function": {"name", "arguments": JSON string}}. A block whose body
 * is not a JSON object with a string "name" (and, if present, an object or string "arguments")
 * stays in the content as written, and so does an unterminated block at the end: a malformed
 * call degrades to plain text. With max_calls > 0, well-formed blocks beyond that many are
 * dropped (parallel_tool_calls: false is max_calls 1).
 */
typedef struct chat_tools {
    int inside;       /* 1: between <tool_call> and </tool_call> */
    api_buf held;     /* text not yet decided (a partial tag, or an open block's body) */
    int n_calls;      /* calls extracted so far (numbers the ids) */
    int max_calls;    /* 0: any number; else calls beyond it are dropped */
    char id_base[48]; /* call ids are "call_<id_base>_<n>" */
} chat_tools;

void chat_tools_init(chat_tools *t, const char *id_base, int max_calls);
/* Feed a delta: plain text is appended to content; each completed call is appended to calls (a
 * cJSON array the caller owns). */
int chat_tools_feed(chat_tools *t, const char *delta, api_buf *content, cJSON *calls);
/* End of output: an unterminated block is returned to the content as written. */
int chat_tools_flush(chat_tools *t, api_buf *content);
void chat_tools_free(chat_tools *t);

/* ---------------------------------------------------------------- the chat format */

/* A pair of markers as strings and (when a tokenizer was given) as token ids. */
typedef struct chat_marker {
    const char *open, *close;  /* CHAT_*_OPEN / CHAT_*_CLOSE, or NULL: the model has none */
    int32_t open_id, close_id; /* their ids when each is one added token, else -1 */
} chat_marker;

/* What the template does with a request's fields (decided at init, by rendering probes). */
enum {
    CHAT_CAN_TOOLS = 1,     /* renders the `tools` it is given */
    CHAT_CAN_THINKING = 2,  /* chat_template_kwargs.enable_thinking changes the prompt */
    CHAT_CAN_REASONING = 4, /* renders an assistant message's reasoning_content */
};

typedef struct chat_format {
    chat_tpl tpl;      /* the template, owned */
    chat_marker think; /* <think> ... </think> around reasoning */
    chat_marker tool;  /* <tool_call> ... </tool_call> around a tool call. What a grammar
                          that forces a call must produce (and what chat_tools reads back):
                          tool.open, "\n", {"name": <function name>, "arguments": <object>},
                          "\n", tool.close — as Qwen3's template shows the model; the JSON's
                          whitespace is free */
    unsigned caps;     /* CHAT_CAN_* */
} chat_format;

/*
 * Build the chat format of a model once, at load: compile the template of c (chat_tpl_init),
 * then decide the markers and capabilities by rendering four probe requests (one with a tool,
 * one with enable_thinking true and false, one with an assistant reasoning_content): a marker
 * pair is the model's when a probe's prompt contains its opening marker and, when tok is given,
 * both markers are single added tokens of it (their ids are filled in). tok may be NULL (ids
 * stay -1). A plain-rendering model (no template) has no markers and no capabilities.
 */
int chat_format_init(chat_format *f, const tok_config *c, const tok_tokenizer *tok, rs_err *e);
void chat_format_free(chat_format *f);

/* tool_choice "required" or {"type":"function","function":{"name"}}: compile the grammar of
 * f->tool.open "\n" {"name": ..., "arguments": <that tool's parameters>} "\n" f->tool.close
 * blocks (exactly one when parallel_tool_calls is false or a function is named) into
 * r->gen.grammar, which constrains decoding to it. "auto", "none" or absent: nothing. A 400 names
 * the field: no tools, an unknown function, a bad parameters schema, response_format beside a
 * forced call, a model without tool-call markers. */
int chat_tool_grammar(const chat_format *f, api_chat_request *r, api_error *err);

/* Render a request (chat_tpl_render with the format's template). */
int chat_format_render(const chat_format *f, const cJSON *request, char **out, size_t *out_len,
                       rs_err *e);

/* ---------------------------------------------------------------- reading a choice */

/*
 * The model's output for one choice of one request, read back in deltas. What it splits out is
 * decided at init from the format and the request (the template input object, as rendered):
 * reasoning when the model has think markers and chat_template_kwargs.enable_thinking is not
 * false (starting inside the reasoning when the rendered prompt ends with an open <think>); tool
 * calls when the model has tool-call markers, the request offers tools and tool_choice is not
 * "none" (at most one when parallel_tool_calls is false).
 */
typedef struct chat_reader {
    chat_think think; /* reasoning splitter (disabled: everything is content) */
    chat_tools tools; /* tool-call extractor, used when use_tools */
    int use_tools;
} chat_reader;

/* id_base numbers the tool call ids ("call_<id_base>_<n>"). */
void chat_reader_init(chat_reader *r, const chat_format *f, const cJSON *request,
                      const char *prompt, const char *id_base);
/* Feed text; final 1 at the end of the choice (flushes what is held). Appends to reasoning and
 * content, and appends each completed tool call to calls (a cJSON array the caller owns). */
int chat_reader_feed(chat_reader *r, const char *text, int final, api_buf *reasoning,
                     api_buf *content, cJSON *calls);
/* Tool calls extracted so far. */
int chat_reader_n_calls(const chat_reader *r);
void chat_reader_free(chat_reader *r);

#endif
