/* A scripted backend for gateway tests: submit() starts a producer thread per request whose
 * behaviour is chosen by the last user message (see the table in gw_test_backend.c). The
 * producers honour AGAIN (wait for the wakeup), cancelled() and the wakeup, and record what
 * they saw in atomics that the main test thread reads. Plus a fixture that runs a real server
 * on 127.0.0.1 port 0. */
#ifndef WYE_TESTS_GATEWAY_GW_TEST_BACKEND_H
#define WYE_TESTS_GATEWAY_GW_TEST_BACKEND_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "conf/conf.h"
#include "gateway/gateway.h"

struct tb_stats {
    atomic_int submits;             /* accepted requests */
    atomic_int finished;            /* producers that called finish */
    atomic_int again;               /* emits that returned AGAIN */
    atomic_int wakes;               /* wakeups received */
    atomic_int cancel_seen;         /* producers that saw cancelled() */
    _Atomic int64_t cancel_seen_ns; /* wye_now_ns() when a #hold/#flood producer saw it */
    _Atomic int64_t max_chunk;      /* the largest delta a producer emitted */
    atomic_int emitted;             /* deltas accepted */
};

extern struct tb_stats tb_stats;
/* req->key_name of the last request submitted ("(null)" when none); lws thread writes it. */
extern char tb_last_key_name[80];
extern const struct gw_backend_ops tb_ops;

/* Resets the stats. */
void tb_reset(void);
/* Joins every producer thread (bounded: producers stop on cancel or after their script). */
void tb_join_all(void);

struct gwt {
    struct conf_config cfg;
    struct gw_server *srv;
    int port;
};

/* Fills cfg with small test limits (listen 127.0.0.1:0). */
void gwt_default_cfg(struct conf_config *cfg);
/* Starts a server with t->cfg and the scripted backend; false on failure. */
bool gwt_start(struct gwt *t);
/* Like gwt_start, with an API key table (borrowed; NULL: none). */
bool gwt_start_keys(struct gwt *t, struct rt_keys *keys);
/* Graceful shutdown, joins producers, destroys the server. */
void gwt_stop(struct gwt *t);

/* A cmocka group fixture over one server with the default test config and the scripted backend:
 * gwt_group_setup starts it in gwt_group, gwt_group_teardown stops and frees it. A test may point
 * gwt_group at a server of its own for a while (and back before it ends). */
extern struct gwt *gwt_group;
int gwt_group_setup(void **state);
int gwt_group_teardown(void **state);

/* Opens n connections to t's server (their fds in fds) and waits up to 3 s for the server to
 * count n open; false if one could not connect. For the connection limit tests. */
bool gwt_open_connections(struct gwt *t, int *fds, int n);
/* A thread body that shuts the server srv down, for tests that watch a shutdown (which waits
 * for the grace period) from the main thread. */
void *gwt_shutdown_thread(void *srv);

#endif
