/* Agent runs over the gateway: a WebSocket agent.run event or POST /v1/agents/{name}/runs
 * starts a run on the agents runtime (agents/agents.h) and gives it a gw_stream; the run's
 * progress events (host emit) and its end (done callback) are formatted as JSON event objects
 * and pushed into that stream, so backpressure, disconnects and cancellation work as for chat
 * answers. A registry maps run ids to streams (events carry only the run id). The text of the
 * agent loop's model calls arrives as "delta" events while the model writes it and goes out as
 * response.output_text.delta at once; a run that streamed none (a workflow) gets its answer as
 * one delta before agent.done. A run acts for the request's API key (the HTTP request's, or
 * the WebSocket connection's): every model call carries its name (routes, budgets, ledger).
 * Threads: gw_agents_start and gw_agents_http on the lws thread; gw_agents_event on the run's
 * agent worker thread (several runs' workers at once; delta events on the thread answering the
 * model call: the upstream thread or an engine worker) and the done callback on that worker;
 * the stream wakeup (cancel) on the lws thread. */
#include <cJSON.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "agents/agents.h"
#include "common/alloc.h"
#include "common/log.h"
#include "gateway/gw_internal.h"
#include "router/keys.h"

#define GW_AGENT_EVENT_MAX ((size_t)1 << 20) /* one formatted event */

struct gw_agent_run {
    struct gw_agent_run *next; /* ga->lock */
    struct gw_agents *ga;      /* immutable */
    struct gw_stream *s;       /* the producer's reference; worker thread after start */
    uint64_t run_id;           /* ga->lock (set right after submit) */
    bool registered;           /* ga->lock */
    bool streamed;             /* ga->lock: a delta went out */
    char *client_id;           /* immutable; WS id, or NULL */
    struct wye_buf out;        /* formatting scratch: ga->lock, then the worker in run_done */
    struct wye_buf frame;      /* SSE framing of out, same owner (reused: no allocation per
                                * streamed delta) */
};

struct gw_agents {
    struct agent_rt *rt; /* borrowed */
    pthread_mutex_t lock;
    struct gw_agent_run *runs; /* lock */
};

struct gw_agents *gw_agents_create(struct agent_rt *rt)
{
    struct gw_agents *ga = wye_calloc(1, sizeof(*ga));
    if (!ga) {
        return NULL;
    }
    if (pthread_mutex_init(&ga->lock, NULL) != 0) {
        wye_free(ga);
        return NULL;
    }
    ga->rt = rt;
    return ga;
}

void gw_agents_destroy(struct gw_agents *ga)
{
    if (!ga) {
        return;
    }
    pthread_mutex_destroy(&ga->lock);
    wye_free(ga);
}

struct agent_rt *gw_agents_rt(const struct gw_agents *ga)
{
    return ga ? ga->rt : NULL;
}

/* Pushes the event in run->out as one stream event (SSE framing for SSE streams). JSON
 * streams (stream:false) only get the final object. */
static void run_push(struct gw_agent_run *run, bool final)
{
    struct gw_stream *s = run->s;
    if (s->kind == GW_KIND_JSON && !final) {
        return;
    }
    if (s->kind == GW_KIND_SSE) {
        struct wye_buf *b = &run->frame;
        wye_buf_reset(b);
        enum wye_err err = wye_buf_append_str(b, "data: ");
        if (!err) {
            err = wye_buf_append(b, run->out.data, run->out.len);
        }
        if (!err) {
            err = wye_buf_append_str(b, final ? "\n\ndata: [DONE]\n\n" : "\n\n");
        }
        if (!err) {
            (void)gw_stream_push_ex(s, b->data, b->len, final, final ? 200 : 0);
        } else if (final) {
            (void)gw_stream_push_ex(s, "data: [DONE]\n\n", 14, true, 200);
        }
        return;
    }
    (void)gw_stream_push_ex(s, run->out.data, run->out.len, final, final ? 200 : 0);
}

/* Starts run->out as {"type":"<type>","id":...  (no closing brace). */
static enum wye_err run_begin(struct gw_agent_run *run, const char *type)
{
    wye_buf_reset(&run->out);
    enum wye_err err = wye_buf_printf(&run->out, "{\"type\":\"%s\"", type);
    if (!err && run->client_id) {
        err = wye_buf_append_str(&run->out, ",\"id\":");
        if (!err) {
            err = wye_buf_append_json_str(&run->out, run->client_id, strlen(run->client_id));
        }
    }
    if (!err && run->s->kind != GW_KIND_WS) {
        err = wye_buf_printf(&run->out, ",\"request_id\":\"%s\"", run->s->reqid);
    }
    return err;
}

static struct gw_agent_run *find_run(struct gw_agents *ga, uint64_t run_id)
{
    for (struct gw_agent_run *r = ga->runs; r; r = r->next) {
        if (r->registered && r->run_id == run_id) {
            return r;
        }
    }
    return NULL;
}

/* A delta event, as the runtime writes it ({"type":"delta","run_id":..,"step":..,"delta":".."};
 * ctx:emit{type="delta", ...} too): the rest of the object is copied after the new type and
 * ids without parsing it, so streaming text costs no allocation per piece. */
#define GW_DELTA_PREFIX "{\"type\":\"delta\","

static void forward_delta(struct gw_agent_run *run, const char *event_json)
{
    if (run->s->kind == GW_KIND_JSON) {
        return; /* stream:false answers only the final object */
    }
    enum wye_err err = run_begin(run, "response.output_text.delta");
    if (!err) {
        err = wye_buf_append_str(&run->out, event_json + sizeof(GW_DELTA_PREFIX) - 2);
    }
    if (!err) {
        run->streamed = true;
        run_push(run, false);
    }
}

/* A progress event of the runtime ({"type":"step"|"tool_call"|"tool_result"|..., ...}):
 * forwarded as {"type":"agent.<type>","id":..., the other fields}; "delta" events (the
 * runtime's, and a script's ctx:emit{type="delta", delta=...}) as response.output_text.delta. */
void gw_agents_event(void *ud, uint64_t run_id, const char *event_json)
{
    struct gw_agents *ga = ud;
    pthread_mutex_lock(&ga->lock);
    struct gw_agent_run *run = find_run(ga, run_id);
    if (run && strncmp(event_json, GW_DELTA_PREFIX, sizeof(GW_DELTA_PREFIX) - 1) == 0) {
        if (!atomic_load(&run->s->cancelled)) {
            forward_delta(run, event_json);
        }
        pthread_mutex_unlock(&ga->lock);
        return;
    }
    cJSON *ev = run ? cJSON_Parse(event_json) : NULL;
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(ev, "type");
    if (run && cJSON_IsObject(ev) && cJSON_IsString(type) &&
        strcmp(type->valuestring, "answer") != 0 && !atomic_load(&run->s->cancelled)) {
        char t[80];
        bool delta = strcmp(type->valuestring, "delta") == 0; /* ctx:emit{type="delta"} */
        if (delta && run->s->kind == GW_KIND_JSON) {
            cJSON_Delete(ev);
            pthread_mutex_unlock(&ga->lock);
            return;
        }
        snprintf(t, sizeof(t), "agent.%.64s", type->valuestring);
        enum wye_err err = run_begin(run, delta ? "response.output_text.delta" : t);
        run->streamed |= delta;
        const cJSON *f;
        cJSON_ArrayForEach(f, ev)
        {
            if (err || !f->string || strcmp(f->string, "type") == 0 ||
                strcmp(f->string, "id") == 0 || strcmp(f->string, "request_id") == 0) {
                continue;
            }
            char *v = cJSON_PrintUnformatted(f);
            err = v ? wye_buf_append_str(&run->out, ",") : WYE_ERR_NOMEM;
            if (!err) {
                err = wye_buf_append_json_str(&run->out, f->string, strlen(f->string));
            }
            if (!err) {
                err = wye_buf_printf(&run->out, ":%s", v);
            }
            cJSON_free(v);
        }
        if (!err) {
            err = wye_buf_append_str(&run->out, "}");
        }
        if (!err) {
            run_push(run, false);
        }
    }
    cJSON_Delete(ev);
    pthread_mutex_unlock(&ga->lock);
}

static void run_free(struct gw_agent_run *run)
{
    wye_buf_cleanup(&run->out);
    wye_buf_cleanup(&run->frame);
    wye_free(run->client_id);
    wye_free(run);
}

static void run_unlink(struct gw_agents *ga, struct gw_agent_run *run)
{
    pthread_mutex_lock(&ga->lock);
    for (struct gw_agent_run **pp = &ga->runs; *pp; pp = &(*pp)->next) {
        if (*pp == run) {
            *pp = run->next;
            break;
        }
    }
    pthread_mutex_unlock(&ga->lock);
}

/* The run's end (worker thread): the answer as one output_text delta unless it was streamed,
 * then agent.done. */
static void run_done(void *arg, const struct agent_outcome *o)
{
    struct gw_agent_run *run = arg;
    struct gw_agents *ga = run->ga;
    struct gw_stream *s = run->s;
    /* Wait for the submitter to register (it holds the lock across submit). */
    run_unlink(ga, run); /* after this no delta reaches run (they look it up under the lock) */
    pthread_mutex_lock(&s->lock);
    s->wake = NULL;
    s->wake_arg = NULL;
    pthread_mutex_unlock(&s->lock);
    bool cancelled = o->err == WYE_ERR_CANCELED ||
                     (o->reason && strcmp(o->reason, "cancelled") == 0) ||
                     atomic_load(&s->cancelled);
    const char *status = cancelled ? "cancelled" : o->err == WYE_OK ? "completed" : "failed";
    enum wye_err err;
    if (o->err == WYE_OK && o->answer && !cancelled && !run->streamed) {
        err = run_begin(run, "response.output_text.delta");
        if (!err) {
            err = wye_buf_append_str(&run->out, ",\"delta\":");
        }
        if (!err) {
            err = wye_buf_append_json_str(&run->out, o->answer, strlen(o->answer));
        }
        if (!err) {
            err = wye_buf_append_str(&run->out, "}");
        }
        if (!err) {
            run_push(run, false);
        }
    }
    err = run_begin(run, "agent.done");
    if (!err) {
        err = wye_buf_printf(&run->out, ",\"run_id\":%llu,\"status\":\"%s\",\"output\":",
                             (unsigned long long)o->run_id, status);
    }
    if (!err) {
        err = o->answer && !cancelled
                  ? wye_buf_append_json_str(&run->out, o->answer, strlen(o->answer))
                  : wye_buf_append_str(&run->out, "null");
    }
    if (!err && o->reason && !cancelled && o->err != WYE_OK) {
        err = wye_buf_append_str(&run->out, ",\"error\":");
        if (!err) {
            err = wye_buf_append_json_str(&run->out, o->reason, strlen(o->reason));
        }
    }
    if (!err) {
        err = wye_buf_printf(&run->out,
                             ",\"steps\":%d,\"tokens\":{\"prompt\":%lld,\"completion\":%lld},"
                             "\"cost_usd\":%.9f,\"saving_usd\":%.9f,\"calls\":",
                             o->n_steps, (long long)o->prompt_tokens,
                             (long long)o->completion_tokens, o->cost_usd, o->saving_usd);
    }
    if (!err) {
        err = wye_buf_append_str(&run->out, o->calls_json ? o->calls_json : "[]");
    }
    if (!err) {
        err = wye_buf_append_str(&run->out, "}");
    }
    if (err) {
        wye_buf_reset(&run->out);
        (void)wye_buf_printf(&run->out, "{\"type\":\"agent.done\",\"status\":\"failed\"}");
    }
    run_push(run, true);
    gw_stream_unref(s); /* the producer's reference */
    run_free(run);
}

/* lws thread, stream lock held: the client went away or cancelled. */
static void run_wake(void *arg)
{
    struct gw_agent_run *run = arg;
    if (atomic_load(&run->s->cancelled)) {
        agent_rt_cancel(run->ga->rt, run->run_id);
    }
}

/* Starts the run for key (the authenticated API key, or NULL): its name goes with every model
 * call of the run, so the key's routes and budgets apply and the ledger names it. */
static enum wye_err agents_start(struct gw_server *srv, struct gw_stream *s,
                                 const struct rt_key *key, const char *name, const char *input,
                                 char *errbuf, size_t errlen)
{
    struct gw_agents *ga = srv->agents;
    if (!ga || !ga->rt) {
        snprintf(errbuf, errlen, "agents are not enabled on this server");
        return WYE_ERR_NOTFOUND;
    }
    struct gw_agent_run *run = wye_calloc(1, sizeof(*run));
    if (!run || (s->client_id && !(run->client_id = wye_strdup(s->client_id)))) {
        wye_free(run);
        snprintf(errbuf, errlen, "out of memory");
        return WYE_ERR_NOMEM;
    }
    run->ga = ga;
    run->s = s;
    wye_buf_init(&run->out, GW_AGENT_EVENT_MAX);
    wye_buf_init(&run->frame, GW_AGENT_EVENT_MAX + 64);
    /* Registered under the lock across submit, so the worker's first event finds it. */
    pthread_mutex_lock(&ga->lock);
    uint64_t id = 0;
    enum wye_err err = agent_rt_submit_as(ga->rt, key ? rt_key_name(key) : NULL, name, input,
                                          run_done, run, &id, errbuf, errlen);
    if (err) {
        pthread_mutex_unlock(&ga->lock);
        run_free(run);
        if (err == WYE_ERR_NOTFOUND) {
            /* the runtime's message names the server's directory: keep that private */
            snprintf(errbuf, errlen, "no agent or workflow named '%.128s'", name);
        }
        return err;
    }
    run->run_id = id;
    run->registered = true;
    run->next = ga->runs;
    ga->runs = run;
    /* The wakeup is set under the lock too: run_done (which clears it) waits for the lock. */
    pthread_mutex_lock(&s->lock);
    if (!s->finished) {
        s->wake = run_wake;
        s->wake_arg = run;
    }
    pthread_mutex_unlock(&s->lock);
    pthread_mutex_unlock(&ga->lock);
    if (atomic_load(&s->cancelled)) {
        agent_rt_cancel(ga->rt, id);
    }
    return WYE_OK;
}

enum wye_err gw_agents_start(struct gw_server *srv, struct gw_stream *s, const char *name,
                             const char *input, char *errbuf, size_t errlen)
{
    /* a WebSocket run acts for its connection's key (gw_ws.c links s->conn before the call) */
    const struct rt_key *key = s->kind == GW_KIND_WS && s->conn ? s->conn->key : NULL;
    return agents_start(srv, s, key, name, input, errbuf, errlen);
}

void gw_server_set_agents(struct gw_server *srv, struct gw_agents *ga)
{
    srv->agents = ga;
}

bool gw_agents_path(const char *path, char *name, size_t cap)
{
    static const char pre[] = "/v1/agents/";
    static const char post[] = "/runs";
    size_t np = sizeof(pre) - 1, nq = sizeof(post) - 1, n = strlen(path);
    if (n <= np + nq || strncmp(path, pre, np) != 0 || strcmp(path + n - nq, post) != 0) {
        return false;
    }
    size_t len = n - np - nq;
    if (len >= cap || memchr(path + np, '/', len)) {
        return false;
    }
    memcpy(name, path + np, len);
    name[len] = '\0';
    return true;
}

/* A static error answer (the same shape gw_http.c writes). */
static void http_error(struct lws *wsi, struct gw_server *srv, struct gw_pss *pss, int status,
                       const char *code, const char *msg)
{
    wye_buf_reset(&pss->resp);
    if (gw_fmt_error_json(&pss->resp, status, code, msg) != WYE_OK) {
        wye_buf_reset(&pss->resp);
    }
    pss->responded = true;
    pss->status = status;
    pss->ctype = "application/json";
    pss->phase = 1;
    gw_metrics_count_request(&srv->metrics, pss->path, status);
    lws_callback_on_writable(wsi);
}

void gw_agents_http(struct lws *wsi, struct gw_server *srv, struct gw_pss *pss)
{
    char eb[512] = "";
    atomic_fetch_add(&srv->metrics.requests_total, 1);
    int cap = srv->cfg->limits.json_depth_max > 0 ? srv->cfg->limits.json_depth_max : 64;
    if (gw_json_too_deep(pss->body.data, pss->body.len, cap + 1)) {
        snprintf(eb, sizeof(eb), "JSON nesting deeper than the limit of %d (json_depth_max)", cap);
        http_error(wsi, srv, pss, 400, "json_depth_max", eb);
        return;
    }
    size_t pos = 0;
    cJSON *root = pss->body.len ? gw_json_parse(pss->body.data, pss->body.len, &pos) : NULL;
    if (!root && pss->body.len) {
        snprintf(eb, sizeof(eb), "malformed JSON in the request body near byte %zu", pos);
        http_error(wsi, srv, pss, 400, "invalid_json", eb);
        return;
    }
    const cJSON *in = cJSON_GetObjectItemCaseSensitive(root, "input");
    const cJSON *st = cJSON_GetObjectItemCaseSensitive(root, "stream");
    if (!cJSON_IsObject(root) || !cJSON_IsString(in) || (st && !cJSON_IsBool(st))) {
        cJSON_Delete(root);
        http_error(wsi, srv, pss, 400, "invalid_request",
                   "the body must be a JSON object with a string 'input' and an optional "
                   "boolean 'stream'");
        return;
    }
    struct wye_chat_req req;
    memset(&req, 0, sizeof(req));
    memcpy(req.id, pss->reqid, sizeof(req.id));
    req.t_received_ns = pss->t0_ns;
    req.model = pss->agent;
    struct gw_stream *s =
        gw_stream_create(srv, cJSON_IsTrue(st) ? GW_KIND_SSE : GW_KIND_JSON, &req);
    if (!s) {
        cJSON_Delete(root);
        http_error(wsi, srv, pss, 500, "internal_error", "out of memory");
        return;
    }
    s->model[0] = '\0'; /* not one model's answer: no x-wye-model header */
    s->wsi = wsi;
    lws_set_timeout(wsi, NO_PENDING_TIMEOUT, 0);
    gw_server_track(srv, s);
    atomic_fetch_add(&srv->metrics.open_streams, 1);
    pss->stream = s;
    enum wye_err err = agents_start(srv, s, pss->key, pss->agent, in->valuestring, eb, sizeof(eb));
    cJSON_Delete(root);
    if (err) {
        gw_stream_unref(s); /* the producer's reference */
        pss->stream = NULL;
        gw_stream_release(s);
        http_error(wsi, srv, pss, err == WYE_ERR_NOTFOUND ? 404 : gw_err_status(err),
                   err == WYE_ERR_NOTFOUND ? "agent_not_found" : "request_refused",
                   eb[0] ? eb : wye_err_str(err));
    }
}
