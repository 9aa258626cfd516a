/*
 * fuzz.h — what every libFuzzer target in fuzz/ shares (header-only: each target is one program
 * built from one .c file, see the Makefile's fuzz rules and fuzz/run.sh).
 *
 * A target turns its input into calls of one room's entry point and aborts (a finding) when an
 * invariant the rest of the program relies on breaks: an error body or a decoded text that is not
 * valid UTF-8, a parse that succeeds but cannot be freed, a crash or a sanitizer report.
 */
#ifndef RADIXSERVE_FUZZ_H
#define RADIXSERVE_FUZZ_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/util.h"

/* Abort with a message: libFuzzer then saves the input as a crash-* file. */
#define FUZZ_CHECK(cond, what)                                                                     \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "fuzz invariant broken: %s (%s:%d)\n", what, __FILE__, __LINE__);      \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

static inline int fuzz_utf8(const char *s) {
    size_t n = strlen(s);
    return rs_utf8_check(s, n) == n;
}

/* The repository root (RADIXSERVE_ROOT, else the working directory) joined with rel. */
static inline void fuzz_path(char *out, size_t n, const char *rel) {
    const char *root = getenv("RADIXSERVE_ROOT");
    snprintf(out, n, "%s/%s", root && root[0] ? root : ".", rel);
}

#endif
