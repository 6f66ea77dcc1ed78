/* Internal types of the gateway, shared by its .c files. Thread ownership is noted on every
 * field: "lws" = the lws service thread only; "lock" = guarded by the named mutex; atomics
 * may be touched from any thread. */
#ifndef WYE_GATEWAY_GW_INTERNAL_H
#define WYE_GATEWAY_GW_INTERNAL_H

#include <libwebsockets.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "common/buf.h"
#include "common/chat.h"
#include "common/queue.h"
#include "conf/conf.h"
#include "gateway/gateway.h"

/* ---- metrics (gw_metrics.c) ---- */

enum gw_path {
    GW_PATH_CHAT,
    GW_PATH_MODELS,
    GW_PATH_HEALTHZ,
    GW_PATH_METRICS,
    GW_PATH_WS,
    GW_PATH_LEDGER, /* GET /v1/ledger/summary */
    GW_PATH_OTHER,
    GW_PATH__COUNT
};
#define GW_N_STATUS 13 /* 101 200 400 401 404 405 411 413 429 500 502 503 504; others: 500 */
#define GW_N_BUCKETS 12

struct gw_hist {
    _Atomic uint64_t bucket[GW_N_BUCKETS]; /* cumulative on output, per-bucket here */
    _Atomic uint64_t count;
    _Atomic uint64_t sum_us;
};

struct gw_metrics {
    _Atomic uint64_t requests[GW_PATH__COUNT][GW_N_STATUS];
    _Atomic uint64_t tokens_prompt;
    _Atomic uint64_t tokens_completion;
    struct gw_hist latency; /* request received -> answer finished */
    struct gw_hist ttft;    /* request received -> first delta */
    _Atomic int64_t open_connections;
    _Atomic int64_t open_streams;
    _Atomic uint64_t queued_peak;
    _Atomic uint64_t slow_dropped;
    _Atomic uint64_t requests_total;
};

void gw_metrics_count_request(struct gw_metrics *m, enum gw_path path, int status);
void gw_metrics_observe(struct gw_hist *h, int64_t ns);
/* Appends the Prometheus exposition of m to out. */
enum wye_err gw_metrics_render(struct gw_metrics *m, struct wye_buf *out);

/* ---- streams (gw_stream.c) ---- */

enum gw_kind { GW_KIND_JSON, GW_KIND_SSE, GW_KIND_WS };

/* One preformatted piece of output, with LWS_PRE bytes of headroom before the payload. */
struct gw_chunk {
    struct gw_chunk *next;
    size_t len;          /* payload bytes */
    size_t cap;          /* payload capacity */
    unsigned char mem[]; /* LWS_PRE + cap */
};
#define GW_CHUNK_DATA(c) ((c)->mem + LWS_PRE)

struct gw_server;
struct gw_ws_conn;

struct gw_tool_acc; /* stream:false tool-call assembly (gw_format.c) */

/* DESIGN: the one object crossing threads. The lws side holds one reference (dropped when
 * the answer is written or the connection closes), the producer one (dropped by finish), the
 * ready list one while the stream sits on it. */
struct gw_stream {
    atomic_int refs;
    struct gw_server *srv;         /* immutable */
    enum gw_kind kind;             /* immutable */
    char reqid[WYE_REQID_LEN + 1]; /* immutable */
    char *client_id;               /* immutable; WS: the client's id */
    bool include_usage;            /* immutable */
    int64_t created_s;             /* immutable; unix seconds */
    int64_t t0_ns;                 /* immutable; request received */

    pthread_mutex_t lock;
    struct gw_chunk *head, *tail; /* lock: output waiting for the lws thread */
    struct gw_chunk *free_list;   /* lock: spare chunks */
    size_t n_free;                /* lock */
    size_t queued;                /* lock: payload bytes in head..tail */
    bool over;                    /* lock: emit said AGAIN and credit has not returned */
    int64_t full_since_ns;        /* lock: when over became true */
    bool finished;                /* lock: finish() queued the last chunk */
    int status;                   /* lock: HTTP status (200 unless failed before data) */
    bool started;                 /* lock: start() was called */
    char route[16];               /* lock */
    char model[128];              /* lock: the client's model until start() names one */
    double score;                 /* lock: < 0 when unknown */
    char reasons[512];            /* lock: the router's reasons (JSON array text), "" if none */
    void (*wake)(void *arg);      /* lock: the producer's wakeup; called with lock held */
    void *wake_arg;               /* lock */

    atomic_bool cancelled;        /* set by the lws thread (close, cancel, slow client) */
    struct gw_stream *ready_next; /* srv->ready_lock */
    struct gw_stream *svc_next; /* lws thread: service_ready's copy of the list order */
    bool in_ready;                /* srv->ready_lock */

    /* producer thread only (start..finish) */
    size_t n_events; /* deltas emitted */
    bool ttft_done;
    int64_t ttft_ns;
    struct wye_usage usage;
    bool have_usage;
    struct wye_buf fmt;        /* scratch for formatting one event */
    struct wye_buf prefix;     /* the stream's constant event prefix (gw_format.c) */
    struct wye_buf text;       /* JSON mode: the whole answer text */
    struct gw_tool_acc *tools; /* JSON mode: assembled tool calls */

    /* lws thread only */
    struct lws *wsi;                       /* NULL once the connection is gone */
    struct gw_ws_conn *conn;               /* WS: the owning connection */
    struct gw_stream *conn_next;           /* WS: the connection's list */
    struct gw_stream *all_prev, *all_next; /* srv->streams */
    bool lws_done;                         /* the lws side let go */
    bool killed;                           /* dropped as a slow client */
};

/* Creates a stream with two references (lws side, producer). NULL on allocation failure. */
struct gw_stream *gw_stream_create(struct gw_server *srv, enum gw_kind kind,
                                   const struct wye_chat_req *req);
void gw_stream_ref(struct gw_stream *s);
void gw_stream_unref(struct gw_stream *s);
/* The sink for the producer. */
struct wye_sink gw_stream_sink(struct gw_stream *s);
/* Appends a preformatted payload (any thread); force ignores the high-water mark. Returns OK,
 * AGAIN (accepted, now over the mark) or NOMEM. Makes the stream ready when it was empty. */
enum wye_err gw_stream_push(struct gw_stream *s, const void *p, size_t n);
/* Like push; final also marks the stream finished (drops the producer's wakeup) and sets the
 * HTTP status when status != 0, in the same critical section as the last chunk. */
enum wye_err gw_stream_push_ex(struct gw_stream *s, const void *p, size_t n, bool final,
                               int status);
/* lws thread: cancels the producer (sets cancelled, calls its wakeup). */
void gw_stream_cancel(struct gw_stream *s);
/* lws thread: pops the first chunk (NULL if none); *last says the stream has finished and
 * nothing else is queued. Hands credit back to the producer below the low-water mark. */
struct gw_chunk *gw_stream_pop(struct gw_stream *s, bool *last);
/* lws thread: like pop, but takes as many queued chunks as fit in max payload bytes (at
 * least one) in one critical section, as a NULL-terminated list. */
struct gw_chunk *gw_stream_pop_upto(struct gw_stream *s, size_t max, bool *last);
/* lws thread: returns a popped chunk to the stream's free list (or frees it). */
void gw_stream_recycle(struct gw_stream *s, struct gw_chunk *c);
/* lws thread: recycle for a list of popped chunks, in one critical section. */
void gw_stream_recycle_list(struct gw_stream *s, struct gw_chunk *list);
/* lws thread: true if output is waiting. */
bool gw_stream_has_output(struct gw_stream *s);
/* lws thread: the lws side lets go (connection closed or answer written): clears wsi,
 * cancels the producer if it is still running, unlinks, drops the lws reference. */
void gw_stream_release(struct gw_stream *s);
/* lws thread: drops every queued chunk (used when submit refused the request). */
void gw_stream_clear(struct gw_stream *s);
/* Frees the server's spare chunks (gw_server_destroy, once no stream is left). */
void gw_chunk_pool_cleanup(struct gw_server *srv);

/* ---- formatting (gw_format.c); producer or lws thread ---- */

/* OpenAI error JSON {"error":{"message","type","param","code"}}. */
enum wye_err gw_fmt_error_json(struct wye_buf *b, int status, const char *code, const char *msg);
/* The error "type" for an HTTP status. */
const char *gw_status_error_type(int status);
/* Maps a backend/parse error to an HTTP status. */
int gw_err_status(enum wye_err err);
/* Formats and queues one event for the stream's kind. */
enum wye_err gw_fmt_event(struct gw_stream *s, const struct wye_event *ev);
/* Formats and queues the end of the answer (gw_stream_push_ex with final). */
void gw_fmt_finish(struct gw_stream *s, const struct wye_result *res);
void gw_tool_acc_destroy(struct gw_tool_acc *t);
/* True when the JSON text nests brackets deeper than limit (strings skipped). A guard run
 * before cJSON, which recurses once per level. */
bool gw_json_too_deep(const char *p, size_t n, int limit);
/* Parses p[0..n) as one JSON value followed by nothing but JSON whitespace (cJSON alone stops
 * after the first value and ignores what follows: '{"a":1} junk'). NULL when malformed, with
 * *pos the offset of the first byte that is not part of a well-formed text. */
struct cJSON *gw_json_parse(const char *p, size_t n, size_t *pos);
/* The chat request of a WebSocket response.create event root: its "response" object (detached
 * from root), or a copy of the event less "type", "id" and "response". INVAL when "response"
 * is there but not an object; NOMEM. */
enum wye_err gw_ws_create_body(struct cJSON *root, struct cJSON **body);
/* WS: {"type":"error","id":...,"error":{...}} into b; status picks the error type. id may be
 * NULL. */
enum wye_err gw_fmt_ws_error(struct wye_buf *b, int status, const char *id, const char *code,
                             const char *msg);

/* ---- the server (gw_server.c) ---- */

struct gw_server {
    const struct conf_config *cfg;
    struct gw_backend_ops ops;
    void *ops_ctx;
    struct lws_context *ctx;
    struct lws_vhost *vhost;
    int port;
    char listen_addr[64]; /* the numeric address bound (from cfg->listen_host) */
    pthread_t thread;
    bool thread_started;
    bool shut_down;

    pthread_mutex_t ready_lock;
    struct gw_stream *ready; /* ready_lock: streams with new output */
    /* Held around lws_cancel_service and while clearing ctx_alive, so no producer pokes a
     * destroyed context. Not ready_lock: a producer holding the lock the lws thread needs
     * next, while the poke wakes that thread, would put it straight back to sleep. */
    pthread_mutex_t poke_lock;
    bool ctx_alive; /* poke_lock: lws_cancel_service may be called */

    /* spare standard-size chunks (gw_stream.c): streams take a few when they start and give
     * theirs back when freed, so chunks are not malloc'd on the producer's thread and freed
     * on the lws thread for every event */
    pthread_mutex_t pool_lock;
    struct gw_chunk *pool; /* pool_lock */
    size_t n_pool;         /* pool_lock */

    atomic_bool draining;           /* refuse new requests */
    atomic_bool cancel_all;         /* cancel every stream in flight */
    atomic_bool stop;               /* leave the service loop */
    _Atomic int64_t n_live_streams; /* streams not yet freed */

    struct gw_metrics metrics;
    struct rt_keys *keys; /* borrowed; set before start; NULL: no key table */
    struct gw_agents *agents; /* borrowed; set before start; NULL: no agents */

    /* GET /v1/ledger/summary jobs for the summary worker (gw_http.c), which reads the
     * ledger off the lws thread and answers through the job's stream */
    struct wye_worker summary; /* started and stopped by the owner's thread */

    /* lws thread only */
    lws_sorted_usec_list_t sul_tick;
    int tick_ms;
    struct gw_stream *streams; /* every stream the lws side holds */
    struct gw_ws_conn *conns;  /* every open WebSocket */
    struct wye_buf wbuf;       /* coalescing buffer: LWS_PRE headroom + payload */
    int conn_marker;           /* its address tags accepted connections */
    lws_retry_bo_t retry;      /* WebSocket ping / hangup policy */
};

/* Any thread: puts s on the ready list and wakes the lws thread if the list was empty. */
void gw_server_ready(struct gw_server *srv, struct gw_stream *s);
/* lws thread: links/unlinks a stream on srv->streams. */
void gw_server_track(struct gw_server *srv, struct gw_stream *s);
void gw_server_untrack(struct gw_server *srv, struct gw_stream *s);
/* lws thread: the limits the chat parser applies. */
void gw_server_chat_limits(const struct gw_server *srv, struct wye_chat_limits *lim);

#define GW_AGENT_NAME_MAX 128

/* ---- per-connection state (the protocol's pss) ---- */

enum gw_pss_kind { GW_PSS_NONE = 0, GW_PSS_HTTP, GW_PSS_WS };

struct gw_pss {
    enum gw_pss_kind kind;
    /* HTTP (one transaction; lws zeroes it per transaction) */
    enum gw_path path;
    bool is_chat;
    bool body_done;   /* BODY_COMPLETION was handled (lws 4.1 may repeat it) */
    bool responded;   /* a static response was decided */
    bool close_after; /* the request body was not read fully: close after the answer */
    bool head_only;   /* HEAD: headers without the body */
    bool h1;          /* HTTP/1.x (not an HTTP/2 stream) */
    bool keep_alive;  /* HTTP/1.1 without "Connection: close": streamed answers go chunked */
    bool chunked;     /* this answer's body is framed as HTTP/1.1 chunks */
    int phase;        /* static response: 1 headers due, 2 body due */
    int status;
    const char *ctype;
    struct wye_buf body; /* the request body (capped) */
    struct wye_buf resp; /* static response body */
    char reqid[WYE_REQID_LEN + 1];
    int64_t t0_ns;
    struct gw_stream *stream; /* streamed answer */
    bool headers_sent;
    int retry_after_s;         /* > 0: send Retry-After (429) */
    struct rt_key *key;        /* the authenticated key (borrowed from srv->keys), or NULL */
    /* WS: the Sec-WebSocket-Protocol key checked at the upgrade (before ESTABLISHED) */
    int ws_auth;               /* enum gw_auth_status */
    char agent[GW_AGENT_NAME_MAX]; /* POST /v1/agents/{name}/runs: the name, else "" */
    /* WS */
    struct gw_ws_conn *ws;
};

/* ---- authentication (gw_http.c, lws thread) ---- */

struct rt_key;

enum gw_auth_status {
    GW_AUTH_NONE = 0,   /* nothing presented yet */
    GW_AUTH_OK,         /* *key is set */
    GW_AUTH_MISSING,    /* required and not presented */
    GW_AUTH_INVALID,    /* presented and wrong */
    GW_AUTH_UNWIRED,    /* auth.required but the server has no key table */
};

/* Checks a presented key (key NULL: none presented). OK: *out is the key (the anonymous
 * entry, or NULL without a table, when auth is optional and nothing was presented). */
enum gw_auth_status gw_auth_check(struct gw_server *srv, const char *key, size_t len,
                                  struct rt_key **out);
/* Takes one request from the key's rate limit; false with *retry_after_s when over it. */
bool gw_auth_rate(struct rt_key *key, int *retry_after_s);
/* The name for req->key_name (a copy), or NULL; sets *nomem on allocation failure. */
char *gw_auth_name(const struct rt_key *key, bool *nomem);

/* gw_http.c: the ledger summary worker, started and stopped with the server (owner's
 * thread). Stop answers what is still queued (cancelled streams get no work) and joins. */
enum wye_err gw_summary_start(struct gw_server *srv);
void gw_summary_stop(struct gw_server *srv);

/* gw_http.c (lws thread) */
int gw_http_callback(struct gw_server *srv, struct lws *wsi, enum lws_callback_reasons reason,
                     struct gw_pss *pss, void *in, size_t len);
void gw_http_cleanup(struct gw_server *srv, struct gw_pss *pss);

/* gw_ws.c (lws thread) */
struct gw_ws_conn {
    struct gw_server *srv;
    struct lws *wsi;
    struct gw_ws_conn *prev, *next; /* srv->conns */
    struct wye_buf rx;              /* message reassembly, capped */
    bool rx_discard;                /* dropping the rest of a refused message */
    struct gw_stream *streams;      /* in flight on this socket */
    int n_streams;
    struct gw_stream *rr;                 /* round-robin cursor */
    struct gw_chunk *ctl_head, *ctl_tail; /* connection-level events (errors) */
    int n_ctl;
    bool closing; /* close after the control queue drains */
    enum lws_close_status close_status;
    char close_reason[64];
    int64_t last_activity_ns;
    struct rt_key *key; /* the authenticated key, or NULL */
    bool authed;        /* requests may be created */
    int auth_failures;  /* refused auth attempts and unauthenticated events */
};

int gw_ws_callback(struct gw_server *srv, struct lws *wsi, enum lws_callback_reasons reason,
                   struct gw_pss *pss, void *in, size_t len);
/* Timer: idle timeout. */
void gw_ws_tick(struct gw_server *srv, int64_t now_ns);
/* Kills a connection (slow reader): cancels its streams. */
void gw_ws_kill(struct gw_ws_conn *c, const char *why);

/* ---- agents (gw_agents.c) ---- */

/* lws thread: starts agent or workflow `name` with input, feeding s (whose producer reference
 * the run takes over on OK). NOTFOUND: no such agent (or agents are off); errbuf says why and
 * the caller still holds the producer reference. */
enum wye_err gw_agents_start(struct gw_server *srv, struct gw_stream *s, const char *name,
                             const char *input, char *errbuf, size_t errlen);
/* True if path is /v1/agents/{name}/runs; copies the name (cap bytes with the NUL). */
bool gw_agents_path(const char *path, char *name, size_t cap);
/* lws thread: the body of POST /v1/agents/{pss->agent}/runs is complete: answer it. */
void gw_agents_http(struct lws *wsi, struct gw_server *srv, struct gw_pss *pss);

#endif
