/* Reading the JSON events the gateway sends, for the gateway and agents tests: members of a
 * parsed event, and one event received over the test WebSocket client. Main test thread only
 * (gwj_recv fails the test with cmocka). */
#ifndef WYE_TESTS_GATEWAY_GW_JSON_H
#define WYE_TESTS_GATEWAY_GW_JSON_H

#include <stdint.h>

#include <cJSON.h>

#include "tests/gateway/ws_client.h"

/* j's member k (matched exactly) when it is a string, else "". */
const char *gwj_str(const cJSON *j, const char *k);
/* j's member k (matched exactly) when it is a number, else -1. */
int gwj_int(const cJSON *j, const char *k);
/* j's member k (matched exactly) when it is a non-negative integral number below 2^53 (exact
 * in JSON), such as a run id, else 0. */
uint64_t gwj_u64(const cJSON *j, const char *k);
/* Like gwj_str, with k matched case-insensitively (cJSON_GetObjectItem), as the WebSocket
 * protocol and auth tests have always read events. */
const char *gwj_istr(const cJSON *j, const char *k);
/* Receives one text message and parses it (the caller deletes it); fails the test on timeout,
 * a non-text message or text that is not JSON. */
cJSON *gwj_recv(struct wsc *c, int timeout_ms);

#endif
