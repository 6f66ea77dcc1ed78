/* router/keys.c: authentication (missing, wrong, right key; every configured hash is compared
 * whatever matches), the token-bucket rate limit on an injected clock, remote budgets with
 * UTC day/month rollover, over_budget local vs refuse, a $0 local request never refused by a
 * remote budget, spend restored from a real ledger, and `wye keys new` whose printed entry
 * loads as config and whose key authenticates. */
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
#include "common/clock.h"
#include "common/crypto.h"
#include "conf/conf.h"
#include "router/keys.h"
#include "router/ledger.h"

#define NS_MIN (60 * WYE_NS_PER_S)
/* 2026-11-30 12:00:00 UTC: a day before a month boundary. */
#define T0_MS INT64_C(1796040000000)
#define DAY_MS INT64_C(86400000)

static char n_alice[] = "alice", n_bob[] = "bob", n_carol[] = "carol";

/* alice: rpm 3, $1/day, $2/month, over budget -> local; bob: unlimited, remote only;
 * carol: $0 remote budget, refuse. */
static void make_cfg(struct conf_config *cfg, struct conf_api_key *k)
{
    memset(cfg, 0, sizeof(*cfg));
    unsigned both = CONF_ROUTE_LOCAL | CONF_ROUTE_REMOTE;
    k[0] = (struct conf_api_key){n_alice, {0}, 3, 1.0, 2.0, both, CONF_OVER_BUDGET_LOCAL};
    k[1] = (struct conf_api_key){n_bob, {0}, 0, -1, -1, CONF_ROUTE_REMOTE, CONF_OVER_BUDGET_REFUSE};
    k[2] = (struct conf_api_key){n_carol, {0}, 0, 0, -1, both, CONF_OVER_BUDGET_REFUSE};
    wye_sha256("key-alice", 9, k[0].sha256);
    wye_sha256("key-bob", 7, k[1].sha256);
    wye_sha256("key-carol", 9, k[2].sha256);
    cfg->api_keys = k;
    cfg->n_api_keys = 3;
    cfg->auth.required = true;
}

static struct rt_keys *make_keys(void)
{
    struct conf_config cfg;
    struct conf_api_key k[3];
    make_cfg(&cfg, k);
    struct rt_keys *t = rt_keys_create(&cfg);
    assert_non_null(t);
    return t;
}

static void test_authenticate(void **state)
{
    (void)state;
    struct rt_keys *t = make_keys();
    struct rt_key *k = NULL;
    assert_int_equal(rt_keys_count(t), 3);
    assert_true(rt_keys_required(t));
    assert_int_equal(rt_keys_authenticate(t, "key-bob", 7, &k), WYE_OK);
    assert_string_equal(rt_key_name(k), "bob");
    assert_int_equal(rt_keys_authenticate(t, "key-carol", 9, &k), WYE_OK);
    assert_string_equal(rt_key_name(k), "carol");
    assert_int_equal(rt_keys_authenticate(t, "key-alice", 9, &k), WYE_OK);
    assert_string_equal(rt_key_name(k), "alice");
    assert_int_equal(rt_keys_authenticate(t, "key-alicf", 9, &k), WYE_ERR_AUTH);
    assert_null(k);
    assert_int_equal(rt_keys_authenticate(t, "key-alice", 8, &k), WYE_ERR_AUTH);
    assert_int_equal(rt_keys_authenticate(t, "", 0, &k), WYE_ERR_AUTH);
    char big[RT_KEY_LEN_MAX + 1];
    memset(big, 'x', sizeof(big));
    assert_int_equal(rt_keys_authenticate(t, big, sizeof(big), &k), WYE_ERR_AUTH);
    /* Every call that hashes compares against all 3 hashes, whichever matched (the first
     * entry included): 3 + 3 + 3 + 3 + 3 = 15; the empty and oversized keys hash nothing. */
    assert_int_equal(rt_keys_compares(t), 15);
    assert_string_equal(rt_key_name(rt_keys_anonymous(t)), RT_KEY_ANONYMOUS);
    assert_ptr_equal(rt_keys_find(t, "bob"), rt_keys_find(t, "bob"));
    assert_null(rt_keys_find(t, "dave"));
    rt_keys_destroy(t);
    rt_keys_destroy(NULL);
}

static void test_rate_limit(void **state)
{
    (void)state;
    struct rt_keys *t = make_keys();
    struct rt_key *alice = rt_keys_find(t, "alice"), *bob = rt_keys_find(t, "bob");
    int64_t now = 1000 * WYE_NS_PER_S, retry = 0;
    for (int i = 0; i < 3; i++) {
        assert_int_equal(rt_keys_rate_take(alice, now, &retry), WYE_OK);
    }
    assert_int_equal(rt_keys_rate_take(alice, now, &retry), WYE_ERR_LIMIT);
    /* 3 per minute: one token every 20 s. */
    assert_true(retry > 19000 && retry <= 20001);
    assert_int_equal(rt_keys_rate_take(alice, now + 10 * WYE_NS_PER_S, &retry), WYE_ERR_LIMIT);
    assert_true(retry > 9000 && retry <= 10001);
    assert_int_equal(rt_keys_rate_take(alice, now + 20 * WYE_NS_PER_S, &retry), WYE_OK);
    assert_int_equal(rt_keys_rate_take(alice, now + 20 * WYE_NS_PER_S, &retry), WYE_ERR_LIMIT);
    /* A long pause refills to the capacity, not beyond. */
    now += 10 * NS_MIN;
    for (int i = 0; i < 3; i++) {
        assert_int_equal(rt_keys_rate_take(alice, now, &retry), WYE_OK);
    }
    assert_int_equal(rt_keys_rate_take(alice, now, &retry), WYE_ERR_LIMIT);
    /* rpm 0: unlimited. */
    for (int i = 0; i < 1000; i++) {
        assert_int_equal(rt_keys_rate_take(bob, now, &retry), WYE_OK);
    }
    rt_keys_destroy(t);
}

static void test_budgets(void **state)
{
    (void)state;
    struct rt_keys *t = make_keys();
    struct rt_key *alice = rt_keys_find(t, "alice"), *bob = rt_keys_find(t, "bob"),
                  *carol = rt_keys_find(t, "carol");
    double day, month;
    assert_int_equal(rt_keys_remote_allowed(alice, T0_MS), RT_KEY_OK);
    rt_keys_charge(alice, 0.6, T0_MS);
    rt_keys_charge(alice, 0.3, T0_MS + 1000);
    rt_keys_spend(alice, T0_MS, &day, &month);
    assert_true(day > 0.89 && day < 0.91 && month > 0.89 && month < 0.91);
    assert_int_equal(rt_keys_remote_allowed(alice, T0_MS), RT_KEY_OK);
    rt_keys_charge(alice, 0.2, T0_MS + 2000);
    /* $1.10 today >= $1/day: over budget -> answer locally. */
    assert_int_equal(rt_keys_remote_allowed(alice, T0_MS), RT_KEY_USE_LOCAL);
    assert_int_equal(rt_keys_admit(alice, "remote", T0_MS), RT_KEY_USE_LOCAL);
    assert_int_equal(rt_keys_admit(alice, "local", T0_MS), RT_KEY_OK);
    /* Next UTC day (2026-12-01): the day rolls over, and so does the month. */
    assert_int_equal(rt_keys_remote_allowed(alice, T0_MS + DAY_MS), RT_KEY_OK);
    rt_keys_spend(alice, T0_MS + DAY_MS, &day, &month);
    assert_true(day == 0 && month == 0);
    /* Within one month: days roll over, the month accumulates up to its $2. */
    int64_t d1 = T0_MS + DAY_MS, d2 = d1 + DAY_MS, d3 = d2 + DAY_MS;
    rt_keys_charge(alice, 0.9, d1);
    rt_keys_charge(alice, 0.9, d2);
    assert_int_equal(rt_keys_remote_allowed(alice, d2), RT_KEY_OK);
    rt_keys_charge(alice, 0.5, d3);
    rt_keys_spend(alice, d3, &day, &month);
    assert_true(day > 0.49 && day < 0.51 && month > 2.29 && month < 2.31);
    assert_int_equal(rt_keys_remote_allowed(alice, d3), RT_KEY_USE_LOCAL);
    /* Bad charges are ignored. */
    rt_keys_charge(alice, -5, d3);
    rt_keys_charge(alice, 0.0 / 0.0, d3);
    rt_keys_spend(alice, d3, &day, &month);
    assert_true(month > 2.29 && month < 2.31);
    /* carol: $0 remote budget, refuse: remote refused, local ($0) never refused. */
    assert_int_equal(rt_keys_remote_allowed(carol, T0_MS), RT_KEY_REFUSE_BUDGET);
    assert_int_equal(rt_keys_admit(carol, "remote", T0_MS), RT_KEY_REFUSE_BUDGET);
    rt_keys_charge(carol, 0, T0_MS);
    assert_int_equal(rt_keys_admit(carol, "local", T0_MS), RT_KEY_OK);
    /* bob: remote only, no budget. */
    rt_keys_charge(bob, 1000, T0_MS);
    assert_int_equal(rt_keys_admit(bob, "remote", T0_MS), RT_KEY_OK);
    assert_int_equal(rt_keys_admit(bob, "local", T0_MS), RT_KEY_REFUSE_ROUTE);
    assert_false(rt_keys_route_allowed(bob, "local"));
    assert_true(rt_keys_route_allowed(bob, "remote"));
    assert_false(rt_keys_route_allowed(bob, "elsewhere"));
    assert_int_equal(rt_keys_admit(bob, "elsewhere", T0_MS), RT_KEY_REFUSE_ROUTE);
    rt_keys_destroy(t);
}

static void append(struct rt_ledger *l, const char *key, const char *route, double cost, int64_t ts)
{
    struct rt_ledger_rec r;
    memset(&r, 0, sizeof(r));
    r.ts_ms = ts;
    r.request_id = "req_000000000000000000000001";
    r.key_name = key;
    r.route = route;
    r.model = "m";
    r.status = "ok";
    r.score = -1;
    r.ttft_ms = -1;
    r.cost_usd = cost;
    assert_int_equal(rt_ledger_append(l, &r, NULL, NULL), WYE_OK);
}

static void test_restore_spend(void **state)
{
    (void)state;
    char path[64];
    snprintf(path, sizeof(path), "/tmp/wye-test-keys-%d.jsonl", (int)getpid());
    unlink(path);
    uint8_t hk[32];
    memset(hk, 7, sizeof(hk));
    struct rt_ledger_opts o = {.path = path, .key = hk, .key_len = sizeof(hk)};
    struct rt_ledger *l = NULL;
    char eb[256];
    assert_int_equal(rt_ledger_open(&o, &l, eb, sizeof(eb)), WYE_OK);
    append(l, "alice", "remote", 0.25, T0_MS - 3 * DAY_MS); /* this month, not today */
    append(l, "alice", "remote", 0.5, T0_MS - 1000);
    append(l, "alice", "local", 7.0, T0_MS - 1000);         /* local: not remote spend */
    append(l, "carol", "remote", 0.1, T0_MS - 40 * DAY_MS); /* an older month */
    append(l, "nobody", "remote", 9.0, T0_MS - 1000);       /* not configured */
    rt_ledger_close(l);

    struct rt_keys *t = make_keys();
    const char *files[] = {path};
    assert_int_equal(rt_keys_restore_spend(t, files, 1, T0_MS), WYE_OK);
    double day, month;
    rt_keys_spend(rt_keys_find(t, "alice"), T0_MS, &day, &month);
    assert_true(day > 0.49 && day < 0.51);
    assert_true(month > 0.74 && month < 0.76);
    rt_keys_spend(rt_keys_find(t, "carol"), T0_MS, &day, &month);
    assert_true(day == 0 && month == 0);
    /* The restored spend counts toward the budget: 0.5 + 0.5 reaches alice's $1/day. */
    assert_int_equal(rt_keys_remote_allowed(rt_keys_find(t, "alice"), T0_MS), RT_KEY_OK);
    rt_keys_charge(rt_keys_find(t, "alice"), 0.5, T0_MS);
    assert_int_equal(rt_keys_remote_allowed(rt_keys_find(t, "alice"), T0_MS), RT_KEY_USE_LOCAL);
    rt_keys_destroy(t);
    unlink(path);
}

static void test_cli_new(void **state)
{
    (void)state;
    char cmd[512], out[2048] = "";
    snprintf(
        cmd, sizeof(cmd),
        "%s/wye keys new dave --rpm 7 --budget-day 1.5 --budget-month 30 --routes local,remote",
        WYE_BINARY_DIR);
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    size_t n = fread(out, 1, sizeof(out) - 1, p);
    out[n] = '\0';
    assert_int_equal(pclose(p), 0);
    char *nl = strchr(out, '\n');
    assert_non_null(nl);
    *nl = '\0';
    const char *key = out;
    assert_int_equal(strlen(key), 4 + 43);
    assert_memory_equal(key, "wye_", 4);
    char *entry = strchr(nl + 1, '\n'); /* after the comment line */
    assert_non_null(entry);
    entry++;
    assert_null(strstr(entry, key)); /* the entry holds the hash, never the key */

    char path[64], text[1024];
    snprintf(path, sizeof(path), "/tmp/wye-test-keys-%d.lua", (int)getpid());
    snprintf(text, sizeof(text), "return { keys = {\n%s} }\n", entry);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
    struct conf_config *cfg = NULL;
    char eb[512];
    enum wye_err rc = conf_load(path, NULL, &cfg, eb, sizeof(eb));
    if (rc) {
        fail_msg("%s", eb);
    }
    unlink(path);
    assert_int_equal(cfg->n_api_keys, 1);
    assert_int_equal(cfg->api_keys[0].rpm, 7);
    assert_true(cfg->api_keys[0].budget_usd_day == 1.5);
    assert_true(cfg->api_keys[0].budget_usd_month == 30);
    assert_true(cfg->auth.required);
    struct rt_keys *t = rt_keys_create(cfg);
    conf_destroy(cfg);
    struct rt_key *k = NULL;
    assert_int_equal(rt_keys_authenticate(t, key, strlen(key), &k), WYE_OK);
    assert_string_equal(rt_key_name(k), "dave");
    rt_keys_destroy(t);

    /* Bad arguments: exit status 2, nothing on stdout. */
    const char *bad[] = {"keys new",
                         "keys new 'bad name'",
                         "keys new x --rpm -1",
                         "keys new x --routes local,moon",
                         "keys new x --budget-day lots",
                         "keys new x --routes remote --over-budget local",
                         "keys frobnicate"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        snprintf(cmd, sizeof(cmd), "%s/wye %s 2>/dev/null", WYE_BINARY_DIR, bad[i]);
        p = popen(cmd, "r");
        assert_non_null(p);
        n = fread(out, 1, sizeof(out) - 1, p);
        int st = pclose(p);
        assert_int_equal(n, 0);
        assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 2);
    }
    snprintf(cmd, sizeof(cmd), "%s/wye keys new --help", WYE_BINARY_DIR);
    p = popen(cmd, "r");
    n = fread(out, 1, sizeof(out) - 1, p);
    out[n] = '\0';
    assert_int_equal(pclose(p), 0);
    assert_non_null(strstr(out, "usage: wye keys new NAME"));
}

static void test_create_out_of_memory(void **state)
{
    (void)state;
    struct conf_config cfg;
    struct conf_api_key k[3];
    make_cfg(&cfg, k);
    bool done = false;
    for (long n = 0; n < 100 && !done; n++) {
        wye_alloc_fail_after(n);
        struct rt_keys *t = rt_keys_create(&cfg);
        wye_alloc_fail_after(-1);
        if (t) {
            struct rt_key *key = NULL;
            assert_int_equal(rt_keys_authenticate(t, "key-bob", 7, &key), WYE_OK);
            rt_keys_destroy(t);
            done = true;
        }
    }
    assert_true(done);
}

int main(void)
{
    wye_crypto_init();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_authenticate), cmocka_unit_test(test_rate_limit),
        cmocka_unit_test(test_budgets),      cmocka_unit_test(test_restore_spend),
        cmocka_unit_test(test_cli_new),      cmocka_unit_test(test_create_out_of_memory),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
