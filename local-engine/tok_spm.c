/* SentencePiece-style ("llama") encoding as llama.cpp's SPM tokenizer does it: split the
 * escaped text into UTF-8 characters, repeatedly merge the adjacent pair whose concatenation
 * is the best-scoring vocabulary token (ties: leftmost first), then emit each final symbol
 * as its token or, if it is not one, as byte-fallback tokens <0xXX> (or unknown).
 * Runs on the caller's thread with caller-provided scratch; no allocation. */
#include "local-engine/tok_internal.h"
#include "local-engine/unicode.h"

static void try_bigram(const struct eng_tokenizer *t, const char *text, struct tok_sym *sym,
                       struct tok_heap *heap, int32_t left, int32_t right)
{
    if (left < 0 || right < 0) {
        return;
    }
    size_t size = (size_t)sym[left].n + sym[right].n;
    int32_t id = tok_find(t, text + sym[left].off, size);
    if (id < 0) {
        return;
    }
    struct tok_bigram b = {-(double)t->tokens[id].score, left, right, (uint32_t)size};
    tok_heap_push(heap, b);
}

static void emit_symbol(const struct eng_tokenizer *t, const char *p, size_t n, struct tok_out *out)
{
    int32_t id = tok_find(t, p, n);
    if (id >= 0) {
        tok_out_push(out, id);
        return;
    }
    for (size_t j = 0; j < n; j++) {
        int32_t b = t->byte_tok[(uint8_t)p[j]];
        if (b >= 0) {
            tok_out_push(out, b);
        } else if (t->unk >= 0) {
            tok_out_push(out, t->unk);
        }
    }
}

void tok_spm_encode(const struct eng_tokenizer *t, const char *text, size_t len,
                    struct tok_sym *sym, struct tok_heap *heap, struct tok_out *out)
{
    int32_t n_sym = 0;
    for (size_t off = 0; off < len;) {
        /* One symbol per character; an invalid byte is a symbol of its own (llama.cpp
         * steps by the lead byte's length instead, which for invalid input can swallow
         * part of a following "▁"; for valid UTF-8 the two agree). This also bounds the
         * symbols by the input bytes + 1. */
        uint32_t cp;
        size_t n = eng_utf8_decode(text + off, len - off, &cp);
        sym[n_sym].off = (uint32_t)off;
        sym[n_sym].n = (uint32_t)n;
        sym[n_sym].prev = n_sym - 1;
        off += n;
        sym[n_sym].next = off == len ? -1 : n_sym + 1;
        n_sym++;
    }
    if (n_sym == 0) {
        return;
    }
    heap->n = 0;
    for (int32_t i = 1; i < n_sym; i++) {
        try_bigram(t, text, sym, heap, i - 1, i);
    }
    while (heap->n > 0) {
        struct tok_bigram b = tok_heap_pop(heap);
        struct tok_sym *l = &sym[b.left], *r = &sym[b.right];
        if (l->n == 0 || r->n == 0 || l->n + r->n != b.size) {
            continue; /* stale: one side was merged since */
        }
        l->n += r->n;
        r->n = 0;
        l->next = r->next;
        if (r->next >= 0) {
            sym[r->next].prev = b.left;
        }
        try_bigram(t, text, sym, heap, l->prev, b.left);
        try_bigram(t, text, sym, heap, b.left, l->next);
    }
    for (int32_t i = 0; i != -1; i = sym[i].next) {
        emit_symbol(t, text + sym[i].off, sym[i].n, out);
    }
}
