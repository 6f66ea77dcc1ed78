/* The ledger's record format: formats a record's body (on the writer thread), checks one
 * written line (MAC, seq, prev; used by open's recovery on the opening thread and by verify),
 * parses RFC 3339 times and reads files line by line with a cap. Stateless; any thread. */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "common/alloc.h"
#include "common/clock.h"
#include "router/ledger_internal.h"

size_t ledger_str_len(const char *s)
{
    size_t n = strlen(s);
    if (n > LEDGER_STR_MAX) {
        n = LEDGER_STR_MAX;
        while (n > 0 && ((unsigned char)s[n] & 0xC0) == 0x80) {
            n--;
        }
    }
    return n;
}

/* Appends s as a JSON string, cut at LEDGER_STR_MAX bytes without splitting a UTF-8 sequence;
 * NULL becomes null. */
static enum wye_err put_str(struct wye_buf *b, const char *key, const char *s)
{
    enum wye_err err = wye_buf_printf(b, ",\"%s\":", key);
    if (err) {
        return err;
    }
    if (!s) {
        return wye_buf_append_str(b, "null");
    }
    return wye_buf_append_json_str(b, s, ledger_str_len(s));
}

/* Appends a number with fmt, or null when it is not finite or (nullable and < 0). */
static enum wye_err put_num(struct wye_buf *b, const char *key, const char *fmt, double v,
                            bool null_if_negative)
{
    enum wye_err err = wye_buf_printf(b, ",\"%s\":", key);
    if (err) {
        return err;
    }
    if (!isfinite(v) || (null_if_negative && v < 0)) {
        return wye_buf_append_str(b, "null");
    }
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wformat-nonliteral"
    return wye_buf_printf(b, fmt, v);
#pragma GCC diagnostic pop
}

enum wye_err ledger_reasons_compact(const char *reasons_json, char **out)
{
    *out = NULL;
    /* What the router writes when nothing was scored; cJSON would print it back unchanged. */
    if (!reasons_json || strcmp(reasons_json, "[]") == 0) {
        return WYE_OK;
    }
    cJSON *j = cJSON_Parse(reasons_json);
    if (!j) {
        /* cJSON cannot tell allocation failure from bad text; a bad array is the caller's bug
         * either way and an unparsable record must never be written. */
        return WYE_ERR_INVAL;
    }
    if (!cJSON_IsArray(j)) {
        cJSON_Delete(j);
        return WYE_ERR_INVAL;
    }
    *out = cJSON_PrintUnformatted(j);
    cJSON_Delete(j);
    return *out ? WYE_OK : WYE_ERR_NOMEM;
}

enum wye_err ledger_format_body(const struct rt_ledger_rec *rec, struct wye_buf *out)
{
    char ts[32];
    wye_format_rfc3339(rec->ts_ms > 0 ? rec->ts_ms : 0, ts, sizeof(ts));
    enum wye_err err = wye_buf_printf(out, "\"ts\":\"%s\"", ts);
    if (!err) {
        err = put_str(out, "request_id", rec->request_id);
    }
    if (!err) {
        err = put_str(out, "key", rec->key_name);
    }
    if (!err) {
        err = put_str(out, "route", rec->route);
    }
    if (!err) {
        err = put_num(out, "score", "%.4f", rec->score, true);
    }
    if (!err) {
        err = wye_buf_append_str(out, ",\"reasons\":");
    }
    if (!err) {
        err = wye_buf_append_str(out, rec->reasons_json ? rec->reasons_json : "[]");
    }
    if (!err) {
        err = put_str(out, "model", rec->model);
    }
    if (!err) {
        err = wye_buf_printf(out,
                             ",\"prompt_tokens\":%lld,\"completion_tokens\":%lld,\"usage\":\"%s\"",
                             (long long)rec->prompt_tokens, (long long)rec->completion_tokens,
                             rec->usage_estimated ? "estimated" : "reported");
    }
    if (!err) {
        err = put_num(out, "ttft_ms", "%.3f", rec->ttft_ms, true);
    }
    if (!err) {
        err = put_num(out, "latency_ms", "%.3f", rec->latency_ms, false);
    }
    if (!err) {
        err = put_num(out, "cost_usd", "%.9g", rec->cost_usd, false);
    }
    if (!err) {
        err = put_num(out, "counterfactual_usd", "%.9g", rec->counterfactual_cost_usd, false);
    }
    if (!err) {
        err = put_num(out, "saving_usd", "%.9g", rec->saving_usd, false);
    }
    if (!err) {
        err = put_str(out, "status", rec->status);
    }
    if (!err) {
        err = put_str(out, "error", rec->error);
    }
    if (!err) {
        err = put_str(out, "run_id", rec->run_id);
    }
    if (!err) {
        err = put_str(out, "agent", rec->agent);
    }
    return err;
}

static int digits(const char *s, int n)
{
    int v = 0;
    for (int i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') {
            return -1;
        }
        v = v * 10 + (s[i] - '0');
    }
    return v;
}

bool ledger_parse_ts(const char *s, int64_t *ms)
{
    /* YYYY-MM-DDTHH:MM:SS */
    if (strlen(s) < 20 || s[4] != '-' || s[7] != '-' || (s[10] != 'T' && s[10] != 't') ||
        s[13] != ':' || s[16] != ':') {
        return false;
    }
    int y = digits(s, 4), mo = digits(s + 5, 2), d = digits(s + 8, 2);
    int h = digits(s + 11, 2), mi = digits(s + 14, 2), sec = digits(s + 17, 2);
    if (y < 1970 || mo < 1 || mo > 12 || d < 1 || d > 31 || h < 0 || h > 23 || mi < 0 || mi > 59 ||
        sec < 0 || sec > 60) {
        return false;
    }
    const char *p = s + 19;
    int frac = 0;
    if (*p == '.') {
        p++;
        int nd = 0;
        while (*p >= '0' && *p <= '9') {
            if (nd < 3) {
                frac = frac * 10 + (*p - '0');
            }
            nd++;
            p++;
        }
        if (nd == 0) {
            return false;
        }
        for (; nd < 3; nd++) {
            frac *= 10;
        }
    }
    if (!((strcmp(p, "Z") == 0 || strcmp(p, "z") == 0 || strcmp(p, "+00:00") == 0))) {
        return false;
    }
    struct tm tm = {.tm_year = y - 1900,
                    .tm_mon = mo - 1,
                    .tm_mday = d,
                    .tm_hour = h,
                    .tm_min = mi,
                    .tm_sec = sec};
    time_t t = timegm(&tm);
    if (t == (time_t)-1) {
        return false;
    }
    *ms = (int64_t)t * 1000 + frac;
    return true;
}

bool ledger_line_shaped(const char *line, size_t len, uint8_t mac[WYE_SHA256_LEN])
{
    const size_t suffix = LEDGER_MAC_SUFFIX_LEN;
    static const char head[] = "{\"seq\":";
    if (len < suffix + sizeof(head) || memcmp(line, head, sizeof(head) - 1) != 0 ||
        memcmp(line + len - 2, "\"}", 2) != 0 ||
        memcmp(line + len - suffix, LEDGER_MAC_PREFIX, sizeof(LEDGER_MAC_PREFIX) - 1) != 0) {
        return false;
    }
    char hex[LEDGER_HEX_LEN + 1];
    memcpy(hex, line + len - 2 - LEDGER_HEX_LEN, LEDGER_HEX_LEN);
    hex[LEDGER_HEX_LEN] = '\0';
    /* Lowercase only, as written: "A" for "a" would decode the same and go unnoticed. */
    return strspn(hex, "0123456789abcdef") == LEDGER_HEX_LEN &&
           wye_hex_decode(hex, mac, WYE_SHA256_LEN);
}

/* Reads seq, ts and prev from a line the writer produced (its MAC verified), by position:
 * no allocation, so recovery cannot mistake an allocation failure for a torn record. */
static bool parse_trusted(const char *line, size_t len, struct ledger_line *out)
{
    static const char ts_key[] = ",\"ts\":\"";
    static const char prev_key[] = ",\"prev\":\"";
    const size_t prev_len = (sizeof(prev_key) - 1) + LEDGER_HEX_LEN + 1;
    if (len < LEDGER_MAC_SUFFIX_LEN + prev_len + 7) {
        return false;
    }
    const size_t prev_at = len - LEDGER_MAC_SUFFIX_LEN - prev_len;
    const char *p = line + 7; /* after {"seq": */
    int64_t seq = 0;
    int nd = 0;
    while (p < line + len && *p >= '0' && *p <= '9' && nd < 16) {
        seq = seq * 10 + (*p++ - '0');
        nd++;
    }
    if (nd == 0 || seq < 1 || (size_t)(p - line) + sizeof(ts_key) + 24 > len ||
        memcmp(p, ts_key, sizeof(ts_key) - 1) != 0) {
        return false;
    }
    p += sizeof(ts_key) - 1;
    const char *q = memchr(p, '"', (size_t)(line + len - p));
    char ts[40];
    if (!q || q - p >= (ptrdiff_t)sizeof(ts)) {
        return false;
    }
    memcpy(ts, p, (size_t)(q - p));
    ts[q - p] = '\0';
    if (!ledger_parse_ts(ts, &out->ts_ms) || prev_at <= (size_t)(q - line) ||
        memcmp(line + prev_at, prev_key, sizeof(prev_key) - 1) != 0) {
        return false;
    }
    char hex[LEDGER_HEX_LEN + 1];
    memcpy(hex, line + prev_at + sizeof(prev_key) - 1, LEDGER_HEX_LEN);
    hex[LEDGER_HEX_LEN] = '\0';
    out->seq = seq;
    return wye_hex_decode(hex, out->prev, WYE_SHA256_LEN);
}

enum wye_err ledger_line_check(struct wye_hmac *h, const char *line, size_t len,
                               struct ledger_line *out, char *why, size_t whylen)
{
    memset(out, 0, sizeof(*out));
    if (!ledger_line_shaped(line, len, out->mac)) {
        snprintf(why, whylen, "not a ledger record (no leading \"seq\" or trailing \"mac\")");
        return WYE_ERR_PARSE;
    }
    if (h) {
        wye_hmac_update(h, line, len - LEDGER_MAC_SUFFIX_LEN);
        wye_hmac_final(h, out->computed);
        out->mac_ok = wye_ct_equal(out->computed, out->mac, WYE_SHA256_LEN);
        if (out->mac_ok && parse_trusted(line, len, out)) {
            return WYE_OK;
        }
        out->mac_ok = false; /* a verified MAC over a layout we never write: a bug or a forgery */
    }
    cJSON *j = cJSON_ParseWithLength(line, len);
    if (!j) {
        snprintf(why, whylen, "not a ledger record (invalid JSON)");
        return WYE_ERR_PARSE;
    }
    enum wye_err err = WYE_ERR_PARSE;
    const cJSON *seq = cJSON_GetObjectItemCaseSensitive(j, "seq");
    const cJSON *prev = cJSON_GetObjectItemCaseSensitive(j, "prev");
    const cJSON *ts = cJSON_GetObjectItemCaseSensitive(j, "ts");
    if (!cJSON_IsObject(j) || !cJSON_IsNumber(seq) || seq->valuedouble < 1 ||
        seq->valuedouble > 9e15 || seq->valuedouble != (double)(int64_t)seq->valuedouble) {
        snprintf(why, whylen, "not a ledger record (\"seq\" is not a positive integer)");
        goto out_json;
    }
    out->seq = (int64_t)seq->valuedouble;
    if (!cJSON_IsString(prev) || strlen(prev->valuestring) != LEDGER_HEX_LEN ||
        !wye_hex_decode(prev->valuestring, out->prev, WYE_SHA256_LEN)) {
        snprintf(why, whylen, "not a ledger record (\"prev\" is not 64 hex digits)");
        goto out_json;
    }
    if (!cJSON_IsString(ts) || !ledger_parse_ts(ts->valuestring, &out->ts_ms)) {
        snprintf(why, whylen, "not a ledger record (\"ts\" is not an RFC 3339 UTC time)");
        goto out_json;
    }
    err = WYE_OK;
out_json:
    cJSON_Delete(j);
    return err;
}

enum wye_err ledger_lines_foreach(FILE *f, ledger_line_fn fn, void *arg)
{
    const size_t cap = LEDGER_LINE_MAX;
    char *buf = wye_malloc(cap);
    if (!buf) {
        return WYE_ERR_NOMEM;
    }
    enum wye_err err = WYE_OK;
    size_t have = 0;
    uint64_t lineno = 0;
    bool skipping = false; /* inside a line already reported as too long */
    for (;;) {
        size_t n = fread(buf + have, 1, cap - have, f);
        if (n == 0 && ferror(f)) {
            err = WYE_ERR_IO;
            break;
        }
        bool eof = n == 0;
        have += n;
        size_t start = 0;
        char *nl;
        while (!err && (nl = memchr(buf + start, '\n', have - start)) != NULL) {
            size_t l = (size_t)(nl - (buf + start));
            if (skipping) {
                skipping = false;
            } else {
                err = fn(arg, buf + start, l, ++lineno, true, false);
            }
            start += l + 1;
        }
        if (err) {
            break;
        }
        memmove(buf, buf + start, have - start);
        have -= start;
        if (eof) {
            if (have && !skipping) {
                err = fn(arg, buf, have, ++lineno, false, false);
            }
            break;
        }
        if (have == cap) {
            if (!skipping) {
                err = fn(arg, buf, have, ++lineno, false, true);
                skipping = true;
            }
            have = 0;
            if (err) {
                break;
            }
        }
    }
    wye_free(buf);
    return err;
}
