/* The cJSON arena: a parse inside begin/end carves its tree from the thread's arena, deleting
 * the tree rewinds it, allocations outside the window and past the arena's end come from
 * malloc, and the fail-after hook still applies. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <cJSON.h>
#include <stdio.h>
#include <string.h>

#include "common/alloc.h"

static const char chunk[] =
    "{\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"choices\":"
    "[{\"index\":0,\"delta\":{\"content\":\"hello\"},\"finish_reason\":null}]}";

static cJSON *parse_in_arena(const char *text)
{
    wye_cjson_arena_begin();
    cJSON *j = cJSON_Parse(text);
    wye_cjson_arena_end();
    return j;
}

static void test_parse_and_rewind(void **state)
{
    (void)state;
    assert_int_equal(wye_cjson_arena_init(4096), WYE_OK);
    for (int round = 0; round < 3; round++) {
        cJSON *j = parse_in_arena(chunk);
        assert_non_null(j);
        assert_true(wye_cjson_arena_used() > 0);
        assert_true(wye_cjson_arena_live() > 5);
        const cJSON *ch = cJSON_GetArrayItem(cJSON_GetObjectItem(j, "choices"), 0);
        const cJSON *c = cJSON_GetObjectItem(cJSON_GetObjectItem(ch, "delta"), "content");
        assert_string_equal(cJSON_GetStringValue(c), "hello");
        /* made outside the window: from malloc, and cJSON_free sends it back there */
        char *printed = cJSON_PrintUnformatted(j);
        assert_non_null(printed);
        size_t used = wye_cjson_arena_used();
        cJSON_free(printed);
        assert_int_equal(wye_cjson_arena_used(), used);
        cJSON_Delete(j);
        assert_int_equal(wye_cjson_arena_live(), 0);
        assert_int_equal(wye_cjson_arena_used(), 0); /* every round starts at the beginning */
    }
    wye_cjson_arena_cleanup();
}

static void test_full_spills_to_malloc(void **state)
{
    (void)state;
    assert_int_equal(wye_cjson_arena_init(256), WYE_OK);
    /* a tree bigger than the arena: the first nodes are carved, the rest come from malloc */
    char big[2048];
    size_t n = 0;
    n += (size_t)snprintf(big + n, sizeof(big) - n, "[");
    for (int i = 0; i < 40; i++) {
        n += (size_t)snprintf(big + n, sizeof(big) - n, "%s\"item number %d\"", i ? "," : "", i);
    }
    snprintf(big + n, sizeof(big) - n, "]");
    cJSON *j = parse_in_arena(big);
    assert_non_null(j);
    assert_int_equal(cJSON_GetArraySize(j), 40);
    assert_string_equal(cJSON_GetArrayItem(j, 39)->valuestring, "item number 39");
    assert_true(wye_cjson_arena_live() > 0);
    cJSON_Delete(j);
    assert_int_equal(wye_cjson_arena_live(), 0);
    assert_int_equal(wye_cjson_arena_used(), 0);
    wye_cjson_arena_cleanup();
}

static void test_live_tree_is_not_reused(void **state)
{
    (void)state;
    assert_int_equal(wye_cjson_arena_init(4096), WYE_OK);
    cJSON *a = parse_in_arena(chunk);
    size_t used = wye_cjson_arena_used();
    cJSON *b = parse_in_arena("{\"x\":\"second\"}"); /* a is live: b goes after it */
    assert_true(wye_cjson_arena_used() > used);
    assert_string_equal(cJSON_GetObjectItem(b, "x")->valuestring, "second");
    cJSON_Delete(a);
    assert_true(wye_cjson_arena_used() > 0); /* b still lives there */
    assert_string_equal(cJSON_GetObjectItem(b, "x")->valuestring, "second");
    cJSON_Delete(b);
    assert_int_equal(wye_cjson_arena_used(), 0);
    wye_cjson_arena_cleanup();
}

static void test_fail_after_applies(void **state)
{
    (void)state;
    assert_int_equal(wye_cjson_arena_init(4096), WYE_OK);
    int ok_at = -1;
    for (long n = 0; n < 100 && ok_at < 0; n++) {
        wye_alloc_fail_after(n);
        cJSON *j = parse_in_arena(chunk);
        wye_alloc_fail_after(-1);
        if (j) {
            ok_at = (int)n;
        }
        cJSON_Delete(j);
        assert_int_equal(wye_cjson_arena_live(), 0);
    }
    assert_true(ok_at > 5);
    wye_cjson_arena_cleanup();
}

/* Dropping rewinds the arena without walking the tree, unless part of a tree came from
 * malloc (then the tree must be deleted as usual) or the window is open. */
static void test_drop(void **state)
{
    (void)state;
    assert_int_equal(wye_cjson_arena_init(4096), WYE_OK);
    cJSON *j = parse_in_arena(chunk);
    assert_non_null(j);
    assert_true(wye_cjson_arena_live() > 0);
    wye_cjson_arena_begin();
    assert_false(wye_cjson_arena_drop()); /* not while parsing */
    wye_cjson_arena_end();
    assert_true(wye_cjson_arena_drop());
    assert_int_equal(wye_cjson_arena_used(), 0);
    assert_int_equal(wye_cjson_arena_live(), 0);
    j = parse_in_arena(chunk); /* the arena is whole again */
    assert_non_null(j);
    assert_true(wye_cjson_arena_drop());
    wye_cjson_arena_cleanup();

    assert_int_equal(wye_cjson_arena_init(256), WYE_OK);
    j = parse_in_arena(chunk); /* bigger than the arena: spills */
    assert_non_null(j);
    assert_false(wye_cjson_arena_drop());
    assert_true(wye_cjson_arena_live() > 0);
    cJSON_Delete(j);
    assert_int_equal(wye_cjson_arena_live(), 0);
    j = parse_in_arena("[1]"); /* the spill was forgotten with the rewind */
    assert_true(wye_cjson_arena_drop());
    assert_false(wye_cjson_arena_drop()); /* nothing carved: nothing to drop */
    wye_cjson_arena_cleanup();
}

static void test_no_arena(void **state)
{
    (void)state;
    /* a thread without an arena (or before init) parses with malloc */
    cJSON *j = parse_in_arena(chunk);
    assert_non_null(j);
    assert_int_equal(wye_cjson_arena_used(), 0);
    assert_int_equal(wye_cjson_arena_live(), 0);
    cJSON_Delete(j);
}

int main(void)
{
    wye_alloc_install_cjson_hooks();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_and_rewind),
        cmocka_unit_test(test_full_spills_to_malloc),
        cmocka_unit_test(test_live_tree_is_not_reused),
        cmocka_unit_test(test_fail_after_applies),
        cmocka_unit_test(test_drop),
        cmocka_unit_test(test_no_arena),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
