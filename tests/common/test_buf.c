/* Capped buffers: growth, the cap, JSON escaping, failure leaves the buffer unchanged. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>

#include "common/alloc.h"
#include "common/buf.h"

static void test_append_and_cap(void **state)
{
    (void)state;
    struct wye_buf b;
    wye_buf_init(&b, 10);
    assert_int_equal(wye_buf_append_str(&b, "hello"), WYE_OK);
    assert_int_equal(wye_buf_append_str(&b, "world"), WYE_OK);
    assert_int_equal(b.len, 10);
    assert_int_equal(wye_buf_append(&b, "!", 1), WYE_ERR_TOOBIG);
    assert_string_equal(b.data, "helloworld");
    wye_buf_consume(&b, 5);
    assert_string_equal(b.data, "world");
    assert_int_equal(wye_buf_printf(&b, "%d", 12345), WYE_OK);
    assert_string_equal(b.data, "world12345");
    assert_int_equal(wye_buf_printf(&b, "%d", 1), WYE_ERR_TOOBIG);
    assert_string_equal(b.data, "world12345");
    wye_buf_cleanup(&b);
}

static void test_json_escape(void **state)
{
    (void)state;
    struct wye_buf b;
    wye_buf_init(&b, 100);
    const char in[] = "a\"b\\c\nd\x01\xc3\xa9";
    assert_int_equal(wye_buf_append_json_str(&b, in, sizeof(in) - 1), WYE_OK);
    assert_string_equal(b.data, "\"a\\\"b\\\\c\\nd\\u0001\xc3\xa9\"");
    wye_buf_cleanup(&b);
    /* A string that does not fit leaves nothing behind. */
    wye_buf_init(&b, 8);
    assert_int_equal(wye_buf_append_str(&b, "ab"), WYE_OK);
    assert_int_equal(wye_buf_append_json_str(&b, "\n\n\n\n", 4), WYE_ERR_TOOBIG);
    assert_string_equal(b.data, "ab");
    wye_buf_cleanup(&b);
}

static void test_oom(void **state)
{
    (void)state;
    struct wye_buf b;
    wye_buf_init(&b, 1 << 20);
    wye_alloc_fail_after(0);
    assert_int_equal(wye_buf_append_str(&b, "x"), WYE_ERR_NOMEM);
    wye_alloc_fail_after(-1);
    assert_int_equal(b.len, 0);
    assert_int_equal(wye_buf_append_str(&b, "x"), WYE_OK);
    wye_buf_cleanup(&b);
}

/* printf formats into the spare room in one pass; when the text does not fit it grows the
 * buffer and formats again, and a refused printf leaves the text as it was. */
static void test_printf_room(void **state)
{
    (void)state;
    struct wye_buf b;
    wye_buf_init(&b, 1000);
    assert_int_equal(wye_buf_printf(&b, "%s-%d", "ab", 7), WYE_OK); /* no room yet */
    assert_string_equal(b.data, "ab-7");
    size_t cap = b.cap;
    assert_int_equal(wye_buf_printf(&b, "%.3f", 1.5), WYE_OK); /* fits the room */
    assert_string_equal(b.data, "ab-71.500");
    assert_int_equal(b.cap, cap);
    char big[300];
    memset(big, 'z', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    assert_int_equal(wye_buf_printf(&b, "<%s>", big), WYE_OK); /* a cut try, then a grow */
    assert_int_equal(b.len, 9 + 2 + 299);
    assert_int_equal(strlen(b.data), b.len);
    assert_int_equal(memcmp(b.data, "ab-71.500<zz", 12), 0);
    assert_int_equal(b.data[b.len - 1], '>');
    size_t len = b.len;
    char huge[800];
    memset(huge, 'y', sizeof(huge) - 1);
    huge[sizeof(huge) - 1] = '\0';
    assert_int_equal(wye_buf_printf(&b, "%s", huge), WYE_ERR_TOOBIG); /* over the cap */
    assert_int_equal(b.len, len);
    assert_int_equal(strlen(b.data), len);
    huge[400] = '\0'; /* fits the cap, not the allocation: the growth fails */
    assert_true(b.cap < len + 400 + 1);
    wye_alloc_fail_after(0);
    assert_int_equal(wye_buf_printf(&b, "%s", huge), WYE_ERR_NOMEM);
    wye_alloc_fail_after(-1);
    assert_int_equal(strlen(b.data), len);
    wye_buf_cleanup(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_append_and_cap),
        cmocka_unit_test(test_json_escape),
        cmocka_unit_test(test_oom),
        cmocka_unit_test(test_printf_room),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
