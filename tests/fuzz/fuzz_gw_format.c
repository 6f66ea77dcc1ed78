/* libFuzzer entry point for the path an upstream's bytes take to a client: the input after a
 * FZ_FMT_HDR-byte header is an upstream event stream, read as the upstream thread reads it
 * (rt_sse_feed, rt_chunk_parse, the events of upstream_xfer.c's emit_chunk) and emitted into a
 * gateway stream (gw_stream.c's sink, gw_format.c's formatting) of the kind the header picks;
 * this thread then plays the lws thread, popping what was queued whenever the sink says AGAIN
 * and at the end. What a client would receive must be well-formed whatever the upstream sent:
 * one JSON object per WebSocket message, "data: <JSON>" events (and [DONE]) for SSE, one JSON
 * body for stream:false, with every tool call complete. No server runs (fuzz_gw_stubs.c).
 * Single-threaded.
 *
 * Header: [0] % 3 the kind (JSON, SSE, WebSocket), bit 2 include_usage; [1] the stream's
 * high-water mark / 16 (0: none); [2] % 4 the end (0, 3: as the stream says; 1: an upstream
 * failure; 2: the client cancels); [3] % 4 the model name start() gives. */
#include <cJSON.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "common/log.h"
#include "gateway/gw_internal.h"
#include "router/sse.h"
#include "tests/fuzz/fuzz_gateway.h"
#include "tests/fuzz/fuzz_util.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct conf_config cfg;
static struct gw_server srv;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    wye_alloc_install_cjson_hooks();
    wye_log_set_level(WYE_LOG_OFF);
    srv.cfg = &cfg;
    if (pthread_mutex_init(&srv.pool_lock, NULL) != 0) {
        abort();
    }
    return 0;
}

/* The upstream side of one answer (upstream_xfer.c's struct up_xfer, cut down). */
struct producer {
    struct gw_stream *s;
    struct wye_sink sink;
    struct wye_buf out;      /* what the client received, in order */
    struct wye_buf messages; /* WebSocket: each message, NUL-separated */
    bool done_seen;
    bool failed;
    char message[256];
    const char *finish_reason;
    bool has_usage;
    struct wye_usage usage;
};

/* The lws thread's part: take everything queued. */
static void drain(struct producer *pr)
{
    bool last = false;
    struct gw_chunk *c;
    while ((c = gw_stream_pop(pr->s, &last)) != NULL) {
        if (wye_buf_append(&pr->out, GW_CHUNK_DATA(c), c->len) ||
            (pr->s->kind == GW_KIND_WS &&
             (wye_buf_append(&pr->messages, GW_CHUNK_DATA(c), c->len) ||
              wye_buf_append(&pr->messages, "", 1)))) {
            abort();
        }
        gw_stream_recycle(pr->s, c);
    }
}

static enum wye_err emit(struct producer *pr, enum wye_ev_type type, const char *data, size_t len)
{
    struct wye_event ev = {.type = type, .data = data, .len = len, .usage = pr->usage};
    enum wye_err err = pr->sink.ops->emit(pr->sink.ctx, &ev);
    if (err == WYE_ERR_AGAIN) {
        drain(pr); /* credit comes back at once */
        err = WYE_OK;
    }
    return err;
}

static enum wye_err on_event(void *arg, const struct rt_sse_event *ev)
{
    struct producer *pr = arg;
    if (pr->done_seen) {
        return WYE_OK;
    }
    if (ev->len == 6 && memcmp(ev->data, "[DONE]", 6) == 0) {
        pr->done_seen = true;
        return WYE_OK;
    }
    struct rt_chunk c;
    char eb[160];
    enum wye_err err = rt_chunk_parse(ev->data, ev->len, false, &c, eb, sizeof(eb));
    if (err) {
        snprintf(pr->message, sizeof(pr->message), "upstream sent a malformed stream chunk: %s",
                 eb);
    } else if (c.error || strcmp(ev->event, "error") == 0) {
        snprintf(pr->message, sizeof(pr->message), "upstream reported an error mid-stream: %s",
                 c.error ? c.error : "(no message)");
        err = WYE_ERR_UPSTREAM;
    }
    if (err) {
        pr->failed = true;
        rt_chunk_cleanup(&c);
        return err;
    }
    if (c.content && c.content[0]) {
        err = emit(pr, WYE_EV_DELTA, c.content, strlen(c.content));
    }
    if (!err && c.tool_calls) {
        err = emit(pr, WYE_EV_TOOL_DELTA, c.tool_calls, strlen(c.tool_calls));
    }
    if (!err && c.has_usage) {
        pr->has_usage = true;
        pr->usage = c.usage;
        err = emit(pr, WYE_EV_USAGE, NULL, 0);
    }
    if (c.finish_reason) {
        pr->finish_reason = rt_finish_reason(c.finish_reason);
    }
    rt_chunk_cleanup(&c);
    return err;
}

/* Parses the NUL-terminated text p as exactly one JSON value. */
static cJSON *parse_whole(const char *p)
{
    const char *end = NULL;
    cJSON *j = cJSON_ParseWithOpts(p, &end, true);
    if (!j) {
        fprintf(stderr, "the client would get malformed JSON near byte %zu:\n%s\n",
                end ? (size_t)(end - p) : 0, p);
        abort();
    }
    return j;
}

static void check_tool_calls(const cJSON *calls)
{
    if (!calls) {
        return;
    }
    CHECK(cJSON_IsArray(calls));
    const cJSON *t;
    cJSON_ArrayForEach(t, calls)
    {
        const cJSON *fn = cJSON_GetObjectItemCaseSensitive(t, "function");
        CHECK(cJSON_IsNumber(cJSON_GetObjectItemCaseSensitive(t, "index")));
        CHECK(cJSON_IsString(cJSON_GetObjectItemCaseSensitive(t, "id")));
        CHECK(cJSON_IsString(cJSON_GetObjectItemCaseSensitive(fn, "name")));
        CHECK(cJSON_IsString(cJSON_GetObjectItemCaseSensitive(fn, "arguments")));
    }
}

static void check_output(struct producer *pr, enum gw_kind kind, int status)
{
    static char none[1];
    char *out = pr->out.data ? pr->out.data : none;
    if (kind == GW_KIND_WS) {
        for (size_t off = 0; off < pr->messages.len;) {
            const char *m = pr->messages.data + off;
            cJSON *j = parse_whole(m);
            CHECK(cJSON_IsObject(j) && cJSON_IsString(cJSON_GetObjectItemCaseSensitive(j, "type")));
            cJSON_Delete(j);
            off += strlen(m) + 1;
        }
        return;
    }
    if (kind == GW_KIND_JSON || status != 200) {
        cJSON *j = parse_whole(out);
        CHECK(cJSON_IsObject(j));
        const cJSON *ch = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(j, "choices"), 0);
        const cJSON *msg = cJSON_GetObjectItemCaseSensitive(ch, "message");
        check_tool_calls(cJSON_GetObjectItemCaseSensitive(msg, "tool_calls"));
        cJSON_Delete(j);
        return;
    }
    /* SSE: "data: <one JSON value>\n\n" each, [DONE] last if present */
    bool done = false;
    for (char *p = out; *p;) {
        CHECK(!done);
        CHECK(strncmp(p, "data: ", 6) == 0);
        char *e = strstr(p, "\n\n");
        CHECK(e != NULL);
        *e = '\0';
        if (strcmp(p + 6, "[DONE]") == 0) {
            done = true;
        } else {
            cJSON *j = parse_whole(p + 6);
            CHECK(cJSON_IsObject(j));
            cJSON_Delete(j);
        }
        p = e + 2;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const enum gw_kind kinds[3] = {GW_KIND_JSON, GW_KIND_SSE, GW_KIND_WS};
    static const char *const models[4] = {"gpt-4o-mini", "m\"o\\d\ne\x01l", "",
                                          "\xc3\xa9t\xc3\xa9"};
    if (size < FZ_FMT_HDR) {
        return 0;
    }
    const uint8_t *h = data;
    const char *in = (const char *)data + FZ_FMT_HDR;
    size_t n = size - FZ_FMT_HDR;
    enum gw_kind kind = kinds[h[0] % 3];
    cfg.limits.stream_buffer_bytes = (size_t)h[1] * 16;

    struct wye_chat_req req;
    memset(&req, 0, sizeof(req));
    memcpy(req.id, "req_0123456789abcdef01234567", WYE_REQID_LEN + 1);
    req.model = (char *)"auto";
    req.client_id = kind == GW_KIND_WS ? (char *)"c\"1" : NULL;
    req.include_usage = (h[0] & 4) != 0;
    struct producer pr = {0};
    wye_buf_init(&pr.out, (size_t)1 << 30);
    wye_buf_init(&pr.messages, (size_t)1 << 30);
    pr.s = gw_stream_create(&srv, kind, &req);
    if (!pr.s) {
        abort();
    }
    pr.sink = gw_stream_sink(pr.s);
    struct wye_start st = {.route = "remote",
                           .model = models[h[3] % 4],
                           .score = h[3] & 4 ? 0.25 : -1,
                           .reasons = h[3] & 8 ? "[{\"f\":\"code\",\"w\":0.5}]" : NULL};
    pr.sink.ops->start(pr.sink.ctx, &st);

    struct rt_sse p;
    if (rt_sse_init(&p, (size_t)256 << 10) != WYE_OK) {
        abort();
    }
    enum wye_err err = rt_sse_feed(&p, in, n, NULL, on_event, &pr);
    rt_sse_cleanup(&p);

    struct wye_result res = {.finish_reason = pr.finish_reason, .usage = pr.usage};
    if (h[2] % 4 == 2) {
        gw_stream_cancel(pr.s); /* the client went away: the producer sees it and stops */
        res.err = WYE_ERR_CANCELED;
    } else if (h[2] % 4 == 1 || pr.failed || err == WYE_ERR_TOOBIG) {
        res.err = WYE_ERR_UPSTREAM;
        res.http_status = 502;
        res.message = pr.message[0] ? pr.message : "upstream failed";
    } else if (err == WYE_ERR_CANCELED) {
        res.err = WYE_ERR_CANCELED;
    }
    pr.sink.ops->finish(pr.sink.ctx, &res);
    drain(&pr);
    int status = pr.s->status;
    gw_stream_release(pr.s); /* the lws side lets go: frees the stream */

    check_output(&pr, kind, status);
    wye_buf_cleanup(&pr.out);
    wye_buf_cleanup(&pr.messages);
    return 0;
}
