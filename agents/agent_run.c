/* The agent runtime's workers: each worker thread owns one sandbox state, on which each of its
 * runs is a set of Lua coroutines (tasks); a run stays on the worker it was given at submit.
 * DESIGN: whatever a task waits for (a model call, an HTTP request, a child tool, a batch of
 * those from ctx:all) is a pending host call; the host answers on its own thread by filling the
 * agent_op and pushing it on its run's worker's inbox, and the worker delivers it to the
 * waiting task (or batch slot) by putting the task on its ready list. The worker only ever
 * resumes tasks from that list, so no Lua call is ever nested inside another task's dispatch.
 * Runs end (answer, error, limit, cancel) on their worker; pending ops keep the run alive by
 * reference until the host answers them, and answers for ended runs are dropped.
 * Host calls themselves are in agent_calls.c, the public API in agent_rt.c.
 * Threads: agent_op_* any thread; the rest the run's worker. */
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "agents/agent_internal.h"
#include "common/alloc.h"
#include "common/clock.h"
#include "common/log.h"
#include "lua/lua_sandbox.h"

#define AGENT_TOOL_DEPTH_MAX 4

/* ---- small helpers ---- */

static void free_sleeps(struct agent_run *run)
{
    while (run->sleeps) {
        struct agent_sleep *z = run->sleeps;
        run->sleeps = z->next;
        wye_free(z);
    }
}

void agent_run_unref(struct agent_run *run)
{
    if (atomic_fetch_sub(&run->refs, 1) != 1) {
        return;
    }
    cJSON_Delete(run->messages);
    cJSON_Delete(run->calls);
    cJSON_Delete(run->model_calls);
    for (int i = 0; run->results && i < run->n_calls; i++) {
        wye_free(run->results[i]);
    }
    wye_free(run->results);
    wye_free(run->tools_json);
    wye_free(run->input);
    wye_free(run->key_name);
    free_sleeps(run);
    wye_free(run->traceback);
    wye_free(run->own.name);
    wye_free(run->own.model);
    wye_free(run->own_file.name);
    wye_free(run->own_file.src);
    wye_free(run->call_name);
    agent_registry_unref(run->reg);
    wye_free(run);
}

void agent_run_emit(struct agent_run *run, const char *fmt, ...)
{
    if (!run->rt->ops.emit) {
        return;
    }
    char small[512];
    va_list ap, ap2;
    va_start(ap, fmt);
    va_copy(ap2, ap);
    int n = vsnprintf(small, sizeof(small), fmt, ap);
    va_end(ap);
    if (n >= 0 && (size_t)n < sizeof(small)) {
        run->rt->ops.emit(run->rt->host, run->id, small);
    } else if (n >= 0 && (size_t)n <= AGENT_EVENT_MAX) {
        /* never cut: a cut event would not be JSON */
        char *big = wye_malloc((size_t)n + 1);
        if (big) {
            vsnprintf(big, (size_t)n + 1, fmt, ap2);
            run->rt->ops.emit(run->rt->host, run->id, big);
            wye_free(big);
        }
    }
    va_end(ap2);
}

/* The length of s cut to at most n bytes without splitting a UTF-8 sequence. */
static size_t utf8_cut(const char *s, size_t n)
{
    while (n > 0 && ((unsigned char)s[n] & 0xC0) == 0x80) {
        n--;
    }
    return n;
}

void agent_run_emit_json(struct agent_run *run, cJSON *ev, const char *cut)
{
    if (!ev || !run->rt->ops.emit) {
        cJSON_Delete(ev);
        return;
    }
    char *s = cJSON_PrintUnformatted(ev);
    size_t n = s ? strlen(s) : 0;
    const cJSON *c = cut ? cJSON_GetObjectItemCaseSensitive(ev, cut) : NULL;
    if (s && n > AGENT_EVENT_MAX && cJSON_IsString(c)) {
        /* cut the content string (escapes may make it longer than its bytes, so shrink until
         * the event fits), never the JSON */
        char *full = wye_strdup(c->valuestring);
        size_t len = full ? strlen(full) : 0;
        size_t keep = len > n - AGENT_EVENT_MAX + 64 ? len - (n - AGENT_EVENT_MAX + 64) : 0;
        cJSON_AddTrueToObject(ev, "truncated");
        for (int i = 0; full && i < 40; i++) {
            keep = utf8_cut(full, keep);
            char saved = full[keep];
            full[keep] = '\0';
            cJSON_ReplaceItemInObjectCaseSensitive(ev, cut, cJSON_CreateString(full));
            full[keep] = saved;
            cJSON_free(s);
            s = cJSON_PrintUnformatted(ev);
            n = s ? strlen(s) : 0;
            if (!s || n <= AGENT_EVENT_MAX || keep == 0) {
                break;
            }
            keep = keep / 4 * 3;
        }
        wye_free(full);
    }
    if (s && n <= AGENT_EVENT_MAX) {
        run->rt->ops.emit(run->rt->host, run->id, s);
    } else if (s) {
        WYE_WARN("agents: run %llu: dropped a %zu-byte event", (unsigned long long)run->id, n);
    }
    cJSON_free(s);
    cJSON_Delete(ev);
}

void agent_run_account(struct agent_run *run, const struct agent_op *op)
{
    run->cost_usd += op->cost_usd;
    run->saving_usd += op->saving_usd;
    run->prompt_tokens += op->prompt_tokens;
    run->completion_tokens += op->completion_tokens;
    if (!run->model_calls) {
        run->model_calls = cJSON_CreateArray();
    }
    const char *route = op->route ? op->route : "";
    const char *model = op->model ? op->model : "";
    if (run->model_calls && cJSON_GetArraySize(run->model_calls) < AGENT_CALLS_MAX) {
        cJSON *o = cJSON_CreateObject();
        if (o) {
            cJSON_AddStringToObject(o, "route", route);
            cJSON_AddStringToObject(o, "model", model);
            cJSON_AddNumberToObject(o, "prompt_tokens", (double)op->prompt_tokens);
            cJSON_AddNumberToObject(o, "completion_tokens", (double)op->completion_tokens);
            cJSON_AddNumberToObject(o, "cost_usd", op->cost_usd);
            cJSON_AddNumberToObject(o, "saving_usd", op->saving_usd);
            cJSON_AddItemToArray(run->model_calls, o);
        }
    }
    cJSON *ev = cJSON_CreateObject();
    if (ev) {
        cJSON_AddStringToObject(ev, "type", "model_call");
        cJSON_AddStringToObject(ev, "route", route);
        cJSON_AddStringToObject(ev, "model", model);
        cJSON_AddNumberToObject(ev, "prompt_tokens", (double)op->prompt_tokens);
        cJSON_AddNumberToObject(ev, "completion_tokens", (double)op->completion_tokens);
        cJSON_AddNumberToObject(ev, "cost_usd", op->cost_usd);
        cJSON_AddNumberToObject(ev, "saving_usd", op->saving_usd);
        if (op->err) {
            cJSON_AddStringToObject(ev, "error", op->message ? op->message : wye_err_str(op->err));
        }
    }
    agent_run_emit_json(run, ev, NULL);
}

struct agent_op *agent_op_new(struct agent_run *run, enum agent_op_kind kind, struct agent_waiter w)
{
    struct agent_op *op = wye_calloc(1, sizeof(*op));
    if (!op) {
        return NULL;
    }
    op->run = run;
    op->msg.kind = AGENT_MSG_OP;
    op->msg.op = op;
    op->kind = kind;
    wye_buf_init(&op->dev, AGENT_EVENT_MAX);
    atomic_fetch_add(&run->w->n_ops, 1);
    op->w = w;
    atomic_fetch_add(&run->refs, 1);
    return op;
}

void agent_op_free(struct agent_op *op)
{
    if (!op) {
        return;
    }
    wye_free(op->message);
    wye_free(op->text);
    wye_free(op->tool_calls);
    wye_free(op->route);
    wye_free(op->model);
    wye_buf_cleanup(&op->dev);
    struct agent_worker *w = op->run->w;
    agent_run_unref(op->run);
    wye_free(op);
    atomic_fetch_sub(&w->n_ops, 1);
}

static char *dup_opt(const char *s)
{
    return s ? wye_strdup(s) : NULL;
}

static void op_post(struct agent_op *op)
{
    /* the push signals the worker after unlocking; n_posting keeps agent_rt_destroy from
     * destroying the queue under that signal once the worker has taken the op and exited */
    struct agent_worker *w = op->run->w;
    atomic_fetch_add(&w->n_posting, 1);
    if (wye_queue_push(&w->inbox, &op->msg.node, NULL) != WYE_OK) {
        agent_op_free(op); /* the runtime is going away */
    }
    atomic_fetch_sub(&w->n_posting, 1);
}

void agent_op_chat_done(struct agent_op *op, const struct agent_chat_result *res)
{
    op->err = res->err;
    op->message = dup_opt(res->message);
    op->text = wye_strdup(res->text ? res->text : "");
    op->tool_calls = dup_opt(res->tool_calls);
    op->route = dup_opt(res->route);
    op->model = dup_opt(res->model);
    op->format = res->format;
    op->prompt_tokens = res->prompt_tokens;
    op->completion_tokens = res->completion_tokens;
    op->cost_usd = res->cost_usd;
    op->saving_usd = res->saving_usd;
    if (!op->text && !op->err) {
        op->err = WYE_ERR_NOMEM;
    }
    op_post(op);
}

void agent_op_http_done(struct agent_op *op, const struct agent_http_result *res)
{
    op->err = res->err;
    op->message = dup_opt(res->message);
    op->status = res->status;
    op->body_len = res->body ? res->body_len : 0;
    op->text = wye_strndup(res->body ? res->body : "", op->body_len);
    if (!op->text && !op->err) {
        op->err = WYE_ERR_NOMEM;
    }
    op_post(op);
}

#define AGENT_DELTA_PIECE 8192 /* escaped, at most 6x: always fits one event */

void agent_op_delta(struct agent_op *op, const char *text, size_t len)
{
    struct agent_run *run = op->run;
    struct agent_rt *rt = run->rt;
    if (op->kind != AGENT_OP_STEP || !rt->ops.emit || atomic_load(&run->ended)) {
        return;
    }
    while (len > 0) {
        size_t n = len > AGENT_DELTA_PIECE ? utf8_cut(text, AGENT_DELTA_PIECE) : len;
        if (n == 0) {
            n = AGENT_DELTA_PIECE; /* not UTF-8 anyway */
        }
        wye_buf_reset(&op->dev);
        enum wye_err err =
            wye_buf_printf(&op->dev, "{\"type\":\"delta\",\"run_id\":%llu,\"step\":%d,\"delta\":",
                           (unsigned long long)run->id, op->step);
        if (!err) {
            err = wye_buf_append_json_str(&op->dev, text, n);
        }
        if (!err) {
            err = wye_buf_append(&op->dev, "}", 1);
        }
        if (!err) {
            rt->ops.emit(rt->host, run->id, op->dev.data);
        }
        text += n;
        len -= n;
    }
}

bool agent_op_cancelled(const struct agent_op *op)
{
    return atomic_load(&op->run->ended);
}

/* ---- tasks ---- */

void agent_ready_push(struct agent_task *t, const char *json, const char *err)
{
    struct agent_worker *wk = t->run->w;
    t->res_json = json ? wye_strdup(json) : NULL;
    t->res_err = err ? wye_strdup(err) : NULL;
    if ((json && !t->res_json) || (err && !t->res_err)) {
        wye_free(t->res_err);
        t->res_err = wye_strdup("out of memory");
    }
    t->ready = true;
    t->ready_next = NULL;
    if (wk->ready_tail) {
        wk->ready_tail->ready_next = t;
    } else {
        wk->ready = t;
    }
    wk->ready_tail = t;
}

void agent_batch_free(struct agent_batch *b)
{
    if (b) {
        cJSON_Delete(b->results);
        wye_free(b);
    }
}

/* One fewer answer outstanding; the last one resumes the task with the results array. */
void agent_batch_dec(struct agent_batch *b)
{
    if (--b->left > 0) {
        return;
    }
    char *s = cJSON_PrintUnformatted(b->results);
    agent_ready_push(b->task, s, s ? NULL : "out of memory");
    cJSON_free(s);
    agent_batch_free(b);
}

/* Delivers an answer (JSON text) or an error to w. */
void agent_deliver(struct agent_waiter w, const char *json, const char *err)
{
    if (!w.batch) {
        agent_ready_push(w.task, json, err);
        return;
    }
    cJSON *slot = cJSON_CreateObject();
    cJSON *v = json ? cJSON_Parse(json) : NULL;
    if (slot) {
        if (err || !v) {
            cJSON_AddStringToObject(slot, "err", err ? err : "invalid JSON from the host");
            cJSON_Delete(v);
        } else {
            cJSON_AddItemToObject(slot, "ok", v);
        }
        cJSON_ReplaceItemInArray(w.batch->results, w.slot, slot);
    } else {
        cJSON_Delete(v);
    }
    agent_batch_dec(w.batch);
}

static void task_unlink(struct agent_task *t)
{
    struct agent_run *run = t->run;
    for (struct agent_task **pp = &run->tasks; *pp; pp = &(*pp)->next) {
        if (*pp == t) {
            *pp = t->next;
            break;
        }
    }
    struct agent_worker *wk = run->w;
    struct agent_task *prev = NULL;
    for (struct agent_task *r = wk->ready; r; prev = r, r = r->ready_next) {
        if (r == t) {
            if (prev) {
                prev->ready_next = r->ready_next;
            } else {
                wk->ready = r->ready_next;
            }
            if (wk->ready_tail == t) {
                wk->ready_tail = prev;
            }
            break;
        }
    }
}

static void task_free(struct agent_task *t)
{
    wlua_run_destroy(t->lr);
    wye_free(t->res_json);
    wye_free(t->res_err);
    wye_free(t);
}

static const char *limit_name(enum wye_err e)
{
    switch (e) {
    case WYE_ERR_TOOBIG:
        return "memory limit";
    case WYE_ERR_LIMIT:
        return "instruction limit";
    case WYE_ERR_TIMEOUT:
        return "Lua time limit";
    default:
        return NULL;
    }
}

/* A task is over: hand its result (or error) to whoever waits for it. */
static void task_finish(struct agent_task *t, enum wlua_status s)
{
    struct agent_run *run = t->run;
    task_unlink(t);
    if (s == WLUA_ERROR && t->kind == AGENT_TASK_WORKFLOW && !run->traceback) {
        const char *tb = wlua_run_traceback(t->lr);
        run->traceback = tb && tb[0] ? wye_strdup(tb) : NULL;
    }
    enum wye_err e = s == WLUA_ERROR ? wlua_run_err(t->lr) : WYE_OK;
    const char *msg = s == WLUA_ERROR ? wlua_run_error(t->lr) : NULL;
    const char *lim = s == WLUA_ERROR ? limit_name(e) : NULL;
    if (lim || e == WYE_ERR_NOMEM || e == WYE_ERR_CANCELED) {
        char reason[2200];
        if (e == WYE_ERR_CANCELED) {
            snprintf(reason, sizeof(reason), "cancelled");
        } else {
            snprintf(reason, sizeof(reason), "stopped: %s: %s", lim ? lim : "out of memory", msg);
        }
        task_free(t);
        agent_run_end(run, e, reason, NULL);
        return;
    }
    const char *res = s == WLUA_DONE ? wlua_run_result(t->lr) : NULL;
    switch (t->kind) {
    case AGENT_TASK_WORKFLOW: {
        char *ans = res ? wye_strdup(res) : NULL;
        char reason[2200];
        snprintf(reason, sizeof(reason), "error: %s", msg ? msg : "out of memory");
        task_free(t);
        if (ans) {
            agent_run_end(run, WYE_OK, NULL, ans);
        } else {
            agent_run_end(run, e ? e : WYE_ERR_NOMEM, reason, NULL);
        }
        wye_free(ans);
        return;
    }
    case AGENT_TASK_CHILD:
        agent_deliver(t->parent, res, res ? NULL : (msg ? msg : "out of memory"));
        task_free(t);
        return;
    case AGENT_TASK_TOOLCALL: {
        /* a string result is given to the model as is; anything else as JSON */
        char *text = NULL;
        if (res) {
            cJSON *v = cJSON_Parse(res);
            text = wye_strdup(cJSON_IsString(v) ? v->valuestring : res);
            cJSON_Delete(v);
        } else {
            size_t n = strlen(msg ? msg : "") + 16;
            text = wye_malloc(n);
            if (text) {
                snprintf(text, n, "error: %s", msg ? msg : "");
            }
        }
        int slot = t->slot;
        task_free(t);
        agent_loop_on_tool(run, slot, text ? text : "error: out of memory");
        wye_free(text);
        return;
    }
    }
}

/* Handles the status a task returned with. */
static void task_handle(struct agent_task *t, enum wlua_status s)
{
    if (s != WLUA_YIELDED) {
        task_finish(t, s);
        return;
    }
    const char *name = NULL, *args = NULL;
    wlua_run_pending(t->lr, &name, &args);
    agent_dispatch(t, name, args);
}

/* Runs ready tasks until none is left (the worker's inner loop). */
static void drain_ready(struct agent_worker *wk)
{
    while (wk->ready) {
        struct agent_task *t = wk->ready;
        wk->ready = t->ready_next;
        if (!wk->ready) {
            wk->ready_tail = NULL;
        }
        t->ready = false;
        char *j = t->res_json, *e = t->res_err;
        t->res_json = t->res_err = NULL;
        wk->cur = t->run;
        enum wlua_status s = wlua_run_resume(t->lr, e ? NULL : j, e);
        wk->cur = NULL;
        wye_free(j);
        wye_free(e);
        task_handle(t, s);
    }
}

static struct agent_task *task_new(struct agent_run *run, enum agent_task_kind kind)
{
    struct agent_task *t = wye_calloc(1, sizeof(*t));
    if (!t) {
        return NULL;
    }
    t->run = run;
    t->kind = kind;
    t->next = run->tasks;
    run->tasks = t;
    return t;
}

/* Starts the prelude for t with args (a JSON object) and handles the first status. */
static void task_start(struct agent_task *t, cJSON *args)
{
    struct agent_run *run = t->run;
    char *aj = cJSON_PrintUnformatted(args);
    if (!aj) {
        task_unlink(t);
        task_free(t);
        agent_run_end(run, WYE_ERR_NOMEM, "stopped: out of memory", NULL);
        return;
    }
    run->w->cur = run;
    enum wlua_status s = wlua_run_start(run->w->st, "agents", agent_prelude_lua, agent_prelude_len,
                                        NULL, aj, &t->lr);
    run->w->cur = NULL;
    cJSON_free(aj);
    task_handle(t, s);
}

static cJSON *base_args(struct agent_run *run, const struct agent_file *f, const char *mode,
                        const char *name)
{
    cJSON *a = cJSON_CreateObject();
    if (!a || !cJSON_AddStringToObject(a, "mode", mode) ||
        !cJSON_AddStringToObject(a, "file", f->name) ||
        !cJSON_AddStringToObject(a, "src", f->src) || !cJSON_AddStringToObject(a, "name", name) ||
        !cJSON_AddNumberToObject(a, "run_id", (double)run->id) ||
        !cJSON_AddStringToObject(a, "agent", run->decl->name)) {
        cJSON_Delete(a);
        return NULL;
    }
    return a;
}

void agent_tool_start(struct agent_run *run, enum agent_task_kind kind, int slot,
                      struct agent_waiter w, int depth, const char *name, const char *args_json)
{
    char eb[600];
    const struct agent_tool *tool = agent_registry_tool(run->reg, name);
    bool listed = kind == AGENT_TASK_CHILD || run->decl->is_workflow;
    for (size_t i = 0; !listed && i < run->decl->n_tools; i++) {
        listed = strcmp(run->decl->tools[i], name) == 0;
    }
    eb[0] = '\0';
    if (!tool || !listed) {
        snprintf(eb, sizeof(eb), "unknown tool '%s'", name);
    } else if (depth > AGENT_TOOL_DEPTH_MAX) {
        snprintf(eb, sizeof(eb), "tools nest deeper than %d levels", AGENT_TOOL_DEPTH_MAX);
    } else {
        char why[512];
        if (agent_schema_check(tool->parameters, args_json, why, sizeof(why)) != WYE_OK) {
            snprintf(eb, sizeof(eb), "%s", why);
        }
    }
    if (eb[0]) {
        if (kind == AGENT_TASK_TOOLCALL) {
            char text[640];
            snprintf(text, sizeof(text), "error: %s", eb);
            agent_loop_on_tool(run, slot, text);
        } else {
            agent_deliver(w, NULL, eb);
        }
        return;
    }
    struct agent_task *t = task_new(run, kind);
    cJSON *a = t ? base_args(run, tool->file, "tool", name) : NULL;
    cJSON *av = a ? cJSON_Parse(args_json ? args_json : "{}") : NULL;
    if (!a || !av) {
        cJSON_Delete(a);
        if (t) {
            task_unlink(t);
            task_free(t);
        }
        agent_run_end(run, WYE_ERR_NOMEM, "stopped: out of memory", NULL);
        return;
    }
    cJSON_AddItemToObject(a, "args", av);
    t->slot = slot;
    t->parent = w;
    t->depth = depth;
    t->allow_hosts = tool->allow_hosts;
    if (w.task && w.task->allow_hosts && !t->allow_hosts) {
        t->allow_hosts = w.task->allow_hosts;
    }
    task_start(t, a);
    cJSON_Delete(a);
}

/* ---- answered ops ---- */

static void on_op(struct agent_op *op)
{
    struct agent_run *run = op->run;
    if (atomic_load(&run->ended)) {
        agent_op_free(op);
        return;
    }
    if (op->kind == AGENT_OP_STEP) {
        agent_loop_on_model(run, op);
        agent_op_free(op);
        return;
    }
    if (op->kind == AGENT_OP_CHAT) {
        agent_run_account(run, op);
        if (op->err) {
            agent_deliver(op->w, NULL, op->message ? op->message : wye_err_str(op->err));
        } else {
            cJSON *o = cJSON_CreateObject();
            cJSON *u = cJSON_CreateObject();
            cJSON_AddStringToObject(o, "text", op->text);
            cJSON_AddNumberToObject(u, "prompt_tokens", (double)op->prompt_tokens);
            cJSON_AddNumberToObject(u, "completion_tokens", (double)op->completion_tokens);
            cJSON_AddItemToObject(o, "usage", u);
            cJSON_AddNumberToObject(o, "cost_usd", op->cost_usd);
            cJSON_AddStringToObject(o, "route", op->route ? op->route : "");
            cJSON_AddStringToObject(o, "model", op->model ? op->model : "");
            if (op->tool_calls) {
                /* the calls the model asked for, in OpenAI form (arguments as JSON text) */
                char *calls = NULL, eb[256];
                cJSON *a =
                    agent_toolcalls_assemble(op->tool_calls, &calls, eb, sizeof(eb)) == WYE_OK
                        ? cJSON_Parse(calls)
                        : NULL;
                wye_free(calls);
                if (a) {
                    cJSON_AddItemToObject(o, "tool_calls", a);
                } else {
                    WYE_WARN("agents: run %llu: the model's tool calls are malformed",
                             (unsigned long long)run->id);
                }
            }
            char *s = cJSON_PrintUnformatted(o);
            cJSON_Delete(o);
            agent_deliver(op->w, s, s ? NULL : "out of memory");
            cJSON_free(s);
        }
    } else {
        if (op->err) {
            agent_deliver(op->w, NULL, op->message ? op->message : wye_err_str(op->err));
        } else {
            cJSON *o = cJSON_CreateObject();
            cJSON_AddNumberToObject(o, "status", (double)op->status);
            cJSON_AddStringToObject(o, "body", op->text);
            char *s = cJSON_PrintUnformatted(o);
            cJSON_Delete(o);
            agent_deliver(op->w, s, s ? NULL : "out of memory");
            cJSON_free(s);
        }
    }
    agent_op_free(op);
}

/* ---- runs ---- */

void agent_run_end(struct agent_run *run, enum wye_err err, const char *reason, const char *answer)
{
    if (atomic_exchange(&run->ended, true)) {
        return;
    }
    struct agent_worker *wk = run->w;
    atomic_fetch_sub(&wk->n_runs, 1);
    while (run->tasks) {
        struct agent_task *t = run->tasks;
        task_unlink(t);
        task_free(t);
    }
    free_sleeps(run);
    for (struct agent_run **pp = &wk->runs; *pp; pp = &(*pp)->next) {
        if (*pp == run) {
            *pp = run->next;
            break;
        }
    }
    if (reason) {
        WYE_INFO("agents: run %llu (%s) ended: %s", (unsigned long long)run->id, run->decl->name,
                 reason);
    }
    struct agent_outcome out = {
        .run_id = run->id,
        .err = err,
        .reason = reason,
        .answer = err ? NULL : answer,
        .n_steps = run->n_steps,
        .cost_usd = run->cost_usd,
        .saving_usd = run->saving_usd,
        .prompt_tokens = run->prompt_tokens,
        .completion_tokens = run->completion_tokens,
        .traceback = run->traceback,
    };
    char *calls = run->model_calls ? cJSON_PrintUnformatted(run->model_calls) : NULL;
    out.calls_json = calls ? calls : "[]";
    if (run->done) {
        run->done(run->done_arg, &out);
    }
    cJSON_free(calls);
    run->next = wk->dead;
    wk->dead = run;
}

static void bury_dead(struct agent_worker *wk)
{
    while (wk->dead) {
        struct agent_run *r = wk->dead;
        wk->dead = r->next;
        agent_run_unref(r);
    }
}

/* Starts an agent_rt_submit_call run: one tool or script task whose result ends the run. */
static void call_begin(struct agent_run *run)
{
    struct agent_task *t = task_new(run, AGENT_TASK_WORKFLOW);
    cJSON *a = t ? base_args(run, run->call_file, run->call_mode, run->call_name) : NULL;
    cJSON *av = a && run->input ? cJSON_Parse(run->input) : NULL;
    if (a && run->input && !av) {
        cJSON_Delete(a);
        agent_run_end(run, WYE_ERR_PARSE, "error: arguments: invalid JSON", NULL);
        return;
    }
    if (!a) {
        agent_run_end(run, WYE_ERR_NOMEM, "stopped: out of memory", NULL);
        return;
    }
    if (av) {
        cJSON_AddItemToObject(a, "args", av);
    }
    t->allow_hosts = run->call_hosts;
    task_start(t, a);
    cJSON_Delete(a);
}

static void run_begin(struct agent_worker *wk, struct agent_run *run)
{
    run->next = wk->runs;
    wk->runs = run;
    if (run->decl->timeout_s > 0) {
        run->deadline_ns = wye_now_ns() + (int64_t)(run->decl->timeout_s * 1e9);
    }
    if (run->call_mode) {
        call_begin(run);
        return;
    }
    if (!run->decl->is_workflow) {
        agent_loop_start(run);
        return;
    }
    struct agent_task *t = task_new(run, AGENT_TASK_WORKFLOW);
    cJSON *a = t ? base_args(run, run->decl->file, "workflow", run->decl->name) : NULL;
    cJSON *in = NULL;
    if (a) {
        in = cJSON_Parse(run->input);
        if (!in) {
            in = cJSON_CreateString(run->input);
        }
    }
    if (!a || !in) {
        cJSON_Delete(a);
        agent_run_end(run, WYE_ERR_NOMEM, "stopped: out of memory", NULL);
        return;
    }
    cJSON_AddItemToObject(a, "input", in);
    task_start(t, a);
    cJSON_Delete(a);
}

/* Answers the wye.sleep calls that are due. */
static void wake_sleepers(struct agent_worker *wk)
{
    int64_t now = wye_now_ns();
    for (struct agent_run *run = wk->runs; run; run = run->next) {
        struct agent_sleep **pp = &run->sleeps;
        while (*pp) {
            struct agent_sleep *z = *pp;
            if (now < z->wake_ns) {
                pp = &z->next;
                continue;
            }
            *pp = z->next;
            agent_deliver(z->w, "null", NULL);
            wye_free(z);
        }
    }
}

static void check_deadlines(struct agent_worker *wk)
{
    int64_t now = wye_now_ns();
    struct agent_run *run = wk->runs;
    while (run) {
        struct agent_run *next = run->next;
        if (run->deadline_ns && now >= run->deadline_ns) {
            char reason[96];
            snprintf(reason, sizeof(reason), "stopped: timeout_s (%g) reached",
                     run->decl->timeout_s);
            agent_run_end(run, WYE_ERR_TIMEOUT, reason, NULL);
        }
        run = next;
    }
}

static void handle_msg(struct agent_worker *wk, struct wye_qnode *n)
{
    struct agent_msg *m = WYE_CONTAINER_OF(n, struct agent_msg, node);
    switch (m->kind) {
    case AGENT_MSG_OP:
        on_op(m->op);
        return;
    case AGENT_MSG_SUBMIT:
        run_begin(wk, m->run);
        break;
    case AGENT_MSG_CANCEL:
        for (struct agent_run *r = wk->runs; r; r = r->next) {
            if (r->id == m->id) {
                agent_run_end(r, WYE_ERR_CANCELED, "cancelled", NULL);
                break;
            }
        }
        break;
    case AGENT_MSG_CANCEL_ALL:
        while (wk->runs) {
            agent_run_end(wk->runs, WYE_ERR_CANCELED, "cancelled", NULL);
        }
        break;
    }
    wye_free(m);
}

void *agent_worker_main(void *arg)
{
    struct agent_worker *wk = arg;
    char name[16];
    snprintf(name, sizeof(name), "wye-agent-%d", wk->index % 10000 + 1);
    (void)pthread_setname_np(pthread_self(), name);
    int64_t give_up_ns = 0;
    for (;;) {
        struct wye_qnode *n = wye_queue_pop(&wk->inbox, 20 * 1000000LL);
        if (n) {
            handle_msg(wk, n);
        }
        drain_ready(wk);
        wake_sleepers(wk);
        check_deadlines(wk);
        drain_ready(wk);
        bury_dead(wk);
        if (atomic_load(&wk->rt->stopping) && !wk->runs && wye_queue_len(&wk->inbox) == 0) {
            if (atomic_load(&wk->n_ops) == 0) {
                break;
            }
            if (!give_up_ns) {
                give_up_ns = wye_now_ns() + 10 * 1000000000LL;
            } else if (wye_now_ns() > give_up_ns) {
                WYE_WARN("agents: worker %d: %ld host calls never answered; the runtime's "
                         "memory is left to them",
                         wk->index, (long)atomic_load(&wk->n_ops));
                break;
            }
        }
    }
    return NULL;
}
