/* `wye lua run FILE.lua [JSON-ARGS]`: the way users try scripts and tools out. The file runs on
 * the agents runtime (a runtime of one worker that loads only FILE, agent_rt_opts.only_file)
 * with the host API an agent run has: wye.chat through a router built from the options and the
 * config (like `wye agent run`), wye.http.request limited to --allow-host and the tool's or
 * workflow's allow_hosts, wye.emit and model calls printed to stderr as JSON lines, wye.sleep,
 * and ctx. A tool file calls one tool (arguments checked against its schema first), a workflow
 * file runs one workflow, and any other file is a plain script whose entry point gets the
 * arguments. The result goes to stdout as JSON; errors to stderr (exit 1; usage: exit 2).
 * Runs on the main thread; the runtime's worker, the router and the HTTP thread do the work. */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cjson/cJSON.h>

#include "common/alloc.h"
#include "common/buf.h"
#include "common/log.h"
#include "router/agent_host.h"

#define LC_FILE_MAX ((size_t)16 << 20)
#define LC_HOSTS_MAX 64

static void lc_usage(FILE *out)
{
    fprintf(out,
            "usage: wye lua run [OPTIONS] FILE.lua [JSON-ARGS]\n\n"
            "Runs FILE.lua in wye's Lua sandbox with the host API of an agent run (wye.json,\n"
            "wye.log, wye.now, wye.sleep, wye.emit, wye.http.request, wye.chat; docs/lua.md)\n"
            "and prints its result as JSON on stdout. Errors go to stderr with exit status 1;\n"
            "usage errors exit 2.\n\n"
            "What runs:\n"
            "  a tool file      the tool named by --tool (optional when FILE declares one):\n"
            "                   JSON-ARGS is checked against its parameters schema (a mismatch\n"
            "                   prints the error the model would get), then run(args, ctx)\n"
            "  a workflow file  the workflow named by --workflow (optional when FILE declares\n"
            "                   one), with JSON-ARGS as its input (text when it is not JSON)\n"
            "  a plain script   returns a function, or a table with a function 'main' (or\n"
            "                   defines a global function 'main'), called with JSON-ARGS decoded\n"
            "                   (nil if absent) and ctx\n"
            "print() goes to stderr, and so do events (wye.emit, ctx:emit, model calls) as JSON\n"
            "lines. Agents run with `wye agent run NAME INPUT --dir DIR`.\n\n"
            "options:\n"
            "  --tool NAME           the tool to call\n"
            "  --workflow NAME       the workflow to run\n"
            "  --allow-host HOST     a host wye.http.request may reach, besides the tool's or\n"
            "                        workflow's allow_hosts (repeatable; *.example.com, *)\n"
            "  --memory-mb N         memory cap of the Lua state (default 64)\n"
            "  --max-instructions N  Lua VM instructions per run (default 100000000)\n"
            "  --timeout-ms N        Lua execution time per run (default 10000; waiting for\n"
            "                        HTTP or a model does not count)\n"
            "  -c, --config FILE     the configuration (docs/config.md) of wye.chat's router\n"
            "  --upstream URL        a remote OpenAI-compatible API for wye.chat\n"
            "  --upstream-model M    the remote model\n"
            "  --model GGUF          the local model (default: chosen like `wye serve`)\n"
            "  --no-local            no local model: wye.chat uses only the remote one\n"
            "  --ledger PATH         record wye.chat's calls in this ledger (default: none)\n"
            "  --help                show this help\n");
}

static int lc_num(const char *opt, const char *s, long long max, long long *out)
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

static char *lc_read(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        char eb[128];
        fprintf(stderr, "wye lua: cannot open %s: %s\n", path, wye_strerror(errno, eb, sizeof(eb)));
        return NULL;
    }
    char *buf = wye_malloc(LC_FILE_MAX + 1);
    size_t n = buf ? fread(buf, 1, LC_FILE_MAX + 1, f) : 0;
    bool bad = ferror(f) != 0;
    fclose(f);
    if (!buf || bad || n > LC_FILE_MAX) {
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

/* ---- what the run prints, and its end ---- */

struct lc_wait {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    bool done;
    enum wye_err err;
    char *reason, *answer, *traceback;
};

static void lc_done(void *arg, const struct agent_outcome *o)
{
    struct lc_wait *w = arg;
    pthread_mutex_lock(&w->lock);
    w->err = o->err;
    w->reason = o->reason ? wye_strdup(o->reason) : NULL;
    w->answer = o->answer ? wye_strdup(o->answer) : NULL;
    w->traceback = o->traceback ? wye_strdup(o->traceback) : NULL;
    w->done = true;
    pthread_cond_signal(&w->cond);
    pthread_mutex_unlock(&w->lock);
}

static void lc_print(void *ud, const char *line, size_t len)
{
    (void)ud;
    fprintf(stderr, "%.*s\n", (int)len, line);
}

static void lc_event(void *ud, uint64_t run_id, const char *ev)
{
    (void)ud;
    (void)run_id;
    fprintf(stderr, "%s\n", ev);
}

static volatile sig_atomic_t lc_interrupted;

static void lc_on_sigint(int sig)
{
    (void)sig;
    lc_interrupted = 1;
}

/* Waits for the run's end; Ctrl-C cancels it (it then ends "cancelled"). */
static void lc_wait_done(struct lc_wait *w, struct agent_rt *art, uint64_t id)
{
    struct sigaction sa, old_sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = lc_on_sigint;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, &old_sa);
    bool cancel_sent = false;
    pthread_mutex_lock(&w->lock);
    while (!w->done) {
        struct timespec dl;
        clock_gettime(CLOCK_REALTIME, &dl);
        dl.tv_nsec += 100 * 1000000L;
        if (dl.tv_nsec >= 1000000000L) {
            dl.tv_sec++;
            dl.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&w->cond, &w->lock, &dl);
        if (lc_interrupted && !cancel_sent) {
            cancel_sent = true;
            agent_rt_cancel(art, id);
        }
    }
    pthread_mutex_unlock(&w->lock);
    sigaction(SIGINT, &old_sa, NULL);
}

/* ---- what FILE declares ---- */

struct lc_decls {
    cJSON *list;            /* agent_rt_list_json's object */
    const cJSON *tools;     /* [{"name",..}] */
    const cJSON *workflows; /* [{"name",..}] */
    const cJSON *agents;
    const cJSON *errors; /* ["file:line: message"] */
};

static bool lc_declares(const cJSON *arr, const char *name)
{
    const cJSON *e;
    cJSON_ArrayForEach(e, arr)
    {
        const cJSON *n = cJSON_GetObjectItemCaseSensitive(e, "name");
        if (cJSON_IsString(n) && strcmp(n->valuestring, name) == 0) {
            return true;
        }
    }
    return false;
}

/* "a, b" of the names in arr, into buf. */
static const char *lc_names(const cJSON *arr, char *buf, size_t len)
{
    size_t off = 0;
    buf[0] = '\0';
    const cJSON *e;
    cJSON_ArrayForEach(e, arr)
    {
        const cJSON *n = cJSON_GetObjectItemCaseSensitive(e, "name");
        int k = snprintf(buf + off, len - off, "%s%s", off ? ", " : "",
                         cJSON_IsString(n) ? n->valuestring : "?");
        if (k < 0 || (size_t)k >= len - off) {
            break;
        }
        off += (size_t)k;
    }
    return buf;
}

static void lc_print_errors(const struct lc_decls *d)
{
    const cJSON *e;
    cJSON_ArrayForEach(e, d->errors)
    {
        if (cJSON_IsString(e)) {
            fprintf(stderr, "wye lua: %s\n", e->valuestring);
        }
    }
}

/* Chooses what runs: *tool or *workflow (names borrowed from d or the options), or neither
 * (a plain script). 0, or the exit status of a usage error (printed). */
static int lc_choose(const struct lc_decls *d, const char *file, const char **tool,
                     const char **workflow)
{
    char names[512];
    if (*tool || *workflow) {
        const cJSON *arr = *tool ? d->tools : d->workflows;
        const char *name = *tool ? *tool : *workflow;
        if (lc_declares(arr, name)) {
            return 0;
        }
        lc_print_errors(d);
        fprintf(stderr, "wye lua: %s declares no %s '%s'%s%s%s\n", file,
                *tool ? "tool" : "workflow", name, cJSON_GetArraySize(arr) ? " (it has: " : "",
                lc_names(arr, names, sizeof(names)), cJSON_GetArraySize(arr) ? ")" : "");
        return cJSON_GetArraySize(d->errors) ? 1 : 2;
    }
    int n_tools = cJSON_GetArraySize(d->tools), n_wf = cJSON_GetArraySize(d->workflows);
    if (n_tools == 1 && n_wf == 0) {
        *tool =
            cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(d->tools, 0), "name")->valuestring;
    } else if (n_tools == 0 && n_wf == 1) {
        *workflow = cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(d->workflows, 0), "name")
                        ->valuestring;
    } else if (n_tools > 0) {
        fprintf(stderr, "wye lua: %s declares the tools %s: choose one with --tool NAME\n", file,
                lc_names(d->tools, names, sizeof(names)));
        return 2;
    } else if (n_wf > 0) {
        fprintf(stderr, "wye lua: %s declares the workflows %s: choose one with --workflow NAME\n",
                file, lc_names(d->workflows, names, sizeof(names)));
        return 2;
    } else if (cJSON_GetArraySize(d->agents) > 0) {
        fprintf(stderr,
                "wye lua: %s declares only agents (%s): run one with `wye agent run NAME INPUT "
                "--dir DIR`\n",
                file, lc_names(d->agents, names, sizeof(names)));
        return 2;
    }
    return 0;
}

/* ---- the router behind wye.chat ---- */

struct lc_host {
    struct conf_config *cfg;
    struct rt_cli_stack st;
};

static void lc_host_stop(struct lc_host *h)
{
    rt_cli_stack_stop(&h->st);
    conf_destroy(h->cfg);
}

/* Builds the router as `wye agent run` does; without any model wye.chat fails when called.
 * 0, or an exit status (the reason printed). */
static int lc_host_start(struct lc_host *h, const char *config, struct conf_overrides *ov,
                         bool no_local, const char *ledger_path)
{
    char eb[512] = "";
    if (conf_load(config, ov, &h->cfg, eb, sizeof(eb)) != WYE_OK) {
        fprintf(stderr, "wye lua: %s\n", eb[0] ? eb : "cannot load the configuration");
        return 2;
    }
    if (no_local && h->cfg->engine.model_path) {
        fprintf(stderr, "wye lua: --no-local contradicts a local model (--model, WYE_MODEL or "
                        "engine.model)\n");
        return 2;
    }
    if (!no_local && rt_cli_default_model("wye lua", config, ov, &h->cfg) != 0) {
        /* no model anywhere (said on stderr): scripts that never chat still run */
        if (!h->cfg && conf_load(config, ov, &h->cfg, eb, sizeof(eb)) != WYE_OK) {
            fprintf(stderr, "wye lua: %s\n", eb[0] ? eb : "cannot load the configuration");
            return 2;
        }
    }
    if (rt_cli_stack_start(&h->st, h->cfg, "wye lua", ledger_path, NULL) != 0) {
        return 1;
    }
    rt_agent_host_set_events(h->st.host, lc_event, NULL);
    return 0;
}

/* ---- run ---- */

struct lc_args {
    const char *file, *json; /* json: JSON-ARGS or NULL */
    const char *tool, *workflow;
    const char *hosts[LC_HOSTS_MAX];
    int n_hosts;
    long long mem_mb, insns, timeout_ms;
    const char *config, *ledger;
    struct conf_overrides ov;
    bool no_local;
};

/* Checks that JSON-ARGS is JSON (tools and scripts take decoded arguments). */
static bool lc_args_ok(const char *file, const char *json)
{
    const char *end = NULL;
    cJSON *v = cJSON_ParseWithOpts(json, &end, true);
    if (v) {
        cJSON_Delete(v);
        return true;
    }
    fprintf(stderr, "wye lua: %s: arguments: invalid JSON at byte %zu\n", file,
            end ? (size_t)(end - json) : (size_t)0);
    return false;
}

static int lc_run(struct lc_args *a)
{
    size_t len = 0;
    char *src = lc_read(a->file, &len);
    if (!src) {
        return 1;
    }
    char *dir = wye_strdup(a->file);
    char *slash = dir ? strrchr(dir, '/') : NULL;
    const char *base = slash ? slash + 1 : a->file;
    if (slash) {
        *slash = '\0';
    }
    struct wye_buf hosts;
    wye_buf_init(&hosts, 1 << 16);
    for (int i = 0; i < a->n_hosts; i++) {
        (void)wye_buf_printf(&hosts, "%s%s", i ? "," : "", a->hosts[i]);
    }
    if (wye_log_get_level() < WYE_LOG_ERROR && !getenv("WYE_LOG_LEVEL")) {
        wye_log_set_level(WYE_LOG_ERROR); /* stdout/stderr are the script's */
    }
    int rc = 1;
    struct lc_host h = {0};
    struct agent_rt *art = NULL;
    struct lc_wait w = {.done = false};
    struct lc_decls d = {0};
    char eb[1024] = "";
    pthread_mutex_init(&w.lock, NULL);
    pthread_cond_init(&w.cond, NULL);
    if (!dir) {
        fprintf(stderr, "wye lua: out of memory\n");
        goto out;
    }
    rc = lc_host_start(&h, a->config, &a->ov, a->no_local, a->ledger);
    if (rc) {
        goto out;
    }
    rc = 1;
    struct agent_rt_opts o = {
        .dir = slash ? (dir[0] ? dir : "/") : ".",
        .only_file = base,
        .allow_hosts = a->n_hosts ? hosts.data : NULL,
        .mem_bytes_max = (size_t)a->mem_mb << 20,
        .n_insns_max = a->insns,
        .timeout_ms = a->timeout_ms,
        .n_workers = 1,
        .print = lc_print,
    };
    struct agent_allow allow[CONF_ALLOW_MAX];
    rt_agent_opts_from_conf(h.cfg, &o, allow);
    o.n_workers = 1;
    if (agent_rt_create(&o, rt_agent_host_ops(), h.st.host, &art, eb, sizeof(eb)) != WYE_OK ||
        agent_rt_start(art) != WYE_OK) {
        fprintf(stderr, "wye lua: %s\n", eb[0] ? eb : "cannot start the agent runtime");
        goto out;
    }
    struct wye_buf lj;
    wye_buf_init(&lj, 1 << 22);
    d.list = agent_rt_list_json(art, &lj) == WYE_OK ? cJSON_Parse(lj.data) : NULL;
    wye_buf_cleanup(&lj);
    if (!d.list) {
        fprintf(stderr, "wye lua: out of memory\n");
        goto out;
    }
    d.tools = cJSON_GetObjectItemCaseSensitive(d.list, "tools");
    d.workflows = cJSON_GetObjectItemCaseSensitive(d.list, "workflows");
    d.agents = cJSON_GetObjectItemCaseSensitive(d.list, "agents");
    d.errors = cJSON_GetObjectItemCaseSensitive(d.list, "errors");
    int urc = lc_choose(&d, a->file, &a->tool, &a->workflow);
    if (urc) {
        rc = urc;
        goto out;
    }
    if (!a->workflow && a->json && !lc_args_ok(base, a->json)) {
        goto out;
    }
    uint64_t id = 0;
    enum wye_err err;
    if (a->workflow) {
        err = agent_rt_submit(art, a->workflow, a->json ? a->json : "", lc_done, &w, &id, eb,
                              sizeof(eb));
    } else {
        err = agent_rt_submit_call(art, a->tool, base, src, len, NULL, a->json, lc_done, &w, &id,
                                   eb, sizeof(eb));
    }
    if (err == WYE_ERR_INVAL && a->tool) {
        /* the arguments do not match the schema: what the model would be told */
        fprintf(stderr, "wye lua: error: %s\n", eb);
        goto out;
    }
    if (err) {
        fprintf(stderr, "wye lua: %s\n", eb);
        goto out;
    }
    lc_wait_done(&w, art, id);
    if (!w.err && w.answer) {
        printf("%s\n", w.answer);
        rc = fflush(stdout) == 0 ? 0 : 1;
    } else {
        const char *r = w.reason ? w.reason : wye_err_str(w.err);
        if (!a->tool && !a->workflow && strncmp(r, "error: ", 7) == 0) {
            r += 7; /* a script's error is its own message, as the sandbox gives it */
        }
        fprintf(stderr, "wye lua: %s\n", r);
        if (strstr(r, "(add it to allow_hosts)")) {
            fprintf(stderr, "wye lua: --allow-host HOST allows a host for this run\n");
        }
        if (w.traceback) {
            fprintf(stderr, "%s\n", w.traceback);
        }
    }
out:
    agent_rt_destroy(art);
    lc_host_stop(&h);
    cJSON_Delete(d.list);
    wye_free(w.reason);
    wye_free(w.answer);
    wye_free(w.traceback);
    pthread_mutex_destroy(&w.lock);
    pthread_cond_destroy(&w.cond);
    wye_buf_cleanup(&hosts);
    wye_free(dir);
    wye_free(src);
    return rc;
}

int rt_cli_lua(int argc, char **argv)
{
    struct lc_args a = {.mem_mb = 64, .insns = 100000000, .timeout_ms = 10000};
    const char *pos[3];
    int n_pos = 0;
    for (int i = 1; i < argc; i++) {
        const char *s = argv[i];
        const char **dst = NULL;
        const char *val = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(s, "--help") == 0 || strcmp(s, "-h") == 0) {
            lc_usage(stdout);
            return 0;
        } else if (strcmp(s, "--memory-mb") == 0) {
            if (lc_num(s, val, 1 << 20, &a.mem_mb)) {
                return 2;
            }
            i++;
            continue;
        } else if (strcmp(s, "--max-instructions") == 0) {
            if (lc_num(s, val, (long long)1 << 50, &a.insns)) {
                return 2;
            }
            i++;
            continue;
        } else if (strcmp(s, "--timeout-ms") == 0) {
            if (lc_num(s, val, 86400000LL, &a.timeout_ms)) {
                return 2;
            }
            i++;
            continue;
        } else if (strcmp(s, "--no-local") == 0) {
            a.no_local = true;
            continue;
        } else if (strcmp(s, "--allow-host") == 0) {
            if (a.n_hosts == LC_HOSTS_MAX) {
                fprintf(stderr, "wye lua: at most %d --allow-host options\n", LC_HOSTS_MAX);
                return 2;
            }
            if (val && (!val[0] || strpbrk(val, ", "))) {
                fprintf(stderr, "wye lua: --allow-host takes one host name (got '%s')\n", val);
                return 2;
            }
            dst = &a.hosts[a.n_hosts++];
        } else if (strcmp(s, "--tool") == 0) {
            dst = &a.tool;
        } else if (strcmp(s, "--workflow") == 0) {
            dst = &a.workflow;
        } else if (strcmp(s, "-c") == 0 || strcmp(s, "--config") == 0) {
            dst = &a.config;
        } else if (strcmp(s, "--upstream") == 0) {
            dst = &a.ov.upstream;
        } else if (strcmp(s, "--upstream-model") == 0) {
            dst = &a.ov.upstream_model;
        } else if (strcmp(s, "--model") == 0) {
            dst = &a.ov.model;
        } else if (strcmp(s, "--ledger") == 0) {
            dst = &a.ledger;
        } else if (s[0] == '-' && s[1] == '-') {
            fprintf(stderr, "wye lua: unknown option '%s'\n\n", s);
            lc_usage(stderr);
            return 2;
        } else if (n_pos < 3) {
            pos[n_pos++] = s;
            continue;
        } else {
            fprintf(stderr, "wye lua: too many arguments\n\n");
            lc_usage(stderr);
            return 2;
        }
        if (!val) {
            fprintf(stderr, "wye lua: %s needs a value\n", s);
            return 2;
        }
        *dst = val;
        i++;
    }
    if (n_pos < 2 || strcmp(pos[0], "run") != 0) {
        lc_usage(stderr);
        return 2;
    }
    if (a.tool && a.workflow) {
        fprintf(stderr, "wye lua: give --tool or --workflow, not both\n");
        return 2;
    }
    a.file = pos[1];
    a.json = n_pos > 2 ? pos[2] : NULL;
    return lc_run(&a);
}
