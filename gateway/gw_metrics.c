/* Metrics: counters and histograms updated with relaxed atomics from any thread (the lws
 * thread counts requests; producers count tokens, latency and time to first token), and the
 * Prometheus text rendering that GET /metrics serves (lws thread). */
#include <inttypes.h>
#include <stdio.h>

#include "gateway/gw_internal.h"

static const int status_slots[GW_N_STATUS] = {101, 200, 400, 401, 404, 405, 411,
                                              413, 429, 500, 502, 503, 504};
static const char *const path_names[GW_PATH__COUNT] = {
    "/v1/chat/completions", "/v1/models", "/healthz", "/metrics", "/v1/ws", "/v1/ledger/summary",
    "other"};
/* Upper bounds in microseconds: 5ms .. 60s. */
static const uint64_t bucket_us[GW_N_BUCKETS] = {5000,    10000,   25000,    50000,
                                                 100000,  250000,  500000,   1000000,
                                                 2500000, 5000000, 10000000, 60000000};

void gw_metrics_count_request(struct gw_metrics *m, enum gw_path path, int status)
{
    int slot = 9; /* 500 */
    for (int i = 0; i < GW_N_STATUS; i++) {
        if (status_slots[i] == status) {
            slot = i;
        }
    }
    if ((int)path < 0 || path >= GW_PATH__COUNT) {
        path = GW_PATH_OTHER;
    }
    atomic_fetch_add_explicit(&m->requests[path][slot], 1, memory_order_relaxed);
}

void gw_metrics_observe(struct gw_hist *h, int64_t ns)
{
    uint64_t us = ns > 0 ? (uint64_t)ns / 1000 : 0;
    for (int i = 0; i < GW_N_BUCKETS; i++) {
        if (us <= bucket_us[i]) {
            atomic_fetch_add_explicit(&h->bucket[i], 1, memory_order_relaxed);
            break;
        }
    }
    atomic_fetch_add_explicit(&h->sum_us, us, memory_order_relaxed);
    atomic_fetch_add_explicit(&h->count, 1, memory_order_relaxed);
}

static enum wye_err render_hist(struct wye_buf *out, const char *name, const char *help,
                                struct gw_hist *h)
{
    enum wye_err err = wye_buf_printf(out, "# HELP %s %s\n# TYPE %s histogram\n", name, help, name);
    uint64_t cum = 0;
    for (int i = 0; !err && i < GW_N_BUCKETS; i++) {
        cum += atomic_load_explicit(&h->bucket[i], memory_order_relaxed);
        err = wye_buf_printf(out, "%s_bucket{le=\"%g\"} %" PRIu64 "\n", name,
                             (double)bucket_us[i] / 1e6, cum);
    }
    uint64_t count = atomic_load_explicit(&h->count, memory_order_relaxed);
    if (!err) {
        err = wye_buf_printf(
            out, "%s_bucket{le=\"+Inf\"} %" PRIu64 "\n%s_sum %.6f\n%s_count %" PRIu64 "\n", name,
            count, name, (double)atomic_load_explicit(&h->sum_us, memory_order_relaxed) / 1e6, name,
            count);
    }
    return err;
}

enum wye_err gw_metrics_render(struct gw_metrics *m, struct wye_buf *out)
{
    enum wye_err err =
        wye_buf_append_str(out, "# HELP wye_http_requests_total HTTP requests by path and status.\n"
                                "# TYPE wye_http_requests_total counter\n");
    for (int p = 0; !err && p < GW_PATH__COUNT; p++) {
        for (int i = 0; !err && i < GW_N_STATUS; i++) {
            uint64_t v = atomic_load_explicit(&m->requests[p][i], memory_order_relaxed);
            if (v) {
                err = wye_buf_printf(
                    out, "wye_http_requests_total{path=\"%s\",status=\"%d\"} %" PRIu64 "\n",
                    path_names[p], status_slots[i], v);
            }
        }
    }
    if (!err) {
        err = wye_buf_printf(out,
                             "# HELP wye_tokens_total Tokens processed.\n"
                             "# TYPE wye_tokens_total counter\n"
                             "wye_tokens_total{kind=\"prompt\"} %" PRIu64 "\n"
                             "wye_tokens_total{kind=\"completion\"} %" PRIu64 "\n",
                             atomic_load(&m->tokens_prompt), atomic_load(&m->tokens_completion));
    }
    if (!err) {
        err = render_hist(out, "wye_request_duration_seconds",
                          "Time from request to the end of the answer.", &m->latency);
    }
    if (!err) {
        err = render_hist(out, "wye_time_to_first_token_seconds",
                          "Time from request to the first token.", &m->ttft);
    }
    if (!err) {
        err = wye_buf_printf(
            out,
            "# HELP wye_open_connections Client connections open now.\n"
            "# TYPE wye_open_connections gauge\n"
            "wye_open_connections %" PRId64 "\n"
            "# HELP wye_open_streams Answers being streamed now.\n"
            "# TYPE wye_open_streams gauge\n"
            "wye_open_streams %" PRId64 "\n"
            "# HELP wye_slow_clients_dropped_total Clients dropped for not reading.\n"
            "# TYPE wye_slow_clients_dropped_total counter\n"
            "wye_slow_clients_dropped_total %" PRIu64 "\n",
            atomic_load(&m->open_connections), atomic_load(&m->open_streams),
            atomic_load(&m->slow_dropped));
    }
    return err;
}
