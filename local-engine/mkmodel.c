/* `wye mkmodel`: writes a random-weight GGUF model with the exact shapes of a known model
 * (for speed measurements and architecture tests; real weights cannot be downloaded here)
 * and a real vocabulary copied from a vocab-only GGUF file. Weights are normal(0, 0.02)
 * quantized with eng_quantize_row; norm weights are 1.0 in F32. As llama.cpp does, K-quant
 * files keep matrices whose rows are not a multiple of 256 in Q8_0. Main thread only. */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/alloc.h"
#include "common/log.h"
#include "local-engine/eng_cli.h"
#include "local-engine/gguf_write.h"
#include "local-engine/model_internal.h"
#include "local-engine/quant.h"

struct shape {
    const char *name;
    const char *arch;
    int32_t n_embd, n_layer, n_head, n_head_kv, n_ff, n_vocab, n_ctx;
    float theta;
    bool tied, biases;
    const char *vocab; /* default vocab file in <shared>/vocab */
};

static const struct shape shapes[] = {
    {"smollm2-135m", "llama", 576, 30, 9, 3, 1536, 49152, 8192, 1e5f, true, false,
     "ggml-vocab-gpt-2.gguf"},
    {"qwen2.5-0.5b", "qwen2", 896, 24, 14, 2, 4864, 151936, 32768, 1e6f, true, true,
     "ggml-vocab-qwen2.gguf"},
    {"tinyllama-1.1b", "llama", 2048, 22, 32, 4, 5632, 32000, 2048, 1e4f, false, false,
     "ggml-vocab-llama-spm.gguf"},
    {"tiny-qwen2", "qwen2", 64, 2, 4, 2, 128, 151936, 512, 1e6f, true, true,
     "ggml-vocab-qwen2.gguf"},
    {"tiny-llama", "llama", 64, 2, 4, 2, 128, 32000, 512, 1e4f, false, false,
     "ggml-vocab-llama-spm.gguf"},
    /* rows of 256 and 512: K-quant files really use K-quants */
    {"tiny-llama-256", "llama", 256, 2, 4, 2, 512, 32000, 512, 1e4f, false, false,
     "ggml-vocab-llama-spm.gguf"},
};

static uint64_t rng_next(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

/* Normal(0, 1) by Box-Muller. */
static float rng_normal(uint64_t *s)
{
    double u1 = ((double)(rng_next(s) >> 11) + 1.0) * (1.0 / 9007199254740992.0);
    double u2 = (double)(rng_next(s) >> 11) * (1.0 / 9007199254740992.0);
    return (float)(sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
}

struct mk {
    const struct eng_mkmodel_opts *o;
    struct eng_gguf_writer *w;
    uint64_t rng;
    float *row; /* (max k) */
    char *err;
    size_t errlen;
};

static bool is_kquant(uint32_t t)
{
    return t == ENG_TYPE_Q4_K || t == ENG_TYPE_Q5_K || t == ENG_TYPE_Q6_K;
}

/* A matrix of m rows of k: random normal * 0.02, quantized row by row. */
static enum wye_err add_mat(struct mk *mk, const char *name, int64_t k, int64_t m)
{
    if (mk->o->omit_tensor && strcmp(mk->o->omit_tensor, name) == 0) {
        return WYE_OK;
    }
    uint32_t type = mk->o->type;
    if (eng_type_row_bytes(type, k) == 0) {
        type = is_kquant(type) && k % 32 == 0 ? ENG_TYPE_Q8_0 : ENG_TYPE_F32;
    }
    int64_t m_file = m;
    if (mk->o->bad_shape_tensor && strcmp(mk->o->bad_shape_tensor, name) == 0) {
        m_file = m > 1 ? m / 2 : 2;
    }
    size_t rb = eng_type_row_bytes(type, k);
    size_t size = rb * (size_t)m_file;
    unsigned char *data = wye_malloc(size ? size : 1);
    if (!data) {
        snprintf(mk->err, mk->errlen, "%s: out of memory for %zu bytes", name, size);
        return WYE_ERR_NOMEM;
    }
    for (int64_t r = 0; r < m_file; r++) {
        for (int64_t i = 0; i < k; i++) {
            mk->row[i] = 0.02f * rng_normal(&mk->rng);
        }
        eng_quantize_row(type, mk->row, data + (size_t)r * rb, k);
    }
    int64_t ne[2] = {k, m_file};
    enum wye_err e =
        eng_gguf_writer_add_tensor(mk->w, name, type, 2, ne, data, size, ENG_GGUF_COPY);
    wye_free(data);
    if (e) {
        snprintf(mk->err, mk->errlen, "%s: cannot add the tensor: %s", name, wye_err_str(e));
    }
    return e;
}

/* A vector of n: 1.0 (norms) or random * 0.02 (biases), F32. */
static enum wye_err add_vec(struct mk *mk, const char *name, int64_t n, bool ones)
{
    if (mk->o->omit_tensor && strcmp(mk->o->omit_tensor, name) == 0) {
        return WYE_OK;
    }
    for (int64_t i = 0; i < n; i++) {
        mk->row[i] = ones ? 1.0f : 0.02f * rng_normal(&mk->rng);
    }
    int64_t ne[1] = {n};
    enum wye_err e = eng_gguf_writer_add_tensor(mk->w, name, ENG_TYPE_F32, 1, ne, mk->row,
                                                (size_t)n * 4, ENG_GGUF_COPY);
    if (e) {
        snprintf(mk->err, mk->errlen, "%s: cannot add the tensor: %s", name, wye_err_str(e));
    }
    return e;
}

/* Copies the vocabulary, padding the token arrays with "[PAD<i>]" tokens up to n_vocab rows.
 * Returns the vocabulary size actually written in *n_out. */
static enum wye_err copy_vocab(struct mk *mk, const struct eng_gguf *g, int32_t n_vocab,
                               int32_t *n_out)
{
    enum eng_gguf_vtype vt;
    uint64_t n_tok = 0;
    if (!eng_gguf_get_arr(g, "tokenizer.ggml.tokens", &vt, &n_tok) || vt != ENG_GGUF_STRING ||
        n_tok == 0 || n_tok > (1u << 22)) {
        snprintf(mk->err, mk->errlen, "the vocab file has no tokenizer.ggml.tokens array");
        return WYE_ERR_PARSE;
    }
    if (n_tok >= (uint64_t)n_vocab) {
        /* Nothing to pad (a larger vocabulary is kept whole: rows follow the tokenizer). */
        *n_out = (int32_t)n_tok;
        return eng_gguf_writer_copy_kv(mk->w, g, "tokenizer.");
    }
    *n_out = n_vocab;
    enum wye_err e = WYE_OK;
    for (int64_t i = 0; i < eng_gguf_n_kv(g) && !e; i++) {
        struct eng_gguf_str k = eng_gguf_key(g, i);
        if (k.len < 10 || memcmp(k.p, "tokenizer.", 10) != 0 ||
            eng_gguf_str_eq(k, "tokenizer.ggml.tokens") ||
            eng_gguf_str_eq(k, "tokenizer.ggml.scores") ||
            eng_gguf_str_eq(k, "tokenizer.ggml.token_type")) {
            continue;
        }
        char key[256];
        snprintf(key, sizeof(key), "%.*s", (int)(k.len < 255 ? k.len : 255), k.p);
        size_t len;
        const void *raw = eng_gguf_kv_raw(g, i, &len);
        e = eng_gguf_writer_add_raw(mk->w, key, (uint32_t)eng_gguf_kv_type(g, i), raw, len);
    }
    const char **strs = wye_calloc((size_t)n_vocab, sizeof(*strs));
    size_t *lens = wye_calloc((size_t)n_vocab, sizeof(*lens));
    char *pads = wye_calloc((size_t)n_vocab, 16);
    float *scores = wye_calloc((size_t)n_vocab, sizeof(float));
    int32_t *types = wye_calloc((size_t)n_vocab, sizeof(int32_t));
    if (!strs || !lens || !pads || !scores || !types) {
        e = WYE_ERR_NOMEM;
        goto done;
    }
    bool has_scores = eng_gguf_get_arr(g, "tokenizer.ggml.scores", &vt, &(uint64_t){0}) &&
                      eng_gguf_arr_f32(g, "tokenizer.ggml.scores", scores, n_tok);
    bool has_types = eng_gguf_get_arr(g, "tokenizer.ggml.token_type", &vt, &(uint64_t){0}) &&
                     eng_gguf_arr_i32(g, "tokenizer.ggml.token_type", types, n_tok);
    for (int32_t i = 0; i < n_vocab; i++) {
        if ((uint64_t)i < n_tok) {
            struct eng_gguf_str s = eng_gguf_arr_str(g, "tokenizer.ggml.tokens", (uint64_t)i);
            strs[i] = s.p;
            lens[i] = s.len;
        } else {
            char *p = pads + (size_t)i * 16;
            lens[i] = (size_t)snprintf(p, 16, "[PAD%d]", i);
            strs[i] = p;
            scores[i] = 0.0f;
            types[i] = 3; /* control: never produced by tokenizing text */
        }
    }
    if (!e) {
        e = eng_gguf_writer_add_arr_strn(mk->w, "tokenizer.ggml.tokens", strs, lens,
                                         (uint64_t)n_vocab);
    }
    if (!e && has_scores) {
        e = eng_gguf_writer_add_arr_data(mk->w, "tokenizer.ggml.scores", ENG_GGUF_F32, scores,
                                         (uint64_t)n_vocab);
    }
    if (!e && has_types) {
        e = eng_gguf_writer_add_arr_data(mk->w, "tokenizer.ggml.token_type", ENG_GGUF_I32, types,
                                         (uint64_t)n_vocab);
    }
done:
    if (e) {
        snprintf(mk->err, mk->errlen, "copying the vocabulary: %s", wye_err_str(e));
    }
    wye_free(strs);
    wye_free(lens);
    wye_free(pads);
    wye_free(scores);
    wye_free(types);
    return e;
}

static const struct shape *find_shape(const char *name)
{
    for (size_t i = 0; i < sizeof(shapes) / sizeof(shapes[0]); i++) {
        if (strcmp(shapes[i].name, name) == 0) {
            return &shapes[i];
        }
    }
    return NULL;
}

enum wye_err eng_mkmodel_write(const struct eng_mkmodel_opts *o, char *errbuf, size_t errlen)
{
    const struct shape *sh = find_shape(o->shape);
    if (!sh) {
        snprintf(errbuf, errlen,
                 "unknown shape '%s' (smollm2-135m, qwen2.5-0.5b, "
                 "tinyllama-1.1b, tiny-qwen2, tiny-llama, tiny-llama-256)",
                 o->shape);
        return WYE_ERR_INVAL;
    }
    if (!eng_type_supported(o->type) || o->type == ENG_TYPE_BF16) {
        snprintf(errbuf, errlen, "unsupported weight type %u", o->type);
        return WYE_ERR_INVAL;
    }
    char vpath[512];
    if (o->vocab_path) {
        snprintf(vpath, sizeof(vpath), "%s", o->vocab_path);
    } else {
        const char *shared = getenv("WYE_SHARED_DIR");
        snprintf(vpath, sizeof(vpath), "%s/vocab/%s", shared ? shared : "../shared", sh->vocab);
    }
    eng_kernels_init();
    struct mk mk = {.o = o, .rng = o->seed ^ 0x5eedULL, .err = errbuf, .errlen = errlen};
    struct eng_gguf *g = NULL;
    char sub[256];
    enum wye_err e = eng_gguf_open(vpath, &g, sub, sizeof(sub));
    if (e) {
        snprintf(errbuf, errlen, "vocab %s: %s", vpath, sub);
        return e;
    }
    int32_t E = sh->n_embd, F = sh->n_ff, hd = sh->n_embd / sh->n_head;
    int32_t qd = hd * sh->n_head, kvd = hd * sh->n_head_kv;
    int32_t wide = F > E ? F : E;
    mk.row = wye_malloc((size_t)wide * sizeof(float));
    mk.w = eng_gguf_writer_create();
    if (!mk.row || !mk.w) {
        e = WYE_ERR_NOMEM;
        snprintf(errbuf, errlen, "out of memory");
        goto done;
    }
    char key[96];
#define KEY(s) (snprintf(key, sizeof(key), "%s." s, sh->arch), key)
    int32_t n_vocab = sh->n_vocab;
    if ((e = eng_gguf_writer_add_str(mk.w, "general.architecture", sh->arch)) ||
        (e = eng_gguf_writer_add_str(mk.w, "general.name", sh->name)) ||
        (e = eng_gguf_writer_add_u32(mk.w, KEY("context_length"), (uint32_t)sh->n_ctx)) ||
        (e = eng_gguf_writer_add_u32(mk.w, KEY("embedding_length"), (uint32_t)E)) ||
        (e = eng_gguf_writer_add_u32(mk.w, KEY("block_count"), (uint32_t)sh->n_layer)) ||
        (e = eng_gguf_writer_add_u32(mk.w, KEY("feed_forward_length"), (uint32_t)F)) ||
        (e = eng_gguf_writer_add_u32(mk.w, KEY("attention.head_count"), (uint32_t)sh->n_head)) ||
        (e = eng_gguf_writer_add_u32(mk.w, KEY("attention.head_count_kv"),
                                     (uint32_t)sh->n_head_kv)) ||
        (e = eng_gguf_writer_add_u32(mk.w, KEY("rope.dimension_count"), (uint32_t)hd)) ||
        (e = eng_gguf_writer_add_f32(mk.w, KEY("rope.freq_base"), sh->theta)) ||
        (e = eng_gguf_writer_add_f32(mk.w, KEY("attention.layer_norm_rms_epsilon"), 1e-6f))) {
        snprintf(errbuf, errlen, "writing metadata: %s", wye_err_str(e));
        goto done;
    }
    if (o->rope_linear_factor > 0.0f &&
        ((e = eng_gguf_writer_add_str(mk.w, KEY("rope.scaling.type"), "linear")) ||
         (e = eng_gguf_writer_add_f32(mk.w, KEY("rope.scaling.factor"), o->rope_linear_factor)))) {
        snprintf(errbuf, errlen, "writing metadata: %s", wye_err_str(e));
        goto done;
    }
#undef KEY
    if (o->rope_freq_factor > 0.0f) {
        for (int32_t i = 0; i < hd / 2; i++) {
            mk.row[i] = o->rope_freq_factor;
        }
        int64_t ne[1] = {hd / 2};
        e = eng_gguf_writer_add_tensor(mk.w, "rope_freqs.weight", ENG_TYPE_F32, 1, ne, mk.row,
                                       (size_t)(hd / 2) * 4, ENG_GGUF_COPY);
        if (e) {
            snprintf(errbuf, errlen, "rope_freqs.weight: %s", wye_err_str(e));
            goto done;
        }
    }
    if ((e = copy_vocab(&mk, g, sh->n_vocab, &n_vocab))) {
        goto done;
    }
    if ((e = add_mat(&mk, "token_embd.weight", E, n_vocab)) ||
        (e = add_vec(&mk, "output_norm.weight", E, true))) {
        goto done;
    }
    if (!sh->tied && (e = add_mat(&mk, "output.weight", E, n_vocab))) {
        goto done;
    }
    for (int32_t l = 0; l < sh->n_layer; l++) {
        char n[64];
#define NAME(s) (snprintf(n, sizeof(n), "blk.%d." s, l), n)
        if ((e = add_vec(&mk, NAME("attn_norm.weight"), E, true)) ||
            (e = add_mat(&mk, NAME("attn_q.weight"), E, qd)) ||
            (e = add_mat(&mk, NAME("attn_k.weight"), E, kvd)) ||
            (e = add_mat(&mk, NAME("attn_v.weight"), E, kvd)) ||
            (e = add_mat(&mk, NAME("attn_output.weight"), qd, E)) ||
            (sh->biases && ((e = add_vec(&mk, NAME("attn_q.bias"), qd, false)) ||
                            (e = add_vec(&mk, NAME("attn_k.bias"), kvd, false)) ||
                            (e = add_vec(&mk, NAME("attn_v.bias"), kvd, false)))) ||
            (e = add_vec(&mk, NAME("ffn_norm.weight"), E, true)) ||
            (e = add_mat(&mk, NAME("ffn_gate.weight"), E, F)) ||
            (e = add_mat(&mk, NAME("ffn_up.weight"), E, F)) ||
            (e = add_mat(&mk, NAME("ffn_down.weight"), F, E))) {
            goto done;
        }
#undef NAME
    }
    e = eng_gguf_writer_write_file(mk.w, o->out_path, sub, sizeof(sub));
    if (e) {
        snprintf(errbuf, errlen, "%s: %s", o->out_path, sub);
    }
done:
    eng_gguf_writer_destroy(mk.w);
    wye_free(mk.row);
    eng_gguf_close(g);
    return e;
}

static void mk_usage(FILE *out)
{
    fprintf(out,
            "usage: wye mkmodel --shape SHAPE --type TYPE [--vocab VOCAB.gguf] -o OUT.gguf "
            "[--seed S]\n\n"
            "Writes a GGUF model with random weights and the exact shapes of a known model.\n"
            "  --shape   smollm2-135m | qwen2.5-0.5b | tinyllama-1.1b | tiny-qwen2 | tiny-llama |\n"
            "            tiny-llama-256\n"
            "  --type    Q8_0 | Q4_0 | Q4_K | Q5_K | Q6_K | F16 | F32 (default Q8_0)\n"
            "  --vocab   vocab-only GGUF to copy the tokenizer from (default: the shape's,\n"
            "            from $WYE_SHARED_DIR/vocab or ../shared/vocab)\n"
            "  -o        output file\n"
            "  --seed    random seed (default 1)\n");
}

int eng_cli_mkmodel(int argc, char **argv)
{
    struct eng_mkmodel_opts o = {.type = ENG_TYPE_Q8_0, .seed = 1};
    for (int i = 1; i < argc; i += 2) { /* every option takes a value */
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            mk_usage(stdout);
            return 0;
        }
        if (!v) {
            fprintf(stderr, "wye mkmodel: %s needs a value (or is unknown)\n", a);
            return 2;
        }
        if (strcmp(a, "--shape") == 0) {
            o.shape = v;
        } else if (strcmp(a, "--type") == 0) {
            uint32_t t;
            for (t = 0; t < ENG_TYPE__MAX; t++) {
                if (eng_type_name(t) && strcasecmp(eng_type_name(t), v) == 0) {
                    break;
                }
            }
            if (t == ENG_TYPE__MAX) {
                fprintf(stderr, "wye mkmodel: unknown type '%s'\n", v);
                return 2;
            }
            o.type = t;
        } else if (strcmp(a, "--vocab") == 0) {
            o.vocab_path = v;
        } else if (strcmp(a, "-o") == 0) {
            o.out_path = v;
        } else if (strcmp(a, "--seed") == 0) {
            char *end;
            errno = 0;
            o.seed = strtoull(v, &end, 10);
            if (errno || *end) {
                fprintf(stderr, "wye mkmodel: bad --seed '%s'\n", v);
                return 2;
            }
        } else {
            fprintf(stderr, "wye mkmodel: unknown option '%s'\n", a);
            mk_usage(stderr);
            return 2;
        }
    }
    if (!o.shape || !o.out_path) {
        mk_usage(stderr);
        return 2;
    }
    char err[512];
    enum wye_err e = eng_mkmodel_write(&o, err, sizeof(err));
    if (e) {
        fprintf(stderr, "wye mkmodel: %s\n", err);
        return 1;
    }
    return 0;
}
