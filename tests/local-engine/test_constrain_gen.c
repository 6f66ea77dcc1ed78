/* Generation under a JSON Schema on stories260K (SPM vocabulary: "▁" spaces, byte fallback)
 * and on a random-weight tiny qwen2 written at test time (byte-level BPE, 151,936 tokens),
 * greedy and at temperature 1.0 over several seeds with small max_tokens: every answer
 * parses with cJSON and passes a validator for the supported subset written here,
 * independently of the matcher. Also: max_tokens too small fails at add time with the
 * numbers, exactly enough still closes the JSON, constrained and unconstrained sequences
 * share a batch without changing the unconstrained output. */
// clang-format off
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
// clang-format on
#include <cjson/cJSON.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "local-engine/constrain.h"
#include "local-engine/eng_cli.h"
#include "local-engine/engine.h"
#include "local-engine/model_internal.h"
#include "local-engine/types.h"
#include "test_model_util.h"
#include "tests/local-engine/constrain_test_util.h"

#define N(a) (sizeof(a) / sizeof((a)[0]))
#define N_CTX 256 /* tokens per sequence */

static char tiny_path[512];

/* ---- an independent validator for the supported subset ---- */

static bool validate(const cJSON *v, const cJSON *s, const cJSON *root);

static bool type_ok(const cJSON *v, const char *t)
{
    if (!strcmp(t, "object")) {
        return cJSON_IsObject(v);
    }
    if (!strcmp(t, "array")) {
        return cJSON_IsArray(v);
    }
    if (!strcmp(t, "string")) {
        return cJSON_IsString(v);
    }
    if (!strcmp(t, "number")) {
        return cJSON_IsNumber(v) && isfinite(v->valuedouble);
    }
    if (!strcmp(t, "integer")) {
        return cJSON_IsNumber(v) && v->valuedouble == floor(v->valuedouble);
    }
    if (!strcmp(t, "boolean")) {
        return cJSON_IsBool(v);
    }
    return !strcmp(t, "null") && cJSON_IsNull(v);
}

static bool validate(const cJSON *v, const cJSON *s, const cJSON *root)
{
    if (cJSON_IsTrue(s)) {
        return true;
    }
    const cJSON *k;
    if ((k = cJSON_GetObjectItemCaseSensitive(s, "$ref"))) {
        const char *name = strrchr(k->valuestring, '/') + 1;
        return validate(
            v,
            cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(root, "$defs"), name),
            root);
    }
    if ((k = cJSON_GetObjectItemCaseSensitive(s, "const")) && !cJSON_Compare(v, k, true)) {
        return false;
    }
    if ((k = cJSON_GetObjectItemCaseSensitive(s, "enum"))) {
        bool any = false;
        for (const cJSON *e = k->child; e; e = e->next) {
            any |= cJSON_Compare(v, e, true);
        }
        if (!any) {
            return false;
        }
    }
    const cJSON *any_of = cJSON_GetObjectItemCaseSensitive(s, "anyOf");
    const cJSON *one_of = cJSON_GetObjectItemCaseSensitive(s, "oneOf");
    if (any_of || one_of) {
        int n = 0;
        for (const cJSON *a = (any_of ? any_of : one_of)->child; a; a = a->next) {
            n += validate(v, a, root);
        }
        if (any_of ? n == 0 : n != 1) {
            return false;
        }
    }
    if ((k = cJSON_GetObjectItemCaseSensitive(s, "type"))) {
        bool ok = false;
        if (cJSON_IsString(k)) {
            ok = type_ok(v, k->valuestring);
        }
        for (const cJSON *t = cJSON_IsArray(k) ? k->child : NULL; t; t = t->next) {
            ok |= type_ok(v, t->valuestring);
        }
        if (!ok) {
            return false;
        }
    }
    if (cJSON_IsString(v)) {
        const cJSON *lo = cJSON_GetObjectItemCaseSensitive(s, "minLength");
        const cJSON *hi = cJSON_GetObjectItemCaseSensitive(s, "maxLength");
        size_t n = ct_utf8_len(v->valuestring);
        if ((lo && n < (size_t)lo->valuedouble) || (hi && n > (size_t)hi->valuedouble)) {
            return false;
        }
    }
    if (cJSON_IsArray(v)) {
        const cJSON *lo = cJSON_GetObjectItemCaseSensitive(s, "minItems");
        const cJSON *hi = cJSON_GetObjectItemCaseSensitive(s, "maxItems");
        const cJSON *items = cJSON_GetObjectItemCaseSensitive(s, "items");
        int n = cJSON_GetArraySize(v);
        if ((lo && n < (int)lo->valuedouble) || (hi && n > (int)hi->valuedouble)) {
            return false;
        }
        for (const cJSON *e = v->child; e && items; e = e->next) {
            if (!validate(e, items, root)) {
                return false;
            }
        }
    }
    if (cJSON_IsObject(v)) {
        const cJSON *props = cJSON_GetObjectItemCaseSensitive(s, "properties");
        const cJSON *req = cJSON_GetObjectItemCaseSensitive(s, "required");
        const cJSON *add = cJSON_GetObjectItemCaseSensitive(s, "additionalProperties");
        for (const cJSON *r = req ? req->child : NULL; r; r = r->next) {
            if (!cJSON_GetObjectItemCaseSensitive(v, r->valuestring)) {
                return false;
            }
        }
        for (const cJSON *e = v->child; e; e = e->next) {
            const cJSON *ps = cJSON_GetObjectItemCaseSensitive(props, e->string);
            if (ps ? !validate(e, ps, root) : cJSON_IsFalse(add)) {
                return false;
            }
        }
    }
    return true;
}

/* ---- generation ---- */

static const char *const schemas[] = {
    /* objects with required and optional properties, nested */
    "{\"type\":\"object\",\"properties\":{\"name\":{\"type\":\"string\",\"maxLength\":12},"
    "\"age\":{\"type\":\"integer\"},\"pet\":{\"type\":\"object\",\"properties\":{\"kind\":{"
    "\"enum\":[\"cat\",\"dog\"]},\"legs\":{\"type\":\"number\"}},\"required\":[\"kind\"],"
    "\"additionalProperties\":false}},\"required\":[\"name\",\"age\"],"
    "\"additionalProperties\":false}",
    /* arrays with min/max items, booleans, null */
    "{\"type\":\"object\",\"properties\":{\"ok\":{\"type\":\"boolean\"},\"none\":{\"type\":"
    "\"null\"},\"xs\":{\"type\":\"array\",\"items\":{\"type\":\"integer\"},\"minItems\":1,"
    "\"maxItems\":3}},\"required\":[\"ok\",\"xs\"]}",
    /* a top-level array of strings (escapes, unicode) and numbers via anyOf */
    "{\"type\":\"array\",\"items\":{\"anyOf\":[{\"type\":\"string\",\"minLength\":1},{\"type\":"
    "\"number\"}]},\"maxItems\":4}",
    /* enums of any JSON values, const, $ref, an overlapping anyOf (reduced at compile) */
    "{\"$defs\":{\"c\":{\"enum\":[\"red\",1.5,null,[1,2],{\"k\":true}]}},\"type\":\"object\","
    "\"properties\":{\"v\":{\"const\":\"x\"},\"c\":{\"$ref\":\"#/$defs/c\"},\"d\":{\"type\":["
    "\"string\",\"null\"]},\"u\":{\"anyOf\":[{\"type\":\"string\"},{\"enum\":[\"a\",1,true]},"
    "{\"type\":\"integer\"},{\"type\":\"number\"}]}},\"required\":[\"v\",\"c\",\"d\",\"u\"]}",
    /* recursion: a tree through a $ref */
    "{\"$defs\":{\"t\":{\"type\":\"object\",\"properties\":{\"v\":{\"type\":\"integer\"},"
    "\"kids\":{\"type\":\"array\",\"items\":{\"$ref\":\"#/$defs/t\"},\"maxItems\":3}},"
    "\"required\":[\"v\"]}},\"$ref\":\"#/$defs/t\"}",
    /* json_object */
    NULL,
};

static void write_tiny(void)
{
    ct_write_model("tiny-qwen2", "ggml-vocab-qwen2.gguf", 11, "test_constrain_tiny_qwen2",
                   tiny_path, sizeof(tiny_path));
}

static int setup(void **state)
{
    (void)state;
    write_tiny();
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    unlink(tiny_path);
    return 0;
}

/* Generates under schema i and checks the answer; returns its length. */
static size_t gen_check(struct eng_ctx *c, const int32_t *prompt, size_t n_prompt, size_t i,
                        const struct eng_constraint *k, float temp, uint64_t seed,
                        int32_t max_tokens)
{
    struct eng_gen_params p;
    gen_greedy(&p, max_tokens);
    p.sampling.temperature = temp;
    p.sampling.top_k = temp > 0 ? 0 : 0;
    p.sampling.seed = seed;
    p.constraint = k;
    struct gen_rec rec;
    memset(&rec, 0, sizeof(rec));
    char err[256] = "";
    enum wye_err e =
        eng_generate(c, prompt, n_prompt, &p, &gen_rec_ops, &rec, NULL, &rec.res, err, sizeof(err));
    if (e) {
        fail_msg("generate schema %zu: %s (%s)", i, wye_err_str(e), err);
    }
    assert_true(rec.res.n_gen <= max_tokens);
    assert_true(rec.res.finish == ENG_FINISH_STOP || rec.res.finish == ENG_FINISH_LENGTH);
    const char *end = NULL;
    cJSON *v = cJSON_ParseWithOpts(rec.text, &end, true);
    if (!v) {
        fail_msg("schema %zu seed %llu temp %.1f: not JSON (%d tokens): '%s'", i,
                 (unsigned long long)seed, (double)temp, rec.res.n_gen, rec.text);
    }
    cJSON *sch = schemas[i] ? cJSON_Parse(schemas[i]) : cJSON_Parse("{\"type\":\"object\"}");
    assert_non_null(sch);
    if (!validate(v, sch, sch)) {
        fail_msg("schema %zu seed %llu: invalid under the schema: '%s'", i,
                 (unsigned long long)seed, rec.text);
    }
    cJSON_Delete(sch);
    cJSON_Delete(v);
    return rec.n_text;
}

static void run_model(struct eng_model *m, int runs, int32_t max_tokens)
{
    struct eng_ctx *c = ct_mkctx(m, 1, N_CTX);
    int32_t prompt[64];
    size_t n_prompt = 0;
    const char *text = "Once upon a time, the answer in JSON:";
    assert_int_equal(eng_model_tokenize(m, text, strlen(text), true, false, prompt, 64, &n_prompt),
                     WYE_OK);
    for (size_t i = 0; i < N(schemas); i++) {
        struct eng_constraint *k = ct_compile(schemas[i]);
        gen_check(c, prompt, n_prompt, i, k, 0.0f, 0, max_tokens);
        for (int r = 0; r < runs; r++) {
            gen_check(c, prompt, n_prompt, i, k, 1.0f, 1000 + (uint64_t)r, max_tokens);
        }
        eng_constraint_destroy(k);
    }
    eng_ctx_destroy(c);
}

static void test_gen_stories(void **state)
{
    (void)state;
    struct eng_model *m = ct_load_stories();
    run_model(m, 20, 64);
    eng_model_destroy(m);
}

static void test_gen_qwen2(void **state)
{
    (void)state;
    struct eng_model *m = ct_load(tiny_path);
    run_model(m, 6, 48);
    eng_model_destroy(m);
}

/* max_tokens below the shortest valid output fails at add time; exactly enough works. */
static void test_tiny_budget(void **state)
{
    (void)state;
    struct eng_model *m = ct_load_stories();
    struct eng_ctx *c = ct_mkctx(m, 1, N_CTX);
    int32_t prompt[16];
    size_t n_prompt = 0;
    assert_int_equal(eng_model_tokenize(m, "Once", 4, true, false, prompt, 16, &n_prompt), WYE_OK);
    struct eng_constraint *k = ct_compile(schemas[0]);
    uint32_t need = eng_constraint_min_bytes(k); /* {"name":"","age":0} */
    assert_int_equal(need, 19);
    struct eng_gen_params p;
    gen_greedy(&p, (int32_t)need - 1);
    p.constraint = k;
    struct gen_rec rec;
    memset(&rec, 0, sizeof(rec));
    char err[256] = "";
    int32_t id;
    assert_int_equal(
        eng_batch_add(c, prompt, n_prompt, &p, &gen_rec_ops, &rec, NULL, &id, err, sizeof(err)),
        WYE_ERR_TOOBIG);
    assert_non_null(strstr(err, "max_tokens (18)"));
    assert_non_null(strstr(err, "19 tokens"));
    for (int32_t mt = (int32_t)need; mt < (int32_t)need + 4; mt++) {
        for (uint64_t seed = 1; seed <= 5; seed++) {
            gen_check(c, prompt, n_prompt, 0, k, 1.0f, seed, mt);
        }
    }
    eng_constraint_destroy(k);
    /* json_object in two tokens: "{}". */
    k = ct_compile(NULL);
    for (uint64_t seed = 1; seed <= 5; seed++) {
        gen_check(c, prompt, n_prompt, N(schemas) - 1, k, 1.0f, seed, 2);
    }
    eng_constraint_destroy(k);
    eng_ctx_destroy(c);
    eng_model_destroy(m);
}

/* Once the value is complete and nothing may follow, EOS is forced: the sequence stops well
 * before max_tokens (even with ignore_eos) and the stop strings do not cut the JSON. */
static void test_forced_eos(void **state)
{
    (void)state;
    struct eng_model *m = ct_load_stories();
    struct eng_ctx *c = ct_mkctx(m, 1, N_CTX);
    int32_t prompt[16];
    size_t n_prompt = 0;
    assert_int_equal(eng_model_tokenize(m, "Once", 4, true, false, prompt, 16, &n_prompt), WYE_OK);
    struct eng_constraint *k = ct_compile("{\"type\":\"boolean\"}");
    for (uint64_t seed = 0; seed < 6; seed++) {
        struct eng_gen_params p;
        gen_greedy(&p, 64);
        p.sampling.temperature = seed ? 1.0f : 0.0f;
        p.sampling.seed = seed;
        p.constraint = k;
        p.ignore_eos = seed & 1;
        p.stop[0] = "e";
        struct gen_rec rec;
        memset(&rec, 0, sizeof(rec));
        char err[256] = "";
        assert_int_equal(eng_generate(c, prompt, n_prompt, &p, &gen_rec_ops, &rec, NULL, &rec.res,
                                      err, sizeof(err)),
                         WYE_OK);
        assert_int_equal(rec.res.finish, ENG_FINISH_STOP);
        assert_true(rec.res.n_gen <= 8 + 5 + 1); /* whitespace, the word, EOS */
        const char *t = rec.text + strspn(rec.text, " \t\r\n");
        if (strcmp(t, "true") != 0 && strcmp(t, "false") != 0) {
            fail_msg("seed %llu: '%s'", (unsigned long long)seed, rec.text);
        }
    }
    eng_constraint_destroy(k);
    eng_ctx_destroy(c);
    eng_model_destroy(m);
}

/* A constrained and an unconstrained sequence in one batch: the unconstrained one gives
 * what it gives alone, the constrained one is valid. */
static void test_batch_mixed(void **state)
{
    (void)state;
    struct eng_model *m = ct_load_stories();
    struct eng_ctx *c = ct_mkctx(m, 2, N_CTX);
    int32_t prompt[16];
    size_t n_prompt = 0;
    assert_int_equal(eng_model_tokenize(m, "Once upon", 9, true, false, prompt, 16, &n_prompt),
                     WYE_OK);
    struct eng_gen_params p;
    gen_greedy(&p, 40);
    struct gen_rec alone, free_rec, cons_rec;
    memset(&alone, 0, sizeof(alone));
    memset(&free_rec, 0, sizeof(free_rec));
    memset(&cons_rec, 0, sizeof(cons_rec));
    char err[256] = "";
    assert_int_equal(eng_generate(c, prompt, n_prompt, &p, &gen_rec_ops, &alone, NULL, &alone.res,
                                  err, sizeof(err)),
                     WYE_OK);
    struct eng_constraint *k = ct_compile(schemas[1]);
    struct eng_gen_params pc = p;
    pc.constraint = k;
    int32_t a, b;
    assert_int_equal(eng_batch_add(c, prompt, n_prompt, &pc, &gen_rec_ops, &cons_rec, NULL, &a, err,
                                   sizeof(err)),
                     WYE_OK);
    assert_int_equal(
        eng_batch_add(c, prompt, n_prompt, &p, &gen_rec_ops, &free_rec, NULL, &b, err, sizeof(err)),
        WYE_OK);
    for (int i = 0; i < 200 && eng_batch_n_active(c) > 0; i++) {
        assert_int_equal(eng_batch_step(c), WYE_OK);
    }
    assert_true(cons_rec.done && free_rec.done);
    assert_string_equal(free_rec.text, alone.text);
    cJSON *v = cJSON_Parse(cons_rec.text);
    cJSON *sch = cJSON_Parse(schemas[1]);
    assert_non_null(v);
    assert_true(validate(v, sch, sch));
    assert_string_not_equal(cons_rec.text, alone.text);
    cJSON_Delete(v);
    cJSON_Delete(sch);
    eng_constraint_destroy(k);
    eng_ctx_destroy(c);
    eng_model_destroy(m);
}

/* `wye run` with stdout captured in out; returns its exit code. */
static int run_cli(int argc, char **argv, char *out, size_t cap)
{
    char path[512];
    snprintf(path, sizeof(path), "%s/test_constrain_out_%d.txt", WYE_BINARY_DIR, (int)getpid());
    fflush(stdout);
    int saved = dup(1);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    assert_true(saved >= 0 && fd >= 0);
    dup2(fd, 1);
    close(fd);
    int rc = eng_cli_run(argc, argv);
    fflush(stdout);
    dup2(saved, 1);
    close(saved);
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    size_t n = fread(out, 1, cap - 1, f);
    out[n] = '\0';
    fclose(f);
    unlink(path);
    return rc;
}

/* wye run --json-schema FILE / --json print valid JSON; a bad schema file is exit code 1. */
static void test_cli(void **state)
{
    (void)state;
    char model[512], schema[512], out[8192];
    snprintf(model, sizeof(model), "%s/models/stories260K-f32.gguf", WYE_SHARED_DIR);
    snprintf(schema, sizeof(schema), "%s/test_constrain_schema_%d.json", WYE_BINARY_DIR,
             (int)getpid());
    FILE *f = fopen(schema, "w");
    assert_non_null(f);
    fputs(schemas[1], f);
    fclose(f);
    char *argv[] = {(char *)"run",
                    (char *)"-m",
                    model,
                    (char *)"-p",
                    (char *)"Once upon a time",
                    (char *)"-n",
                    (char *)"48",
                    (char *)"--seed",
                    (char *)"3",
                    (char *)"-t",
                    (char *)"1",
                    (char *)"--json-schema",
                    schema};
    assert_int_equal(run_cli(13, argv, out, sizeof(out)), 0);
    cJSON *v = cJSON_Parse(out);
    cJSON *sch = cJSON_Parse(schemas[1]);
    if (!v || !validate(v, sch, sch)) {
        fail_msg("wye run --json-schema printed '%s'", out);
    }
    cJSON_Delete(v);
    cJSON_Delete(sch);
    char *argv2[] = {(char *)"run",  (char *)"-m", model,        (char *)"-p",
                     (char *)"Once", (char *)"-n", (char *)"32", (char *)"--temp",
                     (char *)"0",    (char *)"-t", (char *)"1",  (char *)"--json"};
    assert_int_equal(run_cli(12, argv2, out, sizeof(out)), 0);
    v = cJSON_Parse(out);
    assert_true(cJSON_IsObject(v));
    cJSON_Delete(v);
    f = fopen(schema, "w");
    assert_non_null(f);
    fputs("{\"type\":\"object\",\"properties\":{\"a\":{\"not\":{}}}}", f);
    fclose(f);
    assert_int_equal(run_cli(13, argv, out, sizeof(out)), 1);
    unlink(schema);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_gen_stories), cmocka_unit_test(test_gen_qwen2),
        cmocka_unit_test(test_tiny_budget), cmocka_unit_test(test_forced_eos),
        cmocka_unit_test(test_batch_mixed), cmocka_unit_test(test_cli),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
