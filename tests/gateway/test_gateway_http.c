/* The gateway's HTTP API against a real server on 127.0.0.1 port 0 with a scripted backend:
 * JSON and SSE answers exactly right (role chunk, deltas in order, finish chunk, usage chunk
 * only when asked, [DONE] last), tool calls passed through and assembled, errors before and
 * after the start, every limit with an error naming it, malformed input, /healthz, /v1/models,
 * /metrics, client disconnects and slow readers cancelling the producer, connection limits and
 * graceful shutdown. */
/* cmocka.h needs these first. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cJSON.h>
#include <cmocka.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/alloc.h"
#include "common/clock.h"
#include "common/crypto.h"
#include "tests/gateway/gw_test_backend.h"
#include "tests/gateway/http_client.h"

#define T_MS 5000

static char *chat_body(const char *content, bool stream, const char *extra)
{
    struct wye_buf b;
    wye_buf_init(&b, 1 << 20);
    (void)wye_buf_append_str(&b,
                             "{\"model\":\"auto\",\"messages\":[{\"role\":\"user\",\"content\":");
    (void)wye_buf_append_json_str(&b, content, strlen(content));
    (void)wye_buf_printf(&b, "}],\"stream\":%s%s}", stream ? "true" : "false", extra ? extra : "");
    return wye_buf_steal(&b, NULL);
}

/* POSTs a chat request; returns the status. */
static int post_chat(const char *content, bool stream, const char *extra, struct hc_resp *r)
{
    char *body = chat_body(content, stream, extra);
    hc_resp_init(r);
    int st = hc_request(gwt_group->port, "POST", "/v1/chat/completions", body, NULL, r, T_MS);
    wye_free(body);
    return st;
}

/* Asserts r is an OpenAI error whose message contains needle; returns nothing. */
static void assert_error(struct hc_resp *r, int status, const char *needle)
{
    assert_int_equal(r->status, status);
    cJSON *j = cJSON_ParseWithLength(r->body.data, r->body.len);
    assert_non_null(j);
    cJSON *e = cJSON_GetObjectItem(j, "error");
    assert_true(cJSON_IsObject(e));
    cJSON *msg = cJSON_GetObjectItem(e, "message");
    assert_true(cJSON_IsString(msg));
    assert_true(cJSON_IsString(cJSON_GetObjectItem(e, "type")));
    assert_non_null(cJSON_GetObjectItem(e, "param"));
    assert_non_null(cJSON_GetObjectItem(e, "code"));
    if (!strstr(msg->valuestring, needle)) {
        fail_msg("error message '%s' does not contain '%s'", msg->valuestring, needle);
    }
    cJSON_Delete(j);
}

static void test_json_answer(void **state)
{
    (void)state;
    struct hc_resp r;
    assert_int_equal(post_chat("hello big world", false, NULL, &r), 200);
    char v[128];
    assert_non_null(hc_header(&r, "x-request-id", v, sizeof(v)));
    assert_int_equal(strncmp(v, "req_", 4), 0);
    assert_int_equal(strlen(v), WYE_REQID_LEN);
    assert_non_null(hc_header(&r, "x-wye-route", v, sizeof(v)));
    assert_string_equal(v, "remote");
    assert_non_null(hc_header(&r, "x-wye-score", v, sizeof(v)));
    assert_string_equal(v, "0.2500");
    assert_non_null(hc_header(&r, "content-type", v, sizeof(v)));
    assert_string_equal(v, "application/json");
    cJSON *j = cJSON_ParseWithLength(r.body.data, r.body.len);
    assert_non_null(j);
    assert_string_equal(cJSON_GetObjectItem(j, "object")->valuestring, "chat.completion");
    assert_string_equal(cJSON_GetObjectItem(j, "model")->valuestring, "test-model");
    cJSON *c0 = cJSON_GetArrayItem(cJSON_GetObjectItem(j, "choices"), 0);
    cJSON *msg = cJSON_GetObjectItem(c0, "message");
    assert_string_equal(cJSON_GetObjectItem(msg, "role")->valuestring, "assistant");
    assert_string_equal(cJSON_GetObjectItem(msg, "content")->valuestring, "hello big world");
    assert_string_equal(cJSON_GetObjectItem(c0, "finish_reason")->valuestring, "stop");
    cJSON *u = cJSON_GetObjectItem(j, "usage");
    assert_int_equal(cJSON_GetObjectItem(u, "prompt_tokens")->valueint, 7);
    assert_int_equal(cJSON_GetObjectItem(u, "completion_tokens")->valueint, 3);
    assert_int_equal(cJSON_GetObjectItem(u, "total_tokens")->valueint, 10);
    cJSON_Delete(j);
    hc_resp_cleanup(&r);
}

/* Parses an SSE body into JSON events; the final "[DONE]" becomes a NULL entry. */
static size_t sse_events(struct hc_resp *r, cJSON **ev, size_t max, bool *done)
{
    char *raw[64];
    size_t n = hc_sse_split(r->body.data, r->body.len, raw, 64);
    size_t k = 0;
    *done = false;
    for (size_t i = 0; i < n; i++) {
        if (strcmp(raw[i], "[DONE]") == 0) {
            assert_int_equal(i, n - 1); /* [DONE] is last */
            *done = true;
        } else if (k < max) {
            ev[k] = cJSON_Parse(raw[i]);
            assert_non_null(ev[k]);
            k++;
        }
        wye_free(raw[i]);
    }
    return k;
}

static void free_events(cJSON **ev, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        cJSON_Delete(ev[i]);
    }
}

static void check_sse(bool include_usage)
{
    struct hc_resp r;
    assert_int_equal(
        post_chat("one two three four", true,
                  include_usage ? ",\"stream_options\":{\"include_usage\":true}" : NULL, &r),
        200);
    char v[128];
    assert_non_null(hc_header(&r, "content-type", v, sizeof(v)));
    assert_string_equal(v, "text/event-stream");
    assert_non_null(hc_header(&r, "x-request-id", v, sizeof(v)));
    cJSON *ev[64];
    bool done;
    size_t n = sse_events(&r, ev, 64, &done);
    assert_true(done);
    /* 4 deltas + finish (+ usage) */
    assert_int_equal(n, include_usage ? 6 : 5);
    char text[256] = "";
    for (size_t i = 0; i < 4; i++) {
        assert_string_equal(cJSON_GetObjectItem(ev[i], "object")->valuestring,
                            "chat.completion.chunk");
        assert_string_equal(cJSON_GetObjectItem(ev[i], "id")->valuestring,
                            cJSON_GetObjectItem(ev[0], "id")->valuestring);
        cJSON *c0 = cJSON_GetArrayItem(cJSON_GetObjectItem(ev[i], "choices"), 0);
        cJSON *delta = cJSON_GetObjectItem(c0, "delta");
        cJSON *role = cJSON_GetObjectItem(delta, "role");
        if (i == 0) {
            assert_string_equal(role->valuestring, "assistant");
        } else {
            assert_null(role);
        }
        assert_true(cJSON_IsNull(cJSON_GetObjectItem(c0, "finish_reason")));
        strcat(text, cJSON_GetObjectItem(delta, "content")->valuestring);
    }
    assert_string_equal(text, "one two three four");
    cJSON *fin = cJSON_GetArrayItem(cJSON_GetObjectItem(ev[4], "choices"), 0);
    assert_string_equal(cJSON_GetObjectItem(fin, "finish_reason")->valuestring, "stop");
    if (include_usage) {
        assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(ev[5], "choices")), 0);
        cJSON *u = cJSON_GetObjectItem(ev[5], "usage");
        assert_int_equal(cJSON_GetObjectItem(u, "completion_tokens")->valueint, 4);
        assert_int_equal(cJSON_GetObjectItem(u, "total_tokens")->valueint, 11);
    } else {
        for (size_t i = 0; i < n; i++) {
            assert_null(cJSON_GetObjectItem(ev[i], "usage"));
        }
    }
    free_events(ev, n);
    hc_resp_cleanup(&r);
}

static void test_sse_answer(void **state)
{
    (void)state;
    check_sse(false);
    check_sse(true);
}

static void test_tool_calls(void **state)
{
    (void)state;
    struct hc_resp r;
    assert_int_equal(post_chat("#tools", true, NULL, &r), 200);
    cJSON *ev[16];
    bool done;
    size_t n = sse_events(&r, ev, 16, &done);
    assert_true(done);
    assert_int_equal(n, 4);
    cJSON *d0 =
        cJSON_GetObjectItem(cJSON_GetArrayItem(cJSON_GetObjectItem(ev[0], "choices"), 0), "delta");
    assert_string_equal(cJSON_GetObjectItem(d0, "role")->valuestring, "assistant");
    cJSON *tc = cJSON_GetArrayItem(cJSON_GetObjectItem(d0, "tool_calls"), 0);
    assert_string_equal(cJSON_GetObjectItem(tc, "id")->valuestring, "call_1");
    assert_string_equal(
        cJSON_GetObjectItem(cJSON_GetObjectItem(tc, "function"), "name")->valuestring,
        "get_weather");
    cJSON *d2 =
        cJSON_GetObjectItem(cJSON_GetArrayItem(cJSON_GetObjectItem(ev[2], "choices"), 0), "delta");
    tc = cJSON_GetArrayItem(cJSON_GetObjectItem(d2, "tool_calls"), 0);
    assert_string_equal(
        cJSON_GetObjectItem(cJSON_GetObjectItem(tc, "function"), "arguments")->valuestring,
        "\"Paris\"}");
    cJSON *fin = cJSON_GetArrayItem(cJSON_GetObjectItem(ev[3], "choices"), 0);
    assert_string_equal(cJSON_GetObjectItem(fin, "finish_reason")->valuestring, "tool_calls");
    free_events(ev, n);
    hc_resp_cleanup(&r);

    assert_int_equal(post_chat("#tools", false, NULL, &r), 200);
    cJSON *j = cJSON_ParseWithLength(r.body.data, r.body.len);
    assert_non_null(j);
    cJSON *c0 = cJSON_GetArrayItem(cJSON_GetObjectItem(j, "choices"), 0);
    cJSON *msg = cJSON_GetObjectItem(c0, "message");
    assert_true(cJSON_IsNull(cJSON_GetObjectItem(msg, "content")));
    cJSON *calls = cJSON_GetObjectItem(msg, "tool_calls");
    assert_int_equal(cJSON_GetArraySize(calls), 1);
    tc = cJSON_GetArrayItem(calls, 0);
    assert_string_equal(cJSON_GetObjectItem(tc, "id")->valuestring, "call_1");
    assert_string_equal(cJSON_GetObjectItem(tc, "type")->valuestring, "function");
    cJSON *fn = cJSON_GetObjectItem(tc, "function");
    assert_string_equal(cJSON_GetObjectItem(fn, "name")->valuestring, "get_weather");
    assert_string_equal(cJSON_GetObjectItem(fn, "arguments")->valuestring, "{\"city\":\"Paris\"}");
    assert_string_equal(cJSON_GetObjectItem(c0, "finish_reason")->valuestring, "tool_calls");
    cJSON_Delete(j);
    hc_resp_cleanup(&r);
}

static void test_errors_before_start(void **state)
{
    (void)state;
    struct hc_resp r;
    assert_int_equal(post_chat("#fail-before", true, NULL, &r), 502);
    assert_error(&r, 502, "upstream returned HTTP 500");
    char v[64];
    assert_non_null(hc_header(&r, "content-type", v, sizeof(v)));
    assert_string_equal(v, "application/json");
    hc_resp_cleanup(&r);
    assert_int_equal(post_chat("#fail-before", false, NULL, &r), 502);
    assert_error(&r, 502, "upstream returned HTTP 500");
    hc_resp_cleanup(&r);
    assert_int_equal(post_chat("#notfound", true, NULL, &r), 404);
    assert_error(&r, 404, "is not available");
    hc_resp_cleanup(&r);
}

static void test_error_after_start(void **state)
{
    (void)state;
    struct hc_resp r;
    assert_int_equal(post_chat("#fail-after", true, NULL, &r), 200);
    cJSON *ev[16];
    bool done;
    size_t n = sse_events(&r, ev, 16, &done);
    assert_false(done); /* never a clean-looking end */
    assert_int_equal(n, 3);
    cJSON *e = cJSON_GetObjectItem(ev[2], "error");
    assert_true(cJSON_IsObject(e));
    assert_non_null(
        strstr(cJSON_GetObjectItem(e, "message")->valuestring, "upstream cut the stream"));
    assert_true(r.eof);
    free_events(ev, n);
    hc_resp_cleanup(&r);
}

static void test_limits(void **state)
{
    (void)state;
    struct hc_resp r;
    /* body_bytes_max */
    char *big = wye_malloc(70 * 1024);
    memset(big, 'a', 70 * 1024 - 1);
    big[70 * 1024 - 1] = '\0';
    assert_int_equal(post_chat(big, false, NULL, &r), 413);
    assert_error(&r, 413, "body_bytes_max");
    hc_resp_cleanup(&r);
    wye_free(big);
    /* json_depth_max */
    struct wye_buf b;
    wye_buf_init(&b, 1 << 16);
    (void)wye_buf_append_str(&b, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"x\":");
    for (int i = 0; i < 40; i++) {
        (void)wye_buf_append_str(&b, "[");
    }
    for (int i = 0; i < 40; i++) {
        (void)wye_buf_append_str(&b, "]");
    }
    (void)wye_buf_append_str(&b, "}");
    hc_resp_init(&r);
    assert_int_equal(
        hc_request(gwt_group->port, "POST", "/v1/chat/completions", b.data, NULL, &r, T_MS), 400);
    assert_error(&r, 400, "nesting deeper than the limit of 16");
    hc_resp_cleanup(&r);
    wye_buf_reset(&b);
    /* n_msgs_max */
    (void)wye_buf_append_str(&b, "{\"messages\":[");
    for (int i = 0; i < 9; i++) {
        (void)wye_buf_printf(&b, "%s{\"role\":\"user\",\"content\":\"m\"}", i ? "," : "");
    }
    (void)wye_buf_append_str(&b, "]}");
    hc_resp_init(&r);
    assert_int_equal(
        hc_request(gwt_group->port, "POST", "/v1/chat/completions", b.data, NULL, &r, T_MS), 400);
    assert_error(&r, 400, "the limit is 8");
    hc_resp_cleanup(&r);
    wye_buf_cleanup(&b);
    /* max_tokens_max */
    assert_int_equal(post_chat("hi", false, ",\"max_tokens\":5000", &r), 400);
    assert_error(&r, 400, "'max_tokens' must be an integer from 1 to 1000");
    hc_resp_cleanup(&r);
}

/* Two requests on one keep-alive connection, a query string, and a body near the cap that
 * arrives in several pieces. */
static void test_keepalive_and_big_body(void **state)
{
    (void)state;
    int fd = hc_connect(gwt_group->port, 0);
    assert_true(fd >= 0);
    const char *body = "{\"messages\":[{\"role\":\"user\",\"content\":\"first answer\"}]}";
    char req[512];
    int n = snprintf(req, sizeof(req),
                     "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
                     "Content-Length: %zu\r\n\r\n%s",
                     strlen(body), body);
    assert_true(hc_send_all(fd, req, (size_t)n, T_MS));
    struct hc_resp r;
    hc_resp_init(&r);
    assert_int_equal(hc_read_response(fd, &r, T_MS), 200);
    assert_non_null(strstr(r.body.data, "first answer"));
    assert_false(r.eof);
    hc_resp_cleanup(&r);
    const char *get = "GET /healthz?probe=1 HTTP/1.1\r\nHost: x\r\n\r\n";
    assert_true(hc_send_all(fd, get, strlen(get), T_MS));
    hc_resp_init(&r);
    assert_int_equal(hc_read_response(fd, &r, T_MS), 200);
    assert_string_equal(r.body.data, "{\"status\":\"ok\"}");
    hc_resp_cleanup(&r);
    close(fd);

    size_t big = gwt_group->cfg.limits.body_bytes_max - 200;
    char *content = wye_malloc(big + 1);
    for (size_t i = 0; i < big; i++) {
        content[i] = i % 50 == 49 ? ' ' : 'w';
    }
    content[big] = '\0';
    assert_int_equal(post_chat(content, false, NULL, &r), 200);
    cJSON *j = cJSON_ParseWithLength(r.body.data, r.body.len);
    cJSON *msg =
        cJSON_GetObjectItem(cJSON_GetArrayItem(cJSON_GetObjectItem(j, "choices"), 0), "message");
    assert_int_equal(strlen(cJSON_GetObjectItem(msg, "content")->valuestring), big);
    cJSON_Delete(j);
    hc_resp_cleanup(&r);
    wye_free(content);
}

/* One streamed answer on the kept connection fd: chunked, complete, the connection not closed,
 * the deltas spell want, [DONE] last. Returns the request id header (static buffer). */
static const char *sse_on(int fd, const char *content, const char *want)
{
    static char reqid[64];
    char *body = chat_body(content, true, NULL);
    struct hc_resp r;
    hc_resp_init(&r);
    assert_int_equal(hc_request_fd(fd, "POST", "/v1/chat/completions", body, NULL, &r, T_MS), 200);
    wye_free(body);
    char v[64];
    assert_true(r.chunked);
    assert_true(r.complete);
    assert_false(r.eof);
    assert_null(hc_header(&r, "connection", v, sizeof(v)));
    assert_null(hc_header(&r, "content-length", v, sizeof(v)));
    assert_non_null(hc_header(&r, "content-type", v, sizeof(v)));
    assert_string_equal(v, "text/event-stream");
    assert_non_null(hc_header(&r, "x-request-id", reqid, sizeof(reqid)));
    cJSON *ev[64];
    bool done;
    size_t n = sse_events(&r, ev, 64, &done);
    assert_true(done);
    char text[512] = "";
    for (size_t i = 0; i < n; i++) {
        cJSON *c0 = cJSON_GetArrayItem(cJSON_GetObjectItem(ev[i], "choices"), 0);
        cJSON *c = cJSON_GetObjectItem(cJSON_GetObjectItem(c0, "delta"), "content");
        if (cJSON_IsString(c)) {
            strcat(text, c->valuestring);
        }
    }
    assert_string_equal(text, want);
    free_events(ev, n);
    hc_resp_cleanup(&r);
    return reqid;
}

static void wait_connections(int64_t want)
{
    struct gw_stats st;
    int64_t deadline = wye_now_ns() + T_MS * WYE_NS_PER_MS;
    for (;;) {
        gw_server_stats(gwt_group->srv, &st);
        if ((st.open_connections == want && st.open_streams == 0) || wye_now_ns() >= deadline) {
            break;
        }
        wye_sleep_ms(2);
    }
    assert_int_equal(st.open_connections, want);
    assert_int_equal(st.open_streams, 0);
}

/* SSE over HTTP/1.1 is chunked and keeps the connection: two streamed answers and then a JSON
 * one on one connection; a client that leaves between two requests is cleaned up; HTTP/1.0
 * and "Connection: close" get a close-delimited stream. */
static void test_sse_keepalive(void **state)
{
    (void)state;
    tb_reset();
    wait_connections(0);
    int fd = hc_connect(gwt_group->port, 0);
    assert_true(fd >= 0);
    char first[64];
    snprintf(first, sizeof(first), "%s", sse_on(fd, "one two three", "one two three"));
    const char *second = sse_on(fd, "four five", "four five");
    assert_string_not_equal(first, second);
    /* a non-streamed request after the streamed ones, still on the same connection */
    char *body = chat_body("six seven", false, NULL);
    struct hc_resp r;
    hc_resp_init(&r);
    assert_int_equal(hc_request_fd(fd, "POST", "/v1/chat/completions", body, NULL, &r, T_MS), 200);
    wye_free(body);
    assert_false(r.chunked);
    assert_true(r.complete);
    assert_non_null(strstr(r.body.data, "\"six seven\""));
    hc_resp_cleanup(&r);
    sse_on(fd, "eight", "eight");
    wait_connections(1);
    assert_int_equal(atomic_load(&tb_stats.submits), 4);

    /* a client that goes away between two requests: its connection is closed and freed */
    int fd2 = hc_connect(gwt_group->port, 0);
    assert_true(fd2 >= 0);
    sse_on(fd2, "nine ten", "nine ten");
    wait_connections(2);
    close(fd2);
    wait_connections(1);
    sse_on(fd, "still here", "still here"); /* the other connection is unaffected */
    close(fd);
    wait_connections(0);

    /* pipelined GETs are answered in order on the kept connection; a request pipelined
     * behind a POST body makes the server hang up at once (libwebsockets 4.1.6 would spin
     * on it without ever answering), submitting nothing twice and leaking nothing */
    fd = hc_connect(gwt_group->port, 0);
    assert_true(fd >= 0);
    const char *gets = "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
                       "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
    assert_true(hc_send_all(fd, gets, strlen(gets), T_MS));
    for (int i = 0; i < 2; i++) {
        hc_resp_init(&r);
        assert_int_equal(hc_read_response(fd, &r, T_MS), 200);
        assert_string_equal(r.body.data, "{\"status\":\"ok\"}");
        hc_resp_cleanup(&r);
    }
    close(fd);
    int submits = atomic_load(&tb_stats.submits);
    fd = hc_connect(gwt_group->port, 0);
    assert_true(fd >= 0);
    struct wye_buf two;
    wye_buf_init(&two, 1 << 16);
    for (int i = 0; i < 2; i++) {
        body = chat_body(i ? "second piped" : "first piped", true, NULL);
        (void)wye_buf_printf(&two,
                             "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
                             "Content-Length: %zu\r\n\r\n%s",
                             strlen(body), body);
        wye_free(body);
    }
    assert_true(hc_send_all(fd, two.data, two.len, T_MS));
    wye_buf_cleanup(&two);
    hc_resp_init(&r);
    assert_int_equal(hc_read_response(fd, &r, T_MS), -1);
    assert_true(r.eof); /* closed, not left hanging */
    hc_resp_cleanup(&r);
    close(fd);
    assert_true(atomic_load(&tb_stats.submits) <= submits + 1);
    wait_connections(0);
    fd = hc_connect(gwt_group->port, 0);
    assert_true(fd >= 0);
    sse_on(fd, "after the pipeline", "after the pipeline"); /* the server is fine */
    close(fd);
    wait_connections(0);

    /* HTTP/1.0 and Connection: close: no chunks, the end of the stream is the close */
    static const char *const variants[] = {"HTTP/1.0", "HTTP/1.1\r\nConnection: close"};
    for (int i = 0; i < 2; i++) {
        fd = hc_connect(gwt_group->port, 0);
        assert_true(fd >= 0);
        body = chat_body("a b", true, NULL);
        char req[1024];
        int n = snprintf(req, sizeof(req),
                         "POST /v1/chat/completions %s\r\nHost: x\r\n"
                         "Content-Length: %zu\r\n\r\n%s",
                         variants[i], strlen(body), body);
        wye_free(body);
        assert_true(hc_send_all(fd, req, (size_t)n, T_MS));
        hc_resp_init(&r);
        assert_int_equal(hc_read_response(fd, &r, T_MS), 200);
        char v[64];
        assert_false(r.chunked);
        assert_true(r.eof);
        assert_non_null(hc_header(&r, "connection", v, sizeof(v)));
        assert_string_equal(v, "close");
        assert_non_null(strstr(r.body.data, "data: [DONE]\n\n"));
        hc_resp_cleanup(&r);
        close(fd);
    }
}

/* A chunked answer much larger than the socket buffers, to a client that reads late: lws
 * buffers what the socket refuses, and the transaction completes only after all of it went
 * out, so every delta arrives, the last chunk ends it, and the connection takes the next
 * request. */
static void test_sse_keepalive_backpressure(void **state)
{
    (void)state;
    tb_reset();
    size_t n_words = 1500;
    struct wye_buf words;
    wye_buf_init(&words, 1 << 20);
    for (size_t i = 0; i < n_words; i++) {
        (void)wye_buf_printf(&words, "%sw%zu", i ? " " : "", i);
    }
    int fd = hc_connect(gwt_group->port, 4096);
    assert_true(fd >= 0);
    char *body = chat_body(words.data, true, NULL);
    char *req = wye_malloc(strlen(body) + 256);
    int n = snprintf(req, strlen(body) + 256,
                     "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
                     "Content-Length: %zu\r\n\r\n%s",
                     strlen(body), body);
    wye_free(body);
    assert_true(hc_send_all(fd, req, (size_t)n, T_MS));
    wye_free(req);
    wye_sleep_ms(100); /* below slow_client_timeout_ms: pushed back, not dropped */
    struct hc_resp r;
    hc_resp_init(&r);
    assert_int_equal(hc_read_response(fd, &r, T_MS), 200);
    assert_true(r.chunked);
    assert_true(r.complete);
    assert_true(r.body.len > 150 * n_words);
    char **raw = wye_calloc(n_words + 8, sizeof(char *));
    size_t k = hc_sse_split(r.body.data, r.body.len, raw, n_words + 8);
    assert_int_equal(k, n_words + 2); /* deltas, finish, [DONE] */
    assert_string_equal(raw[k - 1], "[DONE]");
    struct wye_buf text;
    wye_buf_init(&text, 1 << 20);
    for (size_t i = 0; i < n_words; i++) {
        cJSON *j = cJSON_Parse(raw[i]);
        cJSON *c0 = cJSON_GetArrayItem(cJSON_GetObjectItem(j, "choices"), 0);
        (void)wye_buf_append_str(
            &text, cJSON_GetObjectItem(cJSON_GetObjectItem(c0, "delta"), "content")->valuestring);
        cJSON_Delete(j);
    }
    for (size_t i = 0; i < k; i++) {
        wye_free(raw[i]);
    }
    wye_free(raw);
    assert_int_equal(text.len, words.len);
    assert_memory_equal(text.data, words.data, words.len);
    wye_buf_cleanup(&text);
    wye_buf_cleanup(&words);
    hc_resp_cleanup(&r);
    sse_on(fd, "next one", "next one");
    close(fd);
}

static void test_malformed(void **state)
{
    (void)state;
    struct hc_resp r;
    hc_resp_init(&r);
    assert_int_equal(hc_request(gwt_group->port, "POST", "/v1/chat/completions", "{\"messages\": [",
                                NULL, &r, T_MS),
                     400);
    assert_error(&r, 400, "malformed JSON");
    assert_non_null(strstr(r.body.data, "near byte"));
    hc_resp_cleanup(&r);
    /* a whole object and then more: cJSON alone would stop after the object */
    hc_resp_init(&r);
    assert_int_equal(hc_request(gwt_group->port, "POST", "/v1/chat/completions",
                                "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]} x", NULL,
                                &r, T_MS),
                     400);
    assert_error(&r, 400, "malformed JSON in the request body near byte 46");
    hc_resp_cleanup(&r);
    hc_resp_init(&r);
    assert_int_equal(hc_request(gwt_group->port, "POST", "/v1/chat/completions",
                                "{\"messages\":\"hi\"}", NULL, &r, T_MS),
                     400);
    assert_error(&r, 400, "'messages'");
    hc_resp_cleanup(&r);
    assert_int_equal(post_chat("hi", false, ",\"temperature\":\"hot\"", &r), 400);
    assert_error(&r, 400, "'temperature'");
    hc_resp_cleanup(&r);
    hc_resp_init(&r);
    assert_int_equal(
        hc_request(gwt_group->port, "POST", "/v1/chat/completions", "[1,2]", NULL, &r, T_MS), 400);
    assert_error(&r, 400, "JSON object");
    hc_resp_cleanup(&r);
    hc_resp_init(&r);
    assert_int_equal(hc_request(gwt_group->port, "GET", "/v1/nope", NULL, NULL, &r, T_MS), 404);
    assert_error(&r, 404, "unknown URL /v1/nope");
    hc_resp_cleanup(&r);
    hc_resp_init(&r);
    assert_int_equal(
        hc_request(gwt_group->port, "GET", "/v1/chat/completions", NULL, NULL, &r, T_MS), 405);
    assert_error(&r, 405, "needs POST");
    hc_resp_cleanup(&r);
    hc_resp_init(&r);
    assert_int_equal(hc_request(gwt_group->port, "POST", "/v1/models", "{}", NULL, &r, T_MS), 405);
    assert_error(&r, 405, "needs GET");
    hc_resp_cleanup(&r);
    hc_resp_init(&r);
    assert_int_equal(hc_request(gwt_group->port, "PUT", "/healthz", "{}", NULL, &r, T_MS), 405);
    assert_error(&r, 405, "needs GET");
    hc_resp_cleanup(&r);
    hc_resp_init(&r);
    assert_int_equal(hc_request(gwt_group->port, "HEAD", "/healthz", NULL, NULL, &r, T_MS), 200);
    assert_int_equal(r.body.len, 0);
    hc_resp_cleanup(&r);
    hc_resp_init(&r);
    assert_int_equal(hc_request(gwt_group->port, "POST", "/v1/chat/completions", NULL,
                                "Transfer-Encoding: chunked\r\n", &r, T_MS),
                     411);
    assert_error(&r, 411, "send Content-Length");
    hc_resp_cleanup(&r);
    hc_resp_init(&r);
    assert_int_equal(hc_request(gwt_group->port, "GET", "/v1/ws", NULL, NULL, &r, T_MS), 400);
    assert_error(&r, 400, "WebSocket upgrade");
    hc_resp_cleanup(&r);
    hc_resp_init(&r);
    assert_int_equal(
        hc_request(gwt_group->port, "POST", "/v1/chat/completions", "", NULL, &r, T_MS), 400);
    assert_error(&r, 400, "empty");
    hc_resp_cleanup(&r);
    hc_resp_init(&r);
    assert_int_equal(hc_request(gwt_group->port, "POST", "/v1/chat/completions",
                                "{\"model\":\"no-such-model\",\"messages\":[{\"role\":\"user\","
                                "\"content\":\"hi\"}]}",
                                NULL, &r, T_MS),
                     404);
    assert_error(&r, 404, "no-such-model");
    hc_resp_cleanup(&r);
    /* Raw garbage instead of HTTP: the connection is dropped, the server lives on. */
    int fd = hc_connect(gwt_group->port, 0);
    assert_true(fd >= 0);
    assert_true(hc_send_all(fd, "\x01\x02garbage\r\n\r\n", 13, T_MS));
    hc_resp_init(&r);
    hc_read_response(fd, &r, T_MS);
    hc_resp_cleanup(&r);
    close(fd);
    /* Still serving. */
    assert_int_equal(post_chat("still here", false, NULL, &r), 200);
    assert_non_null(strstr(r.body.data, "still here"));
    hc_resp_cleanup(&r);
}

/* Reads the value of a metric line that starts with name (exact, including labels). */
static double metric(const char *text, const char *name)
{
    size_t n = strlen(name);
    for (const char *p = text; p && *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL) {
        if (strncmp(p, name, n) == 0 && p[n] == ' ') {
            return atof(p + n + 1);
        }
    }
    return -1;
}

static void test_health_models_metrics(void **state)
{
    (void)state;
    struct hc_resp r;
    hc_resp_init(&r);
    assert_int_equal(hc_request(gwt_group->port, "GET", "/healthz", NULL, NULL, &r, T_MS), 200);
    assert_string_equal(r.body.data, "{\"status\":\"ok\"}");
    hc_resp_cleanup(&r);
    hc_resp_init(&r);
    assert_int_equal(hc_request(gwt_group->port, "GET", "/v1/models", NULL, NULL, &r, T_MS), 200);
    cJSON *j = cJSON_ParseWithLength(r.body.data, r.body.len);
    assert_string_equal(cJSON_GetObjectItem(j, "object")->valuestring, "list");
    assert_string_equal(
        cJSON_GetObjectItem(cJSON_GetArrayItem(cJSON_GetObjectItem(j, "data"), 0), "id")
            ->valuestring,
        "test-model");
    cJSON_Delete(j);
    hc_resp_cleanup(&r);

    hc_resp_init(&r);
    assert_int_equal(hc_request(gwt_group->port, "GET", "/metrics", NULL, NULL, &r, T_MS), 200);
    const char *ok200 = "wye_http_requests_total{path=\"/v1/chat/completions\",status=\"200\"}";
    double before = metric(r.body.data, ok200);
    double tok_before = metric(r.body.data, "wye_tokens_total{kind=\"completion\"}");
    double lat_before = metric(r.body.data, "wye_request_duration_seconds_count");
    assert_true(tok_before >= 0);
    assert_true(metric(r.body.data, "wye_upstream_errors_total") >= 0);
    assert_true(metric(r.body.data, "wye_open_connections") >= 1);
    assert_true(metric(r.body.data, "wye_open_streams") >= 0);
    assert_true(metric(r.body.data, "wye_time_to_first_token_seconds_bucket{le=\"+Inf\"}") >= 0);
    assert_non_null(strstr(r.body.data, "# TYPE wye_request_duration_seconds histogram"));
    hc_resp_cleanup(&r);

    assert_int_equal(post_chat("a b c", true, NULL, &r), 200);
    hc_resp_cleanup(&r);
    assert_int_equal(post_chat("#notfound", false, NULL, &r), 404);
    hc_resp_cleanup(&r);

    hc_resp_init(&r);
    assert_int_equal(hc_request(gwt_group->port, "GET", "/metrics", NULL, NULL, &r, T_MS), 200);
    assert_true(metric(r.body.data, ok200) == (before < 0 ? 0 : before) + 1);
    assert_true(metric(r.body.data, "wye_tokens_total{kind=\"completion\"}") == tok_before + 3);
    assert_true(metric(r.body.data, "wye_request_duration_seconds_count") == lat_before + 1);
    assert_true(metric(r.body.data,
                       "wye_http_requests_total{path=\"/v1/chat/completions\",status=\"404\"}") >=
                1);
    hc_resp_cleanup(&r);
}

/* Sends a streamed chat request on a raw connection and waits until the first delta arrives. */
static int open_stream(const char *content, int rcvbuf, bool wait_first)
{
    int fd = hc_connect(gwt_group->port, rcvbuf);
    assert_true(fd >= 0);
    char *body = chat_body(content, true, NULL);
    char req[1024];
    int n = snprintf(req, sizeof(req),
                     "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
                     "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n%s",
                     strlen(body), body);
    wye_free(body);
    assert_true(hc_send_all(fd, req, (size_t)n, T_MS));
    if (wait_first) {
        char buf[8192];
        size_t got = 0;
        int64_t deadline = wye_now_ns() + T_MS * WYE_NS_PER_MS;
        while (!memmem(buf, got, "data: ", 6) && wye_now_ns() < deadline) {
            struct pollfd pfd = {.fd = fd, .events = POLLIN};
            if (poll(&pfd, 1, 100) == 1) {
                ssize_t k = recv(fd, buf + got, sizeof(buf) - got, 0);
                assert_true(k > 0);
                got += (size_t)k;
            }
        }
        assert_non_null(memmem(buf, got, "data: ", 6));
    }
    return fd;
}

static bool wait_until(_Atomic int64_t *v, int ms)
{
    int64_t deadline = wye_now_ns() + (int64_t)ms * WYE_NS_PER_MS;
    while (atomic_load(v) == 0 && wye_now_ns() < deadline) {
        wye_sleep_ms(2);
    }
    return atomic_load(v) != 0;
}

static void test_disconnect_cancels(void **state)
{
    (void)state;
    tb_reset();
    int fd = open_stream("#hold", 0, true);
    int64_t t0 = wye_now_ns();
    close(fd);
    assert_true(wait_until(&tb_stats.cancel_seen_ns, 3000));
    /* The wakeup, not a poll timeout, told the producer: well under its 5 s wait. */
    int64_t ms = (atomic_load(&tb_stats.cancel_seen_ns) - t0) / WYE_NS_PER_MS;
    assert_true(ms < 100);
    assert_true(atomic_load(&tb_stats.wakes) >= 1);
}

static void test_slow_reader(void **state)
{
    (void)state;
    tb_reset();
    int fd = open_stream("#flood", 4096, false); /* and never read */
    int64_t deadline = wye_now_ns() + 5 * WYE_NS_PER_S;
    while (atomic_load(&tb_stats.again) == 0 && wye_now_ns() < deadline) {
        wye_sleep_ms(5);
    }
    assert_true(atomic_load(&tb_stats.again) > 0);           /* the producer was paused */
    assert_true(wait_until(&tb_stats.cancel_seen_ns, 5000)); /* and cancelled after the deadline */
    struct gw_stats st;
    gw_server_stats(gwt_group->srv, &st);
    assert_true(st.slow_clients_dropped >= 1);
    /* Memory stayed bounded: the cap plus one formatted chunk (1000 bytes of text + framing). */
    assert_true(st.queued_bytes_peak <= gwt_group->cfg.limits.stream_buffer_bytes + 1400);
    /* The client sees its connection closed. */
    char buf[65536];
    bool eof = false;
    int64_t d2 = wye_now_ns() + 5 * WYE_NS_PER_S;
    while (!eof && wye_now_ns() < d2) {
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        if (poll(&pfd, 1, 100) == 1) {
            ssize_t k = recv(fd, buf, sizeof(buf), 0);
            eof = k <= 0;
        }
    }
    assert_true(eof);
    close(fd);
}

static void test_connections_limit(void **state)
{
    (void)state;
    int fds[8];
    assert_true(gwt_open_connections(gwt_group, fds, 8));
    struct hc_resp r;
    assert_int_equal(post_chat("hi", false, NULL, &r), 503);
    assert_error(&r, 503, "connections_max");
    hc_resp_cleanup(&r);
    for (int i = 0; i < 8; i++) {
        close(fds[i]);
    }
    struct gw_stats st;
    int64_t deadline = wye_now_ns() + 3 * WYE_NS_PER_S;
    do {
        wye_sleep_ms(5);
        gw_server_stats(gwt_group->srv, &st);
    } while (st.open_connections > 0 && wye_now_ns() < deadline);
    assert_int_equal(post_chat("back again", false, NULL, &r), 200);
    hc_resp_cleanup(&r);
}

static void test_graceful_shutdown(void **state)
{
    (void)state;
    struct gwt t;
    gwt_default_cfg(&t.cfg);
    assert_true(gwt_start(&t));
    struct gwt *saved = gwt_group;
    gwt_group = &t;
    int fd = open_stream("#slow s1 s2 s3 s4 s5 s6", 0, true);
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, gwt_shutdown_thread, t.srv), 0);
    struct hc_resp r;
    hc_resp_init(&r);
    /* Read the rest of the answer while the server drains. */
    char buf[16384];
    int64_t deadline = wye_now_ns() + T_MS * WYE_NS_PER_MS;
    for (;;) {
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        if (wye_now_ns() > deadline || poll(&pfd, 1, 100) < 0) {
            break;
        }
        if (pfd.revents) {
            ssize_t k = recv(fd, buf, sizeof(buf), 0);
            if (k <= 0) {
                break;
            }
            (void)wye_buf_append(&r.body, buf, (size_t)k);
        }
    }
    close(fd);
    pthread_join(th, NULL);
    assert_non_null(strstr(r.body.data, "s6"));
    assert_non_null(strstr(r.body.data, "data: [DONE]\n\n"));
    hc_resp_cleanup(&r);
    gwt_group = saved;
    gwt_stop(&t);
}

int main(void)
{
    wye_alloc_install_cjson_hooks();
    if (wye_crypto_init() != WYE_OK) {
        return 1;
    }
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_json_answer),
        cmocka_unit_test(test_sse_answer),
        cmocka_unit_test(test_tool_calls),
        cmocka_unit_test(test_errors_before_start),
        cmocka_unit_test(test_error_after_start),
        cmocka_unit_test(test_limits),
        cmocka_unit_test(test_keepalive_and_big_body),
        cmocka_unit_test(test_sse_keepalive),
        cmocka_unit_test(test_sse_keepalive_backpressure),
        cmocka_unit_test(test_malformed),
        cmocka_unit_test(test_health_models_metrics),
        cmocka_unit_test(test_disconnect_cancels),
        cmocka_unit_test(test_slow_reader),
        cmocka_unit_test(test_connections_limit),
        cmocka_unit_test(test_graceful_shutdown),
    };
    return cmocka_run_group_tests(tests, gwt_group_setup, gwt_group_teardown);
}
