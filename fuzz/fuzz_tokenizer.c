/*
 * fuzz_tokenizer.c — tokenizer encode and decode on arbitrary bytes, for both committed
 * tokenizers (byte 0 bit 0: models/qwen3-tokenizer, a byte-level BPE; else models/stories260K, a
 * SentencePiece-style one). Bit 1 clear: encode the rest (invalid UTF-8 must be RS_EINVAL, valid
 * text must encode, and its ids must decode). Set: the rest as little-endian 16-bit ids (taken
 * modulo the vocabulary) decoded at once and streamed one id at a time: both valid UTF-8,
 * the streamed pieces adding up to the whole decode.
 */
#include "api/api.h"
#include "fuzz/fuzz.h"
#include "tokenizer/tokenizer.h"

static tok_tokenizer *g_tok[2];
static unsigned char *g_nul[2]; /* per id: its text alone is empty (a NUL byte token) */

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc, (void)argv;
    static const char *dirs[2] = {"models/qwen3-tokenizer", "models/stories260K"};
    for (int i = 0; i < 2; i++) {
        char dir[1024];
        rs_err e;
        fuzz_path(dir, sizeof dir, dirs[i]);
        if (tok_load(&g_tok[i], dir, &e)) {
            fprintf(stderr, "fuzz_tokenizer: %s\n", e.msg);
            exit(1);
        }
        int v = tok_vocab_size(g_tok[i]);
        g_nul[i] = calloc((size_t)v, 1);
        for (int32_t id = 0; id < v; id++) {
            char *out = NULL;
            g_nul[i][id] = tok_decode(g_tok[i], &id, 1, 0, &out, &e) == 0 && !out[0];
            free(out);
        }
    }
    return 0;
}

/* Decoded at once and streamed: both valid UTF-8, and the pieces add up to the whole (compared
 * as C strings, so not when an id stands for a NUL byte). */
static void decode(const tok_tokenizer *t, const unsigned char *nul, const int32_t *ids, int n) {
    int has_nul = 0;
    for (int i = 0; i < n; i++) has_nul |= nul[ids[i]];
    char *whole = NULL, *piece = NULL;
    rs_err e;
    api_buf streamed = {0};
    int rc = tok_decode(t, ids, n, 0, &whole, &e);
    FUZZ_CHECK(rc == 0, "ids in range decode");
    FUZZ_CHECK(fuzz_utf8(whole), "decode is UTF-8");
    tok_stream st;
    tok_stream_init(&st, t, 0);
    for (int i = 0; i <= n; i++) {
        rc = i < n ? tok_stream_push(&st, ids[i], &piece, &e) : tok_stream_flush(&st, &piece, &e);
        FUZZ_CHECK(rc == 0 && piece, "a streamed id decodes");
        FUZZ_CHECK(fuzz_utf8(piece), "a streamed piece is UTF-8");
        FUZZ_CHECK(api_buf_puts(&streamed, piece) == 0, "append");
        free(piece);
    }
    FUZZ_CHECK(has_nul || !strcmp(api_buf_str(&streamed), whole),
               "the streamed pieces add up to the decode");
    tok_stream_free(&st);
    api_buf_free(&streamed);
    free(whole);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    const tok_tokenizer *t = g_tok[data[0] & 1];
    const unsigned char *nul = g_nul[data[0] & 1];
    const char *text = (const char *)data + 1;
    size_t len = size - 1;
    rs_err e;
    if (!(data[0] & 2)) {
        rs_ivec ids = {0};
        int valid = rs_utf8_check(text, len) == len && !memchr(text, 0, len);
        int rc = tok_encode(t, text, len, data[0] & 4 ? TOK_ADD_SPECIAL : 0, &ids, &e);
        if (!valid && memchr(text, 0, len) == NULL)
            FUZZ_CHECK(rc == RS_EINVAL, "invalid UTF-8 refused");
        if (valid) FUZZ_CHECK(rc == 0, "valid text encodes");
        if (!rc) decode(t, nul, ids.v, ids.n);
        rs_ivec_free(&ids);
        return 0;
    }
    int n = (int)(len / 2), vocab = tok_vocab_size(t);
    int32_t *ids = malloc(((size_t)n + 1) * sizeof *ids);
    if (!ids) return 0;
    for (int i = 0; i < n; i++)
        ids[i] = (int32_t)((data[1 + 2 * i] | data[2 + 2 * i] << 8) % vocab);
    decode(t, nul, ids, n);
    free(ids);
    return 0;
}
