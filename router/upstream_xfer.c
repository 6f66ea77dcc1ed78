/* One upstream HTTP exchange: the POSTed body, curl's write/header callbacks feeding the SSE
 * parser and the sink, backpressure (the stash and CURL_WRITEFUNC_PAUSE), and the mapping of
 * every way an attempt can end to a retry or a finish the client understands.
 * Runs on the upstream thread only (curl callbacks run inside curl_multi_perform there). */
#include <cJSON.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "common/alloc.h"
#include "common/clock.h"
#include "common/log.h"
#include "router/rt_internal.h"
#include "router/sse.h"

static const char *model_name(const struct up_xfer *x)
{
    const char *m = x->up->cfg->model ? x->up->cfg->model : x->req->model;
    return m ? m : "auto";
}

/* ---- finishing ---- */

void rt_xfer_detach(struct up_xfer *x)
{
    if (x->in_multi) {
        curl_multi_remove_handle(x->up->multi, x->easy);
        x->in_multi = false;
    }
}

static struct wye_usage usage_of(const struct up_xfer *x)
{
    struct wye_usage u = {0, 0, false};
    if (x->has_usage) {
        return x->usage;
    }
    if (!x->started) {
        return u; /* nothing was generated for this request */
    }
    size_t chars = 0;
    for (size_t i = 0; i < x->req->n_msgs; i++) {
        chars += strlen(x->req->msgs[i].content);
    }
    u.prompt_tokens = (int64_t)((chars + 3) / 4);
    /* a streamed delta is about a token; a whole JSON answer is one "delta" */
    u.completion_tokens = (int64_t)(x->is_sse ? x->n_deltas : (x->n_answer_bytes + 3) / 4);
    u.estimated = true;
    return u;
}

/* The last word on x: tells the sink, releases the request and returns x to the pool. */
void rt_xfer_finish(struct up_xfer *x, enum wye_err err, int status, const char *msg)
{
    struct rt_upstream *up = x->up;
    rt_xfer_detach(x);
    struct wye_result res = {
        .err = err,
        .http_status = err ? status : 200,
        .message = err ? msg : NULL,
        .finish_reason = err == WYE_ERR_CANCELED ? "cancelled"
                         : err                   ? "error"
                         : x->finish_reason      ? x->finish_reason
                                                 : "stop",
        .usage = usage_of(x),
    };
    if (err && err != WYE_ERR_CANCELED) {
        wye_log(WYE_LOG_WARN, x->req->id, "upstream: %s (HTTP %d, %zu chunks, %d attempts)", msg,
                status, x->n_chunks, x->attempt + 1);
    } else {
        wye_log(WYE_LOG_DEBUG, x->req->id, "upstream: %s after %zu chunks",
                err ? "cancelled" : "done", x->n_chunks);
    }
    /* a wakeup arriving after finish must not reach this (soon reused) transfer */
    x->sink.ops->set_wakeup(x->sink.ctx, rt_up_wake_noop, NULL);
    atomic_fetch_sub(&up->n_active, 1); /* before finish: whoever waits on it sees 0 */
    bool borrowed = x->req_borrowed;
    struct wye_chat_req *req = x->req;
    x->req = NULL;
    x->req_borrowed = false;
    /* a borrowed request belongs to the sink's owner again from here on */
    x->sink.ops->finish(x->sink.ctx, &res);
    if (!borrowed) {
        wye_chat_req_destroy(req);
    }
    memset(&x->sink, 0, sizeof(x->sink));
    if (x->body != x->body_mem) {
        cJSON_free(x->body);
    }
    x->body = NULL;
    x->body_len = 0;
    /* keep ordinary buffers; give back what a rare huge answer grew */
    if (x->raw.cap > RT_ERR_BODY_MAX * 4) {
        wye_buf_cleanup(&x->raw);
    }
    if (x->stash.cap > ((size_t)64 << 10)) {
        wye_buf_cleanup(&x->stash);
    }
    wye_buf_reset(&x->raw);
    wye_buf_reset(&x->stash);
    if (x->curl_paused && x->easy) {
        /* a handle removed while paused may keep curl-side state: start afresh next time */
        curl_easy_cleanup(x->easy);
        x->easy = NULL;
    }
    x->curl_paused = false;
    x->paused = false;
    rt_up_release(up, x);
}

void rt_xfer_cancel(struct up_xfer *x, const char *msg)
{
    rt_xfer_finish(x, WYE_ERR_CANCELED, 499, msg);
}

/* Records the outcome decided inside a curl callback; the loop finishes the transfer. */
void rt_xfer_fail(struct up_xfer *x, enum wye_err err, int status, const char *fmt, ...)
{
    if (x->failed) {
        return; /* the first reason wins */
    }
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(x->fail_msg, sizeof(x->fail_msg), fmt, ap);
    va_end(ap);
    x->failed = true;
    x->fail_err = err;
    x->fail_status = status;
}

/* ---- attempts ---- */

/* An attempt failed with nothing sent to the client: retry if allowed, else finish. */
void rt_xfer_retry_or_finish(struct up_xfer *x, bool retryable, enum wye_err err, int status,
                             const char *msg)
{
    struct rt_upstream *up = x->up;
    const struct conf_upstream *cfg = up->cfg;
    atomic_fetch_add(&up->n_errors, 1);
    rt_xfer_detach(x);
    if (retryable && !x->started && x->attempt < cfg->max_retries && !atomic_load(&up->stopping)) {
        int64_t delay_ms = cfg->retry_backoff_ms > 0 ? cfg->retry_backoff_ms : 0;
        for (int i = 0; i < x->attempt && delay_ms < 60000; i++) {
            delay_ms *= 2;
        }
        bool ok = true;
        if (x->status == 429 && x->retry_after_ms >= 0) {
            if (x->retry_after_ms > RT_RETRY_AFTER_MAX_MS) {
                ok = false; /* the upstream asks for a longer pause than a client waits */
            } else if (x->retry_after_ms > delay_ms) {
                delay_ms = x->retry_after_ms;
            }
        }
        int64_t now = wye_now_ns();
        if (cfg->total_timeout_ms > 0 &&
            now + delay_ms * WYE_NS_PER_MS >=
                x->t_begin_ns + (int64_t)cfg->total_timeout_ms * WYE_NS_PER_MS) {
            ok = false;
        }
        if (ok) {
            wye_log(WYE_LOG_INFO, x->req->id, "upstream: %s; retry %d in %lld ms", msg,
                    x->attempt + 1, (long long)delay_ms);
            atomic_fetch_add(&up->n_retries, 1);
            x->attempt++;
            x->state = XS_RETRY_WAIT;
            x->t_retry_ns = now + delay_ms * WYE_NS_PER_MS;
            return;
        }
    }
    rt_xfer_finish(x, err, status, msg);
}

/* A non-2xx answer is complete (or cut): map it to what the client sees. */
static void conclude_status(struct up_xfer *x)
{
    char um[200];
    char msg[RT_MSG_MAX];
    long s = x->status;
    rt_error_body_message(x->raw.data, x->raw.len, um, sizeof(um));
    const char *sep = um[0] ? ": " : "";
    if (s == 401 || s == 403) {
        wye_log(WYE_LOG_WARN, x->req->id, "upstream HTTP %ld: %s", s, um);
        snprintf(msg, sizeof(msg), "upstream rejected the API key (HTTP %ld)", s);
        rt_xfer_retry_or_finish(x, false, WYE_ERR_UPSTREAM, 502, msg);
    } else if (s == 429) {
        snprintf(msg, sizeof(msg), "upstream rate limit reached (HTTP 429)%s%s", sep, um);
        rt_xfer_retry_or_finish(x, true, WYE_ERR_LIMIT, 429, msg);
    } else if (s >= 500) {
        snprintf(msg, sizeof(msg), "upstream failed with HTTP %ld%s%s", s, sep, um);
        rt_xfer_retry_or_finish(x, true, WYE_ERR_UPSTREAM, 502, msg);
    } else if (s == 400 || s == 422) {
        snprintf(msg, sizeof(msg), "upstream rejected the request%s%s", sep,
                 um[0] ? um : " (HTTP 400)");
        rt_xfer_retry_or_finish(x, false, WYE_ERR_INVAL, 400, msg);
    } else if (s == 413) {
        snprintf(msg, sizeof(msg), "upstream says the request is too large%s%s", sep, um);
        rt_xfer_retry_or_finish(x, false, WYE_ERR_TOOBIG, 413, msg);
    } else {
        snprintf(msg, sizeof(msg), "upstream answered HTTP %ld%s%s", s, sep, um);
        rt_xfer_retry_or_finish(x, false, WYE_ERR_UPSTREAM, 502, msg);
    }
}

static enum wye_err emit_one(struct up_xfer *x, enum wye_ev_type type, const char *data, size_t len,
                             enum wye_err verdict)
{
    struct wye_event ev = {.type = type, .data = data, .len = len};
    if (type == WYE_EV_USAGE) {
        ev.usage = x->usage;
    }
    enum wye_err r = x->sink.ops->emit(x->sink.ctx, &ev);
    if (r == WYE_ERR_CANCELED) {
        x->cancel = true;
        return WYE_ERR_CANCELED;
    }
    if (r != WYE_OK && verdict == WYE_OK) {
        return WYE_ERR_AGAIN;
    }
    return verdict;
}

/* Emits what one chunk said. Every event of the chunk goes out even after an AGAIN (a chunk is
 * small; the consumer's high-water mark is soft); the parser then stops after this chunk. */
static enum wye_err emit_chunk(struct up_xfer *x, struct rt_chunk *c)
{
    enum wye_err v = WYE_OK;
    if (c->content && c->content[0] && v != WYE_ERR_CANCELED) {
        size_t n = strlen(c->content);
        x->n_deltas++;
        x->n_answer_bytes += n;
        v = emit_one(x, WYE_EV_DELTA, c->content, n, v);
    }
    if (c->tool_calls && v != WYE_ERR_CANCELED) {
        size_t n = strlen(c->tool_calls);
        x->n_deltas++;
        x->n_answer_bytes += n;
        v = emit_one(x, WYE_EV_TOOL_DELTA, c->tool_calls, n, v);
    }
    if (c->has_usage && v != WYE_ERR_CANCELED) {
        x->has_usage = true;
        x->usage = c->usage;
        v = emit_one(x, WYE_EV_USAGE, NULL, 0, v);
    }
    if (c->finish_reason) {
        x->finish_reason = rt_finish_reason(c->finish_reason);
    }
    return v;
}

/* Frees a chunk read by rt_xfer_on_event: when its whole tree lies in the arena, rewinding the
 * arena frees it without walking the nodes (the sink copied what it emitted). */
static void chunk_release(struct rt_chunk *c)
{
    if (wye_cjson_arena_drop()) {
        memset(c, 0, sizeof(*c));
    } else {
        rt_chunk_cleanup(c);
    }
}

enum wye_err rt_xfer_on_event(void *arg, const struct rt_sse_event *ev)
{
    struct up_xfer *x = arg;
    if (x->done_seen) {
        return WYE_OK;
    }
    if (ev->len == 6 && memcmp(ev->data, "[DONE]", 6) == 0) {
        x->done_seen = true;
        return WYE_OK;
    }
    x->n_chunks++;
    struct rt_chunk c;
    char eb[160];
    /* The chunk's tree is carved from this thread's arena (no malloc per node) and released
     * below, on this thread, which rewinds the arena. Only the parse runs inside the arena:
     * what the sink allocates while emitting outlives the chunk. */
    wye_cjson_arena_begin();
    enum wye_err err = rt_chunk_parse(ev->data, ev->len, false, &c, eb, sizeof(eb));
    wye_cjson_arena_end();
    if (err == WYE_ERR_NOMEM) {
        rt_xfer_fail(x, WYE_ERR_NOMEM, 500, "out of memory while reading the upstream stream");
    } else if (err) {
        rt_xfer_fail(x, WYE_ERR_UPSTREAM, 502, "upstream sent a malformed stream chunk (#%zu): %s",
                     x->n_chunks, eb);
    } else if (c.error || strcmp(ev->event, "error") == 0) {
        rt_xfer_fail(x, WYE_ERR_UPSTREAM, 502, "upstream reported an error mid-stream: %s",
                     c.error ? c.error : "(no message)");
        err = WYE_ERR_UPSTREAM;
    }
    if (err) {
        chunk_release(&c);
        return err;
    }
    err = emit_chunk(x, &c);
    chunk_release(&c);
    return err;
}

static void sink_start(struct up_xfer *x)
{
    struct wye_start st = {.route = "remote", .model = model_name(x), .score = -1, .reasons = NULL};
    x->started = true;
    x->sink.ops->start(x->sink.ctx, &st);
}

/* Gives n bytes of event stream to the parser. Returns what the write callback returns. */
static size_t feed(struct up_xfer *x, const char *p, size_t n)
{
    size_t used = 0;
    enum wye_err err = rt_sse_feed(&x->sse, p, n, &used, rt_xfer_on_event, x);
    if (err == WYE_ERR_AGAIN) {
        /* The parser stopped inside curl's buffer. Returning CURL_WRITEFUNC_PAUSE now would make
         * curl deliver the whole buffer again (duplicating what was parsed), and returning less
         * than n is an error, so the rest is copied to our stash and the buffer is reported
         * consumed. The next write callback answers CURL_WRITEFUNC_PAUSE *without* consuming,
         * so curl keeps those bytes; on wake the stash is parsed first, then curl is resumed:
         * every byte is parsed exactly once, in order. */
        if (wye_buf_append(&x->stash, p + used, n - used) != WYE_OK) {
            rt_xfer_fail(x, WYE_ERR_INTERNAL, 502,
                         "more than %zu bytes held back for a full client", (size_t)RT_STASH_MAX);
            return 0;
        }
        x->paused = true;
        return n;
    }
    if (err == WYE_ERR_TOOBIG) {
        rt_xfer_fail(x, WYE_ERR_UPSTREAM, 502, "upstream sent an SSE event larger than %zu bytes",
                     (size_t)RT_SSE_EVENT_MAX);
    }
    return err ? 0 : n;
}

size_t rt_xfer_on_write(char *p, size_t size, size_t nmemb, void *arg)
{
    struct up_xfer *x = arg;
    size_t n = size * nmemb;
    if (x->paused) {
        x->curl_paused = true;
        return CURL_WRITEFUNC_PAUSE; /* nothing of p consumed: curl delivers it again */
    }
    x->got_byte = true;
    x->t_last_ns = wye_now_ns();
    if (x->status < 200 || x->status > 299) {
        size_t room =
            RT_ERR_BODY_MAX - (x->raw.len < RT_ERR_BODY_MAX ? x->raw.len : RT_ERR_BODY_MAX);
        if (wye_buf_append(&x->raw, p, n < room ? n : room) != WYE_OK) {
            return 0;
        }
        return n;
    }
    if (x->failed || x->cancel) {
        return 0;
    }
    if (!x->started) {
        sink_start(x);
    }
    if (!x->is_sse) {
        if (wye_buf_append(&x->raw, p, n) != WYE_OK) {
            rt_xfer_fail(x, WYE_ERR_UPSTREAM, 502,
                         "upstream's JSON answer is larger than %zu bytes",
                         (size_t)RT_JSON_ANSWER_MAX);
            return 0;
        }
        return n;
    }
    return feed(x, p, n);
}

static bool header_is(const char *line, size_t n, const char *name, const char **value,
                      size_t *vlen)
{
    size_t k = strlen(name);
    if (n <= k || strncasecmp(line, name, k) != 0 || line[k] != ':') {
        return false;
    }
    size_t i = k + 1;
    while (i < n && (line[i] == ' ' || line[i] == '\t')) {
        i++;
    }
    size_t j = n;
    while (j > i && (line[j - 1] == '\r' || line[j - 1] == '\n' || line[j - 1] == ' ')) {
        j--;
    }
    *value = line + i;
    *vlen = j - i;
    return true;
}

size_t rt_xfer_on_header(char *p, size_t size, size_t nmemb, void *arg)
{
    struct up_xfer *x = arg;
    size_t n = size * nmemb;
    const char *v;
    size_t vl;
    x->got_byte = true;
    x->t_last_ns = wye_now_ns();
    if (n > 9 && strncmp(p, "HTTP/", 5) == 0) {
        /* a new status line (also after 100 Continue): "HTTP/1.1 200 OK" */
        const char *sp = memchr(p, ' ', n);
        long code = 0;
        for (const char *c = sp ? sp + 1 : p + n; c < p + n && *c >= '0' && *c <= '9'; c++) {
            code = code * 10 + (*c - '0');
            if (code > 999) {
                break;
            }
        }
        x->status = code;
        x->is_sse = true;
        x->retry_after_ms = -1;
        wye_buf_reset(&x->raw);
    } else if (header_is(p, n, "content-type", &v, &vl)) {
        /* anything but JSON is read as an event stream */
        for (size_t i = 0; i + 4 <= vl; i++) {
            if (strncasecmp(v + i, "json", 4) == 0) {
                x->is_sse = false;
                break;
            }
        }
    } else if (header_is(p, n, "retry-after", &v, &vl)) {
        int64_t secs = 0;
        size_t i = 0;
        for (; i < vl && v[i] >= '0' && v[i] <= '9' && secs < 1000000; i++) {
            secs = secs * 10 + (v[i] - '0');
        }
        /* an HTTP date is treated as "too long" */
        x->retry_after_ms = i > 0 && i == vl ? secs * 1000 : RT_RETRY_AFTER_MAX_MS + 1;
    }
    return n;
}

/* A whole non-streamed JSON answer arrived: emit it as events. */
static void conclude_json(struct up_xfer *x)
{
    struct rt_chunk c;
    char eb[160];
    enum wye_err err =
        rt_chunk_parse(x->raw.data ? x->raw.data : "", x->raw.len, true, &c, eb, sizeof(eb));
    if (err) {
        rt_chunk_cleanup(&c);
        char msg[RT_MSG_MAX];
        snprintf(msg, sizeof(msg), "upstream sent a malformed JSON answer: %s", eb);
        rt_xfer_finish(x, err == WYE_ERR_NOMEM ? WYE_ERR_NOMEM : WYE_ERR_UPSTREAM,
                       err == WYE_ERR_NOMEM ? 500 : 502, msg);
        return;
    }
    if (c.error) {
        char msg[RT_MSG_MAX];
        snprintf(msg, sizeof(msg), "upstream reported an error: %s", c.error);
        rt_chunk_cleanup(&c);
        rt_xfer_finish(x, WYE_ERR_UPSTREAM, 502, msg);
        return;
    }
    x->n_chunks = 1;
    if (!c.finish_reason) {
        x->finish_reason = "stop";
    }
    /* AGAIN is moot: this is the whole answer */
    enum wye_err v = emit_chunk(x, &c);
    rt_chunk_cleanup(&c);
    if (v == WYE_ERR_CANCELED) {
        rt_xfer_cancel(x, "the request was cancelled");
        return;
    }
    rt_xfer_finish(x, WYE_OK, 200, NULL);
}

static bool curl_is_connect_error(CURLcode r)
{
    return r == CURLE_COULDNT_CONNECT || r == CURLE_COULDNT_RESOLVE_HOST ||
           r == CURLE_COULDNT_RESOLVE_PROXY || r == CURLE_SSL_CONNECT_ERROR ||
           r == CURLE_GOT_NOTHING || r == CURLE_SEND_ERROR || r == CURLE_RECV_ERROR;
}

static const char *curl_detail(const struct up_xfer *x)
{
    return x->curl_err[0] ? x->curl_err : curl_easy_strerror(x->curl_res);
}

/* curl finished the attempt (x is detached) and every byte was parsed: decide the outcome. */
void rt_xfer_conclude(struct up_xfer *x)
{
    char msg[RT_MSG_MAX];
    const struct conf_upstream *cfg = x->up->cfg;
    CURLcode res = x->curl_res;
    if (x->cancel) {
        rt_xfer_cancel(x, "the request was cancelled");
        return;
    }
    if (x->failed) {
        rt_xfer_retry_or_finish(x, false, x->fail_err, x->fail_status, x->fail_msg);
        return;
    }
    if (x->done_seen) {
        rt_xfer_finish(x, WYE_OK, 200, NULL);
        return;
    }
    if (x->status >= 200 && x->status <= 299 && x->started) {
        if (res == CURLE_OK && !x->is_sse) {
            conclude_json(x);
            return;
        }
        if (res == CURLE_OK && x->finish_reason) {
            rt_xfer_finish(x, WYE_OK, 200,
                           NULL); /* no [DONE], but a finish_reason and a clean end */
            return;
        }
        atomic_fetch_add(&x->up->n_errors, 1);
        if (res == CURLE_OK) {
            snprintf(msg, sizeof(msg),
                     "upstream ended the stream after %zu chunks without a "
                     "finish_reason or [DONE]%s",
                     x->n_chunks, rt_sse_pending(&x->sse) ? " (inside an unfinished event)" : "");
            rt_xfer_finish(x, WYE_ERR_UPSTREAM, 502, msg);
        } else if (res == CURLE_OPERATION_TIMEDOUT) {
            snprintf(msg, sizeof(msg),
                     "upstream exceeded the total timeout of %d ms after %zu "
                     "chunks",
                     cfg->total_timeout_ms, x->n_chunks);
            rt_xfer_finish(x, WYE_ERR_TIMEOUT, 504, msg);
        } else {
            snprintf(msg, sizeof(msg),
                     "upstream closed the connection mid-stream after %zu "
                     "chunks (%s)",
                     x->n_chunks, curl_detail(x));
            rt_xfer_finish(x, WYE_ERR_UPSTREAM, 502, msg);
        }
        return;
    }
    if (x->status >= 300 || (x->status >= 100 && x->status < 200 && res == CURLE_OK)) {
        conclude_status(x);
        return;
    }
    if (x->status >= 200 && x->status <= 299 && res == CURLE_OK) {
        snprintf(msg, sizeof(msg), "upstream answered HTTP %ld with an empty body", x->status);
        rt_xfer_retry_or_finish(x, false, WYE_ERR_UPSTREAM, 502, msg);
        return;
    }
    if (res == CURLE_OPERATION_TIMEDOUT) {
        snprintf(msg, sizeof(msg), "upstream timed out before answering: %s", curl_detail(x));
        rt_xfer_retry_or_finish(x, !x->got_byte, WYE_ERR_TIMEOUT, 504, msg);
    } else if (curl_is_connect_error(res)) {
        snprintf(msg, sizeof(msg), "could not reach the upstream: %s", curl_detail(x));
        rt_xfer_retry_or_finish(x, true, WYE_ERR_UPSTREAM, 502, msg);
    } else {
        snprintf(msg, sizeof(msg), "upstream request failed: %s", curl_detail(x));
        rt_xfer_retry_or_finish(x, false, WYE_ERR_UPSTREAM, 502, msg);
    }
}

void rt_xfer_attempt_start(struct up_xfer *x)
{
    const struct conf_upstream *cfg = x->up->cfg;
    int64_t now = wye_now_ns();
    long timeout_ms = 0;
    if (cfg->total_timeout_ms > 0) {
        int64_t left = x->t_begin_ns + (int64_t)cfg->total_timeout_ms * WYE_NS_PER_MS - now;
        if (left <= 0) {
            rt_xfer_finish(x, WYE_ERR_TIMEOUT, 504,
                           "upstream total timeout reached before an answer");
            return;
        }
        timeout_ms = (long)(left / WYE_NS_PER_MS) + 1;
    }
    x->status = 0;
    x->retry_after_ms = -1;
    x->got_byte = false;
    x->is_sse = true;
    x->done_seen = false;
    x->failed = false;
    x->curl_err[0] = '\0';
    x->curl_res = CURLE_OK;
    wye_buf_reset(&x->raw);
    wye_buf_reset(&x->stash);
    rt_sse_reset(&x->sse);
    x->t_attempt_ns = now;
    x->t_last_ns = now;
    curl_easy_setopt(x->easy, CURLOPT_TIMEOUT_MS, timeout_ms);
    CURLMcode mc = curl_multi_add_handle(x->up->multi, x->easy);
    if (mc != CURLM_OK) {
        char msg[RT_MSG_MAX];
        snprintf(msg, sizeof(msg), "could not start the upstream request: %s",
                 curl_multi_strerror(mc));
        rt_xfer_finish(x, WYE_ERR_INTERNAL, 500, msg);
        return;
    }
    x->in_multi = true;
    x->state = XS_RUNNING;
    atomic_fetch_add(&x->up->n_requests, 1);
}

/* ---- the request body ---- */

static enum wye_err set_item(cJSON *obj, const char *key, cJSON *item)
{
    if (!item) {
        return WYE_ERR_NOMEM;
    }
    cJSON_DeleteItemFromObjectCaseSensitive(obj, key);
    if (!cJSON_AddItemToObject(obj, key, item)) {
        cJSON_Delete(item);
        return WYE_ERR_NOMEM;
    }
    return WYE_OK;
}

/* A request made without a client body (agents): the OpenAI fields wye knows. */
static cJSON *body_from_req(const struct wye_chat_req *req)
{
    cJSON *b = cJSON_CreateObject();
    cJSON *msgs = cJSON_AddArrayToObject(b, "messages");
    if (!msgs) {
        goto fail;
    }
    for (size_t i = 0; i < req->n_msgs; i++) {
        cJSON *m = cJSON_CreateObject();
        if (!m) {
            goto fail;
        }
        if (!cJSON_AddItemToArray(msgs, m)) {
            cJSON_Delete(m);
            goto fail;
        }
        if (!cJSON_AddStringToObject(m, "role", wye_role_name(req->msgs[i].role)) ||
            !cJSON_AddStringToObject(m, "content", req->msgs[i].content)) {
            goto fail;
        }
    }
    if ((req->max_tokens > 0 && !cJSON_AddNumberToObject(b, "max_tokens", req->max_tokens)) ||
        (req->temperature >= 0 && !cJSON_AddNumberToObject(b, "temperature", req->temperature)) ||
        (req->top_p >= 0 && !cJSON_AddNumberToObject(b, "top_p", req->top_p)) ||
        (req->has_seed && !cJSON_AddNumberToObject(b, "seed", (double)req->seed))) {
        goto fail;
    }
    if (req->n_stop > 0) {
        cJSON *stop = cJSON_AddArrayToObject(b, "stop");
        for (size_t i = 0; stop && i < req->n_stop; i++) {
            cJSON *s = cJSON_CreateString(req->stop[i]);
            if (!s || !cJSON_AddItemToArray(stop, s)) {
                cJSON_Delete(s);
                goto fail;
            }
        }
        if (!stop) {
            goto fail;
        }
    }
    return b;
fail:
    cJSON_Delete(b);
    return NULL;
}

/* Prints body into the transfer's kept buffer (no allocation in the steady state), or, when
 * it does not fit, into a fresh string, then sizes the kept buffer for next time. */
static enum wye_err print_body(struct up_xfer *x, cJSON *body)
{
    if (x->body_mem && cJSON_PrintPreallocated(body, x->body_mem, (int)x->body_cap, false)) {
        x->body = x->body_mem;
        x->body_len = strlen(x->body);
        return WYE_OK;
    }
    char *p = cJSON_PrintUnformatted(body);
    if (!p) {
        return WYE_ERR_NOMEM;
    }
    x->body = p;
    x->body_len = strlen(p);
    /* cJSON asks for a few spare bytes when printing in place; leave room to grow */
    size_t want = 1024;
    while (want < 2 * (x->body_len + 64) && want < RT_BODY_KEEP_MAX) {
        want *= 2;
    }
    if (want >= x->body_len + 64 && want <= RT_BODY_KEEP_MAX && want > x->body_cap) {
        wye_free(x->body_mem);
        x->body_mem = wye_malloc(want);
        x->body_cap = x->body_mem ? want : 0;
    }
    return WYE_OK;
}

/* The client's body with the model the upstream knows and the client's choice of streaming.
 * A streamed request always asks for usage (stream_options.include_usage); a non-streamed one
 * goes upstream non-streamed, as the client sent it (its answer carries usage anyway, and
 * OpenAI refuses stream_options without stream): one JSON answer to read instead of an event
 * per token, which took a third off what wye adds to a non-streamed request (docs/routing.md). */
enum wye_err rt_xfer_build_body(struct up_xfer *x)
{
    struct wye_chat_req *req = x->req;
    if (!req->body) {
        req->body = body_from_req(req);
        if (!req->body) {
            return WYE_ERR_NOMEM;
        }
    }
    enum wye_err err = WYE_OK;
    if (req->stream) {
        cJSON *so = cJSON_CreateObject();
        if (so && !cJSON_AddTrueToObject(so, "include_usage")) {
            cJSON_Delete(so);
            so = NULL;
        }
        err = set_item(req->body, "stream_options", so);
    } else {
        cJSON_DeleteItemFromObjectCaseSensitive(req->body, "stream_options");
    }
    if (!err) {
        err = set_item(req->body, "model", cJSON_CreateString(model_name(x)));
    }
    if (!err) {
        err = set_item(req->body, "stream", cJSON_CreateBool(req->stream));
    }
    if (!err) {
        err = print_body(x, req->body);
    }
    return err;
}
