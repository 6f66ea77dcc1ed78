/* The scripted test backend (see gw_test_backend.h). submit() runs on the lws thread; each
 * producer runs on its own thread. Scripts, chosen by the last user message:
 *   default          start, one delta per word, usage (7, n_words), finish stop
 *   #slow w1 w2 ...  like default with 30 ms between words
 *   #tools           three tool_calls deltas for one call, finish tool_calls
 *   #notfound        submit refuses with NOTFOUND
 *   #fail-before     finish UPSTREAM (502) before any event
 *   #fail-after      two deltas, then finish UPSTREAM
 *   #hold            one delta, then wait for cancellation (up to 5 s), finish CANCELED
 *   #flood           1000-byte deltas until cancelled (AGAIN: wait for the wakeup) */
#include "tests/gateway/gw_test_backend.h"

#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "common/alloc.h"
#include "common/chat.h"
#include "common/clock.h"
#include "tests/gateway/http_client.h"

struct tb_stats tb_stats;

struct tb_job {
    struct wye_sink sink;
    struct wye_chat_req *req;
    pthread_t th;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool woken;
    struct tb_job *next;
};

static pthread_mutex_t jobs_mu = PTHREAD_MUTEX_INITIALIZER;
static struct tb_job *jobs;

char tb_last_key_name[80];

void tb_reset(void)
{
    tb_last_key_name[0] = '\0';
    atomic_store(&tb_stats.submits, 0);
    atomic_store(&tb_stats.finished, 0);
    atomic_store(&tb_stats.again, 0);
    atomic_store(&tb_stats.wakes, 0);
    atomic_store(&tb_stats.cancel_seen, 0);
    atomic_store(&tb_stats.cancel_seen_ns, 0);
    atomic_store(&tb_stats.max_chunk, 0);
    atomic_store(&tb_stats.emitted, 0);
}

static void job_wake(void *arg)
{
    struct tb_job *j = arg;
    pthread_mutex_lock(&j->mu);
    j->woken = true;
    pthread_cond_signal(&j->cv);
    pthread_mutex_unlock(&j->mu);
    atomic_fetch_add(&tb_stats.wakes, 1);
}

static bool job_cancelled(struct tb_job *j)
{
    return j->sink.ops->cancelled(j->sink.ctx);
}

/* Waits for a wakeup or cancellation, up to ms. */
static void job_wait(struct tb_job *j, int ms)
{
    int64_t deadline = wye_now_ns() + (int64_t)ms * WYE_NS_PER_MS;
    pthread_mutex_lock(&j->mu);
    while (!j->woken && !job_cancelled(j) && wye_now_ns() < deadline) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 5 * 1000000;
        if (ts.tv_nsec >= 1000000000) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000;
        }
        pthread_cond_timedwait(&j->cv, &j->mu, &ts);
    }
    j->woken = false;
    pthread_mutex_unlock(&j->mu);
}

/* Emits; on AGAIN waits for credit. Returns false once the consumer is gone. */
static bool job_emit(struct tb_job *j, enum wye_ev_type type, const char *data, size_t len)
{
    struct wye_event ev = {.type = type, .data = data, .len = len};
    enum wye_err err = j->sink.ops->emit(j->sink.ctx, &ev);
    if (err == WYE_ERR_CANCELED) {
        return false;
    }
    atomic_fetch_add(&tb_stats.emitted, 1);
    int64_t mc = atomic_load(&tb_stats.max_chunk);
    if ((int64_t)len > mc) {
        atomic_store(&tb_stats.max_chunk, (int64_t)len);
    }
    if (err == WYE_ERR_AGAIN) {
        atomic_fetch_add(&tb_stats.again, 1);
        job_wait(j, 5000);
    }
    return !job_cancelled(j);
}

static void job_finish(struct tb_job *j, enum wye_err err, int status, const char *msg,
                       const char *reason, int64_t completion)
{
    struct wye_result res;
    memset(&res, 0, sizeof(res));
    res.err = err;
    res.http_status = status;
    res.message = msg;
    res.finish_reason = reason;
    res.usage.prompt_tokens = 7;
    res.usage.completion_tokens = completion;
    if (job_cancelled(j)) {
        atomic_fetch_add(&tb_stats.cancel_seen, 1);
    }
    j->sink.ops->finish(j->sink.ctx, &res);
    atomic_fetch_add(&tb_stats.finished, 1);
}

static void job_start(struct tb_job *j)
{
    struct wye_start st = {
        .route = "remote", .model = "test-model", .score = 0.25, .reasons = NULL};
    j->sink.ops->start(j->sink.ctx, &st);
}

static const char *last_user(const struct wye_chat_req *req)
{
    for (size_t i = req->n_msgs; i-- > 0;) {
        if (req->msgs[i].role == WYE_ROLE_USER) {
            return req->msgs[i].content;
        }
    }
    return "";
}

static void run_words(struct tb_job *j, const char *text, int sleep_ms)
{
    job_start(j);
    int64_t n = 0;
    const char *p = text;
    while (*p) {
        while (*p == ' ') {
            p++;
        }
        const char *e = p;
        while (*e && *e != ' ') {
            e++;
        }
        if (e == p) {
            break;
        }
        char word[256];
        int len = snprintf(word, sizeof(word), "%s%.*s", n ? " " : "", (int)(e - p), p);
        if (!job_emit(j, WYE_EV_DELTA, word, (size_t)len)) {
            job_finish(j, WYE_ERR_CANCELED, 0, NULL, "cancelled", n);
            return;
        }
        n++;
        p = e;
        if (sleep_ms) {
            wye_sleep_ms(sleep_ms);
        }
    }
    struct wye_event ev = {.type = WYE_EV_USAGE};
    ev.usage.prompt_tokens = 7;
    ev.usage.completion_tokens = n;
    j->sink.ops->emit(j->sink.ctx, &ev);
    job_finish(j, WYE_OK, 0, NULL, "stop", n);
}

static void *job_main(void *arg)
{
    struct tb_job *j = arg;
    const char *text = last_user(j->req);
    if (strncmp(text, "#slow", 5) == 0) {
        run_words(j, text + 5, 30);
    } else if (strcmp(text, "#tools") == 0) {
        static const char *const d[] = {
            "[{\"index\":0,\"id\":\"call_1\",\"type\":\"function\",\"function\":{\"name\":\"get_weather\",\"arguments\":\"\"}}]",
            "[{\"index\":0,\"function\":{\"arguments\":\"{\\\"city\\\":\"}}]",
            "[{\"index\":0,\"function\":{\"arguments\":\"\\\"Paris\\\"}\"}}]",
        };
        job_start(j);
        for (int i = 0; i < 3; i++) {
            job_emit(j, WYE_EV_TOOL_DELTA, d[i], strlen(d[i]));
        }
        job_finish(j, WYE_OK, 0, NULL, "tool_calls", 3);
    } else if (strcmp(text, "#fail-before") == 0) {
        job_finish(j, WYE_ERR_UPSTREAM, 502, "upstream returned HTTP 500", "error", 0);
    } else if (strcmp(text, "#fail-after") == 0) {
        job_start(j);
        job_emit(j, WYE_EV_DELTA, "a", 1);
        job_emit(j, WYE_EV_DELTA, " b", 2);
        job_finish(j, WYE_ERR_UPSTREAM, 502, "upstream cut the stream", "error", 2);
    } else if (strcmp(text, "#hold") == 0) {
        job_start(j);
        job_emit(j, WYE_EV_DELTA, "x", 1);
        int64_t deadline = wye_now_ns() + 5 * WYE_NS_PER_S;
        while (!job_cancelled(j) && wye_now_ns() < deadline) {
            job_wait(j, 5000);
        }
        if (job_cancelled(j)) {
            atomic_store(&tb_stats.cancel_seen_ns, wye_now_ns());
        }
        job_finish(j, WYE_ERR_CANCELED, 0, NULL, "cancelled", 1);
    } else if (strcmp(text, "#flood") == 0) {
        char block[1000];
        memset(block, 'z', sizeof(block));
        job_start(j);
        for (int i = 0; i < 100000 && !job_cancelled(j); i++) {
            if (!job_emit(j, WYE_EV_DELTA, block, sizeof(block))) {
                break;
            }
        }
        if (job_cancelled(j)) {
            atomic_store(&tb_stats.cancel_seen_ns, wye_now_ns());
        }
        job_finish(j, job_cancelled(j) ? WYE_ERR_CANCELED : WYE_OK, 0, NULL, "stop", 1);
    } else {
        run_words(j, text, 0);
    }
    return NULL;
}

static enum wye_err tb_submit(void *ctx, struct wye_chat_req *req, struct wye_sink sink,
                              char *errbuf, size_t errlen)
{
    (void)ctx;
    snprintf(tb_last_key_name, sizeof(tb_last_key_name), "%s",
             req->key_name ? req->key_name : "(null)");
    if (strcmp(last_user(req), "#notfound") == 0 || strcmp(req->model, "no-such-model") == 0) {
        snprintf(errbuf, errlen, "model '%s' is not available", req->model);
        wye_chat_req_destroy(req);
        return WYE_ERR_NOTFOUND;
    }
    struct tb_job *j = wye_calloc(1, sizeof(*j));
    if (!j) {
        wye_chat_req_destroy(req);
        return WYE_ERR_NOMEM;
    }
    j->sink = sink;
    j->req = req;
    pthread_mutex_init(&j->mu, NULL);
    pthread_cond_init(&j->cv, NULL);
    sink.ops->set_wakeup(sink.ctx, job_wake, j);
    atomic_fetch_add(&tb_stats.submits, 1);
    pthread_mutex_lock(&jobs_mu);
    j->next = jobs;
    jobs = j;
    pthread_create(&j->th, NULL, job_main, j);
    pthread_mutex_unlock(&jobs_mu);
    return WYE_OK;
}

static enum wye_err tb_models(void *ctx, struct wye_buf *out)
{
    (void)ctx;
    return wye_buf_append_str(out, "[{\"id\":\"test-model\",\"object\":\"model\",\"created\":0,"
                                   "\"owned_by\":\"wye\"}]");
}

static void tb_metrics(void *ctx, struct wye_buf *out)
{
    (void)ctx;
    (void)wye_buf_append_str(out, "wye_upstream_errors_total 0\n");
}

const struct gw_backend_ops tb_ops = {
    .submit = tb_submit,
    .models_json = tb_models,
    .metrics = tb_metrics,
};

void tb_join_all(void)
{
    pthread_mutex_lock(&jobs_mu);
    struct tb_job *j = jobs;
    jobs = NULL;
    pthread_mutex_unlock(&jobs_mu);
    while (j) {
        struct tb_job *n = j->next;
        pthread_join(j->th, NULL);
        wye_chat_req_destroy(j->req);
        pthread_mutex_destroy(&j->mu);
        pthread_cond_destroy(&j->cv);
        wye_free(j);
        j = n;
    }
}

void gwt_default_cfg(struct conf_config *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    cfg->listen_host = (char *)"127.0.0.1";
    cfg->listen_port = 0;
    cfg->log_level = WYE_LOG_WARN;
    struct conf_limits *l = &cfg->limits;
    l->body_bytes_max = 64 * 1024;
    l->ws_message_bytes_max = 16 * 1024;
    l->json_depth_max = 16;
    l->n_msgs_max = 8;
    l->max_tokens_max = 1000;
    l->streams_per_conn_max = 3;
    l->connections_max = 8;
    l->stream_buffer_bytes = 8 * 1024;
    l->slow_client_timeout_ms = 300;
    l->ws_ping_interval_s = 30;
    l->ws_idle_timeout_s = 60;
    l->shutdown_grace_ms = 2000;
}

bool gwt_start(struct gwt *t)
{
    return gwt_start_keys(t, NULL);
}

bool gwt_start_keys(struct gwt *t, struct rt_keys *keys)
{
    tb_reset();
    t->srv = gw_server_create(&t->cfg, &tb_ops, NULL);
    if (!t->srv) {
        return false;
    }
    if (keys) {
        gw_server_set_keys(t->srv, keys);
    }
    if (gw_server_start(t->srv) != WYE_OK) {
        gw_server_destroy(t->srv);
        t->srv = NULL;
        return false;
    }
    t->port = gw_server_port(t->srv);
    return t->port > 0;
}

void gwt_stop(struct gwt *t)
{
    gw_server_shutdown(t->srv);
    tb_join_all();
    gw_server_destroy(t->srv);
    t->srv = NULL;
}

struct gwt *gwt_group;

int gwt_group_setup(void **state)
{
    (void)state;
    gwt_group = wye_calloc(1, sizeof(*gwt_group));
    gwt_default_cfg(&gwt_group->cfg);
    return gwt_start(gwt_group) ? 0 : -1;
}

int gwt_group_teardown(void **state)
{
    (void)state;
    gwt_stop(gwt_group);
    wye_free(gwt_group);
    gwt_group = NULL;
    return 0;
}

bool gwt_open_connections(struct gwt *t, int *fds, int n)
{
    for (int i = 0; i < n; i++) {
        fds[i] = hc_connect(t->port, 0);
        if (fds[i] < 0) {
            return false;
        }
    }
    struct gw_stats st;
    int64_t deadline = wye_now_ns() + 3 * WYE_NS_PER_S;
    do {
        wye_sleep_ms(5);
        gw_server_stats(t->srv, &st);
    } while (st.open_connections < n && wye_now_ns() < deadline);
    return true;
}

void *gwt_shutdown_thread(void *srv)
{
    gw_server_shutdown(srv);
    return NULL;
}
