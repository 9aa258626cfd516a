/*
 * tap.h — the tiny test harness every C test uses.
 *
 * Output is TAP (Test Anything Protocol): one line per check, "ok N - what" or
 * "not ok N - what", "# SKIP" for skipped checks, diagnostics on lines starting with "#".
 * tests/run.sh reads these lines from every test (C, shell, Python, Node) and prints the closing
 * "N passed, N failed" line. A test program exits 0 when nothing failed, 1 otherwise.
 *
 * Usage:
 *     TAP_OK(x == 3, "x is three (got %d)", x);
 *     tap_skip("needs RADIXSERVE_REAL_MODEL");
 *     return tap_done();
 */
#ifndef RADIXSERVE_TESTS_TAP_H
#define RADIXSERVE_TESTS_TAP_H

#include <stdarg.h>
#include <stdio.h>

static int tap_n_;      /* checks so far */
static int tap_failed_; /* checks that failed */

static inline int tap_ok_(int cond, const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static inline int tap_ok_(int cond, const char *file, int line, const char *fmt, ...) {
    va_list ap;
    tap_n_++;
    printf("%sok %d - ", cond ? "" : "not ", tap_n_);
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    printf("\n");
    if (!cond) {
        tap_failed_++;
        printf("#   failed at %s:%d\n", file, line);
    }
    fflush(stdout);
    return cond;
}

/* TAP_OK(cond, fmt, ...): one check; evaluates to cond so callers can stop early. */
#define TAP_OK(cond, ...) tap_ok_(!!(cond), __FILE__, __LINE__, __VA_ARGS__)

/* A diagnostic line ("# ..."), shown in the log, not counted. */
#define TAP_DIAG(...) (printf("# " __VA_ARGS__), printf("\n"), fflush(stdout))

/* A check that cannot run here, with the reason. */
static inline void tap_skip(const char *why) {
    tap_n_++;
    printf("ok %d - # SKIP %s\n", tap_n_, why);
    fflush(stdout);
}

/* The plan line and the exit code. */
static inline int tap_done(void) {
    printf("1..%d\n", tap_n_);
    fflush(stdout);
    return tap_failed_ ? 1 : 0;
}

#endif
