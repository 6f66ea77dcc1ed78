/* The local inference engine's public API (for the router, the gateway and the CLI tools).
 *
 * A model (GGUF weights mmapped read-only, tokenizer, chat template family) is loaded once and
 * shared by any number of contexts. A context owns a KV cache and scratch for n_seq_max
 * sequences of up to n_ctx tokens each, all allocated at creation: generating allocates
 * nothing. A context is used by one thread at a time (the engine worker); the callbacks it
 * makes run on that thread. Continuous batching: sequences are added and removed between
 * steps; each eng_batch_step advances every active sequence with one forward pass.
 * eng_generate is the one-sequence convenience wrapper over the same loop. */
#ifndef WYE_ENGINE_ENGINE_H
#define WYE_ENGINE_ENGINE_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/chat.h"
#include "common/err.h"
#include "local-engine/sampler.h"

struct eng_model;
struct eng_ctx;
struct eng_pool;
struct eng_constraint; /* local-engine/constrain.h */

/* ---- models ---- */

/* Loads a GGUF model (llama or qwen2 architecture): validates every tensor's shape and type
 * against the hyper-parameters, loads the tokenizer, detects the chat template. On error,
 * errbuf names the problem (e.g. the tensor and both shapes). */
enum wye_err eng_model_load(const char *path, struct eng_model **out, char *errbuf, size_t errlen);
/* Loads only the tokenizer (and chat template) of a GGUF file; tensors are not required. */
enum wye_err eng_model_load_vocab(const char *path, struct eng_model **out, char *errbuf,
                                  size_t errlen);
/* Unmaps and frees; every context using the model must be destroyed first. NULL is a no-op. */
void eng_model_destroy(struct eng_model *m);

struct eng_model_info {
    const char *arch; /* "llama", "qwen2" */
    int32_t n_vocab, n_ctx_train, n_embd, n_layer, n_head, n_head_kv, n_ff;
    size_t matrix_bytes; /* weight bytes read per generated token (all matrices incl. output) */
    size_t repacked_bytes; /* of those, Q4_0 repacked for the AVX2 kernels (eng_q4_0r8_pack) */
    size_t copied_bytes;   /* the others copied out of the file into huge pages (64-byte padded
                            * each; 0 with WYE_NO_WEIGHT_COPY=1) */
    bool vocab_only;
};
void eng_model_get_info(const struct eng_model *m, struct eng_model_info *out);

/* Tokenizes text; with add_bos, a BOS (and EOS) is added if the model's metadata says so.
 * parse_special: "<|im_start|>"-style text becomes special tokens. TOOBIG if more than n_max. */
enum wye_err eng_model_tokenize(const struct eng_model *m, const char *text, size_t len,
                                bool add_bos, bool parse_special, int32_t *ids, size_t n_max,
                                size_t *n_out);
/* Applies the model's chat template (ChatML if unknown) with the generation prompt and
 * tokenizes the result with special tokens parsed. TOOBIG if more than n_max tokens. */
enum wye_err eng_model_tokenize_chat(const struct eng_model *m, const struct wye_chat_msg *msgs,
                                     size_t n_msgs, int32_t *ids, size_t n_max, size_t *n_out,
                                     char *errbuf, size_t errlen);
/* Text of one token (special tokens rendered when special). Returns bytes written (<= n). */
size_t eng_model_token_piece(const struct eng_model *m, int32_t id, char *buf, size_t n,
                             bool special);
/* The chat template family the model's prompts are rendered in: "chatml", "llama3", "qwen2",
 * ... (eng_chat_family_name; "chatml" when the template was not recognised). */
const char *eng_model_chat_family(const struct eng_model *m);

/* ---- contexts ---- */

/* What the KV cache stores. F32 (the default) keeps the reference outputs exact (the
 * stories260K goldens). F16 halves the cache's memory and the attention's memory traffic (as
 * llama.cpp does by default) at the price of rounding every key and value to 11 bits: the
 * stories260K Q8_0 goldens then hold for 100 tokens with the AVX2 kernels but diverge after
 * 71 with the scalar ones, and F32's position-0 logits move by 2.5e-4. */
enum eng_kv_type {
    ENG_KV_F32 = 0,
    ENG_KV_F16,
};

const char *eng_kv_type_name(enum eng_kv_type t);
/* "f32" or "f16" into *out; false for anything else. */
bool eng_kv_type_parse(const char *s, enum eng_kv_type *out);

struct eng_ctx_params {
    int32_t n_ctx;         /* tokens per sequence (prompt + generated); 0: min(train, 4096) */
    int32_t n_seq_max;     /* sequences that can be active at once; 0: 1 */
    int32_t n_batch;       /* tokens per forward pass (prompt chunks); 0: 64 */
    int32_t n_threads;     /* compute threads incl. the caller when pool is NULL; 0: 1 */
    struct eng_pool *pool; /* borrowed compute pool, or NULL to create one; contexts sharing
                            * a pool must be stepped from one thread (pool runs don't nest) */
    enum eng_kv_type kv_type; /* 0: ENG_KV_F32 */
};

/* Creates a context over model m (borrowed; must outlive the context). */
enum wye_err eng_ctx_create(struct eng_model *m, const struct eng_ctx_params *p,
                            struct eng_ctx **out, char *errbuf, size_t errlen);
void eng_ctx_destroy(struct eng_ctx *c);
int32_t eng_ctx_n_ctx(const struct eng_ctx *c);
const struct eng_model *eng_ctx_model(const struct eng_ctx *c);
bool eng_ctx_kv_f16(const struct eng_ctx *c); /* the KV cache holds F16 */

/* Low level (tests, bench): runs toks at positions [pos0, pos0+n) of sequence slot seq
 * (which no active generation may use; positions before pos0 must have been evaluated),
 * chunked by n_batch. When logits is not NULL it receives the n_vocab logits of the last
 * token. INVAL for a busy slot or a bad token, TOOBIG past n_ctx. */
enum wye_err eng_ctx_eval(struct eng_ctx *c, int32_t seq, int32_t pos0, const int32_t *toks,
                          size_t n, float *logits);

/* ---- generation ---- */

#define ENG_STOP_MAX 4      /* stop strings per sequence */
#define ENG_STOP_LEN_MAX 64 /* bytes per stop string */

enum eng_cb_ret {
    ENG_CB_CONTINUE = 0,
    ENG_CB_STOP,  /* end this sequence now (finish = CANCELLED) */
    ENG_CB_PAUSE, /* keep it but skip it in steps until eng_batch_resume (backpressure) */
};

struct eng_gen_params {
    struct eng_sampler_params sampling;
    int32_t max_tokens;             /* tokens to generate at most; 0: until n_ctx is full */
    const char *stop[ENG_STOP_MAX]; /* NUL-terminated stop strings (copied at add), or NULL */
    bool ignore_eos;                /* keep generating after EOS/EOG (bench) */
    /* Constrained decoding (NULL: none): every token is masked so that the answer is valid
     * JSON for this compiled schema (local-engine/constrain.h; borrowed until on_done).
     * The answer closes within max_tokens; it ends (STOP) once the value is complete even
     * with ignore_eos; stop strings are not applied (they could cut the JSON short). */
    const struct eng_constraint *constraint;
    /* Lazy constraint (with constraint; NULL: the mode above). NUL-terminated, 1 to
     * ENG_STOP_LEN_MAX bytes, copied at add. Generation is free (stop strings apply, EOS ends
     * it) until the answer ends with trigger; then the constraint applies until its value is
     * complete (nothing may follow it), then generation is free again and the trigger may fire
     * again. Text that may still become the trigger is held back like a stop string. A token
     * completing the trigger is refused (the sampler draws again) when the bytes after the
     * trigger do not start a valid value or the value could not close within max_tokens, so
     * every value the trigger opens closes. */
    const char *trigger;
    bool trigger_in_value; /* the trigger's bytes are the value's first bytes ("{\"name\"") */
    bool constrain_first;  /* with trigger: start inside a value, as if the trigger had just
                            * been written (the prompt should end with it) */
    /* With trigger (may be NULL), called with the sequence's ops arg. active: the trigger has
     * just completed (the text before it was delivered; the next on_text calls carry the
     * trigger's own text, then the value's; with constrain_first, called before the first
     * text). !active: the value's last byte was delivered; what follows is free text.
     * Returns as on_text does (STOP ends the sequence, PAUSE pauses it). */
    enum eng_cb_ret (*on_constraint)(void *arg, bool active);
};

enum eng_finish {
    ENG_FINISH_NONE = 0,
    ENG_FINISH_STOP,      /* EOS/EOG or a stop string */
    ENG_FINISH_LENGTH,    /* max_tokens or the context is full */
    ENG_FINISH_CANCELLED, /* cancel flag, or a callback returned ENG_CB_STOP */
    ENG_FINISH_ERROR,
};

/* "stop", "length", "cancelled", "error". */
const char *eng_finish_name(enum eng_finish f);

struct eng_seq_result {
    enum eng_finish finish;
    enum wye_err err;        /* with ENG_FINISH_ERROR */
    int32_t n_prompt, n_gen; /* tokens */
    int32_t n_prompt_cached; /* prompt tokens whose K/V were reused from the slot's cache */
    int64_t t_prompt_ns, t_gen_ns;
};

struct eng_seq_ops {
    /* A UTF-8-complete piece of the answer (never part of a stop string). May be NULL. */
    enum eng_cb_ret (*on_text)(void *arg, const char *text, size_t len);
    /* Each sampled token id, before its text (may be NULL). */
    enum eng_cb_ret (*on_token)(void *arg, int32_t id);
    /* The last call for the sequence; its slot is free again when this runs. May be NULL. */
    void (*on_done)(void *arg, const struct eng_seq_result *res);
};

/* Adds a sequence: prompt (copied) then generation with p. It takes the free slot whose
 * cache holds the longest prefix of the prompt (left by an earlier sequence) and reuses
 * those positions exactly (the output is the same as computing them again). cancel
 * (borrowed, may be NULL) is read before every step; set it from any thread. AGAIN if every
 * slot is busy; TOOBIG (with the numbers in errbuf) if prompt + max_tokens does not fit in
 * n_ctx or max_tokens is too small for the shortest text the constraint allows; INVAL for an
 * empty prompt or an out-of-range token. The first constrained add builds the context's
 * vocabulary trie (once; NOMEM if it cannot). On success *seq_id is the slot.
 * May be called from a callback (e.g. on_done, to start the next queued request). */
enum wye_err eng_batch_add(struct eng_ctx *c, const int32_t *prompt, size_t n_prompt,
                           const struct eng_gen_params *p, const struct eng_seq_ops *ops, void *arg,
                           const atomic_bool *cancel, int32_t *seq_id, char *errbuf, size_t errlen);
/* Ends a sequence now (on_done with CANCELLED). Unknown or free slots are ignored. */
void eng_batch_remove(struct eng_ctx *c, int32_t seq_id);
/* Un-pauses a sequence paused by ENG_CB_PAUSE. */
void eng_batch_resume(struct eng_ctx *c, int32_t seq_id);
/* Sequences added and not yet done (paused ones included). */
int32_t eng_batch_n_active(const struct eng_ctx *c);
/* Sequences that a step would advance (active and not paused). */
int32_t eng_batch_n_runnable(const struct eng_ctx *c);
/* One forward pass over every runnable sequence: a chunk of each prompt still being read
 * (up to n_batch tokens in all) and one new token for each generating sequence; callbacks
 * run before it returns. OK when nothing is runnable. */
enum wye_err eng_batch_step(struct eng_ctx *c);

/* Adds one sequence and steps c until it is done, calling ops as it goes (blocking; other
 * active sequences advance too). res gets the result; CANCELED if it was cancelled. */
enum wye_err eng_generate(struct eng_ctx *c, const int32_t *prompt, size_t n_prompt,
                          const struct eng_gen_params *p, const struct eng_seq_ops *ops, void *arg,
                          const atomic_bool *cancel, struct eng_seq_result *res, char *errbuf,
                          size_t errlen);

/* Default generation parameters (greedy off: temperature 0.8, top-k 40, top-p 0.95, min-p
 * 0.05, no repetition penalty, max_tokens 256). */
void eng_gen_params_default(struct eng_gen_params *p);

#endif
