/*
 * safetensors.c — memory-mapped safetensors files: one model.safetensors or an index
 * (model.safetensors.index.json) and its shards. Every offset is checked against the file size
 * and every size against dtype x shape at open, so later code can read any tensor blindly.
 */
#include "engine/internal.h"

#include <cjson/cJSON.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

/* A header larger than this is not a real safetensors header (real ones are well under 1 MB). */
#define ST_MAX_HEADER ((uint64_t)256 << 20)

static int dtype_of(const char *s) {
    if (!strcmp(s, "F32")) return ENG_F32;
    if (!strcmp(s, "BF16")) return ENG_BF16;
    if (!strcmp(s, "F16")) return ENG_F16;
    return -1;
}

/* Bytes per element of any safetensors dtype, 0 if unknown. */
static size_t st_elem_size(const char *s) {
    static const struct {
        const char *name;
        size_t size;
    } t[] = {{"F64", 8}, {"F32", 4}, {"F16", 2}, {"BF16", 2},    {"I64", 8},
             {"I32", 4}, {"I16", 2}, {"I8", 1},  {"U8", 1},      {"BOOL", 1},
             {"U16", 2}, {"U32", 4}, {"U64", 8}, {"F8_E4M3", 1}, {"F8_E5M2", 1}};
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++)
        if (!strcmp(s, t[i].name)) return t[i].size;
    return 0;
}

/*
 * Decode streams every weight once per step; from 4 KB page-cache pages that is a TLB miss per
 * 4 KB (about 300,000 per token for Qwen3-0.6B). A file of at least HUGE_MIN bytes is read into
 * anonymous memory advised to 2 MB pages instead (where the kernel has transparent huge pages),
 * at the cost of a copy at load and of not sharing the page cache between processes. NULL when
 * that fails: the caller maps the file.
 */
enum { HUGE_MIN = 64 << 20 };
static void *read_huge(int fd, size_t size) {
    void *m = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED) return NULL;
    madvise(m, size, MADV_HUGEPAGE);
    for (size_t got = 0; got < size;) {
        ssize_t n = pread(fd, (char *)m + got, size - got, (off_t)got);
        if (n <= 0) {
            munmap(m, size);
            return NULL;
        }
        got += (size_t)n;
    }
    mprotect(m, size, PROT_READ);
    return m;
}

int eng_st_map(eng_st_file *f, const char *path, int weights, rs_err *e) {
    *f = (eng_st_file){0};
    f->path = strdup(path);
    if (!f->path) return rs_errf(e, RS_ENOMEM, "%s: out of memory", path);
    int fd = open(path, O_RDONLY);
    if (fd < 0) return rs_errf(e, RS_EIO, "%s: cannot open", path);
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return rs_errf(e, RS_EIO, "%s: not a readable file", path);
    }
    f->size = (size_t)st.st_size;
    if (f->size < 8) {
        close(fd);
        return rs_errf(e, RS_EINVAL, "%s: truncated (%zu bytes, no header)", path, f->size);
    }
    f->map = weights && f->size >= HUGE_MIN ? read_huge(fd, f->size) : NULL;
    if (!f->map) f->map = mmap(NULL, f->size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (f->map == MAP_FAILED) {
        f->map = NULL;
        return rs_errf(e, RS_EIO, "%s: cannot map %zu bytes", path, f->size);
    }
    return 0;
}

int eng_st_push(eng_st_set *s, const eng_tensor *t) {
    eng_tensor *n = realloc(s->tensors, (size_t)(s->n_tensors + 1) * sizeof *n);
    if (!n) return RS_ENOMEM;
    s->tensors = n;
    s->tensors[s->n_tensors++] = *t;
    return 0;
}

int eng_st_place(eng_st_set *s, eng_tensor *t, const uint8_t *p, size_t esize) {
    if (esize == 0 || (uintptr_t)p % esize == 0) {
        t->data = p;
        return 0;
    }
    void **c = realloc(s->copies, (size_t)(s->n_copies + 1) * sizeof *c);
    if (!c) return RS_ENOMEM;
    s->copies = c;
    void *buf = malloc(t->nbytes ? t->nbytes : 1);
    if (!buf) return RS_ENOMEM;
    memcpy(buf, p, t->nbytes);
    s->copies[s->n_copies++] = buf;
    t->data = buf;
    return 0;
}

/* Validate one header entry and fill t (name left to the caller). */
static int parse_entry(eng_st_set *s, const cJSON *j, const eng_st_file *f, const uint8_t *base,
                       size_t data_len, eng_tensor *t, rs_err *e) {
    const char *name = j->string;
    const cJSON *dt = cJSON_GetObjectItemCaseSensitive(j, "dtype");
    const cJSON *sh = cJSON_GetObjectItemCaseSensitive(j, "shape");
    const cJSON *off = cJSON_GetObjectItemCaseSensitive(j, "data_offsets");
    if (!cJSON_IsString(dt) || !cJSON_IsArray(sh) || !cJSON_IsArray(off) ||
        cJSON_GetArraySize(off) != 2)
        return rs_errf(e, RS_EINVAL, "%s: tensor %s: header entry lacks dtype/shape/data_offsets",
                       f->path, name);
    size_t esize = st_elem_size(dt->valuestring);
    if (esize == 0)
        return rs_errf(e, RS_EINVAL, "%s: tensor %s: unknown dtype %s", f->path, name,
                       dt->valuestring);
    t->dtype = dtype_of(dt->valuestring);
    t->ndim = cJSON_GetArraySize(sh);
    if (t->ndim > ENG_MAX_DIMS)
        return rs_errf(e, RS_EINVAL, "%s: tensor %s: %d dimensions (at most %d)", f->path, name,
                       t->ndim, ENG_MAX_DIMS);
    double count = 1;
    for (int i = 0; i < t->ndim; i++) {
        const cJSON *d = cJSON_GetArrayItem(sh, i);
        if (!cJSON_IsNumber(d) || d->valuedouble < 0 || d->valuedouble > 9e15 ||
            d->valuedouble != (double)(int64_t)d->valuedouble)
            return rs_errf(e, RS_EINVAL, "%s: tensor %s: bad shape", f->path, name);
        t->shape[i] = (int64_t)d->valuedouble;
        count *= d->valuedouble;
    }
    double b = cJSON_GetArrayItem(off, 0)->valuedouble,
           en = cJSON_GetArrayItem(off, 1)->valuedouble;
    if (!cJSON_IsNumber(cJSON_GetArrayItem(off, 0)) ||
        !cJSON_IsNumber(cJSON_GetArrayItem(off, 1)) || b < 0 || en < b || en > (double)data_len ||
        b != (double)(size_t)b || en != (double)(size_t)en)
        return rs_errf(e, RS_EINVAL,
                       "%s: tensor %s: data_offsets [%.0f, %.0f] outside the %zu data bytes "
                       "(truncated file?)",
                       f->path, name, b, en, data_len);
    t->nbytes = (size_t)en - (size_t)b;
    if ((double)t->nbytes != count * (double)esize)
        return rs_errf(e, RS_EINVAL, "%s: tensor %s: %zu bytes for %.0f elements of %s", f->path,
                       name, t->nbytes, count, dt->valuestring);
    if (eng_st_place(s, t, base + (size_t)b, esize))
        return rs_errf(e, RS_ENOMEM, "%s: tensor %s: out of memory", f->path, name);
    return 0;
}

/* Parse the header of file index fi and append its tensors. */
static int parse_header(eng_st_set *s, int fi, rs_err *e) {
    const eng_st_file *f = &s->files[fi];
    const uint8_t *p = f->map;
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = hlen << 8 | p[i];
    if (hlen > ST_MAX_HEADER || hlen > f->size - 8)
        return rs_errf(e, RS_EINVAL,
                       "%s: header length %llu exceeds the %zu-byte file (truncated "
                       "or not safetensors)",
                       f->path, (unsigned long long)hlen, f->size);
    cJSON *h = cJSON_ParseWithLength((const char *)p + 8, (size_t)hlen);
    if (!cJSON_IsObject(h)) {
        cJSON_Delete(h);
        return rs_errf(e, RS_EINVAL, "%s: header is not a JSON object (corrupt file)", f->path);
    }
    const uint8_t *base = p + 8 + hlen;
    size_t data_len = f->size - 8 - (size_t)hlen;
    int rc = 0;
    for (const cJSON *j = h->child; j && !rc; j = j->next) {
        if (!strcmp(j->string, "__metadata__")) continue;
        eng_tensor t = {0};
        t.file = fi;
        rc = parse_entry(s, j, f, base, data_len, &t, e);
        if (!rc && !(t.name = strdup(j->string))) rc = rs_errf(e, RS_ENOMEM, "out of memory");
        if (!rc && eng_st_push(s, &t)) {
            free(t.name);
            rc = rs_errf(e, RS_ENOMEM, "out of memory");
        }
    }
    cJSON_Delete(h);
    return rc;
}

static int add_file(eng_st_set *s, const char *path, rs_err *e) {
    for (int i = 0; i < s->n_files; i++)
        if (!strcmp(s->files[i].path, path)) return 0;
    eng_st_file *n = realloc(s->files, (size_t)(s->n_files + 1) * sizeof *n);
    if (!n) return rs_errf(e, RS_ENOMEM, "out of memory");
    s->files = n;
    int rc = eng_st_map(&s->files[s->n_files], path, 1, e);
    s->n_files++; /* counted even on failure so eng_st_close releases what was taken */
    if (rc) return rc;
    return parse_header(s, s->n_files - 1, e);
}

/* The shards an index names, each opened once. */
static int open_index(eng_st_set *s, const char *dir, const char *ipath, rs_err *e) {
    char *text;
    size_t len;
    int rc = rs_read_file(ipath, &text, &len, e);
    if (rc) return rc;
    cJSON *j = cJSON_ParseWithLength(text, len);
    free(text);
    const cJSON *wm = cJSON_GetObjectItemCaseSensitive(j, "weight_map");
    if (!cJSON_IsObject(wm)) {
        cJSON_Delete(j);
        return rs_errf(e, RS_EINVAL, "%s: not JSON with a weight_map object", ipath);
    }
    for (const cJSON *w = wm->child; w && !rc; w = w->next) {
        char path[4096];
        if (!cJSON_IsString(w) || strchr(w->valuestring, '/'))
            rc = rs_errf(e, RS_EINVAL, "%s: tensor %s: bad shard file name", ipath, w->string);
        else if (!(rc = rs_path_join(path, sizeof path, dir, w->valuestring, e)))
            rc = add_file(s, path, e);
    }
    for (const cJSON *w = wm->child; w && !rc; w = w->next)
        if (!eng_st_find(s, w->string))
            rc = rs_errf(e, RS_EINVAL, "%s: tensor %s is not in its shard %s", ipath, w->string,
                         w->valuestring);
    cJSON_Delete(j);
    return rc;
}

int eng_st_open(eng_st_set *s, const char *dir, rs_err *e) {
    *s = (eng_st_set){0};
    char path[4096];
    int rc = rs_path_join(path, sizeof path, dir, "model.safetensors.index.json", e);
    if (rc) return rc;
    if (access(path, F_OK) == 0) {
        rc = open_index(s, dir, path, e);
    } else {
        rc = rs_path_join(path, sizeof path, dir, "model.safetensors", e);
        if (!rc) rc = add_file(s, path, e);
    }
    if (rc) eng_st_close(s);
    return rc;
}

int eng_st_open_file(eng_st_set *s, const char *path, rs_err *e) {
    *s = (eng_st_set){0};
    int rc = add_file(s, path, e);
    if (rc) eng_st_close(s);
    return rc;
}

void eng_st_close(eng_st_set *s) {
    for (int i = 0; i < s->n_files; i++) {
        if (s->files[i].map) munmap(s->files[i].map, s->files[i].size);
        free(s->files[i].path);
    }
    for (int i = 0; i < s->n_tensors; i++) free(s->tensors[i].name);
    for (int i = 0; i < s->n_copies; i++) free(s->copies[i]);
    free(s->files);
    free(s->tensors);
    free(s->copies);
    *s = (eng_st_set){0};
}

const eng_tensor *eng_st_find(const eng_st_set *s, const char *name) {
    for (int i = 0; i < s->n_tensors; i++)
        if (!strcmp(s->tensors[i].name, name)) return &s->tensors[i];
    return NULL;
}
