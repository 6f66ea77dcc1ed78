/* Tool argument validation against the JSON Schema subset tools declare: type, properties,
 * required, enum, items, minimum/maximum, minLength/maxLength, minItems/maxItems and
 * additionalProperties (false or a schema). Messages name the argument by its path
 * ("argument 'order_id' must be a string") because they go back to the model verbatim.
 * Pure functions; any thread. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "agents/agents.h"

#define SCHEMA_DEPTH_MAX 32

static bool type_is(const cJSON *v, const char *t)
{
    if (strcmp(t, "string") == 0) {
        return cJSON_IsString(v);
    }
    if (strcmp(t, "number") == 0) {
        return cJSON_IsNumber(v);
    }
    if (strcmp(t, "integer") == 0) {
        return cJSON_IsNumber(v) && isfinite(v->valuedouble) &&
               floor(v->valuedouble) == v->valuedouble;
    }
    if (strcmp(t, "boolean") == 0) {
        return cJSON_IsBool(v);
    }
    if (strcmp(t, "object") == 0) {
        return cJSON_IsObject(v);
    }
    if (strcmp(t, "array") == 0) {
        return cJSON_IsArray(v);
    }
    if (strcmp(t, "null") == 0) {
        return cJSON_IsNull(v);
    }
    return true; /* unknown type names do not constrain */
}

static const char *an(const char *t)
{
    return (t[0] == 'a' || t[0] == 'i' || t[0] == 'o') ? "an" : "a";
}

static void name_of(char *dst, size_t n, const char *path)
{
    if (path[0]) {
        snprintf(dst, n, "argument '%s'", path);
    } else {
        snprintf(dst, n, "the arguments");
    }
}

static enum wye_err check(const cJSON *s, const cJSON *v, const char *path, int depth, char *errbuf,
                          size_t errlen)
{
    char who[200];
    name_of(who, sizeof(who), path);
    if (depth > SCHEMA_DEPTH_MAX) {
        snprintf(errbuf, errlen, "%s nest deeper than %d levels", who, SCHEMA_DEPTH_MAX);
        return WYE_ERR_INVAL;
    }
    if (!cJSON_IsObject(s)) {
        return WYE_OK; /* true / {} / anything else: no constraint */
    }
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(s, "type");
    if (cJSON_IsString(type) && !type_is(v, type->valuestring)) {
        snprintf(errbuf, errlen, "%s must be %s %s", who, an(type->valuestring), type->valuestring);
        return WYE_ERR_INVAL;
    }
    if (cJSON_IsArray(type)) {
        bool ok = false;
        const cJSON *t;
        cJSON_ArrayForEach(t, type)
        {
            ok = ok || (cJSON_IsString(t) && type_is(v, t->valuestring));
        }
        if (!ok) {
            char *ts = cJSON_PrintUnformatted(type);
            snprintf(errbuf, errlen, "%s must be one of the types %s", who, ts ? ts : "?");
            cJSON_free(ts);
            return WYE_ERR_INVAL;
        }
    }
    const cJSON *en = cJSON_GetObjectItemCaseSensitive(s, "enum");
    if (cJSON_IsArray(en)) {
        bool ok = false;
        const cJSON *e;
        cJSON_ArrayForEach(e, en)
        {
            ok = ok || cJSON_Compare(e, v, true);
        }
        if (!ok) {
            char *es = cJSON_PrintUnformatted(en);
            snprintf(errbuf, errlen, "%s must be one of %s", who, es ? es : "the allowed values");
            cJSON_free(es);
            return WYE_ERR_INVAL;
        }
    }
    if (cJSON_IsNumber(v)) {
        const cJSON *mn = cJSON_GetObjectItemCaseSensitive(s, "minimum");
        const cJSON *mx = cJSON_GetObjectItemCaseSensitive(s, "maximum");
        if (cJSON_IsNumber(mn) && v->valuedouble < mn->valuedouble) {
            snprintf(errbuf, errlen, "%s must be at least %g", who, mn->valuedouble);
            return WYE_ERR_INVAL;
        }
        if (cJSON_IsNumber(mx) && v->valuedouble > mx->valuedouble) {
            snprintf(errbuf, errlen, "%s must be at most %g", who, mx->valuedouble);
            return WYE_ERR_INVAL;
        }
    }
    if (cJSON_IsString(v)) {
        const cJSON *mn = cJSON_GetObjectItemCaseSensitive(s, "minLength");
        const cJSON *mx = cJSON_GetObjectItemCaseSensitive(s, "maxLength");
        size_t n = strlen(v->valuestring);
        if (cJSON_IsNumber(mn) && (double)n < mn->valuedouble) {
            snprintf(errbuf, errlen, "%s must be at least %g characters long", who,
                     mn->valuedouble);
            return WYE_ERR_INVAL;
        }
        if (cJSON_IsNumber(mx) && (double)n > mx->valuedouble) {
            snprintf(errbuf, errlen, "%s must be at most %g characters long", who, mx->valuedouble);
            return WYE_ERR_INVAL;
        }
    }
    if (cJSON_IsArray(v)) {
        const cJSON *mn = cJSON_GetObjectItemCaseSensitive(s, "minItems");
        const cJSON *mx = cJSON_GetObjectItemCaseSensitive(s, "maxItems");
        double n = cJSON_GetArraySize(v);
        if (cJSON_IsNumber(mn) && n < mn->valuedouble) {
            snprintf(errbuf, errlen, "%s must have at least %g items", who, mn->valuedouble);
            return WYE_ERR_INVAL;
        }
        if (cJSON_IsNumber(mx) && n > mx->valuedouble) {
            snprintf(errbuf, errlen, "%s must have at most %g items", who, mx->valuedouble);
            return WYE_ERR_INVAL;
        }
        const cJSON *items = cJSON_GetObjectItemCaseSensitive(s, "items");
        int i = 0;
        const cJSON *it;
        cJSON_ArrayForEach(it, v)
        {
            char sub[200];
            snprintf(sub, sizeof(sub), "%s[%d]", path[0] ? path : "arguments", i++);
            enum wye_err err = check(items, it, sub, depth + 1, errbuf, errlen);
            if (err) {
                return err;
            }
        }
    }
    if (cJSON_IsObject(v)) {
        const cJSON *props = cJSON_GetObjectItemCaseSensitive(s, "properties");
        const cJSON *req = cJSON_GetObjectItemCaseSensitive(s, "required");
        const cJSON *r;
        cJSON_ArrayForEach(r, req)
        {
            if (cJSON_IsString(r) && !cJSON_GetObjectItemCaseSensitive(v, r->valuestring)) {
                snprintf(errbuf, errlen, "argument '%s%s%s' is required", path, path[0] ? "." : "",
                         r->valuestring);
                return WYE_ERR_INVAL;
            }
        }
        const cJSON *addl = cJSON_GetObjectItemCaseSensitive(s, "additionalProperties");
        const cJSON *m;
        cJSON_ArrayForEach(m, v)
        {
            char sub[200];
            snprintf(sub, sizeof(sub), "%s%s%s", path, path[0] ? "." : "", m->string);
            const cJSON *ps =
                cJSON_IsObject(props) ? cJSON_GetObjectItemCaseSensitive(props, m->string) : NULL;
            if (!ps && cJSON_IsFalse(addl)) {
                snprintf(errbuf, errlen, "argument '%s' is not allowed", sub);
                return WYE_ERR_INVAL;
            }
            enum wye_err err = check(ps ? ps : addl, m, sub, depth + 1, errbuf, errlen);
            if (err) {
                return err;
            }
        }
    }
    return WYE_OK;
}

enum wye_err agent_schema_check(const char *schema_json, const char *args_json, char *errbuf,
                                size_t errlen)
{
    cJSON *v = cJSON_Parse(args_json ? args_json : "{}");
    if (!v) {
        snprintf(errbuf, errlen, "the arguments are not valid JSON");
        return WYE_ERR_PARSE;
    }
    cJSON *s = schema_json ? cJSON_Parse(schema_json) : NULL;
    enum wye_err err = check(s, v, "", 0, errbuf, errlen);
    cJSON_Delete(s);
    cJSON_Delete(v);
    return err;
}
