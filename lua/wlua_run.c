/* Runs: one coroutine per run with its own globals, started and resumed by the host, and the
 * yielding host calls (the lua-nginx-module pattern: the C function records a pending
 * request and lua_yieldk's; the host resumes the coroutine with the answer and the
 * continuation returns it to the script). Runs on the thread owning the state. */
#include <stdio.h>
#include <string.h>

#include <cJSON.h>

#include "common/alloc.h"
#include "common/clock.h"
#include "lua/wlua_internal.h"

#define WLUA_PHASE_CHUNK 1
#define WLUA_PHASE_MAIN 2

/* Replaces the table at -1 by a copy (nested plain tables too, up to depth 3). */
static void wlua_copy_table(lua_State *L, int depth)
{
    int src = lua_gettop(L);
    lua_newtable(L);
    lua_pushnil(L);
    while (lua_next(L, src)) {
        if (depth < 3 && lua_type(L, -1) == LUA_TTABLE) {
            wlua_copy_table(L, depth + 1);
        }
        lua_pushvalue(L, -2);
        lua_insert(L, -2);
        lua_rawset(L, src + 1);
    }
    lua_remove(L, src);
}

/* The coroutine's body: arg 1 the chunk, arg 2 the arguments, upvalue 1 the entry name. */
static int wlua_body_k(lua_State *L, int status, lua_KContext phase)
{
    (void)status;
    if (phase == WLUA_PHASE_CHUNK) {
        /* Stack: chunk, args, chunk's result. Find the entry point. */
        const char *entry = lua_tostring(L, lua_upvalueindex(1));
        int t = lua_type(L, 3);
        if (t == LUA_TTABLE) {
            lua_getfield(L, 3, entry);
        } else if (t == LUA_TNIL) {
            struct wlua_state *st = wlua_state_of(L);
            lua_rawgeti(L, LUA_REGISTRYINDEX, st->cur->env_ref);
            lua_getfield(L, -1, entry);
        } else {
            lua_pushvalue(L, 3);
        }
        if (lua_type(L, -1) != LUA_TFUNCTION) {
            return luaL_error(L,
                              "%s: the script must return a function, or a table with a "
                              "function '%s', or define a global function '%s' (got %s)",
                              wlua_state_of(L)->cur->name, entry, entry, luaL_typename(L, -1));
        }
        lua_pushvalue(L, 2);
        lua_callk(L, 1, 1, WLUA_PHASE_MAIN, wlua_body_k);
    }
    return 1;
}

static int wlua_inner(lua_State *L)
{
    lua_settop(L, 2);
    lua_pushvalue(L, 1);
    lua_callk(L, 0, 1, WLUA_PHASE_CHUNK, wlua_body_k);
    return wlua_body_k(L, LUA_OK, WLUA_PHASE_CHUNK);
}

/* Protected: arg 1 the thread; pushes its traceback from level 1. */
static int wlua_traceback_here(lua_State *L)
{
    luaL_traceback(L, lua_touserdata(L, 1), NULL, 1);
    return 1;
}

/* Message handler of the run's body: records where the error happened and the traceback
 * while the stack is still there. Runs no Lua code (after a limit error raised from the
 * hook, Lua runs message handlers with hooks disabled). Returns the error object as is. */
static int wlua_msgh(lua_State *L)
{
    struct wlua_state *st = wlua_state_of(L);
    struct wlua_run *run = st->cur;
    if (!run || run->traceback) {
        return 1;
    }
    lua_Debug ar;
    for (int level = 1; lua_getstack(L, level, &ar); level++) {
        if (lua_getinfo(L, "Sl", &ar) && ar.currentline > 0) {
            snprintf(run->err_where, sizeof(run->err_where), "%s:%d: ", ar.short_src,
                     ar.currentline);
            break;
        }
    }
    if (lua_checkstack(L, 3)) {
        lua_pushcfunction(L, wlua_traceback_here);
        lua_pushlightuserdata(L, L);
        if (lua_pcall(L, 1, 1, 0) == LUA_OK) {
            run->traceback = wye_strdup(lua_tostring(L, -1));
        }
        lua_pop(L, 1);
    }
    return 1;
}

static int wlua_body_done(lua_State *L, int status, lua_KContext ctx)
{
    (void)ctx;
    if (status != LUA_OK && status != LUA_YIELD) {
        return lua_error(L); /* every to-be-closed variable is closed by now */
    }
    return 1;
}

/* The coroutine's function: runs wlua_inner under a pcall, so that the unwinding (and the
 * __close handlers) happen with hooks enabled again, then rethrows. */
static int wlua_body(lua_State *L)
{
    lua_settop(L, 2);
    lua_pushcfunction(L, wlua_msgh);
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_pushcclosure(L, wlua_inner, 1);
    lua_pushvalue(L, 1);
    lua_pushvalue(L, 2);
    int status = lua_pcallk(L, 2, 1, 3, 0, wlua_body_done);
    return wlua_body_done(L, status, 0);
}

/* Everything wlua_setup needs (passed as light userdata). */
struct wlua_setup {
    struct wlua_run *run;
    const char *src;
    size_t len;
    const char *entry;
    const char *args_json;
    int load_status; /* LUA_OK or the loader's error */
    bool in_args;    /* decoding the arguments */
};

/* Protected, on the main thread: builds the run's globals and coroutine, loads the chunk,
 * decodes the arguments and leaves body, chunk, args on the coroutine's stack. */
static int wlua_setup(lua_State *L)
{
    struct wlua_setup *s = lua_touserdata(L, 1);
    struct wlua_run *run = s->run;

    lua_newtable(L);
    int env = lua_gettop(L);
    lua_rawgetp(L, LUA_REGISTRYINDEX, &wlua_key_libs);
    lua_pushnil(L);
    while (lua_next(L, -2)) {
        wlua_copy_table(L, 1);
        lua_pushvalue(L, -2);
        lua_insert(L, -2);
        lua_rawset(L, env);
    }
    lua_pop(L, 1);
    lua_pushvalue(L, env);
    lua_setfield(L, env, LUA_GNAME);
    lua_newtable(L);
    lua_pushglobaltable(L);
    lua_setfield(L, -2, "__index");
    lua_pushboolean(L, 0);
    lua_setfield(L, -2, "__metatable");
    lua_setmetatable(L, env);
    lua_pushvalue(L, env);
    run->env_ref = luaL_ref(L, LUA_REGISTRYINDEX);

    run->co = lua_newthread(L);
    run->co_ref = luaL_ref(L, LUA_REGISTRYINDEX);

    lua_pushstring(L, s->entry);
    lua_pushcclosure(L, wlua_body, 1);
    lua_pushfstring(L, "@%s", run->name);
    s->load_status = luaL_loadbufferx(L, s->src, s->len, lua_tostring(L, -1), "t");
    if (s->load_status != LUA_OK) {
        return 1;
    }
    lua_remove(L, -2);
    lua_pushvalue(L, env);
    if (!lua_setupvalue(L, -2, 1)) {
        lua_pop(L, 1);
    }
    s->in_args = true;
    if (s->args_json) {
        wlua_json_decode_push(L, s->args_json, strlen(s->args_json));
    } else {
        lua_pushnil(L);
    }
    s->in_args = false;
    lua_xmove(L, run->co, 3);
    return 0;
}

static void wlua_set_msg(struct wlua_run *run, const char *prefix, const char *msg)
{
    char buf[WLUA_MSG_MAX];
    size_t np = strlen(prefix), nm = strlen(msg);
    np = np < sizeof(buf) - 1 ? np : sizeof(buf) - 1;
    nm = nm < sizeof(buf) - 1 - np ? nm : sizeof(buf) - 1 - np;
    memcpy(buf, prefix, np);
    memcpy(buf + np, msg, nm);
    buf[np + nm] = '\0';
    wye_free(run->errmsg);
    run->errmsg = wye_strdup(buf);
}

static void wlua_fail(struct wlua_run *run, enum wye_err err, const char *prefix, const char *msg)
{
    run->status = WLUA_ERROR;
    run->err = err;
    wlua_set_msg(run, prefix, msg);
}

/* "x.lua:12:" for the innermost Lua function on co's stack, or "" (never raises). */
static void wlua_where(lua_State *co, char *out, size_t outlen)
{
    lua_Debug ar;
    out[0] = '\0';
    for (int level = 0; lua_getstack(co, level, &ar); level++) {
        if (lua_getinfo(co, "Sl", &ar) && ar.currentline > 0) {
            snprintf(out, outlen, "%s:%d: ", ar.short_src, ar.currentline);
            return;
        }
    }
}

/* Protected: arg 1 the thread; pushes its traceback. */
static int wlua_traceback_of(lua_State *L)
{
    luaL_traceback(L, lua_touserdata(L, 1), NULL, 0);
    return 1;
}

/* Protected: arg 1 an error object that is not a string; pushes its __tostring text. */
static int wlua_tostring_obj(lua_State *L)
{
    luaL_tolstring(L, 1, NULL);
    return 1;
}

/* The run's coroutine failed with status; its error object is on top of co. */
static void wlua_fail_from_co(struct wlua_run *run, int status)
{
    struct wlua_state *st = run->st;
    lua_State *L = st->L;
    lua_State *co = run->co;
    char where[200];
    if (run->err_where[0]) {
        snprintf(where, sizeof(where), "%s", run->err_where);
    } else {
        wlua_where(co, where, sizeof(where));
    }
    if (!where[0]) {
        snprintf(where, sizeof(where), "%s: ", run->name); /* memory errors carry no line */
    }
    if (run->tripped) {
        const char *w = run->trip_where[0] ? run->trip_where : where;
        char msg[400];
        snprintf(msg, sizeof(msg), "%s%s%s", w, run->trip_where[0] ? " " : "", run->trip_msg);
        wlua_fail(run, run->tripped, "", msg);
    } else if (status == LUA_ERRMEM) {
        wlua_fail(run, WYE_ERR_NOMEM, where, "out of memory");
    } else if (lua_type(co, -1) == LUA_TSTRING) {
        wlua_fail(run, WYE_ERR_INVAL, "", lua_tostring(co, -1));
    } else if (lua_type(co, -1) == LUA_TNUMBER) {
        char num[64];
        if (lua_isinteger(co, -1)) {
            snprintf(num, sizeof(num), "%lld", (long long)lua_tointeger(co, -1));
        } else {
            snprintf(num, sizeof(num), "%.14g", (double)lua_tonumber(co, -1));
        }
        wlua_fail(run, WYE_ERR_INVAL, where, num);
    } else {
        /* A table or other object: ask its __tostring, with a small instruction budget. */
        char msg[WLUA_MSG_MAX];
        int64_t small = st->lim.n_insns_max / st->lim.hook_every - 100;
        if (run->n_hooks < small) {
            run->n_hooks = small;
        }
        const char *type = luaL_typename(co, -1);
        lua_pushcfunction(L, wlua_tostring_obj);
        lua_xmove(co, L, 1); /* moves the error object to the sane main thread */
        if (luaL_getmetafield(L, -1, "__tostring") == LUA_TNIL) {
            snprintf(msg, sizeof(msg), "error object is a %s value", type);
            lua_pop(L, 2);
        } else {
            lua_pop(L, 1);
            if (lua_pcall(L, 1, 1, 0) == LUA_OK) {
                snprintf(msg, sizeof(msg), "%s", lua_tostring(L, -1));
            } else {
                snprintf(msg, sizeof(msg), "error object is a %s value (its __tostring failed: %s)",
                         type, lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : "?");
            }
            lua_pop(L, 1);
        }
        wlua_fail(run, WYE_ERR_INVAL, where, msg);
    }
    if (!run->traceback) {
        lua_pushcfunction(L, wlua_traceback_of);
        lua_pushlightuserdata(L, co);
        if (lua_pcall(L, 1, 1, 0) == LUA_OK) {
            run->traceback = wye_strdup(lua_tostring(L, -1));
        }
        lua_pop(L, 1);
    }
}

/* Resumes the coroutine with nargs values already on its stack and records the outcome. */
static enum wlua_status wlua_continue(struct wlua_run *run, int nargs)
{
    struct wlua_state *st = run->st;
    lua_State *co = run->co;
    st->cur = run;
    run->slice_start_ns = wye_now_ns();
    int nres = 0;
    int status = lua_resume(co, st->L, nargs, &nres);
    run->used_ns += wye_now_ns() - run->slice_start_ns;
    if (status == LUA_OK) {
        struct wye_buf b;
        char err[160];
        wye_buf_init(&b, st->lim.mem_bytes_max);
        enum wye_err rc;
        if (nres == 0) {
            rc = wye_buf_append_str(&b, "null");
            snprintf(err, sizeof(err), "out of memory");
        } else {
            rc = wlua_json_encode(co, lua_gettop(co) - nres + 1, &b, err, sizeof(err));
        }
        if (rc) {
            wlua_fail(run, rc == WYE_ERR_NOMEM ? rc : WYE_ERR_INVAL, run->name, "");
            char msg[512];
            snprintf(msg, sizeof(msg), "%s: the result cannot be encoded: %s", run->name, err);
            wlua_set_msg(run, "", msg);
            wye_buf_cleanup(&b);
        } else {
            run->result = wye_buf_steal(&b, NULL);
            run->status = run->result ? WLUA_DONE : WLUA_ERROR;
            if (!run->result) {
                wlua_fail(run, WYE_ERR_NOMEM, "", "out of memory");
            }
        }
        lua_settop(co, 0);
    } else if (status == LUA_YIELD) {
        lua_pop(co, nres);
        if (!run->pending_name) {
            char where[200];
            wlua_where(co, where, sizeof(where));
            wlua_fail(
                run, WYE_ERR_INVAL, where,
                "attempt to yield from outside a coroutine (coroutine.yield in the run itself)");
        } else {
            run->status = WLUA_YIELDED;
        }
    } else {
        wlua_fail_from_co(run, status);
    }
    st->cur = NULL;
    wlua_hook_reset(st);
    return run->status;
}

enum wlua_status wlua_run_start(struct wlua_state *st, const char *chunkname, const char *src,
                                size_t len, const char *entry, const char *args_json,
                                struct wlua_run **out)
{
    struct wlua_run *run = wye_calloc(1, sizeof(*run));
    *out = run;
    if (!run) {
        return WLUA_ERROR;
    }
    run->st = st;
    run->co_ref = LUA_NOREF;
    run->env_ref = LUA_NOREF;
    atomic_init(&run->cancel, false);
    snprintf(run->name, sizeof(run->name), "%s", chunkname ? chunkname : "script");
    st->n_runs++;
    if (st->cur) {
        wlua_fail(run, WYE_ERR_INVAL, "", "another run is executing on this Lua state");
        return run->status;
    }
    struct wlua_setup s = {
        .run = run,
        .src = src,
        .len = len,
        .entry = entry ? entry : "main",
        .args_json = args_json,
        .load_status = LUA_OK,
    };
    lua_State *L = st->L;
    st->cur = run;
    run->slice_start_ns = wye_now_ns();
    lua_pushcfunction(L, wlua_setup);
    lua_pushlightuserdata(L, &s);
    int rc = lua_pcall(L, 1, 1, 0);
    run->used_ns += wye_now_ns() - run->slice_start_ns;
    st->cur = NULL;
    wlua_hook_reset(st);
    const char *msg = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : "?";
    if (rc != LUA_OK) {
        if (run->tripped) {
            wlua_fail(run, run->tripped, "", run->trip_msg);
        } else if (s.in_args) {
            char pre[200];
            snprintf(pre, sizeof(pre), "%s: arguments: ", run->name);
            wlua_fail(run, rc == LUA_ERRMEM ? WYE_ERR_NOMEM : WYE_ERR_INVAL, pre, msg);
        } else {
            wlua_fail(run, rc == LUA_ERRMEM ? WYE_ERR_NOMEM : WYE_ERR_INTERNAL, "",
                      rc == LUA_ERRMEM ? "out of memory" : msg);
        }
    } else if (s.load_status == LUA_ERRSYNTAX) {
        wlua_fail(run, WYE_ERR_PARSE, "", msg);
    } else if (s.load_status != LUA_OK) {
        wlua_fail(run, run->tripped ? run->tripped : WYE_ERR_NOMEM, "",
                  run->tripped ? run->trip_msg : "out of memory");
    }
    lua_pop(L, 1);
    if (run->status == WLUA_ERROR) {
        return run->status;
    }
    return wlua_continue(run, 2);
}

/* Protected: pushes the host's answer: arg 1 an error message or NULL, arg 2 JSON or NULL. */
static int wlua_push_answer(lua_State *L)
{
    const char *error = lua_touserdata(L, 1);
    const char *json = lua_touserdata(L, 2);
    if (error) {
        lua_pushstring(L, error);
    } else if (json) {
        wlua_json_decode_push(L, json, strlen(json));
    } else {
        lua_pushnil(L);
    }
    return 1;
}

static int wlua_answer(lua_State *L, const char *error, const char *json)
{
    lua_pushcfunction(L, wlua_push_answer);
    lua_pushlightuserdata(L, (void *)error);
    lua_pushlightuserdata(L, (void *)json);
    return lua_pcall(L, 2, 1, 0);
}

enum wlua_status wlua_run_resume(struct wlua_run *run, const char *result_json, const char *error)
{
    if (run->status != WLUA_YIELDED) {
        return run->status;
    }
    struct wlua_state *st = run->st;
    lua_State *L = st->L;
    char name[80];
    snprintf(name, sizeof(name), "%s", run->pending_name);
    wye_free(run->pending_name);
    wye_free(run->pending_args);
    run->pending_name = NULL;
    run->pending_args = NULL;
    run->status = WLUA_ERROR; /* until it yields or finishes again */
    if (atomic_load(&run->cancel)) {
        char msg[320];
        snprintf(msg, sizeof(msg), "%s: run cancelled while waiting for wye.%s", run->name, name);
        wlua_fail(run, WYE_ERR_CANCELED, "", msg);
        return run->status;
    }
    if (st->cur) {
        wlua_fail(run, WYE_ERR_INVAL, "", "another run is executing on this Lua state");
        return run->status;
    }
    st->cur = run;
    char msg[WLUA_MSG_MAX];
    run->resume_error = error != NULL;
    if (error) {
        snprintf(msg, sizeof(msg), "wye.%s: %s", name, error);
    }
    int rc = wlua_answer(L, error ? msg : NULL, error ? NULL : result_json);
    if (rc != LUA_OK && !error && !run->tripped) {
        snprintf(msg, sizeof(msg), "wye.%s: the host's answer is not valid JSON (%s)", name,
                 lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : "out of memory");
        lua_pop(L, 1);
        run->resume_error = true;
        rc = wlua_answer(L, msg, NULL);
    }
    if (rc != LUA_OK) {
        lua_pop(L, 1);
        st->cur = NULL;
        if (run->tripped) {
            wlua_fail(run, run->tripped, "", run->trip_msg);
        } else {
            wlua_fail(run, WYE_ERR_NOMEM, "", "out of memory");
        }
        return run->status;
    }
    st->cur = NULL;
    if (!lua_checkstack(run->co, 2)) {
        lua_pop(L, 1);
        wlua_fail(run, WYE_ERR_NOMEM, "", "out of memory");
        return run->status;
    }
    lua_xmove(L, run->co, 1);
    return wlua_continue(run, 1);
}

/* Continuation of a yielding host call: returns the host's answer or raises its error. */
static int wlua_yielding_k(lua_State *L, int status, lua_KContext ctx)
{
    (void)status;
    (void)ctx;
    struct wlua_state *st = wlua_state_of(L);
    if (st->cur && st->cur->resume_error) {
        st->cur->resume_error = false;
        luaL_where(L, 1);
        lua_insert(L, -2);
        lua_concat(L, 2);
        return lua_error(L);
    }
    return 1;
}

int wlua_yielding_call(lua_State *L)
{
    struct wlua_state *st = wlua_state_of(L);
    const char *name = lua_tostring(L, lua_upvalueindex(1));
    struct wlua_run *run = st->cur;
    if (!run || L != run->co) {
        return luaL_error(L,
                          "wye.%s: host calls are allowed only in the run itself, not in a "
                          "coroutine the script created",
                          name);
    }
    if (!lua_isyieldable(L)) {
        return luaL_error(L,
                          "wye.%s: cannot wait for the host here (inside a metamethod or "
                          "a function called from C)",
                          name);
    }
    int n = lua_gettop(L);
    struct wye_buf b;
    char err[160];
    wye_buf_init(&b, st->lim.mem_bytes_max);
    enum wye_err rc = wye_buf_append(&b, "[", 1);
    for (int i = 1; !rc && i <= n; i++) {
        if (i > 1) {
            rc = wye_buf_append(&b, ",", 1);
        }
        if (!rc) {
            rc = wlua_json_encode(L, i, &b, err, sizeof(err));
        } else {
            snprintf(err, sizeof(err), "out of memory");
        }
    }
    if (!rc) {
        rc = wye_buf_append(&b, "]", 1);
        snprintf(err, sizeof(err), "out of memory");
    }
    char *pname = rc ? NULL : wye_strdup(name);
    if (rc || !pname) {
        wye_buf_cleanup(&b);
        return luaL_error(L, "wye.%s: arguments: %s", name, rc ? err : "out of memory");
    }
    run->pending_name = pname;
    run->pending_args = wye_buf_steal(&b, NULL);
    lua_settop(L, 0);
    return lua_yieldk(L, 0, 0, wlua_yielding_k);
}

void wlua_run_cancel(struct wlua_run *run)
{
    atomic_store(&run->cancel, true);
}

void wlua_run_destroy(struct wlua_run *run)
{
    if (!run) {
        return;
    }
    struct wlua_state *st = run->st;
    if (run->co) {
        /* Closes pending to-be-closed variables; their __close gets almost no budget. */
        if (!run->tripped) {
            run->tripped = WYE_ERR_CANCELED;
            snprintf(run->trip_msg, sizeof(run->trip_msg), "run destroyed");
        }
        struct wlua_run *saved = st->cur;
        st->cur = run;
        lua_resetthread(run->co);
        st->cur = saved;
        wlua_hook_reset(st);
    }
    luaL_unref(st->L, LUA_REGISTRYINDEX, run->co_ref);
    luaL_unref(st->L, LUA_REGISTRYINDEX, run->env_ref);
    wye_free(run->result);
    wye_free(run->errmsg);
    wye_free(run->traceback);
    wye_free(run->pending_name);
    wye_free(run->pending_args);
    st->n_runs--;
    wye_free(run);
}

enum wlua_status wlua_run_status(const struct wlua_run *run)
{
    return run ? run->status : WLUA_ERROR;
}

const char *wlua_run_result(const struct wlua_run *run)
{
    return run && run->status == WLUA_DONE ? run->result : NULL;
}

const char *wlua_run_error(const struct wlua_run *run)
{
    if (!run) {
        return "out of memory";
    }
    if (run->status != WLUA_ERROR) {
        return NULL;
    }
    return run->errmsg ? run->errmsg : "out of memory";
}

const char *wlua_run_traceback(const struct wlua_run *run)
{
    return run && run->traceback ? run->traceback : "";
}

enum wye_err wlua_run_err(const struct wlua_run *run)
{
    if (!run) {
        return WYE_ERR_NOMEM;
    }
    return run->status == WLUA_ERROR ? run->err : WYE_OK;
}

void wlua_run_pending(const struct wlua_run *run, const char **name, const char **args_json)
{
    bool y = run && run->status == WLUA_YIELDED;
    *name = y ? run->pending_name : NULL;
    *args_json = y ? run->pending_args : NULL;
}
