/* Agents on the local track: a router with only stories260K (no remote upstream) and the agents
 * runtime over it. A workflow's ctx:chat{response_format = {type = "json_schema", ...}} is
 * answered locally under the schema's constraint, so every answer is valid JSON matching the
 * schema (validity, not quality); the triage example classifies locally and returns a category
 * from its enum. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cjson/cJSON.h>
#include <cmocka.h>

#include "agents/agents.h"
#include "conf/conf.h"
#include "router/agent_host.h"
#include "router/local.h"
#include "router/router.h"
#include "tests/agents/agent_test_outcome.h"

struct env {
    struct conf_config *cfg;
    struct rt_local *local;
    struct rt_router *rt;
    struct rt_agent_host *host;
    struct agent_rt *art;
    struct ato o;
};

static int setup(void **state)
{
    struct env *e = calloc(1, sizeof(*e));
    struct conf_overrides ov = {.model = WYE_SHARED_DIR "/models/stories260K-q8_0.gguf"};
    char eb[512] = "";
    if (conf_load(NULL, &ov, &e->cfg, eb, sizeof(eb)) != WYE_OK) {
        fail_msg("conf_load: %s", eb);
    }
    e->cfg->engine.n_threads = 1;
    e->cfg->engine.n_ctx = 512;
    if (rt_local_create(e->cfg, &e->local, eb, sizeof(eb)) != WYE_OK) {
        fail_msg("rt_local_create: %s", eb);
    }
    assert_int_equal(rt_local_start(e->local), WYE_OK);
    e->rt = rt_router_create(e->cfg);
    assert_non_null(e->rt);
    rt_router_set_local(e->rt, e->local);
    assert_int_equal(rt_router_start(e->rt), WYE_OK);
    e->host = rt_agent_host_create(e->rt, e->cfg);
    assert_non_null(e->host);
    ato_init(&e->o);
    *state = e;
    return 0;
}

static int teardown(void **state)
{
    struct env *e = *state;
    agent_rt_destroy(e->art);
    rt_agent_host_destroy(e->host);
    rt_router_stop(e->rt);
    rt_local_stop(e->local);
    rt_router_destroy(e->rt);
    rt_local_destroy(e->local);
    conf_destroy(e->cfg);
    ato_destroy(&e->o);
    free(e);
    return 0;
}

static void use_dir(struct env *e, const char *dir)
{
    agent_rt_destroy(e->art);
    e->art = NULL;
    char eb[256] = "";
    struct agent_rt_opts o = {.dir = dir};
    if (agent_rt_create(&o, rt_agent_host_ops(), e->host, &e->art, eb, sizeof(eb)) != WYE_OK) {
        fail_msg("agent_rt_create %s: %s", dir, eb);
    }
    assert_int_equal(agent_rt_start(e->art), WYE_OK);
}

/* Runs name with input to its end (60 s at most). */
static void run(struct env *e, const char *name, const char *input)
{
    ato_submit(&e->o, e->art, name, input);
    if (!ato_wait(&e->o, 60)) {
        fail_msg("%s did not end within 60 s", name);
    }
    if (e->o.err) {
        fail_msg("%s failed: %s", name, e->o.reason);
    }
}

static void test_response_format_local(void **state)
{
    struct env *e = *state;
    use_dir(e, WYE_SOURCE_DIR "/tests/agents/scripts_local");
    static const char *const inputs[] = {
        "My parcel is late and I am upset.", "Please close my account.",
        "Why was I charged twice on my invoice?", "Once upon a time", "{}"};
    for (size_t i = 0; i < sizeof(inputs) / sizeof(inputs[0]); i++) {
        run(e, "classify", inputs[i]);
        cJSON *j = cJSON_Parse(e->o.answer);
        const cJSON *route = cJSON_GetObjectItemCaseSensitive(j, "route");
        const cJSON *text = cJSON_GetObjectItemCaseSensitive(j, "text");
        const cJSON *schema = cJSON_GetObjectItemCaseSensitive(j, "schema");
        assert_string_equal(route->valuestring, "local");
        char eb[256] = "";
        if (agent_schema_check(schema->valuestring, text->valuestring, eb, sizeof(eb)) != WYE_OK) {
            fail_msg("input '%s': answer '%s' does not match the schema: %s", inputs[i],
                     text->valuestring, eb);
        }
        cJSON_Delete(j);
    }
}

static void test_triage_local(void **state)
{
    struct env *e = *state;
    use_dir(e, WYE_SOURCE_DIR "/lua/examples");
    run(e, "triage", "How do I reset my password?");
    cJSON *j = cJSON_Parse(e->o.answer);
    const cJSON *cat = cJSON_GetObjectItemCaseSensitive(j, "category");
    assert_true(cJSON_IsString(cat));
    static const char *const cats[] = {"account", "billing", "shipping", "technical", "other"};
    bool known = false;
    for (size_t i = 0; i < 5; i++) {
        known |= strcmp(cat->valuestring, cats[i]) == 0;
    }
    if (!known) {
        fail_msg("category '%s' is not one of the schema's", cat->valuestring);
    }
    const cJSON *d = cJSON_GetObjectItemCaseSensitive(j, "difficulty");
    assert_true(strcmp(d->valuestring, "easy") == 0 || strcmp(d->valuestring, "hard") == 0);
    assert_true(cJSON_IsString(cJSON_GetObjectItemCaseSensitive(j, "answer")));
    cJSON_Delete(j);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_response_format_local),
        cmocka_unit_test(test_triage_local),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
