/* Incremental Server-Sent Events parsing (the WHATWG event-stream grammar: LF, CR or CRLF line
 * ends, "field:value" with one optional space, ':' comments, blank line dispatches) into a
 * buffer reserved once, and the readers of OpenAI chunk, completion and error JSON.
 * Runs on the upstream thread (one parser per transfer); tests call it from theirs. */
#include "router/sse.h"

#include <cJSON.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "common/alloc.h"

enum { ST_NAME, ST_VALUE_START, ST_VALUE };
enum { FIELD_OTHER, FIELD_DATA, FIELD_EVENT };

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
        /* ST_VALUE: copy up to the next line end in one piece */
        size_t j = i;
        while (j < n && in[j] != '\r' && in[j] != '\n') {
            j++;
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

/* Zeroes everything but the inline text (which nothing reads before the fast path writes). */
static void chunk_clear(struct rt_chunk *c)
{
    memset(c, 0, offsetof(struct rt_chunk, text_inline));
}

void rt_chunk_cleanup(struct rt_chunk *c)
{
    cJSON_Delete(c->root);
    cJSON_free(c->tool_calls);
    if (c->text != c->text_inline) {
        wye_free(c->text);
    }
    chunk_clear(c);
}

static enum wye_err read_usage(const cJSON *u, struct rt_chunk *out, char *errbuf, size_t errlen)
{
    if (!u || cJSON_IsNull(u)) {
        return WYE_OK;
    }
    const cJSON *pt = cJSON_GetObjectItemCaseSensitive(u, "prompt_tokens");
    const cJSON *ct = cJSON_GetObjectItemCaseSensitive(u, "completion_tokens");
    if (!cJSON_IsObject(u) || (pt && !cJSON_IsNumber(pt)) || (ct && !cJSON_IsNumber(ct)) ||
        (pt && pt->valuedouble < 0) || (ct && ct->valuedouble < 0)) {
        snprintf(errbuf, errlen, "'usage' must be an object with non-negative token counts");
        return WYE_ERR_PARSE;
    }
    out->has_usage = true;
    out->usage.prompt_tokens = pt ? (int64_t)pt->valuedouble : 0;
    out->usage.completion_tokens = ct ? (int64_t)ct->valuedouble : 0;
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

enum wye_err rt_chunk_parse_cjson(const char *json, size_t len, bool full, struct rt_chunk *out,
                                  char *errbuf, size_t errlen)
{
    chunk_clear(out);
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

enum wye_err rt_chunk_parse(const char *json, size_t len, bool full, struct rt_chunk *out,
                            char *errbuf, size_t errlen)
{
    if (!full && rt_chunk_scan(json, len, out)) {
        return WYE_OK;
    }
    return rt_chunk_parse_cjson(json, len, full, out, errbuf, errlen);
}

/* ---- the fast path: the common streamed chunk without a JSON tree ----
 *
 * Nearly every event of a stream is a chunk like
 *   {"id":"..","object":"chat.completion.chunk","created":1,"model":"..",
 *    "choices":[{"index":0,"delta":{"content":"Hi"},"logprobs":null,"finish_reason":null}]}
 * plus one {"choices":[],"usage":{...}}. A cJSON tree costs a dozen allocations per chunk;
 * this recogniser walks just that shape, decodes only the strings it returns, and declines at
 * the first byte that does not fit, leaving the object to rt_chunk_parse_cjson. It accepts
 * only what cJSON accepts and reads it as rt_chunk_parse_cjson does; wherever the two could
 * differ (an escaped or duplicate key, \u0000 or a raw control byte in a string, a token count
 * that is not a plain integer, nested values, an "error" member, trailing bytes) it declines
 * instead of deciding. */

struct scan {
    const char *p, *end;
    char *out;          /* where the next returned string is decoded */
    struct rt_chunk *c; /* what is found */
    unsigned seen;      /* SEEN_*: members already read (a second one declines) */
};

enum {
    SEEN_CHOICES = 1u << 0,
    SEEN_USAGE = 1u << 1,
    SEEN_DELTA = 1u << 2,
    SEEN_FINISH = 1u << 3,
    SEEN_CONTENT = 1u << 4,
    SEEN_PROMPT = 1u << 5,
    SEEN_COMPLETION = 1u << 6,
};

typedef bool (*sc_member_fn)(struct scan *s, const char *key, size_t n);

static void sc_ws(struct scan *s)
{
    while (s->p < s->end && (*s->p == ' ' || *s->p == '\n' || *s->p == '\r' || *s->p == '\t')) {
        s->p++;
    }
}

/* Skips whitespace, then takes c if it comes next. */
static bool sc_take(struct scan *s, char c)
{
    sc_ws(s);
    if (s->p < s->end && *s->p == c) {
        s->p++;
        return true;
    }
    return false;
}

static bool sc_literal(struct scan *s, const char *lit)
{
    size_t n = strlen(lit);
    sc_ws(s);
    if ((size_t)(s->end - s->p) >= n && memcmp(s->p, lit, n) == 0) {
        s->p += n;
        return true;
    }
    return false;
}

/* Four hex digits, or -1. */
static long sc_hex4(const char *p)
{
    long v = 0;
    for (int i = 0; i < 4; i++) {
        char h = p[i];
        int d = h >= '0' && h <= '9'   ? h - '0'
                : h >= 'a' && h <= 'f' ? h - 'a' + 10
                : h >= 'A' && h <= 'F' ? h - 'A' + 10
                                       : -1;
        if (d < 0) {
            return -1;
        }
        v = v * 16 + d;
    }
    return v;
}

/* UTF-8 for cp (1..0x10FFFF) at o; returns the byte count. */
static size_t sc_utf8(char *o, long cp)
{
    if (cp < 0x80) {
        o[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        o[0] = (char)(0xC0 | (cp >> 6));
        o[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (char)(0xE0 | (cp >> 12));
        o[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        o[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    o[0] = (char)(0xF0 | (cp >> 18));
    o[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    o[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    o[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* A string value. val non-NULL: decoded, NUL-terminated, at s->out (never longer than its
 * JSON form with the quotes, so len + 1 bytes hold every string of a chunk). */
static bool sc_string(struct scan *s, const char **val)
{
    sc_ws(s);
    if (s->p >= s->end || *s->p != '"') {
        return false;
    }
    const char *p = s->p + 1;
    const char *end = s->end;
    char *o = val ? s->out : NULL;
    for (;;) {
        if (p >= end) {
            return false;
        }
        unsigned char ch = (unsigned char)*p;
        if (ch == '"') {
            break;
        }
        if (ch < 0x20) {
            return false; /* cJSON keeps it, and a NUL would cut the string short: decline */
        }
        if (ch != '\\') {
            const char *q = p + 1;
            while (q < end && *q != '"' && *q != '\\' && (unsigned char)*q >= 0x20) {
                q++;
            }
            if (o) {
                memcpy(o, p, (size_t)(q - p));
                o += q - p;
            }
            p = q;
            continue;
        }
        if (end - p < 2) {
            return false;
        }
        char d = 0;
        switch (p[1]) {
        case 'b':
            d = '\b';
            break;
        case 'f':
            d = '\f';
            break;
        case 'n':
            d = '\n';
            break;
        case 'r':
            d = '\r';
            break;
        case 't':
            d = '\t';
            break;
        case '"':
        case '\\':
        case '/':
            d = p[1];
            break;
        case 'u': {
            if (end - p < 6) {
                return false;
            }
            long cp = sc_hex4(p + 2);
            size_t n = 6;
            /* \u0000 would end the C string; a lone low surrogate is an error in cJSON */
            if (cp <= 0 || (cp >= 0xDC00 && cp <= 0xDFFF)) {
                return false;
            }
            if (cp >= 0xD800 && cp <= 0xDBFF) {
                if (end - p < 12 || p[6] != '\\' || p[7] != 'u') {
                    return false;
                }
                long lo = sc_hex4(p + 8);
                if (lo < 0xDC00 || lo > 0xDFFF) {
                    return false;
                }
                cp = 0x10000 + (((cp & 0x3FF) << 10) | (lo & 0x3FF));
                n = 12;
            }
            if (o) {
                o += sc_utf8(o, cp);
            }
            p += n;
            continue;
        }
        default:
            return false;
        }
        if (o) {
            *o++ = d;
        }
        p += 2;
    }
    if (o) {
        *o++ = '\0';
        *val = s->out;
        s->out = o;
    }
    s->p = p + 1;
    return true;
}

/* A number. val non-NULL: it must be a plain non-negative integer of at most 15 digits (exact
 * as a double, as cJSON holds it), stored in *val. */
static bool sc_number(struct scan *s, int64_t *val)
{
    sc_ws(s);
    const char *start = s->p;
    const char *p = start;
    const char *end = s->end;
    bool integer = true;
    if (p < end && *p == '-') {
        p++;
    }
    const char *digits = p;
    while (p < end && *p >= '0' && *p <= '9') {
        p++;
    }
    if (p == digits) {
        return false;
    }
    if (p < end && *p == '.') {
        const char *f = ++p;
        while (p < end && *p >= '0' && *p <= '9') {
            p++;
        }
        if (p == f) {
            return false;
        }
        integer = false;
    }
    if (p < end && (*p == 'e' || *p == 'E')) {
        p++;
        if (p < end && (*p == '+' || *p == '-')) {
            p++;
        }
        const char *f = p;
        while (p < end && *p >= '0' && *p <= '9') {
            p++;
        }
        if (p == f) {
            return false;
        }
        integer = false;
    }
    if (p - start > 32) {
        return false; /* cJSON reads at most 63 bytes of a number; stay far below */
    }
    if (val) {
        if (!integer || *start == '-' || p - start > 15) {
            return false;
        }
        int64_t v = 0;
        for (const char *q = start; q < p; q++) {
            v = v * 10 + (*q - '0');
        }
        *val = v;
    }
    s->p = p;
    return true;
}

static bool sc_scalar(struct scan *s)
{
    sc_ws(s);
    if (s->p >= s->end) {
        return false;
    }
    switch (*s->p) {
    case '"':
        return sc_string(s, NULL);
    case 'n':
        return sc_literal(s, "null");
    case 't':
        return sc_literal(s, "true");
    case 'f':
        return sc_literal(s, "false");
    default:
        return sc_number(s, NULL);
    }
}

/* A member name: plain bytes (no escape, no control byte, so it reads as cJSON reads it),
 * then the ':'. */
static bool sc_key(struct scan *s, const char **key, size_t *n)
{
    sc_ws(s);
    if (s->p >= s->end || *s->p != '"') {
        return false;
    }
    const char *q = s->p + 1;
    while (q < s->end && *q != '"') {
        if (*q == '\\' || (unsigned char)*q < 0x20) {
            return false;
        }
        q++;
    }
    if (q >= s->end) {
        return false;
    }
    *key = s->p + 1;
    *n = (size_t)(q - *key);
    s->p = q + 1;
    return sc_take(s, ':');
}

static bool key_is(const char *key, size_t n, const char *name)
{
    return strlen(name) == n && memcmp(key, name, n) == 0;
}

/* An object; fn reads each member's value. */
static bool sc_object(struct scan *s, sc_member_fn fn)
{
    if (!sc_take(s, '{')) {
        return false;
    }
    if (sc_take(s, '}')) {
        return true;
    }
    do {
        const char *key;
        size_t n;
        if (!sc_key(s, &key, &n) || !fn(s, key, n)) {
            return false;
        }
    } while (sc_take(s, ','));
    return sc_take(s, '}');
}

static bool flat_member(struct scan *s, const char *key, size_t n)
{
    (void)key;
    (void)n;
    return sc_scalar(s);
}

/* A value nobody reads: a scalar, or an object of scalars (usage's *_details). */
static bool sc_skip(struct scan *s)
{
    sc_ws(s);
    if (s->p < s->end && *s->p == '{') {
        return sc_object(s, flat_member);
    }
    return sc_scalar(s);
}

/* Marks bit seen; false if it already was. */
static bool sc_first(struct scan *s, unsigned bit)
{
    if (s->seen & bit) {
        return false;
    }
    s->seen |= bit;
    return true;
}

static bool delta_member(struct scan *s, const char *key, size_t n)
{
    if (key_is(key, n, "content")) {
        return sc_first(s, SEEN_CONTENT) && (sc_literal(s, "null") || sc_string(s, &s->c->content));
    }
    if (key_is(key, n, "tool_calls")) {
        return sc_literal(s, "null"); /* anything else is cJSON's to print */
    }
    return sc_skip(s);
}

static bool choice_member(struct scan *s, const char *key, size_t n)
{
    if (key_is(key, n, "delta")) {
        return sc_first(s, SEEN_DELTA) && (sc_literal(s, "null") || sc_object(s, delta_member));
    }
    if (key_is(key, n, "finish_reason")) {
        return sc_first(s, SEEN_FINISH) &&
               (sc_literal(s, "null") || sc_string(s, &s->c->finish_reason));
    }
    return sc_skip(s);
}

static bool usage_member(struct scan *s, const char *key, size_t n)
{
    if (key_is(key, n, "prompt_tokens")) {
        return sc_first(s, SEEN_PROMPT) && sc_number(s, &s->c->usage.prompt_tokens);
    }
    if (key_is(key, n, "completion_tokens")) {
        return sc_first(s, SEEN_COMPLETION) && sc_number(s, &s->c->usage.completion_tokens);
    }
    return sc_skip(s);
}

static bool top_member(struct scan *s, const char *key, size_t n)
{
    if (key_is(key, n, "choices")) {
        if (!sc_first(s, SEEN_CHOICES)) {
            return false;
        }
        if (sc_literal(s, "null")) {
            return true;
        }
        if (!sc_take(s, '[')) {
            return false;
        }
        if (sc_take(s, ']')) {
            return true; /* the usage chunk */
        }
        return sc_object(s, choice_member) && sc_take(s, ']'); /* one choice only */
    }
    if (key_is(key, n, "usage")) {
        if (!sc_first(s, SEEN_USAGE)) {
            return false;
        }
        if (sc_literal(s, "null")) {
            return true;
        }
        s->c->has_usage = true;
        s->c->usage.estimated = false;
        return sc_object(s, usage_member);
    }
    if (key_is(key, n, "error")) {
        return false; /* rare, and its message is cJSON's to find */
    }
    return sc_skip(s);
}

bool rt_chunk_scan(const char *json, size_t len, struct rt_chunk *out)
{
    chunk_clear(out);
    if (len < sizeof(out->text_inline)) {
        out->text = out->text_inline;
    } else {
        out->text = wye_malloc(len + 1);
        if (!out->text) {
            return false;
        }
    }
    struct scan s = {.p = json, .end = json + len, .out = out->text, .c = out, .seen = 0};
    bool ok = sc_object(&s, top_member);
    if (ok) {
        sc_ws(&s);
        ok = s.p == s.end;
    }
    if (!ok) {
        rt_chunk_cleanup(out);
    }
    return ok;
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
