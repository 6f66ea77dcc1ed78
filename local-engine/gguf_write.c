/* The GGUF v3 writer: keeps each key/value already encoded (type field + value, as in the
 * file) and each tensor's shape and data, then streams header, key/values, tensor infos,
 * padding and the padded tensor data to a file or into one buffer. The layout matches what
 * ggml's reader expects: tensor i's offset is the sum of the previous tensors' sizes, each
 * rounded up to the alignment. Run by whichever thread owns the writer. */
#include "local-engine/gguf_write.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "common/alloc.h"
#include "common/buf.h"
#include "common/log.h"

#define GW_DEFAULT_ALIGNMENT 32
#define GW_MAX_NAME 64

struct gw_kv {
    char *key;    /* NUL-terminated copy */
    uint8_t *enc; /* u32 type + value, as written */
    size_t enc_len;
};

struct gw_tensor {
    char *name;
    uint32_t type;
    uint32_t n_dims;
    int64_t ne[4];
    const void *data; /* NULL: zeros */
    void *owned;      /* the copy, when ENG_GGUF_COPY */
    size_t size;
    bool has_offset; /* unchecked override */
    uint64_t offset;
};

struct eng_gguf_writer {
    uint32_t version;
    bool unchecked;
    struct gw_kv *kv; /* (n_kv, cap_kv) */
    size_t n_kv, cap_kv;
    struct gw_tensor *t; /* (n_t, cap_t) */
    size_t n_t, cap_t;
};

struct eng_gguf_writer *eng_gguf_writer_create(void)
{
    struct eng_gguf_writer *w = wye_calloc(1, sizeof(*w));
    if (w) {
        w->version = 3;
    }
    return w;
}

void eng_gguf_writer_destroy(struct eng_gguf_writer *w)
{
    if (!w) {
        return;
    }
    for (size_t i = 0; i < w->n_kv; i++) {
        wye_free(w->kv[i].key);
        wye_free(w->kv[i].enc);
    }
    for (size_t i = 0; i < w->n_t; i++) {
        wye_free(w->t[i].name);
        wye_free(w->t[i].owned);
    }
    wye_free(w->kv);
    wye_free(w->t);
    wye_free(w);
}

void eng_gguf_writer_set_version(struct eng_gguf_writer *w, uint32_t version)
{
    w->version = version;
}

void eng_gguf_writer_set_unchecked(struct eng_gguf_writer *w, bool unchecked)
{
    w->unchecked = unchecked;
}

int64_t eng_gguf_writer_n_kv(const struct eng_gguf_writer *w)
{
    return (int64_t)w->n_kv;
}

int64_t eng_gguf_writer_n_tensors(const struct eng_gguf_writer *w)
{
    return (int64_t)w->n_t;
}

/* True if kv holds a u32 scalar. */
static bool kv_is_u32(const struct gw_kv *kv)
{
    uint32_t type;
    if (kv->enc_len != 8) {
        return false;
    }
    memcpy(&type, kv->enc, 4);
    return type == ENG_GGUF_U32;
}

static struct gw_kv *find_kv(const struct eng_gguf_writer *w, const char *key)
{
    for (size_t i = 0; i < w->n_kv; i++) {
        if (strcmp(w->kv[i].key, key) == 0) {
            return &w->kv[i];
        }
    }
    return NULL;
}

/* Grows *arr (of *cap elements of esize bytes) to hold one more. */
static enum wye_err grow(void **arr, size_t *cap, size_t n, size_t esize)
{
    if (n < *cap) {
        return WYE_OK;
    }
    size_t ncap = *cap ? *cap * 2 : 16;
    size_t bytes;
    if (wye_mul_size(ncap, esize, &bytes) != 0) {
        return WYE_ERR_NOMEM;
    }
    void *p = wye_realloc(*arr, bytes);
    if (!p) {
        return WYE_ERR_NOMEM;
    }
    *arr = p;
    *cap = ncap;
    return WYE_OK;
}

/* Adds key with the encoded value in b (taken over on success and on failure). */
static enum wye_err add_encoded(struct eng_gguf_writer *w, const char *key, struct wye_buf *b)
{
    enum wye_err err = WYE_OK;
    if (!key || (!w->unchecked && find_kv(w, key))) {
        err = WYE_ERR_INVAL;
        goto fail_buf;
    }
    err = grow((void **)&w->kv, &w->cap_kv, w->n_kv, sizeof(*w->kv));
    if (err) {
        goto fail_buf;
    }
    char *k = wye_strdup(key);
    if (!k) {
        err = WYE_ERR_NOMEM;
        goto fail_buf;
    }
    struct gw_kv *kv = &w->kv[w->n_kv++];
    kv->key = k;
    kv->enc = (uint8_t *)wye_buf_steal(b, &kv->enc_len);
    if (!kv->enc) { /* an empty buffer: cannot happen, the type field is always there */
        w->n_kv--;
        wye_free(k);
        return WYE_ERR_INTERNAL;
    }
    return WYE_OK;
fail_buf:
    wye_buf_cleanup(b);
    return err;
}

static enum wye_err put_u32(struct wye_buf *b, uint32_t v)
{
    return wye_buf_append(b, &v, 4);
}

static enum wye_err put_u64(struct wye_buf *b, uint64_t v)
{
    return wye_buf_append(b, &v, 8);
}

static enum wye_err put_str(struct wye_buf *b, const char *s, size_t n)
{
    enum wye_err err = put_u64(b, n);
    return err ? err : wye_buf_append(b, s, n);
}

static enum wye_err add_scalar(struct eng_gguf_writer *w, const char *key, uint32_t type,
                               const void *v, size_t n)
{
    struct wye_buf b;
    wye_buf_init(&b, SIZE_MAX - 1);
    enum wye_err err = put_u32(&b, type);
    if (!err) {
        err = wye_buf_append(&b, v, n);
    }
    if (err) {
        wye_buf_cleanup(&b);
        return err;
    }
    return add_encoded(w, key, &b);
}

#define GW_SCALAR(fn, ctype, vt)                                                                   \
    enum wye_err fn(struct eng_gguf_writer *w, const char *key, ctype v)                           \
    {                                                                                              \
        return add_scalar(w, key, vt, &v, sizeof v);                                               \
    }
GW_SCALAR(eng_gguf_writer_add_u8, uint8_t, ENG_GGUF_U8)
GW_SCALAR(eng_gguf_writer_add_i8, int8_t, ENG_GGUF_I8)
GW_SCALAR(eng_gguf_writer_add_u16, uint16_t, ENG_GGUF_U16)
GW_SCALAR(eng_gguf_writer_add_i16, int16_t, ENG_GGUF_I16)
GW_SCALAR(eng_gguf_writer_add_i32, int32_t, ENG_GGUF_I32)
GW_SCALAR(eng_gguf_writer_add_u64, uint64_t, ENG_GGUF_U64)
GW_SCALAR(eng_gguf_writer_add_i64, int64_t, ENG_GGUF_I64)
GW_SCALAR(eng_gguf_writer_add_f32, float, ENG_GGUF_F32)
GW_SCALAR(eng_gguf_writer_add_f64, double, ENG_GGUF_F64)

enum wye_err eng_gguf_writer_add_u32(struct eng_gguf_writer *w, const char *key, uint32_t v)
{
    return add_scalar(w, key, ENG_GGUF_U32, &v, sizeof v);
}

enum wye_err eng_gguf_writer_add_bool(struct eng_gguf_writer *w, const char *key, bool v)
{
    uint8_t b = v ? 1 : 0;
    return add_scalar(w, key, ENG_GGUF_BOOL, &b, 1);
}

enum wye_err eng_gguf_writer_set_alignment(struct eng_gguf_writer *w, uint32_t alignment)
{
    if (!w->unchecked && (alignment == 0 || (alignment & (alignment - 1)) != 0)) {
        return WYE_ERR_INVAL;
    }
    struct gw_kv *kv = find_kv(w, "general.alignment");
    if (kv && kv_is_u32(kv)) {
        memcpy(kv->enc + 4, &alignment, 4);
        return WYE_OK;
    }
    if (kv) {
        return WYE_ERR_INVAL; /* present with another type: the caller crafted it */
    }
    return eng_gguf_writer_add_u32(w, "general.alignment", alignment);
}

enum wye_err eng_gguf_writer_add_strn(struct eng_gguf_writer *w, const char *key, const char *s,
                                      size_t n)
{
    struct wye_buf b;
    wye_buf_init(&b, SIZE_MAX - 1);
    enum wye_err err = put_u32(&b, ENG_GGUF_STRING);
    if (!err) {
        err = put_str(&b, s, n);
    }
    if (err) {
        wye_buf_cleanup(&b);
        return err;
    }
    return add_encoded(w, key, &b);
}

enum wye_err eng_gguf_writer_add_str(struct eng_gguf_writer *w, const char *key, const char *s)
{
    return eng_gguf_writer_add_strn(w, key, s, strlen(s));
}

enum wye_err eng_gguf_writer_add_arr_data(struct eng_gguf_writer *w, const char *key,
                                          enum eng_gguf_vtype type, const void *data, uint64_t n)
{
    size_t es = eng_gguf_vtype_size((uint32_t)type);
    size_t bytes;
    if (es == 0 || n > SIZE_MAX || wye_mul_size((size_t)n, es, &bytes) != 0) {
        return WYE_ERR_INVAL;
    }
    struct wye_buf b;
    wye_buf_init(&b, SIZE_MAX - 1);
    enum wye_err err = wye_buf_reserve(&b, 16 + bytes);
    if (!err) {
        err = put_u32(&b, ENG_GGUF_ARRAY);
    }
    if (!err) {
        err = put_u32(&b, (uint32_t)type);
    }
    if (!err) {
        err = put_u64(&b, n);
    }
    if (!err && bytes) {
        err = wye_buf_append(&b, data, bytes);
    }
    if (err) {
        wye_buf_cleanup(&b);
        return err;
    }
    return add_encoded(w, key, &b);
}

enum wye_err eng_gguf_writer_add_arr_strn(struct eng_gguf_writer *w, const char *key,
                                          const char *const *strs, const size_t *lens, uint64_t n)
{
    struct wye_buf b;
    wye_buf_init(&b, SIZE_MAX - 1);
    enum wye_err err = put_u32(&b, ENG_GGUF_ARRAY);
    if (!err) {
        err = put_u32(&b, ENG_GGUF_STRING);
    }
    if (!err) {
        err = put_u64(&b, n);
    }
    for (uint64_t j = 0; j < n && !err; j++) {
        err = put_str(&b, strs[j], lens ? lens[j] : strlen(strs[j]));
    }
    if (err) {
        wye_buf_cleanup(&b);
        return err;
    }
    return add_encoded(w, key, &b);
}

enum wye_err eng_gguf_writer_add_arr_str(struct eng_gguf_writer *w, const char *key,
                                         const char *const *strs, uint64_t n)
{
    return eng_gguf_writer_add_arr_strn(w, key, strs, NULL, n);
}

enum wye_err eng_gguf_writer_add_raw(struct eng_gguf_writer *w, const char *key, uint32_t type,
                                     const void *raw, size_t len)
{
    struct wye_buf b;
    wye_buf_init(&b, SIZE_MAX - 1);
    enum wye_err err = put_u32(&b, type);
    if (!err && len) {
        err = wye_buf_append(&b, raw, len);
    }
    if (err) {
        wye_buf_cleanup(&b);
        return err;
    }
    return add_encoded(w, key, &b);
}

enum wye_err eng_gguf_writer_copy_kv(struct eng_gguf_writer *w, const struct eng_gguf *g,
                                     const char *prefix)
{
    size_t pl = prefix ? strlen(prefix) : 0;
    char *key = NULL;
    enum wye_err err = WYE_OK;
    for (int64_t i = 0; i < eng_gguf_n_kv(g) && !err; i++) {
        struct eng_gguf_str k = eng_gguf_key(g, i);
        if (pl && (k.len < pl || memcmp(k.p, prefix, pl) != 0)) {
            continue;
        }
        if (memchr(k.p, '\0', k.len)) {
            return WYE_ERR_INVAL; /* keys are kept NUL-terminated */
        }
        key = wye_strndup(k.p, k.len);
        if (!key) {
            return WYE_ERR_NOMEM;
        }
        size_t len;
        const void *raw = eng_gguf_kv_raw(g, i, &len);
        err = eng_gguf_writer_add_raw(w, key, (uint32_t)eng_gguf_kv_type(g, i), raw, len);
        wye_free(key);
    }
    return err;
}

static enum wye_err check_tensor(const struct eng_gguf_writer *w, const char *name, uint32_t type,
                                 uint32_t n_dims, const int64_t *ne, size_t size)
{
    if (strlen(name) >= GW_MAX_NAME || n_dims < 1 || n_dims > 4 || !eng_type_name(type)) {
        return WYE_ERR_INVAL;
    }
    for (size_t i = 0; i < w->n_t; i++) {
        if (strcmp(w->t[i].name, name) == 0) {
            return WYE_ERR_INVAL;
        }
    }
    size_t bytes = 0;
    for (uint32_t d = 0; d < n_dims; d++) {
        if (ne[d] < 0) {
            return WYE_ERR_INVAL;
        }
        if (d == 0) {
            bytes = eng_type_row_bytes(type, ne[0]);
            if (ne[0] % eng_type_block_elems(type) != 0 || (bytes == 0 && ne[0] != 0)) {
                return WYE_ERR_INVAL;
            }
        } else if (wye_mul_size(bytes, (size_t)ne[d], &bytes) != 0) {
            return WYE_ERR_INVAL;
        }
    }
    return bytes == size ? WYE_OK : WYE_ERR_INVAL;
}

enum wye_err eng_gguf_writer_add_tensor(struct eng_gguf_writer *w, const char *name, uint32_t type,
                                        uint32_t n_dims, const int64_t *ne, const void *data,
                                        size_t size, enum eng_gguf_own own)
{
    if (!name || (n_dims > 0 && !ne) || n_dims > 4) {
        return WYE_ERR_INVAL;
    }
    if (!w->unchecked) {
        enum wye_err err = check_tensor(w, name, type, n_dims, ne, size);
        if (err) {
            return err;
        }
    }
    enum wye_err err = grow((void **)&w->t, &w->cap_t, w->n_t, sizeof(*w->t));
    if (err) {
        return err;
    }
    struct gw_tensor t = {
        .type = type, .n_dims = n_dims, .ne = {1, 1, 1, 1}, .data = data, .size = size};
    for (uint32_t d = 0; d < n_dims; d++) {
        t.ne[d] = ne[d];
    }
    t.name = wye_strdup(name);
    if (!t.name) {
        return WYE_ERR_NOMEM;
    }
    if (own == ENG_GGUF_COPY && data) {
        t.owned = wye_malloc(size);
        if (!t.owned) {
            wye_free(t.name);
            return WYE_ERR_NOMEM;
        }
        memcpy(t.owned, data, size);
        t.data = t.owned;
    }
    w->t[w->n_t++] = t;
    return WYE_OK;
}

enum wye_err eng_gguf_writer_set_tensor_offset(struct eng_gguf_writer *w, int64_t i,
                                               uint64_t offset)
{
    if (!w->unchecked || i < 0 || (size_t)i >= w->n_t) {
        return WYE_ERR_INVAL;
    }
    w->t[i].has_offset = true;
    w->t[i].offset = offset;
    return WYE_OK;
}

/* ---- layout and output ---- */

static size_t layout_alignment(const struct eng_gguf_writer *w)
{
    const struct gw_kv *kv = find_kv(w, "general.alignment");
    if (kv && kv_is_u32(kv)) {
        uint32_t a;
        memcpy(&a, kv->enc + 4, 4);
        if (a != 0 && (a & (a - 1)) == 0) {
            return a;
        }
    }
    return GW_DEFAULT_ALIGNMENT;
}

static size_t pad_to(size_t n, size_t a)
{
    return (a - n % a) % a;
}

/* Where the output goes: a buffer being filled or a FILE. */
struct gw_sink {
    uint8_t *mem;
    size_t pos;
    FILE *f;
    int err_no;
};

static enum wye_err emit(struct gw_sink *s, const void *p, size_t n)
{
    if (n == 0) {
        return WYE_OK;
    }
    if (s->mem) {
        memcpy(s->mem + s->pos, p, n);
        s->pos += n;
        return WYE_OK;
    }
    if (s->f) {
        if (fwrite(p, 1, n, s->f) != n) {
            s->err_no = errno;
            return WYE_ERR_IO;
        }
    }
    s->pos += n;
    return WYE_OK;
}

static enum wye_err emit_zeros(struct gw_sink *s, size_t n)
{
    static const uint8_t zeros[4096];
    while (n > 0) {
        size_t k = n < sizeof zeros ? n : sizeof zeros;
        enum wye_err err = emit(s, zeros, k);
        if (err) {
            return err;
        }
        n -= k;
    }
    return WYE_OK;
}

static enum wye_err emit_u32(struct gw_sink *s, uint32_t v)
{
    return emit(s, &v, 4);
}

static enum wye_err emit_u64(struct gw_sink *s, uint64_t v)
{
    return emit(s, &v, 8);
}

static enum wye_err emit_str(struct gw_sink *s, const char *p)
{
    size_t n = strlen(p);
    enum wye_err err = emit_u64(s, n);
    return err ? err : emit(s, p, n);
}

/* Writes the whole file to s (a sink with neither mem nor f only counts bytes). */
static enum wye_err emit_all(const struct eng_gguf_writer *w, struct gw_sink *s)
{
    size_t align = layout_alignment(w);
    enum wye_err err = emit(s, "GGUF", 4);
    if (!err) {
        err = emit_u32(s, w->version);
    }
    if (!err) {
        err = emit_u64(s, w->n_t);
    }
    if (!err) {
        err = emit_u64(s, w->n_kv);
    }
    for (size_t i = 0; i < w->n_kv && !err; i++) {
        err = emit_str(s, w->kv[i].key);
        if (!err) {
            err = emit(s, w->kv[i].enc, w->kv[i].enc_len);
        }
    }
    uint64_t off = 0;
    for (size_t i = 0; i < w->n_t && !err; i++) {
        const struct gw_tensor *t = &w->t[i];
        err = emit_str(s, t->name);
        if (!err) {
            err = emit_u32(s, t->n_dims);
        }
        for (uint32_t d = 0; d < t->n_dims && !err; d++) {
            err = emit_u64(s, (uint64_t)t->ne[d]);
        }
        if (!err) {
            err = emit_u32(s, t->type);
        }
        if (!err) {
            err = emit_u64(s, t->has_offset ? t->offset : off);
        }
        off += t->size + pad_to(t->size, align);
    }
    if (!err) { /* ggml pads the metadata even when no tensor follows */
        err = emit_zeros(s, pad_to(s->pos, align));
    }
    for (size_t i = 0; i < w->n_t && !err; i++) {
        const struct gw_tensor *t = &w->t[i];
        err = t->data ? emit(s, t->data, t->size) : emit_zeros(s, t->size);
        if (!err) {
            err = emit_zeros(s, pad_to(t->size, align));
        }
    }
    return err;
}

size_t eng_gguf_writer_size(const struct eng_gguf_writer *w)
{
    struct gw_sink s = {0};
    emit_all(w, &s);
    return s.pos;
}

enum wye_err eng_gguf_writer_write_mem(const struct eng_gguf_writer *w, void **out, size_t *len)
{
    *out = NULL;
    *len = 0;
    size_t n = eng_gguf_writer_size(w);
    struct gw_sink s = {.mem = wye_malloc(n)};
    if (!s.mem) {
        return WYE_ERR_NOMEM;
    }
    enum wye_err err = emit_all(w, &s);
    if (err) {
        wye_free(s.mem);
        return err;
    }
    *out = s.mem;
    *len = n;
    return WYE_OK;
}

enum wye_err eng_gguf_writer_write_file(const struct eng_gguf_writer *w, const char *path,
                                        char *errbuf, size_t errlen)
{
    char eb[128];
    struct gw_sink s = {.f = fopen(path, "wbe")};
    if (!s.f) {
        int e = errno;
        if (errbuf && errlen) {
            snprintf(errbuf, errlen, "%s: cannot create: %s", path, wye_strerror(e, eb, sizeof eb));
        }
        return WYE_ERR_IO;
    }
    enum wye_err err = emit_all(w, &s);
    if (fclose(s.f) != 0 && !err) {
        s.err_no = errno;
        err = WYE_ERR_IO;
    }
    if (err && errbuf && errlen) {
        snprintf(errbuf, errlen, "%s: write failed: %s", path,
                 wye_strerror(s.err_no, eb, sizeof eb));
    }
    return err;
}
