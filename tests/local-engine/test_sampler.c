/* The sampler: seeded reproducibility, greedy, top-k / top-p / min-p cuts on a known
 * distribution, sampling frequencies, the repetition penalty. */
// clang-format off
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
// clang-format on
#include <math.h>
#include <string.h>

#include "local-engine/sampler.h"

/* p = {0.5, 0.3, 0.15, 0.05} as logits. */
static void known_logits(float *l)
{
    const float p[4] = {0.5f, 0.3f, 0.15f, 0.05f};
    for (int i = 0; i < 4; i++) {
        l[i] = logf(p[i]);
    }
}

static struct eng_sampler *mk(int32_t n_vocab, const struct eng_sampler_params *p)
{
    struct eng_sampler *s = NULL;
    assert_int_equal(eng_sampler_create(n_vocab, &s), WYE_OK);
    eng_sampler_reset(s, p);
    return s;
}

static void params(struct eng_sampler_params *p, float temp, int32_t k, float top_p, float min_p,
                   uint64_t seed)
{
    eng_sampler_params_greedy(p);
    p->temperature = temp;
    p->top_k = k;
    p->top_p = top_p;
    p->min_p = min_p;
    p->seed = seed;
}

/* Counts draws per id over n samples of the known distribution. */
static void histogram(struct eng_sampler *s, int n, int counts[4])
{
    memset(counts, 0, 4 * sizeof(int));
    for (int i = 0; i < n; i++) {
        float l[4];
        known_logits(l);
        int32_t id = eng_sampler_sample(s, l, 4);
        assert_true(id >= 0 && id < 4);
        counts[id]++;
    }
}

static void test_seed_reproducible(void **state)
{
    (void)state;
    struct eng_sampler_params p;
    params(&p, 1.0f, 0, 1.0f, 0.0f, 42);
    struct eng_sampler *a = mk(4, &p), *b = mk(4, &p);
    int32_t seq_a[200], seq_b[200];
    for (int i = 0; i < 200; i++) {
        float la[4], lb[4];
        known_logits(la);
        known_logits(lb);
        seq_a[i] = eng_sampler_sample(a, la, 4);
        seq_b[i] = eng_sampler_sample(b, lb, 4);
    }
    assert_memory_equal(seq_a, seq_b, sizeof(seq_a));
    /* Reset with the same seed replays; another seed gives another sequence. */
    eng_sampler_reset(a, &p);
    for (int i = 0; i < 200; i++) {
        float l[4];
        known_logits(l);
        assert_int_equal(eng_sampler_sample(a, l, 4), seq_a[i]);
    }
    p.seed = 43;
    eng_sampler_reset(b, &p);
    int same = 0;
    for (int i = 0; i < 200; i++) {
        float l[4];
        known_logits(l);
        same += eng_sampler_sample(b, l, 4) == seq_a[i];
    }
    assert_true(same < 200);
    eng_sampler_destroy(a);
    eng_sampler_destroy(b);
}

static void test_frequencies(void **state)
{
    (void)state;
    struct eng_sampler_params p;
    params(&p, 1.0f, 0, 1.0f, 0.0f, 7);
    struct eng_sampler *s = mk(4, &p);
    int c[4];
    histogram(s, 20000, c);
    const double want[4] = {0.5, 0.3, 0.15, 0.05};
    for (int i = 0; i < 4; i++) {
        assert_true(fabs(c[i] / 20000.0 - want[i]) < 0.02);
    }
    /* A low temperature sharpens the distribution toward the top token. */
    params(&p, 0.25f, 0, 1.0f, 0.0f, 7);
    eng_sampler_reset(s, &p);
    histogram(s, 5000, c);
    assert_true(c[0] > 4000);
    eng_sampler_destroy(s);
}

static void test_greedy(void **state)
{
    (void)state;
    struct eng_sampler_params p;
    params(&p, 0.0f, 0, 1.0f, 0.0f, 1);
    struct eng_sampler *s = mk(8, &p);
    float l[8] = {0.1f, -3.0f, 2.5f, 2.4f, 0.0f, 1.0f, -1.0f, 2.49f};
    assert_int_equal(eng_sampler_sample(s, l, 8), 2);
    eng_sampler_destroy(s);
}

static void test_top_k(void **state)
{
    (void)state;
    struct eng_sampler_params p;
    params(&p, 1.0f, 1, 1.0f, 0.0f, 3);
    struct eng_sampler *s = mk(4, &p);
    int c[4];
    histogram(s, 500, c);
    assert_int_equal(c[0], 500);
    params(&p, 1.0f, 2, 1.0f, 0.0f, 3);
    eng_sampler_reset(s, &p);
    histogram(s, 4000, c);
    assert_true(c[0] > 0 && c[1] > 0);
    assert_int_equal(c[2] + c[3], 0);
    /* Renormalised over the two survivors: 0.5/0.8 = 0.625. */
    assert_true(fabs(c[0] / 4000.0 - 0.625) < 0.03);
    eng_sampler_destroy(s);
}

static void test_top_p(void **state)
{
    (void)state;
    struct eng_sampler_params p;
    params(&p, 1.0f, 0, 0.7f, 0.0f, 5); /* 0.5 < 0.7 <= 0.8: keeps ids 0 and 1 */
    struct eng_sampler *s = mk(4, &p);
    int c[4];
    histogram(s, 4000, c);
    assert_true(c[0] > 0 && c[1] > 0);
    assert_int_equal(c[2] + c[3], 0);
    params(&p, 1.0f, 0, 0.9f, 0.0f, 5); /* 0.95 >= 0.9: ids 0..2 */
    eng_sampler_reset(s, &p);
    histogram(s, 4000, c);
    assert_true(c[2] > 0);
    assert_int_equal(c[3], 0);
    eng_sampler_destroy(s);
}

static void test_min_p(void **state)
{
    (void)state;
    struct eng_sampler_params p;
    params(&p, 1.0f, 0, 1.0f, 0.25f, 9); /* threshold 0.125: 0.15 stays, 0.05 goes */
    struct eng_sampler *s = mk(4, &p);
    int c[4];
    histogram(s, 4000, c);
    assert_true(c[0] > 0 && c[1] > 0 && c[2] > 0);
    assert_int_equal(c[3], 0);
    params(&p, 1.0f, 0, 1.0f, 0.7f, 9); /* threshold 0.35: only id 0 */
    eng_sampler_reset(s, &p);
    histogram(s, 1000, c);
    assert_int_equal(c[0], 1000);
    eng_sampler_destroy(s);
}

/* top-p over a large flat-ish vocabulary exercises the growing partial sort. */
static void test_top_p_large_vocab(void **state)
{
    (void)state;
    enum { N = 5000 };
    static float l[N];
    struct eng_sampler_params p;
    params(&p, 1.0f, 0, 0.5f, 0.0f, 11);
    struct eng_sampler *s = mk(N, &p);
    /* logits decreasing with the id: the top half of the mass lies in the lowest ids. */
    double total = 0.0, cum = 0.0;
    for (int i = 0; i < N; i++) {
        total += exp(-(double)i / 1000.0);
    }
    int cut = 0;
    while (cum < 0.5 * total) {
        cum += exp(-(double)cut / 1000.0);
        cut++;
    }
    int max_id = 0;
    for (int r = 0; r < 300; r++) {
        for (int i = 0; i < N; i++) {
            l[i] = -(float)i / 1000.0f;
        }
        int32_t id = eng_sampler_sample(s, l, N);
        max_id = id > max_id ? id : max_id;
    }
    assert_true(max_id < cut + 1);
    assert_true(max_id > cut / 2); /* it really samples across the nucleus */
    eng_sampler_destroy(s);
}

static void test_repeat_penalty(void **state)
{
    (void)state;
    struct eng_sampler_params p;
    params(&p, 0.0f, 0, 1.0f, 0.0f, 1);
    p.repeat_penalty = 1.5f;
    p.repeat_last_n = 2;
    struct eng_sampler *s = mk(4, &p);
    float l[4] = {2.0f, 1.9f, -1.0f, -1.2f};
    assert_int_equal(eng_sampler_sample(s, l, 4), 0);
    eng_sampler_accept(s, 0);
    eng_sampler_accept(s, 0); /* twice: still penalised once */
    float l2[4] = {2.0f, 1.9f, -1.0f, -1.2f};
    assert_int_equal(eng_sampler_sample(s, l2, 4), 1);
    assert_float_equal(l2[0], 2.0f / 1.5f, 1e-6);
    /* Negative logits are multiplied. */
    eng_sampler_accept(s, 2);
    float l3[4] = {-5.0f, -5.0f, -1.0f, -1.2f};
    assert_int_equal(eng_sampler_sample(s, l3, 4), 3);
    assert_float_equal(l3[2], -1.5f, 1e-6);
    /* Outside the last-2 window the penalty no longer applies. */
    eng_sampler_accept(s, 3);
    eng_sampler_accept(s, 3);
    float l4[4] = {2.0f, 1.9f, -1.0f, -1.2f};
    assert_int_equal(eng_sampler_sample(s, l4, 4), 0);
    eng_sampler_destroy(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_seed_reproducible),
        cmocka_unit_test(test_frequencies),
        cmocka_unit_test(test_greedy),
        cmocka_unit_test(test_top_k),
        cmocka_unit_test(test_top_p),
        cmocka_unit_test(test_min_p),
        cmocka_unit_test(test_top_p_large_vocab),
        cmocka_unit_test(test_repeat_penalty),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
