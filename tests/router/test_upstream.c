/* The upstream client against the stub upstream over loopback, through the router's public
 * API: exact tokens in order, usage, what is sent upstream (model, stream_options, tools,
 * response_format, Authorization), tool-call deltas verbatim, non-streamed answers, byte-split
 * and CRLF streams, backpressure without loss or duplication, connection reuse, concurrency,
 * and the router's refusals. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <cJSON.h>
#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "common/clock.h"
#include "common/log.h"
#include "tests/router/test_sink_util.h"

#define WAIT_MS 10000

static void run_ok(struct env *e, const char *content, const char *extra, struct fsink *f)
{
    char eb[256];
    assert_int_equal(env_submit(e, "auto", content, extra, f, eb, sizeof(eb)), WYE_OK);
    assert_true(fsink_wait_finish(f, WAIT_MS));
    if (f->res.err) {
        fprintf(stderr, "unexpected failure: %s\n", f->msg);
    }
    assert_int_equal(f->res.err, WYE_OK);
    assert_int_equal(f->violations, 0);
}

static void test_words_usage_and_request(void **state)
{
    (void)state;
    struct env e;
    env_init(&e);
    env_router(&e);
    struct fsink f;
    fsink_init(&f);
    run_ok(&e, "hello big world", NULL, &f);
    assert_string_equal(f.text.data, "hello big world");
    assert_int_equal(f.n_delta, 3);
    assert_int_equal(f.n_start, 1);
    assert_string_equal(f.route, "remote");
    assert_string_equal(f.model, "stub-model");
    assert_true(f.score < 0);
    assert_true(f.reasons_null);
    assert_string_equal(f.reason, "stop");
    assert_int_equal(f.n_usage, 1);
    assert_int_equal(f.res.usage.prompt_tokens, 4); /* 15 chars */
    assert_int_equal(f.res.usage.completion_tokens, 3);
    assert_false(f.res.usage.estimated);

    char *body = stub_upstream_last_body(e.stub);
    cJSON *b = cJSON_Parse(body);
    assert_non_null(b);
    assert_string_equal(cJSON_GetObjectItem(b, "model")->valuestring, "stub-model");
    assert_true(cJSON_IsTrue(cJSON_GetObjectItem(b, "stream")));
    assert_true(cJSON_IsTrue(
        cJSON_GetObjectItem(cJSON_GetObjectItem(b, "stream_options"), "include_usage")));
    cJSON_Delete(b);
    free(body);
    char *auth = stub_upstream_last_auth(e.stub);
    assert_non_null(auth);
    assert_string_equal(auth, "Bearer sk-test-key-1234");
    free(auth);
    fsink_cleanup(&f);

    struct rt_stats st;
    rt_router_stats(e.rt, &st);
    assert_int_equal(st.upstream_requests, 1);
    assert_int_equal(st.upstream_errors, 0);
    assert_int_equal(st.upstream_active, 0);
    env_cleanup(&e);
}

#define TOOLS_JSON                                                                                 \
    "\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"lookup_city\",\"parameters\":"     \
    "{\"type\":\"object\",\"properties\":{\"city\":{\"type\":\"string\"}}}}}],"                    \
    "\"tool_choice\":\"auto\",\"response_format\":{\"type\":\"json_object\"},\"user\":\"u-7\""

static void test_tools_pass_through(void **state)
{
    (void)state;
    struct env e;
    env_init(&e);
    e.cfg.upstream.api_key = NULL; /* and no Authorization header then */
    env_router(&e);
    struct fsink f;
    fsink_init(&f);
    run_ok(&e, "#stub tools=1", TOOLS_JSON, &f);
    assert_int_equal(f.n_tool, 3);
    assert_string_equal(
        f.tools.data,
        "[{\"index\":0,\"id\":\"call_stub_0\",\"type\":\"function\",\"function\":{\"name\":"
        "\"lookup_city\",\"arguments\":\"\"}}]\n"
        "[{\"index\":0,\"function\":{\"arguments\":\"{\\\"city\\\":\"}}]\n"
        "[{\"index\":0,\"function\":{\"arguments\":\" \\\"Paris\\\"}\"}}]\n");
    assert_string_equal(f.reason, "tool_calls");
    assert_int_equal(f.n_delta, 0);

    char *body = stub_upstream_last_body(e.stub);
    cJSON *b = cJSON_Parse(body);
    cJSON *want = cJSON_Parse("{" TOOLS_JSON "}");
    assert_non_null(b);
    assert_non_null(want);
    const char *keys[] = {"tools", "tool_choice", "response_format", "user"};
    for (size_t i = 0; i < 4; i++) {
        assert_true(cJSON_Compare(cJSON_GetObjectItem(b, keys[i]),
                                  cJSON_GetObjectItem(want, keys[i]), true));
    }
    cJSON_Delete(want);
    cJSON_Delete(b);
    free(body);
    assert_null(stub_upstream_last_auth(e.stub));
    fsink_cleanup(&f);
    env_cleanup(&e);
}

static void test_stream_variants(void **state)
{
    (void)state;
    struct env e;
    env_init(&e);
    env_router(&e);
    static const struct {
        const char *directive;
        const char *text;
        bool estimated;
    } cases[] = {
        {"#stub n=10 split=1", "t0 t1 t2 t3 t4 t5 t6 t7 t8 t9", false},
        {"#stub n=4 comments=1 crlf=1", "t0 t1 t2 t3", false},
        {"#stub n=3 comments=1 crlf=1 split=1", "t0 t1 t2", false},
        {"#stub n=5 stream=0", "t0 t1 t2 t3 t4", false},
        {"#stub n=3 no_done=1", "t0 t1 t2", false},
        {"#stub n=3 no_usage=1", "t0 t1 t2", true},
        {"#stub n=0", "", false},
        {"#stub n=6 coalesce=1 crlf=1", "t0 t1 t2 t3 t4 t5", false},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct fsink f;
        fsink_init(&f);
        run_ok(&e, cases[i].directive, NULL, &f);
        assert_string_equal(f.text.data, cases[i].text);
        assert_int_equal(f.res.usage.estimated, cases[i].estimated);
        assert_string_equal(f.reason, "stop");
        if (cases[i].estimated) {
            assert_int_equal(f.n_usage, 0);
            assert_int_equal(f.res.usage.completion_tokens, 3);
            assert_true(f.res.usage.prompt_tokens > 0);
        }
        fsink_cleanup(&f);
    }
    env_cleanup(&e);
}

/* The sink says AGAIN on every 3rd event and wakes only later: nothing is emitted while it is
 * full, nothing is lost or duplicated, and a pause longer than the idle timeout is no stall. */
static void backpressure_case(const char *directive)
{
    struct env e;
    env_init(&e);
    e.cfg.upstream.idle_timeout_ms = 250;
    env_router(&e);
    struct fsink f;
    fsink_init(&f);
    f.again_every = 3;
    char eb[256];
    assert_int_equal(env_submit(&e, "auto", directive, NULL, &f, eb, sizeof(eb)), WYE_OK);
    int pauses = 0;
    for (int guard = 0; guard < 200; guard++) {
        fsink_wait_events(&f, 1000000, WAIT_MS);
        pthread_mutex_lock(&f.mu);
        bool blocked = f.blocked;
        bool done = f.n_finish > 0;
        int n = f.n_events;
        pthread_mutex_unlock(&f.mu);
        if (done) {
            break;
        }
        assert_true(blocked);
        wye_sleep_ms(pauses == 0 ? 400 : 5); /* the first pause outlasts the idle timeout */
        pthread_mutex_lock(&f.mu);
        assert_int_equal(f.n_events, n);
        pthread_mutex_unlock(&f.mu);
        pauses++;
        fsink_unblock(&f);
    }
    assert_true(fsink_wait_finish(&f, WAIT_MS));
    assert_int_equal(f.res.err, WYE_OK);
    assert_true(pauses >= 10);
    assert_int_equal(f.n_while_blocked, 0);
    assert_int_equal(f.violations, 0);
    char want[512] = "";
    for (int i = 0; i < 40; i++) {
        char w[16];
        snprintf(w, sizeof(w), "%st%d", i ? " " : "", i);
        strcat(want, w);
    }
    assert_string_equal(f.text.data, want);
    assert_int_equal(f.n_usage, 1);
    fsink_cleanup(&f);
    env_cleanup(&e);
}

static void test_backpressure(void **state)
{
    (void)state;
    backpressure_case("#stub n=40");            /* one event per curl write: curl pauses */
    backpressure_case("#stub n=40 coalesce=1"); /* many per write: the rest waits in the stash */
    backpressure_case("#stub n=40 coalesce=1 crlf=1 comments=1");
}

static void test_connection_reuse(void **state)
{
    (void)state;
    struct env e;
    env_init(&e);
    env_router(&e);
    for (int i = 0; i < 10; i++) {
        struct fsink f;
        fsink_init(&f);
        run_ok(&e, "#stub n=3", NULL, &f);
        assert_string_equal(f.text.data, "t0 t1 t2");
        fsink_cleanup(&f);
    }
    assert_int_equal(stub_upstream_requests(e.stub), 10);
    assert_true(stub_upstream_connections(e.stub) <= 2);
    env_cleanup(&e);
}

/* A request built without a client body: the body is made from its fields, non-streamed as
 * the request says (stream false), so without stream_options. */
static void test_request_without_body(void **state)
{
    (void)state;
    struct env e;
    env_init(&e);
    env_router(&e);
    struct wye_chat_req *req = wye_calloc(1, sizeof(*req));
    assert_non_null(req);
    snprintf(req->id, sizeof(req->id), "req_agent");
    req->model = wye_strdup("stub-model");
    req->msgs = wye_calloc(2, sizeof(*req->msgs));
    req->n_msgs = 2;
    req->msgs[0].role = WYE_ROLE_SYSTEM;
    req->msgs[0].content = wye_strdup("be brief");
    req->msgs[1].role = WYE_ROLE_USER;
    req->msgs[1].content = wye_strdup("alpha beta");
    req->max_tokens = 7;
    req->temperature = 0.5;
    req->top_p = -1;
    req->stop = wye_calloc(1, sizeof(char *));
    req->stop[0] = wye_strdup("zz");
    req->n_stop = 1;
    struct fsink f;
    fsink_init(&f);
    char eb[256];
    assert_int_equal(rt_router_submit(e.rt, req, fsink_sink(&f), eb, sizeof(eb)), WYE_OK);
    assert_true(fsink_wait_finish(&f, WAIT_MS));
    assert_int_equal(f.res.err, WYE_OK);
    assert_string_equal(f.text.data, "alpha beta");
    assert_int_equal(f.res.usage.prompt_tokens, 5); /* 18 chars */
    char *body = stub_upstream_last_body(e.stub);
    cJSON *want = cJSON_Parse(
        "{\"messages\":[{\"role\":\"system\",\"content\":\"be brief\"},{\"role\":\"user\","
        "\"content\":\"alpha beta\"}],\"max_tokens\":7,\"temperature\":0.5,\"stop\":[\"zz\"],"
        "\"model\":\"stub-model\",\"stream\":false}");
    cJSON *got = cJSON_Parse(body);
    assert_true(cJSON_Compare(got, want, true));
    cJSON_Delete(want);
    cJSON_Delete(got);
    free(body);
    fsink_cleanup(&f);
    env_cleanup(&e);
}

/* A non-streamed client request goes upstream non-streamed, as sent (no stream_options, which
 * OpenAI refuses without stream), even when the client asked for them; the JSON answer comes
 * back as one delta with the upstream's usage, and a tool call as one tool delta with its
 * index added. */
static void test_non_streamed(void **state)
{
    (void)state;
    struct env e;
    env_init(&e);
    env_router(&e);
    struct fsink f;
    fsink_init(&f);
    char eb[256];
    assert_int_equal(env_submit_stream(&e, "auto", "hello big world",
                                       "\"stream_options\":{\"include_usage\":true}", false, &f, eb,
                                       sizeof(eb)),
                     WYE_OK);
    assert_true(fsink_wait_finish(&f, WAIT_MS));
    assert_int_equal(f.res.err, WYE_OK);
    assert_int_equal(f.violations, 0);
    assert_string_equal(f.text.data, "hello big world");
    assert_int_equal(f.n_delta, 1);
    assert_string_equal(f.reason, "stop");
    assert_int_equal(f.res.usage.prompt_tokens, 4); /* 15 chars */
    assert_int_equal(f.res.usage.completion_tokens, 3);
    assert_false(f.res.usage.estimated);
    char *body = stub_upstream_last_body(e.stub);
    cJSON *b = cJSON_Parse(body);
    assert_non_null(b);
    assert_true(cJSON_IsFalse(cJSON_GetObjectItem(b, "stream")));
    assert_null(cJSON_GetObjectItem(b, "stream_options"));
    cJSON_Delete(b);
    free(body);
    fsink_cleanup(&f);

    /* without usage in the answer, the completion is estimated from its length (4 bytes per
     * token), not counted as one token per delta */
    fsink_init(&f);
    assert_int_equal(
        env_submit_stream(&e, "auto", "#stub n=4 no_usage=1", NULL, false, &f, eb, sizeof(eb)),
        WYE_OK);
    assert_true(fsink_wait_finish(&f, WAIT_MS));
    assert_int_equal(f.res.err, WYE_OK);
    assert_string_equal(f.text.data, "t0 t1 t2 t3");
    assert_true(f.res.usage.estimated);
    assert_int_equal(f.res.usage.completion_tokens, 3); /* 11 bytes */
    fsink_cleanup(&f);

    fsink_init(&f);
    assert_int_equal(env_submit_stream(&e, "auto", "#stub tools=1",
                                       "\"tools\":[{\"type\":\"function\",\"function\":{"
                                       "\"name\":\"get_weather\",\"parameters\":{}}}]",
                                       false, &f, eb, sizeof(eb)),
                     WYE_OK);
    assert_true(fsink_wait_finish(&f, WAIT_MS));
    assert_int_equal(f.res.err, WYE_OK);
    assert_int_equal(f.n_tool, 1);
    assert_string_equal(f.reason, "tool_calls");
    cJSON *calls = cJSON_Parse(f.tools.data);
    assert_non_null(calls);
    cJSON *c0 = cJSON_GetArrayItem(calls, 0);
    assert_int_equal(cJSON_GetObjectItem(c0, "index")->valueint, 0);
    assert_string_equal(cJSON_GetObjectItem(c0, "id")->valuestring, "call_stub_0");
    assert_string_equal(
        cJSON_GetObjectItem(cJSON_GetObjectItem(c0, "function"), "name")->valuestring,
        "get_weather");
    cJSON_Delete(calls);
    fsink_cleanup(&f);
    env_cleanup(&e);
}

#define N_PAR 8
static void test_concurrent_streams(void **state)
{
    (void)state;
    struct env e;
    env_init(&e);
    env_router(&e);
    static struct fsink f[N_PAR];
    char eb[256];
    for (int i = 0; i < N_PAR; i++) {
        fsink_init(&f[i]);
        char content[64];
        snprintf(content, sizeof(content), "#stub n=%d delay_ms=2", 5 + i);
        assert_int_equal(env_submit(&e, "stub-model", content, NULL, &f[i], eb, sizeof(eb)),
                         WYE_OK);
    }
    for (int i = 0; i < N_PAR; i++) {
        assert_true(fsink_wait_finish(&f[i], WAIT_MS));
        assert_int_equal(f[i].res.err, WYE_OK);
        assert_int_equal(f[i].n_delta, 5 + i);
        assert_int_equal(f[i].res.usage.completion_tokens, 5 + i);
        fsink_cleanup(&f[i]);
    }
    env_cleanup(&e);
}

static void test_router_refusals(void **state)
{
    (void)state;
    struct env e;
    env_init(&e);
    env_router(&e);
    struct fsink f;
    fsink_init(&f);
    char eb[256];
    assert_int_equal(env_submit(&e, "gpt-unknown", "hi", NULL, &f, eb, sizeof(eb)),
                     WYE_ERR_NOTFOUND);
    assert_string_equal(eb, "model 'gpt-unknown' not found");
    assert_int_equal(f.n_start + f.n_finish + f.n_events, 0);
    struct wye_buf out;
    wye_buf_init(&out, 4096);
    assert_int_equal(rt_router_models_json(e.rt, &out), WYE_OK);
    cJSON *m = cJSON_Parse(out.data);
    assert_true(cJSON_IsArray(m));
    assert_int_equal(cJSON_GetArraySize(m), 2);
    assert_string_equal(cJSON_GetObjectItem(cJSON_GetArrayItem(m, 0), "id")->valuestring, "auto");
    assert_string_equal(cJSON_GetObjectItem(cJSON_GetArrayItem(m, 1), "id")->valuestring,
                        "stub-model");
    cJSON_Delete(m);
    wye_buf_cleanup(&out);
    env_cleanup(&e);

    /* no upstream at all */
    env_init(&e);
    e.cfg.upstream.base_url = NULL;
    env_router(&e);
    assert_int_equal(env_submit(&e, "auto", "hi", NULL, &f, eb, sizeof(eb)), WYE_ERR_NOTFOUND);
    assert_string_equal(eb, "no upstream configured");
    assert_int_equal(f.n_start + f.n_finish + f.n_events, 0);
    fsink_cleanup(&f);
    env_cleanup(&e);
}

int main(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
    wye_alloc_install_cjson_hooks();
    if (!getenv("WYE_LOG_LEVEL")) {
        wye_log_set_level(WYE_LOG_ERROR);
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_words_usage_and_request),
        cmocka_unit_test(test_tools_pass_through),
        cmocka_unit_test(test_stream_variants),
        cmocka_unit_test(test_backpressure),
        cmocka_unit_test(test_connection_reuse),
        cmocka_unit_test(test_concurrent_streams),
        cmocka_unit_test(test_request_without_body),
        cmocka_unit_test(test_router_refusals),
        cmocka_unit_test(test_non_streamed),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    curl_global_cleanup();
    return rc;
}
