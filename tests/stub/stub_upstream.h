/* A stand-in OpenAI-compatible upstream for tests and benchmarks: HTTP/1.1 with keep-alive on
 * 127.0.0.1, plain POSIX sockets and poll() in one thread of its own (no libwebsockets, no
 * curl). Serves POST .../chat/completions and GET .../models.
 *
 * Behaviour is scripted by the request itself, so black-box tests can drive it through wye.
 * The stub looks at the LAST message with role "user" (string content, or text parts joined):
 *
 *   plain text   streams the words back, one per chunk: "hello big world" -> "hello", " big",
 *                " world"; then a finish chunk (finish_reason "stop"), a usage chunk when the
 *                request has stream_options.include_usage true ("choices": [],
 *                prompt_tokens = ceil(total characters of all message contents / 4),
 *                completion_tokens = number of deltas), then "data: [DONE]".
 *   #stub k=v .. a directive (first line of the content), space-separated options:
 *     n=N                  N deltas "t0", " t1", ... " t{N-1}" (default 5)
 *     delay_ms=D           D ms before each delta after the first
 *     first_byte_delay_ms=D  send nothing (not even headers) for D ms
 *     cut_after=K          after K deltas close the connection (no terminating chunk)
 *     stall_after=K        after K deltas send nothing more, keep the connection open
 *     status=S             answer HTTP S with {"error":{"message":"stub error S",...}}
 *     retry_after=R        with status: add "Retry-After: R"
 *     fail_first=F         the first F requests carrying this exact directive text answer
 *                          status (default 500); later ones succeed (counter per text)
 *     malformed=1          after the first delta, an event whose data is invalid JSON
 *     error_in_stream=1    after the first delta, data: {"error":{"message":"stub stream error"}}
 *     split=1              write the response one byte per write(2)
 *     tools=1              stream a tool call like OpenAI: first delta
 *                          [{"index":0,"id":"call_stub_0","type":"function","function":
 *                          {"name":NAME,"arguments":""}}] (NAME: the request's first tool's
 *                          function name, else "get_weather"), then
 *                          [{"index":0,"function":{"arguments":"{\"city\":"}}] and
 *                          [{"index":0,"function":{"arguments":" \"Paris\"}"}}];
 *                          finish_reason "tool_calls"
 *     no_usage=1           never send a usage chunk (nor usage in a JSON answer)
 *     no_finish=1          send no finish chunk
 *     no_done=1            send no "data: [DONE]"; the HTTP response still ends cleanly. With a
 *                          finish chunk that is a complete answer for wye; with no_finish=1
 *                          too it is a stream that ended early.
 *     comments=1           an SSE comment line (": stub") before every event
 *     crlf=1               SSE lines end with CRLF instead of LF
 *     coalesce=1           all events between two delays go out as ONE HTTP chunk (so a
 *                          client's read holds many events; default: one chunk per event)
 *     pad=B                every generated delta ("t0", " t1", ...) gets B bytes of 'x' appended
 *                          (B <= 65536): a fast, large stream that fills every buffer
 *     stream=0             answer one chat.completion JSON (also when the request has
 *                          "stream": false or no "stream")
 * GET /stub/aborts answers {"aborts":N,"last_abort_ns":T}: how many peers closed their
 * connection while a response was active (being written, delayed or stalled), and the
 * CLOCK_MONOTONIC instant (ns) the stub saw the last one; CLOCK_MONOTONIC is comparable across
 * processes on one machine, so a benchmark or a test can time "client cancels -> upstream
 * connection closed". Without --quiet the stub also logs a line with that instant.
 * Requests whose body is not JSON get 400 with an error body; other paths 404.
 * Threads: the stub's own; the accessors below may be called from any thread. */
#ifndef WYE_TESTS_STUB_UPSTREAM_H
#define WYE_TESTS_STUB_UPSTREAM_H

#include <stdbool.h>
#include <stdint.h>

struct stub_upstream;

/* Starts a stub on 127.0.0.1, an ephemeral port, quiet. NULL on failure. */
struct stub_upstream *stub_upstream_start(void);
/* Starts a stub on host:port (port 0: any free one); quiet=false logs a line per request. */
struct stub_upstream *stub_upstream_start_on(const char *host, int port, bool quiet);
/* The port the stub listens on. */
int stub_upstream_port(const struct stub_upstream *s);
/* Closes every connection, joins the thread and frees s. NULL is a no-op. */
void stub_upstream_stop(struct stub_upstream *s);

/* Connections accepted since start. */
long stub_upstream_connections(struct stub_upstream *s);
/* Requests received (and answered, or being answered) since start; counted on receipt. */
long stub_upstream_requests(struct stub_upstream *s);
/* Requests received whose response is not over yet and whose connection is still open. */
long stub_upstream_active(struct stub_upstream *s);
/* Waits up to timeout_ms for active to equal want; true if it did. */
bool stub_upstream_wait_active(struct stub_upstream *s, long want, int timeout_ms);
/* Peers that closed their connection while a response was active (an aborted upstream
 * request); *last_ns (may be NULL) gets the CLOCK_MONOTONIC ns when the stub saw the last. */
long stub_upstream_aborts(struct stub_upstream *s, int64_t *last_ns);
/* Waits up to timeout_ms for at least want aborts; true if they came. */
bool stub_upstream_wait_aborts(struct stub_upstream *s, long want, int timeout_ms);
/* Copies of the last chat request's body and Authorization header value (malloc'd, free()
 * them), or NULL if none. */
char *stub_upstream_last_body(struct stub_upstream *s);
char *stub_upstream_last_auth(struct stub_upstream *s);

#endif
