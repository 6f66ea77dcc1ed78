/* libFuzzer entry point for the GGUF loader: opens the input with eng_gguf_open_mem, then
 * touches every accessor (keys, scalars, string-array elements, numeric arrays, tensors and
 * the first and last byte of their data) so that ASan sees any pointer the loader let out
 * of bounds. Inputs that open are copied key by key through the writer and re-opened: that
 * must always succeed. Single-threaded. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "local-engine/gguf.h"
#include "local-engine/gguf_write.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static volatile uint8_t sink;

static void touch(const void *p, size_t n)
{
    if (n) {
        sink ^= ((const uint8_t *)p)[0];
        sink ^= ((const uint8_t *)p)[n - 1];
    }
}

static void walk(const struct eng_gguf *g)
{
    float fv[256];
    int32_t iv[256];
    (void)eng_gguf_version(g);
    (void)eng_gguf_alignment(g);
    for (int64_t i = 0; i < eng_gguf_n_kv(g); i++) {
        struct eng_gguf_str k = eng_gguf_key(g, i);
        touch(k.p, k.len);
        int64_t v;
        double d;
        (void)eng_gguf_kv_i64(g, i, &v);
        (void)eng_gguf_kv_f64(g, i, &d);
        size_t raw_len;
        touch(eng_gguf_kv_raw(g, i, &raw_len), raw_len);
        struct eng_gguf_str s = eng_gguf_kv_str(g, i, 0);
        touch(s.p, s.len);
        enum eng_gguf_vtype et;
        uint64_t n;
        char *key = wye_strndup(k.p, k.len);
        if (!key) {
            continue;
        }
        if (eng_gguf_kv_arr(g, i, &et, &n)) {
            if (et == ENG_GGUF_STRING) {
                for (uint64_t j = 0; j < n && j < 64; j++) {
                    s = eng_gguf_kv_str(g, i, j);
                    touch(s.p, s.len);
                }
                if (n) {
                    s = eng_gguf_arr_str(g, key, n - 1);
                    touch(s.p, s.len);
                }
            } else {
                touch(eng_gguf_kv_arr_data(g, i), (size_t)n * eng_gguf_vtype_size(et));
                if (n <= 256) {
                    (void)eng_gguf_arr_f32(g, key, fv, n);
                    (void)eng_gguf_arr_i32(g, key, iv, n);
                }
            }
        } else {
            uint32_t u32;
            float f;
            bool b;
            (void)eng_gguf_get_u32(g, key, &u32);
            (void)eng_gguf_get_i64(g, key, &v);
            (void)eng_gguf_get_f32(g, key, &f);
            (void)eng_gguf_get_bool(g, key, &b);
            (void)eng_gguf_get_str(g, key, &s);
        }
        /* A key containing a NUL cannot be looked up by name; any other must be found. */
        if (strlen(key) == k.len && eng_gguf_find(g, key) != i) {
            abort();
        }
        wye_free(key);
    }
    for (int64_t i = 0; i < eng_gguf_n_tensors(g); i++) {
        const struct eng_gguf_tensor *t = eng_gguf_tensor(g, i);
        touch(t->name.p, t->name.len);
        touch(t->data, t->size);
        char name[64];
        memcpy(name, t->name.p, t->name.len);
        name[t->name.len] = '\0';
        if (strlen(name) == t->name.len && eng_gguf_find_tensor(g, name) != t) {
            abort();
        }
    }
}

/* Copying every key through the writer gives a file the loader accepts. */
static void recopy(const struct eng_gguf *g)
{
    struct eng_gguf_writer *w = eng_gguf_writer_create();
    void *buf = NULL;
    size_t len = 0;
    /* A huge (valid) general.alignment means as much padding: skip those copies. */
    if (w && eng_gguf_writer_copy_kv(w, g, NULL) == WYE_OK &&
        eng_gguf_writer_size(w) <= ((size_t)1 << 20) &&
        eng_gguf_writer_write_mem(w, &buf, &len) == WYE_OK) {
        struct eng_gguf *g2 = NULL;
        char err[256];
        if (eng_gguf_open_mem(buf, len, &g2, err, sizeof err) != WYE_OK) {
            fprintf(stderr, "re-open of a copied file failed: %s\n", err);
            abort();
        }
        if (eng_gguf_n_kv(g2) != eng_gguf_n_kv(g)) {
            abort();
        }
        eng_gguf_close(g2);
    }
    wye_free(buf);
    eng_gguf_writer_destroy(w);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct eng_gguf *g = NULL;
    char err[512];
    if (eng_gguf_open_mem(data, size, &g, err, sizeof err) != WYE_OK) {
        if (err[0] == '\0' || g) {
            abort(); /* every error explains itself and leaves no handle */
        }
        return 0;
    }
    walk(g);
    recopy(g);
    eng_gguf_close(g);
    return 0;
}
