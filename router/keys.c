/* Client API keys (router/keys.h): the table built once from the config, constant-time
 * authentication, the per-key token bucket and the per-key remote spend. Authentication and
 * rate limiting run on the lws thread; charging runs on whichever thread finishes a remote
 * request; budget checks on the router's. Each entry's mutable state sits behind its own
 * mutex (a few arithmetic operations are done under it, never I/O).
 *
 * DESIGN: authentication hashes the presented key and compares the hash with every configured
 * hash (wye_ct_equal), selecting the match with a mask instead of a branch, so the time taken
 * depends on the number of keys only, never on which key matched or how much of a hash did.
 * There is deliberately no hash table keyed by the secret's hash. */
#include "router/keys.h"

#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <time.h>

#include "common/alloc.h"
#include "common/crypto.h"
#include "common/log.h"
#include "router/ledger.h"

#define MS_PER_DAY INT64_C(86400000)

struct rt_key {
    char *name;                        /* immutable */
    uint8_t sha256[32];                /* immutable */
    int rpm;                           /* immutable; 0: unlimited */
    double budget_day;                 /* immutable; < 0: unlimited */
    double budget_month;               /* immutable; < 0: unlimited */
    unsigned routes;                   /* immutable; CONF_ROUTE_* */
    enum conf_over_budget over_budget; /* immutable */

    pthread_mutex_t lock;
    double tokens;     /* lock: the bucket, 0..rpm */
    int64_t refill_ns; /* lock: when tokens was last brought up to date */
    bool bucket_init;  /* lock */
    int64_t day;       /* lock: UTC day number of day_usd */
    int64_t month;     /* lock: year * 12 + month of month_usd */
    double day_usd;    /* lock */
    double month_usd;  /* lock */
};

struct rt_keys {
    struct rt_key *keys; /* (n) */
    size_t n;
    struct rt_key anon;
    bool required;
    _Atomic uint64_t compares;
};

static void key_init(struct rt_key *k)
{
    pthread_mutex_init(&k->lock, NULL);
    k->day = INT64_MIN;
    k->month = INT64_MIN;
}

struct rt_keys *rt_keys_create(const struct conf_config *cfg)
{
    struct rt_keys *t = wye_calloc(1, sizeof(*t));
    if (!t) {
        return NULL;
    }
    t->required = cfg->auth.required;
    key_init(&t->anon);
    t->anon.budget_day = -1;
    t->anon.budget_month = -1;
    t->anon.routes = CONF_ROUTE_LOCAL | CONF_ROUTE_REMOTE;
    t->anon.name = wye_strdup(RT_KEY_ANONYMOUS);
    if (!t->anon.name) {
        goto fail;
    }
    if (cfg->n_api_keys > 0) {
        t->keys = wye_calloc(cfg->n_api_keys, sizeof(*t->keys));
        if (!t->keys) {
            goto fail;
        }
    }
    for (size_t i = 0; i < cfg->n_api_keys; i++) {
        const struct conf_api_key *c = &cfg->api_keys[i];
        struct rt_key *k = &t->keys[i];
        key_init(k);
        t->n = i + 1;
        k->name = wye_strdup(c->name);
        if (!k->name) {
            goto fail;
        }
        memcpy(k->sha256, c->sha256, sizeof(k->sha256));
        k->rpm = c->rpm;
        k->budget_day = c->budget_usd_day;
        k->budget_month = c->budget_usd_month;
        k->routes = c->routes;
        k->over_budget = c->over_budget;
    }
    return t;
fail:
    rt_keys_destroy(t);
    return NULL;
}

static void key_cleanup(struct rt_key *k)
{
    wye_free(k->name);
    pthread_mutex_destroy(&k->lock);
}

void rt_keys_destroy(struct rt_keys *t)
{
    if (!t) {
        return;
    }
    for (size_t i = 0; i < t->n; i++) {
        key_cleanup(&t->keys[i]);
    }
    wye_free(t->keys);
    key_cleanup(&t->anon);
    wye_free(t);
}

size_t rt_keys_count(const struct rt_keys *t)
{
    return t->n;
}

bool rt_keys_required(const struct rt_keys *t)
{
    return t->required;
}

enum wye_err rt_keys_authenticate(const struct rt_keys *t, const void *key, size_t len,
                                  struct rt_key **out)
{
    *out = NULL;
    if (len == 0 || len > RT_KEY_LEN_MAX) {
        return WYE_ERR_AUTH;
    }
    uint8_t h[WYE_SHA256_LEN];
    wye_sha256(key, len, h);
    size_t found = 0, idx = 0;
    for (size_t i = 0; i < t->n; i++) {
        /* mask is all ones on a match: no branch depends on the comparison. */
        size_t mask = (size_t)0 - (size_t)wye_ct_equal(h, t->keys[i].sha256, WYE_SHA256_LEN);
        idx = (idx & ~mask) | (i & mask);
        found |= mask;
    }
    atomic_fetch_add_explicit(&((struct rt_keys *)t)->compares, t->n, memory_order_relaxed);
    explicit_bzero(h, sizeof(h));
    if (!found) {
        return WYE_ERR_AUTH;
    }
    *out = &t->keys[idx];
    return WYE_OK;
}

uint64_t rt_keys_compares(const struct rt_keys *t)
{
    return atomic_load(&t->compares);
}

struct rt_key *rt_keys_anonymous(struct rt_keys *t)
{
    return &t->anon;
}

struct rt_key *rt_keys_find(struct rt_keys *t, const char *name)
{
    for (size_t i = 0; i < t->n; i++) {
        if (strcmp(t->keys[i].name, name) == 0) {
            return &t->keys[i];
        }
    }
    return strcmp(name, RT_KEY_ANONYMOUS) == 0 ? &t->anon : NULL;
}

const char *rt_key_name(const struct rt_key *k)
{
    return k->name;
}

enum wye_err rt_keys_rate_take(struct rt_key *k, int64_t now_ns, int64_t *retry_after_ms)
{
    if (k->rpm <= 0) {
        return WYE_OK;
    }
    enum wye_err rc = WYE_OK;
    double cap = (double)k->rpm;
    pthread_mutex_lock(&k->lock);
    if (!k->bucket_init) {
        k->bucket_init = true;
        k->tokens = cap;
        k->refill_ns = now_ns;
    }
    if (now_ns > k->refill_ns) {
        double add = (double)(now_ns - k->refill_ns) * cap / (60.0 * 1e9);
        k->tokens = k->tokens + add > cap ? cap : k->tokens + add;
        k->refill_ns = now_ns;
    }
    if (k->tokens >= 1.0) {
        k->tokens -= 1.0;
    } else {
        *retry_after_ms = (int64_t)((1.0 - k->tokens) * 60000.0 / cap) + 1;
        rc = WYE_ERR_LIMIT;
    }
    pthread_mutex_unlock(&k->lock);
    return rc;
}

bool rt_keys_route_allowed(const struct rt_key *k, const char *route)
{
    if (!route) {
        return false;
    }
    if (strcmp(route, "local") == 0) {
        return (k->routes & CONF_ROUTE_LOCAL) != 0;
    }
    if (strcmp(route, "remote") == 0) {
        return (k->routes & CONF_ROUTE_REMOTE) != 0;
    }
    return false;
}

/* The UTC day number and year * 12 + month of wall time ms. */
static void utc_periods(int64_t ms, int64_t *day, int64_t *month)
{
    int64_t d = ms / MS_PER_DAY - (ms % MS_PER_DAY < 0);
    time_t secs = (time_t)(d * 86400);
    struct tm tm;
    memset(&tm, 0, sizeof(tm));
    gmtime_r(&secs, &tm);
    *day = d;
    *month = ((int64_t)tm.tm_year + 1900) * 12 + tm.tm_mon;
}

/* Zeroes the spend of periods older than now's. Caller holds k->lock. */
static void roll_locked(struct rt_key *k, int64_t day, int64_t month)
{
    if (k->day != day) {
        k->day = day;
        k->day_usd = 0;
    }
    if (k->month != month) {
        k->month = month;
        k->month_usd = 0;
    }
}

enum rt_key_verdict rt_keys_remote_allowed(struct rt_key *k, int64_t now_ms)
{
    if (!(k->routes & CONF_ROUTE_REMOTE)) {
        return RT_KEY_REFUSE_ROUTE;
    }
    if (k->budget_day < 0 && k->budget_month < 0) {
        return RT_KEY_OK;
    }
    int64_t day, month;
    utc_periods(now_ms, &day, &month);
    pthread_mutex_lock(&k->lock);
    roll_locked(k, day, month);
    bool over = (k->budget_day >= 0 && k->day_usd >= k->budget_day) ||
                (k->budget_month >= 0 && k->month_usd >= k->budget_month);
    pthread_mutex_unlock(&k->lock);
    if (!over) {
        return RT_KEY_OK;
    }
    return k->over_budget == CONF_OVER_BUDGET_LOCAL && (k->routes & CONF_ROUTE_LOCAL)
               ? RT_KEY_USE_LOCAL
               : RT_KEY_REFUSE_BUDGET;
}

enum rt_key_verdict rt_keys_admit(struct rt_key *k, const char *route, int64_t now_ms)
{
    if (!rt_keys_route_allowed(k, route)) {
        return RT_KEY_REFUSE_ROUTE;
    }
    if (strcmp(route, "local") == 0) {
        return RT_KEY_OK; /* costs nothing remote: no remote budget applies */
    }
    return rt_keys_remote_allowed(k, now_ms);
}

void rt_keys_charge(struct rt_key *k, double cost_usd, int64_t now_ms)
{
    if (!(cost_usd > 0)) {
        return; /* also NaN */
    }
    int64_t day, month;
    utc_periods(now_ms, &day, &month);
    pthread_mutex_lock(&k->lock);
    roll_locked(k, day, month);
    k->day_usd += cost_usd;
    k->month_usd += cost_usd;
    pthread_mutex_unlock(&k->lock);
}

void rt_keys_spend(struct rt_key *k, int64_t now_ms, double *day_usd, double *month_usd)
{
    int64_t day, month;
    utc_periods(now_ms, &day, &month);
    pthread_mutex_lock(&k->lock);
    roll_locked(k, day, month);
    *day_usd = k->day_usd;
    *month_usd = k->month_usd;
    pthread_mutex_unlock(&k->lock);
}

struct restore_ctx {
    struct rt_keys *t;
    int64_t day, month;
};

static void restore_one(void *arg, const char *key_name, double day_usd, double month_usd)
{
    struct restore_ctx *rc = arg;
    struct rt_key *k = key_name ? rt_keys_find(rc->t, key_name) : NULL;
    if (!k) {
        return;
    }
    pthread_mutex_lock(&k->lock);
    k->day = rc->day;
    k->month = rc->month;
    k->day_usd = day_usd > 0 ? day_usd : 0;
    k->month_usd = month_usd > 0 ? month_usd : 0;
    pthread_mutex_unlock(&k->lock);
}

enum wye_err rt_keys_restore_spend(struct rt_keys *t, const char *const *files, size_t n_files,
                                   int64_t now_ms)
{
    struct restore_ctx rc = {.t = t};
    utc_periods(now_ms, &rc.day, &rc.month);
    return rt_ledger_spend_by_key(files, n_files, now_ms, restore_one, &rc);
}
