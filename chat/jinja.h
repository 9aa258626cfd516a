/*
 * jinja.h — a Jinja2 subset interpreter (chat room, internal). See docs/arch-chat.md.
 *
 * Semantics follow Python jinja2 3.x configured as transformers configures it for chat
 * templates: ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True) with the
 * loopcontrols extension, keep_trailing_newline=False, default Undefined, no autoescape.
 *
 * The compiled template is immutable; rendering allocates everything in a per-render arena, so
 * one chat_jinja may be rendered by many threads at once.
 */
#ifndef RADIXSERVE_CHAT_JINJA_H
#define RADIXSERVE_CHAT_JINJA_H

#include <stddef.h>

#include <cjson/cJSON.h>

#include "util/util.h"

typedef struct chat_jinja chat_jinja;

/* Compile template text (len bytes, need not be NUL-terminated). A syntax error is RS_EINVAL
 * with "line N: ..." in e. *out is owned by the caller (chat_jinja_free). */
int chat_jinja_compile(const char *src, size_t len, chat_jinja **out, rs_err *e);
void chat_jinja_free(chat_jinja *t);

/* Render with the members of the object vars as the template's variables. Numbers that are
 * integral (and fit in int64) become ints, others floats. *out: malloc'd, NUL-terminated. */
int chat_jinja_render(const chat_jinja *t, const cJSON *vars, char **out, size_t *out_len,
                      rs_err *e);

#endif
