/* Offline training and evaluation of the complexity score: standardise, fit L2-regularised
 * logistic regression by Newton's method (a Cholesky solve of a (F+1)x(F+1) system per
 * iteration; deterministic), choose the threshold, and compute AUC and call-performance.
 * Runs on the CLI's thread (`wye route train|eval`) and in tests; never on the request path. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "router/score_train.h"

#define NP (RT_F__COUNT + 1) /* parameters: weights then bias */

/* Left out of the default fit by backward elimination on dev.jsonl (criterion: 5-fold AUC +
 * 0.5 x leave-one-source-out AUC; docs/routing.md): the other features carry their signal,
 * and without them the fit generalises better to held-out sources. */
static const enum rt_feat cv_dropped[] = {
    RT_F_QUESTIONS, RT_F_WH_FACTUAL, RT_F_LEN_LAST,  RT_F_LEN_CONV,  RT_F_SENTENCES,
    RT_F_NUMBERS,   RT_F_SYMBOLS,    RT_F_MULTI_QTY, RT_F_OPERATORS,
};

void rt_train_opts_default(struct rt_train_opts *o)
{
    o->l2 = RT_TRAIN_L2_DEFAULT;
    o->iters = 50;
    for (int i = 0; i < RT_F__COUNT; i++) {
        o->use[i] = true;
    }
    for (size_t i = 0; i < sizeof(cv_dropped) / sizeof(cv_dropped[0]); i++) {
        o->use[cv_dropped[i]] = false;
    }
}

/* Hand-set weights for the policy features, which are never fitted: prompt datasets carry no
 * tools, response_format or max_tokens and almost no non-English text, so a fitted weight
 * would be noise (or, with a tiny std, explode). In logits per unit of the raw feature. */
float rt_score_prior_weight(int feat)
{
    switch (feat) {
    case RT_F_NON_ASCII:
        return 1.0f; /* a ~0.5B model is much weaker outside English */
    case RT_F_TOOLS:
        return 1.0f; /* tool calling is unreliable on a ~0.5B model */
    case RT_F_RESP_FORMAT:
        return 0.5f; /* structured output likewise */
    case RT_F_MAX_TOKENS:
        return 0.25f; /* per doubling of the requested length past 256 tokens */
    default:
        return 0.0f;
    }
}

/* Solves A x = b in place (A symmetric positive definite, n x n, row-major); A is destroyed.
 * Returns false when A is not positive definite. */
static bool cholesky_solve(double *a, double *b, int n)
{
    for (int j = 0; j < n; j++) {
        double d = a[j * n + j];
        for (int k = 0; k < j; k++) {
            d -= a[j * n + k] * a[j * n + k];
        }
        if (!(d > 1e-12)) {
            return false;
        }
        d = sqrt(d);
        a[j * n + j] = d;
        for (int i = j + 1; i < n; i++) {
            double s = a[i * n + j];
            for (int k = 0; k < j; k++) {
                s -= a[i * n + k] * a[j * n + k];
            }
            a[i * n + j] = s / d;
        }
    }
    for (int i = 0; i < n; i++) { /* L y = b */
        double s = b[i];
        for (int k = 0; k < i; k++) {
            s -= a[i * n + k] * b[k];
        }
        b[i] = s / a[i * n + i];
    }
    for (int i = n - 1; i >= 0; i--) { /* L^T x = y */
        double s = b[i];
        for (int k = i + 1; k < n; k++) {
            s -= a[k * n + i] * b[k];
        }
        b[i] = s / a[i * n + i];
    }
    return true;
}

enum wye_err rt_score_train(const struct rt_features *x, const unsigned char *y, size_t n,
                            const struct rt_train_opts *o, struct rt_score_model *out)
{
    size_t n_pos = 0;
    for (size_t r = 0; r < n; r++) {
        n_pos += y[r] != 0;
    }
    if (n < 2 || n_pos == 0 || n_pos == n) {
        return WYE_ERR_INVAL;
    }
    struct rt_score_model m;
    memset(&m, 0, sizeof(m));
    /* Standardisation, and which features enter the fit (index list act[]). */
    int act[RT_F__COUNT], n_act = 0;
    for (int i = 0; i < RT_F__COUNT; i++) {
        double s = 0, ss = 0;
        for (size_t r = 0; r < n; r++) {
            s += x[r].v[i];
        }
        double mean = s / (double)n;
        for (size_t r = 0; r < n; r++) {
            double d = x[r].v[i] - mean;
            ss += d * d;
        }
        double sd = sqrt(ss / (double)n);
        if (sd < 1e-6 || rt_score_prior_weight(i) != 0.0f) {
            m.mean[i] = 0.0f;
            m.std[i] = 1.0f;
            m.w[i] = o->use[i] ? rt_score_prior_weight(i) : 0.0f;
            continue;
        }
        m.mean[i] = (float)mean;
        m.std[i] = (float)sd;
        if (o->use[i]) {
            act[n_act++] = i;
        }
    }
    int np = n_act + 1;
    double *z = NULL;
    size_t cells;
    if (wye_mul_size(n, (size_t)np, &cells) != 0) {
        return WYE_ERR_TOOBIG;
    }
    z = wye_malloc(cells * sizeof(double));
    if (!z) {
        return WYE_ERR_NOMEM;
    }
    for (size_t r = 0; r < n; r++) {
        for (int j = 0; j < n_act; j++) {
            int i = act[j];
            double zi = (x[r].v[i] - m.mean[i]) / m.std[i];
            z[r * (size_t)np + (size_t)j] = fmax(-RT_Z_MAX, fmin(RT_Z_MAX, zi));
        }
        z[r * (size_t)np + (size_t)n_act] = 1.0; /* the bias column */
    }
    /* Newton's method on sum(log-loss) + l2/2 |w|^2, starting from the prior log-odds. */
    double beta[NP] = {0}, g[NP], h[NP * NP];
    beta[n_act] = log((double)n_pos / (double)(n - n_pos));
    for (int it = 0; it < o->iters; it++) {
        memset(g, 0, sizeof(g));
        memset(h, 0, sizeof(h));
        for (size_t r = 0; r < n; r++) {
            const double *zr = &z[r * (size_t)np];
            double t = 0;
            for (int j = 0; j < np; j++) {
                t += beta[j] * zr[j];
            }
            double p = 1.0 / (1.0 + exp(-t));
            double wgt = p * (1.0 - p);
            double d = p - (y[r] ? 1.0 : 0.0);
            for (int j = 0; j < np; j++) {
                g[j] += d * zr[j];
                for (int k = 0; k <= j; k++) {
                    h[j * np + k] += wgt * zr[j] * zr[k];
                }
            }
        }
        for (int j = 0; j < np; j++) {
            for (int k = 0; k < j; k++) {
                h[k * np + j] = h[j * np + k];
            }
            if (j < n_act) {
                g[j] += o->l2 * beta[j];
                h[j * np + j] += o->l2;
            }
            h[j * np + j] += 1e-9; /* keeps a separable, unpenalised fit solvable */
        }
        if (!cholesky_solve(h, g, np)) {
            break;
        }
        double step = 0;
        for (int j = 0; j < np; j++) {
            beta[j] -= g[j];
            step = fmax(step, fabs(g[j]));
        }
        if (step < 1e-9) {
            break;
        }
    }
    for (int j = 0; j < n_act; j++) {
        m.w[act[j]] = (float)beta[j];
    }
    m.bias = (float)beta[n_act];
    /* The threshold, from the training scores. */
    float *sc = wye_malloc(n * sizeof(float));
    if (!sc) {
        wye_free(z);
        return WYE_ERR_NOMEM;
    }
    m.threshold = 0.5f;
    for (size_t r = 0; r < n; r++) {
        struct rt_score_result res;
        rt_score(&m, &x[r], 0, &res);
        sc[r] = res.score;
    }
    enum wye_err e = rt_eval_best_threshold(sc, y, n, &m.threshold);
    wye_free(sc);
    wye_free(z);
    if (e) {
        return e;
    }
    *out = m;
    return WYE_OK;
}

struct pair {
    float s;
    unsigned char y;
    size_t i; /* input order, for a deterministic sort */
};

static int pair_cmp_desc(const void *a, const void *b)
{
    const struct pair *pa = a, *pb = b;
    if (pa->s != pb->s) {
        return pa->s > pb->s ? -1 : 1;
    }
    return pa->i < pb->i ? -1 : pa->i > pb->i;
}

static enum wye_err sorted_pairs(const float *score, const unsigned char *y, size_t n,
                                 struct pair **out)
{
    struct pair *p = wye_malloc((n ? n : 1) * sizeof(*p));
    if (!p) {
        return WYE_ERR_NOMEM;
    }
    for (size_t i = 0; i < n; i++) {
        p[i].s = score[i];
        p[i].y = y[i] != 0;
        p[i].i = i;
    }
    qsort(p, n, sizeof(*p), pair_cmp_desc);
    *out = p;
    return WYE_OK;
}

enum wye_err rt_eval_auc(const float *score, const unsigned char *y, size_t n, double *auc)
{
    struct pair *p;
    enum wye_err e = sorted_pairs(score, y, n, &p);
    if (e) {
        return e;
    }
    /* Walk from the highest score; within a tie group, positive-negative pairs count 1/2. */
    double n_pos = 0, n_neg = 0, wins = 0;
    for (size_t i = 0; i < n;) {
        size_t j = i;
        double gp = 0, gn = 0;
        while (j < n && p[j].s == p[i].s) {
            gp += p[j].y;
            gn += !p[j].y;
            j++;
        }
        wins += gn * n_pos + 0.5 * gn * gp; /* negatives below earlier positives */
        n_pos += gp;
        n_neg += gn;
        i = j;
    }
    wye_free(p);
    *auc = n_pos > 0 && n_neg > 0 ? wins / (n_pos * n_neg) : NAN;
    return WYE_OK;
}

enum wye_err rt_eval_call_fraction(const float *score, const unsigned char *y, size_t n,
                                   double quality, double *fraction)
{
    struct pair *p;
    enum wye_err e = sorted_pairs(score, y, n, &p);
    if (e) {
        return e;
    }
    /* With the top k remote: good = k + (local-labeled among the rest). */
    size_t local_rest = 0;
    for (size_t i = 0; i < n; i++) {
        local_rest += !p[i].y;
    }
    double need = quality * (double)n;
    size_t k = 0;
    for (; k < n; k++) {
        if ((double)(k + local_rest) >= need - 1e-9) {
            break;
        }
        local_rest -= !p[k].y;
    }
    wye_free(p);
    *fraction = n ? (double)k / (double)n : 0.0;
    return WYE_OK;
}

enum wye_err rt_eval_best_threshold(const float *score, const unsigned char *y, size_t n,
                                    float *threshold)
{
    struct pair *p;
    enum wye_err e = sorted_pairs(score, y, n, &p);
    if (e) {
        return e;
    }
    double n_pos = 0, n_neg = 0;
    for (size_t i = 0; i < n; i++) {
        n_pos += p[i].y;
        n_neg += !p[i].y;
    }
    /* Threshold between p[i-1] and p[i]: the first i (highest scores) go remote. */
    double tp = 0, fp = 0, best = -1;
    float best_t = 0.5f;
    for (size_t i = 0; i <= n; i++) {
        if (i == n || i == 0 || p[i].s != p[i - 1].s) {
            double tpr = n_pos > 0 ? tp / n_pos : 0, tnr = n_neg > 0 ? (n_neg - fp) / n_neg : 0;
            double bacc = 0.5 * (tpr + tnr);
            if (bacc > best + 1e-12) {
                best = bacc;
                best_t = i == 0 ? 1.0f : i == n ? 0.0f : 0.5f * (p[i - 1].s + p[i].s);
            }
        }
        if (i < n) {
            tp += p[i].y;
            fp += !p[i].y;
        }
    }
    wye_free(p);
    *threshold = best_t;
    return WYE_OK;
}
