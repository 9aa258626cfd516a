/*
 * tokenizer.h — the door of the tokenizer room: Hugging Face tokenizer.json (or vocab.json +
 * merges.txt, or a GGUF file's tokenizer metadata) loading, encoding to ids exactly as Hugging
 * Face's tokenizers library does, and decoding (whole and incremental). It includes nothing of
 * the project but util (GGUF metadata arrives as a cJSON object from the caller).
 *
 * The pipeline that runs is decided by the components tokenizer.json declares (normalizer,
 * pre_tokenizer, model, post_processor, decoder), never by a model name; an unknown component
 * type is a load-time RS_EINVAL naming it.
 *
 * A loaded tok_tokenizer is immutable and may be used from many threads at once; per-call state
 * lives in the caller's structs (tok_stream). (Its internal pre-token cache is sharded and
 * mutex-protected, invisible to callers.) Design notes: docs/arch-tokenizer.md.
 */
#ifndef RADIXSERVE_TOKENIZER_H
#define RADIXSERVE_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

#include "util/util.h"

typedef struct tok_tokenizer tok_tokenizer; /* opaque */

/* Load from a model directory: tokenizer.json (or vocab.json + merges.txt) and
 * tokenizer_config.json (added tokens, the tok_config below). */
int tok_load(tok_tokenizer **out, const char *dir, rs_err *e);
void tok_free(tok_tokenizer *t);

/* Load from the metadata of a GGUF file (llama.cpp's tokenizer.ggml.* keys and
 * tokenizer.chat_template, as one JSON object key -> value; the engine's eng_gguf_meta_json reads
 * it). Builds the pipeline the same vocabulary has in tokenizer.json, so encoding and decoding
 * are those of tok_load. An unknown tokenizer.ggml.model or tokenizer.ggml.pre is RS_EINVAL
 * naming it; `where` (the file) prefixes messages. */
struct cJSON;
int tok_load_gguf(tok_tokenizer **out, const struct cJSON *meta, const char *where, rs_err *e);

int tok_vocab_size(const tok_tokenizer *t); /* ids are 0 .. vocab_size - 1 */

/* Encode flags. */
enum {
    TOK_ADD_SPECIAL = 1, /* apply the post-processor (e.g. BOS first for Llama) */
    TOK_NO_SPECIAL = 2,  /* treat added/special token spellings in the text as plain text
                            (every added token, special or not: for untrusted content) */
};

/* Encode UTF-8 text (len bytes) and append the ids to out. Invalid UTF-8 is RS_EINVAL. */
int tok_encode(const tok_tokenizer *t, const char *text, size_t len, int flags, rs_ivec *out,
               rs_err *e);

/* Decode ids to UTF-8 into a malloc'd NUL-terminated string. An out-of-range id is RS_EINVAL.
 * skip_special: drop special tokens from the text. (A token for byte 0 decodes to a NUL byte,
 * which ends the C string early.) */
int tok_decode(const tok_tokenizer *t, const int32_t *ids, int n, int skip_special, char **out,
               rs_err *e);

/* Id of an added/special token spelled exactly `s`, or -1. */
int32_t tok_special_id(const tok_tokenizer *t, const char *s);

/*
 * What tokenizer_config.json says, read in one place (tok_config.c) with one set of rules: the
 * tokenizer's own post-processing (add_bos_token) and the chat room (template, special tokens
 * as template variables) both take it from here. A special token is a string or an AddedToken
 * object ({"content": ...}); chat_template is a string or a list of {"name", "template"} whose
 * "default" entry is used (a list without one is RS_EINVAL); DIR/chat_template.jinja, when
 * present, replaces it (as transformers does). Immutable once loaded.
 */
enum { TOK_BOS, TOK_EOS, TOK_UNK, TOK_SEP, TOK_PAD, TOK_CLS, TOK_MASK, TOK_N_NAMED };

typedef struct tok_config {
    char *named[TOK_N_NAMED]; /* bos_token .. mask_token texts (owned), NULL when not set */
    char **extra;             /* additional_special_tokens texts (owned) */
    int n_extra;
    int add_bos, add_eos;     /* add_bos_token / add_eos_token (false when absent) */
    char *chat_template;      /* the template text (owned), NULL: the model has none */
    char *chat_template_path; /* the file it came from, for error messages (owned), or NULL */
} tok_config;

/* "bos_token", "eos_token", ... for TOK_BOS .. TOK_MASK (NULL out of range). */
const char *tok_config_key(int which);
/* Read DIR/tokenizer_config.json alone (no tokenizer.json needed; RS_EIO naming the file when
 * it is missing). On failure *c is empty (tok_config_free-safe). */
int tok_config_load(tok_config *c, const char *dir, rs_err *e);
void tok_config_free(tok_config *c);
/* The configuration the tokenizer was loaded with (empty when the directory has no
 * tokenizer_config.json). Valid as long as t. */
const tok_config *tok_get_config(const tok_tokenizer *t);

/* The bytes token `id` stands for inside a text, for constrained decoding: byte-level tokens
 * give their raw bytes (possibly part of a UTF-8 character, unlike decoding, which repairs
 * them), a byte-fallback <0xNN> token its byte, other decoders (Metaspace, Replace) act as they
 * do mid-text. *out is malloc'd (NUL-terminated, *n bytes without it). Returns 1 for a special
 * token (decoding skips it; *out NULL), 0, RS_EINVAL (id out of range) or RS_ENOMEM. */
int tok_token_bytes(const tok_tokenizer *t, int32_t id, char **out, size_t *n, rs_err *e);

/*
 * Incremental decoding for streaming: feed ids one at a time; each call appends to `out` only
 * whole UTF-8 characters that can no longer change, keeping the leading space of a continuation
 * (" time" after "Once upon a"), and tok_stream_flush emits whatever is held at the end.
 * Concatenating every piece equals tok_decode of all ids.
 */
typedef struct tok_stream {
    const tok_tokenizer *t;
    int skip_special;
    rs_ivec ids;    /* ids fed so far (owned) */
    size_t emitted; /* bytes of the full decoded text already emitted */
    int prefix_off; /* start of the re-decoded window: the first id of the last emitting step */
    int read_off;   /* ids before this have been emitted as text */
    int strip_left; /* characters a start-of-text Strip decoder may still remove */
} tok_stream;

void tok_stream_init(tok_stream *s, const tok_tokenizer *t, int skip_special);
/* Append the newly final text to *out (malloc'd, NUL-terminated; may be ""). */
int tok_stream_push(tok_stream *s, int32_t id, char **out, rs_err *e);
int tok_stream_flush(tok_stream *s, char **out, rs_err *e);
void tok_stream_free(tok_stream *s);

#endif
