/* Memory read bandwidth, for the roofline that `wye bench` compares the decode matmuls with:
 * the pool's threads stream through a buffer much larger than the caches with 16-byte loads
 * (SSE2 is in baseline x86-64, and a single core issues far more than DRAM delivers), best
 * of a few repetitions. The buffer is in huge pages where the kernel allows, as the model's
 * weights are (model.c, place_weights), so that neither side pays TLB misses the other does
 * not. Runs on the calling thread and the pool's workers. */
#include <stdint.h>
#include <string.h>
#include <time.h>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "common/alloc.h"
#include "local-engine/hugemem.h"
#include "local-engine/pool.h"
#include "local-engine/quant.h"

#define MEMBW_REPS 4
#define MEMBW_CHUNKS_PER_THREAD 4
#define MEMBW_MAX_CHUNKS (ENG_POOL_MAX_THREADS * MEMBW_CHUNKS_PER_THREAD)

struct membw_job {
    unsigned char *buf;
    size_t chunk; /* bytes per task, a multiple of 64 */
    uint64_t sums[MEMBW_MAX_CHUNKS]; /* one per task, so the loads cannot be dropped */
};

static void touch_task(void *arg, int64_t task, int thread)
{
    struct membw_job *job = arg;
    (void)thread;
    memset(job->buf + (size_t)task * job->chunk, (int)(task & 0x7f) + 1, job->chunk);
}

static void read_task(void *arg, int64_t task, int thread)
{
    struct membw_job *job = arg;
    (void)thread;
    const unsigned char *p = job->buf + (size_t)task * job->chunk;
    const unsigned char *end = p + job->chunk;
#if defined(__SSE2__)
    __m128i a0 = _mm_setzero_si128(), a1 = a0, a2 = a0, a3 = a0;
    for (; p < end; p += 64) {
        a0 = _mm_add_epi64(a0, _mm_load_si128((const __m128i *)(const void *)p));
        a1 = _mm_add_epi64(a1, _mm_load_si128((const __m128i *)(const void *)(p + 16)));
        a2 = _mm_add_epi64(a2, _mm_load_si128((const __m128i *)(const void *)(p + 32)));
        a3 = _mm_add_epi64(a3, _mm_load_si128((const __m128i *)(const void *)(p + 48)));
    }
    __m128i s = _mm_add_epi64(_mm_add_epi64(a0, a1), _mm_add_epi64(a2, a3));
    uint64_t lanes[2];
    _mm_storeu_si128((__m128i *)(void *)lanes, s);
    job->sums[task] = lanes[0] + lanes[1];
#else
    uint64_t s[8] = {0};
    for (; p < end; p += 64) {
        for (int l = 0; l < 8; l++) {
            uint64_t v;
            memcpy(&v, p + 8 * l, sizeof(v));
            s[l] += v;
        }
    }
    job->sums[task] = s[0] + s[1] + s[2] + s[3] + s[4] + s[5] + s[6] + s[7];
#endif
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

double eng_membw_measure(struct eng_pool *pool, size_t bytes)
{
    int nth = eng_pool_size(pool);
    int64_t n_tasks = (int64_t)nth * MEMBW_CHUNKS_PER_THREAD;
    size_t chunk = bytes / (size_t)n_tasks / 64 * 64;
    if (chunk == 0) {
        return 0.0;
    }
    struct membw_job *job = wye_calloc(1, sizeof(*job));
    struct eng_hugemem mem;
    if (!job || !eng_hugemem_alloc(chunk * (size_t)n_tasks, &mem)) {
        wye_free(job);
        return 0.0;
    }
    job->buf = mem.p;
    job->chunk = chunk;
    eng_pool_run(pool, touch_task, job, n_tasks); /* fault the pages in first */
    double best = 0.0;
    for (int rep = 0; rep < MEMBW_REPS; rep++) {
        double t0 = now_s();
        eng_pool_run(pool, read_task, job, n_tasks);
        double dt = now_s() - t0;
        double bw = dt > 0.0 ? (double)(chunk * (size_t)n_tasks) / dt : 0.0;
        best = bw > best ? bw : best;
    }
    uint64_t total = 0;
    for (int64_t t = 0; t < n_tasks; t++) {
        total += job->sums[t];
    }
    /* every byte is 1..128, so a real pass sums to something non-zero */
    if (total == 0) {
        best = 0.0;
    }
    eng_hugemem_free(&mem);
    wye_free(job);
    return best;
}
