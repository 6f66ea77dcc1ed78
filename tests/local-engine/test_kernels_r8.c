/* Q4_0 repacked in groups of 8 rows (eng_q4_0r8_pack, struct eng_block_q4_0x8): every
 * element lands where quant_internal.h says; the scalar and AVX2 kernels give each (row,
 * token) what the reference Q4_0 dot gives (row lengths of 1, 3 and 65 blocks, every token
 * count, the extreme levels), write nothing outside their rows and tokens, and give a token
 * the same bits whatever the number of tokens beside it and whether its scales and sums are
 * given or computed; eng_matmul_act_rows_q4_0r8 over activations from eng_act_prepare
 * (decode, 4-token and packed batches) and from eng_act_prepare_q4_0r8, with and without a
 * pool, gives exactly the kernel's values; the AVX2 prompt kernel (any number of tokens, chunks
 * of blocks, tiles of rows) gives each token the 4-token kernel's bits; eng_q4_0r8_ok takes
 * only the shapes the kernels handle. */
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

static uint64_t rng_state = 0x9E3779B97F4A7C15ULL;

static float rng_sym(void) /* [-1, 1) */
{
    return ktr_sym(&rng_state);
}

static void *xmalloc(size_t n)
{
    void *p = aligned_alloc(64, (n + 63) / 64 * 64);
    assert_non_null(p);
    return p;
}

/* Element i of row r: Q4_0 weights random, or (extreme) only the levels 0 and 15 (each block
 * starts with -1, which sets its scale); Q8_0 activations random, or (extreme) +-127 only. */
static float value(uint32_t type, int64_t r, int64_t i, int extreme)
{
    if (type == ENG_TYPE_Q4_0) {
        if (!extreme) {
            return rng_sym() * (float)(r % 5 + 1);
        }
        return i % ENG_QK == 0 || rng_sym() < 0.0f ? -1.0f : 0.875f;
    }
    return extreme ? (rng_sym() < 0.0f ? -2.0f : 2.0f) : rng_sym() * (float)(r + 1);
}

/* n rows of k elements of type (Q4_0 weights or Q8_0 activations), quantized by the
 * reference. */
static unsigned char *make_rows(uint32_t type, int64_t n, int64_t k, int extreme)
{
    size_t rb = eng_type_row_bytes(type, k);
    unsigned char *q = xmalloc(rb * (size_t)n);
    float *v = xmalloc((size_t)k * sizeof(float));
    for (int64_t r = 0; r < n; r++) {
        for (int64_t i = 0; i < k; i++) {
            v[i] = value(type, r, i, extreme);
        }
        eng_kernels_ref()->quant[type](v, q + (size_t)r * rb, k);
    }
    free(v);
    return q;
}

static void test_pack_layout(void **state)
{
    (void)state;
    enum { M = 16, K = 96 };
    const int64_t nb = K / ENG_QK;
    unsigned char *wq = make_rows(ENG_TYPE_Q4_0, M, K, 0);
    size_t rb = eng_type_row_bytes(ENG_TYPE_Q4_0, K);
    struct eng_block_q4_0x8 *p = xmalloc(rb * M);
    eng_q4_0r8_pack(wq, M, K, p);
    for (int64_t r = 0; r < M; r++) {
        const struct eng_block_q4_0 *row = (const void *)(wq + (size_t)r * rb);
        for (int64_t i = 0; i < nb; i++) {
            const struct eng_block_q4_0x8 *b = p + (r / 8) * nb + i;
            int lane = (int)(r % 8);
            assert_int_equal(b->d[lane], row[i].d);
            for (int e = 0; e < ENG_QK; e++) {
                int want = e < 16 ? row[i].qs[e] & 0x0F : row[i].qs[e - 16] >> 4;
                int q = e / 8, s = e % 8;
                uint8_t byte = b->qs[32 * q + 4 * lane + s % 4];
                int got = s < 4 ? byte & 0x0F : byte >> 4;
                assert_int_equal(got, want);
            }
        }
    }
    free(wq), free(p);
}

/* Sum over the row of |w_i x_i| in floats: the scale of the rounding error. */
static double magnitude(const unsigned char *wrow, const unsigned char *xrow, int64_t k)
{
    float *w = xmalloc((size_t)k * sizeof(float)), *x = xmalloc((size_t)k * sizeof(float));
    eng_kernels_ref()->dequant[ENG_TYPE_Q4_0](wrow, w, k);
    eng_kernels_ref()->dequant[ENG_TYPE_Q8_0](xrow, x, k);
    double s = 0.0;
    for (int64_t i = 0; i < k; i++) {
        s += fabs((double)w[i] * (double)x[i]);
    }
    free(w), free(x);
    return s;
}

/* A Q8_0 row's block scales as floats and 8 x its block sums, as eng_act_prepare_q4_0r8 keeps
 * them. */
static void scales_sums(const unsigned char *row, int64_t nb, float *xd, int32_t *xs8)
{
    const struct eng_block_q8_0 *b = (const void *)row;
    for (int64_t i = 0; i < nb; i++) {
        int32_t sum = 0;
        for (int e = 0; e < ENG_QK; e++) {
            sum += b[i].qs[e];
        }
        xd[i] = eng_fp16_to_fp32(b[i].d);
        xs8[i] = 8 * sum;
    }
}

/* The table's kernel over 3 groups against nx tokens vs the reference Q4_0 dot, canaries
 * around the tile, and each token's bits equal to a call with that token alone. */
static void kernel_case(const struct eng_kernel_table *kt, int64_t k, int nx, int extreme)
{
    enum { M = 24, LDY = 29 };
    const struct eng_kernel_table *ref = eng_kernels_ref();
    size_t wrb = eng_type_row_bytes(ENG_TYPE_Q4_0, k), arb = eng_type_row_bytes(ENG_TYPE_Q8_0, k);
    unsigned char *wq = make_rows(ENG_TYPE_Q4_0, M, k, extreme), *xq = make_rows(ENG_TYPE_Q8_0, ENG_DOT_NX, k, extreme);
    struct eng_block_q4_0x8 *p = xmalloc(wrb * M);
    eng_q4_0r8_pack(wq, M, k, p);
    float y[ENG_DOT_NX * LDY], one[LDY];
    for (int i = 0; i < ENG_DOT_NX * LDY; i++) {
        y[i] = -3.0f;
    }
    kt->gemm_q4_0r8(k, p, M, xq, arb, nx, NULL, NULL, y, LDY);
    /* the scales and sums given (as eng_act_prepare_q4_0r8 keeps them) give the same bits */
    const int64_t nb = k / ENG_QK;
    float *xd = xmalloc((size_t)(ENG_DOT_NX * nb) * sizeof(float));
    int32_t *xs8 = xmalloc((size_t)(ENG_DOT_NX * nb) * sizeof(int32_t));
    for (int j = 0; j < ENG_DOT_NX; j++) {
        scales_sums(xq + (size_t)j * arb, nb, xd + j * nb, xs8 + j * nb);
    }
    float given[ENG_DOT_NX * LDY];
    memcpy(given, y, sizeof(given));
    kt->gemm_q4_0r8(k, p, M, xq, arb, nx, xd, xs8, given, LDY);
    assert_memory_equal(given, y, sizeof(given));
    free(xd), free(xs8);
    for (int j = 0; j < ENG_DOT_NX; j++) {
        if (j < nx) {
            kt->gemm_q4_0r8(k, p, M, xq + (size_t)j * arb, arb, 1, NULL, NULL, one, LDY);
        }
        for (int r = 0; r < LDY; r++) {
            float got = y[j * LDY + r];
            if (j >= nx || r >= M) {
                assert_true(got == -3.0f); /* outside the tile: untouched */
                continue;
            }
            float want;
            ref->dot[ENG_TYPE_Q4_0](k, wq + (size_t)r * wrb, xq + (size_t)j * arb, arb, 1, &want);
            double mag = magnitude(wq + (size_t)r * wrb, xq + (size_t)j * arb, k);
            if (!(fabs((double)want - got) <= 2e-6 * mag + 1e-30)) {
                print_error("%s k=%lld nx=%d row %d tok %d: Q4_0 dot %.9g repacked %.9g\n",
                            kt->name, (long long)k, nx, r, j, want, got);
                fail();
            }
            if (memcmp(&got, &one[r], sizeof(got)) != 0) {
                print_error("%s k=%lld nx=%d row %d tok %d: %.9g alone, %.9g beside others\n",
                            kt->name, (long long)k, nx, r, j, one[r], got);
                fail();
            }
        }
    }
    free(wq), free(xq), free(p);
}

static void test_kernels_match_q4_0(void **state)
{
    (void)state;
    const struct eng_kernel_table *tables[2] = {eng_kernels_ref(), NULL};
    if (eng_cpu_has_avx2()) {
        tables[1] = eng_kernels_avx2();
    }
    static const int64_t ks[] = {32, 96, 2080};
    for (int ti = 0; ti < 2 && tables[ti]; ti++) {
        assert_non_null(tables[ti]->gemm_q4_0r8);
        for (size_t ki = 0; ki < sizeof(ks) / sizeof(ks[0]); ki++) {
            for (int nx = 1; nx <= ENG_DOT_NX; nx++) {
                kernel_case(tables[ti], ks[ki], nx, 0);
                kernel_case(tables[ti], ks[ki], nx, 1);
            }
        }
    }
}

/* The public rows entry point over eng_act_prepare'd activations (1 token: the decode
 * preparation; 3: plain rows; 9: also packed for gemm8), with and without a pool, on rows
 * [8, 32) of 40: the active kernel's bits for each token, NaN canaries left outside. */
static void test_matmul_act_rows(void **state)
{
    (void)state;
    enum { M = 40, K = 320, T = 9 };
    const struct eng_kernel_table *kt = eng_kernels_active();
    size_t arb = eng_type_row_bytes(ENG_TYPE_Q8_0, K);
    unsigned char *wq = make_rows(ENG_TYPE_Q4_0, M, K, 0);
    struct eng_block_q4_0x8 *p = xmalloc(eng_type_row_bytes(ENG_TYPE_Q4_0, K) * M);
    eng_q4_0r8_pack(wq, M, K, p);
    float *x = xmalloc((size_t)T * K * sizeof(float));
    for (int i = 0; i < T * K; i++) {
        x[i] = rng_sym() * 2.0f;
    }
    unsigned char *xq = xmalloc(arb * T);
    float *want = xmalloc((size_t)T * M * sizeof(float)), *y = xmalloc((size_t)T * M * sizeof(float));
    for (int t = 0; t < T; t++) {
        eng_act_quantize(ENG_TYPE_Q4_0, x + t * K, xq + (size_t)t * arb, K);
        kt->gemm_q4_0r8(K, p, M, xq + (size_t)t * arb, arb, 1, NULL, NULL, want + t * M, M);
    }
    void *scratch = xmalloc(eng_matmul_scratch_bytes(ENG_TYPE_Q4_0, K, T));
    struct eng_pool *pool = eng_pool_create(2);
    assert_non_null(pool);
    static const int ns[] = {1, 3, T};
    for (int pi = 0; pi < 4; pi++) {
        for (size_t ni = 0; ni < sizeof(ns) / sizeof(ns[0]); ni++) {
            struct eng_act a;
            struct eng_pool *pp = pi % 2 ? pool : NULL;
            if (pi < 2) {
                eng_act_prepare(pp, ENG_TYPE_Q4_0, x, K, ns[ni], scratch, &a);
            } else {
                eng_act_prepare_q4_0r8(pp, x, K, ns[ni], scratch, &a);
                assert_non_null(a.xs8);
                assert_null(a.x8);
                assert_true(ns[ni] == 1 ? a.xsum != NULL : a.xsum == NULL);
            }
            memset(y, 0xff, (size_t)T * M * sizeof(float));
            eng_matmul_act_rows_q4_0r8(p, &a, y, M, 8, 32);
            for (int t = 0; t < ns[ni]; t++) {
                assert_memory_equal(y + t * M + 8, want + t * M + 8, 24 * sizeof(float));
                assert_true(isnan(y[t * M + 7]) && isnan(y[t * M + 32]));
            }
        }
    }
    eng_pool_destroy(pool);
    free(wq), free(p), free(x), free(xq), free(want), free(y), free(scratch);
}

/* The prompt kernel (AVX2 only): for 1-5, 9 and 37 tokens, row lengths of 1, 3, 17 and 65
 * blocks (chunks of 16 blocks, partial ones) and 115 groups of rows (two tiles),
 * each (row, token) the bits of the 4-token kernel for that token alone; NaN canaries left
 * beside the rows and after the tokens. Then through eng_matmul_act_rows_q4_0r8 (which takes
 * it from 32 tokens on) with and without a pool: the active table's bits. */
static void test_prompt_kernel(void **state)
{
    (void)state;
    if (!eng_cpu_has_avx2()) {
        skip();
    }
    const struct eng_kernel_table *kt = eng_kernels_avx2();
    assert_non_null(kt->gemm_q4_0r8_many);
    enum { M = 920, LDY = 930, T = 37 }; /* 115 groups: two tiles of rows */
    static const int64_t ks[] = {32, 96, 544, 2080};
    static const int ns[] = {1, 2, 3, 4, 5, 9, T};
    struct eng_pool *pool = eng_pool_create(2);
    assert_non_null(pool);
    for (size_t ki = 0; ki < sizeof(ks) / sizeof(ks[0]); ki++) {
        const int64_t k = ks[ki], nb = k / ENG_QK;
        size_t wrb = eng_type_row_bytes(ENG_TYPE_Q4_0, k),
               arb = eng_type_row_bytes(ENG_TYPE_Q8_0, k);
        unsigned char *wq = make_rows(ENG_TYPE_Q4_0, M, k, ki % 2);
        struct eng_block_q4_0x8 *p = xmalloc(wrb * M);
        eng_q4_0r8_pack(wq, M, k, p);
        float *x = xmalloc((size_t)T * (size_t)k * sizeof(float));
        for (int64_t i = 0; i < T * k; i++) {
            x[i] = rng_sym() * 3.0f;
        }
        unsigned char *xq = xmalloc(arb * T);
        float *xd = xmalloc((size_t)(T * nb) * sizeof(float));
        int32_t *xs8 = xmalloc((size_t)(T * nb) * sizeof(int32_t));
        float *want = xmalloc((size_t)T * LDY * sizeof(float));
        float *y = xmalloc((size_t)(T + 1) * LDY * sizeof(float));
        for (int t = 0; t < T; t++) {
            eng_act_quantize(ENG_TYPE_Q4_0, x + t * k, xq + (size_t)t * arb, k);
            scales_sums(xq + (size_t)t * arb, nb, xd + t * nb, xs8 + t * nb);
            kt->gemm_q4_0r8(k, p, M, xq + (size_t)t * arb, arb, 1, NULL, NULL, want + t * LDY, LDY);
        }
        for (size_t ni = 0; ni < sizeof(ns) / sizeof(ns[0]); ni++) {
            memset(y, 0xff, (size_t)(T + 1) * LDY * sizeof(float));
            kt->gemm_q4_0r8_many(k, p, M, xq, arb, ns[ni], xd, xs8, y, LDY);
            for (int t = 0; t <= ns[ni]; t++) {
                for (int r = 0; r < LDY; r++) {
                    float got = y[t * LDY + r];
                    if (t == ns[ni] || r >= M) {
                        assert_true(isnan(got));
                    } else if (memcmp(&got, &want[t * LDY + r], sizeof(got)) != 0) {
                        print_error("k=%lld n_tok=%d row %d tok %d: %.9g, alone %.9g\n",
                                    (long long)k, ns[ni], r, t, got, want[t * LDY + r]);
                        fail();
                    }
                }
            }
        }
        /* the entry point uses the active table (scalar under WYE_KERNELS=scalar) */
        const struct eng_kernel_table *act = eng_kernels_active();
        for (int t = 0; t < T; t++) {
            act->gemm_q4_0r8(k, p, M, xq + (size_t)t * arb, arb, 1, NULL, NULL, want + t * LDY,
                             LDY);
        }
        void *scratch = xmalloc(eng_matmul_scratch_bytes(ENG_TYPE_Q4_0, k, T));
        for (int pi = 0; pi < 2; pi++) {
            struct eng_act a;
            eng_act_prepare_q4_0r8(pi ? pool : NULL, x, k, T, scratch, &a);
            memset(y, 0xff, (size_t)(T + 1) * LDY * sizeof(float));
            eng_matmul_act_rows_q4_0r8(p, &a, y, LDY, 16, M - 8);
            for (int t = 0; t < T; t++) {
                assert_memory_equal(y + t * LDY + 16, want + t * LDY + 16, (M - 24) * sizeof(float));
                assert_true(isnan(y[t * LDY + 15]) && isnan(y[t * LDY + M - 8]));
            }
        }
        free(scratch);
        free(wq), free(p), free(x), free(xq), free(xd), free(xs8), free(want), free(y);
    }
    eng_pool_destroy(pool);
}

static void test_shapes(void **state)
{
    (void)state;
    assert_true(eng_q4_0r8_ok(8, 32));
    assert_true(eng_q4_0r8_ok(5632, 2048));
    assert_true(eng_q4_0r8_ok(8, 32 * ENG_GEMM_MAX_BLOCKS));
    assert_true(eng_q4_0r8_ok(12, 2048)); /* 8 rows repacked, 4 left in the file's layout */
    assert_false(eng_q4_0r8_ok(7, 2048));                         /* not one whole group */
    assert_false(eng_q4_0r8_ok(0, 2048));
    assert_false(eng_q4_0r8_ok(8, 48));                           /* not whole blocks */
    assert_false(eng_q4_0r8_ok(8, 32 * (ENG_GEMM_MAX_BLOCKS + 1))); /* past the stack arrays */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pack_layout),     cmocka_unit_test(test_kernels_match_q4_0),
        cmocka_unit_test(test_matmul_act_rows), cmocka_unit_test(test_prompt_kernel),
        cmocka_unit_test(test_shapes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
