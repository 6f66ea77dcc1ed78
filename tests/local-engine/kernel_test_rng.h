/* Deterministic test data for the kernel tests: xorshift64, the same sequence on every
 * platform (no libc rand), so a failure reproduces from its seed. */
#ifndef WYE_TESTS_KERNEL_TEST_RNG_H
#define WYE_TESTS_KERNEL_TEST_RNG_H

#include <stdint.h>

static inline uint64_t ktr_next(uint64_t *state)
{
    uint64_t x = *state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    *state = x;
    return x;
}

/* Uniform in [-1, 1). */
static inline float ktr_sym(uint64_t *state)
{
    return (float)(ktr_next(state) >> 40) / 8388608.0f - 1.0f;
}

#endif
