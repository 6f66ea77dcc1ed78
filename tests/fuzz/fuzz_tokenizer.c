/* libFuzzer entry point for the tokenizers and the streaming detokenizer, on the five real
 * vocabularies of ../shared/vocab (loaded once at start-up; WYE_FUZZ_VOCAB_DIR overrides the
 * directory compiled in) plus GPT-2's under the three pre-tokenizers no real file here names
 * (default, falcon, smollm). The first input byte picks one of these eight and the flags; the rest
 * is either text to encode (any bytes) or raw token ids (3 bytes each, out-of-range ones
 * included). Checks what tokenizer.h promises: counting and capped encodes agree, ids are in
 * range, pieces fit eng_tok_piece_max, every detokenizer delta is valid UTF-8 within
 * eng_detok_out_max, a refused push changes nothing, and plain text decodes back to itself.
 * Any violation aborts. Single-threaded. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "local-engine/gguf.h"
#include "local-engine/gguf_write.h"
#include "local-engine/tok_internal.h"
#include "local-engine/tokenizer.h"
#include "local-engine/unicode.h"
#include "tests/fuzz/fuzz_util.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#ifndef WYE_FUZZ_VOCAB_DIR_DEFAULT
#define WYE_FUZZ_VOCAB_DIR_DEFAULT "../shared/vocab"
#endif

static const char *const vocab_names[] = {"llama-spm", "phi-3", "gpt-2", "qwen2", "llama-bpe"};
#define N_VOCABS (sizeof(vocab_names) / sizeof(vocab_names[0]))
#define VOCAB_GPT2 2
static const char *const extra_pres[] = {"default", "falcon", "smollm"};
#define N_TOKS (N_VOCABS + sizeof(extra_pres) / sizeof(extra_pres[0]))
static struct eng_tokenizer *toks[N_TOKS];

/* Input flag bits (data[0]; the low 3 bits pick the tokenizer). */
#define F_ADD_SPECIAL 0x08u
#define F_PARSE_SPECIAL 0x10u
#define F_DETOK_SPECIAL 0x20u
#define F_NOT_FIRST 0x40u
#define F_IDS 0x80u

/* GPT-2's vocabulary with tokenizer.ggml.pre set to pre: its tokenizer.* keys but the
 * pre-tokenizer's copied into a new file image. */
static struct eng_tokenizer *load_with_pre(const struct eng_gguf *g, const char *pre)
{
    static const char *const prefixes[] = {"tokenizer.ggml.model",      "tokenizer.ggml.tokens",
                                           "tokenizer.ggml.token_type", "tokenizer.ggml.merges",
                                           "tokenizer.ggml.bos",        "tokenizer.ggml.eos"};
    struct eng_gguf_writer *w = eng_gguf_writer_create();
    CHECK(w != NULL);
    for (size_t i = 0; i < sizeof(prefixes) / sizeof(prefixes[0]); i++) {
        CHECK(eng_gguf_writer_copy_kv(w, g, prefixes[i]) == WYE_OK);
    }
    CHECK(eng_gguf_writer_add_str(w, "tokenizer.ggml.pre", pre) == WYE_OK);
    void *buf = NULL;
    size_t len = 0;
    CHECK(eng_gguf_writer_write_mem(w, &buf, &len) == WYE_OK);
    eng_gguf_writer_destroy(w);
    struct eng_gguf *g2 = NULL;
    struct eng_tokenizer *t = NULL;
    char err[256];
    CHECK(eng_gguf_open_mem(buf, len, &g2, err, sizeof(err)) == WYE_OK);
    CHECK(eng_tokenizer_load(g2, &t, err, sizeof(err)) == WYE_OK);
    CHECK(strcmp(eng_tok_pre_name(t), pre) == 0);
    eng_gguf_close(g2);
    wye_free(buf);
    return t;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    const char *dir = getenv("WYE_FUZZ_VOCAB_DIR");
    if (dir == NULL || dir[0] == '\0') {
        dir = WYE_FUZZ_VOCAB_DIR_DEFAULT;
    }
    for (size_t i = 0; i < N_VOCABS; i++) {
        char path[1024], err[256];
        snprintf(path, sizeof(path), "%s/ggml-vocab-%s.gguf", dir, vocab_names[i]);
        struct eng_gguf *g = NULL;
        if (eng_gguf_open(path, &g, err, sizeof(err)) != WYE_OK) {
            fprintf(stderr, "fuzz_tokenizer: cannot open %s: %s (set WYE_FUZZ_VOCAB_DIR)\n", path,
                    err);
            abort();
        }
        enum wye_err e = eng_tokenizer_load(g, &toks[i], err, sizeof(err));
        if (e != WYE_OK) {
            fprintf(stderr, "fuzz_tokenizer: cannot load the tokenizer of %s: %s\n", path, err);
            abort();
        }
        if (i == VOCAB_GPT2) {
            for (size_t k = 0; k < N_TOKS - N_VOCABS; k++) {
                toks[N_VOCABS + k] = load_with_pre(g, extra_pres[k]);
            }
        }
        eng_gguf_close(g);
    }
    return 0;
}

/* Growable output of a detokenizer run. */
struct text {
    char *p;
    size_t len, cap;
};

static void text_add(struct text *t, const char *s, size_t n)
{
    if (t->len + n > t->cap) {
        size_t cap = t->cap ? t->cap : 256;
        while (cap < t->len + n) {
            cap *= 2;
        }
        t->p = realloc(t->p, cap);
        CHECK(t->p != NULL);
        t->cap = cap;
    }
    if (n > 0) {
        memcpy(t->p + t->len, s, n);
    }
    t->len += n;
}

/* A piece must have the same length whatever the buffer, and fit the piece maximum. */
static size_t check_piece(const struct eng_tokenizer *t, int32_t id, bool special, char *buf,
                          size_t n)
{
    size_t want = eng_token_to_piece(t, id, NULL, 0, special);
    CHECK(want <= eng_tok_piece_max(t));
    if (id < 0 || id >= eng_tok_n_vocab(t)) {
        CHECK(want == 0);
    }
    CHECK(want <= n);
    size_t got = eng_token_to_piece(t, id, buf, n, special);
    CHECK(got == want);
    if (want > 1) {
        char small[1];
        CHECK(eng_token_to_piece(t, id, small, 1, special) == want);
    }
    return got;
}

/* Streams ids through a detokenizer, checking every delta; the output goes to out. */
static void detok_run(const struct eng_tokenizer *t, const int32_t *ids, size_t n, bool special,
                      bool first, struct text *out)
{
    size_t cap = eng_detok_out_max(t);
    char *delta = malloc(cap);
    char *piece = malloc(eng_tok_piece_max(t) + 1);
    CHECK(delta != NULL && piece != NULL);
    struct eng_detok d;
    eng_detok_init(&d, t);
    d.special = special;
    d.first = first;
    for (size_t i = 0; i < n; i++) {
        size_t plen = check_piece(t, ids[i], special, piece, eng_tok_piece_max(t) + 1);
        /* Too small a buffer is refused without consuming anything. */
        size_t small = (d.n_pending + plen) % 7;
        struct eng_detok before = d;
        size_t k = eng_detok_push(&d, ids[i], delta, small);
        if (k == SIZE_MAX) {
            CHECK(memcmp(&before, &d, sizeof(d)) == 0);
            k = eng_detok_push(&d, ids[i], delta, cap);
        }
        CHECK(k != SIZE_MAX);
        CHECK(k <= cap);
        CHECK(d.n_pending <= 3);
        CHECK(eng_utf8_valid(delta, k));
        text_add(out, delta, k);
    }
    struct eng_detok before = d;
    size_t k = eng_detok_flush(&d, delta, 2);
    if (k == SIZE_MAX) {
        CHECK(memcmp(&before, &d, sizeof(d)) == 0);
        k = eng_detok_flush(&d, delta, cap);
    }
    CHECK(k <= 3 && k <= cap && d.n_pending == 0);
    CHECK(eng_utf8_valid(delta, k));
    text_add(out, delta, k);
    free(delta);
    free(piece);
}

/* Whether every id is a plain text token (normal or byte), whose text decodes verbatim. */
static bool all_plain(const struct eng_tokenizer *t, const int32_t *ids, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        uint8_t ty = t->tokens[ids[i]].type;
        if (ty != TOK_TYPE_NORMAL && ty != TOK_TYPE_BYTE) {
            return false;
        }
    }
    return true;
}

static void fuzz_text(const struct eng_tokenizer *t, unsigned flags, const char *text, size_t len)
{
    bool add_special = flags & F_ADD_SPECIAL, parse_special = flags & F_PARSE_SPECIAL;
    size_t n = 0;
    enum wye_err e = eng_tokenize(t, text, len, add_special, parse_special, NULL, 0, &n);
    CHECK(e == (n > 0 ? WYE_ERR_TOOBIG : WYE_OK));
    int32_t *ids = malloc((n ? n : 1) * sizeof(*ids));
    CHECK(ids != NULL);
    size_t n2 = 0;
    CHECK(eng_tokenize(t, text, len, add_special, parse_special, ids, n, &n2) == WYE_OK);
    CHECK(n2 == n);
    for (size_t i = 0; i < n; i++) {
        CHECK(ids[i] >= 0 && ids[i] < eng_tok_n_vocab(t));
    }
    if (n > 1) {
        /* A capped encode stores the first n_max ids and counts them all. */
        size_t half = n / 2, n3 = 0;
        int32_t *part = malloc(half * sizeof(*part));
        CHECK(part != NULL);
        CHECK(eng_tokenize(t, text, len, add_special, parse_special, part, half, &n3) ==
              WYE_ERR_TOOBIG);
        CHECK(n3 == n && memcmp(part, ids, half * sizeof(*part)) == 0);
        free(part);
    }
    bool special = flags & F_DETOK_SPECIAL, first = !(flags & F_NOT_FIRST);
    struct text out = {0};
    detok_run(t, ids, n, special, first, &out);
    /* Plain tokens of valid UTF-8 text decode back to the text (SPM adds a prefix space,
     * which only the first piece of a stream drops; and a "\u2581" in the text is a space
     * to SentencePiece, as it is in llama.cpp). */
    bool spm = t->kind == TOK_KIND_SPM;
    if (all_plain(t, ids, n) && eng_utf8_valid(text, len) &&
        !(spm && memmem(text, len, "\xe2\x96\x81", 3) != NULL)) {
        bool prefix = spm && t->add_space_prefix && len > 0 && !first;
        size_t want = len + (prefix ? 1 : 0);
        if (out.len != want || (want > 0 && ((prefix && out.p[0] != ' ') ||
                                             memcmp(out.p + (prefix ? 1 : 0), text, len) != 0))) {
            fprintf(stderr, "fuzz_tokenizer: %zu bytes decode to %zu: \"%.*s\"\n", len, out.len,
                    (int)(out.len > 200 ? 200 : out.len), out.p ? out.p : "");
            abort();
        }
    }
    free(out.p);
    free(ids);
}

/* Whether s[0..n) is the start of a UTF-8 sequence that more bytes could complete. */
static bool viable_tail(const uint8_t *s, size_t n)
{
    size_t need = s[0] >= 0xF0 ? 4 : s[0] >= 0xE0 ? 3 : 2;
    if (s[0] < 0xC2 || s[0] > 0xF4 || n >= need) {
        return false;
    }
    for (size_t i = 1; i < n; i++) {
        if ((s[i] & 0xC0) != 0x80) {
            return false;
        }
    }
    return n < 2 || !((s[0] == 0xE0 && s[1] < 0xA0) || (s[0] == 0xED && s[1] > 0x9F) ||
                      (s[0] == 0xF0 && s[1] < 0x90) || (s[0] == 0xF4 && s[1] > 0x8F));
}

/* What the detokenizer promises for a stream whose pieces join to s[0..n): the valid
 * characters as they are, U+FFFD for each byte that starts none, and one U+FFFD for an
 * unfinished character at the end. */
static void expected_text(const char *s, size_t n, struct text *out)
{
    for (size_t i = 0; i < n;) {
        uint32_t cp;
        size_t l = eng_utf8_decode(s + i, n - i, &cp);
        if (cp != ENG_UC_INVALID) {
            text_add(out, s + i, l);
            i += l;
            continue;
        }
        text_add(out, "\xef\xbf\xbd", 3);
        if (viable_tail((const uint8_t *)s + i, n - i)) {
            break;
        }
        i++;
    }
}

/* Raw ids, 3 bytes each: mostly near the vocabulary (a few past either end), sometimes
 * extreme values. Their detokenized text must be the pieces joined, invalid bytes replaced. */
static void fuzz_ids(const struct eng_tokenizer *t, unsigned flags, const uint8_t *p, size_t len)
{
    size_t n = len / 3;
    int32_t nv = eng_tok_n_vocab(t);
    int32_t *ids = malloc((n ? n : 1) * sizeof(*ids));
    CHECK(ids != NULL);
    for (size_t i = 0; i < n; i++) {
        uint32_t v =
            (uint32_t)p[3 * i] | (uint32_t)p[3 * i + 1] << 8 | (uint32_t)p[3 * i + 2] << 16;
        if (p[3 * i + 2] == 0xFF) {
            ids[i] = (p[3 * i] & 1) ? INT32_MAX - p[3 * i + 1] : INT32_MIN + p[3 * i + 1];
        } else {
            ids[i] = (int32_t)(v % ((uint32_t)nv + 16)) - 8;
        }
    }
    bool special = flags & F_DETOK_SPECIAL, first = !(flags & F_NOT_FIRST);
    struct text out = {0}, joined = {0};
    detok_run(t, ids, n, special, first, &out);
    size_t pmax = eng_tok_piece_max(t) + 1;
    char *piece = malloc(pmax);
    CHECK(piece != NULL);
    bool strip = first && t->kind == TOK_KIND_SPM && t->add_space_prefix;
    for (size_t i = 0; i < n; i++) {
        size_t k = check_piece(t, ids[i], special, piece, pmax);
        if (k > 0 && strip) {
            strip = false;
            if (piece[0] == ' ') {
                text_add(&joined, piece + 1, k - 1);
                continue;
            }
        }
        text_add(&joined, piece, k);
    }
    struct text want = {0};
    expected_text(joined.p, joined.len, &want);
    if (out.len != want.len || (out.len > 0 && memcmp(out.p, want.p, out.len) != 0)) {
        fprintf(stderr, "fuzz_tokenizer: the pieces (%zu bytes) detokenize to %zu bytes, not %zu\n",
                joined.len, out.len, want.len);
        abort();
    }
    free(want.p);
    free(piece);
    free(out.p);
    free(joined.p);
    free(ids);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0) {
        return 0;
    }
    unsigned flags = data[0];
    const struct eng_tokenizer *t = toks[(flags & 7u) % N_TOKS];
    if (flags & F_IDS) {
        fuzz_ids(t, flags, data + 1, size - 1);
    } else {
        fuzz_text(t, flags, (const char *)data + 1, size - 1);
    }
    return 0;
}
