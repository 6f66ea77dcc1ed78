/* The router's shared state (struct rt_router) and the per-request sink wrapper, used by
 * router.c (submit, lws thread) and rt_routed.c (the wrapper's callbacks, producer and ledger
 * writer threads). Counters are atomics; everything else is set before start and then read. */
#ifndef WYE_ROUTER_RT_ROUTE_INTERNAL_H
#define WYE_ROUTER_RT_ROUTE_INTERNAL_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "common/chat.h"
#include "common/queue.h"
#include "conf/conf.h"
#include "router/policy.h"
#include "router/router.h"

#define RT_NANO_USD 1e9 /* cost counters are kept in nano-USD */

struct rt_router {
    const struct conf_config *cfg;
    struct rt_upstream *up;   /* NULL when no upstream is configured */
    struct rt_local *local;   /* borrowed; NULL: no local model */
    struct rt_ledger *ledger; /* borrowed; NULL: nothing recorded */
    struct rt_keys *keys;     /* borrowed; NULL: no key constraints */
    struct rt_policy *policy; /* built by start */
    int64_t (*now_ns)(void *arg);
    void *clock_arg;
    const char *model_label[RT_ROUTE__COUNT]; /* metrics labels */
    atomic_bool stopping;
    atomic_uint_fast64_t n_requests[RT_ROUTE__COUNT];
    atomic_uint_fast64_t tokens_prompt[RT_ROUTE__COUNT], tokens_completion[RT_ROUTE__COUNT];
    atomic_int_fast64_t cost_nusd[RT_ROUTE__COUNT], saving_nusd[RT_ROUTE__COUNT];
    atomic_uint_fast64_t fallbacks_to_local, fallbacks_to_remote;
    atomic_uint_fast64_t ledger_dropped, ledger_write_errors;
    /* the Lua route hook's thread: "auto" requests are decided there when a hook is set */
    struct wye_worker hook;            /* started before any submit; cleaned up by destroy */
    atomic_uint_fast64_t hook_pending; /* queued for the hook thread or being decided there */
};

struct rt_routed;

/* Whether a request the local backend refused with err (AGAIN: its queue is full; TOOBIG: the
 * prompt does not fit, for an "auto" request) may go to the remote API instead. */
bool rt_router_local_to_remote(struct rt_router *rt, struct rt_key *key, bool is_auto,
                               enum wye_err err);

/* Wraps sink for req (borrowed; copied what the record needs) and decision d (copied). NULL on
 * allocation failure. */
struct rt_routed *rt_routed_create(struct rt_router *rt, const struct wye_chat_req *req,
                                   struct rt_key *key, const struct rt_decision *d,
                                   struct wye_sink client);
/* Frees a wrapper that was never handed to a backend. */
void rt_routed_discard(struct rt_routed *r);
/* The sink backends get. */
struct wye_sink rt_routed_sink(struct rt_routed *r);
/* The local backend refused the wrapper's request with err (AGAIN: queue full, TOOBIG: context
 * too small; why: its message) and rt_router_local_to_remote allows the remote: the wrapper
 * now answers remotely, with the fallback as a reason, counted and logged. */
void rt_routed_go_remote(struct rt_routed *r, enum wye_err err, const char *why);
/* rt_local_submit_async's refusal callback for a wrapper (arg) submitted locally: the request
 * goes remote when rt_router_local_to_remote allows, else the client's sink gets the refusal
 * (finish alone, no ledger record: as if refused at submit). */
void rt_routed_local_refused(void *arg, struct wye_chat_req *req, enum wye_err err,
                             const char *msg);
/* The wrapper keeps req (a borrowed upstream submit): it may resubmit it locally and frees it
 * at the end. */
void rt_routed_keep_req(struct rt_routed *r, struct wye_chat_req *req);

#endif
