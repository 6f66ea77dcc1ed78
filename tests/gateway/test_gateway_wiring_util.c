/* `wye serve` as a child process for the wiring tests (see test_gateway_wiring_util.h). Main
 * test thread only. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/clock.h"
#include "tests/gateway/serve_child.h"
#include "tests/gateway/test_gateway_wiring_util.h"

#define LISTENING "listening on http://127.0.0.1:"

char *ww_read_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    size_t cap = 4096, len = 0;
    char *text = malloc(cap);
    assert_non_null(text);
    text[0] = '\0';
    if (!f) {
        return text;
    }
    size_t n;
    while ((n = fread(text + len, 1, cap - len - 1, f)) > 0) {
        len += n;
        if (cap - len - 1 == 0) {
            cap *= 2;
            text = realloc(text, cap);
            assert_non_null(text);
        }
    }
    text[len] = '\0';
    fclose(f);
    return text;
}

void ww_write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    if (!f) {
        fail_msg("cannot write %s", path);
    }
    assert_true(fputs(text, f) >= 0);
    assert_int_equal(fclose(f), 0);
}

void ww_copy_file(const char *src, const char *dst)
{
    char *text = ww_read_file(src);
    if (!text[0]) {
        fail_msg("cannot read %s", src);
    }
    ww_write_file(dst, text);
    free(text);
}

void ww_tmpdir(char *out, size_t len, const char *tag)
{
    snprintf(out, len, "%s/%s_XXXXXX", WYE_BINARY_DIR, tag);
    if (!mkdtemp(out)) {
        fail_msg("mkdtemp %s failed", out);
    }
}

void ww_rmdir(const char *dir)
{
    char cmd[1200];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    if (system(cmd) != 0) {
        fprintf(stderr, "cannot remove %s\n", dir);
    }
}

bool ww_wait_log(const char *path, const char *text)
{
    int64_t deadline = wye_now_ns() + (int64_t)WW_T_MS * 1000000;
    while (wye_now_ns() < deadline) {
        char *log = ww_read_file(path);
        bool found = strstr(log, text) != NULL;
        free(log);
        if (found) {
            return true;
        }
        wye_sleep_ms(20);
    }
    return false;
}

void ww_serve_start(struct ww_serve *s, const char *cwd, const char *log, const char *const *env,
                    const char *const *args)
{
    s->port = 0;
    snprintf(s->log, sizeof(s->log), "%s", log);
    unlink(s->log);
    const char *argv[32];
    char bin[700];
    snprintf(bin, sizeof(bin), "%s/wye", WYE_BINARY_DIR);
    size_t n = 0;
    argv[n++] = bin;
    argv[n++] = "serve";
    for (size_t i = 0; args && args[i]; i++) {
        assert_true(n < sizeof(argv) / sizeof(argv[0]) - 1);
        argv[n++] = args[i];
    }
    argv[n] = NULL;
    s->pid = fork();
    assert_true(s->pid >= 0);
    if (s->pid == 0) {
        int fd = open(s->log, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        if (fd >= 0) {
            dup2(fd, 2);
            dup2(fd, 1);
        }
        if (cwd && chdir(cwd) != 0) {
            _exit(126);
        }
        unsetenv("WYE_MODEL");
        unsetenv("WYE_UPSTREAM_URL");
        unsetenv("WYE_UPSTREAM_MODEL");
        unsetenv("WYE_LISTEN");
        unsetenv("WYE_LEDGER");
        setenv("WYE_LEDGER_KEY", WW_LEDGER_KEY, 1);
        setenv("WYE_LOG", "info", 1);
        for (size_t i = 0; env && env[i]; i++) {
            putenv((char *)env[i]);
        }
        execv(bin, (char *const *)argv);
        _exit(127);
    }
    int64_t deadline = wye_now_ns() + (int64_t)WW_T_MS * 1000000;
    while (!s->port && wye_now_ns() < deadline) {
        char *text = ww_read_file(s->log);
        const char *l = strstr(text, LISTENING);
        if (l) {
            s->port = atoi(l + strlen(LISTENING));
        }
        free(text);
        if (!s->port) {
            if (waitpid(s->pid, NULL, WNOHANG) == s->pid) {
                s->pid = 0;
                break;
            }
            wye_sleep_ms(20);
        }
    }
    if (!s->port) {
        if (s->pid > 0) {
            kill(s->pid, SIGKILL);
            waitpid(s->pid, NULL, 0);
            s->pid = 0;
        }
        char *text = ww_read_file(s->log);
        fail_msg("wye serve did not start; its log (%s):\n%s", s->log, text);
    }
}

int ww_serve_stop(struct ww_serve *s, int sig)
{
    if (s->pid <= 0) {
        return -1;
    }
    kill(s->pid, sig);
    int st = 0;
    (void)sc_wait_exit(s->pid, &st, WW_T_MS); /* SIGKILLed after the bound: st says so */
    s->pid = 0;
    return st;
}
