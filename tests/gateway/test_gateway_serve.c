/* `wye serve` (gw_cli_serve): --help exits 0, bad flags exit 2 naming the problem, and a real
 * run in a child process logs "listening on http://HOST:PORT", serves /healthz, /v1/models and
 * chat requests (502 naming the unreachable upstream), names its threads, and exits 0 on
 * SIGTERM. */
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
#include "tests/gateway/serve_child.h"

#define T_MS 10000

/* Runs gw_cli_serve(argv) in a child with stderr and the log going to a pipe; returns the
 * child's exit code and its output in out. */
static int run_child(char **argv, int argc, char *out, size_t cap)
{
    int fd = -1;
    pid_t pid = sc_fork_piped(&fd);
    assert_true(pid >= 0);
    if (pid == 0) {
        dup2(fd, 1);
        wye_log_set_fd(fd);
        int rc = gw_cli_serve(argc, argv);
        fflush(NULL); /* _exit does not flush stdio */
        _exit(rc);
    }
    size_t got = 0;
    int64_t deadline = wye_now_ns() + T_MS * WYE_NS_PER_MS;
    while (got + 1 < cap && wye_now_ns() < deadline) {
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        if (poll(&pfd, 1, 100) == 1) {
            ssize_t n = read(fd, out + got, cap - 1 - got);
            if (n <= 0) {
                break;
            }
            got += (size_t)n;
        }
    }
    out[got] = '\0';
    close(fd);
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

/* The names of pid's threads, one per line, into out. */
static void thread_names(pid_t pid, char *out, size_t cap)
{
    char path[64];
    snprintf(path, sizeof(path), "/proc/%d/task", (int)pid);
    DIR *d = opendir(path);
    assert_non_null(d);
    size_t len = 0;
    out[0] = '\0';
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.') {
            continue;
        }
        char comm[400], name[32] = "";
        snprintf(comm, sizeof(comm), "%s/%s/comm", path, e->d_name);
        FILE *f = fopen(comm, "r");
        if (f) {
            if (!fgets(name, sizeof(name), f)) {
                name[0] = '\0';
            }
            fclose(f);
        }
        int n = snprintf(out + len, cap - len, "%s", name);
        if (n > 0 && (size_t)n < cap - len) {
            len += (size_t)n;
        }
    }
    closedir(d);
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
    char dir[] = "/tmp/wye-serve-test-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char ledger[sizeof(dir) + 32];
    snprintf(ledger, sizeof(ledger), "%s/ledger.jsonl", dir);
    int fd = -1;
    pid_t pid = sc_fork_piped(&fd);
    assert_true(pid >= 0);
    if (pid == 0) {
        wye_log_set_fd(fd);
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
    char log[8192];
    int port = sc_read_port(pid, fd, log, sizeof(log), T_MS);
    if (!port) {
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
    /* every long-lived thread is named for top -H, perf and gdb */
    char names[4096];
    thread_names(pid, names, sizeof(names));
    if (!strstr(names, "wye-lws\n") || !strstr(names, "wye-upstream\n") ||
        !strstr(names, "wye-ledger\n")) {
        fail_msg("thread names of wye serve:\n%s", names);
    }
    assert_int_equal(kill(pid, SIGTERM), 0);
    int status = 0;
    if (!sc_wait_exit(pid, &status, T_MS)) {
        fail_msg("wye serve did not exit after SIGTERM");
    }
    close(fd);
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
