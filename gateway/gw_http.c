/* HTTP routes (lws thread): POST /v1/chat/completions (JSON or SSE answer from a stream),
 * GET /v1/models, GET /v1/ledger/summary, GET /healthz, GET /metrics; errors as OpenAI error JSON
 * with the right status. Small answers are "static": decided at once and written, headers and
 * body, in one lws_write (HTTP/2: headers, then body in the next WRITEABLE). Streamed answers
 * write their headers with whatever is queued when the first chunk (or the failure before any
 * data) arrives, then coalesce queued chunks into one lws_write per WRITEABLE.
 * SSE goes out with Transfer-Encoding: chunked (framed here: lws 4.1 only chunks compressed
 * bodies) to HTTP/1.1 clients that keep the connection, so the next request reuses it; the
 * transaction completes after the last chunk, once lws has flushed everything it buffered.
 * HTTP/1.0 clients and "Connection: close" requests get a close-delimited stream.
 * Authentication (Authorization: Bearer) guards the /v1/ routes; the presented key is hashed and
 * compared by router/keys.c and never copied anywhere else or logged.
 * GET /v1/ledger/summary is answered by the summary worker thread (below): the lws thread
 * checks the query and queues a job; the worker reads the ledger files and hands the JSON back
 * through a gw_stream, so the lws thread never touches the disk. */
#include <cJSON.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/alloc.h"
#include "common/clock.h"
#include "common/crypto.h"
#include "common/log.h"
#include "gateway/gw_internal.h"
#include "router/keys.h"
#include "router/ledger.h"

#define GW_RESP_MAX ((size_t)8 << 20)
#define GW_COALESCE 16384
#define GW_CHUNK_HDR 16 /* room before the payload for a chunk-size line "%zx\r\n" */
#define GW_HDR_BUF 2048
/* "Bearer " + the longest key accepted + slack for spaces. */
#define GW_AUTH_HDR_MAX (RT_KEY_LEN_MAX + 32)
#define GW_SUMMARY_QUEUE 64 /* ledger summaries waiting for the worker */

void gw_server_set_keys(struct gw_server *srv, struct rt_keys *keys)
{
    srv->keys = keys;
}

enum gw_auth_status gw_auth_check(struct gw_server *srv, const char *key, size_t len,
                                  struct rt_key **out)
{
    *out = NULL;
    bool required = srv->cfg->auth.required;
    if (!srv->keys) {
        return required ? GW_AUTH_UNWIRED : GW_AUTH_OK;
    }
    if (!key) {
        if (required || rt_keys_required(srv->keys)) {
            return GW_AUTH_MISSING;
        }
        *out = rt_keys_anonymous(srv->keys);
        return GW_AUTH_OK;
    }
    return rt_keys_authenticate(srv->keys, key, len, out) == WYE_OK ? GW_AUTH_OK : GW_AUTH_INVALID;
}

bool gw_auth_rate(struct rt_key *key, int *retry_after_s)
{
    int64_t retry_ms = 0;
    if (!key || rt_keys_rate_take(key, wye_now_ns(), &retry_ms) == WYE_OK) {
        return true;
    }
    *retry_after_s = (int)((retry_ms + 999) / 1000);
    return false;
}

char *gw_auth_name(const struct rt_key *key, bool *nomem)
{
    char *name = key ? wye_strdup(rt_key_name(key)) : NULL;
    *nomem = key && !name;
    return name;
}

/* Reads "Authorization: Bearer KEY" and checks KEY; the copy is wiped before returning. */
static enum gw_auth_status http_auth(struct lws *wsi, struct gw_server *srv, struct gw_pss *pss)
{
    char hdr[GW_AUTH_HDR_MAX + 1];
    if (!srv->keys && !srv->cfg->auth.required) {
        return GW_AUTH_OK; /* no keys configured: any Authorization header is ignored */
    }
    int total = lws_hdr_total_length(wsi, WSI_TOKEN_HTTP_AUTHORIZATION);
    if (total <= 0) {
        return gw_auth_check(srv, NULL, 0, &pss->key);
    }
    if (total > GW_AUTH_HDR_MAX ||
        lws_hdr_copy(wsi, hdr, sizeof(hdr), WSI_TOKEN_HTTP_AUTHORIZATION) != total) {
        return GW_AUTH_INVALID;
    }
    const char *p = hdr;
    while (*p == ' ') {
        p++;
    }
    enum gw_auth_status st = GW_AUTH_INVALID;
    if (strncasecmp(p, "Bearer ", 7) == 0) {
        p += 7;
        while (*p == ' ') {
            p++;
        }
        size_t n = strlen(p);
        while (n > 0 && p[n - 1] == ' ') {
            n--;
        }
        st = n > 0 ? gw_auth_check(srv, p, n, &pss->key) : gw_auth_check(srv, NULL, 0, &pss->key);
    }
    explicit_bzero(hdr, sizeof(hdr));
    return st;
}

static void respond(struct lws *wsi, struct gw_server *srv, struct gw_pss *pss, int status,
                    const char *ctype)
{
    pss->responded = true;
    pss->status = status;
    pss->ctype = ctype;
    pss->phase = 1;
    gw_metrics_count_request(&srv->metrics, pss->path, status);
    lws_callback_on_writable(wsi);
}

static void respond_error(struct lws *wsi, struct gw_server *srv, struct gw_pss *pss, int status,
                          const char *code, const char *fmt, ...)
    __attribute__((format(printf, 6, 7)));

static void respond_error(struct lws *wsi, struct gw_server *srv, struct gw_pss *pss, int status,
                          const char *code, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    wye_buf_reset(&pss->resp);
    if (gw_fmt_error_json(&pss->resp, status, code, msg) != WYE_OK) {
        wye_buf_reset(&pss->resp);
    }
    if (status >= 500 || status == 413) {
        wye_log(WYE_LOG_INFO, pss->reqid[0] ? pss->reqid : NULL, "HTTP %d: %s", status, msg);
    }
    respond(wsi, srv, pss, status, "application/json");
}

/* ---- the ledger summary worker (its own thread; started and stopped with the server) ---- */

struct gw_summary_job {
    struct wye_qnode node; /* in srv->summary.q */
    struct gw_stream *s;   /* the producer's reference */
    int64_t since_ms;
    enum rt_ledger_by grp;
    char by[16];
};

/* Worker thread: reads the ledger, queues the answer (or a 500) as the stream's last chunk,
 * drops the producer's reference. A stream whose client is gone gets no work. */
static void summary_run(struct gw_server *srv, struct gw_summary_job *job)
{
    struct gw_stream *s = job->s;
    struct wye_buf out;
    wye_buf_init(&out, GW_RESP_MAX);
    int status = 0;
    if (!atomic_load(&s->cancelled)) {
        const char *path = srv->cfg->ledger_path ? srv->cfg->ledger_path : RT_LEDGER_DEFAULT_PATH;
        char **files = NULL;
        size_t n = 0;
        enum wye_err err = rt_ledger_files(path, &files, &n);
        if (!err && n == 0) {
            err = wye_buf_printf(&out,
                                 "{\"since\":null,\"by\":\"%s\",\"groups\":[],\"total\":null,"
                                 "\"skipped_lines\":0}",
                                 job->by);
        } else if (!err) {
            err = rt_ledger_summary((const char *const *)files, n, job->since_ms, job->grp, &out,
                                    NULL);
        }
        rt_ledger_files_free(files, n);
        status = 200;
        if (err) {
            char msg[160];
            snprintf(msg, sizeof(msg), "cannot summarise the ledger: %s", wye_err_str(err));
            wye_log(WYE_LOG_INFO, s->reqid, "HTTP 500: %s", msg);
            status = 500;
            wye_buf_reset(&out);
            if (gw_fmt_error_json(&out, 500, "internal_error", msg) != WYE_OK) {
                wye_buf_reset(&out);
            }
        }
    }
    if (gw_stream_push_ex(s, out.data, out.len, true, status) == WYE_ERR_NOMEM) {
        wye_log(WYE_LOG_WARN, s->reqid, "ledger summary: out of memory queueing the answer");
    }
    wye_buf_cleanup(&out);
    gw_stream_unref(s);
    wye_free(job);
}

static void summary_node(void *arg, struct wye_qnode *n)
{
    summary_run(arg, WYE_CONTAINER_OF(n, struct gw_summary_job, node));
}

enum wye_err gw_summary_start(struct gw_server *srv)
{
    if (srv->summary.started) {
        return WYE_OK;
    }
    char eb[128];
    enum wye_err err = wye_worker_start(&srv->summary, GW_SUMMARY_QUEUE, "wye-summary",
                                        summary_node, srv, eb, sizeof(eb));
    if (err) {
        WYE_ERROR("gateway: cannot start the ledger summary worker: %s", eb);
    }
    return err;
}

void gw_summary_stop(struct gw_server *srv)
{
    wye_worker_cleanup(&srv->summary); /* what was queued is answered first */
}

/* GET /v1/ledger/summary?since=24h&by=route: rt_ledger_summary over the ledger's files. The
 * query is checked here (lws thread); the files are read by the summary worker, which answers
 * through a stream (JSON kind: one final chunk with the status). */
static void ledger_summary(struct lws *wsi, struct gw_server *srv, struct gw_pss *pss)
{
    char since[64] = "24h";
    char by[16] = "route";
    char frag[128];
    for (int i = 0; i < 16; i++) {
        int n = lws_hdr_copy_fragment(wsi, frag, sizeof(frag), WSI_TOKEN_HTTP_URI_ARGS, i);
        if (n <= 0) {
            break;
        }
        if (strncmp(frag, "since=", 6) == 0) {
            snprintf(since, sizeof(since), "%.63s", frag + 6);
        } else if (strncmp(frag, "by=", 3) == 0) {
            snprintf(by, sizeof(by), "%.15s", frag + 3);
        }
    }
    int64_t since_ms = INT64_MIN;
    enum rt_ledger_by grp = RT_LEDGER_BY_NONE;
    if (strcmp(since, "all") != 0 && !rt_ledger_since_parse(since, wye_wall_ms(), &since_ms)) {
        respond_error(wsi, srv, pss, 400, "invalid_request_error",
                      "since: '%.60s' is not a duration (30m, 24h, 7d), a date or 'all'", since);
        return;
    }
    if (strcmp(by, "none") != 0 && !rt_ledger_by_parse(by, &grp)) {
        respond_error(wsi, srv, pss, 400, "invalid_request_error",
                      "by: '%.15s' is not one of route, model, key, day, agent, none", by);
        return;
    }

    struct wye_chat_req req;
    memset(&req, 0, sizeof(req));
    memcpy(req.id, pss->reqid, sizeof(req.id));
    req.t_received_ns = pss->t0_ns;
    struct gw_summary_job *job = wye_calloc(1, sizeof(*job));
    struct gw_stream *s = job ? gw_stream_create(srv, GW_KIND_JSON, &req) : NULL;
    if (!s) {
        wye_free(job);
        respond_error(wsi, srv, pss, 500, "internal_error", "out of memory");
        return;
    }
    s->model[0] = '\0'; /* not a model's answer: no x-wye-model header */
    job->s = s;
    job->since_ms = since_ms;
    job->grp = grp;
    snprintf(job->by, sizeof(job->by), "%s", by);
    s->wsi = wsi;
    lws_set_timeout(wsi, NO_PENDING_TIMEOUT, 0);
    gw_server_track(srv, s);
    atomic_fetch_add(&srv->metrics.open_streams, 1);
    pss->stream = s;
    if (wye_queue_push(&srv->summary.q, &job->node, NULL) != WYE_OK) {
        wye_free(job);
        gw_stream_unref(s); /* the producer's reference: no worker got it */
        pss->stream = NULL;
        gw_stream_release(s);
        respond_error(wsi, srv, pss, 503, "overloaded",
                      "too many ledger summaries in progress (%d); retry later", GW_SUMMARY_QUEUE);
    }
}

/* The body is complete: parse it, build the request, start the stream and submit it. Every
 * refusal becomes an error response naming the problem. */
static void handle_chat(struct lws *wsi, struct gw_server *srv, struct gw_pss *pss)
{
    if (pss->agent[0]) {
        gw_agents_http(wsi, srv, pss); /* POST /v1/agents/{name}/runs */
        return;
    }
    char eb[512];
    struct wye_chat_limits lim;
    gw_server_chat_limits(srv, &lim);
    atomic_fetch_add(&srv->metrics.requests_total, 1);
    if (pss->body.len == 0) {
        respond_error(wsi, srv, pss, 400, "invalid_json",
                      "the request body is empty; send a JSON object");
        return;
    }
    int cap = lim.depth_max > 0 ? lim.depth_max : 64;
    /* The parser's own check (one level deeper: it counts leaves) gives the exact limit. */
    if (gw_json_too_deep(pss->body.data, pss->body.len, cap + 1)) {
        respond_error(wsi, srv, pss, 400, "json_depth_max",
                      "JSON nesting deeper than the limit of %d (json_depth_max)", cap);
        return;
    }
    size_t pos = 0;
    cJSON *root = gw_json_parse(pss->body.data, pss->body.len, &pos);
    if (!root) {
        respond_error(wsi, srv, pss, 400, "invalid_json",
                      "malformed JSON in the request body near byte %zu", pos);
        return;
    }
    struct wye_chat_req *req = NULL;
    enum wye_err err = wye_chat_req_from_json(root, &lim, &req, eb, sizeof(eb));
    if (err) {
        const char *code = err == WYE_ERR_TOOBIG ? "limit_exceeded" : "invalid_request";
        respond_error(wsi, srv, pss, err == WYE_ERR_NOMEM ? 500 : 400, code, "%s",
                      eb[0] ? eb : wye_err_str(err));
        return;
    }
    memcpy(req->id, pss->reqid, sizeof(req->id));
    req->t_received_ns = pss->t0_ns;
    bool nomem = false;
    req->key_name = gw_auth_name(pss->key, &nomem);
    if (nomem) {
        wye_chat_req_destroy(req);
        respond_error(wsi, srv, pss, 500, "internal_error", "out of memory");
        return;
    }
    struct gw_stream *s = gw_stream_create(srv, req->stream ? GW_KIND_SSE : GW_KIND_JSON, req);
    if (!s) {
        wye_chat_req_destroy(req);
        respond_error(wsi, srv, pss, 500, "internal_error", "out of memory");
        return;
    }
    s->wsi = wsi;
    /* An answer may take long to start (a busy engine, a slow upstream): only our own
     * deadlines apply from here on. */
    lws_set_timeout(wsi, NO_PENDING_TIMEOUT, 0);
    gw_server_track(srv, s);
    atomic_fetch_add(&srv->metrics.open_streams, 1);
    pss->stream = s;
    eb[0] = '\0';
    err = srv->ops.submit(srv->ops_ctx, req, gw_stream_sink(s), eb, sizeof(eb));
    if (err) {
        gw_stream_unref(s); /* the producer's reference: it never got the sink */
        pss->stream = NULL;
        gw_stream_release(s);
        const char *code = err == WYE_ERR_NOTFOUND ? "model_not_found"
                           : err == WYE_ERR_LIMIT  ? "rate_limited"
                           : err == WYE_ERR_AGAIN  ? "overloaded"
                                                   : NULL;
        respond_error(wsi, srv, pss, gw_err_status(err), code, "%s", eb[0] ? eb : wye_err_str(err));
    }
}

/* The connection outlives this request: HTTP/1.1 unless "Connection: close" is listed, the
 * rule lws applies (an HTTP/1.0 "keep-alive" still gets no chunked answer from us). */
static bool http_keep_alive(struct lws *wsi)
{
    char v[16], c[128];
    if (lws_hdr_copy(wsi, v, sizeof(v), WSI_TOKEN_HTTP) < 8 || strncmp(v, "HTTP/1.1", 8) != 0) {
        return false;
    }
    if (lws_hdr_total_length(wsi, WSI_TOKEN_CONNECTION) <= 0 ||
        lws_hdr_copy(wsi, c, sizeof(c), WSI_TOKEN_CONNECTION) <= 0) {
        return true;
    }
    for (char *p = c; *p;) {
        p += strspn(p, ", \t");
        size_t n = strcspn(p, ", \t");
        if (n == 5 && strncasecmp(p, "close", 5) == 0) {
            return false;
        }
        p += n;
    }
    return true;
}

static void handle_request(struct lws *wsi, struct gw_server *srv, struct gw_pss *pss,
                           const char *path)
{
    char *uri = NULL;
    int uri_len = 0;
    int method = lws_http_get_uri_and_method(wsi, &uri, &uri_len);
    pss->kind = GW_PSS_HTTP;
    pss->t0_ns = wye_now_ns();
    pss->retry_after_s = 0;
    pss->key = NULL;
    pss->h1 = lws_hdr_total_length(wsi, WSI_TOKEN_HTTP) > 0; /* a request line's HTTP/1.x */
    pss->keep_alive = pss->h1 && http_keep_alive(wsi);
    pss->chunked = false;
    if (wye_reqid_new(pss->reqid) != WYE_OK) {
        snprintf(pss->reqid, sizeof(pss->reqid), "req_000000000000000000000000");
    }
    wye_buf_init(&pss->body, srv->cfg->limits.body_bytes_max);
    wye_buf_init(&pss->resp, GW_RESP_MAX);
    pss->agent[0] = '\0';
    bool chat = strcmp(path, "/v1/chat/completions") == 0 ||
                gw_agents_path(path, pss->agent, sizeof(pss->agent)); /* gw_agents.c */
    pss->path = chat                              ? GW_PATH_CHAT
                : strcmp(path, "/v1/models") == 0 ? GW_PATH_MODELS
                : strcmp(path, "/healthz") == 0   ? GW_PATH_HEALTHZ
                : strcmp(path, "/metrics") == 0   ? GW_PATH_METRICS
                : strcmp(path, "/v1/ws") == 0     ? GW_PATH_WS
                : strcmp(path, "/v1/ledger/summary") == 0 ? GW_PATH_LEDGER
                                                  : GW_PATH_OTHER;
    bool post = method == LWSHUMETH_POST;
    if (post) {
        /* Until the body is read completely, a refusal closes the connection. */
        pss->close_after = true;
    }
    int64_t conns = atomic_load(&srv->metrics.open_connections);
    if (srv->cfg->limits.connections_max > 0 && conns > srv->cfg->limits.connections_max) {
        pss->close_after = true;
        respond_error(wsi, srv, pss, 503, "connections_max",
                      "too many open connections (connections_max = %d); retry later",
                      srv->cfg->limits.connections_max);
        return;
    }
    if (atomic_load(&srv->draining)) {
        pss->close_after = true;
        respond_error(wsi, srv, pss, 503, "shutting_down", "the server is shutting down");
        return;
    }
    if (pss->path == GW_PATH_OTHER) {
        respond_error(wsi, srv, pss, 404, "unknown_url", "unknown URL %.200s", path);
        return;
    }
    if (pss->path == GW_PATH_WS) {
        respond_error(wsi, srv, pss, 400, "websocket_required",
                      "/v1/ws needs a WebSocket upgrade (Connection: Upgrade, Upgrade: websocket)");
        return;
    }
    pss->head_only = method == LWSHUMETH_HEAD;
    if (chat ? !post : (method != LWSHUMETH_GET && method != LWSHUMETH_HEAD)) {
        pss->head_only = false;
        respond_error(wsi, srv, pss, 405, "method_not_allowed", "%s needs %s", path,
                      chat ? "POST" : "GET");
        return;
    }
    if (pss->path == GW_PATH_HEALTHZ) {
        wye_buf_append_str(&pss->resp, "{\"status\":\"ok\"}");
        respond(wsi, srv, pss, 200, "application/json");
        return;
    }
    if (pss->path != GW_PATH_METRICS) {
        /* Every /v1/ route needs the key; /healthz and /metrics stay open. */
        enum gw_auth_status st = http_auth(wsi, srv, pss);
        if (st == GW_AUTH_MISSING) {
            respond_error(wsi, srv, pss, 401, "missing_api_key",
                          "missing API key: send Authorization: Bearer <key>");
            return;
        }
        if (st == GW_AUTH_INVALID) {
            respond_error(wsi, srv, pss, 401, "invalid_api_key", "invalid API key");
            return;
        }
        if (st == GW_AUTH_UNWIRED) {
            respond_error(wsi, srv, pss, 500, "internal_error",
                          "authentication is required but no key table is loaded");
            return;
        }
        if (chat && !gw_auth_rate(pss->key, &pss->retry_after_s)) {
            respond_error(wsi, srv, pss, 429, "rate_limit_exceeded",
                          "rate limit of %s exceeded; retry after %d s", rt_key_name(pss->key),
                          pss->retry_after_s);
            return;
        }
    }
    if (pss->path == GW_PATH_MODELS) {
        enum wye_err err = wye_buf_append_str(&pss->resp, "{\"object\":\"list\",\"data\":");
        if (!err) {
            err = srv->ops.models_json ? srv->ops.models_json(srv->ops_ctx, &pss->resp)
                                       : wye_buf_append_str(&pss->resp, "[]");
        }
        if (!err) {
            err = wye_buf_append_str(&pss->resp, "}");
        }
        if (err) {
            respond_error(wsi, srv, pss, 500, "internal_error", "cannot list models: %s",
                          wye_err_str(err));
        } else {
            respond(wsi, srv, pss, 200, "application/json");
        }
        return;
    }
    if (pss->path == GW_PATH_LEDGER) {
        ledger_summary(wsi, srv, pss);
        return;
    }
    if (pss->path == GW_PATH_METRICS) {
        /* Count this request first, so a scrape sees itself. */
        gw_metrics_count_request(&srv->metrics, pss->path, 200);
        enum wye_err err = gw_metrics_render(&srv->metrics, &pss->resp);
        if (!err && srv->ops.metrics) {
            srv->ops.metrics(srv->ops_ctx, &pss->resp);
        }
        pss->responded = true;
        pss->status = 200;
        pss->ctype = "text/plain; version=0.0.4";
        pss->phase = 1;
        lws_callback_on_writable(wsi);
        return;
    }
    /* POST /v1/chat/completions: check the declared length now, read the body next. */
    char cl[32];
    long long declared = -1;
    if (lws_hdr_copy(wsi, cl, sizeof(cl), WSI_TOKEN_HTTP_CONTENT_LENGTH) > 0) {
        declared = atoll(cl);
    }
    if (declared >= 0 && (unsigned long long)declared > srv->cfg->limits.body_bytes_max) {
        respond_error(wsi, srv, pss, 413, "body_bytes_max",
                      "request body of %lld bytes exceeds the limit of %zu bytes (body_bytes_max)",
                      declared, srv->cfg->limits.body_bytes_max);
        return;
    }
    if (declared < 0 && lws_hdr_total_length(wsi, WSI_TOKEN_HTTP_TRANSFER_ENCODING) > 0) {
        /* libwebsockets 4.1 does not decode chunked request bodies. */
        respond_error(wsi, srv, pss, 411, "length_required",
                      "chunked request bodies are not supported; send Content-Length");
        return;
    }
    if (declared <= 0) {
        pss->close_after = false;
        handle_chat(wsi, srv, pss);
        return;
    }
    pss->is_chat = true;
}

/* Formats the response headers into [start, end), terminated; returns their length, or -1
 * if they do not fit. */
static int build_headers(struct lws *wsi, struct gw_pss *pss, int status, const char *ctype,
                         lws_filepos_t clen, struct gw_stream *s, unsigned char *start,
                         unsigned char *end)
{
    unsigned char *p = start;
    char route[16] = "", model[128] = "";
    double score = -1;
    if (s) {
        pthread_mutex_lock(&s->lock);
        snprintf(route, sizeof(route), "%s", s->route);
        snprintf(model, sizeof(model), "%s", s->model);
        score = s->score;
        pthread_mutex_unlock(&s->lock);
    }
    if (pss->chunked) {
        /* lws_add_http_common_headers would announce "connection: close" for a body without a
         * length; a chunked one keeps the connection */
        if (lws_add_http_header_status(wsi, (unsigned int)status, &p, end) ||
            lws_add_http_header_by_token(wsi, WSI_TOKEN_HTTP_CONTENT_TYPE,
                                         (const unsigned char *)ctype, (int)strlen(ctype), &p,
                                         end) ||
            lws_add_http_header_by_token(wsi, WSI_TOKEN_HTTP_TRANSFER_ENCODING,
                                         (const unsigned char *)"chunked", 7, &p, end)) {
            return -1;
        }
    } else if (lws_add_http_common_headers(wsi, (unsigned int)status, ctype, clen, &p, end)) {
        return -1;
    }
    if (lws_add_http_header_by_name(
            wsi, (const unsigned char *)"x-request-id:", (const unsigned char *)pss->reqid,
            (int)strlen(pss->reqid), &p, end)) {
        return -1;
    }
    if (route[0] && lws_add_http_header_by_name(
                        wsi, (const unsigned char *)"x-wye-route:", (const unsigned char *)route,
                        (int)strlen(route), &p, end)) {
        return -1;
    }
    if (s && model[0] &&
        lws_add_http_header_by_name(wsi, (const unsigned char *)"x-wye-model:",
                                    (const unsigned char *)model, (int)strlen(model), &p, end)) {
        return -1;
    }
    if (score >= 0) {
        char sc[32];
        int n = snprintf(sc, sizeof(sc), "%.4f", score);
        if (lws_add_http_header_by_name(wsi, (const unsigned char *)"x-wye-score:",
                                        (const unsigned char *)sc, n, &p, end)) {
            return -1;
        }
    }
    if (status == 429 && pss->retry_after_s > 0) {
        char ra[16];
        int n = snprintf(ra, sizeof(ra), "%d", pss->retry_after_s);
        if (lws_add_http_header_by_name(wsi, (const unsigned char *)"retry-after:",
                                        (const unsigned char *)ra, n, &p, end)) {
            return -1;
        }
    }
    if (status == 401 &&
        lws_add_http_header_by_name(wsi, (const unsigned char *)"www-authenticate:",
                                    (const unsigned char *)"Bearer", 6, &p, end)) {
        return -1;
    }
    if (strcmp(ctype, "text/event-stream") == 0 &&
        lws_add_http_header_by_name(wsi, (const unsigned char *)"cache-control:",
                                    (const unsigned char *)"no-cache", 8, &p, end)) {
        return -1;
    }
    if ((pss->close_after || (pss->h1 && !pss->keep_alive)) &&
        clen != LWS_ILLEGAL_HTTP_CONTENT_LEN &&
        lws_add_http_header_by_name(wsi, (const unsigned char *)"connection:",
                                    (const unsigned char *)"close", 5, &p, end)) {
        return -1;
    }
    if (lws_finalize_http_header(wsi, &p, end)) {
        return -1;
    }
    return (int)(p - start);
}

static int write_headers(struct lws *wsi, struct gw_pss *pss, int status, const char *ctype,
                         lws_filepos_t clen, struct gw_stream *s)
{
    unsigned char buf[LWS_PRE + GW_HDR_BUF];
    int n = build_headers(wsi, pss, status, ctype, clen, s, buf + LWS_PRE, buf + sizeof(buf) - 1);
    if (n < 0 || lws_write(wsi, buf + LWS_PRE, (size_t)n, LWS_WRITE_HTTP_HEADERS) != n) {
        return -1;
    }
    return 0;
}

/* Starts srv->wbuf with LWS_PRE bytes of headroom plus room bytes (for the response headers
 * and/or a chunk-size line, placed right before the payload appended next). The skipped bytes
 * are not initialised. */
static enum wye_err wbuf_begin(struct gw_server *srv, size_t room)
{
    wye_buf_reset(&srv->wbuf);
    enum wye_err err = wye_buf_reserve(&srv->wbuf, LWS_PRE + room + GW_COALESCE);
    if (err) {
        return err;
    }
    srv->wbuf.len = LWS_PRE + room;
    srv->wbuf.data[srv->wbuf.len] = '\0';
    return WYE_OK;
}

static int write_static(struct lws *wsi, struct gw_server *srv, struct gw_pss *pss)
{
    if (pss->phase == 1 && pss->h1 && !pss->head_only) {
        /* HTTP/1: headers and body in one lws_write (raw bytes either way) */
        pss->phase = 3;
        unsigned char hdrs[GW_HDR_BUF];
        int h = build_headers(wsi, pss, pss->status, pss->ctype, pss->resp.len, NULL, hdrs,
                              hdrs + sizeof(hdrs) - 1);
        if (h < 0 || wbuf_begin(srv, (size_t)h) != WYE_OK ||
            wye_buf_append(&srv->wbuf, pss->resp.data, pss->resp.len) != WYE_OK) {
            return -1;
        }
        unsigned char *start = (unsigned char *)srv->wbuf.data + LWS_PRE;
        memcpy(start, hdrs, (size_t)h);
        size_t n = srv->wbuf.len - LWS_PRE;
        if (lws_write(wsi, start, n, LWS_WRITE_HTTP_HEADERS) < (int)n) {
            return -1;
        }
        if (pss->close_after) {
            return -1;
        }
        return lws_http_transaction_completed(wsi) ? -1 : 0;
    }
    if (pss->phase == 1) {
        if (write_headers(wsi, pss, pss->status, pss->ctype, pss->resp.len, NULL)) {
            return -1;
        }
        pss->phase = 2;
        if (pss->head_only) {
            pss->phase = 3;
            return lws_http_transaction_completed(wsi) ? -1 : 0;
        }
        lws_callback_on_writable(wsi);
        return 0;
    }
    if (pss->phase != 2) {
        return 0;
    }
    pss->phase = 3;
    if (wbuf_begin(srv, 0) != WYE_OK ||
        wye_buf_append(&srv->wbuf, pss->resp.data, pss->resp.len) != WYE_OK) {
        return -1;
    }
    size_t n = srv->wbuf.len - LWS_PRE;
    if (lws_write(wsi, (unsigned char *)srv->wbuf.data + LWS_PRE, n, LWS_WRITE_HTTP_FINAL) <
        (int)n) {
        return -1;
    }
    if (pss->close_after) {
        return -1;
    }
    return lws_http_transaction_completed(wsi) ? -1 : 0;
}

/* Writes "<n in lowercase hex>\r\n" (what "%zx\r\n" prints) to line; returns its length.
 * Once per write of a stream, so not through snprintf. */
static size_t chunk_size_line(size_t n, char line[GW_CHUNK_HDR])
{
    static const char hex[] = "0123456789abcdef";
    char tmp[2 * sizeof(size_t)];
    size_t k = 0;
    do {
        tmp[k++] = hex[n & 0xf];
        n >>= 4;
    } while (n);
    WYE_ASSERT(k + 2 <= GW_CHUNK_HDR); /* a write is far below 16^14 bytes */
    for (size_t i = 0; i < k; i++) {
        line[i] = tmp[k - 1 - i];
    }
    line[k] = '\r';
    line[k + 1] = '\n';
    return k + 2;
}

/* Streamed (and whole-body) answers from a stream. The first write carries the headers and
 * whatever body is queued, in one lws_write (HTTP/1: raw bytes either way), so a short answer
 * costs one send; later writes coalesce the queued chunks, framed as HTTP chunks when
 * pss->chunked. */
static int write_stream(struct lws *wsi, struct gw_server *srv, struct gw_pss *pss)
{
    struct gw_stream *s = pss->stream;
    unsigned char hdrs[GW_HDR_BUF];
    size_t hlen = 0;
    if (!pss->headers_sent) {
        pthread_mutex_lock(&s->lock);
        bool has = s->head != NULL || s->finished;
        int status = s->status;
        bool finished = s->finished;
        size_t queued = s->queued;
        pthread_mutex_unlock(&s->lock);
        if (!has) {
            return 0;
        }
        bool sse = s->kind == GW_KIND_SSE && status == 200;
        if (!sse && !finished) {
            return 0; /* whole-body answers are queued at once by finish */
        }
        pss->chunked = sse && pss->keep_alive && !pss->close_after;
        const char *ctype = sse ? "text/event-stream" : "application/json";
        lws_filepos_t clen = sse ? LWS_ILLEGAL_HTTP_CONTENT_LEN : (lws_filepos_t)queued;
        pss->headers_sent = true;
        gw_metrics_count_request(&srv->metrics, pss->path, status); /* chat or ledger */
        if (pss->head_only || !pss->h1) {
            /* HEAD, or HTTP/2 (lws frames its headers): the headers on their own */
            if (write_headers(wsi, pss, status, ctype, clen, s)) {
                return -1;
            }
            if (pss->head_only) {
                /* HEAD (GET routes only): the headers are the whole answer */
                pss->stream = NULL;
                gw_stream_release(s);
                return lws_http_transaction_completed(wsi) ? -1 : 0;
            }
            lws_callback_on_writable(wsi);
            return 0;
        }
        int n = build_headers(wsi, pss, status, ctype, clen, s, hdrs, hdrs + sizeof(hdrs) - 1);
        if (n < 0) {
            return -1;
        }
        hlen = (size_t)n;
    }
    size_t room = hlen + (pss->chunked ? GW_CHUNK_HDR : 0);
    if (wbuf_begin(srv, room) != WYE_OK) {
        return -1;
    }
    bool last = false;
    struct gw_chunk *list = gw_stream_pop_upto(s, GW_COALESCE, &last);
    enum wye_err err = WYE_OK;
    for (struct gw_chunk *c = list; c && !err; c = c->next) {
        err = wye_buf_append(&srv->wbuf, GW_CHUNK_DATA(c), c->len);
    }
    gw_stream_recycle_list(s, list);
    if (err) {
        return -1;
    }
    size_t n = srv->wbuf.len - LWS_PRE - room;
    char line[GW_CHUNK_HDR];
    size_t h = 0;
    if (pss->chunked && n > 0) {
        /* "<hex size>\r\n" goes right before the payload, "\r\n" after it */
        h = chunk_size_line(n, line);
        if (wye_buf_append(&srv->wbuf, "\r\n", 2) != WYE_OK) {
            return -1;
        }
    }
    if (pss->chunked && last && wye_buf_append(&srv->wbuf, "0\r\n\r\n", 5) != WYE_OK) {
        return -1; /* the terminating chunk: the answer is complete */
    }
    /* [LWS_PRE][unused][headers][chunk-size line][payload...]: LWS_PRE stays free before it */
    unsigned char *start = (unsigned char *)srv->wbuf.data + LWS_PRE + room - h - hlen;
    if (hlen) {
        memcpy(start, hdrs, hlen);
    }
    if (h) {
        memcpy(start + hlen, line, h);
    }
    n = (size_t)((unsigned char *)srv->wbuf.data + srv->wbuf.len - start);
    if (n > 0) {
        enum lws_write_protocol wp = hlen   ? LWS_WRITE_HTTP_HEADERS
                                     : last ? LWS_WRITE_HTTP_FINAL
                                            : LWS_WRITE_HTTP;
        if (lws_write(wsi, start, n, wp) < (int)n) {
            return -1;
        }
    }
    if (last) {
        pss->stream = NULL;
        gw_stream_release(s);
        /* lws defers the completion until what it buffered under backpressure is sent; on a
         * kept connection it then reads the next request */
        return lws_http_transaction_completed(wsi) ? -1 : 0;
    }
    if (gw_stream_has_output(s)) {
        lws_callback_on_writable(wsi);
    }
    return 0;
}

void gw_http_cleanup(struct gw_server *srv, struct gw_pss *pss)
{
    (void)srv;
    if (pss->kind != GW_PSS_HTTP) {
        return;
    }
    if (pss->stream) {
        struct gw_stream *s = pss->stream;
        pss->stream = NULL;
        gw_stream_release(s);
    }
    wye_buf_cleanup(&pss->body);
    wye_buf_cleanup(&pss->resp);
    pss->kind = GW_PSS_NONE;
}

int gw_http_callback(struct gw_server *srv, struct lws *wsi, enum lws_callback_reasons reason,
                     struct gw_pss *pss, void *in, size_t len)
{
    switch (reason) {
    case LWS_CALLBACK_HTTP:
        if (!pss) {
            return -1;
        }
        handle_request(wsi, srv, pss, in ? (const char *)in : "/");
        return 0;
    case LWS_CALLBACK_HTTP_BODY:
        if (!pss || pss->kind != GW_PSS_HTTP || pss->responded || !pss->is_chat) {
            return 0;
        }
        if (wye_buf_append(&pss->body, in, len) != WYE_OK) {
            respond_error(wsi, srv, pss, 413, "body_bytes_max",
                          "request body exceeds the limit of %zu bytes (body_bytes_max)",
                          srv->cfg->limits.body_bytes_max);
        }
        return 0;
    case LWS_CALLBACK_HTTP_BODY_COMPLETION:
        if (!pss || pss->kind != GW_PSS_HTTP) {
            return 0;
        }
        if (pss->body_done) {
            /* lws 4.1.6 offers the completion again, on every service turn and without ever
             * getting to WRITEABLE, while bytes of a pipelined next request wait behind this
             * body (rx flow control does not stop it): a busy loop that would never answer.
             * Hang up instead; a client that pipelines must retry what was not answered. */
            wye_log(WYE_LOG_INFO, pss->reqid,
                    "a request was pipelined after a request body; closing the connection");
            return -1;
        }
        pss->body_done = true;
        if (pss->responded || !pss->is_chat) {
            return 0;
        }
        pss->close_after = false;
        handle_chat(wsi, srv, pss);
        return 0;
    case LWS_CALLBACK_HTTP_WRITEABLE:
        if (!pss || pss->kind != GW_PSS_HTTP) {
            return 0;
        }
        if (pss->responded) {
            return write_static(wsi, srv, pss);
        }
        if (pss->stream) {
            return write_stream(wsi, srv, pss);
        }
        return 0;
    case LWS_CALLBACK_HTTP_DROP_PROTOCOL:
    case LWS_CALLBACK_CLOSED_HTTP:
        if (pss) {
            gw_http_cleanup(srv, pss);
        }
        return 0;
    default:
        return 0;
    }
}
