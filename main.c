/*
 * main.c — bin/radixserve: dispatch to a subcommand (cli/). The only place where a process-wide
 * decision (exit status) is taken.
 */
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"

static const struct {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *help;
} commands[] = {
    {"serve", cli_serve, "serve --model DIR [--port 8080] ...   OpenAI-compatible HTTP server"},
    {"generate", cli_generate, "generate --model DIR (--prompt TEXT | --prompt-ids 1,2,3) [-n N]"},
    {"tokenize", cli_tokenize, "tokenize --model DIR      JSON strings on stdin -> id arrays"},
    {"detokenize", cli_detokenize, "detokenize --model DIR    id arrays on stdin -> JSON strings"},
    {"template", cli_template, "template --model DIR      chat requests on stdin -> prompts"},
};

static void usage(FILE *f) {
    fprintf(f, "usage: radixserve COMMAND [options]\n\ncommands:\n");
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(f, "  %s\n", commands[i].help);
    fprintf(f, "\n'radixserve COMMAND --help' describes a command's options.\n");
}

int main(int argc, char **argv) {
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        usage(stdout);
        return 0;
    }
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (!strcmp(argv[1], commands[i].name)) return commands[i].run(argc - 1, argv + 1);
    fprintf(stderr, "radixserve: unknown command '%s'\n", argv[1]);
    usage(stderr);
    return 2;
}
