/* tokenize.c — `radixserve tokenize` / `detokenize` (tokenizer room's CLI; not built yet). */
#include <stdio.h>

#include "cli/cli.h"

int cli_tokenize(int argc, char **argv) {
    (void)argc, (void)argv;
    fprintf(stderr, "radixserve tokenize: not available in this build yet\n");
    return 1;
}

int cli_detokenize(int argc, char **argv) {
    (void)argc, (void)argv;
    fprintf(stderr, "radixserve detokenize: not available in this build yet\n");
    return 1;
}
