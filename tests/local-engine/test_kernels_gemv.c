/* The decode and prompt kernels of the Q8_0-activation types (eng_kernel_table.gemv: many
 * weight rows against one prepared activation row; .gemm: many rows against 1-4 activation
 * rows in 4x4 tiles): eng_act_prep_q8_0 gives each block's scale and int8 sum; every AVX2
 * gemv and gemm gives each (row, token) what the scalar reference dot gives, for row lengths
 * with and without a tail of blocks past the 4-block steps, odd row counts, every token
 * count, extreme weight and activation levels, and writes nothing outside its rows and
 * tokens; eng_matmul_rows' decode path matches the one-row dots. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "local-engine/quant.h"
#include "local-engine/quant_internal.h"

static const uint32_t gemv_types[] = {ENG_TYPE_Q8_0, ENG_TYPE_Q4_0, ENG_TYPE_Q5_0};
#define N_GEMV_TYPES (sizeof(gemv_types) / sizeof(gemv_types[0]))

static uint64_t rng_state = 0x2545F4914F6CDD1DULL;

static float rng_sym(void) /* [-1, 1) */
{
    uint64_t x = rng_state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    rng_state = x;
    return (float)(x >> 40) / 8388608.0f - 1.0f;
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
    static const int64_t ks[] = {32, 64, 96, 128, 160, 224, 2048, 2080};
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
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
