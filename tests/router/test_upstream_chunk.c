/* The streamed-chunk reader's two paths agree: for every chunk shape an upstream sends (plain
 * deltas, escapes \n \" \\ \/ \uXXXX and surrogate pairs, the empty-choices usage chunk,
 * usage null, finish chunks, tool_calls deltas, error objects mid-stream, pretty-printed JSON,
 * a chunk larger than the inline buffer) and for malformed or odd ones (bad escapes, lone
 * surrogates, \u0000, raw control bytes, duplicate or escaped keys, NUL in a key, negative or
 * fractional token counts, trailing bytes), rt_chunk_parse gives byte for byte what the cJSON
 * path gives, the fast path takes exactly the common shapes, and every truncation and many
 * single-byte mutations of real chunks agree too. A common chunk is read without allocating. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "common/alloc.h"
#include "router/sse.h"

static bool str_same(const char *a, const char *b)
{
    return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

static const char *show(const char *s)
{
    return s ? s : "(null)";
}

/* rt_chunk_parse (fast path first) and rt_chunk_parse_cjson on the same bytes: same verdict,
 * same message, same fields. Returns whether the fast path took the chunk. */
static bool same_both_ways(const char *json, size_t len)
{
    struct rt_chunk a;
    struct rt_chunk b;
    char ea[160] = "";
    char eb[160] = "";
    enum wye_err ra = rt_chunk_parse(json, len, false, &a, ea, sizeof(ea));
    enum wye_err rb = rt_chunk_parse_cjson(json, len, false, &b, eb, sizeof(eb));
    bool fast = ra == WYE_OK && a.root == NULL;
    if (ra != rb) {
        fail_msg("'%.*s': %s here, %s with cJSON", (int)len, json, wye_err_str(ra),
                 wye_err_str(rb));
    }
    if (ra != WYE_OK) {
        assert_string_equal(ea, eb);
    } else if (!str_same(a.content, b.content) || !str_same(a.tool_calls, b.tool_calls) ||
               !str_same(a.finish_reason, b.finish_reason) || !str_same(a.error, b.error) ||
               a.has_usage != b.has_usage || a.usage.prompt_tokens != b.usage.prompt_tokens ||
               a.usage.completion_tokens != b.usage.completion_tokens ||
               a.usage.estimated != b.usage.estimated) {
        fail_msg("'%.*s' differs: content '%s'/'%s' tools '%s'/'%s' finish '%s'/'%s' error "
                 "'%s'/'%s' usage %d %lld %lld / %d %lld %lld",
                 (int)len, json, show(a.content), show(b.content), show(a.tool_calls),
                 show(b.tool_calls), show(a.finish_reason), show(b.finish_reason), show(a.error),
                 show(b.error), a.has_usage, (long long)a.usage.prompt_tokens,
                 (long long)a.usage.completion_tokens, b.has_usage,
                 (long long)b.usage.prompt_tokens, (long long)b.usage.completion_tokens);
    }
    rt_chunk_cleanup(&a);
    rt_chunk_cleanup(&b);
    return fast;
}

static void expect(const char *json, bool want_fast)
{
    bool fast = same_both_ways(json, strlen(json));
    if (fast != want_fast) {
        fail_msg("'%s': the fast path %s it", json, fast ? "took" : "declined");
    }
}

#define HEAD                                                                                       \
    "{\"id\":\"chatcmpl-AbC123\",\"object\":\"chat.completion.chunk\",\"created\":1718000000,"     \
    "\"model\":\"gpt-4o-mini-2024-07-18\",\"system_fingerprint\":\"fp_0aa8d3e20b\","
#define CHOICE(delta, finish)                                                                      \
    HEAD "\"choices\":[{\"index\":0,\"delta\":" delta                                              \
         ",\"logprobs\":null,\"finish_reason\":" finish "}]}"

/* Content deltas, escapes included, give exactly the decoded text, on the fast path. */
static void test_content_escapes(void **state)
{
    (void)state;
    static const struct {
        const char *json;
        const char *content;
    } cases[] = {
        {CHOICE("{\"role\":\"assistant\",\"content\":\"\",\"refusal\":null}", "null"), ""},
        {CHOICE("{\"content\":\"Hello\"}", "null"), "Hello"},
        {CHOICE("{\"content\":\"a\\nb\\tc\\\"q\\\" \\\\ \\/ \\b\\f\\r\"}", "null"),
         "a\nb\tc\"q\" \\ / \b\f\r"},
        {CHOICE("{\"content\":\"caf\\u00e9 \\u4F60\\u597d \\u20ac\"}", "null"),
         "caf\xc3\xa9 \xe4\xbd\xa0\xe5\xa5\xbd \xe2\x82\xac"},
        {CHOICE("{\"content\":\"\\ud83d\\ude00 \\uD83D\\uDC4D!\"}", "null"),
         "\xf0\x9f\x98\x80 \xf0\x9f\x91\x8d!"},
        {CHOICE("{\"content\":\"\\u0001\\u001f\\u007f\\u0080\\uffff\\ud800\\udc00\"}", "null"),
         "\x01\x1f\x7f\xc2\x80\xef\xbf\xbf\xf0\x90\x80\x80"},
        {CHOICE("{\"content\":\"raw caf\xc3\xa9 \xf0\x9f\x98\x80\"}", "null"),
         "raw caf\xc3\xa9 \xf0\x9f\x98\x80"},
        {CHOICE("{\"content\":null}", "null"), NULL},
        {CHOICE("{}", "\"stop\""), NULL},
        {CHOICE("null", "\"length\""), NULL},
        {CHOICE("{\"content\":\"x\",\"tool_calls\":null,\"reasoning_content\":\"why\\n\"}", "null"),
         "x"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        expect(cases[i].json, true);
        struct rt_chunk c;
        char eb[160];
        assert_int_equal(
            rt_chunk_parse(cases[i].json, strlen(cases[i].json), false, &c, eb, sizeof(eb)),
            WYE_OK);
        assert_null(c.root); /* the fast path */
        if (!str_same(c.content, cases[i].content)) {
            fail_msg("case %zu: content '%s', want '%s'", i, show(c.content),
                     show(cases[i].content));
        }
        rt_chunk_cleanup(&c);
    }
}

/* finish_reason, usage chunks (empty choices, nested *_details), usage null, odd spacing. */
static void test_finish_and_usage(void **state)
{
    (void)state;
    const char *usage = HEAD "\"choices\":[],\"usage\":{\"prompt_tokens\":19,"
                             "\"completion_tokens\":10,\"total_tokens\":29,"
                             "\"prompt_tokens_details\":{\"cached_tokens\":0,\"audio_tokens\":0},"
                             "\"completion_tokens_details\":{\"reasoning_tokens\":0,"
                             "\"audio_tokens\":0,\"accepted_prediction_tokens\":0,"
                             "\"rejected_prediction_tokens\":0}}}";
    expect(usage, true);
    struct rt_chunk c;
    char eb[160];
    assert_int_equal(rt_chunk_parse(usage, strlen(usage), false, &c, eb, sizeof(eb)), WYE_OK);
    assert_true(c.has_usage);
    assert_int_equal(c.usage.prompt_tokens, 19);
    assert_int_equal(c.usage.completion_tokens, 10);
    assert_false(c.usage.estimated);
    assert_null(c.content);
    assert_null(c.finish_reason);
    rt_chunk_cleanup(&c);

    const char *fast[] = {
        CHOICE("{}", "\"stop\""),
        CHOICE("{}", "\"tool_calls\""),
        CHOICE("{}", "\"eos\""),
        CHOICE("{}", "\"st\\u006fp\""),
        HEAD "\"choices\":[{\"index\":0,\"delta\":{\"content\":\"a\"},\"finish_reason\":null}],"
             "\"usage\":null}",
        "{\"choices\":[],\"usage\":{}}",
        "{\"choices\":[],\"usage\":{\"prompt_tokens\":5}}",
        "{\"choices\":[],\"usage\":{\"prompt_tokens\":0,\"completion_tokens\":999999999999999}}",
        "{\"choices\":null}",
        "{}",
        " \r\n\t{ \"choices\" :\n [\n  {\n   \"delta\" : { \"content\" : \"x\" } ,\n"
        "   \"finish_reason\" : \"stop\"\n  }\n ] ,\n \"usage\" : { \"prompt_tokens\" : 3 } }\n ",
        "{\"id\":1,\"id\":\"dup ignored\",\"created\":-1.5e+3,\"x\":true,\"y\":false,\"z\":null,"
        "\"choices\":[]}",
        "{\"choices\":[{\"delta\":{\"content\":\"a\"},\"message\":{\"content\":\"b\"}}]}",
        "{\"obfuscation\":\"\\u00e9\\\"\",\"choices\":[{\"delta\":{\"content\":\"o\"}}]}",
    };
    for (size_t i = 0; i < sizeof(fast) / sizeof(fast[0]); i++) {
        expect(fast[i], true);
    }
}

/* Shapes the fast path leaves to cJSON, with cJSON's answer unchanged: tool calls (verbatim),
 * errors mid-stream, several choices, nested values. */
static void test_declined_shapes(void **state)
{
    (void)state;
    const char *tools = CHOICE("{\"tool_calls\":[{\"index\":0,\"id\":\"call_1\",\"type\":"
                               "\"function\",\"function\":{\"name\":\"f\",\"arguments\":"
                               "\"{\\\"a\\\": \\\"\\u00e9\\\"}\"}}]}",
                               "null");
    expect(tools, false);
    struct rt_chunk c;
    char eb[160];
    assert_int_equal(rt_chunk_parse(tools, strlen(tools), false, &c, eb, sizeof(eb)), WYE_OK);
    assert_string_equal(c.tool_calls, "[{\"index\":0,\"id\":\"call_1\",\"type\":\"function\","
                                      "\"function\":{\"name\":\"f\",\"arguments\":"
                                      "\"{\\\"a\\\": \\\"\xc3\xa9\\\"}\"}}]");
    rt_chunk_cleanup(&c);

    const char *err = "{\"error\":{\"message\":\"The server had an error\\n(retry)\","
                      "\"type\":\"server_error\",\"code\":null}}";
    expect(err, false);
    assert_int_equal(rt_chunk_parse(err, strlen(err), false, &c, eb, sizeof(eb)), WYE_OK);
    assert_string_equal(c.error, "The server had an error\n(retry)");
    rt_chunk_cleanup(&c);

    const char *declined[] = {
        CHOICE("{\"tool_calls\":[]}", "null"),
        "{\"error\":\"plain\"}",
        "{\"error\":null,\"choices\":[{\"delta\":{\"content\":\"a\"}}]}",
        "{\"choices\":[{\"delta\":{\"content\":\"a\"}},{\"delta\":{\"content\":\"b\"}}]}",
        "{\"choices\":[{\"delta\":{\"content\":\"a\"},\"logprobs\":{\"content\":[]}}]}",
        "{\"x_groq\":{\"id\":\"req_1\",\"usage\":{\"queue_time\":0.1}},\"choices\":[]}",
        "{\"choices\":[],\"usage\":{\"prompt_tokens\":1.0}}",
        "{\"choices\":[],\"usage\":{\"prompt_tokens\":1e2}}",
        "{\"choices\":[],\"usage\":{\"prompt_tokens\":1234567890123456}}",
        "{\"choices\":[],\"usage\":{\"prompt_tokens\":null}}",
        "{\"choices\":[],\"usage\":[]}",
        "{\"choices\":[{\"delta\":{\"content\":\"a\",\"content\":\"b\"}}]}",
        "{\"choices\":[],\"choices\":[{\"delta\":{\"content\":\"b\"}}]}",
        "{\"choices\":[{\"delta\":{\"con\\u0074ent\":\"a\"}}]}",
        "{\"choices\":[{\"delta\":{\"content\":\"a\\u0000b\"}}]}",
        "{\"choices\":[{\"delta\":{\"content\":\"tab\there\"}}]}",
        "{\"choices\":[{\"delta\":{\"content\":\"a\"}}]} trailing",
        "\xEF\xBB\xBF{\"choices\":[]}",
        "{\"choices\":[{\"delta\":{\"content\":\"a\"}}],\"extra\":[1]}",
    };
    for (size_t i = 0; i < sizeof(declined) / sizeof(declined[0]); i++) {
        expect(declined[i], false);
    }
}

/* Malformed or wrongly typed chunks, and odd ones cJSON tolerates (01, 1.): the same answer,
 * error and message as the cJSON path. */
static void test_malformed_and_odd(void **state)
{
    (void)state;
    const char *bad[] = {
        "",
        " ",
        "not json",
        "[1,2]",
        "null",
        "{",
        "{\"choices\":[{\"delta\":{\"content\":\"x\"}",
        "{\"choices\":[{\"delta\":{\"content\":\"x\"}}],}",
        "{\"choices\":{}}",
        "{\"choices\":[{\"delta\":{\"content\":5}}]}",
        "{\"choices\":[{\"delta\":{\"tool_calls\":{}}}]}",
        "{\"choices\":[{\"delta\":[]}]}",
        "{\"choices\":[{\"delta\":{},\"finish_reason\":1}]}",
        "{\"choices\":[1]}",
        "{\"usage\":{\"prompt_tokens\":\"x\"}}",
        "{\"usage\":{\"prompt_tokens\":-1}}",
        "{\"usage\":5}",
        "{\"choices\":[{\"delta\":{\"content\":\"\\x\"}}]}",
        "{\"choices\":[{\"delta\":{\"content\":\"\\udc00\"}}]}",
        "{\"choices\":[{\"delta\":{\"content\":\"\\ud83d\"}}]}",
        "{\"choices\":[{\"delta\":{\"content\":\"\\ud83dx\"}}]}",
        "{\"choices\":[{\"delta\":{\"content\":\"\\ud83d\\u0041\"}}]}",
        "{\"choices\":[{\"delta\":{\"content\":\"\\u00zz\"}}]}",
        "{\"choices\":[{\"delta\":{\"content\":\"\\u12\"}}]}",
        "{\"choices\":[{\"delta\":{\"content\":\"abc}}]}",
        "{\"choices\":[{\"delta\":{\"content\":\"abc\\\"}}]}",
        "{\"choices\":[],\"usage\":{\"prompt_tokens\":01}}",
        "{\"created\":+1,\"choices\":[]}",
        "{\"created\":-,\"choices\":[]}",
        "{\"created\":1.,\"choices\":[]}",
        "{\"created\":.5,\"choices\":[]}",
        "{\"created\":nul,\"choices\":[]}",
        "{\"created\":truex,\"choices\":[]}",
        "{choices:[]}",
        "{\"choices\" []}",
        "{\"choices\":[]]",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        same_both_ways(bad[i], strlen(bad[i]));
    }
}

/* Bytes a length-delimited parser sees that a C string would hide: a NUL in a key ("error\0"
 * reads as "error" in cJSON) or in a string, and a chunk longer than the inline buffer. */
static void test_nul_bytes_and_size(void **state)
{
    (void)state;
    static const char key_nul[] = "{\"error\0x\":{\"message\":\"hidden\"},\"choices\":[]}";
    assert_false(same_both_ways(key_nul, sizeof(key_nul) - 1));
    struct rt_chunk c;
    char eb[160];
    assert_int_equal(rt_chunk_parse(key_nul, sizeof(key_nul) - 1, false, &c, eb, sizeof(eb)),
                     WYE_OK);
    assert_string_equal(c.error, "hidden");
    rt_chunk_cleanup(&c);
    static const char str_nul[] = "{\"choices\":[{\"delta\":{\"content\":\"a\0b\"}}]}";
    assert_false(same_both_ways(str_nul, sizeof(str_nul) - 1));
    static const char outside[] = "{\"choices\":[]\0}";
    assert_false(same_both_ways(outside, sizeof(outside) - 1));

    /* 3000 bytes of content with escapes: the decoded text goes to an allocated buffer */
    char big[8192];
    size_t n =
        (size_t)snprintf(big, sizeof(big), "%s", HEAD "\"choices\":[{\"delta\":{\"content\":\"");
    char want[4096];
    size_t w = 0;
    for (int i = 0; i < 300; i++) {
        n += (size_t)snprintf(big + n, sizeof(big) - n, "w%03d\\n\\u00e9\\\"", i);
        w += (size_t)snprintf(want + w, sizeof(want) - w, "w%03d\n\xc3\xa9\"", i);
    }
    n += (size_t)snprintf(big + n, sizeof(big) - n, "\"},\"finish_reason\":\"length\"}]}");
    assert_true(n > RT_CHUNK_INLINE && n < sizeof(big));
    assert_true(same_both_ways(big, n));
    assert_int_equal(rt_chunk_parse(big, n, false, &c, eb, sizeof(eb)), WYE_OK);
    assert_string_equal(c.content, want);
    assert_string_equal(c.finish_reason, "length");
    rt_chunk_cleanup(&c);

    /* no memory for that buffer: the fast path declines, cleanly */
    wye_alloc_fail_after(0);
    bool taken = rt_chunk_scan(big, n, &c);
    wye_alloc_fail_after(-1);
    assert_false(taken);
    assert_null(c.content);
    rt_chunk_cleanup(&c);
}

/* Every prefix of real chunks, and each byte replaced by characters that matter to JSON:
 * both paths always agree (and ASan watches the fast path's reads and writes). */
static void test_truncations_and_mutations(void **state)
{
    (void)state;
    const char *seeds[] = {
        CHOICE("{\"role\":\"assistant\",\"content\":\"\",\"refusal\":null}", "null"),
        CHOICE("{\"content\":\"a\\n\\\"b\\\" \\u00e9\\ud83d\\ude00\"}", "null"),
        CHOICE("{}", "\"stop\""),
        HEAD "\"choices\":[],\"usage\":{\"prompt_tokens\":19,\"completion_tokens\":10,"
             "\"total_tokens\":29,\"prompt_tokens_details\":{\"cached_tokens\":0}}}",
    };
    static const char subst[] = {'"', '\\', '{', '}', '[', ']',  ',',  ':',    ' ',    '0', '-',
                                 '.', 'e',  'u', 'n', 'x', '\0', '\n', '\x01', '\x80', 'd'};
    char buf[1024];
    size_t n_fast = 0;
    size_t n_runs = 0;
    for (size_t s = 0; s < sizeof(seeds) / sizeof(seeds[0]); s++) {
        size_t len = strlen(seeds[s]);
        assert_true(len < sizeof(buf));
        for (size_t k = 0; k <= len; k++) {
            memcpy(buf, seeds[s], k); /* a fresh copy: a read past k is ASan's to catch */
            n_fast += same_both_ways(buf, k);
            n_runs++;
        }
        for (size_t i = 0; i < len; i++) {
            for (size_t j = 0; j < sizeof(subst); j++) {
                memcpy(buf, seeds[s], len);
                buf[i] = subst[j];
                n_fast += same_both_ways(buf, len);
                n_runs++;
            }
        }
    }
    /* the mutations keep many chunks well-formed: the fast path is exercised, not bypassed */
    assert_true(n_fast > n_runs / 10);
}

/* The common chunk allocates nothing on the fast path (cJSON would fail here). */
static void test_no_allocation(void **state)
{
    (void)state;
    const char *j = CHOICE("{\"content\":\"caf\\u00e9\"}", "null");
    struct rt_chunk c;
    char eb[160];
    wye_alloc_fail_after(0);
    enum wye_err err = rt_chunk_parse(j, strlen(j), false, &c, eb, sizeof(eb));
    long failures = wye_alloc_failures();
    wye_alloc_fail_after(-1);
    assert_int_equal(err, WYE_OK);
    assert_int_equal(failures, 0);
    assert_string_equal(c.content, "caf\xc3\xa9");
    rt_chunk_cleanup(&c);
    /* and the cJSON path does allocate: the check above can fail */
    wye_alloc_fail_after(0);
    err = rt_chunk_parse_cjson(j, strlen(j), false, &c, eb, sizeof(eb));
    wye_alloc_fail_after(-1);
    assert_int_not_equal(err, WYE_OK);
    rt_chunk_cleanup(&c);
}

int main(void)
{
    wye_alloc_install_cjson_hooks();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_content_escapes),    cmocka_unit_test(test_finish_and_usage),
        cmocka_unit_test(test_declined_shapes),    cmocka_unit_test(test_malformed_and_odd),
        cmocka_unit_test(test_nul_bytes_and_size), cmocka_unit_test(test_truncations_and_mutations),
        cmocka_unit_test(test_no_allocation),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
