/* Agent runs under API keys, end to end: `wye serve` (a child process) with three keys, the
 * stories260K local model, the scripted upstream (tests/agents/agent_test_server.c) and a
 * ledger. A run started over HTTP (POST /v1/agents/{name}/runs, Bearer key) or WebSocket
 * (agent.run on a connection authenticated with the wye.key.<key> subprotocol) acts for that
 * key: a local-only key's "auto" calls stay local even for a hard prompt and its remote calls
 * are refused naming the key, a key with a $0 remote budget is refused remote calls, each
 * model call takes a request from the key's rate limit, an unrestricted key reaches the
 * upstream, and after shutdown every ledger record of an agent's
 * model call names the key it ran for. */
/* cmocka.h needs these first. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cJSON.h>
#include <cmocka.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/alloc.h"
#include "common/clock.h"
#include "common/crypto.h"
#include "tests/agents/agent_test_server.h"
#include "tests/gateway/gw_json.h"
#include "tests/gateway/http_client.h"
#include "tests/gateway/ws_client.h"

#define T_MS 30000
#define LEDGER_KEY "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"
#define K_LOCAL "wye_localonlyAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
#define K_BROKE "wye_brokeBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB"
#define K_RICH "wye_richCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCC"
#define K_SLOW "wye_slowDDDDDDDDDDDDDDDDDDDDDDDDDDDDDDDDDDDDDDDD" /* rpm 2 */
#define HARD                                                                                       \
    "Prove step by step that the sum of the first n odd numbers equals n^2, then write a "         \
    "Python function that computes the integral of f(x) = 3x^2 + 2x - 5 from 0 to 10 using "       \
    "Simpson's rule with 1000 intervals, explain the algorithm's complexity, derive the error "    \
    "bound, and compare the approach with Gaussian quadrature, justifying each step."

static const char AGENTS_LUA[] =
    "workflow('ask', function(ctx, input)\n"
    "  local ok, r = pcall(function()\n"
    "    return ctx:chat{model = input.model, prompt = input.prompt, max_tokens = 4}\n"
    "  end)\n"
    "  if not ok then return {error = tostring(r)} end\n"
    "  return {route = r.route, model = r.model}\n"
    "end)\n"
    "agent { name = 'remote_helper', system = 'You help.', model = 'remote', max_steps = 2 }\n"
    "workflow('twice', function(ctx, input)\n"
    "  local a = ctx:chat{model = 'local', prompt = 'hi', max_tokens = 2}\n"
    "  local ok, r = pcall(function()\n"
    "    return ctx:chat{model = 'local', prompt = 'hi', max_tokens = 2}\n"
    "  end)\n"
    "  return {first = a.route, second = ok and r.route or tostring(r)}\n"
    "end)\n";

struct srv {
    pid_t pid;
    int port;
    char dir[512], ledger[600], log[600], conf[600], agents[600];
    struct ats *up;
};

static struct srv S;

static void hex_sha256(const char *key, char out[65])
{
    uint8_t h[WYE_SHA256_LEN];
    wye_sha256(key, strlen(key), h);
    for (int i = 0; i < WYE_SHA256_LEN; i++) {
        snprintf(out + 2 * i, 3, "%02x", h[i]);
    }
}

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    assert_true(fputs(text, f) >= 0);
    assert_int_equal(fclose(f), 0);
}

static int setup(void **state)
{
    (void)state;
    memset(&S, 0, sizeof(S));
    snprintf(S.dir, sizeof(S.dir), "%s/gw_agent_keys_XXXXXX", WYE_BINARY_DIR);
    assert_non_null(mkdtemp(S.dir));
    snprintf(S.ledger, sizeof(S.ledger), "%s/ledger.jsonl", S.dir);
    snprintf(S.log, sizeof(S.log), "%s/serve.log", S.dir);
    snprintf(S.conf, sizeof(S.conf), "%s/wye.lua", S.dir);
    snprintf(S.agents, sizeof(S.agents), "%s/agents", S.dir);
    assert_int_equal(mkdir(S.agents, 0700), 0);
    char path[700];
    snprintf(path, sizeof(path), "%s/keyed.lua", S.agents);
    write_file(path, AGENTS_LUA);
    S.up = ats_start();
    assert_non_null(S.up);
    char hl[65], hb[65], hr[65], hs[65];
    hex_sha256(K_LOCAL, hl);
    hex_sha256(K_BROKE, hb);
    hex_sha256(K_RICH, hr);
    hex_sha256(K_SLOW, hs);
    FILE *f = fopen(S.conf, "w");
    assert_non_null(f);
    fprintf(f,
            "return {\n"
            "  listen = \"127.0.0.1:0\",\n"
            "  upstream = { base_url = \"http://127.0.0.1:%d/v1\", model = \"scripted\",\n"
            "               max_retries = 0 },\n"
            "  engine = { model = \"%s/models/stories260K-q8_0.gguf\", model_name = \"tiny\",\n"
            "             threads = 1, ctx = 512, sequences = 2 },\n"
            "  ledger = { path = \"%s\", fsync = \"always\" },\n"
            "  prices = { default_remote = { input_per_1m = 1, output_per_1m = 2 } },\n"
            "  keys = {\n"
            "    { name = \"localonly\", sha256 = \"%s\", routes = { \"local\" } },\n"
            "    { name = \"broke\", sha256 = \"%s\", budget_usd_day = 0,\n"
            "      over_budget = \"refuse\" },\n"
            "    { name = \"rich\", sha256 = \"%s\" },\n"
            "    { name = \"slow\", sha256 = \"%s\", rpm = 2 },\n"
            "  },\n"
            "}\n",
            ats_port(S.up), WYE_SHARED_DIR, S.ledger, hl, hb, hr, hs);
    assert_int_equal(fclose(f), 0);

    S.pid = fork();
    assert_true(S.pid >= 0);
    if (S.pid == 0) {
        int fd = open(S.log, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        if (fd >= 0) {
            dup2(fd, 2);
            dup2(fd, 1);
        }
        setenv("WYE_LEDGER_KEY", LEDGER_KEY, 1);
        setenv("WYE_LOG", "info", 1);
        char bin[700];
        snprintf(bin, sizeof(bin), "%s/wye", WYE_BINARY_DIR);
        execl(bin, bin, "serve", "-c", S.conf, "--agents", S.agents, (char *)NULL);
        _exit(127);
    }
    int64_t deadline = wye_now_ns() + (int64_t)T_MS * 1000000;
    static const char pre[] = "listening on http://127.0.0.1:";
    while (!S.port && wye_now_ns() < deadline) {
        FILE *lf = fopen(S.log, "r");
        char line[1024];
        while (lf && fgets(line, sizeof(line), lf)) {
            const char *l = strstr(line, pre);
            if (l) {
                S.port = atoi(l + strlen(pre));
            }
        }
        if (lf) {
            fclose(lf);
        }
        if (!S.port) {
            if (waitpid(S.pid, NULL, WNOHANG) == S.pid) {
                break;
            }
            wye_sleep_ms(20);
        }
    }
    if (!S.port) {
        kill(S.pid, SIGKILL);
        waitpid(S.pid, NULL, 0);
        fail_msg("wye serve did not start; see %s", S.log);
    }
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    if (S.pid > 0) {
        kill(S.pid, SIGKILL);
        waitpid(S.pid, NULL, 0);
    }
    ats_stop(S.up);
    char cmd[1200];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", S.dir);
    if (system(cmd) != 0) {
        fprintf(stderr, "cannot remove %s\n", S.dir);
    }
    return 0;
}

/* POST /v1/agents/{name}/runs for key with the workflow's input {model, prompt}; returns the
 * workflow's result object (caller deletes). */
static cJSON *http_run(const char *key, const char *name, const char *model, const char *prompt)
{
    cJSON *in = cJSON_CreateObject();
    cJSON_AddStringToObject(in, "model", model);
    cJSON_AddStringToObject(in, "prompt", prompt);
    char *ins = cJSON_PrintUnformatted(in);
    cJSON_Delete(in);
    cJSON *body = cJSON_CreateObject();
    cJSON_AddStringToObject(body, "input", ins);
    free(ins);
    char *b = cJSON_PrintUnformatted(body);
    cJSON_Delete(body);
    char extra[256];
    snprintf(extra, sizeof(extra), "Authorization: Bearer %s\r\nContent-Type: application/json\r\n",
             key);
    struct hc_resp r;
    hc_resp_init(&r);
    char path[128];
    snprintf(path, sizeof(path), "/v1/agents/%s/runs", name);
    int st = hc_request(S.port, "POST", path, b, extra, &r, T_MS);
    free(b);
    if (st != 200) {
        fail_msg("status %d: %s", st, r.body.data ? r.body.data : "");
    }
    cJSON *done = cJSON_Parse(r.body.data);
    hc_resp_cleanup(&r);
    assert_string_equal(gwj_str(done, "status"), "completed");
    cJSON *out = cJSON_Parse(gwj_str(done, "output"));
    if (!cJSON_IsObject(out)) {
        fail_msg("output '%s' is not an object", gwj_str(done, "output"));
    }
    cJSON_Delete(done);
    return out;
}

static cJSON *http_ask(const char *key, const char *model, const char *prompt)
{
    return http_run(key, "ask", model, prompt);
}

static void test_http_local_only_key(void **state)
{
    (void)state;
    long before = ats_chat_requests(S.up);
    /* "auto" on a hard prompt would go remote; this key may only use the local route */
    cJSON *o = http_ask(K_LOCAL, "auto", HARD);
    assert_string_equal(gwj_str(o, "error"), "");
    assert_string_equal(gwj_str(o, "route"), "local");
    cJSON_Delete(o);
    o = http_ask(K_LOCAL, "remote", "hello");
    if (!strstr(gwj_str(o, "error"), "API key 'localonly' may not use the remote route")) {
        fail_msg("error '%s' does not name the key's route limit", gwj_str(o, "error"));
    }
    cJSON_Delete(o);
    assert_int_equal(ats_chat_requests(S.up), before);
}

/* The same refusal for a plain chat request: the key is valid but its routes do not include
 * the one asked for, so 403 (not 401, which would tell the client its key is wrong), in
 * OpenAI's error shape, naming the key and the route; the upstream never sees the request. */
static void test_http_route_denied_is_403(void **state)
{
    (void)state;
    long before = ats_chat_requests(S.up);
    char extra[256];
    snprintf(extra, sizeof(extra), "Authorization: Bearer %s\r\nContent-Type: application/json\r\n",
             K_LOCAL);
    struct hc_resp r;
    hc_resp_init(&r);
    int st =
        hc_request(S.port, "POST", "/v1/chat/completions",
                   "{\"model\":\"scripted\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}",
                   extra, &r, T_MS);
    assert_int_equal(st, 403);
    cJSON *o = cJSON_Parse(r.body.data);
    const cJSON *e = cJSON_GetObjectItemCaseSensitive(o, "error");
    assert_string_equal(gwj_str(e, "type"), "permission_error");
    assert_string_equal(gwj_str(e, "code"), "permission_denied");
    if (!strstr(gwj_str(e, "message"), "API key 'localonly' may not use the remote route")) {
        fail_msg("error '%s' does not name the key's route limit", gwj_str(e, "message"));
    }
    cJSON_Delete(o);
    hc_resp_cleanup(&r);
    assert_int_equal(ats_chat_requests(S.up), before);
}

static void test_http_zero_budget_key(void **state)
{
    (void)state;
    long before = ats_chat_requests(S.up);
    cJSON *o = http_ask(K_BROKE, "remote", "hello");
    if (!strstr(gwj_str(o, "error"), "API key 'broke' has spent its remote budget")) {
        fail_msg("error '%s' does not name the key's budget", gwj_str(o, "error"));
    }
    cJSON_Delete(o);
    assert_int_equal(ats_chat_requests(S.up), before);
    /* the same run for an unrestricted key reaches the upstream */
    o = http_ask(K_RICH, "remote", "hello");
    assert_string_equal(gwj_str(o, "error"), "");
    assert_string_equal(gwj_str(o, "route"), "remote");
    cJSON_Delete(o);
    assert_int_equal(ats_chat_requests(S.up), before + 1);
}

/* Each model call of a run takes a request from the key's rate limit: with rpm 2, the run
 * itself takes one, its first call the other, and its second call is refused. */
static void test_http_rate_limited_key(void **state)
{
    (void)state;
    cJSON *o = http_run(K_SLOW, "twice", "local", "hi");
    assert_string_equal(gwj_str(o, "first"), "local");
    if (!strstr(gwj_str(o, "second"), "rate limit of slow exceeded; retry after")) {
        fail_msg("second call '%s' was not refused by the key's rate limit", gwj_str(o, "second"));
    }
    cJSON_Delete(o);
}

/* agent.run on a WebSocket authenticated as key: returns the agent.done event. */
static cJSON *ws_run(const char *key, const char *name, const char *input)
{
    struct wsc c;
    char proto[128];
    snprintf(proto, sizeof(proto), "wye.v1, wye.key.%s", key);
    assert_int_equal(wsc_connect(&c, S.port, "/v1/ws", proto, 0, T_MS), 101);
    cJSON *ev = cJSON_CreateObject();
    cJSON_AddStringToObject(ev, "type", "agent.run");
    cJSON_AddStringToObject(ev, "id", "r1");
    cJSON_AddStringToObject(ev, "name", name);
    cJSON_AddStringToObject(ev, "input", input);
    char *s = cJSON_PrintUnformatted(ev);
    cJSON_Delete(ev);
    assert_true(wsc_send_text(&c, s));
    free(s);
    cJSON *done = NULL;
    int64_t deadline = wye_now_ns() + (int64_t)T_MS * 1000000;
    while (!done && wye_now_ns() < deadline) {
        char *m = NULL;
        int op = wsc_recv(&c, &m, NULL, NULL, T_MS);
        if (op != WSC_TEXT) {
            wye_free(m);
            break;
        }
        cJSON *j = cJSON_Parse(m);
        wye_free(m);
        const char *type = gwj_str(j, "type");
        if (strcmp(type, "agent.done") == 0 || strcmp(type, "error") == 0) {
            done = j;
        } else {
            cJSON_Delete(j);
        }
    }
    wsc_close(&c);
    if (!done) {
        fail_msg("no agent.done for %s", name);
    }
    return done;
}

static void test_ws_local_only_key(void **state)
{
    (void)state;
    long before = ats_chat_requests(S.up);
    cJSON *d = ws_run(K_LOCAL, "remote_helper", "hello");
    assert_string_equal(gwj_str(d, "type"), "agent.done");
    assert_string_equal(gwj_str(d, "status"), "failed");
    if (!strstr(gwj_str(d, "error"), "API key 'localonly' may not use the remote route")) {
        fail_msg("error '%s' does not name the key's route limit", gwj_str(d, "error"));
    }
    cJSON_Delete(d);
    char in[600];
    snprintf(in, sizeof(in), "{\"model\":\"auto\",\"prompt\":\"%s\"}", HARD);
    d = ws_run(K_LOCAL, "ask", in);
    assert_string_equal(gwj_str(d, "status"), "completed");
    cJSON *o = cJSON_Parse(gwj_str(d, "output"));
    assert_string_equal(gwj_str(o, "route"), "local");
    cJSON_Delete(o);
    cJSON_Delete(d);
    assert_int_equal(ats_chat_requests(S.up), before);
    /* the unrestricted key over WebSocket reaches the upstream */
    d = ws_run(K_RICH, "remote_helper", "hello");
    assert_string_equal(gwj_str(d, "status"), "completed");
    cJSON_Delete(d);
    assert_int_equal(ats_chat_requests(S.up), before + 1);
}

/* After a clean shutdown, every model call of an agent run is in the ledger with its key. */
static void test_ledger_names_keys(void **state)
{
    (void)state;
    kill(S.pid, SIGTERM);
    int st = 0;
    int64_t deadline = wye_now_ns() + (int64_t)T_MS * 1000000;
    while (waitpid(S.pid, &st, WNOHANG) != S.pid) {
        if (wye_now_ns() > deadline) {
            fail_msg("wye serve did not stop");
        }
        wye_sleep_ms(10);
    }
    S.pid = 0;
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    FILE *f = fopen(S.ledger, "r");
    assert_non_null(f);
    char line[16384];
    int n_agent = 0, local_local = 0, rich_remote = 0, slow_local = 0;
    while (fgets(line, sizeof(line), f)) {
        cJSON *r = cJSON_Parse(line);
        const char *agent = gwj_str(r, "agent");
        if (agent[0]) {
            n_agent++;
            const char *key = gwj_str(r, "key");
            if (!key[0]) {
                fail_msg("a model call of agent '%s' has no key in the ledger: %s", agent, line);
            }
            local_local +=
                strcmp(key, "localonly") == 0 && strcmp(gwj_str(r, "route"), "local") == 0;
            rich_remote += strcmp(key, "rich") == 0 && strcmp(gwj_str(r, "route"), "remote") == 0;
            slow_local += strcmp(key, "slow") == 0 && strcmp(gwj_str(r, "route"), "local") == 0;
            assert_true(strcmp(key, "broke") != 0); /* refused before any model answered */
        }
        cJSON_Delete(r);
    }
    fclose(f);
    assert_int_equal(local_local, 2); /* the two "auto" runs of the local-only key */
    assert_int_equal(rich_remote, 2); /* one over HTTP, one over WebSocket */
    assert_int_equal(slow_local, 1);  /* the rate-limited key's one call that went through */
    assert_int_equal(n_agent, 5);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_http_local_only_key),
        cmocka_unit_test(test_http_route_denied_is_403),
        cmocka_unit_test(test_http_zero_budget_key),
        cmocka_unit_test(test_http_rate_limited_key),
        cmocka_unit_test(test_ws_local_only_key),
        cmocka_unit_test(test_ledger_names_keys),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
