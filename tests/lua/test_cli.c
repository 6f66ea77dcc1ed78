/* `wye lua run`: the result on stdout as JSON, errors on stderr with exit 1, the options. */
#include <sys/wait.h>

#include "tests/lua/wlua_test.h"

/* Runs `wye lua ARGS` (stderr folded into stdout); returns the exit status, output in out. */
static int t_wye(const char *args, char *out, size_t outlen)
{
    char cmd[2048];
    snprintf(cmd, sizeof(cmd), "cd %s/tests/lua/scripts && %s/wye lua %s 2>&1", WYE_SOURCE_DIR,
             WYE_BINARY_DIR, args);
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    size_t n = fread(out, 1, outlen - 1, p);
    out[n] = '\0';
    int st = pclose(p);
    assert_true(WIFEXITED(st));
    return WEXITSTATUS(st);
}

static void test_cli_run(void **state)
{
    (void)state;
    char out[8192];
    assert_int_equal(t_wye("run cli_add.lua '{\"a\":1}'", out, sizeof(out)), 0);
    assert_string_equal(out, "adding\t1\tand 41\n{\"sum\":42}\n");
}

static void test_cli_errors(void **state)
{
    (void)state;
    char out[8192];
    assert_int_equal(t_wye("run cli_error.lua '{}'", out, sizeof(out)), 1);
    assert_non_null(strstr(out, "wye lua: cli_error.lua:4: attempt to index a nil value (local "
                                "'order')"));
    assert_non_null(strstr(out, "stack traceback"));
    assert_int_equal(t_wye("run --max-instructions 100000 loop_pcall.lua", out, sizeof(out)), 1);
    assert_non_null(strstr(out, "instruction limit of 100000 exceeded"));
    assert_int_equal(t_wye("run --timeout-ms 100 --max-instructions 1000000000000 loop_pcall.lua",
                           out, sizeof(out)),
                     1);
    assert_non_null(strstr(out, "time limit of 100 ms exceeded"));
    assert_int_equal(t_wye("run cli_add.lua '{\"a\":'", out, sizeof(out)), 1);
    assert_non_null(strstr(out, "arguments: invalid JSON"));
    assert_int_equal(t_wye("run no_such_file.lua", out, sizeof(out)), 1);
    assert_non_null(strstr(out, "cannot open no_such_file.lua"));
    assert_int_equal(t_wye("run --memory-mb x cli_add.lua", out, sizeof(out)), 2);
    assert_non_null(strstr(out, "--memory-mb needs a positive integer"));
    assert_int_equal(t_wye("run", out, sizeof(out)), 2);
    assert_int_equal(t_wye("--help", out, sizeof(out)), 0);
    assert_non_null(strstr(out, "usage: wye lua run [OPTIONS] FILE.lua [JSON-ARGS]"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cli_run),
        cmocka_unit_test(test_cli_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
