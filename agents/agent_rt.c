/* The runtime's public face: create (load the registry, make the worker's sandbox state),
 * start/destroy the worker, reload (swap the registry; runs keep theirs), list, submit and
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

enum wye_err agent_rt_create(const struct agent_rt_opts *opts, const struct agent_host_ops *ops,
                             void *host_ctx, struct agent_rt **out, char *errbuf, size_t errlen)
{
    *out = NULL;
    struct agent_rt *rt = wye_calloc(1, sizeof(*rt));
    if (!rt) {
        snprintf(errbuf, errlen, "out of memory");
        return WYE_ERR_NOMEM;
    }
    enum wye_err err = WYE_ERR_NOMEM;
    rt->ops = *ops;
    rt->host = host_ctx;
    rt->dir = wye_strdup(opts && opts->dir ? opts->dir : "./lua/examples");
    rt->allow_hosts = opts && opts->allow_hosts ? wye_strdup(opts->allow_hosts) : NULL;
    rt->http_max_bytes = opts && opts->http_max_bytes ? opts->http_max_bytes : (1u << 20);
    rt->mem_bytes_max = opts && opts->mem_bytes_max ? opts->mem_bytes_max : (64u << 20);
    rt->n_insns_max = opts && opts->n_insns_max ? opts->n_insns_max : 100000000;
    atomic_init(&rt->next_id, 1);
    atomic_init(&rt->stopping, false);
    atomic_init(&rt->n_ops, 0);
    atomic_init(&rt->n_posting, 0);
    if (!rt->dir) {
        goto fail_rt;
    }
    if (pthread_mutex_init(&rt->lock, NULL) != 0) {
        goto fail_rt;
    }
    if (wye_queue_init(&rt->inbox, 0) != WYE_OK) {
        goto fail_lock;
    }
    struct wlua_opts lo = {0};
    lo.limits.mem_bytes_max = rt->mem_bytes_max;
    lo.limits.n_insns_max = rt->n_insns_max;
    rt->st = wlua_state_create(&lo);
    if (!rt->st) {
        goto fail_queue;
    }
    static const char *const host[] = {"chat",  "tool",         "emit",
                                       "batch", "http.request", "data.json"};
    for (size_t i = 0; i < sizeof(host) / sizeof(host[0]); i++) {
        if (wlua_state_add_yielding(rt->st, host[i]) != WYE_OK) {
            goto fail_state;
        }
    }
    err = agent_registry_load(rt->dir, NULL, &rt->reg, errbuf, errlen);
    if (err) {
        goto fail_state;
    }
    *out = rt;
    return WYE_OK;

fail_state:
    wlua_state_destroy(rt->st);
fail_queue:
    wye_queue_cleanup(&rt->inbox);
fail_lock:
    pthread_mutex_destroy(&rt->lock);
fail_rt:
    if (err == WYE_ERR_NOMEM) {
        snprintf(errbuf, errlen, "out of memory");
    }
    wye_free(rt->dir);
    wye_free(rt->allow_hosts);
    wye_free(rt);
    return err;
}

enum wye_err agent_rt_start(struct agent_rt *rt)
{
    int e = pthread_create(&rt->thread, NULL, agent_worker_main, rt);
    if (e != 0) {
        char eb[128];
        WYE_ERROR("agents: cannot start the worker: %s", strerror_r(e, eb, sizeof(eb)));
        return WYE_ERR_NOMEM;
    }
    rt->started = true;
    return WYE_OK;
}

static enum wye_err post_msg(struct agent_rt *rt, enum agent_msg_kind kind, uint64_t id,
                             struct agent_run *run)
{
    struct agent_msg *m = wye_calloc(1, sizeof(*m));
    if (!m) {
        return WYE_ERR_NOMEM;
    }
    m->kind = kind;
    m->id = id;
    m->run = run;
    enum wye_err err = wye_queue_push(&rt->inbox, &m->node, NULL);
    if (err) {
        wye_free(m);
    }
    return err;
}

void agent_rt_destroy(struct agent_rt *rt)
{
    if (!rt) {
        return;
    }
    if (rt->started) {
        atomic_store(&rt->stopping, true);
        while (post_msg(rt, AGENT_MSG_CANCEL_ALL, 0, NULL) == WYE_ERR_NOMEM) {
        }
        pthread_join(rt->thread, NULL);
        if (atomic_load(&rt->n_ops) > 0) {
            /* a host never answered: its late answer would land in freed memory, so the
             * runtime is leaked on purpose (logged by the worker) */
            return;
        }
        while (atomic_load(&rt->n_posting) > 0) {
            sched_yield();
        }
    }
    /* whatever is still queued (never started runs) */
    struct wye_qnode *n = wye_queue_take_all(&rt->inbox);
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
    wlua_state_destroy(rt->st);
    wye_queue_cleanup(&rt->inbox);
    pthread_mutex_destroy(&rt->lock);
    agent_registry_unref(rt->reg);
    wye_free(rt->dir);
    wye_free(rt->allow_hosts);
    wye_free(rt);
}

enum wye_err agent_rt_reload(struct agent_rt *rt, char *errbuf, size_t errlen)
{
    /* reloads are serialised by the caller (SIGHUP on one thread); prev stays referenced */
    struct agent_registry *prev = current_reg(rt);
    struct agent_registry *r = NULL;
    enum wye_err err = agent_registry_load(rt->dir, prev, &r, errbuf, errlen);
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

enum wye_err agent_rt_submit(struct agent_rt *rt, const char *name, const char *input,
                             agent_done_fn done, void *arg, uint64_t *run_id, char *errbuf,
                             size_t errlen)
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
    if (!run || !(run->input = wye_strdup(input ? input : ""))) {
        wye_free(run);
        agent_registry_unref(r);
        snprintf(errbuf, errlen, "out of memory");
        return WYE_ERR_NOMEM;
    }
    atomic_init(&run->refs, 1);
    atomic_init(&run->ended, false);
    run->rt = rt;
    run->reg = r;
    run->decl = d;
    run->done = done;
    run->done_arg = arg;
    run->id = atomic_fetch_add(&rt->next_id, 1);
    if (run_id) {
        *run_id = run->id;
    }
    enum wye_err err = post_msg(rt, AGENT_MSG_SUBMIT, 0, run);
    if (err) {
        agent_run_unref(run);
        snprintf(errbuf, errlen, "the agent runtime is not accepting runs");
    }
    return err;
}

void agent_rt_cancel(struct agent_rt *rt, uint64_t run_id)
{
    (void)post_msg(rt, AGENT_MSG_CANCEL, run_id, NULL);
}
