/* Training and evaluating the complexity score (offline; `wye route` and the tests): L2-
 * regularised logistic regression fitted by Newton's method on standardised features, the
 * threshold, ROC AUC and RouteLLM-style call-performance. Caller's thread; allocates. */
#ifndef WYE_ROUTER_SCORE_TRAIN_H
#define WYE_ROUTER_SCORE_TRAIN_H

#include <stdbool.h>
#include <stddef.h>

#include "common/err.h"
#include "router/score.h"

struct rt_train_opts {
    double l2;             /* L2 penalty on the standardised weights (not the bias) */
    int iters;             /* Newton iterations at most (stops earlier when converged) */
    bool use[RT_F__COUNT]; /* features the fit may use; the others get weight 0 */
};

/* Defaults: l2 = RT_TRAIN_L2_DEFAULT, 50 iterations, every feature except those that
 * cross-validation left out (docs/routing.md). */
#define RT_TRAIN_L2_DEFAULT 10.0
void rt_train_opts_default(struct rt_train_opts *o);

/* The hand-set weight of a policy feature (tools, response_format, max_tokens, non_ascii),
 * never fitted; 0 for the others. */
float rt_score_prior_weight(int feat);

/* Fits *out to x (n rows) and labels y (1: remote, 0: local). Features constant in x get
 * weight 0; policy features keep their priors (see docs/routing.md). The threshold maximises
 * balanced accuracy on x. Deterministic. INVAL when n < 2 or one class is missing; NOMEM. */
enum wye_err rt_score_train(const struct rt_features *x, const unsigned char *y, size_t n,
                            const struct rt_train_opts *o, struct rt_score_model *out);

/* ROC AUC of scores against labels (ties count one half) into *auc; NAN when one class is
 * missing. NOMEM. */
enum wye_err rt_eval_auc(const float *score, const unsigned char *y, size_t n, double *auc);
/* The smallest fraction of requests sent remote (highest scores first) so that at least
 * quality (e.g. 0.95) of them are answered well, counting remote answers and locally answered
 * local-labeled prompts as good. NOMEM. */
enum wye_err rt_eval_call_fraction(const float *score, const unsigned char *y, size_t n,
                                   double quality, double *fraction);
/* The threshold that maximises balanced accuracy (midpoint between scores). NOMEM. */
enum wye_err rt_eval_best_threshold(const float *score, const unsigned char *y, size_t n,
                                    float *threshold);

#endif
