/*
 * forward.c — eng_ctx and eng_forward: the batched transformer pass over paged KV.
 *
 * All rows of the batch go through each weight product together (one pass over the weights per
 * step); everything else is per row, so a row's numbers depend only on its own inputs. The pool
 * splits weight products over output columns and attention over (rows, KV head) items; neither
 * split reaches inside an element's arithmetic.
 */
#include "engine/internal.h"
#include "engine/kernels.h"
#include "engine/profile.h"

#include <math.h>
#include <stdlib.h>

#ifdef ENG_PROFILE
eng_profile eng_prof;
#endif

/*
 * Attention work is cut into items of up to ATT_ROWS rows for one KV head (all the query heads
 * that share it): an item walks positions once for all its rows and their query heads (the
 * table's attend_rows), instead of once per (row, head). An item's rows are a prefill's consecutive
 * rows, or the rows of several sequences that start with the same block: sequences are sorted by
 * block table first, so requests sharing a cached prefix (a system prompt, few-shot examples) sit
 * side by side and read the prefix's KV once per step instead of once each. Items are dealt to
 * threads by estimated cost (positions attended), not by count, since a causal prefill's late
 * rows cost far more than its early ones and a batch mixes prefills with decode rows.
 */
enum { ATT_ROWS = 32 };

/* Rows att_order[i0 .. i0 + n), one KV head. */
typedef struct att_item {
    int i0, n;   /* its rows: a range of att_order */
    int kv_head; /* the KV head; its query heads are kv_head * group .. + group - 1 */
    int64_t end; /* cumulative cost of the items up to and including this one */
} att_item;

struct eng_ctx {
    const eng_model *m;    /* the model (not owned) */
    const eng_kernels *k;  /* the kernel table, fixed for the context's life */
    eng_pool *pool;        /* workers */
    int max_tokens;        /* capacity of the scratch rows */
    float *x;              /* [T][hidden] residual stream */
    float *xn;             /* [T][hidden] normalised input of a block */
    float *tmp;            /* [T][hidden] output of o_proj / down_proj */
    float *q, *att;        /* [T][heads * head_dim] queries, attention output */
    float *kx, *vx;        /* [T][kv_heads * head_dim] new keys and values */
    float *gate, *up;      /* [T][intermediate] MLP activations */
    float *cos, *sin;      /* [T][head_dim / 2] rotary factors of each row's position */
    int *row_seq;          /* [T] sequence of each row */
    int *row_pos;          /* [T] position of each row */
    int *row_npos;         /* [T] positions each row attends to (its position + 1) */
    int *seq_row0;         /* [T] first batch row of each sequence */
    int *seq_order;        /* [T] sequences sorted by block table (see att_items_make) */
    int *att_order;        /* [T] batch rows in attention-item order */
    att_item *att_items;   /* attention work of one step (see att_items_make) */
    int n_att_items;       /* items in att_items */
    eng_qact qx;           /* [T][max K] activations quantized for block-quantized weights
                              (qx.qs NULL when the model has none) */
    float *head_rows;      /* [S][hidden] final-normed rows that need logits (grown on demand) */
    float *logit_rows;     /* [S][vocab] their logits */
    int head_cap;          /* rows head_rows / logit_rows hold */
    eng_lora_scratch lora; /* the adapters' gathered products (grown on demand) */
};

/* Room for T rows of the longest product input (hidden, heads x head_dim or intermediate). */
static int qact_alloc(eng_qact *a, size_t T, size_t qd, const eng_config *g) {
    size_t K = (size_t)g->hidden;
    if (qd > K) K = qd;
    if ((size_t)g->intermediate > K) K = (size_t)g->intermediate;
    a->qs = malloc(T * K);
    a->d = malloc(T * (K / ENG_QA + 1) * sizeof(float));
    a->dsum = malloc(T * (K / ENG_QA + 1) * sizeof(float));
    a->qneg = malloc(T * (K / 16 + 1) * sizeof(int32_t));
    return a->qs && a->d && a->dsum && a->qneg;
}

int eng_ctx_init(eng_ctx **out, const eng_model *m, int max_tokens, int n_threads, rs_err *e) {
    *out = NULL;
    if (max_tokens < 1 || max_tokens > (1 << 20))
        return rs_errf(e, RS_EINVAL, "max_tokens = %d out of range", max_tokens);
    eng_ctx *c = calloc(1, sizeof *c);
    if (!c) return rs_errf(e, RS_ENOMEM, "out of memory");
    c->m = m;
    c->max_tokens = max_tokens;
    int rc = eng_kernels_select(&c->k, e);
    if (!rc) rc = eng_pool_init(&c->pool, n_threads, e);
    if (rc) {
        eng_ctx_free(c);
        return rc;
    }
    const eng_config *g = &m->cfg;
    size_t T = (size_t)max_tokens, qd = (size_t)g->n_heads * (size_t)g->head_dim;
    size_t kvd = (size_t)g->n_kv_heads * (size_t)g->head_dim;
    c->x = malloc(T * (size_t)g->hidden * sizeof(float));
    c->xn = malloc(T * (size_t)g->hidden * sizeof(float));
    c->tmp = malloc(T * (size_t)g->hidden * sizeof(float));
    c->q = malloc(T * qd * sizeof(float));
    c->att = malloc(T * qd * sizeof(float));
    c->kx = malloc(T * kvd * sizeof(float));
    c->vx = malloc(T * kvd * sizeof(float));
    c->gate = malloc(T * (size_t)g->intermediate * sizeof(float));
    c->up = malloc(T * (size_t)g->intermediate * sizeof(float));
    c->cos = malloc(T * (size_t)(g->head_dim / 2) * sizeof(float));
    c->sin = malloc(T * (size_t)(g->head_dim / 2) * sizeof(float));
    c->row_seq = malloc(T * sizeof(int));
    c->row_pos = malloc(T * sizeof(int));
    c->row_npos = malloc(T * sizeof(int));
    c->seq_row0 = malloc(T * sizeof(int));
    c->seq_order = malloc(T * sizeof(int));
    c->att_order = malloc(T * sizeof(int));
    /* each sequence contributes ceil(rows / ATT_ROWS) <= rows / ATT_ROWS + 1 row ranges */
    c->att_items = malloc((T + T / ATT_ROWS + 1) * (size_t)g->n_kv_heads * sizeof *c->att_items);
    int qx_ok = !eng_model_has_quant(m) || qact_alloc(&c->qx, T, qd, g);
    if (!c->x || !c->xn || !c->tmp || !c->q || !c->att || !c->kx || !c->vx || !c->gate || !c->up ||
        !c->cos || !c->sin || !c->row_seq || !c->row_pos || !c->row_npos || !c->seq_row0 ||
        !c->seq_order || !c->att_order || !c->att_items || !qx_ok) {
        eng_ctx_free(c);
        return rs_errf(e, RS_ENOMEM, "out of memory for scratch of %d tokens", max_tokens);
    }
    *out = c;
    return 0;
}

void eng_ctx_free(eng_ctx *c) {
    if (!c) return;
    eng_pool_free(c->pool);
    float *f[] = {c->x,    c->xn, c->tmp, c->q,   c->att,       c->kx,        c->vx,
                  c->gate, c->up, c->cos, c->sin, c->head_rows, c->logit_rows};
    for (size_t i = 0; i < sizeof f / sizeof f[0]; i++) free(f[i]);
    free(c->qx.qs);
    free(c->qx.d);
    free(c->qx.dsum);
    free(c->qx.qneg);
    free(c->row_seq);
    free(c->row_pos);
    free(c->row_npos);
    free(c->seq_row0);
    free(c->seq_order);
    free(c->att_order);
    free(c->att_items);
    eng_lora_scratch_free(&c->lora);
    free(c);
}

/* ---------------------------------------------------------------- parallel pieces */

/* One weight product of a job: y[M][N] = x W^T. */
typedef struct mm_part {
    float *y;  /* [M][N] output */
    eng_mat W; /* [N][K] weights */
    int N;     /* output columns */
} mm_part;

/* Products sharing one input x[M][K] (q/k/v, gate/up), run as one parallel loop over their
 * concatenated output columns: one pool hand-off instead of one per product. A column's
 * arithmetic is the kernel's alone, so how the range is cut never matters. */
typedef struct matmul_job {
    const eng_kernels *k;
    const float *x;
    const eng_qact *qx; /* x quantized, when a part's weights are block-quantized */
    int M, K;
    const mm_part *parts;
    int n_parts;
} matmul_job;

static void matmul_piece(void *a, int i0, int i1) {
    matmul_job *j = a;
    int base = 0;
    for (int p = 0; p < j->n_parts && base < i1; base += j->parts[p++].N) {
        const mm_part *q = &j->parts[p];
        int n0 = i0 > base ? i0 - base : 0, n1 = i1 - base < q->N ? i1 - base : q->N;
        if (n1 <= n0) continue;
        if (eng_dtype_is_quant(q->W.dtype))
            j->k->qmatmul(q->y, q->N, j->qx, j->M, q->W.data, q->W.dtype, n0, n1);
        else
            j->k->matmul(q->y, q->N, j->x, j->M, q->W.data, q->W.dtype, j->K, n0, n1);
    }
}

/* Below this many elements a row step stays on the calling thread: a hand-off (~1-15 us)
 * would cost about what it saves. (Low enough that the forward test's 150-row prefills of its
 * small model take the pool path, and are compared with one-row decode steps, which never do.) */
enum { ROWS_PARALLEL_MIN = 4096 };
/* Rows of biases, q/k norms, RoPE and K/V stores below which one thread does them (a row is a few
 * microseconds; a hand-off to the pool costs about as much as one). */
enum { QKV_PARALLEL_MIN = 4 };

/* Rows of x quantized into c->qx (a row's blocks are its own: any split gives the same). */
typedef struct quant_job {
    eng_qact *qx;
    const float *x;
} quant_job;

static void quant_piece(void *a, int r0, int r1) {
    quant_job *j = a;
    eng_quant_act_rows(j->qx, j->x, r0, r1);
}

static void matmul_parts(eng_ctx *c, const float *x, int M, int K, const mm_part *parts, int n) {
    matmul_job j = {c->k, x, &c->qx, M, K, parts, n};
    int total = 0, quant = 0;
    for (int i = 0; i < n; i++) total += parts[i].N, quant |= eng_dtype_is_quant(parts[i].W.dtype);
    if (quant) { /* once per input, shared by every part and thread */
        quant_job q = {&c->qx, x};
        c->qx.K = K;
        if ((size_t)M * (size_t)K < ROWS_PARALLEL_MIN)
            quant_piece(&q, 0, M);
        else
            eng_pool_run(c->pool, M, quant_piece, &q);
    }
    eng_pool_run(c->pool, total, matmul_piece, &j);
}

static void matmul(eng_ctx *c, float *y, const float *x, int M, eng_mat W, int K, int N) {
    mm_part p = {y, W, N};
    matmul_parts(c, x, M, K, &p, 1);
}

/* Attention of one layer over a list of items. */
typedef struct attend_job {
    eng_ctx *c;
    const kv_pool *kv;
    const eng_seq *seqs;
    int layer;
    float scale;
    int n_threads; /* the items are split into this many cost-balanced ranges */
} attend_job;

/* Block tables compared as far as each sequence's rows reach: sequences sharing a prefix of
 * blocks compare close. */
static int table_cmp(const eng_seq *a, const eng_seq *b, int bs) {
    int na = (a->pos0 + a->n_tokens + bs - 1) / bs, nb = (b->pos0 + b->n_tokens + bs - 1) / bs;
    for (int i = 0; i < na && i < nb; i++)
        if (a->blocks[i] != b->blocks[i]) return a->blocks[i] < b->blocks[i] ? -1 : 1;
    return (na > nb) - (na < nb);
}

/* c->seq_order = sequences sorted by table_cmp, stable (insertion sort: a step has at most
 * max_batch sequences, usually in the order the last step left them). */
static void sort_seqs(eng_ctx *c, const eng_seq *seqs, int n_seqs, int bs) {
    for (int i = 0; i < n_seqs; i++) {
        int j = i;
        for (; j > 0 && table_cmp(&seqs[c->seq_order[j - 1]], &seqs[i], bs) > 0; j--)
            c->seq_order[j] = c->seq_order[j - 1];
        c->seq_order[j] = i;
    }
}

/* Close the group att_order[g0, m): one item per KV head. */
static int close_group(eng_ctx *c, int n, int g0, int m, int64_t *cost) {
    int64_t rows_cost = 0;
    for (int i = g0; i < m; i++) rows_cost += c->row_npos[c->att_order[i]];
    for (int h = 0; h < c->m->cfg.n_kv_heads; h++) {
        *cost += rows_cost;
        c->att_items[n++] = (att_item){g0, m - g0, h, *cost};
    }
    return n;
}

/* Items of one layer (the same for every layer) into c->att_items; returns how many. Rows go
 * in sorted-sequence order; a group closes at ATT_ROWS rows or at a sequence whose first block
 * differs from the group's. */
static int att_items_make(eng_ctx *c, const eng_seq *seqs, int n_seqs, int bs) {
    sort_seqs(c, seqs, n_seqs, bs);
    int n = 0, m = 0, g0 = 0;
    int32_t first = -1;
    int64_t cost = 0;
    for (int i = 0; i < n_seqs; i++) {
        int s = c->seq_order[i];
        for (int t = 0; t < seqs[s].n_tokens; t++) {
            if (m > g0 && (m - g0 == ATT_ROWS || seqs[s].blocks[0] != first)) {
                n = close_group(c, n, g0, m, &cost);
                g0 = m;
            }
            first = seqs[s].blocks[0];
            c->att_order[m++] = c->seq_row0[s] + t;
        }
    }
    if (m > g0) n = close_group(c, n, g0, m, &cost);
    return n;
}

/* Item `it`: its rows times the query heads of its KV head (all read the same K/V), HEADS_MAX
 * heads per attend_rows call; per-row attend for tables without attend_rows. A row's heads are
 * adjacent, since they read the same blocks. */
enum { HEADS_MAX = 4 };
static void attend_item(const attend_job *j, const att_item *it) {
    eng_ctx *c = j->c;
    const eng_config *g = &c->m->cfg;
    int group = g->n_heads / g->n_kv_heads, d = g->head_dim, qd = g->n_heads * d;
    eng_att_row rows[ATT_ROWS * HEADS_MAX];
    for (int h0 = it->kv_head * group; h0 < (it->kv_head + 1) * group; h0 += HEADS_MAX) {
        int nh = (it->kv_head + 1) * group - h0, R = 0;
        if (nh > HEADS_MAX) nh = HEADS_MAX;
        for (int i = 0; i < it->n; i++) {
            int r = c->att_order[it->i0 + i];
            for (int h = h0; h < h0 + nh; h++) {
                size_t off = (size_t)r * (size_t)qd + (size_t)h * (size_t)d;
                rows[R++] = (eng_att_row){c->att + off, c->q + off, j->seqs[c->row_seq[r]].blocks,
                                          c->row_npos[r]};
            }
        }
        if (c->k->attend_rows) {
            c->k->attend_rows(rows, R, j->kv, j->layer, it->kv_head, j->scale);
            continue;
        }
        for (int i = 0; i < R; i++)
            c->k->attend(rows[i].out, rows[i].q, j->kv, rows[i].blocks, j->layer, it->kv_head,
                         rows[i].n_pos, j->scale);
    }
}

/* Pieces are threads: thread t takes the items whose cost midpoint falls in its share. */
static void attend_piece(void *a, int t0, int t1) {
    attend_job *j = a;
    const att_item *items = j->c->att_items;
    int n = j->c->n_att_items;
    int64_t total = items[n - 1].end;
    for (int i = 0; i < n; i++) {
        int64_t start = i ? items[i - 1].end : 0, mid2 = start + items[i].end;
        int t = (int)(mid2 * j->n_threads / (2 * total + 1));
        if (t >= t0 && t < t1) attend_item(j, &items[i]);
    }
}

/* ---------------------------------------------------------------- per-row arithmetic */

/* out = w * (x / rms(x)), as transformers' RMSNorm does it in F32 (sum of squares in double). */
static void rmsnorm(float *out, const float *x, const float *w, int n, float eps) {
    double ss = 0;
    for (int i = 0; i < n; i++) ss += (double)x[i] * (double)x[i];
    float r = 1.0f / sqrtf((float)(ss / n) + eps);
    for (int i = 0; i < n; i++) out[i] = w[i] * (x[i] * r);
}

/* HF "rotate half": pairs (i, i + d/2) rotate by the angle of frequency i. */
static void rope(float *v, const float *cs, const float *sn, int d) {
    int h = d / 2;
    for (int i = 0; i < h; i++) {
        float a = v[i], b = v[i + h];
        v[i] = a * cs[i] - b * sn[i];
        v[i + h] = b * cs[i] + a * sn[i];
    }
}

/* cos/sin of pos * theta^(-2i/d), computed in double then rounded once. */
static void rope_factors(float *cs, float *sn, int pos, int d, float theta) {
    for (int i = 0; i < d / 2; i++) {
        double ang = (double)pos * pow((double)theta, -2.0 * i / d);
        cs[i] = (float)cos(ang);
        sn[i] = (float)sin(ang);
    }
}

static void add_bias(float *y, const float *b, int rows, int n) {
    if (!b) return;
    for (int r = 0; r < rows; r++)
        for (int i = 0; i < n; i++) y[(size_t)r * (size_t)n + (size_t)i] += b[i];
}

/* Per-head q/k norm (Qwen3) then RoPE, for n_heads heads of one row. */
static void heads_norm_rope(float *v, int n_heads, const float *norm_w, const eng_config *g,
                            const float *cs, const float *sn) {
    for (int h = 0; h < n_heads; h++) {
        float *x = v + (size_t)h * (size_t)g->head_dim;
        if (norm_w) rmsnorm(x, x, norm_w, g->head_dim, g->rms_eps);
        rope(x, cs, sn, g->head_dim);
    }
}

/* Store one head vector into a page slot in the pool's element type. */
static void store_kv(const kv_pool *kv, void *tile, int slot, const float *src) {
    int d = kv->head_dim;
    if (kv->dtype == KV_F32) {
        memcpy((float *)tile + (size_t)slot * (size_t)d, src, (size_t)d * sizeof(float));
        return;
    }
    uint16_t *dst = (uint16_t *)tile + (size_t)slot * (size_t)d;
    for (int i = 0; i < d; i++) dst[i] = eng_f32_to_bf16(src[i]);
}

/* ---------------------------------------------------------------- per-row work on the pool */

/* Element-wise and per-row steps between the weight products, split over rows (each row's
 * arithmetic is its own, so the split never changes a number). In a prefill they are a few
 * percent of the work, but left on one thread they would idle the others. */
typedef struct rows_job {
    eng_ctx *c;
    const float *norm_w; /* residual_norm: xn = RMSNorm(x) with these weights; NULL: none */
    int add_tmp;         /* residual_norm: x += tmp first */
} rows_job;

static void residual_norm_piece(void *a, int r0, int r1) {
    const rows_job *j = a;
    const eng_config *g = &j->c->m->cfg;
    size_t H = (size_t)g->hidden;
    for (size_t r = (size_t)r0; r < (size_t)r1; r++) {
        float *x = j->c->x + r * H;
        if (j->add_tmp)
            for (size_t i = 0; i < H; i++) x[i] += j->c->tmp[r * H + i];
        if (j->norm_w) rmsnorm(j->c->xn + r * H, x, j->norm_w, (int)H, g->rms_eps);
    }
}

/* fn over rows [0, T) of `width` elements each, on the pool if that pays. */
static void rows_run(eng_ctx *c, int T, size_t width, eng_task_fn fn, rows_job *j) {
    if ((size_t)T * width < ROWS_PARALLEL_MIN)
        fn(j, 0, T);
    else
        eng_pool_run(c->pool, T, fn, j);
}

/* rows [0, T): x += tmp if add_tmp, then xn = RMSNorm(x) if norm_w. */
static void residual_norm(eng_ctx *c, int T, int add_tmp, const float *norm_w) {
    rows_job j = {c, norm_w, add_tmp};
    rows_run(c, T, (size_t)c->m->cfg.hidden, residual_norm_piece, &j);
}

/* gate = SiLU(gate) * up, row by row (the table's silu_mul). */
static void swiglu_piece(void *a, int r0, int r1) {
    const rows_job *j = a;
    size_t F = (size_t)j->c->m->cfg.intermediate;
    j->c->k->silu_mul(j->c->gate + (size_t)r0 * F, j->c->up + (size_t)r0 * F,
                      (size_t)(r1 - r0) * F);
}

/* The attention inputs of rows [r0, r1) of one layer: biases, per-head q/k norms and RoPE,
 * then each row's K/V rounded into its own page slot (rows never share a slot). */
typedef struct qkv_job {
    eng_ctx *c;
    kv_pool *kv;
    const eng_seq *seqs;
    int layer;
} qkv_job;

static void qkv_rows_piece(void *a, int r0, int r1) {
    const qkv_job *j = a;
    eng_ctx *c = j->c;
    const eng_config *g = &c->m->cfg;
    const eng_layer *L = &c->m->layers[j->layer];
    int d = g->head_dim, qd = g->n_heads * d, kvd = g->n_kv_heads * d;
    for (int r = r0; r < r1; r++) {
        float *q = c->q + (size_t)r * qd, *k = c->kx + (size_t)r * kvd,
              *v = c->vx + (size_t)r * kvd;
        add_bias(q, L->q_bias, 1, qd);
        add_bias(k, L->k_bias, 1, kvd);
        add_bias(v, L->v_bias, 1, kvd);
        const float *cs = c->cos + (size_t)r * (d / 2), *sn = c->sin + (size_t)r * (d / 2);
        heads_norm_rope(q, g->n_heads, L->q_norm, g, cs, sn);
        heads_norm_rope(k, g->n_kv_heads, L->k_norm, g, cs, sn);
        int p = c->row_pos[r], bs = j->kv->block_size;
        int blk = j->seqs[c->row_seq[r]].blocks[p / bs];
        for (int h = 0; h < g->n_kv_heads; h++) {
            store_kv(j->kv, kv_tile(j->kv, blk, j->layer, 0, h), p % bs, k + (size_t)h * d);
            store_kv(j->kv, kv_tile(j->kv, blk, j->layer, 1, h), p % bs, v + (size_t)h * d);
        }
    }
}

/* Rows [0, T) of qkv_rows_piece, on the pool if that pays. */
static void qkv_rows(eng_ctx *c, kv_pool *kv, const eng_seq *seqs, int layer, int T) {
    qkv_job j = {c, kv, seqs, layer};
    if (T < QKV_PARALLEL_MIN)
        qkv_rows_piece(&j, 0, T);
    else
        eng_pool_run(c->pool, T, qkv_rows_piece, &j);
}

/* ---------------------------------------------------------------- the pass */

/* y[T][N] += each adapter's low-rank product of module mod for its own rows (lora.c). */
static void lora_add(eng_ctx *c, const eng_seq *seqs, int n_seqs, int l, eng_lora_module mod,
                     const float *x, int K, float *y, int N) {
    eng_lora_apply(&c->lora, c->k, c->pool, seqs, n_seqs, l, mod, x, K, y, N);
}

static void attention_block(eng_ctx *c, kv_pool *kv, const eng_seq *seqs, int n_seqs, int l,
                            int T) {
    const eng_config *g = &c->m->cfg;
    const eng_layer *L = &c->m->layers[l];
    int H = g->hidden, d = g->head_dim, qd = g->n_heads * d, kvd = g->n_kv_heads * d;
    residual_norm(c, T, 0, L->attn_norm);
    ENG_PROF_MARK(ENG_PH_NORM);
    mm_part qkv[3] = {{c->q, L->q, qd}, {c->kx, L->k, kvd}, {c->vx, L->v, kvd}};
    matmul_parts(c, c->xn, T, H, qkv, 3);
    for (int p = 0; p < 3; p++)
        lora_add(c, seqs, n_seqs, l, ENG_LORA_Q + p, c->xn, H, qkv[p].y, qkv[p].N);
    ENG_PROF_MARK(ENG_PH_QKV);
    qkv_rows(c, kv, seqs, l, T);
    ENG_PROF_MARK(ENG_PH_ROPE);
    attend_job aj = {c, kv, seqs, l, 1.0f / sqrtf((float)d), eng_pool_threads(c->pool)};
    eng_pool_run(c->pool, aj.n_threads, attend_piece, &aj);
    ENG_PROF_MARK(ENG_PH_ATTEND);
    matmul(c, c->tmp, c->att, T, L->o, qd, H); /* added to x by mlp_block */
    lora_add(c, seqs, n_seqs, l, ENG_LORA_O, c->att, qd, c->tmp, H);
    ENG_PROF_MARK(ENG_PH_O);
}

static void mlp_block(eng_ctx *c, const eng_seq *seqs, int n_seqs, int l, int T) {
    const eng_config *g = &c->m->cfg;
    const eng_layer *L = &c->m->layers[l];
    int H = g->hidden, F = g->intermediate;
    residual_norm(c, T, 1, L->mlp_norm); /* the attention output joins the residual first */
    ENG_PROF_MARK(ENG_PH_NORM);
    mm_part gu[2] = {{c->gate, L->gate, F}, {c->up, L->up, F}};
    matmul_parts(c, c->xn, T, H, gu, 2);
    lora_add(c, seqs, n_seqs, l, ENG_LORA_GATE, c->xn, H, c->gate, F);
    lora_add(c, seqs, n_seqs, l, ENG_LORA_UP, c->xn, H, c->up, F);
    ENG_PROF_MARK(ENG_PH_GATE_UP);
    rows_job sj = {c, NULL, 0};
    rows_run(c, T, (size_t)F, swiglu_piece, &sj);
    ENG_PROF_MARK(ENG_PH_SWIGLU);
    matmul(c, c->tmp, c->gate, T, L->down, F, H);
    lora_add(c, seqs, n_seqs, l, ENG_LORA_DOWN, c->gate, F, c->tmp, H);
    ENG_PROF_MARK(ENG_PH_DOWN);
    residual_norm(c, T, 1, NULL);
    ENG_PROF_MARK(ENG_PH_NORM);
}

static int grow_head(eng_ctx *c, int rows, rs_err *e) {
    if (rows <= c->head_cap) return 0;
    const eng_config *g = &c->m->cfg;
    float *h = realloc(c->head_rows, (size_t)rows * (size_t)g->hidden * sizeof(float));
    if (h) c->head_rows = h;
    float *lg = realloc(c->logit_rows, (size_t)rows * (size_t)g->vocab_size * sizeof(float));
    if (lg) c->logit_rows = lg;
    if (!h || !lg) return rs_errf(e, RS_ENOMEM, "out of memory for %d logit rows", rows);
    c->head_cap = rows;
    return 0;
}

/* Final norm and LM head for the last row of each sequence that asked for logits. */
static void lm_head(eng_ctx *c, const eng_seq *seqs, int n_seqs) {
    const eng_config *g = &c->m->cfg;
    int want = 0;
    for (int s = 0; s < n_seqs; s++) want += seqs[s].logits != NULL;
    if (!want) return;
    int i = 0, last = -1;
    for (int s = 0; s < n_seqs; s++) {
        last += seqs[s].n_tokens;
        if (!seqs[s].logits) continue;
        rmsnorm(c->head_rows + (size_t)i++ * g->hidden, c->x + (size_t)last * g->hidden,
                c->m->final_norm, g->hidden, g->rms_eps);
    }
    matmul(c, c->logit_rows, c->head_rows, want, c->m->lm_head, g->hidden, g->vocab_size);
    i = 0;
    for (int s = 0; s < n_seqs; s++)
        if (seqs[s].logits)
            memcpy(seqs[s].logits, c->logit_rows + (size_t)i++ * g->vocab_size,
                   (size_t)g->vocab_size * sizeof(float));
}

/* The final-normed rows of each sequence that asked for them (embeddings). */
static void hidden_out(eng_ctx *c, const eng_seq *seqs, int n_seqs) {
    const eng_config *g = &c->m->cfg;
    for (int s = 0, r = 0; s < n_seqs; r += seqs[s++].n_tokens)
        for (int t = 0; seqs[s].hidden && t < seqs[s].n_tokens; t++)
            rmsnorm(seqs[s].hidden + (size_t)t * g->hidden, c->x + (size_t)(r + t) * g->hidden,
                    c->m->final_norm, g->hidden, g->rms_eps);
}

/* Everything eng_forward checks before it writes anything. */
static int check_batch(const eng_ctx *c, const kv_pool *kv, const eng_seq *seqs, int n_seqs,
                       rs_err *e) {
    const eng_config *g = &c->m->cfg;
    if (kv->n_layers != g->n_layers || kv->n_kv_heads != g->n_kv_heads ||
        kv->head_dim != g->head_dim)
        return rs_errf(e, RS_EINVAL, "forward: KV pool geometry does not match the model");
    if (n_seqs < 0 || (n_seqs > 0 && !seqs))
        return rs_errf(e, RS_EINVAL, "forward: bad sequence list");
    int64_t total = 0;
    for (int s = 0; s < n_seqs; s++) {
        const eng_seq *q = &seqs[s];
        if (q->n_tokens < 1 || !q->tokens || q->pos0 < 0 || q->pos0 > INT32_MAX / 2 - q->n_tokens)
            return rs_errf(e, RS_EINVAL, "forward: sequence %d: bad tokens/n_tokens/pos0", s);
        total += q->n_tokens;
        if (total > c->max_tokens)
            return rs_errf(e, RS_EINVAL, "forward: batch of more than %d tokens", c->max_tokens);
        int need = (q->pos0 + q->n_tokens + kv->block_size - 1) / kv->block_size;
        if (!q->blocks || q->n_blocks < need)
            return rs_errf(e, RS_EINVAL, "forward: sequence %d: block table of %d blocks, needs %d",
                           s, q->n_blocks, need);
        for (int b = 0; b < need; b++)
            if (q->blocks[b] < 0 || q->blocks[b] >= kv->n_blocks)
                return rs_errf(e, RS_EINVAL, "forward: sequence %d: block id %d out of range", s,
                               q->blocks[b]);
        for (int t = 0; t < q->n_tokens; t++)
            if (q->tokens[t] < 0 || q->tokens[t] >= g->vocab_size)
                return rs_errf(e, RS_EINVAL, "forward: sequence %d: token id %d out of range", s,
                               q->tokens[t]);
    }
    return 0;
}

/* Rows in batch order: embedding, and the position (with its rotary factors) of each. */
static void embed_rows(eng_ctx *c, const eng_seq *seqs, int n_seqs) {
    const eng_config *g = &c->m->cfg;
    int r = 0, half = g->head_dim / 2;
    for (int s = 0; s < n_seqs; s++) {
        c->seq_row0[s] = r;
        for (int t = 0; t < seqs[s].n_tokens; t++, r++) {
            c->row_seq[r] = s;
            c->row_pos[r] = seqs[s].pos0 + t;
            c->row_npos[r] = c->row_pos[r] + 1;
            eng_dequant_row(c->m->embed.dtype, c->m->embed.data, (size_t)seqs[s].tokens[t],
                            c->x + (size_t)r * g->hidden, (size_t)g->hidden);
            rope_factors(c->cos + (size_t)r * half, c->sin + (size_t)r * half, c->row_pos[r],
                         g->head_dim, g->rope_theta);
        }
    }
}

int eng_forward(eng_ctx *c, kv_pool *kv, const eng_seq *seqs, int n_seqs, rs_err *e) {
    int rc = check_batch(c, kv, seqs, n_seqs, e);
    if (rc || n_seqs == 0) return rc;
    int want = 0;
    for (int s = 0; s < n_seqs; s++) want += seqs[s].logits != NULL;
    if ((rc = grow_head(c, want, e))) return rc;
    int T = 0;
    for (int s = 0; s < n_seqs; s++) T += seqs[s].n_tokens;
    if ((rc = eng_lora_prepare(&c->lora, c->m, seqs, n_seqs, T, e))) return rc;
    ENG_PROF_START();
    embed_rows(c, seqs, n_seqs);
    c->n_att_items = att_items_make(c, seqs, n_seqs, kv->block_size);
    ENG_PROF_MARK(ENG_PH_EMBED);
    for (int l = 0; l < c->m->cfg.n_layers; l++) {
        attention_block(c, kv, seqs, n_seqs, l, T);
        mlp_block(c, seqs, n_seqs, l, T);
    }
    lm_head(c, seqs, n_seqs);
    ENG_PROF_MARK(ENG_PH_LM_HEAD);
    hidden_out(c, seqs, n_seqs);
    return 0;
}
