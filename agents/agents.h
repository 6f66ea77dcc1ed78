/* Lua agents, tools and workflows: a registry loaded from a directory of Lua files and a
 * runtime that runs them as coroutines on a few agent worker threads (each with its own Lua
 * state; a run stays on the least loaded worker it was given).
 *
 * A file declares `tool { name, description, parameters, run }`, `agent { name, system, tools,
 * model, max_steps, max_cost_usd, timeout_s, allow_hosts }` and `workflow("name", fn)`. An agent
 * run calls the model (through the host's chat op), runs the tools it asks for (each a sandboxed
 * coroutine; several at once when they wait on I/O), feeds the results back and repeats until a
 * final answer or a limit. A workflow run is a Lua function driving ctx:chat / ctx:tool / ctx:all.
 *
 * The module never includes the router: model calls and HTTP go through struct agent_host_ops,
 * which are asynchronous. The host answers each call exactly once with agent_op_chat_done /
 * agent_op_http_done, from any thread; the answer is queued and the worker resumes the run.
 * Threads: agent_rt_* and agent_op_* may be called from any thread; the host ops are called on
 * the run's agent worker thread and must not block. */
#ifndef WYE_AGENTS_AGENTS_H
#define WYE_AGENTS_AGENTS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"
#include "common/err.h"

struct agent_rt;
struct agent_op; /* one pending host call; the host borrows it until it answers */

/* How a model's answer carries tool calls. */
enum agent_toolfmt {
    AGENT_TOOLFMT_OPENAI = 0, /* tool_calls deltas (remote, OpenAI-compatible) */
    AGENT_TOOLFMT_HERMES,     /* <tool_call>{"name":..,"arguments":{..}}</tool_call> (Qwen2.5) */
    AGENT_TOOLFMT_LLAMA3,     /* {"name":..,"parameters":{..}}, maybe after <|python_tag|> */
};

struct agent_chat_call {
    uint64_t run_id;
    const char *agent;                /* agent or workflow name */
    const char *model;                /* "auto", or a model name */
    const char *messages_json;        /* OpenAI messages array (tool_calls, role "tool" included) */
    const char *tools_json;           /* OpenAI tools array, or NULL */
    const char *response_format_json; /* OpenAI response_format object, or NULL */
    const char *key_name;             /* the API key the run was started with, or NULL */
    int max_tokens;                   /* 0: the backend's default */
};

struct agent_chat_result {
    enum wye_err err;          /* OK, or why the call failed */
    const char *message;       /* with err: what went wrong */
    const char *text;          /* the answer text ("" if none) */
    const char *tool_calls;    /* OpenAI tool_calls delta arrays, concatenated as received
                                * (one JSON array per delta, in order), or NULL */
    enum agent_toolfmt format; /* how to read tool calls from this answer */
    const char *route;         /* "local" / "remote" (may be NULL) */
    const char *model;         /* the model that answered (may be NULL) */
    int64_t prompt_tokens, completion_tokens;
    double cost_usd;   /* the host's price of this call */
    double saving_usd; /* what answering remotely would have cost, minus cost_usd */
};

struct agent_http_req {
    uint64_t run_id;
    const char *method;         /* "GET", "POST", ... */
    const char *url;            /* http(s); its host was checked against the run's allowlist */
    const char *const *headers; /* "Name: value" lines, n_headers of them */
    size_t n_headers;
    const char *body; /* may be NULL */
    size_t body_len;
    int timeout_ms;
    size_t max_bytes; /* response body cap: larger answers fail with TOOBIG */
};

struct agent_http_result {
    enum wye_err err;    /* OK (any HTTP status), or a transport failure */
    const char *message; /* with err */
    long status;
    const char *body;
    size_t body_len;
};

struct agent_host_ops {
    /* Starts a model call; answer with agent_op_chat_done. Not OK: the call failed at once
     * (op not kept; errbuf says why). */
    enum wye_err (*chat)(void *ctx, const struct agent_chat_call *call, struct agent_op *op,
                         char *errbuf, size_t errlen);
    /* Starts an HTTP request; answer with agent_op_http_done. NULL: http is unavailable. */
    enum wye_err (*http)(void *ctx, const struct agent_http_req *req, struct agent_op *op,
                         char *errbuf, size_t errlen);
    /* A progress event (JSON object text) of a run; may be NULL. Called on the run's worker,
     * except "delta" events, which come from the thread calling agent_op_delta. */
    void (*emit)(void *ctx, uint64_t run_id, const char *event_json);
};

/* Host side, any thread: the answer to op (copied; op is gone after the call). */
void agent_op_chat_done(struct agent_op *op, const struct agent_chat_result *res);
void agent_op_http_done(struct agent_op *op, const struct agent_http_result *res);
/* Host side, the thread answering op, before the answer: a piece of a model call's answer text
 * as it arrives. For a call of the agent loop the runtime passes it on at once (through emit,
 * on the calling thread) as {"type":"delta","run_id":N,"step":S,"delta":"..."} (pieces longer
 * than 8 KiB become several events); other calls ignore it. No allocation after the first. */
void agent_op_delta(struct agent_op *op, const char *text, size_t len);
/* Host side, any thread, until the answer: true once the run was cancelled or ended. */
bool agent_op_cancelled(const struct agent_op *op);

/* Hosts one agent or workflow may reach (the config's agents.allow_hosts). */
struct agent_allow {
    const char *name;  /* an agent or workflow name */
    const char *hosts; /* comma-separated host patterns ("api.example.com", "*.example.com") */
};

struct agent_rt_opts {
    const char *dir;         /* the directory of *.lua files; NULL: "./lua/examples" */
    const char *allow_hosts; /* comma-separated hosts every run may reach, or NULL */
    const struct agent_allow *allow; /* (n_allow) per agent or workflow, added to its own */
    size_t n_allow;
    size_t http_max_bytes;   /* response cap of wye.http.request; 0: 1 MiB */
    size_t mem_bytes_max;    /* Lua memory of each worker's state; 0: 64 MiB */
    int64_t n_insns_max;     /* Lua instructions per coroutine; 0: 100 million */
    int n_workers;           /* worker threads, each with its own Lua state; 0: the
                              * WYE_AGENT_WORKERS variable, else AGENT_WORKERS_DEFAULT */
    const char *only_file;   /* load only this file name of dir (`wye lua run`), or NULL */
    int64_t timeout_ms;      /* Lua execution time per coroutine; 0: 10 s */
    /* print() of the runs (worker thread); NULL: the log at info level */
    void (*print)(void *ud, const char *line, size_t len);
    void *print_ud;
};
#define AGENT_WORKERS_DEFAULT 2
#define AGENT_WORKERS_MAX 64

/* The end of a run, given once to the submitter's callback (on its worker thread). */
struct agent_outcome {
    uint64_t run_id;
    enum wye_err err;   /* OK: answer holds the result */
    const char *reason; /* NULL on success; "stopped: max_steps (8) reached", "cancelled", ... */
    const char *answer; /* agent: the final text; workflow: its result as JSON; NULL on error */
    int n_steps;        /* agent loop steps (an agent's model calls) */
    double cost_usd;    /* the sum of the calls' cost_usd */
    double saving_usd;  /* the sum of the calls' saving_usd */
    int64_t prompt_tokens, completion_tokens; /* summed over the calls */
    /* every model call of the run (the agent loop's and ctx:chat's), in order, as a JSON array
     * [{"route":"local|remote","model":..,"prompt_tokens":..,"completion_tokens":..,
     *   "cost_usd":..,"saving_usd":..}, ...] (at most AGENT_CALLS_MAX entries; the sums above
     * count every call); never NULL */
    const char *calls_json;
    const char *traceback; /* a failed workflow/script/tool call's Lua traceback, or NULL */
};
#define AGENT_CALLS_MAX 1000
/* A progress event is at most this long: a longer tool_call's arguments or tool_result's
 * result string is cut (on a UTF-8 boundary) and the event gets "truncated":true. */
#define AGENT_EVENT_MAX ((size_t)64 << 10)
typedef void (*agent_done_fn)(void *arg, const struct agent_outcome *out);

/* Loads opts->dir and creates a runtime (worker not started). Files that fail to load are
 * logged and listed by agent_rt_list_json; only a missing directory or NOMEM fails. */
enum wye_err agent_rt_create(const struct agent_rt_opts *opts, const struct agent_host_ops *ops,
                             void *host_ctx, struct agent_rt **out, char *errbuf, size_t errlen);
/* Starts the worker threads. */
enum wye_err agent_rt_start(struct agent_rt *rt);
/* Cancels every run, waits for the host to answer what is pending, joins the worker, frees.
 * NULL is a no-op. */
void agent_rt_destroy(struct agent_rt *rt);
/* Loads the directory again and swaps the registry in; runs in flight keep the old one. A file
 * that fails to load is logged and listed under "errors", and its previous version (tools,
 * agents, workflows) keeps serving. */
enum wye_err agent_rt_reload(struct agent_rt *rt, char *errbuf, size_t errlen);
/* Appends {"agents":[..],"tools":[..],"workflows":[..],"errors":["file:line: msg"]}. */
enum wye_err agent_rt_list_json(struct agent_rt *rt, struct wye_buf *out);

/* Starts agent or workflow `name` with input (an agent's user message; a workflow's input as
 * JSON text, or plain text passed as a string). done is called once, on the run's worker.
 * NOTFOUND: no such agent or workflow (errbuf says so). */
enum wye_err agent_rt_submit(struct agent_rt *rt, const char *name, const char *input,
                             agent_done_fn done, void *arg, uint64_t *run_id, char *errbuf,
                             size_t errlen);
/* As agent_rt_submit, on behalf of API key key_name (copied; NULL: none): every model call of
 * the run carries it (agent_chat_call.key_name), so the key's routes, budgets and ledger
 * attribution apply to the run as to the key's chats. */
enum wye_err agent_rt_submit_as(struct agent_rt *rt, const char *key_name, const char *name,
                                const char *input, agent_done_fn done, void *arg, uint64_t *run_id,
                                char *errbuf, size_t errlen);
/* Runs one call of the file opts->only_file outside any agent (`wye lua run`), with the host
 * API of a workflow run (wye.chat, wye.http.request, wye.emit, wye.sleep, ctx). A tool: args_json
 * is checked against its schema first (INVAL with the model's text, "argument 'x' must be a
 * string", in errbuf), then run(args, ctx)'s result is the answer. A script (tool NULL):
 * src[0..len) named chunkname (copied) runs as wlua_run_start would run it, its entry point
 * (entry, NULL: "main") called with (args, ctx). done and run_id as agent_rt_submit. */
enum wye_err agent_rt_submit_call(struct agent_rt *rt, const char *tool, const char *chunkname,
                                  const char *src, size_t len, const char *entry,
                                  const char *args_json, agent_done_fn done, void *arg,
                                  uint64_t *run_id, char *errbuf, size_t errlen);
/* Cancels a run (any thread): it ends promptly with reason "cancelled". Unknown ids: no-op. */
void agent_rt_cancel(struct agent_rt *rt, uint64_t run_id);

/* ---- tool calls and schemas (pure functions, any thread) ---- */

/* Checks args_json against a JSON Schema subset (type, properties, required, enum, items,
 * minimum/maximum, minLength/maxLength, minItems/maxItems, additionalProperties). OK, or
 * INVAL with "argument 'order_id' must be a string" in errbuf (PARSE if args is not JSON). */
enum wye_err agent_schema_check(const char *schema_json, const char *args_json, char *errbuf,
                                size_t errlen);
/* Extracts tool calls from a local model's text in format fmt into an OpenAI-style array
 * [{"id":..,"type":"function","function":{"name":..,"arguments":"{..}"}}] (*calls_json, malloc'd
 * with wye_malloc; NULL when the text has no tool call) and the text outside them (*content,
 * malloc'd). PARSE with errbuf naming the problem for a malformed call. */
enum wye_err agent_toolparse(enum agent_toolfmt fmt, const char *text, char **calls_json,
                             char **content, char *errbuf, size_t errlen);
/* Rewrites an OpenAI messages array for a local model that calls tools in text format fmt
 * (HERMES or LLAMA3): the tools' signatures and the calling convention are appended to the
 * system message (one is added if needed), assistant tool_calls become the model's own call
 * text, and role "tool" results become user messages (<tool_response> blocks for Hermes).
 * *out is malloc'd (wye_malloc). INVAL/PARSE for malformed input. */
enum wye_err agent_toolfmt_render(enum agent_toolfmt fmt, const char *messages_json,
                                  const char *tools_json, char **out, char *errbuf, size_t errlen);
/* Assembles OpenAI tool_calls delta arrays (concatenated JSON arrays) by index into the same
 * array form as agent_toolparse. PARSE on malformed deltas. */
enum wye_err agent_toolcalls_assemble(const char *deltas, char **calls_json, char *errbuf,
                                      size_t errlen);

#endif
