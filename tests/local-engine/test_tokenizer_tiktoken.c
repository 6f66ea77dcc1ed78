/* The byte-level BPE tokenizers against an independent implementation: 400 random strings
 * (scripts, contractions, digit runs, whitespace and newline mixes, marks, emoji) with the ids
 * OpenAI's tiktoken gives them for the Llama-3, Qwen2 and GPT-2 vocabularies
 * (tokenizer_tiktoken_cases.jsonl, written by tiktoken/diff.mjs from the tokenizer files in
 * ../shared/tokenizers and tiktoken's own GPT-2 table, each with its original pre-tokenizer
 * regex). wye encodes every string with the matching vocab GGUF of ../shared/vocab, no
 * BOS/EOS, special-token text as plain text, and must produce the same ids. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/err.h"
#include "local-engine/tokenizer.h"
#include "tests/local-engine/test_tok_util.h"

#define CASES WYE_SOURCE_DIR "/tests/local-engine/tokenizer_tiktoken_cases.jsonl"
#define IDS_MAX 1024

/* Every case's `key` ids against wye's encoding with the vocab; returns the mismatches. */
static int run(const char *key, const char *vocab)
{
    char *all = tok_test_read_file(CASES, NULL);
    assert_non_null(all);
    struct eng_tokenizer *t = tok_test_load_vocab(vocab);
    int n_cases = 0, fails = 0;
    for (char *line = all; *line;) {
        char *nl = strchr(line, '\n');
        if (nl) {
            *nl = '\0';
        }
        cJSON *c = cJSON_Parse(line);
        const cJSON *s = cJSON_GetObjectItemCaseSensitive(c, "s");
        const cJSON *ids = cJSON_GetObjectItemCaseSensitive(c, key);
        assert_true(cJSON_IsString(s) && cJSON_IsArray(ids));
        int32_t got[IDS_MAX];
        size_t n_got = 0;
        enum wye_err e = eng_tokenize(t, s->valuestring, strlen(s->valuestring), false, false, got,
                                      IDS_MAX, &n_got);
        size_t n_want = (size_t)cJSON_GetArraySize(ids);
        bool same = e == WYE_OK && n_got == n_want;
        for (size_t i = 0; same && i < n_want; i++) {
            same = got[i] == (int32_t)cJSON_GetArrayItem(ids, (int)i)->valuedouble;
        }
        if (!same) {
            fails++;
            char *text = cJSON_PrintUnformatted(s), *want = cJSON_PrintUnformatted(ids);
            printf("FAIL %s case %d %s\n  tiktoken %s\n  wye     ", key, n_cases + 1, text, want);
            for (size_t i = 0; i < n_got && i < IDS_MAX; i++) {
                printf(" %d", got[i]);
            }
            printf(" (%s)\n", wye_err_str(e));
            cJSON_free(text);
            cJSON_free(want);
        }
        n_cases++;
        cJSON_Delete(c);
        line = nl ? nl + 1 : line + strlen(line);
    }
    printf("%s: %d cases, %d mismatches\n", key, n_cases, fails);
    assert_true(n_cases >= 400); /* the whole corpus was read */
    eng_tokenizer_destroy(t);
    free(all);
    return fails;
}

static void test_llama3(void **state)
{
    (void)state;
    assert_int_equal(run("llama3", "llama-bpe"), 0);
}

static void test_qwen2(void **state)
{
    (void)state;
    assert_int_equal(run("qwen2", "qwen2"), 0);
}

static void test_gpt2(void **state)
{
    (void)state;
    assert_int_equal(run("gpt2", "gpt-2"), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_llama3),
        cmocka_unit_test(test_qwen2),
        cmocka_unit_test(test_gpt2),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
