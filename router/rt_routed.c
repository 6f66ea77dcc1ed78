/* The sink wrapper between a backend and the client's sink. It tells the client the router's
 * decision in start() (route, model, score, reasons), counts deltas and the time to the first
 * one, and at the end: falls back from the remote to the local model when the upstream failed
 * before anything reached the client; prices the answer (remote prices, local_per_1m, and
 * prices.default_remote for what a local answer would have cost remotely); charges the key's
 * remote spend; feeds the breaker and EWMAs; appends the ledger record and passes finish to
 * the client only once the ledger reports the record written (so an answer the client saw
 * complete is always in the ledger). Runs on the producers' threads (upstream, engine worker,
 * and the local backend's preparation thread for its refusals); the final finish runs there too
 * when the ledger writes the record inline (the usual case), else on the ledger writer thread. */
#include <math.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "common/alloc.h"
#include "common/clock.h"
#include "common/log.h"
#include "router/keys.h"
#include "router/ledger.h"
#include "router/local.h"
#include "router/price.h"
#include "router/rt_route_internal.h"
#include "router/upstream.h"

#define MSG_MAX 320
#define MODEL_MAX 128

struct rt_routed {
    struct rt_router *rt;
    struct wye_sink client;
    struct rt_key *key;
    struct rt_decision d;
    /* producer-thread state: one backend at a time calls into the wrapper */
    struct wye_chat_req *req; /* kept for a remote attempt; NULL once local owns it */
    enum rt_route route;      /* the backend answering now */
    bool started;
    bool reported; /* the remote failure already went to the breaker (fallback) */
    /* the remote failure behind a fallback to the local model, answered if that is refused */
    enum wye_err fb_err;
    int fb_status;
    char fb_msg[MSG_MAX];
    char req_id[WYE_REQID_LEN + 1];
    char key_name[80];
    bool has_key_name;
    bool stream;      /* the client asked for a streamed answer */
    char agent[80];   /* the agent or workflow making the call, "" if none */
    char run_id[24];  /* its run id in decimal, "" if none */
    char model[MODEL_MAX];
    int64_t t0_ns, t_first_ns;
    size_t prompt_chars;
    int64_t n_deltas;
    bool has_usage;
    struct wye_usage usage;
    /* the finish held back until the ledger record is written */
    struct wye_result res;
    char msg[MSG_MAX];
    char finish_reason[24];
};

/* What snprintf(dst, cap, "%s", s) would store (cut to cap - 1 bytes), without the formatting
 * machinery: it runs several times per request. */
static void copy_str(char *dst, size_t cap, const char *s)
{
    size_t n = s ? strnlen(s, cap - 1) : 0;
    memcpy(dst, s ? s : "", n);
    dst[n] = '\0';
}

struct rt_routed *rt_routed_create(struct rt_router *rt, const struct wye_chat_req *req,
                                   struct rt_key *key, const struct rt_decision *d,
                                   struct wye_sink client)
{
    struct rt_routed *r = wye_calloc(1, sizeof(*r));
    if (!r) {
        return NULL;
    }
    r->rt = rt;
    r->client = client;
    r->key = key;
    r->d = *d;
    r->route = d->route;
    copy_str(r->req_id, sizeof(r->req_id), req->id);
    r->has_key_name = req->key_name != NULL;
    r->stream = req->stream;
    copy_str(r->key_name, sizeof(r->key_name), req->key_name);
    copy_str(r->agent, sizeof(r->agent), req->agent);
    if (req->agent_run_id) {
        snprintf(r->run_id, sizeof(r->run_id), "%" PRIu64, req->agent_run_id);
    }
    r->t0_ns = req->t_received_ns > 0 ? req->t_received_ns : wye_now_ns();
    for (size_t i = 0; i < req->n_msgs; i++) {
        r->prompt_chars += strlen(req->msgs[i].content);
    }
    return r;
}

void rt_routed_discard(struct rt_routed *r)
{
    wye_free(r);
}

void rt_routed_keep_req(struct rt_routed *r, struct wye_chat_req *req)
{
    r->req = req;
}

/* The wrapper now answers on route (after a fallback, with its reason). */
static void set_route(struct rt_routed *r, enum rt_route route, const char *fallback_detail)
{
    r->route = route;
    if (fallback_detail) {
        rt_decision_add_reason(&r->d, "fallback", fallback_detail);
    }
}

void rt_routed_go_remote(struct rt_routed *r, enum wye_err err, const char *why)
{
    set_route(r, RT_ROUTE_REMOTE,
              err == WYE_ERR_AGAIN ? "local queue full" : "local context too small");
    atomic_fetch_add(&r->rt->fallbacks_to_remote, 1);
    wye_log(WYE_LOG_INFO, r->req_id, "router: %s; answering remotely", why);
}

/* ---- the sink the backend sees ---- */

static void rs_start(void *ctx, const struct wye_start *info)
{
    struct rt_routed *r = ctx;
    r->started = true;
    copy_str(r->model, sizeof(r->model), info->model);
    struct wye_start st = {
        .route = rt_route_name(r->route),
        .model = r->model,
        .score = r->d.score,
        .reasons = r->d.reasons[0] ? r->d.reasons : NULL,
    };
    r->client.ops->start(r->client.ctx, &st);
}

static enum wye_err rs_emit(void *ctx, const struct wye_event *ev)
{
    struct rt_routed *r = ctx;
    if (ev->type == WYE_EV_USAGE) {
        r->has_usage = true;
        r->usage = ev->usage;
    } else {
        if (r->n_deltas++ == 0) {
            r->t_first_ns = wye_now_ns();
        }
    }
    return r->client.ops->emit(r->client.ctx, ev);
}

static bool rs_cancelled(void *ctx)
{
    struct rt_routed *r = ctx;
    return r->client.ops->cancelled(r->client.ctx);
}

static void rs_set_wakeup(void *ctx, void (*wake)(void *arg), void *arg)
{
    struct rt_routed *r = ctx;
    r->client.ops->set_wakeup(r->client.ctx, wake, arg);
}

static void rs_finish(void *ctx, const struct wye_result *res);
static void fallback_refused(void *arg, struct wye_chat_req *req, enum wye_err err,
                             const char *msg);

static const struct wye_sink_ops routed_ops = {
    .start = rs_start,
    .emit = rs_emit,
    .finish = rs_finish,
    .cancelled = rs_cancelled,
    .set_wakeup = rs_set_wakeup,
};

struct wye_sink rt_routed_sink(struct rt_routed *r)
{
    struct wye_sink s = {&routed_ops, r};
    return s;
}

/* ---- the end ---- */

static void deliver(struct rt_routed *r)
{
    struct wye_sink c = r->client;
    struct wye_result res = r->res;
    char msg[MSG_MAX], reason[24];
    memcpy(msg, r->msg, sizeof(msg));
    memcpy(reason, r->finish_reason, sizeof(reason));
    res.message = msg[0] ? msg : NULL;
    res.finish_reason = reason;
    wye_free(r);
    c.ops->finish(c.ctx, &res);
}

static void on_ledger_done(void *arg, enum wye_err status)
{
    struct rt_routed *r = arg;
    if (status != WYE_OK) {
        atomic_fetch_add(&r->rt->ledger_write_errors, 1);
        wye_log(WYE_LOG_ERROR, r->req_id, "ledger: the record could not be written: %s",
                wye_err_str(status));
    }
    deliver(r);
}

/* Does a failure count against the remote breaker? Client-side problems do not. */
static bool remote_failed(const struct wye_result *res)
{
    if (!res->err || res->err == WYE_ERR_CANCELED) {
        return false;
    }
    int s = res->http_status;
    return !(s >= 400 && s < 500 && s != 408 && s != 429);
}

static double price(const struct conf_price *p, int64_t in, int64_t out)
{
    return p ? ((double)in * p->input_per_1m + (double)out * p->output_per_1m) / 1e6 : 0.0;
}

struct rt_price rt_price_answer(const struct conf_config *cfg, bool remote, const char *model,
                                int64_t prompt_tokens, int64_t completion_tokens)
{
    struct rt_price p;
    if (remote) {
        p.cost_usd = price(conf_price_for(cfg, model && model[0] ? model : cfg->upstream.model),
                           prompt_tokens, completion_tokens);
        p.counterfactual_usd = p.cost_usd;
    } else {
        p.cost_usd = cfg->prices.local_per_1m * (double)(prompt_tokens + completion_tokens) / 1e6;
        p.counterfactual_usd = price(&cfg->prices.default_remote, prompt_tokens, completion_tokens);
    }
    p.saving_usd = p.counterfactual_usd - p.cost_usd;
    return p;
}

static int64_t nusd(double usd)
{
    return isfinite(usd) ? (int64_t)llround(usd * RT_NANO_USD) : 0;
}

static void conclude(struct rt_routed *r, const struct wye_result *res)
{
    struct rt_router *rt = r->rt;
    const struct conf_config *cfg = rt->cfg;
    int64_t now = wye_now_ns();
    double latency_ms = (double)(now - r->t0_ns) / 1e6;
    double ttft_ms = r->t_first_ns ? (double)(r->t_first_ns - r->t0_ns) / 1e6 : -1;

    struct wye_usage u = res->usage;
    if (u.prompt_tokens == 0 && u.completion_tokens == 0 && r->has_usage) {
        u = r->usage;
    }
    if (u.prompt_tokens == 0 && u.completion_tokens == 0 && r->started) {
        /* a stream cut before any usage: estimated, never $0 */
        u.prompt_tokens = (int64_t)((r->prompt_chars + 3) / 4);
        u.completion_tokens = r->n_deltas;
        u.estimated = true;
    }
    struct rt_price pr = rt_price_answer(cfg, r->route == RT_ROUTE_REMOTE, r->model,
                                         u.prompt_tokens, u.completion_tokens);
    double cost = pr.cost_usd, cf = pr.counterfactual_usd, saving = pr.saving_usd;
    int64_t wall = wye_wall_ms();
    if (r->route == RT_ROUTE_REMOTE && r->key && cost > 0) {
        rt_keys_charge(r->key, cost, wall);
    }
    if (rt->policy && !r->reported) {
        if (res->err == WYE_ERR_CANCELED) {
            if (r->d.probe && r->route == RT_ROUTE_REMOTE) {
                rt_policy_probe_release(rt->policy);
            }
        } else {
            bool ok = r->route == RT_ROUTE_LOCAL ? !res->err : !remote_failed(res);
            /* a non-streamed request goes upstream non-streamed: its "first token" arrives
             * with the whole answer and says nothing about the remote's time to first token */
            bool ttft_known = r->stream || r->route == RT_ROUTE_LOCAL;
            rt_policy_report(rt->policy, r->route, ok, r->d.probe && r->route == RT_ROUTE_REMOTE,
                             latency_ms, ttft_known ? ttft_ms : -1);
        }
    }
    atomic_fetch_add(&rt->n_requests[r->route], 1);
    atomic_fetch_add(&rt->tokens_prompt[r->route],
                     (uint64_t)(u.prompt_tokens > 0 ? u.prompt_tokens : 0));
    atomic_fetch_add(&rt->tokens_completion[r->route],
                     (uint64_t)(u.completion_tokens > 0 ? u.completion_tokens : 0));
    atomic_fetch_add(&rt->cost_nusd[r->route], nusd(cost));
    atomic_fetch_add(&rt->saving_nusd[r->route], nusd(saving));

    r->res = *res;
    r->res.usage = u;
    copy_str(r->msg, sizeof(r->msg), res->err ? res->message : NULL);
    copy_str(r->finish_reason, sizeof(r->finish_reason),
             res->finish_reason ? res->finish_reason : (res->err ? "error" : "stop"));
    if (r->req) {
        wye_chat_req_destroy(r->req);
        r->req = NULL;
    }
    if (!r->model[0]) {
        copy_str(r->model, sizeof(r->model), rt->model_label[r->route]);
    }
    if (!rt->ledger) {
        deliver(r);
        return;
    }
    const char *status = !res->err ? "ok" : res->err == WYE_ERR_CANCELED ? "cancelled" : "error";
    struct rt_ledger_rec rec = {
        .ts_ms = wall,
        .request_id = r->req_id,
        .key_name = r->has_key_name ? r->key_name : NULL,
        .route = rt_route_name(r->route),
        .model = r->model,
        .status = status,
        .error = res->err ? (r->msg[0] ? r->msg : wye_err_str(res->err)) : NULL,
        .reasons_json = r->d.reasons[0] ? r->d.reasons : NULL,
        .score = r->d.score,
        .prompt_tokens = u.prompt_tokens,
        .completion_tokens = u.completion_tokens,
        .usage_estimated = u.estimated,
        .ttft_ms = ttft_ms,
        .latency_ms = latency_ms,
        .cost_usd = cost,
        .counterfactual_cost_usd = cf,
        .saving_usd = saving,
        .agent = r->agent[0] ? r->agent : NULL,
        .run_id = r->run_id[0] ? r->run_id : NULL,
    };
    enum wye_err err = rt_ledger_append(rt->ledger, &rec, on_ledger_done, r);
    if (err) {
        atomic_fetch_add(&rt->ledger_dropped, 1);
        wye_log(WYE_LOG_ERROR, r->req_id, "ledger: record dropped (%s); the answer goes out anyway",
                wye_err_str(err));
        deliver(r);
    }
}

static void rs_finish(void *ctx, const struct wye_result *res)
{
    struct rt_routed *r = ctx;
    struct rt_router *rt = r->rt;
    /* (a) nothing reached the client and the upstream failed: once, try the local model */
    if (!r->started && res->err && res->err != WYE_ERR_CANCELED && r->route == RT_ROUTE_REMOTE &&
        r->req && rt->local && !atomic_load(&rt->stopping) &&
        !r->client.ops->cancelled(r->client.ctx) &&
        (!r->key || rt_keys_route_allowed(r->key, "local"))) {
        if (rt->policy) {
            rt_policy_report(rt->policy, RT_ROUTE_REMOTE, !remote_failed(res), r->d.probe, -1, -1);
            r->d.probe = false;
        }
        r->reported = true;
        char detail[96];
        if (res->http_status > 0 && res->err != WYE_ERR_TIMEOUT) {
            snprintf(detail, sizeof(detail), "upstream %d", res->http_status);
        } else {
            snprintf(detail, sizeof(detail), "upstream %s", wye_err_str(res->err));
        }
        struct wye_chat_req *req = r->req;
        r->req = NULL;
        set_route(r, RT_ROUTE_LOCAL, detail);
        char eb[256];
        /* once submitted, r belongs to the local backend, which may finish (or refuse) and free
         * it before rt_local_submit_async returns: set up everything first, touch r only if it
         * was refused at once */
        r->reported = false; /* the local answer reports for itself */
        r->fb_err = res->err;
        r->fb_status = res->http_status;
        copy_str(r->fb_msg, sizeof(r->fb_msg), res->message);
        wye_log(WYE_LOG_WARN, r->req_id, "router: %s before the first byte; answering locally",
                detail);
        atomic_fetch_add(&rt->fallbacks_to_local, 1); /* counted before the answer can end */
        enum wye_err err = rt_local_submit_async(rt->local, req, rt_routed_sink(r),
                                                 fallback_refused, r, eb, sizeof(eb));
        if (err) {
            fallback_refused(r, req, err, eb);
        }
        return;
    }
    conclude(r, res);
}

/* The local model refused the fallback (refusal callback, or at once from rs_finish): the
 * client gets the remote failure it would have had without one. */
static void fallback_refused(void *arg, struct wye_chat_req *req, enum wye_err err, const char *msg)
{
    struct rt_routed *r = arg;
    (void)err;
    wye_log(WYE_LOG_WARN, r->req_id, "router: local fallback refused: %s", msg);
    atomic_fetch_sub(&r->rt->fallbacks_to_local, 1);
    r->reported = true;
    r->req = req;
    r->route = RT_ROUTE_REMOTE;
    char m[MSG_MAX];
    memcpy(m, r->fb_msg, sizeof(m));
    struct wye_result res = {
        .err = r->fb_err, .http_status = r->fb_status, .message = m[0] ? m : NULL};
    conclude(r, &res);
}

void rt_routed_local_refused(void *arg, struct wye_chat_req *req, enum wye_err err, const char *msg)
{
    struct rt_routed *r = arg;
    struct rt_router *rt = r->rt;
    char eb[MSG_MAX];
    /* a full local queue is a limit the client hit (429 naming router.queue_max) */
    enum wye_err shown = err == WYE_ERR_AGAIN ? WYE_ERR_LIMIT : err;
    if (rt_router_local_to_remote(rt, r->key, r->d.is_auto, err)) {
        rt_routed_go_remote(r, err, msg);
        r->req = req;
        enum wye_err e =
            rt_upstream_submit_borrowed(rt->up, req, rt_routed_sink(r), eb, sizeof(eb));
        if (!e) {
            return;
        }
        r->req = NULL;
        shown = e;
        msg = eb;
        if (r->d.probe) {
            rt_policy_probe_release(rt->policy);
        }
    }
    /* what rt_router_submit returns for the same refusal, as the answer's end (no record) */
    r->res = (struct wye_result){.err = shown};
    copy_str(r->msg, sizeof(r->msg), msg);
    copy_str(r->finish_reason, sizeof(r->finish_reason), "error");
    wye_chat_req_destroy(req);
    deliver(r);
}
