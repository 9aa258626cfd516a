/*
 * tok_internal.h — the private shapes of the tokenizer room, shared by its .c files only.
 *
 * A loaded tokenizer is a tree of small component structs mirroring the components
 * tokenizer.json declares (normalizer, pre_tokenizer, model, post_processor, decoder). Each
 * component is a tagged struct; a Sequence holds children. Strings pass between the stages as
 * a tok_list: one byte buffer plus (offset, length) spans, so a stage never allocates per piece.
 */
#ifndef RADIXSERVE_TOK_INTERNAL_H
#define RADIXSERVE_TOK_INTERNAL_H

#define PCRE2_CODE_UNIT_WIDTH 8
#include <cjson/cJSON.h>
#include <pcre2.h>
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include "tokenizer/tokenizer.h"

/* ---- byte strings and lists of pieces -------------------------------------------------- */

typedef struct tok_bytes {
    char *p;    /* data, owned; not NUL-terminated unless tb_cstr was called */
    size_t n;   /* bytes used */
    size_t cap; /* bytes allocated */
} tok_bytes;

int tb_put(tok_bytes *b, const void *p, size_t n);
int tb_reserve(tok_bytes *b, size_t n); /* room for n more bytes (and a NUL) */
int tb_cstr(tok_bytes *b);              /* ensure a NUL after the data (not counted in n) */
void tb_free(tok_bytes *b);

typedef struct tok_span {
    size_t off; /* start of the piece in the list's buffer */
    size_t len; /* length in bytes */
} tok_span;

typedef struct tok_list {
    tok_bytes b; /* the bytes of every piece, back to back */
    tok_span *s; /* the pieces, in order, owned */
    int n;       /* pieces used */
    int cap;     /* pieces allocated */
} tok_list;

int tl_push(tok_list *l, const char *p, size_t n);
/* Append bytes to the last piece (or start one when the list is empty). */
int tl_extend(tok_list *l, const char *p, size_t n);
void tl_clear(tok_list *l);
void tl_free(tok_list *l);
static inline const char *tl_ptr(const tok_list *l, int i) {
    return l->b.p + l->s[i].off;
}

/* ---- UTF-8 ------------------------------------------------------------------------------ */

/* Length of the valid UTF-8 sequence at p (1..4), or 0 if the bytes there are not one. */
int tok_utf8_len(const unsigned char *p, size_t n);
int tok_utf8_valid(const char *p, size_t n);
int tok_utf8_put(tok_bytes *b, int32_t cp);
/* Append p to out, replacing each maximal invalid subpart by U+FFFD (as Rust's
 * String::from_utf8_lossy and the WHATWG TextDecoder do). *truncated (may be NULL) tells
 * whether p ended inside a sequence that more bytes could complete. */
int tok_utf8_lossy(tok_bytes *out, const char *p, size_t n, int *truncated);

/* ---- string -> id and pair -> merge hash tables ----------------------------------------- */

typedef struct tok_strmap {
    int32_t *slot;   /* id per slot, -1 empty; keys live in the strings array */
    uint32_t mask;   /* slots - 1 (power of two) */
    char **strs;     /* id -> string (not owned; the tokenizer's id table) */
    const int *lens; /* id -> string length */
} tok_strmap;

int tok_strmap_init(tok_strmap *m, int expected);
void tok_strmap_free(tok_strmap *m);
void tok_strmap_put(tok_strmap *m, int32_t id); /* key is strs[id] */
int32_t tok_strmap_get(const tok_strmap *m, const char *s, size_t n);

typedef struct tok_merge {
    uint64_t key; /* (left id << 32) | right id; UINT64_MAX marks an empty slot */
    int32_t rank; /* merge priority, lower first (line order in the merges list) */
    int32_t id;   /* id of the merged token */
} tok_merge;

typedef struct tok_mergemap {
    tok_merge *slot; /* open-addressing table */
    uint32_t mask;   /* slots - 1 */
} tok_mergemap;

int tok_mergemap_init(tok_mergemap *m, int expected);
void tok_mergemap_free(tok_mergemap *m);
void tok_mergemap_put(tok_mergemap *m, int32_t a, int32_t b, int32_t rank, int32_t id);
const tok_merge *tok_mergemap_get(const tok_mergemap *m, int32_t a, int32_t b);

uint64_t tok_hash(const void *p, size_t n);

/* ---- components ------------------------------------------------------------------------- */

typedef enum {
    NORM_NFC,
    NORM_NFD,
    NORM_NFKC,
    NORM_NFKD,
    NORM_LOWERCASE,
    NORM_PREPEND,
    NORM_REPLACE,
    NORM_SEQUENCE
} tok_norm_kind;

typedef struct tok_norm {
    tok_norm_kind kind;   /* which normalizer */
    char *a;              /* Prepend: the prefix; Replace: the searched string */
    char *b;              /* Replace: the replacement */
    struct tok_norm *sub; /* Sequence: children, owned */
    int nsub;             /* Sequence: number of children */
} tok_norm;

typedef enum { PRE_SPLIT, PRE_BYTELEVEL, PRE_METASPACE, PRE_SEQUENCE } tok_pre_kind;

typedef enum { SPLIT_ISOLATED, SPLIT_REMOVED, SPLIT_MERGED_PREV, SPLIT_MERGED_NEXT } tok_split_mode;

typedef enum { PREPEND_ALWAYS, PREPEND_FIRST, PREPEND_NEVER } tok_prepend_scheme;

typedef struct tok_pre {
    tok_pre_kind kind;     /* which pre-tokenizer */
    pcre2_code *re;        /* Split (regex or escaped string) / ByteLevel use_regex: owned */
    tok_split_mode mode;   /* Split: what happens to matches */
    int add_prefix_space;  /* ByteLevel: prepend a space to a segment not starting with one */
    char repl[8];          /* Metaspace: the replacement character (UTF-8, e.g. "▁") */
    tok_prepend_scheme ps; /* Metaspace: when to prepend the replacement */
    int split;             /* Metaspace: split into words starting with the replacement */
    struct tok_pre *sub;   /* Sequence: children, owned */
    int nsub;              /* Sequence: number of children */
} tok_pre;

typedef enum {
    DEC_BYTELEVEL,
    DEC_REPLACE,
    DEC_BYTEFALLBACK,
    DEC_FUSE,
    DEC_STRIP,
    DEC_METASPACE
} tok_dec_kind;

/* Decoders are kept as a flat list (a Sequence is flattened at load time). */
typedef struct tok_dec {
    tok_dec_kind kind; /* which decoder */
    char *a;           /* Replace: searched string; Strip / Metaspace: the character (UTF-8) */
    char *b;           /* Replace: replacement */
    int start, stop;   /* Strip: how many leading / trailing characters to remove */
    int prefix;        /* Metaspace: strip the leading space of the first token */
    int global;        /* Strip / Metaspace: acts on the start of the whole text, so a stream
                          applies it itself (see tok_stream) */
} tok_dec;

typedef struct tok_added {
    char *content;   /* the spelling, owned */
    size_t len;      /* strlen(content) */
    int32_t id;      /* its id */
    int special;     /* skipped by decode(skip_special) */
    int lstrip;      /* a match also swallows the whitespace to its left */
    int rstrip;      /* ... and to its right */
    int single_word; /* only matches when not inside a word */
    int normalized;  /* matched in the normalized text rather than the raw text */
} tok_added;

typedef struct tok_cache_shard {
    pthread_mutex_t mu;        /* guards this shard (lookups and inserts from many threads) */
    struct tok_cache_ent *ent; /* open-addressing slots, owned */
    int used;                  /* slots in use; the shard is cleared when it is half full */
} tok_cache_shard;

enum { TOK_CACHE_SHARDS = 64, TOK_CACHE_SLOTS = 2048, TOK_CACHE_MAXKEY = 96 };

struct tok_tokenizer {
    /* vocabulary: ids 0 .. n_ids - 1 (model vocab and added tokens together) */
    int n_ids;               /* vocab size (max id + 1) */
    char **id_str;           /* id -> token string (NULL for an id nothing uses), owned */
    int *id_len;             /* id -> strlen(id_str[id]) */
    unsigned char *id_flags; /* id -> TOKF_* bits */
    tok_strmap vocab;        /* model token string -> id */
    tok_mergemap merges;     /* (left, right) -> (rank, merged id) */

    /* BPE options */
    int32_t unk_id;    /* unk_token id or -1 */
    int byte_fallback; /* unknown characters become <0xNN> tokens */
    int fuse_unk;      /* consecutive unknowns become one unk */
    int ignore_merges; /* a pre-token that is a whole vocab entry is emitted as is */
    char *cont_prefix; /* continuing_subword_prefix ("" if none), owned */
    char *eow_suffix;  /* end_of_word_suffix ("" if none), owned */
    size_t cont_prefix_len, eow_suffix_len; /* their lengths */
    int32_t small_cp_id[0x800]; /* code point < U+0800 -> its one-character token id or -1
                                   (the per-character lookup of BPE, without hashing) */
    int32_t byte_id[256];       /* <0xNN> token ids for byte fallback, -1 if absent */

    tok_norm *norm;                 /* normalizer or NULL, owned */
    tok_pre *pre;                   /* pre-tokenizer or NULL, owned */
    tok_added *added;               /* added tokens, longest first, owned */
    int n_added;                    /* number of added tokens */
    int any_norm_added;             /* some added token has normalized=true */
    unsigned char added_first[256]; /* first byte -> bit 0: a raw-text added token starts with
                                       it, bit 1: a normalized one does (quick rejection) */

    rs_ivec post_pre;  /* ids the post-processor puts before the sequence */
    rs_ivec post_post; /* ids it puts after */

    tok_dec *dec;       /* decoders in order, owned */
    int n_dec;          /* number of decoders (0: tokens are joined with spaces) */
    int strip_start;    /* leading characters a global Strip / Metaspace decoder removes */
    char strip_char[8]; /* the character it removes */

    tok_config config; /* tokenizer_config.json, owned */

    /* GPT-2's reversible byte alphabet: printable Latin-1 bytes stand for themselves, the other
     * 68 bytes get code points 256, 257, ... in byte order (computed at load, not tabulated) */
    unsigned char bl_char[256][3]; /* byte -> [UTF-8 length, UTF-8 bytes] of its stand-in */
    int16_t bl_byte[324];          /* stand-in code point -> byte, -1 if none */

    tok_cache_shard cache[TOK_CACHE_SHARDS]; /* pre-token -> ids cache */
};

enum { TOKF_SPECIAL = 1, TOKF_ADDED = 2, TOKF_BYTE = 4 };

/* Loading of components (tok_load.c) */
/* Fill t from parsed tokenizer.json (root) and tokenizer_config.json (cfg, may be NULL; its
 * tok_config already read into t->config). */
int tok_load_json(tok_tokenizer *t, const cJSON *root, const cJSON *cfg, rs_err *e);
void tok_components_free(tok_tokenizer *t);
/* tokenizer_config.json already parsed (cfg may be NULL: none) read from dir (tok_config.c; dir
 * NULL: no chat_template.jinja to look for). */
int tok_config_from_json(tok_config *c, const cJSON *cfg, const char *dir, const char *cfg_path,
                         rs_err *e);
/* A new tokenizer from tokenizer.json (root) and tokenizer_config.json (cfg, may be NULL; read
 * from cfg_path, and chat_template.jinja from dir when dir is not NULL); a failure's message is
 * prefixed with `where`. The one constructor of both sources (tok_load, and tok_load_gguf, which
 * builds the same two objects from GGUF metadata). */
int tok_new_from_json(tok_tokenizer **out, const cJSON *root, const cJSON *cfg, const char *dir,
                      const char *cfg_path, const char *where, rs_err *e);

/* Normalize and pre-tokenize one segment (tok_pipeline.c). */
int tok_normalize(const tok_norm *n, tok_bytes *s, rs_err *e);
int tok_pretokenize(const tok_tokenizer *t, const tok_pre *p, tok_list *io, int first_segment,
                    rs_err *e);
int tok_regex_rewrite(const char *pat, tok_bytes *out);
/* Replace every occurrence of a by b in s (RS_ENOMEM on failure). */
int tok_replace(const char *a, const char *b, tok_bytes *s);

/* BPE model (tok_bpe.c): ids of one pre-token appended to out. */
int tok_bpe_word(const tok_tokenizer *t, const char *w, size_t n, rs_ivec *out, rs_err *e);
void tok_cache_init(tok_tokenizer *t);
void tok_cache_free(tok_tokenizer *t);

/* Byte-level alphabet (tok_util.c): fills bl_char / bl_byte. */
void tok_bytelevel_init(tok_tokenizer *t);

/* How tok_decode_into runs, and what it found. */
typedef struct tok_dec_mode {
    int skip_special; /* drop special tokens */
    int cont;         /* the ids continue earlier text: a decoder acting on the start of the
                         whole text (global Strip / Metaspace) does nothing */
    int truncated;    /* out: the byte-level text ended inside a UTF-8 sequence (it may still
                         complete with more tokens) */
} tok_dec_mode;

/* Decode ids[0..n) into out. */
int tok_decode_into(const tok_tokenizer *t, const int32_t *ids, int n, tok_dec_mode *m,
                    tok_bytes *out, rs_err *e);

#endif
