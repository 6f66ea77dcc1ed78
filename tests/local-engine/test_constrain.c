/* The constrained-decoding matcher on hand-written byte strings (accept/reject tables: JSON
 * escapes, surrogates, numbers, split UTF-8, declared-order objects, enums, anyOf, $ref),
 * exact shortest completions, schema errors naming the keyword, and the trie-walk mask
 * against brute force (every token's bytes fed one by one) on random matcher states over
 * the stories260K (SPM, byte fallback) and Qwen2 (byte-level BPE, 151k) vocabularies. */
// clang-format off
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
// clang-format on
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "common/alloc.h"
#include "local-engine/constrain.h"
#include "local-engine/engine.h"
#include "local-engine/model_internal.h"

static struct eng_constraint *compile(const char *schema)
{
    struct eng_constraint *c = NULL;
    char err[256] = "";
    if (eng_constraint_compile(schema, strlen(schema), &c, err, sizeof(err)) != WYE_OK) {
        fail_msg("compile %s: %s", schema, err);
    }
    return c;
}

static struct eng_constraint *json_object(void)
{
    struct eng_constraint *c = NULL;
    char err[256] = "";
    assert_int_equal(eng_constraint_json_object(&c, err, sizeof(err)), WYE_OK);
    return c;
}

/* The whole text is a complete valid output. */
static bool accepts(const struct eng_constraint *c, const char *text)
{
    struct eng_cstate st;
    eng_cstate_init(&st, c);
    return eng_cstate_feed_n(c, &st, text, strlen(text)) && eng_cstate_min_close(c, &st) == 0;
}

static void check_table(const struct eng_constraint *c, const char *const *good, size_t n_good,
                        const char *const *bad, size_t n_bad)
{
    for (size_t i = 0; i < n_good; i++) {
        if (!accepts(c, good[i])) {
            fail_msg("rejected valid text %zu: %s", i, good[i]);
        }
    }
    for (size_t i = 0; i < n_bad; i++) {
        if (accepts(c, bad[i])) {
            fail_msg("accepted invalid text %zu: %s", i, bad[i]);
        }
    }
}

#define N(a) (sizeof(a) / sizeof((a)[0]))

#define TREE_SCHEMA                                                                                \
    "{\"$defs\":{\"t\":{\"type\":\"object\",\"properties\":{\"v\":{\"type\":\"integer\"},"         \
    "\"kids\":{\"type\":\"array\",\"items\":{\"$ref\":\"#/$defs/t\"}}},\"required\":[\"v\"]}},"    \
    "\"$ref\":\"#/$defs/t\"}"

static void test_json_object_table(void **state)
{
    (void)state;
    struct eng_constraint *c = json_object();
    static const char *const good[] = {
        "{}",
        " {}",
        "{\"a\":1}",
        "{ \"a\" : true }",
        "{\n  \"a\": -0.5e+10,\n  \"b\": [1, 2, {\"c\": null}]\n}",
        "{\"s\":\"x\\\"y\\\\z\\/\\b\\f\\n\\r\\t\"}",
        "{\"u\":\"\\u00e9\\uD83D\\uDE00\"}",
        "{\"k\":\"\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\"}",
        "{\"a\":-0}",
        "{\"a\":1e5}",
        "{\"a\":1E-2}",
        "{\"a\":0.25}",
        "{\"a\":[]}",
        "{\"a\":{}}",
        "{\"\":\"\"}",
    };
    static const char *const bad[] = {
        "",
        "[]",
        "\"x\"",
        "{",
        "{\"a\":01}",
        "{\"a\":1.}",
        "{\"a\":.5}",
        "{\"a\":+1}",
        "{\"a\":-}",
        "{\"a\":1e}",
        "{\"a\":\"\x01\"}",
        "{\"a\":\"\\q\"}",
        "{\"a\":\"\\u12\"}",
        "{\"a\":\"\\ud800\"}",
        "{\"a\":\"\\ud800\\u0041\"}",
        "{\"a\":\"\\udc00\"}",
        "{\"a\":\"\xc0\x80\"}",
        "{\"a\":\"\xed\xa0\x80\"}",
        "{\"a\":\"\xf5\x80\x80\x80\"}",
        "{\"a\":\"\xe2\x82\"}",
        "{\"a\":\"\x80\"}",
        "{\"a\":1}}",
        "{\"a\":1} ",
        "{\"a\":1}x",
        "{,}",
        "{\"a\" 1}",
        "{'a':1}",
        "{\"a\":tru}",
        "{\"a\":1,}",
        "{\"a\":[1,]}",
        "{\"a\":nul}",
        "{         \"a\":1}", /* nine spaces: above the whitespace bound */
    };
    check_table(c, good, N(good), bad, N(bad));
    eng_constraint_destroy(c);
}

static void test_schema_tables(void **state)
{
    (void)state;
    struct {
        const char *schema;
        const char *good[6];
        const char *bad[8];
    } cases[] = {
        {"{\"type\":\"object\",\"properties\":{\"name\":{\"type\":\"string\"},\"age\":{\"type\":"
         "\"integer\"},\"tags\":{\"type\":\"array\",\"items\":{\"type\":\"string\"},"
         "\"maxItems\":2}},\"required\":[\"name\",\"age\"]}",
         {"{\"name\":\"x\",\"age\":3}", "{\"name\":\"\",\"age\":0,\"tags\":[]}",
          "{ \"name\": \"x\", \"age\": -3, \"tags\": [\"a\", \"b\"] }"},
         {"{\"age\":3,\"name\":\"x\"}", "{\"name\":\"x\"}", "{\"name\":\"x\",\"age\":3.5}",
          "{\"name\":\"x\",\"age\":3,\"tags\":[\"a\",\"b\",\"c\"]}",
          "{\"name\":\"x\",\"age\":3,\"extra\":1}", "{\"name\":1,\"age\":3}", "{}"}},
        {"{\"properties\":{\"a\":{\"type\":\"integer\"},\"b\":{\"type\":\"boolean\"},\"c\":{"
         "\"type\":\"null\"}},\"required\":[\"b\"]}",
         {"{\"b\":true}", "{\"a\":1,\"b\":false}", "{\"b\":true,\"c\":null}",
          "{\"a\":1,\"b\":true,\"c\":null}"},
         {"{}", "{\"a\":1}", "{\"c\":null,\"b\":true}", "{\"b\":1}", "{\"b\":true,\"a\":1}"}},
        {"{\"enum\":[\"red\",\"green\",1,null,{\"a\":[1]}]}",
         {"\"red\"", "\"green\"", "1", "null", "{\"a\":[1]}"},
         {"\"blue\"", "12", "{\"a\":[1,2]}", "\"re\"", "true"}},
        {"{\"enum\":[1,12]}", {"1", "12"}, {"123", "2", "1 "}},
        {"{\"const\":\"x\\\"y\"}", {"\"x\\\"y\""}, {"\"x\"", "\"x\\\"y\\\"\""}},
        {"{\"type\":\"integer\"}", {"0", "-12", "123456789012345"}, {"1.5", "1e5", "01", "-"}},
        {"{\"type\":\"number\"}", {"1.5", "-0", "1e5", "1E-2", "0.001"}, {"01", "-", "1.", ".1"}},
        {"{\"type\":\"boolean\"}", {"true", "false"}, {"null", "tru", "1"}},
        {"{\"type\":\"string\",\"minLength\":2,\"maxLength\":3}",
         {"\"ab\"", "\"abc\"", "\"\xc3\xa9\xe2\x82\xac\"", "\"\\u00e9\\n\"", "\"\\uD83D\\uDE00x\""},
         {"\"a\"", "\"abcd\"", "\"\"", "\"\xc3\xa9\""}},
        {"{\"type\":\"array\",\"items\":{\"type\":\"integer\"},\"minItems\":1,\"maxItems\":2}",
         {"[1]", "[1, 2]", "[ 1 ,2 ]"},
         {"[]", "[1,2,3]", "[1.5]", "[\"1\"]"}},
        {"{\"anyOf\":[{\"type\":\"string\"},{\"type\":\"null\"}]}",
         {"\"x\"", "null"},
         {"1", "nul"}},
        {"{\"type\":[\"integer\",\"null\"]}", {"7", "null"}, {"\"7\"", "1.5"}},
        {"{\"$defs\":{\"p\":{\"type\":\"object\",\"properties\":{\"x\":{\"type\":\"number\"}},"
         "\"required\":[\"x\"]}},\"type\":\"array\",\"items\":{\"$ref\":\"#/$defs/p\"}}",
         {"[]", "[{\"x\":1},{\"x\":2.5}]"},
         {"[{}]", "[{\"x\":\"1\"}]"}},
        /* unions that overlap but reduce: covered alternatives and literals dropped */
        {"{\"anyOf\":[{\"type\":\"integer\"},{\"type\":\"number\"}]}",
         {"3", "1.5", "-0"},
         {"\"3\""}},
        {"{\"anyOf\":[{\"type\":\"string\"},{\"enum\":[\"a\",1,true]},{\"const\":false}]}",
         {"\"a\"", "\"zz\"", "1", "true", "false"},
         {"2", "null", "tru"}},
        {"{\"type\":[\"number\",\"integer\",\"null\"]}", {"1", "2.5", "null"}, {"\"1\""}},
        {"{\"anyOf\":[{\"type\":\"object\"},{\"properties\":{\"x\":{\"type\":\"integer\"}}}]}",
         {"{}", "{\"y\":\"z\"}"},
         {"[]"}},
        {"{\"oneOf\":[{\"type\":\"string\"},{\"type\":\"integer\"}]}", {"\"s\"", "1"}, {"1.5"}},
        {"{\"type\":\"object\"}", {"{}", "{\"any\":[1,{\"b\":\"c\"}]}"}, {"[]", "{\"a\"}"}},
        {"{}", {"1", "\"s\"", "[true]", "{\"a\":null}"}, {"", "[", "tru"}},
        /* recursive $ref */
        {"{\"$defs\":{\"n\":{\"type\":\"array\",\"items\":{\"$ref\":\"#/$defs/n\"}}},\"$ref\":"
         "\"#/$defs/n\"}",
         {"[]", "[[]]", "[[],[[]]]"},
         {"[1]", "[[1]]", "[[]"}},
        {TREE_SCHEMA,
         {"{\"v\":1}", "{\"v\":1,\"kids\":[{\"v\":2},{\"v\":3,\"kids\":[]}]}"},
         {"{\"v\":1,\"kids\":[{}]}", "{\"kids\":[]}"}},
        {"{\"type\":\"object\",\"properties\":{\"c\":{\"$ref\":\"#\"}}}",
         {"{}", "{\"c\":{\"c\":{}}}"},
         {"{\"c\":1}"}},
        /* keys needing escapes and UTF-8 are written in their canonical form */
        {"{\"properties\":{\"a\\\"b\":{\"type\":\"null\"},\"Ã©\":{\"type\":\"null\"}},"
         "\"required\":[\"a\\\"b\",\"Ã©\"]}",
         {"{\"a\\\"b\":null,\"Ã©\":null}"},
         {"{\"a\\u0022b\":null,\"Ã©\":null}", "{\"a\\\"b\":null}"}},
        {"{\"type\":\"array\",\"maxItems\":0}", {"[]", "[        ]"}, {"[1]", "[         ]"}},
        {"{\"type\":\"integer\"}", {"123456789012345"}, {"1234567890123456"}},
    };
    for (size_t i = 0; i < N(cases); i++) {
        struct eng_constraint *c = compile(cases[i].schema);
        for (size_t j = 0; j < 6 && cases[i].good[j]; j++) {
            if (!accepts(c, cases[i].good[j])) {
                fail_msg("schema %zu rejected %s", i, cases[i].good[j]);
            }
        }
        for (size_t j = 0; j < 8 && cases[i].bad[j]; j++) {
            if (accepts(c, cases[i].bad[j])) {
                fail_msg("schema %zu accepted %s", i, cases[i].bad[j]);
            }
        }
        eng_constraint_destroy(c);
    }
}

static void test_min_close(void **state)
{
    (void)state;
    struct eng_constraint *c =
        compile("{\"type\":\"object\",\"properties\":{\"name\":{\"type\":\"string\"},\"age\":{"
                "\"type\":\"integer\"}},\"required\":[\"name\",\"age\"]}");
    /* {"name":"","age":0} */
    assert_int_equal(eng_constraint_min_bytes(c), 19);
    struct eng_cstate st;
    eng_cstate_init(&st, c);
    assert_int_equal(eng_cstate_min_close(c, &st), 19);
    const char *pre = "{\"name\":\"ab";
    assert_true(eng_cstate_feed_n(c, &st, pre, strlen(pre)));
    assert_int_equal(eng_cstate_min_close(c, &st), strlen("\",\"age\":0}"));
    /* Split UTF-8: a lead byte needs its continuation bytes first. */
    assert_true(eng_cstate_feed(c, &st, 0xE2));
    assert_int_equal(eng_cstate_min_close(c, &st), 2 + strlen("\",\"age\":0}"));
    assert_false(eng_cstate_feed(c, &(struct eng_cstate){0}, '"'));
    struct eng_cstate st2;
    eng_cstate_copy(&st2, &st);
    assert_false(eng_cstate_feed(c, &st2, '"'));
    assert_true(eng_cstate_feed(c, &st, 0x82));
    assert_true(eng_cstate_feed(c, &st, 0xAC));
    assert_true(eng_cstate_can_continue(c, &st));
    const char *rest = "\",\"age\":42}";
    assert_true(eng_cstate_feed_n(c, &st, rest, strlen(rest)));
    assert_int_equal(eng_cstate_min_close(c, &st), 0);
    assert_false(eng_cstate_can_continue(c, &st));
    eng_constraint_destroy(c);
}

static void test_bad_schemas(void **state)
{
    (void)state;
    struct {
        const char *schema;
        enum wye_err e;
        const char *msg;
    } cases[] = {
        {"{\"type\":\"string\",\"pattern\":\"a+\"}", WYE_ERR_UNSUPPORTED, "'pattern'"},
        {"{\"type\":\"object\",\"properties\":{\"a\":{\"minimum\":1}}}", WYE_ERR_UNSUPPORTED,
         "'minimum' at #/properties/a"},
        {"not json", WYE_ERR_PARSE, "not valid JSON"},
        {"{\"type\":\"strin\"}", WYE_ERR_INVAL, "unknown type 'strin'"},
        {"{\"$ref\":\"#/$defs/x\"}", WYE_ERR_UNSUPPORTED, "'$ref' '#/$defs/x'"},
        {"{\"$ref\":\"http://x/y\"}", WYE_ERR_UNSUPPORTED, "'$ref'"},
        {"{\"$defs\":{\"n\":{\"type\":\"object\",\"properties\":{\"next\":{\"$ref\":\"#/$defs/"
         "n\"}},"
         "\"required\":[\"next\"]}},\"$ref\":\"#/$defs/n\"}",
         WYE_ERR_INVAL, "no finite JSON text"},
        {"{\"$defs\":{\"a\":{\"$ref\":\"#/$defs/b\"},\"b\":{\"$ref\":\"#/$defs/a\"}},\"$ref\":\"#/"
         "$defs/a\"}",
         WYE_ERR_INVAL, "no finite JSON text"},
        {"{\"$defs\":{\"a\":{\"anyOf\":[{\"type\":\"null\"},{\"$ref\":\"#/$defs/a\"}]}},\"$ref\":"
         "\"#/$defs/a\"}",
         WYE_ERR_UNSUPPORTED, "recursive '$ref' directly as an alternative"},
        {"{\"oneOf\":[{\"type\":\"integer\"},{\"type\":\"number\"}]}", WYE_ERR_UNSUPPORTED,
         "both start"},
        {"{\"anyOf\":[{\"properties\":{\"a\":{}}},{\"properties\":{\"b\":{}}}]}",
         WYE_ERR_UNSUPPORTED, "both start with '{'"},
        {"{\"anyOf\":[{\"type\":\"string\",\"maxLength\":2},{\"type\":\"string\",\"minLength\":1}]"
         "}",
         WYE_ERR_UNSUPPORTED, "both start"},
        {"{\"required\":[\"x\"],\"properties\":{}}", WYE_ERR_UNSUPPORTED, "required property 'x'"},
        {"{\"type\":\"array\",\"minItems\":3,\"maxItems\":2}", WYE_ERR_INVAL, "minItems"},
        {"{\"enum\":[]}", WYE_ERR_INVAL, "'enum'"},
        {"{\"type\":\"string\",\"enum\":[1,2]}", WYE_ERR_INVAL, "no 'enum' value"},
        {"{\"type\":\"string\",\"maxLength\":-1}", WYE_ERR_INVAL, "'maxLength'"},
        {"false", WYE_ERR_INVAL, "must be an object"},
        {"{\"allOf\":[{}]}", WYE_ERR_UNSUPPORTED, "'allOf'"},
        {"{\"$defs\":{\"a\":{}},\"$ref\":\"#/$defs/a\",\"type\":\"string\"}", WYE_ERR_UNSUPPORTED,
         "'type' beside '$ref'"},
        {"{\"type\":\"array\",\"maxItems\":1.5}", WYE_ERR_INVAL, "'maxItems'"},
        {"{\"type\":\"array\",\"minItems\":1e300}", WYE_ERR_TOOBIG, "'minItems'"},
        {"{\"type\":\"integer\",\"enum\":[1e300]}", WYE_ERR_INVAL, "no 'enum' value"},
        {"{\"type\":\"array\",\"prefixItems\":[{}]}", WYE_ERR_UNSUPPORTED, "'prefixItems'"},
        /* cJSON prints a number beyond the double range as null: the literal would have been
         * a null even under "type":"number" (fuzz_schema found it). */
        {"{\"type\":\"number\",\"enum\":[\"a\",1e400,null]}", WYE_ERR_UNSUPPORTED,
         "'enum' value has a number beyond the range of a double"},
        {"{\"const\":{\"a\":[1,-1e999]}}", WYE_ERR_UNSUPPORTED, "'const' value has a number"},
        /* Not UTF-8: literals and keys would force invalid UTF-8 out of the model. */
        {"{\"const\":\"\xff\"}", WYE_ERR_PARSE, "not valid UTF-8 (byte 10)"},
        {"{\"enum\":[\"\xe2\x82\"]}", WYE_ERR_PARSE, "not valid UTF-8"},
        /* A NUL ends cJSON's strings: the key or value would lose its tail. */
        {"{\"const\":\"a\\u0000b\"}", WYE_ERR_UNSUPPORTED, "NUL character"},
        {"{\"properties\":{\"k\\u0000x\":{}},\"required\":[\"k\"]}", WYE_ERR_UNSUPPORTED,
         "NUL character"},
        /* Keywords enum/const and anyOf/oneOf would leave unused while they still constrain
         * the value: "a" broke minLength (fuzz_schema's validator found it). */
        {"{\"enum\":[\"a\",\"abc\"],\"minLength\":2}", WYE_ERR_UNSUPPORTED,
         "'minLength' beside 'enum'"},
        {"{\"type\":\"array\",\"const\":[1],\"minItems\":2}", WYE_ERR_UNSUPPORTED,
         "'minItems' beside 'const'"},
        {"{\"enum\":[1],\"anyOf\":[{\"type\":\"string\"}]}", WYE_ERR_UNSUPPORTED,
         "'anyOf' beside 'enum'"},
        {"{\"anyOf\":[{\"type\":\"object\"}],\"required\":[\"a\"],\"properties\":{\"a\":{}}}",
         WYE_ERR_UNSUPPORTED, "'required' beside 'anyOf'"},
        {"{\"anyOf\":[{\"type\":\"null\"}],\"oneOf\":[{\"type\":\"string\"}]}", WYE_ERR_UNSUPPORTED,
         "'oneOf' beside 'anyOf'"},
        {"{\"oneOf\":[{\"type\":\"string\"},{\"type\":\"null\"}],\"maxLength\":1}",
         WYE_ERR_UNSUPPORTED, "'maxLength' beside 'oneOf'"},
        {"{\"enum\":[1],\"const\":1}", WYE_ERR_UNSUPPORTED, "'enum' together with 'const'"},
        /* 4096^3 items: too big, not "no finite text" (the sums saturate to the same value
         * as "unknown"; only a recursive schema can leave a node unknown). */
        {"{\"properties\":{\"a\":{\"items\":{\"items\":{\"items\":{\"type\":\"integer\"},"
         "\"minItems\":4096},\"minItems\":4096},\"minItems\":4096}}}",
         WYE_ERR_TOOBIG, "no value shorter than 4 GiB"},
    };
    for (size_t i = 0; i < N(cases); i++) {
        struct eng_constraint *c = (struct eng_constraint *)1;
        char err[256] = "";
        enum wye_err e =
            eng_constraint_compile(cases[i].schema, strlen(cases[i].schema), &c, err, sizeof(err));
        if (e != cases[i].e || !strstr(err, cases[i].msg)) {
            fail_msg("%s: got %s '%s', want %s '%s'", cases[i].schema, wye_err_str(e), err,
                     wye_err_str(cases[i].e), cases[i].msg);
        }
        assert_null(c);
    }
    /* Nesting beyond the matcher's stack. */
    char deep[2048] = "";
    for (int i = 0; i < 40; i++) {
        strcat(deep, "{\"type\":\"array\",\"items\":");
    }
    strcat(deep, "{}");
    for (int i = 0; i < 40; i++) {
        strcat(deep, "}");
    }
    struct eng_constraint *c = NULL;
    char err[256] = "";
    assert_int_equal(eng_constraint_compile(deep, strlen(deep), &c, err, sizeof(err)),
                     WYE_ERR_TOOBIG);
    assert_non_null(strstr(err, "deeper"));

    /* What those checks must still let through: an escaped backslash before "u0000", an
     * escaped quote, characters beyond ASCII, a large finite number. */
    c = compile("{\"enum\":[\"\\\\u0000\",\"\\\"\",\"\xc3\xa9\xf0\x9f\x98\x80\",1e300]}");
    static const char *const good[] = {"\"\\\\u0000\"", "\"\\\"\"", "\"\xc3\xa9\xf0\x9f\x98\x80\"",
                                       "1e+300"};
    static const char *const bad[] = {"null", "\"\""};
    check_table(c, good, N(good), bad, N(bad));
    eng_constraint_destroy(c);
    /* and annotations and type beside enum, annotations beside anyOf. */
    c = compile("{\"type\":\"string\",\"enum\":[\"a\",1],\"title\":\"t\",\"default\":\"a\"}");
    eng_constraint_destroy(c);
    c = compile("{\"anyOf\":[{\"type\":\"null\"}],\"description\":\"d\",\"$defs\":{}}");
    eng_constraint_destroy(c);
}

static bool random_step(const struct eng_constraint *c, struct eng_cstate *st, uint64_t *rng);

/* Recursion stops at the stack: openings are refused once the shortest value would no
 * longer fit, and everything still closes. */
static void test_recursion_cap(void **state)
{
    (void)state;
    struct eng_constraint *c = compile("{\"$defs\":{\"n\":{\"type\":\"array\",\"items\":{\"$ref\":"
                                       "\"#/$defs/n\"}}},\"$ref\":\"#/$defs/n\"}");
    struct eng_cstate st;
    eng_cstate_init(&st, c);
    uint32_t open = 0;
    struct eng_cstate t; /* a rejected byte leaves a state unspecified: feed copies */
    for (;;) {
        eng_cstate_copy(&t, &st);
        if (open >= 100 || !eng_cstate_feed(c, &t, '[')) {
            break;
        }
        eng_cstate_copy(&st, &t);
        open++;
        assert_int_equal(eng_cstate_min_close(c, &st), open);
    }
    assert_int_equal(open, ENG_CONSTRAIN_STACK_MAX - 1);
    for (uint32_t i = 0; i < open; i++) {
        assert_true(eng_cstate_feed(c, &st, ']'));
    }
    assert_int_equal(eng_cstate_min_close(c, &st), 0);
    eng_constraint_destroy(c);
    /* The tree: keys whose values cannot fit are refused, the rest stays exact. */
    c = compile(TREE_SCHEMA);
    eng_cstate_init(&st, c);
    const char *step = "{\"v\":1,\"kids\":[";
    int levels = 0;
    for (;;) {
        eng_cstate_copy(&t, &st);
        if (levels >= 40 || !eng_cstate_feed_n(c, &t, step, strlen(step))) {
            break;
        }
        eng_cstate_copy(&st, &t);
        levels++;
    }
    assert_true(levels > 5 && levels < 20);
    uint64_t rng = 5;
    for (int i = 0; i < 300 && eng_cstate_can_continue(c, &st); i++) {
        eng_cstate_copy(&t, &st);
        if (!random_step(c, &t, &rng)) {
            break;
        }
        eng_cstate_copy(&st, &t);
    }
    eng_constraint_destroy(c);
}

/* ---- the mask against brute force ---- */

static size_t piece_cb(void *arg, int32_t id, char *buf, size_t n)
{
    return eng_model_token_piece(arg, id, buf, n, false);
}

static bool eog_cb(void *arg, int32_t id)
{
    const struct eng_model *m = arg;
    return eng_tok_is_eog(m->tok, id);
}

static uint64_t rng_next(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

/* Random walk: a byte chosen among those the matcher takes. Checks on the way that every
 * reached state has a byte lowering the shortest completion by exactly one (what the
 * budget rule relies on) unless it is accepting. */
static bool random_step(const struct eng_constraint *c, struct eng_cstate *st, uint64_t *rng)
{
    uint8_t ok[256];
    int n = 0;
    uint32_t mc = eng_cstate_min_close(c, st);
    bool progress = mc == 0;
    for (int b = 0; b < 256; b++) {
        struct eng_cstate t;
        eng_cstate_copy(&t, st);
        if (eng_cstate_feed(c, &t, (uint8_t)b)) {
            ok[n++] = (uint8_t)b;
            progress |= eng_cstate_min_close(c, &t) + 1 == mc;
            assert_true(eng_cstate_min_close(c, &t) + 1 >= mc);
        }
    }
    if (!progress) {
        for (uint32_t i = 0; i < st->sp; i++) {
            print_message("frame %u: node %u ph %u ws %u a %u b %u c %u\n", i, st->f[i].node,
                          st->f[i].ph, st->f[i].ws, st->f[i].a, st->f[i].b, st->f[i].c);
        }
        fail_msg("state with shortest completion %u has no byte towards it", mc);
    }
    if (n == 0) {
        return false;
    }
    /* Prefer closing bytes now and then so that walks also reach deep and final states. */
    return eng_cstate_feed(c, st, ok[rng_next(rng) % (uint64_t)n]);
}

static void check_mask(struct eng_cmask *mk, const struct eng_model *m,
                       const struct eng_constraint *c, const struct eng_cstate *st, int32_t budget)
{
    int32_t n_vocab = eng_cmask_n_vocab(mk);
    int32_t count = eng_cmask_compute(mk, c, st, budget);
    int32_t want = 0;
    uint32_t mc = eng_cstate_min_close(c, st);
    for (int32_t id = 0; id < n_vocab; id++) {
        char buf[600];
        bool allowed;
        if (eog_cb((void *)m, id)) {
            allowed = mc == 0;
        } else {
            size_t len = eng_model_token_piece(m, id, buf, sizeof(buf), false);
            struct eng_cstate t;
            eng_cstate_copy(&t, st);
            allowed = len > 0 && len <= sizeof(buf) && eng_cstate_feed_n(c, &t, buf, len) &&
                      (budget <= 0 || eng_cstate_min_close(c, &t) <= (uint32_t)(budget - 1));
        }
        want += allowed;
        if (allowed != eng_cmask_allowed(mk, id)) {
            fail_msg("token %d: trie walk says %d, brute force %d", id, eng_cmask_allowed(mk, id),
                     allowed);
        }
    }
    assert_int_equal(count, want);
    assert_true(count > 0);
}

static void mask_vs_brute(const char *path, bool vocab_only, int n_states)
{
    char err[512] = "";
    struct eng_model *m = NULL;
    enum wye_err e = vocab_only ? eng_model_load_vocab(path, &m, err, sizeof(err))
                                : eng_model_load(path, &m, err, sizeof(err));
    if (e) {
        fail_msg("%s: %s", path, err);
    }
    struct eng_model_info info;
    eng_model_get_info(m, &info);
    struct eng_cmask *mk = NULL;
    assert_int_equal(eng_cmask_create(info.n_vocab, piece_cb, eog_cb, m, &mk, err, sizeof(err)),
                     WYE_OK);
    const char *schemas[] = {
        "{\"type\":\"object\",\"properties\":{\"name\":{\"type\":\"string\",\"maxLength\":5},"
        "\"n\":{\"type\":\"number\"},\"e\":{\"enum\":[\"a b\",\"c\",7]},\"l\":{\"type\":\"array\","
        "\"items\":{\"type\":[\"integer\",\"null\"]},\"maxItems\":3}},\"required\":[\"name\"]}",
        TREE_SCHEMA, NULL, /* json_object */
    };
    uint64_t rng = 0x9e3779b97f4a7c15ULL;
    for (size_t k = 0; k < N(schemas); k++) {
        struct eng_constraint *c = schemas[k] ? compile(schemas[k]) : json_object();
        for (int i = 0; i < n_states; i++) {
            struct eng_cstate st;
            eng_cstate_init(&st, c);
            int len = (int)(rng_next(&rng) % 40);
            for (int j = 0; j < len && eng_cstate_can_continue(c, &st); j++) {
                assert_true(random_step(c, &st, &rng));
            }
            check_mask(mk, m, c, &st, 0);
            int32_t mc = (int32_t)eng_cstate_min_close(c, &st);
            check_mask(mk, m, c, &st, mc + 1 + (int32_t)(rng_next(&rng) % 3));
        }
        /* Fixed states: inside strings (the all-plain-tokens shortcut, with and without room
         * under maxLength and the budget), mid-escape, mid-UTF-8, in a number, done. */
        static const char *const prefixes[] = {
            "{\"name\":\"ab",          "{\"name\":\"abcd", "{\"name\":\"\\", "{\"name\":\"\xe2",
            "{\"name\":\"a\",\"n\":1", "{\"name\":\"a\"}", "{\"k\":\"x",     "{\"k\":[1,{\"j\":\"",
        };
        for (size_t i = 0; i < N(prefixes); i++) {
            struct eng_cstate st;
            eng_cstate_init(&st, c);
            if (!eng_cstate_feed_n(c, &st, prefixes[i], strlen(prefixes[i]))) {
                continue; /* a prefix for the other schema */
            }
            int32_t mc = (int32_t)eng_cstate_min_close(c, &st);
            check_mask(mk, m, c, &st, 0);
            check_mask(mk, m, c, &st, mc + 1);
            check_mask(mk, m, c, &st, mc + 2);
            check_mask(mk, m, c, &st, mc + 40);
        }
        eng_constraint_destroy(c);
    }
    eng_cmask_destroy(mk);
    eng_model_destroy(m);
}

static void test_mask_stories(void **state)
{
    (void)state;
    char path[512];
    snprintf(path, sizeof(path), "%s/models/stories260K-f32.gguf", WYE_SHARED_DIR);
    mask_vs_brute(path, false, 60);
}

static void test_mask_qwen2(void **state)
{
    (void)state;
    char path[512];
    snprintf(path, sizeof(path), "%s/vocab/ggml-vocab-qwen2.gguf", WYE_SHARED_DIR);
    mask_vs_brute(path, true, 6);
}

/* Mutated schemas (bytes replaced, dropped, duplicated): compiling never crashes and gives
 * either an error message or a matcher whose reachable states all have a byte that brings
 * the shortest completion one closer (no dead ends, exact costs). */
static void test_fuzz_schemas(void **state)
{
    (void)state;
    static const char *const seeds[] = {
        "{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"string\",\"minLength\":2,"
        "\"maxLength\":4},\"b\":{\"type\":\"array\",\"items\":{\"enum\":[1,\"x\",null]},"
        "\"minItems\":1,\"maxItems\":3},\"c\":{\"anyOf\":[{\"type\":\"integer\"},{\"type\":"
        "\"null\"}]}},\"required\":[\"a\",\"c\"]}",
        "{\"$defs\":{\"p\":{\"type\":[\"number\",\"boolean\"]}},\"type\":\"array\",\"items\":"
        "{\"properties\":{\"k\":{\"$ref\":\"#/$defs/p\"},\"o\":{\"type\":\"object\"}},"
        "\"required\":[\"k\"]},\"minItems\":2}",
    };
    static const char alphabet[] = "{}[]\":,0123456789-abcdefghijklmnopqrstuvwxyz$#/ ";
    uint64_t rng = 12345;
    int compiled = 0;
    for (int it = 0; it < 3000; it++) {
        const char *seed = seeds[it % 2];
        char buf[1024];
        size_t n = strlen(seed);
        memcpy(buf, seed, n);
        for (int k = 0; k < 1 + (int)(rng_next(&rng) % 3); k++) {
            size_t at = (size_t)(rng_next(&rng) % n);
            switch (rng_next(&rng) % 3) {
            case 0:
                buf[at] = alphabet[rng_next(&rng) % (sizeof(alphabet) - 1)];
                break;
            case 1:
                memmove(buf + at, buf + at + 1, n - at - 1);
                n--;
                break;
            default:
                if (n + 1 < sizeof(buf)) {
                    memmove(buf + at + 1, buf + at, n - at);
                    n++;
                }
                break;
            }
        }
        struct eng_constraint *c = NULL;
        char err[256] = "";
        enum wye_err e = eng_constraint_compile(buf, n, &c, err, sizeof(err));
        if (e) {
            assert_null(c);
            assert_true(err[0] != '\0');
            continue;
        }
        compiled++;
        struct eng_cstate st;
        eng_cstate_init(&st, c);
        for (int j = 0; j < 60 && eng_cstate_can_continue(c, &st); j++) {
            if (!random_step(c, &st, &rng)) {
                break;
            }
        }
        eng_constraint_destroy(c);
    }
    print_message("%d of 3000 mutated schemas compiled\n", compiled);
    assert_true(compiled > 20);
}

/* Appends a random schema of the supported subset to b (at most depth levels). */
static void rand_schema(char *b, size_t cap, uint64_t *rng, int depth)
{
    size_t n = strlen(b);
    int kind = (int)(rng_next(rng) % (depth > 0 ? 10 : 6));
    unsigned lo = (unsigned)(rng_next(rng) % 3), hi = lo + (unsigned)(rng_next(rng) % 3);
    switch (kind) {
    case 0:
        snprintf(b + n, cap - n, "{\"type\":\"string\",\"minLength\":%u,\"maxLength\":%u}", lo, hi);
        return;
    case 1:
        snprintf(b + n, cap - n, "{\"type\":\"%s\"}", rng_next(rng) % 2 ? "integer" : "number");
        return;
    case 2:
        snprintf(b + n, cap - n, "{\"type\":\"%s\"}", rng_next(rng) % 2 ? "boolean" : "null");
        return;
    case 3:
        snprintf(b + n, cap - n, "{\"enum\":[%s]}",
                 rng_next(rng) % 2 ? "1,12,\"a\",\"ab\",null" : "[1],{\"k\":\"v\"},-0.5");
        return;
    case 4:
        snprintf(b + n, cap - n, "{\"type\":[\"string\",\"null\"],\"maxLength\":%u}", hi);
        return;
    case 5:
        snprintf(b + n, cap - n, "%s", rng_next(rng) % 2 ? "{}" : "{\"type\":\"object\"}");
        return;
    case 6:
        snprintf(b + n, cap - n,
                 "{\"type\":\"array\",\"minItems\":%u,\"maxItems\":%u,\"items\":", lo, hi);
        rand_schema(b, cap, rng, depth - 1);
        n = strlen(b);
        snprintf(b + n, cap - n, "}");
        return;
    case 7: {
        int np = 1 + (int)(rng_next(rng) % 3);
        char req[64] = "";
        snprintf(b + n, cap - n, "{\"type\":\"object\",\"properties\":{");
        for (int i = 0; i < np; i++) {
            n = strlen(b);
            snprintf(b + n, cap - n, "%s\"p%d\":", i ? "," : "", i);
            rand_schema(b, cap, rng, depth - 1);
            if (rng_next(rng) % 2) {
                size_t r = strlen(req);
                snprintf(req + r, sizeof(req) - r, "%s\"p%d\"", r ? "," : "", i);
            }
        }
        n = strlen(b);
        snprintf(b + n, cap - n, "},\"required\":[%s]}", req);
        return;
    }
    case 9: /* recursion through the root */
        snprintf(b + n, cap - n, "{\"type\":\"array\",\"maxItems\":2,\"items\":{\"$ref\":\"#\"}}");
        return;
    default:
        snprintf(b + n, cap - n, "{\"anyOf\":[");
        rand_schema(b, cap, rng, depth - 1);
        n = strlen(b);
        snprintf(b + n, cap - n, ",");
        rand_schema(b, cap, rng, depth - 1);
        n = strlen(b);
        snprintf(b + n, cap - n, "]}");
        return;
    }
}

/* Random schemas of the supported subset: each compiles (or names an overlapping anyOf),
 * random walks meet no dead end, and every complete walk is JSON valid under the schema by
 * the matcher's own acceptance and by cJSON. */
static void test_random_schemas(void **state)
{
    (void)state;
    uint64_t rng = 777;
    int ok = 0, complete = 0, n_rec = 0;
    for (int it = 0; it < 400; it++) {
        char schema[8192] = "";
        rand_schema(schema, sizeof(schema), &rng, 3);
        struct eng_constraint *c = NULL;
        char err[256] = "";
        enum wye_err e = eng_constraint_compile(schema, strlen(schema), &c, err, sizeof(err));
        if (e) {
            if (!strstr(err, "both start")) {
                fail_msg("%s: %s", schema, err);
            }
            continue;
        }
        ok++;
        n_rec += strstr(schema, "$ref") != NULL;
        for (int w = 0; w < 4; w++) {
            struct eng_cstate st;
            eng_cstate_init(&st, c);
            char text[512];
            size_t n = 0;
            /* Random bytes for a while, then always a byte that brings the end closer. */
            for (int j = 0; j < 400 && eng_cstate_can_continue(c, &st) && n < 500; j++) {
                uint32_t mc = eng_cstate_min_close(c, &st);
                if (mc == 0 && j > 30) {
                    break;
                }
                struct eng_cstate prev;
                eng_cstate_copy(&prev, &st);
                if (j < 30) {
                    if (!random_step(c, &st, &rng)) {
                        break;
                    }
                } else {
                    bool moved = false;
                    for (int b = 0; b < 256 && !moved; b++) {
                        eng_cstate_copy(&st, &prev);
                        moved = eng_cstate_feed(c, &st, (uint8_t)b) &&
                                eng_cstate_min_close(c, &st) + 1 == mc;
                    }
                    assert_true(moved);
                }
                /* Recover the byte taken: the one that turns prev into st. */
                for (int b = 0; b < 256; b++) {
                    struct eng_cstate t;
                    eng_cstate_copy(&t, &prev);
                    if (eng_cstate_feed(c, &t, (uint8_t)b) && t.sp == st.sp &&
                        memcmp(t.f, st.f, st.sp * sizeof(st.f[0])) == 0) {
                        text[n++] = (char)b;
                        break;
                    }
                }
            }
            text[n] = '\0';
            if (eng_cstate_min_close(c, &st) == 0) {
                complete++;
                assert_true(accepts(c, text));
                cJSON *v = cJSON_Parse(text);
                if (!v) {
                    fail_msg("schema %s: complete text is not JSON: %s", schema, text);
                }
                cJSON_Delete(v);
            }
        }
        eng_constraint_destroy(c);
    }
    print_message("%d of 400 random schemas compiled (%d recursive), %d complete walks\n", ok,
                  n_rec, complete);
    assert_true(n_rec > 20);
    assert_true(ok > 200);
    assert_true(complete > 400);
}

/* The schema cache: hits share one compiled constraint, misses compile, errors are not
 * cached, and an evicted (or cache-destroyed) constraint stays usable while referenced. */
static void test_cache(void **state)
{
    (void)state;
    const char *a = "{\"type\":\"integer\"}", *b = "{\"type\":\"boolean\"}";
    const char *bad = "{\"type\":\"string\",\"pattern\":\"x\"}";
    struct eng_constraint_cache *cc = NULL;
    assert_int_equal(eng_constraint_cache_create(0, &cc), WYE_ERR_INVAL);
    assert_int_equal(eng_constraint_cache_create(2, &cc), WYE_OK);
    struct eng_constraint *a1, *a2, *j1, *j2, *b1, *a3, *x = NULL;
    char err[256] = "";
    assert_int_equal(eng_constraint_cache_get(cc, a, strlen(a), &a1, err, sizeof(err)), WYE_OK);
    assert_int_equal(eng_constraint_cache_get(cc, a, strlen(a), &a2, err, sizeof(err)), WYE_OK);
    assert_ptr_equal(a1, a2);
    assert_int_equal(eng_constraint_cache_get(cc, NULL, 0, &j1, err, sizeof(err)), WYE_OK);
    assert_int_equal(eng_constraint_cache_get(cc, NULL, 0, &j2, err, sizeof(err)), WYE_OK);
    assert_ptr_equal(j1, j2);
    assert_ptr_not_equal(j1, a1);
    assert_true(accepts(j1, "{}"));
    assert_int_equal(eng_constraint_cache_get(cc, bad, strlen(bad), &x, err, sizeof(err)),
                     WYE_ERR_UNSUPPORTED);
    assert_null(x);
    assert_non_null(strstr(err, "'pattern'"));
    /* b evicts the least recently used entry (a); our references keep a alive. */
    assert_int_equal(eng_constraint_cache_get(cc, b, strlen(b), &b1, err, sizeof(err)), WYE_OK);
    assert_int_equal(eng_constraint_cache_get(cc, a, strlen(a), &a3, err, sizeof(err)), WYE_OK);
    assert_ptr_not_equal(a3, a1);
    assert_true(accepts(a1, "-12") && accepts(a3, "7") && accepts(b1, "true"));
    eng_constraint_cache_destroy(cc);
    assert_true(accepts(a1, "3") && !accepts(a1, "1.5"));
    struct eng_constraint *all[] = {a1, a2, j1, j2, b1, a3};
    for (size_t i = 0; i < N(all); i++) {
        eng_constraint_destroy(all[i]);
    }
}

/* Every allocation of the compiler and of the trie builder failing in turn: NOMEM with a
 * message, no leak (ASan), then success once enough allocations are allowed. */
static void test_alloc_failures(void **state)
{
    (void)state;
    const char *schema =
        "{\"$defs\":{\"p\":{\"enum\":[\"a\",\"b\",1]}},\"type\":\"object\",\"properties\":{"
        "\"x\":{\"$ref\":\"#/$defs/p\"},\"y\":{\"type\":\"array\",\"items\":{\"type\":["
        "\"string\",\"null\"],\"maxLength\":3}},\"z\":{\"type\":\"boolean\"}},\"required\":[\"y\"]"
        "}";
    wye_alloc_install_cjson_hooks();
    bool ok = false;
    for (long n = 0; n < 10000 && !ok; n++) {
        struct eng_constraint *c = NULL;
        char err[256] = "";
        wye_alloc_fail_after(n);
        enum wye_err e = eng_constraint_compile(schema, strlen(schema), &c, err, sizeof(err));
        wye_alloc_fail_after(-1);
        if (e == WYE_OK) {
            ok = true;
            assert_true(accepts(c, "{\"x\":\"a\",\"y\":[null,\"abc\"]}"));
            eng_constraint_destroy(c);
        } else {
            assert_int_equal(e, WYE_ERR_NOMEM);
            assert_non_null(strstr(err, "out of memory"));
            assert_null(c);
        }
    }
    assert_true(ok);
    char path[512];
    snprintf(path, sizeof(path), "%s/models/stories260K-f32.gguf", WYE_SHARED_DIR);
    struct eng_model *m = NULL;
    char err[256] = "";
    assert_int_equal(eng_model_load(path, &m, err, sizeof(err)), WYE_OK);
    ok = false;
    for (long n = 0; n < 1000 && !ok; n++) {
        struct eng_cmask *mk = NULL;
        wye_alloc_fail_after(n);
        enum wye_err e = eng_cmask_create(512, piece_cb, eog_cb, m, &mk, err, sizeof(err));
        wye_alloc_fail_after(-1);
        ok = e == WYE_OK;
        if (!ok) {
            assert_int_equal(e, WYE_ERR_NOMEM);
            assert_null(mk);
        }
        eng_cmask_destroy(mk);
    }
    assert_true(ok);
    eng_model_destroy(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_json_object_table),
        cmocka_unit_test(test_schema_tables),
        cmocka_unit_test(test_min_close),
        cmocka_unit_test(test_recursion_cap),
        cmocka_unit_test(test_bad_schemas),
        cmocka_unit_test(test_mask_stories),
        cmocka_unit_test(test_mask_qwen2),
        cmocka_unit_test(test_alloc_failures),
        cmocka_unit_test(test_cache),
        cmocka_unit_test(test_fuzz_schemas),
        cmocka_unit_test(test_random_schemas),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
