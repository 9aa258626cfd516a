/* generate.c — `radixserve generate` (engine room's CLI; not built yet). */
#include <stdio.h>

#include "cli/cli.h"

int cli_generate(int argc, char **argv) {
    (void)argc, (void)argv;
    fprintf(stderr, "radixserve generate: not available in this build yet\n");
    return 1;
}
