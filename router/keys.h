/* Client API keys: an immutable table built from the config (names, SHA-256 hashes, limits),
 * constant-time authentication, a per-key requests-per-minute token bucket, and per-key remote
 * spend for the current UTC day and month (budgets), rebuilt from the ledger after a restart.
 * The key secrets themselves never reach wye: only their hashes are configured. */
#ifndef WYE_ROUTER_KEYS_H
#define WYE_ROUTER_KEYS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/err.h"
#include "conf/conf.h"

#define RT_KEY_LEN_MAX 256           /* longer presented keys are refused without hashing */
#define RT_KEY_ANONYMOUS "anonymous" /* the name of requests without a key (auth optional) */

struct rt_keys;
struct rt_key;

/* What a key may do with a request bound for a route. */
enum rt_key_verdict {
    RT_KEY_OK = 0,        /* go ahead */
    RT_KEY_USE_LOCAL,     /* remote budget spent: answer locally instead */
    RT_KEY_REFUSE_BUDGET, /* remote budget spent and over_budget = "refuse" */
    RT_KEY_REFUSE_ROUTE,  /* the key may not use this route */
};

/* Builds the table from cfg->api_keys (copied; cfg may go away). NULL on allocation failure. */
struct rt_keys *rt_keys_create(const struct conf_config *cfg);
/* Frees the table; every rt_key from it becomes invalid. NULL is a no-op. */
void rt_keys_destroy(struct rt_keys *t);
/* Number of configured keys (the anonymous entry is not counted). */
size_t rt_keys_count(const struct rt_keys *t);
/* True when requests must present a key (auth.required). */
bool rt_keys_required(const struct rt_keys *t);

/* Hashes key[0..len) and compares the hash against every configured hash with wye_ct_equal,
 * never stopping early. OK and *out: a configured key; AUTH: no match (or len is 0 or above
 * RT_KEY_LEN_MAX). Any thread. */
enum wye_err rt_keys_authenticate(const struct rt_keys *t, const void *key, size_t len,
                                  struct rt_key **out);
/* The entry for requests without a key: unlimited, every route, no budget. Use it only when
 * rt_keys_required is false. */
struct rt_key *rt_keys_anonymous(struct rt_keys *t);
/* The entry named name, or NULL (anonymous included). */
struct rt_key *rt_keys_find(struct rt_keys *t, const char *name);
/* The key's configured name (never its secret). */
const char *rt_key_name(const struct rt_key *k);

/* Takes one request from the key's token bucket (capacity rpm, refilled at rpm per minute;
 * rpm 0: unlimited). OK, or LIMIT with *retry_after_ms (>= 1) until one is available.
 * now_ns is monotonic (wye_now_ns, or a test clock). Thread-safe; O(1). */
enum wye_err rt_keys_rate_take(struct rt_key *k, int64_t now_ns, int64_t *retry_after_ms);

/* True when the key's routes include route ("local" or "remote"; anything else is false). */
bool rt_keys_route_allowed(const struct rt_key *k, const char *route);
/* The remote budget check at wall time now_ms: OK while today's and this month's remote spend
 * (UTC) are below their budgets, else USE_LOCAL or REFUSE_BUDGET by over_budget. */
enum rt_key_verdict rt_keys_remote_allowed(struct rt_key *k, int64_t now_ms);
/* The whole admission check for a request bound for route: REFUSE_ROUTE if not allowed,
 * OK for "local" (a local request never touches a remote budget), else remote_allowed. */
enum rt_key_verdict rt_keys_admit(struct rt_key *k, const char *route, int64_t now_ms);
/* Adds a finished remote request's cost to the key's spend for the UTC day and month of
 * now_ms (earlier days and months roll over to zero). Negative or NaN costs are ignored. */
void rt_keys_charge(struct rt_key *k, double cost_usd, int64_t now_ms);
/* Reads the key's remote spend in the UTC day and month of now_ms. */
void rt_keys_spend(struct rt_key *k, int64_t now_ms, double *day_usd, double *month_usd);

/* Sets every key's spend for the day and month of now_ms from the ledger files (chain order,
 * see rt_ledger_files). Records of names not configured are ignored. Call before serving. */
enum wye_err rt_keys_restore_spend(struct rt_keys *t, const char *const *files, size_t n_files,
                                   int64_t now_ms);

/* Test hook: how many configured hashes authentication has compared since creation. */
uint64_t rt_keys_compares(const struct rt_keys *t);

/* `wye keys new NAME [--rpm N] [--budget-day USD] [--budget-month USD] [--routes LIST]`. */
int rt_cli_keys(int argc, char **argv);

#endif
