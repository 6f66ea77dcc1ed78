/* A small raw-socket WebSocket test client: handshake with a fixed key, masked frames out
 * (optionally fragmented), complete messages in (continuations reassembled, pings answered),
 * and the ability to simply stop reading (slow-reader tests). Every wait has a timeout. */
#ifndef WYE_TESTS_GATEWAY_WS_CLIENT_H
#define WYE_TESTS_GATEWAY_WS_CLIENT_H

#include <stdbool.h>
#include <stddef.h>

#define WSC_TEXT 1
#define WSC_BINARY 2
#define WSC_CLOSE 8
#define WSC_PING 9
#define WSC_PONG 10

struct wsc {
    int fd;
    unsigned char *buf; /* bytes received, not yet parsed */
    size_t len, cap;
    int n_pings; /* pings received (and answered) */
};

/* Connects to 127.0.0.1:port and upgrades on path. rcvbuf > 0 sets SO_RCVBUF. Returns the
 * HTTP status of the handshake (101 on success) or -1. */
int wsc_connect(struct wsc *c, int port, const char *path, const char *subprotocol, int rcvbuf,
                int timeout_ms);
/* Sends one masked frame. fin=false starts/continues a fragmented message (opcode 0 for
 * continuations). */
bool wsc_send_frame(struct wsc *c, int opcode, const void *p, size_t n, bool fin);
bool wsc_send_text(struct wsc *c, const char *s);
/* Receives one complete message. Returns its opcode (TEXT, BINARY, CLOSE), or -1 on timeout or
 * EOF. *out (may be NULL) gets a malloc'd NUL-terminated copy (free with wye_free); for CLOSE
 * *close_code (may be NULL) gets the status code. */
int wsc_recv(struct wsc *c, char **out, size_t *len, int *close_code, int timeout_ms);
/* True when the server closed the TCP connection within timeout_ms (reading and dropping data). */
bool wsc_wait_eof(struct wsc *c, int timeout_ms);
void wsc_close(struct wsc *c);

#endif
