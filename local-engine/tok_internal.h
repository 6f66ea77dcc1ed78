/* Internals shared by the tokenizer's files (tokenizer.c: loading, special tokens, pieces,
 * detokenizer; tok_spm.c; tok_bpe.c; tok_pretok.c). Not part of the public API; unit tests
 * include it to reach the pre-tokenizer directly. */
#ifndef WYE_ENGINE_TOK_INTERNAL_H
#define WYE_ENGINE_TOK_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/err.h"
#include "local-engine/tokenizer.h"

/* GGUF tokenizer.ggml.token_type values. */
enum tok_type {
    TOK_TYPE_UNDEFINED = 0,
    TOK_TYPE_NORMAL = 1,
    TOK_TYPE_UNKNOWN = 2,
    TOK_TYPE_CONTROL = 3,
    TOK_TYPE_USER_DEFINED = 4,
    TOK_TYPE_UNUSED = 5,
    TOK_TYPE_BYTE = 6
};

enum tok_kind { TOK_KIND_SPM, TOK_KIND_BPE };

/* Pre-tokenizers (tokenizer.ggml.pre) as llama.cpp groups them. */
enum tok_pre {
    TOK_PRE_NONE,    /* SPM: no pre-tokenization */
    TOK_PRE_DEFAULT, /* [\p{P}$+<=>^~|]+, the GPT-2 regex, \p{N}+, [0-9][0-9][0-9] */
    TOK_PRE_GPT2,   /* 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+ */
    TOK_PRE_LLAMA3, /* (?i:'s|..)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|
                       \s*[\r\n]+|\s+(?!\S)|\s+ */
    TOK_PRE_QWEN2,  /* as LLAMA3 with \p{N} (one digit) */
    TOK_PRE_SMOLLM, /* \p{N} first (each digit alone), then the GPT-2 regex */
    TOK_PRE_FALCON  /* [\p{P}$+<=>^~|`]+, the GPT-2 regex, then [0-9][0-9][0-9] */
};

/* Token attribute bits kept per token. */
#define TOK_F_EOG 0x01u
#define TOK_F_RSTRIP 0x02u /* whitespace after this special token is dropped (phi-3) */

struct tok_token {
    uint32_t off; /* text at t->text + off, NUL-terminated */
    uint32_t len;
    float score;   /* SPM merge priority */
    uint8_t type;  /* enum tok_type */
    uint8_t flags; /* TOK_F_* */
};

struct tok_merge {
    uint32_t off;    /* "left right" at t->merge_text + off */
    uint32_t n_left; /* bytes of left; right starts after the space */
    uint32_t n_right;
};

struct eng_tokenizer {
    enum tok_kind kind;
    enum tok_pre pre;
    int32_t n_vocab;
    struct tok_token *tokens; /* (n_vocab) */
    char *text;               /* every token's text, NUL-separated */
    uint64_t *tok_hash;       /* open addressing: hash tag << 32 | (id + 1), 0 = empty */
    size_t tok_hash_mask;
    struct tok_merge *merges; /* (n_merges) in rank order */
    size_t n_merges;
    char *merge_text;
    uint64_t *merge_hash; /* hash tag << 32 | (rank + 1), 0 = empty */
    size_t merge_hash_mask;
    int32_t *special; /* control/user-defined/unknown ids, longest text first */
    size_t n_special;
    int32_t byte_tok[256]; /* SPM: <0xXX>; BPE: the byte-level character's token; -1 */
    int32_t bos, eos, eot, eom, unk;
    bool add_bos, add_eos, add_space_prefix, ignore_merges;
    size_t piece_max;
};

/* Hashes of byte strings used by both tables. */
uint64_t tok_hash_bytes(uint64_t h, const char *p, size_t n);
#define TOK_HASH_SEED 0xcbf29ce484222325ull

/* Priority queue of candidate merges: smallest (key, left) first. Capacity fixed by caller. */
struct tok_bigram {
    double key; /* SPM: -score; BPE: rank */
    int32_t left, right;
    uint32_t size; /* bytes of left+right when queued; stale if they changed since */
};
struct tok_heap {
    struct tok_bigram *v;
    size_t n, cap;
};
void tok_heap_push(struct tok_heap *h, struct tok_bigram b);
struct tok_bigram tok_heap_pop(struct tok_heap *h);

/* A symbol (a run of bytes) in the merge loops. */
struct tok_sym {
    uint32_t off, n; /* bytes in the work text; n = 0 once merged away */
    int32_t prev, next;
};

/* Output sink for ids: counts everything, stores the first cap. */
struct tok_out {
    int32_t *ids;
    size_t cap, n;
};
static inline void tok_out_push(struct tok_out *o, int32_t id)
{
    if (o->n < o->cap) {
        o->ids[o->n] = id;
    }
    o->n++;
}

/* SPM: tokenizes text (already escaped: spaces as U+2581) of len bytes. sym/heap have room
 * for len symbols / 3 * len bigrams. */
void tok_spm_encode(const struct eng_tokenizer *t, const char *text, size_t len,
                    struct tok_sym *sym, struct tok_heap *heap, struct tok_out *out);
/* BPE: byte-level-encodes and merges one pre-token word. work needs 2 * len bytes; sym/heap
 * as for SPM over the encoded length (2 * len). */
void tok_bpe_encode_word(const struct eng_tokenizer *t, const char *word, size_t len, char *work,
                         struct tok_sym *sym, struct tok_heap *heap, struct tok_out *out);
/* The byte-level BPE mapping: byte -> code point and back (-1 if cp is not a mapped one). */
uint32_t tok_byte_to_cp(uint8_t b);
int tok_cp_to_byte(uint32_t cp);

/* Splits text into pre-tokens: writes each piece's end offset (bytes) into ends (room for
 * len entries), returns the count. cps/offs are scratch for len + 1 entries each. */
size_t tok_pretokenize(enum tok_pre pre, const char *text, size_t len, uint32_t *cps,
                       uint32_t *offs, size_t *ends);
/* The pre-tokenizer for a tokenizer.ggml.pre name; false if unknown. */
bool tok_pre_from_name(const char *name, size_t len, enum tok_pre *out, bool *ignore_merges);
const char *tok_pre_name(enum tok_pre pre);

/* Token lookups. */
int32_t tok_find(const struct eng_tokenizer *t, const char *s, size_t len);
int32_t tok_merge_rank(const struct eng_tokenizer *t, const char *l, size_t nl, const char *r,
                       size_t nr);

#endif
