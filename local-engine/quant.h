/* The tensor kernels: dequantize/quantize rows of every supported ggml type (block layouts
 * bit-exact with ggml, so GGUF files compute as llama.cpp computes them), quantize
 * activations to each weight type's dot partner (Q8_0, Q8_1, Q8_K or F32), and the matmul
 * of weight rows with activation rows, split across an eng_pool. AVX2/FMA/F16C kernels are
 * chosen at start-up when the CPU has them, scalar ones otherwise. Any thread after
 * eng_kernels_init. Types and lengths are programmer errors here (asserted): callers
 * validate untrusted shapes first (eng_kernels_type_ok). */
#ifndef WYE_ENGINE_QUANT_H
#define WYE_ENGINE_QUANT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "local-engine/types.h"

struct eng_pool;

/* Picks AVX2/FMA or scalar once (WYE_NO_AVX2=1 in the environment forces scalar);
 * idempotent, thread-safe. Every function below calls it on first use too. */
void eng_kernels_init(void);
/* "avx2" or "scalar". */
const char *eng_kernels_name(void);
/* True if the kernels can compute with weight type wt in rows of k elements (k a positive
 * multiple of the type's block). */
bool eng_kernels_type_ok(uint32_t wt, int64_t k);

/* Dequantizes n elements (a multiple of the type's block) of type into dst. */
void eng_dequantize_row(uint32_t type, const void *src, float *dst, int64_t n);
/* Quantizes n floats into type (every supported weight type incl. Q4_K/Q5_K/Q6_K, F16,
 * BF16, F32, and the activation types Q8_0/Q8_1/Q8_K). dst holds eng_type_row_bytes. */
void eng_quantize_row(uint32_t type, const float *src, void *dst, int64_t n);

/* The type activations are quantized to for weight type wt: Q8_0 for Q8_0/Q4_0/Q5_0, Q8_1
 * for Q4_1/Q5_1, Q8_K for the K-quants, F32 for F32/F16/BF16; ENG_TYPE__MAX if unsupported. */
uint32_t eng_act_type_of(uint32_t wt);
/* Bytes of one quantized activation row of k elements for weight type wt. */
size_t eng_act_row_bytes(uint32_t wt, int64_t k);
/* Quantizes one activation row of k floats for weight type wt into xq. */
void eng_act_quantize(uint32_t wt, const float *x, void *xq, int64_t k);

/* y[t*ldy + r] = dot(W row r, activation row t) for r in [r0, r1), t in [0, n_tok); W rows
 * are w_row_bytes apart, activation rows (from eng_act_quantize) xq_row_bytes apart.
 * Tiled so that each weight row is read once per 4 tokens. No allocation. */
void eng_matmul_rows(uint32_t wt, const void *w, size_t w_row_bytes, const void *xq,
                     size_t xq_row_bytes, int64_t k, int64_t n_tok, float *y, int64_t ldy,
                     int64_t r0, int64_t r1);
/* Bytes of scratch eng_matmul and eng_act_prepare need for n_tok activation rows of k
 * elements against weight type wt: the quantized rows, plus for the Q8_0-activation types
 * the per-block scales of one decode row or the rows repacked for the batched kernels.
 * 0 for F32/F16/BF16 weights, which read the activations as they are. */
size_t eng_matmul_scratch_bytes(uint32_t wt, int64_t k, int64_t n_tok);

/* y (n_tok x m, token-major) = x (n_tok x k, token-major) times W^T (W is m rows of k of
 * type wt): prepares the activations once into xq_scratch (eng_matmul_scratch_bytes; may
 * be NULL when that is 0) then splits the rows across the pool (NULL: the caller alone).
 * Runs on the caller and the pool's threads. */
void eng_matmul(struct eng_pool *pool, uint32_t wt, const void *w, int64_t m, int64_t k,
                const float *x, int64_t n_tok, float *y, void *xq_scratch);

/* Activations prepared once (eng_act_prepare) for any number of matmuls over them with
 * weights of the same activation type and row length (Q, K and V; gate and up). Points into
 * the scratch (and x) it was prepared from. */
struct eng_act {
    uint32_t type; /* the activation type (eng_act_type_of) */
    int64_t k, n_tok;
    const void *xq; /* (n_tok rows, xq_row_bytes apart); x itself for float weights */
    size_t xq_row_bytes;
    const void *x8;         /* Q8_0, n_tok >= 5: groups of 8 tokens packed, or NULL */
    const float *xd, *xsum; /* Q8_0, n_tok == 1: block scales and int8 sums, or NULL */
    /* eng_act_prepare_q4_0r8 only: xd then holds every token's block scales (n_tok x k / 32)
     * and xs8 8 x every token's block sums (same shape); xsum is set for n_tok == 1. */
    const int32_t *xs8;
};

/* Quantizes (and packs) n_tok rows of k floats for weight type wt into scratch
 * (eng_matmul_scratch_bytes(wt, k, n_tok) bytes; any alignment), using the pool when there
 * is enough work (NULL: the caller alone), and describes the result in *a. */
void eng_act_prepare(struct eng_pool *pool, uint32_t wt, const float *x, int64_t k, int64_t n_tok,
                     void *scratch, struct eng_act *a);
/* eng_matmul_rows over prepared activations (a->type must be eng_act_type_of(wt), a->k the
 * rows' length): y[t*ldy + r] for r in [r0, r1). Gives exactly what eng_matmul gives. Any
 * thread; no allocation. */
void eng_matmul_act_rows(uint32_t wt, const void *w, size_t w_row_bytes, const struct eng_act *a,
                         float *y, int64_t ldy, int64_t r0, int64_t r1);

/* Q4_0 matrices repacked for the AVX2 kernels: groups of 8 rows with their 8 scales and
 * nibbles interleaved (quant_internal.h, struct eng_block_q4_0x8), the same number of bytes.
 * Decode through them does a third of the unpacking work per weight of the GGUF layout, so it
 * streams at memory bandwidth. The model repacks its Q4_0 matrices once at load when
 * eng_q4_0r8_wanted(). */

/* True when the active kernels are the AVX2 ones and WYE_NO_REPACK is not set to 1. */
bool eng_q4_0r8_wanted(void);
/* True if the first m / 8 * 8 rows of an m x k Q4_0 matrix can be repacked (m >= 8, k a
 * multiple of 32 and at most 32 x ENG_GEMM_MAX_BLOCKS, i.e. 16384); the last m % 8 rows stay
 * in the file's layout. */
bool eng_q4_0r8_ok(int64_t m, int64_t k);
/* Repacks m rows (a multiple of 8) of k Q4_0 elements (GGUF layout, rows contiguous) into dst
 * (eng_type_row_bytes(Q4_0, k) * m bytes, 16-byte aligned). */
void eng_q4_0r8_pack(const void *w, int64_t m, int64_t k, void *dst);
/* eng_act_prepare(pool, ENG_TYPE_Q4_0, ...) for activations that meet only repacked Q4_0
 * matrices (and their m % 8 last rows in the file's layout): instead of packing groups of 8
 * tokens it keeps each token's block scales and sums (a->xd, a->xs8) so that the repacked
 * kernels do not recompute them per call. Same scratch size. */
void eng_act_prepare_q4_0r8(struct eng_pool *pool, const float *x, int64_t k, int64_t n_tok,
                            void *scratch, struct eng_act *a);
/* eng_matmul_act_rows for a repacked Q4_0 matrix: rows [r0, r1) (multiples of 8) against
 * activations prepared for ENG_TYPE_Q4_0 (by either function). A token's value does not
 * depend on how many tokens are in the batch. Any thread; no allocation. */
void eng_matmul_act_rows_q4_0r8(const void *w8, const struct eng_act *a, float *y, int64_t ldy,
                                int64_t r0, int64_t r1);

/* Measured memory read bandwidth in bytes/s over a buffer of the given size (256 MiB is
 * good; it should be much larger than the caches), read by all the pool's threads, best of
 * a few repetitions. Returns 0 if the buffer could not be allocated. */
double eng_membw_measure(struct eng_pool *pool, size_t bytes);

#endif
