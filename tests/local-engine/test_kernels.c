/* The tensor kernels: ggml block layouts decoded exactly as ggml defines them (hand-built
 * blocks with known values), exact F16/BF16 conversion, quantize->dequantize error within a
 * per-type bound on random, zero, large and constant rows, the AVX2 kernels agreeing with
 * the scalar reference, and eng_matmul on pools of 1-3 threads matching a naive float matmul
 * over the dequantized weights. Run twice by CTest: as is and with WYE_NO_AVX2=1. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "local-engine/gguf.h"
#include "local-engine/pool.h"
#include "local-engine/quant.h"
#include "local-engine/quant_internal.h"
#include "kernel_test_rng.h"

static const uint32_t weight_types[] = {
    ENG_TYPE_F32,  ENG_TYPE_F16,  ENG_TYPE_BF16, ENG_TYPE_Q8_0, ENG_TYPE_Q4_0, ENG_TYPE_Q4_1,
    ENG_TYPE_Q5_0, ENG_TYPE_Q5_1, ENG_TYPE_Q4_K, ENG_TYPE_Q5_K, ENG_TYPE_Q6_K,
};
#define N_WEIGHT_TYPES (sizeof(weight_types) / sizeof(weight_types[0]))

/* ---- deterministic data ---- */

static uint64_t rng_state = 0x9E3779B97F4A7C15ULL;

static uint64_t rng_next(void)
{
    return ktr_next(&rng_state);
}

static float rng_uniform(void) /* (0, 1) */
{
    return ((float)(rng_next() >> 40) + 0.5f) / 16777216.0f;
}

static float rng_normal(void)
{
    float u = rng_uniform(), v = rng_uniform();
    return sqrtf(-2.0f * logf(u)) * cosf(6.2831853f * v);
}

static void fill_normal(float *x, int64_t n, float sigma)
{
    for (int64_t i = 0; i < n; i++) {
        x[i] = sigma * rng_normal();
    }
}

static void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    assert_non_null(p);
    return p;
}

/* ---- ggml layouts, decoded from hand-built blocks ---- */

static void test_layout_32_blocks(void **state)
{
    (void)state;
    const struct eng_kernel_table *ref = eng_kernels_ref();
    float y[32];

    struct eng_block_q4_0 q4 = {.d = 0x4000}; /* 2.0 */
    for (int j = 0; j < 16; j++) {
        q4.qs[j] = (uint8_t)(j | ((15 - j) << 4));
    }
    ref->dequant[ENG_TYPE_Q4_0](&q4, y, 32);
    for (int j = 0; j < 16; j++) {
        assert_true(y[j] == 2.0f * (float)(j - 8));
        assert_true(y[j + 16] == 2.0f * (float)(7 - j));
    }

    struct eng_block_q4_1 q41 = {.d = 0x3800, .m = 0xC000}; /* 0.5, -2.0 */
    for (int j = 0; j < 16; j++) {
        q41.qs[j] = (uint8_t)(j | (3 << 4));
    }
    ref->dequant[ENG_TYPE_Q4_1](&q41, y, 32);
    for (int j = 0; j < 16; j++) {
        assert_true(y[j] == 0.5f * (float)j - 2.0f);
        assert_true(y[j + 16] == 0.5f * 3.0f - 2.0f);
    }

    /* Q5_0: qh bit j (little-endian) is the fifth bit of element j */
    struct eng_block_q5_0 q5 = {.d = 0x3C00, .qh = {0x01, 0x00, 0x02, 0x80}};
    for (int j = 0; j < 16; j++) {
        q5.qs[j] = 0x55; /* 5 in both nibbles */
    }
    ref->dequant[ENG_TYPE_Q5_0](&q5, y, 32);
    for (int j = 0; j < 32; j++) {
        int hi = (j == 0 || j == 17 || j == 31) ? 16 : 0;
        assert_true(y[j] == (float)(5 + hi - 16));
    }

    struct eng_block_q5_1 q51 = {.d = 0x3C00, .m = 0x3800, .qh = {0x00, 0x80, 0x00, 0x01}};
    for (int j = 0; j < 16; j++) {
        q51.qs[j] = (uint8_t)(j | ((15 - j) << 4));
    }
    ref->dequant[ENG_TYPE_Q5_1](&q51, y, 32);
    for (int j = 0; j < 16; j++) {
        assert_true(y[j] == (float)(j + (j == 15 ? 16 : 0)) + 0.5f);
        assert_true(y[j + 16] == (float)(15 - j + (j == 8 ? 16 : 0)) + 0.5f);
    }

    struct eng_block_q8_0 q8 = {.d = 0xBC00}; /* -1.0 */
    for (int j = 0; j < 32; j++) {
        q8.qs[j] = (int8_t)(j * 8 - 128);
    }
    ref->dequant[ENG_TYPE_Q8_0](&q8, y, 32);
    for (int j = 0; j < 32; j++) {
        assert_true(y[j] == -(float)(j * 8 - 128));
    }
}

static void test_layout_k_quants(void **state)
{
    (void)state;
    const struct eng_kernel_table *ref = eng_kernels_ref();
    float y[256];

    /* Q4_K scales: sub-blocks 0-3 keep 6 bits in bytes 0-3 (scales) and 4-7 (mins); 4-7 take
     * their low 4 bits from bytes 8-11 and their top 2 bits from the tops of bytes 0-7. */
    struct eng_block_q4_K k4 = {.d = 0x3C00, .dmin = 0x3800}; /* 1.0, 0.5 */
    int sc[8] = {1, 2, 3, 63, 17, 33, 48, 5}, mn[8] = {0, 1, 2, 3, 60, 20, 36, 7};
    for (int j = 0; j < 4; j++) {
        k4.scales[j] = (uint8_t)(sc[j] | ((sc[j + 4] >> 4) << 6));
        k4.scales[j + 4] = (uint8_t)(mn[j] | ((mn[j + 4] >> 4) << 6));
        k4.scales[j + 8] = (uint8_t)((sc[j + 4] & 0xF) | ((mn[j + 4] & 0xF) << 4));
    }
    for (int l = 0; l < 128; l++) {
        k4.qs[l] = (uint8_t)((l % 16) | ((15 - l % 16) << 4));
    }
    ref->dequant[ENG_TYPE_Q4_K](&k4, y, 256);
    for (int i = 0; i < 256; i++) {
        int g = i / 64, l = i % 32, hi = (i % 64) >= 32, s = 2 * g + hi;
        uint8_t byte = k4.qs[32 * g + l];
        int q = hi ? byte >> 4 : byte & 0xF;
        assert_true(fabsf(y[i] - (1.0f * sc[s] * q - 0.5f * mn[s])) < 1e-6f);
    }

    /* Q5_K: group g's low half takes bit 2g of qh[l], its high half bit 2g+1 */
    struct eng_block_q5_K k5 = {.d = 0x3C00, .dmin = 0x0000};
    memcpy(k5.scales, k4.scales, 12);
    for (int l = 0; l < 32; l++) {
        k5.qh[l] = (uint8_t)(l & 1 ? 0xAA : 0x05);
    }
    memset(k5.qs, 0x21, sizeof(k5.qs)); /* low nibble 1, high nibble 2 */
    ref->dequant[ENG_TYPE_Q5_K](&k5, y, 256);
    for (int i = 0; i < 256; i++) {
        int g = i / 64, l = i % 32, hi = (i % 64) >= 32, s = 2 * g + hi;
        int bit = (k5.qh[l] >> (2 * g + hi)) & 1;
        int q = (hi ? 2 : 1) + 16 * bit;
        assert_true(y[i] == (float)(sc[s] * q));
    }

    /* Q6_K: per 128, ql[l] holds elements l (low) and l+64 (high), ql[l+32] elements l+32 and
     * l+96; qh[l] holds their top 2 bits at shifts 0, 2, 4, 6; one int8 scale per 16. */
    struct eng_block_q6_K k6 = {.d = 0x3800}; /* 0.5 */
    uint8_t L[256];
    for (int i = 0; i < 256; i++) {
        L[i] = (uint8_t)((i * 37 + 11) % 64);
    }
    for (int h = 0; h < 2; h++) {
        for (int l = 0; l < 32; l++) {
            const uint8_t *Lh = L + 128 * h;
            k6.ql[64 * h + l] = (uint8_t)((Lh[l] & 0xF) | ((Lh[l + 64] & 0xF) << 4));
            k6.ql[64 * h + l + 32] = (uint8_t)((Lh[l + 32] & 0xF) | ((Lh[l + 96] & 0xF) << 4));
            k6.qh[32 * h + l] = (uint8_t)((Lh[l] >> 4) | ((Lh[l + 32] >> 4) << 2) |
                                          ((Lh[l + 64] >> 4) << 4) | ((Lh[l + 96] >> 4) << 6));
        }
    }
    for (int s = 0; s < 16; s++) {
        k6.scales[s] = (int8_t)(s * 17 - 128);
    }
    ref->dequant[ENG_TYPE_Q6_K](&k6, y, 256);
    for (int i = 0; i < 256; i++) {
        assert_true(y[i] == 0.5f * (float)k6.scales[i / 16] * (float)(L[i] - 32));
    }
}

/* ---- F16 / BF16 ---- */

static void test_fp16_exact(void **state)
{
    (void)state;
    /* every non-NaN half survives half -> float -> half */
    for (uint32_t h = 0; h < 65536; h++) {
        float f = eng_fp16_to_fp32((uint16_t)h);
        if (isnan(f)) {
            assert_true((h & 0x7c00) == 0x7c00 && (h & 0x3ff) != 0);
            continue;
        }
        assert_int_equal(eng_fp32_to_fp16(f), h);
    }
    /* the scalar kernels' lookup table holds the same values */
    static uint16_t all[65536];
    static float f[65536];
    for (uint32_t h = 0; h < 65536; h++) {
        all[h] = (uint16_t)h;
    }
    eng_kernels_ref()->dequant[ENG_TYPE_F16](all, f, 65536);
    for (uint32_t h = 0; h < 65536; h++) {
        float want = eng_fp16_to_fp32((uint16_t)h);
        assert_memory_equal(&f[h], &want, sizeof(float));
    }
    assert_true(eng_fp16_to_fp32(0x3C00) == 1.0f);
    assert_true(eng_fp16_to_fp32(0x0001) == 5.9604644775390625e-8f);
    assert_true(eng_fp16_to_fp32(0x7BFF) == 65504.0f);
    assert_int_equal(eng_fp32_to_fp16(65519.0f), 0x7BFF);
    assert_int_equal(eng_fp32_to_fp16(65520.0f), 0x7C00); /* ties to even: overflow */
    assert_int_equal(eng_fp32_to_fp16(-1e10f), 0xFC00);
    assert_int_equal(eng_fp32_to_fp16(2.98023224e-8f), 0x0000); /* 2^-25: tie to even 0 */
    assert_int_equal(eng_fp32_to_fp16(2.98023259e-8f), 0x0001); /* just above */
    assert_int_equal(eng_fp32_to_fp16(1.0f + 1.0f / 2048), 0x3C00); /* tie to even */
    assert_int_equal(eng_fp32_to_fp16(1.0f + 3.0f / 2048), 0x3C02);
    assert_true(isnan(eng_fp16_to_fp32(eng_fp32_to_fp16(NAN))));
    assert_int_equal(eng_fp32_to_bf16(1.0f), 0x3F80);
    assert_int_equal(eng_fp32_to_bf16(1.00390625f), 0x3F80); /* tie to even */
    assert_int_equal(eng_fp32_to_bf16(1.01171875f), 0x3F82);
    assert_true(eng_bf16_to_fp32(0xC000) == -2.0f);
    assert_true(isnan(eng_bf16_to_fp32(eng_fp32_to_bf16(NAN))));
}

/* The F16C conversions in the AVX2 table must match the scalar ones bit for bit. */
static void test_fp16_avx2_matches_scalar(void **state)
{
    (void)state;
    if (!eng_cpu_has_avx2()) {
        skip();
    }
    const struct eng_kernel_table *ref = eng_kernels_ref(), *avx = eng_kernels_avx2();
    enum { N = 4099 };
    float *x = xmalloc(N * sizeof(float));
    uint16_t *a = xmalloc(N * 2), *b = xmalloc(N * 2);
    for (int i = 0; i < N; i++) {
        uint32_t bits = (uint32_t)rng_next();
        memcpy(&x[i], &bits, 4);
        if (isnan(x[i]) || i % 3 == 0) {
            x[i] = rng_normal() * powf(2.0f, (float)(i % 50) - 30.0f); /* near the half range */
        }
    }
    x[0] = 65520.0f, x[1] = -65519.0f, x[2] = 2.98023224e-8f, x[3] = 0.0f, x[4] = -0.0f;
    x[5] = INFINITY, x[6] = 6.0975552e-5f; /* near the smallest normal */
    ref->quant[ENG_TYPE_F16](x, a, N);
    avx->quant[ENG_TYPE_F16](x, b, N);
    assert_memory_equal(a, b, N * 2);
    float *fa = xmalloc(N * sizeof(float)), *fb = xmalloc(N * sizeof(float));
    for (int i = 0; i < N; i++) {
        a[i] = (uint16_t)rng_next();
        if ((a[i] & 0x7c00) == 0x7c00) {
            a[i] &= 0xbfff; /* no NaN/inf: their payloads are compared elsewhere */
        }
    }
    ref->dequant[ENG_TYPE_F16](a, fa, N);
    avx->dequant[ENG_TYPE_F16](a, fb, N);
    assert_memory_equal(fa, fb, N * sizeof(float));
    ref->dequant[ENG_TYPE_BF16](a, fa, N);
    avx->dequant[ENG_TYPE_BF16](a, fb, N);
    assert_memory_equal(fa, fb, N * sizeof(float));
    free(x), free(a), free(b), free(fa), free(fb);
}

/* ---- quantize -> dequantize error ---- */

/* Largest error allowed per element, as a fraction of the largest magnitude in the element's
 * block (32 elements; the 256-element super-block for the K-quants):
 *  Q8_0/Q8_1: half a step (amax/254) plus the fp16 rounding of the scale (2^-11 * amax).
 *  Q8_K: half a step; the scale is a float.
 *  Q4_0: the extreme maps to -8 exactly, an opposite extreme clamps at +7: one step amax/8.
 *  Q5_0: likewise amax/16.
 *  Q4_1: half of (max-min)/15 <= amax/15, plus fp16 rounding of d and m.
 *  Q5_1: likewise amax/31.
 *  Q4_K: half of a sub-block step (range <= 2A over 15 levels, scale rounded up by at most
 *        A*2/15/63) plus half a 6-bit min step (A/126) that may push a value into the clamp:
 *        0.0677A + 0.0079A.
 *  Q5_K: the same with 31 levels: 0.0328A + 0.0079A.
 *  Q6_K: a 16-element sub-block's extreme maps to -32, the opposite extreme clamps at 31
 *        (amax_s/32 <= A/32), plus the 8-bit scale rounding (32 * A/(32*127)/2 = A/254).
 * F32 is exact; F16/BF16 are checked against their relative precision instead. */
static double max_err_frac(uint32_t type)
{
    switch (type) {
    case ENG_TYPE_Q8_0:
    case ENG_TYPE_Q8_1:
        return 1.0 / 254 + 1.0 / 2048 + 1e-6;
    case ENG_TYPE_Q8_K:
        return 1.0 / 254 + 1e-6;
    case ENG_TYPE_Q4_0:
        return 1.0 / 8 + 1.0 / 1024;
    case ENG_TYPE_Q5_0:
        return 1.0 / 16 + 1.0 / 1024;
    case ENG_TYPE_Q4_1:
        return 1.0 / 15 + 1.0 / 256;
    case ENG_TYPE_Q5_1:
        return 1.0 / 31 + 1.0 / 256;
    case ENG_TYPE_Q4_K:
        return 0.0677 + 0.0079 + 0.004;
    case ENG_TYPE_Q5_K:
        return 0.0328 + 0.0079 + 0.004;
    case ENG_TYPE_Q6_K:
        return 1.0 / 32 + 1.0 / 254 + 0.001;
    default:
        return 0.0;
    }
}

/* fp16 scales of tiny blocks are subnormal halves, exact only to 2^-25 absolute: each level
 * (times each 6/8-bit sub-scale) can add that much on top of max_err_frac. */
static double abs_err(uint32_t type)
{
    const double h = 2.98023224e-8; /* 2^-25 */
    switch (type) {
    case ENG_TYPE_Q8_0:
    case ENG_TYPE_Q8_1:
        return 128 * h;
    case ENG_TYPE_Q4_0:
    case ENG_TYPE_Q4_1:
        return 17 * h;
    case ENG_TYPE_Q5_0:
    case ENG_TYPE_Q5_1:
        return 33 * h;
    case ENG_TYPE_Q4_K:
        return 64 * 16 * h + 64 * h;
    case ENG_TYPE_Q5_K:
        return 64 * 32 * h + 64 * h;
    case ENG_TYPE_Q6_K:
        return 128 * 32 * h;
    default:
        return 0.0;
    }
}

/* Relative RMSE on unit normal data: a uniform rounding error of step s has RMS s/sqrt(12);
 * with ~2.1 sigma block extremes, Q4_0's step is ~0.27 sigma (0.077), Q4_1/Q4_K similar,
 * Q5_0/Q5_K half that, Q6_K ~0.06 sigma steps (0.017), Q8 ~0.017 sigma steps (0.005).
 * The bounds sit 15-30% above those estimates (and above what the fixed seed measures). */
static double rmse_bound(uint32_t type)
{
    switch (type) {
    case ENG_TYPE_F32:
        return 0.0;
    case ENG_TYPE_F16:
        return 3e-4; /* 2^-11 relative at most, ~2^-12.6 RMS */
    case ENG_TYPE_BF16:
        return 2.5e-3; /* 2^-8 relative at most */
    case ENG_TYPE_Q8_0:
    case ENG_TYPE_Q8_1:
        return 0.0065;
    case ENG_TYPE_Q8_K:
        return 0.009; /* 256-element blocks: extremes near 3 sigma, RMS ~0.0068 */
    case ENG_TYPE_Q6_K:
        return 0.022;
    case ENG_TYPE_Q5_0:
    case ENG_TYPE_Q5_1:
    case ENG_TYPE_Q5_K:
        return 0.05;
    default: /* Q4_0, Q4_1, Q4_K: measured 0.078-0.090 */
        return 0.11;
    }
}

static int64_t err_block(uint32_t type)
{
    int64_t be = eng_type_block_elems(type);
    return be > 1 ? be : 1;
}

/* Quantizes x with table t, dequantizes and checks the per-type bounds. Returns RMSE/RMS. */
static double check_roundtrip(const struct eng_kernel_table *t, uint32_t type, const float *x,
                              int64_t n, const char *what)
{
    size_t rb = eng_type_row_bytes(type, n);
    assert_true(rb > 0);
    void *q = xmalloc(rb);
    float *y = xmalloc((size_t)n * sizeof(float));
    t->quant[type](x, q, n);
    t->dequant[type](q, y, n);
    double se = 0.0, ss = 0.0;
    int64_t be = err_block(type);
    for (int64_t b0 = 0; b0 < n; b0 += be) {
        double amax = 0.0;
        for (int64_t i = b0; i < b0 + be; i++) {
            amax = fmax(amax, fabs(x[i]));
        }
        for (int64_t i = b0; i < b0 + be; i++) {
            double e = fabs((double)y[i] - (double)x[i]);
            double bound;
            if (type == ENG_TYPE_F16) {
                bound = fabs(x[i]) * (1.0 / 2048) + 3e-8; /* half ulp, or subnormal step */
            } else if (type == ENG_TYPE_BF16) {
                bound = fabs(x[i]) * (1.0 / 256);
            } else {
                bound = amax * max_err_frac(type) + abs_err(type);
            }
            if (!(e <= bound)) {
                print_error("%s %s n=%lld: element %lld: %g -> %g (bound %g)\n",
                            eng_type_name(type), what, (long long)n, (long long)i, x[i], y[i],
                            bound);
                fail();
            }
            se += e * e;
            ss += (double)x[i] * x[i];
        }
    }
    free(q);
    free(y);
    return ss > 0.0 ? sqrt(se / ss) : sqrt(se);
}

static const uint32_t all_quant_types[] = {
    ENG_TYPE_F32,  ENG_TYPE_F16,  ENG_TYPE_BF16, ENG_TYPE_Q8_0, ENG_TYPE_Q8_1,
    ENG_TYPE_Q8_K, ENG_TYPE_Q4_0, ENG_TYPE_Q4_1, ENG_TYPE_Q5_0, ENG_TYPE_Q5_1,
    ENG_TYPE_Q4_K, ENG_TYPE_Q5_K, ENG_TYPE_Q6_K,
};

static void roundtrip_all(const struct eng_kernel_table *t)
{
    enum { N = 4096 };
    float *x = xmalloc(N * sizeof(float));
    for (size_t ti = 0; ti < sizeof(all_quant_types) / sizeof(all_quant_types[0]); ti++) {
        uint32_t type = all_quant_types[ti];
        fill_normal(x, N, 1.0f);
        double r = check_roundtrip(t, type, x, N, "normal");
        if (r > rmse_bound(type)) {
            print_error("%s (%s): relative RMSE %g above %g\n", eng_type_name(type), t->name, r,
                        rmse_bound(type));
            fail();
        }
        memset(x, 0, N * sizeof(float));
        assert_true(check_roundtrip(t, type, x, N, "zeros") == 0.0);
        /* large magnitudes: scales near the top of the fp16 range for the quantized types */
        fill_normal(x, N, type == ENG_TYPE_F16 ? 8000.0f : 1500.0f);
        check_roundtrip(t, type, x, N, "large");
        for (int64_t i = 0; i < N; i++) {
            x[i] = i < N / 2 ? 0.37f : -5.25f;
        }
        check_roundtrip(t, type, x, N, "constant");
        /* blocks of very different magnitudes side by side */
        for (int64_t i = 0; i < N; i++) {
            x[i] = rng_normal() * ((i / 256) % 2 ? 1e-3f : 10.0f);
        }
        check_roundtrip(t, type, x, N, "mixed");
    }
    free(x);
}

static void test_roundtrip_scalar(void **state)
{
    (void)state;
    roundtrip_all(eng_kernels_ref());
}

static void test_roundtrip_active(void **state)
{
    (void)state;
    roundtrip_all(eng_kernels_active());
    /* the public entry points go to the same table */
    float x[256], y[256];
    uint8_t q[256];
    fill_normal(x, 256, 1.0f);
    eng_quantize_row(ENG_TYPE_Q4_K, x, q, 256);
    eng_dequantize_row(ENG_TYPE_Q4_K, q, y, 256);
    for (int i = 0; i < 256; i++) {
        assert_true(fabsf(x[i] - y[i]) < 0.5f);
    }
}

/* ---- AVX2 against the scalar reference ---- */

static const int64_t block_lengths[] = {32, 64, 256, 512, 4096};
static const int64_t float_lengths[] = {1, 7, 33, 256, 1000, 4099};

/* Compares every kernel of the two tables for weight type wt at row length k. */
static void compare_tables(const struct eng_kernel_table *ref, const struct eng_kernel_table *avx,
                           uint32_t wt, int64_t k)
{
    uint32_t at = eng_act_type(wt);
    size_t wrb = eng_type_row_bytes(wt, k), arb = eng_type_row_bytes(at, k);
    enum { ROWS = 5 };
    float *w = xmalloc((size_t)k * sizeof(float) * ROWS);
    float *x = xmalloc((size_t)k * sizeof(float) * ENG_DOT_NX);
    float *d1 = xmalloc((size_t)k * sizeof(float)), *d2 = xmalloc((size_t)k * sizeof(float));
    uint8_t *wq = xmalloc(wrb * ROWS), *xq1 = xmalloc(arb * ENG_DOT_NX),
            *xq2 = xmalloc(arb * ENG_DOT_NX);
    fill_normal(w, k * ROWS, 0.05f);
    fill_normal(x, k * ENG_DOT_NX, 1.0f);

    /* weights: both quantizers write the same bytes (F16C rounds as the scalar code does);
     * both dequantizers give the same floats */
    ref->quant[wt](w, wq, k);
    uint8_t *wq2 = xmalloc(wrb);
    avx->quant[wt](w, wq2, k);
    assert_memory_equal(wq, wq2, wrb);
    free(wq2);
    ref->dequant[wt](wq, d1, k);
    avx->dequant[wt](wq, d2, k);
    assert_memory_equal(d1, d2, (size_t)k * sizeof(float));
    for (int r = 1; r < ROWS; r++) {
        ref->quant[wt](w + r * k, wq + r * wrb, k);
    }

    /* activations: both quantizers give the same values (identical rounding) */
    for (int j = 0; j < ENG_DOT_NX; j++) {
        ref->quant[at](x + j * k, xq1 + j * arb, k);
        avx->quant[at](x + j * k, xq2 + j * arb, k);
        ref->dequant[at](xq1 + j * arb, d1, k);
        ref->dequant[at](xq2 + j * arb, d2, k);
        double se = 0.0, ss = 0.0;
        for (int64_t i = 0; i < k; i++) {
            se += ((double)d1[i] - d2[i]) * ((double)d1[i] - d2[i]);
            ss += (double)d1[i] * d1[i];
        }
        assert_true(se <= 1e-12 * ss);
    }

    /* dots: every nx, same activations, RMSE over all outputs vs their magnitude */
    double se = 0.0, ss = 0.0;
    for (int r = 0; r < ROWS; r++) {
        for (int nx = 1; nx <= ENG_DOT_NX; nx++) {
            float o1[ENG_DOT_NX], o2[ENG_DOT_NX];
            ref->dot[wt](k, wq + r * wrb, xq1, arb, nx, o1);
            avx->dot[wt](k, wq + r * wrb, xq1, arb, nx, o2);
            for (int j = 0; j < nx; j++) {
                /* summation order differs; integer parts are exact */
                double mag = 0.0;
                ref->dequant[wt](wq + r * wrb, d1, k);
                ref->dequant[at](xq1 + j * arb, d2, k);
                for (int64_t i = 0; i < k; i++) {
                    mag += fabs((double)d1[i] * d2[i]);
                }
                double e = fabs((double)o1[j] - o2[j]);
                if (!(e <= 2e-6 * mag + 1e-30)) {
                    print_error("%s k=%lld nx=%d row %d tok %d: ref %.9g avx2 %.9g\n",
                                eng_type_name(wt), (long long)k, nx, r, j, o1[j], o2[j]);
                    fail();
                }
                se += e * e;
                ss += (double)o1[j] * o1[j];
            }
        }
    }
    assert_true(se <= 1e-10 * ss + 1e-30);

    /* the two-row kernels give each row what the one-row reference gives */
    if (avx->dot2[wt]) {
        for (int nx = 1; nx <= ENG_DOT_NX; nx++) {
            float o2[2 * ENG_DOT_NX], o1[ENG_DOT_NX];
            avx->dot2[wt](k, wq + wrb, wrb, xq1, arb, nx, o2);
            for (int rr = 0; rr < 2; rr++) {
                ref->dot[wt](k, wq + (size_t)(1 + rr) * wrb, xq1, arb, nx, o1);
                ref->dequant[wt](wq + (size_t)(1 + rr) * wrb, d1, k);
                for (int j = 0; j < nx; j++) {
                    ref->dequant[at](xq1 + j * arb, d2, k);
                    double mag = 0.0;
                    for (int64_t i = 0; i < k; i++) {
                        mag += fabs((double)d1[i] * d2[i]);
                    }
                    double e = fabs((double)o1[j] - o2[rr * ENG_DOT_NX + j]);
                    assert_true(e <= 2e-6 * mag + 1e-30);
                }
            }
        }
    }
    free(w), free(x), free(d1), free(d2), free(wq), free(xq1), free(xq2);
}

static void test_avx2_matches_reference(void **state)
{
    (void)state;
    if (!eng_cpu_has_avx2()) {
        skip();
    }
    const struct eng_kernel_table *ref = eng_kernels_ref(), *avx = eng_kernels_avx2();
    for (size_t ti = 0; ti < N_WEIGHT_TYPES; ti++) {
        uint32_t wt = weight_types[ti];
        int64_t be = eng_type_block_elems(wt);
        if (be == 1) {
            for (size_t li = 0; li < sizeof(float_lengths) / sizeof(float_lengths[0]); li++) {
                compare_tables(ref, avx, wt, float_lengths[li]);
            }
        } else {
            for (size_t li = 0; li < sizeof(block_lengths) / sizeof(block_lengths[0]); li++) {
                if (block_lengths[li] % 256 == 0 || be == 32) {
                    compare_tables(ref, avx, wt, block_lengths[li]);
                }
            }
        }
    }
}

/* Weights a real file could hold but our quantizer never writes: every bit pattern. */
static void test_avx2_random_bits(void **state)
{
    (void)state;
    if (!eng_cpu_has_avx2()) {
        skip();
    }
    const struct eng_kernel_table *ref = eng_kernels_ref(), *avx = eng_kernels_avx2();
    enum { K = 512 };
    for (size_t ti = 0; ti < N_WEIGHT_TYPES; ti++) {
        uint32_t wt = weight_types[ti], at = eng_act_type(wt);
        if (eng_type_block_elems(wt) == 1) {
            continue; /* random float bits are mostly NaN/huge; covered above */
        }
        size_t wrb = eng_type_row_bytes(wt, K), arb = eng_type_row_bytes(at, K);
        uint8_t *wq = xmalloc(wrb), *xq = xmalloc(arb * 2);
        float x[2 * K];
        for (int rep = 0; rep < 20; rep++) {
            for (size_t i = 0; i < wrb; i++) {
                wq[i] = (uint8_t)rng_next();
            }
            /* keep the fp16 scales finite and modest so the sums are comparable */
            size_t bb = eng_type_block_bytes(wt);
            for (size_t b = 0; b < wrb; b += bb) {
                size_t off = wt == ENG_TYPE_Q6_K ? 208 : 0;
                int n_half = (wt == ENG_TYPE_Q4_1 || wt == ENG_TYPE_Q5_1 ||
                              wt == ENG_TYPE_Q4_K || wt == ENG_TYPE_Q5_K)
                                 ? 2
                                 : 1;
                for (int h = 0; h < n_half; h++) {
                    uint16_t v = (uint16_t)(0x2000 + rng_next() % 0x1800);
                    memcpy(wq + b + off + 2 * h, &v, 2);
                }
            }
            fill_normal(x, 2 * K, 1.0f);
            ref->quant[at](x, xq, K);
            ref->quant[at](x + K, xq + arb, K);
            float o1[2], o2[2];
            ref->dot[wt](K, wq, xq, arb, 2, o1);
            avx->dot[wt](K, wq, xq, arb, 2, o2);
            float wd[K], xd[K];
            ref->dequant[wt](wq, wd, K);
            for (int j = 0; j < 2; j++) {
                /* the integer block sums are exact; only the float summation order differs */
                ref->dequant[at](xq + j * arb, xd, K);
                double mag = 0.0;
                for (int i = 0; i < K; i++) {
                    mag += fabs((double)wd[i] * xd[i]);
                }
                if (!(fabs((double)o1[j] - o2[j]) <= 2e-6 * mag)) {
                    print_error("%s random bits rep %d tok %d: ref %.9g avx2 %.9g\n",
                                eng_type_name(wt), rep, j, o1[j], o2[j]);
                    fail();
                }
            }
        }
        free(wq), free(xq);
    }
}

/* ---- matmul against a naive float matmul ---- */

static void matmul_case(struct eng_pool *pool, uint32_t wt, int64_t m, int64_t k, int64_t n_tok)
{
    uint32_t at = eng_act_type(wt);
    size_t wrb = eng_type_row_bytes(wt, k);
    float *wf = xmalloc((size_t)(m * k) * sizeof(float));
    float *wd = xmalloc((size_t)(m * k) * sizeof(float));
    float *x = xmalloc((size_t)(n_tok * k) * sizeof(float));
    float *y = xmalloc((size_t)(n_tok * m) * sizeof(float));
    uint8_t *w = xmalloc(wrb * (size_t)m);
    void *scratch = xmalloc(eng_matmul_scratch_bytes(wt, k, n_tok));
    fill_normal(wf, m * k, 0.05f);
    fill_normal(x, n_tok * k, 1.0f);
    for (int64_t r = 0; r < m; r++) {
        eng_quantize_row(wt, wf + r * k, w + (size_t)r * wrb, k);
        eng_dequantize_row(wt, w + (size_t)r * wrb, wd + r * k, k);
    }
    memset(y, 0xff, (size_t)(n_tok * m) * sizeof(float)); /* NaN: every output must be set */
    eng_matmul(pool, wt, w, m, k, x, n_tok, y, scratch);

    int64_t ab = eng_type_block_elems(at);
    double q_err = at == ENG_TYPE_F32 ? 0.0 : 1.0 / 254 + 1.0 / 1024;
    for (int64_t t = 0; t < n_tok; t++) {
        for (int64_t r = 0; r < m; r++) {
            double want = 0.0, mag = 0.0, bound_q = 0.0;
            for (int64_t b0 = 0; b0 < k; b0 += ab) {
                double amax = 0.0, wsum = 0.0;
                for (int64_t i = b0; i < b0 + ab; i++) {
                    const double wi = wd[r * k + i], xi = x[t * k + i];
                    want += wi * xi;
                    mag += fabs(wi * xi);
                    amax = fmax(amax, fabs(xi));
                    wsum += fabs(wi);
                }
                /* activation quantization moves each x by at most amax * q_err */
                bound_q += wsum * amax * q_err;
            }
            double got = y[t * m + r];
            double bound = bound_q + 1e-5 * mag + 1e-6;
            if (!(fabs(got - want) <= bound)) {
                print_error("%s %d threads m=%lld k=%lld n_tok=%lld y[%lld][%lld] = %.7g, want "
                            "%.7g (bound %.3g)\n",
                            eng_type_name(wt), eng_pool_size(pool), (long long)m, (long long)k,
                            (long long)n_tok, (long long)t, (long long)r, got, want, bound);
                fail();
            }
        }
    }
    free(wf), free(wd), free(x), free(y), free(w), free(scratch);
}

static void test_matmul_pools(void **state)
{
    (void)state;
    static const int64_t n_toks[] = {1, 3, 8, 17};
    for (int nth = 1; nth <= 3; nth++) {
        struct eng_pool *pool = eng_pool_create(nth);
        assert_non_null(pool);
        for (size_t ti = 0; ti < N_WEIGHT_TYPES; ti++) {
            uint32_t wt = weight_types[ti];
            int64_t k = eng_type_block_elems(wt) == 256 ? 512 : 320;
            for (size_t ni = 0; ni < sizeof(n_toks) / sizeof(n_toks[0]); ni++) {
                matmul_case(pool, wt, 67, k, n_toks[ni]);
            }
        }
        /* enough rows for many chunks per thread */
        matmul_case(pool, ENG_TYPE_Q4_0, 700, 256, 5);
        eng_pool_destroy(pool);
    }
    matmul_case(NULL, ENG_TYPE_Q8_0, 9, 64, 2);
    matmul_case(NULL, ENG_TYPE_F16, 9, 13, 3); /* float rows need not fill a block */
}

/* eng_matmul_rows on a row range with a wider ldy writes only its range. */
static void test_matmul_rows_range(void **state)
{
    (void)state;
    enum { M = 40, K = 256, T = 6, LDY = 50 };
    float *wf = xmalloc(M * K * sizeof(float)), *x = xmalloc(T * K * sizeof(float));
    float y[T * LDY], y2[T * LDY];
    size_t wrb = eng_type_row_bytes(ENG_TYPE_Q6_K, K), arb = eng_act_row_bytes(ENG_TYPE_Q6_K, K);
    uint8_t *w = xmalloc(wrb * M), *xq = xmalloc(arb * T);
    fill_normal(wf, M * K, 0.1f);
    fill_normal(x, T * K, 1.0f);
    for (int r = 0; r < M; r++) {
        eng_quantize_row(ENG_TYPE_Q6_K, wf + r * K, w + r * wrb, K);
    }
    for (int t = 0; t < T; t++) {
        eng_act_quantize(ENG_TYPE_Q6_K, x + t * K, xq + t * arb, K);
    }
    for (int i = 0; i < T * LDY; i++) {
        y[i] = -12345.0f;
    }
    eng_matmul_rows(ENG_TYPE_Q6_K, w, wrb, xq, arb, K, T, y, LDY, 10, 30);
    eng_matmul_rows(ENG_TYPE_Q6_K, w, wrb, xq, arb, K, T, y2, LDY, 0, M);
    for (int t = 0; t < T; t++) {
        for (int r = 0; r < LDY; r++) {
            if (r >= 10 && r < 30) {
                assert_true(y[t * LDY + r] == y2[t * LDY + r]); /* same kernel, same tile */
            } else {
                assert_true(y[t * LDY + r] == -12345.0f);
            }
        }
    }
    free(wf), free(x), free(w), free(xq);
}

static void test_dispatch_and_types(void **state)
{
    (void)state;
    eng_kernels_init();
    eng_kernels_init();
    const char *forced = getenv("WYE_NO_AVX2");
    if (forced && strcmp(forced, "1") == 0) {
        assert_string_equal(eng_kernels_name(), "scalar");
    } else {
        assert_string_equal(eng_kernels_name(), eng_cpu_has_avx2() ? "avx2" : "scalar");
    }
    assert_int_equal(eng_act_type_of(ENG_TYPE_Q4_0), ENG_TYPE_Q8_0);
    assert_int_equal(eng_act_type_of(ENG_TYPE_Q4_1), ENG_TYPE_Q8_1);
    assert_int_equal(eng_act_type_of(ENG_TYPE_Q5_1), ENG_TYPE_Q8_1);
    assert_int_equal(eng_act_type_of(ENG_TYPE_Q5_K), ENG_TYPE_Q8_K);
    assert_int_equal(eng_act_type_of(ENG_TYPE_BF16), ENG_TYPE_F32);
    assert_int_equal(eng_act_row_bytes(ENG_TYPE_Q4_K, 512), 2 * 292);
    assert_int_equal(eng_act_row_bytes(ENG_TYPE_Q4_1, 64), 2 * 36);
    assert_int_equal(eng_act_row_bytes(ENG_TYPE_Q2_K, 256), 0); /* not supported */
    assert_true(eng_kernels_type_ok(ENG_TYPE_Q6_K, 512));
    assert_false(eng_kernels_type_ok(ENG_TYPE_Q6_K, 96));
    assert_false(eng_kernels_type_ok(ENG_TYPE_Q4_0, 33));
    assert_false(eng_kernels_type_ok(ENG_TYPE_Q3_K, 256));
    assert_false(eng_kernels_type_ok(99, 256));
    assert_true(eng_kernels_type_ok(ENG_TYPE_F16, 7));
    assert_false(eng_kernels_type_ok(ENG_TYPE_F32, 0));
}

/* Real files written by ggml's quantizer: every Q8_0 / Q4_0 matrix of stories260K decodes
 * to within the format's error bound of the same matrix in the F32 file, and a matmul with
 * the quantized file's weights matches the F32 one. A layout mismatch (nibble order, scale
 * position) would be off by whole multiples of the scale. */
static void compare_with_f32_file(const char *qname, uint32_t qtype)
{
    char path_q[512], path_f[512], err[256];
    snprintf(path_q, sizeof(path_q), "%s/models/%s", WYE_SHARED_DIR, qname);
    snprintf(path_f, sizeof(path_f), "%s/models/stories260K-f32.gguf", WYE_SHARED_DIR);
    struct eng_gguf *gq = NULL, *gf = NULL;
    if (eng_gguf_open(path_q, &gq, err, sizeof(err)) != WYE_OK ||
        eng_gguf_open(path_f, &gf, err, sizeof(err)) != WYE_OK) {
        print_error("cannot open the shared models (%s)\n", err);
        fail();
    }
    int n_checked = 0;
    for (int64_t ti = 0; ti < eng_gguf_n_tensors(gq); ti++) {
        const struct eng_gguf_tensor *tq = eng_gguf_tensor(gq, ti);
        if (tq->type != qtype) {
            continue;
        }
        char name[128];
        snprintf(name, sizeof(name), "%.*s", (int)tq->name.len, tq->name.p);
        const struct eng_gguf_tensor *tf = eng_gguf_find_tensor(gf, name);
        assert_non_null(tf);
        assert_int_equal(tf->type, ENG_TYPE_F32);
        int64_t k = tq->ne[0], m = tq->ne[1] * tq->ne[2] * tq->ne[3];
        assert_true(tf->ne[0] == k && tf->ne[1] * tf->ne[2] * tf->ne[3] == m);
        size_t rb = eng_type_row_bytes(qtype, k);
        float *row = xmalloc((size_t)k * sizeof(float));
        const float *wf = tf->data;
        for (int64_t r = 0; r < m; r++) {
            eng_dequantize_row(qtype, (const char *)tq->data + (size_t)r * rb, row, k);
            for (int64_t b0 = 0; b0 < k; b0 += 32) {
                double amax = 0.0;
                for (int64_t i = b0; i < b0 + 32; i++) {
                    amax = fmax(amax, fabs(wf[r * k + i]));
                }
                for (int64_t i = b0; i < b0 + 32; i++) {
                    double e = fabs((double)row[i] - wf[r * k + i]);
                    if (!(e <= amax * max_err_frac(qtype) + abs_err(qtype))) {
                        print_error("%s %s row %lld element %lld: %g, F32 file has %g\n", qname,
                                    name, (long long)r, (long long)i, row[i], wf[r * k + i]);
                        fail();
                    }
                }
            }
        }
        /* the matmul over the file's quantized rows against the F32 file's rows */
        enum { T = 5 };
        float *x = xmalloc((size_t)(T * k) * sizeof(float));
        float *yq = xmalloc((size_t)(T * m) * sizeof(float));
        float *yf = xmalloc((size_t)(T * m) * sizeof(float));
        void *scratch = xmalloc(eng_matmul_scratch_bytes(qtype, k, T));
        fill_normal(x, T * k, 1.0f);
        eng_matmul(NULL, qtype, tq->data, m, k, x, T, yq, scratch);
        eng_matmul(NULL, ENG_TYPE_F32, tf->data, m, k, x, T, yf, NULL);
        double se = 0.0, ss = 0.0;
        for (int64_t i = 0; i < T * m; i++) {
            se += ((double)yq[i] - yf[i]) * ((double)yq[i] - yf[i]);
            ss += (double)yf[i] * yf[i];
        }
        /* relative output RMSE: weight error (~0.09 for Q4_0, ~0.005 for Q8_0) plus the
         * activation quantization (~0.005) */
        assert_true(sqrt(se / ss) < (qtype == ENG_TYPE_Q4_0 ? 0.15 : 0.02));
        free(row), free(x), free(yq), free(yf), free(scratch);
        n_checked++;
    }
    assert_true(n_checked >= 5); /* the attention and FFN matrices of 5 layers at least */
    eng_gguf_close(gq);
    eng_gguf_close(gf);
}

static void test_real_gguf_q8_0(void **state)
{
    (void)state;
    compare_with_f32_file("stories260K-q8_0.gguf", ENG_TYPE_Q8_0);
}

static void test_real_gguf_q4_0(void **state)
{
    (void)state;
    compare_with_f32_file("stories260K-q4_0.gguf", ENG_TYPE_Q4_0);
}

static void test_membw(void **state)
{
    (void)state;
    struct eng_pool *pool = eng_pool_create(2);
    assert_non_null(pool);
    assert_true(eng_membw_measure(pool, 8u << 20) > 0.0);
    assert_true(eng_membw_measure(pool, 16) == 0.0); /* too small to split */
    eng_pool_destroy(pool);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dispatch_and_types),
        cmocka_unit_test(test_layout_32_blocks),
        cmocka_unit_test(test_layout_k_quants),
        cmocka_unit_test(test_fp16_exact),
        cmocka_unit_test(test_fp16_avx2_matches_scalar),
        cmocka_unit_test(test_roundtrip_scalar),
        cmocka_unit_test(test_roundtrip_active),
        cmocka_unit_test(test_avx2_matches_reference),
        cmocka_unit_test(test_avx2_random_bits),
        cmocka_unit_test(test_matmul_pools),
        cmocka_unit_test(test_matmul_rows_range),
        cmocka_unit_test(test_real_gguf_q8_0),
        cmocka_unit_test(test_real_gguf_q4_0),
        cmocka_unit_test(test_membw),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
