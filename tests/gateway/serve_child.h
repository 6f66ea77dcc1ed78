/* `wye serve` in a child process, for the gateway tests that run the real thing: started from a
 * configuration file with its log in a file, or read from a pipe, until its "listening on" line
 * names the port; and waited for at the end. Every wait is bounded, so a server that does not
 * start or stop fails the test instead of hanging it. Main test thread only. */
#ifndef WYE_TESTS_GATEWAY_SERVE_CHILD_H
#define WYE_TESTS_GATEWAY_SERVE_CHILD_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

/* Runs `<build>/wye serve -c conf` in a child whose stdout and stderr go to the file log (removed
 * first, so that a restart on the same log is not taken for the old run) with each "NAME=VALUE"
 * of env (NULL-terminated) set, and waits up to timeout_ms for "listening on" in the log. Returns
 * the port, or 0 when the child exited or did not start in time (it is killed and reaped then).
 * *pid gets the child's id. */
int sc_serve_conf(const char *conf, const char *log, const char *const *env, int timeout_ms,
                  pid_t *pid);
/* fork() with the child's stderr on a pipe. The parent gets the child's pid and in *fd the read
 * end; the child gets 0 and in *fd the write end (already its stderr). -1 on failure. */
pid_t sc_fork_piped(int *fd);
/* Reads the child pid's output from fd into log (cap bytes, always NUL-terminated) until its
 * whole "listening on" line has come, EOF or timeout_ms; returns the port from it, or 0 when
 * none came (the child is then killed and reaped). */
int sc_read_port(pid_t pid, int fd, char *log, size_t cap, int timeout_ms);
/* Waits up to timeout_ms for the child pid to exit; *status gets its wait status. If it does
 * not, kills it (SIGKILL), reaps it and returns false. */
bool sc_wait_exit(pid_t pid, int *status, int timeout_ms);

#endif
