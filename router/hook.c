/* The Lua route hook: route(request, features, score) -> "local" | "remote", run in the lua/
 * module's sandbox (base without files, string, table, math, utf8, coroutine; text chunks
 * only; a memory cap in the allocator; a time budget in a count hook). The user's source is
 * wrapped so that it may define a global `route` or return the function; it is compiled once
 * at creation to report syntax errors early, and each call runs it in a fresh run (a coroutine
 * with its own globals), so nothing a hook leaves behind leaks into the next request.
 * Runs on the router's hook thread (router.c), never on the lws thread; one call at a time per
 * hook. */
#include <stdio.h>
#include <string.h>

#include "common/alloc.h"
#include "common/buf.h"
#include "lua/lua_sandbox.h"
#include "router/policy.h"

#define HOOK_ARGS_MAX ((size_t)64 << 10) /* the JSON handed to one call */
#define HOOK_TEXT_MAX 4096               /* bytes of the last user message shown to the hook */
#define HOOK_INSNS_MAX 50000000          /* instructions per call (the time budget bites first) */

/* Line 1 of the user's source stays line 1: the prefix has no newline. */
static const char hook_prefix[] = "local __wye_ret = (function(...) ";
static const char hook_suffix[] =
    "\nend)()\n"
    "local __wye_fn = route\n"
    "if type(__wye_ret) == 'function' then __wye_fn = __wye_ret\n"
    "elseif type(__wye_ret) == 'table' and type(__wye_ret.route) == 'function' then\n"
    "  __wye_fn = __wye_ret.route end\n"
    "if type(__wye_fn) ~= 'function' then error('the hook defines no route function', 0) end\n"
    "return function(a) return __wye_fn(a.request, a.features, a.score) end\n";

struct rt_hook {
    struct wlua_state *st;
    char *chunkname;
    char *src; /* prefix + user source + suffix */
    size_t len;
    struct wye_buf args; /* reused for every call */
};

void rt_hook_destroy(struct rt_hook *h)
{
    if (!h) {
        return;
    }
    wlua_state_destroy(h->st);
    wye_buf_cleanup(&h->args);
    wye_free(h->src);
    wye_free(h->chunkname);
    wye_free(h);
}

static enum wye_err args_json(struct rt_hook *h, const struct wye_chat_req *req,
                              const struct rt_features *f, double score)
{
    struct wye_buf *b = &h->args;
    wye_buf_reset(b);
    const char *model = req->model ? req->model : "auto";
    const char *last = "";
    size_t chars = 0;
    for (size_t i = 0; i < req->n_msgs; i++) {
        chars += strlen(req->msgs[i].content);
        if (req->msgs[i].role == WYE_ROLE_USER) {
            last = req->msgs[i].content;
        }
    }
    size_t last_len = strlen(last);
    if (last_len > HOOK_TEXT_MAX) {
        /* the tail, on a UTF-8 character boundary */
        const char *p = last + last_len - HOOK_TEXT_MAX;
        while (((unsigned char)*p & 0xC0) == 0x80) {
            p++;
        }
        last_len -= (size_t)(p - last);
        last = p;
    }
    enum wye_err err = wye_buf_append_str(b, "{\"request\":{\"model\":");
    if (!err) {
        err = wye_buf_append_json_str(b, model, strlen(model));
    }
    if (!err) {
        err = wye_buf_append_str(b, ",\"key\":");
    }
    if (!err) {
        err = req->key_name ? wye_buf_append_json_str(b, req->key_name, strlen(req->key_name))
                            : wye_buf_append_str(b, "null");
    }
    if (!err) {
        err = wye_buf_printf(b,
                             ",\"n_messages\":%zu,\"chars\":%zu,\"max_tokens\":%d,\"stream\":%s,"
                             "\"tools\":%s,\"text\":",
                             req->n_msgs, chars, req->max_tokens, req->stream ? "true" : "false",
                             req->has_tools ? "true" : "false");
    }
    if (!err) {
        err = wye_buf_append_json_str(b, last, last_len);
    }
    if (!err) {
        err = wye_buf_append_str(b, "},\"features\":{");
    }
    for (int i = 0; !err && i < RT_F__COUNT; i++) {
        err = wye_buf_printf(b, "%s\"%s\":%.6g", i ? "," : "", rt_feature_name(i), (double)f->v[i]);
    }
    if (!err) {
        err = wye_buf_printf(b, "},\"score\":%.6f}", score);
    }
    return err;
}

enum wye_err rt_hook_create(const char *chunkname, const char *src, size_t len, int memory_kb,
                            int timeout_ms, struct rt_hook **out, char *errbuf, size_t errlen)
{
    *out = NULL;
    struct rt_hook *h = wye_calloc(1, sizeof(*h));
    if (!h) {
        goto fail_nomem;
    }
    wye_buf_init(&h->args, HOOK_ARGS_MAX);
    h->chunkname = wye_strdup(chunkname ? chunkname : "router.hook");
    h->len = sizeof(hook_prefix) - 1 + len + sizeof(hook_suffix) - 1;
    h->src = wye_malloc(h->len + 1);
    if (!h->chunkname || !h->src) {
        goto fail_nomem;
    }
    memcpy(h->src, hook_prefix, sizeof(hook_prefix) - 1);
    memcpy(h->src + sizeof(hook_prefix) - 1, src, len);
    memcpy(h->src + sizeof(hook_prefix) - 1 + len, hook_suffix, sizeof(hook_suffix));
    struct wlua_opts o;
    memset(&o, 0, sizeof(o));
    o.limits.mem_bytes_max = (size_t)(memory_kb > 0 ? memory_kb : 1024) * 1024;
    o.limits.timeout_ms = timeout_ms > 0 ? timeout_ms : 5;
    o.limits.n_insns_max = HOOK_INSNS_MAX;
    o.limits.hook_every = 1000;
    h->st = wlua_state_create(&o);
    if (!h->st) {
        goto fail_nomem;
    }
    /* a dry run: compiles the source and checks that it yields a route function */
    struct rt_features f;
    memset(&f, 0, sizeof(f));
    struct wye_chat_req probe;
    memset(&probe, 0, sizeof(probe));
    enum rt_route r;
    char e[256];
    enum wye_err err = rt_hook_call(h, &probe, &f, 0.0, &r, e, sizeof(e));
    if (err == WYE_ERR_PARSE || (err && strstr(e, "defines no route function"))) {
        snprintf(errbuf, errlen, "router hook: %s", e);
        rt_hook_destroy(h);
        return err == WYE_ERR_PARSE ? WYE_ERR_PARSE : WYE_ERR_INVAL;
    }
    *out = h;
    return WYE_OK;
fail_nomem:
    rt_hook_destroy(h);
    snprintf(errbuf, errlen, "router hook: out of memory");
    return WYE_ERR_NOMEM;
}

enum wye_err rt_hook_call(struct rt_hook *h, const struct wye_chat_req *req,
                          const struct rt_features *f, double score, enum rt_route *route,
                          char *errbuf, size_t errlen)
{
    enum wye_err err = args_json(h, req, f, score);
    if (err) {
        snprintf(errbuf, errlen, "cannot encode the hook's arguments: %s", wye_err_str(err));
        return err;
    }
    struct wlua_run *run = NULL;
    enum wlua_status s =
        wlua_run_start(h->st, h->chunkname, h->src, h->len, NULL, h->args.data, &run);
    if (s == WLUA_ERROR) {
        err = run ? wlua_run_err(run) : WYE_ERR_NOMEM;
        snprintf(errbuf, errlen, "%s", wlua_run_error(run));
    } else if (s == WLUA_YIELDED) {
        err = WYE_ERR_UNSUPPORTED;
        snprintf(errbuf, errlen, "the hook called a host function that is not available");
    } else {
        const char *res = wlua_run_result(run);
        if (res && strcmp(res, "\"local\"") == 0) {
            *route = RT_ROUTE_LOCAL;
        } else if (res && strcmp(res, "\"remote\"") == 0) {
            *route = RT_ROUTE_REMOTE;
        } else {
            err = WYE_ERR_INVAL;
            snprintf(errbuf, errlen, "route() returned %.60s, not \"local\" or \"remote\"",
                     res ? res : "nothing");
        }
    }
    wlua_run_destroy(run);
    return err;
}
