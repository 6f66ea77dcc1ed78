/* Tensor element types, numbered as ggml numbers them in GGUF files, and their block
 * geometry. Shared by the GGUF loader, the kernels and the model. */
#ifndef WYE_ENGINE_TYPES_H
#define WYE_ENGINE_TYPES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum eng_type {
    ENG_TYPE_F32 = 0,
    ENG_TYPE_F16 = 1,
    ENG_TYPE_Q4_0 = 2,
    ENG_TYPE_Q4_1 = 3,
    ENG_TYPE_Q5_0 = 6,
    ENG_TYPE_Q5_1 = 7,
    ENG_TYPE_Q8_0 = 8,
    ENG_TYPE_Q8_1 = 9,
    ENG_TYPE_Q2_K = 10,
    ENG_TYPE_Q3_K = 11,
    ENG_TYPE_Q4_K = 12,
    ENG_TYPE_Q5_K = 13,
    ENG_TYPE_Q6_K = 14,
    ENG_TYPE_Q8_K = 15,
    ENG_TYPE_BF16 = 30,
    ENG_TYPE__MAX = 40 /* ids at or above this are unknown */
};

/* Returns the type's name ("Q4_K", ...) or NULL for an id ggml does not define. */
const char *eng_type_name(uint32_t type);
/* True for the types the engine can compute with. */
bool eng_type_supported(uint32_t type);
/* Elements per block (1 for F32/F16/BF16, 32 for Q*_0/1, 256 for K-quants); 0 if unknown. */
int64_t eng_type_block_elems(uint32_t type);
/* Bytes per block; 0 if unknown. */
size_t eng_type_block_bytes(uint32_t type);
/* Bytes of a row of n elements; 0 if n is not a multiple of the block or the type is
 * unknown, or on overflow. */
size_t eng_type_row_bytes(uint32_t type, int64_t n);

#endif
