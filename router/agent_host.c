/* The agents' host ops over the router. chat: builds an OpenAI body (messages with tool_calls
 * and tool results, tools, max_tokens) into a wye_chat_req and submits it with
 * rt_router_submit; a sink accumulates text, tool_calls deltas and usage and answers the op at
 * finish, priced by rt_price_answer (router/price.h) like the router's ledger. http: a
 * dedicated thread owning a curl multi handle (ARCHITECTURE prefers the upstream thread; this
 * is to be merged there later); jobs arrive on a queue plus curl_multi_wakeup, responses are
 * capped, and runs that end abort their transfers.
 * Threads: chat is called on the agent worker, its sink runs on the router's threads; the http
 * thread owns every easy handle. */
#include <ctype.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <curl/curl.h>

#include "common/alloc.h"
#include "common/buf.h"
#include "common/clock.h"
#include "common/crypto.h"
#include "common/log.h"
#include "common/queue.h"
#include "router/agent_host.h"
#include "router/price.h"
#include "router/router.h"

#define AH_TEXT_MAX (1u << 20)

struct rt_agent_host {
    struct rt_router *rt;
    const struct conf_config *cfg;
    rt_agent_event_fn on_event;
    void *event_ud;
    /* the http thread */
    CURLM *multi;
    struct wye_queue jobs;
    pthread_t thread;
    bool thread_started;
    atomic_bool stopping;
};

/* ---- chat ---- */

struct ah_call {
    struct rt_agent_host *h;
    struct agent_op *op;
    struct wye_buf text, tools;
    struct wye_usage usage;
    char route[16];
    char model[128];
};

static void ah_start(void *ctx, const struct wye_start *info)
{
    struct ah_call *c = ctx;
    snprintf(c->route, sizeof(c->route), "%s", info->route ? info->route : "");
    snprintf(c->model, sizeof(c->model), "%s", info->model ? info->model : "");
}

static enum wye_err ah_emit(void *ctx, const struct wye_event *ev)
{
    struct ah_call *c = ctx;
    if (agent_op_cancelled(c->op)) {
        return WYE_ERR_CANCELED;
    }
    if (ev->type == WYE_EV_DELTA) {
        (void)wye_buf_append(&c->text, ev->data, ev->len);
    } else if (ev->type == WYE_EV_TOOL_DELTA) {
        if (wye_buf_append(&c->tools, ev->data, ev->len) == WYE_OK) {
            (void)wye_buf_append(&c->tools, "\n", 1);
        }
    } else if (ev->type == WYE_EV_USAGE) {
        c->usage = ev->usage;
    }
    return WYE_OK;
}

static enum agent_toolfmt ah_format(bool local, const char *model)
{
    if (!local) {
        return AGENT_TOOLFMT_OPENAI;
    }
    char lower[128];
    size_t i = 0;
    for (; model[i] && i + 1 < sizeof(lower); i++) {
        lower[i] = (char)tolower((unsigned char)model[i]);
    }
    lower[i] = '\0';
    return strstr(lower, "llama") ? AGENT_TOOLFMT_LLAMA3 : AGENT_TOOLFMT_HERMES;
}

static void ah_finish(void *ctx, const struct wye_result *res)
{
    struct ah_call *c = ctx;
    struct wye_usage u =
        res->usage.prompt_tokens || res->usage.completion_tokens ? res->usage : c->usage;
    bool local = strcmp(c->route, "local") == 0;
    /* priced exactly as the router prices it for metrics and the ledger */
    struct rt_price pr =
        rt_price_answer(c->h->cfg, !local, c->model, u.prompt_tokens, u.completion_tokens);
    struct agent_chat_result r = {
        .err = res->err,
        .message = res->message,
        .text = c->text.data ? c->text.data : "",
        .tool_calls = c->tools.len ? c->tools.data : NULL,
        .format = ah_format(local, c->model),
        .route = c->route,
        .model = c->model,
        .prompt_tokens = u.prompt_tokens,
        .completion_tokens = u.completion_tokens,
        .cost_usd = pr.cost_usd,
        .saving_usd = pr.saving_usd,
    };
    agent_op_chat_done(c->op, &r);
    wye_buf_cleanup(&c->text);
    wye_buf_cleanup(&c->tools);
    wye_free(c);
}

static bool ah_cancelled(void *ctx)
{
    struct ah_call *c = ctx;
    return agent_op_cancelled(c->op);
}

static void ah_set_wakeup(void *ctx, void (*wake)(void *arg), void *arg)
{
    /* never answers AGAIN, so credit never has to come back */
    (void)ctx;
    (void)wake;
    (void)arg;
}

static const struct wye_sink_ops ah_sink_ops = {
    .start = ah_start,
    .emit = ah_emit,
    .finish = ah_finish,
    .cancelled = ah_cancelled,
    .set_wakeup = ah_set_wakeup,
};

static enum wye_err ah_chat(void *ctx, const struct agent_chat_call *call, struct agent_op *op,
                            char *errbuf, size_t errlen)
{
    struct rt_agent_host *h = ctx;
    const struct conf_config *cfg = h->cfg;
    const char *local_name =
        cfg->engine.model_path
            ? (cfg->engine.model_name ? cfg->engine.model_name : cfg->engine.model_path)
            : NULL;
    /* A call that can only go local gets the tools in the local model's own text format (the
     * local engine does not render OpenAI tools); "auto" with both backends is decided by the
     * router later, so it keeps the OpenAI form. */
    const char *want = call->model ? call->model : "auto";
    bool local_only = local_name && (strcmp(want, "local") == 0 || strcmp(want, local_name) == 0 ||
                                     (!cfg->upstream.base_url && strcmp(want, "auto") == 0));
    char *rendered = NULL;
    if (local_only && call->tools_json) {
        enum wye_err e = agent_toolfmt_render(ah_format(true, local_name), call->messages_json,
                                              call->tools_json, &rendered, errbuf, errlen);
        if (e) {
            return e;
        }
    }
    cJSON *body = cJSON_CreateObject();
    cJSON *msgs = cJSON_Parse(rendered ? rendered : call->messages_json);
    cJSON *tools = call->tools_json && !rendered ? cJSON_Parse(call->tools_json) : NULL;
    wye_free(rendered);
    cJSON *so = cJSON_CreateObject();
    if (!body || !msgs || !so || (call->tools_json && !local_only && !tools)) {
        cJSON_Delete(body);
        cJSON_Delete(msgs);
        cJSON_Delete(tools);
        cJSON_Delete(so);
        snprintf(errbuf, errlen, "out of memory (or bad messages)");
        return WYE_ERR_NOMEM;
    }
    /* "local" / "remote" name the configured models; without one they mean "auto" */
    const char *model = call->model ? call->model : "auto";
    if (strcmp(model, "remote") == 0) {
        model =
            h->cfg->upstream.base_url && h->cfg->upstream.model ? h->cfg->upstream.model : "auto";
    } else if (strcmp(model, "local") == 0) {
        model = h->cfg->engine.model_path && h->cfg->engine.model_name ? h->cfg->engine.model_name
                                                                       : "auto";
    }
    cJSON_AddStringToObject(body, "model", model);
    cJSON_AddItemToObject(body, "messages", msgs);
    if (tools) {
        cJSON_AddItemToObject(body, "tools", tools);
    }
    if (call->max_tokens > 0) {
        cJSON_AddNumberToObject(body, "max_tokens", call->max_tokens);
    }
    cJSON_AddTrueToObject(body, "stream");
    cJSON_AddTrueToObject(so, "include_usage");
    cJSON_AddItemToObject(body, "stream_options", so);
    struct wye_chat_limits lim = {
        .depth_max = h->cfg->limits.json_depth_max > 0 ? h->cfg->limits.json_depth_max : 64,
        .n_msgs_max = h->cfg->limits.n_msgs_max > 0 ? h->cfg->limits.n_msgs_max : 1000,
        .max_tokens_max = 1 << 20,
    };
    struct wye_chat_req *req = NULL;
    enum wye_err err = wye_chat_req_from_json(body, &lim, &req, errbuf, errlen);
    if (err) {
        return err;
    }
    (void)wye_reqid_new(req->id);
    req->t_received_ns = wye_now_ns();
    req->agent_run_id = call->run_id;
    req->agent = wye_strdup(call->agent ? call->agent : "");
    if (!req->agent) {
        wye_chat_req_destroy(req);
        snprintf(errbuf, errlen, "out of memory");
        return WYE_ERR_NOMEM;
    }
    wye_log(WYE_LOG_INFO, req->id, "agents: %s run %llu calls model %s", call->agent,
            (unsigned long long)call->run_id, call->model ? call->model : "auto");
    struct ah_call *c = wye_calloc(1, sizeof(*c));
    if (!c) {
        wye_chat_req_destroy(req);
        snprintf(errbuf, errlen, "out of memory");
        return WYE_ERR_NOMEM;
    }
    c->h = h;
    c->op = op;
    wye_buf_init(&c->text, AH_TEXT_MAX);
    wye_buf_init(&c->tools, AH_TEXT_MAX);
    struct wye_sink sink = {&ah_sink_ops, c};
    err = rt_router_submit(h->rt, req, sink, errbuf, errlen);
    if (err) {
        wye_free(c);
    }
    return err;
}

/* ---- http ---- */

struct ah_http {
    struct wye_qnode node;
    struct agent_op *op;
    CURL *easy;
    struct curl_slist *headers;
    char *url, *method, *body;
    size_t body_len, max_bytes;
    int timeout_ms;
    struct wye_buf resp;
    bool too_big;
    char errbuf[CURL_ERROR_SIZE];
};

static void http_free(struct ah_http *j)
{
    if (j->easy) {
        curl_easy_cleanup(j->easy);
    }
    curl_slist_free_all(j->headers);
    wye_free(j->url);
    wye_free(j->method);
    wye_free(j->body);
    wye_buf_cleanup(&j->resp);
    wye_free(j);
}

static void http_answer(struct ah_http *j, enum wye_err err, const char *msg, long status)
{
    struct agent_http_result r = {
        .err = err,
        .message = msg,
        .status = status,
        .body = j->resp.data ? j->resp.data : "",
        .body_len = j->resp.len,
    };
    agent_op_http_done(j->op, &r);
    http_free(j);
}

static size_t http_write(char *p, size_t size, size_t n, void *ud)
{
    struct ah_http *j = ud;
    size_t len = size * n;
    if (j->resp.len + len > j->max_bytes || wye_buf_append(&j->resp, p, len) != WYE_OK) {
        j->too_big = true;
        return 0;
    }
    return len;
}

static bool http_setup(struct ah_http *j)
{
    j->easy = curl_easy_init();
    if (!j->easy) {
        return false;
    }
    curl_easy_setopt(j->easy, CURLOPT_URL, j->url);
    curl_easy_setopt(j->easy, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(j->easy, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(j->easy, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(j->easy, CURLOPT_TIMEOUT_MS, (long)j->timeout_ms);
    curl_easy_setopt(j->easy, CURLOPT_CONNECTTIMEOUT_MS, 5000L);
    curl_easy_setopt(j->easy, CURLOPT_WRITEFUNCTION, http_write);
    curl_easy_setopt(j->easy, CURLOPT_WRITEDATA, j);
    curl_easy_setopt(j->easy, CURLOPT_PRIVATE, j);
    curl_easy_setopt(j->easy, CURLOPT_ERRORBUFFER, j->errbuf);
    curl_easy_setopt(j->easy, CURLOPT_HTTPHEADER, j->headers);
    curl_easy_setopt(j->easy, CURLOPT_USERAGENT, "wye-agent/" WYE_VERSION);
    if (strcmp(j->method, "GET") != 0) {
        curl_easy_setopt(j->easy, CURLOPT_CUSTOMREQUEST, j->method);
    }
    if (j->body) {
        curl_easy_setopt(j->easy, CURLOPT_POSTFIELDS, j->body);
        curl_easy_setopt(j->easy, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)j->body_len);
    }
    return true;
}

/* Answers and frees every transfer whose run ended (or all when stopping). */
static void http_sweep(struct rt_agent_host *h, struct ah_http **active, size_t *n, bool all)
{
    for (size_t i = 0; i < *n;) {
        struct ah_http *j = active[i];
        if (all || agent_op_cancelled(j->op)) {
            curl_multi_remove_handle(h->multi, j->easy);
            http_answer(j, WYE_ERR_CANCELED, "cancelled", 0);
            active[i] = active[--*n];
        } else {
            i++;
        }
    }
}

#define AH_HTTP_ACTIVE_MAX 256

static void *http_main(void *arg)
{
    struct rt_agent_host *h = arg;
    struct ah_http *active[AH_HTTP_ACTIVE_MAX];
    size_t n = 0;
    while (!atomic_load(&h->stopping)) {
        struct wye_qnode *q = wye_queue_take_all(&h->jobs);
        while (q) {
            struct wye_qnode *next = q->next;
            struct ah_http *j = WYE_CONTAINER_OF(q, struct ah_http, node);
            if (n == AH_HTTP_ACTIVE_MAX) {
                http_answer(j, WYE_ERR_AGAIN, "too many HTTP requests in flight", 0);
            } else if (!http_setup(j) || curl_multi_add_handle(h->multi, j->easy) != CURLM_OK) {
                http_answer(j, WYE_ERR_NOMEM, "cannot start the HTTP request", 0);
            } else {
                active[n++] = j;
            }
            q = next;
        }
        int running = 0;
        curl_multi_perform(h->multi, &running);
        CURLMsg *m;
        int left = 0;
        while ((m = curl_multi_info_read(h->multi, &left)) != NULL) {
            if (m->msg != CURLMSG_DONE) {
                continue;
            }
            struct ah_http *j = NULL;
            curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&j);
            CURLcode rc = m->data.result;
            curl_multi_remove_handle(h->multi, j->easy);
            for (size_t i = 0; i < n; i++) {
                if (active[i] == j) {
                    active[i] = active[--n];
                    break;
                }
            }
            long status = 0;
            curl_easy_getinfo(j->easy, CURLINFO_RESPONSE_CODE, &status);
            char msg[CURL_ERROR_SIZE + 64];
            if (j->too_big) {
                snprintf(msg, sizeof(msg), "the response is larger than %zu bytes", j->max_bytes);
                http_answer(j, WYE_ERR_TOOBIG, msg, status);
            } else if (rc == CURLE_OPERATION_TIMEDOUT) {
                snprintf(msg, sizeof(msg), "timed out after %d ms", j->timeout_ms);
                http_answer(j, WYE_ERR_TIMEOUT, msg, status);
            } else if (rc != CURLE_OK) {
                snprintf(msg, sizeof(msg), "%s", j->errbuf[0] ? j->errbuf : curl_easy_strerror(rc));
                http_answer(j, WYE_ERR_IO, msg, status);
            } else {
                http_answer(j, WYE_OK, NULL, status);
            }
        }
        http_sweep(h, active, &n, false);
        curl_multi_poll(h->multi, NULL, 0, 50, NULL);
    }
    http_sweep(h, active, &n, true);
    return NULL;
}

static enum wye_err ah_http(void *ctx, const struct agent_http_req *req, struct agent_op *op,
                            char *errbuf, size_t errlen)
{
    struct rt_agent_host *h = ctx;
    struct ah_http *j = wye_calloc(1, sizeof(*j));
    if (!j) {
        snprintf(errbuf, errlen, "out of memory");
        return WYE_ERR_NOMEM;
    }
    j->op = op;
    j->url = wye_strdup(req->url);
    j->method = wye_strdup(req->method ? req->method : "GET");
    j->body = req->body ? wye_strndup(req->body, req->body_len) : NULL;
    j->body_len = req->body_len;
    j->max_bytes = req->max_bytes;
    j->timeout_ms = req->timeout_ms;
    wye_buf_init(&j->resp, req->max_bytes + 1);
    bool ok = j->url && j->method && (!req->body || j->body);
    for (size_t i = 0; ok && i < req->n_headers; i++) {
        struct curl_slist *s = curl_slist_append(j->headers, req->headers[i]);
        ok = s != NULL;
        j->headers = s ? s : j->headers;
    }
    if (!ok) {
        j->op = NULL;
        http_free(j);
        snprintf(errbuf, errlen, "out of memory");
        return WYE_ERR_NOMEM;
    }
    bool was_empty = false;
    if (wye_queue_push(&h->jobs, &j->node, &was_empty) != WYE_OK) {
        http_free(j);
        snprintf(errbuf, errlen, "the HTTP client is stopping");
        return WYE_ERR_CANCELED;
    }
    curl_multi_wakeup(h->multi);
    return WYE_OK;
}

static void ah_emit_event(void *ctx, uint64_t run_id, const char *event_json)
{
    struct rt_agent_host *h = ctx;
    if (h->on_event) {
        h->on_event(h->event_ud, run_id, event_json);
    }
}

static const struct agent_host_ops ah_ops = {
    .chat = ah_chat,
    .http = ah_http,
    .emit = ah_emit_event,
};

const struct agent_host_ops *rt_agent_host_ops(void)
{
    return &ah_ops;
}

void rt_agent_host_set_events(struct rt_agent_host *h, rt_agent_event_fn fn, void *ud)
{
    h->on_event = fn;
    h->event_ud = ud;
}

struct rt_agent_host *rt_agent_host_create(struct rt_router *rt, const struct conf_config *cfg)
{
    struct rt_agent_host *h = wye_calloc(1, sizeof(*h));
    if (!h) {
        return NULL;
    }
    h->rt = rt;
    h->cfg = cfg;
    atomic_init(&h->stopping, false);
    h->multi = curl_multi_init();
    if (!h->multi) {
        goto fail_host;
    }
    if (wye_queue_init(&h->jobs, 0) != WYE_OK) {
        goto fail_multi;
    }
    if (pthread_create(&h->thread, NULL, http_main, h) != 0) {
        goto fail_queue;
    }
    h->thread_started = true;
    return h;

fail_queue:
    wye_queue_cleanup(&h->jobs);
fail_multi:
    curl_multi_cleanup(h->multi);
fail_host:
    WYE_ERROR("agents: cannot create the agent host");
    wye_free(h);
    return NULL;
}

void rt_agent_host_destroy(struct rt_agent_host *h)
{
    if (!h) {
        return;
    }
    atomic_store(&h->stopping, true);
    wye_queue_close(&h->jobs);
    curl_multi_wakeup(h->multi);
    pthread_join(h->thread, NULL);
    struct wye_qnode *q = wye_queue_take_all(&h->jobs);
    while (q) {
        struct wye_qnode *next = q->next;
        http_answer(WYE_CONTAINER_OF(q, struct ah_http, node), WYE_ERR_CANCELED, "cancelled", 0);
        q = next;
    }
    wye_queue_cleanup(&h->jobs);
    curl_multi_cleanup(h->multi);
    wye_free(h);
}
