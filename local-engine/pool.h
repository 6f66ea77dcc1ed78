/* The compute pool: persistent worker threads that split one job (matmul rows, heads, ...)
 * by handing out task indices through atomic counters, one contiguous share per thread.
 * Workers spin briefly on a generation counter after a job and then sleep on a futex, so
 * back-to-back jobs (hundreds per token) start within a microsecond or so. */
#ifndef WYE_ENGINE_POOL_H
#define WYE_ENGINE_POOL_H

#include <stdbool.h>
#include <stdint.h>

struct eng_pool;

/* Maximum threads in a pool (callers asking for more get this many). */
#define ENG_POOL_MAX_THREADS 256

/* Creates a pool of n_threads in total, counting the caller (1 = no worker threads; values
 * below 1 mean 1). Returns NULL if memory or a thread could not be had. */
struct eng_pool *eng_pool_create(int n_threads);
/* Stops and joins the workers and frees the pool. NULL is a no-op. Not during a run. */
void eng_pool_destroy(struct eng_pool *pool);
/* Threads in the pool including the caller (1 for NULL). */
int eng_pool_size(const struct eng_pool *pool);
/* Runs fn(arg, task, thread) for every task in [0, n_tasks) across the pool's threads (the
 * caller takes part as thread 0; thread < eng_pool_size) and returns when all are done, with
 * every task's writes visible to the caller. Each task runs exactly once, on any thread:
 * every thread takes the tasks of its own contiguous share in increasing order, then helps
 * with what is left of the others'. Not reentrant; one caller thread at a time. pool may be
 * NULL (runs everything on the caller). */
void eng_pool_run(struct eng_pool *pool, void (*fn)(void *arg, int64_t task, int thread),
                  void *arg, int64_t n_tasks);

/* For benchmarks only (bench_kernels --pool-ab): true makes every pool's runs hand all tasks
 * out of one counter shared by all threads, as the pool did before the per-thread shares;
 * false (the default) restores the shares. Takes effect at the next run. */
void eng_pool_bench_one_share(bool on);

#endif
