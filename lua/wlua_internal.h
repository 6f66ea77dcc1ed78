/* Internals shared by the sandbox's files (wlua_state.c, wlua_base.c, wlua_run.c,
 * wlua_json.c). Everything here runs on the thread that owns the state, except the cancel
 * flag, which any thread may set. */
#ifndef WYE_LUA_WLUA_INTERNAL_H
#define WYE_LUA_WLUA_INTERNAL_H

#include <stdatomic.h>
#include <stdbool.h>

#include <lauxlib.h>
#include <lua.h>

#include "common/buf.h"
#include "lua/lua_sandbox.h"

#define WLUA_MEM_DEFAULT ((size_t)64 << 20)
#define WLUA_INSNS_DEFAULT INT64_C(100000000)
#define WLUA_TIMEOUT_MS_DEFAULT INT64_C(10000)
#define WLUA_HOOK_EVERY_DEFAULT 1000
#define WLUA_JSON_DEPTH_MAX 100  /* nesting of arrays/objects, both ways */
#define WLUA_MSG_MAX 2048        /* error messages are cut here */
#define WLUA_PRINT_LINE_MAX 4096 /* one `print` line */
#define WLUA_MOVE_MAX (1 << 24)  /* elements one table.move may copy */

/* Registry keys (addresses of these are light userdata keys: no allocation to look up). */
extern const char wlua_key_libs;       /* table: library templates copied into each run */
extern const char wlua_key_json_array; /* the metatable marking a table as a JSON array */
extern const char wlua_json_null_tag;  /* &tag is wye.json.null (light userdata) */

struct wlua_state {
    lua_State *L;
    struct wlua_limits lim; /* defaults filled in */
    size_t mem_used;        /* bytes held by L */
    wlua_print_fn print;
    void *print_ud;
    bool (*interrupted)(void *ud); /* may be NULL (struct wlua_opts) */
    void *interrupted_ud;
    struct wlua_run *cur; /* the run executing now, or NULL */
    bool mem_refused;     /* the cap refused an allocation outside any run */
    int n_runs;           /* runs not yet destroyed */
};

struct wlua_run {
    struct wlua_state *st;
    lua_State *co; /* the run's coroutine (anchored by co_ref) */
    int co_ref;    /* registry refs, LUA_NOREF when unset */
    int env_ref;
    char name[128]; /* chunk name as shown in messages */
    enum wlua_status status;
    enum wye_err err;
    char *result;           /* DONE: JSON */
    char *errmsg;           /* ERROR: one line */
    char *traceback;        /* ERROR: may be NULL */
    char *pending_name;     /* YIELDED: host call name */
    char *pending_args;     /* YIELDED: its arguments (JSON array) */
    bool resume_error;      /* the pending call answers with an error string */
    int64_t n_hooks;        /* count-hook calls during this run */
    int64_t used_ns;        /* execution time of finished slices */
    int64_t slice_start_ns; /* when the current slice started */
    atomic_bool cancel;     /* any thread */
    enum wye_err tripped;   /* a hard limit fired (TOOBIG, LIMIT, TIMEOUT, CANCELED) */
    char trip_msg[160];     /* "instruction limit of 1000 exceeded" */
    char trip_where[160];   /* "x.lua:3:" where the hook first fired, or "" */
    char err_where[160];    /* "x.lua:3: " innermost Lua line of the error, or "" */
};

/* wlua_state.c */
struct wlua_state *wlua_state_of(lua_State *L);
/* Marks the current run as tripped by err (first trip wins) with a printf message. */
void wlua_trip(struct wlua_state *st, enum wye_err err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Restores the main thread's hook period (a tripped limit sets it to 1 instruction, and new
 * coroutines inherit the main thread's hook). */
void wlua_hook_reset(struct wlua_state *st);
/* Charges a hook period of C work (pattern matching) to the current run; raises the limit
 * error if a limit fires or already fired. */
void wlua_budget_tick(lua_State *L);
/* Raises the tripped run's error again if it is tripped; returns otherwise. */
void wlua_rethrow_if_tripped(lua_State *L);

/* wlua_base.c: installs the restricted base functions into the globals table at -1 and
 * wraps coroutine.resume/close in the coroutine table at -2... see the function. */
void wlua_base_open(lua_State *L, struct wlua_state *st);
/* Wraps string.rep and table.move (C loops the hook cannot interrupt) in the table at t. */
void wlua_string_wrap(lua_State *L, int t);
void wlua_table_wrap(lua_State *L, int t);
/* Wraps the coroutine library table at index t (resume, close, create, wrap). */
void wlua_coroutine_wrap(lua_State *L, int t);
/* Builds the `wye` module table and pushes it. */
void wlua_wye_open(lua_State *L);

/* wlua_pattern.c: replaces find/match/gmatch/gsub in the string table at t. */
void wlua_pattern_open(lua_State *L, int t);

/* wlua_json.c */
/* Appends the JSON of the value at idx to out; never raises. On error returns INVAL/TOOBIG
 * /NOMEM with a message in err. */
enum wye_err wlua_json_encode(lua_State *L, int idx, struct wye_buf *out, char *err, size_t errlen);
/* Parses text[0..len) and pushes the value (raises a Lua error on bad JSON or depth). */
void wlua_json_decode_push(lua_State *L, const char *text, size_t len);
/* Pushes the wye.json table. */
void wlua_json_open(lua_State *L);

/* wlua_run.c: the C function behind every yielding host call (upvalue 1: its name). */
int wlua_yielding_call(lua_State *L);

#endif
