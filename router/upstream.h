/* The remote backend: one thread owning a libcurl multi handle that streams chat completions
 * from an OpenAI-compatible API into sinks. Jobs and sink wakeups reach that thread through a
 * queue plus curl_multi_wakeup(). */
#ifndef WYE_ROUTER_UPSTREAM_H
#define WYE_ROUTER_UPSTREAM_H

#include <stddef.h>

#include "common/chat.h"
#include "common/err.h"
#include "conf/conf.h"
#include "router/router.h"

struct rt_upstream;

/* Creates the client for cfg (borrowed; must outlive it; base_url must be set). NULL on
 * allocation or curl failure. curl_global_init must have run. */
struct rt_upstream *rt_upstream_create(const struct conf_upstream *cfg);
/* Starts the upstream thread. */
enum wye_err rt_upstream_start(struct rt_upstream *up);
/* Cancels every transfer (finish with CANCELED) and joins the thread. Idempotent. */
void rt_upstream_stop(struct rt_upstream *up);
/* Stops, then frees. NULL is a no-op. */
void rt_upstream_destroy(struct rt_upstream *up);
/* Queues req (takes ownership, freed on refusal too) for the upstream; never blocks on the
 * network. OK: sink->finish is called exactly once, later, from the upstream thread. CANCELED
 * when stopping, NOMEM. The model sent upstream is cfg->model (the router checked the name). */
enum wye_err rt_upstream_submit(struct rt_upstream *up, struct wye_chat_req *req,
                                struct wye_sink sink, char *errbuf, size_t errlen);
/* Same, but req is only borrowed: the caller frees it after sink->finish (or on refusal).
 * The router keeps it to fall back to the local model when the upstream fails early. */
enum wye_err rt_upstream_submit_borrowed(struct rt_upstream *up, struct wye_chat_req *req,
                                         struct wye_sink sink, char *errbuf, size_t errlen);
/* Adds the upstream counters into out. Any thread. */
void rt_upstream_stats(struct rt_upstream *up, struct rt_stats *out);

#endif
