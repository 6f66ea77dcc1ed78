/* Parsing and freeing chat requests. Runs on whichever thread received the request (the lws
 * thread for HTTP and WebSocket, an agent worker for agents). */
#include "common/chat.h"

#include <cJSON.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "common/alloc.h"
#include "common/buf.h"

#define CHAT_STOP_MAX 4
#define CHAT_CONTENT_MAX ((size_t)64 << 20)

const char *wye_role_name(enum wye_role role)
{
    switch (role) {
    case WYE_ROLE_SYSTEM: return "system";
    case WYE_ROLE_USER: return "user";
    case WYE_ROLE_ASSISTANT: return "assistant";
    case WYE_ROLE_TOOL: return "tool";
    }
    return "user";
}

void wye_chat_req_destroy(struct wye_chat_req *req)
{
    if (!req) {
        return;
    }
    for (size_t i = 0; i < req->n_msgs; i++) {
        wye_free(req->msgs[i].content);
    }
    wye_free(req->msgs);
    for (size_t i = 0; i < req->n_stop; i++) {
        wye_free(req->stop[i]);
    }
    wye_free(req->stop);
    wye_free(req->model);
    wye_free(req->client_id);
    wye_free(req->key_name);
    wye_free(req->agent);
    cJSON_Delete(req->body);
    wye_free(req);
}

static int json_depth(const cJSON *item, int limit)
{
    int max = 0;
    for (const cJSON *c = item ? item->child : NULL; c; c = c->next) {
        int d = json_depth(c, limit - 1);
        if (d > max) {
            max = d;
        }
        if (max > limit) {
            break;
        }
    }
    return max + 1;
}

static bool parse_role(const char *s, enum wye_role *out)
{
    if (strcmp(s, "system") == 0 || strcmp(s, "developer") == 0) {
        *out = WYE_ROLE_SYSTEM;
    } else if (strcmp(s, "user") == 0) {
        *out = WYE_ROLE_USER;
    } else if (strcmp(s, "assistant") == 0) {
        *out = WYE_ROLE_ASSISTANT;
    } else if (strcmp(s, "tool") == 0) {
        *out = WYE_ROLE_TOOL;
    } else {
        return false;
    }
    return true;
}

/* content: a string, null, or an array of {"type":"text","text":...} parts (joined). */
static enum wye_err parse_content(const cJSON *content, char **out, size_t i, char *errbuf,
                                  size_t errlen)
{
    if (!content || cJSON_IsNull(content)) {
        *out = wye_strdup("");
        return *out ? WYE_OK : WYE_ERR_NOMEM;
    }
    if (cJSON_IsString(content)) {
        *out = wye_strdup(content->valuestring);
        return *out ? WYE_OK : WYE_ERR_NOMEM;
    }
    if (!cJSON_IsArray(content)) {
        snprintf(errbuf, errlen, "messages[%zu].content must be a string or an array of parts", i);
        return WYE_ERR_INVAL;
    }
    struct wye_buf b;
    wye_buf_init(&b, CHAT_CONTENT_MAX);
    enum wye_err err = wye_buf_append(&b, "", 0);
    const cJSON *part;
    cJSON_ArrayForEach(part, content)
    {
        const cJSON *type = cJSON_GetObjectItemCaseSensitive(part, "type");
        const cJSON *text = cJSON_GetObjectItemCaseSensitive(part, "text");
        if (!cJSON_IsString(type) || strcmp(type->valuestring, "text") != 0 ||
            !cJSON_IsString(text)) {
            snprintf(errbuf, errlen, "messages[%zu].content: only text parts are supported", i);
            err = WYE_ERR_INVAL;
        }
        if (!err) {
            err = wye_buf_append_str(&b, text->valuestring);
        }
        if (err) {
            break;
        }
    }
    if (err) {
        wye_buf_cleanup(&b);
        return err;
    }
    *out = wye_buf_steal(&b, NULL);
    return WYE_OK;
}

static enum wye_err parse_messages(const cJSON *msgs, const struct wye_chat_limits *lim,
                                   struct wye_chat_req *req, char *errbuf, size_t errlen)
{
    if (!cJSON_IsArray(msgs)) {
        snprintf(errbuf, errlen, "'messages' is required and must be an array");
        return WYE_ERR_INVAL;
    }
    size_t n = (size_t)cJSON_GetArraySize(msgs);
    if (n == 0) {
        snprintf(errbuf, errlen, "'messages' must not be empty");
        return WYE_ERR_INVAL;
    }
    if (lim && lim->n_msgs_max && n > lim->n_msgs_max) {
        snprintf(errbuf, errlen, "'messages' has %zu entries; the limit is %zu", n,
                 lim->n_msgs_max);
        return WYE_ERR_TOOBIG;
    }
    req->msgs = wye_calloc(n, sizeof(*req->msgs));
    if (!req->msgs) {
        return WYE_ERR_NOMEM;
    }
    const cJSON *m;
    size_t i = 0;
    cJSON_ArrayForEach(m, msgs)
    {
        const cJSON *role = cJSON_GetObjectItemCaseSensitive(m, "role");
        if (!cJSON_IsObject(m) || !cJSON_IsString(role)) {
            snprintf(errbuf, errlen, "messages[%zu] must be an object with a string 'role'", i);
            return WYE_ERR_INVAL;
        }
        if (!parse_role(role->valuestring, &req->msgs[i].role)) {
            snprintf(errbuf, errlen, "messages[%zu].role '%.32s' is not one of system, user, "
                     "assistant, tool", i, role->valuestring);
            return WYE_ERR_INVAL;
        }
        enum wye_err err = parse_content(cJSON_GetObjectItemCaseSensitive(m, "content"),
                                         &req->msgs[i].content, i, errbuf, errlen);
        req->n_msgs = ++i;
        if (err) {
            return err;
        }
    }
    return WYE_OK;
}

static enum wye_err parse_stop(const cJSON *stop, struct wye_chat_req *req, char *errbuf,
                               size_t errlen)
{
    if (!stop || cJSON_IsNull(stop)) {
        return WYE_OK;
    }
    size_t n = cJSON_IsString(stop) ? 1 : cJSON_IsArray(stop) ? (size_t)cJSON_GetArraySize(stop) : 0;
    if ((!cJSON_IsString(stop) && !cJSON_IsArray(stop)) || n > CHAT_STOP_MAX) {
        snprintf(errbuf, errlen, "'stop' must be a string or an array of up to %d strings",
                 CHAT_STOP_MAX);
        return WYE_ERR_INVAL;
    }
    if (n == 0) {
        return WYE_OK;
    }
    req->stop = wye_calloc(n, sizeof(char *));
    if (!req->stop) {
        return WYE_ERR_NOMEM;
    }
    if (cJSON_IsString(stop)) {
        req->stop[0] = wye_strdup(stop->valuestring);
        req->n_stop = 1;
        return req->stop[0] ? WYE_OK : WYE_ERR_NOMEM;
    }
    const cJSON *s;
    cJSON_ArrayForEach(s, stop)
    {
        if (!cJSON_IsString(s) || s->valuestring[0] == '\0') {
            snprintf(errbuf, errlen, "'stop' entries must be non-empty strings");
            return WYE_ERR_INVAL;
        }
        req->stop[req->n_stop] = wye_strdup(s->valuestring);
        if (!req->stop[req->n_stop]) {
            return WYE_ERR_NOMEM;
        }
        req->n_stop++;
    }
    return WYE_OK;
}

static enum wye_err parse_number(const cJSON *body, const char *name, double lo, double hi,
                                 double *out, char *errbuf, size_t errlen)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(body, name);
    if (!v || cJSON_IsNull(v)) {
        return WYE_OK;
    }
    if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble) || v->valuedouble < lo ||
        v->valuedouble > hi) {
        snprintf(errbuf, errlen, "'%s' must be a number from %g to %g", name, lo, hi);
        return WYE_ERR_INVAL;
    }
    *out = v->valuedouble;
    return WYE_OK;
}

static enum wye_err parse_fields(cJSON *body, const struct wye_chat_limits *lim,
                                 struct wye_chat_req *req, char *errbuf, size_t errlen)
{
    enum wye_err err;
    if (!cJSON_IsObject(body)) {
        snprintf(errbuf, errlen, "the request body must be a JSON object");
        return WYE_ERR_INVAL;
    }
    if (lim && lim->depth_max > 0 && json_depth(body, lim->depth_max) > lim->depth_max) {
        snprintf(errbuf, errlen, "JSON nesting deeper than the limit of %d", lim->depth_max);
        return WYE_ERR_TOOBIG;
    }
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(body, "model");
    if (model && !cJSON_IsNull(model) && (!cJSON_IsString(model) || !model->valuestring[0])) {
        snprintf(errbuf, errlen, "'model' must be a non-empty string");
        return WYE_ERR_INVAL;
    }
    req->model = wye_strdup(cJSON_IsString(model) ? model->valuestring : "auto");
    if (!req->model) {
        return WYE_ERR_NOMEM;
    }
    err = parse_messages(cJSON_GetObjectItemCaseSensitive(body, "messages"), lim, req, errbuf,
                         errlen);
    if (err) {
        return err;
    }
    const cJSON *mt = cJSON_GetObjectItemCaseSensitive(body, "max_completion_tokens");
    if (!mt || cJSON_IsNull(mt)) {
        mt = cJSON_GetObjectItemCaseSensitive(body, "max_tokens");
    }
    if (mt && !cJSON_IsNull(mt)) {
        int hi = lim && lim->max_tokens_max > 0 ? lim->max_tokens_max : 1 << 20;
        if (!cJSON_IsNumber(mt) || mt->valuedouble < 1 || mt->valuedouble > hi ||
            mt->valuedouble != floor(mt->valuedouble)) {
            snprintf(errbuf, errlen, "'max_tokens' must be an integer from 1 to %d", hi);
            return WYE_ERR_INVAL;
        }
        req->max_tokens = (int)mt->valuedouble;
    }
    err = parse_number(body, "temperature", 0, 2, &req->temperature, errbuf, errlen);
    if (!err) {
        err = parse_number(body, "top_p", 0, 1, &req->top_p, errbuf, errlen);
    }
    if (err) {
        return err;
    }
    const cJSON *seed = cJSON_GetObjectItemCaseSensitive(body, "seed");
    if (seed && !cJSON_IsNull(seed)) {
        if (!cJSON_IsNumber(seed) || seed->valuedouble != floor(seed->valuedouble) ||
            fabs(seed->valuedouble) > 9007199254740992.0) {
            snprintf(errbuf, errlen, "'seed' must be an integer");
            return WYE_ERR_INVAL;
        }
        req->has_seed = true;
        req->seed = (int64_t)seed->valuedouble;
    }
    err = parse_stop(cJSON_GetObjectItemCaseSensitive(body, "stop"), req, errbuf, errlen);
    if (err) {
        return err;
    }
    const cJSON *stream = cJSON_GetObjectItemCaseSensitive(body, "stream");
    if (stream && !cJSON_IsNull(stream) && !cJSON_IsBool(stream)) {
        snprintf(errbuf, errlen, "'stream' must be a boolean");
        return WYE_ERR_INVAL;
    }
    req->stream = cJSON_IsTrue(stream);
    const cJSON *so = cJSON_GetObjectItemCaseSensitive(body, "stream_options");
    if (so && !cJSON_IsNull(so)) {
        const cJSON *iu = cJSON_GetObjectItemCaseSensitive(so, "include_usage");
        if (!cJSON_IsObject(so) || (iu && !cJSON_IsBool(iu))) {
            snprintf(errbuf, errlen, "'stream_options' must be an object with a boolean "
                     "'include_usage'");
            return WYE_ERR_INVAL;
        }
        req->include_usage = cJSON_IsTrue(iu);
    }
    const cJSON *tools = cJSON_GetObjectItemCaseSensitive(body, "tools");
    if (tools && !cJSON_IsNull(tools) && !cJSON_IsArray(tools)) {
        snprintf(errbuf, errlen, "'tools' must be an array");
        return WYE_ERR_INVAL;
    }
    req->has_tools = cJSON_IsArray(tools) && cJSON_GetArraySize(tools) > 0;
    const cJSON *rf = cJSON_GetObjectItemCaseSensitive(body, "response_format");
    if (rf && !cJSON_IsNull(rf) && !cJSON_IsObject(rf)) {
        snprintf(errbuf, errlen, "'response_format' must be an object");
        return WYE_ERR_INVAL;
    }
    req->has_response_format = cJSON_IsObject(rf);
    return WYE_OK;
}

enum wye_err wye_chat_req_from_json(cJSON *body, const struct wye_chat_limits *lim,
                                    struct wye_chat_req **out, char *errbuf, size_t errlen)
{
    *out = NULL;
    if (errlen) {
        errbuf[0] = '\0';
    }
    struct wye_chat_req *req = wye_calloc(1, sizeof(*req));
    if (!req) {
        cJSON_Delete(body);
        return WYE_ERR_NOMEM;
    }
    req->body = body;
    req->temperature = -1;
    req->top_p = -1;
    enum wye_err err = parse_fields(body, lim, req, errbuf, errlen);
    if (err) {
        if (err == WYE_ERR_NOMEM && errlen) {
            snprintf(errbuf, errlen, "out of memory while parsing the request");
        }
        wye_chat_req_destroy(req);
        return err;
    }
    *out = req;
    return WYE_OK;
}
