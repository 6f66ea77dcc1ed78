/* End to end: the gateway over the real router and its upstream thread, against the stub
 * upstream (tests/stub). Streamed chat over HTTP and WebSocket returns exactly the stub's
 * tokens in order; upstream 429 / 500 before the first byte become the matching client
 * status with an OpenAI error; a cut or an error mid-stream becomes an explicit error event
 * (no [DONE]); a client that disconnects or cancels makes the upstream transfer stop within
 * 100 ms (timed by the stub, from the client's action to its connection closing). */
/* cmocka.h needs these first. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cJSON.h>
#include <cmocka.h>
#include <curl/curl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/alloc.h"
#include "common/clock.h"
#include "common/crypto.h"
#include "conf/conf.h"
#include "gateway/gateway.h"
#include "tests/gateway/gw_stack.h"
#include "tests/gateway/http_client.h"
#include "tests/gateway/ws_client.h"
#include "tests/stub/stub_upstream.h"

#define T_MS 10000

/* Small stream buffers and a slow-client bound the tests can reach. */
static void tune(struct conf_config *cfg)
{
    cfg->limits.stream_buffer_bytes = 4096; /* backpressure reaches the upstream quickly */
    cfg->limits.slow_client_timeout_ms = 5000;
}

static int post(const char *content, bool stream, struct hc_resp *r)
{
    struct wye_buf b;
    wye_buf_init(&b, 1 << 16);
    (void)wye_buf_append_str(&b, "{\"messages\":[{\"role\":\"user\",\"content\":");
    (void)wye_buf_append_json_str(&b, content, strlen(content));
    (void)wye_buf_printf(&b, "}],\"stream\":%s}", stream ? "true" : "false");
    hc_resp_init(r);
    int st = hc_request(gws_group.port, "POST", "/v1/chat/completions", b.data, NULL, r, T_MS);
    wye_buf_cleanup(&b);
    return st;
}

/* Concatenates the SSE deltas; *done: [DONE] came last; *error: an error event came. */
static void sse_text_big(struct hc_resp *r, char *text, size_t cap, int *n_deltas, bool *done,
                         bool *error)
{
    size_t max = 4096;
    char **raw = wye_calloc(max, sizeof(char *));
    assert_non_null(raw);
    size_t n = hc_sse_split(r->body.data, r->body.len, raw, max);
    text[0] = '\0';
    *n_deltas = 0;
    *done = false;
    *error = false;
    for (size_t i = 0; i < n; i++) {
        if (strcmp(raw[i], "[DONE]") == 0) {
            *done = i == n - 1;
        } else {
            cJSON *j = cJSON_Parse(raw[i]);
            assert_non_null(j);
            *error |= cJSON_IsObject(cJSON_GetObjectItem(j, "error"));
            cJSON *c0 = cJSON_GetArrayItem(cJSON_GetObjectItem(j, "choices"), 0);
            cJSON *content = cJSON_GetObjectItem(cJSON_GetObjectItem(c0, "delta"), "content");
            if (cJSON_IsString(content)) {
                strncat(text, content->valuestring, cap - strlen(text) - 1);
                (*n_deltas)++;
            }
            cJSON_Delete(j);
        }
        wye_free(raw[i]);
    }
    wye_free(raw);
}

static void sse_text(struct hc_resp *r, char *text, size_t cap, int *n_deltas, bool *done,
                     bool *error)
{
    sse_text_big(r, text, cap, n_deltas, done, error);
}

static void test_http_stream(void **state)
{
    (void)state;
    struct hc_resp r;
    assert_int_equal(post("hello big world", true, &r), 200);
    char text[512];
    int n;
    bool done, error;
    sse_text(&r, text, sizeof(text), &n, &done, &error);
    assert_string_equal(text, "hello big world");
    assert_int_equal(n, 3);
    assert_true(done);
    assert_false(error);
    char v[64];
    assert_non_null(hc_header(&r, "x-wye-route", v, sizeof(v)));
    hc_resp_cleanup(&r);

    assert_int_equal(post("#stub n=12 delay_ms=2", true, &r), 200);
    sse_text(&r, text, sizeof(text), &n, &done, &error);
    assert_string_equal(text, "t0 t1 t2 t3 t4 t5 t6 t7 t8 t9 t10 t11");
    assert_true(done);
    hc_resp_cleanup(&r);

    assert_int_equal(post("one two", false, &r), 200);
    cJSON *j = cJSON_ParseWithLength(r.body.data, r.body.len);
    cJSON *msg =
        cJSON_GetObjectItem(cJSON_GetArrayItem(cJSON_GetObjectItem(j, "choices"), 0), "message");
    assert_string_equal(cJSON_GetObjectItem(msg, "content")->valuestring, "one two");
    cJSON_Delete(j);
    hc_resp_cleanup(&r);
}

static void test_ws_stream(void **state)
{
    (void)state;
    struct wsc c;
    assert_int_equal(wsc_connect(&c, gws_group.port, "/v1/ws", NULL, 0, T_MS), 101);
    assert_true(wsc_send_text(
        &c, "{\"type\":\"response.create\",\"id\":\"a\",\"response\":{"
            "\"messages\":[{\"role\":\"user\",\"content\":\"#stub n=6 delay_ms=5\"}]}}"));
    assert_true(wsc_send_text(&c, "{\"type\":\"response.create\",\"id\":\"b\",\"response\":{"
                                  "\"messages\":[{\"role\":\"user\",\"content\":\"x y z\"}]}}"));
    char text[2][256] = {"", ""};
    int done = 0;
    for (int i = 0; i < 100 && done < 2; i++) {
        char *m = NULL;
        assert_int_equal(wsc_recv(&c, &m, NULL, NULL, T_MS), WSC_TEXT);
        cJSON *j = cJSON_Parse(m);
        wye_free(m);
        const char *type = cJSON_GetObjectItem(j, "type")->valuestring;
        int k = strcmp(cJSON_GetObjectItem(j, "id")->valuestring, "a") == 0 ? 0 : 1;
        if (strcmp(type, "response.output_text.delta") == 0) {
            strcat(text[k], cJSON_GetObjectItem(j, "delta")->valuestring);
        } else if (strcmp(type, "response.done") == 0) {
            assert_string_equal(cJSON_GetObjectItem(j, "status")->valuestring, "completed");
            assert_string_equal(cJSON_GetObjectItem(j, "model")->valuestring, "stub-model");
            done++;
        }
        cJSON_Delete(j);
    }
    assert_int_equal(done, 2);
    assert_string_equal(text[0], "t0 t1 t2 t3 t4 t5");
    assert_string_equal(text[1], "x y z");
    wsc_close(&c);
}

static void assert_error_body(struct hc_resp *r, const char *type)
{
    cJSON *j = cJSON_ParseWithLength(r->body.data, r->body.len);
    assert_non_null(j);
    cJSON *e = cJSON_GetObjectItem(j, "error");
    assert_true(cJSON_IsString(cJSON_GetObjectItem(e, "message")));
    assert_string_equal(cJSON_GetObjectItem(e, "type")->valuestring, type);
    cJSON_Delete(j);
}

static void test_upstream_failures(void **state)
{
    (void)state;
    struct hc_resp r;
    assert_int_equal(post("#stub status=429", true, &r), 429);
    assert_error_body(&r, "rate_limit_error");
    hc_resp_cleanup(&r);
    assert_int_equal(post("#stub status=500", true, &r), 502);
    assert_error_body(&r, "upstream_error");
    hc_resp_cleanup(&r);
    assert_int_equal(post("#stub status=500", false, &r), 502);
    assert_error_body(&r, "upstream_error");
    hc_resp_cleanup(&r);

    /* Cut mid-stream: the deltas that arrived, then an error event, and no [DONE]. */
    assert_int_equal(post("#stub n=5 cut_after=2", true, &r), 200);
    char text[256];
    int n;
    bool done, error;
    sse_text(&r, text, sizeof(text), &n, &done, &error);
    assert_string_equal(text, "t0 t1");
    assert_false(done);
    assert_true(error);
    hc_resp_cleanup(&r);

    assert_int_equal(post("#stub n=5 error_in_stream=1", true, &r), 200);
    sse_text(&r, text, sizeof(text), &n, &done, &error);
    assert_string_equal(text, "t0");
    assert_false(done);
    assert_true(error);
    hc_resp_cleanup(&r);

    /* Over WebSocket the same failure is a failed response.done. */
    struct wsc c;
    assert_int_equal(wsc_connect(&c, gws_group.port, "/v1/ws", NULL, 0, T_MS), 101);
    assert_true(wsc_send_text(&c, "{\"type\":\"response.create\",\"id\":\"cut\",\"messages\":"
                                  "[{\"role\":\"user\",\"content\":\"#stub n=5 cut_after=2\"}]}"));
    bool failed = false;
    for (int i = 0; i < 20; i++) {
        char *m = NULL;
        assert_int_equal(wsc_recv(&c, &m, NULL, NULL, T_MS), WSC_TEXT);
        cJSON *j = cJSON_Parse(m);
        wye_free(m);
        bool is_done = strcmp(cJSON_GetObjectItem(j, "type")->valuestring, "response.done") == 0;
        if (is_done) {
            failed = strcmp(cJSON_GetObjectItem(j, "status")->valuestring, "failed") == 0 &&
                     cJSON_IsObject(cJSON_GetObjectItem(j, "error"));
        }
        cJSON_Delete(j);
        if (is_done) {
            break;
        }
    }
    assert_true(failed);
    wsc_close(&c);
}

/* Reads from fd until needle has arrived; true if it did within timeout_ms. */
static bool read_until(int fd, const char *needle, int timeout_ms)
{
    int64_t deadline = wye_now_ns() + (int64_t)timeout_ms * WYE_NS_PER_MS;
    char buf[65536];
    size_t len = 0;
    while (wye_now_ns() < deadline) {
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        if (poll(&pfd, 1, 10) <= 0) {
            continue;
        }
        if (len == sizeof(buf) - 1) {
            len = 0; /* only the newest bytes matter */
        }
        ssize_t n = recv(fd, buf + len, sizeof(buf) - 1 - len, 0);
        if (n <= 0) {
            return false;
        }
        len += (size_t)n;
        buf[len] = '\0';
        if (strstr(buf, needle)) {
            return true;
        }
    }
    return false;
}

/* The client acted (closed, cancelled) at t0; the stub upstream must see its connection closed
 * (the transfer aborted) within 100 ms of that, timed on CLOCK_MONOTONIC by the stub itself. */
static void assert_upstream_aborted_within_100ms(long aborts_before, int64_t t0, const char *what)
{
    assert_true(stub_upstream_wait_aborts(gws_group.stub, aborts_before + 1, T_MS));
    int64_t seen = 0;
    assert_int_equal(stub_upstream_aborts(gws_group.stub, &seen), aborts_before + 1);
    double ms = (double)(seen - t0) / 1e6;
    printf("[ info ] %s: the upstream connection closed %.2f ms after the client's action\n", what,
           ms);
    assert_true(seen >= t0);
    assert_true(seen - t0 < 100 * WYE_NS_PER_MS);
    assert_true(stub_upstream_wait_active(gws_group.stub, 0, T_MS));
}

/* An HTTP client that closes its socket mid-SSE: the router removes the upstream transfer, so
 * the stub sees its connection go away within 100 ms, whether the upstream was still streaming,
 * had stalled, or was paused because this client had stopped reading (the last script: a
 * small receive buffer, then a pause long enough for the gateway's queue to fill). */
static void test_disconnect_stops_upstream(void **state)
{
    (void)state;
    static const char *const scripts[] = {"#stub n=1000 delay_ms=10", "#stub n=5 stall_after=1",
                                          "#stub n=1000 delay_ms=3", "#stub n=40000 pad=800"};
    for (size_t i = 0; i < sizeof(scripts) / sizeof(scripts[0]); i++) {
        bool paused = i == 3;
        assert_true(stub_upstream_wait_active(gws_group.stub, 0, T_MS));
        int fd = hc_connect(gws_group.port, paused ? 4096 : 0);
        assert_true(fd >= 0);
        char body[256], req[512];
        snprintf(body, sizeof(body),
                 "{\"stream\":true,\"messages\":[{\"role\":\"user\",\"content\":\"%s\"}]}",
                 scripts[i]);
        int n = snprintf(req, sizeof(req),
                         "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
                         "Content-Length: %zu\r\n\r\n%s",
                         strlen(body), body);
        assert_true(hc_send_all(fd, req, (size_t)n, T_MS));
        /* mid-SSE: the first delta has reached the client */
        assert_true(read_until(fd, "\"content\":\"t0", T_MS));
        /* not reading: the socket buffers, then the gateway's queue fill up, and the
         * upstream transfer is paused */
        int64_t deadline = wye_now_ns() + T_MS * WYE_NS_PER_MS;
        struct gw_stats st;
        gw_server_stats(gws_group.srv, &st);
        while (paused && st.queued_bytes_peak <= gws_group.cfg->limits.stream_buffer_bytes &&
               wye_now_ns() < deadline) {
            wye_sleep_ms(20);
            gw_server_stats(gws_group.srv, &st);
        }
        assert_true(!paused || st.queued_bytes_peak > gws_group.cfg->limits.stream_buffer_bytes);
        assert_int_equal(stub_upstream_active(gws_group.stub), 1);
        long before = stub_upstream_aborts(gws_group.stub, NULL);
        int64_t t0 = wye_now_ns();
        close(fd);
        assert_upstream_aborted_within_100ms(before, t0, scripts[i]);
    }
}

/* response.cancel stops the answer (response.done "cancelled") and aborts the upstream
 * transfer within 100 ms of the client sending it. */
static void test_ws_cancel_stops_upstream(void **state)
{
    (void)state;
    assert_true(stub_upstream_wait_active(gws_group.stub, 0, T_MS));
    struct wsc c;
    assert_int_equal(wsc_connect(&c, gws_group.port, "/v1/ws", NULL, 0, T_MS), 101);
    assert_true(wsc_send_text(&c,
                              "{\"type\":\"response.create\",\"id\":\"long\",\"messages\":"
                              "[{\"role\":\"user\",\"content\":\"#stub n=200 delay_ms=20\"}]}"));
    int deltas = 0;
    bool cancelled = false;
    long before = 0;
    int64_t t0 = 0;
    for (int i = 0; i < 300; i++) {
        char *m = NULL;
        assert_int_equal(wsc_recv(&c, &m, NULL, NULL, T_MS), WSC_TEXT);
        cJSON *j = cJSON_Parse(m);
        wye_free(m);
        const char *type = cJSON_GetObjectItem(j, "type")->valuestring;
        if (strcmp(type, "response.output_text.delta") == 0 && ++deltas == 2) {
            before = stub_upstream_aborts(gws_group.stub, NULL);
            t0 = wye_now_ns();
            assert_true(wsc_send_text(&c, "{\"type\":\"response.cancel\",\"id\":\"long\"}"));
        }
        bool done = strcmp(type, "response.done") == 0;
        if (done) {
            cancelled = strcmp(cJSON_GetObjectItem(j, "status")->valuestring, "cancelled") == 0;
        }
        cJSON_Delete(j);
        if (done) {
            break;
        }
    }
    assert_true(cancelled);
    assert_true(deltas < 200);
    /* The upstream transfer was removed, not left streaming into the void. */
    assert_upstream_aborted_within_100ms(before, t0, "WebSocket response.cancel");
    wsc_close(&c);
}

/* A WebSocket client that vanishes (TCP close, no close frame) with two answers in flight:
 * both upstream transfers are aborted within 100 ms. */
static void test_ws_disconnect_stops_upstream(void **state)
{
    (void)state;
    assert_true(stub_upstream_wait_active(gws_group.stub, 0, T_MS));
    struct wsc c;
    assert_int_equal(wsc_connect(&c, gws_group.port, "/v1/ws", NULL, 0, T_MS), 101);
    assert_true(wsc_send_text(&c,
                              "{\"type\":\"response.create\",\"id\":\"a\",\"messages\":"
                              "[{\"role\":\"user\",\"content\":\"#stub n=500 delay_ms=10\"}]}"));
    assert_true(wsc_send_text(&c,
                              "{\"type\":\"response.create\",\"id\":\"b\",\"messages\":"
                              "[{\"role\":\"user\",\"content\":\"#stub n=5 stall_after=1\"}]}"));
    bool seen[2] = {false, false};
    for (int i = 0; i < 100 && !(seen[0] && seen[1]); i++) {
        char *m = NULL;
        assert_int_equal(wsc_recv(&c, &m, NULL, NULL, T_MS), WSC_TEXT);
        cJSON *j = cJSON_Parse(m);
        wye_free(m);
        if (strcmp(cJSON_GetObjectItem(j, "type")->valuestring, "response.output_text.delta") ==
            0) {
            seen[strcmp(cJSON_GetObjectItem(j, "id")->valuestring, "a") == 0 ? 0 : 1] = true;
        }
        cJSON_Delete(j);
    }
    assert_true(seen[0] && seen[1]);
    assert_int_equal(stub_upstream_active(gws_group.stub), 2);
    long before = stub_upstream_aborts(gws_group.stub, NULL);
    int64_t t0 = wye_now_ns();
    wsc_close(&c);
    assert_true(stub_upstream_wait_aborts(gws_group.stub, before + 2, T_MS));
    int64_t seen_ns = 0;
    assert_int_equal(stub_upstream_aborts(gws_group.stub, &seen_ns), before + 2);
    printf("[ info ] WebSocket disconnect: both upstream connections closed within %.2f ms\n",
           (double)(seen_ns - t0) / 1e6);
    assert_true(seen_ns >= t0);
    assert_true(seen_ns - t0 < 100 * WYE_NS_PER_MS); /* the later of the two */
    assert_true(stub_upstream_wait_active(gws_group.stub, 0, T_MS));
}

/* Streamed answers through the router on one kept connection: the upstream's tokens, chunked,
 * and then a non-streamed answer on the same connection. */
static void test_http_stream_keepalive(void **state)
{
    (void)state;
    int fd = hc_connect(gws_group.port, 0);
    assert_true(fd >= 0);
    static const char *const prompts[] = {"hello big world", "#stub n=4 delay_ms=2", "x y"};
    static const char *const want[] = {"hello big world", "t0 t1 t2 t3", "x y"};
    char text[256];
    int n;
    bool done, error;
    for (int i = 0; i < 3; i++) {
        char body[256];
        snprintf(body, sizeof(body),
                 "{\"stream\":%s,\"messages\":[{\"role\":\"user\",\"content\":\"%s\"}]}",
                 i < 2 ? "true" : "false", prompts[i]);
        struct hc_resp r;
        hc_resp_init(&r);
        assert_int_equal(hc_request_fd(fd, "POST", "/v1/chat/completions", body, NULL, &r, T_MS),
                         200);
        assert_true(r.complete);
        assert_false(r.eof);
        if (i < 2) {
            assert_true(r.chunked);
            sse_text(&r, text, sizeof(text), &n, &done, &error);
            assert_string_equal(text, want[i]);
            assert_true(done);
            assert_false(error);
        } else {
            cJSON *j = cJSON_ParseWithLength(r.body.data, r.body.len);
            cJSON *msg = cJSON_GetObjectItem(
                cJSON_GetArrayItem(cJSON_GetObjectItem(j, "choices"), 0), "message");
            assert_string_equal(cJSON_GetObjectItem(msg, "content")->valuestring, want[i]);
            cJSON_Delete(j);
        }
        hc_resp_cleanup(&r);
    }
    close(fd);
}

/* A client that pauses: the queue fills, the upstream transfer is paused, then resumed when
 * the client reads again; every token arrives, in order, and memory stayed bounded. */
static void test_backpressure_roundtrip(void **state)
{
    (void)state;
    int fd = hc_connect(gws_group.port, 4096);
    assert_true(fd >= 0);
    const char *body = "{\"stream\":true,\"messages\":[{\"role\":\"user\",\"content\":"
                       "\"#stub n=3000\"}]}";
    char req[512];
    int n = snprintf(req, sizeof(req),
                     "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
                     "Content-Length: %zu\r\n\r\n%s",
                     strlen(body), body);
    assert_true(hc_send_all(fd, req, (size_t)n, T_MS));
    wye_sleep_ms(300); /* not reading: the gateway's queue fills and it pushes back */
    struct hc_resp r;
    hc_resp_init(&r);
    assert_int_equal(hc_read_response(fd, &r, T_MS), 200);
    /* chunked, and complete: the last chunk came after everything lws had to buffer */
    assert_true(r.chunked);
    assert_true(r.complete);
    assert_false(r.eof);
    char *text = wye_malloc(64 * 1024);
    int deltas;
    bool done, error;
    sse_text_big(&r, text, 64 * 1024, &deltas, &done, &error);
    assert_int_equal(deltas, 3000);
    assert_true(done);
    assert_false(error);
    /* Spot-check the order. */
    assert_int_equal(strncmp(text, "t0 t1 t2 t3", 11), 0);
    assert_non_null(strstr(text, " t1499 t1500 t1501 "));
    size_t len = strlen(text);
    assert_true(len > 11);
    assert_string_equal(text + len - 11, "t2998 t2999");
    hc_resp_cleanup(&r);
    /* the connection serves the next streamed request */
    hc_resp_init(&r);
    assert_int_equal(hc_request_fd(fd, "POST", "/v1/chat/completions",
                                   "{\"stream\":true,\"messages\":[{\"role\":\"user\","
                                   "\"content\":\"again and again\"}]}",
                                   NULL, &r, T_MS),
                     200);
    assert_true(r.chunked && r.complete);
    sse_text_big(&r, text, 64 * 1024, &deltas, &done, &error);
    assert_string_equal(text, "again and again");
    assert_true(done);
    close(fd);
    wye_free(text);
    hc_resp_cleanup(&r);
    struct gw_stats st;
    gw_server_stats(gws_group.srv, &st);
    /* Over the mark (so emit said AGAIN and the transfer paused), by at most one event. */
    assert_true(st.queued_bytes_peak > gws_group.cfg->limits.stream_buffer_bytes);
    assert_true(st.queued_bytes_peak <= gws_group.cfg->limits.stream_buffer_bytes + 1024);
}

int main(void)
{
    wye_alloc_install_cjson_hooks();
    curl_global_init(CURL_GLOBAL_DEFAULT);
    if (wye_crypto_init() != WYE_OK) {
        return 1;
    }
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_http_stream),
        cmocka_unit_test(test_http_stream_keepalive),
        cmocka_unit_test(test_ws_stream),
        cmocka_unit_test(test_upstream_failures),
        cmocka_unit_test(test_disconnect_stops_upstream),
        cmocka_unit_test(test_ws_cancel_stops_upstream),
        cmocka_unit_test(test_ws_disconnect_stops_upstream),
        cmocka_unit_test(test_backpressure_roundtrip),
    };
    gws_group_opts = (struct gws_opts){.tune = tune};
    int rc = cmocka_run_group_tests(tests, gws_group_setup, gws_group_teardown);
    curl_global_cleanup();
    return rc;
}
