/* Builders of valid and malformed GGUF files for the loader's tests and fuzz seeds. Most
 * malformed files come from the writer in unchecked mode; the rest patch a valid file.
 * Single-threaded. */
#include "tests/local-engine/test_gguf_util.h"

#include <stdbool.h>
#include <string.h>

#include "common/alloc.h"
#include "local-engine/gguf_write.h"

static const float small_f32[8] = {1, 2, 3, 4, 5, 6, 7, 8};

/* The valid small file's writer; unchecked lets the bad cases bend it. */
static struct eng_gguf_writer *small_writer(bool unchecked)
{
    static const char *const toks[] = {"a", "bb", ""};
    static const float scores[] = {0.5f, -1.0f, 2.0f};
    uint8_t q8[34] = {0};
    struct eng_gguf_writer *w = eng_gguf_writer_create();
    if (!w) {
        return NULL;
    }
    eng_gguf_writer_set_unchecked(w, unchecked);
    int64_t ne_a[2] = {4, 2}, ne_b[1] = {32}, ne_c[1] = {8};
    for (int i = 0; i < 34; i++) {
        q8[i] = (uint8_t)(i * 7);
    }
    if (eng_gguf_writer_add_str(w, "general.architecture", "llama") ||
        eng_gguf_writer_add_str(w, "general.name", "tiny") ||
        eng_gguf_writer_add_u32(w, "llama.block_count", 1) ||
        eng_gguf_writer_add_f32(w, "llama.rope.freq_base", 10000.0f) ||
        eng_gguf_writer_add_arr_str(w, "tokenizer.ggml.tokens", toks, 3) ||
        eng_gguf_writer_add_arr_data(w, "tokenizer.ggml.scores", ENG_GGUF_F32, scores, 3) ||
        eng_gguf_writer_add_tensor(w, "a", ENG_TYPE_F32, 2, ne_a, small_f32, 32, ENG_GGUF_BORROW) ||
        eng_gguf_writer_add_tensor(w, "b", ENG_TYPE_Q8_0, 1, ne_b, q8, 34, ENG_GGUF_COPY) ||
        eng_gguf_writer_add_tensor(w, "c", ENG_TYPE_F32, 1, ne_c, small_f32, 32, ENG_GGUF_BORROW)) {
        eng_gguf_writer_destroy(w);
        return NULL;
    }
    return w;
}

static uint8_t *finish(struct eng_gguf_writer *w, size_t *len)
{
    void *p = NULL;
    *len = 0;
    if (w && eng_gguf_writer_write_mem(w, &p, len) != WYE_OK) {
        p = NULL;
    }
    eng_gguf_writer_destroy(w);
    return p;
}

uint8_t *gguf_test_small(size_t *len)
{
    return finish(small_writer(false), len);
}

/* Offset just after the first occurrence of the encoded string s (u64 length + bytes). */
static size_t after_str(const uint8_t *p, size_t len, const char *s)
{
    size_t n = strlen(s);
    uint8_t pat[72];
    uint64_t n64 = n;
    memcpy(pat, &n64, 8);
    memcpy(pat + 8, s, n);
    for (size_t i = 0; i + 8 + n <= len; i++) {
        if (memcmp(p + i, pat, 8 + n) == 0) {
            return i + 8 + n;
        }
    }
    return 0;
}

static uint8_t *patch(size_t *len, size_t (*where)(const uint8_t *, size_t), const void *v,
                      size_t n)
{
    uint8_t *p = gguf_test_small(len);
    if (p) {
        size_t at = where(p, *len);
        memcpy(p + at, v, n);
    }
    return p;
}

static size_t at_magic(const uint8_t *p, size_t len)
{
    (void)p;
    (void)len;
    return 0;
}
static size_t at_version(const uint8_t *p, size_t len)
{
    (void)p;
    (void)len;
    return 4;
}
static size_t at_n_tensors(const uint8_t *p, size_t len)
{
    (void)p;
    (void)len;
    return 8;
}
static size_t at_n_kv(const uint8_t *p, size_t len)
{
    (void)p;
    (void)len;
    return 16;
}
/* The n_dims field of tensor "b". */
static size_t at_ndims_b(const uint8_t *p, size_t len)
{
    return after_str(p, len, "b");
}
/* The length of the value of general.name (after its type field). */
static size_t at_name_len(const uint8_t *p, size_t len)
{
    return after_str(p, len, "general.name") + 4;
}
/* The length of the tokens array (after type and element type). */
static size_t at_tokens_len(const uint8_t *p, size_t len)
{
    return after_str(p, len, "tokenizer.ggml.tokens") + 8;
}
static size_t at_key0_len(const uint8_t *p, size_t len)
{
    (void)p;
    (void)len;
    return 24;
}

static uint8_t *bad_magic(size_t *len)
{
    return patch(len, at_magic, "GGUX", 4);
}
static uint8_t *bad_version1(size_t *len)
{
    uint32_t v = 1;
    return patch(len, at_version, &v, 4);
}
static uint8_t *bad_version99(size_t *len)
{
    uint32_t v = 99;
    return patch(len, at_version, &v, 4);
}
static uint8_t *bad_big_endian(size_t *len)
{
    uint32_t v = 0x03000000;
    return patch(len, at_version, &v, 4);
}
static uint8_t *bad_n_tensors(size_t *len)
{
    uint64_t v = (uint64_t)1 << 40;
    return patch(len, at_n_tensors, &v, 8);
}
static uint8_t *bad_n_tensors_neg(size_t *len)
{
    uint64_t v = UINT64_MAX;
    return patch(len, at_n_tensors, &v, 8);
}
static uint8_t *bad_n_kv(size_t *len)
{
    uint64_t v = UINT64_MAX / 2;
    return patch(len, at_n_kv, &v, 8);
}
static uint8_t *bad_key_len(size_t *len)
{
    uint64_t v = UINT64_MAX;
    return patch(len, at_key0_len, &v, 8);
}
static uint8_t *bad_str_len(size_t *len)
{
    uint64_t v = 4294967295u;
    return patch(len, at_name_len, &v, 8);
}
static uint8_t *bad_arr_len(size_t *len)
{
    uint64_t v = (uint64_t)1 << 61;
    return patch(len, at_tokens_len, &v, 8);
}
static uint8_t *bad_ndims0(size_t *len)
{
    uint32_t v = 0;
    return patch(len, at_ndims_b, &v, 4);
}
static uint8_t *bad_ndims5(size_t *len)
{
    uint32_t v = 5;
    return patch(len, at_ndims_b, &v, 4);
}

/* A raw value added to the small file (unchecked). */
static uint8_t *with_raw(size_t *len, uint32_t type, const void *raw, size_t n)
{
    struct eng_gguf_writer *w = small_writer(true);
    if (w && eng_gguf_writer_add_raw(w, "x.bad", type, raw, n) != WYE_OK) {
        eng_gguf_writer_destroy(w);
        w = NULL;
    }
    return finish(w, len);
}

static uint8_t *bad_vtype(size_t *len)
{
    uint32_t v = 0;
    return with_raw(len, 13, &v, 4);
}
static uint8_t *bad_nested(size_t *len)
{
    uint8_t raw[12 + 12] = {0};
    uint32_t t = ENG_GGUF_ARRAY;
    uint64_t n = 1;
    memcpy(raw, &t, 4);
    memcpy(raw + 4, &n, 8);
    t = ENG_GGUF_U8;
    memcpy(raw + 12, &t, 4);
    return with_raw(len, ENG_GGUF_ARRAY, raw, sizeof raw);
}
static uint8_t *bad_elem_type(size_t *len)
{
    uint8_t raw[12] = {0};
    uint32_t t = 77;
    memcpy(raw, &t, 4);
    return with_raw(len, ENG_GGUF_ARRAY, raw, sizeof raw);
}
static uint8_t *bad_num_arr_len(size_t *len)
{
    uint8_t raw[12 + 4] = {0};
    uint32_t t = ENG_GGUF_U32;
    uint64_t n = (uint64_t)1 << 62;
    memcpy(raw, &t, 4);
    memcpy(raw + 4, &n, 8);
    return with_raw(len, ENG_GGUF_ARRAY, raw, sizeof raw);
}
static uint8_t *bad_dup_key(size_t *len)
{
    struct eng_gguf_writer *w = small_writer(true);
    if (w && eng_gguf_writer_add_u32(w, "llama.block_count", 2) != WYE_OK) {
        eng_gguf_writer_destroy(w);
        w = NULL;
    }
    return finish(w, len);
}
static uint8_t *bad_align(size_t *len, uint32_t a)
{
    struct eng_gguf_writer *w = small_writer(true);
    if (w && eng_gguf_writer_set_alignment(w, a) != WYE_OK) {
        eng_gguf_writer_destroy(w);
        w = NULL;
    }
    return finish(w, len);
}
static uint8_t *bad_align0(size_t *len)
{
    return bad_align(len, 0);
}
static uint8_t *bad_align3(size_t *len)
{
    return bad_align(len, 3);
}
static uint8_t *bad_align_type(size_t *len)
{
    struct eng_gguf_writer *w = small_writer(true);
    if (w && eng_gguf_writer_add_str(w, "general.alignment", "32") != WYE_OK) {
        eng_gguf_writer_destroy(w);
        w = NULL;
    }
    return finish(w, len);
}

/* The small file plus one more tensor "z" (unchecked), optionally at a forced offset. */
static uint8_t *with_tensor(size_t *len, const char *name, uint32_t type, uint32_t n_dims,
                            const int64_t *ne, size_t size, bool force, uint64_t offset)
{
    static const uint8_t zeros[64];
    struct eng_gguf_writer *w = small_writer(true);
    if (w && eng_gguf_writer_add_tensor(w, name, type, n_dims, ne, size <= 64 ? zeros : NULL, size,
                                        ENG_GGUF_BORROW) != WYE_OK) {
        eng_gguf_writer_destroy(w);
        w = NULL;
    }
    if (w && force && eng_gguf_writer_set_tensor_offset(w, 3, offset) != WYE_OK) {
        eng_gguf_writer_destroy(w);
        w = NULL;
    }
    return finish(w, len);
}

static uint8_t *bad_dup_tensor(size_t *len)
{
    int64_t ne[1] = {8};
    return with_tensor(len, "a", ENG_TYPE_F32, 1, ne, 32, false, 0);
}
static uint8_t *bad_neg_dim(size_t *len)
{
    int64_t ne[2] = {8, -1};
    return with_tensor(len, "z", ENG_TYPE_F32, 2, ne, 0, false, 0);
}
static uint8_t *bad_dim_overflow(size_t *len)
{
    int64_t ne[3] = {(int64_t)1 << 32, (int64_t)1 << 32, 4};
    return with_tensor(len, "z", ENG_TYPE_F32, 3, ne, 0, false, 0);
}
static uint8_t *bad_size_overflow(size_t *len)
{
    int64_t ne[2] = {(int64_t)1 << 31, (int64_t)1 << 31};
    return with_tensor(len, "z", ENG_TYPE_F32, 2, ne, 0, false, 0);
}
static uint8_t *bad_tensor_type(size_t *len)
{
    int64_t ne[1] = {8};
    return with_tensor(len, "z", 99, 1, ne, 32, false, 0);
}
static uint8_t *bad_block(size_t *len)
{
    int64_t ne[1] = {33};
    return with_tensor(len, "z", ENG_TYPE_Q8_0, 1, ne, 34, false, 0);
}
static uint8_t *bad_misaligned(size_t *len)
{
    int64_t ne[1] = {8};
    return with_tensor(len, "z", ENG_TYPE_F32, 1, ne, 32, true, 16);
}
static uint8_t *bad_past_eof(size_t *len)
{
    int64_t ne[1] = {8};
    return with_tensor(len, "z", ENG_TYPE_F32, 1, ne, 32, true, 1 << 20);
}
static uint8_t *bad_past_eof_edge(size_t *len)
{
    /* Starts inside the file, ends 32 bytes past it. */
    int64_t ne[1] = {16};
    return with_tensor(len, "z", ENG_TYPE_F32, 1, ne, 64, true, 160);
}
static uint8_t *bad_overlap(size_t *len)
{
    int64_t ne[1] = {8};
    return with_tensor(len, "z", ENG_TYPE_F32, 1, ne, 32, true, 0);
}
static uint8_t *bad_long_name(size_t *len)
{
    int64_t ne[1] = {8};
    return with_tensor(len, "a.very.long.tensor.name.that.goes.on.and.on.past.sixty.four.bytes",
                       ENG_TYPE_F32, 1, ne, 32, false, 0);
}

const struct gguf_bad_case gguf_bad_cases[] = {
    {"magic", "bad magic 'GGUX'", bad_magic},
    {"version1", "version 1 is not supported", bad_version1},
    {"version99", "unsupported GGUF version 99", bad_version99},
    {"big_endian", "big-endian", bad_big_endian},
    {"n_tensors_huge", "n_tensors 1099511627776 cannot fit", bad_n_tensors},
    {"n_tensors_negative", "n_tensors -1", bad_n_tensors_neg},
    {"n_kv_huge", "n_kv 9223372036854775807 cannot fit", bad_n_kv},
    {"key_len_huge", "key 0: name length 18446744073709551615 exceeds", bad_key_len},
    {"str_len_huge", "key 'general.name': string length 4294967295 exceeds", bad_str_len},
    {"str_arr_len_huge",
     "key 'tokenizer.ggml.tokens': array of 2305843009213693952 string "
     "elements exceeds",
     bad_arr_len},
    {"num_arr_len_huge", "key 'x.bad': array of 4611686018427387904 u32 elements exceeds",
     bad_num_arr_len},
    {"nested_array", "key 'x.bad': nested arrays", bad_nested},
    {"unknown_vtype", "key 'x.bad': unknown value type 13", bad_vtype},
    {"unknown_elem_type", "key 'x.bad': unknown array element type 77", bad_elem_type},
    {"dup_key", "duplicate key 'llama.block_count'", bad_dup_key},
    {"align0", "general.alignment': 0 is not a power of two", bad_align0},
    {"align3", "general.alignment': 3 is not a power of two", bad_align3},
    {"align_type", "'general.alignment' has type string, expected u32", bad_align_type},
    {"dup_tensor", "duplicate tensor name 'a'", bad_dup_tensor},
    {"n_dims0", "tensor 'b': n_dims 0 is not in 1..4", bad_ndims0},
    {"n_dims5", "tensor 'b': n_dims 5 is not in 1..4", bad_ndims5},
    {"negative_dim", "tensor 'z': dimension 1 is negative (-1)", bad_neg_dim},
    {"elements_overflow", "tensor 'z': element count overflows", bad_dim_overflow},
    {"bytes_overflow", "tensor 'z': byte size of F32", bad_size_overflow},
    {"tensor_type", "tensor 'z': unknown tensor type id 99", bad_tensor_type},
    {"block_size", "tensor 'z': ne[0]=33 is not a multiple of the Q8_0 block size (32)", bad_block},
    {"misaligned", "tensor 'z': offset 16 is not a multiple of the alignment (32)", bad_misaligned},
    {"past_eof", "tensor 'z': data (offset 1048576, 32 bytes) runs past the end of the file",
     bad_past_eof},
    {"past_eof_edge", "tensor 'z': data (offset 160, 64 bytes) runs past the end",
     bad_past_eof_edge},
    {"overlap", "overlap", bad_overlap},
    {"long_name", "longer than ggml's limit of 63", bad_long_name},
};

const size_t gguf_n_bad_cases = sizeof(gguf_bad_cases) / sizeof(gguf_bad_cases[0]);
