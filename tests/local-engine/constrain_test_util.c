/* Helpers of the constrained-generation tests (see constrain_test_util.h). */
// clang-format off
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
// clang-format on
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "local-engine/model_internal.h"
#include "local-engine/types.h"
#include "tests/local-engine/constrain_test_util.h"

size_t ct_utf8_len(const char *s)
{
    size_t n = 0;
    for (; *s; s++) {
        n += ((unsigned char)*s & 0xC0) != 0x80;
    }
    return n;
}

void ct_write_model(const char *shape, const char *vocab_name, uint64_t seed, const char *stem,
                    char *out, size_t cap)
{
    struct eng_mkmodel_opts o = {.shape = shape, .type = ENG_TYPE_Q8_0, .seed = seed};
    char vocab[512], err[512] = "";
    snprintf(vocab, sizeof(vocab), "%s/vocab/%s", WYE_SHARED_DIR, vocab_name);
    snprintf(out, cap, "%s/%s_%d.gguf", WYE_BINARY_DIR, stem, (int)getpid());
    o.vocab_path = vocab;
    o.out_path = out;
    if (eng_mkmodel_write(&o, err, sizeof(err)) != WYE_OK) {
        fail_msg("mkmodel: %s", err);
    }
}

struct eng_model *ct_load(const char *path)
{
    char err[512] = "";
    struct eng_model *m = NULL;
    if (eng_model_load(path, &m, err, sizeof(err)) != WYE_OK) {
        fail_msg("%s: %s", path, err);
    }
    return m;
}

struct eng_model *ct_load_stories(void)
{
    char path[512];
    snprintf(path, sizeof(path), "%s/models/stories260K-f32.gguf", WYE_SHARED_DIR);
    return ct_load(path);
}

struct eng_ctx *ct_mkctx(struct eng_model *m, int32_t n_seq, int32_t n_ctx)
{
    struct eng_ctx_params p = {.n_ctx = n_ctx, .n_seq_max = n_seq, .n_threads = 1};
    struct eng_ctx *c = NULL;
    char err[256] = "";
    if (eng_ctx_create(m, &p, &c, err, sizeof(err)) != WYE_OK) {
        fail_msg("eng_ctx_create: %s", err);
    }
    return c;
}

struct eng_constraint *ct_compile(const char *schema)
{
    struct eng_constraint *k = NULL;
    char err[256] = "";
    enum wye_err e = schema ? eng_constraint_compile(schema, strlen(schema), &k, err, sizeof(err))
                            : eng_constraint_json_object(&k, err, sizeof(err));
    if (e) {
        fail_msg("compile: %s", err);
    }
    return k;
}
