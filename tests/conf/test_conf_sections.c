/* conf/: the keys, auth, prices, ledger options and router sections: every key read into its
 * typed field, the defaults, each kind of error naming the key path (unknown key, wrong type,
 * out of range, malformed hash, duplicate name or hash, missing required field, inconsistent
 * combinations), and loading under allocation failure. */
/* cmocka.h needs these first. */
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
#include "common/crypto.h"
#include "conf/conf.h"

#define H1 "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
#define H2 "60303AE22B998861BCE3B28F33EEC1BE758A213C86C93C076DBE9F558C11C752"

static char tmp_path[64];

static const char *write_file(const char *text)
{
    if (tmp_path[0]) {
        unlink(tmp_path);
    }
    snprintf(tmp_path, sizeof(tmp_path), "/tmp/wye-conf-sec-XXXXXX.lua");
    int fd = mkstemps(tmp_path, 4);
    assert_true(fd >= 0);
    size_t len = strlen(text);
    assert_int_equal(write(fd, text, len), (ssize_t)len);
    close(fd);
    return tmp_path;
}

static int teardown(void **state)
{
    (void)state;
    if (tmp_path[0]) {
        unlink(tmp_path);
        tmp_path[0] = '\0';
    }
    return 0;
}

static const char full_conf[] =
    "return {\n"
    "  keys = {\n"
    "    { name = 'alice', sha256 = '" H1 "', rpm = 60, budget_usd_day = 1.5,\n"
    "      budget_usd_month = 20, routes = { 'local', 'remote' }, over_budget = 'refuse' },\n"
    "    { name = 'bob@team.x-1', sha256 = '" H2 "', routes = { 'remote' } },\n"
    "    { name = 'carol', sha256 = ('" H1 "'):sub(1, 63) .. 'f', budget_usd_day = 0 },\n"
    "  },\n"
    "  auth = { required = false },\n"
    "  prices = { models = { ['gpt-4o-mini'] = { input_per_1m = 0.15, output_per_1m = 0.6 },\n"
    "                        big = { input_per_1m = 5, output_per_1m = 15 } },\n"
    "             default_remote = { input_per_1m = 2.5, output_per_1m = 10 }, local_per_1m = 0.01 "
    "},\n"
    "  ledger = { path = 'l.jsonl', fsync = 'always', fsync_interval_ms = 250,\n"
    "             rotate_bytes = 2^20, rotate_daily = true },\n"
    "  router = { threshold = 0.75, hook = 'function route(r, f, s)\\n  return \"local\"\\nend',\n"
    "             hook_timeout_ms = 7, hook_memory_kb = 2048, queue_max = 0,\n"
    "             breaker_failures = 3, breaker_cooldown_ms = 500,\n"
    "             weights = '" WYE_SOURCE_DIR "/conf/router-weights.json' },\n"
    "  agents = { workers = 3, allow_hosts = { summarise = { 'example.com', '*.example.org' } } },\n"
    "}\n";

static void test_every_key(void **state)
{
    (void)state;
    struct conf_config *c = NULL;
    char err[512];
    enum wye_err rc = conf_load(write_file(full_conf), NULL, &c, err, sizeof(err));
    if (rc) {
        fail_msg("%s", err);
    }
    assert_int_equal(c->n_api_keys, 3);
    const struct conf_api_key *a = &c->api_keys[0], *b = &c->api_keys[1], *k3 = &c->api_keys[2];
    uint8_t h[32];
    assert_string_equal(a->name, "alice");
    assert_true(wye_hex_decode(H1, h, 32));
    assert_memory_equal(a->sha256, h, 32);
    assert_int_equal(a->rpm, 60);
    assert_true(a->budget_usd_day == 1.5 && a->budget_usd_month == 20);
    assert_int_equal(a->routes, CONF_ROUTE_LOCAL | CONF_ROUTE_REMOTE);
    assert_int_equal(a->over_budget, CONF_OVER_BUDGET_REFUSE);
    assert_string_equal(b->name, "bob@team.x-1");
    assert_int_equal(b->routes, CONF_ROUTE_REMOTE);
    assert_int_equal(b->over_budget, CONF_OVER_BUDGET_REFUSE);     /* no local route */
    assert_true(b->budget_usd_day < 0 && b->budget_usd_month < 0); /* absent: unlimited */
    assert_int_equal(b->rpm, 0);
    assert_true(k3->budget_usd_day == 0); /* 0: no remote spend */
    assert_int_equal(k3->over_budget, CONF_OVER_BUDGET_LOCAL);
    assert_false(c->auth.required); /* written false wins over "keys configured" */
    assert_int_equal(c->prices.n_models, 2);
    const struct conf_price *p = conf_price_for(c, "gpt-4o-mini");
    assert_string_equal(p->model, "gpt-4o-mini");
    assert_true(p->input_per_1m == 0.15 && p->output_per_1m == 0.6);
    assert_true(conf_price_for(c, "big")->output_per_1m == 15);
    p = conf_price_for(c, "unknown-model");
    assert_ptr_equal(p, &c->prices.default_remote);
    assert_true(p->input_per_1m == 2.5 && p->output_per_1m == 10);
    assert_true(c->prices.local_per_1m == 0.01);
    assert_string_equal(c->ledger_path, "l.jsonl");
    assert_int_equal(c->ledger.fsync, CONF_FSYNC_ALWAYS);
    assert_int_equal(c->ledger.fsync_interval_ms, 250);
    assert_int_equal(c->ledger.rotate_bytes, 1 << 20);
    assert_true(c->ledger.rotate_daily);
    assert_true(c->router.threshold == 0.75);
    assert_string_equal(c->router.hook, "function route(r, f, s)\n  return \"local\"\nend");
    assert_null(c->router.hook_file);
    assert_non_null(strstr(c->router.weights_path, "router-weights.json"));
    assert_int_equal(c->router.hook_timeout_ms, 7);
    assert_int_equal(c->router.hook_memory_kb, 2048);
    assert_int_equal(c->router.queue_max, 0); /* 0 is kept: no queue, not the default */
    assert_int_equal(c->router.breaker_failures, 3);
    assert_int_equal(c->router.breaker_cooldown_ms, 500);
    assert_int_equal(c->agents.n_workers, 3);
    assert_int_equal(c->agents.n_allow, 1);
    assert_string_equal(c->agents.allow[0].name, "summarise");
    assert_string_equal(c->agents.allow[0].hosts, "example.com,*.example.org");
    conf_destroy(c);
}

static void test_defaults(void **state)
{
    (void)state;
    struct conf_config *c = NULL;
    char err[512];
    assert_int_equal(conf_load(NULL, NULL, &c, err, sizeof(err)), WYE_OK);
    assert_int_equal(c->n_api_keys, 0);
    assert_false(c->auth.required);
    assert_int_equal(c->prices.n_models, 0);
    assert_true(c->prices.default_remote.input_per_1m == 0.15);
    assert_true(c->prices.default_remote.output_per_1m == 0.60);
    assert_true(c->prices.local_per_1m == 0);
    assert_int_equal(c->ledger.fsync, CONF_FSYNC_INTERVAL);
    assert_int_equal(c->ledger.fsync_interval_ms, 1000);
    assert_int_equal(c->ledger.rotate_bytes, 0);
    assert_false(c->ledger.rotate_daily);
    assert_true(c->router.threshold < 0); /* unset: the weights' own threshold */
    assert_null(c->router.weights_path);
    assert_null(c->router.hook);
    assert_null(c->router.hook_file);
    assert_int_equal(c->router.hook_timeout_ms, 5);
    assert_int_equal(c->router.hook_memory_kb, 1024);
    assert_int_equal(c->router.queue_max, 64);
    assert_int_equal(c->router.breaker_failures, 5);
    assert_int_equal(c->router.breaker_cooldown_ms, 10000);
    conf_destroy(c);
    /* The example file loads to the same values. */
    assert_int_equal(conf_load(WYE_SOURCE_DIR "/conf/wye.lua", NULL, &c, err, sizeof(err)), WYE_OK);
    assert_int_equal(c->n_api_keys, 0);
    assert_int_equal(c->ledger.fsync, CONF_FSYNC_INTERVAL);
    assert_true(c->router.threshold < 0);
    assert_int_equal(c->router.queue_max, 64);
    conf_destroy(c);
    /* threshold 0 is a setting (everything remote), kept apart from "unset" */
    assert_int_equal(
        conf_load(write_file("return { router = { threshold = 0 } }"), NULL, &c, err, sizeof(err)),
        WYE_OK);
    assert_true(c->router.threshold == 0);
    conf_destroy(c);
    /* Keys configured: auth is required unless written otherwise. */
    assert_int_equal(
        conf_load(write_file("return { keys = { { name = 'a', sha256 = '" H1 "' } } }"), NULL, &c,
                  err, sizeof(err)),
        WYE_OK);
    assert_true(c->auth.required);
    assert_int_equal(c->api_keys[0].routes, CONF_ROUTE_LOCAL | CONF_ROUTE_REMOTE);
    assert_int_equal(c->api_keys[0].over_budget, CONF_OVER_BUDGET_LOCAL);
    conf_destroy(c);
}

struct bad_case {
    const char *text;
    const char *msg;
};

#define K1 "{ name = 'a', sha256 = '" H1 "'"

static void test_errors(void **state)
{
    (void)state;
    static const struct bad_case cases[] = {
        {"return { keys = 5 }", ": keys: expected a table, got number"},
        {"return { keys = { x = {} } }", ": keys: expected an array"},
        {"return { keys = { 'a' } }", ": keys[1]: expected a table, got string"},
        {"return { keys = { " K1 ", colour = 1 } } }", ": keys[1].colour: unknown key"},
        {"return { keys = { { sha256 = '" H1 "' } } }", ": keys[1].name: required"},
        {"return { keys = { { name = 'a' } } }", ": keys[1].sha256: required"},
        {"return { keys = { { name = 'a b', sha256 = '" H1 "' } } }",
         ": keys[1].name: expected 1 to 64 characters"},
        {"return { keys = { { name = ('a'):rep(65), sha256 = '" H1 "' } } }",
         ": keys[1].name: expected 1 to 64 characters"},
        {"return { keys = { { name = 'a', sha256 = 'abc' } } }",
         ": keys[1].sha256: expected 64 hex digits"},
        {"return { keys = { { name = 'a', sha256 = ('g'):rep(64) } } }",
         ": keys[1].sha256: expected 64 hex digits"},
        {"return { keys = { { name = 'a', sha256 = 7 } } }",
         ": keys[1].sha256: expected a string, got number"},
        {"return { keys = { " K1 ", rpm = -1 } } }", "keys[1].rpm: -1 is out of range 0..1000000"},
        {"return { keys = { " K1 ", rpm = 1.5 } } }", "keys[1].rpm: expected an integer, got 1.5"},
        {"return { keys = { " K1 ", budget_usd_day = -0.5 } } }",
         "keys[1].budget_usd_day: -0.5 is out of range 0..1e+09"},
        {"return { keys = { " K1 ", budget_usd_month = 0/0 } } }", "is out of range 0..1e+09"},
        {"return { keys = { " K1 ", budget_usd_month = '5' } } }",
         "keys[1].budget_usd_month: expected a number, got string"},
        {"return { keys = { " K1 ", routes = 'local' } } }",
         "keys[1].routes: expected a table, got string"},
        {"return { keys = { " K1 ", routes = { 'local', 'moon' } } } }",
         "keys[1].routes[2]: expected \"local\" or \"remote\""},
        {"return { keys = { " K1 ", routes = {} } } }",
         "keys[1].routes: must allow at least one of"},
        {"return { keys = { " K1 ", over_budget = 'cry' } } }",
         "keys[1].over_budget: expected \"local\" or \"refuse\""},
        {"return { keys = { " K1 ", routes = { 'remote' }, over_budget = 'local' } } }",
         "keys[1].over_budget: \"local\" needs \"local\" in routes"},
        {"return { keys = { " K1 " }, { name = 'a', sha256 = '" H2 "' } } }",
         "keys[2].name: the name is already used by keys[1]"},
        {"return { keys = { " K1 " }, { name = 'b', sha256 = '" H1 "' } } }",
         "keys[2].sha256: the same hash is already used by keys[1]"},
        {"return { agents = { workers = 0 } }", "agents.workers: 0 is out of range 1..64"},
        {"return { agents = { allow_hosts = { a = 'x.com' } } }",
         "agents.allow_hosts[a]: expected a list of hosts, got string"},
        {"return { agents = { allow_hosts = { a = { 'ok.com', 'bad host' } } } }",
         "agents.allow_hosts[a][2]: expected a host name"},
        {"return { agents = { allow_hosts = { { 'x.com' } } } }",
         "agents.allow_hosts[[1]]: expected an agent or workflow name"},
        {"return { agents = { allowed = {} } }", "agents.allowed: unknown key"},
        {"return { auth = { required = 'yes' } }", "auth.required: expected a boolean, got string"},
        {"return { auth = { required = true } }",
         "auth.required: true, but no keys are configured"},
        {"return { auth = { optional = true } }", "auth.optional: unknown key"},
        {"return { prices = { models = { m = 1 } } }", "prices.models[m]: expected a table"},
        {"return { prices = { models = { { input_per_1m = 1, output_per_1m = 1 } } } }",
         "prices.models[[1]]: expected a model name"},
        {"return { prices = { models = { m = { input_per_1m = 1 } } } }",
         "prices.models[m].output_per_1m: required"},
        {"return { prices = { models = { m = { input_per_1m = -1, output_per_1m = 1 } } } }",
         "prices.models[m].input_per_1m: -1 is out of range"},
        {"return { prices = { models = { m = { input_per_1m = 1, output_per_1m = 1, x = 1 } } } }",
         "prices.models[m].x: unknown key"},
        {"return { prices = { default_remote = { input_per_1m = 'a' } } }",
         "prices.default_remote.input_per_1m: expected a number, got string"},
        {"return { prices = { local_per_1m = -1 } }", "prices.local_per_1m: -1 is out of range"},
        {"return { ledger = { fsync = 'sometimes' } }",
         "ledger.fsync: expected \"none\", \"always\" or \"interval\""},
        {"return { ledger = { fsync_interval_ms = 0 } }",
         "ledger.fsync_interval_ms: 0 is out of range 1..3600000"},
        {"return { ledger = { rotate_bytes = -1 } }", "ledger.rotate_bytes: -1 is out of range"},
        {"return { ledger = { rotate_daily = 1 } }",
         "ledger.rotate_daily: expected a boolean, got number"},
        {"return { router = { threshold = 1.5 } }", "router.threshold: 1.5 is out of range 0..1"},
        {"return { router = { threshold = 'high' } }",
         "router.threshold: expected a number, got string"},
        {"return { router = { hook = 'x', hook_file = '/etc/hostname' } }",
         "router.hook_file: give either router.hook or router.hook_file"},
        {"return { router = { hook_file = '/nonexistent/hook.lua' } }",
         "router.hook_file: cannot read the file"},
        {"return { router = { weights = '/nonexistent/w.json' } }",
         "router.weights: cannot read the file"},
        {"return { router = { hook = 'a\\0b' } }", "router.hook: contains a NUL byte"},
        {"return { router = { hook = ('x'):rep(70000) } }", "router.hook: longer than 65536 bytes"},
        {"return { router = { hook_timeout_ms = 0 } }",
         "router.hook_timeout_ms: 0 is out of range"},
        {"return { router = { hook_memory_kb = 1 } }", "router.hook_memory_kb: 1 is out of range"},
        /* the cascade is not implemented (docs/routing.md): its keys are refused, not ignored */
        {"return { router = { cascade = false } }", "router.cascade: unknown key"},
        {"return { router = { cascade_min_logprob = -2.5 } }",
         "router.cascade_min_logprob: unknown key"},
        {"return { router = { cascade_tokens = 4 } }", "router.cascade_tokens: unknown key"},
        {"return { router = { queue_max = -1 } }", "router.queue_max: -1 is out of range"},
        {"return { router = { breaker_failures = 0 } }",
         "router.breaker_failures: 0 is out of range"},
        {"return { router = { breaker_cooldown_ms = 1 } }",
         "router.breaker_cooldown_ms: 1 is out of range"},
        {"return { router = { treshold = 0.5 } }", "router.treshold: unknown key"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct conf_config *cfg = (struct conf_config *)&cfg;
        char err[512] = "";
        enum wye_err rc = conf_load(write_file(cases[i].text), NULL, &cfg, err, sizeof(err));
        if (rc != WYE_ERR_INVAL || !strstr(err, cases[i].msg)) {
            fail_msg("case %zu: %s\n  got rc %d: \"%s\"\n  want: \"%s\"", i, cases[i].text, rc, err,
                     cases[i].msg);
        }
        assert_null(cfg);
        /* Hashes are never echoed. */
        assert_null(strstr(err, H1));
    }
}

static void test_allocation_failure(void **state)
{
    (void)state;
    const char *path = write_file(full_conf);
    bool done = false;
    long n;
    for (n = 0; n < 100000 && !done; n++) {
        struct conf_config *cfg = NULL;
        char err[512] = "";
        wye_alloc_fail_after(n);
        enum wye_err rc = conf_load(path, NULL, &cfg, err, sizeof(err));
        long failures = wye_alloc_failures();
        wye_alloc_fail_after(-1);
        if (rc == WYE_OK) {
            assert_int_equal(cfg->n_api_keys, 3);
            assert_int_equal(cfg->prices.n_models, 2);
            conf_destroy(cfg);
            done = failures == 0;
        } else {
            if (rc != WYE_ERR_NOMEM) {
                fail_msg("fail after %ld: rc %d \"%s\"", n, rc, err);
            }
            assert_null(cfg);
        }
    }
    assert_true(done);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_every_key, teardown),
        cmocka_unit_test_teardown(test_defaults, teardown),
        cmocka_unit_test_teardown(test_errors, teardown),
        cmocka_unit_test_teardown(test_allocation_failure, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
