/* Test helpers for the GGUF loader: a small valid file and a table of malformed files, each
 * with the words its error message must contain. Shared by the cmocka tests and the fuzz
 * seed-corpus writer (tests/fuzz/gguf_seeds.c). Single-threaded. */
#ifndef WYE_TESTS_GGUF_UTIL_H
#define WYE_TESTS_GGUF_UTIL_H

#include <stddef.h>
#include <stdint.h>

/* A small valid GGUF v3 file (keys of several types, a string array, three tensors; the last
 * tensor ends exactly at the end of the file, so every truncation cuts tensor data).
 * Returns a buffer to free with wye_free, or NULL on allocation failure. */
uint8_t *gguf_test_small(size_t *len);

struct gguf_bad_case {
    const char *name;               /* short identifier, also the seed file name */
    const char *expect;             /* words the loader's message must contain */
    uint8_t *(*build)(size_t *len); /* returns a wye_malloc'd file or NULL */
};

extern const struct gguf_bad_case gguf_bad_cases[];
extern const size_t gguf_n_bad_cases;

#endif
