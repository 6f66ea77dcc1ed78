/* The GGUF loader on malformed input: each crafted file fails with a message naming the
 * problem; a valid file truncated at every byte offset fails cleanly (each prefix sits in an
 * exact-size heap block so ASan sees any over-read); random byte flips never crash; and
 * opening under allocation failure returns NOMEM at every step without leaking. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "local-engine/gguf.h"
#include "tests/local-engine/test_gguf_util.h"

static void test_small_is_valid(void **state)
{
    (void)state;
    size_t len;
    uint8_t *buf = gguf_test_small(&len);
    assert_non_null(buf);
    struct eng_gguf *g = NULL;
    char err[256] = "";
    assert_int_equal(eng_gguf_open_mem(buf, len, &g, err, sizeof err), WYE_OK);
    assert_int_equal(eng_gguf_n_tensors(g), 3);
    const struct eng_gguf_tensor *c = eng_gguf_find_tensor(g, "c");
    assert_non_null(c);
    /* The last tensor ends at the end of the file: every truncation cuts data. */
    assert_ptr_equal((const uint8_t *)c->data + c->size, buf + len);
    assert_true(eng_gguf_str_eq(eng_gguf_arr_str(g, "tokenizer.ggml.tokens", 1), "bb"));
    eng_gguf_close(g);
    wye_free(buf);
}

static void test_bad_cases(void **state)
{
    (void)state;
    for (size_t i = 0; i < gguf_n_bad_cases; i++) {
        const struct gguf_bad_case *c = &gguf_bad_cases[i];
        size_t len = 0;
        uint8_t *buf = c->build(&len);
        if (!buf) {
            fail_msg("case %s: could not build the file", c->name);
        }
        /* An exact-size copy, so that reading one byte too far is an ASan error. */
        uint8_t *copy = malloc(len);
        assert_non_null(copy);
        memcpy(copy, buf, len);
        struct eng_gguf *g = (struct eng_gguf *)copy;
        char err[512] = "";
        enum wye_err e = eng_gguf_open_mem(copy, len, &g, err, sizeof err);
        if (e == WYE_OK || !strstr(err, c->expect)) {
            fail_msg("case %s: got %d '%s', expected an error containing '%s'", c->name, e, err,
                     c->expect);
        }
        assert_null(g);
        free(copy);
        wye_free(buf);
    }
}

static void test_truncated_everywhere(void **state)
{
    (void)state;
    size_t len;
    uint8_t *buf = gguf_test_small(&len);
    assert_non_null(buf);
    for (size_t n = 0; n < len; n++) {
        uint8_t *copy = malloc(n ? n : 1);
        assert_non_null(copy);
        memcpy(copy, buf, n);
        struct eng_gguf *g = NULL;
        char err[512] = "";
        enum wye_err e = eng_gguf_open_mem(copy, n, &g, err, sizeof err);
        if (e == WYE_OK) {
            fail_msg("a file truncated to %zu of %zu bytes was accepted", n, len);
        }
        assert_null(g);
        /* The message says what is missing: a truncated field or data past the end. */
        if (!strstr(err, "truncated") && !strstr(err, "past the end") && !strstr(err, "exceeds") &&
            !strstr(err, "cannot fit")) {
            fail_msg("truncated to %zu: unexpected message '%s'", n, err);
        }
        free(copy);
    }
    wye_free(buf);
}

/* Deterministic byte flips over the small file: whatever happens, no crash, no leak, and
 * an error always comes with a message. */
static void test_flips(void **state)
{
    (void)state;
    size_t len;
    uint8_t *buf = gguf_test_small(&len);
    assert_non_null(buf);
    uint8_t *copy = malloc(len);
    assert_non_null(copy);
    uint32_t x = 12345;
    int rejected = 0;
    for (int round = 0; round < 4000; round++) {
        memcpy(copy, buf, len);
        for (int k = 0; k < 1 + round % 4; k++) {
            x = x * 1103515245u + 12345u;
            size_t at = (x >> 8) % len;
            x = x * 1103515245u + 12345u;
            copy[at] = (uint8_t)(round % 3 == 0 ? 0xff : (x >> 16));
        }
        struct eng_gguf *g = NULL;
        char err[512] = "";
        if (eng_gguf_open_mem(copy, len, &g, err, sizeof err) == WYE_OK) {
            for (int64_t i = 0; i < eng_gguf_n_kv(g); i++) {
                uint64_t n = 0;
                if (eng_gguf_kv_arr(g, i, NULL, &n)) {
                    for (uint64_t j = 0; j < n && j < 8; j++) {
                        (void)eng_gguf_kv_str(g, i, j);
                    }
                }
            }
            eng_gguf_close(g);
        } else {
            assert_true(err[0] != '\0');
            rejected++;
        }
    }
    assert_true(rejected > 1000);
    free(copy);
    wye_free(buf);
}

static void test_open_oom(void **state)
{
    (void)state;
    size_t len;
    uint8_t *buf = gguf_test_small(&len);
    assert_non_null(buf);
    bool done = false;
    long failures_seen = 0;
    for (long n = 0; n < 100 && !done; n++) {
        struct eng_gguf *g = NULL;
        char err[256] = "";
        wye_alloc_fail_after(n);
        enum wye_err e = eng_gguf_open_mem(buf, len, &g, err, sizeof err);
        wye_alloc_fail_after(-1);
        if (e == WYE_OK) {
            done = true;
            assert_int_equal(eng_gguf_n_tensors(g), 3);
            eng_gguf_close(g);
        } else {
            assert_int_equal(e, WYE_ERR_NOMEM);
            assert_null(g);
            assert_non_null(strstr(err, "out of memory"));
            failures_seen++;
        }
    }
    assert_true(done);
    assert_true(failures_seen >= 4); /* handle, kv, tensors, indexes, string offsets */
    wye_free(buf);
}

int main(void)
{
    wye_alloc_install_cjson_hooks();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_small_is_valid),
        cmocka_unit_test(test_bad_cases),
        cmocka_unit_test(test_truncated_everywhere),
        cmocka_unit_test(test_flips),
        cmocka_unit_test(test_open_oom),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
