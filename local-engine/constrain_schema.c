/* JSON Schema -> matcher nodes (see constrain_internal.h for the node kinds and
 * docs/constrained-decoding.md for the supported subset). The schema text is parsed with
 * cJSON; each subschema becomes one node, $refs to #/$defs (or #/definitions) are compiled
 * once and shared, and after the walk the shortest value of every node is computed (the
 * matcher's completion costs build on it). Runs on the caller's thread; the result is
 * immutable. */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "common/alloc.h"
#include "local-engine/constrain_internal.h"
#include "local-engine/unicode.h"

#define CC_SCHEMA_BYTES_MAX (1u << 20)
#define CC_NODES_MAX 4096 /* node ids are 16 bits in frames */
#define CC_PROPS_MAX 64   /* per object: key ranges are 8 bits in frames */
#define CC_LITS_MAX 1024  /* values per enum */
#define CC_ITEMS_MAX 4096 /* minItems/maxItems/minLength/maxLength above are clamped/refused */
#define CC_DEPTH_MAX (ENG_CONSTRAIN_STACK_MAX - 4)
#define CC_MINLEN_MAX (1u << 20)
#define CC_REFS_MAX 64
#define CC_PATH_MAX 256

struct cc {
    struct eng_constraint *c;
    const cJSON *root;
    char *err;
    size_t errlen;
    enum wye_err e;
    struct {
        const cJSON *schema;
        uint32_t node;        /* CN_UNBOUNDED while being compiled */
        uint32_t placeholder; /* recursive uses: an anyOf of one alternative, filled after */
    } refs[CC_REFS_MAX];
    int n_refs;
    bool recursive;
};

static enum wye_err fail(struct cc *cc, enum wye_err e, const char *path, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Records the first error: "<what> at <path>". */
static enum wye_err fail(struct cc *cc, enum wye_err e, const char *path, const char *fmt, ...)
{
    if (!cc->e) {
        char what[192];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(what, sizeof(what), fmt, ap);
        va_end(ap);
        snprintf(cc->err, cc->errlen, "%s at %s", what, path[0] ? path : "#");
        cc->e = e;
    }
    return cc->e;
}

static bool grow(void **p, uint32_t *cap, uint32_t need, size_t elsz)
{
    if (need <= *cap) {
        return true;
    }
    uint32_t n = *cap ? *cap : 16;
    while (n < need) {
        n *= 2;
    }
    void *q = wye_realloc(*p, (size_t)n * elsz);
    if (!q) {
        return false;
    }
    *p = q;
    *cap = n;
    return true;
}

static enum wye_err new_node(struct cc *cc, uint8_t kind, uint32_t *out)
{
    struct eng_constraint *c = cc->c;
    if (c->n_nodes >= CC_NODES_MAX) {
        return fail(cc, WYE_ERR_TOOBIG, "", "the schema needs more than %s matcher nodes", "4096");
    }
    if (!grow((void **)&c->nodes, &c->cap_nodes, c->n_nodes + 1, sizeof(*c->nodes))) {
        return fail(cc, WYE_ERR_NOMEM, "", "out of memory%s", "");
    }
    struct cnode *n = &c->nodes[c->n_nodes];
    memset(n, 0, sizeof(*n));
    n->kind = kind;
    n->hi = CN_UNBOUNDED;
    *out = c->n_nodes++;
    return WYE_OK;
}

static void first_add(struct cnode *n, uint8_t b)
{
    n->first[b >> 3] |= (uint8_t)(1u << (b & 7));
}

static void first_add_range(struct cnode *n, uint8_t lo, uint8_t hi)
{
    for (unsigned b = lo; b <= hi; b++) {
        first_add(n, (uint8_t)b);
    }
}

/* ---- literal sets ---- */

struct lit_tmp {
    char *s;
    uint32_t len;
    uint32_t prop;
};

static int lit_tmp_cmp(const void *a, const void *b)
{
    const struct lit_tmp *x = a, *y = b;
    uint32_t n = x->len < y->len ? x->len : y->len;
    int r = memcmp(x->s, y->s, n);
    if (r) {
        return r;
    }
    return x->len < y->len ? -1 : (x->len > y->len ? 1 : 0);
}

/* Sorts, dedups and appends tmp[0..n) to lits/str (frees the texts); *off gets the first. */
static enum wye_err lits_add(struct cc *cc, struct lit_tmp *tmp, uint32_t n, uint32_t *off,
                             uint32_t *n_out)
{
    struct eng_constraint *c = cc->c;
    enum wye_err e = WYE_OK;
    qsort(tmp, n, sizeof(*tmp), lit_tmp_cmp);
    *off = c->n_lits;
    *n_out = 0;
    for (uint32_t i = 0; i < n; i++) {
        if (e || (i > 0 && lit_tmp_cmp(&tmp[i - 1], &tmp[i]) == 0)) {
            continue;
        }
        if (!grow((void **)&c->lits, &c->cap_lits, c->n_lits + 1, sizeof(*c->lits)) ||
            c->n_str + tmp[i].len < c->n_str ||
            !grow((void **)&c->str, &c->cap_str, c->n_str + tmp[i].len, 1)) {
            e = fail(cc, WYE_ERR_NOMEM, "", "out of memory%s", "");
            continue;
        }
        memcpy(c->str + c->n_str, tmp[i].s, tmp[i].len);
        c->lits[c->n_lits++] = (struct cn_lit){c->n_str, tmp[i].len, tmp[i].prop, 0};
        c->n_str += tmp[i].len;
        (*n_out)++;
    }
    for (uint32_t i = 0; i < n; i++) {
        cJSON_free(tmp[i].s);
    }
    return e;
}

static enum wye_err lit_node_texts(struct cc *cc, const char *const *texts, uint32_t n,
                                   uint32_t node)
{
    struct lit_tmp tmp[4];
    for (uint32_t i = 0; i < n; i++) {
        size_t len = strlen(texts[i]);
        tmp[i].s = cJSON_malloc(len + 1);
        if (!tmp[i].s) {
            for (uint32_t j = 0; j < i; j++) {
                cJSON_free(tmp[j].s);
            }
            return fail(cc, WYE_ERR_NOMEM, "", "out of memory%s", "");
        }
        memcpy(tmp[i].s, texts[i], len + 1);
        tmp[i].len = (uint32_t)len;
        tmp[i].prop = 0;
    }
    struct cnode *nd = &cc->c->nodes[node];
    uint32_t off, cnt;
    enum wye_err e = lits_add(cc, tmp, n, &off, &cnt);
    nd = &cc->c->nodes[node];
    nd->list = off;
    nd->n = cnt;
    for (uint32_t i = 0; i < n; i++) {
        first_add(nd, (uint8_t)texts[i][0]);
    }
    return e;
}

/* ---- subschemas ---- */

static enum wye_err compile(struct cc *cc, const cJSON *s, const char *path, int depth,
                            uint32_t *out);

static const char *const annotations[] = {
    "title",  "description", "$schema",  "$id",       "$comment", "default",     "examples",
    "format", "deprecated",  "readOnly", "writeOnly", "$defs",    "definitions",
};
static const char *const supported[] = {
    "type",      "properties", "required", "additionalProperties",
    "items",     "minItems",   "maxItems", "minLength",
    "maxLength", "enum",       "const",    "anyOf",
    "oneOf",     "$ref",
};

static bool in_list(const char *k, const char *const *list, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (strcmp(k, list[i]) == 0) {
            return true;
        }
    }
    return false;
}

/* Refuses every keyword of s beside kw but the annotations and the n_also in also: the
 * compiler reads none of them for kw, and they would still constrain the value. */
static enum wye_err alone_beside(struct cc *cc, const cJSON *s, const char *path, const char *kw,
                                 const char *const *also, size_t n_also)
{
    for (const cJSON *k = s->child; k; k = k->next) {
        if (strcmp(k->string, kw) != 0 && !in_list(k->string, also, n_also) &&
            !in_list(k->string, annotations, sizeof(annotations) / sizeof(annotations[0]))) {
            return fail(cc, WYE_ERR_UNSUPPORTED, path, "'%s' beside '%s'", k->string, kw);
        }
    }
    return WYE_OK;
}

static void sub_path(char *dst, const char *path, const char *a, const char *b)
{
    snprintf(dst, CC_PATH_MAX, "%s/%s%s%s", path[0] ? path : "#", a, b ? "/" : "", b ? b : "");
}

/* A non-negative integer keyword, or def if absent. */
static enum wye_err get_count(struct cc *cc, const cJSON *s, const char *key, const char *path,
                              uint32_t def, uint32_t *out)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(s, key);
    *out = def;
    if (!v) {
        return WYE_OK;
    }
    if (!cJSON_IsNumber(v) || !(v->valuedouble >= 0) || v->valuedouble != floor(v->valuedouble)) {
        return fail(cc, WYE_ERR_INVAL, path, "'%s' must be a non-negative integer", key);
    }
    if (v->valuedouble > CC_ITEMS_MAX) {
        if (def == CN_UNBOUNDED) {
            return WYE_OK; /* a maximum this large bounds nothing in practice */
        }
        return fail(cc, WYE_ERR_TOOBIG, path, "'%s' is larger than 4096", key);
    }
    *out = (uint32_t)v->valuedouble;
    return WYE_OK;
}

static bool value_has_type(const cJSON *v, const char *type)
{
    if (strcmp(type, "string") == 0) {
        return cJSON_IsString(v);
    }
    if (strcmp(type, "number") == 0) {
        return cJSON_IsNumber(v);
    }
    if (strcmp(type, "integer") == 0) {
        /* Exactly representable integers only: the matcher writes at most 15 digits. */
        return cJSON_IsNumber(v) && v->valuedouble == floor(v->valuedouble) &&
               fabs(v->valuedouble) < 1e15;
    }
    if (strcmp(type, "boolean") == 0) {
        return cJSON_IsBool(v);
    }
    if (strcmp(type, "null") == 0) {
        return cJSON_IsNull(v);
    }
    if (strcmp(type, "object") == 0) {
        return cJSON_IsObject(v);
    }
    return strcmp(type, "array") == 0 && cJSON_IsArray(v);
}

/* Whether v holds a number a double cannot hold (1e400): cJSON prints it as null, which would
 * turn the value into a null literal. Recursion is bounded by cJSON's nesting limit. */
static bool has_nonfinite(const cJSON *v)
{
    if (cJSON_IsNumber(v)) {
        return !isfinite(v->valuedouble);
    }
    for (const cJSON *k = v->child; k; k = k->next) {
        if (has_nonfinite(k)) {
            return true;
        }
    }
    return false;
}

/* enum / const: the canonical (unformatted) text of each value whose type is allowed. */
static enum wye_err compile_enum(struct cc *cc, const cJSON *s, const char *path, uint32_t *out)
{
    const cJSON *en = cJSON_GetObjectItemCaseSensitive(s, "enum");
    const cJSON *cn = cJSON_GetObjectItemCaseSensitive(s, "const");
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(s, "type");
    if (en && cn) {
        return fail(cc, WYE_ERR_UNSUPPORTED, path, "'enum' together with 'const'%s", "");
    }
    if (en && (!cJSON_IsArray(en) || cJSON_GetArraySize(en) == 0)) {
        return fail(cc, WYE_ERR_INVAL, path, "'enum' must be a non-empty array%s", "");
    }
    if (type && !cJSON_IsString(type)) {
        return fail(cc, WYE_ERR_UNSUPPORTED, path, "'type' list together with '%s'",
                    en ? "enum" : "const");
    }
    int n = en ? cJSON_GetArraySize(en) : 1;
    if (n > CC_LITS_MAX) {
        return fail(cc, WYE_ERR_TOOBIG, path, "'enum' has more than %s values", "1024");
    }
    struct lit_tmp *tmp = wye_calloc((size_t)n, sizeof(*tmp));
    if (!tmp) {
        return fail(cc, WYE_ERR_NOMEM, path, "out of memory%s", "");
    }
    uint32_t k = 0;
    enum wye_err e = WYE_OK;
    const cJSON *v = en ? en->child : cn;
    for (; v && !e; v = en ? v->next : NULL) {
        if (type && !value_has_type(v, type->valuestring)) {
            continue;
        }
        if (has_nonfinite(v)) {
            e = fail(cc, WYE_ERR_UNSUPPORTED, path,
                     "an '%s' value has a number beyond the range of a double",
                     en ? "enum" : "const");
            break;
        }
        char *t = cJSON_PrintUnformatted(v);
        if (!t) {
            e = fail(cc, WYE_ERR_NOMEM, path, "out of memory%s", "");
            break;
        }
        size_t len = strlen(t);
        if (len == 0 || len > 4096) {
            cJSON_free(t);
            e = fail(cc, WYE_ERR_TOOBIG, path, "an '%s' value is longer than 4096 bytes",
                     en ? "enum" : "const");
            break;
        }
        tmp[k++] = (struct lit_tmp){t, (uint32_t)len, 0};
    }
    if (!e && k == 0) {
        e = fail(cc, WYE_ERR_INVAL, path, "no '%s' value has the schema's type",
                 en ? "enum" : "const");
    }
    uint32_t node = 0;
    if (!e) {
        e = new_node(cc, CN_LIT, &node);
    }
    if (e) {
        for (uint32_t i = 0; i < k; i++) {
            cJSON_free(tmp[i].s);
        }
        wye_free(tmp);
        return e;
    }
    for (uint32_t i = 0; i < k; i++) {
        first_add(&cc->c->nodes[node], (uint8_t)tmp[i].s[0]);
    }
    uint32_t off, cnt;
    e = lits_add(cc, tmp, k, &off, &cnt);
    wye_free(tmp);
    cc->c->nodes[node].list = off;
    cc->c->nodes[node].n = cnt;
    *out = node;
    return e;
}

/* Whether the matcher for node b takes the exact text s[0..len) as a complete value. */
static bool node_takes(const struct eng_constraint *c, uint32_t b, const char *s, uint32_t len)
{
    struct eng_cstate st;
    st.sp = 2;
    cn_frame_init(c, &st.f[0], CN_NODE_ROOT);
    st.f[0].ph = 1; /* the value is pushed: nothing may follow it */
    cn_frame_init(c, &st.f[1], b);
    if (!eng_cstate_feed_n(c, &st, s, len)) {
        return false;
    }
    /* Complete: popped, or a number that may end here. Shortest values are not known yet
     * (all 0), but every unfinished frame still counts at least one byte. */
    return st.sp == 1 || eng_cstate_min_close(c, &st) == 0;
}

/* Whether every value of node a is a value of node b: unions such as integer|number,
 * an enum beside its plain type, declared objects beside any object. */
static bool subsumes(const struct eng_constraint *c, uint32_t b, uint32_t a)
{
    const struct cnode *A = &c->nodes[a], *B = &c->nodes[b];
    if (a == b || b == CN_NODE_ANY) {
        return true;
    }
    switch (A->kind) {
    case CN_INTEGER:
        return B->kind == CN_NUMBER;
    case CN_STRING:
        return B->kind == CN_STRING && A->lo >= B->lo && A->hi <= B->hi;
    case CN_OBJECT:
        return B->kind == CN_GOBJ;
    case CN_ARRAY:
        return B->kind == CN_GARR;
    case CN_LIT:
        for (uint32_t i = 0; i < A->n; i++) {
            const struct cn_lit *L = &c->lits[A->list + i];
            if (!node_takes(c, b, c->str + L->off, L->len)) {
                return false;
            }
        }
        return true;
    default:
        return false;
    }
}

/* Drops alternatives another one covers and merges literal sets, so that more unions end
 * up with alternatives of distinct first bytes. */
static enum wye_err union_prune(struct cc *cc, const uint32_t *alts, uint32_t n, uint32_t *keep,
                                uint32_t *n_keep)
{
    struct eng_constraint *c = cc->c;
    uint32_t k = 0;
    for (uint32_t i = 0; i < n; i++) {
        bool covered = false;
        for (uint32_t j = 0; j < n && !covered; j++) {
            /* Ties (each covers the other) keep the first. */
            covered = j != i && subsumes(c, alts[j], alts[i]) &&
                      (j < i || !subsumes(c, alts[i], alts[j]));
        }
        if (!covered) {
            keep[k++] = alts[i];
        }
    }
    /* Literals: one set, without the texts another (non-literal) alternative takes. */
    uint32_t n_lit = 0, total = 0;
    for (uint32_t i = 0; i < k; i++) {
        if (c->nodes[keep[i]].kind == CN_LIT) {
            n_lit++;
            total += c->nodes[keep[i]].n;
        }
    }
    *n_keep = k;
    if (n_lit == 0) {
        return WYE_OK;
    }
    if (total > CC_LITS_MAX) {
        return fail(cc, WYE_ERR_TOOBIG, "", "'enum' values in one union exceed %s", "1024");
    }
    struct lit_tmp *tmp = wye_calloc(total, sizeof(*tmp));
    if (!tmp) {
        return fail(cc, WYE_ERR_NOMEM, "", "out of memory%s", "");
    }
    uint32_t m = 0, w = 0;
    enum wye_err e = WYE_OK;
    for (uint32_t i = 0; i < k; i++) {
        const struct cnode *nd = &c->nodes[keep[i]];
        if (nd->kind != CN_LIT) {
            keep[w++] = keep[i];
            continue;
        }
        for (uint32_t j = 0; j < nd->n && !e; j++) {
            const struct cn_lit *L = &c->lits[nd->list + j];
            bool taken = false;
            for (uint32_t q = 0; q < k && !taken; q++) {
                taken = c->nodes[keep[q]].kind != CN_LIT &&
                        node_takes(c, keep[q], c->str + L->off, L->len);
            }
            if (taken) {
                continue;
            }
            tmp[m].s = cJSON_malloc(L->len);
            if (!tmp[m].s) {
                e = fail(cc, WYE_ERR_NOMEM, "", "out of memory%s", "");
                break;
            }
            memcpy(tmp[m].s, c->str + L->off, L->len);
            tmp[m++].len = L->len;
        }
    }
    uint32_t node = 0;
    if (!e && m > 0) {
        e = new_node(cc, CN_LIT, &node);
    }
    if (e || m == 0) {
        for (uint32_t q = 0; q < m; q++) {
            cJSON_free(tmp[q].s);
        }
        wye_free(tmp);
        *n_keep = w;
        return e;
    }
    for (uint32_t q = 0; q < m; q++) {
        first_add(&c->nodes[node], (uint8_t)tmp[q].s[0]);
    }
    uint32_t off, cnt;
    e = lits_add(cc, tmp, m, &off, &cnt);
    wye_free(tmp);
    c->nodes[node].list = off;
    c->nodes[node].n = cnt;
    keep[w++] = node;
    *n_keep = w;
    return e;
}

/* The tag of a tagged-union alternative: object a's first property, required, is a single
 * const string. Returns that lit (or NULL). */
static const struct cn_lit *tag_of(const struct eng_constraint *c, uint32_t a)
{
    const struct cnode *n = &c->nodes[a];
    if (n->kind != CN_OBJECT || n->n == 0 || !c->props[n->list].required) {
        return NULL;
    }
    const struct cnode *v = &c->nodes[c->props[n->list].node];
    if (v->kind != CN_LIT || v->n != 1 || c->str[c->lits[v->list].off] != '"') {
        return NULL;
    }
    return &c->lits[v->list];
}

/* The first key's text of object a (its keyset 0 holds only that required key). */
static const struct cn_lit *first_key(const struct eng_constraint *c, uint32_t a)
{
    return &c->lits[c->keysets[c->nodes[a].ks].off];
}

/* Whether alts[0..n) can be told apart by their tags (tool calls: objects whose first
 * property is the same required key with a different const string in each). */
static bool tagged_ok(const struct eng_constraint *c, const uint32_t *alts, uint32_t n)
{
    const struct cn_lit *k0 = NULL;
    for (uint32_t i = 0; i < n; i++) {
        const struct cn_lit *t = tag_of(c, alts[i]);
        if (!t) {
            return false;
        }
        const struct cn_lit *k = first_key(c, alts[i]);
        if (k0 && (k->len != k0->len || memcmp(c->str + k->off, c->str + k0->off, k->len))) {
            return false;
        }
        k0 = k;
        for (uint32_t j = 0; j < i; j++) {
            const struct cn_lit *u = tag_of(c, alts[j]);
            if (u->len == t->len && memcmp(c->str + u->off, c->str + t->off, t->len) == 0) {
                return false;
            }
        }
    }
    return true;
}

static enum wye_err make_tagged(struct cc *cc, const uint32_t *alts, uint32_t n, const char *path,
                                uint32_t *out)
{
    struct eng_constraint *c = cc->c;
    struct lit_tmp tmp[16];
    for (uint32_t i = 0; i < n; i++) {
        const struct cn_lit *t = tag_of(c, alts[i]);
        tmp[i].s = cJSON_malloc(t->len);
        if (!tmp[i].s) {
            for (uint32_t j = 0; j < i; j++) {
                cJSON_free(tmp[j].s);
            }
            return fail(cc, WYE_ERR_NOMEM, path, "out of memory%s", "");
        }
        memcpy(tmp[i].s, c->str + t->off, t->len);
        tmp[i].len = t->len;
        tmp[i].prop = i;
    }
    uint32_t node, off, cnt;
    enum wye_err e = new_node(cc, CN_TAGGED, &node);
    if (e) {
        for (uint32_t j = 0; j < n; j++) {
            cJSON_free(tmp[j].s);
        }
        return e;
    }
    if ((e = lits_add(cc, tmp, n, &off, &cnt))) {
        return e;
    }
    if (!grow((void **)&c->alts, &c->cap_alts, c->n_alts + n, sizeof(*c->alts))) {
        return fail(cc, WYE_ERR_NOMEM, path, "out of memory%s", "");
    }
    struct cnode *nd = &c->nodes[node];
    nd->list = c->n_alts;
    nd->n = n;
    nd->ks = off;
    for (uint32_t i = 0; i < n; i++) {
        c->alts[c->n_alts++] = alts[i];
    }
    first_add(nd, '{');
    *out = node;
    return WYE_OK;
}

/* An anyOf node over alts[0..n); alternatives must not share a first byte. prune (anyOf,
 * type lists): overlapping alternatives are reduced first. oneOf is not pruned: a value
 * two alternatives accept would break "exactly one". */
static enum wye_err make_anyof(struct cc *cc, const uint32_t *alts, uint32_t n, bool prune,
                               const char *path, uint32_t *out)
{
    struct eng_constraint *c = cc->c;
    for (uint32_t i = 0; i < n; i++) {
        const struct cnode *a = &c->nodes[alts[i]];
        if (a->kind == CN_ANYOF && a->n == 1 && c->alts[a->list] == CN_UNBOUNDED) {
            return fail(cc, WYE_ERR_UNSUPPORTED, path,
                        "a recursive '$ref' directly as an alternative%s", "");
        }
    }
    uint32_t keep[16];
    enum wye_err e = prune ? union_prune(cc, alts, n, keep, &n) : WYE_OK;
    if (e) {
        return e;
    }
    if (prune) {
        alts = keep;
    }
    if (n == 1) {
        *out = alts[0];
        return WYE_OK;
    }
    if (tagged_ok(c, alts, n)) {
        return make_tagged(cc, alts, n, path, out);
    }
    for (uint32_t i = 0; i < n; i++) {
        for (uint32_t j = i + 1; j < n; j++) {
            for (unsigned b = 0; b < 256; b++) {
                if (cn_first_has(&c->nodes[alts[i]], (uint8_t)b) &&
                    cn_first_has(&c->nodes[alts[j]], (uint8_t)b)) {
                    char ch[8];
                    snprintf(ch, sizeof(ch), "%c", (char)b);
                    return fail(cc, WYE_ERR_UNSUPPORTED, path,
                                "alternatives that can both start with '%s' (only alternatives "
                                "of different JSON types are supported)",
                                ch);
                }
            }
        }
    }
    uint32_t node;
    e = new_node(cc, CN_ANYOF, &node);
    if (e) {
        return e;
    }
    if (!grow((void **)&c->alts, &c->cap_alts, c->n_alts + n, sizeof(*c->alts))) {
        return fail(cc, WYE_ERR_NOMEM, path, "out of memory%s", "");
    }
    struct cnode *nd = &c->nodes[node];
    nd->list = c->n_alts;
    nd->n = n;
    for (uint32_t i = 0; i < n; i++) {
        c->alts[c->n_alts++] = alts[i];
        for (int w = 0; w < 32; w++) {
            nd->first[w] |= c->nodes[alts[i]].first[w];
        }
    }
    *out = node;
    return WYE_OK;
}

static enum wye_err compile_object(struct cc *cc, const cJSON *s, const char *path, int depth,
                                   uint32_t *out)
{
    struct eng_constraint *c = cc->c;
    const cJSON *props = cJSON_GetObjectItemCaseSensitive(s, "properties");
    const cJSON *req = cJSON_GetObjectItemCaseSensitive(s, "required");
    char sub[CC_PATH_MAX];
    if (props && !cJSON_IsObject(props)) {
        return fail(cc, WYE_ERR_INVAL, path, "'properties' must be an object%s", "");
    }
    if (req && !cJSON_IsArray(req)) {
        return fail(cc, WYE_ERR_INVAL, path, "'required' must be an array of names%s", "");
    }
    for (const cJSON *r = req ? req->child : NULL; r; r = r->next) {
        if (!cJSON_IsString(r) || !cJSON_GetObjectItemCaseSensitive(props, r->valuestring)) {
            return fail(cc, WYE_ERR_UNSUPPORTED, path,
                        "required property '%s' is not declared in 'properties'",
                        cJSON_IsString(r) ? r->valuestring : "?");
        }
    }
    if (!props || !props->child) {
        if (props && cJSON_IsFalse(cJSON_GetObjectItemCaseSensitive(s, "additionalProperties"))) {
            /* nothing declared and nothing else allowed: only the empty object */
            static const char *const empty[] = {"{}"};
            uint32_t node;
            enum wye_err e = new_node(cc, CN_LIT, &node);
            if (e) {
                return e;
            }
            *out = node;
            return lit_node_texts(cc, empty, 1, node);
        }
        *out = CN_NODE_GOBJ; /* no declared property: any object */
        return WYE_OK;
    }
    uint32_t n = (uint32_t)cJSON_GetArraySize(props);
    if (n > CC_PROPS_MAX) {
        return fail(cc, WYE_ERR_TOOBIG, path, "more than %s properties", "64");
    }
    /* Children first: their nodes and the key texts. */
    uint32_t nodes[CC_PROPS_MAX];
    char *keys[CC_PROPS_MAX];
    bool required[CC_PROPS_MAX];
    uint32_t nk = 0, i = 0;
    enum wye_err e = WYE_OK;
    for (const cJSON *p = props->child; p; p = p->next, i++) {
        sub_path(sub, path, "properties", p->string);
        required[i] = false;
        for (const cJSON *r = req ? req->child : NULL; r; r = r->next) {
            required[i] |= strcmp(r->valuestring, p->string) == 0;
        }
        if ((e = compile(cc, p, sub, depth + 1, &nodes[i]))) {
            goto out;
        }
        cJSON *ks = cJSON_CreateString(p->string);
        keys[nk] = ks ? cJSON_PrintUnformatted(ks) : NULL;
        cJSON_Delete(ks);
        if (!keys[nk]) {
            e = fail(cc, WYE_ERR_NOMEM, path, "out of memory%s", "");
            goto out;
        }
        nk++;
        /* Duplicate names: cJSON keeps both, JSON Schema leaves it undefined; refuse. */
        for (uint32_t j = 0; j < i; j++) {
            if (strcmp(keys[j], keys[i]) == 0) {
                e = fail(cc, WYE_ERR_INVAL, sub, "duplicate property name%s", "");
                goto out;
            }
        }
    }
    uint32_t node;
    e = new_node(cc, CN_OBJECT, &node);
    if (e) {
        goto out;
    }
    if (!grow((void **)&c->props, &c->cap_props, c->n_props + n, sizeof(*c->props)) ||
        !grow((void **)&c->keysets, &c->cap_keysets, c->n_keysets + n + 1, sizeof(*c->keysets))) {
        e = fail(cc, WYE_ERR_NOMEM, path, "out of memory%s", "");
        goto out;
    }
    c->nodes[node].list = c->n_props;
    c->nodes[node].n = n;
    c->nodes[node].ks = c->n_keysets;
    first_add(&c->nodes[node], '{');
    for (uint32_t j = 0; j < n; j++) {
        c->props[c->n_props++] = (struct cn_prop){(uint32_t)strlen(keys[j]), nodes[j], required[j]};
    }
    /* Keyset k: the properties from k up to and including the first required one. */
    for (uint32_t k = 0; k <= n && !e; k++) {
        struct lit_tmp tmp[CC_PROPS_MAX];
        uint32_t m = 0;
        for (uint32_t j = k; j < n; j++) {
            size_t len = strlen(keys[j]);
            tmp[m].s = cJSON_malloc(len + 1);
            if (!tmp[m].s) {
                e = fail(cc, WYE_ERR_NOMEM, path, "out of memory%s", "");
                break;
            }
            memcpy(tmp[m].s, keys[j], len + 1);
            tmp[m].len = (uint32_t)len;
            tmp[m++].prop = j;
            if (required[j]) {
                break;
            }
        }
        if (e) {
            for (uint32_t j = 0; j < m; j++) {
                cJSON_free(tmp[j].s);
            }
            break;
        }
        struct cn_keyset *ks = &c->keysets[c->n_keysets++];
        memset(ks, 0, sizeof(*ks));
        e = lits_add(cc, tmp, m, &ks->off, &ks->n);
    }
    *out = node;
out:
    for (uint32_t j = 0; j < nk; j++) {
        cJSON_free(keys[j]);
    }
    return e;
}

static enum wye_err compile_typed(struct cc *cc, const cJSON *s, const char *type, const char *path,
                                  int depth, uint32_t *out)
{
    struct eng_constraint *c = cc->c;
    enum wye_err e;
    uint32_t node;
    if (strcmp(type, "string") == 0) {
        uint32_t lo, hi;
        if ((e = get_count(cc, s, "minLength", path, 0, &lo)) ||
            (e = get_count(cc, s, "maxLength", path, CN_UNBOUNDED, &hi))) {
            return e;
        }
        if (lo > hi) {
            return fail(cc, WYE_ERR_INVAL, path, "'minLength' is above 'maxLength'%s", "");
        }
        if (lo == 0 && hi == CN_UNBOUNDED) {
            *out = CN_NODE_STR;
            return WYE_OK;
        }
        if ((e = new_node(cc, CN_STRING, &node))) {
            return e;
        }
        c->nodes[node].lo = lo;
        c->nodes[node].hi = hi;
        first_add(&c->nodes[node], '"');
        *out = node;
        return WYE_OK;
    }
    if (strcmp(type, "number") == 0) {
        *out = CN_NODE_NUM;
        return WYE_OK;
    }
    if (strcmp(type, "integer") == 0) {
        if ((e = new_node(cc, CN_INTEGER, &node))) {
            return e;
        }
        first_add(&c->nodes[node], '-');
        first_add_range(&c->nodes[node], '0', '9');
        *out = node;
        return WYE_OK;
    }
    if (strcmp(type, "boolean") == 0 || strcmp(type, "null") == 0) {
        static const char *const tf[] = {"true", "false"};
        static const char *const nul[] = {"null"};
        bool is_bool = type[0] == 'b';
        if ((e = new_node(cc, CN_LIT, &node))) {
            return e;
        }
        *out = node;
        return lit_node_texts(cc, is_bool ? tf : nul, is_bool ? 2 : 1, node);
    }
    if (strcmp(type, "array") == 0) {
        uint32_t lo, hi, item = CN_NODE_ANY;
        if ((e = get_count(cc, s, "minItems", path, 0, &lo)) ||
            (e = get_count(cc, s, "maxItems", path, CN_UNBOUNDED, &hi))) {
            return e;
        }
        if (lo > hi) {
            return fail(cc, WYE_ERR_INVAL, path, "'minItems' is above 'maxItems'%s", "");
        }
        const cJSON *items = cJSON_GetObjectItemCaseSensitive(s, "items");
        if (items) {
            char sub[CC_PATH_MAX];
            sub_path(sub, path, "items", NULL);
            if ((e = compile(cc, items, sub, depth + 1, &item))) {
                return e;
            }
        }
        if ((e = new_node(cc, CN_ARRAY, &node))) {
            return e;
        }
        c->nodes[node].lo = lo;
        c->nodes[node].hi = hi;
        c->nodes[node].child = item;
        first_add(&c->nodes[node], '[');
        *out = node;
        return WYE_OK;
    }
    if (strcmp(type, "object") == 0) {
        return compile_object(cc, s, path, depth, out);
    }
    return fail(cc, WYE_ERR_INVAL, path, "unknown type '%s'", type);
}

static enum wye_err compile_ref(struct cc *cc, const cJSON *ref, const char *path, int depth,
                                uint32_t *out)
{
    const char *r = cJSON_IsString(ref) ? ref->valuestring : "";
    const char *name = NULL, *defs = NULL;
    const cJSON *target = NULL;
    if (strcmp(r, "#") == 0) {
        target = cc->root;
    } else if (strncmp(r, "#/$defs/", 8) == 0) {
        defs = "$defs";
        name = r + 8;
    } else if (strncmp(r, "#/definitions/", 14) == 0) {
        defs = "definitions";
        name = r + 14;
    }
    if (name && !strchr(name, '/')) {
        target = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(cc->root, defs),
                                                  name);
    }
    if (!target) {
        return fail(cc, WYE_ERR_UNSUPPORTED, path,
                    "'$ref' '%s' (only local #, #/$defs/NAME or #/definitions/NAME are supported)",
                    r);
    }
    for (int i = 0; i < cc->n_refs; i++) {
        if (cc->refs[i].schema != target) {
            continue;
        }
        if (cc->refs[i].node != CN_UNBOUNDED) {
            *out = cc->refs[i].node;
            return WYE_OK;
        }
        /* A reference to a schema still being compiled (recursion): a one-alternative
         * anyOf whose alternative is set when the target is done. */
        if (cc->refs[i].placeholder == CN_UNBOUNDED) {
            struct eng_constraint *c = cc->c;
            uint32_t node;
            enum wye_err e = new_node(cc, CN_ANYOF, &node);
            if (e) {
                return e;
            }
            if (!grow((void **)&c->alts, &c->cap_alts, c->n_alts + 1, sizeof(*c->alts))) {
                return fail(cc, WYE_ERR_NOMEM, path, "out of memory%s", "");
            }
            c->nodes[node].list = c->n_alts;
            c->nodes[node].n = 1;
            c->alts[c->n_alts++] = CN_UNBOUNDED;
            cc->refs[i].placeholder = node;
            cc->recursive = true;
        }
        *out = cc->refs[i].placeholder;
        return WYE_OK;
    }
    if (cc->n_refs >= CC_REFS_MAX) {
        return fail(cc, WYE_ERR_TOOBIG, path, "more than %s distinct '$ref' targets", "64");
    }
    int slot = cc->n_refs++;
    cc->refs[slot].schema = target;
    cc->refs[slot].node = CN_UNBOUNDED;
    cc->refs[slot].placeholder = CN_UNBOUNDED;
    char sub[CC_PATH_MAX];
    snprintf(sub, sizeof(sub), "%s", r);
    enum wye_err e = compile(cc, target, sub, depth, out);
    if (e) {
        return e;
    }
    cc->refs[slot].node = *out;
    uint32_t ph = cc->refs[slot].placeholder;
    if (ph != CN_UNBOUNDED) {
        struct cnode *nd = &cc->c->nodes[ph];
        cc->c->alts[nd->list] = *out;
        memcpy(nd->first, cc->c->nodes[*out].first, sizeof(nd->first));
    }
    return WYE_OK;
}

static enum wye_err compile(struct cc *cc, const cJSON *s, const char *path, int depth,
                            uint32_t *out)
{
    if (depth > CC_DEPTH_MAX) {
        return fail(cc, WYE_ERR_TOOBIG, path, "the schema nests deeper than %s levels", "28");
    }
    if (cJSON_IsTrue(s)) {
        *out = CN_NODE_ANY;
        return WYE_OK;
    }
    if (!cJSON_IsObject(s)) {
        return fail(cc, WYE_ERR_INVAL, path, "a schema must be an object or true%s", "");
    }
    for (const cJSON *k = s->child; k; k = k->next) {
        if (!in_list(k->string, annotations, sizeof(annotations) / sizeof(annotations[0])) &&
            !in_list(k->string, supported, sizeof(supported) / sizeof(supported[0]))) {
            return fail(cc, WYE_ERR_UNSUPPORTED, path, "unsupported keyword '%s'", k->string);
        }
    }
    const cJSON *ref = cJSON_GetObjectItemCaseSensitive(s, "$ref");
    if (ref) {
        enum wye_err e = alone_beside(cc, s, path, "$ref", NULL, 0);
        return e ? e : compile_ref(cc, ref, path, depth, out);
    }
    /* enum/const (with type) and anyOf/oneOf use none of the other keywords, which would
     * still constrain the value (minLength beside enum, required beside anyOf, oneOf beside
     * anyOf): refuse them, as beside $ref, rather than write values the schema rejects. */
    const char *branch = cJSON_HasObjectItem(s, "enum")    ? "enum"
                         : cJSON_HasObjectItem(s, "const") ? "const"
                         : cJSON_HasObjectItem(s, "anyOf") ? "anyOf"
                         : cJSON_HasObjectItem(s, "oneOf") ? "oneOf"
                                                           : NULL;
    bool literal = branch && (branch[0] == 'e' || branch[0] == 'c');
    static const char *const literal_also[] = {"type", "enum", "const"};
    if (branch) {
        enum wye_err e = alone_beside(cc, s, path, branch, literal_also, literal ? 3 : 1);
        if (e) {
            return e;
        }
    }
    if (literal) {
        return compile_enum(cc, s, path, out);
    }
    const cJSON *any = cJSON_GetObjectItemCaseSensitive(s, "anyOf");
    const char *any_kw = "anyOf";
    if (!any) {
        any = cJSON_GetObjectItemCaseSensitive(s, "oneOf");
        any_kw = "oneOf";
    }
    if (any) {
        if (!cJSON_IsArray(any) || cJSON_GetArraySize(any) == 0 || cJSON_GetArraySize(any) > 16) {
            return fail(cc, WYE_ERR_INVAL, path, "'%s' must be an array of 1 to 16 schemas",
                        any_kw);
        }
        if (cJSON_GetObjectItemCaseSensitive(s, "type")) {
            return fail(cc, WYE_ERR_UNSUPPORTED, path, "'type' beside '%s'", any_kw);
        }
        uint32_t alts[16], n = 0;
        for (const cJSON *a = any->child; a; a = a->next) {
            char idx[16], sub[CC_PATH_MAX];
            snprintf(idx, sizeof(idx), "%u", n);
            sub_path(sub, path, any_kw, idx);
            enum wye_err e = compile(cc, a, sub, depth, &alts[n++]);
            if (e) {
                return e;
            }
        }
        return make_anyof(cc, alts, n, any_kw[0] == 'a', path, out);
    }
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(s, "type");
    if (cJSON_IsString(type)) {
        return compile_typed(cc, s, type->valuestring, path, depth, out);
    }
    if (cJSON_IsArray(type)) {
        uint32_t alts[8], n = 0;
        if (cJSON_GetArraySize(type) == 0 || cJSON_GetArraySize(type) > 7) {
            return fail(cc, WYE_ERR_INVAL, path, "'type' must list 1 to 7 types%s", "");
        }
        for (const cJSON *t = type->child; t; t = t->next) {
            if (!cJSON_IsString(t)) {
                return fail(cc, WYE_ERR_INVAL, path, "'type' must list type names%s", "");
            }
            enum wye_err e = compile_typed(cc, s, t->valuestring, path, depth, &alts[n++]);
            if (e) {
                return e;
            }
        }
        return make_anyof(cc, alts, n, true, path, out);
    }
    if (type) {
        return fail(cc, WYE_ERR_INVAL, path, "'type' must be a name or a list of names%s", "");
    }
    /* No type: inferred from the keywords present, else any value. */
    if (cJSON_GetObjectItemCaseSensitive(s, "properties") ||
        cJSON_GetObjectItemCaseSensitive(s, "required")) {
        return compile_typed(cc, s, "object", path, depth, out);
    }
    if (cJSON_GetObjectItemCaseSensitive(s, "items") ||
        cJSON_GetObjectItemCaseSensitive(s, "minItems") ||
        cJSON_GetObjectItemCaseSensitive(s, "maxItems")) {
        return compile_typed(cc, s, "array", path, depth, out);
    }
    if (cJSON_GetObjectItemCaseSensitive(s, "minLength") ||
        cJSON_GetObjectItemCaseSensitive(s, "maxLength")) {
        return compile_typed(cc, s, "string", path, depth, out);
    }
    *out = CN_NODE_ANY;
    return WYE_OK;
}

/* ---- the fixed nodes, shortest values ---- */

static enum wye_err add_fixed(struct cc *cc)
{
    static const char *const tfn[] = {"true", "false", "null"};
    struct eng_constraint *c = cc->c;
    uint32_t id;
    enum wye_err e;
    static const uint8_t kinds[CN_NODE_FIXED] = {CN_ROOT, CN_ANYOF, CN_STRING, CN_NUMBER,
                                                 CN_LIT,  CN_GOBJ,  CN_GARR};
    for (int i = 0; i < CN_NODE_FIXED; i++) {
        if ((e = new_node(cc, kinds[i], &id))) {
            return e;
        }
    }
    first_add(&c->nodes[CN_NODE_STR], '"');
    first_add(&c->nodes[CN_NODE_NUM], '-');
    first_add_range(&c->nodes[CN_NODE_NUM], '0', '9');
    first_add(&c->nodes[CN_NODE_GOBJ], '{');
    first_add(&c->nodes[CN_NODE_GARR], '[');
    if ((e = lit_node_texts(cc, tfn, 3, CN_NODE_TFN))) {
        return e;
    }
    static const uint32_t any[] = {CN_NODE_STR, CN_NODE_NUM, CN_NODE_TFN, CN_NODE_GOBJ,
                                   CN_NODE_GARR};
    if (!grow((void **)&c->alts, &c->cap_alts, 5, sizeof(*c->alts))) {
        return fail(cc, WYE_ERR_NOMEM, "", "out of memory%s", "");
    }
    struct cnode *nd = &c->nodes[CN_NODE_ANY];
    nd->list = 0;
    nd->n = 5;
    for (uint32_t i = 0; i < 5; i++) {
        c->alts[c->n_alts++] = any[i];
        for (int w = 0; w < 32; w++) {
            nd->first[w] |= c->nodes[any[i]].first[w];
        }
    }
    return WYE_OK;
}

static uint64_t sat_add(uint64_t a, uint64_t b)
{
    uint64_t s = a + b;
    return s > CN_UNBOUNDED ? CN_UNBOUNDED : s;
}

/* Shortest value of node i from its children's current values (CN_UNBOUNDED: unknown). */
static uint32_t node_minlen(const struct eng_constraint *c, uint32_t i)
{
    const struct cnode *n = &c->nodes[i];
    uint64_t m = 0;
    switch (n->kind) {
    case CN_ROOT:
        return c->nodes[n->child].minlen;
    case CN_ANYOF:
    case CN_TAGGED:
        m = CN_UNBOUNDED;
        for (uint32_t k = 0; k < n->n; k++) {
            uint32_t v = c->nodes[c->alts[n->list + k]].minlen;
            m = v < m ? v : m;
        }
        return (uint32_t)m;
    case CN_STRING:
        return (uint32_t)sat_add(2, n->lo);
    case CN_NUMBER:
    case CN_INTEGER:
        return 1;
    case CN_LIT:
        m = CN_UNBOUNDED;
        for (uint32_t k = 0; k < n->n; k++) {
            uint32_t v = c->lits[n->list + k].len;
            m = v < m ? v : m;
        }
        return (uint32_t)m;
    case CN_ARRAY: {
        uint64_t item = c->nodes[n->child].minlen;
        if (n->lo == 0) {
            return 2;
        }
        return (uint32_t)sat_add(2, (uint64_t)n->lo * sat_add(item, 1) - 1);
    }
    case CN_OBJECT:
        return (uint32_t)sat_add(c->keysets[n->ks].req_first, 2);
    default:
        return 2;
    }
}

static uint32_t need_add(uint32_t a, uint32_t b)
{
    return (uint32_t)sat_add(a, b);
}

/* Frames of node i's shortest value from its children's current values. */
static uint32_t node_need(const struct eng_constraint *c, uint32_t i)
{
    const struct cnode *n = &c->nodes[i];
    uint32_t m = 0;
    switch (n->kind) {
    case CN_ROOT:
        return need_add(1, c->nodes[n->child].need);
    case CN_ANYOF:
    case CN_TAGGED:
        /* Replaced by an alternative: the most any shortest alternative takes. */
        for (uint32_t k = 0; k < n->n; k++) {
            const struct cnode *a = &c->nodes[c->alts[n->list + k]];
            if (a->minlen == n->minlen && a->need > m) {
                m = a->need;
            }
        }
        return m ? m : CN_UNBOUNDED;
    case CN_ARRAY:
        return n->lo ? need_add(1, c->nodes[n->child].need) : 1;
    case CN_OBJECT:
        for (uint32_t k = 0; k < n->n; k++) {
            const struct cn_prop *p = &c->props[n->list + k];
            if (p->required && c->nodes[p->node].need > m) {
                m = c->nodes[p->node].need;
            }
        }
        return need_add(1, m);
    default:
        return 1;
    }
}

/* Keyset costs and key tails of object i (from its properties' current minlen). */
static void object_costs(struct eng_constraint *c, uint32_t i)
{
    const struct cnode *n = &c->nodes[i];
    uint64_t rest = 0, first = 0; /* required bytes from k on */
    bool any = false;
    for (uint32_t k = n->n + 1; k-- > 0;) {
        struct cn_keyset *ks = &c->keysets[n->ks + k];
        if (k < n->n) {
            const struct cn_prop *p = &c->props[n->list + k];
            if (p->required) {
                uint64_t one = sat_add(sat_add(p->key_len, 1), c->nodes[p->node].minlen);
                first = any ? sat_add(sat_add(one, 1), first) : one;
                rest = sat_add(sat_add(one, 1), rest);
                any = true;
            }
        }
        ks->req_first = (uint32_t)first;
        ks->req_rest = (uint32_t)rest;
        ks->has_req = any;
    }
    for (uint32_t k = 0; k <= n->n; k++) {
        struct cn_keyset *ks = &c->keysets[n->ks + k];
        for (uint32_t j = 0; j < ks->n; j++) {
            struct cn_lit *L = &c->lits[ks->off + j];
            const struct cn_prop *p = &c->props[n->list + L->prop];
            L->tail = (uint32_t)sat_add(sat_add(sat_add(L->len, 1), c->nodes[p->node].minlen),
                                        c->keysets[n->ks + L->prop + 1].req_rest);
        }
    }
}

/* Tag tails of tagged union i: the bytes after each tag that close its object. */
static void tagged_costs(struct eng_constraint *c, uint32_t i)
{
    const struct cnode *n = &c->nodes[i];
    for (uint32_t k = 0; k < n->n; k++) {
        struct cn_lit *L = &c->lits[n->ks + k];
        const struct cnode *a = &c->nodes[c->alts[n->list + L->prop]];
        L->tail = (uint32_t)sat_add(c->keysets[a->ks + 1].req_rest, 1);
    }
}

static enum wye_err finish(struct cc *cc, uint32_t top)
{
    struct eng_constraint *c = cc->c;
    c->nodes[CN_NODE_ROOT].child = top;
    for (uint32_t i = 0; i < c->n_nodes; i++) {
        c->nodes[i].minlen = CN_UNBOUNDED;
    }
    /* Children are compiled before parents, except for shared $ref targets; iterate. */
    for (uint32_t round = 0; round <= c->n_nodes; round++) {
        bool changed = false;
        for (uint32_t i = 0; i < c->n_nodes; i++) {
            if (c->nodes[i].kind == CN_OBJECT) {
                object_costs(c, i);
            } else if (c->nodes[i].kind == CN_TAGGED) {
                tagged_costs(c, i);
            }
            uint32_t m = node_minlen(c, i);
            if (m != c->nodes[i].minlen) {
                c->nodes[i].minlen = m;
                changed = true;
            }
        }
        if (!changed) {
            break;
        }
    }
    for (uint32_t i = 0; i < c->n_nodes; i++) {
        if (c->nodes[i].minlen != CN_UNBOUNDED) {
            continue;
        }
        /* Unknown (a cycle never closed) needs recursion; otherwise the sums saturated. */
        if (!cc->recursive) {
            return fail(cc, WYE_ERR_TOOBIG, "",
                        "a part of the schema has no value shorter than 4 GiB (minItems and "
                        "minLength multiply)%s",
                        "");
        }
        return fail(cc, WYE_ERR_INVAL, "",
                    "no finite JSON text satisfies the schema (a recursive '$ref' that is "
                    "always required?, or a part with no value shorter than 4 GiB)%s",
                    "");
    }
    /* Frames the shortest value of each node takes: a push is allowed only if they fit, so
     * that a shortest completion always exists within the stack. */
    for (uint32_t i = 0; i < c->n_nodes; i++) {
        c->nodes[i].need = CN_UNBOUNDED;
    }
    for (uint32_t round = 0; round <= c->n_nodes; round++) {
        bool changed = false;
        for (uint32_t i = 0; i < c->n_nodes; i++) {
            uint32_t v = node_need(c, i);
            if (v != c->nodes[i].need) {
                c->nodes[i].need = v;
                changed = true;
            }
        }
        if (!changed) {
            break;
        }
    }
    if (c->nodes[CN_NODE_ROOT].need > ENG_CONSTRAIN_STACK_MAX) {
        return fail(cc, WYE_ERR_TOOBIG, "", "the shortest valid output nests deeper than %s levels",
                    "31");
    }
    if (cc->recursive) {
        return WYE_OK; /* deeper optional parts are cut at run time */
    }
    /* Stack frames of the deepest schema value ($ref targets are shared, so the depth seen
     * while compiling is not enough); generic values limit themselves at run time. */
    uint32_t *dep = wye_calloc(c->n_nodes, sizeof(*dep));
    if (!dep) {
        return fail(cc, WYE_ERR_NOMEM, "", "out of memory%s", "");
    }
    for (uint32_t round = 0; round <= c->n_nodes; round++) {
        bool changed = false;
        for (uint32_t i = c->n_nodes; i-- > 0;) {
            const struct cnode *n = &c->nodes[i];
            uint32_t d = 1;
            if (n->kind == CN_ROOT || n->kind == CN_ARRAY) {
                d = 1 + dep[n->child];
            } else if (n->kind == CN_OBJECT) {
                for (uint32_t k = 0; k < n->n; k++) {
                    uint32_t v = 1 + dep[c->props[n->list + k].node];
                    d = v > d ? v : d;
                }
            } else if ((n->kind == CN_ANYOF && i != CN_NODE_ANY) || n->kind == CN_TAGGED) {
                for (uint32_t k = 0; k < n->n; k++) {
                    uint32_t v = dep[c->alts[n->list + k]];
                    d = v > d ? v : d;
                }
            }
            d = d > ENG_CONSTRAIN_STACK_MAX ? ENG_CONSTRAIN_STACK_MAX + 1 : d;
            changed |= d != dep[i];
            dep[i] = d;
        }
        if (!changed) {
            break;
        }
    }
    uint32_t depth = dep[CN_NODE_ROOT];
    wye_free(dep);
    if (depth > CC_DEPTH_MAX + 1) {
        return fail(cc, WYE_ERR_TOOBIG, "", "the schema nests deeper than %s levels", "28");
    }
    if (c->nodes[CN_NODE_ROOT].minlen > CC_MINLEN_MAX) {
        return fail(cc, WYE_ERR_TOOBIG, "", "the shortest valid output exceeds %s bytes", "1 MiB");
    }
    return WYE_OK;
}

void eng_constraint_ref(struct eng_constraint *c)
{
    atomic_fetch_add(&c->refs, 1);
}

void eng_constraint_destroy(struct eng_constraint *c)
{
    if (!c || atomic_fetch_sub(&c->refs, 1) > 1) {
        return;
    }
    wye_free(c->nodes);
    wye_free(c->lits);
    wye_free(c->props);
    wye_free(c->keysets);
    wye_free(c->alts);
    wye_free(c->str);
    wye_free(c);
}

/* JSON text is UTF-8 (RFC 8259), and cJSON takes any bytes, so check; and no string may hold
 * a NUL (\u0000), where cJSON ends its strings: a key, const or enum value would silently
 * lose its tail and the matcher would demand a different text than the schema. */
static enum wye_err check_text(struct cc *cc, const char *s, size_t n)
{
    bool in_str = false;
    for (size_t i = 0; i < n;) {
        uint32_t cp;
        size_t l = eng_utf8_decode(s + i, n - i, &cp);
        if (cp == ENG_UC_INVALID) {
            return fail(cc, WYE_ERR_PARSE, "", "the schema is not valid UTF-8 (byte %zu)", i);
        }
        if (in_str && s[i] == '\\' && i + 1 < n) {
            if (n - i >= 6 && memcmp(s + i + 1, "u0000", 5) == 0) {
                return fail(cc, WYE_ERR_UNSUPPORTED, "",
                            "a string holding a NUL character (\\u0000, byte %zu)", i);
            }
            /* An escaped quote or backslash does not end or start anything. */
            i += s[i + 1] == '"' || s[i + 1] == '\\' ? 2 : 1;
            continue;
        }
        if (s[i] == '"') {
            in_str = !in_str;
        }
        i += l;
    }
    return WYE_OK;
}

static enum wye_err start(struct cc *cc, char *errbuf, size_t errlen)
{
    memset(cc, 0, sizeof(*cc));
    cc->err = errbuf;
    cc->errlen = errlen;
    if (errbuf && errlen) {
        errbuf[0] = '\0';
    }
    cc->c = wye_calloc(1, sizeof(*cc->c));
    if (!cc->c) {
        return fail(cc, WYE_ERR_NOMEM, "", "out of memory%s", "");
    }
    atomic_init(&cc->c->refs, 1);
    return add_fixed(cc);
}

enum wye_err eng_constraint_compile(const char *schema, size_t len, struct eng_constraint **out,
                                    char *errbuf, size_t errlen)
{
    struct cc cc;
    *out = NULL;
    enum wye_err e = start(&cc, errbuf, errlen);
    cJSON *doc = NULL;
    uint32_t top = 0;
    if (e) {
        goto fail;
    }
    if (len > CC_SCHEMA_BYTES_MAX) {
        e = fail(&cc, WYE_ERR_TOOBIG, "", "the schema is larger than %s", "1 MiB");
        goto fail;
    }
    if ((e = check_text(&cc, schema, len))) {
        goto fail;
    }
    doc = cJSON_ParseWithLength(schema, len);
    if (!doc) {
        /* cJSON reports a failed allocation as a syntax error: probe for memory. */
        void *probe = wye_malloc(len + 256);
        wye_free(probe);
        e = probe ? fail(&cc, WYE_ERR_PARSE, "", "the schema is not valid JSON%s", "")
                  : fail(&cc, WYE_ERR_NOMEM, "", "out of memory%s", "");
        goto fail;
    }
    cc.root = doc;
    e = compile(&cc, doc, "", 0, &top);
    if (!e) {
        e = finish(&cc, top);
    }
    if (e) {
        goto fail;
    }
    cJSON_Delete(doc);
    *out = cc.c;
    return WYE_OK;
fail:
    cJSON_Delete(doc);
    eng_constraint_destroy(cc.c);
    return e;
}

enum wye_err eng_constraint_json_object(struct eng_constraint **out, char *errbuf, size_t errlen)
{
    struct cc cc;
    *out = NULL;
    enum wye_err e = start(&cc, errbuf, errlen);
    if (!e) {
        e = finish(&cc, CN_NODE_GOBJ);
    }
    if (e) {
        eng_constraint_destroy(cc.c);
        return e;
    }
    *out = cc.c;
    return WYE_OK;
}

uint32_t eng_constraint_min_bytes(const struct eng_constraint *c)
{
    return c->nodes[CN_NODE_ROOT].minlen;
}
