/* test_sched_stop.c — the scheduler's stop-string matcher and per-request event queue, without a
 * model: stop strings split across pieces are never emitted, text that cannot start a stop
 * string is never held, and the event queue hands events across threads in order. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "sched/sched_int.h"
#include "tests/tap.h"

/* Feed pieces one by one; returns everything emitted (malloc'd) and whether a stop matched. */
static char *run(char *const *stop, int n_stop, const char *const *pieces, int n, int *stopped) {
    sched_stopper m;
    sched_stopper_init(&m, stop, n_stop);
    char *all = calloc(1024, 1);
    *stopped = 0;
    for (int i = 0; i <= n && !*stopped; i++) {
        char *emit = NULL;
        int rc = sched_stopper_feed(&m, i < n ? pieces[i] : "", i == n, &emit);
        if (rc == 1) *stopped = 1;
        strcat(all, emit);
        free(emit);
    }
    sched_stopper_free(&m);
    return all;
}

static void test_matcher(void) {
    char *stop1[] = {"END"};
    const char *p1[] = {"Hello E", "N", "D and more"};
    int st;
    char *out = run(stop1, 1, p1, 3, &st);
    TAP_OK(st && strcmp(out, "Hello ") == 0, "stop string split over three pieces: '%s'", out);
    free(out);

    const char *p2[] = {"Hello E", "ND"};
    out = run(stop1, 1, p2, 2, &st);
    TAP_OK(st && strcmp(out, "Hello ") == 0, "held 'E' is not emitted before the match: '%s'", out);
    free(out);

    const char *p3[] = {"Hello E", "x", "N"};
    out = run(stop1, 1, p3, 3, &st);
    TAP_OK(!st && strcmp(out, "Hello ExN") == 0, "a false start is emitted in the end: '%s'", out);
    free(out);

    char *stop2[] = {"abc", "bcd"};
    const char *p4[] = {"xab", "cd"};
    out = run(stop2, 2, p4, 2, &st);
    TAP_OK(st && strcmp(out, "x") == 0, "earliest of two overlapping stop strings wins: '%s'", out);
    free(out);

    char *stop3[] = {"\xc3\xa9t\xc3\xa9"}; /* "été" */
    const char *p5[] = {"un \xc3\xa9", "t", "\xc3\xa9!"};
    out = run(stop3, 1, p5, 3, &st);
    TAP_OK(st && strcmp(out, "un ") == 0, "multi-byte stop string across pieces: '%s'", out);
    free(out);

    /* What is emitted before the end: never a proper prefix of a stop string as tail. */
    sched_stopper m;
    sched_stopper_init(&m, stop1, 1);
    char *emit = NULL;
    sched_stopper_feed(&m, "abcEN", 0, &emit);
    TAP_OK(strcmp(emit, "abc") == 0 && m.len == 2, "holds exactly the possible start 'EN' ('%s')",
           emit);
    free(emit);
    sched_stopper_feed(&m, "xyz", 0, &emit);
    TAP_OK(strcmp(emit, "ENxyz") == 0 && m.len == 0, "releases it once it cannot match ('%s')",
           emit);
    free(emit);
    sched_stopper_free(&m);

    const char *p6[] = {"no stops here"};
    out = run(NULL, 0, p6, 1, &st);
    TAP_OK(!st && strcmp(out, "no stops here") == 0, "no stop strings: everything passes");
    free(out);
}

/* ---------------------------------------------------------------- event queue */

#define N_EVENTS 2000

static void *producer(void *arg) {
    sched_request *r = arg;
    for (int i = 0; i < N_EVENTS; i++) {
        sched_event ev = {.type = SCHED_EV_TOKEN, .token = i, .text = strdup("x")};
        sched_request_push(r, &ev);
    }
    sched_event done = {.type = SCHED_EV_DONE};
    sched_request_push(r, &done);
    sched_request_unref(r); /* the producer's (scheduler's) reference */
    return NULL;
}

static void test_queue(void) {
    sched_request *r = sched_request_new();
    sched_event ev;
    TAP_OK(sched_next_event(r, &ev, 0) == 0, "empty queue: no event without waiting");
    TAP_OK(sched_next_event(r, &ev, 20) == 0, "empty queue: time-out after 20 ms");
    pthread_t th;
    pthread_create(&th, NULL, producer, r);
    int in_order = 1, n = 0, done = 0;
    while (!done && sched_next_event(r, &ev, 5000) == 1) {
        if (ev.type == SCHED_EV_DONE)
            done = 1;
        else if (ev.token != n++)
            in_order = 0;
        sched_event_free(&ev);
    }
    pthread_join(th, NULL);
    TAP_OK(done && in_order && n == N_EVENTS, "%d events crossed threads in order (%d seen)",
           N_EVENTS, n);
    /* Events left unread are freed with the handle (ASan checks). */
    sched_event extra = {.type = SCHED_EV_TOKEN, .text = strdup("left over")};
    sched_request_push(r, &extra);
    sched_request_free(r); /* under ASan a leak of the unread event fails the run */
}

int main(void) {
    test_matcher();
    test_queue();
    return tap_done();
}
