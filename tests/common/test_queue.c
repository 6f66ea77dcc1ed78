/* The bounded queue: FIFO order, the cap, empty->non-empty reporting, timed pop, close, and
 * a producer/consumer pair across threads losing nothing. The worker: every node queued before
 * stop runs, in order, on its own thread; pushes after stop are refused; it starts again after
 * cleanup. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <pthread.h>

#include "common/clock.h"
#include "common/queue.h"

struct item {
    struct wye_qnode node;
    int v;
};

static void test_fifo_and_cap(void **state)
{
    (void)state;
    struct wye_queue q;
    struct item it[3] = {{.v = 1}, {.v = 2}, {.v = 3}};
    bool was_empty = false;
    assert_int_equal(wye_queue_init(&q, 2), WYE_OK);
    assert_int_equal(wye_queue_push(&q, &it[0].node, &was_empty), WYE_OK);
    assert_true(was_empty);
    assert_int_equal(wye_queue_push(&q, &it[1].node, &was_empty), WYE_OK);
    assert_false(was_empty);
    assert_int_equal(wye_queue_push(&q, &it[2].node, NULL), WYE_ERR_AGAIN);
    struct wye_qnode *n = wye_queue_pop(&q, 0);
    assert_int_equal(WYE_CONTAINER_OF(n, struct item, node)->v, 1);
    n = wye_queue_pop(&q, 0);
    assert_int_equal(WYE_CONTAINER_OF(n, struct item, node)->v, 2);
    assert_null(wye_queue_pop(&q, 0));
    int64_t t0 = wye_now_ns();
    assert_null(wye_queue_pop(&q, 20 * WYE_NS_PER_MS));
    assert_true(wye_now_ns() - t0 >= 19 * WYE_NS_PER_MS);
    wye_queue_close(&q);
    assert_int_equal(wye_queue_push(&q, &it[0].node, NULL), WYE_ERR_CANCELED);
    assert_null(wye_queue_pop(&q, -1));
    wye_queue_cleanup(&q);
}

#define N_ITEMS 10000
static struct item items[N_ITEMS];

static void *producer(void *arg)
{
    struct wye_queue *q = arg;
    for (int i = 0; i < N_ITEMS; i++) {
        items[i].v = i;
        while (wye_queue_push(q, &items[i].node, NULL) == WYE_ERR_AGAIN) {
            sched_yield();
        }
    }
    return NULL;
}

static void test_threads(void **state)
{
    (void)state;
    struct wye_queue q;
    pthread_t t;
    assert_int_equal(wye_queue_init(&q, 64), WYE_OK);
    assert_int_equal(pthread_create(&t, NULL, producer, &q), 0);
    for (int i = 0; i < N_ITEMS; i++) {
        struct wye_qnode *n = wye_queue_pop(&q, 5 * WYE_NS_PER_S);
        assert_non_null(n);
        assert_int_equal(WYE_CONTAINER_OF(n, struct item, node)->v, i);
    }
    pthread_join(t, NULL);
    wye_queue_cleanup(&q);
}

/* The worker's fn: records the order and the thread, and holds the first node until the test
 * has queued the rest (so stop finds work still queued). */
struct worker_log {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool entered, release;
    int seen[8];
    int n;
    pthread_t thread;
};

static void worker_fn(void *arg, struct wye_qnode *node)
{
    struct worker_log *lg = arg;
    pthread_mutex_lock(&lg->mu);
    lg->entered = true;
    pthread_cond_broadcast(&lg->cv);
    while (!lg->release) {
        pthread_cond_wait(&lg->cv, &lg->mu);
    }
    lg->seen[lg->n++] = WYE_CONTAINER_OF(node, struct item, node)->v;
    lg->thread = pthread_self();
    pthread_mutex_unlock(&lg->mu);
}

static void test_worker(void **state)
{
    (void)state;
    struct worker_log lg = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};
    struct wye_worker w = {0};
    struct item it[5] = {{.v = 10}, {.v = 11}, {.v = 12}, {.v = 13}, {.v = 14}};
    char eb[64];
    wye_worker_stop(&w); /* not started: nothing to do */
    wye_worker_cleanup(&w);
    for (int round = 0; round < 2; round++) {
        lg.entered = lg.release = false;
        lg.n = 0;
        assert_int_equal(wye_worker_start(&w, 3, "test-worker", worker_fn, &lg, eb, sizeof(eb)),
                         WYE_OK);
        assert_true(w.started);
        assert_int_equal(wye_queue_push(&w.q, &it[0].node, NULL), WYE_OK);
        pthread_mutex_lock(&lg.mu);
        while (!lg.entered) { /* the thread holds the first node */
            pthread_cond_wait(&lg.cv, &lg.mu);
        }
        pthread_mutex_unlock(&lg.mu);
        for (int i = 1; i < 4; i++) { /* the cap: 3 queued behind it */
            assert_int_equal(wye_queue_push(&w.q, &it[i].node, NULL), WYE_OK);
        }
        assert_int_equal(wye_queue_push(&w.q, &it[4].node, NULL), WYE_ERR_AGAIN);
        pthread_mutex_lock(&lg.mu);
        lg.release = true;
        pthread_cond_broadcast(&lg.cv);
        pthread_mutex_unlock(&lg.mu);
        wye_worker_stop(&w); /* runs what was queued, then joins */
        assert_int_equal(lg.n, 4);
        for (int i = 0; i < 4; i++) {
            assert_int_equal(lg.seen[i], 10 + i);
        }
        assert_false(pthread_equal(lg.thread, pthread_self()));
        assert_int_equal(wye_queue_push(&w.q, &it[4].node, NULL), WYE_ERR_CANCELED);
        wye_worker_stop(&w); /* twice: nothing more */
        wye_worker_cleanup(&w);
        assert_false(w.started);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fifo_and_cap),
        cmocka_unit_test(test_threads),
        cmocka_unit_test(test_worker),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
