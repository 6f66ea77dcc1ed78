/* The local backend (router/local.h) on real models, through fake sinks: stories260K streams
 * the same greedy text as eng_generate gives directly; 6 concurrent requests (4 running, 2
 * queued) each give exactly their alone output; a full admission queue answers AGAIN without
 * consuming the request; cancel ends a sequence within one token; a sink answering AGAIN
 * pauses the sequence (nothing emitted until the wakeup) with no text lost or duplicated;
 * context overflow is refused naming the numbers; rt_local_stop cancels what is in flight;
 * and a random-weight tiny qwen2 written with mkmodel runs through the backend. The sinks
 * record on the engine worker thread; cmocka asserts only on the main thread. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <cJSON.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/alloc.h"
#include "common/clock.h"
#include "common/log.h"
#include "local-engine/engine.h"
#include "local-engine/model_internal.h"
#include "local-engine/types.h"
#include "router/local.h"
#include "tests/router/test_sink_util.h"

#define WAIT_MS 20000

static char stories_path[512];
static char qwen_path[512];

static const char *prompts[] = {
    "Once upon a time",      "Tell me a story about a cat", "The little dog",
    "Lily went to the park", "A boy had a red ball",        "Tim and Sam",
    "The sun was hot",
};

static void cfg_init(struct conf_config *cfg, const char *path, int n_seq, int n_ctx, int queue)
{
    memset(cfg, 0, sizeof(*cfg));
    cfg->engine.model_path = (char *)path;
    cfg->engine.model_name = (char *)"test-local";
    cfg->engine.n_threads = 1;
    cfg->engine.n_ctx = n_ctx;
    cfg->engine.n_seq_max = n_seq;
    cfg->router.queue_max = queue;
}

static struct rt_local *mklocal(const struct conf_config *cfg)
{
    struct rt_local *l = NULL;
    char err[512] = "";
    if (rt_local_create(cfg, &l, err, sizeof(err)) != WYE_OK) {
        fail_msg("rt_local_create: %s", err);
    }
    assert_int_equal(rt_local_start(l), WYE_OK);
    return l;
}

static struct wye_chat_req *mkreq_full(const char *content, int max_tokens, const char *stop,
                                       double temperature, int64_t seed);

/* A request with one user message, greedy (temperature 0); stop may be NULL. */
static struct wye_chat_req *mkreq(const char *content, int max_tokens, const char *stop)
{
    return mkreq_full(content, max_tokens, stop, 0, -1);
}

/* temperature < 0: left out (the engine's default); seed < 0: left out. */
static struct wye_chat_req *mkreq_full(const char *content, int max_tokens, const char *stop,
                                       double temperature, int64_t seed)
{
    cJSON *body = cJSON_CreateObject();
    cJSON *msgs = cJSON_AddArrayToObject(body, "messages");
    cJSON *m = cJSON_CreateObject();
    cJSON_AddStringToObject(m, "role", "user");
    cJSON_AddStringToObject(m, "content", content);
    cJSON_AddItemToArray(msgs, m);
    cJSON_AddStringToObject(body, "model", "auto");
    if (temperature >= 0) {
        cJSON_AddNumberToObject(body, "temperature", temperature);
    }
    if (seed >= 0) {
        cJSON_AddNumberToObject(body, "seed", (double)seed);
    }
    cJSON_AddBoolToObject(body, "stream", true);
    if (max_tokens > 0) {
        cJSON_AddNumberToObject(body, "max_tokens", max_tokens);
    }
    if (stop) {
        cJSON_AddStringToObject(body, "stop", stop);
    }
    struct wye_chat_limits lim = {.depth_max = 64, .n_msgs_max = 64, .max_tokens_max = 100000};
    struct wye_chat_req *req = NULL;
    char err[256] = "";
    if (wye_chat_req_from_json(body, &lim, &req, err, sizeof(err)) != WYE_OK) {
        fail_msg("request: %s", err);
    }
    snprintf(req->id, sizeof(req->id), "req_local_test");
    return req;
}

struct ref {
    char text[16384];
    size_t len;
    struct eng_seq_result res;
};

static enum eng_cb_ret ref_text(void *arg, const char *text, size_t len)
{
    struct ref *r = arg;
    if (r->len + len < sizeof(r->text)) {
        memcpy(r->text + r->len, text, len);
        r->len += len;
        r->text[r->len] = '\0';
    }
    return ENG_CB_CONTINUE;
}

static const struct eng_seq_ops ref_ops = {.on_text = ref_text};

/* What eng_generate gives for the same request alone (greedy), on its own context. */
static void reference(const char *path, const char *content, int max_tokens, const char *stop,
                      struct ref *out)
{
    memset(out, 0, sizeof(*out));
    char err[512] = "";
    struct eng_model *m = NULL;
    if (eng_model_load(path, &m, err, sizeof(err)) != WYE_OK) {
        fail_msg("%s: %s", path, err);
    }
    struct eng_ctx_params cp = {.n_ctx = 512, .n_seq_max = 1, .n_threads = 1};
    struct eng_ctx *c = NULL;
    assert_int_equal(eng_ctx_create(m, &cp, &c, err, sizeof(err)), WYE_OK);
    struct wye_chat_msg msg = {.role = WYE_ROLE_USER, .content = (char *)content};
    int32_t ids[512];
    size_t n = 0;
    assert_int_equal(eng_model_tokenize_chat(m, &msg, 1, ids, 512, &n, err, sizeof(err)), WYE_OK);
    struct eng_gen_params gp;
    eng_gen_params_default(&gp);
    gp.sampling.temperature = 0;
    gp.max_tokens = max_tokens;
    gp.stop[0] = stop;
    assert_int_equal(eng_generate(c, ids, n, &gp, &ref_ops, out, NULL, &out->res, err, sizeof(err)),
                     WYE_OK);
    eng_ctx_destroy(c);
    eng_model_destroy(m);
}

/* The prompt's exact token count under the model's chat template, counted apart from the
 * backend (its own model load, a cap no prompt here reaches). */
static int64_t count_prompt_tokens(const char *path, const struct wye_chat_req *req)
{
    char err[512] = "";
    struct eng_model *m = NULL;
    if (eng_model_load(path, &m, err, sizeof(err)) != WYE_OK) {
        fail_msg("%s: %s", path, err);
    }
    size_t cap = 256;
    for (size_t i = 0; i < req->n_msgs; i++) {
        cap += strlen(req->msgs[i].content) + 64; /* a token is at least one byte */
    }
    int32_t *ids = wye_calloc(cap, sizeof(int32_t));
    assert_non_null(ids);
    size_t n = 0;
    assert_int_equal(
        eng_model_tokenize_chat(m, req->msgs, req->n_msgs, ids, cap, &n, err, sizeof(err)), WYE_OK);
    wye_free(ids);
    eng_model_destroy(m);
    return (int64_t)n;
}

static void submit_ok(struct rt_local *l, struct wye_chat_req *req, struct fsink *f)
{
    char err[512] = "";
    enum wye_err e = rt_local_submit(l, req, fsink_sink(f), err, sizeof(err));
    if (e != WYE_OK) {
        fail_msg("rt_local_submit: %s: %s", wye_err_str(e), err);
    }
}

static void expect_same(struct fsink *f, const struct ref *r)
{
    pthread_mutex_lock(&f->mu);
    assert_int_equal(f->n_finish, 1);
    assert_int_equal(f->violations, 0);
    if (f->res.err) {
        fail_msg("finished with %s: %s", wye_err_str(f->res.err), f->msg);
    }
    assert_string_equal(f->text.data, r->text);
    assert_int_equal(f->n_usage, 1);
    assert_int_equal(f->last_usage.completion_tokens, r->res.n_gen);
    assert_int_equal(f->last_usage.prompt_tokens, r->res.n_prompt);
    assert_false(f->last_usage.estimated);
    assert_int_equal(f->res.usage.completion_tokens, r->res.n_gen);
    assert_string_equal(f->reason, eng_finish_name(r->res.finish));
    pthread_mutex_unlock(&f->mu);
}

static int n_delta_of(struct fsink *f)
{
    pthread_mutex_lock(&f->mu);
    int n = f->n_delta;
    pthread_mutex_unlock(&f->mu);
    return n;
}

static bool is_blocked(struct fsink *f)
{
    pthread_mutex_lock(&f->mu);
    bool b = f->blocked;
    pthread_mutex_unlock(&f->mu);
    return b;
}

/* Unblocks every blocked sink until all have finished (bounded). */
static void pump(struct fsink *fs, int n)
{
    int64_t t_end = wye_now_ns() + (int64_t)WAIT_MS * WYE_NS_PER_MS;
    for (;;) {
        int done = 0;
        for (int i = 0; i < n; i++) {
            pthread_mutex_lock(&fs[i].mu);
            done += fs[i].n_finish > 0;
            bool b = fs[i].blocked;
            pthread_mutex_unlock(&fs[i].mu);
            if (b) {
                fsink_unblock(&fs[i]);
            }
        }
        if (done == n) {
            return;
        }
        if (wye_now_ns() > t_end) {
            fail_msg("only %d of %d requests finished", done, n);
        }
        wye_sleep_ms(1);
    }
}

/* ---- tests ---- */

static void test_same_as_generate(void **state)
{
    (void)state;
    struct ref r;
    reference(stories_path, prompts[0], 48, NULL, &r);
    assert_true(r.res.n_gen > 8);
    struct conf_config cfg;
    cfg_init(&cfg, stories_path, 2, 512, 4);
    struct rt_local *l = mklocal(&cfg);
    assert_string_equal(rt_local_model_name(l), "test-local");
    struct wye_chat_req *req = mkreq(prompts[0], 48, NULL);
    assert_int_equal(count_prompt_tokens(stories_path, req), r.res.n_prompt);
    struct fsink f;
    fsink_init(&f);
    submit_ok(l, req, &f);
    assert_true(fsink_wait_finish(&f, WAIT_MS));
    expect_same(&f, &r);
    assert_int_equal(f.n_start, 1);
    assert_string_equal(f.route, "local");
    assert_string_equal(f.model, "test-local");
    assert_true(f.score < 0);
    assert_true(f.reasons_null);
    assert_int_equal(f.res.http_status, 200);
    struct rt_local_stats st;
    rt_local_stats(l, &st);
    assert_int_equal(st.requests, 1);
    assert_int_equal(st.tokens_generated, (uint64_t)r.res.n_gen);
    assert_int_equal(st.tokens_prompt, (uint64_t)r.res.n_prompt);
    assert_int_equal(st.active, 0);
    assert_int_equal(st.queued, 0);
    rt_local_destroy(l);
    fsink_cleanup(&f);
}

/* 4 running (held by backpressure), 2 queued, the 7th refused; all 6 match their alone run. */
static void test_concurrent_and_queue_full(void **state)
{
    (void)state;
    enum { N = 6 };
    struct ref *refs = calloc(N, sizeof(*refs));
    assert_non_null(refs);
    for (int i = 0; i < N; i++) {
        reference(stories_path, prompts[i], 32, NULL, &refs[i]);
    }
    struct conf_config cfg;
    cfg_init(&cfg, stories_path, 4, 512, 2);
    struct rt_local *l = mklocal(&cfg);
    struct fsink fs[N + 1];
    for (int i = 0; i <= N; i++) {
        fsink_init(&fs[i]);
        fs[i].again_every = 1; /* every emit says AGAIN: each holds its slot until pumped */
    }
    for (int i = 0; i < N; i++) {
        submit_ok(l, mkreq(prompts[i], 32, NULL), &fs[i]);
    }
    for (int i = 0; i < 4; i++) {
        fsink_wait_events(&fs[i], 1, WAIT_MS);
        assert_true(is_blocked(&fs[i]));
    }
    struct rt_local_stats st;
    rt_local_stats(l, &st);
    assert_int_equal(st.active, 4);
    assert_int_equal(st.queued, 2);
    struct wye_chat_req *extra = mkreq(prompts[N], 32, NULL);
    char err[512] = "";
    assert_int_equal(rt_local_submit(l, extra, fsink_sink(&fs[N]), err, sizeof(err)),
                     WYE_ERR_AGAIN);
    assert_non_null(strstr(err, "queue is full"));
    assert_non_null(strstr(err, "router.queue_max = 2")); /* names the limit to raise */
    /* not consumed: still ours (ASan would report a double free otherwise) */
    assert_string_equal(extra->msgs[0].content, prompts[N]);
    wye_chat_req_destroy(extra);
    pump(fs, N);
    for (int i = 0; i < N; i++) {
        expect_same(&fs[i], &refs[i]);
        assert_int_equal(fs[i].n_while_blocked, 0);
    }
    assert_int_equal(fs[N].n_start + fs[N].n_finish + fs[N].n_events, 0);
    rt_local_stats(l, &st);
    assert_int_equal(st.requests, N);
    assert_int_equal(st.queue_full, 1);
    assert_int_equal(st.active + st.queued, 0);
    rt_local_destroy(l);
    for (int i = 0; i <= N; i++) {
        fsink_cleanup(&fs[i]);
    }
    free(refs);
}

/* Concurrency without backpressure: joining and leaving between steps. */
static void test_concurrent_free_running(void **state)
{
    (void)state;
    enum { N = 6 };
    struct ref *refs = calloc(N, sizeof(*refs));
    assert_non_null(refs);
    for (int i = 0; i < N; i++) {
        reference(stories_path, prompts[i], 24 + 8 * i, NULL, &refs[i]);
    }
    struct conf_config cfg;
    cfg_init(&cfg, stories_path, 4, 512, 8);
    struct rt_local *l = mklocal(&cfg);
    struct fsink fs[N];
    for (int i = 0; i < N; i++) {
        fsink_init(&fs[i]);
        submit_ok(l, mkreq(prompts[i], 24 + 8 * i, NULL), &fs[i]);
    }
    for (int i = 0; i < N; i++) {
        assert_true(fsink_wait_finish(&fs[i], WAIT_MS));
        expect_same(&fs[i], &refs[i]);
    }
    rt_local_destroy(l);
    for (int i = 0; i < N; i++) {
        fsink_cleanup(&fs[i]);
    }
    free(refs);
}

/* AGAIN every 3rd event: nothing is emitted until the wakeup, and the text is whole. */
static void test_backpressure(void **state)
{
    (void)state;
    struct ref r;
    reference(stories_path, prompts[1], 40, NULL, &r);
    struct conf_config cfg;
    cfg_init(&cfg, stories_path, 2, 512, 4);
    struct rt_local *l = mklocal(&cfg);
    struct fsink f;
    fsink_init(&f);
    f.again_every = 3;
    submit_ok(l, mkreq(prompts[1], 40, NULL), &f);
    int pauses = 0;
    for (int round = 0; round < 1000; round++) {
        fsink_wait_events(&f, INT_MAX, WAIT_MS);
        pthread_mutex_lock(&f.mu);
        bool fin = f.n_finish > 0;
        bool blocked = f.blocked;
        int n0 = f.n_events;
        pthread_mutex_unlock(&f.mu);
        if (fin) {
            break;
        }
        assert_true(blocked);
        wye_sleep_ms(20); /* a paused sequence must stay quiet */
        pthread_mutex_lock(&f.mu);
        assert_int_equal(f.n_events, n0);
        pthread_mutex_unlock(&f.mu);
        pauses++;
        fsink_unblock(&f);
    }
    assert_true(fsink_wait_finish(&f, WAIT_MS));
    assert_true(pauses >= 3);
    expect_same(&f, &r);
    assert_int_equal(f.n_while_blocked, 0);
    rt_local_destroy(l);
    fsink_cleanup(&f);
}

/* Cancel mid-generation, with and without the wakeup: at most one more token. */
static void cancel_case(bool wake)
{
    struct conf_config cfg;
    cfg_init(&cfg, stories_path, 2, 512, 4);
    struct rt_local *l = mklocal(&cfg);
    struct fsink f;
    fsink_init(&f);
    submit_ok(l, mkreq(prompts[0], 400, NULL), &f);
    fsink_wait_events(&f, 3, WAIT_MS);
    pthread_mutex_lock(&f.mu);
    int at_cancel = f.n_delta;
    bool early = f.n_finish > 0;
    atomic_store(&f.cancelled, true);
    pthread_mutex_unlock(&f.mu);
    assert_false(early);
    if (wake) {
        fsink_unblock(&f);
    }
    assert_true(fsink_wait_finish(&f, WAIT_MS));
    assert_true(n_delta_of(&f) - at_cancel <= 1);
    assert_int_equal(f.res.err, WYE_ERR_CANCELED);
    assert_string_equal(f.reason, "cancelled");
    assert_int_equal(f.n_usage, 0);
    assert_int_equal(f.violations, 0);
    rt_local_destroy(l);
    fsink_cleanup(&f);
}

static void test_cancel_wake(void **state)
{
    (void)state;
    cancel_case(true);
}

static void test_cancel_flag_only(void **state)
{
    (void)state;
    cancel_case(false);
}

/* The sink answering CANCELED stops the sequence at once. */
static void test_sink_cancels(void **state)
{
    (void)state;
    struct conf_config cfg;
    cfg_init(&cfg, stories_path, 1, 512, 4);
    struct rt_local *l = mklocal(&cfg);
    struct fsink f;
    fsink_init(&f);
    f.cancel_at = 4;
    submit_ok(l, mkreq(prompts[2], 200, NULL), &f);
    assert_true(fsink_wait_finish(&f, WAIT_MS));
    assert_int_equal(f.n_events, 4);
    assert_int_equal(f.res.err, WYE_ERR_CANCELED);
    assert_string_equal(f.reason, "cancelled");
    /* the slot is free again: a next request runs */
    struct ref r;
    reference(stories_path, prompts[3], 16, NULL, &r);
    struct fsink g;
    fsink_init(&g);
    submit_ok(l, mkreq(prompts[3], 16, NULL), &g);
    assert_true(fsink_wait_finish(&g, WAIT_MS));
    expect_same(&g, &r);
    rt_local_destroy(l);
    fsink_cleanup(&f);
    fsink_cleanup(&g);
}

/* A stop string ends the answer before it, as eng_generate does (finish_reason "stop"). */
static void test_stop_string(void **state)
{
    (void)state;
    struct ref all, r;
    reference(stories_path, prompts[0], 64, NULL, &all);
    /* three bytes from the middle of the answer (stories260K writes ASCII) */
    assert_true(all.len >= 12);
    char stop[4];
    memcpy(stop, all.text + all.len / 2, 3);
    stop[3] = '\0';
    reference(stories_path, prompts[0], 64, stop, &r);
    assert_int_equal(r.res.finish, ENG_FINISH_STOP);
    struct conf_config cfg;
    cfg_init(&cfg, stories_path, 1, 512, 4);
    struct rt_local *l = mklocal(&cfg);
    struct fsink f;
    fsink_init(&f);
    submit_ok(l, mkreq(prompts[0], 64, stop), &f);
    assert_true(fsink_wait_finish(&f, WAIT_MS));
    expect_same(&f, &r);
    assert_string_equal(f.reason, "stop");
    assert_null(strstr(f.text.data, stop));
    rt_local_destroy(l);
    fsink_cleanup(&f);
}

/* A greedy request with one user message and response_format (JSON text). */
static struct wye_chat_req *mkreq_rf(const char *content, int max_tokens, const char *rf)
{
    struct wye_chat_req *req = mkreq(content, max_tokens, NULL);
    cJSON *v = cJSON_Parse(rf);
    assert_non_null(v);
    assert_non_null(req->body);
    cJSON_AddItemToObject(req->body, "response_format", v);
    req->has_response_format = true;
    return req;
}

/* Runs one response_format request to its end and returns the parsed answer (or fails). */
static cJSON *run_json(struct rt_local *l, const char *prompt, int max_tokens, const char *rf)
{
    struct fsink f;
    fsink_init(&f);
    submit_ok(l, mkreq_rf(prompt, max_tokens, rf), &f);
    assert_true(fsink_wait_finish(&f, WAIT_MS));
    pthread_mutex_lock(&f.mu);
    if (f.res.err) {
        fail_msg("finished with %s: %s", wye_err_str(f.res.err), f.msg);
    }
    assert_int_equal(f.violations, 0);
    cJSON *v = cJSON_Parse(f.text.data ? f.text.data : "");
    if (!v) {
        fail_msg("answer is not JSON: '%s'", f.text.data ? f.text.data : "");
    }
    pthread_mutex_unlock(&f.mu);
    fsink_cleanup(&f);
    return v;
}

/* response_format json_schema and json_object constrain the local answer: it parses, and has
 * the schema's required properties with their types; twice (the second from the cache). */
static void test_response_format(void **state)
{
    (void)state;
    struct conf_config cfg;
    cfg_init(&cfg, stories_path, 2, 512, 4);
    struct rt_local *l = mklocal(&cfg);
    const char *rf = "{\"type\":\"json_schema\",\"json_schema\":{\"name\":\"person\","
                     "\"schema\":{\"type\":\"object\",\"properties\":{"
                     "\"name\":{\"type\":\"string\",\"maxLength\":12},"
                     "\"age\":{\"type\":\"integer\"},"
                     "\"happy\":{\"type\":\"boolean\"}},"
                     "\"required\":[\"name\",\"age\",\"happy\"]}}}";
    for (int round = 0; round < 2; round++) {
        cJSON *v = run_json(l, prompts[round], 64, rf);
        assert_true(cJSON_IsObject(v));
        assert_true(cJSON_IsString(cJSON_GetObjectItemCaseSensitive(v, "name")));
        cJSON *age = cJSON_GetObjectItemCaseSensitive(v, "age");
        assert_true(cJSON_IsNumber(age));
        assert_true(age->valuedouble == (double)(int64_t)age->valuedouble);
        assert_true(cJSON_IsBool(cJSON_GetObjectItemCaseSensitive(v, "happy")));
        cJSON_Delete(v);
    }
    cJSON *o = run_json(l, prompts[2], 48, "{\"type\":\"json_object\"}");
    assert_true(cJSON_IsObject(o));
    cJSON_Delete(o);
    /* text: unconstrained, the same as eng_generate */
    struct ref r;
    reference(stories_path, prompts[0], 24, NULL, &r);
    struct fsink f;
    fsink_init(&f);
    submit_ok(l, mkreq_rf(prompts[0], 24, "{\"type\":\"text\"}"), &f);
    assert_true(fsink_wait_finish(&f, WAIT_MS));
    expect_same(&f, &r);
    fsink_cleanup(&f);
    rt_local_destroy(l);
}

/* A schema outside the subset, a malformed response_format: INVAL naming the problem, and
 * the request stays the caller's. */
static void test_response_format_refused(void **state)
{
    (void)state;
    struct conf_config cfg;
    cfg_init(&cfg, stories_path, 1, 512, 4);
    struct rt_local *l = mklocal(&cfg);
    static const struct {
        const char *rf, *needle;
    } cases[] = {
        {"{\"type\":\"json_schema\",\"json_schema\":{\"name\":\"x\",\"schema\":{\"type\":"
         "\"object\",\"properties\":{\"id\":{\"type\":\"string\",\"pattern\":\"^a\"}}}}}",
         "pattern"},
        {"{\"type\":\"json_schema\",\"json_schema\":{\"name\":\"x\",\"schema\":{\"type\":"
         "\"object\",\"properties\":{},\"required\":[\"gone\"]}}}",
         "gone"},
        {"{\"type\":\"json_schema\",\"json_schema\":{\"name\":\"x\"}}", "schema"},
        {"{\"type\":\"json_schema\"}", "json_schema"},
        {"{\"type\":\"yaml\"}", "yaml"},
        {"{\"type\":7}", "type"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct wye_chat_req *req = mkreq_rf(prompts[0], 32, cases[i].rf);
        struct fsink f;
        fsink_init(&f);
        char err[512] = "";
        assert_int_equal(rt_local_submit(l, req, fsink_sink(&f), err, sizeof(err)), WYE_ERR_INVAL);
        if (!strstr(err, cases[i].needle)) {
            fail_msg("case %zu: '%s' does not name '%s'", i, err, cases[i].needle);
        }
        assert_int_equal(f.n_start + f.n_finish, 0);
        wye_chat_req_destroy(req);
        fsink_cleanup(&f);
    }
    /* a budget below the schema's shortest output: accepted, then finished with a 400 */
    struct fsink f;
    fsink_init(&f);
    submit_ok(l,
              mkreq_rf(prompts[0], 3,
                       "{\"type\":\"json_schema\",\"json_schema\":{\"name\":\"x\",\"schema\":"
                       "{\"type\":\"object\",\"properties\":{\"a_long_property_name\":"
                       "{\"type\":\"string\"}},\"required\":[\"a_long_property_name\"]}}}"),
              &f);
    assert_true(fsink_wait_finish(&f, WAIT_MS));
    pthread_mutex_lock(&f.mu);
    assert_int_equal(f.res.err, WYE_ERR_TOOBIG);
    assert_int_equal(f.res.http_status, 400);
    assert_non_null(strstr(f.msg, "max_tokens"));
    assert_int_equal(f.n_delta, 0);
    pthread_mutex_unlock(&f.mu);
    fsink_cleanup(&f);
    /* still serving */
    cJSON *o = run_json(l, prompts[1], 32, "{\"type\":\"json_object\"}");
    assert_true(cJSON_IsObject(o));
    cJSON_Delete(o);
    rt_local_destroy(l);
}

static void test_context_overflow(void **state)
{
    (void)state;
    struct conf_config cfg;
    cfg_init(&cfg, stories_path, 1, 64, 4);
    struct rt_local *l = mklocal(&cfg);
    assert_int_equal(rt_local_n_ctx(l), 64);
    struct fsink f;
    fsink_init(&f);
    char err[512] = "";
    /* max_tokens past the context */
    struct wye_chat_req *req = mkreq(prompts[0], 60, NULL);
    int64_t n_prompt = count_prompt_tokens(stories_path, req);
    assert_true(n_prompt > 4 && n_prompt < 64);
    assert_int_equal(rt_local_submit(l, req, fsink_sink(&f), err, sizeof(err)), WYE_ERR_TOOBIG);
    char want[256];
    snprintf(want, sizeof(want),
             "the prompt (%lld tokens) plus max_tokens (60) exceeds the local model's context "
             "length (64 tokens)",
             (long long)n_prompt);
    assert_string_equal(err, want);
    wye_chat_req_destroy(req);
    /* a prompt longer than the context */
    char big[2048] = "";
    for (int i = 0; i < 60; i++) {
        strcat(big, "the cat sat. ");
    }
    req = mkreq(big, 8, NULL);
    n_prompt = count_prompt_tokens(stories_path, req);
    assert_true(n_prompt > 64);
    assert_int_equal(rt_local_submit(l, req, fsink_sink(&f), err, sizeof(err)), WYE_ERR_TOOBIG);
    snprintf(want, sizeof(want),
             "the prompt (%lld tokens) exceeds the local model's context length (64 tokens)",
             (long long)n_prompt);
    assert_string_equal(err, want);
    wye_chat_req_destroy(req);
    /* a prompt too long for the tokenizer to take at all (over its 4 MiB per call): no count
     * to give, but still the context named (it once said "(-1 tokens)") */
    size_t huge_len = (5u << 20);
    char *huge = wye_malloc(huge_len + 1);
    assert_non_null(huge);
    memset(huge, 'a', huge_len);
    huge[huge_len] = '\0';
    req = mkreq(huge, 8, NULL);
    wye_free(huge);
    assert_int_equal(rt_local_submit(l, req, fsink_sink(&f), err, sizeof(err)), WYE_ERR_TOOBIG);
    assert_string_equal(err, "the prompt exceeds the local model's context length (64 tokens)");
    wye_chat_req_destroy(req);
    /* a stop string longer than the engine takes */
    char longstop[80];
    memset(longstop, 'x', 70);
    longstop[70] = '\0';
    req = mkreq(prompts[0], 8, longstop);
    assert_int_equal(rt_local_submit(l, req, fsink_sink(&f), err, sizeof(err)), WYE_ERR_TOOBIG);
    assert_non_null(strstr(err, "stop string 0 is 70 bytes"));
    wye_chat_req_destroy(req);
    assert_int_equal(f.n_start + f.n_finish, 0);
    /* max_tokens 0: a default bounded by the room left, so it runs */
    req = mkreq(prompts[0], 0, NULL);
    submit_ok(l, req, &f);
    assert_true(fsink_wait_finish(&f, WAIT_MS));
    assert_int_equal(f.res.err, WYE_OK);
    assert_true(f.last_usage.prompt_tokens + f.last_usage.completion_tokens <= 64);
    rt_local_destroy(l);
    fsink_cleanup(&f);
}

/* Stop with requests running (paused by backpressure) and queued: all finish CANCELED. */
static void test_stop_in_flight(void **state)
{
    (void)state;
    enum { N = 4 };
    struct conf_config cfg;
    cfg_init(&cfg, stories_path, 2, 512, 4);
    struct rt_local *l = mklocal(&cfg);
    struct fsink fs[N];
    for (int i = 0; i < N; i++) {
        fsink_init(&fs[i]);
        fs[i].again_every = 2;
        submit_ok(l, mkreq(prompts[i], 200, NULL), &fs[i]);
    }
    fsink_wait_events(&fs[0], 2, WAIT_MS);
    fsink_wait_events(&fs[1], 2, WAIT_MS);
    rt_local_stop(l);
    for (int i = 0; i < N; i++) {
        assert_int_equal(fs[i].n_finish, 1);
        assert_int_equal(fs[i].res.err, WYE_ERR_CANCELED);
        assert_string_equal(fs[i].reason, "cancelled");
        assert_int_equal(fs[i].violations, 0);
    }
    assert_true(fs[0].n_delta > 0);
    assert_int_equal(fs[2].n_start, 0); /* never started: only finish */
    char err[256] = "";
    struct wye_chat_req *req = mkreq(prompts[0], 8, NULL);
    struct fsink g;
    fsink_init(&g);
    assert_int_equal(rt_local_submit(l, req, fsink_sink(&g), err, sizeof(err)), WYE_ERR_CANCELED);
    wye_chat_req_destroy(req);
    rt_local_stop(l); /* idempotent */
    rt_local_destroy(l);
    for (int i = 0; i < N; i++) {
        fsink_cleanup(&fs[i]);
    }
    fsink_cleanup(&g);
}

/* Sampling: the same seed gives the same text; temperature unset samples with the engine's
 * default (so, over a few seeds, not always the greedy text). */
static void test_seeded_sampling(void **state)
{
    (void)state;
    struct ref greedy;
    reference(stories_path, prompts[4], 32, NULL, &greedy);
    struct conf_config cfg;
    cfg_init(&cfg, stories_path, 4, 512, 8);
    struct rt_local *l = mklocal(&cfg);
    enum { N = 4 };
    struct fsink fs[N];
    for (int i = 0; i < N; i++) {
        fsink_init(&fs[i]);
        /* 0 and 1: seed 42 at temperature 1.5; 2 and 3: temperature unset, seeds 7 and 8 */
        struct wye_chat_req *req = i < 2 ? mkreq_full(prompts[4], 32, NULL, 1.5, 42)
                                         : mkreq_full(prompts[4], 32, NULL, -1, 5 + i);
        submit_ok(l, req, &fs[i]);
    }
    for (int i = 0; i < N; i++) {
        assert_true(fsink_wait_finish(&fs[i], WAIT_MS));
        assert_int_equal(fs[i].res.err, WYE_OK);
    }
    assert_string_equal(fs[0].text.data, fs[1].text.data);
    assert_string_not_equal(fs[0].text.data, greedy.text);
    assert_true(strcmp(fs[2].text.data, greedy.text) != 0 ||
                strcmp(fs[3].text.data, greedy.text) != 0);
    rt_local_destroy(l);
    for (int i = 0; i < N; i++) {
        fsink_cleanup(&fs[i]);
    }
}

/* Stop before start: queued requests are cancelled on the caller's thread. */
static void test_stop_never_started(void **state)
{
    (void)state;
    struct conf_config cfg;
    cfg_init(&cfg, stories_path, 1, 128, 4);
    struct rt_local *l = NULL;
    char err[512] = "";
    assert_int_equal(rt_local_create(&cfg, &l, err, sizeof(err)), WYE_OK);
    struct fsink fs[2];
    for (int i = 0; i < 2; i++) {
        fsink_init(&fs[i]);
        submit_ok(l, mkreq(prompts[i], 8, NULL), &fs[i]);
    }
    struct rt_local_stats st;
    rt_local_stats(l, &st);
    assert_int_equal(st.queued, 2);
    assert_int_equal(fs[0].n_finish, 0); /* never from inside submit */
    rt_local_destroy(l);
    for (int i = 0; i < 2; i++) {
        assert_int_equal(fs[i].n_finish, 1);
        assert_int_equal(fs[i].n_start, 0);
        assert_int_equal(fs[i].res.err, WYE_ERR_CANCELED);
        fsink_cleanup(&fs[i]);
    }
}

/* What rt_local_submit_async hands back. */
struct refusal {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int n;
    enum wye_err err;
    char msg[512];
    struct wye_chat_req *req;
};

static void refusal_init(struct refusal *r)
{
    memset(r, 0, sizeof(*r));
    pthread_mutex_init(&r->mu, NULL);
    pthread_cond_init(&r->cv, NULL);
}

static void refusal_cleanup(struct refusal *r)
{
    wye_chat_req_destroy(r->req);
    pthread_cond_destroy(&r->cv);
    pthread_mutex_destroy(&r->mu);
}

static void on_refused(void *arg, struct wye_chat_req *req, enum wye_err err, const char *msg)
{
    struct refusal *r = arg;
    pthread_mutex_lock(&r->mu);
    r->n++;
    r->err = err;
    snprintf(r->msg, sizeof(r->msg), "%s", msg);
    wye_chat_req_destroy(r->req); /* keep the last one */
    r->req = req;
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
}

static bool refusal_wait(struct refusal *r, int ms)
{
    int64_t t_end = wye_now_ns() + (int64_t)ms * WYE_NS_PER_MS;
    pthread_mutex_lock(&r->mu);
    while (r->n == 0 && wye_now_ns() < t_end) {
        pthread_mutex_unlock(&r->mu);
        wye_sleep_ms(1);
        pthread_mutex_lock(&r->mu);
    }
    bool got = r->n > 0;
    pthread_mutex_unlock(&r->mu);
    return got;
}

/* rt_local_submit_async (the router's way in): what rt_local_submit refuses comes back through
 * the callback with the same code and message and the request handed back, the sink untouched;
 * an accepted request answers exactly as with rt_local_submit; the admission slot is taken at
 * once; a request cancelled before its preparation gets finish() alone. */
static void test_submit_async(void **state)
{
    (void)state;
    struct ref r0;
    reference(stories_path, prompts[0], 32, NULL, &r0);
    struct conf_config cfg;
    cfg_init(&cfg, stories_path, 1, 128, 0); /* one sequence, no waiting */
    struct rt_local *l = mklocal(&cfg);
    char err[512] = "";

    /* too long for the context: TOOBIG, the message rt_local_submit gives */
    char big[2048] = "";
    for (int i = 0; i < 60; i++) {
        strcat(big, "the cat sat. ");
    }
    struct wye_chat_req *req = mkreq(big, 8, NULL);
    int64_t n_prompt = count_prompt_tokens(stories_path, req);
    struct fsink f;
    fsink_init(&f);
    struct refusal rf;
    refusal_init(&rf);
    assert_int_equal(
        rt_local_submit_async(l, req, fsink_sink(&f), on_refused, &rf, err, sizeof(err)), WYE_OK);
    assert_true(refusal_wait(&rf, WAIT_MS));
    assert_int_equal(rf.n, 1);
    assert_int_equal(rf.err, WYE_ERR_TOOBIG);
    char want[256];
    snprintf(want, sizeof(want),
             "the prompt (%lld tokens) exceeds the local model's context length (128 tokens)",
             (long long)n_prompt);
    assert_true(n_prompt > 128);
    assert_string_equal(rf.msg, want);
    assert_ptr_equal(rf.req, req); /* handed back whole */
    assert_string_equal(rf.req->msgs[0].content, big);
    assert_int_equal(f.n_start + f.n_finish + f.n_events, 0);
    refusal_cleanup(&rf);
    fsink_cleanup(&f);

    /* accepted: the same answer as rt_local_submit's; while it holds the only slot (its sink
     * full), the next submit is refused at once (AGAIN, not consumed) */
    fsink_init(&f);
    f.again_every = 1;
    refusal_init(&rf);
    assert_int_equal(rt_local_submit_async(l, mkreq(prompts[0], 32, NULL), fsink_sink(&f),
                                           on_refused, &rf, err, sizeof(err)),
                     WYE_OK);
    struct fsink g;
    fsink_init(&g);
    req = mkreq(prompts[1], 8, NULL);
    assert_int_equal(
        rt_local_submit_async(l, req, fsink_sink(&g), on_refused, &rf, err, sizeof(err)),
        WYE_ERR_AGAIN);
    assert_non_null(strstr(err, "router.queue_max = 0"));
    wye_chat_req_destroy(req);
    assert_int_equal(rf.n, 0);
    pump(&f, 1);
    expect_same(&f, &r0);
    assert_int_equal(rf.n, 0);
    assert_int_equal(g.n_start + g.n_finish + g.n_events, 0);
    fsink_cleanup(&f);
    fsink_cleanup(&g);

    /* cancelled before it was prepared: finish(CANCELED) alone, no refusal */
    fsink_init(&f);
    fsink_cancel(&f, false);
    assert_int_equal(rt_local_submit_async(l, mkreq(prompts[2], 8, NULL), fsink_sink(&f),
                                           on_refused, &rf, err, sizeof(err)),
                     WYE_OK);
    assert_true(fsink_wait_finish(&f, WAIT_MS));
    assert_int_equal(f.res.err, WYE_ERR_CANCELED);
    assert_int_equal(f.n_start, 0);
    assert_int_equal(rf.n, 0);
    struct rt_local_stats st;
    rt_local_stats(l, &st);
    assert_int_equal(st.preparing + st.queued + st.active, 0);
    fsink_cleanup(&f);
    refusal_cleanup(&rf);
    rt_local_destroy(l);
}

/* Stop refuses (CANCELED) what still waits for preparation; here the backend never started,
 * so nothing was prepared and the refusals run on the caller's thread. */
static void test_async_stop_refuses(void **state)
{
    (void)state;
    struct conf_config cfg;
    cfg_init(&cfg, stories_path, 1, 128, 4);
    struct rt_local *l = NULL;
    char err[512] = "";
    assert_int_equal(rt_local_create(&cfg, &l, err, sizeof(err)), WYE_OK);
    struct fsink fs[2];
    struct refusal rf;
    refusal_init(&rf);
    for (int i = 0; i < 2; i++) {
        fsink_init(&fs[i]);
        assert_int_equal(rt_local_submit_async(l, mkreq(prompts[i], 8, NULL), fsink_sink(&fs[i]),
                                               on_refused, &rf, err, sizeof(err)),
                         WYE_OK);
    }
    struct rt_local_stats st;
    rt_local_stats(l, &st);
    assert_int_equal(st.preparing, 2);
    rt_local_destroy(l);
    assert_int_equal(rf.n, 2);
    assert_int_equal(rf.err, WYE_ERR_CANCELED);
    assert_string_equal(rf.msg, "the local model is shutting down");
    for (int i = 0; i < 2; i++) {
        assert_int_equal(fs[i].n_start + fs[i].n_finish + fs[i].n_events, 0);
        fsink_cleanup(&fs[i]);
    }
    refusal_cleanup(&rf);
}

/* Every allocation of create and submit may fail: NOMEM comes back (the request not
 * consumed), nothing crashes or leaks (LeakSanitizer checks the sanitizer build). */
static void test_alloc_failure(void **state)
{
    (void)state;
    struct conf_config cfg;
    cfg_init(&cfg, stories_path, 2, 64, 4);
    bool submitted = false;
    long n = 0;
    for (; n < 100000 && !submitted; n++) {
        struct wye_chat_req *req = mkreq(prompts[0], 8, NULL);
        struct fsink f;
        fsink_init(&f);
        struct rt_local *l = NULL;
        char err[512] = "";
        wye_alloc_fail_after(n);
        enum wye_err e = rt_local_create(&cfg, &l, err, sizeof(err));
        if (e == WYE_OK) {
            e = rt_local_submit(l, req, fsink_sink(&f), err, sizeof(err));
            submitted = e == WYE_OK;
        }
        wye_alloc_fail_after(-1);
        if (e != WYE_OK) {
            assert_int_equal(e, WYE_ERR_NOMEM);
            wye_chat_req_destroy(req);
        }
        rt_local_destroy(l);
        assert_int_equal(f.n_finish, submitted ? 1 : 0);
        fsink_cleanup(&f);
    }
    assert_true(submitted);
    assert_true(n > 20);
}

static void test_create_errors(void **state)
{
    (void)state;
    struct conf_config cfg;
    cfg_init(&cfg, NULL, 1, 64, 4);
    struct rt_local *l = NULL;
    char err[512] = "";
    assert_int_equal(rt_local_create(&cfg, &l, err, sizeof(err)), WYE_ERR_INVAL);
    assert_null(l);
    assert_non_null(strstr(err, "no local model configured"));
    cfg_init(&cfg, "/nonexistent/dir/model.gguf", 1, 64, 4);
    assert_true(rt_local_create(&cfg, &l, err, sizeof(err)) != WYE_OK);
    assert_null(l);
    assert_non_null(strstr(err, "/nonexistent/dir/model.gguf"));
    rt_local_destroy(NULL);
}

/* A random-weight qwen2 (real Qwen2 vocabulary and ChatML template) through the backend. */
static void test_tiny_qwen2(void **state)
{
    (void)state;
    struct ref r[2];
    reference(qwen_path, "Hello, world", 20, NULL, &r[0]);
    reference(qwen_path, "def main():", 20, NULL, &r[1]);
    struct conf_config cfg;
    cfg_init(&cfg, qwen_path, 2, 256, 4);
    struct rt_local *l = mklocal(&cfg);
    struct wye_chat_req *req0 = mkreq("Hello, world", 20, NULL);
    /* ChatML: <|im_start|>user\nHello, world<|im_end|>\n<|im_start|>assistant\n */
    assert_int_equal(count_prompt_tokens(qwen_path, req0), r[0].res.n_prompt);
    assert_true(r[0].res.n_prompt >= 8);
    struct fsink fs[2];
    fsink_init(&fs[0]);
    fsink_init(&fs[1]);
    submit_ok(l, req0, &fs[0]);
    submit_ok(l, mkreq("def main():", 20, NULL), &fs[1]);
    for (int i = 0; i < 2; i++) {
        assert_true(fsink_wait_finish(&fs[i], WAIT_MS));
        expect_same(&fs[i], &r[i]);
    }
    rt_local_destroy(l);
    fsink_cleanup(&fs[0]);
    fsink_cleanup(&fs[1]);
}

static int setup(void **state)
{
    (void)state;
    snprintf(stories_path, sizeof(stories_path), "%s/models/stories260K-f32.gguf", WYE_SHARED_DIR);
    snprintf(qwen_path, sizeof(qwen_path), "%s/test_router_local_qwen2_%d.gguf", WYE_BINARY_DIR,
             (int)getpid());
    char vocab[512], err[512] = "";
    snprintf(vocab, sizeof(vocab), "%s/vocab/ggml-vocab-qwen2.gguf", WYE_SHARED_DIR);
    struct eng_mkmodel_opts o = {.shape = "tiny-qwen2",
                                 .type = ENG_TYPE_Q8_0,
                                 .vocab_path = vocab,
                                 .out_path = qwen_path,
                                 .seed = 11};
    if (eng_mkmodel_write(&o, err, sizeof(err)) != WYE_OK) {
        fprintf(stderr, "mkmodel: %s\n", err);
        return -1;
    }
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    unlink(qwen_path);
    return 0;
}

int main(void)
{
    wye_log_set_level(WYE_LOG_ERROR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_same_as_generate),
        cmocka_unit_test(test_concurrent_and_queue_full),
        cmocka_unit_test(test_concurrent_free_running),
        cmocka_unit_test(test_backpressure),
        cmocka_unit_test(test_cancel_wake),
        cmocka_unit_test(test_cancel_flag_only),
        cmocka_unit_test(test_sink_cancels),
        cmocka_unit_test(test_stop_string),
        cmocka_unit_test(test_context_overflow),
        cmocka_unit_test(test_response_format),
        cmocka_unit_test(test_response_format_refused),
        cmocka_unit_test(test_stop_in_flight),
        cmocka_unit_test(test_seeded_sampling),
        cmocka_unit_test(test_stop_never_started),
        cmocka_unit_test(test_submit_async),
        cmocka_unit_test(test_async_stop_refuses),
        cmocka_unit_test(test_alloc_failure),
        cmocka_unit_test(test_create_errors),
        cmocka_unit_test(test_tiny_qwen2),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
