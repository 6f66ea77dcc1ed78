/* Reading the ledger back: the summary (per group: requests, errors, tokens, cost, saving,
 * p50/p95 latency and time to first token) as one JSON object, shared by `wye ledger summary`
 * and the HTTP endpoint; and per-key remote spend for today and this month, which budgets
 * rebuild after a restart. Runs on the calling thread; no state between calls. MACs are not
 * checked here (rt_ledger_verify does that). */
#include <cjson/cJSON.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/alloc.h"
#include "common/clock.h"
#include "common/log.h"
#include "router/ledger_internal.h"

#define SUM_PROBLEMS_MAX 50
#define SUM_NAME_MAX 128

struct dvec {
    double *v;
    size_t n, cap;
};

struct sum_group {
    char *name;
    uint64_t requests, errors, cancelled;
    int64_t prompt_tokens, completion_tokens;
    double cost_usd, saving_usd;
    double day_usd, month_usd; /* spend_by_key only */
    struct dvec latency, ttft;
};

/* Groups by name: an array in insertion order plus an open-addressing index. */
struct sum_table {
    struct sum_group *g;
    size_t n, cap;
    size_t *slot; /* index + 1; 0 is empty */
    size_t n_slot;
};

static enum wye_err dvec_push(struct dvec *d, double x)
{
    if (d->n == d->cap) {
        size_t nc = d->cap ? d->cap * 2 : 64, bytes;
        double *nv = wye_mul_size(nc, sizeof(double), &bytes) ? NULL : wye_realloc(d->v, bytes);
        if (!nv) {
            return WYE_ERR_NOMEM;
        }
        d->v = nv;
        d->cap = nc;
    }
    d->v[d->n++] = x;
    return WYE_OK;
}

static uint64_t hash_str(const char *s)
{
    uint64_t h = 1469598103934665603ULL;
    for (; *s; s++) {
        h = (h ^ (unsigned char)*s) * 1099511628211ULL;
    }
    return h;
}

static void table_cleanup(struct sum_table *t)
{
    for (size_t i = 0; i < t->n; i++) {
        wye_free(t->g[i].name);
        wye_free(t->g[i].latency.v);
        wye_free(t->g[i].ttft.v);
    }
    wye_free(t->g);
    wye_free(t->slot);
    memset(t, 0, sizeof(*t));
}

static enum wye_err table_rehash(struct sum_table *t)
{
    size_t ns = t->n_slot ? t->n_slot * 2 : 64, bytes;
    size_t *slot = wye_mul_size(ns, sizeof(size_t), &bytes) ? NULL : wye_calloc(ns, sizeof(size_t));
    if (!slot) {
        return WYE_ERR_NOMEM;
    }
    for (size_t i = 0; i < t->n; i++) {
        size_t k = (size_t)hash_str(t->g[i].name) & (ns - 1);
        while (slot[k]) {
            k = (k + 1) & (ns - 1);
        }
        slot[k] = i + 1;
    }
    wye_free(t->slot);
    t->slot = slot;
    t->n_slot = ns;
    return WYE_OK;
}

/* Finds or adds the group called name. */
static enum wye_err table_get(struct sum_table *t, const char *name, struct sum_group **out)
{
    if ((t->n + 1) * 2 > t->n_slot) {
        enum wye_err err = table_rehash(t);
        if (err) {
            return err;
        }
    }
    size_t k = (size_t)hash_str(name) & (t->n_slot - 1);
    while (t->slot[k]) {
        struct sum_group *g = &t->g[t->slot[k] - 1];
        if (strcmp(g->name, name) == 0) {
            *out = g;
            return WYE_OK;
        }
        k = (k + 1) & (t->n_slot - 1);
    }
    if (t->n == t->cap) {
        size_t nc = t->cap ? t->cap * 2 : 16, bytes;
        struct sum_group *ng =
            wye_mul_size(nc, sizeof(*ng), &bytes) ? NULL : wye_realloc(t->g, bytes);
        if (!ng) {
            return WYE_ERR_NOMEM;
        }
        t->g = ng;
        t->cap = nc;
    }
    struct sum_group *g = &t->g[t->n];
    memset(g, 0, sizeof(*g));
    g->name = wye_strdup(name);
    if (!g->name) {
        return WYE_ERR_NOMEM;
    }
    t->slot[k] = ++t->n;
    *out = g;
    return WYE_OK;
}

static const char *json_str(const cJSON *obj, const char *key)
{
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(obj, key);
    return cJSON_IsString(it) ? it->valuestring : NULL;
}

/* The number at key, or def when absent, null or not a number. */
static double json_num(const cJSON *obj, const char *key, double def)
{
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(obj, key);
    return cJSON_IsNumber(it) && isfinite(it->valuedouble) ? it->valuedouble : def;
}

/* ---- Reading records --------------------------------------------------------------------- */

typedef enum wye_err (*rec_fn)(void *arg, const cJSON *rec, int64_t ts_ms);

struct read_state {
    const char *file;
    struct wye_buf *problems; /* may be NULL */
    uint64_t skipped;
    rec_fn fn;
    void *arg;
};

static void skipped(struct read_state *st, uint64_t lineno, const char *why)
{
    st->skipped++;
    if (st->problems && st->skipped <= SUM_PROBLEMS_MAX) {
        wye_buf_printf(st->problems, "%s:%" PRIu64 ": skipped: %s\n", st->file, lineno, why);
    }
}

static enum wye_err read_line(void *arg, const char *line, size_t len, uint64_t lineno,
                              bool complete, bool too_long)
{
    struct read_state *st = arg;
    if (too_long) {
        skipped(st, lineno, "line too long");
        return WYE_OK;
    }
    if (!complete) {
        skipped(st, lineno, "torn last line (no newline)");
        return WYE_OK;
    }
    cJSON *j = cJSON_ParseWithLength(line, len);
    if (!j) {
        /* cJSON reports allocation failure as a parse error; the hook tells them apart. */
        skipped(st, lineno, "invalid JSON");
        return WYE_OK;
    }
    int64_t ts_ms;
    const char *ts = json_str(j, "ts");
    enum wye_err err = WYE_OK;
    if (!cJSON_IsObject(j)) {
        skipped(st, lineno, "not a JSON object");
    } else if (!ts || !ledger_parse_ts(ts, &ts_ms)) {
        skipped(st, lineno, "no valid \"ts\"");
    } else {
        err = st->fn(st->arg, j, ts_ms);
    }
    cJSON_Delete(j);
    return err;
}

static enum wye_err read_files(const char *const *files, size_t n_files, bool missing_ok,
                               struct wye_buf *problems, uint64_t *n_skipped, rec_fn fn, void *arg)
{
    struct read_state st = {.problems = problems, .fn = fn, .arg = arg};
    enum wye_err err = WYE_OK;
    for (size_t i = 0; i < n_files && !err; i++) {
        st.file = files[i];
        FILE *f = fopen(files[i], "rb");
        if (!f) {
            int e = errno;
            if (e == ENOENT && missing_ok) {
                continue;
            }
            if (problems) {
                char eb[128];
                wye_buf_printf(problems, "%s: cannot open: %s\n", files[i],
                               wye_strerror(e, eb, sizeof(eb)));
            }
            err = e == ENOENT ? WYE_ERR_NOTFOUND : WYE_ERR_IO;
            break;
        }
        err = ledger_lines_foreach(f, read_line, &st);
        fclose(f);
    }
    if (n_skipped) {
        *n_skipped = st.skipped;
    }
    return err;
}

/* ---- Summary ----------------------------------------------------------------------------- */

struct sum_state {
    int64_t since_ms;
    enum rt_ledger_by by;
    struct sum_table groups;
    struct sum_group total;
    uint64_t records;
};

static enum wye_err group_add(struct sum_group *g, const cJSON *rec)
{
    const char *status = json_str(rec, "status");
    g->requests++;
    if (status && strcmp(status, "error") == 0) {
        g->errors++;
    } else if (status && strcmp(status, "cancelled") == 0) {
        g->cancelled++;
    }
    g->prompt_tokens += (int64_t)json_num(rec, "prompt_tokens", 0);
    g->completion_tokens += (int64_t)json_num(rec, "completion_tokens", 0);
    g->cost_usd += json_num(rec, "cost_usd", 0);
    g->saving_usd += json_num(rec, "saving_usd", 0);
    double lat = json_num(rec, "latency_ms", -1), ttft = json_num(rec, "ttft_ms", -1);
    enum wye_err err = WYE_OK;
    if (lat >= 0) {
        err = dvec_push(&g->latency, lat);
    }
    if (!err && ttft >= 0) {
        err = dvec_push(&g->ttft, ttft);
    }
    return err;
}

static enum wye_err sum_rec(void *arg, const cJSON *rec, int64_t ts_ms)
{
    struct sum_state *st = arg;
    if (ts_ms < st->since_ms) {
        return WYE_OK;
    }
    st->records++;
    enum wye_err err = group_add(&st->total, rec);
    if (err || st->by == RT_LEDGER_BY_NONE) {
        return err;
    }
    char name[SUM_NAME_MAX];
    const char *v = NULL;
    switch (st->by) {
    case RT_LEDGER_BY_ROUTE:
        v = json_str(rec, "route");
        break;
    case RT_LEDGER_BY_MODEL:
        v = json_str(rec, "model");
        break;
    case RT_LEDGER_BY_KEY:
        v = json_str(rec, "key");
        break;
    case RT_LEDGER_BY_AGENT:
        v = json_str(rec, "agent");
        break;
    case RT_LEDGER_BY_DAY:
    case RT_LEDGER_BY_NONE:
        break;
    }
    if (st->by == RT_LEDGER_BY_DAY) {
        wye_format_rfc3339(ts_ms, name, sizeof(name));
        name[10] = '\0';
    } else {
        snprintf(name, sizeof(name), "%s", v ? v : "(none)");
    }
    struct sum_group *g;
    err = table_get(&st->groups, name, &g);
    return err ? err : group_add(g, rec);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static int cmp_group(const void *a, const void *b)
{
    return strcmp(((const struct sum_group *)a)->name, ((const struct sum_group *)b)->name);
}

/* Appends {"p50":..,"p95":..} by the nearest-rank method, or nulls with no values. */
static enum wye_err put_pct(struct wye_buf *out, const char *key, struct dvec *d)
{
    if (d->n == 0) {
        return wye_buf_printf(out, ",\"%s\":{\"p50\":null,\"p95\":null}", key);
    }
    qsort(d->v, d->n, sizeof(double), cmp_double);
    size_t i50 = (size_t)ceil(0.50 * (double)d->n) - 1, i95 = (size_t)ceil(0.95 * (double)d->n) - 1;
    return wye_buf_printf(out, ",\"%s\":{\"p50\":%.3f,\"p95\":%.3f}", key, d->v[i50], d->v[i95]);
}

static enum wye_err put_group(struct wye_buf *out, struct sum_group *g, bool named)
{
    enum wye_err err = wye_buf_append_str(out, "{");
    if (!err && named) {
        err = wye_buf_append_str(out, "\"group\":");
        if (!err) {
            err = wye_buf_append_json_str(out, g->name, strlen(g->name));
        }
        if (!err) {
            err = wye_buf_append_str(out, ",");
        }
    }
    if (!err) {
        err =
            wye_buf_printf(out,
                           "\"requests\":%" PRIu64 ",\"errors\":%" PRIu64 ",\"cancelled\":%" PRIu64
                           ",\"prompt_tokens\":%" PRId64 ",\"completion_tokens\":%" PRId64
                           ",\"cost_usd\":%.9g,\"saving_usd\":%.9g",
                           g->requests, g->errors, g->cancelled, g->prompt_tokens,
                           g->completion_tokens, g->cost_usd, g->saving_usd);
    }
    if (!err) {
        err = put_pct(out, "latency_ms", &g->latency);
    }
    if (!err) {
        err = put_pct(out, "ttft_ms", &g->ttft);
    }
    return err ? err : wye_buf_append_str(out, "}");
}

static const char *const by_names[] = {"none", "route", "model", "key", "day", "agent"};

bool rt_ledger_by_parse(const char *s, enum rt_ledger_by *out)
{
    for (size_t i = 1; i < sizeof(by_names) / sizeof(by_names[0]); i++) {
        if (strcmp(s, by_names[i]) == 0) {
            *out = (enum rt_ledger_by)i;
            return true;
        }
    }
    return false;
}

bool rt_ledger_since_parse(const char *s, int64_t now_ms, int64_t *since_ms)
{
    size_t n = strlen(s);
    if (n >= 2 && n <= 10 && strspn(s, "0123456789") == n - 1) {
        int64_t v = strtoll(s, NULL, 10), unit;
        switch (s[n - 1]) {
        case 'm':
            unit = 60000;
            break;
        case 'h':
            unit = 3600000;
            break;
        case 'd':
            unit = 86400000;
            break;
        default:
            return false;
        }
        *since_ms = now_ms - v * unit;
        return true;
    }
    if (n == 10) {
        char full[32];
        snprintf(full, sizeof(full), "%sT00:00:00Z", s);
        return ledger_parse_ts(full, since_ms);
    }
    return ledger_parse_ts(s, since_ms);
}

enum wye_err rt_ledger_summary(const char *const *files, size_t n_files, int64_t since_ms,
                               enum rt_ledger_by by, struct wye_buf *json_out,
                               struct wye_buf *problems)
{
    struct sum_state st = {.since_ms = since_ms, .by = by};
    uint64_t n_skipped = 0;
    enum wye_err err = read_files(files, n_files, false, problems, &n_skipped, sum_rec, &st);
    if (err) {
        goto out;
    }
    if (st.groups.n > 1) {
        /* Sorting moves the groups: the index is not used after this. */
        qsort(st.groups.g, st.groups.n, sizeof(struct sum_group), cmp_group);
    }
    err = wye_buf_append_str(json_out, "{\"since\":");
    if (!err && since_ms == INT64_MIN) {
        err = wye_buf_append_str(json_out, "null");
    } else if (!err) {
        char ts[32];
        wye_format_rfc3339(since_ms > 0 ? since_ms : 0, ts, sizeof(ts));
        err = wye_buf_printf(json_out, "\"%s\"", ts);
    }
    if (!err) {
        err = wye_buf_printf(json_out, ",\"by\":\"%s\",\"groups\":[", by_names[by]);
    }
    for (size_t i = 0; i < st.groups.n && !err; i++) {
        if (i > 0) {
            err = wye_buf_append_str(json_out, ",");
        }
        if (!err) {
            err = put_group(json_out, &st.groups.g[i], true);
        }
    }
    if (!err) {
        err = wye_buf_append_str(json_out, "],\"total\":");
    }
    if (!err) {
        err = put_group(json_out, &st.total, false);
    }
    if (!err) {
        err = wye_buf_printf(json_out, ",\"records\":%" PRIu64 ",\"skipped_lines\":%" PRIu64 "}",
                             st.records, n_skipped);
    }
out:
    table_cleanup(&st.groups);
    wye_free(st.total.latency.v);
    wye_free(st.total.ttft.v);
    return err;
}

/* ---- Spend by key ------------------------------------------------------------------------ */

struct spend_state {
    int64_t day_start, day_end, month_start, month_end;
    struct sum_table keys;
};

static enum wye_err spend_rec(void *arg, const cJSON *rec, int64_t ts_ms)
{
    struct spend_state *st = arg;
    const char *route = json_str(rec, "route");
    if (!route || strcmp(route, "remote") != 0 || ts_ms < st->month_start ||
        ts_ms >= st->month_end) {
        return WYE_OK;
    }
    const char *key = json_str(rec, "key");
    char name[SUM_NAME_MAX];
    snprintf(name, sizeof(name), "%s", key ? key : "");
    struct sum_group *g;
    enum wye_err err = table_get(&st->keys, name, &g);
    if (err) {
        return err;
    }
    double cost = json_num(rec, "cost_usd", 0);
    g->month_usd += cost;
    if (ts_ms >= st->day_start && ts_ms < st->day_end) {
        g->day_usd += cost;
    }
    return WYE_OK;
}

enum wye_err rt_ledger_spend_by_key(const char *const *files, size_t n_files, int64_t now_ms,
                                    rt_ledger_spend_fn fn, void *arg)
{
    struct spend_state st = {0};
    time_t now = (time_t)(now_ms / 1000);
    struct tm tm;
    gmtime_r(&now, &tm);
    struct tm d = {.tm_year = tm.tm_year, .tm_mon = tm.tm_mon, .tm_mday = tm.tm_mday};
    st.day_start = (int64_t)timegm(&d) * 1000;
    st.day_end = st.day_start + INT64_C(86400000);
    struct tm m = {.tm_year = tm.tm_year, .tm_mon = tm.tm_mon, .tm_mday = 1};
    st.month_start = (int64_t)timegm(&m) * 1000;
    struct tm m2 = {
        .tm_year = tm.tm_year + (tm.tm_mon == 11), .tm_mon = (tm.tm_mon + 1) % 12, .tm_mday = 1};
    st.month_end = (int64_t)timegm(&m2) * 1000;
    enum wye_err err = read_files(files, n_files, true, NULL, NULL, spend_rec, &st);
    for (size_t i = 0; i < st.keys.n && !err; i++) {
        fn(arg, st.keys.g[i].name, st.keys.g[i].day_usd, st.keys.g[i].month_usd);
    }
    table_cleanup(&st.keys);
    return err;
}
