/* Internal to the complexity score: the keyword classes and the keyword table that
 * score_features.c looks words up in (score_words.c). Read-only data; any thread. */
#ifndef WYE_ROUTER_SCORE_INTERNAL_H
#define WYE_ROUTER_SCORE_INTERNAL_H

#include <stddef.h>

/* Word classes; a word or phrase may have several. */
enum {
    RT_KW_CODE = 1u << 0,      /* programming-language syntax keyword */
    RT_KW_CODE_T = 1u << 1,    /* a word about programming */
    RT_KW_MATH = 1u << 2,      /* mathematics */
    RT_KW_REASON = 1u << 3,    /* reasoning, analysis, multi-step */
    RT_KW_CONSTR = 1u << 4,    /* constraint or formatting instruction */
    RT_KW_LONG = 1u << 5,      /* asks for long output */
    RT_KW_SHORT = 1u << 6,     /* short, closed task */
    RT_KW_SMALL = 1u << 7,     /* small talk */
    RT_KW_VERB = 1u << 8,      /* task verb (counts at a sentence start) */
    RT_KW_WH_FACT = 1u << 9,   /* what/who/when/where/which (at a sentence start) */
    RT_KW_WH_OPEN = 1u << 10,  /* why/how (at a sentence start) */
    RT_KW_PERSONAL = 1u << 11, /* first/second person */
    RT_KW_STEP = 1u << 12,     /* sequencing word: first, then, next, finally */
    RT_KW_NUMW = 1u << 13,     /* a number written as a word (counts as a number) */
    RT_KW_MATHW = 1u << 14,    /* weak math word: counts only in a text with numbers */
    RT_KW_COMMON = 1u << 15,   /* one of the most frequent English words */
};

struct rt_kw {
    const char *w;
    unsigned cls;
};

/* Sorted by strcmp, strictly (rt_features_selfcheck). Phrases are two words joined by one
 * space. */
extern const struct rt_kw rt_kw_table[];
extern const size_t rt_kw_count;

/* Returns 0 when rt_kw_table is strictly sorted (so free of duplicates), else the first bad
 * index. For the tests. */
int rt_features_selfcheck(void);

#endif
