/* The router side of agents/: the host ops an agent runtime uses (model calls through
 * rt_router_submit, so they are scored, routed, priced and ledgered like any request; HTTP for
 * wye.http.request as plain requests on the upstream client's thread) and `wye agent`. */
#ifndef WYE_ROUTER_AGENT_HOST_H
#define WYE_ROUTER_AGENT_HOST_H

#include <stdint.h>

#include "agents/agents.h"
#include "conf/conf.h"

struct rt_router;
struct rt_agent_host;

/* Progress events of runs (JSON object text), e.g. for the CLI's stderr. */
typedef void (*rt_agent_event_fn)(void *ud, uint64_t run_id, const char *event_json);

/* Creates the host for rt (borrowed, started) and cfg (borrowed, for prices). HTTP runs on the
 * router's upstream client, or, when no upstream is configured, on an HTTP-only upstream client
 * the host starts. NULL on failure (logged). */
struct rt_agent_host *rt_agent_host_create(struct rt_router *rt, const struct conf_config *cfg);
/* Frees h (and stops its own HTTP client: pending requests answer CANCELED). Destroy the agent
 * runtime first. NULL is a no-op. */
void rt_agent_host_destroy(struct rt_agent_host *h);
/* The ops to give agent_rt_create with h as host_ctx. */
const struct agent_host_ops *rt_agent_host_ops(void);
/* Sets what the config decides in o: n_workers (agents.workers, when set) and the per-agent
 * allowlists (agents.allow_hosts), pointing into allow, caller storage of CONF_ALLOW_MAX
 * entries that must outlive agent_rt_create (which copies them). */
void rt_agent_opts_from_conf(const struct conf_config *cfg, struct agent_rt_opts *o,
                             struct agent_allow *allow);
/* Sets the receiver of progress events (before the runtime starts). */
void rt_agent_host_set_events(struct rt_agent_host *h, rt_agent_event_fn fn, void *ud);

/* `wye agent list [--dir DIR]` and `wye agent run NAME INPUT [--dir DIR] [-c CONF] [--json]`. */
int rt_cli_agent(int argc, char **argv);
/* `wye lua run [OPTIONS] FILE.lua [JSON-ARGS]` (router/lua_cli.c): a script, tool or workflow
 * file run on the agents runtime with this host, its result printed as JSON. */
int rt_cli_lua(int argc, char **argv);
/* The local model of `wye serve` and `wye agent run` (main thread; prog names the command in
 * messages): when *cfg has none (no --model, WYE_MODEL or engine.model), the first *.gguf in
 * ./models/, else ../shared/models/stories260K-q8_0.gguf beside the working directory or beside
 * the source tree the binary was built in; *cfg is reloaded from config with it as ov->model
 * (ov->model then points to static storage). Logs the choice and why. 0, or -1 with the reason
 * on stderr and *cfg freed when the config fails to reload, or nothing is found and no upstream
 * is set. */
/* What a CLI runs agents on (wye agent run, wye lua run): the local backend when cfg has a
 * model, the ledger at ledger_path when it is not NULL, the router and the agent host. */
struct rt_ledger;
struct rt_local;
struct rt_cli_stack {
    struct rt_local *local;
    struct rt_router *rt;
    struct rt_ledger *ledger;
    struct rt_agent_host *host;
};
/* Starts *s (zeroed by the caller) from cfg, which must outlive it. 0, or -1 with the reason
 * on stderr as "PROG: ..." (ledger_hint, or "", follows a ledger error); rt_cli_stack_stop
 * then frees what was started. */
int rt_cli_stack_start(struct rt_cli_stack *s, const struct conf_config *cfg, const char *prog,
                       const char *ledger_path, const char *ledger_hint);
/* Stops and frees everything of s, the ledger last (after the router: every finish is
 * recorded). */
void rt_cli_stack_stop(struct rt_cli_stack *s);
int rt_cli_default_model(const char *prog, const char *config, struct conf_overrides *ov,
                         struct conf_config **cfg);

#endif
