/* `wye ledger verify|summary` run as a child process (WYE_BINARY_DIR/wye): exit codes and
 * messages for an intact ledger, a tampered one, a missing key and bad options; the summary
 * table's cost precision. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/alloc.h"
#include "common/buf.h"
#include "common/crypto.h"
#include "router/ledger.h"
#include "tests/router/test_ledger_util.h"

static char dir[512];
static char path[600];

static int setup(void **state)
{
    (void)state;
    tl_tmpdir(dir, sizeof(dir), "cli");
    snprintf(path, sizeof(path), "%s/ledger.jsonl", dir);
    setenv("WYE_LEDGER_KEY", TL_KEY_TEXT, 1);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    unsetenv("WYE_LEDGER_KEY");
    tl_rmdir(dir);
    return 0;
}

/* Runs "wye ARGS 2>&1"; returns the exit code and the output in out (caller frees). */
static int run(const char *args, char **out)
{
    char cmd[2048];
    snprintf(cmd, sizeof(cmd), "'%s/wye' %s 2>&1", WYE_BINARY_DIR, args);
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    struct wye_buf b;
    wye_buf_init(&b, 1 << 20);
    char chunk[4096];
    size_t n;
    while ((n = fread(chunk, 1, sizeof(chunk), p)) > 0) {
        wye_buf_append(&b, chunk, n);
    }
    int st = pclose(p);
    wye_buf_append_str(&b, "");
    *out = strdup(b.data);
    wye_buf_cleanup(&b);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static void test_verify_exit_codes(void **state)
{
    (void)state;
    tl_write_records(path, 0, 4, NULL);
    char args[1024], *out;
    snprintf(args, sizeof(args), "ledger verify '%s'", path);
    assert_int_equal(run(args, &out), 0);
    assert_non_null(strstr(out, "ok: 4 records, chain intact"));
    assert_non_null(strstr(out, "last MAC: "));
    assert_null(strstr(out, TL_KEY_TEXT));
    free(out);

    /* Edit record 2's token count. */
    char *text = tl_read(path, NULL);
    char *p = strstr(text, "\"prompt_tokens\":101");
    assert_non_null(p);
    p[16] = '9';
    tl_write(path, text, strlen(text));
    free(text);
    assert_int_equal(run(args, &out), 1);
    char want[800];
    snprintf(want, sizeof(want), "%s:2: record seq 2: MAC mismatch (record edited or forged)",
             path);
    assert_non_null(strstr(out, want));
    assert_non_null(strstr(out, "FAILED"));
    free(out);

    /* Without a key there is nothing to check against. */
    unsetenv("WYE_LEDGER_KEY");
    assert_int_equal(run(args, &out), 1);
    assert_non_null(strstr(out, "no ledger key"));
    free(out);
    setenv("WYE_LEDGER_KEY", TL_KEY_TEXT, 1);

    assert_int_equal(run("ledger verify", &out), 2);
    free(out);
    assert_int_equal(run("ledger frobnicate", &out), 2);
    assert_non_null(strstr(out, "unknown subcommand"));
    free(out);
}

static void test_summary_cli(void **state)
{
    (void)state;
    tl_write_records(path, 0, 6, NULL);
    char args[1024], *out;
    snprintf(args, sizeof(args), "ledger summary '%s' --by route --json", path);
    assert_int_equal(run(args, &out), 0);
    assert_non_null(strstr(out, "\"by\":\"route\""));
    assert_non_null(strstr(out, "\"total\":{\"requests\":6,"));
    free(out);
    snprintf(args, sizeof(args), "ledger summary '%s' --by model", path);
    assert_int_equal(run(args, &out), 0);
    assert_non_null(strstr(out, "GROUP"));
    assert_non_null(strstr(out, "qwen-small"));
    assert_non_null(strstr(out, "TOTAL"));
    free(out);
    /* the table shows cost and saving to the micro-dollar: a record costing $0.000012 and
     * saving $0.000045 must not print as 0.0000 */
    char small[700];
    snprintf(small, sizeof(small), "%s/small.jsonl", dir);
    struct rt_ledger *l = tl_open(small, NULL);
    assert_non_null(l);
    struct rt_ledger_rec r = tl_rec(1);
    r.cost_usd = 0.000012;
    r.counterfactual_cost_usd = 0.000057;
    r.saving_usd = 0.000045;
    assert_int_equal(rt_ledger_append(l, &r, NULL, NULL), WYE_OK);
    rt_ledger_close(l);
    snprintf(args, sizeof(args), "ledger summary '%s'", small);
    assert_int_equal(run(args, &out), 0);
    const char *total = strstr(out, "TOTAL");
    assert_non_null(total);
    assert_non_null(strstr(total, " 0.000012 "));
    assert_non_null(strstr(total, " 0.000045 "));
    free(out);
    snprintf(args, sizeof(args), "ledger summary '%s' --by colour", path);
    assert_int_equal(run(args, &out), 2);
    assert_non_null(strstr(out, "bad --by 'colour'"));
    free(out);
    snprintf(args, sizeof(args), "ledger summary '%s' --since yesterday", path);
    assert_int_equal(run(args, &out), 2);
    assert_non_null(strstr(out, "bad --since"));
    free(out);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_verify_exit_codes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_summary_cli, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
