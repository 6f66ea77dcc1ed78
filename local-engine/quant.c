/* Kernel dispatch and the matmul drivers. eng_kernels_init picks the AVX2 or the scalar
 * table once (pthread_once; AVX2 needs cpuid's AVX2, FMA, F16C and OS-saved YMM state);
 * eng_matmul_rows tiles weight rows x tokens so that a weight row is unpacked once per 4
 * tokens while the tile stays in L2 (through the table's gemm kernels where it has them),
 * and for one token streams its rows through the gemv kernels with the activation's block
 * scales and sums converted once per call; eng_matmul quantizes the activations once and
 * hands row chunks to the pool's threads. Any thread; the matmul task functions run on the
 * pool's threads. */
#include <pthread.h>
#include <stdlib.h>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif

#include "common/err.h"
#include "local-engine/pool.h"
#include "local-engine/quant.h"
#include "local-engine/quant_internal.h"

static pthread_once_t kernels_once = PTHREAD_ONCE_INIT;
static const struct eng_kernel_table *kernels; /* written once under kernels_once */

#if defined(__x86_64__) || defined(__i386__)
/* XCR0 via xgetbv (encoded, so no -mxsave is needed): is the YMM state saved by the OS? */
static uint64_t read_xcr0(void)
{
    uint32_t lo, hi;
    __asm__ volatile(".byte 0x0f, 0x01, 0xd0" : "=a"(lo), "=d"(hi) : "c"(0));
    return ((uint64_t)hi << 32) | lo;
}
#endif

int eng_cpu_has_avx2(void)
{
#if defined(__x86_64__) || defined(__i386__)
    /* cpuid directly: clang's __builtin_cpu_supports does not know "f16c" */
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d)) {
        return 0;
    }
    int fma = (c >> 12) & 1, osxsave = (c >> 27) & 1, avx = (c >> 28) & 1, f16c = (c >> 29) & 1;
    if (!(fma && osxsave && avx && f16c) || (read_xcr0() & 0x6) != 0x6) {
        return 0;
    }
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) {
        return 0;
    }
    return (b >> 5) & 1; /* AVX2 */
#else
    return 0;
#endif
}

static void kernels_pick(void)
{
    const char *no = getenv("WYE_NO_AVX2"); /* read once, before any engine thread runs */
    int forced_scalar = no != NULL && no[0] != '\0' && no[0] != '0';
    kernels = (!forced_scalar && eng_cpu_has_avx2()) ? eng_kernels_avx2() : eng_kernels_ref();
}

void eng_kernels_init(void)
{
    pthread_once(&kernels_once, kernels_pick);
}

const struct eng_kernel_table *eng_kernels_active(void)
{
    pthread_once(&kernels_once, kernels_pick);
    return kernels;
}

const char *eng_kernels_name(void)
{
    return eng_kernels_active()->name;
}

uint32_t eng_act_type(uint32_t wt)
{
    switch (wt) {
    case ENG_TYPE_F32:
    case ENG_TYPE_F16:
    case ENG_TYPE_BF16:
        return ENG_TYPE_F32;
    case ENG_TYPE_Q8_0:
    case ENG_TYPE_Q4_0:
    case ENG_TYPE_Q5_0:
        return ENG_TYPE_Q8_0;
    case ENG_TYPE_Q4_1:
    case ENG_TYPE_Q5_1:
        return ENG_TYPE_Q8_1;
    case ENG_TYPE_Q4_K:
    case ENG_TYPE_Q5_K:
    case ENG_TYPE_Q6_K:
        return ENG_TYPE_Q8_K;
    default:
        return ENG_TYPE__MAX;
    }
}

uint32_t eng_act_type_of(uint32_t wt)
{
    return eng_act_type(wt);
}

bool eng_kernels_type_ok(uint32_t wt, int64_t k)
{
    if (eng_act_type(wt) == ENG_TYPE__MAX || k <= 0) {
        return false;
    }
    int64_t be = eng_type_block_elems(wt);
    /* the activation type's block must divide k too (Q8_K: 256 for the K-quants) */
    int64_t ba = eng_type_block_elems(eng_act_type(wt));
    return k % be == 0 && k % ba == 0 && eng_type_row_bytes(wt, k) != 0;
}

static void check_row(const struct eng_kernel_table *t, uint32_t type, int64_t n, int quant)
{
    WYE_ASSERT(type < ENG_TYPE__MAX);
    WYE_ASSERT(quant ? t->quant[type] != NULL : t->dequant[type] != NULL);
    WYE_ASSERT(n >= 0 && n % eng_type_block_elems(type) == 0);
}

void eng_dequantize_row(uint32_t type, const void *src, float *dst, int64_t n)
{
    const struct eng_kernel_table *t = eng_kernels_active();
    check_row(t, type, n, 0);
    t->dequant[type](src, dst, n);
}

void eng_quantize_row(uint32_t type, const float *src, void *dst, int64_t n)
{
    const struct eng_kernel_table *t = eng_kernels_active();
    check_row(t, type, n, 1);
    t->quant[type](src, dst, n);
}

size_t eng_act_row_bytes(uint32_t wt, int64_t k)
{
    uint32_t at = eng_act_type(wt);
    return at == ENG_TYPE__MAX ? 0 : eng_type_row_bytes(at, k);
}

void eng_act_quantize(uint32_t wt, const float *x, void *xq, int64_t k)
{
    WYE_ASSERT(eng_kernels_type_ok(wt, k));
    eng_kernels_active()->quant[eng_act_type(wt)](x, xq, k);
}

void eng_act_prep_q8_0(const void *x, int64_t nb, float *xd, float *xsum)
{
    const struct eng_block_q8_0 *b = x;
    for (int64_t i = 0; i < nb; i++) {
        int s = 0;
        for (int j = 0; j < ENG_QK; j++) {
            s += b[i].qs[j];
        }
        xd[i] = eng_fp16_to_fp32(b[i].d);
        xsum[i] = (float)s;
    }
}

/* Bytes of weight rows per tile in the multi-token loop: small enough to stay in L2 while
 * every token group passes over it. */
#define ROW_TILE_BYTES (96 * 1024)

/* True if decode with weight type wt goes through the table's gemv kernel (which wants the
 * activation prepared by eng_act_prep_q8_0). */
static bool use_gemv(const struct eng_kernel_table *kt, uint32_t wt, int64_t k, int64_t n_tok)
{
    return n_tok == 1 && kt->gemv[wt] != NULL && k / ENG_QK <= ENG_GEMV_MAX_BLOCKS &&
           eng_act_type(wt) == ENG_TYPE_Q8_0;
}

/* eng_matmul_rows; xd/xsum: the activation prepared by eng_act_prep_q8_0 when use_gemv. */
static void matmul_rows(const struct eng_kernel_table *kt, uint32_t wt, const void *w,
                        size_t w_row_bytes, const void *xq, size_t xq_row_bytes, int64_t k,
                        int64_t n_tok, float *y, int64_t ldy, int64_t r0, int64_t r1,
                        const float *xd, const float *xsum)
{
    eng_dot_fn dot = kt->dot[wt];
    eng_dot2_fn dot2 = kt->dot2[wt];
    const char *wb = w;
    const char *xb = xq;
    float out[2 * ENG_DOT_NX];

    if (use_gemv(kt, wt, k, n_tok)) {
        kt->gemv[wt](k, wb + (size_t)r0 * w_row_bytes, w_row_bytes, r1 - r0, xb, xd, xsum,
                     y + r0);
        return;
    }
    if (n_tok == 1) { /* decode: stream each row once */
        for (int64_t r = r0; r < r1; r++) {
            dot(k, wb + (size_t)r * w_row_bytes, xb, xq_row_bytes, 1, out);
            y[r] = out[0];
        }
        return;
    }
    int64_t tile = (int64_t)(ROW_TILE_BYTES / w_row_bytes);
    tile = tile < 4 ? 4 : tile;
    eng_gemm_fn gemm = kt->gemm[wt];
    if (gemm != NULL && k / ENG_QK <= ENG_GEMM_MAX_BLOCKS) {
        WYE_ASSERT(eng_act_type(wt) == ENG_TYPE_Q8_0);
        for (int64_t rt = r0; rt < r1; rt += tile) {
            int64_t re = rt + tile < r1 ? rt + tile : r1;
            for (int64_t t0 = 0; t0 < n_tok; t0 += ENG_DOT_NX) {
                int nx = n_tok - t0 < ENG_DOT_NX ? (int)(n_tok - t0) : ENG_DOT_NX;
                gemm(k, wb + (size_t)rt * w_row_bytes, w_row_bytes, re - rt,
                     xb + (size_t)t0 * xq_row_bytes, xq_row_bytes, nx, y + t0 * ldy + rt, ldy);
            }
        }
        return;
    }
    for (int64_t rt = r0; rt < r1; rt += tile) {
        int64_t re = rt + tile < r1 ? rt + tile : r1;
        for (int64_t t0 = 0; t0 < n_tok; t0 += ENG_DOT_NX) {
            int nx = n_tok - t0 < ENG_DOT_NX ? (int)(n_tok - t0) : ENG_DOT_NX;
            const char *xt = xb + (size_t)t0 * xq_row_bytes;
            float *yt = y + t0 * ldy;
            int64_t r = rt;
            for (; dot2 && r + 2 <= re; r += 2) {
                dot2(k, wb + (size_t)r * w_row_bytes, w_row_bytes, xt, xq_row_bytes, nx, out);
                for (int j = 0; j < nx; j++) {
                    yt[j * ldy + r] = out[j];
                    yt[j * ldy + r + 1] = out[ENG_DOT_NX + j];
                }
            }
            for (; r < re; r++) {
                dot(k, wb + (size_t)r * w_row_bytes, xt, xq_row_bytes, nx, out);
                for (int j = 0; j < nx; j++) {
                    yt[j * ldy + r] = out[j];
                }
            }
        }
    }
}

void eng_matmul_rows(uint32_t wt, const void *w, size_t w_row_bytes, const void *xq,
                     size_t xq_row_bytes, int64_t k, int64_t n_tok, float *y, int64_t ldy,
                     int64_t r0, int64_t r1)
{
    WYE_ASSERT(eng_kernels_type_ok(wt, k) && n_tok >= 0 && r0 >= 0 && r0 <= r1);
    WYE_ASSERT(w_row_bytes >= eng_type_row_bytes(wt, k));
    const struct eng_kernel_table *kt = eng_kernels_active();
    float xd[ENG_GEMV_MAX_BLOCKS], xsum[ENG_GEMV_MAX_BLOCKS];
    if (use_gemv(kt, wt, k, n_tok)) {
        eng_act_prep_q8_0(xq, k / ENG_QK, xd, xsum);
    }
    matmul_rows(kt, wt, w, w_row_bytes, xq, xq_row_bytes, k, n_tok, y, ldy, r0, r1, xd, xsum);
}

struct mm_job {
    uint32_t wt;
    const void *w;
    size_t w_row_bytes;
    const float *x;    /* (n_tok, k) */
    void *xq_out;      /* (n_tok, xq_row_bytes): the scratch the activations go to */
    const void *xq;    /* what the dots read: xq_out, or x itself for float weights */
    size_t xq_row_bytes;
    int64_t m, k, n_tok;
    int64_t rows_per_task;
    float *y; /* (n_tok, m) */
    const struct eng_kernel_table *kt;
    /* decode through gemv: the activation's block scales and sums, prepared once per call */
    float *xd, *xsum; /* (k / 32) */
};

static void act_task(void *arg, int64_t task, int thread)
{
    struct mm_job *job = arg;
    (void)thread;
    eng_act_quantize(job->wt, job->x + task * job->k,
                     (char *)job->xq_out + (size_t)task * job->xq_row_bytes, job->k);
}

static void rows_task(void *arg, int64_t task, int thread)
{
    struct mm_job *job = arg;
    (void)thread;
    int64_t r0 = task * job->rows_per_task;
    int64_t r1 = r0 + job->rows_per_task < job->m ? r0 + job->rows_per_task : job->m;
    matmul_rows(job->kt, job->wt, job->w, job->w_row_bytes, job->xq, job->xq_row_bytes, job->k,
                job->n_tok, job->y, job->m, r0, r1, job->xd, job->xsum);
}

void eng_matmul(struct eng_pool *pool, uint32_t wt, const void *w, int64_t m, int64_t k,
                const float *x, int64_t n_tok, float *y, void *xq_scratch)
{
    WYE_ASSERT(eng_kernels_type_ok(wt, k) && m >= 0 && n_tok >= 0);
    if (m == 0 || n_tok == 0) {
        return;
    }
    int nth = eng_pool_size(pool);
    float xd[ENG_GEMV_MAX_BLOCKS], xsum[ENG_GEMV_MAX_BLOCKS];
    struct mm_job job = {
        .kt = eng_kernels_active(),
        .xd = xd,
        .xsum = xsum,
        .wt = wt,
        .w = w,
        .w_row_bytes = eng_type_row_bytes(wt, k),
        .x = x,
        .xq_out = xq_scratch,
        .xq = xq_scratch,
        .xq_row_bytes = eng_act_row_bytes(wt, k),
        .m = m,
        .k = k,
        .n_tok = n_tok,
        .y = y,
    };
    if (eng_act_type(wt) == ENG_TYPE_F32) {
        job.xq = x; /* float weights read the activations as they are */
    } else if (nth > 1 && n_tok >= 4) {
        eng_pool_run(pool, act_task, &job, n_tok);
    } else {
        for (int64_t t = 0; t < n_tok; t++) {
            act_task(&job, t, 0);
        }
    }
    if (use_gemv(job.kt, wt, k, n_tok)) {
        eng_act_prep_q8_0(job.xq, k / ENG_QK, job.xd, job.xsum);
    }
    if (nth == 1) {
        matmul_rows(job.kt, wt, w, job.w_row_bytes, job.xq, job.xq_row_bytes, k, n_tok, y, m, 0,
                    m, job.xd, job.xsum);
        return;
    }
    /* About 8 chunks per thread so a preempted or slower thread does not hold the rest up,
     * but never below 16 rows (the counter and the call cost ~100 ns). */
    int64_t rpt = (m + (int64_t)nth * 8 - 1) / ((int64_t)nth * 8);
    rpt = rpt < 16 ? 16 : (rpt + 3) / 4 * 4;
    job.rows_per_task = rpt;
    eng_pool_run(pool, rows_task, &job, (m + rpt - 1) / rpt);
}
