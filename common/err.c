/* Error strings and the assertion handler. Any thread. */
#include "common/err.h"

#include <stdio.h>
#include <stdlib.h>

static const char *const err_names[WYE_ERR__COUNT] = {
    [WYE_OK] = "success",
    [WYE_ERR_NOMEM] = "out of memory",
    [WYE_ERR_TOOBIG] = "limit exceeded",
    [WYE_ERR_INVAL] = "invalid argument",
    [WYE_ERR_PARSE] = "malformed input",
    [WYE_ERR_IO] = "input/output error",
    [WYE_ERR_AGAIN] = "try again",
    [WYE_ERR_CANCELED] = "cancelled",
    [WYE_ERR_TIMEOUT] = "timed out",
    [WYE_ERR_UPSTREAM] = "upstream error",
    [WYE_ERR_NOTFOUND] = "not found",
    [WYE_ERR_AUTH] = "authentication failed",
    [WYE_ERR_DENIED] = "permission denied",
    [WYE_ERR_LIMIT] = "rate limit or budget reached",
    [WYE_ERR_UNSUPPORTED] = "unsupported",
    [WYE_ERR_INTERNAL] = "internal error",
};

const char *wye_err_str(enum wye_err err)
{
    if ((unsigned)err >= WYE_ERR__COUNT) {
        return "unknown error";
    }
    return err_names[err];
}

void wye_assert_fail(const char *expr, const char *file, int line)
{
    fprintf(stderr, "wye: assertion failed: %s (%s:%d)\n", expr, file, line);
    abort();
}
