/* API key authentication end to end on a real server: HTTP Bearer keys (missing, wrong, right;
 * /healthz and /metrics open; the key's name reaches the request), the per-key rate limit
 * (429 with Retry-After), and the WebSocket forms (wye.key.<key> subprotocol, the auth
 * event, refusal of events before authentication, closing after repeated failures, the
 * rate_limit_exceeded error event). The wrong key is never echoed back. */
/* cmocka.h needs these first. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cJSON.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "common/crypto.h"
#include "router/keys.h"
#include "tests/gateway/gw_json.h"
#include "tests/gateway/gw_test_backend.h"
#include "tests/gateway/http_client.h"
#include "tests/gateway/ws_client.h"

#define T_MS 5000
#define ALICE "wye_aliceAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA" /* rpm 3 */
#define BOB "wye_bobBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB"   /* unlimited */
#define WRONG "wye_wrongZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZ"

static struct gwt *T;
static struct rt_keys *K;
static struct conf_api_key keys[2];
static char name_alice[] = "alice", name_bob[] = "bob";

static int setup(void **state)
{
    (void)state;
    T = wye_calloc(1, sizeof(*T));
    gwt_default_cfg(&T->cfg);
    keys[0] = (struct conf_api_key){.name = name_alice,
                                    .rpm = 3,
                                    .budget_usd_day = -1,
                                    .budget_usd_month = -1,
                                    .routes = CONF_ROUTE_LOCAL | CONF_ROUTE_REMOTE};
    keys[1] = keys[0];
    keys[1].name = name_bob;
    keys[1].rpm = 0;
    wye_sha256(ALICE, strlen(ALICE), keys[0].sha256);
    wye_sha256(BOB, strlen(BOB), keys[1].sha256);
    T->cfg.api_keys = keys;
    T->cfg.n_api_keys = 2;
    T->cfg.auth.required = true;
    K = rt_keys_create(&T->cfg);
    assert_non_null(K);
    return gwt_start_keys(T, K) ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    gwt_stop(T);
    rt_keys_destroy(K);
    K = NULL;
    wye_free(T);
    T = NULL;
    return 0;
}

static const char chat_body[] = "{\"model\":\"auto\",\"messages\":[{\"role\":\"user\",\"content\":"
                                "\"hello\"}],\"max_tokens\":5}";

/* One request; returns the status and leaves the response in r. */
static int req(struct hc_resp *r, const char *method, const char *path, const char *key)
{
    char extra[256] = "";
    if (key) {
        snprintf(extra, sizeof(extra),
                 "Authorization: Bearer %s\r\nContent-Type: application/json\r\n", key);
    } else {
        snprintf(extra, sizeof(extra), "Content-Type: application/json\r\n");
    }
    hc_resp_init(r);
    return hc_request(T->port, method, path, strcmp(method, "POST") == 0 ? chat_body : NULL, extra,
                      r, T_MS);
}

static void expect_body(const struct hc_resp *r, const char *needle)
{
    if (!r->body.data || !strstr(r->body.data, needle)) {
        fail_msg("body '%s' does not contain '%s'", r->body.data ? r->body.data : "", needle);
    }
}

static void test_http_open_routes(void **state)
{
    (void)state;
    struct hc_resp r;
    assert_int_equal(req(&r, "GET", "/healthz", NULL), 200);
    hc_resp_cleanup(&r);
    assert_int_equal(req(&r, "GET", "/metrics", NULL), 200);
    hc_resp_cleanup(&r);
}

static void test_http_missing_and_wrong(void **state)
{
    (void)state;
    struct hc_resp r;
    char v[64];
    assert_int_equal(req(&r, "GET", "/v1/models", NULL), 401);
    expect_body(&r, "missing API key: send Authorization: Bearer <key>");
    expect_body(&r, "\"code\":\"missing_api_key\"");
    assert_non_null(hc_header(&r, "www-authenticate", v, sizeof(v)));
    hc_resp_cleanup(&r);
    assert_int_equal(req(&r, "POST", "/v1/chat/completions", NULL), 401);
    hc_resp_cleanup(&r);
    assert_int_equal(req(&r, "POST", "/v1/chat/completions", WRONG), 401);
    expect_body(&r, "invalid API key");
    assert_null(strstr(r.body.data, "wrongZZZ"));
    assert_null(strstr(r.headers, "wrongZZZ"));
    hc_resp_cleanup(&r);
    /* Not a Bearer credential, and an empty one. */
    hc_resp_init(&r);
    assert_int_equal(hc_request(T->port, "GET", "/v1/models", NULL,
                                "Authorization: Basic " BOB "\r\n", &r, T_MS),
                     401);
    hc_resp_cleanup(&r);
    hc_resp_init(&r);
    assert_int_equal(
        hc_request(T->port, "GET", "/v1/models", NULL, "Authorization: Bearer \r\n", &r, T_MS),
        401);
    hc_resp_cleanup(&r);
    assert_int_equal(atomic_load(&tb_stats.submits), 0);
}

static void test_http_right_key(void **state)
{
    (void)state;
    struct hc_resp r;
    assert_int_equal(req(&r, "GET", "/v1/models", BOB), 200);
    hc_resp_cleanup(&r);
    assert_int_equal(req(&r, "POST", "/v1/chat/completions", BOB), 200);
    hc_resp_cleanup(&r);
    assert_string_equal(tb_last_key_name, "bob");
    hc_resp_init(&r);
    assert_int_equal(hc_request(T->port, "POST", "/v1/chat/completions", chat_body,
                                "authorization:   bearer   " ALICE "  \r\n", &r, T_MS),
                     200);
    hc_resp_cleanup(&r);
    assert_string_equal(tb_last_key_name, "alice");
}

static void test_http_rate_limit(void **state)
{
    (void)state;
    struct hc_resp r;
    for (int i = 0; i < 3; i++) {
        assert_int_equal(req(&r, "POST", "/v1/chat/completions", ALICE), 200);
        hc_resp_cleanup(&r);
    }
    assert_int_equal(req(&r, "POST", "/v1/chat/completions", ALICE), 429);
    expect_body(&r, "rate_limit_exceeded");
    char v[32];
    assert_non_null(hc_header(&r, "retry-after", v, sizeof(v)));
    int secs = atoi(v);
    assert_true(secs >= 1 && secs <= 60);
    hc_resp_cleanup(&r);
    /* Another key has its own limit. */
    assert_int_equal(req(&r, "POST", "/v1/chat/completions", BOB), 200);
    hc_resp_cleanup(&r);
}

/* ---- WebSocket ---- */

static void expect_error(struct wsc *c, const char *code)
{
    cJSON *j = gwj_recv(c, T_MS);
    assert_string_equal(gwj_istr(j, "type"), "error");
    assert_string_equal(gwj_istr(cJSON_GetObjectItem(j, "error"), "code"), code);
    cJSON_Delete(j);
}

static void expect_type(struct wsc *c, const char *type)
{
    cJSON *j = gwj_recv(c, T_MS);
    assert_string_equal(gwj_istr(j, "type"), type);
    cJSON_Delete(j);
}

static void create(struct wsc *c, const char *id)
{
    char buf[512];
    snprintf(buf, sizeof(buf),
             "{\"type\":\"response.create\",\"id\":\"%s\",\"response\":{\"model\":\"auto\","
             "\"messages\":[{\"role\":\"user\",\"content\":\"hello\"}],\"max_tokens\":5}}",
             id);
    assert_true(wsc_send_text(c, buf));
}

/* Reads events until response.done for id. */
static void until_done(struct wsc *c, const char *id)
{
    for (int i = 0; i < 200; i++) {
        cJSON *j = gwj_recv(c, T_MS);
        bool done =
            strcmp(gwj_istr(j, "type"), "response.done") == 0 && strcmp(gwj_istr(j, "id"), id) == 0;
        cJSON_Delete(j);
        if (done) {
            return;
        }
    }
    fail_msg("no response.done for %s", id);
}

static void test_ws_unauthenticated_closes(void **state)
{
    (void)state;
    struct wsc c;
    assert_int_equal(wsc_connect(&c, T->port, "/v1/ws", NULL, 0, T_MS), 101);
    create(&c, "r1");
    expect_error(&c, "missing_api_key");
    assert_true(wsc_send_text(&c, "{\"type\":\"auth\",\"key\":\"" WRONG "\"}"));
    char *msg = NULL;
    assert_int_equal(wsc_recv(&c, &msg, NULL, NULL, T_MS), WSC_TEXT);
    assert_non_null(strstr(msg, "invalid_api_key"));
    assert_null(strstr(msg, "wrongZZZ"));
    wye_free(msg);
    create(&c, "r2");
    expect_error(&c, "missing_api_key");
    int code = 0;
    assert_int_equal(wsc_recv(&c, NULL, NULL, &code, T_MS), WSC_CLOSE);
    assert_int_equal(code, 1008);
    wsc_close(&c);
    assert_int_equal(atomic_load(&tb_stats.submits), 0);
}

static void test_ws_auth_event(void **state)
{
    (void)state;
    struct wsc c;
    assert_int_equal(wsc_connect(&c, T->port, "/v1/ws", NULL, 0, T_MS), 101);
    assert_true(wsc_send_text(&c, "{\"type\":\"auth\",\"key\":\"" BOB "\"}"));
    cJSON *j = gwj_recv(&c, T_MS);
    assert_string_equal(gwj_istr(j, "type"), "auth.ok");
    assert_string_equal(gwj_istr(j, "key_name"), "bob");
    cJSON_Delete(j);
    create(&c, "r1");
    expect_type(&c, "response.created");
    until_done(&c, "r1");
    assert_string_equal(tb_last_key_name, "bob");
    wsc_close(&c);
}

static void test_ws_subprotocol(void **state)
{
    (void)state;
    struct wsc c;
    assert_int_equal(wsc_connect(&c, T->port, "/v1/ws", "wye.v1, wye.key." ALICE, 0, T_MS), 101);
    expect_type(&c, "auth.ok");
    create(&c, "r1");
    expect_type(&c, "response.created");
    until_done(&c, "r1");
    assert_string_equal(tb_last_key_name, "alice");
    wsc_close(&c);

    /* A wrong key in the subprotocol: an error, then the close. */
    assert_int_equal(wsc_connect(&c, T->port, "/v1/ws", "wye.v1, wye.key." WRONG, 0, T_MS), 101);
    expect_error(&c, "invalid_api_key");
    int code = 0;
    assert_int_equal(wsc_recv(&c, NULL, NULL, &code, T_MS), WSC_CLOSE);
    assert_int_equal(code, 1008);
    wsc_close(&c);
}

static void test_ws_rate_limit(void **state)
{
    (void)state;
    struct wsc c;
    assert_int_equal(wsc_connect(&c, T->port, "/v1/ws", "wye.v1, wye.key." ALICE, 0, T_MS), 101);
    expect_type(&c, "auth.ok");
    for (int i = 0; i < 3; i++) {
        char id[8];
        snprintf(id, sizeof(id), "r%d", i);
        create(&c, id);
        expect_type(&c, "response.created");
        until_done(&c, id);
    }
    create(&c, "r9");
    cJSON *j = gwj_recv(&c, T_MS);
    assert_string_equal(gwj_istr(j, "type"), "error");
    assert_string_equal(gwj_istr(j, "id"), "r9");
    assert_string_equal(gwj_istr(cJSON_GetObjectItem(j, "error"), "code"), "rate_limit_exceeded");
    cJSON_Delete(j);
    wsc_close(&c);
}

/* auth.required = false with keys: no key runs as "anonymous", a wrong key is still refused. */
static int setup_optional(void **state)
{
    int rc = setup(state);
    if (rc == 0) {
        gwt_stop(T);
        rt_keys_destroy(K);
        T->cfg.auth.required = false;
        K = rt_keys_create(&T->cfg);
        rc = K && gwt_start_keys(T, K) ? 0 : -1;
    }
    return rc;
}

static void test_optional_auth(void **state)
{
    (void)state;
    struct hc_resp r;
    assert_int_equal(req(&r, "POST", "/v1/chat/completions", NULL), 200);
    hc_resp_cleanup(&r);
    assert_string_equal(tb_last_key_name, "anonymous");
    assert_int_equal(req(&r, "POST", "/v1/chat/completions", WRONG), 401);
    hc_resp_cleanup(&r);
    assert_int_equal(req(&r, "POST", "/v1/chat/completions", BOB), 200);
    hc_resp_cleanup(&r);
    assert_string_equal(tb_last_key_name, "bob");
    /* WebSocket: no key needed, but a wrong one is refused. */
    struct wsc c;
    assert_int_equal(wsc_connect(&c, T->port, "/v1/ws", NULL, 0, T_MS), 101);
    create(&c, "r1");
    expect_type(&c, "response.created");
    until_done(&c, "r1");
    assert_string_equal(tb_last_key_name, "anonymous");
    assert_true(wsc_send_text(&c, "{\"type\":\"auth\",\"key\":\"" WRONG "\"}"));
    expect_error(&c, "invalid_api_key");
    create(&c, "r2");
    expect_error(&c, "missing_api_key");
    wsc_close(&c);
}

/* auth.required without a key table given to the server: fail closed. */
static int setup_unwired(void **state)
{
    int rc = setup(state);
    if (rc == 0) {
        gwt_stop(T);
        rc = gwt_start(T) ? 0 : -1;
    }
    return rc;
}

static void test_unwired_fails_closed(void **state)
{
    (void)state;
    struct hc_resp r;
    assert_int_equal(req(&r, "POST", "/v1/chat/completions", BOB), 500);
    expect_body(&r, "no key table is loaded");
    hc_resp_cleanup(&r);
    assert_int_equal(req(&r, "GET", "/healthz", NULL), 200);
    hc_resp_cleanup(&r);
    struct wsc c;
    assert_int_equal(wsc_connect(&c, T->port, "/v1/ws", NULL, 0, T_MS), 101);
    expect_error(&c, "internal_error");
    wsc_close(&c);
    assert_int_equal(atomic_load(&tb_stats.submits), 0);
}

int main(void)
{
    wye_crypto_init();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_http_open_routes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_http_missing_and_wrong, setup, teardown),
        cmocka_unit_test_setup_teardown(test_http_right_key, setup, teardown),
        cmocka_unit_test_setup_teardown(test_http_rate_limit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_ws_unauthenticated_closes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_ws_auth_event, setup, teardown),
        cmocka_unit_test_setup_teardown(test_ws_subprotocol, setup, teardown),
        cmocka_unit_test_setup_teardown(test_ws_rate_limit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_optional_auth, setup_optional, teardown),
        cmocka_unit_test_setup_teardown(test_unwired_fails_closed, setup_unwired, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
