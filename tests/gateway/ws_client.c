/* The raw-socket WebSocket test client (see ws_client.h). Test threads only. */
#include "tests/gateway/ws_client.h"

#include <errno.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/alloc.h"
#include "common/clock.h"
#include "tests/gateway/http_client.h"

static int remaining_ms(int64_t deadline)
{
    int64_t left = (deadline - wye_now_ns()) / WYE_NS_PER_MS;
    return left < 0 ? 0 : (int)left;
}

/* Reads more bytes into c->buf; false on timeout or EOF. */
static bool fill(struct wsc *c, int64_t deadline)
{
    if (c->cap - c->len < 65536) {
        size_t cap = c->cap ? c->cap * 2 : 131072;
        unsigned char *nb = wye_realloc(c->buf, cap);
        if (!nb) {
            return false;
        }
        c->buf = nb;
        c->cap = cap;
    }
    for (;;) {
        struct pollfd pfd = {.fd = c->fd, .events = POLLIN};
        if (poll(&pfd, 1, remaining_ms(deadline)) <= 0) {
            return false;
        }
        ssize_t n = recv(c->fd, c->buf + c->len, c->cap - c->len, 0);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            return false;
        }
        c->len += (size_t)n;
        return true;
    }
}

int wsc_connect(struct wsc *c, int port, const char *path, const char *subprotocol, int rcvbuf,
                int timeout_ms)
{
    memset(c, 0, sizeof(*c));
    c->fd = hc_connect(port, rcvbuf);
    if (c->fd < 0) {
        return -1;
    }
    char req[1024];
    int n = snprintf(req, sizeof(req),
                     "GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                     "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                     "Sec-WebSocket-Version: 13\r\n%s%s%s\r\n",
                     path, subprotocol ? "Sec-WebSocket-Protocol: " : "",
                     subprotocol ? subprotocol : "", subprotocol ? "\r\n" : "");
    if (!hc_send_all(c->fd, req, (size_t)n, timeout_ms)) {
        return -1;
    }
    int64_t deadline = wye_now_ns() + (int64_t)timeout_ms * WYE_NS_PER_MS;
    for (;;) {
        unsigned char *end = c->len >= 4 ? memmem(c->buf, c->len, "\r\n\r\n", 4) : NULL;
        if (end) {
            int status = -1;
            char line[64];
            size_t ll = (size_t)(end - c->buf) < sizeof(line) - 1 ? (size_t)(end - c->buf)
                                                                  : sizeof(line) - 1;
            memcpy(line, c->buf, ll);
            line[ll] = '\0';
            if (sscanf(line, "HTTP/1.%*d %d", &status) != 1) {
                return -1;
            }
            /* The accept value for the fixed key (RFC 6455 section 1.3). */
            if (status == 101 &&
                !memmem(c->buf, (size_t)(end - c->buf), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=", 28)) {
                return -1;
            }
            size_t used = (size_t)(end + 4 - c->buf);
            memmove(c->buf, c->buf + used, c->len - used);
            c->len -= used;
            return status;
        }
        if (!fill(c, deadline)) {
            return -1;
        }
    }
}

bool wsc_send_frame(struct wsc *c, int opcode, const void *p, size_t n, bool fin)
{
    unsigned char hdr[14];
    size_t h = 0;
    hdr[h++] = (unsigned char)((fin ? 0x80 : 0) | (opcode & 0x0f));
    if (n < 126) {
        hdr[h++] = (unsigned char)(0x80 | n);
    } else if (n < 65536) {
        hdr[h++] = 0x80 | 126;
        hdr[h++] = (unsigned char)(n >> 8);
        hdr[h++] = (unsigned char)n;
    } else {
        hdr[h++] = 0x80 | 127;
        for (int i = 7; i >= 0; i--) {
            hdr[h++] = (unsigned char)((uint64_t)n >> (8 * i));
        }
    }
    static const unsigned char mask[4] = {0x12, 0x34, 0x56, 0x78};
    memcpy(hdr + h, mask, 4);
    h += 4;
    unsigned char *frame = wye_malloc(h + n + 1);
    if (!frame) {
        return false;
    }
    memcpy(frame, hdr, h);
    const unsigned char *src = p;
    for (size_t i = 0; i < n; i++) {
        frame[h + i] = src[i] ^ mask[i & 3];
    }
    bool ok = hc_send_all(c->fd, frame, h + n, 5000);
    wye_free(frame);
    return ok;
}

bool wsc_send_text(struct wsc *c, const char *s)
{
    return wsc_send_frame(c, WSC_TEXT, s, strlen(s), true);
}

/* Parses one frame from c->buf if complete: returns its total size, or 0. */
static size_t parse_frame(struct wsc *c, int *opcode, bool *fin, size_t *poff, size_t *plen)
{
    if (c->len < 2) {
        return 0;
    }
    *fin = (c->buf[0] & 0x80) != 0;
    *opcode = c->buf[0] & 0x0f;
    bool masked = (c->buf[1] & 0x80) != 0;
    uint64_t n = c->buf[1] & 0x7f;
    size_t off = 2;
    if (n == 126) {
        if (c->len < 4) {
            return 0;
        }
        n = ((uint64_t)c->buf[2] << 8) | c->buf[3];
        off = 4;
    } else if (n == 127) {
        if (c->len < 10) {
            return 0;
        }
        n = 0;
        for (int i = 0; i < 8; i++) {
            n = (n << 8) | c->buf[2 + i];
        }
        off = 10;
    }
    if (masked) {
        off += 4; /* servers never mask; tolerate and ignore */
    }
    if (c->len < off + n) {
        return 0;
    }
    *poff = off;
    *plen = (size_t)n;
    return off + (size_t)n;
}

int wsc_recv(struct wsc *c, char **out, size_t *len, int *close_code, int timeout_ms)
{
    int64_t deadline = wye_now_ns() + (int64_t)timeout_ms * WYE_NS_PER_MS;
    struct wye_buf msg;
    wye_buf_init(&msg, (size_t)256 << 20);
    int msg_op = -1;
    if (out) {
        *out = NULL;
    }
    for (;;) {
        int op;
        bool fin;
        size_t off, n;
        size_t total = parse_frame(c, &op, &fin, &off, &n);
        if (!total) {
            if (!fill(c, deadline)) {
                wye_buf_cleanup(&msg);
                return -1;
            }
            continue;
        }
        const unsigned char *payload = c->buf + off;
        int result = 0;
        if (op == WSC_PING) {
            c->n_pings++;
            wsc_send_frame(c, WSC_PONG, payload, n, true);
        } else if (op == WSC_CLOSE) {
            if (close_code) {
                *close_code = n >= 2 ? (payload[0] << 8) | payload[1] : 1005;
            }
            if (out) {
                *out = wye_strndup(n > 2 ? (const char *)payload + 2 : "", n > 2 ? n - 2 : 0);
            }
            if (len) {
                *len = n > 2 ? n - 2 : 0;
            }
            result = WSC_CLOSE;
        } else if (op == WSC_TEXT || op == WSC_BINARY || op == 0) {
            if (op != 0) {
                msg_op = op;
                wye_buf_reset(&msg);
            }
            wye_buf_append(&msg, payload, n);
            if (fin) {
                result = msg_op;
            }
        }
        memmove(c->buf, c->buf + total, c->len - total);
        c->len -= total;
        if (result == WSC_CLOSE) {
            wye_buf_cleanup(&msg);
            return result;
        }
        if (result > 0) {
            if (len) {
                *len = msg.len;
            }
            if (out) {
                *out = msg.data ? wye_buf_steal(&msg, NULL) : wye_strdup("");
            }
            wye_buf_cleanup(&msg);
            return result;
        }
    }
}

bool wsc_wait_eof(struct wsc *c, int timeout_ms)
{
    int64_t deadline = wye_now_ns() + (int64_t)timeout_ms * WYE_NS_PER_MS;
    char buf[65536];
    for (;;) {
        struct pollfd pfd = {.fd = c->fd, .events = POLLIN};
        if (poll(&pfd, 1, remaining_ms(deadline)) <= 0) {
            return false;
        }
        ssize_t n = recv(c->fd, buf, sizeof(buf), 0);
        if (n == 0 || (n < 0 && errno != EINTR && errno != EAGAIN)) {
            return true;
        }
    }
}

void wsc_close(struct wsc *c)
{
    if (c->fd >= 0) {
        close(c->fd);
    }
    c->fd = -1;
    wye_free(c->buf);
    c->buf = NULL;
    c->len = c->cap = 0;
}
