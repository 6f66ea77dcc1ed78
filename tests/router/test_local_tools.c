/* Tool calls answered by the local backend (router/local.c): requests with OpenAI `tools` on
 * stories260K (ChatML -> Hermes <tool_call> format), a random-weight tiny qwen2 (Qwen2.5
 * template, Hermes) and a random-weight tiny llama with the Llama 3 vocabulary and template
 * (Llama 3 JSON format), all through fake sinks. tool_choice required / named: every answer
 * carries tool_calls deltas that assemble (agent_toolcalls_assemble) into calls of the offered
 * tools whose arguments parse and satisfy that tool's schema (a validator written here), with
 * finish_reason tool_calls; auto: whatever calls come are valid and the reason matches; none:
 * the same text as without tools. A conversation holding earlier tool_calls and tool results
 * is rendered in the model's format (the prompt token count is checked against
 * agent_toolfmt_render + the chat template). A sink answering AGAIN loses nothing. Bad tools,
 * tool_choice and response_format + tools are refused naming the problem. The sinks record on
 * the engine worker thread; cmocka asserts only on the main thread. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <cJSON.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "agents/agents.h"
#include "common/alloc.h"
#include "common/clock.h"
#include "local-engine/engine.h"
#include "local-engine/model_internal.h"
#include "local-engine/types.h"
#include "router/local.h"
#include "tests/router/test_sink_util.h"

#define WAIT_MS 30000

static char stories_path[512], qwen_path[512], llama_path[512];

static const char tools_json[] =
    "[{\"type\":\"function\",\"function\":{\"name\":\"get_weather\",\"description\":\"Weather "
    "in a city\",\"parameters\":{\"type\":\"object\",\"properties\":{\"city\":{\"type\":"
    "\"string\",\"maxLength\":16},\"unit\":{\"type\":\"string\",\"enum\":[\"c\",\"f\"]}},"
    "\"required\":[\"city\"]}}},"
    "{\"type\":\"function\",\"function\":{\"name\":\"get_time\",\"description\":\"The time\"}},"
    "{\"type\":\"function\",\"function\":{\"name\":\"add\",\"parameters\":{\"type\":\"object\","
    "\"properties\":{\"a\":{\"type\":\"integer\"},\"b\":{\"type\":\"number\"},\"exact\":{"
    "\"type\":\"boolean\"}},\"required\":[\"a\",\"b\"],\"additionalProperties\":false}}}]";

/* ---- an independent check of the calls ---- */

static size_t utf8_len(const char *s)
{
    size_t n = 0;
    for (; *s; s++) {
        n += ((unsigned char)*s & 0xC0) != 0x80;
    }
    return n;
}

/* Whether args (parsed) satisfy the schema of tool `name` in tools_json. */
static bool args_ok(const char *name, const cJSON *a)
{
    if (!cJSON_IsObject(a)) {
        return false;
    }
    if (strcmp(name, "get_weather") == 0) {
        const cJSON *city = cJSON_GetObjectItemCaseSensitive(a, "city");
        const cJSON *unit = cJSON_GetObjectItemCaseSensitive(a, "unit");
        if (!cJSON_IsString(city) || utf8_len(city->valuestring) > 16) {
            return false;
        }
        if (unit && !(cJSON_IsString(unit) && (strcmp(unit->valuestring, "c") == 0 ||
                                               strcmp(unit->valuestring, "f") == 0))) {
            return false;
        }
        /* additionalProperties unset: only declared ones are ever written */
        return cJSON_GetArraySize(a) == 1 + (unit != NULL);
    }
    if (strcmp(name, "get_time") == 0) {
        return cJSON_GetArraySize(a) == 0; /* no parameters: {} */
    }
    if (strcmp(name, "add") == 0) {
        const cJSON *x = cJSON_GetObjectItemCaseSensitive(a, "a");
        const cJSON *y = cJSON_GetObjectItemCaseSensitive(a, "b");
        const cJSON *e = cJSON_GetObjectItemCaseSensitive(a, "exact");
        return cJSON_IsNumber(x) && x->valuedouble == floor(x->valuedouble) && cJSON_IsNumber(y) &&
               isfinite(y->valuedouble) && (!e || cJSON_IsBool(e)) &&
               cJSON_GetArraySize(a) == 2 + (e != NULL);
    }
    return false;
}

/* Checks the deltas of a finished answer; returns the number of calls. only: the function
 * every call must name (or NULL). */
static int check_calls(struct fsink *f, const char *only, const char *what)
{
    pthread_mutex_lock(&f->mu);
    assert_int_equal(f->n_finish, 1);
    assert_int_equal(f->violations, 0);
    if (f->res.err) {
        fail_msg("%s: finished with %s: %s", what, wye_err_str(f->res.err), f->msg);
    }
    char *calls = NULL, err[256] = "";
    const char *deltas = f->tools.data ? f->tools.data : "";
    /* every delta is one complete call with its index, id and type */
    const char *p = deltas;
    int k = 0;
    while (*p) {
        const char *nl = strchr(p, '\n');
        assert_non_null(nl);
        cJSON *d = cJSON_ParseWithLength(p, (size_t)(nl - p));
        assert_true(cJSON_IsArray(d) && cJSON_GetArraySize(d) == 1);
        cJSON *c = cJSON_GetArrayItem(d, 0);
        assert_int_equal(cJSON_GetObjectItemCaseSensitive(c, "index")->valueint, k);
        assert_string_equal(cJSON_GetObjectItemCaseSensitive(c, "type")->valuestring, "function");
        assert_true(strncmp(cJSON_GetObjectItemCaseSensitive(c, "id")->valuestring, "call_", 5) ==
                    0);
        cJSON_Delete(d);
        k++;
        p = nl + 1;
    }
    if (agent_toolcalls_assemble(deltas, &calls, err, sizeof(err)) != WYE_OK) {
        fail_msg("%s: the deltas do not assemble: %s: %s", what, err, deltas);
    }
    cJSON *arr = calls ? cJSON_Parse(calls) : cJSON_CreateArray();
    int n = cJSON_GetArraySize(arr);
    assert_int_equal(n, k);
    const cJSON *c;
    cJSON_ArrayForEach(c, arr)
    {
        const cJSON *fn = cJSON_GetObjectItemCaseSensitive(c, "function");
        const char *name = cJSON_GetObjectItemCaseSensitive(fn, "name")->valuestring;
        const char *args = cJSON_GetObjectItemCaseSensitive(fn, "arguments")->valuestring;
        cJSON *a = cJSON_Parse(args);
        if (!args_ok(name, a) || (only && strcmp(only, name) != 0)) {
            fail_msg("%s: invalid call %s(%s)", what, name, args);
        }
        cJSON_Delete(a);
    }
    /* the reason says what ended the answer */
    if (n > 0 && strcmp(f->reason, "length") != 0) {
        assert_string_equal(f->reason, "tool_calls");
    }
    if (n == 0) {
        assert_true(strcmp(f->reason, "stop") == 0 || strcmp(f->reason, "length") == 0);
    }
    /* no call markup leaks into the content */
    if (f->text.data &&
        (strstr(f->text.data, "<tool_call>") || strstr(f->text.data, "</tool_call>"))) {
        fail_msg("%s: call markup in the content: '%s'", what, f->text.data);
    }
    cJSON_Delete(arr);
    wye_free(calls);
    pthread_mutex_unlock(&f->mu);
    return n;
}

/* ---- requests ---- */

static void cfg_init(struct conf_config *cfg, const char *path, int n_seq)
{
    memset(cfg, 0, sizeof(*cfg));
    cfg->engine.model_path = (char *)path;
    cfg->engine.model_name = (char *)"test-local";
    cfg->engine.n_threads = 1;
    cfg->engine.n_ctx = 1024;
    cfg->engine.n_seq_max = n_seq;
    cfg->router.queue_max = 16;
}

static struct rt_local *mklocal(const struct conf_config *cfg)
{
    struct rt_local *l = NULL;
    char err[512] = "";
    if (rt_local_create(cfg, &l, err, sizeof(err)) != WYE_OK) {
        fail_msg("rt_local_create: %s", err);
    }
    assert_int_equal(rt_local_start(l), WYE_OK);
    return l;
}

/* A request: messages (a JSON array text), then extra top-level members (may be ""). */
static struct wye_chat_req *mkreq(const char *messages, const char *extra, int max_tokens,
                                  double temp, int64_t seed)
{
    char body[8192];
    snprintf(body, sizeof(body),
             "{\"model\":\"test-local\",\"messages\":%s,\"max_tokens\":%d,\"temperature\":%g,"
             "\"seed\":%lld,\"stream\":true%s%s}",
             messages, max_tokens, temp, (long long)seed, extra[0] ? "," : "", extra);
    cJSON *b = cJSON_Parse(body);
    assert_non_null(b);
    struct wye_chat_limits lim = {.depth_max = 64, .n_msgs_max = 64, .max_tokens_max = 100000};
    struct wye_chat_req *req = NULL;
    char err[256] = "";
    if (wye_chat_req_from_json(b, &lim, &req, err, sizeof(err)) != WYE_OK) {
        fail_msg("request: %s", err);
    }
    snprintf(req->id, sizeof(req->id), "req_tools_%lld", (long long)seed);
    return req;
}

static const char user_msgs[] =
    "[{\"role\":\"user\",\"content\":\"What is the weather in Paris, and what time is it?\"}]";

/* Runs one request to the end; the sink is the caller's (cleaned by the caller). */
static void run(struct rt_local *l, struct wye_chat_req *req, struct fsink *f)
{
    fsink_init(f);
    char err[512] = "";
    enum wye_err e = rt_local_submit(l, req, fsink_sink(f), err, sizeof(err));
    if (e) {
        fail_msg("rt_local_submit: %s: %s", wye_err_str(e), err);
    }
    assert_true(fsink_wait_finish(f, WAIT_MS));
}

static void choices(const char *path, int seeds, int max_tokens)
{
    struct conf_config cfg;
    cfg_init(&cfg, path, 3);
    struct rt_local *l = mklocal(&cfg);
    static const struct {
        const char *choice, *only;
        bool forced;
    } cases[] = {
        {"\"required\"", NULL, true},
        {"{\"type\":\"function\",\"function\":{\"name\":\"get_weather\"}}", "get_weather", true},
        {"{\"type\":\"function\",\"function\":{\"name\":\"add\"}}", "add", true},
        {"\"auto\"", NULL, false},
    };
    int names[3] = {0, 0, 0};
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char extra[4096];
        snprintf(extra, sizeof(extra), "\"tools\":%s,\"tool_choice\":%s", tools_json,
                 cases[i].choice);
        for (int s = 0; s < seeds; s++) {
            double temp = s == 0 ? 0.0 : (s % 2 ? 1.0 : 0.7);
            struct fsink f;
            run(l, mkreq(user_msgs, extra, max_tokens, temp, 40 + s), &f);
            char what[512];
            snprintf(what, sizeof(what), "%s tool_choice %s seed %d", path, cases[i].choice, s);
            int n = check_calls(&f, cases[i].only, what);
            if (cases[i].forced) {
                assert_true(n >= 1);
            }
            names[0] += f.tools.data && strstr(f.tools.data, "get_weather");
            names[1] += f.tools.data && strstr(f.tools.data, "get_time");
            names[2] += f.tools.data && strstr(f.tools.data, "\"add\"");
            fsink_cleanup(&f);
        }
    }
    /* named calls were forced to those functions at least */
    assert_true(names[0] >= seeds && names[2] >= seeds);
    print_message("%s: calls naming get_weather %d, get_time %d, add %d\n", path, names[0],
                  names[1], names[2]);
    rt_local_destroy(l);
}

/* ---- tests ---- */

static void test_choices_stories(void **state)
{
    (void)state;
    choices(stories_path, 6, 96);
}

static void test_choices_qwen2(void **state)
{
    (void)state;
    choices(qwen_path, 4, 80);
}

static void test_choices_llama3(void **state)
{
    (void)state;
    choices(llama_path, 4, 80);
}

/* tool_choice none: the tools are not offered; the text is what the same request without
 * tools gives. */
static void test_none(void **state)
{
    (void)state;
    struct conf_config cfg;
    cfg_init(&cfg, qwen_path, 2);
    struct rt_local *l = mklocal(&cfg);
    char extra[4096];
    snprintf(extra, sizeof(extra), "\"tools\":%s,\"tool_choice\":\"none\"", tools_json);
    struct fsink a, b;
    run(l, mkreq(user_msgs, extra, 24, 0, 1), &a);
    run(l, mkreq(user_msgs, "", 24, 0, 1), &b);
    assert_int_equal(a.n_tool, 0);
    assert_int_equal(a.res.err, WYE_OK);
    assert_string_equal(a.text.data ? a.text.data : "", b.text.data ? b.text.data : "");
    assert_int_equal(a.last_usage.prompt_tokens, b.last_usage.prompt_tokens);
    fsink_cleanup(&a);
    fsink_cleanup(&b);
    rt_local_destroy(l);
}

/* Tokens of a conversation rendered by agent_toolfmt_render for model path (then the chat
 * template), plus the tokens of suffix (the forced call's trigger) if any. */
static int64_t rendered_tokens(const char *path, enum agent_toolfmt fmt, const char *msgs,
                               const char *tools, const char *suffix)
{
    char *out = NULL, err[256] = "";
    assert_int_equal(agent_toolfmt_render(fmt, msgs, tools, &out, err, sizeof(err)), WYE_OK);
    cJSON *arr = cJSON_Parse(out);
    struct wye_chat_msg m[16];
    int n = 0;
    const cJSON *x;
    cJSON_ArrayForEach(x, arr)
    {
        const char *r = cJSON_GetObjectItemCaseSensitive(x, "role")->valuestring;
        m[n].role = strcmp(r, "system") == 0      ? WYE_ROLE_SYSTEM
                    : strcmp(r, "assistant") == 0 ? WYE_ROLE_ASSISTANT
                                                  : WYE_ROLE_USER;
        m[n++].content = cJSON_GetObjectItemCaseSensitive(x, "content")->valuestring;
    }
    struct eng_model *model = NULL;
    assert_int_equal(eng_model_load(path, &model, err, sizeof(err)), WYE_OK);
    static int32_t ids[4096];
    size_t nt = 0, ns = 0;
    assert_int_equal(eng_model_tokenize_chat(model, m, (size_t)n, ids, 4096, &nt, err, sizeof(err)),
                     WYE_OK);
    if (suffix) {
        assert_int_equal(
            eng_model_tokenize(model, suffix, strlen(suffix), false, true, ids, 4096, &ns), WYE_OK);
    }
    eng_model_destroy(model);
    cJSON_Delete(arr);
    wye_free(out);
    return (int64_t)(nt + ns);
}

/* A conversation with an earlier call and its result renders in the model's format. */
static void test_history(void **state)
{
    (void)state;
    static const char hist[] =
        "[{\"role\":\"system\",\"content\":\"You help with weather.\"},"
        "{\"role\":\"user\",\"content\":\"Weather in Oslo?\"},"
        "{\"role\":\"assistant\",\"content\":null,\"tool_calls\":[{\"id\":\"call_1\",\"type\":"
        "\"function\",\"function\":{\"name\":\"get_weather\",\"arguments\":\"{\\\"city\\\":"
        "\\\"Oslo\\\"}\"}}]},"
        "{\"role\":\"tool\",\"tool_call_id\":\"call_1\",\"content\":\"{\\\"temp\\\":3}\"},"
        "{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"And in Rome?\"}]}]";
    /* the same conversation as agent_toolfmt_render takes it (content parts joined) */
    static const char hist_plain[] =
        "[{\"role\":\"system\",\"content\":\"You help with weather.\"},"
        "{\"role\":\"user\",\"content\":\"Weather in Oslo?\"},"
        "{\"role\":\"assistant\",\"content\":\"\",\"tool_calls\":[{\"id\":\"call_1\",\"type\":"
        "\"function\",\"function\":{\"name\":\"get_weather\",\"arguments\":\"{\\\"city\\\":"
        "\\\"Oslo\\\"}\"}}]},"
        "{\"role\":\"tool\",\"content\":\"{\\\"temp\\\":3}\"},"
        "{\"role\":\"user\",\"content\":\"And in Rome?\"}]";
    const struct {
        const char *path;
        enum agent_toolfmt fmt;
        const char *trig;
    } models[] = {{qwen_path, AGENT_TOOLFMT_HERMES, "<tool_call>"},
                  {llama_path, AGENT_TOOLFMT_LLAMA3, "{\"name\""}};
    for (size_t i = 0; i < 2; i++) {
        struct conf_config cfg;
        cfg_init(&cfg, models[i].path, 1);
        struct rt_local *l = mklocal(&cfg);
        char extra[4096];
        snprintf(extra, sizeof(extra), "\"tools\":%s,\"tool_choice\":\"required\"", tools_json);
        struct fsink f;
        run(l, mkreq(hist, extra, 64, 1.0, 9), &f);
        assert_true(check_calls(&f, NULL, "history") >= 1);
        int64_t want =
            rendered_tokens(models[i].path, models[i].fmt, hist_plain, tools_json, models[i].trig);
        assert_int_equal(f.last_usage.prompt_tokens, want);
        fsink_cleanup(&f);
        /* tool_choice none: the history still renders, without the tools */
        snprintf(extra, sizeof(extra), "\"tools\":%s,\"tool_choice\":\"none\"", tools_json);
        run(l, mkreq(hist, extra, 16, 0, 9), &f);
        assert_int_equal(f.n_tool, 0);
        assert_int_equal(f.last_usage.prompt_tokens,
                         rendered_tokens(models[i].path, models[i].fmt, hist_plain, NULL, NULL));
        fsink_cleanup(&f);
        rt_local_destroy(l);
    }
}

/* A sink that answers AGAIN on every other event: calls and text arrive whole and in order. */
static void test_backpressure(void **state)
{
    (void)state;
    struct conf_config cfg;
    cfg_init(&cfg, stories_path, 2);
    struct rt_local *l = mklocal(&cfg);
    char extra[4096];
    snprintf(extra, sizeof(extra), "\"tools\":%s,\"tool_choice\":\"required\"", tools_json);
    for (int s = 0; s < 4; s++) {
        struct fsink f;
        fsink_init(&f);
        f.again_every = 2;
        char err[512] = "";
        assert_int_equal(rt_local_submit(l, mkreq(user_msgs, extra, 120, 1.0, 70 + s),
                                         fsink_sink(&f), err, sizeof(err)),
                         WYE_OK);
        int64_t t_end = wye_now_ns() + (int64_t)WAIT_MS * WYE_NS_PER_MS;
        for (;;) {
            pthread_mutex_lock(&f.mu);
            bool fin = f.n_finish > 0, blocked = f.blocked;
            pthread_mutex_unlock(&f.mu);
            if (fin) {
                break;
            }
            if (blocked) {
                fsink_unblock(&f);
            }
            assert_true(wye_now_ns() < t_end);
            wye_sleep_ms(1);
        }
        assert_int_equal(f.n_while_blocked, 0);
        assert_true(check_calls(&f, NULL, "backpressure") >= 1);
        fsink_cleanup(&f);
    }
    rt_local_destroy(l);
}

/* Parameters with their own $defs (and a reference to themselves) keep working inside the
 * combined schema. */
static void test_refs(void **state)
{
    (void)state;
    struct conf_config cfg;
    cfg_init(&cfg, stories_path, 1);
    struct rt_local *l = mklocal(&cfg);
    static const char extra[] =
        "\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"get_time\"}},"
        "{\"type\":\"function\",\"function\":{\"name\":\"ship\",\"parameters\":{\"type\":"
        "\"object\",\"properties\":{\"to\":{\"$ref\":\"#/$defs/addr\"},\"next\":{\"$ref\":"
        "\"#\"}},\"required\":[\"to\"],\"$defs\":{\"addr\":{\"type\":\"object\","
        "\"properties\":{\"zip\":{\"type\":\"string\",\"maxLength\":5}},\"required\":["
        "\"zip\"]}}}}}],\"tool_choice\":{\"type\":\"function\",\"function\":{\"name\":"
        "\"ship\"}}";
    for (int s = 0; s < 4; s++) {
        struct fsink f;
        run(l, mkreq(user_msgs, extra, 120, 1.0, 80 + s), &f);
        pthread_mutex_lock(&f.mu);
        char *calls = NULL, err[256] = "";
        assert_int_equal(f.res.err, WYE_OK);
        assert_int_equal(agent_toolcalls_assemble(f.tools.data, &calls, err, sizeof(err)), WYE_OK);
        cJSON *arr = cJSON_Parse(calls);
        const cJSON *fn = cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(arr, 0), "function");
        assert_string_equal(cJSON_GetObjectItemCaseSensitive(fn, "name")->valuestring, "ship");
        cJSON *a = cJSON_Parse(cJSON_GetObjectItemCaseSensitive(fn, "arguments")->valuestring);
        /* every level: "to" is {"zip": <= 5 chars}, "next" (optional) is the same shape */
        for (const cJSON *lv = a; lv; lv = cJSON_GetObjectItemCaseSensitive(lv, "next")) {
            const cJSON *zip =
                cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(lv, "to"), "zip");
            if (!cJSON_IsString(zip) || utf8_len(zip->valuestring) > 5) {
                fail_msg("bad ship arguments: %s", calls);
            }
        }
        cJSON_Delete(a);
        cJSON_Delete(arr);
        wye_free(calls);
        pthread_mutex_unlock(&f.mu);
        fsink_cleanup(&f);
    }
    rt_local_destroy(l);
}

/* Refusals: INVAL naming the tool and keyword or the field; the request stays the caller's. */
static void test_refused(void **state)
{
    (void)state;
    struct conf_config cfg;
    cfg_init(&cfg, stories_path, 1);
    struct rt_local *l = mklocal(&cfg);
    static const struct {
        const char *extra, *needle;
    } cases[] = {
        {"\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"a\"}},{\"type\":\"function\","
         "\"function\":{\"name\":\"lookup\",\"parameters\":{\"type\":\"object\",\"properties\":{"
         "\"id\":{\"type\":\"string\",\"pattern\":\"^[0-9]+$\"}}}}}]",
         "tool 'lookup' parameters: unsupported keyword 'pattern'"},
        {"\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"a\"}}],\"tool_choice\":{"
         "\"type\":\"function\",\"function\":{\"name\":\"b\"}}}",
         "names function 'b', which is not in 'tools'"},
        {"\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"a\"}}],\"tool_choice\":"
         "\"sometimes\"",
         "'tool_choice' must be"},
        {"\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"a\"}},{\"type\":\"function\","
         "\"function\":{\"name\":\"a\"}}]",
         "tools[1]: function name 'a' appears twice"},
        {"\"tools\":[{\"type\":\"function\",\"function\":{\"description\":\"x\"}}]",
         "tools[0].function.name"},
        {"\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"a\"}},{\"type\":\"function\","
         "\"function\":{\"name\":\"b\",\"parameters\":{\"type\":\"object\",\"properties\":{\"x\":{"
         "\"$ref\":\"#/$defs/x\"}},\"$defs\":{\"x\":{\"type\":\"integer\",\"minimum\":0}}}}}]",
         "tool 'b' parameters: unsupported keyword 'minimum'"},
        {"\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"a\"}}],\"response_format\":{"
         "\"type\":\"json_object\"}",
         "'response_format' and 'tools' together"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct wye_chat_req *req = mkreq(user_msgs, cases[i].extra, 32, 0, 1);
        struct fsink f;
        fsink_init(&f);
        char err[512] = "";
        assert_int_equal(rt_local_submit(l, req, fsink_sink(&f), err, sizeof(err)), WYE_ERR_INVAL);
        if (!strstr(err, cases[i].needle)) {
            fail_msg("case %zu: '%s' does not say '%s'", i, err, cases[i].needle);
        }
        assert_int_equal(f.n_start + f.n_finish, 0);
        wye_chat_req_destroy(req);
        fsink_cleanup(&f);
    }
    rt_local_destroy(l);
}

static int write_model(const char *shape, const char *vocab_name, const char *tag, char *out,
                       size_t cap)
{
    char vocab[512], err[512] = "";
    snprintf(vocab, sizeof(vocab), "%s/vocab/%s", WYE_SHARED_DIR, vocab_name);
    snprintf(out, cap, "%s/test_local_tools_%s_%d.gguf", WYE_BINARY_DIR, tag, (int)getpid());
    struct eng_mkmodel_opts o = {
        .shape = shape, .type = ENG_TYPE_Q8_0, .vocab_path = vocab, .out_path = out, .seed = 13};
    if (eng_mkmodel_write(&o, err, sizeof(err)) != WYE_OK) {
        fprintf(stderr, "mkmodel: %s\n", err);
        return -1;
    }
    return 0;
}

static int setup(void **state)
{
    (void)state;
    snprintf(stories_path, sizeof(stories_path), "%s/models/stories260K-f32.gguf", WYE_SHARED_DIR);
    if (write_model("tiny-qwen2", "ggml-vocab-qwen2.gguf", "qwen2", qwen_path, sizeof(qwen_path)) ||
        write_model("tiny-llama", "ggml-vocab-llama-bpe.gguf", "llama3", llama_path,
                    sizeof(llama_path))) {
        return -1;
    }
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    unlink(qwen_path);
    unlink(llama_path);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_choices_stories),
        cmocka_unit_test(test_choices_qwen2),
        cmocka_unit_test(test_choices_llama3),
        cmocka_unit_test(test_none),
        cmocka_unit_test(test_history),
        cmocka_unit_test(test_backpressure),
        cmocka_unit_test(test_refs),
        cmocka_unit_test(test_refused),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
