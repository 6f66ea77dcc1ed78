/* Logging: one line per call, levels, request ids, and secrets never reaching the output. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>
#include <unistd.h>

#include "common/log.h"

static void read_all(int fd, char *out, size_t n)
{
    ssize_t r = read(fd, out, n - 1);
    out[r > 0 ? r : 0] = '\0';
}

static void test_levels_ids_redaction(void **state)
{
    (void)state;
    int p[2];
    char out[8192];
    assert_int_equal(pipe(p), 0);
    wye_log_set_fd(p[1]);
    wye_log_set_level(WYE_LOG_INFO);
    wye_log_add_secret("sk-test-ABCDEFGHIJKLMNOP");
    wye_log_add_secret("abcd");
    wye_log(WYE_LOG_DEBUG, NULL, "hidden");
    wye_log(WYE_LOG_WARN, "req_1", "key sk-test-ABCDEFGHIJKLMNOP and abcd\nsecond line");
    close(p[1]);
    read_all(p[0], out, sizeof(out));
    close(p[0]);
    wye_log_set_fd(2);
    assert_null(strstr(out, "hidden"));
    assert_non_null(strstr(out, "warn  [req_1] key [redacted] and **** second line"));
    assert_null(strstr(out, "sk-test"));
    assert_int_equal(strchr(out, '\n') - out, (long)strlen(out) - 1); /* exactly one line */
    enum wye_log_level lv;
    assert_true(wye_log_level_parse("ERROR", &lv));
    assert_int_equal(lv, WYE_LOG_ERROR);
    assert_false(wye_log_level_parse("loud", &lv));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_levels_ids_redaction),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
