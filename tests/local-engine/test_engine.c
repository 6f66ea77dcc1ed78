/* The engine API on a random-weight tiny qwen2 model written by `wye mkmodel` at test time
 * (qwen2 arch: q/k/v biases, NEOX rope, the real 151,936-token Qwen2 vocabulary) and on
 * stories260K: deterministic generation, batched == alone, context overflow, cancel within
 * one token, stop strings across token boundaries, chat formatting, malformed models naming
 * the tensor, and `wye tokenize` on a vocab-only file. */
// clang-format off
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
// clang-format on
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/alloc.h"
#include "kernel_test_rng.h"
#include "local-engine/eng_cli.h"
#include "local-engine/engine.h"
#include "local-engine/model_internal.h"
#include "local-engine/quant.h"
#include "local-engine/types.h"
#include "test_model_util.h"

static char tiny_path[512];

static struct eng_model *load_path(const char *path)
{
    char err[512] = "";
    struct eng_model *m = NULL;
    if (eng_model_load(path, &m, err, sizeof(err)) != WYE_OK) {
        fail_msg("%s: %s", path, err);
    }
    return m;
}

static struct eng_model *load_stories(void)
{
    char path[512];
    snprintf(path, sizeof(path), "%s/models/stories260K-f32.gguf", WYE_SHARED_DIR);
    return load_path(path);
}

/* What mkctx's contexts keep in their KV cache (the F16 variants of some tests set it). */
static enum eng_kv_type mkctx_kv = ENG_KV_F32;

static struct eng_ctx *mkctx(struct eng_model *m, int32_t n_ctx, int32_t n_seq, int32_t n_batch)
{
    struct eng_ctx_params p = {.n_ctx = n_ctx,
                               .n_seq_max = n_seq,
                               .n_batch = n_batch,
                               .n_threads = 1,
                               .kv_type = mkctx_kv};
    struct eng_ctx *c = NULL;
    char err[256] = "";
    if (eng_ctx_create(m, &p, &c, err, sizeof(err)) != WYE_OK) {
        fail_msg("eng_ctx_create: %s", err);
    }
    return c;
}

static void write_model_rope(const char *shape, uint32_t type, const char *path, const char *omit,
                             const char *bad, float freq_factor, float linear_factor)
{
    struct eng_mkmodel_opts o = {.shape = shape,
                                 .type = type,
                                 .out_path = path,
                                 .seed = 7,
                                 .omit_tensor = omit,
                                 .bad_shape_tensor = bad,
                                 .rope_freq_factor = freq_factor,
                                 .rope_linear_factor = linear_factor};
    char vocab[512], err[512] = "";
    snprintf(vocab, sizeof(vocab), "%s/vocab/%s", WYE_SHARED_DIR,
             strstr(shape, "qwen") ? "ggml-vocab-qwen2.gguf" : "ggml-vocab-llama-spm.gguf");
    o.vocab_path = vocab;
    if (eng_mkmodel_write(&o, err, sizeof(err)) != WYE_OK) {
        fail_msg("mkmodel %s: %s", shape, err);
    }
}

static void write_model(const char *shape, uint32_t type, const char *path, const char *omit,
                        const char *bad)
{
    write_model_rope(shape, type, path, omit, bad, 0.0f, 0.0f);
}

static int setup(void **state)
{
    (void)state;
    snprintf(tiny_path, sizeof(tiny_path), "%s/test_engine_tiny_qwen2_%d.gguf", WYE_BINARY_DIR,
             (int)getpid());
    write_model("tiny-qwen2", ENG_TYPE_Q8_0, tiny_path, NULL, NULL);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    unlink(tiny_path);
    return 0;
}

static void gen(struct eng_ctx *c, const int32_t *ids, size_t n, const struct eng_gen_params *p,
                struct gen_rec *r, enum wye_err want)
{
    char err[256] = "";
    memset(r, 0, sizeof(*r));
    enum wye_err e = eng_generate(c, ids, n, p, &gen_rec_ops, r, NULL, &r->res, err, sizeof(err));
    if (e != want) {
        fail_msg("eng_generate: %s (%s)", wye_err_str(e), err);
    }
}

static void test_tiny_qwen2(void **state)
{
    (void)state;
    struct eng_model *m = load_path(tiny_path);
    struct eng_model_info info;
    eng_model_get_info(m, &info);
    assert_string_equal(info.arch, "qwen2");
    assert_int_equal(info.n_vocab, 151936);
    assert_int_equal(info.n_embd, 64);
    struct eng_ctx *c = mkctx(m, 96, 3, 8);
    const char *prompts[3] = {"Hello, world", "def main():\n    return 0", "1 2 3 4 5 6 7 8"};
    int32_t ids[3][32];
    size_t n[3];
    static struct gen_rec alone[3], again, both[3];
    struct eng_gen_params p;
    gen_greedy(&p, 12);
    p.ignore_eos = true;
    for (int i = 0; i < 3; i++) {
        assert_int_equal(
            eng_model_tokenize(m, prompts[i], strlen(prompts[i]), true, false, ids[i], 32, &n[i]),
            WYE_OK);
        assert_true(n[i] > 1);
        gen(c, ids[i], n[i], &p, &alone[i], WYE_OK);
        assert_int_equal(alone[i].n_ids, 12);
        assert_int_equal(alone[i].res.finish, ENG_FINISH_LENGTH);
    }
    gen(c, ids[0], n[0], &p, &again, WYE_OK);
    assert_memory_equal(again.ids, alone[0].ids, 12 * sizeof(int32_t));
    assert_string_equal(again.text, alone[0].text);
    /* Random weights still depend on the prompt: different prompts, different ids. */
    assert_memory_not_equal(alone[0].ids, alone[1].ids, 12 * sizeof(int32_t));
    memset(both, 0, sizeof(both));
    char err[256];
    for (int i = 0; i < 3; i++) {
        int32_t id;
        assert_int_equal(
            eng_batch_add(c, ids[i], n[i], &p, &gen_rec_ops, &both[i], NULL, &id, err, sizeof(err)),
            WYE_OK);
        assert_true(id >= 0 && id < 3);
    }
    /* A fourth sequence does not fit: AGAIN, naming the limit. */
    int32_t id4;
    assert_int_equal(
        eng_batch_add(c, ids[0], n[0], &p, &gen_rec_ops, &again, NULL, &id4, err, sizeof(err)),
        WYE_ERR_AGAIN);
    assert_non_null(strstr(err, "3 sequences"));
    for (int steps = 0; eng_batch_n_active(c) > 0 && steps < 100; steps++) {
        assert_int_equal(eng_batch_step(c), WYE_OK);
    }
    for (int i = 0; i < 3; i++) {
        assert_true(both[i].done);
        assert_int_equal(both[i].n_ids, 12);
        assert_memory_equal(both[i].ids, alone[i].ids, 12 * sizeof(int32_t));
    }
    /* Seeded sampling is reproducible. */
    p.sampling.temperature = 1.0f;
    p.sampling.top_k = 50;
    p.sampling.seed = 99;
    gen(c, ids[1], n[1], &p, &both[0], WYE_OK);
    gen(c, ids[1], n[1], &p, &both[1], WYE_OK);
    assert_memory_equal(both[0].ids, both[1].ids, 12 * sizeof(int32_t));
    eng_ctx_destroy(c);
    eng_model_destroy(m);
}

static void test_chat_tokenize(void **state)
{
    (void)state;
    struct eng_model *m = load_path(tiny_path);
    struct wye_chat_msg msgs[2] = {{WYE_ROLE_SYSTEM, (char *)"Be brief."},
                                   {WYE_ROLE_USER, (char *)"Hi"}};
    int32_t ids[256];
    size_t n = 0;
    char err[256] = "";
    assert_int_equal(eng_model_tokenize_chat(m, msgs, 2, ids, 256, &n, err, sizeof(err)), WYE_OK);
    /* ChatML/Qwen: starts with <|im_start|> as one special token, ends with the assistant
     * header. */
    char piece[64];
    size_t pl = eng_model_token_piece(m, ids[0], piece, sizeof(piece), true);
    assert_int_equal(pl, strlen("<|im_start|>"));
    assert_memory_equal(piece, "<|im_start|>", pl);
    int32_t tail[8];
    size_t nt = 0;
    assert_int_equal(
        eng_model_tokenize(m, "<|im_start|>assistant\n", 22, false, true, tail, 8, &nt), WYE_OK);
    assert_true(n > nt);
    assert_memory_equal(ids + n - nt, tail, nt * sizeof(int32_t));
    /* Too small an output: TOOBIG with a message. */
    assert_int_equal(eng_model_tokenize_chat(m, msgs, 2, ids, 3, &n, err, sizeof(err)),
                     WYE_ERR_TOOBIG);
    assert_non_null(strstr(err, "longer than 3 tokens"));
    eng_model_destroy(m);
    /* A model without a template (ChatML fallback) whose metadata adds BOS gets BOS first. */
    m = load_stories();
    assert_int_equal(eng_model_tokenize_chat(m, msgs + 1, 1, ids, 256, &n, err, sizeof(err)),
                     WYE_OK);
    assert_true(n > 2);
    assert_int_equal(ids[0], 1);
    assert_int_not_equal(ids[1], 1);
    eng_model_destroy(m);
}

static void test_overflow(void **state)
{
    (void)state;
    struct eng_model *m = load_stories();
    struct eng_ctx *c = mkctx(m, 32, 1, 8);
    int32_t ids[20] = {1, 403, 407, 261, 378};
    for (int i = 5; i < 20; i++) {
        ids[i] = 300 + i;
    }
    struct eng_gen_params p;
    gen_greedy(&p, 13);
    int32_t id;
    char err[256] = "";
    assert_int_equal(eng_batch_add(c, ids, 20, &p, &gen_rec_ops, NULL, NULL, &id, err, sizeof(err)),
                     WYE_ERR_TOOBIG);
    assert_non_null(strstr(err, "20 tokens"));
    assert_non_null(strstr(err, "13"));
    assert_non_null(strstr(err, "32 tokens"));
    assert_int_equal(eng_batch_n_active(c), 0);
    /* Exactly full is fine; max_tokens 0 means "until the context is full". */
    static struct gen_rec r;
    gen_greedy(&p, 12);
    gen(c, ids, 20, &p, &r, WYE_OK);
    assert_int_equal(r.n_ids, 12);
    gen_greedy(&p, 0);
    p.ignore_eos = true;
    gen(c, ids, 5, &p, &r, WYE_OK);
    assert_int_equal(r.n_ids, 27);
    assert_int_equal(r.res.finish, ENG_FINISH_LENGTH);
    /* Bad prompts. */
    int32_t bad = 512;
    assert_int_equal(eng_batch_add(c, &bad, 1, &p, NULL, NULL, NULL, &id, err, sizeof(err)),
                     WYE_ERR_INVAL);
    assert_non_null(strstr(err, "512"));
    assert_int_equal(eng_batch_add(c, ids, 0, &p, NULL, NULL, NULL, &id, err, sizeof(err)),
                     WYE_ERR_INVAL);
    eng_ctx_destroy(c);
    eng_model_destroy(m);
}

static void test_cancel(void **state)
{
    (void)state;
    struct eng_model *m = load_stories();
    struct eng_ctx *c = mkctx(m, 128, 2, 8);
    int32_t ids[5] = {1, 403, 407, 261, 378};
    struct eng_gen_params p;
    gen_greedy(&p, 50);
    static struct gen_rec r;
    atomic_bool cancel = false;
    memset(&r, 0, sizeof(r));
    r.cancel = &cancel;
    r.cancel_after = 3;
    char err[256];
    assert_int_equal(
        eng_generate(c, ids, 5, &p, &gen_rec_ops, &r, &cancel, &r.res, err, sizeof(err)),
        WYE_ERR_CANCELED);
    assert_int_equal(r.n_ids, 3); /* set during token 3: no token 4 */
    assert_int_equal(r.res.finish, ENG_FINISH_CANCELLED);
    /* eng_batch_remove ends one sequence; the other carries on. */
    static struct gen_rec a, b;
    memset(&a, 0, sizeof(a));
    memset(&b, 0, sizeof(b));
    int32_t ia, ib;
    assert_int_equal(eng_batch_add(c, ids, 5, &p, &gen_rec_ops, &a, NULL, &ia, err, sizeof(err)),
                     WYE_OK);
    assert_int_equal(eng_batch_add(c, ids, 5, &p, &gen_rec_ops, &b, NULL, &ib, err, sizeof(err)),
                     WYE_OK);
    for (int s = 0; s < 4; s++) {
        assert_int_equal(eng_batch_step(c), WYE_OK);
    }
    eng_batch_remove(c, ia);
    assert_true(a.done);
    assert_int_equal(a.res.finish, ENG_FINISH_CANCELLED);
    size_t na = a.n_ids;
    while (eng_batch_n_active(c) > 0) {
        assert_int_equal(eng_batch_step(c), WYE_OK);
    }
    assert_int_equal(a.n_ids, na);
    assert_int_equal(b.n_ids, 50);
    assert_int_equal(b.res.finish, ENG_FINISH_LENGTH);
    eng_ctx_destroy(c);
    eng_model_destroy(m);
}

struct pause_rec {
    struct gen_rec r;
    int n_text_calls;
    int pause_at;
};

static enum eng_cb_ret pause_text(void *arg, const char *text, size_t len)
{
    struct pause_rec *p = arg;
    gen_rec_ops.on_text(&p->r, text, len);
    return ++p->n_text_calls == p->pause_at ? ENG_CB_PAUSE : ENG_CB_CONTINUE;
}

static enum eng_cb_ret pause_token(void *arg, int32_t id)
{
    return gen_rec_ops.on_token(&((struct pause_rec *)arg)->r, id);
}

static void pause_done(void *arg, const struct eng_seq_result *res)
{
    gen_rec_ops.on_done(&((struct pause_rec *)arg)->r, res);
}

/* ENG_CB_PAUSE parks a sequence (steps skip it, others go on) until eng_batch_resume; the
 * output is the same as without the pause. */
static void test_pause_resume(void **state)
{
    (void)state;
    struct eng_model *m = load_stories();
    struct eng_ctx *c = mkctx(m, 128, 2, 8);
    int32_t ids[5] = {1, 403, 407, 261, 378};
    struct eng_gen_params p;
    gen_greedy(&p, 20);
    static struct gen_rec ref, other;
    gen(c, ids, 5, &p, &ref, WYE_OK);
    static const struct eng_seq_ops ops = {pause_text, pause_token, pause_done};
    static struct pause_rec pr;
    memset(&pr, 0, sizeof(pr));
    memset(&other, 0, sizeof(other));
    pr.pause_at = 3;
    int32_t a, b;
    char err[256];
    assert_int_equal(eng_batch_add(c, ids, 5, &p, &ops, &pr, NULL, &a, err, sizeof(err)), WYE_OK);
    assert_int_equal(eng_batch_add(c, ids, 5, &p, &gen_rec_ops, &other, NULL, &b, err, sizeof(err)),
                     WYE_OK);
    for (int s = 0; s < 4; s++) {
        assert_int_equal(eng_batch_step(c), WYE_OK);
    }
    assert_int_equal(pr.n_text_calls, 3);
    assert_int_equal(eng_batch_n_runnable(c), 1);
    size_t paused_ids = pr.r.n_ids;
    for (int s = 0; s < 5; s++) {
        assert_int_equal(eng_batch_step(c), WYE_OK);
    }
    assert_int_equal(pr.r.n_ids, paused_ids); /* no progress while paused */
    assert_true(other.n_ids > paused_ids);    /* the other sequence went on */
    eng_batch_resume(c, a);
    assert_int_equal(eng_batch_n_runnable(c), 2);
    while (eng_batch_n_active(c) > 0) {
        assert_int_equal(eng_batch_step(c), WYE_OK);
    }
    assert_true(pr.r.done);
    assert_int_equal(pr.r.n_ids, 20);
    assert_memory_equal(pr.r.ids, ref.ids, 20 * sizeof(int32_t));
    assert_string_equal(pr.r.text, ref.text);
    eng_ctx_destroy(c);
    eng_model_destroy(m);
}

/* A new prompt that extends what a slot's cache already holds (a conversation's next turn)
 * reuses those positions and produces exactly what a fresh context produces. */
static void test_prefix_reuse(void **state)
{
    (void)state;
    struct eng_model *m = load_stories();
    struct eng_ctx *c = mkctx(m, 128, 2, 8);
    int32_t p1[5] = {1, 403, 407, 261, 378};
    struct eng_gen_params p;
    gen_greedy(&p, 20);
    static struct gen_rec first, second, fresh;
    gen(c, p1, 5, &p, &first, WYE_OK);
    assert_int_equal(first.res.n_prompt_cached, 0);
    /* Turn two: the first prompt, 10 of its answer, then a token of our own. */
    int32_t p2[16];
    memcpy(p2, p1, sizeof(p1));
    memcpy(p2 + 5, first.ids, 10 * sizeof(int32_t));
    p2[15] = 426;
    gen(c, p2, 16, &p, &second, WYE_OK);
    assert_int_equal(second.res.n_prompt_cached, 15);
    struct eng_ctx *c2 = mkctx(m, 128, 1, 8);
    gen(c2, p2, 16, &p, &fresh, WYE_OK);
    assert_int_equal(fresh.res.n_prompt_cached, 0);
    assert_int_equal(second.n_ids, 20);
    assert_memory_equal(second.ids, fresh.ids, 20 * sizeof(int32_t));
    assert_string_equal(second.text, fresh.text);
    /* The same prompt again: all but the last token come from the cache. */
    gen(c, p2, 16, &p, &second, WYE_OK);
    assert_int_equal(second.res.n_prompt_cached, 15);
    assert_memory_equal(second.ids, fresh.ids, 20 * sizeof(int32_t));
    /* An unrelated prompt takes the other (empty) slot and leaves this cache alone. */
    int32_t other[3] = {1, 317, 269};
    static struct gen_rec o;
    gen(c, other, 3, &p, &o, WYE_OK);
    gen(c, p2, 16, &p, &second, WYE_OK);
    assert_int_equal(second.res.n_prompt_cached, 15);
    /* eng_ctx_eval leaves nothing reusable behind in its slot. */
    assert_int_equal(eng_ctx_eval(c, 0, 0, p2, 16, NULL), WYE_OK);
    assert_int_equal(eng_ctx_eval(c, 1, 0, p2, 16, NULL), WYE_OK);
    gen(c, p2, 16, &p, &second, WYE_OK);
    assert_int_equal(second.res.n_prompt_cached, 0);
    assert_memory_equal(second.ids, fresh.ids, 20 * sizeof(int32_t));
    eng_ctx_destroy(c2);
    eng_ctx_destroy(c);
    eng_model_destroy(m);
}

/* A prompt that shares a prefix with what another slot holds (the system prompt of a chat
 * arriving while another runs) copies those K/V rows instead of recomputing them, and gives
 * exactly what a fresh context gives; the running sequence is not disturbed. */
static void prefix_shared_across_slots(void)
{
    struct eng_model *m = load_stories();
    struct eng_ctx *c = mkctx(m, 128, 2, 8);
    struct eng_ctx *c1 = mkctx(m, 128, 1, 8);
    int32_t pa[12] = {1, 403, 407, 261, 378, 426, 317, 269, 403, 261, 407, 378};
    int32_t pb[14] = {1, 403, 407, 261, 378, 426, 317, 269, 426, 426, 317, 403, 261, 378};
    struct eng_gen_params p;
    gen_greedy(&p, 24);
    static struct gen_rec ra, rb, fa, fb;
    gen(c1, pa, 12, &p, &fa, WYE_OK);
    eng_ctx_destroy(c1);
    c1 = mkctx(m, 128, 1, 8);
    gen(c1, pb, 14, &p, &fb, WYE_OK);
    memset(&ra, 0, sizeof(ra));
    memset(&rb, 0, sizeof(rb));
    int32_t a, b;
    char err[128];
    assert_int_equal(eng_batch_add(c, pa, 12, &p, &gen_rec_ops, &ra, NULL, &a, err, sizeof(err)),
                     WYE_OK);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(eng_batch_step(c), WYE_OK); /* a's prompt (8 + 4), a token */
    }
    assert_int_equal(eng_batch_add(c, pb, 14, &p, &gen_rec_ops, &rb, NULL, &b, err, sizeof(err)),
                     WYE_OK);
    assert_int_not_equal(a, b);
    while (eng_batch_n_active(c) > 0) {
        assert_int_equal(eng_batch_step(c), WYE_OK);
    }
    assert_true(ra.done && rb.done);
    assert_int_equal(ra.res.n_prompt_cached, 0);
    assert_int_equal(rb.res.n_prompt_cached, 8); /* the 8 tokens pa and pb share */
    assert_int_equal(ra.n_ids, fa.n_ids);
    assert_memory_equal(ra.ids, fa.ids, (size_t)fa.n_ids * sizeof(int32_t));
    assert_int_equal(rb.n_ids, fb.n_ids);
    assert_memory_equal(rb.ids, fb.ids, (size_t)fb.n_ids * sizeof(int32_t));
    assert_string_equal(rb.text, fb.text);
    eng_ctx_destroy(c1);
    eng_ctx_destroy(c);
    eng_model_destroy(m);
}

static void test_prefix_shared_across_slots(void **state)
{
    (void)state;
    prefix_shared_across_slots();
}

/* The same with an F16 KV cache: the shared prefix's keys and values are copied between
 * slots as F16, and the answers are still exactly those of fresh contexts. */
static void test_prefix_shared_f16(void **state)
{
    (void)state;
    mkctx_kv = ENG_KV_F16;
    prefix_shared_across_slots();
    mkctx_kv = ENG_KV_F32;
}

struct chain {
    struct eng_ctx *c;
    struct gen_rec r[3];
    int n_done;
    const int32_t *prompt;
    size_t n_prompt;
    struct eng_gen_params p;
};

static enum eng_cb_ret chain_token(void *arg, int32_t id);
static void chain_done(void *arg, const struct eng_seq_result *res);
static const struct eng_seq_ops chain_ops = {NULL, chain_token, chain_done};

static enum eng_cb_ret chain_token(void *arg, int32_t id)
{
    struct chain *ch = arg;
    return gen_rec_ops.on_token(&ch->r[ch->n_done], id);
}

/* Each finished sequence starts the next one from its on_done (a worker's request queue). */
static void chain_done(void *arg, const struct eng_seq_result *res)
{
    struct chain *ch = arg;
    gen_rec_ops.on_done(&ch->r[ch->n_done], res);
    if (++ch->n_done < 3) {
        int32_t id;
        char err[128];
        assert_int_equal(eng_batch_add(ch->c, ch->prompt, ch->n_prompt, &ch->p, &chain_ops, ch,
                                       NULL, &id, err, sizeof(err)),
                         WYE_OK);
    }
}

static void test_add_from_callback(void **state)
{
    (void)state;
    struct eng_model *m = load_stories();
    struct eng_ctx *c = mkctx(m, 64, 1, 8);
    static int32_t ids[5] = {1, 403, 407, 261, 378};
    static struct chain ch;
    memset(&ch, 0, sizeof(ch));
    ch.c = c;
    ch.prompt = ids;
    ch.n_prompt = 5;
    gen_greedy(&ch.p, 6);
    int32_t id;
    char err[128];
    assert_int_equal(eng_batch_add(c, ids, 5, &ch.p, &chain_ops, &ch, NULL, &id, err, sizeof(err)),
                     WYE_OK);
    for (int s = 0; s < 100 && eng_batch_n_active(c) > 0; s++) {
        assert_int_equal(eng_batch_step(c), WYE_OK);
    }
    assert_int_equal(ch.n_done, 3);
    for (int i = 0; i < 3; i++) {
        assert_true(ch.r[i].done);
        assert_int_equal(ch.r[i].n_ids, 6);
        assert_memory_equal(ch.r[i].ids, ch.r[0].ids, 6 * sizeof(int32_t));
    }
    /* The second and third reused the first one's prompt from the cache. */
    assert_int_equal(ch.r[2].res.n_prompt_cached, 4);
    eng_ctx_destroy(c);
    eng_model_destroy(m);
}

/* stories260K's greedy text after "Once upon a time" is known: ", there was a little girl
 * named Lily. She loved to play outside in the park. ..." */
static void test_stop_strings(void **state)
{
    (void)state;
    struct eng_model *m = load_stories();
    struct eng_ctx *c = mkctx(m, 128, 1, 8);
    int32_t ids[5] = {1, 403, 407, 261, 378};
    struct eng_gen_params p;
    static struct gen_rec full, r;
    gen_greedy(&p, 40);
    gen(c, ids, 5, &p, &full, WYE_OK);
    assert_int_equal(strncmp(full.text, ", there was a little girl named Lily.", 37), 0);
    /* "l named" spans the tokens of "girl" and " named": the text stops right before it. */
    p.stop[0] = "xyzzy";
    p.stop[1] = "l named";
    gen(c, ids, 5, &p, &r, WYE_OK);
    assert_string_equal(r.text, ", there was a little gir");
    assert_int_equal(r.res.finish, ENG_FINISH_STOP);
    assert_true(r.n_ids < 40);
    /* A stop string whose prefix appears ("Lily" then ".", not "!") holds text back only
     * until it cannot match: everything is delivered. */
    p.stop[0] = "Lily!";
    p.stop[1] = "park!";
    gen(c, ids, 5, &p, &r, WYE_OK);
    assert_string_equal(r.text, full.text);
    assert_int_equal(r.res.finish, ENG_FINISH_LENGTH);
    /* The earliest of several stop strings wins. */
    p.stop[0] = "park";
    p.stop[1] = "Lily";
    gen(c, ids, 5, &p, &r, WYE_OK);
    assert_string_equal(r.text, ", there was a little girl named ");
    /* Too long a stop string is refused. */
    char longstop[ENG_STOP_LEN_MAX + 2];
    memset(longstop, 'a', sizeof(longstop) - 1);
    longstop[sizeof(longstop) - 1] = '\0';
    p.stop[0] = longstop;
    char err[256];
    int32_t id;
    assert_int_equal(eng_batch_add(c, ids, 5, &p, NULL, NULL, NULL, &id, err, sizeof(err)),
                     WYE_ERR_TOOBIG);
    eng_ctx_destroy(c);
    eng_model_destroy(m);
}

static void expect_load_error(const char *path, const char *want1, const char *want2)
{
    char err[512] = "";
    struct eng_model *m = NULL;
    enum wye_err e = eng_model_load(path, &m, err, sizeof(err));
    assert_int_not_equal(e, WYE_OK);
    assert_null(m);
    if (!strstr(err, want1) || (want2 && !strstr(err, want2))) {
        fail_msg("error '%s' does not name '%s'", err, want1);
    }
}

static void test_malformed(void **state)
{
    (void)state;
    char path[512];
    snprintf(path, sizeof(path), "%s/test_engine_bad_%d.gguf", WYE_BINARY_DIR, (int)getpid());
    write_model("tiny-qwen2", ENG_TYPE_Q8_0, path, NULL, "blk.1.attn_k.weight");
    expect_load_error(path, "blk.1.attn_k.weight: expected 64 x 32, found 64 x 16", NULL);
    write_model("tiny-qwen2", ENG_TYPE_Q8_0, path, "blk.0.ffn_up.weight", NULL);
    expect_load_error(path, "blk.0.ffn_up.weight", "missing");
    write_model("tiny-qwen2", ENG_TYPE_Q8_0, path, "blk.1.attn_v.bias", NULL);
    expect_load_error(path, "blk.1.attn_v.bias", "missing");
    unlink(path);
    expect_load_error("/nonexistent/model.gguf", "/nonexistent/model.gguf", NULL);
    /* A vocab-only file is not a model. */
    char vocab[512];
    snprintf(vocab, sizeof(vocab), "%s/vocab/ggml-vocab-llama-spm.gguf", WYE_SHARED_DIR);
    expect_load_error(vocab, "token_embd.weight", NULL);
}

/* K-quant weights (Q4_K/Q6_K rows of 256 and 512, Q8_K activations): three prompts decoded
 * together, prompts read in chunks of 5, give exactly the ids each gives alone. */
static void kquant_batched(uint32_t type)
{
    char path[512];
    snprintf(path, sizeof(path), "%s/test_engine_kq_%d.gguf", WYE_BINARY_DIR, (int)getpid());
    write_model("tiny-llama-256", type, path, NULL, NULL);
    struct eng_model *m = load_path(path);
    struct eng_ctx *c = mkctx(m, 64, 3, 5);
    int32_t ids[3][12];
    for (int i = 0; i < 3; i++) {
        for (int j = 0; j < 12; j++) {
            ids[i][j] = 1 + (j * 977 + i * 131) % 31000;
        }
        ids[i][0] = 1;
    }
    struct eng_gen_params p;
    gen_greedy(&p, 10);
    p.ignore_eos = true;
    static struct gen_rec alone[3], both[3];
    for (int i = 0; i < 3; i++) {
        gen(c, ids[i], (size_t)(8 + i), &p, &alone[i], WYE_OK);
        assert_int_equal(alone[i].n_ids, 10);
    }
    struct eng_ctx *c2 = mkctx(m, 64, 3, 5);
    memset(both, 0, sizeof(both));
    char err[256];
    for (int i = 0; i < 3; i++) {
        int32_t id;
        assert_int_equal(eng_batch_add(c2, ids[i], (size_t)(8 + i), &p, &gen_rec_ops, &both[i],
                                       NULL, &id, err, sizeof(err)),
                         WYE_OK);
    }
    for (int s = 0; s < 100 && eng_batch_n_active(c2) > 0; s++) {
        assert_int_equal(eng_batch_step(c2), WYE_OK);
    }
    for (int i = 0; i < 3; i++) {
        assert_int_equal(both[i].n_ids, 10);
        assert_memory_equal(both[i].ids, alone[i].ids, 10 * sizeof(int32_t));
    }
    eng_ctx_destroy(c2);
    eng_ctx_destroy(c);
    eng_model_destroy(m);
    unlink(path);
}

static void test_kquant_batched(void **state)
{
    (void)state;
    kquant_batched(ENG_TYPE_Q4_K);
    kquant_batched(ENG_TYPE_Q6_K);
}

/* Logits after a 24-token prompt of a llama-shaped random model (32,000-token vocab) written
 * with the given rope settings. */
static void rope_logits(float freq_factor, float linear_factor, float *out)
{
    char path[512];
    snprintf(path, sizeof(path), "%s/test_engine_rope_%d.gguf", WYE_BINARY_DIR, (int)getpid());
    write_model_rope("tiny-llama", ENG_TYPE_Q8_0, path, NULL, NULL, freq_factor, linear_factor);
    struct eng_model *m = load_path(path);
    struct eng_ctx *c = mkctx(m, 64, 1, 8);
    int32_t prompt[24];
    for (int i = 0; i < 24; i++) {
        prompt[i] = 100 + 37 * i;
    }
    assert_int_equal(eng_ctx_eval(c, 0, 0, prompt, 24, out), WYE_OK);
    eng_ctx_destroy(c);
    eng_model_destroy(m);
    unlink(path);
}

/* Rope frequency scaling: rope_freqs.weight factors of 1 change nothing; factors of 4 (how
 * Llama 3.1 files carry llama3 scaling) compute exactly what linear scaling by 4 declared in
 * the metadata computes, and both differ from no scaling. */
static void test_rope_scaling(void **state)
{
    (void)state;
    enum { V = 32000 };
    static float plain[V], ones[V], fours[V], linear[V];
    rope_logits(0.0f, 0.0f, plain);
    rope_logits(1.0f, 0.0f, ones);
    rope_logits(4.0f, 0.0f, fours);
    rope_logits(0.0f, 4.0f, linear);
    assert_memory_equal(plain, ones, sizeof(plain));
    assert_memory_equal(fours, linear, sizeof(fours));
    assert_memory_not_equal(plain, fours, sizeof(plain));
}

/* Logits after n tokens evaluated in passes of `step` tokens on a context of n_threads. */
static void att_logits(struct eng_model *m, int32_t n_threads, const int32_t *ids, int32_t n,
                       int32_t step, float *out)
{
    struct eng_ctx_params p = {
        .n_ctx = 512, .n_seq_max = 1, .n_batch = 512, .n_threads = n_threads, .kv_type = mkctx_kv};
    struct eng_ctx *c = NULL;
    char err[256] = "";
    if (eng_ctx_create(m, &p, &c, err, sizeof(err)) != WYE_OK) {
        fail_msg("eng_ctx_create: %s", err);
    }
    for (int32_t i = 0; i < n; i += step) {
        int32_t k = n - i < step ? n - i : step;
        assert_int_equal(eng_ctx_eval(c, 0, i, ids + i, (size_t)k, i + k == n ? out : NULL),
                         WYE_OK);
    }
    eng_ctx_destroy(c);
}

/* Attention runs over a token's positions in chunks of 64 and merges them; decoding one
 * sequence on two threads gives each chunk its own task and merges after the pool run, a
 * prompt gives each (token, KV head) one task that merges its chunks itself, one thread runs
 * everything in order. 300 positions (5 chunks, enough work to use the pool) of a model with
 * 256-wide attention and F32 weights (whose products give the same bits for one token as for
 * many): the last logits are the same bits whichever way they were computed, with an F32 and
 * with an F16 KV cache; the F16 cache moves them by less than 1% of their spread. */
static void test_attention_paths(void **state)
{
    (void)state;
    enum { V = 32000, N = 300 };
    static float one_prompt[V], two_prompt[V], two_decode[V], one_decode[V], two_mixed[V], f32[V];
    char path[512];
    snprintf(path, sizeof(path), "%s/test_engine_att_%d.gguf", WYE_BINARY_DIR, (int)getpid());
    write_model("tiny-llama-256", ENG_TYPE_F32, path, NULL, NULL);
    struct eng_model *m = load_path(path);
    int32_t ids[N];
    for (int i = 0; i < N; i++) {
        ids[i] = 100 + (37 * i) % 31000;
    }
    for (int kv = 0; kv < 2; kv++) {
        mkctx_kv = kv ? ENG_KV_F16 : ENG_KV_F32;
        att_logits(m, 1, ids, N, N, one_prompt);
        att_logits(m, 2, ids, N, N, two_prompt);
        att_logits(m, 2, ids, N, 1, two_decode);
        att_logits(m, 1, ids, N, 1, one_decode);
        att_logits(m, 2, ids, N, 3, two_mixed);
        assert_memory_equal(one_prompt, two_prompt, sizeof(one_prompt));
        assert_memory_equal(one_prompt, two_decode, sizeof(one_prompt));
        assert_memory_equal(one_prompt, one_decode, sizeof(one_prompt));
        assert_memory_equal(one_prompt, two_mixed, sizeof(one_prompt));
        for (int i = 0; i < V; i++) {
            assert_true(isfinite(one_prompt[i]));
        }
        if (kv == 0) {
            memcpy(f32, one_prompt, sizeof(f32));
        }
    }
    mkctx_kv = ENG_KV_F32;
    float lo = f32[0], hi = f32[0], diff = 0.0f;
    for (int i = 0; i < V; i++) {
        lo = f32[i] < lo ? f32[i] : lo;
        hi = f32[i] > hi ? f32[i] : hi;
        float d = fabsf(f32[i] - one_prompt[i]);
        diff = d > diff ? d : diff;
    }
    print_message("F16 KV: logits move by up to %g (spread %g)\n", (double)diff, (double)(hi - lo));
    assert_true(diff > 0.0f && diff < 0.01f * (hi - lo));
    eng_model_destroy(m);
    unlink(path);
}

/* One head's attention as the forward pass computes it (chunks of 64 positions, merged) vs
 * softmax(q k / sqrt(hd)) v in double precision, for lengths around the chunk boundaries,
 * head sizes with and without a scalar tail, and scores spread wide enough (up to ~+-20)
 * that a chunk's max matters; with F32 keys and values, then with them rounded to F16 (the
 * reference sees the rounded values). On an AVX2 CPU the AVX2/F16C build gives the same bits
 * as the build for any CPU. */
static void test_attention_reference(void **state)
{
    (void)state;
    enum { N_MAX = 1000, HD_MAX = 128 };
    static float q[HD_MAX], k[N_MAX * HD_MAX], v[N_MAX * HD_MAX], out[HD_MAX], out2[HD_MAX];
    static uint16_t kh[N_MAX * HD_MAX], vh[N_MAX * HD_MAX];
    static double w[N_MAX];
    static const int32_t ns[] = {1, 3, 63, 64, 65, 127, 128, 129, 300, 1000};
    static const int32_t hds[] = {64, 48, 128};
    bool avx2 = strcmp(eng_kernels_name(), "avx2") == 0;
    float *scratch = wye_calloc(eng_att_head_scratch(N_MAX, HD_MAX), sizeof(float));
    assert_non_null(scratch);
    uint64_t rng = 0x9e3779b97f4a7c15u;
    for (int f16 = 0; f16 < 2; f16++) {
        for (size_t a = 0; a < sizeof(hds) / sizeof(hds[0]); a++) {
            int32_t hd = hds[a];
            for (size_t b = 0; b < sizeof(ns) / sizeof(ns[0]); b++) {
                int32_t n = ns[b];
                for (int32_t i = 0; i < hd; i++) {
                    q[i] = 2.0f * ktr_sym(&rng);
                }
                for (int32_t i = 0; i < n * hd; i++) {
                    k[i] = 2.0f * ktr_sym(&rng);
                    v[i] = ktr_sym(&rng);
                }
                const void *kp = k, *vp = v;
                if (f16) {
                    eng_quantize_row(ENG_TYPE_F16, k, kh, (int64_t)n * hd);
                    eng_quantize_row(ENG_TYPE_F16, v, vh, (int64_t)n * hd);
                    eng_dequantize_row(ENG_TYPE_F16, kh, k, (int64_t)n * hd);
                    eng_dequantize_row(ENG_TYPE_F16, vh, v, (int64_t)n * hd);
                    kp = kh, vp = vh;
                }
                eng_att_head(q, kp, vp, f16, n, hd, scratch, out);
                if (avx2) {
                    eng_att_head_avx2(q, kp, vp, f16, n, hd, scratch, out2);
                    assert_memory_equal(out, out2, (size_t)hd * sizeof(float));
                }
                double mx = -INFINITY, sum = 0.0;
                for (int32_t p = 0; p < n; p++) {
                    double d = 0.0;
                    for (int32_t i = 0; i < hd; i++) {
                        d += (double)q[i] * (double)k[(size_t)p * (size_t)hd + (size_t)i];
                    }
                    w[p] = d / sqrt((double)hd);
                    mx = w[p] > mx ? w[p] : mx;
                }
                for (int32_t p = 0; p < n; p++) {
                    w[p] = exp(w[p] - mx);
                    sum += w[p];
                }
                for (int32_t i = 0; i < hd; i++) {
                    double ref = 0.0;
                    for (int32_t p = 0; p < n; p++) {
                        ref += w[p] / sum * (double)v[(size_t)p * (size_t)hd + (size_t)i];
                    }
                    if (fabs((double)out[i] - ref) > 2e-6) {
                        fail_msg("%s n %d hd %d out[%d] = %.9g, reference %.9g",
                                 f16 ? "f16" : "f32", n, hd, i, (double)out[i], ref);
                    }
                }
            }
        }
    }
    wye_free(scratch);
}

/* The exponential softmax and SiLU use: within 1.5 float ulps (relative 9e-8) of e^x over
 * [-87, 88] (8 consecutive floats every 1e-3), exact at 0, clamped to finite normal values
 * beyond. */
static void test_exp8(void **state)
{
    (void)state;
    double worst = 0.0;
    float in[8], out[8];
    for (int k = 0; k <= 175000; k++) {
        float x = (float)(-87.0 + 1e-3 * k); /* 8 neighbouring floats around each point */
        for (int i = 0; i < 8; i++) {
            in[i] = x;
            x = nextafterf(x, 100.0f);
        }
        eng_exp8(out, in);
        for (int i = 0; i < 8; i++) {
            double ref = exp((double)in[i]), rel = fabs((double)out[i] - ref) / ref;
            worst = rel > worst ? rel : worst;
        }
    }
    print_message("exp8: worst relative error %.3g\n", worst);
    assert_true(worst < 9e-8);
    const float edge[8] = {0.0f, -0.0f, 1.0f, -1.0f, -1e30f, -INFINITY, 1e30f, INFINITY};
    eng_exp8(out, edge);
    assert_true(out[0] == 1.0f && out[1] == 1.0f);
    assert_true(fabsf(out[2] - 2.7182817f) < 3e-7f && fabsf(out[3] - 0.36787944f) < 5e-8f);
    for (int i = 4; i < 6; i++) {
        assert_true(out[i] > 0.0f && out[i] < 2e-38f && isnormal(out[i]));
    }
    for (int i = 6; i < 8; i++) {
        assert_true(out[i] > 1e38f && isfinite(out[i]));
    }
}

/* SwiGLU's silu(g) * u: g / (1 + e^-g) * u within float rounding of the double formula, and
 * the same bits from the AVX2 build as from the build for any CPU, for lengths with and
 * without a tail of fewer than 8. */
static void test_silu_mul(void **state)
{
    (void)state;
    bool avx2 = strcmp(eng_kernels_name(), "avx2") == 0;
    uint64_t rs = 99;
    float g[45], u[45], a[45], b[45];
    for (int n = 1; n <= 45; n += 4) {
        for (int i = 0; i < n; i++) {
            rs = rs * 6364136223846793005ULL + 1442695040888963407ULL;
            g[i] = (float)((int64_t)(rs >> 40) - (1 << 23)) / (float)(1 << 19); /* -16..16 */
            u[i] = (float)((int64_t)(rs >> 20 & 0xfffff) - (1 << 19)) / (float)(1 << 18);
        }
        g[0] = n == 1 ? -200.0f : g[0]; /* e^200 clamped to e^88.37 */
        memcpy(a, g, sizeof(g));
        memcpy(b, g, sizeof(g));
        eng_silu_mul(a, u, n);
        for (int i = 0; i < n; i++) {
            double x = g[i], ref = x / (1.0 + exp(-x)) * (double)u[i];
            assert_true(fabs((double)a[i] - ref) <= 1e-6 * fabs(ref) + 1e-30);
        }
        if (avx2) {
            eng_silu_mul_avx2(b, u, n);
            assert_memory_equal(a, b, (size_t)n * sizeof(float));
        }
    }
}

/* Runs a CLI entry point with stdout captured into out. */
static int run_cli(int (*fn)(int, char **), int argc, char **argv, char *out, size_t cap)
{
    char path[512];
    snprintf(path, sizeof(path), "%s/test_engine_out_%d.txt", WYE_BINARY_DIR, (int)getpid());
    fflush(stdout);
    int saved = dup(1);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    assert_true(saved >= 0 && fd >= 0);
    dup2(fd, 1);
    close(fd);
    int rc = fn(argc, argv);
    fflush(stdout);
    dup2(saved, 1);
    close(saved);
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    size_t n = fread(out, 1, cap - 1, f);
    out[n] = '\0';
    fclose(f);
    unlink(path);
    return rc;
}

static void test_cli_tokenize(void **state)
{
    (void)state;
    char vocab[512], out[4096];
    snprintf(vocab, sizeof(vocab), "%s/vocab/ggml-vocab-llama-spm.gguf", WYE_SHARED_DIR);
    /* llama.cpp's test vector for "Hello world" (no BOS) in this vocab is 15043 3186. */
    char *argv1[] = {(char *)"tokenize", (char *)"-m",          vocab,
                     (char *)"--no-bos", (char *)"Hello world", NULL};
    assert_int_equal(run_cli(eng_cli_tokenize, 5, argv1, out, sizeof(out)), 0);
    assert_string_equal(out, "[15043, 3186]\n");
    char *argv2[] = {(char *)"tokenize", (char *)"-m", vocab, (char *)"Hello world", NULL};
    assert_int_equal(run_cli(eng_cli_tokenize, 4, argv2, out, sizeof(out)), 0);
    assert_string_equal(out, "[1, 15043, 3186]\n");
    char *argv3[] = {(char *)"tokenize", (char *)"-m", (char *)"/nonexistent.gguf", (char *)"x",
                     NULL};
    assert_int_equal(run_cli(eng_cli_tokenize, 4, argv3, out, sizeof(out)), 1);
    char *argv4[] = {(char *)"tokenize", (char *)"--help", NULL};
    assert_int_equal(run_cli(eng_cli_tokenize, 2, argv4, out, sizeof(out)), 0);
    assert_non_null(strstr(out, "usage: wye tokenize"));
}

static void test_cli_run(void **state)
{
    (void)state;
    char model[512], out[8192];
    snprintf(model, sizeof(model), "%s/models/stories260K-f32.gguf", WYE_SHARED_DIR);
    char *argv[] = {(char *)"run",
                    (char *)"-m",
                    model,
                    (char *)"-p",
                    (char *)"Once upon a time",
                    (char *)"-n",
                    (char *)"11",
                    (char *)"--temp",
                    (char *)"0",
                    (char *)"-t",
                    (char *)"1",
                    NULL};
    assert_int_equal(run_cli(eng_cli_run, 11, argv, out, sizeof(out)), 0);
    assert_string_equal(out, ", there was a little girl named Lily.\n");
    /* --echo prints the prompt first; --chat formats it as a user message. */
    char *argv2[] = {(char *)"run",
                     (char *)"-m",
                     model,
                     (char *)"-p",
                     (char *)"Once upon a time",
                     (char *)"-n",
                     (char *)"11",
                     (char *)"--temp",
                     (char *)"0",
                     (char *)"-t",
                     (char *)"1",
                     (char *)"--echo",
                     NULL};
    assert_int_equal(run_cli(eng_cli_run, 12, argv2, out, sizeof(out)), 0);
    assert_string_equal(out, "Once upon a time, there was a little girl named Lily.\n");
    char *argv3[] = {(char *)"run", (char *)"-m", model,       (char *)"-p",
                     (char *)"Hi",  (char *)"-n", (char *)"3", (char *)"--chat",
                     (char *)"-t",  (char *)"1",  NULL};
    assert_int_equal(run_cli(eng_cli_run, 10, argv3, out, sizeof(out)), 0);
    char *argv4[] = {(char *)"run", (char *)"-m",     model,         (char *)"-p",
                     (char *)"Hi",  (char *)"--temp", (char *)"hot", NULL};
    assert_int_equal(run_cli(eng_cli_run, 7, argv4, out, sizeof(out)), 2);
}

/* Every allocation of model loading and context creation may fail: the error comes back
 * (NOMEM), nothing crashes or leaks (LeakSanitizer checks the sanitizer build). */
static void test_alloc_failure(void **state)
{
    (void)state;
    char path[512], err[512];
    snprintf(path, sizeof(path), "%s/models/stories260K-f32.gguf", WYE_SHARED_DIR);
    bool loaded = false, created = false;
    long n = 0;
    for (; n < 100000 && !created; n++) {
        struct eng_model *m = NULL;
        struct eng_ctx *c = NULL;
        wye_alloc_fail_after(n);
        enum wye_err e = eng_model_load(path, &m, err, sizeof(err));
        if (e == WYE_OK) {
            loaded = true;
            struct eng_ctx_params p = {.n_ctx = 16, .n_seq_max = 2, .n_threads = 1};
            e = eng_ctx_create(m, &p, &c, err, sizeof(err));
            created = e == WYE_OK;
        }
        wye_alloc_fail_after(-1);
        if (e != WYE_OK) {
            assert_int_equal(e, WYE_ERR_NOMEM);
            assert_null(c);
        }
        eng_ctx_destroy(c);
        eng_model_destroy(m);
    }
    assert_true(loaded && created);
    assert_true(n > 20); /* every step of loading and creation really was failed once */
}

/* `wye bench --json` prints one JSON object with the medians and the roofline inputs. */
static void test_cli_bench(void **state)
{
    (void)state;
    char model[512], out[4096];
    snprintf(model, sizeof(model), "%s/models/stories260K-q8_0.gguf", WYE_SHARED_DIR);
    char *argv[] = {(char *)"bench",
                    (char *)"-m",
                    model,
                    (char *)"-t",
                    (char *)"1",
                    (char *)"-p",
                    (char *)"16",
                    (char *)"-n",
                    (char *)"4",
                    (char *)"-r",
                    (char *)"2",
                    (char *)"--membw-mib",
                    (char *)"8",
                    (char *)"--json",
                    (char *)"-s",
                    (char *)"3",
                    NULL};
    assert_int_equal(run_cli(eng_cli_bench, 16, argv, out, sizeof(out)), 0);
    assert_int_equal(out[0], '{');
    assert_non_null(strstr(out, "}\n"));
    double pp = 0, tg = 0;
    const char *p = strstr(out, "\"pp_tok_s\": ");
    const char *g = strstr(out, "\"tg_tok_s\": ");
    assert_non_null(p);
    assert_non_null(g);
    pp = strtod(p + 12, NULL);
    tg = strtod(g + 12, NULL);
    assert_true(pp > 0 && tg > 0);
    /* stories260K-q8_0: every matrix incl. the tied 512 x 64 output counted once. */
    assert_non_null(strstr(out, "\"weight_bytes_per_token\": "));
    /* the median of the runs' fractions, each against the bandwidth measured before it: at
     * least the median generation against the highest of those figures */
    const char *f = strstr(out, "\"roofline_fraction\": ");
    const char *fb = strstr(out, "\"roofline_fraction_vs_best_membw\": ");
    assert_non_null(f);
    assert_non_null(fb);
    assert_true(strtod(f + 21, NULL) >= strtod(fb + 35, NULL));
    assert_non_null(strstr(out, "\"membw_bytes_s_max\": "));
    const char *b = strstr(out, "\"tg_batch_tok_s\": ");
    assert_non_null(b);
    assert_true(strtod(b + 18, NULL) > 0);
    assert_non_null(strstr(out, "\"seqs\": 3"));
    char *help[] = {(char *)"bench", (char *)"--help", NULL};
    assert_int_equal(run_cli(eng_cli_bench, 2, help, out, sizeof(out)), 0);
    assert_non_null(strstr(out, "usage: wye bench"));
    char *bad[] = {(char *)"bench", (char *)"-m", model, (char *)"-r", (char *)"0", NULL};
    assert_int_equal(run_cli(eng_cli_bench, 5, bad, out, sizeof(out)), 2);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tiny_qwen2),
        cmocka_unit_test(test_chat_tokenize),
        cmocka_unit_test(test_overflow),
        cmocka_unit_test(test_cancel),
        cmocka_unit_test(test_stop_strings),
        cmocka_unit_test(test_malformed),
        cmocka_unit_test(test_cli_tokenize),
        cmocka_unit_test(test_cli_run),
        cmocka_unit_test(test_alloc_failure),
        cmocka_unit_test(test_rope_scaling),
        cmocka_unit_test(test_kquant_batched),
        cmocka_unit_test(test_pause_resume),
        cmocka_unit_test(test_add_from_callback),
        cmocka_unit_test(test_prefix_reuse),
        cmocka_unit_test(test_cli_bench),
        cmocka_unit_test(test_prefix_shared_across_slots),
        cmocka_unit_test(test_attention_paths),
        cmocka_unit_test(test_attention_reference),
        cmocka_unit_test(test_exp8),
        cmocka_unit_test(test_silu_mul),
        cmocka_unit_test(test_prefix_shared_f16),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
