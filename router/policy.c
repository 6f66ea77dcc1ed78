/* The routing decision (rt_policy_decide: lws thread, agent workers) and the health state: the
 * remote circuit breaker and per-backend EWMA latency/TTFT (written by rt_policy_report from the
 * upstream thread, the engine worker or the ledger writer; guarded by one mutex held for a few
 * instructions). The decision allocates nothing except inside the optional Lua hook.
 *
 * DESIGN: explicit names first (local name -> local, upstream name -> remote, else 404); "auto"
 * is scored when both backends exist (features + logistic score vs router.threshold, unset: the
 * weights' own); then the latency tip (latency_tip): while the remote's EWMA time to first
 * token is over router.latency_target_ms, a request scored remote by less than a margin that
 * grows with the excess (capped) goes local, if the local side is faster and has no queue;
 * then the hook may override; then constraints in order: availability, the key's routes, the
 * remote budget, the breaker. Latency only tips borderline requests: for a clearly hard one a
 * slow remote is still the better answer, and a failing one is the breaker's business. */
#include "router/policy.h"

#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "common/clock.h"
#include "common/log.h"
#include "router/keys.h"

#define EWMA_ALPHA 0.2
/* An EWMA without a sample for this long no longer tips decisions, and the next sample starts
 * it afresh (so a remote that was slow once is measured again, not avoided forever). */
#define EWMA_STALE_NS ((int64_t)30 * 1000000000)
/* The latency tip's margin above the threshold: this much per target's worth of excess
 * time to first token (1.5x the target: 0.05, 2x: 0.1), at most SLOW_MARGIN_MAX. */
#define SLOW_MARGIN_PER_TARGET 0.1
#define SLOW_MARGIN_MAX 0.2
#define HOOK_WARN_EVERY_NS ((int64_t)1000000000) /* at most one hook warning per second */
#define HOOK_SRC_MAX ((size_t)1 << 20)

struct rt_policy {
    const struct conf_config *cfg;
    struct rt_score_model model; /* its threshold is the effective one (rt_policy_threshold) */
    const char *local_name; /* NULL: no local backend */
    bool has_remote;
    const char *remote_name; /* NULL: any non-local name goes upstream */
    int64_t (*now_ns)(void *arg);
    void *clock_arg;
    uint64_t (*local_waiting)(void *arg); /* NULL: unknown (treated as none waiting) */
    void *local_arg;
    int breaker_failures;
    int64_t breaker_cooldown_ns;
    pthread_mutex_t hook_mu;  /* the hook's lua_State runs one call at a time */
    struct rt_hook *hook;     /* calls guarded by hook_mu */
    int64_t hook_warn_ns;     /* guarded by hook_mu: the last warning */
    uint64_t hook_suppressed; /* guarded by hook_mu */
    atomic_uint_fast64_t hook_errors;

    pthread_mutex_t mu; /* guards the fields below */
    enum rt_breaker_state breaker;
    int n_fail;                                                   /* consecutive remote failures */
    int64_t t_open_ns;                                            /* when the breaker (re)opened */
    bool probe_inflight;                                          /* half-open: the probe is out */
    double ewma_lat[RT_ROUTE__COUNT], ewma_ttft[RT_ROUTE__COUNT]; /* < 0: no sample */
    int64_t t_sample_ns[RT_ROUTE__COUNT]; /* when each route's EWMAs last took a sample */
};

const char *rt_route_name(enum rt_route r)
{
    return r == RT_ROUTE_LOCAL ? "local" : "remote";
}

static int64_t default_now(void *arg)
{
    (void)arg;
    return wye_now_ns();
}

static enum wye_err read_file(const char *path, char **out, size_t *len, char *errbuf,
                              size_t errlen)
{
    FILE *fp = fopen(path, "rb");
    if (!fp) {
        snprintf(errbuf, errlen, "cannot open '%s'", path);
        return WYE_ERR_IO;
    }
    char *buf = wye_malloc(HOOK_SRC_MAX + 1);
    if (!buf) {
        fclose(fp);
        snprintf(errbuf, errlen, "out of memory reading '%s'", path);
        return WYE_ERR_NOMEM;
    }
    size_t n = fread(buf, 1, HOOK_SRC_MAX + 1, fp);
    bool bad = ferror(fp) != 0;
    fclose(fp);
    if (bad || n > HOOK_SRC_MAX) {
        wye_free(buf);
        snprintf(errbuf, errlen, bad ? "cannot read '%s'" : "'%s' is larger than 1 MiB", path);
        return bad ? WYE_ERR_IO : WYE_ERR_TOOBIG;
    }
    buf[n] = '\0';
    *out = buf;
    *len = n;
    return WYE_OK;
}

enum wye_err rt_policy_create(const struct conf_config *cfg, const struct rt_policy_opts *opts,
                              struct rt_policy **out, char *errbuf, size_t errlen)
{
    *out = NULL;
    struct rt_policy *p = wye_calloc(1, sizeof(*p));
    if (!p) {
        snprintf(errbuf, errlen, "out of memory");
        return WYE_ERR_NOMEM;
    }
    pthread_mutex_init(&p->mu, NULL);
    pthread_mutex_init(&p->hook_mu, NULL);
    p->cfg = cfg;
    p->local_name = opts->local_name;
    p->has_remote = opts->has_remote;
    p->remote_name = opts->remote_name;
    p->now_ns = opts->now_ns ? opts->now_ns : default_now;
    p->clock_arg = opts->clock_arg;
    p->local_waiting = opts->local_waiting;
    p->local_arg = opts->local_arg;
    const struct conf_router *rc = &cfg->router;
    p->breaker_failures = rc->breaker_failures > 0 ? rc->breaker_failures : 5;
    p->breaker_cooldown_ns =
        (int64_t)(rc->breaker_cooldown_ms > 0 ? rc->breaker_cooldown_ms : 10000) * 1000000;
    for (int r = 0; r < RT_ROUTE__COUNT; r++) {
        p->ewma_lat[r] = -1;
        p->ewma_ttft[r] = -1;
    }
    char e[400] = "";
    enum wye_err err;
    if (rc->weights_path) {
        char *text = NULL;
        size_t len = 0;
        err = read_file(rc->weights_path, &text, &len, e, sizeof(e));
        if (!err) {
            err = rt_score_model_load_json(text, len, &p->model, e, sizeof(e));
            wye_free(text);
        }
    } else {
        err = rt_score_model_default(&p->model, e, sizeof(e));
    }
    if (err) {
        snprintf(errbuf, errlen, "router.weights: %s", e);
        goto fail;
    }
    /* rt_score compares in float: the same comparison as `wye route score` */
    p->model.threshold = (float)rt_policy_threshold(rc, &p->model);
    if (rc->hook || rc->hook_file) {
        char *src = NULL;
        size_t len = 0;
        if (rc->hook_file) {
            err = read_file(rc->hook_file, &src, &len, e, sizeof(e));
            if (err) {
                snprintf(errbuf, errlen, "router.hook_file: %s", e);
                goto fail;
            }
        }
        err = rt_hook_create(rc->hook_file ? rc->hook_file : "router.hook", src ? src : rc->hook,
                             src ? len : strlen(rc->hook), rc->hook_memory_kb, rc->hook_timeout_ms,
                             &p->hook, errbuf, errlen);
        wye_free(src);
        if (err) {
            goto fail;
        }
    }
    *out = p;
    return WYE_OK;
fail:
    rt_policy_destroy(p);
    return err;
}

double rt_policy_threshold(const struct conf_router *rc, const struct rt_score_model *m)
{
    return rc->threshold >= 0 && rc->threshold <= 1 ? rc->threshold : (double)m->threshold;
}

void rt_policy_destroy(struct rt_policy *p)
{
    if (!p) {
        return;
    }
    rt_hook_destroy(p->hook);
    pthread_mutex_destroy(&p->hook_mu);
    pthread_mutex_destroy(&p->mu);
    wye_free(p);
}

void rt_decision_add_reason(struct rt_decision *d, const char *feature, const char *detail)
{
    size_t n = strlen(d->reasons);
    if (n < 2 || d->reasons[n - 1] != ']') {
        snprintf(d->reasons, sizeof(d->reasons), "[]");
        n = 2;
    }
    char item[320];
    /* feature and detail are wye's own words: no quotes or backslashes to escape */
    int k = snprintf(item, sizeof(item), "%s{\"feature\":\"%s\",\"detail\":\"%s\"}]",
                     n > 2 ? "," : "", feature, detail);
    if (k < 0 || (size_t)k >= sizeof(item) || n - 1 + (size_t)k >= sizeof(d->reasons)) {
        return;
    }
    for (char *c = item; *c; c++) {
        if (*c == '\\' || (unsigned char)*c < 0x20) {
            *c = ' ';
        }
    }
    memcpy(d->reasons + n - 1, item, (size_t)k + 1);
}

/* The hook's verdict replaces the score's; failures are logged (rate-limited) and counted. */
static void run_hook(struct rt_policy *p, const struct wye_chat_req *req,
                     const struct rt_features *f, struct rt_decision *d)
{
    enum rt_route r;
    char e[320];
    enum wye_err err = rt_hook_call(p->hook, req, f, d->score, &r, e, sizeof(e));
    if (!err) {
        if (r != d->route) {
            rt_decision_add_reason(d, "hook", rt_route_name(r));
        }
        d->route = r;
        return;
    }
    atomic_fetch_add(&p->hook_errors, 1);
    int64_t now = p->now_ns(p->clock_arg);
    if (p->hook_warn_ns == 0 || now - p->hook_warn_ns >= HOOK_WARN_EVERY_NS) {
        wye_log(WYE_LOG_WARN, req->id,
                "router hook failed (%s): %s; routing by score (%llu similar failures not "
                "logged since the last warning)",
                wye_err_str(err), e, (unsigned long long)p->hook_suppressed);
        p->hook_warn_ns = now;
        p->hook_suppressed = 0;
    } else {
        p->hook_suppressed++;
    }
    rt_decision_add_reason(d, "hook_error", wye_err_str(err));
}

/* Breaker admission for an "auto" request bound remote: true to go remote. */
static bool breaker_admit(struct rt_policy *p, bool *probe)
{
    *probe = false;
    bool ok = true;
    pthread_mutex_lock(&p->mu);
    if (p->breaker == RT_BREAKER_OPEN &&
        p->now_ns(p->clock_arg) - p->t_open_ns >= p->breaker_cooldown_ns) {
        p->breaker = RT_BREAKER_HALF_OPEN;
        p->probe_inflight = false;
    }
    if (p->breaker == RT_BREAKER_OPEN) {
        ok = false;
    } else if (p->breaker == RT_BREAKER_HALF_OPEN) {
        if (p->probe_inflight) {
            ok = false;
        } else {
            p->probe_inflight = true;
            *probe = true;
        }
    }
    pthread_mutex_unlock(&p->mu);
    return ok;
}

void rt_policy_probe_release(struct rt_policy *p)
{
    pthread_mutex_lock(&p->mu);
    p->probe_inflight = false;
    pthread_mutex_unlock(&p->mu);
}

static bool may(struct rt_key *key, enum rt_route r)
{
    return !key || rt_keys_route_allowed(key, rt_route_name(r));
}

/* p->mu held: route's EWMA TTFT, or -1 when it has no sample or only a stale one. */
static double fresh_ttft_locked(struct rt_policy *p, enum rt_route route, int64_t now)
{
    if (p->ewma_ttft[route] < 0 || now - p->t_sample_ns[route] >= EWMA_STALE_NS) {
        return -1;
    }
    return p->ewma_ttft[route];
}

/* The latency tip, for an "auto" request the score sent remote: while the remote's EWMA time
 * to first token is over router.latency_target_ms, a request whose score is within a margin
 * above the threshold (growing with the excess, capped) goes local instead, provided the local
 * side is not slower (its own EWMA TTFT, which includes queue wait, is lower or unknown), no
 * local request is waiting for a sequence, and the key may use the local route. */
static void latency_tip(struct rt_policy *p, struct rt_key *key, struct rt_decision *d)
{
    int target = p->cfg->router.latency_target_ms;
    if (target <= 0 || d->route != RT_ROUTE_REMOTE || !may(key, RT_ROUTE_LOCAL)) {
        return;
    }
    pthread_mutex_lock(&p->mu);
    int64_t now = p->now_ns(p->clock_arg);
    double remote = fresh_ttft_locked(p, RT_ROUTE_REMOTE, now);
    double local = fresh_ttft_locked(p, RT_ROUTE_LOCAL, now);
    pthread_mutex_unlock(&p->mu);
    if (remote <= target || (local >= 0 && local >= remote)) {
        return;
    }
    double margin = SLOW_MARGIN_PER_TARGET * (remote / target - 1);
    if (margin > SLOW_MARGIN_MAX) {
        margin = SLOW_MARGIN_MAX;
    }
    double threshold = (double)p->model.threshold;
    if (d->score >= threshold + margin) {
        return; /* clearly hard: a slow remote is still the better answer */
    }
    if (p->local_waiting && p->local_waiting(p->local_arg) > 0) {
        return; /* the local engine is saturated: it would not answer sooner */
    }
    d->route = RT_ROUTE_LOCAL;
    char detail[200];
    snprintf(detail, sizeof(detail),
             "remote time to first token %.0f ms over router.latency_target_ms %d: score within "
             "%.3f of the threshold %.4f goes local",
             remote, target, margin, threshold);
    rt_decision_add_reason(d, "upstream_slow", detail);
}

enum wye_err rt_policy_decide(struct rt_policy *p, const struct wye_chat_req *req,
                              struct rt_key *key, struct rt_decision *d, char *errbuf,
                              size_t errlen)
{
    memset(d, 0, sizeof(*d));
    d->score = -1;
    bool has_local = p->local_name != NULL;
    const char *m = req->model;
    if (!m || strcmp(m, "auto") == 0) {
        d->is_auto = true;
    } else if (has_local && strcmp(m, p->local_name) == 0) {
        d->route = RT_ROUTE_LOCAL;
    } else if (p->has_remote && (!p->remote_name || strcmp(m, p->remote_name) == 0)) {
        d->route = RT_ROUTE_REMOTE;
    } else {
        snprintf(errbuf, errlen, "model '%.100s' not found", m);
        return WYE_ERR_NOTFOUND;
    }
    if (!has_local && !p->has_remote) {
        snprintf(errbuf, errlen, "no upstream configured");
        return WYE_ERR_NOTFOUND;
    }
    if (d->is_auto) {
        if (has_local && p->has_remote) {
            struct rt_features f;
            struct rt_score_result sr;
            rt_features_extract(req, &f);
            rt_score(&p->model, &f, 5, &sr);
            d->score = sr.score;
            d->route = sr.remote ? RT_ROUTE_REMOTE : RT_ROUTE_LOCAL;
            if (rt_score_reasons_json(&sr, d->reasons, sizeof(d->reasons)) != WYE_OK) {
                snprintf(d->reasons, sizeof(d->reasons), "[]");
            }
            latency_tip(p, key, d);
            if (p->hook) {
                pthread_mutex_lock(&p->hook_mu);
                run_hook(p, req, &f, d);
                pthread_mutex_unlock(&p->hook_mu);
            }
        } else {
            d->route = has_local ? RT_ROUTE_LOCAL : RT_ROUTE_REMOTE;
        }
    }
    enum rt_route other = d->route == RT_ROUTE_LOCAL ? RT_ROUTE_REMOTE : RT_ROUTE_LOCAL;
    bool other_exists = other == RT_ROUTE_LOCAL ? has_local : p->has_remote;
    /* the key's routes */
    if (!may(key, d->route)) {
        if (d->is_auto && other_exists && may(key, other)) {
            d->route = other;
            rt_decision_add_reason(d, "key_routes", "route not allowed for this key");
        } else {
            snprintf(errbuf, errlen, "API key '%s' may not use the %s route",
                     key ? rt_key_name(key) : "?", rt_route_name(d->route));
            return WYE_ERR_DENIED;
        }
    }
    if (d->route == RT_ROUTE_LOCAL) {
        return WYE_OK; /* a local request costing $0 is never blocked by a remote budget */
    }
    /* the remote budget */
    if (key) {
        enum rt_key_verdict v = rt_keys_remote_allowed(key, wye_wall_ms());
        if (v == RT_KEY_USE_LOCAL && has_local && may(key, RT_ROUTE_LOCAL)) {
            d->route = RT_ROUTE_LOCAL;
            rt_decision_add_reason(d, "budget", "remote budget spent: answered locally");
            return WYE_OK;
        }
        if (v != RT_KEY_OK) {
            snprintf(errbuf, errlen, "API key '%s' has spent its remote budget", rt_key_name(key));
            return WYE_ERR_LIMIT;
        }
    }
    /* the breaker: only "auto" requests are diverted (an explicit remote model name is the
     * client's choice, and its outcome still feeds the breaker) */
    if (d->is_auto && has_local && may(key, RT_ROUTE_LOCAL)) {
        if (!breaker_admit(p, &d->probe)) {
            d->route = RT_ROUTE_LOCAL;
            rt_decision_add_reason(d, "breaker", "remote circuit open");
        }
    }
    return WYE_OK;
}

/* Folds sample x into *v; a stale average (no sample for EWMA_STALE_NS) starts afresh. */
static void ewma(double *v, double x, bool stale)
{
    if (x < 0 || !isfinite(x)) {
        return;
    }
    *v = *v < 0 || stale ? x : *v + EWMA_ALPHA * (x - *v);
}

void rt_policy_report(struct rt_policy *p, enum rt_route route, bool ok, bool probe,
                      double latency_ms, double ttft_ms)
{
    pthread_mutex_lock(&p->mu);
    if (ok && latency_ms >= 0) {
        int64_t now = p->now_ns(p->clock_arg);
        bool stale = now - p->t_sample_ns[route] >= EWMA_STALE_NS;
        ewma(&p->ewma_lat[route], latency_ms, stale);
        /* an answer without a first token (empty) keeps the TTFT average, fresh or not */
        if (ttft_ms >= 0) {
            ewma(&p->ewma_ttft[route], ttft_ms, stale);
        }
        p->t_sample_ns[route] = now;
    }
    if (route == RT_ROUTE_REMOTE) {
        if (probe) {
            p->probe_inflight = false;
        }
        if (ok) {
            p->n_fail = 0;
            if (p->breaker != RT_BREAKER_CLOSED) {
                WYE_INFO("router: remote circuit closed (a request succeeded)");
            }
            p->breaker = RT_BREAKER_CLOSED;
        } else {
            p->n_fail++;
            bool reopen = p->breaker == RT_BREAKER_HALF_OPEN && probe;
            if (reopen || (p->breaker == RT_BREAKER_CLOSED && p->n_fail >= p->breaker_failures)) {
                WYE_WARN("router: remote circuit open after %d consecutive failures; auto "
                         "requests go local for %lld ms",
                         p->n_fail, (long long)(p->breaker_cooldown_ns / 1000000));
                p->breaker = RT_BREAKER_OPEN;
                p->t_open_ns = p->now_ns(p->clock_arg);
            }
        }
    }
    pthread_mutex_unlock(&p->mu);
}

enum rt_breaker_state rt_policy_breaker_state(struct rt_policy *p)
{
    pthread_mutex_lock(&p->mu);
    enum rt_breaker_state s = p->breaker;
    if (s == RT_BREAKER_OPEN && p->now_ns(p->clock_arg) - p->t_open_ns >= p->breaker_cooldown_ns) {
        s = RT_BREAKER_HALF_OPEN; /* the next auto request will probe */
    }
    pthread_mutex_unlock(&p->mu);
    return s;
}

void rt_policy_ewma(struct rt_policy *p, enum rt_route route, double *latency_ms, double *ttft_ms)
{
    pthread_mutex_lock(&p->mu);
    *latency_ms = p->ewma_lat[route];
    *ttft_ms = p->ewma_ttft[route];
    pthread_mutex_unlock(&p->mu);
}

bool rt_policy_has_hook(const struct rt_policy *p)
{
    return p->hook != NULL;
}

uint64_t rt_policy_hook_errors(struct rt_policy *p)
{
    return atomic_load(&p->hook_errors);
}
