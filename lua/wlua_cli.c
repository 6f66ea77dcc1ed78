/* `wye lua run FILE.lua [JSON-ARGS]`: runs one script in the sandbox exactly as agents will,
 * prints its result as JSON on stdout, or its error (and traceback) on stderr with exit 1.
 * The CLI answers wye.sleep(ms) itself, which shows the yield/resume loop a host runs.
 * Runs on the main thread. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cJSON.h>

#include "common/alloc.h"
#include "common/clock.h"
#include "common/log.h"
#include "lua/lua_sandbox.h"

#define WLUA_CLI_FILE_MAX ((size_t)16 << 20)

static void wlua_cli_usage(FILE *out)
{
    fprintf(out,
            "usage: wye lua run [OPTIONS] FILE.lua [JSON-ARGS]\n\n"
            "Runs FILE.lua in wye's Lua sandbox. The script returns a function, or a table with\n"
            "a function 'main' (or defines a global function 'main'); it is called with\n"
            "JSON-ARGS decoded (nil if absent) and its result is printed as JSON on stdout.\n"
            "print() goes to stderr. wye.sleep(ms) pauses the run (a yielding host call).\n\n"
            "options:\n"
            "  --memory-mb N         memory cap of the Lua state (default 64)\n"
            "  --max-instructions N  Lua VM instructions per run (default 100000000)\n"
            "  --timeout-ms N        execution time per run (default 10000)\n"
            "  --help                show this help\n");
}

static int wlua_cli_num(const char *opt, const char *s, long long max, long long *out)
{
    char *end;
    errno = 0;
    long long v = s ? strtoll(s, &end, 10) : 0;
    if (!s || errno || *end || v <= 0 || v > max) {
        fprintf(stderr, "wye lua: %s needs a positive integer up to %lld\n", opt, max);
        return -1;
    }
    *out = v;
    return 0;
}

static char *wlua_cli_read(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        char eb[128];
        fprintf(stderr, "wye lua: cannot open %s: %s\n", path, wye_strerror(errno, eb, sizeof(eb)));
        return NULL;
    }
    char *buf = wye_malloc(WLUA_CLI_FILE_MAX + 1);
    size_t n = buf ? fread(buf, 1, WLUA_CLI_FILE_MAX + 1, f) : 0;
    bool bad = ferror(f) != 0;
    fclose(f);
    if (!buf || bad || n > WLUA_CLI_FILE_MAX) {
        fprintf(stderr, "wye lua: cannot read %s: %s\n", path,
                !buf  ? "out of memory"
                : bad ? "read error"
                      : "larger than 16 MiB");
        wye_free(buf);
        return NULL;
    }
    buf[n] = '\0';
    *len = n;
    return buf;
}

static void wlua_cli_print(void *ud, const char *line, size_t len)
{
    (void)ud;
    fprintf(stderr, "%.*s\n", (int)len, line);
}

/* Answers a pending host call: sleep(ms) sleeps (at most the timeout), others fail. */
static enum wlua_status wlua_cli_answer(struct wlua_run *run, int64_t timeout_ms)
{
    const char *name, *args;
    wlua_run_pending(run, &name, &args);
    if (strcmp(name, "sleep") != 0) {
        return wlua_run_resume(run, NULL, "not available in `wye lua run`");
    }
    cJSON *a = cJSON_Parse(args);
    const cJSON *ms = a ? cJSON_GetArrayItem(a, 0) : NULL;
    if (!cJSON_IsNumber(ms) || ms->valuedouble < 0) {
        cJSON_Delete(a);
        return wlua_run_resume(run, NULL, "expected a number of milliseconds >= 0");
    }
    double d = ms->valuedouble;
    cJSON_Delete(a);
    wye_sleep_ms(d > (double)timeout_ms ? timeout_ms : (int64_t)d);
    return wlua_run_resume(run, NULL, NULL);
}

int wlua_cli(int argc, char **argv)
{
    struct wlua_opts opts = {.print = wlua_cli_print};
    long long mem_mb = 64, insns = 100000000, timeout = 10000;
    const char *pos[3];
    int n_pos = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            wlua_cli_usage(stdout);
            return 0;
        } else if (strcmp(a, "--memory-mb") == 0) {
            if (wlua_cli_num(a, i + 1 < argc ? argv[++i] : NULL, 1 << 20, &mem_mb)) {
                return 2;
            }
        } else if (strcmp(a, "--max-instructions") == 0) {
            if (wlua_cli_num(a, i + 1 < argc ? argv[++i] : NULL, (long long)1 << 50, &insns)) {
                return 2;
            }
        } else if (strcmp(a, "--timeout-ms") == 0) {
            if (wlua_cli_num(a, i + 1 < argc ? argv[++i] : NULL, 86400000LL, &timeout)) {
                return 2;
            }
        } else if (a[0] == '-' && a[1] == '-') {
            fprintf(stderr, "wye lua: unknown option '%s'\n", a);
            wlua_cli_usage(stderr);
            return 2;
        } else if (n_pos < 3) {
            pos[n_pos++] = a;
        } else {
            fprintf(stderr, "wye lua: too many arguments\n");
            return 2;
        }
    }
    if (n_pos < 2 || strcmp(pos[0], "run") != 0) {
        wlua_cli_usage(stderr);
        return 2;
    }
    opts.limits.mem_bytes_max = (size_t)mem_mb << 20;
    opts.limits.n_insns_max = insns;
    opts.limits.timeout_ms = timeout;

    int rc = 1;
    size_t len = 0;
    char *src = wlua_cli_read(pos[1], &len);
    if (!src) {
        return 1;
    }
    struct wlua_state *st = wlua_state_create(&opts);
    if (!st || wlua_state_add_yielding(st, "sleep") != WYE_OK) {
        fprintf(stderr, "wye lua: cannot create the Lua state: out of memory\n");
        goto out_state;
    }
    const char *slash = strrchr(pos[1], '/');
    struct wlua_run *run = NULL;
    enum wlua_status s = wlua_run_start(st, slash ? slash + 1 : pos[1], src, len, NULL,
                                        n_pos > 2 ? pos[2] : NULL, &run);
    while (s == WLUA_YIELDED) {
        s = wlua_cli_answer(run, timeout);
    }
    if (s == WLUA_DONE) {
        printf("%s\n", wlua_run_result(run));
        rc = fflush(stdout) == 0 ? 0 : 1;
    } else {
        fprintf(stderr, "wye lua: %s\n", wlua_run_error(run));
        const char *tb = wlua_run_traceback(run);
        if (tb[0]) {
            fprintf(stderr, "%s\n", tb);
        }
    }
    wlua_run_destroy(run);
out_state:
    wlua_state_destroy(st);
    wye_free(src);
    return rc;
}
