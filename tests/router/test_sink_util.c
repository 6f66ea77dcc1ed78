/* The router tests' fake sink and stub environment (see test_sink_util.h). The sink callbacks
 * run on the upstream thread; the rest on the test's main thread. */
#include "tests/router/test_sink_util.h"

#include <cJSON.h>
#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/clock.h"

static void s_start(void *ctx, const struct wye_start *info)
{
    struct fsink *f = ctx;
    pthread_mutex_lock(&f->mu);
    if (f->n_start++ || f->n_finish) {
        f->violations++;
    }
    snprintf(f->route, sizeof(f->route), "%s", info->route);
    snprintf(f->model, sizeof(f->model), "%s", info->model);
    f->score = info->score;
    f->reasons_null = info->reasons == NULL;
    pthread_mutex_unlock(&f->mu);
}

static enum wye_err s_emit(void *ctx, const struct wye_event *ev)
{
    struct fsink *f = ctx;
    enum wye_err r = WYE_OK;
    pthread_mutex_lock(&f->mu);
    if (!f->n_start || f->n_finish) {
        f->violations++;
    }
    if (f->blocked) {
        f->n_while_blocked++;
    }
    f->n_events++;
    if (ev->type == WYE_EV_DELTA) {
        f->n_delta++;
        wye_buf_append(&f->text, ev->data, ev->len);
    } else if (ev->type == WYE_EV_TOOL_DELTA) {
        f->n_tool++;
        wye_buf_append(&f->tools, ev->data, ev->len);
        wye_buf_append(&f->tools, "\n", 1);
    } else {
        f->n_usage++;
        f->last_usage = ev->usage;
    }
    if (f->cancel_at && f->n_events == f->cancel_at) {
        atomic_store(&f->cancelled, true);
        r = WYE_ERR_CANCELED;
    } else if (f->again_every && f->n_events % f->again_every == 0) {
        f->blocked = true;
        r = WYE_ERR_AGAIN;
    }
    pthread_cond_broadcast(&f->cv);
    pthread_mutex_unlock(&f->mu);
    return r;
}

static void s_finish(void *ctx, const struct wye_result *res)
{
    struct fsink *f = ctx;
    pthread_mutex_lock(&f->mu);
    if (f->n_finish++) {
        f->violations++;
    }
    f->res = *res;
    snprintf(f->msg, sizeof(f->msg), "%s", res->message ? res->message : "");
    snprintf(f->reason, sizeof(f->reason), "%s", res->finish_reason ? res->finish_reason : "");
    f->res.message = f->msg;
    f->res.finish_reason = f->reason;
    f->t_finish_ns = wye_now_ns();
    pthread_cond_broadcast(&f->cv);
    pthread_mutex_unlock(&f->mu);
}

static bool s_cancelled(void *ctx)
{
    struct fsink *f = ctx;
    return atomic_load(&f->cancelled);
}

static void s_set_wakeup(void *ctx, void (*wake)(void *arg), void *arg)
{
    struct fsink *f = ctx;
    pthread_mutex_lock(&f->mu);
    f->wake = wake;
    f->wake_arg = arg;
    pthread_mutex_unlock(&f->mu);
}

static const struct wye_sink_ops fsink_ops = {
    .start = s_start,
    .emit = s_emit,
    .finish = s_finish,
    .cancelled = s_cancelled,
    .set_wakeup = s_set_wakeup,
};

void fsink_init(struct fsink *f)
{
    memset(f, 0, sizeof(*f));
    pthread_mutex_init(&f->mu, NULL);
    pthread_cond_init(&f->cv, NULL);
    wye_buf_init(&f->text, 1 << 20);
    wye_buf_init(&f->tools, 1 << 20);
    wye_buf_append(&f->text, "", 0);
    wye_buf_append(&f->tools, "", 0);
    atomic_init(&f->cancelled, false);
}

void fsink_cleanup(struct fsink *f)
{
    wye_buf_cleanup(&f->text);
    wye_buf_cleanup(&f->tools);
    pthread_cond_destroy(&f->cv);
    pthread_mutex_destroy(&f->mu);
}

struct wye_sink fsink_sink(struct fsink *f)
{
    return (struct wye_sink){.ops = &fsink_ops, .ctx = f};
}

static void deadline_in(struct timespec *ts, int ms)
{
    clock_gettime(CLOCK_REALTIME, ts);
    ts->tv_sec += ms / 1000;
    ts->tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts->tv_nsec >= 1000000000L) {
        ts->tv_sec++;
        ts->tv_nsec -= 1000000000L;
    }
}

bool fsink_wait_finish(struct fsink *f, int ms)
{
    struct timespec ts;
    deadline_in(&ts, ms);
    pthread_mutex_lock(&f->mu);
    while (!f->n_finish) {
        if (pthread_cond_timedwait(&f->cv, &f->mu, &ts) != 0) {
            break;
        }
    }
    bool done = f->n_finish > 0;
    pthread_mutex_unlock(&f->mu);
    return done;
}

void fsink_wait_events(struct fsink *f, int n, int ms)
{
    struct timespec ts;
    deadline_in(&ts, ms);
    pthread_mutex_lock(&f->mu);
    while (f->n_events < n && !f->blocked && !f->n_finish) {
        if (pthread_cond_timedwait(&f->cv, &f->mu, &ts) != 0) {
            break;
        }
    }
    pthread_mutex_unlock(&f->mu);
}

void fsink_unblock(struct fsink *f)
{
    pthread_mutex_lock(&f->mu);
    f->blocked = false;
    void (*wake)(void *) = f->wake;
    void *arg = f->wake_arg;
    pthread_mutex_unlock(&f->mu);
    if (wake) {
        wake(arg);
    }
}

void fsink_cancel(struct fsink *f, bool wake)
{
    atomic_store(&f->cancelled, true);
    if (wake) {
        fsink_unblock(f);
    }
}

void env_init(struct env *e)
{
    memset(e, 0, sizeof(*e));
    e->stub = stub_upstream_start();
    if (!e->stub) {
        fprintf(stderr, "cannot start the stub upstream\n");
        abort();
    }
    snprintf(e->url, sizeof(e->url), "http://127.0.0.1:%d/v1", stub_upstream_port(e->stub));
    struct conf_upstream *u = &e->cfg.upstream;
    u->base_url = e->url;
    u->model = (char *)"stub-model";
    u->api_key = (char *)"sk-test-key-1234";
    u->connect_timeout_ms = 2000;
    u->first_byte_timeout_ms = 3000;
    u->idle_timeout_ms = 3000;
    u->total_timeout_ms = 20000;
    u->max_retries = 2;
    u->retry_backoff_ms = 10;
    u->max_connections = 16;
}

void env_router(struct env *e)
{
    e->rt = rt_router_create(&e->cfg);
    if (!e->rt || rt_router_start(e->rt) != WYE_OK) {
        fprintf(stderr, "cannot start the router\n");
        abort();
    }
}

void env_cleanup(struct env *e)
{
    rt_router_destroy(e->rt);
    stub_upstream_stop(e->stub);
    e->rt = NULL;
    e->stub = NULL;
}

enum wye_err env_submit(struct env *e, const char *model, const char *content, const char *extra,
                        struct fsink *f, char *errbuf, size_t errlen)
{
    return env_submit_stream(e, model, content, extra, true, f, errbuf, errlen);
}

enum wye_err env_submit_stream(struct env *e, const char *model, const char *content,
                               const char *extra, bool stream, struct fsink *f, char *errbuf,
                               size_t errlen)
{
    char json[8192];
    snprintf(json, sizeof(json),
             "{\"model\":\"%s\",\"messages\":[{\"role\":\"user\",\"content\":\"%s\"}],"
             "\"stream\":%s%s%s}",
             model, content, stream ? "true" : "false", extra ? "," : "", extra ? extra : "");
    cJSON *body = cJSON_Parse(json);
    if (!body) {
        fprintf(stderr, "bad test JSON: %s\n", json);
        abort();
    }
    struct wye_chat_limits lim = {.depth_max = 64, .n_msgs_max = 64, .max_tokens_max = 100000};
    struct wye_chat_req *req = NULL;
    enum wye_err err = wye_chat_req_from_json(body, &lim, &req, errbuf, errlen);
    if (err) {
        fprintf(stderr, "request refused by the parser: %s\n", errbuf);
        abort();
    }
    snprintf(req->id, sizeof(req->id), "req_test");
    return rt_router_submit(e->rt, req, fsink_sink(f), errbuf, errlen);
}
