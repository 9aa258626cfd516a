/*
 * cli.h — the subcommands of bin/radixserve. Each takes the arguments after its name and returns
 * the process exit status; main.c only dispatches. A subcommand prints its own usage on bad
 * arguments (exit 2) and a one-line error on failure (exit 1).
 */
#ifndef RADIXSERVE_CLI_H
#define RADIXSERVE_CLI_H

#include "engine/engine.h"
#include "chat/chat.h"
#include "tokenizer/tokenizer.h"

int cli_generate(int argc, char **argv);   /* engine: greedy/sampled generation from a prompt */
int cli_tokenize(int argc, char **argv);   /* tokenizer: JSON strings in, id arrays out */
int cli_detokenize(int argc, char **argv); /* tokenizer: id arrays in, JSON strings out */
int cli_template(int argc, char **argv);   /* api: chat requests in, rendered prompts out */
int cli_serve(int argc, char **argv);      /* server: the OpenAI-compatible HTTP server */

/* Load the model in dir and quantize it into w (ENG_WEIGHTS_SOURCE: as stored) on `threads`
 * threads, showing progress on stderr (load.c). On error *out is NULL. */
int cli_load_model(eng_model **out, const char *dir, eng_weights w, int threads, rs_err *e);
/* Shared by the subcommands (cli/model_files.c): --model is a Hugging Face directory or a GGUF
 * file. The tokenizer (and with it the tok_config the chat format is built from) from
 * tokenizer.json + tokenizer_config.json or from the GGUF metadata; the chat template alone
 * (`radixserve template`) from tokenizer_config.json or the GGUF's tokenizer.chat_template. */
int cli_load_tokenizer(tok_tokenizer **out, const char *model, rs_err *e);
int cli_load_template(chat_tpl *t, const char *model, rs_err *e);

#endif
