/* Bounded intrusive FIFO with mutex and condition variable (any thread), and the worker
 * thread that drains one. */
#include "common/queue.h"

#include <errno.h>
#include <stdio.h>
#include <time.h>

#include "common/log.h"

enum wye_err wye_queue_init(struct wye_queue *q, size_t cap)
{
    pthread_condattr_t attr;
    if (pthread_mutex_init(&q->lock, NULL) != 0) {
        return WYE_ERR_NOMEM;
    }
    if (pthread_condattr_init(&attr) != 0) {
        goto err_mutex;
    }
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    if (pthread_cond_init(&q->nonempty, &attr) != 0) {
        pthread_condattr_destroy(&attr);
        goto err_mutex;
    }
    pthread_condattr_destroy(&attr);
    q->head = q->tail = NULL;
    q->len = 0;
    q->cap = cap;
    q->closed = false;
    return WYE_OK;
err_mutex:
    pthread_mutex_destroy(&q->lock);
    return WYE_ERR_NOMEM;
}

void wye_queue_cleanup(struct wye_queue *q)
{
    pthread_cond_destroy(&q->nonempty);
    pthread_mutex_destroy(&q->lock);
}

enum wye_err wye_queue_push(struct wye_queue *q, struct wye_qnode *node, bool *was_empty)
{
    pthread_mutex_lock(&q->lock);
    if (q->closed) {
        pthread_mutex_unlock(&q->lock);
        return WYE_ERR_CANCELED;
    }
    if (q->cap && q->len >= q->cap) {
        pthread_mutex_unlock(&q->lock);
        return WYE_ERR_AGAIN;
    }
    bool empty = q->len == 0;
    node->next = NULL;
    if (q->tail) {
        q->tail->next = node;
    } else {
        q->head = node;
    }
    q->tail = node;
    q->len++;
    pthread_mutex_unlock(&q->lock);
    if (empty) {
        pthread_cond_signal(&q->nonempty);
    }
    if (was_empty) {
        *was_empty = empty;
    }
    return WYE_OK;
}

struct wye_qnode *wye_queue_pop(struct wye_queue *q, int64_t timeout_ns)
{
    struct timespec deadline;
    if (timeout_ns > 0) {
        clock_gettime(CLOCK_MONOTONIC, &deadline);
        deadline.tv_sec += timeout_ns / 1000000000;
        deadline.tv_nsec += timeout_ns % 1000000000;
        if (deadline.tv_nsec >= 1000000000) {
            deadline.tv_sec++;
            deadline.tv_nsec -= 1000000000;
        }
    }
    pthread_mutex_lock(&q->lock);
    while (!q->head && !q->closed && timeout_ns != 0) {
        if (timeout_ns < 0) {
            pthread_cond_wait(&q->nonempty, &q->lock);
        } else if (pthread_cond_timedwait(&q->nonempty, &q->lock, &deadline) == ETIMEDOUT) {
            break;
        }
    }
    struct wye_qnode *node = q->head;
    if (node) {
        q->head = node->next;
        if (!q->head) {
            q->tail = NULL;
        }
        q->len--;
        node->next = NULL;
    }
    pthread_mutex_unlock(&q->lock);
    return node;
}

struct wye_qnode *wye_queue_take_all(struct wye_queue *q)
{
    pthread_mutex_lock(&q->lock);
    struct wye_qnode *list = q->head;
    q->head = q->tail = NULL;
    q->len = 0;
    pthread_mutex_unlock(&q->lock);
    return list;
}

void wye_queue_close(struct wye_queue *q)
{
    pthread_mutex_lock(&q->lock);
    q->closed = true;
    pthread_mutex_unlock(&q->lock);
    pthread_cond_broadcast(&q->nonempty);
}

size_t wye_queue_len(struct wye_queue *q)
{
    pthread_mutex_lock(&q->lock);
    size_t n = q->len;
    pthread_mutex_unlock(&q->lock);
    return n;
}

static void *worker_main(void *arg)
{
    struct wye_worker *w = arg;
    (void)pthread_setname_np(pthread_self(), w->name);
    struct wye_qnode *n;
    /* NULL once the queue is closed and empty */
    while ((n = wye_queue_pop(&w->q, -1)) != NULL) {
        w->fn(w->arg, n);
    }
    return NULL;
}

enum wye_err wye_worker_start(struct wye_worker *w, size_t cap, const char *name, wye_worker_fn fn,
                              void *arg, char *errbuf, size_t errlen)
{
    *w = (struct wye_worker){.fn = fn, .arg = arg};
    snprintf(w->name, sizeof(w->name), "%s", name);
    if (wye_queue_init(&w->q, cap) != WYE_OK) {
        snprintf(errbuf, errlen, "cannot create its queue");
        return WYE_ERR_NOMEM;
    }
    int rc = pthread_create(&w->thread, NULL, worker_main, w);
    if (rc != 0) {
        char eb[128];
        snprintf(errbuf, errlen, "%s", wye_strerror(rc, eb, sizeof(eb)));
        wye_queue_cleanup(&w->q);
        return WYE_ERR_IO;
    }
    w->started = true;
    return WYE_OK;
}

void wye_worker_stop(struct wye_worker *w)
{
    if (!w->started || w->joined) {
        return;
    }
    wye_queue_close(&w->q);
    pthread_join(w->thread, NULL);
    w->joined = true;
}

void wye_worker_cleanup(struct wye_worker *w)
{
    if (!w->started) {
        return;
    }
    wye_worker_stop(w);
    wye_queue_cleanup(&w->q);
    w->started = false;
    w->joined = false;
}
