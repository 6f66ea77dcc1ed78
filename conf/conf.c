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
#include <unistd.h>

#include "common/alloc.h"
#include "common/crypto.h"

#define CONF_FILE_BYTES_MAX (1u << 20) /* the config file itself */
#define CONF_LUA_MEM_MAX (8u << 20)    /* everything the Lua state allocates */
#define CONF_LUA_INSNS_MAX 10000000L   /* VM instructions for running the file */
#define CONF_HOOK_EVERY 1000           /* instructions between two hook calls */
#define CONF_STR_MAX 4096              /* longest string value */
#define CONF_TEXT_MAX 65536            /* longest text value (router.hook) */
#define CONF_KEY_NAME_MAX 64           /* longest API key name */

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
    CK_BOOL,     /* bool field */
    CK_TRIBOOL,  /* int field: -1 unset, 0 false, 1 true */
    CK_DOUBLE,   /* double field, range dmin..dmax */
    CK_U64,      /* uint64_t field, range min..max */
    CK_TEXT,     /* multi-line text (Lua source), at most CONF_TEXT_MAX bytes */
    CK_IDENT,    /* API key name: [A-Za-z0-9_.@-], at most CONF_KEY_NAME_MAX bytes */
    CK_SHA256,   /* 64 hex digits into uint8_t[32] */
    CK_ROUTES,   /* array of "local" / "remote" into CONF_ROUTE_* bits */
    CK_OVERBUDGET, /* "local" | "refuse" */
    CK_FSYNC,    /* "none" | "always" | "interval" */
    CK_KV,       /* "f32" | "f16" into a bool (true: f16) */
    CK_API_KEYS, /* the keys array */
    CK_PRICES,   /* the prices.models map */
    CK_ALLOW,    /* the agents.allow_hosts map */
};

struct conf_key {
    const char *name;
    enum conf_kind kind;
    size_t off;                 /* offset of the field in struct conf_config */
    long long min, max;         /* CK_INT, CK_SIZE */
    const struct conf_key *sub; /* CK_SECTION: its keys, ended by a NULL name */
    double dmin, dmax;          /* CK_DOUBLE */
};

/* clang-format off */
#define CFG_OFF(f) offsetof(struct conf_config, f)
#define KEY_ALL(n, k, f, lo, hi, s) {(n), (k), CFG_OFF(f), (lo), (hi), (s), 0, 0}
#define KEY(n, k, f) KEY_ALL(n, k, f, 0, 0, NULL)
#define KEY_INT(n, f, lo, hi) KEY_ALL(n, CK_INT, f, lo, hi, NULL)
#define KEY_SIZE(n, f, lo, hi) KEY_ALL(n, CK_SIZE, f, lo, hi, NULL)
#define KEY_SECTION(n, s) KEY_ALL(n, CK_SECTION, upstream, 0, 0, s)
#define KEY_END {NULL, CK_SECTION, 0, 0, 0, NULL, 0, 0}
#define KEY_DBL(n, f, lo, hi) {(n), CK_DOUBLE, CFG_OFF(f), 0, 0, NULL, (lo), (hi)}
/* Keys of one element of an array or map: offsets into that element's struct. */
#define EKEY(n, k, t, f) {(n), (k), offsetof(struct t, f), 0, 0, NULL, 0, 0}
#define EKEY_INT(n, t, f, lo, hi) {(n), CK_INT, offsetof(struct t, f), (lo), (hi), NULL, 0, 0}
#define EKEY_DBL(n, t, f, lo, hi) {(n), CK_DOUBLE, offsetof(struct t, f), 0, 0, NULL, (lo), (hi)}
#define USD_MAX 1e9
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
    KEY("kv_type", CK_KV, engine.kv_f16),
    KEY_END,
};

static const struct conf_key conf_ledger_keys[] = {
    KEY("path", CK_PATH, ledger_path),
    KEY("fsync", CK_FSYNC, ledger.fsync),
    KEY_INT("fsync_interval_ms", ledger.fsync_interval_ms, 1, 3600000),
    KEY_ALL("rotate_bytes", CK_U64, ledger.rotate_bytes, 0, 1LL << 50, NULL),
    KEY("rotate_daily", CK_BOOL, ledger.rotate_daily),
    KEY_END,
};

static const struct conf_key conf_api_key_keys[] = {
    EKEY("name", CK_IDENT, conf_api_key, name),
    EKEY("sha256", CK_SHA256, conf_api_key, sha256),
    EKEY_INT("rpm", conf_api_key, rpm, 0, 1000000),
    EKEY_DBL("budget_usd_day", conf_api_key, budget_usd_day, 0, USD_MAX),
    EKEY_DBL("budget_usd_month", conf_api_key, budget_usd_month, 0, USD_MAX),
    EKEY("routes", CK_ROUTES, conf_api_key, routes),
    EKEY("over_budget", CK_OVERBUDGET, conf_api_key, over_budget),
    KEY_END,
};

static const struct conf_key conf_price_keys[] = {
    EKEY_DBL("input_per_1m", conf_price, input_per_1m, 0, 1e6),
    EKEY_DBL("output_per_1m", conf_price, output_per_1m, 0, 1e6),
    KEY_END,
};

static const struct conf_key conf_auth_keys[] = {
    KEY("required", CK_TRIBOOL, auth.required_set),
    KEY_END,
};

static const struct conf_key conf_default_price_keys[] = {
    KEY_DBL("input_per_1m", prices.default_remote.input_per_1m, 0, 1e6),
    KEY_DBL("output_per_1m", prices.default_remote.output_per_1m, 0, 1e6),
    KEY_END,
};

static const struct conf_key conf_prices_keys[] = {
    KEY("models", CK_PRICES, prices.models),
    KEY_SECTION("default_remote", conf_default_price_keys),
    KEY_DBL("local_per_1m", prices.local_per_1m, 0, 1e6),
    KEY_END,
};

static const struct conf_key conf_router_keys[] = {
    KEY_DBL("threshold", router.threshold, 0, 1),
    KEY("weights", CK_PATH, router.weights_path),
    KEY("hook", CK_TEXT, router.hook),
    KEY("hook_file", CK_PATH, router.hook_file),
    KEY_INT("hook_timeout_ms", router.hook_timeout_ms, 1, 10000),
    KEY_INT("hook_memory_kb", router.hook_memory_kb, 64, 1048576),
    KEY_INT("queue_max", router.queue_max, 0, 1000000),
    KEY_INT("breaker_failures", router.breaker_failures, 1, 1000),
    KEY_INT("breaker_cooldown_ms", router.breaker_cooldown_ms, 100, 3600000),
    KEY_INT("latency_target_ms", router.latency_target_ms, 0, 600000),
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

static const struct conf_key conf_agents_keys[] = {
    KEY_INT("workers", agents.n_workers, 1, 64),
    KEY("allow_hosts", CK_ALLOW, agents.allow),
    KEY_END,
};

static const struct conf_key conf_top_keys[] = {
    KEY("listen", CK_LISTEN, listen_host),
    KEY("log_level", CK_LOGLEVEL, log_level),
    KEY_SECTION("upstream", conf_upstream_keys),
    KEY_SECTION("engine", conf_engine_keys),
    KEY_SECTION("ledger", conf_ledger_keys),
    KEY_SECTION("limits", conf_limits_keys),
    KEY("keys", CK_API_KEYS, api_keys),
    KEY_SECTION("auth", conf_auth_keys),
    KEY_SECTION("prices", conf_prices_keys),
    KEY_SECTION("router", conf_router_keys),
    KEY_SECTION("agents", conf_agents_keys),
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
static enum wye_err conf_store_str(void *cfg, const struct conf_key *k, const char *s,
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

static enum wye_err conf_set_int(void *cfg, const struct conf_key *k, const char *who,
                                 long long v, char *err, size_t errlen)
{
    if (v < k->min || v > k->max) {
        return conf_fail(err, errlen, WYE_ERR_INVAL, "%s: %lld is out of range %lld..%lld", who, v,
                         k->min, k->max);
    }
    if (k->kind == CK_INT) {
        *(int *)(void *)((char *)cfg + k->off) = (int)v;
    } else if (k->kind == CK_U64) {
        *(uint64_t *)(void *)((char *)cfg + k->off) = (uint64_t)v;
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
static enum wye_err conf_set_str(void *base, const struct conf_key *k, const char *who,
                                 const char *s, size_t len, char *err, size_t errlen)
{
    struct conf_config *cfg = base; /* only for the top-level kinds (listen, log_level) */
    if (len == 0) {
        return conf_fail(err, errlen, WYE_ERR_INVAL, "%s: must not be empty", who);
    }
    size_t max = k->kind == CK_TEXT ? CONF_TEXT_MAX : CONF_STR_MAX;
    if (len > max) {
        return conf_fail(err, errlen, WYE_ERR_INVAL, "%s: longer than %zu bytes", who, max);
    }
    if (memchr(s, '\0', len)) {
        return conf_fail(err, errlen, WYE_ERR_INVAL, "%s: contains a NUL byte", who);
    }
    bool ok = true;
    switch (k->kind) {
    case CK_INT:
    case CK_U64:
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
    case CK_TEXT:
        for (size_t i = 0; ok && i < len; i++) {
            unsigned char c = (unsigned char)s[i];
            ok = (c >= 0x20 && c != 0x7f) || c == '\n' || c == '\t' || c == '\r';
        }
        if (!ok) {
            return conf_fail(err, errlen, WYE_ERR_INVAL, "%s: contains control characters", who);
        }
        break;
    case CK_IDENT:
        ok = len <= CONF_KEY_NAME_MAX;
        for (size_t i = 0; ok && i < len; i++) {
            char c = s[i];
            ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                 c == '_' || c == '.' || c == '-' || c == '@';
        }
        if (!ok) {
            return conf_fail(err, errlen, WYE_ERR_INVAL,
                             "%s: expected 1 to %d characters from A-Z a-z 0-9 _ . - @", who,
                             CONF_KEY_NAME_MAX);
        }
        break;
    case CK_SHA256: {
        char hex[65];
        uint8_t *dst = (uint8_t *)base + k->off;
        if (len == 64) {
            memcpy(hex, s, 64);
            hex[64] = '\0';
        }
        if (len != 64 || !wye_hex_decode(hex, dst, 32)) {
            return conf_fail(err, errlen, WYE_ERR_INVAL,
                             "%s: expected 64 hex digits (the SHA-256 of the key, from 'wye keys new')",
                             who);
        }
        return WYE_OK;
    }
    case CK_OVERBUDGET: {
        enum conf_over_budget *dst = (void *)((char *)base + k->off);
        if (len == 5 && memcmp(s, "local", 5) == 0) {
            *dst = CONF_OVER_BUDGET_LOCAL;
        } else if (len == 6 && memcmp(s, "refuse", 6) == 0) {
            *dst = CONF_OVER_BUDGET_REFUSE;
        } else {
            return conf_fail(err, errlen, WYE_ERR_INVAL, "%s: expected \"local\" or \"refuse\"",
                             who);
        }
        return WYE_OK;
    }
    case CK_FSYNC: {
        enum conf_fsync *dst = (void *)((char *)base + k->off);
        if (len == 4 && memcmp(s, "none", 4) == 0) {
            *dst = CONF_FSYNC_NONE;
        } else if (len == 6 && memcmp(s, "always", 6) == 0) {
            *dst = CONF_FSYNC_ALWAYS;
        } else if (len == 8 && memcmp(s, "interval", 8) == 0) {
            *dst = CONF_FSYNC_INTERVAL;
        } else {
            return conf_fail(err, errlen, WYE_ERR_INVAL,
                             "%s: expected \"none\", \"always\" or \"interval\"", who);
        }
        return WYE_OK;
    }
    case CK_KV: {
        bool *dst = (void *)((char *)base + k->off);
        if (len == 3 && memcmp(s, "f32", 3) == 0) {
            *dst = false;
        } else if (len == 3 && memcmp(s, "f16", 3) == 0) {
            *dst = true;
        } else {
            return conf_fail(err, errlen, WYE_ERR_INVAL, "%s: expected \"f32\" or \"f16\"", who);
        }
        return WYE_OK;
    }
    case CK_SECTION:
    case CK_BOOL:
    case CK_TRIBOOL:
    case CK_DOUBLE:
    case CK_ROUTES:
    case CK_API_KEYS:
    case CK_PRICES:
    case CK_ALLOW:
        WYE_ASSERT(!"this kind has no string value");
    }
    return conf_store_str(base, k, s, len, err, errlen);
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

static enum wye_err conf_walk(lua_State *L, struct conf_lua *lx, int t, const struct conf_key *keys,
                              const char *prefix, void *base);

/* Counts the entries of the table at t and checks that they form an array 1..n. */
static enum wye_err conf_array_len(lua_State *L, struct conf_lua *lx, int t, const char *who,
                                   size_t max, size_t *out)
{
    size_t n = 0;
    lua_Unsigned len = lua_rawlen(L, t);
    lua_pushnil(L);
    while (lua_next(L, t)) {
        lua_pop(L, 1);
        int isint = 0;
        lua_Integer i = lua_type(L, -1) == LUA_TNUMBER ? lua_tointegerx(L, -1, &isint) : 0;
        n++;
        if (!isint || i < 1 || (lua_Unsigned)i > len) {
            lua_pop(L, 1);
            return conf_fail(lx->err, lx->errlen, WYE_ERR_INVAL,
                             "%s: expected an array (a list without named keys)", who);
        }
    }
    if (n > max) {
        return conf_fail(lx->err, lx->errlen, WYE_ERR_TOOBIG, "%s: more than %zu entries", who,
                         max);
    }
    *out = n;
    return WYE_OK;
}

/* routes = { "local", "remote" } into CONF_ROUTE_* bits. */
static enum wye_err conf_walk_routes(lua_State *L, struct conf_lua *lx, int t, const char *who,
                                     unsigned *out)
{
    size_t n;
    enum wye_err rc = conf_array_len(L, lx, t, who, 16, &n);
    unsigned bits = 0;
    for (size_t i = 1; !rc && i <= n; i++) {
        size_t len = 0;
        const char *s = lua_rawgeti(L, t, (lua_Integer)i) == LUA_TSTRING
                            ? lua_tolstring(L, -1, &len)
                            : NULL;
        if (s && len == 5 && memcmp(s, "local", 5) == 0) {
            bits |= CONF_ROUTE_LOCAL;
        } else if (s && len == 6 && memcmp(s, "remote", 6) == 0) {
            bits |= CONF_ROUTE_REMOTE;
        } else {
            rc = conf_fail(lx->err, lx->errlen, WYE_ERR_INVAL,
                           "%s[%zu]: expected \"local\" or \"remote\"", who, i);
        }
        lua_pop(L, 1);
    }
    if (!rc && bits == 0) {
        rc = conf_fail(lx->err, lx->errlen, WYE_ERR_INVAL,
                       "%s: must allow at least one of \"local\", \"remote\"", who);
    }
    if (!rc) {
        *out = bits;
    }
    return rc;
}

/* keys = { { name = ..., sha256 = ..., ... }, ... } into cfg->api_keys. */
static enum wye_err conf_walk_api_keys(lua_State *L, struct conf_lua *lx, int t, const char *path)
{
    struct conf_config *cfg = lx->cfg;
    char who[288];
    snprintf(who, sizeof(who), "%s: %s", lx->shown, path);
    size_t n;
    enum wye_err rc = conf_array_len(L, lx, t, who, CONF_API_KEYS_MAX, &n);
    if (rc || n == 0) {
        return rc;
    }
    /* Attached to cfg before any further Lua call, so an error (or a Lua memory error
     * unwinding through here) leaves nothing unowned. */
    cfg->api_keys = wye_calloc(n, sizeof(*cfg->api_keys));
    if (!cfg->api_keys) {
        return conf_nomem(lx->err, lx->errlen);
    }
    for (size_t i = 0; !rc && i < n; i++) {
        struct conf_api_key *k = &cfg->api_keys[i];
        char sub[192];
        snprintf(sub, sizeof(sub), "%s[%zu]", path, i + 1);
        snprintf(who, sizeof(who), "%s: %s", lx->shown, sub);
        *k = (struct conf_api_key){.budget_usd_day = -1, .budget_usd_month = -1,
                                   .routes = CONF_ROUTE_LOCAL | CONF_ROUTE_REMOTE};
        cfg->n_api_keys = i + 1;
        bool have_hash = false, have_over = false;
        int vt = lua_rawgeti(L, t, (lua_Integer)(i + 1));
        if (vt != LUA_TTABLE) {
            rc = conf_fail(lx->err, lx->errlen, WYE_ERR_INVAL, "%s: expected a table, got %s", who,
                           lua_typename(L, vt));
        } else {
            int e = lua_gettop(L);
            rc = conf_walk(L, lx, e, conf_api_key_keys, sub, k);
            lua_pushliteral(L, "sha256");
            have_hash = lua_rawget(L, e) != LUA_TNIL;
            lua_pushliteral(L, "over_budget");
            have_over = lua_rawget(L, e) != LUA_TNIL;
            lua_pop(L, 2);
        }
        lua_pop(L, 1);
        if (!rc && !k->name) {
            rc = conf_fail(lx->err, lx->errlen, WYE_ERR_INVAL, "%s.name: required", who);
        } else if (!rc && !have_hash) {
            rc = conf_fail(lx->err, lx->errlen, WYE_ERR_INVAL,
                           "%s.sha256: required (create a key with 'wye keys new NAME')", who);
        }
        if (!rc && !have_over && !(k->routes & CONF_ROUTE_LOCAL)) {
            k->over_budget = CONF_OVER_BUDGET_REFUSE;
        }
        if (!rc && k->over_budget == CONF_OVER_BUDGET_LOCAL && !(k->routes & CONF_ROUTE_LOCAL)) {
            rc = conf_fail(lx->err, lx->errlen, WYE_ERR_INVAL,
                           "%s.over_budget: \"local\" needs \"local\" in routes", who);
        }
        for (size_t j = 0; !rc && j < i; j++) {
            if (strcmp(cfg->api_keys[j].name, k->name) == 0) {
                rc = conf_fail(lx->err, lx->errlen, WYE_ERR_INVAL,
                               "%s.name: the name is already used by %s[%zu]", who, path, j + 1);
            } else if (memcmp(cfg->api_keys[j].sha256, k->sha256, 32) == 0) {
                rc = conf_fail(lx->err, lx->errlen, WYE_ERR_INVAL,
                               "%s.sha256: the same hash is already used by %s[%zu]", who, path,
                               j + 1);
            }
        }
    }
    return rc;
}

/* The number of entries of the map at index t, at most max (TOOBIG naming path and what
 * otherwise). */
static enum wye_err conf_map_len(lua_State *L, struct conf_lua *lx, int t, const char *path,
                                 size_t max, const char *what, size_t *n)
{
    *n = 0;
    lua_pushnil(L);
    while (lua_next(L, t)) {
        lua_pop(L, 1);
        (*n)++;
    }
    if (*n > max) {
        return conf_fail(lx->err, lx->errlen, WYE_ERR_TOOBIG, "%s: %s: more than %zu %s",
                         lx->shown, path, max, what);
    }
    return WYE_OK;
}

/* prices.models = { ["model"] = { input_per_1m = ..., output_per_1m = ... }, ... }. */
static enum wye_err conf_walk_prices(lua_State *L, struct conf_lua *lx, int t, const char *path)
{
    struct conf_config *cfg = lx->cfg;
    char who[352];
    size_t n;
    enum wye_err rc0 = conf_map_len(L, lx, t, path, CONF_PRICES_MAX, "models", &n);
    if (rc0 || n == 0) {
        return rc0;
    }
    cfg->prices.models = wye_calloc(n, sizeof(*cfg->prices.models));
    if (!cfg->prices.models) {
        return conf_nomem(lx->err, lx->errlen);
    }
    enum wye_err rc = WYE_OK;
    lua_pushnil(L);
    while (!rc && lua_next(L, t)) {
        char name[64], sub[240];
        conf_key_name(L, -2, name, sizeof(name));
        snprintf(sub, sizeof(sub), "%s[%s]", path, name);
        snprintf(who, sizeof(who), "%s: %s", lx->shown, sub);
        int vt = lua_type(L, -1);
        size_t klen = 0;
        const char *model = lua_type(L, -2) == LUA_TSTRING ? lua_tolstring(L, -2, &klen) : NULL;
        struct conf_price *p = &cfg->prices.models[cfg->prices.n_models];
        if (!model || klen == 0 || klen > CONF_STR_MAX || memchr(model, '\0', klen)) {
            rc = conf_fail(lx->err, lx->errlen, WYE_ERR_INVAL,
                           "%s: expected a model name (a non-empty string) as the key", who);
        } else if (vt != LUA_TTABLE) {
            rc = conf_fail(lx->err, lx->errlen, WYE_ERR_INVAL, "%s: expected a table, got %s", who,
                           lua_typename(L, vt));
        } else if (!(p->model = wye_strndup(model, klen))) {
            rc = conf_nomem(lx->err, lx->errlen);
        } else {
            cfg->prices.n_models++;
            int e = lua_gettop(L);
            rc = conf_walk(L, lx, e, conf_price_keys, sub, p);
            for (int f = 0; !rc && f < 2; f++) {
                const char *fname = f ? "output_per_1m" : "input_per_1m";
                if (lua_getfield(L, e, fname) == LUA_TNIL) {
                    rc = conf_fail(lx->err, lx->errlen, WYE_ERR_INVAL, "%s.%s: required", who,
                                   fname);
                }
                lua_pop(L, 1);
            }
        }
        lua_pop(L, 1);
    }
    if (rc) {
        lua_pop(L, 1); /* the key lua_next left */
    }
    return rc;
}

/* Host patterns a host may take: letters, digits, '.', '-', ':' (a port) and a leading "*." or
 * a lone "*". */
static bool conf_host_pattern_ok(const char *s, size_t n)
{
    if (n == 0 || n > 253) {
        return false;
    }
    if (n == 1 && s[0] == '*') {
        return true;
    }
    size_t i = n > 2 && s[0] == '*' && s[1] == '.' ? 2 : 0;
    for (; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '-' || c == ':')) {
            return false;
        }
    }
    return true;
}

/* agents.allow_hosts = { name = { "host", "*.example.com", ... }, ... }. */
static enum wye_err conf_walk_allow(lua_State *L, struct conf_lua *lx, int t, const char *path)
{
    struct conf_config *cfg = lx->cfg;
    char who[352];
    size_t n;
    enum wye_err rc0 = conf_map_len(L, lx, t, path, CONF_ALLOW_MAX, "entries", &n);
    if (rc0 || n == 0) {
        return rc0;
    }
    cfg->agents.allow = wye_calloc(n, sizeof(*cfg->agents.allow));
    if (!cfg->agents.allow) {
        return conf_nomem(lx->err, lx->errlen);
    }
    enum wye_err rc = WYE_OK;
    lua_pushnil(L);
    while (!rc && lua_next(L, t)) {
        char name[64], sub[240];
        conf_key_name(L, -2, name, sizeof(name));
        snprintf(sub, sizeof(sub), "%s[%s]", path, name);
        snprintf(who, sizeof(who), "%s: %s", lx->shown, sub);
        size_t klen = 0;
        const char *agent = lua_type(L, -2) == LUA_TSTRING ? lua_tolstring(L, -2, &klen) : NULL;
        struct conf_allow *a = &cfg->agents.allow[cfg->agents.n_allow];
        size_t m = 0;
        if (!agent || klen == 0 || klen > CONF_STR_MAX || memchr(agent, '\0', klen)) {
            rc = conf_fail(lx->err, lx->errlen, WYE_ERR_INVAL,
                           "%s: expected an agent or workflow name (a non-empty string) as the key",
                           who);
        } else if (lua_type(L, -1) != LUA_TTABLE) {
            rc = conf_fail(lx->err, lx->errlen, WYE_ERR_INVAL,
                           "%s: expected a list of hosts, got %s", who, luaL_typename(L, -1));
        } else if (!(a->name = wye_strndup(agent, klen))) {
            rc = conf_nomem(lx->err, lx->errlen);
        } else {
            cfg->agents.n_allow++;
            rc = conf_array_len(L, lx, lua_gettop(L), who, CONF_ALLOW_HOSTS_MAX, &m);
        }
        size_t total = 0;
        for (size_t i = 1; !rc && i <= m; i++) {
            size_t len = 0;
            const char *h = lua_rawgeti(L, -1, (lua_Integer)i) == LUA_TSTRING
                                ? lua_tolstring(L, -1, &len)
                                : NULL;
            if (!h || !conf_host_pattern_ok(h, len)) {
                rc = conf_fail(lx->err, lx->errlen, WYE_ERR_INVAL,
                               "%s[%zu]: expected a host name (\"api.example.com\", "
                               "\"*.example.com\" or \"*\")",
                               who, i);
            } else {
                char *joined = wye_realloc(a->hosts, total + len + 2);
                if (!joined) {
                    rc = conf_nomem(lx->err, lx->errlen);
                } else {
                    a->hosts = joined;
                    if (total) {
                        a->hosts[total++] = ',';
                    }
                    memcpy(a->hosts + total, h, len);
                    total += len;
                    a->hosts[total] = '\0';
                }
            }
            lua_pop(L, 1);
        }
        lua_pop(L, 1);
    }
    if (rc) {
        lua_pop(L, 1); /* the key lua_next left */
    }
    return rc;
}

/* Walks the table at index t against keys, storing into base (cfg, or an array element);
 * prefix is the dotted path of the table ("" at the top). */
static enum wye_err conf_walk(lua_State *L, struct conf_lua *lx, int t, const struct conf_key *keys,
                              const char *prefix, void *base)
{
    enum wye_err rc = WYE_OK;
    lua_pushnil(L);
    while (!rc && lua_next(L, t)) {
        char name[64], who[272], path[160];
        conf_key_name(L, -2, name, sizeof(name));
        snprintf(path, sizeof(path), "%s%s%s", prefix, *prefix ? "." : "", name);
        snprintf(who, sizeof(who), "%s: %s", lx->shown, path);
        const struct conf_key *k = NULL;
        if (lua_type(L, -2) == LUA_TSTRING) {
            size_t klen;
            const char *kname = lua_tolstring(L, -2, &klen);
            k = conf_key_find(keys, kname, klen);
        }
        int vt = lua_type(L, -1);
        void *field = k ? (char *)base + k->off : NULL;
        if (!k) {
            rc = conf_fail(lx->err, lx->errlen, WYE_ERR_INVAL, "%s: unknown key", who);
        } else if (k->kind == CK_SECTION || k->kind == CK_API_KEYS || k->kind == CK_PRICES ||
                   k->kind == CK_ROUTES || k->kind == CK_ALLOW) {
            if (vt != LUA_TTABLE) {
                rc = conf_fail(lx->err, lx->errlen, WYE_ERR_INVAL, "%s: expected a table, got %s",
                               who, lua_typename(L, vt));
            } else if (k->kind == CK_SECTION) {
                rc = conf_walk(L, lx, lua_gettop(L), k->sub, path, base);
            } else if (k->kind == CK_API_KEYS) {
                rc = conf_walk_api_keys(L, lx, lua_gettop(L), path);
            } else if (k->kind == CK_PRICES) {
                rc = conf_walk_prices(L, lx, lua_gettop(L), path);
            } else if (k->kind == CK_ALLOW) {
                rc = conf_walk_allow(L, lx, lua_gettop(L), path);
            } else {
                rc = conf_walk_routes(L, lx, lua_gettop(L), who, field);
            }
        } else if (k->kind == CK_BOOL || k->kind == CK_TRIBOOL) {
            if (vt != LUA_TBOOLEAN) {
                rc = conf_fail(lx->err, lx->errlen, WYE_ERR_INVAL,
                               "%s: expected a boolean, got %s", who, lua_typename(L, vt));
            } else if (k->kind == CK_BOOL) {
                *(bool *)field = lua_toboolean(L, -1);
            } else {
                *(int *)field = lua_toboolean(L, -1) ? 1 : 0;
            }
        } else if (k->kind == CK_DOUBLE) {
            double v = vt == LUA_TNUMBER ? (double)lua_tonumber(L, -1) : 0;
            if (vt != LUA_TNUMBER) {
                rc = conf_fail(lx->err, lx->errlen, WYE_ERR_INVAL, "%s: expected a number, got %s",
                               who, lua_typename(L, vt));
            } else if (!(v >= k->dmin && v <= k->dmax)) { /* NaN fails too */
                rc = conf_fail(lx->err, lx->errlen, WYE_ERR_INVAL, "%s: %g is out of range %g..%g",
                               who, v, k->dmin, k->dmax);
            } else {
                *(double *)field = v;
            }
        } else if (k->kind == CK_INT || k->kind == CK_SIZE || k->kind == CK_U64) {
            int isint = 0;
            lua_Integer v = vt == LUA_TNUMBER ? lua_tointegerx(L, -1, &isint) : 0;
            if (vt != LUA_TNUMBER) {
                rc = conf_fail(lx->err, lx->errlen, WYE_ERR_INVAL,
                               "%s: expected an integer, got %s", who, lua_typename(L, vt));
            } else if (!isint) {
                rc = conf_fail(lx->err, lx->errlen, WYE_ERR_INVAL,
                               "%s: expected an integer, got %g", who, (double)lua_tonumber(L, -1));
            } else {
                rc = conf_set_int(base, k, who, (long long)v, lx->err, lx->errlen);
            }
        } else if (vt != LUA_TSTRING) {
            rc = conf_fail(lx->err, lx->errlen, WYE_ERR_INVAL, "%s: expected a string, got %s", who,
                           lua_typename(L, vt));
        } else {
            size_t len;
            const char *s = lua_tolstring(L, -1, &len);
            rc = conf_set_str(base, k, who, s, len, lx->err, lx->errlen);
        }
        lua_pop(L, 1);
    }
    if (rc) {
        lua_pop(L, 1); /* the key lua_next left */
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
    lx->rc = conf_walk(L, lx, t, conf_top_keys, "", lx->cfg);
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
    if (cfg->auth.required_set < 0) {
        cfg->auth.required = cfg->n_api_keys > 0;
    } else {
        cfg->auth.required = cfg->auth.required_set == 1;
    }
    if (cfg->auth.required && cfg->n_api_keys == 0) {
        return conf_fail(
            err, errlen, WYE_ERR_INVAL,
            "auth.required: true, but no keys are configured (add keys = { ... }; see 'wye keys new')");
    }
    if (cfg->router.hook && cfg->router.hook_file) {
        return conf_fail(err, errlen, WYE_ERR_INVAL,
                         "router.hook_file: give either router.hook or router.hook_file, not both");
    }
    const struct {
        const char *path;
        const char *who;
    } files[] = {{cfg->router.hook_file, "router.hook_file"}, {cfg->router.weights_path, "router.weights"}};
    for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
        if (files[i].path && access(files[i].path, R_OK) != 0) {
            char eb[128];
            return conf_fail(err, errlen, WYE_ERR_INVAL, "%s: cannot read the file: %s", files[i].who,
                             wye_strerror(errno, eb, sizeof(eb)));
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
    cfg->auth.required_set = -1;
    cfg->prices.default_remote = (struct conf_price){.input_per_1m = 0.15, .output_per_1m = 0.60};
    cfg->ledger = (struct conf_ledger){.fsync = CONF_FSYNC_INTERVAL, .fsync_interval_ms = 1000};
    cfg->router = (struct conf_router){
        .threshold = -1, /* not set: the weights' own threshold */
        .hook_timeout_ms = 5,
        .hook_memory_kb = 1024,
        .queue_max = 64,
        .breaker_failures = 5,
        .breaker_cooldown_ms = 10000,
        .latency_target_ms = 10000,
    };
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
                    cfg->engine.model_name, cfg->ledger_path,          cfg->source_path,
                    cfg->router.weights_path, cfg->router.hook,        cfg->router.hook_file};
    for (size_t i = 0; i < sizeof(strs) / sizeof(strs[0]); i++) {
        wye_free(strs[i]);
    }
    for (size_t i = 0; i < cfg->n_api_keys; i++) {
        wye_free(cfg->api_keys[i].name);
    }
    wye_free(cfg->api_keys);
    for (size_t i = 0; i < cfg->prices.n_models; i++) {
        wye_free(cfg->prices.models[i].model);
    }
    wye_free(cfg->prices.models);
    for (size_t i = 0; i < cfg->agents.n_allow; i++) {
        wye_free(cfg->agents.allow[i].name);
        wye_free(cfg->agents.allow[i].hosts);
    }
    wye_free(cfg->agents.allow);
    wye_free(cfg);
}

const struct conf_price *conf_price_for(const struct conf_config *cfg, const char *model)
{
    for (size_t i = 0; model && i < cfg->prices.n_models; i++) {
        if (strcmp(cfg->prices.models[i].model, model) == 0) {
            return &cfg->prices.models[i];
        }
    }
    return &cfg->prices.default_remote;
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
    WYE_INFO("config: engine %s (%s) threads %d ctx %d sequences %d kv %s, ledger %s",
             conf_or(e->model_path, "(none)"), conf_or(e->model_name, "-"), e->n_threads, e->n_ctx,
             e->n_seq_max, e->kv_f16 ? "f16" : "f32", conf_or(cfg->ledger_path, "(none)"));
    char th[32];
    if (cfg->router.threshold >= 0) {
        snprintf(th, sizeof(th), "%.3f", cfg->router.threshold);
    } else {
        snprintf(th, sizeof(th), "%s", "of the weights");
    }
    char lt[32];
    if (cfg->router.latency_target_ms > 0) {
        snprintf(lt, sizeof(lt), "%d ms", cfg->router.latency_target_ms);
    } else {
        snprintf(lt, sizeof(lt), "%s", "off");
    }
    WYE_INFO("config: %zu API keys, auth %s, %zu model prices, router threshold %s, queue %d, "
             "latency target %s%s",
             cfg->n_api_keys, cfg->auth.required ? "required" : "optional (anonymous allowed)",
             cfg->prices.n_models, th, cfg->router.queue_max, lt,
             cfg->router.hook || cfg->router.hook_file ? ", Lua hook" : "");
}
