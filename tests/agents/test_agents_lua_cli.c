/* `wye lua run` as users try scripts and tools out (the built binary, fork/exec, from the source
 * tree): a plain script with print, wye.emit and wye.sleep; a tool file's tool with valid and
 * invalid arguments (the schema error the model would get); the support example's order tool
 * with no model at all; wye.http.request against a local page server, allowed by --allow-host
 * or the tool's allow_hosts and refused otherwise; wye.chat through the router against the
 * scripted upstream; a workflow file; a hostile loop cut off by the instruction and time limits.
 * Scripts: tests/agents/scripts_luacli/. */
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "tests/agents/agent_test_server.h"

#define SCRIPTS "tests/agents/scripts_luacli/"

struct lc {
    char dir[512];
    char out_path[600], err_path[600];
    char out[1 << 16], err[1 << 16];
    double secs; /* how long the last run took */
};

static void slurp(const char *path, char *buf, size_t len)
{
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    size_t n = fread(buf, 1, len - 1, f);
    fclose(f);
    buf[n] = '\0';
}

/* Runs `wye lua ARGS...` (NULL-terminated) in the source tree; stdout and stderr land in c->out
 * and c->err. Returns the exit status (-1 if it did not exit within 60 s). */
static int run_lua(struct lc *c, const char *const *args)
{
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        int fo = open(c->out_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        int fe = open(c->err_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        if (fo < 0 || fe < 0 || chdir(WYE_SOURCE_DIR) != 0) {
            _exit(126);
        }
        dup2(fo, 1);
        dup2(fe, 2);
        unsetenv("WYE_MODEL");
        unsetenv("WYE_UPSTREAM");
        unsetenv("WYE_LOG_LEVEL");
        char *argv[24];
        int n = 0;
        argv[n++] = (char *)WYE_BINARY_DIR "/wye";
        argv[n++] = (char *)"lua";
        for (int i = 0; args[i] && n < 23; i++) {
            argv[n++] = (char *)args[i];
        }
        argv[n] = NULL;
        execv(argv[0], argv);
        _exit(127);
    }
    int st = 0, rc = -1;
    for (int i = 0; i < 6000; i++) {
        if (waitpid(pid, &st, WNOHANG) == pid) {
            rc = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
            break;
        }
        struct timespec ts = {0, 10 * 1000000L};
        nanosleep(&ts, NULL);
    }
    if (rc == -1 && waitpid(pid, &st, WNOHANG) == 0) {
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    c->secs = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    slurp(c->out_path, c->out, sizeof(c->out));
    slurp(c->err_path, c->err, sizeof(c->err));
    if (strstr(c->err, "runtime error:") || strstr(c->err, "Sanitizer")) {
        fail_msg("the sanitizers reported:\n%s", c->err); /* the -DWYE_SANITIZE build */
    }
    return rc;
}

/* Asserts that the last run exited with want and that hay (its stdout or stderr) holds needle. */
static void expect(struct lc *c, int rc, int want, const char *hay, const char *needle)
{
    if (rc != want || (needle && !strstr(hay, needle))) {
        fail_msg("exit %d (want %d), want '%s'\nstdout: %s\nstderr: %s", rc, want,
                 needle ? needle : "", c->out, c->err);
    }
}

static int setup(void **state)
{
    struct lc *c = calloc(1, sizeof(*c));
    snprintf(c->dir, sizeof(c->dir), "%s/lua_cli_XXXXXX", WYE_BINARY_DIR);
    assert_non_null(mkdtemp(c->dir));
    snprintf(c->out_path, sizeof(c->out_path), "%s/out", c->dir);
    snprintf(c->err_path, sizeof(c->err_path), "%s/err", c->dir);
    *state = c;
    return 0;
}

static int teardown(void **state)
{
    struct lc *c = *state;
    unlink(c->out_path);
    unlink(c->err_path);
    rmdir(c->dir);
    free(c);
    return 0;
}

static void test_plain_script(void **state)
{
    struct lc *c = *state;
    const char *args[] = {"run", SCRIPTS "plain.lua", "{\"n\":4}", NULL};
    int rc = run_lua(c, args);
    expect(c, rc, 0, c->out, "\"n\":40");
    expect(c, rc, 0, c->out, "\"slept\":true");
    assert_non_null(strstr(c->err, "scaling\t4\n"));
    assert_non_null(strstr(c->err, "\"type\":\"progress\""));
    /* one line of JSON on stdout: nothing else (logs) reaches it */
    assert_int_equal(strchr(c->out, '\n') - c->out + 1, (long)strlen(c->out));
    assert_true(c->out[0] == '{');

    /* a script error names the script and line, with the traceback */
    const char *bad[] = {"run", SCRIPTS "plain.lua", "{}", NULL};
    rc = run_lua(c, bad);
    expect(c, rc, 1, c->err, "wye lua: plain.lua:10: attempt to perform arithmetic on a nil value");
    expect(c, rc, 1, c->err, "stack traceback");
    assert_string_equal(c->out, "");
}

static void test_tool_file(void **state)
{
    struct lc *c = *state;
    const char *ok[] = {"run", SCRIPTS "tools.lua", "--tool", "add", "{\"a\":1,\"b\":2}", NULL};
    int rc = run_lua(c, ok);
    expect(c, rc, 0, c->out, "\"sum\":3");
    expect(c, rc, 0, c->out, "\"tool\":\"add\"");

    /* arguments that do not match the schema: the text the model would get, nothing run */
    const char *bad_type[] = {"run", SCRIPTS "tools.lua",     "--tool",
                              "add", "{\"a\":\"x\",\"b\":2}", NULL};
    rc = run_lua(c, bad_type);
    expect(c, rc, 1, c->err, "wye lua: error: argument 'a' must be an integer\n");
    assert_string_equal(c->out, "");
    const char *missing[] = {"run", SCRIPTS "tools.lua", "--tool", "add", "{\"a\":1}", NULL};
    rc = run_lua(c, missing);
    expect(c, rc, 1, c->err, "error: argument 'b' is required");
    const char *extra[] = {"run", SCRIPTS "tools.lua",         "--tool",
                           "add", "{\"a\":1,\"b\":2,\"c\":3}", NULL};
    rc = run_lua(c, extra);
    expect(c, rc, 1, c->err, "error: argument 'c' is not allowed");

    /* the tool raises: the error as the model would see it */
    const char *raises[] = {"run", SCRIPTS "tools.lua",  "--tool",
                            "add", "{\"a\":-1,\"b\":2}", NULL};
    rc = run_lua(c, raises);
    expect(c, rc, 1, c->err, "wye lua: error: tools.lua:14: negative numbers are not supported");

    /* three tools: --tool is needed, and must name one of them */
    const char *which[] = {"run", SCRIPTS "tools.lua", "{\"a\":1,\"b\":2}", NULL};
    rc = run_lua(c, which);
    expect(c, rc, 2, c->err, "declares the tools add, fetch, fetch_local: choose one with --tool");
    const char *nope[] = {"run", SCRIPTS "tools.lua", "--tool", "nope", "{}", NULL};
    rc = run_lua(c, nope);
    expect(c, rc, 2, c->err, "tools.lua declares no tool 'nope' (it has: add, fetch, fetch_local)");
    const char *json[] = {"run", SCRIPTS "tools.lua", "--tool", "add", "{\"a\":", NULL};
    rc = run_lua(c, json);
    expect(c, rc, 1, c->err, "tools.lua: arguments: invalid JSON");
}

static void test_support_example(void **state)
{
    struct lc *c = *state;
    /* no model at all: the tool never chats */
    const char *args[] = {"run",
                          "lua/examples/support.lua",
                          "--tool",
                          "order_lookup",
                          "{\"order_id\":\"1234\"}",
                          "--no-local",
                          NULL};
    int rc = run_lua(c, args);
    expect(c, rc, 0, c->out, "\"tracking\":\"DHL-88213\"");
    expect(c, rc, 0, c->out, "\"order_id\":\"1234\"");
    const char *unknown[] = {"run",
                             "lua/examples/support.lua",
                             "--tool",
                             "order_lookup",
                             "{\"order_id\":\"77\"}",
                             "--no-local",
                             NULL};
    rc = run_lua(c, unknown);
    expect(c, rc, 0, c->out, "\"no order 77 found\"");
    const char *number[] = {"run",
                            "lua/examples/support.lua",
                            "--tool",
                            "order_lookup",
                            "{\"order_id\":1234}",
                            "--no-local",
                            NULL};
    rc = run_lua(c, number);
    expect(c, rc, 1, c->err, "error: argument 'order_id' must be a string");
}

static void test_http_allowlist(void **state)
{
    struct lc *c = *state;
    struct ats *srv = ats_start();
    assert_non_null(srv);
    char arg[128];
    snprintf(arg, sizeof(arg), "{\"url\":\"http://127.0.0.1:%d/page\"}", ats_port(srv));
    const char *allowed[] = {"run",   SCRIPTS "tools.lua", "--tool",
                             "fetch", "--allow-host",      "127.0.0.1",
                             arg,     "--no-local",        NULL};
    int rc = run_lua(c, allowed);
    const char *refused[] = {"run",   SCRIPTS "tools.lua", "--tool",
                             "fetch", "--allow-host",      "example.com",
                             arg,     "--no-local",        NULL};
    struct lc *r = calloc(1, sizeof(*r));
    memcpy(r->out_path, c->out_path, sizeof(r->out_path));
    memcpy(r->err_path, c->err_path, sizeof(r->err_path));
    int rrc = run_lua(r, refused);
    const char *own[] = {"run", SCRIPTS "tools.lua", "--tool", "fetch_local",
                         arg,   "--no-local",        NULL};
    struct lc *o = calloc(1, sizeof(*o));
    memcpy(o->out_path, c->out_path, sizeof(o->out_path));
    memcpy(o->err_path, c->err_path, sizeof(o->err_path));
    int orc = run_lua(o, own);
    ats_stop(srv);
    expect(c, rc, 0, c->out, "\"status\":200");
    expect(c, rc, 0, c->out, "The quick brown fox jumps.");
    expect(r, rrc, 1, r->err,
           "wye lua: error: tools.lua:20: wye.http.request: host '127.0.0.1' is not allowed for "
           "'fetch' (add it to allow_hosts)\nwye lua: --allow-host HOST allows a host");
    expect(o, orc, 0, o->out, "The quick brown fox jumps.");
    free(r);
    free(o);
}

static void test_chat_upstream(void **state)
{
    struct lc *c = *state;
    struct ats *up = ats_start();
    assert_non_null(up);
    char url[96];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/v1", ats_port(up));
    const char *args[] = {"run",
                          SCRIPTS "chat.lua",
                          "{\"q\":\"hello from lua\"}",
                          "--upstream",
                          url,
                          "--upstream-model",
                          "scripted",
                          "--no-local",
                          NULL};
    int rc = run_lua(c, args);
    long chats = ats_chat_requests(up);
    ats_stop(up);
    expect(c, rc, 0, c->out, "\"text\":\"Reply: hello from lua\"");
    expect(c, rc, 0, c->out, "\"route\":\"remote\"");
    expect(c, rc, 0, c->err, "\"type\":\"model_call\"");
    assert_int_equal(chats, 1);

    /* no model at all: the call fails inside the script, not the CLI */
    const char *none[] = {"run", SCRIPTS "chat.lua", "{\"q\":\"hi\"}", "--no-local", NULL};
    rc = run_lua(c, none);
    expect(c, rc, 1, c->err, "wye lua: chat.lua:3: wye.chat: ");
}

static void test_workflow_file(void **state)
{
    struct lc *c = *state;
    const char *args[] = {"run", SCRIPTS "flow.lua", "{\"n\":21}", "--no-local", NULL};
    int rc = run_lua(c, args);
    expect(c, rc, 0, c->out, "\"n\":42");
    expect(c, rc, 0, c->out, "\"run_by\":\"double\"");
    expect(c, rc, 0, c->err, "\"step\":\"doubling\"");
    const char *named[] = {"run", SCRIPTS "flow.lua", "--workflow", "triple",
                           "{}",  "--no-local",       NULL};
    rc = run_lua(c, named);
    expect(c, rc, 2, c->err, "flow.lua declares no workflow 'triple' (it has: double)");
}

static void test_hostile_loop(void **state)
{
    struct lc *c = *state;
    const char *insns[] = {"run", "--max-instructions", "1000000", SCRIPTS "spin.lua", "--no-local",
                           NULL};
    int rc = run_lua(c, insns);
    expect(c, rc, 1, c->err, "instruction limit of 1000000 exceeded (endless loop?)");
    expect(c, rc, 1, c->err, "wye lua: stopped: instruction limit: spin.lua:");
    assert_string_equal(c->out, "");
    const char *time[] = {"run",           "--timeout-ms",     "300",        "--max-instructions",
                          "1000000000000", SCRIPTS "spin.lua", "--no-local", NULL};
    rc = run_lua(c, time);
    expect(c, rc, 1, c->err, "time limit of 300 ms exceeded");
    expect(c, rc, 1, c->err, "wye lua: stopped: Lua time limit: spin.lua:");
    assert_true(c->secs < 20);
}

static void test_help(void **state)
{
    struct lc *c = *state;
    const char *top[] = {"--help", NULL};
    int rc = run_lua(c, top);
    expect(c, rc, 0, c->out, "usage: wye lua run [OPTIONS] FILE.lua [JSON-ARGS]");
    expect(c, rc, 0, c->out, "--allow-host HOST");
    const char *run[] = {"run", "--help", NULL};
    rc = run_lua(c, run);
    expect(c, rc, 0, c->out, "--tool NAME");
    const char *both[] = {"run", SCRIPTS "tools.lua", "--tool", "a", "--workflow", "b", NULL};
    rc = run_lua(c, both);
    expect(c, rc, 2, c->err, "give --tool or --workflow, not both");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_plain_script, setup, teardown),
        cmocka_unit_test_setup_teardown(test_tool_file, setup, teardown),
        cmocka_unit_test_setup_teardown(test_support_example, setup, teardown),
        cmocka_unit_test_setup_teardown(test_http_allowlist, setup, teardown),
        cmocka_unit_test_setup_teardown(test_chat_upstream, setup, teardown),
        cmocka_unit_test_setup_teardown(test_workflow_file, setup, teardown),
        cmocka_unit_test_setup_teardown(test_hostile_loop, setup, teardown),
        cmocka_unit_test_setup_teardown(test_help, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
