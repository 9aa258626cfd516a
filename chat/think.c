/*
 * think.c — the <think> splitter: Qwen3 output into reasoning_content + content, fed delta by
 * delta (a tag cut across deltas is held back until it is decided).
 */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include "chat/chat.h"

static const char OPEN[] = CHAT_THINK_OPEN, CLOSE[] = CHAT_THINK_CLOSE;

void chat_think_init(chat_think *t, int enabled, int inside) {
    memset(t, 0, sizeof *t);
    t->state = !enabled ? 2 : inside ? 1 : 0;
    t->trim_next = inside;
}

/* Append text to dst, dropping leading whitespace while trim_next is set. */
static int emit(chat_think *t, api_buf *dst, const char *s, size_t n) {
    if (t->trim_next) {
        while (n && isspace((unsigned char)*s)) s++, n--;
        if (!n) return 0;
        t->trim_next = 0;
    }
    return n ? api_buf_append(dst, s, n) : 0;
}

/* Length of the longest suffix of s[0,n) that is a proper prefix of tag. */
static size_t partial_tag(const char *s, size_t n, const char *tag) {
    size_t tl = strlen(tag);
    for (size_t k = tl - 1; k > 0; k--)
        if (k <= n && !memcmp(s + n - k, tag, k)) return k;
    return 0;
}

/* Process the held text as far as it can be decided. */
static int think_run(chat_think *t, api_buf *reasoning, api_buf *content, int final) {
    const char *s = api_buf_str(&t->held);
    size_t n = t->held.n, done = 0;
    int rc = 0;
    while (done < n && !rc) {
        const char *p = s + done;
        size_t left = n - done;
        if (t->state == 0) {
            /* Before anything: the answer opens with <think> (after whitespace) or not at all. */
            size_t ws = 0;
            while (ws < left && isspace((unsigned char)p[ws])) ws++;
            size_t rest = left - ws, cmp = rest < sizeof OPEN - 1 ? rest : sizeof OPEN - 1;
            if (!final && memcmp(p + ws, OPEN, cmp) == 0 && rest < sizeof OPEN - 1) break;
            if (rest >= sizeof OPEN - 1 && !memcmp(p + ws, OPEN, sizeof OPEN - 1)) {
                t->state = 1, t->trim_next = 1;
                done += ws + sizeof OPEN - 1;
            } else {
                t->state = 2;
            }
        } else if (t->state == 1) {
            const char *close = memmem(p, left, CLOSE, sizeof CLOSE - 1);
            if (close) {
                rc = emit(t, reasoning, p, (size_t)(close - p));
                t->state = 2, t->trim_next = 1;
                done += (size_t)(close - p) + sizeof CLOSE - 1;
            } else {
                size_t keep = final ? 0 : partial_tag(p, left, CLOSE);
                rc = emit(t, reasoning, p, left - keep);
                done += left - keep;
                if (keep) break;
            }
        } else {
            rc = emit(t, content, p, left);
            done = n;
        }
    }
    if (!rc && done) {
        memmove(t->held.s, t->held.s + done, n - done + 1);
        t->held.n = n - done;
    }
    return rc;
}

int chat_think_feed(chat_think *t, const char *delta, api_buf *reasoning, api_buf *content) {
    if (t->state == 2 && !t->held.n) return emit(t, content, delta, strlen(delta));
    if (api_buf_puts(&t->held, delta)) return RS_ENOMEM;
    return think_run(t, reasoning, content, 0);
}

int chat_think_flush(chat_think *t, api_buf *reasoning, api_buf *content) {
    return t->held.n ? think_run(t, reasoning, content, 1) : 0;
}

void chat_think_free(chat_think *t) {
    api_buf_free(&t->held);
}
