/*
 * bench_kernels.c — raw speed of the engine's kernel table (a benchmark, not a test; run it on
 * a quiet machine):
 *   1. streaming read bandwidth, 1 and T threads (the decode limit's numerator);
 *   2. decode: every weight product of one Qwen3-0.6B token (28 layers + the tied LM head, BF16)
 *      at M = 1 and M = 8, split over T threads by columns like the engine's pool: GB/s of
 *      weights and the implied tokens/s, against the limit bandwidth / weight bytes per token;
 *   3. prefill GEMM GFLOPS for 512 x 3072 x 1024 and 512 x 1024 x 3072 (M x N x K, BF16
 *      weights) against OpenBLAS sgemm on the same weights widened to F32;
 *   4. attention of one query over BF16 KV pages at a few context lengths.
 *
 * Usage: bench_kernels [--threads T] [--reps R] [--quick]
 *   --quick: one repetition of everything and a 4-layer model (seconds; a smoke test)
 * The kernel table is the one the engine would pick (RADIXSERVE_ISA forces one).
 */
#include <cblas.h>
#include <immintrin.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/kern_x86.h"
#include "engine/kernels.h"
#include "util/util.h"

enum { MAX_THREADS = 64 };

/* Qwen3-0.6B's weight matrices, [rows = N][cols = K]. */
static const int layer_shapes[][2] = {
    {2048, 1024}, /* q_proj: 16 heads x 128 */
    {1024, 1024}, /* k_proj: 8 KV heads x 128 */
    {1024, 1024}, /* v_proj */
    {1024, 2048}, /* o_proj */
    {3072, 1024}, /* gate_proj */
    {3072, 1024}, /* up_proj */
    {1024, 3072}, /* down_proj */
};
enum { N_MATS = 7, QWEN_LAYERS = 28, QWEN_VOCAB = 151936, QWEN_HIDDEN = 1024 };

typedef struct opts {
    int threads; /* worker threads (column split) */
    int reps;    /* timed repetitions (best is reported) */
    int layers;  /* transformer layers in the decode model */
} opts;

/* ---------------------------------------------------------------- a tiny fork/join pool */

struct team;

/* What a worker thread needs: its team and its index in it. */
typedef struct member {
    struct team *t; /* the team */
    int i;          /* index, 1 .. n-1 */
} member;

/* Threads run job(i, n, arg) for i < n together; the caller is thread 0. */
typedef struct team {
    int n;                                /* threads including the caller */
    pthread_t tid[MAX_THREADS];           /* [0] unused: the caller */
    member who[MAX_THREADS];              /* each worker's identity */
    pthread_barrier_t go, done;           /* start and end of each job */
    void (*job)(int i, int n, void *arg); /* the current job, NULL: quit */
    void *arg;                            /* its argument */
} team;

static void *team_main(void *p) {
    team *t = ((member *)p)->t;
    int i = ((member *)p)->i;
    for (;;) {
        pthread_barrier_wait(&t->go);
        if (!t->job) return NULL;
        t->job(i, t->n, t->arg);
        pthread_barrier_wait(&t->done);
    }
}

static void team_run(team *t, void (*job)(int, int, void *), void *arg) {
    t->job = job;
    t->arg = arg;
    pthread_barrier_wait(&t->go);
    job(0, t->n, arg);
    pthread_barrier_wait(&t->done);
}

static int team_init(team *t, int n) {
    t->n = n;
    t->job = NULL;
    pthread_barrier_init(&t->go, NULL, (unsigned)n);
    pthread_barrier_init(&t->done, NULL, (unsigned)n);
    for (int k = 1; k < n; k++) {
        t->who[k] = (member){t, k};
        if (pthread_create(&t->tid[k], NULL, team_main, &t->who[k])) return -1;
    }
    return 0;
}

static void team_free(team *t) {
    t->job = NULL;
    pthread_barrier_wait(&t->go);
    for (int k = 1; k < t->n; k++) pthread_join(t->tid[k], NULL);
    pthread_barrier_destroy(&t->go);
    pthread_barrier_destroy(&t->done);
}

/* ---------------------------------------------------------------- bandwidth */

typedef unsigned long long v4u __attribute__((vector_size(32)));

/* A streaming read: each thread sums its share of the buffer. */
typedef struct stream_job {
    const v4u *buf;        /* the buffer */
    size_t n;              /* vectors in it */
    v4u sink[MAX_THREADS]; /* per-thread sums, so the reads are not optimised away */
} stream_job;

/* Variant 0: one sequential stream per thread, four vector sums (what the compiler makes of
 * plain C). */
static void stream_plain(const v4u *p, size_t a, size_t b, v4u *sink) {
    v4u s0 = {0}, s1 = {0}, s2 = {0}, s3 = {0};
    for (size_t k = a; k + 4 <= b; k += 4) {
        s0 += p[k];
        s1 += p[k + 1];
        s2 += p[k + 2];
        s3 += p[k + 3];
    }
    *sink = s0 + s1 + s2 + s3;
}

/* Variant 1: as 0 with a software prefetch `ahead` bytes on (hint T0, or NTA when nta). */
static void stream_prefetch(const v4u *p, size_t a, size_t b, v4u *sink, size_t ahead, int nta) {
    v4u s0 = {0}, s1 = {0}, s2 = {0}, s3 = {0};
    const char *c = (const char *)p;
    for (size_t k = a; k + 4 <= b; k += 4) { /* 4 x 32 bytes: two lines */
        const char *f = c + k * sizeof(v4u) + ahead;
        if (nta) {
            __builtin_prefetch(f, 0, 0);
            __builtin_prefetch(f + 64, 0, 0);
        } else {
            __builtin_prefetch(f, 0, 3);
            __builtin_prefetch(f + 64, 0, 3);
        }
        s0 += p[k];
        s1 += p[k + 1];
        s2 += p[k + 2];
        s3 += p[k + 3];
    }
    *sink = s0 + s1 + s2 + s3;
}

/* Variant 2: `ns` interleaved streams per thread (the thread's share cut into ns parts walked
 * side by side, like a GEMV tile's weight rows), each prefetched one line ahead of use. */
static void stream_multi(const v4u *p, size_t a, size_t b, v4u *sink, int ns) {
    v4u s[16] = {{0}};
    size_t len = (b - a) / (size_t)ns / 2 * 2;
    for (size_t k = 0; k + 2 <= len; k += 2)
        for (int q = 0; q < ns; q++) {
            const v4u *r = p + a + (size_t)q * len + k;
            __builtin_prefetch((const char *)r + 512, 0, 3);
            s[q] += r[0] + r[1];
        }
    v4u t = {0};
    for (int q = 0; q < ns; q++) t += s[q];
    *sink = t;
}

static int stream_variant; /* which loop stream_part runs (set before each measurement) */

static void stream_part(int i, int n, void *arg) {
    stream_job *j = arg;
    size_t a = j->n * (size_t)i / (size_t)n, b = j->n * (size_t)(i + 1) / (size_t)n;
    switch (stream_variant) {
    case 0:
        stream_plain(j->buf, a, b, &j->sink[i]);
        break;
    case 1:
        stream_prefetch(j->buf, a, b, &j->sink[i], 1024, 0);
        break;
    case 2:
        stream_prefetch(j->buf, a, b, &j->sink[i], 4096, 0);
        break;
    case 3:
        stream_prefetch(j->buf, a, b, &j->sink[i], 1024, 1);
        break;
    case 4:
        stream_multi(j->buf, a, b, &j->sink[i], 4);
        break;
    default:
        stream_multi(j->buf, a, b, &j->sink[i], 8);
        break;
    }
}

enum { STREAM_VARIANTS = 6 };
static const char *const stream_names[STREAM_VARIANTS] = {
    "plain", "prefetch 1 KB", "prefetch 4 KB", "prefetch NTA", "4 streams", "8 streams"};

/* GB/s of the fastest read loop (its name in *which): every variant measured reps times,
 * interleaved, best of each, since the limit is what the best loop reaches. */
static double bench_stream(team *t, const opts *o, const char **which) {
    size_t bytes = (size_t)1 << 30;
    stream_job j = {.n = bytes / sizeof(v4u)};
    v4u *buf = aligned_alloc(64, bytes);
    if (!buf) return 0;
    memset(buf, 1, bytes);
    j.buf = buf;
    double best[STREAM_VARIANTS];
    for (int v = 0; v < STREAM_VARIANTS; v++) best[v] = 1e30;
    team_run(t, stream_part, &j); /* warms page tables */
    for (int r = 0; r < o->reps; r++)
        for (int v = 0; v < STREAM_VARIANTS; v++) {
            stream_variant = v;
            double t0 = rs_now();
            team_run(t, stream_part, &j);
            double dt = rs_now() - t0;
            if (dt < best[v]) best[v] = dt;
        }
    free(buf);
    int b = 0;
    for (int v = 1; v < STREAM_VARIANTS; v++)
        if (best[v] < best[b]) b = v;
    *which = stream_names[b];
    return (double)bytes / best[b] / 1e9;
}

/* ---------------------------------------------------------------- decode (GEMV) */

typedef struct mat {
    uint16_t *w; /* BF16 weights, N x K */
    int n, k;    /* shape */
} mat;

/* All weight products of one token, columns split over the team. */
typedef struct decode_job {
    const eng_kernels *kern;
    mat *mats; /* layers * N_MATS matrices, then the LM head */
    int n_mats;
    const float *x; /* M x max K activations */
    float *y;       /* M x max N outputs */
    int M;
    int cur; /* the matrix being multiplied */
} decode_job;

static void decode_part(int i, int n, void *arg) {
    decode_job *j = arg;
    const mat *m = &j->mats[j->cur];
    int n0 = (int)((long)m->n * i / n), n1 = (int)((long)m->n * (i + 1) / n);
    j->kern->matmul(j->y, m->n, j->x, j->M, m->w, ENG_BF16, m->k, n0, n1);
}

static void fill_bf16(uint16_t *w, size_t n, uint64_t seed) {
    for (size_t i = 0; i < n; i++) {
        seed = seed * 6364136223846793005ull + 1442695040888963407ull;
        /* exponent near 1, random sign and mantissa: a realistic, finite bit pattern */
        w[i] = (uint16_t)(0x3c00u | ((seed >> 40) & 0x807fu));
    }
}

static int decode_model(mat **out, int layers) {
    int n = layers * N_MATS + 1;
    mat *m = calloc((size_t)n, sizeof *m);
    if (!m) return -1;
    for (int i = 0; i < n; i++) {
        int last = i == n - 1;
        m[i].n = last ? QWEN_VOCAB : layer_shapes[i % N_MATS][0];
        m[i].k = last ? QWEN_HIDDEN : layer_shapes[i % N_MATS][1];
        size_t cnt = (size_t)m[i].n * (size_t)m[i].k;
        m[i].w = malloc(cnt * 2);
        if (!m[i].w) return -1;
        fill_bf16(m[i].w, cnt, (uint64_t)i + 1);
    }
    *out = m;
    return n;
}

/* Seconds for one token's weight products at M rows (best of reps). */
static double decode_token_time(team *t, decode_job *j, int M, int reps) {
    double best = 1e30;
    j->M = M;
    for (int r = 0; r < reps + 1; r++) {
        double t0 = rs_now();
        for (j->cur = 0; j->cur < j->n_mats; j->cur++) team_run(t, decode_part, j);
        double dt = rs_now() - t0;
        if (r > 0 && dt < best) best = dt;
    }
    return best;
}

static void bench_decode(team *t, const eng_kernels *k, const opts *o, double bw_gbs) {
    mat *mats;
    int n = decode_model(&mats, o->layers);
    if (n < 0) {
        printf("decode: out of memory\n");
        return;
    }
    double bytes = 0;
    for (int i = 0; i < n - 1; i++) bytes += (double)mats[i].n * mats[i].k * 2;
    double layer_bytes = bytes / o->layers, head_bytes = (double)QWEN_VOCAB * QWEN_HIDDEN * 2;
    double token_bytes = layer_bytes * QWEN_LAYERS + head_bytes; /* the real 28-layer model */
    float *x = calloc((size_t)8 * 3072, sizeof *x), *y = calloc((size_t)8 * QWEN_VOCAB, sizeof *y);
    for (int i = 0; i < 8 * 3072; i++) x[i] = (float)((i * 37) % 101) / 101.0f - 0.5f;
    decode_job j = {.kern = k, .mats = mats, .n_mats = n, .x = x, .y = y};
    printf("decode (Qwen3-0.6B BF16 weight products, %.3f GB per token; %d distinct layers "
           "timed, scaled to 28):\n",
           token_bytes / 1e9, o->layers);
    printf("  limit at %.1f GB/s: %.1f tokens/s\n", bw_gbs, bw_gbs * 1e9 / token_bytes);
    const int batches[] = {1, 8};
    for (int b = 0; b < 2; b++) {
        double s = decode_token_time(t, &j, batches[b], o->reps);
        double per_token = s / (bytes + head_bytes) * token_bytes; /* scale to 28 layers */
        printf("  M=%d: %.2f ms per step, %.1f GB/s, %.1f steps/s (%.0f tokens/s), %.0f%% of "
               "the limit\n",
               batches[b], per_token * 1e3, token_bytes / per_token / 1e9, 1.0 / per_token,
               batches[b] / per_token, 100.0 * token_bytes / per_token / (bw_gbs * 1e9));
    }
    for (int i = 0; i < n; i++) free(mats[i].w);
    free(mats);
    free(x);
    free(y);
}

/* ---------------------------------------------------------------- prefill (GEMM) */

typedef struct gemm_job {
    const eng_kernels *kern;
    const uint16_t *w; /* N x K BF16 */
    const float *x;    /* M x K */
    float *y;          /* M x N */
    int M, N, K;
} gemm_job;

static void gemm_part(int i, int n, void *arg) {
    gemm_job *j = arg;
    /* column ranges in multiples of 16 keep every thread's tiles whole */
    int blocks = (j->N + 15) / 16;
    int n0 = blocks * i / n * 16, n1 = blocks * (i + 1) / n * 16;
    if (n1 > j->N) n1 = j->N;
    j->kern->matmul(j->y, j->N, j->x, j->M, j->w, ENG_BF16, j->K, n0, n1);
}

static void bench_gemm_shape(team *t, const eng_kernels *k, const opts *o, int M, int N, int K) {
    size_t nw = (size_t)N * K;
    uint16_t *w = malloc(nw * 2);
    float *wf = malloc(nw * 4), *x = malloc((size_t)M * K * 4), *y = malloc((size_t)M * N * 4);
    fill_bf16(w, nw, 7);
    for (size_t i = 0; i < nw; i++) {
        uint32_t u = (uint32_t)w[i] << 16;
        memcpy(&wf[i], &u, 4);
    }
    for (size_t i = 0; i < (size_t)M * K; i++) x[i] = (float)(i % 97) / 97.0f - 0.5f;
    double flop = 2.0 * M * N * K, ours = 1e30, blas = 1e30;
    gemm_job j = {.kern = k, .w = w, .x = x, .y = y, .M = M, .N = N, .K = K};
    openblas_set_num_threads(t->n);
    for (int r = 0; r < o->reps + 1; r++) {
        double t0 = rs_now();
        team_run(t, gemm_part, &j);
        double t1 = rs_now();
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, N, K, 1.0f, x, K, wf, K, 0.0f, y,
                    N);
        double t2 = rs_now();
        if (r > 0 && t1 - t0 < ours) ours = t1 - t0;
        if (r > 0 && t2 - t1 < blas) blas = t2 - t1;
    }
    printf("  %d x %d x %d: %s %.1f GFLOPS, OpenBLAS sgemm %.1f GFLOPS (%d threads each)\n", M, N,
           K, k->name, flop / ours / 1e9, flop / blas / 1e9, t->n);
    free(w);
    free(wf);
    free(x);
    free(y);
}

/* ---------------------------------------------------------------- AVX512-BF16 limits */

/*
 * Two figures that set the AVX-512 table's prefill GEMM beside what the machine allows:
 *   - the product units' limit: a register-only loop of independent _mm512_dpbf16_ps chains
 *     (64 FLOPs each), per thread;
 *   - a GEMM free of batch invariance (bench only, never in the engine): weights packed once
 *     into panels of 16 columns x K/2 pairs, each output a single lane that accumulates every
 *     pair in k order, activation pairs broadcast: no horizontal sums, no per-tile rounding.
 *     Its summation order differs from the table's GEMV, so a row's bits would depend on M if
 *     the engine used it for prefill only; its speed is what invariance may cost.
 * Both need AVX512-BF16 and are skipped without it.
 */
#define BF16_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16")))

typedef struct peak_job {
    long iters; /* loop trips per thread */
    float sink[MAX_THREADS];
} peak_job;

BF16_TARGET static void peak_part(int i, int n, void *arg) {
    (void)n;
    peak_job *j = arg;
    __m512 a[24];
    for (int c = 0; c < 24; c++) a[c] = _mm512_set1_ps((float)c);
    __m512bh x = (__m512bh)_mm512_set1_epi32(0x3f803f80), w = x;
    for (long it = 0; it < j->iters; it++) {
#pragma GCC unroll 24
        for (int c = 0; c < 24; c++) a[c] = _mm512_dpbf16_ps(a[c], x, w);
        __asm__ volatile("" : "+v"(x), "+v"(w));
    }
    float s = 0;
    for (int c = 0; c < 24; c++) s += _mm512_reduce_add_ps(a[c]);
    j->sink[i] = s;
}

/* The same with F32 FMAs, 16 lanes (what an AVX-512F table without BF16 would multiply with,
 * BF16 weights widened) and 8 lanes (the AVX2 table's): 24 chains, 32 or 16 FLOPs each. */
BF16_TARGET static void peak_fma512_part(int i, int n, void *arg) {
    (void)n;
    peak_job *j = arg;
    __m512 a[24], f = _mm512_set1_ps(0.5f), g = _mm512_set1_ps(0.25f);
    for (int c = 0; c < 24; c++) a[c] = _mm512_set1_ps((float)c);
    for (long it = 0; it < j->iters; it++) {
#pragma GCC unroll 24
        for (int c = 0; c < 24; c++) a[c] = _mm512_fmadd_ps(f, g, a[c]);
        __asm__ volatile("" : "+v"(f), "+v"(g));
    }
    float s = 0;
    for (int c = 0; c < 24; c++) s += _mm512_reduce_add_ps(a[c]);
    j->sink[i] = s;
}

__attribute__((target("avx2,fma"))) static void peak_fma256_part(int i, int n, void *arg) {
    (void)n;
    peak_job *j = arg;
    __m256 a[12], f = _mm256_set1_ps(0.5f), g = _mm256_set1_ps(0.25f);
    for (int c = 0; c < 12; c++) a[c] = _mm256_set1_ps((float)c);
    for (long it = 0; it < j->iters; it++) {
#pragma GCC unroll 12
        for (int c = 0; c < 12; c++) a[c] = _mm256_fmadd_ps(f, g, a[c]);
        __asm__ volatile("" : "+x"(f), "+x"(g));
    }
    float s = 0, t[8];
    for (int c = 0; c < 12; c++) {
        _mm256_storeu_ps(t, a[c]);
        for (int k = 0; k < 8; k++) s += t[k];
    }
    j->sink[i] = s;
}

/* GFLOPS of a register-only loop (fn: chains x FLOPs per instruction per trip) on t's threads. */
static double bench_peak(team *t, const opts *o, void (*fn)(int, int, void *), double flops) {
    peak_job j = {.iters = 20 * 1000 * 1000};
    double best = 1e30;
    for (int r = 0; r < o->reps + 1; r++) {
        double t0 = rs_now();
        team_run(t, fn, &j);
        double dt = rs_now() - t0;
        if (dt < best) best = dt;
    }
    return (double)j.iters * flops * t->n / best / 1e9;
}

static double bench_dpbf16_peak(team *t, const opts *o) {
    return bench_peak(t, o, peak_part, 24 * 64);
}

typedef struct freegemm_job {
    const uint32_t *wp; /* packed weights: [N / 16][K / 2][16] BF16 pairs */
    const uint32_t *xb; /* activations rounded to BF16, row-major pairs: [M][K / 2] */
    float *y;           /* [M][N] */
    int M, N, K;
} freegemm_job;

/* One 8-row x 48-column tile of the invariance-free GEMM. */
BF16_TARGET static void freegemm_tile(const freegemm_job *j, int m0, int g) {
    int P = j->K / 2;
    __m512 acc[8][3];
    for (int i = 0; i < 8; i++)
        for (int v = 0; v < 3; v++) acc[i][v] = _mm512_setzero_ps();
    for (int p = 0; p < P; p++) {
        __m512i w[3];
        for (int v = 0; v < 3; v++)
            w[v] = _mm512_load_si512(j->wp + ((size_t)(g + v) * (size_t)P + (size_t)p) * 16);
#pragma GCC unroll 8
        for (int i = 0; i < 8; i++) {
            __m512i xv = _mm512_set1_epi32((int)j->xb[(size_t)(m0 + i) * (size_t)P + (size_t)p]);
#pragma GCC unroll 3
            for (int v = 0; v < 3; v++)
                acc[i][v] = _mm512_dpbf16_ps(acc[i][v], (__m512bh)xv, (__m512bh)w[v]);
        }
    }
    for (int i = 0; i < 8; i++)
        for (int v = 0; v < 3; v++)
            _mm512_storeu_ps(j->y + (size_t)(m0 + i) * (size_t)j->N + (size_t)(g + v) * 16,
                             acc[i][v]);
}

/* Thread i's share of the 16-column groups, in blocks of 3 groups kept in L2 over all rows. */
static void freegemm_part(int i, int n, void *arg) {
    const freegemm_job *j = arg;
    int groups = j->N / 16 / 3, g0 = groups * i / n, g1 = groups * (i + 1) / n;
    for (int g = g0; g < g1; g++)
        for (int m0 = 0; m0 + 8 <= j->M; m0 += 8) freegemm_tile(j, m0, 3 * g);
}

/* GFLOPS of the invariance-free GEMM, M x N x K (M % 8 == 0, N % 48 == 0, K even). */
static double bench_freegemm(team *t, const opts *o, int M, int N, int K) {
    freegemm_job j = {.M = M, .N = N, .K = K};
    uint32_t *wp = aligned_alloc(64, (size_t)N * (size_t)K * 2);
    uint32_t *xb = aligned_alloc(64, (size_t)M * (size_t)K * 2);
    float *y = aligned_alloc(64, (size_t)M * (size_t)N * 4);
    if (!wp || !xb || !y) return 0;
    for (size_t i = 0; i < (size_t)N * (size_t)K / 2; i++) wp[i] = 0x3f803f80u + (uint32_t)(i % 13);
    for (size_t i = 0; i < (size_t)M * (size_t)K / 2; i++) xb[i] = 0x3f003f00u + (uint32_t)(i % 7);
    j.wp = wp;
    j.xb = xb;
    j.y = y;
    double best = 1e30;
    for (int r = 0; r < o->reps + 1; r++) {
        double t0 = rs_now();
        team_run(t, freegemm_part, &j);
        double dt = rs_now() - t0;
        if (r > 0 && dt < best) best = dt;
    }
    free(wp);
    free(xb);
    free(y);
    return 2.0 * M * N * K / best / 1e9;
}

static void bench_bf16_limits(team *one, team *all, const opts *o) {
    if (!__builtin_cpu_supports("avx512bf16")) {
        printf("AVX512-BF16 limits: skipped (this CPU has no AVX512-BF16)\n");
        return;
    }
    printf("AVX512-BF16 limits:\n");
    printf("  dpbf16 register-only loop: %.1f GFLOPS (1 thread), %.1f GFLOPS (%d threads)\n",
           bench_dpbf16_peak(one, o), bench_dpbf16_peak(all, o), all->n);
    /* what decides an AVX-512F table without BF16 (Skylake-SP to Ice Lake): its products would
     * be 16-lane FMAs on widened BF16 against the AVX2 table's 8-lane ones */
    printf("  F32 FMA register-only loop, 1 thread: 16 lanes %.1f GFLOPS, 8 lanes %.1f GFLOPS\n",
           bench_peak(one, o, peak_fma512_part, 24 * 32),
           bench_peak(one, o, peak_fma256_part, 12 * 16));
    printf("  invariance-free GEMM 512 x 3072 x 1024 (packed panels, no horizontal sums): %.1f "
           "GFLOPS (1 thread), %.1f GFLOPS (%d threads)\n",
           bench_freegemm(one, o, 512, 3072, 1024), bench_freegemm(all, o, 512, 3072, 1024),
           all->n);
}

/* ---------------------------------------------------------------- attention */

/* Microseconds per (query, head) attending over n_pos positions of BF16 KV, head_dim 128. */
static double attend_us(const eng_kernels *k, kv_pool *p, const int32_t *blocks, int n_pos,
                        int reps) {
    float q[128], out[128];
    for (int i = 0; i < 128; i++) q[i] = (float)((i * 13) % 29) / 29.0f - 0.5f;
    int calls = 2 * 1024 * 1024 / n_pos; /* about the same work for every n_pos */
    double best = 1e30;
    for (int r = 0; r < reps + 1; r++) {
        double t0 = rs_now();
        for (int c = 0; c < calls; c++) k->attend(out, q, p, blocks, 0, c % 8, n_pos, 0.088f);
        double dt = (rs_now() - t0) / calls;
        if (r > 0 && dt < best) best = dt;
    }
    return best * 1e6;
}

/* A 512-token prefill's attention for one (layer, head), rows n_pos = 1..512, scaled to 16
 * heads x 28 layers: each row alone through the table, and rows sharing block walks. */
static void bench_prefill_attend(const eng_kernels *k, const kv_pool *p, const int32_t *blocks,
                                 const opts *o) {
    enum { ROWS = 512 };
    float *q = malloc(sizeof *q * ROWS * 128), *out = malloc(sizeof *out * ROWS * 128);
    int *n_pos = malloc(sizeof *n_pos * ROWS);
    for (int i = 0; i < ROWS * 128; i++) q[i] = (float)((i * 13) % 29) / 29.0f - 0.5f;
    eng_att_row rows[ROWS];
    for (int r = 0; r < ROWS; r++) {
        n_pos[r] = r + 1;
        rows[r] = (eng_att_row){out + r * 128, q + r * 128, blocks, n_pos[r]};
    }
    double alone = 1e30, shared = 1e30, scale = 16.0 * QWEN_LAYERS;
    for (int rep = 0; rep < o->reps + 1; rep++) {
        double t0 = rs_now();
        for (int r = 0; r < ROWS; r++)
            k->attend(out + r * 128, q + r * 128, p, blocks, 0, rep % 8, n_pos[r], 0.088f);
        double t1 = rs_now();
        if (k->attend_rows) k->attend_rows(rows, ROWS, p, 0, rep % 8, 0.088f);
        double t2 = rs_now();
        if (rep > 0 && t1 - t0 < alone) alone = t1 - t0;
        if (rep > 0 && t2 - t1 < shared) shared = t2 - t1;
    }
    printf("  512-token prefill attention (16 heads x 28 layers, one thread): row by row %.2f s",
           alone * scale);
    if (k->attend_rows) printf(", rows per block walk (attend_rows) %.2f s", shared * scale);
    printf("\n");
    free(q);
    free(out);
    free(n_pos);
}

/* One thread: decode attention at a few context lengths, and what a 512-token prefill of
 * Qwen3-0.6B spends in attention when each query row attends alone. */
static void bench_attend(const eng_kernels *k, const opts *o) {
    kv_pool_config c = {
        .n_layers = 1, .n_kv_heads = 8, .head_dim = 128, .block_size = 16, .dtype = KV_BF16};
    enum { MAX_POS = 4096 };
    c.budget_bytes = kv_block_bytes(&c) * (MAX_POS / 16);
    kv_pool p;
    rs_err e = {0};
    if (kv_pool_init(&p, &c, &e)) {
        printf("attention: %s\n", e.msg);
        return;
    }
    uint16_t *m = (uint16_t *)p.mem;
    for (size_t i = 0; i < p.mem_bytes / 2; i++)
        m[i] = (uint16_t)(0x3c00u | ((i * 40503u) & 0x807fu));
    int32_t *blocks = malloc(sizeof *blocks * (MAX_POS / 16));
    for (int i = 0; i < MAX_POS / 16; i++) blocks[i] = (i * 37) % (MAX_POS / 16);
    printf("attention (one thread, BF16 KV, head_dim 128, 16-position blocks):\n");
    const int lens[] = {256, 1024, MAX_POS};
    for (int i = 0; i < 3; i++) {
        double us = attend_us(k, &p, blocks, lens[i], o->reps);
        printf("  n_pos=%d: %.1f us per query-head, %.1f GB/s of K/V\n", lens[i], us,
               lens[i] * 128.0 * 2 * 2 / us / 1e3);
    }
    bench_prefill_attend(k, &p, blocks, o);
    free(blocks);
    kv_pool_free(&p);
}

static int parse(opts *o, int argc, char **argv) {
    *o = (opts){.threads = 2, .reps = 3, .layers = QWEN_LAYERS};
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--quick")) {
            o->reps = 1;
            o->layers = 4;
        } else if (!strcmp(argv[i], "--threads") && i + 1 < argc) {
            o->threads = atoi(argv[++i]);
        } else if (!strcmp(argv[i], "--reps") && i + 1 < argc) {
            o->reps = atoi(argv[++i]);
        } else {
            return -1;
        }
    }
    return o->threads >= 1 && o->threads <= MAX_THREADS && o->reps >= 1 ? 0 : -1;
}

int main(int argc, char **argv) {
    opts o;
    if (parse(&o, argc, argv)) {
        fprintf(stderr, "usage: %s [--threads T (1..%d, default 2)] [--reps R] [--quick]\n",
                argv[0], MAX_THREADS);
        return 2;
    }
    const eng_kernels *k;
    rs_err e = {0};
    if (eng_kernels_select(&k, &e)) {
        fprintf(stderr, "bench_kernels: %s\n", e.msg);
        return 1;
    }
    printf("kernel table: %s; threads: %d; repetitions: %d (best reported)\n", k->name, o.threads,
           o.reps);
    team one, all;
    if (team_init(&one, 1) || team_init(&all, o.threads)) {
        fprintf(stderr, "bench_kernels: cannot start threads\n");
        return 1;
    }
    const char *w1, *wn;
    double bw1 = bench_stream(&one, &o, &w1), bw = bench_stream(&all, &o, &wn);
    printf("streaming read (best of %d loops): %.1f GB/s (1 thread, %s), %.1f GB/s (%d threads, "
           "%s)\n",
           STREAM_VARIANTS, bw1, w1, bw, o.threads, wn);
    bench_decode(&all, k, &o, bw);
    printf("prefill GEMM (BF16 weights):\n");
    bench_gemm_shape(&one, k, &o, 512, 3072, 1024);
    bench_gemm_shape(&all, k, &o, 512, 3072, 1024);
    bench_gemm_shape(&all, k, &o, 512, 1024, 3072);
    bench_bf16_limits(&one, &all, &o);
    bench_attend(k, &o);
    team_free(&one);
    team_free(&all);
    return 0;
}
