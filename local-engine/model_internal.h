/* Internal view of a loaded model and of an inference context: hyper-parameters, per-layer
 * weight views into the GGUF mapping, the KV cache and the scratch arena. Shared by model.c
 * (loading), forward.c (the transformer), engine.c (sequences, generation) and the CLI tools.
 * A model is immutable once loaded (any thread may read it); a context belongs to one thread
 * at a time (the engine worker that steps it). */
#ifndef WYE_ENGINE_MODEL_INTERNAL_H
#define WYE_ENGINE_MODEL_INTERNAL_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "local-engine/chat_template.h"
#include "local-engine/engine.h"
#include "local-engine/gguf.h"
#include "local-engine/hugemem.h"
#include "local-engine/pool.h"
#include "local-engine/sampler.h"
#include "local-engine/tokenizer.h"

enum eng_arch { ENG_ARCH_LLAMA = 0, ENG_ARCH_QWEN2 = 1 };

struct eng_hparams {
    enum eng_arch arch;
    int32_t n_vocab;     /* rows of token_embd / output */
    int32_t n_ctx_train; /* <arch>.context_length */
    int32_t n_embd;
    int32_t n_layer;
    int32_t n_ff;
    int32_t n_head;
    int32_t n_head_kv;
    int32_t head_dim; /* n_embd / n_head (or <arch>.attention.key_length) */
    int32_t n_rot;    /* rotated dims per head (<= head_dim, even) */
    float rope_base;
    float rope_pos_scale; /* linear rope scaling: positions are multiplied by this (1: none) */
    float norm_eps;
    bool rope_neox; /* rotate halves (qwen2) instead of adjacent pairs (llama) */
};

/* A weight matrix in GGUF layout: m rows of k elements of type, borrowed from the mapping;
 * for Q4_0, also its first m / 8 * 8 rows repacked in groups of 8 (eng_q4_0r8_pack), which
 * the forward pass then uses instead. */
struct eng_wmat {
    const void *data;
    uint32_t type;
    int64_t k, m;
    size_t row_bytes;
    const void *r8; /* in the model's r8 buffer, or NULL */
};

struct eng_layer {
    const float *attn_norm;         /* (n_embd) */
    struct eng_wmat wq, wk, wv, wo; /* (q_dim x n_embd), (kv_dim x n_embd) x2, (n_embd x q_dim) */
    const float *bq, *bk, *bv;      /* (q_dim), (kv_dim), (kv_dim) or NULL */
    const float *ffn_norm;          /* (n_embd) */
    struct eng_wmat w_gate, w_up;   /* (n_ff x n_embd) */
    struct eng_wmat w_down;         /* (n_embd x n_ff) */
};

struct eng_model {
    struct eng_gguf *g;        /* owned: the mapping every weight view points into */
    struct eng_tokenizer *tok; /* owned */
    bool vocab_only;           /* loaded for tokenizing only: no weights */
    struct eng_hparams hp;
    struct eng_wmat tok_embd; /* (n_vocab x n_embd) */
    struct eng_wmat output;   /* (n_vocab x n_embd); == tok_embd when tied */
    bool tied;
    const float *output_norm; /* (n_embd) */
    struct eng_layer *layers; /* (n_layer) owned */
    struct eng_hugemem wbuf;  /* owned: the matrices in huge pages (place_weights), or none */
    size_t r8_bytes;          /* of wbuf: the repacked Q4_0 matrices */
    size_t copied_bytes;      /* of wbuf: the other matrices, copied from the file */
    float *rope_inv_freq;     /* (n_rot/2) owned: angle of pair i at pos p = p * inv_freq[i] */
    float *vecs;              /* owned: every norm/bias vector converted to F32 */
    size_t matrix_bytes;      /* bytes of every matrix read per token (incl. output) */
    int32_t n_vocab_tok;      /* tokens the tokenizer knows (<= n_vocab): sampled ids stay below */
    enum eng_chat_family chat;
    bool chat_known;
    bool chat_has_tmpl;      /* a template was present (but not recognised) */
    atomic_bool chat_warned; /* the ChatML fallback was logged (once per model) */
    char arch_name[16];
    char path[256];
};

/* One token of a forward batch. */
struct eng_btok {
    int32_t id;
    int32_t seq; /* sequence slot */
    int32_t pos; /* position in that sequence */
    int32_t out; /* row of the logits buffer to fill, or -1 */
};

/* The compute state of a context: KV cache and scratch, allocated once. */
struct eng_fwd {
    const struct eng_model *m;
    struct eng_pool *pool; /* borrowed */
    int32_t n_ctx;
    int32_t n_seq;
    int32_t n_batch;   /* tokens per forward pass */
    int32_t n_out_max; /* rows of logits per pass */
    void *k_cache;     /* (n_seq, n_layer, n_head_kv, n_ctx, head_dim), F32 or F16 */
    void *v_cache;     /* the same layout */
    struct eng_hugemem k_mem, v_mem; /* the caches' mappings, in huge pages */
    bool kv_f16;       /* the cache holds F16 */
    size_t kv_elt;     /* bytes per cached value: 4 or 2 */
    float *x;          /* (n_batch, n_embd) residual stream */
    float *xb;         /* (n_batch, max(n_embd, q_dim)) normed input / attention output */
    float *q;          /* (n_batch, q_dim) */
    float *k;          /* (n_batch, kv_dim) */
    float *v;          /* (n_batch, kv_dim) */
    float *hb;         /* (n_batch, n_ff) */
    float *hb2;        /* (n_batch, n_ff) */
    float *att;        /* per thread (att_per_thread floats): att_group x ATT_CHUNK scores, then
                        * att_group heads' chunk parts (att_chunks_max x (head_dim + 2) each) */
    size_t att_per_thread;
    float *att_split;       /* split attention's parts: 4 tokens x n_head heads' chunk parts */
    int32_t att_chunks_max; /* chunks of n_ctx positions */
    int32_t att_group;      /* query heads per KV head that one attention task may take */
    atomic_int *att_left;   /* split attention: chunks left per (token, task unit) */
    float *xo;              /* (n_out_max, n_embd) rows whose logits are wanted */
    float *logits;          /* (n_out_max, n_vocab) */
    float *rope_cs;         /* (n_batch, n_rot / 2, 2) cos and sin of each token's angles */
    void *xq;               /* activation quantization scratch */
    void *mem;              /* the one allocation behind the scratch above */
    /* attention.h's code for this CPU, chosen once (its AVX2 build or the generic one) */
    void (*att_fn)(void *arg, int64_t task, int thread);
    void (*silu)(float *g, const float *u, int64_t n);
};

enum wye_err eng_fwd_init(struct eng_fwd *f, const struct eng_model *m, struct eng_pool *pool,
                          int32_t n_ctx, int32_t n_seq, int32_t n_batch, int32_t n_out_max,
                          bool kv_f16, char *errbuf, size_t errlen);
void eng_fwd_cleanup(struct eng_fwd *f);
/* Runs toks (n <= n_batch) through the model; each token's K/V lands in its sequence's cache
 * at its position (tokens of one sequence must come in increasing position order, and every
 * earlier position of that sequence must already be cached). Logits of tokens with out >= 0
 * land in f->logits + out * n_vocab. */
void eng_fwd_run(struct eng_fwd *f, const struct eng_btok *toks, int32_t n);

/* For tests: one query head's attention over n positions of keys k and values v (rows of hd
 * F32 values, or F16 when f16) into out (hd), computed as the forward pass computes it (chunks
 * and their merge included), by the build for any CPU and by the AVX2/F16C build (call it only
 * where eng_kernels_name() is "avx2"); scratch holds eng_att_head_scratch(n, hd) floats. */
size_t eng_att_head_scratch(int32_t n, int32_t hd);
/* For tests: dst[0..8) = e^src[0..8) as softmax and SiLU compute it. */
void eng_exp8(float *dst, const float *src);
/* g[i] = silu(g[i]) * u[i] for i < n as the FFN computes it, by the build for any CPU and by
 * the AVX2 build (only where eng_kernels_name() is "avx2"); the same bits. */
void eng_silu_mul(float *g, const float *u, int64_t n);
void eng_silu_mul_avx2(float *g, const float *u, int64_t n);
void eng_att_head(const float *q, const void *k, const void *v, bool f16, int32_t n, int32_t hd,
                  float *scratch, float *out);
void eng_att_head_avx2(const float *q, const void *k, const void *v, bool f16, int32_t n,
                       int32_t hd, float *scratch, float *out);
/* Token embedding row of id into dst (n_embd). */
void eng_model_embed(const struct eng_model *m, int32_t id, float *dst);

/* Random-weight model files (mkmodel.c). The two test hooks write a malformed file. */
struct eng_mkmodel_opts {
    const char *shape; /* "smollm2-135m", "qwen2.5-0.5b", "tinyllama-1.1b", "tiny-qwen2", ... */
    uint32_t type;     /* enum eng_type of the matrices */
    const char *vocab_path; /* NULL: the shape's default under $WYE_SHARED_DIR/vocab */
    const char *out_path;
    uint64_t seed;
    const char *omit_tensor;      /* test hook: leave this tensor out */
    const char *bad_shape_tensor; /* test hook: write this matrix with half its rows */
    float rope_freq_factor;       /* > 0: add rope_freqs.weight with every factor = this */
    float rope_linear_factor;     /* > 0: declare linear rope scaling by this factor */
};
enum wye_err eng_mkmodel_write(const struct eng_mkmodel_opts *o, char *errbuf, size_t errlen);

#endif
