/* AVX2/FMA/F16C kernels (this file alone is compiled with -mavx2 -mfma -mf16c; quant.c only
 * calls into it after checking the CPU). Dots of every weight type with its activation type,
 * the activation quantizers, and F16 conversion. Each dot unpacks a weight block once and
 * multiplies it with up to ENG_DOT_NX activation rows, so prompt processing reuses the
 * unpacking; integer dots use maddubs (u8 x s8) + madd, accumulating exactly in int32 inside
 * a block. Q8_0/Q4_0/Q5_0 also have a decode kernel (gemv: 4 blocks per step, their 4 scales
 * converted at once, independent accumulators; Q4_0 two blocks per vector) and a prompt
 * kernel (gemm: 4 rows x 4 tokens reduced to 8-lane vectors per block, so one convert + FMA
 * serves 8 products); Q8_0 and Q4_0
 * a batched kernel (gemm8: 4 rows x 8 tokens packed one token per lane, no horizontal sums,
 * bit-identical to gemm). All three prefetch the weight rows in software. Decode of these
 * is meant to run at memory bandwidth: on a 2.45 GHz Zen 3 a Q4_0 block costs ~1.05 ns of
 * compute (bench_kernels "hot"), under the ~1.2 ns that 15 GB/s per core allows.
 * Weight quantizers (file writing, tests) stay scalar. Any thread; no state. */
#include <immintrin.h>
#include <pthread.h>

#include "local-engine/quant_internal.h"

#define ALWAYS_INLINE static inline __attribute__((always_inline))

/* The loops over the ENG_DOT_NX activation rows (and UNROLL_8: over a block's 8 groups of 4
 * elements) must be unrolled (nx is a constant in each instantiation) so that the per-row
 * accumulators live in registers, not on the stack; -O2 does not unroll them by itself. */
#if defined(__clang__)
#define UNROLL_NX _Pragma("unroll")
#define UNROLL_8 _Pragma("unroll")
#elif defined(__GNUC__)
#define UNROLL_NX _Pragma("GCC unroll 4")
#define UNROLL_8 _Pragma("GCC unroll 8")
#else
#define UNROLL_NX
#define UNROLL_8
#endif

ALWAYS_INLINE float hsum_ps(__m256 v)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

ALWAYS_INLINE int hsum_epi32(__m256i v)
{
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(1, 0, 3, 2)));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(2, 3, 0, 1)));
    return _mm_cvtsi128_si32(s);
}

ALWAYS_INLINE float h2f(uint16_t h)
{
    return _cvtsh_ss(h);
}

ALWAYS_INLINE __m256i loadu256(const void *p)
{
    return _mm256_loadu_si256((const __m256i *)p);
}

/* 16 bytes of packed nibbles -> 32 bytes: the low nibbles, then the high nibbles. */
ALWAYS_INLINE __m256i unpack_nibbles(const uint8_t *qs)
{
    __m128i t = _mm_loadu_si128((const __m128i *)qs);
    __m256i v = _mm256_set_m128i(_mm_srli_epi16(t, 4), t);
    return _mm256_and_si256(v, _mm256_set1_epi8(0x0F));
}

/* Byte j of the result is 0xFF if bit j of bits is set, else 0. */
ALWAYS_INLINE __m256i bits_to_bytes(uint32_t bits)
{
    const __m256i shuf = _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2,
                                          2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3);
    const __m256i bit = _mm256_set1_epi64x((long long)0x8040201008040201ULL);
    __m256i v = _mm256_shuffle_epi8(_mm256_set1_epi32((int)bits), shuf);
    return _mm256_cmpeq_epi8(_mm256_and_si256(v, bit), bit);
}

/* Sum of products of 32 signed bytes, as 8 int32: |a| times b with a's sign. */
ALWAYS_INLINE __m256i dot_s8_abs(__m256i abs_a, __m256i a, __m256i b)
{
    __m256i p = _mm256_maddubs_epi16(abs_a, _mm256_sign_epi8(b, a));
    return _mm256_madd_epi16(p, _mm256_set1_epi16(1));
}

/* Sum of products of 32 unsigned (<= 127) by 32 signed bytes, as 8 int32. */
ALWAYS_INLINE __m256i dot_u8(__m256i u, __m256i s)
{
    return _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1));
}

#define ROWS(T, x, xs, nx, b)                                                                  \
    const T *b[ENG_DOT_NX];                                                                    \
    for (int j_ = 0; j_ < (nx); j_++) {                                                        \
        b[j_] = (const T *)(const void *)((const char *)(x) + (size_t)j_ * (xs));              \
    }

/* Instantiates dot_<name> for nx = 1..4 from an always-inline <name>_impl. */
#define DOT_ENTRY(name)                                                                        \
    static void dot_##name(int64_t k, const void *w, const void *x, size_t xs, int nx,         \
                           float *out)                                                         \
    {                                                                                          \
        switch (nx) {                                                                          \
        case 1:                                                                                \
            name##_impl(k, w, x, xs, 1, out);                                                  \
            break;                                                                             \
        case 2:                                                                                \
            name##_impl(k, w, x, xs, 2, out);                                                  \
            break;                                                                             \
        case 3:                                                                                \
            name##_impl(k, w, x, xs, 3, out);                                                  \
            break;                                                                             \
        default:                                                                               \
            name##_impl(k, w, x, xs, 4, out);                                                  \
            break;                                                                             \
        }                                                                                      \
    }

/* ---- 32-element blocks against Q8_0 / Q8_1 ---- */

/* Weight block i as 32 signed bytes (Q8_0, Q4_0, Q5_0). */
ALWAYS_INLINE __m256i q8_0_w(const void *w, int64_t i)
{
    return loadu256(((const struct eng_block_q8_0 *)w)[i].qs);
}

ALWAYS_INLINE __m256i q4_0_w(const void *w, int64_t i)
{
    return _mm256_sub_epi8(unpack_nibbles(((const struct eng_block_q4_0 *)w)[i].qs),
                           _mm256_set1_epi8(8));
}

ALWAYS_INLINE __m256i q5_0_w(const void *w, int64_t i)
{
    const struct eng_block_q5_0 *a = (const struct eng_block_q5_0 *)w + i;
    uint32_t qh;
    memcpy(&qh, a->qh, sizeof(qh));
    __m256i hb = _mm256_and_si256(bits_to_bytes(qh), _mm256_set1_epi8(0x10));
    return _mm256_sub_epi8(_mm256_or_si256(unpack_nibbles(a->qs), hb), _mm256_set1_epi8(16));
}

/* The scale of weight block i (all three types put d first). */
ALWAYS_INLINE float blk_d(const void *w, int64_t i, size_t bsize)
{
    uint16_t d;
    memcpy(&d, (const char *)w + (size_t)i * bsize, sizeof(d));
    return h2f(d);
}

/* Signed 32-element blocks (Q8_0, Q4_0, Q5_0) against Q8_0: two accumulators per token so
 * the FMA latency chain does not limit the decode loop. */
#define SYM_IMPL(name, WFN, BSIZE)                                                             \
    ALWAYS_INLINE void name##_impl(int64_t k, const void *w, const void *x, size_t xs, int nx, \
                                   float *out)                                                 \
    {                                                                                          \
        ROWS(struct eng_block_q8_0, x, xs, nx, b)                                              \
        __m256 acc0[ENG_DOT_NX], acc1[ENG_DOT_NX];                                             \
        UNROLL_NX for (int j = 0; j < nx; j++) {                                               \
            acc0[j] = _mm256_setzero_ps();                                                     \
            acc1[j] = _mm256_setzero_ps();                                                     \
        }                                                                                      \
        const int64_t nb = k / ENG_QK;                                                         \
        int64_t i = 0;                                                                         \
        for (; i + 2 <= nb; i += 2) {                                                          \
            __m256i q0 = WFN(w, i), q1 = WFN(w, i + 1);                                        \
            __m256i a0 = _mm256_sign_epi8(q0, q0), a1 = _mm256_sign_epi8(q1, q1);              \
            float d0 = blk_d(w, i, BSIZE), d1 = blk_d(w, i + 1, BSIZE);                        \
            UNROLL_NX for (int j = 0; j < nx; j++) {                                           \
                __m256i p0 = dot_s8_abs(a0, q0, loadu256(b[j][i].qs));                         \
                __m256i p1 = dot_s8_abs(a1, q1, loadu256(b[j][i + 1].qs));                     \
                acc0[j] = _mm256_fmadd_ps(_mm256_set1_ps(d0 * h2f(b[j][i].d)),                 \
                                          _mm256_cvtepi32_ps(p0), acc0[j]);                    \
                acc1[j] = _mm256_fmadd_ps(_mm256_set1_ps(d1 * h2f(b[j][i + 1].d)),             \
                                          _mm256_cvtepi32_ps(p1), acc1[j]);                    \
            }                                                                                  \
        }                                                                                      \
        for (; i < nb; i++) {                                                                  \
            __m256i q0 = WFN(w, i);                                                            \
            __m256i a0 = _mm256_sign_epi8(q0, q0);                                             \
            float d0 = blk_d(w, i, BSIZE);                                                     \
            UNROLL_NX for (int j = 0; j < nx; j++) {                                           \
                __m256i p0 = dot_s8_abs(a0, q0, loadu256(b[j][i].qs));                         \
                acc0[j] = _mm256_fmadd_ps(_mm256_set1_ps(d0 * h2f(b[j][i].d)),                 \
                                          _mm256_cvtepi32_ps(p0), acc0[j]);                    \
            }                                                                                  \
        }                                                                                      \
        UNROLL_NX for (int j = 0; j < nx; j++) {                                               \
            out[j] = hsum_ps(_mm256_add_ps(acc0[j], acc1[j]));                                 \
        }                                                                                      \
    }

/* The same for two weight rows at once (prompt processing): each activation block is loaded
 * and its scale converted once for both rows. */
#define SYM2_IMPL(name, WFN, BSIZE)                                                            \
    ALWAYS_INLINE void name##_impl2(int64_t k, const void *w, size_t ws, const void *x,        \
                                    size_t xs, int nx, float *out)                             \
    {                                                                                          \
        ROWS(struct eng_block_q8_0, x, xs, nx, b)                                              \
        const void *w1 = (const char *)w + ws;                                                 \
        __m256 acc0[ENG_DOT_NX], acc1[ENG_DOT_NX];                                             \
        UNROLL_NX for (int j = 0; j < nx; j++) {                                               \
            acc0[j] = _mm256_setzero_ps();                                                     \
            acc1[j] = _mm256_setzero_ps();                                                     \
        }                                                                                      \
        for (int64_t i = 0; i < k / ENG_QK; i++) {                                             \
            __m256i q0 = WFN(w, i), q1 = WFN(w1, i);                                           \
            __m256i a0 = _mm256_sign_epi8(q0, q0), a1 = _mm256_sign_epi8(q1, q1);              \
            __m256 d0 = _mm256_set1_ps(blk_d(w, i, BSIZE));                                    \
            __m256 d1 = _mm256_set1_ps(blk_d(w1, i, BSIZE));                                   \
            UNROLL_NX for (int j = 0; j < nx; j++) {                                           \
                __m256i xv = loadu256(b[j][i].qs);                                             \
                __m256 dx = _mm256_set1_ps(h2f(b[j][i].d));                                    \
                __m256i p0 = dot_s8_abs(a0, q0, xv);                                           \
                __m256i p1 = dot_s8_abs(a1, q1, xv);                                           \
                acc0[j] = _mm256_fmadd_ps(_mm256_mul_ps(d0, dx), _mm256_cvtepi32_ps(p0),       \
                                          acc0[j]);                                            \
                acc1[j] = _mm256_fmadd_ps(_mm256_mul_ps(d1, dx), _mm256_cvtepi32_ps(p1),       \
                                          acc1[j]);                                            \
            }                                                                                  \
        }                                                                                      \
        UNROLL_NX for (int j = 0; j < nx; j++) {                                               \
            out[j] = hsum_ps(acc0[j]);                                                         \
            out[ENG_DOT_NX + j] = hsum_ps(acc1[j]);                                            \
        }                                                                                      \
    }

#define DOT2_ENTRY(name)                                                                       \
    static void dot2_##name(int64_t k, const void *w, size_t ws, const void *x, size_t xs,     \
                            int nx, float *out)                                                \
    {                                                                                          \
        switch (nx) {                                                                          \
        case 1:                                                                                \
            name##_impl2(k, w, ws, x, xs, 1, out);                                             \
            break;                                                                             \
        case 2:                                                                                \
            name##_impl2(k, w, ws, x, xs, 2, out);                                             \
            break;                                                                             \
        case 3:                                                                                \
            name##_impl2(k, w, ws, x, xs, 3, out);                                             \
            break;                                                                             \
        default:                                                                               \
            name##_impl2(k, w, ws, x, xs, 4, out);                                             \
            break;                                                                             \
        }                                                                                      \
    }

SYM2_IMPL(q8_0, q8_0_w, sizeof(struct eng_block_q8_0))
SYM2_IMPL(q4_0, q4_0_w, sizeof(struct eng_block_q4_0))
SYM2_IMPL(q5_0, q5_0_w, sizeof(struct eng_block_q5_0))
DOT2_ENTRY(q8_0)
DOT2_ENTRY(q4_0)
DOT2_ENTRY(q5_0)

SYM_IMPL(q8_0, q8_0_w, sizeof(struct eng_block_q8_0))
SYM_IMPL(q4_0, q4_0_w, sizeof(struct eng_block_q4_0))
SYM_IMPL(q5_0, q5_0_w, sizeof(struct eng_block_q5_0))
DOT_ENTRY(q8_0)
DOT_ENTRY(q4_0)
DOT_ENTRY(q5_0)

/* ---- decode: one weight row at a time against one prepared Q8_0 activation row ---- */

/* The products d_w * d_x of blocks i..i+3: the four fp16 weight scales are packed in a
 * general register and converted with one instruction. */
ALWAYS_INLINE __m256 scales4(const char *w, int64_t i, size_t bsize, const float *xd)
{
    uint16_t d0, d1, d2, d3;
    const char *p = w + (size_t)i * bsize;
    memcpy(&d0, p, 2);
    memcpy(&d1, p + bsize, 2);
    memcpy(&d2, p + 2 * bsize, 2);
    memcpy(&d3, p + 3 * bsize, 2);
    uint64_t h = d0 | ((uint64_t)d1 << 16) | ((uint64_t)d2 << 32) | ((uint64_t)d3 << 48);
    __m128 s = _mm_mul_ps(_mm_cvtph_ps(_mm_set_epi64x(0, (long long)h)), _mm_loadu_ps(xd + i));
    return _mm256_insertf128_ps(_mm256_castps128_ps256(s), s, 1);
}

/* Lane L (0..3) of each 128-bit half of s in all 8 lanes (an in-lane shuffle). */
#define LANE_BCAST(s, L) _mm256_permute_ps((s), (L) * 0x55)

enum gkind { GK_Q8_0, GK_Q4_0, GK_Q5_0 };

/* Sum of the 32 products of weight block i with activation block xb, as 8 int32. Q4_0 and
 * Q5_0 use their unsigned levels (0..15, 0..31) so that maddubs needs no sign fix-up; the
 * offset (8, 16) times the activation's sum is subtracted once per row by the caller. */
ALWAYS_INLINE __m256i gemv_block(const char *w, int64_t i, const int8_t *xq, enum gkind kind)
{
    const __m256i ones = _mm256_set1_epi16(1);
    __m256i xv = loadu256(xq);
    if (kind == GK_Q8_0) {
        __m256i q = loadu256(((const struct eng_block_q8_0 *)(const void *)w)[i].qs);
        return dot_s8_abs(_mm256_sign_epi8(q, q), q, xv);
    }
    __m256i u;
    if (kind == GK_Q4_0) {
        const struct eng_block_q4_0 *a = (const struct eng_block_q4_0 *)(const void *)w + i;
        __m256i v = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)a->qs));
        u = _mm256_and_si256(_mm256_srlv_epi64(v, _mm256_setr_epi64x(0, 0, 4, 4)),
                             _mm256_set1_epi8(0x0F));
    } else {
        const struct eng_block_q5_0 *a = (const struct eng_block_q5_0 *)(const void *)w + i;
        uint32_t qh;
        memcpy(&qh, a->qh, sizeof(qh));
        __m256i hb = _mm256_and_si256(bits_to_bytes(qh), _mm256_set1_epi8(0x10));
        u = _mm256_or_si256(unpack_nibbles(a->qs), hb);
    }
    return _mm256_madd_epi16(_mm256_maddubs_epi16(u, xv), ones);
}

/* Software prefetch distance in bytes along each weight row: the rows stream from memory
 * (a model's matrices never fit the caches) and the hardware prefetchers alone leave the
 * kernels waiting (measured on one thread: -15% time per decode step, -25% per 8-token
 * step). Prefetches never fault, so running past a row's end is harmless. */
#define PF_DIST 2048
/* Four blocks per step with four independent accumulators (the convert + FMA latency chain
 * would otherwise bound the loop); the scales of the four blocks come from one conversion. */
ALWAYS_INLINE void gemv_impl(int64_t k, const void *w, size_t ws, int64_t n_rows, const void *x,
                             const float *xd, const float *xsum, float *y, enum gkind kind,
                             size_t bsize)
{
    const struct eng_block_q8_0 *b = x;
    const int64_t nb = k / ENG_QK;
    const float off = kind == GK_Q4_0 ? 8.0f : kind == GK_Q5_0 ? 16.0f : 0.0f;
    for (int64_t r = 0; r < n_rows; r++) {
        const char *wr = (const char *)w + (size_t)r * ws;
        __m256 acc0 = _mm256_setzero_ps(), acc1 = acc0, acc2 = acc0, acc3 = acc0;
        __m128 corr = _mm_setzero_ps();
        int64_t i = 0;
        for (; i + 4 <= nb; i += 4) {
            _mm_prefetch(wr + (size_t)i * bsize + PF_DIST, _MM_HINT_T0);
            _mm_prefetch(wr + (size_t)i * bsize + PF_DIST + 64, _MM_HINT_T0);
            __m256 s = scales4(wr, i, bsize, xd);
            if (kind != GK_Q8_0) {
                corr = _mm_fmadd_ps(_mm256_castps256_ps128(s), _mm_loadu_ps(xsum + i), corr);
            }
            __m256i p0 = gemv_block(wr, i, b[i].qs, kind);
            __m256i p1 = gemv_block(wr, i + 1, b[i + 1].qs, kind);
            __m256i p2 = gemv_block(wr, i + 2, b[i + 2].qs, kind);
            __m256i p3 = gemv_block(wr, i + 3, b[i + 3].qs, kind);
            acc0 = _mm256_fmadd_ps(LANE_BCAST(s, 0), _mm256_cvtepi32_ps(p0), acc0);
            acc1 = _mm256_fmadd_ps(LANE_BCAST(s, 1), _mm256_cvtepi32_ps(p1), acc1);
            acc2 = _mm256_fmadd_ps(LANE_BCAST(s, 2), _mm256_cvtepi32_ps(p2), acc2);
            acc3 = _mm256_fmadd_ps(LANE_BCAST(s, 3), _mm256_cvtepi32_ps(p3), acc3);
        }
        /* the last nb % 4 blocks into the same accumulators (a scalar sum per block here
         * cost SmolLM2's 18-block rows a fifth of their time) */
        float ctail = 0.0f;
        for (; i < nb; i++) {
            float s = blk_d(wr, i, bsize) * xd[i];
            acc0 = _mm256_fmadd_ps(_mm256_set1_ps(s),
                                   _mm256_cvtepi32_ps(gemv_block(wr, i, b[i].qs, kind)), acc0);
            if (kind != GK_Q8_0) {
                ctail += s * xsum[i];
            }
        }
        __m256 acc = _mm256_add_ps(_mm256_add_ps(acc0, acc1), _mm256_add_ps(acc2, acc3));
        __m128 c = _mm_add_ps(corr, _mm_movehl_ps(corr, corr));
        c = _mm_add_ss(c, _mm_movehdup_ps(c));
        y[r] = hsum_ps(acc) - off * (_mm_cvtss_f32(c) + ctail);
    }
}

#define GEMV_ENTRY(name, KIND, BSIZE)                                                          \
    static void gemv_##name(int64_t k, const void *w, size_t ws, int64_t n_rows,               \
                            const void *x, const float *xd, const float *xsum, float *y)       \
    {                                                                                          \
        gemv_impl(k, w, ws, n_rows, x, xd, xsum, y, KIND, BSIZE);                              \
    }
GEMV_ENTRY(q8_0, GK_Q8_0, sizeof(struct eng_block_q8_0))
GEMV_ENTRY(q5_0, GK_Q5_0, sizeof(struct eng_block_q5_0))

/* Q4_0 decode, two blocks per 256-bit vector: the 16 nibble bytes of blocks i and i+1 go in
 * the two 128-bit lanes, so one AND gives the low nibbles (elements 0-15) of both and one
 * shift + AND the high ones (16-31), against the activation re-laid once per call in pairs
 * ({x_i[0..15], x_i+1[0..15]}, {x_i[16..31], x_i+1[16..31]}). The two maddubs results add
 * exactly in int16 (at most 2 x 2 x 15 x 128) and one madd gives each block's exact integer
 * dot of the unsigned levels in 4 lanes; subtracting 8 x the block's activation sum (also
 * prepared per call, in one lane per block) makes it the exact dot of the signed levels. So
 * one convert + FMA serves two blocks, an odd last block is a pair whose second half is zero,
 * and a row ends with one horizontal sum: no scalar tail and no offset correction per row
 * (which cost SmolLM2's 18-block rows about a quarter of their time). Rows go one at a time,
 * as one sequential stream: four rows side by side were 8% cheaper with the weights in cache
 * but streamed 15-40% slower from memory, prefetching the next group's rows or not. */
struct q4_0_xpair {
    int8_t lo[32], hi[32]; /* elements 0-15 of blocks i, i+1, then elements 16-31 */
    int32_t off[8];        /* 8 * sum(x_i) in lane 0, 8 * sum(x_i+1) in lane 4, else 0 */
};

ALWAYS_INLINE __m256i q4_0_pair_dot(const struct eng_block_q4_0 *a, const struct q4_0_xpair *xp,
                                    int lone)
{
    const __m256i m4 = _mm256_set1_epi8(0x0F);
    __m128i w0 = _mm_loadu_si128((const __m128i *)a[0].qs);
    __m256i v = lone ? _mm256_zextsi128_si256(w0)
                     : _mm256_inserti128_si256(_mm256_castsi128_si256(w0),
                                               _mm_loadu_si128((const __m128i *)a[1].qs), 1);
    __m256i lo = _mm256_and_si256(v, m4);
    __m256i hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), m4);
    __m256i p = _mm256_add_epi16(
        _mm256_maddubs_epi16(lo, _mm256_load_si256((const __m256i *)(const void *)xp->lo)),
        _mm256_maddubs_epi16(hi, _mm256_load_si256((const __m256i *)(const void *)xp->hi)));
    return _mm256_sub_epi32(_mm256_madd_epi16(p, _mm256_set1_epi16(1)),
                            _mm256_load_si256((const __m256i *)(const void *)xp->off));
}

static void gemv_q4_0(int64_t k, const void *w, size_t ws, int64_t n_rows, const void *x,
                      const float *xd, const float *xsum, float *y)
{
    const struct eng_block_q8_0 *b = x;
    const int64_t nb = k / ENG_QK;
    const size_t bsize = sizeof(struct eng_block_q4_0);
    struct q4_0_xpair xp[(ENG_GEMV_MAX_BLOCKS + 1) / 2] __attribute__((aligned(32)));
    for (int64_t i = 0; i < nb; i += 2) {
        struct q4_0_xpair *o = xp + i / 2;
        int lone = i + 1 == nb;
        memcpy(o->lo, b[i].qs, 16);
        memcpy(o->hi, b[i].qs + 16, 16);
        if (lone) {
            memset(o->lo + 16, 0, 16);
            memset(o->hi + 16, 0, 16);
        } else {
            memcpy(o->lo + 16, b[i + 1].qs, 16);
            memcpy(o->hi + 16, b[i + 1].qs + 16, 16);
        }
        memset(o->off, 0, sizeof(o->off));
        o->off[0] = 8 * (int32_t)xsum[i];
        o->off[4] = lone ? 0 : 8 * (int32_t)xsum[i + 1];
    }
    const __m256i lo_idx = _mm256_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1);
    const __m256i hi_idx = _mm256_setr_epi32(2, 2, 2, 2, 3, 3, 3, 3);
    for (int64_t r = 0; r < n_rows; r++) {
        const char *wr = (const char *)w + (size_t)r * ws;
        const struct eng_block_q4_0 *a = (const struct eng_block_q4_0 *)(const void *)wr;
        __m256 acc0 = _mm256_setzero_ps(), acc1 = acc0;
        int64_t i = 0;
        for (; i + 4 <= nb; i += 4) {
            _mm_prefetch(wr + (size_t)i * bsize + PF_DIST, _MM_HINT_T0);
            _mm_prefetch(wr + (size_t)i * bsize + PF_DIST + 64, _MM_HINT_T0);
            __m256 s = scales4(wr, i, bsize, xd);
            __m256i p0 = q4_0_pair_dot(a + i, xp + i / 2, 0);
            __m256i p1 = q4_0_pair_dot(a + i + 2, xp + i / 2 + 1, 0);
            acc0 = _mm256_fmadd_ps(_mm256_permutevar8x32_ps(s, lo_idx), _mm256_cvtepi32_ps(p0),
                                   acc0);
            acc1 = _mm256_fmadd_ps(_mm256_permutevar8x32_ps(s, hi_idx), _mm256_cvtepi32_ps(p1),
                                   acc1);
        }
        for (; i < nb; i += 2) {
            int lone = i + 1 == nb;
            float s0 = blk_d(wr, i, bsize) * xd[i];
            float s1 = lone ? 0.0f : blk_d(wr, i + 1, bsize) * xd[i + 1];
            __m256 sv = _mm256_setr_ps(s0, s0, s0, s0, s1, s1, s1, s1);
            __m256i p = lone ? q4_0_pair_dot(a + i, xp + i / 2, 1)
                             : q4_0_pair_dot(a + i, xp + i / 2, 0);
            acc0 = _mm256_fmadd_ps(sv, _mm256_cvtepi32_ps(p), acc0);
        }
        y[r] = hsum_ps(_mm256_add_ps(acc0, acc1));
    }
}

/* ---- prompt processing: 4 (or 2) weight rows x 4 tokens per step against Q8_0 ---- */

/* The int32 dot products of an nr-row (2 or 4) x 4-token tile for one block: out[h] has
 * rows 2h (lanes 0-3, tokens 0-3) and 2h+1 (lanes 4-7), so that the tile converts and
 * scales once per 8 products. Q4_0 uses its unsigned levels (the offset of 8 comes back
 * with the activation sums); Q8_0 and Q5_0 the |q| x sign trick. */
ALWAYS_INLINE void tile_block(const char *const *wr, int nr, int64_t i, const int8_t *xq[4],
                              enum gkind kind, int nx, __m256i *out)
{
    __m256i xv[4];
    UNROLL_NX for (int j = 0; j < 4; j++) {
        xv[j] = j < nx ? loadu256(xq[j]) : _mm256_setzero_si256();
    }
    const __m256i ones = _mm256_set1_epi16(1);
    __m256i g[4];
    UNROLL_NX for (int r = 0; r < nr; r++) {
        __m256i m[4];
        if (kind == GK_Q4_0) {
            const struct eng_block_q4_0 *a = (const struct eng_block_q4_0 *)(const void *)wr[r] + i;
            __m256i v = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)a->qs));
            __m256i u = _mm256_and_si256(_mm256_srlv_epi64(v, _mm256_setr_epi64x(0, 0, 4, 4)),
                                         _mm256_set1_epi8(0x0F));
            UNROLL_NX for (int j = 0; j < 4; j++) {
                m[j] = _mm256_maddubs_epi16(u, xv[j]);
            }
            /* Q4_0 sums in int16 (16 products of at most 15 * 127 stay below 32767): per
             * lane [a' b' c' d' a'' b'' c'' d''] with a' + a'' the lane's sum for token 0 */
            __m256i t01 = _mm256_add_epi16(_mm256_unpacklo_epi16(m[0], m[1]),
                                           _mm256_unpackhi_epi16(m[0], m[1]));
            __m256i t23 = _mm256_add_epi16(_mm256_unpacklo_epi16(m[2], m[3]),
                                           _mm256_unpackhi_epi16(m[2], m[3]));
            g[r] = _mm256_add_epi16(_mm256_unpacklo_epi32(t01, t23),
                                    _mm256_unpackhi_epi32(t01, t23));
            continue;
        }
        __m256i q = kind == GK_Q8_0 ? q8_0_w(wr[r], i) : q5_0_w(wr[r], i);
        __m256i aq = _mm256_sign_epi8(q, q);
        UNROLL_NX for (int j = 0; j < 4; j++) {
            m[j] = _mm256_maddubs_epi16(aq, _mm256_sign_epi8(xv[j], q));
        }
        /* widen, then per 128-bit lane sum each product vector with unpacks and adds (hadd
         * is several slow uops on some cores) */
        __m256i p0 = _mm256_madd_epi16(m[0], ones), p1 = _mm256_madd_epi16(m[1], ones);
        __m256i p2 = _mm256_madd_epi16(m[2], ones), p3 = _mm256_madd_epi16(m[3], ones);
        __m256i t01 = _mm256_add_epi32(_mm256_unpacklo_epi32(p0, p1),
                                       _mm256_unpackhi_epi32(p0, p1));
        __m256i t23 = _mm256_add_epi32(_mm256_unpacklo_epi32(p2, p3),
                                       _mm256_unpackhi_epi32(p2, p3));
        /* per lane: the lane's sums of tokens 0..3 */
        g[r] = _mm256_add_epi32(_mm256_unpacklo_epi64(t01, t23), _mm256_unpackhi_epi64(t01, t23));
    }
    UNROLL_NX for (int r = 0; r < nr; r += 2) {
        if (kind == GK_Q4_0) {
            /* per lane [row r: t0..t3, row r+1: t0..t3] in int16, then both lanes in int32 */
            __m256i e = _mm256_add_epi16(_mm256_unpacklo_epi64(g[r], g[r + 1]),
                                         _mm256_unpackhi_epi64(g[r], g[r + 1]));
            out[r / 2] =
                _mm256_add_epi32(_mm256_cvtepi16_epi32(_mm256_castsi256_si128(e)),
                                 _mm256_cvtepi16_epi32(_mm256_extracti128_si256(e, 1)));
        } else {
            out[r / 2] = _mm256_add_epi32(_mm256_permute2x128_si256(g[r], g[r + 1], 0x20),
                                          _mm256_permute2x128_si256(g[r], g[r + 1], 0x31));
        }
    }
}

/* nr (2 or 4) rows starting at w0 (a last odd row given twice) against the prepared tokens:
 * acc[h] holds rows 2h (lanes 0-3) and 2h+1 (lanes 4-7) for tokens 0..3. */
ALWAYS_INLINE void tile_rows(const char *const *wr, int nr, int64_t nb, const void *const *xbv,
                             const float *xd4, const int32_t *xs4, enum gkind kind, int nx,
                             size_t bsize, __m256 *acc)
{
    const struct eng_block_q8_0 *const *xb = (const struct eng_block_q8_0 *const *)xbv;
    const __m256i lo_idx = _mm256_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1);
    const __m256i hi_idx = _mm256_setr_epi32(2, 2, 2, 2, 3, 3, 3, 3);
    UNROLL_NX for (int h = 0; h < nr / 2; h++) {
        acc[h] = _mm256_setzero_ps();
    }
    for (int64_t i = 0; i < nb; i++) {
        const int8_t *xq[4];
        UNROLL_NX for (int j = 0; j < 4; j++) {
            xq[j] = xb[j][i].qs;
        }
        UNROLL_NX for (int r = 0; r < nr; r++) {
            _mm_prefetch(wr[r] + (size_t)i * bsize + PF_DIST, _MM_HINT_T0);
        }
        __m256i p[2];
        tile_block(wr, nr, i, xq, kind, nx, p);
        uint64_t hd = 0;
        UNROLL_NX for (int r = 0; r < nr; r++) {
            uint16_t d;
            memcpy(&d, wr[r] + (size_t)i * bsize, 2);
            hd |= (uint64_t)d << (16 * r);
        }
        __m256 dw = _mm256_castps128_ps256(_mm_cvtph_ps(_mm_set_epi64x(0, (long long)hd)));
        __m256 dx = _mm256_broadcast_ps((const __m128 *)(xd4 + 4 * i));
        __m256i corr = _mm256_setzero_si256();
        if (kind == GK_Q4_0) {
            corr = _mm256_broadcastsi128_si256(_mm_load_si128((const __m128i *)(xs4 + 4 * i)));
        }
        UNROLL_NX for (int h = 0; h < nr / 2; h++) {
            __m256i ph = kind == GK_Q4_0 ? _mm256_sub_epi32(p[h], corr) : p[h];
            __m256 sc = _mm256_mul_ps(_mm256_permutevar8x32_ps(dw, h == 0 ? lo_idx : hi_idx), dx);
            acc[h] = _mm256_fmadd_ps(sc, _mm256_cvtepi32_ps(ph), acc[h]);
        }
    }
}

ALWAYS_INLINE void gemm_impl(int64_t k, const void *w, size_t ws, int64_t n_rows, const void *x,
                             size_t xs, int nx, float *y, int64_t ldy, enum gkind kind,
                             size_t bsize)
{
    const int64_t nb = k / ENG_QK;
    /* per block, the 4 tokens' scales and (Q4_0) their sums times 8, in token order */
    _Alignas(32) float xd4[4 * ENG_GEMM_MAX_BLOCKS];
    _Alignas(32) int32_t xs4[4 * ENG_GEMM_MAX_BLOCKS];
    const void *xb[4];
    UNROLL_NX for (int j = 0; j < 4; j++) {
        xb[j] = (const char *)x + (size_t)(j < nx ? j : 0) * xs;
    }
    for (int64_t i = 0; i < nb; i++) {
        UNROLL_NX for (int j = 0; j < 4; j++) {
            const struct eng_block_q8_0 *bj = (const struct eng_block_q8_0 *)xb[j] + i;
            xd4[4 * i + j] = j < nx ? h2f(bj->d) : 0.0f;
            if (kind == GK_Q4_0) {
                __m256i s = _mm256_madd_epi16(
                    _mm256_maddubs_epi16(_mm256_set1_epi8(1), loadu256(bj->qs)),
                    _mm256_set1_epi16(1));
                xs4[4 * i + j] = 8 * hsum_epi32(s);
            }
        }
    }
    int64_t r = 0;
    for (; r + 4 <= n_rows; r += 4) {
        const char *wr[4];
        UNROLL_NX for (int l = 0; l < 4; l++) {
            wr[l] = (const char *)w + (size_t)(r + l) * ws;
        }
        __m256 acc[2];
        tile_rows(wr, 4, nb, xb, xd4, xs4, kind, nx, bsize, acc);
        _Alignas(32) float o[2][8];
        _mm256_store_ps(o[0], acc[0]);
        _mm256_store_ps(o[1], acc[1]);
        UNROLL_NX for (int j = 0; j < nx; j++) {
            UNROLL_NX for (int l = 0; l < 4; l++) {
                y[j * ldy + r + l] = o[l / 2][4 * (l % 2) + j];
            }
        }
    }
    for (; r < n_rows; r += 2) {
        const char *wr[2];
        wr[0] = (const char *)w + (size_t)r * ws;
        wr[1] = r + 1 < n_rows ? wr[0] + ws : wr[0]; /* a last odd row is done twice */
        __m256 acc[1];
        tile_rows(wr, 2, nb, xb, xd4, xs4, kind, nx, bsize, acc);
        _Alignas(32) float o[8];
        _mm256_store_ps(o, acc[0]);
        UNROLL_NX for (int j = 0; j < nx; j++) {
            y[j * ldy + r] = o[j];
            if (r + 1 < n_rows) {
                y[j * ldy + r + 1] = o[4 + j];
            }
        }
    }
}

#define GEMM_ENTRY(name, KIND, BSIZE)                                                          \
    static void gemm_##name(int64_t k, const void *w, size_t ws, int64_t n_rows,               \
                            const void *x, size_t xs, int nx, float *y, int64_t ldy)           \
    {                                                                                          \
        switch (nx) {                                                                          \
        case 1:                                                                                \
            gemm_impl(k, w, ws, n_rows, x, xs, 1, y, ldy, KIND, BSIZE);                        \
            break;                                                                             \
        case 2:                                                                                \
            gemm_impl(k, w, ws, n_rows, x, xs, 2, y, ldy, KIND, BSIZE);                        \
            break;                                                                             \
        case 3:                                                                                \
            gemm_impl(k, w, ws, n_rows, x, xs, 3, y, ldy, KIND, BSIZE);                        \
            break;                                                                             \
        default:                                                                               \
            gemm_impl(k, w, ws, n_rows, x, xs, 4, y, ldy, KIND, BSIZE);                        \
            break;                                                                             \
        }                                                                                      \
    }
GEMM_ENTRY(q8_0, GK_Q8_0, sizeof(struct eng_block_q8_0))
GEMM_ENTRY(q4_0, GK_Q4_0, sizeof(struct eng_block_q4_0))
GEMM_ENTRY(q5_0, GK_Q5_0, sizeof(struct eng_block_q5_0))

/* ---- batched: weight rows x a packed group of 8 tokens, one token per 32-bit lane ---- */

/* The 4 bytes at p in every 32-bit lane (a broadcast load). */
ALWAYS_INLINE __m256i bcast4(const void *p)
{
    int32_t v;
    memcpy(&v, p, sizeof(v));
    return _mm256_set1_epi32(v);
}

/* The integer dot products of weight block i of row wr with the 8 tokens of the packed block
 * xb, one int32 per token. Vector (j, q) of xb holds, for tokens 4q..4q+3, elements 4j..4j+3
 * in the low 128-bit lane and 16+4j..16+4j+3 in the high one, so the weights' matching bytes
 * come from one in-lane shuffle (Q8_0) or one shift (Q4_0's nibbles) and the lanes never
 * need a horizontal sum: the two halves of a token meet in one cross-lane add per block.
 * Q8_0 uses |w| x sign (|w| computed once per block, exact for -128); Q4_0 its unsigned
 * levels (the caller subtracts 8 x the tokens' sums), summed in int16 (8 products of at most
 * 15 * 127 per lane) and widened once per block. */
ALWAYS_INLINE __m256i g8_block(const char *wr, int64_t i, const struct eng_block_q8_0x8 *xb,
                               enum gkind kind)
{
    const __m256i ones = _mm256_set1_epi16(1);
    const __m256i *xg = (const __m256i *)(const void *)xb->qs;
    __m256i s0, s1;
    if (kind == GK_Q4_0) {
        const struct eng_block_q4_0 *a = (const struct eng_block_q4_0 *)(const void *)wr + i;
        const __m256i m4 = _mm256_set1_epi8(0x0F);
        const __m256i shift = _mm256_setr_epi32(0, 0, 0, 0, 4, 4, 4, 4);
        __m256i h0 = _mm256_setzero_si256(), h1 = h0;
        UNROLL_NX for (int j = 0; j < 4; j++) {
            /* bytes 4j..4j+3: elements 4j.. in the low nibbles, 16+4j.. in the high ones */
            __m256i u = _mm256_and_si256(_mm256_srlv_epi32(bcast4(a->qs + 4 * j), shift), m4);
            h0 = _mm256_add_epi16(h0, _mm256_maddubs_epi16(u, _mm256_load_si256(xg + 2 * j)));
            h1 = _mm256_add_epi16(h1, _mm256_maddubs_epi16(u, _mm256_load_si256(xg + 2 * j + 1)));
        }
        s0 = _mm256_madd_epi16(h0, ones);
        s1 = _mm256_madd_epi16(h1, ones);
    } else {
        const struct eng_block_q8_0 *a = (const struct eng_block_q8_0 *)(const void *)wr + i;
        __m256i wv = loadu256(a->qs);
        __m256i av = _mm256_sign_epi8(wv, wv);
        s0 = _mm256_setzero_si256();
        s1 = s0;
        /* the shuffles' controls must be immediates even where the loop is not unrolled (-O0) */
        const __m256i wb[4] = {_mm256_shuffle_epi32(wv, 0x00), _mm256_shuffle_epi32(wv, 0x55),
                               _mm256_shuffle_epi32(wv, 0xAA), _mm256_shuffle_epi32(wv, 0xFF)};
        const __m256i ab[4] = {_mm256_shuffle_epi32(av, 0x00), _mm256_shuffle_epi32(av, 0x55),
                               _mm256_shuffle_epi32(av, 0xAA), _mm256_shuffle_epi32(av, 0xFF)};
        UNROLL_NX for (int j = 0; j < 4; j++) {
            __m256i wj = wb[j];
            __m256i aj = ab[j];
            __m256i p0 =
                _mm256_maddubs_epi16(aj, _mm256_sign_epi8(_mm256_load_si256(xg + 2 * j), wj));
            __m256i p1 =
                _mm256_maddubs_epi16(aj, _mm256_sign_epi8(_mm256_load_si256(xg + 2 * j + 1), wj));
            s0 = _mm256_add_epi32(s0, _mm256_madd_epi16(p0, ones));
            s1 = _mm256_add_epi32(s1, _mm256_madd_epi16(p1, ones));
        }
    }
    /* s0: tokens 0-3 (first half | second half), s1: tokens 4-7 */
    return _mm256_add_epi32(_mm256_permute2x128_si256(s0, s1, 0x20),
                            _mm256_permute2x128_si256(s0, s1, 0x31));
}

/* nr (1..4) rows against the nb packed blocks of one token group: acc[r] holds row r for the
 * 8 tokens. Per (row, token) exactly the arithmetic of tile_rows: the block's exact integer
 * sum, then acc = fma(d_w * d_x, sum, acc). */
ALWAYS_INLINE void gemm8_rows(const char *const *wr, int nr, int64_t nb,
                              const struct eng_block_q8_0x8 *x8, enum gkind kind, size_t bsize,
                              __m256 *acc)
{
    UNROLL_NX for (int r = 0; r < nr; r++) {
        acc[r] = _mm256_setzero_ps();
    }
    for (int64_t i = 0; i < nb; i++) {
        const struct eng_block_q8_0x8 *xb = x8 + i;
        const __m256 dx = _mm256_load_ps(xb->d);
        __m256i corr = _mm256_setzero_si256();
        if (kind == GK_Q4_0) {
            corr = _mm256_slli_epi32(_mm256_load_si256((const __m256i *)(const void *)xb->s), 3);
        }
        UNROLL_NX for (int r = 0; r < nr; r++) {
            _mm_prefetch(wr[r] + (size_t)i * bsize + PF_DIST, _MM_HINT_T0);
            __m256i p = g8_block(wr[r], i, xb, kind);
            if (kind == GK_Q4_0) {
                p = _mm256_sub_epi32(p, corr);
            }
            __m256 sc = _mm256_mul_ps(_mm256_set1_ps(blk_d(wr[r], i, bsize)), dx);
            acc[r] = _mm256_fmadd_ps(sc, _mm256_cvtepi32_ps(p), acc[r]);
        }
    }
}

ALWAYS_INLINE void gemm8_impl(int64_t k, const void *w, size_t ws, int64_t n_rows,
                              const struct eng_block_q8_0x8 *x8, int nx, float *y, int64_t ldy,
                              enum gkind kind, size_t bsize)
{
    const int64_t nb = k / ENG_QK;
    int64_t r = 0;
    for (; r < n_rows; r += 4) {
        const int nr = n_rows - r < 4 ? (int)(n_rows - r) : 4;
        const char *wr[4];
        for (int l = 0; l < 4; l++) {
            wr[l] = (const char *)w + (size_t)(r + (l < nr ? l : 0)) * ws;
        }
        __m256 acc[4];
        switch (nr) {
        case 4:
            gemm8_rows(wr, 4, nb, x8, kind, bsize, acc);
            break;
        case 3:
            gemm8_rows(wr, 3, nb, x8, kind, bsize, acc);
            break;
        case 2:
            gemm8_rows(wr, 2, nb, x8, kind, bsize, acc);
            break;
        default:
            gemm8_rows(wr, 1, nb, x8, kind, bsize, acc);
            break;
        }
        _Alignas(32) float o[4][ENG_GEMM8_NX];
        for (int l = 0; l < nr; l++) {
            _mm256_store_ps(o[l], acc[l]);
        }
        for (int j = 0; j < nx; j++) {
            for (int l = 0; l < nr; l++) {
                y[j * ldy + r + l] = o[l][j];
            }
        }
    }
}

#define GEMM8_ENTRY(name, KIND, BSIZE)                                                             \
    static void gemm8_##name(int64_t k, const void *w, size_t ws, int64_t n_rows,                  \
                             const struct eng_block_q8_0x8 *x8, int nx, float *y, int64_t ldy)     \
    {                                                                                              \
        gemm8_impl(k, w, ws, n_rows, x8, nx, y, ldy, KIND, BSIZE);                                 \
    }
GEMM8_ENTRY(q8_0, GK_Q8_0, sizeof(struct eng_block_q8_0))
GEMM8_ENTRY(q4_0, GK_Q4_0, sizeof(struct eng_block_q4_0))

/* Unsigned 32-element blocks with an offset (Q4_1: 4 bits, Q5_1: 5 bits) against Q8_1:
 * d_w*d_x*sum(q*x) + m_w*s_x. */
ALWAYS_INLINE void asym32_impl(int64_t k, const void *w, const void *x, size_t xs, int nx,
                               float *out, int five)
{
    ROWS(struct eng_block_q8_1, x, xs, nx, b)
    __m256 acc[ENG_DOT_NX];
    float accm[ENG_DOT_NX];
    UNROLL_NX for (int j = 0; j < nx; j++) {
        acc[j] = _mm256_setzero_ps();
        accm[j] = 0.0f;
    }
    for (int64_t i = 0; i < k / ENG_QK; i++) {
        __m256i q;
        uint16_t dh, mh;
        if (five) {
            const struct eng_block_q5_1 *a = (const struct eng_block_q5_1 *)w + i;
            uint32_t qh;
            memcpy(&qh, a->qh, sizeof(qh));
            __m256i hb = _mm256_and_si256(bits_to_bytes(qh), _mm256_set1_epi8(0x10));
            q = _mm256_or_si256(unpack_nibbles(a->qs), hb);
            dh = a->d, mh = a->m;
        } else {
            const struct eng_block_q4_1 *a = (const struct eng_block_q4_1 *)w + i;
            q = unpack_nibbles(a->qs);
            dh = a->d, mh = a->m;
        }
        float d = h2f(dh), m = h2f(mh);
        UNROLL_NX for (int j = 0; j < nx; j++) {
            __m256i p = dot_u8(q, loadu256(b[j][i].qs));
            acc[j] = _mm256_fmadd_ps(_mm256_set1_ps(d * h2f(b[j][i].d)), _mm256_cvtepi32_ps(p),
                                     acc[j]);
            accm[j] += m * h2f(b[j][i].s);
        }
    }
    UNROLL_NX for (int j = 0; j < nx; j++) {
        out[j] = hsum_ps(acc[j]) + accm[j];
    }
}

ALWAYS_INLINE void q4_1_impl(int64_t k, const void *w, const void *x, size_t xs, int nx,
                             float *out)
{
    asym32_impl(k, w, x, xs, nx, out, 0);
}

ALWAYS_INLINE void q5_1_impl(int64_t k, const void *w, const void *x, size_t xs, int nx,
                             float *out)
{
    asym32_impl(k, w, x, xs, nx, out, 1);
}
DOT_ENTRY(q5_1)
DOT_ENTRY(q4_1)

/* ---- K-quants against Q8_K ---- */

/* Unpacks the 8 six-bit scales and mins of a Q4_K/Q5_K block without branches (the layout
 * of eng_k_scale_min, four bytes at a time): scales as int16 in both 128-bit lanes (for the
 * per-group shuffles), mins as 16 int16 lanes each repeated for the two 16-element bsums of
 * its sub-block. */
ALWAYS_INLINE void k_scales(const uint8_t *packed, __m256i *scales16, __m256i *mins16)
{
    uint32_t a, b, c;
    memcpy(&a, packed, 4);
    memcpy(&b, packed + 4, 4);
    memcpy(&c, packed + 8, 4);
    uint32_t s_lo = a & 0x3f3f3f3fu;
    uint32_t m_lo = b & 0x3f3f3f3fu;
    uint32_t s_hi = (c & 0x0f0f0f0fu) | (((a >> 6) & 0x03030303u) << 4);
    uint32_t m_hi = ((c >> 4) & 0x0f0f0f0fu) | (((b >> 6) & 0x03030303u) << 4);
    __m128i sc = _mm_cvtepu8_epi16(_mm_set_epi32(0, 0, (int)s_hi, (int)s_lo));
    __m128i mn = _mm_cvtepu8_epi16(_mm_set_epi32(0, 0, (int)m_hi, (int)m_lo));
    *scales16 = _mm256_broadcastsi128_si256(sc);
    *mins16 = _mm256_set_m128i(_mm_unpackhi_epi16(mn, mn), _mm_unpacklo_epi16(mn, mn));
}

/* Broadcasts int16 lane s (0..7) of a k_scales vector to all 16 lanes. */
ALWAYS_INLINE __m256i k_scale_lane(__m256i scales16, int s)
{
    const __m256i idx = _mm256_set1_epi16((short)((2 * s) | ((2 * s + 1) << 8)));
    return _mm256_shuffle_epi8(scales16, idx);
}

/* Q4_K (five = 0) and Q5_K (five = 1): per 64-element group, the low nibbles (+ fifth bit)
 * form sub-block 2g and the high nibbles sub-block 2g+1. */
ALWAYS_INLINE void k_asym_impl(int64_t k, const void *w, const void *x, size_t xs, int nx,
                               float *out, int five)
{
    ROWS(struct eng_block_q8_K, x, xs, nx, b)
    __m256 acc[ENG_DOT_NX], accm[ENG_DOT_NX];
    const __m256i m4 = _mm256_set1_epi8(0x0F);
    const __m256i one = _mm256_set1_epi8(1);
    UNROLL_NX for (int j = 0; j < nx; j++) {
        acc[j] = _mm256_setzero_ps();
        accm[j] = _mm256_setzero_ps();
    }
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
        __m256i scales16, mins16;
        k_scales(scales, &scales16, &mins16);
        __m256i hbits = five ? loadu256(qh) : _mm256_setzero_si256();
        __m256i sumi[ENG_DOT_NX];
        UNROLL_NX for (int j = 0; j < nx; j++) {
            sumi[j] = _mm256_setzero_si256();
        }
        UNROLL_NX for (int g = 0; g < 4; g++) {
            __m256i q = loadu256(qs + 32 * g);
            __m256i lo = _mm256_and_si256(q, m4);
            __m256i hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), m4);
            if (five) {
                __m256i h0 = _mm256_and_si256(hbits, one);
                __m256i h1 = _mm256_and_si256(_mm256_srli_epi16(hbits, 1), one);
                lo = _mm256_or_si256(lo, _mm256_slli_epi16(h0, 4));
                hi = _mm256_or_si256(hi, _mm256_slli_epi16(h1, 4));
                hbits = _mm256_srli_epi16(hbits, 2);
            }
            __m256i s0 = k_scale_lane(scales16, 2 * g);
            __m256i s1 = k_scale_lane(scales16, 2 * g + 1);
            UNROLL_NX for (int j = 0; j < nx; j++) {
                const int8_t *xq = b[j][i].qs + 64 * g;
                __m256i p0 = _mm256_madd_epi16(_mm256_maddubs_epi16(lo, loadu256(xq)), s0);
                __m256i p1 = _mm256_madd_epi16(_mm256_maddubs_epi16(hi, loadu256(xq + 32)), s1);
                sumi[j] = _mm256_add_epi32(sumi[j], _mm256_add_epi32(p0, p1));
            }
        }
        float d = h2f(dh), dmin = h2f(mh);
        UNROLL_NX for (int j = 0; j < nx; j++) {
            float dx = b[j][i].d;
            __m256i ms = _mm256_madd_epi16(loadu256(b[j][i].bsums), mins16);
            acc[j] = _mm256_fmadd_ps(_mm256_set1_ps(d * dx), _mm256_cvtepi32_ps(sumi[j]), acc[j]);
            accm[j] = _mm256_fmadd_ps(_mm256_set1_ps(dmin * dx), _mm256_cvtepi32_ps(ms), accm[j]);
        }
    }
    UNROLL_NX for (int j = 0; j < nx; j++) {
        out[j] = hsum_ps(_mm256_sub_ps(acc[j], accm[j]));
    }
}

ALWAYS_INLINE void q4_K_impl(int64_t k, const void *w, const void *x, size_t xs, int nx,
                             float *out)
{
    k_asym_impl(k, w, x, xs, nx, out, 0);
}

ALWAYS_INLINE void q5_K_impl(int64_t k, const void *w, const void *x, size_t xs, int nx,
                             float *out)
{
    k_asym_impl(k, w, x, xs, nx, out, 1);
}
DOT_ENTRY(q4_K)
DOT_ENTRY(q5_K)

/* From 8 int16 scales in both 128-bit lanes: scale 2m in the low 8 lanes, 2m+1 in the high 8
 * (one shuffle with a constant mask: the madd multipliers of a 32-element Q6_K group). */
ALWAYS_INLINE __m256i scale_pair(__m256i sc16, int m)
{
    const char lo0 = (char)(4 * m), lo1 = (char)(4 * m + 1);
    const char hi0 = (char)(4 * m + 2), hi1 = (char)(4 * m + 3);
    const __m256i idx = _mm256_setr_epi8(lo0, lo1, lo0, lo1, lo0, lo1, lo0, lo1, lo0, lo1, lo0,
                                         lo1, lo0, lo1, lo0, lo1, hi0, hi1, hi0, hi1, hi0, hi1,
                                         hi0, hi1, hi0, hi1, hi0, hi1, hi0, hi1, hi0, hi1);
    return _mm256_shuffle_epi8(sc16, idx);
}

/* Q6_K: levels 0..63 (unsigned for maddubs); the -32 offset comes back through the bsums. */
ALWAYS_INLINE void q6_K_impl(int64_t k, const void *w, const void *x, size_t xs, int nx,
                             float *out)
{
    const struct eng_block_q6_K *a = w;
    ROWS(struct eng_block_q8_K, x, xs, nx, b)
    __m256 acc[ENG_DOT_NX], accm[ENG_DOT_NX];
    const __m256i m4 = _mm256_set1_epi8(0x0F);
    const __m256i m3 = _mm256_set1_epi8(0x30);
    UNROLL_NX for (int j = 0; j < nx; j++) {
        acc[j] = _mm256_setzero_ps();
        accm[j] = _mm256_setzero_ps();
    }
    for (int64_t i = 0; i < k / ENG_QK_K; i++) {
        __m256i sumi[ENG_DOT_NX];
        UNROLL_NX for (int j = 0; j < nx; j++) {
            sumi[j] = _mm256_setzero_si256();
        }
        /* the 16 scales as int16: 0..7 in both lanes for h = 0, 8..15 for h = 1 */
        __m256i scv = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)a[i].scales));
        UNROLL_NX for (int h = 0; h < 2; h++) {
            __m256i sch = h == 0 ? _mm256_permute4x64_epi64(scv, 0x44)
                                 : _mm256_permute4x64_epi64(scv, 0xEE);
            __m256i l0 = loadu256(a[i].ql + 64 * h);
            __m256i l1 = loadu256(a[i].ql + 64 * h + 32);
            __m256i hb = loadu256(a[i].qh + 32 * h);
            __m256i q1 = _mm256_or_si256(_mm256_and_si256(l0, m4),
                                         _mm256_and_si256(_mm256_slli_epi16(hb, 4), m3));
            __m256i q2 = _mm256_or_si256(_mm256_and_si256(l1, m4),
                                         _mm256_and_si256(_mm256_slli_epi16(hb, 2), m3));
            __m256i q3 = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l0, 4), m4),
                                         _mm256_and_si256(hb, m3));
            __m256i q4 = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l1, 4), m4),
                                         _mm256_and_si256(_mm256_srli_epi16(hb, 2), m3));
            __m256i s1 = scale_pair(sch, 0), s2 = scale_pair(sch, 1);
            __m256i s3 = scale_pair(sch, 2), s4 = scale_pair(sch, 3);
            UNROLL_NX for (int j = 0; j < nx; j++) {
                const int8_t *xq = b[j][i].qs + 128 * h;
                __m256i p1 = _mm256_madd_epi16(_mm256_maddubs_epi16(q1, loadu256(xq)), s1);
                __m256i p2 = _mm256_madd_epi16(_mm256_maddubs_epi16(q2, loadu256(xq + 32)), s2);
                __m256i p3 = _mm256_madd_epi16(_mm256_maddubs_epi16(q3, loadu256(xq + 64)), s3);
                __m256i p4 = _mm256_madd_epi16(_mm256_maddubs_epi16(q4, loadu256(xq + 96)), s4);
                sumi[j] = _mm256_add_epi32(sumi[j], _mm256_add_epi32(_mm256_add_epi32(p1, p2),
                                                                     _mm256_add_epi32(p3, p4)));
            }
        }
        float d = h2f(a[i].d);
        /* 32 * sum_s scale_s * bsum_s, 16 lanes at once */
        UNROLL_NX for (int j = 0; j < nx; j++) {
            float dd = d * b[j][i].d;
            __m256i corr = _mm256_madd_epi16(scv, loadu256(b[j][i].bsums));
            acc[j] = _mm256_fmadd_ps(_mm256_set1_ps(dd), _mm256_cvtepi32_ps(sumi[j]), acc[j]);
            accm[j] = _mm256_fmadd_ps(_mm256_set1_ps(32.0f * dd), _mm256_cvtepi32_ps(corr),
                                      accm[j]);
        }
    }
    UNROLL_NX for (int j = 0; j < nx; j++) {
        out[j] = hsum_ps(_mm256_sub_ps(acc[j], accm[j]));
    }
}
DOT_ENTRY(q6_K)

/* ---- float weights against F32 activations ---- */

enum fkind { FK_F32, FK_F16, FK_BF16 };

ALWAYS_INLINE __m256 load8(const void *w, int64_t i, enum fkind kind)
{
    if (kind == FK_F32) {
        return _mm256_loadu_ps((const float *)w + i);
    }
    __m128i h = _mm_loadu_si128((const __m128i *)((const uint16_t *)w + i));
    if (kind == FK_F16) {
        return _mm256_cvtph_ps(h);
    }
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}

ALWAYS_INLINE float load1(const void *w, int64_t i, enum fkind kind)
{
    if (kind == FK_F32) {
        return ((const float *)w)[i];
    }
    uint16_t h = ((const uint16_t *)w)[i];
    return kind == FK_F16 ? h2f(h) : eng_bf16_to_fp32(h);
}

ALWAYS_INLINE void float_impl(int64_t k, const void *w, const void *x, size_t xs, int nx,
                              float *out, enum fkind kind)
{
    ROWS(float, x, xs, nx, b)
    __m256 acc0[ENG_DOT_NX], acc1[ENG_DOT_NX];
    UNROLL_NX for (int j = 0; j < nx; j++) {
        acc0[j] = _mm256_setzero_ps();
        acc1[j] = _mm256_setzero_ps();
    }
    int64_t i = 0;
    for (; i + 16 <= k; i += 16) {
        __m256 w0 = load8(w, i, kind), w1 = load8(w, i + 8, kind);
        UNROLL_NX for (int j = 0; j < nx; j++) {
            acc0[j] = _mm256_fmadd_ps(w0, _mm256_loadu_ps(b[j] + i), acc0[j]);
            acc1[j] = _mm256_fmadd_ps(w1, _mm256_loadu_ps(b[j] + i + 8), acc1[j]);
        }
    }
    for (; i + 8 <= k; i += 8) {
        __m256 w0 = load8(w, i, kind);
        UNROLL_NX for (int j = 0; j < nx; j++) {
            acc0[j] = _mm256_fmadd_ps(w0, _mm256_loadu_ps(b[j] + i), acc0[j]);
        }
    }
    UNROLL_NX for (int j = 0; j < nx; j++) {
        float s = hsum_ps(_mm256_add_ps(acc0[j], acc1[j]));
        for (int64_t t = i; t < k; t++) {
            s += load1(w, t, kind) * b[j][t];
        }
        out[j] = s;
    }
}

ALWAYS_INLINE void f32_impl(int64_t k, const void *w, const void *x, size_t xs, int nx,
                            float *out)
{
    float_impl(k, w, x, xs, nx, out, FK_F32);
}

ALWAYS_INLINE void f16_impl(int64_t k, const void *w, const void *x, size_t xs, int nx,
                            float *out)
{
    float_impl(k, w, x, xs, nx, out, FK_F16);
}

ALWAYS_INLINE void bf16_impl(int64_t k, const void *w, const void *x, size_t xs, int nx,
                             float *out)
{
    float_impl(k, w, x, xs, nx, out, FK_BF16);
}
DOT_ENTRY(f32)
DOT_ENTRY(f16)
DOT_ENTRY(bf16)

/* ---- conversions and activation quantizers ---- */

static void dequant_f16(const void *src, float *dst, int64_t n)
{
    const uint16_t *h = src;
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(h + i))));
    }
    for (; i < n; i++) {
        dst[i] = h2f(h[i]);
    }
}

static void quant_f16(const float *src, void *dst, int64_t n)
{
    uint16_t *h = dst;
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m128i v = _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT);
        _mm_storeu_si128((__m128i *)(h + i), v);
    }
    for (; i < n; i++) {
        h[i] = _cvtss_sh(src[i], _MM_FROUND_TO_NEAREST_INT);
    }
}

static void dequant_bf16(const void *src, float *dst, int64_t n)
{
    const uint16_t *h = src;
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        _mm256_storeu_ps(dst + i, load8(h, i, FK_BF16));
    }
    for (; i < n; i++) {
        dst[i] = eng_bf16_to_fp32(h[i]);
    }
}

/* Quantizes 32 floats times id into 32 signed bytes (rounding half to even, as the
 * reference does); part is scratch for the four int32 vectors. */
ALWAYS_INLINE __m256i q8_32(const float *x, float id, __m256i part[4])
{
    const __m256 vid = _mm256_set1_ps(id);
    UNROLL_NX for (int l = 0; l < 4; l++) {
        __m256 v = _mm256_round_ps(_mm256_mul_ps(_mm256_loadu_ps(x + 8 * l), vid),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        part[l] = _mm256_cvtps_epi32(v);
    }
    __m256i p01 = _mm256_packs_epi32(part[0], part[1]);
    __m256i p23 = _mm256_packs_epi32(part[2], part[3]);
    __m256i p = _mm256_packs_epi16(p01, p23);
    /* the packs work per 128-bit lane: put the 4-byte groups back in order */
    p = _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
    /* keep -127..127 like the reference (NaN/huge inputs would otherwise give -128) */
    return _mm256_max_epi8(p, _mm256_set1_epi8(-127));
}

ALWAYS_INLINE float absmax32(const float *x)
{
    const __m256 mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    __m256 m = _mm256_and_ps(_mm256_loadu_ps(x), mask);
    UNROLL_NX for (int l = 1; l < 4; l++) {
        m = _mm256_max_ps(m, _mm256_and_ps(_mm256_loadu_ps(x + 8 * l), mask));
    }
    __m128 s = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
    s = _mm_max_ps(s, _mm_movehl_ps(s, s));
    s = _mm_max_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

static void quant_q8_0(const float *x, void *dst, int64_t n)
{
    struct eng_block_q8_0 *y = dst;
    __m256i part[4];
    for (int64_t b = 0; b < n / ENG_QK; b++, x += ENG_QK) {
        float amax = absmax32(x);
        float d = amax / 127.0f;
        float id = d != 0.0f ? 127.0f / amax : 0.0f;
        y[b].d = _cvtss_sh(d, _MM_FROUND_TO_NEAREST_INT);
        _mm256_storeu_si256((__m256i *)y[b].qs, q8_32(x, id, part));
    }
}

static void quant_q8_1(const float *x, void *dst, int64_t n)
{
    struct eng_block_q8_1 *y = dst;
    __m256i part[4];
    for (int64_t b = 0; b < n / ENG_QK; b++, x += ENG_QK) {
        float amax = absmax32(x);
        float d = amax / 127.0f;
        float id = d != 0.0f ? 127.0f / amax : 0.0f;
        __m256i q = q8_32(x, id, part);
        _mm256_storeu_si256((__m256i *)y[b].qs, q);
        int sum = hsum_epi32(_mm256_madd_epi16(_mm256_cvtepi8_epi16(_mm256_castsi256_si128(q)),
                                               _mm256_set1_epi16(1))) +
                  hsum_epi32(_mm256_madd_epi16(
                      _mm256_cvtepi8_epi16(_mm256_extracti128_si256(q, 1)), _mm256_set1_epi16(1)));
        y[b].d = _cvtss_sh(d, _MM_FROUND_TO_NEAREST_INT);
        y[b].s = _cvtss_sh(d * (float)sum, _MM_FROUND_TO_NEAREST_INT);
    }
}

static void quant_q8_K(const float *x, void *dst, int64_t n)
{
    struct eng_block_q8_K *y = dst;
    __m256i part[4];
    for (int64_t b = 0; b < n / ENG_QK_K; b++, x += ENG_QK_K) {
        float amax = 0.0f;
        for (int l = 0; l < ENG_QK_K; l += 32) {
            float m = absmax32(x + l);
            amax = m > amax ? m : amax;
        }
        float id = amax != 0.0f ? 127.0f / amax : 0.0f;
        y[b].d = amax / 127.0f;
        for (int l = 0; l < ENG_QK_K / 32; l++) {
            __m256i q = q8_32(x + 32 * l, id, part);
            _mm256_storeu_si256((__m256i *)(y[b].qs + 32 * l), q);
            __m256i w = _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_set1_epi8(1), q),
                                          _mm256_set1_epi16(1));
            /* w holds sums of 4 bytes; lanes 0-3 are the first 16 bytes, 4-7 the next 16 */
            __m128i lo = _mm256_castsi256_si128(w), hi = _mm256_extracti128_si256(w, 1);
            lo = _mm_hadd_epi32(lo, hi); /* (a0+a1, a2+a3, b0+b1, b2+b3) */
            lo = _mm_hadd_epi32(lo, lo); /* (sum a, sum b, ...) */
            y[b].bsums[2 * l] = (int16_t)_mm_cvtsi128_si32(lo);
            y[b].bsums[2 * l + 1] = (int16_t)_mm_extract_epi32(lo, 1);
        }
    }
}

/* ---- repacked Q4_0 (eng_block_q4_0x8): 8 rows per block, one row per 32-bit lane ---- */

/* One block of 8 rows against one token: 8 maddubs of the unpacked nibbles (4 elements of
 * every row per register) with those 4 activation bytes broadcast, summed exactly in int16
 * (8 x 2 x 15 x 128 < 32767), then one madd to the 8 rows' int32 dots of the unsigned levels,
 * minus 8 x the block's activation sum (the levels' offset), converted and scaled at once. */
ALWAYS_INLINE __m256 r8_block_token(const __m256i u[8], const int8_t *xq, int32_t xsum8,
                                    __m256 dw, float dx, __m256 acc)
{
    const int32_t *xs = (const int32_t *)(const void *)xq;
    __m256i p[4];
    UNROLL_NX
    for (int q = 0; q < 4; q++) {
        int32_t lo, hi;
        memcpy(&lo, xs + 2 * q, 4);
        memcpy(&hi, xs + 2 * q + 1, 4);
        p[q] = _mm256_add_epi16(_mm256_maddubs_epi16(u[2 * q], _mm256_set1_epi32(lo)),
                                _mm256_maddubs_epi16(u[2 * q + 1], _mm256_set1_epi32(hi)));
    }
    __m256i s = _mm256_add_epi16(_mm256_add_epi16(p[0], p[1]), _mm256_add_epi16(p[2], p[3]));
    __m256i d = _mm256_sub_epi32(_mm256_madd_epi16(s, _mm256_set1_epi16(1)),
                                 _mm256_set1_epi32(xsum8));
    return _mm256_fmadd_ps(_mm256_mul_ps(dw, _mm256_set1_ps(dx)), _mm256_cvtepi32_ps(d), acc);
}

/* Prefetches ahead along the rows, unpacks block b's nibbles into u (u[2q]: elements 8q..8q+3
 * of the 8 rows, u[2q + 1]: 8q+4..8q+7; values 0..15) and returns its 8 scales. */
ALWAYS_INLINE __m256 r8_unpack(const struct eng_block_q4_0x8 *b, __m256i m4, __m256i u[8])
{
    const char *bp = (const char *)b;
    _mm_prefetch(bp + PF_DIST, _MM_HINT_T0);
    _mm_prefetch(bp + PF_DIST + 64, _MM_HINT_T0);
    _mm_prefetch(bp + PF_DIST + 128, _MM_HINT_T0);
    UNROLL_NX
    for (int q = 0; q < 4; q++) {
        __m256i c = loadu256(b->qs + 32 * q);
        u[2 * q] = _mm256_and_si256(c, m4);
        u[2 * q + 1] = _mm256_and_si256(_mm256_srli_epi16(c, 4), m4);
    }
    return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(const void *)b->d));
}

ALWAYS_INLINE void gemm_r8_impl(int64_t k, const struct eng_block_q4_0x8 *w, int64_t n_rows,
                                const void *x, size_t x_stride, const int nx, const float *xd,
                                const int32_t *xs8, float *y, int64_t ldy)
{
    const int64_t nb = k / ENG_QK;
    /* per token and block: the scale as a float and 8 x the sum of the int8 values, given or
     * computed here */
    float dx_own[ENG_DOT_NX][ENG_GEMM_MAX_BLOCKS];
    int32_t s8_own[ENG_DOT_NX][ENG_GEMM_MAX_BLOCKS];
    const float *dx[ENG_DOT_NX];
    const int32_t *sum8[ENG_DOT_NX];
    const struct eng_block_q8_0 *xb[ENG_DOT_NX];
    const __m256i ones8 = _mm256_set1_epi8(1);
    for (int j = 0; j < nx; j++) {
        xb[j] = (const struct eng_block_q8_0 *)(const void *)((const char *)x + (size_t)j * x_stride);
        if (xd) {
            dx[j] = xd + (size_t)j * (size_t)nb;
            sum8[j] = xs8 + (size_t)j * (size_t)nb;
            continue;
        }
        dx[j] = dx_own[j];
        sum8[j] = s8_own[j];
        for (int64_t i = 0; i < nb; i++) {
            __m256i v = _mm256_madd_epi16(_mm256_maddubs_epi16(ones8, loadu256(xb[j][i].qs)),
                                          _mm256_set1_epi16(1));
            __m128i h = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
            h = _mm_add_epi32(h, _mm_shuffle_epi32(h, 0x4E));
            h = _mm_add_epi32(h, _mm_shuffle_epi32(h, 0xB1));
            s8_own[j][i] = 8 * _mm_cvtsi128_si32(h);
            dx_own[j][i] = _cvtsh_ss(xb[j][i].d);
        }
    }
    const __m256i m4 = _mm256_set1_epi8(0x0F);
    for (int64_t g = 0; g < n_rows / 8; g++) {
        const struct eng_block_q4_0x8 *gb = w + g * nb;
        __m256 acc[ENG_DOT_NX];
        for (int j = 0; j < nx; j++) {
            acc[j] = _mm256_setzero_ps();
        }
        for (int64_t i = 0; i < nb; i++) {
            __m256i u[8];
            __m256 dw = r8_unpack(gb + i, m4, u);
            UNROLL_NX
            for (int j = 0; j < nx; j++) {
                acc[j] = r8_block_token(u, xb[j][i].qs, sum8[j][i], dw, dx[j][i], acc[j]);
            }
        }
        for (int j = 0; j < nx; j++) {
            _mm256_storeu_ps(y + (int64_t)j * ldy + g * 8, acc[j]);
        }
    }
}

static void gemm_q4_0r8(int64_t k, const struct eng_block_q4_0x8 *w, int64_t n_rows,
                        const void *x, size_t x_stride, int nx, const float *xd,
                        const int32_t *xs8, float *y, int64_t ldy)
{
    switch (nx) {
    case 1:
        gemm_r8_impl(k, w, n_rows, x, x_stride, 1, xd, xs8, y, ldy);
        break;
    case 2:
        gemm_r8_impl(k, w, n_rows, x, x_stride, 2, xd, xs8, y, ldy);
        break;
    case 3:
        gemm_r8_impl(k, w, n_rows, x, x_stride, 3, xd, xs8, y, ldy);
        break;
    default:
        gemm_r8_impl(k, w, n_rows, x, x_stride, 4, xd, xs8, y, ldy);
        break;
    }
}

/* ---- repacked Q4_0 against a prompt's tokens: the activations broadcast once ----
 *
 * gemm_r8_impl broadcasts each token's 4-byte activation groups again for every group of 8
 * rows, and with its 8 unpacked weight vectors and 4 accumulators GCC spills in the loop. For
 * a prompt (R8_MANY_MIN_TOK tokens or more, quant.c) the broadcasts are written once, R8B_NT
 * tokens by R8B_KC blocks at a time, into a buffer that stays in L1 (struct r8b_act, with each
 * block's scale and 8 x its sum as vectors too); maddubs takes them from memory while every
 * group of rows of a tile passes over them (the tile's R8B_KC blocks, ROW_TILE_R8B bytes of
 * weights, stay in L2 while all the tokens pass), and the 4-token loop is written out in
 * assembly (r8b_group4) so that nothing spills. Measured on the 2-core Zen 3, alternating with
 * the previous build (BENCHMARKS.md): TinyLlama Q4_0 prompt of 128 tokens on one thread 62.6
 * -> 66.1 tok/s (medians of 7); for 8 tokens the kernel was slower than gemm_r8_impl's tiles,
 * for 16 even (bench_kernels --batch), hence the threshold. The arithmetic is gemm_r8_impl's,
 * operation for operation (the block's exact integer dot, then acc = fma(d_w * d_x, dot, acc)
 * in block order; the accumulators wait in y between chunks of blocks), so a token's values do
 * not depend on which kernel computed them (test_kernels_r8). */
struct r8b_act {
    int8_t q[8][32]; /* q[p]: activation bytes 4p..4p+3 of the block, 8 times */
    int32_t s8[8];   /* 8 x the sum of the block's 32 values, 8 times */
    float d[8];      /* the block's scale, 8 times */
};
_Static_assert(sizeof(struct r8b_act) == 320, "r8b_act layout");

#define R8B_NT 4
#define R8B_KC 16 /* 4 tokens x 16 blocks x 320 bytes = 20 KiB */
#define ROW_TILE_R8B (256 * 1024)

static _Thread_local _Alignas(64) struct r8b_act r8b_buf[R8B_KC * R8B_NT];
/* The asm's constants: the low nibble mask, then 1 as int16 (madd's pairwise sums). */
static const struct {
    _Alignas(32) uint8_t m4[32];
    int16_t ones[16];
} r8b_const = {
    {0x0F, 0x0F, 0x0F, 0x0F, 0x0F, 0x0F, 0x0F, 0x0F, 0x0F, 0x0F, 0x0F,
     0x0F, 0x0F, 0x0F, 0x0F, 0x0F, 0x0F, 0x0F, 0x0F, 0x0F, 0x0F, 0x0F,
     0x0F, 0x0F, 0x0F, 0x0F, 0x0F, 0x0F, 0x0F, 0x0F, 0x0F, 0x0F},
    {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1},
};

/* Blocks [b0, b0 + bn) of nt tokens into r8b_buf[i * R8B_NT + j]. */
static void r8b_fill(const unsigned char *x, size_t x_stride, const float *xd, const int32_t *xs8,
                     int64_t nb, int nt, int64_t b0, int64_t bn)
{
    for (int64_t i = 0; i < bn; i++) {
        for (int j = 0; j < nt; j++) {
            const struct eng_block_q8_0 *b =
                (const struct eng_block_q8_0 *)(const void *)(x + (size_t)j * x_stride) + b0 + i;
            struct r8b_act *o = &r8b_buf[i * R8B_NT + j];
            for (int p = 0; p < 8; p++) {
                int32_t v;
                memcpy(&v, b->qs + 4 * p, 4);
                _mm256_store_si256((__m256i *)(void *)o->q[p], _mm256_set1_epi32(v));
            }
            _mm256_store_si256((__m256i *)(void *)o->s8, _mm256_set1_epi32(xs8[j * nb + b0 + i]));
            _mm256_store_ps(o->d, _mm256_set1_ps(xd[j * nb + b0 + i]));
        }
    }
}

/* One group of 8 rows (its blocks b0.. in gb) over bn blocks of the NT tokens in r8b_buf;
 * the accumulators start from y (first false) or zero and end in y[j * ldy + r]. */
ALWAYS_INLINE void r8b_group(const struct eng_block_q4_0x8 *gb, int64_t bn, bool first, float *y,
                             int64_t ldy, const int NT)
{
    const __m256i m4 = _mm256_set1_epi8(0x0F), ones16 = _mm256_set1_epi16(1);
    __m256 acc[R8B_NT];
    UNROLL_NX
    for (int j = 0; j < NT; j++) {
        acc[j] = first ? _mm256_setzero_ps() : _mm256_loadu_ps(y + j * ldy);
    }
    for (int64_t i = 0; i < bn; i++) {
        __m256i u[8];
        __m256 dw = r8_unpack(gb + i, m4, u);
        UNROLL_NX
        for (int j = 0; j < NT; j++) {
            const struct r8b_act *a = &r8b_buf[i * R8B_NT + j];
            const __m256i *aq = (const __m256i *)(const void *)a->q;
            __m256i s = _mm256_maddubs_epi16(u[0], _mm256_load_si256(aq));
            UNROLL_8
            for (int p = 1; p < 8; p++) {
                s = _mm256_add_epi16(s, _mm256_maddubs_epi16(u[p], _mm256_load_si256(aq + p)));
            }
            __m256i d = _mm256_sub_epi32(_mm256_madd_epi16(s, ones16),
                                         _mm256_load_si256((const __m256i *)(const void *)a->s8));
            acc[j] = _mm256_fmadd_ps(_mm256_mul_ps(dw, _mm256_load_ps(a->d)), _mm256_cvtepi32_ps(d),
                                     acc[j]);
        }
    }
    UNROLL_NX
    for (int j = 0; j < NT; j++) {
        _mm256_storeu_ps(y + j * ldy, acc[j]);
    }
}

#if defined(__x86_64__) && defined(__GNUC__)
/* r8b_group for R8B_NT (4) tokens, written out: with the 8 unpacked weight vectors, the 4
 * accumulators, the block's scales and the two constants live, GCC spills in the loop
 * (llvm-mca -mcpu=znver3 on its code: 35 cycles per block, 21 stack accesses; this
 * sequence: 29, none). Operation for operation the intrinsics above: ymm0-7 the unpacked
 * weights u[0..7], ymm8 the int16 sum then the dot, ymm9 a product, ymm10 the 8 rows'
 * scales, ymm11 int16 ones; the accumulators in registers of the compiler's choice. */
#define R8B_TOKEN(J)                                                                               \
    "vpmaddubsw " #J "*320+0(%[a]), %%ymm0, %%ymm8\n\t"                                            \
    "vpmaddubsw " #J "*320+32(%[a]), %%ymm1, %%ymm9\n\t"                                           \
    "vpaddw %%ymm9, %%ymm8, %%ymm8\n\t"                                                            \
    "vpmaddubsw " #J "*320+64(%[a]), %%ymm2, %%ymm9\n\t"                                           \
    "vpaddw %%ymm9, %%ymm8, %%ymm8\n\t"                                                            \
    "vpmaddubsw " #J "*320+96(%[a]), %%ymm3, %%ymm9\n\t"                                           \
    "vpaddw %%ymm9, %%ymm8, %%ymm8\n\t"                                                            \
    "vpmaddubsw " #J "*320+128(%[a]), %%ymm4, %%ymm9\n\t"                                          \
    "vpaddw %%ymm9, %%ymm8, %%ymm8\n\t"                                                            \
    "vpmaddubsw " #J "*320+160(%[a]), %%ymm5, %%ymm9\n\t"                                          \
    "vpaddw %%ymm9, %%ymm8, %%ymm8\n\t"                                                            \
    "vpmaddubsw " #J "*320+192(%[a]), %%ymm6, %%ymm9\n\t"                                          \
    "vpaddw %%ymm9, %%ymm8, %%ymm8\n\t"                                                            \
    "vpmaddubsw " #J "*320+224(%[a]), %%ymm7, %%ymm9\n\t"                                          \
    "vpaddw %%ymm9, %%ymm8, %%ymm8\n\t"                                                            \
    "vpmaddwd %%ymm11, %%ymm8, %%ymm8\n\t"                                                         \
    "vpsubd " #J "*320+256(%[a]), %%ymm8, %%ymm8\n\t"                                              \
    "vcvtdq2ps %%ymm8, %%ymm8\n\t"                                                                 \
    "vmulps " #J "*320+288(%[a]), %%ymm10, %%ymm9\n\t"                                             \
    "vfmadd231ps %%ymm9, %%ymm8, %[acc" #J "]\n\t"

_Static_assert(R8B_NT == 4, "r8b_group4 is written out for 4 tokens");

static void r8b_group4(const struct eng_block_q4_0x8 *gb, int64_t bn, bool first, float *y,
                       int64_t ldy)
{
    __m256 acc0, acc1, acc2, acc3;
    if (first) {
        acc0 = acc1 = acc2 = acc3 = _mm256_setzero_ps();
    } else {
        acc0 = _mm256_loadu_ps(y);
        acc1 = _mm256_loadu_ps(y + ldy);
        acc2 = _mm256_loadu_ps(y + 2 * ldy);
        acc3 = _mm256_loadu_ps(y + 3 * ldy);
    }
    const struct eng_block_q4_0x8 *w = gb, *end = gb + bn;
    const struct r8b_act *a = r8b_buf;
    /* clang-format off */
    __asm__ volatile(
        "vmovdqa 32(%[c]), %%ymm11\n\t"
        "1:\n\t"
        "prefetcht0 %c[pf](%[w])\n\t"
        "prefetcht0 %c[pf]+64(%[w])\n\t"
        "prefetcht0 %c[pf]+128(%[w])\n\t"
        "vcvtph2ps (%[w]), %%ymm10\n\t"
        /* u[2q] = qs[32q..] & 15 in ymm(2q), u[2q + 1] = (qs >> 4) & 15 */
        "vmovdqu 16(%[w]), %%ymm0\n\t"
        "vpsrlw $4, %%ymm0, %%ymm1\n\t"
        "vpand (%[c]), %%ymm0, %%ymm0\n\t"
        "vpand (%[c]), %%ymm1, %%ymm1\n\t"
        "vmovdqu 48(%[w]), %%ymm2\n\t"
        "vpsrlw $4, %%ymm2, %%ymm3\n\t"
        "vpand (%[c]), %%ymm2, %%ymm2\n\t"
        "vpand (%[c]), %%ymm3, %%ymm3\n\t"
        "vmovdqu 80(%[w]), %%ymm4\n\t"
        "vpsrlw $4, %%ymm4, %%ymm5\n\t"
        "vpand (%[c]), %%ymm4, %%ymm4\n\t"
        "vpand (%[c]), %%ymm5, %%ymm5\n\t"
        "vmovdqu 112(%[w]), %%ymm6\n\t"
        "vpsrlw $4, %%ymm6, %%ymm7\n\t"
        "vpand (%[c]), %%ymm6, %%ymm6\n\t"
        "vpand (%[c]), %%ymm7, %%ymm7\n\t"
        R8B_TOKEN(0) R8B_TOKEN(1) R8B_TOKEN(2) R8B_TOKEN(3)
        "add %[wstep], %[w]\n\t"
        "add %[astep], %[a]\n\t"
        "cmp %[w], %[end]\n\t"
        "jne 1b\n\t"
        : [w] "+r"(w), [a] "+r"(a), [acc0] "+x"(acc0), [acc1] "+x"(acc1), [acc2] "+x"(acc2),
          [acc3] "+x"(acc3)
        : [end] "r"(end), [c] "r"(&r8b_const), [pf] "i"(PF_DIST),
          [wstep] "i"(sizeof(struct eng_block_q4_0x8)),
          [astep] "i"(R8B_NT * sizeof(struct r8b_act))
        : "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", "xmm9",
          "xmm10", "xmm11", "memory", "cc");
    /* clang-format on */
    _mm256_storeu_ps(y, acc0);
    _mm256_storeu_ps(y + ldy, acc1);
    _mm256_storeu_ps(y + 2 * ldy, acc2);
    _mm256_storeu_ps(y + 3 * ldy, acc3);
}
#define R8B_GROUP4(gb, bn, first, y, ldy) r8b_group4(gb, bn, first, y, ldy)
#else
#define R8B_GROUP4(gb, bn, first, y, ldy) r8b_group(gb, bn, first, y, ldy, R8B_NT)
#endif

static void r8b_groups(const struct eng_block_q4_0x8 *w, int64_t nb, int64_t g0, int64_t g1,
                       int64_t b0, int64_t bn, float *y, int64_t ldy, int nt)
{
    for (int64_t g = g0; g < g1; g++) {
        const struct eng_block_q4_0x8 *gb = w + g * nb + b0;
        float *yg = y + g * 8;
        switch (nt) {
        case 1:
            r8b_group(gb, bn, b0 == 0, yg, ldy, 1);
            break;
        case 2:
            r8b_group(gb, bn, b0 == 0, yg, ldy, 2);
            break;
        case 3:
            r8b_group(gb, bn, b0 == 0, yg, ldy, 3);
            break;
        default:
            R8B_GROUP4(gb, bn, b0 == 0, yg, ldy);
            break;
        }
    }
}

static void gemm_q4_0r8_many(int64_t k, const struct eng_block_q4_0x8 *w, int64_t n_rows,
                             const void *x, size_t x_stride, int64_t n_tok, const float *xd,
                             const int32_t *xs8, float *y, int64_t ldy)
{
    const int64_t nb = k / ENG_QK, groups = n_rows / 8;
    /* groups per tile: their R8B_KC-block slab stays in L2 while every token passes */
    const int64_t tile = (int64_t)(ROW_TILE_R8B / (sizeof(*w) * R8B_KC));
    for (int64_t g0 = 0; g0 < groups; g0 += tile) {
        int64_t g1 = g0 + tile < groups ? g0 + tile : groups;
        for (int64_t b0 = 0; b0 < nb; b0 += R8B_KC) {
            int64_t bn = nb - b0 < R8B_KC ? nb - b0 : R8B_KC;
            for (int64_t t0 = 0; t0 < n_tok; t0 += R8B_NT) {
                int nt = n_tok - t0 < R8B_NT ? (int)(n_tok - t0) : R8B_NT;
                const unsigned char *xt = (const unsigned char *)x + (size_t)t0 * x_stride;
                r8b_fill(xt, x_stride, xd + t0 * nb, xs8 + t0 * nb, nb, nt, b0, bn);
                r8b_groups(w, nb, g0, g1, b0, bn, y + t0 * ldy, ldy, nt);
            }
        }
    }
}

static struct eng_kernel_table avx2_table;
static pthread_once_t avx2_once = PTHREAD_ONCE_INIT;

static void avx2_fill(void)
{
    struct eng_kernel_table *t = &avx2_table;
    eng_kernels_ref_fill(t); /* weight quantizers and the rest dequantizers stay scalar */
    t->name = "avx2";
    t->dequant[ENG_TYPE_F16] = dequant_f16;
    t->dequant[ENG_TYPE_BF16] = dequant_bf16;
    t->quant[ENG_TYPE_F16] = quant_f16;
    t->quant[ENG_TYPE_Q8_0] = quant_q8_0;
    t->quant[ENG_TYPE_Q8_1] = quant_q8_1;
    t->quant[ENG_TYPE_Q8_K] = quant_q8_K;
    t->dot[ENG_TYPE_F32] = dot_f32;
    t->dot[ENG_TYPE_F16] = dot_f16;
    t->dot[ENG_TYPE_BF16] = dot_bf16;
    t->dot[ENG_TYPE_Q8_0] = dot_q8_0;
    t->dot[ENG_TYPE_Q4_0] = dot_q4_0;
    t->dot[ENG_TYPE_Q5_0] = dot_q5_0;
    t->dot2[ENG_TYPE_Q8_0] = dot2_q8_0;
    t->dot2[ENG_TYPE_Q4_0] = dot2_q4_0;
    t->dot2[ENG_TYPE_Q5_0] = dot2_q5_0;
    t->gemv[ENG_TYPE_Q8_0] = gemv_q8_0;
    t->gemv[ENG_TYPE_Q4_0] = gemv_q4_0;
    t->gemv[ENG_TYPE_Q5_0] = gemv_q5_0;
    t->gemm[ENG_TYPE_Q8_0] = gemm_q8_0;
    t->gemm[ENG_TYPE_Q4_0] = gemm_q4_0;
    t->gemm[ENG_TYPE_Q5_0] = gemm_q5_0;
    t->gemm8[ENG_TYPE_Q8_0] = gemm8_q8_0;
    t->gemm8[ENG_TYPE_Q4_0] = gemm8_q4_0;
    t->gemm_q4_0r8 = gemm_q4_0r8;
    t->gemm_q4_0r8_many = gemm_q4_0r8_many;
    t->dot[ENG_TYPE_Q4_1] = dot_q4_1;
    t->dot[ENG_TYPE_Q5_1] = dot_q5_1;
    t->dot[ENG_TYPE_Q4_K] = dot_q4_K;
    t->dot[ENG_TYPE_Q5_K] = dot_q5_K;
    t->dot[ENG_TYPE_Q6_K] = dot_q6_K;
}

const struct eng_kernel_table *eng_kernels_avx2(void)
{
    pthread_once(&avx2_once, avx2_fill);
    return &avx2_table;
}
