/* `wye serve` (gw_cli_serve): --help exits 0, bad flags exit 2 naming the problem, and a real
 * run in a child process logs "listening on http://HOST:PORT", serves /healthz, /v1/models and
 * chat requests (502 naming the unreachable upstream), and exits 0 on SIGTERM. */
/* cmocka.h needs these first. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/alloc.h"
#include "common/clock.h"
#include "common/crypto.h"
#include "common/log.h"
#include "gateway/gateway.h"
#include "tests/gateway/http_client.h"

#define T_MS 10000

/* Runs gw_cli_serve(argv) in a child with stderr and the log going to a pipe; returns the
 * child's exit code and its output in out. */
static int run_child(char **argv, int argc, char *out, size_t cap)
{
    int p[2];
    assert_int_equal(pipe(p), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(p[0]);
        dup2(p[1], 1);
        dup2(p[1], 2);
        wye_log_set_fd(p[1]);
        int rc = gw_cli_serve(argc, argv);
        fflush(NULL); /* _exit does not flush stdio */
        _exit(rc);
    }
    close(p[1]);
    size_t got = 0;
    int64_t deadline = wye_now_ns() + T_MS * WYE_NS_PER_MS;
    while (got + 1 < cap && wye_now_ns() < deadline) {
        struct pollfd pfd = {.fd = p[0], .events = POLLIN};
        if (poll(&pfd, 1, 100) == 1) {
            ssize_t n = read(p[0], out + got, cap - 1 - got);
            if (n <= 0) {
                break;
            }
            got += (size_t)n;
        }
    }
    out[got] = '\0';
    close(p[0]);
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static void test_flags(void **state)
{
    (void)state;
    char out[8192];
    char *help[] = {(char *)"serve", (char *)"--help", NULL};
    assert_int_equal(run_child(help, 2, out, sizeof(out)), 0);
    assert_non_null(strstr(out, "usage: wye serve"));
    char *bad[] = {(char *)"serve", (char *)"--bogus", NULL};
    assert_int_equal(run_child(bad, 2, out, sizeof(out)), 2);
    assert_non_null(strstr(out, "unknown option '--bogus'"));
    char *missing[] = {(char *)"serve", (char *)"--listen", NULL};
    assert_int_equal(run_child(missing, 2, out, sizeof(out)), 2);
    assert_non_null(strstr(out, "--listen needs a value"));
    char *nofile[] = {(char *)"serve", (char *)"-c", (char *)"/nonexistent/wye.lua", NULL};
    assert_int_equal(run_child(nofile, 3, out, sizeof(out)), 2);
}

/* Removes dir and the files the server left in it (the ledger and its key). */
static void remove_dir(const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    char path[512];
    while (d && (e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0) {
            snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
            unlink(path);
        }
    }
    if (d) {
        closedir(d);
    }
    rmdir(dir);
}

static void test_run_and_sigterm(void **state)
{
    (void)state;
    int p[2];
    char dir[] = "/tmp/wye-serve-test-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char ledger[sizeof(dir) + 32];
    snprintf(ledger, sizeof(ledger), "%s/ledger.jsonl", dir);
    assert_int_equal(pipe(p), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(p[0]);
        dup2(p[1], 2);
        wye_log_set_fd(p[1]);
        char *argv[] = {(char *)"serve",
                        (char *)"--listen",
                        (char *)"127.0.0.1:0",
                        (char *)"--upstream",
                        (char *)"http://127.0.0.1:1/v1",
                        (char *)"--upstream-model",
                        (char *)"far-model",
                        (char *)"--no-local",
                        (char *)"--ledger",
                        ledger,
                        NULL};
        _exit(gw_cli_serve(10, argv));
    }
    close(p[1]);
    char log[8192];
    size_t got = 0;
    int port = 0;
    int64_t deadline = wye_now_ns() + T_MS * WYE_NS_PER_MS;
    while (!port && got + 1 < sizeof(log) && wye_now_ns() < deadline) {
        struct pollfd pfd = {.fd = p[0], .events = POLLIN};
        if (poll(&pfd, 1, 100) == 1) {
            ssize_t n = read(p[0], log + got, sizeof(log) - 1 - got);
            if (n <= 0) {
                break;
            }
            got += (size_t)n;
            log[got] = '\0';
            const char *l = strstr(log, "listening on http://127.0.0.1:");
            if (l && strchr(l, '\n')) {
                port = atoi(l + strlen("listening on http://127.0.0.1:"));
            }
        }
    }
    if (!port) {
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
        fail_msg("no 'listening on' line; log: %s", log);
    }
    struct hc_resp r;
    hc_resp_init(&r);
    assert_int_equal(hc_request(port, "GET", "/healthz", NULL, NULL, &r, T_MS), 200);
    hc_resp_cleanup(&r);
    hc_resp_init(&r);
    assert_int_equal(hc_request(port, "GET", "/v1/models", NULL, NULL, &r, T_MS), 200);
    assert_non_null(strstr(r.body.data, "far-model"));
    hc_resp_cleanup(&r);
    hc_resp_init(&r);
    assert_int_equal(hc_request(port, "POST", "/v1/chat/completions",
                                "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}", NULL, &r,
                                T_MS),
                     502);
    assert_non_null(strstr(r.body.data, "\"error\""));
    hc_resp_cleanup(&r);
    hc_resp_init(&r);
    assert_int_equal(hc_request(port, "GET", "/metrics", NULL, NULL, &r, T_MS), 200);
    assert_non_null(strstr(r.body.data, "wye_upstream_errors_total"));
    hc_resp_cleanup(&r);
    assert_int_equal(kill(pid, SIGTERM), 0);
    int status = 0;
    int64_t end = wye_now_ns() + T_MS * WYE_NS_PER_MS;
    pid_t w = 0;
    while ((w = waitpid(pid, &status, WNOHANG)) == 0 && wye_now_ns() < end) {
        wye_sleep_ms(10);
    }
    if (w == 0) {
        kill(pid, SIGKILL);
        waitpid(pid, &status, 0);
        fail_msg("wye serve did not exit after SIGTERM");
    }
    close(p[0]);
    remove_dir(dir);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
}

int main(void)
{
    wye_alloc_install_cjson_hooks();
    if (wye_crypto_init() != WYE_OK) {
        return 1;
    }
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_flags),
        cmocka_unit_test(test_run_and_sigterm),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
