/* libFuzzer entry point for what the gateway does with a request body before any backend sees
 * it, as far as it runs without a connection: the nesting guard (gw_json_too_deep, which must
 * catch every body cJSON would parse deeper than the guard's limit), gw_json_parse, and the chat
 * request builder with the default limits, once as an HTTP body (gw_http.c handle_chat) and
 * once as a WebSocket response.create event (gw_ws.c handle_message/handle_create: the request
 * in "response", or the event itself less "type" and "id"). The rest of those handlers answers
 * through a live lws connection and is not reached here. Single-threaded. */
#include <cJSON.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "common/chat.h"
#include "gateway/gw_internal.h"
#include "tests/fuzz/fuzz_util.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* conf's defaults (conf.c): json_depth_max 64, n_msgs_max 1024, max_tokens_max 32768 */
#define DEPTH_MAX 64

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    wye_alloc_install_cjson_hooks();
    return 0;
}

/* Arrays and objects nested in v (0 for a scalar). */
static int containers(const cJSON *v)
{
    if (!cJSON_IsArray(v) && !cJSON_IsObject(v)) {
        return 0;
    }
    int max = 0;
    for (const cJSON *c = v->child; c; c = c->next) {
        int d = containers(c);
        max = d > max ? d : max;
    }
    return max + 1;
}

/* Runs the guard and cJSON as the handlers do; returns the tree (NULL: refused). */
static cJSON *guarded_parse(const char *p, size_t n, int limit)
{
    bool deep = gw_json_too_deep(p, n, limit);
    /* a looser limit never refuses what a tighter one let through */
    CHECK(!deep || gw_json_too_deep(p, n, limit - 1));
    size_t pos = n + 1;
    cJSON *root = gw_json_parse(p, n, &pos);
    if (!root) {
        CHECK(pos <= n); /* where it went wrong is inside the body */
        return NULL;
    }
    if (deep) {
        cJSON_Delete(root); /* the handlers answer 400 before parsing */
        return NULL;
    }
    CHECK(containers(root) <= limit); /* the guard is what keeps cJSON's recursion short */
    return root;
}

static void build(cJSON *body)
{
    static const struct wye_chat_limits lim = {
        .depth_max = DEPTH_MAX, .n_msgs_max = 1024, .max_tokens_max = 32768};
    struct wye_chat_req *req = NULL;
    char eb[512];
    enum wye_err err = wye_chat_req_from_json(body, &lim, &req, eb, sizeof(eb));
    if (err == WYE_OK) {
        CHECK(req && req->n_msgs >= 1 && req->n_msgs <= 1024);
        CHECK(containers(req->body) <= DEPTH_MAX);
    } else {
        CHECK(!req && eb[0]);
    }
    wye_chat_req_destroy(req);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *p = (const char *)data;
    /* HTTP: the parser's own check counts leaves, so the guard allows one level more */
    cJSON *root = size ? guarded_parse(p, size, DEPTH_MAX + 1) : NULL;
    if (root) {
        build(root);
    }
    /* WebSocket: one more level for the event's envelope */
    root = guarded_parse(p, size, DEPTH_MAX + 2);
    if (!root) {
        return 0;
    }
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(root, "type");
    const cJSON *id = cJSON_GetObjectItemCaseSensitive(root, "id");
    if (cJSON_IsObject(root) && cJSON_IsString(type) &&
        strcmp(type->valuestring, "response.create") == 0 && cJSON_IsString(id)) {
        cJSON *body = NULL;
        if (gw_ws_create_body(root, &body) == WYE_OK) {
            build(body);
        }
    }
    cJSON_Delete(root);
    return 0;
}
