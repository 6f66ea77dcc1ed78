/* Kernel dispatch and the matmul drivers. eng_kernels_init picks the AVX2 or the scalar
 * table once (pthread_once; AVX2 needs cpuid's AVX2, FMA, F16C and OS-saved YMM state);
 * eng_act_prepare quantizes the activations once per matmul (or per group of matmuls over
 * the same input) into the caller's scratch: for one token also the block scales and sums
 * the gemv kernels want, for 5 or more tokens also the 8-token groups the gemm8 kernels
 * read. The row loops tile weight rows x tokens so that a weight row is unpacked once per
 * 4 (gemm) or 8 (gemm8) tokens while the tile stays in L2; one token streams its rows
 * through gemv. eng_matmul prepares, then hands row chunks to the pool's threads. Any
 * thread; the task functions run on the pool's threads. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

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

void eng_act_pack_q8_0x8(const void *x, size_t x_stride, int nx, int64_t nb,
                         struct eng_block_q8_0x8 *out)
{
    WYE_ASSERT(nx >= 1 && nx <= ENG_GEMM8_NX);
    for (int64_t i = 0; i < nb; i++) {
        struct eng_block_q8_0x8 *o = out + i;
        for (int t = 0; t < ENG_GEMM8_NX; t++) {
            /* the 4-byte group g (elements 4g..4g+3) of token t goes to lane (g / 4, t % 4)
             * of vector (g % 4, t / 4) */
            int8_t *lane = o->qs + 32 * (t / 4) + 4 * (t % 4);
            if (t >= nx) {
                for (int g = 0; g < ENG_QK / 4; g++) {
                    memset(lane + 64 * (g % 4) + 16 * (g / 4), 0, 4);
                }
                o->d[t] = 0.0f;
                o->s[t] = 0;
                continue;
            }
            const struct eng_block_q8_0 *b =
                (const struct eng_block_q8_0 *)(const void *)((const char *)x +
                                                              (size_t)t * x_stride) +
                i;
            int32_t sum = 0;
            for (int e = 0; e < ENG_QK; e++) {
                sum += b->qs[e];
            }
            for (int g = 0; g < ENG_QK / 4; g++) {
                memcpy(lane + 64 * (g % 4) + 16 * (g / 4), b->qs + 4 * g, 4);
            }
            o->d[t] = eng_fp16_to_fp32(b->d);
            o->s[t] = sum;
        }
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
    const struct eng_kernel_table *kt;
    uint32_t wt;
    const void *w;
    size_t w_row_bytes;
    int64_t m;
    int64_t rows_per_task;
    float *y; /* (n_tok, m) */
    struct eng_act a;
};

/* The smallest batch that goes through the gemm8 kernels (8 tokens per weight unpack, no
 * horizontal sums); smaller ones use gemm's 4-token tiles. Both give bit-identical
 * results, so the choice never changes a token's output. */
#define GEMM8_MIN_TOK 5
/* Blocks per activation-prepare task of the packed path. */
#define PACK_CHUNK_BLOCKS 32

static bool want_x8(const struct eng_kernel_table *kt, int64_t k, int64_t n_tok)
{
    return n_tok >= GEMM8_MIN_TOK && kt->gemm8[ENG_TYPE_Q8_0] != NULL &&
           k / ENG_QK <= ENG_GEMM_MAX_BLOCKS;
}

static size_t round32(size_t n)
{
    return (n + 31) & ~(size_t)31;
}

size_t eng_matmul_scratch_bytes(uint32_t wt, int64_t k, int64_t n_tok)
{
    uint32_t at = eng_act_type(wt);
    if (at == ENG_TYPE__MAX || at == ENG_TYPE_F32 || k <= 0 || n_tok <= 0) {
        return 0;
    }
    size_t rows = (size_t)n_tok * eng_type_row_bytes(at, k);
    if (at != ENG_TYPE_Q8_0) {
        return 31 + rows; /* the rows start 32-byte aligned */
    }
    size_t nb = (size_t)(k / ENG_QK), groups = ((size_t)n_tok + ENG_GEMM8_NX - 1) / ENG_GEMM8_NX;
    size_t x8 = groups * nb * sizeof(struct eng_block_q8_0x8); /* batched */
    size_t prep = 2 * nb * sizeof(float);                      /* decode */
    size_t r8 = (2 * (size_t)n_tok + 1) * nb * sizeof(float);  /* eng_act_prepare_q4_0r8 */
    size_t extra = x8 > prep ? x8 : prep;
    return 31 + round32(rows) + (extra > r8 ? extra : r8);
}

struct prep_job {
    const struct eng_kernel_table *kt;
    uint32_t at;
    const float *x; /* (n_tok, k) */
    int64_t k, n_tok, nb, chunks;
    unsigned char *rows; /* (n_tok, rb) */
    size_t rb;
    struct eng_block_q8_0x8 *x8; /* (groups, nb) */
};

static void prep_rows_task(void *arg, int64_t task, int thread)
{
    const struct prep_job *j = arg;
    (void)thread;
    j->kt->quant[j->at](j->x + task * j->k, j->rows + (size_t)task * j->rb, j->k);
}

/* Blocks [b0, b1) of one group of 8 tokens: quantized row by row, then packed. */
static void prep_x8_task(void *arg, int64_t task, int thread)
{
    const struct prep_job *j = arg;
    (void)thread;
    int64_t g = task / j->chunks, b0 = (task % j->chunks) * PACK_CHUNK_BLOCKS;
    int64_t b1 = b0 + PACK_CHUNK_BLOCKS < j->nb ? b0 + PACK_CHUNK_BLOCKS : j->nb;
    int64_t t0 = g * ENG_GEMM8_NX;
    int nx = j->n_tok - t0 < ENG_GEMM8_NX ? (int)(j->n_tok - t0) : ENG_GEMM8_NX;
    size_t off = (size_t)b0 * sizeof(struct eng_block_q8_0);
    for (int t = 0; t < nx; t++) {
        j->kt->quant[ENG_TYPE_Q8_0](j->x + (t0 + t) * j->k + b0 * ENG_QK,
                                    j->rows + (size_t)(t0 + t) * j->rb + off, (b1 - b0) * ENG_QK);
    }
    eng_act_pack_q8_0x8(j->rows + (size_t)t0 * j->rb + off, j->rb, nx, b1 - b0,
                        j->x8 + g * j->nb + b0);
}

void eng_act_prepare(struct eng_pool *pool, uint32_t wt, const float *x, int64_t k, int64_t n_tok,
                     void *scratch, struct eng_act *a)
{
    WYE_ASSERT(eng_kernels_type_ok(wt, k) && n_tok >= 1);
    const struct eng_kernel_table *kt = eng_kernels_active();
    uint32_t at = eng_act_type(wt);
    memset(a, 0, sizeof(*a));
    a->type = at;
    a->k = k;
    a->n_tok = n_tok;
    if (at == ENG_TYPE_F32) {
        a->xq = x; /* float weights read the activations as they are */
        a->xq_row_bytes = (size_t)k * sizeof(float);
        return;
    }
    WYE_ASSERT(scratch != NULL);
    unsigned char *base = (unsigned char *)(((uintptr_t)scratch + 31) & ~(uintptr_t)31);
    struct prep_job j = {
        .kt = kt,
        .at = at,
        .x = x,
        .k = k,
        .n_tok = n_tok,
        .nb = k / eng_type_block_elems(at),
        .rows = base,
        .rb = eng_type_row_bytes(at, k),
    };
    a->xq = base;
    a->xq_row_bytes = j.rb;
    unsigned char *extra = base + round32((size_t)n_tok * j.rb);
    int nth = eng_pool_size(pool);
    if (at == ENG_TYPE_Q8_0 && want_x8(kt, k, n_tok)) {
        j.x8 = (struct eng_block_q8_0x8 *)(void *)extra;
        j.chunks = (j.nb + PACK_CHUNK_BLOCKS - 1) / PACK_CHUNK_BLOCKS;
        int64_t groups = (n_tok + ENG_GEMM8_NX - 1) / ENG_GEMM8_NX;
        eng_pool_run(nth > 1 ? pool : NULL, prep_x8_task, &j, groups * j.chunks);
        a->x8 = j.x8;
        return;
    }
    if (nth > 1 && n_tok >= 4) {
        eng_pool_run(pool, prep_rows_task, &j, n_tok);
    } else {
        for (int64_t t = 0; t < n_tok; t++) {
            prep_rows_task(&j, t, 0);
        }
    }
    if (at == ENG_TYPE_Q8_0 && n_tok == 1 && j.nb <= ENG_GEMV_MAX_BLOCKS) {
        float *xd = (float *)(void *)extra;
        eng_act_prep_q8_0(base, j.nb, xd, xd + j.nb);
        a->xd = xd;
        a->xsum = xd + j.nb;
    }
}

/* Rows [r0, r1) against prepared activations: the packed groups through gemm8 where the
 * table has it, everything else through matmul_rows. */
static void act_rows(const struct eng_kernel_table *kt, uint32_t wt, const void *w,
                     size_t w_row_bytes, const struct eng_act *a, float *y, int64_t ldy, int64_t r0,
                     int64_t r1)
{
    eng_gemm8_fn gemm8 = kt->gemm8[wt];
    if (a->x8 == NULL || gemm8 == NULL) {
        matmul_rows(kt, wt, w, w_row_bytes, a->xq, a->xq_row_bytes, a->k, a->n_tok, y, ldy, r0, r1,
                    a->xd, a->xsum);
        return;
    }
    const struct eng_block_q8_0x8 *x8 = a->x8;
    const int64_t nb = a->k / ENG_QK;
    const char *wb = w;
    int64_t tile = (int64_t)(ROW_TILE_BYTES / w_row_bytes);
    tile = tile < 4 ? 4 : tile;
    for (int64_t rt = r0; rt < r1; rt += tile) {
        int64_t re = rt + tile < r1 ? rt + tile : r1;
        for (int64_t t0 = 0; t0 < a->n_tok; t0 += ENG_GEMM8_NX) {
            int nx = a->n_tok - t0 < ENG_GEMM8_NX ? (int)(a->n_tok - t0) : ENG_GEMM8_NX;
            gemm8(a->k, wb + (size_t)rt * w_row_bytes, w_row_bytes, re - rt,
                  x8 + (t0 / ENG_GEMM8_NX) * nb, nx, y + t0 * ldy + rt, ldy);
        }
    }
}

void eng_matmul_act_rows(uint32_t wt, const void *w, size_t w_row_bytes, const struct eng_act *a,
                         float *y, int64_t ldy, int64_t r0, int64_t r1)
{
    WYE_ASSERT(a->type == eng_act_type(wt) && eng_kernels_type_ok(wt, a->k));
    WYE_ASSERT(r0 >= 0 && r0 <= r1 && w_row_bytes >= eng_type_row_bytes(wt, a->k));
    act_rows(eng_kernels_active(), wt, w, w_row_bytes, a, y, ldy, r0, r1);
}

static void rows_task(void *arg, int64_t task, int thread)
{
    struct mm_job *job = arg;
    (void)thread;
    int64_t r0 = task * job->rows_per_task;
    int64_t r1 = r0 + job->rows_per_task < job->m ? r0 + job->rows_per_task : job->m;
    act_rows(job->kt, job->wt, job->w, job->w_row_bytes, &job->a, job->y, job->m, r0, r1);
}

void eng_matmul(struct eng_pool *pool, uint32_t wt, const void *w, int64_t m, int64_t k,
                const float *x, int64_t n_tok, float *y, void *xq_scratch)
{
    WYE_ASSERT(eng_kernels_type_ok(wt, k) && m >= 0 && n_tok >= 0);
    if (m == 0 || n_tok == 0) {
        return;
    }
    int nth = eng_pool_size(pool);
    struct mm_job job = {
        .kt = eng_kernels_active(),
        .wt = wt,
        .w = w,
        .w_row_bytes = eng_type_row_bytes(wt, k),
        .m = m,
        .y = y,
    };
    eng_act_prepare(pool, wt, x, k, n_tok, xq_scratch, &job.a);
    if (nth == 1) {
        act_rows(job.kt, wt, w, job.w_row_bytes, &job.a, y, m, 0, m);
        return;
    }
    /* About 8 chunks per thread so a preempted or slower thread does not hold the rest up,
     * but never below 16 rows (the counter and the call cost ~100 ns). */
    int64_t rpt = (m + (int64_t)nth * 8 - 1) / ((int64_t)nth * 8);
    rpt = rpt < 16 ? 16 : (rpt + 3) / 4 * 4;
    job.rows_per_task = rpt;
    eng_pool_run(pool, rows_task, &job, (m + rpt - 1) / rpt);
}

/* ---- repacked Q4_0 ---- */

bool eng_q4_0r8_wanted(void)
{
    const char *no = getenv("WYE_NO_REPACK");
    return eng_kernels_active() != eng_kernels_ref() && !(no && strcmp(no, "1") == 0);
}

bool eng_q4_0r8_ok(int64_t m, int64_t k)
{
    return m >= 8 && k > 0 && k % ENG_QK == 0 && k / ENG_QK <= ENG_GEMM_MAX_BLOCKS;
}

void eng_q4_0r8_pack(const void *w, int64_t m, int64_t k, void *dst)
{
    WYE_ASSERT(eng_q4_0r8_ok(m, k) && m % 8 == 0);
    const struct eng_block_q4_0 *src = w;
    struct eng_block_q4_0x8 *out = dst;
    const int64_t nb = k / ENG_QK;
    for (int64_t g = 0; g < m / 8; g++) {
        for (int64_t i = 0; i < nb; i++) {
            struct eng_block_q4_0x8 *o = out + g * nb + i;
            for (int r = 0; r < 8; r++) {
                const struct eng_block_q4_0 *b = src + (g * 8 + r) * nb + i;
                o->d[r] = b->d;
                /* qs[j] holds elements j (low) and j + 16 (high) */
                for (int e = 0; e < 4; e++) {
                    const uint8_t *q = b->qs;
                    o->qs[4 * r + e] = (uint8_t)((q[e] & 0x0F) | (q[4 + e] << 4));
                    o->qs[32 + 4 * r + e] = (uint8_t)((q[8 + e] & 0x0F) | (q[12 + e] << 4));
                    o->qs[64 + 4 * r + e] = (uint8_t)((q[e] >> 4) | (q[4 + e] & 0xF0));
                    o->qs[96 + 4 * r + e] = (uint8_t)((q[8 + e] >> 4) | (q[12 + e] & 0xF0));
                }
            }
        }
    }
}

struct prep_r8_job {
    const struct eng_kernel_table *kt;
    const float *x; /* (n_tok, k) */
    int64_t k, nb;
    unsigned char *rows; /* (n_tok, rb) */
    size_t rb;
    float *xd;    /* (n_tok, nb) */
    int32_t *xs8; /* (n_tok, nb) */
};

/* Token t: quantized, then its block scales and 8 x its block sums. */
static void prep_r8_task(void *arg, int64_t t, int thread)
{
    const struct prep_r8_job *j = arg;
    (void)thread;
    unsigned char *row = j->rows + (size_t)t * j->rb;
    j->kt->quant[ENG_TYPE_Q8_0](j->x + t * j->k, row, j->k);
    const struct eng_block_q8_0 *b = (const struct eng_block_q8_0 *)(const void *)row;
    for (int64_t i = 0; i < j->nb; i++) {
        int32_t s = 0;
        for (int e = 0; e < ENG_QK; e++) {
            s += b[i].qs[e];
        }
        j->xd[t * j->nb + i] = eng_fp16_to_fp32(b[i].d);
        j->xs8[t * j->nb + i] = 8 * s;
    }
}

void eng_act_prepare_q4_0r8(struct eng_pool *pool, const float *x, int64_t k, int64_t n_tok,
                            void *scratch, struct eng_act *a)
{
    WYE_ASSERT(eng_kernels_type_ok(ENG_TYPE_Q4_0, k) && n_tok >= 1 && scratch != NULL);
    unsigned char *base = (unsigned char *)(((uintptr_t)scratch + 31) & ~(uintptr_t)31);
    struct prep_r8_job j = {
        .kt = eng_kernels_active(),
        .x = x,
        .k = k,
        .nb = k / ENG_QK,
        .rows = base,
        .rb = eng_type_row_bytes(ENG_TYPE_Q8_0, k),
    };
    size_t per_tok = (size_t)n_tok * (size_t)j.nb;
    j.xd = (float *)(void *)(base + round32((size_t)n_tok * j.rb));
    j.xs8 = (int32_t *)(void *)(j.xd + per_tok);
    if (eng_pool_size(pool) > 1 && n_tok >= 4) {
        eng_pool_run(pool, prep_r8_task, &j, n_tok);
    } else {
        for (int64_t t = 0; t < n_tok; t++) {
            prep_r8_task(&j, t, 0);
        }
    }
    memset(a, 0, sizeof(*a));
    a->type = ENG_TYPE_Q8_0;
    a->k = k;
    a->n_tok = n_tok;
    a->xq = base;
    a->xq_row_bytes = j.rb;
    a->xd = j.xd;
    a->xs8 = j.xs8;
    if (n_tok == 1 && j.nb <= ENG_GEMV_MAX_BLOCKS) {
        /* the m % 8 last rows go through the file layout's decode kernel, which wants sums */
        float *xsum = (float *)(void *)(j.xs8 + per_tok);
        for (int64_t i = 0; i < j.nb; i++) {
            xsum[i] = (float)(j.xs8[i] / 8);
        }
        a->xsum = xsum;
    }
}

/* The fewest tokens that go through the prompt kernel (gemm_q4_0r8_many): its broadcasts
 * are written once per 4 tokens and 16 blocks and then read by every group of rows. */
#define R8_MANY_MIN_TOK 32

void eng_matmul_act_rows_q4_0r8(const void *w8, const struct eng_act *a, float *y, int64_t ldy,
                                int64_t r0, int64_t r1)
{
    WYE_ASSERT(a->type == ENG_TYPE_Q8_0 && r0 >= 0 && r0 % 8 == 0 && r1 % 8 == 0 && r0 <= r1);
    WYE_ASSERT(eng_q4_0r8_ok(r1 > 0 ? r1 : 8, a->k));
    const struct eng_kernel_table *kt = eng_kernels_active();
    const int64_t nb = a->k / ENG_QK;
    const struct eng_block_q4_0x8 *w = w8;
    if (a->xs8 && a->n_tok >= R8_MANY_MIN_TOK && kt->gemm_q4_0r8_many) {
        kt->gemm_q4_0r8_many(a->k, w + r0 / 8 * nb, r1 - r0, a->xq, a->xq_row_bytes, a->n_tok,
                             a->xd, a->xs8, y + r0, ldy);
        return;
    }
    /* rows per tile: a multiple of 8 that stays in L2 while every token group passes */
    int64_t tile = (int64_t)(ROW_TILE_BYTES / (sizeof(*w) * (size_t)nb)) * 8;
    tile = tile < 8 ? 8 : tile;
    const char *xb = a->xq;
    for (int64_t rt = r0; rt < r1; rt += tile) {
        int64_t re = rt + tile < r1 ? rt + tile : r1;
        for (int64_t t0 = 0; t0 < a->n_tok; t0 += ENG_DOT_NX) {
            int nx = a->n_tok - t0 < ENG_DOT_NX ? (int)(a->n_tok - t0) : ENG_DOT_NX;
            const float *xd = a->xs8 ? a->xd + t0 * nb : NULL;
            const int32_t *xs8 = a->xs8 ? a->xs8 + t0 * nb : NULL;
            kt->gemm_q4_0r8(a->k, w + rt / 8 * nb, re - rt, xb + (size_t)t0 * a->xq_row_bytes,
                            a->xq_row_bytes, nx, xd, xs8, y + t0 * ldy + rt, ldy);
        }
    }
}
