/* Tokenizers of the local engine: SentencePiece-style ("llama": scores, byte fallback) and
 * byte-level BPE ("gpt2": merges + the pre-tokenizer named by tokenizer.ggml.pre), built
 * from a GGUF file's tokenizer.* metadata, plus a streaming detokenizer. A loaded tokenizer
 * is immutable: any number of threads may encode/decode with it at once. */
#ifndef WYE_ENGINE_TOKENIZER_H
#define WYE_ENGINE_TOKENIZER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/err.h"

struct eng_gguf;
struct eng_tokenizer;

/* Builds the tokenizer from g's tokenizer.* metadata. Everything needed is COPIED: g may be
 * closed right after. On error errbuf names the problem (bad/missing key, unknown model or
 * pre-tokenizer, malformed merge) and INVAL/PARSE/UNSUPPORTED/NOMEM is returned. */
enum wye_err eng_tokenizer_load(const struct eng_gguf *g, struct eng_tokenizer **out, char *errbuf,
                                size_t errlen);
/* Frees t; NULL is a no-op. */
void eng_tokenizer_destroy(struct eng_tokenizer *t);

int32_t eng_tok_n_vocab(const struct eng_tokenizer *t);
int32_t eng_tok_bos(const struct eng_tokenizer *t); /* -1 if none */
int32_t eng_tok_eos(const struct eng_tokenizer *t); /* -1 if none */
/* tokenizer.ggml.add_bos_token / add_eos_token, or the model family's default. */
bool eng_tok_add_bos(const struct eng_tokenizer *t);
bool eng_tok_add_eos(const struct eng_tokenizer *t);
/* End of generation: eos, eot, eom and control tokens such as <|im_end|>, <|eot_id|>,
 * <|end|>, <end_of_turn>, <|endoftext|>. False for ids out of range. */
bool eng_tok_is_eog(const struct eng_tokenizer *t, int32_t id);
/* "llama" (SentencePiece) or "gpt2" (byte-level BPE), and the pre-tokenizer's name. */
const char *eng_tok_model_name(const struct eng_tokenizer *t);
const char *eng_tok_pre_name(const struct eng_tokenizer *t);
/* The id of the token whose text is exactly s[0..len), or -1. */
int32_t eng_tok_find(const struct eng_tokenizer *t, const char *s, size_t len);

/* Encodes text[0..len) (UTF-8; invalid bytes are kept as bytes). add_special: add BOS/EOS
 * as eng_tok_add_bos/eos say. parse_special: text of control tokens (e.g. "<|im_start|>")
 * becomes those tokens; otherwise it is plain text (user-defined tokens always match, as in
 * llama.cpp). Writes at most n_max ids; *n_out receives the count needed: TOOBIG if it
 * exceeded n_max (ids holds the first n_max; ids may be NULL with n_max 0 to count).
 * Allocates scratch proportional to len (about 110 bytes per input byte, freed before
 * returning); TOOBIG for len > 4 MiB, NOMEM if the scratch cannot be had. */
enum wye_err eng_tokenize(const struct eng_tokenizer *t, const char *text, size_t len,
                          bool add_special, bool parse_special, int32_t *ids, size_t n_max,
                          size_t *n_out);
/* Bytes of a token's text: SPM "▁" -> space, byte tokens <0x41> -> the byte, BPE byte-level
 * characters -> bytes; control/unknown tokens render their text only if special is true
 * (otherwise nothing). Returns the length; if it exceeds n, buf holds nothing useful.
 * An out-of-range id renders as nothing. */
size_t eng_token_to_piece(const struct eng_tokenizer *t, int32_t id, char *buf, size_t n,
                          bool special);
/* The longest piece any token renders to (bytes). */
size_t eng_tok_piece_max(const struct eng_tokenizer *t);

/* Streaming detokenizer with a fixed caller-owned state (no allocation per token). Each
 * delta is valid UTF-8 and never splits a character: an incomplete trailing sequence waits
 * in pending for the next token; bytes that can never form a character come out as U+FFFD.
 * When first is set (the default after init), SPM vocabularies that add a space prefix drop
 * the leading space of the first text piece (tokens that render nothing, such as BOS, do
 * not count), as SentencePiece decoding does; a stream that continues a prompt clears
 * first after init. Control tokens render nothing unless special is set. */
struct eng_detok {
    const struct eng_tokenizer *t;
    char pending[16]; /* an incomplete UTF-8 sequence (at most 3 bytes used) */
    size_t n_pending;
    bool first;   /* no text emitted yet: strip the SPM prefix space */
    bool special; /* render control tokens' text (default false) */
};

/* Room an output buffer needs so that any single push or flush fits. */
size_t eng_detok_out_max(const struct eng_tokenizer *t);
void eng_detok_init(struct eng_detok *d, const struct eng_tokenizer *t);
/* Pushes id; writes the now-complete text to out and returns its length. If n is smaller
 * than this token needs (at most eng_detok_out_max), writes nothing, leaves the state
 * unchanged and returns SIZE_MAX. */
size_t eng_detok_push(struct eng_detok *d, int32_t id, char *out, size_t n);
/* Ends the stream: an incomplete sequence still pending comes out as one U+FFFD; returns
 * the length written (SIZE_MAX, state unchanged, if n < 3 and something is pending). */
size_t eng_detok_flush(struct eng_detok *d, char *out, size_t n);

#endif
