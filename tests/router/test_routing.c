/* The router with both backends (stories260K locally, the stub upstream remotely) and a real
 * ledger: "auto" goes local or remote by score and start() carries the decision; an upstream
 * 500 or timeout before the first byte is answered locally (the fallback is in the reasons);
 * a full local queue sends the request remote, or is refused with LIMIT (429) naming
 * router.queue_max when it cannot go remote (queue_max 0: no waiting); a key over its remote
 * budget is answered locally (or refused with LIMIT in refuse mode) while local requests keep
 * working; every
 * finished request (ok, error, cancelled) leaves exactly one record with the right route,
 * status and prices, the record is written before the client sees finish, and the chain
 * verifies. With router.latency_target_ms, a stub scripted to be slow to its first byte makes
 * a borderline "auto" request go local (reason "upstream_slow") while a clearly hard one still
 * goes remote. Sinks record on producer/ledger threads; cmocka asserts on the main thread. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/alloc.h"
#include "common/clock.h"
#include "common/crypto.h"
#include "common/log.h"
#include "router/keys.h"
#include "router/ledger.h"
#include "router/local.h"
#include "router/policy.h"
#include "router/router.h"
#include "tests/router/test_ledger_util.h"
#include "tests/router/test_sink_util.h"

#define WAIT_MS 20000
#define HIGH_PROMPT                                                                                \
    "Prove step by step that the sum of the first n odd numbers equals n^2, then write a "         \
    "Python function that computes the integral of f(x) = 3x^2 + 2x - 5 from 0 to 10 using "       \
    "Simpson's rule with 1000 intervals, explain the algorithm's complexity, derive the error "    \
    "bound, and finally implement a C++ class template with unit tests for matrix "                \
    "multiplication, handling edge cases like empty matrices and overflow. First, analyze the "    \
    "constraints; then compare the approach with Gaussian quadrature and justify each step."

struct renv {
    struct env e;
    struct rt_local *local;
    struct rt_ledger *ledger;
    struct rt_keys *keys;
    struct conf_api_key key;
    struct conf_price price;
    char dir[512];
    char ledger_path[600];
    int n_req;
};

static char model_path[512];
static double g_threshold = 0.5;  /* router.threshold of the next renv_start */
static int g_latency_target;      /* router.latency_target_ms of the next renv_start */
static int g_first_byte_ms = 400; /* upstream.first_byte_timeout_ms of the next renv_start */
static int64_t g_now;             /* the breaker's clock in test_breaker_router */
static const char *g_hook;        /* router.hook of the next renv_start */
static int64_t test_clock(void *arg)
{
    (void)arg;
    return g_now;
}

static void renv_start(struct renv *r, int n_seq, int queue, double budget_day,
                       enum conf_over_budget ob)
{
    memset(r, 0, sizeof(*r));
    env_init(&r->e);
    struct conf_config *cfg = &r->e.cfg;
    cfg->upstream.max_retries = 0;
    cfg->upstream.first_byte_timeout_ms = g_first_byte_ms;
    cfg->engine.model_path = model_path;
    cfg->engine.model_name = (char *)"tiny-local";
    cfg->engine.n_threads = 1;
    cfg->engine.n_ctx = 512;
    cfg->engine.n_seq_max = n_seq;
    cfg->router.queue_max = queue;
    cfg->router.threshold = g_threshold;
    cfg->router.breaker_failures = g_threshold < 0.5 ? 2 : 1000;
    cfg->router.breaker_cooldown_ms = 1000;
    cfg->router.latency_target_ms = g_latency_target;
    cfg->router.hook = (char *)g_hook;
    cfg->router.hook_timeout_ms = 300;
    cfg->router.hook_memory_kb = 1024;
    r->price =
        (struct conf_price){.model = (char *)"stub-model", .input_per_1m = 10, .output_per_1m = 20};
    cfg->prices.models = &r->price;
    cfg->prices.n_models = 1;
    cfg->prices.default_remote = (struct conf_price){NULL, 1.0, 2.0};
    cfg->prices.local_per_1m = 0.1;
    if (budget_day >= 0) {
        r->key.name = (char *)"team";
        wye_sha256("sk-team", 7, r->key.sha256);
        r->key.budget_usd_day = budget_day;
        r->key.budget_usd_month = -1;
        r->key.routes = CONF_ROUTE_LOCAL | CONF_ROUTE_REMOTE;
        r->key.over_budget = ob;
        cfg->api_keys = &r->key;
        cfg->n_api_keys = 1;
        r->keys = rt_keys_create(cfg);
        assert_non_null(r->keys);
    }
    tl_tmpdir(r->dir, sizeof(r->dir), "routing");
    snprintf(r->ledger_path, sizeof(r->ledger_path), "%s/ledger.jsonl", r->dir);
    r->ledger = tl_open(r->ledger_path, NULL);
    char eb[512] = "";
    if (rt_local_create(cfg, &r->local, eb, sizeof(eb)) != WYE_OK) {
        fail_msg("rt_local_create: %s", eb);
    }
    assert_int_equal(rt_local_start(r->local), WYE_OK);
    r->e.rt = rt_router_create(cfg);
    assert_non_null(r->e.rt);
    rt_router_set_local(r->e.rt, r->local);
    rt_router_set_ledger(r->e.rt, r->ledger);
    rt_router_set_keys(r->e.rt, r->keys);
    rt_router_set_clock(r->e.rt, test_clock, NULL);
    assert_int_equal(rt_router_start(r->e.rt), WYE_OK);
}

/* Stops everything in the serve order and checks the chain holds n_records records. */
static void renv_stop(struct renv *r, uint64_t n_records)
{
    rt_router_stop(r->e.rt);
    rt_local_stop(r->local);
    rt_ledger_close(r->ledger);
    rt_router_destroy(r->e.rt);
    r->e.rt = NULL;
    rt_local_destroy(r->local);
    env_cleanup(&r->e);
    rt_keys_destroy(r->keys);
    char **files = NULL;
    size_t n = 0;
    assert_int_equal(rt_ledger_files(r->ledger_path, &files, &n), WYE_OK);
    size_t klen = 0;
    const uint8_t *key = tl_key(&klen);
    uint64_t got = 0;
    struct wye_buf report;
    wye_buf_init(&report, 1 << 16);
    enum wye_err err = tl_verify((const char *const *)files, n, key, klen, &report, &got);
    if (err) {
        fail_msg("ledger verify: %s", report.data ? report.data : "?");
    }
    wye_buf_cleanup(&report);
    assert_int_equal(got, n_records);
    rt_ledger_files_free(files, n);
    tl_rmdir(r->dir);
}

static const char *g_agent;  /* the agent making the next submits' calls, or NULL */
static uint64_t g_agent_run; /* its run id */

static bool g_no_stream; /* submit asks for a non-streamed answer */

static enum wye_err submit(struct renv *r, const char *model, const char *content,
                           const char *extra, const char *key, struct fsink *f, char *id, char *eb,
                           size_t eblen)
{
    char json[8192];
    snprintf(json, sizeof(json),
             "{\"model\":\"%s\",\"messages\":[{\"role\":\"user\",\"content\":\"%s\"}],"
             "\"stream\":%s%s%s}",
             model, content, g_no_stream ? "false" : "true", extra ? "," : "", extra ? extra : "");
    cJSON *body = cJSON_Parse(json);
    assert_non_null(body);
    struct wye_chat_limits lim = {.depth_max = 64, .n_msgs_max = 64, .max_tokens_max = 100000};
    struct wye_chat_req *req = NULL;
    assert_int_equal(wye_chat_req_from_json(body, &lim, &req, eb, eblen), WYE_OK);
    snprintf(req->id, sizeof(req->id), "req_routing_%04d", ++r->n_req);
    snprintf(id, 32, "%s", req->id);
    req->key_name = key ? wye_strdup(key) : NULL;
    req->t_received_ns = wye_now_ns();
    if (g_agent) {
        req->agent = wye_strdup(g_agent);
        req->agent_run_id = g_agent_run;
    }
    return rt_router_submit(r->e.rt, req, fsink_sink(f), eb, eblen);
}

/* The ledger record of request id (parsed), or NULL. */
static cJSON *record(struct renv *r, const char *id)
{
    size_t len = 0;
    char *text = tl_read(r->ledger_path, &len);
    if (!text) {
        return NULL;
    }
    cJSON *found = NULL;
    char **lines = NULL;
    size_t n = tl_lines(text, &lines);
    for (size_t i = 0; i < n && !found; i++) {
        cJSON *j = cJSON_Parse(lines[i]);
        cJSON *rid = cJSON_GetObjectItem(j, "request_id");
        if (cJSON_IsString(rid) && strcmp(rid->valuestring, id) == 0) {
            found = j;
        } else {
            cJSON_Delete(j);
        }
    }
    tl_lines_free(lines, n);
    free(text);
    return found;
}

static double num(const cJSON *j, const char *name)
{
    const cJSON *v = cJSON_GetObjectItem(j, name);
    if (!cJSON_IsNumber(v)) {
        fail_msg("record field %s is not a number", name);
    }
    return v->valuedouble;
}

static const char *str(const cJSON *j, const char *name)
{
    const cJSON *v = cJSON_GetObjectItem(j, name);
    return cJSON_IsString(v) ? v->valuestring : "(not a string)";
}

static bool near(double a, double b)
{
    return fabs(a - b) <= 1e-9 + 1e-6 * fabs(b);
}

/* Checks the prices of a finished record. */
static void check_costs(const cJSON *rec)
{
    double pt = num(rec, "prompt_tokens"), ct = num(rec, "completion_tokens");
    assert_true(pt > 0);
    double cost = num(rec, "cost_usd"), cf = num(rec, "counterfactual_usd");
    if (strcmp(str(rec, "route"), "remote") == 0) {
        assert_true(near(cost, (pt * 10 + ct * 20) / 1e6));
        assert_true(near(cf, cost));
        assert_true(near(num(rec, "saving_usd"), 0));
    } else {
        assert_true(near(cost, 0.1 * (pt + ct) / 1e6));
        assert_true(near(cf, (pt * 1 + ct * 2) / 1e6));
        assert_true(near(num(rec, "saving_usd"), cf - cost));
        assert_true(num(rec, "saving_usd") > 0);
    }
}

/* Submits, waits for finish, and checks that the record was written before the finish. */
static cJSON *run_ok(struct renv *r, const char *model, const char *content, const char *extra,
                     const char *key, struct fsink *f, const char *want_route)
{
    char id[32], eb[512] = "";
    fsink_init(f);
    assert_int_equal(submit(r, model, content, extra, key, f, id, eb, sizeof(eb)), WYE_OK);
    assert_true(fsink_wait_finish(f, WAIT_MS));
    cJSON *rec = record(r, id); /* on disk when the client saw the end */
    assert_non_null(rec);
    assert_int_equal(f->violations, 0);
    assert_int_equal(f->res.err, WYE_OK);
    assert_string_equal(f->route, want_route);
    assert_true(f->text.len > 0);
    assert_string_equal(str(rec, "route"), want_route);
    assert_string_equal(str(rec, "status"), "ok");
    check_costs(rec);
    return rec;
}

/* A model call made by an agent run carries the agent and run id into its ledger record,
 * and the summary groups by agent. */
static void test_agent_records(void **state)
{
    (void)state;
    struct renv r;
    renv_start(&r, 2, 4, -1, CONF_OVER_BUDGET_LOCAL);
    struct fsink f;
    g_agent = "support";
    g_agent_run = 42;
    cJSON *rec = run_ok(&r, "auto", "hi", "\"max_tokens\":8", NULL, &f, "local");
    g_agent = NULL;
    assert_string_equal(str(rec, "agent"), "support");
    assert_string_equal(str(rec, "run_id"), "42");
    cJSON_Delete(rec);
    fsink_cleanup(&f);
    rec = run_ok(&r, "auto", "hi", "\"max_tokens\":8", NULL, &f, "local");
    assert_true(cJSON_IsNull(cJSON_GetObjectItem(rec, "agent")) ||
                !cJSON_GetObjectItem(rec, "agent"));
    cJSON_Delete(rec);
    fsink_cleanup(&f);
    const char *files[] = {r.ledger_path};
    struct wye_buf json, problems;
    wye_buf_init(&json, 1 << 20);
    wye_buf_init(&problems, 1 << 20);
    assert_int_equal(rt_ledger_summary(files, 1, 0, RT_LEDGER_BY_AGENT, &json, &problems), WYE_OK);
    assert_non_null(strstr(json.data, "\"support\""));
    wye_buf_cleanup(&json);
    wye_buf_cleanup(&problems);
    renv_stop(&r, 2);
}

static void test_auto_routes_by_score(void **state)
{
    (void)state;
    struct renv r;
    renv_start(&r, 2, 4, -1, CONF_OVER_BUDGET_LOCAL);
    struct fsink f;
    cJSON *rec = run_ok(&r, "auto", "hi", "\"max_tokens\":16", NULL, &f, "local");
    assert_string_equal(f.model, "tiny-local");
    assert_true(f.score >= 0 && f.score < 0.5);
    assert_false(f.reasons_null);
    assert_true(num(rec, "score") < 0.5);
    assert_string_equal(str(rec, "usage"), "reported");
    assert_true(cJSON_IsArray(cJSON_GetObjectItem(rec, "reasons")));
    cJSON_Delete(rec);
    fsink_cleanup(&f);

    rec = run_ok(&r, "auto", HIGH_PROMPT, NULL, NULL, &f, "remote");
    assert_string_equal(f.model, "stub-model");
    assert_true(f.score >= 0.5);
    assert_string_equal(str(rec, "model"), "stub-model");
    assert_true(num(rec, "score") >= 0.5);
    cJSON_Delete(rec);
    fsink_cleanup(&f);

    /* too long for the local context (512): an auto request goes remote instead */
    rec = run_ok(&r, "auto", "hi", "\"max_tokens\":4000", NULL, &f, "remote");
    char *rs = cJSON_PrintUnformatted(cJSON_GetObjectItem(rec, "reasons"));
    assert_non_null(strstr(rs, "local context too small"));
    free(rs);
    cJSON_Delete(rec);
    fsink_cleanup(&f);

    /* explicit names bypass scoring; unknown names are refused */
    rec = run_ok(&r, "tiny-local", HIGH_PROMPT, "\"max_tokens\":8", NULL, &f, "local");
    assert_true(f.score < 0);
    cJSON_Delete(rec);
    fsink_cleanup(&f);
    char id[32], eb[256] = "";
    fsink_init(&f);
    assert_int_equal(submit(&r, "nope", "hi", NULL, NULL, &f, id, eb, sizeof(eb)),
                     WYE_ERR_NOTFOUND);
    assert_int_equal(f.n_start + f.n_finish, 0);
    fsink_cleanup(&f);

    struct wye_buf m;
    wye_buf_init(&m, 1 << 16);
    assert_int_equal(rt_router_metrics(r.e.rt, &m), WYE_OK);
    assert_non_null(strstr(m.data, "wye_route_requests_total{route=\"local\"} 2"));
    assert_non_null(strstr(m.data, "wye_route_requests_total{route=\"remote\"} 2"));
    assert_non_null(strstr(m.data, "wye_cost_usd_total{route=\"remote\",model=\"stub-model\"}"));
    assert_non_null(strstr(m.data, "wye_saving_usd_total{route=\"local\",model=\"tiny-local\"}"));
    assert_non_null(strstr(m.data, "wye_backend_ewma_latency_seconds{route=\"local\"}"));
    assert_non_null(strstr(m.data, "wye_breaker_state 0"));
    wye_buf_reset(&m);
    assert_int_equal(rt_router_models_json(r.e.rt, &m), WYE_OK);
    assert_non_null(strstr(m.data, "\"tiny-local\""));
    assert_non_null(strstr(m.data, "\"stub-model\""));
    wye_buf_cleanup(&m);
    renv_stop(&r, 4);
}

static void test_fallback_remote_to_local(void **state)
{
    (void)state;
    struct renv r;
    renv_start(&r, 2, 4, -1, CONF_OVER_BUDGET_LOCAL);
    struct fsink f;
    cJSON *rec =
        run_ok(&r, "stub-model", "#stub status=500", "\"max_tokens\":8", NULL, &f, "local");
    char *rs = cJSON_PrintUnformatted(cJSON_GetObjectItem(rec, "reasons"));
    if (!strstr(rs, "upstream 5")) {
        fail_msg("reasons: %s", rs);
    }
    free(rs);
    cJSON_Delete(rec);
    fsink_cleanup(&f);
    /* a first-byte timeout (400 ms here) */
    rec = run_ok(&r, "stub-model", "#stub first_byte_delay_ms=3000", "\"max_tokens\":8", NULL, &f,
                 "local");
    char *reasons = cJSON_PrintUnformatted(cJSON_GetObjectItem(rec, "reasons"));
    assert_non_null(strstr(reasons, "\"fallback\""));
    free(reasons);
    cJSON_Delete(rec);
    fsink_cleanup(&f);
    /* the local model cannot take it either (max_tokens past its 512-token context; refused
     * on its preparation thread): the client gets the upstream's failure, never started, and
     * the record says remote / error */
    char id[32], eb[512] = "";
    fsink_init(&f);
    assert_int_equal(submit(&r, "stub-model", "#stub status=500", "\"max_tokens\":4000", NULL, &f,
                            id, eb, sizeof(eb)),
                     WYE_OK);
    assert_true(fsink_wait_finish(&f, WAIT_MS));
    assert_int_equal(f.violations, 0);
    assert_int_equal(f.n_start, 0);
    assert_int_equal(f.res.err, WYE_ERR_UPSTREAM);
    assert_int_equal(f.res.http_status, 502); /* the upstream's 500, as the client sees it */
    rec = record(&r, id);
    assert_non_null(rec);
    assert_string_equal(str(rec, "route"), "remote");
    assert_string_equal(str(rec, "status"), "error");
    cJSON_Delete(rec);
    fsink_cleanup(&f);
    struct rt_route_stats st;
    rt_router_route_stats(r.e.rt, &st);
    assert_int_equal(st.fallbacks_to_local, 2);
    assert_int_equal(st.requests[0], 2);
    assert_int_equal(st.requests[1], 1);

    /* an explicit local request that does not fit: refused after submit returned (the
     * tokenizing is not done on the caller's thread), as finish alone with 400's TOOBIG and
     * the message naming the context; no record, like a refusal at submit */
    fsink_init(&f);
    assert_int_equal(
        submit(&r, "tiny-local", "hi", "\"max_tokens\":4000", NULL, &f, id, eb, sizeof(eb)),
        WYE_OK);
    assert_true(fsink_wait_finish(&f, WAIT_MS));
    assert_int_equal(f.violations, 0);
    assert_int_equal(f.n_start + f.n_events, 0);
    assert_int_equal(f.res.err, WYE_ERR_TOOBIG);
    assert_non_null(strstr(f.msg, "exceeds the local model's context length (512 tokens)"));
    assert_null(record(&r, id));
    fsink_cleanup(&f);
    renv_stop(&r, 3);
}

static void unblock_all(struct fsink *f)
{
    pthread_mutex_lock(&f->mu);
    f->again_every = 0;
    pthread_mutex_unlock(&f->mu);
    fsink_unblock(f);
}

static void test_queue_full_to_remote(void **state)
{
    (void)state;
    struct renv r;
    renv_start(&r, 1, 1, -1, CONF_OVER_BUDGET_LOCAL);
    struct fsink a, b, c;
    char id[32], eb[256] = "";
    fsink_init(&a);
    fsink_init(&b);
    a.again_every = 1; /* a holds the only sequence, paused */
    b.again_every = 1;
    assert_int_equal(submit(&r, "tiny-local", "Once upon a time", "\"max_tokens\":32", NULL, &a, id,
                            eb, sizeof(eb)),
                     WYE_OK);
    assert_int_equal(submit(&r, "tiny-local", "The little dog", "\"max_tokens\":32", NULL, &b, id,
                            eb, sizeof(eb)),
                     WYE_OK);
    fsink_wait_events(&a, 1, WAIT_MS);
    cJSON *rec = run_ok(&r, "tiny-local", "hello big world", NULL, NULL, &c, "remote");
    char *reasons = cJSON_PrintUnformatted(cJSON_GetObjectItem(rec, "reasons"));
    assert_non_null(strstr(reasons, "local queue full"));
    free(reasons);
    cJSON_Delete(rec);
    assert_string_equal(c.text.data, "hello big world");
    unblock_all(&a);
    assert_true(fsink_wait_finish(&a, WAIT_MS));
    unblock_all(&b);
    assert_true(fsink_wait_finish(&b, WAIT_MS));
    assert_int_equal(a.res.err, WYE_OK);
    assert_int_equal(b.res.err, WYE_OK);
    struct rt_route_stats st;
    rt_router_route_stats(r.e.rt, &st);
    assert_int_equal(st.fallbacks_to_remote, 1);
    fsink_cleanup(&a);
    fsink_cleanup(&b);
    fsink_cleanup(&c);
    renv_stop(&r, 3);
}

/* router.queue_max = 0: no waiting at all. With the only sequence busy, a local request of a
 * key that may not go remote (no remote budget) is refused with LIMIT (HTTP 429) naming
 * router.queue_max, writes no record and leaves its sink untouched; one that may go remote
 * falls back; once the sequence is free the same key is answered locally again. */
static void test_queue_zero_refuses(void **state)
{
    (void)state;
    struct renv r;
    renv_start(&r, 1, 0, 0.0, CONF_OVER_BUDGET_LOCAL); /* "team": budget 0, no remote spend */
    struct fsink a, b, c, d;
    char id[32], eb[256] = "";
    fsink_init(&a);
    fsink_init(&b);
    a.again_every = 1; /* a holds the only sequence, paused */
    assert_int_equal(submit(&r, "tiny-local", "Once upon a time", "\"max_tokens\":32", "team", &a,
                            id, eb, sizeof(eb)),
                     WYE_OK);
    fsink_wait_events(&a, 1, WAIT_MS);
    struct rt_local_stats ls;
    rt_local_stats(r.local, &ls);
    assert_int_equal(ls.active, 1);
    assert_int_equal(ls.queued, 0);
    eb[0] = '\0';
    assert_int_equal(submit(&r, "tiny-local", "The little dog", "\"max_tokens\":8", "team", &b, id,
                            eb, sizeof(eb)),
                     WYE_ERR_LIMIT);
    assert_non_null(strstr(eb, "queue is full"));
    assert_non_null(strstr(eb, "router.queue_max = 0"));
    assert_int_equal(b.n_start + b.n_finish + b.n_events, 0);
    cJSON *rec = record(&r, id);
    assert_null(rec); /* refused at admission: no record */
    /* without the key's budget limit the same request goes remote */
    rec = run_ok(&r, "tiny-local", "hello big world", NULL, NULL, &c, "remote");
    char *reasons = cJSON_PrintUnformatted(cJSON_GetObjectItem(rec, "reasons"));
    assert_non_null(strstr(reasons, "local queue full"));
    free(reasons);
    cJSON_Delete(rec);
    unblock_all(&a);
    assert_true(fsink_wait_finish(&a, WAIT_MS));
    assert_int_equal(a.res.err, WYE_OK);
    /* 0 means "no waiting", not "never": a free sequence takes the key's request */
    rec = run_ok(&r, "tiny-local", "The little dog", "\"max_tokens\":8", "team", &d, "local");
    cJSON_Delete(rec);
    rt_local_stats(r.local, &ls);
    assert_int_equal(ls.queue_full, 2);
    fsink_cleanup(&a);
    fsink_cleanup(&b);
    fsink_cleanup(&c);
    fsink_cleanup(&d);
    renv_stop(&r, 3);
}

static void test_budget(void **state)
{
    (void)state;
    struct renv r;
    /* one remote answer of ~100 prompt tokens at $10/M is ~$0.001: over a $0.0005 budget */
    renv_start(&r, 2, 4, 0.0005, CONF_OVER_BUDGET_LOCAL);
    struct fsink f;
    cJSON *rec = run_ok(&r, "auto", HIGH_PROMPT, NULL, "team", &f, "remote");
    assert_string_equal(str(rec, "key"), "team");
    double spent = num(rec, "cost_usd");
    assert_true(spent > 0.0005);
    double day = 0, month = 0;
    rt_keys_spend(rt_keys_find(r.keys, "team"), wye_wall_ms(), &day, &month);
    assert_true(near(day, spent));
    cJSON_Delete(rec);
    fsink_cleanup(&f);
    rec = run_ok(&r, "auto", HIGH_PROMPT, "\"max_tokens\":8", "team", &f, "local");
    char *reasons = cJSON_PrintUnformatted(cJSON_GetObjectItem(rec, "reasons"));
    assert_non_null(strstr(reasons, "\"budget\""));
    free(reasons);
    cJSON_Delete(rec);
    fsink_cleanup(&f);
    rec = run_ok(&r, "tiny-local", "hi", "\"max_tokens\":8", "team", &f, "local");
    cJSON_Delete(rec);
    fsink_cleanup(&f);
    renv_stop(&r, 3);

    /* refuse mode: remote-bound requests get LIMIT, local ones still answer */
    renv_start(&r, 2, 4, 0.0005, CONF_OVER_BUDGET_REFUSE);
    rt_keys_charge(rt_keys_find(r.keys, "team"), 0.001, wye_wall_ms());
    char id[32], eb[256] = "";
    fsink_init(&f);
    assert_int_equal(submit(&r, "auto", HIGH_PROMPT, NULL, "team", &f, id, eb, sizeof(eb)),
                     WYE_ERR_LIMIT);
    assert_non_null(strstr(eb, "budget"));
    assert_int_equal(submit(&r, "stub-model", "hi", NULL, "team", &f, id, eb, sizeof(eb)),
                     WYE_ERR_LIMIT);
    assert_int_equal(f.n_start + f.n_finish, 0);
    fsink_cleanup(&f);
    rec = run_ok(&r, "auto", "hi", "\"max_tokens\":8", "team", &f, "local");
    cJSON_Delete(rec);
    fsink_cleanup(&f);
    renv_stop(&r, 1);
}

static void test_error_and_cancel_records(void **state)
{
    (void)state;
    struct renv r;
    renv_start(&r, 2, 4, -1, CONF_OVER_BUDGET_LOCAL);
    char id[32], eb[256] = "";
    /* cut after the first bytes reached the client: no fallback, an explicit error, estimated
     * usage (never $0) */
    struct fsink f;
    fsink_init(&f);
    assert_int_equal(submit(&r, "stub-model", "#stub n=6 cut_after=3 no_usage=1", NULL, NULL, &f,
                            id, eb, sizeof(eb)),
                     WYE_OK);
    assert_true(fsink_wait_finish(&f, WAIT_MS));
    assert_int_not_equal(f.res.err, WYE_OK);
    assert_string_equal(f.route, "remote");
    cJSON *rec = record(&r, id);
    assert_non_null(rec);
    assert_string_equal(str(rec, "status"), "error");
    assert_string_equal(str(rec, "route"), "remote");
    assert_string_equal(str(rec, "usage"), "estimated");
    assert_true(num(rec, "completion_tokens") >= 3);
    assert_true(num(rec, "cost_usd") > 0);
    assert_true(cJSON_IsString(cJSON_GetObjectItem(rec, "error")));
    cJSON_Delete(rec);
    fsink_cleanup(&f);

    /* cancelled mid-stream */
    fsink_init(&f);
    assert_int_equal(
        submit(&r, "stub-model", "#stub n=6 stall_after=2", NULL, NULL, &f, id, eb, sizeof(eb)),
        WYE_OK);
    fsink_wait_events(&f, 2, WAIT_MS);
    fsink_cancel(&f, true);
    assert_true(fsink_wait_finish(&f, WAIT_MS));
    assert_int_equal(f.res.err, WYE_ERR_CANCELED);
    rec = record(&r, id);
    assert_non_null(rec);
    assert_string_equal(str(rec, "status"), "cancelled");
    cJSON_Delete(rec);
    fsink_cleanup(&f);

    /* a local request cancelled */
    fsink_init(&f);
    f.again_every = 1;
    assert_int_equal(submit(&r, "tiny-local", "Once upon a time", "\"max_tokens\":64", NULL, &f, id,
                            eb, sizeof(eb)),
                     WYE_OK);
    fsink_wait_events(&f, 1, WAIT_MS);
    fsink_cancel(&f, true);
    assert_true(fsink_wait_finish(&f, WAIT_MS));
    rec = record(&r, id);
    assert_non_null(rec);
    assert_string_equal(str(rec, "status"), "cancelled");
    assert_string_equal(str(rec, "route"), "local");
    cJSON_Delete(rec);
    fsink_cleanup(&f);
    renv_stop(&r, 3);
}

/* Stopping the router while a remote answer streams: CANCELED, no fallback, recorded. */
static void test_stop_with_inflight(void **state)
{
    (void)state;
    struct renv r;
    renv_start(&r, 2, 4, -1, CONF_OVER_BUDGET_LOCAL);
    struct fsink f;
    char id[32], eb[256] = "";
    fsink_init(&f);
    assert_int_equal(
        submit(&r, "stub-model", "#stub n=6 stall_after=1", NULL, NULL, &f, id, eb, sizeof(eb)),
        WYE_OK);
    fsink_wait_events(&f, 1, WAIT_MS);
    /* shutdown while streaming: the stream ends CANCELED, no fallback, and it is recorded */
    rt_router_stop(r.e.rt);
    assert_true(fsink_wait_finish(&f, WAIT_MS));
    assert_int_equal(f.res.err, WYE_ERR_CANCELED);
    assert_string_equal(f.route, "remote");
    cJSON *rec = record(&r, id);
    assert_non_null(rec);
    assert_string_equal(str(rec, "status"), "cancelled");
    cJSON_Delete(rec);
    fsink_cleanup(&f);
    renv_stop(&r, 1);
}

static bool reasons_have(const cJSON *rec, const char *what)
{
    char *rs = cJSON_PrintUnformatted(cJSON_GetObjectItem(rec, "reasons"));
    bool yes = rs && strstr(rs, what) != NULL;
    free(rs);
    return yes;
}

/* The breaker through the router: every auto request scores remote (threshold 0.0001); two
 * upstream 500s (each answered locally by the fallback) open it; auto requests then go local
 * without trying the upstream; after the cooldown one probe goes remote and closes it. */
static void test_breaker_router(void **state)
{
    (void)state;
    g_threshold = 0.0001;
    g_now = 1000000000;
    struct renv r;
    renv_start(&r, 2, 4, -1, CONF_OVER_BUDGET_LOCAL);
    g_threshold = 0.5;
    struct fsink f;
    for (int i = 0; i < 2; i++) {
        cJSON *rec = run_ok(&r, "auto", "#stub status=500", "\"max_tokens\":8", NULL, &f, "local");
        assert_true(reasons_have(rec, "\"fallback\""));
        cJSON_Delete(rec);
        fsink_cleanup(&f);
    }
    assert_int_equal(rt_policy_breaker_state(rt_router_policy(r.e.rt)), RT_BREAKER_OPEN);
    long before = stub_upstream_requests(r.e.stub);
    cJSON *rec = run_ok(&r, "auto", "hello big world", "\"max_tokens\":8", NULL, &f, "local");
    assert_true(reasons_have(rec, "\"breaker\""));
    assert_int_equal(stub_upstream_requests(r.e.stub), before); /* the upstream was spared */
    cJSON_Delete(rec);
    fsink_cleanup(&f);
    g_now += 1000 * 1000000LL; /* the cooldown */
    assert_int_equal(rt_policy_breaker_state(rt_router_policy(r.e.rt)), RT_BREAKER_HALF_OPEN);
    rec = run_ok(&r, "auto", "hello big world", NULL, NULL, &f, "remote");
    assert_string_equal(f.text.data, "hello big world");
    cJSON_Delete(rec);
    fsink_cleanup(&f);
    assert_int_equal(rt_policy_breaker_state(rt_router_policy(r.e.rt)), RT_BREAKER_CLOSED);
    struct wye_buf m;
    wye_buf_init(&m, 1 << 16);
    assert_int_equal(rt_router_metrics(r.e.rt, &m), WYE_OK);
    assert_non_null(strstr(m.data, "wye_breaker_state 0"));
    assert_non_null(strstr(m.data, "wye_fallbacks_total{from=\"remote\",to=\"local\"} 2"));
    wye_buf_cleanup(&m);
    renv_stop(&r, 4);
}

/* router.latency_target_ms through the router: "Explain recursion" scores just above the 0.5
 * threshold (about 0.56) and goes remote while the upstream is quick. An answer from the stub
 * scripted to hold its first byte for 2 s (an explicit remote name, so it is not diverted
 * itself) lifts the remote's EWMA time to first token (alpha 0.2) past 400 ms, over 3x the
 * 100 ms target: the margin is at its 0.2 cap, the borderline request is answered locally with
 * reason "upstream_slow" and never reaches the stub, unless the local model is backed up (its
 * one sequence busy and a request waiting); the hard prompt (~1.0) still goes remote. */
static void test_upstream_slow_router(void **state)
{
    (void)state;
    g_latency_target = 100;
    g_first_byte_ms = 10000;
    struct renv r;
    renv_start(&r, 1, 4, -1, CONF_OVER_BUDGET_LOCAL); /* one sequence */
    g_latency_target = 0;
    g_first_byte_ms = 400;
    struct fsink f;
    /* no remote sample yet: by score */
    cJSON *rec = run_ok(&r, "auto", "Explain recursion", NULL, NULL, &f, "remote");
    assert_string_equal(f.text.data, "Explain recursion");
    double score = f.score;
    assert_true(score >= 0.5 && score < 0.5 + 0.2);
    assert_false(reasons_have(rec, "upstream_slow"));
    cJSON_Delete(rec);
    fsink_cleanup(&f);
    /* a slow non-streamed answer moves the latency average but not the time to first token:
     * it went upstream non-streamed, so its first token came with the whole answer */
    double lat0, ttft0, lat1, ttft1;
    rt_policy_ewma(rt_router_policy(r.e.rt), RT_ROUTE_REMOTE, &lat0, &ttft0);
    g_no_stream = true;
    rec = run_ok(&r, "stub-model", "#stub n=2 first_byte_delay_ms=500", NULL, NULL, &f, "remote");
    g_no_stream = false;
    assert_true(num(rec, "latency_ms") >= 500);
    cJSON_Delete(rec);
    fsink_cleanup(&f);
    rt_policy_ewma(rt_router_policy(r.e.rt), RT_ROUTE_REMOTE, &lat1, &ttft1);
    assert_true(ttft0 >= 0 && ttft1 == ttft0);
    assert_true(lat1 > lat0 + 50);
    /* the stub is slow to its first byte: the EWMA moves above the target */
    rec = run_ok(&r, "stub-model", "#stub n=2 first_byte_delay_ms=2000", NULL, NULL, &f, "remote");
    assert_true(num(rec, "ttft_ms") >= 2000);
    cJSON_Delete(rec);
    fsink_cleanup(&f);
    double lat, ttft;
    rt_policy_ewma(rt_router_policy(r.e.rt), RT_ROUTE_REMOTE, &lat, &ttft);
    assert_true(ttft > 100 * 3); /* past 3x the target: the margin is at its 0.2 cap */

    long before = stub_upstream_requests(r.e.stub);
    /* no max_tokens: it is a feature, and the score must be the one above */
    rec = run_ok(&r, "auto", "Explain recursion", NULL, NULL, &f, "local");
    assert_string_equal(f.model, "tiny-local");
    assert_true(f.score == score); /* same score, another route */
    if (!reasons_have(rec, "{\"feature\":\"upstream_slow\",\"detail\":\"remote time to first "
                           "token ") ||
        !reasons_have(rec, "over router.latency_target_ms 100: score within 0.200 of the "
                           "threshold 0.5000 goes local")) {
        char *rs = cJSON_PrintUnformatted(cJSON_GetObjectItem(rec, "reasons"));
        fail_msg("reasons: %s", rs);
    }
    assert_true(fabs(num(rec, "score") - score) < 1e-4); /* the ledger rounds it */
    cJSON_Delete(rec);
    fsink_cleanup(&f);
    assert_int_equal(stub_upstream_requests(r.e.stub), before); /* the slow upstream was spared */

    /* the local side backed up (its one sequence busy, a request waiting): no tip, remote */
    struct fsink a, b;
    char id[32], eb[256] = "";
    fsink_init(&a);
    fsink_init(&b);
    a.again_every = 1; /* a holds the only sequence, paused */
    assert_int_equal(submit(&r, "tiny-local", "Once upon a time", "\"max_tokens\":16", NULL, &a, id,
                            eb, sizeof(eb)),
                     WYE_OK);
    fsink_wait_events(&a, 1, WAIT_MS);
    assert_int_equal(submit(&r, "tiny-local", "The little dog", "\"max_tokens\":8", NULL, &b, id,
                            eb, sizeof(eb)),
                     WYE_OK);
    rec = run_ok(&r, "auto", "Explain recursion", NULL, NULL, &f, "remote");
    assert_false(reasons_have(rec, "upstream_slow"));
    cJSON_Delete(rec);
    fsink_cleanup(&f);
    unblock_all(&a);
    assert_true(fsink_wait_finish(&a, WAIT_MS));
    assert_true(fsink_wait_finish(&b, WAIT_MS));
    assert_int_equal(a.res.err, WYE_OK);
    assert_int_equal(b.res.err, WYE_OK);
    fsink_cleanup(&a);
    fsink_cleanup(&b);
    before = stub_upstream_requests(r.e.stub);

    /* clearly hard: still remote, however slow */
    rec = run_ok(&r, "auto", HIGH_PROMPT, NULL, NULL, &f, "remote");
    assert_false(reasons_have(rec, "upstream_slow"));
    cJSON_Delete(rec);
    fsink_cleanup(&f);
    assert_int_equal(stub_upstream_requests(r.e.stub), before + 1);
    renv_stop(&r, 8);
}

/* With a Lua route hook, "auto" requests are decided on the router's hook thread: submit
 * returns at once (never runs the hook), the hook's verdict applies, and stopping the router
 * while requests wait for a spinning hook ends each of them exactly once (the one in the hook
 * is routed by score when the hook's time runs out, or cancelled; the queued ones CANCELED),
 * without a hang. An explicit model name skips the hook thread. */
static void test_hook_thread(void **state)
{
    (void)state;
    struct renv r;
    g_hook = "function route(request, features, score)\n"
             "  if request.text:find('spin', 1, true) then while true do end end\n"
             "  return 'remote'\n"
             "end";
    renv_start(&r, 2, 4, -1, CONF_OVER_BUDGET_LOCAL);
    g_hook = NULL;
    struct fsink f;
    cJSON *rec = run_ok(&r, "auto", "hi", "\"max_tokens\":8", NULL, &f, "remote");
    char *rs = cJSON_PrintUnformatted(cJSON_GetObjectItem(rec, "reasons"));
    assert_non_null(strstr(rs, "\"hook\""));
    free(rs);
    cJSON_Delete(rec);
    fsink_cleanup(&f);
    rec = run_ok(&r, "tiny-local", "hi spin", "\"max_tokens\":8", NULL, &f, "local");
    cJSON_Delete(rec);
    fsink_cleanup(&f);

    enum { N = 3 };
    struct fsink fs[N];
    char ids[N][32], eb[256];
    for (int i = 0; i < N; i++) {
        fsink_init(&fs[i]);
        assert_int_equal(
            submit(&r, "auto", "spin", "\"max_tokens\":8", NULL, &fs[i], ids[i], eb, sizeof(eb)),
            WYE_OK);
    }
    rt_router_stop(r.e.rt);
    for (int i = 0; i < N; i++) {
        assert_true(fsink_wait_finish(&fs[i], WAIT_MS));
        assert_int_equal(fs[i].n_finish, 1);
        assert_int_equal(fs[i].violations, 0);
    }
    /* the first may have reached the hook before the stop (then a backend answered or
     * cancelled it, with a record); the others never left the queue: CANCELED, no record */
    cJSON *first = record(&r, ids[0]);
    uint64_t n_records = 2 + (first != NULL);
    cJSON_Delete(first);
    if (!first) {
        assert_int_equal(fs[0].res.err, WYE_ERR_CANCELED);
    }
    for (int i = 1; i < N; i++) {
        assert_int_equal(fs[i].res.err, WYE_ERR_CANCELED);
        assert_string_equal(fs[i].msg, "the gateway is shutting down");
        assert_int_equal(fs[i].n_start, 0);
        assert_null(record(&r, ids[i]));
    }
    for (int i = 0; i < N; i++) {
        fsink_cleanup(&fs[i]);
    }
    struct wye_buf m;
    wye_buf_init(&m, 1 << 16);
    assert_int_equal(rt_router_metrics(r.e.rt, &m), WYE_OK);
    assert_non_null(strstr(m.data, "wye_router_hook_pending 0\n"));
    wye_buf_cleanup(&m);
    renv_stop(&r, n_records);
}

int main(void)
{
    wye_log_set_level(WYE_LOG_ERROR);
    if (wye_crypto_init() != WYE_OK) {
        return 1;
    }
    snprintf(model_path, sizeof(model_path), "%s/models/stories260K-q8_0.gguf", WYE_SHARED_DIR);
    if (access(model_path, R_OK) != 0) {
        fprintf(stderr, "missing %s\n", model_path);
        return 1;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_auto_routes_by_score),
        cmocka_unit_test(test_agent_records),
        cmocka_unit_test(test_fallback_remote_to_local),
        cmocka_unit_test(test_queue_full_to_remote),
        cmocka_unit_test(test_queue_zero_refuses),
        cmocka_unit_test(test_budget),
        cmocka_unit_test(test_error_and_cancel_records),
        cmocka_unit_test(test_stop_with_inflight),
        cmocka_unit_test(test_breaker_router),
        cmocka_unit_test(test_upstream_slow_router),
        cmocka_unit_test(test_hook_thread),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
