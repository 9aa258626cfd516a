/*
 * template.h — the chat template of a model (api room, internal header; api/api.h includes it).
 *
 * A model's tokenizer_config.json carries a Jinja chat template. We run it with our own Jinja
 * subset interpreter (api/jinja*.c) and produce exactly the bytes Python jinja2 gives when
 * transformers renders it (ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True),
 * loopcontrols, tojson = json.dumps(ensure_ascii=False), raise_exception, strftime_now).
 *
 * The rendered prompt is complete: it already contains any BOS text the template (or the plain
 * rendering) emits, so the caller tokenizes it with special tokens matched and WITHOUT adding
 * another BOS (as transformers' apply_chat_template(tokenize=True) does).
 *
 * Plain rendering (a model whose tokenizer_config.json has no chat_template, e.g.
 * models/stories260K): the prompt is the BOS token text (if the config names one), then every
 * message's content (after api_tpl_normalize_messages; a missing or null content counts as "")
 * joined by "\n". Roles are ignored; nothing is appended for add_generation_prompt, so the model
 * simply continues the last message's text (what a completion model such as stories260K does
 * well). tools and chat_template_kwargs are ignored by the plain rendering.
 *
 * Thread safety: an api_tpl is read-only after api_tpl_load / api_tpl_init_*; any number of
 * threads may call api_tpl_render on the same api_tpl at once.
 */
#ifndef RADIXSERVE_API_TEMPLATE_H
#define RADIXSERVE_API_TEMPLATE_H

#include <stdbool.h>
#include <stddef.h>

#include <cjson/cJSON.h>

#include "util/util.h"

struct api_jinja; /* a compiled Jinja template (api/jinja.h) */

typedef struct api_tpl {
    struct api_jinja *jinja; /* the compiled chat template, owned; NULL = plain rendering */
    char *source;            /* the template text, owned; NULL = plain rendering */
    char *bos_token;         /* the BOS token text, owned; "" when the config names none */
    char *eos_token;         /* the EOS token text, owned; "" when the config names none */
    cJSON *special_tokens;   /* other named special tokens (pad_token, unk_token, ...) exposed
                                to the template as variables, owned; an object, maybe empty */
} api_tpl;

/* Load the template of a model directory: reads DIR/tokenizer_config.json (no weights), and
 * DIR/chat_template.jinja when present, which replaces the config's chat_template (as
 * transformers does; newer Hugging Face repositories ship the template only there).
 * chat_template may be a string or a list of {"name", "template"} (the "default" entry is used;
 * none -> RS_EINVAL); absent or null -> plain rendering. bos_token / eos_token may be strings or
 * {"content": ...} objects. A template with a syntax error fails here with RS_EINVAL and the
 * jinja2-style message (with line number). On failure *t is left freed (api_tpl_free-safe). */
int api_tpl_load(api_tpl *t, const char *model_dir, rs_err *e);

/* The same from an already parsed tokenizer_config object. */
int api_tpl_init_config(api_tpl *t, const cJSON *tokenizer_config, rs_err *e);

/* From a template string directly (source NULL -> plain rendering); bos/eos may be NULL. */
int api_tpl_init_string(api_tpl *t, const char *source, const char *bos, const char *eos,
                        rs_err *e);

void api_tpl_free(api_tpl *t);

/* true when the model has its own chat template (false: plain rendering). */
bool api_tpl_has_template(const api_tpl *t);

/* Normalise a messages array in place, as OpenAI clients send it: a content given as an array
 * of {"type":"text","text":...} parts becomes one string, the texts joined by "\n" (the same
 * rule as vLLM). A part of another type (image_url, input_audio, ...) or a malformed part is
 * RS_EINVAL naming the message index. String, null and absent contents are left alone. */
int api_tpl_normalize_messages(cJSON *messages, rs_err *e);

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
int api_tpl_render(const api_tpl *t, const cJSON *request, char **out, size_t *out_len, rs_err *e);

#endif
