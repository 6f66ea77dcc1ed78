/* Byte-level BPE ("gpt2") encoding of one pre-token word as llama.cpp does it: map each
 * byte to its GPT-2 byte-level character, split into characters, repeatedly merge the
 * adjacent pair with the lowest merge rank (ties: leftmost first), then emit each symbol's
 * token (or its characters' tokens if the symbol is not in the vocabulary). Caller's thread,
 * caller-provided scratch; no allocation. */
#include <string.h>

#include "local-engine/tok_internal.h"
#include "local-engine/unicode.h"

/* GPT-2's bytes_to_unicode: printable Latin-1 bytes map to themselves, the other 68 bytes to
 * U+0100.. in byte order. */
uint32_t tok_byte_to_cp(uint8_t b)
{
    if (b <= 0x20) {
        return 0x100u + b; /* 33 bytes: U+0100..U+0120 */
    }
    if (b >= 0x7F && b <= 0xA0) {
        return 0x121u + (b - 0x7Fu); /* 34 bytes: U+0121..U+0142 */
    }
    if (b == 0xAD) {
        return 0x143;
    }
    return b;
}

int tok_cp_to_byte(uint32_t cp)
{
    if (cp >= 0x100 && cp <= 0x120) {
        return (int)(cp - 0x100);
    }
    if (cp >= 0x121 && cp <= 0x142) {
        return (int)(cp - 0x121 + 0x7F);
    }
    if (cp == 0x143) {
        return 0xAD;
    }
    if ((cp >= 0x21 && cp <= 0x7E) || (cp >= 0xA1 && cp <= 0xFF && cp != 0xAD)) {
        return (int)cp;
    }
    return -1;
}

static void try_bigram(const struct eng_tokenizer *t, const char *text, struct tok_sym *sym,
                       struct tok_heap *heap, int32_t left, int32_t right)
{
    if (left < 0 || right < 0) {
        return;
    }
    int32_t rank =
        tok_merge_rank(t, text + sym[left].off, sym[left].n, text + sym[right].off, sym[right].n);
    if (rank < 0) {
        return;
    }
    struct tok_bigram b = {(double)rank, left, right, sym[left].n + sym[right].n};
    tok_heap_push(heap, b);
}

static void emit_symbol(const struct eng_tokenizer *t, const char *p, size_t n, struct tok_out *out)
{
    int32_t id = tok_find(t, p, n);
    if (id >= 0) {
        tok_out_push(out, id);
        return;
    }
    /* Not in the vocabulary: llama.cpp emits the tokens of its single bytes, if any. */
    for (size_t j = 0; j < n; j++) {
        int32_t b = tok_find(t, p + j, 1);
        if (b >= 0) {
            tok_out_push(out, b);
        }
    }
}

void tok_bpe_encode_word(const struct eng_tokenizer *t, const char *word, size_t len, char *work,
                         struct tok_sym *sym, struct tok_heap *heap, struct tok_out *out)
{
    size_t wl = 0;
    int32_t n_sym = 0;
    for (size_t i = 0; i < len; i++) {
        size_t n = eng_utf8_encode(tok_byte_to_cp((uint8_t)word[i]), work + wl);
        sym[n_sym].off = (uint32_t)wl;
        sym[n_sym].n = (uint32_t)n;
        sym[n_sym].prev = n_sym - 1;
        sym[n_sym].next = i + 1 == len ? -1 : n_sym + 1;
        n_sym++;
        wl += n;
    }
    if (n_sym == 0) {
        return;
    }
    if (t->ignore_merges) {
        int32_t id = tok_find(t, work, wl);
        if (id >= 0) {
            tok_out_push(out, id);
            return;
        }
    }
    heap->n = 0;
    for (int32_t i = 1; i < n_sym; i++) {
        try_bigram(t, work, sym, heap, i - 1, i);
    }
    while (heap->n > 0) {
        struct tok_bigram b = tok_heap_pop(heap);
        struct tok_sym *l = &sym[b.left], *r = &sym[b.right];
        if (l->n == 0 || r->n == 0 || l->n + r->n != b.size) {
            continue;
        }
        l->n += r->n;
        r->n = 0;
        l->next = r->next;
        if (r->next >= 0) {
            sym[r->next].prev = b.left;
        }
        try_bigram(t, work, sym, heap, l->prev, b.left);
        try_bigram(t, work, sym, heap, b.left, l->next);
    }
    for (int32_t i = 0; i != -1; i = sym[i].next) {
        emit_symbol(t, work + sym[i].off, sym[i].n, out);
    }
}
