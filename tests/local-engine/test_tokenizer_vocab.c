/* Tokenizers against llama.cpp's own test vectors: each vocab-only GGUF in
 * ../shared/vocab is loaded through the GGUF loader, every .inp case is encoded (no BOS/EOS,
 * special text as plain text) and compared with the .out ids; every case is then decoded
 * back through the streaming detokenizer, which must reproduce the input exactly. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/alloc.h"
#include "local-engine/tokenizer.h"
#include "tests/local-engine/test_tok_util.h"

#define SEP "\n__ggml_vocab_test__\n"

static void print_escaped(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '\n') {
            printf("\\n");
        } else if (c == '\t') {
            printf("\\t");
        } else if (c < 0x20) {
            printf("\\x%02x", c);
        } else {
            putchar(c);
        }
    }
}

/* Runs every case of vocab name; returns the number of failing cases. */
static int run_vocab(const char *name)
{
    char path[512];
    clock_t c0 = clock();
    struct eng_tokenizer *t = tok_test_load_vocab(name);
    clock_t c1 = clock();
    printf("%s: %d tokens, model %s, pre %s, loaded in %.1f ms\n", name, eng_tok_n_vocab(t),
           eng_tok_model_name(t), eng_tok_pre_name(t), 1000.0 * (double)(c1 - c0) / CLOCKS_PER_SEC);

    size_t inp_len, out_len;
    snprintf(path, sizeof(path), "%s/vocab/ggml-vocab-%s.gguf.inp", WYE_SHARED_DIR, name);
    char *inp = tok_test_read_file(path, &inp_len);
    snprintf(path, sizeof(path), "%s/vocab/ggml-vocab-%s.gguf.out", WYE_SHARED_DIR, name);
    char *outs = tok_test_read_file(path, &out_len);
    assert_non_null(inp);
    assert_non_null(outs);

    int fails = 0, n_cases = 0;
    char *ip = inp, *op = outs;
    size_t dcap = eng_detok_out_max(t);
    char *delta = malloc(dcap);
    char *decoded = malloc(inp_len * 4 + 64);
    assert_non_null(delta);
    assert_non_null(decoded);
    while (ip < inp + inp_len) {
        char *sep = strstr(ip, SEP);
        assert_non_null(sep); /* the file ends with the separator */
        size_t clen = (size_t)(sep - ip);
        char *nl = strchr(op, '\n');
        assert_non_null(nl);
        *nl = '\0';
        int32_t want[512];
        size_t n_want = 0;
        for (char *q = op; *q;) {
            char *endp;
            long v = strtol(q, &endp, 10);
            if (endp == q) {
                break;
            }
            assert_true(n_want < 512);
            want[n_want++] = (int32_t)v;
            q = endp;
        }
        int32_t got[512];
        size_t n_got = 0;
        enum wye_err e = eng_tokenize(t, ip, clen, false, false, got, 512, &n_got);
        n_cases++;
        if (e || n_got != n_want || memcmp(got, want, n_want * sizeof(int32_t)) != 0) {
            fails++;
            printf("FAIL %s case %d: \"", name, n_cases);
            print_escaped(ip, clen);
            printf("\"\n  want:");
            for (size_t i = 0; i < n_want; i++) {
                printf(" %d", want[i]);
            }
            printf("\n  got: ");
            for (size_t i = 0; i < n_got && i < 512; i++) {
                printf(" %d", got[i]);
            }
            printf("\n");
        } else {
            /* Streaming decode reproduces the input. */
            struct eng_detok d;
            eng_detok_init(&d, t);
            size_t dl = 0;
            for (size_t i = 0; i < n_got; i++) {
                size_t k = eng_detok_push(&d, got[i], delta, dcap);
                assert_true(k <= dcap);
                memcpy(decoded + dl, delta, k);
                dl += k;
            }
            size_t k = eng_detok_flush(&d, delta, dcap);
            memcpy(decoded + dl, delta, k);
            dl += k;
            if (dl != clen || memcmp(decoded, ip, clen) != 0) {
                fails++;
                printf("FAIL %s case %d: decode differs: \"", name, n_cases);
                print_escaped(decoded, dl);
                printf("\" vs \"");
                print_escaped(ip, clen);
                printf("\"\n");
            }
        }
        ip = sep + strlen(SEP);
        op = nl + 1;
    }
    printf("%s: %d cases, %d failed\n", name, n_cases, fails);
    assert_true(n_cases > 10);
    free(delta);
    free(decoded);
    free(inp);
    free(outs);
    eng_tokenizer_destroy(t);
    return fails;
}

static void test_llama_spm(void **state)
{
    (void)state;
    assert_int_equal(run_vocab("llama-spm"), 0);
}

static void test_phi3(void **state)
{
    (void)state;
    assert_int_equal(run_vocab("phi-3"), 0);
}

static void test_gpt2(void **state)
{
    (void)state;
    assert_int_equal(run_vocab("gpt-2"), 0);
}

static void test_qwen2(void **state)
{
    (void)state;
    assert_int_equal(run_vocab("qwen2"), 0);
}

static void test_llama_bpe(void **state)
{
    (void)state;
    assert_int_equal(run_vocab("llama-bpe"), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_llama_spm), cmocka_unit_test(test_phi3),
        cmocka_unit_test(test_gpt2),      cmocka_unit_test(test_qwen2),
        cmocka_unit_test(test_llama_bpe),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
