/* The agent loop: call the model with the conversation and the agent's tools, read the answer's
 * tool calls (OpenAI deltas for remote models, the model's own text format for local ones), run
 * the requested tools concurrently as tasks, append the assistant message and the tool results
 * (role "tool", tool_call_id), and repeat until a final answer or a limit (max_steps,
 * max_cost_usd; timeout_s and the Lua limits are enforced by agent_run.c).
 * Runs on the agent worker thread. */
#include <stdio.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "agents/agent_internal.h"
#include "common/alloc.h"
#include "common/log.h"

static void add_msg(struct agent_run *run, const char *role, const char *content)
{
    cJSON *m = cJSON_CreateObject();
    if (m) {
        cJSON_AddStringToObject(m, "role", role);
        cJSON_AddStringToObject(m, "content", content ? content : "");
        cJSON_AddItemToArray(run->messages, m);
    }
}

static enum wye_err build_tools(struct agent_run *run)
{
    const struct agent_decl *d = run->decl;
    if (d->n_tools == 0) {
        return WYE_OK;
    }
    cJSON *arr = cJSON_CreateArray();
    for (size_t i = 0; arr && i < d->n_tools; i++) {
        const struct agent_tool *t = agent_registry_tool(run->reg, d->tools[i]);
        cJSON *o = cJSON_CreateObject();
        cJSON *f = cJSON_CreateObject();
        cJSON *p = cJSON_Parse(t->parameters);
        if (!o || !f || !p) {
            cJSON_Delete(o);
            cJSON_Delete(f);
            cJSON_Delete(p);
            cJSON_Delete(arr);
            return WYE_ERR_NOMEM;
        }
        cJSON_AddStringToObject(o, "type", "function");
        cJSON_AddStringToObject(f, "name", t->name);
        cJSON_AddStringToObject(f, "description", t->description ? t->description : "");
        cJSON_AddItemToObject(f, "parameters", p);
        cJSON_AddItemToObject(o, "function", f);
        cJSON_AddItemToArray(arr, o);
    }
    char *s = arr ? cJSON_PrintUnformatted(arr) : NULL;
    cJSON_Delete(arr);
    run->tools_json = s ? wye_strdup(s) : NULL;
    cJSON_free(s);
    return run->tools_json ? WYE_OK : WYE_ERR_NOMEM;
}

static void step(struct agent_run *run)
{
    const struct agent_decl *d = run->decl;
    char reason[128], eb[512];
    if (run->n_steps >= d->max_steps) {
        snprintf(reason, sizeof(reason), "stopped: max_steps (%d) reached", d->max_steps);
        agent_run_end(run, WYE_ERR_LIMIT, reason, NULL);
        return;
    }
    if (d->max_cost_usd > 0 && run->cost_usd >= d->max_cost_usd) {
        snprintf(reason, sizeof(reason), "stopped: max_cost_usd (%g) reached", d->max_cost_usd);
        agent_run_end(run, WYE_ERR_LIMIT, reason, NULL);
        return;
    }
    char *mj = cJSON_PrintUnformatted(run->messages);
    struct agent_waiter w = {NULL, NULL, -1};
    struct agent_op *op = mj ? agent_op_new(run, AGENT_OP_STEP, w) : NULL;
    if (!op) {
        cJSON_free(mj);
        agent_run_end(run, WYE_ERR_NOMEM, "stopped: out of memory", NULL);
        return;
    }
    run->n_steps++;
    op->step = run->n_steps;
    agent_run_emit(run, "{\"type\":\"step\",\"step\":%d}", run->n_steps);
    struct agent_chat_call call = {
        .run_id = run->id,
        .agent = d->name,
        .model = d->model,
        .messages_json = mj,
        .tools_json = run->tools_json,
        .key_name = run->key_name,
    };
    enum wye_err err = run->rt->ops.chat(run->rt->host, &call, op, eb, sizeof(eb));
    cJSON_free(mj);
    if (err) {
        agent_op_free(op);
        char r2[600];
        snprintf(r2, sizeof(r2), "error: model call failed: %s", eb);
        agent_run_end(run, err, r2, NULL);
    }
}

void agent_loop_start(struct agent_run *run)
{
    run->messages = cJSON_CreateArray();
    if (!run->messages || build_tools(run) != WYE_OK) {
        agent_run_end(run, WYE_ERR_NOMEM, "stopped: out of memory", NULL);
        return;
    }
    if (run->decl->system) {
        add_msg(run, "system", run->decl->system);
    }
    add_msg(run, "user", run->input);
    step(run);
}

static void clear_step(struct agent_run *run)
{
    for (int i = 0; run->results && i < run->n_calls; i++) {
        wye_free(run->results[i]);
    }
    wye_free(run->results);
    run->results = NULL;
    cJSON_Delete(run->calls);
    run->calls = NULL;
    run->n_calls = run->n_calls_left = 0;
}

/* Every tool call of the step answered: append the results in call order, go on. */
static void after_tools(struct agent_run *run)
{
    int i = 0;
    const cJSON *c;
    cJSON_ArrayForEach(c, run->calls)
    {
        cJSON *m = cJSON_CreateObject();
        const cJSON *id = cJSON_GetObjectItemCaseSensitive(c, "id");
        if (m) {
            cJSON_AddStringToObject(m, "role", "tool");
            cJSON_AddStringToObject(m, "tool_call_id", cJSON_IsString(id) ? id->valuestring : "");
            cJSON_AddStringToObject(m, "content", run->results[i] ? run->results[i] : "");
            cJSON_AddItemToArray(run->messages, m);
        }
        i++;
    }
    clear_step(run);
    step(run);
}

void agent_loop_on_tool(struct agent_run *run, int slot, const char *text)
{
    if (slot < 0 || slot >= run->n_calls || !run->results) {
        return;
    }
    run->results[slot] = wye_strdup(text);
    const cJSON *c = cJSON_GetArrayItem(run->calls, slot);
    const cJSON *f = cJSON_GetObjectItemCaseSensitive(c, "function");
    const cJSON *nm = cJSON_GetObjectItemCaseSensitive(f, "name");
    cJSON *ev = cJSON_CreateObject();
    cJSON_AddStringToObject(ev, "type", "tool_result");
    cJSON_AddStringToObject(ev, "name", cJSON_IsString(nm) ? nm->valuestring : "");
    cJSON_AddStringToObject(ev, "result", text);
    agent_run_emit_json(run, ev, "result");
    if (--run->n_calls_left == 0) {
        after_tools(run);
    }
}

void agent_loop_on_model(struct agent_run *run, struct agent_op *op)
{
    const struct agent_decl *d = run->decl;
    char eb[512], reason[700];
    agent_run_account(run, op);
    if (op->err) {
        snprintf(reason, sizeof(reason), "error: model call failed: %s",
                 op->message ? op->message : wye_err_str(op->err));
        agent_run_end(run, op->err, reason, NULL);
        return;
    }
    char *calls = NULL, *content = NULL;
    enum wye_err err;
    if (op->format == AGENT_TOOLFMT_OPENAI) {
        err = agent_toolcalls_assemble(op->tool_calls, &calls, eb, sizeof(eb));
        content = wye_strdup(op->text);
        if (!err && !content) {
            err = WYE_ERR_NOMEM;
        }
    } else {
        err = agent_toolparse(op->format, op->text, &calls, &content, eb, sizeof(eb));
    }
    if (err == WYE_ERR_PARSE) {
        /* the model wrote a broken call: tell it and let it try again (counts as a step) */
        add_msg(run, "assistant", op->text);
        snprintf(reason, sizeof(reason), "error: %s. Write the tool call again as valid JSON.", eb);
        add_msg(run, "user", reason);
        agent_run_emit(run, "{\"type\":\"tool_parse_error\"}");
        wye_free(calls);
        wye_free(content);
        step(run);
        return;
    }
    if (err) {
        wye_free(calls);
        wye_free(content);
        agent_run_end(run, err, "stopped: out of memory", NULL);
        return;
    }
    if (!calls) {
        agent_run_emit(run, "{\"type\":\"answer\",\"step\":%d}", run->n_steps);
        agent_run_end(run, WYE_OK, NULL, content);
        wye_free(content);
        return;
    }
    if (d->max_cost_usd > 0 && run->cost_usd >= d->max_cost_usd) {
        wye_free(calls);
        wye_free(content);
        snprintf(reason, sizeof(reason), "stopped: max_cost_usd (%g) reached", d->max_cost_usd);
        agent_run_end(run, WYE_ERR_LIMIT, reason, NULL);
        return;
    }
    run->calls = cJSON_Parse(calls);
    wye_free(calls);
    cJSON *m = cJSON_CreateObject();
    if (!run->calls || !m) {
        cJSON_Delete(m);
        wye_free(content);
        agent_run_end(run, WYE_ERR_NOMEM, "stopped: out of memory", NULL);
        return;
    }
    cJSON_AddStringToObject(m, "role", "assistant");
    if (content && content[0]) {
        cJSON_AddStringToObject(m, "content", content);
    } else {
        cJSON_AddNullToObject(m, "content");
    }
    wye_free(content);
    cJSON_AddItemToObject(m, "tool_calls", cJSON_Duplicate(run->calls, true));
    cJSON_AddItemToArray(run->messages, m);
    run->n_calls = cJSON_GetArraySize(run->calls);
    run->results = wye_calloc((size_t)run->n_calls, sizeof(char *));
    if (!run->results) {
        agent_run_end(run, WYE_ERR_NOMEM, "stopped: out of memory", NULL);
        return;
    }
    /* the +1 guard: tools that finish at once must not start the next step early */
    run->n_calls_left = run->n_calls + 1;
    uint64_t id = run->id;
    (void)id;
    for (int i = 0; i < run->n_calls && !atomic_load(&run->ended); i++) {
        const cJSON *c = cJSON_GetArrayItem(run->calls, i);
        const cJSON *f = cJSON_GetObjectItemCaseSensitive(c, "function");
        const cJSON *nm = cJSON_GetObjectItemCaseSensitive(f, "name");
        const cJSON *args = cJSON_GetObjectItemCaseSensitive(f, "arguments");
        const char *aj = cJSON_IsString(args) && args->valuestring[0] ? args->valuestring : "{}";
        const char *name = cJSON_IsString(nm) ? nm->valuestring : "";
        cJSON *ev = cJSON_CreateObject();
        if (ev) {
            cJSON_AddStringToObject(ev, "type", "tool_call");
            cJSON_AddStringToObject(ev, "name", name);
            cJSON_AddStringToObject(ev, "arguments", aj);
        }
        agent_run_emit_json(run, ev, "arguments");
        struct agent_waiter w = {NULL, NULL, -1};
        agent_tool_start(run, AGENT_TASK_TOOLCALL, i, w, 0, name, aj);
    }
    if (!atomic_load(&run->ended) && --run->n_calls_left == 0) {
        after_tools(run);
    }
}
