/* Agents over the gateway (gateway/gw_agents.c): the real router and agents runtime against
 * the stub upstream, with a small agent written to a temporary directory. WebSocket agent.run
 * streams agent.step / agent.tool_call / agent.tool_result / the answer and ends with
 * agent.done; agent.cancel ends a run "cancelled"; unknown agents are refused; POST
 * /v1/agents/{name}/runs answers one JSON object or SSE events ending in [DONE], 404 when the
 * agent does not exist. `wye serve --agents DIR` (in a child process) serves the directory and
 * SIGHUP reloads it: an agent added to the directory is served afterwards, one that was there
 * keeps serving, and a file with a syntax error does not stop the others. */
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
#include <sys/wait.h>
#include <unistd.h>

#include "agents/agents.h"
#include "common/alloc.h"
#include "common/clock.h"
#include "common/crypto.h"
#include "common/log.h"
#include "tests/gateway/gw_json.h"
#include "tests/gateway/gw_stack.h"
#include "tests/gateway/http_client.h"
#include "tests/gateway/serve_child.h"
#include "tests/gateway/ws_client.h"
#include "tests/stub/stub_upstream.h"

#define T_MS 10000

static const char AGENT_LUA[] =
    "tool {\n"
    "  name = 'get_weather',\n"
    "  description = 'the weather in a city',\n"
    "  parameters = {type = 'object', properties = {city = {type = 'string'}}},\n"
    "  run = function(args, ctx) return 'sunny in ' .. tostring(args.city) end,\n"
    "}\n"
    "agent { name = 'helper', system = 'You help.', tools = {'get_weather'}, max_steps = 2 }\n"
    "tool { name = 'blob', run = function() return ('y'):rep(102400) end }\n"
    "agent { name = 'big', system = 'You help.', tools = {'blob'}, max_steps = 1 }\n";

/* Reads WebSocket events until agent.done or an error for id; counts each type. Returns the
 * final event (caller deletes). */
struct counts {
    int step, tool_call, tool_result, delta, model_call;
    size_t result_len;
    bool result_truncated;
    char call_route[16];
    char text[256];
    char tool_name[64];
};

static cJSON *ws_until_done(struct wsc *c, const char *id, struct counts *n)
{
    memset(n, 0, sizeof(*n));
    for (int i = 0; i < 200; i++) {
        char *m = NULL;
        assert_int_equal(wsc_recv(c, &m, NULL, NULL, T_MS), WSC_TEXT);
        cJSON *j = cJSON_Parse(m);
        wye_free(m);
        assert_non_null(j);
        assert_string_equal(gwj_str(j, "id"), id);
        const char *t = gwj_str(j, "type");
        if (strcmp(t, "error") == 0) {
            fprintf(stderr, "error event: %s\n",
                    gwj_str(cJSON_GetObjectItem(j, "error"), "message"));
        }
        if (strcmp(t, "agent.done") == 0 || strcmp(t, "error") == 0) {
            return j;
        }
        if (strcmp(t, "agent.step") == 0) {
            n->step++;
        } else if (strcmp(t, "agent.tool_call") == 0) {
            n->tool_call++;
            snprintf(n->tool_name, sizeof(n->tool_name), "%s", gwj_str(j, "name"));
        } else if (strcmp(t, "agent.tool_result") == 0) {
            n->tool_result++;
            n->result_len = strlen(gwj_str(j, "result"));
            n->result_truncated = cJSON_IsTrue(cJSON_GetObjectItem(j, "truncated"));
        } else if (strcmp(t, "agent.model_call") == 0) {
            n->model_call++;
            snprintf(n->call_route, sizeof(n->call_route), "%s", gwj_str(j, "route"));
        } else if (strcmp(t, "response.output_text.delta") == 0) {
            n->delta++;
            strncat(n->text, gwj_str(j, "delta"), sizeof(n->text) - strlen(n->text) - 1);
        }
        cJSON_Delete(j);
    }
    fail_msg("no agent.done");
    return NULL;
}

static void test_ws_run_completes(void **state)
{
    (void)state;
    struct wsc c;
    assert_int_equal(wsc_connect(&c, gws_group.port, "/v1/ws", NULL, 0, T_MS), 101);
    assert_true(wsc_send_text(&c, "{\"type\":\"agent.run\",\"id\":\"r1\",\"name\":\"helper\","
                                  "\"input\":\"hello big world\"}"));
    struct counts n;
    cJSON *d = ws_until_done(&c, "r1", &n);
    assert_string_equal(gwj_str(d, "type"), "agent.done");
    assert_string_equal(gwj_str(d, "status"), "completed");
    assert_string_equal(gwj_str(d, "output"), "hello big world");
    assert_int_equal(cJSON_GetObjectItem(d, "steps")->valueint, 1);
    assert_int_equal(n.step, 1);
    assert_int_equal(n.tool_call, 0);
    assert_string_equal(n.text, "hello big world");
    cJSON_Delete(d);
    wsc_close(&c);
}

static void test_ws_run_tools(void **state)
{
    (void)state;
    struct wsc c;
    assert_int_equal(wsc_connect(&c, gws_group.port, "/v1/ws", NULL, 0, T_MS), 101);
    /* The stub answers every step with a tool call: the run stops at max_steps (2). */
    assert_true(wsc_send_text(&c, "{\"type\":\"agent.run\",\"id\":\"r2\",\"name\":\"helper\","
                                  "\"input\":\"#stub tools=1\"}"));
    struct counts n;
    cJSON *d = ws_until_done(&c, "r2", &n);
    assert_string_equal(gwj_str(d, "type"), "agent.done");
    assert_string_equal(gwj_str(d, "status"), "failed");
    assert_non_null(strstr(gwj_str(d, "error"), "max_steps"));
    assert_int_equal(cJSON_GetObjectItem(d, "steps")->valueint, 2);
    assert_int_equal(n.step, 2);
    assert_true(n.tool_call >= 1);
    assert_int_equal(n.tool_result, n.tool_call);
    assert_string_equal(n.tool_name, "get_weather");
    /* every model call is reported, and agent.done sums them */
    assert_int_equal(n.model_call, 2);
    assert_string_equal(n.call_route, "remote");
    const cJSON *tok = cJSON_GetObjectItem(d, "tokens");
    assert_true(cJSON_GetObjectItem(tok, "prompt")->valuedouble > 0);
    assert_true(cJSON_GetObjectItem(tok, "completion")->valuedouble > 0);
    const cJSON *calls = cJSON_GetObjectItem(d, "calls");
    assert_int_equal(cJSON_GetArraySize(calls), 2);
    double cost = 0, saving = 0, prompt = 0;
    const cJSON *call;
    cJSON_ArrayForEach(call, calls)
    {
        assert_string_equal(gwj_str(call, "route"), "remote");
        assert_string_equal(gwj_str(call, "model"), "stub-model");
        assert_true(cJSON_GetObjectItem(call, "completion_tokens")->valuedouble > 0);
        cost += cJSON_GetObjectItem(call, "cost_usd")->valuedouble;
        saving += cJSON_GetObjectItem(call, "saving_usd")->valuedouble;
        prompt += cJSON_GetObjectItem(call, "prompt_tokens")->valuedouble;
    }
    /* stub-model is priced at prices.default_remote; a remote answer saves nothing */
    assert_true(cost > 0);
    assert_float_equal(cJSON_GetObjectItem(d, "cost_usd")->valuedouble, cost, 1e-9);
    assert_float_equal(cJSON_GetObjectItem(d, "saving_usd")->valuedouble, saving, 1e-9);
    assert_float_equal(saving, 0, 1e-12);
    assert_float_equal(cJSON_GetObjectItem(tok, "prompt")->valuedouble, prompt, 0.5);
    cJSON_Delete(d);
    wsc_close(&c);
}

/* A 100 KiB tool result reaches the client as valid JSON, its result cut and flagged. */
static void test_ws_big_tool_result(void **state)
{
    (void)state;
    struct wsc c;
    assert_int_equal(wsc_connect(&c, gws_group.port, "/v1/ws", NULL, 0, T_MS), 101);
    assert_true(wsc_send_text(&c, "{\"type\":\"agent.run\",\"id\":\"rb\",\"name\":\"big\","
                                  "\"input\":\"#stub tools=1\"}"));
    struct counts n;
    cJSON *d = ws_until_done(&c, "rb", &n);
    assert_string_equal(gwj_str(d, "type"), "agent.done");
    assert_int_equal(n.tool_result, 1);
    assert_true(n.result_truncated);
    assert_true(n.result_len > AGENT_EVENT_MAX / 2 && n.result_len < AGENT_EVENT_MAX);
    cJSON_Delete(d);
    wsc_close(&c);
}

static void test_ws_cancel(void **state)
{
    (void)state;
    struct wsc c;
    assert_int_equal(wsc_connect(&c, gws_group.port, "/v1/ws", NULL, 0, T_MS), 101);
    /* 100 deltas 100 ms apart: ten seconds unless cancelled. */
    assert_true(wsc_send_text(&c, "{\"type\":\"agent.run\",\"id\":\"r3\",\"name\":\"helper\","
                                  "\"input\":\"#stub n=100 delay_ms=100\"}"));
    char *m = NULL;
    assert_int_equal(wsc_recv(&c, &m, NULL, NULL, T_MS), WSC_TEXT);
    assert_non_null(strstr(m, "\"agent.step\""));
    wye_free(m);
    assert_true(wsc_send_text(&c, "{\"type\":\"agent.cancel\",\"id\":\"r3\"}"));
    struct counts n;
    cJSON *d = ws_until_done(&c, "r3", &n);
    assert_string_equal(gwj_str(d, "type"), "agent.done");
    assert_string_equal(gwj_str(d, "status"), "cancelled");
    cJSON_Delete(d);
    wsc_close(&c);
}

static void test_ws_unknown_agent(void **state)
{
    (void)state;
    struct wsc c;
    assert_int_equal(wsc_connect(&c, gws_group.port, "/v1/ws", NULL, 0, T_MS), 101);
    assert_true(wsc_send_text(
        &c, "{\"type\":\"agent.run\",\"id\":\"r4\",\"name\":\"nobody\",\"input\":\"x\"}"));
    struct counts n;
    cJSON *d = ws_until_done(&c, "r4", &n);
    assert_string_equal(gwj_str(d, "type"), "error");
    cJSON *e = cJSON_GetObjectItem(d, "error");
    assert_string_equal(gwj_str(e, "code"), "agent_not_found");
    assert_non_null(strstr(gwj_str(e, "message"), "nobody"));
    cJSON_Delete(d);
    /* The socket still serves: a bad agent.run names the problem. */
    assert_true(wsc_send_text(&c, "{\"type\":\"agent.run\",\"id\":\"r5\",\"name\":\"helper\"}"));
    d = ws_until_done(&c, "r5", &n);
    assert_string_equal(gwj_str(d, "type"), "error");
    assert_non_null(strstr(gwj_str(cJSON_GetObjectItem(d, "error"), "message"), "'input'"));
    cJSON_Delete(d);
    wsc_close(&c);
}

static void test_http_run(void **state)
{
    (void)state;
    struct hc_resp r;
    hc_resp_init(&r);
    int st = hc_request(gws_group.port, "POST", "/v1/agents/helper/runs",
                        "{\"input\":\"one two\",\"stream\":false}", NULL, &r, T_MS);
    assert_int_equal(st, 200);
    assert_true(wye_buf_append(&r.body, "", 1) == WYE_OK);
    cJSON *j = cJSON_Parse(r.body.data);
    assert_non_null(j);
    assert_string_equal(gwj_str(j, "type"), "agent.done");
    assert_string_equal(gwj_str(j, "status"), "completed");
    assert_string_equal(gwj_str(j, "output"), "one two");
    assert_int_equal(cJSON_GetObjectItem(j, "steps")->valueint, 1);
    cJSON_Delete(j);
    hc_resp_cleanup(&r);
}

static void test_http_run_stream(void **state)
{
    (void)state;
    struct hc_resp r;
    hc_resp_init(&r);
    int st = hc_request(gws_group.port, "POST", "/v1/agents/helper/runs",
                        "{\"input\":\"#stub tools=1\",\"stream\":true}", NULL, &r, T_MS);
    assert_int_equal(st, 200);
    char *ev[64];
    size_t n = hc_sse_split(r.body.data, r.body.len, ev, 64);
    assert_true(n >= 4);
    assert_string_equal(ev[n - 1], "[DONE]");
    bool saw_step = false, saw_call = false, saw_result = false, saw_done = false;
    for (size_t i = 0; i + 1 < n; i++) {
        cJSON *j = cJSON_Parse(ev[i]);
        assert_non_null(j);
        const char *t = gwj_str(j, "type");
        saw_step |= strcmp(t, "agent.step") == 0;
        saw_call |= strcmp(t, "agent.tool_call") == 0;
        saw_result |= strcmp(t, "agent.tool_result") == 0;
        if (strcmp(t, "agent.done") == 0) {
            saw_done = i == n - 2;
            assert_string_equal(gwj_str(j, "status"), "failed");
        }
        cJSON_Delete(j);
    }
    for (size_t i = 0; i < n; i++) {
        wye_free(ev[i]);
    }
    assert_true(saw_step && saw_call && saw_result && saw_done);
    hc_resp_cleanup(&r);
}

static void test_http_unknown_agent(void **state)
{
    (void)state;
    struct hc_resp r;
    hc_resp_init(&r);
    int st = hc_request(gws_group.port, "POST", "/v1/agents/nobody/runs", "{\"input\":\"x\"}", NULL,
                        &r, T_MS);
    assert_int_equal(st, 404);
    assert_true(wye_buf_append(&r.body, "", 1) == WYE_OK);
    cJSON *j = cJSON_Parse(r.body.data);
    assert_non_null(j);
    cJSON *e = cJSON_GetObjectItem(j, "error");
    assert_string_equal(gwj_str(e, "code"), "agent_not_found");
    cJSON_Delete(j);
    hc_resp_cleanup(&r);
    /* A body without input is a 400 naming the field. */
    hc_resp_init(&r);
    st = hc_request(gws_group.port, "POST", "/v1/agents/helper/runs", "{\"stream\":true}", NULL, &r,
                    T_MS);
    assert_int_equal(st, 400);
    assert_true(wye_buf_append(&r.body, "", 1) == WYE_OK);
    assert_non_null(strstr(r.body.data, "'input'"));
    hc_resp_cleanup(&r);
}

static void write_file(const char *dir, const char *name, const char *text)
{
    char path[256];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    assert_true(fputs(text, f) >= 0);
    assert_int_equal(fclose(f), 0);
}

static void remove_file(const char *dir, const char *name)
{
    char path[256];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    unlink(path);
}

/* POST /v1/agents/NAME/runs (not streamed); the status, and the output in out. */
static int run_http(int port, const char *name, const char *input, char *out, size_t cap)
{
    char path[128], body[256];
    snprintf(path, sizeof(path), "/v1/agents/%s/runs", name);
    snprintf(body, sizeof(body), "{\"input\":\"%s\"}", input);
    struct hc_resp r;
    hc_resp_init(&r);
    int st = hc_request(port, "POST", path, body, NULL, &r, T_MS);
    out[0] = '\0';
    if (wye_buf_append(&r.body, "", 1) == WYE_OK) {
        cJSON *j = cJSON_Parse(r.body.data);
        snprintf(out, cap, "%s", gwj_str(j, "output"));
        cJSON_Delete(j);
    }
    hc_resp_cleanup(&r);
    return st;
}

static void test_serve_sighup(void **state)
{
    (void)state;
    struct stub_upstream *stub = stub_upstream_start();
    assert_non_null(stub);
    char dir[] = "/tmp/wye-gw-agents-serve-XXXXXX";
    assert_non_null(mkdtemp(dir));
    write_file(dir, "first.lua", "agent { name = 'first', system = 'You help.' }\n");
    char ledger[sizeof(dir) + 32], url[128];
    snprintf(ledger, sizeof(ledger), "%s/ledger.jsonl", dir);
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/v1", stub_upstream_port(stub));
    int fd = -1;
    pid_t pid = sc_fork_piped(&fd);
    assert_true(pid >= 0);
    if (pid == 0) {
        /* exec, not gw_cli_serve in the forked child: the stub upstream's threads live in
         * this process, and a lock one of them held at fork() would stay held in the child */
        char *argv[] = {(char *)WYE_BINARY_DIR "/wye",
                        (char *)"serve",
                        (char *)"--listen",
                        (char *)"127.0.0.1:0",
                        (char *)"--upstream",
                        url,
                        (char *)"--upstream-model",
                        (char *)"stub-model",
                        (char *)"--no-local",
                        (char *)"--ledger",
                        ledger,
                        (char *)"--agents",
                        dir,
                        NULL};
        execv(argv[0], argv);
        _exit(127);
    }
    char log[8192];
    int port = sc_read_port(pid, fd, log, sizeof(log), T_MS);
    if (!port) {
        fail_msg("no 'listening on' line; log: %s", log);
    }
    char out[256];
    assert_int_equal(run_http(port, "first", "alpha beta", out, sizeof(out)), 200);
    assert_string_equal(out, "alpha beta");
    assert_int_equal(run_http(port, "second", "x", out, sizeof(out)), 404);
    write_file(dir, "second.lua", "agent { name = 'second', system = 'You help too.' }\n");
    write_file(dir, "broken.lua", "agent { name = \n");
    assert_int_equal(kill(pid, SIGHUP), 0);
    int st = 404;
    for (int i = 0; i < 200 && st == 404; i++) {
        st = run_http(port, "second", "gamma delta", out, sizeof(out));
        if (st == 404) {
            wye_sleep_ms(20);
        }
    }
    assert_int_equal(st, 200);
    assert_string_equal(out, "gamma delta");
    assert_int_equal(run_http(port, "first", "still here", out, sizeof(out)), 200);
    assert_string_equal(out, "still here");
    assert_int_equal(kill(pid, SIGTERM), 0);
    int status = 0;
    if (!sc_wait_exit(pid, &status, T_MS)) {
        fail_msg("wye serve did not exit after SIGTERM");
    }
    close(fd);
    stub_upstream_stop(stub);
    remove_file(dir, "first.lua");
    remove_file(dir, "second.lua");
    remove_file(dir, "broken.lua");
    remove_file(dir, "ledger.jsonl");
    remove_file(dir, "ledger.jsonl.key");
    rmdir(dir);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
}

int main(void)
{
    if (wye_crypto_init() != WYE_OK) {
        return 1;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ws_run_completes),   cmocka_unit_test(test_ws_run_tools),
        cmocka_unit_test(test_ws_big_tool_result), cmocka_unit_test(test_ws_cancel),
        cmocka_unit_test(test_ws_unknown_agent),   cmocka_unit_test(test_http_run),
        cmocka_unit_test(test_http_run_stream),    cmocka_unit_test(test_http_unknown_agent),
    };
    signal(SIGPIPE, SIG_IGN);
    /* The child-process test first, before the in-process server starts its threads. */
    const struct CMUnitTest serve_tests[] = {cmocka_unit_test(test_serve_sighup)};
    int failed = cmocka_run_group_tests(serve_tests, NULL, NULL);
    gws_group_opts = (struct gws_opts){.agent_lua = AGENT_LUA,
                                       .lua_name = "helper.lua",
                                       .dir_template = "/tmp/wye_gw_agents_XXXXXX"};
    return failed + cmocka_run_group_tests(tests, gws_group_setup, gws_group_teardown);
}
