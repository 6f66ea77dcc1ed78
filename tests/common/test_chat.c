/* Chat request parsing: the fields, every kind of bad field with a message naming it, limits,
 * and the parser under allocation failure at every point. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <cJSON.h>
#include <string.h>

#include "common/alloc.h"
#include "common/chat.h"

static const struct wye_chat_limits lim = {.depth_max = 8, .n_msgs_max = 4, .max_tokens_max = 4096};

static enum wye_err parse(const char *text, struct wye_chat_req **req, char *err, size_t n)
{
    cJSON *body = cJSON_Parse(text);
    if (!body) {
        return WYE_ERR_NOMEM; /* only under the allocation-failure loop */
    }
    return wye_chat_req_from_json(body, &lim, req, err, n);
}

static void test_full_request(void **state)
{
    (void)state;
    struct wye_chat_req *req;
    char err[256];
    assert_int_equal(parse("{\"model\":\"gpt-x\",\"messages\":[{\"role\":\"system\",\"content\":"
                           "\"be brief\"},{\"role\":\"user\",\"content\":[{\"type\":\"text\","
                           "\"text\":\"hi \"},{\"type\":\"text\",\"text\":\"there\"}]},"
                           "{\"role\":\"assistant\",\"content\":null}],\"max_tokens\":12,"
                           "\"temperature\":0.5,\"top_p\":0.9,\"seed\":42,\"stop\":[\"\\n\",\"END\"],"
                           "\"stream\":true,\"stream_options\":{\"include_usage\":true},"
                           "\"tools\":[{\"type\":\"function\"}],\"response_format\":{\"type\":"
                           "\"json_object\"}}",
                           &req, err, sizeof(err)),
                     WYE_OK);
    assert_string_equal(req->model, "gpt-x");
    assert_int_equal(req->n_msgs, 3);
    assert_int_equal(req->msgs[0].role, WYE_ROLE_SYSTEM);
    assert_string_equal(req->msgs[1].content, "hi there");
    assert_string_equal(req->msgs[2].content, "");
    assert_int_equal(req->max_tokens, 12);
    assert_true(req->temperature == 0.5);
    assert_true(req->has_seed && req->seed == 42);
    assert_int_equal(req->n_stop, 2);
    assert_string_equal(req->stop[1], "END");
    assert_true(req->stream && req->include_usage && req->has_tools && req->has_response_format);
    wye_chat_req_destroy(req);

    assert_int_equal(parse("{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}", &req, err,
                           sizeof(err)),
                     WYE_OK);
    assert_string_equal(req->model, "auto");
    assert_true(req->temperature < 0);
    assert_false(req->stream);
    wye_chat_req_destroy(req);
}

static void test_bad_fields(void **state)
{
    (void)state;
    static const struct {
        const char *body;
        enum wye_err err;
        const char *names;
    } cases[] = {
        {"[]", WYE_ERR_INVAL, "JSON object"},
        {"{}", WYE_ERR_INVAL, "'messages'"},
        {"{\"messages\":[]}", WYE_ERR_INVAL, "'messages'"},
        {"{\"messages\":[1]}", WYE_ERR_INVAL, "messages[0]"},
        {"{\"messages\":[{\"role\":\"wizard\",\"content\":\"x\"}]}", WYE_ERR_INVAL, "wizard"},
        {"{\"messages\":[{\"role\":\"user\",\"content\":5}]}", WYE_ERR_INVAL, "messages[0].content"},
        {"{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"image_url\"}]}]}",
         WYE_ERR_INVAL, "text parts"},
        {"{\"model\":3,\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}", WYE_ERR_INVAL,
         "'model'"},
        {"{\"max_tokens\":0,\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}", WYE_ERR_INVAL,
         "'max_tokens'"},
        {"{\"max_tokens\":5000,\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}",
         WYE_ERR_INVAL, "'max_tokens'"},
        {"{\"temperature\":3,\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}",
         WYE_ERR_INVAL, "'temperature'"},
        {"{\"top_p\":\"a\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}", WYE_ERR_INVAL,
         "'top_p'"},
        {"{\"seed\":1.5,\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}", WYE_ERR_INVAL,
         "'seed'"},
        {"{\"stop\":[1],\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}", WYE_ERR_INVAL,
         "'stop'"},
        {"{\"stream\":\"yes\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}",
         WYE_ERR_INVAL, "'stream'"},
        {"{\"tools\":{},\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}", WYE_ERR_INVAL,
         "'tools'"},
        {"{\"messages\":[{\"role\":\"user\",\"content\":\"1\"},{\"role\":\"user\",\"content\":"
         "\"2\"},{\"role\":\"user\",\"content\":\"3\"},{\"role\":\"user\",\"content\":\"4\"},"
         "{\"role\":\"user\",\"content\":\"5\"}]}",
         WYE_ERR_TOOBIG, "limit is 4"},
        {"{\"x\":[[[[[[[[[[1]]]]]]]]]],\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}",
         WYE_ERR_TOOBIG, "nesting"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct wye_chat_req *req = (void *)1;
        char err[256] = "";
        enum wye_err e = parse(cases[i].body, &req, err, sizeof(err));
        if (e != cases[i].err || !strstr(err, cases[i].names)) {
            fail_msg("case %zu (%s): got %d '%s'", i, cases[i].body, e, err);
        }
        assert_null(req);
    }
}

static void test_oom_loop(void **state)
{
    (void)state;
    const char *text = "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":"
                       "\"text\",\"text\":\"a\"}]},{\"role\":\"assistant\",\"content\":\"b\"}],"
                       "\"stop\":[\"x\",\"y\"]}";
    bool succeeded = false;
    for (long n = 0; n < 200 && !succeeded; n++) {
        struct wye_chat_req *req = NULL;
        char err[256];
        wye_alloc_fail_after(n);
        enum wye_err e = parse(text, &req, err, sizeof(err));
        long failures = wye_alloc_failures();
        wye_alloc_fail_after(-1);
        if (e == WYE_OK) {
            assert_int_equal(failures, 0);
            assert_string_equal(req->stop[1], "y");
            succeeded = true;
        } else {
            assert_int_equal(e, WYE_ERR_NOMEM);
            assert_null(req);
        }
        wye_chat_req_destroy(req);
    }
    assert_true(succeeded);
}

int main(void)
{
    wye_alloc_install_cjson_hooks();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_full_request),
        cmocka_unit_test(test_bad_fields),
        cmocka_unit_test(test_oom_loop),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
