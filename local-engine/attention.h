/* The attention of the forward pass (forward.c), as static inline code included twice: by
 * forward.c for any CPU and by attention_avx2.c, compiled for AVX2/F16C (ATT_F16C defined),
 * for the CPUs whose kernels are AVX2. Every operation is an element-wise IEEE one written
 * with GCC/clang vector extensions and no contraction into FMA (-ffp-contract=off), so both builds
 * compute the same bits. */
#ifndef WYE_LOCAL_ENGINE_ATTENTION_H
#define WYE_LOCAL_ENGINE_ATTENTION_H

#include <math.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#ifdef ATT_F16C
#include <immintrin.h>
#endif

#include "local-engine/model_internal.h"
#include "local-engine/quant_internal.h"

/* Largest GQA group whose heads share one attention task. */
#define ATT_GROUP_MAX 32
/* Attention runs over a token's positions in chunks of this many: each chunk's softmax part
 * (exp(score - chunk max) * V summed, the max and the sum of the exps) is computed alone and
 * the parts merged in order, so the arithmetic depends on the positions only, never on how
 * the chunks were spread over tasks; up to one chunk it is the plain softmax. */
#define ATT_CHUNK 64
/* Up to this many tokens of a pass, when they have too few (token, KV head) tasks to keep
 * every thread busy, get one task per chunk instead (decoding one or two sequences). */
#define ATT_SPLIT_TOK_MAX 4
/* Floats of one chunk part of one head: the weighted sum of V, the max, the sum of exps. */
#define ATT_PART(hd) ((size_t)(hd) + 2)

/* 8 floats as one value (GCC/clang vector extension): element-wise IEEE operations, so a
 * lane computes exactly what a scalar float would; 2 SSE or 1 AVX register. */
typedef float v8f __attribute__((vector_size(32)));

/* Macros, not functions: passing 32-byte vectors by value has no fixed ABI without AVX. */
#define V8F_LOAD(v, p) memcpy(&(v), (p), sizeof(v8f))

typedef int32_t v8i __attribute__((vector_size(32)));
typedef uint32_t v8u __attribute__((vector_size(32)));

#define V8F_SPLAT(c) ((v8f){(c), (c), (c), (c), (c), (c), (c), (c)})

typedef uint16_t v8u16 __attribute__((vector_size(16)));

/* 8 KV cache values from element idx of rows at base (F32, or F16 when f16) into *v. F16 is
 * widened exactly: with F16C where this header is compiled for it (attention_avx2.c), else
 * with integer and float vector operations (the exponent moved into place, then a multiply by
 * 2^112 rebiases it and normalizes subnormals; infinities and NaNs get the all-ones exponent
 * back). */
static inline __attribute__((always_inline)) void kv_load8(v8f *v, const void *base, size_t idx,
                                                           bool f16)
{
    if (!f16) {
        memcpy(v, (const float *)base + idx, sizeof(*v));
        return;
    }
#ifdef ATT_F16C
    __m256 r = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)((const uint16_t *)base + idx)));
    memcpy(v, &r, sizeof(r));
#else
    v8u16 h;
    memcpy(&h, (const uint16_t *)base + idx, sizeof(h));
    v8u w = __builtin_convertvector(h, v8u);
    v8u sign = (w & 0x8000u) << 16;
    v8f mag = (v8f)((w & 0x7fffu) << 13) * V8F_SPLAT(0x1p112f);
    v8u big = (v8u)(mag >= V8F_SPLAT(65536.0f)); /* was infinity or NaN */
    *v = (v8f)((v8u)mag | (big & (255u << 23)) | sign);
#endif
}

static inline __attribute__((always_inline)) float kv_at(const void *base, size_t idx, bool f16)
{
    return f16 ? eng_fp16_to_fp32(((const uint16_t *)base)[idx]) : ((const float *)base)[idx];
}

/* dst[0..8) = e^src[0..8), within 2 ulp of expf (Cephes' expf: x = n ln2 + r with |r| <=
 * ln2 / 2 in two steps, a degree-6 polynomial for e^r, 2^n from the exponent bits); inputs
 * are clamped to [-87.33, 88.37], so results stay normal and finite (NaN: unspecified).
 * Plain vector code with no contraction: the same bits from every caller and kernel path.
 * Softmax and SiLU call it 8 values at a time instead of libm's expf one at a time. */
static inline __attribute__((always_inline)) void exp8(float *dst, const float *src)
{
    v8f x, half = V8F_SPLAT(0.5f), lo = V8F_SPLAT(-87.33f), hi = V8F_SPLAT(88.37f);
    V8F_LOAD(x, src);
    v8i m = x < lo;
    x = (v8f)((m & (v8i)lo) | (~m & (v8i)x));
    m = x > hi;
    x = (v8f)((m & (v8i)hi) | (~m & (v8i)x));
    v8f t = x * V8F_SPLAT(1.44269504088896341f);
    v8i sign = (v8i)t & (v8i)V8F_SPLAT(-0.0f);
    v8i n = __builtin_convertvector(t + (v8f)(sign | (v8i)half), v8i); /* round half away */
    v8f fn = __builtin_convertvector(n, v8f);
    v8f r = x - fn * V8F_SPLAT(0.693359375f);
    r = r - fn * V8F_SPLAT(-2.12194440e-4f);
    v8f y = V8F_SPLAT(1.9875691500e-4f);
    y = y * r + V8F_SPLAT(1.3981999507e-3f);
    y = y * r + V8F_SPLAT(8.3334519073e-3f);
    y = y * r + V8F_SPLAT(4.1665795894e-2f);
    y = y * r + V8F_SPLAT(1.6666665459e-1f);
    y = y * r + V8F_SPLAT(5.0000001201e-1f);
    y = y * (r * r) + r + V8F_SPLAT(1.0f);
    v8f p2 = (v8f)(((v8u)n + 127u) << 23);
    y *= p2;
    memcpy(dst, &y, sizeof(y));
}

/* g[i] = silu(g[i]) * u[i] = g / (1 + e^-g) * u for i < n, 8 at a time (a short tail through
 * a padded copy, with the same arithmetic): SwiGLU's activation (forward.c), here so that
 * attention_avx2.c compiles it 8 floats per register too, with the same bits. */
static inline __attribute__((always_inline)) void silu_mul8(float *g, const float *u)
{
    v8f gv, uv, ev, ng;
    V8F_LOAD(gv, g);
    V8F_LOAD(uv, u);
    ng = -gv;
    exp8((float *)&ev, (const float *)&ng);
    gv = gv / (V8F_SPLAT(1.0f) + ev) * uv;
    memcpy(g, &gv, sizeof(gv));
}

static inline __attribute__((always_inline)) void silu_mul(float *g, const float *u, int64_t n)
{
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        silu_mul8(g + i, u + i);
    }
    if (i < n) {
        float gb[8] = {0}, ub[8] = {0};
        memcpy(gb, g + i, (size_t)(n - i) * sizeof(float));
        memcpy(ub, u + i, (size_t)(n - i) * sizeof(float));
        silu_mul8(gb, ub);
        memcpy(g + i, gb, (size_t)(n - i) * sizeof(float));
    }
}

/* A head's K or V rows in the cache (F32, or F16 when the f16 arguments say so). */
struct kv_rows {
    const void *base;
    size_t off; /* element index of the head's position 0 */
};

/* Dot product of q with the K row at element idx, in 8 interleaved partial sums (the
 * compiler turns them into SIMD lanes; a single running sum cannot be vectorised without
 * reassociating). The order is fixed, so the result does not depend on the batch or the
 * thread. */
static inline __attribute__((always_inline)) float dot_kv(const float *q, struct kv_rows k,
                                                          size_t idx, int32_t n, bool f16)
{
    float acc[8] = {0};
    int32_t i = 0;
    for (; i + 8 <= n; i += 8) {
        for (int j = 0; j < 8; j++) {
            acc[j] += q[i + j] * kv_at(k.base, idx + (size_t)(i + j), f16);
        }
    }
    float s = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    for (; i < n; i++) {
        s += q[i] * kv_at(k.base, idx + (size_t)i, f16);
    }
    return s;
}

struct att_job {
    struct eng_fwd *f;
    const struct eng_btok *toks;
    int32_t layer;
    int32_t heads_per_task; /* 1, or the GQA group size (<= f->att_group) */
    int32_t units;          /* heads / heads_per_task: the tasks of a token when not split */
    bool split; /* one task per (token, unit, chunk); f->att_left: each unit's chunks left */
    int64_t task0[ATT_SPLIT_TOK_MAX + 1]; /* split: the first task of each token */
};

#define V8F_SHUF(a, b, ...) __builtin_shufflevector(a, b, __VA_ARGS__)

/* dot_kv(q, k, idx + p * ks) for the 8 positions p = 0..7: each position's 8 lane sums as in
 * dot_kv, then all 8 reductions at once by transposing (2 + 1 + 1 rounds of shuffles and
 * adds instead of 8 horizontal sums), each position still getting ((a0 + a4) + (a1 + a5)) +
 * ((a2 + a6) + (a3 + a7)) and then the scalar tail, so the scores are dot_kv's bits. */
static inline __attribute__((always_inline)) void dot8(const float *q, struct kv_rows k, size_t idx,
                                                       size_t ks, int32_t n, float *out, bool f16)
{
    v8f a[8] = {{0}};
    int32_t i = 0;
    for (; i + 8 <= n; i += 8) {
        v8f qv;
        V8F_LOAD(qv, q + i);
        for (int u = 0; u < 8; u++) {
            v8f kv;
            kv_load8(&kv, k.base, idx + (size_t)u * ks + (size_t)i, f16);
            a[u] += qv * kv;
        }
    }
    /* [a_p0 + a_p4, a_p1 + a_p5, a_p2 + a_p6, a_p3 + a_p7] for positions 2j and 2j + 1 */
    v8f h[4];
    for (int j = 0; j < 4; j++) {
        h[j] = V8F_SHUF(a[2 * j], a[2 * j + 1], 0, 1, 2, 3, 8, 9, 10, 11) +
               V8F_SHUF(a[2 * j], a[2 * j + 1], 4, 5, 6, 7, 12, 13, 14, 15);
    }
    /* (x0 + x1), (x2 + x3) of those, positions 0-3 and 4-7 */
    v8f c0 = V8F_SHUF(h[0], h[1], 0, 2, 4, 6, 8, 10, 12, 14) +
             V8F_SHUF(h[0], h[1], 1, 3, 5, 7, 9, 11, 13, 15);
    v8f c1 = V8F_SHUF(h[2], h[3], 0, 2, 4, 6, 8, 10, 12, 14) +
             V8F_SHUF(h[2], h[3], 1, 3, 5, 7, 9, 11, 13, 15);
    v8f r =
        V8F_SHUF(c0, c1, 0, 2, 4, 6, 8, 10, 12, 14) + V8F_SHUF(c0, c1, 1, 3, 5, 7, 9, 11, 13, 15);
    float o[8];
    memcpy(o, &r, sizeof(o));
    for (; i < n; i++) {
        for (int u = 0; u < 8; u++) {
            o[u] += q[i] * kv_at(k.base, idx + (size_t)u * ks + (size_t)i, f16);
        }
    }
    memcpy(out, o, sizeof(o));
}

/* out[0..hd) = sum over positions p < n in order of w[p] * (V row at element idx + p * rs),
 * the weights already scaled: 64 outputs per pass in 8 registers when wide (AVX2), else 32
 * in 4; each output element sees the same multiplies and adds in the same order either
 * way. */
static inline __attribute__((always_inline)) void att_wsum(const float *w, struct kv_rows v,
                                                           size_t idx, size_t rs, int32_t n,
                                                           int32_t hd, bool wide, float *out,
                                                           bool f16)
{
    int32_t i = 0;
    /* Named accumulators, not an array: GCC kept an array of them in memory, and each
     * position's adds then waited on a store and a load (twice the time in cache). */
    for (; wide && i + 64 <= hd; i += 64) {
        v8f o0 = {0}, o1 = {0}, o2 = {0}, o3 = {0}, o4 = {0}, o5 = {0}, o6 = {0}, o7 = {0};
        for (int32_t p = 0; p < n; p++) {
            size_t r = idx + (size_t)p * rs + (size_t)i;
            v8f xv = V8F_SPLAT(w[p]), v_0, v_1, v_2, v_3, v_4, v_5, v_6, v_7;
            kv_load8(&v_0, v.base, r, f16);
            kv_load8(&v_1, v.base, r + 8, f16);
            kv_load8(&v_2, v.base, r + 16, f16);
            kv_load8(&v_3, v.base, r + 24, f16);
            kv_load8(&v_4, v.base, r + 32, f16);
            kv_load8(&v_5, v.base, r + 40, f16);
            kv_load8(&v_6, v.base, r + 48, f16);
            kv_load8(&v_7, v.base, r + 56, f16);
            o0 += xv * v_0;
            o1 += xv * v_1;
            o2 += xv * v_2;
            o3 += xv * v_3;
            o4 += xv * v_4;
            o5 += xv * v_5;
            o6 += xv * v_6;
            o7 += xv * v_7;
        }
        memcpy(out + i, &o0, sizeof(o0));
        memcpy(out + i + 8, &o1, sizeof(o1));
        memcpy(out + i + 16, &o2, sizeof(o2));
        memcpy(out + i + 24, &o3, sizeof(o3));
        memcpy(out + i + 32, &o4, sizeof(o4));
        memcpy(out + i + 40, &o5, sizeof(o5));
        memcpy(out + i + 48, &o6, sizeof(o6));
        memcpy(out + i + 56, &o7, sizeof(o7));
    }
    for (; i + 32 <= hd; i += 32) {
        v8f o0 = {0}, o1 = {0}, o2 = {0}, o3 = {0};
        for (int32_t p = 0; p < n; p++) {
            size_t r = idx + (size_t)p * rs + (size_t)i;
            v8f xv = V8F_SPLAT(w[p]), v0, v1, v2, v3;
            kv_load8(&v0, v.base, r, f16);
            kv_load8(&v1, v.base, r + 8, f16);
            kv_load8(&v2, v.base, r + 16, f16);
            kv_load8(&v3, v.base, r + 24, f16);
            o0 += xv * v0;
            o1 += xv * v1;
            o2 += xv * v2;
            o3 += xv * v3;
        }
        memcpy(out + i, &o0, sizeof(o0));
        memcpy(out + i + 8, &o1, sizeof(o1));
        memcpy(out + i + 16, &o2, sizeof(o2));
        memcpy(out + i + 24, &o3, sizeof(o3));
    }
    for (; i < hd; i++) {
        float acc = 0.0f;
        for (int32_t p = 0; p < n; p++) {
            acc += w[p] * kv_at(v.base, idx + (size_t)p * rs + (size_t)i, f16);
        }
        out[i] = acc;
    }
}

/* Attention of hpt query heads (q: hpt x hd, consecutive) sharing one KV head over the
 * positions [p0, p1) of its keys k and values v (rows of hd values), p1 - p0 <= ATT_CHUNK.
 * Each K row is read once for the group (GQA; V rows once per head, the later ones from
 * cache), and every head's arithmetic is the same whatever the group. Scores go 8 positions
 * at a time (dot8), the rest one by one. Into dst, one head every dst_hs floats: when whole (the
 * chunk is all the positions), the normalized output (hd); otherwise the chunk's part: the
 * unnormalized sum of exp(score - max) * v (hd), the max and the sum of the exps. sc is
 * scratch of hpt x ATT_CHUNK floats. */
static inline __attribute__((always_inline)) void
att_chunk(const float *q, struct kv_rows k, struct kv_rows v, int32_t hd, int32_t hpt, int32_t p0,
          int32_t p1, float *sc, bool wide, bool whole, float *dst, size_t dst_hs, bool f16)
{
    size_t rs = (size_t)hd;
    float scale = 1.0f / sqrtf((float)hd);
    int32_t n = p1 - p0;
    size_t k0 = k.off + (size_t)p0 * rs, v0 = v.off + (size_t)p0 * rs;
    float mx[ATT_GROUP_MAX];
    v8f mxv[ATT_GROUP_MAX], sv = V8F_SPLAT(scale);
    for (int32_t g = 0; g < hpt; g++) {
        mx[g] = -INFINITY;
        mxv[g] = V8F_SPLAT(-INFINITY);
    }
    int32_t p = 0;
    for (; p + 8 <= n; p += 8) {
        for (int32_t g = 0; g < hpt; g++) {
            float *a = sc + (size_t)g * ATT_CHUNK + p;
            v8f d;
            dot8(q + (size_t)g * (size_t)hd, k, k0 + (size_t)p * rs, rs, hd, a, f16);
            V8F_LOAD(d, a);
            d *= sv;
            memcpy(a, &d, sizeof(d));
            v8i gt = d > mxv[g];
            mxv[g] = (v8f)((gt & (v8i)d) | (~gt & (v8i)mxv[g]));
        }
    }
    /* The lanes' maxima, then the positions left one by one: the max of the scores. */
    for (int32_t g = 0; g < hpt; g++) {
        float l[8];
        memcpy(l, &mxv[g], sizeof(l));
        for (int u = 0; u < 8; u++) {
            mx[g] = l[u] > mx[g] ? l[u] : mx[g];
        }
    }
    for (; p < n; p++) {
        for (int32_t g = 0; g < hpt; g++) {
            float *a = sc + (size_t)g * ATT_CHUNK + p;
            *a = dot_kv(q + (size_t)g * (size_t)hd, k, k0 + (size_t)p * rs, hd, f16) * scale;
            mx[g] = *a > mx[g] ? *a : mx[g];
        }
    }
    for (int32_t g = 0; g < hpt; g++) {
        float *a = sc + (size_t)g * ATT_CHUNK;
        v8f mv = V8F_SPLAT(mx[g]), av;
        for (p = 0; p + 8 <= n; p += 8) {
            V8F_LOAD(av, a + p);
            av -= mv;
            exp8(a + p, (const float *)&av);
        }
        if (p < n) {
            float b[8] = {0};
            memcpy(b, a + p, (size_t)(n - p) * sizeof(float));
            V8F_LOAD(av, b);
            av -= mv;
            exp8(b, (const float *)&av);
            memcpy(a + p, b, (size_t)(n - p) * sizeof(float));
        }
    }
    /* Each head's sum of its exps in position order, four heads' sums side by side (a
     * fifth and later head beyond hpt repeats the last one, unused). */
    float sums[ATT_GROUP_MAX + 3];
    for (int32_t g0 = 0; g0 < hpt; g0 += 4) {
        const float *r[4];
        for (int j = 0; j < 4; j++) {
            r[j] = sc + (size_t)(g0 + j < hpt ? g0 + j : hpt - 1) * ATT_CHUNK;
        }
        float s0 = 0.0f, s1 = 0.0f, s2 = 0.0f, s3 = 0.0f;
        for (p = 0; p < n; p++) {
            s0 += r[0][p];
            s1 += r[1][p];
            s2 += r[2][p];
            s3 += r[3][p];
        }
        sums[g0] = s0;
        sums[g0 + 1] = s1;
        sums[g0 + 2] = s2;
        sums[g0 + 3] = s3;
    }
    for (int32_t g = 0; g < hpt; g++) {
        float *a = sc + (size_t)g * ATT_CHUNK, *d = dst + (size_t)g * dst_hs;
        if (whole) { /* the weights times 1 / sum, as the outputs' plain softmax */
            float inv = 1.0f / sums[g];
            v8f iv = V8F_SPLAT(inv), av;
            for (p = 0; p + 8 <= n; p += 8) {
                V8F_LOAD(av, a + p);
                av *= iv;
                memcpy(a + p, &av, sizeof(av));
            }
            for (; p < n; p++) {
                a[p] *= inv;
            }
        }
        att_wsum(a, v, v0, rs, n, hd, wide, d, f16);
        if (!whole) {
            d[hd] = mx[g];
            d[hd + 1] = sums[g];
        }
    }
}

/* One head's output from its n_ch chunk parts (ATT_PART floats apart, in position order):
 * each part weighted by exp(its max - the overall max), in chunk order. Overwrites the parts'
 * max slots. Plain vector code: the same result from every caller. */
static inline __attribute__((always_inline)) void att_merge(float *part, int32_t n_ch, int32_t hd,
                                                            float *out)
{
    size_t ps = ATT_PART(hd);
    float M = -INFINITY, S = 0.0f;
    for (int32_t c = 0; c < n_ch; c++) {
        float m = part[(size_t)c * ps + (size_t)hd];
        M = m > M ? m : M;
    }
    for (int32_t c = 0; c < n_ch; c++) {
        float *pt = part + (size_t)c * ps;
        float w = expf(pt[hd] - M);
        pt[hd] = w;
        S += pt[hd + 1] * w;
    }
    float inv = 1.0f / S;
    int32_t i = 0;
    for (; i + 8 <= hd; i += 8) {
        v8f acc = {0}, o;
        for (int32_t c = 0; c < n_ch; c++) {
            const float *pt = part + (size_t)c * ps;
            float w = pt[hd];
            v8f wv = {w, w, w, w, w, w, w, w};
            V8F_LOAD(o, pt + i);
            acc += o * wv;
        }
        v8f iv = {inv, inv, inv, inv, inv, inv, inv, inv};
        acc *= iv;
        memcpy(out + i, &acc, sizeof(acc));
    }
    for (; i < hd; i++) {
        float acc = 0.0f;
        for (int32_t c = 0; c < n_ch; c++) {
            acc += part[(size_t)c * ps + (size_t)i] * part[(size_t)c * ps + (size_t)hd];
        }
        out[i] = acc * inv;
    }
}

static inline int32_t att_chunks(int32_t n_pos)
{
    return (n_pos + ATT_CHUNK - 1) / ATT_CHUNK;
}

/* hpt query heads (q: hpt x hd) of one KV head over chunks [c0, c1) of their n positions.
 * With one chunk, the normalized output straight into out (hpt x hd); otherwise each chunk's
 * part into parts (head g, chunk c at g * hs + c * ATT_PART(hd)), merged into out: at once
 * when left is NULL (c0 .. c1 are then all the chunks), else by the call that counts the
 * last of the chunks left (*left) down, on whichever thread, so that no one merges them alone
 * after the run (acq_rel: the other calls' parts are visible to the one that merges). sc:
 * scratch of hpt x ATT_CHUNK floats. */
static inline __attribute__((always_inline)) void
att_heads(const float *q, struct kv_rows k, struct kv_rows v, int32_t n, int32_t hd, int32_t hpt,
          int32_t c0, int32_t c1, float *sc, float *parts, size_t hs, atomic_int *left, float *out,
          bool wide, bool f16)
{
    int32_t n_ch = att_chunks(n);
    if (n_ch == 1) {
        att_chunk(q, k, v, hd, hpt, 0, n, sc, wide, true, out, (size_t)hd, f16);
        return;
    }
    for (int32_t c = c0; c < c1; c++) {
        int32_t p0 = c * ATT_CHUNK, p1 = p0 + ATT_CHUNK < n ? p0 + ATT_CHUNK : n;
        att_chunk(q, k, v, hd, hpt, p0, p1, sc, wide, false, parts + (size_t)c * ATT_PART(hd), hs,
                  f16);
    }
    if (left && atomic_fetch_sub_explicit(left, c1 - c0, memory_order_acq_rel) != c1 - c0) {
        return;
    }
    for (int32_t g = 0; g < hpt; g++) {
        att_merge(parts + (size_t)g * hs, n_ch, hd, out + (size_t)g * (size_t)hd);
    }
}

/* Attention of token t's query heads [h0, h0 + hpt) (one KV head) over chunks [c0, c1) of its
 * positions. Whole (c0 == 0, c1 == all): the output into xb, through the thread's part
 * scratch when there are several chunks. Otherwise (split): the parts into f->att_split. */
static inline __attribute__((always_inline)) void att_run(const struct att_job *j, int64_t t,
                                                          int32_t h0, int32_t c0, int32_t c1,
                                                          int thread, bool wide, bool f16)
{
    struct eng_fwd *f = j->f;
    const struct eng_hparams *hp = &f->m->hp;
    int32_t hd = hp->head_dim;
    size_t qd = (size_t)hp->n_head * (size_t)hd;
    int32_t kvh = h0 / (hp->n_head / hp->n_head_kv);
    const struct eng_btok *bt = &j->toks[t];
    size_t base =
        ((((size_t)bt->seq * (size_t)hp->n_layer + (size_t)j->layer) * (size_t)hp->n_head_kv +
          (size_t)kvh) *
         (size_t)f->n_ctx) *
        (size_t)hd;
    struct kv_rows kc = {f->k_cache, base}, vc = {f->v_cache, base};
    float *scr = f->att + (size_t)thread * f->att_per_thread;
    size_t hs = (size_t)f->att_chunks_max * ATT_PART(hd); /* one head's parts */
    float *parts = j->split ? f->att_split + ((size_t)t * (size_t)hp->n_head + (size_t)h0) * hs
                            : scr + (size_t)ATT_CHUNK * (size_t)f->att_group;
    att_heads(f->q + (size_t)t * qd + (size_t)h0 * (size_t)hd, kc, vc, bt->pos + 1, hd,
              j->heads_per_task, c0, c1, scr, parts, hs,
              j->split ? &f->att_left[t * j->units + h0 / j->heads_per_task] : NULL,
              f->xb + (size_t)t * qd + (size_t)h0 * (size_t)hd, wide, f16);
}

/* Task -> (token, heads, chunks): (token, unit) when whole, (token, chunk, unit) when split. */
static inline __attribute__((always_inline)) void att_body(void *arg, int64_t task, int thread,
                                                           bool wide, bool f16)
{
    const struct att_job *j = arg;
    int32_t hpt = j->heads_per_task;
    if (!j->split) {
        int64_t t = task / j->units;
        int32_t h0 = (int32_t)(task % j->units) * hpt;
        att_run(j, t, h0, 0, att_chunks(j->toks[t].pos + 1), thread, wide, f16);
        return;
    }
    int64_t t = 0;
    while (task >= j->task0[t + 1]) {
        t++;
    }
    /* Unit-major, so that a thread's share of the tasks reads each KV head's rows in order
     * (the chunks of one unit side by side were 1-4% faster per SmolLM2 token than the units
     * of one chunk side by side). */
    int64_t local = task - j->task0[t];
    int32_t n_ch = att_chunks(j->toks[t].pos + 1);
    int32_t c = (int32_t)(local % n_ch), h0 = (int32_t)(local / n_ch) * hpt;
    att_run(j, t, h0, c, c + 1, thread, wide, f16);
}

/* One query head over n positions of keys k and values v (rows of hd F32 values, or F16 when
 * f16), as the tasks compute it (eng_att_head); scratch: eng_att_head_scratch(n, hd) floats. */
static inline __attribute__((always_inline)) void att_head(const float *q, const void *k,
                                                           const void *v, int32_t n, int32_t hd,
                                                           float *scratch, float *out, bool wide,
                                                           bool f16)
{
    struct kv_rows kr = {k, 0}, vr = {v, 0};
    att_heads(q, kr, vr, n, hd, 1, 0, att_chunks(n), scratch, scratch + ATT_CHUNK, ATT_PART(hd),
              NULL, out, wide, f16);
}

/* The AVX2/F16C build of the attention task (attention_avx2.c), F32 and F16 KV caches. */
void eng_att_task_avx2(void *arg, int64_t task, int thread);
void eng_att_task_avx2_f16(void *arg, int64_t task, int thread);

#endif
