/* The transformer forward pass (llama / qwen2): RMSNorm, GQA attention over a preallocated
 * KV cache (F32, or F16 on request) with rope (adjacent pairs for llama, rotated halves for
 * qwen2), SwiGLU FFN, final norm and logits. One call runs a batch of tokens from any number
 * of sequences, each at its own position: the matmuls see all tokens at once (matrix-matrix),
 * attention (attention.h) runs in chunks of positions split per (token, KV head) or, for a
 * few decoding tokens, per (token, KV head, chunk) across the pool (8 floats wide on AVX2
 * CPUs, with the same results bit for bit). Runs on the engine worker thread that owns the
 * context (plus the pool's threads inside eng_pool_run); allocates nothing after
 * eng_fwd_init. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "local-engine/attention.h"
#include "local-engine/model_internal.h"
#include "local-engine/quant.h"

/* Below this many multiply-adds per layer, attention runs on the calling thread alone. */
#define ATT_POOL_MIN_WORK (64 * 1024)
static size_t align64(size_t n)
{
    return (n + 63) & ~(size_t)63;
}

static size_t act_bytes(const struct eng_wmat *w, int64_t n_tok)
{
    return eng_matmul_scratch_bytes(w->type, w->k, n_tok);
}

static void att_task(void *arg, int64_t task, int thread);
static void att_task_f16(void *arg, int64_t task, int thread);

enum wye_err eng_fwd_init(struct eng_fwd *f, const struct eng_model *m, struct eng_pool *pool,
                          int32_t n_ctx, int32_t n_seq, int32_t n_batch, int32_t n_out_max,
                          bool kv_f16, char *errbuf, size_t errlen)
{
    memset(f, 0, sizeof(*f));
    f->kv_f16 = kv_f16;
    f->kv_elt = kv_f16 ? sizeof(uint16_t) : sizeof(float);
    /* attention.h's vector code built for AVX2 where the kernels are, else the generic build */
    bool avx2 = strcmp(eng_kernels_name(), "avx2") == 0;
    f->att_fn = kv_f16 ? (avx2 ? eng_att_task_avx2_f16 : att_task_f16)
                       : (avx2 ? eng_att_task_avx2 : att_task);
    f->silu = avx2 ? eng_silu_mul_avx2 : eng_silu_mul;
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
    if (wye_mul_size(kv_elems, kvd * f->kv_elt, &kv_bytes) != 0) {
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
        B * E * 4,                                                   /* x */
        B * xbw * 4,                                                 /* xb */
        B * qd * 4,                                                  /* q */
        B * kvd * 4,                                                 /* k */
        B * kvd * 4,                                                 /* v */
        B * wide * 4,                                                /* hb */
        B * wide * 4,                                                /* hb2 */
        T * f->att_per_thread * 4,                                   /* att */
        ATT_SPLIT_TOK_MAX * (size_t)hp->n_head * parts * 4,          /* att_split */
        (size_t)n_out_max * E * 4,                                   /* xo */
        (size_t)n_out_max * (size_t)hp->n_vocab * 4,                 /* logits */
        B * (size_t)(hp->n_rot / 2) * 2 * 4,                         /* rope_cs */
        ATT_SPLIT_TOK_MAX * (size_t)hp->n_head * sizeof(atomic_int), /* att_left */
        xq,
    };
    size_t total = 0;
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        total += align64(sizes[i]);
    }
    /* The caches in huge pages, like the weights: a decoding token reads every cached
     * position of every layer, and with 4 KiB pages that read crossed a page every 4 KiB
     * (SmolLM2-135M decoding at positions 128-384 took 5-7% longer per token; docs/engine.md).
     * Each (sequence, layer, KV head) row block starts a new page only when n_ctx x head_dim
     * values fill one, so a sequence's first token can touch one 2 MiB page per block.
     * WYE_KV_SMALL_PAGES=1 puts them in ordinary malloc'd memory (for A/B measurements). */
    const char *small = getenv("WYE_KV_SMALL_PAGES");
    size_t kvb = kv_bytes ? kv_bytes : 1;
    if (small && strcmp(small, "1") == 0) {
        f->k_cache = wye_calloc(kvb, 1);
        f->v_cache = wye_calloc(kvb, 1);
    } else if (eng_hugemem_alloc(kvb, &f->k_mem) && eng_hugemem_alloc(kvb, &f->v_mem)) {
        f->k_cache = f->k_mem.p;
        f->v_cache = f->v_mem.p;
    }
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
    f->att_left = (atomic_int *)(void *)p;
    p += align64(sizes[sizeof(dst) / sizeof(dst[0])]);
    f->xq = p;
    return WYE_OK;
}

void eng_fwd_cleanup(struct eng_fwd *f)
{
    if (f->k_mem.map || f->v_mem.map) {
        eng_hugemem_free(&f->k_mem);
        eng_hugemem_free(&f->v_mem);
    } else {
        wye_free(f->k_cache);
        wye_free(f->v_cache);
    }
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
    /* ~8 tasks per thread over all the matrices, at least 16 rows (a multiple of 8, as the
     * repacked Q4_0 kernels want) each, the same for every matrix: the tasks are then of one
     * size, so that the pool's equal shares of them are equal shares of the rows too. (Sized
     * per matrix, SmolLM2-135M's Q's tasks had 40 rows and K's and V's 16: the first thread's
     * share held twice the second's rows, which then finished it by helping; 1-2% slower per
     * token, bench_kernels --pool-ab-style alternation, docs/BENCHMARKS.md.) */
    int64_t rows = 0, tasks = 0;
    for (int i = 0; i < n_parts; i++) {
        rows += ws[i]->m;
    }
    int64_t rpt = (rows + (int64_t)nth * 8 - 1) / ((int64_t)nth * 8);
    rpt = rpt < 16 ? 16 : (rpt + 7) / 8 * 8;
    for (int i = 0; i < n_parts; i++) {
        struct mm_part *p = &j.p[i];
        p->w = ws[i];
        p->y = ys[i];
        if (nth == 1) {
            mm_run_rows(&j, p, 0, p->w->m);
            continue;
        }
        p->rpt = rpt;
        p->task0 = tasks;
        tasks += (p->w->m + rpt - 1) / rpt;
    }
    if (nth > 1) {
        eng_pool_run(f->pool, mm_task, &j, tasks);
    }
}

/* The FFN's gate and up products and SwiGLU in one pool run: each task computes the same
 * rows of both matrices and then hb = silu(gate) * up on them, so the activation function
 * is split across the threads too instead of running on the caller after a join. Every
 * element is computed exactly as matmul_multi + the SwiGLU loop compute it. */
struct swiglu_job {
    const struct eng_wmat *gate, *up;
    void (*silu)(float *g, const float *u, int64_t n); /* eng_silu_mul or its AVX2 build */
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
        j->silu(g + r0, u + r0, r1 - r0);
    }
}

static void swiglu_task(void *arg, int64_t task, int thread)
{
    (void)thread;
    const struct swiglu_job *j = arg;
    int64_t r0 = task * j->rpt;
    swiglu_rows(j, r0, r0 + j->rpt < j->m ? r0 + j->rpt : j->m);
}

void eng_silu_mul(float *g, const float *u, int64_t n)
{
    silu_mul(g, u, n);
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
            f->silu(f->hb + o, f->hb2 + o, gw->m);
        }
        return;
    }
    struct swiglu_job j = {
        .gate = gw, .up = uw, .silu = f->silu, .g = f->hb, .u = f->hb2, .m = gw->m, .n_tok = n};
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

static void att_task(void *arg, int64_t task, int thread)
{
    att_body(arg, task, thread, false, false);
}

static void att_task_f16(void *arg, int64_t task, int thread)
{
    att_body(arg, task, thread, false, true);
}

void eng_exp8(float *dst, const float *src)
{
    exp8(dst, src);
}

size_t eng_att_head_scratch(int32_t n, int32_t hd)
{
    return ATT_CHUNK + (size_t)att_chunks(n) * ATT_PART(hd);
}

void eng_att_head(const float *q, const void *k, const void *v, bool f16, int32_t n, int32_t hd,
                  float *scratch, float *out)
{
    att_head(q, k, v, n, hd, scratch, out, false, f16);
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
                size_t o = (off + (size_t)h * n_ctx * hd) * f->kv_elt;
                const float *kh = k + (size_t)h * hd, *vh = f->v + (size_t)t * kvd + (size_t)h * hd;
                if (f->kv_f16) { /* rounded to nearest even, the same bits on every kernel path */
                    eng_quantize_row(ENG_TYPE_F16, kh, (char *)f->k_cache + o, (int64_t)hd);
                    eng_quantize_row(ENG_TYPE_F16, vh, (char *)f->v_cache + o, (int64_t)hd);
                } else {
                    memcpy((char *)f->k_cache + o, kh, hd * sizeof(float));
                    memcpy((char *)f->v_cache + o, vh, hd * sizeof(float));
                }
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
                int32_t n_ch = att_chunks(toks[t].pos + 1);
                job.task0[t] = n_tasks;
                n_tasks += (int64_t)job.units * n_ch;
                for (int32_t u = 0; u < job.units; u++) { /* att_heads counts them down */
                    atomic_store_explicit(&f->att_left[t * job.units + u], n_ch,
                                          memory_order_relaxed);
                }
            }
            job.task0[n] = n_tasks;
        }
        if (att_work < ATT_POOL_MIN_WORK) {
            /* Too little work to be worth waking the pool (tiny models, short contexts). */
            for (int64_t task = 0; task < n_tasks; task++) {
                f->att_fn(&job, task, 0);
            }
        } else {
            eng_pool_run(f->pool, f->att_fn, &job, n_tasks);
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
