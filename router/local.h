/* router/local.h — the local engine as a router backend. One engine worker thread owns an
 * eng_ctx (n_seq_max sequences) over one eng_model; requests wait in a bounded admission queue
 * and join the running batch between steps (continuous batching: eng_batch_add / eng_batch_step /
 * on_done frees the slot and the next queued request joins).
 *
 * Sink protocol: start() (route "local", the model name, score -1, reasons NULL) is called
 * lazily, just before the first event (the first text delta, or the usage of an empty answer);
 * a request cancelled before that gets only finish(). Then WYE_EV_DELTA text (UTF-8 complete)
 * and, for a request with OpenAI tools, one WYE_EV_TOOL_DELTA per call (the OpenAI delta
 * array [{"index","id","type":"function","function":{"name","arguments"}}], sent whole when
 * the call's constrained JSON closes; docs/routing.md "Local tool calls"), one WYE_EV_USAGE
 * (exact counts, estimated false) for answers that were not cancelled, and finish exactly once
 * (finish_reason "stop", "length", "tool_calls", "cancelled" or "error"). All sink calls
 * except set_wakeup's wake happen on the engine worker thread. After emit answers AGAIN nothing
 * more is emitted until the sink's wakeup fires. */
#ifndef WYE_ROUTER_LOCAL_H
#define WYE_ROUTER_LOCAL_H

#include <stddef.h>
#include <stdint.h>

#include "common/chat.h"
#include "common/err.h"
#include "conf/conf.h"

struct rt_local;

struct rt_local_stats {
    uint64_t requests;         /* accepted by submit */
    uint64_t tokens_generated; /* completion tokens of finished requests */
    uint64_t tokens_prompt;    /* prompt tokens of finished requests */
    uint64_t queue_full;       /* submits refused with AGAIN */
    uint64_t active;           /* sequences in the engine now */
    uint64_t queued;           /* accepted, waiting for a sequence slot */
    uint64_t preparing;        /* accepted by submit_async, not yet tokenized and queued */
};

#define RT_LOCAL_MAX_TOKENS_DEFAULT 256 /* max_tokens 0: this many, bounded by the context */
#define RT_LOCAL_QUEUE_DEFAULT 64       /* conf's default router.queue_max (< 0 here: this) */

/* Loads cfg->engine.model_path (cfg borrowed; must outlive). errbuf names the problem. */
enum wye_err rt_local_create(const struct conf_config *cfg, struct rt_local **out, char *errbuf,
                             size_t errlen);
/* Starts the engine worker thread and the preparation thread. */
enum wye_err rt_local_start(struct rt_local *l);
/* Every in-flight/queued request finishes CANCELED, and one still waiting for preparation is
 * refused with CANCELED; joins. Idempotent. */
void rt_local_stop(struct rt_local *l);
/* NULL is a no-op; stops first if needed. */
void rt_local_destroy(struct rt_local *l);
/* The name in /v1/models (cfg->engine.model_name). */
const char *rt_local_model_name(const struct rt_local *l);
/* The context length every sequence gets (prompt + answer), in tokens. */
int32_t rt_local_n_ctx(const struct rt_local *l);

/* Queues req for the engine. OK: takes ownership of req; the sink gets the protocol above, with
 * finish exactly once, never from inside this call. Any other return: req is NOT consumed and
 * the sink is untouched (the caller may fall back to remote). AGAIN: the admission queue is
 * full (n_seq_max running + cfg->router.queue_max waiting; queue_max 0: every sequence busy);
 * errbuf names router.queue_max. TOOBIG: the prompt plus max_tokens
 * exceeds the context, or too many/too long stop strings (errbuf names the numbers). INVAL: an
 * empty prompt, a response_format or tools schema outside the constrained subset (naming the
 * tool and keyword), a bad tool_choice. CANCELED: the backend is stopping. Any thread, but it
 * tokenizes there: the router uses rt_local_submit_async. */
enum wye_err rt_local_submit(struct rt_local *l, struct wye_chat_req *req, struct wye_sink sink,
                             char *errbuf, size_t errlen);
/* How rt_local_submit_async hands back a request it accepted and then could not queue: on the
 * backend's preparation thread (or the owner's, from stop), with the same err and message
 * rt_local_submit would have returned (CANCELED when the backend stops first). The callee owns
 * req again; the sink was never called. */
typedef void (*rt_local_refused_fn)(void *arg, struct wye_chat_req *req, enum wye_err err,
                                    const char *msg);

/* rt_local_submit without the work that grows with the prompt on the caller's thread: AGAIN
 * (admission full), CANCELED (stopping) and INVAL (arguments) come back at once with req not
 * consumed; OK means req is taken and the preparation thread will either queue it (the sink
 * then gets the protocol above) or call refused(arg, ...) exactly once. Any thread; never
 * blocks on the model. */
enum wye_err rt_local_submit_async(struct rt_local *l, struct wye_chat_req *req,
                                   struct wye_sink sink, rt_local_refused_fn refused, void *arg,
                                   char *errbuf, size_t errlen);
/* Copies the counters. Any thread. */
void rt_local_stats(struct rt_local *l, struct rt_local_stats *out);

#endif
