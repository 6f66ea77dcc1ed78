/* A scripted test server for the agents tests (plain sockets, a thread per connection, one
 * response per connection): an OpenAI-compatible chat endpoint that asks for a tool first and
 * answers from the tool result afterwards, plus plain pages for wye.http.request.
 *
 *   POST .../chat/completions  streams SSE. With tools and no tool result yet: one tool call
 *     (the first tool; arguments {"order_id":"<first number in the user text>"} when there is a
 *     number, else {}); "#two" in the first user message: two calls (the first tool twice);
 *     "#loop": a tool call every time. After a tool result: "Answer: <tool result>". Without
 *     tools: "hard" or "easy" when the system prompt asks for that ("hard" if the user text
 *     contains "API"), else "Reply: <first 60 bytes of the user text>". With a
 *     response_format json_schema (and no tool call due): a JSON object for the schema's
 *     properties (an enum takes the value the user text names, else "hard" if the text says
 *     "API", else its first value). Usage 1000 + 100.
 *   GET /page   a small HTML page;  GET /slow  nothing for up to 10 s (or until the client
 *   goes away);  GET /big  2 MiB of 'x'. */
#ifndef WYE_TESTS_AGENTS_AGENT_TEST_SERVER_H
#define WYE_TESTS_AGENTS_AGENT_TEST_SERVER_H

struct ats;

/* Starts on 127.0.0.1, an ephemeral port. NULL on failure. */
struct ats *ats_start(void);
int ats_port(const struct ats *s);
/* Chat requests received so far. */
long ats_chat_requests(struct ats *s);
/* The body of the last chat request (malloc'd; free it), or NULL. */
char *ats_last_chat_body(struct ats *s);
/* Nanoseconds spent answering chat requests so far, each from the moment its request was read
 * whole to the moment its answer was written (the "upstream's own time" for benchmarks). */
long long ats_chat_busy_ns(struct ats *s);
/* GET /slow requests received. */
long ats_slow_started(struct ats *s);
/* GET /slow requests whose client went away before the 10 s were over. */
long ats_slow_aborted(struct ats *s);
/* Stops accepting, waits for the connections to end, frees s. NULL is a no-op. */
void ats_stop(struct ats *s);

#endif
