/* Constrained decoding: a JSON Schema (a documented subset, see docs/constrained-decoding.md)
 * compiled to a byte-level pushdown matcher, and the per-step vocabulary mask that keeps a
 * generation inside the language of that matcher.
 *
 * A compiled constraint is immutable and model-independent: compile it once per schema and
 * share it between threads, contexts and sequences. The vocabulary mask (a byte trie of every
 * token's text plus scratch) belongs to one context and is used by that context's thread.
 * A matcher state is a small fixed-size value (no pointers): copying it is a memcpy. */
#ifndef WYE_ENGINE_CONSTRAIN_H
#define WYE_ENGINE_CONSTRAIN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/err.h"

struct eng_constraint;

#define ENG_CONSTRAIN_STACK_MAX 32 /* matcher stack frames (nesting depth cap) */
#define ENG_CONSTRAIN_WS_MAX 8     /* whitespace bytes allowed at any one position */

/* Compiles JSON Schema text (borrowed for the call). Errors name the keyword and where it
 * is (e.g. "unsupported keyword 'pattern' at #/properties/id"): PARSE (not JSON),
 * UNSUPPORTED (outside the subset), INVAL (a bad value, or nothing can satisfy it), TOOBIG
 * (past a limit: nesting, properties, enum size), NOMEM. */
enum wye_err eng_constraint_compile(const char *schema, size_t len, struct eng_constraint **out,
                                    char *errbuf, size_t errlen);
/* The response_format {"type":"json_object"} constraint: any JSON object (depth-capped). */
enum wye_err eng_constraint_json_object(struct eng_constraint **out, char *errbuf, size_t errlen);
/* Drops a reference (compile/json_object return one); the last frees. NULL is a no-op. */
void eng_constraint_destroy(struct eng_constraint *c);
/* Takes another reference (any thread). */
void eng_constraint_ref(struct eng_constraint *c);

/* A cache of compiled constraints keyed by schema text, shared by threads (one mutex), least
 * recently used evicted beyond n_max entries. */
struct eng_constraint_cache;
enum wye_err eng_constraint_cache_create(size_t n_max, struct eng_constraint_cache **out);
/* Drops the cache's references; constraints still referenced elsewhere live on. */
void eng_constraint_cache_destroy(struct eng_constraint_cache *cc);
/* The constraint for schema text (compiled on a miss; errors are not cached), with a new
 * reference for the caller to drop with eng_constraint_destroy after its last sequence.
 * schema NULL: the json_object constraint. Errors as eng_constraint_compile. */
enum wye_err eng_constraint_cache_get(struct eng_constraint_cache *cc, const char *schema,
                                      size_t len, struct eng_constraint **out, char *errbuf,
                                      size_t errlen);
/* Bytes of the shortest valid output (an upper bound on the tokens it needs, since every
 * byte has a single-byte token in byte-fallback SPM and byte-level BPE vocabularies). */
uint32_t eng_constraint_min_bytes(const struct eng_constraint *c);

/* ---- the byte matcher (the engine and tests) ---- */

struct eng_cframe {
    uint16_t node;
    uint8_t ph; /* phase within the node */
    uint8_t ws; /* whitespace bytes taken at this position */
    uint16_t a, b;
    uint32_t c;
};

struct eng_cstate {
    uint32_t sp; /* frames in use (f[0], the top level, stays to the end) */
    struct eng_cframe f[ENG_CONSTRAIN_STACK_MAX];
};

/* Start state: nothing consumed. */
void eng_cstate_init(struct eng_cstate *st, const struct eng_constraint *c);
/* Copies the used part of src (cheap: a few frames). */
void eng_cstate_copy(struct eng_cstate *dst, const struct eng_cstate *src);
/* Consumes one byte; false (st unspecified) if no valid text continues with it. */
bool eng_cstate_feed(const struct eng_constraint *c, struct eng_cstate *st, uint8_t byte);
/* Feeds bytes one by one; false at the first rejected byte (st unspecified). */
bool eng_cstate_feed_n(const struct eng_constraint *c, struct eng_cstate *st, const void *bytes,
                       size_t n);
/* Fewest bytes that complete a valid text from st (0: st is accepting). */
uint32_t eng_cstate_min_close(const struct eng_constraint *c, const struct eng_cstate *st);
/* Whether a byte may still follow (false once the top-level value is closed). */
bool eng_cstate_can_continue(const struct eng_constraint *c, const struct eng_cstate *st);

/* ---- the vocabulary mask (one per context; one thread at a time) ---- */

struct eng_cmask;

/* Builds the trie from token texts: piece(arg, id, buf, n) writes token id's bytes (as
 * eng_token_to_piece does, returning the length), is_eog(arg, id) marks end-of-generation
 * tokens. Tokens rendering no text (control tokens) are never allowed; EOG tokens are
 * allowed only in accepting states. */
enum wye_err eng_cmask_create(int32_t n_vocab,
                              size_t (*piece)(void *arg, int32_t id, char *buf, size_t n),
                              bool (*is_eog)(void *arg, int32_t id), void *arg,
                              struct eng_cmask **out, char *errbuf, size_t errlen);
void eng_cmask_destroy(struct eng_cmask *m);
int32_t eng_cmask_n_vocab(const struct eng_cmask *m);
/* Bytes the mask holds (trie, texts, scratch). */
size_t eng_cmask_mem(const struct eng_cmask *m);
/* Computes the allowed set from st with budget tokens left (including the one being
 * sampled; <= 0: no budget rule): a token is allowed iff the matcher accepts all its bytes
 * and, under a budget, the shortest completion afterwards fits in budget - 1 tokens; EOG iff
 * st is accepting. Returns the number of allowed tokens. No allocation. */
int32_t eng_cmask_compute(struct eng_cmask *m, const struct eng_constraint *c,
                          const struct eng_cstate *st, int32_t budget);
/* After eng_cmask_compute: whether id is allowed. */
bool eng_cmask_allowed(const struct eng_cmask *m, int32_t id);
/* After eng_cmask_compute: sets logits[i] = -INFINITY for every disallowed i < n. */
void eng_cmask_apply(const struct eng_cmask *m, float *logits, int32_t n);
/* Advances st by token id's bytes (EOG: no change, accepted only in an accepting state).
 * False if the token is not accepted. */
bool eng_cmask_advance(const struct eng_cmask *m, const struct eng_constraint *c,
                       struct eng_cstate *st, int32_t id);
/* Whether id is an end-of-generation token. */
bool eng_cmask_is_eog(const struct eng_cmask *m, int32_t id);

#endif
