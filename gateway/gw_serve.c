/* `wye serve`: loads the config, starts the router and the gateway, and waits on the main
 * thread for SIGINT/SIGTERM (blocked in every thread before any starts, taken with sigwait),
 * then shuts down gracefully: the gateway drains, the router stops, everything is joined. */
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "common/log.h"
#include "conf/conf.h"
#include "gateway/gateway.h"
#include "router/router.h"

static void usage(FILE *out)
{
    fprintf(out, "usage: wye serve [-c FILE] [--listen ADDR:PORT] [--upstream URL]\n"
                 "                 [--upstream-model NAME] [--model PATH] [--ledger PATH]\n\n"
                 "Serves the OpenAI-compatible API (POST /v1/chat/completions, GET /v1/models),\n"
                 "the WebSocket protocol on /v1/ws, /healthz and /metrics until SIGINT/SIGTERM.\n\n"
                 "  -c, --config FILE       the configuration file (Lua table)\n"
                 "  --listen ADDR:PORT      where to listen (port 0: any free port)\n"
                 "  --upstream URL          OpenAI-compatible base URL of the remote model\n"
                 "  --upstream-model NAME   the remote model's name\n"
                 "  --model PATH            a GGUF model served locally\n"
                 "  --ledger PATH           the JSON Lines ledger file\n"
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

int gw_cli_serve(int argc, char **argv)
{
    const char *config = NULL;
    struct conf_overrides ov;
    memset(&ov, 0, sizeof(ov));
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            usage(stdout);
            return 0;
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
                    {"--ledger", &ov.ledger}};
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

    /* Every thread created from here on inherits the blocked set; only sigwait takes them. */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &set, NULL);

    int rc = 1;
    struct gw_server *srv = NULL;
    struct rt_router *rt = rt_router_create(cfg);
    if (!rt) {
        WYE_ERROR("serve: cannot create the router");
        goto out_cfg;
    }
    if (rt_router_start(rt) != WYE_OK) {
        WYE_ERROR("serve: cannot start the router");
        goto out_router;
    }
    srv = gw_server_create(cfg, &gw_router_backend, rt);
    if (!srv) {
        goto out_router;
    }
    if (gw_server_start(srv) != WYE_OK) {
        goto out_server;
    }
    WYE_INFO("listening on http://%s:%d", cfg->listen_host ? cfg->listen_host : "0.0.0.0",
             gw_server_port(srv));
    sigdelset(&set, SIGPIPE);
    int sig = 0;
    while (sigwait(&set, &sig) != 0) {
    }
    WYE_INFO("serve: %s received; shutting down (grace %d ms)",
             sig == SIGINT ? "SIGINT" : "SIGTERM", cfg->limits.shutdown_grace_ms);
    gw_server_shutdown(srv);
    rc = 0;
out_server:
    rt_router_stop(rt);
    gw_server_destroy(srv);
out_router:
    rt_router_destroy(rt);
out_cfg:
    conf_destroy(cfg);
    return rc;
}
