/* Shared by the constrained-generation tests (test_constrain_gen.c, test_constrain_lazy.c):
 * random-weight models written at test time, loading models and making contexts, compiling
 * schemas, and the UTF-8 length their independent validators need. Each fails the test (cmocka)
 * with the engine's message instead of returning an error. Single-threaded (cmocka's thread). */
#ifndef WYE_TESTS_CONSTRAIN_TEST_UTIL_H
#define WYE_TESTS_CONSTRAIN_TEST_UTIL_H

#include <stddef.h>
#include <stdint.h>

#include "local-engine/constrain.h"
#include "local-engine/engine.h"

/* Code points in the NUL-terminated UTF-8 string s (what maxLength / minLength count). */
size_t ct_utf8_len(const char *s);
/* Writes a random-weight Q8_0 model of shape with WYE_SHARED_DIR/vocab/<vocab_name> and seed to
 * WYE_BINARY_DIR/<stem>_<pid>.gguf; out gets that path (the caller unlinks it). */
void ct_write_model(const char *shape, const char *vocab_name, uint64_t seed, const char *stem,
                    char *out, size_t cap);
struct eng_model *ct_load(const char *path);
/* WYE_SHARED_DIR/models/stories260K-f32.gguf */
struct eng_model *ct_load_stories(void);
/* A single-threaded context of n_ctx tokens for n_seq sequences. */
struct eng_ctx *ct_mkctx(struct eng_model *m, int32_t n_seq, int32_t n_ctx);
/* Compiles schema; NULL: the json_object constraint. */
struct eng_constraint *ct_compile(const char *schema);

#endif
