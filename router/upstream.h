/* The remote backend: one thread owning a libcurl multi handle that streams chat completions
 * from an OpenAI-compatible API into sinks, and runs plain HTTP requests for others (agents'
 * wye.http.request) on the same handle. Jobs and sink wakeups reach that thread through a
 * queue plus curl_multi_wakeup(). */
#ifndef WYE_ROUTER_UPSTREAM_H
#define WYE_ROUTER_UPSTREAM_H

#include <stddef.h>

#include "common/chat.h"
#include "common/err.h"
#include "conf/conf.h"
#include "router/router.h"

struct rt_upstream;

/* Creates the client for cfg (borrowed; must outlive it). cfg->base_url NULL: a client for
 * plain HTTP requests only (chat submits are refused with INVAL). NULL on allocation or curl
 * failure. curl_global_init must have run. */
struct rt_upstream *rt_upstream_create(const struct conf_upstream *cfg);
/* Starts the upstream thread. */
enum wye_err rt_upstream_start(struct rt_upstream *up);
/* Cancels every transfer (finish with CANCELED) and joins the thread. Idempotent. */
void rt_upstream_stop(struct rt_upstream *up);
/* Stops, then frees. NULL is a no-op. */
void rt_upstream_destroy(struct rt_upstream *up);
/* Queues req (takes ownership, freed on refusal too) for the upstream; never blocks on the
 * network. OK: sink->finish is called exactly once, later, from the upstream thread. CANCELED
 * when stopping, NOMEM. The model sent upstream is cfg->model (the router checked the name). */
enum wye_err rt_upstream_submit(struct rt_upstream *up, struct wye_chat_req *req,
                                struct wye_sink sink, char *errbuf, size_t errlen);
/* Same, but req is only borrowed: the caller frees it after sink->finish (or on refusal).
 * The router keeps it to fall back to the local model when the upstream fails early. */
enum wye_err rt_upstream_submit_borrowed(struct rt_upstream *up, struct wye_chat_req *req,
                                         struct wye_sink sink, char *errbuf, size_t errlen);
/* ---- plain HTTP requests ---- */

struct rt_http_req {
    const char *method;         /* NULL: "GET" */
    const char *url;            /* http(s); redirects are not followed */
    const char *const *headers; /* "Name: value" lines, n_headers of them */
    size_t n_headers;
    const char *body; /* may be NULL */
    size_t body_len;
    int timeout_ms;   /* the whole exchange; <= 0: 30 s */
    size_t max_bytes; /* response body cap (larger: TOOBIG); 0: 1 MiB */
};

struct rt_http_result {
    enum wye_err err;    /* OK for any HTTP status; TOOBIG, TIMEOUT, IO, CANCELED, AGAIN, NOMEM */
    const char *message; /* with err: "the response is larger than N bytes", curl's reason .. */
    long status;         /* 0 before a status line */
    const char *body;    /* never NULL, NUL-terminated, borrowed for the call */
    size_t body_len;
};

struct rt_http_ops {
    /* The answer: exactly once, on the upstream thread. */
    void (*done)(void *arg, const struct rt_http_result *res);
    /* Polled on the upstream thread every RT_CANCEL_POLL_MS (50 ms) while the request runs;
     * true aborts it (the connection is closed; done gets CANCELED). May be NULL. */
    bool (*cancelled)(void *arg);
};

/* Queues a plain HTTP request (req is copied; ops borrowed until done) on the upstream thread;
 * never blocks on the network. OK: ops->done is called exactly once, later. CANCELED when
 * stopping, NOMEM (errbuf says why; done is not called). Any thread. */
enum wye_err rt_upstream_http(struct rt_upstream *up, const struct rt_http_req *req,
                              const struct rt_http_ops *ops, void *arg, char *errbuf,
                              size_t errlen);

/* Adds the upstream counters into out. Any thread. */
void rt_upstream_stats(struct rt_upstream *up, struct rt_stats *out);

#endif
