/* Block geometry of the ggml tensor types. Any thread. */
#include "local-engine/types.h"

struct type_info {
    const char *name;
    int64_t block_elems;
    size_t block_bytes;
    bool supported;
};

static const struct type_info types[ENG_TYPE__MAX] = {
    [ENG_TYPE_F32] = {"F32", 1, 4, true},
    [ENG_TYPE_F16] = {"F16", 1, 2, true},
    [ENG_TYPE_Q4_0] = {"Q4_0", 32, 18, true},
    [ENG_TYPE_Q4_1] = {"Q4_1", 32, 20, true},
    [ENG_TYPE_Q5_0] = {"Q5_0", 32, 22, true},
    [ENG_TYPE_Q5_1] = {"Q5_1", 32, 24, true},
    [ENG_TYPE_Q8_0] = {"Q8_0", 32, 34, true},
    [ENG_TYPE_Q8_1] = {"Q8_1", 32, 36, false},
    [ENG_TYPE_Q2_K] = {"Q2_K", 256, 84, false},
    [ENG_TYPE_Q3_K] = {"Q3_K", 256, 110, false},
    [ENG_TYPE_Q4_K] = {"Q4_K", 256, 144, true},
    [ENG_TYPE_Q5_K] = {"Q5_K", 256, 176, true},
    [ENG_TYPE_Q6_K] = {"Q6_K", 256, 210, true},
    [ENG_TYPE_Q8_K] = {"Q8_K", 256, 292, false},
    [ENG_TYPE_BF16] = {"BF16", 1, 2, true},
};

const char *eng_type_name(uint32_t type)
{
    return type < ENG_TYPE__MAX ? types[type].name : NULL;
}

bool eng_type_supported(uint32_t type)
{
    return type < ENG_TYPE__MAX && types[type].supported;
}

int64_t eng_type_block_elems(uint32_t type)
{
    return type < ENG_TYPE__MAX ? types[type].block_elems : 0;
}

size_t eng_type_block_bytes(uint32_t type)
{
    return type < ENG_TYPE__MAX ? types[type].block_bytes : 0;
}

size_t eng_type_row_bytes(uint32_t type, int64_t n)
{
    int64_t be = eng_type_block_elems(type);
    if (be <= 0 || n < 0 || n % be != 0) {
        return 0;
    }
    uint64_t blocks = (uint64_t)(n / be);
    size_t bytes = eng_type_block_bytes(type);
    if (blocks > SIZE_MAX / bytes) {
        return 0;
    }
    return (size_t)blocks * bytes;
}
