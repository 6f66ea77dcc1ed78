/* The router: takes chat requests from the gateway (and later agents), decides where each
 * goes, and streams the answer into the request's sink. In this first version every request
 * goes to the remote OpenAI-compatible upstream (an upstream thread owning a libcurl multi
 * handle); local routing and scoring come with the routing issue. */
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

/* Creates a router for cfg (borrowed; must outlive the router). NULL on allocation failure. */
struct rt_router *rt_router_create(const struct conf_config *cfg);
/* Starts the router's threads (upstream). */
enum wye_err rt_router_start(struct rt_router *rt);
/* Cancels what is in flight (each sink gets finish with CANCELED) and joins the threads. */
void rt_router_stop(struct rt_router *rt);
/* Frees the router; stops it first if needed. NULL is a no-op. */
void rt_router_destroy(struct rt_router *rt);

/* Routes req (takes ownership) and streams its answer into sink. OK: sink->finish will be
 * called exactly once, later, never from inside this call. Any other return: the request was
 * refused (NOTFOUND for an unknown model, ...), the sink is untouched, and errbuf names the
 * problem. Call from one thread at a time (the lws thread). */
enum wye_err rt_router_submit(struct rt_router *rt, struct wye_chat_req *req,
                              struct wye_sink sink, char *errbuf, size_t errlen);
/* Appends the JSON array of models (OpenAI /v1/models "data" entries) to out. */
enum wye_err rt_router_models_json(struct rt_router *rt, struct wye_buf *out);
/* Copies the counters. Any thread. */
void rt_router_stats(struct rt_router *rt, struct rt_stats *out);

#endif
