/* API key spend survives a restart of `wye serve` (the built binary, a child process; the
 * stories260K local model, the stub upstream, a ledger with fsync "always"): two keys with a
 * $0.0005 daily remote budget spend past it on one remote answer each; then a key in refuse
 * mode gets 429 naming its budget and a key in use-local mode is answered locally, without
 * the upstream hearing of either. The same holds after a clean restart (SIGTERM) and after a
 * crash (SIGKILL): the spend is rebuilt from the ledger. A key without a budget still reaches
 * the upstream, and a local request of a spent key is never refused. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "common/crypto.h"
#include "tests/gateway/http_client.h"
#include "tests/gateway/test_gateway_wiring_util.h"
#include "tests/stub/stub_upstream.h"

#define K_REFUSE "wye_refuseAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
#define K_SAVER "wye_saverBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB"
#define K_FREE "wye_freeCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCC"
/* ~100 prompt tokens at $10/M: about $0.001 per remote answer, over the $0.0005 budgets */
#define HARD                                                                                       \
    "Prove step by step that the sum of the first n odd numbers equals n^2, then write a "         \
    "Python function that computes the integral of f(x) = 3x^2 + 2x - 5 from 0 to 10 using "       \
    "Simpson's rule with 1000 intervals, explain the algorithm's complexity, derive the error "    \
    "bound, and finally implement a C++ class template with unit tests for matrix "                \
    "multiplication, handling edge cases like empty matrices and overflow. First, analyze the "    \
    "constraints; then compare the approach with Gaussian quadrature and justify each step."

static struct {
    struct ww_serve srv;
    struct stub_upstream *stub;
    char dir[512], conf[600], ledger[600], log[600];
} S;

static void hex_sha256(const char *key, char out[65])
{
    uint8_t h[WYE_SHA256_LEN];
    wye_sha256(key, strlen(key), h);
    for (int i = 0; i < WYE_SHA256_LEN; i++) {
        snprintf(out + 2 * i, 3, "%02x", h[i]);
    }
}

static void start(void)
{
    const char *args[] = {"-c", S.conf, NULL};
    ww_serve_start(&S.srv, NULL, S.log, NULL, args);
}

static int setup(void **state)
{
    (void)state;
    memset(&S, 0, sizeof(S));
    ww_tmpdir(S.dir, sizeof(S.dir), "gw_wiring_keys");
    snprintf(S.conf, sizeof(S.conf), "%s/wye.lua", S.dir);
    snprintf(S.ledger, sizeof(S.ledger), "%s/ledger.jsonl", S.dir);
    snprintf(S.log, sizeof(S.log), "%s/serve.log", S.dir);
    S.stub = stub_upstream_start();
    assert_non_null(S.stub);
    char hr[65], hs[65], hf[65];
    hex_sha256(K_REFUSE, hr);
    hex_sha256(K_SAVER, hs);
    hex_sha256(K_FREE, hf);
    char text[4096];
    snprintf(
        text, sizeof(text),
        "return {\n"
        "  listen = \"127.0.0.1:0\",\n"
        "  upstream = { base_url = \"http://127.0.0.1:%d/v1\", model = \"stub-model\",\n"
        "               max_retries = 0 },\n"
        "  engine = { model = \"%s/models/stories260K-q8_0.gguf\", model_name = \"tiny\",\n"
        "             threads = 1, ctx = 512, sequences = 2 },\n"
        "  ledger = { path = \"%s\", fsync = \"always\" },\n"
        "  prices = { models = { [\"stub-model\"] = { input_per_1m = 10, output_per_1m = 20 } },\n"
        "             default_remote = { input_per_1m = 1, output_per_1m = 2 } },\n"
        "  router = { threshold = 0.5 },\n"
        "  keys = {\n"
        "    { name = \"refuser\", sha256 = \"%s\", budget_usd_day = 0.0005,\n"
        "      over_budget = \"refuse\" },\n"
        "    { name = \"saver\", sha256 = \"%s\", budget_usd_day = 0.0005,\n"
        "      over_budget = \"local\" },\n"
        "    { name = \"free\", sha256 = \"%s\" },\n"
        "  },\n"
        "}\n",
        stub_upstream_port(S.stub), WYE_SHARED_DIR, S.ledger, hr, hs, hf);
    ww_write_file(S.conf, text);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    ww_serve_stop(&S.srv, SIGKILL);
    stub_upstream_stop(S.stub);
    ww_rmdir(S.dir);
    return 0;
}

/* POST /v1/chat/completions "auto" as key; returns the status, *route the x-wye-route header
 * ("" when absent) and body (may be NULL) the response body. */
static int chat(const char *key, const char *prompt, char *route, size_t route_len, char *body,
                size_t body_len)
{
    char req[2048], extra[256];
    snprintf(req, sizeof(req),
             "{\"model\":\"auto\",\"max_tokens\":8,\"messages\":[{\"role\":\"user\","
             "\"content\":\"%s\"}]}",
             prompt);
    snprintf(extra, sizeof(extra), "Authorization: Bearer %s\r\nContent-Type: application/json\r\n",
             key);
    struct hc_resp r;
    hc_resp_init(&r);
    int st = hc_request(S.srv.port, "POST", "/v1/chat/completions", req, extra, &r, WW_T_MS);
    route[0] = '\0';
    hc_header(&r, "x-wye-route", route, route_len);
    if (body) {
        snprintf(body, body_len, "%s", r.body.data ? r.body.data : "");
    }
    hc_resp_cleanup(&r);
    return st;
}

/* The three keys over budget or not, as the current server sees them. */
static void check_spent(const char *when)
{
    char route[32], body[2048];
    long before = stub_upstream_requests(S.stub);
    int st = chat(K_REFUSE, HARD, route, sizeof(route), body, sizeof(body));
    if (st != 429 || !strstr(body, "API key 'refuser' has spent its remote budget")) {
        fail_msg("%s: refuse-mode key over budget: status %d, body %s", when, st, body);
    }
    st = chat(K_SAVER, HARD, route, sizeof(route), NULL, 0);
    if (st != 200 || strcmp(route, "local") != 0) {
        fail_msg("%s: use-local key over budget: status %d, route '%s'", when, st, route);
    }
    assert_int_equal(stub_upstream_requests(S.stub), before); /* neither reached the upstream */
    /* a local request of a spent key is never refused */
    assert_int_equal(chat(K_REFUSE, "hi", route, sizeof(route), NULL, 0), 200);
    assert_string_equal(route, "local");
    /* a key without a budget still goes remote */
    assert_int_equal(chat(K_FREE, HARD, route, sizeof(route), NULL, 0), 200);
    assert_string_equal(route, "remote");
    assert_int_equal(stub_upstream_requests(S.stub), before + 1);
}

static void test_spend_survives_restart(void **state)
{
    (void)state;
    start();
    char route[32];
    /* each budgeted key spends past its budget on one remote answer */
    assert_int_equal(chat(K_REFUSE, HARD, route, sizeof(route), NULL, 0), 200);
    assert_string_equal(route, "remote");
    assert_int_equal(chat(K_SAVER, HARD, route, sizeof(route), NULL, 0), 200);
    assert_string_equal(route, "remote");
    check_spent("before the restart");

    /* a clean restart */
    int st = ww_serve_stop(&S.srv, SIGTERM);
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    start();
    check_spent("after a clean restart");

    /* a crash: every acknowledged answer was fsynced, so the spend is still there */
    ww_serve_stop(&S.srv, SIGKILL);
    start();
    check_spent("after SIGKILL and a restart");
    st = ww_serve_stop(&S.srv, SIGTERM);
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
}

int main(void)
{
    if (wye_crypto_init() != WYE_OK) {
        return 1;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_spend_survives_restart),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
