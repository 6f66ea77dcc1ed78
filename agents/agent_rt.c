/* The runtime's public face: create (load the registry, make each worker's sandbox state),
 * start/destroy the workers, reload (swap the registry; runs keep theirs), list, submit and
 * cancel. Any thread: everything reaches the worker through its inbox. */
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "agents/agent_internal.h"
#include "common/alloc.h"
#include "common/clock.h"
#include "common/log.h"
#include "lua/lua_sandbox.h"

/* ---- the public API ---- */

static struct agent_registry *current_reg(struct agent_rt *rt)
{
    pthread_mutex_lock(&rt->lock);
    struct agent_registry *r = rt->reg;
    agent_registry_ref(r);
    pthread_mutex_unlock(&rt->lock);
    return r;
}

/* The worker count: opts, else WYE_AGENT_WORKERS, else AGENT_WORKERS_DEFAULT. INVAL (errbuf
 * says why) when out of 1..AGENT_WORKERS_MAX. */
static enum wye_err worker_count(const struct agent_rt_opts *opts, int *n, char *errbuf,
                                 size_t errlen)
{
    if (opts && opts->n_workers) {
        *n = opts->n_workers;
        if (*n < 1 || *n > AGENT_WORKERS_MAX) {
            snprintf(errbuf, errlen, "agents.workers must be 1..%d (got %d)", AGENT_WORKERS_MAX,
                     *n);
            return WYE_ERR_INVAL;
        }
        return WYE_OK;
    }
    const char *env = getenv("WYE_AGENT_WORKERS");
    if (!env || !env[0]) {
        *n = AGENT_WORKERS_DEFAULT;
        return WYE_OK;
    }
    char *end = NULL;
    long v = strtol(env, &end, 10);
    if (*end || v < 1 || v > AGENT_WORKERS_MAX) {
        snprintf(errbuf, errlen, "WYE_AGENT_WORKERS must be an integer 1..%d (got '%.32s')",
                 AGENT_WORKERS_MAX, env);
        return WYE_ERR_INVAL;
    }
    *n = (int)v;
    return WYE_OK;
}

/* The Lua hook (worker thread, every hook period): is the executing run being cancelled? */
static bool worker_interrupted(void *ud)
{
    const struct agent_worker *wk = ud;
    return wk->cur && atomic_load(&wk->cancel_id) == wk->cur->id;
}

/* Makes worker i's queue and sandbox state. */
static enum wye_err worker_init(struct agent_rt *rt, int i)
{
    struct agent_worker *wk = &rt->workers[i];
    wk->rt = rt;
    wk->index = i;
    atomic_init(&wk->n_runs, 0);
    atomic_init(&wk->n_ops, 0);
    atomic_init(&wk->n_posting, 0);
    atomic_init(&wk->cancel_id, 0);
    if (wye_queue_init(&wk->inbox, 0) != WYE_OK) {
        return WYE_ERR_NOMEM;
    }
    struct wlua_opts lo = {0};
    lo.limits.mem_bytes_max = rt->mem_bytes_max;
    lo.limits.n_insns_max = rt->n_insns_max;
    lo.limits.timeout_ms = rt->timeout_ms;
    lo.print = rt->print;
    lo.print_ud = rt->print_ud;
    lo.interrupted = worker_interrupted;
    lo.interrupted_ud = wk;
    wk->st = wlua_state_create(&lo);
    static const char *const host[] = {"chat",         "tool",      "emit", "batch",
                                       "http.request", "data.json", "sleep"};
    for (size_t k = 0; wk->st && k < sizeof(host) / sizeof(host[0]); k++) {
        if (wlua_state_add_yielding(wk->st, host[k]) != WYE_OK) {
            wlua_state_destroy(wk->st);
            wk->st = NULL;
        }
    }
    if (!wk->st) {
        wye_queue_cleanup(&wk->inbox);
        return WYE_ERR_NOMEM;
    }
    return WYE_OK;
}

static void worker_cleanup(struct agent_worker *wk)
{
    wlua_state_destroy(wk->st);
    wye_queue_cleanup(&wk->inbox);
}

static void rt_free_allow(struct agent_rt *rt)
{
    for (size_t i = 0; i < rt->n_allow; i++) {
        wye_free(rt->allow_names[i]);
        wye_free(rt->allow_lists[i]);
    }
    wye_free(rt->allow_names);
    wye_free(rt->allow_lists);
}

enum wye_err agent_rt_create(const struct agent_rt_opts *opts, const struct agent_host_ops *ops,
                             void *host_ctx, struct agent_rt **out, char *errbuf, size_t errlen)
{
    *out = NULL;
    int n_workers = 0;
    enum wye_err err = worker_count(opts, &n_workers, errbuf, errlen);
    if (err) {
        return err;
    }
    struct agent_rt *rt = wye_calloc(1, sizeof(*rt));
    if (!rt) {
        snprintf(errbuf, errlen, "out of memory");
        return WYE_ERR_NOMEM;
    }
    err = WYE_ERR_NOMEM;
    rt->ops = *ops;
    rt->host = host_ctx;
    rt->dir = wye_strdup(opts && opts->dir ? opts->dir : "./lua/examples");
    rt->allow_hosts = opts && opts->allow_hosts ? wye_strdup(opts->allow_hosts) : NULL;
    rt->http_max_bytes = opts && opts->http_max_bytes ? opts->http_max_bytes : (1u << 20);
    rt->mem_bytes_max = opts && opts->mem_bytes_max ? opts->mem_bytes_max : (64u << 20);
    rt->n_insns_max = opts && opts->n_insns_max ? opts->n_insns_max : 100000000;
    rt->timeout_ms = opts ? opts->timeout_ms : 0;
    rt->print = opts ? opts->print : NULL;
    rt->print_ud = opts ? opts->print_ud : NULL;
    rt->only_file = opts && opts->only_file ? wye_strdup(opts->only_file) : NULL;
    bool allow_ok = true;
    if (opts && opts->n_allow > 0) {
        rt->allow_names = wye_calloc(opts->n_allow, sizeof(char *));
        rt->allow_lists = wye_calloc(opts->n_allow, sizeof(char *));
        allow_ok = rt->allow_names && rt->allow_lists;
        for (size_t i = 0; allow_ok && i < opts->n_allow; i++) {
            rt->allow_names[i] = wye_strdup(opts->allow[i].name);
            rt->allow_lists[i] = wye_strdup(opts->allow[i].hosts);
            rt->n_allow = i + 1;
            allow_ok = rt->allow_names[i] && rt->allow_lists[i];
        }
    }
    /* Run ids go into events, logs and the ledger, so they must not repeat when the process
     * restarts: the counter starts at the start time in ms x 1000 (unique unless a process
     * made a million runs a second), still exact in a JSON double until the 23rd century. */
    int64_t ms = wye_wall_ms();
    atomic_init(&rt->next_id, (uint_fast64_t)(ms > 0 ? ms : 0) * AGENT_RUN_IDS_PER_MS + 1);
    atomic_init(&rt->stopping, false);
    int n_init = 0;
    if (!rt->dir || (opts && opts->only_file && !rt->only_file) || !allow_ok) {
        goto fail_rt;
    }
    if (pthread_mutex_init(&rt->lock, NULL) != 0) {
        goto fail_rt;
    }
    rt->workers = wye_calloc((size_t)n_workers, sizeof(*rt->workers));
    if (!rt->workers) {
        goto fail_lock;
    }
    rt->n_workers = n_workers;
    for (; n_init < n_workers; n_init++) {
        if (worker_init(rt, n_init) != WYE_OK) {
            goto fail_workers;
        }
    }
    err = agent_registry_load(rt->dir, rt->only_file, NULL, &rt->reg, errbuf, errlen);
    if (err) {
        goto fail_workers;
    }
    *out = rt;
    return WYE_OK;

fail_workers:
    while (n_init > 0) {
        worker_cleanup(&rt->workers[--n_init]);
    }
    wye_free(rt->workers);
fail_lock:
    pthread_mutex_destroy(&rt->lock);
fail_rt:
    if (err == WYE_ERR_NOMEM) {
        snprintf(errbuf, errlen, "out of memory");
    }
    wye_free(rt->dir);
    wye_free(rt->only_file);
    wye_free(rt->allow_hosts);
    rt_free_allow(rt);
    wye_free(rt);
    return err;
}

static enum wye_err post_msg(struct agent_worker *wk, enum agent_msg_kind kind, uint64_t id,
                             struct agent_run *run)
{
    struct agent_msg *m = wye_calloc(1, sizeof(*m));
    if (!m) {
        return WYE_ERR_NOMEM;
    }
    m->kind = kind;
    m->id = id;
    m->run = run;
    enum wye_err err = wye_queue_push(&wk->inbox, &m->node, NULL);
    if (err) {
        wye_free(m);
    }
    return err;
}

/* Stops (cancels every run, joins) the workers that started. False when a host never answered
 * a call: the runtime must then be leaked (a late answer would land in freed memory). */
static bool workers_stop(struct agent_rt *rt)
{
    atomic_store(&rt->stopping, true);
    for (int i = 0; i < rt->n_workers; i++) {
        if (rt->workers[i].started) {
            while (post_msg(&rt->workers[i], AGENT_MSG_CANCEL_ALL, 0, NULL) == WYE_ERR_NOMEM) {
            }
        }
    }
    bool ok = true;
    for (int i = 0; i < rt->n_workers; i++) {
        struct agent_worker *wk = &rt->workers[i];
        if (!wk->started) {
            continue;
        }
        pthread_join(wk->thread, NULL);
        wk->started = false;
        ok &= atomic_load(&wk->n_ops) == 0;
    }
    for (int i = 0; ok && i < rt->n_workers; i++) {
        while (atomic_load(&rt->workers[i].n_posting) > 0) {
            sched_yield();
        }
    }
    return ok;
}

enum wye_err agent_rt_start(struct agent_rt *rt)
{
    for (int i = 0; i < rt->n_workers; i++) {
        struct agent_worker *wk = &rt->workers[i];
        int e = pthread_create(&wk->thread, NULL, agent_worker_main, wk);
        if (e != 0) {
            char eb[128];
            WYE_ERROR("agents: cannot start worker %d: %s", i, strerror_r(e, eb, sizeof(eb)));
            (void)workers_stop(rt);
            atomic_store(&rt->stopping, false);
            return WYE_ERR_NOMEM;
        }
        wk->started = true;
    }
    return WYE_OK;
}

void agent_rt_destroy(struct agent_rt *rt)
{
    if (!rt) {
        return;
    }
    if (!workers_stop(rt)) {
        return; /* a host never answered (logged by the worker): leaked on purpose */
    }
    for (int i = 0; i < rt->n_workers; i++) {
        struct agent_worker *wk = &rt->workers[i];
        /* whatever is still queued (never started runs) */
        struct wye_qnode *n = wye_queue_take_all(&wk->inbox);
        while (n) {
            struct wye_qnode *next = n->next;
            struct agent_msg *m = WYE_CONTAINER_OF(n, struct agent_msg, node);
            if (m->kind == AGENT_MSG_OP) {
                agent_op_free(m->op);
            } else {
                if (m->run) {
                    agent_run_unref(m->run);
                }
                wye_free(m);
            }
            n = next;
        }
        worker_cleanup(wk);
    }
    wye_free(rt->workers);
    pthread_mutex_destroy(&rt->lock);
    agent_registry_unref(rt->reg);
    wye_free(rt->dir);
    wye_free(rt->only_file);
    wye_free(rt->allow_hosts);
    rt_free_allow(rt);
    wye_free(rt);
}

enum wye_err agent_rt_reload(struct agent_rt *rt, char *errbuf, size_t errlen)
{
    /* reloads are serialised by the caller (SIGHUP on one thread); prev stays referenced */
    struct agent_registry *prev = current_reg(rt);
    struct agent_registry *r = NULL;
    enum wye_err err = agent_registry_load(rt->dir, rt->only_file, prev, &r, errbuf, errlen);
    agent_registry_unref(prev);
    if (err) {
        return err;
    }
    pthread_mutex_lock(&rt->lock);
    struct agent_registry *old = rt->reg;
    rt->reg = r;
    pthread_mutex_unlock(&rt->lock);
    agent_registry_unref(old);
    WYE_INFO("agents: reloaded %s: %zu agents/workflows, %zu tools, %zu errors", rt->dir,
             r->n_decls, r->n_tools, r->n_errors);
    return WYE_OK;
}

enum wye_err agent_rt_list_json(struct agent_rt *rt, struct wye_buf *out)
{
    struct agent_registry *r = current_reg(rt);
    cJSON *o = cJSON_CreateObject();
    cJSON *ag = cJSON_AddArrayToObject(o, "agents");
    cJSON *tl = cJSON_AddArrayToObject(o, "tools");
    cJSON *wf = cJSON_AddArrayToObject(o, "workflows");
    cJSON *er = cJSON_AddArrayToObject(o, "errors");
    for (size_t i = 0; er && i < r->n_decls; i++) {
        const struct agent_decl *d = &r->decls[i];
        cJSON *e = cJSON_CreateObject();
        cJSON_AddStringToObject(e, "name", d->name);
        cJSON_AddStringToObject(e, "file", d->file->name);
        if (!d->is_workflow) {
            cJSON_AddStringToObject(e, "model", d->model);
            cJSON *ts = cJSON_AddArrayToObject(e, "tools");
            for (size_t k = 0; k < d->n_tools; k++) {
                cJSON_AddItemToArray(ts, cJSON_CreateString(d->tools[k]));
            }
        }
        cJSON_AddItemToArray(d->is_workflow ? wf : ag, e);
    }
    for (size_t i = 0; er && i < r->n_tools; i++) {
        cJSON *e = cJSON_CreateObject();
        cJSON_AddStringToObject(e, "name", r->tools[i].name);
        cJSON_AddStringToObject(e, "file", r->tools[i].file->name);
        cJSON_AddStringToObject(e, "description",
                                r->tools[i].description ? r->tools[i].description : "");
        cJSON_AddItemToArray(tl, e);
    }
    for (size_t i = 0; er && i < r->n_errors; i++) {
        cJSON_AddItemToArray(er, cJSON_CreateString(r->errors[i]));
    }
    agent_registry_unref(r);
    char *s = er ? cJSON_PrintUnformatted(o) : NULL;
    cJSON_Delete(o);
    enum wye_err err = s ? wye_buf_append_str(out, s) : WYE_ERR_NOMEM;
    cJSON_free(s);
    return err;
}

/* Gives run (its input, key and decl set; reg taken over unless NULL: already set) an id and
 * the least loaded worker, and posts it. */
static enum wye_err submit_run(struct agent_rt *rt, struct agent_registry *r, struct agent_run *run,
                               agent_done_fn done, void *arg, uint64_t *run_id, char *errbuf,
                               size_t errlen)
{
    atomic_init(&run->refs, 1);
    atomic_init(&run->ended, false);
    run->rt = rt;
    if (r) {
        run->reg = r;
    }
    run->done = done;
    run->done_arg = arg;
    run->id = atomic_fetch_add(&rt->next_id, 1);
    if (run_id) {
        *run_id = run->id;
    }
    /* the least loaded worker (the first of equals): a run stays on it to its end */
    struct agent_worker *wk = &rt->workers[0];
    for (int i = 1; i < rt->n_workers; i++) {
        if (atomic_load(&rt->workers[i].n_runs) < atomic_load(&wk->n_runs)) {
            wk = &rt->workers[i];
        }
    }
    run->w = wk;
    atomic_fetch_add(&wk->n_runs, 1);
    enum wye_err err = post_msg(wk, AGENT_MSG_SUBMIT, 0, run);
    if (err) {
        atomic_fetch_sub(&wk->n_runs, 1);
        agent_run_unref(run);
        snprintf(errbuf, errlen, "the agent runtime is not accepting runs");
    }
    return err;
}

enum wye_err agent_rt_submit(struct agent_rt *rt, const char *name, const char *input,
                             agent_done_fn done, void *arg, uint64_t *run_id, char *errbuf,
                             size_t errlen)
{
    return agent_rt_submit_as(rt, NULL, name, input, done, arg, run_id, errbuf, errlen);
}

enum wye_err agent_rt_submit_as(struct agent_rt *rt, const char *key_name, const char *name,
                                const char *input, agent_done_fn done, void *arg, uint64_t *run_id,
                                char *errbuf, size_t errlen)
{
    struct agent_registry *r = current_reg(rt);
    const struct agent_decl *d = agent_registry_decl(r, name);
    if (!d) {
        snprintf(errbuf, errlen, "no agent or workflow named '%s' in %s", name, r->dir);
        agent_registry_unref(r);
        return WYE_ERR_NOTFOUND;
    }
    for (size_t i = 0; i < d->n_tools; i++) {
        if (!agent_registry_tool(r, d->tools[i])) {
            snprintf(errbuf, errlen, "agent '%s' lists unknown tool '%s'", name, d->tools[i]);
            agent_registry_unref(r);
            return WYE_ERR_INVAL;
        }
    }
    struct agent_run *run = wye_calloc(1, sizeof(*run));
    if (!run || !(run->input = wye_strdup(input ? input : "")) ||
        (key_name && !(run->key_name = wye_strdup(key_name)))) {
        if (run) {
            wye_free(run->input);
        }
        wye_free(run);
        agent_registry_unref(r);
        snprintf(errbuf, errlen, "out of memory");
        return WYE_ERR_NOMEM;
    }
    run->decl = d;
    return submit_run(rt, r, run, done, arg, run_id, errbuf, errlen);
}

enum wye_err agent_rt_submit_call(struct agent_rt *rt, const char *tool, const char *chunkname,
                                  const char *src, size_t len, const char *entry,
                                  const char *args_json, agent_done_fn done, void *arg,
                                  uint64_t *run_id, char *errbuf, size_t errlen)
{
    struct agent_registry *r = current_reg(rt);
    const struct agent_tool *t = tool ? agent_registry_tool(r, tool) : NULL;
    if (tool && !t) {
        snprintf(errbuf, errlen, "no tool named '%s' in %s", tool, r->dir);
        agent_registry_unref(r);
        return WYE_ERR_NOTFOUND;
    }
    if (t && !args_json) {
        args_json = "{}"; /* a tool always gets a table */
    }
    if (t) {
        enum wye_err err = agent_schema_check(t->parameters, args_json, errbuf, errlen);
        if (err) {
            agent_registry_unref(r);
            return err;
        }
    }
    struct agent_run *run = wye_calloc(1, sizeof(*run));
    if (!run) {
        agent_registry_unref(r);
        snprintf(errbuf, errlen, "out of memory");
        return WYE_ERR_NOMEM;
    }
    atomic_init(&run->refs, 1);
    run->reg = r;
    run->decl = &run->own;
    run->own.is_workflow = true;
    run->own.max_steps = 1;
    run->own.name = wye_strdup(t ? tool : chunkname);
    run->own.model = wye_strdup("auto");
    run->call_mode = t ? "tool" : "script";
    run->call_name = wye_strdup(t ? tool : entry ? entry : "main");
    run->call_hosts = t ? t->allow_hosts : NULL;
    run->call_file = t ? t->file : &run->own_file;
    bool ok = run->own.name && run->own.model && run->call_name;
    if (args_json) {
        ok &= (run->input = wye_strdup(args_json)) != NULL;
    }
    if (!t) {
        run->own_file.name = wye_strdup(chunkname);
        run->own_file.src = wye_strndup(src, len);
        run->own_file.len = len;
        ok &= run->own_file.name && run->own_file.src;
    }
    if (!ok) {
        agent_run_unref(run);
        snprintf(errbuf, errlen, "out of memory");
        return WYE_ERR_NOMEM;
    }
    return submit_run(rt, NULL, run, done, arg, run_id, errbuf, errlen);
}

void agent_rt_cancel(struct agent_rt *rt, uint64_t run_id)
{
    /* the run is on one of them; the others ignore an id they do not run. cancel_id reaches
     * a run busy in Lua at once; the message ends a run parked on the host */
    for (int i = 0; i < rt->n_workers; i++) {
        atomic_store(&rt->workers[i].cancel_id, run_id);
        (void)post_msg(&rt->workers[i], AGENT_MSG_CANCEL, run_id, NULL);
    }
}
