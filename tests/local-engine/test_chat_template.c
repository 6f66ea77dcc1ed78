/* Chat templates: family detection on the real template files, on each family's marker text
 * and on garbage (ChatML with known = false); a few renderings checked literally (the full
 * byte-for-byte comparison with jinja2 is chat_template_jinja_test.py); the buffer cap and
 * bad input leave the output as it was. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/buf.h"
#include "local-engine/chat_template.h"

static char *read_template(const char *name, size_t *len)
{
    char path[512];
    snprintf(path, sizeof(path), "%s/tokenizers/chat-templates/%s", WYE_SHARED_DIR, name);
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    static char buf[1 << 16];
    *len = fread(buf, 1, sizeof(buf), f);
    fclose(f);
    assert_true(*len > 100);
    return buf;
}

static void expect_detect(const char *text, enum eng_chat_family want, bool want_known)
{
    bool known = !want_known;
    enum eng_chat_family f = eng_chat_detect(text, text ? strlen(text) : 0, &known);
    if (f != want || known != want_known) {
        printf("detect(\"%.60s\") = %s known=%d\n", text ? text : "(null)", eng_chat_family_name(f),
               known);
    }
    assert_int_equal(f, want);
    assert_int_equal(known, want_known);
}

static void test_detect(void **state)
{
    (void)state;
    size_t len;
    bool known;
    char *t = read_template("Qwen-Qwen2.5-7B-Instruct.jinja", &len);
    assert_int_equal(eng_chat_detect(t, len, &known), ENG_CHAT_QWEN2);
    assert_true(known);
    t = read_template("meta-llama-Llama-3.1-8B-Instruct.jinja", &len);
    assert_int_equal(eng_chat_detect(t, len, &known), ENG_CHAT_LLAMA3);
    assert_true(known);
    t = read_template("meta-llama-Llama-3.2-3B-Instruct.jinja", &len);
    assert_int_equal(eng_chat_detect(t, len, &known), ENG_CHAT_LLAMA3);
    assert_true(known);

    expect_detect("{% for m in messages %}{{'<|im_start|>' + m['role'] }}{% endfor %}",
                  ENG_CHAT_CHATML, true);
    expect_detect("<|im_start|>system\nYou are a helpful AI assistant named SmolLM",
                  ENG_CHAT_SMOLLM2, true);
    expect_detect("{{ '<|start_header_id|>' + message['role'] }}", ENG_CHAT_LLAMA3_0, true);
    expect_detect("{{ bos_token + '[INST] ' + '<<SYS>>\\n' }}", ENG_CHAT_LLAMA2, true);
    expect_detect("{{ '<|user|>\\n' + message['content'] + eos_token }}", ENG_CHAT_ZEPHYR, true);
    expect_detect("{{'<|system|>\\n'}}{{'<|user|>\\n' + c + '<|end|>\\n'}}", ENG_CHAT_PHI3, true);
    expect_detect("{{ bos_token }}{{'<|user|>' + c + '<|end|>'}}", ENG_CHAT_PHI3_LEGACY, true);
    expect_detect("{{ '<start_of_turn>' + role }}", ENG_CHAT_GEMMA, true);
    /* Qwen3-style ChatML with tool markup but no default system prompt: plain ChatML. */
    expect_detect("{{- '<|im_start|>' + message.role }}{{ '\\n<tool_response>\\n' }}",
                  ENG_CHAT_CHATML, true);
    /* Unknown: ChatML, flagged. */
    expect_detect("{{'<|im_start|>' + message['role'] + '<|im_sep|>'}}", ENG_CHAT_CHATML, false);
    expect_detect("{{ messages | join }} ### Human: ### Assistant:", ENG_CHAT_CHATML, false);
    expect_detect("", ENG_CHAT_CHATML, false);
    expect_detect(NULL, ENG_CHAT_CHATML, false);
    expect_detect("\xff\xfe garbage \x01", ENG_CHAT_CHATML, false);

    for (int f = 0; f < ENG_CHAT__COUNT; f++) {
        assert_string_not_equal(eng_chat_family_name((enum eng_chat_family)f), "?");
    }
    assert_string_equal(eng_chat_family_name(ENG_CHAT__COUNT), "?");
}

static void test_format(void **state)
{
    (void)state;
    struct wye_chat_msg msgs[] = {
        {WYE_ROLE_USER, (char *)"Hi"},
        {WYE_ROLE_ASSISTANT, (char *)"Hello."},
        {WYE_ROLE_USER, (char *)" Bye "},
    };
    struct wye_buf b;
    wye_buf_init(&b, 4096);
    assert_int_equal(eng_chat_format(ENG_CHAT_QWEN2, msgs, 1, true, NULL, &b), WYE_OK);
    assert_string_equal(b.data, "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You "
                                "are a helpful assistant.<|im_end|>\n<|im_start|>user\nHi<|im_end|>"
                                "\n<|im_start|>assistant\n");
    wye_buf_reset(&b);
    assert_int_equal(eng_chat_format(ENG_CHAT_LLAMA3, msgs, 3, true, "<|begin_of_text|>", &b),
                     WYE_OK);
    assert_string_equal(b.data, "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n"
                                "Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n"
                                "<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
                                "<|start_header_id|>assistant<|end_header_id|>\n\nHello.<|eot_id|>"
                                "<|start_header_id|>user<|end_header_id|>\n\nBye<|eot_id|>"
                                "<|start_header_id|>assistant<|end_header_id|>\n\n");
    wye_buf_reset(&b);
    assert_int_equal(eng_chat_format(ENG_CHAT_LLAMA2, msgs, 3, true, "<s>", &b), WYE_OK);
    assert_string_equal(b.data, "<s>[INST] Hi [/INST] Hello. </s><s>[INST] Bye [/INST]");
    /* Appends; the cap leaves the buffer as it was. */
    wye_buf_cleanup(&b);
    wye_buf_init(&b, 40);
    assert_int_equal(wye_buf_append_str(&b, "keep"), WYE_OK);
    assert_int_equal(eng_chat_format(ENG_CHAT_CHATML, msgs, 1, false, NULL, &b), WYE_OK);
    assert_string_equal(b.data, "keep<|im_start|>user\nHi<|im_end|>\n");
    assert_int_equal(eng_chat_format(ENG_CHAT_CHATML, msgs, 3, true, NULL, &b), WYE_ERR_TOOBIG);
    assert_string_equal(b.data, "keep<|im_start|>user\nHi<|im_end|>\n");
    /* Bad input. */
    struct wye_chat_msg bad = {WYE_ROLE_USER, NULL};
    assert_int_equal(eng_chat_format(ENG_CHAT_CHATML, &bad, 1, true, NULL, &b), WYE_ERR_INVAL);
    assert_int_equal(eng_chat_format(ENG_CHAT__COUNT, msgs, 1, true, NULL, &b), WYE_ERR_INVAL);
    assert_string_equal(b.data, "keep<|im_start|>user\nHi<|im_end|>\n");
    wye_buf_cleanup(&b);
}

/* Llama-2 folds the system text into the first turn and strips the result: a conversation
 * whose rendering fits the cap renders, however long the unstripped turn would be (the fold
 * went through a scratch buffer capped like the output: fuzz_chat_template found the
 * spurious TOOBIG). */
static void test_format_llama2_cap(void **state)
{
    (void)state;
    char padded[128];
    snprintf(padded, sizeof(padded), "Hi%60s", "");
    struct wye_chat_msg msgs[] = {
        {WYE_ROLE_SYSTEM, (char *)"Be brief."},
        {WYE_ROLE_USER, padded},
    };
    static const char want[] = "<s>[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nHi [/INST]";
    struct wye_buf b;
    wye_buf_init(&b, strlen(want));
    assert_int_equal(eng_chat_format(ENG_CHAT_LLAMA2, msgs, 2, true, "<s>", &b), WYE_OK);
    assert_string_equal(b.data, want);
    wye_buf_cleanup(&b);

    /* All-whitespace content: the blank lines after <</SYS>> are stripped too. */
    msgs[1].content = (char *)" \n\t ";
    static const char want_blank[] = "<s>[INST] <<SYS>>\nBe brief.\n<</SYS>> [/INST]";
    wye_buf_init(&b, strlen(want_blank));
    assert_int_equal(eng_chat_format(ENG_CHAT_LLAMA2, msgs, 2, true, "<s>", &b), WYE_OK);
    assert_string_equal(b.data, want_blank);
    wye_buf_cleanup(&b);

    /* A second system message renders nothing, and folding it must not need room either. */
    struct wye_chat_msg two_sys[] = {
        {WYE_ROLE_SYSTEM, (char *)"sys"},
        {WYE_ROLE_SYSTEM, (char *)"sys again"},
        {WYE_ROLE_ASSISTANT, (char *)"first answer"},
    };
    wye_buf_init(&b, strlen(" first answer </s>"));
    assert_int_equal(eng_chat_format(ENG_CHAT_LLAMA2, two_sys, 3, true, NULL, &b), WYE_OK);
    assert_string_equal(b.data, " first answer </s>");
    wye_buf_cleanup(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_detect),
        cmocka_unit_test(test_format),
        cmocka_unit_test(test_format_llama2_cap),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
