/* A tiny blocking HTTP/1.1 test client over raw sockets: every wait has a timeout, so a
 * broken server fails a test instead of hanging it. Test threads only. */
#ifndef WYE_TESTS_GATEWAY_HTTP_CLIENT_H
#define WYE_TESTS_GATEWAY_HTTP_CLIENT_H

#include <stdbool.h>
#include <stddef.h>

#include "common/buf.h"

struct hc_resp {
    int status;          /* 0 if no status line arrived */
    char headers[8192];  /* the raw header block, NUL-terminated */
    struct wye_buf body; /* the body (de-chunked when it came chunked) */
    bool eof;            /* the server closed the connection */
    bool head;           /* a HEAD request: no body follows the headers */
    bool chunked;        /* Transfer-Encoding: chunked */
    bool complete;       /* the body ended by its framing (length, last chunk), not by EOF */
};

/* Connects to 127.0.0.1:port; returns the fd or -1. rcvbuf > 0 sets SO_RCVBUF first. */
int hc_connect(int port, int rcvbuf);
/* Sends all of p within timeout_ms; false on failure. */
bool hc_send_all(int fd, const void *p, size_t n, int timeout_ms);
/* Reads one response: headers, then content-length bytes, the chunks up to the last one
 * (de-chunked into body), or until EOF. Reads nothing past the response, so the next one on a
 * kept connection can be read after it. Returns the status, or -1 on timeout / malformed
 * response (bad chunk framing included). */
int hc_read_response(int fd, struct hc_resp *r, int timeout_ms);
/* Sends one HTTP/1.1 request on the open connection fd (no "Connection: close", so the
 * server may keep it) and reads the response; returns the status or -1. */
int hc_request_fd(int fd, const char *method, const char *path, const char *body, const char *extra,
                  struct hc_resp *r, int timeout_ms);
/* One request on a fresh connection ("Connection: close"); returns the status or -1. body may be
 * NULL; extra is additional header lines ending in \r\n (may be NULL). */
int hc_request(int port, const char *method, const char *path, const char *body, const char *extra,
               struct hc_resp *r, int timeout_ms);
/* Copies header name's value (case-insensitive) into out; returns out or NULL. */
const char *hc_header(const struct hc_resp *r, const char *name, char *out, size_t outlen);
void hc_resp_init(struct hc_resp *r);
void hc_resp_cleanup(struct hc_resp *r);
/* Splits an SSE body into the payloads of its "data: " lines; returns how many (<= max).
 * Each out[i] is malloc'd (free with wye_free). */
size_t hc_sse_split(const char *body, size_t len, char **out, size_t max);

#endif
