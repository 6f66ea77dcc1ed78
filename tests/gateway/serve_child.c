/* `wye serve` in a child process (see serve_child.h). */
#include "tests/gateway/serve_child.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/clock.h"

#define LISTENING "listening on http://127.0.0.1:"

int sc_serve_conf(const char *conf, const char *log, const char *const *env, int timeout_ms,
                  pid_t *pid)
{
    unlink(log);
    *pid = fork();
    if (*pid < 0) {
        return 0;
    }
    if (*pid == 0) {
        int fd = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        if (fd >= 0) {
            dup2(fd, 2);
            dup2(fd, 1);
        }
        for (size_t i = 0; env && env[i]; i++) {
            putenv((char *)env[i]);
        }
        char bin[700];
        snprintf(bin, sizeof(bin), "%s/wye", WYE_BINARY_DIR);
        execl(bin, bin, "serve", "-c", conf, (char *)NULL);
        _exit(127);
    }
    int port = 0;
    int64_t deadline = wye_now_ns() + (int64_t)timeout_ms * WYE_NS_PER_MS;
    while (!port && wye_now_ns() < deadline) {
        FILE *f = fopen(log, "r");
        char line[1024];
        while (f && fgets(line, sizeof(line), f)) {
            const char *l = strstr(line, LISTENING);
            if (l) {
                port = atoi(l + strlen(LISTENING));
            }
        }
        if (f) {
            fclose(f);
        }
        if (!port) {
            if (waitpid(*pid, NULL, WNOHANG) == *pid) {
                return 0;
            }
            wye_sleep_ms(20);
        }
    }
    if (!port) {
        kill(*pid, SIGKILL);
        waitpid(*pid, NULL, 0);
    }
    return port;
}

pid_t sc_fork_piped(int *fd)
{
    int p[2];
    if (pipe(p) != 0) {
        return -1;
    }
    pid_t pid = fork();
    if (pid == 0) {
        close(p[0]);
        dup2(p[1], 2);
        *fd = p[1];
    } else {
        close(p[1]);
        *fd = p[0];
    }
    return pid;
}

int sc_read_port(pid_t pid, int fd, char *log, size_t cap, int timeout_ms)
{
    size_t got = 0;
    int port = 0;
    log[0] = '\0';
    int64_t deadline = wye_now_ns() + (int64_t)timeout_ms * WYE_NS_PER_MS;
    while (!port && got + 1 < cap && wye_now_ns() < deadline) {
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        if (poll(&pfd, 1, 100) == 1) {
            ssize_t n = read(fd, log + got, cap - 1 - got);
            if (n <= 0) {
                break;
            }
            got += (size_t)n;
            log[got] = '\0';
            const char *l = strstr(log, LISTENING);
            if (l && strchr(l, '\n')) {
                port = atoi(l + strlen(LISTENING));
            }
        }
    }
    if (!port) {
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
    }
    return port;
}

bool sc_wait_exit(pid_t pid, int *status, int timeout_ms)
{
    int64_t deadline = wye_now_ns() + (int64_t)timeout_ms * WYE_NS_PER_MS;
    pid_t w = 0;
    while ((w = waitpid(pid, status, WNOHANG)) == 0 && wye_now_ns() < deadline) {
        wye_sleep_ms(10);
    }
    if (w != pid) {
        kill(pid, SIGKILL);
        waitpid(pid, status, 0);
        return false;
    }
    return true;
}
