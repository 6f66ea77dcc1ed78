/* The local backend: one engine worker thread runs every local chat request on one eng_ctx.
 *
 * DESIGN. rt_local_submit (any thread) tokenizes the request with the model's chat template
 * into a pooled job, checks that prompt + max_tokens fits the context, and pushes the job on a
 * bounded admission queue (running + waiting <= n_seq_max + queue_max, else AGAIN). The worker
 * loop: look at every running sequence's sink (a wakeup note -> credit or cancel; cancelled()
 * -> eng_batch_remove), move queued jobs into free engine slots (eng_batch_add), then
 * eng_batch_step while anything is runnable: continuous batching, sequences join and leave
 * between steps. Idle, it sleeps on a condvar (woken by submit and by sink wakeups; a 100 ms
 * poll only while sequences are paused). The engine's callbacks turn text into WYE_EV_DELTA;
 * AGAIN from the sink pauses the sequence (ENG_CB_PAUSE) until its wakeup, and the few bytes
 * the engine flushes while paused (end of the answer) wait in the job's stash, so nothing is
 * emitted past AGAIN and nothing is lost. A sequence that ends while its sink is full is
 * parked until the wakeup, then gets its usage and finish. Jobs are pooled and only freed by
 * destroy, so a late wakeup always touches valid memory (at worst it wakes the worker once).
 * Nothing in the token loop allocates: the text is the engine's buffer. A request's
 * response_format (json_schema / json_object) becomes the job's engine constraint, compiled
 * once per distinct schema through the backend's eng_constraint_cache, and dropped when the
 * job returns to the pool (after on_done).
 * Threads: the engine worker (loop, callbacks, every sink call but wake); submit, stats and
 * count on any thread; the wakeup on the consumer's thread (it only sets a flag and signals);
 * create/start/stop/destroy on the owner's thread. */
#include "router/local.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/alloc.h"
#include "common/clock.h"
#include "common/log.h"
#include "common/queue.h"
#include "local-engine/constrain.h"
#include "local-engine/engine.h"

#include <cjson/cJSON.h>

#define LC_STASH_MAX 1024 /* text the engine flushes after the sink said AGAIN */
#define LC_MSG_MAX 320    /* a finish message */
#define LC_POLL_MS 100    /* cancellation poll while sequences are paused or parked */
#define LC_SCHEMAS_MAX 64 /* compiled response_format schemas kept in the cache */

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
};

struct rt_local {
    const struct conf_config *cfg;
    const char *name;
    struct eng_model *model;
    struct eng_ctx *ctx; /* worker thread only once started */
    int32_t n_ctx, n_seq;
    size_t admit_max;   /* running + waiting */
    struct wye_queue q; /* admitted jobs waiting for a slot (FIFO) */
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

/* Emits what waited in the stash. False if the sink is full again (or gone). */
static bool lc_flush_stash(struct lc_job *j)
{
    if (j->n_stash == 0 || j->sink_gone) {
        j->n_stash = 0;
        return !j->sink_gone;
    }
    lc_start(j);
    struct wye_event ev = {.type = WYE_EV_DELTA, .data = j->stash, .len = j->n_stash};
    enum wye_err r = j->sink.ops->emit(j->sink.ctx, &ev);
    j->n_stash = 0;
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
    if (!j->blocked && j->n_stash > 0) {
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
    lc_finish(j, WYE_OK, 200, NULL, r->finish == ENG_FINISH_LENGTH ? "length" : "stop");
}

/* ---- engine callbacks (worker thread, inside eng_batch_step / eng_batch_remove) ---- */

static enum eng_cb_ret lc_on_text(void *arg, const char *text, size_t len)
{
    struct lc_job *j = arg;
    if (j->blocked) {
        /* only the engine's end-of-answer flush comes here: keep it for the wakeup */
        if (j->n_stash + len <= sizeof(j->stash)) {
            memcpy(j->stash + j->n_stash, text, len);
            j->n_stash += len;
            return ENG_CB_PAUSE;
        }
        WYE_WARN("local: %zu bytes produced while the sink is full; sent anyway", len);
    }
    lc_start(j);
    struct wye_event ev = {.type = WYE_EV_DELTA, .data = text, .len = len};
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

enum wye_err rt_local_submit(struct rt_local *l, struct wye_chat_req *req, struct wye_sink sink,
                             char *errbuf, size_t errlen)
{
    char scratch[8];
    if (!errbuf || errlen == 0) {
        errbuf = scratch;
        errlen = sizeof(scratch);
    }
    errbuf[0] = '\0';
    if (!req || !sink.ops) {
        snprintf(errbuf, errlen, "no request or no sink");
        return WYE_ERR_INVAL;
    }
    /* a cheap early refusal, so that a full backend costs the caller no tokenizing */
    pthread_mutex_lock(&l->mu);
    bool full = l->n_admitted >= l->admit_max;
    pthread_mutex_unlock(&l->mu);
    if (full) {
        atomic_fetch_add(&l->n_queue_full, 1);
        snprintf(errbuf, errlen,
                 "the local model's queue is full (%zu requests running or waiting)", l->admit_max);
        return WYE_ERR_AGAIN;
    }
    struct lc_job *j = job_get(l);
    if (!j) {
        snprintf(errbuf, errlen, "out of memory");
        return WYE_ERR_NOMEM;
    }
    size_t n = 0;
    enum wye_err err = eng_model_tokenize_chat(l->model, req->msgs, req->n_msgs, j->toks,
                                               (size_t)l->n_ctx, &n, errbuf, errlen);
    if (err == WYE_ERR_TOOBIG) {
        int64_t count = rt_local_count_prompt_tokens(l, req);
        snprintf(errbuf, errlen,
                 "the prompt (%lld tokens) exceeds the local model's context length (%d tokens)",
                 (long long)count, l->n_ctx);
        goto refuse;
    }
    if (err) {
        goto refuse;
    }
    if (n == 0) {
        snprintf(errbuf, errlen, "the prompt is empty");
        err = WYE_ERR_INVAL;
        goto refuse;
    }
    j->n_toks = n;
    err = lc_params(l, j, req, errbuf, errlen);
    if (err) {
        goto refuse;
    }
    err = lc_response_format(l, j, req, errbuf, errlen);
    if (err) {
        goto refuse;
    }
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

    pthread_mutex_lock(&l->mu);
    if (l->stopping) {
        err = WYE_ERR_CANCELED;
        snprintf(errbuf, errlen, "the local model is shutting down");
    } else if (l->n_admitted >= l->admit_max) {
        err = WYE_ERR_AGAIN;
        atomic_fetch_add(&l->n_queue_full, 1);
        snprintf(errbuf, errlen,
                 "the local model's queue is full (%zu requests running or waiting)", l->admit_max);
    } else {
        err = wye_queue_push(&l->q, &j->node, NULL);
        if (!err) {
            l->n_admitted++;
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
    if (err) {
        goto refuse;
    }
    if (!was) {
        pthread_cond_signal(&l->cv);
    }
    return WYE_OK;

refuse:
    job_put(l, j);
    return err;
}

int64_t rt_local_count_prompt_tokens(const struct rt_local *l, const struct wye_chat_req *req)
{
    if (!l || !req) {
        return -1;
    }
    /* a token is at least one byte of the rendered text; the template adds a few per message */
    size_t cap = 256;
    for (size_t i = 0; i < req->n_msgs; i++) {
        size_t len = req->msgs[i].content ? strlen(req->msgs[i].content) : 0;
        if (cap > SIZE_MAX / 2 - len - 64) {
            return -1;
        }
        cap += len + 64;
    }
    int32_t *ids = wye_calloc(cap, sizeof(int32_t));
    if (!ids) {
        return -1;
    }
    size_t n = 0;
    char err[256];
    enum wye_err e =
        eng_model_tokenize_chat(l->model, req->msgs, req->n_msgs, ids, cap, &n, err, sizeof(err));
    wye_free(ids);
    return e ? -1 : (int64_t)n;
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
                                .pool = NULL};
    err = eng_ctx_create(l->model, &cp, &l->ctx, msg, sizeof(msg));
    if (err) {
        snprintf(errbuf, errlen, "local model %s: cannot create a context of %d sequences: %s",
                 cfg->engine.model_path, l->n_seq, msg[0] ? msg : wye_err_str(err));
        goto fail_ctx;
    }
    l->n_ctx = eng_ctx_n_ctx(l->ctx);
    int queue_max = cfg->router.queue_max > 0 ? cfg->router.queue_max : RT_LOCAL_QUEUE_DEFAULT;
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
    atomic_init(&l->seed_ctr, 0);
    WYE_INFO("local: model %s (%s): %d sequences of %d tokens, %d compute threads, queue %d",
             l->name, cfg->engine.model_path, l->n_seq, l->n_ctx, n_threads, queue_max);
    *out = l;
    return WYE_OK;

fail_schemas:
    pthread_mutex_destroy(&l->pool_mu);
fail_pool_mu:
    pthread_cond_destroy(&l->cv);
fail_cv:
    pthread_mutex_destroy(&l->mu);
fail_mu:
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
    if (l->thread_started || l->stopped) {
        return WYE_ERR_INVAL;
    }
    int rc = pthread_create(&l->thread, NULL, lc_main, l);
    if (rc != 0) {
        char eb[128];
        WYE_ERROR("local: cannot start the engine worker: %s", wye_strerror(rc, eb, sizeof(eb)));
        return WYE_ERR_IO;
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
        wye_free(j);
        j = next;
    }
    eng_constraint_cache_destroy(l->schemas);
    pthread_mutex_destroy(&l->pool_mu);
    pthread_cond_destroy(&l->cv);
    pthread_mutex_destroy(&l->mu);
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
}
