/*
 * kernels.c — picks the kernel table at run time.
 *
 * Selection is recomputed on every call (a getenv and a few cpuid reads) instead of being cached
 * in a global: the process has no mutable state to initialise, and a test can force each table
 * in turn with setenv.
 */
#include <stdlib.h>
#include <string.h>

#include "engine/kern_x86.h"

/* XCR0: which register states the OS saves on context switch. A CPU can advertise AVX-512 while
 * the OS (or a hypervisor) leaves ZMM state unsaved; then the instructions fault. */
static unsigned long long os_xcr0(void) {
    unsigned int eax, ebx, ecx, edx, lo, hi;
    __asm__ volatile("cpuid" : "=a"(eax), "=b"(ebx), "=c"(ecx), "=d"(edx) : "a"(1), "c"(0));
    if (!(ecx & (1u << 27))) return 0; /* OSXSAVE off: xgetbv would fault */
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return ((unsigned long long)hi << 32) | lo;
}

/* CPUID.1:ECX bit 29 (clang 14's __builtin_cpu_supports has no "f16c"). */
static int cpu_has_f16c(void) {
    unsigned int eax, ebx, ecx, edx;
    __asm__ volatile("cpuid" : "=a"(eax), "=b"(ebx), "=c"(ecx), "=d"(edx) : "a"(1), "c"(0));
    return (ecx >> 29) & 1;
}

static int cpu_has_avx2(void) {
    __builtin_cpu_init();
    const unsigned long long ymm_state = 0x6; /* SSE + AVX (upper YMM halves) */
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && cpu_has_f16c() &&
           (os_xcr0() & ymm_state) == ymm_state;
}

static int cpu_has_avx512(void) {
    const unsigned long long zmm_state = 0xe6; /* SSE, AVX, opmask, ZMM0-15 upper, ZMM16-31 */
    return cpu_has_avx2() && __builtin_cpu_supports("avx512f") &&
           __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
           __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vnni") &&
           (os_xcr0() & zmm_state) == zmm_state;
}

static int cpu_has_avx512bf16(void) {
    return cpu_has_avx512() && __builtin_cpu_supports("avx512bf16");
}

/* CPUID leaf 0's vendor string is "AuthenticAMD". */
static int cpu_is_amd(void) {
    unsigned int eax, ebx, ecx, edx;
    __asm__ volatile("cpuid" : "=a"(eax), "=b"(ebx), "=c"(ecx), "=d"(edx) : "a"(0), "c"(0));
    return ebx == 0x68747541u && edx == 0x69746e65u && ecx == 0x444d4163u;
}

/* VDPBF16PS runs twice the FLOPs of 16-lane FMAs on Zen 4 and half of them on the Xeon measured
 * (kern_avx512bf16.c's header): AMD CPUs get the avx512bf16 table unless RADIXSERVE_ISA says
 * otherwise; others run it only when forced. A fixed rule, not a start-up timing, so the same
 * machine always computes the same numbers. */
static int prefer_avx512bf16(void) {
    return cpu_has_avx512bf16() && cpu_is_amd();
}

/* One known table: its name, whether this CPU runs it, whether automatic selection takes it,
 * and the table itself. */
typedef struct isa_entry {
    const char *name;         /* the RADIXSERVE_ISA spelling */
    int (*supported)(void);   /* NULL: runs on any x86-64 */
    int (*preferred)(void);   /* NULL: taken whenever supported */
    const eng_kernels *table; /* the table */
} isa_entry;

enum { ISA_N = 4 };

/* Best first: automatic selection takes the first supported and preferred entry. */
static int isa_entries(isa_entry out[ISA_N]) {
    out[0] =
        (isa_entry){"avx512bf16", cpu_has_avx512bf16, prefer_avx512bf16, &eng_kernels_avx512bf16};
    out[1] = (isa_entry){"avx512", cpu_has_avx512, NULL, &eng_kernels_avx512};
    out[2] = (isa_entry){"avx2", cpu_has_avx2, NULL, &eng_kernels_avx2};
    out[3] = (isa_entry){"portable", NULL, NULL, &eng_kernels_portable};
    return ISA_N;
}

static int entry_usable(const isa_entry *x) {
    return !x->supported || x->supported();
}

int eng_kernels_select(const eng_kernels **out, rs_err *e) {
    isa_entry all[ISA_N];
    int n = isa_entries(all);
    const char *want = getenv("RADIXSERVE_ISA");
    *out = NULL;
    if (want && *want) {
        for (int i = 0; i < n; i++) {
            if (strcmp(want, all[i].name) != 0) continue;
            if (!entry_usable(&all[i]))
                return rs_errf(e, RS_EINVAL, "RADIXSERVE_ISA=%s: this CPU (or OS) lacks %s", want,
                               want);
            *out = all[i].table;
            return RS_OK;
        }
        return rs_errf(
            e, RS_EINVAL,
            "RADIXSERVE_ISA=%s: unknown kernel set (use portable, avx2, avx512 or avx512bf16)",
            want);
    }
    for (int i = 0; i < n; i++) {
        if (!entry_usable(&all[i]) || (all[i].preferred && !all[i].preferred())) continue;
        *out = all[i].table;
        return RS_OK;
    }
    return rs_errf(e, RS_EINVAL, "no kernel set runs on this CPU");
}

const char *eng_isa_name(void) {
    const eng_kernels *k;
    if (eng_kernels_select(&k, NULL) != RS_OK) return "invalid";
    return k->name;
}

/*
 * Blocking: weight rows are taken in column blocks small enough to stay in L2 while every
 * group of ENG_TILE_MR activation rows passes over them; inside a block, tiles of nr weight
 * rows. For M <= ENG_TILE_MR (decode) this streams each weight row exactly once. Tiles
 * prefetch the next tile's weight rows when M is below a few tiles (decode batches): the first
 * row group reads the block from memory and little compute hides it (M = 8 and 12 read ~25-30%
 * faster so on Zen 3); with prefill-sized M the block is in cache for all but the first group.
 */
typedef void (*tile_at_fn)(void *arg, int m0, int n, int mr, int nr);

/* The blocking itself, for either kind of tile: tile(arg, m0, n, mr, nr) computes rows
 * [m0, m0 + mr) x columns [n, n + nr); nr[mr] columns per tile, then single-column tails. */
static void tiles_run(const int nr_of[ENG_TILE_MR + 1], int l2_bytes, size_t row_bytes, int M,
                      int n0, int n1, tile_at_fn tile, void *arg) {
    int nc = (int)((size_t)l2_bytes / (row_bytes ? row_bytes : 1));
    if (nc < nr_of[ENG_TILE_MR]) nc = nr_of[ENG_TILE_MR];
    for (int c0 = n0; c0 < n1; c0 += nc) {
        int c1 = n1 - c0 < nc ? n1 : c0 + nc;
        for (int m0 = 0; m0 < M; m0 += ENG_TILE_MR) {
            int mr = M - m0 < ENG_TILE_MR ? M - m0 : ENG_TILE_MR;
            int nr = nr_of[mr], n = c0;
            for (; n + nr <= c1; n += nr) tile(arg, m0, n, mr, nr);
            for (; n < c1; n++) tile(arg, m0, n, mr, 1);
        }
    }
}

typedef struct float_tiles {
    const eng_tiling *t;
    eng_tile_args a;
    float *y;
    const float *x;
} float_tiles;

static void float_tile_at(void *arg, int m0, int n, int mr, int nr) {
    float_tiles *f = arg;
    f->a.y = f->y + (size_t)m0 * (size_t)f->a.ldy;
    f->a.x = f->x + (size_t)m0 * (size_t)f->a.K;
    f->t->tile(&f->a, n, mr, nr);
}

void eng_matmul_tiled(const eng_tiling *t, float *y, int ldy, const float *x, int M, const void *W,
                      eng_dtype wdt, int K, int n0, int n1) {
    float_tiles f = {
        t, {.ldy = ldy, .K = K, .W = W, .wdt = wdt, .stream = M < 4 * ENG_TILE_MR}, y, x};
    tiles_run(t->nr, t->l2_weight_bytes, eng_row_bytes(wdt, (size_t)K), M, n0, n1, float_tile_at,
              &f);
}

typedef struct quant_tiles {
    const eng_qtiling *t;
    eng_qtile_args a;
    float *y;
    eng_dtype wdt;
} quant_tiles;

static void quant_tile_at(void *arg, int m0, int n, int mr, int nr) {
    quant_tiles *q = arg;
    q->a.y = q->y + (size_t)m0 * (size_t)q->a.ldy;
    q->a.m0 = m0;
    q->t->tile(&q->a, q->wdt, n, mr, nr);
}

/* The same blocking for quantized weights: the column block is sized by their row bytes. */
void eng_qmatmul_tiled(const eng_qtiling *t, float *y, int ldy, const eng_qact *x, int M,
                       const void *W, eng_dtype wdt, int n0, int n1) {
    size_t rb = eng_row_bytes(wdt, (size_t)x->K);
    quant_tiles q = {
        t, {.ldy = ldy, .x = x, .W = W, .rb = rb, .stream = M < 4 * ENG_TILE_MR}, y, wdt};
    tiles_run(t->nr, t->l2_weight_bytes, rb, M, n0, n1, quant_tile_at, &q);
}
