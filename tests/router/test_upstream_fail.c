/* The upstream client's failure rules against the stub upstream: retries before the first
 * byte (429 then success, 500 exhausted), status mapping (401 -> 502 "API key", 400 passes the
 * upstream's message), connect refused, first-byte and idle timeouts, a stream cut or broken
 * mid-way ends with an explicit error (never a clean-looking end) and estimated usage,
 * malformed chunks, cancellation (by wakeup, by poll, by emit) and stop with streams in flight. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <curl/curl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/alloc.h"
#include "common/clock.h"
#include "common/log.h"
#include "tests/router/test_sink_util.h"

#define WAIT_MS 10000

/* Submits content (streamed or not) and waits for the (failed) finish. */
static void run_fail_stream(struct env *e, const char *content, bool stream, struct fsink *f)
{
    char eb[256];
    assert_int_equal(env_submit_stream(e, "auto", content, NULL, stream, f, eb, sizeof(eb)),
                     WYE_OK);
    assert_true(fsink_wait_finish(f, WAIT_MS));
    assert_int_equal(f->violations, 0);
    assert_int_not_equal(f->res.err, WYE_OK);
    assert_string_equal(f->reason, "error");
}

static void run_fail(struct env *e, const char *content, struct fsink *f)
{
    run_fail_stream(e, content, true, f);
}

static void test_retry_then_success(void **state)
{
    (void)state;
    struct env e;
    env_init(&e);
    e.cfg.upstream.max_retries = 3;
    env_router(&e);
    struct fsink f;
    fsink_init(&f);
    char eb[256];
    assert_int_equal(env_submit(&e, "auto", "#stub fail_first=2 status=429 retry_after=0 n=3", NULL,
                                &f, eb, sizeof(eb)),
                     WYE_OK);
    assert_true(fsink_wait_finish(&f, WAIT_MS));
    assert_int_equal(f.res.err, WYE_OK);
    assert_string_equal(f.text.data, "t0 t1 t2");
    assert_int_equal(f.n_start, 1);
    assert_int_equal(stub_upstream_requests(e.stub), 3);
    struct rt_stats st;
    rt_router_stats(e.rt, &st);
    assert_int_equal(st.upstream_retries, 2);
    assert_int_equal(st.upstream_requests, 3);
    fsink_cleanup(&f);

    /* 503 twice, then fine */
    fsink_init(&f);
    assert_int_equal(
        env_submit(&e, "auto", "#stub fail_first=2 status=503 n=2", NULL, &f, eb, sizeof(eb)),
        WYE_OK);
    assert_true(fsink_wait_finish(&f, WAIT_MS));
    assert_int_equal(f.res.err, WYE_OK);
    assert_string_equal(f.text.data, "t0 t1");
    fsink_cleanup(&f);
    env_cleanup(&e);
}

static void test_status_mapping(void **state)
{
    (void)state;
    struct env e;
    env_init(&e);
    e.cfg.upstream.max_retries = 2;
    env_router(&e);
    static const struct {
        const char *directive;
        enum wye_err err;
        int status;
        const char *msg_part;
        long attempts;
    } cases[] = {
        {"#stub status=500", WYE_ERR_UPSTREAM, 502, "HTTP 500: stub error 500", 3},
        {"#stub status=429", WYE_ERR_LIMIT, 429, "rate limit", 3},
        {"#stub status=429 retry_after=3600", WYE_ERR_LIMIT, 429, "rate limit", 1},
        {"#stub status=401", WYE_ERR_UPSTREAM, 502, "upstream rejected the API key", 1},
        {"#stub status=403", WYE_ERR_UPSTREAM, 502, "API key", 1},
        {"#stub status=400", WYE_ERR_INVAL, 400, "upstream rejected the request: stub error 400",
         1},
        {"#stub status=404", WYE_ERR_UPSTREAM, 502, "HTTP 404", 1},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        long before = stub_upstream_requests(e.stub);
        struct fsink f;
        fsink_init(&f);
        run_fail(&e, cases[i].directive, &f);
        assert_int_equal(f.res.err, cases[i].err);
        assert_int_equal(f.res.http_status, cases[i].status);
        if (!strstr(f.msg, cases[i].msg_part)) {
            fail_msg("'%s': message '%s' lacks '%s'", cases[i].directive, f.msg, cases[i].msg_part);
        }
        assert_int_equal(f.n_start, 0);
        assert_int_equal(f.n_events, 0);
        assert_int_equal(stub_upstream_requests(e.stub) - before, cases[i].attempts);
        assert_false(f.res.usage.estimated);
        fsink_cleanup(&f);
    }
    env_cleanup(&e);
}

static void test_connect_refused(void **state)
{
    (void)state;
    /* a port nobody listens on: bind one, then close it */
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET};
    inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    socklen_t sl = sizeof(sa);
    getsockname(fd, (struct sockaddr *)&sa, &sl);
    close(fd);
    struct env e;
    env_init(&e);
    snprintf(e.url, sizeof(e.url), "http://127.0.0.1:%d/v1", ntohs(sa.sin_port));
    e.cfg.upstream.max_retries = 1;
    env_router(&e);
    struct fsink f;
    fsink_init(&f);
    run_fail(&e, "hello", &f);
    assert_int_equal(f.res.err, WYE_ERR_UPSTREAM);
    assert_int_equal(f.res.http_status, 502);
    assert_non_null(strstr(f.msg, "could not reach the upstream"));
    struct rt_stats st;
    rt_router_stats(e.rt, &st);
    assert_int_equal(st.upstream_requests, 2);
    assert_int_equal(st.upstream_errors, 2);
    fsink_cleanup(&f);
    env_cleanup(&e);
}

static void test_first_byte_timeout(void **state)
{
    (void)state;
    struct env e;
    env_init(&e);
    e.cfg.upstream.first_byte_timeout_ms = 200;
    e.cfg.upstream.max_retries = 1;
    env_router(&e);
    struct fsink f;
    fsink_init(&f);
    int64_t t0 = wye_now_ns();
    run_fail(&e, "#stub first_byte_delay_ms=3000", &f);
    assert_int_equal(f.res.err, WYE_ERR_TIMEOUT);
    assert_int_equal(f.res.http_status, 504);
    assert_non_null(strstr(f.msg, "first-byte timeout of 200 ms"));
    assert_true(f.t_finish_ns - t0 < 2900 * WYE_NS_PER_MS); /* did not wait for the stub */
    assert_int_equal(stub_upstream_connections(e.stub), 2); /* retried once */
    fsink_cleanup(&f);
    env_cleanup(&e);
}

/* A non-streamed request's first byte comes with its whole answer, so the first-byte timeout
 * does not cut a slow answer short; the total timeout bounds it. */
static void test_non_streamed_timeouts(void **state)
{
    (void)state;
    struct env e;
    env_init(&e);
    e.cfg.upstream.first_byte_timeout_ms = 200;
    e.cfg.upstream.total_timeout_ms = 1500;
    e.cfg.upstream.max_retries = 0;
    env_router(&e);
    struct fsink f;
    fsink_init(&f);
    char eb[256];
    int64_t t0 = wye_now_ns();
    assert_int_equal(env_submit_stream(&e, "auto", "#stub n=3 first_byte_delay_ms=600", NULL, false,
                                       &f, eb, sizeof(eb)),
                     WYE_OK);
    assert_true(fsink_wait_finish(&f, WAIT_MS));
    assert_int_equal(f.res.err, WYE_OK);
    assert_string_equal(f.text.data, "t0 t1 t2");
    assert_true(f.t_finish_ns - t0 >= 600 * WYE_NS_PER_MS);
    fsink_cleanup(&f);

    fsink_init(&f);
    t0 = wye_now_ns();
    run_fail_stream(&e, "#stub first_byte_delay_ms=5000", false, &f);
    assert_int_equal(f.res.err, WYE_ERR_TIMEOUT);
    assert_int_equal(f.res.http_status, 504);
    assert_non_null(strstr(f.msg, "timed out"));
    assert_true(f.t_finish_ns - t0 >= 1400 * WYE_NS_PER_MS);
    assert_true(f.t_finish_ns - t0 < 4500 * WYE_NS_PER_MS); /* did not wait for the stub */
    fsink_cleanup(&f);
    env_cleanup(&e);
}

static void test_mid_stream_failures(void **state)
{
    (void)state;
    struct env e;
    env_init(&e);
    e.cfg.upstream.idle_timeout_ms = 250;
    env_router(&e);
    static const struct {
        const char *directive;
        enum wye_err err;
        const char *text;
        const char *msg_part;
    } cases[] = {
        {"#stub n=5 stall_after=2", WYE_ERR_TIMEOUT, "t0 t1",
         "upstream stalled: no data for 250 ms after 2 chunks"},
        {"#stub n=10 cut_after=3", WYE_ERR_UPSTREAM, "t0 t1 t2",
         "upstream closed the connection mid-stream after 3 chunks"},
        {"#stub n=4 malformed=1", WYE_ERR_UPSTREAM, "t0",
         "upstream sent a malformed stream chunk (#2): invalid JSON"},
        {"#stub n=4 error_in_stream=1", WYE_ERR_UPSTREAM, "t0",
         "upstream reported an error mid-stream: stub stream error"},
        {"#stub n=3 no_done=1 no_finish=1 no_usage=1", WYE_ERR_UPSTREAM, "t0 t1 t2",
         "without a finish_reason or [DONE]"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct fsink f;
        fsink_init(&f);
        run_fail(&e, cases[i].directive, &f);
        assert_int_equal(f.res.err, cases[i].err);
        assert_string_equal(f.text.data, cases[i].text);
        if (!strstr(f.msg, cases[i].msg_part)) {
            fail_msg("'%s': message '%s' lacks '%s'", cases[i].directive, f.msg, cases[i].msg_part);
        }
        assert_int_equal(f.n_start, 1);
        /* the stream was cut before its usage chunk: estimated, not $0 */
        assert_true(f.res.usage.estimated);
        assert_int_equal(f.res.usage.completion_tokens, f.n_delta);
        assert_true(f.res.usage.prompt_tokens > 0);
        fsink_cleanup(&f);
    }
    /* the stalled and cut connections are gone from the stub's view */
    assert_true(stub_upstream_wait_active(e.stub, 0, WAIT_MS));
    env_cleanup(&e);
}

static void cancel_case(struct env *e, bool wake, int cancel_at)
{
    struct fsink f;
    fsink_init(&f);
    f.cancel_at = cancel_at;
    char eb[256];
    assert_int_equal(env_submit(e, "auto", "#stub n=200 delay_ms=20", NULL, &f, eb, sizeof(eb)),
                     WYE_OK);
    fsink_wait_events(&f, 3, WAIT_MS);
    assert_true(stub_upstream_wait_active(e->stub, 1, WAIT_MS));
    int64_t t0 = wye_now_ns();
    if (!cancel_at) {
        fsink_cancel(&f, wake);
    }
    assert_true(fsink_wait_finish(&f, WAIT_MS));
    assert_int_equal(f.res.err, WYE_ERR_CANCELED);
    assert_string_equal(f.reason, "cancelled");
    assert_int_equal(f.violations, 0);
    if (!cancel_at) {
        /* 100 ms is the goal; the bound leaves room for a loaded sanitizer run */
        assert_true(f.t_finish_ns - t0 < 1000 * WYE_NS_PER_MS);
    }
    assert_true(f.n_delta < 200);
    /* the upstream request really ended */
    assert_true(stub_upstream_wait_active(e->stub, 0, WAIT_MS));
    fsink_cleanup(&f);
}

static void test_cancel(void **state)
{
    (void)state;
    struct env e;
    env_init(&e);
    env_router(&e);
    cancel_case(&e, true, 0);  /* the sink's wakeup */
    cancel_case(&e, false, 0); /* noticed by polling */
    cancel_case(&e, false, 4); /* emit answered CANCELED */
    struct rt_stats st;
    rt_router_stats(e.rt, &st);
    assert_int_equal(st.upstream_active, 0);
    assert_int_equal(st.upstream_errors, 0);
    env_cleanup(&e);
}

static void test_stop_in_flight(void **state)
{
    (void)state;
    struct env e;
    env_init(&e);
    env_router(&e);
    struct fsink f[3];
    char eb[256];
    for (int i = 0; i < 3; i++) {
        fsink_init(&f[i]);
        assert_int_equal(
            env_submit(&e, "auto",
                       i == 2 ? "#stub first_byte_delay_ms=5000" : "#stub n=500 delay_ms=20", NULL,
                       &f[i], eb, sizeof(eb)),
            WYE_OK);
    }
    fsink_wait_events(&f[0], 2, WAIT_MS);
    rt_router_stop(e.rt);
    for (int i = 0; i < 3; i++) {
        assert_true(fsink_wait_finish(&f[i], 1)); /* stop returned: all finished */
        assert_int_equal(f[i].res.err, WYE_ERR_CANCELED);
        assert_int_equal(f[i].violations, 0);
        fsink_cleanup(&f[i]);
    }
    /* refused after stop, sink untouched */
    struct fsink g;
    fsink_init(&g);
    assert_int_equal(env_submit(&e, "auto", "hi", NULL, &g, eb, sizeof(eb)), WYE_ERR_CANCELED);
    assert_int_equal(g.n_finish, 0);
    fsink_cleanup(&g);
    env_cleanup(&e);
}

int main(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
    wye_alloc_install_cjson_hooks();
    if (!getenv("WYE_LOG_LEVEL")) {
        wye_log_set_level(WYE_LOG_OFF);
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_retry_then_success),  cmocka_unit_test(test_status_mapping),
        cmocka_unit_test(test_connect_refused),     cmocka_unit_test(test_first_byte_timeout),
        cmocka_unit_test(test_mid_stream_failures), cmocka_unit_test(test_cancel),
        cmocka_unit_test(test_stop_in_flight),      cmocka_unit_test(test_non_streamed_timeouts),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    curl_global_cleanup();
    return rc;
}
