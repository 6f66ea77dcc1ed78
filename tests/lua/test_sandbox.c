/* Sandbox escapes and resource limits: every hostile script ends with a clear error and
 * the host process (and the state, for later runs) stays unharmed. */
#include <pthread.h>
#include <stdatomic.h>
#include <unistd.h>

#include "common/clock.h"
#include "tests/lua/wlua_test.h"

static void test_no_doors_out(void **state)
{
    (void)state;
    t_expect_result(t_script("escape.lua"), "\"\"");
    t_expect_error("return function() return io.open('/etc/passwd') end", WYE_ERR_INVAL,
                   "x.lua:1: attempt to index a nil value (global 'io')");
    t_expect_error("return function() return os.execute('true') end", WYE_ERR_INVAL,
                   "attempt to index a nil value (global 'os')");
    t_expect_error("return function() return require('io') end", WYE_ERR_INVAL,
                   "attempt to call a nil value (global 'require')");
    t_expect_error("return function() return dofile('/etc/passwd') end", WYE_ERR_INVAL,
                   "attempt to call a nil value (global 'dofile')");
    t_expect_error("return function() return debug.getregistry() end", WYE_ERR_INVAL,
                   "global 'debug'");
    t_expect_error("return function() return string.dump(print) end", WYE_ERR_INVAL,
                   "field 'dump'");
}

static void test_load_text_only(void **state)
{
    (void)state;
    /* A hand-made binary chunk header: refused whatever the mode says. */
    t_expect_result("return function() local f, e = load('\\27Lua\\84\\0\\25\\147\\r\\n\\26\\n') "
                    "return e end",
                    "\"attempt to load a binary chunk (mode is 't')\"");
    t_expect_result("return function() local f, e = load('\\27Lua\\84\\0', '=b', 'bt') "
                    "return {f == nil, e} end",
                    "[true,\"attempt to load a binary chunk (mode is 't')\"]");
    t_expect_result("return function() local f, e = load('return 1', 'c', 'b') return e end",
                    "\"load: binary chunks are not allowed in the sandbox\"");
    t_expect_error("return function() return load(function() return 'x' end) end", WYE_ERR_INVAL,
                   "only string chunks");
    /* Loaded text sees the run's own globals, and a given env. */
    t_expect_result("x = 5 return function() return load('return x')() end", "5");
    t_expect_result("return function() return load('return y', 'c', 't', {y = 7})() end", "7");
    t_expect_result("return function() local f, e = load('return +') return e end",
                    "\"(load):1: unexpected symbol near '+'\"");
}

static void test_string_metatable_protected(void **state)
{
    (void)state;
    struct wlua_state *st = t_default();
    t_expect_error_on(st, "return function() getmetatable('').__index = {} end", WYE_ERR_INVAL,
                      "x.lua:1: attempt to index a boolean value");
    t_expect_error_on(st, "return function() setmetatable('', {}) end", WYE_ERR_INVAL,
                      "bad argument #1 to 'setmetatable' (table expected, got string)");
    /* A run that wrecks its own copy of the string table... */
    t_expect_result_on(st,
                       "return function() string.upper = nil string.rep = nil "
                       "return string.upper == nil end",
                       NULL, "true");
    /* ...leaves methods and later runs intact. */
    t_expect_result_on(st, "return function() return ('a'):upper() .. string.upper('b') end", NULL,
                       "\"AB\"");
    wlua_state_destroy(st);
}

static void test_env_and_globals_isolated(void **state)
{
    (void)state;
    struct wlua_state *st = t_default();
    t_expect_error_on(st, "return function() setmetatable(_G, {}) end", WYE_ERR_INVAL,
                      "cannot change a protected metatable");
    t_expect_error_on(st, "return function() setmetatable(_ENV, {__index = function() end}) end",
                      WYE_ERR_INVAL, "cannot change a protected metatable");
    t_expect_result_on(st,
                       "leak = 42 table.insert = nil math.pi = 3 _G.print = nil "
                       "rawset(_ENV, 'pairs', nil) wye.log = nil "
                       "return function() return getmetatable(_ENV) end",
                       NULL, "false");
    t_expect_result_on(st,
                       "return function() return {leak == nil, table.insert ~= nil, "
                       "math.pi > 3.14, print ~= nil, pairs ~= nil, wye.log ~= nil, _G == _ENV} "
                       "end",
                       NULL, "[true,true,true,true,true,true,true]");
    wlua_state_destroy(st);
}

static void test_collectgarbage_restricted(void **state)
{
    (void)state;
    t_expect_error("return function() collectgarbage('stop') end", WYE_ERR_INVAL,
                   "collectgarbage: option 'stop' is not allowed");
    t_expect_error("return function() collectgarbage('generational') end", WYE_ERR_INVAL,
                   "option 'generational' is not allowed");
    t_expect_error("return function() collectgarbage('setpause', 1000) end", WYE_ERR_INVAL,
                   "not allowed");
    t_expect_result("return function() collectgarbage() collectgarbage('step') "
                    "return collectgarbage('count') > 0 end",
                    "true");
    /* Finalizers run with hooks off, so __gc is refused. */
    t_expect_error("return function() setmetatable({}, {__gc = function() while true do end "
                   "end}) end",
                   WYE_ERR_INVAL, "__gc metamethods are not allowed");
}

static void test_coroutine_tricks(void **state)
{
    (void)state;
    t_expect_error("coroutine.yield(1) return function() end", WYE_ERR_INVAL,
                   "attempt to yield from outside a coroutine");
    t_expect_error("return function() coroutine.yield() end", WYE_ERR_INVAL,
                   "attempt to yield from outside a coroutine");
    /* The limit inside a coroutine, resumed again and again. */
    t_expect_error("return function() local co = coroutine.create(function() while true do end "
                   "end) while true do coroutine.resume(co) end end",
                   WYE_ERR_LIMIT, "instruction limit of 2000000 exceeded");
    t_expect_error("return function() while true do pcall(coroutine.wrap(function() while true "
                   "do end end)) end end",
                   WYE_ERR_LIMIT, "instruction limit");
    /* A __close handler that loops, run by coroutine.close. */
    t_expect_error("return function() local co = coroutine.create(function() local x <close> = "
                   "setmetatable({}, {__close = function() while true do end end}) "
                   "coroutine.yield() end) coroutine.resume(co) "
                   "while true do coroutine.close(co) end end",
                   WYE_ERR_LIMIT, "instruction limit");
    /* Ordinary coroutines still work. */
    t_expect_result("return function() local co = coroutine.wrap(function(a) local b = "
                    "coroutine.yield(a + 1) return b * 2 end) return {co(1), co(10)} end",
                    "[2,20]");
}

static void test_instruction_limit(void **state)
{
    (void)state;
    t_expect_error("return function() while true do end end", WYE_ERR_LIMIT,
                   "x.lua:1: instruction limit of 2000000 exceeded");
    t_expect_error(t_script("loop_pcall.lua"), WYE_ERR_LIMIT, "instruction limit");
    t_expect_error("return function() while true do xpcall(function() while true do end end, "
                   "function() while true do end end) end end",
                   WYE_ERR_LIMIT, "instruction limit");
    t_expect_error("return function() string.gsub(string.rep('a', 100000), '.', function() "
                   "pcall(function() while true do end end) end) return 1 end",
                   WYE_ERR_LIMIT, "instruction limit");
    /* The main chunk is limited too. */
    t_expect_error("while true do end", WYE_ERR_LIMIT, "x.lua:1: instruction limit");
}

static void test_time_limit(void **state)
{
    (void)state;
    struct wlua_state *st = t_state(16, INT64_C(1) << 50, 150);
    t_expect_error_on(st, "return function() while true do end end", WYE_ERR_TIMEOUT,
                      "x.lua:1: time limit of 150 ms exceeded");
    t_expect_error_on(st, t_script("loop_pcall.lua"), WYE_ERR_TIMEOUT, "time limit");
    wlua_state_destroy(st);
}

struct t_canceller {
    struct wlua_run *_Atomic run;
};

static void *t_cancel_thread(void *arg)
{
    struct t_canceller *c = arg;
    struct wlua_run *run;
    while ((run = atomic_load(&c->run)) == NULL) {
        wye_sleep_ms(1);
    }
    wye_sleep_ms(30);
    wlua_run_cancel(run);
    return NULL;
}

/* The host yields once so the test learns the run before the loop starts. */
static void test_cancel_from_another_thread(void **state)
{
    (void)state;
    struct wlua_state *st = t_state(16, INT64_C(1) << 50, 60000);
    assert_int_equal(wlua_state_add_yielding(st, "await"), WYE_OK);
    struct wlua_run *run = NULL;
    const char *src = "return function() wye.await() while true do pcall(function() while true "
                      "do end end) end end";
    assert_int_equal(t_run(st, src, NULL, &run), WLUA_YIELDED);
    struct t_canceller c;
    atomic_init(&c.run, NULL);
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, t_cancel_thread, &c), 0);
    atomic_store(&c.run, run);
    assert_int_equal(wlua_run_resume(run, NULL, NULL), WLUA_ERROR);
    pthread_join(th, NULL);
    assert_int_equal(wlua_run_err(run), WYE_ERR_CANCELED);
    assert_non_null(strstr(wlua_run_error(run), "run cancelled"));
    wlua_run_destroy(run);
    /* The state still serves new runs. */
    t_expect_result_on(st, "return function() return 1 end", NULL, "1");
    wlua_state_destroy(st);
}

static void test_memory_limit(void **state)
{
    (void)state;
    struct wlua_state *st = t_default();
    t_expect_error_on(st, "return function() return string.rep('x', 1e9) end", WYE_ERR_TOOBIG,
                      "memory limit of 16 MiB exceeded");
    t_expect_error_on(st, "return function() local t = {} for i = 1, 1e8 do t[i] = i end end",
                      WYE_ERR_TOOBIG, "x.lua: memory limit of 16 MiB exceeded");
    t_expect_error_on(st, "return function() local s = 'x' while true do s = s .. s end end",
                      WYE_ERR_TOOBIG, "memory limit");
    t_expect_error_on(st,
                      "return function() local t = {} while true do t[#t + 1] = "
                      "tostring(#t) .. 'abcdefghijklmnop' end end",
                      WYE_ERR_TOOBIG, "memory limit");
    /* Hard: pcall cannot catch it and carry on. */
    t_expect_error_on(st, "return function() pcall(string.rep, 'x', 1e9) return 'survived' end",
                      WYE_ERR_TOOBIG, "memory limit");
    t_expect_error_on(st,
                      "return function() while true do pcall(function() local t = {} while "
                      "true do t[#t + 1] = {} end end) end end",
                      WYE_ERR_TOOBIG, "memory limit");
    /* Oversized results of string functions are refused before allocating. */
    t_expect_error_on(st, "return function() return ('x'):rep(1 << 40, ',') end", WYE_ERR_INVAL,
                      "resulting string too large");
    /* Everything was given back and the state still works. */
    t_expect_result_on(st, "return function() return #string.rep('ab', 1e6) end", NULL, "2000000");
    assert_true(wlua_state_mem_used(st) < (size_t)8 << 20);
    wlua_state_destroy(st);
}

static void test_deep_recursion(void **state)
{
    (void)state;
    struct wlua_state *st = t_state(64, 50000000, 5000);
    /* Lua stack: either the stack limit or the memory cap, both with a clear message. */
    struct wlua_run *run = NULL;
    assert_int_equal(t_run(st,
                           "local function f(n) return 1 + f(n + 1) end "
                           "return function() return f(1) end",
                           NULL, &run),
                     WLUA_ERROR);
    const char *msg = wlua_run_error(run);
    assert_true(strstr(msg, "x.lua:1: stack overflow") || strstr(msg, "memory limit"));
    wlua_run_destroy(run);
    /* C stack: metamethods and string.gsub calling back into themselves. */
    t_expect_error_on(st,
                      "return function() local t = setmetatable({}, {__index = function(t, k) "
                      "return t[k] end}) return t.x end",
                      WYE_ERR_INVAL, "stack overflow");
    t_expect_error_on(st,
                      "local function f(s) return (string.gsub(s, '.', f)) end "
                      "return function() return f('ab') end",
                      WYE_ERR_INVAL, "stack overflow");
    t_expect_error_on(st,
                      "local t = setmetatable({}, {__tostring = function(t) return "
                      "tostring(t) end}) return function() return tostring(t) end",
                      WYE_ERR_INVAL, "stack overflow");
    t_expect_result_on(st, "return function() return 'still fine' end", NULL, "\"still fine\"");
    wlua_state_destroy(st);
}

static void test_huge_strings(void **state)
{
    (void)state;
    struct wlua_state *st = t_default();
    t_expect_error_on(st, "return function() return string.rep('x', 1 << 40) end", WYE_ERR_INVAL,
                      "x.lua:1: resulting string too large");
    t_expect_error_on(st, "return function() return string.rep('x', 2e9) end", WYE_ERR_TOOBIG,
                      "x.lua: memory limit of 16 MiB exceeded");
    t_expect_error_on(st, "return function() return ('x'):rep(4e6):rep(4) end", WYE_ERR_TOOBIG,
                      "memory limit");
    t_expect_error_on(st, "return function() return string.format('%099999d', 1) end",
                      WYE_ERR_INVAL, "invalid conversion");
    /* C loops the hook cannot interrupt are bounded. */
    t_expect_result_on(st, "return function() return #(''):rep(1e15) .. #(''):rep(1e15, '') end",
                       NULL, "\"00\"");
    t_expect_error_on(st, "return function() table.move({}, 1, 1e13, 1, {}) end", WYE_ERR_INVAL,
                      "x.lua:1: table.move: too many elements to move (the sandbox allows "
                      "16777216)");
    t_expect_result_on(st, "return function() return table.move({1, 2, 3}, 2, 3, 1) end", NULL,
                       "[2,3,3]");
    /* A large (but allowed) result string comes back whole. */
    struct wlua_run *run = NULL;
    assert_int_equal(t_run(st, "return function() return string.rep('y', 1e6) end", NULL, &run),
                     WLUA_DONE);
    assert_int_equal(strlen(wlua_run_result(run)), 1000002);
    wlua_run_destroy(run);
    wlua_state_destroy(st);
}

static void test_error_objects(void **state)
{
    (void)state;
    struct wlua_state *st = t_default();
    t_expect_error_on(st, "local t = {}\nreturn function()\n return t.order.id\nend", WYE_ERR_INVAL,
                      "x.lua:3: attempt to index a nil value (field 'order')");
    t_expect_error_on(st, "return function() error({code = 1}) end", WYE_ERR_INVAL,
                      "x.lua:1: error object is a table value");
    t_expect_error_on(st, "return function() error() end", WYE_ERR_INVAL,
                      "error object is a nil value");
    t_expect_error_on(st, "return function() error(42) end", WYE_ERR_INVAL, "x.lua:1: 42");
    t_expect_error_on(st,
                      "return function() error(setmetatable({}, {__tostring = function() "
                      "return 'custom failure' end})) end",
                      WYE_ERR_INVAL, "x.lua:1: custom failure");
    t_expect_error_on(st,
                      "return function() error(setmetatable({}, {__tostring = function() "
                      "error('boom') end})) end",
                      WYE_ERR_INVAL, "table value (its __tostring failed: x.lua:1: boom)");
    t_expect_error_on(st,
                      "return function() error(setmetatable({}, {__tostring = function() "
                      "return {} end})) end",
                      WYE_ERR_INVAL, "'__tostring' must return a string");
    t_expect_error_on(st,
                      "return function() error(setmetatable({}, {__tostring = function() "
                      "while true do end end})) end",
                      WYE_ERR_INVAL, "__tostring failed: x.lua:1: instruction limit");
    /* The limit that fired in __tostring leaves later runs their whole budget. */
    t_expect_result_on(st, "return function() for i = 1, 1e6 do end return 1 end", NULL, "1");
    t_expect_error_on(st,
                      "return function() error(setmetatable({}, {__tostring = function() "
                      "coroutine.yield() end})) end",
                      WYE_ERR_INVAL, "__tostring failed: attempt to yield");
    /* A giant message is cut, not copied whole. */
    struct wlua_run *run = NULL;
    assert_int_equal(t_run(st, "return function() error(string.rep('e', 1e6)) end", NULL, &run),
                     WLUA_ERROR);
    assert_true(strlen(wlua_run_error(run)) < 4096);
    assert_non_null(strstr(wlua_run_traceback(run), "stack traceback"));
    wlua_run_destroy(run);
    wlua_state_destroy(st);
}

static void t_capture(void *ud, const char *line, size_t len)
{
    char *out = ud;
    size_t have = strlen(out);
    if (have + len + 2 < 256) {
        memcpy(out + have, line, len);
        out[have + len] = '|';
        out[have + len + 1] = '\0';
    }
}

static void test_print_captured(void **state)
{
    (void)state;
    char out[256] = "";
    struct wlua_opts o = {.print = t_capture, .print_ud = out};
    struct wlua_state *st = wlua_state_create(&o);
    assert_non_null(st);
    t_expect_result_on(st,
                       "return function() print('a', 1, nil, true) print() "
                       "print(setmetatable({}, {__tostring = function() return 'T' end})) "
                       "return 0 end",
                       NULL, "0");
    assert_string_equal(out, "a\t1\tnil\ttrue||T|");
    wlua_state_destroy(st);
}

int main(void)
{
    wye_alloc_install_cjson_hooks();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_no_doors_out),
        cmocka_unit_test(test_load_text_only),
        cmocka_unit_test(test_string_metatable_protected),
        cmocka_unit_test(test_env_and_globals_isolated),
        cmocka_unit_test(test_collectgarbage_restricted),
        cmocka_unit_test(test_coroutine_tricks),
        cmocka_unit_test(test_instruction_limit),
        cmocka_unit_test(test_time_limit),
        cmocka_unit_test(test_cancel_from_another_thread),
        cmocka_unit_test(test_memory_limit),
        cmocka_unit_test(test_deep_recursion),
        cmocka_unit_test(test_huge_strings),
        cmocka_unit_test(test_error_objects),
        cmocka_unit_test(test_print_captured),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
