/* The vocabulary mask of constrained decoding, one per context, used by the thread that steps
 * the context. At creation every token's text goes into a byte trie (tokens sorted by their
 * bytes, so the trie is built in one pass); a mask is one depth-first walk of that trie that
 * feeds each edge's byte to a copy of the parent's matcher state and skips the subtree as
 * soon as a byte is rejected, so the cost follows the number of still-possible prefixes
 * rather than the vocabulary size. The walk's states live in buffers sized at creation (one
 * per trie depth): computing a mask allocates nothing. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "common/log.h"
#include "local-engine/constrain_internal.h"

#define CM_PIECE_MAX 512 /* longer tokens are never allowed */

struct tnode {
    int32_t child, sibling; /* first child, next sibling (sorted by byte); -1: none */
    int32_t tok_lo, tok_hi; /* sorted[tok_lo..tok_hi): tokens whose text ends here */
    uint8_t byte;
};

/* A trie over some of the tokens. */
struct trie {
    int32_t *sorted; /* ids, sorted by text */
    int32_t n_sorted;
    struct tnode *node; /* node 0 is the root */
    int32_t n_node;
};

struct eng_cmask {
    int32_t n_vocab;
    uint8_t *bytes; /* every token's text */
    uint32_t *off;  /* (n_vocab) its offset in bytes */
    uint16_t *len;  /* (n_vocab) its length (0: never allowed) */
    uint8_t *eog;   /* (n_vocab) end-of-generation tokens */
    /* Tokens that are plain string content (printable, no '"' or '\\', whole UTF-8
     * characters) are allowed all at once inside a string: only the other trie is walked. */
    struct trie plain, other;
    uint32_t *plain_bits;      /* (n_vocab bits) */
    uint16_t *plain_n;         /* (n_vocab) code points of each plain token */
    uint32_t plain_chars_max;  /* most code points in a plain token */
    uint32_t depth_max;        /* longest text */
    uint32_t *allowed;         /* (n_vocab bits) the last computed mask */
    struct eng_cstate *states; /* (depth_max + 1) walk scratch */
    int32_t *path;             /* (depth_max + 1) */
};

struct sort_ent {
    const uint8_t *p;
    uint32_t len;
    int32_t id;
};

static int sort_ent_cmp(const void *a, const void *b)
{
    const struct sort_ent *x = a, *y = b;
    uint32_t n = x->len < y->len ? x->len : y->len;
    int r = memcmp(x->p, y->p, n);
    if (r) {
        return r;
    }
    if (x->len != y->len) {
        return x->len < y->len ? -1 : 1;
    }
    return x->id < y->id ? -1 : (x->id > y->id ? 1 : 0);
}

void eng_cmask_destroy(struct eng_cmask *m)
{
    if (!m) {
        return;
    }
    wye_free(m->bytes);
    wye_free(m->off);
    wye_free(m->len);
    wye_free(m->eog);
    wye_free(m->plain.sorted);
    wye_free(m->plain.node);
    wye_free(m->other.sorted);
    wye_free(m->other.node);
    wye_free(m->plain_bits);
    wye_free(m->plain_n);
    wye_free(m->allowed);
    wye_free(m->states);
    wye_free(m->path);
    wye_free(m);
}

/* Builds t->node over t->sorted (tokens in byte order) holding total bytes of text. */
static enum wye_err build_trie(struct eng_cmask *m, struct trie *t, size_t total)
{
    /* At most one node per byte of text plus the root. */
    t->node = wye_calloc(total + 1, sizeof(*t->node));
    int32_t *last = wye_calloc((size_t)m->depth_max + 2, sizeof(int32_t)); /* last child */
    if (!t->node || !last) {
        wye_free(last);
        return WYE_ERR_NOMEM;
    }
    struct tnode *T = t->node;
    T[0] = (struct tnode){-1, -1, 0, 0, 0};
    t->n_node = 1;
    m->path[0] = 0;
    last[0] = -1;
    const uint8_t *prev = NULL;
    uint32_t prev_len = 0;
    for (int32_t i = 0; i < t->n_sorted; i++) {
        int32_t id = t->sorted[i];
        const uint8_t *p = m->bytes + m->off[id];
        uint32_t len = m->len[id];
        uint32_t lcp = 0;
        while (prev && lcp < len && lcp < prev_len && p[lcp] == prev[lcp]) {
            lcp++;
        }
        for (uint32_t d = lcp; d < len; d++) {
            int32_t parent = m->path[d];
            int32_t k = t->n_node++;
            T[k] = (struct tnode){-1, -1, 0, 0, p[d]};
            if (T[parent].child < 0) {
                T[parent].child = k;
            } else {
                T[last[d]].sibling = k;
            }
            last[d] = k;
            m->path[d + 1] = k;
            last[d + 1] = -1;
        }
        struct tnode *end = &T[m->path[len]];
        if (end->tok_hi == end->tok_lo) {
            end->tok_lo = i;
        }
        end->tok_hi = i + 1;
        prev = p;
        prev_len = len;
    }
    wye_free(last);
    return WYE_OK;
}

/* Code points of p[0..n) if it is plain string content (see struct eng_cmask), else 0. */
static uint32_t plain_chars(const uint8_t *p, size_t n)
{
    uint32_t chars = 0;
    for (size_t i = 0; i < n; chars++) {
        uint8_t b = p[i];
        size_t k;
        uint8_t lo = 0x80, hi = 0xBF;
        if (b < 0x80) {
            if (b < 0x20 || b == '"' || b == '\\') {
                return 0;
            }
            i++;
            continue;
        }
        if (b >= 0xC2 && b <= 0xDF) {
            k = 1;
        } else if (b >= 0xE0 && b <= 0xEF) {
            k = 2;
            lo = b == 0xE0 ? 0xA0 : 0x80;
            hi = b == 0xED ? 0x9F : 0xBF;
        } else if (b >= 0xF0 && b <= 0xF4) {
            k = 3;
            lo = b == 0xF0 ? 0x90 : 0x80;
            hi = b == 0xF4 ? 0x8F : 0xBF;
        } else {
            return 0;
        }
        if (i + k >= n) {
            return 0; /* truncated */
        }
        for (size_t j = 1; j <= k; j++) {
            if (p[i + j] < lo || p[i + j] > hi) {
                return 0;
            }
            lo = 0x80;
            hi = 0xBF;
        }
        i += k + 1;
    }
    return chars;
}

enum wye_err eng_cmask_create(int32_t n_vocab,
                              size_t (*piece)(void *arg, int32_t id, char *buf, size_t n),
                              bool (*is_eog)(void *arg, int32_t id), void *arg,
                              struct eng_cmask **out, char *errbuf, size_t errlen)
{
    *out = NULL;
    if (n_vocab <= 0) {
        snprintf(errbuf, errlen, "empty vocabulary");
        return WYE_ERR_INVAL;
    }
    enum wye_err e = WYE_ERR_NOMEM;
    struct sort_ent *ents = NULL;
    struct eng_cmask *m = wye_calloc(1, sizeof(*m));
    if (!m) {
        goto fail;
    }
    m->n_vocab = n_vocab;
    m->off = wye_calloc((size_t)n_vocab, sizeof(*m->off));
    m->len = wye_calloc((size_t)n_vocab, sizeof(*m->len));
    m->eog = wye_calloc((size_t)n_vocab, 1);
    m->allowed = wye_calloc(((size_t)n_vocab + 31) / 32, sizeof(uint32_t));
    if (!m->off || !m->len || !m->eog || !m->allowed) {
        goto fail_mask;
    }
    size_t total = 0, cap = (size_t)n_vocab * 8;
    m->bytes = wye_malloc(cap);
    if (!m->bytes) {
        goto fail_mask;
    }
    char buf[CM_PIECE_MAX];
    int32_t n_text = 0;
    for (int32_t id = 0; id < n_vocab; id++) {
        m->eog[id] = is_eog(arg, id);
        size_t len = m->eog[id] ? 0 : piece(arg, id, buf, sizeof(buf));
        if (len == 0 || len > sizeof(buf)) {
            continue; /* no text (control tokens) or too long: never allowed */
        }
        if (total + len > cap) {
            size_t ncap = cap * 2 + len;
            uint8_t *nb = wye_realloc(m->bytes, ncap);
            if (!nb) {
                goto fail_mask;
            }
            m->bytes = nb;
            cap = ncap;
        }
        memcpy(m->bytes + total, buf, len);
        m->off[id] = (uint32_t)total;
        m->len[id] = (uint16_t)len;
        total += len;
        m->depth_max = (uint32_t)len > m->depth_max ? (uint32_t)len : m->depth_max;
        n_text++;
    }
    m->plain.sorted = wye_calloc((size_t)n_text + 1, sizeof(int32_t));
    m->other.sorted = wye_calloc((size_t)n_text + 1, sizeof(int32_t));
    m->plain_bits = wye_calloc(((size_t)n_vocab + 31) / 32, sizeof(uint32_t));
    m->plain_n = wye_calloc((size_t)n_vocab, sizeof(uint16_t));
    ents = wye_calloc((size_t)n_text + 1, sizeof(*ents));
    m->states = wye_calloc((size_t)m->depth_max + 2, sizeof(*m->states));
    m->path = wye_calloc((size_t)m->depth_max + 2, sizeof(*m->path));
    if (!m->plain.sorted || !m->other.sorted || !m->plain_bits || !m->plain_n || !ents ||
        !m->states || !m->path) {
        goto fail_mask;
    }
    int32_t k = 0;
    for (int32_t id = 0; id < n_vocab; id++) {
        if (m->len[id]) {
            ents[k++] = (struct sort_ent){m->bytes + m->off[id], m->len[id], id};
        }
    }
    qsort(ents, (size_t)n_text, sizeof(*ents), sort_ent_cmp);
    size_t plain_total = 0, other_total = 0;
    for (int32_t i = 0; i < n_text; i++) {
        int32_t id = ents[i].id;
        uint32_t chars = plain_chars(ents[i].p, ents[i].len);
        if (chars) {
            m->plain.sorted[m->plain.n_sorted++] = id;
            m->plain_bits[id >> 5] |= 1u << (id & 31);
            m->plain_n[id] = (uint16_t)chars; /* <= CM_PIECE_MAX */
            m->plain_chars_max = chars > m->plain_chars_max ? chars : m->plain_chars_max;
            plain_total += ents[i].len;
        } else {
            m->other.sorted[m->other.n_sorted++] = id;
            other_total += ents[i].len;
        }
    }
    wye_free(ents);
    ents = NULL;
    if (build_trie(m, &m->plain, plain_total) || build_trie(m, &m->other, other_total)) {
        goto fail_mask;
    }
    /* The budget rule counts one token per byte of the shortest completion, which is ASCII
     * (brackets, quotes, digits, literals, declared keys): say so if such a byte has no
     * token of its own (byte-fallback SPM and byte-level BPE vocabularies have all). */
    bool single[128] = {false};
    for (int32_t id = 0; id < n_vocab; id++) {
        if (m->len[id] == 1 && m->bytes[m->off[id]] < 128) {
            single[m->bytes[m->off[id]]] = true;
        }
    }
    for (int b = 0x20; b < 0x7F; b++) {
        if (!single[b]) {
            WYE_WARN("constrained decoding: no token is the single byte 0x%02x: an answer cut "
                     "short by max_tokens may be left unclosed",
                     b);
            break;
        }
    }
    *out = m;
    return WYE_OK;
fail_mask:
    wye_free(ents);
    eng_cmask_destroy(m);
fail:
    snprintf(errbuf, errlen, "out of memory for the vocabulary trie (%d tokens)", n_vocab);
    return e;
}

int32_t eng_cmask_n_vocab(const struct eng_cmask *m)
{
    return m->n_vocab;
}

size_t eng_cmask_mem(const struct eng_cmask *m)
{
    size_t n = (size_t)m->n_vocab;
    size_t total = 0;
    for (int32_t id = 0; id < m->n_vocab; id++) {
        total += m->len[id];
    }
    return sizeof(*m) + total + n * (sizeof(*m->off) + sizeof(*m->len) + 1 + sizeof(*m->plain_n)) +
           (size_t)(m->plain.n_sorted + m->other.n_sorted) * sizeof(int32_t) +
           (size_t)(m->plain.n_node + m->other.n_node) * sizeof(struct tnode) +
           2 * ((n + 31) / 32) * sizeof(uint32_t) +
           ((size_t)m->depth_max + 2) * (sizeof(struct eng_cstate) + sizeof(int32_t));
}

bool eng_cmask_is_eog(const struct eng_cmask *m, int32_t id)
{
    return id >= 0 && id < m->n_vocab && m->eog[id];
}

/* Marks the tokens of t that st takes (within limit for the completion afterwards). */
static int32_t walk(struct eng_cmask *m, const struct trie *t, const struct eng_constraint *c,
                    const struct eng_cstate *st, uint32_t limit)
{
    const struct tnode *T = t->node;
    int32_t count = 0;
    eng_cstate_copy(&m->states[0], st);
    int32_t d = 0;
    int32_t n = T[0].child;
    for (;;) {
        if (n < 0) {
            if (d == 0) {
                break;
            }
            d--;
            n = T[m->path[d]].sibling;
            continue;
        }
        struct eng_cstate *s = &m->states[d + 1];
        eng_cstate_copy(s, &m->states[d]);
        if (!eng_cstate_feed(c, s, T[n].byte)) {
            n = T[n].sibling;
            continue;
        }
        if (T[n].tok_hi > T[n].tok_lo &&
            (limit == CN_UNBOUNDED || eng_cstate_min_close(c, s) <= limit)) {
            for (int32_t i = T[n].tok_lo; i < T[n].tok_hi; i++) {
                int32_t id = t->sorted[i];
                m->allowed[id >> 5] |= 1u << (id & 31);
                count++;
            }
        }
        if (T[n].child >= 0) {
            m->path[d] = n;
            d++;
            n = T[n].child;
        } else {
            n = T[n].sibling;
        }
    }
    return count;
}

int32_t eng_cmask_compute(struct eng_cmask *m, const struct eng_constraint *c,
                          const struct eng_cstate *st, int32_t budget)
{
    memset(m->allowed, 0, ((size_t)m->n_vocab + 31) / 32 * sizeof(uint32_t));
    int32_t count = 0;
    uint32_t close_now = eng_cstate_min_close(c, st);
    /* Under a budget, a token must leave a completion that fits in the tokens after it
     * (every byte has a single-byte token, so bytes bound tokens). */
    uint32_t limit = budget > 0 ? (uint32_t)(budget - 1) : CN_UNBOUNDED;
    if (close_now == 0) {
        for (int32_t id = 0; id < m->n_vocab; id++) {
            if (m->eog[id]) {
                m->allowed[id >> 5] |= 1u << (id & 31);
                count++;
            }
        }
    }
    /* Inside a string, at a character boundary, with room for any plain token: every plain
     * token is allowed (it only adds characters, which never lengthens the completion). */
    const struct eng_cframe *top = st->sp ? &st->f[st->sp - 1] : NULL;
    const struct cnode *tn = top ? &c->nodes[top->node] : NULL;
    bool in_chars = tn && tn->kind == CN_STRING && top->ph == 1 /* S_CHARS */ &&
                    (limit == CN_UNBOUNDED || close_now <= limit);
    uint32_t room = in_chars && tn->hi != CN_UNBOUNDED ? tn->hi - top->c : CN_UNBOUNDED;
    if (in_chars && room >= m->plain_chars_max) {
        size_t words = ((size_t)m->n_vocab + 31) / 32;
        for (size_t w = 0; w < words; w++) {
            m->allowed[w] |= m->plain_bits[w];
        }
        count += m->plain.n_sorted;
    } else if (in_chars) {
        /* Under maxLength: the plain tokens that fit in the room left. */
        for (int32_t i = 0; i < m->plain.n_sorted; i++) {
            int32_t id = m->plain.sorted[i];
            if (m->plain_n[id] <= room) {
                m->allowed[id >> 5] |= 1u << (id & 31);
                count++;
            }
        }
    } else {
        count += walk(m, &m->plain, c, st, limit);
    }
    count += walk(m, &m->other, c, st, limit);
    return count;
}

bool eng_cmask_allowed(const struct eng_cmask *m, int32_t id)
{
    return id >= 0 && id < m->n_vocab && ((m->allowed[id >> 5] >> (id & 31)) & 1u);
}

void eng_cmask_apply(const struct eng_cmask *m, float *logits, int32_t n)
{
    if (n > m->n_vocab) {
        n = m->n_vocab;
    }
    for (int32_t i = 0; i < n; i += 32) {
        uint32_t w = m->allowed[i >> 5];
        if (w == 0xFFFFFFFFu) {
            continue;
        }
        int32_t end = i + 32 < n ? i + 32 : n;
        for (int32_t j = i; j < end; j++) {
            if (!((w >> (j & 31)) & 1u)) {
                logits[j] = -INFINITY;
            }
        }
    }
}

bool eng_cmask_advance(const struct eng_cmask *m, const struct eng_constraint *c,
                       struct eng_cstate *st, int32_t id)
{
    if (id < 0 || id >= m->n_vocab) {
        return false;
    }
    if (m->eog[id]) {
        return eng_cstate_min_close(c, st) == 0;
    }
    if (m->len[id] == 0) {
        return false;
    }
    return eng_cstate_feed_n(c, st, m->bytes + m->off[id], m->len[id]);
}
