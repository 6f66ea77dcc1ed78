/* The scalar reference kernels: dequantize, quantize (weights and activations) and the dot
 * product of every weight type with its activation type. Plain C for baseline x86-64; the
 * engine runs on these when the CPU lacks AVX2 (or WYE_NO_AVX2=1), and the tests compare the
 * AVX2 kernels against them. Dots accumulate in integers inside each block, as ggml does.
 * Any thread; no state. */
#include <math.h>
#include <pthread.h>

#include "local-engine/quant_internal.h"

/* Every half as a float (256 KiB), filled once by eng_kernels_ref: the branchy exact
 * conversion costs ~3 ns an element, too slow for F16 weights on CPUs without F16C. */
static float f16_table[1 << 16];
static pthread_once_t f16_table_once = PTHREAD_ONCE_INIT;

/* Exact half -> float for the kernels below (all reached through eng_kernels_ref). */
static inline float h2f(uint16_t h)
{
    return f16_table[h];
}

static void f16_table_fill(void)
{
    for (uint32_t h = 0; h < (1u << 16); h++) {
        f16_table[h] = eng_fp16_to_fp32((uint16_t)h);
    }
}

static float fabsmax(const float *x, int64_t n)
{
    float amax = 0.0f;
    for (int64_t i = 0; i < n; i++) {
        float a = fabsf(x[i]);
        amax = a > amax ? a : amax;
    }
    return amax;
}

/* The element with the largest magnitude, with its sign. */
static float signed_absmax(const float *x, int64_t n)
{
    float amax = 0.0f, max = 0.0f;
    for (int64_t i = 0; i < n; i++) {
        if (fabsf(x[i]) > amax) {
            amax = fabsf(x[i]);
            max = x[i];
        }
    }
    return max;
}

static int clampi(int v, int lo, int hi)
{
    return v < lo ? lo : (v > hi ? hi : v);
}

/* Round half to even (the default FP mode), like _mm256_round_ps in the AVX2 kernels; NaN
 * and infinities go to 0 so that garbage input never makes an out-of-range conversion. */
static int round_int(float v)
{
    if (!(fabsf(v) < 1e9f)) {
        return 0;
    }
    return (int)nearbyintf(v);
}

/* ---- F32, F16, BF16 ---- */

static void dequant_f32(const void *src, float *dst, int64_t n)
{
    memcpy(dst, src, (size_t)n * sizeof(float));
}

static void quant_f32(const float *src, void *dst, int64_t n)
{
    memcpy(dst, src, (size_t)n * sizeof(float));
}

static void dequant_f16(const void *src, float *dst, int64_t n)
{
    const uint16_t *h = src;
    for (int64_t i = 0; i < n; i++) {
        dst[i] = f16_table[h[i]];
    }
}

static void quant_f16(const float *src, void *dst, int64_t n)
{
    uint16_t *h = dst;
    for (int64_t i = 0; i < n; i++) {
        h[i] = eng_fp32_to_fp16(src[i]);
    }
}

static void dequant_bf16(const void *src, float *dst, int64_t n)
{
    const uint16_t *h = src;
    for (int64_t i = 0; i < n; i++) {
        dst[i] = eng_bf16_to_fp32(h[i]);
    }
}

static void quant_bf16(const float *src, void *dst, int64_t n)
{
    uint16_t *h = dst;
    for (int64_t i = 0; i < n; i++) {
        h[i] = eng_fp32_to_bf16(src[i]);
    }
}

/* ---- Q8_0, Q8_1 (also the activations of Q8_0/Q4_0/Q5_0 and Q4_1) ---- */

static void quant_q8_0(const float *x, void *dst, int64_t n)
{
    struct eng_block_q8_0 *y = dst;
    for (int64_t b = 0; b < n / ENG_QK; b++, x += ENG_QK) {
        float amax = fabsmax(x, ENG_QK);
        float d = amax / 127.0f;
        float id = d != 0.0f ? 127.0f / amax : 0.0f;
        y[b].d = eng_fp32_to_fp16(d);
        for (int j = 0; j < ENG_QK; j++) {
            y[b].qs[j] = (int8_t)clampi(round_int(x[j] * id), -127, 127);
        }
    }
}

static void dequant_q8_0(const void *src, float *dst, int64_t n)
{
    const struct eng_block_q8_0 *x = src;
    for (int64_t b = 0; b < n / ENG_QK; b++, dst += ENG_QK) {
        float d = h2f(x[b].d);
        for (int j = 0; j < ENG_QK; j++) {
            dst[j] = d * x[b].qs[j];
        }
    }
}

static void quant_q8_1(const float *x, void *dst, int64_t n)
{
    struct eng_block_q8_1 *y = dst;
    for (int64_t b = 0; b < n / ENG_QK; b++, x += ENG_QK) {
        float amax = fabsmax(x, ENG_QK);
        float d = amax / 127.0f;
        float id = d != 0.0f ? 127.0f / amax : 0.0f;
        int sum = 0;
        for (int j = 0; j < ENG_QK; j++) {
            y[b].qs[j] = (int8_t)clampi(round_int(x[j] * id), -127, 127);
            sum += y[b].qs[j];
        }
        y[b].d = eng_fp32_to_fp16(d);
        y[b].s = eng_fp32_to_fp16(d * (float)sum);
    }
}

static void dequant_q8_1(const void *src, float *dst, int64_t n)
{
    const struct eng_block_q8_1 *x = src;
    for (int64_t b = 0; b < n / ENG_QK; b++, dst += ENG_QK) {
        float d = h2f(x[b].d);
        for (int j = 0; j < ENG_QK; j++) {
            dst[j] = d * x[b].qs[j];
        }
    }
}

/* ---- Q4_0, Q4_1, Q5_0 ---- */

static void quant_q4_0(const float *x, void *dst, int64_t n)
{
    struct eng_block_q4_0 *y = dst;
    for (int64_t b = 0; b < n / ENG_QK; b++, x += ENG_QK) {
        /* the extreme element maps to -8 exactly; the other side clamps at +7 */
        float max = signed_absmax(x, ENG_QK);
        float d = max / -8.0f;
        float id = d != 0.0f ? 1.0f / d : 0.0f;
        y[b].d = eng_fp32_to_fp16(d);
        for (int j = 0; j < ENG_QK / 2; j++) {
            int q0 = clampi(round_int(x[j] * id) + 8, 0, 15);
            int q1 = clampi(round_int(x[j + ENG_QK / 2] * id) + 8, 0, 15);
            y[b].qs[j] = (uint8_t)(q0 | (q1 << 4));
        }
    }
}

static void dequant_q4_0(const void *src, float *dst, int64_t n)
{
    const struct eng_block_q4_0 *x = src;
    for (int64_t b = 0; b < n / ENG_QK; b++, dst += ENG_QK) {
        float d = h2f(x[b].d);
        for (int j = 0; j < ENG_QK / 2; j++) {
            dst[j] = d * ((x[b].qs[j] & 0xF) - 8);
            dst[j + ENG_QK / 2] = d * ((x[b].qs[j] >> 4) - 8);
        }
    }
}

static void quant_q4_1(const float *x, void *dst, int64_t n)
{
    struct eng_block_q4_1 *y = dst;
    for (int64_t b = 0; b < n / ENG_QK; b++, x += ENG_QK) {
        float min = x[0], max = x[0];
        for (int j = 1; j < ENG_QK; j++) {
            min = x[j] < min ? x[j] : min;
            max = x[j] > max ? x[j] : max;
        }
        float d = (max - min) / 15.0f;
        float id = d != 0.0f ? 1.0f / d : 0.0f;
        y[b].d = eng_fp32_to_fp16(d);
        y[b].m = eng_fp32_to_fp16(min);
        for (int j = 0; j < ENG_QK / 2; j++) {
            int q0 = clampi(round_int((x[j] - min) * id), 0, 15);
            int q1 = clampi(round_int((x[j + ENG_QK / 2] - min) * id), 0, 15);
            y[b].qs[j] = (uint8_t)(q0 | (q1 << 4));
        }
    }
}

static void dequant_q4_1(const void *src, float *dst, int64_t n)
{
    const struct eng_block_q4_1 *x = src;
    for (int64_t b = 0; b < n / ENG_QK; b++, dst += ENG_QK) {
        float d = h2f(x[b].d);
        float m = h2f(x[b].m);
        for (int j = 0; j < ENG_QK / 2; j++) {
            dst[j] = d * (x[b].qs[j] & 0xF) + m;
            dst[j + ENG_QK / 2] = d * (x[b].qs[j] >> 4) + m;
        }
    }
}

static void quant_q5_0(const float *x, void *dst, int64_t n)
{
    struct eng_block_q5_0 *y = dst;
    for (int64_t b = 0; b < n / ENG_QK; b++, x += ENG_QK) {
        float max = signed_absmax(x, ENG_QK);
        float d = max / -16.0f;
        float id = d != 0.0f ? 1.0f / d : 0.0f;
        y[b].d = eng_fp32_to_fp16(d);
        uint32_t qh = 0;
        for (int j = 0; j < ENG_QK / 2; j++) {
            int q0 = clampi(round_int(x[j] * id) + 16, 0, 31);
            int q1 = clampi(round_int(x[j + ENG_QK / 2] * id) + 16, 0, 31);
            y[b].qs[j] = (uint8_t)((q0 & 0xF) | ((q1 & 0xF) << 4));
            qh |= (uint32_t)(q0 >> 4) << j;
            qh |= (uint32_t)(q1 >> 4) << (j + ENG_QK / 2);
        }
        for (int i = 0; i < 4; i++) {
            y[b].qh[i] = (uint8_t)(qh >> (8 * i));
        }
    }
}

static uint32_t load_qh(const uint8_t *qh)
{
    return (uint32_t)qh[0] | ((uint32_t)qh[1] << 8) | ((uint32_t)qh[2] << 16) |
           ((uint32_t)qh[3] << 24);
}

static void dequant_q5_0(const void *src, float *dst, int64_t n)
{
    const struct eng_block_q5_0 *x = src;
    for (int64_t b = 0; b < n / ENG_QK; b++, dst += ENG_QK) {
        float d = h2f(x[b].d);
        uint32_t qh = load_qh(x[b].qh);
        for (int j = 0; j < ENG_QK / 2; j++) {
            int q0 = (x[b].qs[j] & 0xF) | (int)(((qh >> j) & 1u) << 4);
            int q1 = (x[b].qs[j] >> 4) | (int)(((qh >> (j + 16)) & 1u) << 4);
            dst[j] = d * (q0 - 16);
            dst[j + ENG_QK / 2] = d * (q1 - 16);
        }
    }
}

static void quant_q5_1(const float *x, void *dst, int64_t n)
{
    struct eng_block_q5_1 *y = dst;
    for (int64_t b = 0; b < n / ENG_QK; b++, x += ENG_QK) {
        float min = x[0], max = x[0];
        for (int j = 1; j < ENG_QK; j++) {
            min = x[j] < min ? x[j] : min;
            max = x[j] > max ? x[j] : max;
        }
        float d = (max - min) / 31.0f;
        float id = d != 0.0f ? 1.0f / d : 0.0f;
        y[b].d = eng_fp32_to_fp16(d);
        y[b].m = eng_fp32_to_fp16(min);
        uint32_t qh = 0;
        for (int j = 0; j < ENG_QK / 2; j++) {
            int q0 = clampi(round_int((x[j] - min) * id), 0, 31);
            int q1 = clampi(round_int((x[j + ENG_QK / 2] - min) * id), 0, 31);
            y[b].qs[j] = (uint8_t)((q0 & 0xF) | ((q1 & 0xF) << 4));
            qh |= (uint32_t)(q0 >> 4) << j;
            qh |= (uint32_t)(q1 >> 4) << (j + ENG_QK / 2);
        }
        for (int i = 0; i < 4; i++) {
            y[b].qh[i] = (uint8_t)(qh >> (8 * i));
        }
    }
}

static void dequant_q5_1(const void *src, float *dst, int64_t n)
{
    const struct eng_block_q5_1 *x = src;
    for (int64_t b = 0; b < n / ENG_QK; b++, dst += ENG_QK) {
        float d = h2f(x[b].d), m = h2f(x[b].m);
        uint32_t qh = load_qh(x[b].qh);
        for (int j = 0; j < ENG_QK / 2; j++) {
            int q0 = (x[b].qs[j] & 0xF) | (int)(((qh >> j) & 1u) << 4);
            int q1 = (x[b].qs[j] >> 4) | (int)(((qh >> (j + 16)) & 1u) << 4);
            dst[j] = d * q0 + m;
            dst[j + ENG_QK / 2] = d * q1 + m;
        }
    }
}

/* ---- Q8_K (activations of the K-quants) ---- */

static void quant_q8_K(const float *x, void *dst, int64_t n)
{
    struct eng_block_q8_K *y = dst;
    for (int64_t b = 0; b < n / ENG_QK_K; b++, x += ENG_QK_K) {
        float amax = fabsmax(x, ENG_QK_K);
        float id = amax != 0.0f ? 127.0f / amax : 0.0f;
        y[b].d = amax / 127.0f;
        for (int g = 0; g < ENG_QK_K / 16; g++) {
            int sum = 0;
            for (int j = 16 * g; j < 16 * g + 16; j++) {
                y[b].qs[j] = (int8_t)clampi(round_int(x[j] * id), -127, 127);
                sum += y[b].qs[j];
            }
            y[b].bsums[g] = (int16_t)sum;
        }
    }
}

static void dequant_q8_K(const void *src, float *dst, int64_t n)
{
    const struct eng_block_q8_K *x = src;
    for (int64_t b = 0; b < n / ENG_QK_K; b++, dst += ENG_QK_K) {
        for (int j = 0; j < ENG_QK_K; j++) {
            dst[j] = x[b].d * x[b].qs[j];
        }
    }
}

/* ---- Q4_K, Q5_K: 8 sub-blocks of 32, x = d*sc*q - dmin*m ---- */

static void pack_k_scales(const uint8_t ls[8], const uint8_t lm[8], uint8_t out[12])
{
    for (int j = 0; j < 4; j++) {
        out[j] = (uint8_t)((ls[j] & 63) | ((ls[j + 4] >> 4) << 6));
        out[j + 4] = (uint8_t)((lm[j] & 63) | ((lm[j + 4] >> 4) << 6));
        out[j + 8] = (uint8_t)((ls[j + 4] & 0xF) | ((lm[j + 4] & 0xF) << 4));
    }
}

/* Chooses the packed sub-block scales/mins of one super-block for nmax+1 levels and writes
 * the levels (0..nmax) into L. Scales are rounded up so a sub-block's range stays covered. */
static void quant_k_asym(const float *x, int nmax, uint16_t *d_out, uint16_t *dmin_out,
                         uint8_t scales[12], uint8_t L[ENG_QK_K])
{
    float sc[8], mn[8], max_sc = 0.0f, max_mn = 0.0f;
    for (int j = 0; j < 8; j++) {
        const float *xs = x + 32 * j;
        float lo = xs[0], hi = xs[0];
        for (int l = 1; l < 32; l++) {
            lo = xs[l] < lo ? xs[l] : lo;
            hi = xs[l] > hi ? xs[l] : hi;
        }
        lo = lo > 0.0f ? 0.0f : lo; /* the min is stored as a non-negative offset */
        sc[j] = (hi - lo) / (float)nmax;
        mn[j] = -lo;
        max_sc = sc[j] > max_sc ? sc[j] : max_sc;
        max_mn = mn[j] > max_mn ? mn[j] : max_mn;
    }
    uint16_t dh = eng_fp32_to_fp16(max_sc / 63.0f);
    uint16_t mh = eng_fp32_to_fp16(max_mn / 63.0f);
    float d = h2f(dh), dmin = h2f(mh);
    uint8_t ls[8], lm[8];
    for (int j = 0; j < 8; j++) {
        ls[j] = (uint8_t)(d > 0.0f ? clampi((int)ceilf(sc[j] / d - 0.01f), 0, 63) : 0);
        lm[j] = (uint8_t)(dmin > 0.0f ? clampi(round_int(mn[j] / dmin), 0, 63) : 0);
        float s = d * ls[j], m = dmin * lm[j];
        float is = s > 0.0f ? 1.0f / s : 0.0f;
        for (int l = 0; l < 32; l++) {
            L[32 * j + l] = (uint8_t)clampi(round_int((x[32 * j + l] + m) * is), 0, nmax);
        }
    }
    *d_out = dh;
    *dmin_out = mh;
    pack_k_scales(ls, lm, scales);
}

static void quant_q4_K(const float *x, void *dst, int64_t n)
{
    struct eng_block_q4_K *y = dst;
    uint8_t L[ENG_QK_K];
    for (int64_t b = 0; b < n / ENG_QK_K; b++, x += ENG_QK_K) {
        quant_k_asym(x, 15, &y[b].d, &y[b].dmin, y[b].scales, L);
        for (int g = 0; g < 4; g++) {
            for (int l = 0; l < 32; l++) {
                y[b].qs[32 * g + l] = (uint8_t)(L[64 * g + l] | (L[64 * g + 32 + l] << 4));
            }
        }
    }
}

static void dequant_q4_K(const void *src, float *dst, int64_t n)
{
    const struct eng_block_q4_K *x = src;
    for (int64_t b = 0; b < n / ENG_QK_K; b++) {
        float d = h2f(x[b].d), dmin = h2f(x[b].dmin);
        const uint8_t *q = x[b].qs;
        for (int g = 0; g < 4; g++, q += 32) {
            uint8_t sc, m;
            eng_k_scale_min(2 * g, x[b].scales, &sc, &m);
            float d1 = d * sc, m1 = dmin * m;
            eng_k_scale_min(2 * g + 1, x[b].scales, &sc, &m);
            float d2 = d * sc, m2 = dmin * m;
            for (int l = 0; l < 32; l++) {
                *dst++ = d1 * (q[l] & 0xF) - m1;
            }
            for (int l = 0; l < 32; l++) {
                *dst++ = d2 * (q[l] >> 4) - m2;
            }
        }
    }
}

static void quant_q5_K(const float *x, void *dst, int64_t n)
{
    struct eng_block_q5_K *y = dst;
    uint8_t L[ENG_QK_K];
    for (int64_t b = 0; b < n / ENG_QK_K; b++, x += ENG_QK_K) {
        quant_k_asym(x, 31, &y[b].d, &y[b].dmin, y[b].scales, L);
        memset(y[b].qh, 0, sizeof(y[b].qh));
        for (int g = 0; g < 4; g++) {
            for (int l = 0; l < 32; l++) {
                int lo = L[64 * g + l], hi = L[64 * g + 32 + l];
                y[b].qs[32 * g + l] = (uint8_t)((lo & 0xF) | ((hi & 0xF) << 4));
                y[b].qh[l] |= (uint8_t)(((lo >> 4) << (2 * g)) | ((hi >> 4) << (2 * g + 1)));
            }
        }
    }
}

static void dequant_q5_K(const void *src, float *dst, int64_t n)
{
    const struct eng_block_q5_K *x = src;
    for (int64_t b = 0; b < n / ENG_QK_K; b++) {
        float d = h2f(x[b].d), dmin = h2f(x[b].dmin);
        const uint8_t *q = x[b].qs;
        for (int g = 0; g < 4; g++, q += 32) {
            uint8_t sc, m;
            eng_k_scale_min(2 * g, x[b].scales, &sc, &m);
            float d1 = d * sc, m1 = dmin * m;
            eng_k_scale_min(2 * g + 1, x[b].scales, &sc, &m);
            float d2 = d * sc, m2 = dmin * m;
            for (int l = 0; l < 32; l++) {
                int v = (q[l] & 0xF) | (((x[b].qh[l] >> (2 * g)) & 1) << 4);
                *dst++ = d1 * v - m1;
            }
            for (int l = 0; l < 32; l++) {
                int v = (q[l] >> 4) | (((x[b].qh[l] >> (2 * g + 1)) & 1) << 4);
                *dst++ = d2 * v - m2;
            }
        }
    }
}

/* ---- Q6_K: 16 sub-blocks of 16, x = d*sc*(q-32) ---- */

static void quant_q6_K(const float *x, void *dst, int64_t n)
{
    struct eng_block_q6_K *y = dst;
    uint8_t L[ENG_QK_K];
    for (int64_t b = 0; b < n / ENG_QK_K; b++, x += ENG_QK_K) {
        float sc[16], amax = 0.0f;
        for (int s = 0; s < 16; s++) {
            sc[s] = signed_absmax(x + 16 * s, 16) / -32.0f;
            amax = fabsf(sc[s]) > amax ? fabsf(sc[s]) : amax;
        }
        uint16_t dh = eng_fp32_to_fp16(amax / 127.0f);
        float d = h2f(dh);
        y[b].d = dh;
        for (int s = 0; s < 16; s++) {
            int ls = d > 0.0f ? clampi(round_int(sc[s] / d), -127, 127) : 0;
            y[b].scales[s] = (int8_t)ls;
            float e = d * (float)ls;
            float ie = e != 0.0f ? 1.0f / e : 0.0f;
            for (int l = 0; l < 16; l++) {
                L[16 * s + l] = (uint8_t)(clampi(round_int(x[16 * s + l] * ie), -32, 31) + 32);
            }
        }
        uint8_t *ql = y[b].ql, *qh = y[b].qh;
        for (int h = 0; h < ENG_QK_K; h += 128, ql += 64, qh += 32) {
            for (int l = 0; l < 32; l++) {
                const uint8_t *Lh = L + h;
                ql[l] = (uint8_t)((Lh[l] & 0xF) | ((Lh[l + 64] & 0xF) << 4));
                ql[l + 32] = (uint8_t)((Lh[l + 32] & 0xF) | ((Lh[l + 96] & 0xF) << 4));
                qh[l] = (uint8_t)((Lh[l] >> 4) | ((Lh[l + 32] >> 4) << 2) |
                                  ((Lh[l + 64] >> 4) << 4) | ((Lh[l + 96] >> 4) << 6));
            }
        }
    }
}

/* Unpacks the 256 6-bit levels (0..63) of a Q6_K block in element order. */
static void q6_K_levels(const struct eng_block_q6_K *x, uint8_t L[ENG_QK_K])
{
    const uint8_t *ql = x->ql, *qh = x->qh;
    for (int h = 0; h < ENG_QK_K; h += 128, ql += 64, qh += 32) {
        for (int l = 0; l < 32; l++) {
            L[h + l] = (uint8_t)((ql[l] & 0xF) | (((qh[l] >> 0) & 3) << 4));
            L[h + l + 32] = (uint8_t)((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4));
            L[h + l + 64] = (uint8_t)((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4));
            L[h + l + 96] = (uint8_t)((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4));
        }
    }
}

static void dequant_q6_K(const void *src, float *dst, int64_t n)
{
    const struct eng_block_q6_K *x = src;
    uint8_t L[ENG_QK_K];
    for (int64_t b = 0; b < n / ENG_QK_K; b++, dst += ENG_QK_K) {
        float d = h2f(x[b].d);
        q6_K_levels(&x[b], L);
        for (int j = 0; j < ENG_QK_K; j++) {
            dst[j] = d * x[b].scales[j / 16] * (L[j] - 32);
        }
    }
}

/* ---- dot products: one weight row against nx activation rows ---- */

static float dot1_f32(int64_t k, const void *w, const void *x)
{
    const float *a = w, *b = x;
    float s[4] = {0};
    int64_t i = 0;
    for (; i + 4 <= k; i += 4) {
        for (int l = 0; l < 4; l++) {
            s[l] += a[i + l] * b[i + l];
        }
    }
    for (; i < k; i++) {
        s[0] += a[i] * b[i];
    }
    return (s[0] + s[1]) + (s[2] + s[3]);
}

static float dot1_f16(int64_t k, const void *w, const void *x)
{
    const uint16_t *a = w;
    const float *b = x;
    float s[4] = {0};
    int64_t i = 0;
    for (; i + 4 <= k; i += 4) {
        for (int l = 0; l < 4; l++) {
            s[l] += f16_table[a[i + l]] * b[i + l];
        }
    }
    for (; i < k; i++) {
        s[0] += f16_table[a[i]] * b[i];
    }
    return (s[0] + s[1]) + (s[2] + s[3]);
}

static float dot1_bf16(int64_t k, const void *w, const void *x)
{
    const uint16_t *a = w;
    const float *b = x;
    float s[4] = {0};
    int64_t i = 0;
    for (; i + 4 <= k; i += 4) {
        for (int l = 0; l < 4; l++) {
            s[l] += eng_bf16_to_fp32(a[i + l]) * b[i + l];
        }
    }
    for (; i < k; i++) {
        s[0] += eng_bf16_to_fp32(a[i]) * b[i];
    }
    return (s[0] + s[1]) + (s[2] + s[3]);
}

static float dot1_q8_0(int64_t k, const void *w, const void *x)
{
    const struct eng_block_q8_0 *a = w;
    const struct eng_block_q8_0 *b = x;
    float sum = 0.0f;
    for (int64_t i = 0; i < k / ENG_QK; i++) {
        int sumi = 0;
        for (int j = 0; j < ENG_QK; j++) {
            sumi += a[i].qs[j] * b[i].qs[j];
        }
        sum += h2f(a[i].d) * h2f(b[i].d) * (float)sumi;
    }
    return sum;
}

static float dot1_q4_0(int64_t k, const void *w, const void *x)
{
    const struct eng_block_q4_0 *a = w;
    const struct eng_block_q8_0 *b = x;
    float sum = 0.0f;
    for (int64_t i = 0; i < k / ENG_QK; i++) {
        int sumi = 0;
        for (int j = 0; j < ENG_QK / 2; j++) {
            sumi += ((a[i].qs[j] & 0xF) - 8) * b[i].qs[j];
            sumi += ((a[i].qs[j] >> 4) - 8) * b[i].qs[j + ENG_QK / 2];
        }
        sum += h2f(a[i].d) * h2f(b[i].d) * (float)sumi;
    }
    return sum;
}

static float dot1_q4_1(int64_t k, const void *w, const void *x)
{
    const struct eng_block_q4_1 *a = w;
    const struct eng_block_q8_1 *b = x;
    float sum = 0.0f;
    for (int64_t i = 0; i < k / ENG_QK; i++) {
        int sumi = 0;
        for (int j = 0; j < ENG_QK / 2; j++) {
            sumi += (a[i].qs[j] & 0xF) * b[i].qs[j];
            sumi += (a[i].qs[j] >> 4) * b[i].qs[j + ENG_QK / 2];
        }
        sum += h2f(a[i].d) * h2f(b[i].d) * (float)sumi +
               h2f(a[i].m) * h2f(b[i].s);
    }
    return sum;
}

static float dot1_q5_0(int64_t k, const void *w, const void *x)
{
    const struct eng_block_q5_0 *a = w;
    const struct eng_block_q8_0 *b = x;
    float sum = 0.0f;
    for (int64_t i = 0; i < k / ENG_QK; i++) {
        uint32_t qh = load_qh(a[i].qh);
        int sumi = 0;
        for (int j = 0; j < ENG_QK / 2; j++) {
            int q0 = ((a[i].qs[j] & 0xF) | (int)(((qh >> j) & 1u) << 4)) - 16;
            int q1 = ((a[i].qs[j] >> 4) | (int)(((qh >> (j + 16)) & 1u) << 4)) - 16;
            sumi += q0 * b[i].qs[j] + q1 * b[i].qs[j + ENG_QK / 2];
        }
        sum += h2f(a[i].d) * h2f(b[i].d) * (float)sumi;
    }
    return sum;
}

static float dot1_q5_1(int64_t k, const void *w, const void *x)
{
    const struct eng_block_q5_1 *a = w;
    const struct eng_block_q8_1 *b = x;
    float sum = 0.0f;
    for (int64_t i = 0; i < k / ENG_QK; i++) {
        uint32_t qh = load_qh(a[i].qh);
        int sumi = 0;
        for (int j = 0; j < ENG_QK / 2; j++) {
            int q0 = (a[i].qs[j] & 0xF) | (int)(((qh >> j) & 1u) << 4);
            int q1 = (a[i].qs[j] >> 4) | (int)(((qh >> (j + 16)) & 1u) << 4);
            sumi += q0 * b[i].qs[j] + q1 * b[i].qs[j + ENG_QK / 2];
        }
        sum += h2f(a[i].d) * h2f(b[i].d) * (float)sumi +
               h2f(a[i].m) * h2f(b[i].s);
    }
    return sum;
}

/* Q4_K and Q5_K share everything but the fifth bit. */
static float dot1_k_asym(int64_t k, const void *w, const void *x, int five)
{
    const struct eng_block_q8_K *b = x;
    float sum = 0.0f;
    for (int64_t i = 0; i < k / ENG_QK_K; i++) {
        const uint8_t *scales, *qs, *qh = NULL;
        uint16_t dh, mh;
        if (five) {
            const struct eng_block_q5_K *a = (const struct eng_block_q5_K *)w + i;
            scales = a->scales, qs = a->qs, qh = a->qh, dh = a->d, mh = a->dmin;
        } else {
            const struct eng_block_q4_K *a = (const struct eng_block_q4_K *)w + i;
            scales = a->scales, qs = a->qs, dh = a->d, mh = a->dmin;
        }
        int sumi = 0, summ = 0;
        for (int j = 0; j < 8; j++) {
            uint8_t sc, m;
            eng_k_scale_min(j, scales, &sc, &m);
            const int8_t *q8 = b[i].qs + 32 * j;
            const uint8_t *q = qs + 32 * (j / 2);
            int shift = (j & 1) ? 4 : 0;
            int s = 0, xs = 0;
            for (int l = 0; l < 32; l++) {
                int v = (q[l] >> shift) & 0xF;
                if (qh) {
                    v |= ((qh[l] >> j) & 1) << 4;
                }
                s += v * q8[l];
                xs += q8[l];
            }
            sumi += sc * s;
            summ += m * xs;
        }
        sum += b[i].d * (h2f(dh) * (float)sumi - h2f(mh) * (float)summ);
    }
    return sum;
}

static float dot1_q4_K(int64_t k, const void *w, const void *x)
{
    return dot1_k_asym(k, w, x, 0);
}

static float dot1_q5_K(int64_t k, const void *w, const void *x)
{
    return dot1_k_asym(k, w, x, 1);
}

static float dot1_q6_K(int64_t k, const void *w, const void *x)
{
    const struct eng_block_q6_K *a = w;
    const struct eng_block_q8_K *b = x;
    uint8_t L[ENG_QK_K];
    float sum = 0.0f;
    for (int64_t i = 0; i < k / ENG_QK_K; i++) {
        q6_K_levels(&a[i], L);
        int sumi = 0;
        for (int s = 0; s < 16; s++) {
            int t = 0;
            for (int l = 16 * s; l < 16 * s + 16; l++) {
                t += (L[l] - 32) * b[i].qs[l];
            }
            sumi += a[i].scales[s] * t;
        }
        sum += h2f(a[i].d) * b[i].d * (float)sumi;
    }
    return sum;
}

#define REF_DOT(name)                                                           \
    static void dot_##name(int64_t k, const void *w, const void *x, size_t x_stride, int nx,    \
                           float *out)                                                         \
    {                                                                                          \
        for (int j = 0; j < nx; j++) {                                                         \
            out[j] = dot1_##name(k, w, (const char *)x + (size_t)j * x_stride);                \
        }                                                                                      \
    }

REF_DOT(f32)
REF_DOT(f16)
REF_DOT(bf16)
REF_DOT(q8_0)
REF_DOT(q4_0)
REF_DOT(q4_1)
REF_DOT(q5_0)
REF_DOT(q5_1)
REF_DOT(q4_K)
REF_DOT(q5_K)
REF_DOT(q6_K)

/* Repacked Q4_0 (eng_block_q4_0x8): each (row, token) as a sum over blocks of
 * d_w * d_x * (exact integer dot), in block order. */
static void gemm_q4_0r8(int64_t k, const struct eng_block_q4_0x8 *w, int64_t n_rows,
                        const void *x, size_t x_stride, int nx, const float *xd,
                        const int32_t *xs8, float *y, int64_t ldy)
{
    (void)xd, (void)xs8; /* the plain integer dot needs neither */
    const int64_t nb = k / ENG_QK;
    for (int64_t g = 0; g < n_rows / 8; g++) {
        const struct eng_block_q4_0x8 *gb = w + g * nb;
        for (int j = 0; j < nx; j++) {
            const struct eng_block_q8_0 *xb =
                (const struct eng_block_q8_0 *)(const void *)((const char *)x + (size_t)j * x_stride);
            for (int r = 0; r < 8; r++) {
                float acc = 0.0f;
                for (int64_t i = 0; i < nb; i++) {
                    int32_t sum = 0;
                    for (int q = 0; q < 4; q++) {
                        for (int e = 0; e < 4; e++) {
                            uint8_t v = gb[i].qs[32 * q + 4 * r + e];
                            sum += ((v & 0x0F) - 8) * xb[i].qs[8 * q + e];
                            sum += ((v >> 4) - 8) * xb[i].qs[8 * q + 4 + e];
                        }
                    }
                    acc += h2f(gb[i].d[r]) * h2f(xb[i].d) * (float)sum;
                }
                y[(int64_t)j * ldy + g * 8 + r] = acc;
            }
        }
    }
}

static const struct eng_kernel_table ref_table = {
    .name = "scalar",
    .dequant =
        {
            [ENG_TYPE_F32] = dequant_f32,
            [ENG_TYPE_F16] = dequant_f16,
            [ENG_TYPE_BF16] = dequant_bf16,
            [ENG_TYPE_Q8_0] = dequant_q8_0,
            [ENG_TYPE_Q8_1] = dequant_q8_1,
            [ENG_TYPE_Q4_0] = dequant_q4_0,
            [ENG_TYPE_Q4_1] = dequant_q4_1,
            [ENG_TYPE_Q5_0] = dequant_q5_0,
            [ENG_TYPE_Q5_1] = dequant_q5_1,
            [ENG_TYPE_Q8_K] = dequant_q8_K,
            [ENG_TYPE_Q4_K] = dequant_q4_K,
            [ENG_TYPE_Q5_K] = dequant_q5_K,
            [ENG_TYPE_Q6_K] = dequant_q6_K,
        },
    .quant =
        {
            [ENG_TYPE_F32] = quant_f32,
            [ENG_TYPE_F16] = quant_f16,
            [ENG_TYPE_BF16] = quant_bf16,
            [ENG_TYPE_Q8_0] = quant_q8_0,
            [ENG_TYPE_Q8_1] = quant_q8_1,
            [ENG_TYPE_Q4_0] = quant_q4_0,
            [ENG_TYPE_Q4_1] = quant_q4_1,
            [ENG_TYPE_Q5_0] = quant_q5_0,
            [ENG_TYPE_Q5_1] = quant_q5_1,
            [ENG_TYPE_Q8_K] = quant_q8_K,
            [ENG_TYPE_Q4_K] = quant_q4_K,
            [ENG_TYPE_Q5_K] = quant_q5_K,
            [ENG_TYPE_Q6_K] = quant_q6_K,
        },
    .dot =
        {
            [ENG_TYPE_F32] = dot_f32,
            [ENG_TYPE_F16] = dot_f16,
            [ENG_TYPE_BF16] = dot_bf16,
            [ENG_TYPE_Q8_0] = dot_q8_0,
            [ENG_TYPE_Q4_0] = dot_q4_0,
            [ENG_TYPE_Q4_1] = dot_q4_1,
            [ENG_TYPE_Q5_0] = dot_q5_0,
            [ENG_TYPE_Q5_1] = dot_q5_1,
            [ENG_TYPE_Q4_K] = dot_q4_K,
            [ENG_TYPE_Q5_K] = dot_q5_K,
            [ENG_TYPE_Q6_K] = dot_q6_K,
        },
    .gemm_q4_0r8 = gemm_q4_0r8,
};

void eng_kernels_ref_fill(struct eng_kernel_table *t)
{
    *t = *eng_kernels_ref();
}

const struct eng_kernel_table *eng_kernels_ref(void)
{
    pthread_once(&f16_table_once, f16_table_fill);
    return &ref_table;
}
