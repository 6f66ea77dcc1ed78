/* The price of one answered chat request, shared by the router's accounting (rt_routed.c,
 * where it is defined) and the agents' host (agent_host.c), so both report the same numbers.
 * Pure function of the config; any thread. */
#ifndef WYE_ROUTER_PRICE_H
#define WYE_ROUTER_PRICE_H

#include <stdbool.h>
#include <stdint.h>

#include "conf/conf.h"

struct rt_price {
    double cost_usd;           /* remote: the model's price; local: prices.local_per_1m */
    double counterfactual_usd; /* what it would have cost remotely (remote: cost_usd; local:
                                * prices.default_remote) */
    double saving_usd;         /* counterfactual_usd - cost_usd */
};

/* Prices prompt/completion tokens answered by the remote (model: the answering model; NULL or
 * "" means upstream.model) or the local backend (model unused). */
struct rt_price rt_price_answer(const struct conf_config *cfg, bool remote, const char *model,
                                int64_t prompt_tokens, int64_t completion_tokens);

#endif
