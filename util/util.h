/*
 * util.h — the floor every room stands on: error reporting, a growable id vector, clocks,
 * whole-file reads. It includes nothing of the project and holds no state.
 *
 * Error contract (all rooms): a function that can fail returns 0 on success or a negative
 * RS_E* code, and fills the caller-owned rs_err with a message a user can act on (naming the
 * file, tensor, field or limit involved). No exit() or abort() on bad input anywhere but main.
 */
#ifndef RADIXSERVE_UTIL_H
#define RADIXSERVE_UTIL_H

#include <stddef.h>
#include <stdint.h>

enum {
    RS_OK = 0,
    RS_EINVAL = -1,    /* bad input: malformed file, wrong type, out of range */
    RS_ENOMEM = -2,    /* allocation failed */
    RS_EIO = -3,       /* a file could not be opened or read */
    RS_EFULL = -4,     /* a bounded resource is full (queue, KV pool); retry later */
    RS_ENOTFOUND = -5, /* a named thing (model, tensor, file) does not exist */
    RS_ETOOBIG =
        -6, /* can never fit (prompt longer than the context, request larger than the pool) */
    RS_ECANCELED = -7, /* the request was cancelled */
};

typedef struct rs_err {
    int code;      /* the RS_E* code of the last failure, 0 if none */
    char msg[512]; /* human-readable message of the last failure */
} rs_err;

/* Fill e (which may be NULL) with code and a printf-style message; returns code. */
int rs_errf(rs_err *e, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* A growable array of int32 (token ids, block ids). Zero-initialised is empty and valid. */
typedef struct rs_ivec {
    int32_t *v; /* elements, owned */
    int n;      /* number of elements */
    int cap;    /* allocated capacity */
} rs_ivec;

int rs_ivec_push(rs_ivec *a, int32_t x);                 /* RS_ENOMEM on failure */
int rs_ivec_append(rs_ivec *a, const int32_t *x, int n); /* RS_ENOMEM on failure */
int rs_ivec_reserve(rs_ivec *a, int cap);
void rs_ivec_free(rs_ivec *a);

/* Grow a byte buffer *p (capacity *cap) to hold at least `need` bytes, doubling from 64; the
 * one growth rule behind every text buffer (api_buf, tok_bytes, the stop-string hold-back).
 * RS_ENOMEM leaves *p and *cap unchanged. */
int rs_grow_bytes(char **p, size_t *cap, size_t need);

/* UTF-8 as RFC 3629 has it (no overlong forms, no surrogates, nothing above U+10FFFF); the
 * one decoder of byte sequences behind the tokenizer's checks and every message or field check.
 * rs_utf8_prefix: bytes of the longest valid start of a sequence at p (n >= 1; at least 1, the
 * "maximal subpart" a replacement character stands for), *whole set when it is a complete
 * character. rs_utf8_check: offset of the first byte that is not part of a valid character, n
 * when all of s[0..n) is valid. */
int rs_utf8_prefix(const unsigned char *p, size_t n, int *whole);
size_t rs_utf8_check(const char *s, size_t n);

/* The one way client text goes into a message: src (NUL-terminated) copied into dst (cap >= 4
 * bytes) with each invalid subpart replaced by U+FFFD and, when it does not fit, cut on a
 * character boundary and ended with "...". dst is always valid, NUL-terminated UTF-8. Returns
 * dst, so a call can be a printf argument; RS_CLIP(s, n) does so in a buffer of n bytes that
 * lives until the end of the enclosing full expression's block. */
char *rs_utf8_clip(char *dst, size_t cap, const char *src);
#define RS_CLIP(s, n) rs_utf8_clip((char[(n)]){0}, (n), (s))

/* Monotonic time in seconds. */
double rs_now(void);

/* Read a whole file into a NUL-terminated malloc'd buffer (*len excludes the NUL). */
int rs_read_file(const char *path, char **data, size_t *len, rs_err *e);

/* Join dir and name into out (size n); RS_EINVAL if it does not fit. */
int rs_path_join(char *out, size_t n, const char *dir, const char *name, rs_err *e);

#endif
