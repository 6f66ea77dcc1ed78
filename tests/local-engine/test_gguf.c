/* The GGUF loader on the real files in the shared folder (known metadata of each model and
 * vocabulary) and the writer round trip: every value type and several tensor types written,
 * re-opened and compared, to memory and to a file, v2 and v3, plus copying tokenizer keys. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/alloc.h"
#include "local-engine/gguf.h"
#include "local-engine/gguf_write.h"

static struct eng_gguf *open_shared(const char *rel)
{
    char path[1024];
    char err[512] = "";
    struct eng_gguf *g = NULL;
    snprintf(path, sizeof path, "%s/%s", WYE_SHARED_DIR, rel);
    enum wye_err e = eng_gguf_open(path, &g, err, sizeof err);
    if (e != WYE_OK) {
        print_error("%s: %s\n", path, err);
    }
    assert_int_equal(e, WYE_OK);
    assert_non_null(g);
    return g;
}

static uint32_t get_u32(const struct eng_gguf *g, const char *key)
{
    uint32_t v = 0;
    assert_true(eng_gguf_get_u32(g, key, &v));
    return v;
}

/* Every tensor lies inside the data section, aligned, and is findable by name. */
static void check_tensors(const struct eng_gguf *g)
{
    for (int64_t i = 0; i < eng_gguf_n_tensors(g); i++) {
        const struct eng_gguf_tensor *t = eng_gguf_tensor(g, i);
        assert_non_null(t);
        assert_true((uintptr_t)t->data % eng_gguf_alignment(g) == 0);
        char name[64];
        assert_true(t->name.len < sizeof name);
        memcpy(name, t->name.p, t->name.len);
        name[t->name.len] = '\0';
        assert_ptr_equal(eng_gguf_find_tensor(g, name), t);
        int64_t nel = t->ne[0] * t->ne[1] * t->ne[2] * t->ne[3];
        assert_int_equal(t->size, (size_t)(nel / eng_type_block_elems(t->type)) *
                                      eng_type_block_bytes(t->type));
    }
    assert_null(eng_gguf_tensor(g, eng_gguf_n_tensors(g)));
    assert_null(eng_gguf_tensor(g, -1));
    assert_null(eng_gguf_find_tensor(g, "no.such.tensor"));
}

static void check_stories(const char *rel, uint32_t matrix_type)
{
    struct eng_gguf *g = open_shared(rel);
    struct eng_gguf_str s;
    assert_int_equal(eng_gguf_version(g), 3);
    assert_true(eng_gguf_get_str(g, "general.architecture", &s));
    assert_true(eng_gguf_str_eq(s, "llama"));
    assert_int_equal(get_u32(g, "llama.embedding_length"), 64);
    assert_int_equal(get_u32(g, "llama.block_count"), 5);
    assert_int_equal(get_u32(g, "llama.attention.head_count"), 8);
    assert_int_equal(get_u32(g, "llama.attention.head_count_kv"), 4);
    assert_int_equal(get_u32(g, "llama.context_length"), 512);
    assert_int_equal(get_u32(g, "tokenizer.ggml.bos_token_id"), 1);
    assert_int_equal(get_u32(g, "tokenizer.ggml.eos_token_id"), 2);
    float eps = 0;
    assert_true(eng_gguf_get_f32(g, "llama.attention.layer_norm_rms_epsilon", &eps));
    assert_true(fabsf(eps - 1e-5f) < 1e-9f);
    enum eng_gguf_vtype vt;
    uint64_t n = 0;
    assert_true(eng_gguf_get_arr(g, "tokenizer.ggml.tokens", &vt, &n));
    assert_int_equal(vt, ENG_GGUF_STRING);
    assert_int_equal(n, 512);
    assert_true(eng_gguf_str_eq(eng_gguf_arr_str(g, "tokenizer.ggml.tokens", 1), "<s>"));
    assert_true(eng_gguf_str_eq(eng_gguf_arr_str(g, "tokenizer.ggml.tokens", 2), "</s>"));
    assert_null(eng_gguf_arr_str(g, "tokenizer.ggml.tokens", 512).p);
    float scores[512];
    assert_true(eng_gguf_arr_f32(g, "tokenizer.ggml.scores", scores, 512));
    assert_false(eng_gguf_arr_f32(g, "tokenizer.ggml.scores", scores, 511));
    assert_false(eng_gguf_arr_f32(g, "tokenizer.ggml.tokens", scores, 512));

    const struct eng_gguf_tensor *emb = eng_gguf_find_tensor(g, "token_embd.weight");
    assert_non_null(emb);
    assert_int_equal(emb->n_dims, 2);
    assert_int_equal(emb->ne[0], 64);
    assert_int_equal(emb->ne[1], 512);
    const struct eng_gguf_tensor *norm = eng_gguf_find_tensor(g, "blk.0.attn_norm.weight");
    assert_non_null(norm);
    assert_int_equal(norm->type, ENG_TYPE_F32);
    assert_int_equal(norm->ne[0], 64);
    const struct eng_gguf_tensor *wq = eng_gguf_find_tensor(g, "blk.4.attn_q.weight");
    assert_non_null(wq);
    assert_int_equal(wq->type, matrix_type);
    int n_matrix = 0, n_f32 = 0;
    for (int64_t i = 0; i < eng_gguf_n_tensors(g); i++) {
        uint32_t t = eng_gguf_tensor(g, i)->type;
        n_matrix += t == matrix_type;
        n_f32 += t == ENG_TYPE_F32;
    }
    if (matrix_type == ENG_TYPE_F32) {
        assert_int_equal(n_f32, eng_gguf_n_tensors(g));
    } else {
        assert_int_equal(n_matrix + n_f32, eng_gguf_n_tensors(g));
        assert_true(n_matrix > 0 && n_f32 > 0); /* mixed types in one file */
    }
    check_tensors(g);
    eng_gguf_close(g);
}

static void test_stories(void **state)
{
    (void)state;
    check_stories("models/stories260K-f32.gguf", ENG_TYPE_F32);
    check_stories("models/stories260K-q8_0.gguf", ENG_TYPE_Q8_0);
    check_stories("models/stories260K-q4_0.gguf", ENG_TYPE_Q4_0);
}

static void test_llama2_tiny(void **state)
{
    (void)state;
    struct eng_gguf *g = open_shared("models/llama-2-tiny-random.gguf");
    uint64_t n = 0;
    assert_true(eng_gguf_get_arr(g, "tokenizer.ggml.tokens", NULL, &n));
    assert_int_equal(n, 32000);
    int n_f16 = 0;
    for (int64_t i = 0; i < eng_gguf_n_tensors(g); i++) {
        n_f16 += eng_gguf_tensor(g, i)->type == ENG_TYPE_F16;
    }
    assert_true(n_f16 > 0);
    assert_int_equal(eng_gguf_find_tensor(g, "token_embd.weight")->type, ENG_TYPE_F16);
    check_tensors(g);
    eng_gguf_close(g);
}

static void test_qwen2_vocab(void **state)
{
    (void)state;
    struct eng_gguf *g = open_shared("vocab/ggml-vocab-qwen2.gguf");
    uint64_t n = 0;
    assert_true(eng_gguf_get_arr(g, "tokenizer.ggml.tokens", NULL, &n));
    assert_int_equal(n, 151936);
    assert_int_equal(eng_gguf_n_tensors(g), 0);
    uint32_t eos = get_u32(g, "tokenizer.ggml.eos_token_id");
    assert_true(eng_gguf_str_eq(eng_gguf_arr_str(g, "tokenizer.ggml.tokens", eos), "<|im_end|>"));
    assert_true(
        eng_gguf_str_eq(eng_gguf_arr_str(g, "tokenizer.ggml.tokens", 151643), "<|endoftext|>"));
    assert_true(eng_gguf_str_eq(eng_gguf_arr_str(g, "tokenizer.ggml.tokens", 0), "!"));
    struct eng_gguf_str s;
    assert_true(eng_gguf_get_str(g, "tokenizer.chat_template", &s));
    assert_non_null(memmem(s.p, s.len, "<|im_start|>", 12));
    /* Walk the whole vocabulary and the merges: every element is O(1) and non-NULL. */
    size_t total = 0;
    for (uint64_t j = 0; j < n; j++) {
        struct eng_gguf_str t = eng_gguf_arr_str(g, "tokenizer.ggml.tokens", j);
        assert_non_null(t.p);
        total += t.len;
    }
    assert_true(total > n);
    uint64_t n_merges = 0;
    assert_true(eng_gguf_get_arr(g, "tokenizer.ggml.merges", NULL, &n_merges));
    assert_true(n_merges > 150000);
    assert_non_null(memchr(eng_gguf_arr_str(g, "tokenizer.ggml.merges", 0).p, ' ',
                           eng_gguf_arr_str(g, "tokenizer.ggml.merges", 0).len));
    eng_gguf_close(g);
}

/* Every .gguf in models/ and vocab/ opens. */
static void test_open_all_shared(void **state)
{
    (void)state;
    static const char *const dirs[] = {"models", "vocab"};
    int opened = 0;
    for (size_t d = 0; d < 2; d++) {
        char path[1024];
        snprintf(path, sizeof path, "%s/%s", WYE_SHARED_DIR, dirs[d]);
        DIR *dir = opendir(path);
        assert_non_null(dir);
        struct dirent *e;
        while ((e = readdir(dir)) != NULL) {
            size_t l = strlen(e->d_name);
            if (l < 5 || strcmp(e->d_name + l - 5, ".gguf") != 0) {
                continue;
            }
            char rel[600];
            snprintf(rel, sizeof rel, "%s/%s", dirs[d], e->d_name);
            struct eng_gguf *g = open_shared(rel);
            assert_true(eng_gguf_find(g, "general.architecture") >= 0);
            check_tensors(g);
            eng_gguf_close(g);
            opened++;
        }
        closedir(dir);
    }
    assert_true(opened >= 9);
}

static void test_open_errors(void **state)
{
    (void)state;
    char err[256];
    struct eng_gguf *g = (struct eng_gguf *)&err;
    assert_int_equal(eng_gguf_open("/nonexistent/x.gguf", &g, err, sizeof err), WYE_ERR_NOTFOUND);
    assert_null(g);
    assert_non_null(strstr(err, "/nonexistent/x.gguf: cannot open"));
    assert_int_not_equal(eng_gguf_open(WYE_SHARED_DIR, &g, err, sizeof err), WYE_OK);
    assert_non_null(strstr(err, "not a regular file"));
    char path[1024];
    snprintf(path, sizeof path, "%s/models/README.md", WYE_SHARED_DIR);
    assert_int_equal(eng_gguf_open(path, &g, err, sizeof err), WYE_ERR_PARSE);
    assert_non_null(strstr(err, "README.md: bad magic"));
    /* An empty buffer and a tiny errbuf are handled. */
    assert_int_equal(eng_gguf_open_mem("", 0, &g, err, 8), WYE_ERR_PARSE);
    assert_int_equal(strlen(err), 7);
    assert_int_not_equal(eng_gguf_open_mem("GGUF", 4, &g, NULL, 0), WYE_OK);
}

/* ---- writer round trip ---- */

static const char *const rt_strs[] = {"alpha", "", "g\xc3\xa4mma", "x y z"};

static struct eng_gguf_writer *roundtrip_writer(uint16_t *f16, uint8_t *q8, uint8_t *q4k,
                                                float *f32)
{
    struct eng_gguf_writer *w = eng_gguf_writer_create();
    assert_non_null(w);
    static const int16_t i16s[] = {-3, 0, 32767};
    static const uint32_t u32s[] = {0, 7, 4000000000u};
    static const int8_t i8s[] = {-128, 127};
    static const double f64s[] = {0.25, -1e300};
    static const uint8_t bools[] = {1, 0, 1};
    static const size_t lens[] = {3, 1}; /* with a NUL inside the first string */
    static const char *const nul_strs[] = {"a\0b", "\0"};
    assert_int_equal(eng_gguf_writer_add_u8(w, "t.u8", 200), WYE_OK);
    assert_int_equal(eng_gguf_writer_add_i8(w, "t.i8", -5), WYE_OK);
    assert_int_equal(eng_gguf_writer_add_u16(w, "t.u16", 65535), WYE_OK);
    assert_int_equal(eng_gguf_writer_add_i16(w, "t.i16", -300), WYE_OK);
    assert_int_equal(eng_gguf_writer_add_u32(w, "t.u32", 4000000000u), WYE_OK);
    assert_int_equal(eng_gguf_writer_add_i32(w, "t.i32", -7), WYE_OK);
    assert_int_equal(eng_gguf_writer_add_u64(w, "t.u64", UINT64_MAX), WYE_OK);
    assert_int_equal(eng_gguf_writer_add_i64(w, "t.i64", INT64_MIN), WYE_OK);
    assert_int_equal(eng_gguf_writer_add_f32(w, "t.f32", 1.5f), WYE_OK);
    assert_int_equal(eng_gguf_writer_add_f64(w, "t.f64", 1e100), WYE_OK);
    assert_int_equal(eng_gguf_writer_add_bool(w, "t.bool", true), WYE_OK);
    assert_int_equal(eng_gguf_writer_add_str(w, "t.str", "hello"), WYE_OK);
    assert_int_equal(eng_gguf_writer_add_str(w, "t.empty", ""), WYE_OK);
    assert_int_equal(eng_gguf_writer_add_arr_str(w, "t.astr", rt_strs, 4), WYE_OK);
    assert_int_equal(eng_gguf_writer_add_arr_strn(w, "t.anul", nul_strs, lens, 2), WYE_OK);
    assert_int_equal(eng_gguf_writer_add_arr_str(w, "t.anone", NULL, 0), WYE_OK);
    assert_int_equal(eng_gguf_writer_add_arr_data(w, "t.ai16", ENG_GGUF_I16, i16s, 3), WYE_OK);
    assert_int_equal(eng_gguf_writer_add_arr_data(w, "t.au32", ENG_GGUF_U32, u32s, 3), WYE_OK);
    assert_int_equal(eng_gguf_writer_add_arr_data(w, "t.ai8", ENG_GGUF_I8, i8s, 2), WYE_OK);
    assert_int_equal(eng_gguf_writer_add_arr_data(w, "t.af64", ENG_GGUF_F64, f64s, 2), WYE_OK);
    assert_int_equal(eng_gguf_writer_add_arr_data(w, "t.abool", ENG_GGUF_BOOL, bools, 3), WYE_OK);
    /* The writer refuses what a loader would reject. */
    assert_int_equal(eng_gguf_writer_add_u8(w, "t.u8", 1), WYE_ERR_INVAL);
    assert_int_equal(eng_gguf_writer_add_arr_data(w, "t.x", ENG_GGUF_STRING, u32s, 1),
                     WYE_ERR_INVAL);
    assert_int_equal(eng_gguf_writer_set_alignment(w, 48), WYE_ERR_INVAL);
    assert_int_equal(eng_gguf_writer_set_alignment(w, 16), WYE_OK);
    assert_int_equal(eng_gguf_writer_set_alignment(w, 64), WYE_OK); /* replaces */

    for (int i = 0; i < 64 * 3; i++) {
        f16[i] = (uint16_t)(i * 31);
    }
    for (int i = 0; i < 34 * 4; i++) {
        q8[i] = (uint8_t)(i ^ 0x5a);
    }
    for (int i = 0; i < 144 * 2; i++) {
        q4k[i] = (uint8_t)(i * 13);
    }
    for (int i = 0; i < 5; i++) {
        f32[i] = (float)i - 2.5f;
    }
    int64_t ne_f16[2] = {64, 3}, ne_q8[2] = {64, 2}, ne_q4k[3] = {256, 1, 2}, ne_f32[1] = {5};
    int64_t ne_empty[2] = {0, 7}, ne_big[1] = {1000};
    assert_int_equal(eng_gguf_writer_add_tensor(w, "w.f16", ENG_TYPE_F16, 2, ne_f16, f16,
                                                64 * 3 * 2, ENG_GGUF_BORROW),
                     WYE_OK);
    assert_int_equal(
        eng_gguf_writer_add_tensor(w, "w.q8", ENG_TYPE_Q8_0, 2, ne_q8, q8, 34 * 4, ENG_GGUF_COPY),
        WYE_OK);
    assert_int_equal(eng_gguf_writer_add_tensor(w, "w.q4k", ENG_TYPE_Q4_K, 3, ne_q4k, q4k, 144 * 2,
                                                ENG_GGUF_COPY),
                     WYE_OK);
    assert_int_equal(
        eng_gguf_writer_add_tensor(w, "w.f32", ENG_TYPE_F32, 1, ne_f32, f32, 20, ENG_GGUF_BORROW),
        WYE_OK);
    assert_int_equal(eng_gguf_writer_add_tensor(w, "w.empty", ENG_TYPE_F32, 2, ne_empty, NULL, 0,
                                                ENG_GGUF_BORROW),
                     WYE_OK);
    assert_int_equal(eng_gguf_writer_add_tensor(w, "w.zeros", ENG_TYPE_BF16, 1, ne_big, NULL, 2000,
                                                ENG_GGUF_BORROW),
                     WYE_OK);
    /* Wrong size, block, duplicate name, n_dims, unknown type. */
    assert_int_equal(
        eng_gguf_writer_add_tensor(w, "w.bad", ENG_TYPE_F32, 1, ne_f32, f32, 16, ENG_GGUF_BORROW),
        WYE_ERR_INVAL);
    int64_t ne33[1] = {33};
    assert_int_equal(
        eng_gguf_writer_add_tensor(w, "w.bad", ENG_TYPE_Q8_0, 1, ne33, q8, 34, ENG_GGUF_BORROW),
        WYE_ERR_INVAL);
    assert_int_equal(
        eng_gguf_writer_add_tensor(w, "w.f32", ENG_TYPE_F32, 1, ne_f32, f32, 20, ENG_GGUF_BORROW),
        WYE_ERR_INVAL);
    assert_int_equal(
        eng_gguf_writer_add_tensor(w, "w.bad", ENG_TYPE_F32, 0, ne_f32, f32, 20, ENG_GGUF_BORROW),
        WYE_ERR_INVAL);
    assert_int_equal(
        eng_gguf_writer_add_tensor(w, "w.bad", 99, 1, ne_f32, f32, 20, ENG_GGUF_BORROW),
        WYE_ERR_INVAL);
    assert_int_equal(eng_gguf_writer_n_kv(w), 22);
    assert_int_equal(eng_gguf_writer_n_tensors(w), 6);
    return w;
}

static void check_roundtrip(const struct eng_gguf *g, const uint16_t *f16, const uint8_t *q8,
                            const uint8_t *q4k, const float *f32)
{
    uint32_t u32;
    int64_t i64;
    float f;
    bool b;
    struct eng_gguf_str s;
    assert_int_equal(eng_gguf_alignment(g), 64);
    assert_int_equal(eng_gguf_n_kv(g), 22);
    /* Integer getters accept any integer type whose value fits. */
    assert_true(eng_gguf_get_u32(g, "t.u8", &u32) && u32 == 200);
    assert_false(eng_gguf_get_u32(g, "t.i8", &u32));
    assert_true(eng_gguf_get_i64(g, "t.i8", &i64) && i64 == -5);
    assert_true(eng_gguf_get_u32(g, "t.u16", &u32) && u32 == 65535);
    assert_true(eng_gguf_get_i64(g, "t.i16", &i64) && i64 == -300);
    assert_true(eng_gguf_get_u32(g, "t.u32", &u32) && u32 == 4000000000u);
    assert_true(eng_gguf_get_i64(g, "t.i32", &i64) && i64 == -7);
    assert_false(eng_gguf_get_u32(g, "t.i32", &u32));
    assert_false(eng_gguf_get_i64(g, "t.u64", &i64));
    assert_false(eng_gguf_get_u32(g, "t.u64", &u32));
    assert_true(eng_gguf_get_i64(g, "t.i64", &i64) && i64 == INT64_MIN);
    assert_true(eng_gguf_get_f32(g, "t.f32", &f) && f == 1.5f);
    assert_true(eng_gguf_get_f32(g, "t.f64", &f) && isinf(f));
    double d;
    assert_true(eng_gguf_kv_f64(g, eng_gguf_find(g, "t.f64"), &d) && d == 1e100);
    assert_false(eng_gguf_get_f32(g, "t.str", &f));
    assert_false(eng_gguf_get_u32(g, "t.f32", &u32));
    assert_true(eng_gguf_get_bool(g, "t.bool", &b) && b);
    assert_false(eng_gguf_get_bool(g, "t.u8", &b));
    assert_true(eng_gguf_get_str(g, "t.str", &s) && eng_gguf_str_eq(s, "hello"));
    assert_true(eng_gguf_get_str(g, "t.empty", &s) && s.len == 0);
    assert_false(eng_gguf_get_str(g, "t.u8", &s));
    assert_false(eng_gguf_get_u32(g, "absent", &u32));
    assert_int_equal(eng_gguf_find(g, "absent"), -1);
    assert_int_equal(eng_gguf_kv_type(g, eng_gguf_find(g, "t.astr")), ENG_GGUF_ARRAY);
    assert_true(eng_gguf_str_eq(eng_gguf_key(g, 0), "t.u8"));
    /* Arrays. */
    enum eng_gguf_vtype vt;
    uint64_t n;
    assert_true(eng_gguf_get_arr(g, "t.astr", &vt, &n) && vt == ENG_GGUF_STRING && n == 4);
    for (uint64_t j = 0; j < 4; j++) {
        assert_true(eng_gguf_str_eq(eng_gguf_arr_str(g, "t.astr", j), rt_strs[j]));
    }
    assert_null(eng_gguf_arr_str(g, "t.astr", 4).p);
    assert_null(eng_gguf_arr_str(g, "t.str", 0).p);
    s = eng_gguf_arr_str(g, "t.anul", 0);
    assert_int_equal(s.len, 3);
    assert_memory_equal(s.p, "a\0b", 3);
    assert_int_equal(eng_gguf_arr_str(g, "t.anul", 1).len, 1);
    assert_true(eng_gguf_get_arr(g, "t.anone", &vt, &n) && vt == ENG_GGUF_STRING && n == 0);
    assert_false(eng_gguf_get_arr(g, "t.str", &vt, &n));
    float fv[3];
    int32_t iv[3];
    assert_true(eng_gguf_arr_f32(g, "t.ai16", fv, 3));
    assert_true(fv[0] == -3.0f && fv[2] == 32767.0f);
    assert_true(eng_gguf_arr_i32(g, "t.ai16", iv, 3));
    assert_true(iv[0] == -3 && iv[1] == 0 && iv[2] == 32767);
    assert_false(eng_gguf_arr_i32(g, "t.au32", iv, 3)); /* 4e9 does not fit */
    assert_true(eng_gguf_arr_f32(g, "t.au32", fv, 3) && fv[2] == 4e9f);
    assert_true(eng_gguf_arr_i32(g, "t.ai8", iv, 2) && iv[0] == -128 && iv[1] == 127);
    assert_true(eng_gguf_arr_f32(g, "t.af64", fv, 2) && fv[0] == 0.25f);
    assert_false(eng_gguf_arr_i32(g, "t.af64", iv, 2));
    assert_false(eng_gguf_arr_f32(g, "t.abool", fv, 3));
    assert_false(eng_gguf_arr_i32(g, "t.astr", iv, 3));
    const uint8_t *bools = eng_gguf_kv_arr_data(g, eng_gguf_find(g, "t.abool"));
    assert_non_null(bools);
    assert_true(bools[0] == 1 && bools[1] == 0 && bools[2] == 1);
    /* Tensors: shapes, types, data, and ggml's contiguous padded layout. */
    assert_int_equal(eng_gguf_n_tensors(g), 6);
    const struct eng_gguf_tensor *t = eng_gguf_tensor(g, 0);
    assert_true(eng_gguf_str_eq(t->name, "w.f16"));
    assert_int_equal(t->type, ENG_TYPE_F16);
    assert_int_equal(t->n_dims, 2);
    assert_true(t->ne[0] == 64 && t->ne[1] == 3 && t->ne[2] == 1 && t->ne[3] == 1);
    assert_memory_equal(t->data, f16, 64 * 3 * 2);
    const uint8_t *base = t->data;
    assert_int_equal((const uint8_t *)eng_gguf_tensor(g, 1)->data - base, 384);
    t = eng_gguf_find_tensor(g, "w.q8");
    assert_int_equal(t->type, ENG_TYPE_Q8_0);
    assert_int_equal(t->size, 136);
    assert_memory_equal(t->data, q8, 136);
    t = eng_gguf_find_tensor(g, "w.q4k");
    assert_int_equal((const uint8_t *)t->data - base, 384 + 192);
    assert_int_equal(t->n_dims, 3);
    assert_int_equal(t->ne[2], 2);
    assert_memory_equal(t->data, q4k, 288);
    t = eng_gguf_find_tensor(g, "w.f32");
    assert_memory_equal(t->data, f32, 20);
    t = eng_gguf_find_tensor(g, "w.empty");
    assert_int_equal(t->size, 0);
    assert_int_equal(t->ne[0], 0);
    t = eng_gguf_find_tensor(g, "w.zeros");
    assert_int_equal(t->type, ENG_TYPE_BF16);
    assert_int_equal(t->size, 2000);
    for (size_t i = 0; i < 2000; i++) {
        assert_int_equal(((const uint8_t *)t->data)[i], 0);
    }
    assert_int_equal(eng_gguf_data_offset(g) % 64, 0);
    assert_int_equal((const uint8_t *)t->data + 2000 + 48 - base,
                     eng_gguf_file_size(g) - eng_gguf_data_offset(g));
}

static void test_writer_roundtrip(void **state)
{
    (void)state;
    uint16_t f16[64 * 3];
    uint8_t q8[34 * 4], q4k[144 * 2];
    float f32[5];
    struct eng_gguf_writer *w = roundtrip_writer(f16, q8, q4k, f32);
    void *buf = NULL;
    size_t len = 0;
    assert_int_equal(eng_gguf_writer_write_mem(w, &buf, &len), WYE_OK);
    assert_int_equal(len, eng_gguf_writer_size(w));
    /* Copy into 64-aligned memory so tensor data pointers are aligned as from mmap. */
    void *aligned = NULL;
    assert_int_equal(posix_memalign(&aligned, 64, len), 0);
    memcpy(aligned, buf, len);
    struct eng_gguf *g = NULL;
    char err[256] = "";
    assert_int_equal(eng_gguf_open_mem(aligned, len, &g, err, sizeof err), WYE_OK);
    assert_int_equal(eng_gguf_version(g), 3);
    check_roundtrip(g, f16, q8, q4k, f32);
    eng_gguf_close(g);

    /* The same through a file, as version 2. */
    char path[] = "/tmp/wye_test_gguf_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    eng_gguf_writer_set_version(w, 2);
    assert_int_equal(eng_gguf_writer_write_file(w, path, err, sizeof err), WYE_OK);
    assert_int_equal(eng_gguf_open(path, &g, err, sizeof err), WYE_OK);
    assert_int_equal(eng_gguf_version(g), 2);
    check_roundtrip(g, f16, q8, q4k, f32);
    /* The file is byte-identical to the memory image apart from the version. */
    assert_int_equal(eng_gguf_file_size(g), len);
    eng_gguf_close(g);
    unlink(path);
    assert_int_equal(eng_gguf_writer_write_file(w, "/nonexistent/dir/x.gguf", err, sizeof err),
                     WYE_ERR_IO);
    assert_non_null(strstr(err, "cannot create"));
    free(aligned);
    wye_free(buf);
    eng_gguf_writer_destroy(w);
    eng_gguf_writer_destroy(NULL);
    eng_gguf_close(NULL);
}

/* copy_kv carries a whole tokenizer (150k strings, merges, template) into a new file. */
static void test_copy_tokenizer(void **state)
{
    (void)state;
    struct eng_gguf *src = open_shared("vocab/ggml-vocab-qwen2.gguf");
    struct eng_gguf_writer *w = eng_gguf_writer_create();
    assert_non_null(w);
    assert_int_equal(eng_gguf_writer_add_str(w, "general.architecture", "qwen2"), WYE_OK);
    assert_int_equal(eng_gguf_writer_copy_kv(w, src, "tokenizer."), WYE_OK);
    /* Copying again collides with the keys already there. */
    assert_int_equal(eng_gguf_writer_copy_kv(w, src, "tokenizer.ggml.tokens"), WYE_ERR_INVAL);
    void *buf;
    size_t len;
    assert_int_equal(eng_gguf_writer_write_mem(w, &buf, &len), WYE_OK);
    struct eng_gguf *g = NULL;
    char err[256];
    assert_int_equal(eng_gguf_open_mem(buf, len, &g, err, sizeof err), WYE_OK);
    int n_tok_keys = 0;
    for (int64_t i = 0; i < eng_gguf_n_kv(src); i++) {
        struct eng_gguf_str k = eng_gguf_key(src, i);
        n_tok_keys += k.len > 10 && memcmp(k.p, "tokenizer.", 10) == 0;
    }
    assert_int_equal(eng_gguf_n_kv(g), n_tok_keys + 1);
    uint64_t n1, n2;
    assert_true(eng_gguf_get_arr(src, "tokenizer.ggml.tokens", NULL, &n1));
    assert_true(eng_gguf_get_arr(g, "tokenizer.ggml.tokens", NULL, &n2));
    assert_int_equal(n1, n2);
    for (uint64_t j = 0; j < n1; j += 997) {
        struct eng_gguf_str a = eng_gguf_arr_str(src, "tokenizer.ggml.tokens", j);
        struct eng_gguf_str b = eng_gguf_arr_str(g, "tokenizer.ggml.tokens", j);
        assert_int_equal(a.len, b.len);
        assert_memory_equal(a.p, b.p, a.len);
    }
    uint32_t a, b;
    assert_true(eng_gguf_get_u32(src, "tokenizer.ggml.eos_token_id", &a));
    assert_true(eng_gguf_get_u32(g, "tokenizer.ggml.eos_token_id", &b));
    assert_int_equal(a, b);
    eng_gguf_close(g);
    wye_free(buf);
    eng_gguf_writer_destroy(w);
    eng_gguf_close(src);
}

/* Rewriting a real file key by key and tensor by tensor reproduces it byte for byte: the
 * writer's encoding, tensor layout and padding are those of the tools that made them. */
static void test_rewrite_identical(void **state)
{
    (void)state;
    static const char *const files[] = {
        "models/stories260K-f32.gguf",  "models/stories260K-q8_0.gguf",
        "models/stories260K-q4_0.gguf", "models/llama-2-tiny-random.gguf",
        "vocab/ggml-vocab-qwen2.gguf",  "vocab/ggml-vocab-llama-bpe.gguf",
    };
    for (size_t f = 0; f < sizeof(files) / sizeof(files[0]); f++) {
        struct eng_gguf *g = open_shared(files[f]);
        struct eng_gguf_writer *w = eng_gguf_writer_create();
        assert_non_null(w);
        assert_int_equal(eng_gguf_writer_copy_kv(w, g, NULL), WYE_OK);
        for (int64_t i = 0; i < eng_gguf_n_tensors(g); i++) {
            const struct eng_gguf_tensor *t = eng_gguf_tensor(g, i);
            char name[64];
            memcpy(name, t->name.p, t->name.len);
            name[t->name.len] = '\0';
            assert_int_equal(eng_gguf_writer_add_tensor(w, name, t->type, t->n_dims, t->ne, t->data,
                                                        t->size, ENG_GGUF_BORROW),
                             WYE_OK);
        }
        void *buf;
        size_t len;
        assert_int_equal(eng_gguf_writer_write_mem(w, &buf, &len), WYE_OK);
        assert_int_equal(len, eng_gguf_file_size(g));
        char path[1024];
        snprintf(path, sizeof path, "%s/%s", WYE_SHARED_DIR, files[f]);
        FILE *fp = fopen(path, "rb");
        assert_non_null(fp);
        uint8_t *orig = malloc(len);
        assert_non_null(orig);
        assert_int_equal(fread(orig, 1, len, fp), len);
        fclose(fp);
        const uint8_t *file = orig;
        if (memcmp(file, buf, len) != 0) {
            size_t d = 0;
            while (file[d] == ((const uint8_t *)buf)[d]) {
                d++;
            }
            fail_msg("%s: the rewrite differs from the original at byte %zu", files[f], d);
        }
        free(orig);
        wye_free(buf);
        eng_gguf_writer_destroy(w);
        eng_gguf_close(g);
    }
}

/* The writer under allocation failure: every failure is NOMEM, nothing leaks. */
static void test_writer_oom(void **state)
{
    (void)state;
    bool done = false;
    for (long n = 0; n < 200 && !done; n++) {
        static const char *const strs[] = {"x", "yy"};
        static const float fl[2] = {1, 2};
        int64_t ne[1] = {2};
        void *buf = NULL;
        size_t len;
        wye_alloc_fail_after(n);
        struct eng_gguf_writer *w = eng_gguf_writer_create();
        enum wye_err e = w ? WYE_OK : WYE_ERR_NOMEM;
        if (!e) {
            e = eng_gguf_writer_add_str(w, "a", "b");
        }
        if (!e) {
            e = eng_gguf_writer_add_arr_str(w, "s", strs, 2);
        }
        if (!e) {
            e = eng_gguf_writer_add_arr_data(w, "f", ENG_GGUF_F32, fl, 2);
        }
        if (!e) {
            e = eng_gguf_writer_add_tensor(w, "t", ENG_TYPE_F32, 1, ne, fl, 8, ENG_GGUF_COPY);
        }
        if (!e) {
            e = eng_gguf_writer_write_mem(w, &buf, &len);
        }
        wye_alloc_fail_after(-1);
        if (e == WYE_OK) {
            done = true;
            wye_free(buf);
        } else {
            assert_int_equal(e, WYE_ERR_NOMEM);
        }
        eng_gguf_writer_destroy(w);
    }
    assert_true(done);
}

int main(void)
{
    wye_alloc_install_cjson_hooks();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_stories),        cmocka_unit_test(test_llama2_tiny),
        cmocka_unit_test(test_qwen2_vocab),    cmocka_unit_test(test_open_all_shared),
        cmocka_unit_test(test_open_errors),    cmocka_unit_test(test_writer_roundtrip),
        cmocka_unit_test(test_copy_tokenizer), cmocka_unit_test(test_rewrite_identical),
        cmocka_unit_test(test_writer_oom),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
