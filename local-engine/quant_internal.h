/* Internal to the kernels: ggml's block layouts (bit-exact, checked by static_assert), exact
 * F16/BF16 conversions, and the kernel table that the scalar reference (quant_ref.c) and the
 * AVX2/FMA/F16C build (quant_avx2.c) each fill. quant.c picks one table at start-up; tests
 * call both tables directly to compare them. Any thread. */
#ifndef WYE_ENGINE_QUANT_INTERNAL_H
#define WYE_ENGINE_QUANT_INTERNAL_H

#include <assert.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "local-engine/types.h"

#define ENG_QK 32   /* elements per block of Q4_0, Q4_1, Q5_0, Q8_0, Q8_1 */
#define ENG_QK_K 256 /* elements per super-block of the K-quants and Q8_K */
#define ENG_K_SCALE_SIZE 12

/* Every half is an IEEE binary16 stored little-endian, as in the file. */
struct eng_block_q4_0 {
    uint16_t d;            /* scale */
    uint8_t qs[ENG_QK / 2]; /* element j in the low nibble of qs[j], element j+16 in the high */
};
struct eng_block_q4_1 {
    uint16_t d; /* scale */
    uint16_t m; /* offset: x = q*d + m */
    uint8_t qs[ENG_QK / 2];
};
struct eng_block_q5_0 {
    uint16_t d;
    uint8_t qh[4]; /* bit j (little-endian u32) is the fifth bit of element j */
    uint8_t qs[ENG_QK / 2];
};
struct eng_block_q5_1 {
    uint16_t d;
    uint16_t m; /* x = q*d + m, q in 0..31 */
    uint8_t qh[4];
    uint8_t qs[ENG_QK / 2];
};
struct eng_block_q8_0 {
    uint16_t d;
    int8_t qs[ENG_QK];
};
struct eng_block_q8_1 {
    uint16_t d;
    uint16_t s; /* d * sum(qs) */
    int8_t qs[ENG_QK];
};
struct eng_block_q4_K {
    uint16_t d;                         /* super-scale of the 6-bit sub-block scales */
    uint16_t dmin;                      /* super-scale of the 6-bit sub-block mins */
    uint8_t scales[ENG_K_SCALE_SIZE];   /* 8 scales + 8 mins, 6 bits each (get_scale_min) */
    uint8_t qs[ENG_QK_K / 2];           /* 4 groups of 64: 32 bytes, low nibbles then high */
};
struct eng_block_q5_K {
    uint16_t d;
    uint16_t dmin;
    uint8_t scales[ENG_K_SCALE_SIZE];
    uint8_t qh[ENG_QK_K / 8]; /* fifth bits: group i uses bits 2i (low half), 2i+1 (high) */
    uint8_t qs[ENG_QK_K / 2];
};
struct eng_block_q6_K {
    uint8_t ql[ENG_QK_K / 2];      /* low 4 bits */
    uint8_t qh[ENG_QK_K / 4];      /* high 2 bits */
    int8_t scales[ENG_QK_K / 16];  /* one signed 8-bit scale per 16 elements */
    uint16_t d;                    /* super-scale */
};
struct eng_block_q8_K {
    float d;
    int8_t qs[ENG_QK_K];
    int16_t bsums[ENG_QK_K / 16]; /* sum of each 16 qs */
};

static_assert(sizeof(struct eng_block_q4_0) == 18, "block_q4_0 layout");
static_assert(sizeof(struct eng_block_q4_1) == 20, "block_q4_1 layout");
static_assert(sizeof(struct eng_block_q5_0) == 22, "block_q5_0 layout");
static_assert(sizeof(struct eng_block_q5_1) == 24, "block_q5_1 layout");
static_assert(sizeof(struct eng_block_q8_0) == 34, "block_q8_0 layout");
static_assert(sizeof(struct eng_block_q8_1) == 36, "block_q8_1 layout");
static_assert(sizeof(struct eng_block_q4_K) == 144, "block_q4_K layout");
static_assert(sizeof(struct eng_block_q5_K) == 176, "block_q5_K layout");
static_assert(sizeof(struct eng_block_q6_K) == 210, "block_q6_K layout");
static_assert(sizeof(struct eng_block_q8_K) == 292, "block_q8_K layout");
static_assert(offsetof(struct eng_block_q6_K, d) == 208, "block_q6_K d offset");

/* Exact IEEE binary16 -> binary32 (every half, incl. subnormals, inf and NaN). */
static inline float eng_fp16_to_fp32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t e = (h >> 10) & 0x1fu;
    uint32_t m = h & 0x3ffu;
    uint32_t bits;
    if (e == 0) {
        /* zero or subnormal: m * 2^-24 is exact in binary32 */
        float f = (float)m * 5.9604644775390625e-8f;
        memcpy(&bits, &f, sizeof(bits));
        bits |= sign;
    } else if (e == 31) {
        bits = sign | 0x7f800000u | (m << 13);
    } else {
        bits = sign | ((e + 112u) << 23) | (m << 13);
    }
    float out;
    memcpy(&out, &bits, sizeof(out));
    return out;
}

/* binary32 -> binary16, round to nearest even (as F16C with imm 0): overflow gives inf,
 * NaN stays NaN (quiet), tiny values become subnormals or signed zero. */
static inline uint16_t eng_fp32_to_fp16(float f)
{
    uint32_t x;
    memcpy(&x, &f, sizeof(x));
    uint32_t sign = (x >> 16) & 0x8000u;
    uint32_t ax = x & 0x7fffffffu;
    if (ax > 0x7f800000u) {
        return (uint16_t)(sign | 0x7e00u | ((ax >> 13) & 0x3ffu));
    }
    if (ax >= 0x477ff000u) { /* >= 65520 rounds past 65504 */
        return (uint16_t)(sign | 0x7c00u);
    }
    uint32_t e = ax >> 23;
    if (e < 113) { /* below 2^-14: a half subnormal (or zero) */
        uint32_t shift = 126 - e;
        if (shift > 24) {
            return (uint16_t)sign;
        }
        uint32_t m = (ax & 0x7fffffu) | 0x800000u;
        uint32_t q = m >> shift;
        uint32_t rem = m & ((1u << shift) - 1);
        uint32_t half = 1u << (shift - 1);
        if (rem > half || (rem == half && (q & 1u))) {
            q++;
        }
        return (uint16_t)(sign | q);
    }
    uint32_t base = ((e - 112) << 10) | ((ax & 0x7fffffu) >> 13);
    uint32_t rem = ax & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (base & 1u))) {
        base++; /* a carry into the exponent is the right answer */
    }
    return (uint16_t)(sign | base);
}

static inline float eng_bf16_to_fp32(uint16_t h)
{
    uint32_t bits = (uint32_t)h << 16;
    float out;
    memcpy(&out, &bits, sizeof(out));
    return out;
}

/* Round to nearest even; NaN stays a quiet NaN. */
static inline uint16_t eng_fp32_to_bf16(float f)
{
    uint32_t x;
    memcpy(&x, &f, sizeof(x));
    if ((x & 0x7fffffffu) > 0x7f800000u) {
        return (uint16_t)((x >> 16) | 0x40u);
    }
    return (uint16_t)((x + 0x7fffu + ((x >> 16) & 1u)) >> 16);
}

/* Unpacks the 6-bit scale and min of sub-block j (0..7) of a Q4_K/Q5_K block. */
static inline void eng_k_scale_min(int j, const uint8_t *q, uint8_t *sc, uint8_t *mn)
{
    if (j < 4) {
        *sc = q[j] & 63;
        *mn = q[j + 4] & 63;
    } else {
        *sc = (uint8_t)((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4));
        *mn = (uint8_t)((q[j + 4] >> 4) | ((q[j] >> 6) << 4));
    }
}

/* The dot kernels take one weight row and up to ENG_DOT_NX activation rows. */
#define ENG_DOT_NX 4

typedef void (*eng_dequant_fn)(const void *src, float *dst, int64_t n);
typedef void (*eng_quant_fn)(const float *src, void *dst, int64_t n);
/* out[j] = dot(weight row w, activation row j) for j in [0, nx), 1 <= nx <= ENG_DOT_NX;
 * activation row j starts at (const char *)x + j * x_stride. k is a multiple of the
 * weight type's block (any k >= 0 for F32/F16/BF16). */
typedef void (*eng_dot_fn)(int64_t k, const void *w, const void *x, size_t x_stride, int nx,
                           float *out);

/* Two weight rows (w and w + w_stride) against nx activation rows: out[j] for the first row,
 * out[ENG_DOT_NX + j] for the second. Shares each activation load between the rows. */
typedef void (*eng_dot2_fn)(int64_t k, const void *w, size_t w_stride, const void *x,
                            size_t x_stride, int nx, float *out);

/* Decode (one token): weight rows w, w + w_stride, ... (n_rows of them) against one Q8_0
 * activation row x whose per-block scales (as floats) and int8 sums were computed once by
 * eng_act_prep_q8_0: y[r] = dot(row r, x). k is a multiple of 32. */
typedef void (*eng_gemv_fn)(int64_t k, const void *w, size_t w_stride, int64_t n_rows,
                            const void *x, const float *xd, const float *xsum, float *y);

/* Most blocks of one activation row that the decode path prepares on the stack (k up to
 * 32768); longer rows use the dot kernels. */
#define ENG_GEMV_MAX_BLOCKS 1024

/* Prompt processing: weight rows w, w + w_stride, ... (n_rows of them) against nx (1..4)
 * Q8_0 activation rows x_stride apart: y[j * ldy + r] = dot(row r, activation row j). k is a
 * multiple of 32 with k / 32 <= ENG_GEMM_MAX_BLOCKS. */
typedef void (*eng_gemm_fn)(int64_t k, const void *w, size_t w_stride, int64_t n_rows,
                            const void *x, size_t x_stride, int nx, float *y, int64_t ldy);

/* Most blocks per row for the gemm kernels (k up to 16384), which keep the activations'
 * scales and sums on the stack; longer rows use the dot2/dot kernels. */
#define ENG_GEMM_MAX_BLOCKS 512

/* Tokens per group of the batched kernels (gemm8). */
#define ENG_GEMM8_NX 8

/* One Q8_0 block (32 elements) of 8 tokens, interleaved for the batched kernels: the 32
 * bytes at qs + 64j + 32q hold, for tokens 4q..4q+3 in turn, elements 4j..4j+3 (low 16
 * bytes) and then elements 16+4j..16+4j+3 (high 16 bytes); element e of token 4q+t is at
 * qs[64 * (e % 16 / 4) + 32 * q + 16 * (e / 16) + 4 * t + e % 4]. d and s: each token's
 * scale and the sum of its 32 values. Tokens past the group's last are zero. A group's
 * blocks are contiguous. */
struct eng_block_q8_0x8 {
    int8_t qs[ENG_GEMM8_NX * ENG_QK];
    float d[ENG_GEMM8_NX];
    int32_t s[ENG_GEMM8_NX];
};
static_assert(sizeof(struct eng_block_q8_0x8) == 320, "block_q8_0x8 layout");

/* Batched (5 or more tokens): weight rows w, w + w_stride, ... (n_rows of them) against one
 * group of nx (1..8) tokens packed by eng_act_pack_q8_0x8 (k / 32 blocks, 32-byte aligned):
 * y[j * ldy + r] = dot(row r, token j). Each (row, token) is computed with exactly the
 * operations of the table's gemm kernel (block integer sums, then acc = fma(d_w * d_x, sum,
 * acc) block by block), so the two give bit-identical results and a token's output does not
 * depend on how many tokens share its batch. */
typedef void (*eng_gemm8_fn)(int64_t k, const void *w, size_t w_stride, int64_t n_rows,
                             const struct eng_block_q8_0x8 *x8, int nx, float *y, int64_t ldy);

/* Q4_0 weights repacked in groups of 8 rows (eng_q4_0r8_pack) for the decode and prompt
 * kernels: the matrix is m / 8 groups, each group its nb = k / 32 blocks in order, 144 bytes
 * per block of 8 rows (the 8 rows' 18 bytes, so the matrix keeps its size):
 *   d[r]                  the scale of row r (binary16), r = 0..7;
 *   qs[32 q + 4 r + s]    low nibble: element 8q + s of row r; high nibble: element 8q + 4 + s
 *                         (q = 0..3, s = 0..3); values 0..15 as in Q4_0 (element = (v - 8) d).
 * So one 32-byte load holds 4 consecutive elements of all 8 rows per nibble, one 32-bit lane
 * per row: maddubs against those 4 activation bytes broadcast gives each row's partial dot
 * in its own lane, and a block ends with one convert + FMA for 8 rows (no horizontal sums,
 * the 8 scales converted at once). */
struct eng_block_q4_0x8 {
    uint16_t d[8];
    uint8_t qs[128];
};
static_assert(sizeof(struct eng_block_q4_0x8) == 144, "block_q4_0x8 layout");

/* Repacked Q4_0 (groups of 8 rows, n_rows a multiple of 8) against nx (1..ENG_DOT_NX) Q8_0
 * activation rows x_stride bytes apart: y[j * ldy + r] = dot(row r, activation row j), k a
 * multiple of 32 with k / 32 <= ENG_GEMM_MAX_BLOCKS. Every (row, token) is computed block by
 * block from the exact block integer dot, in an order that does not depend on nx (AVX2:
 * acc = fma(d_w * d_x, dot, acc); scalar: acc += d_w * d_x * dot), so decode, batched decode
 * and prompt give a token the same value. xd and xs8, when not NULL: each activation row's
 * block scales as floats and 8 x its block sums, k / 32 per row (eng_act_prepare_q4_0r8);
 * otherwise the kernel computes them. */
typedef void (*eng_gemm_r8_fn)(int64_t k, const struct eng_block_q4_0x8 *w, int64_t n_rows,
                               const void *x, size_t x_stride, int nx, const float *xd,
                               const int32_t *xs8, float *y, int64_t ldy);

/* Repacked Q4_0 (n_rows a multiple of 8) against n_tok >= 1 Q8_0 activation rows x_stride
 * bytes apart, with their block scales and 8 x their block sums given (xd, xs8: k / 32 per
 * token): y[j * ldy + r] = dot(row r, token j), the same bits as eng_gemm_r8_fn gives. For
 * prompts. Optional (NULL: gemm_q4_0r8 takes the tokens 4 at a time). */
typedef void (*eng_gemm_r8_many_fn)(int64_t k, const struct eng_block_q4_0x8 *w, int64_t n_rows,
                                    const void *x, size_t x_stride, int64_t n_tok, const float *xd,
                                    const int32_t *xs8, float *y, int64_t ldy);

struct eng_kernel_table {
    const char *name;
    eng_dequant_fn dequant[ENG_TYPE__MAX]; /* by type, incl. Q8_0/Q8_1/Q8_K */
    eng_quant_fn quant[ENG_TYPE__MAX];     /* by type; also the activation quantizers */
    eng_dot_fn dot[ENG_TYPE__MAX];         /* by weight type, against eng_act_type(wt) */
    eng_dot2_fn dot2[ENG_TYPE__MAX];       /* optional (NULL: two dot calls) */
    eng_gemv_fn gemv[ENG_TYPE__MAX];       /* optional, Q8_0-activation types only */
    eng_gemm_fn gemm[ENG_TYPE__MAX];       /* optional, Q8_0-activation types only */
    eng_gemm8_fn gemm8[ENG_TYPE__MAX];     /* optional, only where gemm is set too */
    eng_gemm_r8_fn gemm_q4_0r8;            /* repacked Q4_0 (always set) */
    eng_gemm_r8_many_fn gemm_q4_0r8_many;  /* repacked Q4_0, prompts (optional) */
};

/* xd[b] = the scale of Q8_0 block b of x as a float, xsum[b] = the sum of its 32 int8
 * values, for b in [0, nb). */
void eng_act_prep_q8_0(const void *x, int64_t nb, float *xd, float *xsum);

/* Packs nx (1..8) Q8_0 activation rows (x_stride bytes apart, nb blocks each) into nb
 * interleaved blocks (tokens nx..7 zero). */
void eng_act_pack_q8_0x8(const void *x, size_t x_stride, int nx, int64_t nb,
                         struct eng_block_q8_0x8 *out);

/* The activation type a weight type is dotted with (ENG_TYPE__MAX if unsupported). */
uint32_t eng_act_type(uint32_t wt);

/* The scalar reference table (always available). */
const struct eng_kernel_table *eng_kernels_ref(void);
/* The AVX2/FMA/F16C table; only call when eng_cpu_has_avx2() is true. */
const struct eng_kernel_table *eng_kernels_avx2(void);
/* True when the CPU has AVX2, FMA and F16C (ignores WYE_NO_AVX2). */
int eng_cpu_has_avx2(void);
/* The table eng_kernels_init chose. */
const struct eng_kernel_table *eng_kernels_active(void);

/* Fills the shared scalar entries of t (used by both tables). */
void eng_kernels_ref_fill(struct eng_kernel_table *t);

#endif
