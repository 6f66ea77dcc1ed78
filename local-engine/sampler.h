/* Token sampling: repetition penalty, temperature, top-k, top-p, min-p and a seeded PRNG
 * (xoshiro256**), with every buffer allocated at creation (sampling allocates nothing).
 * One sampler per sequence; used by one thread at a time. */
#ifndef WYE_ENGINE_SAMPLER_H
#define WYE_ENGINE_SAMPLER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/err.h"

#define ENG_SAMPLER_HISTORY_MAX 1024 /* largest repeat_last_n */

struct eng_sampler_params {
    float temperature;     /* <= 0: greedy (argmax after the repetition penalty) */
    int32_t top_k;         /* <= 0: off */
    float top_p;           /* >= 1: off */
    float min_p;           /* <= 0: off; keeps tokens with p >= min_p * p_max */
    float repeat_penalty;  /* 1: off; CTRL-style: logit > 0 ? logit / r : logit * r */
    int32_t repeat_last_n; /* tokens of history the penalty looks at (<= HISTORY_MAX) */
    uint64_t seed;
};

struct eng_sampler;

/* Greedy with no penalty. */
void eng_sampler_params_greedy(struct eng_sampler_params *p);
/* Allocates a sampler over n_vocab logits. */
enum wye_err eng_sampler_create(int32_t n_vocab, struct eng_sampler **out);
void eng_sampler_destroy(struct eng_sampler *s);
/* Starts a new sequence: sets the parameters (clamped to valid ranges), reseeds, clears the
 * history. */
void eng_sampler_reset(struct eng_sampler *s, const struct eng_sampler_params *p);
/* Records a token (prompt or generated) in the repetition history. */
void eng_sampler_accept(struct eng_sampler *s, int32_t id);
/* Picks a token from logits[0..n) (n <= n_vocab); logits is modified in place. */
int32_t eng_sampler_sample(struct eng_sampler *s, float *logits, int32_t n);

/* The PRNG, exposed for tests: a uniform double in [0, 1). */
double eng_sampler_uniform(struct eng_sampler *s);

#endif
