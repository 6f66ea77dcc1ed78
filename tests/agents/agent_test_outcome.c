/* An agent run's outcome (see agent_test_outcome.h). */
// clang-format off
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
// clang-format on
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "tests/agents/agent_test_outcome.h"

void ato_init(struct ato *o)
{
    memset(o, 0, sizeof(*o));
    pthread_mutex_init(&o->lock, NULL);
    pthread_cond_init(&o->cond, NULL);
}

void ato_destroy(struct ato *o)
{
    free(o->answer);
    o->answer = NULL;
    pthread_mutex_destroy(&o->lock);
    pthread_cond_destroy(&o->cond);
}

/* The runtime's end callback (its own thread). */
static void on_done(void *arg, const struct agent_outcome *a)
{
    struct ato *o = arg;
    pthread_mutex_lock(&o->lock);
    o->done = true;
    o->err = a->err;
    snprintf(o->reason, sizeof(o->reason), "%s", a->reason ? a->reason : "");
    free(o->answer);
    o->answer = a->answer ? strdup(a->answer) : NULL;
    o->n_steps = a->n_steps;
    o->cost = a->cost_usd;
    pthread_cond_broadcast(&o->cond);
    pthread_mutex_unlock(&o->lock);
}

uint64_t ato_submit(struct ato *o, struct agent_rt *art, const char *name, const char *input)
{
    pthread_mutex_lock(&o->lock);
    o->done = false;
    pthread_mutex_unlock(&o->lock);
    char eb[256] = "";
    uint64_t id = 0;
    if (agent_rt_submit(art, name, input, on_done, o, &id, eb, sizeof(eb)) != WYE_OK) {
        fail_msg("submit %s: %s", name, eb);
    }
    return id;
}

bool ato_wait(struct ato *o, int seconds)
{
    struct timespec dl;
    clock_gettime(CLOCK_REALTIME, &dl);
    dl.tv_sec += seconds;
    pthread_mutex_lock(&o->lock);
    while (!o->done && pthread_cond_timedwait(&o->cond, &o->lock, &dl) == 0) {
    }
    bool done = o->done;
    pthread_mutex_unlock(&o->lock);
    return done;
}
