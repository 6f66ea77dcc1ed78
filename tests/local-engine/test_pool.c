/* The compute pool: every task runs exactly once per run, on a valid thread index, across
 * many rapid back-to-back runs (the spinning path) and runs separated by pauses longer than
 * the spin budget (the futex sleep/wake path); workers do take tasks; the caller sees every
 * task's writes (plain stores, published by the run); a thread whose own share is held up
 * gets the rest of it done by the others; NULL and 1-thread pools run inline;
 * create/destroy cycles join their workers; the benchmarks' one-counter mode is as exact. */
/* cmocka.h needs these first. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>

#include "common/clock.h"
#include "local-engine/pool.h"

#define MAX_TASKS 4096

struct count_job {
    atomic_int hits[MAX_TASKS];
    int plain[MAX_TASKS]; /* written by the tasks without atomics: the run must publish them */
    atomic_int bad_thread;
    int n_threads;
};

static struct count_job job;

static void count_task(void *arg, int64_t task, int thread)
{
    struct count_job *j = arg;
    atomic_fetch_add_explicit(&j->hits[task], 1, memory_order_relaxed);
    j->plain[task] = (int)task + 1;
    if (thread < 0 || thread >= j->n_threads) {
        atomic_store(&j->bad_thread, 1);
    }
}

/* Runs n_tasks and checks each ran once; returns the number of violations. */
static int run_and_check(struct eng_pool *pool, int64_t n_tasks)
{
    for (int64_t t = 0; t < n_tasks; t++) {
        atomic_store_explicit(&job.hits[t], 0, memory_order_relaxed);
        job.plain[t] = 0;
    }
    job.n_threads = eng_pool_size(pool);
    eng_pool_run(pool, count_task, &job, n_tasks);
    int bad = 0;
    for (int64_t t = 0; t < n_tasks; t++) {
        bad += atomic_load_explicit(&job.hits[t], memory_order_relaxed) != 1;
        bad += job.plain[t] != (int)t + 1;
    }
    return bad + atomic_load(&job.bad_thread);
}

static void test_rapid_runs(void **state)
{
    (void)state;
    for (int nth = 1; nth <= 3; nth++) {
        struct eng_pool *pool = eng_pool_create(nth);
        assert_non_null(pool);
        assert_int_equal(eng_pool_size(pool), nth);
        int bad = 0;
        /* 3 threads oversubscribe a 2-core CI machine, where each run can cost a time slice */
        int runs = nth <= 2 ? 20000 : 2000;
        for (int run = 0; run < runs; run++) {
            bad += run_and_check(pool, 1 + run % 7);
        }
        assert_int_equal(bad, 0);
        eng_pool_destroy(pool);
    }
}

static void test_many_tasks(void **state)
{
    (void)state;
    struct eng_pool *pool = eng_pool_create(3);
    assert_non_null(pool);
    for (int run = 0; run < 50; run++) {
        assert_int_equal(run_and_check(pool, MAX_TASKS - run), 0);
    }
    eng_pool_destroy(pool);
}

/* Pauses longer than the workers' spin budget make them sleep on the futex; the next run
 * must wake them and still run every task once. */
static atomic_int worker_tasks;

/* A few microseconds of work, so that a run lasts long enough for the workers to join in. */
static void spin_a_little(void)
{
    volatile int sink = 0;
    for (int i = 0; i < 2000; i++) {
        sink = sink + i;
    }
    (void)sink;
}

static void busy_task(void *arg, int64_t task, int thread)
{
    (void)arg;
    (void)task;
    spin_a_little();
    if (thread != 0) {
        atomic_fetch_add(&worker_tasks, 1);
    }
}

/* The workers really take tasks (the caller alone would also pass the counting tests). */
static void test_workers_participate(void **state)
{
    (void)state;
    struct eng_pool *pool = eng_pool_create(2);
    assert_non_null(pool);
    atomic_store(&worker_tasks, 0);
    int64_t t0 = wye_now_ns();
    while (atomic_load(&worker_tasks) == 0 && wye_now_ns() - t0 < 5 * WYE_NS_PER_S) {
        eng_pool_run(pool, busy_task, NULL, 256);
    }
    assert_true(atomic_load(&worker_tasks) > 0);
    eng_pool_destroy(pool);
}

/* Each worker names its thread "wye-pool-N" (N its thread number), for top -H, perf and gdb. */
static char worker_names[3][16];
static atomic_int named_workers;

static void name_task(void *arg, int64_t task, int thread)
{
    (void)arg;
    (void)task;
    if (thread > 0 && thread < 3 && worker_names[thread][0] == '\0') {
        /* no cmocka asserts off the test's thread: a failure leaves the name empty */
        if (pthread_getname_np(pthread_self(), worker_names[thread], 16) == 0) {
            atomic_fetch_add(&named_workers, 1);
        }
    }
    spin_a_little();
}

static void test_worker_names(void **state)
{
    (void)state;
    struct eng_pool *pool = eng_pool_create(3);
    assert_non_null(pool);
    int64_t t0 = wye_now_ns();
    while (atomic_load(&named_workers) < 2 && wye_now_ns() - t0 < 5 * WYE_NS_PER_S) {
        eng_pool_run(pool, name_task, NULL, 64);
    }
    assert_string_equal(worker_names[1], "wye-pool-1");
    assert_string_equal(worker_names[2], "wye-pool-2");
    eng_pool_destroy(pool);
}

struct sums {
    _Alignas(64) int64_t count;
    uint64_t sum, sum_sq;
};
static struct sums per_thread[4];

static void sum_task(void *arg, int64_t task, int thread)
{
    (void)arg;
    per_thread[thread].count++;
    per_thread[thread].sum += (uint64_t)task;
    per_thread[thread].sum_sq += (uint64_t)task * (uint64_t)task;
}

/* More tasks than one ticket holds (2^23): the run goes in batches, each task still once. */
static void test_huge_task_count(void **state)
{
    (void)state;
    struct eng_pool *pool = eng_pool_create(3);
    assert_non_null(pool);
    memset(per_thread, 0, sizeof(per_thread));
    const uint64_t n = (UINT64_C(1) << 23) + 3;
    eng_pool_run(pool, sum_task, NULL, (int64_t)n);
    int64_t count = 0;
    uint64_t sum = 0, sum_sq = 0;
    for (int t = 0; t < 3; t++) {
        count += per_thread[t].count;
        sum += per_thread[t].sum;
        sum_sq += per_thread[t].sum_sq;
    }
    assert_int_equal(count, (int64_t)n);
    uint64_t want_sq = 0; /* both sides wrap mod 2^64 the same way */
    for (uint64_t i = 0; i < n; i++) {
        want_sq += i * i;
    }
    assert_true(sum == n * (n - 1) / 2);
    assert_true(sum_sq == want_sq);
    eng_pool_destroy(pool);
}

static atomic_int finished;

/* Workers' tasks are slower than the caller's, so the caller runs out of tasks first. */
static void slow_task(void *arg, int64_t task, int thread)
{
    (void)arg;
    (void)task;
    int64_t t0 = wye_now_ns();
    while (wye_now_ns() - t0 < (thread == 0 ? 5000 : 100000)) {
    }
    atomic_fetch_add(&finished, 1);
}

/* eng_pool_run returns only after the tasks other threads took have finished too. */
static void test_run_waits_for_tasks(void **state)
{
    (void)state;
    struct eng_pool *pool = eng_pool_create(3);
    assert_non_null(pool);
    int bad = 0;
    for (int run = 0; run < 200; run++) {
        atomic_store(&finished, 0);
        eng_pool_run(pool, slow_task, NULL, 5);
        bad += atomic_load(&finished) != 5;
    }
    assert_int_equal(bad, 0);
    eng_pool_destroy(pool);
}

static void test_sleep_wake(void **state)
{
    (void)state;
    struct eng_pool *pool = eng_pool_create(3);
    assert_non_null(pool);
    for (int run = 0; run < 8; run++) {
        wye_sleep_ms(4);
        assert_int_equal(run_and_check(pool, 64), 0);
        assert_int_equal(run_and_check(pool, 2), 0);
    }
    eng_pool_destroy(pool);
}

/* A worker stuck in its first task of a run: the caller must run every other task, those of
 * the worker's own share included, before it lets the worker go (when it has run n - 1).
 * Without the helping the caller would stop after its own share and the worker would wait
 * out its 5 s. */
#define STUCK_TASKS 64
static atomic_int caller_ran, worker_started, release_worker, worker_timed_out;

static void stuck_task(void *arg, int64_t task, int thread)
{
    (void)arg;
    (void)task;
    if (thread == 0) {
        if (atomic_fetch_add(&caller_ran, 1) + 1 == STUCK_TASKS - 1) {
            atomic_store(&release_worker, 1);
        }
        return;
    }
    if (atomic_exchange(&worker_started, 1) == 0) {
        int64_t t0 = wye_now_ns();
        while (!atomic_load(&release_worker)) {
            if (wye_now_ns() - t0 > 5 * WYE_NS_PER_S) {
                atomic_store(&worker_timed_out, 1);
                break;
            }
        }
    }
}

static void test_others_help_a_stuck_thread(void **state)
{
    (void)state;
    struct eng_pool *pool = eng_pool_create(2);
    assert_non_null(pool);
    for (int run = 0; run < 20; run++) {
        atomic_store(&caller_ran, 0);
        atomic_store(&worker_started, 0);
        atomic_store(&release_worker, 0);
        atomic_store(&worker_timed_out, 0);
        eng_pool_run(pool, stuck_task, NULL, STUCK_TASKS);
        assert_int_equal(atomic_load(&worker_timed_out), 0);
        /* the worker ran one task (or none, when it came late: how often depends on the
         * machine) and the caller all the rest */
        int w = atomic_load(&worker_started);
        assert_int_equal(atomic_load(&caller_ran), STUCK_TASKS - w);
    }
    eng_pool_destroy(pool);
}

/* eng_pool_bench_one_share (the benchmarks' A/B switch): one counter for all threads runs
 * every task once too, and switching back and forth between runs is safe. */
static void test_one_share_mode(void **state)
{
    (void)state;
    struct eng_pool *pool = eng_pool_create(3);
    assert_non_null(pool);
    int bad = 0;
    for (int run = 0; run < 2000; run++) {
        eng_pool_bench_one_share(run % 3 == 0);
        bad += run_and_check(pool, 1 + run % 37);
    }
    eng_pool_bench_one_share(false);
    assert_int_equal(bad, 0);
    eng_pool_destroy(pool);
}

static void test_inline_pools(void **state)
{
    (void)state;
    assert_int_equal(eng_pool_size(NULL), 1);
    assert_int_equal(run_and_check(NULL, 100), 0);
    struct eng_pool *pool = eng_pool_create(0); /* below 1 means 1 */
    assert_non_null(pool);
    assert_int_equal(eng_pool_size(pool), 1);
    assert_int_equal(run_and_check(pool, 100), 0);
    eng_pool_run(pool, count_task, &job, 0); /* no tasks: nothing to do */
    eng_pool_destroy(pool);
    eng_pool_destroy(NULL);
}

static void test_create_destroy_cycles(void **state)
{
    (void)state;
    for (int i = 0; i < 100; i++) {
        struct eng_pool *pool = eng_pool_create(2 + i % 3);
        assert_non_null(pool);
        if (i % 2) {
            assert_int_equal(run_and_check(pool, 5), 0);
        }
        eng_pool_destroy(pool); /* joins: a worker left running would trip ASan/TSan */
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rapid_runs),
        cmocka_unit_test(test_many_tasks),
        cmocka_unit_test(test_workers_participate),
        cmocka_unit_test(test_worker_names),
        cmocka_unit_test(test_run_waits_for_tasks),
        cmocka_unit_test(test_huge_task_count),
        cmocka_unit_test(test_sleep_wake),
        cmocka_unit_test(test_others_help_a_stuck_thread),
        cmocka_unit_test(test_one_share_mode),
        cmocka_unit_test(test_inline_pools),
        cmocka_unit_test(test_create_destroy_cycles),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
