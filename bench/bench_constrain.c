/* Constrained-decoding benchmark: generation speed with and without a JSON-Schema mask on a
 * model with the 151,936-token Qwen2 vocabulary, measured in one run so that the ratio holds
 * on a shared, noisy machine, plus the mask alone (trie walk) in microseconds per token for
 * typical matcher states: inside a string (most of the vocabulary is allowed: the worst
 * case), after '{' (structural: few prefixes survive), inside a number.
 * Single-threaded driver (the forward pass uses its own pool).
 *
 * Usage: bench_constrain [MODEL.gguf | -] [tokens (128)] [threads (1)]
 *        Without MODEL (or with -) a random-weight model is written to /tmp with `wye mkmodel`'s
 * writer: shape from $WYE_BENCH_SHAPE (default tiny-qwen2; qwen2.5-0.5b for the real shape). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "local-engine/constrain.h"
#include "local-engine/engine.h"
#include "local-engine/model_internal.h"
#include "local-engine/types.h"

static char made_path[512]; /* the model file this run wrote, removed at exit */

static void remove_made(void)
{
    if (made_path[0]) {
        unlink(made_path);
    }
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static size_t piece_cb(void *arg, int32_t id, char *buf, size_t n)
{
    return eng_model_token_piece(arg, id, buf, n, false);
}

static bool eog_cb(void *arg, int32_t id)
{
    const struct eng_model *m = arg;
    return eng_tok_is_eog(m->tok, id);
}

/* Seconds per generated token for one sequence of n tokens. */
static double gen_time(struct eng_ctx *c, const int32_t *prompt, size_t n_prompt, int32_t n,
                       const struct eng_constraint *k, int32_t *n_gen)
{
    struct eng_gen_params p;
    memset(&p, 0, sizeof(p));
    eng_sampler_params_greedy(&p.sampling);
    p.sampling.temperature = 1.0f;
    p.sampling.seed = 5;
    p.max_tokens = n;
    p.ignore_eos = true;
    p.constraint = k;
    struct eng_seq_result res;
    char err[256] = "";
    if (eng_generate(c, prompt, n_prompt, &p, NULL, NULL, NULL, &res, err, sizeof(err))) {
        fprintf(stderr, "generate: %s\n", err);
        exit(1);
    }
    *n_gen = res.n_gen;
    return res.n_gen > 1 ? (double)res.t_gen_ns / 1e9 / (res.n_gen - 1) : 0.0;
}

static double mask_us(struct eng_cmask *mk, const struct eng_constraint *k, const char *prefix,
                      int reps, int32_t *allowed)
{
    struct eng_cstate st;
    eng_cstate_init(&st, k);
    if (!eng_cstate_feed_n(k, &st, prefix, strlen(prefix))) {
        fprintf(stderr, "prefix '%s' rejected\n", prefix);
        exit(1);
    }
    double best = 1e9;
    for (int r = 0; r < reps; r++) {
        double t0 = now_s();
        *allowed = eng_cmask_compute(mk, k, &st, 0);
        double t = now_s() - t0;
        best = t < best ? t : best;
    }
    return best * 1e6;
}

int main(int argc, char **argv)
{
    char path[512], err[512] = "";
    const char *model = argc > 1 && strcmp(argv[1], "-") != 0 ? argv[1] : NULL;
    int32_t n = argc > 2 ? atoi(argv[2]) : 128;
    int32_t threads = argc > 3 ? atoi(argv[3]) : 1;
    if (!model) {
        const char *shape = getenv("WYE_BENCH_SHAPE") ? getenv("WYE_BENCH_SHAPE") : "tiny-qwen2";
        snprintf(path, sizeof(path), "/tmp/bench_constrain_%s_%d.gguf", shape, (int)getpid());
        struct eng_mkmodel_opts o = {
            .shape = shape, .type = ENG_TYPE_Q8_0, .seed = 3, .out_path = path};
        fprintf(stderr, "writing a random-weight %s model to %s\n", shape, path);
        if (eng_mkmodel_write(&o, err, sizeof(err))) {
            fprintf(stderr, "mkmodel: %s (set WYE_SHARED_DIR to the shared folder)\n", err);
            return 1;
        }
        model = path;
        snprintf(made_path, sizeof(made_path), "%s", path);
        atexit(remove_made);
    }
    struct eng_model *m = NULL;
    if (eng_model_load(model, &m, err, sizeof(err))) {
        fprintf(stderr, "%s: %s\n", model, err);
        return 1;
    }
    struct eng_model_info info;
    eng_model_get_info(m, &info);
    struct eng_ctx_params cp = {.n_ctx = n + 64, .n_seq_max = 1, .n_threads = threads};
    struct eng_ctx *c = NULL;
    if (eng_ctx_create(m, &cp, &c, err, sizeof(err))) {
        fprintf(stderr, "context: %s\n", err);
        return 1;
    }
    int32_t prompt[32];
    size_t n_prompt = 0;
    eng_model_tokenize(m, "The answer in JSON:", 19, true, false, prompt, 32, &n_prompt);

    /* A long string (the shortcut case), and records of short fields that keep the matcher
     * in structural states (keys, numbers, separators) most of the time. */
    struct eng_constraint *str = NULL, *obj = NULL, *rec = NULL;
    const char *s = "{\"type\":\"string\"}";
    const char *recs =
        "{\"type\":\"array\",\"minItems\":2,\"items\":{\"type\":\"object\","
        "\"properties\":{\"id\":{\"type\":\"integer\"},\"ok\":{\"type\":\"boolean\"},"
        "\"k\":{\"type\":\"string\",\"maxLength\":2}},\"required\":[\"id\",\"ok\"]}}";
    if (eng_constraint_compile(s, strlen(s), &str, err, sizeof(err)) ||
        eng_constraint_compile(recs, strlen(recs), &rec, err, sizeof(err)) ||
        eng_constraint_json_object(&obj, err, sizeof(err))) {
        fprintf(stderr, "compile: %s\n", err);
        return 1;
    }
    double t0 = now_s();
    struct eng_cmask *mk = NULL;
    if (eng_cmask_create(m->n_vocab_tok, piece_cb, eog_cb, m, &mk, err, sizeof(err))) {
        fprintf(stderr, "mask: %s\n", err);
        return 1;
    }
    double t_build = now_s() - t0;

    int32_t g0, g1, g2;
    gen_time(c, prompt, n_prompt, 8, NULL, &g0); /* warm-up (and the context's trie) */
    gen_time(c, prompt, n_prompt, 8, str, &g0);
    /* Interleaved, best of 3: the machine may be shared. */
    double t_free = 1e9, t_str = 1e9, t_obj = 1e9;
    for (int r = 0; r < 3; r++) {
        double t = gen_time(c, prompt, n_prompt, n, NULL, &g0);
        t_free = t < t_free ? t : t_free;
        t = gen_time(c, prompt, n_prompt, n, str, &g1);
        t_str = t < t_str ? t : t_str;
        t = gen_time(c, prompt, n_prompt, n, rec, &g2);
        t_obj = t < t_obj ? t : t_obj;
    }
    static const char *const states[][2] = {
        {"inside a string", "{\"key\":\"some text"},
        {"after '{'", "{"},
        {"value expected", "{\"k\": "},
        {"in a number", "{\"k\":12"},
        {"after a value", "{\"k\":\"v\""},
        {"in \\u escape", "{\"k\":\"\\u0"},
    };

    printf("model %s: %s, n_vocab %d, %d thread(s)\n", model, info.arch, info.n_vocab, threads);
    printf("vocabulary trie built in %.1f ms, %.1f MiB\n", t_build * 1e3,
           (double)eng_cmask_mem(mk) / (1 << 20));
    printf("generation, ms/token:  unconstrained %.3f (%d tok) | string schema %.3f (%d tok) | "
           "records %.3f (%d tok)\n",
           t_free * 1e3, g0, t_str * 1e3, g1, t_obj * 1e3, g2);
    printf("tokens/s:              unconstrained %.1f | string schema %.1f (ratio %.2f) | "
           "records %.1f (ratio %.2f)\n",
           1 / t_free, 1 / t_str, t_free / t_str, 1 / t_obj, t_free / t_obj);
    printf("mask alone, us/token (allowed tokens):");
    for (size_t i = 0; i < sizeof(states) / sizeof(states[0]); i++) {
        int32_t a;
        double us = mask_us(mk, obj, states[i][1], 20, &a);
        printf("%s %s %.0f (%d)", i ? " |" : "", states[i][0], us, a);
    }
    printf("\n");
    eng_cmask_destroy(mk);
    eng_constraint_destroy(str);
    eng_constraint_destroy(obj);
    eng_constraint_destroy(rec);
    eng_ctx_destroy(c);
    eng_model_destroy(m);
    return 0;
}
