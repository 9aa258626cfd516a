/* template.c — `radixserve template` (api room's chat template CLI; not built yet). */
#include <stdio.h>

#include "cli/cli.h"

int cli_template(int argc, char **argv) {
    (void)argc, (void)argv;
    fprintf(stderr, "radixserve template: not available in this build yet\n");
    return 1;
}
