/* Shared by the model/engine tests: the stories260K golden file parser and a generation
 * helper that records ids and text. Single-threaded (cmocka's thread). */
#ifndef WYE_TESTS_MODEL_UTIL_H
#define WYE_TESTS_MODEL_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "local-engine/engine.h"

#define GOLD_MAX_PROMPTS 8
#define GOLD_MAX_IDS 256

struct gold_case {
    char prompt[256];
    int32_t prompt_ids[64];
    size_t n_prompt;
    int32_t top5_id[5];
    float top5_logit[5];
    int32_t ids[GOLD_MAX_IDS]; /* prompt ids then generated ids */
    size_t n_ids;
    char text[2048];
};

/* Parses WYE_SHARED_DIR/models/stories260K.golden.txt; returns the number of cases. */
size_t gold_load(struct gold_case *cases, size_t max);

/* What a generation produced. */
struct gen_rec {
    int32_t ids[1024];
    size_t n_ids;
    char text[8192];
    size_t n_text;
    struct eng_seq_result res;
    bool done;
    int32_t cancel_after; /* > 0: set *cancel after this many tokens */
    atomic_bool *cancel;
};

extern const struct eng_seq_ops gen_rec_ops;

/* Greedy parameters generating max_tokens. */
void gen_greedy(struct eng_gen_params *p, int32_t max_tokens);

#endif
