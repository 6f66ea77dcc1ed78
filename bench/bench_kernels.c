/* Kernel benchmark: GB/s of weights streamed by eng_matmul per type for decode (1 token)
 * against the read bandwidth eng_membw_measure reports in the same run (and on the same
 * pool), and the per-token speedup of prompt processing (128 tokens) over decode, at
 * TinyLlama's FFN shape (5632 rows of 2048) and a Qwen2.5-0.5B FFN shape (896 rows of 4864),
 * for each thread count asked for. Enough copies of the matrix are cycled through that they
 * do not fit the caches, as a real model's layers do not; each figure is the best of several
 * repetitions (the machine may be shared). "hot" columns: single-threaded compute cost in ns
 * per 32 weights per token with the weights in L2 (no DRAM), decode and 16-token prompt.
 * Single-threaded driver; the matmuls run on a pool.
 *
 * Q4_0r8 is Q4_0 repacked by 8 rows (eng_q4_0r8_pack), the layout the model runs Q4_0 in on
 * AVX2 CPUs; Q4_0 is the file's layout.
 *
 * Usage: bench_kernels [threads list (1,2)] [seconds per repetition (0.25)] [repetitions (3)]
 *                      [types, e.g. Q4_0,Q4_0r8,Q8_0 (all)]
 *        bench_kernels --batch [threads (2)] [types (Q8_0,Q4_0,Q4_0r8)]   per-token cost of one
 *            matmul for 1, 2, 4, 8, 16, 64 and 128 tokens (the batched-decode and prompt
 *            range): weights streamed from memory on the pool, and "hot" single-threaded
 *        bench_kernels --hot TYPE N_TOK [ITERS (2000)] [K (4864)]   ITERS single-threaded
 *            matmuls of N_TOK tokens over 2 MiB of Qwen2.5-0.5B ffn_down rows (or rows of K,
 *            e.g. 576 for SmolLM2-135M) (L3-resident), timed in
 *            the thread's CPU time, which other load on the machine moves least:
 *            perf stat -e task-clock,cycles:u bench_kernels --hot Q4_0 8
 *        bench_kernels --model MODEL N_SEQ [STEPS (8)] [THREADS (1)] [PROMPT (8)]   whole
 *            forward passes: N_SEQ sequences of PROMPT tokens decoding together through
 *            eng_batch_step, ms per step (min and median) in wall time, in the stepping
 *            thread's CPU time (with THREADS 1 the CPU time is what other load on the machine
 *            moves least) and in the whole process's CPU time (the pool's spinning included);
 *            PROMPT 128 puts the steps where `wye bench -p 128` generates
 *        bench_kernels --pool-ab MODEL [STEPS (256)] [THREADS (2)] [PROMPT (16)]   the pool's
 *            per-thread shares against one shared counter (eng_pool_bench_one_share), one
 *            decoded token at a time, switching every token (ABBA order) so that both see
 *            the same moments of a shared machine: mean and median ms per token of each
 *        bench_kernels --kv-ab MODEL [STEPS (256)] [THREADS (2)] [PROMPT (16)]   the same
 *            alternation between two contexts decoding the same tokens, one with its KV
 *            cache in ordinary pages (WYE_KV_SMALL_PAGES=1) and one in huge pages
 *        bench_kernels --fixed TYPE [decode|prompt]   a small fixed single-threaded workload
 *            (8 decode matmuls, or one of 16 tokens) for instruction counts under callgrind:
 *            valgrind --tool=callgrind --toggle-collect=eng_matmul bench_kernels --fixed Q4_0 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "local-engine/engine.h"
#include "local-engine/pool.h"
#include "local-engine/quant.h"

#define N_PROMPT 128
#define WORKING_SET (320u << 20) /* bytes of weight copies cycled through */
#define MAX_THREADS 16

struct shape {
    const char *name;
    int m, k;
};

static const struct shape shapes[] = {
    {"TinyLlama-1.1B ffn_up", 5632, 2048},
    {"Qwen2.5-0.5B ffn_down", 896, 4864},
};

/* Q4_0 repacked by 8 rows (eng_q4_0r8_pack), as the model runs Q4_0 on AVX2 CPUs: not a file
 * type, so it gets an id past them; "Q4_0" alone is the file's layout. */
#define TYPE_Q4_0R8 ((uint32_t)ENG_TYPE__MAX + 1)

static const uint32_t types[] = {ENG_TYPE_F32,  ENG_TYPE_F16,  ENG_TYPE_Q8_0, ENG_TYPE_Q4_0,
                                 TYPE_Q4_0R8,   ENG_TYPE_Q5_0, ENG_TYPE_Q4_K, ENG_TYPE_Q6_K};

static const char *tname(uint32_t wt)
{
    return wt == TYPE_Q4_0R8 ? "Q4_0r8" : eng_type_name(wt);
}

/* The type of the matrix's bytes (their size, quantizer, activations). */
static uint32_t file_type(uint32_t wt)
{
    return wt == TYPE_Q4_0R8 ? ENG_TYPE_Q4_0 : wt;
}

struct r8_job {
    const void *w;
    int64_t m, rpt;
    float *y;
    struct eng_act a;
};

static void r8_task(void *arg, int64_t task, int thread)
{
    (void)thread;
    const struct r8_job *j = arg;
    int64_t r0 = task * j->rpt, r1 = r0 + j->rpt < j->m ? r0 + j->rpt : j->m;
    eng_matmul_act_rows_q4_0r8(j->w, &j->a, j->y, j->m, r0, r1);
}

/* eng_matmul, or for the repacked layout what the forward pass does: the activations
 * prepared once, rows split across the pool in multiples of 8. */
static void mm(struct eng_pool *pool, uint32_t wt, const void *w, int64_t m, int64_t k,
               const float *x, int n_tok, float *y, void *scratch)
{
    if (wt != TYPE_Q4_0R8) {
        eng_matmul(pool, wt, w, m, k, x, n_tok, y, scratch);
        return;
    }
    struct r8_job j = {.w = w, .m = m, .y = y};
    eng_act_prepare_q4_0r8(pool, x, k, n_tok, scratch, &j.a);
    int nth = eng_pool_size(pool);
    int64_t rpt = (m + (int64_t)nth * 8 - 1) / ((int64_t)nth * 8);
    j.rpt = rpt < 16 ? 16 : (rpt + 7) / 8 * 8;
    eng_pool_run(pool, r8_task, &j, (m + j.rpt - 1) / j.rpt);
}

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

/* Runs matmuls over the copies for about secs, reps times; returns the best seconds per
 * matmul. */
static double time_case(struct eng_pool *pool, uint32_t wt, const struct shape *sh,
                        unsigned char *w, size_t mat_bytes, int n_copies, const float *x, int n_tok,
                        float *y, void *scratch, double secs, int reps)
{
    double best = 1e30;
    int c = 0;
    for (int rep = 0; rep < reps; rep++) {
        int iters = 0;
        double t0 = now_s(), t;
        do {
            mm(pool, wt, w + (size_t)c * mat_bytes, sh->m, sh->k, x, n_tok, y, scratch);
            c = (c + 1) % n_copies;
            iters++;
            t = now_s() - t0;
        } while (t < secs || iters < 2);
        best = t / iters < best ? t / iters : best;
    }
    return best;
}

/* Compute cost without DRAM: the best of many single-threaded decode (n_tok = 1) or prompt
 * (n_tok = 16) matmuls over the first rows of w that fit in L2, in ns per 32 weights per
 * token. */
static double hot_ns(uint32_t wt, const struct shape *sh, const unsigned char *w, size_t rb,
                     const float *x, int n_tok, float *y, void *scratch)
{
    int64_t m = (int64_t)((192u << 10) / rb) / 8 * 8; /* whole groups for Q4_0r8 */
    m = m < 8 ? 8 : m > sh->m ? sh->m : m;
    double best = 1e30;
    for (int rep = 0; rep < 40; rep++) {
        double t0 = now_s();
        mm(NULL, wt, w, m, sh->k, x, n_tok, y, scratch);
        double t = now_s() - t0;
        best = t < best ? t : best;
    }
    return best * 1e9 / ((double)m * (double)(sh->k / 32) * n_tok);
}

/* Quantizes a random m x k matrix of type wt into w (row bytes rb); Q4_0r8: Q4_0, repacked
 * (m a multiple of 8). */
static void fill_matrix(uint32_t wt, unsigned char *w, int m, int k, size_t rb, float *row,
                        unsigned *seed)
{
    unsigned char *q = wt == TYPE_Q4_0R8 ? malloc(rb * (size_t)m) : w;
    if (!q) {
        fprintf(stderr, "bench_kernels: out of memory\n");
        exit(1);
    }
    for (int r = 0; r < m; r++) {
        for (int i = 0; i < k; i++) {
            row[i] = frand(seed);
        }
        eng_quantize_row(file_type(wt), row, q + (size_t)r * rb, k);
    }
    if (q != w) {
        eng_q4_0r8_pack(q, m, k, w);
        free(q);
    }
}

/* True if the type's name is in the comma-separated list (NULL: every type). */
static int type_wanted(const char *list, uint32_t wt)
{
    if (list == NULL) {
        return 1;
    }
    const char *name = tname(wt);
    size_t n = strlen(name);
    for (const char *p = list; p != NULL; p = strchr(p, ',') ? strchr(p, ',') + 1 : NULL) {
        if (strncmp(p, name, n) == 0 && (p[n] == ',' || p[n] == '\0')) {
            return 1;
        }
    }
    return 0;
}

static int bench_threads(int nth, double secs, int reps, const char *type_list, const float *x,
                         float *y, void *scratch, float *row)
{
    struct eng_pool *pool = eng_pool_create(nth);
    if (!pool) {
        fprintf(stderr, "bench_kernels: cannot create a pool of %d threads\n", nth);
        return 1;
    }
    double bw = eng_membw_measure(pool, 256u << 20);
    printf("\nthreads: %d, memory read bandwidth (eng_membw_measure, 256 MiB): %.2f GB/s\n", nth,
           bw / 1e9);
    unsigned seed = 777;
    for (size_t si = 0; si < sizeof(shapes) / sizeof(shapes[0]); si++) {
        const struct shape *sh = &shapes[si];
        printf("%s: %d x %d\n", sh->name, sh->m, sh->k);
        printf("  %-6s %8s %10s %8s %7s %13s %8s %11s %11s\n", "type", "MB/mat", "decode ms",
               "GB/s", "%membw", "prompt ms/tok", "speedup", "hot dec ns", "hot pp ns");
        for (size_t ti = 0; ti < sizeof(types) / sizeof(types[0]); ti++) {
            uint32_t wt = types[ti];
            if (!type_wanted(type_list, wt)) {
                continue;
            }
            size_t rb = eng_type_row_bytes(file_type(wt), sh->k), mat = rb * (size_t)sh->m;
            int n_copies = (int)((WORKING_SET + mat - 1) / mat);
            unsigned char *w = malloc(mat * (size_t)n_copies);
            if (!w) {
                fprintf(stderr, "bench_kernels: out of memory for %s\n", tname(wt));
                eng_pool_destroy(pool);
                return 1;
            }
            fill_matrix(wt, w, sh->m, sh->k, rb, row, &seed);
            for (int c = 1; c < n_copies; c++) {
                memcpy(w + (size_t)c * mat, w, mat);
            }
            double dec = time_case(pool, wt, sh, w, mat, n_copies, x, 1, y, scratch, secs, reps);
            double pp =
                time_case(pool, wt, sh, w, mat, n_copies, x, N_PROMPT, y, scratch, secs, reps);
            double gbs = (double)mat / dec / 1e9;
            double hd = hot_ns(wt, sh, w, rb, x, 1, y, scratch);
            double hp = hot_ns(wt, sh, w, rb, x, 16, y, scratch);
            printf("  %-6s %8.2f %10.3f %8.2f %6.0f%% %13.4f %7.1fx %11.3f %11.3f\n",
                   tname(wt), (double)mat / 1e6, dec * 1e3, gbs,
                   bw > 0 ? 100.0 * gbs * 1e9 / bw : 0.0, pp * 1e3 / N_PROMPT,
                   dec / (pp / N_PROMPT), hd, hp);
            fflush(stdout);
            free(w);
        }
    }
    eng_pool_destroy(pool);
    return 0;
}

/* --batch: ms per token of one matmul (weights from memory, on a pool of nth threads) and
 * hot single-threaded ns per 32 weights per token, for several token counts. */
static int bench_batch(int nth, const char *type_list, const float *x, float *y, void *scratch,
                       float *row)
{
    static const int n_toks[] = {1, 2, 4, 8, 16, 64, 128};
    struct eng_pool *pool = eng_pool_create(nth);
    if (!pool) {
        fprintf(stderr, "bench_kernels: cannot create a pool of %d threads\n", nth);
        return 1;
    }
    printf("kernels: %s, threads: %d, best of 5 x 0.15 s\n", eng_kernels_name(), nth);
    unsigned seed = 4242;
    for (size_t si = 0; si < sizeof(shapes) / sizeof(shapes[0]); si++) {
        const struct shape *sh = &shapes[si];
        for (size_t ti = 0; ti < sizeof(types) / sizeof(types[0]); ti++) {
            uint32_t wt = types[ti];
            if (!type_wanted(type_list, wt)) {
                continue;
            }
            size_t rb = eng_type_row_bytes(file_type(wt), sh->k), mat = rb * (size_t)sh->m;
            int n_copies = (int)((WORKING_SET + mat - 1) / mat);
            unsigned char *w = malloc(mat * (size_t)n_copies);
            if (!w) {
                fprintf(stderr, "bench_kernels: out of memory for %s\n", tname(wt));
                eng_pool_destroy(pool);
                return 1;
            }
            fill_matrix(wt, w, sh->m, sh->k, rb, row, &seed);
            for (int c = 1; c < n_copies; c++) {
                memcpy(w + (size_t)c * mat, w, mat);
            }
            printf("%s %s: n_tok, ms/matmul, ms/tok, GMAC/s, hot ns/32w/tok\n", sh->name,
                   tname(wt));
            for (size_t ni = 0; ni < sizeof(n_toks) / sizeof(n_toks[0]); ni++) {
                int nt = n_toks[ni];
                double t = time_case(pool, wt, sh, w, mat, n_copies, x, nt, y, scratch, 0.15, 5);
                double hot = hot_ns(wt, sh, w, rb, x, nt, y, scratch);
                printf("  %4d %9.3f %9.4f %8.1f %9.3f\n", nt, t * 1e3, t * 1e3 / nt,
                       (double)sh->m * sh->k * nt / t / 1e9, hot);
                fflush(stdout);
            }
            free(w);
        }
    }
    eng_pool_destroy(pool);
    return 0;
}

static double clock_s(clockid_t id)
{
    struct timespec ts;
    clock_gettime(id, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static double cpu_s(void)
{
    return clock_s(CLOCK_THREAD_CPUTIME_ID);
}

/* --hot: iters single-threaded matmuls of n_tok tokens on L2-resident rows. */
static int bench_hot(const char *type_name, int n_tok, int iters, int k, const float *x, float *y,
                     void *scratch, float *row)
{
    const struct shape hs = {"hot", shapes[1].m, k > 0 ? k : shapes[1].k};
    const struct shape *sh = &hs;
    uint32_t wt = ENG_TYPE__MAX;
    for (size_t ti = 0; ti < sizeof(types) / sizeof(types[0]); ti++) {
        if (strcmp(tname(types[ti]), type_name) == 0) {
            wt = types[ti];
        }
    }
    if (wt == ENG_TYPE__MAX || n_tok < 1 || n_tok > N_PROMPT || iters < 1 || sh->k > shapes[1].k ||
        !eng_kernels_type_ok(file_type(wt), sh->k)) {
        fprintf(stderr, "bench_kernels: --hot TYPE N_TOK (1..%d) [ITERS] [K (<= %d)]\n", N_PROMPT,
                shapes[1].k);
        return 1;
    }
    size_t rb = eng_type_row_bytes(file_type(wt), sh->k);
    int m = (int)((2048u << 10) / rb) / 8 * 8; /* L3-resident: many rows per activation prep */
    unsigned char *w = malloc(rb * (size_t)m);
    if (!w) {
        return 1;
    }
    unsigned seed = 5;
    fill_matrix(wt, w, m, sh->k, rb, row, &seed);
    /* the thread's CPU time: other processes taking the core do not count */
    double best = 1e30, t_all = cpu_s();
    for (int it = 0; it < iters; it++) {
        double t0 = cpu_s();
        mm(NULL, wt, w, m, sh->k, x, n_tok, y, scratch);
        double t = cpu_s() - t0;
        best = t < best ? t : best;
    }
    t_all = cpu_s() - t_all;
    printf("%s %d tok x %d rows x %d: best %.3f ns, mean %.3f ns per 32 weights per token\n",
           tname(wt), n_tok, m, sh->k, best * 1e9 / ((double)m * (sh->k / 32) * n_tok),
           t_all / iters * 1e9 / ((double)m * (sh->k / 32) * n_tok));
    free(w);
    return 0;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* --model: n_seq sequences (prompts of n_prompt tokens) decoding together; after the
 * prompts, steps steps of n_seq tokens each are timed. */
static int bench_model(const char *path, int n_seq, int steps, int nth, int n_prompt)
{
    enum { PROMPT_MAX = 1024, STEPS_MAX = 256 };
    char err[512];
    struct eng_model *m = NULL;
    struct eng_ctx *c = NULL;
    if (n_seq < 1 || n_seq > 64 || steps < 1 || steps > STEPS_MAX || nth < 1 || n_prompt < 1 ||
        n_prompt > PROMPT_MAX) {
        fprintf(stderr,
                "bench_kernels: --model MODEL N_SEQ (1..64) [STEPS (1..%d)] [THREADS] "
                "[PROMPT (1..%d)]\n",
                STEPS_MAX, PROMPT_MAX);
        return 1;
    }
    if (eng_model_load(path, &m, err, sizeof(err)) != WYE_OK) {
        fprintf(stderr, "bench_kernels: %s\n", err);
        return 1;
    }
    struct eng_ctx_params cp = {
        .n_ctx = n_prompt + steps + 8, .n_seq_max = n_seq, .n_batch = 64 * 8, .n_threads = nth};
    if (eng_ctx_create(m, &cp, &c, err, sizeof(err)) != WYE_OK) {
        fprintf(stderr, "bench_kernels: %s\n", err);
        eng_model_destroy(m);
        return 1;
    }
    struct eng_gen_params gp;
    eng_gen_params_default(&gp);
    gp.sampling.temperature = 0.0f;
    gp.max_tokens = steps + 4;
    gp.ignore_eos = true;
    for (int i = 0; i < n_seq; i++) {
        int32_t ids[PROMPT_MAX], id;
        for (int t = 0; t < n_prompt; t++) {
            ids[t] = 100 + (37 * i + 11 * t) % 20000;
        }
        if (eng_batch_add(c, ids, (size_t)n_prompt, &gp, NULL, NULL, NULL, &id, err,
                          sizeof(err)) != WYE_OK) {
            fprintf(stderr, "bench_kernels: %s\n", err);
            eng_ctx_destroy(c);
            eng_model_destroy(m);
            return 1;
        }
    }
    for (int done = 0; done < n_seq * n_prompt; done += (int)cp.n_batch) {
        (void)eng_batch_step(c); /* the prompts */
    }
    double wall[STEPS_MAX], cpu[STEPS_MAX], proc[STEPS_MAX];
    for (int s = 0; s < steps; s++) {
        double w0 = now_s(), c0 = cpu_s(), p0 = clock_s(CLOCK_PROCESS_CPUTIME_ID);
        (void)eng_batch_step(c);
        wall[s] = (now_s() - w0) * 1e3;
        cpu[s] = (cpu_s() - c0) * 1e3;
        proc[s] = (clock_s(CLOCK_PROCESS_CPUTIME_ID) - p0) * 1e3;
    }
    qsort(wall, (size_t)steps, sizeof(double), cmp_double);
    qsort(cpu, (size_t)steps, sizeof(double), cmp_double);
    qsort(proc, (size_t)steps, sizeof(double), cmp_double);
    printf("%s: %d sequences, %d threads, kernels %s: ms per step wall min %.2f median %.2f, "
           "stepping thread cpu min %.2f median %.2f, process cpu min %.2f median %.2f\n",
           path, n_seq, nth, eng_kernels_name(), wall[0], wall[steps / 2], cpu[0], cpu[steps / 2],
           proc[0], proc[steps / 2]);
    eng_ctx_destroy(c);
    eng_model_destroy(m);
    return 0;
}

/* --pool-ab and --kv-ab: decode steps tokens after a prompt of n_prompt, alternating token by
 * token in ABBA order between A and B: the pool's task hand-out (per-thread shares / one
 * shared counter), or two contexts whose KV caches are in ordinary / huge pages. */
static int bench_decode_ab(const char *path, int steps, int nth, int n_prompt, bool kv)
{
    enum { AB_STEPS_MAX = 4096, AB_PROMPT_MAX = 1024 };
    if (steps < 4 || steps > AB_STEPS_MAX || nth < 2 || nth > MAX_THREADS || n_prompt < 1 ||
        n_prompt > AB_PROMPT_MAX) {
        fprintf(stderr,
                "bench_kernels: %s MODEL [STEPS (4..%d)] [THREADS (2..%d)] "
                "[PROMPT (1..%d)]\n",
                kv ? "--kv-ab" : "--pool-ab", AB_STEPS_MAX, MAX_THREADS, AB_PROMPT_MAX);
        return 1;
    }
    char err[512];
    struct eng_model *m = NULL;
    struct eng_ctx *ctx[2] = {NULL, NULL}; /* A, B (--kv-ab: small pages, huge pages) */
    struct eng_pool *pool = NULL;
    int32_t *toks = NULL;
    float *logits = NULL; /* asked for, so that each step includes the output matrix */
    double *t_ms[2] = {NULL, NULL};
    int rc = 1;
    if (eng_model_load(path, &m, err, sizeof(err)) != WYE_OK) {
        fprintf(stderr, "bench_kernels: %s\n", err);
        return 1;
    }
    struct eng_model_info info;
    eng_model_get_info(m, &info);
    pool = eng_pool_create(nth);
    toks = malloc(sizeof(int32_t) * (size_t)(n_prompt + steps));
    logits = malloc(sizeof(float) * (size_t)info.n_vocab);
    t_ms[0] = malloc(sizeof(double) * (size_t)steps);
    t_ms[1] = malloc(sizeof(double) * (size_t)steps);
    if (!pool || !toks || !logits || !t_ms[0] || !t_ms[1]) {
        fprintf(stderr, "bench_kernels: out of memory or threads\n");
        goto done;
    }
    struct eng_ctx_params cp = {
        .n_ctx = n_prompt + steps, .n_seq_max = 1, .n_batch = n_prompt, .pool = pool};
    for (int i = 0; i < n_prompt + steps; i++) {
        toks[i] = 1 + (int32_t)((37u * (unsigned)i + 11u) % (unsigned)(info.n_vocab - 1));
    }
    for (int k = 0; k < (kv ? 2 : 1); k++) {
        if (kv && k == 0) {
            setenv("WYE_KV_SMALL_PAGES", "1", 1);
        }
        enum wye_err e = eng_ctx_create(m, &cp, &ctx[k], err, sizeof(err));
        unsetenv("WYE_KV_SMALL_PAGES");
        if (e != WYE_OK) {
            fprintf(stderr, "bench_kernels: %s\n", err);
            goto done;
        }
        if (eng_ctx_eval(ctx[k], 0, 0, toks, (size_t)n_prompt, NULL) != WYE_OK) {
            fprintf(stderr, "bench_kernels: the prompt failed\n");
            goto done;
        }
    }
    int n[2] = {0, 0};
    for (int s = 0; s < steps; s++) {
        int one = ((s + 1) / 2) % 2; /* 0 1 1 0 0 1 1 0 ...: ABBA */
        eng_pool_bench_one_share(!kv && one != 0);
        double w0 = now_s();
        enum wye_err e =
            eng_ctx_eval(ctx[kv ? one : 0], 0, n_prompt + s, toks + n_prompt + s, 1, logits);
        t_ms[one][n[one]++] = (now_s() - w0) * 1e3;
        if (e != WYE_OK) {
            fprintf(stderr, "bench_kernels: step %d failed: %s\n", s, wye_err_str(e));
            goto done;
        }
    }
    double mean[2], med[2];
    for (int k = 0; k < 2; k++) {
        mean[k] = 0.0;
        for (int i = 0; i < n[k]; i++) {
            mean[k] += t_ms[k][i] / n[k];
        }
        qsort(t_ms[k], (size_t)n[k], sizeof(double), cmp_double);
        med[k] = t_ms[k][n[k] / 2];
    }
    const char *a = kv ? "KV in small pages" : "per-thread shares";
    const char *b = kv ? "KV in huge pages" : "one shared counter";
    printf("%s: %d threads, %d tokens after %d: ms per token, %s mean %.3f median %.3f; %s "
           "mean %.3f median %.3f; A / B: mean %.3f median %.3f\n",
           path, nth, steps, n_prompt, a, mean[0], med[0], b, mean[1], med[1], mean[0] / mean[1],
           med[0] / med[1]);
    rc = 0;
done:
    eng_pool_bench_one_share(false);
    eng_ctx_destroy(ctx[0]);
    eng_ctx_destroy(ctx[1]);
    eng_pool_destroy(pool);
    eng_model_destroy(m);
    free(toks);
    free(logits);
    free(t_ms[0]);
    free(t_ms[1]);
    return rc;
}

/* A small deterministic workload on the calling thread: 8 decode matmuls and one of 16
 * tokens over a 256 x 2048 matrix (cache-resident), for instruction counts. */
static int bench_fixed(const char *type_name, int prompt, const float *x, float *y, void *scratch,
                       float *row)
{
    enum { FM = 256, FK = 2048, FT = 16 };
    uint32_t wt = ENG_TYPE__MAX;
    for (size_t ti = 0; ti < sizeof(types) / sizeof(types[0]); ti++) {
        if (strcmp(tname(types[ti]), type_name) == 0) {
            wt = types[ti];
        }
    }
    if (wt == ENG_TYPE__MAX) {
        fprintf(stderr, "bench_kernels: unknown type '%s'\n", type_name);
        return 1;
    }
    size_t rb = eng_type_row_bytes(file_type(wt), FK);
    unsigned char *w = malloc(rb * FM);
    if (!w) {
        return 1;
    }
    unsigned seed = 99;
    fill_matrix(wt, w, FM, FK, rb, row, &seed);
    double check = 0.0;
    if (prompt) {
        mm(NULL, wt, w, FM, FK, x, FT, y, scratch);
        check += y[FM * FT - 1];
    } else {
        for (int it = 0; it < 8; it++) {
            mm(NULL, wt, w, FM, FK, x, 1, y, scratch);
            check += y[it];
        }
    }
    printf("%s fixed workload done (check %.6g)\n", tname(wt), check);
    free(w);
    return 0;
}

int main(int argc, char **argv)
{
    int kmax = 0;
    for (size_t si = 0; si < sizeof(shapes) / sizeof(shapes[0]); si++) {
        kmax = shapes[si].k > kmax ? shapes[si].k : kmax;
    }
    eng_kernels_init();
    float *x = malloc(sizeof(float) * (size_t)kmax * N_PROMPT);
    float *y = malloc(sizeof(float) * 5632 * N_PROMPT);
    float *row = malloc(sizeof(float) * (size_t)kmax);
    size_t sb = 0;
    for (size_t ti = 0; ti < sizeof(types) / sizeof(types[0]); ti++) {
        size_t b = eng_matmul_scratch_bytes(file_type(types[ti]), kmax, N_PROMPT);
        sb = b > sb ? b : sb;
    }
    void *scratch = malloc(sb);
    if (!x || !y || !row || !scratch) {
        fprintf(stderr, "bench_kernels: out of memory\n");
        return 1;
    }
    unsigned seed = 12345;
    for (int i = 0; i < kmax * N_PROMPT; i++) {
        x[i] = frand(&seed) * 20.0f;
    }
    int rc = 0;
    if (argc > 1 && strcmp(argv[1], "--batch") == 0) {
        int nth = argc > 2 ? atoi(argv[2]) : 2;
        if (nth < 1 || nth > MAX_THREADS) {
            fprintf(stderr, "bench_kernels: bad thread count\n");
            rc = 1;
        } else {
            rc = bench_batch(nth, argc > 3 ? argv[3] : "Q8_0,Q4_0,Q4_0r8", x, y, scratch, row);
        }
    } else if (argc > 3 && strcmp(argv[1], "--model") == 0) {
        rc = bench_model(argv[2], atoi(argv[3]), argc > 4 ? atoi(argv[4]) : 8,
                         argc > 5 ? atoi(argv[5]) : 1, argc > 6 ? atoi(argv[6]) : 8);
    } else if (argc > 2 && (strcmp(argv[1], "--pool-ab") == 0 || strcmp(argv[1], "--kv-ab") == 0)) {
        rc = bench_decode_ab(argv[2], argc > 3 ? atoi(argv[3]) : 256, argc > 4 ? atoi(argv[4]) : 2,
                             argc > 5 ? atoi(argv[5]) : 16, strcmp(argv[1], "--kv-ab") == 0);
    } else if (argc > 3 && strcmp(argv[1], "--hot") == 0) {
        rc = bench_hot(argv[2], atoi(argv[3]), argc > 4 ? atoi(argv[4]) : 2000,
                       argc > 5 ? atoi(argv[5]) : 0, x, y, scratch, row);
    } else if (argc > 2 && strcmp(argv[1], "--fixed") == 0) {
        rc = bench_fixed(argv[2], argc > 3 && strcmp(argv[3], "prompt") == 0, x, y, scratch, row);
    } else {
        const char *list = argc > 1 ? argv[1] : "1,2";
        double secs = argc > 2 ? atof(argv[2]) : 0.25;
        int reps = argc > 3 ? atoi(argv[3]) : 3;
        reps = reps < 1 ? 1 : reps;
        printf("kernels: %s, prompt: %d tokens, best of %d x %.2f s\n", eng_kernels_name(),
               N_PROMPT, reps, secs);
        for (const char *p = list; *p != '\0' && rc == 0;) {
            int nth = atoi(p);
            if (nth < 1 || nth > MAX_THREADS) {
                fprintf(stderr, "bench_kernels: bad thread count in '%s'\n", list);
                rc = 1;
                break;
            }
            rc = bench_threads(nth, secs, reps, argc > 4 ? argv[4] : NULL, x, y, scratch, row);
            p = strchr(p, ',');
            p = p ? p + 1 : "";
        }
    }
    free(x), free(y), free(row), free(scratch);
    return rc;
}
