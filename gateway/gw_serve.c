/* `wye serve`: loads the config, opens the ledger, loads the local model (if any), starts the
 * router and the gateway, and waits on the main thread for SIGINT/SIGTERM (blocked in every
 * thread before any starts, taken with sigwait), then shuts down in order: the gateway stops
 * accepting and drains, the router and the local engine stop (their sinks finish), the ledger
 * closes last so that every finish is recorded, then everything is freed. */
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/clock.h"
#include "common/log.h"
#include "conf/conf.h"
#include "agents/agents.h"
#include "gateway/gateway.h"
#include "router/agent_host.h"
#include "router/keys.h"
#include "router/ledger.h"
#include "router/local.h"
#include "router/router.h"

static void usage(FILE *out)
{
    fprintf(out, "usage: wye serve [-c FILE] [--listen ADDR:PORT] [--upstream URL]\n"
                 "                 [--upstream-model NAME] [--model PATH | --no-local] [--ledger PATH]\n"
                 "                 [--agents DIR]\n\n"
                 "Serves the OpenAI-compatible API (POST /v1/chat/completions, GET /v1/models),\n"
                 "the WebSocket protocol on /v1/ws, /healthz and /metrics until SIGINT/SIGTERM.\n\n"
                 "  -c, --config FILE       the configuration file (Lua table)\n"
                 "  --listen ADDR:PORT      where to listen (port 0: any free port)\n"
                 "  --upstream URL          OpenAI-compatible base URL of the remote model\n"
                 "  --upstream-model NAME   the remote model's name\n"
                 "  --model PATH            a GGUF model served locally (default: the first\n"
                 "                          models/*.gguf, else ../shared's test model)\n"
                 "  --no-local              serve no local model: every request goes upstream\n"
                 "  --ledger PATH           the JSON Lines ledger file\n"
                 "  --agents DIR            Lua agents served on /v1/agents and agent.run\n"
                 "                          (default: ./lua/examples if it exists; SIGHUP\n"
                 "                          reloads them)\n"
                 "  -h, --help              this text\n");
}

static enum wye_err be_submit(void *ctx, struct wye_chat_req *req, struct wye_sink sink,
                              char *errbuf, size_t errlen)
{
    return rt_router_submit(ctx, req, sink, errbuf, errlen);
}

static enum wye_err be_models(void *ctx, struct wye_buf *out)
{
    return rt_router_models_json(ctx, out);
}

static void be_metrics(void *ctx, struct wye_buf *out)
{
    (void)rt_router_metrics(ctx, out);
    struct rt_stats st;
    memset(&st, 0, sizeof(st));
    rt_router_stats(ctx, &st);
    (void)wye_buf_printf(
        out,
        "# HELP wye_upstream_requests_total Requests sent upstream.\n"
        "# TYPE wye_upstream_requests_total counter\n"
        "wye_upstream_requests_total %llu\n"
        "# HELP wye_upstream_errors_total Failed upstream attempts.\n"
        "# TYPE wye_upstream_errors_total counter\n"
        "wye_upstream_errors_total %llu\n"
        "# HELP wye_upstream_retries_total Upstream attempts retried.\n"
        "# TYPE wye_upstream_retries_total counter\n"
        "wye_upstream_retries_total %llu\n"
        "# HELP wye_upstream_active Upstream transfers in flight.\n"
        "# TYPE wye_upstream_active gauge\n"
        "wye_upstream_active %llu\n",
        (unsigned long long)st.upstream_requests, (unsigned long long)st.upstream_errors,
        (unsigned long long)st.upstream_retries, (unsigned long long)st.upstream_active);
}

const struct gw_backend_ops gw_router_backend = {
    .submit = be_submit,
    .models_json = be_models,
    .metrics = be_metrics,
};

/* Takes the value of an option given as "--name VALUE" or "--name=VALUE". */
static int opt_value(int argc, char **argv, int *i, const char *name, const char **out)
{
    const char *a = argv[*i];
    size_t n = strlen(name);
    if (strncmp(a, name, n) != 0) {
        return 0;
    }
    if (a[n] == '=') {
        *out = a + n + 1;
        return 1;
    }
    if (a[n] != '\0') {
        return 0;
    }
    if (*i + 1 >= argc) {
        fprintf(stderr, "wye serve: %s needs a value\n", name);
        return -1;
    }
    *out = argv[++*i];
    return 1;
}

/* The API key table, with today's and this month's remote spend rebuilt from the ledger.
 * NULL with *ok when no keys are configured. */
static struct rt_keys *serve_keys(const struct conf_config *cfg, const char *ledger_path,
                                  bool *ok)
{
    *ok = true;
    if (cfg->n_api_keys == 0) {
        return NULL;
    }
    struct rt_keys *keys = rt_keys_create(cfg);
    if (!keys) {
        *ok = false;
        WYE_ERROR("serve: cannot create the API key table: out of memory");
        return NULL;
    }
    char **files = NULL;
    size_t n = 0;
    if (rt_ledger_files(ledger_path, &files, &n) == WYE_OK) {
        enum wye_err err =
            rt_keys_restore_spend(keys, (const char *const *)files, n, wye_wall_ms());
        if (err) {
            WYE_WARN("serve: cannot rebuild API key spend from the ledger: %s", wye_err_str(err));
        }
        rt_ledger_files_free(files, n);
    }
    WYE_INFO("serve: %zu API keys loaded; authentication %s", rt_keys_count(keys),
             rt_keys_required(keys) ? "required" : "optional");
    return keys;
}

/* Opens the ledger at path with the key from WYE_LEDGER_KEY or "<path>.key" (created). */
static struct rt_ledger *serve_ledger(const struct conf_config *cfg, const char *path)
{
    char eb[512] = "";
    struct rt_ledger *l = NULL;
    if (rt_ledger_open_conf(cfg, path, &l, eb, sizeof(eb)) != WYE_OK) {
        WYE_ERROR("serve: cannot open the ledger '%s': %s", path, eb);
        return NULL;
    }
    WYE_INFO("serve: ledger %s", path);
    return l;
}

/* Loads and starts the local model when one is configured. *ok false on failure. */
static struct rt_local *serve_local(const struct conf_config *cfg, bool *ok)
{
    *ok = true;
    if (!cfg->engine.model_path) {
        return NULL;
    }
    struct rt_local *l = NULL;
    char eb[512] = "";
    if (rt_local_create(cfg, &l, eb, sizeof(eb)) != WYE_OK) {
        WYE_ERROR("serve: cannot load the local model: %s", eb);
        *ok = false;
        return NULL;
    }
    if (rt_local_start(l) != WYE_OK) {
        WYE_ERROR("serve: cannot start the local engine");
        rt_local_destroy(l);
        *ok = false;
        return NULL;
    }
    WYE_INFO("serve: local model '%s' from %s", rt_local_model_name(l), cfg->engine.model_path);
    return l;
}

/* The agents runtime over the started router: dir, else ./lua/examples when it exists
 * (none: no agents, 0). Returns -1 (logged) when dir was given and cannot be served. */
static int serve_agents(const struct conf_config *cfg, struct rt_router *rt, const char *dir,
                        struct rt_agent_host **host, struct agent_rt **art, struct gw_agents **ga)
{
    struct stat st;
    if (!dir) {
        if (stat("lua/examples", &st) != 0 || !S_ISDIR(st.st_mode)) {
            WYE_INFO("serve: no agents (no --agents DIR and no ./lua/examples)");
            return 0;
        }
        dir = "lua/examples";
    }
    char eb[512] = "";
    *host = rt_agent_host_create(rt, cfg);
    if (!*host) {
        WYE_ERROR("serve: cannot create the agents host");
        return -1;
    }
    struct agent_rt_opts o = {.dir = dir};
    struct agent_allow allow[CONF_ALLOW_MAX];
    rt_agent_opts_from_conf(cfg, &o, allow);
    if (agent_rt_create(&o, rt_agent_host_ops(), *host, art, eb, sizeof(eb)) != WYE_OK) {
        WYE_ERROR("serve: cannot load the agents in '%s': %s", dir, eb);
        return -1;
    }
    *ga = gw_agents_create(*art);
    if (!*ga) {
        WYE_ERROR("serve: cannot create the agents front end: out of memory");
        return -1;
    }
    rt_agent_host_set_events(*host, gw_agents_event, *ga);
    if (agent_rt_start(*art) != WYE_OK) {
        WYE_ERROR("serve: cannot start the agents worker");
        return -1;
    }
    WYE_INFO("serve: agents from %s (SIGHUP reloads them)", dir);
    return 0;
}

/* SIGHUP: loads the agents directory again; runs in flight keep the version they started
 * with, and the runtime logs files that fail (their previous version keeps serving; a new
 * file that fails is skipped). */
static void serve_reload_agents(struct agent_rt *art)
{
    if (!art) {
        WYE_INFO("serve: SIGHUP: no agents to reload");
        return;
    }
    char eb[512] = "";
    if (agent_rt_reload(art, eb, sizeof(eb)) != WYE_OK) {
        WYE_WARN("serve: SIGHUP: agents not reloaded, the previous ones keep serving: %s", eb);
        return;
    }
    WYE_INFO("serve: SIGHUP: agents reloaded");
}

int gw_cli_serve(int argc, char **argv)
{
    const char *config = NULL;
    const char *agents_dir = NULL;
    bool no_local = false;
    struct conf_overrides ov;
    memset(&ov, 0, sizeof(ov));
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            usage(stdout);
            return 0;
        }
        if (strcmp(a, "--no-local") == 0) {
            no_local = true;
            continue;
        }
        int r = 0;
        struct {
            const char *name;
            const char **dst;
        } opts[] = {{"-c", &config},
                    {"--config", &config},
                    {"--listen", &ov.listen},
                    {"--upstream-model", &ov.upstream_model},
                    {"--upstream", &ov.upstream},
                    {"--model", &ov.model},
                    {"--ledger", &ov.ledger},
                    {"--agents", &agents_dir}};
        for (size_t k = 0; k < sizeof(opts) / sizeof(opts[0]) && r == 0; k++) {
            r = opt_value(argc, argv, &i, opts[k].name, opts[k].dst);
        }
        if (r < 0) {
            return 2;
        }
        if (r == 0) {
            fprintf(stderr, "wye serve: unknown option '%s'\n\n", a);
            usage(stderr);
            return 2;
        }
    }

    char err[512] = "";
    struct conf_config *cfg = NULL;
    if (conf_load(config, &ov, &cfg, err, sizeof(err)) != WYE_OK) {
        fprintf(stderr, "wye serve: %s\n", err[0] ? err : "cannot load the configuration");
        return 2;
    }
    wye_log_set_level(cfg->log_level);
    if (no_local && (ov.model || cfg->engine.model_path)) {
        fprintf(stderr, "wye serve: --no-local contradicts a local model (--model, WYE_MODEL or "
                        "engine.model)\n");
        conf_destroy(cfg);
        return 2;
    }
    if (!no_local && rt_cli_default_model("wye serve", config, &ov, &cfg) != 0) {
        return 2;
    }

    /* Every thread created from here on inherits the blocked set; only sigwait takes them. */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGPIPE);
    sigaddset(&set, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &set, NULL);

    int rc = 1;
    struct gw_server *srv = NULL;
    struct rt_router *rt = NULL;
    struct rt_local *local = NULL;
    struct rt_keys *keys = NULL;
    struct rt_agent_host *ahost = NULL;
    struct agent_rt *art = NULL;
    struct gw_agents *ga = NULL;
    const char *ledger_path = cfg->ledger_path ? cfg->ledger_path : RT_LEDGER_DEFAULT_PATH;
    if (!cfg->upstream.base_url && !cfg->engine.model_path) {
        fprintf(stderr, "wye serve: no model to serve: configure upstream.base_url (--upstream) "
                        "and/or engine.model (--model)\n");
        conf_destroy(cfg);
        return 2;
    }
    struct rt_ledger *ledger = serve_ledger(cfg, ledger_path);
    if (!ledger) {
        goto out_cfg;
    }
    bool ok = true;
    keys = serve_keys(cfg, ledger_path, &ok);
    if (!ok) {
        goto out_ledger;
    }
    local = serve_local(cfg, &ok);
    if (!ok) {
        goto out_ledger;
    }
    rt = rt_router_create(cfg);
    if (!rt) {
        WYE_ERROR("serve: cannot create the router");
        goto out_local;
    }
    rt_router_set_local(rt, local);
    rt_router_set_ledger(rt, ledger);
    rt_router_set_keys(rt, keys);
    if (rt_router_start(rt) != WYE_OK) {
        WYE_ERROR("serve: cannot start the router");
        goto out_router;
    }
    if (serve_agents(cfg, rt, agents_dir, &ahost, &art, &ga) != 0) {
        goto out_router;
    }
    srv = gw_server_create(cfg, &gw_router_backend, rt);
    if (!srv) {
        goto out_router;
    }
    gw_server_set_agents(srv, ga);
    if (keys) {
        gw_server_set_keys(srv, keys);
    }
    if (gw_server_start(srv) != WYE_OK) {
        goto out_server;
    }
    WYE_INFO("listening on http://%s:%d (local: %s, remote: %s)",
             cfg->listen_host ? cfg->listen_host : "0.0.0.0", gw_server_port(srv),
             local ? rt_local_model_name(local) : "none",
             cfg->upstream.base_url ? (cfg->upstream.model ? cfg->upstream.model : "any") : "none");
    sigdelset(&set, SIGPIPE);
    int sig = 0;
    for (;;) {
        if (sigwait(&set, &sig) != 0) {
            continue;
        }
        if (sig != SIGHUP) {
            break;
        }
        serve_reload_agents(art);
    }
    WYE_INFO("serve: %s received; shutting down (grace %d ms)",
             sig == SIGINT ? "SIGINT" : "SIGTERM", cfg->limits.shutdown_grace_ms);
    gw_server_shutdown(srv);
    rc = 0;
out_server:
    /* agent runs end first (their model calls go through the router) */
    agent_rt_destroy(art);
    art = NULL;
    /* producers first (each sink finishes through the ledger), the ledger last */
    rt_router_stop(rt);
    rt_local_stop(local);
    rt_ledger_close(ledger);
    ledger = NULL;
    gw_server_destroy(srv);
out_router:
    rt_router_stop(rt);
    rt_local_stop(local);
    rt_ledger_close(ledger);
    ledger = NULL;
    agent_rt_destroy(art);
    gw_agents_destroy(ga);
    rt_agent_host_destroy(ahost);
    rt_router_destroy(rt);
out_local:
    rt_local_destroy(local);
out_ledger:
    rt_ledger_close(ledger);
out_cfg:
    rt_keys_destroy(keys);
    conf_destroy(cfg);
    return rc;
}
