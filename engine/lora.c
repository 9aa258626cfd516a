/*
 * lora.c — LoRA adapters: PEFT's files read into F32 matrices, the registry that owns them
 * (names, reference counts, unloading that waits), and the batched gathered low-rank product
 * the forward pass adds after each targeted base product.
 *
 * The product, per targeted linear layer and per adapter present in the step (in order of its
 * first sequence): gather the adapter's rows of the layer's input, t = A x by the kernel
 * table's matmul (F32 weights, K = in, N = r), u = B t (K = r, N = out), then y += scale * u
 * element by element. The kernel's per-element arithmetic depends neither on how many rows it
 * is given nor on the column split, and each row belongs to one adapter, so every output
 * element is base + scale * u computed the same way whatever else is in the batch (S-LoRA's
 * and Punica's gathered product, without their custom kernels).
 *
 * Invariants: an adapter is immutable after load; refs counts the holders outside the registry
 * (the registry's own hold is `listed`); an unlisted adapter is freed by the unload that
 * unlisted it once refs reaches 0, never by a release.
 */
#include "engine/internal.h"
#include "engine/kernels.h"

#include <assert.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

static const char *const MODULE_NAME[ENG_LORA_N_MODULES] = {
    "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"};
static const char *const MODULE_PARENT[ENG_LORA_N_MODULES] = {
    "self_attn", "self_attn", "self_attn", "self_attn", "mlp", "mlp", "mlp"};

struct eng_lora {
    eng_lora_reg *reg;            /* the registry that owns it */
    char name[ENG_LORA_NAME_MAX]; /* as loaded */
    uint64_t id;                  /* unique per load */
    int rank;                     /* r */
    float scale;                  /* alpha / r, or alpha / sqrt(r) (rslora) */
    unsigned modules;             /* bit per eng_lora_module targeted */
    int n_layers;                 /* of the model */
    float **a;                    /* [layer * N_MODULES + mod]: [r][in] F32, NULL if untargeted */
    float **b;                    /* likewise [out][r] */
    int refs;                     /* references held outside the registry (under reg->mu) */
    atomic_int listed; /* 1 while its name is served (written under reg->mu; eng_lora_unloading
                          reads it without) */
};

struct eng_lora_reg {
    const eng_model *m;        /* adapters are shaped for this model (not owned) */
    pthread_mutex_t mu;        /* guards v, n, next_id and every adapter's refs / listed */
    pthread_cond_t cv;         /* an adapter's refs reached 0 */
    eng_lora *v[ENG_LORA_MAX]; /* loaded and being-unloaded adapters, load order */
    int n;
    uint64_t next_id;
};

/* ---------------------------------------------------------------- shapes */

/* In and out features of module mod. */
static void module_dims(const eng_config *g, eng_lora_module mod, int *in, int *out) {
    int qd = g->n_heads * g->head_dim, kvd = g->n_kv_heads * g->head_dim;
    static const int IN[ENG_LORA_N_MODULES] = {0, 0, 0, 1, 0, 0, 2}; /* hidden, qd, inter */
    int dims[3] = {g->hidden, qd, g->intermediate};
    int outs[ENG_LORA_N_MODULES] = {qd,       kvd, kvd, g->hidden, g->intermediate, g->intermediate,
                                    g->hidden};
    *in = dims[IN[mod]];
    *out = outs[mod];
}

/* ---------------------------------------------------------------- adapter_config.json */

static int bad_key(rs_err *e, const char *path, const char *key, const char *why) {
    return rs_errf(e, RS_EINVAL, "%s: %s: %s", path, key, why);
}

/* Keys PEFT writes whose non-default values change the math: refused, not ignored. */
static int check_unsupported(const cJSON *j, const char *path, rs_err *e) {
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(j, "peft_type");
    if (it && !(cJSON_IsString(it) && !strcmp(it->valuestring, "LORA")))
        return bad_key(e, path, "peft_type", "only LORA adapters are served");
    it = cJSON_GetObjectItemCaseSensitive(j, "bias");
    if (it && !cJSON_IsNull(it) && !(cJSON_IsString(it) && !strcmp(it->valuestring, "none")))
        return bad_key(e, path, "bias", "only \"none\" is served (no bias terms)");
    static const char *const FLAGS[] = {"use_dora", "fan_in_fan_out", "lora_bias"};
    for (size_t i = 0; i < sizeof FLAGS / sizeof *FLAGS; i++)
        if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(j, FLAGS[i])))
            return bad_key(e, path, FLAGS[i], "true is not served");
    static const char *const NULLS[] = {"layers_to_transform", "modules_to_save",
                                        "layer_replication", "rank_pattern", "alpha_pattern"};
    for (size_t i = 0; i < sizeof NULLS / sizeof *NULLS; i++) {
        it = cJSON_GetObjectItemCaseSensitive(j, NULLS[i]);
        if (it && !cJSON_IsNull(it) && !((cJSON_IsObject(it) || cJSON_IsArray(it)) && !it->child))
            return bad_key(e, path, NULLS[i], "not served (must be null or empty)");
    }
    return 0;
}

static int parse_modules(const cJSON *j, const char *path, unsigned *mods, rs_err *e) {
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(j, "target_modules");
    if (cJSON_IsString(t))
        return bad_key(e, path, "target_modules",
                       "a pattern string is not served; list the modules (q_proj, k_proj, "
                       "v_proj, o_proj, gate_proj, up_proj, down_proj)");
    if (!cJSON_IsArray(t) || !t->child)
        return bad_key(e, path, "target_modules", "missing or not a non-empty list");
    *mods = 0;
    for (const cJSON *s = t->child; s; s = s->next) {
        int found = -1;
        for (int m = 0; cJSON_IsString(s) && m < ENG_LORA_N_MODULES; m++)
            if (!strcmp(s->valuestring, MODULE_NAME[m])) found = m;
        if (found < 0)
            return rs_errf(e, RS_EINVAL,
                           "%s: target_modules: %s is not a module this server adapts (q_proj, "
                           "k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj)",
                           path,
                           cJSON_IsString(s) ? RS_CLIP(s->valuestring, 64) : "(not a string)");
        *mods |= 1u << found;
    }
    return 0;
}

/* r, alpha, rslora and the targets into a; the scale follows from them. */
static int read_config(eng_lora *a, const char *dir, rs_err *e) {
    char path[4096];
    int rc = rs_path_join(path, sizeof path, dir, "adapter_config.json", e);
    char *text = NULL;
    size_t len;
    if (!rc) rc = rs_read_file(path, &text, &len, e);
    if (rc) return rc;
    cJSON *j = cJSON_ParseWithLength(text, len);
    free(text);
    if (!cJSON_IsObject(j)) rc = rs_errf(e, RS_EINVAL, "%s: not a JSON object", path);
    if (!rc) rc = check_unsupported(j, path, e);
    if (!rc) rc = parse_modules(j, path, &a->modules, e);
    const cJSON *r = cJSON_GetObjectItemCaseSensitive(j, "r");
    const cJSON *al = cJSON_GetObjectItemCaseSensitive(j, "lora_alpha");
    if (!rc && (!cJSON_IsNumber(r) || r->valuedouble != (double)(int)r->valuedouble ||
                r->valueint < 1 || r->valueint > ENG_LORA_MAX_RANK))
        rc = rs_errf(e, RS_EINVAL, "%s: r must be an integer in 1..%d", path, ENG_LORA_MAX_RANK);
    if (!rc && al && (!cJSON_IsNumber(al) || !isfinite(al->valuedouble)))
        rc = bad_key(e, path, "lora_alpha", "must be a number");
    if (!rc) {
        double alpha = al ? al->valuedouble : 8.0; /* PEFT's default */
        int rs = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(j, "use_rslora"));
        a->rank = r->valueint;
        a->scale = (float)(rs ? alpha / sqrt((double)a->rank) : alpha / a->rank);
    }
    cJSON_Delete(j);
    return rc;
}

/* ---------------------------------------------------------------- adapter_model.safetensors */

/* "base_model.model.model.layers.{i}.{parent}.{module}.lora_{A|B}.weight" -> layer, module,
 * which (0 = A, 1 = B); -1 when the name is not of that form. */
static int parse_name(const char *name, int n_layers, int *layer, int *mod, int *which) {
    static const char PRE[] = "base_model.model.model.layers.";
    if (strncmp(name, PRE, sizeof PRE - 1)) return -1;
    const char *p = name + sizeof PRE - 1;
    long l = 0;
    if (*p < '0' || *p > '9') return -1;
    for (; *p >= '0' && *p <= '9' && l < 1000000; p++) l = l * 10 + (*p - '0');
    if (*p++ != '.' || l >= n_layers) return -1;
    for (int m = 0; m < ENG_LORA_N_MODULES; m++) {
        char want[96];
        snprintf(want, sizeof want, "%s.%s.lora_", MODULE_PARENT[m], MODULE_NAME[m]);
        size_t n = strlen(want);
        if (strncmp(p, want, n)) continue;
        if (strcmp(p + n + 1, ".weight") || (p[n] != 'A' && p[n] != 'B')) return -1;
        *layer = (int)l, *mod = m, *which = p[n] == 'B';
        return 0;
    }
    return -1;
}

/* Tensor t (A or B of module mod) widened to an owned F32 copy, after its dtype and shape. */
static int take_tensor(eng_lora *a, const eng_config *g, const eng_tensor *t, const char *path,
                       int layer, int mod, int which, rs_err *e) {
    int in, out;
    module_dims(g, (eng_lora_module)mod, &in, &out);
    int64_t rows = which ? out : a->rank, cols = which ? a->rank : in;
    if (!(a->modules & (1u << mod)))
        return rs_errf(e, RS_EINVAL, "%s: tensor %s: %s is not in target_modules", path, t->name,
                       MODULE_NAME[mod]);
    if (t->dtype != ENG_F32 && t->dtype != ENG_BF16 && t->dtype != ENG_F16)
        return rs_errf(e, RS_EINVAL, "%s: tensor %s: dtype not served (F32, BF16, F16)", path,
                       t->name);
    if (t->ndim != 2 || t->shape[0] != rows || t->shape[1] != cols)
        return rs_errf(e, RS_EINVAL, "%s: tensor %s: shape must be [%lld, %lld] (r = %d)", path,
                       t->name, (long long)rows, (long long)cols, a->rank);
    float **slot = (which ? a->b : a->a) + (size_t)layer * ENG_LORA_N_MODULES + mod;
    if (*slot) return rs_errf(e, RS_EINVAL, "%s: tensor %s appears twice", path, t->name);
    size_t n = (size_t)rows * (size_t)cols;
    if (!(*slot = malloc(n * sizeof(float))))
        return rs_errf(e, RS_ENOMEM, "%s: out of memory", path);
    for (size_t i = 0; i < n; i++) (*slot)[i] = eng_load_elem(t->data, (eng_dtype)t->dtype, i);
    return 0;
}

/* Every tensor of the file taken, then every targeted (layer, module) has both. */
static int read_tensors(eng_lora *a, const eng_config *g, const eng_st_set *st, const char *path,
                        rs_err *e) {
    for (int i = 0; i < st->n_tensors; i++) {
        const eng_tensor *t = &st->tensors[i];
        int layer, mod, which;
        if (parse_name(t->name, g->n_layers, &layer, &mod, &which))
            return rs_errf(e, RS_EINVAL,
                           "%s: tensor %s is not a LoRA A/B weight of a layer this model has "
                           "(base_model.model.model.layers.N.self_attn|mlp.MODULE.lora_A|B.weight)",
                           path, RS_CLIP(t->name, 160));
        int rc = take_tensor(a, g, t, path, layer, mod, which, e);
        if (rc) return rc;
    }
    for (int l = 0; l < g->n_layers; l++)
        for (int m = 0; m < ENG_LORA_N_MODULES; m++) {
            size_t k = (size_t)l * ENG_LORA_N_MODULES + (size_t)m;
            if ((a->modules & (1u << m)) && (!a->a[k] || !a->b[k]))
                return rs_errf(e, RS_EINVAL,
                               "%s: tensor base_model.model.model.layers.%d.%s.%s.lora_%c.weight "
                               "is missing",
                               path, l, MODULE_PARENT[m], MODULE_NAME[m], a->a[k] ? 'B' : 'A');
        }
    return 0;
}

static void lora_free(eng_lora *a) {
    if (!a) return;
    for (int i = 0; a->a && i < a->n_layers * ENG_LORA_N_MODULES; i++) free(a->a[i]);
    for (int i = 0; a->b && i < a->n_layers * ENG_LORA_N_MODULES; i++) free(a->b[i]);
    free(a->a);
    free(a->b);
    free(a);
}

/* The adapter in dir, shaped for g; not yet in any registry. */
static int lora_read(eng_lora **out, const eng_config *g, const char *dir, rs_err *e) {
    *out = NULL;
    eng_lora *a = calloc(1, sizeof *a);
    size_t n = (size_t)g->n_layers * ENG_LORA_N_MODULES;
    if (a) {
        a->n_layers = g->n_layers;
        a->a = calloc(n, sizeof *a->a);
        a->b = calloc(n, sizeof *a->b);
    }
    if (!a || !a->a || !a->b) {
        lora_free(a);
        return rs_errf(e, RS_ENOMEM, "out of memory for an adapter");
    }
    char path[4096];
    int rc = read_config(a, dir, e);
    if (!rc) rc = rs_path_join(path, sizeof path, dir, "adapter_model.safetensors", e);
    eng_st_set st = {0};
    if (!rc) rc = eng_st_open_file(&st, path, e);
    if (!rc) {
        rc = read_tensors(a, g, &st, path, e);
        eng_st_close(&st);
    }
    if (rc) {
        lora_free(a);
        return rc;
    }
    *out = a;
    return 0;
}

/* ---------------------------------------------------------------- the registry */

int eng_lora_reg_init(eng_lora_reg **out, const eng_model *m, rs_err *e) {
    *out = NULL;
    eng_lora_reg *r = calloc(1, sizeof *r);
    if (!r) return rs_errf(e, RS_ENOMEM, "out of memory");
    r->m = m;
    r->next_id = 1;
    pthread_mutex_init(&r->mu, NULL);
    pthread_cond_init(&r->cv, NULL);
    *out = r;
    return 0;
}

void eng_lora_reg_free(eng_lora_reg *r) {
    if (!r) return;
    for (int i = 0; i < r->n; i++) {
        assert(r->v[i]->refs == 0);
        lora_free(r->v[i]);
    }
    pthread_cond_destroy(&r->cv);
    pthread_mutex_destroy(&r->mu);
    free(r);
}

static int name_ok(const char *s) {
    size_t n = s ? strlen(s) : 0;
    if (n == 0 || n >= ENG_LORA_NAME_MAX) return 0;
    for (const char *p = s; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
              strchr("._:/+-", *p)))
            return 0;
    return 1;
}

/* Index of the adapter named `name` (listed or not) in r->v, -1 if none. Under r->mu. */
static int find_locked(const eng_lora_reg *r, const char *name) {
    for (int i = 0; i < r->n; i++)
        if (!strcmp(r->v[i]->name, name)) return i;
    return -1;
}

int eng_lora_load(eng_lora_reg *r, const char *name, const char *dir, rs_err *e) {
    if (!name_ok(name))
        return rs_errf(e, RS_EINVAL,
                       "adapter name must be 1..%d characters of letters, digits and ._:/+-",
                       ENG_LORA_NAME_MAX - 1);
    if (!dir || !*dir) return rs_errf(e, RS_EINVAL, "adapter %s: no directory given", name);
    eng_lora *a;
    int rc = lora_read(&a, &r->m->cfg, dir, e); /* outside the lock: it reads files */
    if (rc) return rc;
    a->reg = r;
    snprintf(a->name, sizeof a->name, "%s", name);
    pthread_mutex_lock(&r->mu);
    if (find_locked(r, name) >= 0)
        rc = rs_errf(e, RS_EINVAL, "an adapter named %s is already loaded", name);
    else if (r->n >= ENG_LORA_MAX)
        rc = rs_errf(e, RS_EFULL, "%d adapters are loaded already (the limit)", ENG_LORA_MAX);
    if (!rc) {
        a->id = r->next_id++;
        atomic_store(&a->listed, 1);
        r->v[r->n++] = a;
    }
    pthread_mutex_unlock(&r->mu);
    if (rc) lora_free(a);
    return rc;
}

int eng_lora_unload(eng_lora_reg *r, const char *name, rs_err *e) {
    pthread_mutex_lock(&r->mu);
    int i = name ? find_locked(r, name) : -1;
    eng_lora *a = i >= 0 ? r->v[i] : NULL;
    if (!a || !atomic_load(&a->listed)) {
        pthread_mutex_unlock(&r->mu);
        return rs_errf(e, RS_ENOTFOUND, "no adapter named %s is loaded",
                       name ? RS_CLIP(name, 160) : "(none)");
    }
    atomic_store(&a->listed, 0); /* from here acquire and retain refuse it */
    while (a->refs > 0) pthread_cond_wait(&r->cv, &r->mu);
    i = find_locked(r, name); /* others may have moved while we waited */
    memmove(&r->v[i], &r->v[i + 1], (size_t)(r->n - i - 1) * sizeof r->v[0]);
    r->n--;
    pthread_mutex_unlock(&r->mu);
    lora_free(a);
    return 0;
}

int eng_lora_acquire(eng_lora_reg *r, const char *name, const eng_lora **out, rs_err *e) {
    *out = NULL;
    pthread_mutex_lock(&r->mu);
    int i = name ? find_locked(r, name) : -1;
    if (i >= 0 && atomic_load(&r->v[i]->listed)) {
        r->v[i]->refs++;
        *out = r->v[i];
    }
    pthread_mutex_unlock(&r->mu);
    return *out ? 0
                : rs_errf(e, RS_ENOTFOUND, "no adapter named %s is loaded",
                          name ? RS_CLIP(name, 160) : "(none)");
}

int eng_lora_retain(const eng_lora *ca) {
    eng_lora *a = (eng_lora *)ca; /* the reference count is the one mutable field */
    pthread_mutex_lock(&a->reg->mu);
    int ok = atomic_load(&a->listed);
    if (ok) a->refs++;
    pthread_mutex_unlock(&a->reg->mu);
    return ok ? 0 : RS_ENOTFOUND;
}

void eng_lora_release(const eng_lora *ca) {
    if (!ca) return;
    eng_lora *a = (eng_lora *)ca;
    eng_lora_reg *r = a->reg;
    pthread_mutex_lock(&r->mu);
    assert(a->refs > 0);
    if (--a->refs == 0 && !atomic_load(&a->listed)) pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
}

int eng_lora_names(eng_lora_reg *r, char (*names)[ENG_LORA_NAME_MAX], int max) {
    int k = 0;
    pthread_mutex_lock(&r->mu);
    for (int i = 0; i < r->n && k < max; i++)
        if (atomic_load(&r->v[i]->listed)) memcpy(names[k++], r->v[i]->name, ENG_LORA_NAME_MAX);
    pthread_mutex_unlock(&r->mu);
    return k;
}

int eng_lora_unloading(const eng_lora *a) {
    return !atomic_load(&((eng_lora *)a)->listed);
}

const char *eng_lora_name(const eng_lora *a) {
    return a->name;
}

uint64_t eng_lora_id(const eng_lora *a) {
    return a->id;
}

int eng_lora_rank(const eng_lora *a) {
    return a->rank;
}

/* ---------------------------------------------------------------- the batched product */

int eng_lora_prepare(eng_lora_scratch *s, const eng_model *m, const eng_seq *seqs, int n_seqs,
                     int T, rs_err *e) {
    int rank = 0;
    for (int i = 0; i < n_seqs; i++) {
        const eng_lora *a = seqs[i].lora;
        if (!a) continue;
        if (a->reg->m != m)
            return rs_errf(e, RS_EINVAL,
                           "forward: sequence %d: adapter %s belongs to another model", i, a->name);
        if (a->rank > rank) rank = a->rank;
    }
    s->any = rank > 0;
    if (!s->any) return 0;
    const eng_config *g = &m->cfg;
    size_t wide = (size_t)g->hidden;
    if ((size_t)g->intermediate > wide) wide = (size_t)g->intermediate;
    if ((size_t)g->n_heads * (size_t)g->head_dim > wide) wide = (size_t)g->n_heads * g->head_dim;
    size_t nx = (size_t)T * wide, nt = (size_t)T * (size_t)rank;
    if (nx > s->n_x) {
        float *gx = realloc(s->gx, nx * sizeof(float));
        if (gx) s->gx = gx;
        float *u = realloc(s->u, nx * sizeof(float));
        if (u) s->u = u;
        if (!gx || !u) return rs_errf(e, RS_ENOMEM, "out of memory for LoRA scratch");
        s->n_x = nx;
    }
    if (nt > s->n_t) {
        float *t = realloc(s->t, nt * sizeof(float));
        if (!t) return rs_errf(e, RS_ENOMEM, "out of memory for LoRA scratch");
        s->t = t, s->n_t = nt;
    }
    if (T > s->n_rows) {
        int *rows = realloc(s->rows, (size_t)T * sizeof(int));
        if (!rows) return rs_errf(e, RS_ENOMEM, "out of memory for LoRA scratch");
        s->rows = rows, s->n_rows = T;
    }
    return 0;
}

/* One product y[M][N] = x[M][K] W^T (W F32 [N][K]) split over output columns. */
typedef struct lora_mm {
    const eng_kernels *k;
    float *y;
    const float *x, *w;
    int M, K, N;
} lora_mm;

static void lora_mm_piece(void *arg, int n0, int n1) {
    const lora_mm *j = arg;
    j->k->matmul(j->y, j->N, j->x, j->M, j->w, ENG_F32, j->K, n0, n1);
}

/* Below this many multiply-adds a product stays on the calling thread: a decode step's
 * low-rank products are tens of thousands of them, less than a pool hand-off costs (and a step
 * has 14 per layer). Who computes a column never changes its arithmetic. */
enum { LORA_PARALLEL_MIN = 1 << 19 };

static void lora_matmul(const eng_kernels *k, eng_pool *p, float *y, const float *x, int M,
                        const float *w, int K, int N) {
    lora_mm j = {k, y, x, w, M, K, N};
    if ((size_t)M * (size_t)K * (size_t)N < LORA_PARALLEL_MIN)
        lora_mm_piece(&j, 0, N);
    else
        eng_pool_run(p, N, lora_mm_piece, &j);
}

/* Batch rows of the sequences using adapter a, in batch order, into s->rows; their count. */
static int gather_rows(eng_lora_scratch *s, const eng_seq *seqs, int n_seqs, const eng_lora *a) {
    int M = 0;
    for (int i = 0, r = 0; i < n_seqs; r += seqs[i++].n_tokens)
        if (seqs[i].lora == a)
            for (int t = 0; t < seqs[i].n_tokens; t++) s->rows[M++] = r + t;
    return M;
}

/* 1 if an earlier sequence than `i` already used seqs[i].lora (it was applied then). */
static int seen_before(const eng_seq *seqs, int i) {
    for (int j = 0; j < i; j++)
        if (seqs[j].lora == seqs[i].lora) return 1;
    return 0;
}

void eng_lora_apply(eng_lora_scratch *s, const eng_kernels *k, eng_pool *p, const eng_seq *seqs,
                    int n_seqs, int layer, eng_lora_module mod, const float *x, int K, float *y,
                    int N) {
    if (!s->any) return;
    for (int i = 0; i < n_seqs; i++) {
        const eng_lora *a = seqs[i].lora;
        if (!a || !(a->modules & (1u << mod)) || seen_before(seqs, i)) continue;
        size_t w = (size_t)layer * ENG_LORA_N_MODULES + (size_t)mod;
        int M = gather_rows(s, seqs, n_seqs, a), r = a->rank;
        for (int m = 0; m < M; m++)
            memcpy(s->gx + (size_t)m * K, x + (size_t)s->rows[m] * K, (size_t)K * sizeof(float));
        lora_matmul(k, p, s->t, s->gx, M, a->a[w], K, r);
        lora_matmul(k, p, s->u, s->t, M, a->b[w], r, N);
        for (int m = 0; m < M; m++) {
            float *yr = y + (size_t)s->rows[m] * N;
            const float *ur = s->u + (size_t)m * N;
            for (int n = 0; n < N; n++) yr[n] += a->scale * ur[n];
        }
    }
}

void eng_lora_scratch_free(eng_lora_scratch *s) {
    free(s->gx);
    free(s->t);
    free(s->u);
    free(s->rows);
    *s = (eng_lora_scratch){0};
}
