/* wye's Lua 5.4 sandbox: a factory for locked-down lua_States and coroutine-based runs.
 *
 * A state (struct wlua_state) owns one lua_State with a hand-picked library set (base without
 * file access, string without dump, table, math, utf8, coroutine, and the `wye` module), a
 * memory cap enforced by its allocator, and a count hook enforcing per-run instruction and
 * execution-time budgets plus a cancel flag. A run (struct wlua_run) is one coroutine with its
 * own global table: it starts with a script and JSON arguments and ends DONE (a JSON result),
 * ERROR (a message naming the script and line), or YIELDED: a host function (registered with
 * wlua_state_add_yielding) is waiting for the host, which answers with wlua_run_resume.
 *
 * Threads: a state and its runs belong to one thread at a time (the agent worker owning them).
 * The only call allowed from other threads is wlua_run_cancel. */
#ifndef WYE_LUA_LUA_SANDBOX_H
#define WYE_LUA_LUA_SANDBOX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/err.h"

struct wlua_state;
struct wlua_run;

/* Receives one line of `print` output (len bytes, no newline, not NUL-terminated). */
typedef void (*wlua_print_fn)(void *ud, const char *line, size_t len);

struct wlua_limits {
    size_t mem_bytes_max; /* everything the lua_State allocates; 0: 64 MiB */
    int64_t n_insns_max;  /* Lua VM instructions per run; 0: 100 million */
    int64_t timeout_ms;   /* time a run may spend executing (not parked); 0: 10 s */
    int hook_every;       /* instructions between two hook checks; 0: 1000 */
};

struct wlua_opts {
    struct wlua_limits limits;
    wlua_print_fn print; /* NULL: `print` logs at info level */
    void *print_ud;
    /* May be NULL. Called by the count hook (the state's thread, every hook period while a
     * run executes): true cancels the executing run as wlua_run_cancel would. Lets a host
     * stop a run that never yields without knowing its struct wlua_run. */
    bool (*interrupted)(void *ud);
    void *interrupted_ud;
};

enum wlua_status {
    WLUA_DONE = 0, /* the run returned; wlua_run_result holds its JSON */
    WLUA_YIELDED,  /* waiting for the host: see wlua_run_pending, then wlua_run_resume */
    WLUA_ERROR,    /* failed; wlua_run_error holds the message, wlua_run_err the class */
};

/* Creates a sandboxed state. opts may be NULL (all defaults). Returns NULL on NOMEM. */
struct wlua_state *wlua_state_create(const struct wlua_opts *opts);
/* Closes the Lua state; every run of it must have been destroyed. NULL is a no-op. */
void wlua_state_destroy(struct wlua_state *st);
/* Bytes the Lua state currently holds. */
size_t wlua_state_mem_used(const struct wlua_state *st);

/* Registers wye.<name> (name may be dotted: "http.request") as a yielding host call: calling
 * it from a run encodes its arguments as a JSON array, parks the run (WLUA_YIELDED) and
 * returns the value the host later passes to wlua_run_resume. Replaces any earlier function
 * of that name (the placeholders "chat", "http.request", "emit" raise "not available in this
 * context" until registered). Affects runs started afterwards. INVAL for a bad name, NOMEM. */
enum wye_err wlua_state_add_yielding(struct wlua_state *st, const char *name);

/* Starts a run of the script src[0..len) named chunkname ("support.lua", used in messages).
 * The chunk is text only. It runs in a fresh global table and either returns a function (the
 * entry point), or a table holding the entry point under `entry` (NULL: "main"), or nothing,
 * in which case the global named `entry` (or "main") is the entry point. The entry point is
 * called with one argument: args_json decoded (NULL: nil). Always sets *out to a run the
 * caller destroys, except when even that allocation fails (then *out is NULL and the status
 * is WLUA_ERROR). */
enum wlua_status wlua_run_start(struct wlua_state *st, const char *chunkname, const char *src,
                                size_t len, const char *entry, const char *args_json,
                                struct wlua_run **out);
/* Resumes a YIELDED run: the pending host call returns result_json decoded (NULL: nil), or,
 * if error is non-NULL, raises error in the script as "wye.NAME: error" (catchable). */
enum wlua_status wlua_run_resume(struct wlua_run *run, const char *result_json, const char *error);
/* Any thread: the run fails with CANCELED at its next hook check or resume. */
void wlua_run_cancel(struct wlua_run *run);
/* Frees the run (its coroutine is released to the collector). NULL is a no-op. */
void wlua_run_destroy(struct wlua_run *run);

/* The current status. */
enum wlua_status wlua_run_status(const struct wlua_run *run);
/* DONE: the entry point's first result as compact JSON ("null" for nil); else NULL. */
const char *wlua_run_result(const struct wlua_run *run);
/* ERROR: a one-line message ("support.lua:12: attempt to index a nil value (field 'order')"
 * or "support.lua:3: memory limit of 64 MiB exceeded"); NULL run: "out of memory". */
const char *wlua_run_error(const struct wlua_run *run);
/* ERROR: the Lua stack traceback at the error ("" if none). */
const char *wlua_run_traceback(const struct wlua_run *run);
/* ERROR: PARSE (syntax), TOOBIG (memory limit), LIMIT (instruction limit), TIMEOUT,
 * CANCELED, NOMEM (host allocation), INVAL (runtime error or bad entry point/arguments). */
enum wye_err wlua_run_err(const struct wlua_run *run);
/* YIELDED: the host call's name ("await", "http.request") and its arguments as a JSON array;
 * both borrowed until the next resume or destroy. */
void wlua_run_pending(const struct wlua_run *run, const char **name, const char **args_json);

#endif
