/* The stream: a refcounted, bounded queue of preformatted chunks between a producer (any
 * thread: the router's upstream thread, the engine, a test) and the lws thread that writes
 * them. Producers call the sink ops here; the lws thread pops, writes, recycles and hands
 * credit back. Chunks are recycled through a small per-stream free list, refilled from and
 * returned to a server-wide pool of standard-size chunks in batches, so the steady state
 * allocates nothing per event, nor per request. */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/alloc.h"
#include "common/clock.h"
#include "common/log.h"
#include "gateway/gw_internal.h"

#define GW_CHUNK_MIN 512 /* payload bytes of a fresh chunk */
#define GW_FREE_MAX 32   /* spare chunks kept per stream */
#define GW_FMT_MAX ((size_t)64 << 20)
#define GW_TEXT_MAX ((size_t)64 << 20)
#define GW_PREFIX_MAX ((size_t)4096) /* a stream's event prefix: ids and a model name */
#define GW_HARD_FACTOR 8             /* a producer that ignores AGAIN this far is cut off */
#define GW_POOL_MAX 4096             /* spare standard-size chunks kept by the server (~2.1 MiB) */
#define GW_POOL_BATCH 8              /* chunks a stream takes from the pool at once */

static void chunk_free_list(struct gw_chunk *c)
{
    while (c) {
        struct gw_chunk *n = c->next;
        wye_free(c);
        c = n;
    }
}

/* Gives the standard-size chunks of list back to the server's pool (while it has room) and
 * frees the others. Any thread. */
static void pool_give(struct gw_server *srv, struct gw_chunk *list)
{
    struct gw_chunk *spill = NULL;
    pthread_mutex_lock(&srv->pool_lock);
    while (list) {
        struct gw_chunk *n = list->next;
        if (list->cap == GW_CHUNK_MIN && srv->n_pool < GW_POOL_MAX) {
            list->next = srv->pool;
            srv->pool = list;
            srv->n_pool++;
        } else {
            list->next = spill;
            spill = list;
        }
        list = n;
    }
    pthread_mutex_unlock(&srv->pool_lock);
    chunk_free_list(spill);
}

/* Takes up to GW_POOL_BATCH standard-size chunks from the server's pool; NULL if it is
 * empty. Any thread. */
static struct gw_chunk *pool_take(struct gw_server *srv)
{
    pthread_mutex_lock(&srv->pool_lock);
    struct gw_chunk *first = srv->pool, *last = NULL;
    size_t k = 0;
    for (struct gw_chunk *c = first; c && k < GW_POOL_BATCH; c = c->next) {
        last = c;
        k++;
    }
    if (last) {
        srv->pool = last->next;
        srv->n_pool -= k;
        last->next = NULL;
    }
    pthread_mutex_unlock(&srv->pool_lock);
    return first;
}

void gw_chunk_pool_cleanup(struct gw_server *srv)
{
    pthread_mutex_lock(&srv->pool_lock);
    struct gw_chunk *c = srv->pool;
    srv->pool = NULL;
    srv->n_pool = 0;
    pthread_mutex_unlock(&srv->pool_lock);
    chunk_free_list(c);
}

struct gw_stream *gw_stream_create(struct gw_server *srv, enum gw_kind kind,
                                   const struct wye_chat_req *req)
{
    struct gw_stream *s = wye_calloc(1, sizeof(*s));
    if (!s) {
        return NULL;
    }
    if (pthread_mutex_init(&s->lock, NULL) != 0) {
        goto fail_free;
    }
    if (req->client_id) {
        s->client_id = wye_strdup(req->client_id);
        if (!s->client_id) {
            goto fail_lock;
        }
    }
    atomic_init(&s->refs, 2);
    atomic_init(&s->cancelled, false);
    s->srv = srv;
    s->kind = kind;
    memcpy(s->reqid, req->id, sizeof(s->reqid));
    s->include_usage = req->include_usage;
    s->created_s = (int64_t)(wye_wall_ms() / 1000);
    s->t0_ns = req->t_received_ns ? req->t_received_ns : wye_now_ns();
    s->status = 200;
    s->score = -1;
    snprintf(s->model, sizeof(s->model), "%s", req->model ? req->model : "auto");
    wye_buf_init(&s->fmt, GW_FMT_MAX);
    wye_buf_init(&s->prefix, GW_PREFIX_MAX);
    wye_buf_init(&s->text, GW_TEXT_MAX);
    atomic_fetch_add(&srv->n_live_streams, 1);
    return s;

fail_lock:
    pthread_mutex_destroy(&s->lock);
fail_free:
    wye_free(s);
    return NULL;
}

void gw_stream_ref(struct gw_stream *s)
{
    atomic_fetch_add(&s->refs, 1);
}

void gw_stream_unref(struct gw_stream *s)
{
    if (!s || atomic_fetch_sub(&s->refs, 1) != 1) {
        return;
    }
    struct gw_server *srv = s->srv;
    struct gw_chunk **tail = &s->head; /* what is still queued, then the spares */
    while (*tail) {
        tail = &(*tail)->next;
    }
    *tail = s->free_list;
    pool_give(srv, s->head);
    wye_buf_cleanup(&s->fmt);
    wye_buf_cleanup(&s->prefix);
    wye_buf_cleanup(&s->text);
    gw_tool_acc_destroy(s->tools);
    wye_free(s->client_id);
    pthread_mutex_destroy(&s->lock);
    wye_free(s);
    atomic_fetch_sub(&srv->n_live_streams, 1);
}

/* Takes a spare chunk that fits n bytes, or allocates one. Called without the lock. */
static struct gw_chunk *chunk_get(struct gw_stream *s, size_t n)
{
    pthread_mutex_lock(&s->lock);
    struct gw_chunk **pp = &s->free_list;
    while (*pp && (*pp)->cap < n) {
        pp = &(*pp)->next;
    }
    struct gw_chunk *c = *pp;
    if (c) {
        *pp = c->next;
        s->n_free--;
    }
    pthread_mutex_unlock(&s->lock);
    if (!c && n <= GW_CHUNK_MIN) {
        /* a batch from the server's pool: this one, the rest for the next events */
        c = pool_take(s->srv);
        if (c && c->next) {
            struct gw_chunk *rest = c->next, *tail = rest;
            size_t k = 1;
            while (tail->next) {
                tail = tail->next;
                k++;
            }
            pthread_mutex_lock(&s->lock);
            tail->next = s->free_list;
            s->free_list = rest;
            s->n_free += k;
            pthread_mutex_unlock(&s->lock);
        }
    }
    if (!c) {
        size_t cap = n < GW_CHUNK_MIN ? GW_CHUNK_MIN : n;
        c = wye_malloc(sizeof(*c) + LWS_PRE + cap);
        if (!c) {
            return NULL;
        }
        c->cap = cap;
    }
    c->next = NULL;
    c->len = 0;
    return c;
}

enum wye_err gw_stream_push_ex(struct gw_stream *s, const void *p, size_t n, bool final, int status)
{
    struct gw_chunk *c = n ? chunk_get(s, n) : NULL;
    enum wye_err ret = WYE_OK;
    if (n && !c) {
        if (!final) {
            return WYE_ERR_NOMEM;
        }
        ret = WYE_ERR_NOMEM; /* still mark the end, so the lws side closes the answer */
    }
    if (c) {
        memcpy(GW_CHUNK_DATA(c), p, n);
        c->len = n;
    }
    size_t cap = s->srv->cfg->limits.stream_buffer_bytes;
    pthread_mutex_lock(&s->lock);
    bool was_empty = s->head == NULL;
    if (c) {
        if (s->tail) {
            s->tail->next = c;
        } else {
            s->head = c;
        }
        s->tail = c;
        s->queued += n;
    }
    if (final) {
        s->finished = true;
        s->wake = NULL;
        s->wake_arg = NULL;
        if (status) {
            s->status = status;
        }
        was_empty = true; /* the lws side must look even if nothing new was queued */
    } else if (cap && s->queued > cap) {
        if (!s->over) {
            s->over = true;
            s->full_since_ns = wye_now_ns();
        }
        ret = WYE_ERR_AGAIN;
    }
    uint64_t q = s->queued;
    pthread_mutex_unlock(&s->lock);
    /* The peak watches backpressure while streaming; the last chunk (a whole stream:false
     * body, bounded by the answer-text cap) is not part of it. */
    uint64_t peak = atomic_load(&s->srv->metrics.queued_peak);
    while (!final && q > peak &&
           !atomic_compare_exchange_weak(&s->srv->metrics.queued_peak, &peak, q)) {
    }
    if (was_empty) {
        gw_server_ready(s->srv, s);
    }
    return ret;
}

enum wye_err gw_stream_push(struct gw_stream *s, const void *p, size_t n)
{
    return gw_stream_push_ex(s, p, n, false, 0);
}

void gw_stream_cancel(struct gw_stream *s)
{
    pthread_mutex_lock(&s->lock);
    atomic_store(&s->cancelled, true);
    /* Called under the lock so that finish(), which clears wake under the same lock, cannot
     * race with a wakeup into a producer that already let go. */
    if (s->wake && !s->finished) {
        s->wake(s->wake_arg);
    }
    pthread_mutex_unlock(&s->lock);
}

struct gw_chunk *gw_stream_pop(struct gw_stream *s, bool *last)
{
    size_t cap = s->srv->cfg->limits.stream_buffer_bytes;
    pthread_mutex_lock(&s->lock);
    struct gw_chunk *c = s->head;
    if (c) {
        s->head = c->next;
        if (!s->head) {
            s->tail = NULL;
        }
        s->queued -= c->len;
        c->next = NULL;
    }
    if (s->over && s->queued <= cap / 2) {
        s->over = false;
        s->full_since_ns = 0;
        if (s->wake && !s->finished) {
            s->wake(s->wake_arg);
        }
    }
    *last = s->finished && !s->head;
    pthread_mutex_unlock(&s->lock);
    return c;
}

struct gw_chunk *gw_stream_pop_upto(struct gw_stream *s, size_t max, bool *last)
{
    size_t cap = s->srv->cfg->limits.stream_buffer_bytes;
    pthread_mutex_lock(&s->lock);
    struct gw_chunk *first = s->head, *c = s->head, *end = NULL;
    size_t n = 0;
    while (c && (n == 0 || n + c->len <= max)) {
        n += c->len;
        end = c;
        c = c->next;
    }
    if (end) {
        s->head = end->next;
        if (!s->head) {
            s->tail = NULL;
        }
        s->queued -= n;
        end->next = NULL;
    } else {
        first = NULL;
    }
    if (s->over && s->queued <= cap / 2) {
        s->over = false;
        s->full_since_ns = 0;
        if (s->wake && !s->finished) {
            s->wake(s->wake_arg);
        }
    }
    *last = s->finished && !s->head;
    pthread_mutex_unlock(&s->lock);
    return first;
}

void gw_stream_recycle_list(struct gw_stream *s, struct gw_chunk *list)
{
    struct gw_chunk *spill = NULL;
    pthread_mutex_lock(&s->lock);
    while (list) {
        struct gw_chunk *n = list->next;
        if (s->n_free < GW_FREE_MAX) {
            list->next = s->free_list;
            s->free_list = list;
            s->n_free++;
        } else {
            list->next = spill;
            spill = list;
        }
        list = n;
    }
    pthread_mutex_unlock(&s->lock);
    chunk_free_list(spill);
}

void gw_stream_recycle(struct gw_stream *s, struct gw_chunk *c)
{
    pthread_mutex_lock(&s->lock);
    if (s->n_free < GW_FREE_MAX) {
        c->next = s->free_list;
        s->free_list = c;
        s->n_free++;
        c = NULL;
    }
    pthread_mutex_unlock(&s->lock);
    wye_free(c);
}

bool gw_stream_has_output(struct gw_stream *s)
{
    pthread_mutex_lock(&s->lock);
    bool has = s->head != NULL;
    pthread_mutex_unlock(&s->lock);
    return has;
}

void gw_stream_clear(struct gw_stream *s)
{
    pthread_mutex_lock(&s->lock);
    struct gw_chunk *c = s->head;
    s->head = s->tail = NULL;
    s->queued = 0;
    pthread_mutex_unlock(&s->lock);
    chunk_free_list(c);
}

void gw_stream_release(struct gw_stream *s)
{
    if (s->lws_done) {
        return;
    }
    s->lws_done = true;
    s->wsi = NULL;
    pthread_mutex_lock(&s->lock);
    bool running = !s->finished;
    pthread_mutex_unlock(&s->lock);
    if (running) {
        gw_stream_cancel(s);
    }
    gw_server_untrack(s->srv, s);
    atomic_fetch_sub(&s->srv->metrics.open_streams, 1);
    gw_stream_unref(s);
}

/* ---- the sink ---- */

static void sink_start(void *ctx, const struct wye_start *info)
{
    struct gw_stream *s = ctx;
    pthread_mutex_lock(&s->lock);
    s->started = true;
    if (info) {
        snprintf(s->route, sizeof(s->route), "%s", info->route ? info->route : "");
        if (info->model && info->model[0]) {
            snprintf(s->model, sizeof(s->model), "%s", info->model);
        }
        s->score = info->score;
        /* Kept only whole: a cut JSON array would be worse than none. */
        size_t n = info->reasons ? strlen(info->reasons) : 0;
        if (n < sizeof(s->reasons)) {
            memcpy(s->reasons, n ? info->reasons : "", n + 1);
        }
    }
    pthread_mutex_unlock(&s->lock);
}

static enum wye_err sink_emit(void *ctx, const struct wye_event *ev)
{
    struct gw_stream *s = ctx;
    if (atomic_load(&s->cancelled)) {
        return WYE_ERR_CANCELED;
    }
    size_t cap = s->srv->cfg->limits.stream_buffer_bytes;
    pthread_mutex_lock(&s->lock);
    bool runaway = cap && s->queued > GW_HARD_FACTOR * cap;
    pthread_mutex_unlock(&s->lock);
    if (runaway) {
        /* The producer ignored AGAIN: cut it off rather than grow without bound. */
        wye_log(WYE_LOG_WARN, s->reqid, "producer ignored backpressure; cancelling the stream");
        atomic_store(&s->cancelled, true);
        return WYE_ERR_CANCELED;
    }
    if (ev->type == WYE_EV_DELTA || ev->type == WYE_EV_TOOL_DELTA) {
        if (!s->ttft_done) {
            s->ttft_done = true;
            s->ttft_ns = wye_now_ns() - s->t0_ns;
            gw_metrics_observe(&s->srv->metrics.ttft, s->ttft_ns);
        }
    }
    return gw_fmt_event(s, ev);
}

static void sink_finish(void *ctx, const struct wye_result *res)
{
    struct gw_stream *s = ctx;
    struct gw_metrics *m = &s->srv->metrics;
    gw_metrics_observe(&m->latency, wye_now_ns() - s->t0_ns);
    if (res->usage.prompt_tokens || res->usage.completion_tokens || !s->have_usage) {
        s->usage = res->usage;
        s->have_usage = true;
    }
    const struct wye_usage *u = &s->usage;
    if (u->prompt_tokens > 0) {
        atomic_fetch_add(&m->tokens_prompt, (uint64_t)u->prompt_tokens);
    }
    if (u->completion_tokens > 0) {
        atomic_fetch_add(&m->tokens_completion, (uint64_t)u->completion_tokens);
    }
    gw_fmt_finish(s, res); /* queues the last chunk and marks the stream finished */
    gw_stream_unref(s);
}

static bool sink_cancelled(void *ctx)
{
    struct gw_stream *s = ctx;
    return atomic_load(&s->cancelled);
}

static void sink_set_wakeup(void *ctx, void (*wake)(void *arg), void *arg)
{
    struct gw_stream *s = ctx;
    pthread_mutex_lock(&s->lock);
    s->wake = wake;
    s->wake_arg = arg;
    pthread_mutex_unlock(&s->lock);
}

static const struct wye_sink_ops gw_sink_ops = {
    .start = sink_start,
    .emit = sink_emit,
    .finish = sink_finish,
    .cancelled = sink_cancelled,
    .set_wakeup = sink_set_wakeup,
};

struct wye_sink gw_stream_sink(struct gw_stream *s)
{
    struct wye_sink sink = {.ops = &gw_sink_ops, .ctx = s};
    return sink;
}
