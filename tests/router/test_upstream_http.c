/* Plain HTTP requests on the upstream client's thread (rt_upstream_http, what agents'
 * wye.http.request uses) against real servers on loopback: the stand-in upstream (POST with a
 * body and headers, exactly as sent) and the agents' page server (GET, 404, a slow page, a
 * 2 MiB page). Covers an HTTP-only client (no base_url: chat refused), the response cap, the
 * timeout, transport errors, cancellation (the connection is closed), a plain request running
 * beside a streamed chat on one client, and stopping with requests in flight. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <cJSON.h>
#include <curl/curl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/alloc.h"
#include "common/clock.h"
#include "router/rt_route_internal.h"
#include "router/upstream.h"
#include "tests/agents/agent_test_server.h"
#include "tests/router/test_sink_util.h"
#include "tests/stub/stub_upstream.h"

#define WAIT_MS 10000

/* One request's answer, filled on the upstream thread. */
struct answer {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int n_done;
    enum wye_err err;
    char msg[512];
    long status;
    char *body;
    size_t body_len;
    atomic_bool cancel;
};

static void answer_init(struct answer *a)
{
    memset(a, 0, sizeof(*a));
    pthread_mutex_init(&a->lock, NULL);
    pthread_cond_init(&a->cond, NULL);
    atomic_init(&a->cancel, false);
}

static void answer_cleanup(struct answer *a)
{
    free(a->body);
    pthread_mutex_destroy(&a->lock);
    pthread_cond_destroy(&a->cond);
}

static void on_done(void *arg, const struct rt_http_result *r)
{
    struct answer *a = arg;
    pthread_mutex_lock(&a->lock);
    a->n_done++;
    a->err = r->err;
    snprintf(a->msg, sizeof(a->msg), "%s", r->message ? r->message : "");
    a->status = r->status;
    free(a->body);
    a->body = malloc(r->body_len + 1);
    memcpy(a->body, r->body, r->body_len + 1); /* the body is NUL-terminated */
    a->body_len = r->body_len;
    pthread_cond_broadcast(&a->cond);
    pthread_mutex_unlock(&a->lock);
}

static bool on_cancelled(void *arg)
{
    struct answer *a = arg;
    return atomic_load(&a->cancel);
}

static const struct rt_http_ops ops = {on_done, on_cancelled};

static bool wait_answer(struct answer *a, int ms)
{
    struct timespec dl;
    clock_gettime(CLOCK_REALTIME, &dl);
    dl.tv_sec += ms / 1000;
    dl.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (dl.tv_nsec >= 1000000000L) {
        dl.tv_sec++;
        dl.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&a->lock);
    while (a->n_done == 0 && pthread_cond_timedwait(&a->cond, &a->lock, &dl) == 0) {
    }
    bool done = a->n_done > 0;
    pthread_mutex_unlock(&a->lock);
    return done;
}

struct hx {
    struct conf_upstream cfg;
    struct rt_upstream *up;
    struct ats *pages;
    char base[64];
};

static void hx_start(struct hx *x, const char *base_url)
{
    memset(x, 0, sizeof(*x));
    x->cfg.base_url = (char *)base_url;
    x->cfg.model = (char *)"stub-model";
    x->cfg.connect_timeout_ms = 2000;
    x->pages = ats_start();
    assert_non_null(x->pages);
    snprintf(x->base, sizeof(x->base), "http://127.0.0.1:%d", ats_port(x->pages));
    x->up = rt_upstream_create(&x->cfg);
    assert_non_null(x->up);
    assert_int_equal(rt_upstream_start(x->up), WYE_OK);
}

static void hx_stop(struct hx *x)
{
    rt_upstream_destroy(x->up);
    ats_stop(x->pages);
}

/* Sends one request and waits for its answer. */
static void request(struct hx *x, struct rt_http_req *req, struct answer *a)
{
    char eb[256] = "";
    answer_init(a);
    enum wye_err err = rt_upstream_http(x->up, req, &ops, a, eb, sizeof(eb));
    if (err) {
        fail_msg("rt_upstream_http: %s", eb);
    }
    assert_true(wait_answer(a, WAIT_MS));
}

static void test_get_post_and_status(void **state)
{
    (void)state;
    struct hx x;
    hx_start(&x, NULL); /* HTTP only */
    char url[128];
    struct answer a;

    snprintf(url, sizeof(url), "%s/page", x.base);
    struct rt_http_req get = {.url = url, .timeout_ms = 5000};
    request(&x, &get, &a);
    assert_int_equal(a.err, WYE_OK);
    assert_int_equal(a.status, 200);
    assert_non_null(strstr(a.body, "<html>"));
    assert_int_equal(a.n_done, 1);
    answer_cleanup(&a);

    /* any HTTP status is an answer, not a failure */
    snprintf(url, sizeof(url), "%s/nothing-here", x.base);
    request(&x, &get, &a);
    assert_int_equal(a.err, WYE_OK);
    assert_int_equal(a.status, 404);
    answer_cleanup(&a);

    /* POST: the body and headers arrive exactly as given */
    struct stub_upstream *stub = stub_upstream_start();
    assert_non_null(stub);
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/v1/chat/completions", stub_upstream_port(stub));
    static const char body[] = "{\"model\":\"m\",\"stream\":false,"
                               "\"messages\":[{\"role\":\"user\",\"content\":\"hi there\"}]}";
    const char *hdrs[] = {"Content-Type: application/json", "Authorization: Bearer tok-42"};
    struct rt_http_req post = {.method = "POST",
                               .url = url,
                               .headers = hdrs,
                               .n_headers = 2,
                               .body = body,
                               .body_len = strlen(body),
                               .timeout_ms = 5000};
    request(&x, &post, &a);
    assert_int_equal(a.err, WYE_OK);
    assert_int_equal(a.status, 200);
    cJSON *j = cJSON_Parse(a.body);
    assert_non_null(j);
    assert_string_equal(cJSON_GetObjectItem(j, "object")->valuestring, "chat.completion");
    cJSON_Delete(j);
    char *sent = stub_upstream_last_body(stub);
    assert_string_equal(sent, body);
    free(sent);
    char *auth = stub_upstream_last_auth(stub);
    assert_string_equal(auth, "Bearer tok-42");
    free(auth);
    answer_cleanup(&a);
    stub_upstream_stop(stub);

    /* an HTTP-only client refuses chat completions */
    struct wye_sink none = {0};
    char eb[128] = "";
    assert_int_equal(rt_upstream_submit(x.up, NULL, none, eb, sizeof(eb)), WYE_ERR_INVAL);
    assert_string_equal(eb, "no upstream is configured");
    hx_stop(&x);
}

static void test_cap_timeout_and_errors(void **state)
{
    (void)state;
    struct hx x;
    hx_start(&x, NULL);
    char url[128];
    struct answer a;

    snprintf(url, sizeof(url), "%s/big", x.base); /* 2 MiB */
    struct rt_http_req big = {.url = url, .timeout_ms = 5000, .max_bytes = 1u << 20};
    request(&x, &big, &a);
    assert_int_equal(a.err, WYE_ERR_TOOBIG);
    assert_string_equal(a.msg, "the response is larger than 1048576 bytes");
    assert_true(a.body_len <= (1u << 20));
    answer_cleanup(&a);
    big.max_bytes = 4u << 20;
    request(&x, &big, &a);
    assert_int_equal(a.err, WYE_OK);
    assert_int_equal(a.body_len, 2u << 20);
    answer_cleanup(&a);

    snprintf(url, sizeof(url), "%s/slow", x.base);
    struct rt_http_req slow = {.url = url, .timeout_ms = 300};
    int64_t t0 = wye_now_ns();
    request(&x, &slow, &a);
    int64_t took_ms = (wye_now_ns() - t0) / WYE_NS_PER_MS;
    assert_int_equal(a.err, WYE_ERR_TIMEOUT);
    assert_string_equal(a.msg, "timed out after 300 ms");
    assert_true(took_ms >= 250 && took_ms < 3000);
    answer_cleanup(&a);

    /* nobody listens on the port of a server that stopped */
    struct ats *gone = ats_start();
    assert_non_null(gone);
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/page", ats_port(gone));
    ats_stop(gone);
    struct rt_http_req refused = {.url = url, .timeout_ms = 2000};
    request(&x, &refused, &a);
    assert_int_equal(a.err, WYE_ERR_IO);
    assert_true(strlen(a.msg) > 0);
    answer_cleanup(&a);

    struct rt_http_req ftp = {.url = "ftp://127.0.0.1/x", .timeout_ms = 2000};
    request(&x, &ftp, &a);
    assert_int_not_equal(a.err, WYE_OK);
    assert_true(strlen(a.msg) > 0);
    answer_cleanup(&a);
    hx_stop(&x);
}

/* Cancelled while the server holds the answer: done says CANCELED within a poll or two and
 * the server sees its client go away. */
static void test_cancel(void **state)
{
    (void)state;
    struct hx x;
    hx_start(&x, NULL);
    char url[128], eb[128];
    snprintf(url, sizeof(url), "%s/slow", x.base);
    struct rt_http_req slow = {.url = url, .timeout_ms = 20000};
    struct answer a;
    answer_init(&a);
    assert_int_equal(rt_upstream_http(x.up, &slow, &ops, &a, eb, sizeof(eb)), WYE_OK);
    for (int i = 0; i < 1000 && ats_slow_started(x.pages) == 0; i++) {
        usleep(5000);
    }
    assert_int_equal(ats_slow_started(x.pages), 1);
    int64_t t0 = wye_now_ns();
    atomic_store(&a.cancel, true);
    assert_true(wait_answer(&a, WAIT_MS));
    assert_true((wye_now_ns() - t0) / WYE_NS_PER_MS < 1000);
    assert_int_equal(a.err, WYE_ERR_CANCELED);
    assert_int_equal(a.n_done, 1);
    for (int i = 0; i < 600 && ats_slow_aborted(x.pages) == 0; i++) {
        usleep(5000);
    }
    assert_int_equal(ats_slow_aborted(x.pages), 1);
    answer_cleanup(&a);
    hx_stop(&x);
}

/* The router's own upstream client (what the agents host uses when a remote upstream is
 * configured): a streamed chat and a plain request run side by side on its one thread;
 * stopping answers what is still running (CANCELED) and refuses new requests. */
static void test_beside_chat_and_stop(void **state)
{
    (void)state;
    struct env e;
    env_init(&e);
    env_router(&e);
    struct rt_upstream *up = e.rt->up;
    assert_non_null(up);
    struct ats *pages = ats_start();
    assert_non_null(pages);
    struct fsink f;
    fsink_init(&f);
    char eb[256];
    /* 10 deltas 50 ms apart */
    assert_int_equal(env_submit(&e, "auto", "#stub n=10 delay_ms=50", NULL, &f, eb, sizeof(eb)),
                     WYE_OK);
    char url[128];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/page", ats_port(pages));
    struct rt_http_req get = {.url = url, .timeout_ms = 5000};
    struct answer a;
    answer_init(&a);
    assert_int_equal(rt_upstream_http(up, &get, &ops, &a, eb, sizeof(eb)), WYE_OK);
    assert_true(wait_answer(&a, WAIT_MS));
    assert_int_equal(a.err, WYE_OK);
    assert_int_equal(a.status, 200);
    /* the page came back while the chat was still streaming */
    pthread_mutex_lock(&f.mu);
    int n_delta = f.n_delta;
    pthread_mutex_unlock(&f.mu);
    assert_true(n_delta < 10);
    answer_cleanup(&a);
    assert_true(fsink_wait_finish(&f, WAIT_MS));
    assert_int_equal(f.res.err, WYE_OK);
    assert_int_equal(f.n_delta, 10);
    fsink_cleanup(&f);

    snprintf(url, sizeof(url), "http://127.0.0.1:%d/slow", ats_port(pages));
    struct rt_http_req slow = {.url = url, .timeout_ms = 20000};
    answer_init(&a);
    assert_int_equal(rt_upstream_http(up, &slow, &ops, &a, eb, sizeof(eb)), WYE_OK);
    for (int i = 0; i < 1000 && ats_slow_started(pages) == 0; i++) {
        usleep(5000);
    }
    assert_int_equal(ats_slow_started(pages), 1);
    rt_router_stop(e.rt);
    assert_true(wait_answer(&a, 100)); /* stop joined the thread: already answered */
    assert_int_equal(a.err, WYE_ERR_CANCELED);
    assert_string_equal(a.msg, "the gateway is shutting down");
    answer_cleanup(&a);
    answer_init(&a);
    assert_int_equal(rt_upstream_http(up, &slow, &ops, &a, eb, sizeof(eb)), WYE_ERR_CANCELED);
    assert_int_equal(a.n_done, 0);
    answer_cleanup(&a);
    ats_stop(pages);
    env_cleanup(&e);
}

int main(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_get_post_and_status),
        cmocka_unit_test(test_cap_timeout_and_errors),
        cmocka_unit_test(test_cancel),
        cmocka_unit_test(test_beside_chat_and_stop),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    curl_global_cleanup();
    return rc;
}
