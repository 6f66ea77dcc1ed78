/* `wye agent run` as a user types it (the built binary, fork/exec, from the source tree so that
 * ./lua/examples and the default local model are found as in the README): the README's
 * command against the scripted upstream prints the support agent's answer on stdout and exits
 * 0; without an upstream, on the tiny test model alone, it exits 1 saying the model is too
 * small for the agent's tool prompt and what to give instead. */
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

struct cli {
    char dir[512];
    char out[600], err[600], ledger[600];
};

/* Runs wye with argv (NULL-terminated, without the program) in the source tree; returns the
 * exit status (-1 if it did not exit within 60 s). */
static int run_wye(struct cli *c, const char *const *args)
{
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        int fo = open(c->out, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        int fe = open(c->err, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        if (fo < 0 || fe < 0 || chdir(WYE_SOURCE_DIR) != 0) {
            _exit(126);
        }
        dup2(fo, 1);
        dup2(fe, 2);
        setenv("WYE_LEDGER", c->ledger, 1);
        setenv("WYE_LEDGER_KEY", "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff",
               1);
        unsetenv("WYE_MODEL");
        unsetenv("WYE_UPSTREAM");
        char *argv[16];
        int n = 0;
        argv[n++] = (char *)WYE_BINARY_DIR "/wye";
        for (int i = 0; args[i] && n < 15; i++) {
            argv[n++] = (char *)args[i];
        }
        argv[n] = NULL;
        execv(argv[0], argv);
        _exit(127);
    }
    int st = 0;
    for (int i = 0; i < 6000; i++) {
        if (waitpid(pid, &st, WNOHANG) == pid) {
            return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
        }
        struct timespec ts = {0, 10 * 1000000L};
        nanosleep(&ts, NULL);
    }
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    return -1;
}

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    static char buf[1 << 16];
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    return buf;
}

static int setup(void **state)
{
    struct cli *c = calloc(1, sizeof(*c));
    snprintf(c->dir, sizeof(c->dir), "%s/agents_cli_XXXXXX", WYE_BINARY_DIR);
    assert_non_null(mkdtemp(c->dir));
    snprintf(c->out, sizeof(c->out), "%s/out", c->dir);
    snprintf(c->err, sizeof(c->err), "%s/err", c->dir);
    snprintf(c->ledger, sizeof(c->ledger), "%s/ledger.jsonl", c->dir);
    *state = c;
    return 0;
}

static int teardown(void **state)
{
    struct cli *c = *state;
    char cmd[700];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", c->dir);
    if (system(cmd) != 0) {
        fprintf(stderr, "cannot remove %s\n", c->dir);
    }
    free(c);
    return 0;
}

static void test_readme_command_with_upstream(void **state)
{
    struct cli *c = *state;
    struct ats *up = ats_start();
    assert_non_null(up);
    char url[96];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/v1", ats_port(up));
    const char *args[] = {"agent",      "run", "support",          "Where is my order 1234?",
                          "--upstream", url,   "--upstream-model", "scripted",
                          NULL};
    int rc = run_wye(c, args);
    long chats = ats_chat_requests(up);
    ats_stop(up);
    char *out = slurp(c->out);
    if (rc != 0) {
        fail_msg("exit %d; stdout '%s'; stderr:\n%s", rc, out, slurp(c->err));
    }
    /* the scripted model asked for order_lookup, then answered from its result */
    if (!strstr(out, "Answer: ") || !strstr(out, "DHL-88213")) {
        fail_msg("stdout '%s' is not the agent's answer; stderr:\n%s", out, slurp(c->err));
    }
    assert_int_equal(chats, 2);
    /* the default local model was chosen like `wye serve` does */
    assert_non_null(strstr(slurp(c->err), "stories260K-q8_0.gguf"));
    /* and the calls are in the ledger under the agent's name */
    assert_non_null(strstr(slurp(c->ledger), "\"agent\":\"support\""));
}

static void test_readme_command_tiny_model(void **state)
{
    struct cli *c = *state;
    const char *args[] = {"agent",       "run", "support", "Where is my order 1234?",
                          "--no-ledger", NULL};
    int rc = run_wye(c, args);
    char *err = slurp(c->err);
    assert_int_equal(rc, 1);
    if (!strstr(err, "exceeds the local model's context length (512 tokens)") ||
        !strstr(err, "is too small for this agent's tool prompt") ||
        !strstr(err, "--upstream URL --upstream-model NAME")) {
        fail_msg("stderr does not say the model is too small and what to use:\n%s", err);
    }
    assert_string_equal(slurp(c->out), "");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_readme_command_with_upstream),
        cmocka_unit_test(test_readme_command_tiny_model),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
