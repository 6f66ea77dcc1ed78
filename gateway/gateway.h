/* The gateway: one libwebsockets server on one port serving the OpenAI-compatible HTTP API
 * (POST /v1/chat/completions with SSE, GET /v1/models, /healthz, /metrics) and a WebSocket
 * event protocol (/v1/ws, docs/protocol.md). Requests go to a backend through an ops table
 * (the router in `wye serve`, a scripted producer in tests); answers come back through a
 * wye_sink whose producer may run on any thread. One lws service thread owns every
 * libwebsockets object; see gw_server.c for the design. */
#ifndef WYE_GATEWAY_GATEWAY_H
#define WYE_GATEWAY_GATEWAY_H

#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"
#include "common/chat.h"
#include "common/err.h"
#include "conf/conf.h"

struct gw_server;
struct rt_keys;

/* What the gateway needs from whatever answers requests. Called on the lws thread. */
struct gw_backend_ops {
    /* Takes ownership of req (also on failure). OK: sink.ops->finish will be called exactly
     * once, later, never from inside this call. Other returns: refused (NOTFOUND: unknown
     * model -> 404, LIMIT -> 429, AGAIN -> 503, INVAL -> 400), the sink is untouched and
     * errbuf names the problem. */
    enum wye_err (*submit)(void *ctx, struct wye_chat_req *req, struct wye_sink sink, char *errbuf,
                           size_t errlen);
    /* Appends the JSON array of /v1/models "data" entries to out. */
    enum wye_err (*models_json)(void *ctx, struct wye_buf *out);
    /* Appends extra Prometheus text lines (may be NULL). */
    void (*metrics)(void *ctx, struct wye_buf *out);
};

/* Counters for tests and logs; any thread. */
struct gw_stats {
    int64_t open_connections;   /* client connections open now */
    int64_t open_streams;       /* answers in flight (not yet fully written) */
    uint64_t queued_bytes_peak; /* the most bytes one stream ever held queued */
    uint64_t slow_clients_dropped;
    uint64_t requests_total; /* HTTP requests and WebSocket response.create events */
};

/* Creates a server for cfg (borrowed; outlives the server) and binds its listening socket
 * (cfg->listen_port 0: any free port). ops and ctx are borrowed. NULL on failure (logged). */
struct gw_server *gw_server_create(const struct conf_config *cfg, const struct gw_backend_ops *ops,
                                   void *ctx);
/* Starts the lws service thread. */
enum wye_err gw_server_start(struct gw_server *srv);
/* Sets the API key table (borrowed; must outlive the server) used to authenticate requests;
 * call before gw_server_start. Without one, requests run as "anonymous" unless
 * cfg->auth.required, in which case every authenticated route answers 500 (fail closed). */
void gw_server_set_keys(struct gw_server *srv, struct rt_keys *keys);
/* Returns the bound TCP port. */
int gw_server_port(const struct gw_server *srv);
/* Graceful stop (call from one thread, not the lws thread): refuses new requests (503),
 * waits up to cfg->limits.shutdown_grace_ms for answers in flight, cancels the rest, then
 * stops and joins the lws thread. Idempotent. */
void gw_server_shutdown(struct gw_server *srv);
/* Shuts down if needed and frees the server. Producers must be stopped first (every sink
 * finished): it waits briefly for stragglers and leaks rather than free memory in use.
 * NULL is a no-op. */
void gw_server_destroy(struct gw_server *srv);
/* Copies the counters. Any thread. */
void gw_server_stats(struct gw_server *srv, struct gw_stats *out);

/* Agents (gw_agents.c): WebSocket agent.run / agent.cancel and POST /v1/agents/{name}/runs
 * over an agents runtime (agents/agents.h, borrowed). Create before the runtime starts, pass
 * gw_agents_event with it as ud to the host's event hook (rt_agent_host_set_events), and
 * destroy after agent_rt_destroy (every run finished). */
struct agent_rt;
struct gw_agents;
struct gw_agents *gw_agents_create(struct agent_rt *rt);
void gw_agents_destroy(struct gw_agents *ga);
struct agent_rt *gw_agents_rt(const struct gw_agents *ga);
/* A run's progress event (agent worker thread); ud is the struct gw_agents. */
void gw_agents_event(void *ud, uint64_t run_id, const char *event_json);
/* Serves agents on srv (ga borrowed); call before gw_server_start. */
void gw_server_set_agents(struct gw_server *srv, struct gw_agents *ga);

/* The backend over the router (gw_serve.c): ctx is a struct rt_router *. */
extern const struct gw_backend_ops gw_router_backend;

/* `wye serve [-c FILE] [--listen ADDR:PORT] [--upstream URL] [--upstream-model NAME]
 * [--model PATH] [--ledger PATH] [--agents DIR]`: runs the gateway over the router (and the
 * agents runtime; SIGHUP reloads its files) until SIGINT/SIGTERM. */
int gw_cli_serve(int argc, char **argv);

#endif
