/* Runs as coroutines: entry points, arguments, yielding host calls resumed by the host
 * (also across pcall), errors from the host, cancellation while parked, interleaved runs. */
#include "common/clock.h"
#include "tests/lua/wlua_test.h"

static struct wlua_state *t_await_state(void)
{
    struct wlua_state *st = t_default();
    assert_int_equal(wlua_state_add_yielding(st, "await"), WYE_OK);
    return st;
}

static void t_expect_pending(struct wlua_run *run, const char *name, const char *args)
{
    const char *n, *a;
    assert_int_equal(wlua_run_status(run), WLUA_YIELDED);
    wlua_run_pending(run, &n, &a);
    assert_string_equal(n, name);
    assert_string_equal(a, args);
}

static void test_entry_points(void **state)
{
    (void)state;
    struct wlua_state *st = t_default();
    t_expect_result_on(st, "return function(a) return a.x * 2 end", "{\"x\":21}", "42");
    t_expect_result_on(st, "local M = {} function M.main(a) return a[2] end return M", "[1,\"b\"]",
                       "\"b\"");
    t_expect_result_on(st, "function main(a) return a == nil end", NULL, "true");
    t_expect_result_on(st, "return function() end", NULL, "null");
    struct wlua_run *run = NULL;
    const char *src = "return {handler = function(a) return {ok = a} end}";
    assert_int_equal(wlua_run_start(st, "h.lua", src, strlen(src), "handler", "false", &run),
                     WLUA_DONE);
    assert_string_equal(wlua_run_result(run), "{\"ok\":false}");
    wlua_run_destroy(run);
    t_expect_error_on(st, "return 42", WYE_ERR_INVAL,
                      "x.lua: the script must return a function, or a table with a function "
                      "'main', or define a global function 'main' (got number)");
    t_expect_error_on(st, "return {}", WYE_ERR_INVAL, "(got nil)");
    t_expect_error_on(st, "return function( end", WYE_ERR_PARSE, "x.lua:1: ");
    wlua_state_destroy(st);
}

static void test_bad_arguments_and_results(void **state)
{
    (void)state;
    struct wlua_state *st = t_default();
    struct wlua_run *run = NULL;
    assert_int_equal(t_run(st, "return function(a) return a end", "{\"a\":", &run), WLUA_ERROR);
    assert_int_equal(wlua_run_err(run), WYE_ERR_INVAL);
    assert_non_null(strstr(wlua_run_error(run), "x.lua: arguments: invalid JSON at byte"));
    wlua_run_destroy(run);
    t_expect_error_on(st, "return function() return print end", WYE_ERR_INVAL,
                      "x.lua: the result cannot be encoded: cannot encode a function value");
    wlua_state_destroy(st);
}

static void test_yield_resume_round_trip(void **state)
{
    (void)state;
    struct wlua_state *st = t_await_state();
    struct wlua_run *run = NULL;
    const char *src = "return function(a)\n"
                      "  local r = wye.await(a.x, 'hi', {k = true})\n"
                      "  local s = 0\n"
                      "  for i = 1, 3 do s = s + wye.await(i) end\n"
                      "  return {r.y + 1, s}\n"
                      "end";
    assert_int_equal(t_run(st, src, "{\"x\":1}", &run), WLUA_YIELDED);
    t_expect_pending(run, "await", "[1,\"hi\",{\"k\":true}]");
    assert_int_equal(wlua_run_resume(run, "{\"y\":41}", NULL), WLUA_YIELDED);
    for (int i = 1; i <= 3; i++) {
        char want[16];
        snprintf(want, sizeof(want), "[%d]", i);
        t_expect_pending(run, "await", want);
        enum wlua_status s = wlua_run_resume(run, "10", NULL);
        assert_int_equal(s, i < 3 ? WLUA_YIELDED : WLUA_DONE);
    }
    assert_string_equal(wlua_run_result(run), "[42,30]");
    /* Resuming a finished run changes nothing. */
    assert_int_equal(wlua_run_resume(run, "1", NULL), WLUA_DONE);
    wlua_run_destroy(run);
    wlua_state_destroy(st);
}

static void test_yield_across_pcall_and_errors(void **state)
{
    (void)state;
    struct wlua_state *st = t_await_state();
    struct wlua_run *run = NULL;
    const char *src = "return function()\n"
                      "  local ok1, v = pcall(wye.await, 5)\n"
                      "  local ok2, e = pcall(function() return wye.await('again') end)\n"
                      "  local ok3, e3 = xpcall(wye.await, function(m) return 'h:' .. m end, 3)\n"
                      "  return {ok1, v, ok2, e, ok3, e3}\n"
                      "end";
    assert_int_equal(t_run(st, src, NULL, &run), WLUA_YIELDED);
    t_expect_pending(run, "await", "[5]");
    assert_int_equal(wlua_run_resume(run, "7", NULL), WLUA_YIELDED);
    t_expect_pending(run, "await", "[\"again\"]");
    assert_int_equal(wlua_run_resume(run, NULL, "upstream timed out"), WLUA_YIELDED);
    assert_int_equal(wlua_run_resume(run, "{\"a", NULL), WLUA_DONE);
    assert_string_equal(wlua_run_result(run),
                        "[true,7,false,\"x.lua:3: wye.await: upstream timed out\",false,"
                        "\"h:wye.await: the host's answer is not valid JSON (invalid "
                        "JSON at byte 2)\"]");
    wlua_run_destroy(run);

    /* Uncaught, the host's error ends the run with the script's line. */
    assert_int_equal(t_run(st, "return function()\n local x = wye.await()\nend", NULL, &run),
                     WLUA_YIELDED);
    assert_int_equal(wlua_run_resume(run, NULL, "boom"), WLUA_ERROR);
    assert_string_equal(wlua_run_error(run), "x.lua:2: wye.await: boom");
    wlua_run_destroy(run);
    wlua_state_destroy(st);
}

static void test_host_call_rules(void **state)
{
    (void)state;
    struct wlua_state *st = t_await_state();
    t_expect_error_on(st, "return function() return wye.chat({}) end", WYE_ERR_INVAL,
                      "x.lua:1: wye.chat is not available in this context");
    t_expect_error_on(st, "return function() return wye.http.request('http://x') end",
                      WYE_ERR_INVAL, "wye.http.request is not available in this context");
    t_expect_error_on(st, "return function() return wye.emit('x') end", WYE_ERR_INVAL,
                      "wye.emit is not available");
    t_expect_error_on(st,
                      "return function() return coroutine.wrap(function() "
                      "return wye.await(1) end)() end",
                      WYE_ERR_INVAL, "not in a coroutine the script created");
    t_expect_error_on(st,
                      "return function() return tostring(setmetatable({}, {__tostring = "
                      "function() return wye.await(1) end})) end",
                      WYE_ERR_INVAL, "cannot wait for the host here");
    t_expect_error_on(st, "return function() return wye.await(print) end", WYE_ERR_INVAL,
                      "wye.await: arguments: cannot encode a function value");
    assert_int_equal(wlua_state_add_yielding(st, "bad name"), WYE_ERR_INVAL);
    assert_int_equal(wlua_state_add_yielding(st, "json.encode"), WYE_ERR_INVAL);
    assert_int_equal(wlua_state_add_yielding(st, ".x"), WYE_ERR_INVAL);
    /* Registering a real host call replaces the placeholder in later runs. */
    assert_int_equal(wlua_state_add_yielding(st, "http.request"), WYE_OK);
    struct wlua_run *run = NULL;
    assert_int_equal(
        t_run(st, "return function() return wye.http.request('u').status end", NULL, &run),
        WLUA_YIELDED);
    t_expect_pending(run, "http.request", "[\"u\"]");
    assert_int_equal(wlua_run_resume(run, "{\"status\":200}", NULL), WLUA_DONE);
    assert_string_equal(wlua_run_result(run), "200");
    wlua_run_destroy(run);
    wlua_state_destroy(st);
}

static void test_interleaved_runs(void **state)
{
    (void)state;
    struct wlua_state *st = t_await_state();
    struct wlua_run *a = NULL, *b = NULL;
    const char *src = "return function(n) name = n local v = wye.await(n) return name .. v end";
    assert_int_equal(t_run(st, src, "\"A\"", &a), WLUA_YIELDED);
    assert_int_equal(t_run(st, src, "\"B\"", &b), WLUA_YIELDED);
    assert_int_equal(wlua_run_resume(b, "\"1\"", NULL), WLUA_DONE);
    assert_int_equal(wlua_run_resume(a, "\"2\"", NULL), WLUA_DONE);
    assert_string_equal(wlua_run_result(a), "\"A2\"");
    assert_string_equal(wlua_run_result(b), "\"B1\"");
    wlua_run_destroy(a);
    wlua_run_destroy(b);
    wlua_state_destroy(st);
}

static void test_parked_runs(void **state)
{
    (void)state;
    struct wlua_state *st = t_state(16, 2000000, 100);
    assert_int_equal(wlua_state_add_yielding(st, "await"), WYE_OK);
    struct wlua_run *run = NULL;
    /* Time parked waiting for the host does not count against the time limit. */
    assert_int_equal(t_run(st, "return function() return wye.await() end", NULL, &run),
                     WLUA_YIELDED);
    wye_sleep_ms(150);
    assert_int_equal(wlua_run_resume(run, "1", NULL), WLUA_DONE);
    wlua_run_destroy(run);
    /* Cancelled while parked: the resume fails. */
    assert_int_equal(t_run(st, "return function() return wye.await() end", NULL, &run),
                     WLUA_YIELDED);
    wlua_run_cancel(run);
    assert_int_equal(wlua_run_resume(run, "1", NULL), WLUA_ERROR);
    assert_int_equal(wlua_run_err(run), WYE_ERR_CANCELED);
    assert_string_equal(wlua_run_error(run), "x.lua: run cancelled while waiting for wye.await");
    wlua_run_destroy(run);
    /* Destroyed while parked with a pending to-be-closed variable (even a looping one). */
    assert_int_equal(t_run(st,
                           "return function() local x <close> = setmetatable({}, "
                           "{__close = function() while true do end end}) "
                           "return wye.await() end",
                           NULL, &run),
                     WLUA_YIELDED);
    wlua_run_destroy(run);
    t_expect_result_on(st, "return function() return 'ok' end", NULL, "\"ok\"");
    wlua_state_destroy(st);
}

static void test_state_oom(void **state)
{
    (void)state;
    /* Every allocation failure while creating a state or starting a run is clean. */
    for (long n = 0; n < 4000; n += 7) {
        wye_alloc_fail_after(n);
        struct wlua_state *st = wlua_state_create(NULL);
        if (st) {
            struct wlua_run *run = NULL;
            enum wlua_status s = t_run(st, "return function(a) return {a, 1} end", "[1]", &run);
            assert_true(s == WLUA_DONE || s == WLUA_ERROR);
            if (s == WLUA_DONE) {
                assert_string_equal(wlua_run_result(run), "[[1],1]");
            } else {
                assert_non_null(wlua_run_error(run));
            }
            wlua_run_destroy(run);
        }
        wye_alloc_fail_after(-1);
        wlua_state_destroy(st);
    }
}

int main(void)
{
    wye_alloc_install_cjson_hooks();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_entry_points),
        cmocka_unit_test(test_bad_arguments_and_results),
        cmocka_unit_test(test_yield_resume_round_trip),
        cmocka_unit_test(test_yield_across_pcall_and_errors),
        cmocka_unit_test(test_host_call_rules),
        cmocka_unit_test(test_interleaved_runs),
        cmocka_unit_test(test_parked_runs),
        cmocka_unit_test(test_state_oom),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
