/* Encoding entry point: splits the input around special tokens the way llama.cpp does (each
 * special token, longest text first, is searched in every remaining raw-text fragment), then
 * encodes each raw fragment with SPM (space escaping, prefix space after a special token or
 * at the start) or with the pre-tokenizer + byte-level BPE. Caller's thread; scratch is
 * allocated per call, proportional to the input length only. */
#include <string.h>

#include "common/alloc.h"
#include "local-engine/tok_internal.h"

#define TOK_INPUT_MAX (4u << 20) /* bytes per call: bounds the scratch (~110 bytes/byte) */

struct frag {
    size_t off, len;
    int32_t id; /* >= 0: a special token; -1: raw text */
};

struct frags {
    struct frag *v, *tmp;
    size_t n, cap;
};

static bool is_space_ascii(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

static enum wye_err frags_reserve(struct frags *f, size_t need)
{
    if (need <= f->cap) {
        return WYE_OK;
    }
    size_t cap = f->cap ? f->cap : 16;
    while (cap < need) {
        cap *= 2;
    }
    struct frag *v = wye_realloc(f->v, cap * sizeof(*v));
    if (v == NULL) {
        return WYE_ERR_NOMEM;
    }
    f->v = v;
    struct frag *tmp = wye_realloc(f->tmp, cap * sizeof(*tmp));
    if (tmp == NULL) {
        return WYE_ERR_NOMEM;
    }
    f->tmp = tmp;
    f->cap = cap;
    return WYE_OK;
}

/* Splits every raw fragment of f around occurrences of special token id. */
static enum wye_err split_on(const struct eng_tokenizer *t, const char *text, struct frags *f,
                             int32_t id)
{
    const struct tok_token *tk = &t->tokens[id];
    const char *needle = t->text + tk->off;
    bool any = false;
    for (size_t i = 0; i < f->n && !any; i++) {
        any = f->v[i].id < 0 && f->v[i].len >= tk->len &&
              memmem(text + f->v[i].off, f->v[i].len, needle, tk->len) != NULL;
    }
    if (!any) {
        return WYE_OK;
    }
    size_t m = 0;
    for (size_t i = 0; i < f->n; i++) {
        struct frag fr = f->v[i];
        if (fr.id >= 0) {
            enum wye_err err = frags_reserve(f, m + 1);
            if (err) {
                return err;
            }
            f->tmp[m++] = fr;
            continue;
        }
        size_t pos = fr.off, end = fr.off + fr.len;
        while (pos < end) {
            const char *hit = memmem(text + pos, end - pos, needle, tk->len);
            enum wye_err err = frags_reserve(f, m + 2);
            if (err) {
                return err;
            }
            if (hit == NULL) {
                f->tmp[m++] = (struct frag){pos, end - pos, -1};
                break;
            }
            size_t h = (size_t)(hit - text);
            if (h > pos) {
                f->tmp[m++] = (struct frag){pos, h - pos, -1};
            }
            f->tmp[m++] = (struct frag){h, tk->len, id};
            pos = h + tk->len;
            if (tk->flags & TOK_F_RSTRIP) {
                while (pos < end && is_space_ascii(text[pos])) {
                    pos++;
                }
            }
        }
    }
    struct frag *v = f->v;
    f->v = f->tmp;
    f->tmp = v;
    f->n = m;
    return WYE_OK;
}

enum wye_err eng_tokenize(const struct eng_tokenizer *t, const char *text, size_t len,
                          bool add_special, bool parse_special, int32_t *ids, size_t n_max,
                          size_t *n_out)
{
    *n_out = 0;
    if (len > TOK_INPUT_MAX) {
        return WYE_ERR_TOOBIG;
    }
    struct tok_out out = {ids, n_max, 0};
    struct frags f = {0};
    enum wye_err err = WYE_OK;
    char *work = NULL;
    struct tok_sym *sym = NULL;
    struct tok_bigram *heapv = NULL;
    uint32_t *cps = NULL, *offs = NULL;
    size_t *ends = NULL;

    if (add_special && t->add_bos && t->bos >= 0) {
        tok_out_push(&out, t->bos);
    }
    if (len > 0) {
        err = frags_reserve(&f, 1);
        if (err) {
            goto done;
        }
        f.v[0] = (struct frag){0, len, -1};
        f.n = 1;
        for (size_t i = 0; i < t->n_special; i++) {
            uint8_t ty = t->tokens[t->special[i]].type;
            if (!parse_special && ty != TOK_TYPE_USER_DEFINED) {
                continue;
            }
            err = split_on(t, text, &f, t->special[i]);
            if (err) {
                goto done;
            }
        }
        /* Scratch for the largest raw fragment. */
        size_t n_work = 3 * len + 3; /* SPM: escaped text; BPE: byte-level word (2x) */
        size_t n_sym = len + 1;      /* one symbol per character (or byte), plus SPM's prefix */
        work = wye_malloc(n_work);
        sym = wye_malloc(n_sym * sizeof(*sym));
        heapv = wye_malloc(3 * n_sym * sizeof(*heapv));
        if (work == NULL || sym == NULL || heapv == NULL) {
            err = WYE_ERR_NOMEM;
            goto done;
        }
        if (t->kind == TOK_KIND_BPE) {
            cps = wye_malloc((len + 1) * sizeof(*cps));
            offs = wye_malloc((len + 1) * sizeof(*offs));
            ends = wye_malloc((len + 1) * sizeof(*ends));
            if (cps == NULL || offs == NULL || ends == NULL) {
                err = WYE_ERR_NOMEM;
                goto done;
            }
        }
        struct tok_heap heap = {heapv, 0, 3 * n_sym};
        bool prev_special = true; /* SPM: a prefix space at the start and after specials */
        for (size_t i = 0; i < f.n; i++) {
            const struct frag *fr = &f.v[i];
            if (fr->id >= 0) {
                tok_out_push(&out, fr->id);
                prev_special = true;
                continue;
            }
            const char *p = text + fr->off;
            if (t->kind == TOK_KIND_SPM) {
                size_t wl = 0;
                if (t->add_space_prefix && prev_special) {
                    memcpy(work + wl, "\xe2\x96\x81", 3);
                    wl += 3;
                }
                for (size_t j = 0; j < fr->len; j++) {
                    if (p[j] == ' ') {
                        memcpy(work + wl, "\xe2\x96\x81", 3);
                        wl += 3;
                    } else {
                        work[wl++] = p[j];
                    }
                }
                tok_spm_encode(t, work, wl, sym, &heap, &out);
            } else {
                size_t k = tok_pretokenize(t->pre, p, fr->len, cps, offs, ends);
                size_t start = 0;
                for (size_t j = 0; j < k; j++) {
                    tok_bpe_encode_word(t, p + start, ends[j] - start, work, sym, &heap, &out);
                    start = ends[j];
                }
            }
            prev_special = false;
        }
    }
    if (add_special && t->add_eos && t->eos >= 0) {
        tok_out_push(&out, t->eos);
    }
    *n_out = out.n;
    if (out.n > n_max) {
        err = WYE_ERR_TOOBIG;
    }
done:
    wye_free(f.v);
    wye_free(f.tmp);
    wye_free(work);
    wye_free(sym);
    wye_free(heapv);
    wye_free(cps);
    wye_free(offs);
    wye_free(ends);
    return err;
}
