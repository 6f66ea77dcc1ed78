/* wye-bench-http: a closed-loop load generator for OpenAI-compatible chat endpoints.
 * C concurrent clients each POST a chat request (streamed unless --no-stream), wait for the
 * whole answer, and start the next one, until N requests are done. Prints p50/p90/p99 of the
 * total latency and of the time to the first body byte (the first SSE event when streaming),
 * as text or JSON. A streamed answer counts only if it ends with [DONE]; a non-streamed one
 * only if it is HTTP 200 with a "choices" member. One thread (main) drives every transfer
 * through a libcurl multi handle, so the client costs the same whatever it measures.
 * Connections are reused (curl's pool; one easy handle per client) whenever the server keeps
 * them, streamed answers included; "connects" reports how many TCP connections were opened
 * for the measured requests (== requests when the server closes after every answer). */
#include <curl/curl.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/clock.h"

struct xfer {
    CURL *easy;
    int64_t t_start;
    int64_t t_first;
    size_t bytes;
    int done_seen;
    int stream;
};

struct run {
    const char *url;
    const char *body;
    struct curl_slist *headers;
    int n_requests;
    int n_started;
    int n_done;
    int n_failed;
    long n_connects; /* new connections the measured requests opened */
    int stream;
    long timeout_ms;
    double *lat_ms;
    double *ttfb_ms;
};

static size_t on_body(char *p, size_t size, size_t n, void *arg)
{
    struct xfer *x = arg;
    size_t len = size * n;
    if (x->t_first == 0 && len > 0) {
        x->t_first = wye_now_ns();
    }
    /* The marker is short and the answers small, so it never straddles two callbacks in
     * practice; a miss counts as a failed request, never as a false success. */
    if (x->stream ? (len >= 6 && memmem(p, len, "[DONE]", 6))
                  : (len >= 9 && memmem(p, len, "\"choices\"", 9))) {
        x->done_seen = 1;
    }
    x->bytes += len;
    return len;
}

static void start(struct run *r, CURLM *multi, struct xfer *x)
{
    curl_easy_setopt(x->easy, CURLOPT_URL, r->url);
    curl_easy_setopt(x->easy, CURLOPT_POSTFIELDS, r->body);
    curl_easy_setopt(x->easy, CURLOPT_HTTPHEADER, r->headers);
    curl_easy_setopt(x->easy, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(x->easy, CURLOPT_WRITEDATA, x);
    curl_easy_setopt(x->easy, CURLOPT_PRIVATE, x);
    curl_easy_setopt(x->easy, CURLOPT_TIMEOUT_MS, r->timeout_ms);
    x->t_start = wye_now_ns();
    x->t_first = 0;
    x->bytes = 0;
    x->done_seen = 0;
    x->stream = r->stream;
    r->n_started++;
    curl_multi_add_handle(multi, x->easy);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double pct(const double *v, int n, double p)
{
    if (n == 0) {
        return 0;
    }
    int i = (int)(p * (n - 1) + 0.5);
    return v[i];
}

/* The prompt and model go into the JSON body verbatim: no quotes, backslashes or controls. */
static int json_plain(const char *s)
{
    for (; *s; s++) {
        if (*s == '"' || *s == '\\' || (unsigned char)*s < 0x20) {
            return 0;
        }
    }
    return 1;
}

static void usage(void)
{
    fprintf(stderr, "usage: wye-bench-http --url URL [--concurrency C] [--requests N] "
                    "[--prompt TEXT] [--model M] [--header 'K: V']... [--no-stream] [--json] "
                    "[--label L] [--timeout-ms T]\n(--prompt and --model: no quotes, backslashes or control characters)\n");
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"url", required_argument, NULL, 'u'},    {"concurrency", required_argument, NULL, 'c'},
        {"requests", required_argument, NULL, 'n'}, {"prompt", required_argument, NULL, 'p'},
        {"model", required_argument, NULL, 'm'},  {"header", required_argument, NULL, 'H'},
        {"json", no_argument, NULL, 'j'},         {"label", required_argument, NULL, 'l'},
        {"no-stream", no_argument, NULL, 'S'},    {"help", no_argument, NULL, 'h'},
        {"timeout-ms", required_argument, NULL, 'T'}, {NULL, 0, NULL, 0},
    };
    struct run r = {0};
    int conc = 1, json = 0, c;
    const char *prompt = "one two three four five six seven eight";
    const char *model = "auto";
    const char *label = "";
    r.n_requests = 200;
    r.stream = 1;
    r.timeout_ms = 60000;
    r.headers = curl_slist_append(NULL, "Content-Type: application/json");
    while ((c = getopt_long(argc, argv, "u:c:n:p:m:H:jl:ST:h", opts, NULL)) != -1) {
        switch (c) {
        case 'u': r.url = optarg; break;
        case 'c': conc = atoi(optarg); break;
        case 'n': r.n_requests = atoi(optarg); break;
        case 'p': prompt = optarg; break;
        case 'm': model = optarg; break;
        case 'H': r.headers = curl_slist_append(r.headers, optarg); break;
        case 'j': json = 1; break;
        case 'l': label = optarg; break;
        case 'S': r.stream = 0; break;
        case 'T': r.timeout_ms = atol(optarg); break;
        case 'h': usage(); curl_slist_free_all(r.headers); return 0;
        default: usage(); curl_slist_free_all(r.headers); return 2;
        }
    }
    if (!r.url || conc < 1 || r.n_requests < 1 || r.timeout_ms < 1 || !json_plain(prompt) || !json_plain(model)) {
        usage();
        curl_slist_free_all(r.headers);
        return 2;
    }
    char body[4096];
    int blen = snprintf(body, sizeof(body),
                        "{\"model\":\"%s\",\"stream\":%s,\"messages\":[{\"role\":\"user\","
                        "\"content\":\"%s\"}]}",
                        model, r.stream ? "true" : "false", prompt);
    if (blen < 0 || (size_t)blen >= sizeof(body)) {
        fprintf(stderr, "wye-bench-http: --prompt and --model are too long\n");
        curl_slist_free_all(r.headers);
        return 2;
    }
    r.body = body;
    r.lat_ms = calloc((size_t)r.n_requests, sizeof(double));
    r.ttfb_ms = calloc((size_t)r.n_requests, sizeof(double));
    struct xfer *xs = calloc((size_t)conc, sizeof(*xs));
    if (!r.lat_ms || !r.ttfb_ms || !xs) {
        fprintf(stderr, "wye-bench-http: out of memory\n");
        curl_slist_free_all(r.headers);
        free(r.lat_ms);
        free(r.ttfb_ms);
        free(xs);
        return 1;
    }
    curl_global_init(CURL_GLOBAL_DEFAULT);
    CURLM *multi = curl_multi_init();
    curl_multi_setopt(multi, CURLMOPT_MAX_HOST_CONNECTIONS, (long)conc);
    int64_t t0 = wye_now_ns();
    for (int i = 0; i < conc && r.n_started < r.n_requests; i++) {
        xs[i].easy = curl_easy_init();
        start(&r, multi, &xs[i]);
    }
    int running = 1;
    while (r.n_done + r.n_failed < r.n_requests) {
        curl_multi_perform(multi, &running);
        CURLMsg *m;
        int left;
        while ((m = curl_multi_info_read(multi, &left))) {
            if (m->msg != CURLMSG_DONE) {
                continue;
            }
            struct xfer *x;
            long status = 0;
            curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&x);
            curl_easy_getinfo(m->easy_handle, CURLINFO_RESPONSE_CODE, &status);
            long connects = 0;
            curl_easy_getinfo(m->easy_handle, CURLINFO_NUM_CONNECTS, &connects);
            r.n_connects += connects;
            curl_multi_remove_handle(multi, m->easy_handle);
            if (m->data.result == CURLE_OK && status == 200 && x->done_seen) {
                int64_t now = wye_now_ns();
                r.lat_ms[r.n_done] = (double)(now - x->t_start) / 1e6;
                r.ttfb_ms[r.n_done] = (double)(x->t_first - x->t_start) / 1e6;
                r.n_done++;
            } else {
                r.n_failed++;
                if (r.n_failed <= 3) {
                    fprintf(stderr, "request failed: curl %d, HTTP %ld\n", m->data.result, status);
                }
            }
            if (r.n_started < r.n_requests) {
                start(&r, multi, x);
            }
        }
        if (r.n_done + r.n_failed < r.n_requests) {
            curl_multi_poll(multi, NULL, 0, 100, NULL);
        }
    }
    double secs = (double)(wye_now_ns() - t0) / 1e9;
    qsort(r.lat_ms, (size_t)r.n_done, sizeof(double), cmp_double);
    qsort(r.ttfb_ms, (size_t)r.n_done, sizeof(double), cmp_double);
    if (json) {
        printf("{\"label\":\"%s\",\"stream\":%s,\"concurrency\":%d,\"requests\":%d,"
               "\"failed\":%d,\"req_per_s\":%.1f,\"lat_p50_ms\":%.3f,\"lat_p90_ms\":%.3f,\"lat_p99_ms\":%.3f,"
               "\"ttfb_p50_ms\":%.3f,\"ttfb_p99_ms\":%.3f,\"connects\":%ld}\n",
               label, r.stream ? "true" : "false", conc, r.n_done, r.n_failed, r.n_done / secs,
               pct(r.lat_ms, r.n_done, .5), pct(r.lat_ms, r.n_done, .9),
               pct(r.lat_ms, r.n_done, .99), pct(r.ttfb_ms, r.n_done, .5),
               pct(r.ttfb_ms, r.n_done, .99), r.n_connects);
    } else {
        printf("%-10s c=%-3d n=%-5d failed=%-3d %8.1f req/s  latency p50 %.3f p90 %.3f p99 %.3f ms"
               "  ttfb p50 %.3f p99 %.3f ms  connects %ld\n",
               label, conc, r.n_done, r.n_failed, r.n_done / secs, pct(r.lat_ms, r.n_done, .5),
               pct(r.lat_ms, r.n_done, .9), pct(r.lat_ms, r.n_done, .99),
               pct(r.ttfb_ms, r.n_done, .5), pct(r.ttfb_ms, r.n_done, .99), r.n_connects);
    }
    for (int i = 0; i < conc; i++) {
        if (xs[i].easy) {
            curl_easy_cleanup(xs[i].easy);
        }
    }
    curl_multi_cleanup(multi);
    curl_slist_free_all(r.headers);
    curl_global_cleanup();
    free(xs);
    free(r.lat_ms);
    free(r.ttfb_ms);
    return r.n_failed ? 1 : 0;
}
