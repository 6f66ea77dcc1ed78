/* GGUF v2/v3 files: mmapped read-only, every count, offset, size, shape, type and alignment
 * checked before use. Metadata values and tensor data are pointers into the mapping, valid
 * until eng_gguf_close. Thread-safe for concurrent readers once opened. */
#ifndef WYE_ENGINE_GGUF_H
#define WYE_ENGINE_GGUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/err.h"
#include "local-engine/types.h"

struct eng_gguf;

/* GGUF metadata value types, as numbered in the file. */
enum eng_gguf_vtype {
    ENG_GGUF_U8 = 0, ENG_GGUF_I8 = 1, ENG_GGUF_U16 = 2, ENG_GGUF_I16 = 3,
    ENG_GGUF_U32 = 4, ENG_GGUF_I32 = 5, ENG_GGUF_F32 = 6, ENG_GGUF_BOOL = 7,
    ENG_GGUF_STRING = 8, ENG_GGUF_ARRAY = 9, ENG_GGUF_U64 = 10, ENG_GGUF_I64 = 11,
    ENG_GGUF_F64 = 12
};

struct eng_gguf_str {
    const char *p; /* not NUL-terminated; points into the mapping */
    size_t len;
};

struct eng_gguf_tensor {
    struct eng_gguf_str name;
    uint32_t n_dims;
    int64_t ne[4];    /* elements per dimension, ne[0] fastest; unused dims are 1 */
    uint32_t type;    /* enum eng_type */
    const void *data; /* inside the mapping, aligned to the file's alignment */
    size_t size;      /* bytes */
};

/* Opens and validates path. On error, errbuf names what is wrong (and where). */
enum wye_err eng_gguf_open(const char *path, struct eng_gguf **out, char *errbuf, size_t errlen);
/* The same over a caller-owned buffer that must outlive the handle (tests, fuzzing). Tensor
 * data is aligned in memory only if data itself is aligned to the file's alignment. */
enum wye_err eng_gguf_open_mem(const void *data, size_t size, struct eng_gguf **out,
                               char *errbuf, size_t errlen);
/* Unmaps and frees; NULL is a no-op. */
void eng_gguf_close(struct eng_gguf *g);

uint32_t eng_gguf_version(const struct eng_gguf *g);
size_t eng_gguf_alignment(const struct eng_gguf *g);

/* ---- metadata ---- */
int64_t eng_gguf_n_kv(const struct eng_gguf *g);
/* Index of key, or -1. */
int64_t eng_gguf_find(const struct eng_gguf *g, const char *key);
struct eng_gguf_str eng_gguf_key(const struct eng_gguf *g, int64_t i);
enum eng_gguf_vtype eng_gguf_kv_type(const struct eng_gguf *g, int64_t i);
/* Typed getters by key: false if absent or of an incompatible type/range. Integer getters
 * accept any integer type whose value fits. */
bool eng_gguf_get_u32(const struct eng_gguf *g, const char *key, uint32_t *out);
bool eng_gguf_get_i64(const struct eng_gguf *g, const char *key, int64_t *out);
bool eng_gguf_get_f32(const struct eng_gguf *g, const char *key, float *out);
bool eng_gguf_get_bool(const struct eng_gguf *g, const char *key, bool *out);
bool eng_gguf_get_str(const struct eng_gguf *g, const char *key, struct eng_gguf_str *out);
/* Arrays by key: element type and length; false if absent or not an array. */
bool eng_gguf_get_arr(const struct eng_gguf *g, const char *key, enum eng_gguf_vtype *type,
                      uint64_t *len);
/* Element j of a string array. */
struct eng_gguf_str eng_gguf_arr_str(const struct eng_gguf *g, const char *key, uint64_t j);
/* Copies a numeric array converted to float / int32 into out (n elements); false on type
 * mismatch or length mismatch. */
bool eng_gguf_arr_f32(const struct eng_gguf *g, const char *key, float *out, uint64_t n);
bool eng_gguf_arr_i32(const struct eng_gguf *g, const char *key, int32_t *out, uint64_t n);

/* ---- tensors ---- */
int64_t eng_gguf_n_tensors(const struct eng_gguf *g);
const struct eng_gguf_tensor *eng_gguf_tensor(const struct eng_gguf *g, int64_t i);
/* Tensor by name, or NULL. */
const struct eng_gguf_tensor *eng_gguf_find_tensor(const struct eng_gguf *g, const char *name);

/* ---- by index, for tools that walk every key (wye info, the writer's copy) ---- */
/* Array element type and length of kv i; false if kv i is not an array. */
bool eng_gguf_kv_arr(const struct eng_gguf *g, int64_t i, enum eng_gguf_vtype *type,
                     uint64_t *len);
/* The string of kv i (a string; j ignored) or element j of kv i (a string array);
 * {NULL, 0} otherwise or if j is out of range. O(1). */
struct eng_gguf_str eng_gguf_kv_str(const struct eng_gguf *g, int64_t i, uint64_t j);
/* Integer / floating value of scalar kv i (any integer type that fits / F32 or F64). */
bool eng_gguf_kv_i64(const struct eng_gguf *g, int64_t i, int64_t *out);
bool eng_gguf_kv_f64(const struct eng_gguf *g, int64_t i, double *out);
/* The value of kv i exactly as encoded in the file (after its type field: for arrays the
 * element type, the length, then the elements), borrowed from the mapping. */
const void *eng_gguf_kv_raw(const struct eng_gguf *g, int64_t i, size_t *len);
/* Pointer to the (possibly unaligned, little-endian) elements of numeric array kv i, or
 * NULL if kv i is not a numeric array. */
const void *eng_gguf_kv_arr_data(const struct eng_gguf *g, int64_t i);
/* Bytes of one value of a fixed-size type (0 for STRING, ARRAY and unknown ids). */
size_t eng_gguf_vtype_size(uint32_t type);
/* "u32", "string", ... or NULL for an unknown id. */
const char *eng_gguf_vtype_name(uint32_t type);
/* File size and where the (aligned) tensor data section starts. */
size_t eng_gguf_file_size(const struct eng_gguf *g);
size_t eng_gguf_data_offset(const struct eng_gguf *g);
/* The data in [p, p + n) (inside the file) will not be read again: for a file mapping, the
 * pages wholly inside it are dropped from this process (they are read from the file again if
 * touched, so this is only about memory); a no-op for a caller's buffer. */
void eng_gguf_drop_pages(const struct eng_gguf *g, const void *p, size_t n);

/* True if the string equals the NUL-terminated s. */
bool eng_gguf_str_eq(struct eng_gguf_str a, const char *s);

#endif
