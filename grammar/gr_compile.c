/* gr_compile.c — JSON Schema to grammar nodes. Every keyword is either compiled, ignored as an
 * annotation (a fixed list), or refused with its name and where it was found; never skipped.
 * Errors carry a JSON-pointer-like path ("#/properties/a/items"). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "grammar/gr_int.h"

/* JSON types as bits, to check oneOf exclusivity and enum/type agreement. */
enum { T_OBJ = 1, T_ARR = 2, T_STR = 4, T_NUM = 8, T_INT = 16, T_BOOL = 32, T_NULL = 64 };
#define T_ALL 127

typedef struct memo {
    const cJSON *target; /* a $ref target already compiled (or being compiled) */
    int node;            /* its node */
} memo;

typedef struct comp {
    gr_grammar *g;
    const cJSON *root; /* the whole schema, for local $ref */
    memo *memo;        /* $ref targets (owned) */
    int n_memo, cap_memo;
    int depth; /* nesting of compile calls (a guard against absurd schemas) */
    rs_err *e;
} comp;

static const char *const ANNOTATIONS[] = {
    "title",      "description", "default",   "examples", "$schema",     "$id",     "$comment",
    "deprecated", "readOnly",    "writeOnly", "$defs",    "definitions", "$anchor", NULL};
static const char *const KEYWORDS[] = {
    "type",     "properties", "required",  "additionalProperties",
    "enum",     "const",      "items",     "prefixItems",
    "minItems", "maxItems",   "minLength", "maxLength",
    "anyOf",    "oneOf",      "$ref",      NULL};

static int in_list(const char *const *l, const char *s) {
    for (; *l; l++)
        if (!strcmp(*l, s)) return 1;
    return 0;
}

/* ---------------------------------------------------------------- nodes */

int gr_node_add(gr_grammar *g, gr_kind kind) {
    if (g->n >= 65535) return RS_EINVAL; /* node ids are 16 bits in a frame */
    if (g->n == g->cap) {
        int cap = g->cap ? g->cap * 2 : 16;
        gr_node *v = realloc(g->nodes, (size_t)cap * sizeof *v);
        if (!v) return RS_ENOMEM;
        g->nodes = v;
        g->cap = cap;
    }
    g->nodes[g->n] = (gr_node){.kind = kind, .item = -1, .sep = -1, .extra = -1, .hi = -1};
    return g->n++;
}

int gr_node_lit(gr_grammar *g, const char *const *texts, const int *lens, int n) {
    int id = gr_node_add(g, GK_LIT);
    if (id < 0) return id;
    gr_node *nd = &g->nodes[id];
    nd->lits = calloc((size_t)n, sizeof *nd->lits);
    nd->lit_len = calloc((size_t)n, sizeof *nd->lit_len);
    if (!nd->lits || !nd->lit_len) return RS_ENOMEM;
    nd->n_lits = n;
    for (int i = 0; i < n; i++) {
        if (!(nd->lits[i] = malloc((size_t)lens[i] + 1))) return RS_ENOMEM;
        memcpy(nd->lits[i], texts[i], (size_t)lens[i]);
        nd->lits[i][lens[i]] = 0;
        nd->lit_len[i] = lens[i];
    }
    return id;
}

static int set_kids(gr_grammar *g, int id, const int *kids, int n) {
    int *k = malloc((size_t)(n ? n : 1) * sizeof *k);
    if (!k) return RS_ENOMEM;
    memcpy(k, kids, (size_t)n * sizeof *k);
    g->nodes[id].kids = k;
    g->nodes[id].n_kids = n;
    return 0;
}

void gr_free(gr_grammar *g) {
    if (!g) return;
    for (int i = 0; i < g->n; i++) {
        gr_node *nd = &g->nodes[i];
        free(nd->kids);
        for (int k = 0; k < nd->n_props; k++) free(nd->props[k].key);
        free(nd->props);
        for (int k = 0; k < nd->n_lits; k++) free(nd->lits[k]);
        free(nd->lits);
        free(nd->lit_len);
    }
    free(g->nodes);
    free(g);
}

/* ---------------------------------------------------------------- the fixed nodes */

/* Any JSON value: an ALT of object/array/string/number/true/false/null whose object and array
 * take any value again (the recursion goes through node ids, so it is finite). */
static int any_value(gr_grammar *g) {
    int alt = gr_node_add(g, GK_ALT);
    int obj = gr_node_add(g, GK_OBJ), arr = gr_node_add(g, GK_ARR), str = gr_node_add(g, GK_STR);
    int num = gr_node_add(g, GK_NUM);
    const char *w[] = {"true", "false", "null"};
    int wl[] = {4, 5, 4};
    int lit = gr_node_lit(g, w, wl, 3);
    if (alt < 0 || obj < 0 || arr < 0 || str < 0 || num < 0 || lit < 0) return RS_ENOMEM;
    g->nodes[obj].extra = alt;
    g->nodes[arr].item = alt;
    int kids[] = {obj, arr, str, num, lit};
    if (set_kids(g, alt, kids, 5)) return RS_ENOMEM;
    return alt;
}

/* ---------------------------------------------------------------- schema keywords */

static int fail(comp *c, const char *path, const char *fmt, const char *what) {
    char msg[256];
    snprintf(msg, sizeof msg, fmt, what);
    return rs_errf(c->e, RS_EINVAL, "%s at %s", msg, path);
}

static int oom(comp *c) {
    return rs_errf(c->e, RS_ENOMEM, "grammar: out of memory");
}

static int sub_path(char *out, size_t n, const char *path, const char *a, const char *b) {
    int w = b ? snprintf(out, n, "%s/%s/%s", path, a, b) : snprintf(out, n, "%s/%s", path, a);
    return w < 0 || (size_t)w >= n ? -1 : 0;
}

static int compile(comp *c, const cJSON *s, const char *path);

static int get_count(comp *c, const cJSON *s, const char *key, const char *path, int *out) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(s, key);
    if (!v) return 0;
    if (!cJSON_IsNumber(v) || v->valuedouble < 0 || v->valuedouble != floor(v->valuedouble) ||
        v->valuedouble > 1e6)
        return fail(c, path, "'%s' must be a non-negative integer (at most 1000000)", key);
    *out = (int)v->valuedouble;
    return 0;
}

static int type_bit(const char *t) {
    static const char *const names[] = {"object",  "array",   "string", "number",
                                        "integer", "boolean", "null"};
    for (int i = 0; i < 7; i++)
        if (!strcmp(t, names[i])) return 1 << i;
    return 0;
}

/* The types a schema allows: from "type", else inferred from its keywords. */
static int schema_types(comp *c, const cJSON *s, const char *path, int *out) {
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(s, "type");
    *out = 0;
    if (t && cJSON_IsString(t)) {
        if (!(*out = type_bit(t->valuestring)))
            return fail(c, path, "unknown type '%s'", t->valuestring);
        return 0;
    }
    if (t && cJSON_IsArray(t) && cJSON_GetArraySize(t) > 0) {
        const cJSON *x;
        cJSON_ArrayForEach(x, t) {
            int b = cJSON_IsString(x) ? type_bit(x->valuestring) : 0;
            if (!b) return fail(c, path, "'%s' must list known type names", "type");
            *out |= b;
        }
        return 0;
    }
    if (t) return fail(c, path, "'%s' must be a string or a non-empty array", "type");
    static const char *const obj[] = {"properties", "required", "additionalProperties", NULL};
    static const char *const arr[] = {"items", "prefixItems", "minItems", "maxItems", NULL};
    static const char *const str[] = {"minLength", "maxLength", NULL};
    const cJSON *k;
    cJSON_ArrayForEach(k, s) {
        if (in_list(obj, k->string)) *out |= T_OBJ;
        if (in_list(arr, k->string)) *out |= T_ARR;
        if (in_list(str, k->string)) *out |= T_STR;
    }
    if (!*out) *out = T_ALL & ~T_INT; /* any value (integers are numbers) */
    return 0;
}

static int value_type(const cJSON *v) {
    if (cJSON_IsObject(v)) return T_OBJ;
    if (cJSON_IsArray(v)) return T_ARR;
    if (cJSON_IsString(v)) return T_STR;
    if (cJSON_IsBool(v)) return T_BOOL;
    if (cJSON_IsNull(v)) return T_NULL;
    return v->valuedouble == floor(v->valuedouble) && fabs(v->valuedouble) < 1e15 ? T_NUM | T_INT
                                                                                  : T_NUM;
}

/* enum / const: the values allowed by the types, printed as literals. */
static int compile_enum(comp *c, const cJSON *s, const char *path, int types) {
    const cJSON *en = cJSON_GetObjectItemCaseSensitive(s, "enum");
    const cJSON *cs = cJSON_GetObjectItemCaseSensitive(s, "const");
    if (en && cs) return fail(c, path, "'%s' together with 'const' is not supported", "enum");
    if (en && (!cJSON_IsArray(en) || cJSON_GetArraySize(en) == 0))
        return fail(c, path, "'%s' must be a non-empty array", "enum");
    int n = en ? cJSON_GetArraySize(en) : 1;
    if (n > GR_MAX_ENUM)
        return fail(c, path, "'%s' with more than 64 values is not supported", "enum");
    char *texts[GR_MAX_ENUM];
    int lens[GR_MAX_ENUM], k = 0, rc = 0;
    const cJSON *v = en ? en->child : cs;
    for (int i = 0; i < n && v; i++, v = v->next) {
        if (!(value_type(v) & types)) continue;
        char *p = cJSON_PrintUnformatted(v);
        if (!p) {
            rc = oom(c);
            break;
        }
        texts[k] = p;
        lens[k++] = (int)strlen(p);
    }
    if (!rc && k == 0)
        rc = fail(c, path, "no value of '%s' matches the schema's type", en ? "enum" : "const");
    if (!rc) {
        rc = gr_node_lit(c->g, (const char *const *)texts, lens, k);
        if (rc == RS_ENOMEM) oom(c);
    }
    for (int i = 0; i < k; i++) free(texts[i]);
    return rc;
}

/* A property key as JSON writes it: escaped, without the quotes. */
static char *escaped_key(const char *name, int *len) {
    cJSON *s = cJSON_CreateString(name);
    char *p = s ? cJSON_PrintUnformatted(s) : NULL;
    cJSON_Delete(s);
    if (!p) return NULL;
    size_t n = strlen(p);
    memmove(p, p + 1, n - 2);
    p[n - 2] = 0;
    *len = (int)n - 2;
    return p;
}

static int find_prop(const gr_node *nd, const char *key, int klen) {
    for (int i = 0; i < nd->n_props; i++)
        if (nd->props[i].klen == klen && !memcmp(nd->props[i].key, key, (size_t)klen)) return i;
    return -1;
}

static int compile_required(comp *c, int id, const cJSON *req, const char *path) {
    if (!req) return 0;
    if (!cJSON_IsArray(req)) return fail(c, path, "'%s' must be an array of strings", "required");
    const cJSON *r;
    cJSON_ArrayForEach(r, req) {
        if (!cJSON_IsString(r))
            return fail(c, path, "'%s' must be an array of strings", "required");
        int kl;
        char *k = escaped_key(r->valuestring, &kl);
        if (!k) return oom(c);
        int i = find_prop(&c->g->nodes[id], k, kl);
        free(k);
        if (i < 0)
            return fail(c, path, "required property '%s' is not in 'properties' (not supported)",
                        r->valuestring);
        c->g->nodes[id].need |= 1ull << i;
    }
    return 0;
}

static int compile_object(comp *c, const cJSON *s, const char *path) {
    const cJSON *props = cJSON_GetObjectItemCaseSensitive(s, "properties");
    const cJSON *ap = cJSON_GetObjectItemCaseSensitive(s, "additionalProperties");
    char sub[512];
    if (props && !cJSON_IsObject(props))
        return fail(c, path, "'%s' must be an object", "properties");
    int n = props ? cJSON_GetArraySize(props) : 0;
    if (n > GR_MAX_PROPS)
        return fail(c, path, "'%s' with more than 64 entries is not supported", "properties");
    int id = gr_node_add(c->g, GK_OBJ);
    if (id < 0) return oom(c);
    gr_prop *pv = calloc((size_t)(n ? n : 1), sizeof *pv);
    if (!pv) return oom(c);
    c->g->nodes[id].props = pv;
    const cJSON *p = props ? props->child : NULL;
    for (int i = 0; i < n; i++, p = p->next) {
        gr_prop *pr = &c->g->nodes[id].props[i];
        if (!(pr->key = escaped_key(p->string, &pr->klen))) return oom(c);
        c->g->nodes[id].n_props = i + 1;
        if (sub_path(sub, sizeof sub, path, "properties", p->string))
            return fail(c, path, "a schema nested too deeply (%s)", "properties");
        int k = compile(c, p, sub);
        if (k < 0) return k;
        c->g->nodes[id].props[i].node = k;
    }
    if (compile_required(c, id, cJSON_GetObjectItemCaseSensitive(s, "required"), path))
        return RS_EINVAL;
    int extra = -1;
    if (!ap || cJSON_IsTrue(ap)) {
        extra = any_value(c->g);
        if (extra < 0) return oom(c);
    } else if (cJSON_IsObject(ap)) {
        if (sub_path(sub, sizeof sub, path, "additionalProperties", NULL))
            return fail(c, path, "a schema nested too deeply (%s)", "additionalProperties");
        if ((extra = compile(c, ap, sub)) < 0) return extra;
    } else if (!cJSON_IsFalse(ap)) {
        return fail(c, path, "'%s' must be a boolean or a schema", "additionalProperties");
    }
    c->g->nodes[id].extra = extra;
    return id;
}

static int compile_array(comp *c, const cJSON *s, const char *path) {
    const cJSON *items = cJSON_GetObjectItemCaseSensitive(s, "items");
    const cJSON *prefix = cJSON_GetObjectItemCaseSensitive(s, "prefixItems");
    char sub[512];
    int lo = 0, hi = -1;
    if (get_count(c, s, "minItems", path, &lo) || get_count(c, s, "maxItems", path, &hi))
        return RS_EINVAL;
    if (cJSON_GetObjectItemCaseSensitive(s, "maxItems") && hi < lo)
        return fail(c, path, "'%s' is less than minItems", "maxItems");
    if (prefix && items && cJSON_IsArray(items))
        return fail(c, path, "'%s' as an array together with prefixItems", "items");
    if (!prefix && cJSON_IsArray(items)) prefix = items, items = NULL; /* draft-07 tuples */
    if (prefix && !cJSON_IsArray(prefix))
        return fail(c, path, "'%s' must be an array", "prefixItems");
    int np = prefix ? cJSON_GetArraySize(prefix) : 0;
    int id = gr_node_add(c->g, GK_ARR);
    if (id < 0) return oom(c);
    int *kids = malloc((size_t)(np ? np : 1) * sizeof *kids);
    if (!kids) return oom(c);
    c->g->nodes[id].kids = kids;
    const cJSON *p = prefix ? prefix->child : NULL;
    for (int i = 0; i < np; i++, p = p->next) {
        char idx[16];
        snprintf(idx, sizeof idx, "%d", i);
        if (sub_path(sub, sizeof sub, path, "prefixItems", idx))
            return fail(c, path, "a schema nested too deeply (%s)", "prefixItems");
        int k = compile(c, p, sub);
        if (k < 0) return k;
        c->g->nodes[id].kids[i] = k;
        c->g->nodes[id].n_kids = i + 1;
    }
    int item;
    if (cJSON_IsFalse(items)) {
        item = -1;
    } else if (items) {
        if (sub_path(sub, sizeof sub, path, "items", NULL))
            return fail(c, path, "a schema nested too deeply (%s)", "items");
        if ((item = compile(c, items, sub)) < 0) return item;
    } else if ((item = any_value(c->g)) < 0) {
        return oom(c);
    }
    if (item < 0 && lo > np) return fail(c, path, "'%s' exceeds the items allowed", "minItems");
    gr_node *nd = &c->g->nodes[id];
    nd->item = item;
    nd->lo = lo;
    nd->hi = hi;
    return id;
}

static int compile_type(comp *c, const cJSON *s, const char *path, int type) {
    if (type == T_OBJ) return compile_object(c, s, path);
    if (type == T_ARR) return compile_array(c, s, path);
    if (type == T_STR) {
        int lo = 0, hi = -1;
        if (get_count(c, s, "minLength", path, &lo) || get_count(c, s, "maxLength", path, &hi))
            return RS_EINVAL;
        if (cJSON_GetObjectItemCaseSensitive(s, "maxLength") && hi < lo)
            return fail(c, path, "'%s' is less than minLength", "maxLength");
        int id = gr_node_add(c->g, GK_STR);
        if (id < 0) return oom(c);
        c->g->nodes[id].lo = lo;
        c->g->nodes[id].hi = hi;
        return id;
    }
    if (type == T_NUM || type == T_INT) {
        int id = gr_node_add(c->g, type == T_NUM ? GK_NUM : GK_INT);
        return id < 0 ? oom(c) : id;
    }
    const char *w[] = {"true", "false"};
    int wl[] = {4, 5};
    int id = type == T_BOOL ? gr_node_lit(c->g, w, wl, 2)
                            : gr_node_lit(c->g, (const char *[]){"null"}, (int[]){4}, 1);
    return id < 0 ? oom(c) : id;
}

static int compile_alts(comp *c, const cJSON *s, const char *path, const char *kw) {
    const cJSON *alts = cJSON_GetObjectItemCaseSensitive(s, kw);
    if (!cJSON_IsArray(alts) || cJSON_GetArraySize(alts) == 0)
        return fail(c, path, "'%s' must be a non-empty array", kw);
    const cJSON *k;
    cJSON_ArrayForEach(k, s) {
        if (strcmp(k->string, kw) && !in_list(ANNOTATIONS, k->string))
            return fail(c, path, "'%s' beside anyOf/oneOf is not supported", k->string);
    }
    int n = cJSON_GetArraySize(alts), seen = 0;
    int *kids = malloc((size_t)n * sizeof *kids);
    if (!kids) return oom(c);
    const cJSON *a = alts->child;
    char sub[512];
    for (int i = 0; i < n; i++, a = a->next) {
        char idx[16];
        snprintf(idx, sizeof idx, "%d", i);
        int t = T_ALL;
        if (sub_path(sub, sizeof sub, path, kw, idx)) {
            free(kids);
            return fail(c, path, "a schema nested too deeply (%s)", kw);
        }
        if (cJSON_IsObject(a) && !cJSON_GetObjectItemCaseSensitive(a, "$ref") &&
            !cJSON_GetObjectItemCaseSensitive(a, "anyOf") &&
            !cJSON_GetObjectItemCaseSensitive(a, "oneOf") && schema_types(c, a, sub, &t)) {
            free(kids);
            return RS_EINVAL;
        }
        if (t & T_INT) t |= T_NUM; /* an integer is a number too */
        if (t & T_NUM) t |= T_INT;
        if (!strcmp(kw, "oneOf") && (t & seen)) {
            free(kids);
            return fail(c, sub, "'%s' alternatives of the same type are not supported", "oneOf");
        }
        seen |= t;
        if ((kids[i] = compile(c, a, sub)) < 0) {
            int rc = kids[i];
            free(kids);
            return rc;
        }
    }
    int id = gr_node_add(c->g, GK_ALT);
    int rc = id < 0 ? RS_ENOMEM : set_kids(c->g, id, kids, n);
    free(kids);
    return rc ? oom(c) : id;
}

/* "#", "#/$defs/name", "#/definitions/name" (JSON pointer, ~0 ~1 escapes). */
static const cJSON *resolve(const cJSON *root, const char *ref) {
    if (ref[0] != '#') return NULL;
    const cJSON *cur = root;
    const char *p = ref + 1;
    while (*p == '/') {
        p++;
        char tok[256];
        size_t n = 0;
        for (; *p && *p != '/'; p++) {
            char ch = *p;
            if (ch == '~' && (p[1] == '0' || p[1] == '1')) ch = *++p == '0' ? '~' : '/';
            if (n + 1 >= sizeof tok) return NULL;
            tok[n++] = ch;
        }
        tok[n] = 0;
        cur = cJSON_GetObjectItemCaseSensitive(cur, tok);
        if (!cur) return NULL;
    }
    return *p ? NULL : cur;
}

static int compile_ref(comp *c, const cJSON *s, const char *path) {
    const cJSON *r = cJSON_GetObjectItemCaseSensitive(s, "$ref");
    if (!cJSON_IsString(r)) return fail(c, path, "'%s' must be a string", "$ref");
    const cJSON *k;
    cJSON_ArrayForEach(k, s) {
        if (strcmp(k->string, "$ref") && !in_list(ANNOTATIONS, k->string))
            return fail(c, path, "'%s' beside $ref is not supported", k->string);
    }
    const cJSON *t = resolve(c->root, r->valuestring);
    if (!t)
        return fail(c, path, "$ref '%s' is not a local reference this schema defines",
                    r->valuestring);
    for (int i = 0; i < c->n_memo; i++)
        if (c->memo[i].target == t) return c->memo[i].node;
    /* Reserve the node first so a recursive reference finds it: an ALT of one kid, filled in
     * when the target is compiled. */
    int id = gr_node_add(c->g, GK_ALT);
    if (id < 0) return oom(c);
    if (c->n_memo == c->cap_memo) {
        int cap = c->cap_memo ? c->cap_memo * 2 : 8;
        memo *m = realloc(c->memo, (size_t)cap * sizeof *m);
        if (!m) return oom(c);
        c->memo = m;
        c->cap_memo = cap;
    }
    c->memo[c->n_memo++] = (memo){t, id};
    int kid = compile(c, t, r->valuestring);
    if (kid < 0) return kid;
    return set_kids(c->g, id, &kid, 1) ? oom(c) : id;
}

static int compile(comp *c, const cJSON *s, const char *path) {
    if (cJSON_IsTrue(s)) {
        int a = any_value(c->g);
        return a < 0 ? oom(c) : a;
    }
    if (cJSON_IsFalse(s)) return fail(c, path, "the schema '%s' admits no value", "false");
    if (!cJSON_IsObject(s)) return fail(c, path, "a schema must be an object or a boolean%s", "");
    if (c->depth >= 64) return fail(c, path, "a schema nested deeper than %s levels", "64");
    const cJSON *k;
    cJSON_ArrayForEach(k, s) {
        if (!in_list(KEYWORDS, k->string) && !in_list(ANNOTATIONS, k->string))
            return fail(c, path, "unsupported JSON Schema keyword '%s'", k->string);
    }
    c->depth++;
    int rc;
    if (cJSON_GetObjectItemCaseSensitive(s, "$ref")) {
        rc = compile_ref(c, s, path);
    } else if (cJSON_GetObjectItemCaseSensitive(s, "anyOf") ||
               cJSON_GetObjectItemCaseSensitive(s, "oneOf")) {
        rc = compile_alts(c, s, path,
                          cJSON_GetObjectItemCaseSensitive(s, "anyOf") ? "anyOf" : "oneOf");
    } else {
        int types;
        rc = schema_types(c, s, path, &types);
        if (!rc && (cJSON_GetObjectItemCaseSensitive(s, "enum") ||
                    cJSON_GetObjectItemCaseSensitive(s, "const"))) {
            rc = compile_enum(c, s, path, types | (types & T_NUM ? T_INT : 0));
        } else if (!rc) {
            if ((types & T_NUM) && (types & T_INT)) types &= ~T_INT; /* number covers integer */
            int kids[7], n = 0;
            for (int b = 0; b < 7 && rc >= 0; b++)
                if (types & (1 << b)) {
                    rc = compile_type(c, s, path, 1 << b);
                    if (rc >= 0) kids[n++] = rc;
                }
            if (rc >= 0 && n > 1) {
                int id = gr_node_add(c->g, GK_ALT);
                rc = id < 0 || set_kids(c->g, id, kids, n) ? oom(c) : id;
            }
        }
    }
    c->depth--;
    return rc;
}

/* ---------------------------------------------------------------- entry points */

static int new_grammar(gr_grammar **out, rs_err *e) {
    *out = calloc(1, sizeof **out);
    if (!*out) return rs_errf(e, RS_ENOMEM, "grammar: out of memory");
    /* node 0 is the root: an ALT of one kid, set once the root is compiled */
    if (gr_node_add(*out, GK_ALT) != 0) {
        gr_free(*out);
        *out = NULL;
        return rs_errf(e, RS_ENOMEM, "grammar: out of memory");
    }
    return 0;
}

static int set_root(gr_grammar **out, int kid, rs_err *e) {
    if (kid >= 0 && set_kids(*out, 0, &kid, 1) == 0) return 0;
    gr_free(*out);
    *out = NULL;
    if (kid >= 0 || (e && e->code == 0)) return rs_errf(e, RS_ENOMEM, "grammar: out of memory");
    return kid;
}

/* Every anyOf / $ref node must lead to a node that is a value (a fixpoint over the ALT nodes):
 * a $ref that only refers to itself admits nothing, and would be a dead end mid-generation. */
static int check_start(gr_grammar **out, rs_err *e) {
    gr_grammar *g = *out;
    unsigned char *ok = calloc((size_t)g->n, 1);
    if (!ok) {
        gr_free(*out);
        *out = NULL;
        return rs_errf(e, RS_ENOMEM, "grammar: out of memory");
    }
    for (int changed = 1; changed;) {
        changed = 0;
        for (int i = 0; i < g->n; i++) {
            const gr_node *nd = &g->nodes[i];
            int v = nd->kind != GK_ALT && nd->kind != GK_NONE;
            for (int k = 0; !v && nd->kind == GK_ALT && k < nd->n_kids; k++) v = ok[nd->kids[k]];
            if (v && !ok[i]) ok[i] = 1, changed = 1;
        }
    }
    int bad = -1;
    for (int i = 0; i < g->n && bad < 0; i++)
        if (!ok[i]) bad = i;
    free(ok);
    if (bad < 0) return 0;
    gr_free(*out);
    *out = NULL;
    return rs_errf(e, RS_EINVAL,
                   "the schema has a $ref that only refers to itself (it admits no "
                   "value) at #");
}

int gr_compile_schema(gr_grammar **out, const cJSON *schema, rs_err *e) {
    if (e) e->code = 0;
    int rc = new_grammar(out, e);
    if (rc) return rc;
    comp c = {.g = *out, .root = schema, .e = e};
    int kid = compile(&c, schema, "#");
    free(c.memo);
    if ((rc = set_root(out, kid, e))) return rc;
    return check_start(out, e);
}

int gr_compile_json_object(gr_grammar **out, rs_err *e) {
    if (e) e->code = 0;
    int rc = new_grammar(out, e);
    if (rc) return rc;
    int any = any_value(*out);
    /* the ALT's object member (its first kid) is "any object" */
    return set_root(out, any < 0 ? any : (*out)->nodes[any].kids[0], e);
}

/* {"name": "<name>", "arguments": <schema>} with both keys required, nothing else. */
static int tool_object(comp *c, const gr_tool *t, int i) {
    char path[64];
    snprintf(path, sizeof path, "tools[%d].function.parameters", i);
    cJSON *name = cJSON_CreateString(t->name);
    char *lit = name ? cJSON_PrintUnformatted(name) : NULL;
    cJSON_Delete(name);
    if (!lit) return oom(c);
    int ln = (int)strlen(lit), nm = gr_node_lit(c->g, (const char *const *)&lit, &ln, 1);
    free(lit);
    if (nm < 0) return oom(c);
    int args;
    if (t->parameters) {
        c->root = t->parameters;
        c->n_memo = 0;
        args = compile(c, t->parameters, path);
    } else {
        int any = any_value(c->g);
        args = any < 0 ? oom(c) : c->g->nodes[any].kids[0];
    }
    if (args < 0) return args;
    int id = gr_node_add(c->g, GK_OBJ);
    gr_prop *pv = id < 0 ? NULL : calloc(2, sizeof *pv);
    if (!pv) return oom(c);
    pv[0] = (gr_prop){strdup("name"), 4, nm, 1};
    pv[1] = (gr_prop){strdup("arguments"), 9, args, 1};
    gr_node *nd = &c->g->nodes[id];
    nd->props = pv;
    nd->n_props = 2;
    nd->need = 3;
    return pv[0].key && pv[1].key ? id : oom(c);
}

int gr_compile_tools(gr_grammar **out, const gr_tool *tools, int n_tools, const char *open,
                     const char *close, int parallel, rs_err *e) {
    if (e) e->code = 0;
    if (n_tools < 1) return rs_errf(e, RS_EINVAL, "tool calls need at least one tool");
    int rc = new_grammar(out, e);
    if (rc) return rc;
    comp c = {.g = *out, .e = e};
    int *alts = malloc((size_t)n_tools * sizeof *alts), kid = 0;
    if (!alts) kid = oom(&c);
    for (int i = 0; i < n_tools && kid >= 0; i++) kid = alts[i] = tool_object(&c, &tools[i], i);
    free(c.memo);
    int alt = kid >= 0 ? gr_node_add(*out, GK_ALT) : kid;
    if (alt >= 0 && set_kids(*out, alt, alts, n_tools)) alt = oom(&c);
    free(alts);
    if (alt < 0) return set_root(out, alt, e);
    /* open "\n" object "\n" close, then (sep "\n") more of them when parallel */
    char head[128], tail[128];
    int hl = snprintf(head, sizeof head, "%s\n", open),
        tl = snprintf(tail, sizeof tail, "\n%s", close);
    if (hl < 0 || tl < 0 || (size_t)hl >= sizeof head || (size_t)tl >= sizeof tail)
        return set_root(out, rs_errf(e, RS_EINVAL, "tool-call markers too long"), e);
    const char *const ph[] = {head}, *const pt[] = {tail}, *const ps[] = {"\n"};
    int h = gr_node_lit(*out, ph, &hl, 1), t = gr_node_lit(*out, pt, &tl, 1);
    int sep = gr_node_lit(*out, ps, (int[]){1}, 1), seq = gr_node_add(*out, GK_SEQ);
    int rep = gr_node_add(*out, GK_REP);
    int parts[] = {h, alt, t};
    if (h < 0 || t < 0 || sep < 0 || seq < 0 || rep < 0 || set_kids(*out, seq, parts, 3))
        return set_root(out, oom(&c), e);
    gr_node *r = &(*out)->nodes[rep];
    r->item = seq;
    r->sep = sep;
    r->lo = 1;
    r->hi = parallel ? -1 : 1;
    if ((rc = set_root(out, rep, e))) return rc;
    return check_start(out, e);
}
