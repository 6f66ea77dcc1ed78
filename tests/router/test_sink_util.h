/* Test helpers for the router tests: a fake sink that records what a producer sent (with a
 * mutex and condvar so the main thread waits with a bound), and a stub-upstream + router
 * environment. Recording runs on the upstream thread; cmocka asserts only on the main one. */
#ifndef WYE_TESTS_ROUTER_SINK_UTIL_H
#define WYE_TESTS_ROUTER_SINK_UTIL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>

#include "common/buf.h"
#include "common/chat.h"
#include "conf/conf.h"
#include "router/router.h"
#include "tests/stub/stub_upstream.h"

struct fsink {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    /* guarded by mu */
    int n_start;
    char route[16];
    char model[64];
    double score;
    bool reasons_null;
    struct wye_buf text;  /* every DELTA, concatenated */
    struct wye_buf tools; /* every TOOL_DELTA, each followed by '\n' */
    int n_delta, n_tool, n_usage, n_events;
    struct wye_usage last_usage;
    int violations; /* emit before start / after finish, start twice, finish twice */
    int n_finish;
    struct wye_result res;
    char msg[512];
    char reason[32];
    int64_t t_finish_ns;
    int again_every;     /* emit answers AGAIN on every k-th event (0: never) */
    int cancel_at;       /* emit answers CANCELED at this event number (0: never) */
    bool blocked;        /* AGAIN was answered and no wake yet */
    int n_while_blocked; /* events emitted while blocked */
    void (*wake)(void *);
    void *wake_arg;
    atomic_bool cancelled;
};

void fsink_init(struct fsink *f);
void fsink_cleanup(struct fsink *f);
struct wye_sink fsink_sink(struct fsink *f);
/* Waits up to ms for finish; true if it came. */
bool fsink_wait_finish(struct fsink *f, int ms);
/* Waits up to ms until at least n events arrived, or blocked, or finish. */
void fsink_wait_events(struct fsink *f, int n, int ms);
/* Clears blocked and calls the registered wakeup (as the gateway would, from its thread). */
void fsink_unblock(struct fsink *f);
/* Marks the sink cancelled; with wake, also calls the wakeup. */
void fsink_cancel(struct fsink *f, bool wake);

struct env {
    struct stub_upstream *stub;
    struct conf_config cfg;
    struct rt_router *rt;
    char url[80];
};

/* Starts a stub and fills cfg with test defaults pointing at it (no router yet). */
void env_init(struct env *e);
/* Creates and starts the router for e->cfg. */
void env_router(struct env *e);
void env_cleanup(struct env *e);
/* Submits a chat request with one user message (content is raw JSON-string-safe text) and
 * extra top-level JSON members (may be NULL, e.g. "\"tools\":[...]"). Returns submit's code. */
enum wye_err env_submit(struct env *e, const char *model, const char *content, const char *extra,
                        struct fsink *f, char *errbuf, size_t errlen);
/* The same with "stream" true or false (env_submit: true). */
enum wye_err env_submit_stream(struct env *e, const char *model, const char *content,
                               const char *extra, bool stream, struct fsink *f, char *errbuf,
                               size_t errlen);

#endif
