/* `wye serve` (the built binary, as a child process) routing between stories260K and the stub
 * upstream with a real ledger: "auto" goes local for "hi" and remote for a long multi-step
 * prompt, streamed over HTTP (x-wye-route / x-wye-score headers, [DONE]) and WebSocket
 * (response.done route and score); the records show up in GET /v1/ledger/summary. Then the
 * crash test: several streamed answers complete, others are left in flight, the server is
 * SIGKILLed and restarted on the same ledger, `wye ledger verify` says the chain is intact, and
 * every answer the client saw complete ([DONE] / response.done) is in it. Also response_format
 * json_schema answered by the local model through the gateway. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <cJSON.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/alloc.h"
#include "common/clock.h"
#include "tests/gateway/http_client.h"
#include "tests/gateway/serve_child.h"
#include "tests/gateway/ws_client.h"
#include "tests/stub/stub_upstream.h"

#define T_MS 20000
#define LEDGER_KEY "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"
#define HIGH_PROMPT                                                                                \
    "Prove step by step that the sum of the first n odd numbers equals n^2, then write a "         \
    "Python function that computes the integral of f(x) = 3x^2 + 2x - 5 from 0 to 10 using "       \
    "Simpson's rule with 1000 intervals, explain the algorithm's complexity, derive the error "    \
    "bound, and finally implement a C++ class template with unit tests for matrix "                \
    "multiplication, handling edge cases like empty matrices and overflow. First, analyze the "    \
    "constraints; then compare the approach with Gaussian quadrature and justify each step."

#define BIG_BODY_MAX (4 << 20)
#define BIG_PROMPT_BYTES (3u << 20)

/* more keys of the router table in the next srv_setup's config, each after ", " */
static const char *g_router_extra = "";

struct srv {
    pid_t pid;
    int port;
    char dir[512];
    char ledger[600];
    char log[600];
    char conf[600];
    struct stub_upstream *stub;
};

static void srv_setup(struct srv *s)
{
    memset(s, 0, sizeof(*s));
    snprintf(s->dir, sizeof(s->dir), "%s/gw_routing_XXXXXX", WYE_BINARY_DIR);
    assert_non_null(mkdtemp(s->dir));
    snprintf(s->ledger, sizeof(s->ledger), "%s/ledger.jsonl", s->dir);
    snprintf(s->log, sizeof(s->log), "%s/serve.log", s->dir);
    snprintf(s->conf, sizeof(s->conf), "%s/wye.lua", s->dir);
    s->stub = stub_upstream_start();
    assert_non_null(s->stub);
    FILE *f = fopen(s->conf, "w");
    assert_non_null(f);
    fprintf(
        f,
        "return {\n"
        "  listen = \"127.0.0.1:0\",\n"
        "  upstream = { base_url = \"http://127.0.0.1:%d/v1\", model = \"stub-model\",\n"
        "               max_retries = 0 },\n"
        "  engine = { model = \"%s/models/stories260K-q8_0.gguf\", model_name = \"tiny\",\n"
        "             threads = 1, ctx = 512, sequences = 2 },\n"
        "  ledger = { path = \"%s\", fsync = \"always\" },\n"
        "  prices = { models = { [\"stub-model\"] = { input_per_1m = 10, output_per_1m = 20 } },\n"
        "             default_remote = { input_per_1m = 1, output_per_1m = 2 } },\n"
        "  router = { threshold = 0.5%s },\n"
        "  limits = { body_bytes_max = %d },\n"
        "}\n",
        stub_upstream_port(s->stub), WYE_SHARED_DIR, s->ledger, g_router_extra, BIG_BODY_MAX);
    fclose(f);
}

static void srv_start(struct srv *s)
{
    const char *const env[] = {"WYE_LEDGER_KEY=" LEDGER_KEY, "WYE_LOG=info", NULL};
    s->port = sc_serve_conf(s->conf, s->log, env, T_MS, &s->pid);
    if (!s->port) {
        fail_msg("wye serve did not start; see %s", s->log);
    }
}

static void srv_kill(struct srv *s, int sig)
{
    kill(s->pid, sig);
    int st = 0;
    if (!sc_wait_exit(s->pid, &st, T_MS)) {
        fail_msg("wye serve did not stop");
    }
    if (sig == SIGTERM) {
        assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    }
}

static void srv_teardown(struct srv *s)
{
    stub_upstream_stop(s->stub);
    char cmd[1200];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", s->dir);
    if (system(cmd) != 0) {
        fprintf(stderr, "cannot remove %s\n", s->dir);
    }
}

static char *chat_body(const char *model, const char *content, bool stream, int max_tokens)
{
    char *b = wye_malloc(4096);
    snprintf(b, 4096,
             "{\"model\":\"%s\",\"stream\":%s,\"max_tokens\":%d,"
             "\"messages\":[{\"role\":\"user\",\"content\":\"%s\"}]}",
             model, stream ? "true" : "false", max_tokens, content);
    return b;
}

/* A streamed HTTP chat; returns the status, fills route and the request id. */
static int http_stream(int port, const char *model, const char *content, char *route, char *score,
                       char *reqid, bool *done)
{
    char *b = chat_body(model, content, true, 12);
    struct hc_resp r;
    hc_resp_init(&r);
    int st = hc_request(port, "POST", "/v1/chat/completions", b, NULL, &r, T_MS);
    wye_free(b);
    route[0] = score[0] = reqid[0] = '\0';
    hc_header(&r, "x-wye-route", route, 16);
    hc_header(&r, "x-wye-score", score, 32);
    hc_header(&r, "x-request-id", reqid, 64);
    *done = r.body.data && strstr(r.body.data, "data: [DONE]") != NULL;
    hc_resp_cleanup(&r);
    return st;
}

static bool ledger_has(const char *path, const char *reqid)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        return false;
    }
    char line[8192];
    bool found = false;
    char needle[512];
    snprintf(needle, sizeof(needle), "\"request_id\":\"%s\"", reqid);
    while (!found && fgets(line, sizeof(line), f)) {
        found = strstr(line, needle) != NULL;
    }
    fclose(f);
    return found;
}

/* response_format json_schema on the local model through the gateway: the answer's content
 * is JSON with the schema's required properties; a schema outside the subset is a 400 naming
 * the keyword (not a fallback to the remote model). */
static void response_format_local(int port)
{
    static const char schema_body[] =
        "{\"model\":\"tiny\",\"max_tokens\":64,\"temperature\":0,"
        "\"messages\":[{\"role\":\"user\",\"content\":\"Once upon a time\"}],"
        "\"response_format\":{\"type\":\"json_schema\",\"json_schema\":{\"name\":\"pet\","
        "\"schema\":{\"type\":\"object\",\"properties\":{"
        "\"name\":{\"type\":\"string\",\"maxLength\":10},\"legs\":{\"type\":\"integer\"}},"
        "\"required\":[\"name\",\"legs\"]}}}}";
    struct hc_resp r;
    hc_resp_init(&r);
    assert_int_equal(hc_request(port, "POST", "/v1/chat/completions", schema_body, NULL, &r, T_MS),
                     200);
    char route[16] = "";
    hc_header(&r, "x-wye-route", route, sizeof(route));
    assert_string_equal(route, "local");
    const char *brace = r.body.data ? strchr(r.body.data, '{') : NULL;
    assert_non_null(brace);
    cJSON *j = cJSON_Parse(brace);
    assert_non_null(j);
    const cJSON *msg =
        cJSON_GetObjectItem(cJSON_GetArrayItem(cJSON_GetObjectItem(j, "choices"), 0), "message");
    const char *content = cJSON_GetStringValue(cJSON_GetObjectItem(msg, "content"));
    assert_non_null(content);
    cJSON *v = cJSON_Parse(content);
    if (!cJSON_IsObject(v)) {
        fail_msg("content is not a JSON object: '%s'", content);
    }
    assert_true(cJSON_IsString(cJSON_GetObjectItem(v, "name")));
    assert_true(strlen(cJSON_GetObjectItem(v, "name")->valuestring) <= 10);
    assert_true(cJSON_IsNumber(cJSON_GetObjectItem(v, "legs")));
    cJSON_Delete(v);
    cJSON_Delete(j);
    hc_resp_cleanup(&r);

    static const char bad_body[] =
        "{\"model\":\"tiny\",\"max_tokens\":16,"
        "\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],"
        "\"response_format\":{\"type\":\"json_schema\",\"json_schema\":{\"name\":\"x\","
        "\"schema\":{\"type\":\"string\",\"pattern\":\"^a+$\"}}}}";
    hc_resp_init(&r);
    assert_int_equal(hc_request(port, "POST", "/v1/chat/completions", bad_body, NULL, &r, T_MS),
                     400);
    assert_non_null(r.body.data);
    assert_non_null(strstr(r.body.data, "pattern"));
    hc_resp_cleanup(&r);
}

static void test_auto_http_ws_summary(void **state)
{
    (void)state;
    struct srv s;
    srv_setup(&s);
    srv_start(&s);
    char route[16], score[32], id[64];
    bool done = false;
    assert_int_equal(http_stream(s.port, "auto", "hi", route, score, id, &done), 200);
    assert_string_equal(route, "local");
    assert_true(done);
    assert_true(score[0] && atof(score) < 0.5);
    assert_true(ledger_has(s.ledger, id));
    assert_int_equal(http_stream(s.port, "auto", HIGH_PROMPT, route, score, id, &done), 200);
    assert_string_equal(route, "remote");
    assert_true(done);
    assert_true(atof(score) >= 0.5);
    assert_true(ledger_has(s.ledger, id));

    /* WebSocket: both routes, response.done carries route and score */
    struct wsc c;
    assert_int_equal(wsc_connect(&c, s.port, "/v1/ws", NULL, 0, T_MS), 101);
    assert_true(wsc_send_text(&c, "{\"type\":\"response.create\",\"id\":\"lo\",\"response\":{"
                                  "\"model\":\"auto\",\"max_tokens\":8,"
                                  "\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}}"));
    assert_true(wsc_send_text(&c, "{\"type\":\"response.create\",\"id\":\"hi\",\"response\":{"
                                  "\"model\":\"auto\",\"messages\":[{\"role\":\"user\","
                                  "\"content\":\"" HIGH_PROMPT "\"}]}}"));
    int n_done = 0;
    for (int i = 0; i < 400 && n_done < 2; i++) {
        char *m = NULL;
        assert_int_equal(wsc_recv(&c, &m, NULL, NULL, T_MS), WSC_TEXT);
        cJSON *j = cJSON_Parse(m);
        wye_free(m);
        const char *type = cJSON_GetObjectItem(j, "type")->valuestring;
        if (strcmp(type, "response.done") == 0) {
            const char *cid = cJSON_GetObjectItem(j, "id")->valuestring;
            assert_string_equal(cJSON_GetObjectItem(j, "status")->valuestring, "completed");
            const cJSON *rt = cJSON_GetObjectItem(j, "route");
            const cJSON *sc = cJSON_GetObjectItem(j, "score");
            assert_true(cJSON_IsString(rt) && cJSON_IsNumber(sc));
            assert_string_equal(rt->valuestring, strcmp(cid, "lo") == 0 ? "local" : "remote");
            /* the top contributing features behind the score */
            const cJSON *rs = cJSON_GetObjectItem(j, "reasons");
            assert_true(cJSON_IsArray(rs) && cJSON_GetArraySize(rs) > 0);
            assert_true(cJSON_IsString(cJSON_GetObjectItem(cJSON_GetArrayItem(rs, 0), "feature")));
            n_done++;
        }
        cJSON_Delete(j);
    }
    assert_int_equal(n_done, 2);
    wsc_close(&c);

    /* the summary endpoint */
    struct hc_resp r;
    hc_resp_init(&r);
    assert_int_equal(
        hc_request(s.port, "GET", "/v1/ledger/summary?since=24h&by=route", NULL, NULL, &r, T_MS),
        200);
    cJSON *j = cJSON_Parse(r.body.data);
    assert_non_null(j);
    const cJSON *total = cJSON_GetObjectItem(j, "total");
    assert_int_equal(cJSON_GetObjectItem(total, "requests")->valueint, 4);
    int n_groups = cJSON_GetArraySize(cJSON_GetObjectItem(j, "groups"));
    assert_int_equal(n_groups, 2);
    cJSON_Delete(j);
    hc_resp_cleanup(&r);
    hc_resp_init(&r);
    assert_int_equal(
        hc_request(s.port, "GET", "/v1/ledger/summary?by=nonsense", NULL, NULL, &r, T_MS), 400);
    hc_resp_cleanup(&r);
    /* answered off the lws thread: a request id, no model header, a HEAD with the length and
     * no body, and several summaries at once (one still in flight as its client leaves) */
    hc_resp_init(&r);
    assert_int_equal(
        hc_request(s.port, "GET", "/v1/ledger/summary?since=all&by=model", NULL, NULL, &r, T_MS),
        200);
    char hv[128];
    assert_non_null(hc_header(&r, "x-request-id", hv, sizeof(hv)));
    assert_null(hc_header(&r, "x-wye-model", hv, sizeof(hv)));
    assert_non_null(hc_header(&r, "content-length", hv, sizeof(hv)));
    long long get_len = atoll(hv);
    assert_int_equal((long long)r.body.len, get_len);
    j = cJSON_Parse(r.body.data);
    assert_int_equal(cJSON_GetObjectItem(cJSON_GetObjectItem(j, "total"), "requests")->valueint, 4);
    cJSON_Delete(j);
    hc_resp_cleanup(&r);
    hc_resp_init(&r);
    assert_int_equal(
        hc_request(s.port, "HEAD", "/v1/ledger/summary?since=all&by=model", NULL, NULL, &r, T_MS),
        200);
    assert_non_null(hc_header(&r, "content-length", hv, sizeof(hv)));
    assert_int_equal(atoll(hv), get_len);
    assert_int_equal(r.body.len, 0);
    hc_resp_cleanup(&r);
    int fds[4];
    for (int i = 0; i < 4; i++) {
        fds[i] = hc_connect(s.port, 0);
        assert_true(fds[i] >= 0);
        static const char get[] = "GET /v1/ledger/summary?by=route HTTP/1.1\r\nHost: x\r\n"
                                  "Connection: close\r\n\r\n";
        assert_true(hc_send_all(fds[i], get, sizeof(get) - 1, T_MS));
    }
    close(fds[3]); /* gone before its answer */
    for (int i = 0; i < 3; i++) {
        hc_resp_init(&r);
        assert_int_equal(hc_read_response(fds[i], &r, T_MS), 200);
        assert_non_null(strstr(r.body.data, "\"groups\""));
        hc_resp_cleanup(&r);
        close(fds[i]);
    }
    hc_resp_init(&r);
    assert_int_equal(hc_request(s.port, "GET", "/metrics", NULL, NULL, &r, T_MS), 200);
    assert_non_null(strstr(r.body.data, "wye_route_requests_total{route=\"local\"} 2"));
    assert_non_null(strstr(r.body.data, "wye_route_requests_total{route=\"remote\"} 2"));
    assert_non_null(
        strstr(r.body.data, "wye_cost_usd_total{route=\"remote\",model=\"stub-model\"}"));
    hc_resp_cleanup(&r);
    response_format_local(s.port);
    srv_kill(&s, SIGTERM);
    srv_teardown(&s);
}

/* Sends a streamed request and leaves it in flight; returns the connection. */
static int start_inflight(int port, const char *model, const char *content, int max_tokens)
{
    int fd = hc_connect(port, 0);
    assert_true(fd >= 0);
    char *b = chat_body(model, content, true, max_tokens);
    char req[8192];
    int n = snprintf(req, sizeof(req),
                     "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: "
                     "application/json\r\nContent-Length: %zu\r\n\r\n%s",
                     strlen(b), b);
    wye_free(b);
    assert_true(hc_send_all(fd, req, (size_t)n, T_MS));
    return fd;
}

static void test_crash_keeps_completed(void **state)
{
    (void)state;
    struct srv s;
    srv_setup(&s);
    srv_start(&s);
    char ids[6][64], route[16], score[32];
    const char *prompts[6] = {"hi",        HIGH_PROMPT,    "hello there",
                              "#stub n=4", "tell me more", "#stub n=3 delay_ms=5"};
    const char *models[6] = {"auto", "auto", "tiny", "stub-model", "tiny", "stub-model"};
    for (int i = 0; i < 6; i++) {
        bool done = false;
        assert_int_equal(http_stream(s.port, models[i], prompts[i], route, score, ids[i], &done),
                         200);
        assert_true(done);
        assert_true(ids[i][0] != '\0');
    }
    int fd1 = start_inflight(s.port, "stub-model", "#stub n=100 delay_ms=200", 64);
    int fd2 = start_inflight(s.port, "stub-model", "#stub stall_after=1", 64);
    assert_true(stub_upstream_wait_active(s.stub, 2, T_MS));
    srv_kill(&s, SIGKILL);
    close(fd1);
    close(fd2);

    /* restart on the same ledger: it recovers, keeps appending, and the chain verifies */
    srv_start(&s);
    bool done = false;
    char id7[64];
    assert_int_equal(http_stream(s.port, "auto", "hi", route, score, id7, &done), 200);
    assert_true(done);
    srv_kill(&s, SIGTERM);
    for (int i = 0; i < 6; i++) {
        assert_true(ledger_has(s.ledger, ids[i]));
    }
    assert_true(ledger_has(s.ledger, id7));
    char cmd[2048];
    snprintf(cmd, sizeof(cmd),
             "WYE_LEDGER_KEY=%s '%s/wye' ledger verify '%s' >'%s/verify.out' 2>&1", LEDGER_KEY,
             WYE_BINARY_DIR, s.ledger, s.dir);
    int rc = system(cmd);
    if (rc != 0) {
        snprintf(cmd, sizeof(cmd), "cat '%s/verify.out'", s.dir);
        (void)system(cmd);
    }
    assert_int_equal(rc, 0);
    srv_teardown(&s);
}

/* Polls GET /metrics until it shows line (the chat on fd still being worked on off the lws
 * thread); fails if the chat is answered first, as it would be if the lws thread did that
 * work itself (then no /metrics could be served meanwhile). */
static void metrics_while_unanswered(int port, int fd, const char *line)
{
    bool seen = false;
    int64_t t_end = wye_now_ns() + (int64_t)T_MS * 1000000;
    while (!seen && wye_now_ns() < t_end) {
        struct hc_resp m;
        hc_resp_init(&m);
        assert_int_equal(hc_request(port, "GET", "/metrics", NULL, NULL, &m, T_MS), 200);
        seen = m.body.data && strstr(m.body.data, line);
        hc_resp_cleanup(&m);
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        int answered = poll(&pfd, 1, 0);
        if (!seen && answered > 0) {
            fail_msg("the chat was answered before any /metrics showed '%.*s'",
                     (int)strcspn(line, "\n"), line);
        }
        assert_int_equal(answered, 0);
    }
    assert_true(seen);
}

/* Tokenizing a prompt costs ~1 us of CPU per byte: seconds for the largest bodies. It runs on
 * the local backend's preparation thread, never on the lws thread (ARCHITECTURE: the event loop
 * never blocks): while a 3 MiB prompt for the 512-token local model is being tokenized, other
 * clients are served (GET /metrics shows it "preparing" and the chat has no answer yet); then
 * the chat gets 400 naming the context length. */
static void test_long_prompt_off_event_loop(void **state)
{
    (void)state;
    struct srv s;
    srv_setup(&s);
    srv_start(&s);
    static const char words[] = "once upon a time there was a little dog named bob. ";
    size_t body_cap = BIG_PROMPT_BYTES + 512;
    char *body = wye_malloc(body_cap);
    assert_non_null(body);
    size_t n = (size_t)snprintf(body, body_cap,
                                "{\"model\":\"tiny\",\"max_tokens\":8,\"messages\":[{\"role\":"
                                "\"user\",\"content\":\"");
    while (n + sizeof(words) < BIG_PROMPT_BYTES) {
        memcpy(body + n, words, sizeof(words) - 1);
        n += sizeof(words) - 1;
    }
    n += (size_t)snprintf(body + n, body_cap - n, "\"}]}");
    char head[256];
    int hn = snprintf(head, sizeof(head),
                      "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: "
                      "application/json\r\nContent-Length: %zu\r\n\r\n",
                      n);
    int fd = hc_connect(s.port, 0);
    assert_true(fd >= 0);
    assert_true(hc_send_all(fd, head, (size_t)hn, T_MS));
    assert_true(hc_send_all(fd, body, n, T_MS));
    wye_free(body);

    /* served while the prompt is tokenized, and the chat still unanswered at that point */
    metrics_while_unanswered(s.port, fd, "wye_local_requests{state=\"preparing\"} 1\n");

    struct hc_resp r;
    hc_resp_init(&r);
    assert_int_equal(hc_read_response(fd, &r, T_MS), 400);
    if (!r.body.data ||
        !strstr(r.body.data, "exceeds the local model's context length (512 tokens)")) {
        fail_msg("unexpected answer: %s", r.body.data ? r.body.data : "(none)");
    }
    hc_resp_cleanup(&r);
    close(fd);

    /* over WebSocket the refusal, found after response.created, ends the answer as
     * response.done "failed" with the HTTP API's error (docs/protocol.md) */
    struct wsc c;
    assert_int_equal(wsc_connect(&c, s.port, "/v1/ws", NULL, 0, T_MS), 101);
    assert_true(wsc_send_text(&c, "{\"type\":\"response.create\",\"id\":\"big\",\"response\":{"
                                  "\"model\":\"tiny\",\"max_tokens\":4000,"
                                  "\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}}"));
    bool created = false, failed = false;
    for (int i = 0; i < 8 && !failed; i++) {
        char *msg = NULL;
        assert_int_equal(wsc_recv(&c, &msg, NULL, NULL, T_MS), WSC_TEXT);
        cJSON *j = cJSON_Parse(msg);
        const char *type = cJSON_GetObjectItem(j, "type")->valuestring;
        if (strcmp(type, "response.created") == 0) {
            created = true;
        } else if (strcmp(type, "response.done") == 0) {
            assert_string_equal(cJSON_GetObjectItem(j, "status")->valuestring, "failed");
            const cJSON *e = cJSON_GetObjectItem(j, "error");
            assert_string_equal(cJSON_GetObjectItem(e, "code")->valuestring, "invalid_request");
            const char *m = cJSON_GetObjectItem(e, "message")->valuestring;
            if (!strstr(m, "exceeds the local model's context length (512 tokens)")) {
                fail_msg("unexpected message: %s", msg);
            }
            failed = true;
        } else {
            fail_msg("unexpected event: %s", msg);
        }
        cJSON_Delete(j);
        wye_free(msg);
    }
    assert_true(created && failed);
    wsc_close(&c);

    /* the backend is free again: a short chat goes through */
    char route[16], score[32], id[64];
    bool done = false;
    assert_int_equal(http_stream(s.port, "tiny", "hi", route, score, id, &done), 200);
    assert_true(done);
    assert_string_equal(route, "local");
    struct hc_resp m;
    hc_resp_init(&m);
    assert_int_equal(hc_request(s.port, "GET", "/metrics", NULL, NULL, &m, T_MS), 200);
    assert_non_null(strstr(m.body.data, "wye_local_requests{state=\"preparing\"} 0\n"));
    hc_resp_cleanup(&m);
    srv_kill(&s, SIGTERM);
    srv_teardown(&s);
}

/* A Lua route hook runs on its own thread, never on the lws thread: while one call spins (until
 * its instruction cap or router.hook_timeout_ms stops it), GET /metrics is served and shows the
 * request waiting for the hook, and the chat is not answered yet; then it is routed by score
 * (the hook's failure in its reasons). A hook that answers has its route applied. */
static void test_hook_off_event_loop(void **state)
{
    (void)state;
    struct srv s;
    g_router_extra = ", hook_timeout_ms = 5000, hook = [[\n"
                     "function route(request, features, score)\n"
                     "  if request.text:find('spin please', 1, true) then\n"
                     "    local i = 0\n"
                     "    while true do i = i + 1 end\n"
                     "  end\n"
                     "  if request.text:find('go local', 1, true) then return 'local' end\n"
                     "  return nil\n"
                     "end ]]";
    srv_setup(&s);
    g_router_extra = "";
    srv_start(&s);

    /* the hook's verdict applies: a prompt the score sends remote goes local */
    char route[16], score[32], id[64];
    bool done = false;
    assert_int_equal(http_stream(s.port, "auto", HIGH_PROMPT " go local", route, score, id, &done),
                     200);
    assert_true(done);
    assert_string_equal(route, "local");
    assert_true(atof(score) >= 0.5);

    int fd = start_inflight(s.port, "auto", "spin please", 8);
    metrics_while_unanswered(s.port, fd, "wye_router_hook_pending 1\n");
    struct hc_resp r;
    hc_resp_init(&r);
    assert_int_equal(hc_read_response(fd, &r, T_MS), 200);
    char hv[64];
    assert_non_null(hc_header(&r, "x-wye-route", hv, sizeof(hv)));
    assert_string_equal(hv, "local"); /* by score */
    assert_non_null(r.body.data);
    assert_non_null(strstr(r.body.data, "data: [DONE]"));
    hc_resp_cleanup(&r);
    close(fd);

    struct hc_resp m;
    hc_resp_init(&m);
    assert_int_equal(hc_request(s.port, "GET", "/metrics", NULL, NULL, &m, T_MS), 200);
    assert_non_null(strstr(m.body.data, "wye_router_hook_pending 0\n"));
    assert_non_null(strstr(m.body.data, "wye_router_hook_errors_total 1\n"));
    hc_resp_cleanup(&m);
    srv_kill(&s, SIGTERM);
    srv_teardown(&s);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_auto_http_ws_summary),
        cmocka_unit_test(test_crash_keeps_completed),
        cmocka_unit_test(test_long_prompt_off_event_loop),
        cmocka_unit_test(test_hook_off_event_loop),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
