/* Agent-step latency: the example support agent (lua/examples/support.lua) run end to end
 * through the real agent runtime (agents/, one worker, Lua sandbox), the real router and its
 * upstream client (libcurl), against the agents' scripted upstream on 127.0.0.1
 * (tests/agents/agent_test_server.c), which answers the first call with an order_lookup tool
 * call for the order number in the question and the second with text built from the tool
 * result: two steps per run, each a streamed model call, the second after a real Lua tool run.
 *
 * For each run: wall time from agent_rt_submit to the done callback; per step: from the
 * runtime's "step" event to the next step (or the end), split into the model call as wye sees
 * it (step -> model_call event) and the rest (tool run, loop, the next request's building);
 * and the upstream's own time (the server's clock, from a request read whole to its answer
 * written). Overhead per step = (run time - upstream time) / steps: what wye adds around the
 * model (router, upstream client, SSE parsing, agent loop, Lua tool, a TCP connect per call
 * since the scripted server closes after each answer). Runs go one at a time (-c 1) so each
 * run's upstream time is its own; with -c > 1 only run latency and runs/s are reported.
 *
 * Usage: wye-bench-agent [-n RUNS (200)] [-w WARMUP (20)] [-c CONCURRENCY (1)] [--dir DIR]
 *                        [--input TEXT] [--json] */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cJSON.h>
#include <curl/curl.h>

#include "agents/agents.h"
#include "common/alloc.h"
#include "common/clock.h"
#include "common/crypto.h"
#include "common/log.h"
#include "conf/conf.h"
#include "router/agent_host.h"
#include "router/router.h"
#include "tests/agents/agent_test_server.h"

#define STEPS_MAX 8
#define CONC_MAX 64

/* One run's timeline, written by the worker thread (events, done), read after done. */
struct brun {
    uint64_t id;
    int64_t t_submit, t_done;
    int64_t t_step[STEPS_MAX], t_call[STEPS_MAX]; /* "step" and "model_call" events */
    int n_step, n_call;
    int n_steps;
    enum wye_err err;
    char reason[256];
    bool done;
};

struct bench {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct brun runs[CONC_MAX];
    int n_live;
};

static struct bench B;

static struct brun *find(uint64_t id)
{
    for (int i = 0; i < CONC_MAX; i++) {
        if (B.runs[i].id == id && !B.runs[i].done) {
            return &B.runs[i];
        }
    }
    return NULL;
}

static void on_event(void *ud, uint64_t run_id, const char *ev)
{
    (void)ud;
    int64_t now = wye_now_ns();
    bool step = strncmp(ev, "{\"type\":\"step\"", 14) == 0;
    bool call = strncmp(ev, "{\"type\":\"model_call\"", 20) == 0;
    if (!step && !call) {
        return;
    }
    pthread_mutex_lock(&B.mu);
    struct brun *r = find(run_id);
    if (r && step && r->n_step < STEPS_MAX) {
        r->t_step[r->n_step++] = now;
    } else if (r && call && r->n_call < STEPS_MAX) {
        r->t_call[r->n_call++] = now;
    }
    pthread_mutex_unlock(&B.mu);
}

static void on_done(void *arg, const struct agent_outcome *o)
{
    struct brun *r = arg;
    int64_t now = wye_now_ns();
    pthread_mutex_lock(&B.mu);
    r->t_done = now;
    r->err = o->err;
    r->n_steps = o->n_steps;
    snprintf(r->reason, sizeof(r->reason), "%s", o->reason ? o->reason : "");
    r->done = true;
    B.n_live--;
    pthread_cond_broadcast(&B.cv);
    pthread_mutex_unlock(&B.mu);
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

/* Percentile p (0..100) of v (n, sorted in place), in microseconds. */
static double pct_us(int64_t *v, size_t n, double p)
{
    if (n == 0) {
        return 0;
    }
    qsort(v, n, sizeof(*v), cmp_i64);
    size_t i = (size_t)(p / 100.0 * (double)(n - 1) + 0.5);
    return (double)v[i < n ? i : n - 1] / 1000.0;
}

struct series {
    int64_t *v;
    size_t n;
    const char *name; /* in the table */
    const char *key;  /* in --json */
};

static void series_add(struct series *s, int64_t ns)
{
    s->v[s->n++] = ns;
}

static void usage(void)
{
    fprintf(stderr, "usage: wye-bench-agent [-n RUNS] [-w WARMUP] [-c CONCURRENCY] [--dir DIR] "
                    "[--input TEXT] [--json]\n");
}

int main(int argc, char **argv)
{
    int n_runs = 200, n_warm = 20, conc = 1;
    bool json = false;
    const char *dir = WYE_BENCH_SOURCE_DIR "/lua/examples";
    const char *input = "Where is my order 1234?";
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--json") == 0) {
            json = true;
        } else if (v && strcmp(a, "-n") == 0) {
            n_runs = atoi(v);
            i++;
        } else if (v && strcmp(a, "-w") == 0) {
            n_warm = atoi(v);
            i++;
        } else if (v && strcmp(a, "-c") == 0) {
            conc = atoi(v);
            i++;
        } else if (v && strcmp(a, "--dir") == 0) {
            dir = v;
            i++;
        } else if (v && strcmp(a, "--input") == 0) {
            input = v;
            i++;
        } else {
            usage();
            return 2;
        }
    }
    if (n_runs < 1 || n_warm < 0 || conc < 1 || conc > CONC_MAX) {
        usage();
        return 2;
    }
    wye_log_set_level(WYE_LOG_WARN); /* a log line per model call would be timed too */
    wye_log_init_from_env();
    /* before any thread starts (ARCHITECTURE) */
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK || wye_crypto_init() != WYE_OK) {
        fprintf(stderr, "cannot initialise libcurl or seed the DRBG\n");
        return 1;
    }
    pthread_mutex_init(&B.mu, NULL);
    pthread_cond_init(&B.cv, NULL);
    struct ats *srv = ats_start();
    if (!srv) {
        fprintf(stderr, "cannot start the scripted upstream\n");
        return 1;
    }
    char url[96], eb[512] = "";
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/v1", ats_port(srv));
    setenv("WYE_UPSTREAM_API_KEY", "sk-bench", 0); /* sent, as to a real provider */
    struct conf_overrides ov = {.upstream = url, .upstream_model = "scripted"};
    struct conf_config *cfg = NULL;
    if (conf_load(NULL, &ov, &cfg, eb, sizeof(eb)) != WYE_OK) {
        fprintf(stderr, "config: %s\n", eb);
        return 1;
    }
    cfg->upstream.max_retries = 0;
    struct rt_router *rt = rt_router_create(cfg);
    if (!rt || rt_router_start(rt) != WYE_OK) {
        fprintf(stderr, "cannot start the router\n");
        return 1;
    }
    struct rt_agent_host *host = rt_agent_host_create(rt, cfg);
    if (!host) {
        return 1;
    }
    rt_agent_host_set_events(host, on_event, NULL);
    struct agent_rt *art = NULL;
    struct agent_rt_opts o = {.dir = dir};
    if (agent_rt_create(&o, rt_agent_host_ops(), host, &art, eb, sizeof(eb)) != WYE_OK ||
        agent_rt_start(art) != WYE_OK) {
        fprintf(stderr, "agents: %s\n", eb);
        return 1;
    }

    size_t cap = (size_t)n_runs * STEPS_MAX + 1;
    struct series run_s = {calloc(cap, 8), 0, "run", "run"},
                  step_s = {calloc(cap, 8), 0, "step", "step"};
    struct series call_s = {calloc(cap, 8), 0, "model call (wye's view)", "model_call"};
    struct series rest_s = {calloc(cap, 8), 0, "tool + loop", "tool_and_loop"};
    struct series up_s = {calloc(cap, 8), 0, "upstream own (per call)", "upstream_per_call"};
    struct series ovh_s = {calloc(cap, 8), 0, "overhead per step", "overhead_per_step"};
    int n_failed = 0, n_total = n_warm + n_runs, submitted = 0, finished = 0;
    long long up_before = 0;
    int64_t t_start = 0;
    pthread_mutex_lock(&B.mu);
    while (finished < n_total) {
        /* keep conc runs in flight */
        while (submitted < n_total && B.n_live < conc) {
            struct brun *r = NULL;
            for (int i = 0; i < CONC_MAX && !r; i++) {
                if (B.runs[i].id == 0 || B.runs[i].done) {
                    r = &B.runs[i];
                }
            }
            if (submitted == n_warm) {
                t_start = wye_now_ns();
            }
            memset(r, 0, sizeof(*r));
            r->id = UINT64_MAX; /* reserved until the id is known */
            B.n_live++;
            up_before = ats_chat_busy_ns(srv);
            r->t_submit = wye_now_ns();
            uint64_t id = 0;
            /* the worker may answer before submit returns: hold the lock across it */
            enum wye_err err =
                agent_rt_submit(art, "support", input, on_done, r, &id, eb, sizeof(eb));
            if (err) {
                fprintf(stderr, "submit: %s\n", eb);
                return 1;
            }
            r->id = id;
            submitted++;
        }
        pthread_cond_wait(&B.cv, &B.mu);
        for (int i = 0; i < CONC_MAX; i++) {
            struct brun *r = &B.runs[i];
            if (!r->done || r->id == 0) {
                continue;
            }
            bool measured = finished >= n_warm;
            finished++;
            if (r->err || r->n_steps < 1) {
                if (n_failed++ < 3) {
                    fprintf(stderr, "run failed: %s\n", r->reason);
                }
            } else if (measured) {
                int64_t total = r->t_done - r->t_submit;
                series_add(&run_s, total);
                for (int k = 0; k < r->n_step; k++) {
                    int64_t end = k + 1 < r->n_step ? r->t_step[k + 1] : r->t_done;
                    series_add(&step_s, end - r->t_step[k]);
                    if (k < r->n_call) {
                        series_add(&call_s, r->t_call[k] - r->t_step[k]);
                        series_add(&rest_s, end - r->t_call[k]);
                    }
                }
                if (conc == 1) {
                    long long up = ats_chat_busy_ns(srv) - up_before;
                    series_add(&up_s, up / (r->n_call > 0 ? r->n_call : 1));
                    series_add(&ovh_s, (total - up) / r->n_steps);
                }
            }
            r->id = 0;
        }
    }
    int64_t wall = wye_now_ns() - t_start;
    pthread_mutex_unlock(&B.mu);

    struct series *all[] = {&run_s, &step_s, &call_s, &rest_s, &up_s, &ovh_s};
    double runs_per_s = (double)run_s.n / ((double)wall / 1e9);
    if (json) {
        cJSON *j = cJSON_CreateObject();
        cJSON_AddNumberToObject(j, "runs", (double)run_s.n);
        cJSON_AddNumberToObject(j, "failed", n_failed);
        cJSON_AddNumberToObject(j, "concurrency", conc);
        cJSON_AddNumberToObject(j, "runs_per_s", runs_per_s);
        for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++) {
            if (all[i]->n == 0) {
                continue;
            }
            cJSON *s = cJSON_AddObjectToObject(j, all[i]->key);
            cJSON_AddNumberToObject(s, "n", (double)all[i]->n);
            cJSON_AddNumberToObject(s, "p50_us", pct_us(all[i]->v, all[i]->n, 50));
            cJSON_AddNumberToObject(s, "p99_us", pct_us(all[i]->v, all[i]->n, 99));
        }
        char *s = cJSON_Print(j);
        printf("%s\n", s);
        cJSON_free(s);
        cJSON_Delete(j);
    } else {
        printf("support agent, input \"%s\": %zu runs (%d warm-up), concurrency %d, %d failed, "
               "%.1f runs/s\n",
               input, run_s.n, n_warm, conc, n_failed, runs_per_s);
        printf("%-26s %8s %12s %12s\n", "", "n", "p50 (us)", "p99 (us)");
        for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++) {
            if (all[i]->n == 0) {
                continue;
            }
            printf("%-26s %8zu %12.1f %12.1f\n", all[i]->name, all[i]->n,
                   pct_us(all[i]->v, all[i]->n, 50), pct_us(all[i]->v, all[i]->n, 99));
        }
    }
    agent_rt_destroy(art);
    rt_agent_host_destroy(host);
    rt_router_stop(rt);
    rt_router_destroy(rt);
    conf_destroy(cfg);
    ats_stop(srv);
    for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++) {
        free(all[i]->v);
    }
    curl_global_cleanup();
    return n_failed ? 1 : 0;
}
