/* The agent loop through the real router against tests/stub (its "#stub tools=1" streams an
 * OpenAI tool call on every request), and `wye agent list|run` as a user runs them. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <cmocka.h>

#include "common/alloc.h"
#include "tests/stub/stub_upstream.h"

#define WYE_BIN WYE_BINARY_DIR "/wye"
#define E2E_DIR WYE_SOURCE_DIR "/tests/agents/scripts_e2e"

/* Every `wye agent run` here records into this temporary ledger (WYE_LEDGER). */
static char tmp_dir[] = "/tmp/wye-agents-stub-XXXXXX";
static char ledger_path[sizeof(tmp_dir) + 32];

/* Runs cmd, returns its stdout (malloc'd) and exit status. */
static char *run_cmd(const char *cmd, int *status)
{
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    size_t cap = 1 << 16, len = 0;
    char *out = malloc(cap);
    size_t n;
    while ((n = fread(out + len, 1, cap - 1 - len, p)) > 0) {
        len += n;
    }
    out[len] = '\0';
    int st = pclose(p);
    *status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
    return out;
}

static void test_cli_list(void **state)
{
    (void)state;
    int st = 0;
    char *out = run_cmd(WYE_BIN " agent list --dir " WYE_SOURCE_DIR "/tests/agents/scripts "
                                "2>/dev/null",
                        &st);
    assert_int_equal(st, 0);
    assert_non_null(strstr(out, "helper"));
    assert_non_null(strstr(out, "fanout"));
    assert_non_null(strstr(out, "lookup"));
    free(out);
    /* the broken files are named on stderr with their line */
    out = run_cmd(WYE_BIN " agent list --dir " WYE_SOURCE_DIR "/tests/agents/scripts 2>&1 "
                          ">/dev/null",
                  &st);
    assert_non_null(strstr(out, "bad_syntax.lua:4:"));
    free(out);
    out = run_cmd(WYE_BIN " agent list --dir /nonexistent 2>&1", &st);
    assert_int_equal(st, 1);
    assert_non_null(strstr(out, "cannot open the agents directory /nonexistent"));
    free(out);
}

static void test_stub_tool_loop(void **state)
{
    (void)state;
    struct stub_upstream *s = stub_upstream_start();
    assert_non_null(s);
    char cmd[1024];
    int st = 0;
    snprintf(cmd, sizeof(cmd),
             "WYE_LOG_LEVEL=error " WYE_BIN " agent run forecaster '#stub tools=1' --dir " E2E_DIR
             " --upstream http://127.0.0.1:%d/v1 --upstream-model stub-model --no-local --json "
             "2>/dev/null",
             stub_upstream_port(s));
    char *out = run_cmd(cmd, &st);
    /* the stub never stops asking for the tool: the run ends at max_steps */
    if (!strstr(out, "max_steps (2) reached")) {
        fail_msg("wye agent run printed '%s' (exit %d)", out, st);
    }
    assert_int_equal(st, 1);
    assert_non_null(strstr(out, "\"stopped\":\"stopped: max_steps (2) reached\""));
    assert_non_null(strstr(out, "\"steps\":2"));
    /* --json reports the tokens, cost and route of every model call */
    cJSON *j = cJSON_Parse(out);
    assert_non_null(j);
    const cJSON *tok = cJSON_GetObjectItemCaseSensitive(j, "tokens");
    assert_true(cJSON_GetObjectItemCaseSensitive(tok, "prompt")->valuedouble > 0);
    assert_true(cJSON_GetObjectItemCaseSensitive(tok, "completion")->valuedouble > 0);
    const cJSON *calls = cJSON_GetObjectItemCaseSensitive(j, "calls");
    assert_int_equal(cJSON_GetArraySize(calls), 2);
    const cJSON *c0 = cJSON_GetArrayItem(calls, 0);
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(c0, "route")->valuestring, "remote");
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(c0, "model")->valuestring, "stub-model");
    double sum =
        cJSON_GetObjectItemCaseSensitive(c0, "cost_usd")->valuedouble +
        cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(calls, 1), "cost_usd")->valuedouble;
    assert_true(sum > 0);
    assert_float_equal(cJSON_GetObjectItemCaseSensitive(j, "cost_usd")->valuedouble, sum, 1e-12);
    assert_non_null(cJSON_GetObjectItemCaseSensitive(j, "saving_usd"));
    cJSON_Delete(j);
    free(out);
    assert_int_equal(stub_upstream_requests(s), 2);
    /* the second request carried the assistant's tool call and the tool's result */
    char *body = stub_upstream_last_body(s);
    assert_non_null(body);
    assert_non_null(strstr(body, "\"tool_calls\":[{\"id\":\"call_stub_0\""));
    assert_non_null(strstr(body, "\"role\":\"tool\",\"tool_call_id\":\"call_stub_0\","
                                 "\"content\":\"sunny in Paris\""));
    assert_non_null(strstr(body, "\"tools\":[{\"type\":\"function\""));
    free(body);

    /* a plain answer: printed on stdout, exit 0 */
    snprintf(cmd, sizeof(cmd),
             "WYE_LOG_LEVEL=error " WYE_BIN " agent run forecaster 'hello big world' --dir " E2E_DIR
             " --upstream http://127.0.0.1:%d/v1 --upstream-model stub-model --no-local "
             "2>/dev/null",
             stub_upstream_port(s));
    out = run_cmd(cmd, &st);
    assert_int_equal(st, 0);
    assert_string_equal(out, "hello big world\n");
    free(out);
    snprintf(cmd, sizeof(cmd),
             WYE_BIN " agent run nobody hi --dir " E2E_DIR
                     " --upstream http://127.0.0.1:%d/v1 --upstream-model stub-model "
                     "--no-local 2>&1",
             stub_upstream_port(s));
    out = run_cmd(cmd, &st);
    assert_int_equal(st, 1);
    assert_non_null(strstr(out, "no agent or workflow named 'nobody'"));
    free(out);
    stub_upstream_stop(s);
}

/* CLI runs are in the ledger like served requests (ledger summary names the agent), unless
 * --no-ledger. */
static void test_cli_ledger(void **state)
{
    (void)state;
    struct stub_upstream *s = stub_upstream_start();
    assert_non_null(s);
    char cmd[1024];
    int st = 0;
    unlink(ledger_path);
    snprintf(cmd, sizeof(cmd),
             "WYE_LOG_LEVEL=error " WYE_BIN " agent run forecaster 'hello there' --dir " E2E_DIR
             " --upstream http://127.0.0.1:%d/v1 --upstream-model stub-model --no-ledger "
             "--no-local "
             "2>/dev/null",
             stub_upstream_port(s));
    char *out = run_cmd(cmd, &st);
    assert_int_equal(st, 0);
    free(out);
    assert_int_not_equal(access(ledger_path, F_OK), 0); /* --no-ledger wrote nothing */
    snprintf(cmd, sizeof(cmd),
             "WYE_LOG_LEVEL=error " WYE_BIN " agent run forecaster 'hello there' --dir " E2E_DIR
             " --upstream http://127.0.0.1:%d/v1 --upstream-model stub-model --no-local "
             "2>/dev/null",
             stub_upstream_port(s));
    out = run_cmd(cmd, &st);
    assert_int_equal(st, 0);
    free(out);
    stub_upstream_stop(s);
    out = run_cmd(WYE_BIN " ledger summary --by agent --json 2>&1", &st);
    if (st != 0 || !strstr(out, "\"forecaster\"")) {
        fail_msg("wye ledger summary printed '%s' (exit %d)", out, st);
    }
    free(out);
    char verify[sizeof(ledger_path) + 64];
    snprintf(verify, sizeof(verify), WYE_BIN " ledger verify %s 2>&1", ledger_path);
    out = run_cmd(verify, &st);
    if (st != 0) {
        fail_msg("wye ledger verify printed '%s' (exit %d)", out, st);
    }
    free(out);
}

/* The local route: the tools are rendered in the local model's text format and its answer is
 * parsed as such (the tiny story model writes no call, so its text is the final answer). */
static void test_cli_local_model(void **state)
{
    (void)state;
    const char *model = WYE_SHARED_DIR "/models/stories260K-q8_0.gguf";
    if (access(model, R_OK) != 0) {
        skip();
    }
    char cmd[1024];
    int st = 0;
    snprintf(cmd, sizeof(cmd),
             "WYE_LOG_LEVEL=error " WYE_BIN
             " agent run forecaster 'Once upon a time' --dir " E2E_DIR
             " --model %s --json 2>/dev/null",
             model);
    char *out = run_cmd(cmd, &st);
    if (st != 0 || !strstr(out, "\"steps\":1")) {
        fail_msg("wye agent run on the local model printed '%s' (exit %d)", out, st);
    }
    assert_non_null(strstr(out, "\"answer\":\""));
    assert_non_null(strstr(out, "\"cost_usd\":0"));
    /* a local answer saves what prices.default_remote would have charged */
    cJSON *j = cJSON_Parse(out);
    assert_non_null(j);
    assert_true(cJSON_GetObjectItemCaseSensitive(j, "saving_usd")->valuedouble > 0);
    const cJSON *c0 = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(j, "calls"), 0);
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(c0, "route")->valuestring, "local");
    cJSON_Delete(j);
    free(out);
}

static void cleanup_tmp(void)
{
    char path[sizeof(ledger_path) + 16];
    unlink(ledger_path);
    snprintf(path, sizeof(path), "%s.key", ledger_path);
    unlink(path);
    rmdir(tmp_dir);
}

int main(void)
{
    if (!mkdtemp(tmp_dir)) {
        return 1;
    }
    snprintf(ledger_path, sizeof(ledger_path), "%s/ledger.jsonl", tmp_dir);
    setenv("WYE_LEDGER", ledger_path, 1);
    unsetenv("WYE_LEDGER_KEY");
    atexit(cleanup_tmp);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cli_list),
        cmocka_unit_test(test_stub_tool_loop),
        cmocka_unit_test(test_cli_ledger),
        cmocka_unit_test(test_cli_local_model),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
