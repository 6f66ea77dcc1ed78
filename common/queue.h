/* A bounded FIFO of intrusive nodes guarded by a mutex and a condition variable: the way
 * threads hand each other work. Push reports whether the queue went from empty to non-empty,
 * so a producer wakes a consumer that sleeps elsewhere (lws_cancel_service,
 * curl_multi_wakeup) only then, after the lock is released (h2o multithread.c). */
#ifndef WYE_COMMON_QUEUE_H
#define WYE_COMMON_QUEUE_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/err.h"

struct wye_qnode {
    struct wye_qnode *next;
};

struct wye_queue {
    pthread_mutex_t lock;
    pthread_cond_t nonempty;
    struct wye_qnode *head; /* guarded by lock */
    struct wye_qnode *tail; /* guarded by lock */
    size_t len;             /* guarded by lock */
    size_t cap;             /* 0 = unbounded */
    bool closed;            /* guarded by lock */
};

/* Initialises an empty queue holding at most cap nodes (0: no bound). */
enum wye_err wye_queue_init(struct wye_queue *q, size_t cap);
/* Destroys the lock; nodes still queued are not freed (drain with take_all first). */
void wye_queue_cleanup(struct wye_queue *q);
/* Appends node; AGAIN if full, CANCELED if closed. *was_empty (may be NULL) tells whether
 * the queue was empty before. Signals a waiter in pop after unlocking. */
enum wye_err wye_queue_push(struct wye_queue *q, struct wye_qnode *node, bool *was_empty);
/* Removes the oldest node, waiting up to timeout_ns (0: don't wait; <0: forever). Returns
 * NULL on timeout, or when the queue is closed and empty. */
struct wye_qnode *wye_queue_pop(struct wye_queue *q, int64_t timeout_ns);
/* Removes every node at once and returns them as a list in FIFO order. */
struct wye_qnode *wye_queue_take_all(struct wye_queue *q);
/* Refuses further pushes and wakes every waiter. */
void wye_queue_close(struct wye_queue *q);
/* Returns the number of queued nodes. */
size_t wye_queue_len(struct wye_queue *q);

/* A queue and the one thread that works through it: fn(arg, node) for each node in order,
 * until the queue is closed and empty (what was queued before the close still runs). Producers
 * push to q with wye_queue_push; start, stop and cleanup belong to the owner's thread. */
typedef void (*wye_worker_fn)(void *arg, struct wye_qnode *node);
struct wye_worker {
    struct wye_queue q;
    pthread_t thread;
    wye_worker_fn fn;
    void *arg;
    char name[16]; /* the thread's name */
    bool started;  /* start succeeded and cleanup has not run */
    bool joined;
};
/* Initialises the queue (cap as for wye_queue_init) and starts the thread, named name (15
 * characters kept). NOMEM (no queue) or IO (no thread; errbuf says why), with nothing left to
 * clean up. */
enum wye_err wye_worker_start(struct wye_worker *w, size_t cap, const char *name, wye_worker_fn fn,
                              void *arg, char *errbuf, size_t errlen);
/* Closes the queue (later pushes get CANCELED), lets the thread finish what was queued, joins
 * it. Does nothing if not started or already stopped. */
void wye_worker_stop(struct wye_worker *w);
/* Stops, then frees the queue; the worker can be started again. Nothing if not started. */
void wye_worker_cleanup(struct wye_worker *w);

/* The struct that contains the node: WYE_CONTAINER_OF(node, struct job, qnode). */
#define WYE_CONTAINER_OF(ptr, type, member) ((type *)(void *)((char *)(ptr)-offsetof(type, member)))

#endif
