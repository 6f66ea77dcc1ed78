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
};

struct conf_config {
    char *listen_host;       /* "127.0.0.1" */
    int listen_port;         /* 8080; 0: any free port */
    struct conf_upstream upstream;
    struct conf_engine engine;
    char *ledger_path;       /* JSON Lines ledger, or NULL */
    enum wye_log_level log_level;
    struct conf_limits limits;
    char *source_path;       /* the file it came from, or NULL for defaults only */
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
/* Frees the config; NULL is a no-op. */
void conf_destroy(struct conf_config *cfg);
/* Logs the effective configuration at info level (the API key only as "set"/"unset"). */
void conf_log_summary(const struct conf_config *cfg);

#endif
