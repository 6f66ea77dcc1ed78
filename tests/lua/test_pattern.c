/* The sandbox's step-limited pattern matcher: the same results as Lua 5.4's own string
 * functions over many subjects, patterns and call forms, and pathological patterns that
 * would backtrack for hours now stop at the time, instruction and cancel limits. */
#include <cJSON.h>
#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

#include "tests/lua/wlua_test.h"

/* Runs the driver script in a plain Lua state with the standard library; returns a copy. */
static char *t_reference(const char *src)
{
    lua_State *L = luaL_newstate();
    assert_non_null(L);
    luaL_openlibs(L);
    assert_int_equal(luaL_loadstring(L, src), LUA_OK);
    assert_int_equal(lua_pcall(L, 0, 1, 0), LUA_OK);
    assert_int_equal(lua_pcall(L, 0, 1, 0), LUA_OK);
    char *out = wye_strdup(lua_tostring(L, -1));
    lua_close(L);
    return out;
}

static void test_same_as_lua(void **state)
{
    (void)state;
    const char *src = t_script("pattern_diff.lua");
    char *want = t_reference(src);
    struct wlua_state *st = t_state(64, 500000000, 20000);
    struct wlua_run *run = NULL;
    assert_int_equal(wlua_run_start(st, "pattern_diff.lua", src, strlen(src), NULL, NULL, &run),
                     WLUA_DONE);
    cJSON *j = cJSON_Parse(wlua_run_result(run));
    assert_true(cJSON_IsString(j));
    const char *got = j->valuestring;
    /* Report the first differing case. */
    const char *a = want, *b = got;
    while (*a && *a == *b) {
        a++;
        b++;
    }
    if (*a || *b) {
        while (a > want && a[-1] != '\n') {
            a--;
            b--;
        }
        print_error("first difference:\n  lua:     %.*s\n  sandbox: %.*s\n", (int)strcspn(a, "\n"),
                    a, (int)strcspn(b, "\n"), b);
        fail();
    }
    assert_true(strlen(want) > 100000);
    cJSON_Delete(j);
    wlua_run_destroy(run);
    wlua_state_destroy(st);
    wye_free(want);
}

static void test_backtracking_limited(void **state)
{
    (void)state;
    struct wlua_state *st = t_state(16, 2000000, 5000);
    t_expect_error_on(st, "return function() return (('a'):rep(3000)):find('a-a-a-a-b') end",
                      WYE_ERR_LIMIT, "x.lua:1: instruction limit of 2000000 exceeded");
    t_expect_error_on(st,
                      "return function() local s = ('a'):rep(5000) "
                      "while true do pcall(string.match, s, '(.-)(.-)(.-)b') end end",
                      WYE_ERR_LIMIT, "instruction limit");
    t_expect_error_on(st, "return function() return (('a'):rep(3000)):gsub('a*a*a*a*b', '') end",
                      WYE_ERR_LIMIT, "instruction limit");
    t_expect_error_on(st,
                      "return function() for w in (('a'):rep(3000)):gmatch('a-a-a-a-b') do "
                      "end end",
                      WYE_ERR_LIMIT, "instruction limit");
    wlua_state_destroy(st);
    st = t_state(16, INT64_C(1) << 50, 100);
    t_expect_error_on(st, "return function() return (('a'):rep(3000)):find('a-a-a-a-b') end",
                      WYE_ERR_TIMEOUT, "time limit of 100 ms exceeded");
    /* Common idioms on large subjects stay fast. */
    t_expect_result_on(st,
                       "return function() local s = (' '):rep(10) .. ('x'):rep(100000) .. "
                       "(' '):rep(10) return #s:match('^%s*(.-)%s*$') end",
                       NULL, "100000");
    wlua_state_destroy(st);
}

int main(void)
{
    wye_alloc_install_cjson_hooks();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_same_as_lua),
        cmocka_unit_test(test_backtracking_limited),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
