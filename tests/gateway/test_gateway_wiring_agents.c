/* Agents through `wye serve` (the built binary, a child process) with the stories260K local
 * model and the agents' scripted upstream (tests/agents/agent_test_server.c), three agent
 * workers and --agents holding lua/examples/triage.lua and tests/gateway/scripts_wiring/:
 * - the triage workflow over HTTP (POST /v1/agents/triage/runs) on a hard ticket (over 400
 *   characters): agent.done lists its model calls in order, the classification on the local
 *   route (stories260K, under the json_schema constraint) and the escalation on the remote one
 *   (the scripted upstream's "Reply: ..." answer), and the result says it escalated;
 * - hostile workflows over one WebSocket (an endless loop, a memory bomb, a long grind): while
 *   they run, POST /v1/chat/completions keeps answering locally and remotely; the loop and the
 *   bomb end "failed" naming the instruction and memory limits; the grind is still running
 *   after the chats and ends "cancelled" on agent.cancel; then well-behaved runs complete on
 *   every worker, chats still answer, and the server exits cleanly on SIGTERM. */
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

#include "common/alloc.h"
#include "common/clock.h"
#include "tests/agents/agent_test_server.h"
#include "tests/gateway/gw_json.h"
#include "tests/gateway/http_client.h"
#include "tests/gateway/test_gateway_wiring_util.h"
#include "tests/gateway/ws_client.h"

#define HARD_TICKET                                                                                \
    "Since the upgrade last week our nightly export job fails with a timeout after exactly 30 "    \
    "seconds, but only for accounts with more than ten thousand orders. The retry queue then "     \
    "fills up, the webhook deliveries to our warehouse are delayed by hours, and the billing "     \
    "report for those accounts shows every order twice. We already rotated the API token and "     \
    "raised the client timeout. What changed on your side and how do we fix it?"
#define HIGH_PROMPT                                                                                \
    "Prove step by step that the sum of the first n odd numbers equals n^2, then write a "         \
    "Python function that computes the integral of f(x) = 3x^2 + 2x - 5 from 0 to 10 using "       \
    "Simpson's rule with 1000 intervals, explain the algorithm's complexity, derive the error "    \
    "bound, and compare the approach with Gaussian quadrature, justifying each step."

static cJSON *done_of[26]; /* agent.done events read but not yet asked for */

static struct {
    struct ww_serve srv;
    struct ats *up;
    char dir[512], conf[600], ledger[600], log[600], agents[600];
} S;

static int setup(void **state)
{
    (void)state;
    memset(&S, 0, sizeof(S));
    ww_tmpdir(S.dir, sizeof(S.dir), "gw_wiring_agents");
    snprintf(S.conf, sizeof(S.conf), "%s/wye.lua", S.dir);
    snprintf(S.ledger, sizeof(S.ledger), "%s/ledger.jsonl", S.dir);
    snprintf(S.log, sizeof(S.log), "%s/serve.log", S.dir);
    snprintf(S.agents, sizeof(S.agents), "%s/agents", S.dir);
    assert_int_equal(mkdir(S.agents, 0700), 0);
    char dst[700];
    snprintf(dst, sizeof(dst), "%s/triage.lua", S.agents);
    ww_copy_file(WYE_SOURCE_DIR "/lua/examples/triage.lua", dst);
    snprintf(dst, sizeof(dst), "%s/hostile.lua", S.agents);
    ww_copy_file(WYE_SOURCE_DIR "/tests/gateway/scripts_wiring/hostile.lua", dst);
    S.up = ats_start();
    assert_non_null(S.up);
    char text[2048];
    snprintf(text, sizeof(text),
             "return {\n"
             "  listen = \"127.0.0.1:0\",\n"
             "  upstream = { base_url = \"http://127.0.0.1:%d/v1\", model = \"scripted\",\n"
             "               max_retries = 0 },\n"
             "  engine = { model = \"%s/models/stories260K-q8_0.gguf\", model_name = \"tiny\",\n"
             "             threads = 1, ctx = 512, sequences = 2 },\n"
             "  ledger = { path = \"%s\", fsync = \"always\" },\n"
             "  router = { threshold = 0.5 },\n"
             "}\n",
             ats_port(S.up), WYE_SHARED_DIR, S.ledger);
    ww_write_file(S.conf, text);
    const char *env[] = {"WYE_AGENT_WORKERS=3", NULL};
    const char *args[] = {"-c", S.conf, "--agents", S.agents, NULL};
    ww_serve_start(&S.srv, NULL, S.log, env, args);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    ww_serve_stop(&S.srv, SIGKILL);
    for (int i = 0; i < 26; i++) {
        cJSON_Delete(done_of[i]);
        done_of[i] = NULL;
    }
    ats_stop(S.up);
    ww_rmdir(S.dir);
    return 0;
}

/* POST /v1/agents/{name}/runs with input; returns the agent.done object (caller deletes). */
static cJSON *http_run(const char *name, const char *input)
{
    cJSON *body = cJSON_CreateObject();
    cJSON_AddStringToObject(body, "input", input);
    char *b = cJSON_PrintUnformatted(body);
    cJSON_Delete(body);
    char path[128];
    snprintf(path, sizeof(path), "/v1/agents/%s/runs", name);
    struct hc_resp r;
    hc_resp_init(&r);
    int st =
        hc_request(S.srv.port, "POST", path, b, "Content-Type: application/json\r\n", &r, WW_T_MS);
    free(b);
    if (st != 200) {
        fail_msg("%s: status %d: %s", name, st, r.body.data ? r.body.data : "");
    }
    cJSON *done = cJSON_Parse(r.body.data);
    hc_resp_cleanup(&r);
    assert_non_null(done);
    return done;
}

static void test_triage_local_then_remote(void **state)
{
    (void)state;
    long before = ats_chat_requests(S.up);
    assert_true(strlen(HARD_TICKET) > 400); /* the workflow escalates such tickets */
    cJSON *done = http_run("triage", HARD_TICKET);
    if (strcmp(gwj_str(done, "status"), "completed") != 0) {
        char *t = cJSON_PrintUnformatted(done);
        fail_msg("triage did not complete: %s", t);
    }
    const cJSON *calls = cJSON_GetObjectItemCaseSensitive(done, "calls");
    assert_true(cJSON_IsArray(calls));
    assert_int_equal(cJSON_GetArraySize(calls), 2);
    const cJSON *c0 = cJSON_GetArrayItem(calls, 0), *c1 = cJSON_GetArrayItem(calls, 1);
    assert_string_equal(gwj_str(c0, "route"), "local");
    assert_string_equal(gwj_str(c0, "model"), "tiny");
    assert_string_equal(gwj_str(c1, "route"), "remote");
    assert_string_equal(gwj_str(c1, "model"), "scripted");
    assert_int_equal(ats_chat_requests(S.up), before + 1); /* only the escalation went out */
    cJSON *out = cJSON_Parse(gwj_str(done, "output"));
    if (!cJSON_IsObject(out)) {
        fail_msg("output '%s' is not an object", gwj_str(done, "output"));
    }
    assert_true(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(out, "escalated")));
    assert_string_equal(gwj_str(out, "difficulty"), "hard");
    /* the scripted upstream's answer to the ticket */
    assert_true(strncmp(gwj_str(out, "answer"), "Reply: Since the upgrade", 24) == 0);
    cJSON_Delete(out);
    cJSON_Delete(done);
}

/* One chat over HTTP; checks 200, the route and a non-empty answer. */
static void chat_ok(const char *prompt, const char *want_route)
{
    char req[2048], route[32] = "";
    snprintf(req, sizeof(req),
             "{\"model\":\"auto\",\"max_tokens\":8,\"messages\":[{\"role\":\"user\","
             "\"content\":\"%s\"}]}",
             prompt);
    struct hc_resp r;
    hc_resp_init(&r);
    int st = hc_request(S.srv.port, "POST", "/v1/chat/completions", req,
                        "Content-Type: application/json\r\n", &r, WW_T_MS);
    hc_header(&r, "x-wye-route", route, sizeof(route));
    if (st != 200) {
        fail_msg("chat: status %d: %s", st, r.body.data ? r.body.data : "");
    }
    assert_string_equal(route, want_route);
    cJSON *j = cJSON_Parse(r.body.data);
    const cJSON *ch = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(j, "choices"), 0);
    const cJSON *msg = cJSON_GetObjectItemCaseSensitive(ch, "message");
    assert_true(strlen(gwj_str(msg, "content")) > 0);
    cJSON_Delete(j);
    hc_resp_cleanup(&r);
}

static void ws_send(struct wsc *c, const char *type, const char *id, const char *name)
{
    cJSON *ev = cJSON_CreateObject();
    cJSON_AddStringToObject(ev, "type", type);
    cJSON_AddStringToObject(ev, "id", id);
    if (name) {
        cJSON_AddStringToObject(ev, "name", name);
        cJSON_AddStringToObject(ev, "input", "go");
    }
    char *s = cJSON_PrintUnformatted(ev);
    cJSON_Delete(ev);
    assert_true(wsc_send_text(c, s));
    free(s);
}

/* Reads events until agent.done (or error) for id; returns it (caller deletes). Other runs'
 * agent.done events are kept in done_of[] by their id's first letter (a..z). */
static cJSON *ws_wait_done(struct wsc *c, const char *id)
{
    int k = id[0] - 'a';
    int64_t deadline = wye_now_ns() + (int64_t)WW_T_MS * 1000000;
    while (!done_of[k] && wye_now_ns() < deadline) {
        char *m = NULL;
        int op = wsc_recv(c, &m, NULL, NULL, WW_T_MS);
        if (op == WSC_PING || op == WSC_PONG) {
            wye_free(m);
            continue;
        }
        if (op != WSC_TEXT) {
            wye_free(m);
            fail_msg("the WebSocket ended (op %d) waiting for %s", op, id);
        }
        cJSON *j = cJSON_Parse(m);
        wye_free(m);
        const char *type = gwj_str(j, "type");
        const char *jid = gwj_str(j, "id");
        if ((strcmp(type, "agent.done") == 0 || strcmp(type, "error") == 0) && jid[0] >= 'a' &&
            jid[0] <= 'z') {
            done_of[jid[0] - 'a'] = j;
        } else {
            cJSON_Delete(j);
        }
    }
    if (!done_of[k]) {
        fail_msg("no agent.done for %s", id);
    }
    cJSON *d = done_of[k];
    done_of[k] = NULL;
    return d;
}

static void expect_failed(cJSON *d, const char *id, const char *limit)
{
    if (strcmp(gwj_str(d, "type"), "agent.done") != 0 ||
        strcmp(gwj_str(d, "status"), "failed") != 0 || !strstr(gwj_str(d, "error"), limit)) {
        char *t = cJSON_PrintUnformatted(d);
        fail_msg("%s: expected a failure naming '%s': %s", id, limit, t);
    }
}

static void test_hostile_runs_while_chats_answer(void **state)
{
    (void)state;
    struct wsc c;
    assert_int_equal(wsc_connect(&c, S.srv.port, "/v1/ws", "wye.v1", 0, WW_T_MS), 101);
    /* one worker each (the fewest runs first) */
    ws_send(&c, "agent.run", "grind", "grind");
    ws_send(&c, "agent.run", "spin", "spin");
    ws_send(&c, "agent.run", "bomb", "bomb");
    for (int i = 0; i < 3; i++) {
        chat_ok("hi", "local");
        chat_ok(HIGH_PROMPT, "remote");
    }
    cJSON *d = ws_wait_done(&c, "spin");
    expect_failed(d, "spin", "instruction limit");
    cJSON_Delete(d);
    d = ws_wait_done(&c, "bomb");
    expect_failed(d, "bomb", "memory limit");
    cJSON_Delete(d);
    chat_ok("hi", "local");
    chat_ok(HIGH_PROMPT, "remote");
    /* the grind was still running through all of that: cancelled, not ended by a limit */
    assert_null(done_of['g' - 'a']);
    ws_send(&c, "agent.cancel", "grind", NULL);
    d = ws_wait_done(&c, "grind");
    if (strcmp(gwj_str(d, "status"), "cancelled") != 0) {
        char *t = cJSON_PrintUnformatted(d);
        fail_msg("grind: expected cancelled: %s", t);
    }
    cJSON_Delete(d);
    /* every worker takes runs again (three at once: one per worker) */
    ws_send(&c, "agent.run", "h1", "hello");
    ws_send(&c, "agent.run", "h2", "hello");
    ws_send(&c, "agent.run", "h3", "hello");
    for (int i = 0; i < 3; i++) {
        d = ws_wait_done(&c, "h");
        if (strcmp(gwj_str(d, "status"), "completed") != 0 ||
            !strstr(gwj_str(d, "output"), "\"route\":\"local\"")) {
            char *t = cJSON_PrintUnformatted(d);
            fail_msg("hello run: %s", t);
        }
        cJSON_Delete(d);
    }
    wsc_close(&c);
    chat_ok("hi", "local");
    /* the server is alive and well */
    struct hc_resp r;
    hc_resp_init(&r);
    assert_int_equal(hc_request(S.srv.port, "GET", "/healthz", NULL, NULL, &r, WW_T_MS), 200);
    hc_resp_cleanup(&r);
    /* and shuts down cleanly (with sanitizers: no leak or error report at exit) */
    int st = ww_serve_stop(&S.srv, SIGTERM);
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        char *log = ww_read_file(S.log);
        fail_msg("wye serve exited with status %d; its log:\n%s", st, log);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_triage_local_then_remote),
        cmocka_unit_test(test_hostile_runs_while_chats_answer),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
