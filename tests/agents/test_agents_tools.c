/* Tool argument validation (the JSON Schema subset) and the tool-call parsers: OpenAI delta
 * assembly, Qwen2.5/Hermes <tool_call> blocks and Llama-3 JSON calls, well-formed and broken. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <cmocka.h>

#include "agents/agents.h"
#include "common/alloc.h"

static const char *order_schema =
    "{\"type\":\"object\",\"properties\":{\"order_id\":{\"type\":\"string\",\"minLength\":1},"
    "\"reason\":{\"type\":\"string\",\"enum\":[\"damaged\",\"late\"]},"
    "\"qty\":{\"type\":\"integer\",\"minimum\":1,\"maximum\":10},"
    "\"tags\":{\"type\":\"array\",\"items\":{\"type\":\"string\"},\"maxItems\":2}},"
    "\"required\":[\"order_id\"],\"additionalProperties\":false}";

static void expect_bad(const char *args, const char *msg)
{
    char eb[256] = "";
    enum wye_err err = agent_schema_check(order_schema, args, eb, sizeof(eb));
    assert_int_not_equal(err, WYE_OK);
    if (!strstr(eb, msg)) {
        fail_msg("args %s: got '%s', want '%s'", args, eb, msg);
    }
}

static void test_schema(void **state)
{
    (void)state;
    char eb[256];
    assert_int_equal(agent_schema_check(order_schema, "{\"order_id\":\"1234\"}", eb, sizeof(eb)),
                     WYE_OK);
    assert_int_equal(agent_schema_check(order_schema,
                                        "{\"order_id\":\"1\",\"reason\":\"late\",\"qty\":3,"
                                        "\"tags\":[\"a\"]}",
                                        eb, sizeof(eb)),
                     WYE_OK);
    expect_bad("{\"order_id\":1234}", "argument 'order_id' must be a string");
    expect_bad("{}", "argument 'order_id' is required");
    expect_bad("{\"order_id\":\"\"}", "argument 'order_id' must be at least 1 characters");
    expect_bad("{\"order_id\":\"1\",\"reason\":\"bored\"}",
               "argument 'reason' must be one of [\"damaged\",\"late\"]");
    expect_bad("{\"order_id\":\"1\",\"qty\":2.5}", "argument 'qty' must be an integer");
    expect_bad("{\"order_id\":\"1\",\"qty\":11}", "argument 'qty' must be at most 10");
    expect_bad("{\"order_id\":\"1\",\"qty\":0}", "argument 'qty' must be at least 1");
    expect_bad("{\"order_id\":\"1\",\"tags\":[\"a\",2]}", "argument 'tags[1]' must be a string");
    expect_bad("{\"order_id\":\"1\",\"tags\":[\"a\",\"b\",\"c\"]}", "at most 2 items");
    expect_bad("{\"order_id\":\"1\",\"extra\":true}", "argument 'extra' is not allowed");
    expect_bad("[1]", "the arguments must be an object");
    assert_int_equal(agent_schema_check(order_schema, "{\"order_id\":", eb, sizeof(eb)),
                     WYE_ERR_PARSE);
    assert_non_null(strstr(eb, "not valid JSON"));
    /* nested objects name the path */
    const char *nested = "{\"type\":\"object\",\"properties\":{\"addr\":{\"type\":\"object\","
                         "\"properties\":{\"zip\":{\"type\":\"string\"}},\"required\":[\"zip\"]}}}";
    assert_int_equal(agent_schema_check(nested, "{\"addr\":{}}", eb, sizeof(eb)), WYE_ERR_INVAL);
    assert_string_equal(eb, "argument 'addr.zip' is required");
    /* no schema / empty schema: anything goes */
    assert_int_equal(agent_schema_check("{}", "{\"x\":1}", eb, sizeof(eb)), WYE_OK);
}

/* Checks calls_json holds n calls and call i has name and arguments equal to args (JSON). */
static void expect_call(const char *calls_json, int n, int i, const char *name, const char *args)
{
    cJSON *a = cJSON_Parse(calls_json);
    assert_non_null(a);
    assert_int_equal(cJSON_GetArraySize(a), n);
    cJSON *c = cJSON_GetArrayItem(a, i);
    cJSON *f = cJSON_GetObjectItemCaseSensitive(c, "function");
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(f, "name")->valuestring, name);
    cJSON *got = cJSON_Parse(cJSON_GetObjectItemCaseSensitive(f, "arguments")->valuestring);
    cJSON *want = cJSON_Parse(args);
    assert_true(cJSON_Compare(got, want, true));
    assert_true(cJSON_GetObjectItemCaseSensitive(c, "id")->valuestring[0] != '\0');
    cJSON_Delete(got);
    cJSON_Delete(want);
    cJSON_Delete(a);
}

static void test_hermes(void **state)
{
    (void)state;
    char *calls = NULL, *content = NULL, eb[256];
    const char *one = "Let me check.\n<tool_call>\n{\"name\": \"order_lookup\", \"arguments\": "
                      "{\"order_id\": \"1234\"}}\n</tool_call>";
    assert_int_equal(agent_toolparse(AGENT_TOOLFMT_HERMES, one, &calls, &content, eb, sizeof(eb)),
                     WYE_OK);
    expect_call(calls, 1, 0, "order_lookup", "{\"order_id\":\"1234\"}");
    assert_string_equal(content, "Let me check.\n");
    wye_free(calls);
    wye_free(content);

    const char *two = "<tool_call>{\"name\":\"a\",\"arguments\":{}}</tool_call>\n"
                      "<tool_call>{\"name\":\"b\",\"arguments\":{\"x\":[1,2]}}</tool_call>";
    assert_int_equal(agent_toolparse(AGENT_TOOLFMT_HERMES, two, &calls, &content, eb, sizeof(eb)),
                     WYE_OK);
    expect_call(calls, 2, 0, "a", "{}");
    expect_call(calls, 2, 1, "b", "{\"x\":[1,2]}");
    wye_free(calls);
    wye_free(content);

    /* plain text: no calls */
    assert_int_equal(agent_toolparse(AGENT_TOOLFMT_HERMES, "Your order shipped.", &calls, &content,
                                     eb, sizeof(eb)),
                     WYE_OK);
    assert_null(calls);
    assert_string_equal(content, "Your order shipped.");
    wye_free(content);

    struct {
        const char *text, *msg;
    } bad[] = {
        {"<tool_call>{\"name\":\"a\",\"arguments\":{}}", "without </tool_call>"},
        {"<tool_call>{\"name\":\"a\",\"arguments\":{</tool_call>", "not valid JSON"},
        {"<tool_call>{\"arguments\":{}}</tool_call>", "needs a \"name\" string"},
        {"<tool_call>{\"name\":\"a\",\"arguments\":[1]}</tool_call>", "must be a JSON object"},
        {"<tool_call>{\"name\":\"a\"} trailing</tool_call>", "text after its JSON object"},
        {"<tool_call></tool_call>", "not valid JSON"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        eb[0] = '\0';
        assert_int_equal(
            agent_toolparse(AGENT_TOOLFMT_HERMES, bad[i].text, &calls, &content, eb, sizeof(eb)),
            WYE_ERR_PARSE);
        assert_null(calls);
        assert_null(content);
        if (!strstr(eb, bad[i].msg)) {
            fail_msg("'%s': got '%s', want '%s'", bad[i].text, eb, bad[i].msg);
        }
    }
}

static void test_llama3(void **state)
{
    (void)state;
    char *calls = NULL, *content = NULL, eb[256];
    const char *tagged = "<|python_tag|>{\"name\": \"order_lookup\", \"parameters\": "
                         "{\"order_id\": \"77\"}}<|eom_id|>";
    assert_int_equal(
        agent_toolparse(AGENT_TOOLFMT_LLAMA3, tagged, &calls, &content, eb, sizeof(eb)), WYE_OK);
    expect_call(calls, 1, 0, "order_lookup", "{\"order_id\":\"77\"}");
    wye_free(calls);
    wye_free(content);

    const char *bare = "  {\"name\":\"a\",\"parameters\":{\"q\":\"x\"}}; {\"name\":\"b\","
                       "\"parameters\":{}}";
    assert_int_equal(agent_toolparse(AGENT_TOOLFMT_LLAMA3, bare, &calls, &content, eb, sizeof(eb)),
                     WYE_OK);
    expect_call(calls, 2, 0, "a", "{\"q\":\"x\"}");
    expect_call(calls, 2, 1, "b", "{}");
    wye_free(calls);
    wye_free(content);

    /* stringified parameters are accepted */
    assert_int_equal(agent_toolparse(AGENT_TOOLFMT_LLAMA3,
                                     "{\"name\":\"a\",\"parameters\":\"{\\\"k\\\":1}\"}", &calls,
                                     &content, eb, sizeof(eb)),
                     WYE_OK);
    expect_call(calls, 1, 0, "a", "{\"k\":1}");
    wye_free(calls);
    wye_free(content);

    assert_int_equal(
        agent_toolparse(AGENT_TOOLFMT_LLAMA3, "The answer is 4.", &calls, &content, eb, sizeof(eb)),
        WYE_OK);
    assert_null(calls);
    assert_string_equal(content, "The answer is 4.");
    wye_free(content);

    struct {
        const char *text, *msg;
    } bad[] = {
        {"<|python_tag|>{\"name\":\"a\",", "not valid JSON"},
        {"{\"parameters\":{}}", "needs a \"name\" string"},
        {"<|python_tag|>order_lookup(1234)", "expected a JSON object"},
        {"{\"name\":\"a\",\"parameters\":5}", "must be a JSON object"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        eb[0] = '\0';
        assert_int_equal(
            agent_toolparse(AGENT_TOOLFMT_LLAMA3, bad[i].text, &calls, &content, eb, sizeof(eb)),
            WYE_ERR_PARSE);
        assert_null(calls);
        if (!strstr(eb, bad[i].msg)) {
            fail_msg("'%s': got '%s', want '%s'", bad[i].text, eb, bad[i].msg);
        }
    }
}

static void test_openai_deltas(void **state)
{
    (void)state;
    char *calls = NULL, eb[256];
    /* two calls interleaved by index, arguments in pieces, as the stub streams them */
    const char *d =
        "[{\"index\":0,\"id\":\"call_a\",\"type\":\"function\",\"function\":{\"name\":\"x\","
        "\"arguments\":\"\"}}]\n"
        "[{\"index\":1,\"id\":\"call_b\",\"type\":\"function\",\"function\":{\"name\":\"y\","
        "\"arguments\":\"{\\\"k\\\":\"}}]\n"
        "[{\"index\":0,\"function\":{\"arguments\":\"{\\\"city\\\":\"}}]\n"
        "[{\"index\":0,\"function\":{\"arguments\":\" \\\"Paris\\\"}\"}}]\n"
        "[{\"index\":1,\"function\":{\"arguments\":\"2}\"}}]\n";
    assert_int_equal(agent_toolcalls_assemble(d, &calls, eb, sizeof(eb)), WYE_OK);
    expect_call(calls, 2, 0, "x", "{\"city\":\"Paris\"}");
    expect_call(calls, 2, 1, "y", "{\"k\":2}");
    cJSON *a = cJSON_Parse(calls);
    assert_string_equal(
        cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(a, 1), "id")->valuestring, "call_b");
    cJSON_Delete(a);
    wye_free(calls);
    assert_int_equal(agent_toolcalls_assemble(NULL, &calls, eb, sizeof(eb)), WYE_OK);
    assert_null(calls);
    assert_int_equal(agent_toolcalls_assemble("[{\"index\":0", &calls, eb, sizeof(eb)),
                     WYE_ERR_PARSE);
    assert_int_equal(agent_toolcalls_assemble("[{\"index\":0,\"function\":{\"arguments\":\"{}\"}}]",
                                              &calls, eb, sizeof(eb)),
                     WYE_ERR_PARSE);
    assert_non_null(strstr(eb, "no function name"));
    assert_int_equal(agent_toolcalls_assemble("[{\"index\":99}]", &calls, eb, sizeof(eb)),
                     WYE_ERR_PARSE);
}

/* Rendering the conversation for a local model, then parsing the model's own call text back. */
static void test_render_roundtrip(void **state)
{
    (void)state;
    const char *msgs = "[{\"role\":\"system\",\"content\":\"Be brief.\"},"
                       "{\"role\":\"user\",\"content\":\"Where is 1234?\"},"
                       "{\"role\":\"assistant\",\"content\":null,\"tool_calls\":[{\"id\":\"c0\","
                       "\"type\":\"function\",\"function\":{\"name\":\"order_lookup\","
                       "\"arguments\":\"{\\\"order_id\\\":\\\"1234\\\"}\"}}]},"
                       "{\"role\":\"tool\",\"tool_call_id\":\"c0\",\"content\":\"shipped\"}]";
    const char *tools = "[{\"type\":\"function\",\"function\":{\"name\":\"order_lookup\","
                        "\"parameters\":{\"type\":\"object\"}}}]";
    enum agent_toolfmt fmts[] = {AGENT_TOOLFMT_HERMES, AGENT_TOOLFMT_LLAMA3};
    for (int k = 0; k < 2; k++) {
        char *out = NULL, eb[256];
        assert_int_equal(agent_toolfmt_render(fmts[k], msgs, tools, &out, eb, sizeof(eb)), WYE_OK);
        cJSON *a = cJSON_Parse(out);
        assert_int_equal(cJSON_GetArraySize(a), 4);
        const char *sys =
            cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(a, 0), "content")->valuestring;
        assert_true(strncmp(sys, "Be brief.", 9) == 0);
        assert_non_null(strstr(sys, "\"name\":\"order_lookup\""));
        cJSON *asst = cJSON_GetArrayItem(a, 2);
        assert_string_equal(cJSON_GetObjectItemCaseSensitive(asst, "role")->valuestring,
                            "assistant");
        /* the model's own words for the call parse back into the same call */
        char *calls = NULL, *content = NULL;
        assert_int_equal(
            agent_toolparse(fmts[k], cJSON_GetObjectItemCaseSensitive(asst, "content")->valuestring,
                            &calls, &content, eb, sizeof(eb)),
            WYE_OK);
        expect_call(calls, 1, 0, "order_lookup", "{\"order_id\":\"1234\"}");
        wye_free(calls);
        wye_free(content);
        cJSON *res = cJSON_GetArrayItem(a, 3);
        assert_string_equal(cJSON_GetObjectItemCaseSensitive(res, "role")->valuestring, "user");
        assert_non_null(
            strstr(cJSON_GetObjectItemCaseSensitive(res, "content")->valuestring, "shipped"));
        cJSON_Delete(a);
        wye_free(out);
    }
    char *out = NULL, eb[128];
    assert_int_equal(agent_toolfmt_render(AGENT_TOOLFMT_HERMES, "{}", NULL, &out, eb, sizeof(eb)),
                     WYE_ERR_PARSE);
    assert_null(out);
    assert_int_equal(agent_toolfmt_render(AGENT_TOOLFMT_OPENAI, "[]", NULL, &out, eb, sizeof(eb)),
                     WYE_ERR_INVAL);
}

/* Every allocation failure point: no crash, no leak (ASan), and a failure is reported. */
static void test_oom(void **state)
{
    (void)state;
    const char *hermes = "hi <tool_call>{\"name\":\"a\",\"arguments\":{\"x\":[1,2]}}</tool_call>"
                         "<tool_call>{\"name\":\"b\",\"arguments\":{}}</tool_call>";
    const char *deltas = "[{\"index\":0,\"id\":\"c\",\"function\":{\"name\":\"x\","
                         "\"arguments\":\"{\\\"a\\\":\"}}]\n[{\"index\":0,\"function\":"
                         "{\"arguments\":\"1}\"}}]";
    const char *msgs = "[{\"role\":\"user\",\"content\":\"q\"},{\"role\":\"assistant\","
                       "\"tool_calls\":[{\"function\":{\"name\":\"x\",\"arguments\":\"{}\"}}]},"
                       "{\"role\":\"tool\",\"content\":\"r\"}]";
    for (int which = 0; which < 4; which++) {
        bool clean = false;
        for (long n = 0; n < 5000 && !clean; n++) {
            char *a = NULL, *b = NULL, eb[256];
            enum wye_err err;
            wye_alloc_fail_after(n);
            switch (which) {
            case 0:
                err = agent_schema_check(order_schema, "{\"order_id\":\"1\",\"tags\":[\"a\"]}", eb,
                                         sizeof(eb));
                break;
            case 1:
                err = agent_toolparse(AGENT_TOOLFMT_HERMES, hermes, &a, &b, eb, sizeof(eb));
                break;
            case 2:
                err = agent_toolcalls_assemble(deltas, &a, eb, sizeof(eb));
                break;
            default:
                err = agent_toolfmt_render(AGENT_TOOLFMT_HERMES, msgs, "[]", &a, eb, sizeof(eb));
                break;
            }
            long failed = wye_alloc_failures();
            wye_alloc_fail_after(-1);
            if (failed == 0) {
                assert_int_equal(err, WYE_OK);
                clean = true;
            }
            wye_free(a);
            wye_free(b);
        }
        assert_true(clean);
    }
}

/* Mutated model output never crashes a parser: it parses or says why not. */
static void test_mutations(void **state)
{
    (void)state;
    const char *seeds[] = {
        "<tool_call>{\"name\":\"a\",\"arguments\":{\"x\":[1,{\"y\":\"z\"}]}}</tool_call>",
        "<|python_tag|>{\"name\":\"a\",\"parameters\":{\"q\":\"x\"}}; {\"name\":\"b\"}",
        "[{\"index\":0,\"id\":\"c\",\"function\":{\"name\":\"x\",\"arguments\":\"{\"}}]",
    };
    const char alphabet[] = "{}[]<>\"\\:,;/ _|0aZ\n";
    uint32_t rnd = 12345;
    for (int it = 0; it < 3000; it++) {
        const char *seed = seeds[it % 3];
        char buf[256];
        snprintf(buf, sizeof(buf), "%s", seed);
        size_t len = strlen(buf);
        for (int k = 0; k < 1 + it % 4; k++) {
            rnd = rnd * 1103515245u + 12345u;
            size_t pos = (rnd >> 8) % len;
            rnd = rnd * 1103515245u + 12345u;
            switch ((rnd >> 16) % 3) {
            case 0:
                buf[pos] = alphabet[(rnd >> 4) % (sizeof(alphabet) - 1)];
                break;
            case 1:
                buf[pos] = '\0';
                len = pos > 0 ? pos : 1;
                break;
            default:
                memmove(buf + pos, buf + pos + 1, len - pos);
                len = len > 1 ? len - 1 : 1;
            }
            len = strlen(buf) ? strlen(buf) : 1;
        }
        char *a = NULL, *b = NULL, eb[256];
        enum wye_err err;
        if (it % 3 == 2) {
            err = agent_toolcalls_assemble(buf, &a, eb, sizeof(eb));
        } else {
            err = agent_toolparse(it % 3 == 0 ? AGENT_TOOLFMT_HERMES : AGENT_TOOLFMT_LLAMA3, buf,
                                  &a, &b, eb, sizeof(eb));
        }
        assert_true(err == WYE_OK || err == WYE_ERR_PARSE);
        if (err == WYE_ERR_PARSE) {
            assert_true(eb[0] != '\0');
            assert_null(a);
        }
        wye_free(a);
        wye_free(b);
    }
}

int main(void)
{
    wye_alloc_install_cjson_hooks();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_schema),           cmocka_unit_test(test_hermes),
        cmocka_unit_test(test_llama3),           cmocka_unit_test(test_openai_deltas),
        cmocka_unit_test(test_render_roundtrip), cmocka_unit_test(test_oom),
        cmocka_unit_test(test_mutations),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
