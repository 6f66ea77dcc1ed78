/* The stream object on its own (the test thread plays both producer and lws thread): AGAIN
 * above the high-water mark with the queue bounded by the cap plus one event, credit (the
 * wakeup) below the low-water mark, cancel waking the producer, finish dropping the wakeup,
 * chunks recycled, and every kind of answer formatted under allocation failure at every point
 * without a crash or a leak, always ending finished. */
/* cmocka.h needs these first. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cJSON.h>
#include <cmocka.h>
#include <string.h>

#include "common/alloc.h"
#include "common/crypto.h"
#include "gateway/gw_internal.h"
#include "tests/gateway/gw_test_backend.h"

static struct conf_config cfg;
static struct gw_server *srv;

static int setup(void **state)
{
    (void)state;
    gwt_default_cfg(&cfg);
    cfg.limits.stream_buffer_bytes = 1000;
    srv = gw_server_create(&cfg, &tb_ops, NULL); /* not started: no lws thread */
    return srv ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    gw_server_destroy(srv);
    return 0;
}

static struct wye_chat_req *make_req(void)
{
    static const char *body =
        "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}";
    struct wye_chat_req *req = NULL;
    char err[128];
    if (wye_chat_req_from_json(cJSON_Parse(body), NULL, &req, err, sizeof(err)) != WYE_OK) {
        return NULL;
    }
    memcpy(req->id, "req_000000000000000000000001", WYE_REQID_LEN + 1);
    req->client_id = wye_strdup("c1");
    return req;
}

static int wakes;
static void on_wake(void *arg)
{
    (void)arg;
    wakes++;
}

/* Pops everything into out; returns whether the stream reported its end. */
static bool drain(struct gw_stream *s, struct wye_buf *out)
{
    bool last = false;
    for (int i = 0; i < 10000; i++) {
        struct gw_chunk *c = gw_stream_pop(s, &last);
        if (!c) {
            break;
        }
        (void)wye_buf_append(out, GW_CHUNK_DATA(c), c->len);
        gw_stream_recycle(s, c);
    }
    return last;
}

static void test_backpressure_and_credit(void **state)
{
    (void)state;
    struct wye_chat_req *req = make_req();
    assert_non_null(req);
    struct gw_stream *s = gw_stream_create(srv, GW_KIND_WS, req);
    assert_non_null(s);
    struct wye_sink sink = gw_stream_sink(s);
    wakes = 0;
    sink.ops->set_wakeup(sink.ctx, on_wake, NULL);
    sink.ops->start(sink.ctx, &(struct wye_start){.route = "local", .model = "m", .score = 0.5});
    char word[100];
    memset(word, 'w', sizeof(word));
    struct wye_event ev = {.type = WYE_EV_DELTA, .data = word, .len = sizeof(word)};
    int n = 0;
    enum wye_err err;
    while ((err = sink.ops->emit(sink.ctx, &ev)) == WYE_OK && n < 1000) {
        n++;
    }
    assert_int_equal(err, WYE_ERR_AGAIN);
    /* Over the cap by at most one event. */
    assert_true(s->queued > cfg.limits.stream_buffer_bytes);
    assert_true(s->queued <= cfg.limits.stream_buffer_bytes + 200);
    assert_int_equal(wakes, 0);
    /* Draining below half the cap gives credit exactly once. */
    bool last;
    while (s->queued > cfg.limits.stream_buffer_bytes / 2) {
        struct gw_chunk *c = gw_stream_pop(s, &last);
        assert_non_null(c);
        gw_stream_recycle(s, c);
    }
    assert_int_equal(wakes, 1);
    struct wye_buf out;
    wye_buf_init(&out, 1 << 20);
    assert_false(drain(s, &out));
    assert_int_equal(wakes, 1);
    /* Recycled chunks are reused: no growth of the free list past its bound. */
    assert_true(s->n_free > 0 && s->n_free <= 32);
    /* Cancel wakes the producer; emit then refuses. */
    gw_stream_cancel(s);
    assert_int_equal(wakes, 2);
    assert_true(sink.ops->cancelled(sink.ctx));
    assert_int_equal(sink.ops->emit(sink.ctx, &ev), WYE_ERR_CANCELED);
    struct wye_result res = {.err = WYE_ERR_CANCELED, .finish_reason = "cancelled"};
    gw_stream_ref(s); /* keep it to inspect after the producer lets go */
    sink.ops->finish(sink.ctx, &res);
    wye_buf_reset(&out);
    assert_true(drain(s, &out));
    assert_non_null(strstr(out.data, "\"type\":\"response.done\""));
    assert_non_null(strstr(out.data, "\"status\":\"cancelled\""));
    assert_non_null(strstr(out.data, "\"route\":\"local\""));
    /* After finish no wakeup reaches the producer. */
    gw_stream_cancel(s);
    assert_int_equal(wakes, 2);
    gw_stream_unref(s);
    gw_stream_release(s);
    wye_buf_cleanup(&out);
    wye_chat_req_destroy(req);
}

/* What the lws thread's wakeup does with the ready list, minus the writing: lets go of the
 * references it holds (the server is not started here). */
static void drop_ready(void)
{
    pthread_mutex_lock(&srv->ready_lock);
    struct gw_stream *r = srv->ready;
    srv->ready = NULL;
    for (struct gw_stream *t = r; t; t = t->ready_next) {
        t->in_ready = false;
        t->svc_next = t->ready_next;
    }
    pthread_mutex_unlock(&srv->ready_lock);
    while (r) {
        struct gw_stream *next = r->svc_next;
        gw_stream_unref(r);
        r = next;
    }
}

/* The lws side's batch pop: as many whole chunks as fit (at least one), in order, with the
 * end reported once nothing is left; and the server's chunk pool: chunks of a freed stream
 * serve the next stream's events instead of new allocations. */
static void test_pop_upto_and_pool(void **state)
{
    (void)state;
    struct wye_chat_req *req = make_req();
    assert_non_null(req);
    struct gw_stream *s = gw_stream_create(srv, GW_KIND_WS, req);
    assert_non_null(s);
    struct wye_sink sink = gw_stream_sink(s);
    sink.ops->start(sink.ctx, &(struct wye_start){.route = "remote", .model = "m", .score = -1});
    static const char *const words[] = {"alpha", " beta", " gamma"};
    for (int i = 0; i < 3; i++) {
        struct wye_event ev = {.type = WYE_EV_DELTA, .data = words[i], .len = strlen(words[i])};
        assert_int_equal(sink.ops->emit(sink.ctx, &ev), WYE_OK);
    }
    size_t first = s->head->len, second = s->head->next->len, total = s->queued;
    bool last = true;
    struct gw_chunk *l = gw_stream_pop_upto(s, first + second, &last);
    assert_non_null(l);
    assert_non_null(l->next);
    assert_null(l->next->next);
    assert_non_null(memmem(GW_CHUNK_DATA(l), l->len, "\"delta\":\"alpha\"", 15));
    assert_false(last);
    assert_int_equal(s->queued, total - first - second);
    gw_stream_recycle_list(s, l);
    l = gw_stream_pop_upto(s, 1, &last); /* smaller than any chunk: still one */
    assert_non_null(l);
    assert_null(l->next);
    assert_non_null(memmem(GW_CHUNK_DATA(l), l->len, "\"delta\":\" gamma\"", 16));
    assert_false(last);
    gw_stream_recycle_list(s, l);
    assert_null(gw_stream_pop_upto(s, 1 << 20, &last));
    assert_false(last);
    gw_stream_ref(s);
    struct wye_result res = {.err = WYE_OK, .finish_reason = "stop"};
    sink.ops->finish(sink.ctx, &res);
    l = gw_stream_pop_upto(s, 1 << 20, &last);
    assert_non_null(l);
    assert_true(last);
    gw_stream_recycle_list(s, l);
    gw_stream_unref(s);
    drop_ready();
    size_t before = srv->n_pool;
    gw_stream_release(s); /* the last reference: its chunks go to the server's pool */
    size_t pooled = srv->n_pool;
    assert_true(pooled >= before + 3); /* the three deltas' chunks at least */
    s = gw_stream_create(srv, GW_KIND_WS, req);
    assert_non_null(s);
    sink = gw_stream_sink(s);
    struct wye_event ev = {.type = WYE_EV_DELTA, .data = "x", .len = 1};
    assert_int_equal(sink.ops->emit(sink.ctx, &ev), WYE_OK);
    assert_true(srv->n_pool < pooled); /* taken from the pool, not allocated */
    gw_stream_ref(s);
    sink.ops->finish(sink.ctx, &res);
    gw_stream_unref(s);
    drop_ready();
    gw_stream_release(s);
    assert_int_equal(srv->n_pool, pooled); /* and given back */
    wye_chat_req_destroy(req);
}

/* One full answer of the given kind; returns the output (caller frees). */
static void run_answer(enum gw_kind kind, struct wye_buf *out)
{
    struct wye_chat_req *req = make_req();
    if (!req) {
        return;
    }
    req->include_usage = true;
    struct gw_stream *s = gw_stream_create(srv, kind, req);
    wye_chat_req_destroy(req);
    if (!s) {
        return;
    }
    struct wye_sink sink = gw_stream_sink(s);
    sink.ops->set_wakeup(sink.ctx, on_wake, NULL);
    sink.ops->start(sink.ctx, &(struct wye_start){.route = "remote", .model = "m", .score = -1});
    struct wye_event ev = {.type = WYE_EV_DELTA, .data = "hello", .len = 5};
    sink.ops->emit(sink.ctx, &ev);
    const char *tool =
        "[{\"index\":0,\"id\":\"c\",\"function\":{\"name\":\"f\",\"arguments\":\"{}\"}}]";
    struct wye_event tev = {.type = WYE_EV_TOOL_DELTA, .data = tool, .len = strlen(tool)};
    sink.ops->emit(sink.ctx, &tev);
    struct wye_event uev = {.type = WYE_EV_USAGE,
                            .usage = {.prompt_tokens = 3, .completion_tokens = 2}};
    sink.ops->emit(sink.ctx, &uev);
    gw_stream_ref(s);
    struct wye_result res = {.err = WYE_OK, .finish_reason = "stop"};
    sink.ops->finish(sink.ctx, &res);
    assert_true(s->finished);
    assert_true(drain(s, out));
    gw_stream_unref(s);
    gw_stream_release(s);
}

static void test_formats_under_oom(void **state)
{
    (void)state;
    static const char *const expect[] = {
        "\"content\":\"hello\"",    /* JSON */
        "data: [DONE]\n\n",         /* SSE */
        "\"status\":\"completed\"", /* WS */
    };
    for (int kind = GW_KIND_JSON; kind <= GW_KIND_WS; kind++) {
        struct wye_buf out;
        wye_buf_init(&out, 1 << 20);
        run_answer((enum gw_kind)kind, &out);
        assert_non_null(out.data);
        assert_non_null(strstr(out.data, expect[kind]));
        wye_buf_cleanup(&out);
        long failures = 1;
        for (long n = 0; failures > 0 && n < 500; n++) {
            wye_buf_init(&out, 1 << 20);
            wye_alloc_fail_after(n);
            run_answer((enum gw_kind)kind, &out);
            failures = wye_alloc_failures();
            wye_alloc_fail_after(-1);
            wye_buf_cleanup(&out);
        }
        assert_int_equal(failures, 0); /* the loop reached a run without failures */
    }
}

/* stream:false assembles tool calls by the backend's "index": one no int holds (or negative,
 * or fractional) drops that call instead of converting it (undefined behaviour, found by
 * fuzz_gw_format), and the calls with good indexes come out whole. */
static void test_tool_index_out_of_range(void **state)
{
    (void)state;
    struct wye_chat_req *req = make_req();
    assert_non_null(req);
    struct gw_stream *s = gw_stream_create(srv, GW_KIND_JSON, req);
    wye_chat_req_destroy(req);
    assert_non_null(s);
    struct wye_sink sink = gw_stream_sink(s);
    sink.ops->start(sink.ctx, &(struct wye_start){.route = "remote", .model = "m", .score = -1});
    static const char *const deltas[] = {
        "[{\"index\":0,\"id\":\"a\",\"type\":\"function\",\"function\":{\"name\":\"f\","
        "\"arguments\":\"{\\\"x\\\":\"}}]",
        "[{\"index\":1e10,\"id\":\"big\",\"function\":{\"name\":\"g\"}},"
        "{\"index\":-1,\"id\":\"neg\",\"function\":{\"name\":\"h\"}},"
        "{\"index\":0.5,\"id\":\"frac\",\"function\":{\"name\":\"i\"}},"
        "{\"index\":-1e300,\"function\":{\"name\":\"j\"}}]",
        "[{\"index\":0,\"function\":{\"arguments\":\"1}\"}}]",
    };
    for (size_t i = 0; i < sizeof(deltas) / sizeof(deltas[0]); i++) {
        struct wye_event ev = {
            .type = WYE_EV_TOOL_DELTA, .data = deltas[i], .len = strlen(deltas[i])};
        assert_int_equal(sink.ops->emit(sink.ctx, &ev), WYE_OK);
    }
    gw_stream_ref(s);
    struct wye_result res = {.err = WYE_OK};
    sink.ops->finish(sink.ctx, &res);
    struct wye_buf out;
    wye_buf_init(&out, 1 << 20);
    assert_true(drain(s, &out));
    gw_stream_unref(s);
    drop_ready();
    gw_stream_release(s);
    cJSON *j = cJSON_Parse(out.data);
    assert_non_null(j);
    cJSON *msg = cJSON_GetObjectItemCaseSensitive(
        cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(j, "choices"), 0), "message");
    cJSON *calls = cJSON_GetObjectItemCaseSensitive(msg, "tool_calls");
    assert_int_equal(cJSON_GetArraySize(calls), 1);
    cJSON *call = cJSON_GetArrayItem(calls, 0);
    cJSON *fn = cJSON_GetObjectItemCaseSensitive(call, "function");
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(call, "id")->valuestring, "a");
    assert_int_equal(cJSON_GetObjectItemCaseSensitive(call, "index")->valueint, 0);
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(fn, "name")->valuestring, "f");
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(fn, "arguments")->valuestring,
                        "{\"x\":1}");
    cJSON_Delete(j);
    wye_buf_cleanup(&out);
}

int main(void)
{
    wye_alloc_install_cjson_hooks();
    if (wye_crypto_init() != WYE_OK) {
        return 1;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_backpressure_and_credit),
        cmocka_unit_test(test_pop_upto_and_pool),
        cmocka_unit_test(test_formats_under_oom),
        cmocka_unit_test(test_tool_index_out_of_range),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
