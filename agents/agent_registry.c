/* The registry: every *.lua file of the agents directory, run once in "declare" mode in a
 * throwaway sandbox state to collect its tool{}, agent{} and workflow() declarations. A file
 * that fails (unreadable, syntax, runtime error, bad declaration, duplicate name) is recorded as
 * "file:line: message"; on a reload the previous registry's version of that file (its source,
 * declared again) keeps serving, else the file is skipped. A registry is immutable and
 * refcounted: a reload builds a new one while runs in flight keep theirs. Loading runs on the
 * caller's thread; ref/unref on any thread. */
#include <dirent.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <cjson/cJSON.h>

#include "agents/agent_internal.h"
#include "common/alloc.h"
#include "common/log.h"
#include "lua/lua_sandbox.h"

#define AGENT_FILES_MAX 256
#define AGENT_FILE_BYTES_MAX (512u << 10)

static char *read_file(const char *path, size_t cap, size_t *len, char *errbuf, size_t errlen)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        int e = errno;
        char eb[128];
        snprintf(errbuf, errlen, "cannot open: %s", strerror_r(e, eb, sizeof(eb)));
        return NULL;
    }
    char *buf = wye_malloc(cap + 1);
    size_t n = buf ? fread(buf, 1, cap + 1, f) : 0;
    fclose(f);
    if (!buf) {
        snprintf(errbuf, errlen, "out of memory");
        return NULL;
    }
    if (n > cap) {
        snprintf(errbuf, errlen, "larger than %zu bytes", cap);
        wye_free(buf);
        return NULL;
    }
    buf[n] = '\0';
    *len = n;
    return buf;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static char *dup_str(const cJSON *o, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsString(v) ? wye_strdup(v->valuestring) : NULL;
}

static double num(const cJSON *o, const char *key, double dflt)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsNumber(v) ? v->valuedouble : dflt;
}

static bool name_taken(const struct agent_registry *r, const char *name)
{
    return agent_registry_tool(r, name) || agent_registry_decl(r, name);
}

static void add_error(struct agent_registry *r, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void add_error(struct agent_registry *r, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    WYE_WARN("agents: %s", msg);
    char **e = wye_realloc(r->errors, (r->n_errors + 1) * sizeof(*e));
    if (!e) {
        return;
    }
    r->errors = e;
    e[r->n_errors] = wye_strdup(msg);
    if (e[r->n_errors]) {
        r->n_errors++;
    }
}

/* Adds the declarations of one file (decls: the JSON array the prelude returned). INVAL (with
 * why, nothing added) when a name is already taken. */
static enum wye_err add_decls(struct agent_registry *r, const struct agent_file *f,
                              const cJSON *arr, char *why, size_t whylen)
{
    const cJSON *d;
    /* a duplicate across files rejects the whole later file */
    cJSON_ArrayForEach(d, arr)
    {
        const cJSON *name = cJSON_GetObjectItemCaseSensitive(d, "name");
        if (!cJSON_IsString(name)) {
            continue;
        }
        if (name_taken(r, name->valuestring)) {
            snprintf(why, whylen, "%s: '%s' is already declared by another file", f->name,
                     name->valuestring);
            return WYE_ERR_INVAL;
        }
    }
    cJSON_ArrayForEach(d, arr)
    {
        const char *kind = cJSON_GetObjectItemCaseSensitive(d, "kind")->valuestring;
        if (strcmp(kind, "tool") == 0) {
            struct agent_tool *t = wye_realloc(r->tools, (r->n_tools + 1) * sizeof(*t));
            if (!t) {
                return WYE_ERR_NOMEM;
            }
            r->tools = t;
            t = &r->tools[r->n_tools++];
            memset(t, 0, sizeof(*t));
            t->file = f;
            t->name = dup_str(d, "name");
            t->description = dup_str(d, "description");
            t->allow_hosts = dup_str(d, "allow_hosts");
            const cJSON *p = cJSON_GetObjectItemCaseSensitive(d, "parameters");
            char *ps = p ? cJSON_PrintUnformatted(p) : NULL;
            t->parameters = wye_strdup(ps ? ps : "{\"type\":\"object\",\"properties\":{}}");
            cJSON_free(ps);
            if (!t->name || !t->parameters) {
                return WYE_ERR_NOMEM;
            }
            continue;
        }
        struct agent_decl *a = wye_realloc(r->decls, (r->n_decls + 1) * sizeof(*a));
        if (!a) {
            return WYE_ERR_NOMEM;
        }
        r->decls = a;
        a = &r->decls[r->n_decls++];
        memset(a, 0, sizeof(*a));
        a->file = f;
        a->is_workflow = strcmp(kind, "workflow") == 0;
        a->name = dup_str(d, "name");
        a->system = dup_str(d, "system");
        a->model = dup_str(d, "model");
        if (!a->model) {
            a->model = wye_strdup("auto");
        }
        a->allow_hosts = dup_str(d, "allow_hosts");
        a->max_steps = (int)num(d, "max_steps", 8);
        a->max_cost_usd = num(d, "max_cost_usd", 0);
        a->timeout_s = num(d, "timeout_s", a->is_workflow ? 120 : 60);
        const cJSON *tl = cJSON_GetObjectItemCaseSensitive(d, "tools");
        int n = cJSON_IsArray(tl) ? cJSON_GetArraySize(tl) : 0;
        if (n > 0) {
            a->tools = wye_calloc((size_t)n, sizeof(char *));
            if (!a->tools) {
                return WYE_ERR_NOMEM;
            }
            const cJSON *tn;
            cJSON_ArrayForEach(tn, tl)
            {
                if (cJSON_IsString(tn)) {
                    a->tools[a->n_tools++] = wye_strdup(tn->valuestring);
                }
            }
        }
        if (!a->name || !a->model) {
            return WYE_ERR_NOMEM;
        }
        if (a->max_steps < 1 || a->max_steps > 100) {
            a->max_steps = a->max_steps < 1 ? 1 : 100;
        }
    }
    return WYE_OK;
}

/* Runs the prelude in declare mode for f; returns the declarations array, or NULL with why
 * set. Host calls are refused while loading. */
static cJSON *declare(struct wlua_state *st, const struct agent_file *f, char *why, size_t whylen)
{
    snprintf(why, whylen, "%s: out of memory while loading", f->name);
    cJSON *args = cJSON_CreateObject();
    if (!args || !cJSON_AddStringToObject(args, "mode", "declare") ||
        !cJSON_AddStringToObject(args, "file", f->name) ||
        !cJSON_AddStringToObject(args, "src", f->src)) {
        cJSON_Delete(args);
        return NULL;
    }
    char *aj = cJSON_PrintUnformatted(args);
    cJSON_Delete(args);
    if (!aj) {
        return NULL;
    }
    struct wlua_run *run = NULL;
    enum wlua_status s =
        wlua_run_start(st, "agents", agent_prelude_lua, agent_prelude_len, NULL, aj, &run);
    cJSON_free(aj);
    for (int i = 0; s == WLUA_YIELDED && i < 100; i++) {
        const char *name = NULL, *pa = NULL;
        wlua_run_pending(run, &name, &pa);
        char msg[128];
        snprintf(msg, sizeof(msg), "not available while the file loads (call it inside run)");
        s = wlua_run_resume(run, NULL, msg);
    }
    cJSON *out = NULL;
    if (s == WLUA_DONE) {
        out = cJSON_Parse(wlua_run_result(run));
    } else if (s == WLUA_ERROR) {
        snprintf(why, whylen, "%s", wlua_run_error(run));
    } else {
        snprintf(why, whylen, "%s: %s", f->name,
                 "the file keeps calling host functions while loading");
    }
    wlua_run_destroy(run);
    return out;
}

/* Declares src (taken over) as file base in r. INVAL with why when the file does not load
 * (nothing of it stays in r); NOMEM is fatal. */
static enum wye_err try_file(struct wlua_state *st, struct agent_registry *r, const char *base,
                             char *src, size_t len, char *why, size_t whylen)
{
    struct agent_file *f = &r->files[r->n_files];
    f->name = wye_strdup(base);
    f->src = src;
    f->len = len;
    if (!f->name) {
        wye_free(src);
        memset(f, 0, sizeof(*f));
        return WYE_ERR_NOMEM;
    }
    cJSON *decls = declare(st, f, why, whylen);
    enum wye_err err = decls ? add_decls(r, f, decls, why, whylen) : WYE_ERR_INVAL;
    cJSON_Delete(decls);
    if (err) {
        wye_free(f->name);
        wye_free(f->src);
        memset(f, 0, sizeof(*f));
        return err;
    }
    r->n_files++;
    return WYE_OK;
}

static const struct agent_file *prev_file(const struct agent_registry *prev, const char *base)
{
    for (size_t i = 0; prev && i < prev->n_files; i++) {
        if (strcmp(prev->files[i].name, base) == 0) {
            return &prev->files[i];
        }
    }
    return NULL;
}

/* Loads one file; when it fails and prev served a version of it, that version is declared
 * again in its place, so a broken edit never takes a working agent or tool away. */
static enum wye_err load_file(struct wlua_state *st, struct agent_registry *r,
                              const struct agent_registry *prev, const char *path, const char *base)
{
    char eb[256], why[1024];
    size_t len = 0;
    char *src = read_file(path, AGENT_FILE_BYTES_MAX, &len, eb, sizeof(eb));
    enum wye_err err = WYE_ERR_INVAL;
    if (src) {
        err = try_file(st, r, base, src, len, why, sizeof(why));
    } else {
        snprintf(why, sizeof(why), "%s: %s", base, eb);
    }
    if (err != WYE_ERR_INVAL) {
        return err;
    }
    const struct agent_file *old = prev_file(prev, base);
    if (!old) {
        add_error(r, "%s (skipped)", why);
        return WYE_OK;
    }
    char *osrc = wye_strndup(old->src, old->len);
    if (!osrc) {
        return WYE_ERR_NOMEM;
    }
    char why_old[1024];
    err = try_file(st, r, base, osrc, old->len, why_old, sizeof(why_old));
    if (err == WYE_OK) {
        add_error(r, "%s (the previous version keeps serving)", why);
    } else if (err == WYE_ERR_INVAL) {
        add_error(r, "%s (skipped; the previous version cannot serve either: %s)", why, why_old);
        err = WYE_OK;
    }
    return err;
}

enum wye_err agent_registry_load(const char *dir, const char *only,
                                 const struct agent_registry *prev, struct agent_registry **out,
                                 char *errbuf, size_t errlen)
{
    *out = NULL;
    enum wye_err err = WYE_ERR_NOMEM;
    char **names = NULL;
    size_t n = 0;
    DIR *d = opendir(dir);
    if (!d) {
        int e = errno;
        char eb[128];
        snprintf(errbuf, errlen, "cannot open the agents directory %s: %s", dir,
                 strerror_r(e, eb, sizeof(eb)));
        return e == ENOENT ? WYE_ERR_NOTFOUND : WYE_ERR_IO;
    }
    struct agent_registry *r = wye_calloc(1, sizeof(*r));
    struct wlua_state *st = NULL;
    if (!r) {
        goto fail_dir;
    }
    atomic_init(&r->refs, 1);
    r->dir = wye_strdup(dir);
    names = wye_calloc(AGENT_FILES_MAX, sizeof(char *));
    r->files = wye_calloc(AGENT_FILES_MAX, sizeof(*r->files));
    if (!r->dir || !names || !r->files) {
        goto fail_dir;
    }
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        size_t l = strlen(de->d_name);
        if (l < 5 || de->d_name[0] == '.' || strcmp(de->d_name + l - 4, ".lua") != 0 ||
            (only && strcmp(de->d_name, only) != 0)) {
            continue;
        }
        if (n == AGENT_FILES_MAX) {
            add_error(r, "%s: more than %d .lua files; the rest are ignored", dir, AGENT_FILES_MAX);
            break;
        }
        names[n] = wye_strdup(de->d_name);
        if (!names[n]) {
            goto fail_dir;
        }
        n++;
    }
    closedir(d);
    d = NULL;
    qsort(names, n, sizeof(char *), cmp_str);
    struct wlua_opts o = {0};
    o.limits.mem_bytes_max = 32u << 20;
    o.limits.n_insns_max = 10000000;
    o.limits.timeout_ms = 2000;
    st = wlua_state_create(&o);
    if (!st) {
        goto fail_dir;
    }
    static const char *const host[] = {"chat",         "tool",      "emit", "batch",
                                       "http.request", "data.json", "sleep"};
    for (size_t i = 0; i < sizeof(host) / sizeof(host[0]); i++) {
        if (wlua_state_add_yielding(st, host[i]) != WYE_OK) {
            goto fail_dir;
        }
    }
    for (size_t i = 0; i < n; i++) {
        char path[4096];
        snprintf(path, sizeof(path), "%s/%s", dir, names[i]);
        struct stat sb;
        if (stat(path, &sb) != 0 || !S_ISREG(sb.st_mode)) {
            continue;
        }
        if (load_file(st, r, prev, path, names[i]) != WYE_OK) {
            goto fail_dir;
        }
    }
    wlua_state_destroy(st);
    for (size_t i = 0; i < n; i++) {
        wye_free(names[i]);
    }
    wye_free(names);
    *out = r;
    return WYE_OK;

fail_dir:
    if (d) {
        closedir(d);
    }
    wlua_state_destroy(st);
    for (size_t i = 0; names && i < n; i++) {
        wye_free(names[i]);
    }
    wye_free(names);
    agent_registry_unref(r);
    snprintf(errbuf, errlen, "out of memory while loading %s", dir);
    return err;
}

void agent_registry_ref(struct agent_registry *reg)
{
    atomic_fetch_add(&reg->refs, 1);
}

void agent_registry_unref(struct agent_registry *r)
{
    if (!r || atomic_fetch_sub(&r->refs, 1) != 1) {
        return;
    }
    for (size_t i = 0; i < r->n_tools; i++) {
        struct agent_tool *t = &r->tools[i];
        wye_free(t->name);
        wye_free(t->description);
        wye_free(t->parameters);
        wye_free(t->allow_hosts);
    }
    for (size_t i = 0; i < r->n_decls; i++) {
        struct agent_decl *a = &r->decls[i];
        wye_free(a->name);
        wye_free(a->system);
        wye_free(a->model);
        wye_free(a->allow_hosts);
        for (size_t k = 0; k < a->n_tools; k++) {
            wye_free(a->tools[k]);
        }
        wye_free(a->tools);
    }
    for (size_t i = 0; i < r->n_files; i++) {
        wye_free(r->files[i].name);
        wye_free(r->files[i].src);
    }
    for (size_t i = 0; i < r->n_errors; i++) {
        wye_free(r->errors[i]);
    }
    wye_free(r->errors);
    wye_free(r->files);
    wye_free(r->tools);
    wye_free(r->decls);
    wye_free(r->dir);
    wye_free(r);
}

const struct agent_tool *agent_registry_tool(const struct agent_registry *reg, const char *name)
{
    for (size_t i = 0; i < reg->n_tools; i++) {
        if (strcmp(reg->tools[i].name, name) == 0) {
            return &reg->tools[i];
        }
    }
    return NULL;
}

const struct agent_decl *agent_registry_decl(const struct agent_registry *reg, const char *name)
{
    for (size_t i = 0; i < reg->n_decls; i++) {
        if (strcmp(reg->decls[i].name, name) == 0) {
            return &reg->decls[i];
        }
    }
    return NULL;
}
