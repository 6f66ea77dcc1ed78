/* The compute pool. Runs on the engine thread that calls eng_pool_run (as thread 0) and on
 * the pool's own worker threads.
 *
 * DESIGN: a run writes its job (fn, arg, base) into one of two slots (by run parity), resets
 * the done counter, splits the tasks into one contiguous share per thread and stores each
 * share as a 64-bit ticket {run number, end, next = start} (release) on the thread's own
 * cache line, then bumps the 32-bit generation (seq_cst). A thread takes tasks with
 * fetch_add on its own ticket first, then on the others' (helping a slower or descheduled
 * thread, task by task), and decides from the value it got back alone: an index below that
 * value's end is a task of that run (whose caller cannot finish, hence cannot reuse the slot
 * or the tickets, before the task is counted done); anything else means "nothing left
 * there". Own shares keep the counters uncontended and each thread's rows contiguous, which
 * the small matrices of small models notice (docs/engine.md); the helping keeps the
 * balance of one shared counter. The caller waits only for tasks that were taken
 * (done == n_tasks, acquire; each thread releases its count once it finds nothing left),
 * never for a worker that was descheduled and has not started: a late worker finds the
 * tickets exhausted and goes back to waiting. Workers spin on the generation for up to
 * SPIN_NS after their last task (pausing, then yielding the CPU), then sleep on it with
 * FUTEX_WAIT after announcing themselves in n_sleeping; the caller issues FUTEX_WAKE only
 * when someone sleeps. (Both sides use seq_cst on gen and n_sleeping: either the caller sees
 * the sleeper and wakes it, or the sleeper sees the new generation and does not sleep.) */
#include <assert.h>
#include <limits.h>
#include <linux/futex.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define CPU_RELAX() _mm_pause()
#else
#define CPU_RELAX() ((void)0)
#endif

#include "common/alloc.h"
#include "common/err.h"
#include "common/log.h"
#include "local-engine/pool.h"

/* How long an idle worker spins before sleeping; a forward pass issues jobs far more often. */
#define SPIN_NS 1000000
/* How long a waiting thread spins before it yields the CPU between checks. */
#define PURE_SPIN_NS 20000

/* A ticket: [63:48] run number (its low bit picks the job slot), [47:24] end of the share,
 * [23:0] next task (indices into the run's tasks). next passes end by at most two per thread
 * per run (each thread's one empty take per ticket, and a late worker's empty take can land
 * on the next run's ticket), so it never carries into end. */
#define TICKET_N_SHIFT 24
#define TICKET_RUN_SHIFT 48
#define TICKET_FIELD_MASK ((UINT64_C(1) << 24) - 1)
#define BATCH_MAX (INT64_C(1) << 23) /* tasks per ticket; larger runs go in batches */

struct worker {
    struct eng_pool *pool;
    int id; /* 1..n_threads-1 */
};

struct job_slot {
    void (*fn)(void *arg, int64_t task, int thread);
    void *arg;
    int64_t base; /* task number of ticket index 0 */
};

/* One thread's share of a run. Padded (not aligned: the array comes from calloc) so that no
 * two tickets share a cache line. */
struct ticket {
    _Atomic uint64_t t;
    char pad[64 - sizeof(uint64_t)];
};

struct eng_pool {
    int n_threads;
    int n_started;          /* workers actually created (cleanup) */
    pthread_t *threads;     /* (n_threads - 1) */
    struct worker *workers; /* (n_threads - 1) */
    struct job_slot slots[2]; /* written by the caller only while no task of that slot runs */
    unsigned runs;            /* caller only */

    struct ticket *tickets;                 /* (n_threads): thread t's share is tickets[t] */
    _Alignas(64) atomic_int_least64_t done; /* tasks of the current run finished */
    _Alignas(64) atomic_uint gen;           /* bumped per run; the futex word */
    atomic_int n_sleeping;                  /* workers in (or about to be in) FUTEX_WAIT */
    atomic_bool stop;                       /* set by destroy before the last bump */
};

static_assert(sizeof(atomic_uint) == 4, "the futex word is 32 bits");

static int64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void futex_wait(atomic_uint *addr, unsigned expected)
{
    /* EAGAIN (value changed) and EINTR are both answered by re-checking the value */
    (void)syscall(SYS_futex, (unsigned *)addr, FUTEX_WAIT_PRIVATE, expected, NULL, NULL, 0);
}

static void futex_wake_all(atomic_uint *addr)
{
    (void)syscall(SYS_futex, (unsigned *)addr, FUTEX_WAKE_PRIVATE, INT_MAX, NULL, NULL, 0);
}

/* Returns the first generation different from seen: spins, then spins yielding the CPU
 * (when threads outnumber cores the caller may need this core to publish the job), then
 * sleeps on the futex. */
static unsigned wait_generation(struct eng_pool *pool, unsigned seen)
{
    int64_t t0 = 0;
    bool yielding = false;
    for (unsigned i = 1;; i++) {
        unsigned g = atomic_load_explicit(&pool->gen, memory_order_acquire);
        if (g != seen) {
            return g;
        }
        if (yielding) {
            sched_yield();
        } else {
            CPU_RELAX();
        }
        if ((i & 63) == 0) {
            int64_t now = mono_ns();
            if (t0 == 0) {
                t0 = now;
            } else if (now - t0 > SPIN_NS) {
                break;
            } else if (now - t0 > PURE_SPIN_NS) {
                yielding = true;
            }
        }
    }
    atomic_fetch_add_explicit(&pool->n_sleeping, 1, memory_order_seq_cst);
    unsigned g;
    while ((g = atomic_load_explicit(&pool->gen, memory_order_seq_cst)) == seen) {
        futex_wait(&pool->gen, seen);
    }
    atomic_fetch_sub_explicit(&pool->n_sleeping, 1, memory_order_relaxed);
    return g;
}

/* Takes and runs tasks of whichever run the tickets hold, its own share first and then
 * what is left of the others', until none is left, then adds how many it ran to done in one
 * release (one contended atomic per thread and run instead of one per task). The run cannot
 * end, so no ticket can move to another run, while this thread holds tasks it has run but
 * not yet counted. */
static void work(struct eng_pool *pool, int thread)
{
    int64_t n_done = 0;
    int nth = pool->n_threads;
    for (int i = 0; i < nth; i++) {
        _Atomic uint64_t *tk = &pool->tickets[(thread + i) % nth].t;
        for (;;) {
            uint64_t t = atomic_fetch_add_explicit(tk, 1, memory_order_acq_rel);
            uint64_t idx = t & TICKET_FIELD_MASK;
            uint64_t end = (t >> TICKET_N_SHIFT) & TICKET_FIELD_MASK;
            if (idx >= end) {
                break;
            }
            const struct job_slot *job = &pool->slots[(t >> TICKET_RUN_SHIFT) & 1];
            job->fn(job->arg, job->base + (int64_t)idx, thread);
            n_done++;
        }
    }
    if (n_done > 0) {
        atomic_fetch_add_explicit(&pool->done, n_done, memory_order_release);
    }
}

static void *worker_main(void *p)
{
    struct worker *w = p;
    struct eng_pool *pool = w->pool;
    char name[16];
    snprintf(name, sizeof(name), "wye-pool-%d", w->id % 100000);
    (void)pthread_setname_np(pthread_self(), name);
    unsigned seen = 0; /* the generation at creation */
    for (;;) {
        seen = wait_generation(pool, seen);
        if (atomic_load_explicit(&pool->stop, memory_order_relaxed)) {
            return NULL;
        }
        work(pool, w->id);
    }
}

/* Bumps the generation (releasing everything written before) and wakes sleepers. */
static void publish(struct eng_pool *pool)
{
    atomic_fetch_add_explicit(&pool->gen, 1, memory_order_seq_cst);
    if (atomic_load_explicit(&pool->n_sleeping, memory_order_seq_cst) > 0) {
        futex_wake_all(&pool->gen);
    }
}

/* Waits until n tasks of the current run are done; only taken tasks are waited for. */
static void wait_done(struct eng_pool *pool, int64_t n)
{
    int64_t t0 = 0;
    bool yielding = false;
    for (unsigned i = 1; atomic_load_explicit(&pool->done, memory_order_acquire) < n; i++) {
        if (yielding) {
            sched_yield(); /* the thread running the last task is not running: let it */
        } else {
            CPU_RELAX();
        }
        if ((i & 63) == 0) {
            int64_t now = mono_ns();
            if (t0 == 0) {
                t0 = now;
            } else if (now - t0 > PURE_SPIN_NS) {
                yielding = true;
            }
        }
    }
}

static void stop_workers(struct eng_pool *pool)
{
    if (pool->n_started == 0) {
        return;
    }
    atomic_store_explicit(&pool->stop, true, memory_order_relaxed);
    publish(pool);
    for (int i = 0; i < pool->n_started; i++) {
        pthread_join(pool->threads[i], NULL);
    }
    pool->n_started = 0;
}

struct eng_pool *eng_pool_create(int n_threads)
{
    if (n_threads < 1) {
        n_threads = 1;
    }
    if (n_threads > ENG_POOL_MAX_THREADS) {
        n_threads = ENG_POOL_MAX_THREADS;
    }
    struct eng_pool *pool = wye_calloc(1, sizeof(*pool));
    if (!pool) {
        goto fail;
    }
    pool->n_threads = n_threads;
    pool->tickets = wye_calloc((size_t)n_threads, sizeof(*pool->tickets));
    if (!pool->tickets) {
        goto fail_arrays;
    }
    for (int i = 0; i < n_threads; i++) {
        atomic_init(&pool->tickets[i].t, 0); /* end 0: nothing to take */
    }
    atomic_init(&pool->done, 0);
    atomic_init(&pool->gen, 0);
    atomic_init(&pool->n_sleeping, 0);
    atomic_init(&pool->stop, false);
    if (n_threads == 1) {
        return pool;
    }
    pool->threads = wye_calloc((size_t)n_threads - 1, sizeof(*pool->threads));
    pool->workers = wye_calloc((size_t)n_threads - 1, sizeof(*pool->workers));
    if (!pool->threads || !pool->workers) {
        goto fail_arrays;
    }
    for (int i = 0; i < n_threads - 1; i++) {
        pool->workers[i].pool = pool;
        pool->workers[i].id = i + 1;
        int rc = pthread_create(&pool->threads[i], NULL, worker_main, &pool->workers[i]);
        if (rc != 0) {
            char buf[128];
            WYE_ERROR("eng_pool_create: pthread_create failed for worker %d of %d: %s", i + 1,
                      n_threads - 1, wye_strerror(rc, buf, sizeof(buf)));
            goto fail_threads;
        }
        pool->n_started++;
    }
    return pool;

fail_threads:
    stop_workers(pool);
fail_arrays:
    wye_free(pool->workers);
    wye_free(pool->threads);
    wye_free(pool->tickets);
    wye_free(pool);
fail:
    return NULL;
}

void eng_pool_destroy(struct eng_pool *pool)
{
    if (!pool) {
        return;
    }
    stop_workers(pool);
    wye_free(pool->workers);
    wye_free(pool->threads);
    wye_free(pool->tickets);
    wye_free(pool);
}

int eng_pool_size(const struct eng_pool *pool)
{
    return pool ? pool->n_threads : 1;
}

static atomic_bool one_share; /* eng_pool_bench_one_share */

void eng_pool_bench_one_share(bool on)
{
    atomic_store_explicit(&one_share, on, memory_order_relaxed);
}

static void run_batch(struct eng_pool *pool, void (*fn)(void *, int64_t, int), void *arg,
                      int64_t base, int64_t n)
{
    unsigned run = ++pool->runs;
    struct job_slot *job = &pool->slots[run & 1];
    job->fn = fn;
    job->arg = arg;
    job->base = base;
    atomic_store_explicit(&pool->done, 0, memory_order_relaxed);
    uint64_t r = (uint64_t)(run & 0xffffu) << TICKET_RUN_SHIFT;
    int nth = pool->n_threads;
    bool one = atomic_load_explicit(&one_share, memory_order_relaxed);
    for (int i = 0; i < nth; i++) {
        /* thread i's share: [n i / nth, n (i + 1) / nth) (n < 2^23: no overflow) */
        int64_t start = one ? 0 : n * i / nth;
        int64_t end = one ? (i == 0 ? n : 0) : n * (i + 1) / nth;
        uint64_t t = r | ((uint64_t)end << TICKET_N_SHIFT) | (uint64_t)start;
        atomic_store_explicit(&pool->tickets[i].t, t, memory_order_release);
    }
    publish(pool);
    work(pool, 0);
    wait_done(pool, n);
}

void eng_pool_run(struct eng_pool *pool, void (*fn)(void *arg, int64_t task, int thread),
                  void *arg, int64_t n_tasks)
{
    if (n_tasks <= 0) {
        return;
    }
    if (!pool || pool->n_threads == 1 || n_tasks == 1) {
        for (int64_t t = 0; t < n_tasks; t++) {
            fn(arg, t, 0);
        }
        return;
    }
    for (int64_t base = 0; base < n_tasks; base += BATCH_MAX) {
        int64_t n = n_tasks - base < BATCH_MAX ? n_tasks - base : BATCH_MAX;
        run_batch(pool, fn, arg, base, n);
    }
}
