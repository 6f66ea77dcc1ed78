/* The routing policy (router/policy.h) on its own: "auto" goes local or remote by score with
 * reasons (at router.threshold, or the weights' own threshold when it is unset); explicit
 * names bypass scoring; unknown names are NOTFOUND; the key's routes and remote budget
 * (use-local and refuse modes; a local request is never refused by a budget); the circuit
 * breaker open -> half-open (one probe) -> closed / reopened with an injected clock; and the
 * Lua hook: forcing remote, answers that are ignored, a syntax error refused at creation, and
 * hostile hooks (infinite loop, memory bomb, os/io access) cut off while the request still
 * routes by score and the policy keeps deciding; the latency tip (router.latency_target_ms):
 * fed remote times to first token, borderline requests go local with reason "upstream_slow"
 * once the EWMA passes the target by enough, clearly hard ones stay remote, and it stands back
 * when the local side is slower or backed up, the key may not go local, the sample is stale,
 * or the target is 0; conf_load names the key when its value is out of range. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/alloc.h"
#include "common/chat.h"
#include "common/clock.h"
#include "common/crypto.h"
#include "conf/conf.h"
#include "router/keys.h"
#include "router/policy.h"

#define HIGH_PROMPT                                                                                \
    "Prove step by step that the sum of the first n odd numbers equals n^2, then write a "         \
    "Python function that computes the integral of f(x) = 3x^2 + 2x - 5 from 0 to 10 using "       \
    "Simpson's rule with 1000 intervals, explain the algorithm's complexity, derive the error "    \
    "bound, and finally implement a C++ class template with unit tests for matrix "                \
    "multiplication, handling edge cases like empty matrices and overflow. First, analyze the "    \
    "constraints; then compare the approach with Gaussian quadrature and justify each step."

/* scores about 0.84 with the built-in weights: remote, but not by a wide margin */
#define MID_PROMPT "Write a Python function that merges two sorted lists."
/* scores about 0.56: just above a 0.5 threshold */
#define EDGE_PROMPT "Explain recursion"

static int64_t fake_now;
static int64_t fake_clock(void *arg)
{
    (void)arg;
    return fake_now;
}

static struct wye_chat_req *mkreq(const char *model, const char *text, const char *key)
{
    static struct wye_chat_msg msg;
    static struct wye_chat_req req;
    memset(&req, 0, sizeof(req));
    msg.role = WYE_ROLE_USER;
    msg.content = (char *)text;
    req.model = (char *)model;
    req.msgs = &msg;
    req.n_msgs = 1;
    req.temperature = -1;
    req.top_p = -1;
    req.key_name = (char *)key;
    snprintf(req.id, sizeof(req.id), "req_policy_test");
    return &req;
}

static void cfg_init(struct conf_config *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    cfg->router.threshold = 0.5;
    cfg->router.hook_timeout_ms = 20;
    cfg->router.hook_memory_kb = 1024;
    cfg->router.breaker_failures = 2;
    cfg->router.breaker_cooldown_ms = 1000;
}

static struct rt_policy *mkpolicy(const struct conf_config *cfg, bool local, bool remote)
{
    struct rt_policy_opts o = {
        .local_name = local ? "tiny-local" : NULL,
        .has_remote = remote,
        .remote_name = remote ? "big-remote" : NULL,
        .now_ns = fake_clock,
    };
    struct rt_policy *p = NULL;
    char eb[512] = "";
    enum wye_err err = rt_policy_create(cfg, &o, &p, eb, sizeof(eb));
    if (err) {
        fail_msg("rt_policy_create: %s", eb);
    }
    return p;
}

static enum wye_err decide(struct rt_policy *p, const char *model, const char *text,
                           struct rt_key *key, struct rt_decision *d)
{
    char eb[256] = "";
    return rt_policy_decide(p, mkreq(model, text, key ? rt_key_name(key) : NULL), key, d, eb,
                            sizeof(eb));
}

static void test_auto_by_score(void **state)
{
    (void)state;
    struct conf_config cfg;
    cfg_init(&cfg);
    struct rt_policy *p = mkpolicy(&cfg, true, true);
    struct rt_decision d;
    assert_int_equal(decide(p, "auto", "hi", NULL, &d), WYE_OK);
    assert_int_equal(d.route, RT_ROUTE_LOCAL);
    assert_true(d.score >= 0 && d.score < 0.5);
    assert_non_null(strstr(d.reasons, "\"feature\":"));
    assert_int_equal(decide(p, "auto", HIGH_PROMPT, NULL, &d), WYE_OK);
    assert_int_equal(d.route, RT_ROUTE_REMOTE);
    assert_true(d.score >= 0.5 && d.score <= 1);
    assert_true(d.is_auto);
    assert_int_equal(d.reasons[0], '[');
    /* the threshold comes from the config */
    double hi_score = d.score;
    rt_policy_destroy(p);
    cfg.router.threshold = hi_score > 0.99 ? 1.0 : hi_score + 0.005;
    p = mkpolicy(&cfg, true, true);
    assert_int_equal(decide(p, "auto", HIGH_PROMPT, NULL, &d), WYE_OK);
    assert_int_equal(d.route, RT_ROUTE_LOCAL);
    rt_policy_destroy(p);
}

/* An unset router.threshold (< 0, conf_load's default) means the trained weights' own
 * threshold; a set one (0 included: everything remote) wins over it. */
static void test_threshold_unset_uses_weights(void **state)
{
    (void)state;
    struct rt_score_model m;
    char eb[256] = "";
    assert_int_equal(rt_score_model_default(&m, eb, sizeof(eb)), WYE_OK);
    struct conf_config cfg;
    cfg_init(&cfg);
    cfg.router.threshold = -1;
    assert_true(rt_policy_threshold(&cfg.router, &m) == (double)m.threshold);
    assert_true(m.threshold > 0.1f && m.threshold < 0.9f && m.threshold != 0.5f);
    cfg.router.threshold = 0.7;
    assert_true(rt_policy_threshold(&cfg.router, &m) == 0.7);
    cfg.router.threshold = 0;
    assert_true(rt_policy_threshold(&cfg.router, &m) == 0);

    /* threshold 0 is a setting, not "unset": even "hi" goes remote */
    struct rt_policy *p = mkpolicy(&cfg, true, true);
    struct rt_decision d;
    assert_int_equal(decide(p, "auto", "hi", NULL, &d), WYE_OK);
    assert_int_equal(d.route, RT_ROUTE_REMOTE);
    assert_int_equal(decide(p, "auto", MID_PROMPT, NULL, &d), WYE_OK);
    double mid_score = d.score;
    rt_policy_destroy(p);
    assert_true(mid_score > 0.5 && mid_score < 0.99);

    /* weights whose own threshold sits just above MID_PROMPT's score: unset follows them
     * (local), router.threshold 0.5 overrides them (remote) */
    m.threshold = (float)(mid_score + 0.004);
    char *json = NULL;
    assert_int_equal(rt_score_model_to_json(&m, &json), WYE_OK);
    char path[] = "/tmp/wye-policy-weights-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    FILE *f = fdopen(fd, "w");
    assert_non_null(f);
    assert_true(fputs(json, f) >= 0);
    assert_int_equal(fclose(f), 0);
    wye_free(json);
    cfg.router.weights_path = path;
    cfg.router.threshold = -1;
    p = mkpolicy(&cfg, true, true);
    assert_int_equal(decide(p, "auto", MID_PROMPT, NULL, &d), WYE_OK);
    assert_true(d.score == mid_score);
    assert_int_equal(d.route, RT_ROUTE_LOCAL);
    rt_policy_destroy(p);
    cfg.router.threshold = 0.5;
    p = mkpolicy(&cfg, true, true);
    assert_int_equal(decide(p, "auto", MID_PROMPT, NULL, &d), WYE_OK);
    assert_int_equal(d.route, RT_ROUTE_REMOTE);
    rt_policy_destroy(p);
    unlink(path);
}

static void test_explicit_names(void **state)
{
    (void)state;
    struct conf_config cfg;
    cfg_init(&cfg);
    struct rt_policy *p = mkpolicy(&cfg, true, true);
    struct rt_decision d;
    assert_int_equal(decide(p, "tiny-local", HIGH_PROMPT, NULL, &d), WYE_OK);
    assert_int_equal(d.route, RT_ROUTE_LOCAL);
    assert_true(d.score < 0); /* not scored */
    assert_int_equal(decide(p, "big-remote", "hi", NULL, &d), WYE_OK);
    assert_int_equal(d.route, RT_ROUTE_REMOTE);
    assert_true(d.score < 0);
    char eb[256] = "";
    assert_int_equal(rt_policy_decide(p, mkreq("gpt-9", "hi", NULL), NULL, &d, eb, sizeof(eb)),
                     WYE_ERR_NOTFOUND);
    assert_non_null(strstr(eb, "gpt-9"));
    rt_policy_destroy(p);

    /* one backend: auto goes there without scoring */
    p = mkpolicy(&cfg, false, true);
    assert_int_equal(decide(p, "auto", "hi", NULL, &d), WYE_OK);
    assert_int_equal(d.route, RT_ROUTE_REMOTE);
    assert_true(d.score < 0);
    assert_int_equal(decide(p, "tiny-local", "hi", NULL, &d), WYE_ERR_NOTFOUND);
    rt_policy_destroy(p);
    p = mkpolicy(&cfg, true, false);
    assert_int_equal(decide(p, "auto", HIGH_PROMPT, NULL, &d), WYE_OK);
    assert_int_equal(d.route, RT_ROUTE_LOCAL);
    assert_int_equal(decide(p, "big-remote", "hi", NULL, &d), WYE_ERR_NOTFOUND);
    rt_policy_destroy(p);
}

/* A key table with "team" (routes, budget, over_budget as given). */
static struct rt_keys *mkkeys(struct conf_config *cfg, struct conf_api_key *k, unsigned routes,
                              double budget_day, enum conf_over_budget ob)
{
    memset(k, 0, sizeof(*k));
    k->name = (char *)"team";
    wye_sha256("sk-team-secret", 14, k->sha256);
    k->budget_usd_day = budget_day;
    k->budget_usd_month = -1;
    k->routes = routes;
    k->over_budget = ob;
    cfg->api_keys = k;
    cfg->n_api_keys = 1;
    struct rt_keys *t = rt_keys_create(cfg);
    assert_non_null(t);
    return t;
}

static void test_key_routes_and_budget(void **state)
{
    (void)state;
    struct conf_config cfg;
    cfg_init(&cfg);
    struct conf_api_key k;
    struct rt_decision d;
    char eb[256] = "";

    /* a local-only key: auto stays local, an explicit remote name is refused */
    struct rt_keys *t = mkkeys(&cfg, &k, CONF_ROUTE_LOCAL, -1, CONF_OVER_BUDGET_LOCAL);
    struct rt_key *key = rt_keys_find(t, "team");
    struct rt_policy *p = mkpolicy(&cfg, true, true);
    assert_int_equal(decide(p, "auto", HIGH_PROMPT, key, &d), WYE_OK);
    assert_int_equal(d.route, RT_ROUTE_LOCAL);
    assert_non_null(strstr(d.reasons, "key_routes"));
    assert_int_equal(
        rt_policy_decide(p, mkreq("big-remote", "hi", "team"), key, &d, eb, sizeof(eb)),
        WYE_ERR_DENIED);
    assert_non_null(strstr(eb, "team"));
    rt_policy_destroy(p);
    rt_keys_destroy(t);

    /* over budget, use-local mode: remote-bound auto requests are answered locally */
    t = mkkeys(&cfg, &k, CONF_ROUTE_LOCAL | CONF_ROUTE_REMOTE, 0.01, CONF_OVER_BUDGET_LOCAL);
    key = rt_keys_find(t, "team");
    p = mkpolicy(&cfg, true, true);
    assert_int_equal(decide(p, "auto", HIGH_PROMPT, key, &d), WYE_OK);
    assert_int_equal(d.route, RT_ROUTE_REMOTE);
    rt_keys_charge(key, 0.02, wye_wall_ms());
    assert_int_equal(decide(p, "auto", HIGH_PROMPT, key, &d), WYE_OK);
    assert_int_equal(d.route, RT_ROUTE_LOCAL);
    assert_non_null(strstr(d.reasons, "\"budget\""));
    assert_int_equal(decide(p, "tiny-local", "hi", key, &d), WYE_OK);
    rt_policy_destroy(p);
    rt_keys_destroy(t);

    /* refuse mode: 429 for remote, local still answers */
    t = mkkeys(&cfg, &k, CONF_ROUTE_LOCAL | CONF_ROUTE_REMOTE, 0.01, CONF_OVER_BUDGET_REFUSE);
    key = rt_keys_find(t, "team");
    rt_keys_charge(key, 0.02, wye_wall_ms());
    p = mkpolicy(&cfg, true, true);
    assert_int_equal(
        rt_policy_decide(p, mkreq("auto", HIGH_PROMPT, "team"), key, &d, eb, sizeof(eb)),
        WYE_ERR_LIMIT);
    assert_non_null(strstr(eb, "budget"));
    assert_int_equal(decide(p, "big-remote", "hi", key, &d), WYE_ERR_LIMIT);
    assert_int_equal(decide(p, "auto", "hi", key, &d), WYE_OK); /* scores local: never refused */
    assert_int_equal(d.route, RT_ROUTE_LOCAL);
    assert_int_equal(decide(p, "tiny-local", HIGH_PROMPT, key, &d), WYE_OK);
    assert_int_equal(d.route, RT_ROUTE_LOCAL);
    rt_policy_destroy(p);
    rt_keys_destroy(t);
}

static void test_breaker(void **state)
{
    (void)state;
    struct conf_config cfg;
    cfg_init(&cfg);
    fake_now = 1000000000;
    struct rt_policy *p = mkpolicy(&cfg, true, true);
    struct rt_decision d;
    assert_int_equal(rt_policy_breaker_state(p), RT_BREAKER_CLOSED);
    rt_policy_report(p, RT_ROUTE_REMOTE, false, false, 10, -1);
    assert_int_equal(rt_policy_breaker_state(p), RT_BREAKER_CLOSED);
    rt_policy_report(p, RT_ROUTE_REMOTE, false, false, 10, -1);
    assert_int_equal(rt_policy_breaker_state(p), RT_BREAKER_OPEN);
    assert_int_equal(decide(p, "auto", HIGH_PROMPT, NULL, &d), WYE_OK);
    assert_int_equal(d.route, RT_ROUTE_LOCAL);
    assert_non_null(strstr(d.reasons, "\"breaker\""));
    /* an explicit remote name still goes remote */
    assert_int_equal(decide(p, "big-remote", "hi", NULL, &d), WYE_OK);
    assert_int_equal(d.route, RT_ROUTE_REMOTE);

    fake_now += 999 * 1000000LL;
    assert_int_equal(rt_policy_breaker_state(p), RT_BREAKER_OPEN);
    fake_now += 1000000LL;
    assert_int_equal(rt_policy_breaker_state(p), RT_BREAKER_HALF_OPEN);
    /* half-open: exactly one probe */
    assert_int_equal(decide(p, "auto", HIGH_PROMPT, NULL, &d), WYE_OK);
    assert_int_equal(d.route, RT_ROUTE_REMOTE);
    assert_true(d.probe);
    struct rt_decision d2;
    assert_int_equal(decide(p, "auto", HIGH_PROMPT, NULL, &d2), WYE_OK);
    assert_int_equal(d2.route, RT_ROUTE_LOCAL);
    /* the probe fails: open again for a whole cooldown */
    rt_policy_report(p, RT_ROUTE_REMOTE, false, true, 10, -1);
    assert_int_equal(rt_policy_breaker_state(p), RT_BREAKER_OPEN);
    fake_now += 500 * 1000000LL;
    assert_int_equal(decide(p, "auto", HIGH_PROMPT, NULL, &d), WYE_OK);
    assert_int_equal(d.route, RT_ROUTE_LOCAL);
    fake_now += 500 * 1000000LL;
    assert_int_equal(decide(p, "auto", HIGH_PROMPT, NULL, &d), WYE_OK);
    assert_int_equal(d.route, RT_ROUTE_REMOTE);
    assert_true(d.probe);
    /* the probe succeeds: closed, everything goes by score again */
    rt_policy_report(p, RT_ROUTE_REMOTE, true, true, 120, 30);
    assert_int_equal(rt_policy_breaker_state(p), RT_BREAKER_CLOSED);
    assert_int_equal(decide(p, "auto", HIGH_PROMPT, NULL, &d), WYE_OK);
    assert_int_equal(d.route, RT_ROUTE_REMOTE);
    assert_false(d.probe);
    double lat, ttft;
    rt_policy_ewma(p, RT_ROUTE_REMOTE, &lat, &ttft);
    assert_true(lat > 119 && lat < 121);
    assert_true(ttft > 29 && ttft < 31);
    rt_policy_ewma(p, RT_ROUTE_LOCAL, &lat, &ttft);
    assert_true(lat < 0);
    /* an unused probe can be given back */
    rt_policy_report(p, RT_ROUTE_REMOTE, false, false, 1, -1);
    rt_policy_report(p, RT_ROUTE_REMOTE, false, false, 1, -1);
    fake_now += 1000 * 1000000LL;
    assert_int_equal(decide(p, "auto", HIGH_PROMPT, NULL, &d), WYE_OK);
    assert_true(d.probe);
    rt_policy_probe_release(p);
    assert_int_equal(decide(p, "auto", HIGH_PROMPT, NULL, &d), WYE_OK);
    assert_true(d.probe);
    rt_policy_destroy(p);
}

static struct rt_policy *hook_policy(struct conf_config *cfg, const char *src)
{
    cfg_init(cfg);
    cfg->router.hook = (char *)src;
    return mkpolicy(cfg, true, true);
}

static void test_hook_forces_route(void **state)
{
    (void)state;
    struct conf_config cfg;
    struct rt_policy *p = hook_policy(
        &cfg, "function route(request, features, score)\n"
              "  if request.text:find('please remote', 1, true) then return 'remote' end\n"
              "  if features.math_markers > 100 or score > 2 then return 'nonsense' end\n"
              "  return nil\n"
              "end\n");
    struct rt_decision d;
    assert_int_equal(decide(p, "auto", "hi, please remote", NULL, &d), WYE_OK);
    assert_int_equal(d.route, RT_ROUTE_REMOTE);
    assert_non_null(strstr(d.reasons, "\"hook\""));
    /* nil is not an answer: ignored, the score decides, and it is counted */
    uint64_t e0 = rt_policy_hook_errors(p);
    assert_int_equal(decide(p, "auto", "hi", NULL, &d), WYE_OK);
    assert_int_equal(d.route, RT_ROUTE_LOCAL);
    assert_int_equal(rt_policy_hook_errors(p), e0 + 1);
    rt_policy_destroy(p);

    /* a returned function works too, and sees the score */
    p = hook_policy(&cfg, "return function(req, f, score) if score < 0.5 then return 'remote' "
                          "else return 'local' end end");
    assert_int_equal(decide(p, "auto", "hi", NULL, &d), WYE_OK);
    assert_int_equal(d.route, RT_ROUTE_REMOTE);
    assert_int_equal(decide(p, "auto", HIGH_PROMPT, NULL, &d), WYE_OK);
    assert_int_equal(d.route, RT_ROUTE_LOCAL);
    /* explicit names never reach the hook */
    assert_int_equal(decide(p, "tiny-local", "hi", NULL, &d), WYE_OK);
    assert_int_equal(d.route, RT_ROUTE_LOCAL);
    rt_policy_destroy(p);

    /* a syntax error or a missing route function is refused at creation */
    cfg_init(&cfg);
    cfg.router.hook = (char *)"function route( return 'x' end";
    struct rt_policy_opts o = {.local_name = "tiny-local", .has_remote = true};
    struct rt_policy *bad = NULL;
    char eb[512] = "";
    assert_int_not_equal(rt_policy_create(&cfg, &o, &bad, eb, sizeof(eb)), WYE_OK);
    assert_null(bad);
    assert_non_null(strstr(eb, "router hook"));
    cfg.router.hook = (char *)"x = 1";
    eb[0] = '\0';
    assert_int_not_equal(rt_policy_create(&cfg, &o, &bad, eb, sizeof(eb)), WYE_OK);
    assert_non_null(strstr(eb, "no route function"));
}

static void test_hook_hostile(void **state)
{
    (void)state;
    static const char *const hostile[] = {
        "function route() while true do end end",
        "function route() local t = {} for i = 1, 1e9 do t[i] = string.rep('x', 4096) .. i end end",
        "function route() return os.execute('true') and 'remote' end",
        "function route() return io.open('/etc/passwd') and 'remote' end",
        "function route() return require('os') and 'remote' end",
        "function route() return load(string.dump(print)) and 'remote' end",
        "function route() error('boom') end",
    };
    for (size_t i = 0; i < sizeof(hostile) / sizeof(hostile[0]); i++) {
        struct conf_config cfg;
        struct rt_policy *p = hook_policy(&cfg, hostile[i]);
        for (int round = 0; round < 3; round++) {
            struct rt_decision d;
            uint64_t e0 = rt_policy_hook_errors(p);
            int64_t t0 = wye_now_ns();
            assert_int_equal(decide(p, "auto", "hi", NULL, &d), WYE_OK);
            int64_t ms = (wye_now_ns() - t0) / 1000000;
            assert_int_equal(d.route, RT_ROUTE_LOCAL); /* by score */
            assert_int_equal(rt_policy_hook_errors(p), e0 + 1);
            assert_non_null(strstr(d.reasons, "hook_error"));
            assert_int_equal(decide(p, "auto", HIGH_PROMPT, NULL, &d), WYE_OK);
            assert_int_equal(d.route, RT_ROUTE_REMOTE);
            /* cut off by the time budget, not by luck (a generous bound for ASan) */
            assert_true(ms < 5000);
        }
        rt_policy_destroy(p);
    }
}

static uint64_t g_waiting; /* what the local queue callback answers */
static uint64_t local_waiting(void *arg)
{
    (void)arg;
    return g_waiting;
}

static struct rt_policy *tip_policy(const struct conf_config *cfg)
{
    struct rt_policy_opts o = {
        .local_name = "tiny-local",
        .has_remote = true,
        .remote_name = "big-remote",
        .now_ns = fake_clock,
        .local_waiting = local_waiting,
    };
    struct rt_policy *p = NULL;
    char eb[512] = "";
    if (rt_policy_create(cfg, &o, &p, eb, sizeof(eb)) != WYE_OK) {
        fail_msg("rt_policy_create: %s", eb);
    }
    return p;
}

static enum rt_route route_of(struct rt_policy *p, const char *model, const char *text,
                              struct rt_key *key, struct rt_decision *d)
{
    assert_int_equal(decide(p, model, text, key, d), WYE_OK);
    return d->route;
}

/* router.latency_target_ms: the remote's EWMA time to first token above the target moves
 * requests scored within margin = 0.1 x (ttft / target - 1) (at most 0.2) above the threshold
 * to the local model, with an "upstream_slow" reason. */
static void test_latency_tip(void **state)
{
    (void)state;
    struct conf_config cfg;
    cfg_init(&cfg);
    cfg.router.latency_target_ms = 1000;
    fake_now = 5000000000LL;
    g_waiting = 0;
    struct rt_policy *p = tip_policy(&cfg);
    struct rt_decision d;
    /* the prompts' scores: EDGE just above 0.5 (within 0.1), MID and HIGH above by more than
     * the 0.2 cap */
    assert_int_equal(route_of(p, "auto", EDGE_PROMPT, NULL, &d), RT_ROUTE_REMOTE);
    double edge = d.score;
    assert_true(edge >= 0.5);
    assert_null(strstr(d.reasons, "upstream_slow"));
    assert_int_equal(route_of(p, "auto", MID_PROMPT, NULL, &d), RT_ROUTE_REMOTE);
    assert_true(d.score > 0.5 + 0.2);

    /* a remote under the target changes nothing */
    rt_policy_report(p, RT_ROUTE_REMOTE, true, false, 2000, 900);
    assert_int_equal(route_of(p, "auto", EDGE_PROMPT, NULL, &d), RT_ROUTE_REMOTE);
    assert_null(strstr(d.reasons, "upstream_slow"));
    /* failures are not latency samples: the breaker's business */
    rt_policy_report(p, RT_ROUTE_REMOTE, false, false, 60000, 60000);
    double lat, ttft;
    rt_policy_ewma(p, RT_ROUTE_REMOTE, &lat, &ttft);
    assert_true(ttft > 899 && ttft < 901);

    /* EWMA 0.8 x 900 + 0.2 x 3400 = 1400 ms: margin 0.04, less than EDGE's lead -> remote */
    assert_true(edge > 0.5 + 0.04 && edge < 0.5 + 0.13);
    rt_policy_report(p, RT_ROUTE_REMOTE, true, false, 8000, 3400);
    rt_policy_ewma(p, RT_ROUTE_REMOTE, &lat, &ttft);
    assert_true(ttft > 1399 && ttft < 1401);
    assert_int_equal(route_of(p, "auto", EDGE_PROMPT, NULL, &d), RT_ROUTE_REMOTE);
    assert_null(strstr(d.reasons, "upstream_slow"));
    /* 0.8 x 1400 + 0.2 x 5900 = 2300 ms: margin 0.13 covers it -> local */
    rt_policy_report(p, RT_ROUTE_REMOTE, true, false, 8000, 5900);
    rt_policy_ewma(p, RT_ROUTE_REMOTE, &lat, &ttft);
    assert_true(ttft > 2299 && ttft < 2301);
    assert_int_equal(route_of(p, "auto", EDGE_PROMPT, NULL, &d), RT_ROUTE_LOCAL);
    if (!strstr(d.reasons, "within 0.130 of the threshold 0.5000")) {
        fail_msg("reasons: %s", d.reasons);
    }
    /* slower still: past 3x the target the margin is capped at 0.2 */
    for (int i = 0; i < 30; i++) {
        rt_policy_report(p, RT_ROUTE_REMOTE, true, false, 60000, 50000);
    }
    rt_policy_ewma(p, RT_ROUTE_REMOTE, &lat, &ttft);
    assert_true(ttft > 40000);
    assert_int_equal(route_of(p, "auto", EDGE_PROMPT, NULL, &d), RT_ROUTE_LOCAL);
    assert_true(d.is_auto);
    assert_true(d.score == edge); /* the score is the score; the route moved */
    const char *r = strstr(d.reasons, "{\"feature\":\"upstream_slow\",\"detail\":\"remote time "
                                      "to first token ");
    if (!r || !strstr(r, "over router.latency_target_ms 1000") ||
        !strstr(r, "within 0.200 of the threshold 0.5000")) {
        fail_msg("reasons: %s", d.reasons);
    }
    assert_non_null(strstr(d.reasons, "\"contribution\"")); /* the score's reasons stay */
    /* clearly hard requests still go remote, and explicit names are never tipped */
    assert_int_equal(route_of(p, "auto", MID_PROMPT, NULL, &d), RT_ROUTE_REMOTE);
    assert_null(strstr(d.reasons, "upstream_slow"));
    assert_int_equal(route_of(p, "auto", HIGH_PROMPT, NULL, &d), RT_ROUTE_REMOTE);
    assert_int_equal(route_of(p, "big-remote", EDGE_PROMPT, NULL, &d), RT_ROUTE_REMOTE);
    /* a request that scored local stays local, without a latency reason */
    assert_int_equal(route_of(p, "auto", "hi", NULL, &d), RT_ROUTE_LOCAL);
    assert_null(strstr(d.reasons, "upstream_slow"));

    /* the local side backed up: requests waiting for a sequence -> no tip */
    g_waiting = 3;
    assert_int_equal(route_of(p, "auto", EDGE_PROMPT, NULL, &d), RT_ROUTE_REMOTE);
    g_waiting = 0;
    assert_int_equal(route_of(p, "auto", EDGE_PROMPT, NULL, &d), RT_ROUTE_LOCAL);
    /* the local side slower than the remote (its TTFT includes queue wait) -> no tip */
    rt_policy_report(p, RT_ROUTE_LOCAL, true, false, 90000, 80000);
    assert_int_equal(route_of(p, "auto", EDGE_PROMPT, NULL, &d), RT_ROUTE_REMOTE);
    for (int i = 0; i < 40; i++) {
        rt_policy_report(p, RT_ROUTE_LOCAL, true, false, 100, 20);
    }
    assert_int_equal(route_of(p, "auto", EDGE_PROMPT, NULL, &d), RT_ROUTE_LOCAL);

    /* a key that may only use the remote route is not tipped (no key_routes detour either) */
    struct conf_api_key k;
    struct rt_keys *t = mkkeys(&cfg, &k, CONF_ROUTE_REMOTE, -1, CONF_OVER_BUDGET_LOCAL);
    assert_int_equal(route_of(p, "auto", EDGE_PROMPT, rt_keys_find(t, "team"), &d),
                     RT_ROUTE_REMOTE);
    assert_null(strstr(d.reasons, "upstream_slow"));
    assert_null(strstr(d.reasons, "key_routes"));
    rt_keys_destroy(t);
    cfg.api_keys = NULL;
    cfg.n_api_keys = 0;

    /* 30 s without a remote sample: the average no longer tips; the next sample restarts it */
    fake_now += 30000000000LL;
    assert_int_equal(route_of(p, "auto", EDGE_PROMPT, NULL, &d), RT_ROUTE_REMOTE);
    rt_policy_report(p, RT_ROUTE_REMOTE, true, false, 400, 300);
    rt_policy_ewma(p, RT_ROUTE_REMOTE, &lat, &ttft);
    assert_true(ttft > 299 && ttft < 301); /* afresh, not 0.8 x 50000 + ... */
    assert_int_equal(route_of(p, "auto", EDGE_PROMPT, NULL, &d), RT_ROUTE_REMOTE);
    rt_policy_destroy(p);

    /* latency_target_ms 0: off, however slow the remote */
    cfg.router.latency_target_ms = 0;
    p = tip_policy(&cfg);
    for (int i = 0; i < 5; i++) {
        rt_policy_report(p, RT_ROUTE_REMOTE, true, false, 60000, 50000);
    }
    assert_int_equal(route_of(p, "auto", EDGE_PROMPT, NULL, &d), RT_ROUTE_REMOTE);
    assert_null(strstr(d.reasons, "upstream_slow"));
    rt_policy_destroy(p);
}

/* The config key: default 10000, 0 allowed (off), out-of-range values name the key. */
static void test_latency_target_conf(void **state)
{
    (void)state;
    char path[] = "/tmp/wye-policy-conf-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    static const struct {
        const char *text;
        int want; /* < 0: refused */
    } cases[] = {
        {"return {}", 10000},
        {"return { router = { latency_target_ms = 0 } }", 0},
        {"return { router = { latency_target_ms = 2500 } }", 2500},
        {"return { router = { latency_target_ms = -1 } }", -1},
        {"return { router = { latency_target_ms = 600001 } }", -1},
        {"return { router = { latency_target_ms = 1.5 } }", -1},
        {"return { router = { latency_target_ms = 'fast' } }", -1},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        FILE *f = fopen(path, "w");
        assert_non_null(f);
        assert_true(fputs(cases[i].text, f) >= 0);
        assert_int_equal(fclose(f), 0);
        struct conf_config *c = NULL;
        char eb[512] = "";
        enum wye_err err = conf_load(path, NULL, &c, eb, sizeof(eb));
        if (cases[i].want >= 0) {
            if (err) {
                fail_msg("%s: %s", cases[i].text, eb);
            }
            assert_int_equal(c->router.latency_target_ms, cases[i].want);
            conf_destroy(c);
        } else {
            assert_int_equal(err, WYE_ERR_INVAL);
            assert_null(c);
            if (!strstr(eb, "router.latency_target_ms")) {
                fail_msg("%s: error '%s' does not name the key", cases[i].text, eb);
            }
        }
    }
    unlink(path);
}

static void test_reason_append(void **state)
{
    (void)state;
    struct rt_decision d;
    memset(&d, 0, sizeof(d));
    rt_decision_add_reason(&d, "fallback", "upstream 502");
    assert_string_equal(d.reasons, "[{\"feature\":\"fallback\",\"detail\":\"upstream 502\"}]");
    rt_decision_add_reason(&d, "budget", "x");
    assert_string_equal(d.reasons, "[{\"feature\":\"fallback\",\"detail\":\"upstream 502\"},"
                                   "{\"feature\":\"budget\",\"detail\":\"x\"}]");
    for (int i = 0; i < 100; i++) {
        rt_decision_add_reason(&d, "filler", "a long enough detail to fill the buffer up");
    }
    size_t n = strlen(d.reasons);
    assert_true(n < RT_REASONS_MAX);
    assert_int_equal(d.reasons[n - 1], ']');
}

int main(void)
{
    wye_log_set_level(WYE_LOG_ERROR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_auto_by_score),  cmocka_unit_test(test_threshold_unset_uses_weights),
        cmocka_unit_test(test_explicit_names), cmocka_unit_test(test_key_routes_and_budget),
        cmocka_unit_test(test_breaker),        cmocka_unit_test(test_hook_forces_route),
        cmocka_unit_test(test_hook_hostile),   cmocka_unit_test(test_reason_append),
        cmocka_unit_test(test_latency_tip),    cmocka_unit_test(test_latency_target_conf),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
