/* The attention task compiled for AVX2 and F16C (this file alone, with quant_avx2.c, gets
 * -mavx2 -mfma -mf16c; -ffp-contract=off, set for the whole build, keeps FMA out of the vector
 * expressions): the code of attention.h 8 floats per register and F16 keys and values widened by
 * vcvtph2ps, the same bits as forward.c's build, and SwiGLU's silu(g) * u likewise. Chosen by
 * forward.c when the kernels are AVX2. */
#define ATT_F16C 1
#include "local-engine/attention.h"

void eng_att_task_avx2(void *arg, int64_t task, int thread)
{
    att_body(arg, task, thread, true, false);
}

void eng_att_task_avx2_f16(void *arg, int64_t task, int thread)
{
    att_body(arg, task, thread, true, true);
}

void eng_silu_mul_avx2(float *g, const float *u, int64_t n)
{
    silu_mul(g, u, n);
}

void eng_att_head_avx2(const float *q, const void *k, const void *v, bool f16, int32_t n,
                       int32_t hd, float *scratch, float *out)
{
    att_head(q, k, v, n, hd, scratch, out, true, f16);
}
