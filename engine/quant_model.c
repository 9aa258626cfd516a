/*
 * quant_model.c — eng_model_quantize: a loaded safetensors model's matrices into one of
 * llama.cpp's quantization mixes, at load.
 *
 * Per-tensor types (the rules of llama.cpp's llama-quant.cpp for these mixes, no imatrix):
 *   q8_0:   every matrix Q8_0 (the LM head too).
 *   q4_k_m: Q4_K; Q6_K for the LM head (the embedding when tied, as llama.cpp treats a tied
 *           token_embd as the output), and for attn_v and ffn_down of the layers where
 *           use_more_bits(i, n) = i < n/8 || i >= 7n/8 || (i - n/8) % 3 == 2.
 *   q4_0:   Q4_0; Q6_K for the LM head (tied embedding included).
 * A matrix whose row length is not a multiple of its type's block falls back to Q8_0 (llama.cpp
 * picks Q5_0 for Q4_K and Q8_0 for Q6_K; the engine has no Q5_0, and Q8_0 loses less), and keeps
 * its stored type when not a multiple of 32 either (llama.cpp: F16). Norms and biases are F32
 * copies already (model.c) and stay so.
 */
#include "engine/internal.h"

#include <stdlib.h>
#include <sys/mman.h>

int eng_weights_parse(const char *name) {
    static const char *const names[] = {"source", "q8_0", "q4_k_m", "q4_0"};
    for (int i = 0; i < (int)(sizeof names / sizeof names[0]); i++)
        if (!strcmp(name, names[i])) return i;
    return -1;
}

const char *eng_weights_name(eng_weights w) {
    switch (w) {
    case ENG_WEIGHTS_Q8_0:
        return "q8_0";
    case ENG_WEIGHTS_Q4_K_M:
        return "q4_k_m";
    case ENG_WEIGHTS_Q4_0:
        return "q4_0";
    default:
        return "source";
    }
}

const char *eng_model_quantization(const eng_model *m) {
    if (m->cfg.weights != ENG_WEIGHTS_SOURCE) return eng_weights_name(m->cfg.weights);
    return m->cfg.file_type ? m->cfg.file_type : eng_dtype_name(m->cfg.dtype);
}

/* ---------------------------------------------------------------- which matrix, which type */

typedef enum mat_role { ROLE_OUTPUT, ROLE_ATTN_V, ROLE_FFN_DOWN, ROLE_OTHER } mat_role;

typedef struct mat_ref {
    eng_mat *slot;      /* where the model keeps it */
    int64_t rows, cols; /* shape */
    mat_role role;
    int layer; /* its layer, -1 for the embedding / LM head */
} mat_ref;

/* Every matrix once (a tied LM head is the embedding); returns how many (<= 2 + 7 layers). */
static int list_mats(eng_model *m, mat_ref *out) {
    const eng_config *c = &m->cfg;
    int64_t h = c->hidden, qd = (int64_t)c->n_heads * c->head_dim, f = c->intermediate;
    int64_t kvd = (int64_t)c->n_kv_heads * c->head_dim;
    int n = 0;
    out[n++] =
        (mat_ref){&m->embed, c->vocab_size, h, c->tie_embeddings ? ROLE_OUTPUT : ROLE_OTHER, -1};
    if (!c->tie_embeddings) out[n++] = (mat_ref){&m->lm_head, c->vocab_size, h, ROLE_OUTPUT, -1};
    for (int l = 0; l < c->n_layers; l++) {
        eng_layer *L = &m->layers[l];
        out[n++] = (mat_ref){&L->q, qd, h, ROLE_OTHER, l};
        out[n++] = (mat_ref){&L->k, kvd, h, ROLE_OTHER, l};
        out[n++] = (mat_ref){&L->v, kvd, h, ROLE_ATTN_V, l};
        out[n++] = (mat_ref){&L->o, h, qd, ROLE_OTHER, l};
        out[n++] = (mat_ref){&L->gate, f, h, ROLE_OTHER, l};
        out[n++] = (mat_ref){&L->up, f, h, ROLE_OTHER, l};
        out[n++] = (mat_ref){&L->down, h, f, ROLE_FFN_DOWN, l};
    }
    return n;
}

static int more_bits(int i, int n) {
    return i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2;
}

/* The type scheme w gives r, before the row-length fallback. */
static eng_dtype wanted_type(eng_weights w, const mat_ref *r, int n_layers) {
    if (w == ENG_WEIGHTS_Q8_0) return ENG_Q8_0;
    if (r->role == ROLE_OUTPUT) return ENG_Q6_K;
    if (w == ENG_WEIGHTS_Q4_0) return ENG_Q4_0;
    if ((r->role == ROLE_ATTN_V || r->role == ROLE_FFN_DOWN) && more_bits(r->layer, n_layers))
        return ENG_Q6_K;
    return ENG_Q4_K;
}

static eng_dtype target_type(eng_weights w, const mat_ref *r, int n_layers) {
    eng_dtype t = wanted_type(w, r, n_layers);
    if (r->cols % eng_dtype_block(t) == 0) return t;
    if (r->cols % ENG_QK8_0 == 0) return ENG_Q8_0;
    return r->slot->dtype;
}

/* ---------------------------------------------------------------- conversion */

/* Memory for a converted matrix; large ones on 2 MB boundaries advised to huge pages (decode
 * streams them every step, see safetensors.c). */
static void *alloc_weights(size_t n) {
    const size_t huge = (size_t)2 << 20;
    size_t align = n >= 2 * huge ? huge : 64;
    void *p = NULL;
    if (posix_memalign(&p, align, (n + align - 1) / align * align)) return NULL;
    if (align == huge) madvise(p, (n + align - 1) / align * align, MADV_HUGEPAGE);
    return p;
}

/* One matrix converted on the pool: thread t takes rows [t rows / T, (t + 1) rows / T). */
typedef struct convert_job {
    const eng_mat *src;
    char *dst;
    eng_dtype to;
    int64_t rows, cols;
    float **scratch; /* one row of floats per thread */
    int n_threads;
} convert_job;

static void convert_piece(void *arg, int t0, int t1) {
    const convert_job *j = arg;
    size_t rb = eng_row_bytes(j->to, (size_t)j->cols);
    for (int t = t0; t < t1; t++) {
        float *buf = j->scratch[t];
        for (int64_t r = j->rows * t / j->n_threads; r < j->rows * (t + 1) / j->n_threads; r++) {
            eng_dequant_row(j->src->dtype, j->src->data, (size_t)r, buf, (size_t)j->cols);
            eng_quantize_row(j->to, buf, j->dst + (size_t)r * rb, (size_t)j->cols);
        }
    }
}

/* The converted (or, when `to` is its own type, copied) matrix r into *out. */
static int convert(eng_pool *pool, const mat_ref *r, eng_dtype to, float **scratch, void **out) {
    size_t bytes = eng_row_bytes(to, (size_t)r->rows * (size_t)r->cols);
    char *dst = alloc_weights(bytes);
    if (!dst) return RS_ENOMEM;
    if (to == r->slot->dtype) {
        memcpy(dst, r->slot->data, bytes);
    } else {
        convert_job j = {r->slot, dst, to, r->rows, r->cols, scratch, eng_pool_threads(pool)};
        eng_pool_run(pool, j.n_threads, convert_piece, &j);
    }
    *out = dst;
    return 0;
}

/* Scratch rows for the threads and room for the new buffers in m->owned. */
static int prepare(eng_model *m, int n_threads, int n_mats, float ***scratch) {
    size_t longest = (size_t)m->cfg.hidden;
    if ((size_t)m->cfg.intermediate > longest) longest = (size_t)m->cfg.intermediate;
    if ((size_t)m->cfg.n_heads * (size_t)m->cfg.head_dim > longest)
        longest = (size_t)m->cfg.n_heads * (size_t)m->cfg.head_dim;
    void **o = realloc(m->owned, (size_t)(m->n_owned + n_mats) * sizeof *o);
    if (!o) return RS_ENOMEM;
    m->owned = o;
    *scratch = calloc((size_t)n_threads, sizeof **scratch);
    if (!*scratch) return RS_ENOMEM;
    for (int t = 0; t < n_threads; t++)
        if (!((*scratch)[t] = malloc(longest * sizeof(float)))) return RS_ENOMEM;
    return 0;
}

static void free_scratch(float **scratch, int n_threads) {
    for (int t = 0; scratch && t < n_threads; t++) free(scratch[t]);
    free(scratch);
}

static double mat_bytes(const eng_mat *w, int64_t rows, int64_t cols) {
    return (double)eng_row_bytes(w->dtype, (size_t)rows * (size_t)cols);
}

double eng_model_weight_bytes(const eng_model *m, int streamed) {
    const eng_config *c = &m->cfg;
    int64_t h = c->hidden, qd = (int64_t)c->n_heads * c->head_dim, f = c->intermediate;
    int64_t kvd = (int64_t)c->n_kv_heads * c->head_dim;
    double total = mat_bytes(&m->lm_head, c->vocab_size, h);
    if (!c->tie_embeddings && !streamed) total += mat_bytes(&m->embed, c->vocab_size, h);
    for (int l = 0; l < c->n_layers; l++) {
        const eng_layer *L = &m->layers[l];
        total += mat_bytes(&L->q, qd, h) + mat_bytes(&L->k, kvd, h) + mat_bytes(&L->v, kvd, h) +
                 mat_bytes(&L->o, h, qd) + mat_bytes(&L->gate, f, h) + mat_bytes(&L->up, f, h) +
                 mat_bytes(&L->down, h, f);
    }
    return total;
}

int eng_model_has_quant(const eng_model *m) {
    int q = eng_dtype_is_quant(m->embed.dtype) || eng_dtype_is_quant(m->lm_head.dtype);
    for (int l = 0; l < m->cfg.n_layers && !q; l++) {
        const eng_layer *L = &m->layers[l];
        const eng_mat *all[] = {&L->q, &L->k, &L->v, &L->o, &L->gate, &L->up, &L->down};
        for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
            q |= eng_dtype_is_quant(all[i]->dtype);
    }
    return q;
}

int eng_model_quantize(eng_model *m, eng_weights w, int n_threads, eng_progress_fn progress,
                       void *arg, rs_err *e) {
    if (w == ENG_WEIGHTS_SOURCE || m->cfg.weights == w) return 0;
    if (m->cfg.weights != ENG_WEIGHTS_SOURCE || eng_model_has_quant(m))
        return rs_errf(e, RS_EINVAL, "the model's weights are quantized already (%s)",
                       eng_model_quantization(m));
    mat_ref *refs = malloc((size_t)(2 + 7 * m->cfg.n_layers) * sizeof *refs);
    void **bufs = calloc((size_t)(2 + 7 * m->cfg.n_layers), sizeof *bufs);
    eng_dtype *types = malloc((size_t)(2 + 7 * m->cfg.n_layers) * sizeof *types);
    float **scratch = NULL;
    eng_pool *pool = NULL;
    int n = refs ? list_mats(m, refs) : 0, done = 0, rc = refs && bufs && types ? 0 : RS_ENOMEM;
    if (!rc) rc = eng_pool_init(&pool, n_threads, e);
    if (!rc) rc = prepare(m, n_threads, n, &scratch);
    for (; !rc && done < n; done++) {
        types[done] = target_type(w, &refs[done], m->cfg.n_layers);
        rc = convert(pool, &refs[done], types[done], scratch, &bufs[done]);
        if (!rc && progress) progress(arg, done + 1, n);
    }
    if (!rc) { /* all converted: switch over, then drop the files */
        for (int i = 0; i < n; i++) {
            *refs[i].slot = (eng_mat){bufs[i], types[i]};
            m->owned[m->n_owned++] = bufs[i];
        }
        if (m->cfg.tie_embeddings) m->lm_head = m->embed;
        m->cfg.weights = w;
        eng_st_close(&m->st);
    } else {
        for (int i = 0; i < n; i++) free(bufs[i]);
        if (rc == RS_ENOMEM) rs_errf(e, RS_ENOMEM, "out of memory quantizing the weights");
    }
    eng_pool_free(pool);
    free_scratch(scratch, n_threads);
    free(refs);
    free(bufs);
    free(types);
    return rc;
}
