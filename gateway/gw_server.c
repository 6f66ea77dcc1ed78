/* The gateway server: the lws context, its one service thread, the protocol callback that
 * dispatches to HTTP (gw_http.c) and WebSocket (gw_ws.c) handling, the ready list and the
 * periodic tick (slow clients, idle sockets, shutdown phases).
 *
 * DESIGN: exactly one thread (started by gw_server_start) runs lws_service and owns every
 * struct lws, pss and timer. Producers on other threads only touch a gw_stream: they queue
 * preformatted chunks under the stream's lock and, when its queue goes from empty to
 * non-empty, put it on the server's ready list and call lws_cancel_service() (the only lws
 * call made off the lws thread; made under poke_lock, not ready_lock, so it never races the
 * context's destruction and the woken lws thread never finds the ready list locked). LWS_CALLBACK_EVENT_WAIT_CANCELLED splices the ready list and asks for
 * WRITEABLE on each live stream's connection; WRITEABLE does one lws_write. Credit goes back
 * to the producer (its wakeup) when the queue drains below half the high-water mark.
 * A second thread, the ledger summary worker (gw_http.c), starts with the lws thread and is
 * joined after it: it is a producer like the backends, so the lws thread never reads files. */
#include <arpa/inet.h>
#include <netdb.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

#include "common/alloc.h"
#include "common/clock.h"
#include "common/log.h"
#include "gateway/gw_internal.h"

#define GW_WBUF_MAX ((size_t)256 << 20)

static void poke(struct gw_server *srv)
{
    pthread_mutex_lock(&srv->poke_lock);
    if (srv->ctx_alive) {
        lws_cancel_service(srv->ctx);
    }
    pthread_mutex_unlock(&srv->poke_lock);
}

/* Stops producers from poking the context (before it is destroyed). */
static void ctx_dying(struct gw_server *srv)
{
    pthread_mutex_lock(&srv->poke_lock);
    srv->ctx_alive = false;
    pthread_mutex_unlock(&srv->poke_lock);
}

void gw_server_ready(struct gw_server *srv, struct gw_stream *s)
{
    bool was_empty = false;
    pthread_mutex_lock(&srv->ready_lock);
    if (!s->in_ready) {
        was_empty = srv->ready == NULL;
        s->in_ready = true;
        gw_stream_ref(s);
        s->ready_next = srv->ready;
        srv->ready = s;
    }
    pthread_mutex_unlock(&srv->ready_lock);
    /* After unlocking: the lws thread splices the list under ready_lock as soon as it wakes.
     * A splice between the unlock and the poke only makes that poke a spare wakeup. */
    if (was_empty) {
        poke(srv);
    }
}

void gw_server_track(struct gw_server *srv, struct gw_stream *s)
{
    s->all_prev = NULL;
    s->all_next = srv->streams;
    if (srv->streams) {
        srv->streams->all_prev = s;
    }
    srv->streams = s;
}

void gw_server_untrack(struct gw_server *srv, struct gw_stream *s)
{
    if (s->all_prev) {
        s->all_prev->all_next = s->all_next;
    } else if (srv->streams == s) {
        srv->streams = s->all_next;
    }
    if (s->all_next) {
        s->all_next->all_prev = s->all_prev;
    }
    s->all_prev = s->all_next = NULL;
}

void gw_server_chat_limits(const struct gw_server *srv, struct wye_chat_limits *lim)
{
    lim->depth_max = srv->cfg->limits.json_depth_max;
    lim->n_msgs_max = srv->cfg->limits.n_msgs_max;
    lim->max_tokens_max = srv->cfg->limits.max_tokens_max;
}

/* lws thread: drain the ready list. */
static void service_ready(struct gw_server *srv)
{
    pthread_mutex_lock(&srv->ready_lock);
    struct gw_stream *s = srv->ready;
    srv->ready = NULL;
    /* Once in_ready is false a producer may put a stream on the (new) ready list again,
     * rewriting its ready_next; the walk below must not follow that, or it would skip the
     * rest of this list (those streams would never be written nor released). */
    for (struct gw_stream *t = s; t; t = t->ready_next) {
        t->in_ready = false;
        t->svc_next = t->ready_next;
    }
    pthread_mutex_unlock(&srv->ready_lock);
    while (s) {
        struct gw_stream *next = s->svc_next;
        if (!s->lws_done && s->wsi) {
            lws_callback_on_writable(s->wsi);
        }
        gw_stream_unref(s);
        s = next;
    }
}

/* lws thread: the periodic tick. */
static void tick(lws_sorted_usec_list_t *sul)
{
    struct gw_server *srv = lws_container_of(sul, struct gw_server, sul_tick);
    int64_t now = wye_now_ns();
    int64_t slow_ns = (int64_t)srv->cfg->limits.slow_client_timeout_ms * WYE_NS_PER_MS;
    bool cancel_all = atomic_load(&srv->cancel_all);
    for (struct gw_stream *s = srv->streams; s; s = s->all_next) {
        if (cancel_all && !atomic_load(&s->cancelled)) {
            gw_stream_cancel(s);
        }
        pthread_mutex_lock(&s->lock);
        bool slow = slow_ns > 0 && s->over && s->full_since_ns && now - s->full_since_ns > slow_ns;
        pthread_mutex_unlock(&s->lock);
        if (slow && !s->killed && s->wsi) {
            s->killed = true;
            atomic_fetch_add(&srv->metrics.slow_dropped, 1);
            wye_log(WYE_LOG_WARN, s->reqid, "client stopped reading for %d ms; disconnecting it",
                    srv->cfg->limits.slow_client_timeout_ms);
            gw_stream_cancel(s);
            if (s->conn) {
                gw_ws_kill(s->conn, "slow reader");
            } else {
                lws_set_timeout(s->wsi, PENDING_TIMEOUT_USER_OK, LWS_TO_KILL_ASYNC);
            }
        }
    }
    gw_ws_tick(srv, now);
    if (!atomic_load(&srv->stop)) {
        lws_sul_schedule(srv->ctx, 0, &srv->sul_tick, tick, (lws_usec_t)srv->tick_ms * 1000);
    }
}

static int gw_callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                       size_t len)
{
    struct lws_context *ctx = wsi ? lws_get_context(wsi) : NULL;
    struct gw_server *srv = ctx ? lws_context_user(ctx) : NULL;
    struct gw_pss *pss = user;
    if (!srv) {
        return 0;
    }
    switch (reason) {
    case LWS_CALLBACK_EVENT_WAIT_CANCELLED:
        service_ready(srv);
        return 0;
    case LWS_CALLBACK_SERVER_NEW_CLIENT_INSTANTIATED:
        lws_set_opaque_user_data(wsi, &srv->conn_marker);
        atomic_fetch_add(&srv->metrics.open_connections, 1);
        return 0;
    case LWS_CALLBACK_WSI_DESTROY:
        if (lws_get_opaque_user_data(wsi) == &srv->conn_marker) {
            lws_set_opaque_user_data(wsi, NULL);
            atomic_fetch_sub(&srv->metrics.open_connections, 1);
        }
        if (pss) {
            gw_http_cleanup(srv, pss);
            gw_ws_callback(srv, wsi, LWS_CALLBACK_CLOSED, pss, NULL, 0);
        }
        return 0;
    case LWS_CALLBACK_ESTABLISHED:
    case LWS_CALLBACK_RECEIVE:
    case LWS_CALLBACK_SERVER_WRITEABLE:
    case LWS_CALLBACK_CLOSED:
    case LWS_CALLBACK_FILTER_PROTOCOL_CONNECTION:
    case LWS_CALLBACK_WS_PEER_INITIATED_CLOSE:
        return gw_ws_callback(srv, wsi, reason, pss, in, len);
    default:
        return gw_http_callback(srv, wsi, reason, pss, in, len);
    }
}

static const struct lws_protocols gw_protocols[] = {
    {"wye.v1", gw_callback, sizeof(struct gw_pss), 4096, 0, NULL, 0},
    {NULL, NULL, 0, 0, 0, NULL, 0},
};

static void lws_log_to_wye(int level, const char *line)
{
    size_t n = strlen(line);
    while (n && (line[n - 1] == '\n' || line[n - 1] == '\r')) {
        n--;
    }
    wye_log(level == LLL_ERR ? WYE_LOG_ERROR : WYE_LOG_WARN, NULL, "lws: %.*s", (int)n, line);
}

/* libwebsockets binds to an IP address or an interface name: resolve a host name first (on
 * the creating thread, before the lws thread exists). Returns false if it cannot. */
static bool resolve_listen_host(const char *host, char *out, size_t outlen)
{
    struct addrinfo hints, *res = NULL;
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICHOST;
    if (getaddrinfo(host, NULL, &hints, &res) == 0) {
        freeaddrinfo(res);
        snprintf(out, outlen, "%s", host); /* already numeric */
        return true;
    }
    hints.ai_flags = 0;
    hints.ai_family = AF_INET; /* prefer IPv4 for names such as "localhost" */
    if (getaddrinfo(host, NULL, &hints, &res) != 0) {
        hints.ai_family = AF_UNSPEC;
        if (getaddrinfo(host, NULL, &hints, &res) != 0) {
            return false;
        }
    }
    const void *addr =
        res->ai_family == AF_INET
            ? (const void *)&((struct sockaddr_in *)(void *)res->ai_addr)->sin_addr
            : (const void *)&((struct sockaddr_in6 *)(void *)res->ai_addr)->sin6_addr;
    bool ok = inet_ntop(res->ai_family, addr, out, (socklen_t)outlen) != NULL;
    freeaddrinfo(res);
    return ok;
}

struct gw_server *gw_server_create(const struct conf_config *cfg, const struct gw_backend_ops *ops,
                                   void *ctx)
{
    struct gw_server *srv = wye_calloc(1, sizeof(*srv));
    if (!srv) {
        return NULL;
    }
    srv->cfg = cfg;
    srv->ops = *ops;
    srv->ops_ctx = ctx;
    int t = cfg->limits.slow_client_timeout_ms / 4;
    srv->tick_ms = t < 10 ? 10 : t > 100 ? 100 : t;
    wye_buf_init(&srv->wbuf, GW_WBUF_MAX);
    if (pthread_mutex_init(&srv->ready_lock, NULL) != 0) {
        goto fail_free;
    }
    if (pthread_mutex_init(&srv->poke_lock, NULL) != 0) {
        goto fail_ready_lock;
    }
    if (pthread_mutex_init(&srv->pool_lock, NULL) != 0) {
        goto fail_poke_lock;
    }
    lws_set_log_level(LLL_ERR, lws_log_to_wye); /* client mistakes are answered, not logged */

    struct lws_context_creation_info info;
    memset(&info, 0, sizeof(info));
    info.options = LWS_SERVER_OPTION_EXPLICIT_VHOSTS;
    info.port = CONTEXT_PORT_NO_LISTEN;
    info.protocols = gw_protocols;
    info.user = srv;
    info.pt_serv_buf_size = 32 * 1024;
    info.max_http_header_data = 8192;
    info.timeout_secs = 30;
    info.ka_time = 0;
    srv->retry.secs_since_valid_ping =
        (uint16_t)(cfg->limits.ws_ping_interval_s > 0 ? cfg->limits.ws_ping_interval_s : 30);
    srv->retry.secs_since_valid_hangup = (uint16_t)(srv->retry.secs_since_valid_ping * 2 + 5);
    info.retry_and_idle_policy = &srv->retry;
    srv->ctx = lws_create_context(&info);
    if (!srv->ctx) {
        WYE_ERROR("gateway: cannot create the libwebsockets context");
        goto fail_lock;
    }
    info.port = cfg->listen_port;
    info.iface = NULL; /* every address */
    if (cfg->listen_host && cfg->listen_host[0] && strcmp(cfg->listen_host, "*") != 0) {
        if (!resolve_listen_host(cfg->listen_host, srv->listen_addr, sizeof(srv->listen_addr))) {
            WYE_ERROR("gateway: cannot resolve listen_host '%s'", cfg->listen_host);
            goto fail_ctx;
        }
        info.iface = srv->listen_addr;
        if (!strchr(srv->listen_addr, ':')) {
            info.options |= LWS_SERVER_OPTION_DISABLE_IPV6; /* bind the IPv4 address itself */
        }
    }
    info.vhost_name = "wye";
    srv->vhost = lws_create_vhost(srv->ctx, &info);
    if (!srv->vhost) {
        WYE_ERROR("gateway: cannot listen on %s:%d (address in use or invalid?)",
                  info.iface ? info.iface : "*", cfg->listen_port);
        goto fail_ctx;
    }
    srv->port = lws_get_vhost_listen_port(srv->vhost);
    srv->ctx_alive = true;
    return srv;

fail_ctx:
    lws_context_destroy(srv->ctx);
fail_lock:
    pthread_mutex_destroy(&srv->pool_lock);
fail_poke_lock:
    pthread_mutex_destroy(&srv->poke_lock);
fail_ready_lock:
    pthread_mutex_destroy(&srv->ready_lock);
fail_free:
    wye_buf_cleanup(&srv->wbuf);
    wye_free(srv);
    return NULL;
}

static void *service_main(void *arg)
{
    struct gw_server *srv = arg;
    (void)pthread_setname_np(pthread_self(), "wye-lws");
    lws_sul_schedule(srv->ctx, 0, &srv->sul_tick, tick, (lws_usec_t)srv->tick_ms * 1000);
    while (!atomic_load(&srv->stop)) {
        if (lws_service(srv->ctx, 0) < 0) {
            break;
        }
    }
    lws_sul_cancel(&srv->sul_tick);
    /* From here on producers must not poke the context. */
    ctx_dying(srv);
    /* Closes every connection: each close releases its streams on this thread. */
    lws_context_destroy(srv->ctx);
    srv->ctx = NULL;
    service_ready(srv);
    return NULL;
}

enum wye_err gw_server_start(struct gw_server *srv)
{
    if (srv->thread_started) {
        return WYE_ERR_INVAL;
    }
    if (gw_summary_start(srv) != WYE_OK) {
        return WYE_ERR_IO;
    }
    int rc = pthread_create(&srv->thread, NULL, service_main, srv);
    if (rc != 0) {
        char eb[128];
        WYE_ERROR("gateway: cannot start the service thread: %s", wye_strerror(rc, eb, sizeof(eb)));
        gw_summary_stop(srv);
        return WYE_ERR_IO;
    }
    srv->thread_started = true;
    return WYE_OK;
}

int gw_server_port(const struct gw_server *srv)
{
    return srv->port;
}

static void wait_streams(struct gw_server *srv, int64_t ms)
{
    int64_t deadline = wye_now_ns() + ms * WYE_NS_PER_MS;
    while (atomic_load(&srv->metrics.open_streams) > 0 && wye_now_ns() < deadline) {
        wye_sleep_ms(5);
    }
}

void gw_server_shutdown(struct gw_server *srv)
{
    if (!srv || srv->shut_down) {
        return;
    }
    srv->shut_down = true;
    atomic_store(&srv->draining, true);
    if (srv->thread_started) {
        poke(srv);
        wait_streams(srv, srv->cfg->limits.shutdown_grace_ms);
        if (atomic_load(&srv->metrics.open_streams) > 0) {
            WYE_INFO("gateway: cancelling %lld answers still in flight",
                     (long long)atomic_load(&srv->metrics.open_streams));
        }
        atomic_store(&srv->cancel_all, true);
        poke(srv);
        wait_streams(srv, 1000);
        atomic_store(&srv->stop, true);
        poke(srv);
        pthread_join(srv->thread, NULL);
        srv->thread_started = false;
        gw_summary_stop(srv); /* after the lws thread: no more jobs come */
    } else if (srv->ctx) {
        ctx_dying(srv);
        lws_context_destroy(srv->ctx);
        srv->ctx = NULL;
    }
}

void gw_server_destroy(struct gw_server *srv)
{
    if (!srv) {
        return;
    }
    gw_server_shutdown(srv);
    int64_t deadline = wye_now_ns() + 2 * WYE_NS_PER_S;
    while (atomic_load(&srv->n_live_streams) > 0 && wye_now_ns() < deadline) {
        service_ready(srv);
        wye_sleep_ms(5);
    }
    service_ready(srv);
    if (atomic_load(&srv->n_live_streams) > 0) {
        WYE_ERROR("gateway: %lld streams still held by producers; leaking the server",
                  (long long)atomic_load(&srv->n_live_streams));
        return;
    }
    gw_chunk_pool_cleanup(srv);
    pthread_mutex_destroy(&srv->pool_lock);
    pthread_mutex_destroy(&srv->poke_lock);
    pthread_mutex_destroy(&srv->ready_lock);
    wye_buf_cleanup(&srv->wbuf);
    wye_free(srv);
}

void gw_server_stats(struct gw_server *srv, struct gw_stats *out)
{
    out->open_connections = atomic_load(&srv->metrics.open_connections);
    out->open_streams = atomic_load(&srv->metrics.open_streams);
    out->queued_bytes_peak = atomic_load(&srv->metrics.queued_peak);
    out->slow_clients_dropped = atomic_load(&srv->metrics.slow_dropped);
    out->requests_total = atomic_load(&srv->metrics.requests_total);
}
