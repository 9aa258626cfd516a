/*
 * template.c — a model's chat template: loading it from tokenizer_config.json, normalising
 * OpenAI content-part arrays, rendering a request (Jinja, or the plain fallback of template.h).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chat/jinja.h"
#include "chat/chat.h"

static char *dup_str(const char *s) {
    size_t n = strlen(s);
    char *p = malloc(n + 1);
    if (p) memcpy(p, s, n + 1);
    return p;
}

void chat_tpl_free(chat_tpl *t) {
    if (!t) return;
    chat_jinja_free(t->jinja);
    free(t->source);
    free(t->bos_token);
    free(t->eos_token);
    cJSON_Delete(t->special_tokens);
    memset(t, 0, sizeof *t);
}

bool chat_tpl_has_template(const chat_tpl *t) {
    return t->jinja != NULL;
}

int chat_tpl_init_string(chat_tpl *t, const char *source, const char *bos, const char *eos,
                         rs_err *e) {
    memset(t, 0, sizeof *t);
    t->bos_token = dup_str(bos ? bos : "");
    t->eos_token = dup_str(eos ? eos : "");
    t->special_tokens = cJSON_CreateObject();
    if (!t->bos_token || !t->eos_token || !t->special_tokens ||
        (source && !(t->source = dup_str(source)))) {
        chat_tpl_free(t);
        return rs_errf(e, RS_ENOMEM, "out of memory loading the chat template");
    }
    if (source) {
        int rc = chat_jinja_compile(source, strlen(source), &t->jinja, e);
        if (rc) {
            chat_tpl_free(t);
            return rc;
        }
    }
    return 0;
}

/* The special tokens the config sets, as transformers passes special_tokens_map to the
 * template (bos_token and eos_token live in their own fields). */
static int add_specials(chat_tpl *t, const tok_config *c) {
    for (int i = 0; i < TOK_N_NAMED; i++)
        if (i != TOK_BOS && i != TOK_EOS && c->named[i] &&
            !cJSON_AddStringToObject(t->special_tokens, tok_config_key(i), c->named[i]))
            return RS_ENOMEM;
    if (!c->n_extra) return 0;
    cJSON *extra = cJSON_AddArrayToObject(t->special_tokens, "additional_special_tokens");
    for (int i = 0; extra && i < c->n_extra; i++) {
        cJSON *s = cJSON_CreateString(c->extra[i]);
        if (!s) return RS_ENOMEM;
        cJSON_AddItemToArray(extra, s);
    }
    return extra ? 0 : RS_ENOMEM;
}

int chat_tpl_init(chat_tpl *t, const tok_config *c, rs_err *e) {
    int rc = chat_tpl_init_string(t, c->chat_template, c->named[TOK_BOS], c->named[TOK_EOS], e);
    if (rc && c->chat_template_path) {
        char msg[sizeof e->msg];
        snprintf(msg, sizeof msg, "%.200s: %.300s", c->chat_template_path, e ? e->msg : "");
        rs_errf(e, rc, "%s", msg);
    }
    if (!rc && add_specials(t, c)) {
        chat_tpl_free(t);
        rc = rs_errf(e, RS_ENOMEM, "out of memory loading the chat template");
    }
    return rc;
}

int chat_tpl_load(chat_tpl *t, const char *model_dir, rs_err *e) {
    tok_config c;
    memset(t, 0, sizeof *t);
    int rc = tok_config_load(&c, model_dir, e);
    if (!rc) rc = chat_tpl_init(t, &c, e);
    tok_config_free(&c);
    return rc;
}

/* ---------------- requests ---------------- */

static int check_request(const cJSON *req, rs_err *e) {
    if (!cJSON_IsObject(req))
        return rs_errf(e, RS_EINVAL, "the chat request must be a JSON object");
    const cJSON *msgs = cJSON_GetObjectItemCaseSensitive(req, "messages");
    if (!cJSON_IsArray(msgs) || !cJSON_GetArraySize(msgs))
        return rs_errf(e, RS_EINVAL, "'messages' must be a non-empty array");
    int idx = 0;
    for (const cJSON *m = msgs->child; m; m = m->next, idx++)
        if (!cJSON_IsObject(m)) return rs_errf(e, RS_EINVAL, "messages[%d] must be an object", idx);
    const cJSON *tools = cJSON_GetObjectItemCaseSensitive(req, "tools");
    if (tools && !cJSON_IsNull(tools) && !cJSON_IsArray(tools))
        return rs_errf(e, RS_EINVAL, "'tools' must be an array");
    const cJSON *agp = cJSON_GetObjectItemCaseSensitive(req, "add_generation_prompt");
    if (agp && !cJSON_IsBool(agp))
        return rs_errf(e, RS_EINVAL, "'add_generation_prompt' must be a boolean");
    const cJSON *kw = cJSON_GetObjectItemCaseSensitive(req, "chat_template_kwargs");
    if (kw && !cJSON_IsNull(kw) && !cJSON_IsObject(kw))
        return rs_errf(e, RS_EINVAL, "'chat_template_kwargs' must be an object");
    return 0;
}

static int render_plain(const chat_tpl *t, const cJSON *msgs, char **out, size_t *out_len,
                        rs_err *e) {
    size_t total = strlen(t->bos_token) + 1;
    const cJSON *m;
    cJSON_ArrayForEach(m, msgs) {
        const cJSON *c = cJSON_GetObjectItemCaseSensitive(m, "content");
        if (cJSON_IsString(c)) total += strlen(c->valuestring);
        total++;
    }
    char *s = malloc(total), *w = s;
    if (!s) return rs_errf(e, RS_ENOMEM, "out of memory rendering the prompt");
    w += sprintf(w, "%s", t->bos_token);
    bool first = true;
    cJSON_ArrayForEach(m, msgs) {
        const cJSON *c = cJSON_GetObjectItemCaseSensitive(m, "content");
        if (!first) *w++ = '\n';
        first = false;
        if (cJSON_IsString(c))
            w += sprintf(w, "%s", c->valuestring);
        else if (c && !cJSON_IsNull(c)) {
            free(s);
            return rs_errf(e, RS_EINVAL,
                           "message content must be a string (join OpenAI content "
                           "parts first: api_join_content)");
        }
    }
    *w = 0;
    *out = s;
    if (out_len) *out_len = (size_t)(w - s);
    return 0;
}

/* The template's variables: messages, tools, add_generation_prompt, special tokens, kwargs. */
static cJSON *build_vars(const chat_tpl *t, const cJSON *req, cJSON *msgs) {
    cJSON *vars = cJSON_Duplicate(t->special_tokens, true);
    if (!vars) return NULL;
    const cJSON *tools = cJSON_GetObjectItemCaseSensitive(req, "tools");
    const cJSON *agp = cJSON_GetObjectItemCaseSensitive(req, "add_generation_prompt");
    const cJSON *kw = cJSON_GetObjectItemCaseSensitive(req, "chat_template_kwargs");
    cJSON *tools_copy = tools ? cJSON_Duplicate(tools, true) : cJSON_CreateNull();
    /* as transformers: only the tokens the config names; tools and documents default to None */
    bool ok = (!*t->bos_token || cJSON_AddStringToObject(vars, "bos_token", t->bos_token)) &&
              (!*t->eos_token || cJSON_AddStringToObject(vars, "eos_token", t->eos_token)) &&
              cJSON_AddBoolToObject(vars, "add_generation_prompt", cJSON_IsTrue(agp)) &&
              cJSON_AddNullToObject(vars, "documents") && tools_copy;
    if (ok)
        cJSON_AddItemToObject(vars, "tools", tools_copy);
    else
        cJSON_Delete(tools_copy);
    if (ok) cJSON_AddItemReferenceToObject(vars, "messages", msgs);
    const cJSON *kwargs = cJSON_IsObject(kw) ? kw : NULL, *k;
    cJSON_ArrayForEach(k, kwargs) {
        cJSON *copy = cJSON_Duplicate(k, true);
        if (!ok || !copy) {
            cJSON_Delete(copy);
            ok = false;
            break;
        }
        if (cJSON_GetObjectItemCaseSensitive(vars, k->string))
            cJSON_ReplaceItemInObjectCaseSensitive(vars, k->string, copy);
        else
            cJSON_AddItemToObject(vars, k->string, copy);
    }
    if (!ok) {
        cJSON_Delete(vars);
        return NULL;
    }
    return vars;
}

int chat_tpl_render(const chat_tpl *t, const cJSON *req, char **out, size_t *out_len, rs_err *e) {
    *out = NULL;
    int rc = check_request(req, e);
    if (rc) return rc;
    /* the template only reads its variables: messages is referenced, not copied */
    cJSON *msgs = cJSON_GetObjectItemCaseSensitive(req, "messages");
    if (!t->jinja) return render_plain(t, msgs, out, out_len, e);
    cJSON *vars = build_vars(t, req, msgs);
    rc = vars ? chat_jinja_render(t->jinja, vars, out, out_len, e)
              : rs_errf(e, RS_ENOMEM, "out of memory rendering the prompt");
    cJSON_Delete(vars);
    return rc;
}
