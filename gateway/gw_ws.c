/* The WebSocket protocol on /v1/ws (lws thread only): JSON text events modelled on the
 * OpenAI Realtime API's text events (docs/protocol.md). Several responses are multiplexed on
 * one socket by the client's id; each has its own stream. Output is one event per WebSocket
 * message, so WRITEABLE writes one chunk, taking connection-level events (errors) first and
 * then the streams round-robin. A connection authenticates with a "wye.key.<key>" entry in
 * Sec-WebSocket-Protocol or a first {"type":"auth","key":...} event; until then every other
 * event is refused, and a few refusals close the socket. */
#include <cJSON.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "common/alloc.h"
#include "common/clock.h"
#include "common/crypto.h"
#include "common/log.h"
#include "gateway/gw_internal.h"
#include "router/keys.h"

#define GW_CTL_MAX 64
#define GW_ID_MAX 128
#define GW_AUTH_FAILURES_MAX 3  /* refused auth attempts before the socket closes */
#define GW_PROTO_HDR_MAX 1024   /* Sec-WebSocket-Protocol bytes examined */
#define GW_KEY_PROTO "wye.key." /* subprotocol entry carrying the key */

/* Queues a connection-level event; a client that provokes too many is dropped. */
static void ctl_push(struct gw_ws_conn *c, const char *p, size_t n)
{
    if (c->n_ctl >= GW_CTL_MAX) {
        gw_ws_kill(c, "too many unread error events");
        return;
    }
    struct gw_chunk *ch = wye_malloc(sizeof(*ch) + LWS_PRE + n + 1);
    if (!ch) {
        gw_ws_kill(c, "out of memory");
        return;
    }
    ch->next = NULL;
    ch->cap = n;
    ch->len = n;
    memcpy(GW_CHUNK_DATA(ch), p, n);
    if (c->ctl_tail) {
        c->ctl_tail->next = ch;
    } else {
        c->ctl_head = ch;
    }
    c->ctl_tail = ch;
    c->n_ctl++;
    lws_callback_on_writable(c->wsi);
}

static void send_error(struct gw_ws_conn *c, const char *id, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void send_error(struct gw_ws_conn *c, const char *id, const char *code, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    /* The error type follows the HTTP status the same refusal would get. */
    int status =
        strcmp(code, "shutting_down") == 0 || strcmp(code, "connections_max") == 0 ||
                strcmp(code, "overloaded") == 0
            ? 503
        : strcmp(code, "model_not_found") == 0 || strcmp(code, "agent_not_found") == 0  ? 404
        : strcmp(code, "rate_limited") == 0 || strcmp(code, "rate_limit_exceeded") == 0 ? 429
        : strcmp(code, "missing_api_key") == 0 || strcmp(code, "invalid_api_key") == 0  ? 401
        : strcmp(code, "internal_error") == 0                                           ? 500
                                                                                        : 400;
    struct wye_buf b;
    wye_buf_init(&b, 4096);
    if (gw_fmt_ws_error(&b, status, id, code, msg) == WYE_OK) {
        ctl_push(c, b.data, b.len);
    }
    wye_buf_cleanup(&b);
}

static void close_after(struct gw_ws_conn *c, enum lws_close_status status, const char *reason)
{
    c->closing = true;
    c->close_status = status;
    snprintf(c->close_reason, sizeof(c->close_reason), "%s", reason);
    lws_callback_on_writable(c->wsi);
}

void gw_ws_kill(struct gw_ws_conn *c, const char *why)
{
    wye_log(WYE_LOG_INFO, NULL, "closing a WebSocket: %s", why);
    for (struct gw_stream *s = c->streams; s; s = s->conn_next) {
        gw_stream_cancel(s);
    }
    lws_set_timeout(c->wsi, PENDING_TIMEOUT_USER_OK, LWS_TO_KILL_ASYNC);
}

/* A refused authentication (or an event before authentication): error, then close after a
 * few. */
static void auth_fail(struct gw_ws_conn *c, const char *id, const char *code, const char *msg)
{
    c->auth_failures++;
    send_error(c, id, code, "%s", msg);
    if (c->auth_failures >= GW_AUTH_FAILURES_MAX) {
        close_after(c, LWS_CLOSE_STATUS_POLICY_VIOLATION, "authentication failed");
    }
}

/* announce: a key was presented (anonymous and table-less sockets get no event). */
static void auth_ok(struct gw_ws_conn *c, struct rt_key *key, bool announce)
{
    c->key = key;
    c->authed = true;
    if (!key || !announce) {
        return;
    }
    struct wye_buf b;
    wye_buf_init(&b, 256);
    enum wye_err err = wye_buf_append_str(&b, "{\"type\":\"auth.ok\",\"key_name\":");
    if (!err) {
        const char *name = rt_key_name(key);
        err = wye_buf_append_json_str(&b, name, strlen(name));
    }
    if (!err) {
        err = wye_buf_append_str(&b, "}");
    }
    if (!err) {
        ctl_push(c, b.data, b.len);
    }
    wye_buf_cleanup(&b);
}

static void handle_auth(struct gw_ws_conn *c, cJSON *root, const char *id)
{
    cJSON *jkey = cJSON_GetObjectItemCaseSensitive(root, "key");
    char *key = cJSON_IsString(jkey) ? jkey->valuestring : NULL;
    size_t len = key ? strlen(key) : 0;
    struct rt_key *k = NULL;
    enum gw_auth_status st = len ? gw_auth_check(c->srv, key, len, &k) : GW_AUTH_MISSING;
    if (key) {
        explicit_bzero(key, len);
    }
    explicit_bzero(c->rx.data, c->rx.len);
    c->authed = false;
    c->key = NULL;
    if (st == GW_AUTH_OK) {
        auth_ok(c, k, true);
    } else if (st == GW_AUTH_UNWIRED) {
        send_error(c, id, "internal_error",
                   "authentication is required but no key table is loaded");
        close_after(c, LWS_CLOSE_STATUS_UNEXPECTED_CONDITION, "no key table");
    } else if (st == GW_AUTH_MISSING) {
        auth_fail(c, id, "missing_api_key", "missing API key: the auth event needs a string 'key'");
    } else {
        auth_fail(c, id, "invalid_api_key", "invalid API key");
    }
}

/* At the upgrade: a "wye.key.<key>" entry in Sec-WebSocket-Protocol, or none. */
static void auth_from_protocol(struct gw_ws_conn *c)
{
    char hdr[GW_PROTO_HDR_MAX + 1];
    struct lws *wsi = c->wsi;
    int total = lws_hdr_total_length(wsi, WSI_TOKEN_PROTOCOL);
    const char *key = NULL;
    size_t len = 0;
    bool too_long = total > GW_PROTO_HDR_MAX;
    if (total > 0 && !too_long &&
        lws_hdr_copy(wsi, hdr, sizeof(hdr), WSI_TOKEN_PROTOCOL) == total) {
        for (char *p = hdr; *p;) {
            p += strspn(p, ", \t");
            size_t n = strcspn(p, ", \t");
            if (n > strlen(GW_KEY_PROTO) && strncmp(p, GW_KEY_PROTO, strlen(GW_KEY_PROTO)) == 0) {
                key = p + strlen(GW_KEY_PROTO);
                len = n - strlen(GW_KEY_PROTO);
            }
            p += n;
        }
    }
    struct rt_key *k = NULL;
    enum gw_auth_status st = too_long ? GW_AUTH_INVALID : gw_auth_check(c->srv, key, len, &k);
    if (total > 0) {
        explicit_bzero(hdr, sizeof(hdr));
    }
    if (st == GW_AUTH_OK) {
        auth_ok(c, k, key != NULL);
    } else if (st == GW_AUTH_INVALID) {
        c->auth_failures = GW_AUTH_FAILURES_MAX - 1;
        auth_fail(c, NULL, "invalid_api_key", "invalid API key");
    } else if (st == GW_AUTH_UNWIRED) {
        send_error(c, NULL, "internal_error",
                   "authentication is required but no key table is loaded");
        close_after(c, LWS_CLOSE_STATUS_UNEXPECTED_CONDITION, "no key table");
    }
    /* MISSING: wait for the auth event. */
}

static struct gw_stream *find_stream(struct gw_ws_conn *c, const char *id)
{
    for (struct gw_stream *s = c->streams; s; s = s->conn_next) {
        if (s->client_id && strcmp(s->client_id, id) == 0) {
            return s;
        }
    }
    return NULL;
}

static void unlink_stream(struct gw_ws_conn *c, struct gw_stream *s)
{
    for (struct gw_stream **pp = &c->streams; *pp; pp = &(*pp)->conn_next) {
        if (*pp == s) {
            *pp = s->conn_next;
            c->n_streams--;
            break;
        }
    }
    if (c->rr == s) {
        c->rr = NULL;
    }
    s->conn_next = NULL;
    s->conn = NULL;
}

static void handle_create(struct gw_ws_conn *c, cJSON *root, const char *id)
{
    struct gw_server *srv = c->srv;
    char eb[512];
    atomic_fetch_add(&srv->metrics.requests_total, 1);
    if (atomic_load(&srv->draining)) {
        send_error(c, id, "shutting_down", "the server is shutting down");
        return;
    }
    int retry_s = 0;
    if (!gw_auth_rate(c->key, &retry_s)) {
        send_error(c, id, "rate_limit_exceeded", "rate limit of %s exceeded; retry after %d s",
                   rt_key_name(c->key), retry_s);
        return;
    }
    if (find_stream(c, id)) {
        send_error(c, id, "duplicate_id", "a response with id '%.128s' is already in flight", id);
        return;
    }
    int max = srv->cfg->limits.streams_per_conn_max;
    if (max > 0 && c->n_streams >= max) {
        send_error(c, id, "streams_per_conn_max",
                   "too many responses in flight on this connection (streams_per_conn_max = %d)",
                   max);
        return;
    }
    cJSON *body = NULL;
    enum wye_err berr = gw_ws_create_body(root, &body);
    if (berr) {
        if (berr == WYE_ERR_NOMEM) {
            send_error(c, id, "internal_error", "out of memory");
        } else {
            send_error(c, id, "invalid_request", "'response' must be an object");
        }
        return;
    }
    struct wye_chat_limits lim;
    gw_server_chat_limits(srv, &lim);
    struct wye_chat_req *req = NULL;
    enum wye_err err = wye_chat_req_from_json(body, &lim, &req, eb, sizeof(eb));
    if (err) {
        send_error(c, id, err == WYE_ERR_TOOBIG ? "limit_exceeded" : "invalid_request", "%s",
                   eb[0] ? eb : wye_err_str(err));
        return;
    }
    req->stream = true;
    req->t_received_ns = wye_now_ns();
    req->client_id = wye_strdup(id);
    bool nomem = false;
    req->key_name = gw_auth_name(c->key, &nomem);
    if (nomem || !req->client_id || wye_reqid_new(req->id) != WYE_OK) {
        wye_chat_req_destroy(req);
        send_error(c, id, "internal_error", "out of memory");
        return;
    }
    struct gw_stream *s = gw_stream_create(srv, GW_KIND_WS, req);
    if (!s) {
        wye_chat_req_destroy(req);
        send_error(c, id, "internal_error", "out of memory");
        return;
    }
    s->wsi = c->wsi;
    s->conn = c;
    s->conn_next = c->streams;
    c->streams = s;
    c->n_streams++;
    gw_server_track(srv, s);
    atomic_fetch_add(&srv->metrics.open_streams, 1);
    /* response.created goes first, before the producer can emit anything. */
    struct wye_buf b;
    wye_buf_init(&b, 1024);
    err = wye_buf_append_str(&b, "{\"type\":\"response.created\",\"id\":");
    if (!err) {
        err = wye_buf_append_json_str(&b, id, strlen(id));
    }
    if (!err) {
        err = wye_buf_printf(&b, ",\"request_id\":\"%s\"}", s->reqid);
    }
    if (!err) {
        gw_stream_push(s, b.data, b.len);
    }
    wye_buf_cleanup(&b);
    eb[0] = '\0';
    err = srv->ops.submit(srv->ops_ctx, req, gw_stream_sink(s), eb, sizeof(eb));
    if (err) {
        gw_stream_unref(s); /* the producer's reference */
        gw_stream_clear(s);
        unlink_stream(c, s);
        gw_stream_release(s);
        send_error(c, id,
                   err == WYE_ERR_NOTFOUND ? "model_not_found"
                   : err == WYE_ERR_LIMIT  ? "rate_limited"
                   : err == WYE_ERR_AGAIN  ? "overloaded"
                                           : "request_refused",
                   "%s", eb[0] ? eb : wye_err_str(err));
    }
}

/* {"type":"agent.run","id":..,"name":..,"input":..}: a run of an agent or workflow
 * (gw_agents.c) on its own stream, under the same checks as response.create. */
static void handle_agent_run(struct gw_ws_conn *c, cJSON *root, const char *id)
{
    struct gw_server *srv = c->srv;
    char eb[512] = "";
    atomic_fetch_add(&srv->metrics.requests_total, 1);
    const cJSON *name = cJSON_GetObjectItemCaseSensitive(root, "name");
    const cJSON *input = cJSON_GetObjectItemCaseSensitive(root, "input");
    int retry_s = 0;
    int max = srv->cfg->limits.streams_per_conn_max;
    if (atomic_load(&srv->draining)) {
        send_error(c, id, "shutting_down", "the server is shutting down");
    } else if (!gw_auth_rate(c->key, &retry_s)) {
        send_error(c, id, "rate_limit_exceeded", "rate limit of %s exceeded; retry after %d s",
                   rt_key_name(c->key), retry_s);
    } else if (find_stream(c, id)) {
        send_error(c, id, "duplicate_id", "a response with id '%.128s' is already in flight", id);
    } else if (max > 0 && c->n_streams >= max) {
        send_error(c, id, "streams_per_conn_max",
                   "too many responses in flight on this connection (streams_per_conn_max = %d)",
                   max);
    } else if (!cJSON_IsString(name) || !name->valuestring[0] ||
               strlen(name->valuestring) >= GW_AGENT_NAME_MAX || !cJSON_IsString(input)) {
        send_error(c, id, "invalid_request",
                   "agent.run needs a string 'name' (1 to %d characters) and a string 'input'",
                   GW_AGENT_NAME_MAX - 1);
    } else {
        struct wye_chat_req req;
        memset(&req, 0, sizeof(req));
        req.client_id = (char *)id;
        req.model = name->valuestring;
        req.t_received_ns = wye_now_ns();
        if (wye_reqid_new(req.id) != WYE_OK) {
            send_error(c, id, "internal_error", "cannot create a request id");
            return;
        }
        struct gw_stream *s = gw_stream_create(srv, GW_KIND_WS, &req);
        if (!s) {
            send_error(c, id, "internal_error", "out of memory");
            return;
        }
        s->wsi = c->wsi;
        s->conn = c;
        s->conn_next = c->streams;
        c->streams = s;
        c->n_streams++;
        gw_server_track(srv, s);
        atomic_fetch_add(&srv->metrics.open_streams, 1);
        enum wye_err err = gw_agents_start(srv, s, name->valuestring, input->valuestring, eb,
                                           sizeof(eb));
        if (err) {
            gw_stream_unref(s); /* the producer's reference */
            gw_stream_clear(s);
            unlink_stream(c, s);
            gw_stream_release(s);
            send_error(c, id, err == WYE_ERR_NOTFOUND ? "agent_not_found" : "request_refused",
                       "%s", eb[0] ? eb : wye_err_str(err));
        }
    }
}

static void handle_message(struct gw_ws_conn *c)
{
    struct gw_server *srv = c->srv;
    int cap = srv->cfg->limits.json_depth_max > 0 ? srv->cfg->limits.json_depth_max : 64;
    /* cJSON recurses per nesting level: refuse absurd nesting before parsing. */
    if (gw_json_too_deep(c->rx.data, c->rx.len, cap + 2)) {
        send_error(c, NULL, "json_depth_max",
                   "JSON nesting deeper than the limit of %d (json_depth_max)", cap);
        return;
    }
    size_t pos = 0;
    cJSON *root = gw_json_parse(c->rx.data, c->rx.len, &pos);
    if (!root) {
        send_error(c, NULL, "invalid_json", "malformed JSON in the event near byte %zu", pos);
        return;
    }
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(root, "type");
    const cJSON *jid = cJSON_GetObjectItemCaseSensitive(root, "id");
    const char *id = cJSON_IsString(jid) ? jid->valuestring : NULL;
    if (!cJSON_IsObject(root) || !cJSON_IsString(type)) {
        send_error(c, NULL, "invalid_event", "an event must be a JSON object with a string 'type'");
    } else if (jid && (!id || !id[0] || strlen(id) > GW_ID_MAX)) {
        send_error(c, NULL, "invalid_id", "'id' must be a string of 1 to %d characters", GW_ID_MAX);
    } else if (strcmp(type->valuestring, "auth") == 0) {
        handle_auth(c, root, id);
    } else if (!c->authed) {
        auth_fail(c, id, "missing_api_key",
                  "missing API key: send {\"type\":\"auth\",\"key\":\"<key>\"} first or use the "
                  "wye.key.<key> subprotocol");
    } else if (strcmp(type->valuestring, "response.create") == 0) {
        if (!id) {
            send_error(c, NULL, "missing_id", "response.create needs a string 'id'");
        } else {
            handle_create(c, root, id);
        }
    } else if (strcmp(type->valuestring, "agent.run") == 0) {
        if (!id) {
            send_error(c, NULL, "missing_id", "agent.run needs a string 'id'");
        } else {
            handle_agent_run(c, root, id);
        }
    } else if (strcmp(type->valuestring, "response.cancel") == 0 ||
               strcmp(type->valuestring, "agent.cancel") == 0) {
        struct gw_stream *s = id ? find_stream(c, id) : NULL;
        if (!id) {
            send_error(c, NULL, "missing_id", "%s needs a string 'id'", type->valuestring);
        } else if (!s) {
            send_error(c, id, "unknown_id", "no response with id '%.128s' is in flight", id);
        } else {
            gw_stream_cancel(s);
        }
    } else {
        send_error(c, id, "unknown_event",
                   "unknown event type '%.64s'; expected response.create, response.cancel, "
                   "agent.run, agent.cancel or auth",
                   type->valuestring);
    }
    cJSON_Delete(root);
}

static void conn_close(struct gw_server *srv, struct gw_pss *pss)
{
    struct gw_ws_conn *c = pss->ws;
    if (!c) {
        return;
    }
    pss->ws = NULL;
    while (c->streams) {
        struct gw_stream *s = c->streams;
        unlink_stream(c, s);
        gw_stream_release(s);
    }
    while (c->ctl_head) {
        struct gw_chunk *n = c->ctl_head->next;
        wye_free(c->ctl_head);
        c->ctl_head = n;
    }
    if (c->prev) {
        c->prev->next = c->next;
    } else if (srv->conns == c) {
        srv->conns = c->next;
    }
    if (c->next) {
        c->next->prev = c->prev;
    }
    wye_buf_cleanup(&c->rx);
    wye_free(c);
}

static int on_receive(struct gw_ws_conn *c, const void *in, size_t len)
{
    struct lws *wsi = c->wsi;
    bool first = lws_is_first_fragment(wsi);
    bool final = lws_is_final_fragment(wsi);
    c->last_activity_ns = wye_now_ns();
    if (first) {
        wye_buf_reset(&c->rx);
        c->rx_discard = false;
        if (lws_frame_is_binary(wsi)) {
            send_error(c, NULL, "binary_frame",
                       "binary messages are not supported; send JSON text");
            c->rx_discard = true;
        }
    }
    if (c->rx_discard || c->closing) {
        return 0;
    }
    if (wye_buf_append(&c->rx, in, len) != WYE_OK) {
        size_t max = c->srv->cfg->limits.ws_message_bytes_max;
        send_error(c, NULL, "ws_message_bytes_max",
                   "message exceeds the limit of %zu bytes (ws_message_bytes_max)", max);
        c->rx_discard = true;
        close_after(c, LWS_CLOSE_STATUS_MESSAGE_TOO_LARGE, "message too large");
        return 0;
    }
    if (final) {
        handle_message(c);
        wye_buf_reset(&c->rx);
    }
    return 0;
}

static int on_writeable(struct gw_ws_conn *c)
{
    struct lws *wsi = c->wsi;
    if (c->ctl_head) {
        struct gw_chunk *ch = c->ctl_head;
        c->ctl_head = ch->next;
        if (!c->ctl_head) {
            c->ctl_tail = NULL;
        }
        c->n_ctl--;
        int m = lws_write(wsi, GW_CHUNK_DATA(ch), ch->len, LWS_WRITE_TEXT);
        bool ok = m >= (int)ch->len;
        wye_free(ch);
        if (!ok) {
            return -1;
        }
        c->last_activity_ns = wye_now_ns();
        lws_callback_on_writable(wsi); /* more events, stream output, or the close */
        return 0;
    }
    if (c->closing) {
        lws_close_reason(wsi, c->close_status, (unsigned char *)c->close_reason,
                         strlen(c->close_reason));
        return -1;
    }
    /* Round-robin over the streams, starting after the last one served. */
    struct gw_stream *start = c->rr && c->rr->conn_next ? c->rr->conn_next : c->streams;
    struct gw_stream *s = start;
    for (int i = 0; s && i < c->n_streams; i++) {
        bool last = false;
        struct gw_chunk *ch = gw_stream_pop(s, &last);
        struct gw_stream *next = s->conn_next ? s->conn_next : c->streams;
        if (ch) {
            int m = lws_write(wsi, GW_CHUNK_DATA(ch), ch->len, LWS_WRITE_TEXT);
            bool ok = m >= (int)ch->len;
            gw_stream_recycle(s, ch);
            if (!ok) {
                return -1;
            }
            c->last_activity_ns = wye_now_ns();
            c->rr = s;
            if (last) {
                unlink_stream(c, s);
                gw_stream_release(s);
            }
            break;
        }
        if (last) {
            unlink_stream(c, s);
            gw_stream_release(s);
            s = c->streams;
            i = -1;
            if (!s) {
                break;
            }
            continue;
        }
        s = next;
    }
    for (struct gw_stream *t = c->streams; t; t = t->conn_next) {
        if (gw_stream_has_output(t)) {
            lws_callback_on_writable(wsi);
            break;
        }
    }
    return 0;
}

void gw_ws_tick(struct gw_server *srv, int64_t now_ns)
{
    int idle_s = srv->cfg->limits.ws_idle_timeout_s;
    bool draining = atomic_load(&srv->draining);
    for (struct gw_ws_conn *c = srv->conns; c; c = c->next) {
        if (c->closing || c->n_streams > 0) {
            continue;
        }
        if (draining) {
            close_after(c, LWS_CLOSE_STATUS_GOINGAWAY, "server shutting down");
        } else if (idle_s > 0 && now_ns - c->last_activity_ns > (int64_t)idle_s * WYE_NS_PER_S) {
            close_after(c, LWS_CLOSE_STATUS_NORMAL, "idle timeout");
        }
    }
}

int gw_ws_callback(struct gw_server *srv, struct lws *wsi, enum lws_callback_reasons reason,
                   struct gw_pss *pss, void *in, size_t len)
{
    switch (reason) {
    case LWS_CALLBACK_FILTER_PROTOCOL_CONNECTION: {
        char uri[64];
        if (lws_hdr_copy(wsi, uri, sizeof(uri), WSI_TOKEN_GET_URI) <= 0 ||
            strcmp(uri, "/v1/ws") != 0) {
            gw_metrics_count_request(&srv->metrics, GW_PATH_OTHER, 404);
            return 1; /* refuse the upgrade */
        }
        if (atomic_load(&srv->draining)) {
            gw_metrics_count_request(&srv->metrics, GW_PATH_WS, 503);
            return 1;
        }
        return 0;
    }
    case LWS_CALLBACK_ESTABLISHED: {
        if (!pss) {
            return -1;
        }
        struct gw_ws_conn *c = wye_calloc(1, sizeof(*c));
        if (!c) {
            return -1;
        }
        pss->kind = GW_PSS_WS;
        pss->ws = c;
        c->srv = srv;
        c->wsi = wsi;
        c->last_activity_ns = wye_now_ns();
        wye_buf_init(&c->rx, srv->cfg->limits.ws_message_bytes_max);
        c->next = srv->conns;
        if (srv->conns) {
            srv->conns->prev = c;
        }
        srv->conns = c;
        int max = srv->cfg->limits.connections_max;
        if (max > 0 && atomic_load(&srv->metrics.open_connections) > max) {
            gw_metrics_count_request(&srv->metrics, GW_PATH_WS, 503);
            send_error(c, NULL, "connections_max",
                       "too many open connections (connections_max = %d); retry later", max);
            close_after(c, (enum lws_close_status)1013, "too many connections");
            return 0;
        }
        gw_metrics_count_request(&srv->metrics, GW_PATH_WS, 101);
        auth_from_protocol(c);
        return 0;
    }
    case LWS_CALLBACK_RECEIVE:
        if (!pss || !pss->ws) {
            return -1;
        }
        return on_receive(pss->ws, in, len);
    case LWS_CALLBACK_SERVER_WRITEABLE:
        if (!pss || !pss->ws) {
            return 0;
        }
        return on_writeable(pss->ws);
    case LWS_CALLBACK_CLOSED:
        if (pss && pss->kind == GW_PSS_WS) {
            conn_close(srv, pss);
        }
        return 0;
    default:
        return 0;
    }
}
