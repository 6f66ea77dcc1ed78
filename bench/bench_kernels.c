/* Kernel benchmark: GB/s of weights streamed by eng_matmul per type at TinyLlama's FFN shape
 * (5632 rows of 2048) for decode (1 token) and prompt processing (128 tokens), against the
 * read bandwidth eng_membw_measure reports. Enough copies of the matrix are cycled through
 * that they do not fit the caches, as a real model's layers do not. Single-threaded driver;
 * the matmuls run on a pool. Usage: bench_kernels [threads (2)] [seconds per case (0.5)] */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "local-engine/pool.h"
#include "local-engine/quant.h"

#define M 5632
#define K 2048
#define N_PROMPT 128
#define WORKING_SET (320u << 20) /* bytes of weight copies cycled through */

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static float frand(unsigned *s)
{
    *s = *s * 1664525u + 1013904223u;
    return ((float)(*s >> 8) / 16777216.0f - 0.5f) * 0.1f;
}

/* Runs matmuls over the copies for about secs; returns seconds per matmul. */
static double time_case(struct eng_pool *pool, uint32_t wt, unsigned char *w, size_t mat_bytes,
                        int n_copies, const float *x, int n_tok, float *y, void *scratch,
                        double secs)
{
    int iters = 0;
    double t0 = now_s(), t;
    do {
        eng_matmul(pool, wt, w + (size_t)(iters % n_copies) * mat_bytes, M, K, x, n_tok, y,
                   scratch);
        iters++;
        t = now_s() - t0;
    } while (t < secs || iters < 2);
    return t / iters;
}

int main(int argc, char **argv)
{
    int nth = argc > 1 ? atoi(argv[1]) : 2;
    double secs = argc > 2 ? atof(argv[2]) : 0.5;
    static const uint32_t types[] = {ENG_TYPE_F32,  ENG_TYPE_F16,  ENG_TYPE_BF16, ENG_TYPE_Q8_0,
                                     ENG_TYPE_Q4_0, ENG_TYPE_Q4_1, ENG_TYPE_Q5_0, ENG_TYPE_Q4_K,
                                     ENG_TYPE_Q5_K, ENG_TYPE_Q6_K};
    eng_kernels_init();
    struct eng_pool *pool = eng_pool_create(nth);
    float *x = malloc(sizeof(float) * K * N_PROMPT);
    float *y = malloc(sizeof(float) * M * N_PROMPT);
    float *row = malloc(sizeof(float) * K);
    void *scratch = malloc(eng_act_row_bytes(ENG_TYPE_F32, K) * N_PROMPT);
    if (!pool || !x || !y || !row || !scratch) {
        fprintf(stderr, "bench_kernels: out of memory\n");
        return 1;
    }
    unsigned seed = 12345;
    for (int i = 0; i < K * N_PROMPT; i++) {
        x[i] = frand(&seed) * 20.0f;
    }
    double bw = eng_membw_measure(pool, 256u << 20);
    printf("kernels: %s, threads: %d, shape %dx%d\n", eng_kernels_name(), nth, M, K);
    printf("memory read bandwidth (eng_membw_measure, 256 MiB): %.2f GB/s\n", bw / 1e9);
    printf("%-5s %9s %11s %9s %8s %14s %9s\n", "type", "MB/mat", "decode ms", "GB/s",
           "%membw", "prompt ms/tok", "speedup");
    for (size_t ti = 0; ti < sizeof(types) / sizeof(types[0]); ti++) {
        uint32_t wt = types[ti];
        size_t rb = eng_type_row_bytes(wt, K), mat = rb * M;
        int n_copies = (int)((WORKING_SET + mat - 1) / mat);
        unsigned char *w = malloc(mat * (size_t)n_copies);
        if (!w) {
            fprintf(stderr, "bench_kernels: out of memory for %s\n", eng_type_name(wt));
            return 1;
        }
        for (int r = 0; r < M; r++) {
            for (int i = 0; i < K; i++) {
                row[i] = frand(&seed);
            }
            eng_quantize_row(wt, row, w + (size_t)r * rb, K);
        }
        for (int c = 1; c < n_copies; c++) {
            memcpy(w + (size_t)c * mat, w, mat);
        }
        double dec = time_case(pool, wt, w, mat, n_copies, x, 1, y, scratch, secs);
        double pp = time_case(pool, wt, w, mat, n_copies, x, N_PROMPT, y, scratch, secs);
        double gbs = (double)mat / dec / 1e9;
        printf("%-5s %9.2f %11.3f %9.2f %7.0f%% %14.4f %8.1fx\n", eng_type_name(wt),
               (double)mat / 1e6, dec * 1e3, gbs, bw > 0 ? 100.0 * gbs * 1e9 / bw : 0.0,
               pp * 1e3 / N_PROMPT, dec / (pp / N_PROMPT));
        free(w);
    }
    free(x), free(y), free(row), free(scratch);
    eng_pool_destroy(pool);
    return 0;
}
