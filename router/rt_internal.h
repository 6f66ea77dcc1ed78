/* Internal limits, and the upstream client's shared state: struct rt_upstream and one
 * transfer (struct up_xfer), used by upstream.c (the thread, queue, pool, deadlines) and
 * upstream_xfer.c (one HTTP exchange: curl callbacks, events, outcome). Upstream thread only,
 * except where a field says otherwise. */
#ifndef WYE_ROUTER_RT_INTERNAL_H
#define WYE_ROUTER_RT_INTERNAL_H

#include <curl/curl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"
#include "common/chat.h"
#include "common/queue.h"
#include "conf/conf.h"
#include "router/sse.h"

#define RT_SSE_EVENT_MAX ((size_t)256 << 10) /* one SSE event's data from the upstream */
#define RT_JSON_ANSWER_MAX ((size_t)4 << 20) /* a non-streamed upstream answer */
#define RT_ERR_BODY_MAX ((size_t)16 << 10)   /* kept of an HTTP error body */
#define RT_STASH_MAX ((size_t)1 << 20)       /* bytes held back while a sink is full */
#define RT_CANCEL_POLL_MS 50                 /* how often sinks are asked whether they cancelled */
#define RT_RETRY_AFTER_MAX_MS 10000          /* a longer Retry-After ends the request with 429 */
#define RT_MSG_MAX 320                       /* a finish message */
#define RT_BODY_KEEP_MAX ((size_t)64 << 10)  /* largest request-body buffer a transfer keeps */

enum xfer_state {
    XS_FREE,       /* in the pool */
    XS_RUNNING,    /* an attempt is in the multi handle */
    XS_RETRY_WAIT, /* between attempts */
    XS_DRAINING,   /* curl is done but bytes wait in the stash for the sink's credit */
};

struct up_http; /* a plain HTTP request (rt_upstream_http), upstream.c */

struct up_note {
    struct wye_qnode node;
    struct up_xfer *x;
    bool is_wake;
    struct up_http *http; /* non-NULL: a plain HTTP request (x is NULL) */
};

struct up_xfer {
    struct up_note job;       /* queued by submit */
    struct up_note wake;      /* queued by the sink's wakeup */
    atomic_bool wake_pending; /* wake is on the queue (never queue one node twice) */
    struct rt_upstream *up;
    struct up_xfer *next_free; /* guarded by up->pool_lock */
    struct up_xfer *next_all;  /* guarded by up->pool_lock */
    /* submit writes req and sink before queueing job; the rest is upstream thread only */
    struct wye_chat_req *req;
    bool req_borrowed; /* the submitter keeps req (the router may fall back with it) */
    struct wye_sink sink;
    struct up_xfer *next_live, *prev_live;
    enum xfer_state state;
    CURL *easy;
    bool bufs_ready;
    struct rt_sse sse;
    struct wye_buf raw;   /* an error body, or a non-streamed JSON answer */
    struct wye_buf stash; /* bytes taken from curl but not parsed while the sink is full */
    char *body;           /* what is POSTed: body_mem, or owned (cJSON_PrintUnformatted) */
    size_t body_len;
    char *body_mem; /* kept across requests: the body is printed here when it fits */
    size_t body_cap;
    char curl_err[CURL_ERROR_SIZE];
    int attempt;            /* 0 for the first */
    long status;            /* HTTP status of this attempt, 0 before the status line */
    int64_t retry_after_ms; /* Retry-After of this attempt, -1 if none */
    bool in_multi;
    bool got_byte;    /* this attempt received something (headers count) */
    bool started;     /* sink start() was called: no more retries */
    bool is_sse;      /* the 2xx body is an event stream (not application/json) */
    bool paused;      /* the sink said AGAIN: take nothing more from curl */
    bool curl_paused; /* we returned CURL_WRITEFUNC_PAUSE and have not resumed */
    bool done_seen;   /* data: [DONE] arrived */
    bool failed;      /* a callback decided the outcome (fail_*) */
    bool cancel;      /* the sink said CANCELED */
    CURLcode curl_res;
    int64_t t_begin_ns, t_attempt_ns, t_last_ns, t_retry_ns;
    size_t n_chunks; /* SSE events carrying JSON */
    size_t n_deltas; /* content and tool-call deltas emitted */
    size_t n_answer_bytes; /* bytes of content and tool calls emitted (a JSON answer's estimate) */
    bool has_usage;
    struct wye_usage usage;
    const char *finish_reason; /* static string */
    enum wye_err fail_err;
    int fail_status;
    char fail_msg[RT_MSG_MAX];
};

struct rt_upstream {
    const struct conf_upstream *cfg;
    char *url;
    struct curl_slist *headers;
    CURLM *multi;
    struct wye_queue q;
    pthread_t thread;
    bool thread_started;
    bool stopped;
    atomic_bool stopping;
    pthread_mutex_t pool_lock;
    struct up_xfer *free_list; /* guarded by pool_lock */
    struct up_xfer *all_list;  /* guarded by pool_lock */
    struct up_xfer *live;      /* upstream thread: picked up and not finished */
    struct up_http *http_live; /* upstream thread: plain HTTP requests in the multi handle */
    size_t n_http_live;        /* upstream thread */
    int64_t t_cancel_poll_ns;  /* upstream thread */
    bool no_proxy_env;         /* no proxy variable was set at create: curl need not look */
    atomic_uint_fast64_t n_requests, n_errors, n_retries, n_active;
};

/* ---- upstream.c ---- */

/* Unlinks a finished x from the live list and returns it to the pool. */
void rt_up_release(struct rt_upstream *up, struct up_xfer *x);
/* The wakeup registered once a transfer is over (a late wake must not reach a reused x). */
void rt_up_wake_noop(void *arg);

/* ---- upstream_xfer.c ---- */

/* Builds x->body from the request: the upstream's model, stream on, usage asked for. */
enum wye_err rt_xfer_build_body(struct up_xfer *x);
/* Starts (or restarts, for a retry) the HTTP attempt; finishes x if that is impossible. */
void rt_xfer_attempt_start(struct up_xfer *x);
/* Removes x's easy handle from the multi handle if it is there. */
void rt_xfer_detach(struct up_xfer *x);
/* The last word on x: tells the sink, releases the request and returns x to the pool. */
void rt_xfer_finish(struct up_xfer *x, enum wye_err err, int status, const char *msg);
/* Finishes x as cancelled. */
void rt_xfer_cancel(struct up_xfer *x, const char *msg);
/* Records the outcome decided inside a curl callback (the first reason wins). */
void rt_xfer_fail(struct up_xfer *x, enum wye_err err, int status, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* An attempt failed with nothing sent to the client: retry if allowed, else finish. */
void rt_xfer_retry_or_finish(struct up_xfer *x, bool retryable, enum wye_err err, int status,
                             const char *msg);
/* curl finished the attempt (x is detached) and every byte was parsed: decide the outcome. */
void rt_xfer_conclude(struct up_xfer *x);
/* The SSE callback: one event's JSON -> sink events. */
enum wye_err rt_xfer_on_event(void *arg, const struct rt_sse_event *ev);
/* curl's write and header callbacks (arg is the transfer). */
size_t rt_xfer_on_write(char *p, size_t size, size_t nmemb, void *arg);
size_t rt_xfer_on_header(char *p, size_t size, size_t nmemb, void *arg);

#endif
