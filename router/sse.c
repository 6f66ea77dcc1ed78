/* Incremental Server-Sent Events parsing (the WHATWG event-stream grammar: LF, CR or CRLF line
 * ends, "field:value" with one optional space, ':' comments, blank line dispatches) into a
 * buffer reserved once, and the readers of OpenAI chunk, completion and error JSON.
 * Runs on the upstream thread (one parser per transfer); tests call it from theirs. */
#include "router/sse.h"

#include <cJSON.h>
#include <stdio.h>
#include <string.h>

#include "common/alloc.h"

enum { ST_NAME, ST_VALUE_START, ST_VALUE };
enum { FIELD_OTHER, FIELD_DATA, FIELD_EVENT };

#define RT_USAGE_COUNT_MAX 9007199254740992.0 /* 2^53: every integer up to it is exact */

enum wye_err rt_sse_init(struct rt_sse *p, size_t cap)
{
    memset(p, 0, sizeof(*p));
    /* +1: each data line is stored with its '\n' until the event is dispatched */
    wye_buf_init(&p->data, cap + 1);
    p->cap = cap;
    enum wye_err err = wye_buf_reserve(&p->data, cap + 1);
    if (err) {
        wye_buf_cleanup(&p->data);
        return err;
    }
    rt_sse_reset(p);
    return WYE_OK;
}

void rt_sse_cleanup(struct rt_sse *p)
{
    wye_buf_cleanup(&p->data);
}

void rt_sse_reset(struct rt_sse *p)
{
    wye_buf_reset(&p->data);
    p->name_len = 0;
    p->event_len = 0;
    p->event[0] = '\0';
    p->state = ST_NAME;
    p->field = FIELD_OTHER;
    p->after_cr = false;
    p->has_data = false;
    p->at_start = true;
    p->failed = false;
}

bool rt_sse_pending(const struct rt_sse *p)
{
    return p->has_data || p->name_len > 0 || p->state != ST_NAME;
}

/* The field name is complete (at ':' or at the line end). */
static void name_done(struct rt_sse *p)
{
    p->field = FIELD_OTHER;
    if (p->name_len == 4 && memcmp(p->name, "data", 4) == 0) {
        p->field = FIELD_DATA;
        p->has_data = true;
    } else if (p->name_len == 5 && memcmp(p->name, "event", 5) == 0) {
        p->field = FIELD_EVENT;
        p->event_len = 0;
    }
}

static enum wye_err value_append(struct rt_sse *p, const char *s, size_t n)
{
    if (p->field == FIELD_DATA) {
        if (wye_buf_append(&p->data, s, n) != WYE_OK) {
            p->failed = true;
            return WYE_ERR_TOOBIG;
        }
    } else if (p->field == FIELD_EVENT) {
        size_t room = sizeof(p->event) - 1 - p->event_len;
        size_t k = n < room ? n : room;
        memcpy(p->event + p->event_len, s, k);
        p->event_len += k;
    }
    return WYE_OK;
}

/* A line ended. Returns OK, or the callback's verdict when the line was blank. */
static enum wye_err line_done(struct rt_sse *p, rt_sse_cb cb, void *arg)
{
    enum wye_err err = WYE_OK;
    if (p->state == ST_NAME && p->name_len == 0) {
        /* blank line: dispatch */
        if (p->has_data) {
            /* data lines each appended '\n'; the last one is not part of the data */
            if (p->data.len > 0) {
                p->data.len--;
                p->data.data[p->data.len] = '\0';
            }
            p->event[p->event_len] = '\0';
            struct rt_sse_event ev = {
                .event = p->event, .data = p->data.data ? p->data.data : "", .len = p->data.len};
            err = cb(arg, &ev);
        }
        wye_buf_reset(&p->data);
        p->has_data = false;
        p->event_len = 0;
        p->event[0] = '\0';
        return err;
    }
    if (p->state == ST_NAME && p->name_len > 0) {
        name_done(p); /* a field without ':' has an empty value */
    }
    if (p->field == FIELD_DATA && wye_buf_append(&p->data, "\n", 1) != WYE_OK) {
        p->failed = true;
        return WYE_ERR_TOOBIG;
    }
    p->state = ST_NAME;
    p->name_len = 0;
    p->field = FIELD_OTHER;
    return WYE_OK;
}

enum wye_err rt_sse_feed(struct rt_sse *p, const char *in, size_t n, size_t *used, rt_sse_cb cb,
                         void *arg)
{
    size_t i = 0;
    enum wye_err err = WYE_OK;
    if (p->failed) {
        err = WYE_ERR_TOOBIG;
        goto out;
    }
    while (i < n) {
        unsigned char c = (unsigned char)in[i];
        if (p->after_cr) {
            p->after_cr = false;
            if (c == '\n') {
                i++;
                continue;
            }
        }
        if (p->at_start) {
            p->at_start = false;
            /* U+FEFF as UTF-8; a split BOM is not worth the state */
            if (n - i >= 3 && memcmp(in + i, "\xEF\xBB\xBF", 3) == 0) {
                i += 3;
                continue;
            }
        }
        if (c == '\r' || c == '\n') {
            i++;
            p->after_cr = c == '\r';
            err = line_done(p, cb, arg);
            if (err) {
                goto out;
            }
            continue;
        }
        if (p->state == ST_NAME) {
            i++;
            if (c == ':') {
                if (p->name_len == 0) {
                    p->field = FIELD_OTHER; /* a comment: its value is skipped */
                } else {
                    name_done(p);
                }
                p->state = ST_VALUE_START;
            } else if (p->name_len < sizeof(p->name)) {
                p->name[p->name_len++] = (char)c;
            } else {
                p->name_len = sizeof(p->name); /* too long to be a known field */
            }
            continue;
        }
        if (p->state == ST_VALUE_START) {
            p->state = ST_VALUE;
            if (c == ' ') {
                i++;
                continue;
            }
        }
        /* ST_VALUE: copy up to the next line end in one piece (found with memchr: a value is
         * most of an event's bytes, and CR line ends are rare) */
        const char *lf = memchr(in + i, '\n', n - i);
        size_t j = lf ? (size_t)(lf - in) : n;
        const char *cr = memchr(in + i, '\r', j - i);
        if (cr) {
            j = (size_t)(cr - in);
        }
        err = value_append(p, in + i, j - i);
        if (err) {
            goto out;
        }
        i = j;
    }
out:
    if (used) {
        *used = i;
    }
    return err;
}

/* ---- OpenAI JSON ---- */

void rt_chunk_cleanup(struct rt_chunk *c)
{
    cJSON_Delete(c->root);
    cJSON_free(c->tool_calls);
    memset(c, 0, sizeof(*c));
}

const char *rt_finish_reason(const char *s)
{
    static const char *const known[] = {"stop", "length", "tool_calls", "content_filter",
                                        "function_call"};
    for (size_t i = 0; i < sizeof(known) / sizeof(known[0]); i++) {
        if (strcmp(s, known[i]) == 0) {
            return known[i];
        }
    }
    return "stop";
}

/* A token count as sent: absent (0), or a number from 0 to 2^53. Larger values are no count an
 * API reports, and would not convert to int64_t (undefined behaviour for a double past it). */
static bool read_count(const cJSON *v, int64_t *out)
{
    if (!v) {
        *out = 0;
        return true;
    }
    if (!cJSON_IsNumber(v) || !(v->valuedouble >= 0 && v->valuedouble <= RT_USAGE_COUNT_MAX)) {
        return false;
    }
    *out = (int64_t)v->valuedouble;
    return true;
}

static enum wye_err read_usage(const cJSON *u, struct rt_chunk *out, char *errbuf, size_t errlen)
{
    if (!u || cJSON_IsNull(u)) {
        return WYE_OK;
    }
    int64_t pt, ct;
    if (!cJSON_IsObject(u) ||
        !read_count(cJSON_GetObjectItemCaseSensitive(u, "prompt_tokens"), &pt) ||
        !read_count(cJSON_GetObjectItemCaseSensitive(u, "completion_tokens"), &ct)) {
        snprintf(errbuf, errlen, "'usage' must be an object with token counts from 0 to 2^53");
        return WYE_ERR_PARSE;
    }
    out->has_usage = true;
    out->usage.prompt_tokens = pt;
    out->usage.completion_tokens = ct;
    out->usage.estimated = false;
    return WYE_OK;
}

/* A complete message's tool_calls lack the "index" a delta carries; add it so consumers see one
 * shape. */
static enum wye_err add_indexes(cJSON *calls)
{
    int i = 0;
    cJSON *c;
    cJSON_ArrayForEach(c, calls)
    {
        if (cJSON_IsObject(c) && !cJSON_GetObjectItemCaseSensitive(c, "index")) {
            cJSON *idx = cJSON_CreateNumber(i);
            if (!idx) {
                return WYE_ERR_NOMEM;
            }
            cJSON_AddItemToObject(c, "index", idx);
        }
        i++;
    }
    return WYE_OK;
}

static enum wye_err read_choice(cJSON *root, bool full, struct rt_chunk *out, char *errbuf,
                                size_t errlen)
{
    cJSON *choices = cJSON_GetObjectItemCaseSensitive(root, "choices");
    if (!choices || cJSON_IsNull(choices)) {
        return WYE_OK;
    }
    if (!cJSON_IsArray(choices)) {
        snprintf(errbuf, errlen, "'choices' is not an array");
        return WYE_ERR_PARSE;
    }
    cJSON *ch = cJSON_GetArrayItem(choices, 0);
    if (!ch) {
        return WYE_OK; /* the usage chunk has "choices": [] */
    }
    const char *what = full ? "message" : "delta";
    cJSON *d = cJSON_GetObjectItemCaseSensitive(ch, what);
    const cJSON *fr = cJSON_GetObjectItemCaseSensitive(ch, "finish_reason");
    if (!cJSON_IsObject(ch) || (d && !cJSON_IsNull(d) && !cJSON_IsObject(d)) ||
        (fr && !cJSON_IsNull(fr) && !cJSON_IsString(fr))) {
        snprintf(errbuf, errlen,
                 "'choices[0]' is not an object with an object '%s' and a string "
                 "'finish_reason'",
                 what);
        return WYE_ERR_PARSE;
    }
    out->finish_reason = cJSON_GetStringValue(fr); /* NULL unless a string */
    if (!cJSON_IsObject(d)) {
        return WYE_OK;
    }
    const cJSON *content = cJSON_GetObjectItemCaseSensitive(d, "content");
    if (content && !cJSON_IsNull(content) && !cJSON_IsString(content)) {
        snprintf(errbuf, errlen, "'choices[0].%s.content' is not a string", what);
        return WYE_ERR_PARSE;
    }
    out->content = cJSON_GetStringValue(content);
    cJSON *calls = cJSON_GetObjectItemCaseSensitive(d, "tool_calls");
    if (calls && !cJSON_IsNull(calls)) {
        if (!cJSON_IsArray(calls)) {
            snprintf(errbuf, errlen, "'choices[0].%s.tool_calls' is not an array", what);
            return WYE_ERR_PARSE;
        }
        if (cJSON_GetArraySize(calls) > 0) {
            if (full && add_indexes(calls) != WYE_OK) {
                return WYE_ERR_NOMEM;
            }
            out->tool_calls = cJSON_PrintUnformatted(calls);
            if (!out->tool_calls) {
                return WYE_ERR_NOMEM;
            }
        }
    }
    return WYE_OK;
}

static void describe_json_error(const char *json, size_t len, const char *end, char *errbuf,
                                size_t errlen)
{
    size_t off = end && end >= json && end <= json + len ? (size_t)(end - json) : 0;
    size_t show = len - off < 24 ? len - off : 24;
    char near[25];
    for (size_t i = 0; i < show; i++) {
        unsigned char c = (unsigned char)json[off + i];
        near[i] = (char)(c >= 0x20 && c < 0x7f ? c : '?');
    }
    near[show] = '\0';
    snprintf(errbuf, errlen, "invalid JSON at byte %zu (near '%s')", off, near);
}

enum wye_err rt_chunk_parse(const char *json, size_t len, bool full, struct rt_chunk *out,
                            char *errbuf, size_t errlen)
{
    memset(out, 0, sizeof(*out));
    const char *end = NULL;
    out->root = cJSON_ParseWithLengthOpts(json, len, &end, false);
    if (!out->root) {
        /* cJSON reports an allocation failure the same way; the position tells them apart
         * well enough for a message */
        describe_json_error(json, len, end ? end : cJSON_GetErrorPtr(), errbuf, errlen);
        return WYE_ERR_PARSE;
    }
    if (!cJSON_IsObject(out->root)) {
        snprintf(errbuf, errlen, "the JSON is not an object");
        return WYE_ERR_PARSE;
    }
    const cJSON *e = cJSON_GetObjectItemCaseSensitive(out->root, "error");
    if (e && !cJSON_IsNull(e)) {
        const cJSON *m = cJSON_GetObjectItemCaseSensitive(e, "message");
        out->error = cJSON_IsString(m)   ? m->valuestring
                     : cJSON_IsString(e) ? e->valuestring
                                         : "an error without a message";
        return WYE_OK;
    }
    enum wye_err err = read_choice(out->root, full, out, errbuf, errlen);
    if (!err) {
        err = read_usage(cJSON_GetObjectItemCaseSensitive(out->root, "usage"), out, errbuf, errlen);
    }
    return err;
}

static void copy_printable(const char *s, size_t n, char *out, size_t outlen)
{
    size_t k = 0;
    for (size_t i = 0; i < n && k + 1 < outlen; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '\n' || c == '\r' || c == '\t') {
            c = ' ';
        } else if (c < 0x20 || c == 0x7f) {
            c = '?';
        }
        out[k++] = (char)c;
    }
    while (k > 0 && out[k - 1] == ' ') {
        k--;
    }
    out[k] = '\0';
}

void rt_error_body_message(const char *body, size_t len, char *out, size_t outlen)
{
    if (!outlen) {
        return;
    }
    out[0] = '\0';
    if (!body || !len) {
        return;
    }
    cJSON *root = cJSON_ParseWithLength(body, len);
    if (root) {
        const cJSON *e = cJSON_GetObjectItemCaseSensitive(root, "error");
        const cJSON *m = cJSON_GetObjectItemCaseSensitive(e, "message");
        if (!cJSON_IsString(m)) {
            m = cJSON_IsString(e) ? e : cJSON_GetObjectItemCaseSensitive(root, "message");
        }
        if (!cJSON_IsString(m)) {
            m = cJSON_GetObjectItemCaseSensitive(root, "detail");
        }
        if (cJSON_IsString(m)) {
            copy_printable(m->valuestring, strlen(m->valuestring), out, outlen);
        }
        cJSON_Delete(root);
        return;
    }
    /* plain text (a proxy's HTML page would be noise; keep it short) */
    copy_printable(body, len < 200 ? len : 200, out, outlen);
}
