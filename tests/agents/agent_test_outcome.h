/* An agent run's outcome for the agents tests that submit runs to a runtime over the router
 * (test_agents_e2e.c, test_agents_local.c): the end callback records it on the runtime's
 * thread, the test's thread waits for it with a bound. */
#ifndef WYE_TESTS_AGENTS_AGENT_TEST_OUTCOME_H
#define WYE_TESTS_AGENTS_AGENT_TEST_OUTCOME_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "agents/agents.h"

struct ato {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    bool done;
    enum wye_err err;
    char reason[512];
    char *answer; /* malloc'd (NULL: none) */
    int n_steps;
    double cost;
};

void ato_init(struct ato *o);
/* Frees the answer and the lock. */
void ato_destroy(struct ato *o);
/* Submits name with input to art, its end recorded in o (which must not be waited on by
 * another run); fails the test if the runtime refuses it. Returns the run id. */
uint64_t ato_submit(struct ato *o, struct agent_rt *art, const char *name, const char *input);
/* Waits up to seconds for the run submitted last to end; false if it did not. */
bool ato_wait(struct ato *o, int seconds);

#endif
