/* What the engine's fuzz targets (tests/fuzz/engine.cmake) share besides CHECK. */
#ifndef WYE_TESTS_FUZZ_FUZZ_ENGINE_UTIL_H
#define WYE_TESTS_FUZZ_FUZZ_ENGINE_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "local-engine/unicode.h"
#include "tests/fuzz/fuzz_util.h"

/* Whether s[0..n) is well-formed UTF-8, by the engine's own decoder. */
static inline bool fz_valid_utf8(const char *s, size_t n)
{
    for (size_t i = 0; i < n;) {
        uint32_t cp;
        i += eng_utf8_decode(s + i, n - i, &cp);
        if (cp == ENG_UC_INVALID) {
            return false;
        }
    }
    return true;
}

#endif
