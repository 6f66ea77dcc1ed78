/* The upstream wire format: an incremental Server-Sent Events parser with a fixed cap, and the
 * readers of OpenAI JSON (chat.completion.chunk, chat.completion, error bodies). Used by the
 * upstream thread only; each parser belongs to one transfer. Not thread-safe. */
#ifndef WYE_ROUTER_SSE_H
#define WYE_ROUTER_SSE_H

#include <stdbool.h>
#include <stddef.h>

#include "common/buf.h"
#include "common/chat.h"
#include "common/err.h"

struct cJSON;

/* One dispatched event; every pointer is borrowed for the callback only. */
struct rt_sse_event {
    const char *event; /* the "event:" field, "" when absent ("message") */
    const char *data;  /* the data lines joined by '\n', NUL-terminated */
    size_t len;
};

/* Returns OK to go on, AGAIN to stop after this event (feed reports how far it got), or an
 * error that stops the parser (feed returns it). */
typedef enum wye_err (*rt_sse_cb)(void *arg, const struct rt_sse_event *ev);

#define RT_SSE_NAME_MAX 32 /* longest field or event name kept; longer names are ignored */

struct rt_sse {
    struct wye_buf data;        /* the current event's data, reserved to cap at init */
    size_t cap;                 /* largest event data accepted */
    char name[RT_SSE_NAME_MAX]; /* the field name being read */
    size_t name_len;
    char event[RT_SSE_NAME_MAX]; /* the current event's "event:" value */
    size_t event_len;
    int state;     /* where in a line we are (sse.c) */
    int field;     /* which field the current value belongs to (sse.c) */
    bool after_cr; /* the last byte was CR: a following LF belongs to the same line end */
    bool has_data; /* the current event has at least one data line */
    bool at_start; /* nothing read yet (a leading BOM is skipped) */
    bool failed;   /* an event was too large; every later feed fails */
};

/* Prepares p for events of at most cap bytes of data, allocating the buffer once. */
enum wye_err rt_sse_init(struct rt_sse *p, size_t cap);
/* Frees the buffer; p may be initialised again. */
void rt_sse_cleanup(struct rt_sse *p);
/* Forgets any partial event, keeping the memory (a new response on the same transfer). */
void rt_sse_reset(struct rt_sse *p);
/* Parses n bytes of in, calling cb for each complete event. *used (may be NULL) is set to the
 * number of bytes consumed: n, or fewer when cb returned AGAIN or an error. Returns OK, AGAIN
 * (feed the rest later), TOOBIG (an event's data exceeded cap) or cb's error. */
enum wye_err rt_sse_feed(struct rt_sse *p, const char *in, size_t n, size_t *used, rt_sse_cb cb,
                         void *arg);
/* True when bytes of an unfinished event are buffered (a stream cut mid-event). */
bool rt_sse_pending(const struct rt_sse *p);

/* What one OpenAI JSON object said. Strings are borrowed from root unless noted. */
struct rt_chunk {
    struct cJSON *root;        /* owned */
    const char *content;       /* choices[0].delta.content (message.content), or NULL */
    char *tool_calls;          /* owned: the tool_calls array printed unformatted, or NULL */
    const char *finish_reason; /* choices[0].finish_reason, or NULL */
    bool has_usage;
    struct wye_usage usage; /* usage, when has_usage */
    const char *error;      /* an "error" object's message, or NULL */
};

/* Parses one JSON object: a chat.completion.chunk (full == false) or a whole chat.completion
 * (full == true: reads choices[0].message). PARSE with a message naming the problem in errbuf
 * when the JSON is malformed or a field has the wrong type; NOMEM. Clean up out either way. */
enum wye_err rt_chunk_parse(const char *json, size_t len, bool full, struct rt_chunk *out,
                            char *errbuf, size_t errlen);
/* Frees what out owns and zeroes it. */
void rt_chunk_cleanup(struct rt_chunk *c);
/* A chunk's finish_reason as one of OpenAI's, in static storage (it outlives the chunk):
 * "stop", "length", "tool_calls", "content_filter" or "function_call"; anything else "stop". */
const char *rt_finish_reason(const char *s);
/* Extracts a readable message from an HTTP error body ({"error":{"message":...}}, or a short
 * plain-text body) into out (always NUL-terminated; "" when nothing useful). */
void rt_error_body_message(const char *body, size_t len, char *out, size_t outlen);

#endif
