/* libFuzzer entry point for the chat request parser (common/chat.h): the input is a request
 * body, parsed with cJSON as the gateway does and handed to wye_chat_req_from_json with the
 * production limits, tiny limits, limits picked from the input and none, then once more with
 * allocations failing after a count picked from the input. An accepted request must respect
 * every limit and field contract of the header; a refused one names its problem. Single-
 * threaded. */
#include <cJSON.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "common/chat.h"
#include "tests/fuzz/fuzz_util.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    wye_alloc_install_cjson_hooks(); /* as in main: the fail-after hook reaches cJSON too */
    return 0;
}

static void check_req(const struct wye_chat_req *req, const struct wye_chat_limits *lim)
{
    CHECK(req->model && req->model[0]);
    CHECK(req->n_msgs >= 1 && req->msgs);
    if (lim && lim->n_msgs_max) {
        CHECK(req->n_msgs <= lim->n_msgs_max);
    }
    for (size_t i = 0; i < req->n_msgs; i++) {
        CHECK(req->msgs[i].content != NULL);
        CHECK(req->msgs[i].role >= WYE_ROLE_SYSTEM && req->msgs[i].role <= WYE_ROLE_TOOL);
        (void)strlen(req->msgs[i].content);
    }
    int hi = lim && lim->max_tokens_max > 0 ? lim->max_tokens_max : 1 << 20;
    CHECK(req->max_tokens >= 0 && req->max_tokens <= hi);
    CHECK(req->temperature == -1 || (req->temperature >= 0 && req->temperature <= 2));
    CHECK(req->top_p == -1 || (req->top_p >= 0 && req->top_p <= 1));
    CHECK(req->n_stop <= 4);
    for (size_t i = 0; i < req->n_stop; i++) {
        CHECK(req->stop[i] != NULL);
    }
    CHECK(!req->has_seed || (req->seed >= -9007199254740992LL && req->seed <= 9007199254740992LL));
    CHECK(cJSON_IsObject(req->body));
    CHECK(!req->client_id && !req->key_name && !req->agent);
}

/* One parse and build; returns what the builder said. */
static enum wye_err one(const uint8_t *data, size_t size, const struct wye_chat_limits *lim,
                        size_t errlen, long fail_after)
{
    char eb[512];
    memset(eb, 'x', sizeof(eb));
    if (fail_after >= 0) {
        wye_alloc_fail_after(fail_after);
    }
    cJSON *root = cJSON_ParseWithLength((const char *)data, size);
    static struct wye_chat_req sentinel;
    struct wye_chat_req *req = &sentinel; /* must be overwritten */
    enum wye_err err = wye_chat_req_from_json(root, lim, &req, eb, errlen);
    long failures = fail_after >= 0 ? wye_alloc_failures() : 0;
    wye_alloc_fail_after(-1);
    if (err == WYE_OK) {
        check_req(req, lim);
    } else {
        CHECK(req == NULL);
        CHECK(err == WYE_ERR_INVAL || err == WYE_ERR_TOOBIG ||
              (err == WYE_ERR_NOMEM && failures > 0));
        if (errlen) {
            CHECK(memchr(eb, '\0', errlen) != NULL);
            /* NOMEM may come without a message: callers fall back to wye_err_str */
            CHECK(eb[0] != '\0' || errlen == 1 || err == WYE_ERR_NOMEM);
        }
    }
    wye_chat_req_destroy(req);
    return err;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const struct wye_chat_limits prod = {
        .depth_max = 64, .n_msgs_max = 1024, .max_tokens_max = 32768};
    static const struct wye_chat_limits tiny = {
        .depth_max = 4, .n_msgs_max = 1, .max_tokens_max = 1};
    uint32_t hash = 2166136261u;
    for (size_t i = 0; i < size; i++) {
        hash = (hash ^ data[i]) * 16777619u;
    }
    struct wye_chat_limits picked = {.depth_max = (int)(hash % 9),
                                     .n_msgs_max = (hash >> 4) % 4,
                                     .max_tokens_max = (int)((hash >> 8) % 100)};
    enum wye_err err = one(data, size, &prod, 512, -1);
    /* tighter limits never accept what looser ones refused */
    enum wye_err err_tiny = one(data, size, &tiny, 512, -1);
    CHECK(err == WYE_OK || err_tiny != WYE_OK);
    (void)one(data, size, &picked, 1 + (hash >> 12) % 24, -1);
    (void)one(data, size, NULL, 0, -1);
    /* the first allocations are the most interesting: cJSON's tree, then the request */
    (void)one(data, size, &prod, 512, (long)((hash >> 16) % 64));
    return 0;
}
