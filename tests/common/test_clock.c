/* Time helpers: RFC 3339 formatting and the CPU steal accounting the benchmarks report. */
// clang-format off
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
// clang-format on
#include <string.h>

#include "common/clock.h"

static void test_rfc3339(void **state)
{
    (void)state;
    char out[32];
    wye_format_rfc3339(INT64_C(1700000000123), out, sizeof(out));
    assert_string_equal(out, "2023-11-14T22:13:20.123Z");
}

static void test_steal_parse(void **state)
{
    (void)state;
    struct wye_cpu_ticks a, b;
    /* a kernel with guest fields: guest time is already inside user and is not added again */
    assert_true(wye_cpu_ticks_parse("cpu  100 5 20 800 3 0 2 70 40 0\n", &a));
    assert_int_equal(a.total, 1000);
    assert_int_equal(a.steal, 70);
    /* an older kernel: just the eight fields */
    assert_true(wye_cpu_ticks_parse("cpu 200 5 40 1600 3 0 2 150", &b));
    assert_int_equal(b.total, 2000);
    assert_int_equal(b.steal, 150);
    assert_true(wye_cpu_steal_fraction(&a, &b) > 0.0799 && wye_cpu_steal_fraction(&a, &b) < 0.0801);
    /* no time passed, time going backwards, or a failed reading: unknown */
    assert_true(wye_cpu_steal_fraction(&a, &a) < 0.0);
    assert_true(wye_cpu_steal_fraction(&b, &a) < 0.0);
    struct wye_cpu_ticks zero = {0};
    assert_true(wye_cpu_steal_fraction(&zero, &b) < 0.0);
    /* a per-CPU line, a truncated line, garbage */
    assert_false(wye_cpu_ticks_parse("cpu0 100 5 20 800 3 0 2 70", &a));
    assert_false(wye_cpu_ticks_parse("cpu  100 5 20 800 3 0 2", &a));
    assert_false(wye_cpu_ticks_parse("intr 1 2 3", &a));
    assert_false(wye_cpu_ticks_parse("", &a));
}

static void test_steal_read(void **state)
{
    (void)state;
    struct wye_cpu_ticks a, b;
    assert_true(wye_cpu_ticks_read(&a)); /* the suite runs on Linux */
    assert_true(a.total > 0 && a.steal <= a.total);
    volatile uint64_t spin = 0;
    int64_t t0 = wye_now_ns();
    while (wye_now_ns() - t0 < 30 * WYE_NS_PER_MS) { /* let the tick counters move */
        spin++;
    }
    assert_true(wye_cpu_ticks_read(&b));
    assert_true(b.total >= a.total && b.steal >= a.steal);
    double f = wye_cpu_steal_fraction(&a, &b);
    assert_true(f <= 1.0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rfc3339),
        cmocka_unit_test(test_steal_parse),
        cmocka_unit_test(test_steal_read),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
