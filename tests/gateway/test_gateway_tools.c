/* OpenAI tool calls answered by the local model through the real gateway: `wye serve` (the
 * built binary, as a child process) with stories260K and no remote track. POST
 * /v1/chat/completions with tools and tool_choice "required" / a named function: the JSON
 * answer's choices[0].message.tool_calls are calls of the offered tools whose arguments parse
 * and satisfy the tool's schema, with finish_reason "tool_calls"; streamed, the SSE chunks'
 * delta.tool_calls assemble into the same kind of calls and the stream ends with
 * finish_reason "tool_calls" and [DONE]; over WebSocket, response.output_tool_call.delta events
 * assemble the same way and response.done says "tool_calls". A tool schema outside the constrained
 * subset is a 400 naming the tool and the keyword. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <cJSON.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "agents/agents.h"
#include "common/alloc.h"
#include "common/clock.h"
#include "tests/gateway/http_client.h"
#include "tests/gateway/serve_child.h"
#include "tests/gateway/ws_client.h"

#define T_MS 30000

struct srv {
    pid_t pid;
    int port;
    char dir[512];
    char log[600];
    char conf[600];
};

static const char tools_json[] =
    "[{\"type\":\"function\",\"function\":{\"name\":\"get_weather\",\"parameters\":{\"type\":"
    "\"object\",\"properties\":{\"city\":{\"type\":\"string\",\"maxLength\":16},\"days\":{"
    "\"type\":\"integer\"}},\"required\":[\"city\",\"days\"],\"additionalProperties\":false}}},"
    "{\"type\":\"function\",\"function\":{\"name\":\"get_time\"}}]";

static void srv_start(struct srv *s)
{
    memset(s, 0, sizeof(*s));
    snprintf(s->dir, sizeof(s->dir), "%s/gw_tools_XXXXXX", WYE_BINARY_DIR);
    assert_non_null(mkdtemp(s->dir));
    snprintf(s->log, sizeof(s->log), "%s/serve.log", s->dir);
    snprintf(s->conf, sizeof(s->conf), "%s/wye.lua", s->dir);
    FILE *f = fopen(s->conf, "w");
    assert_non_null(f);
    fprintf(f,
            "return {\n"
            "  listen = \"127.0.0.1:0\",\n"
            "  engine = { model = \"%s/models/stories260K-f32.gguf\", model_name = \"tiny\",\n"
            "             threads = 1, ctx = 1024, sequences = 2 },\n"
            "  ledger = { path = \"%s/ledger.jsonl\" },\n"
            "}\n",
            WYE_SHARED_DIR, s->dir);
    fclose(f);
    const char *const env[] = {
        "WYE_LEDGER_KEY=00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff", NULL};
    s->port = sc_serve_conf(s->conf, s->log, env, T_MS, &s->pid);
    if (!s->port) {
        fail_msg("wye serve did not start; see %s", s->log);
    }
}

static void srv_stop(struct srv *s)
{
    kill(s->pid, SIGTERM);
    int st = 0;
    if (!sc_wait_exit(s->pid, &st, T_MS)) {
        fail_msg("wye serve did not stop");
    }
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    char cmd[700];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", s->dir);
    if (system(cmd) != 0) {
        fprintf(stderr, "cannot remove %s\n", s->dir);
    }
}

/* Checks an assembled tool_calls array; returns the number of calls. */
static int check_calls(const cJSON *calls, const char *only)
{
    int n = 0;
    const cJSON *c;
    cJSON_ArrayForEach(c, calls)
    {
        const cJSON *fn = cJSON_GetObjectItem(c, "function");
        const char *name = cJSON_GetStringValue(cJSON_GetObjectItem(fn, "name"));
        const char *args = cJSON_GetStringValue(cJSON_GetObjectItem(fn, "arguments"));
        const char *id = cJSON_GetStringValue(cJSON_GetObjectItem(c, "id"));
        assert_non_null(name);
        assert_non_null(args);
        assert_true(id && id[0]);
        assert_string_equal(cJSON_GetStringValue(cJSON_GetObjectItem(c, "type")), "function");
        cJSON *a = cJSON_Parse(args);
        if (!cJSON_IsObject(a)) {
            fail_msg("arguments of %s are not a JSON object: '%s'", name, args);
        }
        if (strcmp(name, "get_weather") == 0) {
            const cJSON *city = cJSON_GetObjectItem(a, "city");
            const cJSON *days = cJSON_GetObjectItem(a, "days");
            assert_true(cJSON_IsString(city) && cJSON_IsNumber(days));
            assert_true(days->valuedouble == (double)(int64_t)days->valuedouble);
            assert_int_equal(cJSON_GetArraySize(a), 2);
        } else if (strcmp(name, "get_time") == 0) {
            assert_int_equal(cJSON_GetArraySize(a), 0);
        } else {
            fail_msg("a call of an unknown function '%s'", name);
        }
        if (only) {
            assert_string_equal(name, only);
        }
        cJSON_Delete(a);
        n++;
    }
    return n;
}

static char *body_of(const char *choice, bool stream, int seed)
{
    char *b = wye_malloc(8192);
    snprintf(b, 8192,
             "{\"model\":\"tiny\",\"stream\":%s,\"max_tokens\":96,\"temperature\":1.0,\"seed\":%d,"
             "\"messages\":[{\"role\":\"user\",\"content\":\"Weather in Paris for 3 days?\"}],"
             "\"tools\":%s,\"tool_choice\":%s}",
             stream ? "true" : "false", seed, tools_json, choice);
    return b;
}

static void json_answer(int port, const char *choice, const char *only, int seed)
{
    char *b = body_of(choice, false, seed);
    struct hc_resp r;
    hc_resp_init(&r);
    assert_int_equal(hc_request(port, "POST", "/v1/chat/completions", b, NULL, &r, T_MS), 200);
    wye_free(b);
    char route[16] = "";
    hc_header(&r, "x-wye-route", route, sizeof(route));
    assert_string_equal(route, "local");
    cJSON *j = cJSON_Parse(r.body.data);
    assert_non_null(j);
    const cJSON *ch = cJSON_GetArrayItem(cJSON_GetObjectItem(j, "choices"), 0);
    const cJSON *calls = cJSON_GetObjectItem(cJSON_GetObjectItem(ch, "message"), "tool_calls");
    if (!cJSON_IsArray(calls)) {
        fail_msg("no tool_calls in %s", r.body.data);
    }
    assert_true(check_calls(calls, only) >= 1);
    const char *reason = cJSON_GetStringValue(cJSON_GetObjectItem(ch, "finish_reason"));
    assert_non_null(reason);
    if (strcmp(reason, "length") != 0) {
        assert_string_equal(reason, "tool_calls");
    }
    cJSON_Delete(j);
    hc_resp_cleanup(&r);
}

static void sse_answer(int port, const char *choice, const char *only, int seed)
{
    char *b = body_of(choice, true, seed);
    struct hc_resp r;
    hc_resp_init(&r);
    assert_int_equal(hc_request(port, "POST", "/v1/chat/completions", b, NULL, &r, T_MS), 200);
    wye_free(b);
    assert_non_null(r.body.data);
    char *events[512];
    size_t n = hc_sse_split(r.body.data, r.body.len, events, 512);
    struct wye_buf deltas;
    wye_buf_init(&deltas, 1 << 20);
    char reason[32] = "";
    bool done = false;
    for (size_t i = 0; i < n; i++) {
        if (strcmp(events[i], "[DONE]") == 0) {
            done = true;
            continue;
        }
        cJSON *e = cJSON_Parse(events[i]);
        assert_non_null(e);
        const cJSON *ch = cJSON_GetArrayItem(cJSON_GetObjectItem(e, "choices"), 0);
        const cJSON *tc = cJSON_GetObjectItem(cJSON_GetObjectItem(ch, "delta"), "tool_calls");
        if (tc) {
            char *s = cJSON_PrintUnformatted(tc);
            assert_int_equal(wye_buf_append_str(&deltas, s), WYE_OK);
            assert_int_equal(wye_buf_append_str(&deltas, "\n"), WYE_OK);
            cJSON_free(s);
        }
        const char *fr = cJSON_GetStringValue(cJSON_GetObjectItem(ch, "finish_reason"));
        if (fr) {
            snprintf(reason, sizeof(reason), "%s", fr);
        }
        cJSON_Delete(e);
    }
    for (size_t i = 0; i < n; i++) {
        wye_free(events[i]);
    }
    assert_true(done);
    char *calls = NULL, err[256] = "";
    if (agent_toolcalls_assemble(deltas.data ? deltas.data : "", &calls, err, sizeof(err))) {
        fail_msg("streamed tool_calls do not assemble: %s", err);
    }
    assert_non_null(calls);
    cJSON *arr = cJSON_Parse(calls);
    assert_true(check_calls(arr, only) >= 1);
    if (strcmp(reason, "length") != 0) {
        assert_string_equal(reason, "tool_calls");
    }
    cJSON_Delete(arr);
    wye_free(calls);
    wye_buf_cleanup(&deltas);
    hc_resp_cleanup(&r);
}

/* WebSocket response.create with tools: tool_call deltas, then response.done. */
static void ws_answer(int port, int seed)
{
    struct wsc c;
    assert_int_equal(wsc_connect(&c, port, "/v1/ws", NULL, 0, T_MS), 101);
    char *ev = wye_malloc(8192);
    snprintf(ev, 8192,
             "{\"type\":\"response.create\",\"id\":\"t%d\",\"response\":{\"model\":\"tiny\","
             "\"max_tokens\":96,\"temperature\":1.0,\"seed\":%d,\"messages\":[{\"role\":\"user\","
             "\"content\":\"Weather in Oslo for 2 days?\"}],\"tools\":%s,\"tool_choice\":{\"type\":"
             "\"function\",\"function\":{\"name\":\"get_weather\"}}}}",
             seed, seed, tools_json);
    assert_true(wsc_send_text(&c, ev));
    wye_free(ev);
    struct wye_buf deltas;
    wye_buf_init(&deltas, 1 << 20);
    bool done = false;
    for (int i = 0; i < 2000 && !done; i++) {
        char *m = NULL;
        assert_int_equal(wsc_recv(&c, &m, NULL, NULL, T_MS), WSC_TEXT);
        cJSON *j = cJSON_Parse(m);
        wye_free(m);
        assert_non_null(j);
        const char *type = cJSON_GetStringValue(cJSON_GetObjectItem(j, "type"));
        assert_non_null(type);
        if (strcmp(type, "response.output_tool_call.delta") == 0) {
            char *s = cJSON_PrintUnformatted(cJSON_GetObjectItem(j, "tool_calls"));
            assert_int_equal(wye_buf_append_str(&deltas, s), WYE_OK);
            assert_int_equal(wye_buf_append_str(&deltas, "\n"), WYE_OK);
            cJSON_free(s);
        } else if (strcmp(type, "response.done") == 0) {
            assert_string_equal(cJSON_GetStringValue(cJSON_GetObjectItem(j, "status")),
                                "completed");
            assert_string_equal(cJSON_GetStringValue(cJSON_GetObjectItem(j, "route")), "local");
            const char *fr = cJSON_GetStringValue(cJSON_GetObjectItem(j, "finish_reason"));
            assert_non_null(fr);
            if (strcmp(fr, "length") != 0) {
                assert_string_equal(fr, "tool_calls");
            }
            done = true;
        }
        cJSON_Delete(j);
    }
    assert_true(done);
    char *calls = NULL, err[256] = "";
    if (agent_toolcalls_assemble(deltas.data ? deltas.data : "", &calls, err, sizeof(err))) {
        fail_msg("WebSocket tool_calls do not assemble: %s", err);
    }
    assert_non_null(calls);
    cJSON *arr = cJSON_Parse(calls);
    assert_true(check_calls(arr, "get_weather") >= 1);
    cJSON_Delete(arr);
    wye_free(calls);
    wye_buf_cleanup(&deltas);
    wsc_close(&c);
}

static void test_tools_http(void **state)
{
    (void)state;
    struct srv s;
    srv_start(&s);
    for (int seed = 1; seed <= 3; seed++) {
        json_answer(s.port, "\"required\"", NULL, seed);
        json_answer(s.port, "{\"type\":\"function\",\"function\":{\"name\":\"get_weather\"}}",
                    "get_weather", seed);
        sse_answer(s.port, "\"required\"", NULL, seed);
        sse_answer(s.port, "{\"type\":\"function\",\"function\":{\"name\":\"get_weather\"}}",
                   "get_weather", seed);
        ws_answer(s.port, seed);
    }
    /* a schema outside the subset: 400 naming the tool and the keyword */
    static const char bad[] =
        "{\"model\":\"tiny\",\"max_tokens\":16,\"messages\":[{\"role\":\"user\",\"content\":"
        "\"hi\"}],\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"find\","
        "\"parameters\":{\"type\":\"object\",\"properties\":{\"q\":{\"type\":\"string\","
        "\"pattern\":\"^a\"}}}}}]}";
    struct hc_resp r;
    hc_resp_init(&r);
    assert_int_equal(hc_request(s.port, "POST", "/v1/chat/completions", bad, NULL, &r, T_MS), 400);
    assert_non_null(r.body.data);
    assert_non_null(strstr(r.body.data, "tool 'find'"));
    assert_non_null(strstr(r.body.data, "pattern"));
    hc_resp_cleanup(&r);
    srv_stop(&s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tools_http),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
