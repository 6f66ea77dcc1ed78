/* The real serving stack in process, for gateway tests that need more than the scripted backend:
 * the stand-in upstream (tests/stub), a configuration pointing at it, the router, optionally the
 * agents runtime (router/agent_host.c, gateway/gw_agents.c) serving one Lua file from a fresh
 * temporary directory, and the gateway server on 127.0.0.1 port 0. Main test thread only. */
#ifndef WYE_TESTS_GATEWAY_GW_STACK_H
#define WYE_TESTS_GATEWAY_GW_STACK_H

#include <stdbool.h>

struct conf_config;

struct gws_opts {
    const char *agent_lua;    /* the agents' Lua text; NULL: no agents */
    const char *lua_name;     /* its file name, e.g. "helper.lua" */
    const char *dir_template; /* mkdtemp template of the directory it is written to */
    /* Adjusts the configuration before anything starts (may be NULL). It starts as: listen
     * 127.0.0.1:0, upstream the stub with model "stub-model", no retries, 1 s shutdown grace. */
    void (*tune)(struct conf_config *cfg);
};

struct gws {
    struct stub_upstream *stub;
    struct conf_config *cfg;
    struct rt_router *rt;
    struct rt_agent_host *host; /* NULL without agents */
    struct agent_rt *art;       /* NULL without agents */
    struct gw_agents *ga;       /* NULL without agents */
    struct gw_server *srv;
    char dir[64];  /* the agents' directory ("" without agents) */
    char file[96]; /* the Lua file in it */
    int port;
};

/* Starts the stack described by o; false on failure (the reason on stderr), after which
 * gws_stop still cleans up what did start. */
bool gws_start(struct gws *s, const struct gws_opts *o);
/* Shuts the server down and frees whatever gws_start made; removes the Lua file and its
 * directory. */
void gws_stop(struct gws *s);

/* A cmocka group fixture over one stack: gws_group_setup starts gws_group as gws_group_opts
 * (set them before cmocka_run_group_tests) says, gws_group_teardown stops it. The tests reach
 * the stack as gws_group (its port, stub, server, configuration). */
extern struct gws gws_group;
extern struct gws_opts gws_group_opts;
int gws_group_setup(void **state);
int gws_group_teardown(void **state);

#endif
