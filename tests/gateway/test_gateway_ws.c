/* The WebSocket protocol on /v1/ws against a real server with a scripted backend: one
 * response, several multiplexed on one socket landing on the right ids, response.cancel,
 * disconnects and slow readers cancelling the producer, every limit (streams per connection,
 * message size, connections) and malformed input (binary frames, garbage text, unknown events)
 * with a clear error, after which the socket keeps serving. */
/* cmocka.h needs these first. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cJSON.h>
#include <cmocka.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "common/alloc.h"
#include "common/clock.h"
#include "common/crypto.h"
#include "tests/gateway/gw_json.h"
#include "tests/gateway/gw_test_backend.h"
#include "tests/gateway/http_client.h"
#include "tests/gateway/ws_client.h"

#define T_MS 5000

static void ws_open(struct wsc *c)
{
    assert_int_equal(wsc_connect(c, gwt_group->port, "/v1/ws", NULL, 0, T_MS), 101);
}

static void create(struct wsc *c, const char *id, const char *content)
{
    char buf[1024];
    snprintf(buf, sizeof(buf),
             "{\"type\":\"response.create\",\"id\":\"%s\",\"response\":{\"model\":\"auto\","
             "\"messages\":[{\"role\":\"user\",\"content\":\"%s\"}],\"max_tokens\":50}}",
             id, content);
    assert_true(wsc_send_text(c, buf));
}

/* Receives one JSON event (fails the test on timeout or a non-text message). */
/* Expects an error event with this code (and id when id != NULL). */
static void expect_error(struct wsc *c, const char *id, const char *code, const char *needle)
{
    cJSON *j = gwj_recv(c, T_MS);
    /* Deltas of responses still in flight may come first. */
    for (int i = 0; i < 100 && strcmp(gwj_istr(j, "type"), "response.output_text.delta") == 0;
         i++) {
        cJSON_Delete(j);
        j = gwj_recv(c, T_MS);
    }
    assert_string_equal(gwj_istr(j, "type"), "error");
    if (id) {
        assert_string_equal(gwj_istr(j, "id"), id);
    }
    cJSON *e = cJSON_GetObjectItem(j, "error");
    assert_string_equal(gwj_istr(e, "code"), code);
    if (!strstr(gwj_istr(e, "message"), needle)) {
        fail_msg("error message '%s' does not contain '%s'", gwj_istr(e, "message"), needle);
    }
    cJSON_Delete(j);
}

/* Reads events until response.done for id; collects its text. Returns the done event. */
static cJSON *collect(struct wsc *c, const char *id, char *text, size_t cap)
{
    text[0] = '\0';
    for (int i = 0; i < 1000; i++) {
        cJSON *j = gwj_recv(c, T_MS);
        assert_string_equal(gwj_istr(j, "id"), id);
        if (strcmp(gwj_istr(j, "type"), "response.output_text.delta") == 0) {
            strncat(text, gwj_istr(j, "delta"), cap - strlen(text) - 1);
        } else if (strcmp(gwj_istr(j, "type"), "response.done") == 0) {
            return j;
        }
        cJSON_Delete(j);
    }
    fail_msg("no response.done");
    return NULL;
}

static void test_one_response(void **state)
{
    (void)state;
    struct wsc c;
    ws_open(&c);
    create(&c, "r1", "hello big world");
    cJSON *j = gwj_recv(&c, T_MS);
    assert_string_equal(gwj_istr(j, "type"), "response.created");
    assert_string_equal(gwj_istr(j, "id"), "r1");
    assert_int_equal(strncmp(gwj_istr(j, "request_id"), "req_", 4), 0);
    cJSON_Delete(j);
    char text[256];
    cJSON *done = collect(&c, "r1", text, sizeof(text));
    assert_string_equal(text, "hello big world");
    assert_string_equal(gwj_istr(done, "status"), "completed");
    assert_string_equal(gwj_istr(done, "route"), "remote");
    assert_string_equal(gwj_istr(done, "model"), "test-model");
    assert_true(cJSON_GetObjectItem(done, "score")->valuedouble == 0.25);
    assert_true(cJSON_IsNumber(cJSON_GetObjectItem(done, "latency_ms")));
    assert_true(cJSON_IsNumber(cJSON_GetObjectItem(done, "ttft_ms")));
    cJSON *u = cJSON_GetObjectItem(done, "usage");
    assert_int_equal(cJSON_GetObjectItem(u, "prompt_tokens")->valueint, 7);
    assert_int_equal(cJSON_GetObjectItem(u, "completion_tokens")->valueint, 3);
    cJSON_Delete(done);

    /* The request fields may also sit at the top level; the subprotocol is optional. */
    wsc_close(&c);
    assert_int_equal(wsc_connect(&c, gwt_group->port, "/v1/ws", "wye.v1", 0, T_MS), 101);
    assert_true(wsc_send_text(&c, "{\"type\":\"response.create\",\"id\":\"top\",\"messages\":"
                                  "[{\"role\":\"user\",\"content\":\"top level\"}]}"));
    cJSON_Delete(gwj_recv(&c, T_MS));
    done = collect(&c, "top", text, sizeof(text));
    assert_string_equal(text, "top level");
    cJSON_Delete(done);
    wsc_close(&c);
}

static void test_multiplexed(void **state)
{
    (void)state;
    struct wsc c;
    ws_open(&c);
    const char *ids[3] = {"a", "b", "c"};
    create(&c, "a", "#slow a1 a2 a3 a4 a5");
    create(&c, "b", "#slow b1 b2 b3 b4 b5");
    create(&c, "c", "#slow c1 c2 c3 c4 c5");
    char text[3][256] = {"", "", ""};
    int done = 0, switches = 0, last = -1;
    for (int i = 0; i < 200 && done < 3; i++) {
        cJSON *j = gwj_recv(&c, T_MS);
        int k = -1;
        for (int m = 0; m < 3; m++) {
            if (strcmp(gwj_istr(j, "id"), ids[m]) == 0) {
                k = m;
            }
        }
        assert_true(k >= 0);
        if (strcmp(gwj_istr(j, "type"), "response.output_text.delta") == 0) {
            strcat(text[k], gwj_istr(j, "delta"));
            /* Every delta carries its own stream's letter: nothing crossed over. */
            assert_int_equal(gwj_istr(j, "delta")[strspn(gwj_istr(j, "delta"), " ")], ids[k][0]);
            if (last >= 0 && last != k) {
                switches++;
            }
            last = k;
        } else if (strcmp(gwj_istr(j, "type"), "response.done") == 0) {
            assert_string_equal(gwj_istr(j, "status"), "completed");
            done++;
        }
        cJSON_Delete(j);
    }
    assert_int_equal(done, 3);
    assert_string_equal(text[0], "a1 a2 a3 a4 a5");
    assert_string_equal(text[1], "b1 b2 b3 b4 b5");
    assert_string_equal(text[2], "c1 c2 c3 c4 c5");
    assert_true(switches >= 3); /* the deltas really were interleaved */
    wsc_close(&c);
}

static void test_cancel(void **state)
{
    (void)state;
    tb_reset();
    struct wsc c;
    ws_open(&c);
    create(&c, "h", "#hold");
    cJSON *j = gwj_recv(&c, T_MS);
    assert_string_equal(gwj_istr(j, "type"), "response.created");
    cJSON_Delete(j);
    j = gwj_recv(&c, T_MS);
    assert_string_equal(gwj_istr(j, "type"), "response.output_text.delta");
    cJSON_Delete(j);
    assert_true(wsc_send_text(&c, "{\"type\":\"response.cancel\",\"id\":\"h\"}"));
    j = gwj_recv(&c, T_MS);
    assert_string_equal(gwj_istr(j, "type"), "response.done");
    assert_string_equal(gwj_istr(j, "id"), "h");
    assert_string_equal(gwj_istr(j, "status"), "cancelled");
    cJSON_Delete(j);
    assert_true(atomic_load(&tb_stats.cancel_seen) >= 1);
    assert_true(atomic_load(&tb_stats.wakes) >= 1);
    /* Cancelling what is not in flight is an error naming the id. */
    assert_true(wsc_send_text(&c, "{\"type\":\"response.cancel\",\"id\":\"h\"}"));
    expect_error(&c, "h", "unknown_id", "no response with id 'h'");
    wsc_close(&c);
}

static bool wait_nonzero(_Atomic int64_t *v, int ms)
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
    struct wsc c;
    ws_open(&c);
    create(&c, "h", "#hold");
    cJSON_Delete(gwj_recv(&c, T_MS)); /* created */
    cJSON_Delete(gwj_recv(&c, T_MS)); /* first delta */
    int64_t t0 = wye_now_ns();
    wsc_close(&c);
    assert_true(wait_nonzero(&tb_stats.cancel_seen_ns, 3000));
    int64_t ms = (atomic_load(&tb_stats.cancel_seen_ns) - t0) / WYE_NS_PER_MS;
    assert_true(ms < 100); /* the wakeup told it, not its 5 s wait */
    assert_true(atomic_load(&tb_stats.wakes) >= 1);
}

static void test_slow_reader(void **state)
{
    (void)state;
    tb_reset();
    struct wsc c;
    assert_int_equal(wsc_connect(&c, gwt_group->port, "/v1/ws", NULL, 4096, T_MS), 101);
    create(&c, "f", "#flood"); /* and stop reading */
    int64_t deadline = wye_now_ns() + 5 * WYE_NS_PER_S;
    while (atomic_load(&tb_stats.again) == 0 && wye_now_ns() < deadline) {
        wye_sleep_ms(5);
    }
    assert_true(atomic_load(&tb_stats.again) > 0);
    assert_true(wait_nonzero(&tb_stats.cancel_seen_ns, 5000));
    struct gw_stats st;
    gw_server_stats(gwt_group->srv, &st);
    assert_true(st.slow_clients_dropped >= 1);
    assert_true(st.queued_bytes_peak <= gwt_group->cfg.limits.stream_buffer_bytes + 1200);
    assert_true(wsc_wait_eof(&c, 5000));
    wsc_close(&c);
}

static void test_limits(void **state)
{
    (void)state;
    struct wsc c;
    ws_open(&c);
    /* streams_per_conn_max = 3 */
    for (int i = 0; i < 3; i++) {
        char id[16];
        snprintf(id, sizeof(id), "h%d", i);
        create(&c, id, "#hold");
    }
    int created = 0;
    while (created < 3) {
        cJSON *j = gwj_recv(&c, T_MS);
        created += strcmp(gwj_istr(j, "type"), "response.created") == 0;
        cJSON_Delete(j);
    }
    create(&c, "h1", "dup");
    /* Deltas of the held streams may come first; skip them. */
    for (int found = 0, i = 0; !found && i < 10; i++) {
        cJSON *j = gwj_recv(&c, T_MS);
        if (strcmp(gwj_istr(j, "type"), "error") == 0) {
            assert_string_equal(gwj_istr(j, "id"), "h1");
            assert_string_equal(gwj_istr(cJSON_GetObjectItem(j, "error"), "code"), "duplicate_id");
            found = 1;
        }
        cJSON_Delete(j);
    }
    create(&c, "h4", "one too many");
    expect_error(&c, "h4", "streams_per_conn_max", "streams_per_conn_max = 3");
    for (int i = 0; i < 3; i++) {
        char msg[64];
        snprintf(msg, sizeof(msg), "{\"type\":\"response.cancel\",\"id\":\"h%d\"}", i);
        assert_true(wsc_send_text(&c, msg));
    }
    int cancelled = 0;
    while (cancelled < 3) {
        cJSON *j = gwj_recv(&c, T_MS);
        if (strcmp(gwj_istr(j, "type"), "response.done") == 0) {
            assert_string_equal(gwj_istr(j, "status"), "cancelled");
            cancelled++;
        }
        cJSON_Delete(j);
    }
    /* A fragmented message within the cap is reassembled. */
    const char *msg =
        "{\"type\":\"response.create\",\"id\":\"frag\",\"messages\":[{\"role\":\"user\","
        "\"content\":\"in pieces\"}]}";
    size_t n = strlen(msg);
    assert_true(wsc_send_frame(&c, WSC_TEXT, msg, 10, false));
    assert_true(wsc_send_frame(&c, 0, msg + 10, 20, false));
    assert_true(wsc_send_frame(&c, 0, msg + 30, n - 30, true));
    cJSON_Delete(gwj_recv(&c, T_MS));
    char text[128];
    cJSON *done = collect(&c, "frag", text, sizeof(text));
    assert_string_equal(text, "in pieces");
    cJSON_Delete(done);
    /* Request limits come back as error events naming them. */
    assert_true(wsc_send_text(&c,
                              "{\"type\":\"response.create\",\"id\":\"mt\",\"messages\":[{\"role\":"
                              "\"user\",\"content\":\"x\"}],\"max_tokens\":999999}"));
    expect_error(&c, "mt", "invalid_request", "'max_tokens' must be an integer from 1 to 1000");
    /* ws_message_bytes_max = 16 KiB: an error event, then close 1009. */
    char *big = wye_malloc(20 * 1024 + 1);
    memset(big, ' ', 20 * 1024);
    big[20 * 1024] = '\0';
    assert_true(wsc_send_frame(&c, WSC_TEXT, big, 10 * 1024, false));
    assert_true(wsc_send_frame(&c, 0, big, 10 * 1024, true));
    wye_free(big);
    expect_error(&c, NULL, "ws_message_bytes_max", "limit of 16384 bytes");
    int code = 0;
    assert_int_equal(wsc_recv(&c, NULL, NULL, &code, T_MS), WSC_CLOSE);
    assert_int_equal(code, 1009);
    wsc_close(&c);
}

static void test_malformed(void **state)
{
    (void)state;
    struct wsc c;
    ws_open(&c);
    assert_true(wsc_send_frame(&c, WSC_BINARY, "\x01\x02\x03", 3, true));
    expect_error(&c, NULL, "binary_frame", "binary messages are not supported");
    assert_true(wsc_send_text(&c, "this is not json"));
    expect_error(&c, NULL, "invalid_json", "malformed JSON");
    assert_true(wsc_send_text(&c, "{\"type\":\"response.cancel\",\"id\":\"q\"} {}\n"));
    expect_error(&c, NULL, "invalid_json", "malformed JSON in the event near byte 36");
    assert_true(wsc_send_text(&c, "[1,2,3]"));
    expect_error(&c, NULL, "invalid_event", "'type'");
    assert_true(wsc_send_text(&c, "{\"type\":\"session.update\",\"id\":\"x\"}"));
    expect_error(&c, "x", "unknown_event", "unknown event type 'session.update'");
    assert_true(wsc_send_text(&c, "{\"type\":\"response.create\",\"messages\":[]}"));
    expect_error(&c, NULL, "missing_id", "needs a string 'id'");
    assert_true(wsc_send_text(&c, "{\"type\":\"response.create\",\"id\":\"r5\",\"response\":5}"));
    expect_error(&c, "r5", "invalid_request", "'response' must be an object");
    assert_true(wsc_send_text(&c, "{\"type\":\"response.create\",\"id\":42}"));
    expect_error(&c, NULL, "invalid_id", "'id' must be a string");
    assert_true(wsc_send_text(&c, "{\"type\":\"response.create\",\"id\":\"m\",\"response\":"
                                  "{\"messages\":\"nope\"}}"));
    expect_error(&c, "m", "invalid_request", "'messages'");
    assert_true(wsc_send_text(&c, "{\"type\":\"response.create\",\"id\":\"nf\",\"response\":"
                                  "{\"model\":\"no-such-model\",\"messages\":[{\"role\":\"user\","
                                  "\"content\":\"x\"}]}}"));
    expect_error(&c, "nf", "model_not_found", "no-such-model");
    /* Still serving on the same socket. */
    create(&c, "ok", "after the garbage");
    cJSON_Delete(gwj_recv(&c, T_MS));
    char text[128];
    cJSON *done = collect(&c, "ok", text, sizeof(text));
    assert_string_equal(text, "after the garbage");
    cJSON_Delete(done);
    wsc_close(&c);
    /* Upgrades anywhere but /v1/ws are refused. */
    assert_int_not_equal(wsc_connect(&c, gwt_group->port, "/v1/other", NULL, 0, T_MS), 101);
    wsc_close(&c);
}

static void test_failure_event(void **state)
{
    (void)state;
    struct wsc c;
    ws_open(&c);
    create(&c, "fb", "#fail-before");
    cJSON_Delete(gwj_recv(&c, T_MS)); /* created */
    cJSON *j = gwj_recv(&c, T_MS);
    assert_string_equal(gwj_istr(j, "type"), "response.done");
    assert_string_equal(gwj_istr(j, "status"), "failed");
    assert_non_null(
        strstr(gwj_istr(cJSON_GetObjectItem(j, "error"), "message"), "upstream returned HTTP 500"));
    cJSON_Delete(j);
    wsc_close(&c);
}

static void test_connections_limit(void **state)
{
    (void)state;
    int fds[8];
    assert_true(gwt_open_connections(gwt_group, fds, 8));
    struct wsc c;
    ws_open(&c);
    expect_error(&c, NULL, "connections_max", "connections_max = 8");
    int code = 0;
    assert_int_equal(wsc_recv(&c, NULL, NULL, &code, T_MS), WSC_CLOSE);
    assert_int_equal(code, 1013);
    wsc_close(&c);
    for (int i = 0; i < 8; i++) {
        close(fds[i]);
    }
}

static void test_ping_and_idle(void **state)
{
    (void)state;
    struct gwt t;
    gwt_default_cfg(&t.cfg);
    t.cfg.limits.ws_ping_interval_s = 1;
    t.cfg.limits.ws_idle_timeout_s = 2;
    assert_true(gwt_start(&t));
    struct wsc c;
    assert_int_equal(wsc_connect(&c, t.port, "/v1/ws", NULL, 0, T_MS), 101);
    /* Quiet socket: pings arrive (and are answered), then the idle timeout closes it. */
    int code = 0;
    char *reason = NULL;
    assert_int_equal(wsc_recv(&c, &reason, NULL, &code, T_MS), WSC_CLOSE);
    assert_int_equal(code, 1000);
    assert_string_equal(reason, "idle timeout");
    wye_free(reason);
    assert_true(c.n_pings >= 1);
    wsc_close(&c);
    gwt_stop(&t);
}

/* Past the grace period, answers still in flight are cancelled and say so. */
static void test_shutdown_cancels_after_grace(void **state)
{
    (void)state;
    struct gwt t;
    gwt_default_cfg(&t.cfg);
    t.cfg.limits.shutdown_grace_ms = 200;
    assert_true(gwt_start(&t));
    struct wsc c;
    assert_int_equal(wsc_connect(&c, t.port, "/v1/ws", NULL, 0, T_MS), 101);
    create(&c, "h", "#hold");
    cJSON_Delete(gwj_recv(&c, T_MS)); /* created */
    cJSON_Delete(gwj_recv(&c, T_MS)); /* first delta */
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, gwt_shutdown_thread, t.srv), 0);
    cJSON *j = gwj_recv(&c, T_MS);
    assert_string_equal(gwj_istr(j, "type"), "response.done");
    assert_string_equal(gwj_istr(j, "status"), "cancelled");
    cJSON_Delete(j);
    assert_true(wsc_wait_eof(&c, T_MS));
    pthread_join(th, NULL);
    wsc_close(&c);
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
        cmocka_unit_test(test_one_response),
        cmocka_unit_test(test_multiplexed),
        cmocka_unit_test(test_cancel),
        cmocka_unit_test(test_disconnect_cancels),
        cmocka_unit_test(test_slow_reader),
        cmocka_unit_test(test_limits),
        cmocka_unit_test(test_malformed),
        cmocka_unit_test(test_failure_event),
        cmocka_unit_test(test_connections_limit),
        cmocka_unit_test(test_ping_and_idle),
        cmocka_unit_test(test_shutdown_cancels_after_grace),
    };
    return cmocka_run_group_tests(tests, gwt_group_setup, gwt_group_teardown);
}
