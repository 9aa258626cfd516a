/*
 * grammar.h — the door of the grammar room: constrained decoding. A JSON Schema (or "any JSON
 * object", or a set of tool calls) is compiled to a byte-level pushdown automaton; a matcher
 * walks it one accepted token at a time, and per decode step computes the mask of every
 * vocabulary token whose bytes the automaton can take next, by walking a trie of the
 * vocabulary's byte strings against the current state (as xgrammar and llguidance do).
 * Includes the doors of util and tokenizer (for token byte strings) only, and cJSON.
 *
 * Ownership and threads:
 *   - gr_grammar: built by gr_compile_* on any thread (an HTTP thread parses the request), then
 *     handed to the scheduler, which owns it with the request (sched_params.grammar). Its nodes
 *     are immutable after compilation.
 *   - gr_vocab: the trie of token byte strings, built once per tokenizer (the scheduler builds
 *     it at start), immutable, readable from any thread.
 *   - gr_matcher: one per sequence (each choice of n > 1 its own), owned by the sequence and
 *     touched by the scheduler thread only. It holds the automaton state (a small set of
 *     stacks: anyOf keeps its live alternatives side by side) and the scratch of the mask walk.
 *     It depends only on the accepted bytes, so a preempted sequence keeps it as is.
 *
 * Failure: compilation fails with RS_EINVAL and a message naming the unsupported keyword or the
 * bad value ("unsupported JSON Schema keyword 'pattern' at #/properties/a"), never by ignoring
 * it; allocation failures are RS_ENOMEM. A matcher never accepts bytes that cannot be extended to
 * a valid value; a rejected token leaves its state unchanged.
 *
 * Whitespace policy: no whitespace before or after the top-level value; inside objects and
 * arrays at most GR_MAX_WS whitespace bytes (space, tab, CR, LF) in each gap between tokens
 * (enough for a pretty-printed value a few levels deep, few enough that a small model that keeps
 * choosing whitespace still has to make progress). Numbers: at most 15 integer digits, 15
 * fraction digits, 2 exponent digits (finite in every JSON parser). Strings: escapes \" \\ \/
 * \b \f \n \r \t and \uXXXX (no surrogates, so each escape is one code point), raw bytes form
 * valid UTF-8, no raw control characters; minLength/maxLength count code points.
 * Design notes: docs/arch-grammar.md.
 */
#ifndef RADIXSERVE_GRAMMAR_H
#define RADIXSERVE_GRAMMAR_H

#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "tokenizer/tokenizer.h"
#include "util/util.h"

#define GR_MAX_WS     8  /* whitespace bytes per gap inside objects and arrays */
#define GR_MAX_PROPS  64 /* properties per object schema (a bit set of seen keys) */
#define GR_MAX_ENUM   64 /* values per enum (a bit set of live alternatives) */
#define GR_MAX_DEPTH  64 /* nesting of a value's frames (deeper input is rejected) */
#define GR_MAX_STACKS 32 /* live alternatives at once (anyOf, enum prefixes) */

typedef struct gr_grammar gr_grammar;
typedef struct gr_vocab gr_vocab;
typedef struct gr_matcher gr_matcher;

/* ---------------------------------------------------------------- compiling */

/* Compile a JSON Schema (an object or a boolean). Supported: type (object, array, string,
 * number, integer, boolean, null, or a list of them), properties, required,
 * additionalProperties (boolean or schema; absent = any value), enum, const, items (schema,
 * false, or a draft-07 list), prefixItems, minItems, maxItems, minLength, maxLength, anyOf,
 * oneOf (only with alternatives of different types, so "exactly one" holds by construction),
 * local $ref ("#", "#/$defs/..", "#/definitions/..") with $defs / definitions; annotations
 * (title, description, default, examples, $schema, $id, $comment, deprecated, readOnly,
 * writeOnly) are ignored. Without "type" the type follows from the keywords present (properties
 * → object, items → array, ...; none → any JSON value). */
int gr_compile_schema(gr_grammar **out, const cJSON *schema, rs_err *e);
/* Any JSON object (response_format json_object without a schema). */
int gr_compile_json_object(gr_grammar **out, rs_err *e);

/* One tool a tool-call grammar may call: its name and its parameters schema (NULL: any
 * object). */
typedef struct gr_tool {
    const char *name;
    const cJSON *parameters;
} gr_tool;

/* Tool calls: `open` "\n" {"name": <one of the names>, "arguments":
 * <that tool's parameters>} "\n" `close`, repeated (separated by "\n") when `parallel`, else
 * once. Errors name the tool ("tools[1].function.parameters: ..."). */
int gr_compile_tools(gr_grammar **out, const gr_tool *tools, int n_tools, const char *open,
                     const char *close, int parallel, rs_err *e);
void gr_free(gr_grammar *g);

/* ---------------------------------------------------------------- the vocabulary */

/* Build the trie over n_tokens byte strings (bytes[i] of lens[i] bytes; NULL: a token the
 * grammar never allows, e.g. a special token) and remember the end-of-sequence ids (allowed
 * exactly when the value is complete). */
int gr_vocab_new(gr_vocab **out, int n_tokens, const char *const *bytes, const int *lens,
                 const int32_t *eos, int n_eos, rs_err *e);
/* The same from a tokenizer (tok_token_bytes of every id; special tokens and ids at or beyond
 * the tokenizer's size are never allowed), for a model of n_tokens logits. */
int gr_vocab_from_tokenizer(gr_vocab **out, const tok_tokenizer *t, int n_tokens,
                            const int32_t *eos, int n_eos, rs_err *e);
void gr_vocab_free(gr_vocab *v);
int gr_vocab_size(const gr_vocab *v);

/* ---------------------------------------------------------------- matching */

int gr_matcher_new(gr_matcher **out, const gr_grammar *g, rs_err *e);
void gr_matcher_free(gr_matcher *m);

/* Take bytes: 1 accepted (state advanced), 0 rejected (state unchanged), RS_ENOMEM. */
int gr_matcher_accept_bytes(gr_matcher *m, const char *p, size_t n);
/* Take a token: its bytes, or an EOS id (accepted exactly when gr_matcher_can_end). */
int gr_matcher_accept_token(gr_matcher *m, const gr_vocab *v, int32_t token);
/* The bytes so far are a complete value (EOS may come now). */
int gr_matcher_can_end(gr_matcher *m);
/* Complete and nothing can follow: generation ends here. */
int gr_matcher_done(const gr_matcher *m);

/* The tokens allowed next, one bit per token of v (bit t % 32 of word t / 32), words =
 * (gr_vocab_size(v) + 31) / 32. Returns the number of allowed tokens (0: a dead end the
 * grammar should never reach), or RS_ENOMEM. */
int gr_matcher_mask(gr_matcher *m, const gr_vocab *v, uint32_t *mask);
/* Set logits[t] = -inf for each t < n not in mask (tokens beyond the vocabulary too). */
void gr_mask_apply(const uint32_t *mask, int mask_tokens, float *logits, int n);

#endif
