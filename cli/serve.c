/* serve.c — `radixserve serve` (server room's CLI; not built yet). */
#include <stdio.h>

#include "cli/cli.h"

int cli_serve(int argc, char **argv) {
    (void)argc, (void)argv;
    fprintf(stderr, "radixserve serve: not available in this build yet\n");
    return 1;
}
