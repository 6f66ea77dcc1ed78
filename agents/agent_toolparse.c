/* Tool calls out of a model's answer. Remote models stream OpenAI tool_calls deltas, which are
 * assembled by index; local models write calls into their text in their own format:
 * Qwen2.5/Hermes `<tool_call>{"name":..,"arguments":{..}}</tool_call>` (one or several) and
 * Llama-3.x `{"name":..,"parameters":{..}}` (possibly after <|python_tag|>, several separated by
 * ';' or newlines). Both end up as one OpenAI-style array so the loop handles a single shape.
 * Malformed calls produce PARSE with a message the agent loop hands back to the model.
 * Pure functions; any thread. */
#include <stdio.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "agents/agents.h"
#include "common/alloc.h"

#define TOOLCALLS_MAX 16

/* Appends {"id","type","function":{"name","arguments":"<json>"}} built from name + args. */
static enum wye_err add_call(cJSON *arr, const char *name, const cJSON *args, int idx)
{
    char id[32];
    snprintf(id, sizeof(id), "call_%d", idx);
    char *a = args ? cJSON_PrintUnformatted(args) : NULL;
    cJSON *c = cJSON_CreateObject();
    cJSON *f = cJSON_CreateObject();
    if (!c || !f || !cJSON_AddStringToObject(c, "id", id) ||
        !cJSON_AddStringToObject(c, "type", "function") ||
        !cJSON_AddStringToObject(f, "name", name) ||
        !cJSON_AddStringToObject(f, "arguments", a ? a : "{}")) {
        cJSON_Delete(c);
        cJSON_Delete(f);
        cJSON_free(a);
        return WYE_ERR_NOMEM;
    }
    cJSON_free(a);
    if (!cJSON_AddItemToObject(c, "function", f)) {
        cJSON_Delete(c);
        cJSON_Delete(f);
        return WYE_ERR_NOMEM;
    }
    if (!cJSON_AddItemToArray(arr, c)) {
        cJSON_Delete(c);
        return WYE_ERR_NOMEM;
    }
    return WYE_OK;
}

/* One call object {"name":..,"<argkey>":{..}} (argkey "arguments" or "parameters"). */
static enum wye_err one_call(cJSON *arr, const char *s, size_t n, const char *what, int idx,
                             char *errbuf, size_t errlen)
{
    const char *end = NULL;
    cJSON *o = cJSON_ParseWithLengthOpts(s, n, &end, false);
    if (!o) {
        snprintf(errbuf, errlen, "tool call %d is not valid JSON (%s)", idx + 1, what);
        return WYE_ERR_PARSE;
    }
    while (end && (size_t)(end - s) < n && strchr(" \t\r\n", *end)) {
        end++;
    }
    enum wye_err err = WYE_OK;
    const cJSON *name = cJSON_GetObjectItemCaseSensitive(o, "name");
    const cJSON *args = cJSON_GetObjectItemCaseSensitive(o, "arguments");
    if (!args) {
        args = cJSON_GetObjectItemCaseSensitive(o, "parameters");
    }
    if (end && (size_t)(end - s) < n) {
        snprintf(errbuf, errlen, "tool call %d has text after its JSON object (%s)", idx + 1, what);
        err = WYE_ERR_PARSE;
    } else if (!cJSON_IsObject(o) || !cJSON_IsString(name) || !name->valuestring[0]) {
        snprintf(errbuf, errlen, "tool call %d needs a \"name\" string (%s)", idx + 1, what);
        err = WYE_ERR_PARSE;
    } else if (args && !cJSON_IsObject(args)) {
        /* some models put the arguments as a JSON string */
        cJSON *inner = cJSON_IsString(args) ? cJSON_Parse(args->valuestring) : NULL;
        if (!cJSON_IsObject(inner)) {
            snprintf(errbuf, errlen, "tool call %d: the arguments of '%s' must be a JSON object",
                     idx + 1, name->valuestring);
            err = WYE_ERR_PARSE;
        } else {
            err = add_call(arr, name->valuestring, inner, idx);
        }
        cJSON_Delete(inner);
    } else {
        err = add_call(arr, name->valuestring, args, idx);
    }
    cJSON_Delete(o);
    return err;
}

static enum wye_err finish(cJSON *arr, struct wye_buf *content, char **calls_json,
                           char **content_out, enum wye_err err)
{
    if (!err && cJSON_GetArraySize(arr) > 0) {
        char *p = cJSON_PrintUnformatted(arr);
        *calls_json = p ? wye_strdup(p) : NULL;
        cJSON_free(p);
        if (!*calls_json) {
            err = WYE_ERR_NOMEM;
        }
    }
    if (!err) {
        *content_out = wye_strndup(content->data ? content->data : "", content->len);
        if (!*content_out) {
            err = WYE_ERR_NOMEM;
        }
    }
    if (err) {
        wye_free(*calls_json);
        *calls_json = NULL;
    }
    cJSON_Delete(arr);
    wye_buf_cleanup(content);
    return err;
}

static enum wye_err parse_hermes(const char *text, cJSON *arr, struct wye_buf *content,
                                 char *errbuf, size_t errlen)
{
    static const char open[] = "<tool_call>", close[] = "</tool_call>";
    const char *p = text;
    int idx = 0;
    for (;;) {
        const char *o = strstr(p, open);
        if (!o) {
            return wye_buf_append_str(content, p);
        }
        enum wye_err err = wye_buf_append(content, p, (size_t)(o - p));
        if (err) {
            return err;
        }
        const char *body = o + sizeof(open) - 1;
        const char *c = strstr(body, close);
        if (!c) {
            snprintf(errbuf, errlen, "tool call %d: <tool_call> without </tool_call>", idx + 1);
            return WYE_ERR_PARSE;
        }
        if (idx >= TOOLCALLS_MAX) {
            snprintf(errbuf, errlen, "more than %d tool calls in one answer", TOOLCALLS_MAX);
            return WYE_ERR_PARSE;
        }
        err = one_call(arr, body, (size_t)(c - body), "<tool_call>", idx, errbuf, errlen);
        if (err) {
            return err;
        }
        idx++;
        p = c + sizeof(close) - 1;
    }
}

static enum wye_err parse_llama3(const char *text, cJSON *arr, struct wye_buf *content,
                                 char *errbuf, size_t errlen)
{
    static const char tag[] = "<|python_tag|>";
    const char *t = strstr(text, tag);
    const char *p = text;
    if (t) {
        enum wye_err err = wye_buf_append(content, text, (size_t)(t - text));
        if (err) {
            return err;
        }
        p = t + sizeof(tag) - 1;
    } else {
        while (*p && strchr(" \t\r\n", *p)) {
            p++;
        }
        if (*p != '{') {
            return wye_buf_append_str(content, text); /* plain answer */
        }
    }
    int idx = 0;
    while (*p) {
        while (*p && strchr(" \t\r\n;", *p)) {
            p++;
        }
        if (!*p || strncmp(p, "<|eom_id|>", 10) == 0 || strncmp(p, "<|eot_id|>", 10) == 0) {
            break;
        }
        if (*p != '{') {
            snprintf(errbuf, errlen, "tool call %d: expected a JSON object, got '%.20s'", idx + 1,
                     p);
            return WYE_ERR_PARSE;
        }
        if (idx >= TOOLCALLS_MAX) {
            snprintf(errbuf, errlen, "more than %d tool calls in one answer", TOOLCALLS_MAX);
            return WYE_ERR_PARSE;
        }
        const char *end = NULL;
        cJSON *o = cJSON_ParseWithOpts(p, &end, false);
        if (!o || !end) {
            cJSON_Delete(o);
            snprintf(errbuf, errlen, "tool call %d is not valid JSON (llama3)", idx + 1);
            return WYE_ERR_PARSE;
        }
        cJSON_Delete(o);
        enum wye_err err = one_call(arr, p, (size_t)(end - p), "llama3", idx, errbuf, errlen);
        if (err) {
            return err;
        }
        idx++;
        p = end;
    }
    return WYE_OK;
}

enum wye_err agent_toolparse(enum agent_toolfmt fmt, const char *text, char **calls_json,
                             char **content, char *errbuf, size_t errlen)
{
    *calls_json = NULL;
    *content = NULL;
    cJSON *arr = cJSON_CreateArray();
    struct wye_buf b;
    wye_buf_init(&b, 1 << 20);
    if (!arr) {
        return finish(arr, &b, calls_json, content, WYE_ERR_NOMEM);
    }
    enum wye_err err = WYE_OK;
    if (fmt == AGENT_TOOLFMT_HERMES) {
        err = parse_hermes(text ? text : "", arr, &b, errbuf, errlen);
    } else if (fmt == AGENT_TOOLFMT_LLAMA3) {
        err = parse_llama3(text ? text : "", arr, &b, errbuf, errlen);
    } else {
        err = wye_buf_append_str(&b, text ? text : "");
    }
    return finish(arr, &b, calls_json, content, err);
}

/* Merges one delta element into out[index]. */
static enum wye_err merge_delta(cJSON *out, const cJSON *d, char *errbuf, size_t errlen)
{
    const cJSON *ix = cJSON_GetObjectItemCaseSensitive(d, "index");
    int i = cJSON_IsNumber(ix) ? ix->valueint : cJSON_GetArraySize(out);
    if (i < 0 || i >= TOOLCALLS_MAX) {
        snprintf(errbuf, errlen, "tool call index %d out of range", i);
        return WYE_ERR_PARSE;
    }
    while (cJSON_GetArraySize(out) <= i) {
        cJSON *c = cJSON_CreateObject();
        cJSON *f = cJSON_CreateObject();
        if (!c || !f || !cJSON_AddStringToObject(c, "id", "") ||
            !cJSON_AddStringToObject(c, "type", "function") ||
            !cJSON_AddStringToObject(f, "name", "") ||
            !cJSON_AddStringToObject(f, "arguments", "")) {
            cJSON_Delete(c);
            cJSON_Delete(f);
            return WYE_ERR_NOMEM;
        }
        if (!cJSON_AddItemToObject(c, "function", f)) {
            cJSON_Delete(c);
            cJSON_Delete(f);
            return WYE_ERR_NOMEM;
        }
        cJSON_AddItemToArray(out, c);
    }
    cJSON *c = cJSON_GetArrayItem(out, i);
    cJSON *f = cJSON_GetObjectItemCaseSensitive(c, "function");
    const cJSON *id = cJSON_GetObjectItemCaseSensitive(d, "id");
    if (cJSON_IsString(id) && id->valuestring[0] &&
        !cJSON_SetValuestring(cJSON_GetObjectItemCaseSensitive(c, "id"), id->valuestring)) {
        return WYE_ERR_NOMEM;
    }
    const cJSON *df = cJSON_GetObjectItemCaseSensitive(d, "function");
    const char *keys[] = {"name", "arguments"};
    for (int k = 0; k < 2 && cJSON_IsObject(df); k++) {
        const cJSON *piece = cJSON_GetObjectItemCaseSensitive(df, keys[k]);
        if (!cJSON_IsString(piece)) {
            continue;
        }
        const char *old = cJSON_GetObjectItemCaseSensitive(f, keys[k])->valuestring;
        size_t n = strlen(old) + strlen(piece->valuestring) + 1;
        if (n > (1u << 20)) {
            snprintf(errbuf, errlen, "tool call %d is larger than 1 MiB", i);
            return WYE_ERR_PARSE;
        }
        char *cat = wye_malloc(n);
        if (!cat) {
            return WYE_ERR_NOMEM;
        }
        snprintf(cat, n, "%s%s", old, piece->valuestring);
        /* SetValuestring keeps the old value when it cannot allocate (Replace would not) */
        char *set = cJSON_SetValuestring(cJSON_GetObjectItemCaseSensitive(f, keys[k]), cat);
        wye_free(cat);
        if (!set) {
            return WYE_ERR_NOMEM;
        }
    }
    return WYE_OK;
}

enum wye_err agent_toolcalls_assemble(const char *deltas, char **calls_json, char *errbuf,
                                      size_t errlen)
{
    *calls_json = NULL;
    cJSON *out = cJSON_CreateArray();
    if (!out) {
        return WYE_ERR_NOMEM;
    }
    enum wye_err err = WYE_OK;
    const char *p = deltas ? deltas : "";
    while (!err) {
        while (*p && strchr(" \t\r\n", *p)) {
            p++;
        }
        if (!*p) {
            break;
        }
        const char *end = NULL;
        cJSON *arr = cJSON_ParseWithOpts(p, &end, false);
        if (!cJSON_IsArray(arr) || !end) {
            cJSON_Delete(arr);
            snprintf(errbuf, errlen, "a tool_calls delta is not a JSON array");
            err = WYE_ERR_PARSE;
            break;
        }
        const cJSON *d;
        cJSON_ArrayForEach(d, arr)
        {
            if (!err) {
                err = merge_delta(out, d, errbuf, errlen);
            }
        }
        cJSON_Delete(arr);
        p = end;
    }
    int i = 0;
    const cJSON *c;
    cJSON_ArrayForEach(c, out)
    {
        const cJSON *f = cJSON_GetObjectItemCaseSensitive(c, "function");
        if (!err && !cJSON_GetObjectItemCaseSensitive(f, "name")->valuestring[0]) {
            snprintf(errbuf, errlen, "tool call %d has no function name", i);
            err = WYE_ERR_PARSE;
        }
        const cJSON *id = cJSON_GetObjectItemCaseSensitive(c, "id");
        if (!err && !id->valuestring[0]) {
            char idb[32];
            snprintf(idb, sizeof(idb), "call_%d", i);
            if (!cJSON_SetValuestring((cJSON *)id, idb)) {
                err = WYE_ERR_NOMEM;
            }
        }
        i++;
    }
    if (!err && cJSON_GetArraySize(out) > 0) {
        char *s = cJSON_PrintUnformatted(out);
        *calls_json = s ? wye_strdup(s) : NULL;
        cJSON_free(s);
        err = *calls_json ? WYE_OK : WYE_ERR_NOMEM;
    }
    cJSON_Delete(out);
    return err;
}
