/* Configuration loading: reads the Lua config file, evaluates it in a sandboxed lua_State,
 * walks the resulting table against a key schema into struct conf_config, then applies the
 * WYE_* environment variables and command-line overrides. Runs on the main thread at startup
 * (and in tests); the finished config is immutable and may be read by any thread.
 *
 * DESIGN: one schema (conf_top_keys) drives the file walk, the environment and the overrides,
 * so a key has one parser, one range and one error text wherever its value comes from. The
 * Lua state lives only inside conf_load; after lua_newstate every Lua call runs inside one
 * lua_pcall, so a broken or hostile file can only produce an error string, never a panic.
 * The sandbox has base (without dofile, loadfile, load, print, collectgarbage, warn), string
 * (without dump and the pattern functions, whose backtracking runs unbounded inside C), table
 * (without move, which can loop 2^63 times inside C) and math; setmetatable refuses __gc
 * (finalizers run with hooks disabled); a memory cap in the allocator and an instruction
 * budget in a count hook bound everything else. */
#include "conf/conf.h"

#include <errno.h>
#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"

#define CONF_FILE_BYTES_MAX (1u << 20) /* the config file itself */
#define CONF_LUA_MEM_MAX (8u << 20)    /* everything the Lua state allocates */
#define CONF_LUA_INSNS_MAX 10000000L   /* VM instructions for running the file */
#define CONF_HOOK_EVERY 1000           /* instructions between two hook calls */
#define CONF_STR_MAX 4096              /* longest string value */

enum conf_kind {
    CK_SECTION,  /* a nested table of keys */
    CK_INT,      /* int field, range min..max */
    CK_SIZE,     /* size_t field, range min..max */
    CK_LISTEN,   /* "HOST:PORT" into listen_host + listen_port */
    CK_LOGLEVEL, /* "debug" | "info" | "warn" | "error" | "off" */
    CK_URL,      /* http:// or https:// URL, trailing '/' removed */
    CK_NAME,     /* printable text (model names) */
    CK_PATH,     /* a file path (no control characters) */
    CK_ENVNAME,  /* an environment variable name */
    CK_SECRET,   /* printable ASCII without spaces; registered with the logger, never echoed */
};

struct conf_key {
    const char *name;
    enum conf_kind kind;
    size_t off;                 /* offset of the field in struct conf_config */
    long long min, max;         /* CK_INT, CK_SIZE */
    const struct conf_key *sub; /* CK_SECTION: its keys, ended by a NULL name */
};

/* clang-format off */
#define CFG_OFF(f) offsetof(struct conf_config, f)
#define KEY_ALL(n, k, f, lo, hi, s) {(n), (k), CFG_OFF(f), (lo), (hi), (s)}
#define KEY(n, k, f) KEY_ALL(n, k, f, 0, 0, NULL)
#define KEY_INT(n, f, lo, hi) KEY_ALL(n, CK_INT, f, lo, hi, NULL)
#define KEY_SIZE(n, f, lo, hi) KEY_ALL(n, CK_SIZE, f, lo, hi, NULL)
#define KEY_SECTION(n, s) KEY_ALL(n, CK_SECTION, upstream, 0, 0, s)
#define KEY_END {NULL, CK_SECTION, 0, 0, 0, NULL}
#define GIB 1073741824LL

static const struct conf_key conf_upstream_keys[] = {
    KEY("base_url", CK_URL, upstream.base_url),
    KEY("model", CK_NAME, upstream.model),
    KEY("api_key", CK_SECRET, upstream.api_key),
    KEY("api_key_env", CK_ENVNAME, upstream.api_key_env),
    KEY_INT("connect_timeout_ms", upstream.connect_timeout_ms, 1, 600000),
    KEY_INT("first_byte_timeout_ms", upstream.first_byte_timeout_ms, 1, 3600000),
    KEY_INT("idle_timeout_ms", upstream.idle_timeout_ms, 1, 3600000),
    KEY_INT("total_timeout_ms", upstream.total_timeout_ms, 1, 86400000),
    KEY_INT("max_retries", upstream.max_retries, 0, 10),
    KEY_INT("retry_backoff_ms", upstream.retry_backoff_ms, 0, 60000),
    KEY_INT("max_connections", upstream.max_connections, 1, 10000),
    KEY_END,
};

static const struct conf_key conf_engine_keys[] = {
    KEY("model", CK_PATH, engine.model_path),
    KEY("model_name", CK_NAME, engine.model_name),
    KEY_INT("threads", engine.n_threads, 0, 1024),
    KEY_INT("ctx", engine.n_ctx, 0, 1048576),
    KEY_INT("sequences", engine.n_seq_max, 1, 256),
    KEY_END,
};

static const struct conf_key conf_ledger_keys[] = {
    KEY("path", CK_PATH, ledger_path),
    KEY_END,
};

static const struct conf_key conf_limits_keys[] = {
    KEY_SIZE("body_bytes_max", limits.body_bytes_max, 1024, GIB),
    KEY_SIZE("ws_message_bytes_max", limits.ws_message_bytes_max, 1024, GIB),
    KEY_INT("json_depth_max", limits.json_depth_max, 2, 1000),
    KEY_SIZE("n_msgs_max", limits.n_msgs_max, 1, 1000000),
    KEY_INT("max_tokens_max", limits.max_tokens_max, 1, 10000000),
    KEY_INT("streams_per_conn_max", limits.streams_per_conn_max, 1, 1024),
    KEY_INT("connections_max", limits.connections_max, 1, 1000000),
    KEY_SIZE("stream_buffer_bytes", limits.stream_buffer_bytes, 4096, GIB),
    KEY_INT("slow_client_timeout_ms", limits.slow_client_timeout_ms, 100, 3600000),
    KEY_INT("ws_ping_interval_s", limits.ws_ping_interval_s, 1, 3600),
    KEY_INT("ws_idle_timeout_s", limits.ws_idle_timeout_s, 1, 86400),
    KEY_INT("shutdown_grace_ms", limits.shutdown_grace_ms, 0, 600000),
    KEY_END,
};

static const struct conf_key conf_top_keys[] = {
    KEY("listen", CK_LISTEN, listen_host),
    KEY("log_level", CK_LOGLEVEL, log_level),
    KEY_SECTION("upstream", conf_upstream_keys),
    KEY_SECTION("engine", conf_engine_keys),
    KEY_SECTION("ledger", conf_ledger_keys),
    KEY_SECTION("limits", conf_limits_keys),
    KEY_END,
};
/* clang-format on */

/* Environment variables in the order they are applied; the API key is handled apart. */
static const struct {
    const char *var;
    const char *path;
} conf_env_vars[] = {
    {"WYE_LISTEN", "listen"},
    {"WYE_UPSTREAM_URL", "upstream.base_url"},
    {"WYE_UPSTREAM_MODEL", "upstream.model"},
    {"WYE_MODEL", "engine.model"},
    {"WYE_LEDGER", "ledger.path"},
    {"WYE_LOG_LEVEL", "log_level"},
    {"WYE_THREADS", "engine.threads"},
};

/* State shared by the allocator, the hook and the protected main function. */
struct conf_lua {
    struct conf_config *cfg;
    const char *path;
    const char *text;
    size_t text_len;
    char shown[88]; /* path for messages, long ones cut to their last 80 bytes */
    char *err;
    size_t errlen;
    enum wye_err rc; /* validation result of the walk */
    size_t mem_used; /* bytes the Lua state holds */
    bool mem_capped; /* an allocation was refused by the cap */
    bool mem_failed; /* wye_realloc itself failed (real or injected OOM) */
    long n_hooks;    /* count-hook calls so far */
    bool limit_hit;  /* the memory or instruction limit raised an error */
};

static enum wye_err conf_fail(char *err, size_t errlen, enum wye_err rc, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static enum wye_err conf_fail(char *err, size_t errlen, enum wye_err rc, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    return rc;
}

static enum wye_err conf_nomem(char *err, size_t errlen)
{
    return conf_fail(err, errlen, WYE_ERR_NOMEM, "out of memory while loading the configuration");
}

static const struct conf_key *conf_key_find(const struct conf_key *keys, const char *name,
                                            size_t len)
{
    for (const struct conf_key *k = keys; k->name; k++) {
        if (strlen(k->name) == len && memcmp(k->name, name, len) == 0) {
            return k;
        }
    }
    return NULL;
}

/* Finds "section.key" or "key" in the schema (for env variables and overrides). */
static const struct conf_key *conf_key_lookup(const char *path)
{
    const char *dot = strchr(path, '.');
    if (!dot) {
        return conf_key_find(conf_top_keys, path, strlen(path));
    }
    const struct conf_key *sec = conf_key_find(conf_top_keys, path, (size_t)(dot - path));
    WYE_ASSERT(sec && sec->kind == CK_SECTION);
    return conf_key_find(sec->sub, dot + 1, strlen(dot + 1));
}

/* Replaces the string field at k->off with a copy of s[0..len). */
static enum wye_err conf_store_str(struct conf_config *cfg, const struct conf_key *k, const char *s,
                                   size_t len, char *err, size_t errlen)
{
    char *copy = wye_strndup(s, len);
    if (!copy) {
        return conf_nomem(err, errlen);
    }
    char **field = (char **)(void *)((char *)cfg + k->off);
    if (*field && k->kind == CK_SECRET) {
        explicit_bzero(*field, strlen(*field));
    }
    wye_free(*field);
    *field = copy;
    if (k->kind == CK_SECRET) {
        wye_log_add_secret(copy);
    }
    return WYE_OK;
}

static enum wye_err conf_set_int(struct conf_config *cfg, const struct conf_key *k, const char *who,
                                 long long v, char *err, size_t errlen)
{
    if (v < k->min || v > k->max) {
        return conf_fail(err, errlen, WYE_ERR_INVAL, "%s: %lld is out of range %lld..%lld", who, v,
                         k->min, k->max);
    }
    if (k->kind == CK_INT) {
        *(int *)(void *)((char *)cfg + k->off) = (int)v;
    } else {
        *(size_t *)(void *)((char *)cfg + k->off) = (size_t)v;
    }
    return WYE_OK;
}

/* Parses "HOST:PORT" or "[IPV6]:PORT" into the listen fields. */
static enum wye_err conf_set_listen(struct conf_config *cfg, const char *who, const char *s,
                                    size_t len, char *err, size_t errlen)
{
    const char *host = s, *colon = memrchr(s, ':', len);
    size_t hlen = colon ? (size_t)(colon - s) : 0;
    bool ok = colon != NULL && hlen > 0;
    if (ok && s[0] == '[') {
        ok = hlen > 2 && s[hlen - 1] == ']';
        host = s + 1;
        hlen = ok ? hlen - 2 : 0;
    }
    for (size_t i = 0; ok && i < hlen; i++) {
        char c = host[i];
        bool v6 = host != s && (c == ':' || c == '%');
        ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
             c == '.' || c == '-' || c == '_' || v6;
    }
    long port = -1;
    if (ok) {
        const char *p = colon + 1, *end = s + len;
        ok = p < end && end - p <= 5;
        for (port = 0; ok && p < end; p++) {
            ok = *p >= '0' && *p <= '9';
            port = port * 10 + (*p - '0');
        }
        ok = ok && port <= 65535;
    }
    if (!ok || hlen > 253) {
        return conf_fail(err, errlen, WYE_ERR_INVAL,
                         "%s: expected HOST:PORT with PORT 0..65535 ([ADDR]:PORT for IPv6)", who);
    }
    char *copy = wye_strndup(host, hlen);
    if (!copy) {
        return conf_nomem(err, errlen);
    }
    wye_free(cfg->listen_host);
    cfg->listen_host = copy;
    cfg->listen_port = (int)port;
    return WYE_OK;
}

/* Validates and stores a string value for k. who names the source in messages. String values
 * are never echoed into messages: they may be secrets or hold terminal escapes. */
static enum wye_err conf_set_str(struct conf_config *cfg, const struct conf_key *k, const char *who,
                                 const char *s, size_t len, char *err, size_t errlen)
{
    if (len == 0) {
        return conf_fail(err, errlen, WYE_ERR_INVAL, "%s: must not be empty", who);
    }
    if (len > CONF_STR_MAX) {
        return conf_fail(err, errlen, WYE_ERR_INVAL, "%s: longer than %d bytes", who, CONF_STR_MAX);
    }
    if (memchr(s, '\0', len)) {
        return conf_fail(err, errlen, WYE_ERR_INVAL, "%s: contains a NUL byte", who);
    }
    bool ok = true;
    switch (k->kind) {
    case CK_INT:
    case CK_SIZE: {
        char *end;
        errno = 0;
        long long v = strtoll(s, &end, 10);
        if (errno || end == s || *end != '\0') {
            return conf_fail(err, errlen, WYE_ERR_INVAL, "%s: expected an integer %lld..%lld", who,
                             k->min, k->max);
        }
        return conf_set_int(cfg, k, who, v, err, errlen);
    }
    case CK_LISTEN:
        return conf_set_listen(cfg, who, s, len, err, errlen);
    case CK_LOGLEVEL: {
        enum wye_log_level level;
        if (!wye_log_level_parse(s, &level)) {
            return conf_fail(err, errlen, WYE_ERR_INVAL,
                             "%s: expected one of debug, info, warn, error, off", who);
        }
        cfg->log_level = level;
        return WYE_OK;
    }
    case CK_URL: {
        size_t scheme = strncmp(s, "https://", 8) == 0 ? 8 : strncmp(s, "http://", 7) == 0 ? 7 : 0;
        ok = scheme && len > scheme && s[scheme] != '/';
        for (size_t i = 0; ok && i < len; i++) {
            ok = s[i] > 0x20 && s[i] < 0x7f;
        }
        if (!ok) {
            return conf_fail(err, errlen, WYE_ERR_INVAL,
                             "%s: expected an http:// or https:// URL without spaces", who);
        }
        while (s[len - 1] == '/') {
            len--;
        }
        break;
    }
    case CK_NAME:
    case CK_PATH:
        for (size_t i = 0; ok && i < len; i++) {
            ok = (unsigned char)s[i] >= 0x20 && s[i] != 0x7f;
        }
        if (!ok) {
            return conf_fail(err, errlen, WYE_ERR_INVAL, "%s: contains control characters", who);
        }
        break;
    case CK_ENVNAME:
        for (size_t i = 0; ok && i < len; i++) {
            char c = s[i];
            ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || c == '_' ||
                 (i > 0 && c >= '0' && c <= '9');
        }
        if (!ok) {
            return conf_fail(err, errlen, WYE_ERR_INVAL,
                             "%s: expected an environment variable name ([A-Za-z_][A-Za-z0-9_]*)",
                             who);
        }
        break;
    case CK_SECRET:
        for (size_t i = 0; ok && i < len; i++) {
            ok = s[i] > 0x20 && s[i] < 0x7f;
        }
        if (!ok) {
            return conf_fail(err, errlen, WYE_ERR_INVAL,
                             "%s: the key may only hold printable ASCII without spaces", who);
        }
        break;
    case CK_SECTION:
        WYE_ASSERT(!"a section has no string value");
    }
    return conf_store_str(cfg, k, s, len, err, errlen);
}

/* Copies a Lua key into out for messages: at most 48 printable bytes. */
static void conf_key_name(lua_State *L, int idx, char *out, size_t outlen)
{
    if (lua_type(L, idx) == LUA_TNUMBER && lua_isinteger(L, idx)) {
        snprintf(out, outlen, "[%lld]", (long long)lua_tointeger(L, idx));
        return;
    }
    if (lua_type(L, idx) != LUA_TSTRING) {
        snprintf(out, outlen, "[%s]", luaL_typename(L, idx));
        return;
    }
    size_t len, n = 0;
    const char *s = lua_tolstring(L, idx, &len);
    for (size_t i = 0; i < len && i < 48 && n + 4 < outlen; i++) {
        out[n++] = s[i] >= 0x20 && s[i] < 0x7f ? s[i] : '?';
    }
    if (len > 48 && n + 4 < outlen) {
        memcpy(out + n, "...", 3);
        n += 3;
    }
    out[n] = '\0';
}

/* Walks the table at index t against keys; prefix is "" or "section". */
static enum wye_err conf_walk(lua_State *L, struct conf_lua *lx, int t, const struct conf_key *keys,
                              const char *prefix)
{
    enum wye_err rc = WYE_OK;
    lua_pushnil(L);
    while (!rc && lua_next(L, t)) {
        char name[64], who[160];
        conf_key_name(L, -2, name, sizeof(name));
        snprintf(who, sizeof(who), "%s: %s%s%s", lx->shown, prefix, *prefix ? "." : "", name);
        const struct conf_key *k = NULL;
        if (lua_type(L, -2) == LUA_TSTRING) {
            size_t klen;
            const char *kname = lua_tolstring(L, -2, &klen);
            k = conf_key_find(keys, kname, klen);
        }
        int vt = lua_type(L, -1);
        if (!k) {
            rc = conf_fail(lx->err, lx->errlen, WYE_ERR_INVAL, "%s: unknown key", who);
        } else if (k->kind == CK_SECTION) {
            if (vt != LUA_TTABLE) {
                rc = conf_fail(lx->err, lx->errlen, WYE_ERR_INVAL, "%s: expected a table, got %s",
                               who, lua_typename(L, vt));
            } else {
                rc = conf_walk(L, lx, lua_gettop(L), k->sub, k->name);
            }
        } else if (k->kind == CK_INT || k->kind == CK_SIZE) {
            int isint = 0;
            lua_Integer v = vt == LUA_TNUMBER ? lua_tointegerx(L, -1, &isint) : 0;
            if (vt != LUA_TNUMBER) {
                rc = conf_fail(lx->err, lx->errlen, WYE_ERR_INVAL,
                               "%s: expected an integer, got %s", who, lua_typename(L, vt));
            } else if (!isint) {
                rc = conf_fail(lx->err, lx->errlen, WYE_ERR_INVAL,
                               "%s: expected an integer, got %g", who, (double)lua_tonumber(L, -1));
            } else {
                rc = conf_set_int(lx->cfg, k, who, (long long)v, lx->err, lx->errlen);
            }
        } else if (vt != LUA_TSTRING) {
            rc = conf_fail(lx->err, lx->errlen, WYE_ERR_INVAL, "%s: expected a string, got %s", who,
                           lua_typename(L, vt));
        } else {
            size_t len;
            const char *s = lua_tolstring(L, -1, &len);
            rc = conf_set_str(lx->cfg, k, who, s, len, lx->err, lx->errlen);
        }
        lua_pop(L, 1);
    }
    return rc;
}

static void *conf_lua_alloc(void *ud, void *ptr, size_t osize, size_t nsize)
{
    struct conf_lua *lx = ud;
    size_t old = ptr ? osize : 0;
    if (nsize == 0) {
        wye_free(ptr);
        lx->mem_used -= old;
        return NULL;
    }
    if (nsize > old && nsize - old > CONF_LUA_MEM_MAX - lx->mem_used) {
        lx->mem_capped = true;
        return NULL;
    }
    void *p = wye_realloc(ptr, nsize);
    if (!p) {
        if (ptr && nsize <= old) {
            p = ptr; /* Lua assumes shrinking never fails; the old block is big enough */
        } else {
            lx->mem_failed = true;
            return NULL;
        }
    }
    lx->mem_used = lx->mem_used - old + nsize;
    return p;
}

static void conf_lua_hook(lua_State *L, lua_Debug *ar)
{
    void *ud;
    lua_getallocf(L, &ud);
    struct conf_lua *lx = ud;
    if (++lx->n_hooks <= CONF_LUA_INSNS_MAX / CONF_HOOK_EVERY) {
        return;
    }
    /* From now on fail at every instruction, so a pcall in the file cannot swallow it. */
    lx->limit_hit = true;
    lua_sethook(L, conf_lua_hook, LUA_MASKCOUNT, 1);
    lua_getinfo(L, "Sl", ar);
    lua_pushfstring(L, "%s:%d: instruction limit of %d exceeded (endless loop?)", ar->short_src,
                    ar->currentline, (int)CONF_LUA_INSNS_MAX);
    lua_error(L);
}

/* Calls the wrapped library function (upvalue 1) with the arguments; returns its result. */
static int conf_lua_call_orig(lua_State *L)
{
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_insert(L, 1);
    lua_call(L, lua_gettop(L) - 1, 1);
    return 1;
}

/* string.rep without the 2^63-iteration loop Lua runs for an empty string, and with a clear
 * error when the result cannot fit in the memory cap. */
static int conf_lua_rep(lua_State *L)
{
    size_t len, seplen;
    luaL_checklstring(L, 1, &len);
    lua_Integer n = luaL_checkinteger(L, 2);
    luaL_optlstring(L, 3, "", &seplen);
    if (n <= 0 || len + seplen == 0) {
        lua_pushliteral(L, "");
        return 1;
    }
    if ((lua_Unsigned)n > CONF_LUA_MEM_MAX / (len + seplen)) {
        void *ud;
        lua_getallocf(L, &ud);
        ((struct conf_lua *)ud)->limit_hit = true;
        return luaL_error(L, "string.rep: the result exceeds the memory limit of %d MiB",
                          (int)(CONF_LUA_MEM_MAX >> 20));
    }
    return conf_lua_call_orig(L);
}

/* setmetatable refusing __gc: finalizers run with hooks off, so one could loop forever. */
static int conf_lua_setmetatable(lua_State *L)
{
    if (lua_type(L, 2) == LUA_TTABLE) {
        lua_pushliteral(L, "__gc");
        if (lua_rawget(L, 2) != LUA_TNIL) {
            return luaL_error(L, "setmetatable: __gc metamethods are not allowed here");
        }
        lua_pop(L, 1);
    }
    return conf_lua_call_orig(L);
}

/* Replaces t[name] (a C function) by fn with the original as its upvalue. */
static void conf_lua_wrap(lua_State *L, int t, const char *name, lua_CFunction fn)
{
    lua_getfield(L, t, name);
    lua_pushcclosure(L, fn, 1);
    lua_setfield(L, t, name);
}

static void conf_lua_remove(lua_State *L, int t, const char *const *names)
{
    for (; *names; names++) {
        lua_pushnil(L);
        lua_setfield(L, t, *names);
    }
}

/* Opens the allowed libraries and removes everything that reaches outside the state. */
static void conf_lua_sandbox(lua_State *L)
{
    static const char *const base_out[] = {"dofile",         "loadfile", "load", "print",
                                           "collectgarbage", "warn",     NULL};
    static const char *const string_out[] = {"dump", "find", "match", "gmatch", "gsub", NULL};
    static const char *const table_out[] = {"move", NULL};
    luaL_requiref(L, LUA_GNAME, luaopen_base, 1);
    conf_lua_remove(L, lua_gettop(L), base_out);
    conf_lua_wrap(L, lua_gettop(L), "setmetatable", conf_lua_setmetatable);
    luaL_requiref(L, LUA_STRLIBNAME, luaopen_string, 1);
    conf_lua_remove(L, lua_gettop(L), string_out);
    conf_lua_wrap(L, lua_gettop(L), "rep", conf_lua_rep);
    luaL_requiref(L, LUA_TABLIBNAME, luaopen_table, 1);
    conf_lua_remove(L, lua_gettop(L), table_out);
    luaL_requiref(L, LUA_MATHLIBNAME, luaopen_math, 1);
    lua_pop(L, 4);
}

/* Runs under lua_pcall: sandbox, load, run, walk. Lua errors propagate to the caller;
 * validation errors are left in lx->rc and lx->err. */
static int conf_lua_main(lua_State *L)
{
    struct conf_lua *lx = lua_touserdata(L, 1);
    conf_lua_sandbox(L);
    const char *chunkname = lua_pushfstring(L, "@%s", lx->path);
    if (luaL_loadbufferx(L, lx->text, lx->text_len, chunkname, "t") != LUA_OK) {
        lua_error(L);
    }
    /* The chunk's globals go into a fresh table that reads through to the libraries, so a
     * file that assigns globals instead of returning a table yields only its own keys. */
    lua_newtable(L);
    int env = lua_gettop(L);
    lua_newtable(L);
    lua_pushglobaltable(L);
    lua_setfield(L, -2, "__index");
    lua_setmetatable(L, env);
    lua_pushvalue(L, env - 1); /* the chunk */
    lua_pushvalue(L, env);
    lua_setupvalue(L, -2, 1); /* its _ENV */
    lua_sethook(L, conf_lua_hook, LUA_MASKCOUNT, CONF_HOOK_EVERY);
    lua_call(L, 0, 1);
    int t = lua_gettop(L);
    if (lua_isnil(L, t)) {
        t = env;
    } else if (!lua_istable(L, t)) {
        lx->rc = conf_fail(lx->err, lx->errlen, WYE_ERR_PARSE,
                           "%s: expected the file to return a table, got %s", lx->shown,
                           luaL_typename(L, t));
        return 0;
    }
    lx->rc = conf_walk(L, lx, t, conf_top_keys, "");
    return 0;
}

/* Reads path into a new buffer of at most CONF_FILE_BYTES_MAX bytes. */
static enum wye_err conf_read_file(const char *path, char **out, size_t *outlen, char *err,
                                   size_t errlen)
{
    char eb[128];
    FILE *f = fopen(path, "rb");
    if (!f) {
        return conf_fail(err, errlen, WYE_ERR_IO, "%s: cannot open: %s", path,
                         wye_strerror(errno, eb, sizeof(eb)));
    }
    /* One byte more than the cap tells "exactly at the cap" from "too large". */
    char *buf = wye_malloc(CONF_FILE_BYTES_MAX + 1);
    size_t len = buf ? fread(buf, 1, CONF_FILE_BYTES_MAX + 1, f) : 0;
    enum wye_err rc = WYE_OK;
    if (!buf) {
        rc = conf_nomem(err, errlen);
    } else if (ferror(f)) {
        rc = conf_fail(err, errlen, WYE_ERR_IO, "%s: read failed: %s", path,
                       wye_strerror(errno, eb, sizeof(eb)));
    } else if (len > CONF_FILE_BYTES_MAX) {
        rc = conf_fail(err, errlen, WYE_ERR_TOOBIG, "%s: larger than %u bytes", path,
                       CONF_FILE_BYTES_MAX);
    }
    fclose(f);
    if (rc) {
        if (buf) {
            explicit_bzero(buf, len);
        }
        wye_free(buf);
        return rc;
    }
    *out = buf;
    *outlen = len;
    return WYE_OK;
}

/* Lua echoes string literals in two messages: a syntax error "near '"text'" and a runtime
 * "(constant 'text')". The literal may be the API key, so both are cut out of err. */
static void conf_scrub(char *err, size_t errlen)
{
    static const char constant[] = "(a constant)";
    char *p = strstr(err, " near '");
    if (p && (p[7] == '"' || p[7] == '\'' || p[7] == '[')) {
        snprintf(p, errlen - (size_t)(p - err), " near a string literal");
    }
    while ((p = strstr(err, "(constant '")) != NULL) {
        char *end = strstr(p + 11, "')");
        if (!end) {
            snprintf(p, errlen - (size_t)(p - err), "%s", constant);
            break;
        }
        /* The replacement (12 bytes) is shorter than what it replaces (13 or more). */
        memcpy(p, constant, sizeof(constant) - 1);
        memmove(p + sizeof(constant) - 1, end + 2, strlen(end + 2) + 1);
    }
}

static enum wye_err conf_load_file(struct conf_config *cfg, const char *path, char *err,
                                   size_t errlen)
{
    struct conf_lua lx = {.cfg = cfg, .path = path, .err = err, .errlen = errlen};
    size_t plen = strlen(path);
    snprintf(lx.shown, sizeof(lx.shown), "%s%s", plen > 80 ? "..." : "",
             plen > 80 ? path + plen - 77 : path);
    char *text = NULL;
    enum wye_err rc = conf_read_file(path, &text, &lx.text_len, err, errlen);
    if (rc) {
        return rc;
    }
    lx.text = text;
    lua_State *L = lua_newstate(conf_lua_alloc, &lx);
    if (!L) {
        rc = conf_nomem(err, errlen);
        goto out_text;
    }
    lua_pushcfunction(L, conf_lua_main);
    lua_pushlightuserdata(L, &lx);
    int status = lua_pcall(L, 1, 0, 0);
    if (status == LUA_OK) {
        rc = lx.rc;
    } else if (lx.mem_failed) {
        rc = conf_nomem(err, errlen);
    } else if (status == LUA_ERRMEM && lx.mem_capped) {
        rc = conf_fail(err, errlen, WYE_ERR_TOOBIG, "%s: memory limit of %u MiB exceeded", lx.shown,
                       CONF_LUA_MEM_MAX >> 20);
    } else if (lx.limit_hit && lua_type(L, -1) == LUA_TSTRING) {
        rc = conf_fail(err, errlen, WYE_ERR_TOOBIG, "%s", lua_tostring(L, -1));
        conf_scrub(err, errlen);
    } else if (lua_type(L, -1) == LUA_TSTRING) {
        rc = conf_fail(err, errlen, WYE_ERR_PARSE, "%s", lua_tostring(L, -1));
        conf_scrub(err, errlen);
    } else {
        rc = conf_fail(err, errlen, WYE_ERR_PARSE, "%s: error object is a %s value", lx.shown,
                       luaL_typename(L, -1));
    }
    lua_close(L);
    if (!rc && lx.mem_failed) {
        rc = conf_nomem(err, errlen); /* an allocation failed and a pcall in the file hid it */
    }
    if (!rc && cfg->upstream.api_key) {
        WYE_WARN(
            "%s: upstream.api_key is written in the file; prefer WYE_UPSTREAM_API_KEY or upstream.api_key_env",
            lx.shown);
    }
out_text:
    explicit_bzero(text, lx.text_len);
    wye_free(text);
    return rc;
}

/* Looks name up in the environment; empty values count as unset. */
static const char *conf_getenv(const char *name)
{
    const char *v = getenv(name);
    return v && *v ? v : NULL;
}

static enum wye_err conf_apply_env(struct conf_config *cfg, char *err, size_t errlen)
{
    for (size_t i = 0; i < sizeof(conf_env_vars) / sizeof(conf_env_vars[0]); i++) {
        const char *v = conf_getenv(conf_env_vars[i].var);
        if (v) {
            const struct conf_key *k = conf_key_lookup(conf_env_vars[i].path);
            enum wye_err rc = conf_set_str(cfg, k, conf_env_vars[i].var, v, strlen(v), err, errlen);
            if (rc) {
                return rc;
            }
        }
    }
    const struct conf_key *kk = conf_key_lookup("upstream.api_key");
    const char *var = "WYE_UPSTREAM_API_KEY";
    const char *key = conf_getenv(var);
    if (!key && cfg->upstream.api_key_env) {
        var = cfg->upstream.api_key_env;
        key = conf_getenv(var);
        if (!key && cfg->upstream.base_url) {
            WYE_WARN("upstream.api_key_env: the environment variable %s is not set", var);
        }
    }
    return key ? conf_set_str(cfg, kk, var, key, strlen(key), err, errlen) : WYE_OK;
}

static enum wye_err conf_apply_overrides(struct conf_config *cfg, const struct conf_overrides *ov,
                                         char *err, size_t errlen)
{
    const struct {
        const char *value;
        const char *path;
        const char *who;
    } items[] = {
        {ov->listen, "listen", "--listen"},
        {ov->upstream, "upstream.base_url", "--upstream"},
        {ov->upstream_model, "upstream.model", "--upstream-model"},
        {ov->model, "engine.model", "--model"},
        {ov->ledger, "ledger.path", "--ledger"},
    };
    for (size_t i = 0; i < sizeof(items) / sizeof(items[0]); i++) {
        if (items[i].value) {
            enum wye_err rc = conf_set_str(cfg, conf_key_lookup(items[i].path), items[i].who,
                                           items[i].value, strlen(items[i].value), err, errlen);
            if (rc) {
                return rc;
            }
        }
    }
    return WYE_OK;
}

/* Cross-key checks and derived values, once every source has been applied. */
static enum wye_err conf_finish(struct conf_config *cfg, char *err, size_t errlen)
{
    if (cfg->upstream.base_url && !cfg->upstream.model) {
        return conf_fail(
            err, errlen, WYE_ERR_INVAL,
            "upstream.model: required when upstream.base_url is set (in the file, WYE_UPSTREAM_MODEL or on the command line)");
    }
    if (cfg->engine.model_path && !cfg->engine.model_name) {
        const char *base = strrchr(cfg->engine.model_path, '/');
        base = base ? base + 1 : cfg->engine.model_path;
        size_t len = strlen(base);
        if (len > 5 && strcmp(base + len - 5, ".gguf") == 0) {
            len -= 5;
        }
        cfg->engine.model_name = len ? wye_strndup(base, len) : wye_strdup("local");
        if (!cfg->engine.model_name) {
            return conf_nomem(err, errlen);
        }
    }
    if (cfg->upstream.base_url && !cfg->upstream.api_key && !cfg->upstream.api_key_env) {
        WYE_WARN(
            "upstream.base_url is set but no API key was found (WYE_UPSTREAM_API_KEY or upstream.api_key_env)");
    }
    return WYE_OK;
}

static void conf_set_defaults(struct conf_config *cfg)
{
    cfg->listen_port = 8080;
    cfg->log_level = WYE_LOG_INFO;
    cfg->upstream = (struct conf_upstream){
        .connect_timeout_ms = 5000,
        .first_byte_timeout_ms = 30000,
        .idle_timeout_ms = 30000,
        .total_timeout_ms = 300000,
        .max_retries = 2,
        .retry_backoff_ms = 200,
        .max_connections = 64,
    };
    cfg->engine = (struct conf_engine){.n_threads = 0, .n_ctx = 0, .n_seq_max = 4};
    cfg->limits = (struct conf_limits){
        .body_bytes_max = 1 << 20,
        .ws_message_bytes_max = 1 << 20,
        .json_depth_max = 64,
        .n_msgs_max = 1024,
        .max_tokens_max = 32768,
        .streams_per_conn_max = 16,
        .connections_max = 1024,
        .stream_buffer_bytes = 256 << 10,
        .slow_client_timeout_ms = 10000,
        .ws_ping_interval_s = 30,
        .ws_idle_timeout_s = 300,
        .shutdown_grace_ms = 10000,
    };
}

enum wye_err conf_load(const char *path, const struct conf_overrides *ov, struct conf_config **out,
                       char *err, size_t errlen)
{
    char scratch[256];
    WYE_ASSERT(out);
    if (!err || errlen == 0) {
        err = scratch;
        errlen = sizeof(scratch);
    }
    err[0] = '\0';
    *out = NULL;
    struct conf_config *cfg = wye_calloc(1, sizeof(*cfg));
    if (!cfg) {
        return conf_nomem(err, errlen);
    }
    conf_set_defaults(cfg);
    enum wye_err rc = WYE_OK;
    cfg->listen_host = wye_strdup("127.0.0.1");
    if (!cfg->listen_host || (path && !(cfg->source_path = wye_strdup(path)))) {
        rc = conf_nomem(err, errlen);
    }
    if (!rc && path) {
        rc = conf_load_file(cfg, path, err, errlen);
    }
    if (!rc) {
        rc = conf_apply_env(cfg, err, errlen);
    }
    if (!rc && ov) {
        rc = conf_apply_overrides(cfg, ov, err, errlen);
    }
    if (!rc) {
        rc = conf_finish(cfg, err, errlen);
    }
    if (rc) {
        conf_destroy(cfg);
        return rc;
    }
    *out = cfg;
    return WYE_OK;
}

void conf_destroy(struct conf_config *cfg)
{
    if (!cfg) {
        return;
    }
    if (cfg->upstream.api_key) {
        explicit_bzero(cfg->upstream.api_key, strlen(cfg->upstream.api_key));
    }
    char *strs[] = {cfg->listen_host,       cfg->upstream.base_url,    cfg->upstream.model,
                    cfg->upstream.api_key,  cfg->upstream.api_key_env, cfg->engine.model_path,
                    cfg->engine.model_name, cfg->ledger_path,          cfg->source_path};
    for (size_t i = 0; i < sizeof(strs) / sizeof(strs[0]); i++) {
        wye_free(strs[i]);
    }
    wye_free(cfg);
}

static const char *conf_or(const char *s, const char *dflt)
{
    return s ? s : dflt;
}

void conf_log_summary(const struct conf_config *cfg)
{
    static const char *const levels[] = {"debug", "info", "warn", "error", "off"};
    const struct conf_upstream *u = &cfg->upstream;
    const struct conf_engine *e = &cfg->engine;
    WYE_INFO("config: %s, listen %s:%d, log_level %s", conf_or(cfg->source_path, "(defaults)"),
             cfg->listen_host, cfg->listen_port, levels[cfg->log_level]);
    WYE_INFO(
        "config: upstream %s model %s key %s, timeouts connect %d first_byte %d idle %d total %d ms, retries %d",
        conf_or(u->base_url, "(none)"), conf_or(u->model, "(none)"), u->api_key ? "set" : "unset",
        u->connect_timeout_ms, u->first_byte_timeout_ms, u->idle_timeout_ms, u->total_timeout_ms,
        u->max_retries);
    WYE_INFO("config: engine %s (%s) threads %d ctx %d sequences %d, ledger %s",
             conf_or(e->model_path, "(none)"), conf_or(e->model_name, "-"), e->n_threads, e->n_ctx,
             e->n_seq_max, conf_or(cfg->ledger_path, "(none)"));
}
