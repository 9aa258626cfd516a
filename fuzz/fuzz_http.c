/*
 * fuzz_http.c — the HTTP layer (server/) end to end: the input is sent as raw bytes on a fresh
 * loopback connection to an in-process server over a fake backend (bytes as token ids, every
 * request answered "hi" per choice at once), the write side is closed, and the answer read
 * until the server closes. A JSON answer's body must be valid UTF-8; the server must never
 * crash, leak or trip a sanitizer. MHD's own answers to malformed HTTP (HTML) are not checked.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "chat/chat.h"
#include "fuzz/fuzz.h"
#include "server/server.h"

struct sched_request {
    sched_event ev[2 * 16 + 1]; /* TOKEN + FINISH per choice, then DONE */
    int n, next;
};

static int fake_submit(void *ctx, const int32_t *prompt, int n_prompt, const sched_params *p,
                       sched_request **out, rs_err *e) {
    (void)ctx, (void)prompt;
    struct sched_request *r = calloc(1, sizeof *r);
    if (!r) return rs_errf(e, RS_ENOMEM, "out of memory");
    for (int c = 0; c < p->n && c < 16; c++) {
        r->ev[r->n++] = (sched_event){.type = SCHED_EV_TOKEN, .index = c, .text = strdup("hi")};
        r->ev[r->n++] = (sched_event){
            .type = SCHED_EV_FINISH, .index = c, .text = strdup(""), .finish_reason = "stop"};
    }
    r->ev[r->n++] = (sched_event){.type = SCHED_EV_DONE, .prompt_tokens = n_prompt};
    *out = r;
    return 0;
}

static int fake_next(sched_request *r, sched_event *ev, int timeout_ms) {
    (void)timeout_ms;
    if (r->next == r->n) return 0;
    *ev = r->ev[r->next];
    r->ev[r->next++].text = NULL; /* now the caller's */
    return 1;
}

static void fake_cancel(sched_request *r) {
    (void)r;
}

static void fake_event_free(sched_event *ev) {
    free(ev->text);
    ev->text = NULL;
}

static void fake_free(sched_request *r) {
    for (int i = 0; i < r->n; i++) free(r->ev[i].text);
    free(r);
}

static void fake_stats(void *ctx, sched_stats *st) {
    (void)ctx;
    memset(st, 0, sizeof *st);
    st->block_size = 16;
}

static int fake_encode(void *ctx, const char *text, size_t len, int flags, rs_ivec *out,
                       rs_err *e) {
    (void)ctx, (void)flags;
    for (size_t i = 0; i < len; i++)
        if (rs_ivec_push(out, (unsigned char)text[i])) return rs_errf(e, RS_ENOMEM, "oom");
    return 0;
}

/* Ids as lowercase letters (always valid UTF-8, like the real tokenizer's lossy decode). */
static int fake_decode(void *ctx, const int32_t *ids, int n, int skip, char **out, rs_err *e) {
    (void)ctx, (void)skip;
    if (!(*out = malloc((size_t)n + 1))) return rs_errf(e, RS_ENOMEM, "oom");
    for (int i = 0; i < n; i++) (*out)[i] = (char)('a' + ids[i] % 26);
    (*out)[n] = 0;
    return 0;
}

static srv *g_srv;
static chat_format g_fmt; /* plain rendering (no template) */
static int g_port;

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc, (void)argv;
    rs_err e;
    srv_config c = {.host = "127.0.0.1", .model_name = "fuzz-model", .max_body_bytes = 1 << 16};
    FUZZ_CHECK(srv_start(&g_srv, &c, &e) == 0, "server starts");
    tok_config tc = {0};
    FUZZ_CHECK(chat_format_init(&g_fmt, &tc, NULL, &e) == 0, "plain chat format");
    static srv_backend be = {.submit = fake_submit,
                             .next_event = fake_next,
                             .cancel = fake_cancel,
                             .request_free = fake_free,
                             .event_free = fake_event_free,
                             .get_stats = fake_stats,
                             .encode = fake_encode,
                             .decode = fake_decode};
    srv_model m = {.chat = &g_fmt, .ctx_size = 4096, .vocab_size = 256};
    m.defaults.temperature = 1, m.defaults.top_p = 1, m.defaults.repetition_penalty = 1;
    srv_set_ready(g_srv, &be, &m);
    g_port = srv_port(g_srv);
    return 0;
}

/* The body of a JSON answer (after the blank line) must be valid UTF-8. */
static void check_answer(char *buf, size_t n) {
    buf[n] = 0;
    char *end = strstr(buf, "\r\n\r\n");
    if (!end || !strcasestr(buf, "Content-Type: application/json")) return;
    const char *body = end + 4;
    size_t len = n - (size_t)(body - buf);
    FUZZ_CHECK(rs_utf8_check(body, len) == len, "a JSON answer is valid UTF-8");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)g_port)};
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    if (fd < 0) return 0;
    if (connect(fd, (struct sockaddr *)&a, sizeof a)) {
        close(fd);
        return 0;
    }
    size_t off = 0;
    while (off < size) {
        ssize_t w = send(fd, data + off, size - off, MSG_NOSIGNAL);
        if (w <= 0) break;
        off += (size_t)w;
    }
    shutdown(fd, SHUT_WR);
    static char buf[1 << 18];
    size_t n = 0;
    double t_end = rs_now() + 5;
    for (;;) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        int left = (int)((t_end - rs_now()) * 1000);
        if (left <= 0 || poll(&p, 1, left) <= 0) break;
        ssize_t r = recv(fd, buf + n, sizeof buf - 1 - n, 0);
        if (r <= 0) break;
        n += (size_t)r;
        if (n == sizeof buf - 1) break;
    }
    close(fd);
    check_answer(buf, n);
    return 0;
}
