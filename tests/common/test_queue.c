/* The bounded queue: FIFO order, the cap, empty->non-empty reporting, timed pop, close, and
 * a producer/consumer pair across threads losing nothing. */
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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fifo_and_cap),
        cmocka_unit_test(test_threads),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
