/* Request complexity scoring: cheap, interpretable features of a chat request, a logistic
 * model over them (standardised features, weights, bias, threshold; loaded from JSON), and the
 * score in [0,1] with the features that contributed most. A high score means "send remote".
 * Extraction and scoring allocate nothing and do bounded work (the last RT_SCAN_MAX bytes of
 * the last user message are scanned), so the router calls them on the lws thread. */
#ifndef WYE_ROUTER_SCORE_H
#define WYE_ROUTER_SCORE_H

#include <stdbool.h>
#include <stddef.h>

#include "common/chat.h"
#include "common/err.h"

/* Bytes of the last user message that the text features look at (its tail). */
#define RT_SCAN_MAX 16384
/* Contributions kept by rt_score, largest magnitude first. */
#define RT_TOPK_MAX 8

/* The features, in the order of rt_features.v. docs/routing.md documents each one. */
enum rt_feat {
    RT_F_LEN_LAST,    /* log1p(estimated tokens of the last user message) */
    RT_F_LEN_CONV,    /* log1p(estimated tokens of the whole conversation) */
    RT_F_TURNS,       /* log1p(user turns - 1) */
    RT_F_SYSTEM,      /* 1 when a system message is present */
    RT_F_CODE_SYNTAX, /* log1p(fences, code keywords, identifiers, calls) */
    RT_F_CODE_TOPIC,  /* log1p(words about programming) */
    RT_F_SYMBOLS,     /* 10 x share of bytes in {}[];=<>_| */
    RT_F_MATH,        /* log1p(math words and phrases) */
    RT_F_LATEX,       /* log1p($ signs and \commands) */
    RT_F_NUMBERS,     /* log1p(numbers, in digits or words) */
    RT_F_MULTI_QTY,   /* log1p(numbers beyond the second) */
    RT_F_DIGITS,      /* share of digits among letters and digits */
    RT_F_OPERATORS,   /* log1p(arithmetic operators between operands) */
    RT_F_REASONING,   /* log1p(reasoning and multi-step markers) */
    RT_F_CONSTRAINTS, /* log1p(constraint and instruction markers) */
    RT_F_LIST_ITEMS,  /* log1p(bulleted or numbered lines) */
    RT_F_IMPERATIVES, /* log1p(sentences opening with a task verb) */
    RT_F_LONGFORM,    /* log1p(words asking for long output: essay, report, ...) */
    RT_F_SHORT_TASK,  /* log1p(classify/translate/summarise/options markers) */
    RT_F_QUESTIONS,   /* log1p(question marks) */
    RT_F_WH_FACTUAL,  /* log1p(sentences opening with what/who/when/where/which) */
    RT_F_WH_OPEN,     /* log1p(sentences opening with why/how) */
    RT_F_SMALLTALK,   /* log1p(greetings, thanks, feelings, chit-chat words) */
    RT_F_PERSONAL,    /* share of words that are I/me/my/you/your */
    RT_F_SHORT,       /* 1 when the last user message has at most 6 words */
    RT_F_COMMON,      /* share of words among the ~150 most frequent English words */
    RT_F_SENTENCES,   /* log1p(sentences) */
    RT_F_LINES,       /* log1p(newlines) */
    RT_F_FIELDS,      /* log1p(lines opening with "Label:" or "(A)") */
    RT_F_AVG_WORD,    /* mean ASCII word length in letters, capped at 12 */
    RT_F_LONG_WORDS,  /* share of words with 9 or more letters */
    RT_F_NON_ASCII,   /* share of non-ASCII characters among letters */
    RT_F_MAX_TOKENS,  /* log2(max_tokens / 256) clipped to [-3, 4]; 0 when unset */
    RT_F_TOOLS,       /* 1 when tools / tool_choice are present */
    RT_F_RESP_FORMAT, /* 1 when response_format is present */
    RT_F__COUNT
};

struct rt_features {
    float v[RT_F__COUNT];
};

/* Returns the feature's stable name ("math", ...), used in JSON; NULL when out of range. */
const char *rt_feature_name(int feat);
/* Returns the index of the named feature, or -1. */
int rt_feature_index(const char *name);

/* Fills out from req (borrowed for the call). Allocates nothing; any thread. */
void rt_features_extract(const struct wye_chat_req *req, struct rt_features *out);
/* Same for a bare text taken as one user message. */
void rt_features_extract_text(const char *text, size_t len, struct rt_features *out);

/* Standardised features are clipped to [-RT_Z_MAX, RT_Z_MAX] so that no single feature far
 * outside the training range decides alone. */
#define RT_Z_MAX 4.0f

/* A logistic model over standardised features: z_i = clip((x_i - mean_i) / std_i),
 * score = sigmoid(bias + sum w_i z_i). Plain data; copy freely. */
struct rt_score_model {
    float mean[RT_F__COUNT];
    float std[RT_F__COUNT]; /* > 0 */
    float w[RT_F__COUNT];   /* 0 for a feature the model does not use */
    float bias;
    float threshold; /* score >= threshold: remote */
};

struct rt_contrib {
    int feat;           /* enum rt_feat */
    float contribution; /* w_i * z_i, in logits */
};

struct rt_score_result {
    float score; /* in [0,1] */
    bool remote; /* score >= threshold */
    int n_top;
    struct rt_contrib top[RT_TOPK_MAX]; /* by |contribution|, largest first; ties by index */
};

/* Parses weights JSON text (borrowed; need not be NUL-terminated) into *out. Missing features
 * get weight 0; an unknown feature name, a non-positive std or a non-finite number is an error
 * written into err naming the field (PARSE or INVAL). NOMEM when cJSON cannot allocate. */
enum wye_err rt_score_model_load_json(const char *text, size_t len, struct rt_score_model *out,
                                      char *err, size_t errlen);
/* Parses the weights compiled into the binary (conf/router-weights.json). Call once at start. */
enum wye_err rt_score_model_default(struct rt_score_model *out, char *err, size_t errlen);
/* Returns the embedded weights JSON text (static) and its length. */
const char *rt_score_model_default_json(size_t *len);
/* Writes m as weights JSON into *out (a NUL-terminated wye_malloc'd string; caller frees). */
enum wye_err rt_score_model_to_json(const struct rt_score_model *m, char **out);

/* Scores f with m, keeping the k (<= RT_TOPK_MAX) largest contributions. Allocates nothing. */
void rt_score(const struct rt_score_model *m, const struct rt_features *f, int k,
              struct rt_score_result *out);
/* Writes the top contributions as a JSON array text ([{"feature":"math","contribution":0.42}])
 * into buf (NUL-terminated). TOOBIG when buf is too small (buf then holds "[]" if it fits). */
enum wye_err rt_score_reasons_json(const struct rt_score_result *r, char *buf, size_t len);

/* `wye route`: train, score and evaluate the complexity router (argv[0] is "route"). */
int rt_cli_route(int argc, char **argv);

#endif
