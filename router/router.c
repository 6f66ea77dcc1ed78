/* The router: checks the model a request names, asks the policy where it goes (policy.c), and
 * hands it to a backend through the sink wrapper (rt_routed.c): the local engine (local.h) or
 * the remote upstream (upstream.c). A full local queue falls back to the remote at submit time;
 * an upstream failure before the first byte falls back to the local model in the wrapper.
 * Submit runs on the caller's thread (the lws thread) and only decides and queues; with a Lua
 * route hook configured, "auto" requests are decided on the router's hook thread instead. */
#include "router/router.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "common/alloc.h"
#include "common/clock.h"
#include "common/log.h"
#include "router/keys.h"
#include "router/local.h"
#include "router/rt_route_internal.h"
#include "router/upstream.h"

struct rt_router *rt_router_create(const struct conf_config *cfg)
{
    struct rt_router *rt = wye_calloc(1, sizeof(*rt));
    if (!rt) {
        return NULL;
    }
    rt->cfg = cfg;
    if (cfg->upstream.base_url) {
        rt->up = rt_upstream_create(&cfg->upstream);
        if (!rt->up) {
            wye_free(rt);
            return NULL;
        }
    }
    return rt;
}

void rt_router_set_local(struct rt_router *rt, struct rt_local *local)
{
    rt->local = local;
}

void rt_router_set_ledger(struct rt_router *rt, struct rt_ledger *ledger)
{
    rt->ledger = ledger;
}

void rt_router_set_keys(struct rt_router *rt, struct rt_keys *keys)
{
    rt->keys = keys;
}

void rt_router_set_clock(struct rt_router *rt, int64_t (*now_ns)(void *arg), void *arg)
{
    rt->now_ns = now_ns;
    rt->clock_arg = arg;
}

struct rt_policy *rt_router_policy(struct rt_router *rt)
{
    return rt->policy;
}

/* ---- the hook thread ----
 * The Lua route hook may run for up to router.hook_timeout_ms (10 s at most) per call, one call
 * at a time: on the lws thread that would stall every connection (ARCHITECTURE: no Lua
 * there). With a hook configured, rt_router_submit queues each "auto" request for this thread,
 * which decides and submits it; a refusal then ends the answer through its sink (finish
 * alone), as the async local refusals do. */

static enum wye_err route_now(struct rt_router *rt, struct wye_chat_req *req, struct wye_sink sink,
                              char *errbuf, size_t errlen);

struct hook_job {
    struct wye_qnode node;
    struct wye_chat_req *req;
    struct wye_sink sink;
};

#define HOOK_QUEUE_MAX 4096 /* auto requests waiting for the hook */

static bool hook_applies(const struct rt_router *rt, const struct wye_chat_req *req)
{
    /* started only with both routes present: the hook runs for "auto" requests alone */
    return rt->hook.started && (!req->model || strcmp(req->model, "auto") == 0);
}

/* Ends a request the hook thread could not route, as rt_router_submit's return would have. */
static void hook_refuse(struct wye_sink sink, enum wye_err err, const char *msg)
{
    struct wye_result res = {.err = err, .message = msg[0] ? msg : NULL, .finish_reason = "error"};
    sink.ops->finish(sink.ctx, &res);
}

static void hook_run(struct rt_router *rt, struct hook_job *job)
{
    char eb[512] = "";
    enum wye_err err;
    if (atomic_load(&rt->stopping)) {
        snprintf(eb, sizeof(eb), "the gateway is shutting down");
        wye_chat_req_destroy(job->req);
        err = WYE_ERR_CANCELED;
    } else if (job->sink.ops->cancelled(job->sink.ctx)) {
        snprintf(eb, sizeof(eb), "the request was cancelled");
        wye_chat_req_destroy(job->req);
        err = WYE_ERR_CANCELED;
    } else {
        err = route_now(rt, job->req, job->sink, eb, sizeof(eb)); /* consumes req */
    }
    if (err) {
        hook_refuse(job->sink, err, eb);
    }
    atomic_fetch_sub(&rt->hook_pending, 1);
    wye_free(job);
}

static void hook_node(void *arg, struct wye_qnode *n)
{
    hook_run(arg, WYE_CONTAINER_OF(n, struct hook_job, node));
}

/* The policy's view of the local admission queue: requests beyond what the sequences can take
 * at once (a request just submitted to a free sequence does not count). Atomic loads; the lws
 * thread, agent workers. */
static uint64_t local_waiting(void *arg)
{
    struct rt_router *rt = arg;
    struct rt_local_stats st;
    rt_local_stats(rt->local, &st);
    int n_seq = rt->cfg->engine.n_seq_max > 0 ? rt->cfg->engine.n_seq_max : 4;
    uint64_t busy = st.active + st.queued + st.preparing;
    return busy > (uint64_t)n_seq ? busy - (uint64_t)n_seq : 0;
}

enum wye_err rt_router_start(struct rt_router *rt)
{
    const struct conf_config *cfg = rt->cfg;
    struct rt_policy_opts o = {
        .local_name = rt->local ? rt_local_model_name(rt->local) : NULL,
        .has_remote = rt->up != NULL,
        .remote_name = cfg->upstream.model,
        .now_ns = rt->now_ns,
        .clock_arg = rt->clock_arg,
        .local_waiting = rt->local ? local_waiting : NULL,
        .local_arg = rt,
    };
    rt->model_label[RT_ROUTE_LOCAL] = o.local_name ? o.local_name : "none";
    rt->model_label[RT_ROUTE_REMOTE] = cfg->upstream.model ? cfg->upstream.model : "upstream";
    if (!rt->policy) {
        char eb[512] = "";
        enum wye_err err = rt_policy_create(cfg, &o, &rt->policy, eb, sizeof(eb));
        if (err) {
            WYE_ERROR("router: %s", eb[0] ? eb : wye_err_str(err));
            return err;
        }
    }
    if (rt_policy_has_hook(rt->policy) && rt->local && rt->up && !rt->hook.started) {
        char eb[128];
        enum wye_err err = wye_worker_start(&rt->hook, HOOK_QUEUE_MAX, "wye-route-hook", hook_node,
                                            rt, eb, sizeof(eb));
        if (err) {
            WYE_ERROR("router: cannot start the route hook's thread: %s", eb);
            return err;
        }
    }
    return rt->up ? rt_upstream_start(rt->up) : WYE_OK;
}

void rt_router_stop(struct rt_router *rt)
{
    if (!rt) {
        return;
    }
    atomic_store(&rt->stopping, true); /* no more fallbacks */
    /* the thread ends what is queued (stopping: CANCELED); later pushes get CANCELED */
    wye_worker_stop(&rt->hook);
    if (rt->up) {
        rt_upstream_stop(rt->up);
    }
}

void rt_router_destroy(struct rt_router *rt)
{
    if (!rt) {
        return;
    }
    rt_router_stop(rt);
    wye_worker_cleanup(&rt->hook);
    rt_upstream_destroy(rt->up);
    rt_policy_destroy(rt->policy);
    wye_free(rt);
}

static bool remote_budget_ok(struct rt_key *key)
{
    return !key || (rt_keys_route_allowed(key, "remote") &&
                    rt_keys_remote_allowed(key, wye_wall_ms()) == RT_KEY_OK);
}

bool rt_router_local_to_remote(struct rt_router *rt, struct rt_key *key, bool is_auto,
                               enum wye_err err)
{
    return rt->up && !atomic_load(&rt->stopping) && remote_budget_ok(key) &&
           (err == WYE_ERR_AGAIN || (err == WYE_ERR_TOOBIG && is_auto));
}

/* Decides where req goes and hands it to that backend: rt_router_submit's work after its
 * checks, on the caller's thread or the hook thread. */
static enum wye_err route_now(struct rt_router *rt, struct wye_chat_req *req, struct wye_sink sink,
                              char *errbuf, size_t errlen)
{
    struct rt_key *key = rt->keys && req->key_name ? rt_keys_find(rt->keys, req->key_name) : NULL;
    struct rt_decision d;
    enum wye_err err = rt_policy_decide(rt->policy, req, key, &d, errbuf, errlen);
    if (err) {
        wye_chat_req_destroy(req);
        return err;
    }
    struct rt_routed *r = rt_routed_create(rt, req, key, &d, sink);
    if (!r) {
        if (d.probe) {
            rt_policy_probe_release(rt->policy);
        }
        snprintf(errbuf, errlen, "out of memory");
        wye_chat_req_destroy(req);
        return WYE_ERR_NOMEM;
    }
    if (d.route == RT_ROUTE_LOCAL) {
        /* tokenizing is left to the local backend's own thread: this may be the lws thread;
         * a prompt that does not fit comes back through rt_routed_local_refused */
        err = rt_local_submit_async(rt->local, req, rt_routed_sink(r), rt_routed_local_refused, r,
                                    errbuf, errlen);
        if (!err) {
            return WYE_OK;
        }
        if (!rt_router_local_to_remote(rt, key, d.is_auto, err)) {
            rt_routed_discard(r);
            wye_chat_req_destroy(req);
            /* a full admission queue is a limit the client hit (429, errbuf names
             * router.queue_max), not an outage */
            return err == WYE_ERR_AGAIN ? WYE_ERR_LIMIT : err;
        }
        rt_routed_go_remote(r, err, errbuf);
    }
    /* the wrapper keeps the request so that it can fall back to the local model */
    rt_routed_keep_req(r, req);
    err = rt_upstream_submit_borrowed(rt->up, req, rt_routed_sink(r), errbuf, errlen);
    if (err) {
        if (d.probe) {
            rt_policy_probe_release(rt->policy);
        }
        rt_routed_discard(r);
        wye_chat_req_destroy(req);
    }
    return err;
}

enum wye_err rt_router_submit(struct rt_router *rt, struct wye_chat_req *req, struct wye_sink sink,
                              char *errbuf, size_t errlen)
{
    if (!rt->policy) {
        snprintf(errbuf, errlen, "the router is not started");
        wye_chat_req_destroy(req);
        return WYE_ERR_AGAIN;
    }
    if (atomic_load(&rt->stopping)) {
        snprintf(errbuf, errlen, "the gateway is shutting down");
        wye_chat_req_destroy(req);
        return WYE_ERR_CANCELED;
    }
    if (!hook_applies(rt, req)) {
        return route_now(rt, req, sink, errbuf, errlen);
    }
    struct hook_job *job = wye_calloc(1, sizeof(*job));
    if (!job) {
        snprintf(errbuf, errlen, "out of memory");
        wye_chat_req_destroy(req);
        return WYE_ERR_NOMEM;
    }
    job->req = req;
    job->sink = sink;
    atomic_fetch_add(&rt->hook_pending, 1);
    enum wye_err err = wye_queue_push(&rt->hook.q, &job->node, NULL);
    if (err) {
        atomic_fetch_sub(&rt->hook_pending, 1);
        wye_free(job);
        wye_chat_req_destroy(req);
        if (err == WYE_ERR_AGAIN) {
            snprintf(errbuf, errlen, "%d requests are waiting for the route hook", HOOK_QUEUE_MAX);
        } else {
            snprintf(errbuf, errlen, "the gateway is shutting down");
        }
    }
    return err;
}

static enum wye_err model_entry(struct wye_buf *out, const char *id, const char *owner, bool first)
{
    enum wye_err err = wye_buf_append_str(out, first ? "{\"id\":" : ",{\"id\":");
    if (!err) {
        err = wye_buf_append_json_str(out, id, strlen(id));
    }
    if (!err) {
        err =
            wye_buf_printf(out, ",\"object\":\"model\",\"created\":0,\"owned_by\":\"%s\"}", owner);
    }
    return err;
}

enum wye_err rt_router_models_json(struct rt_router *rt, struct wye_buf *out)
{
    size_t len0 = out->len;
    enum wye_err err = wye_buf_append_str(out, "[");
    if (!err && (rt->up || rt->local)) {
        err = model_entry(out, "auto", "wye", true);
        if (!err && rt->local) {
            err = model_entry(out, rt_local_model_name(rt->local), "local", false);
        }
        if (!err && rt->up && rt->cfg->upstream.model) {
            err = model_entry(out, rt->cfg->upstream.model, "upstream", false);
        }
    }
    if (!err) {
        err = wye_buf_append_str(out, "]");
    }
    if (err) {
        out->len = len0; /* leave out as it was */
        if (out->data) {
            out->data[len0] = '\0';
        }
    }
    return err;
}

void rt_router_stats(struct rt_router *rt, struct rt_stats *out)
{
    memset(out, 0, sizeof(*out));
    if (rt->up) {
        rt_upstream_stats(rt->up, out);
    }
}

void rt_router_route_stats(struct rt_router *rt, struct rt_route_stats *out)
{
    memset(out, 0, sizeof(*out));
    for (int i = 0; i < RT_ROUTE__COUNT; i++) {
        out->requests[i] = atomic_load(&rt->n_requests[i]);
    }
    out->fallbacks_to_local = atomic_load(&rt->fallbacks_to_local);
    out->fallbacks_to_remote = atomic_load(&rt->fallbacks_to_remote);
    out->ledger_dropped = atomic_load(&rt->ledger_dropped);
    out->ledger_write_errors = atomic_load(&rt->ledger_write_errors);
}

enum wye_err rt_router_metrics(struct rt_router *rt, struct wye_buf *out)
{
    static const char *const metric[2] = {"wye_cost_usd_total", "wye_saving_usd_total"};
    static const char *const help[2] = {
        "Cost of answered requests in USD (remote prices; local_per_1m for local).",
        "Counterfactual remote cost minus cost, in USD."};
    enum wye_err err = WYE_OK;
    for (int k = 0; !err && k < 2; k++) {
        err =
            wye_buf_printf(out, "# HELP %s %s\n# TYPE %s counter\n", metric[k], help[k], metric[k]);
        for (int i = 0; !err && i < RT_ROUTE__COUNT; i++) {
            int64_t v = atomic_load(k ? &rt->saving_nusd[i] : &rt->cost_nusd[i]);
            err = wye_buf_printf(out, "%s{route=\"%s\",model=\"%s\"} %.9f\n", metric[k],
                                 rt_route_name(i), rt->model_label[i] ? rt->model_label[i] : "none",
                                 (double)v / RT_NANO_USD);
        }
    }
    if (!err) {
        err = wye_buf_append_str(out, "# HELP wye_route_tokens_total Tokens by route.\n"
                                      "# TYPE wye_route_tokens_total counter\n");
    }
    for (int i = 0; !err && i < RT_ROUTE__COUNT; i++) {
        const char *m = rt->model_label[i] ? rt->model_label[i] : "none";
        err =
            wye_buf_printf(out,
                           "wye_route_tokens_total{route=\"%s\",model=\"%s\",kind=\"prompt\"} "
                           "%" PRIu64 "\n"
                           "wye_route_tokens_total{route=\"%s\",model=\"%s\",kind=\"completion\"} "
                           "%" PRIu64 "\n",
                           rt_route_name(i), m, (uint64_t)atomic_load(&rt->tokens_prompt[i]),
                           rt_route_name(i), m, (uint64_t)atomic_load(&rt->tokens_completion[i]));
    }
    if (!err) {
        err =
            wye_buf_append_str(out, "# HELP wye_route_requests_total Finished requests by route.\n"
                                    "# TYPE wye_route_requests_total counter\n");
    }
    for (int i = 0; !err && i < RT_ROUTE__COUNT; i++) {
        err = wye_buf_printf(out, "wye_route_requests_total{route=\"%s\"} %" PRIu64 "\n",
                             rt_route_name(i), (uint64_t)atomic_load(&rt->n_requests[i]));
    }
    if (!err) {
        err = wye_buf_printf(
            out,
            "# HELP wye_fallbacks_total Requests moved to the other backend before the first "
            "byte.\n"
            "# TYPE wye_fallbacks_total counter\n"
            "wye_fallbacks_total{from=\"remote\",to=\"local\"} %" PRIu64 "\n"
            "wye_fallbacks_total{from=\"local\",to=\"remote\"} %" PRIu64 "\n"
            "# HELP wye_ledger_dropped_total Ledger records dropped (queue full or closing).\n"
            "# TYPE wye_ledger_dropped_total counter\n"
            "wye_ledger_dropped_total %" PRIu64 "\n"
            "# HELP wye_ledger_write_errors_total Ledger records the writer failed to write.\n"
            "# TYPE wye_ledger_write_errors_total counter\n"
            "wye_ledger_write_errors_total %" PRIu64 "\n",
            (uint64_t)atomic_load(&rt->fallbacks_to_local),
            (uint64_t)atomic_load(&rt->fallbacks_to_remote),
            (uint64_t)atomic_load(&rt->ledger_dropped),
            (uint64_t)atomic_load(&rt->ledger_write_errors));
    }
    if (!err && rt->local) {
        struct rt_local_stats st;
        rt_local_stats(rt->local, &st);
        err = wye_buf_printf(out,
                             "# HELP wye_local_requests Requests in the local backend now: being "
                             "tokenized, waiting for a sequence, decoding.\n"
                             "# TYPE wye_local_requests gauge\n"
                             "wye_local_requests{state=\"preparing\"} %" PRIu64 "\n"
                             "wye_local_requests{state=\"queued\"} %" PRIu64 "\n"
                             "wye_local_requests{state=\"running\"} %" PRIu64 "\n",
                             st.preparing, st.queued, st.active);
    }
    if (!err && rt->hook.started) {
        err = wye_buf_printf(out,
                             "# HELP wye_router_hook_pending Auto requests waiting for the Lua "
                             "route hook's thread or being decided there.\n"
                             "# TYPE wye_router_hook_pending gauge\n"
                             "wye_router_hook_pending %" PRIu64 "\n",
                             (uint64_t)atomic_load(&rt->hook_pending));
    }
    if (!err && rt->policy) {
        err = wye_buf_printf(out,
                             "# HELP wye_breaker_state Remote circuit breaker: 0 closed, 1 open, "
                             "2 half-open.\n# TYPE wye_breaker_state gauge\nwye_breaker_state %d\n"
                             "# HELP wye_router_hook_errors_total Lua route hook failures.\n"
                             "# TYPE wye_router_hook_errors_total counter\n"
                             "wye_router_hook_errors_total %" PRIu64 "\n"
                             "# HELP wye_backend_ewma_latency_seconds EWMA of request latency.\n"
                             "# TYPE wye_backend_ewma_latency_seconds gauge\n",
                             (int)rt_policy_breaker_state(rt->policy),
                             rt_policy_hook_errors(rt->policy));
        for (int i = 0; !err && i < RT_ROUTE__COUNT; i++) {
            double lat, ttft;
            rt_policy_ewma(rt->policy, i, &lat, &ttft);
            if (lat >= 0) {
                err = wye_buf_printf(out, "wye_backend_ewma_latency_seconds{route=\"%s\"} %.6f\n",
                                     rt_route_name(i), lat / 1e3);
            }
        }
        if (!err) {
            err = wye_buf_append_str(out,
                                     "# HELP wye_backend_ewma_ttft_seconds EWMA of time to "
                                     "first token.\n# TYPE wye_backend_ewma_ttft_seconds gauge\n");
        }
        for (int i = 0; !err && i < RT_ROUTE__COUNT; i++) {
            double lat, ttft;
            rt_policy_ewma(rt->policy, i, &lat, &ttft);
            if (ttft >= 0) {
                err = wye_buf_printf(out, "wye_backend_ewma_ttft_seconds{route=\"%s\"} %.6f\n",
                                     rt_route_name(i), ttft / 1e3);
            }
        }
    }
    return err;
}
