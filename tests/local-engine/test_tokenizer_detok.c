/* Streaming detokenizer on real vocabularies: encode -> push token by token must give deltas
 * that are each complete, valid UTF-8 (multi-byte characters split across tokens are held
 * back, never emitted in halves) and whose concatenation equals the text; SPM's leading
 * space after BOS; invalid and unfinished byte sequences; the buffer-size contract. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "local-engine/tokenizer.h"
#include "local-engine/unicode.h"
#include "tests/local-engine/test_tok_util.h"

static const char *const texts[] = {
    "Gr\xc3\xbc\xc3\x9f"
    "e, \xe4\xb8\x96\xe7\x95\x8c! \xf0\x9f\xa6\x99\xf0\x9f\x9a\x80 na\xc3\xafve "
    "caf\xc3\xa9 \xe2\x80\x94 \xf0\x9d\x94\x98\xf0\x9d\x94\xab\xf0\x9d\x94\xa6 "
    "\xe0\xb8\x82\xe0\xb9\x89\xe0\xb8\xad\xe0\xb8\x84\xe0\xb8\xa7\xe0\xb8\xb2\xe0\xb8\xa1",
    "\xf0\x9f\x98\xb6\xe2\x80\x8d\xf0\x9f\x8c\xab\xef\xb8\x8f \xea\xb0\x80\xeb\x82\x98\xeb\x8b\xa4 "
    "\xd0\xbd\xd0\xb5\xd1\x89\xd0\xbe \xe1\x9e\x80\xe1\x9e\xb6 \xf0\x93\x80\x80 end",
};

/* Streams ids through a detokenizer; returns how many pushes held bytes back. */
static size_t stream(const struct eng_tokenizer *t, const int32_t *ids, size_t n, bool first,
                     char *outbuf, size_t *out_len)
{
    struct eng_detok d;
    eng_detok_init(&d, t);
    d.first = first;
    size_t cap = eng_detok_out_max(t), held = 0, len = 0;
    char *delta = malloc(cap);
    assert_non_null(delta);
    for (size_t i = 0; i < n; i++) {
        size_t k = eng_detok_push(&d, ids[i], delta, cap);
        assert_true(k <= cap);
        assert_true(eng_utf8_valid(delta, k));
        assert_int_equal(eng_utf8_complete_prefix(delta, k), k);
        if (d.n_pending > 0) {
            held++;
        }
        memcpy(outbuf + len, delta, k);
        len += k;
    }
    size_t k = eng_detok_flush(&d, delta, cap);
    memcpy(outbuf + len, delta, k);
    len += k;
    free(delta);
    *out_len = len;
    return held;
}

static void test_round_trip(void **state)
{
    (void)state;
    static const char *const vocabs[] = {"llama-spm", "qwen2", "llama-bpe", "gpt-2", "phi-3"};
    for (size_t v = 0; v < 5; v++) {
        struct eng_tokenizer *t = tok_test_load_vocab(vocabs[v]);
        size_t held_total = 0;
        for (size_t c = 0; c < 2; c++) {
            int32_t ids[256];
            size_t n;
            assert_int_equal(eng_tokenize(t, texts[c], strlen(texts[c]), true, false, ids, 256, &n),
                             WYE_OK);
            char out[1024];
            size_t len;
            held_total += stream(t, ids, n, true, out, &len);
            if (len != strlen(texts[c]) || memcmp(out, texts[c], len) != 0) {
                printf("%s: decoded \"%.*s\"\n  expected \"%s\"\n", vocabs[v], (int)len, out,
                       texts[c]);
            }
            assert_int_equal(len, strlen(texts[c]));
            assert_memory_equal(out, texts[c], len);
        }
        /* Every vocabulary splits some of these characters across tokens. */
        printf("%s: %zu pushes held bytes back\n", vocabs[v], held_total);
        assert_true(held_total > 0);
        eng_tokenizer_destroy(t);
    }
}

static void test_spm_details(void **state)
{
    (void)state;
    struct eng_tokenizer *t = tok_test_load_vocab("llama-spm");
    int32_t ids[16];
    size_t n, len;
    char out[256];
    /* BOS + "▁Hello": the prefix space goes at the start of a text ... */
    assert_int_equal(eng_tokenize(t, "Hello", 5, true, false, ids, 16, &n), WYE_OK);
    assert_int_equal(ids[0], eng_tok_bos(t));
    stream(t, ids, n, true, out, &len);
    assert_int_equal(len, 5);
    assert_memory_equal(out, "Hello", 5);
    /* ... but stays in a stream that continues earlier text. */
    stream(t, ids, n, false, out, &len);
    assert_int_equal(len, 6);
    assert_memory_equal(out, " Hello", 6);

    /* A lead byte followed by a byte that cannot continue it: U+FFFD, then the byte. */
    struct eng_detok d;
    eng_detok_init(&d, t);
    d.first = false;
    char buf[64];
    int32_t e6 = eng_tok_find(t, "<0xE6>", 6), x41 = eng_tok_find(t, "<0x41>", 6);
    int32_t x97 = eng_tok_find(t, "<0x97>", 6), xa5 = eng_tok_find(t, "<0xA5>", 6);
    assert_true(e6 >= 0 && x41 >= 0 && x97 >= 0 && xa5 >= 0);
    assert_int_equal(eng_detok_push(&d, e6, buf, sizeof(buf)), 0);
    assert_int_equal(d.n_pending, 1);
    assert_int_equal(eng_detok_push(&d, x41, buf, sizeof(buf)), 4);
    assert_memory_equal(buf,
                        "\xef\xbf\xbd"
                        "A",
                        4);
    /* A character split over three byte tokens comes out whole with the last one. */
    assert_int_equal(eng_detok_push(&d, e6, buf, sizeof(buf)), 0);
    assert_int_equal(eng_detok_push(&d, x97, buf, sizeof(buf)), 0);
    assert_int_equal(eng_detok_push(&d, xa5, buf, sizeof(buf)), 3);
    assert_memory_equal(buf, "\xe6\x97\xa5", 3);
    /* An unfinished character at the end flushes as U+FFFD. */
    assert_int_equal(eng_detok_push(&d, e6, buf, sizeof(buf)), 0);
    assert_int_equal(eng_detok_flush(&d, buf, 2), SIZE_MAX);
    assert_int_equal(eng_detok_flush(&d, buf, sizeof(buf)), 3);
    assert_memory_equal(buf, "\xef\xbf\xbd", 3);
    assert_int_equal(eng_detok_flush(&d, buf, sizeof(buf)), 0);
    /* Too small a buffer: nothing consumed, the same push succeeds with room. */
    int32_t hello = eng_tok_find(t, "\xe2\x96\x81Hello", 8);
    assert_true(hello >= 0);
    assert_int_equal(eng_detok_push(&d, hello, buf, 4), SIZE_MAX);
    assert_int_equal(eng_detok_push(&d, hello, buf, sizeof(buf)), 6);
    assert_memory_equal(buf, " Hello", 6);
    /* Control tokens: nothing, unless special text is asked for. */
    assert_int_equal(eng_detok_push(&d, eng_tok_bos(t), buf, sizeof(buf)), 0);
    d.special = true;
    assert_int_equal(eng_detok_push(&d, eng_tok_bos(t), buf, sizeof(buf)), 3);
    assert_memory_equal(buf, "<s>", 3);
    eng_tokenizer_destroy(t);
}

static void test_bpe_specials(void **state)
{
    (void)state;
    struct eng_tokenizer *t = tok_test_load_vocab("qwen2");
    const char *chat = "<|im_start|>user\nHi<|im_end|>\n";
    int32_t ids[32];
    size_t n, len;
    assert_int_equal(eng_tokenize(t, chat, strlen(chat), false, true, ids, 32, &n), WYE_OK);
    assert_int_equal(ids[0], 151644);
    assert_true(eng_tok_is_eog(t, 151645));
    assert_true(eng_tok_is_eog(t, 151643));
    assert_false(eng_tok_is_eog(t, 151644));
    assert_false(eng_tok_add_bos(t));
    char out[256];
    stream(t, ids, n, true, out, &len);
    assert_int_equal(len, strlen("user\nHi\n")); /* control tokens render nothing */
    assert_memory_equal(out, "user\nHi\n", len);
    eng_tokenizer_destroy(t);

    /* Phi-3: "</s>" is a user-defined token (matched even as plain text) that swallows the
     * whitespace after it; the text after it gets SPM's prefix space again. */
    t = tok_test_load_vocab("phi-3");
    assert_int_equal(eng_tokenize(t, "Hi</s>  there", 13, false, false, ids, 32, &n), WYE_OK);
    int32_t hi = eng_tok_find(t, "\xe2\x96\x81Hi", 5);
    int32_t there = eng_tok_find(t, "\xe2\x96\x81there", 8);
    assert_true(hi >= 0 && there >= 0);
    assert_int_equal(n, 3);
    assert_int_equal(ids[0], hi);
    assert_int_equal(ids[1], 2);
    assert_int_equal(ids[2], there);
    assert_true(eng_tok_is_eog(t, 32007)); /* <|end|> */
    assert_true(eng_tok_is_eog(t, 32000)); /* <|endoftext|>, the eos */
    eng_tokenizer_destroy(t);

    t = tok_test_load_vocab("llama-bpe");
    assert_true(eng_tok_add_bos(t));
    assert_true(eng_tok_is_eog(t, 128009)); /* <|eot_id|> */
    assert_true(eng_tok_is_eog(t, 128001)); /* <|end_of_text|> */
    assert_false(eng_tok_is_eog(t, 128000));
    assert_int_equal(eng_tokenize(t, "Hi", 2, true, false, ids, 32, &n), WYE_OK);
    assert_int_equal(n, 2);
    assert_int_equal(ids[0], 128000);
    eng_tokenizer_destroy(t);
}

/* Random byte strings, mostly invalid UTF-8 (never a literal "▁", which SPM reads as a
 * space): encoding never fails, the pieces give back the exact bytes (after SPM's prefix
 * space), and every streamed delta is valid UTF-8. */
static void test_random_bytes(void **state)
{
    (void)state;
    static const unsigned char alphabet[] = {' ',  ' ',  'a',  'b',  'x',  '\n', '\t', '1',  '\'',
                                             0xC3, 0xA9, 0xE2, 0x96, 0x82, 0xF0, 0x9F, 0xA6, 0x99,
                                             0x80, 0xBF, 0xFF, 0xC0, 0xED, 0xA0, 0x00};
    static const char *const vocabs[] = {"llama-spm", "qwen2", "llama-bpe", "gpt-2", "phi-3"};
    uint64_t rng = 0x9E3779B97F4A7C15ull;
    for (size_t v = 0; v < 5; v++) {
        struct eng_tokenizer *t = tok_test_load_vocab(vocabs[v]);
        bool spm = strcmp(eng_tok_model_name(t), "llama") == 0;
        size_t cap = eng_detok_out_max(t);
        char *delta = malloc(cap);
        assert_non_null(delta);
        for (int iter = 0; iter < 300; iter++) {
            char in[64];
            rng = rng * 6364136223846793005ull + 1442695040888963407ull;
            size_t len = (size_t)(rng >> 58);
            for (size_t i = 0; i < len; i++) {
                rng = rng * 6364136223846793005ull + 1442695040888963407ull;
                in[i] = (char)alphabet[(rng >> 33) % sizeof(alphabet)];
            }
            int32_t ids[256];
            size_t n;
            assert_int_equal(eng_tokenize(t, in, len, false, false, ids, 256, &n), WYE_OK);
            char back[512];
            size_t bl = 0;
            struct eng_detok d;
            eng_detok_init(&d, t);
            for (size_t i = 0; i < n; i++) {
                assert_true(ids[i] >= 0 && ids[i] < eng_tok_n_vocab(t));
                bl += eng_token_to_piece(t, ids[i], back + bl, sizeof(back) - bl, false);
                size_t k = eng_detok_push(&d, ids[i], delta, cap);
                assert_true(k <= cap);
                assert_true(eng_utf8_valid(delta, k));
            }
            size_t k = eng_detok_flush(&d, delta, cap);
            assert_true(eng_utf8_valid(delta, k));
            size_t skip = spm && len > 0 ? 1 : 0; /* the prefix space */
            if (bl != len + skip || memcmp(back + skip, in, len) != 0) {
                printf("%s: pieces differ for input", vocabs[v]);
                for (size_t i = 0; i < len; i++) {
                    printf(" %02x", (unsigned char)in[i]);
                }
                printf("\n  ids:");
                for (size_t i = 0; i < n; i++) {
                    printf(" %d", ids[i]);
                }
                printf("\n");
            }
            assert_int_equal(bl, len + skip);
            assert_memory_equal(back + skip, in, len);
        }
        free(delta);
        eng_tokenizer_destroy(t);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_random_bytes),
        cmocka_unit_test(test_spm_details),
        cmocka_unit_test(test_bpe_specials),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
