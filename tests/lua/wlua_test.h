/* Helpers shared by the Lua sandbox tests: run a script, check its outcome. */
#ifndef WYE_TESTS_LUA_WLUA_TEST_H
#define WYE_TESTS_LUA_WLUA_TEST_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

/* cmocka.h needs the headers above first. */
#include <cmocka.h>

#include "common/alloc.h"
#include "lua/lua_sandbox.h"

/* Small limits so every hostile case ends quickly, even under ASan. */
static inline struct wlua_state *t_state(size_t mem_mb, int64_t insns, int64_t timeout_ms)
{
    struct wlua_opts o = {0};
    o.limits.mem_bytes_max = mem_mb << 20;
    o.limits.n_insns_max = insns;
    o.limits.timeout_ms = timeout_ms;
    struct wlua_state *st = wlua_state_create(&o);
    assert_non_null(st);
    return st;
}

static inline struct wlua_state *t_default(void)
{
    return t_state(16, 2000000, 5000);
}

/* Runs src (named "x.lua") to completion on st; the caller destroys *out. */
static inline enum wlua_status t_run(struct wlua_state *st, const char *src, const char *args,
                                     struct wlua_run **out)
{
    return wlua_run_start(st, "x.lua", src, strlen(src), NULL, args, out);
}

/* Asserts that src fails with err and a message containing want. */
static inline void t_expect_error_on(struct wlua_state *st, const char *src, enum wye_err err,
                                     const char *want)
{
    struct wlua_run *run = NULL;
    enum wlua_status s = t_run(st, src, NULL, &run);
    if (s != WLUA_ERROR || wlua_run_err(run) != err || !strstr(wlua_run_error(run), want)) {
        print_error("script: %s\nstatus %d err %d (want %d) message: %s\nwant: %s\n", src, s,
                    wlua_run_err(run), err, s == WLUA_ERROR ? wlua_run_error(run) : "-", want);
        fail();
    }
    wlua_run_destroy(run);
}

static inline void t_expect_error(const char *src, enum wye_err err, const char *want)
{
    struct wlua_state *st = t_default();
    t_expect_error_on(st, src, err, want);
    wlua_state_destroy(st);
}

/* Asserts that src returns the JSON text want. */
static inline void t_expect_result_on(struct wlua_state *st, const char *src, const char *args,
                                      const char *want)
{
    struct wlua_run *run = NULL;
    enum wlua_status s = t_run(st, src, args, &run);
    if (s != WLUA_DONE || strcmp(wlua_run_result(run), want) != 0) {
        print_error("script: %s\nstatus %d result %s error %s\nwant: %s\n", src, s,
                    s == WLUA_DONE ? wlua_run_result(run) : "-",
                    s == WLUA_ERROR ? wlua_run_error(run) : "-", want);
        fail();
    }
    wlua_run_destroy(run);
}

static inline void t_expect_result(const char *src, const char *want)
{
    struct wlua_state *st = t_default();
    t_expect_result_on(st, src, NULL, want);
    wlua_state_destroy(st);
}

/* Reads tests/lua/scripts/name into a static buffer. */
static inline const char *t_script(const char *name)
{
    static char buf[1 << 16];
    char path[512];
    snprintf(path, sizeof(path), "%s/tests/lua/scripts/%s", WYE_SOURCE_DIR, name);
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    return buf;
}

#endif
