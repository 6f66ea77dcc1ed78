/* The agent runtime against a fake host: loading (bad files reported and skipped), the agent
 * loop (schema errors and tool errors go back to the model), concurrent tool calls, ctx:all,
 * ctx:tool/ctx:chat/ctx:emit, the host allowlist, every limit (steps, cost, time, memory,
 * instructions), cancellation and reload. The fake host answers model calls at once from a
 * script in the user message and holds HTTP requests until the test releases them. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <cmocka.h>

#include "agents/agents.h"
#include "common/alloc.h"
#include "common/buf.h"

#define SCRIPTS WYE_SOURCE_DIR "/tests/agents/scripts"
#define HELD_MAX 16

struct fake {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    struct agent_op *held[HELD_MAX]; /* worker thread only (answered there or after the run) */
    int n_held;
    int release_at; /* answer every held http op once this many wait */
    int n_chat, n_http, n_events;
    int last_timeout_ms; /* of the last http request */
    char last_tool_content[512];
    /* the outcome */
    bool done;
    enum wye_err err;
    char reason[512];
    char *answer;
    int n_steps;
    double cost, saving;
    int64_t prompt_tokens, completion_tokens;
    char *calls_json;
    /* events since the last submit */
    int n_bad_events, n_model_calls;
    size_t max_event_len, result_len;
    bool result_truncated;
    /* delta events since the last submit */
    int n_deltas, n_bad_deltas, last_delta_step;
    struct wye_buf delta_text;
};

static void release_all(struct fake *f, enum wye_err err)
{
    for (int i = 0; i < f->n_held; i++) {
        struct agent_op *op = f->held[i];
        struct agent_http_result r = {.err = err,
                                      .message = err ? "cancelled" : NULL,
                                      .status = 200,
                                      .body = "fetched",
                                      .body_len = 7};
        agent_op_http_done(op, &r);
    }
    f->n_held = 0;
}

static enum wye_err fake_http(void *ctx, const struct agent_http_req *req, struct agent_op *op,
                              char *errbuf, size_t errlen)
{
    struct fake *f = ctx;
    (void)errbuf;
    (void)errlen;
    pthread_mutex_lock(&f->lock);
    f->n_http++;
    f->last_timeout_ms = req->timeout_ms;
    if (strstr(req->url, "/now")) {
        pthread_mutex_unlock(&f->lock);
        struct agent_http_result r = {
            .status = 200, .body = req->url, .body_len = strlen(req->url)};
        agent_op_http_done(op, &r);
        return WYE_OK;
    }
    f->held[f->n_held++] = op;
    if (f->release_at > 0 && f->n_held >= f->release_at) {
        /* answer each with its own URL's last letter so ctx:all's order is checkable */
        release_all(f, WYE_OK);
    }
    pthread_mutex_unlock(&f->lock);
    return WYE_OK;
}

/* The model: the first user message is a JSON script {"calls":[[name,args],..],"loop":bool,
 * "cost":usd}. It asks for the calls until a tool result is in, then answers with the last
 * tool result. */
static enum wye_err fake_chat(void *ctx, const struct agent_chat_call *call, struct agent_op *op,
                              char *errbuf, size_t errlen)
{
    struct fake *f = ctx;
    (void)errbuf;
    (void)errlen;
    pthread_mutex_lock(&f->lock);
    f->n_chat++;
    pthread_mutex_unlock(&f->lock);
    cJSON *msgs = cJSON_Parse(call->messages_json);
    const char *script = "{}";
    const char *last_role = "", *last_content = "";
    cJSON *m;
    cJSON_ArrayForEach(m, msgs)
    {
        const char *role = cJSON_GetObjectItemCaseSensitive(m, "role")->valuestring;
        const cJSON *c = cJSON_GetObjectItemCaseSensitive(m, "content");
        if (strcmp(role, "user") == 0 && strcmp(script, "{}") == 0 && cJSON_IsString(c)) {
            script = c->valuestring;
        }
        last_role = role;
        last_content = cJSON_IsString(c) ? c->valuestring : "";
    }
    cJSON *s = cJSON_Parse(script);
    const cJSON *cost = cJSON_GetObjectItemCaseSensitive(s, "cost");
    const cJSON *big = cJSON_GetObjectItemCaseSensitive(s, "bigdelta");
    if (cJSON_IsNumber(big)) {
        /* a piece of big.valueint bytes of two-byte characters, before the answer */
        size_t n = (size_t)big->valueint;
        char *t = malloc(n + 1);
        for (size_t i = 0; i + 1 < n; i += 2) {
            memcpy(t + i, "\xc3\xa9", 2);
        }
        t[n - (n % 2)] = '\0';
        agent_op_delta(op, t, n - (n % 2));
        free(t);
    }
    bool loop = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(s, "loop"));
    struct agent_chat_result r = {.text = "",
                                  .route = "remote",
                                  .model = "fake",
                                  .prompt_tokens = 10,
                                  .completion_tokens = 5,
                                  .cost_usd = cJSON_IsNumber(cost) ? cost->valuedouble : 0,
                                  .saving_usd = 0.001};
    struct wye_buf deltas;
    wye_buf_init(&deltas, 1 << 16);
    char text[700];
    const cJSON *calls = cJSON_GetObjectItemCaseSensitive(s, "calls");
    if (!call->tools_json) {
        snprintf(text, sizeof(text), "model says: %.200s", last_content);
        r.text = text;
        agent_op_delta(op, text, strlen(text)); /* not an agent-loop call: ignored */
    } else if (strcmp(last_role, "tool") == 0 && !loop) {
        snprintf(f->last_tool_content, sizeof(f->last_tool_content), "%s", last_content);
        snprintf(text, sizeof(text), "final: %.600s", last_content);
        r.text = text;
    } else {
        int i = 0;
        const cJSON *c;
        cJSON_ArrayForEach(c, calls)
        {
            char *args = cJSON_PrintUnformatted(cJSON_GetArrayItem(c, 1));
            cJSON *d = cJSON_CreateArray();
            cJSON *o = cJSON_CreateObject();
            cJSON_AddNumberToObject(o, "index", i);
            char id[16];
            snprintf(id, sizeof(id), "c%d", i++);
            cJSON_AddStringToObject(o, "id", id);
            cJSON *fn = cJSON_AddObjectToObject(o, "function");
            cJSON_AddStringToObject(fn, "name", cJSON_GetArrayItem(c, 0)->valuestring);
            cJSON_AddStringToObject(fn, "arguments", args);
            cJSON_AddItemToArray(d, o);
            char *ds = cJSON_PrintUnformatted(d);
            wye_buf_append_str(&deltas, ds);
            wye_buf_append_str(&deltas, "\n");
            cJSON_free(ds);
            cJSON_free(args);
            cJSON_Delete(d);
        }
        r.tool_calls = deltas.data;
    }
    if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(s, "stream")) && r.text[0]) {
        /* the text in three pieces as it "arrives", then the answer */
        size_t n = strlen(r.text);
        agent_op_delta(op, r.text, n / 3);
        agent_op_delta(op, r.text + n / 3, n / 3);
        agent_op_delta(op, r.text + 2 * (n / 3), n - 2 * (n / 3));
    }
    agent_op_chat_done(op, &r);
    wye_buf_cleanup(&deltas);
    cJSON_Delete(s);
    cJSON_Delete(msgs);
    return WYE_OK;
}

static void fake_emit(void *ctx, uint64_t run_id, const char *ev)
{
    struct fake *f = ctx;
    cJSON *j = cJSON_Parse(ev);
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(j, "type");
    const cJSON *res = cJSON_GetObjectItemCaseSensitive(j, "result");
    pthread_mutex_lock(&f->lock);
    f->n_events++;
    f->n_bad_events += j ? 0 : 1;
    f->max_event_len = strlen(ev) > f->max_event_len ? strlen(ev) : f->max_event_len;
    if (cJSON_IsString(t) && strcmp(t->valuestring, "model_call") == 0) {
        f->n_model_calls++;
    }
    if (cJSON_IsString(t) && strcmp(t->valuestring, "delta") == 0) {
        const cJSON *d = cJSON_GetObjectItemCaseSensitive(j, "delta");
        const cJSON *st = cJSON_GetObjectItemCaseSensitive(j, "step");
        const cJSON *rid = cJSON_GetObjectItemCaseSensitive(j, "run_id");
        f->n_deltas++;
        if (!cJSON_IsString(d) || !cJSON_IsNumber(st) || !cJSON_IsNumber(rid) ||
            (uint64_t)rid->valuedouble != run_id || strlen(ev) > AGENT_EVENT_MAX) {
            f->n_bad_deltas++;
        } else {
            f->last_delta_step = st->valueint;
            wye_buf_append_str(&f->delta_text, d->valuestring);
        }
    }
    if (cJSON_IsString(t) && strcmp(t->valuestring, "tool_result") == 0 && cJSON_IsString(res)) {
        f->result_len = strlen(res->valuestring);
        f->result_truncated = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(j, "truncated"));
    }
    cJSON_Delete(j);
    pthread_mutex_unlock(&f->lock);
}

static const struct agent_host_ops fake_ops = {fake_chat, fake_http, fake_emit};

static void on_done(void *arg, const struct agent_outcome *o)
{
    struct fake *f = arg;
    pthread_mutex_lock(&f->lock);
    f->done = true;
    f->err = o->err;
    snprintf(f->reason, sizeof(f->reason), "%s", o->reason ? o->reason : "");
    f->answer = o->answer ? strdup(o->answer) : NULL;
    f->n_steps = o->n_steps;
    f->cost = o->cost_usd;
    f->saving = o->saving_usd;
    f->prompt_tokens = o->prompt_tokens;
    f->completion_tokens = o->completion_tokens;
    free(f->calls_json);
    f->calls_json = o->calls_json ? strdup(o->calls_json) : NULL;
    /* the run is over: whatever http it left behind is answered as cancelled */
    release_all(f, WYE_ERR_CANCELED);
    pthread_cond_broadcast(&f->cond);
    pthread_mutex_unlock(&f->lock);
}

struct env {
    struct fake f;
    struct agent_rt *rt;
};

static struct env *env_new(const char *dir, size_t mem, int64_t insns)
{
    struct env *e = calloc(1, sizeof(*e));
    pthread_mutex_init(&e->f.lock, NULL);
    pthread_cond_init(&e->f.cond, NULL);
    wye_buf_init(&e->f.delta_text, 1 << 20);
    struct agent_rt_opts o = {.dir = dir, .mem_bytes_max = mem, .n_insns_max = insns};
    char eb[256] = "";
    if (agent_rt_create(&o, &fake_ops, &e->f, &e->rt, eb, sizeof(eb)) != WYE_OK) {
        fail_msg("agent_rt_create: %s", eb);
    }
    assert_int_equal(agent_rt_start(e->rt), WYE_OK);
    return e;
}

static void env_free(struct env *e)
{
    agent_rt_destroy(e->rt);
    free(e->f.answer);
    free(e->f.calls_json);
    wye_buf_cleanup(&e->f.delta_text);
    pthread_mutex_destroy(&e->f.lock);
    pthread_cond_destroy(&e->f.cond);
    free(e);
}

/* Submits name(input) and waits up to 10 s for the outcome. */
static uint64_t submit(struct env *e, const char *name, const char *input)
{
    char eb[256] = "";
    uint64_t id = 0;
    pthread_mutex_lock(&e->f.lock);
    e->f.done = false;
    free(e->f.answer);
    e->f.answer = NULL;
    e->f.n_bad_events = e->f.n_model_calls = 0;
    e->f.max_event_len = e->f.result_len = 0;
    e->f.result_truncated = false;
    e->f.n_deltas = e->f.n_bad_deltas = e->f.last_delta_step = 0;
    wye_buf_reset(&e->f.delta_text);
    pthread_mutex_unlock(&e->f.lock);
    if (agent_rt_submit(e->rt, name, input, on_done, &e->f, &id, eb, sizeof(eb)) != WYE_OK) {
        fail_msg("submit %s: %s", name, eb);
    }
    return id;
}

static void wait_done(struct env *e)
{
    struct timespec dl;
    clock_gettime(CLOCK_REALTIME, &dl);
    dl.tv_sec += 10;
    pthread_mutex_lock(&e->f.lock);
    while (!e->f.done) {
        if (pthread_cond_timedwait(&e->f.cond, &e->f.lock, &dl) != 0) {
            break;
        }
    }
    bool done = e->f.done;
    pthread_mutex_unlock(&e->f.lock);
    assert_true(done);
}

static void run(struct env *e, const char *name, const char *input)
{
    submit(e, name, input);
    wait_done(e);
}

static void test_load_errors(void **state)
{
    (void)state;
    struct env *e = env_new(SCRIPTS, 0, 0);
    struct wye_buf b;
    wye_buf_init(&b, 1 << 20);
    assert_int_equal(agent_rt_list_json(e->rt, &b), WYE_OK);
    cJSON *j = cJSON_Parse(b.data);
    char *errs = cJSON_PrintUnformatted(cJSON_GetObjectItemCaseSensitive(j, "errors"));
    /* file:line for both broken files; the good file still loaded */
    assert_non_null(strstr(errs, "bad_syntax.lua:4:"));
    assert_non_null(strstr(errs, "bad_runtime.lua:2: agent: 'name' must be a non-empty string"));
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(j, "tools")), 7);
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(j, "agents")), 2);
    cJSON_free(errs);
    cJSON_Delete(j);
    wye_buf_cleanup(&b);
    char eb[256];
    assert_int_equal(agent_rt_submit(e->rt, "nope", "", on_done, &e->f, NULL, eb, sizeof(eb)),
                     WYE_ERR_NOTFOUND);
    assert_non_null(strstr(eb, "no agent or workflow named 'nope'"));
    env_free(e);
    struct agent_rt *rt = NULL;
    struct agent_rt_opts o = {.dir = "/nonexistent/agents"};
    assert_int_equal(agent_rt_create(&o, &fake_ops, NULL, &rt, eb, sizeof(eb)), WYE_ERR_NOTFOUND);
    assert_null(rt);
}

static void test_agent_loop(void **state)
{
    (void)state;
    struct env *e = env_new(SCRIPTS, 0, 0);
    run(e, "helper", "{\"calls\":[[\"lookup\",{\"order_id\":\"42\"}]]}");
    assert_int_equal(e->f.err, WYE_OK);
    assert_non_null(e->f.answer);
    assert_non_null(strstr(e->f.answer, "final: "));
    assert_non_null(strstr(e->f.answer, "\"status\":\"shipped\""));
    assert_non_null(strstr(e->f.answer, "\"id\":\"42\""));
    assert_int_equal(e->f.n_steps, 2);
    assert_true(e->f.n_events >= 4); /* step, tool_call, tool_result, step, answer */

    /* a schema mismatch goes back to the model as the tool result */
    run(e, "helper", "{\"calls\":[[\"lookup\",{\"order_id\":1234}]]}");
    assert_int_equal(e->f.err, WYE_OK);
    assert_string_equal(e->f.last_tool_content, "error: argument 'order_id' must be a string");
    /* so does a tool's error, and an unknown tool */
    run(e, "helper", "{\"calls\":[[\"boom\",{}]]}");
    assert_int_equal(e->f.err, WYE_OK);
    assert_string_equal(e->f.last_tool_content, "error: tools.lua:16: boom");
    run(e, "helper", "{\"calls\":[[\"rm_rf\",{}]]}");
    assert_string_equal(e->f.last_tool_content, "error: unknown tool 'rm_rf'");
    env_free(e);
}

/* Run ids name runs in events, logs and the ledger, so a restarted runtime must not hand out
 * the ids of the one before it: they count up within a runtime, and a runtime created later
 * starts above every id of an earlier one. They stay exact in JSON numbers (doubles). */
static void test_run_ids_across_restarts(void **state)
{
    (void)state;
    struct env *e = env_new(SCRIPTS, 0, 0);
    uint64_t a = submit(e, "helper", "{\"calls\":[]}");
    wait_done(e);
    uint64_t b = submit(e, "helper", "{\"calls\":[]}");
    wait_done(e);
    assert_true(b == a + 1);
    env_free(e);
    struct timespec ms = {0, 2000000};
    nanosleep(&ms, NULL); /* a later start, in ms */
    e = env_new(SCRIPTS, 0, 0);
    uint64_t c = submit(e, "helper", "{\"calls\":[]}");
    wait_done(e);
    assert_true(c > b);
    assert_true(c < (UINT64_C(1) << 53));
    assert_true((uint64_t)(double)c == c);
    env_free(e);
}

/* Text pieces the host reports while a step's model call runs become "delta" events with the
 * run id and step, in order; a big piece is split into events that each fit, on UTF-8
 * boundaries; a workflow's ctx:chat does not stream. */
static void test_deltas(void **state)
{
    (void)state;
    struct env *e = env_new(SCRIPTS, 0, 0);
    run(e, "helper", "{\"calls\":[[\"lookup\",{\"order_id\":\"42\"}]],\"stream\":true}");
    assert_int_equal(e->f.err, WYE_OK);
    assert_int_equal(e->f.n_steps, 2);
    /* step 1 answered with tool calls only (no text); step 2's text in three pieces */
    assert_int_equal(e->f.n_deltas, 3);
    assert_int_equal(e->f.n_bad_deltas, 0);
    assert_int_equal(e->f.last_delta_step, 2);
    assert_string_equal(e->f.delta_text.data, e->f.answer);

    /* 40000 bytes in one piece: five events, each under the cap, the text intact */
    run(e, "helper", "{\"bigdelta\":40000}");
    assert_int_equal(e->f.err, WYE_OK);
    assert_int_equal(e->f.n_bad_deltas, 0);
    assert_int_equal(e->f.n_deltas, 5);
    assert_int_equal(e->f.delta_text.len, 40000);
    for (size_t i = 0; i < 40000; i += 2) {
        assert_memory_equal(e->f.delta_text.data + i, "\xc3\xa9", 2);
    }

    /* a workflow's ctx:chat is answered, but its text is not streamed */
    run(e, "chain", "{\"id\":\"42\"}");
    assert_int_equal(e->f.err, WYE_OK);
    assert_non_null(strstr(e->f.answer, "model says: hi shipped"));
    assert_int_equal(e->f.n_deltas, 0);
    env_free(e);
}

/* The outcome sums every model call and lists it; each call is a model_call event. */
static void test_accounting(void **state)
{
    (void)state;
    struct env *e = env_new(SCRIPTS, 0, 0);
    run(e, "helper", "{\"calls\":[[\"noop\",{}]],\"cost\":0.01}");
    assert_int_equal(e->f.err, WYE_OK);
    assert_int_equal(e->f.n_steps, 2);
    assert_int_equal(e->f.n_model_calls, 2);
    assert_int_equal(e->f.prompt_tokens, 20);
    assert_int_equal(e->f.completion_tokens, 10);
    assert_float_equal(e->f.cost, 0.02, 1e-12);
    assert_float_equal(e->f.saving, 0.002, 1e-12);
    cJSON *calls = cJSON_Parse(e->f.calls_json);
    assert_true(cJSON_IsArray(calls));
    assert_int_equal(cJSON_GetArraySize(calls), 2);
    double sum = 0;
    const cJSON *c;
    cJSON_ArrayForEach(c, calls)
    {
        assert_string_equal(cJSON_GetObjectItemCaseSensitive(c, "route")->valuestring, "remote");
        assert_string_equal(cJSON_GetObjectItemCaseSensitive(c, "model")->valuestring, "fake");
        assert_int_equal(cJSON_GetObjectItemCaseSensitive(c, "prompt_tokens")->valueint, 10);
        assert_int_equal(cJSON_GetObjectItemCaseSensitive(c, "completion_tokens")->valueint, 5);
        sum += cJSON_GetObjectItemCaseSensitive(c, "cost_usd")->valuedouble;
    }
    assert_float_equal(sum, e->f.cost, 1e-12);
    cJSON_Delete(calls);
    /* a workflow's ctx:chat calls count too */
    run(e, "chain", "{\"id\":\"7\"}");
    assert_int_equal(e->f.err, WYE_OK);
    assert_int_equal(e->f.n_model_calls, 1);
    calls = cJSON_Parse(e->f.calls_json);
    assert_int_equal(cJSON_GetArraySize(calls), e->f.n_model_calls);
    assert_int_equal(e->f.prompt_tokens, 10 * e->f.n_model_calls);
    cJSON_Delete(calls);
    env_free(e);
}

/* Large tool results: events stay valid JSON; past AGENT_EVENT_MAX the result string (not the
 * JSON) is cut and flagged. */
static void test_big_events(void **state)
{
    (void)state;
    struct env *e = env_new(SCRIPTS, 0, 0);
    run(e, "helper", "{\"calls\":[[\"blob\",{\"n\":10240}]]}");
    assert_int_equal(e->f.err, WYE_OK);
    assert_int_equal(e->f.n_bad_events, 0);
    assert_int_equal(e->f.result_len, 10240);
    assert_false(e->f.result_truncated);
    run(e, "helper", "{\"calls\":[[\"blob\",{\"n\":102400}]]}");
    assert_int_equal(e->f.err, WYE_OK);
    assert_int_equal(e->f.n_bad_events, 0);
    assert_true(e->f.result_truncated);
    assert_true(e->f.result_len > AGENT_EVENT_MAX / 2);
    assert_true(e->f.result_len < AGENT_EVENT_MAX);
    assert_true(e->f.max_event_len <= AGENT_EVENT_MAX);
    /* the model still got the whole result */
    assert_int_equal(strlen(e->f.last_tool_content), sizeof(e->f.last_tool_content) - 1);
    env_free(e);
}

static void test_concurrent_tools(void **state)
{
    (void)state;
    struct env *e = env_new(SCRIPTS, 0, 0);
    /* the host answers only once both requests wait: serial tools would never finish */
    e->f.release_at = 2;
    run(e, "helper", "{\"calls\":[[\"fetch\",{}],[\"fetch\",{}]]}");
    assert_int_equal(e->f.err, WYE_OK);
    assert_int_equal(e->f.n_http, 2);
    assert_string_equal(e->f.answer, "final: fetched");
    /* ctx:all: three branches wait on http at once (one through a child tool) */
    e->f.release_at = 3;
    run(e, "fanout", "null");
    assert_int_equal(e->f.err, WYE_OK);
    assert_string_equal(e->f.answer, "[\"fetched\",\"fetched\",\"plain\",\"fetched\"]");
    env_free(e);
}

static void test_workflows(void **state)
{
    (void)state;
    struct env *e = env_new(SCRIPTS, 0, 0);
    run(e, "chain", "{\"id\":\"7\"}");
    assert_int_equal(e->f.err, WYE_OK);
    cJSON *j = cJSON_Parse(e->f.answer);
    assert_non_null(j);
    assert_string_equal(
        cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(j, "tool"), "id")
            ->valuestring,
        "7");
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(j, "text")->valuestring,
                        "model says: hi shipped");
    cJSON_Delete(j);
    assert_true(e->f.n_events >= 1);
    run(e, "badtool", "null");
    assert_non_null(strstr(e->f.answer, "wye.tool: argument 'order_id' must be a string"));
    run(e, "nohost", "null");
    assert_non_null(strstr(e->f.answer, "host 'evil.example' is not allowed for 'nohost'"));
    assert_int_equal(e->f.n_http, 0);
    run(e, "failing", "null");
    assert_int_not_equal(e->f.err, WYE_OK);
    assert_non_null(strstr(e->f.reason, "tools.lua:"));
    assert_non_null(strstr(e->f.reason, "attempt to index a nil value"));
    env_free(e);
}

static void test_limits(void **state)
{
    (void)state;
    struct env *e = env_new(SCRIPTS, 24u << 20, 2000000);
    run(e, "helper", "{\"calls\":[[\"noop\",{}]],\"loop\":true}");
    assert_int_equal(e->f.err, WYE_ERR_LIMIT);
    assert_string_equal(e->f.reason, "stopped: max_steps (3) reached");
    assert_int_equal(e->f.n_steps, 3);

    run(e, "helper", "{\"calls\":[[\"noop\",{}]],\"loop\":true,\"cost\":0.03}");
    assert_int_equal(e->f.err, WYE_ERR_LIMIT);
    assert_string_equal(e->f.reason, "stopped: max_cost_usd (0.05) reached");
    assert_int_equal(e->f.n_steps, 2);

    run(e, "sleepy", "{\"calls\":[[\"fetch\",{}]]}");
    assert_int_equal(e->f.err, WYE_ERR_TIMEOUT);
    assert_string_equal(e->f.reason, "stopped: timeout_s (0.3) reached");

    run(e, "helper", "{\"calls\":[[\"hog\",{}]]}");
    assert_int_equal(e->f.err, WYE_ERR_TOOBIG);
    assert_non_null(strstr(e->f.reason, "stopped: memory limit: "));

    run(e, "helper", "{\"calls\":[[\"spin\",{}]]}");
    assert_int_equal(e->f.err, WYE_ERR_LIMIT);
    assert_non_null(strstr(e->f.reason, "stopped: instruction limit: "));

    /* a limit hit by one ctx:all branch's child tool ends the whole run */
    run(e, "allhog", "null");
    assert_int_equal(e->f.err, WYE_ERR_TOOBIG);
    assert_non_null(strstr(e->f.reason, "stopped: memory limit: "));

    /* a workflow's model calls count against its max_cost_usd */
    run(e, "costly", "null");
    assert_int_equal(e->f.err, WYE_ERR_LIMIT);
    assert_string_equal(e->f.reason, "stopped: max_cost_usd (0.05) reached");
    assert_true(e->f.cost >= 0.05);

    /* the worker is still healthy after all that */
    run(e, "helper", "{\"calls\":[[\"noop\",{}]]}");
    assert_int_equal(e->f.err, WYE_OK);
    assert_string_equal(e->f.answer, "final: ok");
    env_free(e);
}

static void write_text(const char *path, const char *text)
{
    FILE *fp = fopen(path, "w");
    assert_non_null(fp);
    assert_true(fputs(text, fp) >= 0);
    assert_int_equal(fclose(fp), 0);
}

static void test_cancel_and_reload(void **state)
{
    (void)state;
    char dir[] = "/tmp/wye-agents-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char path[300];
    snprintf(path, sizeof(path), "%s/a.lua", dir);
    write_text(path, "tool { name = 'fetch', run = function(a, ctx) return wye.http.request{url="
                     "'http://h.test/x'}.body end }\n"
                     "agent { name = 'one', tools = {'fetch'}, allow_hosts = {'h.test'} }\n");
    struct env *e = env_new(dir, 0, 0);
    uint64_t id = submit(e, "one", "{\"calls\":[[\"fetch\",{}]]}");
    /* wait until the tool is parked on its request */
    for (int i = 0; i < 400; i++) {
        pthread_mutex_lock(&e->f.lock);
        int n = e->f.n_http;
        pthread_mutex_unlock(&e->f.lock);
        if (n == 1) {
            break;
        }
        usleep(5000);
    }
    assert_int_equal(e->f.n_http, 1);
    /* a reload while the run is parked: the run keeps its registry */
    snprintf(path, sizeof(path), "%s/b.lua", dir);
    write_text(path, "workflow('two', function(ctx, input) return 'two:' .. input end)\n");
    char eb[256];
    assert_int_equal(agent_rt_reload(e->rt, eb, sizeof(eb)), WYE_OK);
    agent_rt_cancel(e->rt, id);
    wait_done(e);
    assert_int_equal(e->f.err, WYE_ERR_CANCELED);
    assert_string_equal(e->f.reason, "cancelled");
    run(e, "two", "hi");
    assert_string_equal(e->f.answer, "\"two:hi\"");
    env_free(e);
    unlink(path);
    snprintf(path, sizeof(path), "%s/a.lua", dir);
    unlink(path);
    rmdir(dir);
}

/* wye.http.request's timeout (seconds) from a script: within (0, 120] it is used, anything else
 * (1e300, which no int holds, negative, too long) keeps the 10 s default. */
static void test_http_timeout_from_script(void **state)
{
    (void)state;
    char dir[] = "/tmp/wye-agents-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char path[300];
    snprintf(path, sizeof(path), "%s/a.lua", dir);
    write_text(path, "tool { name = 'fetch', run = function(a, ctx) return wye.http.request{url="
                     "'http://h.test/now', timeout = a.t}.body end }\n"
                     "agent { name = 'one', tools = {'fetch'}, allow_hosts = {'h.test'} }\n");
    struct env *e = env_new(dir, 0, 0);
    const struct {
        const char *t;
        int ms;
    } cases[] = {{"0.5", 500},  {"120", 120000}, {"1e300", 10000},
                 {"-5", 10000}, {"121", 10000},  {"0.0001", 10000}};
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char script[128];
        snprintf(script, sizeof(script), "{\"calls\":[[\"fetch\",{\"t\":%s}]]}", cases[i].t);
        e->f.last_timeout_ms = -1;
        run(e, "one", script);
        assert_int_equal(e->f.err, WYE_OK);
        assert_int_equal(e->f.last_timeout_ms, cases[i].ms);
    }
    env_free(e);
    unlink(path);
    rmdir(dir);
}

static char *list_errors(struct env *e)
{
    struct wye_buf b;
    wye_buf_init(&b, 1 << 20);
    assert_int_equal(agent_rt_list_json(e->rt, &b), WYE_OK);
    cJSON *j = cJSON_Parse(b.data);
    char *errs = cJSON_PrintUnformatted(cJSON_GetObjectItemCaseSensitive(j, "errors"));
    cJSON_Delete(j);
    wye_buf_cleanup(&b);
    return errs;
}

/* A reload that meets a broken file keeps the previous version of that file serving (its
 * agent, tool and workflow), reports the error, and serves the fixed file once it loads. A
 * file that never loaded is skipped; a run started before a reload keeps its registry. */
static void test_reload_keeps_previous(void **state)
{
    (void)state;
    char dir[] = "/tmp/wye-agents-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char a[300], b[300];
    snprintf(a, sizeof(a), "%s/a.lua", dir);
    snprintf(b, sizeof(b), "%s/b.lua", dir);
    write_text(a, "tool { name = 'ver', run = function() return 'v1' end }\n"
                  "agent { name = 'one', tools = {'ver'} }\n"
                  "workflow('wf', function(ctx, input) return 'wf1:' .. input end)\n");
    struct env *e = env_new(dir, 0, 0);
    run(e, "one", "{\"calls\":[[\"ver\",{}]]}");
    assert_string_equal(e->f.answer, "final: v1");
    char *errs = list_errors(e);
    assert_string_equal(errs, "[]");
    cJSON_free(errs);

    /* a syntax error in a.lua, and a new b.lua that never loaded */
    write_text(a, "tool { name = 'ver', run = function() return 'v2' end }\n"
                  "agent { name = 'one', tools = {'ver'} \n"
                  "workflow('wf', function(ctx, input) return 'wf2:' .. input end)\n");
    write_text(b, "agent { name = 'two', system = 1 + nil }\n");
    char eb[256] = "";
    assert_int_equal(agent_rt_reload(e->rt, eb, sizeof(eb)), WYE_OK);
    errs = list_errors(e);
    assert_non_null(strstr(errs, "a.lua:3:"));
    assert_non_null(strstr(errs, "(the previous version keeps serving)"));
    assert_non_null(strstr(errs, "b.lua:1:"));
    assert_non_null(strstr(errs, "(skipped)"));
    cJSON_free(errs);
    run(e, "one", "{\"calls\":[[\"ver\",{}]]}");
    assert_int_equal(e->f.err, WYE_OK);
    assert_string_equal(e->f.answer, "final: v1");
    run(e, "wf", "x");
    assert_string_equal(e->f.answer, "\"wf1:x\"");
    assert_int_equal(agent_rt_submit(e->rt, "two", "", on_done, &e->f, NULL, eb, sizeof(eb)),
                     WYE_ERR_NOTFOUND);

    /* a second broken reload still serves the version that last loaded */
    write_text(a, "error('still broken')\n");
    assert_int_equal(agent_rt_reload(e->rt, eb, sizeof(eb)), WYE_OK);
    errs = list_errors(e);
    assert_non_null(strstr(errs, "a.lua:1: still broken (the previous version keeps serving)"));
    cJSON_free(errs);
    run(e, "one", "{\"calls\":[[\"ver\",{}]]}");
    assert_string_equal(e->f.answer, "final: v1");

    /* fixed: the new version answers, and the errors are gone */
    write_text(a, "tool { name = 'ver', run = function() return 'v3' end }\n"
                  "agent { name = 'one', tools = {'ver'} }\n"
                  "workflow('wf', function(ctx, input) return 'wf3:' .. input end)\n");
    unlink(b);
    assert_int_equal(agent_rt_reload(e->rt, eb, sizeof(eb)), WYE_OK);
    errs = list_errors(e);
    assert_string_equal(errs, "[]");
    cJSON_free(errs);
    run(e, "one", "{\"calls\":[[\"ver\",{}]]}");
    assert_string_equal(e->f.answer, "final: v3");
    run(e, "wf", "y");
    assert_string_equal(e->f.answer, "\"wf3:y\"");

    /* a file deleted on purpose is gone after the reload */
    unlink(a);
    assert_int_equal(agent_rt_reload(e->rt, eb, sizeof(eb)), WYE_OK);
    assert_int_equal(agent_rt_submit(e->rt, "one", "", on_done, &e->f, NULL, eb, sizeof(eb)),
                     WYE_ERR_NOTFOUND);
    env_free(e);
    rmdir(dir);
}

int main(void)
{
    wye_alloc_install_cjson_hooks();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_load_errors),
        cmocka_unit_test(test_agent_loop),
        cmocka_unit_test(test_accounting),
        cmocka_unit_test(test_big_events),
        cmocka_unit_test(test_concurrent_tools),
        cmocka_unit_test(test_workflows),
        cmocka_unit_test(test_limits),
        cmocka_unit_test(test_cancel_and_reload),
        cmocka_unit_test(test_http_timeout_from_script),
        cmocka_unit_test(test_reload_keeps_previous),
        cmocka_unit_test(test_deltas),
        cmocka_unit_test(test_run_ids_across_restarts),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
