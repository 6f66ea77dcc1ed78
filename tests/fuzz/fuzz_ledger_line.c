/* libFuzzer entry point for the ledger's line format (router/ledger_internal.h), which
 * `wye ledger verify`, `summary` and the writer's crash recovery read back from files anyone
 * with write access may have edited. The input is used four ways:
 *  - as one line: ledger_line_shaped and ledger_line_check with the test key and without;
 *    when it has a record's shape, again with its MAC replaced by the right one, so that the
 *    positional reader behind a verified MAC runs too;
 *  - NUL-terminated, as a time for ledger_parse_ts (a UTC time read must format and read back
 *    to itself) and as reasons for ledger_reasons_compact (its output is a fixed point);
 *  - cut at newlines into a record's strings, formatted and chained as the writer does: the
 *    line must verify, read back the seq, time and prev written, and hold each string (cut at
 *    LEDGER_STR_MAX) exactly.
 * Single-threaded. */
#include <cJSON.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "common/clock.h"
#include "common/crypto.h"
#include "router/ledger_internal.h"
#include "tests/fuzz/fuzz_gateway.h"
#include "tests/fuzz/fuzz_util.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define TS_MS_MAX INT64_C(253402300799999) /* 9999-12-31T23:59:59.999Z */
#define N_FIELDS 9

static struct wye_hmac *hmac;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    wye_alloc_install_cjson_hooks();
    hmac = wye_hmac_create(FZ_LEDGER_KEY, FZ_LEDGER_KEY_LEN);
    if (!hmac) {
        abort();
    }
    return 0;
}

static void sign(const char *line, size_t covered, char hex[LEDGER_HEX_LEN + 1])
{
    uint8_t mac[WYE_SHA256_LEN];
    wye_hmac_update(hmac, line, covered);
    wye_hmac_final(hmac, mac);
    wye_hex_encode(mac, WYE_SHA256_LEN, hex);
}

static void check_line(const char *line, size_t len)
{
    uint8_t mac[WYE_SHA256_LEN];
    bool shaped = ledger_line_shaped(line, len, mac);
    struct ledger_line a, b;
    char why[128];
    why[0] = '\0';
    enum wye_err ea = ledger_line_check(hmac, line, len, &a, why, sizeof(why));
    CHECK(ea == WYE_OK || (ea == WYE_ERR_PARSE && why[0]));
    CHECK(shaped || ea != WYE_OK);
    if (ea == WYE_OK) {
        CHECK(a.seq >= 1 && memcmp(a.mac, mac, sizeof(mac)) == 0);
    }
    enum wye_err eb = ledger_line_check(NULL, line, len, &b, why, sizeof(why));
    CHECK(eb == WYE_OK || eb == WYE_ERR_PARSE);
    CHECK(!b.mac_ok);
    /* without a verified MAC both read the JSON */
    if (!a.mac_ok) {
        CHECK(ea == eb);
        CHECK(ea != WYE_OK || (a.seq == b.seq && a.ts_ms == b.ts_ms &&
                               memcmp(a.prev, b.prev, sizeof(a.prev)) == 0));
    }
}

/* The record's fields in the order the writer writes them (ledger_format.c). */
static void roundtrip(char *s, size_t n, uint64_t hash)
{
    const char *f[N_FIELDS] = {NULL};
    size_t nf = 0;
    for (char *p = s; nf < N_FIELDS && p <= s + n;) {
        char *nl = memchr(p, '\n', (size_t)(s + n - p));
        if (nl) {
            *nl = '\0';
        }
        f[nf] = (hash >> nf) & 1 ? p : NULL; /* some fields are null */
        nf++;
        if (!nl) {
            break;
        }
        p = nl + 1;
    }
    char *reasons = NULL;
    if (f[6] && ledger_reasons_compact(f[6], &reasons) != WYE_OK) {
        f[6] = NULL;
    }
    uint64_t h2 = hash * 0x9E3779B97F4A7C15u;
    double score, ttft;
    memcpy(&score, &hash, sizeof(score));
    memcpy(&ttft, &h2, sizeof(ttft));
    struct rt_ledger_rec rec = {
        .ts_ms = (int64_t)(hash % (uint64_t)TS_MS_MAX) + 1,
        .request_id = f[0],
        .key_name = f[1],
        .route = f[2],
        .model = f[3],
        .status = f[4],
        .error = f[5],
        .reasons_json = reasons ? reasons : f[6],
        .run_id = f[7],
        .agent = f[8],
        .score = score,
        .prompt_tokens = (int64_t)h2,
        .completion_tokens = (int64_t)(hash >> 3),
        .usage_estimated = hash & 1,
        .ttft_ms = ttft,
        .latency_ms = (double)(hash % 100000) / 7,
        .cost_usd = -score,
        .counterfactual_cost_usd = ttft * 3,
        .saving_usd = 0.5,
    };
    int64_t seq = (int64_t)(h2 % 9000000000000000u) + 1;
    uint8_t prev[WYE_SHA256_LEN];
    for (size_t i = 0; i < sizeof(prev); i++) {
        prev[i] = (uint8_t)(hash >> (i % 8 * 8)) ^ (uint8_t)i;
    }
    struct wye_buf body, line;
    wye_buf_init(&body, LEDGER_BODY_MAX);
    wye_buf_init(&line, LEDGER_LINE_MAX);
    enum wye_err err = ledger_format_body(&rec, &body);
    CHECK(err == WYE_OK || err == WYE_ERR_TOOBIG);
    char hex[LEDGER_HEX_LEN + 1];
    wye_hex_encode(prev, WYE_SHA256_LEN, hex);
    if (!err) {
        err = wye_buf_printf(&line, "{\"seq\":%" PRId64 ",", seq);
    }
    if (!err) {
        err = wye_buf_append(&line, body.data, body.len);
    }
    if (!err) {
        err = wye_buf_printf(&line, ",\"prev\":\"%s\"", hex);
    }
    if (!err) {
        sign(line.data, line.len, hex);
        err = wye_buf_printf(&line, LEDGER_MAC_PREFIX "%s\"}", hex);
    }
    CHECK(err == WYE_OK || err == WYE_ERR_TOOBIG);
    if (!err) {
        struct ledger_line a, b;
        char why[128] = "";
        CHECK(ledger_line_check(hmac, line.data, line.len, &a, why, sizeof(why)) == WYE_OK);
        CHECK(a.mac_ok);
        CHECK(a.seq == seq && memcmp(a.prev, prev, sizeof(prev)) == 0);
        CHECK(a.ts_ms == rec.ts_ms);
        if (ledger_line_check(NULL, line.data, line.len, &b, why, sizeof(why)) != WYE_OK) {
            fprintf(stderr, "written line refused: %s\n%s\n", why, line.data);
            abort();
        }
        CHECK(b.seq == seq && b.ts_ms == rec.ts_ms && memcmp(b.prev, prev, sizeof(prev)) == 0);
        /* every string reads back as written (cut at LEDGER_STR_MAX) */
        static const char *const keys[N_FIELDS] = {
            "request_id", "key", "route", "model", "status", "error", "reasons", "run_id", "agent"};
        cJSON *j = cJSON_ParseWithLength(line.data, line.len);
        CHECK(cJSON_IsObject(j));
        for (size_t i = 0; i < N_FIELDS; i++) {
            const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, keys[i]);
            if (i == 6) {
                CHECK(cJSON_IsArray(v));
            } else if (!f[i]) {
                CHECK(cJSON_IsNull(v));
            } else {
                size_t k = ledger_str_len(f[i]);
                CHECK(cJSON_IsString(v) && strlen(v->valuestring) == k &&
                      memcmp(v->valuestring, f[i], k) == 0);
            }
        }
        cJSON_Delete(j);
    }
    cJSON_free(reasons);
    wye_buf_cleanup(&body);
    wye_buf_cleanup(&line);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *in = (const char *)data;
    check_line(in, size);

    /* the same line with the MAC our key gives it */
    uint8_t mac[WYE_SHA256_LEN];
    if (ledger_line_shaped(in, size, mac)) {
        char *line = wye_malloc(size);
        if (!line) {
            abort();
        }
        memcpy(line, in, size);
        char hex[LEDGER_HEX_LEN + 1];
        sign(line, size - LEDGER_MAC_SUFFIX_LEN, hex);
        memcpy(line + size - 2 - LEDGER_HEX_LEN, hex, LEDGER_HEX_LEN);
        check_line(line, size);
        wye_free(line);
    }

    char *s = wye_strndup(in, size);
    if (!s) {
        abort();
    }
    int64_t ms;
    if (ledger_parse_ts(s, &ms)) {
        CHECK(ms >= 0);
        if (ms <= TS_MS_MAX) {
            char ts[40];
            int64_t back;
            wye_format_rfc3339(ms, ts, sizeof(ts));
            CHECK(ledger_parse_ts(ts, &back) && back == ms);
        }
    }
    char *compact = NULL;
    enum wye_err err = ledger_reasons_compact(s, &compact);
    CHECK(err == WYE_OK || err == WYE_ERR_INVAL);
    if (compact) {
        char *again = NULL;
        CHECK(ledger_reasons_compact(compact, &again) == WYE_OK);
        CHECK(again == NULL ? strcmp(compact, "[]") == 0 : strcmp(again, compact) == 0);
        cJSON_free(again);
        cJSON_free(compact);
    }

    uint64_t hash = 1469598103934665603u;
    for (size_t i = 0; i < size; i++) {
        hash = (hash ^ data[i]) * 1099511628211u;
    }
    roundtrip(s, size, hash);
    wye_free(s);
    return 0;
}
