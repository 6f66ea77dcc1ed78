/* Tokenizer units: UTF-8 and Unicode classes, each pre-tokenizer on tricky strings (numbers,
 * contractions, mixed scripts, emoji, whitespace runs, newlines; expectations produced by
 * the original regexes), SPM and BPE on small hand-built vocabularies written with the GGUF
 * writer (merge priority, ties, byte fallback, special tokens, BOS/EOS, EOG, pieces, the
 * TOOBIG contract), malformed metadata errors, and loading/encoding under allocation
 * failure. */
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
#include "local-engine/gguf_write.h"
#include "local-engine/tok_internal.h"
#include "local-engine/tokenizer.h"
#include "local-engine/unicode.h"

/* ---- Unicode ---- */

static void test_unicode(void **state)
{
    (void)state;
    assert_int_equal(eng_uc_class('a'), ENG_UC_LETTER);
    assert_int_equal(eng_uc_class('7'), ENG_UC_NUMBER);
    assert_int_equal(eng_uc_class(0xBD), ENG_UC_NUMBER);    /* ½ */
    assert_int_equal(eng_uc_class(0x4E2D), ENG_UC_LETTER);  /* 中 */
    assert_int_equal(eng_uc_class(0x1F999), ENG_UC_SYMBOL); /* 🦙 */
    assert_int_equal(eng_uc_class(0x301), ENG_UC_MARK);
    assert_int_equal(eng_uc_class(','), ENG_UC_PUNCT);
    assert_int_equal(eng_uc_class(0x378), ENG_UC_UNDEFINED);
    assert_int_equal(eng_uc_class(0x110000), ENG_UC_UNDEFINED);
    assert_int_equal(eng_uc_class(0x200D), ENG_UC_CONTROL); /* ZWJ is Cf */
    assert_true(eng_uc_is_space(0x3000));
    assert_true(eng_uc_is_space('\v'));
    assert_false(eng_uc_is_space(0x200B));
    assert_false(eng_uc_is_space(0x1C));

    uint32_t cp;
    assert_int_equal(eng_utf8_decode("\xf0\x9f\xa6\x99", 4, &cp), 4);
    assert_int_equal(cp, 0x1F999);
    static const char *const bad[] = {"\xc0\x80",         "\xed\xa0\x80", "\xe2\x82",
                                      "\xf5\x80\x80\x80", "\x80",         "\xf4\x90\x80\x80",
                                      "\xe0\x80\xaf"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_int_equal(eng_utf8_decode(bad[i], strlen(bad[i]), &cp), 1);
        assert_int_equal(cp, ENG_UC_INVALID);
        char text[16];
        snprintf(text, sizeof(text), "ok%s!", bad[i]); /* valid around it */
        assert_false(eng_utf8_valid(text, strlen(text)));
    }
    assert_true(eng_utf8_valid("", 0));
    assert_true(eng_utf8_valid("a\xc3\xa9\xe2\x82\xac\xf0\x9f\xa6\x99z", 11));
    assert_true(eng_utf8_valid("a\0b", 3));      /* NUL is a character */
    assert_false(eng_utf8_valid("\xc3\xa9", 1)); /* cut inside a sequence */
    char buf[4];
    assert_int_equal(eng_utf8_encode(0x20AC, buf), 3);
    assert_memory_equal(buf, "\xe2\x82\xac", 3);
    assert_int_equal(eng_utf8_encode(0xD800, buf), 0);
    /* Incomplete but viable tails are held back; invalid bytes are not. */
    assert_int_equal(eng_utf8_complete_prefix("ab\xe2\x82", 4), 2);
    assert_int_equal(eng_utf8_complete_prefix("ab\xf0", 3), 2);
    assert_int_equal(eng_utf8_complete_prefix("ab\xe2\x82\xac", 5), 5);
    assert_int_equal(eng_utf8_complete_prefix("ab\xed\xa0", 4), 4); /* a surrogate: never valid */
    assert_int_equal(eng_utf8_complete_prefix("ab\x80", 3), 3);
}

/* ---- pre-tokenizers ---- */

struct pretok_case {
    const char *pre, *text;
    const char *pieces[16];
};

static const struct pretok_case pretok_cases[] = {
    {"gpt-2", "Hello world", {"Hello", " world", NULL}},
    {"gpt-2",
     "I'm  fine, they'LL go",
     {"I", "'m", " ", " fine", ",", " they", "'", "LL", " go", NULL}},
    {"gpt-2", "3.14159 and 1234567", {"3", ".", "14159", " and", " 1234567", NULL}},
    {"gpt-2",
     "  leading\x0a"
     "\x0a"
     " trailing  ",
     {" ", " leading",
      "\x0a"
      "\x0a"
      "",
      " trailing", "  ", NULL}},
    {"gpt-2",
     "\xf0"
     "\x9f"
     "\xa6"
     "\x99"
     "\xf0"
     "\x9f"
     "\xa6"
     "\x99"
     " emoji's",
     {"\xf0"
      "\x9f"
      "\xa6"
      "\x99"
      "\xf0"
      "\x9f"
      "\xa6"
      "\x99"
      "",
      " emoji", "'s", NULL}},
    {"gpt-2",
     "\xc3"
     "\x9c"
     "n\xc3"
     "\xaf"
     "c\xc3"
     "\xb6"
     "d\xc3"
     "\xa9"
     " text",
     {"\xc3"
      "\x9c"
      "n\xc3"
      "\xaf"
      "c\xc3"
      "\xb6"
      "d\xc3"
      "\xa9"
      "",
      " text", NULL}},
    {"gpt-2",
     "tab\x09"
     "sep\x0d"
     "\x0a"
     "",
     {"tab",
      "\x09"
      "",
      "sep",
      "\x0d"
      "\x0a"
      "",
      NULL}},
    {"gpt-2",
     "e\xcc"
     "\x81"
     "t\xc3"
     "\xa9"
     " \xc2"
     "\xa0"
     "nbsp",
     {"e",
      "\xcc"
      "\x81"
      "",
      "t\xc3"
      "\xa9"
      "",
      " ",
      "\xc2"
      "\xa0"
      "",
      "nbsp", NULL}},
    {"llama3",
     "I'VE got 123456789 apples",
     {"I", "'VE", " got", " ", "123", "456", "789", " apples", NULL}},
    {"llama3",
     "hello\x0d"
     "\x0a"
     "\x0d"
     "\x0a"
     "world",
     {"hello",
      "\x0d"
      "\x0a"
      "\x0d"
      "\x0a"
      "",
      "world", NULL}},
    {"llama3",
     "  \x0a"
     "  x",
     {"  \x0a"
      "",
      " ", " x", NULL}},
    {"llama3",
     "\xe4"
     "\xb8"
     "\xad"
     "\xe6"
     "\x96"
     "\x87"
     "abc def",
     {"\xe4"
      "\xb8"
      "\xad"
      "\xe6"
      "\x96"
      "\x87"
      "abc",
      " def", NULL}},
    {"llama3",
     "a.b,c!? ...\x0a"
     "\x0a"
     "",
     {"a", ".b", ",c", "!?",
      " ...\x0a"
      "\x0a"
      "",
      NULL}},
    {"llama3",
     "\xf0"
     "\x9f"
     "\x91"
     "\xa8"
     "\xe2"
     "\x80"
     "\x8d"
     "\xf0"
     "\x9f"
     "\x91"
     "\xa9"
     "\xe2"
     "\x80"
     "\x8d"
     "\xf0"
     "\x9f"
     "\x91"
     "\xa7"
     " family",
     {"\xf0"
      "\x9f"
      "\x91"
      "\xa8"
      "\xe2"
      "\x80"
      "\x8d"
      "\xf0"
      "\x9f"
      "\x91"
      "\xa9"
      "\xe2"
      "\x80"
      "\x8d"
      "\xf0"
      "\x9f"
      "\x91"
      "\xa7"
      "",
      " family", NULL}},
    {"llama3",
     "x  \x09"
     " y",
     {"x",
      "  \x09"
      "",
      " y", NULL}},
    {"llama3", "$12.50/h", {"$", "12", ".", "50", "/h", NULL}},
    {"qwen2", "12345 apples", {"1", "2", "3", "4", "5", " apples", NULL}},
    {"qwen2",
     "I'M here\x0a"
     "\x0a"
     "",
     {"I", "'M", " here",
      "\x0a"
      "\x0a"
      "",
      NULL}},
    {"qwen2",
     "C\xe1"
     "\xbb"
     "\xad"
     "a Vi\xe1"
     "\xbb"
     "\x87"
     "t 2024",
     {"C\xe1"
      "\xbb"
      "\xad"
      "a",
      " Vi\xe1"
      "\xbb"
      "\x87"
      "t",
      " ", "2", "0", "2", "4", NULL}},
    {"smollm", "a 12b", {"a", " ", "1", "2", "b", NULL}},
    {"smollm", "v1.23 test", {"v", "1", ".", "2", "3", " test", NULL}},
    {"smollm", "  99 bottles", {"  ", "9", "9", " bottles", NULL}},
    {"default", "hello, world!!", {"hello", ",", " world", "!!", NULL}},
    {"default", "x+=1; y<=2", {"x", "+=", "1", ";", " y", "<=", "2", NULL}},
    {"default", "it's $5", {"it", "'", "s", " ", "$", "5", NULL}},
    {"default",
     "pay 1234567 or 12,345.6 now",
     {"pay", " ", "123", "456", "7", " or", " ", "12", ",", "345", ".", "6", " now", NULL}},
    {"default",
     "v \xd9\xa3\xd9\xa4\xd9\xa5\xd9\xa6 x",
     {"v", " ", "\xd9\xa3\xd9\xa4\xd9\xa5\xd9\xa6", " x", NULL}},
    {"falcon",
     "a`b 1234567 `c`",
     {"a", "`", "b", " ", "123", "456", "7", " ", "`", "c", "`", NULL}},
};

static void test_pretokenizers(void **state)
{
    (void)state;
    for (size_t c = 0; c < sizeof(pretok_cases) / sizeof(pretok_cases[0]); c++) {
        const struct pretok_case *pc = &pretok_cases[c];
        enum tok_pre pre;
        bool ignore;
        assert_true(tok_pre_from_name(pc->pre, strlen(pc->pre), &pre, &ignore));
        size_t len = strlen(pc->text);
        uint32_t cps[128], offs[128];
        size_t ends[128];
        assert_true(len < 127);
        size_t k = tok_pretokenize(pre, pc->text, len, cps, offs, ends);
        size_t start = 0, j = 0;
        bool ok = true;
        for (; j < k && pc->pieces[j] != NULL; j++) {
            size_t pl = ends[j] - start;
            ok = ok && pl == strlen(pc->pieces[j]) &&
                 memcmp(pc->text + start, pc->pieces[j], pl) == 0;
            start = ends[j];
        }
        ok = ok && j == k && pc->pieces[j] == NULL;
        if (!ok) {
            printf("pre-tokenizer %s split \"%s\" as:", pc->pre, pc->text);
            start = 0;
            for (j = 0; j < k; j++) {
                printf(" [%.*s]", (int)(ends[j] - start), pc->text + start);
                start = ends[j];
            }
            printf("\n");
        }
        assert_true(ok);
    }
    /* Invalid UTF-8 bytes are kept, one "other" character each. */
    uint32_t cps[8], offs[8];
    size_t ends[8];
    assert_int_equal(tok_pretokenize(TOK_PRE_GPT2, "a\xff\xfe b", 5, cps, offs, ends), 3);
    assert_int_equal(ends[0], 1);
    assert_int_equal(ends[1], 3);
    assert_int_equal(ends[2], 5);
    assert_int_equal(tok_pretokenize(TOK_PRE_LLAMA3, "", 0, cps, offs, ends), 0);
}

/* ---- hand-built vocabularies ---- */

struct vocab {
    void *mem;
    struct eng_gguf *g;
    struct eng_tokenizer *t;
};

/* SPM: <unk> <s> </s> <0x00>..<0xFF>, then scored pieces. */
static const char *const spm_pieces[] = {"\xe2\x96\x81", "a",  "b",   "c",  "\u2581a",
                                         "ab",           "bc", "abc", "aa", "<tool>"};
static const float spm_scores[] = {-1, -2, -2, -2, -3, -1, -0.5f, -0.2f, -1, 0};
#define SPM_FIRST 259

static struct eng_gguf_writer *spm_writer(void)
{
    struct eng_gguf_writer *w = eng_gguf_writer_create();
    assert_non_null(w);
    const char *toks[SPM_FIRST + 10];
    char bytes[256][8];
    float scores[SPM_FIRST + 10] = {0};
    int32_t types[SPM_FIRST + 10];
    toks[0] = "<unk>", types[0] = TOK_TYPE_UNKNOWN;
    toks[1] = "<s>", types[1] = TOK_TYPE_CONTROL;
    toks[2] = "</s>", types[2] = TOK_TYPE_CONTROL;
    for (int b = 0; b < 256; b++) {
        snprintf(bytes[b], sizeof(bytes[b]), "<0x%02X>", b);
        toks[3 + b] = bytes[b];
        types[3 + b] = TOK_TYPE_BYTE;
    }
    for (int i = 0; i < 10; i++) {
        toks[SPM_FIRST + i] = spm_pieces[i];
        scores[SPM_FIRST + i] = spm_scores[i];
        types[SPM_FIRST + i] = i == 9 ? TOK_TYPE_USER_DEFINED : TOK_TYPE_NORMAL;
    }
    assert_int_equal(eng_gguf_writer_add_str(w, "tokenizer.ggml.model", "llama"), WYE_OK);
    assert_int_equal(eng_gguf_writer_add_arr_str(w, "tokenizer.ggml.tokens", toks, SPM_FIRST + 10),
                     WYE_OK);
    assert_int_equal(eng_gguf_writer_add_arr_data(w, "tokenizer.ggml.scores", ENG_GGUF_F32, scores,
                                                  SPM_FIRST + 10),
                     WYE_OK);
    assert_int_equal(eng_gguf_writer_add_arr_data(w, "tokenizer.ggml.token_type", ENG_GGUF_I32,
                                                  types, SPM_FIRST + 10),
                     WYE_OK);
    return w;
}

/* BPE: the 256 byte-level characters (id = byte), merges, two control and one user token. */
static const char *const bpe_merges[] = {"h e",        "l l", "he ll",        "hell o",
                                         "\xc4\xa0 w", "o r", "\xc4\xa0w or", "a a"};
static const char *const bpe_extra[] = {"he",           "ll",         "hell",        "hello",
                                        "\xc4\xa0w",    "or",         "\xc4\xa0wor", "aa",
                                        "<|im_start|>", "<|im_end|>", "<tool>",      "xyz"};
#define BPE_N (256 + 12)

static struct eng_gguf_writer *bpe_writer(const char *pre, bool with_merges)
{
    struct eng_gguf_writer *w = eng_gguf_writer_create();
    assert_non_null(w);
    const char *toks[BPE_N];
    char chars[256][4];
    int32_t types[BPE_N];
    for (int b = 0; b < 256; b++) {
        size_t n = eng_utf8_encode(tok_byte_to_cp((uint8_t)b), chars[b]);
        chars[b][n] = '\0';
        toks[b] = chars[b];
        types[b] = TOK_TYPE_NORMAL;
    }
    for (int i = 0; i < 12; i++) {
        toks[256 + i] = bpe_extra[i];
        types[256 + i] = i == 8 || i == 9 ? TOK_TYPE_CONTROL
                         : i == 10        ? TOK_TYPE_USER_DEFINED
                                          : TOK_TYPE_NORMAL;
    }
    assert_int_equal(eng_gguf_writer_add_str(w, "tokenizer.ggml.model", "gpt2"), WYE_OK);
    if (pre != NULL) {
        assert_int_equal(eng_gguf_writer_add_str(w, "tokenizer.ggml.pre", pre), WYE_OK);
    }
    assert_int_equal(eng_gguf_writer_add_arr_str(w, "tokenizer.ggml.tokens", toks, BPE_N), WYE_OK);
    assert_int_equal(
        eng_gguf_writer_add_arr_data(w, "tokenizer.ggml.token_type", ENG_GGUF_I32, types, BPE_N),
        WYE_OK);
    if (with_merges) {
        assert_int_equal(eng_gguf_writer_add_arr_str(w, "tokenizer.ggml.merges", bpe_merges, 8),
                         WYE_OK);
    }
    assert_int_equal(eng_gguf_writer_add_u32(w, "tokenizer.ggml.eos_token_id", 265), WYE_OK);
    return w;
}

/* Writes w to memory and loads a tokenizer from it; returns the load status. The GGUF and
 * its memory are released before returning: the tokenizer must not need them. */
static enum wye_err load_from(struct eng_gguf_writer *w, struct eng_tokenizer **t, char *err,
                              size_t errlen)
{
    void *mem = NULL;
    size_t len = 0;
    assert_int_equal(eng_gguf_writer_write_mem(w, &mem, &len), WYE_OK);
    eng_gguf_writer_destroy(w);
    struct eng_gguf *g = NULL;
    assert_int_equal(eng_gguf_open_mem(mem, len, &g, err, errlen), WYE_OK);
    enum wye_err e = eng_tokenizer_load(g, t, err, errlen);
    eng_gguf_close(g);
    memset(mem, 0, len);
    wye_free(mem);
    return e;
}

static struct eng_tokenizer *load_ok(struct eng_gguf_writer *w)
{
    char err[256];
    struct eng_tokenizer *t = NULL;
    enum wye_err e = load_from(w, &t, err, sizeof(err));
    if (e) {
        printf("load failed: %s\n", err);
    }
    assert_int_equal(e, WYE_OK);
    return t;
}

static size_t enc(const struct eng_tokenizer *t, const char *s, bool add_special,
                  bool parse_special, int32_t *ids, size_t n_max)
{
    size_t n = 0;
    enum wye_err e = eng_tokenize(t, s, strlen(s), add_special, parse_special, ids, n_max, &n);
    assert_int_equal(e, n > n_max ? WYE_ERR_TOOBIG : WYE_OK);
    return n;
}

#define ASSERT_IDS(got, n, ...)                                                                    \
    do {                                                                                           \
        const int32_t want_[] = {__VA_ARGS__};                                                     \
        assert_int_equal((n), sizeof(want_) / sizeof(want_[0]));                                   \
        assert_memory_equal((got), want_, sizeof(want_));                                          \
    } while (0)

static void test_spm(void **state)
{
    (void)state;
    struct eng_tokenizer *t = load_ok(spm_writer());
    int32_t ids[32];
    const int32_t SP = SPM_FIRST, A = SPM_FIRST + 1, C = SPM_FIRST + 3, ABC = SPM_FIRST + 7,
                  AA = SPM_FIRST + 8;
    /* Highest score first: "bc" (-0.5) before "ab" (-1), then "abc" (-0.2). */
    size_t n = enc(t, "abc", false, false, ids, 32);
    ASSERT_IDS(ids, n, SP, ABC);
    /* Equal scores: the leftmost pair merges first. */
    n = enc(t, "aaa", false, false, ids, 32);
    ASSERT_IDS(ids, n, SP, AA, A);
    /* Byte fallback for characters not in the vocabulary; spaces are "▁". */
    n = enc(t, "\xc3\xa9 c", false, false, ids, 32);
    ASSERT_IDS(ids, n, SP, 3 + 0xC3, 3 + 0xA9, SP, C);
    /* BOS by default for SPM; EOS not. */
    assert_true(eng_tok_add_bos(t));
    assert_false(eng_tok_add_eos(t));
    n = enc(t, "c", true, false, ids, 32);
    ASSERT_IDS(ids, n, 1, SP, C);
    /* Special text: plain text unless parse_special (a prefix space follows a special);
     * user-defined tokens always match. */
    n = enc(t, "<s>c", false, true, ids, 32);
    ASSERT_IDS(ids, n, 1, SP, C);
    n = enc(t, "<s>", false, false, ids, 32);
    assert_true(n > 1 && ids[1] != 1);
    n = enc(t, "c<tool>", false, false, ids, 32);
    ASSERT_IDS(ids, n, SP, C, SPM_FIRST + 9);
    /* Empty text: nothing (or just BOS). */
    assert_int_equal(enc(t, "", false, false, ids, 32), 0);
    n = enc(t, "", true, false, ids, 32);
    ASSERT_IDS(ids, n, 1);
    /* TOOBIG: the count needed, and the first n_max ids written. */
    n = enc(t, "abc abc", true, false, ids, 2);
    assert_int_equal(n, 5);
    ASSERT_IDS(ids, 2, 1, SP);
    /* Inputs past the 4 MiB limit are refused before being read. */
    assert_int_equal(eng_tokenize(t, "x", (4u << 20) + 1, false, false, ids, 32, &n),
                     WYE_ERR_TOOBIG);
    assert_int_equal(n, 0);
    /* Pieces. */
    char buf[16];
    assert_int_equal(eng_token_to_piece(t, SPM_FIRST + 4, buf, sizeof(buf), false), 2);
    assert_memory_equal(buf, " a", 2);
    assert_int_equal(eng_token_to_piece(t, 3 + 0x41, buf, sizeof(buf), false), 1);
    assert_int_equal(buf[0], 'A');
    assert_int_equal(eng_token_to_piece(t, 1, buf, sizeof(buf), false), 0);
    assert_int_equal(eng_token_to_piece(t, 1, buf, sizeof(buf), true), 3);
    assert_memory_equal(buf, "<s>", 3);
    assert_int_equal(eng_token_to_piece(t, SPM_FIRST + 9, buf, 2, false), 6); /* too small */
    assert_int_equal(eng_token_to_piece(t, -1, buf, sizeof(buf), true), 0);
    assert_int_equal(eng_token_to_piece(t, 1 << 20, buf, sizeof(buf), true), 0);
    assert_true(eng_tok_is_eog(t, 2));
    assert_false(eng_tok_is_eog(t, 1));
    assert_false(eng_tok_is_eog(t, -5));
    assert_int_equal(eng_tok_bos(t), 1);
    assert_int_equal(eng_tok_eos(t), 2);
    assert_string_equal(eng_tok_model_name(t), "llama");
    eng_tokenizer_destroy(t);

    /* add_space_prefix = false and add_bos = false from metadata. */
    struct eng_gguf_writer *w = spm_writer();
    assert_int_equal(eng_gguf_writer_add_bool(w, "tokenizer.ggml.add_space_prefix", false), WYE_OK);
    assert_int_equal(eng_gguf_writer_add_bool(w, "tokenizer.ggml.add_bos_token", false), WYE_OK);
    t = load_ok(w);
    n = enc(t, "abc", true, false, ids, 32);
    ASSERT_IDS(ids, n, ABC);
    eng_tokenizer_destroy(t);
}

static void test_bpe(void **state)
{
    (void)state;
    struct eng_tokenizer *t = load_ok(bpe_writer("gpt-2", true));
    int32_t ids[64];
    size_t n = enc(t, "hello world", false, false, ids, 64);
    ASSERT_IDS(ids, n, 259, 262, 'l', 'd');
    /* Equal ranks: leftmost first. */
    n = enc(t, "aaa", false, false, ids, 64);
    ASSERT_IDS(ids, n, 263, 'a');
    /* Without ignore_merges a vocabulary word not reachable by merges is split. */
    n = enc(t, "xyz", false, false, ids, 64);
    ASSERT_IDS(ids, n, 'x', 'y', 'z');
    /* Control tokens only with parse_special; user-defined always. */
    n = enc(t, "<|im_start|>hello<tool>", false, true, ids, 64);
    ASSERT_IDS(ids, n, 264, 259, 266);
    n = enc(t, "<|im_start|>hello<tool>", false, false, ids, 64);
    assert_true(n > 3);
    assert_int_not_equal(ids[0], 264);
    assert_int_equal(ids[n - 1], 266);
    /* No BOS by default for gpt-2; EOG by eos id and by <|im_end|>'s text. */
    assert_false(eng_tok_add_bos(t));
    assert_int_equal(eng_tok_bos(t), -1);
    assert_true(eng_tok_is_eog(t, 265));
    assert_false(eng_tok_is_eog(t, 264));
    /* Pieces: byte-level characters back to bytes, control text only when asked. */
    char buf[32];
    assert_int_equal(eng_token_to_piece(t, 262, buf, sizeof(buf), false), 4);
    assert_memory_equal(buf, " wor", 4);
    assert_int_equal(eng_token_to_piece(t, 0x0A, buf, sizeof(buf), false), 1);
    assert_int_equal(buf[0], '\n');
    assert_int_equal(eng_token_to_piece(t, 264, buf, sizeof(buf), false), 0);
    assert_int_equal(eng_token_to_piece(t, 264, buf, sizeof(buf), true), 12);
    /* Any bytes survive a round trip, invalid UTF-8 included. */
    const char raw[] = "a\xff\xfe\x80 \xe2\x82 z";
    n = enc(t, raw, false, false, ids, 64);
    char back[64];
    size_t bl = 0;
    for (size_t i = 0; i < n; i++) {
        bl += eng_token_to_piece(t, ids[i], back + bl, sizeof(back) - bl, false);
    }
    assert_int_equal(bl, sizeof(raw) - 1);
    assert_memory_equal(back, raw, bl);
    assert_string_equal(eng_tok_pre_name(t), "gpt-2");
    eng_tokenizer_destroy(t);

    /* Llama-3 pre-tokenizer: ignore_merges takes whole vocabulary words; BOS by default. */
    t = load_ok(bpe_writer("llama-bpe", true));
    n = enc(t, "xyz", false, false, ids, 64);
    ASSERT_IDS(ids, n, 267);
    assert_true(eng_tok_add_bos(t) == false); /* no bos id in this vocabulary */
    eng_tokenizer_destroy(t);

    /* A missing pre-tokenizer name means llama.cpp's "default". */
    t = load_ok(bpe_writer(NULL, true));
    assert_string_equal(eng_tok_pre_name(t), "default");
    n = enc(t, "hello,world", false, false, ids, 64);
    assert_int_equal(ids[0], 259);
    assert_int_equal(ids[1], ',');
    eng_tokenizer_destroy(t);
}

static void expect_load_error(struct eng_gguf_writer *w, enum wye_err want, const char *needle)
{
    char err[256] = "";
    struct eng_tokenizer *t = NULL;
    enum wye_err e = load_from(w, &t, err, sizeof(err));
    assert_int_equal(e, want);
    assert_null(t);
    if (strstr(err, needle) == NULL) {
        printf("error \"%s\" does not name \"%s\"\n", err, needle);
    }
    assert_non_null(strstr(err, needle));
}

static void test_bad_metadata(void **state)
{
    (void)state;
    struct eng_gguf_writer *w = eng_gguf_writer_create();
    assert_int_equal(eng_gguf_writer_add_u32(w, "general.x", 1), WYE_OK);
    expect_load_error(w, WYE_ERR_INVAL, "tokenizer.ggml.model");

    w = eng_gguf_writer_create();
    assert_int_equal(eng_gguf_writer_add_str(w, "tokenizer.ggml.model", "bert"), WYE_OK);
    expect_load_error(w, WYE_ERR_UNSUPPORTED, "bert");

    expect_load_error(bpe_writer("no-such-pre", true), WYE_ERR_UNSUPPORTED, "no-such-pre");
    expect_load_error(bpe_writer("gpt-2", false), WYE_ERR_INVAL, "tokenizer.ggml.merges");

    w = bpe_writer("gpt-2", false);
    static const char *const bad_merge[] = {"h e", "nospace"};
    assert_int_equal(eng_gguf_writer_add_arr_str(w, "tokenizer.ggml.merges", bad_merge, 2), WYE_OK);
    expect_load_error(w, WYE_ERR_PARSE, "merges[1]");

    w = eng_gguf_writer_create();
    static const char *const toks[] = {"a", "b"};
    static const float scores[] = {1};
    assert_int_equal(eng_gguf_writer_add_str(w, "tokenizer.ggml.model", "llama"), WYE_OK);
    assert_int_equal(eng_gguf_writer_add_arr_str(w, "tokenizer.ggml.tokens", toks, 2), WYE_OK);
    assert_int_equal(
        eng_gguf_writer_add_arr_data(w, "tokenizer.ggml.scores", ENG_GGUF_F32, scores, 1), WYE_OK);
    expect_load_error(w, WYE_ERR_INVAL, "tokenizer.ggml.scores");

    w = eng_gguf_writer_create();
    assert_int_equal(eng_gguf_writer_add_str(w, "tokenizer.ggml.model", "llama"), WYE_OK);
    assert_int_equal(eng_gguf_writer_add_u32(w, "tokenizer.ggml.tokens", 3), WYE_OK);
    expect_load_error(w, WYE_ERR_INVAL, "tokenizer.ggml.tokens");

    /* Out-of-range special ids are ignored rather than trusted. */
    w = spm_writer();
    assert_int_equal(eng_gguf_writer_add_u32(w, "tokenizer.ggml.bos_token_id", 999999), WYE_OK);
    struct eng_tokenizer *t = load_ok(w);
    assert_int_equal(eng_tok_bos(t), -1);
    assert_false(eng_tok_add_bos(t));
    eng_tokenizer_destroy(t);
}

static void test_oom(void **state)
{
    (void)state;
    void *mem[2];
    size_t len[2];
    struct eng_gguf_writer *w = spm_writer();
    assert_int_equal(eng_gguf_writer_write_mem(w, &mem[0], &len[0]), WYE_OK);
    eng_gguf_writer_destroy(w);
    w = bpe_writer("qwen2", true);
    assert_int_equal(eng_gguf_writer_write_mem(w, &mem[1], &len[1]), WYE_OK);
    eng_gguf_writer_destroy(w);
    for (int v = 0; v < 2; v++) {
        char err[128];
        struct eng_gguf *g = NULL;
        assert_int_equal(eng_gguf_open_mem(mem[v], len[v], &g, err, sizeof(err)), WYE_OK);
        bool loaded = false, encoded = false;
        for (long i = 0; i < 200 && !(loaded && encoded); i++) {
            struct eng_tokenizer *t = NULL;
            wye_alloc_fail_after(i);
            enum wye_err e = eng_tokenizer_load(g, &t, err, sizeof(err));
            if (e == WYE_OK) {
                loaded = true;
                int32_t ids[32];
                size_t n;
                e = eng_tokenize(t, "<tool> hello world", 18, true, true, ids, 32, &n);
                assert_true(e == WYE_OK || e == WYE_ERR_NOMEM);
                encoded = e == WYE_OK;
            } else {
                assert_int_equal(e, WYE_ERR_NOMEM);
                assert_null(t);
            }
            wye_alloc_fail_after(-1);
            eng_tokenizer_destroy(t);
        }
        assert_true(loaded && encoded);
        eng_gguf_close(g);
        wye_free(mem[v]);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_unicode),      cmocka_unit_test(test_pretokenizers),
        cmocka_unit_test(test_spm),          cmocka_unit_test(test_bpe),
        cmocka_unit_test(test_bad_metadata), cmocka_unit_test(test_oom),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
