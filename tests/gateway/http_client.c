/* The raw-socket HTTP/1.1 test client (see http_client.h). Test threads only. */
#include "tests/gateway/http_client.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/alloc.h"
#include "common/clock.h"

int hc_connect(int port, int rcvbuf)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        return -1;
    }
    if (rcvbuf > 0) {
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf));
    }
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)port);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

static int remaining_ms(int64_t deadline)
{
    int64_t left = (deadline - wye_now_ns()) / WYE_NS_PER_MS;
    return left < 0 ? 0 : (int)left;
}

bool hc_send_all(int fd, const void *p, size_t n, int timeout_ms)
{
    int64_t deadline = wye_now_ns() + (int64_t)timeout_ms * WYE_NS_PER_MS;
    const char *c = p;
    while (n > 0) {
        struct pollfd pfd = {.fd = fd, .events = POLLOUT};
        if (poll(&pfd, 1, remaining_ms(deadline)) <= 0) {
            return false;
        }
        ssize_t w = send(fd, c, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR) {
            continue;
        }
        if (w <= 0) {
            return false;
        }
        c += w;
        n -= (size_t)w;
    }
    return true;
}

void hc_resp_init(struct hc_resp *r)
{
    memset(r, 0, sizeof(*r));
    wye_buf_init(&r->body, (size_t)64 << 20);
}

void hc_resp_cleanup(struct hc_resp *r)
{
    wye_buf_cleanup(&r->body);
}

/* De-chunks what raw holds into r->body. Returns 1 when the last chunk (and the empty trailer)
 * arrived, 0 when more bytes are needed, -1 on bad framing. */
static int dechunk(struct wye_buf *raw, struct hc_resp *r)
{
    for (;;) {
        const char *p = raw->data;
        const char *eol = raw->len ? memmem(p, raw->len, "\r\n", 2) : NULL;
        if (!eol) {
            return raw->len > 32 ? -1 : 0;
        }
        char *end = NULL;
        unsigned long long size = strtoull(p, &end, 16);
        if (end == p || (end != eol && *end != ';')) {
            return -1;
        }
        size_t line = (size_t)(eol + 2 - p);
        if (size == 0) {
            if (raw->len < line + 2) {
                return 0;
            }
            if (memcmp(p + line, "\r\n", 2) != 0) {
                return -1; /* trailers: never sent by wye */
            }
            wye_buf_consume(raw, line + 2);
            return 1;
        }
        if (raw->len < line + size + 2) {
            return 0;
        }
        if (memcmp(p + line + size, "\r\n", 2) != 0) {
            return -1;
        }
        if (wye_buf_append(&r->body, p + line, (size_t)size) != WYE_OK) {
            return -1;
        }
        wye_buf_consume(raw, line + (size_t)size + 2);
    }
}

int hc_read_response(int fd, struct hc_resp *r, int timeout_ms)
{
    int64_t deadline = wye_now_ns() + (int64_t)timeout_ms * WYE_NS_PER_MS;
    char buf[16384];
    size_t hlen = 0;
    bool have_headers = false;
    long long clen = -1;
    struct wye_buf raw; /* chunked: bytes not yet de-chunked */
    wye_buf_init(&raw, (size_t)64 << 20);
    int ret = -1;
    for (;;) {
        if (have_headers && (r->head || (clen >= 0 && (long long)r->body.len >= clen))) {
            r->complete = true;
            ret = r->status;
            break;
        }
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        int pr = poll(&pfd, 1, remaining_ms(deadline));
        if (pr <= 0) {
            break;
        }
        /* Nothing past this response is taken: the header block and chunked bodies are
         * peeked, then taken up to their end; a length-framed body is read to its length. */
        size_t want = sizeof(buf);
        if (have_headers && clen >= 0) {
            want = (size_t)(clen - (long long)r->body.len);
            want = want < sizeof(buf) ? want : sizeof(buf);
        }
        if (!have_headers && hlen >= sizeof(r->headers) - 1) {
            break; /* headers larger than 8 KiB */
        }
        bool peek = !have_headers || r->chunked; /* take only what belongs to this response */
        ssize_t n = recv(fd, buf, want, peek ? MSG_PEEK : 0);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            r->eof = true;
            ret = have_headers && !r->chunked && clen < 0 ? r->status : -1;
            break;
        }
        if (!have_headers) {
            ssize_t take = 0;
            while (take < n && hlen < sizeof(r->headers) - 1 && !have_headers) {
                r->headers[hlen++] = buf[take++];
                have_headers = hlen >= 4 && memcmp(r->headers + hlen - 4, "\r\n\r\n", 4) == 0;
            }
            r->headers[hlen] = '\0';
            if (recv(fd, buf, (size_t)take, 0) != take) {
                break; /* what was peeked is there to take */
            }
            if (!have_headers) {
                continue;
            }
            r->headers[hlen - 2] = '\0';
            if (sscanf(r->headers, "HTTP/1.%*d %d", &r->status) != 1) {
                break;
            }
            char v[32];
            if (hc_header(r, "content-length", v, sizeof(v))) {
                clen = atoll(v);
            }
            r->chunked =
                hc_header(r, "transfer-encoding", v, sizeof(v)) && strcasecmp(v, "chunked") == 0;
            continue;
        }
        if (!r->chunked) {
            if (wye_buf_append(&r->body, buf, (size_t)n) != WYE_OK) {
                break;
            }
            continue;
        }
        if (wye_buf_append(&raw, buf, (size_t)n) != WYE_OK) {
            break;
        }
        int d = dechunk(&raw, r);
        if (d < 0) {
            break;
        }
        /* bytes after the last chunk belong to the next (pipelined) response: leave them */
        size_t take = (size_t)n - (d > 0 ? raw.len : 0);
        if (recv(fd, buf, take, 0) != (ssize_t)take) {
            break;
        }
        if (d > 0) {
            r->complete = true;
            ret = r->status;
            break;
        }
    }
    wye_buf_cleanup(&raw);
    return ret;
}

const char *hc_header(const struct hc_resp *r, const char *name, char *out, size_t outlen)
{
    size_t nl = strlen(name);
    const char *line = strstr(r->headers, "\r\n");
    while (line) {
        line += 2;
        if (strncasecmp(line, name, nl) == 0 && line[nl] == ':') {
            const char *v = line + nl + 1;
            while (*v == ' ') {
                v++;
            }
            const char *e = strstr(v, "\r\n");
            size_t n = e ? (size_t)(e - v) : strlen(v);
            if (n >= outlen) {
                n = outlen - 1;
            }
            memcpy(out, v, n);
            out[n] = '\0';
            return out;
        }
        line = strstr(line, "\r\n");
    }
    return NULL;
}

/* Sends one request on fd (with "Connection: close" when close_after) and reads its answer. */
static int request_on(int fd, const char *method, const char *path, const char *body,
                      const char *extra, bool close_after, struct hc_resp *r, int timeout_ms)
{
    struct wye_buf req;
    wye_buf_init(&req, (size_t)64 << 20);
    size_t blen = body ? strlen(body) : 0;
    enum wye_err err =
        wye_buf_printf(&req, "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\n%s%s", method, path,
                       close_after ? "Connection: close\r\n" : "", extra ? extra : "");
    if (!err && body) {
        err =
            wye_buf_printf(&req, "Content-Type: application/json\r\nContent-Length: %zu\r\n", blen);
    }
    if (!err) {
        err = wye_buf_append_str(&req, "\r\n");
    }
    if (!err && body) {
        err = wye_buf_append(&req, body, blen);
    }
    int status = -1;
    r->head = strcmp(method, "HEAD") == 0;
    if (!err && hc_send_all(fd, req.data, req.len, timeout_ms)) {
        status = hc_read_response(fd, r, timeout_ms);
    }
    wye_buf_cleanup(&req);
    return status;
}

int hc_request(int port, const char *method, const char *path, const char *body, const char *extra,
               struct hc_resp *r, int timeout_ms)
{
    int fd = hc_connect(port, 0);
    if (fd < 0) {
        return -1;
    }
    int status = request_on(fd, method, path, body, extra, true, r, timeout_ms);
    close(fd);
    return status;
}

int hc_request_fd(int fd, const char *method, const char *path, const char *body, const char *extra,
                  struct hc_resp *r, int timeout_ms)
{
    return request_on(fd, method, path, body, extra, false, r, timeout_ms);
}

size_t hc_sse_split(const char *body, size_t len, char **out, size_t max)
{
    size_t n = 0;
    const char *p = body, *end = body + len;
    while (p < end && n < max) {
        const char *sep = memmem(p, (size_t)(end - p), "\n\n", 2);
        if (!sep) {
            break;
        }
        if ((size_t)(sep - p) >= 6 && memcmp(p, "data: ", 6) == 0) {
            out[n++] = wye_strndup(p + 6, (size_t)(sep - p - 6));
        }
        p = sep + 2;
    }
    return n;
}
