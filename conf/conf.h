/* The configuration: conf/wye.lua (a Lua table) evaluated in a sandbox, validated into a
 * typed struct with defaults, then never changed (share it read-only across threads).
 * Precedence: defaults < file < environment (WYE_*) < command-line overrides. */
#ifndef WYE_CONF_CONF_H
#define WYE_CONF_CONF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/err.h"
#include "common/log.h"

struct conf_upstream {
    char *base_url;            /* OpenAI-compatible base URL ("https://api.openai.com/v1"), NULL: none */
    char *model;               /* sent upstream, listed in /v1/models; required with base_url */
    char *api_key;             /* secret (WYE_UPSTREAM_API_KEY or config); never logged */
    int connect_timeout_ms;    /* TCP+TLS connect */
    int first_byte_timeout_ms; /* request sent -> first response byte */
    int idle_timeout_ms;       /* longest gap between two chunks */
    int total_timeout_ms;      /* whole request */
    int max_retries;           /* retries before the first byte reached the client */
    int retry_backoff_ms;      /* first backoff; doubles each retry */
    int max_connections;       /* concurrent upstream connections */
    char *api_key_env;         /* variable the key is read from (upstream.api_key_env), or NULL */
};

struct conf_limits {
    size_t body_bytes_max;      /* HTTP request body */
    size_t ws_message_bytes_max; /* one WebSocket message */
    int json_depth_max;         /* JSON nesting */
    size_t n_msgs_max;          /* messages per chat request */
    int max_tokens_max;         /* largest max_tokens accepted */
    int streams_per_conn_max;   /* WebSocket requests in flight on one socket */
    int connections_max;        /* open client connections */
    size_t stream_buffer_bytes; /* per-stream queue high-water mark (backpressure) */
    int slow_client_timeout_ms; /* a client whose queue stays full this long is dropped */
    int ws_ping_interval_s;     /* WebSocket keep-alive ping period */
    int ws_idle_timeout_s;      /* close a WebSocket idle this long */
    int shutdown_grace_ms;      /* on SIGTERM: time for streams in flight to finish */
};

struct conf_engine {
    char *model_path;   /* GGUF file served locally, or NULL */
    char *model_name;   /* name in /v1/models (default: file name without .gguf) */
    int n_threads;      /* compute threads (0: number of cores) */
    int n_ctx;          /* context length (0: the model's) */
    int n_seq_max;      /* concurrent local sequences */
    bool kv_f16;      /* KV cache in F16 instead of F32 */
};

/* Routes a key may use (struct conf_api_key.routes bits). */
#define CONF_ROUTE_LOCAL 1u
#define CONF_ROUTE_REMOTE 2u

/* What happens to a remote-bound request of a key past its remote budget. */
enum conf_over_budget {
    CONF_OVER_BUDGET_LOCAL = 0, /* answer it locally instead (if the key may use "local") */
    CONF_OVER_BUDGET_REFUSE,    /* refuse it (429) */
};

#define CONF_API_KEYS_MAX 4096
#define CONF_PRICES_MAX 1024

/* One client API key (keys = { {...}, ... }). The secret itself is never in the config. */
struct conf_api_key {
    char *name;                        /* [A-Za-z0-9_.@-], 1..64 chars; unique */
    uint8_t sha256[32];                /* SHA-256 of the key; unique */
    int rpm;                           /* requests per minute; 0: unlimited */
    double budget_usd_day;             /* remote spend per UTC day; < 0: unlimited */
    double budget_usd_month;           /* remote spend per UTC month; < 0: unlimited */
    unsigned routes;                   /* CONF_ROUTE_* bits; never 0 */
    enum conf_over_budget over_budget; /* default LOCAL when "local" is allowed, else REFUSE */
};

struct conf_auth {
    bool required;    /* requests without a key are refused (else they run as "anonymous") */
    int required_set; /* -1: not written (derived: keys configured), 0/1: as written */
};

/* USD per million tokens. */
struct conf_price {
    char *model; /* NULL for default_remote */
    double input_per_1m;
    double output_per_1m;
};

struct conf_prices {
    struct conf_price *models;    /* (n_models) remote models by name */
    size_t n_models;
    struct conf_price default_remote; /* remote models not in the table; counterfactuals */
    double local_per_1m;              /* cost of local tokens (input and output) */
};

enum conf_fsync {
    CONF_FSYNC_NONE = 0, /* the kernel writes back when it likes */
    CONF_FSYNC_ALWAYS,   /* fdatasync after every record */
    CONF_FSYNC_INTERVAL, /* at most every fsync_interval_ms while dirty */
};

struct conf_ledger {
    enum conf_fsync fsync;
    int fsync_interval_ms; /* 1..3600000 */
    uint64_t rotate_bytes; /* 0: off */
    bool rotate_daily;
};

/* Routing policy; stored and validated here, used by router/. */
struct conf_router {
    double threshold;           /* score >= threshold goes remote; 0..1; < 0: not set, the
                                 * weights' own trained threshold (rt_policy_threshold) */
    char *weights_path;         /* weights JSON, NULL: built-in */
    char *hook;                 /* Lua source defining route(request, features, score), or NULL */
    char *hook_file;            /* file holding that source, or NULL (never both) */
    int hook_timeout_ms;        /* 1..10000 */
    int hook_memory_kb;         /* 64..1048576 */
    int queue_max;              /* local requests waiting for a sequence, 0..1000000; 0: none
                                 * (refused when every sequence is busy) */
    int breaker_failures;       /* 1..1000 */
    int breaker_cooldown_ms;    /* 100..3600000 */
    int latency_target_ms;      /* 0..600000: while the remote's EWMA time to first token is
                                 * above it, borderline "auto" requests go local; 0: off */
};

/* agents: the Lua agents runtime of wye serve / wye agent run. */
#define CONF_ALLOW_MAX 256       /* agents.allow_hosts entries */
#define CONF_ALLOW_HOSTS_MAX 64  /* hosts per entry */
struct conf_allow {
    char *name;  /* an agent or workflow name */
    char *hosts; /* its host patterns, comma-separated ("api.example.com,*.example.org") */
};
struct conf_agents {
    int n_workers;            /* worker threads; 0: WYE_AGENT_WORKERS, else 2 */
    struct conf_allow *allow; /* (n_allow) agents.allow_hosts, added to each script's own */
    size_t n_allow;
};

struct conf_config {
    char *listen_host;       /* "127.0.0.1" */
    int listen_port;         /* 8080; 0: any free port */
    struct conf_upstream upstream;
    struct conf_engine engine;
    char *ledger_path;       /* JSON Lines ledger; NULL: not set (wye serve and wye agent then
                              * use RT_LEDGER_DEFAULT_PATH, "wye-ledger.jsonl") */
    enum wye_log_level log_level;
    struct conf_limits limits;
    char *source_path;       /* the file it came from, or NULL for defaults only */
    struct conf_api_key *api_keys; /* (n_api_keys) */
    size_t n_api_keys;
    struct conf_auth auth;
    struct conf_prices prices;
    struct conf_ledger ledger; /* options besides ledger_path */
    struct conf_router router;
    struct conf_agents agents;
};

/* Command-line values that override the file and environment; NULL fields are unset. */
struct conf_overrides {
    const char *listen;         /* "ADDR:PORT" */
    const char *upstream;       /* base URL */
    const char *upstream_model;
    const char *model;          /* GGUF path */
    const char *ledger;
};

/* Loads path (NULL: defaults only), applies WYE_* variables and overrides (may be NULL), and
 * validates. On error writes a message naming the key into err and returns PARSE (Lua syntax
 * or runtime error), INVAL (unknown key, wrong type, out of range, bad WYE_* value), IO,
 * TOOBIG (the file or its Lua memory/instruction budget is too large) or NOMEM; *out is NULL.
 * Registers the API key with wye_log_add_secret. Does not change the global log level. */
enum wye_err conf_load(const char *path, const struct conf_overrides *ov,
                       struct conf_config **out, char *err, size_t errlen);
/* The price entry for a remote model: its own, else prices.default_remote. */
const struct conf_price *conf_price_for(const struct conf_config *cfg, const char *model);
/* Frees the config; NULL is a no-op. */
void conf_destroy(struct conf_config *cfg);
/* Logs the effective configuration at info level (the API key only as "set"/"unset"). */
void conf_log_summary(const struct conf_config *cfg);

#endif
