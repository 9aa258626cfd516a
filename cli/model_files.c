/*
 * model_files.c — what a subcommand's --model names: a Hugging Face directory (tokenizer.json,
 * tokenizer_config.json, ...) or a GGUF file, whose metadata holds the tokenizer and the chat
 * template. The one place the CLIs tell the two apart (the engine tells them apart itself).
 */
#include <cjson/cJSON.h>

#include "cli/cli.h"
#include "engine/engine.h"

int cli_load_tokenizer(tok_tokenizer **out, const char *model, rs_err *e) {
    if (!eng_is_gguf(model)) return tok_load(out, model, e);
    cJSON *meta;
    int rc = eng_gguf_meta_json(model, &meta, e);
    if (rc) return rc;
    rc = tok_load_gguf(out, meta, model, e);
    cJSON_Delete(meta);
    return rc;
}

int cli_load_template(chat_tpl *t, const char *model, rs_err *e) {
    if (!eng_is_gguf(model)) return chat_tpl_load(t, model, e);
    tok_tokenizer *tok;
    int rc = cli_load_tokenizer(&tok, model, e);
    if (rc) return rc;
    rc = chat_tpl_init(t, tok_get_config(tok), e);
    tok_free(tok);
    return rc;
}
