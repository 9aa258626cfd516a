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

/* A special token as tokenizer_config writes it: "text" or {"content": "text", ...}. */
static const char *token_text(const cJSON *v) {
    if (cJSON_IsString(v)) return v->valuestring;
    if (cJSON_IsObject(v)) {
        const cJSON *c = cJSON_GetObjectItemCaseSensitive(v, "content");
        if (cJSON_IsString(c)) return c->valuestring;
    }
    return NULL;
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

/* chat_template: a string, or a list of {"name", "template"} where "default" is used. */
static int pick_template(const cJSON *ct, const char **src, rs_err *e) {
    *src = NULL;
    if (!ct || cJSON_IsNull(ct)) return 0;
    if (cJSON_IsString(ct)) {
        *src = ct->valuestring;
        return 0;
    }
    if (!cJSON_IsArray(ct))
        return rs_errf(e, RS_EINVAL,
                       "tokenizer_config.json: chat_template must be a string or "
                       "a list of {name, template}");
    const cJSON *item;
    cJSON_ArrayForEach(item, ct) {
        const cJSON *name = cJSON_GetObjectItemCaseSensitive(item, "name");
        const cJSON *tpl = cJSON_GetObjectItemCaseSensitive(item, "template");
        if (cJSON_IsString(name) && !strcmp(name->valuestring, "default") && cJSON_IsString(tpl)) {
            *src = tpl->valuestring;
            return 0;
        }
    }
    return rs_errf(e, RS_EINVAL,
                   "tokenizer_config.json: chat_template list has no \"default\" template");
}

int chat_tpl_init_config(chat_tpl *t, const cJSON *cfg, rs_err *e) {
    memset(t, 0, sizeof *t);
    if (!cJSON_IsObject(cfg))
        return rs_errf(e, RS_EINVAL, "tokenizer_config.json is not an object");
    const char *src;
    int rc = pick_template(cJSON_GetObjectItemCaseSensitive(cfg, "chat_template"), &src, e);
    if (rc) return rc;
    rc =
        chat_tpl_init_string(t, src, token_text(cJSON_GetObjectItemCaseSensitive(cfg, "bos_token")),
                             token_text(cJSON_GetObjectItemCaseSensitive(cfg, "eos_token")), e);
    if (rc) return rc;
    /* the other special tokens, as transformers passes special_tokens_map to the template */
    static const char *const names[] = {"unk_token", "sep_token",  "pad_token",
                                        "cls_token", "mask_token", NULL};
    for (int i = 0; names[i]; i++) {
        const char *s = token_text(cJSON_GetObjectItemCaseSensitive(cfg, names[i]));
        if (s && !cJSON_AddStringToObject(t->special_tokens, names[i], s)) {
            chat_tpl_free(t);
            return rs_errf(e, RS_ENOMEM, "out of memory loading the chat template");
        }
    }
    const cJSON *extra = cJSON_GetObjectItemCaseSensitive(cfg, "additional_special_tokens");
    if (cJSON_IsArray(extra)) {
        cJSON *copy = cJSON_Duplicate(extra, true);
        if (!copy) {
            chat_tpl_free(t);
            return rs_errf(e, RS_ENOMEM, "out of memory loading the chat template");
        }
        cJSON_AddItemToObject(t->special_tokens, "additional_special_tokens", copy);
    }
    return 0;
}

/* A chat_template.jinja beside the config wins over its chat_template, as in transformers
 * (newer Hugging Face repositories ship the template only there). 1 if it replaced it. */
static int override_from_jinja_file(cJSON *cfg, const char *model_dir, char *path, size_t n,
                                    rs_err *e) {
    char *text = NULL;
    size_t len = 0;
    rs_err ignore = {0};
    if (rs_path_join(path, n, model_dir, "chat_template.jinja", e)) return RS_EINVAL;
    if (rs_read_file(path, &text, &len, &ignore)) return 0; /* absent: keep the config's */
    cJSON *src = cJSON_CreateString(text);
    free(text);
    if (!src) return rs_errf(e, RS_ENOMEM, "out of memory reading %s", path);
    cJSON_DeleteItemFromObjectCaseSensitive(cfg, "chat_template");
    cJSON_AddItemToObject(cfg, "chat_template", src);
    return 1;
}

int chat_tpl_load(chat_tpl *t, const char *model_dir, rs_err *e) {
    char path[4096];
    char *text = NULL;
    size_t len = 0;
    memset(t, 0, sizeof *t);
    int rc = rs_path_join(path, sizeof path, model_dir, "tokenizer_config.json", e);
    if (rc || (rc = rs_read_file(path, &text, &len, e))) return rc;
    cJSON *cfg = cJSON_ParseWithLength(text, len);
    free(text);
    if (!cfg) return rs_errf(e, RS_EINVAL, "%s: not valid JSON", path);
    rc = override_from_jinja_file(cfg, model_dir, path, sizeof path, e);
    if (rc == 0) rs_path_join(path, sizeof path, model_dir, "tokenizer_config.json", NULL);
    rc = rc < 0 ? rc : chat_tpl_init_config(t, cfg, e);
    cJSON_Delete(cfg);
    if (rc && e) {
        char msg[sizeof e->msg];
        snprintf(msg, sizeof msg, "%.200s: %.300s", path, e->msg);
        rs_errf(e, rc, "%s", msg);
    }
    return rc;
}

/* ---------------- requests ---------------- */

int chat_tpl_normalize_messages(cJSON *messages, rs_err *e) {
    if (!cJSON_IsArray(messages)) return rs_errf(e, RS_EINVAL, "'messages' must be an array");
    int idx = 0;
    for (cJSON *m = messages->child; m; m = m->next, idx++) {
        cJSON *content = cJSON_GetObjectItemCaseSensitive(m, "content");
        if (!cJSON_IsArray(content)) continue;
        size_t total = 1;
        const cJSON *part;
        cJSON_ArrayForEach(part, content) {
            const cJSON *type = cJSON_GetObjectItemCaseSensitive(part, "type");
            const cJSON *text = cJSON_GetObjectItemCaseSensitive(part, "text");
            if (!cJSON_IsString(type) || strcmp(type->valuestring, "text"))
                return rs_errf(
                    e, RS_EINVAL,
                    "messages[%d].content: only parts of type \"text\" are supported%s%s", idx,
                    cJSON_IsString(type) ? ", got " : "",
                    cJSON_IsString(type) ? type->valuestring : "");
            if (!cJSON_IsString(text))
                return rs_errf(e, RS_EINVAL,
                               "messages[%d].content: a text part needs a string 'text'", idx);
            total += strlen(text->valuestring) + 1;
        }
        char *joined = malloc(total), *w = joined;
        if (!joined) return rs_errf(e, RS_ENOMEM, "out of memory joining message content");
        cJSON_ArrayForEach(part, content) {
            const char *s = cJSON_GetObjectItemCaseSensitive(part, "text")->valuestring;
            if (w != joined) *w++ = '\n';
            size_t n = strlen(s);
            memcpy(w, s, n);
            w += n;
        }
        *w = 0;
        cJSON *str = cJSON_CreateString(joined);
        free(joined);
        if (!str || !cJSON_ReplaceItemInObjectCaseSensitive(m, "content", str)) {
            cJSON_Delete(str);
            return rs_errf(e, RS_ENOMEM, "out of memory joining message content");
        }
    }
    return 0;
}

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
            return rs_errf(e, RS_EINVAL, "message content must be a string or text parts");
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
    cJSON *msgs = cJSON_Duplicate(cJSON_GetObjectItemCaseSensitive(req, "messages"), true);
    if (!msgs) return rs_errf(e, RS_ENOMEM, "out of memory rendering the prompt");
    rc = chat_tpl_normalize_messages(msgs, e);
    if (!rc && !t->jinja)
        rc = render_plain(t, msgs, out, out_len, e);
    else if (!rc) {
        cJSON *vars = build_vars(t, req, msgs);
        rc = vars ? chat_jinja_render(t->jinja, vars, out, out_len, e)
                  : rs_errf(e, RS_ENOMEM, "out of memory rendering the prompt");
        cJSON_Delete(vars);
    }
    cJSON_Delete(msgs);
    return rc;
}
