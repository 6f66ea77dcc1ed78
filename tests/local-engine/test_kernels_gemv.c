/* The decode and prompt kernels of the Q8_0-activation types (eng_kernel_table.gemv: many
 * weight rows against one prepared activation row; .gemm: many rows against 1-4 activation
 * rows in 4x4 tiles): eng_act_prep_q8_0 gives each block's scale and int8 sum; every AVX2
 * gemv and gemm gives each (row, token) what the scalar reference dot gives, for row lengths
 * with and without a tail of blocks past the 4-block steps, odd row counts, every token
 * count, extreme weight and activation levels, and writes nothing outside its rows and
 * tokens; eng_matmul_rows' decode path matches the one-row dots. The batched kernels
 * (gemm8) over packed 8-token groups give gemm's bits; a token's matmul output is the same
 * bits whatever the batch and the pool; rows too long for the gemm kernels still work. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "local-engine/pool.h"
#include "local-engine/quant.h"
#include "local-engine/quant_internal.h"
#include "kernel_test_rng.h"

static const uint32_t gemv_types[] = {ENG_TYPE_Q8_0, ENG_TYPE_Q4_0, ENG_TYPE_Q5_0};
#define N_GEMV_TYPES (sizeof(gemv_types) / sizeof(gemv_types[0]))

static uint64_t rng_state = 0x2545F4914F6CDD1DULL;

static float rng_sym(void) /* [-1, 1) */
{
    return ktr_sym(&rng_state);
}

static void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    assert_non_null(p);
    return p;
}

static void test_prep_q8_0(void **state)
{
    (void)state;
    enum { K = 96 };
    float x[K], xd[K / ENG_QK], xsum[K / ENG_QK];
    struct eng_block_q8_0 xq[K / ENG_QK];
    for (int i = 0; i < K; i++) {
        x[i] = rng_sym() * 3.0f;
    }
    x[5] = 3.5f; /* a block whose largest magnitude is positive gives +127 */
    eng_kernels_ref()->quant[ENG_TYPE_Q8_0](x, xq, K);
    eng_act_prep_q8_0(xq, K / ENG_QK, xd, xsum);
    for (int b = 0; b < K / ENG_QK; b++) {
        int s = 0;
        for (int j = 0; j < ENG_QK; j++) {
            s += xq[b].qs[j];
        }
        assert_true(xsum[b] == (float)s);
        assert_true(xd[b] == eng_fp16_to_fp32(xq[b].d));
    }
    assert_int_equal(xq[0].qs[5], 127);
}

/* |w| . |x| over the dequantized rows: the scale of rounding differences. */
static double magnitude(uint32_t wt, const void *wrow, const void *xq, int64_t k, float *d1,
                        float *d2)
{
    const struct eng_kernel_table *ref = eng_kernels_ref();
    ref->dequant[wt](wrow, d1, k);
    ref->dequant[ENG_TYPE_Q8_0](xq, d2, k);
    double mag = 0.0;
    for (int64_t i = 0; i < k; i++) {
        mag += fabs((double)d1[i] * d2[i]);
    }
    return mag;
}

static void gemv_case(const struct eng_kernel_table *kt, uint32_t wt, int64_t k, int extreme)
{
    enum { ROWS = 9 };
    const struct eng_kernel_table *ref = eng_kernels_ref();
    size_t wrb = eng_type_row_bytes(wt, k), arb = eng_type_row_bytes(ENG_TYPE_Q8_0, k);
    int64_t nb = k / ENG_QK;
    float *w = xmalloc((size_t)k * sizeof(float)), *x = xmalloc((size_t)k * sizeof(float));
    float *d1 = xmalloc((size_t)k * sizeof(float)), *d2 = xmalloc((size_t)k * sizeof(float));
    float *xd = xmalloc((size_t)nb * sizeof(float)), *xsum = xmalloc((size_t)nb * sizeof(float));
    unsigned char *wq = xmalloc(wrb * ROWS), *xq = xmalloc(arb);
    float y[ROWS], y2[ROWS - 1];

    for (int r = 0; r < ROWS; r++) {
        for (int64_t i = 0; i < k; i++) {
            /* extreme: only the end levels (-8/+7, -16/+15, -127/+127 after rounding) */
            w[i] = extreme ? (rng_sym() < 0.0f ? -1.0f : 0.99f) : rng_sym() * (float)(r + 1);
        }
        ref->quant[wt](w, wq + (size_t)r * wrb, k);
    }
    for (int64_t i = 0; i < k; i++) {
        x[i] = extreme ? (rng_sym() < 0.0f ? -2.0f : 2.0f) : rng_sym() * 5.0f;
    }
    ref->quant[ENG_TYPE_Q8_0](x, xq, k);
    eng_act_prep_q8_0(xq, nb, xd, xsum);
    kt->gemv[wt](k, wq, wrb, ROWS, xq, xd, xsum, y);
    /* a range that starts at row 3 of the matrix */
    y2[0] = y2[ROWS - 2] = -1.0f;
    kt->gemv[wt](k, wq + 3 * wrb, wrb, ROWS - 3, xq, xd, xsum, y2 + 1);
    assert_true(y2[0] == -1.0f && y2[ROWS - 2] == -1.0f);
    for (int r = 0; r < ROWS; r++) {
        float want;
        ref->dot[wt](k, wq + (size_t)r * wrb, xq, arb, 1, &want);
        double mag = magnitude(wt, wq + (size_t)r * wrb, xq, k, d1, d2);
        double e = fabs((double)want - y[r]);
        if (!(e <= 2e-6 * mag + 1e-30)) {
            print_error("%s %s k=%lld row %d: ref %.9g gemv %.9g (mag %.6g)\n", kt->name,
                        eng_type_name(wt), (long long)k, r, want, y[r], mag);
            fail();
        }
        if (r >= 3) {
            assert_true(y2[1 + r - 3] == y[r]);
        }
    }
    free(w), free(x), free(d1), free(d2), free(xd), free(xsum), free(wq), free(xq);
}

static void test_gemv_matches_reference(void **state)
{
    (void)state;
    if (!eng_cpu_has_avx2()) {
        skip();
    }
    const struct eng_kernel_table *kt = eng_kernels_avx2();
    static const int64_t ks[] = {32, 64, 96, 128, 160, 224, 576, 1536, 2048, 2080};
    int n_kernels = 0;
    for (size_t ti = 0; ti < N_GEMV_TYPES; ti++) {
        if (kt->gemv[gemv_types[ti]] == NULL) {
            continue;
        }
        n_kernels++;
        for (size_t ki = 0; ki < sizeof(ks) / sizeof(ks[0]); ki++) {
            gemv_case(kt, gemv_types[ti], ks[ki], 0);
            gemv_case(kt, gemv_types[ti], ks[ki], 1);
        }
    }
    assert_int_equal(n_kernels, (int)N_GEMV_TYPES);
}

static void gemm_case(const struct eng_kernel_table *kt, uint32_t wt, int64_t k, int nx,
                      int extreme)
{
    enum { ROWS = 7, LDY = 11 };
    const struct eng_kernel_table *ref = eng_kernels_ref();
    size_t wrb = eng_type_row_bytes(wt, k), arb = eng_type_row_bytes(ENG_TYPE_Q8_0, k);
    float *w = xmalloc((size_t)k * sizeof(float)), *x = xmalloc((size_t)k * sizeof(float));
    float *d1 = xmalloc((size_t)k * sizeof(float)), *d2 = xmalloc((size_t)k * sizeof(float));
    unsigned char *wq = xmalloc(wrb * ROWS), *xq = xmalloc(arb * ENG_DOT_NX);
    float y[ENG_DOT_NX * LDY];

    for (int r = 0; r < ROWS; r++) {
        for (int64_t i = 0; i < k; i++) {
            w[i] = extreme ? (rng_sym() < 0.0f ? -1.0f : 0.99f) : rng_sym() * (float)(r + 1);
            if (extreme == 2) { /* the largest level everywhere but the block's first */
                w[i] = i % ENG_QK == 0 ? -1.0f : 0.99f;
            }
        }
        ref->quant[wt](w, wq + (size_t)r * wrb, k);
    }
    for (int j = 0; j < ENG_DOT_NX; j++) {
        for (int64_t i = 0; i < k; i++) {
            x[i] = extreme ? (rng_sym() < 0.0f ? -2.0f : 2.0f) : rng_sym() * (float)(j + 1);
            if (extreme == 2) { /* +127 everywhere: the largest sums the kernels can see */
                x[i] = (j % 2 == 0 ? 2.0f : -2.0f);
            }
        }
        ref->quant[ENG_TYPE_Q8_0](x, xq + (size_t)j * arb, k);
    }
    for (int i = 0; i < ENG_DOT_NX * LDY; i++) {
        y[i] = -3.0f;
    }
    kt->gemm[wt](k, wq, wrb, ROWS, xq, arb, nx, y, LDY);
    for (int j = 0; j < ENG_DOT_NX; j++) {
        for (int r = 0; r < LDY; r++) {
            float got = y[j * LDY + r];
            if (j >= nx || r >= ROWS) {
                assert_true(got == -3.0f); /* outside the tile: untouched */
                continue;
            }
            float want[ENG_DOT_NX];
            ref->dot[wt](k, wq + (size_t)r * wrb, xq, arb, nx, want);
            double mag = magnitude(wt, wq + (size_t)r * wrb, xq + (size_t)j * arb, k, d1, d2);
            double e = fabs((double)want[j] - got);
            if (!(e <= 2e-6 * mag + 1e-30)) {
                print_error("%s k=%lld nx=%d row %d tok %d: ref %.9g gemm %.9g\n",
                            eng_type_name(wt), (long long)k, nx, r, j, want[j], got);
                fail();
            }
        }
    }
    free(w), free(x), free(d1), free(d2), free(wq), free(xq);
}

static void test_gemm_matches_reference(void **state)
{
    (void)state;
    if (!eng_cpu_has_avx2()) {
        skip();
    }
    const struct eng_kernel_table *kt = eng_kernels_avx2();
    static const int64_t ks[] = {32, 96, 256, 2080};
    int n_kernels = 0;
    for (size_t ti = 0; ti < N_GEMV_TYPES; ti++) {
        if (kt->gemm[gemv_types[ti]] == NULL) {
            continue;
        }
        n_kernels++;
        for (size_t ki = 0; ki < sizeof(ks) / sizeof(ks[0]); ki++) {
            for (int nx = 1; nx <= ENG_DOT_NX; nx++) {
                gemm_case(kt, gemv_types[ti], ks[ki], nx, 0);
                gemm_case(kt, gemv_types[ti], ks[ki], nx, 1);
                gemm_case(kt, gemv_types[ti], ks[ki], nx, 2);
            }
        }
    }
    assert_int_equal(n_kernels, (int)N_GEMV_TYPES);
}

/* eng_act_pack_q8_0x8 puts every element where quant_internal.h says, with each token's
 * scale and sum, and zeros the tokens past nx. */
static void test_pack_q8_0x8(void **state)
{
    (void)state;
    enum { K = 96, NB = K / ENG_QK };
    const struct eng_kernel_table *ref = eng_kernels_ref();
    struct eng_block_q8_0 xq[ENG_GEMM8_NX][NB];
    _Alignas(32) struct eng_block_q8_0x8 p[NB];
    float x[K];
    for (int nx = 1; nx <= ENG_GEMM8_NX; nx++) {
        for (int t = 0; t < ENG_GEMM8_NX; t++) {
            for (int i = 0; i < K; i++) {
                x[i] = rng_sym() * (float)(t + 1);
            }
            ref->quant[ENG_TYPE_Q8_0](x, xq[t], K);
        }
        memset(p, 0x5a, sizeof(p));
        eng_act_pack_q8_0x8(xq, sizeof(xq[0]), nx, NB, p);
        for (int b = 0; b < NB; b++) {
            for (int t = 0; t < ENG_GEMM8_NX; t++) {
                int sum = 0;
                for (int e = 0; e < ENG_QK; e++) {
                    int at = 64 * (e % 16 / 4) + 32 * (t / 4) + 16 * (e / 16) + 4 * (t % 4) + e % 4;
                    int8_t want = t < nx ? xq[t][b].qs[e] : 0;
                    assert_int_equal(p[b].qs[at], want);
                    sum += want;
                }
                assert_int_equal(p[b].s[t], sum);
                assert_true(p[b].d[t] == (t < nx ? eng_fp16_to_fp32(xq[t][b].d) : 0.0f));
            }
        }
    }
}

/* The batched kernels (gemm8) against the 4-token ones (gemm) and the scalar reference: the
 * same bits as gemm for every (row, token), whatever the row count (odd, fewer than a tile),
 * the token count (1..8) or the row length (with and without a tail past the unrolled
 * steps); within rounding of the reference dot; nothing written outside the rows and
 * tokens. Weights and activations random, at the extreme levels, or random bits (Q8_0
 * weights of -128 included). */
static void gemm8_case(const struct eng_kernel_table *kt, uint32_t wt, int64_t k, int rows,
                       int mode)
{
    enum { LDY = 13 };
    const struct eng_kernel_table *ref = eng_kernels_ref();
    size_t wrb = eng_type_row_bytes(wt, k), arb = eng_type_row_bytes(ENG_TYPE_Q8_0, k);
    int64_t nb = k / ENG_QK;
    float *w = xmalloc((size_t)k * sizeof(float)), *x = xmalloc((size_t)k * sizeof(float));
    float *d1 = xmalloc((size_t)k * sizeof(float)), *d2 = xmalloc((size_t)k * sizeof(float));
    unsigned char *wq = xmalloc(wrb * (size_t)rows), *xq = xmalloc(arb * ENG_GEMM8_NX);
    struct eng_block_q8_0x8 *x8 = aligned_alloc(32, (size_t)nb * sizeof(*x8));
    assert_non_null(x8);
    float y8[ENG_GEMM8_NX * LDY], y4[ENG_GEMM8_NX * LDY];

    for (int r = 0; r < rows; r++) {
        for (int64_t i = 0; i < k; i++) {
            w[i] = mode == 1 ? (rng_sym() < 0.0f ? -1.0f : 0.99f) : rng_sym() * (float)(r + 1);
        }
        ref->quant[wt](w, wq + (size_t)r * wrb, k);
        if (mode == 2) { /* random bits, with finite scales */
            for (size_t b = 0; b < wrb; b++) {
                wq[(size_t)r * wrb + b] = (unsigned char)(rng_sym() * 128.0f + 128.0f);
            }
            size_t bs = wrb / (size_t)nb;
            for (int64_t i = 0; i < nb; i++) {
                uint16_t d = eng_fp32_to_fp16(0.01f + 0.001f * (float)i);
                memcpy(wq + (size_t)r * wrb + (size_t)i * bs, &d, sizeof(d));
            }
        }
    }
    if (wt == ENG_TYPE_Q8_0 && mode == 2) {
        /* a -128 in every block of the first row, against negative activations below */
        for (int64_t i = 0; i < nb; i++) {
            wq[(size_t)i * sizeof(struct eng_block_q8_0) + 2 + (size_t)(i % 32)] = 0x80;
        }
    }
    for (int j = 0; j < ENG_GEMM8_NX; j++) {
        for (int64_t i = 0; i < k; i++) {
            x[i] = mode == 1 ? (rng_sym() < 0.0f ? -2.0f : 2.0f) : rng_sym() * (float)(j + 1);
            if (mode == 2 && j == 0) {
                x[i] = -1.0f - rng_sym() * 0.5f;
            }
        }
        ref->quant[ENG_TYPE_Q8_0](x, xq + (size_t)j * arb, k);
    }
    for (int nx = 1; nx <= ENG_GEMM8_NX; nx++) {
        for (int i = 0; i < ENG_GEMM8_NX * LDY; i++) {
            y8[i] = y4[i] = -3.0f;
        }
        eng_act_pack_q8_0x8(xq, arb, nx, nb, x8);
        kt->gemm8[wt](k, wq, wrb, rows, x8, nx, y8, LDY);
        for (int t0 = 0; t0 < nx; t0 += ENG_DOT_NX) {
            int n4 = nx - t0 < ENG_DOT_NX ? nx - t0 : ENG_DOT_NX;
            kt->gemm[wt](k, wq, wrb, rows, xq + (size_t)t0 * arb, arb, n4, y4 + t0 * LDY, LDY);
        }
        for (int j = 0; j < ENG_GEMM8_NX; j++) {
            for (int r = 0; r < LDY; r++) {
                float got = y8[j * LDY + r];
                if (j >= nx || r >= rows) {
                    assert_true(got == -3.0f); /* outside the tile: untouched */
                    continue;
                }
                if (memcmp(&got, &y4[j * LDY + r], sizeof(got)) != 0) {
                    print_error("%s k=%lld nx=%d row %d tok %d: gemm8 %.9g gemm %.9g\n",
                                eng_type_name(wt), (long long)k, nx, r, j, got, y4[j * LDY + r]);
                    fail();
                }
                float want;
                ref->dot[wt](k, wq + (size_t)r * wrb, xq + (size_t)j * arb, arb, 1, &want);
                double mag = magnitude(wt, wq + (size_t)r * wrb, xq + (size_t)j * arb, k, d1, d2);
                if (!(fabs((double)want - got) <= 2e-6 * mag + 1e-30)) {
                    print_error("%s k=%lld nx=%d row %d tok %d: ref %.9g gemm8 %.9g\n",
                                eng_type_name(wt), (long long)k, nx, r, j, want, got);
                    fail();
                }
            }
        }
    }
    free(w), free(x), free(d1), free(d2), free(wq), free(xq), free(x8);
}

static void test_gemm8_matches_gemm(void **state)
{
    (void)state;
    if (!eng_cpu_has_avx2()) {
        skip();
    }
    const struct eng_kernel_table *kt = eng_kernels_avx2();
    static const int64_t ks[] = {32, 96, 256, 2080};
    static const int rows[] = {1, 2, 3, 4, 5, 11};
    int n_kernels = 0;
    for (size_t ti = 0; ti < N_GEMV_TYPES; ti++) {
        uint32_t wt = gemv_types[ti];
        if (kt->gemm8[wt] == NULL) {
            continue;
        }
        n_kernels++;
        for (size_t ki = 0; ki < sizeof(ks) / sizeof(ks[0]); ki++) {
            for (size_t ri = 0; ri < sizeof(rows) / sizeof(rows[0]); ri++) {
                for (int mode = 0; mode < 3; mode++) {
                    gemm8_case(kt, wt, ks[ki], rows[ri], mode);
                }
            }
        }
    }
    assert_int_equal(n_kernels, 2); /* Q8_0 and Q4_0 */
}

/* A token's outputs do not depend on how many tokens share its matmul (2..20: the 4-token
 * and the batched kernels, full and partial groups), nor on the pool's size: bit for bit,
 * for every Q8_0-activation type; and eng_matmul_act_rows over eng_act_prepare gives
 * eng_matmul_rows' bits. */
static void test_matmul_batch_invariance(void **state)
{
    (void)state;
    enum { M = 45, K = 320, T = 20 };
    float *x = xmalloc((size_t)T * K * sizeof(float));
    float *yref = xmalloc((size_t)T * M * sizeof(float)),
          *y = xmalloc((size_t)T * M * sizeof(float));
    for (int i = 0; i < T * K; i++) {
        x[i] = rng_sym() * 3.0f;
    }
    for (size_t ti = 0; ti < N_GEMV_TYPES; ti++) {
        uint32_t wt = gemv_types[ti];
        size_t wrb = eng_type_row_bytes(wt, K), arb = eng_act_row_bytes(wt, K);
        unsigned char *wq = xmalloc(wrb * M);
        void *scratch = xmalloc(eng_matmul_scratch_bytes(wt, K, T));
        unsigned char *xq = xmalloc(arb * T);
        float w[K];
        for (int r = 0; r < M; r++) {
            for (int i = 0; i < K; i++) {
                w[i] = rng_sym();
            }
            eng_quantize_row(wt, w, wq + (size_t)r * wrb, K);
        }
        eng_matmul(NULL, wt, wq, M, K, x, T, yref, scratch);
        for (int nth = 1; nth <= 3; nth++) {
            struct eng_pool *pool = eng_pool_create(nth);
            assert_non_null(pool);
            for (int n = 2; n <= T; n++) {
                memset(y, 0xff, (size_t)T * M * sizeof(float));
                eng_matmul(pool, wt, wq, M, K, x, n, y, scratch);
                assert_memory_equal(y, yref, (size_t)n * M * sizeof(float));
                struct eng_act a;
                eng_act_prepare(pool, wt, x, K, n, scratch, &a);
                memset(y, 0xff, (size_t)T * M * sizeof(float));
                eng_matmul_act_rows(wt, wq, wrb, &a, y, M, 3, 40);
                for (int t = 0; t < n; t++) {
                    assert_memory_equal(y + t * M + 3, yref + t * M + 3, 37 * sizeof(float));
                    assert_true(isnan(y[t * M + 2]) && isnan(y[t * M + 40]));
                }
            }
            eng_pool_destroy(pool);
        }
        /* the public rows entry point over plain quantized rows gives the same bits */
        for (int t = 0; t < T; t++) {
            eng_act_quantize(wt, x + t * K, xq + (size_t)t * arb, K);
        }
        eng_matmul_rows(wt, wq, wrb, xq, arb, K, T, y, M, 0, M);
        assert_memory_equal(y, yref, (size_t)T * M * sizeof(float));
        free(wq), free(scratch), free(xq);
    }
    free(x), free(yref), free(y);
}

/* Rows longer than the gemm kernels take (k / 32 > ENG_GEMM_MAX_BLOCKS) fall back to the dot
 * kernels for any batch, with the right values. */
static void test_matmul_long_rows(void **state)
{
    (void)state;
    enum { M = 3, K = 32 * (ENG_GEMM_MAX_BLOCKS + 1), T = 6 };
    const struct eng_kernel_table *ref = eng_kernels_ref();
    float *x = xmalloc((size_t)T * K * sizeof(float)), *w = xmalloc((size_t)K * sizeof(float));
    float *d1 = xmalloc((size_t)K * sizeof(float)), *d2 = xmalloc((size_t)K * sizeof(float));
    float y[T * M];
    for (int i = 0; i < T * K; i++) {
        x[i] = rng_sym();
    }
    for (size_t ti = 0; ti < N_GEMV_TYPES; ti++) {
        uint32_t wt = gemv_types[ti];
        size_t wrb = eng_type_row_bytes(wt, K), arb = eng_act_row_bytes(wt, K);
        unsigned char *wq = xmalloc(wrb * M), *xq = xmalloc(arb * T);
        void *scratch = xmalloc(eng_matmul_scratch_bytes(wt, K, T));
        for (int r = 0; r < M; r++) {
            for (int i = 0; i < K; i++) {
                w[i] = rng_sym();
            }
            eng_quantize_row(wt, w, wq + (size_t)r * wrb, K);
        }
        eng_matmul(NULL, wt, wq, M, K, x, T, y, scratch);
        for (int t = 0; t < T; t++) {
            eng_act_quantize(wt, x + (size_t)t * K, xq + (size_t)t * arb, K);
            for (int r = 0; r < M; r++) {
                float want;
                ref->dot[wt](K, wq + (size_t)r * wrb, xq + (size_t)t * arb, arb, 1, &want);
                double mag = magnitude(wt, wq + (size_t)r * wrb, xq + (size_t)t * arb, K, d1, d2);
                assert_true(fabs((double)want - y[t * M + r]) <= 2e-6 * mag + 1e-30);
            }
        }
        free(wq), free(xq), free(scratch);
    }
    free(x), free(w), free(d1), free(d2);
}

/* Whatever table is active (also with WYE_NO_AVX2=1), the decode path of eng_matmul_rows
 * writes exactly its row range with the one-row dot's values (within rounding). */
static void test_matmul_rows_decode(void **state)
{
    (void)state;
    enum { M = 37, K = 544 };
    const struct eng_kernel_table *kt = eng_kernels_active();
    for (size_t ti = 0; ti < N_GEMV_TYPES; ti++) {
        uint32_t wt = gemv_types[ti];
        size_t wrb = eng_type_row_bytes(wt, K), arb = eng_act_row_bytes(wt, K);
        float w[K], x[K], y[M], d1[K], d2[K];
        unsigned char *wq = xmalloc(wrb * M), *xq = xmalloc(arb);
        for (int r = 0; r < M; r++) {
            for (int i = 0; i < K; i++) {
                w[i] = rng_sym();
            }
            eng_quantize_row(wt, w, wq + (size_t)r * wrb, K);
        }
        for (int i = 0; i < K; i++) {
            x[i] = rng_sym();
        }
        eng_act_quantize(wt, x, xq, K);
        for (int r = 0; r < M; r++) {
            y[r] = -7.0f;
        }
        eng_matmul_rows(wt, wq, wrb, xq, arb, K, 1, y, M, 5, 30);
        for (int r = 0; r < M; r++) {
            if (r < 5 || r >= 30) {
                assert_true(y[r] == -7.0f);
                continue;
            }
            float want;
            kt->dot[wt](K, wq + (size_t)r * wrb, xq, arb, 1, &want);
            double mag = magnitude(wt, wq + (size_t)r * wrb, xq, K, d1, d2);
            assert_true(fabs((double)want - y[r]) <= 2e-6 * mag + 1e-30);
        }
        free(wq), free(xq);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_prep_q8_0),
        cmocka_unit_test(test_gemv_matches_reference),
        cmocka_unit_test(test_gemm_matches_reference),
        cmocka_unit_test(test_matmul_rows_decode),
        cmocka_unit_test(test_pack_q8_0x8),
        cmocka_unit_test(test_gemm8_matches_gemm),
        cmocka_unit_test(test_matmul_batch_invariance),
        cmocka_unit_test(test_matmul_long_rows),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
