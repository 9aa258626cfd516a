/*
 * gguf.h — the GGUF container (versions 2 and 3, little-endian), internal to the engine room (not
 * a door). One owner of the file format: the model loader reads its config and tensors through
 * it, and eng_gguf_meta_json (engine.h) hands its metadata to the tokenizer room.
 *
 * Layout (the GGUF spec): "GGUF", u32 version, u64 tensor count, u64 metadata count; metadata
 * key/value pairs (key: u64 length + bytes; u32 value type; the value, arrays as u32 element type
 * + u64 count + elements); tensor infos (name, u32 n_dims, u64 ne[n_dims] innermost first, u32
 * ggml type, u64 offset into the data section); padding to general.alignment (default 32); the
 * data section.
 *
 * eng_gguf_open checks every length, count and offset against the file before anything reads
 * it: a truncated or corrupt file is RS_EINVAL naming the file and the key or tensor, never a
 * read outside the mapping. Tensor types other than F32, F16, BF16, Q8_0, Q4_0, Q4_K and Q6_K are
 * an error naming the type and the tensor. After a successful open, every kv value and tensor
 * may be read blindly. Single-threaded; the struct owns the mapping and its arrays.
 */
#ifndef RADIXSERVE_ENGINE_GGUF_H
#define RADIXSERVE_ENGINE_GGUF_H

#include "engine/internal.h"

/* GGUF metadata value types (the spec's gguf_metadata_value_type). */
enum eng_gguf_vtype {
    GGUF_U8 = 0,
    GGUF_I8 = 1,
    GGUF_U16 = 2,
    GGUF_I16 = 3,
    GGUF_U32 = 4,
    GGUF_I32 = 5,
    GGUF_F32 = 6,
    GGUF_BOOL = 7,
    GGUF_STRING = 8,
    GGUF_ARRAY = 9,
    GGUF_U64 = 10,
    GGUF_I64 = 11,
    GGUF_F64 = 12,
};

/* One metadata pair; pointers into the mapping. */
typedef struct eng_gguf_kv {
    const char *key; /* not NUL-terminated: key_len bytes */
    size_t key_len;
    uint32_t type;      /* an eng_gguf_vtype */
    uint32_t elem_type; /* GGUF_ARRAY: the element type */
    uint64_t n;         /* GGUF_ARRAY: element count; GGUF_STRING: byte length */
    const uint8_t *val; /* the value (GGUF_STRING: its bytes; GGUF_ARRAY: the first element) */
    const uint8_t *raw; /* the value as encoded (string length, array header included) */
} eng_gguf_kv;

typedef struct eng_gguf {
    eng_st_set st; /* the one mapped file (st.files[0]) and its tensors, named as in the file,
                      shapes outermost first (a matrix [rows][cols] as safetensors has it) */
    uint32_t version;
    eng_gguf_kv *kv; /* owned array */
    int64_t n_kv;
    size_t alignment; /* general.alignment or 32 */
} eng_gguf;

/* Open path. weights: read the file as the safetensors loader does (huge-page copy for big
 * files); 0 maps it lazily (only the metadata is wanted). */
int eng_gguf_open(eng_gguf *g, const char *path, int weights, rs_err *e);
void eng_gguf_close(eng_gguf *g);

const eng_gguf_kv *eng_gguf_find(const eng_gguf *g, const char *key);
/* Typed reads: absent keys leave *out untouched and return 0; a present key of the wrong type
 * (or an integer out of int range) is RS_EINVAL naming the file and key. Integers accept any
 * integer type, floats F32 or F64. */
int eng_gguf_int(const eng_gguf *g, const char *key, int *out, rs_err *e);
int eng_gguf_float(const eng_gguf *g, const char *key, float *out, rs_err *e);
int eng_gguf_bool(const eng_gguf *g, const char *key, int *out, rs_err *e);
/* A string value copied into out (size n, NUL-terminated); absent: untouched. */
int eng_gguf_str(const eng_gguf *g, const char *key, char *out, size_t n, rs_err *e);
/* The element count of an array key, or -1 if absent or not an array. */
int64_t eng_gguf_array_len(const eng_gguf *g, const char *key);

#endif
