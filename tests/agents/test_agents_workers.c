/* The agent runtime's workers (agents/agent_rt.c, agent_run.c) with a fake host: runs go to the
 * least loaded of N workers, each with its own Lua state, so a run spinning on one worker does
 * not stop a quick run on another from finishing first, and a run holding most of its state's
 * memory does not make a run on another worker fail. With one worker (the control) the same
 * runs complete in the other order and the innocent run fails with a memory-limit error that
 * names its script and line. Cancelling a run that never yields stops it in Lua. Completion
 * order and end reasons are asserted, never timing. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "agents/agents.h"

#define SCRIPTS WYE_SOURCE_DIR "/tests/agents/scripts_workers"
#define HELD_MAX 8

struct fake {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    struct agent_op *held[HELD_MAX]; /* parked HTTP calls, answered by release() */
    int n_held;
    int n_spinning;    /* "spinning" events seen */
    char order[8][32]; /* names of the runs in the order they ended */
    int n_done;
    enum wye_err err[8];
    char reason[8][512];
};

struct done_arg {
    struct fake *f;
    const char *name;
};

static enum wye_err fake_http(void *ctx, const struct agent_http_req *req, struct agent_op *op,
                              char *errbuf, size_t errlen)
{
    (void)req;
    struct fake *f = ctx;
    pthread_mutex_lock(&f->lock);
    if (f->n_held == HELD_MAX) {
        pthread_mutex_unlock(&f->lock);
        snprintf(errbuf, errlen, "too many parked calls");
        return WYE_ERR_AGAIN;
    }
    f->held[f->n_held++] = op;
    pthread_cond_broadcast(&f->cond);
    pthread_mutex_unlock(&f->lock);
    return WYE_OK;
}

static enum wye_err fake_chat(void *ctx, const struct agent_chat_call *call, struct agent_op *op,
                              char *errbuf, size_t errlen)
{
    (void)ctx;
    (void)call;
    (void)op;
    snprintf(errbuf, errlen, "no model in this test");
    return WYE_ERR_NOTFOUND;
}

static void fake_emit(void *ctx, uint64_t run_id, const char *ev)
{
    (void)run_id;
    struct fake *f = ctx;
    if (strstr(ev, "\"spinning\"")) {
        pthread_mutex_lock(&f->lock);
        f->n_spinning++;
        pthread_cond_broadcast(&f->cond);
        pthread_mutex_unlock(&f->lock);
    }
}

static const struct agent_host_ops fake_ops = {
    .chat = fake_chat,
    .http = fake_http,
    .emit = fake_emit,
};

static void on_done(void *arg, const struct agent_outcome *o)
{
    struct done_arg *d = arg;
    struct fake *f = d->f;
    pthread_mutex_lock(&f->lock);
    if (f->n_done < 8) {
        snprintf(f->order[f->n_done], sizeof(f->order[0]), "%s", d->name);
        f->err[f->n_done] = o->err;
        snprintf(f->reason[f->n_done], sizeof(f->reason[0]), "%s", o->reason ? o->reason : "");
    }
    f->n_done++;
    pthread_cond_broadcast(&f->cond);
    pthread_mutex_unlock(&f->lock);
    free(d);
}

/* Waits (60 s at most) until *counter reaches n. */
static void wait_for(struct fake *f, const int *counter, int n)
{
    struct timespec dl;
    clock_gettime(CLOCK_REALTIME, &dl);
    dl.tv_sec += 60;
    pthread_mutex_lock(&f->lock);
    while (*counter < n && pthread_cond_timedwait(&f->cond, &f->lock, &dl) == 0) {
    }
    int got = *counter;
    pthread_mutex_unlock(&f->lock);
    if (got < n) {
        fail_msg("waited 60 s for %d events, got %d", n, got);
    }
}

static struct agent_rt *rt_new(struct fake *f, int n_workers, size_t mem, int64_t insns)
{
    memset(f, 0, sizeof(*f));
    pthread_mutex_init(&f->lock, NULL);
    pthread_cond_init(&f->cond, NULL);
    struct agent_rt *rt = NULL;
    char eb[256] = "";
    struct agent_rt_opts o = {.dir = SCRIPTS,
                              .allow_hosts = "127.0.0.1",
                              .mem_bytes_max = mem,
                              .n_insns_max = insns,
                              .n_workers = n_workers};
    if (agent_rt_create(&o, &fake_ops, f, &rt, eb, sizeof(eb)) != WYE_OK) {
        fail_msg("agent_rt_create: %s", eb);
    }
    assert_int_equal(agent_rt_start(rt), WYE_OK);
    return rt;
}

static uint64_t submit(struct agent_rt *rt, struct fake *f, const char *name, const char *input)
{
    struct done_arg *d = malloc(sizeof(*d));
    d->f = f;
    d->name = name;
    char eb[256] = "";
    uint64_t id = 0;
    if (agent_rt_submit(rt, name, input, on_done, d, &id, eb, sizeof(eb)) != WYE_OK) {
        free(d);
        fail_msg("submit %s: %s", name, eb);
    }
    return id;
}

/* Answers every parked HTTP call (their runs then end) and frees the runtime. */
static void rt_free(struct agent_rt *rt, struct fake *f)
{
    pthread_mutex_lock(&f->lock);
    int n = f->n_held;
    f->n_held = 0;
    pthread_mutex_unlock(&f->lock);
    for (int i = 0; i < n; i++) {
        struct agent_http_result r = {.err = WYE_ERR_CANCELED, .message = "test over"};
        agent_op_http_done(f->held[i], &r);
    }
    agent_rt_destroy(rt);
    pthread_mutex_destroy(&f->lock);
    pthread_cond_destroy(&f->cond);
}

/* A spinner on one worker; a quick run submitted after it goes to the other and ends first. */
static void test_spinner_other_worker(void **state)
{
    (void)state;
    struct fake f;
    struct agent_rt *rt = rt_new(&f, 2, 0, 300000000);
    submit(rt, &f, "spinner", "null");
    wait_for(&f, &f.n_spinning, 1); /* it holds its worker from now on */
    submit(rt, &f, "quick", "null");
    wait_for(&f, &f.n_done, 2);
    assert_string_equal(f.order[0], "quick");
    assert_int_equal(f.err[0], WYE_OK);
    assert_string_equal(f.order[1], "spinner");
    assert_int_equal(f.err[1], WYE_ERR_LIMIT);
    assert_non_null(strstr(f.reason[1], "instruction limit"));
    assert_non_null(strstr(f.reason[1], "workers.lua:"));
    rt_free(rt, &f);
}

/* The control: one worker runs them one after the other. */
static void test_spinner_one_worker(void **state)
{
    (void)state;
    struct fake f;
    struct agent_rt *rt = rt_new(&f, 1, 0, 300000000);
    submit(rt, &f, "spinner", "null");
    wait_for(&f, &f.n_spinning, 1);
    submit(rt, &f, "quick", "null");
    wait_for(&f, &f.n_done, 2);
    assert_string_equal(f.order[0], "spinner");
    assert_string_equal(f.order[1], "quick");
    assert_int_equal(f.err[1], WYE_OK);
    rt_free(rt, &f);
}

/* A run holding 14 MiB of a 24 MiB state: a 12 MiB run on the other worker still fits. */
static void test_memory_other_worker(void **state)
{
    (void)state;
    struct fake f;
    struct agent_rt *rt = rt_new(&f, 2, 24u << 20, 0);
    submit(rt, &f, "holder", "{\"mb\":14}");
    wait_for(&f, &f.n_held, 1); /* parked with its memory held */
    submit(rt, &f, "innocent", "{\"mb\":12}");
    wait_for(&f, &f.n_done, 1);
    assert_string_equal(f.order[0], "innocent");
    if (f.err[0] != WYE_OK) {
        fail_msg("the innocent run failed: %s", f.reason[0]);
    }
    rt_free(rt, &f);
}

/* The control: on one worker the innocent run hits the shared state's limit, and the error
 * names the script and line where it did. */
static void test_memory_one_worker(void **state)
{
    (void)state;
    struct fake f;
    struct agent_rt *rt = rt_new(&f, 1, 24u << 20, 0);
    submit(rt, &f, "holder", "{\"mb\":14}");
    wait_for(&f, &f.n_held, 1);
    submit(rt, &f, "innocent", "{\"mb\":12}");
    wait_for(&f, &f.n_done, 1);
    assert_string_equal(f.order[0], "innocent");
    assert_int_equal(f.err[0], WYE_ERR_TOOBIG);
    if (!strstr(f.reason[0], "workers.lua: memory limit of 24 MiB exceeded at line 28")) {
        fail_msg("reason '%s' does not name the limit and the script", f.reason[0]);
    }
    rt_free(rt, &f);
}

/* Cancelling a run that never yields stops it in Lua (it would otherwise run to the Lua time
 * limit, with another reason), and its worker goes on with the run queued behind it. */
static void test_cancel_spinner(void **state)
{
    (void)state;
    struct fake f;
    struct agent_rt *rt = rt_new(&f, 1, 0, (int64_t)1 << 50);
    uint64_t id = submit(rt, &f, "spinner", "null");
    wait_for(&f, &f.n_spinning, 1);
    submit(rt, &f, "quick", "null");
    agent_rt_cancel(rt, id);
    wait_for(&f, &f.n_done, 2);
    assert_string_equal(f.order[0], "spinner");
    assert_int_equal(f.err[0], WYE_ERR_CANCELED);
    assert_string_equal(f.reason[0], "cancelled");
    assert_string_equal(f.order[1], "quick");
    assert_int_equal(f.err[1], WYE_OK);
    rt_free(rt, &f);
}

static void test_worker_count(void **state)
{
    (void)state;
    struct agent_rt *rt = NULL;
    char eb[256] = "";
    struct agent_rt_opts o = {.dir = SCRIPTS, .n_workers = AGENT_WORKERS_MAX + 1};
    assert_int_equal(agent_rt_create(&o, &fake_ops, NULL, &rt, eb, sizeof(eb)), WYE_ERR_INVAL);
    assert_non_null(strstr(eb, "agents.workers must be 1..64"));
    o.n_workers = 0;
    setenv("WYE_AGENT_WORKERS", "zero", 1);
    assert_int_equal(agent_rt_create(&o, &fake_ops, NULL, &rt, eb, sizeof(eb)), WYE_ERR_INVAL);
    assert_non_null(strstr(eb, "WYE_AGENT_WORKERS must be an integer 1..64 (got 'zero')"));
    unsetenv("WYE_AGENT_WORKERS");
    assert_null(rt);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_spinner_other_worker), cmocka_unit_test(test_spinner_one_worker),
        cmocka_unit_test(test_memory_other_worker),  cmocka_unit_test(test_memory_one_worker),
        cmocka_unit_test(test_cancel_spinner),
        cmocka_unit_test(test_worker_count),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
