/* The upstream client and proxies: with no proxy variable set when the client is created it
 * tells curl there is no proxy (so curl skips its per-transfer environment lookups), and a
 * configured http_proxy keeps working: a stream to an address nobody listens on arrives through
 * the proxy (the stub upstream, which accepts an absolute request target), and fails without
 * it. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <curl/curl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/alloc.h"
#include "common/log.h"
#include "tests/router/test_sink_util.h"

#define WAIT_MS 10000

static const char *const PROXY_VARS[] = {"http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY",
                                         "all_proxy",  "ALL_PROXY",  "no_proxy",    "NO_PROXY"};

static void clear_proxy_env(void)
{
    for (size_t i = 0; i < sizeof(PROXY_VARS) / sizeof(PROXY_VARS[0]); i++) {
        unsetenv(PROXY_VARS[i]);
    }
}

/* A loopback port nobody listens on. */
static int closed_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct sockaddr_in sa = {.sin_family = AF_INET};
    inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    socklen_t sl = sizeof(sa);
    getsockname(fd, (struct sockaddr *)&sa, &sl);
    close(fd);
    return ntohs(sa.sin_port);
}

/* Runs "hello big world" against base http://127.0.0.1:CLOSED/v1, with http_proxy pointing at
 * the stub when via_proxy. */
static void run(bool via_proxy)
{
    clear_proxy_env();
    struct env e;
    env_init(&e);
    char proxy[64];
    snprintf(proxy, sizeof(proxy), "http://127.0.0.1:%d", stub_upstream_port(e.stub));
    if (via_proxy) {
        assert_int_equal(setenv("http_proxy", proxy, 1), 0);
    }
    snprintf(e.url, sizeof(e.url), "http://127.0.0.1:%d/v1", closed_port());
    e.cfg.upstream.max_retries = 0;
    env_router(&e);
    struct fsink f;
    fsink_init(&f);
    char eb[256];
    assert_int_equal(env_submit(&e, "auto", "hello big world", NULL, &f, eb, sizeof(eb)), WYE_OK);
    assert_true(fsink_wait_finish(&f, WAIT_MS));
    assert_int_equal(f.violations, 0);
    if (via_proxy) {
        if (f.res.err) {
            fail_msg("through the proxy: %s", f.msg);
        }
        assert_string_equal(f.text.data, "hello big world");
        assert_string_equal(f.reason, "stop");
        assert_int_equal(stub_upstream_requests(e.stub), 1);
    } else {
        assert_int_equal(f.res.err, WYE_ERR_UPSTREAM);
        assert_non_null(strstr(f.msg, "could not reach the upstream"));
        assert_int_equal(stub_upstream_requests(e.stub), 0);
    }
    fsink_cleanup(&f);
    env_cleanup(&e);
    clear_proxy_env();
}

static void test_no_proxy_env(void **state)
{
    (void)state;
    run(false);
}

static void test_http_proxy_env(void **state)
{
    (void)state;
    run(true);
}

int main(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
    wye_alloc_install_cjson_hooks();
    if (!getenv("WYE_LOG_LEVEL")) {
        wye_log_set_level(WYE_LOG_OFF);
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_no_proxy_env),
        cmocka_unit_test(test_http_proxy_env),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
