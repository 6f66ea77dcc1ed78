/* The chat request every front end (HTTP, WebSocket, agents) hands to the router, and the
 * sink through which a producer (engine worker, upstream thread, agent) streams the answer
 * back. Producers never see libwebsockets: the gateway gives them a sink; tests give them a
 * fake one. */
#ifndef WYE_COMMON_CHAT_H
#define WYE_COMMON_CHAT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/crypto.h"
#include "common/err.h"

struct cJSON;

enum wye_role { WYE_ROLE_SYSTEM, WYE_ROLE_USER, WYE_ROLE_ASSISTANT, WYE_ROLE_TOOL };

struct wye_chat_msg {
    enum wye_role role;
    char *content; /* UTF-8, never NULL ("" when the message had none) */
};

/* Limits applied while parsing a request. */
struct wye_chat_limits {
    int depth_max;       /* JSON nesting */
    size_t n_msgs_max;   /* messages per request */
    int max_tokens_max;  /* largest max_tokens accepted */
};

struct wye_chat_req {
    char id[WYE_REQID_LEN + 1]; /* wye's request id (logs, ledger, x-request-id) */
    char *client_id;            /* the client's own id (WebSocket), or NULL */
    char *model;                /* "auto", a local or a remote model name */
    struct wye_chat_msg *msgs;  /* (n_msgs) */
    size_t n_msgs;
    int max_tokens;             /* 0: the backend's default */
    double temperature;         /* < 0: unset */
    double top_p;               /* < 0: unset */
    bool has_seed;
    int64_t seed;
    char **stop;                /* (n_stop) stop strings */
    size_t n_stop;
    bool stream;                /* SSE for HTTP; WebSocket always streams */
    bool include_usage;         /* stream_options.include_usage */
    bool has_tools;             /* tools / tool_choice present */
    bool has_response_format;   /* response_format present */
    struct cJSON *body;         /* the client's JSON body, forwarded upstream; owned, may be NULL */
    char *key_name;             /* authenticated API key's name, or NULL */
    int64_t t_received_ns;      /* wye_now_ns() when the request arrived */
    char *agent;                /* the agent or workflow making this call (agents/), or NULL */
    uint64_t agent_run_id;      /* its run id; 0 when not from an agent */
};

/* Builds a request from an OpenAI-style body (messages, model, max_tokens, temperature,
 * top_p, seed, stop, stream, stream_options, tools, tool_choice, response_format).
 * Takes ownership of body (freed on error too). On error writes a message naming the bad
 * field into errbuf and returns PARSE/INVAL/TOOBIG/NOMEM. */
enum wye_err wye_chat_req_from_json(struct cJSON *body, const struct wye_chat_limits *lim,
                                    struct wye_chat_req **out, char *errbuf, size_t errlen);
/* Frees the request and everything it owns; NULL is a no-op. */
void wye_chat_req_destroy(struct wye_chat_req *req);
/* Returns the role's OpenAI name ("system", "user", ...). */
const char *wye_role_name(enum wye_role role);

/* ---- the producer -> consumer contract ---- */

struct wye_usage {
    int64_t prompt_tokens;
    int64_t completion_tokens;
    bool estimated; /* true when counted by wye rather than reported by the backend */
};

enum wye_ev_type {
    WYE_EV_DELTA,      /* data: a piece of the answer text; never splits a UTF-8 character */
    WYE_EV_TOOL_DELTA, /* data: the backend's "tool_calls" delta array as JSON text, verbatim */
    WYE_EV_USAGE,      /* usage: token counts (may come several times; the last one wins) */
};

struct wye_event {
    enum wye_ev_type type;
    const char *data; /* borrowed for the call */
    size_t len;
    struct wye_usage usage;
};

/* What the producer committed to, told once before the first event. */
struct wye_start {
    const char *route;   /* "local" or "remote" */
    const char *model;   /* the model that answers */
    double score;        /* complexity score in [0,1], or < 0 when not scored */
    const char *reasons; /* JSON array text of the top features, or NULL */
};

struct wye_result {
    enum wye_err err;          /* OK, or why the answer ended */
    int http_status;           /* with err: the status for an answer not yet started */
    const char *message;       /* with err: a client-safe message naming the problem */
    const char *finish_reason; /* "stop", "length", "tool_calls", "cancelled", "error" */
    struct wye_usage usage;
};

struct wye_sink_ops {
    /* Called once, before the first emit (after retries and fallbacks are over). */
    void (*start)(void *ctx, const struct wye_start *info);
    /* Queues an event. OK: accepted. AGAIN: accepted, but the consumer is over its high-water
     * mark: produce nothing more until wake. CANCELED: the consumer is gone; stop. */
    enum wye_err (*emit)(void *ctx, const struct wye_event *ev);
    /* The last call: the answer is over (or failed); releases the producer's reference. */
    void (*finish)(void *ctx, const struct wye_result *res);
    /* True once the client cancelled or disconnected. Any thread. */
    bool (*cancelled)(void *ctx);
    /* Registers wake(arg), which the consumer calls from its own thread, without blocking,
     * when credit returns after AGAIN or when the stream is cancelled. The consumer may hold
     * its stream lock while calling wake, so wake must not call back into the sink: it only
     * records the note and wakes the producer's thread. */
    void (*set_wakeup)(void *ctx, void (*wake)(void *arg), void *arg);
};

struct wye_sink {
    const struct wye_sink_ops *ops;
    void *ctx;
};

#endif
