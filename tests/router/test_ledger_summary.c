/* Reading the ledger back: summary numbers on a known set of records (groups by route and day,
 * totals, nearest-rank p50/p95 of latency and time to first token), --since filtering,
 * malformed lines skipped and named with their line numbers, per-key remote spend for the day
 * and month, --since/--by parsing, and allocation failure in the summary. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/alloc.h"
#include "common/crypto.h"
#include "router/ledger.h"
#include "tests/router/test_ledger_util.h"

#define HOUR INT64_C(3600000)

static char dir[512];
static char path[600];

static int setup(void **state)
{
    (void)state;
    tl_tmpdir(dir, sizeof(dir), "sum");
    snprintf(path, sizeof(path), "%s/ledger.jsonl", dir);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    tl_rmdir(dir);
    return 0;
}

/* Ten records: 0-3 local (saving 0.02 each, no ttft), 4-9 remote (cost 0.01 each, ttft i+1);
 * latency 10*(i+1); record 5 failed, 6 was cancelled; two hours apart from 10:00, so 0-6 fall
 * on 2026-11-21 and 7-9 on 2026-11-22. */
static void write_known(void)
{
    struct rt_ledger *l = tl_open(path, NULL);
    assert_non_null(l);
    for (int i = 0; i < 10; i++) {
        struct rt_ledger_rec r = tl_rec(i);
        bool local = i < 4;
        r.ts_ms = TL_TS0 + i * 2 * HOUR;
        r.route = local ? "local" : "remote";
        r.model = local ? "qwen-small" : "gpt-big";
        r.key_name = i % 2 ? "a" : "b";
        r.status = i == 5 ? "error" : i == 6 ? "cancelled" : "ok";
        r.prompt_tokens = 100;
        r.completion_tokens = 10;
        r.latency_ms = 10.0 * (i + 1);
        r.ttft_ms = local ? -1 : i + 1;
        r.cost_usd = local ? 0 : 0.01;
        r.saving_usd = local ? 0.02 : 0;
        assert_int_equal(rt_ledger_append(l, &r, NULL, NULL), WYE_OK);
    }
    rt_ledger_close(l);
}

static cJSON *summary(int64_t since, enum rt_ledger_by by, char **problems)
{
    const char *files[] = {path};
    struct wye_buf out, prob;
    wye_buf_init(&out, 1 << 20);
    wye_buf_init(&prob, 1 << 20);
    assert_int_equal(rt_ledger_summary(files, 1, since, by, &out, &prob), WYE_OK);
    cJSON *j = cJSON_Parse(out.data);
    assert_non_null(j);
    if (problems) {
        *problems = strdup(prob.data ? prob.data : "");
    }
    wye_buf_cleanup(&out);
    wye_buf_cleanup(&prob);
    return j;
}

static double num(const cJSON *o, const char *k, const char *sub)
{
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(o, k);
    if (sub) {
        it = cJSON_GetObjectItemCaseSensitive(it, sub);
    }
    assert_true(cJSON_IsNumber(it) || cJSON_IsNull(it));
    return cJSON_IsNumber(it) ? it->valuedouble : NAN;
}

static const cJSON *group(const cJSON *j, const char *name)
{
    const cJSON *g;
    cJSON_ArrayForEach(g, cJSON_GetObjectItemCaseSensitive(j, "groups"))
    {
        if (strcmp(cJSON_GetObjectItemCaseSensitive(g, "group")->valuestring, name) == 0) {
            return g;
        }
    }
    fail_msg("no group %s", name);
    return NULL;
}

static void test_groups_totals_percentiles(void **state)
{
    (void)state;
    write_known();
    cJSON *j = summary(INT64_MIN, RT_LEDGER_BY_ROUTE, NULL);
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(j, "total");
    assert_int_equal(num(t, "requests", NULL), 10);
    assert_int_equal(num(t, "errors", NULL), 1);
    assert_int_equal(num(t, "cancelled", NULL), 1);
    assert_int_equal(num(t, "prompt_tokens", NULL), 1000);
    assert_int_equal(num(t, "completion_tokens", NULL), 100);
    assert_true(fabs(num(t, "cost_usd", NULL) - 0.06) < 1e-9);
    assert_true(fabs(num(t, "saving_usd", NULL) - 0.08) < 1e-9);
    assert_true(num(t, "latency_ms", "p50") == 50);
    assert_true(num(t, "latency_ms", "p95") == 100);
    assert_true(num(t, "ttft_ms", "p50") == 7);
    assert_true(num(t, "ttft_ms", "p95") == 10);
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(j, "groups")), 2);
    const cJSON *loc = group(j, "local"), *rem = group(j, "remote");
    assert_int_equal(num(loc, "requests", NULL), 4);
    assert_int_equal(num(loc, "errors", NULL), 0);
    assert_true(num(loc, "latency_ms", "p50") == 20);
    assert_true(num(loc, "latency_ms", "p95") == 40);
    assert_true(isnan(num(loc, "ttft_ms", "p50"))); /* null: no first token measured */
    assert_true(fabs(num(loc, "saving_usd", NULL) - 0.08) < 1e-9);
    assert_int_equal(num(rem, "requests", NULL), 6);
    assert_int_equal(num(rem, "errors", NULL), 1);
    assert_true(num(rem, "latency_ms", "p50") == 70);
    assert_true(num(rem, "latency_ms", "p95") == 100);
    assert_true(fabs(num(rem, "cost_usd", NULL) - 0.06) < 1e-9);
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(j, "by")->valuestring, "route");
    assert_true(cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(j, "since")));
    cJSON_Delete(j);

    j = summary(INT64_MIN, RT_LEDGER_BY_DAY, NULL);
    assert_int_equal(num(group(j, "2026-11-21"), "requests", NULL), 7);
    assert_int_equal(num(group(j, "2026-11-22"), "requests", NULL), 3);
    cJSON_Delete(j);
    j = summary(INT64_MIN, RT_LEDGER_BY_KEY, NULL);
    assert_int_equal(num(group(j, "a"), "requests", NULL), 5);
    cJSON_Delete(j);
    j = summary(INT64_MIN, RT_LEDGER_BY_AGENT, NULL);
    assert_int_equal(num(group(j, "(none)"), "requests", NULL), 10);
    cJSON_Delete(j);
}

static void test_since(void **state)
{
    (void)state;
    write_known();
    cJSON *j = summary(TL_TS0 + 14 * HOUR, RT_LEDGER_BY_MODEL, NULL);
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(j, "total");
    assert_int_equal(num(t, "requests", NULL), 3);
    assert_int_equal(num(group(j, "gpt-big"), "requests", NULL), 3);
    assert_true(num(t, "latency_ms", "p50") == 90);
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(j, "since")->valuestring,
                        "2026-11-22T00:00:00.000Z");
    cJSON_Delete(j);

    int64_t now = TL_TS0, s;
    assert_true(rt_ledger_since_parse("24h", now, &s));
    assert_true(s == now - 24 * HOUR);
    assert_true(rt_ledger_since_parse("7d", now, &s));
    assert_true(s == now - 7 * 24 * HOUR);
    assert_true(rt_ledger_since_parse("30m", now, &s));
    assert_true(s == now - 30 * 60000);
    assert_true(rt_ledger_since_parse("2026-11-01", now, &s));
    assert_true(s == INT64_C(1793491200000));
    assert_true(rt_ledger_since_parse("2026-11-21T10:00:00Z", now, &s));
    assert_true(s == TL_TS0);
    const char *bad[] = {"", "7x", "h", "2026-13-01", "yesterday", "2026-11-01T25:00:00Z"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_false(rt_ledger_since_parse(bad[i], now, &s));
    }
    enum rt_ledger_by by;
    assert_true(rt_ledger_by_parse("agent", &by));
    assert_int_equal(by, RT_LEDGER_BY_AGENT);
    assert_false(rt_ledger_by_parse("color", &by));
}

static void test_malformed_lines(void **state)
{
    (void)state;
    write_known();
    char *text = tl_read(path, NULL);
    char **lines;
    size_t n = tl_lines(text, &lines);
    FILE *f = fopen(path, "wb");
    for (size_t i = 0; i < n; i++) {
        if (i == 2) {
            fputs("garbage {\n", f);
        }
        if (i == 4) {
            fputs("{\"no\":\"ts\"}\n", f);
        }
        fprintf(f, "%s\n", lines[i]);
    }
    fputs("{\"seq\":11,\"ts\":\"2026", f); /* torn */
    fclose(f);
    tl_lines_free(lines, n);
    free(text);
    char *prob;
    cJSON *j = summary(INT64_MIN, RT_LEDGER_BY_NONE, &prob);
    char want[800];
    snprintf(want, sizeof(want), "%s:3: skipped: invalid JSON\n", path);
    assert_non_null(strstr(prob, want));
    snprintf(want, sizeof(want), "%s:6: skipped: no valid \"ts\"\n", path);
    assert_non_null(strstr(prob, want));
    snprintf(want, sizeof(want), "%s:13: skipped: torn last line", path);
    assert_non_null(strstr(prob, want));
    assert_int_equal(num(j, "skipped_lines", NULL), 3);
    assert_int_equal(num(j, "records", NULL), 10);
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(j, "groups")), 0);
    cJSON_Delete(j);
    free(prob);

    /* A missing file is an error naming it. */
    const char *missing[] = {"/nonexistent/l.jsonl"};
    struct wye_buf out, p;
    wye_buf_init(&out, 1 << 16);
    wye_buf_init(&p, 1 << 16);
    assert_int_equal(rt_ledger_summary(missing, 1, INT64_MIN, RT_LEDGER_BY_NONE, &out, &p),
                     WYE_ERR_NOTFOUND);
    assert_non_null(strstr(p.data, "/nonexistent/l.jsonl: cannot open"));
    wye_buf_cleanup(&out);
    wye_buf_cleanup(&p);
}

struct spend {
    int n;
    double a_day, a_month, b_day, b_month;
};

static void on_spend(void *arg, const char *key, double day, double month)
{
    struct spend *s = arg;
    s->n++;
    if (strcmp(key, "a") == 0) {
        s->a_day = day;
        s->a_month = month;
    } else if (strcmp(key, "b") == 0) {
        s->b_day = day;
        s->b_month = month;
    }
}

static void test_spend_by_key(void **state)
{
    (void)state;
    struct {
        const char *key, *route;
        int64_t ts;
        double cost;
    } recs[] = {
        {"a", "remote", TL_TS0 - HOUR, 1.0},                     /* today */
        {"a", "remote", INT64_C(1793491200000) + 2 * HOUR, 2.0}, /* 2026-11-01 */
        {"a", "remote", INT64_C(1793491200000) - HOUR, 4.0},     /* October */
        {"a", "local", TL_TS0, 8.0},                             /* local: not spend */
        {"b", "remote", TL_TS0 - 2 * HOUR, 0.5},
        {"b", "remote", TL_TS0 - 11 * HOUR, 0.25}, /* yesterday */
    };
    struct rt_ledger *l = tl_open(path, NULL);
    assert_non_null(l);
    for (size_t i = 0; i < sizeof(recs) / sizeof(recs[0]); i++) {
        struct rt_ledger_rec r = tl_rec((int)i);
        r.key_name = recs[i].key;
        r.route = recs[i].route;
        r.ts_ms = recs[i].ts;
        r.cost_usd = recs[i].cost;
        assert_int_equal(rt_ledger_append(l, &r, NULL, NULL), WYE_OK);
    }
    rt_ledger_close(l);
    struct spend s = {0};
    const char *files[] = {"/nonexistent/rotated.jsonl", path};
    assert_int_equal(rt_ledger_spend_by_key(files, 2, TL_TS0 + HOUR, on_spend, &s), WYE_OK);
    assert_int_equal(s.n, 2);
    assert_true(fabs(s.a_day - 1.0) < 1e-9);
    assert_true(fabs(s.a_month - 3.0) < 1e-9);
    assert_true(fabs(s.b_day - 0.5) < 1e-9);
    assert_true(fabs(s.b_month - 0.75) < 1e-9);
}

static void test_alloc_failures(void **state)
{
    (void)state;
    write_known();
    const char *files[] = {path};
    int ok_at = -1;
    for (long n = 0; n < 5000 && ok_at < 0; n++) {
        struct wye_buf out;
        wye_buf_init(&out, 1 << 20);
        wye_alloc_fail_after(n);
        enum wye_err err = rt_ledger_summary(files, 1, INT64_MIN, RT_LEDGER_BY_ROUTE, &out, NULL);
        wye_alloc_fail_after(-1);
        if (err == WYE_OK) {
            ok_at = (int)n;
            /* cJSON reports a failed allocation as bad JSON: such a line is counted as
             * skipped, never silently lost. */
            cJSON *j = cJSON_Parse(out.data);
            assert_non_null(j);
            assert_int_equal(num(j, "records", NULL) + num(j, "skipped_lines", NULL), 10);
            cJSON_Delete(j);
        } else {
            assert_int_equal(err, WYE_ERR_NOMEM);
        }
        wye_buf_cleanup(&out);
    }
    assert_true(ok_at > 0);
}

int main(void)
{
    wye_alloc_install_cjson_hooks();
    assert_int_equal(wye_crypto_init(), WYE_OK);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_groups_totals_percentiles, setup, teardown),
        cmocka_unit_test_setup_teardown(test_since, setup, teardown),
        cmocka_unit_test_setup_teardown(test_malformed_lines, setup, teardown),
        cmocka_unit_test_setup_teardown(test_spend_by_key, setup, teardown),
        cmocka_unit_test_setup_teardown(test_alloc_failures, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
