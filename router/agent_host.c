/* The agents' host ops over the router. chat: builds an OpenAI body (messages with tool_calls
 * and tool results, tools, response_format, max_tokens) into a wye_chat_req for the run's API
 * key (key_name: its rate limit, routes, budgets and ledger attribution apply) and submits it
 * with rt_router_submit; a sink accumulates text, tool_calls deltas and usage (streaming each text
 * delta to the run as it comes) and answers the op at finish, priced by rt_price_answer
 * (router/price.h) like the router's ledger. http: a plain request on the upstream client's
 * thread (rt_upstream_http, the router's libcurl multi handle), response capped, aborted when
 * the run ends.
 * Threads: chat and http are called on the run's agent worker; the chat sink runs on the router's
 * threads, the http answer on the upstream thread. */
#include <stdio.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "common/alloc.h"
#include "common/buf.h"
#include "common/clock.h"
#include "common/crypto.h"
#include "common/log.h"
#include "router/agent_host.h"
#include "router/keys.h"
#include "router/price.h"
#include "router/router.h"
#include "router/rt_route_internal.h"
#include "router/upstream.h"

#define AH_TEXT_MAX (1u << 20)

struct rt_agent_host {
    struct rt_router *rt;
    const struct conf_config *cfg;
    rt_agent_event_fn on_event;
    void *event_ud;
    struct rt_upstream *up;     /* where wye.http.request runs: the router's, or own_up */
    struct rt_upstream *own_up; /* without a remote upstream: an HTTP-only client */
};

/* ---- chat ---- */

struct ah_call {
    struct rt_agent_host *h;
    struct agent_op *op;
    struct wye_buf text, tools;
    struct wye_usage usage;
    char route[16];
    char model[128];
};

static void ah_start(void *ctx, const struct wye_start *info)
{
    struct ah_call *c = ctx;
    snprintf(c->route, sizeof(c->route), "%s", info->route ? info->route : "");
    snprintf(c->model, sizeof(c->model), "%s", info->model ? info->model : "");
}

static enum wye_err ah_emit(void *ctx, const struct wye_event *ev)
{
    struct ah_call *c = ctx;
    if (agent_op_cancelled(c->op)) {
        return WYE_ERR_CANCELED;
    }
    if (ev->type == WYE_EV_DELTA) {
        (void)wye_buf_append(&c->text, ev->data, ev->len);
        agent_op_delta(c->op, ev->data, ev->len); /* streamed to the client as it comes */
    } else if (ev->type == WYE_EV_TOOL_DELTA) {
        if (wye_buf_append(&c->tools, ev->data, ev->len) == WYE_OK) {
            (void)wye_buf_append(&c->tools, "\n", 1);
        }
    } else if (ev->type == WYE_EV_USAGE) {
        c->usage = ev->usage;
    }
    return WYE_OK;
}

static void ah_finish(void *ctx, const struct wye_result *res)
{
    struct ah_call *c = ctx;
    struct wye_usage u =
        res->usage.prompt_tokens || res->usage.completion_tokens ? res->usage : c->usage;
    bool local = strcmp(c->route, "local") == 0;
    /* priced exactly as the router prices it for metrics and the ledger */
    struct rt_price pr =
        rt_price_answer(c->h->cfg, !local, c->model, u.prompt_tokens, u.completion_tokens);
    struct agent_chat_result r = {
        .err = res->err,
        .message = res->message,
        .text = c->text.data ? c->text.data : "",
        .tool_calls = c->tools.len ? c->tools.data : NULL,
        .format = AGENT_TOOLFMT_OPENAI, /* both backends answer tools as OpenAI deltas */
        .route = c->route,
        .model = c->model,
        .prompt_tokens = u.prompt_tokens,
        .completion_tokens = u.completion_tokens,
        .cost_usd = pr.cost_usd,
        .saving_usd = pr.saving_usd,
    };
    agent_op_chat_done(c->op, &r);
    wye_buf_cleanup(&c->text);
    wye_buf_cleanup(&c->tools);
    wye_free(c);
}

static bool ah_cancelled(void *ctx)
{
    struct ah_call *c = ctx;
    return agent_op_cancelled(c->op);
}

static void ah_set_wakeup(void *ctx, void (*wake)(void *arg), void *arg)
{
    /* never answers AGAIN, so credit never has to come back */
    (void)ctx;
    (void)wake;
    (void)arg;
}

static const struct wye_sink_ops ah_sink_ops = {
    .start = ah_start,
    .emit = ah_emit,
    .finish = ah_finish,
    .cancelled = ah_cancelled,
    .set_wakeup = ah_set_wakeup,
};

static enum wye_err ah_chat(void *ctx, const struct agent_chat_call *call, struct agent_op *op,
                            char *errbuf, size_t errlen)
{
    struct rt_agent_host *h = ctx;
    /* Tools go in OpenAI form to either backend: the local one renders them in its model's
     * own format, constrains the calls to the tools' schemas and answers OpenAI tool-call
     * deltas (router/local.c), like a remote one. */
    cJSON *body = cJSON_CreateObject();
    cJSON *msgs = cJSON_Parse(call->messages_json);
    cJSON *tools = call->tools_json ? cJSON_Parse(call->tools_json) : NULL;
    cJSON *rf = call->response_format_json ? cJSON_Parse(call->response_format_json) : NULL;
    cJSON *so = cJSON_CreateObject();
    if (!body || !msgs || !so || (call->tools_json && !tools) ||
        (call->response_format_json && !rf)) {
        cJSON_Delete(body);
        cJSON_Delete(msgs);
        cJSON_Delete(tools);
        cJSON_Delete(rf);
        cJSON_Delete(so);
        snprintf(errbuf, errlen, "out of memory (or bad messages)");
        return WYE_ERR_NOMEM;
    }
    /* "local" / "remote" name the configured models; without one they mean "auto" */
    const char *model = call->model ? call->model : "auto";
    if (strcmp(model, "remote") == 0) {
        model =
            h->cfg->upstream.base_url && h->cfg->upstream.model ? h->cfg->upstream.model : "auto";
    } else if (strcmp(model, "local") == 0) {
        model = h->cfg->engine.model_path && h->cfg->engine.model_name ? h->cfg->engine.model_name
                                                                       : "auto";
    }
    cJSON_AddStringToObject(body, "model", model);
    cJSON_AddItemToObject(body, "messages", msgs);
    if (tools) {
        cJSON_AddItemToObject(body, "tools", tools);
    }
    if (rf) {
        /* json_schema answered locally is decoded under the schema (router/local.c) */
        cJSON_AddItemToObject(body, "response_format", rf);
    }
    if (call->max_tokens > 0) {
        cJSON_AddNumberToObject(body, "max_tokens", call->max_tokens);
    }
    cJSON_AddTrueToObject(body, "stream");
    cJSON_AddTrueToObject(so, "include_usage");
    cJSON_AddItemToObject(body, "stream_options", so);
    struct wye_chat_limits lim = {
        .depth_max = h->cfg->limits.json_depth_max > 0 ? h->cfg->limits.json_depth_max : 64,
        .n_msgs_max = h->cfg->limits.n_msgs_max > 0 ? h->cfg->limits.n_msgs_max : 1000,
        .max_tokens_max = 1 << 20,
    };
    struct wye_chat_req *req = NULL;
    enum wye_err err = wye_chat_req_from_json(body, &lim, &req, errbuf, errlen);
    if (err) {
        return err;
    }
    (void)wye_reqid_new(req->id);
    req->t_received_ns = wye_now_ns();
    req->agent_run_id = call->run_id;
    req->agent = wye_strdup(call->agent ? call->agent : "");
    /* the run's API key: its routes and budgets apply and the ledger names it */
    req->key_name = call->key_name ? wye_strdup(call->key_name) : NULL;
    if (!req->agent || (call->key_name && !req->key_name)) {
        wye_chat_req_destroy(req);
        snprintf(errbuf, errlen, "out of memory");
        return WYE_ERR_NOMEM;
    }
    /* each model call of a keyed run takes a request from the key's rate limit, like a chat */
    struct rt_key *key =
        h->rt->keys && req->key_name ? rt_keys_find(h->rt->keys, req->key_name) : NULL;
    int64_t retry_ms = 0;
    if (key && rt_keys_rate_take(key, wye_now_ns(), &retry_ms) != WYE_OK) {
        snprintf(errbuf, errlen, "rate limit of %s exceeded; retry after %lld s", req->key_name,
                 (long long)((retry_ms + 999) / 1000));
        wye_chat_req_destroy(req);
        return WYE_ERR_LIMIT;
    }
    wye_log(WYE_LOG_INFO, req->id, "agents: %s run %llu calls model %s", call->agent,
            (unsigned long long)call->run_id, call->model ? call->model : "auto");
    struct ah_call *c = wye_calloc(1, sizeof(*c));
    if (!c) {
        wye_chat_req_destroy(req);
        snprintf(errbuf, errlen, "out of memory");
        return WYE_ERR_NOMEM;
    }
    c->h = h;
    c->op = op;
    wye_buf_init(&c->text, AH_TEXT_MAX);
    wye_buf_init(&c->tools, AH_TEXT_MAX);
    struct wye_sink sink = {&ah_sink_ops, c};
    err = rt_router_submit(h->rt, req, sink, errbuf, errlen);
    if (err) {
        wye_free(c);
    }
    return err;
}

/* ---- http: a plain request on the upstream thread ---- */

static void ah_http_done(void *arg, const struct rt_http_result *res)
{
    struct agent_http_result r = {
        .err = res->err,
        .message = res->message,
        .status = res->status,
        .body = res->body,
        .body_len = res->body_len,
    };
    agent_op_http_done(arg, &r);
}

static bool ah_http_cancelled(void *arg)
{
    return agent_op_cancelled(arg);
}

static const struct rt_http_ops ah_http_ops = {
    .done = ah_http_done,
    .cancelled = ah_http_cancelled,
};

static enum wye_err ah_http(void *ctx, const struct agent_http_req *req, struct agent_op *op,
                            char *errbuf, size_t errlen)
{
    struct rt_agent_host *h = ctx;
    struct rt_http_req r = {
        .method = req->method,
        .url = req->url,
        .headers = req->headers,
        .n_headers = req->n_headers,
        .body = req->body,
        .body_len = req->body_len,
        .timeout_ms = req->timeout_ms,
        .max_bytes = req->max_bytes,
    };
    return rt_upstream_http(h->up, &r, &ah_http_ops, op, errbuf, errlen);
}

static void ah_emit_event(void *ctx, uint64_t run_id, const char *event_json)
{
    struct rt_agent_host *h = ctx;
    if (h->on_event) {
        h->on_event(h->event_ud, run_id, event_json);
    }
}

static const struct agent_host_ops ah_ops = {
    .chat = ah_chat,
    .http = ah_http,
    .emit = ah_emit_event,
};

void rt_agent_opts_from_conf(const struct conf_config *cfg, struct agent_rt_opts *o,
                             struct agent_allow *allow)
{
    if (cfg->agents.n_workers > 0) {
        o->n_workers = cfg->agents.n_workers;
    }
    size_t n = cfg->agents.n_allow < CONF_ALLOW_MAX ? cfg->agents.n_allow : CONF_ALLOW_MAX;
    for (size_t i = 0; i < n; i++) {
        allow[i] = (struct agent_allow){cfg->agents.allow[i].name, cfg->agents.allow[i].hosts};
    }
    o->allow = n ? allow : NULL;
    o->n_allow = n;
}

const struct agent_host_ops *rt_agent_host_ops(void)
{
    return &ah_ops;
}

void rt_agent_host_set_events(struct rt_agent_host *h, rt_agent_event_fn fn, void *ud)
{
    h->on_event = fn;
    h->event_ud = ud;
}

struct rt_agent_host *rt_agent_host_create(struct rt_router *rt, const struct conf_config *cfg)
{
    struct rt_agent_host *h = wye_calloc(1, sizeof(*h));
    if (!h) {
        WYE_ERROR("agents: cannot create the agent host: out of memory");
        return NULL;
    }
    h->rt = rt;
    h->cfg = cfg;
    /* HTTP runs on the router's upstream thread; without a remote upstream, on a client of
     * our own that only runs plain requests (so there is one curl thread either way) */
    h->up = rt->up;
    if (!h->up) {
        h->own_up = rt_upstream_create(&cfg->upstream);
        if (!h->own_up || rt_upstream_start(h->own_up) != WYE_OK) {
            WYE_ERROR("agents: cannot start the HTTP client for wye.http.request");
            rt_upstream_destroy(h->own_up);
            wye_free(h);
            return NULL;
        }
        h->up = h->own_up;
    }
    return h;
}

void rt_agent_host_destroy(struct rt_agent_host *h)
{
    if (!h) {
        return;
    }
    /* requests still running on the router's upstream answer CANCELED when it stops */
    rt_upstream_destroy(h->own_up);
    wye_free(h);
}
