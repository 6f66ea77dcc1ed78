/* Internals of agents/: the registry of declarations, the Lua prelude that hosts every run,
 * and the runtime's runs, tasks (Lua coroutines) and pending host calls. */
#ifndef WYE_AGENTS_AGENT_INTERNAL_H
#define WYE_AGENTS_AGENT_INTERNAL_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "agents/agents.h"
#include <pthread.h>

#include "common/buf.h"
#include "common/queue.h"

/* Run ids per millisecond of wall clock at start-up (see agent_rt_create). */
#define AGENT_RUN_IDS_PER_MS 1000u

struct cJSON;
struct wlua_state;
struct wlua_run;

struct agent_file {
    char *name; /* "support.lua" (chunk name in messages) */
    char *src;
    size_t len;
};

struct agent_tool {
    char *name;
    char *description;
    char *parameters;  /* JSON Schema text ("{}" when none) */
    char *allow_hosts; /* comma-separated, or NULL */
    const struct agent_file *file;
};

struct agent_decl { /* an agent or a workflow */
    bool is_workflow;
    char *name;
    char *system; /* agents */
    char **tools; /* (n_tools) tool names, agents */
    size_t n_tools;
    char *model; /* "auto" */
    int max_steps;
    double max_cost_usd; /* <= 0: none */
    double timeout_s;    /* <= 0: none */
    char *allow_hosts;   /* comma-separated, or NULL */
    const struct agent_file *file;
};

/* Immutable once built; shared by the runs that started with it (refcounted). */
struct agent_registry {
    atomic_int refs;
    char *dir;
    struct agent_file *files; /* (n_files) the files that loaded */
    size_t n_files;
    struct agent_tool *tools;
    size_t n_tools;
    struct agent_decl *decls;
    size_t n_decls;
    char **errors; /* (n_errors) "file:line: message" */
    size_t n_errors;
};

/* Loads every *.lua in dir (sorted; only the file named only, when not NULL). NOTFOUND/IO when
 * dir cannot be read; bad files are only recorded in errors. prev (borrowed, may be NULL): the
 * registry being replaced; a file that fails to load keeps prev's version of it (recorded in
 * errors too). */
enum wye_err agent_registry_load(const char *dir, const char *only,
                                 const struct agent_registry *prev, struct agent_registry **out,
                                 char *errbuf, size_t errlen);
void agent_registry_ref(struct agent_registry *reg);
void agent_registry_unref(struct agent_registry *reg);
const struct agent_tool *agent_registry_tool(const struct agent_registry *reg, const char *name);
const struct agent_decl *agent_registry_decl(const struct agent_registry *reg, const char *name);

/* The prelude: the chunk every run executes. Its entry point takes {mode="declare"|"tool"|
 * "workflow", file, src, name, args|input, ctx} and loads the user's file inside the run. */
extern const char agent_prelude_lua[];
extern const size_t agent_prelude_len;

/* ---- the runtime (agent_run.c, agent_loop.c); worker thread only unless noted ---- */

struct agent_task;
struct agent_batch;

/* Where a host call's answer goes: a parked task, or one slot of a task's batch. */
struct agent_waiter {
    struct agent_task *task; /* NULL: the agent loop's own model call */
    struct agent_batch *batch;
    int slot;
};

enum agent_op_kind { AGENT_OP_STEP, AGENT_OP_CHAT, AGENT_OP_HTTP };

/* What arrives in the runtime's inbox. */
enum agent_msg_kind { AGENT_MSG_SUBMIT, AGENT_MSG_CANCEL, AGENT_MSG_CANCEL_ALL, AGENT_MSG_OP };

struct agent_msg {
    struct wye_qnode node;
    enum agent_msg_kind kind;
    uint64_t id;           /* CANCEL */
    struct agent_run *run; /* SUBMIT */
    struct agent_op *op;   /* OP */
};

struct agent_op {
    struct agent_msg msg;  /* in the runtime's inbox once answered */
    struct agent_run *run; /* holds a reference */
    struct agent_waiter w;
    enum agent_op_kind kind;
    int step;           /* STEP: the agent loop's step (set before the host sees op) */
    struct wye_buf dev; /* the host's thread: agent_op_delta's event scratch */
    /* the answer, copied by agent_op_*_done (host thread), read by the worker */
    enum wye_err err;
    char *message, *text, *tool_calls, *route, *model;
    enum agent_toolfmt format;
    int64_t prompt_tokens, completion_tokens;
    double cost_usd, saving_usd;
    long status;
    size_t body_len;
};

enum agent_task_kind { AGENT_TASK_TOOLCALL, AGENT_TASK_CHILD, AGENT_TASK_WORKFLOW };

struct agent_task {
    struct agent_task *next;       /* the run's live tasks */
    struct agent_task *ready_next; /* the runtime's ready list */
    struct agent_run *run;
    struct wlua_run *lr;
    enum agent_task_kind kind;
    int slot;                   /* TOOLCALL: index of the call in the step */
    struct agent_waiter parent; /* CHILD: where the result goes */
    int depth;                  /* ctx:tool nesting */
    const char *allow_hosts;    /* the tool's own allow_hosts (registry), or NULL */
    bool ready;
    char *res_json, *res_err; /* the answer to deliver on the next resume */
};

struct agent_worker;

/* A wye.sleep waiting on its run's worker. */
struct agent_sleep {
    struct agent_sleep *next;
    struct agent_waiter w;
    int64_t wake_ns;
};

struct agent_run {
    struct agent_run *next; /* the worker's active runs */
    atomic_int refs;        /* the worker + each pending op */
    atomic_bool ended;      /* read by hosts through agent_op_cancelled */
    struct agent_rt *rt;
    struct agent_worker *w; /* the worker running it (chosen at submit) */
    uint64_t id;
    struct agent_registry *reg;
    const struct agent_decl *decl;
    agent_done_fn done;
    void *done_arg;
    char *input;
    char *key_name;         /* the API key the run acts for, or NULL */
    struct cJSON *messages; /* agents: the conversation so far */
    char *tools_json;       /* agents: the OpenAI tools array */
    int n_steps;
    double cost_usd, saving_usd;
    int64_t prompt_tokens, completion_tokens;
    struct cJSON *model_calls; /* the calls array of struct agent_outcome */
    int64_t deadline_ns;       /* 0: none */
    struct agent_task *tasks;
    int n_calls, n_calls_left; /* agents: tool calls of the current step */
    char **results;            /* (n_calls) tool results of the current step */
    struct cJSON *calls;       /* the current step's tool calls */
    /* pending wye.sleep calls; a failed workflow task's Lua traceback (or NULL) */
    struct agent_sleep *sleeps;
    char *traceback;
    /* agent_rt_submit_call: decl is own (no registry entry); the task runs prelude mode
     * call_mode ("tool" / "script") of call_file, named call_name */
    struct agent_decl own;
    struct agent_file own_file;
    const char *call_mode;
    const struct agent_file *call_file;
    char *call_name;
    const char *call_hosts; /* the tool's allow_hosts (registry), or NULL */
};

/* One agent worker thread with its own sandbox state: runs are spread over the workers (the
 * least loaded at submit) and stay on theirs, so a run that spins or fills its state's memory
 * holds up or starves only the runs of its own worker. */
struct agent_worker {
    struct agent_rt *rt;
    int index;
    struct wye_queue inbox; /* struct agent_msg / answered agent_op */
    pthread_t thread;
    bool started;
    atomic_int n_runs;    /* runs submitted to it and not yet ended (its load) */
    atomic_long n_ops;    /* ops of its runs not yet freed */
    atomic_int n_posting; /* host threads inside op_post */
    atomic_uint_fast64_t cancel_id; /* the last run id agent_rt_cancel asked for (0: none):
                                     * the Lua hook stops that run even while it never yields */
    /* worker thread only */
    struct wlua_state *st;
    const struct agent_run *cur; /* the run whose Lua code executes now, or NULL */
    struct agent_run *runs;
    struct agent_run *dead; /* ended this iteration; unreferenced at its end, so code
                             * that ended a run deep in a dispatch may still read it */
    struct agent_task *ready, *ready_tail;
};

struct agent_rt {
    struct agent_host_ops ops;
    void *host;
    char *allow_hosts; /* from the options, or NULL */
    char **allow_names, **allow_lists; /* (n_allow) per agent or workflow, from the options */
    size_t n_allow;
    size_t http_max_bytes;
    size_t mem_bytes_max;
    int64_t n_insns_max;
    char *dir;
    char *only_file; /* or NULL */
    int64_t timeout_ms;
    void (*print)(void *ud, const char *line, size_t len);
    void *print_ud;
    pthread_mutex_t lock;
    struct agent_registry *reg;   /* guarded by lock */
    struct agent_worker *workers; /* (n_workers) */
    int n_workers;
    atomic_uint_fast64_t next_id; /* starts at the wall clock in ms x AGENT_RUN_IDS_PER_MS */
    atomic_bool stopping;
};

/* A ctx:all batch: n host calls whose answers resume the task together. */
struct agent_batch {
    struct agent_task *task;
    int n, left;           /* left: answers outstanding (+1 while the batch is being sent) */
    struct cJSON *results; /* (n) {"ok":..} / {"err":".."} */
};

/* agent_run.c */
void agent_run_unref(struct agent_run *run);
/* Puts t on the ready list with the answer to its pending call (json, or err). */
void agent_ready_push(struct agent_task *t, const char *json, const char *err);
/* Delivers an answer (JSON text) or an error to w (a task, or a batch slot). */
void agent_deliver(struct agent_waiter w, const char *json, const char *err);
void agent_batch_free(struct agent_batch *b);
/* One fewer answer outstanding; the last one resumes the task with the results array. */
void agent_batch_dec(struct agent_batch *b);
/* A worker thread's loop (arg: its struct agent_worker). */
void *agent_worker_main(void *arg);

/* agent_calls.c: answers or starts the host call a task yielded on. */
void agent_dispatch(struct agent_task *t, const char *name, const char *args_json);

void agent_run_end(struct agent_run *run, enum wye_err err, const char *reason, const char *answer);
void agent_run_emit(struct agent_run *run, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* Emits ev (consumed) as one event of at most AGENT_EVENT_MAX bytes: when longer, its string
 * member `cut` is shortened and "truncated":true added. */
void agent_run_emit_json(struct agent_run *run, struct cJSON *ev, const char *cut);
/* Accounts a model call's answer (op) to the run: sums, the calls list, a model_call event. */
void agent_run_account(struct agent_run *run, const struct agent_op *op);
struct agent_op *agent_op_new(struct agent_run *run, enum agent_op_kind kind,
                              struct agent_waiter w);
void agent_op_free(struct agent_op *op);
/* Validates and starts tool `name` as a task delivering to slot (TOOLCALL) or w (CHILD);
 * a refusal is delivered as an error at once. */
void agent_tool_start(struct agent_run *run, enum agent_task_kind kind, int slot,
                      struct agent_waiter w, int depth, const char *name, const char *args_json);

/* agent_loop.c */
/* Starts an agent run's first step. */
void agent_loop_start(struct agent_run *run);
/* The model answered the step (op is freed by the caller). */
void agent_loop_on_model(struct agent_run *run, struct agent_op *op);
/* A top-level tool call finished with text (the result, or "error: ..."). */
void agent_loop_on_tool(struct agent_run *run, int slot, const char *text);

#endif
