/* Tool helpers of the local backend (router/local.c), on the submit side: the JSON Schema a
 * local model's tool call is constrained to, the tool a schema error is about, and the
 * conversation rendered in the model's own tool-call text format. Pure functions of their
 * arguments; any thread. */
#ifndef WYE_ROUTER_LOCAL_TOOLS_H
#define WYE_ROUTER_LOCAL_TOOLS_H

#include <stdbool.h>
#include <stddef.h>

#include <cjson/cJSON.h>

#include "agents/agents.h"
#include "common/chat.h"
#include "common/err.h"

/* The most tools one call schema offers (the constraint compiler's anyOf limit). */
#define RT_LOCAL_TOOLS_MAX 16

/* The tool-call schema: for each offered tool (or only `only`), {"name":{"const":NAME},
 * argkey:PARAMETERS} with both required and nothing else; several tools make an anyOf (a union
 * told apart by the name), their parameters' own $defs hoisted to the root under "t<i>_NAME".
 * *out is cJSON-allocated text (cJSON_free). INVAL with a message naming the tool for a tool
 * that cannot be offered; NOMEM. */
enum wye_err rt_local_tools_schema(const cJSON *tools, const char *only, const char *argkey,
                                   char **out, char *errbuf, size_t errlen);

/* Writes into errbuf a schema compiler message (msg) prefixed with the tool it is about:
 * "#/anyOf/2/..." is the third offered tool (or `only` when a single tool was compiled). */
void rt_local_tools_error(const cJSON *tools, const char *only, const char *msg, char *errbuf,
                          size_t errlen);

/* The conversation for a model that calls tools in text (fmt): the request's messages (their
 * parsed content) with the body's assistant tool_calls, rendered by agent_toolfmt_render with
 * tools (may be NULL). *out: a JSON messages array (wye_malloc'd). */
enum wye_err rt_local_tools_render(const struct wye_chat_req *req, enum agent_toolfmt fmt,
                                   const cJSON *tools, char **out, char *errbuf, size_t errlen);

/* Whether the conversation already holds tool calls or tool results. */
bool rt_local_has_tool_history(const struct wye_chat_req *req);

#endif
