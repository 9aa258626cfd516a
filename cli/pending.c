/* pending.c — subcommands whose rooms are not built yet answer with a clear message.
 * Each room's work replaces its entry here with its own cli/<name>.c. */
#include <stdio.h>

#include "cli/cli.h"

static int pending(const char *name) {
    fprintf(stderr, "radixserve %s: not available in this build yet\n", name);
    return 1;
}

int cli_generate(int argc, char **argv) { (void)argc, (void)argv; return pending("generate"); }
int cli_tokenize(int argc, char **argv) { (void)argc, (void)argv; return pending("tokenize"); }
int cli_detokenize(int argc, char **argv) { (void)argc, (void)argv; return pending("detokenize"); }
int cli_template(int argc, char **argv) { (void)argc, (void)argv; return pending("template"); }
int cli_serve(int argc, char **argv) { (void)argc, (void)argv; return pending("serve"); }
