/* Agents end to end through the real router (router/agent_host.c over rt_router_submit, the
 * remote upstream client, whose libcurl thread also runs wye.http.request) against a scripted
 * upstream and page server on 127.0.0.1: the support agent answering "Where is my order
 * 1234?" with a tool call, the page summariser (allowed and refused hosts), the triage
 * workflow, the response size cap, cancellation while a tool waits on a slow request, and the
 * same HTTP through a router without a remote upstream (the host's HTTP-only client). */
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
#include "conf/conf.h"
#include "router/agent_host.h"
#include "router/router.h"
#include "tests/agents/agent_test_outcome.h"
#include "tests/agents/agent_test_server.h"

struct e2e {
    struct ats *srv;
    struct conf_config *cfg;
    struct rt_router *rt;
    struct rt_agent_host *host;
    struct agent_rt *examples; /* lua/examples */
    struct agent_rt *slow;     /* tests/agents/scripts_e2e */
    struct ato o;
    char base[64];
};

static struct agent_rt *make_rt(struct e2e *e, const char *dir)
{
    struct agent_rt *art = NULL;
    char eb[256] = "";
    struct agent_rt_opts o = {.dir = dir, .allow_hosts = "127.0.0.1"};
    if (agent_rt_create(&o, rt_agent_host_ops(), e->host, &art, eb, sizeof(eb)) != WYE_OK) {
        fail_msg("agent_rt_create %s: %s", dir, eb);
    }
    assert_int_equal(agent_rt_start(art), WYE_OK);
    return art;
}

static int setup(void **state)
{
    struct e2e *e = calloc(1, sizeof(*e));
    e->srv = ats_start();
    assert_non_null(e->srv);
    snprintf(e->base, sizeof(e->base), "http://127.0.0.1:%d", ats_port(e->srv));
    char up[96];
    snprintf(up, sizeof(up), "%s/v1", e->base);
    struct conf_overrides ov = {.upstream = up, .upstream_model = "scripted"};
    char eb[512] = "";
    if (conf_load(NULL, &ov, &e->cfg, eb, sizeof(eb)) != WYE_OK) {
        fail_msg("conf_load: %s", eb);
    }
    e->cfg->upstream.max_retries = 0;
    e->rt = rt_router_create(e->cfg);
    assert_non_null(e->rt);
    assert_int_equal(rt_router_start(e->rt), WYE_OK);
    e->host = rt_agent_host_create(e->rt, e->cfg);
    assert_non_null(e->host);
    e->examples = make_rt(e, WYE_SOURCE_DIR "/lua/examples");
    e->slow = make_rt(e, WYE_SOURCE_DIR "/tests/agents/scripts_e2e");
    ato_init(&e->o);
    *state = e;
    return 0;
}

static int teardown(void **state)
{
    struct e2e *e = *state;
    agent_rt_destroy(e->examples);
    agent_rt_destroy(e->slow);
    rt_agent_host_destroy(e->host);
    rt_router_stop(e->rt);
    rt_router_destroy(e->rt);
    conf_destroy(e->cfg);
    ats_stop(e->srv);
    ato_destroy(&e->o);
    free(e);
    return 0;
}

static void wait_done(struct e2e *e, int seconds)
{
    if (!ato_wait(&e->o, seconds)) {
        fail_msg("the run did not end within %d s", seconds);
    }
}

static void test_support(void **state)
{
    struct e2e *e = *state;
    long before = ats_chat_requests(e->srv);
    ato_submit(&e->o, e->examples, "support", "Where is my order 1234?");
    wait_done(e, 20);
    if (e->o.err) {
        fail_msg("support failed: %s", e->o.reason);
    }
    /* tool call -> order_lookup over data/orders.json -> final answer from the tool result */
    assert_non_null(strstr(e->o.answer, "Answer: "));
    assert_non_null(strstr(e->o.answer, "\"status\":\"shipped\""));
    assert_non_null(strstr(e->o.answer, "DHL-88213"));
    assert_int_equal(e->o.n_steps, 2);
    assert_int_equal(ats_chat_requests(e->srv) - before, 2);
    assert_true(e->o.cost > 0); /* priced from usage with the default remote price */
    /* an order that does not exist: the tool says so, nothing crashes */
    ato_submit(&e->o, e->examples, "support", "Where is my order 999?");
    wait_done(e, 20);
    assert_int_equal(e->o.err, WYE_OK);
    assert_non_null(strstr(e->o.answer, "no order 999 found"));
}

static void test_summarise(void **state)
{
    struct e2e *e = *state;
    char in[200];
    snprintf(in, sizeof(in), "{\"url\":\"%s/page\"}", e->base);
    ato_submit(&e->o, e->examples, "summarise", in);
    wait_done(e, 20);
    if (e->o.err) {
        fail_msg("summarise failed: %s", e->o.reason);
    }
    cJSON *j = cJSON_Parse(e->o.answer);
    assert_non_null(j);
    const char *sum = cJSON_GetObjectItemCaseSensitive(j, "summary")->valuestring;
    /* the scripted model replies with the start of the text it was given: the page, stripped */
    assert_non_null(strstr(sum, "Reply: "));
    assert_non_null(strstr(sum, "Wye test page The quick brown fox"));
    assert_null(strstr(sum, "<h1>"));
    cJSON_Delete(j);

    /* the same server under another name is not on the allowlist */
    snprintf(in, sizeof(in), "{\"url\":\"http://localhost:%d/page\"}", ats_port(e->srv));
    ato_submit(&e->o, e->examples, "summarise", in);
    wait_done(e, 20);
    assert_int_not_equal(e->o.err, WYE_OK);
    assert_non_null(strstr(e->o.reason, "host 'localhost' is not allowed for 'summarise'"));
    assert_non_null(strstr(e->o.reason, "summarise.lua:"));
}

static void test_triage(void **state)
{
    struct e2e *e = *state;
    ato_submit(&e->o, e->examples, "triage",
               "My invoice shows VAT twice and the refund API returns 409");
    wait_done(e, 20);
    assert_int_equal(e->o.err, WYE_OK);
    cJSON *j = cJSON_Parse(e->o.answer);
    assert_true(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(j, "escalated")));
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(j, "difficulty")->valuestring, "hard");
    /* the classification came back as JSON for its response_format (the scripted upstream
     * picks the enum's first value when the ticket names none) */
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(j, "category")->valuestring, "account");
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(j, "answer")->valuestring,
                        "Reply: My invoice shows VAT twice and the refund API returns 409");
    cJSON_Delete(j);
    char *body = ats_last_chat_body(e->srv);
    assert_non_null(body);
    free(body);
    ato_submit(&e->o, e->examples, "triage", "My order never arrived: is shipping late?");
    wait_done(e, 20);
    j = cJSON_Parse(e->o.answer);
    assert_true(cJSON_IsFalse(cJSON_GetObjectItemCaseSensitive(j, "escalated")));
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(j, "difficulty")->valuestring, "easy");
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(j, "category")->valuestring, "shipping");
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(j, "answer")->valuestring,
                        "Reply: My order never arrived: is shipping late?");
    cJSON_Delete(j);
}

/* ctx:chat passes tools and response_format through to the model's request, and answers the
 * calls the model asked for (OpenAI form). */
static void test_chat_tools_passthrough(void **state)
{
    struct e2e *e = *state;
    ato_submit(&e->o, e->slow, "toolchat", "Where is order 77?");
    wait_done(e, 20);
    assert_int_equal(e->o.err, WYE_OK);
    char *body = ats_last_chat_body(e->srv);
    cJSON *req = cJSON_Parse(body);
    free(body);
    const cJSON *t0 = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(req, "tools"), 0);
    const cJSON *f0 = cJSON_GetObjectItemCaseSensitive(t0, "function");
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(f0, "name")->valuestring, "find_order");
    const cJSON *props = cJSON_GetObjectItemCaseSensitive(
        cJSON_GetObjectItemCaseSensitive(f0, "parameters"), "properties");
    assert_true(cJSON_IsObject(cJSON_GetObjectItemCaseSensitive(props, "order_id")));
    cJSON_Delete(req);
    /* the workflow returns the call it got back: {name, args} */
    cJSON *j = cJSON_Parse(e->o.answer);
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(j, "name")->valuestring, "find_order");
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(j, "order_id")->valuestring, "77");
    cJSON_Delete(j);
}

static void test_http_cap(void **state)
{
    struct e2e *e = *state;
    char in[200];
    snprintf(in, sizeof(in), "{\"url\":\"%s/big\"}", e->base);
    ato_submit(&e->o, e->slow, "bigflow", in);
    wait_done(e, 20);
    assert_int_equal(e->o.err, WYE_OK);
    assert_non_null(strstr(e->o.answer, "the response is larger than 1048576 bytes"));
}

static void test_cancel_slow_tool(void **state)
{
    struct e2e *e = *state;
    char in[200];
    snprintf(in, sizeof(in), "{\"url\":\"%s/slow\"}", e->base);
    long started = ats_slow_started(e->srv);
    uint64_t id = ato_submit(&e->o, e->slow, "slowflow", in);
    for (int i = 0; i < 1000 && ats_slow_started(e->srv) == started; i++) {
        usleep(5000);
    }
    assert_int_equal(ats_slow_started(e->srv), started + 1);
    agent_rt_cancel(e->slow, id);
    wait_done(e, 5); /* the server holds the request for 10 s: only a cancel ends it sooner */
    assert_int_equal(e->o.err, WYE_ERR_CANCELED);
    assert_string_equal(e->o.reason, "cancelled");
    /* the transfer was aborted too: the server sees its client go away */
    for (int i = 0; i < 600 && ats_slow_aborted(e->srv) == 0; i++) {
        usleep(5000);
    }
    assert_int_equal(ats_slow_aborted(e->srv), 1);
}

/* A router without a remote upstream: the host runs wye.http.request on an HTTP-only upstream
 * client of its own, with the same cap and cancellation. */
static void test_http_without_upstream(void **state)
{
    struct e2e *e = *state;
    struct conf_config *cfg = NULL;
    char eb[512] = "";
    struct conf_overrides ov = {0};
    if (conf_load(NULL, &ov, &cfg, eb, sizeof(eb)) != WYE_OK) {
        fail_msg("conf_load: %s", eb);
    }
    assert_null(cfg->upstream.base_url);
    struct rt_router *rt = rt_router_create(cfg);
    assert_non_null(rt);
    assert_int_equal(rt_router_start(rt), WYE_OK);
    struct rt_agent_host *host = rt_agent_host_create(rt, cfg);
    assert_non_null(host);
    struct agent_rt *art = NULL;
    struct agent_rt_opts o = {.dir = WYE_SOURCE_DIR "/tests/agents/scripts_e2e",
                              .allow_hosts = "127.0.0.1"};
    assert_int_equal(agent_rt_create(&o, rt_agent_host_ops(), host, &art, eb, sizeof(eb)), WYE_OK);
    assert_int_equal(agent_rt_start(art), WYE_OK);
    char in[200];
    snprintf(in, sizeof(in), "{\"url\":\"%s/page\"}", e->base);
    ato_submit(&e->o, art, "slowflow", in);
    wait_done(e, 20);
    assert_int_equal(e->o.err, WYE_OK);
    assert_non_null(strstr(e->o.answer, "Wye test page"));
    snprintf(in, sizeof(in), "{\"url\":\"%s/big\"}", e->base);
    ato_submit(&e->o, art, "bigflow", in);
    wait_done(e, 20);
    assert_non_null(strstr(e->o.answer, "the response is larger than 1048576 bytes"));
    /* cancelled while the page server holds the answer: the connection is closed */
    long aborted = ats_slow_aborted(e->srv), started = ats_slow_started(e->srv);
    snprintf(in, sizeof(in), "{\"url\":\"%s/slow\"}", e->base);
    uint64_t id = ato_submit(&e->o, art, "slowflow", in);
    for (int i = 0; i < 1000 && ats_slow_started(e->srv) == started; i++) {
        usleep(5000);
    }
    agent_rt_cancel(art, id);
    wait_done(e, 5);
    assert_int_equal(e->o.err, WYE_ERR_CANCELED);
    for (int i = 0; i < 600 && ats_slow_aborted(e->srv) == aborted; i++) {
        usleep(5000);
    }
    assert_int_equal(ats_slow_aborted(e->srv), aborted + 1);
    agent_rt_destroy(art);
    rt_agent_host_destroy(host);
    rt_router_stop(rt);
    rt_router_destroy(rt);
    conf_destroy(cfg);
}

/* agents.allow_hosts in the config allows hosts per agent or workflow, on top of what the
 * scripts declare; without a runtime-wide allowlist, another workflow is still refused. */
static void test_allow_from_config(void **state)
{
    struct e2e *e = *state;
    char path[256];
    snprintf(path, sizeof(path), "%s/test_agents_allow_%d.lua", WYE_BINARY_DIR, (int)getpid());
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs("return { agents = { workers = 1, allow_hosts = { slowflow = { \"127.0.0.1\" } } } }\n",
          f);
    fclose(f);
    struct conf_config *cfg = NULL;
    char eb[512] = "";
    struct conf_overrides ov = {0};
    if (conf_load(path, &ov, &cfg, eb, sizeof(eb)) != WYE_OK) {
        fail_msg("conf_load: %s", eb);
    }
    unlink(path);
    assert_int_equal(cfg->agents.n_workers, 1);
    assert_int_equal(cfg->agents.n_allow, 1);
    struct agent_rt *art = NULL;
    struct agent_rt_opts o = {.dir = WYE_SOURCE_DIR "/tests/agents/scripts_e2e"};
    struct agent_allow allow[CONF_ALLOW_MAX];
    rt_agent_opts_from_conf(cfg, &o, allow);
    assert_int_equal(o.n_workers, 1);
    assert_int_equal(agent_rt_create(&o, rt_agent_host_ops(), e->host, &art, eb, sizeof(eb)),
                     WYE_OK);
    conf_destroy(cfg); /* the runtime keeps its own copy */
    assert_int_equal(agent_rt_start(art), WYE_OK);
    char in[200];
    snprintf(in, sizeof(in), "{\"url\":\"%s/page\"}", e->base);
    ato_submit(&e->o, art, "slowflow", in);
    wait_done(e, 20);
    assert_int_equal(e->o.err, WYE_OK);
    assert_non_null(strstr(e->o.answer, "Wye test page"));
    ato_submit(&e->o, art, "bigflow", in);
    wait_done(e, 20);
    assert_non_null(e->o.answer ? strstr(e->o.answer, "host '127.0.0.1' is not allowed for 'bigflow'")
                                : strstr(e->o.reason, "host '127.0.0.1' is not allowed for 'bigflow'"));
    agent_rt_destroy(art);
}

int main(void)
{
    wye_alloc_install_cjson_hooks();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_support),
        cmocka_unit_test(test_summarise),
        cmocka_unit_test(test_triage),
        cmocka_unit_test(test_chat_tools_passthrough),
        cmocka_unit_test(test_http_cap),
        cmocka_unit_test(test_cancel_slow_tool),
        cmocka_unit_test(test_http_without_upstream),
        cmocka_unit_test(test_allow_from_config),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
