/* The host calls a task can make (wye.chat via ctx:chat, ctx:tool, ctx:emit, wye.http.request,
 * wye.data.json, and the batch ctx:all sends): each either answers at once (emit, data, refusals
 * such as a host outside the allowlist) or starts a host op / child task whose answer is
 * delivered later. Runs on the agent worker thread. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <cjson/cJSON.h>

#include "agents/agent_internal.h"
#include "common/alloc.h"
#include "common/clock.h"
#include "common/log.h"
#include "lua/lua_sandbox.h"

#define AGENT_DATA_BYTES_MAX (1u << 20)
#define AGENT_BATCH_MAX 64
#define AGENT_SLEEP_MS_MAX 3600000.0 /* one hour: a run's timeout_s ends it earlier */

/* ---- host calls ---- */

static bool host_in_list(const char *list, const char *host)
{
    if (!list) {
        return false;
    }
    size_t hl = strlen(host);
    const char *p = list;
    while (*p) {
        while (*p == ',' || *p == ' ') {
            p++;
        }
        const char *e = p;
        while (*e && *e != ',' && *e != ' ') {
            e++;
        }
        size_t n = (size_t)(e - p);
        if (n == 1 && *p == '*') {
            return true;
        }
        if (n > 0 && n == hl && strncasecmp(p, host, n) == 0) {
            return true;
        }
        /* "*.example.com" allows subdomains */
        if (n > 2 && p[0] == '*' && p[1] == '.' && hl > n - 1 &&
            strncasecmp(host + hl - (n - 1), p + 1, n - 1) == 0) {
            return true;
        }
        p = e;
    }
    return false;
}

/* Extracts the host of an http(s) URL into host; false with errbuf set if malformed. */
static bool url_host(const char *url, char *host, size_t n, char *errbuf, size_t errlen)
{
    const char *p = NULL;
    if (strncasecmp(url, "http://", 7) == 0) {
        p = url + 7;
    } else if (strncasecmp(url, "https://", 8) == 0) {
        p = url + 8;
    } else {
        snprintf(errbuf, errlen, "url must start with http:// or https://");
        return false;
    }
    size_t l = strcspn(p, "/:?#@");
    if (p[l] == '@') {
        snprintf(errbuf, errlen, "url must not carry credentials");
        return false;
    }
    if (l == 0 || l >= n) {
        snprintf(errbuf, errlen, "url has no valid host");
        return false;
    }
    memcpy(host, p, l);
    host[l] = '\0';
    return true;
}

static void call_http(struct agent_task *t, struct agent_waiter w, const cJSON *arg)
{
    struct agent_run *run = t->run;
    struct agent_rt *rt = run->rt;
    char eb[512], host[256];
    const cJSON *url = cJSON_GetObjectItemCaseSensitive(arg, "url");
    if (!cJSON_IsString(url)) {
        agent_deliver(w, NULL, "the request needs a 'url' string");
        return;
    }
    if (!url_host(url->valuestring, host, sizeof(host), eb, sizeof(eb))) {
        agent_deliver(w, NULL, eb);
        return;
    }
    const char *conf_hosts = NULL; /* the config's agents.allow_hosts for this agent */
    for (size_t i = 0; i < rt->n_allow && !conf_hosts; i++) {
        if (strcmp(rt->allow_names[i], run->decl->name) == 0) {
            conf_hosts = rt->allow_lists[i];
        }
    }
    if (!host_in_list(run->decl->allow_hosts, host) && !host_in_list(t->allow_hosts, host) &&
        !host_in_list(rt->allow_hosts, host) && !host_in_list(conf_hosts, host)) {
        snprintf(eb, sizeof(eb), "host '%s' is not allowed for '%s' (add it to allow_hosts)", host,
                 run->decl->name);
        agent_deliver(w, NULL, eb);
        return;
    }
    if (!rt->ops.http) {
        agent_deliver(w, NULL, "http is not available in this host");
        return;
    }
    const cJSON *m = cJSON_GetObjectItemCaseSensitive(arg, "method");
    const cJSON *body = cJSON_GetObjectItemCaseSensitive(arg, "body");
    const cJSON *to = cJSON_GetObjectItemCaseSensitive(arg, "timeout");
    const cJSON *hd = cJSON_GetObjectItemCaseSensitive(arg, "headers");
    const char *lines[32];
    char *owned[32];
    size_t nh = 0;
    const cJSON *h;
    cJSON_ArrayForEach(h, hd)
    {
        if (nh < 32 && h->string && cJSON_IsString(h) && !strpbrk(h->string, "\r\n:") &&
            !strpbrk(h->valuestring, "\r\n")) {
            size_t n = strlen(h->string) + strlen(h->valuestring) + 3;
            owned[nh] = wye_malloc(n);
            if (owned[nh]) {
                snprintf(owned[nh], n, "%s: %s", h->string, h->valuestring);
                lines[nh] = owned[nh];
                nh++;
            }
        }
    }
    struct agent_http_req req = {
        .run_id = run->id,
        .method = cJSON_IsString(m) ? m->valuestring : "GET",
        .url = url->valuestring,
        .headers = lines,
        .n_headers = nh,
        .body = cJSON_IsString(body) ? body->valuestring : NULL,
        .body_len = cJSON_IsString(body) ? strlen(body->valuestring) : 0,
        .timeout_ms = 10000,
        .max_bytes = rt->http_max_bytes,
    };
    /* seconds, from the script: anything outside (0, 120] (NaN, 1e300, which no int holds)
     * keeps the default */
    double to_s = cJSON_IsNumber(to) ? to->valuedouble : 0.0;
    if (to_s > 0.0 && to_s <= 120.0 && (int)(to_s * 1000) > 0) {
        req.timeout_ms = (int)(to_s * 1000);
    }
    struct agent_op *op = agent_op_new(run, AGENT_OP_HTTP, w);
    enum wye_err err = op ? rt->ops.http(rt->host, &req, op, eb, sizeof(eb)) : WYE_ERR_NOMEM;
    for (size_t i = 0; i < nh; i++) {
        wye_free(owned[i]);
    }
    if (err) {
        agent_op_free(op);
        agent_deliver(w, NULL, op ? eb : "out of memory");
    }
}

static void call_chat(struct agent_task *t, struct agent_waiter w, const cJSON *arg)
{
    struct agent_run *run = t->run;
    struct agent_rt *rt = run->rt;
    char eb[512];
    if (run->decl->max_cost_usd > 0 && run->cost_usd >= run->decl->max_cost_usd) {
        snprintf(eb, sizeof(eb), "stopped: max_cost_usd (%g) reached", run->decl->max_cost_usd);
        agent_run_end(run, WYE_ERR_LIMIT, eb, NULL);
        return;
    }
    const cJSON *msgs = cJSON_GetObjectItemCaseSensitive(arg, "messages");
    const cJSON *prompt = cJSON_GetObjectItemCaseSensitive(arg, "prompt");
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(arg, "model");
    const cJSON *mt = cJSON_GetObjectItemCaseSensitive(arg, "max_tokens");
    const cJSON *tools = cJSON_GetObjectItemCaseSensitive(arg, "tools");
    const cJSON *rf = cJSON_GetObjectItemCaseSensitive(arg, "response_format");
    /* an empty Lua table encodes as {}: take it as no tools */
    if (tools && !cJSON_IsArray(tools) && !(cJSON_IsObject(tools) && !tools->child)) {
        agent_deliver(w, NULL, "ctx:chat: 'tools' must be a list of OpenAI tool objects");
        return;
    }
    if (rf && !cJSON_IsObject(rf)) {
        agent_deliver(w, NULL,
                      "ctx:chat: 'response_format' must be a table "
                      "({type=\"json_schema\", json_schema={name=.., schema={..}}})");
        return;
    }
    char *mj = NULL;
    if (cJSON_IsArray(msgs)) {
        mj = cJSON_PrintUnformatted(msgs);
    } else if (cJSON_IsString(prompt)) {
        cJSON *a = cJSON_CreateArray();
        cJSON *m = cJSON_CreateObject();
        cJSON_AddStringToObject(m, "role", "user");
        cJSON_AddStringToObject(m, "content", prompt->valuestring);
        cJSON_AddItemToArray(a, m);
        mj = cJSON_PrintUnformatted(a);
        cJSON_Delete(a);
    } else {
        agent_deliver(w, NULL, "ctx:chat needs 'messages' (a list) or 'prompt' (a string)");
        return;
    }
    char *tj = cJSON_GetArraySize(tools) > 0 ? cJSON_PrintUnformatted(tools) : NULL;
    char *rj = rf ? cJSON_PrintUnformatted(rf) : NULL;
    struct agent_chat_call call = {
        .run_id = run->id,
        .agent = run->decl->name,
        .model = cJSON_IsString(model) ? model->valuestring : run->decl->model,
        .messages_json = mj,
        .tools_json = tj,
        .response_format_json = rj,
        .key_name = run->key_name,
        .max_tokens = cJSON_IsNumber(mt) ? mt->valueint : 0,
    };
    bool ok = mj && (tj || cJSON_GetArraySize(tools) == 0) && (rj || !rf);
    struct agent_op *op = ok ? agent_op_new(run, AGENT_OP_CHAT, w) : NULL;
    enum wye_err err = op ? rt->ops.chat(rt->host, &call, op, eb, sizeof(eb)) : WYE_ERR_NOMEM;
    cJSON_free(mj);
    cJSON_free(tj);
    cJSON_free(rj);
    if (err) {
        agent_op_free(op);
        agent_deliver(w, NULL, op ? eb : "out of memory");
    }
}

/* Reads <dir>/data/<name> (a JSON file) for wye.data.json. */
static void call_data(struct agent_run *run, struct agent_waiter w, const cJSON *arg)
{
    if (!cJSON_IsString(arg) || !arg->valuestring[0] || strstr(arg->valuestring, "..") ||
        strchr(arg->valuestring, '/') || arg->valuestring[0] == '.') {
        agent_deliver(w, NULL, "wye.data.json needs a plain file name (\"orders.json\")");
        return;
    }
    char path[4096], eb[256];
    snprintf(path, sizeof(path), "%s/data/%s", run->reg->dir, arg->valuestring);
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(eb, sizeof(eb), "no data file '%s'", arg->valuestring);
        agent_deliver(w, NULL, eb);
        return;
    }
    char *buf = wye_malloc(AGENT_DATA_BYTES_MAX + 1);
    size_t n = buf ? fread(buf, 1, AGENT_DATA_BYTES_MAX + 1, f) : 0;
    fclose(f);
    if (!buf || n > AGENT_DATA_BYTES_MAX) {
        wye_free(buf);
        snprintf(eb, sizeof(eb), "data file '%s' is larger than 1 MiB", arg->valuestring);
        agent_deliver(w, NULL, eb);
        return;
    }
    buf[n] = '\0';
    cJSON *v = cJSON_Parse(buf);
    if (!v) {
        snprintf(eb, sizeof(eb), "data file '%s' is not valid JSON", arg->valuestring);
        agent_deliver(w, NULL, eb);
    } else {
        agent_deliver(w, buf, NULL);
    }
    cJSON_Delete(v);
    wye_free(buf);
}

static void dispatch_one(struct agent_task *t, struct agent_waiter w, const char *name,
                         const cJSON *arg);

/* wye.sleep(ms): parks the caller; the worker answers it once due (never blocks the worker). */
static void call_sleep(struct agent_run *run, struct agent_waiter w, const cJSON *arg)
{
    if (!cJSON_IsNumber(arg) || !(arg->valuedouble >= 0)) {
        agent_deliver(w, NULL, "expected a number of milliseconds >= 0");
        return;
    }
    struct agent_sleep *z = wye_calloc(1, sizeof(*z));
    if (!z) {
        agent_deliver(w, NULL, "out of memory");
        return;
    }
    double ms = arg->valuedouble > AGENT_SLEEP_MS_MAX ? AGENT_SLEEP_MS_MAX : arg->valuedouble;
    z->w = w;
    z->wake_ns = wye_now_ns() + (int64_t)(ms * 1e6);
    z->next = run->sleeps;
    run->sleeps = z;
}

static void call_batch(struct agent_task *t, const cJSON *arg)
{
    int n = cJSON_IsArray(arg) ? cJSON_GetArraySize(arg) : -1;
    if (n < 0 || n > AGENT_BATCH_MAX) {
        agent_ready_push(t, NULL, "ctx:all takes at most 64 branches");
        return;
    }
    struct agent_batch *b = wye_calloc(1, sizeof(*b));
    b->results = b ? cJSON_CreateArray() : NULL;
    for (int i = 0; b && b->results && i < n; i++) {
        cJSON_AddItemToArray(b->results, cJSON_CreateNull());
    }
    if (!b || !b->results || cJSON_GetArraySize(b->results) != n) {
        agent_batch_free(b);
        agent_ready_push(t, NULL, "out of memory");
        return;
    }
    b->task = t;
    b->n = n;
    b->left = n + 1; /* the guard below: answers that come at once do not resume early */
    struct agent_run *run = t->run;
    int i = 0;
    const cJSON *r;
    cJSON_ArrayForEach(r, arg)
    {
        if (atomic_load(&run->ended)) {
            /* a branch ended the run (a limit): nothing else refers to the batch now */
            agent_batch_free(b);
            return;
        }
        const cJSON *nm = cJSON_GetObjectItemCaseSensitive(r, "name");
        struct agent_waiter w = {t, b, i++};
        if (!cJSON_IsString(nm) || strcmp(nm->valuestring, "batch") == 0) {
            agent_deliver(w, NULL, "bad request in ctx:all");
            continue;
        }
        dispatch_one(t, w, nm->valuestring, cJSON_GetObjectItemCaseSensitive(r, "arg"));
    }
    if (atomic_load(&run->ended)) {
        agent_batch_free(b);
    } else {
        agent_batch_dec(b);
    }
}

static void dispatch_one(struct agent_task *t, struct agent_waiter w, const char *name,
                         const cJSON *arg)
{
    struct agent_run *run = t->run;
    if (strcmp(name, "emit") == 0) {
        char *ev = arg ? cJSON_PrintUnformatted(arg) : NULL;
        if (ev && run->rt->ops.emit) {
            run->rt->ops.emit(run->rt->host, run->id, ev);
        }
        cJSON_free(ev);
        agent_deliver(w, "null", NULL);
    } else if (strcmp(name, "data.json") == 0) {
        call_data(run, w, arg);
    } else if (strcmp(name, "sleep") == 0) {
        call_sleep(run, w, arg);
    } else if (strcmp(name, "chat") == 0) {
        call_chat(t, w, arg);
    } else if (strcmp(name, "http.request") == 0) {
        call_http(t, w, arg);
    } else if (strcmp(name, "tool") == 0) {
        const cJSON *nm = cJSON_GetObjectItemCaseSensitive(arg, "name");
        const cJSON *av = cJSON_GetObjectItemCaseSensitive(arg, "args");
        if (!cJSON_IsString(nm)) {
            agent_deliver(w, NULL, "ctx:tool needs a tool name");
            return;
        }
        char *aj = av ? cJSON_PrintUnformatted(av) : NULL;
        agent_tool_start(run, AGENT_TASK_CHILD, -1, w, t->depth + 1, nm->valuestring,
                         aj ? aj : "{}");
        cJSON_free(aj);
    } else {
        char eb[128];
        snprintf(eb, sizeof(eb), "unknown host call '%s'", name);
        agent_deliver(w, NULL, eb);
    }
}

void agent_dispatch(struct agent_task *t, const char *name, const char *args_json)
{
    cJSON *args = cJSON_Parse(args_json ? args_json : "[]");
    const cJSON *arg = cJSON_GetArrayItem(args, 0);
    if (!args) {
        agent_ready_push(t, NULL, "cannot decode the call's arguments");
    } else if (strcmp(name, "batch") == 0) {
        call_batch(t, arg);
    } else {
        struct agent_waiter w = {t, NULL, -1};
        char *nm = wye_strdup(name); /* name is borrowed until the next resume */
        if (nm) {
            dispatch_one(t, w, nm, arg);
        } else {
            agent_ready_push(t, NULL, "out of memory");
        }
        wye_free(nm);
    }
    cJSON_Delete(args);
}
