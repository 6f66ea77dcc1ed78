/* The sandbox's replacements for dangerous base functions (print, load, collectgarbage,
 * setmetatable, pcall, xpcall, coroutine.resume/close) and the `wye` module (log, now,
 * json). Runs on the thread owning the state, inside a run. */
#include <limits.h>
#include <string.h>

#include "common/clock.h"
#include "common/log.h"
#include "lua/wlua_internal.h"

/* print(...): one line to the state's print sink, or to the log at info level. */
static int wlua_print(lua_State *L)
{
    struct wlua_state *st = wlua_state_of(L);
    int n = lua_gettop(L);
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    for (int i = 1; i <= n; i++) {
        if (i > 1) {
            luaL_addchar(&b, '\t');
        }
        luaL_tolstring(L, i, NULL);
        luaL_addvalue(&b);
    }
    luaL_pushresult(&b);
    size_t len;
    const char *s = lua_tolstring(L, -1, &len);
    if (len > WLUA_PRINT_LINE_MAX) {
        len = WLUA_PRINT_LINE_MAX;
    }
    if (st->print) {
        st->print(st->print_ud, s, len);
    } else {
        wye_log(WYE_LOG_INFO, NULL, "lua %s: %.*s", st->cur ? st->cur->name : "?", (int)len, s);
    }
    return 0;
}

/* load(chunk [, chunkname [, mode [, env]]]): strings only, text only. The default
 * environment is the calling run's globals, not the shared base. */
static int wlua_load(lua_State *L)
{
    if (lua_type(L, 1) != LUA_TSTRING) {
        return luaL_error(L, "load: only string chunks are allowed in the sandbox");
    }
    size_t len;
    const char *s = lua_tolstring(L, 1, &len);
    const char *name = luaL_optstring(L, 2, "=(load)");
    const char *mode = luaL_optstring(L, 3, "t");
    if (!strchr(mode, 't')) {
        luaL_pushfail(L);
        lua_pushliteral(L, "load: binary chunks are not allowed in the sandbox");
        return 2;
    }
    bool has_env = !lua_isnone(L, 4);
    if (luaL_loadbufferx(L, s, len, name, "t") != LUA_OK) {
        luaL_pushfail(L);
        lua_insert(L, -2);
        return 2;
    }
    if (has_env) {
        lua_pushvalue(L, 4);
    } else {
        struct wlua_state *st = wlua_state_of(L);
        if (st->cur) {
            lua_rawgeti(L, LUA_REGISTRYINDEX, st->cur->env_ref);
        } else {
            lua_pushnil(L);
        }
    }
    if (!lua_setupvalue(L, -2, 1)) {
        lua_pop(L, 1);
    }
    return 1;
}

/* Calls the original function (upvalue 1) with all arguments; returns all its results. */
static int wlua_call_orig(lua_State *L)
{
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_insert(L, 1);
    lua_call(L, lua_gettop(L) - 1, LUA_MULTRET);
    return lua_gettop(L);
}

static int wlua_collectgarbage(lua_State *L)
{
    const char *opt = luaL_optstring(L, 1, "collect");
    if (strcmp(opt, "collect") != 0 && strcmp(opt, "count") != 0 && strcmp(opt, "step") != 0) {
        return luaL_error(L, "collectgarbage: option '%s' is not allowed in the sandbox", opt);
    }
    return wlua_call_orig(L);
}

/* setmetatable refusing __gc: finalizers run with hooks off, so one could loop forever. */
static int wlua_setmetatable(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    luaL_argexpected(L, lua_type(L, 2) == LUA_TNIL || lua_type(L, 2) == LUA_TTABLE, 2,
                     "nil or table");
    if (lua_type(L, 2) == LUA_TTABLE) {
        lua_pushliteral(L, "__gc");
        if (lua_rawget(L, 2) != LUA_TNIL) {
            return luaL_error(L, "setmetatable: __gc metamethods are not allowed in the sandbox");
        }
        lua_pop(L, 1);
    }
    return wlua_call_orig(L);
}

/* string.rep: an empty piece repeated 2^60 times would loop in C, out of the hook's reach. */
static int wlua_rep(lua_State *L)
{
    size_t len, seplen;
    luaL_checklstring(L, 1, &len);
    lua_Integer n = luaL_checkinteger(L, 2);
    luaL_optlstring(L, 3, "", &seplen);
    if (n <= 0 || len + seplen == 0) {
        lua_pushliteral(L, "");
        return 1;
    }
    if (len + seplen < len || len + seplen > (size_t)INT_MAX / (lua_Unsigned)n) {
        return luaL_error(L, "resulting string too large");
    }
    return wlua_call_orig(L);
}

/* table.move copies in C without hooks: bound the element count. */
static int wlua_move(lua_State *L)
{
    lua_Integer f = luaL_checkinteger(L, 2);
    lua_Integer e = luaL_checkinteger(L, 3);
    if (e >= f && (lua_Unsigned)e - (lua_Unsigned)f >= WLUA_MOVE_MAX) {
        return luaL_error(L, "table.move: too many elements to move (the sandbox allows %d)",
                          (int)WLUA_MOVE_MAX);
    }
    return wlua_call_orig(L);
}

/* Shared end of pcall/xpcall; extra = slots below the `true` placeholder. */
static int wlua_pcall_k(lua_State *L, int status, lua_KContext extra)
{
    if (status != LUA_OK && status != LUA_YIELD) {
        wlua_rethrow_if_tripped(L);
        lua_pushboolean(L, 0);
        lua_pushvalue(L, -2);
        return 2;
    }
    return lua_gettop(L) - (int)extra;
}

static int wlua_pcall(lua_State *L)
{
    luaL_checkany(L, 1);
    lua_pushboolean(L, 1);
    lua_insert(L, 1); /* true, f, args... */
    int status = lua_pcallk(L, lua_gettop(L) - 2, LUA_MULTRET, 0, 0, wlua_pcall_k);
    return wlua_pcall_k(L, status, 0);
}

/* xpcall's message handler wrapper: after a limit error raised from the hook, Lua runs
 * message handlers with hooks disabled, so the script's handler is skipped then. */
static int wlua_xpcall_msgh(lua_State *L)
{
    struct wlua_state *st = wlua_state_of(L);
    if (st->cur && st->cur->tripped) {
        return 1;
    }
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_insert(L, 1);
    lua_call(L, lua_gettop(L) - 1, 1);
    return 1;
}

static int wlua_xpcall(lua_State *L)
{
    int n = lua_gettop(L);
    luaL_checktype(L, 2, LUA_TFUNCTION);
    lua_pushvalue(L, 2);
    lua_pushcclosure(L, wlua_xpcall_msgh, 1);
    lua_replace(L, 2);
    lua_pushboolean(L, 1);
    lua_pushvalue(L, 1);
    lua_rotate(L, 3, 2); /* f, msgh, true, f, args... */
    int status = lua_pcallk(L, n - 2, LUA_MULTRET, 2, 2, wlua_pcall_k);
    return wlua_pcall_k(L, status, 2);
}

/* coroutine.resume / coroutine.close: as the originals, but a tripped limit propagates. */
static int wlua_co_catching(lua_State *L)
{
    int n = wlua_call_orig(L);
    if (n >= 2 && lua_type(L, 1) == LUA_TBOOLEAN && !lua_toboolean(L, 1)) {
        lua_settop(L, 2);
        wlua_rethrow_if_tripped(L);
    }
    return lua_gettop(L);
}

static int wlua_co_guard_k(lua_State *L, int status, lua_KContext ctx)
{
    (void)ctx;
    if (status != LUA_OK && status != LUA_YIELD) {
        return lua_error(L);
    }
    return lua_gettop(L);
}

/* A script coroutine's body runs under this pcall (see wlua_body in wlua_run.c for why). */
static int wlua_co_guard(lua_State *L)
{
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_insert(L, 1);
    int status = lua_pcallk(L, lua_gettop(L) - 1, LUA_MULTRET, 0, 0, wlua_co_guard_k);
    return wlua_co_guard_k(L, status, 0);
}

/* coroutine.create / coroutine.wrap: the original (upvalue 1) on a guarded function. */
static int wlua_co_create(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TFUNCTION);
    lua_settop(L, 1);
    lua_pushcclosure(L, wlua_co_guard, 1);
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_insert(L, 1);
    lua_call(L, 1, 1);
    return 1;
}

static void wlua_wrap(lua_State *L, int t, const char *name, lua_CFunction fn)
{
    lua_getfield(L, t, name);
    lua_pushcclosure(L, fn, 1);
    lua_setfield(L, t, name);
}

void wlua_base_open(lua_State *L, struct wlua_state *st)
{
    int g = lua_gettop(L);
    (void)st;
    wlua_wrap(L, g, "collectgarbage", wlua_collectgarbage);
    wlua_wrap(L, g, "setmetatable", wlua_setmetatable);
    lua_pushcfunction(L, wlua_print);
    lua_setfield(L, g, "print");
    lua_pushcfunction(L, wlua_load);
    lua_setfield(L, g, "load");
    lua_pushcfunction(L, wlua_pcall);
    lua_setfield(L, g, "pcall");
    lua_pushcfunction(L, wlua_xpcall);
    lua_setfield(L, g, "xpcall");
}

void wlua_string_wrap(lua_State *L, int t)
{
    wlua_wrap(L, t, "rep", wlua_rep);
}

void wlua_table_wrap(lua_State *L, int t)
{
    wlua_wrap(L, t, "move", wlua_move);
}

void wlua_coroutine_wrap(lua_State *L, int t)
{
    wlua_wrap(L, t, "resume", wlua_co_catching);
    wlua_wrap(L, t, "close", wlua_co_catching);
    wlua_wrap(L, t, "create", wlua_co_create);
    wlua_wrap(L, t, "wrap", wlua_co_create);
}

/* wye.log(level, msg): level is "debug", "info", "warn" or "error". */
static int wlua_log(lua_State *L)
{
    const char *lv = luaL_checkstring(L, 1);
    enum wye_log_level level;
    if (!wye_log_level_parse(lv, &level) || level == WYE_LOG_OFF) {
        return luaL_error(L, "wye.log: unknown level '%s' (debug, info, warn, error)", lv);
    }
    size_t len;
    const char *msg = luaL_tolstring(L, 2, &len);
    struct wlua_state *st = wlua_state_of(L);
    if (len > WLUA_PRINT_LINE_MAX) {
        len = WLUA_PRINT_LINE_MAX;
    }
    wye_log(level, NULL, "lua %s: %.*s", st->cur ? st->cur->name : "?", (int)len, msg);
    return 0;
}

/* wye.now(): wall-clock milliseconds since the Unix epoch. */
static int wlua_now(lua_State *L)
{
    lua_pushinteger(L, (lua_Integer)wye_wall_ms());
    return 1;
}

void wlua_wye_open(lua_State *L)
{
    lua_newtable(L);
    lua_pushcfunction(L, wlua_log);
    lua_setfield(L, -2, "log");
    lua_pushcfunction(L, wlua_now);
    lua_setfield(L, -2, "now");
    wlua_json_open(L);
    lua_setfield(L, -2, "json");
}
