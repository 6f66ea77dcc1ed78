/* The upstream client: streams chat completions from an OpenAI-compatible API into sinks.
 *
 * DESIGN. One thread owns the CURLM, every easy handle and every transfer's state, and loops
 * on curl_multi_poll. Other threads only push notes on a queue and call curl_multi_wakeup():
 * rt_upstream_submit (a new job) and the sink's wakeup (credit returned, or cancelled). Each
 * transfer object (struct up_xfer) is pooled with its easy handle, SSE buffer, stash and body
 * buffer (each chunk is read with cJSON, rt_chunk_parse, into this thread's cJSON arena, so
 * a chunk costs no malloc per JSON node). Transfers are never freed before the thread is
 * joined, so a late wakeup only ever touches pooled memory.
 * libcurl 7.88 makes two poll(fd, 0) calls per request that no option turns off: the
 * liveness check of the cached connection it reuses (once per reuse, not per idle connection)
 * and, under curl_multi_perform, the readiness check before reading a transfer's socket.
 * Deadlines libcurl does not know (first byte, idle between chunks, retry backoff) are checked
 * in the loop, which never sleeps longer than RT_CANCEL_POLL_MS while a transfer is live.
 * Retries happen only before the sink's start(), i.e. before anything reached the client.
 * Plain HTTP requests (rt_upstream_http, for agents' wye.http.request) run on the same multi
 * handle: one object per request, its body capped, its cancellation polled like a sink's.
 * Threads: the upstream thread, except submit / the wake callback (caller's thread) and
 * create/stop/destroy (the owner's thread, while the upstream thread is not running).
 * One HTTP exchange (callbacks, events, outcome) lives in upstream_xfer.c. */
#include "router/upstream.h"

#include <curl/curl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "common/clock.h"
#include "common/log.h"
#include "common/queue.h"
#include "router/rt_internal.h"
#include "router/sse.h"

/* The upstream thread's cJSON arena: a chunk's tree is ~1-2 KB; a bigger one spills to malloc. */
#define RT_CHUNK_ARENA_BYTES ((size_t)64 << 10)

/* ---- pool ---- */

static struct up_xfer *pool_get(struct rt_upstream *up)
{
    pthread_mutex_lock(&up->pool_lock);
    struct up_xfer *x = up->free_list;
    if (x) {
        up->free_list = x->next_free;
    }
    pthread_mutex_unlock(&up->pool_lock);
    if (x) {
        return x;
    }
    x = wye_calloc(1, sizeof(*x));
    if (!x) {
        return NULL;
    }
    x->up = up;
    x->job.x = x;
    x->wake.x = x;
    x->wake.is_wake = true;
    atomic_init(&x->wake_pending, false);
    pthread_mutex_lock(&up->pool_lock);
    x->next_all = up->all_list;
    up->all_list = x;
    pthread_mutex_unlock(&up->pool_lock);
    return x;
}

static void pool_put(struct rt_upstream *up, struct up_xfer *x)
{
    pthread_mutex_lock(&up->pool_lock);
    x->next_free = up->free_list;
    up->free_list = x;
    pthread_mutex_unlock(&up->pool_lock);
}

static void live_unlink(struct rt_upstream *up, struct up_xfer *x)
{
    if (x->prev_live) {
        x->prev_live->next_live = x->next_live;
    } else {
        up->live = x->next_live;
    }
    if (x->next_live) {
        x->next_live->prev_live = x->prev_live;
    }
    x->next_live = x->prev_live = NULL;
}

void rt_up_release(struct rt_upstream *up, struct up_xfer *x)
{
    live_unlink(up, x);
    x->state = XS_FREE;
    pool_put(up, x);
}

/* ---- the sink's wakeup: gateway's thread, must not block ---- */

void rt_up_wake_noop(void *arg)
{
    (void)arg;
}

static void xfer_wake_cb(void *arg)
{
    struct up_xfer *x = arg;
    if (atomic_exchange(&x->wake_pending, true)) {
        return; /* already queued; the upstream thread will look at the sink anyway */
    }
    bool was_empty = false;
    if (wye_queue_push(&x->up->q, &x->wake.node, &was_empty) != WYE_OK) {
        atomic_store(&x->wake_pending, false); /* stopping: everything gets cancelled */
        return;
    }
    if (was_empty) {
        curl_multi_wakeup(x->up->multi);
    }
}

/* True when a variable curl reads for a proxy is set (curl looks for them on every transfer;
 * without one wye tells it there is no proxy, which skips those lookups). */
static bool proxy_env_set(void)
{
    static const char *const names[] = {"http_proxy",  "HTTP_PROXY", "https_proxy",
                                        "HTTPS_PROXY", "all_proxy",  "ALL_PROXY"};
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        const char *v = getenv(names[i]); /* NOLINT(concurrency-mt-unsafe): nobody sets env */
        if (v && v[0]) {
            return true;
        }
    }
    return false;
}

static void set_no_proxy(const struct rt_upstream *up, CURL *e)
{
    if (up->no_proxy_env) {
        curl_easy_setopt(e, CURLOPT_PROXY, "");
        curl_easy_setopt(e, CURLOPT_NOPROXY, "");
    }
}

static enum wye_err xfer_prepare(struct up_xfer *x)
{
    struct rt_upstream *up = x->up;
    if (!x->bufs_ready) {
        enum wye_err err = rt_sse_init(&x->sse, RT_SSE_EVENT_MAX);
        if (err) {
            return err;
        }
        wye_buf_init(&x->raw, RT_JSON_ANSWER_MAX);
        wye_buf_init(&x->stash, RT_STASH_MAX);
        x->bufs_ready = true;
    }
    if (!x->easy) {
        CURL *e = curl_easy_init();
        if (!e) {
            return WYE_ERR_NOMEM;
        }
        curl_easy_setopt(e, CURLOPT_URL, up->url);
        curl_easy_setopt(e, CURLOPT_HTTPHEADER, up->headers);
        curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, rt_xfer_on_write);
        curl_easy_setopt(e, CURLOPT_WRITEDATA, x);
        curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, rt_xfer_on_header);
        curl_easy_setopt(e, CURLOPT_HEADERDATA, x);
        curl_easy_setopt(e, CURLOPT_PRIVATE, x);
        curl_easy_setopt(e, CURLOPT_ERRORBUFFER, x->curl_err);
        curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
        curl_easy_setopt(e, CURLOPT_TCP_NODELAY, 1L);
        curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
        curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
        curl_easy_setopt(e, CURLOPT_USERAGENT, "wye/" WYE_VERSION);
        set_no_proxy(up, e);
        if (up->cfg->connect_timeout_ms > 0) {
            curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, (long)up->cfg->connect_timeout_ms);
        }
        x->easy = e;
    }
    return WYE_OK;
}

/* A submitted job reached the upstream thread. */
static void xfer_begin(struct up_xfer *x)
{
    struct rt_upstream *up = x->up;
    x->state = XS_RUNNING;
    x->next_live = up->live;
    x->prev_live = NULL;
    if (up->live) {
        up->live->prev_live = x;
    }
    up->live = x;
    atomic_fetch_add(&up->n_active, 1);
    x->attempt = 0;
    x->started = false;
    x->cancel = false;
    x->paused = false;
    x->curl_paused = false;
    x->n_chunks = 0;
    x->n_deltas = 0;
    x->n_answer_bytes = 0;
    x->has_usage = false;
    x->finish_reason = NULL;
    x->t_begin_ns = wye_now_ns();
    if (atomic_load(&up->stopping)) {
        rt_xfer_cancel(x, "the gateway is shutting down");
        return;
    }
    enum wye_err err = xfer_prepare(x);
    if (!err) {
        err = rt_xfer_build_body(x);
    }
    if (err) {
        rt_xfer_finish(x, err, 500, "out of memory while preparing the upstream request");
        return;
    }
    curl_easy_setopt(x->easy, CURLOPT_POSTFIELDS, x->body);
    curl_easy_setopt(x->easy, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)x->body_len);
    x->sink.ops->set_wakeup(x->sink.ctx, xfer_wake_cb, x);
    if (x->sink.ops->cancelled(x->sink.ctx)) {
        rt_xfer_cancel(x, "the request was cancelled");
        return;
    }
    rt_xfer_attempt_start(x);
}

/* Credit returned: parse what was held back, then let curl deliver again. */
static void xfer_resume(struct up_xfer *x)
{
    size_t used = 0;
    enum wye_err err = rt_sse_feed(&x->sse, x->stash.data ? x->stash.data : "", x->stash.len, &used,
                                   rt_xfer_on_event, x);
    wye_buf_consume(&x->stash, used);
    if (err == WYE_ERR_AGAIN) {
        return; /* full again after a chunk from the stash; wait for the next wake */
    }
    if (err) {
        if (err == WYE_ERR_TOOBIG) {
            rt_xfer_fail(x, WYE_ERR_UPSTREAM, 502,
                         "upstream sent an SSE event larger than %zu "
                         "bytes",
                         (size_t)RT_SSE_EVENT_MAX);
        }
        rt_xfer_detach(x);
        rt_xfer_conclude(x);
        return;
    }
    x->paused = false;
    x->t_last_ns = wye_now_ns();
    if (x->state == XS_DRAINING) {
        rt_xfer_conclude(x);
        return;
    }
    if (x->curl_paused) {
        x->curl_paused = false;
        /* may run on_write at once with the bytes curl kept */
        curl_easy_pause(x->easy, CURLPAUSE_CONT);
        if (x->failed || x->cancel) {
            rt_xfer_detach(x);
            rt_xfer_conclude(x);
        }
    }
}

static void xfer_on_wake(struct up_xfer *x)
{
    if (x->state == XS_FREE) {
        return; /* a late wakeup for a finished request */
    }
    if (x->sink.ops->cancelled(x->sink.ctx)) {
        rt_xfer_cancel(x, "the request was cancelled");
        return;
    }
    if (x->paused) {
        xfer_resume(x);
    }
}

/* ---- plain HTTP requests (upstream thread, except rt_upstream_http) ---- */

#define RT_HTTP_LIVE_MAX 256
#define RT_HTTP_MAX_BYTES_DEFAULT ((size_t)1 << 20)

struct up_http {
    struct up_note note;
    struct up_http *next, *prev; /* up->http_live */
    struct rt_upstream *up;
    const struct rt_http_ops *ops;
    void *arg;
    CURL *easy;
    struct curl_slist *headers;
    char *url, *method, *body;
    size_t body_len, max_bytes;
    int timeout_ms;
    bool in_multi, too_big;
    struct wye_buf resp;
    char curl_err[CURL_ERROR_SIZE];
};

static void http_free(struct up_http *h)
{
    if (h->easy) {
        curl_easy_cleanup(h->easy);
    }
    curl_slist_free_all(h->headers);
    wye_free(h->url);
    wye_free(h->method);
    wye_free(h->body);
    wye_buf_cleanup(&h->resp);
    wye_free(h);
}

/* The last word on h: detaches it, answers, frees. */
static void http_finish(struct up_http *h, enum wye_err err, const char *msg, long status)
{
    struct rt_upstream *up = h->up;
    if (h->in_multi) {
        curl_multi_remove_handle(up->multi, h->easy);
        h->in_multi = false;
        if (h->prev) {
            h->prev->next = h->next;
        } else {
            up->http_live = h->next;
        }
        if (h->next) {
            h->next->prev = h->prev;
        }
        up->n_http_live--;
    }
    struct rt_http_result r = {
        .err = err,
        .message = err ? msg : NULL,
        .status = status,
        .body = h->resp.data ? h->resp.data : "",
        .body_len = h->resp.len,
    };
    h->ops->done(h->arg, &r);
    http_free(h);
}

static size_t http_on_write(char *p, size_t size, size_t nmemb, void *arg)
{
    struct up_http *h = arg;
    size_t n = size * nmemb;
    if (n > h->max_bytes - h->resp.len || wye_buf_append(&h->resp, p, n) != WYE_OK) {
        h->too_big = true;
        return 0; /* curl ends the transfer with CURLE_WRITE_ERROR */
    }
    return n;
}

static bool http_setup(struct up_http *h)
{
    CURL *e = curl_easy_init();
    if (!e) {
        return false;
    }
    h->easy = e;
    bool ok = curl_easy_setopt(e, CURLOPT_URL, h->url) == CURLE_OK &&
              curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https") == CURLE_OK;
    curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_TCP_NODELAY, 1L);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)h->timeout_ms);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, 5000L);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, http_on_write);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, h);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, h->curl_err);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, h->headers);
    curl_easy_setopt(e, CURLOPT_USERAGENT, "wye-agent/" WYE_VERSION);
    set_no_proxy(h->up, e);
    if (strcmp(h->method, "HEAD") == 0) {
        curl_easy_setopt(e, CURLOPT_NOBODY, 1L);
    } else if (strcmp(h->method, "GET") != 0) {
        curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, h->method);
    }
    if (h->body) {
        curl_easy_setopt(e, CURLOPT_POSTFIELDS, h->body);
        curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)h->body_len);
    }
    return ok;
}

/* A queued request reached the upstream thread. */
static void http_begin(struct rt_upstream *up, struct up_http *h)
{
    if (atomic_load(&up->stopping)) {
        http_finish(h, WYE_ERR_CANCELED, "the gateway is shutting down", 0);
        return;
    }
    if (h->ops->cancelled && h->ops->cancelled(h->arg)) {
        http_finish(h, WYE_ERR_CANCELED, "cancelled", 0);
        return;
    }
    if (up->n_http_live >= RT_HTTP_LIVE_MAX) {
        http_finish(h, WYE_ERR_AGAIN, "too many HTTP requests in flight", 0);
        return;
    }
    if (!http_setup(h)) {
        http_finish(h, WYE_ERR_INVAL, "cannot set up the HTTP request (bad URL?)", 0);
        return;
    }
    CURLMcode mc = curl_multi_add_handle(up->multi, h->easy);
    if (mc != CURLM_OK) {
        char msg[RT_MSG_MAX];
        snprintf(msg, sizeof(msg), "cannot start the HTTP request: %s", curl_multi_strerror(mc));
        http_finish(h, WYE_ERR_INTERNAL, msg, 0);
        return;
    }
    h->in_multi = true;
    h->prev = NULL;
    h->next = up->http_live;
    if (h->next) {
        h->next->prev = h;
    }
    up->http_live = h;
    up->n_http_live++;
}

/* curl finished h's transfer with res. */
static void http_conclude(struct up_http *h, CURLcode res)
{
    long status = 0;
    curl_easy_getinfo(h->easy, CURLINFO_RESPONSE_CODE, &status);
    char msg[CURL_ERROR_SIZE + 64];
    if (h->too_big) {
        snprintf(msg, sizeof(msg), "the response is larger than %zu bytes", h->max_bytes);
        http_finish(h, WYE_ERR_TOOBIG, msg, status);
    } else if (res == CURLE_OPERATION_TIMEDOUT) {
        snprintf(msg, sizeof(msg), "timed out after %d ms", h->timeout_ms);
        http_finish(h, WYE_ERR_TIMEOUT, msg, status);
    } else if (res != CURLE_OK) {
        snprintf(msg, sizeof(msg), "%s", h->curl_err[0] ? h->curl_err : curl_easy_strerror(res));
        http_finish(h, WYE_ERR_IO, msg, status);
    } else {
        http_finish(h, WYE_OK, NULL, status);
    }
}

/* The live plain request owning easy, or NULL. */
static struct up_http *http_of(struct rt_upstream *up, CURL *easy)
{
    for (struct up_http *h = up->http_live; h; h = h->next) {
        if (h->easy == easy) {
            return h;
        }
    }
    return NULL;
}

static void http_poll_cancel(struct rt_upstream *up)
{
    struct up_http *h = up->http_live;
    while (h) {
        struct up_http *next = h->next;
        if (h->ops->cancelled && h->ops->cancelled(h->arg)) {
            http_finish(h, WYE_ERR_CANCELED, "cancelled", 0);
        }
        h = next;
    }
}

enum wye_err rt_upstream_http(struct rt_upstream *up, const struct rt_http_req *req,
                              const struct rt_http_ops *ops, void *arg, char *errbuf, size_t errlen)
{
    if (atomic_load(&up->stopping)) {
        snprintf(errbuf, errlen, "the gateway is shutting down");
        return WYE_ERR_CANCELED;
    }
    struct up_http *h = wye_calloc(1, sizeof(*h));
    if (!h) {
        snprintf(errbuf, errlen, "out of memory");
        return WYE_ERR_NOMEM;
    }
    h->note.http = h;
    h->up = up;
    h->ops = ops;
    h->arg = arg;
    h->url = wye_strdup(req->url ? req->url : "");
    h->method = wye_strdup(req->method && req->method[0] ? req->method : "GET");
    h->body = req->body ? wye_strndup(req->body, req->body_len) : NULL;
    h->body_len = req->body ? req->body_len : 0;
    h->max_bytes = req->max_bytes ? req->max_bytes : RT_HTTP_MAX_BYTES_DEFAULT;
    h->timeout_ms = req->timeout_ms > 0 ? req->timeout_ms : 30000;
    wye_buf_init(&h->resp, h->max_bytes);
    bool ok = h->url && h->method && (!req->body || h->body);
    for (size_t i = 0; ok && i < req->n_headers; i++) {
        struct curl_slist *s = curl_slist_append(h->headers, req->headers[i]);
        ok = s != NULL;
        h->headers = s ? s : h->headers;
    }
    if (!ok) {
        http_free(h);
        snprintf(errbuf, errlen, "out of memory");
        return WYE_ERR_NOMEM;
    }
    bool was_empty = false;
    if (wye_queue_push(&up->q, &h->note.node, &was_empty) != WYE_OK) {
        http_free(h);
        snprintf(errbuf, errlen, "the gateway is shutting down");
        return WYE_ERR_CANCELED;
    }
    if (was_empty) {
        curl_multi_wakeup(up->multi);
    }
    return WYE_OK;
}

/* ---- the loop ---- */

static void handle_notes(struct rt_upstream *up)
{
    struct wye_qnode *n = wye_queue_take_all(&up->q);
    while (n) {
        struct wye_qnode *next = n->next;
        struct up_note *note = WYE_CONTAINER_OF(n, struct up_note, node);
        struct up_xfer *x = note->x;
        if (note->http) {
            http_begin(up, note->http);
        } else if (note->is_wake) {
            atomic_store(&x->wake_pending, false);
            xfer_on_wake(x);
        } else {
            xfer_begin(x);
        }
        n = next;
    }
}

static void handle_done(struct rt_upstream *up)
{
    CURLMsg *m;
    int left;
    while ((m = curl_multi_info_read(up->multi, &left))) {
        if (m->msg != CURLMSG_DONE) {
            continue;
        }
        CURLcode res = m->data.result;
        struct up_http *h = http_of(up, m->easy_handle);
        if (h) {
            http_conclude(h, res); /* m is invalid from here */
            continue;
        }
        char *priv = NULL;
        curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, &priv);
        struct up_xfer *x = (struct up_xfer *)(void *)priv;
        if (!x || !x->in_multi) {
            continue;
        }
        rt_xfer_detach(x); /* m is invalid from here */
        x->curl_res = res;
        if (x->paused && x->stash.len > 0 && !x->failed && !x->cancel) {
            x->state = XS_DRAINING; /* the rest waits for the sink's credit */
            continue;
        }
        rt_xfer_conclude(x);
    }
}

/* Deadlines curl does not track, and the cancellation poll. Returns the ms to the next one. */
static long check_deadlines(struct rt_upstream *up)
{
    const struct conf_upstream *cfg = up->cfg;
    int64_t now = wye_now_ns();
    bool busy = up->live || up->http_live;
    int64_t next = now + (busy ? RT_CANCEL_POLL_MS : 1000) * WYE_NS_PER_MS;
    bool poll_cancel = now - up->t_cancel_poll_ns >= RT_CANCEL_POLL_MS * WYE_NS_PER_MS;
    if (poll_cancel) {
        up->t_cancel_poll_ns = now;
        http_poll_cancel(up);
    }
    char msg[RT_MSG_MAX];
    struct up_xfer *x = up->live;
    while (x) {
        struct up_xfer *nx = x->next_live; /* x may be finished below */
        if (poll_cancel && x->sink.ops->cancelled(x->sink.ctx)) {
            rt_xfer_cancel(x, "the request was cancelled");
        } else if (x->state == XS_RETRY_WAIT) {
            if (now >= x->t_retry_ns) {
                rt_xfer_attempt_start(x);
            } else if (x->t_retry_ns < next) {
                next = x->t_retry_ns;
            }
        } else if (x->state == XS_RUNNING && x->in_multi) {
            int64_t fb = (int64_t)cfg->first_byte_timeout_ms * WYE_NS_PER_MS;
            int64_t idle = (int64_t)cfg->idle_timeout_ms * WYE_NS_PER_MS;
            /* A non-streamed answer's first byte comes with its last: only the total timeout
             * bounds it (a long answer must not look like a dead upstream). */
            if (!x->got_byte && fb > 0 && x->req->stream) {
                if (now >= x->t_attempt_ns + fb) {
                    snprintf(msg, sizeof(msg),
                             "upstream sent nothing within the first-byte "
                             "timeout of %d ms",
                             cfg->first_byte_timeout_ms);
                    rt_xfer_retry_or_finish(x, true, WYE_ERR_TIMEOUT, 504, msg);
                } else if (x->t_attempt_ns + fb < next) {
                    next = x->t_attempt_ns + fb;
                }
            } else if (x->got_byte && !x->paused && idle > 0) {
                if (now >= x->t_last_ns + idle) {
                    rt_xfer_detach(x);
                    if (x->done_seen) {
                        rt_xfer_finish(x, WYE_OK, 200, NULL);
                    } else if (x->started) {
                        atomic_fetch_add(&up->n_errors, 1);
                        snprintf(msg, sizeof(msg),
                                 "upstream stalled: no data for %d ms after %zu "
                                 "chunks",
                                 cfg->idle_timeout_ms, x->n_chunks);
                        rt_xfer_finish(x, WYE_ERR_TIMEOUT, 504, msg);
                    } else {
                        snprintf(msg, sizeof(msg),
                                 "upstream stalled: no data for %d ms after "
                                 "the response headers",
                                 cfg->idle_timeout_ms);
                        rt_xfer_retry_or_finish(x, false, WYE_ERR_TIMEOUT, 504, msg);
                    }
                } else if (x->t_last_ns + idle < next) {
                    next = x->t_last_ns + idle;
                }
            }
        }
        x = nx;
    }
    int64_t ms = (next - now) / WYE_NS_PER_MS + 1;
    return ms < 1 ? 1 : ms > 1000 ? 1000 : (long)ms;
}

static void *up_main(void *arg)
{
    struct rt_upstream *up = arg;
    (void)pthread_setname_np(pthread_self(), "wye-upstream");
    /* Each SSE chunk's JSON tree lives in this arena (see rt_xfer_on_event); without it
     * (out of memory) chunks are parsed with malloc, as everywhere else. */
    (void)wye_cjson_arena_init(RT_CHUNK_ARENA_BYTES);
    for (;;) {
        handle_notes(up);
        if (atomic_load(&up->stopping)) {
            break;
        }
        int running = 0;
        curl_multi_perform(up->multi, &running);
        handle_done(up);
        long timeout = check_deadlines(up);
        curl_multi_poll(up->multi, NULL, 0, (int)timeout, NULL);
    }
    handle_notes(up); /* jobs still queued are cancelled by xfer_begin */
    while (up->live) {
        rt_xfer_cancel(up->live, "the gateway is shutting down");
    }
    while (up->http_live) {
        http_finish(up->http_live, WYE_ERR_CANCELED, "the gateway is shutting down", 0);
    }
    wye_cjson_arena_cleanup();
    return NULL;
}

/* ---- lifecycle ---- */

struct rt_upstream *rt_upstream_create(const struct conf_upstream *cfg)
{
    WYE_ASSERT(cfg);
    struct rt_upstream *up = wye_calloc(1, sizeof(*up));
    if (!up) {
        return NULL;
    }
    up->cfg = cfg;
    up->no_proxy_env = !proxy_env_set();
    atomic_init(&up->stopping, false);
    atomic_init(&up->n_requests, 0);
    atomic_init(&up->n_errors, 0);
    atomic_init(&up->n_retries, 0);
    atomic_init(&up->n_active, 0);
    if (wye_queue_init(&up->q, 0) != WYE_OK) {
        goto fail_queue;
    }
    if (pthread_mutex_init(&up->pool_lock, NULL) != 0) {
        goto fail_lock;
    }
    /* without base_url: plain HTTP requests only */
    size_t bl = cfg->base_url ? strlen(cfg->base_url) : 0;
    while (bl > 0 && cfg->base_url[bl - 1] == '/') {
        bl--;
    }
    up->url = cfg->base_url ? wye_malloc(bl + sizeof("/chat/completions")) : NULL;
    if (cfg->base_url && !up->url) {
        goto fail_url;
    }
    if (up->url) {
        memcpy(up->url, cfg->base_url, bl);
        memcpy(up->url + bl, "/chat/completions", sizeof("/chat/completions"));
    }
    const char *fixed[] = {"Content-Type: application/json", "Accept: text/event-stream",
                           "Expect:"};
    for (size_t i = 0; i < sizeof(fixed) / sizeof(fixed[0]); i++) {
        struct curl_slist *h = curl_slist_append(up->headers, fixed[i]);
        if (!h) {
            goto fail_headers;
        }
        up->headers = h;
    }
    if (cfg->api_key && cfg->api_key[0]) {
        size_t n = strlen(cfg->api_key) + sizeof("Authorization: Bearer ");
        char *auth = wye_malloc(n);
        if (!auth) {
            goto fail_headers;
        }
        snprintf(auth, n, "Authorization: Bearer %s", cfg->api_key);
        struct curl_slist *h = curl_slist_append(up->headers, auth);
        memset(auth, 0, n);
        wye_free(auth);
        if (!h) {
            goto fail_headers;
        }
        up->headers = h;
    }
    /* main should have done this before any thread started; a second call only counts */
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        goto fail_headers;
    }
    up->multi = curl_multi_init();
    if (!up->multi) {
        goto fail_global;
    }
    if (cfg->max_connections > 0) {
        curl_multi_setopt(up->multi, CURLMOPT_MAX_HOST_CONNECTIONS, (long)cfg->max_connections);
        curl_multi_setopt(up->multi, CURLMOPT_MAXCONNECTS, (long)cfg->max_connections);
    }
    return up;

fail_global:
    curl_global_cleanup();
fail_headers:
    curl_slist_free_all(up->headers);
    wye_free(up->url);
fail_url:
    pthread_mutex_destroy(&up->pool_lock);
fail_lock:
    wye_queue_cleanup(&up->q);
fail_queue:
    wye_free(up);
    return NULL;
}

enum wye_err rt_upstream_start(struct rt_upstream *up)
{
    if (up->thread_started || up->stopped) {
        return WYE_ERR_INVAL;
    }
    int rc = pthread_create(&up->thread, NULL, up_main, up);
    if (rc != 0) {
        char eb[96];
        WYE_ERROR("upstream: cannot start the thread: %s", wye_strerror(rc, eb, sizeof(eb)));
        return WYE_ERR_IO;
    }
    up->thread_started = true;
    return WYE_OK;
}

void rt_upstream_stop(struct rt_upstream *up)
{
    if (!up || up->stopped) {
        return;
    }
    up->stopped = true;
    wye_queue_close(&up->q);
    atomic_store(&up->stopping, true);
    if (up->thread_started) {
        curl_multi_wakeup(up->multi);
        pthread_join(up->thread, NULL);
        up->thread_started = false;
    } else {
        up_main(up); /* never started: cancel what was queued, here */
    }
}

void rt_upstream_destroy(struct rt_upstream *up)
{
    if (!up) {
        return;
    }
    rt_upstream_stop(up);
    struct up_xfer *x = up->all_list;
    while (x) {
        struct up_xfer *next = x->next_all;
        if (x->easy) {
            curl_easy_cleanup(x->easy);
        }
        wye_free(x->body_mem);
        if (x->bufs_ready) {
            rt_sse_cleanup(&x->sse);
            wye_buf_cleanup(&x->raw);
            wye_buf_cleanup(&x->stash);
        }
        wye_free(x);
        x = next;
    }
    curl_multi_cleanup(up->multi);
    curl_global_cleanup();
    curl_slist_free_all(up->headers);
    wye_free(up->url);
    pthread_mutex_destroy(&up->pool_lock);
    wye_queue_cleanup(&up->q);
    wye_free(up);
}

static enum wye_err submit(struct rt_upstream *up, struct wye_chat_req *req, bool borrowed,
                           struct wye_sink sink, char *errbuf, size_t errlen)
{
    if (atomic_load(&up->stopping) || !up->url) {
        if (!borrowed) {
            wye_chat_req_destroy(req);
        }
        snprintf(errbuf, errlen, "%s",
                 up->url ? "the gateway is shutting down" : "no upstream is configured");
        return up->url ? WYE_ERR_CANCELED : WYE_ERR_INVAL;
    }
    struct up_xfer *x = pool_get(up);
    if (!x) {
        if (!borrowed) {
            wye_chat_req_destroy(req);
        }
        snprintf(errbuf, errlen, "out of memory");
        return WYE_ERR_NOMEM;
    }
    x->req = req;
    x->req_borrowed = borrowed;
    x->sink = sink;
    bool was_empty = false;
    if (wye_queue_push(&up->q, &x->job.node, &was_empty) != WYE_OK) {
        x->req = NULL;
        x->req_borrowed = false;
        memset(&x->sink, 0, sizeof(x->sink));
        pool_put(up, x);
        if (!borrowed) {
            wye_chat_req_destroy(req);
        }
        snprintf(errbuf, errlen, "the gateway is shutting down");
        return WYE_ERR_CANCELED;
    }
    if (was_empty) {
        curl_multi_wakeup(up->multi);
    }
    return WYE_OK;
}

enum wye_err rt_upstream_submit(struct rt_upstream *up, struct wye_chat_req *req,
                                struct wye_sink sink, char *errbuf, size_t errlen)
{
    return submit(up, req, false, sink, errbuf, errlen);
}

enum wye_err rt_upstream_submit_borrowed(struct rt_upstream *up, struct wye_chat_req *req,
                                         struct wye_sink sink, char *errbuf, size_t errlen)
{
    return submit(up, req, true, sink, errbuf, errlen);
}

void rt_upstream_stats(struct rt_upstream *up, struct rt_stats *out)
{
    out->upstream_requests += atomic_load(&up->n_requests);
    out->upstream_errors += atomic_load(&up->n_errors);
    out->upstream_retries += atomic_load(&up->n_retries);
    out->upstream_active += atomic_load(&up->n_active);
}
