/*
 * chat.h — the door of the chat room: a model's chat format. Requests in (a Jinja chat template,
 * rendered exactly as transformers renders it) and the model's chat output back out (the <think>
 * reasoning split and <tool_call> blocks). It builds on api/ (api_buf) and util/.
 *
 * The chat template:
 * A model's tokenizer_config.json carries a Jinja chat template. We run it with our own Jinja
 * subset interpreter (chat/jinja*.c) and produce exactly the bytes Python jinja2 gives when
 * transformers renders it (ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True),
 * loopcontrols, tojson = json.dumps(ensure_ascii=False), raise_exception, strftime_now).
 *
 * The rendered prompt is complete: it already contains any BOS text the template (or the plain
 * rendering) emits, so the caller tokenizes it with special tokens matched and WITHOUT adding
 * another BOS (as transformers' apply_chat_template(tokenize=True) does).
 *
 * Plain rendering (a model whose tokenizer_config.json has no chat_template, e.g.
 * models/stories260K): the prompt is the BOS token text (if the config names one), then every
 * message's content (after chat_tpl_normalize_messages; a missing or null content counts as "")
 * joined by "\n". Roles are ignored; nothing is appended for add_generation_prompt, so the model
 * simply continues the last message's text (what a completion model such as stories260K does
 * well). tools and chat_template_kwargs are ignored by the plain rendering.
 *
 * Thread safety: an chat_tpl is read-only after chat_tpl_load / chat_tpl_init_*; any number of
 * threads may call chat_tpl_render on the same chat_tpl at once.
 */
#ifndef RADIXSERVE_CHAT_H
#define RADIXSERVE_CHAT_H

#include <stdbool.h>
#include <stddef.h>

#include <cjson/cJSON.h>

#include "api/api.h"
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

/* Load the template of a model directory: reads DIR/tokenizer_config.json (no weights), and
 * DIR/chat_template.jinja when present, which replaces the config's chat_template (as
 * transformers does; newer Hugging Face repositories ship the template only there).
 * chat_template may be a string or a list of {"name", "template"} (the "default" entry is used;
 * none -> RS_EINVAL); absent or null -> plain rendering. bos_token / eos_token may be strings or
 * {"content": ...} objects. A template with a syntax error fails here with RS_EINVAL and the
 * jinja2-style message (with line number). On failure *t is left freed (chat_tpl_free-safe). */
int chat_tpl_load(chat_tpl *t, const char *model_dir, rs_err *e);

/* The same from an already parsed tokenizer_config object. */
int chat_tpl_init_config(chat_tpl *t, const cJSON *tokenizer_config, rs_err *e);

/* From a template string directly (source NULL -> plain rendering); bos/eos may be NULL. */
int chat_tpl_init_string(chat_tpl *t, const char *source, const char *bos, const char *eos,
                         rs_err *e);

void chat_tpl_free(chat_tpl *t);

/* true when the model has its own chat template (false: plain rendering). */
bool chat_tpl_has_template(const chat_tpl *t);

/* Normalise a messages array in place, as OpenAI clients send it: a content given as an array
 * of {"type":"text","text":...} parts becomes one string, the texts joined by "\n" (the same
 * rule as vLLM). A part of another type (image_url, input_audio, ...) or a malformed part is
 * RS_EINVAL naming the message index. String, null and absent contents are left alone. */
int chat_tpl_normalize_messages(cJSON *messages, rs_err *e);

/* Render a chat request to a prompt. request is an object with
 *   messages               array of message objects (required, non-empty array)
 *   tools                  array (optional; absent/null -> the template sees none)
 *   add_generation_prompt  bool (optional, default false)
 *   chat_template_kwargs   object (optional) merged into the template's variables, e.g.
 *                          {"enable_thinking": false}
 * The request is not modified (content arrays are normalised on a copy). Template variables,
 * as transformers passes them: messages, tools (None when absent), documents (None),
 * add_generation_prompt, the special tokens the config sets (bos_token, eos_token, pad_token,
 * unk_token, ..., additional_special_tokens), then chat_template_kwargs (which win). *out is a
 * malloc'd NUL-terminated string (caller frees), *out_len its length (out_len may be NULL). Errors:
 * RS_EINVAL with the message (a bad request field, raise_exception("...") in the template, an
 * undefined variable used wrongly, a type error, a resource limit hit), RS_ENOMEM. */
int chat_tpl_render(const chat_tpl *t, const cJSON *request, char **out, size_t *out_len,
                    rs_err *e);

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
 * "<tool_call>\n{\"name\": ..., \"arguments\": {...}}\n</tool_call>" blocks in its answer. When a
 * request offered tools, the extractor takes those blocks out of the content (held back while a
 * block is open or a tag is cut across deltas) and turns each into an OpenAI tool call
 * {"id", "type": "function", "function": {"name", "arguments": JSON string}}. A block whose body
 * is not a JSON object with a string "name" stays in the content as written.
 */
typedef struct chat_tools {
    int inside;       /* 1: between <tool_call> and </tool_call> */
    api_buf held;     /* text not yet decided (a partial tag, or an open block's body) */
    int n_calls;      /* calls extracted so far (numbers the ids) */
    char id_base[48]; /* call ids are "call_<id_base>_<n>" */
} chat_tools;

void chat_tools_init(chat_tools *t, const char *id_base);
/* Feed a delta: plain text is appended to content; each completed call is appended to calls (a
 * cJSON array the caller owns). */
int chat_tools_feed(chat_tools *t, const char *delta, api_buf *content, cJSON *calls);
/* End of output: an unterminated block is returned to the content as written. */
int chat_tools_flush(chat_tools *t, api_buf *content);
void chat_tools_free(chat_tools *t);

#endif
