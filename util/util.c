/* util.c — see util.h. */
#include "util/util.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

int rs_errf(rs_err *e, int code, const char *fmt, ...) {
    if (e) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(e->msg, sizeof e->msg, fmt, ap);
        va_end(ap);
        e->code = code;
    }
    return code;
}

int rs_ivec_reserve(rs_ivec *a, int cap) {
    if (cap <= a->cap) return 0;
    int ncap = a->cap ? a->cap : 16;
    while (ncap < cap) ncap *= 2;
    int32_t *v = realloc(a->v, (size_t)ncap * sizeof *v);
    if (!v) return RS_ENOMEM;
    a->v = v;
    a->cap = ncap;
    return 0;
}

int rs_ivec_push(rs_ivec *a, int32_t x) {
    if (a->n == a->cap && rs_ivec_reserve(a, a->n + 1)) return RS_ENOMEM;
    a->v[a->n++] = x;
    return 0;
}

int rs_ivec_append(rs_ivec *a, const int32_t *x, int n) {
    if (n <= 0) return 0;
    if (rs_ivec_reserve(a, a->n + n)) return RS_ENOMEM;
    memcpy(a->v + a->n, x, (size_t)n * sizeof *x);
    a->n += n;
    return 0;
}

void rs_ivec_free(rs_ivec *a) {
    free(a->v);
    a->v = NULL;
    a->n = a->cap = 0;
}

int rs_grow_bytes(char **p, size_t *cap, size_t need) {
    if (need <= *cap) return 0;
    size_t ncap = *cap ? *cap : 64;
    while (ncap < need) ncap *= 2;
    char *q = realloc(*p, ncap);
    if (!q) return RS_ENOMEM;
    *p = q;
    *cap = ncap;
    return 0;
}

double rs_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

int rs_read_file(const char *path, char **data, size_t *len, rs_err *e) {
    *data = NULL;
    if (len) *len = 0;
    FILE *f = fopen(path, "rb");
    if (!f) return rs_errf(e, RS_EIO, "%s: %s", path, strerror(errno));
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap);
    while (buf) {
        if (n + 1 >= cap) {
            char *nb = realloc(buf, cap * 2);
            if (!nb) {
                free(buf);
                buf = NULL;
                break;
            }
            buf = nb;
            cap *= 2;
        }
        size_t got = fread(buf + n, 1, cap - n - 1, f);
        n += got;
        if (got == 0) break;
    }
    int bad = ferror(f);
    fclose(f);
    if (!buf) return rs_errf(e, RS_ENOMEM, "%s: out of memory", path);
    if (bad) {
        free(buf);
        return rs_errf(e, RS_EIO, "%s: read error", path);
    }
    buf[n] = 0;
    *data = buf;
    if (len) *len = n;
    return 0;
}

int rs_path_join(char *out, size_t n, const char *dir, const char *name, rs_err *e) {
    int w = snprintf(out, n, "%s/%s", dir, name);
    if (w < 0 || (size_t)w >= n) return rs_errf(e, RS_EINVAL, "path too long: %s/%s", dir, name);
    return 0;
}
