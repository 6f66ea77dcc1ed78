/* The SSE parser and the OpenAI JSON readers: a multi-event stream fed at every split point
 * (byte by byte, every 2-way split, and with the callback stopping after each event) gives the
 * same events; LF/CR/CRLF line ends, comments, "data:" with and without the space, multi-line
 * data, event names, a BOM; an event over the cap is an error and the parser stays failed;
 * chunk, completion and error-body parsing with clear messages; allocation failure loops. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "common/alloc.h"
#include "router/sse.h"

struct rec {
    struct wye_buf out; /* "event|data\n" per event */
    int n;
    int again_every; /* answer AGAIN every k-th event */
};

static enum wye_err on_ev(void *arg, const struct rt_sse_event *ev)
{
    struct rec *r = arg;
    r->n++;
    assert_int_equal(strlen(ev->data), ev->len); /* NUL-terminated, no NUL inside here */
    wye_buf_printf(&r->out, "%s|", ev->event);
    wye_buf_append(&r->out, ev->data, ev->len);
    wye_buf_append(&r->out, "\n", 1);
    return r->again_every && r->n % r->again_every == 0 ? WYE_ERR_AGAIN : WYE_OK;
}

static const char STREAM[] = "\xEF\xBB\xBF"
                             ": a comment first\n"
                             "data: {\"a\":1}\n\n"
                             "data:{\"nospace\":2}\r\n\r\n"
                             "event: ping\r"
                             "data: one\r"
                             "data:  two leading spaces\r\r"
                             "id: 7\n"
                             "retry: 100\n"
                             ":comment: with colons\n"
                             "data\n"
                             "data: after empty\n\n"
                             "\n\n"
                             "event: ignored-without-data\n\n"
                             "unknownfield: x\n"
                             "data: x: y\r\n"
                             "\r\n"
                             "data: [DONE]\n\n"
                             "data: unfinished";

static const char EXPECTED[] = "|{\"a\":1}\n"
                               "|{\"nospace\":2}\n"
                               "ping|one\n two leading spaces\n"
                               "|\nafter empty\n"
                               "|x: y\n"
                               "|[DONE]\n";

static void feed_all(struct rt_sse *p, struct rec *r, const char *s, size_t n)
{
    while (n > 0) {
        size_t used = 0;
        enum wye_err err = rt_sse_feed(p, s, n, &used, on_ev, r);
        assert_true(err == WYE_OK || err == WYE_ERR_AGAIN);
        assert_true(used <= n);
        if (err == WYE_OK) {
            assert_int_equal(used, n);
        }
        s += used;
        n -= used;
    }
}

static void check_splits(size_t cap)
{
    size_t n = sizeof(STREAM) - 1;
    struct rt_sse p;
    struct rec r = {0};
    wye_buf_init(&r.out, 1 << 16);
    assert_int_equal(rt_sse_init(&p, cap), WYE_OK);

    feed_all(&p, &r, STREAM, n);
    assert_string_equal(r.out.data, EXPECTED);
    assert_true(rt_sse_pending(&p)); /* "data: unfinished" was never dispatched */

    /* byte by byte */
    rt_sse_reset(&p);
    wye_buf_reset(&r.out);
    for (size_t i = 0; i < n; i++) {
        feed_all(&p, &r, STREAM + i, 1);
    }
    assert_string_equal(r.out.data, EXPECTED);

    /* every 2-way split */
    for (size_t k = 0; k <= n; k++) {
        rt_sse_reset(&p);
        wye_buf_reset(&r.out);
        feed_all(&p, &r, STREAM, k);
        feed_all(&p, &r, STREAM + k, n - k);
        assert_string_equal(r.out.data, EXPECTED);
    }

    /* every 3-way split, with the callback stopping the parser after every event */
    r.again_every = 1;
    for (size_t a = 0; a <= n; a += 3) {
        for (size_t b = a; b <= n; b += 2) {
            rt_sse_reset(&p);
            wye_buf_reset(&r.out);
            feed_all(&p, &r, STREAM, a);
            feed_all(&p, &r, STREAM + a, b - a);
            feed_all(&p, &r, STREAM + b, n - b);
            assert_string_equal(r.out.data, EXPECTED);
        }
    }
    rt_sse_cleanup(&p);
    wye_buf_cleanup(&r.out);
}

static void test_every_split(void **state)
{
    (void)state;
    check_splits(1024);
    check_splits(23); /* the largest event's data ("one\n two leading spaces") is 23 bytes */
    struct rt_sse p;
    struct rec r = {0};
    wye_buf_init(&r.out, 1 << 16);
    assert_int_equal(rt_sse_init(&p, 22), WYE_OK);
    assert_int_equal(rt_sse_feed(&p, STREAM, sizeof(STREAM) - 1, NULL, on_ev, &r), WYE_ERR_TOOBIG);
    assert_int_equal(r.n, 2); /* the two events before it */
    rt_sse_cleanup(&p);
    wye_buf_cleanup(&r.out);
}

static void test_oversize(void **state)
{
    (void)state;
    struct rt_sse p;
    struct rec r = {0};
    wye_buf_init(&r.out, 4096);
    assert_int_equal(rt_sse_init(&p, 8), WYE_OK);
    /* exactly the cap is fine, split over lines too */
    feed_all(&p, &r, "data: 12345678\n\ndata: 123\ndata: 4567\n\n", 38);
    assert_string_equal(r.out.data, "|12345678\n|123\n4567\n");
    size_t used = 99;
    assert_int_equal(rt_sse_feed(&p, "data: 123456789\n\n", 17, &used, on_ev, &r), WYE_ERR_TOOBIG);
    assert_true(used < 17);
    /* the parser stays failed: no garbage event after the error */
    assert_int_equal(rt_sse_feed(&p, "data: x\n\n", 9, &used, on_ev, &r), WYE_ERR_TOOBIG);
    assert_int_equal(r.n, 2);
    /* many data lines adding up past the cap */
    rt_sse_reset(&p);
    assert_int_equal(rt_sse_feed(&p, "data: 1234\ndata: 1234\n\n", 23, NULL, on_ev, &r),
                     WYE_ERR_TOOBIG);
    /* a long comment or unknown field costs nothing */
    rt_sse_reset(&p);
    char big[5000];
    memset(big, 'c', sizeof(big));
    big[0] = ':';
    big[sizeof(big) - 1] = '\n';
    feed_all(&p, &r, big, sizeof(big));
    big[0] = 'z';
    feed_all(&p, &r, big, sizeof(big));
    feed_all(&p, &r, "data: ok\n\n", 10);
    assert_int_equal(r.n, 3);
    rt_sse_cleanup(&p);
    wye_buf_cleanup(&r.out);
}

static void test_chunks(void **state)
{
    (void)state;
    struct rt_chunk c;
    char eb[160];
    const char *j = "{\"choices\":[{\"index\":0,\"delta\":{\"content\":\"hi \\u00e9\"},"
                    "\"finish_reason\":null}]}";
    assert_int_equal(rt_chunk_parse(j, strlen(j), false, &c, eb, sizeof(eb)), WYE_OK);
    assert_string_equal(c.content, "hi \xc3\xa9");
    assert_null(c.tool_calls);
    assert_null(c.finish_reason);
    assert_false(c.has_usage);
    rt_chunk_cleanup(&c);

    j = "{\"choices\":[{\"delta\":{\"tool_calls\":[ {\"index\": 0, \"function\": "
        "{\"arguments\": \"{\\\"a\\\"\"}} ]},\"finish_reason\":\"tool_calls\"}],"
        "\"usage\":{\"prompt_tokens\":12,\"completion_tokens\":3}}";
    assert_int_equal(rt_chunk_parse(j, strlen(j), false, &c, eb, sizeof(eb)), WYE_OK);
    assert_string_equal(c.tool_calls,
                        "[{\"index\":0,\"function\":{\"arguments\":\"{\\\"a\\\"\"}}]");
    assert_string_equal(c.finish_reason, "tool_calls");
    assert_true(c.has_usage);
    assert_int_equal(c.usage.prompt_tokens, 12);
    assert_int_equal(c.usage.completion_tokens, 3);
    rt_chunk_cleanup(&c);

    j = "{\"choices\":[],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":0}}";
    assert_int_equal(rt_chunk_parse(j, strlen(j), false, &c, eb, sizeof(eb)), WYE_OK);
    assert_true(c.has_usage);
    assert_null(c.content);
    rt_chunk_cleanup(&c);

    j = "{\"error\":{\"message\":\"overloaded\",\"type\":\"server_error\"}}";
    assert_int_equal(rt_chunk_parse(j, strlen(j), false, &c, eb, sizeof(eb)), WYE_OK);
    assert_string_equal(c.error, "overloaded");
    rt_chunk_cleanup(&c);

    /* a whole completion: message, tool_calls get their index */
    j = "{\"choices\":[{\"message\":{\"content\":null,\"tool_calls\":[{\"id\":\"c1\",\"type\":"
        "\"function\",\"function\":{\"name\":\"f\",\"arguments\":\"{}\"}}]},"
        "\"finish_reason\":\"tool_calls\"}]}";
    assert_int_equal(rt_chunk_parse(j, strlen(j), true, &c, eb, sizeof(eb)), WYE_OK);
    assert_null(c.content);
    assert_string_equal(c.tool_calls, "[{\"id\":\"c1\",\"type\":\"function\",\"function\":"
                                      "{\"name\":\"f\",\"arguments\":\"{}\"},\"index\":0}]");
    rt_chunk_cleanup(&c);

    static const struct {
        const char *json;
        const char *msg;
    } bad[] = {
        {"{\"choices\":[{\"delta\":{\"content\":\"x\"}", "invalid JSON at byte"},
        {"not json", "invalid JSON at byte 0 (near 'not json')"},
        {"[1,2]", "the JSON is not an object"},
        {"{\"choices\":{}}", "'choices' is not an array"},
        {"{\"choices\":[{\"delta\":{\"content\":5}}]}",
         "'choices[0].delta.content' is not a string"},
        {"{\"choices\":[{\"delta\":{\"tool_calls\":{}}}]}", "tool_calls' is not an array"},
        {"{\"choices\":[{\"delta\":[]}]}", "'choices[0]' is not an object"},
        {"{\"usage\":{\"prompt_tokens\":\"x\"}}", "'usage' must be an object"},
        {"", "invalid JSON at byte 0"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        eb[0] = '\0';
        assert_int_equal(
            rt_chunk_parse(bad[i].json, strlen(bad[i].json), false, &c, eb, sizeof(eb)),
            WYE_ERR_PARSE);
        if (!strstr(eb, bad[i].msg)) {
            fail_msg("'%s': message '%s' lacks '%s'", bad[i].json, eb, bad[i].msg);
        }
        rt_chunk_cleanup(&c);
    }
}

/* Token counts an upstream cannot mean (past 2^53, or as large as a double goes) are refused:
 * converting them to int64_t was undefined behaviour (found by fuzz_sse). */
/* finish_reason: OpenAI's five as themselves, in storage that outlives the chunk; anything
 * else "stop". */
static void test_finish_reason(void **state)
{
    (void)state;
    static const char *const known[] = {"stop", "length", "tool_calls", "content_filter",
                                        "function_call"};
    for (size_t i = 0; i < sizeof(known) / sizeof(known[0]); i++) {
        char copy[32];
        snprintf(copy, sizeof(copy), "%s", known[i]);
        const char *r = rt_finish_reason(copy);
        assert_string_equal(r, known[i]);
        assert_ptr_not_equal(r, copy);
    }
    assert_string_equal(rt_finish_reason("eos"), "stop");
    assert_string_equal(rt_finish_reason(""), "stop");
}

static void test_usage_counts_bounded(void **state)
{
    (void)state;
    struct rt_chunk c;
    char eb[160];
    static const char *const bad[] = {
        "{\"choices\":[],\"usage\":{\"prompt_tokens\":1e300,\"completion_tokens\":1}}",
        "{\"choices\":[],\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":9.3e18}}",
        "{\"choices\":[],\"usage\":{\"completion_tokens\":9007199254740994}}",
        "{\"choices\":[],\"usage\":{\"prompt_tokens\":1e999}}",
        "{\"choices\":[],\"usage\":{\"prompt_tokens\":-1e-9}}",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        eb[0] = '\0';
        assert_int_equal(rt_chunk_parse(bad[i], strlen(bad[i]), false, &c, eb, sizeof(eb)),
                         WYE_ERR_PARSE);
        assert_non_null(strstr(eb, "'usage' must be an object with token counts"));
        rt_chunk_cleanup(&c);
    }
    const char *j = "{\"choices\":[],\"usage\":{\"prompt_tokens\":9007199254740992,"
                    "\"completion_tokens\":0}}";
    assert_int_equal(rt_chunk_parse(j, strlen(j), true, &c, eb, sizeof(eb)), WYE_OK);
    assert_true(c.has_usage);
    assert_true(c.usage.prompt_tokens == INT64_C(9007199254740992));
    assert_int_equal(c.usage.completion_tokens, 0);
    rt_chunk_cleanup(&c);
}

static void test_error_bodies(void **state)
{
    (void)state;
    char m[64];
    const char *b = "{\"error\":{\"message\":\"Invalid 'messages'\\nline\",\"type\":\"x\"}}";
    rt_error_body_message(b, strlen(b), m, sizeof(m));
    assert_string_equal(m, "Invalid 'messages' line");
    b = "{\"error\":\"plain\"}";
    rt_error_body_message(b, strlen(b), m, sizeof(m));
    assert_string_equal(m, "plain");
    b = "{\"detail\":\"Not found\"}";
    rt_error_body_message(b, strlen(b), m, sizeof(m));
    assert_string_equal(m, "Not found");
    b = "Bad Gateway\r\n";
    rt_error_body_message(b, strlen(b), m, sizeof(m));
    assert_string_equal(m, "Bad Gateway");
    rt_error_body_message(NULL, 0, m, sizeof(m));
    assert_string_equal(m, "");
    char tiny[4];
    b = "{\"error\":{\"message\":\"a long message\"}}";
    rt_error_body_message(b, strlen(b), tiny, sizeof(tiny));
    assert_string_equal(tiny, "a l");
}

/* Every allocation in init and chunk parsing fails in turn: a clean error, no leak, and once
 * init succeeded the parser allocates nothing while feeding. */
static void test_alloc_failures(void **state)
{
    (void)state;
    const char *j = "{\"choices\":[{\"delta\":{\"content\":\"x\",\"tool_calls\":[{\"index\":0}]},"
                    "\"finish_reason\":\"stop\"}],\"usage\":{\"prompt_tokens\":1}}";
    bool init_ok = false;
    bool parse_ok = false;
    for (long n = 0; n < 200 && !(init_ok && parse_ok); n++) {
        struct rec r = {0};
        wye_buf_init(&r.out, 1 << 16);
        wye_buf_reserve(&r.out, 4096); /* the recorder's own memory, before arming */
        wye_alloc_fail_after(n);
        struct rt_sse p;
        enum wye_err err = rt_sse_init(&p, 4096);
        if (err == WYE_OK) {
            feed_all(&p, &r, STREAM, sizeof(STREAM) - 1);
            assert_string_equal(r.out.data, EXPECTED);
            rt_sse_cleanup(&p);
            init_ok = true;
        } else {
            assert_int_equal(err, WYE_ERR_NOMEM);
        }
        struct rt_chunk c;
        char eb[160];
        err = rt_chunk_parse(j, strlen(j), false, &c, eb, sizeof(eb));
        long failures = wye_alloc_failures();
        wye_alloc_fail_after(-1);
        if (err == WYE_OK) {
            assert_string_equal(c.content, "x");
            assert_string_equal(c.tool_calls, "[{\"index\":0}]");
            if (failures == 0) {
                parse_ok = true;
            }
        } else {
            assert_true(err == WYE_ERR_NOMEM || err == WYE_ERR_PARSE);
        }
        rt_chunk_cleanup(&c);
        wye_buf_cleanup(&r.out);
    }
    assert_true(init_ok);
    assert_true(parse_ok);
}

int main(void)
{
    wye_alloc_install_cjson_hooks();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_split),    cmocka_unit_test(test_oversize),
        cmocka_unit_test(test_chunks),         cmocka_unit_test(test_error_bodies),
        cmocka_unit_test(test_alloc_failures), cmocka_unit_test(test_usage_counts_bounded),
        cmocka_unit_test(test_finish_reason),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
