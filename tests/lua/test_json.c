/* wye.json: round trips, arrays vs objects, the null sentinel, and clear errors for cycles,
 * NaN/inf, sparse or mixed tables, nesting beyond the cap and malformed text. */
#include "tests/lua/wlua_test.h"

static void test_round_trips(void **state)
{
    (void)state;
    struct wlua_state *st = t_default();
    t_expect_result_on(st,
                       "return function() return wye.json.encode(wye.json.decode("
                       "'{\"a\":[1,2.5,-3,{\"b\":null},[],{}],\"c\":\"x\\\\n\\\\u00e9\"}'"
                       ").a) end",
                       NULL, "\"[1,2.5,-3,{\\\"b\\\":null},[],{}]\"");
    t_expect_result_on(st,
                       "return function() local t = wye.json.decode('{\"c\":\"x\\\\n\\\\u00e9\"}') "
                       "return t.c == 'x\\n\\u{e9}' end",
                       NULL, "true");
    t_expect_result_on(st,
                       "return function() return {0.1, 1e300, -0.5, 9007199254740993, "
                       "math.maxinteger, 'q\"\\\\\\1'} end",
                       NULL,
                       "[0.1,1e+300,-0.5,9007199254740993,"
                       "9223372036854775807,\"q\\\"\\\\\\u0001\"]");
    t_expect_result_on(st, "return function(a) return a end", "{\"k\":[true,false,null,\"s\",1.5]}",
                       "{\"k\":[true,false,null,\"s\",1.5]}");
    wlua_state_destroy(st);
}

static void test_null_and_arrays(void **state)
{
    (void)state;
    struct wlua_state *st = t_default();
    t_expect_result_on(st,
                       "return function() local j = wye.json "
                       "return {j.decode('null') == j.null, j.decode('[null]')[1] == j.null, "
                       "j.encode({}), j.encode(j.array()), j.encode(j.array({1})), "
                       "j.encode(j.decode('[]')), j.encode(j.null), j.encode(nil)} end",
                       NULL, "[true,true,\"{}\",\"[]\",\"[1]\",\"[]\",\"null\",\"null\"]");
    t_expect_error_on(st, "return function() return wye.json.array(setmetatable({}, {})) end",
                      WYE_ERR_INVAL, "wye.json.array: the table already has a metatable");
    t_expect_result_on(st, "return function() return getmetatable(wye.json.array()) end", NULL,
                       "\"json.array\"");
    wlua_state_destroy(st);
}

static void test_encode_errors(void **state)
{
    (void)state;
    struct wlua_state *st = t_default();
    t_expect_error_on(st, "return function() local t = {} t.t = {t} return wye.json.encode(t) end",
                      WYE_ERR_INVAL,
                      "x.lua:1: wye.json.encode: cannot encode a table that "
                      "contains itself (cycle)");
    t_expect_error_on(st, "return function() return wye.json.encode({0/0}) end", WYE_ERR_INVAL,
                      "cannot encode NaN or infinity");
    t_expect_error_on(st, "return function() return wye.json.encode(math.huge) end", WYE_ERR_INVAL,
                      "NaN or infinity");
    t_expect_error_on(st, "return function() return wye.json.encode({1, nil, 3}) end",
                      WYE_ERR_INVAL, "sparse array");
    t_expect_error_on(st, "return function() return wye.json.encode({1, a = 2}) end", WYE_ERR_INVAL,
                      "mixing integer and string keys");
    t_expect_error_on(st, "return function() return wye.json.encode({[true] = 1}) end",
                      WYE_ERR_INVAL, "neither a string nor a positive integer");
    t_expect_error_on(st, "return function() return wye.json.encode({f = print}) end",
                      WYE_ERR_INVAL, "cannot encode a function value");
    t_expect_error_on(st,
                      "return function() local t = {} for i = 1, 150 do t = {t} end "
                      "return wye.json.encode(t) end",
                      WYE_ERR_INVAL, "JSON nesting deeper than 100");
    /* The result of a run is encoded the same way. */
    t_expect_error_on(st, "return function() local t = {} t[1] = t return t end", WYE_ERR_INVAL,
                      "x.lua: the result cannot be encoded: cannot encode a table that contains "
                      "itself (cycle)");
    wlua_state_destroy(st);
}

static void test_decode_errors(void **state)
{
    (void)state;
    struct wlua_state *st = t_default();
    t_expect_error_on(st, "return function() return wye.json.decode('{\"a\":') end", WYE_ERR_INVAL,
                      "x.lua:1: invalid JSON at byte");
    t_expect_error_on(st, "return function() return wye.json.decode('[1] x') end", WYE_ERR_INVAL,
                      "unexpected text at byte 4");
    t_expect_error_on(st,
                      "return function() return wye.json.decode(string.rep('[', 150) .. "
                      "string.rep(']', 150)) end",
                      WYE_ERR_INVAL, "JSON nesting deeper than 100");
    t_expect_error_on(st, "return function() return wye.json.decode(string.rep('[', 100000)) end",
                      WYE_ERR_INVAL, "invalid JSON");
    t_expect_error_on(st, "return function() return wye.json.decode({}) end", WYE_ERR_INVAL,
                      "bad argument #1 to 'decode' (string expected, got table)");
    /* 1e999 parses to infinity, which json.encode could never write back */
    t_expect_error_on(st, "return function() return wye.json.decode('[1, -1e999]') end",
                      WYE_ERR_INVAL, "invalid JSON: a number is out of range");
    t_expect_result_on(st, "return function() return wye.json.decode(' 12 ') end", NULL, "12");
    wlua_state_destroy(st);
}

/* Random and mutated texts: decode either succeeds or fails cleanly; successes re-encode. */
static void test_decode_garbage(void **state)
{
    (void)state;
    struct wlua_state *st = t_state(16, 50000000, 5000);
    t_expect_result_on(
        st,
        "return function()\n"
        "  local alpha = '[]{}\\\",:0123456789.-+eEtruefalsn \\\\u/\\1\\255'\n"
        "  local seeds = {'{\"a\":[1,2,{\"b\":null}],\"c\":\"x\"}', '[[[]]]', "
        "'\"\\\\ud83d\\\\ude00\"', '-0.5e-3'}\n"
        "  local ok_n, bad_n = 0, 0\n"
        "  for i = 1, 3000 do\n"
        "    local s\n"
        "    if i % 2 == 0 then\n"
        "      local t = {}\n"
        "      for j = 1, math.random(0, 24) do\n"
        "        local k = math.random(#alpha) t[j] = alpha:sub(k, k)\n"
        "      end\n"
        "      s = table.concat(t)\n"
        "    else\n"
        "      s = seeds[i % #seeds + 1]\n"
        "      local k = math.random(#s)\n"
        "      s = s:sub(1, k - 1) .. alpha:sub(k % #alpha + 1, k % #alpha + 1) .. s:sub(k + 1)\n"
        "    end\n"
        "    local ok, v = pcall(wye.json.decode, s)\n"
        "    if ok then\n"
        "      ok_n = ok_n + 1\n"
        "      assert(type(wye.json.encode(v)) == 'string')\n"
        "    else\n"
        "      bad_n = bad_n + 1\n"
        "      assert(v:find('JSON', 1, true), v)\n"
        "    end\n"
        "  end\n"
        "  return ok_n > 0 and bad_n > 0\n"
        "end",
        NULL, "true");
    wlua_state_destroy(st);
}

int main(void)
{
    wye_alloc_install_cjson_hooks();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trips),    cmocka_unit_test(test_null_and_arrays),
        cmocka_unit_test(test_encode_errors),  cmocka_unit_test(test_decode_errors),
        cmocka_unit_test(test_decode_garbage),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
