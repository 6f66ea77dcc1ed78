/* The router: takes chat requests from the gateway (and later agents), decides where each
 * goes (router/policy.h: explicit names, the complexity score, the Lua hook, key routes and
 * budgets, the remote circuit breaker), and streams the answer into the request's sink through
 * a wrapper that injects the decision, falls back to the other backend before the first byte,
 * prices the request, charges the key and writes the ledger record before the client sees the
 * end. Backends: the remote OpenAI-compatible upstream (one libcurl thread) and the local
 * engine (router/local.h), both optional. */
#ifndef WYE_ROUTER_ROUTER_H
#define WYE_ROUTER_ROUTER_H

#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"
#include "common/chat.h"
#include "common/err.h"
#include "conf/conf.h"

struct rt_router;

/* Counters for /metrics; monotonic since start. */
struct rt_stats {
    uint64_t upstream_requests;  /* requests sent upstream (retries included) */
    uint64_t upstream_errors;    /* failed attempts (connect, status, timeout, malformed) */
    uint64_t upstream_retries;   /* attempts retried before the first byte */
    uint64_t upstream_active;    /* transfers in flight now */
};

struct rt_local;
struct rt_ledger;
struct rt_keys;

/* Attaches the local backend (borrowed; stop it after rt_router_stop). Before start. */
void rt_router_set_local(struct rt_router *rt, struct rt_local *local);
/* Attaches the ledger (borrowed; close it after rt_router_stop so every finish is recorded).
 * Without one, nothing is recorded. Before start. */
void rt_router_set_ledger(struct rt_router *rt, struct rt_ledger *ledger);
/* Attaches the API key table (borrowed) for key routes, budgets and charges. Before start. */
void rt_router_set_keys(struct rt_router *rt, struct rt_keys *keys);
/* Replaces the monotonic clock the breaker uses (tests). Before start. */
void rt_router_set_clock(struct rt_router *rt, int64_t (*now_ns)(void *arg), void *arg);
/* The policy (breaker state, EWMAs) once started, else NULL. */
struct rt_policy *rt_router_policy(struct rt_router *rt);
/* Appends the routing metrics (cost, saving, tokens and requests by route, fallbacks, the
 * breaker, EWMA latency, dropped ledger records) as Prometheus text. Any thread. */
enum wye_err rt_router_metrics(struct rt_router *rt, struct wye_buf *out);

/* Routing counters for tests and /metrics. Any thread. */
struct rt_route_stats {
    uint64_t requests[2];           /* by enum rt_route (local 0, remote 1) */
    uint64_t fallbacks_to_local;    /* remote failed before the first byte */
    uint64_t fallbacks_to_remote;   /* the local queue was full */
    uint64_t ledger_dropped;        /* records the ledger could not take */
    uint64_t ledger_write_errors;   /* records the writer failed to write */
};
void rt_router_route_stats(struct rt_router *rt, struct rt_route_stats *out);

/* Creates a router for cfg (borrowed; must outlive the router). NULL on allocation failure. */
struct rt_router *rt_router_create(const struct conf_config *cfg);
/* Starts the router's threads (upstream) and builds the policy (logs why on failure: a bad
 * weights file or hook). */
enum wye_err rt_router_start(struct rt_router *rt);
/* Cancels what is in flight (each sink gets finish with CANCELED) and joins the threads. */
void rt_router_stop(struct rt_router *rt);
/* Frees the router; stops it first if needed. NULL is a no-op. */
void rt_router_destroy(struct rt_router *rt);

/* Routes req (takes ownership) and streams its answer into sink. OK: sink->finish will be
 * called exactly once, later, never from inside this call. Any other return: the request was
 * refused, the sink is untouched, and errbuf names the problem: NOTFOUND an unknown model,
 * AUTH a route the key may not use, LIMIT a spent remote budget (over_budget "refuse") or a
 * full local admission queue with no remote to fall back to (errbuf names router.queue_max;
 * HTTP 429), CANCELED shutting down, AGAIN too many requests waiting for the route hook.
 * Refusals found after OK end the answer through finish alone, with the same codes: what the
 * local backend refuses once it has tokenized the prompt (TOOBIG, INVAL), and with a Lua
 * route hook configured, every refusal of an "auto" request (decided on the hook thread).
 * Refusals write no ledger record. Any thread (the lws thread, agent workers). */
enum wye_err rt_router_submit(struct rt_router *rt, struct wye_chat_req *req,
                              struct wye_sink sink, char *errbuf, size_t errlen);
/* Appends the JSON array of models (OpenAI /v1/models "data" entries) to out. */
enum wye_err rt_router_models_json(struct rt_router *rt, struct wye_buf *out);
/* Copies the counters. Any thread. */
void rt_router_stats(struct rt_router *rt, struct rt_stats *out);

#endif
