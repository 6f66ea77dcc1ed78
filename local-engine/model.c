/* Model loading: maps a GGUF file, reads the llama/qwen2 hyper-parameters, checks every
 * tensor's shape and type against them and keeps views of the weights inside the mapping
 * (never copied; only the small norm/bias vectors are converted to F32). Also loads the
 * tokenizer and detects the chat template. Runs on whichever thread loads the model; the
 * result is immutable and shared read-only by every context and thread. */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "common/alloc.h"
#include "common/buf.h"
#include "common/log.h"
#include "local-engine/hugemem.h"
#include "local-engine/model_internal.h"
#include "local-engine/pool.h"
#include "local-engine/quant.h"

#define MAX_EMBD 65536
#define MAX_LAYER 1024
#define MAX_HEAD 1024
#define MAX_FF (1 << 20)
#define MAX_VOCAB (1 << 22)

struct loader {
    struct eng_model *m;
    char *err;
    size_t errlen;
    float *vec_next; /* bump pointer into m->vecs */
};

static enum wye_err fail(struct loader *L, enum wye_err e, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static enum wye_err fail(struct loader *L, enum wye_err e, const char *fmt, ...)
{
    if (L->err && L->errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(L->err, L->errlen, fmt, ap);
        va_end(ap);
    }
    return e;
}

static enum wye_err get_hp(struct loader *L, const char *key, int64_t lo, int64_t hi, bool required,
                           int32_t *out)
{
    char full[96];
    snprintf(full, sizeof(full), "%s.%s", L->m->arch_name, key);
    int64_t v;
    if (!eng_gguf_get_i64(L->m->g, full, &v)) {
        if (!required && eng_gguf_find(L->m->g, full) < 0) {
            return WYE_OK;
        }
        return fail(L, WYE_ERR_PARSE, "metadata key %s is missing or not an integer", full);
    }
    if (v < lo || v > hi) {
        return fail(L, WYE_ERR_PARSE, "metadata key %s = %lld is out of range [%lld, %lld]", full,
                    (long long)v, (long long)lo, (long long)hi);
    }
    *out = (int32_t)v;
    return WYE_OK;
}

static void get_f32_opt(struct loader *L, const char *key, float *out)
{
    char full[96];
    snprintf(full, sizeof(full), "%s.%s", L->m->arch_name, key);
    float v;
    if (eng_gguf_get_f32(L->m->g, full, &v) && isfinite(v)) {
        *out = v;
    }
}

static const struct eng_gguf_tensor *find(struct loader *L, const char *name)
{
    return eng_gguf_find_tensor(L->m->g, name);
}

/* A matrix of m rows of k elements (GGUF ne = {k, m}). */
static enum wye_err get_mat(struct loader *L, const char *name, int64_t k, int64_t m,
                            struct eng_wmat *out)
{
    const struct eng_gguf_tensor *t = find(L, name);
    if (!t) {
        return fail(L, WYE_ERR_PARSE, "%s: tensor is missing", name);
    }
    if (t->ne[0] != k || t->ne[1] != m || t->ne[2] != 1 || t->ne[3] != 1) {
        return fail(L, WYE_ERR_PARSE, "%s: expected %lld x %lld, found %lld x %lld%s", name,
                    (long long)k, (long long)m, (long long)t->ne[0], (long long)t->ne[1],
                    (t->ne[2] != 1 || t->ne[3] != 1) ? " (with more dimensions)" : "");
    }
    if (!eng_type_supported(t->type) || !eng_kernels_type_ok(t->type, k)) {
        const char *tn = eng_type_name(t->type);
        return fail(L, WYE_ERR_UNSUPPORTED,
                    "%s: tensor type %s (%u) is not supported for rows "
                    "of %lld",
                    name, tn ? tn : "unknown", t->type, (long long)k);
    }
    size_t rb = eng_type_row_bytes(t->type, k);
    if (rb == 0 || rb * (size_t)m > t->size) {
        return fail(L, WYE_ERR_PARSE, "%s: data size %zu does not hold %lld rows of %lld %s", name,
                    t->size, (long long)m, (long long)k, eng_type_name(t->type));
    }
    out->data = t->data;
    out->type = t->type;
    out->k = k;
    out->m = m;
    out->row_bytes = rb;
    return WYE_OK;
}

/* A vector of n elements converted to F32 into the model's vector arena; NULL if optional
 * and absent. */
static enum wye_err get_vec(struct loader *L, const char *name, int64_t n, bool optional,
                            const float **out)
{
    *out = NULL;
    const struct eng_gguf_tensor *t = find(L, name);
    if (!t) {
        return optional ? WYE_OK : fail(L, WYE_ERR_PARSE, "%s: tensor is missing", name);
    }
    if (t->ne[0] != n || t->ne[1] != 1 || t->ne[2] != 1 || t->ne[3] != 1) {
        return fail(L, WYE_ERR_PARSE, "%s: expected %lld, found %lld x %lld", name, (long long)n,
                    (long long)t->ne[0], (long long)t->ne[1]);
    }
    if (!eng_type_supported(t->type) || !eng_kernels_type_ok(t->type, n) ||
        eng_type_row_bytes(t->type, n) == 0 || eng_type_row_bytes(t->type, n) > t->size) {
        const char *tn = eng_type_name(t->type);
        return fail(L, WYE_ERR_UNSUPPORTED, "%s: tensor type %s (%u) is not supported here", name,
                    tn ? tn : "unknown", t->type);
    }
    float *dst = L->vec_next;
    L->vec_next += n;
    eng_dequantize_row(t->type, t->data, dst, n);
    *out = dst;
    return WYE_OK;
}

static enum wye_err load_hparams(struct loader *L)
{
    struct eng_model *m = L->m;
    struct eng_hparams *hp = &m->hp;
    enum wye_err e;
    hp->n_ctx_train = 4096;
    if ((e = get_hp(L, "context_length", 1, INT32_MAX, false, &hp->n_ctx_train)) ||
        (e = get_hp(L, "embedding_length", 1, MAX_EMBD, true, &hp->n_embd)) ||
        (e = get_hp(L, "block_count", 1, MAX_LAYER, true, &hp->n_layer)) ||
        (e = get_hp(L, "feed_forward_length", 1, MAX_FF, true, &hp->n_ff)) ||
        (e = get_hp(L, "attention.head_count", 1, MAX_HEAD, true, &hp->n_head))) {
        return e;
    }
    hp->n_head_kv = hp->n_head;
    if ((e = get_hp(L, "attention.head_count_kv", 1, MAX_HEAD, false, &hp->n_head_kv))) {
        return e;
    }
    if (hp->n_head % hp->n_head_kv != 0) {
        return fail(L, WYE_ERR_PARSE,
                    "%s.attention.head_count %d is not a multiple of "
                    "head_count_kv %d",
                    m->arch_name, hp->n_head, hp->n_head_kv);
    }
    hp->head_dim = 0;
    int32_t kl = 0, vl = 0;
    if ((e = get_hp(L, "attention.key_length", 1, 4096, false, &kl)) ||
        (e = get_hp(L, "attention.value_length", 1, 4096, false, &vl))) {
        return e;
    }
    if (kl && vl && kl != vl) {
        return fail(L, WYE_ERR_UNSUPPORTED, "%s.attention.key_length %d != value_length %d",
                    m->arch_name, kl, vl);
    }
    if (kl) {
        hp->head_dim = kl;
    } else {
        if (hp->n_embd % hp->n_head != 0) {
            return fail(L, WYE_ERR_PARSE,
                        "%s.embedding_length %d is not a multiple of "
                        "head_count %d",
                        m->arch_name, hp->n_embd, hp->n_head);
        }
        hp->head_dim = hp->n_embd / hp->n_head;
    }
    hp->n_rot = hp->head_dim;
    if ((e = get_hp(L, "rope.dimension_count", 0, hp->head_dim, false, &hp->n_rot))) {
        return e;
    }
    if (hp->n_rot % 2 != 0 || hp->head_dim % 2 != 0) {
        return fail(L, WYE_ERR_UNSUPPORTED,
                    "%s.rope.dimension_count %d / head size %d must "
                    "be even",
                    m->arch_name, hp->n_rot, hp->head_dim);
    }
    hp->rope_base = 10000.0f;
    get_f32_opt(L, "rope.freq_base", &hp->rope_base);
    if (!(hp->rope_base > 1.0f)) {
        return fail(L, WYE_ERR_PARSE, "%s.rope.freq_base %g must be > 1", m->arch_name,
                    (double)hp->rope_base);
    }
    hp->norm_eps = 1e-5f;
    get_f32_opt(L, "attention.layer_norm_rms_epsilon", &hp->norm_eps);
    if (!(hp->norm_eps >= 0.0f) || hp->norm_eps > 1.0f) {
        return fail(L, WYE_ERR_PARSE, "%s.attention.layer_norm_rms_epsilon %g is invalid",
                    m->arch_name, (double)hp->norm_eps);
    }
    hp->rope_pos_scale = 1.0f;
    char key[96];
    snprintf(key, sizeof(key), "%s.rope.scaling.type", m->arch_name);
    struct eng_gguf_str st;
    if (eng_gguf_get_str(m->g, key, &st) && !eng_gguf_str_eq(st, "none")) {
        float factor = 1.0f;
        get_f32_opt(L, "rope.scaling.factor", &factor);
        if (eng_gguf_str_eq(st, "linear") && factor >= 1.0f) {
            hp->rope_pos_scale = 1.0f / factor;
        } else if (!eng_gguf_str_eq(st, "linear") &&
                   !eng_gguf_find_tensor(m->g, "rope_freqs.weight")) {
            /* llama3 scaling comes as rope_freqs.weight. YaRN (long-context variants) is not
             * implemented: within the original context length the model still works, so the
             * file loads with a warning rather than not at all. */
            WYE_WARN("%s: rope scaling '%.*s' is not implemented; it is ignored (quality may "
                     "drop past the original context length)",
                     key, (int)(st.len > 32 ? 32 : st.len), st.p);
        }
    }
    hp->rope_neox = hp->arch == ENG_ARCH_QWEN2;
    return WYE_OK;
}

/* Per-pair rope frequencies, with the llama3 factors of rope_freqs.weight when present. */
static enum wye_err load_rope(struct loader *L)
{
    struct eng_model *m = L->m;
    int32_t half = m->hp.n_rot / 2;
    m->rope_inv_freq = wye_calloc((size_t)(half > 0 ? half : 1), sizeof(float));
    if (!m->rope_inv_freq) {
        return fail(L, WYE_ERR_NOMEM, "out of memory");
    }
    for (int32_t i = 0; i < half; i++) {
        m->rope_inv_freq[i] = (float)pow((double)m->hp.rope_base, -2.0 * i / (double)m->hp.n_rot);
    }
    const struct eng_gguf_tensor *t = find(L, "rope_freqs.weight");
    if (t) {
        if (t->type != ENG_TYPE_F32 || t->ne[0] != half || t->ne[1] != 1 ||
            t->size < (size_t)half * sizeof(float)) {
            return fail(L, WYE_ERR_PARSE, "rope_freqs.weight: expected %d F32, found %lld %s", half,
                        (long long)t->ne[0], eng_type_name(t->type) ? eng_type_name(t->type) : "?");
        }
        const unsigned char *p = t->data;
        for (int32_t i = 0; i < half; i++) {
            float f;
            memcpy(&f, p + (size_t)i * 4, 4);
            if (!(f > 0.0f) || !isfinite(f)) {
                return fail(L, WYE_ERR_PARSE, "rope_freqs.weight[%d] = %g is invalid", i,
                            (double)f);
            }
            m->rope_inv_freq[i] /= f;
        }
    }
    return WYE_OK;
}

static enum wye_err load_tensors(struct loader *L)
{
    struct eng_model *m = L->m;
    const struct eng_hparams *hp = &m->hp;
    int64_t E = hp->n_embd, F = hp->n_ff;
    int64_t qd = (int64_t)hp->n_head * hp->head_dim, kvd = (int64_t)hp->n_head_kv * hp->head_dim;
    enum wye_err e;

    const struct eng_gguf_tensor *te = find(L, "token_embd.weight");
    if (!te) {
        return fail(L, WYE_ERR_PARSE, "token_embd.weight: tensor is missing");
    }
    if (te->ne[1] < 1 || te->ne[1] > MAX_VOCAB) {
        return fail(L, WYE_ERR_PARSE, "token_embd.weight: vocabulary of %lld rows is invalid",
                    (long long)te->ne[1]);
    }
    hp = &m->hp;
    m->hp.n_vocab = (int32_t)te->ne[1];
    if ((e = get_mat(L, "token_embd.weight", E, m->hp.n_vocab, &m->tok_embd))) {
        return e;
    }
    if (find(L, "output.weight")) {
        if ((e = get_mat(L, "output.weight", E, m->hp.n_vocab, &m->output))) {
            return e;
        }
    } else {
        m->output = m->tok_embd;
        m->tied = true;
    }
    if (m->n_vocab_tok > m->hp.n_vocab) {
        return fail(L, WYE_ERR_PARSE,
                    "token_embd.weight: %d rows but the tokenizer has %d "
                    "tokens",
                    m->hp.n_vocab, m->n_vocab_tok);
    }
    size_t n_vec = (size_t)E + (size_t)hp->n_layer * (size_t)(2 * E + qd + 2 * kvd);
    m->vecs = wye_calloc(n_vec, sizeof(float));
    m->layers = wye_calloc((size_t)hp->n_layer, sizeof(*m->layers));
    if (!m->vecs || !m->layers) {
        return fail(L, WYE_ERR_NOMEM, "out of memory for %d layers", hp->n_layer);
    }
    L->vec_next = m->vecs;
    if ((e = get_vec(L, "output_norm.weight", E, false, &m->output_norm))) {
        return e;
    }
    m->matrix_bytes = m->output.row_bytes * (size_t)m->output.m;
    bool biases = hp->arch == ENG_ARCH_QWEN2;
    for (int32_t i = 0; i < hp->n_layer; i++) {
        struct eng_layer *l = &m->layers[i];
        char n[64];
#define NAME(s) (snprintf(n, sizeof(n), "blk.%d." s, i), n)
        if ((e = get_vec(L, NAME("attn_norm.weight"), E, false, &l->attn_norm)) ||
            (e = get_mat(L, NAME("attn_q.weight"), E, qd, &l->wq)) ||
            (e = get_mat(L, NAME("attn_k.weight"), E, kvd, &l->wk)) ||
            (e = get_mat(L, NAME("attn_v.weight"), E, kvd, &l->wv)) ||
            (e = get_mat(L, NAME("attn_output.weight"), qd, E, &l->wo)) ||
            (e = get_vec(L, NAME("attn_q.bias"), qd, !biases, &l->bq)) ||
            (e = get_vec(L, NAME("attn_k.bias"), kvd, !biases, &l->bk)) ||
            (e = get_vec(L, NAME("attn_v.bias"), kvd, !biases, &l->bv)) ||
            (e = get_vec(L, NAME("ffn_norm.weight"), E, false, &l->ffn_norm)) ||
            (e = get_mat(L, NAME("ffn_gate.weight"), E, F, &l->w_gate)) ||
            (e = get_mat(L, NAME("ffn_up.weight"), E, F, &l->w_up)) ||
            (e = get_mat(L, NAME("ffn_down.weight"), F, E, &l->w_down))) {
            return e;
        }
#undef NAME
        const struct eng_wmat *mats[] = {&l->wq,     &l->wk,   &l->wv,    &l->wo,
                                         &l->w_gate, &l->w_up, &l->w_down};
        for (size_t j = 0; j < sizeof(mats) / sizeof(mats[0]); j++) {
            m->matrix_bytes += mats[j]->row_bytes * (size_t)mats[j]->m;
        }
    }
    return load_rope(L);
}

/* The model's i-th matrix: 0 the output, then each layer's seven. */
static struct eng_wmat *mat_at(struct eng_model *m, size_t i)
{
    if (i == 0) {
        return &m->output;
    }
    struct eng_layer *l = &m->layers[(i - 1) / 7];
    struct eng_wmat *lm[] = {&l->wq, &l->wk, &l->wv, &l->wo, &l->w_gate, &l->w_up, &l->w_down};
    return lm[(i - 1) % 7];
}

static bool repackable(const struct eng_wmat *w)
{
    return eng_q4_0r8_wanted() && w->type == ENG_TYPE_Q4_0 && eng_q4_0r8_ok(w->m, w->k);
}

static size_t round64(size_t n)
{
    return (n + 63) & ~(size_t)63;
}

/* Rows per repack task: 2 MiB of TinyLlama's rows, enough tasks to share between threads. */
#define R8_TASK_ROWS 2048
/* Bytes per copy task. */
#define COPY_TASK_BYTES ((size_t)2 << 20)

/* Where place_weights puts a matrix, and how many load tasks that takes. */
enum placement { STAYS, REPACKED, COPIED };

static enum placement placement_of(const struct eng_wmat *w, bool copy)
{
    if (repackable(w)) {
        return REPACKED;
    }
    return copy && w->data && w->row_bytes * (size_t)w->m > 0 ? COPIED : STAYS;
}

static int64_t repack_tasks_of(const struct eng_wmat *w)
{
    return (w->m / 8 * 8 + R8_TASK_ROWS - 1) / R8_TASK_ROWS;
}

static int64_t copy_tasks_of(const struct eng_wmat *w)
{
    return (int64_t)((w->row_bytes * (size_t)w->m + COPY_TASK_BYTES - 1) / COPY_TASK_BYTES);
}

struct place_job {
    struct eng_model *m;
    size_t n_mats;
    unsigned char **dst; /* (n_mats): where each copied matrix goes, or NULL */
    int64_t repack_tasks;
};

static void drop_file_pages(const struct eng_model *m, const struct eng_wmat *w, const void *p,
                            size_t n)
{
    if (w->data != m->tok_embd.data) { /* embedding lookups still read the file's rows */
        eng_gguf_drop_pages(m->g, p, n);
    }
}

/* Task t: first the runs of R8_TASK_ROWS rows of the repacked matrices, then the
 * COPY_TASK_BYTES pieces of the copied ones, counting through the matrices in order. */
static void place_task(void *arg, int64_t task, int thread)
{
    (void)thread;
    const struct place_job *j = arg;
    bool repack = task < j->repack_tasks;
    task -= repack ? 0 : j->repack_tasks;
    for (size_t i = 0; i < j->n_mats; i++) {
        struct eng_wmat *w = mat_at(j->m, i);
        if (repack ? !w->r8 : !j->dst[i]) {
            continue;
        }
        int64_t tasks = repack ? repack_tasks_of(w) : copy_tasks_of(w);
        if (task >= tasks) {
            task -= tasks;
            continue;
        }
        const unsigned char *file = w->data;
        if (repack) {
            int64_t m8 = w->m / 8 * 8, r0 = task * R8_TASK_ROWS;
            int64_t rows = m8 - r0 < R8_TASK_ROWS ? m8 - r0 : R8_TASK_ROWS;
            const unsigned char *src = file + (size_t)r0 * w->row_bytes;
            eng_q4_0r8_pack(src, rows, w->k,
                            (unsigned char *)(uintptr_t)w->r8 + (size_t)r0 * w->row_bytes);
            drop_file_pages(j->m, w, src, (size_t)rows * w->row_bytes);
        } else {
            size_t len = w->row_bytes * (size_t)w->m, off = (size_t)task * COPY_TASK_BYTES;
            size_t n = len - off < COPY_TASK_BYTES ? len - off : COPY_TASK_BYTES;
            memcpy(j->dst[i] + off, file + off, n);
            drop_file_pages(j->m, w, file + off, n);
        }
        return;
    }
}

/* Moves every weight matrix the forward pass streams out of the file's mapping into one
 * anonymous buffer in huge pages (hugemem.h): the Q4_0 matrices the AVX2 kernels can take
 * repacked by 8 rows (eng_q4_0r8_pack; all but their last m % 8 rows, which stay in the
 * file's layout), every other matrix copied as it is. The file's pages are 4 KiB ones:
 * streaming ~1 GB of them per token costs a TLB miss every 4 KiB and stops the hardware
 * prefetchers at every page boundary, and Q8_0 decoding measured 7-13% faster per token from
 * the copy (docs/engine.md). Done on a pool of the machine's threads; the file's pages of
 * what moved are dropped (all but the token embeddings, which lookups still read row by row),
 * so the model's memory stays its size. WYE_NO_WEIGHT_COPY=1 leaves the matrices that need no
 * repacking in the file's mapping (whose page cache several processes can share). Only an
 * optimisation: without memory for the buffer the model computes from the file. */
static void place_weights(struct eng_model *m)
{
    const char *no_copy = getenv("WYE_NO_WEIGHT_COPY");
    bool copy = !(no_copy && strcmp(no_copy, "1") == 0);
    size_t n = 1 + 7 * (size_t)m->hp.n_layer, r8_total = 0, copy_total = 0;
    int64_t repack_tasks = 0, copy_tasks = 0;
    enum placement *where = wye_calloc(n, sizeof(*where));
    unsigned char **dst = wye_calloc(n, sizeof(*dst));
    if (!where || !dst) {
        goto done;
    }
    for (size_t i = 0; i < n; i++) {
        const struct eng_wmat *w = mat_at(m, i);
        where[i] = placement_of(w, copy);
        if (where[i] == REPACKED) {
            r8_total += w->row_bytes * (size_t)(w->m / 8 * 8);
            repack_tasks += repack_tasks_of(w);
        } else if (where[i] == COPIED) {
            copy_total += round64(w->row_bytes * (size_t)w->m);
            copy_tasks += copy_tasks_of(w);
        }
    }
    size_t total = round64(r8_total) + copy_total;
    if (total == 0 || !eng_hugemem_alloc(total, &m->wbuf)) {
        goto done;
    }
    m->r8_bytes = r8_total;
    m->copied_bytes = copy_total;
    unsigned char *r8_at = m->wbuf.p, *copy_at = m->wbuf.p + round64(r8_total);
    for (size_t i = 0; i < n; i++) {
        struct eng_wmat *w = mat_at(m, i);
        if (where[i] == REPACKED) {
            w->r8 = r8_at;
            r8_at += w->row_bytes * (size_t)(w->m / 8 * 8);
        } else if (where[i] == COPIED) {
            dst[i] = copy_at;
            copy_at += round64(w->row_bytes * (size_t)w->m);
        }
    }
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    struct eng_pool *pool = eng_pool_create(cpus < 1 ? 1 : cpus > 8 ? 8 : (int)cpus);
    struct place_job j = {.m = m, .n_mats = n, .dst = dst, .repack_tasks = repack_tasks};
    /* a NULL pool (no threads) runs them here */
    eng_pool_run(pool, place_task, &j, repack_tasks + copy_tasks);
    eng_pool_destroy(pool);
    for (size_t i = 0; i < n; i++) {
        if (dst[i]) {
            mat_at(m, i)->data = dst[i];
        }
    }
    /* shared read-only from here on, as the file's weights */
    (void)mprotect(m->wbuf.map, m->wbuf.map_len, PROT_READ);
done:
    wye_free(where);
    wye_free(dst);
}

static enum wye_err load_common(const char *path, bool vocab_only, struct eng_model **out,
                                char *errbuf, size_t errlen)
{
    *out = NULL;
    if (errbuf && errlen) {
        errbuf[0] = '\0';
    }
    eng_kernels_init();
    struct eng_model *m = wye_calloc(1, sizeof(*m));
    if (!m) {
        return WYE_ERR_NOMEM;
    }
    struct loader L = {.m = m, .err = errbuf, .errlen = errlen};
    m->vocab_only = vocab_only;
    snprintf(m->path, sizeof(m->path), "%s", path);
    char sub[256];
    enum wye_err e = eng_gguf_open(path, &m->g, sub, sizeof(sub));
    if (e) {
        fail(&L, e, "%s", sub); /* names the path already */
        goto fail_model;
    }
    struct eng_gguf_str arch = {0};
    if (!eng_gguf_get_str(m->g, "general.architecture", &arch)) {
        if (!vocab_only) {
            e = fail(&L, WYE_ERR_PARSE, "%s: general.architecture is missing", path);
            goto fail_model;
        }
    } else if (eng_gguf_str_eq(arch, "llama")) {
        m->hp.arch = ENG_ARCH_LLAMA;
    } else if (eng_gguf_str_eq(arch, "qwen2")) {
        m->hp.arch = ENG_ARCH_QWEN2;
    } else if (!vocab_only) {
        e = fail(&L, WYE_ERR_UNSUPPORTED,
                 "%s: architecture '%.*s' is not supported (llama, "
                 "qwen2)",
                 path, (int)(arch.len > 32 ? 32 : arch.len), arch.p);
        goto fail_model;
    }
    snprintf(m->arch_name, sizeof(m->arch_name), "%.*s", (int)(arch.len > 15 ? 15 : arch.len),
             arch.p ? arch.p : "");
    e = eng_tokenizer_load(m->g, &m->tok, sub, sizeof(sub));
    if (e) {
        fail(&L, e, "%s: tokenizer: %s", path, sub);
        goto fail_model;
    }
    m->n_vocab_tok = eng_tok_n_vocab(m->tok);
    struct eng_gguf_str tmpl = {0};
    m->chat_known = false;
    if (eng_gguf_get_str(m->g, "tokenizer.chat_template", &tmpl)) {
        m->chat = eng_chat_detect(tmpl.p, tmpl.len, &m->chat_known);
    }
    if (!m->chat_known) {
        m->chat = ENG_CHAT_CHATML;
        m->chat_has_tmpl = tmpl.p != NULL;
    }
    if (!vocab_only) {
        if ((e = load_hparams(&L)) || (e = load_tensors(&L))) {
            goto fail_model;
        }
        place_weights(m);
    }
    *out = m;
    return WYE_OK;
fail_model:
    eng_model_destroy(m);
    return e;
}

enum wye_err eng_model_load(const char *path, struct eng_model **out, char *errbuf, size_t errlen)
{
    return load_common(path, false, out, errbuf, errlen);
}

enum wye_err eng_model_load_vocab(const char *path, struct eng_model **out, char *errbuf,
                                  size_t errlen)
{
    return load_common(path, true, out, errbuf, errlen);
}

void eng_model_destroy(struct eng_model *m)
{
    if (!m) {
        return;
    }
    wye_free(m->rope_inv_freq);
    wye_free(m->layers);
    eng_hugemem_free(&m->wbuf);
    wye_free(m->vecs);
    eng_tokenizer_destroy(m->tok);
    eng_gguf_close(m->g);
    wye_free(m);
}

void eng_model_get_info(const struct eng_model *m, struct eng_model_info *out)
{
    memset(out, 0, sizeof(*out));
    out->arch = m->arch_name;
    out->vocab_only = m->vocab_only;
    out->n_vocab = m->vocab_only ? m->n_vocab_tok : m->hp.n_vocab;
    out->n_ctx_train = m->hp.n_ctx_train;
    out->n_embd = m->hp.n_embd;
    out->n_layer = m->hp.n_layer;
    out->n_head = m->hp.n_head;
    out->n_head_kv = m->hp.n_head_kv;
    out->n_ff = m->hp.n_ff;
    out->matrix_bytes = m->matrix_bytes;
    out->repacked_bytes = m->r8_bytes;
    out->copied_bytes = m->copied_bytes;
}

void eng_model_embed(const struct eng_model *m, int32_t id, float *dst)
{
    const unsigned char *row =
        (const unsigned char *)m->tok_embd.data + (size_t)id * m->tok_embd.row_bytes;
    eng_dequantize_row(m->tok_embd.type, row, dst, m->tok_embd.k);
}

enum wye_err eng_model_tokenize(const struct eng_model *m, const char *text, size_t len,
                                bool add_bos, bool parse_special, int32_t *ids, size_t n_max,
                                size_t *n_out)
{
    return eng_tokenize(m->tok, text, len, add_bos, parse_special, ids, n_max, n_out);
}

size_t eng_model_token_piece(const struct eng_model *m, int32_t id, char *buf, size_t n,
                             bool special)
{
    return eng_token_to_piece(m->tok, id, buf, n, special);
}

#define CHAT_TEXT_MAX (16u << 20)

enum wye_err eng_model_tokenize_chat(const struct eng_model *m, const struct wye_chat_msg *msgs,
                                     size_t n_msgs, int32_t *ids, size_t n_max, size_t *n_out,
                                     char *errbuf, size_t errlen)
{
    struct wye_buf text;
    wye_buf_init(&text, CHAT_TEXT_MAX);
    char bos[64] = "";
    int32_t bos_id = eng_tok_bos(m->tok);
    if (bos_id >= 0 && eng_tok_add_bos(m->tok)) {
        size_t nb = eng_token_to_piece(m->tok, bos_id, bos, sizeof(bos) - 1, true);
        /* A BOS text too long for the buffer is not written: format without it. */
        bos[nb < sizeof(bos) ? nb : 0] = '\0';
    }
    if (!m->chat_known && !atomic_exchange(&((struct eng_model *)m)->chat_warned, true)) {
        WYE_WARN("%s: %s chat template; formatting chats as ChatML", m->path,
                 m->chat_has_tmpl ? "unrecognised" : "no");
    }
    enum wye_err e = eng_chat_format(m->chat, msgs, n_msgs, true, bos, &text);
    if (e) {
        snprintf(errbuf, errlen, "chat template: %s", wye_err_str(e));
        goto done;
    }
    /* Templates that write BOS as text get it from parse_special; for the others (ChatML,
     * Zephyr) BOS is added here if the model's metadata asks for it, as llama.cpp does. */
    size_t nb = strlen(bos);
    bool add = bos_id >= 0 && eng_tok_add_bos(m->tok) &&
               !(nb > 0 && text.len >= nb && memcmp(text.data, bos, nb) == 0);
    e = eng_tokenize(m->tok, text.data ? text.data : "", text.len, add, true, ids, n_max, n_out);
    if (e == WYE_ERR_TOOBIG) {
        snprintf(errbuf, errlen, "the chat prompt is longer than %zu tokens", n_max);
    } else if (e) {
        snprintf(errbuf, errlen, "tokenizing the chat prompt: %s", wye_err_str(e));
    }
done:
    wye_buf_cleanup(&text);
    return e;
}
