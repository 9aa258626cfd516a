/*
 * tok_config.c — tokenizer_config.json (and chat_template.jinja beside it): the one reader of
 * that file's special tokens, add_bos_token / add_eos_token and chat template (tokenizer.h).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tokenizer/tok_internal.h"

static const char *const NAMED_KEYS[TOK_N_NAMED] = {
    "bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token"};

const char *tok_config_key(int which) {
    return which >= 0 && which < TOK_N_NAMED ? NAMED_KEYS[which] : NULL;
}

/* A special token as tokenizer_config writes it: "text" or an AddedToken {"content": "text"}. */
static const char *token_text(const cJSON *v) {
    if (cJSON_IsString(v)) return v->valuestring;
    const cJSON *c = cJSON_IsObject(v) ? cJSON_GetObjectItemCaseSensitive(v, "content") : NULL;
    return cJSON_IsString(c) ? c->valuestring : NULL;
}

/* chat_template: a string, or a list of {"name", "template"} of which "default" is used. */
static int pick_template(const cJSON *ct, const char **src, rs_err *e) {
    *src = NULL;
    if (!ct || cJSON_IsNull(ct)) return 0;
    if (cJSON_IsString(ct)) {
        *src = ct->valuestring;
        return 0;
    }
    if (!cJSON_IsArray(ct))
        return rs_errf(e, RS_EINVAL,
                       "chat_template must be a string or a list of {name, template}");
    const cJSON *item;
    cJSON_ArrayForEach(item, ct) {
        const cJSON *name = cJSON_GetObjectItemCaseSensitive(item, "name");
        const cJSON *tpl = cJSON_GetObjectItemCaseSensitive(item, "template");
        if (cJSON_IsString(name) && !strcmp(name->valuestring, "default") && cJSON_IsString(tpl)) {
            *src = tpl->valuestring;
            return 0;
        }
    }
    return rs_errf(e, RS_EINVAL, "chat_template list has no \"default\" template");
}

static int set_str(char **dst, const char *s) {
    if (!s) return 0;
    *dst = strdup(s);
    return *dst ? 0 : RS_ENOMEM;
}

static int read_tokens(tok_config *c, const cJSON *cfg) {
    int rc = 0;
    for (int i = 0; i < TOK_N_NAMED && !rc; i++)
        rc =
            set_str(&c->named[i], token_text(cJSON_GetObjectItemCaseSensitive(cfg, NAMED_KEYS[i])));
    const cJSON *extra = cJSON_GetObjectItemCaseSensitive(cfg, "additional_special_tokens"), *it;
    int n = cJSON_IsArray(extra) ? cJSON_GetArraySize(extra) : 0;
    if (!rc && n && !(c->extra = calloc((size_t)n, sizeof *c->extra))) rc = RS_ENOMEM;
    const cJSON *list = n ? extra : NULL;
    cJSON_ArrayForEach(it, list) {
        const char *s = token_text(it);
        if (rc || !s) continue;
        rc = set_str(&c->extra[c->n_extra], s);
        c->n_extra += !rc;
    }
    const cJSON *ab = cJSON_GetObjectItemCaseSensitive(cfg, "add_bos_token");
    const cJSON *ae = cJSON_GetObjectItemCaseSensitive(cfg, "add_eos_token");
    c->add_bos = cJSON_IsTrue(ab);
    c->add_eos = cJSON_IsTrue(ae);
    return rc;
}

/* chat_template.jinja beside the config wins over its chat_template, as in transformers (newer
 * Hugging Face repositories ship the template only there). */
static int read_template(tok_config *c, const cJSON *cfg, const char *dir, const char *cfg_path,
                         rs_err *e) {
    char path[4096];
    char *text = NULL;
    size_t len = 0;
    rs_err ignore = {0};
    if (dir && rs_path_join(path, sizeof path, dir, "chat_template.jinja", e)) return RS_EINVAL;
    if (dir && !rs_read_file(path, &text, &len, &ignore)) {
        c->chat_template = text;
        return set_str(&c->chat_template_path, path);
    }
    const char *src;
    int rc = pick_template(cJSON_GetObjectItemCaseSensitive(cfg, "chat_template"), &src, e);
    if (rc) {
        char msg[256];
        snprintf(msg, sizeof msg, "%.200s", e ? e->msg : "");
        return rs_errf(e, rc, "%.300s: %s", cfg_path, msg);
    }
    if (!src) return 0;
    return set_str(&c->chat_template, src) || set_str(&c->chat_template_path, cfg_path) ? RS_ENOMEM
                                                                                        : 0;
}

int tok_config_from_json(tok_config *c, const cJSON *cfg, const char *dir, const char *cfg_path,
                         rs_err *e) {
    memset(c, 0, sizeof *c);
    int rc = cfg ? read_tokens(c, cfg) : 0;
    if (!rc) rc = read_template(c, cfg, dir, cfg_path, e);
    if (rc == RS_ENOMEM) rs_errf(e, rc, "%s: out of memory", cfg_path);
    if (rc) tok_config_free(c);
    return rc;
}

int tok_config_load(tok_config *c, const char *dir, rs_err *e) {
    char path[4096];
    char *text = NULL;
    size_t len = 0;
    memset(c, 0, sizeof *c);
    int rc = rs_path_join(path, sizeof path, dir, "tokenizer_config.json", e);
    if (rc || (rc = rs_read_file(path, &text, &len, e))) return rc;
    cJSON *cfg = cJSON_ParseWithLength(text, len);
    free(text);
    if (!cJSON_IsObject(cfg)) rc = rs_errf(e, RS_EINVAL, "%s: not a valid JSON object", path);
    if (!rc) rc = tok_config_from_json(c, cfg, dir, path, e);
    cJSON_Delete(cfg);
    return rc;
}

void tok_config_free(tok_config *c) {
    if (!c) return;
    for (int i = 0; i < TOK_N_NAMED; i++) free(c->named[i]);
    for (int i = 0; i < c->n_extra; i++) free(c->extra[i]);
    free(c->extra);
    free(c->chat_template);
    free(c->chat_template_path);
    memset(c, 0, sizeof *c);
}
