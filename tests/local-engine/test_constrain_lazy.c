/* Lazily triggered constraints (eng_gen_params.trigger) and the tagged union of objects that
 * tool calls compile to. Generation on stories260K (SPM, byte fallback), a random-weight tiny
 * qwen2 (byte-level BPE, 151,936 tokens) and a random-weight tiny llama with the Llama 3
 * vocabulary, written at test time, at several temperatures and seeds: the text is scanned
 * independently of the engine (every occurrence of the trigger in free text must be followed
 * by a JSON value that cJSON parses and that satisfies the tool-call schema, checked by a
 * validator written here), and the on_constraint edges must sit exactly around those values.
 * Also: a trigger that never fires changes nothing (same text as without it), stop strings
 * still apply in free text, a lazy and a plain sequence share a batch without changing the
 * plain one, constrain_first, add-time errors. Single-threaded (cmocka's thread). */
// clang-format off
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
// clang-format on
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "local-engine/constrain.h"
#include "local-engine/engine.h"
#include "local-engine/model_internal.h"
#include "local-engine/types.h"
#include "tests/local-engine/constrain_test_util.h"

#define N(a) (sizeof(a) / sizeof((a)[0]))
#define N_CTX 320 /* tokens per sequence */

static char qwen_path[512], llama_path[512];

/* Three tools, as router/local.c compiles them: an anyOf of {"name":{"const":..},
 * "arguments":{..}} objects told apart by the name. */
static const char tools_schema[] =
    "{\"anyOf\":["
    "{\"type\":\"object\",\"properties\":{\"name\":{\"const\":\"get_weather\"},\"arguments\":{"
    "\"type\":\"object\",\"properties\":{\"city\":{\"type\":\"string\",\"maxLength\":12},"
    "\"unit\":{\"enum\":[\"c\",\"f\"]}},\"required\":[\"city\"],\"additionalProperties\":false}},"
    "\"required\":[\"name\",\"arguments\"],\"additionalProperties\":false},"
    "{\"type\":\"object\",\"properties\":{\"name\":{\"const\":\"get_time\"},\"arguments\":{"
    "\"type\":\"object\",\"properties\":{},\"additionalProperties\":false}},"
    "\"required\":[\"name\",\"arguments\"],"
    "\"additionalProperties\":false},"
    "{\"type\":\"object\",\"properties\":{\"name\":{\"const\":\"get\"},\"arguments\":{"
    "\"type\":\"object\",\"properties\":{\"n\":{\"type\":\"integer\"},\"ok\":{\"type\":"
    "\"boolean\"}},\"required\":[\"n\",\"ok\"],\"additionalProperties\":false}},"
    "\"required\":[\"name\",\"arguments\"],\"additionalProperties\":false}]}";

/* ---- an independent check of one call ---- */

static int n_members(const cJSON *o)
{
    return cJSON_GetArraySize(o);
}

/* Whether v is a valid call under tools_schema (written out by hand). */
static bool call_ok(const cJSON *v, const char *argkey)
{
    const cJSON *name = cJSON_GetObjectItemCaseSensitive(v, "name");
    const cJSON *a = cJSON_GetObjectItemCaseSensitive(v, argkey);
    if (!cJSON_IsObject(v) || n_members(v) != 2 || !cJSON_IsString(name) || !cJSON_IsObject(a)) {
        return false;
    }
    if (strcmp(name->valuestring, "get_weather") == 0) {
        const cJSON *city = cJSON_GetObjectItemCaseSensitive(a, "city");
        const cJSON *unit = cJSON_GetObjectItemCaseSensitive(a, "unit");
        if (!cJSON_IsString(city) || ct_utf8_len(city->valuestring) > 12) {
            return false;
        }
        if (unit && !(cJSON_IsString(unit) && (strcmp(unit->valuestring, "c") == 0 ||
                                               strcmp(unit->valuestring, "f") == 0))) {
            return false;
        }
        return n_members(a) == 1 + (unit != NULL);
    }
    if (strcmp(name->valuestring, "get_time") == 0) {
        return n_members(a) == 0;
    }
    if (strcmp(name->valuestring, "get") == 0) {
        const cJSON *nn = cJSON_GetObjectItemCaseSensitive(a, "n");
        const cJSON *ok = cJSON_GetObjectItemCaseSensitive(a, "ok");
        return n_members(a) == 2 && cJSON_IsNumber(nn) &&
               nn->valuedouble == floor(nn->valuedouble) && cJSON_IsBool(ok);
    }
    return false;
}

/* ---- recording a generation ---- */

struct lrec {
    char text[16384];
    size_t n_text;
    size_t on[64], off[64]; /* text offsets of the on_constraint edges */
    int n_on, n_off;
    struct eng_seq_result res;
};

static enum eng_cb_ret lrec_text(void *arg, const char *text, size_t len)
{
    struct lrec *r = arg;
    if (r->n_text + len < sizeof(r->text)) {
        memcpy(r->text + r->n_text, text, len);
        r->n_text += len;
        r->text[r->n_text] = '\0';
    }
    return ENG_CB_CONTINUE;
}

static enum eng_cb_ret lrec_edge(void *arg, bool active)
{
    struct lrec *r = arg;
    if (active && r->n_on < 64) {
        r->on[r->n_on++] = r->n_text;
    } else if (!active && r->n_off < 64) {
        r->off[r->n_off++] = r->n_text;
    }
    return ENG_CB_CONTINUE;
}

static const struct eng_seq_ops lrec_ops = {.on_text = lrec_text};

/* Scans r's text as the engine's contract says: free text up to the trigger, then one JSON
 * value, then free text again. Every value must be a valid call and the edges must surround
 * exactly the values. first: the text starts inside a value (constrain_first); in_value: the
 * trigger is the value's first bytes. Returns the number of calls. */
static int check_text(const struct lrec *r, const char *trig, bool in_value, bool first,
                      const char *argkey, const char *what)
{
    size_t tl = strlen(trig);
    const char *p = r->text, *endt = r->text + r->n_text;
    int calls = 0;
    bool inside = first;
    char buf[16384 + 64];
    for (;;) {
        size_t vstart; /* offset of the value's text in r->text */
        if (!inside) {
            const char *t = strstr(p, trig);
            if (!t) {
                break;
            }
            vstart = (size_t)(t - r->text) + (in_value ? 0 : tl);
            if (calls >= r->n_on || r->on[calls] != (size_t)(t - r->text)) {
                fail_msg("%s: trigger at %zu without its on_constraint edge: '%s'", what,
                         (size_t)(t - r->text), r->text);
            }
        } else {
            vstart = (size_t)(p - r->text);
            if (r->n_on < 1 || r->on[0] != 0) {
                fail_msg("%s: constrain_first without an edge before the text", what);
            }
        }
        inside = false;
        /* constrain_first + in_value: the trigger was in the prompt */
        size_t pre = first && calls == 0 && in_value ? tl : 0;
        memcpy(buf, trig, pre);
        memcpy(buf + pre, r->text + vstart, (size_t)(endt - (r->text + vstart)) + 1);
        const char *end = NULL;
        cJSON *v = cJSON_ParseWithOpts(buf, &end, false);
        if (!v) {
            fail_msg("%s: value %d is not JSON (finish %s, %d tokens): '%s'", what, calls,
                     eng_finish_name(r->res.finish), r->res.n_gen, r->text);
        }
        if (!call_ok(v, argkey)) {
            char *s = cJSON_PrintUnformatted(v);
            fail_msg("%s: value %d is not a valid call: %s", what, calls, s);
        }
        cJSON_Delete(v);
        size_t vend = vstart + (size_t)(end - buf) - pre;
        if (calls >= r->n_off || r->off[calls] != vend) {
            fail_msg("%s: value %d ends at %zu but its edge is at %zu: '%s'", what, calls, vend,
                     calls < r->n_off ? r->off[calls] : (size_t)0, r->text);
        }
        calls++;
        p = r->text + vend;
    }
    assert_int_equal(r->n_on, calls);
    assert_int_equal(r->n_off, calls);
    return calls;
}

/* ---- models ---- */

static int setup(void **state)
{
    (void)state;
    ct_write_model("tiny-qwen2", "ggml-vocab-qwen2.gguf", 5, "test_lazy_qwen2", qwen_path,
                   sizeof(qwen_path));
    ct_write_model("tiny-llama", "ggml-vocab-llama-bpe.gguf", 5, "test_lazy_llama3", llama_path,
                   sizeof(llama_path));
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    unlink(qwen_path);
    unlink(llama_path);
    return 0;
}

static size_t prompt_of(struct eng_model *m, const char *text, int32_t *ids, size_t cap)
{
    size_t n = 0;
    assert_int_equal(eng_model_tokenize(m, text, strlen(text), true, false, ids, cap, &n), WYE_OK);
    return n;
}

/* One generation; returns the number of calls in it. */
static int gen_one(struct eng_ctx *c, const int32_t *prompt, size_t n_prompt,
                   const struct eng_constraint *k, const char *trig, bool in_value, bool first,
                   float temp, uint64_t seed, int32_t max_tokens, const char *argkey,
                   struct lrec *r)
{
    struct eng_gen_params p;
    eng_gen_params_default(&p);
    p.sampling.temperature = temp;
    p.sampling.top_k = 0;
    p.sampling.top_p = 1.0f;
    p.sampling.min_p = 0;
    p.sampling.seed = seed;
    p.max_tokens = max_tokens;
    p.constraint = k;
    p.trigger = trig;
    p.trigger_in_value = in_value;
    p.constrain_first = first;
    p.on_constraint = lrec_edge;
    memset(r, 0, sizeof(*r));
    char err[256] = "", what[128];
    enum wye_err e =
        eng_generate(c, prompt, n_prompt, &p, &lrec_ops, r, NULL, &r->res, err, sizeof(err));
    if (e) {
        fail_msg("generate: %s (%s)", wye_err_str(e), err);
    }
    assert_true(r->res.finish == ENG_FINISH_STOP || r->res.finish == ENG_FINISH_LENGTH);
    assert_true(r->res.n_gen <= max_tokens);
    snprintf(what, sizeof(what), "trigger '%s' temp %.1f seed %llu", trig, (double)temp,
             (unsigned long long)seed);
    return check_text(r, trig, in_value, first, argkey, what);
}

/* Sweeps temperatures and seeds; the trigger must fire at least min_calls times in all. */
static void sweep(struct eng_model *m, const char *text, const char *trig, bool in_value,
                  bool first, int seeds, int32_t max_tokens, int min_calls)
{
    struct eng_ctx *c = ct_mkctx(m, 1, N_CTX);
    int32_t prompt[64];
    size_t n_prompt = prompt_of(m, text, prompt, 64);
    struct eng_constraint *k = ct_compile(tools_schema);
    static struct lrec r;
    static const float temps[] = {0.0f, 0.7f, 1.0f, 1.5f};
    int calls = 0, names[3] = {0, 0, 0};
    for (size_t t = 0; t < N(temps); t++) {
        for (int s = 0; s < (temps[t] > 0 ? seeds : 1); s++) {
            calls += gen_one(c, prompt, n_prompt, k, trig, in_value, first, temps[t],
                             100 + (uint64_t)s, max_tokens, "arguments", &r);
            names[0] += strstr(r.text, "get_weather") != NULL;
            names[1] += strstr(r.text, "get_time") != NULL;
        }
    }
    if (calls < min_calls) {
        fail_msg("trigger '%s' fired %d times, expected at least %d", trig, calls, min_calls);
    }
    print_message("trigger '%s': %d calls (get_weather in %d runs, get_time in %d)\n", trig, calls,
                  names[0], names[1]);
    eng_constraint_destroy(k);
    eng_ctx_destroy(c);
}

/* ---- tests ---- */

/* The tagged union: each tool's arguments follow that tool's schema; a random walk over
 * accepted bytes never dead-ends and its shortest-completion cost is exact. */
static void test_tagged_union(void **state)
{
    (void)state;
    struct eng_constraint *k = ct_compile(tools_schema);
    static const char *const good[] = {
        "{\"name\":\"get_weather\",\"arguments\":{\"city\":\"Paris\",\"unit\":\"c\"}}",
        "{ \"name\" : \"get_time\" , \"arguments\" : {} }",
        "{\"name\":\"get\",\"arguments\":{\"n\":-3,\"ok\":true}}",
    };
    static const char *const bad[] = {
        "{\"name\":\"get_time\",\"arguments\":{\"city\":\"x\"}}",   /* another tool's argument */
        "{\"name\":\"get\",\"arguments\":{\"n\":1.5,\"ok\":true}}", /* n is an integer */
        "{\"name\":\"get_x\",\"arguments\":{}}",                    /* no such tool */
        "{\"arguments\":{},\"name\":\"get_time\"}",                 /* name comes first */
        "{\"name\":\"get_time\"}",                                  /* arguments required */
        "{\"name\":\"get_time\",\"arguments\":{},\"x\":1}",         /* nothing else */
    };
    for (size_t i = 0; i < N(good); i++) {
        struct eng_cstate st;
        eng_cstate_init(&st, k);
        if (!eng_cstate_feed_n(k, &st, good[i], strlen(good[i]))) {
            fail_msg("refused %s", good[i]);
        }
        assert_int_equal(eng_cstate_min_close(k, &st), 0);
        assert_false(eng_cstate_can_continue(k, &st));
    }
    for (size_t i = 0; i < N(bad); i++) {
        struct eng_cstate st;
        eng_cstate_init(&st, k);
        bool ok = eng_cstate_feed_n(k, &st, bad[i], strlen(bad[i]));
        if (ok && eng_cstate_min_close(k, &st) == 0) {
            fail_msg("accepted %s", bad[i]);
        }
    }
    /* shortest: {"name":"get","arguments":{"n":0,"ok":true}} */
    assert_int_equal(eng_constraint_min_bytes(k),
                     strlen("{\"name\":\"get_time\",\"arguments\":{}}"));
    srand(7);
    for (int walk = 0; walk < 300; walk++) {
        struct eng_cstate st;
        eng_cstate_init(&st, k);
        for (int step = 0; step < 400 && eng_cstate_can_continue(k, &st); step++) {
            uint32_t cost = eng_cstate_min_close(k, &st);
            uint8_t ok[256];
            int n_ok = 0;
            bool lowers = false;
            for (int b = 0; b < 256; b++) {
                struct eng_cstate t;
                eng_cstate_copy(&t, &st);
                if (eng_cstate_feed(k, &t, (uint8_t)b)) {
                    uint32_t after = eng_cstate_min_close(k, &t);
                    assert_true(after + 1 >= cost); /* no byte closes faster than the cost */
                    lowers |= after + 1 == cost;
                    ok[n_ok++] = (uint8_t)b;
                }
            }
            if (cost > 0) {
                assert_true(lowers);
            }
            if (n_ok == 0) {
                assert_int_equal(cost, 0);
                break;
            }
            /* mostly the bytes that close, so that walks finish */
            uint8_t b = ok[rand() % n_ok];
            if (rand() % 3 == 0) {
                for (int i = 0; i < n_ok; i++) {
                    struct eng_cstate t;
                    eng_cstate_copy(&t, &st);
                    eng_cstate_feed(k, &t, ok[i]);
                    if (eng_cstate_min_close(k, &t) + 1 == cost) {
                        b = ok[i];
                        break;
                    }
                }
            }
            assert_true(eng_cstate_feed(k, &st, b));
        }
    }
    eng_constraint_destroy(k);
    /* objects not told apart by a const first property are still refused */
    struct eng_constraint *bad_k = NULL;
    char err[256] = "";
    const char *s = "{\"anyOf\":[{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"string\"}},"
                    "\"required\":[\"a\"]},{\"type\":\"object\",\"properties\":{\"a\":{\"type\":"
                    "\"integer\"}},\"required\":[\"a\"]}]}";
    assert_int_equal(eng_constraint_compile(s, strlen(s), &bad_k, err, sizeof(err)),
                     WYE_ERR_UNSUPPORTED);
    assert_non_null(strstr(err, "both start with '{'"));
}

static void test_lazy_stories(void **state)
{
    (void)state;
    struct eng_model *m = ct_load_stories();
    /* "e" ends many tokens ("▁the", "▁she"), " a" is a token of its own */
    sweep(m, "Once upon a time", "e", false, false, 8, 96, 20);
    sweep(m, "Once upon a time", " a", false, false, 6, 96, 5);
    sweep(m, "Lily said", "{\"name\"", true, true, 6, 64, 19);
    eng_model_destroy(m);
}

static void test_lazy_qwen2(void **state)
{
    (void)state;
    struct eng_model *m = ct_load(qwen_path);
    sweep(m, "The weather in Paris", "e", false, false, 5, 64, 10);
    sweep(m, "<tool_call>", "<tool_call>", false, true, 4, 64, 13);
    eng_model_destroy(m);
}

static void test_lazy_llama3(void **state)
{
    (void)state;
    struct eng_model *m = ct_load(llama_path);
    assert_string_equal(eng_model_chat_family(m), "llama3");
    sweep(m, "The weather in Paris", "e", false, false, 4, 64, 5);
    sweep(m, "{\"name\"", "{\"name\"", true, true, 4, 64, 13);
    eng_model_destroy(m);
}

/* A trigger that never fires (and is never even started) changes nothing. */
static void test_trigger_never_fires(void **state)
{
    (void)state;
    struct eng_model *m = ct_load_stories();
    struct eng_ctx *c = ct_mkctx(m, 1, N_CTX);
    int32_t prompt[64];
    size_t n_prompt = prompt_of(m, "Once upon a time", prompt, 64);
    struct eng_constraint *k = ct_compile(tools_schema);
    static struct lrec a, b;
    for (uint64_t seed = 1; seed <= 4; seed++) {
        gen_one(c, prompt, n_prompt, k, "\x01zz", false, false, 1.0f, seed, 80, "arguments", &a);
        struct eng_gen_params p;
        eng_gen_params_default(&p);
        p.sampling.temperature = 1.0f;
        p.sampling.top_k = 0;
        p.sampling.top_p = 1.0f;
        p.sampling.min_p = 0;
        p.sampling.seed = seed;
        p.max_tokens = 80;
        memset(&b, 0, sizeof(b));
        char err[256] = "";
        assert_int_equal(
            eng_generate(c, prompt, n_prompt, &p, &lrec_ops, &b, NULL, &b.res, err, sizeof(err)),
            WYE_OK);
        assert_string_equal(a.text, b.text);
        assert_int_equal(a.n_on, 0);
    }
    eng_constraint_destroy(k);
    eng_ctx_destroy(c);
    eng_model_destroy(m);
}

/* Free text keeps its stop strings; the partly written trigger is not lost at the end. */
static void test_stop_in_free_text(void **state)
{
    (void)state;
    struct eng_model *m = ct_load_stories();
    struct eng_ctx *c = ct_mkctx(m, 1, N_CTX);
    int32_t prompt[64];
    size_t n_prompt = prompt_of(m, "Once upon a time", prompt, 64);
    struct eng_constraint *k = ct_compile(tools_schema);
    int stopped = 0;
    for (uint64_t seed = 1; seed <= 8; seed++) {
        struct eng_gen_params p;
        eng_gen_params_default(&p);
        p.sampling.seed = seed;
        p.max_tokens = 120;
        p.constraint = k;
        p.trigger = "<tool_call>";
        p.stop[0] = ".";
        static struct lrec r;
        memset(&r, 0, sizeof(r));
        char err[256] = "";
        assert_int_equal(
            eng_generate(c, prompt, n_prompt, &p, &lrec_ops, &r, NULL, &r.res, err, sizeof(err)),
            WYE_OK);
        assert_null(strchr(r.text, '.'));
        stopped += r.res.finish == ENG_FINISH_STOP;
    }
    assert_true(stopped >= 4);
    eng_constraint_destroy(k);
    eng_ctx_destroy(c);
    eng_model_destroy(m);
}

/* A lazy sequence and a plain one in one batch: the plain one gives what it gives alone. */
static void test_batch_mixed(void **state)
{
    (void)state;
    struct eng_model *m = ct_load_stories();
    struct eng_ctx *c = ct_mkctx(m, 3, N_CTX);
    int32_t prompt[64];
    size_t n_prompt = prompt_of(m, "Once upon", prompt, 64);
    struct eng_constraint *k = ct_compile(tools_schema);
    struct eng_gen_params p;
    eng_gen_params_default(&p);
    p.sampling.temperature = 0;
    p.max_tokens = 60;
    static struct lrec alone, plain, lazy1, lazy2;
    memset(&alone, 0, sizeof(alone));
    char err[256] = "";
    assert_int_equal(eng_generate(c, prompt, n_prompt, &p, &lrec_ops, &alone, NULL, &alone.res, err,
                                  sizeof(err)),
                     WYE_OK);
    struct eng_gen_params pl = p;
    pl.constraint = k;
    pl.trigger = "e";
    pl.on_constraint = lrec_edge;
    pl.sampling.temperature = 1.0f;
    pl.sampling.seed = 3;
    struct eng_gen_params pf = pl;
    pf.trigger = "{\"name\"";
    pf.trigger_in_value = true;
    pf.constrain_first = true;
    memset(&plain, 0, sizeof(plain));
    memset(&lazy1, 0, sizeof(lazy1));
    memset(&lazy2, 0, sizeof(lazy2));
    int32_t a, b, d;
    assert_int_equal(
        eng_batch_add(c, prompt, n_prompt, &pl, &lrec_ops, &lazy1, NULL, &a, err, sizeof(err)),
        WYE_OK);
    assert_int_equal(
        eng_batch_add(c, prompt, n_prompt, &p, &lrec_ops, &plain, NULL, &b, err, sizeof(err)),
        WYE_OK);
    assert_int_equal(
        eng_batch_add(c, prompt, n_prompt, &pf, &lrec_ops, &lazy2, NULL, &d, err, sizeof(err)),
        WYE_OK);
    for (int i = 0; i < 400 && eng_batch_n_active(c) > 0; i++) {
        assert_int_equal(eng_batch_step(c), WYE_OK);
    }
    assert_int_equal(eng_batch_n_active(c), 0);
    assert_string_equal(plain.text, alone.text);
    assert_true(check_text(&lazy1, "e", false, false, "arguments", "batch lazy") > 0);
    assert_true(check_text(&lazy2, "{\"name\"", true, true, "arguments", "batch first") > 0);
    eng_constraint_destroy(k);
    eng_ctx_destroy(c);
    eng_model_destroy(m);
}

static void test_add_errors(void **state)
{
    (void)state;
    struct eng_model *m = ct_load_stories();
    struct eng_ctx *c = ct_mkctx(m, 1, N_CTX);
    int32_t prompt[64];
    size_t n_prompt = prompt_of(m, "Once", prompt, 64);
    struct eng_constraint *k = ct_compile(tools_schema);
    struct eng_gen_params p;
    eng_gen_params_default(&p);
    char err[256] = "";
    int32_t id;
    static struct lrec r;
    p.trigger = "<tool_call>"; /* without a constraint */
    assert_int_equal(
        eng_batch_add(c, prompt, n_prompt, &p, &lrec_ops, &r, NULL, &id, err, sizeof(err)),
        WYE_ERR_INVAL);
    assert_non_null(strstr(err, "needs a constraint"));
    p.constraint = k;
    p.trigger = "";
    assert_int_equal(
        eng_batch_add(c, prompt, n_prompt, &p, &lrec_ops, &r, NULL, &id, err, sizeof(err)),
        WYE_ERR_INVAL);
    p.trigger = "[\"name\"";
    p.trigger_in_value = true;
    assert_int_equal(
        eng_batch_add(c, prompt, n_prompt, &p, &lrec_ops, &r, NULL, &id, err, sizeof(err)),
        WYE_ERR_INVAL);
    assert_non_null(strstr(err, "does not start a value"));
    /* constrain_first: the budget must hold the shortest call */
    p.trigger = "<tool_call>";
    p.trigger_in_value = false;
    p.constrain_first = true;
    p.max_tokens = 10;
    assert_int_equal(
        eng_batch_add(c, prompt, n_prompt, &p, &lrec_ops, &r, NULL, &id, err, sizeof(err)),
        WYE_ERR_TOOBIG);
    assert_non_null(strstr(err, "too small for the JSON schema"));
    /* lazy: a small budget is fine, the trigger just cannot open a value it cannot close */
    p.constrain_first = false;
    p.trigger = "e";
    for (uint64_t seed = 1; seed <= 6; seed++) {
        assert_int_equal(
            gen_one(c, prompt, n_prompt, k, "e", false, false, 1.0f, seed, 10, "arguments", &r), 0);
    }
    eng_constraint_destroy(k);
    eng_ctx_destroy(c);
    eng_model_destroy(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tagged_union),        cmocka_unit_test(test_lazy_stories),
        cmocka_unit_test(test_lazy_qwen2),          cmocka_unit_test(test_lazy_llama3),
        cmocka_unit_test(test_trigger_never_fires), cmocka_unit_test(test_stop_in_free_text),
        cmocka_unit_test(test_batch_mixed),         cmocka_unit_test(test_add_errors),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
