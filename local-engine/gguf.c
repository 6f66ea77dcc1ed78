/* The GGUF loader: maps a GGUF v2/v3 file read-only (or borrows a caller's buffer), walks the
 * header, the key/value section and the tensor infos once, checking every count, length,
 * type, shape, offset and size against the bytes actually present before using it, and
 * builds the indexes the engine needs (hash tables for keys and tensor names, per-element
 * offsets of string arrays so that vocabulary lookups are O(1)).
 * Opened by whichever thread loads a model; read-only afterwards, so any number of threads
 * may read one handle concurrently.
 *
 * DESIGN: nothing is copied out of the file. A kv keeps a pointer to its encoded value; a
 * tensor keeps a pointer to its data. Memory besides the handle is bounded by the file size:
 * each entry we allocate for corresponds to at least 8 bytes of the file. */
#include "local-engine/gguf.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/alloc.h"
#include "common/log.h"

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "the GGUF loader reads little-endian values in place; port it for big-endian hosts"
#endif

#define GG_DEFAULT_ALIGNMENT 32
#define GG_MAX_NAME 64 /* ggml's GGML_MAX_NAME: tensor names are shorter than this */
/* The smallest encodings, used to bound counts by the bytes left before allocating. */
#define GG_MIN_KV_BYTES 13 /* key length (8) + type (4) + a 1-byte value */
/* name length (8) + n_dims (4) + ne[0] (8) + type (4) + offset (8) */
#define GG_MIN_TENSOR_BYTES 32

struct gg_kv {
    struct eng_gguf_str key;
    uint32_t type;      /* enum eng_gguf_vtype */
    uint32_t arr_type;  /* element type when type == ARRAY */
    uint64_t arr_n;     /* element count when type == ARRAY */
    const uint8_t *raw; /* encoded value, after the type field */
    size_t raw_len;
    const uint8_t *val; /* scalar bytes; string chars; first array element */
    size_t str_len;     /* type == STRING */
    uint64_t *str_off;  /* string arrays: offset from val of each element's length; owned */
};

struct gg_index {
    uint32_t *slots; /* entry index + 1; 0 is empty */
    size_t mask;     /* slot count - 1 (a power of two) */
};

struct eng_gguf {
    const uint8_t *base; /* the mapping or the caller's buffer */
    size_t size;
    bool mapped;
    uint32_t version;
    size_t alignment;
    size_t data_offset; /* start of the tensor data section */
    int64_t n_kv;
    struct gg_kv *kv; /* (n_kv) */
    int64_t n_tensors;
    struct eng_gguf_tensor *tensors; /* (n_tensors) */
    struct gg_index kv_index;
    struct gg_index tensor_index;
};

/* ---- small helpers ---- */

static const char *const vtype_names[] = {"u8",   "i8",     "u16",   "i16", "u32", "i32", "f32",
                                          "bool", "string", "array", "u64", "i64", "f64"};
static const uint8_t vtype_sizes[] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};

size_t eng_gguf_vtype_size(uint32_t type)
{
    return type <= ENG_GGUF_F64 ? vtype_sizes[type] : 0;
}

const char *eng_gguf_vtype_name(uint32_t type)
{
    return type <= ENG_GGUF_F64 ? vtype_names[type] : NULL;
}

static uint32_t ld_u32(const uint8_t *p)
{
    uint32_t v;
    memcpy(&v, p, sizeof v);
    return v;
}

static uint64_t ld_u64(const uint8_t *p)
{
    uint64_t v;
    memcpy(&v, p, sizeof v);
    return v;
}

static uint64_t hash_bytes(const char *p, size_t n)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (size_t i = 0; i < n; i++) {
        h ^= (uint8_t)p[i];
        h *= 1099511628211ull;
    }
    return h;
}

bool eng_gguf_str_eq(struct eng_gguf_str a, const char *s)
{
    if (!s || !a.p) {
        return false;
    }
    size_t n = strlen(s);
    return n == a.len && memcmp(a.p, s, n) == 0;
}

/* A printable, capped copy of a name from the file for error messages. */
static const char *pname(char *buf, size_t cap, const char *p, size_t len)
{
    size_t n = len < cap - 4 ? len : cap - 4;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)p[i];
        buf[i] = (c >= 0x20 && c < 0x7f) ? (char)c : '?';
    }
    if (n < len) {
        memcpy(buf + n, "...", 3);
        n += 3;
    }
    buf[n] = '\0';
    return buf;
}

/* ---- the parser ---- */

struct rd {
    const uint8_t *base;
    size_t size;
    size_t pos;
    char *err;
    size_t errlen;
};

__attribute__((format(printf, 3, 4))) static enum wye_err fail(struct rd *r, enum wye_err e,
                                                               const char *fmt, ...)
{
    if (r->err && r->errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(r->err, r->errlen, fmt, ap);
        va_end(ap);
    }
    return e;
}

static size_t left(const struct rd *r)
{
    return r->size - r->pos;
}

/* Fails unless n more bytes are present; where and field name them for the message. */
static enum wye_err need(struct rd *r, size_t n, const char *where, const char *field)
{
    if (left(r) >= n) {
        return WYE_OK;
    }
    return fail(r, WYE_ERR_PARSE,
                "file truncated: %s%s%s needs %zu bytes at offset %zu, only "
                "%zu left",
                where, where[0] ? ": " : "", field, n, r->pos, left(r));
}

static enum wye_err index_init(struct gg_index *ix, uint64_t n)
{
    size_t slots = 8;
    while (slots < 2 * n) {
        slots *= 2;
    }
    ix->slots = wye_calloc(slots, sizeof(*ix->slots));
    if (!ix->slots) {
        return WYE_ERR_NOMEM;
    }
    ix->mask = slots - 1;
    return WYE_OK;
}

/* Finds name; returns the entry index or -1. name_of gives entry i's name. */
static int64_t index_find(const struct gg_index *ix, const char *p, size_t len,
                          const struct eng_gguf_str *(*name_of)(const void *, uint32_t),
                          const void *ctx)
{
    if (!ix->slots) {
        return -1;
    }
    size_t h = (size_t)hash_bytes(p, len) & ix->mask;
    for (;;) {
        uint32_t s = ix->slots[h];
        if (s == 0) {
            return -1;
        }
        const struct eng_gguf_str *n = name_of(ctx, s - 1);
        if (n->len == len && memcmp(n->p, p, len) == 0) {
            return (int64_t)(s - 1);
        }
        h = (h + 1) & ix->mask;
    }
}

/* Inserts entry i under name unless the name is present; returns the existing index or -1. */
static int64_t index_insert(struct gg_index *ix, const char *p, size_t len, uint32_t i,
                            const struct eng_gguf_str *(*name_of)(const void *, uint32_t),
                            const void *ctx)
{
    size_t h = (size_t)hash_bytes(p, len) & ix->mask;
    for (;;) {
        uint32_t s = ix->slots[h];
        if (s == 0) {
            ix->slots[h] = i + 1;
            return -1;
        }
        const struct eng_gguf_str *n = name_of(ctx, s - 1);
        if (n->len == len && memcmp(n->p, p, len) == 0) {
            return (int64_t)(s - 1);
        }
        h = (h + 1) & ix->mask;
    }
}

static const struct eng_gguf_str *kv_name(const void *ctx, uint32_t i)
{
    return &((const struct eng_gguf *)ctx)->kv[i].key;
}

static const struct eng_gguf_str *tensor_name(const void *ctx, uint32_t i)
{
    return &((const struct eng_gguf *)ctx)->tensors[i].name;
}

/* Reads a string (u64 length + bytes) after checking the bytes are present. */
static enum wye_err read_str(struct rd *r, struct eng_gguf_str *s, const char *where,
                             const char *field)
{
    enum wye_err err = need(r, 8, where, field);
    if (err) {
        return err;
    }
    uint64_t len = ld_u64(r->base + r->pos);
    r->pos += 8;
    if (len > left(r)) {
        return fail(r, WYE_ERR_PARSE,
                    "%s: %s length %" PRIu64 " exceeds the %zu bytes left "
                    "(at offset %zu)",
                    where, field, len, left(r), r->pos - 8);
    }
    s->p = (const char *)(r->base + r->pos);
    s->len = (size_t)len;
    r->pos += (size_t)len;
    return WYE_OK;
}

static enum wye_err parse_value(struct rd *r, struct gg_kv *kv, const char *kname)
{
    char where[128];
    snprintf(where, sizeof where, "key '%s'", kname);
    enum wye_err err = need(r, 4, where, "value type");
    if (err) {
        return err;
    }
    kv->type = ld_u32(r->base + r->pos);
    r->pos += 4;
    kv->raw = r->base + r->pos;
    size_t start = r->pos;
    if (kv->type > ENG_GGUF_F64) {
        return fail(r, WYE_ERR_PARSE, "key '%s': unknown value type %" PRIu32, kname, kv->type);
    }
    if (kv->type == ENG_GGUF_STRING) {
        struct eng_gguf_str s = {NULL, 0};
        err = read_str(r, &s, where, "string");
        if (err) {
            return err;
        }
        kv->val = (const uint8_t *)s.p;
        kv->str_len = s.len;
    } else if (kv->type == ENG_GGUF_ARRAY) {
        err = need(r, 12, where, "array header");
        if (err) {
            return err;
        }
        kv->arr_type = ld_u32(r->base + r->pos);
        kv->arr_n = ld_u64(r->base + r->pos + 4);
        r->pos += 12;
        if (kv->arr_type == ENG_GGUF_ARRAY) {
            return fail(r, WYE_ERR_PARSE, "key '%s': nested arrays are not supported", kname);
        }
        if (kv->arr_type > ENG_GGUF_F64) {
            return fail(r, WYE_ERR_PARSE, "key '%s': unknown array element type %" PRIu32, kname,
                        kv->arr_type);
        }
        kv->val = r->base + r->pos;
        size_t esize = kv->arr_type == ENG_GGUF_STRING ? 8 : vtype_sizes[kv->arr_type];
        /* For strings esize is the minimum (an empty string's length field). */
        if (kv->arr_n > left(r) / esize) {
            return fail(r, WYE_ERR_PARSE,
                        "key '%s': array of %" PRIu64 " %s elements exceeds the %zu bytes left",
                        kname, kv->arr_n, vtype_names[kv->arr_type], left(r));
        }
        if (kv->arr_type != ENG_GGUF_STRING) {
            r->pos += (size_t)kv->arr_n * esize;
        } else {
            /* arr_n * 8 <= bytes left, so this allocation is bounded by the file size. */
            kv->str_off = wye_malloc((size_t)kv->arr_n * sizeof(*kv->str_off));
            if (!kv->str_off) {
                return fail(r, WYE_ERR_NOMEM,
                            "out of memory indexing array '%s' (%" PRIu64 " strings)", kname,
                            kv->arr_n);
            }
            size_t a0 = r->pos;
            for (uint64_t j = 0; j < kv->arr_n; j++) {
                if (left(r) < 8) {
                    return fail(r, WYE_ERR_PARSE,
                                "file truncated: key '%s': string %" PRIu64
                                " of the array needs 8 bytes at offset %zu, only %zu left",
                                kname, j, r->pos, left(r));
                }
                uint64_t len = ld_u64(r->base + r->pos);
                if (len > left(r) - 8) {
                    return fail(r, WYE_ERR_PARSE,
                                "key '%s': string %" PRIu64 " of the array: "
                                "length %" PRIu64 " exceeds the %zu bytes left",
                                kname, j, len, left(r) - 8);
                }
                kv->str_off[j] = r->pos - a0;
                r->pos += 8 + (size_t)len;
            }
        }
    } else {
        err = need(r, vtype_sizes[kv->type], where, "value");
        if (err) {
            return err;
        }
        kv->val = r->base + r->pos;
        r->pos += vtype_sizes[kv->type];
    }
    kv->raw_len = r->pos - start;
    return WYE_OK;
}

static enum wye_err parse_kvs(struct rd *r, struct eng_gguf *g)
{
    char nb[96];
    enum wye_err err = index_init(&g->kv_index, (uint64_t)g->n_kv);
    if (err) {
        return fail(r, err, "out of memory indexing %" PRId64 " keys", g->n_kv);
    }
    for (int64_t i = 0; i < g->n_kv; i++) {
        struct gg_kv *kv = &g->kv[i];
        char where[32];
        snprintf(where, sizeof where, "key %" PRId64, i);
        err = read_str(r, &kv->key, where, "name");
        if (err) {
            return err;
        }
        pname(nb, sizeof nb, kv->key.p, kv->key.len);
        int64_t dup = index_insert(&g->kv_index, kv->key.p, kv->key.len, (uint32_t)i, kv_name, g);
        if (dup >= 0) {
            return fail(r, WYE_ERR_PARSE,
                        "duplicate key '%s' (entries %" PRId64 " and %" PRId64 ")", nb, dup, i);
        }
        err = parse_value(r, kv, nb);
        if (err) {
            return err;
        }
    }
    g->alignment = GG_DEFAULT_ALIGNMENT;
    int64_t ai = eng_gguf_find(g, "general.alignment");
    if (ai >= 0) {
        const struct gg_kv *kv = &g->kv[ai];
        if (kv->type != ENG_GGUF_U32) {
            return fail(r, WYE_ERR_PARSE, "key 'general.alignment' has type %s, expected u32",
                        vtype_names[kv->type]);
        }
        uint32_t a = ld_u32(kv->val);
        if (a == 0 || (a & (a - 1)) != 0) {
            return fail(r, WYE_ERR_PARSE,
                        "key 'general.alignment': %" PRIu32 " is not a power of two", a);
        }
        g->alignment = a;
    }
    return WYE_OK;
}

static enum wye_err parse_tensor_info(struct rd *r, struct eng_gguf *g, int64_t i, uint64_t *offset)
{
    struct eng_gguf_tensor *t = &g->tensors[i];
    char nb[96];
    char where[128];
    snprintf(where, sizeof where, "tensor %" PRId64, i);
    enum wye_err err = read_str(r, &t->name, where, "name");
    if (err) {
        return err;
    }
    pname(nb, sizeof nb, t->name.p, t->name.len);
    snprintf(where, sizeof where, "tensor '%s'", nb);
    if (t->name.len >= GG_MAX_NAME) {
        return fail(r, WYE_ERR_PARSE,
                    "tensor %" PRId64 " ('%s'): name is %zu bytes, longer "
                    "than ggml's limit of %d",
                    i, nb, t->name.len, GG_MAX_NAME - 1);
    }
    int64_t dup =
        index_insert(&g->tensor_index, t->name.p, t->name.len, (uint32_t)i, tensor_name, g);
    if (dup >= 0) {
        return fail(r, WYE_ERR_PARSE,
                    "duplicate tensor name '%s' (tensors %" PRId64 " and %" PRId64 ")", nb, dup, i);
    }
    err = need(r, 4, where, "n_dims");
    if (err) {
        return err;
    }
    t->n_dims = ld_u32(r->base + r->pos);
    r->pos += 4;
    if (t->n_dims < 1 || t->n_dims > 4) {
        return fail(r, WYE_ERR_PARSE, "tensor '%s': n_dims %" PRIu32 " is not in 1..4", nb,
                    t->n_dims);
    }
    int64_t nel = 1;
    for (uint32_t d = 0; d < 4; d++) {
        t->ne[d] = 1;
        if (d >= t->n_dims) {
            continue;
        }
        err = need(r, 8, where, "shape");
        if (err) {
            return err;
        }
        t->ne[d] = (int64_t)ld_u64(r->base + r->pos);
        r->pos += 8;
        if (t->ne[d] < 0) {
            return fail(r, WYE_ERR_PARSE,
                        "tensor '%s': dimension %" PRIu32 " is negative (%" PRId64 ")", nb, d,
                        t->ne[d]);
        }
        if (t->ne[d] != 0 && nel > INT64_MAX / t->ne[d]) {
            return fail(r, WYE_ERR_PARSE,
                        "tensor '%s': element count overflows int64 "
                        "(dimension %" PRIu32 " is %" PRId64 ")",
                        nb, d, t->ne[d]);
        }
        nel *= t->ne[d];
    }
    err = need(r, 12, where, "type and offset");
    if (err) {
        return err;
    }
    t->type = ld_u32(r->base + r->pos);
    *offset = ld_u64(r->base + r->pos + 4);
    r->pos += 12;
    const char *tname = eng_type_name(t->type);
    if (!tname) {
        return fail(r, WYE_ERR_PARSE, "tensor '%s': unknown tensor type id %" PRIu32, nb, t->type);
    }
    int64_t be = eng_type_block_elems(t->type);
    if (t->ne[0] % be != 0) {
        return fail(r, WYE_ERR_PARSE,
                    "tensor '%s': ne[0]=%" PRId64 " is not a multiple of "
                    "the %s block size (%" PRId64 ")",
                    nb, t->ne[0], tname, be);
    }
    size_t row = eng_type_row_bytes(t->type, t->ne[0]);
    size_t size = row;
    bool ovf = t->ne[0] != 0 && row == 0;
    for (int d = 1; d < 4 && !ovf; d++) {
        ovf = wye_mul_size(size, (size_t)t->ne[d], &size) != 0;
    }
    if (ovf) {
        return fail(r, WYE_ERR_PARSE,
                    "tensor '%s': byte size of %s [%" PRId64 ", %" PRId64 ", %" PRId64 ", %" PRId64
                    "] overflows",
                    nb, tname, t->ne[0], t->ne[1], t->ne[2], t->ne[3]);
    }
    t->size = size;
    if (*offset % g->alignment != 0) {
        return fail(r, WYE_ERR_PARSE,
                    "tensor '%s': offset %" PRIu64 " is not a multiple of "
                    "the alignment (%zu)",
                    nb, *offset, g->alignment);
    }
    return WYE_OK;
}

struct gg_span {
    uint64_t off;
    uint64_t end;
    int64_t i;
};

static int span_cmp(const void *a, const void *b)
{
    const struct gg_span *x = a, *y = b;
    return x->off < y->off ? -1 : x->off > y->off ? 1 : 0;
}

static enum wye_err parse_tensors(struct rd *r, struct eng_gguf *g)
{
    char nb[96], nb2[96];
    enum wye_err err = index_init(&g->tensor_index, (uint64_t)g->n_tensors);
    if (err) {
        return fail(r, err, "out of memory indexing %" PRId64 " tensors", g->n_tensors);
    }
    struct gg_span *spans = NULL;
    if (g->n_tensors > 0) {
        spans = wye_malloc((size_t)g->n_tensors * sizeof(*spans));
        if (!spans) {
            return fail(r, WYE_ERR_NOMEM, "out of memory checking %" PRId64 " tensors",
                        g->n_tensors);
        }
    }
    for (int64_t i = 0; i < g->n_tensors; i++) {
        err = parse_tensor_info(r, g, i, &spans[i].off);
        if (err) {
            goto out;
        }
        spans[i].i = i;
    }
    /* The data section starts at the next multiple of the alignment. */
    size_t pad = (g->alignment - r->pos % g->alignment) % g->alignment;
    g->data_offset = r->pos + pad;
    if (g->n_tensors == 0) {
        goto out;
    }
    if (pad > left(r)) {
        err = fail(r, WYE_ERR_PARSE,
                   "data section starts at offset %zu, past the end of the "
                   "file (%zu bytes)",
                   g->data_offset, r->size);
        goto out;
    }
    size_t avail = r->size - g->data_offset;
    for (int64_t i = 0; i < g->n_tensors; i++) {
        struct eng_gguf_tensor *t = &g->tensors[i];
        uint64_t off = spans[i].off;
        if (off > avail || t->size > avail - off) {
            err = fail(r, WYE_ERR_PARSE,
                       "tensor '%s': data (offset %" PRIu64 ", %zu bytes) "
                       "runs past the end of the file (%zu bytes)",
                       pname(nb, sizeof nb, t->name.p, t->name.len), off, t->size, r->size);
            goto out;
        }
        spans[i].end = off + t->size;
        t->data = r->base + g->data_offset + off;
    }
    qsort(spans, (size_t)g->n_tensors, sizeof(*spans), span_cmp);
    int64_t last = -1; /* the non-empty tensor reaching furthest so far */
    for (int64_t k = 0; k < g->n_tensors; k++) {
        if (spans[k].end == spans[k].off) {
            continue;
        }
        if (last >= 0 && spans[last].end > spans[k].off) {
            const struct eng_gguf_tensor *a = &g->tensors[spans[last].i];
            const struct eng_gguf_tensor *b = &g->tensors[spans[k].i];
            err = fail(r, WYE_ERR_PARSE,
                       "tensors '%s' (offset %" PRIu64 ", %zu bytes) and '%s' "
                       "(offset %" PRIu64 ", %zu bytes) overlap",
                       pname(nb, sizeof nb, a->name.p, a->name.len), spans[last].off, a->size,
                       pname(nb2, sizeof nb2, b->name.p, b->name.len), spans[k].off, b->size);
            goto out;
        }
        if (last < 0 || spans[k].end > spans[last].end) {
            last = k;
        }
    }
out:
    wye_free(spans);
    return err;
}

static enum wye_err parse(struct rd *r, struct eng_gguf *g)
{
    enum wye_err err = need(r, 4, "", "the magic");
    if (err) {
        return err;
    }
    if (memcmp(r->base, "GGUF", 4) != 0) {
        char m[8];
        return fail(r, WYE_ERR_PARSE, "bad magic '%s' (expected 'GGUF'): not a GGUF file",
                    pname(m, sizeof m, (const char *)r->base, 4));
    }
    r->pos = 4;
    err = need(r, 4, "", "the version");
    if (err) {
        return err;
    }
    g->version = ld_u32(r->base + 4);
    r->pos = 8;
    if (g->version == 1) {
        return fail(r, WYE_ERR_UNSUPPORTED,
                    "GGUF version 1 is not supported (only versions 2 and 3)");
    }
    if (g->version != 0 && (g->version & 0xffff) == 0) {
        return fail(r, WYE_ERR_UNSUPPORTED,
                    "GGUF version 0x%08" PRIx32 " looks byte-swapped: "
                    "big-endian files are not supported (only little-endian versions 2 and 3)",
                    g->version);
    }
    if (g->version != 2 && g->version != 3) {
        return fail(r, WYE_ERR_UNSUPPORTED,
                    "unsupported GGUF version %" PRIu32 " (only versions 2 and 3)", g->version);
    }
    err = need(r, 16, "", "the tensor and key counts");
    if (err) {
        return err;
    }
    g->n_tensors = (int64_t)ld_u64(r->base + 8);
    g->n_kv = (int64_t)ld_u64(r->base + 16);
    r->pos = 24;
    uint64_t room = left(r);
    if (g->n_kv < 0 || (uint64_t)g->n_kv > room / GG_MIN_KV_BYTES ||
        (uint64_t)g->n_kv >= UINT32_MAX || (uint64_t)g->n_kv > SIZE_MAX / sizeof(*g->kv)) {
        return fail(r, WYE_ERR_PARSE,
                    "n_kv %" PRId64 " cannot fit in the %" PRIu64
                    " bytes left (each key/value needs at least %d): file truncated or corrupt",
                    g->n_kv, room, GG_MIN_KV_BYTES);
    }
    room -= (uint64_t)g->n_kv * GG_MIN_KV_BYTES;
    if (g->n_tensors < 0 || (uint64_t)g->n_tensors > room / GG_MIN_TENSOR_BYTES ||
        (uint64_t)g->n_tensors >= UINT32_MAX ||
        (uint64_t)g->n_tensors > SIZE_MAX / sizeof(*g->tensors)) {
        return fail(r, WYE_ERR_PARSE,
                    "n_tensors %" PRId64 " cannot fit in the %" PRIu64
                    " bytes left after the keys (each tensor info needs at least %d): file "
                    "truncated or corrupt",
                    g->n_tensors, room, GG_MIN_TENSOR_BYTES);
    }
    if (g->n_kv > 0) {
        g->kv = wye_calloc((size_t)g->n_kv, sizeof(*g->kv));
        if (!g->kv) {
            return fail(r, WYE_ERR_NOMEM, "out of memory for %" PRId64 " keys", g->n_kv);
        }
    }
    if (g->n_tensors > 0) {
        g->tensors = wye_calloc((size_t)g->n_tensors, sizeof(*g->tensors));
        if (!g->tensors) {
            return fail(r, WYE_ERR_NOMEM, "out of memory for %" PRId64 " tensors", g->n_tensors);
        }
    }
    err = parse_kvs(r, g);
    if (err) {
        return err;
    }
    return parse_tensors(r, g);
}

static enum wye_err open_common(const uint8_t *data, size_t size, bool mapped,
                                struct eng_gguf **out, char *errbuf, size_t errlen)
{
    struct rd r = {.base = data, .size = size, .err = errbuf, .errlen = errlen};
    struct eng_gguf *g = wye_calloc(1, sizeof(*g));
    if (!g) {
        if (mapped) {
            munmap((void *)(uintptr_t)data, size);
        }
        return fail(&r, WYE_ERR_NOMEM, "out of memory opening a GGUF file");
    }
    g->base = data;
    g->size = size;
    g->mapped = mapped;
    enum wye_err err = parse(&r, g);
    if (err) {
        eng_gguf_close(g);
        return err;
    }
    *out = g;
    return WYE_OK;
}

enum wye_err eng_gguf_open_mem(const void *data, size_t size, struct eng_gguf **out, char *errbuf,
                               size_t errlen)
{
    *out = NULL;
    if (errbuf && errlen) {
        errbuf[0] = '\0';
    }
    if (!data && size) {
        return WYE_ERR_INVAL;
    }
    return open_common(data ? data : (const uint8_t *)"", size, false, out, errbuf, errlen);
}

enum wye_err eng_gguf_open(const char *path, struct eng_gguf **out, char *errbuf, size_t errlen)
{
    struct rd r = {.err = errbuf, .errlen = errlen};
    char eb[128];
    *out = NULL;
    if (errbuf && errlen) {
        errbuf[0] = '\0';
    }
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        int e = errno;
        return fail(&r, e == ENOENT ? WYE_ERR_NOTFOUND : WYE_ERR_IO, "%s: cannot open: %s", path,
                    wye_strerror(e, eb, sizeof eb));
    }
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int e = errno;
        close(fd);
        return fail(&r, WYE_ERR_IO, "%s: cannot stat: %s", path, wye_strerror(e, eb, sizeof eb));
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return fail(&r, WYE_ERR_INVAL, "%s: not a regular file", path);
    }
    if (st.st_size == 0) {
        close(fd);
        return fail(&r, WYE_ERR_PARSE, "%s: empty file, not a GGUF file", path);
    }
    if ((uint64_t)st.st_size > SIZE_MAX) {
        close(fd);
        return fail(&r, WYE_ERR_TOOBIG, "%s: file too large to map", path);
    }
    size_t size = (size_t)st.st_size;
    void *p = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
    int e = errno;
    close(fd);
    if (p == MAP_FAILED) {
        return fail(&r, WYE_ERR_IO, "%s: cannot map %zu bytes: %s", path, size,
                    wye_strerror(e, eb, sizeof eb));
    }
    enum wye_err err = open_common(p, size, true, out, errbuf, errlen);
    if (err && errbuf && errlen) {
        /* Prefix the path so that messages say which file. */
        size_t pl = strlen(path);
        size_t ml = strnlen(errbuf, errlen - 1);
        if (pl + 2 + ml + 1 <= errlen) {
            memmove(errbuf + pl + 2, errbuf, ml + 1);
            memcpy(errbuf, path, pl);
            memcpy(errbuf + pl, ": ", 2);
        }
    }
    return err;
}

void eng_gguf_close(struct eng_gguf *g)
{
    if (!g) {
        return;
    }
    if (g->kv) {
        for (int64_t i = 0; i < g->n_kv; i++) {
            wye_free(g->kv[i].str_off);
        }
    }
    wye_free(g->kv);
    wye_free(g->tensors);
    wye_free(g->kv_index.slots);
    wye_free(g->tensor_index.slots);
    if (g->mapped) {
        munmap((void *)(uintptr_t)g->base, g->size);
    }
    wye_free(g);
}

void eng_gguf_drop_pages(const struct eng_gguf *g, const void *p, size_t n)
{
    uintptr_t lo = (uintptr_t)p, hi = lo + n, base = (uintptr_t)g->base;
    if (!g->mapped || lo < base || hi > base + g->size || hi < lo) {
        return;
    }
    uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
    lo = (lo + page - 1) & ~(page - 1);
    hi &= ~(page - 1);
    if (hi > lo) {
        (void)madvise((void *)lo, hi - lo, MADV_DONTNEED); /* advice: failure changes nothing */
    }
}

/* ---- accessors ---- */

uint32_t eng_gguf_version(const struct eng_gguf *g)
{
    return g->version;
}

size_t eng_gguf_alignment(const struct eng_gguf *g)
{
    return g->alignment;
}

size_t eng_gguf_file_size(const struct eng_gguf *g)
{
    return g->size;
}

size_t eng_gguf_data_offset(const struct eng_gguf *g)
{
    return g->data_offset;
}

int64_t eng_gguf_n_kv(const struct eng_gguf *g)
{
    return g->n_kv;
}

int64_t eng_gguf_find(const struct eng_gguf *g, const char *key)
{
    if (!key) {
        return -1;
    }
    return index_find(&g->kv_index, key, strlen(key), kv_name, g);
}

static const struct gg_kv *kv_at(const struct eng_gguf *g, int64_t i)
{
    return (i >= 0 && i < g->n_kv) ? &g->kv[i] : NULL;
}

static const struct gg_kv *kv_by_key(const struct eng_gguf *g, const char *key)
{
    return kv_at(g, eng_gguf_find(g, key));
}

struct eng_gguf_str eng_gguf_key(const struct eng_gguf *g, int64_t i)
{
    const struct gg_kv *kv = kv_at(g, i);
    return kv ? kv->key : (struct eng_gguf_str){NULL, 0};
}

enum eng_gguf_vtype eng_gguf_kv_type(const struct eng_gguf *g, int64_t i)
{
    const struct gg_kv *kv = kv_at(g, i);
    return kv ? (enum eng_gguf_vtype)kv->type : (enum eng_gguf_vtype) - 1;
}

/* Reads element j of a numeric type at p as either a signed or an unsigned integer. */
static bool load_int(uint32_t type, const uint8_t *p, int64_t *s, uint64_t *u, bool *is_signed)
{
    *is_signed = true;
    switch (type) {
    case ENG_GGUF_U8:
        *u = p[0];
        *is_signed = false;
        return true;
    case ENG_GGUF_I8:
        *s = (int8_t)p[0];
        return true;
    case ENG_GGUF_U16: {
        uint16_t v;
        memcpy(&v, p, 2);
        *u = v;
        *is_signed = false;
        return true;
    }
    case ENG_GGUF_I16: {
        int16_t v;
        memcpy(&v, p, 2);
        *s = v;
        return true;
    }
    case ENG_GGUF_U32:
        *u = ld_u32(p);
        *is_signed = false;
        return true;
    case ENG_GGUF_I32: {
        int32_t v;
        memcpy(&v, p, 4);
        *s = v;
        return true;
    }
    case ENG_GGUF_U64:
        *u = ld_u64(p);
        *is_signed = false;
        return true;
    case ENG_GGUF_I64: {
        int64_t v;
        memcpy(&v, p, 8);
        *s = v;
        return true;
    }
    default:
        return false;
    }
}

static bool load_int_range(uint32_t type, const uint8_t *p, int64_t lo, int64_t hi, int64_t *out)
{
    int64_t s = 0;
    uint64_t u = 0;
    bool is_signed;
    if (!load_int(type, p, &s, &u, &is_signed)) {
        return false;
    }
    if (!is_signed) {
        if (u > (uint64_t)INT64_MAX) {
            return false;
        }
        s = (int64_t)u;
    }
    if (s < lo || s > hi) {
        return false;
    }
    *out = s;
    return true;
}

static bool load_float(uint32_t type, const uint8_t *p, double *out)
{
    if (type == ENG_GGUF_F32) {
        float f;
        memcpy(&f, p, 4);
        *out = f;
        return true;
    }
    if (type == ENG_GGUF_F64) {
        memcpy(out, p, 8);
        return true;
    }
    return false;
}

bool eng_gguf_kv_i64(const struct eng_gguf *g, int64_t i, int64_t *out)
{
    const struct gg_kv *kv = kv_at(g, i);
    return kv && load_int_range(kv->type, kv->val, INT64_MIN, INT64_MAX, out);
}

bool eng_gguf_kv_f64(const struct eng_gguf *g, int64_t i, double *out)
{
    const struct gg_kv *kv = kv_at(g, i);
    return kv && load_float(kv->type, kv->val, out);
}

bool eng_gguf_get_u32(const struct eng_gguf *g, const char *key, uint32_t *out)
{
    const struct gg_kv *kv = kv_by_key(g, key);
    int64_t v;
    if (!kv || !load_int_range(kv->type, kv->val, 0, UINT32_MAX, &v)) {
        return false;
    }
    *out = (uint32_t)v;
    return true;
}

bool eng_gguf_get_i64(const struct eng_gguf *g, const char *key, int64_t *out)
{
    return eng_gguf_kv_i64(g, eng_gguf_find(g, key), out);
}

bool eng_gguf_get_f32(const struct eng_gguf *g, const char *key, float *out)
{
    double d;
    if (!eng_gguf_kv_f64(g, eng_gguf_find(g, key), &d)) {
        return false;
    }
    *out = (float)d;
    return true;
}

bool eng_gguf_get_bool(const struct eng_gguf *g, const char *key, bool *out)
{
    const struct gg_kv *kv = kv_by_key(g, key);
    if (!kv || kv->type != ENG_GGUF_BOOL) {
        return false;
    }
    *out = kv->val[0] != 0;
    return true;
}

bool eng_gguf_get_str(const struct eng_gguf *g, const char *key, struct eng_gguf_str *out)
{
    const struct gg_kv *kv = kv_by_key(g, key);
    if (!kv || kv->type != ENG_GGUF_STRING) {
        return false;
    }
    *out = (struct eng_gguf_str){(const char *)kv->val, kv->str_len};
    return true;
}

bool eng_gguf_kv_arr(const struct eng_gguf *g, int64_t i, enum eng_gguf_vtype *type, uint64_t *len)
{
    const struct gg_kv *kv = kv_at(g, i);
    if (!kv || kv->type != ENG_GGUF_ARRAY) {
        return false;
    }
    if (type) {
        *type = (enum eng_gguf_vtype)kv->arr_type;
    }
    if (len) {
        *len = kv->arr_n;
    }
    return true;
}

bool eng_gguf_get_arr(const struct eng_gguf *g, const char *key, enum eng_gguf_vtype *type,
                      uint64_t *len)
{
    return eng_gguf_kv_arr(g, eng_gguf_find(g, key), type, len);
}

struct eng_gguf_str eng_gguf_kv_str(const struct eng_gguf *g, int64_t i, uint64_t j)
{
    const struct gg_kv *kv = kv_at(g, i);
    if (kv && kv->type == ENG_GGUF_STRING) {
        return (struct eng_gguf_str){(const char *)kv->val, kv->str_len};
    }
    if (!kv || kv->type != ENG_GGUF_ARRAY || kv->arr_type != ENG_GGUF_STRING || j >= kv->arr_n) {
        return (struct eng_gguf_str){NULL, 0};
    }
    const uint8_t *p = kv->val + kv->str_off[j];
    return (struct eng_gguf_str){(const char *)p + 8, (size_t)ld_u64(p)};
}

struct eng_gguf_str eng_gguf_arr_str(const struct eng_gguf *g, const char *key, uint64_t j)
{
    int64_t i = eng_gguf_find(g, key);
    const struct gg_kv *kv = kv_at(g, i);
    if (!kv || kv->type != ENG_GGUF_ARRAY) {
        return (struct eng_gguf_str){NULL, 0};
    }
    return eng_gguf_kv_str(g, i, j);
}

const void *eng_gguf_kv_raw(const struct eng_gguf *g, int64_t i, size_t *len)
{
    const struct gg_kv *kv = kv_at(g, i);
    if (!kv) {
        *len = 0;
        return NULL;
    }
    *len = kv->raw_len;
    return kv->raw;
}

const void *eng_gguf_kv_arr_data(const struct eng_gguf *g, int64_t i)
{
    const struct gg_kv *kv = kv_at(g, i);
    if (!kv || kv->type != ENG_GGUF_ARRAY || kv->arr_type == ENG_GGUF_STRING) {
        return NULL;
    }
    return kv->val;
}

bool eng_gguf_arr_f32(const struct eng_gguf *g, const char *key, float *out, uint64_t n)
{
    const struct gg_kv *kv = kv_by_key(g, key);
    if (!kv || kv->type != ENG_GGUF_ARRAY || kv->arr_n != n || kv->arr_type == ENG_GGUF_STRING ||
        kv->arr_type == ENG_GGUF_BOOL) {
        return false;
    }
    size_t es = vtype_sizes[kv->arr_type];
    for (uint64_t j = 0; j < n; j++) {
        const uint8_t *p = kv->val + j * es;
        double d;
        int64_t s = 0;
        uint64_t u = 0;
        bool is_signed;
        if (load_float(kv->arr_type, p, &d)) {
            out[j] = (float)d;
        } else if (load_int(kv->arr_type, p, &s, &u, &is_signed)) {
            out[j] = is_signed ? (float)s : (float)u;
        } else {
            return false;
        }
    }
    return true;
}

bool eng_gguf_arr_i32(const struct eng_gguf *g, const char *key, int32_t *out, uint64_t n)
{
    const struct gg_kv *kv = kv_by_key(g, key);
    if (!kv || kv->type != ENG_GGUF_ARRAY || kv->arr_n != n || kv->arr_type == ENG_GGUF_STRING ||
        kv->arr_type == ENG_GGUF_BOOL) {
        return false;
    }
    size_t es = eng_gguf_vtype_size(kv->arr_type);
    for (uint64_t j = 0; j < n; j++) {
        int64_t v;
        if (!load_int_range(kv->arr_type, kv->val + j * es, INT32_MIN, INT32_MAX, &v)) {
            return false;
        }
        out[j] = (int32_t)v;
    }
    return true;
}

int64_t eng_gguf_n_tensors(const struct eng_gguf *g)
{
    return g->n_tensors;
}

const struct eng_gguf_tensor *eng_gguf_tensor(const struct eng_gguf *g, int64_t i)
{
    return (i >= 0 && i < g->n_tensors) ? &g->tensors[i] : NULL;
}

const struct eng_gguf_tensor *eng_gguf_find_tensor(const struct eng_gguf *g, const char *name)
{
    if (!name) {
        return NULL;
    }
    int64_t i = index_find(&g->tensor_index, name, strlen(name), tensor_name, g);
    return i >= 0 ? &g->tensors[i] : NULL;
}
