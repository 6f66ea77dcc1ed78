/* `wye agent`: lists the agents, tools and workflows of a directory, or runs one end to end
 * through the real router (remote upstream and/or local model from the config and WYE_*
 * variables; the local model chosen like `wye serve` does, rt_cli_default_model), streaming
 * its steps to stderr and printing the answer to stdout. Its model calls are recorded in the
 * ledger (ledger.path, like `wye serve`) unless --no-ledger.
 * Runs on the main thread; the runtime, router and HTTP threads do the work. */
#include <dirent.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "common/alloc.h"
#include "common/buf.h"
#include "common/log.h"
#include "router/agent_host.h"
#include "router/ledger.h"
#include "router/local.h"
#include "router/router.h"

static void usage(FILE *out)
{
    fprintf(out, "usage: wye agent list [--dir DIR]\n"
                 "       wye agent run NAME INPUT [--dir DIR] [-c CONF] [--json]\n"
                 "                 [--upstream URL] [--upstream-model NAME]\n"
                 "                 [--model GGUF | --no-local]\n"
                 "                 [--ledger PATH | --no-ledger]\n\n"
                 "Agents, tools and workflows are Lua files in DIR (default ./lua/examples).\n"
                 "run streams the steps to stderr and prints the final answer (a workflow's\n"
                 "result) to stdout; --json prints {\"answer\",\"steps\",\"tokens\",\"cost_usd\",\n"
                 "\"saving_usd\",\"calls\"}. Model calls go to the ledger (ledger.path, default\n"
                 "wye-ledger.jsonl) unless --no-ledger. The local model is chosen like\n"
                 "`wye serve` does (--model, WYE_MODEL, engine.model, the first models/*.gguf,\n"
                 "else the tiny test model); --no-local uses only the remote one.\n");
}

struct cli_wait {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    bool done;
    enum wye_err err;
    char *reason, *answer;
    int n_steps;
    double cost, saving;
    int64_t prompt_tokens, completion_tokens;
    char *calls_json;
};

static void cli_done(void *arg, const struct agent_outcome *o)
{
    struct cli_wait *w = arg;
    pthread_mutex_lock(&w->lock);
    w->err = o->err;
    w->reason = o->reason ? wye_strdup(o->reason) : NULL;
    w->answer = o->answer ? wye_strdup(o->answer) : NULL;
    w->n_steps = o->n_steps;
    w->cost = o->cost_usd;
    w->saving = o->saving_usd;
    w->prompt_tokens = o->prompt_tokens;
    w->completion_tokens = o->completion_tokens;
    w->calls_json = o->calls_json ? wye_strdup(o->calls_json) : NULL;
    w->done = true;
    pthread_cond_signal(&w->cond);
    pthread_mutex_unlock(&w->lock);
}

static volatile sig_atomic_t cli_interrupted;

static void cli_on_sigint(int sig)
{
    (void)sig;
    cli_interrupted = 1;
}

static void cli_event(void *ud, uint64_t run_id, const char *ev)
{
    (void)ud;
    if (strncmp(ev, "{\"type\":\"delta\",", 16) == 0) {
        return; /* a piece of the answer text per token: the answer is printed at the end */
    }
    fprintf(stderr, "[run %llu] %s\n", (unsigned long long)run_id, ev);
}

/* ---- the router stack a CLI runs agents on ---- */

int rt_cli_stack_start(struct rt_cli_stack *s, const struct conf_config *cfg, const char *prog,
                       const char *ledger_path, const char *ledger_hint)
{
    char eb[512] = "";
    if (cfg->engine.model_path &&
        (rt_local_create(cfg, &s->local, eb, sizeof(eb)) != WYE_OK || rt_local_start(s->local))) {
        fprintf(stderr, "%s: %s\n", prog, eb[0] ? eb : "cannot start the local model");
        return -1;
    }
    if (ledger_path &&
        rt_ledger_open_conf(cfg, ledger_path, &s->ledger, eb, sizeof(eb)) != WYE_OK) {
        fprintf(stderr, "%s: cannot open the ledger '%s': %s%s\n", prog, ledger_path, eb,
                ledger_hint ? ledger_hint : "");
        return -1;
    }
    s->rt = rt_router_create(cfg);
    if (!s->rt) {
        fprintf(stderr, "%s: cannot create the router\n", prog);
        return -1;
    }
    rt_router_set_local(s->rt, s->local);
    rt_router_set_ledger(s->rt, s->ledger);
    if (rt_router_start(s->rt) != WYE_OK) {
        fprintf(stderr, "%s: cannot start the router\n", prog);
        return -1;
    }
    s->host = rt_agent_host_create(s->rt, cfg);
    if (!s->host) {
        fprintf(stderr, "%s: cannot start the agent host\n", prog);
        return -1;
    }
    return 0;
}

void rt_cli_stack_stop(struct rt_cli_stack *s)
{
    rt_agent_host_destroy(s->host);
    rt_router_stop(s->rt);
    rt_local_stop(s->local);
    rt_router_destroy(s->rt);
    rt_local_destroy(s->local);
    rt_ledger_close(s->ledger);
    *s = (struct rt_cli_stack){0};
}

/* ---- the default local model, as `wye serve` chooses it ---- */

int rt_cli_default_model(const char *prog, const char *config, struct conf_overrides *ov,
                         struct conf_config **cfg)
{
    static char path[4096]; /* main thread only; conf_load copies it */
    const char *why = NULL;
    if ((*cfg)->engine.model_path) {
        why = ov->model             ? "--model"
              : getenv("WYE_MODEL") ? "WYE_MODEL"
                                    : "engine.model in the config file";
        WYE_INFO("%s: local model %s (from %s)", prog, (*cfg)->engine.model_path, why);
        return 0;
    }
    struct dirent **ents = NULL;
    int n = scandir("models", &ents, NULL, alphasort);
    for (int i = 0; i < n; i++) {
        size_t len = strlen(ents[i]->d_name);
        struct stat st;
        char cand[sizeof(path)];
        snprintf(cand, sizeof(cand), "models/%s", ents[i]->d_name);
        if (!why && len > 5 && strcmp(ents[i]->d_name + len - 5, ".gguf") == 0 &&
            stat(cand, &st) == 0 && S_ISREG(st.st_mode)) {
            snprintf(path, sizeof(path), "%s", cand);
            why = "the first *.gguf in ./models/";
        }
        free(ents[i]);
    }
    free(ents);
    const char *rel = "../shared/models/stories260K-q8_0.gguf";
    if (!why && access(rel, R_OK) == 0) {
        snprintf(path, sizeof(path), "%s", rel);
        why = "the test model beside the working directory";
    }
    if (!why) {
        /* the source tree holding this binary's build directory: its ../shared */
        char dir[sizeof(path)];
        ssize_t k = readlink("/proc/self/exe", dir, sizeof(dir) - 1);
        dir[k > 0 ? k : 0] = '\0';
        for (char *slash = strrchr(dir, '/'); !why && slash && slash != dir;
             slash = strrchr(dir, '/')) {
            *slash = '\0';
            char probe[sizeof(path) + 64];
            snprintf(probe, sizeof(probe), "%s/gateway/gw_serve.c", dir);
            if (access(probe, R_OK) == 0) {
                int len = snprintf(probe, sizeof(probe), "%s/%s", dir, rel);
                if (len > 0 && (size_t)len < sizeof(path) && access(probe, R_OK) == 0) {
                    memcpy(path, probe, (size_t)len + 1);
                    why = "the test model beside the source tree";
                }
                break;
            }
        }
    }
    if (!why) {
        if ((*cfg)->upstream.base_url) {
            WYE_INFO("%s: no local model (none given, none in ./models/); remote only", prog);
            return 0;
        }
        fprintf(stderr,
                "%s: no model to serve: give a local GGUF model with --model PATH, "
                "WYE_MODEL or engine.model in the config, or put one in ./models/ "
                "(bash deploy/download-model.sh), and/or a remote API with --upstream URL "
                "--upstream-model NAME\n",
                prog);
        conf_destroy(*cfg);
        *cfg = NULL;
        return -1;
    }
    ov->model = path;
    char err[512] = "";
    conf_destroy(*cfg);
    *cfg = NULL;
    if (conf_load(config, ov, cfg, err, sizeof(err)) != WYE_OK) {
        fprintf(stderr, "%s: %s\n", prog, err[0] ? err : "cannot load the configuration");
        return -1;
    }
    WYE_INFO("%s: local model %s (%s)", prog, path, why);
    if (strstr(why, "test model")) {
        WYE_WARN("%s: that is a tiny test model; deploy/download-model.sh gets a real one", prog);
    }
    return 0;
}

static int cli_list(const char *dir)
{
    char eb[512];
    struct agent_rt *art = NULL;
    struct agent_rt_opts o = {.dir = dir};
    if (agent_rt_create(&o, rt_agent_host_ops(), NULL, &art, eb, sizeof(eb)) != WYE_OK) {
        fprintf(stderr, "wye agent: %s\n", eb);
        return 1;
    }
    struct wye_buf b;
    wye_buf_init(&b, 1 << 22);
    int rc = 1;
    if (agent_rt_list_json(art, &b) == WYE_OK) {
        cJSON *j = cJSON_Parse(b.data);
        const char *kinds[] = {"agents", "workflows", "tools"};
        for (int k = 0; j && k < 3; k++) {
            const cJSON *e;
            printf("%s:\n", kinds[k]);
            cJSON_ArrayForEach(e, cJSON_GetObjectItemCaseSensitive(j, kinds[k]))
            {
                const cJSON *nm = cJSON_GetObjectItemCaseSensitive(e, "name");
                const cJSON *f = cJSON_GetObjectItemCaseSensitive(e, "file");
                const cJSON *ds = cJSON_GetObjectItemCaseSensitive(e, "description");
                printf("  %-20s %s%s%s\n", nm->valuestring, f->valuestring,
                       cJSON_IsString(ds) && ds->valuestring[0] ? "  " : "",
                       cJSON_IsString(ds) ? ds->valuestring : "");
            }
        }
        const cJSON *e;
        cJSON_ArrayForEach(e, cJSON_GetObjectItemCaseSensitive(j, "errors"))
        {
            fprintf(stderr, "wye agent: %s\n", e->valuestring);
        }
        cJSON_Delete(j);
        rc = 0;
    }
    wye_buf_cleanup(&b);
    agent_rt_destroy(art);
    return rc;
}

static int cli_run(const char *dir, const char *config, struct conf_overrides *ov, const char *name,
                   const char *input, bool json, bool no_ledger, bool no_local)
{
    char eb[512] = "";
    struct conf_config *cfg = NULL;
    if (conf_load(config, ov, &cfg, eb, sizeof(eb)) != WYE_OK) {
        fprintf(stderr, "wye agent: %s\n", eb[0] ? eb : "cannot load the configuration");
        return 2;
    }
    wye_log_set_level(cfg->log_level);
    if (no_local && cfg->engine.model_path) {
        fprintf(stderr, "wye agent: --no-local contradicts a local model (--model, WYE_MODEL or "
                        "engine.model)\n");
        conf_destroy(cfg);
        return 2;
    }
    if (!no_local && rt_cli_default_model("wye agent", config, ov, &cfg) != 0) {
        return 2;
    }
    if (!cfg->upstream.base_url && !cfg->engine.model_path) {
        fprintf(stderr, "wye agent: no model: configure upstream.base_url (--upstream) and/or "
                        "engine.model (--model)\n");
        conf_destroy(cfg);
        return 2;
    }
    int rc = 1;
    struct rt_cli_stack st = {0};
    struct agent_rt *art = NULL;
    struct cli_wait w = {.done = false};
    pthread_mutex_init(&w.lock, NULL);
    pthread_cond_init(&w.cond, NULL);
    const char *lp = no_ledger ? NULL : cfg->ledger_path ? cfg->ledger_path : RT_LEDGER_DEFAULT_PATH;
    if (rt_cli_stack_start(&st, cfg, "wye agent", lp, " (--no-ledger skips it)") != 0) {
        goto out;
    }
    rt_agent_host_set_events(st.host, cli_event, NULL);
    struct agent_rt_opts o = {.dir = dir};
    struct agent_allow allow[CONF_ALLOW_MAX];
    rt_agent_opts_from_conf(cfg, &o, allow);
    if (agent_rt_create(&o, rt_agent_host_ops(), st.host, &art, eb, sizeof(eb)) != WYE_OK ||
        agent_rt_start(art) != WYE_OK) {
        fprintf(stderr, "wye agent: %s\n", eb);
        goto out;
    }
    uint64_t id = 0;
    if (agent_rt_submit(art, name, input, cli_done, &w, &id, eb, sizeof(eb)) != WYE_OK) {
        fprintf(stderr, "wye agent: %s\n", eb);
        goto out;
    }
    /* Ctrl-C cancels the run (its HTTP transfers and model calls stop); the run then ends
     * "cancelled" and everything is torn down normally */
    struct sigaction sa, old_sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = cli_on_sigint;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, &old_sa);
    bool cancel_sent = false;
    pthread_mutex_lock(&w.lock);
    while (!w.done) {
        struct timespec dl;
        clock_gettime(CLOCK_REALTIME, &dl);
        dl.tv_nsec += 100 * 1000000L;
        if (dl.tv_nsec >= 1000000000L) {
            dl.tv_sec++;
            dl.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&w.cond, &w.lock, &dl);
        if (cli_interrupted && !cancel_sent) {
            cancel_sent = true;
            agent_rt_cancel(art, id);
        }
    }
    pthread_mutex_unlock(&w.lock);
    sigaction(SIGINT, &old_sa, NULL);
    if (json) {
        cJSON *j = cJSON_CreateObject();
        cJSON_AddStringToObject(j, "name", name);
        if (w.answer) {
            cJSON *a = cJSON_Parse(w.answer);
            cJSON_AddItemToObject(j, "answer", a ? a : cJSON_CreateString(w.answer));
        }
        if (w.reason) {
            cJSON_AddStringToObject(j, "stopped", w.reason);
        }
        cJSON_AddNumberToObject(j, "steps", w.n_steps);
        cJSON *tok = cJSON_AddObjectToObject(j, "tokens");
        cJSON_AddNumberToObject(tok, "prompt", (double)w.prompt_tokens);
        cJSON_AddNumberToObject(tok, "completion", (double)w.completion_tokens);
        cJSON_AddNumberToObject(j, "cost_usd", w.cost);
        cJSON_AddNumberToObject(j, "saving_usd", w.saving);
        cJSON *calls = cJSON_Parse(w.calls_json ? w.calls_json : "[]");
        cJSON_AddItemToObject(j, "calls", calls ? calls : cJSON_CreateArray());
        char *s = cJSON_PrintUnformatted(j);
        printf("%s\n", s ? s : "{}");
        cJSON_free(s);
        cJSON_Delete(j);
    } else if (w.answer) {
        cJSON *a = cJSON_Parse(w.answer);
        printf("%s\n", cJSON_IsString(a) ? a->valuestring : w.answer);
        cJSON_Delete(a);
    }
    if (w.err) {
        fprintf(stderr, "wye agent: %s\n", w.reason ? w.reason : wye_err_str(w.err));
        if (w.reason && strstr(w.reason, "context length") && !cfg->upstream.base_url) {
            fprintf(stderr,
                    "wye agent: the local model %s is too small for this agent's tool "
                    "prompt: give a real model (--model PATH; bash "
                    "deploy/download-model.sh gets one) or a remote API (--upstream URL "
                    "--upstream-model NAME)\n",
                    cfg->engine.model_path);
        }
    }
    rc = w.err ? 1 : 0;
out:
    agent_rt_destroy(art);
    rt_cli_stack_stop(&st);
    conf_destroy(cfg);
    wye_free(w.reason);
    wye_free(w.answer);
    wye_free(w.calls_json);
    pthread_mutex_destroy(&w.lock);
    pthread_cond_destroy(&w.cond);
    return rc;
}

int rt_cli_agent(int argc, char **argv)
{
    const char *dir = "./lua/examples", *config = NULL;
    const char *pos[3] = {NULL, NULL, NULL};
    int n_pos = 0;
    bool json = false, no_ledger = false, no_local = false;
    struct conf_overrides ov;
    memset(&ov, 0, sizeof(ov));
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char **dst = NULL;
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            usage(stdout);
            return 0;
        } else if (strcmp(a, "--json") == 0) {
            json = true;
            continue;
        } else if (strcmp(a, "--no-ledger") == 0) {
            no_ledger = true;
            continue;
        } else if (strcmp(a, "--no-local") == 0) {
            no_local = true;
            continue;
        } else if (strcmp(a, "--ledger") == 0) {
            dst = &ov.ledger;
        } else if (strcmp(a, "--dir") == 0) {
            dst = &dir;
        } else if (strcmp(a, "-c") == 0 || strcmp(a, "--config") == 0) {
            dst = &config;
        } else if (strcmp(a, "--upstream") == 0) {
            dst = &ov.upstream;
        } else if (strcmp(a, "--upstream-model") == 0) {
            dst = &ov.upstream_model;
        } else if (strcmp(a, "--model") == 0) {
            dst = &ov.model;
        } else if (a[0] == '-' && a[1]) {
            fprintf(stderr, "wye agent: unknown option '%s'\n\n", a);
            usage(stderr);
            return 2;
        } else if (n_pos < 3) {
            pos[n_pos++] = a;
            continue;
        } else {
            fprintf(stderr, "wye agent: too many arguments\n\n");
            usage(stderr);
            return 2;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "wye agent: %s needs a value\n", a);
            return 2;
        }
        *dst = argv[++i];
    }
    if (n_pos >= 1 && strcmp(pos[0], "list") == 0 && n_pos == 1) {
        return cli_list(dir);
    }
    if (n_pos == 3 && strcmp(pos[0], "run") == 0) {
        return cli_run(dir, config, &ov, pos[1], pos[2], json, no_ledger, no_local);
    }
    usage(stderr);
    return 2;
}
