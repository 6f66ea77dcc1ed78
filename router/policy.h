/* The routing policy: per request, on the lws thread, in well under a millisecond, decides
 * which backend answers. Explicit model names bypass scoring; "auto" is scored (score.h)
 * against router.threshold (unset: the weights' own); while the remote's EWMA time to first
 * token is over router.latency_target_ms, borderline remote-bound requests go local (reason
 * "upstream_slow"); then the optional Lua hook route(request, features, score) may override
 * it; then the constraints apply: the key's allowed routes, its remote budget, the remote
 * circuit breaker and which backends exist. The policy keeps per-backend EWMA latency and time
 * to first token, and the breaker's state, fed by rt_policy_report from the producers'
 * threads. docs/routing.md ("Policy") describes the rules. */
#ifndef WYE_ROUTER_POLICY_H
#define WYE_ROUTER_POLICY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/chat.h"
#include "common/err.h"
#include "conf/conf.h"
#include "router/score.h"

struct rt_policy;
struct rt_key;

enum rt_route { RT_ROUTE_LOCAL = 0, RT_ROUTE_REMOTE = 1, RT_ROUTE__COUNT };

#define RT_REASONS_MAX 1536 /* the reasons JSON array text */

enum rt_breaker_state { RT_BREAKER_CLOSED = 0, RT_BREAKER_OPEN = 1, RT_BREAKER_HALF_OPEN = 2 };

/* What the policy decided for one request. */
struct rt_decision {
    enum rt_route route;
    bool is_auto;                 /* the client asked for "auto" */
    bool probe;                   /* this remote request is the breaker's half-open probe */
    double score;                 /* < 0: not scored */
    char reasons[RT_REASONS_MAX]; /* JSON array text, "" when not scored and nothing to say */
};

struct rt_policy_opts {
    const char *local_name;  /* the local model's name, NULL: no local backend */
    bool has_remote;         /* an upstream is configured */
    const char *remote_name; /* the upstream's model name (NULL: any other name goes upstream) */
    /* Monotonic clock in ns (NULL: wye_now_ns); tests inject their own. */
    int64_t (*now_ns)(void *arg);
    void *clock_arg;
    /* Local requests waiting for a free sequence now (NULL: none known); the latency tip sends
     * nothing local while any wait. Called on the deciding thread; must be cheap. */
    uint64_t (*local_waiting)(void *arg);
    void *local_arg;
};

/* Creates the policy for cfg (borrowed; must outlive it): loads router.weights (or the
 * built-in weights) and compiles the hook (router.hook or router.hook_file) in its sandbox.
 * errbuf names the problem (a bad weights file, a hook that does not compile). */
enum wye_err rt_policy_create(const struct conf_config *cfg, const struct rt_policy_opts *opts,
                              struct rt_policy **out, char *errbuf, size_t errlen);
/* Frees the policy; NULL is a no-op. */
void rt_policy_destroy(struct rt_policy *p);
/* The threshold "auto" requests are scored against: router.threshold when set (0..1), else the
 * weights' own trained threshold (m->threshold). `wye route score/eval -c` use it too, so the
 * CLI and the gateway decide alike. */
double rt_policy_threshold(const struct conf_router *rc, const struct rt_score_model *m);

/* Decides the route of req (borrowed) for key (NULL: no key constraints). OK: *out holds the
 * decision. NOTFOUND: unknown model; LIMIT: over the remote budget in refuse mode; AUTH: the
 * key may use no available route; errbuf names the problem. Any thread (the lws thread, agent
 * workers, the router's hook thread: rt_router_submit sends "auto" requests there when a hook
 * is configured, so the hook never runs on the lws thread); hook calls are serialised by a
 * lock. */
enum wye_err rt_policy_decide(struct rt_policy *p, const struct wye_chat_req *req,
                              struct rt_key *key, struct rt_decision *out, char *errbuf,
                              size_t errlen);
/* Appends {"feature":feature,"detail":detail} to the reasons array d->reasons (dropped when it
 * would not fit). */
void rt_decision_add_reason(struct rt_decision *d, const char *feature, const char *detail);

/* A finished attempt on route: ok (or a failure that counts against the remote breaker),
 * latency and time to first token in ms (ttft < 0: none). Any thread. */
void rt_policy_report(struct rt_policy *p, enum rt_route route, bool ok, bool probe,
                      double latency_ms, double ttft_ms);
/* Gives back an unused half-open probe (the request never reached the upstream). */
void rt_policy_probe_release(struct rt_policy *p);
/* The breaker's state now. Any thread. */
enum rt_breaker_state rt_policy_breaker_state(struct rt_policy *p);
/* EWMA latency and TTFT in ms of route (< 0: no sample yet). Any thread. */
void rt_policy_ewma(struct rt_policy *p, enum rt_route route, double *latency_ms, double *ttft_ms);
/* Hook calls that failed (error, timeout, memory, bad answer) since creation. Any thread. */
uint64_t rt_policy_hook_errors(struct rt_policy *p);
/* Whether a Lua route hook is configured (it runs for "auto" requests when both routes
 * exist). */
bool rt_policy_has_hook(const struct rt_policy *p);
/* "local" / "remote". */
const char *rt_route_name(enum rt_route r);

/* ---- the Lua route hook (hook.c) ---- */

struct rt_hook;

/* Compiles src (borrowed) named chunkname in a sandbox with memory_kb of memory and timeout_ms
 * per call. errbuf names the problem (a syntax error, no route function). */
enum wye_err rt_hook_create(const char *chunkname, const char *src, size_t len, int memory_kb,
                            int timeout_ms, struct rt_hook **out, char *errbuf, size_t errlen);
void rt_hook_destroy(struct rt_hook *h);
/* Calls route(request, features, score). OK: *route set from "local"/"remote". Otherwise the
 * hook failed or answered something else; errbuf says what. One thread at a time. */
enum wye_err rt_hook_call(struct rt_hook *h, const struct wye_chat_req *req,
                          const struct rt_features *f, double score, enum rt_route *route,
                          char *errbuf, size_t errlen);

#endif
