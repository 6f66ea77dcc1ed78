/* What every fuzz target in tests/fuzz uses: CHECK, which stops the run (so libFuzzer keeps the
 * input) when an invariant the target states does not hold. */
#ifndef WYE_TESTS_FUZZ_FUZZ_UTIL_H
#define WYE_TESTS_FUZZ_FUZZ_UTIL_H

#include <stdio.h>
#include <stdlib.h>

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: invariant broken: %s\n", __FILE__, __LINE__, #cond);           \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

#endif
