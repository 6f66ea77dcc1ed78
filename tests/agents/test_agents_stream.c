/* Streaming an agent's answer over the gateway: the real router, agents runtime and gateway
 * against the stand-in upstream (tests/stub) scripted to stream its answer in several chunks
 * some time apart. Over the WebSocket, agent.run gets one response.output_text.delta per chunk
 * (with the run id and step), in order and as they arrive, before agent.done; over HTTP with
 * "stream":true the same deltas are SSE events before agent.done and [DONE]; a workflow (no
 * agent-loop model call) gets its answer as one delta, unless it streams its own text with
 * ctx:emit{type="delta"}. */
/* cmocka.h needs these first. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cJSON.h>
#include <cmocka.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/alloc.h"
#include "common/clock.h"
#include "common/crypto.h"
#include "tests/gateway/gw_json.h"
#include "tests/gateway/gw_stack.h"
#include "tests/gateway/http_client.h"
#include "tests/gateway/ws_client.h"

#define T_MS 10000

static const char AGENT_LUA[] =
    "tool { name = 'noop', run = function() return 'ok' end }\n"
    "agent { name = 'talker', system = 'You talk.', tools = {'noop'}, max_steps = 2 }\n"
    "workflow('echo', function(ctx, input) return 'echo:' .. input end)\n"
    "workflow('writer', function(ctx, input)\n"
    "  ctx:emit {delta = 'Dear ', type = 'delta'}\n"
    "  ctx:emit {type = 'delta', delta = input}\n"
    "  return 'Dear ' .. input\n"
    "end)\n";

/* Five chunks 150 ms apart: the first delta must reach the client at least 450 ms before
 * agent.done, which an answer sent in one piece at the end cannot do. */
static void test_ws_deltas_stream(void **state)
{
    (void)state;
    struct wsc c;
    assert_int_equal(wsc_connect(&c, gws_group.port, "/v1/ws", NULL, 0, T_MS), 101);
    assert_true(wsc_send_text(&c, "{\"type\":\"agent.run\",\"id\":\"s1\",\"name\":\"talker\","
                                  "\"input\":\"#stub n=5 delay_ms=150\"}"));
    char text[256] = "";
    int n_delta = 0, n_step = 0;
    uint64_t run_id = 0;
    int64_t t_first = 0, t_done = 0;
    cJSON *done = NULL;
    for (int i = 0; i < 100 && !done; i++) {
        char *m = NULL;
        assert_int_equal(wsc_recv(&c, &m, NULL, NULL, T_MS), WSC_TEXT);
        int64_t now = wye_now_ns();
        cJSON *j = cJSON_Parse(m);
        wye_free(m);
        assert_non_null(j);
        assert_string_equal(gwj_str(j, "id"), "s1");
        const char *t = gwj_str(j, "type");
        assert_string_not_equal(t, "error");
        if (strcmp(t, "agent.step") == 0) {
            n_step++;
        } else if (strcmp(t, "response.output_text.delta") == 0) {
            /* every delta belongs to step 1 of one run */
            assert_int_equal(gwj_int(j, "step"), 1);
            assert_true(gwj_u64(j, "run_id") > 0);
            assert_true(run_id == 0 || run_id == gwj_u64(j, "run_id"));
            run_id = gwj_u64(j, "run_id");
            assert_int_equal(n_step, 1); /* after agent.step */
            if (n_delta++ == 0) {
                t_first = now;
            }
            strncat(text, gwj_str(j, "delta"), sizeof(text) - strlen(text) - 1);
        } else if (strcmp(t, "agent.done") == 0) {
            t_done = now;
            done = j;
            continue;
        }
        cJSON_Delete(j);
    }
    assert_non_null(done);
    assert_string_equal(gwj_str(done, "status"), "completed");
    assert_true(run_id > 0);
    assert_true(gwj_u64(done, "run_id") == run_id);
    /* one delta per chunk, in order, and together the answer */
    assert_int_equal(n_delta, 5);
    assert_string_equal(text, "t0 t1 t2 t3 t4");
    assert_string_equal(gwj_str(done, "output"), "t0 t1 t2 t3 t4");
    assert_true(t_done - t_first >= 450 * WYE_NS_PER_MS);
    cJSON_Delete(done);
    wsc_close(&c);
}

/* HTTP with "stream":true: the deltas are SSE events, in order, before agent.done. */
static void test_http_sse_deltas(void **state)
{
    (void)state;
    struct hc_resp r;
    hc_resp_init(&r);
    int st = hc_request(gws_group.port, "POST", "/v1/agents/talker/runs",
                        "{\"input\":\"#stub n=4 delay_ms=20\",\"stream\":true}", NULL, &r, T_MS);
    assert_int_equal(st, 200);
    char *ev[64];
    size_t n = hc_sse_split(r.body.data, r.body.len, ev, 64);
    assert_true(n >= 6);
    assert_string_equal(ev[n - 1], "[DONE]");
    char text[128] = "";
    int n_delta = 0;
    bool done_last = false;
    for (size_t i = 0; i + 1 < n; i++) {
        cJSON *j = cJSON_Parse(ev[i]);
        assert_non_null(j);
        const char *t = gwj_str(j, "type");
        if (strcmp(t, "response.output_text.delta") == 0) {
            n_delta++;
            assert_int_equal(gwj_int(j, "step"), 1);
            assert_true(strlen(gwj_str(j, "request_id")) > 0);
            strncat(text, gwj_str(j, "delta"), sizeof(text) - strlen(text) - 1);
        } else if (strcmp(t, "agent.done") == 0) {
            done_last = i == n - 2;
            assert_string_equal(gwj_str(j, "output"), "t0 t1 t2 t3");
        }
        cJSON_Delete(j);
    }
    for (size_t i = 0; i < n; i++) {
        wye_free(ev[i]);
    }
    assert_int_equal(n_delta, 4);
    assert_string_equal(text, "t0 t1 t2 t3");
    assert_true(done_last);
    hc_resp_cleanup(&r);
}

/* Runs workflow name(input) over the WebSocket as request id: counts the text deltas (each
 * carrying id; none of the old "agent.delta" events), appends their text to text, and returns
 * the agent.done event (the caller deletes it). */
static cJSON *ws_workflow(const char *id, const char *name, const char *input, int *n_delta,
                          char *text, size_t cap)
{
    struct wsc c;
    assert_int_equal(wsc_connect(&c, gws_group.port, "/v1/ws", NULL, 0, T_MS), 101);
    char req[256];
    snprintf(req, sizeof(req),
             "{\"type\":\"agent.run\",\"id\":\"%s\",\"name\":\"%s\",\"input\":\"%s\"}", id, name,
             input);
    assert_true(wsc_send_text(&c, req));
    *n_delta = 0;
    text[0] = '\0';
    cJSON *done = NULL;
    for (int i = 0; i < 20 && !done; i++) {
        char *m = NULL;
        assert_int_equal(wsc_recv(&c, &m, NULL, NULL, T_MS), WSC_TEXT);
        cJSON *j = cJSON_Parse(m);
        wye_free(m);
        assert_non_null(j);
        const char *t = gwj_str(j, "type");
        assert_string_not_equal(t, "agent.delta");
        if (strcmp(t, "response.output_text.delta") == 0) {
            (*n_delta)++;
            assert_string_equal(gwj_str(j, "id"), id);
            strncat(text, gwj_str(j, "delta"), cap - strlen(text) - 1);
        } else if (strcmp(t, "agent.done") == 0) {
            done = j;
            continue;
        }
        cJSON_Delete(j);
    }
    wsc_close(&c);
    assert_non_null(done);
    return done;
}

/* A workflow makes no agent-loop model call: its result arrives as one delta. */
static void test_ws_workflow_one_delta(void **state)
{
    (void)state;
    int n_delta;
    char text[64];
    cJSON *done = ws_workflow("w1", "echo", "hi", &n_delta, text, sizeof(text));
    assert_string_equal(gwj_str(done, "status"), "completed");
    assert_int_equal(n_delta, 1);
    assert_string_equal(text, "\"echo:hi\"");
    cJSON_Delete(done);
}

/* A workflow streams its own text with ctx:emit{type="delta"}: those are the deltas, and the
 * result is not sent again as one. */
static void test_ws_workflow_emits_deltas(void **state)
{
    (void)state;
    int n_delta;
    char text[64];
    cJSON *done = ws_workflow("w2", "writer", "Sir", &n_delta, text, sizeof(text));
    assert_string_equal(gwj_str(done, "status"), "completed");
    assert_string_equal(gwj_str(done, "output"), "\"Dear Sir\"");
    assert_int_equal(n_delta, 2);
    assert_string_equal(text, "Dear Sir");
    cJSON_Delete(done);
}

int main(void)
{
    if (wye_crypto_init() != WYE_OK) {
        return 1;
    }
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ws_deltas_stream),
        cmocka_unit_test(test_http_sse_deltas),
        cmocka_unit_test(test_ws_workflow_one_delta),
        cmocka_unit_test(test_ws_workflow_emits_deltas),
    };
    gws_group_opts = (struct gws_opts){.agent_lua = AGENT_LUA,
                                       .lua_name = "talker.lua",
                                       .dir_template = "/tmp/wye_agents_stream_XXXXXX"};
    return cmocka_run_group_tests(tests, gws_group_setup, gws_group_teardown);
}
