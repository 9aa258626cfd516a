/*
 * test_server_limits.c — connection limits (issue 22): one client holding connections (half
 * headers, idle keep-alive, a byte-at-a-time trickle) cannot keep another from an answer within
 * 2 s; the per-client limit, the reserve (/health answered, other routes a fast 503 +
 * Retry-After), the idle timeout and the request deadline each close what they should, when
 * they should. Raw sockets on loopback only: "clients" are distinct source addresses 127.0.0.x
 * (Linux routes all of 127/8 to lo). Every wait is bounded; the server is stopped at the end.
 *
 * The server has no model here (srv_set_ready with an empty backend): /health and /v1/models
 * need none.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "sched/sched.h"
#include "server/server.h"
#include "tests/tap.h"

#define MAX_CONNS   8
#define RESERVE     4
#define PER_CLIENT  6
#define IDLE_S      2
#define REQUEST_S   3
#define ANSWER_S    2.0 /* what a fresh client may wait at most */
#define MAX_HOLDERS 32

static int g_port;

/* A TCP connection from 127.0.0.<host> to the server, or -1. */
static int dial(int host) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET};
    char ip[32];
    snprintf(ip, sizeof ip, "127.0.0.%d", host);
    inet_pton(AF_INET, ip, &a.sin_addr);
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a)) goto fail;
    a.sin_port = htons((uint16_t)g_port);
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    if (connect(fd, (struct sockaddr *)&a, sizeof a)) goto fail;
    return fd;
fail:
    if (fd >= 0) close(fd);
    return -1;
}

static int send_all(int fd, const char *s) {
    size_t n = strlen(s);
    while (n) {
        ssize_t w = send(fd, s, n, MSG_NOSIGNAL);
        if (w <= 0) return -1;
        s += w, n -= (size_t)w;
    }
    return 0;
}

/* 1: the server closed (or reset) fd, 0: still open, waiting up to ms for it to happen. Data
 * the server sends meanwhile is read and dropped. */
static int closed_within(int fd, int ms) {
    char buf[4096];
    double t_end = rs_now() + ms / 1000.0;
    for (;;) {
        int left = (int)((t_end - rs_now()) * 1000);
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, left > 0 ? left : 0) <= 0) return 0;
        ssize_t r = recv(fd, buf, sizeof buf, MSG_DONTWAIT);
        if (r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR)) return 1;
    }
}

typedef struct answer {
    int status;      /* 0: no answer */
    double secs;     /* connect to complete answer */
    char head[1024]; /* status line and headers */
    int has_close;   /* Connection: close */
    int has_retry;   /* Retry-After */
} answer;

/* Read one response with a Content-Length from fd within ms. */
static void read_answer(int fd, answer *a, int ms) {
    char buf[8192];
    size_t n = 0;
    double t_end = rs_now() + ms / 1000.0;
    while (n < sizeof buf - 1) {
        int left = (int)((t_end - rs_now()) * 1000);
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (left <= 0 || poll(&p, 1, left) <= 0) break;
        ssize_t r = recv(fd, buf + n, sizeof buf - 1 - n, 0);
        if (r <= 0) break;
        n += (size_t)r;
        buf[n] = 0;
        char *end = strstr(buf, "\r\n\r\n");
        char *cl = strcasestr(buf, "Content-Length:");
        if (end && cl && cl < end && (size_t)(end + 4 - buf) + (size_t)atol(cl + 15) <= n) {
            snprintf(a->head, sizeof a->head, "%.*s", (int)(end - buf), buf);
            sscanf(buf, "HTTP/1.%*d %d", &a->status);
            a->has_close = strcasestr(a->head, "Connection: close") != NULL;
            a->has_retry = strcasestr(a->head, "Retry-After:") != NULL;
            return;
        }
    }
}

/* A fresh client at 127.0.0.<host> asks GET path on a new connection. */
static void ask(int host, const char *path, answer *a) {
    char req[256];
    memset(a, 0, sizeof *a);
    double t0 = rs_now();
    int fd = dial(host);
    snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: x\r\n\r\n", path);
    if (fd >= 0 && !send_all(fd, req)) read_answer(fd, a, 3000);
    a->secs = rs_now() - t0;
    if (fd >= 0) close(fd);
}

/* Open n connections from one address, each sending `prefix`; returns how many the server
 * kept (the others were closed at once), fds in fds[0..kept). */
static int hold(int host, int n, const char *prefix, int *fds) {
    int kept = 0;
    for (int i = 0; i < n; i++) {
        int fd = dial(host);
        if (fd < 0) continue;
        if (send_all(fd, prefix) || closed_within(fd, 150)) {
            close(fd);
            continue;
        }
        fds[kept++] = fd;
    }
    return kept;
}

static void drop(int *fds, int n) {
    for (int i = 0; i < n; i++) close(fds[i]);
}

static const char *HALF = "GET /v1/models HTTP/1.1\r\nHost: x\r\nX-Slow: "; /* never ends */

static void test_per_client(void) {
    int fds[MAX_HOLDERS];
    answer a;
    int kept = hold(1, 20, HALF, fds);
    TAP_OK(kept == PER_CLIENT, "one client gets %d connections of the 20 it opens (kept %d)",
           PER_CLIENT, kept);
    ask(2, "/v1/models", &a);
    TAP_OK(a.status == 200 && a.secs < ANSWER_S,
           "another client is answered while the first holds its limit (%d in %.2f s)", a.status,
           a.secs);
    double t0 = rs_now();
    int all = 1;
    for (int i = 0; i < kept; i++) all &= closed_within(fds[i], (IDLE_S + 2) * 1000);
    double took = rs_now() - t0;
    TAP_OK(all && took < IDLE_S + 2,
           "the half-header connections are closed by the %d s idle "
           "timeout (all closed after %.2f s)",
           IDLE_S, took);
    drop(fds, kept);
}

static void test_reserve(void) {
    int fds[MAX_HOLDERS];
    answer a;
    int kept = hold(3, PER_CLIENT, HALF, fds);
    kept += hold(4, MAX_CONNS - PER_CLIENT, HALF, fds + kept);
    TAP_OK(kept == MAX_CONNS, "two clients hold all %d connections (%d)", MAX_CONNS, kept);
    ask(5, "/health", &a);
    TAP_OK(a.status == 200 && a.secs < ANSWER_S && a.has_close,
           "at the limit, /health is answered from the reserve and closed (%d in %.2f s)", a.status,
           a.secs);
    ask(5, "/v1/models", &a);
    TAP_OK(a.status == 503 && a.has_retry && a.secs < ANSWER_S,
           "at the limit, another route is a fast 503 with Retry-After (%d in %.2f s)", a.status,
           a.secs);
    /* A reserve connection that sends nothing is closed after SRV_RESERVE_TIMEOUT_S. */
    int fd = dial(6);
    double t0 = rs_now();
    int gone = fd >= 0 && closed_within(fd, (SRV_RESERVE_TIMEOUT_S + 2) * 1000);
    TAP_OK(gone, "a silent reserve connection is closed after %.2f s (limit %d s)", rs_now() - t0,
           SRV_RESERVE_TIMEOUT_S);
    if (fd >= 0) close(fd);
    drop(fds, kept);
    for (int i = 0; i < 20; i++) { /* the server sees the closes */
        ask(5, "/v1/models", &a);
        if (a.status == 200) break;
        usleep(100 * 1000);
    }
    TAP_OK(a.status == 200, "below the limit again, /v1/models is 200 (%d)", a.status);
}

/* One byte every 300 ms keeps MHD's idle clock fresh; the request deadline still ends it. */
static void test_trickle(void) {
    int fd = dial(7);
    const char *req = "GET /v1/models HTTP/1.1\r\nHost: x\r\nX-Pad: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    double t0 = rs_now();
    int gone = 0;
    for (const char *p = req; *p && !gone && rs_now() - t0 < REQUEST_S + 3; p++) {
        char one[2] = {*p, 0};
        if (send_all(fd, one)) gone = 1;
        if (!gone) gone = closed_within(fd, 300);
    }
    double took = rs_now() - t0;
    TAP_OK(gone && took >= REQUEST_S - 0.5 && took < REQUEST_S + 1.5,
           "a trickled request is cut by the %d s request deadline (after %.2f s)", REQUEST_S,
           took);
    close(fd);
}

/* An answered keep-alive connection left idle is closed after the idle timeout; one that asks
 * again in time is answered. */
static void test_keepalive(void) {
    answer a = {0};
    int fd = dial(8);
    const char *req = "GET /health HTTP/1.1\r\nHost: x\r\n\r\n";
    send_all(fd, req);
    read_answer(fd, &a, 2000);
    int first = a.status;
    usleep((IDLE_S * 1000 - 700) * 1000);
    memset(&a, 0, sizeof a);
    send_all(fd, req);
    read_answer(fd, &a, 2000);
    TAP_OK(first == 200 && a.status == 200 && !a.has_close,
           "a keep-alive connection asking again within the idle timeout is answered (%d, %d)",
           first, a.status);
    double t0 = rs_now();
    int gone = closed_within(fd, (IDLE_S + 2) * 1000);
    double took = rs_now() - t0;
    TAP_OK(gone && took > IDLE_S - 0.5, "then left idle, it is closed after %.2f s (timeout %d s)",
           took, IDLE_S);
    close(fd);
}

static void test_config_checks(void) {
    srv_config c = {.host = "127.0.0.1", .idle_timeout_s = 1, .heartbeat_ms = 1000};
    srv *s;
    rs_err e = {0};
    int rc = srv_start(&s, &c, &e);
    TAP_OK(rc == RS_EINVAL && strstr(e.msg, "heartbeat"),
           "an idle timeout shorter than two heartbeats is refused (%s)", e.msg);
    if (!rc) srv_stop(s);
    srv_config d;
    srv_config_default(&d);
    TAP_OK(d.idle_timeout_s >= 5 && d.idle_timeout_s <= 15 && d.request_timeout_s > 0 &&
               d.max_conns > 0 && d.conn_reserve > 0 && d.max_conns_per_client > 0 &&
               (long)d.idle_timeout_s * 1000 >= 2L * d.heartbeat_ms,
           "defaults: idle %d s, request %d s, %d + %d connections, %d per client",
           d.idle_timeout_s, d.request_timeout_s, d.max_conns, d.conn_reserve,
           d.max_conns_per_client);
}

/* configs/default.json says what srv_config_default and sched_config_default say (the CLI starts
 * from them). */
static void test_default_json(void) {
    srv_config d;
    srv_config_default(&d);
    sched_config sd;
    sched_config_default(&sd);
    char path[1024], *text = NULL;
    size_t len;
    rs_err e;
    const char *root = getenv("RADIXSERVE_ROOT");
    snprintf(path, sizeof path, "%s/configs/default.json", root ? root : ".");
    cJSON *j = rs_read_file(path, &text, &len, &e) ? NULL : cJSON_Parse(text);
    free(text);
    struct {
        const char *key;
        long want;
    } keys[] = {{"idle-timeout", d.idle_timeout_s},
                {"request-timeout", d.request_timeout_s},
                {"max-connections", d.max_conns},
                {"connection-reserve", d.conn_reserve},
                {"max-connections-per-client", d.max_conns_per_client},
                {"max-body-mb", (long)(d.max_body_bytes >> 20)},
                {"default-max-tokens", d.default_max_tokens},
                {"kv-cache-mb", (long)(sd.kv_cache_bytes >> 20)},
                {"max-batch", sd.max_batch},
                {"max-queue", sd.max_queue},
                {"block-size", sd.block_size},
                {"token-budget", sd.token_budget},
                {"mixed-prefill", sd.mixed_prefill}};
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, keys[i].key);
        TAP_OK(cJSON_IsNumber(v) && (long)v->valuedouble == keys[i].want,
               "configs/default.json %s = the built-in default %ld", keys[i].key, keys[i].want);
    }
    cJSON_Delete(j);
}

int main(void) {
    srv_config c = {.host = "127.0.0.1",
                    .model_name = "fake-model",
                    .idle_timeout_s = IDLE_S,
                    .request_timeout_s = REQUEST_S,
                    .heartbeat_ms = 500,
                    .max_conns = MAX_CONNS,
                    .conn_reserve = RESERVE,
                    .max_conns_per_client = PER_CLIENT};
    srv *s;
    rs_err e = {0};
    if (!TAP_OK(srv_start(&s, &c, &e) == 0, "server starts (%s)", e.msg)) return tap_done();
    g_port = srv_port(s);
    srv_backend be = {0};
    srv_model m = {.ctx_size = 256, .vocab_size = 256};
    srv_set_ready(s, &be, &m);
    test_per_client();
    usleep(300 * 1000); /* the server has seen every close */
    test_reserve();
    test_trickle();
    test_keepalive();
    srv_shutdown(s);
    srv_stop(s);
    test_config_checks();
    test_default_json();
    return tap_done();
}
