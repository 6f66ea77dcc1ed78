/* The transformer forward pass (llama / qwen2): RMSNorm, GQA attention over a preallocated
 * F32 KV cache with rope (adjacent pairs for llama, rotated halves for qwen2), SwiGLU FFN,
 * final norm and logits. One call runs a batch of tokens from any number of sequences, each
 * at its own position: the matmuls see all tokens at once (matrix-matrix), attention runs in
 * chunks of positions split per (token, KV head) or, for a few decoding tokens, per (token,
 * KV head, chunk) across the pool (its loops vectorized 8 wide on AVX2 CPUs, with the same
 * results bit for bit). Runs on the engine worker thread that owns the context
 * (plus the pool's threads inside eng_pool_run); allocates nothing after eng_fwd_init. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "common/alloc.h"
#include "local-engine/model_internal.h"
#include "local-engine/quant.h"

/* Below this many multiply-adds per layer, attention runs on the calling thread alone. */
#define ATT_POOL_MIN_WORK (64 * 1024)
/* Largest GQA group whose heads share one attention task. */
#define ATT_GROUP_MAX 32
/* Attention runs over a token's positions in chunks of this many: each chunk's softmax part
 * (exp(score - chunk max) * V summed, the max and the sum of the exps) is computed alone and
 * the parts merged in order, so the arithmetic depends on the positions only, never on how
 * the chunks were spread over tasks; up to one chunk it is the plain softmax. */
#define ATT_CHUNK 64
/* Up to this many tokens of a pass, when they have too few (token, KV head) tasks to keep
 * every thread busy, get one task per chunk instead (decoding one or two sequences). */
#define ATT_SPLIT_TOK_MAX 4
/* Floats of one chunk part of one head: the weighted sum of V, the max, the sum of exps. */
#define ATT_PART(hd) ((size_t)(hd) + 2)

static size_t align64(size_t n)
{
    return (n + 63) & ~(size_t)63;
}

static size_t act_bytes(const struct eng_wmat *w, int64_t n_tok)
{
    return eng_matmul_scratch_bytes(w->type, w->k, n_tok);
}

enum wye_err eng_fwd_init(struct eng_fwd *f, const struct eng_model *m, struct eng_pool *pool,
                          int32_t n_ctx, int32_t n_seq, int32_t n_batch, int32_t n_out_max,
                          char *errbuf, size_t errlen)
{
    memset(f, 0, sizeof(*f));
    const struct eng_hparams *hp = &m->hp;
    f->m = m;
    f->pool = pool;
    f->n_ctx = n_ctx;
    f->n_seq = n_seq;
    f->n_batch = n_batch;
    f->n_out_max = n_out_max;
    size_t E = (size_t)hp->n_embd, F = (size_t)hp->n_ff;
    size_t qd = (size_t)hp->n_head * (size_t)hp->head_dim;
    size_t kvd = (size_t)hp->n_head_kv * (size_t)hp->head_dim;
    size_t B = (size_t)n_batch, T = (size_t)eng_pool_size(pool);
    size_t wide = F > E ? F : E;
    int32_t group = hp->n_head / hp->n_head_kv;
    f->att_group = group <= ATT_GROUP_MAX ? group : 1;
    f->att_chunks_max = (n_ctx + ATT_CHUNK - 1) / ATT_CHUNK;
    size_t parts = (size_t)f->att_chunks_max * ATT_PART(hp->head_dim); /* one head's */
    f->att_per_thread = (size_t)f->att_group * (ATT_CHUNK + parts);
    size_t xbw = qd > E ? qd : E;

    size_t kv_elems = (size_t)n_seq * (size_t)hp->n_layer * (size_t)n_ctx;
    size_t kv_bytes;
    if (wye_mul_size(kv_elems, kvd * sizeof(float), &kv_bytes) != 0) {
        snprintf(errbuf, errlen, "KV cache of %d sequences x %d tokens is too large", n_seq, n_ctx);
        return WYE_ERR_TOOBIG;
    }
    size_t xq = act_bytes(&m->output, n_out_max);
    for (int32_t l = 0; l < hp->n_layer; l++) {
        const struct eng_layer *L = &m->layers[l];
        const struct eng_wmat *ws[] = {&L->wq,     &L->wk,   &L->wv,    &L->wo,
                                       &L->w_gate, &L->w_up, &L->w_down};
        for (size_t i = 0; i < sizeof(ws) / sizeof(ws[0]); i++) {
            size_t b = act_bytes(ws[i], n_batch);
            xq = b > xq ? b : xq;
        }
    }
    size_t sizes[] = {
        B * E * 4,                                          /* x */
        B * xbw * 4,                                        /* xb */
        B * qd * 4,                                         /* q */
        B * kvd * 4,                                        /* k */
        B * kvd * 4,                                        /* v */
        B * wide * 4,                                       /* hb */
        B * wide * 4,                                       /* hb2 */
        T * f->att_per_thread * 4,                          /* att */
        ATT_SPLIT_TOK_MAX * (size_t)hp->n_head * parts * 4, /* att_split */
        (size_t)n_out_max * E * 4,                          /* xo */
        (size_t)n_out_max * (size_t)hp->n_vocab * 4,        /* logits */
        B * (size_t)(hp->n_rot / 2) * 2 * 4,                /* rope_cs */
        xq,
    };
    size_t total = 0;
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        total += align64(sizes[i]);
    }
    f->k_cache = wye_calloc(kv_bytes / sizeof(float) ? kv_bytes / sizeof(float) : 1, sizeof(float));
    f->v_cache = wye_calloc(kv_bytes / sizeof(float) ? kv_bytes / sizeof(float) : 1, sizeof(float));
    f->mem = wye_calloc(1, total + 64);
    if (!f->k_cache || !f->v_cache || !f->mem) {
        snprintf(errbuf, errlen,
                 "out of memory for a KV cache of %zu MiB and %zu MiB of "
                 "scratch",
                 2 * kv_bytes >> 20, total >> 20);
        eng_fwd_cleanup(f);
        return WYE_ERR_NOMEM;
    }
    unsigned char *p = (unsigned char *)(((uintptr_t)f->mem + 63) & ~(uintptr_t)63);
    float **dst[] = {&f->x,   &f->xb,  &f->q,         &f->k,  &f->v,      &f->hb,
                     &f->hb2, &f->att, &f->att_split, &f->xo, &f->logits, &f->rope_cs};
    for (size_t i = 0; i < sizeof(dst) / sizeof(dst[0]); i++) {
        *dst[i] = (float *)p;
        p += align64(sizes[i]);
    }
    f->xq = p;
    return WYE_OK;
}

void eng_fwd_cleanup(struct eng_fwd *f)
{
    wye_free(f->k_cache);
    wye_free(f->v_cache);
    wye_free(f->mem);
    f->k_cache = f->v_cache = NULL;
    f->mem = NULL;
}

static void rmsnorm(float *out, const float *x, const float *w, int32_t n, float eps)
{
    float ss = 0.0f;
    for (int32_t i = 0; i < n; i++) {
        ss += x[i] * x[i];
    }
    float s = 1.0f / sqrtf(ss / (float)n + eps);
    for (int32_t i = 0; i < n; i++) {
        out[i] = x[i] * s * w[i];
    }
}

/* The cosine and sine of every rope angle of position pos into cs (n_rot / 2 pairs): once per
 * token and forward pass, shared by the queries and keys of every layer. */
static void rope_angles(const struct eng_model *m, int32_t pos, float *cs)
{
    const struct eng_hparams *hp = &m->hp;
    float p = (float)pos * hp->rope_pos_scale;
    for (int32_t i = 0; i < hp->n_rot / 2; i++) {
        float th = p * m->rope_inv_freq[i];
        cs[2 * i] = cosf(th);
        cs[2 * i + 1] = sinf(th);
    }
}

/* Rotates every head of vec (n_heads x head_dim) by the angles cs (rope_angles). */
static void rope(const struct eng_model *m, float *vec, int32_t n_heads, const float *cs)
{
    const struct eng_hparams *hp = &m->hp;
    int32_t half = hp->n_rot / 2;
    for (int32_t i = 0; i < half; i++) {
        float c = cs[2 * i], s = cs[2 * i + 1];
        for (int32_t h = 0; h < n_heads; h++) {
            float *v = vec + (size_t)h * (size_t)hp->head_dim;
            int32_t a = hp->rope_neox ? i : 2 * i;
            int32_t b = hp->rope_neox ? i + half : 2 * i + 1;
            float v0 = v[a], v1 = v[b];
            v[a] = v0 * c - v1 * s;
            v[b] = v0 * s + v1 * c;
        }
    }
}

static void matmul_multi(struct eng_fwd *f, const struct eng_wmat *const *ws, float *const *ys,
                         int n_parts, const float *x, int32_t n);

static void matmul(struct eng_fwd *f, const struct eng_wmat *w, const float *x, int32_t n, float *y)
{
    if (w->r8) {
        matmul_multi(f, &w, &y, 1, x, n); /* prepares the activations, splits by 8 rows */
        return;
    }
    eng_matmul(f->pool, w->type, w->data, w->m, w->k, x, n, y, f->xq);
}

/* The activations x (n tokens) prepared once for the matrices ws (same activation type and
 * row length): for repacked Q4_0 matrices only, with the per-token block scales and sums
 * their kernels read. */
static void act_prepare(struct eng_fwd *f, const struct eng_wmat *const *ws, int n_parts,
                        const float *x, int32_t n, struct eng_act *a)
{
    bool r8 = true;
    for (int i = 0; i < n_parts; i++) {
        r8 &= ws[i]->r8 != NULL;
    }
    if (r8) {
        eng_act_prepare_q4_0r8(f->pool, x, ws[0]->k, n, f->xq, a);
    } else {
        eng_act_prepare(f->pool, ws[0]->type, x, ws[0]->k, n, f->xq, a);
    }
}

/* Rows [r0, r1) of x W^T into y (n_tok x w->m): from the repacked copy when there is one, for
 * all but the last m % 8 rows (every split below starts rows at multiples of 8). */
static void wmat_rows(const struct eng_wmat *w, const struct eng_act *a, float *y, int64_t r0,
                      int64_t r1)
{
    int64_t m8 = w->r8 ? w->m / 8 * 8 : 0;
    if (r0 < m8) {
        eng_matmul_act_rows_q4_0r8(w->r8, a, y, w->m, r0, r1 < m8 ? r1 : m8);
    }
    if (r1 > m8) {
        eng_matmul_act_rows(w->type, w->data, w->row_bytes, a, y, w->m, r0 > m8 ? r0 : m8, r1);
    }
}

/* Several matrices applied to the same activations (Q/K/V; gate/up) in ONE pool run, the
 * activations quantized once: fewer wake-ups of the pool per layer. Each output row is
 * computed exactly as eng_matmul computes it (eng_matmul_rows over a row range). */
#define MM_PARTS_MAX 3

struct mm_part {
    const struct eng_wmat *w;
    float *y;      /* (n_tok x w->m) */
    int64_t task0; /* first task of this part */
    int64_t rpt;   /* rows per task */
};

struct mm_multi {
    struct mm_part p[MM_PARTS_MAX];
    int n;
    struct eng_act a; /* the activations, prepared once */
};

static void mm_run_rows(const struct mm_multi *j, const struct mm_part *p, int64_t r0, int64_t r1)
{
    wmat_rows(p->w, &j->a, p->y, r0, r1);
}

static void mm_task(void *arg, int64_t task, int thread)
{
    (void)thread;
    const struct mm_multi *j = arg;
    int i = j->n - 1;
    while (i > 0 && task < j->p[i].task0) {
        i--;
    }
    const struct mm_part *p = &j->p[i];
    int64_t r0 = (task - p->task0) * p->rpt;
    int64_t r1 = r0 + p->rpt < p->w->m ? r0 + p->rpt : p->w->m;
    mm_run_rows(j, p, r0, r1);
}

static void matmul_multi(struct eng_fwd *f, const struct eng_wmat *const *ws, float *const *ys,
                         int n_parts, const float *x, int32_t n)
{
    const struct eng_wmat *w0 = ws[0];
    uint32_t at = eng_act_type_of(w0->type);
    bool same = true;
    for (int i = 1; i < n_parts; i++) {
        same &= eng_act_type_of(ws[i]->type) == at && ws[i]->k == w0->k;
    }
    if (!same) {
        for (int i = 0; i < n_parts; i++) {
            matmul(f, ws[i], x, n, ys[i]);
        }
        return;
    }
    struct mm_multi j = {.n = n_parts};
    act_prepare(f, ws, n_parts, x, n, &j.a);
    int nth = eng_pool_size(f->pool);
    int64_t tasks = 0;
    for (int i = 0; i < n_parts; i++) {
        struct mm_part *p = &j.p[i];
        p->w = ws[i];
        p->y = ys[i];
        if (nth == 1) {
            mm_run_rows(&j, p, 0, p->w->m);
            continue;
        }
        /* ~8 tasks per thread per matrix, at least 16 rows (a multiple of 8, as the repacked
         * Q4_0 kernels want) each. */
        int64_t rpt = (p->w->m + (int64_t)nth * 8 - 1) / ((int64_t)nth * 8);
        rpt = rpt < 16 ? 16 : (rpt + 7) / 8 * 8;
        p->rpt = rpt;
        p->task0 = tasks;
        tasks += (p->w->m + rpt - 1) / rpt;
    }
    if (nth > 1) {
        eng_pool_run(f->pool, mm_task, &j, tasks);
    }
}

/* 8 floats as one value (GCC/clang vector extension): element-wise IEEE operations, so a
 * lane computes exactly what a scalar float would; 2 SSE or 1 AVX register. */
typedef float v8f __attribute__((vector_size(32)));

/* Macros, not functions: passing 32-byte vectors by value has no fixed ABI without AVX. */
#define V8F_LOAD(v, p) memcpy(&(v), (p), sizeof(v8f))
#define V8F_REDUCE(a)                                                                              \
    ((((a)[0] + (a)[4]) + ((a)[1] + (a)[5])) + (((a)[2] + (a)[6]) + ((a)[3] + (a)[7])))

typedef int32_t v8i __attribute__((vector_size(32)));
typedef uint32_t v8u __attribute__((vector_size(32)));

#define V8F_SPLAT(c) ((v8f){(c), (c), (c), (c), (c), (c), (c), (c)})

/* dst[0..8) = e^src[0..8), within 2 ulp of expf (Cephes' expf: x = n ln2 + r with |r| <=
 * ln2 / 2 in two steps, a degree-6 polynomial for e^r, 2^n from the exponent bits); inputs
 * are clamped to [-87.33, 88.37], so results stay normal and finite (NaN: unspecified).
 * Plain vector code with no contraction: the same bits from every caller and kernel path.
 * Softmax and SiLU call it 8 values at a time instead of libm's expf one at a time. */
static inline __attribute__((always_inline)) void exp8(float *dst, const float *src)
{
    v8f x, half = V8F_SPLAT(0.5f), lo = V8F_SPLAT(-87.33f), hi = V8F_SPLAT(88.37f);
    V8F_LOAD(x, src);
    v8i m = x < lo;
    x = (v8f)((m & (v8i)lo) | (~m & (v8i)x));
    m = x > hi;
    x = (v8f)((m & (v8i)hi) | (~m & (v8i)x));
    v8f t = x * V8F_SPLAT(1.44269504088896341f);
    v8i sign = (v8i)t & (v8i)V8F_SPLAT(-0.0f);
    v8i n = __builtin_convertvector(t + (v8f)(sign | (v8i)half), v8i); /* round half away */
    v8f fn = __builtin_convertvector(n, v8f);
    v8f r = x - fn * V8F_SPLAT(0.693359375f);
    r = r - fn * V8F_SPLAT(-2.12194440e-4f);
    v8f y = V8F_SPLAT(1.9875691500e-4f);
    y = y * r + V8F_SPLAT(1.3981999507e-3f);
    y = y * r + V8F_SPLAT(8.3334519073e-3f);
    y = y * r + V8F_SPLAT(4.1665795894e-2f);
    y = y * r + V8F_SPLAT(1.6666665459e-1f);
    y = y * r + V8F_SPLAT(5.0000001201e-1f);
    y = y * (r * r) + r + V8F_SPLAT(1.0f);
    v8f p2 = (v8f)(((v8u)n + 127u) << 23);
    y *= p2;
    memcpy(dst, &y, sizeof(y));
}

/* g[i] = silu(g[i]) * u[i] = g / (1 + e^-g) * u for i < n, 8 at a time (a short tail through
 * a padded copy, with the same arithmetic). */
static inline __attribute__((always_inline)) void silu_mul8(float *g, const float *u)
{
    v8f gv, uv, ev, ng;
    V8F_LOAD(gv, g);
    V8F_LOAD(uv, u);
    ng = -gv;
    exp8((float *)&ev, (const float *)&ng);
    gv = gv / (V8F_SPLAT(1.0f) + ev) * uv;
    memcpy(g, &gv, sizeof(gv));
}

static void silu_mul(float *g, const float *u, int64_t n)
{
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        silu_mul8(g + i, u + i);
    }
    if (i < n) {
        float gb[8] = {0}, ub[8] = {0};
        memcpy(gb, g + i, (size_t)(n - i) * sizeof(float));
        memcpy(ub, u + i, (size_t)(n - i) * sizeof(float));
        silu_mul8(gb, ub);
        memcpy(g + i, gb, (size_t)(n - i) * sizeof(float));
    }
}

/* The FFN's gate and up products and SwiGLU in one pool run: each task computes the same
 * rows of both matrices and then hb = silu(gate) * up on them, so the activation function
 * is split across the threads too instead of running on the caller after a join. Every
 * element is computed exactly as matmul_multi + the SwiGLU loop compute it. */
struct swiglu_job {
    const struct eng_wmat *gate, *up;
    float *g, *u; /* (n_tok x m): silu(gate) * up ends up in g */
    int64_t m, rpt;
    int32_t n_tok;
    struct eng_act a;
};

static void swiglu_rows(const struct swiglu_job *j, int64_t r0, int64_t r1)
{
    const struct eng_wmat *gw = j->gate, *uw = j->up;
    wmat_rows(gw, &j->a, j->g, r0, r1);
    wmat_rows(uw, &j->a, j->u, r0, r1);
    for (int32_t t = 0; t < j->n_tok; t++) {
        float *g = j->g + (size_t)t * (size_t)j->m, *u = j->u + (size_t)t * (size_t)j->m;
        silu_mul(g + r0, u + r0, r1 - r0);
    }
}

static void swiglu_task(void *arg, int64_t task, int thread)
{
    (void)thread;
    const struct swiglu_job *j = arg;
    int64_t r0 = task * j->rpt;
    swiglu_rows(j, r0, r0 + j->rpt < j->m ? r0 + j->rpt : j->m);
}

/* f->hb = silu(xb W_gate^T) * (xb W_up^T) for n tokens (f->hb2 is scratch). */
static void ffn_swiglu(struct eng_fwd *f, const struct eng_layer *L, int32_t n)
{
    const struct eng_wmat *gw = &L->w_gate, *uw = &L->w_up;
    if (eng_act_type_of(gw->type) != eng_act_type_of(uw->type) || gw->k != uw->k ||
        gw->m != uw->m) {
        const struct eng_wmat *gu[2] = {gw, uw};
        float *const gu_y[2] = {f->hb, f->hb2};
        matmul_multi(f, gu, gu_y, 2, f->xb, n);
        for (int32_t t = 0; t < n; t++) {
            size_t o = (size_t)t * (size_t)gw->m;
            silu_mul(f->hb + o, f->hb2 + o, gw->m);
        }
        return;
    }
    struct swiglu_job j = {.gate = gw, .up = uw, .g = f->hb, .u = f->hb2, .m = gw->m, .n_tok = n};
    const struct eng_wmat *gu[2] = {gw, uw};
    act_prepare(f, gu, 2, f->xb, n, &j.a);
    int nth = eng_pool_size(f->pool);
    if (nth == 1) {
        swiglu_rows(&j, 0, j.m);
        return;
    }
    /* ~8 tasks per thread, at least 16 rows (a multiple of 8) each, as matmul_multi */
    int64_t rpt = (j.m + (int64_t)nth * 8 - 1) / ((int64_t)nth * 8);
    j.rpt = rpt < 16 ? 16 : (rpt + 7) / 8 * 8;
    eng_pool_run(f->pool, swiglu_task, &j, (j.m + j.rpt - 1) / j.rpt);
}

/* Dot product in 8 interleaved partial sums (the compiler turns them into SIMD lanes; a
 * single running sum cannot be vectorised without reassociating). The order is fixed, so
 * the result does not depend on the batch or the thread. */
static inline __attribute__((always_inline)) float dot(const float *a, const float *b, int32_t n)
{
    float acc[8] = {0};
    int32_t i = 0;
    for (; i + 8 <= n; i += 8) {
        for (int j = 0; j < 8; j++) {
            acc[j] += a[i + j] * b[i + j];
        }
    }
    float s = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    for (; i < n; i++) {
        s += a[i] * b[i];
    }
    return s;
}

struct att_job {
    struct eng_fwd *f;
    const struct eng_btok *toks;
    int32_t layer;
    int32_t heads_per_task; /* 1, or the GQA group size (<= f->att_group) */
    int32_t units;          /* heads / heads_per_task: the tasks of a token when not split */
    bool split;             /* one task per (token, unit, chunk); merged by att_merge_split */
    int64_t task0[ATT_SPLIT_TOK_MAX + 1]; /* split: the first task of each token */
};

/* dot(q, k + p * ks) for the 4 positions p = 0..3: the same operations in the same order as
 * dot() for each, interleaved so that the 4 addition chains overlap. */
static inline __attribute__((always_inline)) void dot4(const float *q, const float *k, size_t ks,
                                                       int32_t n, float *out)
{
    v8f a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0};
    int32_t i = 0;
    for (; i + 8 <= n; i += 8) {
        v8f qv, k0, k1, k2, k3;
        V8F_LOAD(qv, q + i);
        V8F_LOAD(k0, k + i);
        V8F_LOAD(k1, k + ks + i);
        V8F_LOAD(k2, k + 2 * ks + i);
        V8F_LOAD(k3, k + 3 * ks + i);
        a0 += qv * k0;
        a1 += qv * k1;
        a2 += qv * k2;
        a3 += qv * k3;
    }
    float s0 = V8F_REDUCE(a0), s1 = V8F_REDUCE(a1), s2 = V8F_REDUCE(a2), s3 = V8F_REDUCE(a3);
    for (; i < n; i++) {
        s0 += q[i] * k[i];
        s1 += q[i] * k[ks + i];
        s2 += q[i] * k[2 * ks + i];
        s3 += q[i] * k[3 * ks + i];
    }
    out[0] = s0, out[1] = s1, out[2] = s2, out[3] = s3;
}

/* out[0..hd) = sum over positions p in order of w[p] * scale * v[p] (scale 1: plain weights):
 * 64 outputs per pass in 8 registers when wide (AVX2), else 32 in 4; each output element sees
 * the same multiplies and adds in the same order either way. */
static inline __attribute__((always_inline)) void att_wsum(const float *w, float scale,
                                                           const float *vc, size_t rs, int32_t n,
                                                           int32_t hd, bool wide, float *out)
{
    int32_t i = 0;
    for (; wide && i + 64 <= hd; i += 64) {
        v8f acc[8] = {{0}};
        for (int32_t p = 0; p < n; p++) {
            const float *v = vc + (size_t)p * rs + i;
            float x = w[p] * scale;
            v8f xv = {x, x, x, x, x, x, x, x};
            for (int u = 0; u < 8; u++) {
                v8f vu;
                V8F_LOAD(vu, v + 8 * u);
                acc[u] += xv * vu;
            }
        }
        memcpy(out + i, acc, sizeof(acc));
    }
    for (; i + 32 <= hd; i += 32) {
        v8f o0 = {0}, o1 = {0}, o2 = {0}, o3 = {0};
        for (int32_t p = 0; p < n; p++) {
            const float *v = vc + (size_t)p * rs + i;
            float x = w[p] * scale;
            v8f xv = {x, x, x, x, x, x, x, x}, v0, v1, v2, v3;
            V8F_LOAD(v0, v);
            V8F_LOAD(v1, v + 8);
            V8F_LOAD(v2, v + 16);
            V8F_LOAD(v3, v + 24);
            o0 += xv * v0;
            o1 += xv * v1;
            o2 += xv * v2;
            o3 += xv * v3;
        }
        memcpy(out + i, &o0, sizeof(o0));
        memcpy(out + i + 8, &o1, sizeof(o1));
        memcpy(out + i + 16, &o2, sizeof(o2));
        memcpy(out + i + 24, &o3, sizeof(o3));
    }
    for (; i < hd; i++) {
        float acc = 0.0f;
        for (int32_t p = 0; p < n; p++) {
            acc += w[p] * scale * vc[(size_t)p * rs + (size_t)i];
        }
        out[i] = acc;
    }
}

/* Attention of hpt query heads (q: hpt x hd, consecutive) sharing one KV head over the
 * positions [p0, p1) of its keys kc and values vc (rows of hd floats), p1 - p0 <= ATT_CHUNK.
 * Each K row is read once for the group (GQA; V rows once per head, the later ones from
 * cache), and every head's arithmetic is the same whatever the group. Scores go 4 positions
 * at a time (independent chains). Into dst, one head every dst_hs floats: when whole (the
 * chunk is all the positions), the normalized output (hd); otherwise the chunk's part: the
 * unnormalized sum of exp(score - max) * v (hd), the max and the sum of the exps. sc is
 * scratch of hpt x ATT_CHUNK floats. */
static inline __attribute__((always_inline)) void
att_chunk(const float *q, const float *kc, const float *vc, int32_t hd, int32_t hpt, int32_t p0,
          int32_t p1, float *sc, bool wide, bool whole, float *dst, size_t dst_hs)
{
    size_t rs = (size_t)hd;
    float scale = 1.0f / sqrtf((float)hd);
    int32_t n = p1 - p0;
    kc += (size_t)p0 * rs;
    vc += (size_t)p0 * rs;
    float mx[ATT_GROUP_MAX];
    for (int32_t g = 0; g < hpt; g++) {
        mx[g] = -INFINITY;
    }
    int32_t p = 0;
    for (; p + 4 <= n; p += 4) {
        const float *k = kc + (size_t)p * rs;
        for (int32_t g = 0; g < hpt; g++) {
            float d[4], *a = sc + (size_t)g * ATT_CHUNK + p;
            dot4(q + (size_t)g * (size_t)hd, k, rs, hd, d);
            for (int u = 0; u < 4; u++) {
                a[u] = d[u] * scale;
                mx[g] = a[u] > mx[g] ? a[u] : mx[g];
            }
        }
    }
    for (; p < n; p++) {
        for (int32_t g = 0; g < hpt; g++) {
            float *a = sc + (size_t)g * ATT_CHUNK + p;
            *a = dot(q + (size_t)g * (size_t)hd, kc + (size_t)p * rs, hd) * scale;
            mx[g] = *a > mx[g] ? *a : mx[g];
        }
    }
    for (int32_t g = 0; g < hpt; g++) {
        float *a = sc + (size_t)g * ATT_CHUNK, sum = 0.0f;
        v8f mv = V8F_SPLAT(mx[g]), av;
        for (p = 0; p + 8 <= n; p += 8) {
            V8F_LOAD(av, a + p);
            av -= mv;
            exp8(a + p, (const float *)&av);
        }
        if (p < n) {
            float b[8] = {0};
            memcpy(b, a + p, (size_t)(n - p) * sizeof(float));
            V8F_LOAD(av, b);
            av -= mv;
            exp8(b, (const float *)&av);
            memcpy(a + p, b, (size_t)(n - p) * sizeof(float));
        }
        for (p = 0; p < n; p++) {
            sum += a[p];
        }
        float *d = dst + (size_t)g * dst_hs;
        if (whole) {
            att_wsum(a, 1.0f / sum, vc, rs, n, hd, wide, d);
        } else {
            att_wsum(a, 1.0f, vc, rs, n, hd, wide, d);
            d[hd] = mx[g];
            d[hd + 1] = sum;
        }
    }
}

/* One head's output from its n_ch chunk parts (ATT_PART floats apart, in position order):
 * each part weighted by exp(its max - the overall max), in chunk order. Overwrites the parts'
 * max slots. Plain vector code: the same result from every caller. */
static inline __attribute__((always_inline)) void att_merge(float *part, int32_t n_ch, int32_t hd,
                                                            float *out)
{
    size_t ps = ATT_PART(hd);
    float M = -INFINITY, S = 0.0f;
    for (int32_t c = 0; c < n_ch; c++) {
        float m = part[(size_t)c * ps + (size_t)hd];
        M = m > M ? m : M;
    }
    for (int32_t c = 0; c < n_ch; c++) {
        float *pt = part + (size_t)c * ps;
        float w = expf(pt[hd] - M);
        pt[hd] = w;
        S += pt[hd + 1] * w;
    }
    float inv = 1.0f / S;
    int32_t i = 0;
    for (; i + 8 <= hd; i += 8) {
        v8f acc = {0}, o;
        for (int32_t c = 0; c < n_ch; c++) {
            const float *pt = part + (size_t)c * ps;
            float w = pt[hd];
            v8f wv = {w, w, w, w, w, w, w, w};
            V8F_LOAD(o, pt + i);
            acc += o * wv;
        }
        v8f iv = {inv, inv, inv, inv, inv, inv, inv, inv};
        acc *= iv;
        memcpy(out + i, &acc, sizeof(acc));
    }
    for (; i < hd; i++) {
        float acc = 0.0f;
        for (int32_t c = 0; c < n_ch; c++) {
            acc += part[(size_t)c * ps + (size_t)i] * part[(size_t)c * ps + (size_t)hd];
        }
        out[i] = acc * inv;
    }
}

static int32_t att_chunks(int32_t n_pos)
{
    return (n_pos + ATT_CHUNK - 1) / ATT_CHUNK;
}

/* Attention of token t's query heads [h0, h0 + hpt) (one KV head) over chunks [c0, c1) of its
 * positions. Whole (c0 == 0, c1 == all): the output into xb, through the thread's part
 * scratch when there are several chunks. Otherwise (split): the parts into f->att_split. */
static inline __attribute__((always_inline)) void att_run(const struct att_job *j, int64_t t,
                                                          int32_t h0, int32_t c0, int32_t c1,
                                                          int thread, bool wide)
{
    struct eng_fwd *f = j->f;
    const struct eng_hparams *hp = &f->m->hp;
    int32_t hd = hp->head_dim, hpt = j->heads_per_task;
    size_t qd = (size_t)hp->n_head * (size_t)hd;
    int32_t kvh = h0 / (hp->n_head / hp->n_head_kv);
    const struct eng_btok *bt = &j->toks[t];
    size_t base =
        ((((size_t)bt->seq * (size_t)hp->n_layer + (size_t)j->layer) * (size_t)hp->n_head_kv +
          (size_t)kvh) *
         (size_t)f->n_ctx) *
        (size_t)hd;
    const float *kc = f->k_cache + base, *vc = f->v_cache + base;
    const float *q = f->q + (size_t)t * qd + (size_t)h0 * (size_t)hd;
    float *scr = f->att + (size_t)thread * f->att_per_thread;
    float *out = f->xb + (size_t)t * qd + (size_t)h0 * (size_t)hd;
    int32_t n = bt->pos + 1, n_ch = att_chunks(n);
    size_t ps = ATT_PART(hd), hs = (size_t)f->att_chunks_max * ps; /* one head's parts */
    if (n_ch == 1) {
        att_chunk(q, kc, vc, hd, hpt, 0, n, scr, wide, true, out, (size_t)hd);
        return;
    }
    float *parts = j->split ? f->att_split + ((size_t)t * (size_t)hp->n_head + (size_t)h0) * hs
                            : scr + (size_t)ATT_CHUNK * (size_t)f->att_group;
    for (int32_t c = c0; c < c1; c++) {
        int32_t p0 = c * ATT_CHUNK, p1 = p0 + ATT_CHUNK < n ? p0 + ATT_CHUNK : n;
        /* the part of head g, chunk c at g * hs + c * ps */
        att_chunk(q, kc, vc, hd, hpt, p0, p1, scr, wide, false, parts + (size_t)c * ps, hs);
    }
    if (!j->split) {
        for (int32_t g = 0; g < hpt; g++) {
            att_merge(parts + (size_t)g * hs, n_ch, hd, out + (size_t)g * (size_t)hd);
        }
    }
}

/* Task -> (token, heads, chunks): (token, unit) when whole, (token, chunk, unit) when split. */
static inline __attribute__((always_inline)) void att_body(void *arg, int64_t task, int thread,
                                                           bool wide)
{
    const struct att_job *j = arg;
    int32_t hpt = j->heads_per_task;
    if (!j->split) {
        int64_t t = task / j->units;
        int32_t h0 = (int32_t)(task % j->units) * hpt;
        att_run(j, t, h0, 0, att_chunks(j->toks[t].pos + 1), thread, wide);
        return;
    }
    int64_t t = 0;
    while (task >= j->task0[t + 1]) {
        t++;
    }
    /* chunk-major: the short last chunks are taken last */
    int64_t local = task - j->task0[t];
    int32_t c = (int32_t)(local / j->units), h0 = (int32_t)(local % j->units) * hpt;
    att_run(j, t, h0, c, c + 1, thread, wide);
}

static void att_task(void *arg, int64_t task, int thread)
{
    att_body(arg, task, thread, false);
}

#if defined(__x86_64__) && defined(__GNUC__)
/* The same code vectorized 8 floats wide where the kernels are AVX2 (checked at run time):
 * each lane of the dot's partial sums and each output element see the same multiplies and
 * adds in the same order (ISO C mode: no contraction into FMA, and FMA is not enabled
 * here), so the result is bit-identical to att_task's. About twice as fast. */
__attribute__((target("avx2"))) static void att_task_avx2(void *arg, int64_t task, int thread)
{
    att_body(arg, task, thread, true);
}
#define ATT_TASK_AVX2 att_task_avx2
#else
#define ATT_TASK_AVX2 att_task
#endif

void eng_exp8(float *dst, const float *src)
{
    exp8(dst, src);
}

size_t eng_att_head_scratch(int32_t n, int32_t hd)
{
    return ATT_CHUNK + (size_t)att_chunks(n) * ATT_PART(hd);
}

void eng_att_head(const float *q, const float *k, const float *v, int32_t n, int32_t hd,
                  float *scratch, float *out)
{
    int32_t n_ch = att_chunks(n);
    if (n_ch == 1) {
        att_chunk(q, k, v, hd, 1, 0, n, scratch, false, true, out, (size_t)hd);
        return;
    }
    float *parts = scratch + ATT_CHUNK;
    for (int32_t c = 0; c < n_ch; c++) {
        int32_t p0 = c * ATT_CHUNK, p1 = p0 + ATT_CHUNK < n ? p0 + ATT_CHUNK : n;
        att_chunk(q, k, v, hd, 1, p0, p1, scratch, false, false, parts + (size_t)c * ATT_PART(hd),
                  ATT_PART(hd));
    }
    att_merge(parts, n_ch, hd, out);
}

/* After a split run: every head of the split tokens with several chunks, merged into xb. */
static void att_merge_split(const struct att_job *j, int32_t n)
{
    struct eng_fwd *f = j->f;
    const struct eng_hparams *hp = &f->m->hp;
    int32_t hd = hp->head_dim;
    size_t qd = (size_t)hp->n_head * (size_t)hd, hs = (size_t)f->att_chunks_max * ATT_PART(hd);
    for (int32_t t = 0; t < n; t++) {
        int32_t n_ch = att_chunks(j->toks[t].pos + 1);
        for (int32_t h = 0; n_ch > 1 && h < hp->n_head; h++) {
            att_merge(f->att_split + ((size_t)t * (size_t)hp->n_head + (size_t)h) * hs, n_ch, hd,
                      f->xb + (size_t)t * qd + (size_t)h * (size_t)hd);
        }
    }
}

static void add_bias(float *y, const float *b, int32_t n, size_t d)
{
    if (!b) {
        return;
    }
    for (int32_t t = 0; t < n; t++) {
        float *r = y + (size_t)t * d;
        for (size_t i = 0; i < d; i++) {
            r[i] += b[i];
        }
    }
}

void eng_fwd_run(struct eng_fwd *f, const struct eng_btok *toks, int32_t n)
{
    const struct eng_model *m = f->m;
    const struct eng_hparams *hp = &m->hp;
    WYE_ASSERT(n > 0 && n <= f->n_batch);
    int32_t E = hp->n_embd;
    size_t qd = (size_t)hp->n_head * (size_t)hp->head_dim;
    size_t kvd = (size_t)hp->n_head_kv * (size_t)hp->head_dim;

    void (*att_fn)(void *, int64_t, int) =
        strcmp(eng_kernels_name(), "avx2") == 0 ? ATT_TASK_AVX2 : att_task;
    int64_t att_work = 0; /* multiply-adds of attention per layer */
    int32_t pos_max = 0;
    for (int32_t t = 0; t < n; t++) {
        att_work += 2 * (int64_t)(toks[t].pos + 1) * (int64_t)qd;
        pos_max = toks[t].pos > pos_max ? toks[t].pos : pos_max;
        WYE_ASSERT(toks[t].id >= 0 && toks[t].id < hp->n_vocab);
        WYE_ASSERT(toks[t].seq >= 0 && toks[t].seq < f->n_seq);
        WYE_ASSERT(toks[t].pos >= 0 && toks[t].pos < f->n_ctx);
        eng_model_embed(m, toks[t].id, f->x + (size_t)t * (size_t)E);
        rope_angles(m, toks[t].pos, f->rope_cs + (size_t)t * (size_t)hp->n_rot);
    }
    for (int32_t l = 0; l < hp->n_layer; l++) {
        const struct eng_layer *L = &m->layers[l];
        for (int32_t t = 0; t < n; t++) {
            rmsnorm(f->xb + (size_t)t * (size_t)E, f->x + (size_t)t * (size_t)E, L->attn_norm, E,
                    hp->norm_eps);
        }
        const struct eng_wmat *qkv[3] = {&L->wq, &L->wk, &L->wv};
        float *const qkv_y[3] = {f->q, f->k, f->v};
        matmul_multi(f, qkv, qkv_y, 3, f->xb, n);
        add_bias(f->q, L->bq, n, qd);
        add_bias(f->k, L->bk, n, kvd);
        add_bias(f->v, L->bv, n, kvd);
        for (int32_t t = 0; t < n; t++) {
            float *k = f->k + (size_t)t * kvd;
            const float *cs = f->rope_cs + (size_t)t * (size_t)hp->n_rot;
            rope(m, f->q + (size_t)t * qd, hp->n_head, cs);
            rope(m, k, hp->n_head_kv, cs);
            /* each KV head's positions contiguous: attention streams them in order */
            size_t hd = (size_t)hp->head_dim, n_ctx = (size_t)f->n_ctx;
            size_t off = (((size_t)toks[t].seq * (size_t)hp->n_layer + (size_t)l) *
                              (size_t)hp->n_head_kv * n_ctx +
                          (size_t)toks[t].pos) *
                         hd;
            for (int32_t h = 0; h < hp->n_head_kv; h++) {
                size_t o = off + (size_t)h * n_ctx * hd;
                memcpy(f->k_cache + o, k + (size_t)h * hd, hd * sizeof(float));
                memcpy(f->v_cache + o, f->v + (size_t)t * kvd + (size_t)h * hd, hd * sizeof(float));
            }
        }
        /* Whole GQA groups per task when that still splits evenly enough over the threads
         * (SmolLM2's 3 KV heads of one decoding token on 2 threads would run 2:1; its 9
         * single heads run 5:4), or when the few tokens' chunks are tasks of their own. */
        int32_t group = hp->n_head / hp->n_head_kv;
        int64_t n_groups = (int64_t)n * hp->n_head_kv, nth = eng_pool_size(f->pool);
        bool can_group = group <= f->att_group;
        int64_t units = can_group ? hp->n_head_kv : hp->n_head; /* tasks per token */
        bool split = nth > 1 && n <= ATT_SPLIT_TOK_MAX && (int64_t)n * units < 2 * nth &&
                     att_work >= ATT_POOL_MIN_WORK && att_chunks(pos_max + 1) > 1;
        bool even = n_groups % nth == 0 || n_groups >= 4 * nth;
        int32_t hpt = can_group && (split || (n_groups >= nth && even)) ? group : 1;
        struct att_job job = {.f = f,
                              .toks = toks,
                              .layer = l,
                              .heads_per_task = hpt,
                              .units = hp->n_head / hpt,
                              .split = split};
        int64_t n_tasks = (int64_t)n * job.units;
        if (split) {
            n_tasks = 0;
            for (int32_t t = 0; t < n; t++) {
                job.task0[t] = n_tasks;
                n_tasks += (int64_t)job.units * att_chunks(toks[t].pos + 1);
            }
            job.task0[n] = n_tasks;
        }
        if (att_work < ATT_POOL_MIN_WORK) {
            /* Too little work to be worth waking the pool (tiny models, short contexts). */
            for (int64_t task = 0; task < n_tasks; task++) {
                att_fn(&job, task, 0);
            }
        } else {
            eng_pool_run(f->pool, att_fn, &job, n_tasks);
        }
        if (split) {
            att_merge_split(&job, n);
        }
        /* attention output (n x qd) is in xb */
        matmul(f, &L->wo, f->xb, n, f->hb2);
        for (size_t i = 0; i < (size_t)n * (size_t)E; i++) {
            f->x[i] += f->hb2[i];
        }
        for (int32_t t = 0; t < n; t++) {
            rmsnorm(f->xb + (size_t)t * (size_t)E, f->x + (size_t)t * (size_t)E, L->ffn_norm, E,
                    hp->norm_eps);
        }
        ffn_swiglu(f, L, n);
        matmul(f, &L->w_down, f->hb, n, f->hb2);
        for (size_t i = 0; i < (size_t)n * (size_t)E; i++) {
            f->x[i] += f->hb2[i];
        }
    }
    int32_t n_out = 0;
    for (int32_t t = 0; t < n; t++) {
        int32_t o = toks[t].out;
        if (o < 0) {
            continue;
        }
        WYE_ASSERT(o < f->n_out_max);
        rmsnorm(f->xo + (size_t)o * (size_t)E, f->x + (size_t)t * (size_t)E, m->output_norm, E,
                hp->norm_eps);
        n_out = o + 1 > n_out ? o + 1 : n_out;
    }
    if (n_out > 0) {
        matmul(f, &m->output, f->xo, n_out, f->logits);
    }
}
