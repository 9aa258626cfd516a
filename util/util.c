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

/* ---------------------------------------------------------------- UTF-8 */

/* Bytes of the sequence a lead byte starts (0: not a lead byte) and the valid range of the
 * second byte (Unicode Table 3-7); later bytes are 80..BF. */
static int utf8_need(unsigned char c, unsigned char *lo, unsigned char *hi) {
    *lo = 0x80, *hi = 0xBF;
    if (c < 0x80) return 1;
    if (c < 0xC2) return 0;
    if (c < 0xE0) return 2;
    if (c == 0xE0) *lo = 0xA0;
    if (c == 0xED) *hi = 0x9F;
    if (c < 0xF0) return 3;
    if (c == 0xF0) *lo = 0x90;
    if (c == 0xF4) *hi = 0x8F;
    if (c < 0xF5) return 4;
    return 0;
}

int rs_utf8_prefix(const unsigned char *p, size_t n, int *whole) {
    unsigned char lo, hi;
    int need = utf8_need(p[0], &lo, &hi);
    *whole = need == 1;
    if (need <= 1) return 1;
    int k = 1;
    while (k < need && (size_t)k < n && p[k] >= lo && p[k] <= hi) {
        k++;
        lo = 0x80, hi = 0xBF;
    }
    *whole = k == need;
    return k;
}

size_t rs_utf8_check(const char *s, size_t n) {
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0;
    while (i < n) {
        int whole = 1;
        int k = u[i] < 0x80 ? 1 : rs_utf8_prefix(u + i, n - i, &whole);
        if (!whole) return i;
        i += (size_t)k;
    }
    return n;
}

/* Bytes of src with each invalid subpart counted as U+FFFD (3 bytes). */
static size_t utf8_clean_len(const unsigned char *u, size_t n) {
    size_t i = 0, len = 0;
    while (i < n) {
        int whole = 1;
        int k = u[i] < 0x80 ? 1 : rs_utf8_prefix(u + i, n - i, &whole);
        len += whole ? (size_t)k : 3;
        i += (size_t)k;
    }
    return len;
}

char *rs_utf8_clip(char *dst, size_t cap, const char *src) {
    const unsigned char *u = (const unsigned char *)src;
    size_t n = strlen(src), i = 0, w = 0;
    int cut = utf8_clean_len(u, n) > cap - 1;
    while (i < n) {
        int whole = 1;
        int k = u[i] < 0x80 ? 1 : rs_utf8_prefix(u + i, n - i, &whole);
        const char *piece = whole ? src + i : "\xEF\xBF\xBD";
        size_t len = whole ? (size_t)k : 3;
        /* When cut, every piece leaves room for "..." after it (cap >= 4 for the first). */
        if (cut && w + len + 3 > cap - 1) {
            memcpy(dst + w, "...", 3);
            w += 3;
            break;
        }
        memcpy(dst + w, piece, len);
        w += len;
        i += (size_t)k;
    }
    dst[w] = 0;
    return dst;
}
