/* Helpers for the `wye serve` wiring tests (test_gateway_wiring_*.c): the built binary run as a
 * child process in a chosen working directory with chosen arguments and environment, its port
 * read from its log, stopped with a signal; scratch directories and small files. Every wait is
 * bounded. Main test thread only (they assert with cmocka). */
#ifndef WYE_TESTS_GATEWAY_WIRING_UTIL_H
#define WYE_TESTS_GATEWAY_WIRING_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#define WW_T_MS 30000 /* every wait's bound: only catches hangs */
#define WW_LEDGER_KEY "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"

struct ww_serve {
    pid_t pid; /* 0: not running */
    int port;
    char log[700]; /* stdout and stderr of the child */
};

/* Runs `<build>/wye serve ARGS...` (args NULL-terminated, without "serve") in cwd (NULL: the
 * test's) with WYE_LEDGER_KEY and WYE_LOG=info, WYE_MODEL and WYE_UPSTREAM_* unset, then each
 * "NAME=VALUE" of env (NULL-terminated, may be NULL); waits for "listening on" in log and
 * fills s->port. Fails the test (naming the log) if it does not start. */
void ww_serve_start(struct ww_serve *s, const char *cwd, const char *log, const char *const *env,
                    const char *const *args);
/* Sends sig and waits for the exit; returns the wait status. SIGKILL after the bound. */
int ww_serve_stop(struct ww_serve *s, int sig);
/* The whole log text (malloc'd; free it), "" if unreadable. */
char *ww_read_file(const char *path);
/* Writes text to path (fails the test on error). */
void ww_write_file(const char *path, const char *text);
/* Copies the file src to dst. */
void ww_copy_file(const char *src, const char *dst);
/* Makes a fresh directory under the build tree named after tag; out gets its path. */
void ww_tmpdir(char *out, size_t len, const char *tag);
/* Removes dir and everything under it. */
void ww_rmdir(const char *dir);
/* Waits up to the bound for text to appear in the file at path; true if it did. */
bool ww_wait_log(const char *path, const char *text);

#endif
