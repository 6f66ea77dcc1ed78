/* libFuzzer entry point for the tokenizer's loader on vocabulary metadata a downloaded GGUF file
 * controls. fuzz_gguf mutates the container; here the input is a recipe for a well-formed file
 * whose tokenizer.* keys disagree in the ways a broken converter could make them: the model
 * and pre-tokenizer names, tokens from the input (empty, duplicated, invalid UTF-8, "<0xZZ>"
 * byte names), scores and token types of the wrong count or element type and out-of-range
 * types, merges that name unknown tokens or have no space, special ids out of range. The file
 * is written with the GGUF writer and loaded with eng_tokenizer_load, which must either refuse
 * it with a message or give a tokenizer whose encode, pieces and streaming decode keep
 * tokenizer.h's promises (ids in range, pieces within eng_tok_piece_max, valid UTF-8 deltas
 * within eng_detok_out_max). Single-threaded. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "local-engine/gguf.h"
#include "local-engine/gguf_write.h"
#include "local-engine/tokenizer.h"
#include "local-engine/unicode.h"
#include "tests/fuzz/fuzz_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define TOK_MAX 300 /* tokens in one recipe */
#define TEXT_MAX 256

static const char *const pres[] = {"default", "gpt2",   "llama-bpe", "llama3",      "qwen2",
                                   "smollm",  "falcon", "refact",    "no-such-pre", ""};
#define N_PRES (sizeof(pres) / sizeof(pres[0]))

/* The input, consumed front to back; zeros once it runs out. */
struct rd {
    const uint8_t *p;
    size_t n;
};

static uint8_t rd_u8(struct rd *r)
{
    if (r->n == 0) {
        return 0;
    }
    r->n--;
    return *r->p++;
}

static uint32_t rd_u32(struct rd *r)
{
    uint32_t v = 0;
    for (int i = 0; i < 4; i++) {
        v |= (uint32_t)rd_u8(r) << (8 * i);
    }
    return v;
}

/* Up to 16 bytes of the input as a token text (its first byte is the length). */
static size_t rd_text(struct rd *r, char *out)
{
    size_t len = rd_u8(r) % 17;
    for (size_t i = 0; i < len; i++) {
        out[i] = (char)rd_u8(r);
    }
    return len;
}

/* Encodes text, then decodes the ids through the pieces and the streaming detokenizer,
 * checking every promise on the way. */
static void exercise(const struct eng_tokenizer *t, const char *text, size_t len, bool add,
                     bool parse)
{
    int32_t ids[1024];
    size_t n = 0, n_count = 0;
    enum wye_err e = eng_tokenize(t, text, len, add, parse, ids, 1024, &n);
    if (e != WYE_OK) {
        CHECK(e == WYE_ERR_TOOBIG || e == WYE_ERR_NOMEM || e == WYE_ERR_INVAL);
        return;
    }
    CHECK(n <= 1024);
    /* counting only (no room) agrees */
    if (eng_tokenize(t, text, len, add, parse, NULL, 0, &n_count) == WYE_OK) {
        CHECK(n_count == n);
    }
    int32_t nv = eng_tok_n_vocab(t);
    size_t pmax = eng_tok_piece_max(t), omax = eng_detok_out_max(t);
    char *piece = wye_malloc(pmax + 1), *out = wye_malloc(omax + 4);
    CHECK(piece && out);
    struct eng_detok d;
    eng_detok_init(&d, t);
    for (size_t i = 0; i < n; i++) {
        CHECK(ids[i] >= 0 && ids[i] < nv);
        size_t pl = eng_token_to_piece(t, ids[i], piece, pmax + 1, true);
        CHECK(pl <= pmax);
        size_t k = eng_detok_push(&d, ids[i], out, omax);
        CHECK(k != SIZE_MAX && k <= omax);
        CHECK(eng_utf8_valid(out, k));
    }
    size_t k = eng_detok_flush(&d, out, omax + 4);
    CHECK(k != SIZE_MAX && eng_utf8_valid(out, k));
    wye_free(piece);
    wye_free(out);
}

/* Every id through the pieces (special or not) and one streaming decode, in order. */
static void decode_all(const struct eng_tokenizer *t)
{
    size_t pmax = eng_tok_piece_max(t), omax = eng_detok_out_max(t);
    char *piece = wye_malloc(pmax + 1), *out = wye_malloc(omax + 4);
    CHECK(piece && out);
    struct eng_detok d;
    eng_detok_init(&d, t);
    for (int32_t id = 0; id < eng_tok_n_vocab(t); id++) {
        CHECK(eng_token_to_piece(t, id, piece, pmax + 1, true) <= pmax);
        CHECK(eng_token_to_piece(t, id, piece, pmax + 1, false) <= pmax);
        size_t k = eng_detok_push(&d, id, out, omax);
        CHECK(k != SIZE_MAX && k <= omax && eng_utf8_valid(out, k));
    }
    size_t k = eng_detok_flush(&d, out, omax + 4);
    CHECK(k != SIZE_MAX && eng_utf8_valid(out, k));
    wye_free(piece);
    wye_free(out);
}

static void run(struct rd *r)
{
    uint8_t f0 = rd_u8(r), f1 = rd_u8(r);
    bool spm = f0 & 1;
    size_t n_tok = 1 + rd_u8(r) % TOK_MAX;
    char(*texts)[16] = wye_calloc(TOK_MAX, 16);
    const char **strs = wye_calloc(TOK_MAX, sizeof(char *));
    size_t *lens = wye_calloc(TOK_MAX, sizeof(size_t));
    float *scores = wye_calloc(TOK_MAX + 1, sizeof(float));
    int32_t *types = wye_calloc(TOK_MAX + 1, sizeof(int32_t));
    struct eng_gguf_writer *w = eng_gguf_writer_create();
    CHECK(texts && strs && lens && scores && types && w);
    for (size_t i = 0; i < n_tok; i++) {
        uint8_t how = rd_u8(r);
        if (how < 64) { /* a byte token name, sometimes malformed */
            lens[i] = (size_t)snprintf(texts[i], 16, how < 60 ? "<0x%02X>" : "<0x%02Xq",
                                       (unsigned)(i & 0xff));
        } else if (how < 96) { /* a single printable byte */
            texts[i][0] = (char)(32 + i % 95);
            lens[i] = 1;
        } else {
            lens[i] = rd_text(r, texts[i]);
        }
        strs[i] = texts[i];
        scores[i] = -(float)(rd_u8(r) % 32);
        types[i] = (int32_t)(rd_u8(r) % 8) - (how == 255); /* 0 and 7 (and -1) are not types */
    }
    (void)eng_gguf_writer_add_str(w, "general.architecture", "llama");
    (void)eng_gguf_writer_add_str(w, "tokenizer.ggml.model",
                                  f1 & 0x80 ? "bert"
                                  : spm     ? "llama"
                                            : "gpt2");
    if (!spm || (f1 & 0x40)) {
        (void)eng_gguf_writer_add_str(w, "tokenizer.ggml.pre", pres[(f0 >> 1) % N_PRES]);
    }
    (void)eng_gguf_writer_add_arr_strn(w, "tokenizer.ggml.tokens", strs, lens, n_tok);
    /* scores and types: absent, one short or long, or of another element type */
    uint8_t sc = (f0 >> 5) & 3, ty = (f1 >> 2) & 3;
    if (sc == 1 || sc == 2) {
        (void)eng_gguf_writer_add_arr_data(w, "tokenizer.ggml.scores", ENG_GGUF_F32, scores,
                                           sc == 1 ? n_tok : n_tok + 1);
    } else if (sc == 3) {
        (void)eng_gguf_writer_add_arr_data(w, "tokenizer.ggml.scores", ENG_GGUF_I32, types, n_tok);
    }
    if (ty == 1 || ty == 2) {
        (void)eng_gguf_writer_add_arr_data(w, "tokenizer.ggml.token_type", ENG_GGUF_I32, types,
                                           ty == 1 ? n_tok : n_tok - 1);
    } else if (ty == 3) {
        (void)eng_gguf_writer_add_arr_data(w, "tokenizer.ggml.token_type", ENG_GGUF_F32, scores,
                                           n_tok);
    }
    /* merges: pairs of token texts, some without their space or naming nothing */
    size_t n_merge = f1 & 0x20 ? rd_u8(r) % 64 : 0;
    char(*mtexts)[40] = wye_calloc(n_merge ? n_merge : 1, 40);
    const char **mstrs = wye_calloc(n_merge ? n_merge : 1, sizeof(char *));
    size_t *mlens = wye_calloc(n_merge ? n_merge : 1, sizeof(size_t));
    CHECK(mtexts && mstrs && mlens);
    for (size_t i = 0; i < n_merge; i++) {
        size_t a = rd_u8(r) % n_tok, b = rd_u8(r) % n_tok;
        uint8_t how = rd_u8(r);
        memcpy(mtexts[i], texts[a], lens[a]);
        size_t l = lens[a];
        if (how % 4 != 0) {
            mtexts[i][l++] = ' ';
        }
        memcpy(mtexts[i] + l, texts[b], lens[b]);
        l += lens[b];
        if (how % 7 == 0) {
            mtexts[i][l++] = 'Z'; /* a merge result no token has */
        }
        mstrs[i] = mtexts[i];
        mlens[i] = l;
    }
    if (n_merge) {
        (void)eng_gguf_writer_add_arr_strn(w, "tokenizer.ggml.merges", mstrs, mlens, n_merge);
    }
    /* special ids: absent, in range, or anything */
    static const char *const id_keys[] = {
        "tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id",
        "tokenizer.ggml.unknown_token_id", "tokenizer.ggml.eot_token_id",
        "tokenizer.ggml.padding_token_id"};
    for (size_t i = 0; i < sizeof(id_keys) / sizeof(id_keys[0]); i++) {
        uint8_t how = rd_u8(r);
        if (how % 3 == 1) {
            (void)eng_gguf_writer_add_u32(w, id_keys[i], (uint32_t)(rd_u8(r) % n_tok));
        } else if (how % 3 == 2) {
            (void)eng_gguf_writer_add_u32(w, id_keys[i], rd_u32(r));
        }
    }
    (void)eng_gguf_writer_add_bool(w, "tokenizer.ggml.add_bos_token", f1 & 1);
    (void)eng_gguf_writer_add_bool(w, "tokenizer.ggml.add_space_prefix", f1 & 2);

    void *buf = NULL;
    size_t len = 0;
    struct eng_gguf *g = NULL;
    struct eng_tokenizer *t = NULL;
    char err[512];
    if (eng_gguf_writer_write_mem(w, &buf, &len) == WYE_OK &&
        eng_gguf_open_mem(buf, len, &g, err, sizeof(err)) == WYE_OK) {
        err[0] = '\0';
        enum wye_err e = eng_tokenizer_load(g, &t, err, sizeof(err));
        if (e != WYE_OK) {
            CHECK(t == NULL && err[0] != '\0'); /* every refusal says why */
        } else {
            CHECK(t != NULL && eng_tok_n_vocab(t) == (int32_t)n_tok);
            char text[TEXT_MAX];
            size_t tl = 0;
            while (tl < TEXT_MAX && r->n > 0) {
                text[tl++] = (char)rd_u8(r);
            }
            static const char fixed[] =
                "Hello, world! <s> </s> <|im_end|> 12345 \xc3\xa9\xe2\x96\x81";
            for (int m = 0; m < 4; m++) {
                exercise(t, fixed, sizeof(fixed) - 1, m & 1, m & 2);
                exercise(t, text, tl, m & 1, m & 2);
            }
            decode_all(t);
            eng_tokenizer_destroy(t);
        }
        eng_gguf_close(g);
    }
    wye_free(buf);
    eng_gguf_writer_destroy(w);
    wye_free(mtexts);
    wye_free(mstrs);
    wye_free(mlens);
    wye_free(texts);
    wye_free(strs);
    wye_free(lens);
    wye_free(scores);
    wye_free(types);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct rd r = {data, size};
    run(&r);
    return 0;
}
