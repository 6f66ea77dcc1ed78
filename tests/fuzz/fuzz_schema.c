/* libFuzzer entry point for constrained decoding: the input up to its first NUL is a JSON
 * Schema for eng_constraint_compile (empty: the json_object constraint); the bytes after it
 * drive the matcher. Checks what constrain.h promises, aborting on any violation:
 * - a refused schema explains itself and returns no constraint;
 * - raw bytes: a byte the matcher takes leaves a finite completion, at least the old one
 *   less one byte;
 * - the mask over a small synthetic vocabulary (every single byte, an EOG and a control
 *   token, JSON-ish multi-byte pieces, and the schema's own quoted strings): a token is
 *   allowed exactly when its bytes are taken and the completion fits the budget, some token
 *   is allowed while the budget covers the completion, eng_cmask_apply masks the rest;
 * - a generation (tokens picked among the allowed ones by the drive bytes) closed by the
 *   shortest completion, byte by byte with eng_cstate_min_close falling by exactly one per
 *   byte, is valid UTF-8 JSON and, by a validator written here, a value of the schema.
 * An input starting with byte 0x01 has its schema written by a generator from the bytes up to
 * the NUL instead. Single-threaded; needs no model. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "local-engine/constrain.h"
#include "local-engine/unicode.h"
#include "tests/fuzz/fuzz_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define UNBOUNDED UINT32_MAX
#define CLOSE_WALK_MAX 512 /* longest shortest-completion walked byte by byte */
#define STEPS_MAX 64       /* tokens generated per input */
#define EXTRA_MAX 48       /* tokens taken from the schema's own strings */
#define TEXT_MAX 4096

/* ---- the synthetic vocabulary ---- */

static const char *const pieces[] = {
    "{\"",
    "\"}",
    "\":",
    "\": ",
    "\", \"",
    "\",\"",
    "\"]",
    "[\"",
    "[{",
    "}]",
    "},{",
    "}, {",
    "true",
    "false",
    "null",
    "tru",
    "e}",
    "e,",
    "0.",
    ".5",
    "e+",
    "E-1",
    "12",
    "123",
    "-1",
    "1e5",
    "\\u",
    "\\ud83d",
    "\\ude00",
    "\\u00e9",
    "\\n",
    "\\\"",
    "\\\\",
    "ab",
    "hello",
    " world",
    "\xc3\xa9",
    "\xe2\x82\xac",
    "\xf0\x9f\x98\x80",
    "\xc3",
    "\xe2\x82",
    "\x98\x80",
    "  ",
    "\n",
    "\n  ",
    "    ",
    "\t",
    ",\"",
    ":{",
    ":[",
    ":\"",
    ":true",
    "00",
    "[]",
    "{}",
    "\"\"",
    "\"a\"",
    "\"name\"",
    "\"arguments\"",
    "\"type\"",
    ", ",
    "],",
    "},",
    "\"x",
    "x\"",
};
#define N_PIECES (sizeof(pieces) / sizeof(pieces[0]))
#define ID_EOG 256
#define ID_CONTROL 257
#define ID_PIECES 258
#define ID_LONG (ID_PIECES + (int32_t)N_PIECES) /* longer than the mask keeps */
#define ID_EXTRA (ID_LONG + 1)

struct vocab {
    char *extra[EXTRA_MAX];
    size_t extra_len[EXTRA_MAX];
    int32_t n_extra;
};

static int32_t vocab_n(const struct vocab *v)
{
    return ID_EXTRA + v->n_extra;
}

/* A token's bytes: *p and the length (0: renders nothing). */
static size_t vocab_text(const struct vocab *v, int32_t id, const char **p)
{
    static char long_piece[600];
    if (id < 256) {
        static char bytes[256];
        bytes[id] = (char)id;
        *p = &bytes[id];
        return 1;
    }
    if (id == ID_EOG || id == ID_CONTROL) {
        *p = "";
        return 0;
    }
    if (id < ID_LONG) {
        *p = pieces[id - ID_PIECES];
        return strlen(*p);
    }
    if (id == ID_LONG) {
        memset(long_piece, 'a', sizeof(long_piece));
        *p = long_piece;
        return sizeof(long_piece);
    }
    *p = v->extra[id - ID_EXTRA];
    return v->extra_len[id - ID_EXTRA];
}

static size_t vocab_piece(void *arg, int32_t id, char *buf, size_t n)
{
    const char *p;
    size_t len = vocab_text(arg, id, &p);
    if (len <= n) {
        memcpy(buf, p, len);
    }
    return len;
}

static bool vocab_is_eog(void *arg, int32_t id)
{
    (void)arg;
    return id == ID_EOG;
}

/* The schema's quoted strings (keys, enum values), alone and followed by ':'. */
static void vocab_extra(struct vocab *v, const char *s, size_t n)
{
    v->n_extra = 0;
    for (size_t i = 0; i < n && v->n_extra + 2 <= EXTRA_MAX; i++) {
        if (s[i] != '"') {
            continue;
        }
        size_t j = i + 1;
        while (j < n && j - i < 40 && s[j] != '"') {
            j += s[j] == '\\' ? 2 : 1;
        }
        if (j >= n || s[j] != '"') {
            break;
        }
        size_t len = j - i + 1;
        for (int k = 0; k < 2; k++) {
            char *p = malloc(len + 1);
            CHECK(p != NULL);
            memcpy(p, s + i, len);
            p[len] = ':';
            v->extra[v->n_extra] = p;
            v->extra_len[v->n_extra++] = len + (size_t)k;
        }
        i = j;
    }
}

static void vocab_free(struct vocab *v)
{
    for (int32_t i = 0; i < v->n_extra; i++) {
        free(v->extra[i]);
    }
}

/* ---- checks ---- */

/* Feeds a token's bytes to a copy of st; the completion afterwards, or UNBOUNDED if refused. */
static uint32_t after_token(const struct eng_constraint *c, const struct vocab *v,
                            const struct eng_cstate *st, int32_t id, struct eng_cstate *out)
{
    const char *p;
    size_t len = vocab_text(v, id, &p);
    eng_cstate_copy(out, st);
    if (len == 0 || len > 512 || !eng_cstate_feed_n(c, out, p, len)) {
        return UNBOUNDED;
    }
    uint32_t m = eng_cstate_min_close(c, out);
    CHECK(m != UNBOUNDED);
    CHECK(m + len >= eng_cstate_min_close(c, st)); /* else st had a shorter completion */
    return m;
}

/* The mask agrees with feeding each token's bytes; returns the allowed count. */
static int32_t check_mask(struct eng_cmask *m, const struct eng_constraint *c,
                          const struct vocab *v, const struct eng_cstate *st, int32_t budget)
{
    int32_t n = eng_cmask_compute(m, c, st, budget);
    uint32_t close_now = eng_cstate_min_close(c, st);
    uint32_t limit = budget > 0 ? (uint32_t)budget - 1 : UNBOUNDED;
    int32_t nv = vocab_n(v), count = 0;
    static float logits[ID_EXTRA + EXTRA_MAX];
    for (int32_t id = 0; id < nv; id++) {
        logits[id] = 1.0f;
        bool want;
        if (id == ID_EOG) {
            want = close_now == 0;
        } else {
            struct eng_cstate tmp;
            uint32_t after = after_token(c, v, st, id, &tmp);
            want = after != UNBOUNDED && (limit == UNBOUNDED || after <= limit);
        }
        if (want != eng_cmask_allowed(m, id)) {
            const char *p;
            size_t len = vocab_text(v, id, &p);
            fprintf(stderr, "fuzz_schema: token %d \"%.*s\": mask says %d, the matcher %d\n", id,
                    (int)len, p, !want, want);
            abort();
        }
        count += want;
    }
    CHECK(count == n);
    CHECK(!eng_cmask_allowed(m, -1) && !eng_cmask_allowed(m, nv));
    eng_cmask_apply(m, logits, nv);
    for (int32_t id = 0; id < nv; id++) {
        CHECK(eng_cmask_allowed(m, id) == (logits[id] == 1.0f));
        CHECK(eng_cmask_allowed(m, id) || isinf(logits[id]));
    }
    /* Every byte of the shortest completion has its own token: something always fits. */
    if (close_now != UNBOUNDED && (budget <= 0 || close_now <= (uint32_t)budget)) {
        CHECK(n > 0);
    }
    return n;
}

/* Raw bytes: each byte taken (a refused one is skipped) keeps the completion consistent. */
static void feed_raw(const struct eng_constraint *c, const uint8_t *p, size_t n)
{
    struct eng_cstate st, tmp;
    eng_cstate_init(&st, c);
    for (size_t i = 0; i < n; i++) {
        uint32_t before = eng_cstate_min_close(c, &st);
        eng_cstate_copy(&tmp, &st);
        if (!eng_cstate_feed(c, &tmp, p[i])) {
            continue;
        }
        uint32_t after = eng_cstate_min_close(c, &tmp);
        CHECK(after != UNBOUNDED);
        CHECK(after + 1 >= before);
        CHECK(eng_cstate_can_continue(c, &st)); /* nothing may follow a closed value */
        st = tmp;
    }
}

/* Closes st with its shortest completion, one byte at a time, appending to text; false if
 * that is too long to walk. */
static bool close_walk(const struct eng_constraint *c, struct eng_cstate *st, char *text,
                       size_t *len)
{
    uint32_t k = eng_cstate_min_close(c, st);
    if (k > CLOSE_WALK_MAX || *len + k > TEXT_MAX) {
        return false;
    }
    while (k > 0) {
        struct eng_cstate tmp;
        int b = 0;
        for (; b < 256; b++) {
            eng_cstate_copy(&tmp, st);
            if (eng_cstate_feed(c, &tmp, (uint8_t)b) && eng_cstate_min_close(c, &tmp) == k - 1) {
                break;
            }
        }
        if (b == 256) {
            fprintf(stderr, "fuzz_schema: no byte shortens a completion of %u after \"%.*s\"\n", k,
                    (int)*len, text);
            abort();
        }
        *st = tmp;
        text[(*len)++] = (char)b;
        k--;
    }
    cJSON *doc = cJSON_ParseWithLength(text, *len);
    if (doc == NULL || !eng_utf8_valid(text, *len)) {
        fprintf(stderr, "fuzz_schema: accepted text is not UTF-8 JSON: \"%.*s\"\n", (int)*len,
                text);
        abort();
    }
    cJSON_Delete(doc);
    return true;
}

/* ---- an independent validator (JSON Schema semantics, the supported keywords) ---- */

static bool validate(const cJSON *root, const cJSON *s, const cJSON *v, int depth);

static bool has_type(const cJSON *v, const char *type)
{
    if (strcmp(type, "integer") == 0) {
        return cJSON_IsNumber(v) && isfinite(v->valuedouble) &&
               v->valuedouble == floor(v->valuedouble);
    }
    if (strcmp(type, "number") == 0) {
        return cJSON_IsNumber(v);
    }
    if (strcmp(type, "string") == 0) {
        return cJSON_IsString(v);
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

static size_t code_points(const char *s)
{
    size_t n = 0;
    for (; *s; s++) {
        n += ((uint8_t)*s & 0xC0) != 0x80;
    }
    return n;
}

static const cJSON *resolve(const cJSON *root, const char *ref)
{
    if (strcmp(ref, "#") == 0) {
        return root;
    }
    const char *defs = strncmp(ref, "#/$defs/", 8) == 0          ? "$defs"
                       : strncmp(ref, "#/definitions/", 14) == 0 ? "definitions"
                                                                 : NULL;
    if (defs == NULL) {
        return NULL;
    }
    return cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(root, defs),
                                            ref + (defs[0] == '$' ? 8 : 14));
}

static bool validate(const cJSON *root, const cJSON *s, const cJSON *v, int depth)
{
    if (cJSON_IsTrue(s) || depth > 64) {
        return true;
    }
    const cJSON *k;
    if ((k = cJSON_GetObjectItemCaseSensitive(s, "$ref"))) {
        const cJSON *t = resolve(root, k->valuestring);
        return t != NULL && validate(root, t, v, depth + 1);
    }
    /* Without type, enum, const, anyOf or oneOf, a subschema is of the kind its keywords
     * imply (documented in docs/constrained-decoding.md; it matters only inside oneOf). */
    static const char *const kinds[][4] = {{"object", "properties", "required", NULL},
                                           {"array", "items", "minItems", "maxItems"},
                                           {"string", "minLength", "maxLength", NULL}};
    static const char *const explicit_kw[] = {"type", "enum", "const", "anyOf", "oneOf"};
    bool inferable = true;
    for (size_t i = 0; i < sizeof(explicit_kw) / sizeof(explicit_kw[0]); i++) {
        inferable &= !cJSON_HasObjectItem(s, explicit_kw[i]);
    }
    for (size_t i = 0; i < 3 && inferable; i++) {
        for (size_t j = 1; j < 4 && kinds[i][j]; j++) {
            if (cJSON_HasObjectItem(s, kinds[i][j])) {
                if (!has_type(v, kinds[i][0])) {
                    return false;
                }
                inferable = false;
                break;
            }
        }
    }
    if ((k = cJSON_GetObjectItemCaseSensitive(s, "type"))) {
        bool ok = false;
        if (cJSON_IsString(k)) {
            ok = has_type(v, k->valuestring);
        }
        for (const cJSON *t = cJSON_IsArray(k) ? k->child : NULL; t && !ok; t = t->next) {
            ok = has_type(v, t->valuestring);
        }
        if (!ok) {
            return false;
        }
    }
    if ((k = cJSON_GetObjectItemCaseSensitive(s, "enum"))) {
        bool ok = false;
        for (const cJSON *e = k->child; e && !ok; e = e->next) {
            ok = cJSON_Compare(v, e, true);
        }
        if (!ok) {
            return false;
        }
    }
    if ((k = cJSON_GetObjectItemCaseSensitive(s, "const")) && !cJSON_Compare(v, k, true)) {
        return false;
    }
    if ((k = cJSON_GetObjectItemCaseSensitive(s, "anyOf"))) {
        bool ok = false;
        for (const cJSON *a = k->child; a && !ok; a = a->next) {
            ok = validate(root, a, v, depth + 1);
        }
        if (!ok) {
            return false;
        }
    }
    if ((k = cJSON_GetObjectItemCaseSensitive(s, "oneOf"))) {
        int n = 0;
        for (const cJSON *a = k->child; a; a = a->next) {
            n += validate(root, a, v, depth + 1);
        }
        if (n != 1) {
            return false;
        }
    }
    if (cJSON_IsString(v)) {
        size_t n = code_points(v->valuestring);
        if ((k = cJSON_GetObjectItemCaseSensitive(s, "minLength")) && n < k->valuedouble) {
            return false;
        }
        if ((k = cJSON_GetObjectItemCaseSensitive(s, "maxLength")) && n > k->valuedouble) {
            return false;
        }
    }
    if (cJSON_IsArray(v)) {
        int n = cJSON_GetArraySize(v);
        if ((k = cJSON_GetObjectItemCaseSensitive(s, "minItems")) && n < k->valuedouble) {
            return false;
        }
        if ((k = cJSON_GetObjectItemCaseSensitive(s, "maxItems")) && n > k->valuedouble) {
            return false;
        }
        const cJSON *items = cJSON_GetObjectItemCaseSensitive(s, "items");
        for (const cJSON *e = items ? v->child : NULL; e; e = e->next) {
            if (!validate(root, items, e, depth + 1)) {
                return false;
            }
        }
    }
    if (cJSON_IsObject(v)) {
        const cJSON *props = cJSON_GetObjectItemCaseSensitive(s, "properties");
        for (const cJSON *r = cJSON_GetObjectItemCaseSensitive(s, "required"); r && r->child;
             r = NULL) {
            for (const cJSON *name = r->child; name; name = name->next) {
                if (!cJSON_GetObjectItemCaseSensitive(v, name->valuestring)) {
                    return false;
                }
            }
        }
        bool closed = cJSON_IsFalse(cJSON_GetObjectItemCaseSensitive(s, "additionalProperties"));
        for (const cJSON *m = v->child; m; m = m->next) {
            const cJSON *ps = cJSON_GetObjectItemCaseSensitive(props, m->string);
            if ((ps == NULL && closed) || (ps != NULL && !validate(root, ps, m, depth + 1))) {
                return false;
            }
        }
    }
    return true;
}

/* The finished text must be a value of the schema (text with NUL escapes aside: cJSON cuts
 * strings at a NUL, so it cannot judge those). */
static void check_valid(const char *schema, size_t schema_len, const char *text, size_t len)
{
    if (memmem(text, len, "\\u0000", 6) != NULL || schema_len == 0) {
        return;
    }
    cJSON *s = cJSON_ParseWithLength(schema, schema_len);
    cJSON *v = cJSON_ParseWithLength(text, len);
    CHECK(s != NULL && v != NULL);
    if (!validate(s, s, v, 0)) {
        fprintf(stderr, "fuzz_schema: \"%.*s\" is not valid for the schema %.*s\n", (int)len, text,
                (int)schema_len, schema);
        abort();
    }
    cJSON_Delete(v);
    cJSON_Delete(s);
}

/* A generation: each drive byte picks the budget rule and one of the allowed tokens. */
static void generate(const struct eng_constraint *c, const uint8_t *p, size_t n, const char *schema,
                     size_t schema_len)
{
    struct vocab v;
    vocab_extra(&v, schema, schema_len);
    struct eng_cmask *m = NULL;
    char err[128];
    CHECK(eng_cmask_create(vocab_n(&v), vocab_piece, vocab_is_eog, &v, &m, err, sizeof(err)) ==
          WYE_OK);
    CHECK(eng_cmask_n_vocab(m) == vocab_n(&v) && eng_cmask_mem(m) > 0);
    CHECK(eng_cmask_is_eog(m, ID_EOG) && !eng_cmask_is_eog(m, ID_CONTROL));
    struct eng_cstate st;
    eng_cstate_init(&st, c);
    CHECK(eng_cstate_min_close(c, &st) == eng_constraint_min_bytes(c));
    static char text[TEXT_MAX + 1];
    size_t len = 0;
    for (size_t i = 0; i < n && i < STEPS_MAX; i++) {
        uint32_t close_now = eng_cstate_min_close(c, &st);
        int32_t budget = 0;
        if (p[i] & 0x80) {
            /* A budget that just covers the completion, or a little more or less. */
            int64_t b = (int64_t)close_now + (p[i] & 7) - 2;
            budget = b < 1 ? 1 : b > INT32_MAX ? INT32_MAX : (int32_t)b;
        }
        int32_t allowed = check_mask(m, c, &v, &st, budget);
        if (allowed == 0) {
            break;
        }
        int32_t pick = (p[i] & 0x7F) % allowed, id = -1;
        for (int32_t k = 0; k < vocab_n(&v); k++) {
            if (eng_cmask_allowed(m, k) && pick-- == 0) {
                id = k;
                break;
            }
        }
        CHECK(id >= 0);
        if (id == ID_EOG) {
            CHECK(eng_cmask_advance(m, c, &st, id));
            break;
        }
        const char *tp;
        size_t tl = vocab_text(&v, id, &tp);
        if (len + tl > TEXT_MAX) {
            break;
        }
        CHECK(eng_cmask_advance(m, c, &st, id));
        memcpy(text + len, tp, tl);
        len += tl;
    }
    CHECK(!eng_cmask_advance(m, c, &st, ID_CONTROL) && !eng_cmask_advance(m, c, &st, -1));
    if (close_walk(c, &st, text, &len)) {
        check_valid(schema, schema_len, text, len);
    }
    eng_cmask_destroy(m);
    vocab_free(&v);
}

/* ---- schemas generated from bytes ---- */

/* An input starting with byte 0x01 is not a schema but the choices of a generator that
 * writes one (always JSON, most of it in the supported subset), so that mutations explore
 * schema shapes rather than JSON syntax. */
struct gen {
    const uint8_t *p;
    size_t n, i;
    char *out;
    size_t len, cap;
};

static unsigned take(struct gen *g)
{
    return g->i < g->n ? g->p[g->i++] : 0;
}

static void put(struct gen *g, const char *s)
{
    size_t n = strlen(s);
    if (g->len + n + 1 > g->cap) {
        size_t cap = g->cap ? g->cap : 256;
        while (cap < g->len + n + 1) {
            cap *= 2;
        }
        g->out = realloc(g->out, cap);
        CHECK(g->out != NULL);
        g->cap = cap;
    }
    memcpy(g->out + g->len, s, n + 1);
    g->len += n;
}

static const char *pick(struct gen *g, const char *const *v, size_t n)
{
    return v[take(g) % n];
}
#define PICK(g, v) pick(g, v, sizeof(v) / sizeof(v[0]))

/* Mostly valid choices, a few invalid ones. */
static const char *const counts[] = {"0", "1", "2", "3",    "5",    "16",  "0", "1",
                                     "2", "3", "1", "4096", "4097", "1.5", "-1"};
static const char *const keys[] = {"\"a\"",       "\"b\"",      "\"name\"", "\"arguments\"", "\"\"",
                                   "\"\\u00e9\"", "\"a\\\"b\"", "\"type\"", "\"x y\""};
static const char *const values[] = {
    "\"a\"",          "\"b\"", "1",           "12", "1.5",  "-0",    "null",
    "true",           "false", "{\"a\":[1]}", "[]", "\"\"", "1e400", "123456789012345678",
    "\"\\u00e9\\n\"", "{}",    "-12e-3"};
static const char *const types[] = {"\"string\"",  "\"integer\"", "\"number\"", "\"boolean\"",
                                    "\"null\"",    "\"object\"",  "\"array\"",  "\"string\"",
                                    "\"integer\"", "\"float\""};
static const char *const refs[] = {"\"#\"",
                                   "\"#/$defs/d0\"",
                                   "\"#/$defs/d1\"",
                                   "\"#/definitions/d0\"",
                                   "\"#/$defs/nope\"",
                                   "\"#/$defs/d0/x\""};

static void gen_schema(struct gen *g, int depth, const char *defs);

static void gen_list(struct gen *g, int depth, unsigned n)
{
    put(g, "[");
    for (unsigned k = 0; k < n; k++) {
        put(g, k ? "," : "");
        gen_schema(g, depth + 1, NULL);
    }
    put(g, "]");
}

/* One schema; defs (the root's "$defs" member text) is written first inside it. */
static void gen_schema(struct gen *g, int depth, const char *defs)
{
    unsigned kind = take(g) % 17;
    if (depth > 8 && kind > 5) {
        kind = 1;
    }
    if (kind == 0) {
        put(g, defs ? "{" : "true");
        if (defs) {
            put(g, defs + 1); /* defs without its leading comma */
            put(g, "}");
        }
        return;
    }
    put(g, "{");
    if (defs) {
        put(g, defs + 1);
        put(g, ",");
    }
    switch (kind) {
    case 1:
        put(g, "\"type\":\"string\"");
        if (take(g) & 1) {
            put(g, ",\"minLength\":");
            put(g, PICK(g, counts));
        }
        if (take(g) & 1) {
            put(g, ",\"maxLength\":");
            put(g, PICK(g, counts));
        }
        break;
    case 2:
    case 3:
    case 4:
    case 5:
        put(g, "\"type\":");
        put(g, types[kind - 1]);
        break;
    case 6:
    case 14: {
        unsigned n = 1 + take(g) % 4, req = take(g);
        put(g, "\"type\":\"object\",\"properties\":{");
        const char *names[4];
        for (unsigned k = 0; k < n; k++) {
            names[k] = kind == 14 && k < 2 ? (k ? "\"arguments\"" : "\"name\"") : PICK(g, keys);
            put(g, k ? "," : "");
            put(g, names[k]);
            put(g, ":");
            if (kind == 14 && k == 0) {
                put(g, "{\"const\":");
                put(g, PICK(g, values));
                put(g, "}");
            } else {
                gen_schema(g, depth + 1, NULL);
            }
        }
        put(g, "}");
        if (req) {
            put(g, ",\"required\":[");
            for (unsigned k = 0, first = 1; k < n; k++) {
                if ((req >> k) & 1) {
                    put(g, first ? "" : ",");
                    put(g, names[k]);
                    first = 0;
                }
            }
            put(g, "]");
        }
        if (take(g) & 1) {
            put(g, ",\"additionalProperties\":false");
        }
        break;
    }
    case 7:
        put(g, "\"type\":\"array\"");
        if (take(g) & 1) {
            put(g, ",\"items\":");
            gen_schema(g, depth + 1, NULL);
        }
        if (take(g) & 1) {
            put(g, ",\"minItems\":");
            put(g, PICK(g, counts));
        }
        if (take(g) & 1) {
            put(g, ",\"maxItems\":");
            put(g, PICK(g, counts));
        }
        break;
    case 8: {
        unsigned n = 1 + take(g) % 6;
        if (take(g) & 1) {
            put(g, "\"type\":");
            put(g, PICK(g, types));
            put(g, ",");
        }
        put(g, "\"enum\":[");
        for (unsigned k = 0; k < n; k++) {
            put(g, k ? "," : "");
            put(g, PICK(g, values));
        }
        put(g, "]");
        break;
    }
    case 9:
        put(g, "\"const\":");
        put(g, PICK(g, values));
        break;
    case 10:
    case 11:
        put(g, kind == 10 ? "\"anyOf\":" : "\"oneOf\":");
        gen_list(g, depth, 1 + take(g) % 5);
        break;
    case 12: {
        unsigned n = 1 + take(g) % 4;
        put(g, "\"type\":[");
        for (unsigned k = 0; k < n; k++) {
            put(g, k ? "," : "");
            put(g, PICK(g, types));
        }
        put(g, "]");
        break;
    }
    case 13:
        put(g, "\"$ref\":");
        put(g, PICK(g, refs));
        break;
    case 15:
        put(g, "\"description\":\"d\"");
        break;
    default:
        put(g, "\"properties\":{\"a\":{\"type\":\"integer\"}},\"required\":[\"a\"]");
        break;
    }
    put(g, "}");
}

/* The schema text for generator choices p[0..n) (malloc'd). */
static char *gen_root(const uint8_t *p, size_t n, size_t *len)
{
    struct gen g = {p, n, 0, NULL, 0, 0};
    struct gen d = {p, n, 0, NULL, 0, 0};
    unsigned n_defs = take(&g) % 3;
    put(&d, "");
    for (unsigned k = 0; k < n_defs; k++) {
        put(&d, k ? ",\"d1\":" : ",\"$defs\":{\"d0\":");
        d.i = g.i;
        gen_schema(&d, 1, NULL);
        g.i = d.i;
    }
    if (n_defs) {
        put(&d, "}");
    }
    gen_schema(&g, 0, n_defs ? d.out : NULL);
    free(d.out);
    *len = g.len;
    return g.out;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const uint8_t *nul = memchr(data, 0, size);
    size_t schema_len = nul ? (size_t)(nul - data) : size;
    const uint8_t *drive = nul ? nul + 1 : data + size;
    size_t n_drive = size - (size_t)(drive - data);
    const char *schema = (const char *)data;
    char *generated = NULL;
    if (schema_len > 0 && data[0] == 0x01) {
        generated = gen_root(data + 1, schema_len - 1, &schema_len);
        schema = generated;
    }
    if (getenv("WYE_FUZZ_PRINT")) {
        fprintf(stderr, "schema: %.*s\n", (int)schema_len, schema);
    }

    struct eng_constraint *c = NULL;
    char err[256];
    enum wye_err e;
    if (schema_len == 0) {
        e = eng_constraint_json_object(&c, err, sizeof(err));
        CHECK(e == WYE_OK);
    } else {
        memset(err, 'x', sizeof(err));
        e = eng_constraint_compile(schema, schema_len, &c, err, sizeof(err));
        if (e != WYE_OK) {
            CHECK(c == NULL);
            CHECK(memchr(err, '\0', sizeof(err)) != NULL && err[0] != '\0');
            CHECK(e == WYE_ERR_PARSE || e == WYE_ERR_UNSUPPORTED || e == WYE_ERR_INVAL ||
                  e == WYE_ERR_TOOBIG || e == WYE_ERR_NOMEM);
            /* A short error buffer is cut, not overrun. */
            char small[8];
            CHECK(eng_constraint_compile(schema, schema_len, &c, small, sizeof(small)) == e);
            CHECK(c == NULL && memchr(small, '\0', sizeof(small)) != NULL);
            free(generated);
            return 0;
        }
        CHECK(c != NULL);
    }
    eng_constraint_ref(c);
    eng_constraint_destroy(c);
    CHECK(eng_constraint_min_bytes(c) != UNBOUNDED);
    feed_raw(c, drive, n_drive);
    generate(c, drive, n_drive, schema, schema_len);
    eng_constraint_destroy(c);
    free(generated);
    return 0;
}
