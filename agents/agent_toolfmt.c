/* Prompting local models that call tools in text: the inverse of agent_toolparse. The OpenAI
 * conversation the agent loop keeps (tools array, assistant tool_calls, role "tool" results)
 * is rewritten into plain role/content messages a chat template can render: the tool
 * signatures and calling convention go into the system message (Qwen2.5/Hermes <tools> block,
 * or Llama 3.x JSON function calling), earlier calls become the model's own call text and
 * results become user messages. Pure functions; any thread. */
#include <stdio.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "agents/agents.h"
#include "common/alloc.h"
#include "common/buf.h"

static enum wye_err tools_prompt(enum agent_toolfmt fmt, const cJSON *tools, struct wye_buf *b)
{
    enum wye_err err;
    if (fmt == AGENT_TOOLFMT_HERMES) {
        err = wye_buf_append_str(b, "\n\n# Tools\n\nYou may call one or more functions to "
                                    "assist with the user query.\n\nYou are provided with "
                                    "function signatures within <tools></tools> XML tags:\n"
                                    "<tools>");
    } else {
        err = wye_buf_append_str(b, "\n\nYou have access to the following functions. To call "
                                    "a function, respond with only a JSON object of the form "
                                    "{\"name\": function name, \"parameters\": dictionary of "
                                    "argument name and its value}. Do not use variables.\n");
    }
    const cJSON *t;
    cJSON_ArrayForEach(t, tools)
    {
        const cJSON *f = cJSON_GetObjectItemCaseSensitive(t, "function");
        char *s = cJSON_PrintUnformatted(f ? f : t);
        if (!s) {
            return WYE_ERR_NOMEM;
        }
        if (!err) {
            err = wye_buf_append_str(b, "\n");
        }
        if (!err) {
            err = wye_buf_append_str(b, s);
        }
        cJSON_free(s);
    }
    if (!err && fmt == AGENT_TOOLFMT_HERMES) {
        err = wye_buf_append_str(b, "\n</tools>\n\nFor each function call, return a json object "
                                    "with function name and arguments within "
                                    "<tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": "
                                    "<function-name>, \"arguments\": <args-json-object>}\n"
                                    "</tool_call>");
    }
    return err;
}

/* The text a model in fmt writes for the calls of one assistant message. */
static enum wye_err calls_text(enum agent_toolfmt fmt, const cJSON *calls, struct wye_buf *b)
{
    enum wye_err err = WYE_OK;
    bool first = true;
    const cJSON *c;
    cJSON_ArrayForEach(c, calls)
    {
        const cJSON *f = cJSON_GetObjectItemCaseSensitive(c, "function");
        const cJSON *nm = cJSON_GetObjectItemCaseSensitive(f, "name");
        const cJSON *args = cJSON_GetObjectItemCaseSensitive(f, "arguments");
        cJSON *o = cJSON_CreateObject();
        cJSON *a = cJSON_IsString(args) ? cJSON_Parse(args->valuestring) : NULL;
        if (!o) {
            cJSON_Delete(a);
            return WYE_ERR_NOMEM;
        }
        if (!a) {
            a = cJSON_CreateObject();
        }
        if (!a || !cJSON_AddStringToObject(o, "name", cJSON_IsString(nm) ? nm->valuestring : "") ||
            !cJSON_AddItemToObject(o, fmt == AGENT_TOOLFMT_HERMES ? "arguments" : "parameters",
                                   a)) {
            cJSON_Delete(a);
            cJSON_Delete(o);
            return WYE_ERR_NOMEM;
        }
        char *s = cJSON_PrintUnformatted(o);
        cJSON_Delete(o);
        if (!s) {
            return WYE_ERR_NOMEM;
        }
        if (fmt == AGENT_TOOLFMT_HERMES) {
            err = wye_buf_printf(b, "%s<tool_call>\n%s\n</tool_call>", first ? "" : "\n", s);
        } else {
            err = wye_buf_printf(b, "%s%s", first ? "" : "; ", s);
        }
        cJSON_free(s);
        first = false;
        if (err) {
            return err;
        }
    }
    return err;
}

static enum wye_err add_msg(cJSON *out, const char *role, const char *content)
{
    cJSON *m = cJSON_CreateObject();
    if (!m || !cJSON_AddStringToObject(m, "role", role) ||
        !cJSON_AddStringToObject(m, "content", content)) {
        cJSON_Delete(m);
        return WYE_ERR_NOMEM;
    }
    cJSON_AddItemToArray(out, m);
    return WYE_OK;
}

enum wye_err agent_toolfmt_render(enum agent_toolfmt fmt, const char *messages_json,
                                  const char *tools_json, char **out, char *errbuf, size_t errlen)
{
    *out = NULL;
    if (fmt != AGENT_TOOLFMT_HERMES && fmt != AGENT_TOOLFMT_LLAMA3) {
        snprintf(errbuf, errlen, "only text tool formats are rendered");
        return WYE_ERR_INVAL;
    }
    cJSON *msgs = cJSON_Parse(messages_json ? messages_json : "");
    cJSON *tools = tools_json ? cJSON_Parse(tools_json) : NULL;
    cJSON *res = cJSON_CreateArray();
    struct wye_buf b;
    wye_buf_init(&b, 4u << 20);
    enum wye_err err = WYE_OK;
    if (!cJSON_IsArray(msgs) || (tools_json && !cJSON_IsArray(tools))) {
        snprintf(errbuf, errlen, "messages and tools must be JSON arrays");
        err = WYE_ERR_PARSE;
        goto out;
    }
    if (!res) {
        err = WYE_ERR_NOMEM;
        goto out;
    }
    /* the system message, with the tools appended */
    const cJSON *m0 = cJSON_GetArrayItem(msgs, 0);
    const cJSON *r0 = cJSON_GetObjectItemCaseSensitive(m0, "role");
    bool has_sys = cJSON_IsString(r0) && strcmp(r0->valuestring, "system") == 0;
    const cJSON *c0 = cJSON_GetObjectItemCaseSensitive(m0, "content");
    err = wye_buf_append_str(&b, has_sys && cJSON_IsString(c0) ? c0->valuestring
                                                               : "You are a helpful assistant.");
    if (!err && cJSON_GetArraySize(tools) > 0) {
        err = tools_prompt(fmt, tools, &b);
    }
    if (!err) {
        err = add_msg(res, "system", b.data ? b.data : "");
    }
    const cJSON *m;
    int i = 0;
    cJSON_ArrayForEach(m, msgs)
    {
        if (err) {
            break;
        }
        if (i++ == 0 && has_sys) {
            continue;
        }
        const cJSON *role = cJSON_GetObjectItemCaseSensitive(m, "role");
        const cJSON *content = cJSON_GetObjectItemCaseSensitive(m, "content");
        const cJSON *calls = cJSON_GetObjectItemCaseSensitive(m, "tool_calls");
        const char *text = cJSON_IsString(content) ? content->valuestring : "";
        if (!cJSON_IsString(role)) {
            snprintf(errbuf, errlen, "messages[%d] has no role", i - 1);
            err = WYE_ERR_PARSE;
            break;
        }
        wye_buf_reset(&b);
        if (strcmp(role->valuestring, "assistant") == 0 && cJSON_GetArraySize(calls) > 0) {
            err = wye_buf_append_str(&b, text);
            if (!err && text[0]) {
                err = wye_buf_append_str(&b, "\n");
            }
            if (!err) {
                err = calls_text(fmt, calls, &b);
            }
            if (!err) {
                err = add_msg(res, "assistant", b.data ? b.data : "");
            }
        } else if (strcmp(role->valuestring, "tool") == 0) {
            if (fmt == AGENT_TOOLFMT_HERMES) {
                err = wye_buf_printf(&b, "<tool_response>\n%s\n</tool_response>", text);
            } else {
                err = wye_buf_printf(&b, "Function result: %s", text);
            }
            if (!err) {
                err = add_msg(res, "user", b.data ? b.data : "");
            }
        } else {
            err = add_msg(res, role->valuestring, text);
        }
    }
    if (!err) {
        char *s = cJSON_PrintUnformatted(res);
        *out = s ? wye_strdup(s) : NULL;
        cJSON_free(s);
        err = *out ? WYE_OK : WYE_ERR_NOMEM;
    }
out:
    if (err == WYE_ERR_NOMEM) {
        snprintf(errbuf, errlen, "out of memory");
    }
    wye_buf_cleanup(&b);
    cJSON_Delete(res);
    cJSON_Delete(tools);
    cJSON_Delete(msgs);
    return err;
}
