/* The tokenizer's entry file: builds a tokenizer from GGUF metadata (token texts, types,
 * scores, merges, special ids, add_bos/eos), owns the lookup tables (open-addressing hash of
 * token text -> id, and of merge pair -> rank), splits input text around special tokens,
 * dispatches to SPM (tok_spm.c) or byte-level BPE (tok_pretok.c + tok_bpe.c), and renders
 * tokens back to bytes (pieces and the streaming detokenizer).
 *
 * DESIGN: everything is copied out of the GGUF mapping into three flat arrays (token table,
 * token text, merge text) plus two hash tables sized to a power of two >= 2x the entries,
 * so loading a 150k-token vocabulary is a few linear passes. A loaded tokenizer is never
 * modified: eng_tokenize allocates its scratch per call (proportional to the input only), so
 * any thread may encode or decode concurrently. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "local-engine/gguf.h"
#include "local-engine/tok_internal.h"
#include "local-engine/unicode.h"

#define TOK_VOCAB_MAX 0x7FFFFFF0u /* ids must fit int32 */

uint64_t tok_hash_bytes(uint64_t h, const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)p[i];
        h *= 0x100000001b3ull;
    }
    return h;
}

static uint64_t hash_pair(const char *l, size_t nl, const char *r, size_t nr)
{
    uint64_t h = tok_hash_bytes(TOK_HASH_SEED, l, nl);
    h = (h ^ 0xFFu) * 0x100000001b3ull; /* separator, so "ab"+"c" != "a"+"bc" */
    return tok_hash_bytes(h, r, nr);
}

/* Table entries carry the hash's top 32 bits so that probing rarely touches the token or
 * merge arrays (each of those touches is a likely cache miss in a 150k-entry table). */
#define TAG(h) ((h)&0xFFFFFFFF00000000ull)

int32_t tok_find(const struct eng_tokenizer *t, const char *s, size_t len)
{
    uint64_t h = tok_hash_bytes(TOK_HASH_SEED, s, len);
    size_t i = (size_t)h & t->tok_hash_mask;
    for (;;) {
        uint64_t v = t->tok_hash[i];
        if (v == 0) {
            return -1;
        }
        if (TAG(v) == TAG(h)) {
            uint32_t id = (uint32_t)v - 1;
            const struct tok_token *tk = &t->tokens[id];
            if (tk->len == len && memcmp(t->text + tk->off, s, len) == 0) {
                return (int32_t)id;
            }
        }
        i = (i + 1) & t->tok_hash_mask;
    }
}

int32_t tok_merge_rank(const struct eng_tokenizer *t, const char *l, size_t nl, const char *r,
                       size_t nr)
{
    if (t->merge_hash == NULL) {
        return -1;
    }
    uint64_t h = hash_pair(l, nl, r, nr);
    size_t i = (size_t)h & t->merge_hash_mask;
    for (;;) {
        uint64_t v = t->merge_hash[i];
        if (v == 0) {
            return -1;
        }
        if (TAG(v) == TAG(h)) {
            uint32_t rank = (uint32_t)v - 1;
            const struct tok_merge *m = &t->merges[rank];
            const char *p = t->merge_text + m->off;
            if (m->n_left == nl && m->n_right == nr && memcmp(p, l, nl) == 0 &&
                memcmp(p + nl + 1, r, nr) == 0) {
                return (int32_t)rank;
            }
        }
        i = (i + 1) & t->merge_hash_mask;
    }
}

/* ---- priority queue ---- */

static bool bigram_less(const struct tok_bigram *a, const struct tok_bigram *b)
{
    return a->key < b->key || (a->key == b->key && a->left < b->left);
}

void tok_heap_push(struct tok_heap *h, struct tok_bigram b)
{
    WYE_ASSERT(h->n < h->cap);
    size_t i = h->n++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!bigram_less(&b, &h->v[p])) {
            break;
        }
        h->v[i] = h->v[p];
        i = p;
    }
    h->v[i] = b;
}

struct tok_bigram tok_heap_pop(struct tok_heap *h)
{
    struct tok_bigram top = h->v[0];
    struct tok_bigram last = h->v[--h->n];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= h->n) {
            break;
        }
        if (c + 1 < h->n && bigram_less(&h->v[c + 1], &h->v[c])) {
            c++;
        }
        if (!bigram_less(&h->v[c], &last)) {
            break;
        }
        h->v[i] = h->v[c];
        i = c;
    }
    if (h->n > 0) {
        h->v[i] = last;
    }
    return top;
}

/* ---- loading ---- */

static void set_err(char *errbuf, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void set_err(char *errbuf, size_t errlen, const char *fmt, ...)
{
    if (errbuf == NULL || errlen == 0) {
        return;
    }
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(errbuf, errlen, fmt, ap);
    va_end(ap);
}

static size_t table_size(size_t n)
{
    size_t s = 16;
    while (s < 2 * n) {
        s *= 2;
    }
    return s;
}

static bool same_token(const void *ctx, uint32_t a, uint32_t b)
{
    const struct eng_tokenizer *t = ctx;
    const struct tok_token *x = &t->tokens[a], *y = &t->tokens[b];
    return x->len == y->len && memcmp(t->text + x->off, t->text + y->off, x->len) == 0;
}

static bool same_merge(const void *ctx, uint32_t a, uint32_t b)
{
    const struct eng_tokenizer *t = ctx;
    const struct tok_merge *x = &t->merges[a], *y = &t->merges[b];
    return x->n_left == y->n_left && x->n_right == y->n_right &&
           memcmp(t->merge_text + x->off, t->merge_text + y->off, x->n_left + 1 + x->n_right) == 0;
}

/* Inserts entries 0..n-1 with hashes hv into an open-addressing table; an entry equal to one
 * already present replaces it (replace) or is dropped. The slot a few entries ahead is
 * prefetched: at 150k entries nearly every first probe is a cache miss, and overlapping
 * them is what keeps loading fast. */
static void insert_all(uint64_t *tab, size_t mask, const uint64_t *hv, size_t n,
                       bool (*same)(const void *, uint32_t, uint32_t), const void *ctx,
                       bool replace)
{
    enum { AHEAD = 16 };
    for (size_t j = 0; j < n; j++) {
        if (j + AHEAD < n) {
            __builtin_prefetch(&tab[(size_t)hv[j + AHEAD] & mask], 1);
        }
        uint64_t h = hv[j];
        size_t i = (size_t)h & mask;
        for (;;) {
            uint64_t v = tab[i];
            if (v == 0) {
                tab[i] = TAG(h) | (j + 1);
                break;
            }
            if (TAG(v) == TAG(h) && same(ctx, (uint32_t)v - 1, (uint32_t)j)) {
                if (replace) {
                    tab[i] = TAG(h) | (j + 1);
                }
                break;
            }
            i = (i + 1) & mask;
        }
    }
}

static enum wye_err load_tokens(struct eng_tokenizer *t, const struct eng_gguf *g, char *errbuf,
                                size_t errlen)
{
    int64_t ki = eng_gguf_find(g, "tokenizer.ggml.tokens");
    enum eng_gguf_vtype et;
    uint64_t n;
    if (ki < 0 || !eng_gguf_kv_arr(g, ki, &et, &n) || et != ENG_GGUF_STRING) {
        set_err(errbuf, errlen, "tokenizer.ggml.tokens is missing or not a string array");
        return WYE_ERR_INVAL;
    }
    if (n == 0 || n > TOK_VOCAB_MAX) {
        set_err(errbuf, errlen, "tokenizer.ggml.tokens has %llu entries (need 1..%u)",
                (unsigned long long)n, TOK_VOCAB_MAX);
        return WYE_ERR_INVAL;
    }
    t->n_vocab = (int32_t)n;
    uint64_t total = 0;
    for (uint64_t j = 0; j < n; j++) {
        total += eng_gguf_kv_str(g, ki, j).len + 1;
        if (total > UINT32_MAX) {
            set_err(errbuf, errlen, "tokenizer.ggml.tokens: total text exceeds 4 GiB");
            return WYE_ERR_TOOBIG;
        }
    }
    t->tokens = wye_calloc(n, sizeof(*t->tokens));
    t->text = wye_malloc(total);
    size_t hs = table_size(n);
    t->tok_hash = wye_calloc(hs, sizeof(*t->tok_hash));
    uint64_t *hv = wye_malloc(n * sizeof(*hv));
    if (t->tokens == NULL || t->text == NULL || t->tok_hash == NULL || hv == NULL) {
        wye_free(hv);
        return WYE_ERR_NOMEM;
    }
    t->tok_hash_mask = hs - 1;
    uint32_t off = 0;
    for (uint64_t j = 0; j < n; j++) {
        struct eng_gguf_str s = eng_gguf_kv_str(g, ki, j);
        struct tok_token *tk = &t->tokens[j];
        if (s.len > 0) {
            memcpy(t->text + off, s.p, s.len);
        }
        t->text[off + s.len] = '\0';
        tk->off = off;
        tk->len = (uint32_t)s.len;
        tk->type = TOK_TYPE_NORMAL;
        off += (uint32_t)s.len + 1;
        if (s.len > t->piece_max) {
            t->piece_max = s.len;
        }
        hv[j] = tok_hash_bytes(TOK_HASH_SEED, s.p, s.len);
    }
    /* A duplicate text maps to the later id, as llama.cpp's map does. */
    insert_all(t->tok_hash, t->tok_hash_mask, hv, n, same_token, t, true);
    wye_free(hv);

    if (eng_gguf_get_arr(g, "tokenizer.ggml.scores", &et, &n)) {
        float *sc = wye_malloc((size_t)t->n_vocab * sizeof(float));
        if (sc == NULL) {
            return WYE_ERR_NOMEM;
        }
        if (n != (uint64_t)t->n_vocab || !eng_gguf_arr_f32(g, "tokenizer.ggml.scores", sc, n)) {
            wye_free(sc);
            set_err(errbuf, errlen, "tokenizer.ggml.scores: need %d numbers, found %llu of type %d",
                    t->n_vocab, (unsigned long long)n, (int)et);
            return WYE_ERR_INVAL;
        }
        for (int32_t j = 0; j < t->n_vocab; j++) {
            t->tokens[j].score = sc[j];
        }
        wye_free(sc);
    }
    if (eng_gguf_get_arr(g, "tokenizer.ggml.token_type", &et, &n)) {
        int32_t *ty = wye_malloc((size_t)t->n_vocab * sizeof(int32_t));
        if (ty == NULL) {
            return WYE_ERR_NOMEM;
        }
        if (n != (uint64_t)t->n_vocab || !eng_gguf_arr_i32(g, "tokenizer.ggml.token_type", ty, n)) {
            wye_free(ty);
            set_err(errbuf, errlen,
                    "tokenizer.ggml.token_type: need %d integers, found %llu of type %d",
                    t->n_vocab, (unsigned long long)n, (int)et);
            return WYE_ERR_INVAL;
        }
        for (int32_t j = 0; j < t->n_vocab; j++) {
            t->tokens[j].type =
                (ty[j] >= 0 && ty[j] <= TOK_TYPE_BYTE) ? (uint8_t)ty[j] : TOK_TYPE_UNDEFINED;
        }
        wye_free(ty);
    }
    return WYE_OK;
}

static enum wye_err load_merges(struct eng_tokenizer *t, const struct eng_gguf *g, char *errbuf,
                                size_t errlen)
{
    int64_t ki = eng_gguf_find(g, "tokenizer.ggml.merges");
    enum eng_gguf_vtype et;
    uint64_t n;
    if (ki < 0 || !eng_gguf_kv_arr(g, ki, &et, &n) || et != ENG_GGUF_STRING) {
        set_err(errbuf, errlen, "tokenizer.ggml.merges is missing or not a string array");
        return WYE_ERR_INVAL;
    }
    if (n > TOK_VOCAB_MAX) {
        set_err(errbuf, errlen, "tokenizer.ggml.merges has too many entries (%llu)",
                (unsigned long long)n);
        return WYE_ERR_TOOBIG;
    }
    uint64_t total = 0;
    for (uint64_t j = 0; j < n; j++) {
        total += eng_gguf_kv_str(g, ki, j).len + 1;
        if (total > UINT32_MAX) {
            set_err(errbuf, errlen, "tokenizer.ggml.merges: total text exceeds 4 GiB");
            return WYE_ERR_TOOBIG;
        }
    }
    size_t hs = table_size(n);
    t->merges = wye_calloc(n ? n : 1, sizeof(*t->merges));
    t->merge_text = wye_malloc(total ? total : 1);
    t->merge_hash = wye_calloc(hs, sizeof(*t->merge_hash));
    uint64_t *hv = wye_malloc((n ? n : 1) * sizeof(*hv));
    if (t->merges == NULL || t->merge_text == NULL || t->merge_hash == NULL || hv == NULL) {
        wye_free(hv);
        return WYE_ERR_NOMEM;
    }
    t->merge_hash_mask = hs - 1;
    t->n_merges = n;
    uint32_t off = 0;
    for (uint64_t j = 0; j < n; j++) {
        struct eng_gguf_str s = eng_gguf_kv_str(g, ki, j);
        /* "left right": the first space after the first byte separates them. */
        const char *sp = s.len > 1 ? memchr(s.p + 1, ' ', s.len - 1) : NULL;
        if (sp == NULL) {
            set_err(errbuf, errlen, "tokenizer.ggml.merges[%llu] has no space separating a pair",
                    (unsigned long long)j);
            wye_free(hv);
            return WYE_ERR_PARSE;
        }
        struct tok_merge *m = &t->merges[j];
        memcpy(t->merge_text + off, s.p, s.len);
        t->merge_text[off + s.len] = '\0';
        m->off = off;
        m->n_left = (uint32_t)(sp - s.p);
        m->n_right = (uint32_t)(s.len - m->n_left - 1);
        off += (uint32_t)s.len + 1;
        const char *p = t->merge_text + m->off;
        hv[j] = hash_pair(p, m->n_left, p + m->n_left + 1, m->n_right);
    }
    /* The first (lowest) rank of a duplicated pair wins. */
    insert_all(t->merge_hash, t->merge_hash_mask, hv, n, same_merge, t, false);
    wye_free(hv);
    return WYE_OK;
}

static int32_t get_id(const struct eng_gguf *g, const struct eng_tokenizer *t, const char *key,
                      int32_t dflt)
{
    int64_t v;
    if (!eng_gguf_get_i64(g, key, &v)) {
        return dflt;
    }
    if (v < 0 || v >= t->n_vocab) {
        return -1; /* llama.cpp ignores out-of-range ids too */
    }
    return (int32_t)v;
}

static int special_cmp(const void *a, const void *b, void *ctx)
{
    const struct eng_tokenizer *t = ctx;
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    uint32_t lx = t->tokens[x].len, ly = t->tokens[y].len;
    if (lx != ly) {
        return lx > ly ? -1 : 1;
    }
    return x < y ? -1 : x > y;
}

static bool ci_contains(const char *s, size_t n, const char *needle)
{
    size_t m = strlen(needle);
    for (size_t i = 0; i + m <= n; i++) {
        size_t k = 0;
        while (k < m && (s[i + k] | 0x20) == (needle[k] | 0x20)) {
            k++;
        }
        if (k == m) {
            return true;
        }
    }
    return false;
}

static enum wye_err load_specials(struct eng_tokenizer *t, const struct eng_gguf *g)
{
    static const char *const eog_texts[] = {
        "<|eot_id|>",
        "<|im_end|>",
        "<|end|>",
        "<end_of_turn>",
        "<|endoftext|>",
        "<|eom_id|>",
        "<EOT>",
        "_<EOT>",
        "<|end_of_text|>",
        "<|return|>",
        "<|call|>",
        "<\uff5cend\u2581of\u2581sentence\uff5c>", /* DeepSeek's fullwidth-bar end of sentence */
    };
    size_t n = 0;
    for (int32_t i = 0; i < t->n_vocab; i++) {
        uint8_t ty = t->tokens[i].type;
        if ((ty == TOK_TYPE_CONTROL || ty == TOK_TYPE_USER_DEFINED || ty == TOK_TYPE_UNKNOWN) &&
            t->tokens[i].len > 0) {
            n++;
        }
    }
    t->special = wye_malloc((n ? n : 1) * sizeof(int32_t));
    if (t->special == NULL) {
        return WYE_ERR_NOMEM;
    }
    for (int32_t i = 0; i < t->n_vocab; i++) {
        uint8_t ty = t->tokens[i].type;
        if ((ty == TOK_TYPE_CONTROL || ty == TOK_TYPE_USER_DEFINED || ty == TOK_TYPE_UNKNOWN) &&
            t->tokens[i].len > 0) {
            t->special[t->n_special++] = i;
        }
    }
    qsort_r(t->special, t->n_special, sizeof(int32_t), special_cmp, t);

    for (size_t i = 0; i < sizeof(eog_texts) / sizeof(eog_texts[0]); i++) {
        int32_t id = tok_find(t, eog_texts[i], strlen(eog_texts[i]));
        if (id >= 0 && t->tokens[id].type != TOK_TYPE_NORMAL) {
            t->tokens[id].flags |= TOK_F_EOG;
            if (t->eot < 0 && strcmp(eog_texts[i], "<|eom_id|>") != 0) {
                t->eot = id;
            }
        }
    }
    if (t->eos >= 0) {
        t->tokens[t->eos].flags |= TOK_F_EOG;
    }
    if (t->eot >= 0) {
        t->tokens[t->eot].flags |= TOK_F_EOG;
    }
    if (t->eom >= 0) {
        t->tokens[t->eom].flags |= TOK_F_EOG;
    }

    /* Phi-3's tokenizer strips whitespace after its special tokens (llama.cpp sets this by
     * model name since GGUF does not carry the attribute). */
    struct eng_gguf_str name;
    if (eng_gguf_get_str(g, "general.name", &name) &&
        (ci_contains(name.p, name.len, "phi-3") || ci_contains(name.p, name.len, "phi3"))) {
        for (size_t i = 0; i < t->n_special; i++) {
            t->tokens[t->special[i]].flags |= TOK_F_RSTRIP;
        }
        static const char *const keep[] = {"<unk>", "<s>", "<|endoftext|>"};
        int32_t id = tok_find(t, "</s>", 4);
        if (id >= 0) {
            t->tokens[id].flags |= TOK_F_RSTRIP;
        }
        for (size_t i = 0; i < 3; i++) {
            id = tok_find(t, keep[i], strlen(keep[i]));
            if (id >= 0) {
                t->tokens[id].flags &= (uint8_t)~TOK_F_RSTRIP;
            }
        }
    }
    return WYE_OK;
}

enum wye_err eng_tokenizer_load(const struct eng_gguf *g, struct eng_tokenizer **out, char *errbuf,
                                size_t errlen)
{
    *out = NULL;
    set_err(errbuf, errlen, "ok");
    struct eng_gguf_str model;
    if (!eng_gguf_get_str(g, "tokenizer.ggml.model", &model)) {
        set_err(errbuf, errlen, "tokenizer.ggml.model is missing or not a string");
        return WYE_ERR_INVAL;
    }
    struct eng_tokenizer *t = wye_calloc(1, sizeof(*t));
    if (t == NULL) {
        return WYE_ERR_NOMEM;
    }
    enum wye_err err;
    if (eng_gguf_str_eq(model, "llama")) {
        t->kind = TOK_KIND_SPM;
        t->pre = TOK_PRE_NONE;
    } else if (eng_gguf_str_eq(model, "gpt2")) {
        t->kind = TOK_KIND_BPE;
        struct eng_gguf_str pre;
        t->pre = TOK_PRE_DEFAULT;
        if (eng_gguf_get_str(g, "tokenizer.ggml.pre", &pre) &&
            !tok_pre_from_name(pre.p, pre.len, &t->pre, &t->ignore_merges)) {
            set_err(errbuf, errlen, "tokenizer.ggml.pre \"%.*s\" is not a supported pre-tokenizer",
                    (int)(pre.len > 64 ? 64 : pre.len), pre.p);
            err = WYE_ERR_UNSUPPORTED;
            goto fail;
        }
    } else {
        set_err(errbuf, errlen, "tokenizer.ggml.model \"%.*s\" is not supported (llama, gpt2)",
                (int)(model.len > 64 ? 64 : model.len), model.p);
        err = WYE_ERR_UNSUPPORTED;
        goto fail;
    }
    err = load_tokens(t, g, errbuf, errlen);
    if (err) {
        goto fail;
    }
    if (t->kind == TOK_KIND_BPE) {
        err = load_merges(t, g, errbuf, errlen);
        if (err) {
            goto fail;
        }
    }
    bool spm = t->kind == TOK_KIND_SPM;
    t->bos = get_id(g, t, "tokenizer.ggml.bos_token_id", spm && t->n_vocab > 1 ? 1 : -1);
    t->eos = get_id(g, t, "tokenizer.ggml.eos_token_id", spm && t->n_vocab > 2 ? 2 : -1);
    t->unk = get_id(g, t, "tokenizer.ggml.unknown_token_id", spm ? 0 : -1);
    t->eot = get_id(g, t, "tokenizer.ggml.eot_token_id", -1);
    t->eom = get_id(g, t, "tokenizer.ggml.eom_token_id", -1);
    t->add_bos = spm || t->pre == TOK_PRE_LLAMA3;
    t->add_eos = false;
    t->add_space_prefix = spm;
    eng_gguf_get_bool(g, "tokenizer.ggml.add_bos_token", &t->add_bos);
    eng_gguf_get_bool(g, "tokenizer.ggml.add_eos_token", &t->add_eos);
    if (spm) {
        eng_gguf_get_bool(g, "tokenizer.ggml.add_space_prefix", &t->add_space_prefix);
    }
    for (int b = 0; b < 256; b++) {
        char buf[8];
        size_t n;
        if (spm) {
            n = (size_t)snprintf(buf, sizeof(buf), "<0x%02X>", b);
        } else {
            n = eng_utf8_encode(tok_byte_to_cp((uint8_t)b), buf);
        }
        t->byte_tok[b] = tok_find(t, buf, n);
    }
    err = load_specials(t, g);
    if (err) {
        goto fail;
    }
    *out = t;
    return WYE_OK;
fail:
    if (err == WYE_ERR_NOMEM) {
        set_err(errbuf, errlen, "out of memory loading the tokenizer");
    }
    eng_tokenizer_destroy(t);
    return err;
}

void eng_tokenizer_destroy(struct eng_tokenizer *t)
{
    if (t == NULL) {
        return;
    }
    wye_free(t->tokens);
    wye_free(t->text);
    wye_free(t->tok_hash);
    wye_free(t->merges);
    wye_free(t->merge_text);
    wye_free(t->merge_hash);
    wye_free(t->special);
    wye_free(t);
}

int32_t eng_tok_n_vocab(const struct eng_tokenizer *t)
{
    return t->n_vocab;
}
int32_t eng_tok_bos(const struct eng_tokenizer *t)
{
    return t->bos;
}
int32_t eng_tok_eos(const struct eng_tokenizer *t)
{
    return t->eos;
}
bool eng_tok_add_bos(const struct eng_tokenizer *t)
{
    return t->add_bos && t->bos >= 0;
}
bool eng_tok_add_eos(const struct eng_tokenizer *t)
{
    return t->add_eos && t->eos >= 0;
}
size_t eng_tok_piece_max(const struct eng_tokenizer *t)
{
    return t->piece_max;
}

bool eng_tok_is_eog(const struct eng_tokenizer *t, int32_t id)
{
    return id >= 0 && id < t->n_vocab && (t->tokens[id].flags & TOK_F_EOG) != 0;
}

const char *eng_tok_model_name(const struct eng_tokenizer *t)
{
    return t->kind == TOK_KIND_SPM ? "llama" : "gpt2";
}

const char *eng_tok_pre_name(const struct eng_tokenizer *t)
{
    return tok_pre_name(t->pre);
}

int32_t eng_tok_find(const struct eng_tokenizer *t, const char *s, size_t len)
{
    return tok_find(t, s, len);
}
