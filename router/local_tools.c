/* The local backend's tool helpers (submit side, any thread, no state): the tagged-union
 * JSON Schema a tool call is constrained to, naming the tool a schema error is about, and the
 * conversation rendered in a model's own tool-call text format. Split from local.c, which
 * uses them to set up a request that offers OpenAI `tools`. */
#include "router/local_tools.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"

/* Rewrites the local references of tool i's parameters (inside node v) for the combined
 * schema: "#/$defs/X" and "#/definitions/X" -> "#/$defs/t<i>_X", "#" -> "#/$defs/t<i>" (*self
 * set). False on NOMEM. */
static bool refs_rewrite(cJSON *v, int i, bool *self)
{
    cJSON *c;
    cJSON_ArrayForEach(c, v)
    {
        if (c->string && strcmp(c->string, "$ref") == 0 && cJSON_IsString(c)) {
            const char *r = c->valuestring, *name = NULL;
            if (strncmp(r, "#/$defs/", 8) == 0) {
                name = r + 8;
            } else if (strncmp(r, "#/definitions/", 14) == 0) {
                name = r + 14;
            }
            char buf[320];
            if (strcmp(r, "#") == 0) {
                *self = true;
                snprintf(buf, sizeof(buf), "#/$defs/t%d", i);
            } else if (name && strlen(name) < 256) {
                snprintf(buf, sizeof(buf), "#/$defs/t%d_%s", i, name);
            } else {
                continue; /* left as is: the compiler names it */
            }
            if (!cJSON_SetValuestring(c, buf)) {
                return false;
            }
        } else if ((cJSON_IsObject(c) || cJSON_IsArray(c)) && !refs_rewrite(c, i, self)) {
            return false;
        }
    }
    return true;
}

/* Moves tool i's parameters' own $defs / definitions into defs (the combined schema's root
 * $defs) under "t<i>_NAME", and the parameters themselves under "t<i>" when they refer to
 * themselves ("#"), so that their references resolve in the combined schema. */
static bool refs_hoist(cJSON *params, int i, cJSON *defs)
{
    bool self = false;
    if (!refs_rewrite(params, i, &self)) {
        return false;
    }
    static const char *const keys[] = {"$defs", "definitions"};
    for (int k = 0; k < 2; k++) {
        cJSON *d = cJSON_DetachItemFromObjectCaseSensitive(params, keys[k]);
        cJSON *e = d ? d->child : NULL;
        while (e) {
            cJSON *next = e->next;
            char name[300];
            snprintf(name, sizeof(name), "t%d_%.256s", i, e->string ? e->string : "");
            cJSON *moved = cJSON_DetachItemViaPointer(d, e);
            if (!cJSON_AddItemToObject(defs, name, moved)) {
                cJSON_Delete(moved);
                cJSON_Delete(d);
                return false;
            }
            e = next;
        }
        cJSON_Delete(d);
    }
    if (self) {
        char name[32];
        snprintf(name, sizeof(name), "t%d", i);
        cJSON *dup = cJSON_Duplicate(params, true);
        if (!dup || !cJSON_AddItemToObject(defs, name, dup)) {
            cJSON_Delete(dup);
            return false;
        }
    }
    return true;
}

enum wye_err rt_local_tools_schema(const cJSON *tools, const char *only, const char *argkey,
                                   char **out, char *errbuf, size_t errlen)
{
    *out = NULL;
    cJSON *alts = cJSON_CreateArray();
    cJSON *defs = cJSON_CreateObject();
    if (!alts || !defs) {
        cJSON_Delete(alts);
        cJSON_Delete(defs);
        snprintf(errbuf, errlen, "out of memory");
        return WYE_ERR_NOMEM;
    }
    enum wye_err err = WYE_OK;
    int i = 0;
    const cJSON *t;
    cJSON_ArrayForEach(t, tools)
    {
        const cJSON *type = cJSON_GetObjectItemCaseSensitive(t, "type");
        const cJSON *fn = cJSON_GetObjectItemCaseSensitive(t, "function");
        const cJSON *name = cJSON_GetObjectItemCaseSensitive(fn, "name");
        const cJSON *params = cJSON_GetObjectItemCaseSensitive(fn, "parameters");
        if (!cJSON_IsObject(t) ||
            (type && !(cJSON_IsString(type) && strcmp(type->valuestring, "function") == 0))) {
            snprintf(errbuf, errlen, "tools[%d] must be an object of type 'function'", i);
            err = WYE_ERR_INVAL;
            break;
        }
        if (!cJSON_IsString(name) || !name->valuestring[0]) {
            snprintf(errbuf, errlen, "tools[%d].function.name must be a non-empty string", i);
            err = WYE_ERR_INVAL;
            break;
        }
        if (params && !cJSON_IsNull(params) && !cJSON_IsObject(params)) {
            snprintf(errbuf, errlen, "tool '%.64s': 'parameters' must be a JSON Schema object",
                     name->valuestring);
            err = WYE_ERR_INVAL;
            break;
        }
        for (const cJSON *u = tools->child; u != t; u = u->next) {
            const cJSON *un = cJSON_GetObjectItemCaseSensitive(
                cJSON_GetObjectItemCaseSensitive(u, "function"), "name");
            if (cJSON_IsString(un) && strcmp(un->valuestring, name->valuestring) == 0) {
                snprintf(errbuf, errlen, "tools[%d]: function name '%.64s' appears twice", i,
                         name->valuestring);
                err = WYE_ERR_INVAL;
            }
        }
        if (err) {
            break;
        }
        i++;
        if (only && strcmp(only, name->valuestring) != 0) {
            continue;
        }
        cJSON *alt = cJSON_CreateObject();
        cJSON *props = cJSON_CreateObject();
        cJSON *nm = cJSON_CreateObject();
        cJSON *args = cJSON_IsObject(params) ? cJSON_Duplicate(params, true)
                                             : cJSON_Parse("{\"type\":\"object\",\"properties\":{},"
                                                           "\"additionalProperties\":false}");
        cJSON *req = cJSON_CreateArray();
        bool ok = alt && props && nm && args && req && refs_hoist(args, i - 1, defs);
        ok = ok && cJSON_AddStringToObject(nm, "const", name->valuestring);
        ok = ok && cJSON_AddItemToObject(props, "name", nm);
        nm = ok ? NULL : nm;
        ok = ok && cJSON_AddItemToObject(props, argkey, args);
        args = ok ? NULL : args;
        ok = ok && cJSON_AddItemToArray(req, cJSON_CreateString("name")) &&
             cJSON_AddItemToArray(req, cJSON_CreateString(argkey));
        ok = ok && cJSON_AddStringToObject(alt, "type", "object");
        ok = ok && cJSON_AddItemToObject(alt, "properties", props);
        props = ok ? NULL : props;
        ok = ok && cJSON_AddItemToObject(alt, "required", req);
        req = ok ? NULL : req;
        ok = ok && cJSON_AddFalseToObject(alt, "additionalProperties");
        ok = ok && cJSON_AddItemToArray(alts, alt);
        alt = ok ? NULL : alt;
        cJSON_Delete(alt);
        cJSON_Delete(props);
        cJSON_Delete(nm);
        cJSON_Delete(args);
        cJSON_Delete(req);
        if (!ok) {
            snprintf(errbuf, errlen, "out of memory");
            err = WYE_ERR_NOMEM;
            break;
        }
    }
    if (!err && cJSON_GetArraySize(alts) > RT_LOCAL_TOOLS_MAX) {
        snprintf(errbuf, errlen, "%d tools; the local model constrains calls to at most %d",
                 cJSON_GetArraySize(alts), RT_LOCAL_TOOLS_MAX);
        err = WYE_ERR_INVAL;
    }
    if (!err && cJSON_GetArraySize(alts) == 0) {
        snprintf(errbuf, errlen, "'tool_choice' names function '%.64s', which is not in 'tools'",
                 only ? only : "");
        err = WYE_ERR_INVAL;
    }
    if (!err) {
        cJSON *root = NULL;
        if (cJSON_GetArraySize(alts) == 1) {
            root = cJSON_DetachItemFromArray(alts, 0);
        } else {
            root = cJSON_CreateObject();
            if (root && !cJSON_AddItemToObject(root, "anyOf", alts)) {
                cJSON_Delete(root);
                root = NULL;
            } else if (root) {
                alts = NULL;
            }
        }
        if (root && defs->child) {
            if (cJSON_AddItemToObject(root, "$defs", defs)) {
                defs = NULL;
            } else {
                cJSON_Delete(root);
                root = NULL;
            }
        }
        *out = root ? cJSON_PrintUnformatted(root) : NULL;
        cJSON_Delete(root);
        if (!*out) {
            snprintf(errbuf, errlen, "out of memory");
            err = WYE_ERR_NOMEM;
        }
    }
    cJSON_Delete(alts);
    cJSON_Delete(defs);
    return err;
}

void rt_local_tools_error(const cJSON *tools, const char *only, const char *msg, char *errbuf,
                          size_t errlen)
{
    const char *p = strstr(msg, "#/anyOf/");
    const char *d = strstr(msg, "#/$defs/t");
    int k = p ? atoi(p + 8) : 0;
    if (d) {
        /* in a hoisted definition: t<i> is the i-th tool of the request */
        only = NULL;
        k = atoi(d + 9);
    }
    const char *name = "?";
    int i = 0;
    const cJSON *t;
    cJSON_ArrayForEach(t, tools)
    {
        const cJSON *nm = cJSON_GetObjectItemCaseSensitive(
            cJSON_GetObjectItemCaseSensitive(t, "function"), "name");
        if (!cJSON_IsString(nm) || (only && strcmp(only, nm->valuestring) != 0)) {
            continue;
        }
        if (i++ == k) {
            name = nm->valuestring;
            break;
        }
    }
    snprintf(errbuf, errlen, "tool '%.64s' parameters: %s", name, msg);
}

enum wye_err rt_local_tools_render(const struct wye_chat_req *req, enum agent_toolfmt fmt,
                                   const cJSON *tools, char **out, char *errbuf, size_t errlen)
{
    *out = NULL;
    const cJSON *bmsgs = cJSON_GetObjectItemCaseSensitive(req->body, "messages");
    cJSON *msgs = cJSON_CreateArray();
    bool ok = msgs != NULL;
    for (size_t i = 0; ok && i < req->n_msgs; i++) {
        const cJSON *bm = cJSON_GetArrayItem(bmsgs, (int)i);
        const cJSON *calls = cJSON_GetObjectItemCaseSensitive(bm, "tool_calls");
        cJSON *m = cJSON_CreateObject();
        ok = m && cJSON_AddStringToObject(m, "role", wye_role_name(req->msgs[i].role)) &&
             cJSON_AddStringToObject(m, "content", req->msgs[i].content);
        if (ok && cJSON_IsArray(calls) && cJSON_GetArraySize(calls) > 0) {
            cJSON *dup = cJSON_Duplicate(calls, true);
            ok = dup && cJSON_AddItemToObject(m, "tool_calls", dup);
            if (!ok) {
                cJSON_Delete(dup);
            }
        }
        if (ok) {
            ok = cJSON_AddItemToArray(msgs, m);
        } else {
            cJSON_Delete(m);
        }
    }
    char *mtext = ok ? cJSON_PrintUnformatted(msgs) : NULL;
    char *ttext = tools ? cJSON_PrintUnformatted(tools) : NULL;
    cJSON_Delete(msgs);
    enum wye_err err = WYE_ERR_NOMEM;
    if (mtext && (!tools || ttext)) {
        err = agent_toolfmt_render(fmt, mtext, ttext, out, errbuf, errlen);
    } else {
        snprintf(errbuf, errlen, "out of memory");
    }
    cJSON_free(mtext);
    cJSON_free(ttext);
    return err;
}

bool rt_local_has_tool_history(const struct wye_chat_req *req)
{
    const cJSON *bmsgs = req->body ? cJSON_GetObjectItemCaseSensitive(req->body, "messages") : NULL;
    const cJSON *m;
    cJSON_ArrayForEach(m, bmsgs)
    {
        if (cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(m, "tool_calls")) > 0) {
            return true;
        }
    }
    for (size_t i = 0; i < req->n_msgs; i++) {
        if (req->msgs[i].role == WYE_ROLE_TOOL) {
            return true;
        }
    }
    return false;
}
