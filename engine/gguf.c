/*
 * gguf.c — GGUF files: header, metadata, tensor infos and data section, every length and offset
 * checked against the file (see gguf.h); metadata typed reads; the metadata as JSON for the
 * tokenizer room (eng_gguf_meta_json).
 */
#include "engine/gguf.h"

#include <cjson/cJSON.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "engine/quant.h"

enum { GGUF_DEFAULT_ALIGN = 32, GGUF_MAX_DEPTH = 4, GGUF_MAX_NAME = 1024 };

/* The tensor types the engine reads: ggml type -> storage type (block sizes: quant.h). */
static const struct gguf_ttype {
    uint32_t ggml;
    eng_dtype dtype;
} TTYPES[] = {
    {ENG_GGML_F32, ENG_F32},   {ENG_GGML_F16, ENG_F16},   {ENG_GGML_BF16, ENG_BF16},
    {ENG_GGML_Q8_0, ENG_Q8_0}, {ENG_GGML_Q4_0, ENG_Q4_0}, {ENG_GGML_Q4_K, ENG_Q4_K},
    {ENG_GGML_Q6_K, ENG_Q6_K},
};

/* ggml's names for the types (for the error naming a type the engine does not read). */
static const char *ggml_type_name(uint32_t t) {
    static const char *const names[] = {
        "F32",   "F16",        "Q4_0",       "Q4_1",       "Q4_2",     "Q4_3",     "Q5_0",
        "Q5_1",  "Q8_0",       "Q8_1",       "Q2_K",       "Q3_K",     "Q4_K",     "Q5_K",
        "Q6_K",  "Q8_K",       "IQ2_XXS",    "IQ2_XS",     "IQ3_XXS",  "IQ1_S",    "IQ4_NL",
        "IQ3_S", "IQ2_S",      "IQ4_XS",     "I8",         "I16",      "I32",      "I64",
        "F64",   "IQ1_M",      "BF16",       "Q4_0_4_4",   "Q4_0_4_8", "Q4_0_8_8", "TQ1_0",
        "TQ2_0", "IQ4_NL_4_4", "IQ4_NL_4_8", "IQ4_NL_8_8", "MXFP4"};
    return t < sizeof names / sizeof names[0] ? names[t] : "unknown";
}

static const struct gguf_ttype *ttype_of(uint32_t t) {
    for (size_t i = 0; i < sizeof TTYPES / sizeof TTYPES[0]; i++)
        if (TTYPES[i].ggml == t) return &TTYPES[i];
    return NULL;
}

/* ---------------------------------------------------------------- bounded reading */

typedef struct cur {
    const uint8_t *p, *end; /* unread bytes */
    const char *path;       /* for messages */
    rs_err *e;
} cur;

static int need(cur *c, uint64_t n, const char *what) {
    if (n > (uint64_t)(c->end - c->p))
        return rs_errf(c->e, RS_EINVAL, "%s: truncated or corrupt GGUF file (%s runs past the end)",
                       c->path, what);
    return 0;
}

static uint64_t le(const uint8_t *p, int n) {
    uint64_t v = 0;
    for (int i = n - 1; i >= 0; i--) v = v << 8 | p[i];
    return v;
}

static int rd(cur *c, int n, uint64_t *v, const char *what) {
    int rc = need(c, (uint64_t)n, what);
    if (rc) return rc;
    *v = le(c->p, n);
    c->p += n;
    return 0;
}

static int rd_str(cur *c, const char **s, size_t *n, const char *what) {
    uint64_t len;
    int rc = rd(c, 8, &len, what);
    if (!rc) rc = need(c, len, what);
    if (rc) return rc;
    *s = (const char *)c->p;
    *n = (size_t)len;
    c->p += len;
    return 0;
}

/* Bytes of one value of a fixed-size type, 0 for strings and arrays, -1 if unknown. */
static int fixed_size(uint32_t t) {
    static const int sz[] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};
    return t < sizeof sz / sizeof sz[0] ? sz[t] : -1;
}

/* Walk over one value of type t (validating it); arrays record their element type and count. */
static int skip_value(cur *c, uint32_t t, int depth, eng_gguf_kv *kv, const char *key) {
    char what[96];
    snprintf(what, sizeof what, "key %.80s", key);
    int fs = fixed_size(t);
    if (fs < 0)
        return rs_errf(c->e, RS_EINVAL, "%s: key %s: unknown value type %u", c->path, key, t);
    if (fs > 0) return need(c, (uint64_t)fs, what) ? RS_EINVAL : (c->p += fs, 0);
    if (t == GGUF_STRING) {
        const char *s;
        size_t n;
        int rc = rd_str(c, &s, &n, what);
        if (!rc && kv) kv->n = n, kv->val = (const uint8_t *)s;
        return rc;
    }
    uint64_t et, n;
    int rc = rd(c, 4, &et, what);
    if (!rc) rc = rd(c, 8, &n, what);
    if (rc) return rc;
    if (depth >= GGUF_MAX_DEPTH)
        return rs_errf(c->e, RS_EINVAL, "%s: key %s: arrays nested too deeply", c->path, key);
    if (kv) kv->elem_type = (uint32_t)et, kv->n = n, kv->val = c->p;
    int es = fixed_size((uint32_t)et);
    if (es < 0)
        return rs_errf(c->e, RS_EINVAL, "%s: key %s: unknown array element type %u", c->path, key,
                       (unsigned)et);
    if (es > 0) {
        if (n > UINT64_MAX / (uint64_t)es || need(c, n * (uint64_t)es, what)) return RS_EINVAL;
        c->p += n * (uint64_t)es;
        return 0;
    }
    for (uint64_t i = 0; i < n; i++)
        if ((rc = skip_value(c, (uint32_t)et, depth + 1, NULL, key))) return rc;
    return 0;
}

/* ---------------------------------------------------------------- header, metadata, tensors */

static int read_kvs(eng_gguf *g, cur *c, uint64_t n) {
    /* each pair takes at least 13 bytes: bounds the allocation by the file */
    if (n > (uint64_t)(c->end - c->p) / 13)
        return rs_errf(c->e, RS_EINVAL, "%s: metadata count %llu exceeds the file (corrupt)",
                       c->path, (unsigned long long)n);
    g->kv = calloc(n ? (size_t)n : 1, sizeof *g->kv);
    if (!g->kv) return rs_errf(c->e, RS_ENOMEM, "%s: out of memory", c->path);
    for (uint64_t i = 0; i < n; i++) {
        eng_gguf_kv *kv = &g->kv[i];
        char what[48];
        snprintf(what, sizeof what, "metadata key %llu", (unsigned long long)i);
        uint64_t t;
        int rc = rd_str(c, &kv->key, &kv->key_len, what);
        if (!rc) rc = rd(c, 4, &t, what);
        if (rc) return rc;
        char key[128];
        snprintf(key, sizeof key, "%.*s", (int)(kv->key_len < 120 ? kv->key_len : 120), kv->key);
        kv->type = (uint32_t)t;
        kv->val = kv->raw = c->p;
        if ((rc = skip_value(c, kv->type, 0, kv, key))) return rc;
        g->n_kv++;
    }
    return 0;
}

static int read_alignment(eng_gguf *g, rs_err *e) {
    g->alignment = GGUF_DEFAULT_ALIGN;
    const eng_gguf_kv *kv = eng_gguf_find(g, "general.alignment");
    if (!kv) return 0;
    uint64_t a = kv->type == GGUF_U32 ? le(kv->val, 4) : 0;
    if (!a || (a & (a - 1)) || a > 1u << 20)
        return rs_errf(e, RS_EINVAL,
                       "%s: general.alignment must be a u32 power of two (at most 1 MB)",
                       g->st.files[0].path);
    g->alignment = (size_t)a;
    return 0;
}

/* One tensor info: name, dims (innermost first in the file), type, offset (checked later). */
typedef struct tinfo {
    const char *name;
    size_t name_len;
    eng_tensor t;
    uint64_t offset;
} tinfo;

static int read_tinfo(cur *c, uint64_t i, tinfo *ti) {
    char what[48];
    snprintf(what, sizeof what, "tensor info %llu", (unsigned long long)i);
    uint64_t nd, d, ty;
    int rc = rd_str(c, &ti->name, &ti->name_len, what);
    if (!rc) rc = rd(c, 4, &nd, what);
    if (rc) return rc;
    int nl = ti->name_len > 200 ? 200 : (int)ti->name_len;
    if (ti->name_len == 0 || ti->name_len > GGUF_MAX_NAME || memchr(ti->name, 0, ti->name_len))
        return rs_errf(c->e, RS_EINVAL, "%s: %s: bad tensor name", c->path, what);
    if (nd < 1 || nd > ENG_MAX_DIMS)
        return rs_errf(c->e, RS_EINVAL, "%s: tensor %.*s: %llu dimensions (1..%d)", c->path, nl,
                       ti->name, (unsigned long long)nd, ENG_MAX_DIMS);
    ti->t.ndim = (int)nd;
    uint64_t count = 1;
    for (uint64_t k = 0; k < nd; k++) {
        if ((rc = rd(c, 8, &d, what))) return rc;
        if (d > (1ull << 40) || (d && count > (1ull << 50) / d))
            return rs_errf(c->e, RS_EINVAL, "%s: tensor %.*s: dimension %llu too large", c->path,
                           nl, ti->name, (unsigned long long)d);
        count *= d;
        ti->t.shape[nd - 1 - k] = (int64_t)d; /* outermost first, as safetensors */
    }
    if ((rc = rd(c, 4, &ty, what)) || (rc = rd(c, 8, &ti->offset, what))) return rc;
    const struct gguf_ttype *tt = ttype_of((uint32_t)ty);
    if (!tt)
        return rs_errf(c->e, RS_EINVAL,
                       "%s: tensor %.*s has type %s (%llu); supported: F32, F16, BF16, Q8_0, "
                       "Q4_0, Q4_K, Q6_K",
                       c->path, nl, ti->name, ggml_type_name((uint32_t)ty), (unsigned long long)ty);
    int blck = eng_dtype_block(tt->dtype);
    if (ti->t.shape[nd - 1] % blck)
        return rs_errf(c->e, RS_EINVAL, "%s: tensor %.*s: %lld columns, not whole %s blocks of %d",
                       c->path, nl, ti->name, (long long)ti->t.shape[nd - 1],
                       ggml_type_name((uint32_t)ty), blck);
    ti->t.dtype = tt->dtype;
    ti->t.nbytes = eng_row_bytes(tt->dtype, (size_t)count);
    return 0;
}

/* Place every tensor in the data section, checking alignment, bounds and duplicate names. */
static int place_tensors(eng_gguf *g, tinfo *ti, uint64_t n, const uint8_t *data, size_t len,
                         rs_err *e) {
    const char *path = g->st.files[0].path;
    for (uint64_t i = 0; i < n; i++) {
        eng_tensor t = ti[i].t;
        int nl = (int)ti[i].name_len;
        if (ti[i].offset % g->alignment || ti[i].offset > len || t.nbytes > len - ti[i].offset)
            return rs_errf(e, RS_EINVAL,
                           "%s: tensor %.*s: %zu bytes at offset %llu lie outside the %zu-byte "
                           "data section or are misaligned (truncated file?)",
                           path, nl, ti[i].name, t.nbytes, (unsigned long long)ti[i].offset, len);
        if (!(t.name = strndup(ti[i].name, ti[i].name_len)))
            return rs_errf(e, RS_ENOMEM, "%s: out of memory", path);
        if (eng_st_find(&g->st, t.name)) {
            free(t.name);
            return rs_errf(e, RS_EINVAL, "%s: tensor %.*s appears twice", path, nl, ti[i].name);
        }
        size_t align = t.dtype == ENG_F32 ? 4 : 2;
        if (eng_st_place(&g->st, &t, data + ti[i].offset, align) || eng_st_push(&g->st, &t)) {
            free(t.name);
            return rs_errf(e, RS_ENOMEM, "%s: out of memory", path);
        }
    }
    return 0;
}

static int read_tensors(eng_gguf *g, cur *c, uint64_t n) {
    /* each info takes at least 8 + 1 + 4 + 8 + 4 + 8 bytes */
    if (n > (uint64_t)(c->end - c->p) / 33)
        return rs_errf(c->e, RS_EINVAL, "%s: tensor count %llu exceeds the file (corrupt)", c->path,
                       (unsigned long long)n);
    tinfo *ti = calloc(n ? (size_t)n : 1, sizeof *ti);
    if (!ti) return rs_errf(c->e, RS_ENOMEM, "%s: out of memory", c->path);
    int rc = 0;
    for (uint64_t i = 0; i < n && !rc; i++) rc = read_tinfo(c, i, &ti[i]);
    const uint8_t *base = g->st.files[0].map;
    size_t head = (size_t)(c->p - base), size = g->st.files[0].size;
    size_t start = (head + g->alignment - 1) / g->alignment * g->alignment;
    if (!rc && start > size && n)
        rc = rs_errf(c->e, RS_EINVAL, "%s: truncated GGUF file (no data section)", c->path);
    if (!rc) rc = place_tensors(g, ti, n, base + start, start < size ? size - start : 0, c->e);
    free(ti);
    return rc;
}

static int parse(eng_gguf *g, rs_err *e) {
    const eng_st_file *f = &g->st.files[0];
    cur c = {f->map, (const uint8_t *)f->map + f->size, f->path, e};
    uint64_t magic, ver, nt, nkv;
    int rc = rd(&c, 4, &magic, "the header");
    if (rc) return rc;
    if (magic != 0x46554747u)
        return rs_errf(e, RS_EINVAL, "%s: not a GGUF file (bad magic)", f->path);
    if ((rc = rd(&c, 4, &ver, "the header"))) return rc;
    if (ver != 2 && ver != 3)
        return rs_errf(e, RS_EINVAL,
                       "%s: GGUF version %llu is not supported (2 or 3, little-endian)", f->path,
                       (unsigned long long)ver);
    g->version = (uint32_t)ver;
    if ((rc = rd(&c, 8, &nt, "the header")) || (rc = rd(&c, 8, &nkv, "the header"))) return rc;
    if ((rc = read_kvs(g, &c, nkv)) || (rc = read_alignment(g, e))) return rc;
    return read_tensors(g, &c, nt);
}

int eng_gguf_open(eng_gguf *g, const char *path, int weights, rs_err *e) {
    *g = (eng_gguf){0};
    g->st.files = calloc(1, sizeof *g->st.files);
    if (!g->st.files) return rs_errf(e, RS_ENOMEM, "%s: out of memory", path);
    g->st.n_files = 1;
    int rc = eng_st_map(&g->st.files[0], path, weights, e);
    if (!rc) rc = parse(g, e);
    if (rc) eng_gguf_close(g);
    return rc;
}

void eng_gguf_close(eng_gguf *g) {
    eng_st_close(&g->st);
    free(g->kv);
    *g = (eng_gguf){0};
}

int eng_is_gguf(const char *path) {
    int fd = open(path, O_RDONLY);
    if (fd < 0) return 0;
    unsigned char m[4];
    int ok = read(fd, m, 4) == 4 && !memcmp(m, "GGUF", 4);
    close(fd);
    return ok;
}

/* ---------------------------------------------------------------- typed reads */

const eng_gguf_kv *eng_gguf_find(const eng_gguf *g, const char *key) {
    size_t n = strlen(key);
    for (int64_t i = 0; i < g->n_kv; i++)
        if (g->kv[i].key_len == n && !memcmp(g->kv[i].key, key, n)) return &g->kv[i];
    return NULL;
}

static int wrong_type(const eng_gguf *g, const char *key, const char *want, rs_err *e) {
    return rs_errf(e, RS_EINVAL, "%s: metadata %s is not %s", g->st.files[0].path, key, want);
}

/* An integer value of any integer type; 0 if t is not one. */
static int int_value(uint32_t t, const uint8_t *p, int64_t *v) {
    switch (t) {
    case GGUF_U8:
        *v = p[0];
        return 1;
    case GGUF_I8:
        *v = (int8_t)p[0];
        return 1;
    case GGUF_U16:
        *v = (int64_t)le(p, 2);
        return 1;
    case GGUF_I16:
        *v = (int16_t)le(p, 2);
        return 1;
    case GGUF_U32:
        *v = (int64_t)le(p, 4);
        return 1;
    case GGUF_I32:
        *v = (int32_t)le(p, 4);
        return 1;
    case GGUF_U64: {
        uint64_t u = le(p, 8);
        *v = u > INT64_MAX ? INT64_MAX : (int64_t)u;
        return 1;
    }
    case GGUF_I64:
        *v = (int64_t)le(p, 8);
        return 1;
    default:
        return 0;
    }
}

static double float_value(uint32_t t, const uint8_t *p) {
    uint64_t u = le(p, t == GGUF_F32 ? 4 : 8);
    if (t == GGUF_F32) {
        uint32_t u32 = (uint32_t)u;
        float f;
        memcpy(&f, &u32, 4);
        return f;
    }
    double d;
    memcpy(&d, &u, 8);
    return d;
}

int eng_gguf_int(const eng_gguf *g, const char *key, int *out, rs_err *e) {
    const eng_gguf_kv *kv = eng_gguf_find(g, key);
    int64_t v;
    if (!kv) return 0;
    if (!int_value(kv->type, kv->val, &v) || v < INT32_MIN || v > INT32_MAX)
        return wrong_type(g, key, "an integer in int range", e);
    *out = (int)v;
    return 0;
}

int eng_gguf_float(const eng_gguf *g, const char *key, float *out, rs_err *e) {
    const eng_gguf_kv *kv = eng_gguf_find(g, key);
    if (!kv) return 0;
    if (kv->type != GGUF_F32 && kv->type != GGUF_F64) return wrong_type(g, key, "a float", e);
    *out = (float)float_value(kv->type, kv->val);
    return 0;
}

int eng_gguf_bool(const eng_gguf *g, const char *key, int *out, rs_err *e) {
    const eng_gguf_kv *kv = eng_gguf_find(g, key);
    if (!kv) return 0;
    if (kv->type != GGUF_BOOL) return wrong_type(g, key, "a bool", e);
    *out = kv->val[0] != 0;
    return 0;
}

int eng_gguf_str(const eng_gguf *g, const char *key, char *out, size_t n, rs_err *e) {
    const eng_gguf_kv *kv = eng_gguf_find(g, key);
    if (!kv) return 0;
    if (kv->type != GGUF_STRING || kv->n >= n) return wrong_type(g, key, "a short string", e);
    memcpy(out, kv->val, (size_t)kv->n);
    out[kv->n] = 0;
    return 0;
}

int64_t eng_gguf_array_len(const eng_gguf *g, const char *key) {
    const eng_gguf_kv *kv = eng_gguf_find(g, key);
    return kv && kv->type == GGUF_ARRAY ? (int64_t)kv->n : -1;
}

/* ---------------------------------------------------------------- metadata as JSON */

/* One value at *p (already validated by eng_gguf_open) as JSON; *p moves past it. Strings with
 * a NUL byte cannot be JSON strings here: NULL, reported by the caller. */
static cJSON *value_json(uint32_t t, const uint8_t **p) {
    int64_t iv;
    int fs = fixed_size(t);
    if (t == GGUF_BOOL) return (*p)++, cJSON_CreateBool((*p)[-1] != 0);
    if (fs > 0 && int_value(t, *p, &iv)) return *p += fs, cJSON_CreateNumber((double)iv);
    if (fs > 0) {
        double d = float_value(t, *p);
        *p += fs;
        return cJSON_CreateNumber(d);
    }
    uint64_t n = le(*p, 8);
    if (t == GGUF_STRING) {
        const char *s = (const char *)*p + 8;
        *p += 8 + n;
        if (memchr(s, 0, (size_t)n)) return NULL;
        char *z = strndup(s, (size_t)n);
        cJSON *j = z ? cJSON_CreateString(z) : NULL;
        free(z);
        return j;
    }
    uint32_t et = (uint32_t)le(*p, 4);
    n = le(*p + 4, 8);
    *p += 12;
    cJSON *a = cJSON_CreateArray();
    for (uint64_t i = 0; a && i < n; i++) {
        cJSON *x = value_json(et, p);
        if (!x || !cJSON_AddItemToArray(a, x)) {
            cJSON_Delete(x);
            cJSON_Delete(a);
            a = NULL;
        }
    }
    return a;
}

int eng_gguf_meta_json(const char *path, cJSON **out, rs_err *e) {
    *out = NULL;
    eng_gguf g;
    int rc = eng_gguf_open(&g, path, 0, e);
    if (rc) return rc;
    cJSON *o = cJSON_CreateObject();
    for (int64_t i = 0; o && i < g.n_kv; i++) {
        const eng_gguf_kv *kv = &g.kv[i];
        const uint8_t *p = kv->raw;
        char *key = strndup(kv->key, kv->key_len);
        cJSON *v = key ? value_json(kv->type, &p) : NULL;
        if (!v || !cJSON_AddItemToObject(o, key, v)) {
            cJSON_Delete(v);
            rc = key ? rs_errf(e, RS_EINVAL,
                               "%s: metadata %s: a string holds a NUL byte (or out "
                               "of memory)",
                               path, key)
                     : rs_errf(e, RS_ENOMEM, "%s: out of memory", path);
        }
        free(key);
        if (rc) break;
    }
    eng_gguf_close(&g);
    if (!o) rc = rs_errf(e, RS_ENOMEM, "%s: out of memory", path);
    if (rc)
        cJSON_Delete(o);
    else
        *out = o;
    return rc;
}
