/* A GGUF v3 builder: collect key/values and tensors, then write a file (or a memory image)
 * that this loader and ggml/llama.cpp accept: tensors laid out in order, each padded to the
 * alignment, the data section aligned. Used by tools that write random-weight test models
 * and by tests that craft malformed files (see eng_gguf_writer_set_unchecked).
 * One writer belongs to one thread. Keys and names are copied; tensor data is copied or
 * borrowed as the caller chooses. */
#ifndef WYE_ENGINE_GGUF_WRITE_H
#define WYE_ENGINE_GGUF_WRITE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/err.h"
#include "local-engine/gguf.h"

struct eng_gguf_writer;

enum eng_gguf_own {
    ENG_GGUF_BORROW = 0, /* the data must stay valid until the writer is destroyed */
    ENG_GGUF_COPY = 1    /* the writer copies the data now */
};

/* Returns an empty writer (version 3, alignment 32), or NULL on allocation failure. */
struct eng_gguf_writer *eng_gguf_writer_create(void);
/* Frees the writer and any copied data; NULL is a no-op. */
void eng_gguf_writer_destroy(struct eng_gguf_writer *w);

/* Sets the data alignment (a power of two) and records it as the u32 key general.alignment,
 * replacing an earlier value. INVAL if not a power of two (unless unchecked). */
enum wye_err eng_gguf_writer_set_alignment(struct eng_gguf_writer *w, uint32_t alignment);
/* For crafting test files: the version field written (default 3; the layout is v2/v3). */
void eng_gguf_writer_set_version(struct eng_gguf_writer *w, uint32_t version);
/* For crafting malformed test files: accept duplicate keys and names, any tensor type id
 * and shape, any data size, any alignment value, and allow eng_gguf_writer_set_tensor_offset.
 * The layout then uses the alignment only if it is a power of two (else 32). */
void eng_gguf_writer_set_unchecked(struct eng_gguf_writer *w, bool unchecked);

/* Scalars. Each key may be added once (INVAL for a duplicate unless unchecked). */
enum wye_err eng_gguf_writer_add_u8(struct eng_gguf_writer *w, const char *key, uint8_t v);
enum wye_err eng_gguf_writer_add_i8(struct eng_gguf_writer *w, const char *key, int8_t v);
enum wye_err eng_gguf_writer_add_u16(struct eng_gguf_writer *w, const char *key, uint16_t v);
enum wye_err eng_gguf_writer_add_i16(struct eng_gguf_writer *w, const char *key, int16_t v);
enum wye_err eng_gguf_writer_add_u32(struct eng_gguf_writer *w, const char *key, uint32_t v);
enum wye_err eng_gguf_writer_add_i32(struct eng_gguf_writer *w, const char *key, int32_t v);
enum wye_err eng_gguf_writer_add_u64(struct eng_gguf_writer *w, const char *key, uint64_t v);
enum wye_err eng_gguf_writer_add_i64(struct eng_gguf_writer *w, const char *key, int64_t v);
enum wye_err eng_gguf_writer_add_f32(struct eng_gguf_writer *w, const char *key, float v);
enum wye_err eng_gguf_writer_add_f64(struct eng_gguf_writer *w, const char *key, double v);
enum wye_err eng_gguf_writer_add_bool(struct eng_gguf_writer *w, const char *key, bool v);
/* A NUL-terminated string, or n bytes of s (which may contain NULs). */
enum wye_err eng_gguf_writer_add_str(struct eng_gguf_writer *w, const char *key, const char *s);
enum wye_err eng_gguf_writer_add_strn(struct eng_gguf_writer *w, const char *key, const char *s,
                                      size_t n);
/* A numeric array of n elements of type (U8..F64 except STRING/ARRAY; BOOL as 1 byte each)
 * in host (little-endian) layout; copied. */
enum wye_err eng_gguf_writer_add_arr_data(struct eng_gguf_writer *w, const char *key,
                                          enum eng_gguf_vtype type, const void *data, uint64_t n);
/* A string array of n NUL-terminated strings, or with explicit lengths (lens may be NULL). */
enum wye_err eng_gguf_writer_add_arr_str(struct eng_gguf_writer *w, const char *key,
                                         const char *const *strs, uint64_t n);
enum wye_err eng_gguf_writer_add_arr_strn(struct eng_gguf_writer *w, const char *key,
                                          const char *const *strs, const size_t *lens, uint64_t n);
/* A value given exactly as encoded after its type field (see eng_gguf_kv_raw); type is
 * written as is, so unchecked writers can produce unknown type ids. */
enum wye_err eng_gguf_writer_add_raw(struct eng_gguf_writer *w, const char *key, uint32_t type,
                                     const void *raw, size_t len);
/* Copies every key of g starting with prefix (NULL or "" for all), e.g. "tokenizer.".
 * INVAL for a key already in w or containing a NUL; keys copied before an error stay. */
enum wye_err eng_gguf_writer_copy_kv(struct eng_gguf_writer *w, const struct eng_gguf *g,
                                     const char *prefix);

/* Adds a tensor: ne[0..n_dims) elements per dimension, size bytes of data (NULL writes
 * zeros). Checked: name shorter than 64 bytes and unique, n_dims 1..4, ne >= 0, type known,
 * ne[0] a multiple of the block, size equal to the type's byte size of that shape. */
enum wye_err eng_gguf_writer_add_tensor(struct eng_gguf_writer *w, const char *name, uint32_t type,
                                        uint32_t n_dims, const int64_t *ne, const void *data,
                                        size_t size, enum eng_gguf_own own);
/* Unchecked writers only: the offset written in tensor i's info (the data is still laid out
 * in order), for misaligned, overlapping or out-of-file tensors. */
enum wye_err eng_gguf_writer_set_tensor_offset(struct eng_gguf_writer *w, int64_t i,
                                               uint64_t offset);
int64_t eng_gguf_writer_n_kv(const struct eng_gguf_writer *w);
int64_t eng_gguf_writer_n_tensors(const struct eng_gguf_writer *w);

/* Total bytes of the file that would be written. */
size_t eng_gguf_writer_size(const struct eng_gguf_writer *w);
/* Writes the file at path (created or truncated). On error errbuf says why. */
enum wye_err eng_gguf_writer_write_file(const struct eng_gguf_writer *w, const char *path,
                                        char *errbuf, size_t errlen);
/* Writes the file into a new buffer the caller frees with wye_free. */
enum wye_err eng_gguf_writer_write_mem(const struct eng_gguf_writer *w, void **out, size_t *len);

#endif
