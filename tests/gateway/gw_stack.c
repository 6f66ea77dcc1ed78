/* The real serving stack in process (see gw_stack.h). */
#include "tests/gateway/gw_stack.h"

#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "agents/agents.h"
#include "conf/conf.h"
#include "gateway/gateway.h"
#include "router/agent_host.h"
#include "router/router.h"
#include "tests/stub/stub_upstream.h"

struct gws gws_group;
struct gws_opts gws_group_opts;

/* Writes the Lua text to a fresh directory and starts the agents runtime over the router, its
 * events going to the gateway's agent endpoints. */
static bool start_agents(struct gws *s, const struct gws_opts *o)
{
    snprintf(s->dir, sizeof(s->dir), "%s", o->dir_template);
    if (!mkdtemp(s->dir)) {
        s->dir[0] = '\0';
        return false;
    }
    snprintf(s->file, sizeof(s->file), "%s/%s", s->dir, o->lua_name);
    FILE *f = fopen(s->file, "w");
    if (!f || fputs(o->agent_lua, f) < 0 || fclose(f) != 0) {
        return false;
    }
    char err[256];
    s->host = rt_agent_host_create(s->rt, s->cfg);
    struct agent_rt_opts ao = {.dir = s->dir};
    if (!s->host ||
        agent_rt_create(&ao, rt_agent_host_ops(), s->host, &s->art, err, sizeof(err)) != WYE_OK) {
        fprintf(stderr, "agent_rt_create: %s\n", err);
        return false;
    }
    s->ga = gw_agents_create(s->art);
    if (!s->ga) {
        return false;
    }
    rt_agent_host_set_events(s->host, gw_agents_event, s->ga);
    return agent_rt_start(s->art) == WYE_OK;
}

bool gws_start(struct gws *s, const struct gws_opts *o)
{
    s->stub = stub_upstream_start();
    if (!s->stub) {
        return false;
    }
    char url[128], err[256];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/v1", stub_upstream_port(s->stub));
    struct conf_overrides ov = {
        .listen = "127.0.0.1:0", .upstream = url, .upstream_model = "stub-model"};
    if (conf_load(NULL, &ov, &s->cfg, err, sizeof(err)) != WYE_OK) {
        fprintf(stderr, "conf_load: %s\n", err);
        return false;
    }
    s->cfg->upstream.max_retries = 0; /* failures reach the client at once */
    s->cfg->limits.shutdown_grace_ms = 1000;
    if (o->tune) {
        o->tune(s->cfg);
    }
    s->rt = rt_router_create(s->cfg);
    if (!s->rt || rt_router_start(s->rt) != WYE_OK) {
        return false;
    }
    if (o->agent_lua && !start_agents(s, o)) {
        return false;
    }
    s->srv = gw_server_create(s->cfg, &gw_router_backend, s->rt);
    if (!s->srv) {
        return false;
    }
    if (s->ga) {
        gw_server_set_agents(s->srv, s->ga);
    }
    if (gw_server_start(s->srv) != WYE_OK) {
        return false;
    }
    s->port = gw_server_port(s->srv);
    return true;
}

void gws_stop(struct gws *s)
{
    /* the server first (no new requests), then the agents (whose runs go through the router),
     * then the router; every destroy takes NULL */
    gw_server_shutdown(s->srv);
    agent_rt_destroy(s->art);
    gw_agents_destroy(s->ga);
    rt_agent_host_destroy(s->host);
    rt_router_stop(s->rt);
    gw_server_destroy(s->srv);
    rt_router_destroy(s->rt);
    conf_destroy(s->cfg);
    stub_upstream_stop(s->stub);
    if (s->file[0]) {
        unlink(s->file);
    }
    if (s->dir[0]) {
        rmdir(s->dir);
    }
}

int gws_group_setup(void **state)
{
    (void)state;
    return gws_start(&gws_group, &gws_group_opts) ? 0 : -1;
}

int gws_group_teardown(void **state)
{
    (void)state;
    gws_stop(&gws_group);
    return 0;
}
