/* The complexity score: features move on crafted requests (code, maths, small talk, constraints,
 * tools, multi-turn, non-English, the scan window, invalid UTF-8); the default weights rank a
 * maths or code prompt above small talk and reach an AUC floor on the shared dev set; training
 * recovers a known direction; weights JSON round trip and malformed weights; AUC and
 * call-performance on hand-computed cases; determinism; allocation-failure loops. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "router/score.h"
#include "router/score_internal.h"
#include "router/score_train.h"

/* The AUC the embedded weights reach in-sample on dev.jsonl is 0.940 (docs/routing.md); the
 * floor leaves room for retraining and feature changes without letting a broken model pass
 * (length alone reaches 0.76). */
#define DEV_AUC_FLOOR 0.88

static struct rt_features text_features(const char *s)
{
    struct rt_features f;
    rt_features_extract_text(s, strlen(s), &f);
    return f;
}

static float feat(const struct rt_features *f, enum rt_feat i)
{
    return f->v[i];
}

static void test_keyword_table_sorted(void **state)
{
    (void)state;
    assert_int_equal(rt_features_selfcheck(), 0);
    for (int i = 0; i < RT_F__COUNT; i++) {
        assert_non_null(rt_feature_name(i));
        assert_int_equal(rt_feature_index(rt_feature_name(i)), i);
    }
    assert_null(rt_feature_name(RT_F__COUNT));
    assert_int_equal(rt_feature_index("no_such_feature"), -1);
}

static void test_features_code(void **state)
{
    (void)state;
    struct rt_features code = text_features(
        "Write a Python function that parses a config file.\n```python\ndef parse(path):\n"
        "    if path == None:\n        return {}\n    return load_file(path)\n```");
    struct rt_features prose = text_features("Tell me about the history of the Roman empire.");
    assert_true(feat(&code, RT_F_CODE_SYNTAX) >= log1pf(5));
    assert_true(feat(&code, RT_F_CODE_TOPIC) > 0);
    assert_true(feat(&code, RT_F_SYMBOLS) > feat(&prose, RT_F_SYMBOLS));
    assert_true(feat(&code, RT_F_IMPERATIVES) > 0); /* "Write ..." opens a sentence */
    assert_true(feat(&prose, RT_F_CODE_SYNTAX) == 0);
    assert_true(feat(&prose, RT_F_CODE_TOPIC) == 0);
    /* Everyday English words that are also keywords do not count as code. */
    struct rt_features news = text_features("The public class will return to the static "
                                            "display after the import fair.");
    assert_true(feat(&news, RT_F_CODE_SYNTAX) == 0);
}

static void test_features_math(void **state)
{
    (void)state;
    struct rt_features m = text_features(
        "Find all real numbers $x$ such that $x^2 + \\frac{1}{2} = 3x$. Prove that there are "
        "exactly two solutions, and compute their sum.");
    assert_true(feat(&m, RT_F_LATEX) >= log1pf(5));
    assert_true(feat(&m, RT_F_MATH) >= log1pf(3)); /* find all, real numbers, prove, compute */
    assert_true(feat(&m, RT_F_OPERATORS) > 0);
    assert_true(feat(&m, RT_F_NUMBERS) > 0);
    /* "total" and "area" are maths only beside numbers; money is not LaTeX. */
    struct rt_features words = text_features("The total area of the park is large.");
    struct rt_features nums = text_features("The total area of the park is 12 acres, $5 each.");
    assert_true(feat(&words, RT_F_MATH) == 0);
    assert_true(feat(&nums, RT_F_MATH) > 0);
    assert_true(feat(&nums, RT_F_LATEX) == 0);
    /* Number words are quantities; more than two suggest several steps. */
    struct rt_features two = text_features("Ann has 3 apples and buys 4 more.");
    struct rt_features five = text_features(
        "Ann has 3 apples, buys twice as many, gives five away and eats two. How many are left?");
    assert_true(feat(&two, RT_F_MULTI_QTY) == 0);
    assert_true(feat(&five, RT_F_MULTI_QTY) > 0);
    /* Emphasis asterisks are not operators; 3 * 4 is. */
    assert_true(feat(&words, RT_F_OPERATORS) == 0);
    struct rt_features bold = text_features("This is **very** important");
    struct rt_features mul = text_features("what is 3 * 4");
    assert_true(feat(&bold, RT_F_OPERATORS) == 0);
    assert_true(feat(&mul, RT_F_OPERATORS) > 0);
}

static void test_features_smalltalk_and_questions(void **state)
{
    (void)state;
    struct rt_features hi = text_features("hi, how are you?");
    assert_true(feat(&hi, RT_F_SMALLTALK) >= log1pf(2)); /* hi, how are */
    assert_true(feat(&hi, RT_F_SHORT) == 1.0f);
    assert_true(feat(&hi, RT_F_QUESTIONS) > 0);
    assert_true(feat(&hi, RT_F_LEN_LAST) < log1pf(8));
    struct rt_features fact = text_features("Who wrote Hamlet? When was it first staged?");
    assert_true(feat(&fact, RT_F_WH_FACTUAL) >= log1pf(2));
    assert_true(feat(&fact, RT_F_WH_OPEN) == 0);
    struct rt_features open = text_features("Why is the sky blue? Explain how light scatters.");
    assert_true(feat(&open, RT_F_WH_OPEN) > 0);
    assert_true(feat(&open, RT_F_REASONING) > 0);
    assert_true(feat(&open, RT_F_SENTENCES) >= log1pf(2));
    struct rt_features steps = text_features(
        "First list the causes, then compare them step by step, and finally analyze the "
        "long-term effects.");
    assert_true(feat(&steps, RT_F_REASONING) >= log1pf(5));
}

static void test_features_constraints(void **state)
{
    (void)state;
    struct rt_features c = text_features(
        "Write a blog post about tea in exactly 3 paragraphs. Your response must be in all "
        "lowercase letters and must contain at least 5 bullet points.\n- one\n- two\n"
        "Do not use any commas.");
    struct rt_features plain = text_features("Write a blog post about tea.");
    assert_true(feat(&c, RT_F_CONSTRAINTS) >= log1pf(7));
    assert_true(feat(&plain, RT_F_CONSTRAINTS) == 0);
    assert_true(feat(&c, RT_F_LIST_ITEMS) >= log1pf(2));
    assert_true(feat(&c, RT_F_LINES) >= log1pf(3));
    assert_true(feat(&plain, RT_F_LONGFORM) > 0);
    struct rt_features fields = text_features("Review: great phone\nQuestion: is it "
                                              "positive?\nOptions:\n(A) yes\n(B) no");
    assert_true(feat(&fields, RT_F_FIELDS) >= log1pf(5));
    assert_true(feat(&fields, RT_F_SHORT_TASK) > 0);
}

static void test_features_request_shape(void **state)
{
    (void)state;
    struct wye_chat_msg msgs[] = {
        {WYE_ROLE_SYSTEM, (char *)"You are a helpful assistant."},
        {WYE_ROLE_USER, (char *)"Plan a trip to Rome for a week with a detailed budget."},
        {WYE_ROLE_ASSISTANT, (char *)"Sure! Day 1: the Colosseum and the Forum. Day 2: ..."},
        {WYE_ROLE_USER, (char *)"thanks"},
    };
    struct wye_chat_req req;
    memset(&req, 0, sizeof(req));
    req.msgs = msgs;
    req.n_msgs = 4;
    struct rt_features f;
    rt_features_extract(&req, &f);
    assert_true(feat(&f, RT_F_SYSTEM) == 1.0f);
    assert_true(feat(&f, RT_F_TURNS) == log1pf(1));
    assert_true(feat(&f, RT_F_LEN_CONV) > feat(&f, RT_F_LEN_LAST) + 1.0f);
    assert_true(feat(&f, RT_F_SMALLTALK) > 0); /* the last user message is scanned */
    assert_true(feat(&f, RT_F_TOOLS) == 0 && feat(&f, RT_F_MAX_TOKENS) == 0);
    req.has_tools = true;
    req.has_response_format = true;
    req.max_tokens = 4096;
    rt_features_extract(&req, &f);
    assert_true(feat(&f, RT_F_TOOLS) == 1.0f);
    assert_true(feat(&f, RT_F_RESP_FORMAT) == 1.0f);
    assert_true(feat(&f, RT_F_MAX_TOKENS) == 4.0f);
    req.max_tokens = 16;
    rt_features_extract(&req, &f);
    assert_true(feat(&f, RT_F_MAX_TOKENS) == -3.0f);
    /* The default model sends the same text remote more readily with tools. */
    struct rt_score_model m;
    char err[128];
    assert_int_equal(rt_score_model_default(&m, err, sizeof(err)), WYE_OK);
    struct rt_score_result a, b;
    req.has_tools = false;
    req.has_response_format = false;
    req.max_tokens = 0;
    rt_features_extract(&req, &f);
    rt_score(&m, &f, 0, &a);
    req.has_tools = true;
    rt_features_extract(&req, &f);
    rt_score(&m, &f, 0, &b);
    assert_true(b.score > a.score);
}

static void test_features_non_english_and_bounds(void **state)
{
    (void)state;
    struct rt_features ru = text_features("Как дела? Расскажи мне о погоде в Москве.");
    struct rt_features en = text_features("How are you? Tell me about the weather.");
    assert_true(feat(&ru, RT_F_NON_ASCII) > 0.9f);
    assert_true(feat(&en, RT_F_NON_ASCII) == 0);
    struct rt_features zh = text_features("请用三句话解释量子计算。");
    assert_true(feat(&zh, RT_F_NON_ASCII) == 1.0f);
    assert_true(feat(&zh, RT_F_LEN_LAST) > log1pf(8)); /* about one token per character */

    /* Invalid UTF-8 and control bytes: defined features, no crash. */
    static const char junk[] = "\xff\xfe\xc0\x80 abc \xe2\x82 \x01\x02 ``` $ \\ \n\n(A)";
    struct rt_features j;
    rt_features_extract_text(junk, sizeof(junk) - 1, &j);
    for (int i = 0; i < RT_F__COUNT; i++) {
        assert_true(isfinite(j.v[i]));
    }
    struct rt_features empty = text_features("");
    for (int i = 0; i < RT_F__COUNT; i++) {
        assert_true(empty.v[i] == 0.0f || i == RT_F_SHORT);
    }

    /* Only the last RT_SCAN_MAX bytes are scanned; a multi-byte character cut by the window
     * start is skipped. Length still counts the whole text. */
    size_t n = 4 * RT_SCAN_MAX;
    char *big = malloc(n + 1);
    assert_non_null(big);
    memcpy(big, "```def f(): pass```", 19);
    for (size_t i = 19; i < n; i += 2) {
        big[i] = 'a';
        big[i + 1] = ' ';
    }
    memcpy(big + n - RT_SCAN_MAX - 1, "\xd0\x96", 2); /* cut by the window */
    big[n] = '\0';
    struct rt_features bf;
    rt_features_extract_text(big, n, &bf);
    assert_true(feat(&bf, RT_F_CODE_SYNTAX) == 0);
    assert_true(feat(&bf, RT_F_NON_ASCII) == 0);
    assert_true(feat(&bf, RT_F_LEN_LAST) > log1pf((float)n / 5));
    free(big);
}

/* Random bytes biased towards the characters the scanner treats specially: every feature stays
 * finite and every share stays in [0,1] (ASan/UBSan watch the reads). */
static void test_features_random_bytes(void **state)
{
    (void)state;
    static const char alphabet[] = "aZ_'-#0.,$\\`{}[];=<>|+*/^()?!: \n\t\xc3\xa9\xe2\x80\xa2\xff";
    uint32_t seed = 99;
    char buf[512];
    for (int it = 0; it < 3000; it++) {
        size_t n = (size_t)(uint32_t)(seed = seed * 1664525u + 1013904223u) % sizeof(buf);
        for (size_t i = 0; i < n; i++) {
            seed = seed * 1664525u + 1013904223u;
            buf[i] = alphabet[(seed >> 16) % (sizeof(alphabet) - 1)];
        }
        struct rt_features f;
        rt_features_extract_text(buf, n, &f);
        for (int k = 0; k < RT_F__COUNT; k++) {
            assert_true(isfinite(f.v[k]) && f.v[k] >= 0.0f);
        }
        assert_true(f.v[RT_F_NON_ASCII] <= 1.0f && f.v[RT_F_PERSONAL] <= 1.0f);
        assert_true(f.v[RT_F_COMMON] <= 1.0f && f.v[RT_F_DIGITS] <= 1.0f);
        assert_true(f.v[RT_F_LONG_WORDS] <= 1.0f && f.v[RT_F_AVG_WORD] <= 12.0f);
    }
}

static void test_default_model_ranks(void **state)
{
    (void)state;
    struct rt_score_model m;
    char err[128];
    assert_int_equal(rt_score_model_default(&m, err, sizeof(err)), WYE_OK);
    struct rt_features hi = text_features("hi, how are you?");
    struct rt_features math = text_features(
        "Let $f(x) = x^3 - 3x + 1$. Find all real numbers $a$ such that the equation "
        "$f(x) = a$ has exactly three distinct real solutions, and prove your answer.");
    struct rt_features code = text_features(
        "Write a Python function `merge_intervals(intervals)` that merges overlapping "
        "intervals and returns the result sorted.\n```python\ndef merge_intervals(intervals):\n"
        "    pass\n```");
    struct rt_score_result rh, rm, rc;
    rt_score(&m, &hi, 3, &rh);
    rt_score(&m, &math, 3, &rm);
    rt_score(&m, &code, 3, &rc);
    assert_true(rm.score > rh.score + 0.3f);
    assert_true(rc.score > rh.score + 0.3f);
    assert_false(rh.remote);
    assert_true(rm.remote);
    assert_true(rc.remote);
    assert_true(rh.score >= 0.0f && rm.score <= 1.0f);
    /* The reasons name the features that pushed the score. */
    char buf[512];
    assert_int_equal(rt_score_reasons_json(&rm, buf, sizeof(buf)), WYE_OK);
    cJSON *arr = cJSON_Parse(buf);
    assert_non_null(arr);
    assert_int_equal(cJSON_GetArraySize(arr), 3);
    bool saw_math = false;
    float prev = INFINITY;
    for (int i = 0; i < 3; i++) {
        cJSON *e = cJSON_GetArrayItem(arr, i);
        const char *name = cJSON_GetStringValue(cJSON_GetObjectItem(e, "feature"));
        double c = cJSON_GetNumberValue(cJSON_GetObjectItem(e, "contribution"));
        assert_non_null(name);
        assert_true(rt_feature_index(name) >= 0);
        assert_true(fabs(c) <= prev + 1e-3);
        prev = (float)fabs(c);
        saw_math |= strcmp(name, "math_markers") == 0 || strcmp(name, "latex") == 0;
    }
    assert_true(saw_math);
    cJSON_Delete(arr);
    /* Too small a buffer is reported, and still holds valid JSON. */
    char tiny[16];
    assert_int_equal(rt_score_reasons_json(&rm, tiny, sizeof(tiny)), WYE_ERR_TOOBIG);
    assert_string_equal(tiny, "[]");
    struct rt_score_result none = {.n_top = 0};
    assert_int_equal(rt_score_reasons_json(&none, tiny, sizeof(tiny)), WYE_OK);
    assert_string_equal(tiny, "[]");
}

/* Reads dev.jsonl: features and labels. */
static size_t load_dev(struct rt_features **x, unsigned char **y)
{
    FILE *f = fopen(WYE_SHARED_DIR "/router/dev.jsonl", "r");
    assert_non_null(f);
    size_t cap = 2048, n = 0;
    *x = malloc(cap * sizeof(**x));
    *y = malloc(cap);
    assert_true(*x && *y);
    char *line = NULL;
    size_t lcap = 0;
    while (getline(&line, &lcap, f) > 0 && n < cap) {
        cJSON *o = cJSON_Parse(line);
        assert_non_null(o);
        const char *p = cJSON_GetStringValue(cJSON_GetObjectItem(o, "prompt"));
        const char *l = cJSON_GetStringValue(cJSON_GetObjectItem(o, "label"));
        assert_true(p && l);
        rt_features_extract_text(p, strlen(p), &(*x)[n]);
        (*y)[n++] = strcmp(l, "remote") == 0;
        cJSON_Delete(o);
    }
    free(line);
    fclose(f);
    return n;
}

static void test_default_model_dev_auc(void **state)
{
    (void)state;
    struct rt_features *x;
    unsigned char *y;
    size_t n = load_dev(&x, &y);
    assert_true(n > 1000);
    struct rt_score_model m;
    char err[128];
    assert_int_equal(rt_score_model_default(&m, err, sizeof(err)), WYE_OK);
    float *sc = malloc(n * sizeof(float));
    size_t correct = 0;
    for (size_t i = 0; i < n; i++) {
        struct rt_score_result r;
        rt_score(&m, &x[i], 0, &r);
        sc[i] = r.score;
        correct += r.remote == (y[i] != 0);
    }
    double auc, frac;
    assert_int_equal(rt_eval_auc(sc, y, n, &auc), WYE_OK);
    assert_int_equal(rt_eval_call_fraction(sc, y, n, 0.95, &frac), WYE_OK);
    print_message("dev.jsonl: AUC %.4f, accuracy %.4f, call@95%% %.4f\n", auc,
                  (double)correct / (double)n, frac);
    assert_true(auc >= DEV_AUC_FLOOR);
    assert_true((double)correct / (double)n >= 0.78);
    assert_true(frac < 0.75); /* random routing needs 0.90 */

    /* Retraining on the same data is deterministic and reproduces the shipped ranking. */
    struct rt_train_opts o;
    rt_train_opts_default(&o);
    struct rt_score_model t1, t2;
    assert_int_equal(rt_score_train(x, y, n, &o, &t1), WYE_OK);
    assert_int_equal(rt_score_train(x, y, n, &o, &t2), WYE_OK);
    assert_memory_equal(&t1, &t2, sizeof(t1));
    for (size_t i = 0; i < n; i++) {
        struct rt_score_result r;
        rt_score(&t1, &x[i], 0, &r);
        sc[i] = r.score;
    }
    double auc2;
    assert_int_equal(rt_eval_auc(sc, y, n, &auc2), WYE_OK);
    assert_true(fabs(auc2 - auc) < 0.01);
    free(sc);
    free(x);
    free(y);
}

/* A small deterministic generator for the synthetic data. */
static uint32_t lcg(uint32_t *s)
{
    *s = *s * 1664525u + 1013904223u;
    return *s >> 8;
}

static float uni(uint32_t *s)
{
    return (float)(lcg(s) & 0xFFFF) / 65536.0f;
}

static void test_train_recovers_direction(void **state)
{
    (void)state;
    enum { N = 600 };
    static struct rt_features x[N];
    static unsigned char y[N];
    uint32_t seed = 12345;
    for (int i = 0; i < N; i++) {
        for (int f = 0; f < RT_F__COUNT; f++) {
            x[i].v[f] = uni(&seed) * 2.0f;
        }
        x[i].v[RT_F_TOOLS] = 0; /* policy features stay constant here */
        x[i].v[RT_F_RESP_FORMAT] = 0;
        x[i].v[RT_F_MAX_TOKENS] = 0;
        x[i].v[RT_F_NON_ASCII] = 0;
        /* Remote when 2*math - smalltalk is high, with 5% label noise. */
        float t = 2.0f * x[i].v[RT_F_MATH] - x[i].v[RT_F_SMALLTALK];
        y[i] = (t > 1.0f) ^ (uni(&seed) < 0.05f);
    }
    struct rt_train_opts o;
    rt_train_opts_default(&o);
    o.l2 = 1.0;
    struct rt_score_model m;
    assert_int_equal(rt_score_train(x, y, N, &o, &m), WYE_OK);
    float wm = m.w[RT_F_MATH] / m.std[RT_F_MATH], ws = m.w[RT_F_SMALLTALK] / m.std[RT_F_SMALLTALK];
    print_message("math %.3f smalltalk %.3f\n", wm, ws);
    assert_true(wm > 0 && ws < 0);
    assert_true(fabsf(wm / ws + 2.0f) < 0.75f); /* the direction (2, -1), up to scale */
    for (int f = 0; f < RT_F__COUNT; f++) {
        if (f != RT_F_MATH && f != RT_F_SMALLTALK && rt_score_prior_weight(f) == 0.0f) {
            assert_true(fabsf(m.w[f]) < 0.25f * fabsf(m.w[RT_F_MATH]));
        }
    }
    assert_true(m.w[RT_F_TOOLS] == rt_score_prior_weight(RT_F_TOOLS));
    size_t ok = 0;
    for (int i = 0; i < N; i++) {
        struct rt_score_result r;
        rt_score(&m, &x[i], 0, &r);
        ok += r.remote == (y[i] != 0);
    }
    assert_true(ok >= (size_t)(0.9 * N));

    /* --only: a feature left out gets weight 0. */
    o.use[RT_F_MATH] = false;
    assert_int_equal(rt_score_train(x, y, N, &o, &m), WYE_OK);
    assert_true(m.w[RT_F_MATH] == 0.0f);
    /* One class only is refused. */
    memset(y, 1, N);
    assert_int_equal(rt_score_train(x, y, N, &o, &m), WYE_ERR_INVAL);
}

static void test_eval_metrics(void **state)
{
    (void)state;
    /* 4 remote, 6 local. */
    const unsigned char y[10] = {1, 1, 1, 1, 0, 0, 0, 0, 0, 0};
    const float perfect[10] = {0.9f, 0.8f, 0.7f, 0.6f, 0.5f, 0.4f, 0.3f, 0.2f, 0.1f, 0.0f};
    const float inverted[10] = {0.0f, 0.1f, 0.2f, 0.3f, 0.4f, 0.5f, 0.6f, 0.7f, 0.8f, 0.9f};
    const float ties[10] = {0.5f, 0.5f, 0.5f, 0.5f, 0.5f, 0.5f, 0.5f, 0.5f, 0.5f, 0.5f};
    double auc, frac;
    float th;
    assert_int_equal(rt_eval_auc(perfect, y, 10, &auc), WYE_OK);
    assert_true(fabs(auc - 1.0) < 1e-12);
    assert_int_equal(rt_eval_auc(inverted, y, 10, &auc), WYE_OK);
    assert_true(fabs(auc) < 1e-12);
    assert_int_equal(rt_eval_auc(ties, y, 10, &auc), WYE_OK);
    assert_true(fabs(auc - 0.5) < 1e-12);
    assert_int_equal(rt_eval_auc(perfect, y, 4, &auc), WYE_OK);
    assert_true(isnan(auc)); /* one class */
    /* 95% of 10 needs 9.5 good: the 4 remote-labeled go remote first (4 + 6 local = 10). */
    assert_int_equal(rt_eval_call_fraction(perfect, y, 10, 0.95, &frac), WYE_OK);
    assert_true(fabs(frac - 0.4) < 1e-12);
    /* Inverted: local ones first; good = k + 6 - k until k = 6, then all 10 at k = 10;
     * 9.5 needs k >= 6 + 4 - 0.5 -> 10. */
    assert_int_equal(rt_eval_call_fraction(inverted, y, 10, 0.95, &frac), WYE_OK);
    assert_true(fabs(frac - 1.0) < 1e-12);
    assert_int_equal(rt_eval_call_fraction(perfect, y, 10, 0.60, &frac), WYE_OK);
    assert_true(fabs(frac - 0.0) < 1e-12);
    assert_int_equal(rt_eval_best_threshold(perfect, y, 10, &th), WYE_OK);
    assert_true(th < 0.6f && th > 0.5f);
}

static void test_weights_round_trip(void **state)
{
    (void)state;
    struct rt_score_model m, back;
    char err[128];
    assert_int_equal(rt_score_model_default(&m, err, sizeof(err)), WYE_OK);
    m.bias = -0.123456789f;
    m.threshold = 0.3333333f;
    m.w[RT_F_LATEX] = 1e-7f;
    char *text;
    assert_int_equal(rt_score_model_to_json(&m, &text), WYE_OK);
    assert_int_equal(rt_score_model_load_json(text, strlen(text), &back, err, sizeof(err)), WYE_OK);
    assert_memory_equal(&m, &back, sizeof(m));
    /* Not NUL-terminated: only len bytes are read. */
    size_t len = strlen(text);
    char *copy = malloc(len + 8);
    memcpy(copy, text, len);
    memcpy(copy + len, "garbage", 8);
    assert_int_equal(rt_score_model_load_json(copy, len, &back, err, sizeof(err)), WYE_OK);
    free(copy);
    wye_free(text);
    /* The embedded text is the committed file. */
    size_t elen;
    const char *emb = rt_score_model_default_json(&elen);
    FILE *f = fopen(WYE_SOURCE_DIR "/conf/router-weights.json", "rb");
    assert_non_null(f);
    char *disk = malloc(elen + 2);
    size_t got = fread(disk, 1, elen + 1, f);
    fclose(f);
    assert_int_equal(got, elen);
    assert_memory_equal(disk, emb, elen);
    free(disk);
    /* A feature missing from the file gets weight 0. */
    assert_int_equal(rt_score_model_load_json("{\"bias\":1,\"threshold\":0.5,\"features\":[]}", 40,
                                              &back, err, sizeof(err)),
                     WYE_OK);
    struct rt_features f0 = text_features("anything at all");
    struct rt_score_result r;
    rt_score(&back, &f0, 0, &r);
    assert_true(fabsf(r.score - 1.0f / (1.0f + expf(-1.0f))) < 1e-6f);
    assert_int_equal(r.n_top, 0);
}

static void test_weights_malformed(void **state)
{
    (void)state;
    static const struct {
        const char *text;
        enum wye_err err;
        const char *names;
    } cases[] = {
        {"{\"bias\": 1,", WYE_ERR_PARSE, "invalid JSON at byte"},
        {"", WYE_ERR_PARSE, "invalid JSON"},
        {"[]", WYE_ERR_INVAL, "JSON object"},
        {"{\"threshold\":0.5,\"features\":[]}", WYE_ERR_INVAL, "'bias'"},
        {"{\"bias\":\"x\",\"threshold\":0.5,\"features\":[]}", WYE_ERR_INVAL,
         "not a finite number: 'bias'"},
        {"{\"bias\":0,\"threshold\":1.5,\"features\":[]}", WYE_ERR_INVAL, "'threshold'"},
        {"{\"bias\":0,\"threshold\":0.5}", WYE_ERR_INVAL, "'features'"},
        {"{\"bias\":0,\"threshold\":0.5,\"features\":[1]}", WYE_ERR_INVAL, "'name'"},
        {"{\"bias\":0,\"threshold\":0.5,\"features\":[{\"name\":\"bogus\",\"mean\":0,"
         "\"std\":1,\"weight\":1}]}",
         WYE_ERR_INVAL, "unknown feature: bogus"},
        {"{\"bias\":0,\"threshold\":0.5,\"features\":[{\"name\":\"latex\",\"mean\":0,"
         "\"std\":0,\"weight\":1}]}",
         WYE_ERR_INVAL, "'std' must be positive for feature: latex"},
        {"{\"bias\":0,\"threshold\":0.5,\"features\":[{\"name\":\"latex\",\"mean\":0,"
         "\"std\":1}]}",
         WYE_ERR_INVAL, "latex 'weight'"},
        {"{\"bias\":0,\"threshold\":0.5,\"features\":[{\"name\":\"latex\",\"mean\":0,\"std\":1,"
         "\"weight\":1},{\"name\":\"latex\",\"mean\":0,\"std\":1,\"weight\":1}]}",
         WYE_ERR_INVAL, "duplicate feature: latex"},
        {"{\"format\":\"other\",\"bias\":0,\"threshold\":0.5,\"features\":[]}", WYE_ERR_INVAL,
         "'format'"},
        {"{\"bias\":1e999,\"threshold\":0.5,\"features\":[]}", WYE_ERR_INVAL, "'bias'"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct rt_score_model m;
        memset(&m, 0x5a, sizeof(m));
        struct rt_score_model before = m;
        char err[256] = "";
        enum wye_err e =
            rt_score_model_load_json(cases[i].text, strlen(cases[i].text), &m, err, sizeof(err));
        if (e != cases[i].err || !strstr(err, cases[i].names)) {
            fail_msg("case %zu: got %d '%s', want %d '%s'", i, e, err, cases[i].err,
                     cases[i].names);
        }
        assert_memory_equal(&m, &before, sizeof(m)); /* untouched on error */
    }
    /* Oversized input is refused before parsing. */
    size_t big = 70 * 1024;
    char *text = malloc(big);
    memset(text, ' ', big);
    struct rt_score_model m;
    char err[128];
    assert_int_equal(rt_score_model_load_json(text, big, &m, err, sizeof(err)), WYE_ERR_TOOBIG);
    free(text);
}

static void test_score_deterministic(void **state)
{
    (void)state;
    struct rt_score_model m;
    char err[128];
    assert_int_equal(rt_score_model_default(&m, err, sizeof(err)), WYE_OK);
    struct rt_features f = text_features("Compare the pros and cons of TCP and UDP for games.");
    struct rt_score_result a, b;
    rt_score(&m, &f, RT_TOPK_MAX, &a);
    rt_score(&m, &f, RT_TOPK_MAX, &b);
    assert_true(a.score == b.score && a.remote == b.remote && a.n_top == b.n_top);
    assert_true(a.n_top > 0);
    for (int i = 0; i < a.n_top; i++) {
        assert_int_equal(a.top[i].feat, b.top[i].feat);
        assert_true(a.top[i].contribution == b.top[i].contribution);
    }
    rt_score(&m, &f, 100, &b); /* k is capped */
    assert_true(b.n_top <= RT_TOPK_MAX);
    /* A feature far outside the training range is clipped, not decisive alone. */
    struct rt_features far = text_features("hi");
    far.v[RT_F_LONG_WORDS] = 1e6f;
    struct rt_score_result r;
    rt_score(&m, &far, 1, &r);
    assert_true(fabsf(r.top[0].contribution) <= RT_Z_MAX * fabsf(m.w[r.top[0].feat]) + 1e-4f);
}

static void test_alloc_failure(void **state)
{
    (void)state;
    struct rt_score_model m, ok;
    char err[128];
    assert_int_equal(rt_score_model_default(&ok, err, sizeof(err)), WYE_OK);
    enum wye_err e = WYE_ERR_NOMEM;
    long n;
    for (n = 0; n < 10000 && e != WYE_OK; n++) {
        wye_alloc_fail_after(n);
        e = rt_score_model_default(&m, err, sizeof(err));
        wye_alloc_fail_after(-1);
        assert_true(e == WYE_OK || e == WYE_ERR_NOMEM);
        if (e == WYE_ERR_NOMEM) {
            assert_non_null(strstr(err, "out of memory"));
        }
    }
    assert_int_equal(e, WYE_OK);
    assert_true(n > 1);
    assert_memory_equal(&m, &ok, sizeof(m));
    char *text = NULL;
    e = WYE_ERR_NOMEM;
    for (n = 0; n < 1000 && e != WYE_OK; n++) {
        wye_alloc_fail_after(n);
        e = rt_score_model_to_json(&ok, &text);
        wye_alloc_fail_after(-1);
        assert_true(e == WYE_OK || e == WYE_ERR_NOMEM);
    }
    assert_int_equal(e, WYE_OK);
    wye_free(text);
}

int main(void)
{
    wye_alloc_install_cjson_hooks();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_keyword_table_sorted),
        cmocka_unit_test(test_features_code),
        cmocka_unit_test(test_features_math),
        cmocka_unit_test(test_features_smalltalk_and_questions),
        cmocka_unit_test(test_features_constraints),
        cmocka_unit_test(test_features_request_shape),
        cmocka_unit_test(test_features_non_english_and_bounds),
        cmocka_unit_test(test_features_random_bytes),
        cmocka_unit_test(test_default_model_ranks),
        cmocka_unit_test(test_default_model_dev_auc),
        cmocka_unit_test(test_train_recovers_direction),
        cmocka_unit_test(test_eval_metrics),
        cmocka_unit_test(test_weights_round_trip),
        cmocka_unit_test(test_weights_malformed),
        cmocka_unit_test(test_score_deterministic),
        cmocka_unit_test(test_alloc_failure),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
