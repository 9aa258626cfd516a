/*
 * profile.h — where a forward pass's time goes, phase by phase: compiled only into
 * bench_engine_profile (-DENG_PROFILE, see the Makefile); in every other build the marks below
 * are empty and cost nothing. Internal to the engine room and its benchmark.
 *
 * Each mark charges the calling (scheduler) thread's wall time since the previous mark to a
 * phase, so a phase that runs on the pool includes the wait for the slowest worker; the sum of
 * the phases is the whole pass. The accumulator is one global of the profiling build (a
 * benchmark runs one forward pass at a time; the serving binary never has it).
 */
#ifndef RADIXSERVE_ENGINE_PROFILE_H
#define RADIXSERVE_ENGINE_PROFILE_H

typedef enum eng_phase {
    ENG_PH_EMBED,   /* embedding rows, rotary factors, attention item list */
    ENG_PH_NORM,    /* residual adds and RMSNorms between blocks */
    ENG_PH_QKV,     /* q/k/v projections (one pool job) */
    ENG_PH_ROPE,    /* biases, per-head q/k norms, RoPE, new K/V rounded into the pages */
    ENG_PH_ATTEND,  /* attention over the pages (one pool job) */
    ENG_PH_O,       /* o_proj */
    ENG_PH_GATE_UP, /* gate and up projections (one pool job) */
    ENG_PH_SWIGLU,  /* SiLU(gate) * up */
    ENG_PH_DOWN,    /* down_proj */
    ENG_PH_LM_HEAD, /* final norm, LM head, logits copied out */
    ENG_PH_N
} eng_phase;

#ifdef ENG_PROFILE
#include <time.h>

typedef struct eng_profile {
    double sec[ENG_PH_N]; /* seconds charged to each phase */
    double last;          /* time of the previous mark */
} eng_profile;

extern eng_profile eng_prof;

static inline double eng_prof_now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}
#define ENG_PROF_START() (eng_prof.last = eng_prof_now())
#define ENG_PROF_MARK(ph)                                                                          \
    do {                                                                                           \
        double eng_prof_t = eng_prof_now();                                                        \
        eng_prof.sec[ph] += eng_prof_t - eng_prof.last;                                            \
        eng_prof.last = eng_prof_t;                                                                \
    } while (0)
#else
#define ENG_PROF_START()  ((void)0)
#define ENG_PROF_MARK(ph) ((void)0)
#endif

#endif
