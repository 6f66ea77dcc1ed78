/* Token sampling for one sequence; run by the engine worker that owns the sequence.
 * Order: repetition penalty -> (greedy stops here) -> temperature -> top-k -> softmax ->
 * top-p -> min-p -> draw. Top-k and top-p use partial selection (quickselect on a
 * candidate array) so that a 150k vocabulary is not fully sorted per token. */
#include "local-engine/sampler.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"

struct cand {
    float logit; /* then probability */
    int32_t id;
};

struct eng_sampler {
    struct eng_sampler_params p;
    int32_t n_vocab;
    struct cand *cands; /* (n_vocab) */
    uint32_t *stamp;    /* (n_vocab) dedup marks for the penalty */
    uint32_t stamp_now;
    int32_t hist[ENG_SAMPLER_HISTORY_MAX]; /* ring of recent tokens */
    int32_t hist_n, hist_head;
    uint64_t rng[4];
};

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static uint64_t rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

static uint64_t next_u64(struct eng_sampler *s)
{
    uint64_t *st = s->rng;
    uint64_t result = rotl(st[1] * 5, 7) * 9;
    uint64_t t = st[1] << 17;
    st[2] ^= st[0];
    st[3] ^= st[1];
    st[1] ^= st[2];
    st[0] ^= st[3];
    st[2] ^= t;
    st[3] = rotl(st[3], 45);
    return result;
}

double eng_sampler_uniform(struct eng_sampler *s)
{
    return (double)(next_u64(s) >> 11) * (1.0 / 9007199254740992.0);
}

void eng_sampler_params_greedy(struct eng_sampler_params *p)
{
    memset(p, 0, sizeof(*p));
    p->temperature = 0.0f;
    p->top_p = 1.0f;
    p->repeat_penalty = 1.0f;
    p->repeat_last_n = 64;
}

enum wye_err eng_sampler_create(int32_t n_vocab, struct eng_sampler **out)
{
    *out = NULL;
    if (n_vocab <= 0) {
        return WYE_ERR_INVAL;
    }
    struct eng_sampler *s = wye_calloc(1, sizeof(*s));
    if (!s) {
        goto fail;
    }
    s->n_vocab = n_vocab;
    s->cands = wye_calloc((size_t)n_vocab, sizeof(*s->cands));
    if (!s->cands) {
        goto fail_sampler;
    }
    s->stamp = wye_calloc((size_t)n_vocab, sizeof(*s->stamp));
    if (!s->stamp) {
        goto fail_cands;
    }
    struct eng_sampler_params g;
    eng_sampler_params_greedy(&g);
    eng_sampler_reset(s, &g);
    *out = s;
    return WYE_OK;
fail_cands:
    wye_free(s->cands);
fail_sampler:
    wye_free(s);
fail:
    return WYE_ERR_NOMEM;
}

void eng_sampler_destroy(struct eng_sampler *s)
{
    if (!s) {
        return;
    }
    wye_free(s->stamp);
    wye_free(s->cands);
    wye_free(s);
}

void eng_sampler_reset(struct eng_sampler *s, const struct eng_sampler_params *p)
{
    s->p = *p;
    if (!(s->p.temperature > 0.0f)) { /* also catches NaN */
        s->p.temperature = 0.0f;
    }
    if (!(s->p.top_p > 0.0f) || s->p.top_p > 1.0f) {
        s->p.top_p = 1.0f;
    }
    if (!(s->p.min_p > 0.0f)) {
        s->p.min_p = 0.0f;
    }
    if (s->p.min_p > 1.0f) {
        s->p.min_p = 1.0f;
    }
    if (!(s->p.repeat_penalty > 0.0f)) {
        s->p.repeat_penalty = 1.0f;
    }
    if (s->p.repeat_last_n < 0) {
        s->p.repeat_last_n = 0;
    }
    if (s->p.repeat_last_n > ENG_SAMPLER_HISTORY_MAX) {
        s->p.repeat_last_n = ENG_SAMPLER_HISTORY_MAX;
    }
    if (s->p.top_k < 0) {
        s->p.top_k = 0;
    }
    uint64_t x = p->seed;
    for (int i = 0; i < 4; i++) {
        s->rng[i] = splitmix64(&x);
    }
    s->hist_n = 0;
    s->hist_head = 0;
}

void eng_sampler_accept(struct eng_sampler *s, int32_t id)
{
    s->hist[s->hist_head] = id;
    s->hist_head = (s->hist_head + 1) % ENG_SAMPLER_HISTORY_MAX;
    if (s->hist_n < ENG_SAMPLER_HISTORY_MAX) {
        s->hist_n++;
    }
}

static void apply_penalty(struct eng_sampler *s, float *logits, int32_t n)
{
    float r = s->p.repeat_penalty;
    int32_t last = s->p.repeat_last_n < s->hist_n ? s->p.repeat_last_n : s->hist_n;
    if (r == 1.0f || last == 0) {
        return;
    }
    if (++s->stamp_now == 0) { /* wrapped: clear the marks once every 4G tokens */
        memset(s->stamp, 0, (size_t)s->n_vocab * sizeof(*s->stamp));
        s->stamp_now = 1;
    }
    for (int32_t i = 0; i < last; i++) {
        int32_t idx =
            (s->hist_head - 1 - i + 2 * ENG_SAMPLER_HISTORY_MAX) % ENG_SAMPLER_HISTORY_MAX;
        int32_t id = s->hist[idx];
        if (id < 0 || id >= n || s->stamp[id] == s->stamp_now) {
            continue;
        }
        s->stamp[id] = s->stamp_now;
        logits[id] = logits[id] > 0.0f ? logits[id] / r : logits[id] * r;
    }
}

static bool cand_before(const struct cand *a, const struct cand *b)
{
    /* Descending by value; ties by lower id so the order is total and reproducible. */
    return a->logit > b->logit || (a->logit == b->logit && a->id < b->id);
}

/* Rearranges c[0..n) so that its k best (in cand_before order) come first, unordered. */
static void select_top(struct cand *c, int32_t n, int32_t k)
{
    int32_t lo = 0, hi = n - 1;
    while (lo < hi) {
        struct cand pivot = c[lo + (hi - lo) / 2];
        int32_t i = lo, j = hi;
        while (i <= j) {
            while (cand_before(&c[i], &pivot)) {
                i++;
            }
            while (cand_before(&pivot, &c[j])) {
                j--;
            }
            if (i <= j) {
                struct cand t = c[i];
                c[i] = c[j];
                c[j] = t;
                i++;
                j--;
            }
        }
        if (k - 1 <= j) {
            hi = j;
        } else if (k - 1 >= i) {
            lo = i;
        } else {
            break;
        }
    }
}

static int cand_cmp(const void *a, const void *b)
{
    const struct cand *x = a, *y = b;
    return cand_before(x, y) ? -1 : (cand_before(y, x) ? 1 : 0);
}

int32_t eng_sampler_sample(struct eng_sampler *s, float *logits, int32_t n)
{
    if (n > s->n_vocab) {
        n = s->n_vocab;
    }
    if (n <= 0) {
        return 0;
    }
    apply_penalty(s, logits, n);
    if (s->p.temperature == 0.0f) {
        int32_t best = 0;
        for (int32_t i = 1; i < n; i++) {
            if (logits[i] > logits[best]) {
                best = i;
            }
        }
        return best;
    }
    struct cand *c = s->cands;
    float inv_t = 1.0f / s->p.temperature;
    for (int32_t i = 0; i < n; i++) {
        c[i].logit = logits[i] * inv_t;
        c[i].id = i;
    }
    int32_t n_c = n;
    if (s->p.top_k > 0 && s->p.top_k < n_c) {
        select_top(c, n_c, s->p.top_k);
        n_c = s->p.top_k;
    }
    /* Softmax over the survivors (probabilities normalised over them). */
    float mx = -INFINITY;
    for (int32_t i = 0; i < n_c; i++) {
        mx = c[i].logit > mx ? c[i].logit : mx;
    }
    double sum = 0.0;
    for (int32_t i = 0; i < n_c; i++) {
        float e = expf(c[i].logit - mx);
        c[i].logit = e;
        sum += e;
    }
    for (int32_t i = 0; i < n_c; i++) {
        c[i].logit = (float)(c[i].logit / sum);
    }
    if (s->p.top_p < 1.0f) {
        /* Grow a sorted head until it holds top_p of the mass. */
        int32_t k = 64;
        for (;;) {
            if (k > n_c) {
                k = n_c;
            }
            if (k < n_c) {
                select_top(c, n_c, k);
            }
            qsort(c, (size_t)k, sizeof(*c), cand_cmp);
            double cum = 0.0;
            int32_t cut = -1;
            for (int32_t i = 0; i < k; i++) {
                cum += c[i].logit;
                if (cum >= s->p.top_p) {
                    cut = i + 1;
                    break;
                }
            }
            if (cut > 0) {
                n_c = cut;
                break;
            }
            if (k == n_c) {
                break;
            }
            k *= 4;
        }
    }
    if (s->p.min_p > 0.0f) {
        float pmax = 0.0f;
        for (int32_t i = 0; i < n_c; i++) {
            pmax = c[i].logit > pmax ? c[i].logit : pmax;
        }
        float thr = s->p.min_p * pmax;
        int32_t w = 0;
        for (int32_t i = 0; i < n_c; i++) {
            if (c[i].logit >= thr) {
                c[w++] = c[i];
            }
        }
        n_c = w;
    }
    /* The survivors' order is a deterministic function of the logits (quickselect is), so
     * the draw is reproducible for a seed without sorting the whole vocabulary. */
    double total = 0.0;
    for (int32_t i = 0; i < n_c; i++) {
        total += c[i].logit;
    }
    double r = eng_sampler_uniform(s) * total;
    double acc = 0.0;
    for (int32_t i = 0; i < n_c; i++) {
        acc += c[i].logit;
        if (r < acc) {
            return c[i].id;
        }
    }
    /* Rounding left r at the total: the last candidate with any probability (a token
     * masked to -inf by constrained decoding has none). */
    for (int32_t i = n_c; i-- > 0;) {
        if (c[i].logit > 0.0f) {
            return c[i].id;
        }
    }
    return c[n_c - 1].id;
}
