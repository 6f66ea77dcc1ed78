/* Formatting of answers: SSE chat.completion.chunk lines, the stream:false chat.completion
 * body (text concatenated, tool calls assembled by index), WebSocket events, and OpenAI error
 * JSON. Events are formatted on the producer's thread into the stream's scratch buffer and
 * queued as one chunk each; error bodies for refused requests are formatted on the lws thread. */
#include <cJSON.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "common/alloc.h"
#include "common/clock.h"
#include "common/log.h"
#include "gateway/gw_internal.h"

#define GW_TOOLS_MAX 64
#define GW_TOOL_FIELD_MAX ((size_t)16 << 20)

struct gw_tool {
    int index;
    struct wye_buf id;
    struct wye_buf type;
    struct wye_buf name;
    struct wye_buf args;
};

struct gw_tool_acc {
    struct gw_tool t[GW_TOOLS_MAX];
    int n;
};

void gw_tool_acc_destroy(struct gw_tool_acc *acc)
{
    if (!acc) {
        return;
    }
    for (int i = 0; i < acc->n; i++) {
        wye_buf_cleanup(&acc->t[i].id);
        wye_buf_cleanup(&acc->t[i].type);
        wye_buf_cleanup(&acc->t[i].name);
        wye_buf_cleanup(&acc->t[i].args);
    }
    wye_free(acc);
}

bool gw_json_too_deep(const char *p, size_t n, int limit)
{
    int depth = 0;
    bool in_str = false;
    for (size_t i = 0; i < n; i++) {
        char c = p[i];
        if (in_str) {
            if (c == '\\') {
                i++;
            } else if (c == '"') {
                in_str = false;
            }
        } else if (c == '"') {
            in_str = true;
        } else if (c == '[' || c == '{') {
            if (++depth > limit) {
                return true;
            }
        } else if (c == ']' || c == '}') {
            depth--;
        }
    }
    return false;
}

cJSON *gw_json_parse(const char *p, size_t n, size_t *pos)
{
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(p, n, &end, false);
    size_t i = end && end >= p ? (size_t)(end - p) : 0;
    if (root) {
        while (i < n && (p[i] == ' ' || p[i] == '\t' || p[i] == '\n' || p[i] == '\r')) {
            i++;
        }
        if (i == n) {
            return root;
        }
        cJSON_Delete(root);
    }
    *pos = i;
    return NULL;
}

enum wye_err gw_ws_create_body(cJSON *root, cJSON **body)
{
    *body = NULL;
    cJSON *resp = cJSON_GetObjectItemCaseSensitive(root, "response");
    if (resp && !cJSON_IsNull(resp)) {
        if (!cJSON_IsObject(resp)) {
            return WYE_ERR_INVAL;
        }
        *body = cJSON_DetachItemViaPointer(root, resp);
        return WYE_OK;
    }
    *body = cJSON_Duplicate(root, true);
    if (!*body) {
        return WYE_ERR_NOMEM;
    }
    cJSON_DeleteItemFromObjectCaseSensitive(*body, "type");
    cJSON_DeleteItemFromObjectCaseSensitive(*body, "id");
    cJSON_DeleteItemFromObjectCaseSensitive(*body, "response");
    return WYE_OK;
}

const char *gw_status_error_type(int status)
{
    switch (status) {
    case 401:
        return "authentication_error";
    case 403:
        return "permission_error";
    case 404:
        return "not_found_error";
    case 429:
        return "rate_limit_error";
    case 502:
    case 504:
        return "upstream_error";
    case 503:
        return "unavailable_error";
    default:
        return status >= 500 ? "server_error" : "invalid_request_error";
    }
}

static const char *status_code_name(int status)
{
    switch (status) {
    case 400:
        return "invalid_request";
    case 401:
        return "invalid_api_key";
    case 403:
        return "permission_denied";
    case 404:
        return "not_found";
    case 405:
        return "method_not_allowed";
    case 411:
        return "length_required";
    case 413:
        return "body_too_large";
    case 429:
        return "rate_limited";
    case 502:
        return "upstream_error";
    case 503:
        return "unavailable";
    case 504:
        return "upstream_timeout";
    default:
        return status >= 500 ? "internal_error" : "invalid_request";
    }
}

int gw_err_status(enum wye_err err)
{
    switch (err) {
    case WYE_OK:
        return 200;
    case WYE_ERR_INVAL:
    case WYE_ERR_PARSE:
    case WYE_ERR_UNSUPPORTED:
        return 400;
    case WYE_ERR_TOOBIG:
        return 400;
    case WYE_ERR_NOTFOUND:
        return 404;
    case WYE_ERR_AUTH:
        return 401;
    case WYE_ERR_DENIED:
        return 403;
    case WYE_ERR_LIMIT:
        return 429;
    case WYE_ERR_AGAIN:
    case WYE_ERR_CANCELED:
        return 503;
    case WYE_ERR_TIMEOUT:
        return 504;
    case WYE_ERR_UPSTREAM:
        return 502;
    default:
        return 500;
    }
}

static enum wye_err error_obj(struct wye_buf *b, int status, const char *code, const char *msg)
{
    enum wye_err err = wye_buf_append_str(b, "{\"message\":");
    if (!err) {
        err = wye_buf_append_json_str(b, msg ? msg : "error", strlen(msg ? msg : "error"));
    }
    if (!err) {
        err = wye_buf_printf(
            b, ",\"type\":\"%s\",\"param\":null,\"code\":", gw_status_error_type(status));
    }
    if (!err) {
        const char *c = code ? code : status_code_name(status);
        err = wye_buf_append_json_str(b, c, strlen(c));
    }
    if (!err) {
        err = wye_buf_append_str(b, "}");
    }
    return err;
}

enum wye_err gw_fmt_error_json(struct wye_buf *b, int status, const char *code, const char *msg)
{
    enum wye_err err = wye_buf_append_str(b, "{\"error\":");
    if (!err) {
        err = error_obj(b, status, code, msg);
    }
    if (!err) {
        err = wye_buf_append_str(b, "}");
    }
    return err;
}

enum wye_err gw_fmt_ws_error(struct wye_buf *b, int status, const char *id, const char *code,
                             const char *msg)
{
    enum wye_err err = wye_buf_append_str(b, "{\"type\":\"error\"");
    if (!err && id) {
        err = wye_buf_append_str(b, ",\"id\":");
        if (!err) {
            err = wye_buf_append_json_str(b, id, strlen(id));
        }
    }
    if (!err) {
        err = wye_buf_append_str(b, ",\"error\":");
    }
    if (!err) {
        err = error_obj(b, status, code, msg);
    }
    if (!err) {
        err = wye_buf_append_str(b, "}");
    }
    return err;
}

/* `data: {"id":...,"object":"chat.completion.chunk","created":...,"model":...`: the same for
 * every event of a stream, so it is formatted once (at the first event, after start() named
 * the model) into s->prefix and copied from there. */
static enum wye_err sse_chunk_head(struct gw_stream *s, struct wye_buf *b)
{
    if (s->prefix.len == 0) {
        enum wye_err err =
            wye_buf_printf(&s->prefix,
                           "data: {\"id\":\"chatcmpl-%s\",\"object\":"
                           "\"chat.completion.chunk\",\"created\":%" PRId64 ",\"model\":",
                           s->reqid + 4, s->created_s);
        if (!err) {
            err = wye_buf_append_json_str(&s->prefix, s->model, strlen(s->model));
        }
        if (err) {
            wye_buf_reset(&s->prefix);
            return err;
        }
    }
    return wye_buf_append(b, s->prefix.data, s->prefix.len);
}

/* `{"type":"<type>","id":<the client's id>`; the id's JSON text is kept in s->prefix. */
static enum wye_err ws_head(struct gw_stream *s, struct wye_buf *b, const char *type)
{
    if (s->prefix.len == 0) {
        const char *id = s->client_id ? s->client_id : s->reqid;
        enum wye_err err = wye_buf_append_json_str(&s->prefix, id, strlen(id));
        if (err) {
            wye_buf_reset(&s->prefix);
            return err;
        }
    }
    enum wye_err err = wye_buf_append_str(b, "{\"type\":\"");
    if (!err) {
        err = wye_buf_append_str(b, type);
    }
    if (!err) {
        err = wye_buf_append_str(b, "\",\"id\":");
    }
    if (!err) {
        err = wye_buf_append(b, s->prefix.data, s->prefix.len);
    }
    return err;
}

static enum wye_err usage_obj(struct wye_buf *b, const struct wye_usage *u)
{
    return wye_buf_printf(b,
                          "{\"prompt_tokens\":%" PRId64 ",\"completion_tokens\":%" PRId64
                          ",\"total_tokens\":%" PRId64 "%s}",
                          u->prompt_tokens, u->completion_tokens,
                          u->prompt_tokens + u->completion_tokens,
                          u->estimated ? ",\"estimated\":true" : "");
}

/* JSON mode: folds one tool_calls delta array into the accumulator. */
static enum wye_err tools_accumulate(struct gw_stream *s, const cJSON *arr)
{
    if (!s->tools) {
        s->tools = wye_calloc(1, sizeof(*s->tools));
        if (!s->tools) {
            return WYE_ERR_NOMEM;
        }
    }
    struct gw_tool_acc *acc = s->tools;
    const cJSON *tc;
    cJSON_ArrayForEach(tc, arr)
    {
        const cJSON *idx = cJSON_GetObjectItemCaseSensitive(tc, "index");
        int index = 0;
        if (cJSON_IsNumber(idx)) {
            /* the backend picks this number: converting one no int holds is undefined, and
             * no real call has a negative, fractional or huge index */
            if (!(idx->valuedouble >= 0 && idx->valuedouble <= INT_MAX) ||
                idx->valuedouble != floor(idx->valuedouble)) {
                wye_log(WYE_LOG_WARN, s->reqid,
                        "backend sent a tool call whose index is no int from 0 up; dropped");
                continue;
            }
            index = (int)idx->valuedouble;
        }
        struct gw_tool *t = NULL;
        for (int i = 0; i < acc->n; i++) {
            if (acc->t[i].index == index) {
                t = &acc->t[i];
            }
        }
        if (!t) {
            if (acc->n == GW_TOOLS_MAX) {
                return WYE_ERR_TOOBIG;
            }
            t = &acc->t[acc->n++];
            t->index = index;
            wye_buf_init(&t->id, 256);
            wye_buf_init(&t->type, 64);
            wye_buf_init(&t->name, 256);
            wye_buf_init(&t->args, GW_TOOL_FIELD_MAX);
        }
        const cJSON *id = cJSON_GetObjectItemCaseSensitive(tc, "id");
        const cJSON *type = cJSON_GetObjectItemCaseSensitive(tc, "type");
        const cJSON *fn = cJSON_GetObjectItemCaseSensitive(tc, "function");
        const cJSON *name = cJSON_GetObjectItemCaseSensitive(fn, "name");
        const cJSON *args = cJSON_GetObjectItemCaseSensitive(fn, "arguments");
        enum wye_err err = WYE_OK;
        if (cJSON_IsString(id) && t->id.len == 0) {
            err = wye_buf_append_str(&t->id, id->valuestring);
        }
        if (!err && cJSON_IsString(type) && t->type.len == 0) {
            err = wye_buf_append_str(&t->type, type->valuestring);
        }
        if (!err && cJSON_IsString(name)) {
            err = wye_buf_append_str(&t->name, name->valuestring);
        }
        if (!err && cJSON_IsString(args)) {
            err = wye_buf_append_str(&t->args, args->valuestring);
        }
        if (err) {
            return err;
        }
    }
    return WYE_OK;
}

static enum wye_err tools_render(const struct gw_tool_acc *acc, struct wye_buf *b)
{
    enum wye_err err = wye_buf_append_str(b, "[");
    for (int i = 0; !err && i < acc->n; i++) {
        const struct gw_tool *t = &acc->t[i];
        err = wye_buf_printf(b, "%s{\"index\":%d,\"id\":", i ? "," : "", t->index);
        if (!err) {
            err = wye_buf_append_json_str(b, t->id.data ? t->id.data : "", t->id.len);
        }
        if (!err) {
            err = wye_buf_append_str(b, ",\"type\":");
        }
        if (!err) {
            err = t->type.len ? wye_buf_append_json_str(b, t->type.data, t->type.len)
                              : wye_buf_append_str(b, "\"function\"");
        }
        if (!err) {
            err = wye_buf_append_str(b, ",\"function\":{\"name\":");
        }
        if (!err) {
            err = wye_buf_append_json_str(b, t->name.data ? t->name.data : "", t->name.len);
        }
        if (!err) {
            err = wye_buf_append_str(b, ",\"arguments\":");
        }
        if (!err) {
            err = wye_buf_append_json_str(b, t->args.data ? t->args.data : "", t->args.len);
        }
        if (!err) {
            err = wye_buf_append_str(b, "}}");
        }
    }
    if (!err) {
        err = wye_buf_append_str(b, "]");
    }
    return err;
}

enum wye_err gw_fmt_event(struct gw_stream *s, const struct wye_event *ev)
{
    if (ev->type == WYE_EV_USAGE) {
        s->usage = ev->usage;
        s->have_usage = true;
        return WYE_OK;
    }
    bool tool = ev->type == WYE_EV_TOOL_DELTA;
    cJSON *arr = NULL;
    if (tool) {
        arr = cJSON_ParseWithLength(ev->data, ev->len);
        if (!cJSON_IsArray(arr)) {
            cJSON_Delete(arr);
            wye_log(WYE_LOG_WARN, s->reqid,
                    "backend sent a tool_calls delta that is not a JSON array; dropped");
            return WYE_OK;
        }
    }
    enum wye_err err = WYE_OK;
    struct wye_buf *b = &s->fmt;
    wye_buf_reset(b);
    switch (s->kind) {
    case GW_KIND_JSON:
        err = tool ? tools_accumulate(s, arr) : wye_buf_append(&s->text, ev->data, ev->len);
        cJSON_Delete(arr);
        if (err) {
            atomic_store(&s->cancelled, true);
            return WYE_ERR_CANCELED;
        }
        s->n_events++;
        return WYE_OK;
    case GW_KIND_SSE:
        err = sse_chunk_head(s, b);
        if (!err) {
            err =
                wye_buf_append_str(b, s->n_events == 0 ? ",\"choices\":[{\"index\":0,\"delta\":{"
                                                         "\"role\":\"assistant\","
                                                       : ",\"choices\":[{\"index\":0,\"delta\":{");
        }
        if (!err && tool) {
            err = wye_buf_append_str(b, "\"tool_calls\":");
            if (!err) {
                err = wye_buf_append(b, ev->data, ev->len);
            }
        } else if (!err) {
            err = wye_buf_append_str(b, "\"content\":");
            if (!err) {
                err = wye_buf_append_json_str(b, ev->data, ev->len);
            }
        }
        if (!err) {
            err = wye_buf_append_str(b, "},\"finish_reason\":null}]}\n\n");
        }
        break;
    case GW_KIND_WS:
        err =
            ws_head(s, b, tool ? "response.output_tool_call.delta" : "response.output_text.delta");
        if (!err && tool) {
            err = wye_buf_append_str(b, ",\"tool_calls\":");
            if (!err) {
                err = wye_buf_append(b, ev->data, ev->len);
            }
        } else if (!err) {
            err = wye_buf_append_str(b, ",\"delta\":");
            if (!err) {
                err = wye_buf_append_json_str(b, ev->data, ev->len);
            }
        }
        if (!err) {
            err = wye_buf_append_str(b, "}");
        }
        break;
    }
    cJSON_Delete(arr);
    if (err) {
        atomic_store(&s->cancelled, true);
        return WYE_ERR_CANCELED;
    }
    s->n_events++;
    err = gw_stream_push(s, b->data, b->len);
    if (err == WYE_ERR_NOMEM) {
        atomic_store(&s->cancelled, true);
        return WYE_ERR_CANCELED;
    }
    return err;
}

static enum wye_err finish_sse_ok(struct gw_stream *s, const char *reason, struct wye_buf *b)
{
    enum wye_err err = WYE_OK;
    if (s->n_events == 0) {
        err = sse_chunk_head(s, b);
        if (!err) {
            err = wye_buf_append_str(
                b, ",\"choices\":[{\"index\":0,\"delta\":{\"role\":"
                   "\"assistant\",\"content\":\"\"},\"finish_reason\":null}]}\n\n");
        }
    }
    if (!err) {
        err = sse_chunk_head(s, b);
    }
    if (!err) {
        err = wye_buf_printf(
            b, ",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"%s\"}]}\n\n", reason);
    }
    if (!err && s->include_usage) {
        err = sse_chunk_head(s, b);
        if (!err) {
            err = wye_buf_append_str(b, ",\"choices\":[],\"usage\":");
        }
        if (!err) {
            err = usage_obj(b, &s->usage);
        }
        if (!err) {
            err = wye_buf_append_str(b, "}\n\n");
        }
    }
    if (!err) {
        err = wye_buf_append_str(b, "data: [DONE]\n\n");
    }
    return err;
}

static enum wye_err finish_json_ok(struct gw_stream *s, const char *reason, struct wye_buf *b)
{
    enum wye_err err = wye_buf_printf(b,
                                      "{\"id\":\"chatcmpl-%s\",\"object\":\"chat.completion\","
                                      "\"created\":%" PRId64 ",\"model\":",
                                      s->reqid + 4, s->created_s);
    if (!err) {
        err = wye_buf_append_json_str(b, s->model, strlen(s->model));
    }
    if (!err) {
        err =
            wye_buf_append_str(b, ",\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\","
                                  "\"content\":");
    }
    bool tools = s->tools && s->tools->n > 0;
    if (!err) {
        err = (tools && s->text.len == 0)
                  ? wye_buf_append_str(b, "null")
                  : wye_buf_append_json_str(b, s->text.data ? s->text.data : "", s->text.len);
    }
    if (!err && tools) {
        err = wye_buf_append_str(b, ",\"tool_calls\":");
        if (!err) {
            err = tools_render(s->tools, b);
        }
    }
    if (!err) {
        err = wye_buf_printf(b, "},\"finish_reason\":\"%s\"}],\"usage\":", reason);
    }
    if (!err) {
        err = usage_obj(b, &s->usage);
    }
    if (!err) {
        err = wye_buf_append_str(b, "}");
    }
    return err;
}

static enum wye_err finish_ws(struct gw_stream *s, const struct wye_result *res, const char *status,
                              const char *reason, struct wye_buf *b)
{
    char route[16], model[128], reasons[sizeof(s->reasons)];
    double score;
    pthread_mutex_lock(&s->lock);
    snprintf(route, sizeof(route), "%s", s->route);
    snprintf(model, sizeof(model), "%s", s->model);
    memcpy(reasons, s->reasons, sizeof(reasons));
    score = s->score;
    pthread_mutex_unlock(&s->lock);
    enum wye_err err = ws_head(s, b, "response.done");
    if (!err) {
        err = wye_buf_printf(b, ",\"status\":\"%s\",\"finish_reason\":\"%s\",\"usage\":", status,
                             reason);
    }
    if (!err) {
        err = usage_obj(b, &s->usage);
    }
    if (!err) {
        err = wye_buf_append_str(b, ",\"route\":");
    }
    if (!err) {
        err = route[0] ? wye_buf_append_json_str(b, route, strlen(route))
                       : wye_buf_append_str(b, "null");
    }
    if (!err) {
        err = wye_buf_append_str(b, ",\"model\":");
    }
    if (!err) {
        err = wye_buf_append_json_str(b, model, strlen(model));
    }
    if (!err) {
        err = score >= 0 ? wye_buf_printf(b, ",\"score\":%.4f", score)
                         : wye_buf_append_str(b, ",\"score\":null");
    }
    if (!err) {
        err = wye_buf_append_str(b, ",\"reasons\":");
    }
    if (!err) {
        err = wye_buf_append_str(b, reasons[0] ? reasons : "null");
    }
    if (!err) {
        int64_t lat = (wye_now_ns() - s->t0_ns) / 1000000;
        err = wye_buf_printf(b, ",\"latency_ms\":%" PRId64, lat);
    }
    if (!err) {
        err = s->ttft_done ? wye_buf_printf(b, ",\"ttft_ms\":%" PRId64, s->ttft_ns / 1000000)
                           : wye_buf_append_str(b, ",\"ttft_ms\":null");
    }
    if (!err && strcmp(status, "failed") == 0) {
        int st = res->http_status ? res->http_status : gw_err_status(res->err);
        err = wye_buf_append_str(b, ",\"error\":");
        if (!err) {
            err = error_obj(b, st, NULL, res->message ? res->message : wye_err_str(res->err));
        }
    }
    if (!err) {
        err = wye_buf_append_str(b, "}");
    }
    return err;
}

void gw_fmt_finish(struct gw_stream *s, const struct wye_result *res)
{
    struct wye_buf *b = &s->fmt;
    wye_buf_reset(b);
    bool cancelled = atomic_load(&s->cancelled) || res->err == WYE_ERR_CANCELED;
    bool ok = res->err == WYE_OK && !cancelled;
    const char *reason = ok ? (res->finish_reason ? res->finish_reason : "stop")
                            : (cancelled ? "cancelled" : "error");
    if (ok && s->tools && s->tools->n > 0 && !res->finish_reason) {
        reason = "tool_calls";
    }
    int status = 0;
    enum wye_err err;
    const char *msg = res->message ? res->message
                      : cancelled  ? "the request was cancelled"
                                   : wye_err_str(res->err);
    if (s->kind == GW_KIND_WS) {
        err = finish_ws(s, res, ok ? "completed" : cancelled ? "cancelled" : "failed", reason, b);
    } else if (ok) {
        err = s->kind == GW_KIND_SSE ? finish_sse_ok(s, reason, b) : finish_json_ok(s, reason, b);
    } else if (s->n_events == 0 || s->kind == GW_KIND_JSON) {
        /* Nothing reached the client yet: a plain error response with the right status. */
        status = res->http_status >= 400 ? res->http_status
                                         : gw_err_status(cancelled ? WYE_ERR_CANCELED : res->err);
        err = gw_fmt_error_json(b, status, NULL, msg);
    } else {
        /* Mid-stream failure: an explicit error event and no [DONE]. */
        int st = res->http_status >= 400 ? res->http_status
                                         : gw_err_status(cancelled ? WYE_ERR_CANCELED : res->err);
        err = wye_buf_append_str(b, "data: ");
        if (!err) {
            err = gw_fmt_error_json(b, st, NULL, msg);
        }
        if (!err) {
            err = wye_buf_append_str(b, "\n\n");
        }
    }
    if (err) {
        wye_log(WYE_LOG_ERROR, s->reqid, "cannot format the end of the answer: %s",
                wye_err_str(err));
        wye_buf_reset(b);
        if (s->n_events == 0 && s->kind != GW_KIND_WS) {
            status = 500;
        }
    }
    if (!ok && s->kind != GW_KIND_WS) {
        wye_log(WYE_LOG_INFO, s->reqid, "answer failed: %s", msg);
    }
    gw_stream_push_ex(s, b->data, b->len, true, status);
}
