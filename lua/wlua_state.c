/* The sandbox factory: creates a lua_State with a capped allocator, a count hook and the
 * hand-picked library set, and registers host calls. Runs on the thread owning the state.
 *
 * DESIGN. Limits are hard: once the memory cap refuses an allocation, or the hook finds the
 * instruction budget, the time budget or the cancel flag exhausted, the current run is
 * "tripped". From then on the hook fires at every instruction of the tripping thread and
 * raises again, and the sandbox's pcall, xpcall, coroutine.resume and coroutine.close rethrow
 * any error they catch, so `while true do pcall(f) end` cannot swallow a limit. The base
 * globals are only reachable through each run's private _ENV (__index, protected metatable);
 * library tables are copied into every run, so a run can damage only itself. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <lualib.h>

#include "common/alloc.h"
#include "common/clock.h"
#include "common/crypto.h"
#include "common/log.h"
#include "lua/wlua_internal.h"

const char wlua_key_libs = 0;
const char wlua_key_json_array = 0;
const char wlua_json_null_tag = 0;

struct wlua_state *wlua_state_of(lua_State *L)
{
    void *ud = NULL;
    lua_getallocf(L, &ud);
    return ud;
}

void wlua_trip(struct wlua_state *st, enum wye_err err, const char *fmt, ...)
{
    struct wlua_run *run = st->cur;
    if (!run || run->tripped) {
        return;
    }
    run->tripped = err;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(run->trip_msg, sizeof(run->trip_msg), fmt, ap);
    va_end(ap);
}

void wlua_rethrow_if_tripped(lua_State *L)
{
    struct wlua_state *st = wlua_state_of(L);
    if (st->cur && st->cur->tripped) {
        lua_error(L); /* the caught error object is on top */
    }
}

/* A memory trip happens in the allocator, outside the hook: name the script and line where the
 * run was (the innermost Lua line of its coroutine) as "x.lua: memory limit of 64 MiB exceeded
 * at line 3". Only reads the call-info chain (lua_getinfo "Sl" allocates nothing), which is
 * consistent at every allocation. */
static void wlua_mem_where(struct wlua_run *run)
{
    lua_Debug ar;
    if (run->trip_where[0] || !run->co) {
        return;
    }
    for (int level = 0; lua_getstack(run->co, level, &ar); level++) {
        if (lua_getinfo(run->co, "Sl", &ar) && ar.currentline > 0) {
            snprintf(run->trip_where, sizeof(run->trip_where), "%s:", ar.short_src);
            size_t n = strlen(run->trip_msg);
            snprintf(run->trip_msg + n, sizeof(run->trip_msg) - n, " at line %d", ar.currentline);
            return;
        }
    }
}

static void *wlua_alloc(void *ud, void *ptr, size_t osize, size_t nsize)
{
    struct wlua_state *st = ud;
    size_t old = ptr ? osize : 0;
    if (nsize == 0) {
        wye_free(ptr);
        st->mem_used -= old;
        return NULL;
    }
    if (nsize > old && nsize - old > st->lim.mem_bytes_max - st->mem_used) {
        if (st->cur) {
            bool first = !st->cur->tripped;
            wlua_trip(st, WYE_ERR_TOOBIG, "memory limit of %zu MiB exceeded",
                      st->lim.mem_bytes_max >> 20);
            if (first) {
                wlua_mem_where(st->cur);
            }
        } else {
            st->mem_refused = true;
        }
        return NULL;
    }
    void *p = wye_realloc(ptr, nsize);
    if (!p) {
        if (ptr && nsize <= old) {
            return ptr; /* Lua assumes shrinking never fails; the old block still fits */
        }
        return NULL;
    }
    st->mem_used = st->mem_used - old + nsize;
    return p;
}

/* Charges one hook period to the current run and checks its limits; true if it tripped. */
static bool wlua_budget_check(struct wlua_state *st, struct wlua_run *run)
{
    run->n_hooks++;
    int64_t used = run->used_ns + (wye_now_ns() - run->slice_start_ns);
    if (atomic_load(&run->cancel) || (st->interrupted && st->interrupted(st->interrupted_ud))) {
        wlua_trip(st, WYE_ERR_CANCELED, "run cancelled");
    } else if (run->n_hooks > st->lim.n_insns_max / st->lim.hook_every) {
        wlua_trip(st, WYE_ERR_LIMIT, "instruction limit of %lld exceeded (endless loop?)",
                  (long long)st->lim.n_insns_max);
    } else if (used > st->lim.timeout_ms * WYE_NS_PER_MS) {
        wlua_trip(st, WYE_ERR_TIMEOUT, "time limit of %lld ms exceeded",
                  (long long)st->lim.timeout_ms);
    } else {
        return false;
    }
    return true;
}

/* Runs every hook_every instructions of every thread of the state. */
static void wlua_hook(lua_State *L, lua_Debug *ar)
{
    struct wlua_state *st = wlua_state_of(L);
    struct wlua_run *run = st->cur;
    if (!run || (!run->tripped && !wlua_budget_check(st, run))) {
        return;
    }
    /* Tripped: fail at every instruction from now on. */
    lua_sethook(L, wlua_hook, LUA_MASKCOUNT, 1);
    lua_getinfo(L, "Sl", ar);
    if (!run->trip_where[0] && ar->currentline > 0) {
        snprintf(run->trip_where, sizeof(run->trip_where), "%s:%d:", ar->short_src,
                 ar->currentline);
    }
    lua_pushfstring(L, "%s %s", run->trip_where, run->trip_msg);
    lua_error(L);
}

void wlua_budget_tick(lua_State *L)
{
    struct wlua_state *st = wlua_state_of(L);
    struct wlua_run *run = st->cur;
    if (!run || (!run->tripped && !wlua_budget_check(st, run))) {
        return;
    }
    lua_Debug ar;
    if (!run->trip_where[0] && lua_getstack(L, 1, &ar) && lua_getinfo(L, "Sl", &ar) &&
        ar.currentline > 0) {
        snprintf(run->trip_where, sizeof(run->trip_where), "%s:%d:", ar.short_src, ar.currentline);
    }
    lua_pushfstring(L, "%s %s", run->trip_where, run->trip_msg);
    lua_error(L);
}

void wlua_hook_reset(struct wlua_state *st)
{
    lua_sethook(st->L, wlua_hook, LUA_MASKCOUNT, st->lim.hook_every);
}

/* Removes the named fields of the table at t. */
static void wlua_remove(lua_State *L, int t, const char *const *names)
{
    for (; *names; names++) {
        lua_pushnil(L);
        lua_setfield(L, t, *names);
    }
}

/* Seeds math.random from the DRBG (or the clock if it is not seeded) and drops randomseed,
 * so one run cannot make another's numbers predictable. math table at t. */
static void wlua_math_seed(lua_State *L, int t)
{
    lua_Integer seed[2];
    if (wye_random(seed, sizeof(seed)) != WYE_OK) {
        seed[0] = (lua_Integer)wye_now_ns();
        seed[1] = (lua_Integer)(uintptr_t)L ^ (lua_Integer)time(NULL);
    }
    lua_getfield(L, t, "randomseed");
    lua_pushinteger(L, seed[0]);
    lua_pushinteger(L, seed[1]);
    lua_call(L, 2, 0);
    lua_pushnil(L);
    lua_setfield(L, t, "randomseed");
}

/* Protected: opens the libraries and builds the templates (arg 1: the state). */
static int wlua_open_all(lua_State *L)
{
    struct wlua_state *st = lua_touserdata(L, 1);
    static const char *const base_out[] = {"dofile", "loadfile", "warn", NULL};
    static const char *const string_out[] = {"dump", NULL};

    luaL_requiref(L, LUA_GNAME, luaopen_base, 0);
    int g = lua_gettop(L);
    wlua_remove(L, g, base_out);
    wlua_base_open(L, st);

    lua_newtable(L); /* the templates */
    int libs = lua_gettop(L);
    luaL_requiref(L, LUA_STRLIBNAME, luaopen_string, 0);
    wlua_remove(L, lua_gettop(L), string_out);
    wlua_string_wrap(L, lua_gettop(L));
    wlua_pattern_open(L, lua_gettop(L));
    lua_setfield(L, libs, LUA_STRLIBNAME);
    luaL_requiref(L, LUA_TABLIBNAME, luaopen_table, 0);
    wlua_table_wrap(L, lua_gettop(L));
    lua_setfield(L, libs, LUA_TABLIBNAME);
    luaL_requiref(L, LUA_MATHLIBNAME, luaopen_math, 0);
    wlua_math_seed(L, lua_gettop(L));
    lua_setfield(L, libs, LUA_MATHLIBNAME);
    luaL_requiref(L, LUA_UTF8LIBNAME, luaopen_utf8, 0);
    lua_setfield(L, libs, LUA_UTF8LIBNAME);
    luaL_requiref(L, LUA_COLIBNAME, luaopen_coroutine, 0);
    wlua_coroutine_wrap(L, lua_gettop(L));
    lua_setfield(L, libs, LUA_COLIBNAME);
    wlua_wye_open(L);
    lua_setfield(L, libs, "wye");
    lua_rawsetp(L, LUA_REGISTRYINDEX, &wlua_key_libs);

    /* The shared string metatable: scripts can neither see nor change it. */
    lua_pushliteral(L, "");
    if (lua_getmetatable(L, -1)) {
        lua_pushboolean(L, 0);
        lua_setfield(L, -2, "__metatable");
        lua_pop(L, 1);
    }
    lua_pop(L, 1);

    /* luaL_requiref left the libraries in package.loaded (no `package` is reachable) and
     * the globals; runs get copies, so the shared ones leave the globals. */
    static const char *const libs_out[] = {LUA_STRLIBNAME,  LUA_TABLIBNAME, LUA_MATHLIBNAME,
                                           LUA_UTF8LIBNAME, LUA_COLIBNAME,  NULL};
    wlua_remove(L, g, libs_out);
    lua_pushnil(L);
    lua_setfield(L, g, LUA_GNAME); /* each run's _ENV gets its own _G */
    return 0;
}

static enum wye_err wlua_add(struct wlua_state *st, const char *name, bool real);

struct wlua_state *wlua_state_create(const struct wlua_opts *opts)
{
    struct wlua_opts o = {0};
    if (opts) {
        o = *opts;
    }
    struct wlua_state *st = wye_calloc(1, sizeof(*st));
    if (!st) {
        goto fail;
    }
    st->lim = o.limits;
    if (!st->lim.mem_bytes_max) {
        st->lim.mem_bytes_max = WLUA_MEM_DEFAULT;
    }
    if (st->lim.n_insns_max <= 0) {
        st->lim.n_insns_max = WLUA_INSNS_DEFAULT;
    }
    if (st->lim.timeout_ms <= 0) {
        st->lim.timeout_ms = WLUA_TIMEOUT_MS_DEFAULT;
    }
    if (st->lim.hook_every <= 0) {
        st->lim.hook_every = WLUA_HOOK_EVERY_DEFAULT;
    }
    if (st->lim.n_insns_max < st->lim.hook_every) {
        st->lim.hook_every = (int)st->lim.n_insns_max;
    }
    st->print = o.print;
    st->print_ud = o.print_ud;
    st->interrupted = o.interrupted;
    st->interrupted_ud = o.interrupted_ud;
    st->L = lua_newstate(wlua_alloc, st);
    if (!st->L) {
        goto fail_state;
    }
    lua_atpanic(st->L, NULL);
    lua_sethook(st->L, wlua_hook, LUA_MASKCOUNT, st->lim.hook_every);
    lua_pushcfunction(st->L, wlua_open_all);
    lua_pushlightuserdata(st->L, st);
    if (lua_pcall(st->L, 1, 0, 0) != LUA_OK) {
        goto fail_open;
    }
    /* Placeholders until the router registers the real ones. */
    static const char *const later[] = {"chat", "http.request", "emit", NULL};
    for (const char *const *n = later; *n; n++) {
        if (wlua_add(st, *n, false) != WYE_OK) {
            goto fail_open;
        }
    }
    return st;

fail_open:
    lua_close(st->L);
fail_state:
    wye_free(st);
fail:
    return NULL;
}

void wlua_state_destroy(struct wlua_state *st)
{
    if (!st) {
        return;
    }
    WYE_ASSERT(st->n_runs == 0);
    lua_close(st->L);
    wye_free(st);
}

size_t wlua_state_mem_used(const struct wlua_state *st)
{
    return st->mem_used;
}

/* Placeholder for a host call nobody registered: raises a clear error. */
static int wlua_unavailable(lua_State *L)
{
    return luaL_error(L, "wye.%s is not available in this context",
                      lua_tostring(L, lua_upvalueindex(1)));
}

/* Protected: arg 1 name, arg 2 boolean (true: yielding; false: placeholder). */
static int wlua_register(lua_State *L)
{
    const char *name = lua_touserdata(L, 1);
    bool real = lua_toboolean(L, 2);
    lua_pushstring(L, name);
    lua_replace(L, 1);
    lua_rawgetp(L, LUA_REGISTRYINDEX, &wlua_key_libs);
    lua_getfield(L, -1, "wye");
    const char *dot;
    const char *p = name;
    while ((dot = strchr(p, '.')) != NULL) {
        lua_pushlstring(L, p, (size_t)(dot - p));
        lua_pushvalue(L, -1);
        if (lua_rawget(L, -3) != LUA_TTABLE) {
            lua_pop(L, 1);
            lua_newtable(L);
            lua_pushvalue(L, -2);
            lua_pushvalue(L, -2);
            lua_rawset(L, -5);
        }
        lua_remove(L, -2);
        lua_remove(L, -2);
        p = dot + 1;
    }
    lua_pushvalue(L, 1);
    lua_pushcclosure(L, real ? wlua_yielding_call : wlua_unavailable, 1);
    lua_setfield(L, -2, p);
    return 0;
}

static bool wlua_name_ok(const char *name)
{
    size_t n = strlen(name);
    if (n == 0 || n > 64 || name[0] == '.' || name[n - 1] == '.' || strstr(name, "..")) {
        return false;
    }
    for (const char *c = name; *c; c++) {
        if (!(*c == '.' || *c == '_' || (*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') ||
              (*c >= '0' && *c <= '9'))) {
            return false;
        }
    }
    return strncmp(name, "json", 4) != 0 || (name[4] != '\0' && name[4] != '.');
}

static enum wye_err wlua_add(struct wlua_state *st, const char *name, bool real)
{
    if (!name || !wlua_name_ok(name)) {
        return WYE_ERR_INVAL;
    }
    lua_State *L = st->L;
    lua_pushcfunction(L, wlua_register);
    lua_pushlightuserdata(L, (void *)name);
    lua_pushboolean(L, real);
    if (lua_pcall(L, 2, 0, 0) != LUA_OK) {
        lua_pop(L, 1);
        return WYE_ERR_NOMEM;
    }
    return WYE_OK;
}

enum wye_err wlua_state_add_yielding(struct wlua_state *st, const char *name)
{
    return wlua_add(st, name, true);
}
