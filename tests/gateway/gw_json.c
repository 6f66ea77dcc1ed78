/* Reading the gateway's JSON events (see gw_json.h). */
// clang-format off
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
// clang-format on

#include "tests/gateway/gw_json.h"
#include "common/alloc.h"

const char *gwj_str(const cJSON *j, const char *k)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, k);
    return cJSON_IsString(v) ? v->valuestring : "";
}

int gwj_int(const cJSON *j, const char *k)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, k);
    return cJSON_IsNumber(v) ? v->valueint : -1;
}

uint64_t gwj_u64(const cJSON *j, const char *k)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, k);
    if (!cJSON_IsNumber(v) || !(v->valuedouble >= 0.0 && v->valuedouble < 9007199254740992.0)) {
        return 0;
    }
    uint64_t u = (uint64_t)v->valuedouble;
    return (double)u == v->valuedouble ? u : 0;
}

const char *gwj_istr(const cJSON *j, const char *k)
{
    const cJSON *v = cJSON_GetObjectItem(j, k);
    return cJSON_IsString(v) ? v->valuestring : "";
}

cJSON *gwj_recv(struct wsc *c, int timeout_ms)
{
    char *msg = NULL;
    int op = wsc_recv(c, &msg, NULL, NULL, timeout_ms);
    if (op != WSC_TEXT) {
        wye_free(msg);
        fail_msg("expected a text message, got %d", op);
    }
    cJSON *j = cJSON_Parse(msg);
    wye_free(msg);
    assert_non_null(j);
    return j;
}
