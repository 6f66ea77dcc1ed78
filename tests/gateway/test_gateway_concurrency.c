/* Many streamed requests at once through the real server (12,000 by 32 clients): every one must end with [DONE],
 * and every stream must be released. The producers (the scripted backend, one thread per
 * request) answer at once, so streams go on and off the ready list while the lws thread is
 * servicing it: a lost wakeup there leaves a client waiting forever (found by the gateway
 * benchmark: ~0.3% of streamed requests hung at 16 clients). libcurl multi is the client. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <curl/curl.h>
#include <stdio.h>
#include <string.h>

#include "common/alloc.h"
#include "common/clock.h"
#include "common/crypto.h"
#include "tests/gateway/gw_test_backend.h"

#define N_CLIENTS 32
#define N_REQUESTS 12000
#define REQ_TIMEOUT_MS 5000L

struct client {
    CURL *easy;
    bool done_seen;
};

static size_t on_body(char *p, size_t size, size_t n, void *arg)
{
    struct client *c = arg;
    size_t len = size * n;
    if (memmem(p, len, "[DONE]", 6)) {
        c->done_seen = true;
    }
    return len;
}

static void start(CURLM *multi, struct client *c, const char *url, struct curl_slist *hdrs)
{
    static const char body[] = "{\"model\":\"auto\",\"stream\":true,\"messages\":[{\"role\":"
                               "\"user\",\"content\":\"one two three four five six\"}]}";
    curl_easy_setopt(c->easy, CURLOPT_URL, url);
    curl_easy_setopt(c->easy, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(c->easy, CURLOPT_HTTPHEADER, hdrs);
    curl_easy_setopt(c->easy, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c->easy, CURLOPT_WRITEDATA, c);
    curl_easy_setopt(c->easy, CURLOPT_PRIVATE, c);
    curl_easy_setopt(c->easy, CURLOPT_TIMEOUT_MS, REQ_TIMEOUT_MS);
    c->done_seen = false;
    curl_multi_add_handle(multi, c->easy);
}

static void test_many_streams_all_finish(void **state)
{
    (void)state;
    struct gwt t;
    gwt_default_cfg(&t.cfg);
    t.cfg.limits.connections_max = 256;
    assert_true(gwt_start(&t));
    char url[128];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/v1/chat/completions", t.port);
    struct curl_slist *hdrs = curl_slist_append(NULL, "Content-Type: application/json");
    CURLM *multi = curl_multi_init();
    static struct client cs[N_CLIENTS];
    int started = 0, ok = 0, failed = 0;
    for (int i = 0; i < N_CLIENTS; i++) {
        cs[i].easy = curl_easy_init();
        start(multi, &cs[i], url, hdrs);
        started++;
    }
    int64_t deadline = wye_now_ns() + 120 * WYE_NS_PER_S;
    while (ok + failed < N_REQUESTS && wye_now_ns() < deadline) {
        int running;
        curl_multi_perform(multi, &running);
        CURLMsg *m;
        int left;
        while ((m = curl_multi_info_read(multi, &left))) {
            if (m->msg != CURLMSG_DONE) {
                continue;
            }
            struct client *c;
            long status = 0;
            curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&c);
            curl_easy_getinfo(m->easy_handle, CURLINFO_RESPONSE_CODE, &status);
            curl_multi_remove_handle(multi, m->easy_handle);
            if (m->data.result == CURLE_OK && status == 200 && c->done_seen) {
                ok++;
            } else {
                failed++;
                if (failed <= 3) {
                    print_message("request failed: curl %d, HTTP %ld, [DONE] %s\n",
                                  m->data.result, status, c->done_seen ? "seen" : "missing");
                }
            }
            if (started < N_REQUESTS) {
                start(multi, c, url, hdrs);
                started++;
            }
        }
        curl_multi_poll(multi, NULL, 0, 50, NULL);
    }
    for (int i = 0; i < N_CLIENTS; i++) {
        curl_multi_remove_handle(multi, cs[i].easy);
        curl_easy_cleanup(cs[i].easy);
    }
    curl_multi_cleanup(multi);
    curl_slist_free_all(hdrs);
    struct gw_stats st;
    gw_server_stats(t.srv, &st);
    gwt_stop(&t);
    assert_int_equal(failed, 0);
    assert_int_equal(ok, N_REQUESTS);
    assert_int_equal(st.open_streams, 0);
}

int main(void)
{
    wye_alloc_install_cjson_hooks();
    if (wye_crypto_init() != WYE_OK || curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        return 1;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_many_streams_all_finish),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    curl_global_cleanup();
    return rc;
}
