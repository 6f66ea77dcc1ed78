/* The compiled form of a constraint, shared by the schema compiler (constrain_schema.c), the
 * byte matcher (constrain_match.c) and the vocabulary mask (constrain_mask.c). Immutable
 * after compilation. */
#ifndef WYE_ENGINE_CONSTRAIN_INTERNAL_H
#define WYE_ENGINE_CONSTRAIN_INTERNAL_H

#include <stdatomic.h>

#include "local-engine/constrain.h"

enum cn_kind {
    CN_ROOT,    /* leading whitespace, then child; nothing after it */
    CN_ANYOF,   /* alternatives with disjoint first bytes: the first byte picks one */
    CN_STRING,  /* lo..hi code points */
    CN_NUMBER,  /* JSON number */
    CN_INTEGER, /* JSON number without fraction or exponent */
    CN_LIT,     /* one of a sorted set of exact texts (enum, const, booleans, null) */
    CN_ARRAY,   /* lo..hi items of child */
    CN_OBJECT,  /* declared properties in declaration order */
    CN_GOBJ,    /* any object (depth-capped) */
    CN_GARR,    /* any array (depth-capped) */
    /* objects told apart by their first property, required, with one const string each (tool
     * calls: {"name":{"const":..},...}): alternatives alts[list..list+n); their tags are
     * lits[ks..ks+n) (sorted; prop: the alternative's index, tail: the bytes after the tag
     * that close that object). Once the tag is read the frame becomes that object's. */
    CN_TAGGED,
};

/* Fixed nodes every constraint has. */
enum {
    CN_NODE_ROOT = 0,
    CN_NODE_ANY,
    CN_NODE_STR,
    CN_NODE_NUM,
    CN_NODE_TFN,
    CN_NODE_GOBJ,
    CN_NODE_GARR,
    CN_NODE_FIXED
};

#define CN_UNBOUNDED UINT32_MAX

struct cn_lit {
    uint32_t off, len; /* text in str */
    uint32_t prop;     /* keysets: the property (index within its object) */
    uint32_t tail;     /* keysets: bytes from the key's start to the end of the required rest */
};

struct cn_prop {
    uint32_t key_len; /* quoted key text */
    uint32_t node;
    bool required;
};

struct cn_keyset {   /* the keys an object may write next, given the next property index */
    uint32_t off, n; /* lits[off..off+n), sorted */
    /* Bytes of the required properties from here on (key, colon, shortest value, commas
     * between them), without (req_first) or with (req_rest) a comma before the first. */
    uint32_t req_first, req_rest;
    bool has_req;
};

struct cnode {
    uint8_t kind;
    uint32_t minlen;   /* bytes of the shortest value */
    uint32_t need;     /* stack frames the shortest value takes (pushes check it) */
    uint32_t lo, hi;   /* string: code points; array: items */
    uint32_t child;    /* array: items; root: the value */
    uint32_t list, n;  /* lit: lits; object: props; anyof: alts */
    uint32_t ks;       /* object: keysets[ks..ks+n] */
    uint8_t first[32]; /* bytes a value can start with (bitset) */
};

struct eng_constraint {
    atomic_int refs; /* eng_constraint_ref/unref; freed at zero */
    struct cnode *nodes;
    uint32_t n_nodes, cap_nodes;
    struct cn_lit *lits;
    uint32_t n_lits, cap_lits;
    struct cn_prop *props;
    uint32_t n_props, cap_props;
    struct cn_keyset *keysets; /* indexed like props, one extra per object */
    uint32_t n_keysets, cap_keysets;
    uint32_t *alts;
    uint32_t n_alts, cap_alts;
    char *str;
    uint32_t n_str, cap_str;
};

/* A fresh frame for node (constrain_match.c). */
void cn_frame_init(const struct eng_constraint *c, struct eng_cframe *f, uint32_t node);

static inline bool cn_first_has(const struct cnode *n, uint8_t b)
{
    return (n->first[b >> 3] >> (b & 7)) & 1u;
}

#endif
