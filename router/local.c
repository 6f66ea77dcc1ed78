/* The local backend: one engine worker thread runs every local chat request on one eng_ctx.
 *
 * DESIGN. Preparing a request (the tool prompt, tokenizing it with the model's chat template into
 * a pooled job, checking that prompt + max_tokens fits the context, the sampling parameters and
 * the response_format constraint) costs time that grows with the prompt: ~1 us of CPU per byte,
 * a second for the largest body the gateway takes. rt_local_submit_async (the router, so any
 * thread that must not block: the lws and upstream threads) only reserves an admission slot
 * (running + preparing + waiting <= n_seq_max + queue_max, else AGAIN at once; queue_max 0: no
 * waiting at all) and hands the job to the backend's preparation thread, which prepares it and
 * queues it for the worker, or hands the request back through the caller's refusal callback
 * (TOOBIG, INVAL, ...) so that the router can still send it elsewhere. rt_local_submit does the
 * same preparation on the caller's thread (the CLI, tests, benchmarks). The worker loop: look at
 * every running sequence's sink (a wakeup note -> credit or cancel; cancelled() ->
 * eng_batch_remove), move queued jobs into free engine slots (eng_batch_add), then eng_batch_step
 * while anything is runnable: continuous batching, sequences join and leave between steps. Idle, it
 * sleeps on a condvar (woken by submit and by sink wakeups; a 100 ms poll only while sequences are
 * paused). The engine's callbacks turn text into WYE_EV_DELTA; AGAIN from the sink pauses the
 * sequence (ENG_CB_PAUSE) until its wakeup, and the few bytes the engine flushes while paused (end
 * of the answer) wait in the job's stash, so nothing is emitted past AGAIN and nothing is lost. A
 * sequence that ends while its sink is full is parked until the wakeup, then gets its usage and
 * finish. Jobs are pooled and only freed by destroy, so a late wakeup always touches valid memory
 * (at worst it wakes the worker once). Nothing in the token loop allocates: the text is the
 * engine's buffer. A request's response_format (json_schema / json_object) becomes the job's engine
 * constraint, compiled once per distinct schema through the backend's eng_constraint_cache, and
 * dropped when the job returns to the pool (after on_done). Tools: a request with OpenAI `tools` is
 * rendered in the model's text tool format (Hermes <tool_call> or Llama 3 JSON, by chat-template
 * family) with agent_toolfmt_render, and its tools compile to one tagged-union constraint applied
 * lazily: free text until the trigger, the call's JSON constrained, free text again
 * (eng_gen_params.trigger). Content streams as deltas; each call goes out whole as a tool_calls
 * delta when its JSON closes. Threads: the engine worker (loop, callbacks, every sink call but
 * wake); the preparation thread (lc_prep_one: refusals, and finish() of a request cancelled before
 * it was prepared); submit, stats and count on any thread; the wakeup on the consumer's thread (it
 * only sets a flag and signals); create/start/stop/destroy on the owner's thread. */
#include "router/local.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "agents/agents.h"
#include "common/alloc.h"
#include "common/clock.h"
#include "common/log.h"
#include "common/queue.h"
#include "local-engine/constrain.h"
#include "local-engine/engine.h"
#include "router/local_tools.h"

#include <cjson/cJSON.h>

#define LC_STASH_MAX 1024 /* text the engine flushes after the sink said AGAIN */
#define LC_MSG_MAX 320    /* a finish message */
#define LC_POLL_MS 100    /* cancellation poll while sequences are paused or parked */
#define LC_SCHEMAS_MAX 64 /* compiled response_format schemas kept in the cache */

/* tool calls */
#define LC_CALL_MAX (64u << 10)                /* one call's JSON text */
#define LC_TSTASH_MAX (2 * LC_CALL_MAX + 512u) /* its tool_calls delta (arguments escaped) */
#define LC_TRIGGER_HERMES "<tool_call>"        /* Qwen2.5 / Hermes: the call follows */
#define LC_TRIGGER_LLAMA3 "{\"name\""          /* Llama 3.x: the call's own first bytes */

/* Where the text of an answer with tools is: plain content, inside a call (the constrained
 * JSON value), or right after one (its closing tag and separators are dropped). */
enum lc_tphase { LC_T_TEXT, LC_T_CALL, LC_T_AFTER };

enum lc_state { LC_FREE, LC_QUEUED, LC_RUNNING, LC_PARKED };

struct lc_job {
    struct wye_qnode node; /* in l->q while queued */
    struct rt_local *l;
    struct lc_job *next_free; /* guarded by l->pool_mu */
    struct lc_job *next_all;  /* guarded by l->pool_mu */
    /* written by submit before the job is queued; then worker only */
    int32_t *toks; /* (l->n_ctx) the tokenized prompt */
    size_t n_toks;
    struct eng_gen_params gp;          /* stop[] point into req->stop */
    struct eng_constraint *constraint; /* response_format (a reference), or NULL */
    struct wye_chat_req *req;
    struct wye_sink sink;
    rt_local_refused_fn refused; /* rt_local_submit_async: how a refusal goes back */
    void *refused_arg;
    atomic_bool cancel; /* the engine's cancel flag for this sequence (set on stop) */
    atomic_bool woken;  /* the sink's wakeup fired; any thread sets, the worker clears */
    /* worker thread only */
    enum lc_state state;
    int32_t seq;       /* engine slot while running */
    bool started;      /* sink start() was called */
    bool blocked;      /* the sink said AGAIN and its wakeup has not come yet */
    bool sink_gone;    /* the sink said CANCELED */
    enum wye_err fail; /* the worker ended the sequence because the engine failed */
    char stash[LC_STASH_MAX];
    size_t n_stash;
    struct eng_seq_result res; /* how the sequence ended (parked jobs) */
    struct lc_job *next_parked;
    /* tool calls: set by submit, then worker only. tfmt OPENAI: no tools in play. */
    enum agent_toolfmt tfmt;
    bool t_first; /* the answer starts inside a call (tool_choice required or named) */
    enum lc_tphase tphase;
    size_t tskip; /* trigger bytes still to drop from the text */
    char *call;   /* (LC_CALL_MAX + 1) the call being written; kept with the pooled job */
    size_t n_call;
    bool call_big;  /* the call outgrew LC_CALL_MAX */
    size_t n_after; /* bytes of the closing tag seen after a call */
    int n_calls;
    char *tstash; /* (LC_TSTASH_MAX) a tool_calls delta produced after the sink said AGAIN */
    size_t n_tstash;
};

struct rt_local {
    const struct conf_config *cfg;
    const char *name;
    struct eng_model *model;
    struct eng_ctx *ctx; /* worker thread only once started */
    int32_t n_ctx, n_seq;
    int queue_max;      /* cfg->router.queue_max: requests that may wait for a sequence */
    size_t admit_max;   /* running + waiting: n_seq + queue_max */
    struct wye_queue q; /* admitted jobs waiting for a slot (FIFO) */
    /* admitted by rt_local_submit_async, waiting for the preparation thread (FIFO) */
    struct wye_queue prep_q;
    pthread_t prep_thread;
    bool prep_started; /* owner's thread */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool signaled;     /* guarded by mu: something for the worker to look at */
    bool stopping;     /* guarded by mu */
    size_t n_admitted; /* guarded by mu: queued + running + parked */
    pthread_t thread;
    bool thread_started; /* owner's thread */
    bool stopped;        /* owner's thread */
    pthread_mutex_t pool_mu;
    struct lc_job *free_list;             /* guarded by pool_mu */
    struct lc_job *all_list;              /* guarded by pool_mu */
    struct lc_job **running;              /* (n_seq) by engine slot; worker only */
    struct lc_job *parked;                /* ended while the sink was full; worker only */
    struct eng_constraint_cache *schemas; /* response_format constraints (thread-safe) */
    atomic_uint_fast64_t n_requests, n_gen, n_prompt, n_queue_full, n_active, n_queued;
    atomic_uint_fast64_t n_preparing;
    atomic_uint_fast64_t seed_ctr;
};

/* ---- the job pool ---- */

static struct lc_job *job_get(struct rt_local *l)
{
    pthread_mutex_lock(&l->pool_mu);
    struct lc_job *j = l->free_list;
    if (j) {
        l->free_list = j->next_free;
    }
    pthread_mutex_unlock(&l->pool_mu);
    if (j) {
        return j;
    }
    j = wye_calloc(1, sizeof(*j));
    if (!j) {
        return NULL;
    }
    j->toks = wye_calloc((size_t)l->n_ctx, sizeof(int32_t));
    if (!j->toks) {
        wye_free(j);
        return NULL;
    }
    j->l = l;
    atomic_init(&j->cancel, false);
    atomic_init(&j->woken, false);
    pthread_mutex_lock(&l->pool_mu);
    j->next_all = l->all_list;
    l->all_list = j;
    pthread_mutex_unlock(&l->pool_mu);
    return j;
}

static void job_put(struct rt_local *l, struct lc_job *j)
{
    j->state = LC_FREE;
    j->req = NULL;
    /* after on_done (or before any eng_batch_add): the engine no longer reads it */
    eng_constraint_destroy(j->constraint);
    j->constraint = NULL;
    j->gp.constraint = NULL;
    memset(&j->sink, 0, sizeof(j->sink));
    pthread_mutex_lock(&l->pool_mu);
    j->next_free = l->free_list;
    l->free_list = j;
    pthread_mutex_unlock(&l->pool_mu);
}

/* ---- waking the worker ---- */

static void lc_signal(struct rt_local *l)
{
    pthread_mutex_lock(&l->mu);
    bool was = l->signaled;
    l->signaled = true;
    pthread_mutex_unlock(&l->mu);
    if (!was) {
        pthread_cond_signal(&l->cv);
    }
}

/* The sink's wakeup: the consumer's thread, maybe under its stream lock. Only a note. */
static void lc_wake(void *arg)
{
    struct lc_job *j = arg;
    atomic_store(&j->woken, true);
    lc_signal(j->l);
}

static void lc_wake_noop(void *arg)
{
    (void)arg;
}

/* ---- finishing (worker thread, or the owner's thread after the worker is joined) ---- */

static void lc_start(struct lc_job *j)
{
    if (!j->started) {
        j->started = true;
        struct wye_start s = {
            .route = "local", .model = j->l->name, .score = -1.0, .reasons = NULL};
        j->sink.ops->start(j->sink.ctx, &s);
    }
}

/* The last word on a job: tells the sink, frees the request, returns the job to the pool. */
static void lc_finish(struct lc_job *j, enum wye_err err, int status, const char *msg,
                      const char *reason)
{
    struct rt_local *l = j->l;
    struct wye_result res = {
        .err = err,
        .http_status = err ? status : 200,
        .message = err ? msg : NULL,
        .finish_reason = reason,
        .usage = {.prompt_tokens = j->res.n_prompt, .completion_tokens = j->res.n_gen},
    };
    atomic_fetch_add(&l->n_prompt, (uint64_t)j->res.n_prompt);
    atomic_fetch_add(&l->n_gen, (uint64_t)j->res.n_gen);
    if (err && err != WYE_ERR_CANCELED) {
        wye_log(WYE_LOG_WARN, j->req->id, "local: %s", msg);
    } else {
        wye_log(WYE_LOG_DEBUG, j->req->id, "local: %s, %d prompt + %d generated tokens", reason,
                j->res.n_prompt, j->res.n_gen);
    }
    /* a wakeup arriving after finish must not reach this (soon reused) job */
    j->sink.ops->set_wakeup(j->sink.ctx, lc_wake_noop, NULL);
    pthread_mutex_lock(&l->mu);
    l->n_admitted--; /* before finish: whoever waits on it may submit again at once */
    pthread_mutex_unlock(&l->mu);
    j->sink.ops->finish(j->sink.ctx, &res);
    wye_chat_req_destroy(j->req);
    job_put(l, j);
}

static void lc_finish_cancelled(struct lc_job *j)
{
    bool stopping;
    pthread_mutex_lock(&j->l->mu);
    stopping = j->l->stopping;
    pthread_mutex_unlock(&j->l->mu);
    lc_finish(j, WYE_ERR_CANCELED, 499,
              stopping ? "the gateway is shutting down" : "the request was cancelled", "cancelled");
}

static void parked_unlink(struct rt_local *l, struct lc_job *j)
{
    struct lc_job **pp = &l->parked;
    while (*pp && *pp != j) {
        pp = &(*pp)->next_parked;
    }
    if (*pp) {
        *pp = j->next_parked;
    }
    j->next_parked = NULL;
}

/* Emits what waited in the stashes (text, then a tool call). False if the sink is full again
 * (or gone). */
static bool lc_flush_stash(struct lc_job *j)
{
    if ((j->n_stash == 0 && j->n_tstash == 0) || j->sink_gone) {
        j->n_stash = j->n_tstash = 0;
        return !j->sink_gone;
    }
    lc_start(j);
    enum wye_err r = WYE_OK;
    if (j->n_stash > 0) {
        struct wye_event ev = {.type = WYE_EV_DELTA, .data = j->stash, .len = j->n_stash};
        r = j->sink.ops->emit(j->sink.ctx, &ev);
        j->n_stash = 0;
    }
    if (j->n_tstash > 0 && (r == WYE_OK || r == WYE_ERR_AGAIN)) {
        /* accepted even after AGAIN: both were produced before the pause */
        struct wye_event ev = {.type = WYE_EV_TOOL_DELTA, .data = j->tstash, .len = j->n_tstash};
        enum wye_err r2 = j->sink.ops->emit(j->sink.ctx, &ev);
        r = r2 == WYE_OK ? r : r2;
    }
    j->n_tstash = 0;
    if (r == WYE_ERR_AGAIN) {
        j->blocked = true;
        return false;
    }
    if (r != WYE_OK) {
        j->sink_gone = true;
        return false;
    }
    return true;
}

/* A sequence ended (j->res): usage and finish, or park until the sink has room. */
static void lc_complete(struct lc_job *j)
{
    struct rt_local *l = j->l;
    const struct eng_seq_result *r = &j->res;
    if (r->finish == ENG_FINISH_CANCELLED || j->sink_gone) {
        if (j->state == LC_PARKED) {
            parked_unlink(l, j);
        }
        lc_finish_cancelled(j);
        return;
    }
    if (!j->blocked && (j->n_stash > 0 || j->n_tstash > 0)) {
        lc_flush_stash(j);
        if (j->sink_gone) {
            if (j->state == LC_PARKED) {
                parked_unlink(l, j);
            }
            lc_finish_cancelled(j);
            return;
        }
    }
    if (j->blocked) {
        if (j->state != LC_PARKED) {
            j->state = LC_PARKED;
            j->next_parked = l->parked;
            l->parked = j;
        }
        return;
    }
    if (j->state == LC_PARKED) {
        parked_unlink(l, j);
    }
    if (r->finish == ENG_FINISH_ERROR) {
        char msg[LC_MSG_MAX];
        snprintf(msg, sizeof(msg), "the local model failed after %d tokens: %s", r->n_gen,
                 wye_err_str(r->err ? r->err : WYE_ERR_INTERNAL));
        lc_finish(j, r->err ? r->err : WYE_ERR_INTERNAL, 500, msg, "error");
        return;
    }
    lc_start(j);
    struct wye_event ev = {
        .type = WYE_EV_USAGE,
        .usage = {.prompt_tokens = r->n_prompt, .completion_tokens = r->n_gen, .estimated = false}};
    /* AGAIN is fine here: the event was accepted and nothing else is produced */
    if (j->sink.ops->emit(j->sink.ctx, &ev) == WYE_ERR_CANCELED) {
        lc_finish_cancelled(j);
        return;
    }
    lc_finish(j, WYE_OK, 200, NULL,
              r->finish == ENG_FINISH_LENGTH ? "length" : (j->n_calls > 0 ? "tool_calls" : "stop"));
}

/* ---- engine callbacks (worker thread, inside eng_batch_step / eng_batch_remove) ---- */

/* Emits a text delta or a tool_calls delta; after AGAIN, what the engine still produces (the
 * rest of the token, the end of the answer) waits in the stashes for the wakeup. */
static enum eng_cb_ret lc_emit(struct lc_job *j, enum wye_ev_type type, const char *data,
                               size_t len)
{
    if (len == 0 || j->sink_gone) {
        return j->sink_gone ? ENG_CB_STOP : j->blocked ? ENG_CB_PAUSE : ENG_CB_CONTINUE;
    }
    if (j->blocked) {
        /* text stashed after a tool call would come out before it: cannot happen (a call ends
         * a token), but never reorder */
        if (type == WYE_EV_DELTA && j->n_tstash == 0 && j->n_stash + len <= sizeof(j->stash)) {
            memcpy(j->stash + j->n_stash, data, len);
            j->n_stash += len;
            return ENG_CB_PAUSE;
        }
        if (type == WYE_EV_TOOL_DELTA && j->n_tstash == 0 && len <= LC_TSTASH_MAX) {
            memcpy(j->tstash, data, len);
            j->n_tstash = len;
            return ENG_CB_PAUSE;
        }
        WYE_WARN("local: %zu bytes produced while the sink is full; sent anyway", len);
    }
    lc_start(j);
    struct wye_event ev = {.type = type, .data = data, .len = len};
    enum wye_err r = j->sink.ops->emit(j->sink.ctx, &ev);
    if (r == WYE_OK) {
        return j->blocked ? ENG_CB_PAUSE : ENG_CB_CONTINUE;
    }
    if (r == WYE_ERR_AGAIN) {
        j->blocked = true;
        return ENG_CB_PAUSE;
    }
    j->sink_gone = true;
    return ENG_CB_STOP;
}

/* A call's JSON value is complete: one tool_calls delta
 * [{"index":N,"id":..,"type":"function","function":{"name":..,"arguments":"{..}"}}]. The
 * constraint guarantees the JSON; WYE_OK or why the call could not be sent. */
static enum wye_err lc_call_done(struct lc_job *j)
{
    if (j->call_big) {
        return WYE_ERR_TOOBIG;
    }
    j->call[j->n_call] = '\0';
    char *calls = NULL, *content = NULL, eb[160] = "";
    /* the Llama 3 reader takes a bare {"name":..,"arguments"|"parameters":..} object */
    enum wye_err err =
        agent_toolparse(AGENT_TOOLFMT_LLAMA3, j->call, &calls, &content, eb, sizeof(eb));
    wye_free(content);
    cJSON *arr = calls ? cJSON_Parse(calls) : NULL;
    wye_free(calls);
    cJSON *c0 = cJSON_GetArrayItem(arr, 0);
    char id[WYE_REQID_LEN + 32];
    snprintf(id, sizeof(id), "call_%s_%d", j->req->id, j->n_calls);
    cJSON *idv = cJSON_GetObjectItemCaseSensitive(c0, "id");
    char *delta = NULL;
    if (!err && c0 && idv && cJSON_SetValuestring(idv, id) &&
        cJSON_AddNumberToObject(c0, "index", j->n_calls)) {
        delta = cJSON_PrintUnformatted(arr);
    }
    cJSON_Delete(arr);
    if (!delta) {
        wye_log(WYE_LOG_ERROR, j->req->id, "local: tool call %d not readable: %s", j->n_calls,
                err ? eb : "out of memory");
        return err ? WYE_ERR_INTERNAL : WYE_ERR_NOMEM;
    }
    j->n_calls++;
    enum eng_cb_ret r = lc_emit(j, WYE_EV_TOOL_DELTA, delta, strlen(delta));
    cJSON_free(delta);
    return r == ENG_CB_STOP ? WYE_ERR_CANCELED : WYE_OK;
}

/* Text of an answer to a request with tools: content, call text, or what follows a call
 * (whitespace, the closing tag and Llama 3's ';' separators are dropped). */
static enum eng_cb_ret lc_tool_text(struct lc_job *j, const char *text, size_t len)
{
    if (j->tphase == LC_T_CALL) {
        size_t k = j->tskip < len ? j->tskip : len;
        j->tskip -= k;
        if (j->n_call + (len - k) > LC_CALL_MAX) {
            j->call_big = true;
        } else {
            memcpy(j->call + j->n_call, text + k, len - k);
            j->n_call += len - k;
        }
        return j->blocked ? ENG_CB_PAUSE : ENG_CB_CONTINUE;
    }
    if (j->tphase == LC_T_AFTER) {
        static const char tag[] = "</tool_call>";
        size_t tag_len = j->tfmt == AGENT_TOOLFMT_HERMES ? sizeof(tag) - 1 : 0;
        for (size_t i = 0; i < len; i++) {
            char ch = text[i];
            if (j->n_after == 0 &&
                (strchr(" \t\r\n", ch) || (j->tfmt == AGENT_TOOLFMT_LLAMA3 && ch == ';'))) {
                continue;
            }
            if (j->n_after < tag_len && tag[j->n_after] == ch) {
                j->n_after = j->n_after + 1 == tag_len ? 0 : j->n_after + 1;
                continue;
            }
            /* content again, starting with the part of a tag that did not complete */
            j->tphase = LC_T_TEXT;
            enum eng_cb_ret r = lc_emit(j, WYE_EV_DELTA, tag, j->n_after);
            j->n_after = 0;
            if (r == ENG_CB_STOP) {
                return r;
            }
            return lc_emit(j, WYE_EV_DELTA, text + i, len - i);
        }
        return j->blocked ? ENG_CB_PAUSE : ENG_CB_CONTINUE;
    }
    return lc_emit(j, WYE_EV_DELTA, text, len);
}

static enum eng_cb_ret lc_on_text(void *arg, const char *text, size_t len)
{
    struct lc_job *j = arg;
    if (j->tfmt != AGENT_TOOLFMT_OPENAI) {
        return lc_tool_text(j, text, len);
    }
    return lc_emit(j, WYE_EV_DELTA, text, len);
}

/* The engine's lazy-constraint edges: a call starts (its trigger completed, or the answer
 * begins inside one) or its JSON value is complete. */
static enum eng_cb_ret lc_on_constraint(void *arg, bool active)
{
    struct lc_job *j = arg;
    const char *trig = j->tfmt == AGENT_TOOLFMT_HERMES ? LC_TRIGGER_HERMES : LC_TRIGGER_LLAMA3;
    bool in_value = j->tfmt == AGENT_TOOLFMT_LLAMA3;
    if (active) {
        j->tphase = LC_T_CALL;
        j->n_call = 0;
        j->call_big = false;
        j->tskip = in_value || j->t_first ? 0 : strlen(trig);
        if (in_value && j->t_first) {
            /* the prompt ended with the trigger: the call's first bytes */
            j->n_call = strlen(trig);
            memcpy(j->call, trig, j->n_call);
        }
        j->t_first = false;
        return j->blocked ? ENG_CB_PAUSE : ENG_CB_CONTINUE;
    }
    j->tphase = LC_T_AFTER;
    j->n_after = 0;
    enum wye_err err = lc_call_done(j);
    if (err) {
        j->fail = err == WYE_ERR_CANCELED ? WYE_OK : err; /* CANCELED: the sink is gone */
        return ENG_CB_STOP;
    }
    return j->blocked ? ENG_CB_PAUSE : ENG_CB_CONTINUE;
}

static void lc_on_done(void *arg, const struct eng_seq_result *res)
{
    struct lc_job *j = arg;
    struct rt_local *l = j->l;
    if (j->seq >= 0 && j->seq < l->n_seq && l->running[j->seq] == j) {
        l->running[j->seq] = NULL;
    }
    j->seq = -1;
    atomic_fetch_sub(&l->n_active, 1);
    j->res = *res;
    if (j->fail) {
        j->res.finish = ENG_FINISH_ERROR;
        j->res.err = j->fail;
    }
    lc_complete(j);
}

static const struct eng_seq_ops lc_ops = {
    .on_text = lc_on_text,
    .on_token = NULL,
    .on_done = lc_on_done,
};

/* ---- the worker loop ---- */

/* Credit returned to a blocked job: flush the stash, then resume or complete it. */
static void lc_on_credit(struct rt_local *l, struct lc_job *j)
{
    if (!j->blocked) {
        return; /* a spurious or late wakeup */
    }
    j->blocked = false;
    if (!lc_flush_stash(j)) {
        if (j->sink_gone && j->state == LC_RUNNING) {
            eng_batch_remove(l->ctx, j->seq);
        } else if (j->sink_gone) {
            lc_complete(j);
        }
        return;
    }
    if (j->state == LC_RUNNING) {
        eng_batch_resume(l->ctx, j->seq);
    } else if (j->state == LC_PARKED) {
        lc_complete(j);
    }
}

/* Wakeup notes and cancellation, for running and parked jobs: before every step. */
static void lc_check_sinks(struct rt_local *l)
{
    for (int32_t i = 0; i < l->n_seq; i++) {
        struct lc_job *j = l->running[i];
        if (!j) {
            continue;
        }
        bool woken = atomic_exchange(&j->woken, false);
        if (j->sink.ops->cancelled(j->sink.ctx)) {
            j->sink_gone = true;
            eng_batch_remove(l->ctx, i); /* on_done -> finish CANCELED */
        } else if (woken) {
            lc_on_credit(l, j);
        }
    }
    struct lc_job *j = l->parked;
    while (j) {
        struct lc_job *next = j->next_parked;
        bool woken = atomic_exchange(&j->woken, false);
        if (j->sink.ops->cancelled(j->sink.ctx)) {
            parked_unlink(l, j);
            lc_finish_cancelled(j);
        } else if (woken) {
            lc_on_credit(l, j);
        }
        j = next;
    }
}

/* Moves queued jobs into free engine slots. */
static void lc_admit(struct rt_local *l)
{
    while (eng_batch_n_active(l->ctx) < l->n_seq) {
        struct wye_qnode *n = wye_queue_pop(&l->q, 0);
        if (!n) {
            return;
        }
        atomic_fetch_sub(&l->n_queued, 1);
        struct lc_job *j = WYE_CONTAINER_OF(n, struct lc_job, node);
        if (j->sink.ops->cancelled(j->sink.ctx)) {
            lc_finish_cancelled(j);
            continue;
        }
        j->sink.ops->set_wakeup(j->sink.ctx, lc_wake, j);
        char msg[LC_MSG_MAX] = "";
        int32_t seq = -1;
        j->seq = -1;
        enum wye_err err = eng_batch_add(l->ctx, j->toks, j->n_toks, &j->gp, &lc_ops, j, &j->cancel,
                                         &seq, msg, sizeof(msg));
        if (err) {
            char full[LC_MSG_MAX + 32];
            snprintf(full, sizeof(full), "local model: %s", msg[0] ? msg : wye_err_str(err));
            lc_finish(j, err, err == WYE_ERR_NOMEM ? 500 : 400, full, "error");
            continue;
        }
        j->seq = seq;
        j->state = LC_RUNNING;
        l->running[seq] = j;
        atomic_fetch_add(&l->n_active, 1);
    }
}

/* Waits until there is something to do; false when stopping. */
static bool lc_wait(struct rt_local *l)
{
    bool runnable = eng_batch_n_runnable(l->ctx) > 0;
    bool can_admit = eng_batch_n_active(l->ctx) < l->n_seq && wye_queue_len(&l->q) > 0;
    bool poll = eng_batch_n_active(l->ctx) > 0 || l->parked;
    pthread_mutex_lock(&l->mu);
    if (!l->stopping && !l->signaled && !runnable && !can_admit) {
        if (poll) {
            struct timespec ts;
            clock_gettime(CLOCK_MONOTONIC, &ts);
            ts.tv_nsec += LC_POLL_MS * 1000000L;
            if (ts.tv_nsec >= 1000000000L) {
                ts.tv_sec++;
                ts.tv_nsec -= 1000000000L;
            }
            while (!l->stopping && !l->signaled) {
                if (pthread_cond_timedwait(&l->cv, &l->mu, &ts) == ETIMEDOUT) {
                    break;
                }
            }
        } else {
            while (!l->stopping && !l->signaled) {
                pthread_cond_wait(&l->cv, &l->mu);
            }
        }
    }
    l->signaled = false;
    bool go = !l->stopping;
    pthread_mutex_unlock(&l->mu);
    return go;
}

/* Ends everything: running sequences, parked jobs and the queue all finish CANCELED. */
static void lc_cancel_all(struct rt_local *l)
{
    for (int32_t i = 0; i < l->n_seq; i++) {
        if (l->running[i]) {
            atomic_store(&l->running[i]->cancel, true);
            eng_batch_remove(l->ctx, i);
        }
    }
    while (l->parked) {
        struct lc_job *j = l->parked;
        l->parked = j->next_parked;
        j->next_parked = NULL;
        lc_finish_cancelled(j);
    }
    wye_queue_close(&l->q);
    struct wye_qnode *n = wye_queue_take_all(&l->q);
    while (n) {
        struct wye_qnode *next = n->next;
        atomic_fetch_sub(&l->n_queued, 1);
        lc_finish_cancelled(WYE_CONTAINER_OF(n, struct lc_job, node));
        n = next;
    }
}

static void *lc_main(void *arg)
{
    struct rt_local *l = arg;
    (void)pthread_setname_np(pthread_self(), "wye-local");
    while (lc_wait(l)) {
        lc_check_sinks(l);
        lc_admit(l);
        if (eng_batch_n_runnable(l->ctx) > 0) {
            enum wye_err err = eng_batch_step(l->ctx);
            if (err) {
                WYE_ERROR("local: engine step failed: %s; ending its sequences", wye_err_str(err));
                for (int32_t i = 0; i < l->n_seq; i++) {
                    if (l->running[i]) {
                        l->running[i]->fail = err;
                        eng_batch_remove(l->ctx, i);
                    }
                }
            }
        }
    }
    lc_cancel_all(l);
    return NULL;
}

/* ---- submit ---- */

/* Fills j->gp from the request's sampling parameters; errbuf names a refused field. */
static enum wye_err lc_params(struct rt_local *l, struct lc_job *j, const struct wye_chat_req *req,
                              char *errbuf, size_t errlen)
{
    struct eng_gen_params *gp = &j->gp;
    eng_gen_params_default(gp);
    if (req->temperature >= 0) {
        gp->sampling.temperature = (float)req->temperature; /* 0: greedy */
    }
    if (req->top_p >= 0) {
        gp->sampling.top_p = (float)req->top_p;
    }
    if (req->has_seed) {
        gp->sampling.seed = (uint64_t)req->seed;
    } else {
        gp->sampling.seed = (uint64_t)wye_now_ns() ^ (atomic_fetch_add(&l->seed_ctr, 1) << 32);
    }
    if (req->n_stop > ENG_STOP_MAX) {
        snprintf(errbuf, errlen, "%zu stop strings; the local model takes at most %d", req->n_stop,
                 ENG_STOP_MAX);
        return WYE_ERR_TOOBIG;
    }
    for (size_t i = 0; i < req->n_stop; i++) {
        size_t n = req->stop[i] ? strlen(req->stop[i]) : 0;
        if (n > ENG_STOP_LEN_MAX) {
            snprintf(errbuf, errlen,
                     "stop string %zu is %zu bytes; the local model takes at most %d", i, n,
                     ENG_STOP_LEN_MAX);
            return WYE_ERR_TOOBIG;
        }
        gp->stop[i] = req->stop[i];
    }
    if (req->max_tokens < 0) {
        snprintf(errbuf, errlen, "max_tokens %d is negative", req->max_tokens);
        return WYE_ERR_INVAL;
    }
    int64_t room = (int64_t)l->n_ctx - (int64_t)j->n_toks;
    int64_t mt = req->max_tokens;
    if (mt == 0) {
        mt = room < RT_LOCAL_MAX_TOKENS_DEFAULT ? room : RT_LOCAL_MAX_TOKENS_DEFAULT;
    }
    if (room < 1) {
        snprintf(errbuf, errlen,
                 "the prompt (%zu tokens) leaves no room for an answer in the local model's "
                 "context length (%d tokens)",
                 j->n_toks, l->n_ctx);
        return WYE_ERR_TOOBIG;
    }
    if (mt > room) {
        snprintf(errbuf, errlen,
                 "the prompt (%zu tokens) plus max_tokens (%lld) exceeds the local model's "
                 "context length (%d tokens)",
                 j->n_toks, (long long)mt, l->n_ctx);
        return WYE_ERR_TOOBIG;
    }
    gp->max_tokens = (int32_t)mt;
    return WYE_OK;
}

/* Maps the request's response_format to j->constraint (through the cache): json_schema ->
 * the compiled schema, json_object -> any object, text or absent -> none. A schema that does
 * not compile, or a malformed response_format, is INVAL with errbuf naming the problem. */
static enum wye_err lc_response_format(struct rt_local *l, struct lc_job *j,
                                       const struct wye_chat_req *req, char *errbuf, size_t errlen)
{
    const cJSON *rf =
        req->body ? cJSON_GetObjectItemCaseSensitive(req->body, "response_format") : NULL;
    if (!rf || cJSON_IsNull(rf)) {
        return WYE_OK;
    }
    if (!cJSON_IsObject(rf)) {
        snprintf(errbuf, errlen, "'response_format' must be an object");
        return WYE_ERR_INVAL;
    }
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(rf, "type");
    if (!cJSON_IsString(type)) {
        snprintf(errbuf, errlen, "'response_format.type' must be a string");
        return WYE_ERR_INVAL;
    }
    char msg[LC_MSG_MAX] = "";
    enum wye_err err;
    if (strcmp(type->valuestring, "text") == 0) {
        return WYE_OK;
    } else if (strcmp(type->valuestring, "json_object") == 0) {
        err = eng_constraint_cache_get(l->schemas, NULL, 0, &j->constraint, msg, sizeof(msg));
    } else if (strcmp(type->valuestring, "json_schema") == 0) {
        const cJSON *js = cJSON_GetObjectItemCaseSensitive(rf, "json_schema");
        const cJSON *schema =
            cJSON_IsObject(js) ? cJSON_GetObjectItemCaseSensitive(js, "schema") : NULL;
        if (!cJSON_IsObject(js)) {
            snprintf(errbuf, errlen, "'response_format.json_schema' must be an object");
            return WYE_ERR_INVAL;
        }
        if (!cJSON_IsObject(schema) && !cJSON_IsBool(schema)) {
            snprintf(errbuf, errlen,
                     "'response_format.json_schema.schema' must be a JSON Schema object");
            return WYE_ERR_INVAL;
        }
        char *text = cJSON_PrintUnformatted(schema);
        if (!text) {
            snprintf(errbuf, errlen, "out of memory");
            return WYE_ERR_NOMEM;
        }
        err = eng_constraint_cache_get(l->schemas, text, strlen(text), &j->constraint, msg,
                                       sizeof(msg));
        cJSON_free(text);
    } else {
        snprintf(errbuf, errlen,
                 "'response_format.type' '%.64s' is not supported (text, json_object or "
                 "json_schema)",
                 type->valuestring);
        return WYE_ERR_INVAL;
    }
    if (err) {
        j->constraint = NULL;
        snprintf(errbuf, errlen, "response_format schema: %s", msg[0] ? msg : wye_err_str(err));
        return err == WYE_ERR_NOMEM ? err : WYE_ERR_INVAL;
    }
    j->gp.constraint = j->constraint;
    return WYE_OK;
}

/* Reads tools / tool_choice: sets j->tfmt, j->t_first and j->constraint (the tool-call schema,
 * through the cache), and *rendered (the conversation in the model's tool text format) when
 * the prompt must be rendered that way. tool_choice "none" offers no tools. */
static enum wye_err lc_tools(struct rt_local *l, struct lc_job *j, const struct wye_chat_req *req,
                             char **rendered, char *errbuf, size_t errlen)
{
    *rendered = NULL;
    j->tfmt = AGENT_TOOLFMT_OPENAI;
    j->t_first = false;
    const cJSON *tools = req->body ? cJSON_GetObjectItemCaseSensitive(req->body, "tools") : NULL;
    const cJSON *choice =
        req->body ? cJSON_GetObjectItemCaseSensitive(req->body, "tool_choice") : NULL;
    bool offered = cJSON_IsArray(tools) && cJSON_GetArraySize(tools) > 0;
    bool history = rt_local_has_tool_history(req);
    if (!offered && !history) {
        return WYE_OK;
    }
    const char *only = NULL;
    bool none = false;
    if (choice && !cJSON_IsNull(choice)) {
        const cJSON *fn = cJSON_GetObjectItemCaseSensitive(choice, "function");
        const cJSON *nm = cJSON_GetObjectItemCaseSensitive(fn, "name");
        if (cJSON_IsString(choice) && strcmp(choice->valuestring, "none") == 0) {
            none = true;
        } else if (cJSON_IsString(choice) && strcmp(choice->valuestring, "required") == 0) {
            j->t_first = true;
        } else if (cJSON_IsString(choice) && strcmp(choice->valuestring, "auto") == 0) {
            ;
        } else if (cJSON_IsObject(choice) && cJSON_IsString(nm) && nm->valuestring[0]) {
            only = nm->valuestring;
            j->t_first = true;
        } else {
            snprintf(errbuf, errlen,
                     "'tool_choice' must be \"none\", \"auto\", \"required\" or "
                     "{\"type\":\"function\",\"function\":{\"name\":...}}");
            return WYE_ERR_INVAL;
        }
    }
    if (!offered && (j->t_first)) {
        snprintf(errbuf, errlen, "'tool_choice' asks for a tool call but 'tools' is empty");
        return WYE_ERR_INVAL;
    }
    const char *fam = eng_model_chat_family(l->model);
    enum agent_toolfmt fmt =
        strncmp(fam, "llama3", 6) == 0 ? AGENT_TOOLFMT_LLAMA3 : AGENT_TOOLFMT_HERMES;
    bool use = offered && !none;
    if (use) {
        if (req->has_response_format) {
            const cJSON *rf = cJSON_GetObjectItemCaseSensitive(req->body, "response_format");
            const cJSON *type = cJSON_GetObjectItemCaseSensitive(rf, "type");
            if (!(cJSON_IsString(type) && strcmp(type->valuestring, "text") == 0)) {
                snprintf(errbuf, errlen,
                         "the local model cannot apply 'response_format' and "
                         "'tools' together (use tool_choice \"none\" or drop one)");
                return WYE_ERR_INVAL;
            }
        }
        char *schema = NULL;
        const char *argkey = fmt == AGENT_TOOLFMT_LLAMA3 ? "parameters" : "arguments";
        enum wye_err err = rt_local_tools_schema(tools, only, argkey, &schema, errbuf, errlen);
        if (err) {
            return err;
        }
        char msg[LC_MSG_MAX] = "";
        err = eng_constraint_cache_get(l->schemas, schema, strlen(schema), &j->constraint, msg,
                                       sizeof(msg));
        cJSON_free(schema);
        if (err) {
            j->constraint = NULL;
            rt_local_tools_error(tools, only, msg[0] ? msg : wye_err_str(err), errbuf, errlen);
            return err == WYE_ERR_NOMEM ? err : WYE_ERR_INVAL;
        }
        if (!j->call) {
            j->call = wye_malloc(LC_CALL_MAX + 1);
        }
        if (!j->tstash) {
            j->tstash = wye_malloc(LC_TSTASH_MAX);
        }
        if (!j->call || !j->tstash) {
            snprintf(errbuf, errlen, "out of memory");
            return WYE_ERR_NOMEM;
        }
        j->tfmt = fmt;
    } else {
        j->t_first = false;
        if (!history) {
            return WYE_OK; /* tool_choice none: the request as if it had no tools */
        }
    }
    return rt_local_tools_render(req, fmt, use ? tools : NULL, rendered, errbuf, errlen);
}

/* Tokenizes a rendered messages array ({"role","content"} objects) with the chat template
 * into j->toks. */
static enum wye_err lc_tokenize_rendered(struct rt_local *l, struct lc_job *j, const char *text,
                                         size_t *n, char *errbuf, size_t errlen)
{
    cJSON *arr = cJSON_Parse(text);
    int cnt = cJSON_GetArraySize(arr);
    struct wye_chat_msg *msgs = cnt > 0 ? wye_calloc((size_t)cnt, sizeof(*msgs)) : NULL;
    if (!msgs) {
        cJSON_Delete(arr);
        snprintf(errbuf, errlen, "out of memory");
        return WYE_ERR_NOMEM;
    }
    int i = 0;
    const cJSON *m;
    cJSON_ArrayForEach(m, arr)
    {
        const cJSON *role = cJSON_GetObjectItemCaseSensitive(m, "role");
        const cJSON *content = cJSON_GetObjectItemCaseSensitive(m, "content");
        const char *r = cJSON_IsString(role) ? role->valuestring : "";
        msgs[i].role = strcmp(r, "system") == 0      ? WYE_ROLE_SYSTEM
                       : strcmp(r, "assistant") == 0 ? WYE_ROLE_ASSISTANT
                                                     : WYE_ROLE_USER;
        msgs[i].content = cJSON_IsString(content) ? content->valuestring : (char *)"";
        i++;
    }
    enum wye_err err = eng_model_tokenize_chat(l->model, msgs, (size_t)cnt, j->toks,
                                               (size_t)l->n_ctx, n, errbuf, errlen);
    wye_free(msgs);
    cJSON_Delete(arr);
    return err;
}

/* tool_choice required / named: the prompt ends with the trigger, so the answer starts inside
 * the call. */
static enum wye_err lc_tools_prefill(struct rt_local *l, struct lc_job *j, char *errbuf,
                                     size_t errlen)
{
    const char *trig = j->tfmt == AGENT_TOOLFMT_HERMES ? LC_TRIGGER_HERMES : LC_TRIGGER_LLAMA3;
    size_t n = 0;
    enum wye_err err = eng_model_tokenize(l->model, trig, strlen(trig), false, true,
                                          j->toks + j->n_toks, (size_t)l->n_ctx - j->n_toks, &n);
    if (err) {
        snprintf(errbuf, errlen,
                 "the prompt (%zu tokens) leaves no room for an answer in the local model's "
                 "context length (%d tokens)",
                 j->n_toks, l->n_ctx);
        return WYE_ERR_TOOBIG;
    }
    j->n_toks += n;
    return WYE_OK;
}

/* Engine parameters of an answer with tools: the call schema applies after each trigger (and
 * from the start for tool_choice required / named). */
static void lc_tools_params(struct lc_job *j)
{
    if (j->tfmt == AGENT_TOOLFMT_OPENAI) {
        return;
    }
    j->gp.constraint = j->constraint;
    j->gp.trigger = j->tfmt == AGENT_TOOLFMT_HERMES ? LC_TRIGGER_HERMES : LC_TRIGGER_LLAMA3;
    j->gp.trigger_in_value = j->tfmt == AGENT_TOOLFMT_LLAMA3;
    j->gp.constrain_first = j->t_first;
    j->gp.on_constraint = lc_on_constraint;
    j->tphase = LC_T_TEXT;
    j->n_call = j->n_after = j->tskip = 0;
    j->call_big = false;
    j->n_calls = 0;
    j->n_tstash = 0;
}

/* The refusal names the limit a client (or operator) can act on. */
static void lc_queue_full_msg(const struct rt_local *l, char *errbuf, size_t errlen)
{
    snprintf(errbuf, errlen,
             "the local model's queue is full: %d sequences busy and %d requests waiting "
             "(router.queue_max = %d)",
             (int)l->n_seq, l->queue_max, l->queue_max);
}

/* The work that grows with the prompt: the tool prompt, the tokens (and whether they fit),
 * the sampling parameters and the response_format constraint, into j. errbuf names a refusal. */
static enum wye_err lc_prepare(struct rt_local *l, struct lc_job *j, const struct wye_chat_req *req,
                               char *errbuf, size_t errlen)
{
    size_t n = 0;
    char *rendered = NULL;
    enum wye_err err = lc_tools(l, j, req, &rendered, errbuf, errlen);
    if (err) {
        return err;
    }
    if (rendered) {
        err = lc_tokenize_rendered(l, j, rendered, &n, errbuf, errlen);
        wye_free(rendered);
        if (err == WYE_ERR_TOOBIG) {
            snprintf(errbuf, errlen,
                     "the prompt with the tool definitions exceeds the local model's context "
                     "length (%d tokens)",
                     l->n_ctx);
            return err;
        }
    } else {
        err = eng_model_tokenize_chat(l->model, req->msgs, req->n_msgs, j->toks, (size_t)l->n_ctx,
                                      &n, errbuf, errlen);
    }
    if (err == WYE_ERR_TOOBIG) {
        /* the tokenizer counts past its cap, so the count costs no second pass; n stays 0
         * when the text was too long to tokenize at all */
        if (n > (size_t)l->n_ctx) {
            snprintf(errbuf, errlen,
                     "the prompt (%zu tokens) exceeds the local model's context length (%d "
                     "tokens)",
                     n, l->n_ctx);
        } else {
            snprintf(errbuf, errlen,
                     "the prompt exceeds the local model's context length (%d tokens)", l->n_ctx);
        }
        return err;
    }
    if (err) {
        return err;
    }
    if (n == 0) {
        snprintf(errbuf, errlen, "the prompt is empty");
        return WYE_ERR_INVAL;
    }
    j->n_toks = n;
    if (j->t_first) {
        err = lc_tools_prefill(l, j, errbuf, errlen);
        if (err) {
            return err;
        }
    }
    err = lc_params(l, j, req, errbuf, errlen);
    if (err) {
        return err;
    }
    if (j->tfmt != AGENT_TOOLFMT_OPENAI) {
        lc_tools_params(j);
        return WYE_OK;
    }
    return lc_response_format(l, j, req, errbuf, errlen);
}

/* Gives a prepared job its request and sink and clears what the worker keeps per run. */
static void lc_job_arm(struct lc_job *j, struct wye_chat_req *req, struct wye_sink sink)
{
    j->req = req;
    j->sink = sink;
    j->state = LC_QUEUED;
    j->seq = -1;
    j->started = j->blocked = j->sink_gone = false;
    j->fail = WYE_OK;
    j->n_stash = 0;
    j->next_parked = NULL;
    memset(&j->res, 0, sizeof(j->res));
    atomic_store(&j->cancel, false);
    atomic_store(&j->woken, false);
}

/* Takes an admission slot (running + preparing + waiting <= admit_max). l->mu held. */
static enum wye_err lc_reserve_locked(struct rt_local *l, char *errbuf, size_t errlen)
{
    if (l->stopping) {
        snprintf(errbuf, errlen, "the local model is shutting down");
        return WYE_ERR_CANCELED;
    }
    if (l->n_admitted >= l->admit_max) {
        atomic_fetch_add(&l->n_queue_full, 1);
        lc_queue_full_msg(l, errbuf, errlen);
        return WYE_ERR_AGAIN;
    }
    l->n_admitted++;
    return WYE_OK;
}

/* Gives back the slot of a job that never reached the worker. */
static void lc_release(struct rt_local *l)
{
    pthread_mutex_lock(&l->mu);
    l->n_admitted--;
    pthread_mutex_unlock(&l->mu);
}

/* Queues an armed job, whose slot is taken, for the worker; only stopping refuses it. */
static enum wye_err lc_enqueue(struct rt_local *l, struct lc_job *j, char *errbuf, size_t errlen)
{
    enum wye_err err = WYE_OK;
    pthread_mutex_lock(&l->mu);
    if (l->stopping) {
        err = WYE_ERR_CANCELED;
        snprintf(errbuf, errlen, "the local model is shutting down");
    } else {
        err = wye_queue_push(&l->q, &j->node, NULL); /* holds admit_max: cannot be full */
        if (!err) {
            atomic_fetch_add(&l->n_queued, 1);
            atomic_fetch_add(&l->n_requests, 1);
        } else {
            snprintf(errbuf, errlen, "the local model's queue refused the request: %s",
                     wye_err_str(err));
        }
    }
    bool was = l->signaled;
    if (!err) {
        l->signaled = true;
    }
    pthread_mutex_unlock(&l->mu);
    if (!err && !was) {
        pthread_cond_signal(&l->cv);
    }
    return err;
}

/* The checks both submits start with; errbuf may be NULL (scratch then takes the message). */
static struct lc_job *lc_submit_begin(struct rt_local *l, const struct wye_chat_req *req,
                                      struct wye_sink sink, char **errbuf, size_t *errlen,
                                      char *scratch, size_t scratch_len, enum wye_err *err)
{
    if (!*errbuf || *errlen == 0) {
        *errbuf = scratch;
        *errlen = scratch_len;
    }
    (*errbuf)[0] = '\0';
    if (!req || !sink.ops) {
        snprintf(*errbuf, *errlen, "no request or no sink");
        *err = WYE_ERR_INVAL;
        return NULL;
    }
    struct lc_job *j = job_get(l);
    if (!j) {
        snprintf(*errbuf, *errlen, "out of memory");
        *err = WYE_ERR_NOMEM;
    }
    return j;
}

enum wye_err rt_local_submit(struct rt_local *l, struct wye_chat_req *req, struct wye_sink sink,
                             char *errbuf, size_t errlen)
{
    char scratch[8];
    enum wye_err err = WYE_OK;
    struct lc_job *j =
        lc_submit_begin(l, req, sink, &errbuf, &errlen, scratch, sizeof(scratch), &err);
    if (!j) {
        return err;
    }
    /* the slot first, so that a full backend costs the caller no tokenizing */
    pthread_mutex_lock(&l->mu);
    err = lc_reserve_locked(l, errbuf, errlen);
    pthread_mutex_unlock(&l->mu);
    if (err) {
        job_put(l, j);
        return err;
    }
    err = lc_prepare(l, j, req, errbuf, errlen);
    if (!err) {
        lc_job_arm(j, req, sink);
        err = lc_enqueue(l, j, errbuf, errlen);
    }
    if (err) {
        job_put(l, j);
        lc_release(l);
    }
    return err;
}

enum wye_err rt_local_submit_async(struct rt_local *l, struct wye_chat_req *req,
                                   struct wye_sink sink, rt_local_refused_fn refused, void *arg,
                                   char *errbuf, size_t errlen)
{
    char scratch[8];
    enum wye_err err = WYE_OK;
    struct lc_job *j =
        lc_submit_begin(l, req, sink, &errbuf, &errlen, scratch, sizeof(scratch), &err);
    if (!j) {
        return err;
    }
    if (!refused) {
        job_put(l, j);
        snprintf(errbuf, errlen, "no refusal callback");
        return WYE_ERR_INVAL;
    }
    j->req = req;
    j->sink = sink;
    j->refused = refused;
    j->refused_arg = arg;
    pthread_mutex_lock(&l->mu);
    err = lc_reserve_locked(l, errbuf, errlen);
    if (!err) {
        /* unbounded, and closed by stop only after it set stopping under mu: cannot fail */
        err = wye_queue_push(&l->prep_q, &j->node, NULL);
        if (err) {
            l->n_admitted--;
            snprintf(errbuf, errlen, "the local model's queue refused the request: %s",
                     wye_err_str(err));
        } else {
            atomic_fetch_add(&l->n_preparing, 1);
        }
    }
    pthread_mutex_unlock(&l->mu);
    if (err) {
        job_put(l, j);
    }
    return err;
}

/* ---- the preparation thread ---- */

/* Hands an admitted job's request back through its refusal callback. */
static void lc_prep_refuse(struct rt_local *l, struct lc_job *j, enum wye_err err, const char *msg)
{
    struct wye_chat_req *req = j->req;
    rt_local_refused_fn fn = j->refused;
    void *arg = j->refused_arg;
    job_put(l, j);
    lc_release(l);
    fn(arg, req, err, msg);
}

static void lc_prep_one(struct rt_local *l, struct lc_job *j)
{
    char eb[512] = "";
    struct wye_chat_req *req = j->req;
    struct wye_sink sink = j->sink;
    pthread_mutex_lock(&l->mu);
    bool stopping = l->stopping;
    pthread_mutex_unlock(&l->mu);
    enum wye_err err = WYE_ERR_CANCELED;
    if (stopping) {
        snprintf(eb, sizeof(eb), "the local model is shutting down");
    } else if (sink.ops->cancelled(sink.ctx)) {
        /* accepted, so it ends like any cancelled request: finish() alone */
        atomic_fetch_sub(&l->n_preparing, 1);
        lc_job_arm(j, req, sink);
        lc_finish_cancelled(j);
        return;
    } else {
        err = lc_prepare(l, j, req, eb, sizeof(eb));
    }
    if (!err) {
        lc_job_arm(j, req, sink);
        err = lc_enqueue(l, j, eb, sizeof(eb));
    }
    atomic_fetch_sub(&l->n_preparing, 1);
    if (err) {
        lc_prep_refuse(l, j, err, eb[0] ? eb : wye_err_str(err));
    }
}

static void *lc_prep_main(void *arg)
{
    struct rt_local *l = arg;
    (void)pthread_setname_np(pthread_self(), "wye-local-prep");
    struct wye_qnode *n;
    while ((n = wye_queue_pop(&l->prep_q, -1)) != NULL) {
        lc_prep_one(l, WYE_CONTAINER_OF(n, struct lc_job, node));
    }
    return NULL;
}

/* ---- lifecycle ---- */

enum wye_err rt_local_create(const struct conf_config *cfg, struct rt_local **out, char *errbuf,
                             size_t errlen)
{
    *out = NULL;
    errbuf[0] = '\0';
    if (!cfg->engine.model_path) {
        snprintf(errbuf, errlen, "no local model configured (engine.model, --model or WYE_MODEL)");
        return WYE_ERR_INVAL;
    }
    enum wye_err err = WYE_ERR_NOMEM;
    char msg[512] = "";
    struct rt_local *l = wye_calloc(1, sizeof(*l));
    if (!l) {
        snprintf(errbuf, errlen, "out of memory");
        return WYE_ERR_NOMEM;
    }
    l->cfg = cfg;
    l->name = cfg->engine.model_name ? cfg->engine.model_name : "local";
    err = eng_model_load(cfg->engine.model_path, &l->model, msg, sizeof(msg));
    if (err) {
        snprintf(errbuf, errlen, "local model %s: %s", cfg->engine.model_path,
                 msg[0] ? msg : wye_err_str(err));
        goto fail_model;
    }
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    int n_threads =
        cfg->engine.n_threads > 0 ? cfg->engine.n_threads : (int)(cores > 0 ? cores : 1);
    l->n_seq = cfg->engine.n_seq_max > 0 ? cfg->engine.n_seq_max : 4;
    struct eng_ctx_params cp = {.n_ctx = cfg->engine.n_ctx > 0 ? cfg->engine.n_ctx : 0,
                                .n_seq_max = l->n_seq,
                                .n_batch = 0,
                                .n_threads = n_threads,
                                .pool = NULL,
                                .kv_type = cfg->engine.kv_f16 ? ENG_KV_F16 : ENG_KV_F32};
    err = eng_ctx_create(l->model, &cp, &l->ctx, msg, sizeof(msg));
    if (err) {
        snprintf(errbuf, errlen, "local model %s: cannot create a context of %d sequences: %s",
                 cfg->engine.model_path, l->n_seq, msg[0] ? msg : wye_err_str(err));
        goto fail_ctx;
    }
    l->n_ctx = eng_ctx_n_ctx(l->ctx);
    /* 0 is a real setting (no waiting: refuse when every sequence is busy); conf_load's default
     * is RT_LOCAL_QUEUE_DEFAULT, so only a negative value (never from a config) means "unset" */
    int queue_max = cfg->router.queue_max >= 0 ? cfg->router.queue_max : RT_LOCAL_QUEUE_DEFAULT;
    l->queue_max = queue_max;
    l->admit_max = (size_t)l->n_seq + (size_t)queue_max;
    err = WYE_ERR_NOMEM;
    l->running = wye_calloc((size_t)l->n_seq, sizeof(*l->running));
    if (!l->running) {
        snprintf(errbuf, errlen, "out of memory");
        goto fail_running;
    }
    if (wye_queue_init(&l->q, l->admit_max) != WYE_OK) {
        snprintf(errbuf, errlen, "cannot create the admission queue");
        goto fail_queue;
    }
    if (wye_queue_init(&l->prep_q, 0) != WYE_OK) {
        snprintf(errbuf, errlen, "cannot create the preparation queue");
        goto fail_prep_queue;
    }
    if (pthread_mutex_init(&l->mu, NULL) != 0) {
        snprintf(errbuf, errlen, "cannot create a mutex");
        goto fail_mu;
    }
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    int rc = pthread_cond_init(&l->cv, &ca);
    pthread_condattr_destroy(&ca);
    if (rc != 0) {
        snprintf(errbuf, errlen, "cannot create a condition variable");
        goto fail_cv;
    }
    if (pthread_mutex_init(&l->pool_mu, NULL) != 0) {
        snprintf(errbuf, errlen, "cannot create a mutex");
        goto fail_pool_mu;
    }
    if (eng_constraint_cache_create(LC_SCHEMAS_MAX, &l->schemas) != WYE_OK) {
        snprintf(errbuf, errlen, "cannot create the schema cache");
        goto fail_schemas;
    }
    atomic_init(&l->n_requests, 0);
    atomic_init(&l->n_gen, 0);
    atomic_init(&l->n_prompt, 0);
    atomic_init(&l->n_queue_full, 0);
    atomic_init(&l->n_active, 0);
    atomic_init(&l->n_queued, 0);
    atomic_init(&l->n_preparing, 0);
    atomic_init(&l->seed_ctr, 0);
    WYE_INFO("local: model %s (%s): %d sequences of %d tokens (KV cache %s), %d compute threads, "
             "queue %d",
             l->name, cfg->engine.model_path, l->n_seq, l->n_ctx,
             eng_ctx_kv_f16(l->ctx) ? "F16" : "F32", n_threads, queue_max);
    *out = l;
    return WYE_OK;

fail_schemas:
    pthread_mutex_destroy(&l->pool_mu);
fail_pool_mu:
    pthread_cond_destroy(&l->cv);
fail_cv:
    pthread_mutex_destroy(&l->mu);
fail_mu:
    wye_queue_cleanup(&l->prep_q);
fail_prep_queue:
    wye_queue_cleanup(&l->q);
fail_queue:
    wye_free(l->running);
fail_running:
    eng_ctx_destroy(l->ctx);
fail_ctx:
    eng_model_destroy(l->model);
fail_model:
    wye_free(l);
    return err;
}

enum wye_err rt_local_start(struct rt_local *l)
{
    if (l->thread_started || l->prep_started || l->stopped) {
        return WYE_ERR_INVAL;
    }
    int rc = pthread_create(&l->prep_thread, NULL, lc_prep_main, l);
    if (rc != 0) {
        char eb[128];
        WYE_ERROR("local: cannot start the preparation thread: %s",
                  wye_strerror(rc, eb, sizeof(eb)));
        return WYE_ERR_IO;
    }
    l->prep_started = true;
    rc = pthread_create(&l->thread, NULL, lc_main, l);
    if (rc != 0) {
        char eb[128];
        WYE_ERROR("local: cannot start the engine worker: %s", wye_strerror(rc, eb, sizeof(eb)));
        return WYE_ERR_IO; /* stop joins the preparation thread */
    }
    l->thread_started = true;
    return WYE_OK;
}

void rt_local_stop(struct rt_local *l)
{
    if (!l || l->stopped) {
        return;
    }
    pthread_mutex_lock(&l->mu);
    l->stopping = true;
    pthread_mutex_unlock(&l->mu);
    pthread_cond_signal(&l->cv);
    /* jobs still waiting for preparation are refused (CANCELED) before the worker goes */
    wye_queue_close(&l->prep_q);
    if (l->prep_started) {
        pthread_join(l->prep_thread, NULL);
    } else {
        struct wye_qnode *n = wye_queue_take_all(&l->prep_q);
        while (n) {
            struct wye_qnode *next = n->next;
            lc_prep_one(l, WYE_CONTAINER_OF(n, struct lc_job, node));
            n = next;
        }
    }
    if (l->thread_started) {
        pthread_join(l->thread, NULL);
    } else {
        lc_cancel_all(l); /* never started: only queued requests to cancel */
    }
    l->stopped = true;
}

void rt_local_destroy(struct rt_local *l)
{
    if (!l) {
        return;
    }
    rt_local_stop(l);
    struct lc_job *j = l->all_list;
    while (j) {
        struct lc_job *next = j->next_all;
        wye_free(j->toks);
        wye_free(j->call);
        wye_free(j->tstash);
        wye_free(j);
        j = next;
    }
    eng_constraint_cache_destroy(l->schemas);
    pthread_mutex_destroy(&l->pool_mu);
    pthread_cond_destroy(&l->cv);
    pthread_mutex_destroy(&l->mu);
    wye_queue_cleanup(&l->prep_q);
    wye_queue_cleanup(&l->q);
    wye_free(l->running);
    eng_ctx_destroy(l->ctx);
    eng_model_destroy(l->model);
    wye_free(l);
}

const char *rt_local_model_name(const struct rt_local *l)
{
    return l->name;
}

int32_t rt_local_n_ctx(const struct rt_local *l)
{
    return l->n_ctx;
}

void rt_local_stats(struct rt_local *l, struct rt_local_stats *out)
{
    memset(out, 0, sizeof(*out));
    out->requests = atomic_load(&l->n_requests);
    out->tokens_generated = atomic_load(&l->n_gen);
    out->tokens_prompt = atomic_load(&l->n_prompt);
    out->queue_full = atomic_load(&l->n_queue_full);
    out->active = atomic_load(&l->n_active);
    out->queued = atomic_load(&l->n_queued);
    out->preparing = atomic_load(&l->n_preparing);
}
