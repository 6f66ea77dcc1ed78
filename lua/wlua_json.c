/* JSON <-> Lua values for the sandbox (wye.json and the host's arguments and results).
 * Encoding never raises (it uses only raw, non-allocating Lua API calls) so the host can call
 * it outside a protected call; decoding parses with cJSON, then builds tables (may raise).
 * Mapping: JSON null <-> wye.json.null (a light userdata); a table whose keys are exactly
 * 1..n, or that carries the wye.json.array marker, is an array; other tables need string keys.
 * Runs on the thread owning the state. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cJSON.h>

#include "lua/wlua_internal.h"

struct wlua_enc {
    lua_State *L;
    struct wye_buf *out;
    char *err;
    size_t errlen;
    const void *stack[WLUA_JSON_DEPTH_MAX]; /* tables being encoded, for cycle detection */
    int depth;
};

static enum wye_err wlua_enc_fail(struct wlua_enc *e, enum wye_err rc, const char *what)
{
    snprintf(e->err, e->errlen, "%s", what);
    return rc;
}

static enum wye_err wlua_enc_number(struct wlua_enc *e, int idx)
{
    if (lua_isinteger(e->L, idx)) {
        return wye_buf_printf(e->out, "%lld", (long long)lua_tointeger(e->L, idx));
    }
    double d = lua_tonumber(e->L, idx);
    if (!isfinite(d)) {
        return wlua_enc_fail(e, WYE_ERR_INVAL, "cannot encode NaN or infinity as JSON");
    }
    char tmp[40];
    snprintf(tmp, sizeof(tmp), "%.14g", d);
    if (strtod(tmp, NULL) != d) {
        snprintf(tmp, sizeof(tmp), "%.17g", d);
    }
    return wye_buf_append_str(e->out, tmp);
}

static enum wye_err wlua_enc_value(struct wlua_enc *e, int idx);

static bool wlua_is_array_marked(lua_State *L, int idx)
{
    if (!lua_getmetatable(L, idx)) {
        return false;
    }
    lua_rawgetp(L, LUA_REGISTRYINDEX, &wlua_key_json_array);
    bool marked = lua_rawequal(L, -1, -2);
    lua_pop(L, 2);
    return marked;
}

static enum wye_err wlua_enc_table(struct wlua_enc *e, int idx)
{
    lua_State *L = e->L;
    const void *self = lua_topointer(L, idx);
    for (int i = 0; i < e->depth; i++) {
        if (e->stack[i] == self) {
            return wlua_enc_fail(e, WYE_ERR_INVAL,
                                 "cannot encode a table that contains itself (cycle)");
        }
    }
    if (e->depth >= WLUA_JSON_DEPTH_MAX) {
        char msg[80];
        snprintf(msg, sizeof(msg), "JSON nesting deeper than %d", WLUA_JSON_DEPTH_MAX);
        return wlua_enc_fail(e, WYE_ERR_TOOBIG, msg);
    }
    if (!lua_checkstack(L, 4)) {
        return wlua_enc_fail(e, WYE_ERR_NOMEM, "out of Lua stack space");
    }
    /* Classify: count keys, the largest integer key, and whether strings appear. */
    lua_Integer n = 0, max = 0;
    bool strings = false, others = false;
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        lua_pop(L, 1);
        n++;
        if (lua_type(L, -1) == LUA_TSTRING) {
            strings = true;
        } else if (lua_isinteger(L, -1) && lua_tointeger(L, -1) > 0) {
            lua_Integer k = lua_tointeger(L, -1);
            max = k > max ? k : max;
        } else {
            others = true;
        }
    }
    if (others) {
        return wlua_enc_fail(
            e, WYE_ERR_INVAL,
            "cannot encode a table key that is neither a string nor a positive integer");
    }
    bool array = !strings && (n > 0 || wlua_is_array_marked(L, idx));
    if (!strings && n > 0 && max != n) {
        return wlua_enc_fail(e, WYE_ERR_INVAL, "cannot encode a sparse array (keys must be 1..n)");
    }
    if (strings && max > 0) {
        return wlua_enc_fail(e, WYE_ERR_INVAL,
                             "cannot encode a table mixing integer and string keys");
    }
    e->stack[e->depth++] = self;
    enum wye_err rc = wye_buf_append(e->out, array ? "[" : "{", 1);
    if (array) {
        for (lua_Integer i = 1; !rc && i <= n; i++) {
            if (i > 1) {
                rc = wye_buf_append(e->out, ",", 1);
            }
            lua_rawgeti(L, idx, i);
            if (!rc) {
                rc = wlua_enc_value(e, lua_gettop(L));
            }
            lua_pop(L, 1);
        }
    } else {
        bool first = true;
        lua_pushnil(L);
        while (!rc && lua_next(L, idx)) {
            size_t klen;
            const char *k = lua_tolstring(L, -2, &klen); /* a string: no conversion */
            if (!first) {
                rc = wye_buf_append(e->out, ",", 1);
            }
            first = false;
            if (!rc) {
                rc = wye_buf_append_json_str(e->out, k, klen);
            }
            if (!rc) {
                rc = wye_buf_append(e->out, ":", 1);
            }
            if (!rc) {
                rc = wlua_enc_value(e, lua_gettop(L));
            }
            lua_pop(L, 1);
        }
        if (rc) {
            lua_pop(L, 1); /* the key lua_next left */
        }
    }
    e->depth--;
    if (!rc) {
        rc = wye_buf_append(e->out, array ? "]" : "}", 1);
    }
    if (rc == WYE_ERR_TOOBIG && !e->err[0]) {
        wlua_enc_fail(e, rc, "the JSON text exceeds its size limit");
    } else if (rc == WYE_ERR_NOMEM && !e->err[0]) {
        wlua_enc_fail(e, rc, "out of memory");
    }
    return rc;
}

static enum wye_err wlua_enc_value(struct wlua_enc *e, int idx)
{
    lua_State *L = e->L;
    enum wye_err rc;
    switch (lua_type(L, idx)) {
    case LUA_TNIL:
        rc = wye_buf_append_str(e->out, "null");
        break;
    case LUA_TBOOLEAN:
        rc = wye_buf_append_str(e->out, lua_toboolean(L, idx) ? "true" : "false");
        break;
    case LUA_TNUMBER:
        rc = wlua_enc_number(e, idx);
        break;
    case LUA_TSTRING: {
        size_t len;
        const char *s = lua_tolstring(L, idx, &len);
        rc = wye_buf_append_json_str(e->out, s, len);
        break;
    }
    case LUA_TTABLE:
        return wlua_enc_table(e, idx);
    case LUA_TLIGHTUSERDATA:
        if (lua_touserdata(L, idx) == (void *)&wlua_json_null_tag) {
            rc = wye_buf_append_str(e->out, "null");
            break;
        }
        /* fall through */
    default: {
        char msg[64];
        snprintf(msg, sizeof(msg), "cannot encode a %s value as JSON", luaL_typename(L, idx));
        return wlua_enc_fail(e, WYE_ERR_INVAL, msg);
    }
    }
    if (rc && !e->err[0]) {
        return wlua_enc_fail(
            e, rc, rc == WYE_ERR_TOOBIG ? "the JSON text exceeds its size limit" : "out of memory");
    }
    return rc;
}

enum wye_err wlua_json_encode(lua_State *L, int idx, struct wye_buf *out, char *err, size_t errlen)
{
    struct wlua_enc e = {.L = L, .out = out, .err = err, .errlen = errlen};
    err[0] = '\0';
    int top = lua_gettop(L);
    enum wye_err rc = wlua_enc_value(&e, lua_absindex(L, idx));
    lua_settop(L, top);
    return rc;
}

static void wlua_push_cjson(lua_State *L, const cJSON *j, int depth)
{
    if (depth > WLUA_JSON_DEPTH_MAX) {
        luaL_error(L, "JSON nesting deeper than %d", WLUA_JSON_DEPTH_MAX);
    }
    luaL_checkstack(L, 3, "JSON nesting");
    if (cJSON_IsNull(j)) {
        lua_pushlightuserdata(L, (void *)&wlua_json_null_tag);
    } else if (cJSON_IsFalse(j)) {
        lua_pushboolean(L, 0);
    } else if (cJSON_IsTrue(j)) {
        lua_pushboolean(L, 1);
    } else if (cJSON_IsNumber(j)) {
        double d = j->valuedouble;
        if (!isfinite(d)) {
            /* e.g. 1e999: Lua would hold an infinity that json.encode then refuses */
            luaL_error(L, "invalid JSON: a number is out of range (beyond a double)");
        }
        if (d == floor(d) && d >= -9007199254740992.0 && d <= 9007199254740992.0) {
            lua_pushinteger(L, (lua_Integer)d);
        } else {
            lua_pushnumber(L, d);
        }
    } else if (cJSON_IsString(j)) {
        lua_pushstring(L, j->valuestring);
    } else if (cJSON_IsArray(j)) {
        lua_newtable(L);
        lua_Integer i = 1;
        for (const cJSON *c = j->child; c; c = c->next) {
            wlua_push_cjson(L, c, depth + 1);
            lua_rawseti(L, -2, i++);
        }
        lua_rawgetp(L, LUA_REGISTRYINDEX, &wlua_key_json_array);
        lua_setmetatable(L, -2);
    } else if (cJSON_IsObject(j)) {
        lua_newtable(L);
        for (const cJSON *c = j->child; c; c = c->next) {
            lua_pushstring(L, c->string);
            wlua_push_cjson(L, c, depth + 1);
            lua_rawset(L, -3);
        }
    } else {
        luaL_error(L, "invalid JSON value");
    }
}

/* Frees the parsed tree when the Lua side raises midway (a to-be-closed userdata). */
static int wlua_cjson_gc(lua_State *L)
{
    cJSON **box = lua_touserdata(L, 1);
    if (box && *box) {
        cJSON_Delete(*box);
        *box = NULL;
    }
    return 0;
}

void wlua_json_decode_push(lua_State *L, const char *text, size_t len)
{
    cJSON **box = lua_newuserdatauv(L, sizeof(*box), 0);
    *box = NULL;
    lua_newtable(L);
    lua_pushcfunction(L, wlua_cjson_gc);
    lua_setfield(L, -2, "__close");
    lua_setmetatable(L, -2);
    int slot = lua_gettop(L);
    lua_toclose(L, slot);
    const char *end = NULL;
    *box = cJSON_ParseWithLengthOpts(text, len, &end, 0);
    if (!*box) {
        size_t at = end && end >= text && end <= text + len ? (size_t)(end - text) : 0;
        luaL_error(L, "invalid JSON at byte %d", (int)at);
    }
    while (end && end < text + len &&
           (*end == ' ' || *end == '\t' || *end == '\n' || *end == '\r')) {
        end++;
    }
    if (end && end < text + len) {
        luaL_error(L, "invalid JSON: unexpected text at byte %d", (int)(end - text));
    }
    wlua_push_cjson(L, *box, 1);
    lua_closeslot(L, slot);
    lua_remove(L, slot);
}

static int wlua_buf_close(lua_State *L)
{
    struct wye_buf *b = lua_touserdata(L, 1);
    if (b) {
        wye_buf_cleanup(b);
    }
    return 0;
}

static int wlua_l_encode(lua_State *L)
{
    luaL_checkany(L, 1);
    lua_settop(L, 1);
    struct wlua_state *st = wlua_state_of(L);
    /* The buffer lives in a to-be-closed userdata so a raise cannot leak it. */
    struct wye_buf *b = lua_newuserdatauv(L, sizeof(*b), 0);
    wye_buf_init(b, st->lim.mem_bytes_max);
    lua_newtable(L);
    lua_pushcfunction(L, wlua_buf_close);
    lua_setfield(L, -2, "__close");
    lua_setmetatable(L, 2);
    lua_toclose(L, 2);
    char err[160];
    enum wye_err rc = wlua_json_encode(L, 1, b, err, sizeof(err));
    if (rc) {
        return luaL_error(L, "wye.json.encode: %s", err);
    }
    lua_pushlstring(L, b->data ? b->data : "", b->len);
    lua_closeslot(L, 2);
    return 1;
}

static int wlua_l_decode(lua_State *L)
{
    size_t len;
    const char *s = luaL_checklstring(L, 1, &len);
    lua_settop(L, 1);
    wlua_json_decode_push(L, s, len);
    return 1;
}

/* wye.json.array(t): marks t (default: a new table) to encode as an array, even empty. */
static int wlua_l_array(lua_State *L)
{
    if (lua_isnoneornil(L, 1)) {
        lua_settop(L, 0);
        lua_newtable(L);
    }
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 1);
    if (lua_getmetatable(L, 1)) {
        lua_rawgetp(L, LUA_REGISTRYINDEX, &wlua_key_json_array);
        if (!lua_rawequal(L, -1, -2)) {
            return luaL_error(L, "wye.json.array: the table already has a metatable");
        }
        lua_settop(L, 1);
        return 1;
    }
    lua_rawgetp(L, LUA_REGISTRYINDEX, &wlua_key_json_array);
    lua_setmetatable(L, 1);
    return 1;
}

void wlua_json_open(lua_State *L)
{
    /* The array marker: protected, so scripts can neither read nor replace it. */
    lua_newtable(L);
    lua_pushliteral(L, "json.array");
    lua_setfield(L, -2, "__metatable");
    lua_rawsetp(L, LUA_REGISTRYINDEX, &wlua_key_json_array);

    lua_newtable(L);
    lua_pushcfunction(L, wlua_l_encode);
    lua_setfield(L, -2, "encode");
    lua_pushcfunction(L, wlua_l_decode);
    lua_setfield(L, -2, "decode");
    lua_pushcfunction(L, wlua_l_array);
    lua_setfield(L, -2, "array");
    lua_pushlightuserdata(L, (void *)&wlua_json_null_tag);
    lua_setfield(L, -2, "null");
}
